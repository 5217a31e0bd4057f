//! The engine: (GENEVE →) VXLAN → packet → flow → reassembly → HTTP, driven one packet at a
//! time.
//!
//! Pure and single-threaded: no sockets, no clock, no logging per packet. Time comes from
//! the caller (packet timestamps and [`Engine::on_timer`]), so replaying a capture and
//! running live behave the same. Run one engine per worker thread and shard datagrams by
//! flow (e.g. by the outer UDP 5-tuple, which AWS derives from the inner 5-tuple).
//!
//! Per packet: parse (zero copy) → look up the direction (one hash lookup, an LRU touch) →
//! if the direction is known to carry responses, stop there → else reassemble, and parse
//! HTTP straight from the segment when it is in order.
//!
//! Request direction: a direction becomes the *request* direction when a request is parsed
//! from it (from a stream seen since its SYN, or two requests when joined mid-way); its peer
//! then becomes the *response* direction and is no longer reassembled.
//! A direction that sends a SYN+ACK is the server's from the start. Nothing depends on ports.
//!
//! VNI allow-list: applies to every packet; plain (non-VXLAN) frames have VNI 0.
//!
//! Entry points: [`Engine::on_datagram`] (a UDP datagram received on a VXLAN or GENEVE port,
//! with its sender: the daemon), [`Engine::on_captured_frame`] (a captured link-layer frame:
//! replay) and [`Engine::on_vxlan_payload`] (a VXLAN payload whose sender is not known: tests
//! and benchmarks). A tunnel datagram first meets the sender allow-list (`--allow-from`), then
//! its header: GENEVE ([`encap::geneve`], a Gateway Load Balancer's; the inner IP packet must
//! be the mirror's UDP/4789 VXLAN datagram) and VXLAN ([`encap::vxlan`]). The GWLB endpoint id
//! becomes the flow key's domain ([`FlowKey::in_domain`]); the IP source of the VXLAN
//! datagram (the mirror's source ENI) is kept per direction and copied into each request.
//! A datagram of the other encapsulation than its port's is counted as such
//! (`geneve_on_vxlan_port`, `vxlan_on_geneve_port`), recognised only on the error paths so
//! the hot path pays nothing for it.
//!
//! The stages, in pipeline order (each imports only the stages below it and [`stats`]):
//! [`encap`] → [`packet`] → [`flow`] → [`reassembly`] → [`http`] (with [`proxy`] and
//! [`health_check`]) → [`request`]; [`ranges`] (address ranges of the configuration) is a
//! leaf, and so is [`source`] (the counters of [`stats`] kept per source key: the packet's
//! sender, VNI and GWLB endpoint; set once per packet and around the timer's work for a
//! direction, so that the per-source counters add up to the totals). This module drives them and is imported by none of them.

pub mod config;
pub mod encap;
pub mod flow;
pub mod health_check;
pub mod http;
pub mod packet;
pub mod pairing;
pub mod proxy;
pub mod ranges;
pub mod reassembly;
pub mod request;
pub mod source;
pub mod stats;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tunnel_tests;

pub use config::EngineConfig;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;

use encap::Encap;
use encap::geneve::{GeneveError, GenevePacket, looks_like_geneve};
use encap::vxlan::{VxlanPacket, looks_like_vxlan};
use flow::{FlowKey, FlowTable, Lifecycle, Removed};
use http::response::{ResponseLimits, ResponseParser};
use http::{HttpLimits, Meta, Parser, ParserState};
use packet::{PacketError, Parsed, TcpSegment, Tunnel, parse_ethernet, parse_ip};
use pairing::{Answer, PairCtx, Pairing, PairingLimits, Verdict};
use reassembly::{At, Budget, Pushed, Segment, Sink, Stream, StreamLimits, StreamState};
use request::HttpRequest;
use source::SourceKey;
use stats::{DropReason, EngineStats, ResponseMissing};

/// A client hole the server acknowledged past is skipped this long after (unless its bytes
/// arrive late from the mirror meanwhile), instead of after the whole gap timeout.
const ACKED_HOLE_GRACE_US: u64 = 200_000;

/// What a direction is known to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not known yet: parsed, looking for requests.
    Unknown,
    /// Requests were parsed from it.
    Requests,
    /// Its peer carries the requests, or it sent a SYN+ACK: its responses are parsed while
    /// its peer is tracked (else it is ignored cheaply).
    Responses,
}

/// Where the client message in progress began: a sequence number at or before its first
/// byte, and the ACK number of the packet that carried it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MsgAt {
    seq: u32,
    ack: Option<u32>,
}

/// Where a request direction's stream stands, as pairing needs it. Kept in the direction
/// (not in its [`Pairing`]) so that a connection holds a pairing only once it needs one: a
/// flood of connections that never complete a request allocates none.
/// Packed: 24 bytes in every direction (the `Option`s would take 40).
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    /// Where the client message in progress began: a sequence number at or before its first
    /// byte, the ACK number of its packet, the ACK number of the client chunk before it (see
    /// `pairing::Slot::prev_ack`).
    msg_seq: u32,
    msg_ack: u32,
    msg_prev_ack: u32,
    /// ACK number of the last client chunk parsed.
    last_chunk_ack: u32,
    /// The client's stream has been parsed up to this sequence number (exclusive).
    next: u32,
    /// Which of the numbers above are known (`HAS_*`), and [`Cursor::UNKNOWN`]: client bytes
    /// that may have held requests were lost while the connection had no pairing (or its
    /// pairing did not fit the budget), so the responses' count is unknown.
    flags: u8,
}

impl Cursor {
    const HAS_MSG_ACK: u8 = 1;
    const HAS_MSG_PREV_ACK: u8 = 2;
    const HAS_LAST_CHUNK_ACK: u8 = 4;
    const HAS_NEXT: u8 = 8;
    const UNKNOWN: u8 = 16;

    fn get(&self, flag: u8, v: u32) -> Option<u32> {
        (self.flags & flag != 0).then_some(v)
    }

    fn set(&mut self, flag: u8, v: Option<u32>) -> u32 {
        if v.is_some() {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
        v.unwrap_or(0)
    }

    fn msg_at(&self) -> (u32, Option<u32>, Option<u32>) {
        (
            self.msg_seq,
            self.get(Self::HAS_MSG_ACK, self.msg_ack),
            self.get(Self::HAS_MSG_PREV_ACK, self.msg_prev_ack),
        )
    }

    fn set_msg_at(&mut self, seq: u32, ack: Option<u32>, prev_ack: Option<u32>) {
        self.msg_seq = seq;
        self.msg_ack = self.set(Self::HAS_MSG_ACK, ack);
        self.msg_prev_ack = self.set(Self::HAS_MSG_PREV_ACK, prev_ack);
    }

    fn last_chunk_ack(&self) -> Option<u32> {
        self.get(Self::HAS_LAST_CHUNK_ACK, self.last_chunk_ack)
    }

    /// A client chunk ending before `next`, carried by a packet acknowledging `ack`, was
    /// parsed.
    fn parsed(&mut self, next: u32, ack: Option<u32>) {
        self.next = self.set(Self::HAS_NEXT, Some(next));
        self.last_chunk_ack = self.set(Self::HAS_LAST_CHUNK_ACK, ack);
    }

    fn next(&self) -> Option<u32> {
        self.get(Self::HAS_NEXT, self.next)
    }

    fn unknown(&self) -> bool {
        self.flags & Self::UNKNOWN != 0
    }

    fn set_unknown(&mut self, unknown: bool) {
        if unknown {
            self.flags |= Self::UNKNOWN;
        } else {
            self.flags &= !Self::UNKNOWN;
        }
    }

    /// Whether client bytes were lost before a pairing existed (and forgets it).
    fn take_unknown(&mut self) -> bool {
        let u = self.unknown();
        self.set_unknown(false);
        u
    }
}

/// How far a direction may send: the receive window its peer (the receiver) advertised
/// (issue 14 item 5). Kept in the sending direction, updated from the receiver's segments
/// where they are processed anyway (no extra table access per packet).
///
/// Policy: a segment that starts past the right edge (the highest `ack + window << scale`
/// the receiver advertised) by more than the largest window the receiver could advertise
/// (`65535 << scale`: the mirror may show data before the window update that made room for
/// it) is counted `out_of_window` and ignored: the receiver would have dropped it, and
/// buffering it would make the stream skip to it. Scaling is RFC 7323's: the SYNs' window
/// scale options, in force only when both carried one, never on SYNs themselves. A SYN not
/// seen leaves the scale unknown: the edges are taken unscaled and the slack the largest the
/// known options allow (`65535 << 14` without the receiver's SYN); nothing is checked before
/// an edge is known. Checked for the client's side (request and undecided directions).
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    edge: u32,
    /// The receiver's SYN window scale option (with `THEIRS_WSCALE`).
    theirs: u8,
    flags: u8,
}

