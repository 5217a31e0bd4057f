//! Two rebuilders, each seeing half of every connection: the server's veth is mirrored by tc
//! into two VXLAN devices that reach two `rebuilder run` processes (UDP ports 4789 and
//! 4790 of one collector namespace). For connections whose client port is even, the
//! client→server direction goes to rebuilder A and server→client to B; for odd ports the
//! other way round — as the NLB's per-direction 5-tuple hashing can do. Both forward to one
//! analyzer. Every request must arrive exactly once, both rebuilders must have extracted some
//! (flows spread over both), and neither may log a warning or an error about the half it
//! cannot see. Two of the connections start with a PROXY header (v1, v2) and come from the
//! client namespace, trusted as the load balancer (A by `REBUILDER_PROXY_PROTOCOL_FROM`, B by
//! `--proxy-protocol-from`): the analyzer gets the header's client in X-Forwarded-For. Both
//! rebuilders have the health-check rule `/health` from that address (A by
//! `REBUILDER_HEALTH_CHECK_PATHS` / `_FROM`, B by the flags): the balancer's checks of
//! `/health` are dropped, its requests to other paths forwarded.
//!
//! Needs root, `ip`, `tc`, `ethtool` and `curl` (the prerequisite policy of
//! `rebuilder_testkit::system`: skipped, or failed under `MIRRORFLEET_REQUIRE_SYSTEM=1`).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use rebuilder::DropReason;
use rebuilder::engine::proxy;
use rebuilder_testkit::analyzer::{Analyzer, Recorded};
use rebuilder_testkit::daemon::rebuilder_bin;
use rebuilder_testkit::metrics::Metrics;
use rebuilder_testkit::netns::{self, Direction, LabSpec, MirrorLab, MirrorRule};
use rebuilder_testkit::system::{self, Proc, TempDir};

/// Where the analyzer listens in the collector namespace.
const ANALYZER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);

const NAME: &str = "netns_two_rebuilders_each_with_one_direction_forward_every_request_once";

