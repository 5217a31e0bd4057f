//! `rebuilder run` configuration: every flag has a `REBUILDER_*` environment variable and a
//! default shown by `--help`. Engine caps are mapped one to one onto [`EngineConfig`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::engine::EngineConfig;
use crate::engine::ranges::AddrRanges;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human readable lines.
    Text,
    /// One JSON object per line (CloudWatch Logs).
    Json,
}

/// Where extracted transactions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkKind {
    /// Each request re-sent to the upstream as an HTTP request (an analyzer such as Wallarm).
    HttpReplay,
    /// Batches of JSON lines (request + response, as `rebuilder replay --format jsonl`)
    /// POSTed to the upstream (log pipelines, API-security ingestion endpoints).
    Ndjson,
}

/// Sections of `rebuilder run --help`.
const INGEST: &str = "Ingest";
const ENGINE_CAPS: &str = "Engine caps (per worker)";
const FORWARDING: &str = "Forwarding";
const OPERATIONS: &str = "Operations";
const SOURCES: &str = "Sources";

/// Arguments of `rebuilder run`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = INGEST)]
pub struct RunArgs {
    /// UDP addresses to receive VXLAN on (comma separated). Every worker binds each of them with
    /// SO_REUSEPORT. An IPv6 address that cannot be bound (IPv6 disabled) is skipped with a
    /// warning as long as another address is bound.
    #[arg(
        long,
        env = "REBUILDER_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:4789,[::]:4789"
    )]
    pub listen: Vec<SocketAddr>,

    /// UDP addresses to receive GENEVE on (comma separated; none by default), as a Gateway Load
    /// Balancer sends it (UDP/6081, the mirror's VXLAN datagram inside). Bound like --listen.
    #[arg(long, env = "REBUILDER_GENEVE_LISTEN", value_delimiter = ',')]
    pub geneve_listen: Vec<SocketAddr>,

    /// Only datagrams from these senders are processed (CIDR blocks or addresses, comma
    /// separated; empty = every sender). The others are dropped before parsing and counted
    /// (`source_not_allowed`). The sender is the mirrored ENI (NLB mode) or a GWLB node (GWLB
    /// mode). A filter, not an authentication: source addresses are only as good as the
    /// network's anti-spoofing.
    #[arg(long, env = "REBUILDER_ALLOW_FROM", value_delimiter = ',', value_parser = AddrRanges::parse_one)]
    pub allow_from: Vec<ipnet::IpNet>,

    /// Receive worker threads, each with its own sockets and its own engine (0 = one per core).
    #[arg(long, env = "REBUILDER_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Socket receive buffer per socket, bytes, asked for with SO_RCVBUF (capped by
    /// net.core.rmem_max, which install.sh raises); when the kernel gives less, SO_RCVBUFFORCE is
    /// tried (it needs CAP_NET_ADMIN) and a warning shows the size in force.
    #[arg(long, env = "REBUILDER_RCVBUF_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub rcvbuf_bytes: usize,

    /// Datagrams per recvmmsg call.
    #[arg(long, env = "REBUILDER_RECV_BATCH", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub recv_batch: u32,

    /// Receive buffer per datagram, bytes; longer datagrams are dropped and counted.
    #[arg(long, env = "REBUILDER_MAX_DATAGRAM_BYTES", default_value_t = 9216,
          value_parser = clap::value_parser!(u32).range(64..=65535))]
    pub max_datagram_bytes: u32,

    /// After a partial batch, wait this long (µs) before the next receive so datagrams
    /// accumulate into batches (fewer wakeups; the socket buffer absorbs the pause). 0 = off.
    #[arg(long, env = "REBUILDER_RECV_COALESCE_US", default_value_t = 200)]
    pub recv_coalesce_us: u64,

    /// Engine timer period (idle and gap timeouts), milliseconds.
    #[arg(long, env = "REBUILDER_TIMER_INTERVAL_MS", default_value_t = 100)]
    pub timer_interval_ms: u64,

    // ---- engine caps (per worker) ----
    /// Maximum tracked TCP flows per worker; the oldest idle flow is evicted beyond it.
    #[arg(long, env = "REBUILDER_MAX_FLOWS", default_value_t = EngineConfig::default().max_flows, help_heading = ENGINE_CAPS)]
    pub max_flows: usize,
    /// Out-of-order bytes buffered per flow.
    #[arg(long, env = "REBUILDER_MAX_OOO_BYTES_PER_FLOW", default_value_t = EngineConfig::default().max_ooo_bytes_per_flow, help_heading = ENGINE_CAPS)]
    pub max_ooo_bytes_per_flow: usize,
    /// Out-of-order segments buffered per flow.
    #[arg(long, env = "REBUILDER_MAX_OOO_SEGMENTS_PER_FLOW", default_value_t = EngineConfig::default().max_ooo_segments_per_flow, help_heading = ENGINE_CAPS)]
    pub max_ooo_segments_per_flow: usize,
    /// Total bytes buffered by the engine of one worker (reassembly + partial requests).
    #[arg(long, env = "REBUILDER_MEMORY_BUDGET_BYTES", default_value_t = EngineConfig::default().memory_budget_bytes, help_heading = ENGINE_CAPS)]
    pub memory_budget_bytes: usize,
    /// A sequence gap larger than this many bytes makes the flow resynchronise at once.
    #[arg(long, env = "REBUILDER_GAP_SKIP_BYTES", default_value_t = EngineConfig::default().gap_skip_bytes, help_heading = ENGINE_CAPS)]
    pub gap_skip_bytes: usize,
    /// A sequence gap older than this (µs) is skipped.
    #[arg(long, env = "REBUILDER_GAP_TIMEOUT_US", default_value_t = EngineConfig::default().gap_timeout_us, help_heading = ENGINE_CAPS)]
    pub gap_timeout_us: u64,
    /// ... or this long (µs) once the sender's FIN is known.
    #[arg(long, env = "REBUILDER_GAP_TIMEOUT_AFTER_FIN_US", default_value_t = EngineConfig::default().gap_timeout_after_fin_us, help_heading = ENGINE_CAPS)]
    pub gap_timeout_after_fin_us: u64,
    /// A flow without packets for this long (µs) is expired.
    #[arg(long, env = "REBUILDER_IDLE_TIMEOUT_US", default_value_t = EngineConfig::default().idle_timeout_us, help_heading = ENGINE_CAPS)]
    pub idle_timeout_us: u64,
    /// A closed flow is kept this long (µs) to absorb late retransmissions.
    #[arg(long, env = "REBUILDER_CLOSED_LINGER_US", default_value_t = EngineConfig::default().closed_linger_us, help_heading = ENGINE_CAPS)]
    pub closed_linger_us: u64,
    /// Maximum size of a request head (request line + headers), bytes.
    #[arg(long, env = "REBUILDER_MAX_HEADER_BYTES", default_value_t = EngineConfig::default().max_header_bytes, help_heading = ENGINE_CAPS)]
    pub max_header_bytes: usize,
    /// Maximum number of headers of a request.
    #[arg(long, env = "REBUILDER_MAX_HEADERS", default_value_t = EngineConfig::default().max_headers, help_heading = ENGINE_CAPS)]
    pub max_headers: usize,
    /// Bodies longer than this are cut (and marked truncated), bytes.
    #[arg(long, env = "REBUILDER_MAX_BODY_BYTES", default_value_t = EngineConfig::default().max_body_bytes, help_heading = ENGINE_CAPS)]
    pub max_body_bytes: usize,
    /// How long a complete request waits for its response to begin (µs) before it is forwarded
    /// without it (`timeout`), from its end or the end of the answer before it, whichever is
    /// later; a response whose head came is waited for until it completes, one whose head
    /// began in time for its head to end (at most this long after its first byte).
    #[arg(long, env = "REBUILDER_RESPONSE_TIMEOUT_US", default_value_t = EngineConfig::default().response_timeout_us, help_heading = ENGINE_CAPS)]
    pub response_timeout_us: u64,
    /// How long a complete request waits (µs) while the server's direction of its connection
    /// was never seen (NLB: the directions may go to different rebuilders).
    #[arg(long, env = "REBUILDER_SERVER_WAIT_US", default_value_t = EngineConfig::default().server_wait_us, help_heading = ENGINE_CAPS)]
    pub server_wait_us: u64,
    /// Requests waiting for their response per connection (pipelining depth).
    #[arg(long, env = "REBUILDER_MAX_PENDING_REQUESTS", default_value_t = EngineConfig::default().max_pending_requests, help_heading = ENGINE_CAPS)]
    pub max_pending_requests: usize,
    /// Response head (status line + headers) kept, bytes; a longer head is cut here, read
    /// past it for its framing, and flagged `head_truncated`.
    #[arg(long, env = "REBUILDER_MAX_RESPONSE_HEADER_BYTES", default_value_t = EngineConfig::default().max_response_header_bytes, help_heading = ENGINE_CAPS)]
    pub max_response_header_bytes: usize,
    /// Under memory pressure (a worker's budget more than 7/8 used), flows that hold buffered
    /// bytes and have had no packet for this long (µs) are evicted, least recently active
    /// first, down to 3/4 (`rebuilder_flows_reclaimed_total`); past --idle-timeout-us: off.
    #[arg(long, env = "REBUILDER_RECLAIM_IDLE_US", default_value_t = EngineConfig::default().reclaim_idle_us, help_heading = ENGINE_CAPS)]
    pub reclaim_idle_us: u64,
    /// Distinct source keys (GWLB endpoint, VXLAN sender, VNI) counted apart per worker;
    /// further keys share one overflow row (`rebuilder_source_keys_overflow_total`).
    #[arg(long, env = "REBUILDER_MAX_SOURCE_KEYS", default_value_t = EngineConfig::default().max_source_keys, help_heading = ENGINE_CAPS)]
    pub max_source_keys: usize,
    /// Only these VXLAN VNIs are processed (comma separated; empty = all).
    #[arg(long, env = "REBUILDER_VNI_ALLOW", value_delimiter = ',', help_heading = ENGINE_CAPS)]
    pub vni_allow: Vec<u32>,

    #[command(flatten)]
    pub health_checks: crate::engine::health_check::HealthCheckArgs,

    #[command(flatten)]
    pub proxy_protocol: crate::engine::proxy::ProxyProtocolArgs,

    // ---- forwarding ----
    /// Analyzer URL (http:// or https://). Every request goes to this host and port whatever its
    /// Host header says; a path prefix in the URL is prepended to each request target.
    #[arg(long, env = "REBUILDER_UPSTREAM", help_heading = FORWARDING)]
    pub upstream: String,

    /// What is sent to the upstream.
    #[arg(long, env = "REBUILDER_SINK", value_enum, default_value_t = SinkKind::HttpReplay, help_heading = FORWARDING)]
    pub sink: SinkKind,

    /// ndjson sink: gzip every batch (`Content-Encoding: gzip`).
    #[arg(long, env = "REBUILDER_SINK_GZIP", default_value_t = false, help_heading = FORWARDING)]
    pub sink_gzip: bool,

    /// ndjson sink: most lines per batch.
    #[arg(long, env = "REBUILDER_SINK_BATCH_LINES", default_value_t = 1000, help_heading = FORWARDING)]
    pub sink_batch_lines: usize,

    /// ndjson sink: most bytes per batch (before gzip); a batch is sent once it reaches it.
    #[arg(long, env = "REBUILDER_SINK_BATCH_BYTES", default_value_t = 4 * 1024 * 1024, help_heading = FORWARDING)]
    pub sink_batch_bytes: usize,

    /// ndjson sink: a batch waits at most this long after its first line, ms.
    #[arg(long, env = "REBUILDER_SINK_FLUSH_MS", default_value_t = 1000, help_heading = FORWARDING)]
    pub sink_flush_ms: u64,

    /// ndjson sink: include request and response bodies (`body_b64`).
    #[arg(long, env = "REBUILDER_SINK_WITH_BODY", default_value_t = false, help_heading = FORWARDING)]
    pub sink_with_body: bool,

    /// ndjson sink: decode gzip / deflate bodies (Content-Encoding) for the JSON lines.
    #[arg(long, env = "REBUILDER_DECODE_BODIES", default_value_t = false, help_heading = FORWARDING)]
    pub decode_bodies: bool,

    /// With --decode-bodies: most decoded bytes kept per body (decompression bombs are cut).
    #[arg(long, env = "REBUILDER_MAX_DECODED_BODY_BYTES", default_value_t = 4 * 1024 * 1024, help_heading = FORWARDING)]
    pub max_decoded_body_bytes: usize,

    /// PEM file of the CA certificates to trust for an https upstream (instead of the public
    /// web PKI roots), e.g. a private CA of an internal analyzer.
    #[arg(long, env = "REBUILDER_UPSTREAM_CA_FILE", help_heading = FORWARDING)]
    pub upstream_ca_file: Option<std::path::PathBuf>,

    /// Requests waiting between the workers and the senders; beyond it requests are dropped
    /// and counted (ingest never waits).
    #[arg(long, env = "REBUILDER_QUEUE_CAPACITY", default_value_t = 16384, help_heading = FORWARDING)]
    pub queue_capacity: usize,

    /// Bytes (head + body) waiting in the queue; beyond it requests are dropped and counted.
    #[arg(long, env = "REBUILDER_QUEUE_MAX_BYTES", default_value_t = 256 * 1024 * 1024, help_heading = FORWARDING)]
    pub queue_max_bytes: usize,

    /// Sender tasks, each with one keep-alive connection to the upstream (= requests in flight
    /// at once).
    #[arg(long, env = "REBUILDER_CONCURRENCY", default_value_t = 64, help_heading = FORWARDING)]
    pub concurrency: usize,

    /// Requests written on one upstream connection before their answers are read (HTTP/1.1
    /// pipelining, which an ALB accepts on its front-end connections; 1 = one at a time).
    /// Requests written after an answer that closes the connection are sent again on a new
    /// one (the upstream did not process them); after a failure they are counted as lost.
    #[arg(long, env = "REBUILDER_PIPELINE_DEPTH", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256), help_heading = FORWARDING)]
    pub pipeline_depth: u32,

    /// When fewer requests than the pipeline depth are waiting, a sender waits this long (µs)
    /// for more before writing (fewer writes, reads and wakeups per request at low rates;
    /// the added latency is at most this). 0 = write at once.
    #[arg(long, env = "REBUILDER_FORWARD_LINGER_US", default_value_t = 1000, help_heading = FORWARDING)]
    pub forward_linger_us: u64,

    /// Upstream TCP (and TLS) connect timeout, milliseconds.
    #[arg(long, env = "REBUILDER_CONNECT_TIMEOUT_MS", default_value_t = 2000, help_heading = FORWARDING)]
    pub connect_timeout_ms: u64,

    /// Upstream request timeout (send + complete response), milliseconds.
    #[arg(long, env = "REBUILDER_REQUEST_TIMEOUT_MS", default_value_t = 10000, help_heading = FORWARDING)]
    pub request_timeout_ms: u64,

    /// A keep-alive connection idle this long is replaced before its next request, ms (keep it
    /// below the upstream's idle timeout: ALB 60 s, nginx 75 s).
    #[arg(long, env = "REBUILDER_POOL_IDLE_TIMEOUT_MS", default_value_t = 30000, help_heading = FORWARDING)]
    pub pool_idle_timeout_ms: u64,

    /// Header carrying the inner client IP (appended to an existing one).
    #[arg(long, env = "REBUILDER_FORWARDED_FOR_HEADER", default_value = "X-Forwarded-For", help_heading = FORWARDING)]
    pub forwarded_for_header: String,

    /// Do not add the client IP header at all.
    #[arg(long, env = "REBUILDER_NO_FORWARDED_FOR", default_value_t = false, help_heading = FORWARDING)]
    pub no_forwarded_for: bool,

    /// Static header added to every forwarded request, `Name: value` (repeatable; in the
    /// environment separated by newlines). Replaces a header of the same name from the request.
    #[arg(long = "extra-header", env = "REBUILDER_EXTRA_HEADERS", value_delimiter = '\n', help_heading = FORWARDING)]
    pub extra_headers: Vec<String>,

    /// Threads of the forwarding runtime (senders, admin). 0 = one per core.
    #[arg(long, env = "REBUILDER_FORWARD_THREADS", default_value_t = 1, help_heading = FORWARDING)]
    pub forward_threads: usize,

    /// While the upstream fails (connect errors, timeouts), connection attempts are made one at
    /// a time, spaced by this backoff, doubling up to 2 s: no retry storms.
    #[arg(long, env = "REBUILDER_FAILURE_BACKOFF_MS", default_value_t = 100, help_heading = FORWARDING)]
    pub failure_backoff_ms: u64,

    // ---- operations ----
    /// Admin HTTP listener: /healthz (liveness) and /metrics. Served by a thread of its own;
    /// bind it to the instance's address (the template does) rather than every interface.
    #[arg(long, env = "REBUILDER_ADMIN", default_value = "0.0.0.0:9445", help_heading = OPERATIONS)]
    pub admin: SocketAddr,

    /// Admin connections served at once; more are closed at once and counted
    /// (rebuilder_admin_connections_rejected_total).
    #[arg(long, env = "REBUILDER_ADMIN_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096), help_heading = OPERATIONS)]
    pub admin_max_connections: u32,

    /// An admin connection is closed when its request has not been answered within this, ms
    /// (one request per connection: no keep-alive).
    #[arg(long, env = "REBUILDER_ADMIN_TIMEOUT_MS", default_value_t = 5000, help_heading = OPERATIONS)]
    pub admin_timeout_ms: u64,

    /// Consecutive failed deliveries (connect error, timeout, 5xx) after which the upstream is
    /// reported down (rebuilder_upstream_up 0). Not part of /healthz.
    #[arg(long, env = "REBUILDER_HEALTH_FAILURE_THRESHOLD", default_value_t = 3, help_heading = OPERATIONS)]
    pub health_failure_threshold: u32,

    /// When no request reached the upstream for this long, a connection probe checks it, ms.
    #[arg(long, env = "REBUILDER_HEALTH_PROBE_INTERVAL_MS", default_value_t = 1000, help_heading = OPERATIONS)]
    pub health_probe_interval_ms: u64,

    /// On SIGTERM: how long queued requests may take to drain before the rest is dropped, ms.
    #[arg(long, env = "REBUILDER_DRAIN_TIMEOUT_MS", default_value_t = 5000, help_heading = OPERATIONS)]
    pub drain_timeout_ms: u64,

    /// Log format.
    #[arg(long, env = "REBUILDER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, help_heading = OPERATIONS)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "REBUILDER_LOG", default_value = "info", help_heading = OPERATIONS)]
    pub log_filter: String,

    /// The source map (`docs/sources.md`, fetched by `rebuilder-sources.timer`): records and
    /// per-source metrics name the ENI and workload of each key. Re-read when it changes
    /// (polled), without a restart; it may be missing at start and appear later; a document
    /// that does not load (a version this rebuilder does not know) leaves the map in force.
    #[arg(long, env = "REBUILDER_SOURCES_FILE", help_heading = SOURCES)]
    pub sources_file: Option<std::path::PathBuf>,
    /// How often the source map file is checked for a change, ms.
    #[arg(long, env = "REBUILDER_SOURCES_POLL_MS", default_value_t = 5000, help_heading = SOURCES)]
    pub sources_poll_ms: u64,
    /// Per-source metrics: this many ENIs get a label of their own (the heaviest by bytes when
    /// first seen; kept for the life of the process so counters stay monotonic), the others
    /// are summed under `eni="other"`; keys not in the map under `eni="unknown"`.
    #[arg(long, env = "REBUILDER_SOURCE_METRICS_TOP", default_value_t = 50, help_heading = SOURCES)]
    pub source_metrics_top: usize,
    /// http-replay sink: add `x-rebuilder-source-eni` and `x-rebuilder-source` (the record's
    /// `source` object, JSON) to every forwarded request.
    #[arg(long, env = "REBUILDER_SOURCE_HEADERS", help_heading = SOURCES)]
    pub source_headers: bool,
    #[command(flatten)]
    pub dedup: crate::dedup::DedupArgs,
}

