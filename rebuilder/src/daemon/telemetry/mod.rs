//! The one place for the daemon's counters and health state. `/metrics` renders them through
//! `prometheus-client` ([`registry`]); every label value is a `&'static str` from a closed set
//! ([`labels`]), so label sets are bounded.
//!
//! Hot path rule: a receive worker never touches a shared atomic per datagram. It counts in
//! plain integers ([`WorkerCounters`]) and publishes them, together with a copy of its engine's
//! stats, into its own [`WorkerSlot`] on every timer tick (~100 ms) and when it stops. A
//! scrape sums the slots. The forwarding side (a handful of events per request) counts in
//! atomics.
//!
//! Layout: this module (the events and the health state), [`labels`] (the closed label
//! sets), [`workers`] (the receive workers' counters and slots), [`registry`] (the metric
//! table and the collector), [`kernel`] (/proc counters).

pub mod kernel;
pub mod labels;
pub mod registry;
pub mod sources;
#[cfg(test)]
mod tests;
pub mod workers;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use kernel::{
    SocketDrops, UdpSnmp, add_socket_drops, parse_udp_snmp, read_socket_drops, read_udp_snmp,
};
pub use labels::{ProbeResult, RequestDropReason, StatusClass, UpstreamErrorClass};
pub use registry::LATENCY_BUCKETS;
use workers::Totals;
pub use workers::{WorkerCounters, WorkerSlot};

/// Health inputs. Liveness (`/healthz`): sockets bound, every receive worker alive, the
/// forwarder running, not shutting down. The upstream's state is reported apart
/// (`rebuilder_upstream_up`): an analyzer outage must not make the load balancer and the Auto
/// Scaling group replace every rebuilder.
#[derive(Debug, Default)]
struct Health {
    sockets_bound: AtomicU64,
    workers_expected: AtomicU64,
    workers_alive: AtomicU64,
    forwarder_running: AtomicBool,
    consecutive_failures: AtomicU32,
    shutting_down: AtomicBool,
    /// Whether a delivery or probe has succeeded since the last failure streak began.
    ever_succeeded: AtomicBool,
}

/// The admin listener's connections.
#[derive(Debug, Default)]
struct AdminCounters {
    open: AtomicU64,
    rejected: AtomicU64,
}

/// Counters fed by the forwarding side and the workers' slots: what the metrics collector
/// reads (shared with the registry, hence apart from [`Telemetry`]).
#[derive(Debug)]
pub(crate) struct TelemetryState {
    workers: Vec<WorkerSlot>,
    forwarded: [AtomicU64; StatusClass::ALL.len()],
    dropped: [AtomicU64; RequestDropReason::ALL.len()],
    upstream_errors: [AtomicU64; UpstreamErrorClass::ALL.len()],
    probes: [AtomicU64; ProbeResult::ALL.len()],
    queue_depth: AtomicU64,
    queue_bytes: AtomicU64,
    queue_capacity: AtomicU64,
    in_flight: AtomicU64,
    /// Client fields named like the rebuilder's markers, removed before forwarding.
    marker_headers_removed: AtomicU64,
    /// Requests written again after the upstream ended a connection without processing them.
    requests_resent: AtomicU64,
    /// ndjson sink body decoding: decoded, cut at the cap, failed.
    decode: [AtomicU64; 3],
    socket_inodes: Mutex<Vec<u64>>,
    rcvbuf_bytes: AtomicU64,
    health: Health,
    admin: AdminCounters,
    failure_threshold: u32,
    /// The source map and the per-source label slots (`--sources-file`).
    sources: sources::SourceLabels,
    /// The duplicate-mirroring filter (`--dedup`), read at scrape time.
    dedup: std::sync::OnceLock<Arc<Mutex<crate::dedup::Dedup>>>,
}

impl TelemetryState {
    fn totals(&self) -> Totals {
        Totals::of(&self.workers)
    }

    fn dropped_with(&self, t: &Totals, reason: RequestDropReason) -> u64 {
        let worker_side: u64 = match reason {
            RequestDropReason::QueueFull => t.c.queue_full,
            RequestDropReason::QueueBytes => t.c.queue_bytes,
            _ => 0,
        };
        worker_side + self.dropped[reason as usize].load(Relaxed)
    }

