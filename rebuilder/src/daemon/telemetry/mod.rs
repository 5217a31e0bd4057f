//! The one place for the daemon's metrics and health state, rendered in the Prometheus text
//! format. Every label value is a `&'static str` from a closed enum, so label sets are bounded.
//!
//! Hot path rule: a receive worker never touches a shared atomic per datagram. It counts in
//! plain integers ([`WorkerCounters`]) and publishes them, together with a copy of its engine's
//! stats, into its own [`WorkerSlot`] on every timer tick (~100 ms) and when it stops.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::engine::stats::{DropReason, EngineStats};

/// Why a request extracted from the mirror was not delivered to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDropReason {
    /// The queue between workers and senders held `--queue-capacity` requests.
    QueueFull,
    /// The queue held `--queue-max-bytes` bytes.
    QueueBytes,
    /// The request cannot be expressed as an upstream request (bad method, target or header).
    Invalid,
    /// The upstream could not be connected to.
    UpstreamConnect,
    /// The upstream did not answer within `--request-timeout-ms`.
    UpstreamTimeout,
    /// The connection failed while sending or reading the response.
    UpstreamIo,
    /// Still queued when the shutdown drain deadline passed.
    Shutdown,
}

impl RequestDropReason {
    pub const ALL: [RequestDropReason; 7] = [
        Self::QueueFull,
        Self::QueueBytes,
        Self::Invalid,
        Self::UpstreamConnect,
        Self::UpstreamTimeout,
        Self::UpstreamIo,
        Self::Shutdown,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::QueueBytes => "queue_bytes",
            Self::Invalid => "invalid_request",
            Self::UpstreamConnect => "upstream_connect",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamIo => "upstream_io",
            Self::Shutdown => "shutdown",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Class of an upstream failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorClass {
    Connect,
    Timeout,
    /// The upstream answered with a 5xx status (the request was delivered).
    Status5xx,
    /// Connection reset, protocol error, TLS failure after connect, ...
    Io,
}

impl UpstreamErrorClass {
    pub const ALL: [UpstreamErrorClass; 4] =
        [Self::Connect, Self::Timeout, Self::Status5xx, Self::Io];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Status5xx => "status_5xx",
            Self::Io => "io",
        }
    }
}

/// Status classes of upstream responses.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upstream latency histogram bucket upper bounds, seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counts kept by a receive worker in plain integers.
#[derive(Debug, Default, Clone)]
pub struct WorkerCounters {
    pub datagrams: u64,
    pub bytes: u64,
    /// Datagrams longer than the receive buffer (dropped).
    pub oversize: u64,
    /// recvmmsg errors other than EAGAIN/EINTR.
    pub recv_errors: u64,
    /// Requests the engine emitted.
    pub extracted: u64,
    /// Requests dropped by this worker because the queue was full (count, bytes).
    pub queue_full: u64,
    pub queue_bytes: u64,
}

/// What one worker last published (a copy, taken ~10 times a second; the lock is only ever
/// contended by a metrics scrape).
#[derive(Debug, Default)]
pub struct WorkerSlot {
    inner: Mutex<Published>,
}

#[derive(Debug, Default, Clone)]
struct Published {
    counters: WorkerCounters,
    engine: EngineStats,
    active_flows: u64,
}