impl RunArgs {
    /// Worker threads to start (resolves 0 to the number of cores).
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Threads of the forwarding runtime (resolves 0 to the number of cores).
    pub fn forward_thread_count(&self) -> usize {
        if self.forward_threads > 0 {
            self.forward_threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The engine caps of one worker.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_flows: self.max_flows,
            max_ooo_bytes_per_flow: self.max_ooo_bytes_per_flow,
            max_ooo_segments_per_flow: self.max_ooo_segments_per_flow,
            memory_budget_bytes: self.memory_budget_bytes,
            gap_skip_bytes: self.gap_skip_bytes,
            gap_timeout_us: self.gap_timeout_us,
            gap_timeout_after_fin_us: self.gap_timeout_after_fin_us,
            idle_timeout_us: self.idle_timeout_us,
            closed_linger_us: self.closed_linger_us,
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            max_body_bytes: self.max_body_bytes,
            // The http-replay sink re-sends request bodies, an ndjson line shows them with a
            // body (or decoded from one), --dedup compares them.
            keep_request_bodies: self.sink == SinkKind::HttpReplay
                || self.sink_with_body
                || self.decode_bodies
                || self.dedup.dedup,
            // Both sinks send every request.
            keep_request_heads: true,
            // Only an ndjson line with a body (or decoded from one) reads response bodies;
            // the http-replay sink re-sends requests alone.
            keep_response_bodies: self.sink == SinkKind::Ndjson
                && (self.sink_with_body || self.decode_bodies),
            keep_response_heads: self.sink == SinkKind::Ndjson,
            response_timeout_us: self.response_timeout_us,
            server_wait_us: self.server_wait_us,
            max_pending_requests: self.max_pending_requests,
            max_response_header_bytes: self.max_response_header_bytes,
            vni_allow: if self.vni_allow.is_empty() {
                None
            } else {
                Some(self.vni_allow.clone())
            },
            allow_from: (!self.allow_from.is_empty())
                .then(|| AddrRanges::new(self.allow_from.clone())),
            health_checks: self.health_checks.rule(),
            proxy_protocol_from: self.proxy_protocol.ranges(),
            max_source_keys: self.max_source_keys,
            reclaim_idle_us: self.reclaim_idle_us,
        }
    }

