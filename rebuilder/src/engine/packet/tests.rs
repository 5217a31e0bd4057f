use super::build::{TcpFlags, TcpFrame, UdpFrame, vxlan_frame};
use super::*;
use etherparse::{PacketBuilder, TcpOptionElement};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tcp_of(frame: &[u8]) -> TcpSegment<'_> {
    match parse_ethernet(frame, false).unwrap() {
        Parsed::Tcp(t) => t,
        other => panic!("not tcp: {other:?}"),
    }
}

#[test]
fn ipv4_tcp_segment_yields_addresses_seq_flags_and_payload() {
    let f = TcpFrame::new(addr("10.0.0.1:40000"), addr("10.0.0.2:80"), 1000)
        .flags(TcpFlags::ack(0).fin())
        .build(b"GET / HTTP/1.1\r\n\r\n");
    let t = tcp_of(&f);
    assert_eq!(t.src, addr("10.0.0.1:40000"));
    assert_eq!(t.dst, addr("10.0.0.2:80"));
    assert_eq!(t.seq, 1000);
    assert!(t.fin && t.ack && !t.syn && !t.rst);
    assert_eq!(t.payload, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(t.missing, 0);
}

#[test]
fn ipv6_tcp_segment_is_parsed() {
    let f = TcpFrame::new(addr("[fd00::1]:5000"), addr("[fd00::2]:8080"), 7).build(b"abc");
    let t = tcp_of(&f);
    assert_eq!(t.src, addr("[fd00::1]:5000"));
    assert_eq!(t.payload, b"abc");
}

#[test]
fn frame_cut_short_reports_missing_tail() {
    let f = TcpFrame::new(addr("10.0.0.1:1"), addr("10.0.0.2:2"), 1).build(&[b'x'; 1000]);
    let cut = &f[..f.len() - 300];
    let t = tcp_of(cut);
    assert_eq!(t.payload.len(), 700);
    assert_eq!(t.missing, 300);
    assert_eq!(t.wire_len(), 1000);
}

#[test]
fn ethernet_padding_is_not_payload() {
    let mut f = TcpFrame::new(addr("10.0.0.1:1"), addr("10.0.0.2:2"), 1).build(b"");
    f.extend_from_slice(&[0; 6]);
    let t = tcp_of(&f);
    assert!(t.payload.is_empty());
    assert_eq!(t.missing, 0);
}

#[test]
fn vlan_and_qinq_tags_are_skipped() {
    for double in [false, true] {
        let tags: &[u16] = if double { &[10, 20] } else { &[10] };
        let f = TcpFrame {
            vlans: tags,
            ..TcpFrame::new(addr("1.1.1.1:1"), addr("2.2.2.2:2"), 3)
        }
        .build(b"hi");
        assert_eq!(tcp_of(&f).payload, b"hi");
    }
}

#[test]
fn tcp_options_and_ipv4_options_are_skipped() {
    let mut ip =
        etherparse::Ipv4Header::new(0, 64, ip_number::TCP, [1, 1, 1, 1], [2, 2, 2, 2]).unwrap();
    ip.options = [1u8, 1, 1, 0][..].try_into().unwrap();
    let b = PacketBuilder::ethernet2([2; 6], [3; 6])
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(1, 2, 3, 4)
        .options(&[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::Timestamp(1, 2),
        ])
        .unwrap();
    let mut f = Vec::new();
    b.write(&mut f, b"payload").unwrap();
    assert_eq!(tcp_of(&f).payload, b"payload");
}

#[test]
fn ipv4_fragment_is_reported() {
    let mut ip =
        etherparse::Ipv4Header::new(0, 64, ip_number::TCP, [1, 1, 1, 1], [2, 2, 2, 2]).unwrap();
    ip.more_fragments = true;
    let b = PacketBuilder::ethernet2([2; 6], [3; 6])
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(1, 2, 3, 4);
    let mut f = Vec::new();
    b.write(&mut f, b"payload").unwrap();
    assert_eq!(parse_ethernet(&f, false), Err(PacketError::Fragment));
}

#[test]
fn udp_to_4789_is_vxlan_only_when_allowed() {
    let f = vxlan_frame([10, 0, 0, 9].into(), 5, b"inner");
    match parse_ethernet(&f, true).unwrap() {
        Parsed::Tunnel(t) => {
            assert_eq!(t.encap, Encap::Vxlan);
            assert_eq!(t.source, IpAddr::from([10, 0, 0, 9]), "the sender is kept");
            assert_eq!(&t.payload[8..], b"inner");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(parse_ethernet(&f, false), Err(PacketError::NonTcp));
}

#[test]
fn udp_to_6081_is_geneve_and_other_ports_are_not_tunnels() {
    let to = |port: u16| {
        UdpFrame::new(
            addr("10.0.0.9:40000"),
            SocketAddr::new([10, 0, 0, 1].into(), port),
        )
        .build(b"geneve")
    };
    match parse_ethernet(&to(6081), true).unwrap() {
        Parsed::Tunnel(t) => {
            assert_eq!(t.encap, Encap::Geneve);
            assert_eq!(t.payload, b"geneve");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(parse_ethernet(&to(6082), true), Err(PacketError::NonTcp));
    assert_eq!(parse_ethernet(&to(6081), false), Err(PacketError::NonTcp));
}

#[test]
fn an_ip_packet_without_a_link_layer_is_parsed_from_its_ethertype() {
    let f = vxlan_frame([10, 0, 0, 9].into(), 5, b"inner");
    match parse_ip(etherparse::EtherType::IPV4, &f[14..], true).unwrap() {
        Parsed::Tunnel(t) => assert_eq!(t.source, IpAddr::from([10, 0, 0, 9])),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        parse_ip(etherparse::EtherType::ARP, &f[14..], true),
        Err(PacketError::NonTcp)
    );
}

#[test]
fn truncated_tcp_header_is_malformed() {
    let f = TcpFrame::new(addr("10.0.0.1:1"), addr("10.0.0.2:2"), 1).build(b"");
    assert_eq!(
        parse_ethernet(&f[..14 + 20 + 10], false),
        Err(PacketError::Malformed)
    );
    assert_eq!(parse_ethernet(&f[..10], false), Err(PacketError::Malformed));
}

#[test]
fn arp_is_not_tcp() {
    let b = PacketBuilder::ethernet2([2; 6], [3; 6]).arp(
        etherparse::ArpPacket::new(
            etherparse::ArpHardwareId::ETHERNET,
            etherparse::EtherType::IPV4,
            etherparse::ArpOperation::REQUEST,
            &[2; 6],
            &[1, 1, 1, 1],
            &[0; 6],
            &[2, 2, 2, 2],
        )
        .unwrap(),
    );
    let mut f = Vec::new();
    b.write(&mut f).unwrap();
    assert_eq!(parse_ethernet(&f, true), Err(PacketError::NonTcp));
}

use proptest::prelude::{Just, any, prop_oneof};

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
    /// The hand-read common shapes (IPv4 TCP, IPv4 UDP) are read exactly as etherparse reads
    /// them: for generated IPv4 headers with any header length, fragment bits, total length
    /// (shorter than the header, equal to it, short, exact, long), protocol, TCP data offset
    /// and flags, UDP length (below 8, 8, short, long) and a cut anywhere, both readings give
    /// the same result.
    #[test]
    fn the_hand_read_ipv4_path_reads_what_etherparse_reads(
        ihl in 0u8..16,
        version in prop_oneof![9 => Just(4u8), 1 => 0u8..16],
        // DF only (not a fragment), MF, an offset, anything
        frag in prop_oneof![
            4 => Just(0x4000u16),
            1 => Just(0x2000),
            1 => Just(1),
            1 => any::<u16>(),
        ],
        (total_mode, total_delta, small_total) in (0u8..4, -30i32..30, 0u16..80),
        protocol in prop_oneof![3 => Just(6u8), 3 => Just(17), 1 => Just(51), 1 => any::<u8>()],
        offset in 0u8..16,
        flags in any::<u8>(),
        (udp_mode, udp_delta, small_udp) in (0u8..4, -10i32..10, 0u16..20),
        dport in prop_oneof![Just(4789u16), Just(6081), any::<u16>()],
        body in proptest::collection::vec(any::<u8>(), 0..80),
        cut in any::<proptest::sample::Index>(),
        tunnels in any::<bool>(),
    ) {
        let mut p = body; // header bytes overwritten below; the rest is payload
        p.resize(p.len().max(100), 0xab);
        p[0] = (version << 4) | ihl;
        let hl = usize::from(ihl) * 4;
        let total = match total_mode {
            0 => (p.len() as i32 + total_delta).clamp(0, 0xffff) as u16,
            1 => small_total,
            2 => hl as u16,
            _ => hl.saturating_sub(1) as u16,
        };
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[9] = protocol;
        let l4 = hl.max(20);
        if p.len() >= l4 + 20 {
            p[l4 + 2..l4 + 4].copy_from_slice(&dport.to_be_bytes());
            let udp_len = match udp_mode {
                0 => ((p.len() - l4) as i32 + udp_delta).clamp(0, 0xffff) as u16,
                1 => small_udp,
                2 => 8,
                _ => 7,
            };
            if protocol == 17 {
                p[l4 + 4..l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
            }
            p[l4 + 12] = offset << 4;
            p[l4 + 13] = flags;
        }
        let cut = cut.index(p.len() + 1);
        let p = &p[..cut];
        proptest::prop_assert_eq!(
            parse_ip(EtherType::IPV4, p, tunnels),
            parse_ip_general(EtherType::IPV4, p, tunnels)
        );
    }
}