    fn socket_drops(&self) -> SocketDrops {
        let inodes = self
            .socket_inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        read_socket_drops(&inodes).unwrap_or_default()
    }

    /// Liveness (see [`Health`]).
    fn health(&self) -> Result<(), &'static str> {
        let h = &self.health;
        if h.shutting_down.load(Relaxed) {
            return Err("shutting down");
        }
        if h.workers_alive.load(Relaxed) < h.workers_expected.load(Relaxed) {
            return Err("a receive worker stopped");
        }
        if h.sockets_bound.load(Relaxed) == 0 {
            return Err("no UDP socket bound");
        }
        if !h.forwarder_running.load(Relaxed) {
            return Err("the forwarder is not running");
        }
        Ok(())
    }

    /// Whether the upstream accepts requests: reached at least once, and fewer than the
    /// threshold of consecutive failures since.
    fn upstream_up(&self) -> bool {
        let h = &self.health;
        h.ever_succeeded.load(Relaxed)
            && h.consecutive_failures.load(Relaxed) < self.failure_threshold
    }
}

impl registry::SnapshotSource for TelemetryState {
    fn snapshot(&self) -> registry::Snapshot {
        let totals = self.totals();
        let load = |a: &AtomicU64| a.load(Relaxed);
        registry::Snapshot {
            forwarded: self.forwarded.each_ref().map(load),
            dropped: RequestDropReason::ALL.map(|r| self.dropped_with(&totals, r)),
            upstream_errors: self.upstream_errors.each_ref().map(load),
            probes: self.probes.each_ref().map(load),
            queue_depth: load(&self.queue_depth),
            queue_bytes: load(&self.queue_bytes),
            queue_capacity: load(&self.queue_capacity),
            in_flight: load(&self.in_flight),
            marker_headers_removed: load(&self.marker_headers_removed),
            requests_resent: load(&self.requests_resent),
            decode: self.decode.each_ref().map(load),
            sockets_bound: load(&self.health.sockets_bound),
            rcvbuf_bytes: load(&self.rcvbuf_bytes),
            workers_alive: load(&self.health.workers_alive),
            healthy: self.health().is_ok(),
            upstream_up: self.upstream_up(),
            admin_open: load(&self.admin.open),
            admin_rejected: load(&self.admin.rejected),
            socket_drops: self.socket_drops(),
            snmp: kernel::read_udp_snmp(),
            per_source: self
                .sources
                .label(&totals.e.sources, &totals.c.source_queue_drops),
            dedup: self.dedup.get().map(|d| {
                let d = d.lock().unwrap_or_else(|e| e.into_inner());
                (d.stats(), d.held_bytes() as u64)
            }),
            source_map: self.sources.map_counts(),
            totals,
        }
    }
}

/// Everything the daemon counts, and the registry that renders it.
#[derive(Debug)]
pub struct Telemetry {
    state: Arc<TelemetryState>,
    latency: Histogram,
    latency_sum: registry::SecondsCounter,
    registry: Registry,
}

impl Telemetry {
    pub fn new(workers: usize, failure_threshold: u32) -> Telemetry {
        let state = Arc::new(TelemetryState {
            workers: (0..workers).map(|_| WorkerSlot::default()).collect(),
            forwarded: Default::default(),
            dropped: Default::default(),
            upstream_errors: Default::default(),
            probes: Default::default(),
            queue_depth: AtomicU64::new(0),
            queue_bytes: AtomicU64::new(0),
            queue_capacity: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            marker_headers_removed: AtomicU64::new(0),
            requests_resent: AtomicU64::new(0),
            decode: Default::default(),
            socket_inodes: Mutex::default(),
            rcvbuf_bytes: AtomicU64::new(0),
            health: Health::default(),
            admin: AdminCounters::default(),
            failure_threshold: failure_threshold.max(1),
            sources: sources::SourceLabels::default(),
            dedup: std::sync::OnceLock::new(),
        });
        let latency = registry::latency_histogram();
        let latency_sum = registry::SecondsCounter::default();
        let registry = registry::build(state.clone(), latency.clone(), latency_sum.clone());
        Telemetry {
            state,
            latency,
            latency_sum,
            registry,
        }
    }

