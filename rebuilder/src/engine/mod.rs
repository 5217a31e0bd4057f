//! The engine: VXLAN → packet → flow → reassembly → HTTP, driven one packet at a time.
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

pub mod encap;
pub mod flow;
pub mod health_check;
pub mod http;
pub mod packet;
pub mod proxy;
pub mod reassembly;
pub mod request;

use crate::engine::encap::vxlan::VxlanPacket;
use crate::engine::flow::{FlowKey, FlowTable, Lifecycle, Removed};
use crate::engine::health_check::HealthCheckRule;
use crate::engine::http::{Meta, Parser};
use crate::engine::packet::{PacketError, Parsed, TcpSegment, parse_ethernet};
use crate::engine::reassembly::{Budget, Pushed, Segment, Sink, State as StreamState, Stream};
use crate::engine::request::HttpRequest;

/// Every cap of the engine. All fields are public; [`Default`] gives the documented values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Hard cap on flow *directions* tracked at once (a connection seen both ways uses two);
    /// beyond it a closed direction, else the least recently used open one, is evicted
    /// (counted in `flows_evicted`). Default 100,000 (≈ 40 MB of table when full: 264 bytes
    /// per entry plus the hash index).
    pub max_flows: usize,
    /// Out-of-order bytes buffered per direction. Default 256 KiB.
    pub max_ooo_bytes_per_flow: usize,
    /// Out-of-order segments buffered per direction. Default 128.
    pub max_ooo_segments_per_flow: usize,
    /// Global budget for buffered bytes (out-of-order segments, partial heads, bodies in
    /// progress) over all flows. Default 32 MiB.
    pub memory_budget_bytes: usize,
    /// A hole is skipped (reported as a gap) once this many bytes are buffered past it.
    /// Default 64 KiB.
    pub gap_skip_bytes: usize,
    /// A hole is skipped once it has been open this long. Default 500 ms.
    pub gap_timeout_us: u64,
    /// ... or this long once the sender's FIN is known. Default 50 ms.
    pub gap_timeout_after_fin_us: u64,
    /// A flow with no packet for this long is expired. Default 120 s.
    pub idle_timeout_us: u64,
    /// A closed flow (FIN both ways or RST) is kept this long to absorb late
    /// retransmissions without re-parsing them. Default 10 s.
    pub closed_linger_us: u64,
    /// Maximum size of a request head (request line + header fields). Default 32 KiB.
    pub max_header_bytes: usize,
    /// Maximum number of header fields of a request. Default 128.
    pub max_headers: usize,
    /// Maximum body kept per request; longer bodies are cut and flagged. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Only these VNIs are processed (`None` = all).
    pub vni_allow: Option<Vec<u32>>,
    /// Requests dropped as load-balancer health checks (counted as `health_check`).
    /// Default: [`HealthCheckRule::default`] (User-Agent `ELB-HealthChecker/`, ...).
    pub health_checks: HealthCheckRule,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_flows: 100_000,
            max_ooo_bytes_per_flow: 256 * 1024,
            max_ooo_segments_per_flow: 128,
            memory_budget_bytes: 32 * 1024 * 1024,
            gap_skip_bytes: 64 * 1024,
            gap_timeout_us: 500_000,
            gap_timeout_after_fin_us: 50_000,
            idle_timeout_us: 120_000_000,
            closed_linger_us: 10_000_000,
            max_header_bytes: 32 * 1024,
            max_headers: 128,
            max_body_bytes: 1024 * 1024,
            vni_allow: None,
            health_checks: HealthCheckRule::default(),
        }
    }
}

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident => $label:literal, )*) => {
        /// Why something was not emitted. Closed set: usable as a metric label.
        ///
        /// Packet-level reasons count packets; message-level reasons (`message_*`,
        /// `head_too_large`, `too_many_headers`, `bad_request`, `flow_evicted`) count requests lost.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in a stable order.
            pub const ALL: [DropReason; [$(DropReason::$variant),*].len()] = [$(DropReason::$variant),*];

            /// Stable snake_case label.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $( DropReason::$variant => $label, )*
                }
            }
        }
    };
}

drop_reasons! {
    /// Packet: VXLAN header shorter than 8 bytes or I flag not set.
    VxlanMalformed => "vxlan_malformed",
    /// Packet: VNI not in the allow-list.
    VniNotAllowed => "vni_not_allowed",
    /// Packet: outer or inner headers could not be parsed (cut short, bad version, bad TCP header).
    MalformedPacket => "malformed_packet",
    /// Packet: not TCP (ARP, ICMP, UDP other than VXLAN, ...).
    NonTcp => "non_tcp",
    /// Packet: an IPv4 or IPv6 fragment (not reassembled).
    IpFragment => "ip_fragment",
    /// Packet: every payload byte was already seen (retransmission, double mirroring).
    DuplicateSegment => "duplicate_segment",
    /// Packet: out-of-order segment dropped because the global memory budget was used up.
    OverBudget => "over_budget",
    /// Packet: payload on a flow marked opaque (TLS, HTTP/2).
    OpaqueFlow => "opaque_flow",
    /// Packet: payload on a flow after Upgrade / CONNECT.
    UpgradedFlow => "upgraded_flow",
    /// Packet: payload past the sender's FIN or on a closed stream.
    AfterClose => "after_close",
    /// Request: a gap (lost bytes) inside the message.
    MessageGap => "message_gap",
    /// Request: the stream ended (FIN, RST, idle timeout, end of input) inside the message.
    MessageIncomplete => "message_incomplete",
    /// Request: head larger than `max_header_bytes`.
    HeadTooLarge => "head_too_large",
    /// Request: more than `max_headers` header fields.
    TooManyHeaders => "too_many_headers",
    /// Request: malformed head or body framing.
    BadRequest => "bad_request",
    /// Request: in progress on a flow evicted because the flow table was full.
    FlowEvicted => "flow_evicted",
    /// Request: a load-balancer health check (`EngineConfig::health_checks`).
    HealthCheck => "health_check",
    /// Stream: a PROXY protocol header that is malformed or cut short (by a gap or the end
    /// of the stream).
    ProxyHeaderMalformed => "proxy_header_malformed",
}

