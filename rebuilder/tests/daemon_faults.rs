//! Fault tests of `rebuilder run` over loopback UDP: the upstream goes down or gets slow, garbage
//! and SYN floods arrive. The caps hold, every loss is counted, delivery resumes by itself, and
//! the instance stays live (`/healthz` 200) throughout: the upstream's state is
//! `rebuilder_upstream_up`.

use std::time::Duration;

use rebuilder::DropReason;
use rebuilder::daemon::telemetry::{RequestDropReason, UpstreamErrorClass};
use rebuilder_testkit::analyzer::Analyzer;
use rebuilder_testkit::daemon::{RebuilderProc, rebuilder_bin};
use rebuilder_testkit::frames::{TcpFlags, TcpFrame, vxlan_datagram};
use rebuilder_testkit::metrics::{Metrics, http_get};
use rebuilder_testkit::system::wait_until;
use rebuilder_testkit::traffic::{Pacer, Sender, synth_payloads};

fn send_all(sender: &Sender, payloads: &[(u16, Vec<u8>)], pps: u64) {
    let pacer = Pacer::new(pps);
    for (i, (sport, p)) in payloads.iter().enumerate() {
        pacer.wait(i as u64);
        sender.send(*sport, p);
    }
}

fn extracted(m: &Metrics) -> u64 {
    m.get("rebuilder_requests_extracted_total")
}

/// Extracted requests not yet delivered nor dropped.
fn pending(m: &Metrics) -> u64 {
    m.get("rebuilder_queue_depth") + m.get("rebuilder_upstream_in_flight")
}

/// Everything that happened to extracted requests: delivered or dropped for a counted reason.
fn accounted(m: &Metrics) -> u64 {
    m.forwarded() + m.dropped_total()
}

fn upstream_up(m: &Metrics) -> bool {
    m.get("rebuilder_upstream_up") == 1
}

#[test]
fn upstream_down_drops_are_counted_memory_stays_bounded_and_delivery_resumes() {
    let mut sink = Analyzer::loopback();
    let upstream = sink.url();
    sink.stop();
    let p = RebuilderProc::start(
        &upstream,
        &[
            "--workers",
            "2",
            "--queue-capacity",
            "64",
            "--concurrency",
            "4",
            "--health-probe-interval-ms",
            "200",
            "--failure-backoff-ms",
            "50",
            "--connect-timeout-ms",
            "300",
        ],
    );
    p.wait_metrics(Duration::from_secs(10), "upstream reported down", |m| {
        !upstream_up(m) && m.upstream_errors(UpstreamErrorClass::Connect) > 0
    });
    let (status, body) = http_get(p.admin, "/healthz").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "ok\n"),
        "an upstream outage is not a fleet outage"
    );
    let rss_before = p.rss_kib();

    // ~2,500 requests with bodies up to 32 KB (~40 MB of requests) while the upstream is down.
    let (payloads, expected) = synth_payloads(11, 800, 32_000);
    let sender = Sender::new(p.udp, 8).unwrap();
    send_all(&sender, &payloads, 40_000);
    let m = p.wait_metrics(Duration::from_secs(30), "every request accounted", |m| {
        extracted(m) == expected as u64 && accounted(m) + pending(m) == expected as u64
    });
    assert_eq!(m.forwarded(), 0);
    assert!(
        m.dropped(RequestDropReason::QueueFull) > 0,
        "the small queue overflowed"
    );
    assert!(m.upstream_errors(UpstreamErrorClass::Connect) > 0);
    assert_eq!(
        m.dropped(RequestDropReason::UpstreamConnect),
        0,
        "senders connect before taking a request: nothing is burnt on connect errors"
    );
    assert!(pending(&m) > 0, "the oldest requests wait in the queue");
    assert!(
        m.upstream_errors(UpstreamErrorClass::Connect) < expected as u64 / 4,
        "no retry storm: {} connect attempts for {expected} requests",
        m.upstream_errors(UpstreamErrorClass::Connect)
    );
    let growth_mib = p.rss_kib().saturating_sub(rss_before) / 1024;
    assert!(
        growth_mib < 24,
        "RSS grew by {growth_mib} MiB although the queue holds 64 requests"
    );
    assert_eq!(p.healthz(), 200);
    assert!(!upstream_up(&p.metrics()));

    // The upstream comes back: it is reported up and new traffic is delivered, all of it.
    sink.restart().unwrap();
    p.wait_upstream_up(Duration::from_secs(10));
    // What was still queued from the outage is delivered (or dropped) first.
    let before = p.wait_metrics(Duration::from_secs(20), "queue drained", |m| {
        pending(m) == 0
    });
    let sink_before = sink.received();
    let (payloads, expected2) = synth_payloads(12, 60, 1000);
    send_all(&sender, &payloads, 5_000);
    assert!(
        wait_until(Duration::from_secs(20), || sink.received() - sink_before
            >= expected2 as u64),
        "sink got {} of {expected2}",
        sink.received() - sink_before
    );
    let after = p.wait_metrics(Duration::from_secs(5), "forwarded", |m| {
        m.forwarded() - before.forwarded() == expected2 as u64
    });
    assert_eq!(accounted(&after) - accounted(&before), expected2 as u64);
    assert_eq!(sink.received() - sink_before, expected2 as u64);
}

