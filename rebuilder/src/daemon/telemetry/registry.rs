//! `/metrics`: a `prometheus-client` registry, rendered in the Prometheus text format 0.0.4.
//!
//! Two sources, neither on a receive worker's hot path:
//! - one [`Collector`] over a [`Snapshot`] taken at scrape time (the workers' last published
//!   counters and engine stats, summed; the forwarding counters; the kernel's counters), each
//!   metric one row of [`METRICS`] — name, help, kind and how to read it;
//! - the upstream latency histogram, a `prometheus-client` [`Histogram`] the senders observe.
//!
//! Every label value comes from a closed set ([`DropReason`], [`Anomaly`], [`RequestDropReason`],
//! [`UpstreamErrorClass`], [`StatusClass`], [`ProbeResult`]), except the per-source `eni`
//! label, bounded by `--source-metrics-top` plus `other` and `unknown` ([`super::sources`]).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::kernel::{SocketDrops, UdpSnmp};
use super::labels::{ProbeResult, RequestDropReason, StatusClass, UpstreamErrorClass};
use super::workers::Totals;
use crate::dedup::DedupStats;
use crate::engine::source::SourceCounters;
use crate::engine::stats::{Anomaly, DropReason, ResponseMissing};

/// Upstream latency histogram bucket upper bounds, seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Everything the metrics are read from, taken once per scrape.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    pub(super) totals: Totals,
    pub(super) forwarded: [u64; StatusClass::ALL.len()],
    pub(super) dropped: [u64; RequestDropReason::ALL.len()],
    pub(super) upstream_errors: [u64; UpstreamErrorClass::ALL.len()],
    pub(super) probes: [u64; ProbeResult::ALL.len()],
    pub(super) queue_depth: u64,
    pub(super) queue_bytes: u64,
    pub(super) queue_capacity: u64,
    pub(super) in_flight: u64,
    pub(super) marker_headers_removed: u64,
    pub(super) requests_resent: u64,
    /// Bodies decoded, cut at the decoded cap, failed (ndjson sink).
    pub(super) decode: [u64; 3],
    pub(super) sockets_bound: u64,
    pub(super) rcvbuf_bytes: u64,
    pub(super) workers_alive: u64,
    pub(super) healthy: bool,
    pub(super) upstream_up: bool,
    pub(super) admin_open: u64,
    pub(super) admin_rejected: u64,
    pub(super) socket_drops: SocketDrops,
    /// `None` when /proc/net/snmp cannot be read (its two metrics are left out).
    pub(super) snmp: Option<UdpSnmp>,
    /// Per-source counters by `eni` label (bounded: see `super::sources`).
    pub(super) per_source: super::sources::Labelled,
    /// Source map: entries in force, documents loaded, documents refused.
    pub(super) source_map: [u64; 3],
    /// The duplicate-mirroring filter's counters and bytes held (`None`: `--dedup` off).
    pub(super) dedup: Option<(DedupStats, u64)>,
}