/// A load balancer's connection from `client` (a fixed port): a PROXY header (v1 TCP4 naming
/// 203.0.113.9:5555, or v2 TCP6 naming [2001:db8::9]:6666 with a TLV) and one request, in
/// one write; then the response is read to its end.
fn proxied(version: u8, client: SocketAddr, server: SocketAddr) {
    let mut s = connect_from(client, server).expect("the load balancer's connection");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let header = if version == 1 {
        proxy::encode_v1("203.0.113.9:5555".parse().unwrap(), server)
    } else {
        proxy::encode_v2(
            "[2001:db8::9]:6666".parse().unwrap(),
            "[2001:db8::1]:8080".parse().unwrap(),
            &[0x04, 0x00, 0x03, b'a', b'b', b'c'],
        )
    };
    let mut wire = header;
    wire.extend_from_slice(
        format!(
            "GET /proxied/v{version} HTTP/1.1\r\nHost: lb.example\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    s.write_all(&wire).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

/// A TCP connection from a fixed local address (the client port decides which rebuilder
/// sees which direction).
fn connect_from(local: SocketAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&local.into())?;
    s.connect_timeout(&server.into(), Duration::from_secs(10))?;
    Ok(s.into())
}
#[test]
fn netns_two_rebuilders_each_with_one_direction_forward_every_request_once() {
    if !system::require(NAME, netns::check().and(system::tools(&["curl"]))) {
        return;
    }
    let tmp = TempDir::new("mf-two").unwrap();
    let dir = tmp.path().to_path_buf();
    // Two VXLAN devices, one per rebuilder (same VNI, as one mirror session would use): the
    // client→server direction of even client ports to A (UDP/4789), of odd ports to B
    // (UDP/4790); the server→client direction the other way round.
    let rule = |direction, parity, device| MirrorRule {
        direction,
        client_port_parity: Some(parity),
        device,
    };
    let spec = LabSpec {
        vxlan_ports: vec![4789, 4790],
        rules: vec![
            rule(Direction::Ingress, 0, 0),
            rule(Direction::Ingress, 1, 1),
            rule(Direction::Egress, 0, 1),
            rule(Direction::Egress, 1, 0),
        ],
        ..LabSpec::new(&system::unique("mf2"), 4242)
    };
    let lab = MirrorLab::up(&spec).expect("the lab");
    let (c, s, r) = (lab.client(), lab.server(), lab.collector());
    let server = SocketAddr::from((lab.addrs.server, 8080));
    let client_ip = lab.addrs.client.to_string();
    let _origin = Analyzer::in_netns(&s, server).expect("the origin");
    let analyzer = Analyzer::in_netns(&r, ANALYZER).expect("the analyzer");

    // The client namespace plays the load balancer: its PROXY headers are believed, and its
    // requests to /health are health checks. A is configured through the environment, B
    // through flags.
    let balancer = format!("{}/32", lab.addrs.client);
    let mut rebuilders = Vec::new();
    let mut logs: Vec<PathBuf> = Vec::new();
    for (name, udp, admin) in [("a", 4789, 9445), ("b", 4790, 9446)] {
        let mut cmd = netns::exec(&r, rebuilder_bin());
        cmd.arg("run");
        if name == "a" {
            cmd.env("REBUILDER_HEALTH_CHECK_PATHS", "/health")
                .env("REBUILDER_HEALTH_CHECK_FROM", &balancer)
                .env("REBUILDER_PROXY_PROTOCOL_FROM", &balancer);
        } else {
            cmd.args(["--health-check-paths", "/health"])
                .args(["--health-check-from", &balancer])
                .args(["--proxy-protocol-from", &balancer]);
        }
        cmd.args(["--listen", &format!("0.0.0.0:{udp}")])
            .args(["--upstream", "http://127.0.0.1:8081"])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--workers", "2", "--log-format", "json"]);
        let p = Proc::spawn(&format!("rebuilder-{name}"), cmd, &dir).expect("rebuilder run");
        logs.push(p.log.clone());
        rebuilders.push(p);
    }
    let admins: [SocketAddr; 2] = [
        "127.0.0.1:9445".parse().unwrap(),
        "127.0.0.1:9446".parse().unwrap(),
    ];
    for admin in admins {
        assert!(
            system::wait_until(Duration::from_secs(10), || {
                netns::http_get_in(&r, admin, "/healthz").is_some_and(|(s, _)| s == 200)
            }),
            "rebuilder on {admin} never became healthy"
        );
    }
    let metrics = |admin: SocketAddr| {
        netns::http_get_in(&r, admin, "/metrics")
            .map(|(_, body)| Metrics::parse(&body))
            .unwrap_or_default()
    };

    // Traffic: 12 connections from fixed client ports (6 even, 6 odd), then two keep-alive
    // connections with three requests each and a chunked upload on each parity.
    let base = format!("http://{server}");
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
        let mut cmd = netns::exec(&c, "curl");
        cmd.args(&v[1..]);
        system::run_ok(cmd, Duration::from_secs(20)).expect("curl");
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
    for (version, port) in [(1u8, 41300u16), (2, 41301)] {
        let client = SocketAddr::from((lab.addrs.client, port));
        netns::run_in(&c, move || proxied(version, client, server)).expect("the proxied client");
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
        _ => client_ip.as_str(),
    };

    let arrived = system::wait_until(Duration::from_secs(20), || {
        let recs = analyzer.records();
        want.iter().all(|w| recs.iter().any(|r| &r.target == w))
    });
    // Late duplicates would show up now.
    std::thread::sleep(Duration::from_millis(1500));
    let recs = analyzer.records();
    let (ma, mb) = (metrics(admins[0]), metrics(admins[1]));
    assert!(
        arrived,
        "missing requests; got {:?}",
        recs.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    for w in &want {
        let got: Vec<&Recorded> = recs.iter().filter(|r| &r.target == w).collect();
        assert_eq!(got.len(), 1, "{w} arrived {} times", got.len());
        assert_eq!(got[0].first_header("x-forwarded-for"), Some(xff(w)), "{w}");
        let method = if w.starts_with("/upload/") {
            "POST"
        } else {
            "GET"
        };
        assert_eq!(got[0].method, method, "{w}");
        if w.starts_with("/upload/") {
            assert!(
                got[0].body() == upload,
                "{w}: body of {} bytes",
                got[0].body_len
            );
        }
    }
    assert_eq!(recs.len(), want.len(), "nothing else reached the analyzer");

    // Flows spread over both; each saw responses (the other half) and dropped nothing.
    let extracted = |m: &Metrics| m.get("rebuilder_requests_extracted_total");
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
            DropReason::BadRequest,
            DropReason::MessageGap,
            DropReason::MessageIncomplete,
            DropReason::HeadTooLarge,
            DropReason::ProxyHeaderMalformed,
        ] {
            assert_eq!(m.decode_drops(reason), 0, "{name}: {reason}");
        }
    }
    assert_eq!(
        (
            ma.decode_drops(DropReason::HealthCheck),
            mb.decode_drops(DropReason::HealthCheck)
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
