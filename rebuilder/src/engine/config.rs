//! [`EngineConfig`]: every cap of the engine, with the documented defaults.

use super::health_check::HealthCheckRule;

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
    /// How long a complete request waits for its response (capture clock) before it is
    /// emitted without it (`timeout`). Default 10 s.
    pub response_timeout_us: u64,
    /// How long a complete request waits while the server's direction of its connection has
    /// not been seen at all (with an NLB the two directions may go to different rebuilders);
    /// after it, the connection's requests go out at once (`server_not_seen`). Default 1 s.
    pub server_wait_us: u64,
    /// Requests waiting for their response per connection (pipelining depth); beyond it the
    /// oldest goes out without its response (`over_budget`). Default 64.
    pub max_pending_requests: usize,
    /// Maximum size of a response head (status line + header fields). Default 64 KiB.
    pub max_response_header_bytes: usize,
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
            response_timeout_us: 10_000_000,
            server_wait_us: 1_000_000,
            max_pending_requests: 64,
            max_response_header_bytes: 64 * 1024,
            health_checks: HealthCheckRule::default(),
        }
    }
}