/// Plain counters (no atomics: one engine per worker thread).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Packets handed to the engine (datagrams or captured frames).
    pub packets: u64,
    /// Bytes handed to the engine.
    pub bytes: u64,
    /// Requests emitted.
    pub requests: u64,
    /// Of those, requests whose body was cut at `max_body_bytes`.
    pub bodies_truncated: u64,
    /// Flow directions created.
    pub flows_created: u64,
    /// Open flow directions evicted because the table was full.
    pub flows_evicted: u64,
    /// Flow directions removed after the idle timeout (or the closed linger).
    pub flows_expired: u64,
    /// Holes skipped and reported to the parser as gaps.
    pub gaps: u64,
    /// Bytes skipped in those gaps (including tails cut by PacketLength).
    pub gap_bytes: u64,
    /// Flows marked opaque (TLS ClientHello or HTTP/2 preface at stream start).
    pub opaque_flows: u64,
    /// Flows no longer parsed after an Upgrade / CONNECT request.
    pub upgraded_flows: u64,
    /// Packets on a direction known to carry responses (ignored cheaply).
    pub response_packets: u64,
    /// Valid PROXY protocol headers stripped (v1 or v2).
    pub proxy_headers: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl EngineStats {
    /// Count of drops for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Sum over every drop reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds every counter of `other` to `self` (one engine per worker, summed for metrics).
    pub fn merge(&mut self, other: &EngineStats) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.requests += other.requests;
        self.bodies_truncated += other.bodies_truncated;
        self.flows_created += other.flows_created;
        self.flows_evicted += other.flows_evicted;
        self.flows_expired += other.flows_expired;
        self.gaps += other.gaps;
        self.gap_bytes += other.gap_bytes;
        self.opaque_flows += other.opaque_flows;
        self.upgraded_flows += other.upgraded_flows;
        self.response_packets += other.response_packets;
        self.proxy_headers += other.proxy_headers;
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }
}

/// What a direction is known to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not known yet: parsed, looking for requests.
    Unknown,
    /// Requests were parsed from it.
    Requests,
    /// Its peer carries the requests, or it sent a SYN+ACK: ignored cheaply.
    Responses,
}

/// State of one direction (role first: it decides whether anything else is read).
///
/// Invariant: a `Responses` direction holds no buffered byte (its stream and parser were
/// released when it got that role).
#[derive(Debug)]
#[repr(C)]
struct Direction {
    role: Role,
    /// Listed in `Engine::holes` (checked by the timer).
    in_holes: bool,
    stream: Stream,
    parser: Parser,
}

