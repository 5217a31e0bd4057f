//! End to end through the kernel: a client namespace sends real HTTP (curl and a pipelining
//! client) to a server namespace; the server's veth is mirrored by tc into a VXLAN device
//! whose remote is a collector namespace running the real `rebuilder run`, which forwards to
//! the recording analyzer. Every request must arrive exactly once with the right method,
//! target, Host, body and X-Forwarded-For.
//!
//! Needs root, `ip`, `tc`, `ethtool` and `curl` (the prerequisite policy of
//! `rebuilder_testkit::system`: skipped, or failed under `MIRRORFLEET_REQUIRE_SYSTEM=1`).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use rebuilder::daemon::telemetry::StatusClass;
use rebuilder_testkit::analyzer::{Analyzer, Recorded};
use rebuilder_testkit::daemon::rebuilder_bin;
use rebuilder_testkit::metrics::Metrics;
use rebuilder_testkit::netns::{self, LabSpec, MirrorLab};
use rebuilder_testkit::system::{self, Proc, TempDir};

/// Where the analyzer listens in the collector namespace.
const ANALYZER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);

const NAME: &str = "netns_mirrored_http_reaches_the_analyzer_exactly_once";

/// The pipelining client: three requests in one write, then the three responses read;
/// returns how many 200s came back.
fn pipeline(server: SocketAddr) -> usize {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /pipe/1 HTTP/1.1\r\nHost: pipe.example\r\n\r\n\
          POST /pipe/2 HTTP/1.1\r\nHost: pipe.example\r\nContent-Length: 11\r\n\r\npipe-body-2\
          GET /pipe/3 HTTP/1.1\r\nHost: pipe.example\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut data = Vec::new();
    let mut chunk = [0u8; 65536];
    let count = |d: &[u8]| d.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
    while count(&data) < 3 {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    }
    count(&data)
}

/// One expected request.
struct Want {
    method: &'static str,
    target: &'static str,
    host: &'static str,
    body: Vec<u8>,
    /// Expected X-Forwarded-For value.
    xff: String,
}

