//! The engine: VXLAN → packet → flow → reassembly → HTTP, driven one packet at a time.

use crate::request::HttpRequest;

/// Every cap of the engine. All fields are public; [`Default`] gives the documented values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Hard cap on flow directions tracked at once; beyond it the least recently used
    /// (closed ones first) is evicted and counted. Default 100,000.
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
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }
}

/// The engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    stats: EngineStats,
}

impl Engine {
    /// A new engine with these caps.
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            stats: EngineStats::default(),
        }
    }

    /// Live path: the payload of one UDP datagram received on port 4789 (VXLAN header first).
    pub fn on_vxlan_payload(&mut self, ts_us: u64, payload: &[u8], out: &mut Vec<HttpRequest>) {
        let _ = (ts_us, out, &self.config);
        self.stats.packets += 1;
        self.stats.bytes += payload.len() as u64;
        if payload.len() < 8 || payload[0] & 0x08 == 0 {
            self.stats.count_drop(DropReason::VxlanMalformed);
        }
    }

    /// Replay path: one captured link-layer frame: an outer Ethernet frame carrying
    /// IPv4/IPv6 -> UDP dst 4789 -> VXLAN, or a plain (already decapsulated) Ethernet frame.
    pub fn on_captured_frame(&mut self, ts_us: u64, frame: &[u8], out: &mut Vec<HttpRequest>) {
        let _ = (ts_us, out);
        self.stats.packets += 1;
        self.stats.bytes += frame.len() as u64;
    }

    /// Idle timeouts, gap timeouts; call every ~100 ms with the current time.
    pub fn on_timer(&mut self, now_us: u64, out: &mut Vec<HttpRequest>) {
        let _ = (now_us, out);
    }

    /// Flush everything at end of input: emits what can still be emitted.
    pub fn finish(&mut self, out: &mut Vec<HttpRequest>) {
        let _ = out;
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Flow directions currently tracked.
    pub fn active_flows(&self) -> usize {
        0
    }
}