impl Window {
    const HAS_EDGE: u8 = 1;
    /// This direction's SYN was seen ...
    const OWN_SYN: u8 = 2;
    /// ... with a window scale option.
    const OWN_WSCALE: u8 = 4;
    /// The receiver's SYN(+ACK) was seen ...
    const RECEIVER_SYN: u8 = 8;
    /// ... with a window scale option (`theirs`).
    const THEIRS_WSCALE: u8 = 16;

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn put(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// This direction's SYN (window scale option or none).
    fn own_syn(&mut self, wscale: Option<u8>) {
        self.put(Self::OWN_SYN, true);
        self.put(Self::OWN_WSCALE, wscale.is_some());
    }

    /// The scale of the receiver's windows in force (RFC 7323: both SYNs carried one).
    fn shift(&self) -> u8 {
        if self.has(Self::OWN_WSCALE) && self.has(Self::THEIRS_WSCALE) {
            self.theirs
        } else {
            0
        }
    }

    /// The scale bounding any window the receiver can advertise, as far as is known.
    fn slack_shift(&self) -> u8 {
        if !self.has(Self::RECEIVER_SYN) {
            14
        } else if !self.has(Self::THEIRS_WSCALE)
            || (self.has(Self::OWN_SYN) && !self.has(Self::OWN_WSCALE))
        {
            0
        } else {
            self.theirs
        }
    }

    /// A segment of the receiver: its SYN's option, and its ACK's right edge.
    fn advertised(&mut self, seg: &TcpSegment<'_>) {
        if seg.syn {
            self.put(Self::RECEIVER_SYN, true);
            self.put(Self::THEIRS_WSCALE, seg.wscale.is_some());
            self.theirs = seg.wscale.map_or(0, |s| s.min(14));
        }
        if !seg.ack {
            return;
        }
        let shift = if seg.syn { 0 } else { self.shift() };
        let edge = seg.ack_no.wrapping_add(u32::from(seg.window) << shift);
        // A SYN+ACK starts a window (a new connection on the same ports too).
        if seg.syn || !self.has(Self::HAS_EDGE) || reassembly::seq_diff(edge, self.edge) > 0 {
            self.edge = edge;
            self.put(Self::HAS_EDGE, true);
        }
    }

    /// Whether a segment starting at `start` is beyond what the receiver allows.
    fn refuses(&self, start: u32) -> bool {
        self.has(Self::HAS_EDGE)
            && reassembly::seq_diff(start, self.edge) > 65_535i64 << self.slack_shift()
    }
}

/// State of one direction (role first: it decides whether anything else is read).
///
/// Invariants:
/// - a `Responses` direction holds no parser state: its stream carries responses, parsed (by
///   the response parser its peer's pairing holds) while its peer is tracked; only a request
///   direction holds `pairing`;
/// - `in_waiting` ⇔ an entry of `Engine::waiting` names this direction (with its `gen`).
#[derive(Debug)]
#[repr(C)]
struct Direction {
    role: Role,
    /// Listed in `Engine::holes` (checked by the timer).
    in_holes: bool,
    /// Listed in `Engine::waiting` (requests waiting for responses).
    in_waiting: bool,
    /// The IP source of the VXLAN datagram that created the direction (the mirror's source).
    mirror: Option<IpAddr>,
    /// Identifies this direction among those that used its slot.
    generation: u32,
    stream: Stream,
    parser: Parser,
    /// Of a request direction: its connection's pairing (the requests waiting for their
    /// responses, and the parser of the server's stream), from the first request complete
    /// or the server's first packet on, charged to the budget.
    pairing: Option<Box<Pairing>>,
    /// Of a request direction: where its stream stands, for pairing.
    cursor: Cursor,
    /// How far it may send (the receive window its peer advertised).
    window: Window,
}

impl Direction {
    fn new(role: Role, mirror: Option<IpAddr>, generation: u32) -> Direction {
        Direction {
            role,
            mirror,
            stream: Stream::new(),
            parser: Parser::new(),
            in_holes: false,
            in_waiting: false,
            generation,
            pairing: None,
            cursor: Cursor::default(),
            window: Window::default(),
        }
    }

    /// Who the stream of this direction (key `key`) belongs to.
    #[inline]
    fn meta(&self, key: &FlowKey) -> Meta {
        Meta {
            vni: key.vni(),
            client: key.src(),
            server: key.dst(),
            gwlbe: key.gwlbe(),
            mirror_source: self.mirror,
        }
    }

    /// The source key of this direction (key `key`): what its requests are attributed to.
    #[inline]
    fn source(&self, key: &FlowKey) -> SourceKey {
        SourceKey {
            gwlbe: key.gwlbe(),
            sender: self.mirror,
            vni: Some(key.vni()),
        }
    }

    /// Whether this direction surely carries requests, so that its peer can be ignored:
    /// a request parsed from a stream seen from its SYN, or two requests. (One request found
    /// by resync in a stream joined mid-way could be text inside a response body; ignoring
    /// the real client direction on that evidence would lose all its requests.)
    fn is_surely_requests(&self) -> bool {
        let n = self.parser.emitted();
        n >= 2 || (n >= 1 && self.stream.saw_syn())
    }
}

/// State every direction's parser shares: the caps, the global memory budget and the
/// counters. Kept apart from the flow table so that a direction (borrowed from the table)
/// and these can be borrowed at the same time.
#[derive(Debug)]
struct Shared {
    http_limits: HttpLimits,
    resp_limits: ResponseLimits,
    pair_limits: PairingLimits,
    budget: Budget,
    stats: EngineStats,
    /// Requests the request parser emitted, on their way to pairing.
    scratch: Vec<HttpRequest>,
}

/// How a stream's end is reported to its parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndKind {
    /// FIN reached, RST, or closed by the engine for a reason of the connection itself:
    /// a close-delimited response is complete.
    Closed,
    /// Expired (idle or closed linger): nothing more can come.
    Expired,
    /// Evicted at the flow cap.
    Evicted,
    /// End of input.
    Input,
}

impl EndKind {
    fn missing(self) -> ResponseMissing {
        match self {
            EndKind::Closed | EndKind::Expired => ResponseMissing::ConnectionClosed,
            EndKind::Evicted => ResponseMissing::FlowEvicted,
            EndKind::Input => ResponseMissing::InputEnded,
        }
    }
}

