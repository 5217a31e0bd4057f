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
fn with_geneve_the_vxlan_datagrams_arrive_inside_gwlb_geneve_and_nothing_else_changes() {
    let cfg = SynthConfig {
        connections: 4,
        ipv6: 0.5,
        ..SynthConfig::default()
    };
    let (plain, plain_truth) = generate(cfg.clone());
    let (wrapped, truth) = generate(SynthConfig {
        geneve: true,
        gwlb_endpoints: vec![7, 8],
        ..cfg
    });
    assert_eq!(plain.len(), wrapped.len());
    for (p, w) in plain.iter().zip(&wrapped) {
        let outer = etherparse::SlicedPacket::from_ethernet(&w.data).unwrap();
        let Some(etherparse::TransportSlice::Udp(u)) = outer.transport else {
            panic!("not UDP");
        };
        assert_eq!(
            u.destination_port(),
            crate::engine::encap::geneve::GENEVE_PORT
        );
        let g = crate::engine::encap::geneve::GenevePacket::parse(u.payload()).unwrap();
        assert!(matches!(g.aws.endpoint_id, Some(7 | 8)));
        assert!(g.aws.attachment_id.is_some() && g.aws.flow_cookie.is_some());
        // The inner IP packet is the VXLAN datagram of the plain capture, byte for byte.
        let inner = etherparse::SlicedPacket::from_ip(g.inner).unwrap();
        let Some(etherparse::TransportSlice::Udp(iu)) = inner.transport else {
            panic!("inner not UDP");
        };
        assert_eq!(iu.destination_port(), VXLAN_PORT);
        let po = etherparse::SlicedPacket::from_ethernet(&p.data).unwrap();
        let Some(etherparse::TransportSlice::Udp(pu)) = po.transport else {
            panic!("not UDP");
        };
        assert_eq!(iu.payload(), pu.payload());
        assert_eq!(w.ts_us, p.ts_us);
    }
    for (t, p) in truth.iter().zip(&plain_truth) {
        assert_eq!(t.request.gwlbe, Some(if t.conn % 2 == 0 { 7 } else { 8 }));
        assert_eq!(t.request.mirror_source, p.request.mirror_source);
        assert!(t.request.mirror_source.is_some());
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