impl WorkerSlot {
    /// Publishes the worker's counters and a copy of its engine's stats.
    pub fn publish(&self, c: &WorkerCounters, stats: &EngineStats, active_flows: usize) {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        p.counters.clone_from(c);
        p.engine.clone_from(stats);
        p.active_flows = active_flows as u64;
    }
    fn get(&self) -> Published {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Sum over workers.
#[derive(Debug, Default)]
struct Totals {
    c: WorkerCounters,
    e: EngineStats,
    active_flows: u64,
}

/// Fixed-bucket histogram with atomic counters.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }
}

/// Health inputs: sockets bound, upstream delivering, shutting down.
#[derive(Debug, Default)]
pub struct Health {
    sockets_bound: AtomicU64,
    consecutive_failures: AtomicU32,
    shutting_down: AtomicBool,
    /// Whether a delivery or probe has succeeded since the last failure streak began.
    ever_succeeded: AtomicBool,
}

/// Everything the daemon counts.
#[derive(Debug)]
pub struct Telemetry {
    workers: Vec<WorkerSlot>,
    forwarded_by_status: [AtomicU64; 5],
    dropped: [AtomicU64; RequestDropReason::ALL.len()],
    upstream_errors: [AtomicU64; UpstreamErrorClass::ALL.len()],
    latency: Histogram,
    queue_depth: AtomicU64,
    queue_bytes: AtomicU64,
    queue_capacity: AtomicU64,
    in_flight: AtomicU64,
    probes: [AtomicU64; 2],
    socket_inodes: Mutex<Vec<u64>>,
    health: Health,
    failure_threshold: u32,
}

impl Telemetry {
    pub fn new(workers: usize, failure_threshold: u32) -> Telemetry {
        Telemetry {
            workers: (0..workers).map(|_| WorkerSlot::default()).collect(),
            forwarded_by_status: Default::default(),
            dropped: Default::default(),
            upstream_errors: Default::default(),
            latency: Histogram::default(),
            queue_depth: AtomicU64::new(0),
            queue_bytes: AtomicU64::new(0),
            queue_capacity: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            probes: Default::default(),
            socket_inodes: Mutex::default(),
            health: Health::default(),
            failure_threshold: failure_threshold.max(1),
        }
    }

    pub fn worker(&self, i: usize) -> &WorkerSlot {
        &self.workers[i]
    }

    // ---- forwarding events: each counts (and logs at debug) in one place ----

    /// The upstream answered (the request was delivered).
    pub fn request_forwarded(&self, status: u16, latency: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.forwarded_by_status[class].fetch_add(1, Relaxed);
        self.latency.observe(latency);
        if status >= 500 {
            self.upstream_error(UpstreamErrorClass::Status5xx);
        } else {
            self.upstream_ok();
        }
    }

    /// A request was not delivered.
    pub fn request_dropped(&self, reason: RequestDropReason) {
        self.dropped[reason.index()].fetch_add(1, Relaxed);
        tracing::debug!(reason = reason.as_str(), "request dropped");
    }

    /// An upstream failure; also feeds the health state.
    pub fn upstream_error(&self, class: UpstreamErrorClass) {
        self.upstream_errors[class as usize].fetch_add(1, Relaxed);
        let n = self.health.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n == self.failure_threshold {
            tracing::warn!(
                class = class.as_str(),
                failures = n,
                "upstream is failing; /healthz reports 503"
            );
        }
    }

    /// A delivery or probe succeeded.
    pub fn upstream_ok(&self) {
        let before = self.health.consecutive_failures.swap(0, Relaxed);
        self.health.ever_succeeded.store(true, Relaxed);
        if before >= self.failure_threshold {
            tracing::info!("upstream delivers again; /healthz reports 200");
        }
    }

    /// Result of a health probe (a connection attempt made while no request was delivered).
    pub fn probe_result(&self, ok: bool) {
        self.probes[usize::from(ok)].fetch_add(1, Relaxed);
        if ok {
            self.upstream_ok();
        } else {
            self.upstream_error(UpstreamErrorClass::Connect);
        }
    }

    pub fn set_queue(&self, depth: u64, bytes: u64) {
        self.queue_depth.store(depth, Relaxed);
        self.queue_bytes.store(bytes, Relaxed);
    }
    pub fn set_queue_capacity(&self, cap: u64) {
        self.queue_capacity.store(cap, Relaxed);
    }
    pub fn set_in_flight(&self, n: u64) {
        self.in_flight.store(n, Relaxed);
    }
    pub fn set_sockets_bound(&self, n: u64) {
        self.health.sockets_bound.store(n, Relaxed);
    }
    /// Inodes of our UDP sockets, whose kernel drop counters are read from /proc/net/udp*.
    pub fn set_socket_inodes(&self, inodes: Vec<u64>) {
        *self.socket_inodes.lock().unwrap_or_else(|e| e.into_inner()) = inodes;
    }

    /// Datagrams the kernel dropped on our sockets (receive buffer full), and bytes waiting.
    pub fn socket_drops(&self) -> SocketDrops {
        let inodes = self
            .socket_inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        read_socket_drops(&inodes).unwrap_or_default()
    }

