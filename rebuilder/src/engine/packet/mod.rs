//! Inner (and outer) packet parsing: Ethernet II, 802.1Q / QinQ, IPv4 (options) or IPv6
//! (extension headers), TCP (options), with etherparse's zero-copy lax slicing.
//!
//! Checksums are never verified: AWS truncation (PacketLength) removes the bytes they cover.
//! A packet whose IP length announces more bytes than were captured yields the bytes
//! present and the count of the missing tail ([`TcpSegment::missing`]), which the
//! reassembly turns into a gap.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{
    EtherType, Ethernet2Header, Ethernet2HeaderSlice, LaxIpv4Slice, LaxIpv6Slice, SingleVlanHeader,
    SingleVlanHeaderSlice, TcpSlice, UdpSlice, ip_number,
};
use thiserror::Error;

use crate::engine::encap::vxlan::VXLAN_PORT;

/// One TCP segment, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Sequence number of the first byte (or of the SYN).
    pub seq: u32,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// Payload bytes present in the capture.
    pub payload: &'a [u8],
    /// Payload bytes announced by the IP length but cut off (PacketLength, snap length).
    pub missing: u32,
}

impl TcpSegment<'_> {
    /// Payload length on the wire (present + missing).
    pub fn wire_len(&self) -> u32 {
        self.payload.len() as u32 + self.missing
    }
}

/// What a frame turned out to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A TCP segment.
    Tcp(TcpSegment<'a>),
    /// A UDP datagram to port 4789: its payload (VXLAN header first).
    Vxlan(&'a [u8]),
}

/// Why a frame yields no TCP segment. Each maps to one drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PacketError {
    /// Headers cut short or invalid.
    #[error("malformed frame")]
    Malformed,
    /// An IP fragment (fragments are not reassembled).
    #[error("IP fragment")]
    Fragment,
    /// Not TCP (and not VXLAN where that is allowed).
    #[error("not a TCP segment")]
    NonTcp,
}

/// Parses an Ethernet frame. With `vxlan_allowed`, a UDP datagram to port 4789 is returned
/// as [`Parsed::Vxlan`]; otherwise it is [`PacketError::NonTcp`] (no nested VXLAN).
///
/// Layer by layer with etherparse's header slices (cheaper than the all-in-one
/// `LaxSlicedPacket`, which copies a large struct per packet): Ethernet II, any number of
/// 802.1Q / 802.1ad / QinQ tags, then lax IPv4 / IPv6 (a length beyond the captured bytes
/// yields the bytes present), then TCP or UDP.
pub fn parse_ethernet(frame: &[u8], vxlan_allowed: bool) -> Result<Parsed<'_>, PacketError> {
    let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| PacketError::Malformed)?;
    let mut ether_type = eth.ether_type();
    let mut rest = &frame[Ethernet2Header::LEN..];
    while matches!(
        ether_type,
        EtherType::VLAN_TAGGED_FRAME
            | EtherType::PROVIDER_BRIDGING
            | EtherType::VLAN_DOUBLE_TAGGED_FRAME
    ) {
        let vlan = SingleVlanHeaderSlice::from_slice(rest).map_err(|_| PacketError::Malformed)?;
        ether_type = vlan.ether_type();
        rest = &rest[SingleVlanHeader::LEN..];
    }
    let ip_present = rest.len();
    let (src_ip, dst_ip, claimed_ip_len, payload) = match ether_type {
        EtherType::IPV4 => {
            let (v4, err) = LaxIpv4Slice::from_slice(rest).map_err(|_| PacketError::Malformed)?;
            if err.is_some() {
                return Err(PacketError::Malformed);
            }
            let h = v4.header();
            (
                IpAddr::V4(Ipv4Addr::from(h.source())),
                IpAddr::V4(Ipv4Addr::from(h.destination())),
                usize::from(h.total_len()),
                v4.payload().clone(),
            )
        }
        EtherType::IPV6 => {
            let (v6, err) = LaxIpv6Slice::from_slice(rest).map_err(|_| PacketError::Malformed)?;
            if err.is_some() {
                return Err(PacketError::Malformed);
            }
            let h = v6.header();
            (
                IpAddr::V6(Ipv6Addr::from(h.source())),
                IpAddr::V6(Ipv6Addr::from(h.destination())),
                40 + usize::from(h.payload_length()),
                v6.payload().clone(),
            )
        }
        _ => return Err(PacketError::NonTcp),
    };
    if payload.fragmented {
        return Err(PacketError::Fragment);
    }
    match payload.ip_number {
        ip_number::TCP => {
            let tcp = TcpSlice::from_slice(payload.payload).map_err(|_| PacketError::Malformed)?;
            // Bytes of the IP packet present in the frame vs. announced by its header.
            let missing = claimed_ip_len.saturating_sub(ip_present) as u32;
            Ok(Parsed::Tcp(TcpSegment {
                src: SocketAddr::new(src_ip, tcp.source_port()),
                dst: SocketAddr::new(dst_ip, tcp.destination_port()),
                seq: tcp.sequence_number(),
                syn: tcp.syn(),
                ack: tcp.ack(),
                fin: tcp.fin(),
                rst: tcp.rst(),
                payload: tcp.payload(),
                missing,
            }))
        }
        ip_number::UDP if vxlan_allowed => {
            let udp =
                UdpSlice::from_slice_lax(payload.payload).map_err(|_| PacketError::Malformed)?;
            if udp.destination_port() == VXLAN_PORT {
                Ok(Parsed::Vxlan(udp.payload()))
            } else {
                Err(PacketError::NonTcp)
            }
        }
        _ => Err(PacketError::NonTcp),
    }
}

