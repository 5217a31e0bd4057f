//! Two rebuilders, each seeing half of every connection: the server's veth is mirrored by tc
//! into two VXLAN devices that reach two `rebuilder run` processes (UDP ports 4789 and
//! 4790 of one collector namespace). For connections whose client port is even, the
//! client→server direction goes to rebuilder A and server→client to B; for odd ports the
//! other way round — as the NLB's per-direction 5-tuple hashing can do. Both forward to one
//! analyzer. Every request must arrive exactly once, both rebuilders must have extracted some
//! (flows spread over both), and neither may log a warning or an error about the half it
//! cannot see. Two of the connections start with a PROXY header (v1, v2): the analyzer gets
//! the header's client in X-Forwarded-For. Both rebuilders narrow the health-check rule to
//! `/health` (A by `REBUILDER_HEALTH_CHECK_PATHS`, B by `--health-check-paths`): the
//! balancer's checks of `/health` are dropped, its requests to other paths forwarded.
//!
//! Needs root, `ip`, `tc`, `ethtool`, `curl` and `python3`: skipped otherwise, or failed when
//! `MIRRORFLEET_REQUIRE_SYSTEM=1`.

mod common;

use common::netns::{
    Lab, ORIGIN_PY, RECORDER_PY, Rec, ns, prerequisites, read_records, run, wait_tcp,
};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static COUNTER: AtomicU32 = AtomicU32::new(0);

const CLIENT_IP: &str = "10.214.1.1";
const SERVER_IP: &str = "10.214.1.2";
const MIRROR_SRC: &str = "10.214.2.1";
const COLLECTOR_IP: &str = "10.214.2.2";

/// A load balancer's connection: a PROXY header (v1 TCP4, or v2 IPv6 with a TLV) then one
/// request, sent in one write from a fixed client port.
const PROXIED_PY: &str = r#"
import socket, struct, sys, ipaddress
version, client, server, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((client, port))
s.connect((server, 8080))
if version == "1":
    hdr = ("PROXY TCP4 203.0.113.9 %s 5555 8080\r\n" % server).encode()
else:
    body = (ipaddress.IPv6Address("2001:db8::9").packed + ipaddress.IPv6Address("2001:db8::1").packed
            + struct.pack("!HH", 6666, 8080) + b"\x04\x00\x03abc")
    hdr = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x21]) + struct.pack("!H", len(body)) + body
req = ("GET /proxied/v%s HTTP/1.1\r\nHost: lb.example\r\nConnection: close\r\n\r\n" % version).encode()
s.sendall(hdr + req)
s.settimeout(5)
try:
    while s.recv(65536):
        pass
except Exception:
    pass
s.close()
"#;

fn metrics(netns: &str, admin_port: u16) -> common::Metrics {
    let text = run(
        "ip",
        &[
            "netns",
            "exec",
            netns,
            "curl",
            "-s",
            &format!("http://127.0.0.1:{admin_port}/metrics"),
        ],
    )
    .unwrap_or_default();
    common::Metrics::parse(&text)
}

/// Mirrors the TCP packets of `dir` (ingress: client→server; egress: server→client) whose
/// client port has parity `parity` to `dev`.
fn mirror_rule(netns: &str, dir: &str, parity: u32, dev: &str, prio: &str) {
    // Ingress packets come from the client (its port is the source port), egress packets go
    // to it (destination port). u32 offsets are from the IP header (no options here).
    let port = if dir == "ingress" { "sport" } else { "dport" };
    let parity = parity.to_string();
    ns(
        netns,
        &[
            "tc", "filter", "add", "dev", "s0", dir, "protocol", "ip", "prio", prio, "u32",
            "match", "ip", "protocol", "6", "0xff", "match", "ip", port, &parity, "0x0001",
            "action", "mirred", "egress", "mirror", "dev", dev,
        ],
    );
}