    pub fn sockets_closed(&self, n: u64) {
        let _ = self
            .health
            .sockets_bound
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }
    pub fn set_shutting_down(&self) {
        self.health.shutting_down.store(true, Relaxed);
    }

    /// `Ok(())` when the instance should receive traffic, else the reason it should not.
    pub fn health(&self) -> Result<(), &'static str> {
        let h = &self.health;
        if h.shutting_down.load(Relaxed) {
            return Err("shutting down");
        }
        if h.sockets_bound.load(Relaxed) == 0 {
            return Err("no UDP socket bound");
        }
        if h.consecutive_failures.load(Relaxed) >= self.failure_threshold {
            return Err("upstream is not accepting requests");
        }
        if !h.ever_succeeded.load(Relaxed) {
            return Err("upstream not reached yet");
        }
        Ok(())
    }

    pub fn dropped(&self, reason: RequestDropReason) -> u64 {
        self.dropped_with(&self.totals(), reason)
    }

    fn dropped_with(&self, t: &Totals, reason: RequestDropReason) -> u64 {
        let worker_side: u64 = match reason {
            RequestDropReason::QueueFull => t.c.queue_full,
            RequestDropReason::QueueBytes => t.c.queue_bytes,
            _ => 0,
        };
        worker_side + self.dropped[reason.index()].load(Relaxed)
    }

    /// Requests the upstream answered (any status).
    pub fn forwarded(&self) -> u64 {
        self.forwarded_by_status
            .iter()
            .map(|a| a.load(Relaxed))
            .sum()
    }

