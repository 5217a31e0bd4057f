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
//! direction, so that the per-source counters add up to the totals). This module drives them and is
//! imported by none of them. Its own code is split by concern into private files that are parts
//! of it, not stages (they see its items): `direction` (what is kept per direction), `sinks`
//! (where reassembled bytes go), `tunnel` (the entry points, GENEVE and VXLAN) and `lifecycle`
//! (how directions end, the timer).

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

// The engine's own parts (this module drives them): the per-direction state, the sinks
// reassembled bytes go to, the entry points and tunnels, how directions end.
mod direction;
mod lifecycle;
mod sinks;
mod tunnel;

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

use direction::*;
use sinks::*;
use tunnel::*;

/// A client hole the server acknowledged past is skipped this long after (unless its bytes
/// arrive late from the mirror meanwhile), instead of after the whole gap timeout.
const ACKED_HOLE_GRACE_US: u64 = 200_000;

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
    /// Requests the request parser emitted, on their way to pairing: boxed as built, so that
    /// the parser, this list and pairing's queue move a pointer, not 384 bytes (on the replay
    /// benchmark the moves were ~3 % of the instructions).
    #[allow(clippy::vec_box, reason = "the box is what pairing queues; see above")]
    scratch: Vec<Box<HttpRequest>>,
}

impl Shared {
    /// What pairing needs of the shared state, emitting into `out`.
    fn pair_ctx<'a>(&'a mut self, out: &'a mut Vec<HttpRequest>) -> PairCtx<'a> {
        PairCtx {
            limits: &self.pair_limits,
            budget: &mut self.budget,
            stats: &mut self.stats,
            out,
        }
    }
}