#[test]
fn netns_mirrored_http_reaches_the_analyzer_exactly_once() {
    if !system::require(NAME, netns::check().and(system::tools(&["curl"]))) {
        return;
    }
    let tmp = TempDir::new("mf-e2e").unwrap();
    let dir = tmp.path();
    let lab = MirrorLab::up(&LabSpec::new(&system::unique("mfe"), 4242)).expect("the lab");
    let (c, s, r) = (lab.client(), lab.server(), lab.collector());
    let server = SocketAddr::from((lab.addrs.server, 8080));
    let client_ip = lab.addrs.client.to_string();
    let _origin = Analyzer::in_netns(&s, server).expect("the origin");
    let analyzer = Analyzer::in_netns(&r, ANALYZER).expect("the analyzer");
    let admin: SocketAddr = "127.0.0.1:9445".parse().unwrap();
    let mut cmd = netns::exec(&r, rebuilder_bin());
    cmd.args(["run", "--listen", "0.0.0.0:4789"])
        .args([
            "--upstream",
            "http://127.0.0.1:8081",
            "--admin",
            "127.0.0.1:9445",
        ])
        .args(["--workers", "2", "--log-format", "json"]);
    let rebuilder = Proc::spawn("rebuilder", cmd, dir).expect("rebuilder run");
    netns::wait_healthy_in(&r, admin, &rebuilder);

    // Traffic.
    let base = format!("http://{server}");
    let curl = |args: &[&str]| netns::curl_in(&c, args);
    curl(&[
        "-H",
        "Host: shop.example",
        &format!("{base}/get?item=42&q=a%20b"),
    ]);
    curl(&[
        "-H",
        "Host: shop.example",
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
        "--data-binary",
        "user=alice&pass=s3cr3t",
        &format!("{base}/login"),
    ]);
    let (upload, upload_arg) = netns::upload_body(dir, 20_000);
    curl(&[
        "-H",
        "Host: upload.example",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &upload_arg,
        &format!("{base}/upload"),
    ]);
    // Keep-alive series: one connection, three requests.
    curl(&[
        "-H",
        "Host: ka.example",
        &format!("{base}/ka/1"),
        &format!("{base}/ka/2"),
        &format!("{base}/ka/3"),
    ]);
    curl(&[
        "-H",
        "Host: proxy.example",
        "-H",
        "X-Forwarded-For: 198.51.100.7",
        &format!("{base}/behind-proxy"),
    ]);
    let piped = netns::run_in(&c, move || pipeline(server)).expect("the pipelining client");
    assert_eq!(piped, 3, "the origin answered the pipelined requests");

    let xff = client_ip.clone();
    let want = vec![
        Want {
            method: "GET",
            target: "/get?item=42&q=a%20b",
            host: "shop.example",
            body: vec![],
            xff: xff.clone(),
        },
        Want {
            method: "POST",
            target: "/login",
            host: "shop.example",
            body: b"user=alice&pass=s3cr3t".to_vec(),
            xff: xff.clone(),
        },
        Want {
            method: "POST",
            target: "/upload",
            host: "upload.example",
            body: upload.clone(),
            xff: xff.clone(),
        },
        Want {
            method: "GET",
            target: "/ka/1",
            host: "ka.example",
            body: vec![],
            xff: xff.clone(),
        },
        Want {
            method: "GET",
            target: "/ka/2",
            host: "ka.example",
            body: vec![],
            xff: xff.clone(),
        },
        Want {
            method: "GET",
            target: "/ka/3",
            host: "ka.example",
            body: vec![],
            xff: xff.clone(),
        },
        Want {
            method: "GET",
            target: "/behind-proxy",
            host: "proxy.example",
            body: vec![],
            xff: format!("198.51.100.7, {client_ip}"),
        },
        Want {
            method: "GET",
            target: "/pipe/1",
            host: "pipe.example",
            body: vec![],
            xff: xff.clone(),
        },
        Want {
            method: "POST",
            target: "/pipe/2",
            host: "pipe.example",
            body: b"pipe-body-2".to_vec(),
            xff: xff.clone(),
        },
        Want {
            method: "GET",
            target: "/pipe/3",
            host: "pipe.example",
            body: vec![],
            xff,
        },
    ];

    let all_there = || {
        let recs = analyzer.records();
        want.iter()
            .all(|w| recs.iter().any(|r| r.target == w.target))
    };
    let arrived = system::wait_until(Duration::from_secs(20), all_there);
    // Give late duplicates a chance to show up before counting.
    std::thread::sleep(Duration::from_millis(1500));
    let recs = analyzer.records();
    let metrics = netns::http_get_in(&r, admin, "/metrics")
        .map(|(_, body)| Metrics::parse(&body))
        .unwrap_or_default();
    assert!(
        arrived,
        "missing requests; got {:?}\nmetrics:\n{}",
        recs.iter().map(|r| &r.target).collect::<Vec<_>>(),
        metrics.nonzero()
    );
    for w in &want {
        let got: Vec<&Recorded> = recs.iter().filter(|r| r.target == w.target).collect();
        assert_eq!(got.len(), 1, "{} arrived {} times", w.target, got.len());
        let g = got[0];
        assert_eq!(g.method, w.method, "{}", w.target);
        assert_eq!(g.first_header("host"), Some(w.host), "{}", w.target);
        assert_eq!(
            g.first_header("x-forwarded-for"),
            Some(w.xff.as_str()),
            "{}",
            w.target
        );
        assert!(
            g.body() == w.body,
            "{}: body of {} bytes, want {}",
            w.target,
            g.body_len,
            w.body.len()
        );
        assert!(
            g.first_header("transfer-encoding").is_none(),
            "{}",
            w.target
        );
        if !w.body.is_empty() {
            assert_eq!(
                g.first_header("content-length"),
                Some(w.body.len().to_string().as_str()),
                "{}",
                w.target
            );
        }
    }
    assert_eq!(recs.len(), want.len(), "nothing else reached the analyzer");
    // Header order survives: curl sends Host, User-Agent, Accept in this order.
    let first = recs.iter().find(|r| r.target.starts_with("/get")).unwrap();
    let names: Vec<String> = first
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    assert_eq!(
        names[..3],
        ["host", "user-agent", "accept"],
        "header order: {names:?}"
    );
    assert_eq!(
        metrics.forwarded_with(StatusClass::Success),
        10,
        "{}",
        metrics.text
    );
}
