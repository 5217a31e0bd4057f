//! The engine's counters: [`DropReason`] (why something was not emitted; a closed set that
//! doubles as the `reason` label of `rebuilder_decode_drops_total`) and [`EngineStats`].
//!
//! A leaf of the engine: every stage counts into it, and the daemon's telemetry reads the
//! workers' copies; it imports nothing.

label_enum! {
    /// Why something was not emitted. Closed set: usable as a metric label.
    ///
    /// Packet-level reasons count packets; message-level reasons (`message_*`,
    /// `head_too_large`, `too_many_headers`, `bad_request`, `flow_evicted`) count requests lost.
    pub enum DropReason {
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
        /// Datagram: its source is outside `--allow-from` (dropped before parsing).
        SourceNotAllowed => "source_not_allowed",
        /// Packet: GENEVE header shorter than 8 bytes, version not 0, or an AWS option
        /// (class 0x0108, types 1-3) with another length than documented.
        GeneveMalformed => "geneve_malformed",
        /// Packet: a GENEVE options area, or one option, longer than what is left of the packet.
        GeneveOptionsTruncated => "geneve_options_truncated",
        /// Packet: a GENEVE option with the critical bit whose class/type is unknown (RFC 8926
        /// §3.5: MUST drop).
        GeneveCriticalOption => "geneve_critical_option",
        /// Packet: a GENEVE control message (O bit), never processed as data.
        GeneveControl => "geneve_control",
        /// Packet: GENEVE whose protocol type is not IPv4 or IPv6.
        GeneveNotIp => "geneve_not_ip",
        /// Packet: GENEVE whose inner IP packet is not a UDP/4789 VXLAN datagram (not mirror
        /// traffic: e.g. a Gateway Load Balancer used inline).
        GeneveNotVxlan => "geneve_not_vxlan",
        /// Packet: a GENEVE packet received on a VXLAN port.
        GeneveOnVxlanPort => "geneve_on_vxlan_port",
        /// Packet: a VXLAN datagram received on a GENEVE port.
        VxlanOnGenevePort => "vxlan_on_geneve_port",
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