/// Feeds the reassembled stream of a request direction into its parser, and the requests it
/// emits into the connection's pairing.
struct ParserSink<'a> {
    parser: &'a mut Parser,
    shared: &'a mut Shared,
    out: &'a mut Vec<HttpRequest>,
    meta: Meta,
    pairing: &'a mut Option<Box<Pairing>>,
    cursor: &'a mut Cursor,
    /// The stream was seen from its SYN.
    in_step: bool,
    /// The server's direction is tracked.
    server_known: bool,
    now_us: u64,
    end: EndKind,
    /// The direction turned out to carry responses: whatever the parser finds is discarded.
    discard: bool,
    /// The parser holds bytes for the answer to an Upgrade / CONNECT request that will not
    /// be seen: they are parsed at once.
    resume_now: bool,
}

impl ParserSink<'_> {
    fn at_boundary(&self) -> bool {
        self.parser.held() == 0
            && matches!(
                self.parser.state(),
                ParserState::Head
                    | ParserState::Start
                    | ParserState::Sync { .. }
                    | ParserState::Held
            )
    }

    /// Runs one parser call and hands what it emitted to pairing; then, while the parser
    /// holds bytes for an answer that will not be seen, parses them.
    fn call(&mut self, at: Option<At>, gap: bool, f: impl FnOnce(&mut Parser, &mut http::Ctx<'_>)) {
        self.call_once(at, gap, f);
        while std::mem::take(&mut self.resume_now) {
            self.call_once(None, false, |p, ctx| p.resume(true, ctx));
        }
    }

    fn call_once(
        &mut self,
        at: Option<At>,
        gap: bool,
        f: impl FnOnce(&mut Parser, &mut http::Ctx<'_>),
    ) {
        let boundary = self.at_boundary();
        let drops = self.shared.stats.total_drops();
        {
            let shared = &mut *self.shared;
            let mut ctx = http::Ctx {
                limits: &shared.http_limits,
                budget: &mut shared.budget,
                stats: &mut shared.stats,
                out: &mut shared.scratch,
                meta: self.meta,
            };
            f(self.parser, &mut ctx);
        }
        if self.discard {
            self.shared.scratch.clear();
            return;
        }
        let dropped = self.shared.stats.total_drops() > drops;
        let chunk = at.map(|a| MsgAt {
            seq: a.seq,
            ack: a.ack,
        });
        let cursor = &mut *self.cursor;
        if boundary && let Some(c) = chunk {
            cursor.set_msg_at(c.seq, c.ack, cursor.last_chunk_ack());
        }
        let emitted = self.shared.scratch.len();
        if emitted == 0 && !dropped && !gap {
            return;
        }
        let unknown = gap || (dropped && emitted == 0);
        if self.pairing.is_none() {
            if emitted == 0 {
                // Nothing to pair yet: the loss is remembered for when something is.
                if unknown {
                    cursor.set_unknown(true);
                }
                return;
            }
            *self.pairing =
                Pairing::create(self.in_step, cursor.take_unknown(), &mut self.shared.budget);
        }
        let shared = &mut *self.shared;
        let mut ctx = PairCtx {
            limits: &shared.pair_limits,
            budget: &mut shared.budget,
            stats: &mut shared.stats,
            out: self.out,
        };
        // The last request of the call is an Upgrade / CONNECT when the parser now holds
        // what follows for its answer.
        let holding = self.parser.awaiting_answer();
        let Some(pairing) = self.pairing.as_deref_mut() else {
            // The budget cannot hold the connection's pairing: its requests go out without
            // their responses, whose count is unknown from here on.
            cursor.set_unknown(true);
            for req in shared.scratch.drain(..) {
                pairing::emit(req, None, Some(ResponseMissing::OverBudget), &mut ctx);
            }
            self.resume_now |= holding;
            return;
        };
        if self.server_known {
            pairing.server_seen();
        }
        if unknown {
            pairing.unknown_requests();
        }
        let first = cursor.msg_at();
        for (i, req) in shared.scratch.drain(..).enumerate() {
            // Requests after the first in one chunk were sent in one burst with it.
            let from = match chunk {
                Some(c) if i > 0 => (c.seq, c.ack, c.ack),
                _ => first,
            };
            if dropped {
                // A message was dropped somewhere in this call: requests may be missing
                // before any of these.
                pairing.unknown_requests();
            }
            let upgrade = holding && i + 1 == emitted;
            let told = pairing.push(req, from.0, from.1, from.2, self.now_us, upgrade, &mut ctx);
            if upgrade && (!told || !self.server_known) {
                // No answer will be seen here (the server's direction is not mirrored to this
                // engine, or the request went out without waiting): keep parsing.
                self.resume_now = true;
            }
        }
        if emitted > 0
            && let Some(c) = chunk
        {
            // A message still in progress began in this chunk.
            cursor.set_msg_at(c.seq, c.ack, c.ack);
        }
    }
}

impl Sink for ParserSink<'_> {
    fn data(&mut self, at: At, bytes: &[u8]) {
        self.now_us = self.now_us.max(at.ts_us);
        self.call(Some(at), false, |p, ctx| p.data(at.ts_us, bytes, ctx));
        self.cursor.parsed(at.advance(bytes.len()).seq, at.ack);
    }
    fn gap(&mut self, len: u64) {
        self.shared.stats.count_gap(len);
        self.call(None, true, |p, ctx| p.gap(len, ctx));
    }
    fn end(&mut self) {
        let evicting = self.end == EndKind::Evicted;
        self.call(None, false, |p, ctx| {
            if evicting { p.evict(ctx) } else { p.end(ctx) }
        });
    }
    fn budget(&mut self) -> &mut Budget {
        &mut self.shared.budget
    }
    fn different_overlap(&mut self) {
        self.shared.stats.overlap_different_data += 1;
    }
}

/// Feeds the reassembled stream of a response direction into its response parser, which
/// tells the connection's pairing.
struct RespSink<'a> {
    parser: &'a mut ResponseParser,
    shared: &'a mut Shared,
    out: &'a mut Vec<HttpRequest>,
    pairing: &'a mut Pairing,
    /// Where the client's stream stands.
    client_next: Option<u32>,
    end: EndKind,
}

impl RespSink<'_> {
    fn run(&mut self, f: impl FnOnce(&mut ResponseParser, &mut http::response::RespCtx<'_>)) {
        let shared = &mut *self.shared;
        let mut pctx = PairCtx {
            limits: &shared.pair_limits,
            budget: &mut shared.budget,
            stats: &mut shared.stats,
            out: self.out,
        };
        let mut answer = Answer {
            pairing: self.pairing,
            ctx: &mut pctx,
            client_next: self.client_next,
        };
        let mut ctx = http::response::RespCtx {
            limits: &shared.resp_limits,
            answering: &mut answer,
        };
        f(self.parser, &mut ctx);
    }
}

impl Sink for RespSink<'_> {
    fn data(&mut self, at: At, bytes: &[u8]) {
        self.run(|p, ctx| p.data(at, bytes, ctx));
    }
    fn gap(&mut self, len: u64) {
        self.shared.stats.count_gap(len);
        self.run(|p, ctx| p.gap(len, ctx));
    }
    fn end(&mut self) {
        let end = self.end;
        self.run(|p, ctx| p.end(end == EndKind::Closed, end.missing(), ctx));
    }
    fn budget(&mut self) -> &mut Budget {
        &mut self.shared.budget
    }
    fn different_overlap(&mut self) {
        self.shared.stats.overlap_different_data += 1;
    }
}