    pub fn timer_interval(&self) -> Duration {
        Duration::from_millis(self.timer_interval_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        let mut v = vec!["rebuilder"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).expect("parses").run
    }

    #[test]
    fn defaults_listen_on_both_families_and_the_admin_port() {
        let a = parse(&["--upstream", "http://127.0.0.1:8080"]);
        assert_eq!(
            a.listen,
            vec![
                "0.0.0.0:4789".parse::<SocketAddr>().unwrap(),
                "[::]:4789".parse().unwrap()
            ]
        );
        assert_eq!(a.admin, "0.0.0.0:9445".parse::<SocketAddr>().unwrap());
        assert_eq!(a.rcvbuf_bytes, 32 * 1024 * 1024);
        assert_eq!(a.log_format, LogFormat::Text);
        assert_eq!(a.forwarded_for_header, "X-Forwarded-For");
        assert!(!a.no_forwarded_for);
    }

    #[test]
    fn engine_caps_default_to_the_engine_defaults() {
        let a = parse(&["--upstream", "http://u"]);
        let d = EngineConfig::default();
        let e = a.engine_config();
        assert_eq!(e.max_flows, d.max_flows);
        assert_eq!(e.max_body_bytes, d.max_body_bytes);
        assert_eq!(e.idle_timeout_us, d.idle_timeout_us);
        assert_eq!(e.vni_allow, None);
    }

    #[test]
    fn flags_map_onto_engine_caps() {
        let a = parse(&[
            "--upstream",
            "http://u",
            "--max-flows",
            "7",
            "--max-body-bytes",
            "99",
            "--vni-allow",
            "3,4",
        ]);
        let e = a.engine_config();
        assert_eq!(e.max_flows, 7);
        assert_eq!(e.max_body_bytes, 99);
        assert_eq!(e.vni_allow, Some(vec![3, 4]));
    }

    #[test]
    fn response_bodies_and_heads_are_kept_only_for_an_ndjson_sink_that_shows_them() {
        // (bodies kept, heads kept)
        let keep = |extra: &[&str]| {
            let mut args = vec!["--upstream", "http://u"];
            args.extend_from_slice(extra);
            let config = parse(&args).engine_config();
            (config.keep_response_bodies, config.keep_response_heads)
        };
        assert_eq!(keep(&[]), (false, false));
        assert_eq!(keep(&["--sink", "http-replay"]), (false, false));
        assert_eq!(
            keep(&["--sink", "http-replay", "--sink-with-body"]),
            (false, false)
        );
        assert_eq!(keep(&["--sink", "ndjson"]), (false, true));
        assert_eq!(
            keep(&["--sink", "ndjson", "--sink-with-body"]),
            (true, true)
        );
        assert_eq!(keep(&["--sink", "ndjson", "--decode-bodies"]), (true, true));
    }

    #[test]
    fn request_bodies_are_kept_unless_an_ndjson_sink_never_shows_them() {
        let keep = |extra: &[&str]| {
            let mut args = vec!["--upstream", "http://u"];
            args.extend_from_slice(extra);
            parse(&args).engine_config().keep_request_bodies
        };
        assert!(keep(&[]), "the http-replay sink re-sends them");
        assert!(keep(&["--sink", "http-replay"]));
        assert!(!keep(&["--sink", "ndjson"]));
        assert!(keep(&["--sink", "ndjson", "--sink-with-body"]));
        assert!(keep(&["--sink", "ndjson", "--decode-bodies"]));
        assert!(keep(&["--sink", "ndjson", "--dedup"]));
    }

    #[test]
    fn missing_upstream_is_an_error() {
        // Only meaningful when the variable is not set in the test environment.
        if std::env::var_os("REBUILDER_UPSTREAM").is_none() {
            assert!(Cli::try_parse_from(["rebuilder"]).is_err());
        }
    }

    #[test]
    fn every_flag_has_a_rebuilder_env_variable_and_help_shows_defaults() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let mut help = Vec::new();
        cmd.clone().write_long_help(&mut help).unwrap();
        let help = String::from_utf8(help).unwrap();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" {
                continue;
            }
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{id} has no environment variable"));
            assert!(
                env.to_string_lossy().starts_with("REBUILDER_"),
                "--{id} env {env:?}"
            );
            assert!(help.contains(&*env.to_string_lossy()), "help lacks {env:?}");
        }
        for shown in [
            "[default: 0.0.0.0:4789,[::]:4789]",
            "[default: 33554432]",
            "[default: 0.0.0.0:9445]",
            "[default: 16384]",
            "[default: X-Forwarded-For]",
            "[default: text]",
        ] {
            assert!(help.contains(shown), "help lacks {shown}:\n{help}");
        }
    }

    #[test]
    fn extra_headers_are_repeatable() {
        let a = parse(&[
            "--upstream",
            "http://u",
            "--extra-header",
            "X-A: 1",
            "--extra-header",
            "X-B: 2, 3",
        ]);
        assert_eq!(a.extra_headers, vec!["X-A: 1", "X-B: 2, 3"]);
    }
}
