//! [`EngineConfig`]: every cap of the engine, with the documented defaults.

use super::health_check::HealthCheckRule;
use super::ranges::AddrRanges;

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
    /// Maximum size of a request head (request line + header fields); a larger head is
    /// dropped (`head_too_large`). Default 1 MiB: Go serves heads up to 1 MiB, Apache up to
    /// 100 fields of 8 KiB (nginx 4 × 8 KiB, Node 16 KiB). Partial heads are charged to the
    /// memory budget.
    pub max_header_bytes: usize,
    /// Header fields kept per request; the request is still emitted with the first ones when
    /// it has more (flagged `too_many_headers`). Default 1,000: nginx's limit (Go stops at
    /// 500, Apache at 100; Node serves 2,000).
    pub max_headers: usize,
    /// Maximum body kept per request; longer bodies are cut and flagged. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Whether request bodies are kept (up to `max_body_bytes`). When not, requests keep
    /// everything else, their body measured as if kept (`HttpRequest::body_len`,
    /// `body_truncated`), and their bodies are neither copied nor charged: the outputs that
    /// never read them (`rebuilder replay --format summary`, or jsonl without `--with-body` /
    /// `--decode-bodies` / `--dedup`) save the copy and the memory of every request waiting
    /// for its response. Default `true`.
    pub keep_request_bodies: bool,
    /// Whether a request waiting for its response keeps its method, target and fields. When
    /// not, its target and fields are not copied out of the stream at all (the fields are
    /// still read for framing and anomalies), unless a health-check rule reads them: then
    /// they are freed as the request starts to wait. The method, which pairing reads (HEAD,
    /// CONNECT), is freed then too. A waiting request holds only its box: the output that
    /// never shows a request (`rebuilder replay --format summary` without `--dedup`) saves
    /// the copies and the memory of every request waiting for its response. Default `true`.
    pub keep_request_heads: bool,
    /// Whether response bodies are kept (up to `max_body_bytes`, as request bodies). When
    /// not, responses keep everything else (`body_len`, `body_truncated` as if kept) and
    /// their bodies are not copied: the outputs that never read them (`rebuilder replay`
    /// without `--with-body` / `--decode-bodies`, the `http-replay` sink) save the copy and
    /// the memory. Default `true`.
    pub keep_response_bodies: bool,
    /// Whether responses keep their reason phrase and header (and trailer) fields. When not,
    /// a response still has everything pairing and the counters read (status, version, time,
    /// body length and framing) and its head is parsed exactly as when kept, but its fields are
    /// not copied out of the stream: the outputs that never show them (`rebuilder replay
    /// --format summary` or `http`, the `http-replay` sink) save the three buffers of the list.
    /// Default `true`.
    pub keep_response_heads: bool,
    /// Only these VNIs are processed (`None` = all).
    pub vni_allow: Option<Vec<u32>>,
    /// Only tunnel datagrams whose source is in these ranges are processed; the others are
    /// dropped before parsing (`source_not_allowed`). The source is the datagram's: the
    /// mirrored ENI (NLB UDP target groups preserve the client IP), a Gateway Load Balancer
    /// node (GWLB mode), the outer IP source of a captured datagram. Default: `None`, every
    /// sender.
    pub allow_from: Option<AddrRanges>,
    /// How long a complete request waits for its response to begin (capture clock) before it
    /// is emitted without it (`timeout`), from its end or from the end of the answer before it
    /// on its connection, whichever is later; a response whose head came is waited for until it
    /// completes, and one whose head began in time, for its head to end up to this long after
    /// the head's first byte. Default 10 s.
    pub response_timeout_us: u64,
    /// How long a complete request waits while the server's direction of its connection has
    /// not been seen at all (with an NLB the two directions may go to different rebuilders);
    /// after it, the connection's requests go out at once (`server_not_seen`). Default 1 s.
    pub server_wait_us: u64,
    /// Requests waiting for their response per connection (pipelining depth); beyond it the
    /// oldest goes out without its response (`over_budget`). Default 64.
    pub max_pending_requests: usize,
    /// Response head (status line + header fields) kept. A longer one keeps its complete
    /// lines within the cap, is read past it for its framing fields, and is flagged
    /// `head_truncated` (as is one with more than `max_headers` fields). Default 64 KiB.
    pub max_response_header_bytes: usize,
    /// Requests dropped as load-balancer health checks (counted as `health_check`).
    /// Default: none ([`HealthCheckRule::OFF`]; a rule needs paths and balancer ranges).
    pub health_checks: HealthCheckRule,
    /// Peers (TCP senders) whose PROXY protocol headers are believed. Default: none (a header
    /// from any other peer is stripped and counted as `proxy_header_untrusted`).
    pub proxy_protocol_from: AddrRanges,
    /// Under memory pressure (the budget more than 7/8 used), flow directions that hold
    /// buffered bytes and have had no packet for this long (nor their peer) are evicted, the
    /// least recently active first, until the budget is at most 3/4 used (counted in
    /// `flows_reclaimed`; what they held is lost or goes out as at any eviction). An attacker
    /// who holds unfinished requests then cannot keep the budget from the traffic that
    /// moves. Default 100 ms: longer than nearly any client's round trip, so a flow in the
    /// middle of a transfer has a packet within it; shorter than the minimum TCP
    /// retransmission timeout (200 ms) on purpose: under pressure, a flow stalled on a lost
    /// segment is not worth more than a newcomer. The least recently active go first, so the
    /// floor only keeps a pass from evicting a flow between two of its packets (the flood
    /// bench with 250 ms, 100 ms, 50 ms and off: docs/reliability.md). A value past
    /// `idle_timeout_us` turns it off: a budget full of held bytes then refuses newcomers
    /// (`over_budget`).
    pub reclaim_idle_us: u64,
    /// Distinct source keys (GWLB endpoint, VXLAN sender, VNI) counted apart
    /// (`crate::engine::source`); further keys share one overflow row. Default 4,096.
    pub max_source_keys: usize,
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
            max_header_bytes: 1024 * 1024,
            max_headers: 1000,
            max_body_bytes: 1024 * 1024,
            keep_request_bodies: true,
            keep_request_heads: true,
            keep_response_bodies: true,
            keep_response_heads: true,
            vni_allow: None,
            allow_from: None,
            response_timeout_us: 10_000_000,
            server_wait_us: 1_000_000,
            max_pending_requests: 64,
            max_response_header_bytes: 64 * 1024,
            health_checks: HealthCheckRule::OFF,
            proxy_protocol_from: AddrRanges::NONE,
            max_source_keys: crate::engine::source::DEFAULT_MAX_SOURCE_KEYS,
            reclaim_idle_us: 100_000,
        }
    }
}