/// Either sink, by the direction's role.
enum AnySink<'a> {
    Requests(ParserSink<'a>),
    Responses(RespSink<'a>),
    /// A response direction whose connection is not tracked: nothing is parsed.
    Nothing(&'a mut Budget),
}

impl Sink for AnySink<'_> {
    fn data(&mut self, at: At, bytes: &[u8]) {
        match self {
            AnySink::Requests(s) => s.data(at, bytes),
            AnySink::Responses(s) => s.data(at, bytes),
            AnySink::Nothing(_) => {}
        }
    }
    fn gap(&mut self, len: u64) {
        match self {
            AnySink::Requests(s) => s.gap(len),
            AnySink::Responses(s) => s.gap(len),
            AnySink::Nothing(_) => {}
        }
    }
    fn end(&mut self) {
        match self {
            AnySink::Requests(s) => s.end(),
            AnySink::Responses(s) => s.end(),
            AnySink::Nothing(_) => {}
        }
    }
    fn budget(&mut self) -> &mut Budget {
        match self {
            AnySink::Requests(s) => s.budget(),
            AnySink::Responses(s) => s.budget(),
            AnySink::Nothing(b) => b,
        }
    }
    fn different_overlap(&mut self) {
        match self {
            AnySink::Requests(s) => s.different_overlap(),
            AnySink::Responses(s) => s.different_overlap(),
            AnySink::Nothing(_) => {}
        }
    }
}

/// The engine. See the module documentation.
///
/// Invariants:
/// - `budget.used` is the sum over directions of buffered out-of-order bytes (with their
///   piece overhead), parser buffers, responses in progress and requests waiting for their
///   responses; it never exceeds `budget.limit` by more than one head being completed;
/// - `holes` lists (at least) every slot whose stream has a hole open;
/// - `waiting` holds one entry for every direction with `in_waiting` (its generation and the
///   deadline of its oldest waiting request, or an earlier time).
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    table: FlowTable<Direction>,
    shared: Shared,
    stream_limits: StreamLimits,
    holes: Vec<u32>,
    waiting: BinaryHeap<Reverse<(u64, u32, u32)>>,
    generation: u32,
    /// Length of the packet being processed (moved with its count when its source key is
    /// refined).
    packet_len: u64,
}

impl Engine {
    /// A new engine with these caps.
    pub fn new(config: EngineConfig) -> Engine {
        let stream_limits = StreamLimits {
            // Per-direction counts are kept in 32 bits.
            max_ooo_bytes: config.max_ooo_bytes_per_flow.min(1 << 30),
            max_ooo_segments: config.max_ooo_segments_per_flow,
            gap_skip_bytes: config.gap_skip_bytes,
            gap_timeout_us: config.gap_timeout_us,
            gap_timeout_after_fin_us: config.gap_timeout_after_fin_us,
            acked_hole_grace_us: ACKED_HOLE_GRACE_US,
        };
        let http_limits = HttpLimits {
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
            max_body_bytes: config.max_body_bytes,
            health_checks: config.health_checks.clone(),
            proxy_protocol_from: config.proxy_protocol_from.clone(),
        };
        let resp_limits = ResponseLimits {
            max_header_bytes: config.max_response_header_bytes,
            max_headers: config.max_headers.max(128),
            max_body_bytes: config.max_body_bytes,
        };
        let pair_limits = PairingLimits {
            response_timeout_us: config.response_timeout_us,
            server_wait_us: config.server_wait_us,
            max_pending: config.max_pending_requests.max(1),
        };
        Engine {
            table: FlowTable::new(config.max_flows),
            shared: Shared {
                http_limits,
                resp_limits,
                pair_limits,
                budget: Budget::new(config.memory_budget_bytes),
                stats: EngineStats::with_source_keys(config.max_source_keys),
                scratch: Vec::new(),
            },
            stream_limits,
            holes: Vec::new(),
            waiting: BinaryHeap::new(),
            generation: 0,
            packet_len: 0,
            config,
        }
    }

    /// The caps in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Live path: the payload of one UDP datagram received on a tunnel port (`encap`: the
    /// port's encapsulation; the tunnel header first), from `sender`.
    pub fn on_datagram(
        &mut self,
        ts_us: u64,
        encap: Encap,
        sender: IpAddr,
        payload: &[u8],
        out: &mut Vec<HttpRequest>,
    ) {
        self.count_packet(
            SourceKey {
                sender: Some(sender),
                ..SourceKey::default()
            },
            payload.len(),
        );
        self.tunnel(
            ts_us,
            Tunnel {
                encap,
                source: sender,
                payload,
            },
            out,
        );
    }

    /// The payload of one UDP datagram received on port 4789 (VXLAN header first) whose sender
    /// is not known: no allow-list check, no `mirror_source` (tests and benchmarks).
    pub fn on_vxlan_payload(&mut self, ts_us: u64, payload: &[u8], out: &mut Vec<HttpRequest>) {
        self.count_packet(SourceKey::default(), payload.len());
        self.vxlan(ts_us, Carrier::DIRECT, payload, out);
    }

    /// Replay path: one captured link-layer frame: an outer Ethernet frame carrying
    /// IPv4/IPv6 -> UDP dst 4789 -> VXLAN or UDP dst 6081 -> GENEVE, or a plain (already
    /// decapsulated) Ethernet frame.
    pub fn on_captured_frame(&mut self, ts_us: u64, frame: &[u8], out: &mut Vec<HttpRequest>) {
        self.count_packet(SourceKey::default(), frame.len());
        match parse_ethernet(frame, true) {
            Ok(Parsed::Tunnel(t)) => self.tunnel(ts_us, t, out),
            Ok(Parsed::Tcp(seg)) => {
                self.refine_source(Carrier::PLAIN.source(Some(0)));
                if self.vni_allowed(0) {
                    self.segment(ts_us, Carrier::PLAIN, &seg, out);
                } else {
                    self.shared.stats.count_drop(DropReason::VniNotAllowed);
                }
            }
            Err(e) => self.packet_error(e),
        }
    }

    /// Counts one packet, first attributed to `key` (refined as more of its key is read).
    #[inline]
    fn count_packet(&mut self, key: SourceKey, len: usize) {
        self.packet_len = len as u64;
        self.shared.stats.count_packet(key, self.packet_len);
    }

    /// The packet being processed comes from `key`.
    #[inline]
    fn refine_source(&mut self, key: SourceKey) {
        self.shared.stats.sources.refine(key, self.packet_len);
    }

    /// Runs `f` with `key` as the current source (work of a timer or an eviction for a
    /// direction other than the packet's).
    #[inline]
    fn for_source<R>(&mut self, key: SourceKey, f: impl FnOnce(&mut Engine) -> R) -> R {
        let before = self.shared.stats.sources.current();
        self.shared.stats.sources.set(key);
        let r = f(self);
        self.shared.stats.sources.restore(before);
        r
    }

    /// A tunnel datagram: the sender check before anything is parsed, then its header.
    #[inline]
    fn tunnel(&mut self, ts_us: u64, t: Tunnel<'_>, out: &mut Vec<HttpRequest>) {
        if let Some(allowed) = &self.config.allow_from
            && !allowed.contains(t.source)
        {
            self.shared.stats.count_drop(DropReason::SourceNotAllowed);
            return;
        }
        match t.encap {
            Encap::Vxlan => {
                let carrier = Carrier {
                    mirror: Some(t.source),
                    ..Carrier::DIRECT
                };
                self.vxlan(ts_us, carrier, t.payload, out);
            }
            Encap::Geneve => self.geneve(ts_us, t.payload, out),
        }
    }

