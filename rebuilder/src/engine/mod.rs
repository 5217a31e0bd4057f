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
//! leaf. This module drives them and is imported by none of them.

pub mod config;
pub mod encap;
pub mod flow;
pub mod health_check;
pub mod http;
pub mod packet;
pub mod proxy;
pub mod ranges;
pub mod reassembly;
pub mod request;
pub mod stats;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tunnel_tests;

pub use config::EngineConfig;

use std::net::IpAddr;

use encap::Encap;
use encap::geneve::{GeneveError, GenevePacket, looks_like_geneve};
use encap::vxlan::{VxlanPacket, looks_like_vxlan};
use flow::{FlowKey, FlowTable, Lifecycle, Removed};
use http::{HttpLimits, Meta, Parser, ParserState};
use packet::{PacketError, Parsed, TcpSegment, Tunnel, parse_ethernet, parse_ip};
use reassembly::{Budget, Pushed, Segment, Sink, Stream, StreamLimits, StreamState};
use request::HttpRequest;
use stats::{DropReason, EngineStats};

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
    /// The IP source of the VXLAN datagram that created the direction (the mirror's source).
    mirror: Option<IpAddr>,
    stream: Stream,
    parser: Parser,
}

impl Direction {
    fn new(role: Role, mirror: Option<IpAddr>) -> Direction {
        Direction {
            role,
            mirror,
            stream: Stream::new(),
            parser: Parser::new(),
            in_holes: false,
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

    /// Whether this direction surely carries requests, so that its peer can be ignored:
    /// a request parsed from a stream seen from its SYN, or two requests. (One request found
    /// by resync in a stream joined mid-way could be text inside a response body; ignoring
    /// the real client direction on that evidence would lose all its requests.)
    fn is_surely_requests(&self) -> bool {
        let n = self.parser.emitted();
        n >= 2 || (n >= 1 && self.stream.saw_syn())
    }

    /// Frees the buffers without emitting or counting anything (its bytes are responses).
    fn release(&mut self, shared: &mut Shared, out: &mut Vec<HttpRequest>, key: FlowKey) {
        let mut scratch = EngineStats::default();
        let meta = self.meta(&key);
        let mut sink = ParserSink::new(
            &mut self.parser,
            &shared.http_limits,
            &mut shared.budget,
            &mut scratch,
            out,
            meta,
        );
        let before = sink.ctx.out.len();
        self.stream.close(&mut sink);
        // Whatever the parser found in response bytes is not a request.
        sink.ctx.out.truncate(before);
        self.stream = Stream::new();
        self.parser = Parser::new();
    }
}

/// State every direction's parser shares: the HTTP caps, the global memory budget and the
/// counters. Kept apart from the flow table so that a direction (borrowed from the table)
/// and these can be borrowed at the same time.
#[derive(Debug)]
struct Shared {
    http_limits: HttpLimits,
    budget: Budget,
    stats: EngineStats,
}

impl Shared {
    /// The sink through which the stream of a direction (`meta`) reaches its parser.
    fn sink<'a>(
        &'a mut self,
        parser: &'a mut Parser,
        out: &'a mut Vec<HttpRequest>,
        meta: Meta,
    ) -> ParserSink<'a> {
        ParserSink::new(
            parser,
            &self.http_limits,
            &mut self.budget,
            &mut self.stats,
            out,
            meta,
        )
    }
}

/// Feeds the reassembled stream of one direction into its parser.
struct ParserSink<'a> {
    parser: &'a mut Parser,
    ctx: http::Ctx<'a>,
    /// The direction is being evicted: its end counts a message in progress as
    /// `flow_evicted` instead of `message_incomplete`.
    evicting: bool,
}

impl<'a> ParserSink<'a> {
    fn new(
        parser: &'a mut Parser,
        limits: &'a HttpLimits,
        budget: &'a mut Budget,
        stats: &'a mut EngineStats,
        out: &'a mut Vec<HttpRequest>,
        meta: Meta,
    ) -> ParserSink<'a> {
        ParserSink {
            parser,
            ctx: http::Ctx {
                limits,
                budget,
                stats,
                out,
                meta,
            },
            evicting: false,
        }
    }

    fn evicting(mut self, evicting: bool) -> Self {
        self.evicting = evicting;
        self
    }
}