#[test]
fn slow_upstream_times_out_drops_are_counted_and_delivery_resumes() {
    let sink = Analyzer::loopback();
    sink.set_delay(Duration::from_millis(1500));
    let p = RebuilderProc::start(
        &sink.url(),
        &[
            "--workers",
            "1",
            "--queue-capacity",
            "32",
            "--concurrency",
            "8",
            "--request-timeout-ms",
            "400",
            "--failure-backoff-ms",
            "50",
            "--health-probe-interval-ms",
            "10000",
        ],
    );
    let rss_before = p.rss_kib();
    let (payloads, expected) = synth_payloads(21, 500, 16_000);
    let sender = Sender::new(p.udp, 4).unwrap();
    send_all(&sender, &payloads, 40_000);
    let m = p.wait_metrics(Duration::from_secs(40), "every request accounted", |m| {
        extracted(m) == expected as u64
            && accounted(m) + pending(m) == expected as u64
            && m.dropped(RequestDropReason::UpstreamTimeout) > 0
    });
    assert!(m.dropped(RequestDropReason::UpstreamTimeout) > 0);
    assert!(m.upstream_errors(UpstreamErrorClass::Timeout) > 0);
    assert!(m.dropped(RequestDropReason::QueueFull) > 0);
    // Timeouts make the upstream count as down, not the instance.
    p.wait_metrics(Duration::from_secs(10), "upstream reported down", |m| {
        !upstream_up(m)
    });
    assert_eq!(p.healthz(), 200);
    let growth_mib = p.rss_kib().saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 24, "RSS grew by {growth_mib} MiB");

    // Fast again: delivery resumes by itself.
    sink.set_delay(Duration::from_millis(0));
    let before = p.wait_metrics(Duration::from_secs(30), "queue drained", |m| {
        pending(m) == 0
    });
    let before_sink = sink.received();
    let (payloads, expected2) = synth_payloads(22, 40, 1000);
    send_all(&sender, &payloads, 2_000);
    let after = p.wait_metrics(Duration::from_secs(30), "second batch accounted", |m| {
        accounted(m) - accounted(&before) == expected2 as u64
    });
    assert_eq!(
        after.forwarded() - before.forwarded(),
        expected2 as u64,
        "every request of the second batch delivered: {}",
        after.text
    );
    assert!(sink.received() >= before_sink + expected2 as u64);
    p.wait_upstream_up(Duration::from_secs(5));
}

/// The VXLAN datagram of one inner TCP segment (a SYN, or data with ACK and PSH).
fn tcp_datagram(src: [u8; 4], sport: u16, flags_syn: bool, seq: u32, payload: &[u8]) -> Vec<u8> {
    let flags = if flags_syn {
        TcpFlags::SYN
    } else {
        TcpFlags::ack(1).psh()
    };
    let frame = TcpFrame::new((src, sport).into(), ([10, 9, 9, 9], 80).into(), seq)
        .flags(flags)
        .build(payload);
    vxlan_datagram(4242, &frame)
}

#[test]
fn garbage_and_syn_floods_hold_the_caps_and_count_evictions() {
    let sink = Analyzer::loopback();
    let p = RebuilderProc::start(&sink.url(), &["--workers", "2", "--max-flows", "500"]);
    let sender = Sender::new(p.udp, 8).unwrap();

    // Garbage: random bytes, short datagrams, bad VXLAN flags, VXLAN with junk inside.
    let mut rng = rebuilder::offline::synth::SplitMix64::new(7);
    let mut n_garbage = 0u64;
    for i in 0..30_000u64 {
        let len = rng.range(0, 200);
        let mut d: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if i % 3 == 0 && d.len() >= 8 {
            d[0] = 0x08; // valid VXLAN flags, junk inner frame
        }
        sender.send(i as u16, &d);
        n_garbage += 1;
    }
    let m = p.wait_metrics(Duration::from_secs(20), "garbage received", |m| {
        m.get("rebuilder_datagrams_received_total") + m.get("rebuilder_kernel_drops_total")
            >= n_garbage
    });
    let decode_drops: u64 = [
        DropReason::VxlanMalformed,
        DropReason::MalformedPacket,
        DropReason::NonTcp,
        DropReason::IpFragment,
    ]
    .into_iter()
    .map(|r| m.decode_drops(r))
    .sum();
    assert!(
        decode_drops > 20_000,
        "garbage counted as decode drops:\n{}",
        m.text
    );
    assert_eq!(m.get("rebuilder_requests_extracted_total"), 0);

    // SYN flood with partial request heads: 20,000 flows against a cap of 500 per worker.
    for i in 0..20_000u32 {
        let src = [10, 1, (i >> 8) as u8, i as u8];
        let sport = 1024 + (i % 60_000) as u16;
        sender.send(sport, &tcp_datagram(src, sport, true, 1000, b""));
        sender.send(
            sport,
            &tcp_datagram(src, sport, false, 1001, b"GET /partial HTTP/1.1\r\nHo"),
        );
    }
    let m = p.wait_metrics(Duration::from_secs(20), "flood processed", |m| {
        m.get("rebuilder_packets_decoded_total") + m.get("rebuilder_kernel_drops_total")
            >= n_garbage + 40_000
    });
    assert!(
        m.get("rebuilder_flows_active") <= 2 * 500,
        "flow cap holds: {}",
        m.get("rebuilder_flows_active")
    );
    // Every SYN flow the kernel delivered beyond the cap evicts an older one (the kernel may
    // drop a few datagrams when this machine is busy; they are counted).
    let lost = m.get("rebuilder_kernel_drops_total");
    assert!(
        m.get("rebuilder_flows_evicted_total") + lost >= 19_000 - 2 * 500,
        "evictions counted:\n{}",
        m.text
    );
    assert_eq!(
        p.healthz(),
        200,
        "floods do not make the instance unhealthy"
    );

    // Real traffic still gets through afterwards.
    let (payloads, expected) = synth_payloads(31, 30, 500);
    for (sport, d) in &payloads {
        sender.send(*sport, d);
    }
    assert!(
        wait_until(Duration::from_secs(15), || sink.received()
            >= expected as u64),
        "after the flood: sink got {} of {expected}",
        sink.received()
    );
}