/// What one row of [`METRICS`] reads.
enum Values {
    /// One series without labels.
    One(u64),
    /// One series per value of a closed label set.
    ByLabel(&'static str, Vec<(&'static str, u64)>),
    /// Series with label values of their own (per source: bounded by
    /// `--source-metrics-top`).
    Labeled(Vec<(Vec<(&'static str, String)>, u64)>),
    /// A ratio per series (gauges).
    Ratio(Vec<(Vec<(&'static str, String)>, f64)>),
    /// Not available on this host: the metric is left out.
    Absent,
}

/// One value per source label.
fn per_source(s: &Snapshot, value: impl Fn(&SourceCounters) -> u64) -> Values {
    Values::Labeled(
        s.per_source
            .counters
            .iter()
            .map(|(eni, c)| (vec![("eni", eni.clone())], value(c)))
            .collect(),
    )
}

/// Drops per source and reason (reasons with nothing counted left out).
fn per_source_drops(s: &Snapshot) -> Values {
    let mut out = Vec::new();
    for (eni, c) in &s.per_source.counters {
        for r in DropReason::ALL {
            let n = c.drops[r as usize];
            if n > 0 {
                out.push((
                    vec![("eni", eni.clone()), ("reason", r.as_str().to_owned())],
                    n,
                ));
            }
        }
    }
    Values::Labeled(out)
}

/// The share of requests complete per source (sources without requests left out).
fn per_source_complete(s: &Snapshot) -> Values {
    Values::Ratio(
        s.per_source
            .counters
            .iter()
            .filter_map(|(eni, c)| c.complete_share().map(|r| (vec![("eni", eni.clone())], r)))
            .collect(),
    )
}

/// Requests the queue refused, per source and reason (zeros left out).
fn per_source_queue_drops(s: &Snapshot) -> Values {
    let reasons = [RequestDropReason::QueueFull, RequestDropReason::QueueBytes];
    let mut out = Vec::new();
    for (eni, n) in &s.per_source.queue_drops {
        for (r, v) in reasons.iter().zip(n) {
            if *v > 0 {
                out.push((
                    vec![("eni", eni.clone()), ("reason", r.as_str().to_owned())],
                    *v,
                ));
            }
        }
    }
    Values::Labeled(out)
}

/// One metric: its name (counters without `_total`, which the encoder appends), help text,
/// type, and how to read it from a snapshot.
struct Metric {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    read: fn(&Snapshot) -> Values,
}

const fn counter(name: &'static str, help: &'static str, read: fn(&Snapshot) -> Values) -> Metric {
    Metric {
        name,
        help,
        kind: MetricType::Counter,
        read,
    }
}

const fn gauge(name: &'static str, help: &'static str, read: fn(&Snapshot) -> Values) -> Metric {
    Metric {
        name,
        help,
        kind: MetricType::Gauge,
        read,
    }
}

/// One series without labels.
fn one(v: u64) -> Values {
    Values::One(v)
}

/// One value per label of a closed set, read from an array indexed like `all`.
fn by_label<T: Copy>(
    label: &'static str,
    all: &[T],
    as_str: fn(T) -> &'static str,
    value: impl Fn(usize) -> u64,
) -> Values {
    Values::ByLabel(
        label,
        all.iter()
            .enumerate()
            .map(|(i, v)| (as_str(*v), value(i)))
            .collect(),
    )
}

/// Every metric of the collector, in the order they are rendered: name, help, type, reader.
#[rustfmt::skip]
const METRICS: &[Metric] = &[
    // receive workers
    counter("rebuilder_datagrams_received", "UDP datagrams received.", |s| one(s.totals.c.datagrams)),
    counter("rebuilder_datagram_bytes_received", "UDP payload bytes received.", |s| one(s.totals.c.bytes)),
    counter("rebuilder_datagrams_oversize", "Datagrams longer than the receive buffer (dropped).", |s| one(s.totals.c.oversize)),
    counter("rebuilder_receive_errors", "Socket receive errors.", |s| one(s.totals.c.recv_errors)),
    // kernel
    counter("rebuilder_kernel_drops", "Datagrams the kernel dropped on our sockets because the receive buffer was full (sk_drops, /proc/net/udp).", |s| one(s.socket_drops.drops)),
    gauge("rebuilder_socket_rx_queue_bytes", "Bytes waiting in our sockets' receive buffers.", |s| one(s.socket_drops.rx_queue_bytes)),
    counter("rebuilder_host_udp_rcvbuf_errors", "UDP RcvbufErrors of the network namespace (/proc/net/snmp), all sockets.", |s| s.snmp.map_or(Values::Absent, |n| one(n.rcvbuf_errors))),
    counter("rebuilder_host_udp_in_errors", "UDP InErrors of the network namespace (/proc/net/snmp), all sockets.", |s| s.snmp.map_or(Values::Absent, |n| one(n.in_errors))),
    gauge("rebuilder_sockets_bound", "UDP sockets bound (all workers).", |s| one(s.sockets_bound)),
    gauge("rebuilder_socket_rcvbuf_bytes", "Smallest receive buffer the kernel granted one of our UDP sockets (SO_RCVBUF, capped by net.core.rmem_max).", |s| one(s.rcvbuf_bytes)),
    gauge("rebuilder_workers_alive", "Receive worker threads running.", |s| one(s.workers_alive)),
    // engines
    counter("rebuilder_packets_decoded", "Packets the engine processed.", |s| one(s.totals.e.packets)),
    counter("rebuilder_packet_bytes", "Bytes the engine processed.", |s| one(s.totals.e.bytes)),
    counter("rebuilder_decode_drops", "Packets or data the engine dropped, by reason.", |s| by_label("reason", &DropReason::ALL, DropReason::as_str, |i| s.totals.e.drops(DropReason::ALL[i]))),
    gauge("rebuilder_flows_active", "TCP flows tracked now.", |s| one(s.totals.active_flows)),
    counter("rebuilder_flows_created", "TCP flows created.", |s| one(s.totals.e.flows_created)),
    counter("rebuilder_flows_evicted", "TCP flows evicted because --max-flows was reached.", |s| one(s.totals.e.flows_evicted)),
    counter("rebuilder_flows_reclaimed", "Idle TCP flows holding buffered bytes, evicted to give the memory budget back under pressure.", |s| one(s.totals.e.flows_reclaimed)),
    counter("rebuilder_flows_expired", "TCP flows closed by the idle timeout.", |s| one(s.totals.e.flows_expired)),
    counter("rebuilder_stream_gaps", "Sequence gaps skipped (data missing from the mirror).", |s| one(s.totals.e.gaps)),
    counter("rebuilder_stream_gap_bytes", "Bytes skipped in those gaps.", |s| one(s.totals.e.gap_bytes)),
    counter("rebuilder_flows_upgraded", "Flows no longer parsed after the server switched protocols (101 to an Upgrade, 2xx to a CONNECT).", |s| one(s.totals.e.upgraded_flows)),
    counter("rebuilder_response_packets", "Packets of the server-to-client direction (ignored cheaply).", |s| one(s.totals.e.response_packets)),
    counter("rebuilder_proxy_headers", "PROXY protocol headers (v1, v2) stripped; their source is the forwarded client.", |s| one(s.totals.e.proxy_headers)),
    counter("rebuilder_flows_opaque", "Flows whose client stream is not HTTP/1.x (skipped).", |s| one(s.totals.e.opaque_flows)),
    counter("rebuilder_bodies_truncated", "Requests whose body exceeded --max-body-bytes and was cut.", |s| one(s.totals.e.bodies_truncated)),
    counter("rebuilder_requests_extracted", "HTTP requests extracted from the mirror.", |s| one(s.totals.c.extracted)),
    counter("rebuilder_request_anomalies", "Requests extracted that needed a leniency some origin servers have, or whose framing origins disagree on, by kind.", |s| by_label("kind", &Anomaly::ALL, Anomaly::as_str, |i| s.totals.e.anomalies(Anomaly::ALL[i]))),
    counter("rebuilder_responses_parsed", "Final HTTP responses parsed from the server-to-client direction (interim 1xx other than 101 not included).", |s| one(s.totals.e.responses)),
    counter("rebuilder_responses_paired", "Requests emitted with their response.", |s| one(s.totals.e.responses_paired)),
    counter("rebuilder_responses_unmatched", "Responses that answer no request held (without a request, extra, after lost bytes): counted, never paired.", |s| one(s.totals.e.responses_unmatched)),
    counter("rebuilder_responses_interim", "Interim responses (1xx other than 101) skipped.", |s| one(s.totals.e.responses_interim)),
    counter("rebuilder_responses_missing", "Requests emitted without their response, by reason.", |s| by_label("reason", &ResponseMissing::ALL, ResponseMissing::as_str, |i| s.totals.e.responses_missing(ResponseMissing::ALL[i]))),
    counter("rebuilder_response_bodies_truncated", "Response bodies cut at --max-body-bytes.", |s| one(s.totals.e.response_bodies_truncated)),
    counter("rebuilder_response_heads_truncated", "Response heads cut at --max-response-header-bytes or --max-headers (framed as the whole head says).", |s| one(s.totals.e.response_heads_truncated)),
    counter("rebuilder_overlap_different_data", "Retransmitted bytes that differ from those already seen at the same sequence numbers (first data wins).", |s| one(s.totals.e.overlap_different_data)),
    // forwarding
    counter("rebuilder_requests_forwarded", "Requests the upstream answered, by status class.", |s| by_label("status", &StatusClass::ALL, StatusClass::as_str, |i| s.forwarded[i])),
    counter("rebuilder_requests_dropped", "Requests not delivered, by reason.", |s| by_label("reason", &RequestDropReason::ALL, RequestDropReason::as_str, |i| s.dropped[i])),
    counter("rebuilder_upstream_errors", "Upstream failures, by class.", |s| by_label("class", &UpstreamErrorClass::ALL, UpstreamErrorClass::as_str, |i| s.upstream_errors[i])),
    counter("rebuilder_upstream_probes", "Upstream connection probes made while idle, by result.", |s| by_label("result", &ProbeResult::ALL, ProbeResult::as_str, |i| s.probes[i])),
    gauge("rebuilder_queue_depth", "Requests waiting for a sender.", |s| one(s.queue_depth)),
    gauge("rebuilder_queue_bytes", "Bytes of the requests waiting for a sender.", |s| one(s.queue_bytes)),
    gauge("rebuilder_queue_capacity", "Configured queue capacity (requests).", |s| one(s.queue_capacity)),
    gauge("rebuilder_upstream_in_flight", "Requests being sent to the upstream now.", |s| one(s.in_flight)),
    counter("rebuilder_marker_headers_removed", "Client header fields named like the rebuilder's own (x-rebuilder-*), removed before forwarding.", |s| one(s.marker_headers_removed)),
    counter("rebuilder_requests_resent", "Requests written again because the upstream ended the connection before processing them.", |s| one(s.requests_resent)),
    gauge("rebuilder_healthy", "1 when /healthz answers 200 (liveness: sockets bound, workers and forwarder running).", |s| one(u64::from(s.healthy))),
    gauge("rebuilder_upstream_up", "1 while the upstream accepts requests (reached, fewer than --health-failure-threshold consecutive failures); not part of /healthz.", |s| one(u64::from(s.upstream_up))),
    // admin listener
    gauge("rebuilder_admin_connections", "Admin connections being served now.", |s| one(s.admin_open)),
    counter("rebuilder_admin_connections_rejected", "Admin connections closed unserved because --admin-max-connections were being served.", |s| one(s.admin_rejected)),
    counter("rebuilder_bodies_decoded", "Bodies decompressed (gzip, deflate) for the ndjson sink (--decode-bodies).", |s| one(s.decode[0])),
    counter("rebuilder_bodies_decoded_truncated", "Decoded bodies cut at --max-decoded-body-bytes (decompression bombs).", |s| one(s.decode[1])),
    counter("rebuilder_body_decode_failures", "Bodies that claimed gzip or deflate and did not decode (kept as they were).", |s| one(s.decode[2])),
    // per source (docs/sources.md): eni = an ENI of the source map (top N by traffic), "other", or "unknown" (key not in the map)
    counter("rebuilder_source_datagrams", "Datagrams (or captured frames) per mirrored source.", |s| per_source(s, |c| c.datagrams)),
    counter("rebuilder_source_bytes", "Bytes per mirrored source.", |s| per_source(s, |c| c.bytes)),
    counter("rebuilder_source_truncated_packets", "TCP segments cut short by the mirror session's PacketLength, per source.", |s| per_source(s, |c| c.truncated_packets)),
    counter("rebuilder_source_stream_gaps", "Sequence gaps skipped (data missing from the mirror), per source.", |s| per_source(s, |c| c.gaps)),
    counter("rebuilder_source_requests", "HTTP requests parsed, per source.", |s| per_source(s, |c| c.requests)),
    counter("rebuilder_source_responses", "Final HTTP responses parsed, per source.", |s| per_source(s, |c| c.responses)),
    counter("rebuilder_source_requests_paired", "Requests emitted with their response, per source.", |s| per_source(s, |c| c.paired)),
    counter("rebuilder_source_requests_unpaired", "Requests emitted without their response, per source.", |s| per_source(s, |c| c.unpaired)),
    counter("rebuilder_source_drops", "Packets or data dropped, per source and reason (as rebuilder_decode_drops).", per_source_drops),
    counter("rebuilder_source_requests_dropped", "Requests the receive workers could not queue (queue_full, queue_bytes), per source; they add up to those reasons of rebuilder_requests_dropped.", per_source_queue_drops),
    gauge("rebuilder_source_requests_complete_ratio", "Share of requests complete per source since start: emitted with their response, over emitted plus lost to missing bytes or eviction.", per_source_complete),
    counter("rebuilder_source_keys_overflow", "Look-ups of source keys that found the per-worker table full (--max-source-keys); their counts go to eni=\"other\".", |s| one(s.totals.e.sources.overflowed())),
    gauge("rebuilder_source_map_entries", "Entries of the source map in force (--sources-file).", |s| one(s.source_map[0])),
    counter("rebuilder_source_map_loads", "Source map documents loaded.", |s| one(s.source_map[1])),
    counter("rebuilder_duplicates_collapsed", "Requests seen twice (load balancer and target both mirrored) collapsed into one record: the load balancer's copies not emitted (--dedup).", |s| s.dedup.map_or(Values::Absent, |d| one(d.0.collapsed))),
    counter("rebuilder_dedup_held", "Requests held to wait for their other half (--dedup).", |s| s.dedup.map_or(Values::Absent, |d| one(d.0.held))),
    counter("rebuilder_dedup_released", "Held requests emitted alone when --dedup-window-ms ended.", |s| s.dedup.map_or(Values::Absent, |d| one(d.0.released))),
    counter("rebuilder_dedup_over_budget", "Requests emitted at once, unpaired, because --dedup-max-bytes were held.", |s| s.dedup.map_or(Values::Absent, |d| one(d.0.over_budget))),
    gauge("rebuilder_dedup_held_bytes", "Bytes of requests held by the duplicate filter now.", |s| s.dedup.map_or(Values::Absent, |d| one(d.1))),
    counter("rebuilder_source_map_load_errors", "Source map documents refused (unreadable, invalid, unknown version): the map in force was kept.", |s| one(s.source_map[2])),
];

/// Whatever can take a [`Snapshot`] (the daemon's telemetry state).
pub(super) trait SnapshotSource: std::fmt::Debug + Send + Sync + 'static {
    fn snapshot(&self) -> Snapshot;
}

/// The collector over the daemon's counters (see the module documentation).
#[derive(Debug)]
struct SnapshotCollector(Arc<dyn SnapshotSource>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.snapshot();
        for m in METRICS {
            let values = (m.read)(&snapshot);
            if matches!(values, Values::Absent) {
                continue;
            }
            let mut family = encoder.encode_descriptor(m.name, m.help, None, m.kind)?;
            match values {
                Values::One(v) => encode_value(m.kind, v, family)?,
                Values::ByLabel(label, series) => {
                    for (value, v) in series {
                        encode_value(m.kind, v, family.encode_family(&[(label, value)])?)?;
                    }
                }
                Values::Labeled(series) => {
                    for (labels, v) in series {
                        encode_value(m.kind, v, family.encode_family(&labels)?)?;
                    }
                }
                Values::Ratio(series) => {
                    for (labels, v) in series {
                        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                    }
                }
                Values::Absent => {}
            }
        }
        Ok(())
    }
}

fn encode_value(
    kind: MetricType,
    v: u64,
    encoder: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match kind {
        MetricType::Counter => ConstCounter::new(v).encode(encoder),
        _ => ConstGauge::new(v).encode(encoder),
    }
}

/// Seconds as a float counter (the running sum of the upstream latencies).
pub(super) type SecondsCounter = Counter<f64, std::sync::atomic::AtomicU64>;

/// The registry behind `/metrics`: the snapshot collector, the latency histogram and the
/// running sum of the same latencies as a counter. The sum is there for the CloudWatch agent,
/// which drops histograms ("The Prometheus metrics with the unsupported histogram metric type
/// are dropped by the CloudWatch agent", CloudWatch user guide, "Prometheus metric type
/// conversion by the CloudWatch agent") but sends a counter's deltas: the mean latency of a
/// period is this sum's delta over the delta of `rebuilder_requests_forwarded_total`.
pub(super) fn build(
    state: Arc<dyn SnapshotSource>,
    latency: Histogram,
    latency_sum: SecondsCounter,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(state)));
    registry.register(
        "rebuilder_upstream_latency_seconds",
        "Time from sending a request to the end of its response",
        latency,
    );
    registry.register(
        "rebuilder_upstream_response_seconds",
        "Sum of the times from sending a request to the end of its response (the latency \
         histogram's sum as a counter)",
        latency_sum,
    );
    registry
}

/// A new latency histogram with [`LATENCY_BUCKETS`].
pub(super) fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}