    /// A GENEVE packet of a Gateway Load Balancer: its inner IP packet must be the mirror's
    /// VXLAN datagram, whose IP source is the mirror's source.
    fn geneve(&mut self, ts_us: u64, payload: &[u8], out: &mut Vec<HttpRequest>) {
        let g = match GenevePacket::parse(payload) {
            Ok(g) => g,
            Err(e) => {
                let reason = if looks_like_vxlan(payload) {
                    DropReason::VxlanOnGenevePort
                } else {
                    match e {
                        GeneveError::Malformed => DropReason::GeneveMalformed,
                        GeneveError::OptionsTruncated => DropReason::GeneveOptionsTruncated,
                        GeneveError::CriticalOption { .. } => DropReason::GeneveCriticalOption,
                        GeneveError::Control => DropReason::GeneveControl,
                        GeneveError::NotIp(_) => DropReason::GeneveNotIp,
                    }
                };
                self.shared.stats.count_drop(reason);
                return;
            }
        };
        match parse_ip(etherparse::EtherType(g.protocol), g.inner, true) {
            Ok(Parsed::Tunnel(Tunnel {
                encap: Encap::Vxlan,
                source,
                payload,
            })) => {
                let carrier = Carrier {
                    vni: 0,
                    gwlbe: g.aws.endpoint_id,
                    mirror: Some(source),
                    in_geneve: true,
                };
                self.vxlan(ts_us, carrier, payload, out);
            }
            Ok(_) | Err(PacketError::NonTcp) => {
                self.shared.stats.count_drop(DropReason::GeneveNotVxlan)
            }
            Err(e) => self.packet_error(e),
        }
    }

    fn vni_allowed(&self, vni: u32) -> bool {
        self.config
            .vni_allow
            .as_ref()
            .is_none_or(|allow| allow.contains(&vni))
    }

    fn packet_error(&mut self, e: PacketError) {
        self.shared.stats.count_drop(match e {
            PacketError::Malformed => DropReason::MalformedPacket,
            PacketError::Fragment => DropReason::IpFragment,
            PacketError::NonTcp => DropReason::NonTcp,
        });
    }

    /// A VXLAN datagram (received directly, or inside GENEVE as `carrier` says).
    fn vxlan(&mut self, ts_us: u64, carrier: Carrier, payload: &[u8], out: &mut Vec<HttpRequest>) {
        // A GENEVE packet sent to the VXLAN port fails one of the three checks below (its
        // inner bytes are options, not a frame); only then is its shape looked at.
        let misdirected = |payload: &[u8]| !carrier.in_geneve && looks_like_geneve(payload);
        self.refine_source(carrier.source(None));
        let Ok(v) = VxlanPacket::parse(payload) else {
            self.shared.stats.count_drop(if misdirected(payload) {
                DropReason::GeneveOnVxlanPort
            } else {
                DropReason::VxlanMalformed
            });
            return;
        };
        self.refine_source(carrier.source(Some(v.vni)));
        if !self.vni_allowed(v.vni) {
            self.shared.stats.count_drop(if misdirected(payload) {
                DropReason::GeneveOnVxlanPort
            } else {
                DropReason::VniNotAllowed
            });
            return;
        }
        match parse_ethernet(v.inner, false) {
            Ok(Parsed::Tcp(seg)) => {
                let carrier = Carrier {
                    vni: v.vni,
                    ..carrier
                };
                self.segment(ts_us, carrier, &seg, out);
            }
            Ok(Parsed::Tunnel(_)) => self.shared.stats.count_drop(DropReason::NonTcp),
            Err(_) if misdirected(payload) => {
                self.shared.stats.count_drop(DropReason::GeneveOnVxlanPort)
            }
            Err(e) => self.packet_error(e),
        }
    }

    /// The peer of `idx` when it is a request direction (the connection's pairing lives
    /// there).
    fn client_of(&self, idx: u32) -> Option<u32> {
        self.table
            .entry(idx)
            .peer()
            .filter(|&p| self.table.entry(p).value.role != Role::Responses)
    }

    /// Runs `f` on the stream of direction `idx` with the sink its role calls for.
    fn drive<R>(
        &mut self,
        idx: u32,
        now_us: u64,
        end: EndKind,
        out: &mut Vec<HttpRequest>,
        f: impl FnOnce(&mut Stream, &StreamLimits, &mut AnySink<'_>) -> R,
    ) -> R {
        let role = self.table.entry(idx).value.role;
        if role == Role::Responses {
            let client = self.client_of(idx);
            let mut pairing = client.and_then(|c| self.table.entry_mut(c).value.pairing.take());
            let client_next = client.and_then(|c| self.table.entry(c).value.cursor.next());
            let dir = &mut self.table.entry_mut(idx).value;
            let mut parser = pairing.as_mut().map(|p| take_resp(p, &dir.stream));
            let r = match (parser.as_mut(), pairing.as_mut()) {
                (Some(parser), Some(pairing)) => {
                    let mut sink = AnySink::Responses(RespSink {
                        parser,
                        shared: &mut self.shared,
                        out,
                        pairing,
                        client_next,
                        end,
                    });
                    f(&mut dir.stream, &self.stream_limits, &mut sink)
                }
                _ => {
                    let mut sink = AnySink::Nothing(&mut self.shared.budget);
                    f(&mut dir.stream, &self.stream_limits, &mut sink)
                }
            };
            if let Some(p) = pairing.as_mut() {
                p.resp = parser;
            }
            if let Some(c) = client {
                self.table.entry_mut(c).value.pairing = pairing;
                self.note_waiting(c);
                self.apply_verdict(c, now_us, out);
            }
            return r;
        }
        let server_known = self.table.entry(idx).peer().is_some();
        let entry = self.table.entry_mut(idx);
        let key = entry.key;
        let dir = &mut entry.value;
        let meta = dir.meta(&key);
        let mut sink = AnySink::Requests(ParserSink {
            parser: &mut dir.parser,
            shared: &mut self.shared,
            out,
            meta,
            pairing: &mut dir.pairing,
            cursor: &mut dir.cursor,
            in_step: dir.stream.saw_syn(),
            server_known,
            now_us,
            end,
            discard: false,
            resume_now: false,
        });
        let r = f(&mut dir.stream, &self.stream_limits, &mut sink);
        self.note_waiting(idx);
        self.apply_verdict(idx, now_us, out);
        r
    }

    /// Tells the parser of request direction `c` what the answer to its Upgrade / CONNECT
    /// request decided: switched (the rest of the stream is not HTTP), or not (the bytes it
    /// held are parsed, flagged when no answer was seen).
    fn apply_verdict(&mut self, c: u32, now_us: u64, out: &mut Vec<HttpRequest>) {
        // Only a parser that holds bytes for an answer, or resumed before one came, has a
        // verdict to hear (the parser is in the direction: no pairing read per packet).
        let parser = &self.table.entry(c).value.parser;
        if !parser.awaiting_answer() && !parser.resumed_unanswered() {
            return;
        }
        let Some(verdict) = self
            .table
            .entry_mut(c)
            .value
            .pairing
            .as_mut()
            .and_then(|p| p.take_verdict())
        else {
            return;
        };
        // Requests parsed now may be told a verdict of their own: `drive` applies it.
        self.drive(c, now_us, EndKind::Closed, out, |stream, _, sink| {
            let switched = match sink {
                AnySink::Requests(s) => {
                    match verdict {
                        Verdict::Switched => s.call(None, false, |p, ctx| p.switched(ctx)),
                        Verdict::Declined => s.call(None, false, |p, ctx| p.resume(false, ctx)),
                        Verdict::Unanswered => s.call(None, false, |p, ctx| p.resume(true, ctx)),
                    }
                    s.parser.is_done()
                }
                _ => false,
            };
            if switched && stream.buffered_bytes() > 0 {
                // Out-of-order bytes of the tunnel will never be parsed.
                stream.close(sink);
            }
        });
    }

    /// Lists a request direction whose requests wait in `waiting`.
    fn note_waiting(&mut self, idx: u32) {
        let dir = &mut self.table.entry_mut(idx).value;
        if dir.in_waiting {
            return;
        }
        if let Some(deadline) = dir.pairing.as_ref().and_then(|p| p.next_deadline()) {
            dir.in_waiting = true;
            self.waiting.push(Reverse((deadline, idx, dir.generation)));
        }
    }

    fn new_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }

