use super::*;

#[test]
fn the_same_seed_gives_the_same_capture() {
    let cfg = SynthConfig {
        connections: 5,
        ..SynthConfig::default()
    };
    let (a, ta) = generate(cfg.clone());
    let (b, tb) = generate(cfg);
    assert_eq!(a, b);
    assert_eq!(ta, tb);
    assert!(!a.is_empty());
}

#[test]
fn clean_traffic_expects_every_request() {
    let (_, truth) = generate(SynthConfig::default());
    assert!(!truth.is_empty());
    assert!(truth.iter().all(|t| t.expected && t.request.ts_us > 0));
}

#[test]
fn loss_makes_some_requests_unexpected() {
    let cfg = SynthConfig {
        loss: 0.3,
        connections: 30,
        ..SynthConfig::default()
    };
    let (_, truth) = generate(cfg);
    assert!(truth.iter().any(|t| t.expected));
    assert!(truth.iter().any(|t| !t.expected));
}

#[test]
fn frames_parse_as_vxlan_over_udp_4789() {
    let cfg = SynthConfig {
        connections: 2,
        ipv6: 1.0,
        vlan: 1.0,
        ..SynthConfig::default()
    };
    let (frames, _) = generate(cfg);
    for f in frames {
        let p = etherparse::SlicedPacket::from_ethernet(&f.data).unwrap();
        match p.transport {
            Some(etherparse::TransportSlice::Udp(u)) => {
                assert_eq!(u.destination_port(), VXLAN_PORT);
                let inner = etherparse::SlicedPacket::from_ethernet(&u.payload()[8..]).unwrap();
                assert!(matches!(
                    inner.transport,
                    Some(etherparse::TransportSlice::Tcp(_))
                ));
            }
            other => panic!("not UDP: {other:?}"),
        }
    }
}

#[test]
fn concurrency_interleaves_connections() {
    let cfg = SynthConfig {
        connections: 50,
        concurrency: 10,
        ..SynthConfig::default()
    };
    let mut generator = Generator::new(cfg);
    let first: Vec<Frame> = generator.by_ref().take(40).collect();
    let mut ports = std::collections::HashSet::new();
    for f in &first {
        let p = etherparse::SlicedPacket::from_ethernet(&f.data).unwrap();
        if let Some(etherparse::TransportSlice::Udp(u)) = p.transport {
            ports.insert(u.source_port());
        }
    }
    assert!(
        ports.len() >= 5,
        "{} outer flows in the first frames",
        ports.len()
    );
}