impl Sink for ParserSink<'_> {
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
    table: FlowTable<Direction>,
    shared: Shared,
    stream_limits: StreamLimits,
    holes: Vec<u32>,
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
        };
        let http_limits = HttpLimits {
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
            max_body_bytes: config.max_body_bytes,
            health_checks: config.health_checks.clone(),
            proxy_protocol_from: config.proxy_protocol_from.clone(),
        };
        Engine {
            table: FlowTable::new(config.max_flows),
            shared: Shared {
                http_limits,
                budget: Budget::new(config.memory_budget_bytes),
                stats: EngineStats::default(),
            },
            stream_limits,
            holes: Vec::new(),
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
        self.shared.stats.packets += 1;
        self.shared.stats.bytes += payload.len() as u64;
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
        self.shared.stats.packets += 1;
        self.shared.stats.bytes += payload.len() as u64;
        self.vxlan(ts_us, Carrier::DIRECT, payload, out);
    }

    /// Replay path: one captured link-layer frame: an outer Ethernet frame carrying
    /// IPv4/IPv6 -> UDP dst 4789 -> VXLAN or UDP dst 6081 -> GENEVE, or a plain (already
    /// decapsulated) Ethernet frame.
    pub fn on_captured_frame(&mut self, ts_us: u64, frame: &[u8], out: &mut Vec<HttpRequest>) {
        self.shared.stats.packets += 1;
        self.shared.stats.bytes += frame.len() as u64;
        match parse_ethernet(frame, true) {
            Ok(Parsed::Tunnel(t)) => self.tunnel(ts_us, t, out),
            Ok(Parsed::Tcp(seg)) => {
                if self.vni_allowed(0) {
                    self.segment(ts_us, Carrier::PLAIN, &seg, out);
                } else {
                    self.shared.stats.count_drop(DropReason::VniNotAllowed);
                }
            }
            Err(e) => self.packet_error(e),
        }
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
        let Ok(v) = VxlanPacket::parse(payload) else {
            self.shared.stats.count_drop(if misdirected(payload) {
                DropReason::GeneveOnVxlanPort
            } else {
                DropReason::VxlanMalformed
            });
            return;
        };
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
            dir.release(&mut self.shared, out, key);
        }
        if dir.role == Role::Responses {
            self.shared.stats.response_packets += 1;
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
            let meta = dir.meta(&key);
            let mut sink = self.shared.sink(&mut dir.parser, out, meta);
            dir.stream.close(&mut sink);
            *dir = Direction::new(Role::Unknown, carrier.mirror);
            self.table.set_lifecycle(idx, Lifecycle::Open, ts_us);
        }
        let entry = self.table.entry_mut(idx);
        let dir = &mut entry.value;
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
        let meta = dir.meta(&key);
        let mut sink = self.shared.sink(&mut dir.parser, out, meta);
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
        mirror: Option<IpAddr>,
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
        let (idx, evicted) = self.table.insert(key, Direction::new(role, mirror), ts_us);
        self.shared.stats.flows_created += 1;
        if let Some(removed) = evicted {
            let was_open = removed.was_open;
            if was_open {
                self.shared.stats.flows_evicted += 1;
            } else {
                self.shared.stats.flows_expired += 1;
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
        dir.release(&mut self.shared, out, key);
    }

    /// Closes one direction's stream (RST or end): delivers what is buffered, ends it.
    fn close_direction(&mut self, idx: u32, ts_us: u64, out: &mut Vec<HttpRequest>) {
        let entry = self.table.entry_mut(idx);
        let key = entry.key;
        let dir = &mut entry.value;
        let meta = dir.meta(&key);
        let mut sink = self.shared.sink(&mut dir.parser, out, meta);
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
        let meta = value.meta(&key);
        let mut sink = self
            .shared
            .sink(&mut value.parser, out, meta)
            .evicting(evicting);
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
            self.shared.stats.flows_expired += 1;
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
            let meta = dir.meta(&key);
            let mut sink = self.shared.sink(&mut dir.parser, out, meta);
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
        &self.shared.stats
    }

    /// Flow directions currently tracked.
    pub fn active_flows(&self) -> usize {
        self.table.len()
    }

    /// Bytes buffered now (out-of-order segments, partial heads, bodies in progress).
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
}

/// Why a direction's bytes are ignored, if they are (opaque or upgraded).
fn ignored_state(parser: &Parser) -> Option<DropReason> {
    match parser.state() {
        ParserState::Opaque => Some(DropReason::OpaqueFlow),
        ParserState::Upgraded => Some(DropReason::UpgradedFlow),
        _ => None,
    }
}