    /// One TCP segment of direction (endpoint, vni, src, dst).
    fn segment(
        &mut self,
        ts_us: u64,
        carrier: Carrier,
        seg: &TcpSegment<'_>,
        out: &mut Vec<HttpRequest>,
    ) {
        let key = FlowKey::new(carrier.vni, seg.src, seg.dst).in_domain(carrier.gwlbe);
        let has_payload = seg.wire_len() > 0;
        if seg.missing > 0 {
            self.shared.stats.count_truncated();
        }
        let idx = match self.table.find(&key) {
            Some(i) => i,
            None => {
                if seg.rst {
                    // Nothing tracked for this direction; the peer's connection is over.
                    if let Some(p) = self.table.find(&key.reverse()) {
                        self.close_direction(p, ts_us, out);
                    }
                    return;
                }
                if !has_payload && !seg.syn && !seg.fin {
                    return; // a pure ACK of an untracked direction: nothing to learn
                }
                self.create(key, seg, carrier.mirror, ts_us, out)
            }
        };
        self.table.touch(idx, ts_us);
        // What happens to the direction's stream is counted for the source its requests are
        // attributed to (the packet itself was counted for its sender).
        let entry = self.table.entry(idx);
        let src = entry.value.source(&entry.key);
        self.shared.stats.sources.set(src);

        if seg.rst {
            // The RST's sequence number is where the sender's stream stood.
            self.table.entry_mut(idx).value.stream.note_sent(seg.seq);
            self.close_direction(idx, ts_us, out);
            if let Some(p) = self.table.entry(idx).peer() {
                self.close_direction(p, ts_us, out);
            }
            return;
        }

        if seg.syn && seg.ack && self.table.entry(idx).value.role != Role::Responses {
            if self.syn_ack_consistent(idx, seg) {
                self.table.entry_mut(idx).value.role = Role::Responses;
                self.release(idx);
            } else {
                // A SYN+ACK that contradicts what this direction already did (it opened the
                // connection, or sent data, or its peer is the server): ignored, neither a
                // role nor the start of a new connection.
                self.shared.stats.count_drop(DropReason::InconsistentSynAck);
                return;
            }
        }
        let segment = Segment {
            ts_us,
            seq: seg.seq,
            ack: seg.ack.then_some(seg.ack_no),
            syn: seg.syn,
            fin: seg.fin,
            payload: seg.payload,
            missing: seg.missing,
        };
        if self.table.entry(idx).value.role == Role::Responses {
            self.shared.stats.response_packets += 1;
            if let Some(c) = self.client_of(idx) {
                self.table.entry_mut(c).value.window.advertised(seg);
            }
            self.response_segment(idx, segment, ts_us, out);
            return;
        }

        let dir = &mut self.table.entry_mut(idx).value;
        if dir.stream.is_new_connection(&segment) {
            // Port reuse: the old connection is over, a new one starts.
            self.drive(idx, ts_us, EndKind::Closed, out, |stream, _, sink| {
                stream.close(sink)
            });
            self.flush_pairing(idx, ResponseMissing::ConnectionClosed, out);
            if let Some(p) = self.table.entry_mut(idx).value.pairing.take() {
                p.free(&mut self.shared.budget);
            }
            let generation = self.new_generation();
            let dir = &mut self.table.entry_mut(idx).value;
            let in_holes = dir.in_holes;
            *dir = Direction::new(Role::Unknown, carrier.mirror, generation);
            dir.in_holes = in_holes;
            self.table.set_lifecycle(idx, Lifecycle::Open, ts_us);
        }
        let entry = self.table.entry_mut(idx);
        let dir = &mut entry.value;
        if seg.syn {
            dir.window.own_syn(seg.wscale);
        } else if has_payload && dir.window.refuses(seg.seq) {
            self.shared.stats.count_drop(DropReason::OutOfWindow);
            return;
        }
        if let Some(reason) = ignored_state(&dir.parser) {
            if has_payload {
                self.shared.stats.count_drop(reason);
            }
            if seg.fin {
                self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
            }
            return;
        }
        if segment.syn && dir.stream.state() == StreamState::Listen {
            dir.parser = Parser::at_stream_start();
        }
        let reason = self.drive(idx, ts_us, EndKind::Closed, out, |stream, limits, sink| {
            let pushed = stream.push(segment, limits, sink);
            if let AnySink::Requests(s) = sink
                && s.parser.is_done()
                && stream.buffered_bytes() > 0
            {
                // Opaque or upgraded: buffered bytes will never be parsed.
                stream.close(sink);
            }
            pushed
        });
        let reason = match reason {
            Pushed::Accepted => None,
            Pushed::Duplicate => Some(DropReason::DuplicateSegment),
            Pushed::OverBudget => Some(DropReason::OverBudget),
            Pushed::AfterClose => Some(DropReason::AfterClose),
        };
        if let Some(reason) = reason {
            self.shared.stats.count_drop(reason);
        }
        let dir = &mut self.table.entry_mut(idx).value;
        if dir.stream.has_hole() && !dir.in_holes {
            dir.in_holes = true;
            self.holes.push(idx);
        }
        // An opaque or upgraded direction stays open (its packets are still coming) until
        // its FIN or RST, even though its stream was released.
        let closed =
            dir.stream.state() == StreamState::Closed && ignored_state(&dir.parser).is_none();
        if dir.role == Role::Unknown && dir.is_surely_requests() {
            dir.role = Role::Requests;
            self.demote_peer(idx);
        }
        if closed {
            self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
            self.free_if_done(idx);
        }
    }

    /// A segment of a response direction: reassembled and parsed while the connection's
    /// request direction is tracked, else ignored cheaply.
    fn response_segment(
        &mut self,
        idx: u32,
        segment: Segment<'_>,
        ts_us: u64,
        out: &mut Vec<HttpRequest>,
    ) {
        let Some(client) = self.client_of(idx) else {
            if segment.fin && self.table.entry(idx).lifecycle() == Lifecycle::Open {
                self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
            }
            return;
        };
        let has_payload = !segment.payload.is_empty() || segment.missing > 0;
        if let Some(ack) = segment.ack
            && self.table.entry(client).value.stream.has_hole()
        {
            // The server has every client byte before `ack`: holes before it are mirror
            // losses (or late): skipped soon, so requests are not held behind their responses.
            let limits = self.stream_limits;
            self.table
                .entry_mut(client)
                .value
                .stream
                .acked(ack, ts_us, &limits);
        }
        let dir = &mut self.table.entry_mut(idx).value;
        if dir.stream.is_new_connection(&segment) {
            self.drive(idx, ts_us, EndKind::Closed, out, |stream, _, sink| {
                stream.close(sink)
            });
            let generation = self.new_generation();
            let dir = &mut self.table.entry_mut(idx).value;
            let in_holes = dir.in_holes;
            *dir = Direction::new(Role::Responses, dir.mirror, generation);
            dir.in_holes = in_holes;
            if let Some(p) = self.table.entry_mut(client).value.pairing.as_mut() {
                p.server_restarts();
                p.drop_resp(&mut self.shared.budget);
            }
            self.table.set_lifecycle(idx, Lifecycle::Open, ts_us);
        }
        if self.table.entry(idx).value.stream.state() == StreamState::Closed {
            // The server's stream is over: late copies are only counted.
            let pushed = self.drive(idx, ts_us, EndKind::Closed, out, |stream, limits, sink| {
                stream.push(segment, limits, sink)
            });
            if pushed == Pushed::Duplicate {
                self.shared.stats.count_drop(DropReason::DuplicateSegment);
            } else if pushed == Pushed::AfterClose {
                self.shared.stats.count_drop(DropReason::AfterClose);
            }
            return;
        }
        let stream = &self.table.entry(idx).value.stream;
        let at_start = (stream.state() == StreamState::Listen && segment.syn) || stream.at_start();
        let client_dir = &mut self.table.entry_mut(client).value;
        if client_dir.pairing.is_none() && has_payload {
            // The server's first bytes: the connection's pairing and its response parser are
            // made now (a segment without payload only moves the stream).
            client_dir.pairing = Pairing::create(
                client_dir.stream.saw_syn(),
                client_dir.cursor.take_unknown(),
                &mut self.shared.budget,
            );
            if client_dir.pairing.is_none() {
                // The budget cannot hold it: the server's bytes are not parsed, and the
                // responses' count is unknown from here on.
                client_dir.cursor.set_unknown(true);
                self.shared.stats.count_drop(DropReason::OverBudget);
                if segment.fin {
                    self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
                }
                return;
            }
        }
        let mut done = false;
        if let Some(pairing) = client_dir.pairing.as_deref_mut() {
            pairing.server_seen();
            if pairing.resp.is_none() {
                pairing.resp = Some(ResponseParser::new(at_start));
                if !at_start {
                    pairing.out_of_step(ResponseMissing::Gap);
                }
            }
            done = pairing.resp.as_ref().is_some_and(|r| r.is_done());
        }
        let dir = &mut self.table.entry_mut(idx).value;
        if done && dir.stream.state() != StreamState::Listen {
            if has_payload && dir.stream.state() != StreamState::Closed {
                self.shared.stats.count_drop(DropReason::UpgradedFlow);
            }
            if segment.fin {
                self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
            }
            return;
        }
        let pushed = self.drive(idx, ts_us, EndKind::Closed, out, |stream, limits, sink| {
            stream.push(segment, limits, sink)
        });
        match pushed {
            Pushed::Accepted => {}
            Pushed::Duplicate => self.shared.stats.count_drop(DropReason::DuplicateSegment),
            Pushed::OverBudget => self.shared.stats.count_drop(DropReason::OverBudget),
            Pushed::AfterClose => self.shared.stats.count_drop(DropReason::AfterClose),
        }
        let dir = &mut self.table.entry_mut(idx).value;
        if dir.stream.has_hole() && !dir.in_holes {
            dir.in_holes = true;
            self.holes.push(idx);
        }
        if dir.stream.state() == StreamState::Closed {
            self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
        }
        self.free_if_done(client);
    }