#[test]
fn netns_two_rebuilders_each_with_one_direction_forward_every_request_once() {
    if let Err(reason) = prerequisites() {
        common::skip_or_fail(&reason);
        return;
    }
    let id = format!(
        "{}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let (c, s, r) = (format!("m2c{id}"), format!("m2s{id}"), format!("m2r{id}"));
    let dir = std::env::temp_dir().join(format!("mf-two-{id}"));
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
    run(
        "ip",
        &[
            "link", "add", "c0", "netns", &c, "type", "veth", "peer", "name", "s0", "netns", &s,
        ],
    )
    .unwrap();
    run(
        "ip",
        &[
            "link", "add", "m0", "netns", &s, "mtu", "9001", "type", "veth", "peer", "name", "r0",
            "netns", &r, "mtu", "9001",
        ],
    )
    .unwrap();
    for (n, addr, dev) in [
        (&c, CLIENT_IP, "c0"),
        (&s, SERVER_IP, "s0"),
        (&s, MIRROR_SRC, "m0"),
        (&r, COLLECTOR_IP, "r0"),
    ] {
        ns(n, &["ip", "addr", "add", &format!("{addr}/24"), "dev", dev]);
    }
    for (n, dev) in [(&c, "c0"), (&s, "s0"), (&s, "m0"), (&r, "r0")] {
        ns(n, &["ip", "link", "set", dev, "up"]);
        ns(
            n,
            &[
                "ethtool", "-K", dev, "tx", "off", "gso", "off", "tso", "off", "gro", "off",
            ],
        );
    }
    // Two VXLAN devices, one per rebuilder (same VNI, as one mirror session would use).
    for (dev, port) in [("vxa", "4789"), ("vxb", "4790")] {
        ns(
            &s,
            &[
                "ip",
                "link",
                "add",
                dev,
                "type",
                "vxlan",
                "id",
                "4242",
                "local",
                MIRROR_SRC,
                "remote",
                COLLECTOR_IP,
                "dstport",
                port,
                "dev",
                "m0",
                "nolearning",
            ],
        );
        ns(&s, &["ip", "link", "set", dev, "up"]);
    }
    ns(&s, &["tc", "qdisc", "add", "dev", "s0", "clsact"]);
    mirror_rule(&s, "ingress", 0, "vxa", "1");
    mirror_rule(&s, "ingress", 1, "vxb", "2");
    mirror_rule(&s, "egress", 0, "vxb", "1");
    mirror_rule(&s, "egress", 1, "vxa", "2");

    let origin = dir.join("origin.py");
    let recorder = dir.join("recorder.py");
    let records = dir.join("records.jsonl");
    std::fs::write(&origin, ORIGIN_PY).unwrap();
    std::fs::write(&recorder, RECORDER_PY).unwrap();
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
    let logs: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|n| dir.join(format!("rebuilder-{n}.log")))
        .collect();
    // The health-check rule narrowed to the path /health: A through the environment, B
    // through its flag.
    for ((udp, admin), log) in [("4789", "9445"), ("4790", "9446")].iter().zip(&logs) {
        let listen = format!("0.0.0.0:{udp}");
        let admin = format!("127.0.0.1:{admin}");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &r, rebuilder, "run"]);
        if *udp == "4789" {
            cmd.env("REBUILDER_HEALTH_CHECK_PATHS", "/health");
        } else {
            cmd.args(["--health-check-paths", "/health"]);
        }
        let child = cmd
            .args([
                "--listen",
                &listen,
                "--upstream",
                "http://127.0.0.1:8081",
                "--admin",
                &admin,
                "--workers",
                "2",
                "--log-format",
                "json",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start rebuilder");
        lab.children.push(child);
    }
    for port in [9445, 9446] {
        wait_tcp(&r, "127.0.0.1", port);
        assert!(
            common::wait_until(Duration::from_secs(10), || {
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
                        &format!("http://127.0.0.1:{port}/healthz"),
                    ],
                )
                .is_ok_and(|code| code == "200")
            }),
            "rebuilder on admin port {port} never became healthy"
        );
    }

    // Traffic: 12 connections from fixed client ports (6 even, 6 odd), then two keep-alive
    // connections with three requests each and a chunked upload on each parity.
    let base = format!("http://{SERVER_IP}:8080");
    let curl = |port: u16, args: &[&str]| {
        let port = port.to_string();
        let mut v = vec![
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
            "--local-port",
            &port,
        ];
        v.extend_from_slice(args);
        ns(&c, &v);
    };
    let mut want: Vec<String> = Vec::new();
    for i in 0..12u16 {
        let target = format!("/two/{i}?port={}", 41000 + i);
        curl(
            41000 + i,
            &["-H", "Host: two.example", &format!("{base}{target}")],
        );
        want.push(target);
    }
    let upload: Vec<u8> = (0..30_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let upload_path = dir.join("upload.bin");
    std::fs::write(&upload_path, &upload).unwrap();
    for port in [41100u16, 41101] {
        let ka: Vec<String> = (1..=3).map(|k| format!("/ka/{port}/{k}")).collect();
        let urls: Vec<String> = ka.iter().map(|t| format!("{base}{t}")).collect();
        let mut args = vec!["-H", "Host: ka.example"];
        args.extend(urls.iter().map(String::as_str));
        curl(port, &args);
        want.extend(ka);
        let target = format!("/upload/{port}");
        curl(
            port + 100,
            &[
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &format!("@{}", upload_path.display()),
                &format!("{base}{target}"),
            ],
        );
        want.push(target);
    }

    // Connections opened by a load balancer speaking PROXY protocol (one per parity), and a
    // load-balancer health check (dropped, counted).
    let proxied = dir.join("proxied.py");
    std::fs::write(&proxied, PROXIED_PY).unwrap();
    for (version, port) in [("1", "41300"), ("2", "41301")] {
        ns(
            &c,
            &[
                "python3",
                proxied.to_str().unwrap(),
                version,
                CLIENT_IP,
                SERVER_IP,
                port,
            ],
        );
        want.push(format!("/proxied/v{version}"));
    }
    // Health checks of /health on both parities are dropped (one by each rebuilder); with
    // the balancer's agent on another path they are forwarded.
    for (port, target) in [
        (41400, "/health"),
        (41401, "/health"),
        (41402, "/status"),
        (41403, "/status?odd"),
    ] {
        curl(
            port,
            &["-A", "ELB-HealthChecker/2.0", &format!("{base}{target}")],
        );
        if target != "/health" {
            want.push(target.to_string());
        }
    }
    let xff = |target: &str| match target {
        "/proxied/v1" => "203.0.113.9",
        "/proxied/v2" => "2001:db8::9",
        _ => CLIENT_IP,
    };

    let arrived = common::wait_until(Duration::from_secs(20), || {
        let recs = read_records(&records);
        want.iter().all(|w| recs.iter().any(|r| &r.target == w))
    });
    // Late duplicates would show up now.
    std::thread::sleep(Duration::from_millis(1500));
    let recs = read_records(&records);
    let (ma, mb) = (metrics(&r, 9445), metrics(&r, 9446));
    assert!(
        arrived,
        "missing requests; got {:?}",
        recs.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    for w in &want {
        let got: Vec<&Rec> = recs.iter().filter(|r| &r.target == w).collect();
        assert_eq!(got.len(), 1, "{w} arrived {} times", got.len());
        assert_eq!(got[0].header("x-forwarded-for"), Some(xff(w)), "{w}");
        let method = if w.starts_with("/upload/") {
            "POST"
        } else {
            "GET"
        };
        assert_eq!(got[0].method, method, "{w}");
        if w.starts_with("/upload/") {
            assert!(
                got[0].body == upload,
                "{w}: body of {} bytes",
                got[0].body.len()
            );
        }
    }
    assert_eq!(recs.len(), want.len(), "nothing else reached the analyzer");

    // Flows spread over both; each saw responses (the other half) and dropped nothing.
    let extracted = |m: &common::Metrics| m.get("rebuilder_requests_extracted_total");
    let (ea, eb) = (extracted(&ma), extracted(&mb));
    assert!(ea > 0 && eb > 0, "requests extracted: A {ea}, B {eb}");
    assert_eq!(ea + eb, want.len() as u64, "A {ea} + B {eb}");
    assert_eq!(ma.forwarded() + mb.forwarded(), want.len() as u64);
    for (name, m) in [("A", &ma), ("B", &mb)] {
        assert!(
            m.get("rebuilder_response_packets_total") > 0,
            "{name} saw no server→client half"
        );
        for reason in [
            "bad_request",
            "message_gap",
            "message_incomplete",
            "head_too_large",
            "proxy_header_malformed",
        ] {
            assert_eq!(m.decode_drops(reason), 0, "{name}: {reason}");
        }
    }
    assert_eq!(
        (
            ma.decode_drops("health_check"),
            mb.decode_drops("health_check")
        ),
        (1, 1),
        "each rebuilder dropped the health check whose request it saw"
    );
    assert_eq!(
        ma.get("rebuilder_proxy_headers_total"),
        1,
        "A read the v1 header (even port)"
    );
    assert_eq!(
        mb.get("rebuilder_proxy_headers_total"),
        1,
        "B read the v2 header (odd port)"
    );
    for (name, log) in ["A", "B"].iter().zip(&logs) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\""))
            .collect();
        assert!(
            bad.is_empty(),
            "rebuilder {name} logged:\n{}",
            bad.join("\n")
        );
        assert!(
            text.contains("\"level\":\"INFO\""),
            "rebuilder {name} log: {text}"
        );
    }
}