/// How a stream's end is reported to its parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndKind {
    /// FIN reached, or closed by the engine for a reason of the connection itself: a
    /// close-delimited response is complete.
    Closed,
    /// RST: the connection was aborted, so a close-delimited response is not known to be
    /// complete (RFC 9112 §8: complete "unless an error was indicated by the underlying
    /// connection"; curl reports "Connection reset by peer" and no answer).
    Reset,
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
            EndKind::Closed | EndKind::Reset | EndKind::Expired => {
                ResponseMissing::ConnectionClosed
            }
            EndKind::Evicted => ResponseMissing::FlowEvicted,
            EndKind::Input => ResponseMissing::InputEnded,
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
/// - `waiting` holds one live entry for every direction listed (`Direction::waiting`): its
///   generation and its pairing's next deadline, or an earlier time (and entries left
///   behind when a direction was listed again earlier, which `expire_waiting` skips).
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
    /// The frame [`Engine::prefetch_frames`] last read as `after` (address and length) and
    /// the index tags of its key and of the reverse key: the same frame comes back as `next`
    /// one packet later.
    lookahead: ((usize, usize), Option<[u32; 2]>),
    /// Budget use past which idle holders are evicted ([`EngineConfig::reclaim_idle_us`]).
    reclaim_at: usize,
    /// No reclaim before this time (a pass that could not free enough waits).
    reclaim_after_us: u64,
    /// The directions a reclaim pass chose (kept for its allocation).
    reclaim_victims: Vec<u32>,
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
            keep_bodies: config.keep_request_bodies,
            // A health-check rule reads the target and fields before the request waits.
            keep_heads: config.keep_request_heads || !config.health_checks.is_off(),
            health_checks: config.health_checks.clone(),
            proxy_protocol_from: config.proxy_protocol_from.clone(),
        };
        let resp_limits = ResponseLimits {
            max_header_bytes: config.max_response_header_bytes,
            max_headers: config.max_headers.max(128),
            max_body_bytes: config.max_body_bytes,
            keep_bodies: config.keep_response_bodies,
            keep_heads: config.keep_response_heads,
        };
        let pair_limits = PairingLimits {
            response_timeout_us: config.response_timeout_us,
            server_wait_us: config.server_wait_us,
            max_pending: config.max_pending_requests.max(1),
            keep_request_heads: config.keep_request_heads,
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
            lookahead: ((0, 0), None),
            reclaim_at: config.memory_budget_bytes - config.memory_budget_bytes / 8,
            reclaim_after_us: 0,
            reclaim_victims: Vec::new(),
            config,
        }
    }

    /// The caps in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The peer of `idx` when it is a request direction (the connection's pairing lives
    /// there).
    /// Asks the CPU to start loading the pairing of direction `idx`'s connection (its own,
    /// or its peer's for a response direction), a heap box no look-ahead can reach (its
    /// address is in the entry, cached only now): its load then overlaps the source
    /// attribution and stream checks before the box is read. A hint; it changes nothing.
    /// Measured: `docs/engine.md`, "Pairing's cost".
    #[inline]
    fn prefetch_pairing(&self, idx: u32) {
        let e = self.table.entry(idx);
        if let Some(p) = e.value.pairing.as_deref() {
            flow::prefetch_lines(p);
        } else if let Some(peer) = e.peer()
            && let Some(p) = self.table.entry(peer).value.pairing.as_deref()
        {
            flow::prefetch_lines(p);
        }
    }

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
            let ahead_from = client.and_then(|c| self.table.entry(c).value.answers_ahead_from());
            let dir = &mut self.table.entry_mut(idx).value;
            let mut parser = pairing.as_mut().map(|p| take_resp(p, &dir.stream));
            let r = match (parser.as_mut(), pairing.as_mut()) {
                (Some(parser), Some(pairing)) => {
                    let shared = &mut self.shared;
                    let sink = RespSink::new(parser, pairing, shared, out, ahead_from, end, now_us);
                    let mut sink = AnySink::Responses(sink);
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
        let (stream, parts) = dir.for_parsing(&key);
        let sink = ParserSink::new(parts, &mut self.shared, out, server_known, now_us, end);
        let mut sink = AnySink::Requests(sink);
        let r = f(stream, &self.stream_limits, &mut sink);
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

    /// Lists a request direction whose requests wait in `waiting`; listed already with a
    /// deadline that may drop back (`waiting_late`: a head's extension, or a request behind
    /// the front with an earlier deadline), lists it again, earlier, when the pairing's next
    /// deadline fell below it (the entry left behind no longer matches the
    /// pairing's `armed_us`: `expire_waiting` skips it).
    fn note_waiting(&mut self, idx: u32) {
        let dir = &mut self.table.entry_mut(idx).value;
        let listed = dir.waiting.is_some();
        if listed && !dir.waiting_late {
            return;
        }
        let limits = &self.shared.pair_limits;
        let Some(pairing) = dir.pairing.as_deref_mut() else {
            return;
        };
        let Some(deadline) = pairing.next_deadline(limits) else {
            return;
        };
        if listed && deadline >= pairing.armed_us {
            return;
        }
        pairing.armed_us = deadline;
        dir.waiting_late = pairing.may_drop_back(deadline);
        dir.waiting = WaitingMark::of(deadline);
        self.waiting.push(Reverse((deadline, idx, dir.generation)));
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
        if self.shared.budget.used > self.reclaim_at && ts_us >= self.reclaim_after_us {
            self.reclaim(ts_us, out);
        }
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
        self.prefetch_pairing(idx);
        // What happens to the direction's stream is counted for the source its requests are
        // attributed to (the packet itself was counted for its sender).
        let entry = self.table.entry_mut(idx);
        let src = entry.value.source(&entry.key);
        let row = &mut entry.value.source_row;
        self.shared.stats.sources.set_cached(src, row);

        if seg.rst {
            // Requests whose wait was over before the RST are late, not cut by it.
            let client = match self.table.entry(idx).value.role {
                Role::Responses => self.client_of(idx),
                _ => Some(idx),
            };
            if let Some(c) = client {
                self.expire_due(c, ts_us, out);
            }
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
        if has_payload
            && self.table.entry(idx).value.role == Role::Unknown
            && self.answers_a_joined_client(idx, seg)
            && let Some(client) = self.table.entry(idx).peer()
        {
            // Its peer is the client: this direction carries responses from this segment on.
            self.table.entry_mut(client).value.role = Role::Requests;
            self.demote_peer(client);
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
        self.expire_due(client, ts_us, out);
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

    /// Deadlines of request direction `c`'s pairing passed before a packet of its connection
    /// (at `ts_us`) are kept before that packet is read, not at the next timer tick: whether a
    /// late response is paired, and why a request is missing its response, do not depend on
    /// when the timer ran. The connection's entry tells whether one may have passed; the
    /// pairing's queue is read only then.
    fn expire_due(&mut self, c: u32, ts_us: u64, out: &mut Vec<HttpRequest>) {
        let dir = &self.table.entry(c).value;
        let due = dir.waiting.may_have_passed(ts_us)
            && (dir.pairing.as_deref())
                .and_then(|p| p.next_deadline(&self.shared.pair_limits))
                .is_some_and(|d| d <= ts_us);
        if due && let Some(mut pairing) = self.table.entry_mut(c).value.pairing.take() {
            let mut ctx = self.shared.pair_ctx(out);
            pairing.expire(ts_us, &mut ctx);
            self.table.entry_mut(c).value.pairing = Some(pairing);
            // A given-up Upgrade / CONNECT request: its parser goes on now, before the packet.
            self.apply_verdict(c, ts_us, out);
        }
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

    /// Whether direction `idx`, whose role is not known yet (the caller checks, on the
    /// packet path), in a connection joined mid-way, shows itself the server by this segment:
    /// its payload begins with a status line (and it is no SYN: a SYN's sender opens the
    /// connection), this direction has sent no request and is not inside one, and its peer
    /// has sent at least one. Without it, a joined connection's roles are known only once
    /// one direction has sent two requests ([`Direction::is_surely_requests`]), and the
    /// server's answers before that (the first request's among them) would be read as bytes
    /// between requests and skipped, uncounted.
    /// A status line at a segment's start (servers write a response's head from its start)
    /// across from a request is the server's answer, to that request or to one from before
    /// the capture. The reverse needs a client that sends that text at a segment's start
    /// (inside a body) while the server's bytes read as a request line (inside a body):
    /// roles taken on that would lose the client's requests, so a direction that sent a
    /// request or is inside one is never taken for the server this way. A client inside a
    /// body whose head came before the capture is not told apart (nothing of it was seen):
    /// with a server that echoes a request line, the roles can come out reversed, as they
    /// can by two echoed request lines (docs/evasion.md, open cases).
    #[inline(never)]
    fn answers_a_joined_client(&self, idx: u32, seg: &TcpSegment<'_>) -> bool {
        let e = self.table.entry(idx);
        let dir = &e.value;
        debug_assert_eq!(dir.role, Role::Unknown);
        if seg.syn
            || dir.stream.saw_syn()
            || dir.parser.emitted() > 0
            || dir.parser.in_message()
            || !http::response::starts_with_status_line(seg.payload)
        {
            return false;
        }
        e.peer().is_some_and(|p| {
            let peer = &self.table.entry(p).value;
            peer.role == Role::Unknown && peer.parser.emitted() >= 1
        })
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
            // Requests parsed from what turned out to be responses are not requests: those
            // still waiting are dropped, each counted in its own source's row (they were
            // counted as parsed; found by the fuzz target `engine_datagram`: counted, never
            // emitted, and never said).
            for req in pairing.discard(&mut self.shared.budget) {
                self.for_source(req.source_key(), |e| {
                    e.shared.stats.count_drop(DropReason::NotARequest)
                });
            }
        }
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
