//! Tests of the engine's tunnel entry: the sender allow-list, GENEVE around VXLAN (a Gateway
//! Load Balancer endpoint as the mirror target), the endpoint as the flow key's domain, the
//! mirror source of each request, and every bad-input reason.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::engine::encap::geneve::{self, AwsOptions, PROTOCOL_IPV4, push_option};
use crate::engine::ranges::AddrRanges;
use crate::testkit::{
    TEST_GWLBE, TcpConn as Conn, TcpFrame, UdpFrame, aws_options, geneve_datagram, geneve_frame,
    vxlan_datagram, vxlan_frame,
};

const ENI: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 31, 5, 9));
const GWLB_NODE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 200, 7));

fn engine_with(config: EngineConfig) -> Engine {
    Engine::new(config)
}

/// The datagrams of one connection carrying one transaction: SYN, SYN+ACK, the request, its
/// response (a request is emitted once its response is complete).
fn exchange(c: &mut Conn, target: &str) -> Vec<Vec<u8>> {
    vec![
        c.syn(),
        c.syn_ack(),
        c.send(format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()),
        c.respond(b"HTTP/1.1 204 No Content\r\n\r\n"),
    ]
}

fn geneve(aws: &AwsOptions, vxlan: &[u8]) -> Vec<u8> {
    geneve_datagram(aws, ENI, vxlan)
}

/// Feeds GENEVE datagrams (from the GWLB node) and returns the requests.
fn run_geneve(e: &mut Engine, aws: &AwsOptions, datagrams: &[Vec<u8>]) -> Vec<HttpRequest> {
    let mut out = Vec::new();
    for (i, d) in datagrams.iter().enumerate() {
        e.on_datagram(
            1_000 + i as u64,
            Encap::Geneve,
            GWLB_NODE,
            &geneve(aws, d),
            &mut out,
        );
    }
    out
}

#[test]
fn a_request_through_a_gwlb_endpoint_carries_the_endpoint_and_the_mirror_source() {
    let mut c = Conn::new(4242, "10.0.0.1:40000", "10.0.0.2:8080", 1000);
    let mut e = engine_with(EngineConfig::default());
    let out = run_geneve(&mut e, &aws_options(TEST_GWLBE), &exchange(&mut c, "/g"));
    assert_eq!(out.len(), 1, "{:?}", e.stats());
    let r = &out[0];
    assert_eq!((r.vni, r.client, r.server), (4242, c.client, c.server));
    assert_eq!(r.gwlbe, Some(TEST_GWLBE));
    assert_eq!(r.gwlbe_name().as_deref(), Some("vpce-00123456789abcdef"));
    assert_eq!(
        r.mirror_source,
        Some(ENI),
        "the VXLAN datagram's IP source, not the GWLB node"
    );
    assert_eq!(e.stats().total_drops(), 0);
}

#[test]
fn plain_vxlan_requests_name_the_udp_peer_as_mirror_source_and_no_endpoint() {
    let mut c = Conn::new(7, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = engine_with(EngineConfig::default());
    let mut out = Vec::new();
    for d in exchange(&mut c, "/v") {
        e.on_datagram(1, Encap::Vxlan, ENI, &d, &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].gwlbe, out[0].mirror_source), (None, Some(ENI)));
    // Without a sender (tests, benchmarks): no mirror source.
    let mut c = Conn::new(7, "10.0.0.1:40001", "10.0.0.2:80", 1);
    let mut out = Vec::new();
    for d in exchange(&mut c, "/u") {
        e.on_vxlan_payload(2, &d, &mut out);
    }
    assert_eq!(out[0].mirror_source, None);
}