impl Direction {
    fn new(role: Role) -> Direction {
        Direction {
            role,
            stream: Stream::new(),
            parser: Parser::new(),
            in_holes: false,
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

/// Feeds the reassembled stream into the parser.
struct ParserSink<'a, 'c> {
    parser: &'a mut Parser,
    ctx: http::Ctx<'c>,
    evicting: bool,
}

impl Sink for ParserSink<'_, '_> {
    fn data(&mut self, ts_us: u64, bytes: &[u8]) {
        self.parser.data(ts_us, bytes, &mut self.ctx);
    }
    fn gap(&mut self, len: u64) {
        self.ctx.stats.gaps += 1;
        self.ctx.stats.gap_bytes += len;
        self.parser.gap(len, &mut self.ctx);
    }
    fn end(&mut self) {
        if self.evicting {
            self.parser.evict(&mut self.ctx);
        } else {
            self.parser.end(&mut self.ctx);
        }
    }
    fn budget(&mut self) -> &mut Budget {
        self.ctx.budget
    }
}

/// The engine. See the module documentation.
///
/// Invariants:
/// - `budget.used` is the sum over directions of buffered out-of-order bytes and parser
///   buffers; it never exceeds `budget.limit` by more than one head being completed.
/// - `holes` lists (at least) every slot whose stream has a hole open.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    stats: EngineStats,
    table: FlowTable<Direction>,
    budget: Budget,
    stream_limits: reassembly::Limits,
    http_limits: http::Limits,
    holes: Vec<u32>,
}

impl Engine {
    /// A new engine with these caps.
    pub fn new(config: EngineConfig) -> Engine {
        let stream_limits = reassembly::Limits {
            // Per-direction counts are kept in 32 bits.
            max_ooo_bytes: config.max_ooo_bytes_per_flow.min(1 << 30),
            max_ooo_segments: config.max_ooo_segments_per_flow,
            gap_skip_bytes: config.gap_skip_bytes,
            gap_timeout_us: config.gap_timeout_us,
            gap_timeout_after_fin_us: config.gap_timeout_after_fin_us,
        };
        let http_limits = http::Limits {
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
            max_body_bytes: config.max_body_bytes,
            health_checks: config.health_checks.clone(),
        };
        Engine {
            table: FlowTable::new(config.max_flows),
            budget: Budget::new(config.memory_budget_bytes),
            stats: EngineStats::default(),
            stream_limits,
            http_limits,
            holes: Vec::new(),
            config,
        }
    }

    /// The caps in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Live path: the payload of one UDP datagram received on port 4789 (VXLAN header first).
    pub fn on_vxlan_payload(&mut self, ts_us: u64, payload: &[u8], out: &mut Vec<HttpRequest>) {
        self.stats.packets += 1;
        self.stats.bytes += payload.len() as u64;
        self.vxlan(ts_us, payload, out);
    }

    /// Replay path: one captured link-layer frame: an outer Ethernet frame carrying
    /// IPv4/IPv6 -> UDP dst 4789 -> VXLAN, or a plain (already decapsulated) Ethernet frame.
    pub fn on_captured_frame(&mut self, ts_us: u64, frame: &[u8], out: &mut Vec<HttpRequest>) {
        self.stats.packets += 1;
        self.stats.bytes += frame.len() as u64;
        match parse_ethernet(frame, true) {
            Ok(Parsed::Vxlan(payload)) => self.vxlan(ts_us, payload, out),
            Ok(Parsed::Tcp(seg)) => {
                if self.vni_allowed(0) {
                    self.segment(ts_us, 0, &seg, out);
                } else {
                    self.stats.count_drop(DropReason::VniNotAllowed);
                }
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
        self.stats.count_drop(match e {
            PacketError::Malformed => DropReason::MalformedPacket,
            PacketError::Fragment => DropReason::IpFragment,
            PacketError::NonTcp => DropReason::NonTcp,
        });
    }

    fn vxlan(&mut self, ts_us: u64, payload: &[u8], out: &mut Vec<HttpRequest>) {
        let Ok(v) = VxlanPacket::parse(payload) else {
            self.stats.count_drop(DropReason::VxlanMalformed);
            return;
        };
        if !self.vni_allowed(v.vni) {
            self.stats.count_drop(DropReason::VniNotAllowed);
            return;
        }
        match parse_ethernet(v.inner, false) {
            Ok(Parsed::Tcp(seg)) => self.segment(ts_us, v.vni, &seg, out),
            Ok(Parsed::Vxlan(_)) => self.stats.count_drop(DropReason::NonTcp),
            Err(e) => self.packet_error(e),
        }
    }

    /// One TCP segment of direction (vni, src, dst).
    fn segment(&mut self, ts_us: u64, vni: u32, seg: &TcpSegment<'_>, out: &mut Vec<HttpRequest>) {
        let key = FlowKey::new(vni, seg.src, seg.dst);
        let has_payload = seg.wire_len() > 0;
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
                self.create(key, seg, ts_us, out)
            }
        };
        self.table.touch(idx, ts_us);

        if seg.rst {
            // The RST's sequence number is where the sender's stream stood.
            self.table.entry_mut(idx).value.stream.note_sent(seg.seq);
            self.close_direction(idx, ts_us, out);
            if let Some(p) = self.table.entry(idx).peer() {
                self.close_direction(p, ts_us, out);
            }
            return;
        }

        let entry = self.table.entry_mut(idx);
        let dir = &mut entry.value;
        if seg.syn && seg.ack && dir.role == Role::Unknown && dir.parser.emitted() == 0 {
            dir.role = Role::Responses;
            let (stream, parser) = (&mut dir.stream, &mut dir.parser);
            Self::release(
                stream,
                parser,
                &mut self.budget,
                out,
                &self.http_limits,
                key,
            );
        }
        if dir.role == Role::Responses {
            self.stats.response_packets += 1;
            if seg.fin && entry.lifecycle() == Lifecycle::Open {
                self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
            }
            return;
        }

        let segment = Segment {
            ts_us,
            seq: seg.seq,
            syn: seg.syn,
            fin: seg.fin,
            payload: seg.payload,
            missing: seg.missing,
        };
        if dir.stream.is_new_connection(&segment) {
            // Port reuse: the old connection is over, a new one starts.
            let mut sink = ParserSink {
                parser: &mut dir.parser,
                ctx: http::Ctx {
                    limits: &self.http_limits,
                    budget: &mut self.budget,
                    stats: &mut self.stats,
                    out,
                    meta: meta(key),
                },
                evicting: false,
            };
            dir.stream.close(&mut sink);
            *dir = Direction::new(Role::Unknown);
            self.table.set_lifecycle(idx, Lifecycle::Open, ts_us);
        }
        let entry = self.table.entry_mut(idx);
        let dir = &mut entry.value;
        if let Some(reason) = ignored_state(&dir.parser) {
            if has_payload {
                self.stats.count_drop(reason);
            }
            if seg.fin {
                self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
            }
            return;
        }
        if segment.syn && dir.stream.state() == StreamState::Listen {
            dir.parser = Parser::at_stream_start();
        }
        let mut sink = ParserSink {
            parser: &mut dir.parser,
            ctx: http::Ctx {
                limits: &self.http_limits,
                budget: &mut self.budget,
                stats: &mut self.stats,
                out,
                meta: meta(key),
            },
            evicting: false,
        };
        let reason = match dir.stream.push(segment, &self.stream_limits, &mut sink) {
            Pushed::Accepted => None,
            Pushed::Duplicate => Some(DropReason::DuplicateSegment),
            Pushed::OverBudget => Some(DropReason::OverBudget),
            Pushed::AfterClose => Some(DropReason::AfterClose),
        };
        if let Some(reason) = reason {
            sink.ctx.stats.count_drop(reason);
        }
        if sink.parser.is_done() && dir.stream.buffered_bytes() > 0 {
            // Opaque or upgraded: buffered bytes will never be parsed.
            dir.stream.close(&mut sink);
        }
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
            self.demote_peer(idx, out);
        }
        if closed {
            self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
        }
    }

    /// Creates the entry for `key` (evicting at the cap).
    fn create(
        &mut self,
        key: FlowKey,
        seg: &TcpSegment<'_>,
        ts_us: u64,
        out: &mut Vec<HttpRequest>,
    ) -> u32 {
        let peer_is_requests = self
            .table
            .find(&key.reverse())
            .is_some_and(|p| self.table.entry(p).value.role == Role::Requests);
        let role = if (seg.syn && seg.ack) || peer_is_requests {
            Role::Responses
        } else {
            Role::Unknown
        };
        let (idx, evicted) = self.table.insert(key, Direction::new(role), ts_us);
        self.stats.flows_created += 1;
        if let Some(removed) = evicted {
            let was_open = removed.was_open;
            if was_open {
                self.stats.flows_evicted += 1;
            } else {
                self.stats.flows_expired += 1;
            }
            self.finalize(removed, was_open, out);
        }
        idx
    }

    /// The peer of a request direction carries responses: stop reassembling it.
    fn demote_peer(&mut self, idx: u32, out: &mut Vec<HttpRequest>) {
        let Some(p) = self.table.entry(idx).peer() else {
            return;
        };
        let entry = self.table.entry_mut(p);
        let key = entry.key;
        let dir = &mut entry.value;
        if dir.role != Role::Unknown {
            return;
        }
        dir.role = Role::Responses;
        Self::release(
            &mut dir.stream,
            &mut dir.parser,
            &mut self.budget,
            out,
            &self.http_limits,
            key,
        );
    }

    /// Frees a direction's buffers without emitting or counting anything (its bytes are
    /// responses).
    fn release(
        stream: &mut Stream,
        parser: &mut Parser,
        budget: &mut Budget,
        out: &mut Vec<HttpRequest>,
        limits: &http::Limits,
        key: FlowKey,
    ) {
        let mut scratch = EngineStats::default();
        let mut sink = ParserSink {
            parser,
            ctx: http::Ctx {
                limits,
                budget,
                stats: &mut scratch,
                out,
                meta: meta(key),
            },
            evicting: false,
        };
        let before = sink.ctx.out.len();
        stream.close(&mut sink);
        // Whatever the parser found in response bytes is not a request.
        sink.ctx.out.truncate(before);
        *stream = Stream::new();
        *parser = Parser::new();
    }

    /// Closes one direction's stream (RST or end): delivers what is buffered, ends it.
    fn close_direction(&mut self, idx: u32, ts_us: u64, out: &mut Vec<HttpRequest>) {
        let entry = self.table.entry_mut(idx);
        let key = entry.key;
        let dir = &mut entry.value;
        let mut sink = ParserSink {
            parser: &mut dir.parser,
            ctx: http::Ctx {
                limits: &self.http_limits,
                budget: &mut self.budget,
                stats: &mut self.stats,
                out,
                meta: meta(key),
            },
            evicting: false,
        };
        dir.stream.close(&mut sink);
        self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
    }

    /// Ends a removed direction: buffered bytes are delivered (with gaps), the parser ends.
    fn finalize(
        &mut self,
        removed: Removed<Direction>,
        evicting: bool,
        out: &mut Vec<HttpRequest>,
    ) {
        let Removed { key, mut value, .. } = removed;
        let mut sink = ParserSink {
            parser: &mut value.parser,
            ctx: http::Ctx {
                limits: &self.http_limits,
                budget: &mut self.budget,
                stats: &mut self.stats,
                out,
                meta: meta(key),
            },
            evicting,
        };
        // Ends the parser too (`Sink::end`), exactly once per stream.
        value.stream.close(&mut sink);
    }

    /// Idle timeouts, gap timeouts; call every ~100 ms with the current time (same clock
    /// as the packet timestamps). Never blocks long: work is proportional to what expires.
    pub fn on_timer(&mut self, now_us: u64, out: &mut Vec<HttpRequest>) {
        while let Some(removed) = self.table.pop_expired(
            now_us,
            self.config.idle_timeout_us,
            self.config.closed_linger_us,
        ) {
            self.stats.flows_expired += 1;
            self.finalize(removed, false, out);
        }
        let holes = std::mem::take(&mut self.holes);
        for idx in holes {
            let Some(entry) = self.table.get_mut(idx) else {
                continue;
            };
            let key = entry.key;
            let dir = &mut entry.value;
            if !dir.in_holes {
                continue;
            }
            let mut sink = ParserSink {
                parser: &mut dir.parser,
                ctx: http::Ctx {
                    limits: &self.http_limits,
                    budget: &mut self.budget,
                    stats: &mut self.stats,
                    out,
                    meta: meta(key),
                },
                evicting: false,
            };
            dir.stream.on_timer(now_us, &self.stream_limits, &mut sink);
            let closed =
                dir.stream.state() == StreamState::Closed && ignored_state(&dir.parser).is_none();
            if dir.role == Role::Unknown && dir.is_surely_requests() {
                dir.role = Role::Requests;
                self.demote_peer(idx, out);
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
    }

    /// Flush everything at end of input (replay EOF / shutdown): holes are skipped, what is
    /// buffered is delivered, every stream ends. The table is empty afterwards.
    pub fn finish(&mut self, out: &mut Vec<HttpRequest>) {
        while let Some(removed) = self.table.pop_any() {
            self.finalize(removed, false, out);
        }
        self.holes.clear();
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Flow directions currently tracked.
    pub fn active_flows(&self) -> usize {
        self.table.len()
    }

    /// Bytes buffered now (out-of-order segments, partial heads, bodies in progress).
    pub fn buffered_bytes(&self) -> usize {
        self.budget.used
    }
}

/// Why a direction's bytes are ignored, if they are (opaque or upgraded).
fn ignored_state(parser: &Parser) -> Option<DropReason> {
    match parser.state() {
        http::State::Opaque => Some(DropReason::OpaqueFlow),
        http::State::Upgraded => Some(DropReason::UpgradedFlow),
        _ => None,
    }
}

fn meta(key: FlowKey) -> Meta {
    Meta {
        vni: key.vni(),
        client: key.src(),
        server: key.dst(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::engine::http::tests::{GenRequest, gen_request};
    use crate::engine::packet::build::{Flags, outer_frame, tcp_frame, vxlan};
    use proptest::prelude::*;

    /// One TCP connection seen through a VXLAN mirror: builds the datagrams of both sides.
    struct Conn {
        vni: u32,
        client: SocketAddr,
        server: SocketAddr,
        c_isn: u32,
        c_next: u32,
        s_next: u32,
    }

    impl Conn {
        fn new(vni: u32, client: &str, server: &str, c_isn: u32) -> Conn {
            Conn {
                vni,
                client: client.parse().unwrap(),
                server: server.parse().unwrap(),
                c_isn,
                c_next: c_isn.wrapping_add(1),
                s_next: 77_000,
            }
        }
        fn c(&self, seq: u32, flags: Flags, payload: &[u8]) -> Vec<u8> {
            vxlan(
                self.vni,
                &tcp_frame(self.client, self.server, seq, flags, payload),
            )
        }
        fn s(&self, seq: u32, flags: Flags, payload: &[u8]) -> Vec<u8> {
            vxlan(
                self.vni,
                &tcp_frame(self.server, self.client, seq, flags, payload),
            )
        }
        fn syn(&self) -> Vec<u8> {
            self.c(
                self.c_isn,
                Flags {
                    syn: true,
                    ..Flags::default()
                },
                b"",
            )
        }
        fn syn_ack(&self) -> Vec<u8> {
            self.s(
                self.s_next.wrapping_sub(1),
                Flags {
                    syn: true,
                    ack: true,
                    ack_num: self.c_isn.wrapping_add(1),
                    ..Flags::default()
                },
                b"",
            )
        }
        /// Client data; the ACK number changes with every call (it must not matter).
        fn send(&mut self, payload: &[u8]) -> Vec<u8> {
            let seq = self.c_next;
            self.c_next = self.c_next.wrapping_add(payload.len() as u32);
            self.c(
                seq,
                Flags {
                    ack: true,
                    ack_num: self.s_next,
                    ..Flags::default()
                },
                payload,
            )
        }
        fn respond(&mut self, payload: &[u8]) -> Vec<u8> {
            let seq = self.s_next;
            self.s_next = self.s_next.wrapping_add(payload.len() as u32);
            self.s(
                seq,
                Flags {
                    ack: true,
                    ack_num: self.c_next,
                    ..Flags::default()
                },
                payload,
            )
        }
        fn fin(&mut self) -> Vec<u8> {
            let seq = self.c_next;
            self.c_next = self.c_next.wrapping_add(1);
            self.c(
                seq,
                Flags {
                    fin: true,
                    ack: true,
                    ..Flags::default()
                },
                b"",
            )
        }
        fn rst(&self) -> Vec<u8> {
            self.s(
                self.s_next,
                Flags {
                    rst: true,
                    ..Flags::default()
                },
                b"",
            )
        }
    }

    fn engine() -> Engine {
        Engine::new(EngineConfig::default())
    }

    fn run(e: &mut Engine, datagrams: &[Vec<u8>]) -> Vec<HttpRequest> {
        let mut out = Vec::new();
        for (i, d) in datagrams.iter().enumerate() {
            e.on_vxlan_payload(1_000 + i as u64, d, &mut out);
        }
        out
    }

    fn targets(reqs: &[HttpRequest]) -> Vec<&str> {
        reqs.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn request_over_vxlan_is_emitted_with_its_flow_identity_and_time() {
        let mut c = Conn::new(4242, "10.0.0.1:40000", "10.0.0.2:8080", 1000);
        let mut e = engine();
        let d = [
            c.syn(),
            c.syn_ack(),
            c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"),
        ];
        let out = run(&mut e, &d);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(
            (r.vni, r.client, r.server, r.ts_us),
            (4242, c.client, c.server, 1_002)
        );
        assert_eq!(e.stats().requests, 1);
        assert_eq!(e.active_flows(), 2);
    }

    #[test]
    fn captured_outer_frames_and_plain_frames_are_both_understood() {
        let mut c = Conn::new(9, "10.0.0.1:40000", "10.0.0.2:80", 5);
        let inner = tcp_frame(
            c.client,
            c.server,
            c.c_next,
            Flags::default(),
            b"GET /v HTTP/1.1\r\n\r\n",
        );
        let mut e = engine();
        let mut out = Vec::new();
        e.on_captured_frame(1, &outer_frame([172, 16, 0, 1], 9, &inner), &mut out);
        c.c_next += 1;
        let plain = tcp_frame(
            c.client,
            c.server,
            1,
            Flags::default(),
            b"GET /p HTTP/1.1\r\n\r\n",
        );
        e.on_captured_frame(2, &plain, &mut out);
        assert_eq!(targets(&out), ["/v", "/p"]);
        assert_eq!((out[0].vni, out[1].vni), (9, 0));
    }

    #[test]
    fn retransmitted_first_segment_does_not_duplicate_the_request() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let first = c.send(b"GET /once HTTP/1.1\r\n\r\n");
        let mut e = engine();
        let out = run(&mut e, &[c.syn(), first.clone(), first.clone(), first]);
        assert_eq!(targets(&out), ["/once"]);
        assert_eq!(e.stats().drops(DropReason::DuplicateSegment), 2);
    }

    #[test]
    fn same_packet_mirrored_from_both_ends_is_seen_once() {
        let c = Conn::new(3, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let inner = tcp_frame(
            c.client,
            c.server,
            c.c_next,
            Flags {
                ack: true,
                ..Flags::default()
            },
            b"POST /m HTTP/1.1\r\nContent-Length: 2\r\n\r\nok",
        );
        let mut e = engine();
        let mut out = Vec::new();
        e.on_captured_frame(1, &outer_frame([10, 0, 0, 1], 3, &inner), &mut out);
        e.on_captured_frame(1, &outer_frame([10, 0, 0, 2], 3, &inner), &mut out);
        assert_eq!(targets(&out), ["/m"]);
    }

    #[test]
    fn request_split_across_segments_with_moving_acks_is_one_request() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut d = vec![c.syn()];
        d.push(c.send(b"POST /split HTTP/1.1\r\nContent-"));
        d.push(c.respond(b"HTTP/1.1 100 Continue\r\n\r\n"));
        d.push(c.send(b"Length: 5\r\n\r\nab"));
        d.push(c.respond(b"x"));
        d.push(c.send(b"cde"));
        let mut e = engine();
        let out = run(&mut e, &d);
        assert_eq!(targets(&out), ["/split"]);
        assert_eq!(out[0].body, b"abcde");
    }

    #[test]
    fn response_direction_is_ignored_even_when_it_looks_like_requests() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut d = vec![c.syn(), c.syn_ack(), c.send(b"GET / HTTP/1.1\r\n\r\n")];
        d.push(
            c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nGET /evil HTTP/1.1\r\n\r\n"),
        );
        let mut e = engine();
        let out = run(&mut e, &d);
        assert_eq!(targets(&out), ["/"]);
        assert!(e.stats().response_packets >= 2);
    }

    #[test]
    fn request_text_in_a_response_joined_mid_stream_does_not_silence_the_client() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut e = engine();
        // Joined mid-way: the response body quotes a request, then the client sends two.
        let mut d = vec![c.respond(b"ml>\nGET /quoted HTTP/1.1\r\n\r\n<p>")];
        d.push(c.send(b"GET /1 HTTP/1.1\r\n\r\n"));
        d.push(c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        d.push(c.send(b"GET /2 HTTP/1.1\r\n\r\n"));
        let out = run(&mut e, &d);
        assert!(
            targets(&out).ends_with(&["/1", "/2"]),
            "{:?}",
            targets(&out)
        );
        // Now the client direction is known: the response direction is ignored.
        let later = run(&mut e, &[c.respond(b"GET /ignored HTTP/1.1\r\n\r\n")]);
        assert!(later.is_empty());
    }

    #[test]
    fn joining_mid_stream_without_syn_recovers_the_next_request() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let _lost = c.send(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234");
        let d = [c.send(b"56789"), c.send(b"GET /b HTTP/1.1\r\n\r\n")];
        let mut e = engine();
        let out = run(&mut e, &d);
        assert_eq!(targets(&out), ["/b"]);
    }

    #[test]
    fn vni_outside_the_allow_list_is_dropped() {
        let mut c = Conn::new(5, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut e = Engine::new(EngineConfig {
            vni_allow: Some(vec![6]),
            ..EngineConfig::default()
        });
        let out = run(&mut e, &[c.syn(), c.send(b"GET / HTTP/1.1\r\n\r\n")]);
        assert!(out.is_empty());
        assert_eq!(e.stats().drops(DropReason::VniNotAllowed), 2);
        assert_eq!(e.active_flows(), 0);
    }

    #[test]
    fn malformed_datagrams_are_counted_and_lose_nothing_else() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut e = engine();
        let mut out = Vec::new();
        e.on_vxlan_payload(0, &c.syn(), &mut out);
        e.on_vxlan_payload(0, &[0x08, 0, 0], &mut out);
        e.on_vxlan_payload(0, &[0; 8], &mut out);
        e.on_vxlan_payload(0, &vxlan(1, &[1, 2, 3]), &mut out);
        let good = c.send(b"GET /ok HTTP/1.1\r\n\r\n");
        e.on_vxlan_payload(0, &good[..8 + 14 + 20 + 10], &mut out);
        e.on_vxlan_payload(0, &good, &mut out);
        assert_eq!(targets(&out), ["/ok"]);
        assert_eq!(e.stats().drops(DropReason::VxlanMalformed), 2);
        // An inner frame of 3 bytes and a TCP header cut short.
        assert_eq!(e.stats().drops(DropReason::MalformedPacket), 2);
    }

    #[test]
    fn packet_cut_by_packet_length_drops_only_its_request() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let big = format!(
            "POST /cut HTTP/1.1\r\nContent-Length: 2000\r\n\r\n{}",
            "x".repeat(2000)
        );
        let cut = c.send(big.as_bytes());
        let d = [
            c.syn(),
            cut[..8 + 14 + 20 + 20 + 500].to_vec(),
            c.send(b"GET /next HTTP/1.1\r\n\r\n"),
        ];
        let mut e = engine();
        let out = run(&mut e, &d);
        assert_eq!(targets(&out), ["/next"]);
        assert_eq!(e.stats().drops(DropReason::MessageGap), 1);
        assert_eq!(e.stats().gaps, 1);
    }

    #[test]
    fn hole_is_skipped_by_the_timer_and_later_requests_survive() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let _lost = c.send(b"GET /lost HTTP/1.1\r\n\r\n");
        let d = [c.syn(), c.send(b"GET /after HTTP/1.1\r\n\r\n")];
        let mut e = engine();
        let mut out = run(&mut e, &d);
        assert!(out.is_empty());
        e.on_timer(1_001 + e.config().gap_timeout_us, &mut out);
        assert_eq!(targets(&out), ["/after"]);
        assert_eq!(e.buffered_bytes(), 0);
    }

    #[test]
    fn idle_flows_expire_and_their_unfinished_request_is_counted() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut e = engine();
        let mut out = run(&mut e, &[c.syn(), c.send(b"GET /half HTTP/1.1\r\n")]);
        e.on_timer(10_000, &mut out);
        assert_eq!(e.active_flows(), 1);
        e.on_timer(1_001 + e.config().idle_timeout_us, &mut out);
        assert_eq!(e.active_flows(), 0);
        assert!(out.is_empty());
        assert_eq!(e.stats().flows_expired, 1);
        assert_eq!(e.stats().drops(DropReason::MessageIncomplete), 1);
        assert_eq!(e.buffered_bytes(), 0);
    }

    #[test]
    fn flow_cap_evicts_the_least_recently_used_and_counts_it() {
        let mut e = Engine::new(EngineConfig {
            max_flows: 2,
            ..EngineConfig::default()
        });
        let mut out = Vec::new();
        let mut conns: Vec<Conn> = (0..3)
            .map(|i| Conn::new(1, &format!("10.0.0.1:{}", 1000 + i), "10.0.0.2:80", 1))
            .collect();
        for c in &mut conns {
            e.on_vxlan_payload(0, &c.syn(), &mut out);
            e.on_vxlan_payload(0, &c.send(b"GET /p HTTP/1.1\r\nA"), &mut out);
        }
        assert_eq!(e.active_flows(), 2);
        assert_eq!(e.stats().flows_evicted, 1);
        assert_eq!(e.stats().drops(DropReason::FlowEvicted), 1);
        assert_eq!(e.buffered_bytes(), 2 * 18);
    }

    #[test]
    fn reset_closes_both_directions_and_counts_the_unfinished_request() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut e = engine();
        let d = [
            c.syn(),
            c.syn_ack(),
            c.send(b"POST /r HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc"),
            c.rst(),
        ];
        let out = run(&mut e, &d);
        assert!(out.is_empty());
        assert_eq!(e.stats().drops(DropReason::MessageIncomplete), 1);
        assert_eq!(e.buffered_bytes(), 0);
    }

    #[test]
    fn expect_continue_body_lost_before_fin_or_reset_drops_the_request() {
        for end in ["fin", "rst"] {
            let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
            let mut d = vec![c.syn(), c.syn_ack()];
            d.push(
                c.send(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"),
            );
            let _lost = c.send(b"body");
            d.push(if end == "fin" {
                c.fin()
            } else {
                c.c(
                    c.c_next,
                    Flags {
                        rst: true,
                        ..Flags::default()
                    },
                    b"",
                )
            });
            let mut e = engine();
            let mut out = run(&mut e, &d);
            e.finish(&mut out);
            assert!(out.is_empty(), "{end}: {:?}", targets(&out));
            assert_eq!(e.stats().drops(DropReason::MessageGap), 1, "{end}");
        }
    }

    #[test]
    fn fin_completes_the_stream_and_late_data_is_counted() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut e = engine();
        let mut d = vec![c.syn(), c.send(b"GET /f HTTP/1.1\r\n\r\n"), c.fin()];
        d.push(c.send(b"GET /late HTTP/1.1\r\n\r\n"));
        let out = run(&mut e, &d);
        assert_eq!(targets(&out), ["/f"]);
        assert_eq!(e.stats().drops(DropReason::AfterClose), 1);
    }

    #[test]
    fn new_syn_on_a_reused_port_starts_a_new_connection() {
        let mut a = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut b = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 900_000);
        let mut e = engine();
        let d = [
            a.syn(),
            a.send(b"GET /a HTTP/1.1\r\n\r\n"),
            a.fin(),
            b.syn(),
            b.send(b"GET /b HTTP/1.1\r\n\r\n"),
        ];
        let out = run(&mut e, &d);
        assert_eq!(targets(&out), ["/a", "/b"]);
    }