/// Test helpers: frames built with etherparse's `PacketBuilder`.
#[cfg(test)]
pub(crate) mod build {
    use std::net::{IpAddr, SocketAddr};

    use etherparse::PacketBuilder;

    /// TCP flags of a test segment.
    #[derive(Debug, Clone, Copy, Default)]
    pub(crate) struct Flags {
        pub syn: bool,
        pub ack: bool,
        pub fin: bool,
        pub rst: bool,
        /// Acknowledgment number (sent when `ack`).
        pub ack_num: u32,
    }

    /// An Ethernet frame carrying one TCP segment from `src` to `dst`.
    pub(crate) fn tcp_frame(
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        flags: Flags,
        payload: &[u8],
    ) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
            _ => panic!("mixed address families"),
        };
        let mut tcp = ip.tcp(src.port(), dst.port(), seq, 64240);
        if flags.syn {
            tcp = tcp.syn();
        }
        if flags.ack {
            tcp = tcp.ack(flags.ack_num);
        }
        if flags.fin {
            tcp = tcp.fin();
        }
        if flags.rst {
            tcp = tcp.rst();
        }
        let mut out = Vec::with_capacity(tcp.size(payload.len()));
        tcp.write(&mut out, payload).unwrap();
        out
    }

    /// A VXLAN datagram (UDP payload) carrying `inner`.
    pub(crate) fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
        crate::engine::encap::vxlan::encapsulate(vni, inner)
    }

    /// An outer Ethernet/IPv4/UDP:4789 frame carrying a VXLAN datagram with `inner`.
    pub(crate) fn outer_frame(outer_src: [u8; 4], vni: u32, inner: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2])
            .ipv4(outer_src, [10, 99, 0, 1], 64)
            .udp(49152, crate::engine::encap::vxlan::VXLAN_PORT);
        let payload = vxlan(vni, inner);
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, &payload).unwrap();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use etherparse::{PacketBuilder, TcpOptionElement, VlanId};

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
        let f = tcp_frame(
            addr("10.0.0.1:40000"),
            addr("10.0.0.2:80"),
            1000,
            Flags {
                ack: true,
                fin: true,
                ..Flags::default()
            },
            b"GET / HTTP/1.1\r\n\r\n",
        );
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
        let f = tcp_frame(
            addr("[fd00::1]:5000"),
            addr("[fd00::2]:8080"),
            7,
            Flags::default(),
            b"abc",
        );
        let t = tcp_of(&f);
        assert_eq!(t.src, addr("[fd00::1]:5000"));
        assert_eq!(t.payload, b"abc");
    }

    #[test]
    fn frame_cut_short_reports_missing_tail() {
        let f = tcp_frame(
            addr("10.0.0.1:1"),
            addr("10.0.0.2:2"),
            1,
            Flags::default(),
            &[b'x'; 1000],
        );
        let cut = &f[..f.len() - 300];
        let t = tcp_of(cut);
        assert_eq!(t.payload.len(), 700);
        assert_eq!(t.missing, 300);
        assert_eq!(t.wire_len(), 1000);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut f = tcp_frame(
            addr("10.0.0.1:1"),
            addr("10.0.0.2:2"),
            1,
            Flags::default(),
            b"",
        );
        f.extend_from_slice(&[0; 6]);
        let t = tcp_of(&f);
        assert!(t.payload.is_empty());
        assert_eq!(t.missing, 0);
    }

    #[test]
    fn vlan_and_qinq_tags_are_skipped() {
        for double in [false, true] {
            let eth = PacketBuilder::ethernet2([2; 6], [3; 6]);
            let b = if double {
                eth.double_vlan(VlanId::try_new(10).unwrap(), VlanId::try_new(20).unwrap())
            } else {
                eth.single_vlan(VlanId::try_new(10).unwrap())
            };
            let b = b.ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9).tcp(1, 2, 3, 4);
            let mut f = Vec::new();
            b.write(&mut f, b"hi").unwrap();
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
        let f = outer_frame([10, 0, 0, 9], 5, b"inner");
        match parse_ethernet(&f, true).unwrap() {
            Parsed::Vxlan(p) => assert_eq!(&p[8..], b"inner"),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_ethernet(&f, false), Err(PacketError::NonTcp));
    }

    #[test]
    fn truncated_tcp_header_is_malformed() {
        let f = tcp_frame(
            addr("10.0.0.1:1"),
            addr("10.0.0.2:2"),
            1,
            Flags::default(),
            b"",
        );
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
}
