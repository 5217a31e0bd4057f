//! End to end through the kernel: a client namespace sends real HTTP (curl and a pipelining raw
//! client) to a server namespace; the server's veth is mirrored by tc into a VXLAN device whose
//! remote is a collector namespace running the real `rebuilder run`, which forwards to a
//! recording HTTP server (the analyzer). Every request must arrive exactly once with the right
//! method, target, Host, body and X-Forwarded-For.
//!
//! Needs root, `ip`, `tc`, `ethtool`, `curl` and `python3`: skipped otherwise, or failed when
//! `MIRRORFLEET_REQUIRE_SYSTEM=1`.

mod common;

use common::netns::{
    Lab, ORIGIN_PY, RECORDER_PY, Rec, ns, prerequisites, read_records, run, wait_tcp,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static COUNTER: AtomicU32 = AtomicU32::new(0);

const CLIENT_IP: &str = "10.213.1.1";
const SERVER_IP: &str = "10.213.1.2";
const MIRROR_SRC: &str = "10.213.2.1";
const COLLECTOR_IP: &str = "10.213.2.2";

/// Pipelining raw client: three requests in one write, then reads the three responses.
const PIPELINE_PY: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
reqs = (b"GET /pipe/1 HTTP/1.1\r\nHost: pipe.example\r\n\r\n"
        b"POST /pipe/2 HTTP/1.1\r\nHost: pipe.example\r\nContent-Length: 11\r\n\r\npipe-body-2"
        b"GET /pipe/3 HTTP/1.1\r\nHost: pipe.example\r\nConnection: close\r\n\r\n")
s.sendall(reqs)
data = b""
while data.count(b"HTTP/1.1 200") < 3:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
s.close()
print(data.count(b"HTTP/1.1 200"))
"#;

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
    if let Err(reason) = prerequisites() {
        common::skip_or_fail(&reason);
        return;
    }
    let id = format!(
        "{}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let (c, s, r) = (format!("mfc{id}"), format!("mfs{id}"), format!("mfr{id}"));
    let dir = std::env::temp_dir().join(format!("mf-e2e-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab {
        names: vec![],
        children: vec![],
        dir: dir.clone(),
    };
    for n in [&c, &s, &r] {
        if let Err(e) = run("ip", &["netns", "add", n]) {
            common::skip_or_fail(&format!("cannot create a network namespace: {e}"));
            return;
        }
        lab.names.push(n.clone());
        ns(n, &["ip", "link", "set", "lo", "up"]);
    }

    // client <-> server
    run(
        "ip",
        &[
            "link", "add", "c0", "netns", &c, "type", "veth", "peer", "name", "s0", "netns", &s,
        ],
    )
    .unwrap();
    // server (mirror source) <-> collector, jumbo MTU for the VXLAN copies
    run(
        "ip",
        &[
            "link", "add", "m0", "netns", &s, "mtu", "9001", "type", "veth", "peer", "name", "r0",
            "netns", &r, "mtu", "9001",
        ],
    )
    .unwrap();
    ns(
        &c,
        &["ip", "addr", "add", &format!("{CLIENT_IP}/24"), "dev", "c0"],
    );
    ns(
        &s,
        &["ip", "addr", "add", &format!("{SERVER_IP}/24"), "dev", "s0"],
    );
    ns(
        &s,
        &[
            "ip",
            "addr",
            "add",
            &format!("{MIRROR_SRC}/24"),
            "dev",
            "m0",
        ],
    );
    ns(
        &r,
        &[
            "ip",
            "addr",
            "add",
            &format!("{COLLECTOR_IP}/24"),
            "dev",
            "r0",
        ],
    );
    for (n, dev) in [(&c, "c0"), (&s, "s0"), (&s, "m0"), (&r, "r0")] {
        ns(n, &["ip", "link", "set", dev, "up"]);
        // Without this the mirrored copies carry partial checksums and GSO super-frames.
        ns(
            n,
            &[
                "ethtool", "-K", dev, "tx", "off", "gso", "off", "tso", "off", "gro", "off",
            ],
        );
    }
    ns(
        &s,
        &[
            "ip",
            "link",
            "add",
            "vxlan0",
            "type",
            "vxlan",
            "id",
            "4242",
            "local",
            MIRROR_SRC,
            "remote",
            COLLECTOR_IP,
            "dstport",
            "4789",
            "dev",
            "m0",
            "nolearning",
        ],
    );
    ns(&s, &["ip", "link", "set", "vxlan0", "up"]);
    ns(&s, &["tc", "qdisc", "add", "dev", "s0", "clsact"]);
    for dir in ["ingress", "egress"] {
        ns(
            &s,
            &[
                "tc", "filter", "add", "dev", "s0", dir, "protocol", "all", "prio", "1", "u32",
                "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "vxlan0",
            ],
        );
    }

    // Programs.
    let origin = dir.join("origin.py");
    let recorder = dir.join("recorder.py");
    let pipeline = dir.join("pipeline.py");
    let records = dir.join("records.jsonl");
    std::fs::write(&origin, ORIGIN_PY).unwrap();
    std::fs::write(&recorder, RECORDER_PY).unwrap();
    std::fs::write(&pipeline, PIPELINE_PY).unwrap();
    lab.spawn_in(
        &s,
        &["python3", origin.to_str().unwrap(), SERVER_IP, "8080"],
    );
    lab.spawn_in(
        &r,
        &[
            "python3",
            recorder.to_str().unwrap(),
            "127.0.0.1",
            "8081",
            records.to_str().unwrap(),
        ],
    );
    wait_tcp(&s, SERVER_IP, 8080);
    wait_tcp(&r, "127.0.0.1", 8081);
    let rebuilder = env!("CARGO_BIN_EXE_rebuilder");
    lab.spawn_in(
        &r,
        &[
            rebuilder,
            "run",
            "--listen",
            "0.0.0.0:4789",
            "--upstream",
            "http://127.0.0.1:8081",
            "--admin",
            "127.0.0.1:9445",
            "--workers",
            "2",
            "--log-format",
            "json",
        ],
    );
    wait_tcp(&r, "127.0.0.1", 9445);
    let health = || {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &r,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:9445/healthz",
            ],
        )
        .unwrap_or_default()
    };
    assert!(
        common::wait_until(Duration::from_secs(10), || health() == "200"),
        "/healthz of the collector: {}",
        health()
    );

    // Traffic.
    let base = format!("http://{SERVER_IP}:8080");
    let curl = |args: &[&str]| {
        let mut v = vec!["curl", "-sS", "-o", "/dev/null", "--max-time", "10"];
        v.extend_from_slice(args);
        ns(&c, &v);
    };
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
    let upload: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let upload_path = dir.join("upload.bin");
    std::fs::write(&upload_path, &upload).unwrap();
    curl(&[
        "-H",
        "Host: upload.example",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", upload_path.display()),
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
    let piped = run(
        "ip",
        &[
            "netns",
            "exec",
            &c,
            "python3",
            pipeline.to_str().unwrap(),
            SERVER_IP,
            "8080",
        ],
    )
    .unwrap();
    assert_eq!(
        piped.trim(),
        "3",
        "the origin answered the pipelined requests"
    );

    let xff = CLIENT_IP.to_string();
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
            xff: format!("198.51.100.7, {CLIENT_IP}"),
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
        let recs = read_records(&records);
        want.iter()
            .all(|w| recs.iter().any(|r| r.target == w.target))
    };
    let arrived = common::wait_until(Duration::from_secs(20), all_there);
    // Give late duplicates a chance to show up before counting.
    std::thread::sleep(Duration::from_millis(1500));
    let recs = read_records(&records);
    let metrics = run(
        "ip",
        &[
            "netns",
            "exec",
            &r,
            "curl",
            "-s",
            "http://127.0.0.1:9445/metrics",
        ],
    )
    .unwrap_or_default();
    assert!(
        arrived,
        "missing requests; got {:?}\nmetrics:\n{metrics}",
        recs.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    for w in &want {
        let got: Vec<&Rec> = recs.iter().filter(|r| r.target == w.target).collect();
        assert_eq!(got.len(), 1, "{} arrived {} times", w.target, got.len());
        let g = got[0];
        assert_eq!(g.method, w.method, "{}", w.target);
        assert_eq!(g.header("host"), Some(w.host), "{}", w.target);
        assert_eq!(
            g.header("x-forwarded-for"),
            Some(w.xff.as_str()),
            "{}",
            w.target
        );
        assert!(
            g.body == w.body,
            "{}: body of {} bytes, want {}",
            w.target,
            g.body.len(),
            w.body.len()
        );
        assert!(g.header("transfer-encoding").is_none(), "{}", w.target);
        if !w.body.is_empty() {
            assert_eq!(
                g.header("content-length"),
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
    assert!(
        metrics.contains("rebuilder_requests_forwarded_total{status=\"2xx\"} 10"),
        "{metrics}"
    );
}
