//! Building frames: the inverse of [`super::parse_ethernet`]. The one frame builder of the
//! project — the capture generator (`rebuilder generate`, [`crate::offline::synth`]) and every
//! test, benchmark and fuzz target write their Ethernet / 802.1Q / IPv4 / IPv6 / TCP / UDP
//! frames with it (through `rebuilder-testkit`, which re-exports it, outside this crate).
//!
//! Headers are written by etherparse's `PacketBuilder` with valid lengths and checksums; a
//! frame's payload is whatever the caller passes (truncate the result to imitate AWS
//! PacketLength). VXLAN: [`vxlan_datagram`] (the UDP payload the rebuilder receives) and
//! [`UdpFrame`] (the outer frame a capture holds). GENEVE as a Gateway Load Balancer sends
//! it: [`geneve_datagram`] (the UDP/6081 payload around the mirror's VXLAN datagram as an IP
//! packet) and [`geneve_frame`].

use std::net::{IpAddr, SocketAddr};

use etherparse::{PacketBuilder, VlanId};

use crate::engine::encap::geneve::{AwsOptions, GENEVE_PORT, encapsulate_aws_into};
use crate::engine::encap::vxlan::{VXLAN_PORT, encapsulate};

/// TCP flags of a built segment. `ack` is the ACK flag with its acknowledgment number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub ack: Option<u32>,
}

impl TcpFlags {
    /// SYN only.
    pub const SYN: TcpFlags = TcpFlags {
        syn: true,
        fin: false,
        rst: false,
        psh: false,
        ack: None,
    };

    /// ACK with this acknowledgment number.
    pub const fn ack(n: u32) -> TcpFlags {
        TcpFlags {
            syn: false,
            fin: false,
            rst: false,
            psh: false,
            ack: Some(n),
        }
    }

    /// These flags plus FIN.
    pub const fn fin(mut self) -> TcpFlags {
        self.fin = true;
        self
    }

    /// These flags plus RST.
    pub const fn rst(mut self) -> TcpFlags {
        self.rst = true;
        self
    }

    /// These flags plus PSH.
    pub const fn psh(mut self) -> TcpFlags {
        self.psh = true;
        self
    }

    /// These flags plus SYN.
    pub const fn syn(mut self) -> TcpFlags {
        self.syn = true;
        self
    }
}

/// One TCP segment in an Ethernet frame: every header field the generator or a test sets.
#[derive(Debug, Clone, Copy)]
pub struct TcpFrame<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// 802.1Q / QinQ tags, outer first (at most two; ids below 4095).
    pub vlans: &'a [u16],
    /// Source address and port (both ends of one family).
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub flags: TcpFlags,
    pub window: u16,
    /// Raw TCP options: a multiple of 4 bytes, at most 40.
    pub options: &'a [u8],
}

impl<'a> TcpFrame<'a> {
    /// The receive window of a new frame (Linux's initial window for a 1460-byte MSS).
    pub const DEFAULT_WINDOW: u16 = 64240;

    /// A segment from `src` to `dst` with sequence number `seq`, no flag, no tag, no option,
    /// between two fixed locally administered MAC addresses.
    pub fn new(src: SocketAddr, dst: SocketAddr, seq: u32) -> TcpFrame<'a> {
        TcpFrame {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            vlans: &[],
            src,
            dst,
            seq,
            flags: TcpFlags::default(),
            window: Self::DEFAULT_WINDOW,
            options: &[],
        }
    }

    /// The same segment with these flags.
    pub fn flags(mut self, flags: TcpFlags) -> TcpFrame<'a> {
        self.flags = flags;
        self
    }

    /// Appends the frame carrying `payload` to `out`.
    ///
    /// Panics on a builder misuse: mixed address families, more than two VLAN tags, a VLAN id
    /// of 4095 or more, malformed options, or a payload too large for one IP packet.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let tags: Vec<VlanId> = self
            .vlans
            .iter()
            .map(|v| VlanId::try_new(*v).expect("VLAN ids are below 4095"))
            .collect();
        macro_rules! tcp {
            ($ip:expr) => {{
                let mut tcp = $ip.tcp(self.src.port(), self.dst.port(), self.seq, self.window);
                if self.flags.syn {
                    tcp = tcp.syn();
                }
                if self.flags.fin {
                    tcp = tcp.fin();
                }
                if self.flags.rst {
                    tcp = tcp.rst();
                }
                if self.flags.psh {
                    tcp = tcp.psh();
                }
                if let Some(n) = self.flags.ack {
                    tcp = tcp.ack(n);
                }
                if !self.options.is_empty() {
                    tcp = tcp
                        .options_raw(self.options)
                        .expect("TCP options are at most 40 bytes and 4-aligned");
                }
                out.reserve(tcp.size(payload.len()));
                tcp.write(out, payload)
                    .expect("writing to a Vec cannot fail and the sizes are within IP limits");
            }};
        }
        macro_rules! ip {
            ($link:expr) => {
                match (self.src.ip(), self.dst.ip()) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => tcp!($link.ipv4(s.octets(), d.octets(), 64)),
                    (IpAddr::V6(s), IpAddr::V6(d)) => tcp!($link.ipv6(s.octets(), d.octets(), 64)),
                    _ => panic!("a TCP frame needs both ends in one address family"),
                }
            };
        }
        match tags.as_slice() {
            [] => ip!(eth),
            [v] => ip!(eth.single_vlan(*v)),
            [outer, inner] => ip!(eth.double_vlan(*outer, *inner)),
            _ => panic!("at most two VLAN tags"),
        }
    }

    /// The frame carrying `payload`.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(payload, &mut out);
        out
    }
}

