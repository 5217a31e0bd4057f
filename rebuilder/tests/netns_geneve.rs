//! End to end through a Gateway Load Balancer: a client namespace sends real HTTP (curl) to a
//! server namespace whose veth is mirrored by tc into the kernel's VXLAN device; the VXLAN
//! datagrams go to a GWLB endpoint, where the lab's GWLB node delivers each of them to the
//! collector inside GENEVE (UDP/6081, AWS's options) — see `rebuilder_testkit::netns`. The
//! collector runs the real `rebuilder run --geneve-listen` with `--allow-from` set to the
//! node's address. Every request must reach the analyzer exactly once with the client's
//! address in X-Forwarded-For; nothing may be dropped for a GENEVE reason; neither the
//! collector nor the endpoint may answer the mirror with ICMP (both only receive). A capture of
//! the GENEVE traffic taken on the collector, replayed, names the endpoint (`gwlbe`) and the
//! mirrored ENI (`mirror_source`) in every request.
//!
//! Needs root, `ip`, `tc`, `ethtool`, `curl` and `tcpdump` (the prerequisite policy of
//! `rebuilder_testkit::system`: skipped, or failed under `MIRRORFLEET_REQUIRE_SYSTEM=1`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rebuilder::DropReason;
use rebuilder::engine::encap::geneve::endpoint_name;
use rebuilder_testkit::analyzer::Analyzer;
use rebuilder_testkit::daemon::rebuilder_bin;
use rebuilder_testkit::metrics::Metrics;
use rebuilder_testkit::netns::{self, LabSpec, MirrorLab};
use rebuilder_testkit::system::{self, Proc, TempDir};

const NAME: &str = "netns_mirror_through_a_gwlb_reaches_the_analyzer_exactly_once";

/// Where the analyzer listens in the collector namespace.
const ANALYZER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);

const ENDPOINT: u64 = 0x0ab1_c2d3_e4f5_a6b7;

/// `OutDestUnreachs` of namespace `ns` (ICMP destination unreachable messages it sent).
fn icmp_unreachables_sent(ns: &str) -> u64 {
    let mut cmd = netns::exec(ns, "cat");
    cmd.arg("/proc/net/snmp");
    let text = system::run_ok(cmd, Duration::from_secs(10))
        .expect("/proc/net/snmp")
        .stdout;
    let mut lines = text.lines().filter(|l| l.starts_with("Icmp: "));
    let names: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let values: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let i = names.iter().position(|n| *n == "OutDestUnreachs").unwrap();
    values[i].parse().unwrap()
}