    /// Both streams of the connection of request direction `c` are over and nothing waits:
    /// its pairing (and the server stream's parser) is freed (a closed connection lingers in
    /// the table for a while; it keeps no allocation).
    fn free_if_done(&mut self, c: u32) {
        let Some(p) = self.table.entry(c).peer() else {
            return;
        };
        if self.table.entry(p).value.stream.state() != StreamState::Closed {
            return;
        }
        let client = &mut self.table.entry_mut(c).value;
        if client.stream.state() == StreamState::Closed
            && client.pairing.as_ref().is_some_and(|x| x.is_done())
            && let Some(pairing) = client.pairing.take()
        {
            pairing.free(&mut self.shared.budget);
        }
    }

    /// Whether a SYN+ACK from direction `idx` fits its history: it has not sent a SYN of its
    /// own nor any data, no request was parsed from it, its peer is not the server already,
    /// and it acknowledges the peer's SYN when that was seen.
    fn syn_ack_consistent(&self, idx: u32, seg: &TcpSegment<'_>) -> bool {
        let dir = &self.table.entry(idx).value;
        if dir.role == Role::Requests
            || dir.parser.emitted() > 0
            || dir.stream.state() != StreamState::Listen
        {
            return false;
        }
        match self.table.entry(idx).peer() {
            Some(p) => {
                let peer = &self.table.entry(p).value;
                peer.role != Role::Responses
                    && peer
                        .stream
                        .syn_seq()
                        .is_none_or(|isn| isn.wrapping_add(1) == seg.ack_no)
            }
            None => true,
        }
    }

    /// Creates the entry for `key` (evicting at the cap).
    fn create(
        &mut self,
        key: FlowKey,
        seg: &TcpSegment<'_>,
        mirror: Option<IpAddr>,
        ts_us: u64,
        out: &mut Vec<HttpRequest>,
    ) -> u32 {
        let peer = self.table.find(&key.reverse());
        let peer_is_requests =
            peer.is_some_and(|p| self.table.entry(p).value.role == Role::Requests);
        let peer_is_server =
            peer.is_some_and(|p| self.table.entry(p).value.role == Role::Responses);
        if seg.syn && seg.ack && peer_is_server {
            self.shared.stats.count_drop(DropReason::InconsistentSynAck);
        }
        let role = if (seg.syn && seg.ack && !peer_is_server) || peer_is_requests {
            Role::Responses
        } else {
            Role::Unknown
        };
        let generation = self.new_generation();
        let (idx, evicted) =
            self.table
                .insert(key, Direction::new(role, mirror, generation), ts_us);
        self.shared.stats.flows_created += 1;
        if let Some(removed) = evicted {
            let was_open = removed.was_open;
            if was_open {
                self.shared.stats.flows_evicted += 1;
            } else {
                self.shared.stats.flows_expired += 1;
            }
            let end = if was_open {
                EndKind::Evicted
            } else {
                EndKind::Expired
            };
            self.finalize(removed, end, ts_us, out);
        }
        idx
    }

    /// The peer of a request direction carries responses.
    fn demote_peer(&mut self, idx: u32) {
        let Some(p) = self.table.entry(idx).peer() else {
            return;
        };
        if self.table.entry(p).value.role != Role::Unknown {
            return;
        }
        self.table.entry_mut(p).value.role = Role::Responses;
        self.release(p);
    }

    /// A direction found to carry responses: what its request parser holds is dropped
    /// without counting (its bytes are responses); its stream goes on, parsed for responses
    /// from the next bytes on (out of step).
    fn release(&mut self, idx: u32) {
        let dir = &mut self.table.entry_mut(idx).value;
        self.shared.budget.give(dir.parser.held());
        dir.parser = Parser::new();
        dir.cursor = Cursor::default();
        if let Some(pairing) = dir.pairing.take() {
            // Requests parsed from what turned out to be responses are not requests.
            pairing.free(&mut self.shared.budget);
        }
    }

    /// Gives up every request waiting on a request direction.
    fn flush_pairing(&mut self, idx: u32, reason: ResponseMissing, out: &mut Vec<HttpRequest>) {
        let Some(mut pairing) = self.table.entry_mut(idx).value.pairing.take() else {
            return;
        };
        let shared = &mut self.shared;
        let mut ctx = PairCtx {
            limits: &shared.pair_limits,
            budget: &mut shared.budget,
            stats: &mut shared.stats,
            out,
        };
        pairing.flush(reason, &mut ctx);
        self.table.entry_mut(idx).value.pairing = Some(pairing);
    }

    /// Closes one direction's stream (RST or end): delivers what is buffered, ends it.
    fn close_direction(&mut self, idx: u32, ts_us: u64, out: &mut Vec<HttpRequest>) {
        self.drive(idx, ts_us, EndKind::Closed, out, |stream, _, sink| {
            stream.close(sink)
        });
        self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
    }

    /// Ends a removed direction: buffered bytes are delivered (with gaps), the parser ends,
    /// requests still waiting go out without their response (counted for its source).
    fn finalize(
        &mut self,
        removed: Removed<Direction>,
        end: EndKind,
        now_us: u64,
        out: &mut Vec<HttpRequest>,
    ) {
        let src = removed.value.source(&removed.key);
        self.for_source(src, |e| e.finalize_direction(removed, end, now_us, out));
    }

