//! The engine's counters: [`DropReason`] (why something was not emitted; a closed set that
//! doubles as the `reason` label of `rebuilder_decode_drops_total`), [`ResponseMissing`] (why a
//! request went out without its response) and [`EngineStats`].
//!
//! A leaf of the engine: every stage counts into it, and the daemon's telemetry reads the
//! workers' copies; it imports only its sibling leaf [`crate::engine::source`].

use crate::engine::source::{SourceKey, SourceTable};

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
        /// Request: more than `max_headers` header fields. No longer counted: such a request
        /// is kept with its first fields and carries the anomaly of the same name (the label
        /// stays for the stability of the series).
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
        /// Stream: a valid PROXY protocol header from a peer outside
        /// `EngineConfig::proxy_protocol_from`: stripped, not believed (the requests name the
        /// TCP peer as client).
        ProxyHeaderUntrusted => "proxy_header_untrusted",
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
        /// Packet: payload outside the receiver's advertised window (tracked from the other
        /// direction's ACK and window, scaled as both SYNs agreed): ignored, never skipped to.
        OutOfWindow => "out_of_window",
        /// Packet: a SYN+ACK that contradicts its direction's own history (it sent a SYN, or
        /// data, or its peer is the server): ignored for roles.
        InconsistentSynAck => "inconsistent_syn_ack",
        /// Request: parsed from a direction that later turned out to carry responses (joined
        /// mid-stream, a response body that reads as a request), still waiting for its
        /// response when the client's direction was recognised: counted in `requests` when
        /// parsed (counters only grow), dropped here, never emitted.
        NotARequest => "not_a_request",
    }
}

label_enum! {
    /// Something an emitted request needed the parser's leniency for, or a framing on which
    /// origin servers disagree. Closed set: the `kind` label of
    /// `rebuilder_request_anomalies_total`, and the words of the forwarded
    /// `x-rebuilder-anomalies` header. Which origins accept each is in `docs/evasion.md`.
    pub enum Anomaly {
        /// More than one space between request-line parts (nginx, Node accept; Apache, Go 400).
        MultipleSpaces => "multiple_spaces",
        /// Spaces after the version (nginx accepts).
        TrailingSpace => "trailing_space",
        /// A version other than HTTP/1.0 and HTTP/1.1: 1.2–1.9 (nginx, Apache, Go), two minor
        /// digits (nginx), 2.0 (Apache, Node), 3.0–9.9 (Apache), 0.9 (Node).
        Version => "version",
        /// An HTTP/0.9 simple request `GET target` without version or header (nginx, Apache).
        Http09 => "http09",
        /// Target bytes that are not UTF-8 (raw Latin-1: nginx, Apache, Go accept); they are
        /// percent-encoded in `HttpRequest::target`.
        TargetObsText => "target_obs_text",
        /// A header name with bytes outside the token set (`@`, `(`, non-ASCII): nginx ignores
        /// that field, Apache, Node and Go answer 400. The field is kept.
        InvalidHeaderName => "invalid_header_name",
        /// obs-fold: a header line continued on the next line (Apache and Go join with one
        /// space; nginx and Node answer 400). The value holds the joined line.
        ObsFold => "obs_fold",
        /// Control bytes or DEL in a header value (nginx forwards them).
        CtlInValue => "ctl_in_value",
        /// A header line ending in `CR CR LF` (nginx accepts).
        CrLineEnd => "cr_line_end",
        /// More header fields than `max_headers` (or trailer fields than the memory budget
        /// holds): the request is kept with the first ones (Node serves up to 2,000; nginx
        /// stops at 1,000, Go at 500, Apache at 100).
        TooManyHeaders => "too_many_headers",
        /// Both Transfer-Encoding and Content-Length (Apache, Go: chunked wins; nginx, Node 400).
        TeAndCl => "te_and_cl",
        /// Transfer-Encoding with several codings or fields ending in chunked (Apache, Node
        /// accept; nginx, Go 501), or an empty one next to Content-Length (Node uses the length).
        TeCodings => "te_codings",
        /// Transfer-Encoding chunked on HTTP/1.0 (Apache, Node de-chunk; Go ignores it and reads
        /// Content-Length; nginx 400).
        TeHttp10 => "te_http10",
        /// Content-Length repeated with equal values (Go accepts).
        DuplicateContentLength => "duplicate_content_length",
        /// A Transfer-Encoding whose last coding is not chunked: the head is emitted without a
        /// body (Node hands the head to the application, then answers 400).
        UnknownCoding => "unknown_coding",
        /// The chunked body broke after the head (bad chunk line or chunk end): the head is
        /// emitted with the body read so far (Node and Go hand the head to the application),
        /// and the bytes from the bad line on are parsed as the next request.
        BodyError => "body_error",
        /// Found in bytes that one origin reads as a body and another as requests (Go reads
        /// Content-Length on HTTP/1.0 with Transfer-Encoding): the other reading.
        AltFraming => "alt_framing",
        /// After a request that closed the connection (`Connection: close`, HTTP/1.0 without
        /// keep-alive): origins ignore these bytes.
        AfterClose => "after_close",
        /// Trailer lines that are not `name: value` (nginx ignores them, Go keeps them).
        BadTrailer => "bad_trailer",
        /// After an Upgrade or CONNECT request whose answer was not seen (the server's
        /// direction not mirrored here, the answer lost or given up, or more client bytes than
        /// `max_header_bytes` before it): parsed as HTTP, as an origin that declined would.
        UpgradeUnanswered => "upgrade_unanswered",
        /// The stream ended before the body did, after the server had answered the request
        /// (an answer before the body: 413, 401, 405; see `pairing`): the head is emitted
        /// with the body read so far and its answer, not lost.
        BodyIncomplete => "body_incomplete",
    }
}