#[test]
fn netns_mirror_through_a_gwlb_reaches_the_analyzer_exactly_once() {
    if !system::require(
        NAME,
        netns::check().and(system::tools(&["curl", "tcpdump"])),
    ) {
        return;
    }
    let tmp = TempDir::new("mf-gwlb").unwrap();
    let dir = tmp.path();
    let spec = LabSpec::new(&system::unique("mfg"), 4242).through_gwlb(ENDPOINT);
    let lab = MirrorLab::up(&spec).expect("the lab");
    let (c, s, r, gw) = (lab.client(), lab.server(), lab.collector(), lab.gwlb_ns());
    let a = lab.addrs;
    let server = SocketAddr::from((a.server, 8080));
    let _origin = Analyzer::in_netns(&s, server).expect("the origin");
    let analyzer = Analyzer::in_netns(&r, ANALYZER).expect("the analyzer");

    let pcap = dir.join("geneve.pcap");
    let mut dump = netns::exec(&r, "tcpdump");
    // Immediate mode: each packet is handed over (and, with -U, written) as it arrives,
    // not when a ring-buffer block is full or times out.
    dump.args(["-i", "eth0", "-n", "--immediate-mode", "-U", "-w"])
        .arg(&pcap)
        .args(["udp", "port", "6081"]);
    let mut tcpdump = Proc::spawn("tcpdump", dump, dir).expect("tcpdump");
    assert!(
        system::wait_until(Duration::from_secs(10), || tcpdump
            .log_tail(5)
            .contains("listening on")),
        "tcpdump: {}",
        tcpdump.log_tail(5)
    );

    let admin: SocketAddr = "127.0.0.1:9445".parse().unwrap();
    let mut cmd = netns::exec(&r, rebuilder_bin());
    cmd.args(["run", "--listen", "0.0.0.0:4789"])
        .args(["--geneve-listen", "0.0.0.0:6081"])
        .args(["--allow-from", &format!("{}/32", a.gwlb_node)])
        .args(["--upstream", "http://127.0.0.1:8081"])
        .args(["--admin", &admin.to_string()])
        .args(["--workers", "2", "--log-format", "json"]);
    let rebuilder = Proc::spawn("rebuilder", cmd, dir).expect("rebuilder run");
    netns::wait_healthy_in(&r, admin, &rebuilder);
    // What the mirror sent before the rebuilder was bound (neighbour discovery at start) was
    // not received: count from here.
    std::thread::sleep(Duration::from_millis(300));
    let node = lab.gwlb.as_ref().expect("the GWLB node");
    let forwarded_before = node.forwarded();
    let icmp_before = (icmp_unreachables_sent(&r), icmp_unreachables_sent(&gw));

    // Traffic: one-shot requests, a body, a chunked upload, a keep-alive series.
    let base = format!("http://{server}");
    let curl = |args: &[&str]| netns::curl_in(&c, args);
    curl(&["-H", "Host: shop.example", &format!("{base}/get?item=42")]);
    curl(&[
        "-H",
        "Host: shop.example",
        "--data-binary",
        "user=alice&pass=s3cr3t",
        &format!("{base}/login"),
    ]);
    let (upload, upload_arg) = netns::upload_body(dir, 30_000);
    curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &upload_arg,
        &format!("{base}/upload"),
    ]);
    curl(&[
        &format!("{base}/ka/1"),
        &format!("{base}/ka/2"),
        &format!("{base}/ka/3"),
    ]);
    let want = [
        "/get?item=42",
        "/login",
        "/upload",
        "/ka/1",
        "/ka/2",
        "/ka/3",
    ];

    assert!(
        system::wait_until(Duration::from_secs(15), || analyzer.received()
            >= want.len() as u64),
        "the analyzer got {} of {} requests\n{}",
        analyzer.received(),
        want.len(),
        rebuilder.log_tail(20)
    );
    std::thread::sleep(Duration::from_millis(500));
    let records = analyzer.records();
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for rec in &records {
        *got.entry(rec.target.clone()).or_default() += 1;
        assert_eq!(
            rec.first_header("x-forwarded-for"),
            Some(a.client.to_string().as_str()),
            "{}",
            rec.target
        );
    }
    let expected: BTreeMap<String, usize> = want.iter().map(|t| (t.to_string(), 1)).collect();
    assert_eq!(got, expected, "every request exactly once");
    let uploaded = records.iter().find(|r| r.target == "/upload").unwrap();
    assert_eq!(uploaded.body(), &upload[..]);

    assert!(node.forwarded() > forwarded_before);
    let scrape = || {
        netns::run_in(&r, move || Metrics::scrape(admin))
            .unwrap()
            .expect("metrics")
    };
    // Workers publish their counters every timer tick.
    let received = || scrape().get("rebuilder_datagrams_received_total");
    assert!(
        system::wait_until(Duration::from_secs(5), || received()
            >= node.forwarded() - forwarded_before),
        "every GENEVE packet the node sent arrived: {} of {} (+{} before the rebuilder was up)",
        received(),
        node.forwarded() - forwarded_before,
        forwarded_before
    );
    assert!(received() <= node.forwarded());
    let m = scrape();
    for reason in DropReason::ALL {
        let n = m.get(&format!(
            "rebuilder_decode_drops_total{{reason=\"{reason}\"}}"
        ));
        // The mirror's filter takes every frame: ARP and IPv6 neighbour discovery are non_tcp.
        if !matches!(reason, DropReason::DuplicateSegment | DropReason::NonTcp) {
            assert_eq!(n, 0, "{reason}: {}", m.text);
        }
    }
    assert_eq!(
        (icmp_unreachables_sent(&r), icmp_unreachables_sent(&gw)),
        icmp_before,
        "the mirror is never answered with ICMP (bound sockets on 6081 and 4789)"
    );

    // The capture of the GENEVE traffic, replayed: the endpoint and the mirrored ENI.
    drop(rebuilder);
    tcpdump.stop(Duration::from_secs(5));
    let out = system::run_ok(
        {
            let mut cmd = std::process::Command::new(rebuilder_bin());
            cmd.arg("replay").arg(&pcap);
            cmd
        },
        Duration::from_secs(30),
    )
    .expect("rebuilder replay")
    .stdout;
    let replayed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut targets: Vec<&str> = replayed
        .iter()
        .map(|v| v["target"].as_str().unwrap())
        .collect();
    targets.sort_unstable();
    let mut want_sorted = want.to_vec();
    want_sorted.sort_unstable();
    assert_eq!(targets, want_sorted, "{out}");
    for v in &replayed {
        assert_eq!(v["gwlbe"], endpoint_name(ENDPOINT).as_str(), "{v}");
        assert_eq!(v["mirror_source"], a.mirror_src.to_string().as_str(), "{v}");
        let client = v["client"].as_str().unwrap();
        assert!(client.starts_with(&format!("{}:", a.client)), "{v}");
    }

    // The control: a datagram to a port nothing is bound to is answered with ICMP, so the
    // counter above could have moved.
    let collector = SocketAddr::from((a.collector, 6099));
    netns::run_in(&gw, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"x", collector).unwrap();
    })
    .unwrap();
    assert!(
        system::wait_until(Duration::from_secs(5), || icmp_unreachables_sent(&r)
            > icmp_before.0),
        "no ICMP for an unbound port: the check above proves nothing"
    );
}
