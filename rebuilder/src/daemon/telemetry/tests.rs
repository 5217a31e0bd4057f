use super::*;
use crate::engine::stats::{DropReason, EngineStats};

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
fn every_request_anomaly_has_a_series_summed_over_workers() {
    use crate::engine::stats::{Anomalies, Anomaly};
    let t = Telemetry::new(2, 3);
    let mut stats = EngineStats::default();
    stats.count_anomalies(Anomalies::NONE.with(Anomaly::ObsFold));
    t.worker(0).publish(&WorkerCounters::default(), &stats, 0);
    t.worker(1).publish(&WorkerCounters::default(), &stats, 0);
    let text = t.render();
    for a in Anomaly::ALL {
        let series = format!(
            "rebuilder_request_anomalies_total{{kind=\"{}\"}}",
            a.as_str()
        );
        let want = if a == Anomaly::ObsFold { 2.0 } else { 0.0 };
        assert_eq!(value(&text, &series), want, "{series}");
    }
}

#[test]
fn response_counters_are_summed_and_every_missing_reason_has_a_series() {
    let t = Telemetry::new(2, 3);
    let mut stats = EngineStats::default();
    stats.responses = 5;
    stats.responses_paired = 4;
    stats.count_missing(crate::engine::stats::ResponseMissing::Gap);
    t.worker(0).publish(&WorkerCounters::default(), &stats, 0);
    t.worker(1).publish(&WorkerCounters::default(), &stats, 0);
    let text = t.render();
    assert_eq!(value(&text, "rebuilder_responses_parsed_total"), 10.0);
    assert_eq!(value(&text, "rebuilder_responses_paired_total"), 8.0);
    assert_eq!(
        value(&text, "rebuilder_responses_missing_total{reason=\"gap\"}"),
        2.0
    );
    for r in crate::engine::stats::ResponseMissing::ALL {
        let series = format!(
            "rebuilder_responses_missing_total{{reason=\"{}\"}}",
            r.as_str()
        );
        assert!(value(&text, &series) >= 0.0);
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
    // The histogram's sum again as a counter, for the CloudWatch agent (it drops histograms).
    let sum = value(&text, "rebuilder_upstream_response_seconds_total");
    assert!((sum - 20.0033).abs() < 1e-9, "{sum}");
    assert_eq!(sum, value(&text, "rebuilder_upstream_latency_seconds_sum"));
    assert!(
        text.lines().any(
            |l| l.starts_with("# TYPE rebuilder_upstream_response_seconds")
                && l.ends_with(" counter")
        ),
        "{text}"
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
fn liveness_follows_sockets_workers_forwarder_and_shutdown_not_the_upstream() {
    let t = Telemetry::new(2, 2);
    assert_eq!(t.health(), Err("no UDP socket bound"));
    t.set_sockets_bound(2);
    t.set_workers_expected(2);
    t.worker_started();
    assert_eq!(t.health(), Err("a receive worker stopped"));
    t.worker_started();
    assert_eq!(t.health(), Err("the forwarder is not running"));
    t.set_forwarder_running(true);
    assert_eq!(t.health(), Ok(()), "live before the upstream is reached");
    let up = |t: &Telemetry| value(&t.render(), "rebuilder_upstream_up");
    assert_eq!(up(&t), 0.0, "not reached yet");
    t.probe_result(true);
    assert_eq!(up(&t), 1.0);
    t.upstream_error(UpstreamErrorClass::Connect);
    assert_eq!(up(&t), 1.0, "one failure is below the threshold");
    t.upstream_error(UpstreamErrorClass::Timeout);
    assert_eq!(up(&t), 0.0);
    assert_eq!(t.health(), Ok(()), "the upstream is not part of liveness");
    assert_eq!(value(&t.render(), "rebuilder_healthy"), 1.0);
    t.request_forwarded(200, Duration::from_millis(1));
    assert_eq!(up(&t), 1.0);
    t.worker_stopped();
    assert_eq!(t.health(), Err("a receive worker stopped"));
    assert_eq!(value(&t.render(), "rebuilder_workers_alive"), 1.0);
    t.set_shutting_down();
    assert_eq!(t.health(), Err("shutting down"));
    assert_eq!(value(&t.render(), "rebuilder_healthy"), 0.0);
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

#[test]
fn per_source_series_are_labelled_by_eni_bounded_and_add_up_to_the_totals() {
    use crate::engine::source::SourceKey;
    use crate::sources::{SharedSources, SourceMap};
    let key = |last: u8| SourceKey {
        gwlbe: None,
        sender: Some(std::net::IpAddr::from([10, 0, 0, last])),
        vni: Some(7),
    };
    let doc = |enis: &[(u8, &str)]| {
        let sources: Vec<String> = enis
            .iter()
            .map(|(last, eni)| {
                format!(
                    r#"{{"eni":"{eni}","session":"tms-1","vni":7,"sender_ip":"10.0.0.{last}"}}"#
                )
            })
            .collect();
        format!(r#"{{"version":1,"sources":[{}]}}"#, sources.join(","))
    };
    let map =
        SourceMap::parse(doc(&[(1, "eni-01"), (2, "eni-02"), (3, "eni-03")]).as_bytes()).unwrap();
    let t = Telemetry::new(2, 3);
    t.set_sources(std::sync::Arc::new(SharedSources::new(map)), 2);
    // Worker 0: eni-01 heavy, eni-02 light, 10.0.0.9 not in the map; worker 1: eni-03.
    let mut s0 = EngineStats::default();
    for (last, n, len) in [(1u8, 5, 1000u64), (2, 2, 100), (9, 1, 50)] {
        for _ in 0..n {
            s0.count_packet(key(last), len);
            s0.count_request();
        }
    }
    s0.count_drop(DropReason::MessageGap);
    let mut c0 = WorkerCounters {
        source_queue_drops: workers::SourceQueueDrops::new(16),
        queue_full: 2,
        ..WorkerCounters::default()
    };
    c0.source_queue_drops.count(key(1), false);
    c0.source_queue_drops.count(key(9), false);
    t.worker(0).publish(&c0, &s0, 0);
    let text = t.render();
    // Two slots: the heaviest two ENIs seen; nothing labelled eni-03 yet.
    assert_eq!(
        value(&text, "rebuilder_source_datagrams_total{eni=\"eni-01\"}"),
        5.0
    );
    assert_eq!(
        value(&text, "rebuilder_source_bytes_total{eni=\"eni-02\"}"),
        200.0
    );
    assert_eq!(
        value(&text, "rebuilder_source_datagrams_total{eni=\"unknown\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "rebuilder_source_drops_total{eni=\"unknown\",reason=\"message_gap\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "rebuilder_source_requests_dropped_total{eni=\"eni-01\",reason=\"queue_full\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "rebuilder_source_requests_dropped_total{eni=\"unknown\",reason=\"queue_full\"}"
        ),
        1.0
    );
    // eni-03 arrives later and heavier: the slots are kept (monotonic series), it is "other".
    let mut s1 = EngineStats::default();
    for _ in 0..50 {
        s1.count_packet(key(3), 9000);
    }
    t.worker(1).publish(&WorkerCounters::default(), &s1, 0);
    let text = t.render();
    assert!(!text.contains("eni=\"eni-03\""));
    assert_eq!(
        value(&text, "rebuilder_source_datagrams_total{eni=\"other\"}"),
        50.0
    );
    let sum = |family: &str| -> f64 {
        samples(&text)
            .into_iter()
            .filter(|(s, _)| s.starts_with(&format!("{family}{{")))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(
        sum("rebuilder_source_datagrams_total"),
        value(&text, "rebuilder_packets_decoded_total")
    );
    assert_eq!(
        sum("rebuilder_source_bytes_total"),
        value(&text, "rebuilder_packet_bytes_total")
    );
    assert_eq!(sum("rebuilder_source_requests_total"), 8.0);
    assert_eq!(
        sum("rebuilder_source_requests_dropped_total"),
        value(
            &text,
            "rebuilder_requests_dropped_total{reason=\"queue_full\"}"
        )
    );
}