    /// Per-source metrics name the ENIs of `map` (at most `top` of them).
    pub fn set_sources(&self, map: Arc<crate::sources::SharedSources>, top: usize) {
        self.state.sources.configure(map, top);
    }

    /// Counts the duplicate-mirroring filter on `/metrics`.
    pub fn set_dedup(&self, dedup: Arc<Mutex<crate::dedup::Dedup>>) {
        let _ = self.state.dedup.set(dedup);
    }

    /// The per-source series as `/metrics` labels them now.
    pub fn per_source(&self) -> sources::Labelled {
        let t = self.state.totals();
        self.state
            .sources
            .label(&t.e.sources, &t.c.source_queue_drops)
    }

    pub fn worker(&self, i: usize) -> &WorkerSlot {
        &self.state.workers[i]
    }

    // ---- forwarding events: each counts (and logs at debug) in one place ----

    /// The upstream answered (the request was delivered).
    pub fn request_forwarded(&self, status: u16, latency: Duration) {
        self.state.forwarded[StatusClass::of(status) as usize].fetch_add(1, Relaxed);
        self.latency.observe(latency.as_secs_f64());
        self.latency_sum.inc_by(latency.as_secs_f64());
        if status >= 500 {
            self.upstream_error(UpstreamErrorClass::Status5xx);
        } else {
            self.upstream_ok();
        }
    }

    /// Client fields named like the rebuilder's markers were removed from a request.
    pub fn marker_headers_removed(&self, n: u64) {
        self.state.marker_headers_removed.fetch_add(n, Relaxed);
    }

    /// A request is written again (the upstream ended the connection before processing it).
    pub fn request_resent(&self) {
        self.state.requests_resent.fetch_add(1, Relaxed);
    }

    /// A request was not delivered.
    pub fn request_dropped(&self, reason: RequestDropReason) {
        self.state.dropped[reason as usize].fetch_add(1, Relaxed);
        tracing::debug!(reason = reason.as_str(), "request dropped");
    }

    /// An upstream failure; also feeds the health state.
    pub fn upstream_error(&self, class: UpstreamErrorClass) {
        self.state.upstream_errors[class as usize].fetch_add(1, Relaxed);
        let h = &self.state.health;
        let n = h.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n == self.state.failure_threshold {
            tracing::warn!(
                class = class.as_str(),
                failures = n,
                "upstream is failing (rebuilder_upstream_up 0); requests wait or are dropped"
            );
        }
    }

    /// A delivery or probe succeeded.
    pub fn upstream_ok(&self) {
        let h = &self.state.health;
        let before = h.consecutive_failures.swap(0, Relaxed);
        h.ever_succeeded.store(true, Relaxed);
        if before >= self.state.failure_threshold {
            tracing::info!("upstream delivers again (rebuilder_upstream_up 1)");
        }
    }

    /// Result of a health probe (a connection attempt made while no request was delivered).
    pub fn probe_result(&self, ok: bool) {
        let result = if ok {
            ProbeResult::Success
        } else {
            ProbeResult::Failure
        };
        self.state.probes[result as usize].fetch_add(1, Relaxed);
        if ok {
            self.upstream_ok();
        } else {
            self.upstream_error(UpstreamErrorClass::Connect);
        }
    }

    pub fn set_queue(&self, depth: u64, bytes: u64) {
        self.state.queue_depth.store(depth, Relaxed);
        self.state.queue_bytes.store(bytes, Relaxed);
    }
    pub fn set_queue_capacity(&self, cap: u64) {
        self.state.queue_capacity.store(cap, Relaxed);
    }
    /// Bodies the ndjson sink decoded (`--decode-bodies`).
    pub fn bodies_decoded(&self, d: &crate::record::DecodeStats) {
        for (a, n) in self
            .state
            .decode
            .iter()
            .zip([d.decoded, d.truncated, d.failed])
        {
            if n > 0 {
                a.fetch_add(n, Relaxed);
            }
        }
    }
    pub fn set_in_flight(&self, n: u64) {
        self.state.in_flight.store(n, Relaxed);
    }
    pub fn set_sockets_bound(&self, n: u64) {
        self.state.health.sockets_bound.store(n, Relaxed);
    }
    /// Inodes of our UDP sockets, whose kernel drop counters are read from /proc/net/udp*.
    pub fn set_socket_inodes(&self, inodes: Vec<u64>) {
        *self
            .state
            .socket_inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = inodes;
    }

