//! `rebuilder run --geneve-listen` over loopback: the mirror's VXLAN datagrams inside GENEVE
//! as a Gateway Load Balancer sends them reach the analyzer exactly like plain VXLAN, next to a
//! VXLAN listener; a datagram of one encapsulation sent to the other's port is counted under
//! its own reason and nothing else is lost.

use std::net::SocketAddr;
use std::time::Duration;

use rebuilder::DropReason;
use rebuilder::engine::encap::Encap;
use rebuilder::offline::synth::SynthConfig;
use rebuilder_testkit::analyzer::Analyzer;
use rebuilder_testkit::daemon::RebuilderProc;
use rebuilder_testkit::metrics::Metrics;
use rebuilder_testkit::system::{free_port, wait_until};
use rebuilder_testkit::traffic::{Sender, capture_payloads};

fn decode_drops(m: &Metrics, reason: DropReason) -> u64 {
    m.get(&format!(
        "rebuilder_decode_drops_total{{reason=\"{reason}\"}}"
    ))
}

#[test]
fn geneve_from_a_gateway_load_balancer_is_rebuilt_like_vxlan_and_misdirected_datagrams_are_named() {
    let sink = Analyzer::loopback();
    let geneve: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let p = RebuilderProc::start(
        &sink.url(),
        &["--workers", "2", "--geneve-listen", &geneve.to_string()],
    );
    let cfg = SynthConfig {
        connections: 60,
        concurrency: 12,
        ipv6: 0.3,
        chunked: 0.2,
        geneve: true,
        gwlb_endpoints: vec![0xa, 0xb, 0xc],
        ..SynthConfig::default()
    };
    let (payloads, expected) = capture_payloads(cfg.clone());
    assert!(payloads.iter().all(|(e, ..)| *e == Encap::Geneve));
    let to_geneve = Sender::new(geneve, 8).unwrap();
    for (_, sport, d) in &payloads {
        to_geneve.send(*sport, d);
    }
    assert!(
        wait_until(Duration::from_secs(20), || sink.received()
            == expected as u64),
        "analyzer got {} of {expected}",
        sink.received()
    );
    let m = p.wait_metrics(Duration::from_secs(10), "every datagram decoded", |m| {
        m.get("rebuilder_packets_decoded_total") == payloads.len() as u64
    });
    assert_eq!(m.get("rebuilder_requests_extracted_total"), expected as u64);
    for reason in DropReason::ALL {
        if reason != DropReason::DuplicateSegment {
            assert_eq!(decode_drops(&m, reason), 0, "{reason}");
        }
    }

    // The VXLAN listener next to it still takes VXLAN; each encapsulation sent to the other's
    // port is counted as such.
    let (vxlan, vx_expected) = capture_payloads(SynthConfig {
        geneve: false,
        seed: 2,
        connections: 10,
        ..cfg
    });
    let to_vxlan = Sender::new(p.udp, 4).unwrap();
    for (_, sport, d) in &vxlan {
        to_vxlan.send(*sport, d);
    }
    to_vxlan.send(1, &payloads[0].2);
    to_geneve.send(1, &vxlan[0].2);
    let m = p.wait_metrics(
        Duration::from_secs(10),
        "misdirected datagrams counted",
        |m| {
            decode_drops(m, DropReason::GeneveOnVxlanPort) == 1
                && decode_drops(m, DropReason::VxlanOnGenevePort) == 1
        },
    );
    assert!(wait_until(Duration::from_secs(20), || sink.received()
        == (expected + vx_expected) as u64));
    assert_eq!(
        m.get("rebuilder_requests_extracted_total"),
        (expected + vx_expected) as u64
    );
}
