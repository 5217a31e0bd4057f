//! `rebuilder run --sources-file`: records name the mirrored ENI their key belongs to (or the
//! key with `"eni": null`), the map is re-read when the file is replaced, without a restart
//! and without losing a flow, a document of an unknown version leaves the map in force, and
//! the per-source metrics add up to the totals.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use rebuilder_testkit::analyzer::Analyzer;
use rebuilder_testkit::daemon::RebuilderProc;
use rebuilder_testkit::frames::TcpConn;
use rebuilder_testkit::system::wait_until;

/// A source map (version `version`) with these (eni, sender address, instance name) entries,
/// all on VNI 7.
fn map(version: u32, entries: &[(&str, &str, &str)]) -> String {
    let sources: Vec<serde_json::Value> = entries
        .iter()
        .map(|(eni, ip, name)| {
            serde_json::json!({
                "eni": eni, "session": format!("tms-{}", &eni[4..]), "vni": 7,
                "sender_ip": ip, "vpc": "vpc-1", "subnet": "subnet-1", "az": "us-east-1a",
                "gwlbe": null, "instance": {"id": "i-0abc", "name": name},
                "load_balancer": null, "eks_cluster": "prod", "asg": null,
                "tags": {"app": name}
            })
        })
        .collect();
    serde_json::json!({
        "version": version, "generated_at": "2026-12-03T09:40:00Z", "owner": "test",
        "target": {"id": "tmt-1", "kind": "network_load_balancer", "gwlbe": null},
        "sources": sources
    })
    .to_string()
}