    /// Datagrams the kernel dropped on our sockets (receive buffer full), and bytes waiting.
    pub fn socket_drops(&self) -> SocketDrops {
        self.state.socket_drops()
    }

    pub fn sockets_closed(&self, n: u64) {
        let _ = self
            .state
            .health
            .sockets_bound
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }
    pub fn set_shutting_down(&self) {
        self.state.health.shutting_down.store(true, Relaxed);
    }
    /// The smallest receive buffer the kernel granted our sockets, bytes.
    pub fn set_rcvbuf_bytes(&self, n: u64) {
        self.state.rcvbuf_bytes.store(n, Relaxed);
    }
    /// How many receive workers must be alive for `/healthz` to say 200.
    pub fn set_workers_expected(&self, n: u64) {
        self.state.health.workers_expected.store(n, Relaxed);
    }
    /// A receive worker started (see `ingest::WorkerAlive`).
    pub fn worker_started(&self) {
        self.state.health.workers_alive.fetch_add(1, Relaxed);
    }
    /// A receive worker's thread ended (normally or by a panic).
    pub fn worker_stopped(&self) {
        let h = &self.state.health;
        let _ = h
            .workers_alive
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
        if !h.shutting_down.load(Relaxed) {
            tracing::error!("a receive worker stopped; /healthz reports 503");
        }
    }
    /// Receive workers alive now.
    pub fn workers_alive(&self) -> u64 {
        self.state.health.workers_alive.load(Relaxed)
    }
    /// The forwarder started (`true`) or ended (`false`).
    pub fn set_forwarder_running(&self, running: bool) {
        self.state.health.forwarder_running.store(running, Relaxed);
    }
    /// An admin connection is being served.
    pub fn admin_connection_opened(&self) {
        self.state.admin.open.fetch_add(1, Relaxed);
    }
    /// An admin connection ended.
    pub fn admin_connection_closed(&self) {
        let _ = self
            .state
            .admin
            .open
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }
    /// An admin connection was refused (`--admin-max-connections` being served).
    pub fn admin_connection_rejected(&self) {
        self.state.admin.rejected.fetch_add(1, Relaxed);
        tracing::debug!("admin connection refused: at --admin-max-connections");
    }
    /// Admin connections being served now.
    pub fn admin_connections_open(&self) -> u64 {
        self.state.admin.open.load(Relaxed)
    }
    /// Admin connections refused so far.
    pub fn admin_connections_rejected(&self) -> u64 {
        self.state.admin.rejected.load(Relaxed)
    }

    /// Liveness: `Ok(())` while the daemon receives and forwards (sockets bound, every
    /// worker alive, the forwarder running, not shutting down), else the reason. The
    /// upstream's state is not part of it ([`Telemetry::upstream_up`]).
    pub fn health(&self) -> Result<(), &'static str> {
        self.state.health()
    }

    /// Whether the upstream accepts requests (`rebuilder_upstream_up`).
    pub fn upstream_up(&self) -> bool {
        self.state.upstream_up()
    }

    pub fn dropped(&self, reason: RequestDropReason) -> u64 {
        self.state.dropped_with(&self.state.totals(), reason)
    }

    /// Requests the upstream answered (any status).
    pub fn forwarded(&self) -> u64 {
        self.state.forwarded.iter().map(|a| a.load(Relaxed)).sum()
    }

    pub fn upstream_errors(&self, class: UpstreamErrorClass) -> u64 {
        self.state.upstream_errors[class as usize].load(Relaxed)
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The `Content-Type` of [`Telemetry::render`]'s output.
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
}