    pub fn upstream_errors(&self, class: UpstreamErrorClass) -> u64 {
        self.upstream_errors[class as usize].load(Relaxed)
    }

    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for w in &self.workers {
            let p = w.get();
            let c = &mut t.c;
            c.datagrams += p.counters.datagrams;
            c.bytes += p.counters.bytes;
            c.oversize += p.counters.oversize;
            c.recv_errors += p.counters.recv_errors;
            c.extracted += p.counters.extracted;
            c.queue_full += p.counters.queue_full;
            c.queue_bytes += p.counters.queue_bytes;
            t.e.merge(&p.engine);
            t.active_flows += p.active_flows;
        }
        t
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let t = self.totals();
        let mut o = String::with_capacity(8192);
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };

        counter(
            &mut o,
            "rebuilder_datagrams_received_total",
            "UDP datagrams received.",
            t.c.datagrams,
        );
        counter(
            &mut o,
            "rebuilder_datagram_bytes_received_total",
            "UDP payload bytes received.",
            t.c.bytes,
        );
        counter(
            &mut o,
            "rebuilder_datagrams_oversize_total",
            "Datagrams longer than the receive buffer (dropped).",
            t.c.oversize,
        );
        counter(
            &mut o,
            "rebuilder_receive_errors_total",
            "Socket receive errors.",
            t.c.recv_errors,
        );
        let sd = self.socket_drops();
        counter(
            &mut o,
            "rebuilder_kernel_drops_total",
            "Datagrams the kernel dropped on our sockets because the receive buffer was full (sk_drops, /proc/net/udp).",
            sd.drops,
        );
        gauge(
            &mut o,
            "rebuilder_socket_rx_queue_bytes",
            "Bytes waiting in our sockets' receive buffers.",
            sd.rx_queue_bytes,
        );
        if let Some(snmp) = read_udp_snmp() {
            counter(
                &mut o,
                "rebuilder_host_udp_rcvbuf_errors_total",
                "UDP RcvbufErrors of the network namespace (/proc/net/snmp), all sockets.",
                snmp.rcvbuf_errors,
            );
            counter(
                &mut o,
                "rebuilder_host_udp_in_errors_total",
                "UDP InErrors of the network namespace (/proc/net/snmp), all sockets.",
                snmp.in_errors,
            );
        }
        gauge(
            &mut o,
            "rebuilder_sockets_bound",
            "UDP sockets bound (all workers).",
            self.health.sockets_bound.load(Relaxed),
        );

        // engine
        counter(
            &mut o,
            "rebuilder_packets_decoded_total",
            "Packets the engine processed.",
            t.e.packets,
        );
        counter(
            &mut o,
            "rebuilder_packet_bytes_total",
            "Bytes the engine processed.",
            t.e.bytes,
        );
        let _ = writeln!(
            o,
            "# HELP rebuilder_decode_drops_total Packets or data the engine dropped, by reason.\n# TYPE rebuilder_decode_drops_total counter"
        );
        for reason in DropReason::ALL.iter() {
            let v = t.e.drops(*reason);
            let _ = writeln!(
                o,
                "rebuilder_decode_drops_total{{reason=\"{}\"}} {v}",
                reason.as_str()
            );
        }
        gauge(
            &mut o,
            "rebuilder_flows_active",
            "TCP flows tracked now.",
            t.active_flows,
        );
        counter(
            &mut o,
            "rebuilder_flows_created_total",
            "TCP flows created.",
            t.e.flows_created,
        );
        counter(
            &mut o,
            "rebuilder_flows_evicted_total",
            "TCP flows evicted because a cap (flows, memory) was reached.",
            t.e.flows_evicted,
        );
        counter(
            &mut o,
            "rebuilder_flows_expired_total",
            "TCP flows closed by the idle timeout.",
            t.e.flows_expired,
        );
        counter(
            &mut o,
            "rebuilder_stream_gaps_total",
            "Sequence gaps skipped (data missing from the mirror).",
            t.e.gaps,
        );
        counter(
            &mut o,
            "rebuilder_stream_gap_bytes_total",
            "Bytes skipped in those gaps.",
            t.e.gap_bytes,
        );
        counter(
            &mut o,
            "rebuilder_flows_upgraded_total",
            "Flows no longer parsed after an Upgrade or CONNECT request.",
            t.e.upgraded_flows,
        );
        counter(
            &mut o,
            "rebuilder_response_packets_total",
            "Packets of the server-to-client direction (ignored cheaply).",
            t.e.response_packets,
        );
        counter(
            &mut o,
            "rebuilder_proxy_headers_total",
            "PROXY protocol headers (v1, v2) stripped; their source is the forwarded client.",
            t.e.proxy_headers,
        );
        counter(
            &mut o,
            "rebuilder_flows_opaque_total",
            "Flows whose client stream is not HTTP/1.x (skipped).",
            t.e.opaque_flows,
        );
        counter(
            &mut o,
            "rebuilder_bodies_truncated_total",
            "Requests whose body exceeded --max-body-bytes and was cut.",
            t.e.bodies_truncated,
        );
        counter(
            &mut o,
            "rebuilder_requests_extracted_total",
            "HTTP requests extracted from the mirror.",
            t.c.extracted,
        );

        // forwarding
        let _ = writeln!(
            o,
            "# HELP rebuilder_requests_forwarded_total Requests the upstream answered, by status class.\n# TYPE rebuilder_requests_forwarded_total counter"
        );
        for (i, class) in STATUS_CLASSES.iter().enumerate() {
            let _ = writeln!(
                o,
                "rebuilder_requests_forwarded_total{{status=\"{class}\"}} {}",
                self.forwarded_by_status[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP rebuilder_requests_dropped_total Requests not delivered, by reason.\n# TYPE rebuilder_requests_dropped_total counter"
        );
        for reason in RequestDropReason::ALL {
            let _ = writeln!(
                o,
                "rebuilder_requests_dropped_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.dropped_with(&t, reason)
            );
        }
        let _ = writeln!(
            o,
            "# HELP rebuilder_upstream_errors_total Upstream failures, by class.\n# TYPE rebuilder_upstream_errors_total counter"
        );
        for class in UpstreamErrorClass::ALL {
            let _ = writeln!(
                o,
                "rebuilder_upstream_errors_total{{class=\"{}\"}} {}",
                class.as_str(),
                self.upstream_errors(class)
            );
        }
        let _ = writeln!(
            o,
            "# HELP rebuilder_upstream_probes_total Upstream connection probes made while idle, by result.\n# TYPE rebuilder_upstream_probes_total counter"
        );
        for (i, result) in ["failure", "success"].iter().enumerate() {
            let _ = writeln!(
                o,
                "rebuilder_upstream_probes_total{{result=\"{result}\"}} {}",
                self.probes[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP rebuilder_upstream_latency_seconds Time from sending a request to the end of its response.\n# TYPE rebuilder_upstream_latency_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency.buckets[i].load(Relaxed);
            let _ = writeln!(
                o,
                "rebuilder_upstream_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.latency.count.load(Relaxed);
        let _ = writeln!(
            o,
            "rebuilder_upstream_latency_seconds_bucket{{le=\"+Inf\"}} {count}\nrebuilder_upstream_latency_seconds_sum {}\nrebuilder_upstream_latency_seconds_count {count}",
            self.latency.sum_us.load(Relaxed) as f64 / 1e6
        );
        gauge(
            &mut o,
            "rebuilder_queue_depth",
            "Requests waiting for a sender.",
            self.queue_depth.load(Relaxed),
        );
        gauge(
            &mut o,
            "rebuilder_queue_bytes",
            "Bytes of the requests waiting for a sender.",
            self.queue_bytes.load(Relaxed),
        );
        gauge(
            &mut o,
            "rebuilder_queue_capacity",
            "Configured queue capacity (requests).",
            self.queue_capacity.load(Relaxed),
        );
        gauge(
            &mut o,
            "rebuilder_upstream_in_flight",
            "Requests being sent to the upstream now.",
            self.in_flight.load(Relaxed),
        );
        gauge(
            &mut o,
            "rebuilder_healthy",
            "1 when /healthz answers 200.",
            u64::from(self.health().is_ok()),
        );
        o
    }
}

/// Kernel counters of a set of our sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketDrops {
    pub drops: u64,
    pub rx_queue_bytes: u64,
}

/// Sums the `drops` and `rx_queue` columns of /proc/net/udp and /proc/net/udp6 over the sockets
/// with these inodes. `None` when none of them is listed.
pub fn read_socket_drops(inodes: &[u64]) -> Option<SocketDrops> {
    let mut total = SocketDrops::default();
    let mut found = false;
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            found |= add_socket_drops(&text, inodes, &mut total);
        }
    }
    found.then_some(total)
}

/// Adds the matching lines of one /proc/net/udp* table; true when one matched.
pub fn add_socket_drops(text: &str, inodes: &[u64], total: &mut SocketDrops) -> bool {
    let mut found = false;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 13 {
            continue;
        }
        let Ok(inode) = f[9].parse::<u64>() else {
            continue;
        };
        if !inodes.contains(&inode) {
            continue;
        }
        found = true;
        total.drops += f[12].parse::<u64>().unwrap_or(0);
        if let Some((_, rx)) = f[4].split_once(':') {
            total.rx_queue_bytes += u64::from_str_radix(rx, 16).unwrap_or(0);
        }
    }
    found
}

