//! `rebuilder run --sink ndjson` over loopback UDP: transactions (request + response, or the
//! reason the response is missing) arrive at the collector as gzip-compressed JSON lines, the
//! objects of `rebuilder replay --format jsonl`, and every line is counted.

use std::time::Duration;

use rebuilder_testkit::analyzer::Analyzer;
use rebuilder_testkit::daemon::RebuilderProc;
use rebuilder_testkit::frames::TcpConn;
use rebuilder_testkit::system::wait_until;
use rebuilder_testkit::traffic::Sender;

#[test]
fn ndjson_sink_posts_paired_transactions_as_gzip_json_lines() {
    let collector = Analyzer::loopback();
    let mut p = RebuilderProc::start(
        &collector.url(),
        &[
            "--sink",
            "ndjson",
            "--sink-gzip",
            "--sink-with-body",
            "--sink-flush-ms",
            "200",
            "--server-wait-us",
            "200000",
            "--workers",
            "1",
        ],
    );
    let sender = Sender::new(p.udp, 1).unwrap();
    let mut c = TcpConn::new(7, "10.1.0.1:40000", "10.1.0.2:80", 1000);
    let mut d = c.open();
    d.push(c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"));
    d.push(c.send(b"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"));
    // A connection whose server direction goes elsewhere (another rebuilder).
    let mut lone = TcpConn::new(7, "10.1.0.3:40001", "10.1.0.2:80", 5);
    d.push(lone.syn());
    d.push(lone.send(b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"));
    for datagram in &d {
        sender.send(50_000, datagram);
        std::thread::sleep(Duration::from_millis(2));
    }
    let lines = || collector.ndjson_lines();
    assert!(
        wait_until(Duration::from_secs(15), || lines().len() >= 3),
        "lines: {:?}",
        lines()
    );
    let records = collector.records();
    assert!(records.iter().all(|r| r.method == "POST"
        && r.first_header("content-type") == Some("application/x-ndjson")
        && r.first_header("content-encoding") == Some("gzip")));
    let all = lines();
    let by = |t: &str| all.iter().find(|v| v["target"] == t).unwrap().clone();
    let a = by("/a");
    assert_eq!(a["response"]["status"], 404);
    assert_eq!(a["response"]["body_b64"], "bm9wZQ==");
    assert_eq!(a["vni"], 7);
    assert!(a["latency_ms"].as_f64().unwrap() >= 0.0);
    let b = by("/b");
    assert_eq!(b["response"]["status"], 200);
    assert_eq!(b["response"]["body_len"], 0);
    let lone_line = by("/c");
    assert_eq!(lone_line["response"], serde_json::Value::Null);
    assert_eq!(lone_line["response_missing"], "server_not_seen");
    let m = p.wait_metrics(Duration::from_secs(5), "responses paired", |m| {
        m.get("rebuilder_responses_paired_total") >= 2
    });
    assert_eq!(
        m.get("rebuilder_responses_missing_total{reason=\"server_not_seen\"}"),
        1
    );
    assert!(m.forwarded() >= 3, "every line counts as forwarded");
    assert!(
        p.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}