/// Replaces `path` as the fetch script does: written beside it, renamed over it.
fn put(path: &Path, body: &str) {
    let tmp = path.with_extension("download");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A fresh directory for a test's source map file, and the file's path (not created).
fn map_file(test: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("rebuilder-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sources.json");
    let _ = std::fs::remove_file(&path);
    (dir, path)
}

/// A UDP socket on loopback address `ip` (a mirrored ENI's primary address, as the VXLAN
/// sender).
struct Eni {
    sock: UdpSocket,
    to: SocketAddr,
}

impl Eni {
    fn new(ip: &str, to: SocketAddr) -> Eni {
        Eni {
            sock: UdpSocket::bind((ip, 0)).unwrap(),
            to,
        }
    }
    fn send(&self, datagrams: &[Vec<u8>]) {
        for d in datagrams {
            self.sock.send_to(d, self.to).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// `rebuilder run` with the ndjson sink to `collector` (flushed every 100 ms), the source map
/// at `map`, and `extra` arguments.
fn ndjson_daemon(collector: &Analyzer, map: &Path, extra: &[&str]) -> RebuilderProc {
    let mut args = vec![
        "--sink",
        "ndjson",
        "--sink-flush-ms",
        "100",
        "--sources-file",
        map.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    RebuilderProc::start(&collector.url(), &args)
}

/// Stops the daemon (it must exit cleanly) and removes the test's directory.
fn stop(p: &mut RebuilderProc, dir: &Path) {
    assert!(
        p.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn records_name_the_source_and_a_replaced_map_applies_to_later_records_without_losing_flows() {
    // The map appears after the start (the timer's first fetch may come later).
    let (dir, path) = map_file("daemon-sources");
    let collector = Analyzer::loopback();
    let mut p = ndjson_daemon(
        &collector,
        &path,
        &[
            "--workers",
            "1",
            "--sources-poll-ms",
            "50",
            "--source-metrics-top",
            "1",
        ],
    );
    put(
        &path,
        &map(
            1,
            &[
                ("eni-0aaa", "127.0.0.2", "web-1"),
                ("eni-0ccc", "127.0.0.4", "db-1"),
            ],
        ),
    );
    assert!(wait_until(Duration::from_secs(10), || {
        p.metrics().get("rebuilder_source_map_loads_total") >= 1
    }));
    let a = Eni::new("127.0.0.2", p.udp);
    let b = Eni::new("127.0.0.3", p.udp);
    let c = Eni::new("127.0.0.4", p.udp);
    let mut ca = TcpConn::new(7, "10.1.0.1:40000", "10.1.0.9:80", 1000);
    let mut cb = TcpConn::new(7, "10.1.0.2:40000", "10.1.0.9:80", 2000);
    let mut cc = TcpConn::new(7, "10.1.0.3:40000", "10.1.0.9:80", 3000);
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut d = ca.open();
    d.push(ca.send(b"GET /a1 HTTP/1.1\r\nHost: h\r\n\r\n"));
    d.push(ca.respond(ok));
    a.send(&d);
    let lines = || collector.ndjson_lines();
    let by = |t: &str| lines().into_iter().find(|v| v["target"] == t);
    assert!(wait_until(Duration::from_secs(15), || by("/a1").is_some()));
    // A scrape gives eni-0aaa the one label slot; heavier sources seen later do not take it.
    assert!(wait_until(Duration::from_secs(5), || {
        p.metrics()
            .get("rebuilder_source_requests_total{eni=\"eni-0aaa\"}")
            == 1
    }));
    let mut d = cb.open();
    d.push(cb.send(b"GET /b1 HTTP/1.1\r\nHost: h\r\n\r\n"));
    d.push(cb.respond(ok));
    // A request whose response only comes after the map is replaced: a flow across the
    // reload.
    d.push(cb.send(b"GET /b2 HTTP/1.1\r\nHost: h\r\n\r\n"));
    b.send(&d);
    assert!(
        wait_until(Duration::from_secs(15), || by("/a1").is_some()
            && by("/b1").is_some()),
        "{:?}",
        lines()
    );
    let a1 = by("/a1").unwrap();
    assert_eq!(a1["source"]["eni"], "eni-0aaa");
    assert_eq!(a1["source"]["instance"]["name"], "web-1");
    assert_eq!(a1["source"]["eks_cluster"], "prod");
    assert_eq!(a1["mirror_source"], "127.0.0.2");
    let b1 = by("/b1").unwrap();
    assert_eq!(
        b1["source"],
        serde_json::json!({"eni": null, "sender_ip": "127.0.0.3", "vni": 7, "gwlbe": null}),
        "a key not in the map is reported with the key"
    );

    // The new map names 127.0.0.3.
    put(
        &path,
        &map(
            1,
            &[
                ("eni-0aaa", "127.0.0.2", "web-1"),
                ("eni-0bbb", "127.0.0.3", "api-1"),
                ("eni-0ccc", "127.0.0.4", "db-1"),
            ],
        ),
    );
    assert!(wait_until(Duration::from_secs(10), || {
        p.metrics().get("rebuilder_source_map_loads_total") >= 2
    }));
    let mut d = vec![cb.respond(ok)];
    d.push(cb.send(b"GET /b3 HTTP/1.1\r\nHost: h\r\n\r\n"));
    d.push(cb.respond(ok));
    b.send(&d);
    let mut d = cc.open();
    for i in 0..3 {
        d.push(cc.send(format!("GET /c{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()));
        d.push(cc.respond(ok));
    }
    c.send(&d);
    assert!(
        wait_until(Duration::from_secs(15), || ["/b2", "/b3", "/c2"]
            .iter()
            .all(|t| by(t).is_some())),
        "{:?}",
        lines()
    );
    for t in ["/b2", "/b3"] {
        let r = by(t).unwrap();
        assert_eq!(r["source"]["eni"], "eni-0bbb", "{t}");
        assert_eq!(
            r["response"]["status"], 200,
            "{t}: the flow went on across the reload"
        );
    }
    assert_eq!(by("/c0").unwrap()["source"]["tags"]["app"], "db-1");

    // A version this rebuilder does not know: refused, the map in force stays.
    put(&path, &map(2, &[("eni-0fff", "127.0.0.3", "other")]));
    assert!(wait_until(Duration::from_secs(10), || {
        p.metrics().get("rebuilder_source_map_load_errors_total") >= 1
    }));
    let mut d = vec![cb.send(b"GET /b4 HTTP/1.1\r\nHost: h\r\n\r\n")];
    d.push(cb.respond(ok));
    b.send(&d);
    assert!(wait_until(Duration::from_secs(15), || by("/b4").is_some()));
    assert_eq!(by("/b4").unwrap()["source"]["eni"], "eni-0bbb");

    // Every request arrived once.
    let all = lines();
    assert_eq!(all.len(), 8, "{all:?}");

    // Per-source metrics: one ENI labelled (--source-metrics-top 1: eni-0aaa, the first seen),
    // the others under "other"; they add up to the totals.
    let m = p.wait_metrics(Duration::from_secs(5), "every request paired", |m| {
        m.sum("rebuilder_source_requests_paired_total") >= 8
    });
    assert_eq!(
        m.get("rebuilder_source_requests_total{eni=\"eni-0aaa\"}"),
        1
    );
    assert_eq!(m.get("rebuilder_source_requests_total{eni=\"other\"}"), 7);
    assert_eq!(m.get("rebuilder_source_requests_total{eni=\"unknown\"}"), 0);
    assert!(!m.text.contains("eni=\"eni-0bbb\""), "bounded: {}", m.text);
    assert_eq!(
        m.sum("rebuilder_source_datagrams_total"),
        m.get("rebuilder_packets_decoded_total")
    );
    assert_eq!(
        m.sum("rebuilder_source_bytes_total"),
        m.get("rebuilder_packet_bytes_total")
    );
    assert_eq!(
        m.sum("rebuilder_source_drops_total"),
        m.sum("rebuilder_decode_drops_total")
    );
    assert_eq!(
        m.value("rebuilder_source_requests_complete_ratio{eni=\"eni-0aaa\"}"),
        Some(1.0)
    );
    assert_eq!(m.get("rebuilder_source_map_entries"), 3);
    stop(&mut p, &dir);
}

#[test]
fn the_http_replay_sink_carries_the_source_as_headers_when_asked() {
    let (dir, path) = map_file("daemon-source-headers");
    put(&path, &map(1, &[("eni-0aaa", "127.0.0.2", "web-1")]));
    let analyzer = Analyzer::loopback();
    let mut p = RebuilderProc::start(
        &analyzer.url(),
        &[
            "--workers",
            "1",
            "--server-wait-us",
            "100000",
            "--sources-file",
            path.to_str().unwrap(),
            "--source-headers",
        ],
    );
    let a = Eni::new("127.0.0.2", p.udp);
    let b = Eni::new("127.0.0.3", p.udp);
    let mut ca = TcpConn::new(7, "10.1.0.1:40000", "10.1.0.9:80", 1000);
    let mut cb = TcpConn::new(7, "10.1.0.2:40000", "10.1.0.9:80", 2000);
    let mut d = ca.open();
    d.push(ca.send(b"GET /a HTTP/1.1\r\nHost: h\r\nX-Rebuilder-Source-Eni: forged\r\n\r\n"));
    a.send(&d);
    let mut d = cb.open();
    d.push(cb.send(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"));
    b.send(&d);
    assert!(wait_until(Duration::from_secs(15), || analyzer
        .records()
        .len()
        >= 2));
    let records = analyzer.records();
    let by = |t: &str| records.iter().find(|r| r.target == t).unwrap();
    let ra = by("/a");
    assert_eq!(ra.first_header("x-rebuilder-source-eni"), Some("eni-0aaa"));
    assert_eq!(
        ra.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-rebuilder-source-eni"))
            .count(),
        1,
        "the client's forged field is removed"
    );
    let src: serde_json::Value =
        serde_json::from_str(ra.first_header("x-rebuilder-source").unwrap()).unwrap();
    assert_eq!(src["instance"]["name"], "web-1");
    let rb = by("/b");
    assert_eq!(rb.first_header("x-rebuilder-source-eni"), Some("unknown"));
    let src: serde_json::Value =
        serde_json::from_str(rb.first_header("x-rebuilder-source").unwrap()).unwrap();
    assert_eq!(src["sender_ip"], "127.0.0.3");
    assert_eq!(src["eni"], serde_json::Value::Null);
    stop(&mut p, &dir);
}

#[test]
fn a_request_mirrored_at_the_load_balancer_and_at_its_target_is_one_record_with_via() {
    let (dir, path) = map_file("daemon-dedup");
    let mut doc: serde_json::Value = serde_json::from_str(&map(
        1,
        &[
            ("eni-0a1b", "127.0.0.5", "alb"),
            ("eni-0c2d", "127.0.0.7", "web-1"),
        ],
    ))
    .unwrap();
    // The first ENI is the load balancer's (no instance; ELB describes it).
    doc["sources"][0]["instance"] = serde_json::Value::Null;
    doc["sources"][0]["load_balancer"] =
        serde_json::json!({"type": "app", "name": "shop", "id": "50dc6c495c0c9188"});
    put(&path, &doc.to_string());
    let collector = Analyzer::loopback();
    let mut p = ndjson_daemon(
        &collector,
        &path,
        &["--workers", "2", "--dedup", "--dedup-window-ms", "1500"],
    );
    assert!(wait_until(Duration::from_secs(10), || {
        p.metrics().get("rebuilder_source_map_entries") == 2
    }));
    let alb = Eni::new("127.0.0.5", p.udp);
    let web = Eni::new("127.0.0.7", p.udp);
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // Client -> ALB node 10.0.0.5 (mirrored at the ALB's ENI), ALB -> target (at the
    // target's ENI), with the fields the ALB adds.
    let mut front = TcpConn::new(7, "203.0.113.9:51000", "10.0.0.5:80", 1000);
    let mut back = TcpConn::new(7, "10.0.0.5:33000", "10.0.1.7:8080", 9000);
    let body = "amount=10";
    let client_req = format!(
        "POST /pay HTTP/1.1\r\nHost: shop.example\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let target_req = format!(
        "POST /pay HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: http\r\n\
         X-Forwarded-Port: 80\r\nHost: shop.example\r\n\
         X-Amzn-Trace-Id: Root=1-67891233-abcdef012345678912345678\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut d_front = front.open();
    d_front.push(front.send(client_req.as_bytes()));
    alb.send(&d_front);
    let mut d_back = back.open();
    d_back.push(back.send(target_req.as_bytes()));
    d_back.push(back.respond(ok));
    web.send(&d_back);
    alb.send(&[front.respond(ok)]);
    // A request only the target's ENI saw (its load balancer copy was lost): out alone
    // after the window.
    let lone_req = target_req.replace("/pay", "/lone");
    let mut d = vec![back.send(lone_req.as_bytes())];
    d.push(back.respond(ok));
    web.send(&d);
    let lines = || collector.ndjson_lines();
    assert!(
        wait_until(Duration::from_secs(15), || lines().len() >= 2),
        "{:?}",
        lines()
    );
    // Nothing more comes.
    std::thread::sleep(Duration::from_millis(2000));
    let all = lines();
    assert_eq!(all.len(), 2, "{all:?}");
    let pay = all.iter().find(|v| v["target"] == "/pay").unwrap();
    assert_eq!(
        pay["source"]["eni"], "eni-0c2d",
        "the target's copy is kept"
    );
    assert_eq!(pay["mirror_source"], "127.0.0.7");
    assert_eq!(pay["via"]["eni"], "eni-0a1b");
    assert_eq!(pay["via"]["load_balancer"]["name"], "shop");
    assert_eq!(pay["response"]["status"], 200);
    let lone = all.iter().find(|v| v["target"] == "/lone").unwrap();
    assert!(lone.get("via").is_none());
    let m = p.wait_metrics(Duration::from_secs(5), "collapsed", |m| {
        m.get("rebuilder_duplicates_collapsed_total") == 1
    });
    assert_eq!(m.get("rebuilder_dedup_released_total"), 1);
    assert_eq!(m.get("rebuilder_dedup_held_bytes"), 0);
    stop(&mut p, &dir);
}