/// UDP counters of the network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSnmp {
    pub in_errors: u64,
    pub rcvbuf_errors: u64,
}

/// Reads the `Udp:` lines of /proc/net/snmp.
pub fn read_udp_snmp() -> Option<UdpSnmp> {
    parse_udp_snmp(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

/// Parses the `Udp:` header and value lines of /proc/net/snmp.
pub fn parse_udp_snmp(text: &str) -> Option<UdpSnmp> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp: "));
    let names: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let values: Vec<u64> = lines
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let get = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| values.get(i).copied())
    };
    Some(UdpSnmp {
        in_errors: get("InErrors")?,
        rcvbuf_errors: get("RcvbufErrors")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a rendering into (series, value) pairs, checking every line is well formed.
    fn samples(text: &str) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series value");
            out.push((series.to_string(), value.parse().expect("numeric value")));
        }
        out
    }

    fn value(text: &str, series: &str) -> f64 {
        samples(text)
            .into_iter()
            .find(|(s, _)| s == series)
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
            .1
    }

    #[test]
    fn rendering_is_valid_exposition_text_with_one_type_per_family() {
        let t = Telemetry::new(2, 3);
        let text = t.render();
        let mut families = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(families.insert(name.to_string()), "{name} declared twice");
        }
        for (series, _) in samples(&text) {
            let base = series.split('{').next().unwrap();
            let family = base
                .strip_suffix("_bucket")
                .or_else(|| base.strip_suffix("_sum"))
                .or_else(|| base.strip_suffix("_count"))
                .filter(|f| families.contains(*f))
                .unwrap_or(base);
            assert!(families.contains(family), "{series} has no TYPE line");
        }
    }

    #[test]
    fn worker_publications_are_summed_across_workers() {
        let t = Telemetry::new(2, 3);
        let stats = EngineStats::default();
        let c = WorkerCounters {
            datagrams: 10,
            bytes: 1000,
            extracted: 4,
            queue_full: 1,
            ..Default::default()
        };
        t.worker(0).publish(&c, &stats, 5);
        t.worker(1).publish(&c, &stats, 6);
        let text = t.render();
        assert_eq!(value(&text, "rebuilder_datagrams_received_total"), 20.0);
        assert_eq!(
            value(&text, "rebuilder_datagram_bytes_received_total"),
            2000.0
        );
        assert_eq!(value(&text, "rebuilder_flows_active"), 11.0);
        assert_eq!(value(&text, "rebuilder_requests_extracted_total"), 8.0);
        assert_eq!(
            value(
                &text,
                "rebuilder_requests_dropped_total{reason=\"queue_full\"}"
            ),
            2.0
        );
    }

    #[test]
    fn every_engine_drop_reason_has_a_series() {
        let text = Telemetry::new(1, 3).render();
        for r in DropReason::ALL {
            let series = format!("rebuilder_decode_drops_total{{reason=\"{}\"}}", r.as_str());
            assert_eq!(value(&text, &series), 0.0);
        }
    }

    #[test]
    fn latency_histogram_is_cumulative() {
        let t = Telemetry::new(1, 3);
        t.request_forwarded(200, Duration::from_micros(300));
        t.request_forwarded(204, Duration::from_millis(3));
        t.request_forwarded(503, Duration::from_secs(20));
        let text = t.render();
        assert_eq!(
            value(
                &text,
                "rebuilder_upstream_latency_seconds_bucket{le=\"0.0005\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "rebuilder_upstream_latency_seconds_bucket{le=\"0.005\"}"
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                "rebuilder_upstream_latency_seconds_bucket{le=\"10\"}"
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                "rebuilder_upstream_latency_seconds_bucket{le=\"+Inf\"}"
            ),
            3.0
        );
        assert_eq!(
            value(&text, "rebuilder_upstream_latency_seconds_count"),
            3.0
        );
        assert_eq!(
            value(&text, "rebuilder_requests_forwarded_total{status=\"2xx\"}"),
            2.0
        );
        assert_eq!(
            value(
                &text,
                "rebuilder_upstream_errors_total{class=\"status_5xx\"}"
            ),
            1.0
        );
    }

    #[test]
    fn health_follows_sockets_failures_and_shutdown() {
        let t = Telemetry::new(1, 2);
        assert_eq!(t.health(), Err("no UDP socket bound"));
        t.set_sockets_bound(2);
        assert_eq!(t.health(), Err("upstream not reached yet"));
        t.probe_result(true);
        assert_eq!(t.health(), Ok(()));
        t.upstream_error(UpstreamErrorClass::Connect);
        assert_eq!(t.health(), Ok(()), "one failure is below the threshold");
        t.upstream_error(UpstreamErrorClass::Timeout);
        assert_eq!(t.health(), Err("upstream is not accepting requests"));
        t.request_forwarded(200, Duration::from_millis(1));
        assert_eq!(t.health(), Ok(()));
        t.set_shutting_down();
        assert_eq!(t.health(), Err("shutting down"));
    }

    #[test]
    fn socket_drops_are_summed_over_our_inodes_only() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          1: 00000000:12B5 00000000:0000 07 00000000:00000100 00:00000000 00000000     0        0 111 2 0000000000000000 5\n\
          2: 00000000:12B5 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 222 2 0000000000000000 7\n\
          3: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 333 2 0000000000000000 100\n";
        let mut t = SocketDrops::default();
        assert!(add_socket_drops(text, &[111, 222], &mut t));
        assert_eq!(
            t,
            SocketDrops {
                drops: 12,
                rx_queue_bytes: 256
            }
        );
        assert!(!add_socket_drops(text, &[999], &mut SocketDrops::default()));
    }

    #[test]
    fn udp_snmp_lines_are_parsed_by_name() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
            Udp: 100 2 7 50 5 0 0 0 0\n\
            UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
            UdpLite: 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(
            parse_udp_snmp(text),
            Some(UdpSnmp {
                in_errors: 7,
                rcvbuf_errors: 5
            })
        );
        assert_eq!(parse_udp_snmp("garbage"), None);
    }
}