/// A rebuilder (one worker, two senders, `extra` flags) forwarding to an analyzer that answers
/// after `delay`, fed the `connections` of seed `seed` until every request is extracted:
/// (analyzer, rebuilder, requests).
fn loaded(
    delay: Duration,
    extra: &[&str],
    seed: u64,
    connections: usize,
) -> (Analyzer, RebuilderProc, usize) {
    let sink = Analyzer::loopback();
    sink.set_delay(delay);
    let mut args = vec!["--workers", "1", "--concurrency", "2"];
    args.extend_from_slice(extra);
    let p = RebuilderProc::start(&sink.url(), &args);
    let (payloads, expected) = synth_payloads(seed, connections, 500);
    let sender = Sender::new(p.udp, 2).unwrap();
    for (sport, d) in &payloads {
        sender.send(*sport, d);
    }
    p.wait_metrics(Duration::from_secs(10), "all extracted", |m| {
        m.get("rebuilder_requests_extracted_total") == expected as u64
    });
    (sink, p, expected)
}

#[test]
fn sigterm_drains_the_queue_and_exits_zero() {
    let (sink, mut p, expected) = loaded(
        Duration::from_millis(20),
        &["--drain-timeout-ms", "20000"],
        41,
        40,
    );
    // With 2 in flight and 20 ms each, a queue is still waiting now.
    let st = p
        .terminate(Duration::from_secs(30))
        .expect("exits within the deadline");
    assert!(st.success(), "exit status {st:?}");
    assert_eq!(
        sink.received(),
        expected as u64,
        "the queue was drained before exit"
    );
}

#[test]
fn sigterm_with_a_dead_upstream_exits_zero_by_the_deadline() {
    let (mut sink, mut p, _) = loaded(
        Duration::from_secs(60),
        &[
            "--request-timeout-ms",
            "60000",
            "--drain-timeout-ms",
            "1000",
        ],
        42,
        20,
    );
    let t = std::time::Instant::now();
    let st = p.terminate(Duration::from_secs(15)).expect("exits");
    assert!(st.success(), "exit status {st:?}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    sink.stop();
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let out = std::process::Command::new(rebuilder_bin())
        .args(["run", "--upstream", "ftp://x", "--admin", "127.0.0.1:0"])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ftp://x"), "{err}");

    let out = std::process::Command::new(rebuilder_bin())
        .args(["run"])
        .env("REBUILDER_UPSTREAM", "http://127.0.0.1:1")
        .env("REBUILDER_EXTRA_HEADERS", "no-colon-here")
        .env("REBUILDER_ADMIN", "127.0.0.1:0")
        .env("REBUILDER_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-colon-here"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    use std::io::{BufRead, BufReader};
    let sink = Analyzer::loopback();
    let mut child = std::process::Command::new(rebuilder_bin())
        .args(["run", "--log-format", "json", "--log-filter", "info"])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--upstream", &sink.url()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Every line is a JSON object (a warning, e.g. a clamped receive buffer when not root, may
    // come first); the start-up line names the bound addresses.
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut started = None;
    for _ in 0..20 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
        if v["message"] == "rebuilder running" {
            started = Some((v, line));
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let (v, line) = started.expect("the start-up line was logged");
    assert_eq!(v["level"], "INFO", "{line}");
    assert!(v["udp"].as_str().unwrap().contains("127.0.0.1:"), "{line}");
}