/// A set of [`Anomaly`] values (a bit per value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Anomalies(u32);

impl Anomalies {
    /// No anomaly.
    pub const NONE: Anomalies = Anomalies(0);

    /// Adds `a`.
    pub fn insert(&mut self, a: Anomaly) {
        self.0 |= 1 << a as u32;
    }

    /// `self` with `a` added.
    pub fn with(mut self, a: Anomaly) -> Anomalies {
        self.insert(a);
        self
    }

    /// Whether `a` is in the set.
    pub fn contains(self, a: Anomaly) -> bool {
        self.0 & (1 << a as u32) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Adds every value of `other`.
    pub fn extend(&mut self, other: Anomalies) {
        self.0 |= other.0;
    }

    /// The values in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Anomaly> {
        Anomaly::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl std::fmt::Display for Anomalies {
    /// The labels, comma separated (`multiple_spaces,version`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, a) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(a.as_str())?;
        }
        Ok(())
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
    /// Idle flow directions holding buffered bytes, evicted to give the budget back under
    /// memory pressure (`EngineConfig::reclaim_idle_us`).
    pub flows_reclaimed: u64,
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
    /// Responses whose head was cut at `max_response_header_bytes` or `max_headers` and read
    /// past the cap (`HttpResponse::head_truncated`).
    pub response_heads_truncated: u64,
    /// Retransmitted bytes that differ from the bytes already seen at the same sequence
    /// numbers (first data wins; suricata's "overlap with different data").
    pub overlap_different_data: u64,
    /// TCP segments whose payload was cut short by the mirror session's PacketLength.
    pub truncated_packets: u64,
    /// The same counters by source (`crate::engine::source`).
    pub sources: SourceTable,
    drops: [u64; DropReason::ALL.len()],
    anomalies: [u64; Anomaly::ALL.len()],
    missing: [u64; ResponseMissing::ALL.len()],
}

impl EngineStats {
    /// Zeroed counters, with at most `max` source keys counted apart.
    pub fn with_source_keys(max: usize) -> EngineStats {
        EngineStats {
            sources: SourceTable::new(max),
            ..EngineStats::default()
        }
    }

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

    /// Emitted requests that carried `anomaly`.
    pub fn anomalies(&self, anomaly: Anomaly) -> u64 {
        self.anomalies[anomaly as usize]
    }

    /// Adds every counter of `other` to `self` (one engine per worker, summed for metrics).
    pub fn merge(&mut self, other: &EngineStats) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.requests += other.requests;
        self.bodies_truncated += other.bodies_truncated;
        self.flows_created += other.flows_created;
        self.flows_evicted += other.flows_evicted;
        self.flows_reclaimed += other.flows_reclaimed;
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
        self.response_heads_truncated += other.response_heads_truncated;
        self.overlap_different_data += other.overlap_different_data;
        self.truncated_packets += other.truncated_packets;
        self.sources.merge(&other.sources);
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
        for (a, b) in self.anomalies.iter_mut().zip(other.anomalies.iter()) {
            *a += b;
        }
        for (a, b) in self.missing.iter_mut().zip(other.missing.iter()) {
            *a += b;
        }
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
        self.sources.row().drops[reason as usize] += 1;
    }

    /// A hole of `len` bytes skipped.
    pub(crate) fn count_gap(&mut self, len: u64) {
        self.gaps += 1;
        self.gap_bytes += len;
        self.sources.row().gaps += 1;
    }

    /// A request parsed.
    pub(crate) fn count_request(&mut self) {
        self.requests += 1;
        self.sources.row().requests += 1;
    }

    /// A final response parsed.
    pub(crate) fn count_response(&mut self) {
        self.responses += 1;
        self.sources.row().responses += 1;
    }

    /// A request emitted with its response.
    pub(crate) fn count_paired(&mut self) {
        self.responses_paired += 1;
        self.sources.row().paired += 1;
    }

    /// A segment cut short by PacketLength.
    pub(crate) fn count_truncated(&mut self) {
        self.truncated_packets += 1;
        self.sources.row().truncated_packets += 1;
    }

    /// A packet of `len` bytes from `key`.
    pub(crate) fn count_packet(&mut self, key: SourceKey, len: u64) {
        self.packets += 1;
        self.bytes += len;
        self.sources.packet(key, len);
    }

    /// Counts the anomalies of one emitted request.
    pub(crate) fn count_anomalies(&mut self, set: Anomalies) {
        for a in set.iter() {
            self.anomalies[a as usize] += 1;
        }
    }

    pub(crate) fn count_missing(&mut self, reason: ResponseMissing) {
        self.missing[reason as usize] += 1;
        self.sources.row().unpaired += 1;
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
        a.count_anomalies(Anomalies::NONE.with(Anomaly::Version));
        let mut c = EngineStats::default();
        c.merge(&a);
        c.merge(&a);
        assert_eq!(c.anomalies(Anomaly::Version), 2);
    }

    #[test]
    fn anomaly_sets_hold_every_value_and_print_their_labels() {
        assert!(Anomaly::ALL.len() <= 32, "one bit each in a u32");
        let mut s = Anomalies::NONE;
        assert!(s.is_empty());
        s.insert(Anomaly::AfterClose);
        s.insert(Anomaly::MultipleSpaces);
        assert!(s.contains(Anomaly::AfterClose) && !s.contains(Anomaly::Version));
        assert_eq!(s.to_string(), "multiple_spaces,after_close");
        for a in Anomaly::ALL {
            assert!(Anomalies::NONE.with(a).contains(a));
        }
    }
}