#[test]
fn the_same_traffic_wrapped_in_geneve_yields_the_same_requests() {
    let mut c = Conn::new(11, "[fd00::1]:40000", "[fd00::2]:80", 5);
    let mut d = vec![c.syn(), c.syn_ack()];
    d.push(c.send(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab"));
    d.push(c.send(b"cd\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    let mut plain = engine_with(EngineConfig::default());
    let mut want = Vec::new();
    for (i, x) in d.iter().enumerate() {
        plain.on_datagram(1_000 + i as u64, Encap::Vxlan, ENI, x, &mut want);
    }
    let mut wrapped = engine_with(EngineConfig::default());
    let got = run_geneve(&mut wrapped, &aws_options(5), &d);
    assert_eq!(want.len(), 2);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.gwlbe, Some(5));
        let g = HttpRequest {
            gwlbe: None,
            ..g.clone()
        };
        assert_eq!(&g, w);
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn two_endpoints_reusing_the_same_addresses_and_vni_keep_their_flows_apart() {
    // Two VPCs, same private addresses, same VNI, different ISNs, packets interleaved.
    let run = |endpoint_b: u64| {
        let mut a = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1_000);
        let mut b = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 900_000);
        let da = exchange(&mut a, "/vpc-a");
        let db = exchange(&mut b, "/vpc-b");
        let mut e = engine_with(EngineConfig::default());
        let mut out = Vec::new();
        for (x, y) in da.iter().zip(&db) {
            let ga = geneve(&aws_options(0xa), x);
            let gb = geneve(&aws_options(endpoint_b), y);
            e.on_datagram(1, Encap::Geneve, GWLB_NODE, &ga, &mut out);
            e.on_datagram(2, Encap::Geneve, GWLB_NODE, &gb, &mut out);
        }
        e.finish(&mut out);
        let mut got: Vec<(String, Option<u64>)> =
            out.into_iter().map(|r| (r.target, r.gwlbe)).collect();
        got.sort();
        got
    };
    assert_eq!(
        run(0xb),
        [("/vpc-a".into(), Some(0xa)), ("/vpc-b".into(), Some(0xb))]
    );
    // The control: under one endpoint the two connections are one flow and clash.
    assert_ne!(
        run(0xa).len(),
        2,
        "without the endpoint in the key one request is lost"
    );
}

#[test]
fn datagrams_from_outside_the_allow_list_are_counted_and_never_parsed() {
    let mut e = engine_with(EngineConfig {
        allow_from: Some(AddrRanges::parse("172.31.0.0/16").unwrap()),
        ..EngineConfig::default()
    });
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut out = Vec::new();
    let outsider: IpAddr = "192.0.2.66".parse().unwrap();
    for d in exchange(&mut c, "/forged") {
        e.on_datagram(1, Encap::Vxlan, outsider, &d, &mut out);
    }
    // Garbage from outside is not even looked at: one reason only.
    e.on_datagram(2, Encap::Vxlan, outsider, b"\x00garbage", &mut out);
    e.on_datagram(2, Encap::Geneve, outsider, b"\xffgarbage", &mut out);
    assert!(out.is_empty());
    assert_eq!(e.stats().drops(DropReason::SourceNotAllowed), 6);
    assert_eq!(e.stats().total_drops(), 6);
    assert_eq!(e.stats().packets, 6);
    assert_eq!(e.active_flows(), 0);
    // From inside: processed.
    let mut c = Conn::new(1, "10.0.0.1:40001", "10.0.0.2:80", 1);
    for d in exchange(&mut c, "/real") {
        e.on_datagram(3, Encap::Vxlan, ENI, &d, &mut out);
    }
    assert_eq!(targets(&out), ["/real"]);
    // In GWLB mode the sender checked is the load balancer node, not the mirrored ENI.
    let mut c = Conn::new(1, "10.0.0.1:40002", "10.0.0.2:80", 1);
    for d in exchange(&mut c, "/via-gwlb") {
        e.on_datagram(
            4,
            Encap::Geneve,
            GWLB_NODE,
            &geneve(&aws_options(1), &d),
            &mut out,
        );
    }
    assert_eq!(e.stats().drops(DropReason::SourceNotAllowed), 10);
}

fn targets(reqs: &[HttpRequest]) -> Vec<&str> {
    reqs.iter().map(|r| r.target.as_str()).collect()
}

/// One GENEVE datagram with options `area` around a valid mirror datagram.
fn with_options(area: &[u8]) -> Vec<u8> {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let good = geneve(&AwsOptions::default(), &c.syn());
    let inner = &good[geneve::HEADER_LEN..];
    let mut d = Vec::new();
    geneve::encapsulate_into(PROTOCOL_IPV4, area, inner, &mut d);
    d
}

#[test]
fn bad_geneve_input_is_counted_each_under_its_own_reason() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let syn = c.syn();
    let good = geneve(&aws_options(3), &syn);

    let mut truncated_area = good.clone();
    truncated_area.truncate(geneve::HEADER_LEN + 20); // the options area runs past the end
    let mut critical = Vec::new();
    push_option(&mut critical, 0x0105, 0x81, &[0; 4]);
    let mut long_option = Vec::new();
    push_option(&mut long_option, 0x0105, 0x01, &[0; 4]);
    long_option[3] = 5; // 20 bytes of data announced inside a 8-byte area
    let mut not_ip = good.clone();
    not_ip[2..4].copy_from_slice(&0x6558u16.to_be_bytes());
    let mut control = good.clone();
    control[1] |= 0x80;
    let mut version = good.clone();
    version[0] |= 0x80;
    // A GWLB used inline: the inner IP packet is the TCP segment itself, not VXLAN.
    let tcp_inner = {
        let frame = TcpFrame::new(c.client, c.server, 1).build(b"GET / HTTP/1.1\r\n\r\n");
        let mut d = Vec::new();
        geneve::encapsulate_into(PROTOCOL_IPV4, &[], &frame[14..], &mut d);
        d
    };
    // Inner IP packet to another UDP port.
    let other_udp = {
        let mut ip = Vec::new();
        UdpFrame::new((ENI, 1).into(), ([10, 9, 9, 9], 53).into()).write_ip(b"dns", &mut ip);
        let mut d = Vec::new();
        geneve::encapsulate_into(PROTOCOL_IPV4, &[], &ip, &mut d);
        d
    };
    let cases: [(&str, Encap, Vec<u8>, DropReason); 9] = [
        (
            "options area past the packet",
            Encap::Geneve,
            truncated_area,
            DropReason::GeneveOptionsTruncated,
        ),
        (
            "option past the area",
            Encap::Geneve,
            with_options(&long_option),
            DropReason::GeneveOptionsTruncated,
        ),
        (
            "unknown critical option",
            Encap::Geneve,
            with_options(&critical),
            DropReason::GeneveCriticalOption,
        ),
        (
            "inner protocol not IP",
            Encap::Geneve,
            not_ip,
            DropReason::GeneveNotIp,
        ),
        (
            "control packet",
            Encap::Geneve,
            control,
            DropReason::GeneveControl,
        ),
        (
            "version 2",
            Encap::Geneve,
            version,
            DropReason::GeneveMalformed,
        ),
        (
            "inner TCP, not VXLAN",
            Encap::Geneve,
            tcp_inner,
            DropReason::GeneveNotVxlan,
        ),
        (
            "inner UDP to another port",
            Encap::Geneve,
            other_udp,
            DropReason::GeneveNotVxlan,
        ),
        (
            "VXLAN on the GENEVE port",
            Encap::Geneve,
            syn.clone(),
            DropReason::VxlanOnGenevePort,
        ),
    ];
    for (what, encap, d, reason) in cases {
        let mut e = engine_with(EngineConfig::default());
        let mut out = Vec::new();
        e.on_datagram(1, encap, GWLB_NODE, &d, &mut out);
        assert_eq!(e.stats().drops(reason), 1, "{what}: {:?}", e.stats());
        assert_eq!(e.stats().total_drops(), 1, "{what}: one reason only");
        assert_eq!(e.active_flows(), 0, "{what}");
        // ... and nothing else is lost: the next good datagram goes through.
        e.on_datagram(2, Encap::Geneve, GWLB_NODE, &good, &mut out);
        assert_eq!(e.active_flows(), 1, "{what}");
    }
}

#[test]
fn a_geneve_packet_on_the_vxlan_port_is_named_as_such_whatever_the_vni_allow_list() {
    let mut c = Conn::new(9, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let syn = c.syn();
    // With AWS's three options the first byte is 0x08, which is also VXLAN's I flag.
    let aws = geneve(&aws_options(3), &syn);
    assert_eq!(aws[0], 0x08);
    let bare = geneve(&AwsOptions::default(), &syn);
    for allow in [None, Some(vec![9])] {
        let mut e = engine_with(EngineConfig {
            vni_allow: allow.clone(),
            ..EngineConfig::default()
        });
        let mut out = Vec::new();
        e.on_datagram(1, Encap::Vxlan, GWLB_NODE, &aws, &mut out);
        e.on_datagram(1, Encap::Vxlan, GWLB_NODE, &bare, &mut out);
        assert_eq!(
            e.stats().drops(DropReason::GeneveOnVxlanPort),
            2,
            "allow {allow:?}: {:?}",
            e.stats()
        );
        assert_eq!(e.stats().total_drops(), 2);
        // Real VXLAN is still VXLAN, and a disallowed VNI still says so.
        e.on_datagram(2, Encap::Vxlan, ENI, &syn, &mut out);
        e.on_datagram(2, Encap::Vxlan, ENI, &vxlan_datagram(77, b"x"), &mut out);
        assert_eq!(e.active_flows(), 1);
        assert_eq!(
            e.stats().drops(DropReason::VniNotAllowed)
                + e.stats().drops(DropReason::MalformedPacket),
            1
        );
    }
}

#[test]
fn captured_geneve_frames_are_replayed_with_the_inner_source_as_mirror_source() {
    let c = Conn::new(21, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let node = Ipv4Addr::new(10, 0, 200, 9);
    let aws = aws_options(0xfeed);
    let inner_frames = [
        TcpFrame::new(c.client, c.server, c.client_isn)
            .flags(crate::testkit::TcpFlags::SYN)
            .build(b""),
        TcpFrame::new(c.client, c.server, c.client_next()).build(b"GET /cap HTTP/1.1\r\n\r\n"),
    ];
    let mut e = engine_with(EngineConfig::default());
    let mut out = Vec::new();
    for (i, f) in inner_frames.iter().enumerate() {
        e.on_captured_frame(i as u64, &geneve_frame(node, &aws, ENI, 21, f), &mut out);
    }
    // And the same kind of frame as VXLAN: the outer IP source is the mirror source.
    let d = TcpFrame::new(c.client, "10.0.0.3:80".parse().unwrap(), 1)
        .build(b"GET /vx HTTP/1.1\r\n\r\n");
    e.on_captured_frame(9, &vxlan_frame(ENI, 21, &d), &mut out);
    e.finish(&mut out);
    assert_eq!(targets(&out), ["/cap", "/vx"]);
    assert_eq!(
        (out[0].gwlbe, out[0].mirror_source),
        (Some(0xfeed), Some(ENI))
    );
    assert_eq!((out[1].gwlbe, out[1].mirror_source), (None, Some(ENI)));
    // The allow-list of a replay checks the outer source: the GWLB node for GENEVE.
    let mut e = engine_with(EngineConfig {
        allow_from: Some(AddrRanges::parse("10.0.200.9").unwrap()),
        ..EngineConfig::default()
    });
    let mut out = Vec::new();
    e.on_captured_frame(
        1,
        &geneve_frame(node, &aws, ENI, 21, &inner_frames[1]),
        &mut out,
    );
    e.on_captured_frame(2, &vxlan_frame(ENI, 21, &inner_frames[1]), &mut out);
    assert_eq!(e.stats().drops(DropReason::SourceNotAllowed), 1);
    assert_eq!(e.active_flows(), 1);
}

/// The key of a frame as the full decode finds it (what `segment` looks up), if it is a VXLAN
/// frame carrying TCP or a plain TCP frame.
fn decoded_key(frame: &[u8]) -> Option<FlowKey> {
    match parse_ethernet(frame, true).ok()? {
        Parsed::Tunnel(Tunnel {
            encap: Encap::Vxlan,
            payload,
            ..
        }) => {
            let v = VxlanPacket::parse(payload).ok()?;
            match parse_ethernet(v.inner, false).ok()? {
                Parsed::Tcp(seg) => Some(FlowKey::new(v.vni, seg.src, seg.dst)),
                Parsed::Tunnel(_) => None,
            }
        }
        Parsed::Tcp(seg) => Some(FlowKey::new(0, seg.src, seg.dst)),
        Parsed::Tunnel(_) => None,
    }
}

/// A captured frame around a VXLAN datagram of the test kit (from the mirrored ENI).
fn captured(datagram: &[u8]) -> Vec<u8> {
    UdpFrame::new((ENI, 49152).into(), ([10, 99, 0, 1], 4789).into()).build(datagram)
}

#[test]
fn the_prefetch_peek_finds_the_key_of_a_mirrored_ipv4_segment() {
    let mut c = Conn::new(77, "10.0.0.1:40000", "10.0.0.2:8080", 1000);
    for d in exchange(&mut c, "/p") {
        let frame = captured(&d);
        let key = super::tunnel::vxlan_v4_key(&frame);
        assert!(key.is_some());
        assert_eq!(key, decoded_key(&frame));
    }
}

proptest::proptest! {
    /// A hint may be missing or useless (a frame the decode then drops), never misleading:
    /// whenever the peek and the full decode both find a key, it is the same key; cut or
    /// corrupted frames never panic.
    #[test]
    fn the_prefetch_peek_never_disagrees_with_the_decode(
        payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        cut in proptest::prelude::any::<u16>(),
        flips in proptest::collection::vec((proptest::prelude::any::<u16>(), proptest::prelude::any::<u8>()), 0..4),
        v6 in proptest::prelude::any::<bool>(),
    ) {
        let (client, server) = if v6 {
            ("[fd00::1]:40000", "[fd00::2]:80")
        } else {
            ("10.0.0.1:40000", "10.0.0.2:80")
        };
        let mut c = Conn::new(9, client, server, 5);
        c.syn();
        c.syn_ack();
        let d = c.send(&payload);
        let mut frame = captured(&d);
        for (at, x) in flips {
            let at = usize::from(at) % frame.len();
            frame[at] ^= x;
        }
        frame.truncate(usize::from(cut) % (frame.len() + 1));
        if let (Some(peeked), Some(decoded)) = (super::tunnel::vxlan_v4_key(&frame), decoded_key(&frame)) {
            proptest::prop_assert_eq!(peeked, decoded);
        }
    }
}