/// One UDP datagram in an Ethernet frame: the carrier of a VXLAN datagram in a capture.
#[derive(Debug, Clone, Copy)]
pub struct UdpFrame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Source address and port (both ends of one family).
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl UdpFrame {
    /// A datagram from `src` to `dst` between two fixed locally administered MAC addresses.
    pub fn new(src: SocketAddr, dst: SocketAddr) -> UdpFrame {
        UdpFrame {
            src_mac: [2, 0, 0, 0, 1, 1],
            dst_mac: [2, 0, 0, 0, 1, 2],
            src,
            dst,
        }
    }

    /// Appends the frame carrying `payload` to `out`. Panics on mixed address families.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let (sport, dport) = (self.src.port(), self.dst.port());
        let result = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth
                .ipv4(s.octets(), d.octets(), 64)
                .udp(sport, dport)
                .write(out, payload),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth
                .ipv6(s.octets(), d.octets(), 64)
                .udp(sport, dport)
                .write(out, payload),
            _ => panic!("a UDP frame needs both ends in one address family"),
        };
        result.expect("writing to a Vec cannot fail and the sizes are within IP limits");
    }

    /// The frame carrying `payload`.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 62);
        self.write(payload, &mut out);
        out
    }

    /// Appends only the IP packet (no link layer) carrying `payload` to `out`: what a Gateway
    /// Load Balancer puts inside GENEVE. Panics on mixed address families.
    pub fn write_ip(&self, payload: &[u8], out: &mut Vec<u8>) {
        let (sport, dport) = (self.src.port(), self.dst.port());
        let result = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
                .udp(sport, dport)
                .write(out, payload),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
                .udp(sport, dport)
                .write(out, payload),
            _ => panic!("a UDP packet needs both ends in one address family"),
        };
        result.expect("writing to a Vec cannot fail and the sizes are within IP limits");
    }
}

/// The VXLAN datagram (a UDP payload, as the rebuilder receives it) carrying `inner`.
pub fn vxlan_datagram(vni: u32, inner: &[u8]) -> Vec<u8> {
    encapsulate(vni, inner)
}

/// The GWLB endpoint id of [`geneve_datagram`]'s AWS options when a test does not care
/// (`vpce-00123456789abcdef`).
pub const TEST_GWLBE: u64 = 0x0123_4567_89ab_cdef;

/// AWS's three GENEVE options for endpoint `gwlbe` (attachment id and flow cookie derived
/// from it).
pub fn aws_options(gwlbe: u64) -> AwsOptions {
    AwsOptions {
        endpoint_id: Some(gwlbe),
        attachment_id: Some(gwlbe.rotate_left(17) ^ 0x5a5a),
        flow_cookie: Some(gwlbe as u32 ^ 0x0bad_cafe),
    }
}

/// The UDP/6081 payload a Gateway Load Balancer sends when a GWLB endpoint is the mirror
/// target: GENEVE with `aws`'s options around the mirror's VXLAN datagram `vxlan` as an IP
/// packet from `mirror_src` (the source ENI; port 49152) to the endpoint's address
/// (10.99.0.2 or fd00:99::2) on UDP/4789.
pub fn geneve_datagram(aws: &AwsOptions, mirror_src: IpAddr, vxlan: &[u8]) -> Vec<u8> {
    let endpoint: IpAddr = match mirror_src {
        IpAddr::V4(_) => [10, 99, 0, 2].into(),
        IpAddr::V6(_) => [0xfd00, 0x99, 0, 0, 0, 0, 0, 2].into(),
    };
    let mut ip = Vec::with_capacity(vxlan.len() + 48);
    UdpFrame::new(
        SocketAddr::new(mirror_src, 49152),
        SocketAddr::new(endpoint, VXLAN_PORT),
    )
    .write_ip(vxlan, &mut ip);
    let mut out = Vec::with_capacity(ip.len() + 40);
    encapsulate_aws_into(aws, &ip, &mut out);
    out
}

/// A captured GENEVE frame: `gwlb_node` (IPv4, as AWS always sends GENEVE) → 10.99.0.1,
/// UDP 50000 → 6081, carrying [`geneve_datagram`] for VNI `vni` and inner frame `inner`.
pub fn geneve_frame(
    gwlb_node: std::net::Ipv4Addr,
    aws: &AwsOptions,
    mirror_src: IpAddr,
    vni: u32,
    inner: &[u8],
) -> Vec<u8> {
    UdpFrame::new(
        SocketAddr::new(gwlb_node.into(), 50000),
        SocketAddr::new([10, 99, 0, 1].into(), GENEVE_PORT),
    )
    .build(&geneve_datagram(aws, mirror_src, &encapsulate(vni, inner)))
}

/// A captured outer frame: `outer_src` → 10.99.0.1, UDP 49152 → 4789, VXLAN `vni`, `inner`.
pub fn vxlan_frame(outer_src: IpAddr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let collector: IpAddr = match outer_src {
        IpAddr::V4(_) => [10, 99, 0, 1].into(),
        IpAddr::V6(_) => [0xfd00, 0x99, 0, 0, 0, 0, 0, 1].into(),
    };
    UdpFrame::new(
        SocketAddr::new(outer_src, 49152),
        SocketAddr::new(collector, VXLAN_PORT),
    )
    .build(&encapsulate(vni, inner))
}
