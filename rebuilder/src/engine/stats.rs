//! The engine's counters: [`DropReason`] (why something was not emitted; a closed set that
//! doubles as the `reason` label of `rebuilder_decode_drops_total`), [`ResponseMissing`] (why a
//! request went out without its response) and [`EngineStats`].
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
        /// Packet: payload outside the receiver's advertised window (tracked from the other
        /// direction's ACK and window, scaled as both SYNs agreed): ignored, never skipped to.
        OutOfWindow => "out_of_window",
        /// Packet: a SYN+ACK that contradicts its direction's own history (it sent a SYN, or
        /// data, or its peer is the server): ignored for roles.
        InconsistentSynAck => "inconsistent_syn_ack",
    }
}

label_enum! {
    /// Why a request is emitted without its response (`HttpRequest::response_missing`).
    /// Closed set: the `reason` label of `rebuilder_responses_missing_total`.
    pub enum ResponseMissing {
        /// Bytes of the server's stream were lost where the response was (or, after lost
        /// bytes, its position could not be told for sure).
        Gap => "gap",
        /// No complete response within the response wait (`response_timeout_us`).
        Timeout => "timeout",
        /// The connection's state was evicted at the flow cap while it waited.
        FlowEvicted => "flow_evicted",
        /// The server's stream ended (FIN, RST) or the connection expired first.
        ConnectionClosed => "connection_closed",
        /// The server→client direction of the connection was never seen by this engine (with
        /// an NLB, the two directions of a flow may go to different rebuilders).
        ServerNotSeen => "server_not_seen",
        /// The server's bytes at that position are not an HTTP/1.x response.
        Malformed => "malformed",
        /// The memory budget (or the per-connection cap of waiting requests) was reached.
        OverBudget => "over_budget",
        /// The input ended (end of a capture, shutdown) while it waited.
        InputEnded => "input_ended",
        /// Its response arrived before the request could be placed (the mirror delivered the
        /// two directions out of order) and its position could not be proven afterwards.
        Reordered => "reordered",
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
    /// Final responses parsed (interim 1xx other than 101 not included).
    pub responses: u64,
    /// Requests emitted with their response.
    pub responses_paired: u64,
    /// Final responses that answer no request the engine holds (a response without a request,
    /// more responses than requests, a response whose request was lost, after lost bytes):
    /// counted, never paired.
    pub responses_unmatched: u64,
    /// Interim responses (1xx other than 101) skipped.
    pub responses_interim: u64,
    /// Responses whose body exceeded `max_body_bytes` and was cut.
    pub response_bodies_truncated: u64,
    /// Retransmitted bytes that differ from the bytes already seen at the same sequence
    /// numbers (first data wins; suricata's "overlap with different data").
    pub overlap_different_data: u64,
    drops: [u64; DropReason::ALL.len()],
    missing: [u64; ResponseMissing::ALL.len()],
}

impl EngineStats {
    /// Count of drops for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Requests emitted without their response because of `reason`.
    pub fn responses_missing(&self, reason: ResponseMissing) -> u64 {
        self.missing[reason as usize]
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
        self.responses += other.responses;
        self.responses_paired += other.responses_paired;
        self.responses_unmatched += other.responses_unmatched;
        self.responses_interim += other.responses_interim;
        self.response_bodies_truncated += other.response_bodies_truncated;
        self.overlap_different_data += other.overlap_different_data;
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
        for (a, b) in self.missing.iter_mut().zip(other.missing.iter()) {
            *a += b;
        }
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    pub(crate) fn count_missing(&mut self, reason: ResponseMissing) {
        self.missing[reason as usize] += 1;
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
        a.count_missing(ResponseMissing::Gap);
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.packets, 4);
        assert_eq!(b.drops(DropReason::NonTcp), 2);
        assert_eq!(b.responses_missing(ResponseMissing::Gap), 2);
        assert_eq!(b.total_drops(), 2);
        let labels: std::collections::HashSet<&str> =
            DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }
}