    fn finalize_direction(
        &mut self,
        removed: Removed<Direction>,
        end: EndKind,
        now_us: u64,
        out: &mut Vec<HttpRequest>,
    ) {
        let Removed { key, mut value, .. } = removed;
        if value.role == Role::Responses {
            // Its connection's requests (if tracked) get the end of the server's stream.
            let client = self
                .table
                .find(&key.reverse())
                .filter(|&c| self.table.entry(c).value.role != Role::Responses);
            let mut pairing = client.and_then(|c| self.table.entry_mut(c).value.pairing.take());
            let client_next = client.and_then(|c| self.table.entry(c).value.cursor.next());
            let mut parser = pairing.as_mut().map(|p| take_resp(p, &value.stream));
            match (parser.as_mut(), pairing.as_mut()) {
                (Some(parser), Some(pairing)) => {
                    let mut sink = RespSink {
                        parser,
                        shared: &mut self.shared,
                        out,
                        pairing,
                        client_next,
                        end,
                    };
                    value.stream.close(&mut sink);
                }
                _ => {
                    let mut sink = AnySink::Nothing(&mut self.shared.budget);
                    value.stream.close(&mut sink);
                }
            }
            if let Some(c) = client {
                self.table.entry_mut(c).value.pairing = pairing;
                self.apply_verdict(c, now_us, out);
            }
            return;
        }
        let server_known = self.table.find(&key.reverse()).is_some();
        let meta = value.meta(&key);
        let mut sink = ParserSink {
            parser: &mut value.parser,
            shared: &mut self.shared,
            out,
            meta,
            pairing: &mut value.pairing,
            cursor: &mut value.cursor,
            in_step: value.stream.saw_syn(),
            server_known,
            now_us,
            end,
            discard: false,
            resume_now: false,
        };
        // Ends the parser too (`Sink::end`), exactly once per stream.
        value.stream.close(&mut sink);
        if let Some(mut pairing) = value.pairing.take() {
            let shared = &mut self.shared;
            let mut ctx = PairCtx {
                limits: &shared.pair_limits,
                budget: &mut shared.budget,
                stats: &mut shared.stats,
                out,
            };
            pairing.flush(end.missing(), &mut ctx);
            pairing.free(ctx.budget);
        }
    }

    /// Idle timeouts, gap timeouts, response waits; call every ~100 ms with the current time
    /// (same clock as the packet timestamps). Never blocks long: work is proportional to what
    /// expires.
    pub fn on_timer(&mut self, now_us: u64, out: &mut Vec<HttpRequest>) {
        while let Some(removed) = self.table.pop_expired(
            now_us,
            self.config.idle_timeout_us,
            self.config.closed_linger_us,
        ) {
            self.shared.stats.flows_expired += 1;
            self.finalize(removed, EndKind::Expired, now_us, out);
        }
        let holes = std::mem::take(&mut self.holes);
        for idx in holes {
            let Some(entry) = self.table.get_mut(idx) else {
                continue;
            };
            if !entry.value.in_holes {
                continue;
            }
            let src = entry.value.source(&entry.key);
            self.shared.stats.sources.set(src);
            self.drive(idx, now_us, EndKind::Closed, out, |stream, limits, sink| {
                stream.on_timer(now_us, limits, sink)
            });
            let dir = &mut self.table.entry_mut(idx).value;
            let closed = dir.stream.state() == StreamState::Closed
                && (dir.role == Role::Responses || ignored_state(&dir.parser).is_none());
            if dir.role == Role::Unknown && dir.is_surely_requests() {
                dir.role = Role::Requests;
                self.demote_peer(idx);
            }
            let dir = &mut self.table.entry_mut(idx).value;
            if dir.stream.has_hole() {
                self.holes.push(idx);
            } else {
                dir.in_holes = false;
            }
            if closed {
                self.table.set_lifecycle(idx, Lifecycle::Closed, now_us);
            }
        }
        // A reused slot may be listed twice.
        self.holes.sort_unstable();
        self.holes.dedup();
        self.expire_waiting(now_us, out);
    }

    /// Gives up the requests whose response wait is over.
    fn expire_waiting(&mut self, now_us: u64, out: &mut Vec<HttpRequest>) {
        while let Some(&Reverse((deadline, idx, generation))) = self.waiting.peek() {
            if deadline > now_us {
                break;
            }
            self.waiting.pop();
            let Some(entry) = self.table.get_mut(idx) else {
                continue;
            };
            let dir = &mut entry.value;
            if dir.generation != generation || !dir.in_waiting {
                continue;
            }
            dir.in_waiting = false;
            let src = dir.source(&entry.key);
            self.shared.stats.sources.set(src);
            let dir = &mut self.table.entry_mut(idx).value;
            if let Some(mut pairing) = dir.pairing.take() {
                let shared = &mut self.shared;
                let mut ctx = PairCtx {
                    limits: &shared.pair_limits,
                    budget: &mut shared.budget,
                    stats: &mut shared.stats,
                    out,
                };
                pairing.expire(now_us, &mut ctx);
                self.table.entry_mut(idx).value.pairing = Some(pairing);
            }
            self.note_waiting(idx);
            self.apply_verdict(idx, now_us, out);
        }
    }

    /// Flush everything at end of input (replay EOF / shutdown): holes are skipped, what is
    /// buffered is delivered, every stream ends, requests still waiting go out without their
    /// response (`input_ended`). The table is empty afterwards.
    pub fn finish(&mut self, out: &mut Vec<HttpRequest>) {
        while let Some(removed) = self.table.pop_any() {
            self.finalize(removed, EndKind::Input, u64::MAX, out);
        }
        self.holes.clear();
        self.waiting.clear();
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.shared.stats
    }

    /// Flow directions currently tracked.
    pub fn active_flows(&self) -> usize {
        self.table.len()
    }

    /// Bytes buffered now (out-of-order segments, partial heads, bodies in progress,
    /// requests waiting for their responses).
    pub fn buffered_bytes(&self) -> usize {
        self.shared.budget.used
    }
}

/// What carried a segment: the VXLAN VNI, the GWLB endpoint (GENEVE), the IP source of the
/// VXLAN datagram (the mirror's source).
#[derive(Debug, Clone, Copy)]
struct Carrier {
    vni: u32,
    gwlbe: Option<u64>,
    mirror: Option<IpAddr>,
    /// The VXLAN datagram was inside GENEVE (so it cannot be a misdirected GENEVE packet).
    in_geneve: bool,
}

impl Carrier {
    /// A VXLAN datagram received directly, sender unknown (the VNI is read from it).
    const DIRECT: Carrier = Carrier {
        vni: 0,
        gwlbe: None,
        mirror: None,
        in_geneve: false,
    };
    /// A plain (already decapsulated) captured frame: VNI 0, nothing else known.
    const PLAIN: Carrier = Carrier::DIRECT;

    /// The source key it tells (`vni`: once read).
    fn source(&self, vni: Option<u32>) -> SourceKey {
        SourceKey {
            gwlbe: self.gwlbe,
            sender: self.mirror,
            vni,
        }
    }
}

/// The response parser of a connection whose server stream is `stream`: the one its pairing
/// holds, or a new one when the server's direction has sent nothing parsed yet (its stream
/// still at its start, else out of step).
fn take_resp(pairing: &mut Pairing, stream: &Stream) -> ResponseParser {
    pairing.resp.take().unwrap_or_else(|| {
        let at_start = stream.state() == StreamState::Listen || stream.at_start();
        if !at_start {
            pairing.out_of_step(ResponseMissing::Gap);
        }
        ResponseParser::new(at_start)
    })
}

/// Why a direction's bytes are ignored, if they are (opaque or upgraded).
fn ignored_state(parser: &Parser) -> Option<DropReason> {
    match parser.state() {
        ParserState::Opaque => Some(DropReason::OpaqueFlow),
        ParserState::Upgraded => Some(DropReason::UpgradedFlow),
        _ => None,
    }
}