    #[test]
    fn tls_flow_is_opaque_and_its_packets_are_counted() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:443", 1);
        let mut e = engine();
        let d = [
            c.syn(),
            c.send(&[0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0]),
            c.send(b"GET / HTTP/1.1\r\n\r\n"),
        ];
        let out = run(&mut e, &d);
        assert!(out.is_empty());
        assert_eq!(e.stats().opaque_flows, 1);
        assert_eq!(e.stats().drops(DropReason::OpaqueFlow), 1);
    }

    #[test]
    fn packets_after_an_upgrade_are_counted_as_upgraded_even_after_reordering() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut e = engine();
        let up = c.send(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        let f1 = c.send(b"\x81\x05hello");
        let f2 = c.send(b"\x81\x05world");
        // f2 arrives first (buffered), then the upgrade, then f1.
        let out = run(&mut e, &[c.syn(), f2, up, f1]);
        assert_eq!(targets(&out), ["/ws"]);
        assert_eq!(e.stats().upgraded_flows, 1);
        assert_eq!(e.stats().drops(DropReason::UpgradedFlow), 1);
        assert_eq!(e.stats().drops(DropReason::AfterClose), 0);
        assert_eq!(e.buffered_bytes(), 0);
        // Still tracked (the websocket goes on) until it idles out.
        assert_eq!(e.active_flows(), 1);
        let mut out = Vec::new();
        e.on_timer(1_000 + e.config().closed_linger_us + 10, &mut out);
        assert_eq!(e.active_flows(), 1);
    }

    #[test]
    fn jumbo_segment_of_a_9001_byte_mtu_is_handled_whole() {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let head = b"PUT /j HTTP/1.1\r\nContent-Length: 8900\r\n\r\n";
        let mut payload = head.to_vec();
        payload.resize(head.len() + 8900, b'j');
        assert!(payload.len() <= 9001 - 40);
        let mut e = engine();
        let out = run(&mut e, &[c.syn(), c.send(&payload)]);
        assert_eq!(out[0].body.len(), 8900);
    }

    #[test]
    fn ipv6_and_ipv4_fragments_are_handled() {
        let mut c = Conn::new(1, "[fd00::1]:40000", "[fd00::2]:80", 1);
        let mut e = engine();
        let out = run(&mut e, &[c.syn(), c.send(b"GET /six HTTP/1.1\r\n\r\n")]);
        assert_eq!(targets(&out), ["/six"]);
    }

    #[test]
    fn per_direction_state_stays_small() {
        // The RSS target (64 MiB with 10,000 connections) and cache behaviour depend on it.
        assert!(std::mem::size_of::<crate::engine::flow::Entry<Direction>>() <= 240);
    }

    #[test]
    fn stats_merge_adds_every_counter() {
        let mut a = EngineStats {
            packets: 2,
            ..EngineStats::default()
        };
        a.count_drop(DropReason::NonTcp);
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.packets, 4);
        assert_eq!(b.drops(DropReason::NonTcp), 2);
        assert_eq!(b.total_drops(), 2);
        let labels: std::collections::HashSet<&str> =
            DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }

    /// Builds the client datagrams of one connection carrying `reqs`, cut at `cuts`.
    fn conn_datagrams(
        c: &mut Conn,
        reqs: &[GenRequest],
        cuts: &[prop::sample::Index],
    ) -> Vec<Vec<u8>> {
        let wire: Vec<u8> = reqs.iter().flat_map(|r| r.wire()).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len())).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        points.dedup();
        let mut d = vec![c.syn()];
        for w in points.windows(2) {
            d.push(c.send(&wire[w[0]..w[1]]));
        }
        d.push(c.fin());
        d
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Any segmentation, reordering and duplication of a set of request streams yields
        /// the same requests (per connection, in order), with no duplicate and no drop.
        #[test]
        fn any_segmentation_reordering_and_duplication_yields_the_same_requests(
            streams in proptest::collection::vec(
                (proptest::collection::vec(gen_request(), 1..4),
                 proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
                 any::<u32>()),
                1..4),
            swaps in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..40),
            dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut syns = Vec::new();
            let mut rest = Vec::new();
            let mut conns = Vec::new();
            for (i, (reqs, cuts, isn)) in streams.iter().enumerate() {
                let mut c = Conn::new(7, &format!("10.1.0.{}:5000", i + 1), "10.2.0.1:80", *isn);
                let mut d = conn_datagrams(&mut c, reqs, cuts);
                syns.push(d.remove(0));
                rest.extend(d);
                conns.push(c);
            }
            for d in &dups {
                let x = rest[d.index(rest.len())].clone();
                rest.push(x);
            }
            for (a, b) in &swaps {
                let (a, b) = (a.index(rest.len()), b.index(rest.len()));
                rest.swap(a, b);
            }
            let mut e = engine();
            let mut out = run(&mut e, &syns);
            out.extend(run(&mut e, &rest));
            e.finish(&mut out);
            for (c, (reqs, _, _)) in conns.iter().zip(&streams) {
                let got: Vec<&HttpRequest> = out.iter().filter(|r| r.client == c.client).collect();
                prop_assert_eq!(got.len(), reqs.len());
                for (g, r) in reqs.iter().zip(got) {
                    prop_assert!(g.matches(r), "{:?} vs {:?}", g, r);
                }
            }
            prop_assert_eq!(out.len(), streams.iter().map(|s| s.0.len()).sum::<usize>());
            let s = e.stats();
            for reason in DropReason::ALL {
                if reason != DropReason::DuplicateSegment {
                    prop_assert_eq!(s.drops(reason), 0, "{}", reason.as_str());
                }
            }
            prop_assert_eq!(s.gaps, 0);
            prop_assert_eq!(e.buffered_bytes(), 0);
        }

        /// Under pressure from every cap at once (tiny flow table, out-of-order caps and memory
        /// budget), with loss, truncation, duplication, reordering and resets: nothing panics,
        /// every buffer is returned, and every request emitted is one that was sent (body
        /// possibly cut and flagged), at most as many times as it was sent — unless a direction
        /// was evicted: a duplicate arriving after its state was forgotten is parsed afresh.
        #[test]
        fn under_every_cap_nothing_foreign_or_duplicated_is_emitted(
            streams in proptest::collection::vec(
                (proptest::collection::vec(gen_request(), 1..4),
                 proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
                 any::<u32>()),
                1..5),
            lost in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            cut in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..60), 0..4),
            dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            swaps in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..20),
            rst in proptest::option::of(any::<prop::sample::Index>()),
            max_flows in 2usize..6,
        ) {
            let mut all = Vec::new();
            let mut conns = Vec::new();
            for (i, (reqs, cuts, isn)) in streams.iter().enumerate() {
                let mut c = Conn::new(7, &format!("10.1.0.{}:5000", i + 1), "10.2.0.1:80", *isn);
                all.extend(conn_datagrams(&mut c, reqs, cuts));
                conns.push(c);
            }
            let mut lost: Vec<usize> = lost.iter().map(|i| i.index(all.len())).collect();
            lost.sort_unstable();
            lost.dedup();
            for i in lost.into_iter().rev() {
                if all.len() > 1 {
                    all.remove(i);
                }
            }
            for (i, keep) in &cut {
                let n = all.len();
                let d = &mut all[i.index(n)];
                let keep = (8 + 14 + 20 + 20 + keep).min(d.len());
                d.truncate(keep);
            }
            for d in &dups {
                let x = all[d.index(all.len())].clone();
                all.push(x);
            }
            for (a, b) in &swaps {
                let (a, b) = (a.index(all.len()), b.index(all.len()));
                all.swap(a, b);
            }
            if let Some(r) = rst {
                let c = &conns[r.index(conns.len())];
                let at = r.index(all.len());
                all.insert(at, c.rst());
            }
            let mut e = Engine::new(EngineConfig {
                max_flows,
                max_ooo_bytes_per_flow: 200,
                max_ooo_segments_per_flow: 3,
                memory_budget_bytes: 1500,
                gap_skip_bytes: 150,
                max_header_bytes: 400,
                max_body_bytes: 100,
                ..EngineConfig::default()
            });
            let mut out = run(&mut e, &all);
            // Forgotten state (an open or a closed direction evicted at the cap) lets a late
            // duplicate be parsed afresh.
            let evicted = e.stats().flows_evicted + e.stats().flows_expired > 0;
            e.on_timer(10_000_000, &mut out);
            e.finish(&mut out);
            prop_assert_eq!(e.buffered_bytes(), 0);
            prop_assert_eq!(e.active_flows(), 0);
            let mut sent: Vec<(SocketAddr, &GenRequest, bool)> = Vec::new();
            for (c, (reqs, _, _)) in conns.iter().zip(&streams) {
                sent.extend(reqs.iter().map(|g| (c.client, g, false)));
            }
            for r in &out {
                let found = sent.iter_mut().find(|(client, g, used)| {
                    (!*used || evicted) && *client == r.client && {
                        let body_ok = if r.body_truncated {
                            g.body.starts_with(&r.body) && r.body.len() < g.body.len()
                        } else {
                            r.body == g.body
                        };
                        let mut whole = r.clone();
                        whole.body = g.body.clone();
                        body_ok && g.matches(&whole)
                    }
                });
                prop_assert!(found.is_some(), "foreign or duplicated request {:?}", r);
                if let Some(f) = found {
                    f.2 = true;
                }
            }
        }

        /// Under loss (and reordering), every request whose bytes all arrived is emitted,
        /// and no request that lost a byte is.
        #[test]
        fn under_loss_exactly_the_fully_received_requests_are_emitted(
            reqs in proptest::collection::vec(gen_request(), 1..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
            lost in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            swaps in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..10),
            isn in any::<u32>(),
        ) {
            let wires: Vec<Vec<u8>> = reqs.iter().map(|r| r.wire()).collect();
            let wire = wires.concat();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len())).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            points.dedup();
            let ranges: Vec<(usize, usize)> = points.windows(2).map(|w| (w[0], w[1])).collect();
            let lost: std::collections::HashSet<usize> = lost.iter().map(|i| i.index(ranges.len())).collect();
            let mut c = Conn::new(1, "10.9.0.1:6000", "10.9.0.2:80", isn);
            let mut kept = Vec::new();
            for (i, (a, b)) in ranges.iter().enumerate() {
                let d = c.send(&wire[*a..*b]);
                if !lost.contains(&i) {
                    kept.push(d);
                }
            }
            kept.push(c.fin());
            for (a, b) in &swaps {
                let (a, b) = (a.index(kept.len()), b.index(kept.len()));
                kept.swap(a, b);
            }
            let mut e = engine();
            let mut out = run(&mut e, &[c.syn()]);
            out.extend(run(&mut e, &kept));
            e.finish(&mut out);
            let mut expected = Vec::new();
            let mut pos = 0;
            for (g, w) in reqs.iter().zip(&wires) {
                let (s, t) = (pos, pos + w.len());
                pos = t;
                let hit = ranges
                    .iter()
                    .enumerate()
                    .any(|(i, (a, b))| lost.contains(&i) && *a < t && *b > s);
                if !hit {
                    expected.push(g);
                }
            }
            prop_assert_eq!(out.len(), expected.len(), "{:?} wire={:?} ranges={:?} lost={:?}", targets(&out), String::from_utf8_lossy(&wire), ranges, lost);
            for (g, r) in expected.iter().zip(&out) {
                prop_assert!(g.matches(r), "{:?} vs {:?}", g, r);
            }
        }
    }
}
