//! The wire side of a generated connection: addresses, MAC addresses, TCP options and MSS,
//! and the frames themselves (built with [`crate::engine::packet::build`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::script::{Dir, Ev, F_ACK, F_FIN, F_PSH, F_RST, F_SYN, SynthConnection, mss_of};
use crate::engine::encap::geneve::{AwsOptions, GENEVE_PORT, encapsulate_aws_into};
use crate::engine::encap::vxlan::VXLAN_PORT;
use crate::engine::packet::build::{TcpFlags, TcpFrame, UdpFrame};

const COLLECTOR_V4: [u8; 4] = [172, 31, 0, 100];
const COLLECTOR_V6: [u8; 16] = [0xfd, 0, 0, 0xa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64];

/// The outer frame of a mirrored packet: from the source ENI's address `src` (port `sport`,
/// a hash of the inner 5-tuple in AWS) to the collector's UDP/4789, carrying `datagram` (a
/// VXLAN header and the inner frame).
pub(super) fn outer_frame(src: IpAddr, sport: u16, datagram: &[u8]) -> Vec<u8> {
    let collector = match src {
        IpAddr::V4(_) => IpAddr::from(COLLECTOR_V4),
        IpAddr::V6(_) => IpAddr::from(COLLECTOR_V6),
    };
    UdpFrame {
        src_mac: [0x02, 0, 0, 0, 0, 0x01],
        dst_mac: [0x02, 0, 0, 0, 0, 0x64],
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(collector, VXLAN_PORT),
    }
    .build(datagram)
}

/// The GENEVE frame a Gateway Load Balancer node sends to the collector (UDP/6081) when a
/// GWLB endpoint is the mirror target: the mirror's VXLAN datagram `datagram`, sent by `src`
/// (port `sport`) to the endpoint's address on UDP/4789, as an IP packet inside GENEVE with
/// AWS's options for endpoint `gwlbe` (attachment id per endpoint, flow cookie per
/// connection). AWS sends GENEVE over IPv4 whatever the inner family; the node is one of three
/// (one per zone) chosen by the flow.
pub(super) fn gwlb_frame(src: IpAddr, sport: u16, gwlbe: u64, datagram: &[u8]) -> Vec<u8> {
    let endpoint = match src {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(172, 31, 0, 50)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 0, 0x50)),
    };
    let mut ip = Vec::with_capacity(datagram.len() + 48);
    UdpFrame::new(
        SocketAddr::new(src, sport),
        SocketAddr::new(endpoint, VXLAN_PORT),
    )
    .write_ip(datagram, &mut ip);
    let aws = AwsOptions {
        endpoint_id: Some(gwlbe),
        attachment_id: Some(gwlbe.rotate_left(13) ^ 0x0000_7a7a),
        flow_cookie: Some(u32::from(sport).wrapping_mul(0x9e37_79b9)),
    };
    let mut geneve = Vec::with_capacity(ip.len() + 40);
    encapsulate_aws_into(&aws, &ip, &mut geneve);
    let node = Ipv4Addr::new(172, 31, 0, 200 + (sport % 3) as u8);
    UdpFrame {
        src_mac: [0x02, 0, 0, 0, 0, 0xc8],
        dst_mac: [0x02, 0, 0, 0, 0, 0x64],
        src: SocketAddr::new(IpAddr::V4(node), sport),
        dst: SocketAddr::new(IpAddr::from(COLLECTOR_V4), GENEVE_PORT),
    }
    .build(&geneve)
}

fn mac_of(ip: &IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            [0x02, 0x42, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(a) => {
            let o = a.octets();
            [0x02, 0x66, o[12], o[13], o[14], o[15]]
        }
    }
}

fn tcp_options(conn: &SynthConnection, ev: &Ev, mss: u16) -> Vec<u8> {
    let mut o = Vec::with_capacity(20);
    if ev.flags & F_SYN != 0 {
        o.extend_from_slice(&[2, 4]);
        o.extend_from_slice(&mss.to_be_bytes());
        o.extend_from_slice(&[1, 3, 3, 7, 4, 2]);
        if conn.tcp_ts {
            o.extend_from_slice(&[8, 10]);
            o.extend_from_slice(&conn.ts_counter.to_be_bytes());
            o.extend_from_slice(&0u32.to_be_bytes());
        }
        while o.len() % 4 != 0 {
            o.push(1);
        }
    } else if conn.tcp_ts {
        o.extend_from_slice(&[1, 1, 8, 10]);
        o.extend_from_slice(&conn.ts_counter.to_be_bytes());
        o.extend_from_slice(&conn.ts_counter.wrapping_sub(3).to_be_bytes());
    }
    o
}

/// Appends the inner frame of scripted segment `ev` of `conn` to `out`.
pub(super) fn inner_frame(conn: &SynthConnection, ev: &Ev, mtu: usize, out: &mut Vec<u8>) {
    let (src, dst, stream, isn, peer_isn) = match ev.dir {
        Dir::ClientToServer => (
            conn.client,
            conn.server,
            &conn.c_stream,
            conn.c_isn,
            conn.s_isn,
        ),
        Dir::ServerToClient => (
            conn.server,
            conn.client,
            &conn.s_stream,
            conn.s_isn,
            conn.c_isn,
        ),
    };
    let payload = &stream[ev.start..ev.end];
    let seq = if ev.flags & F_SYN != 0 {
        isn
    } else {
        isn.wrapping_add(1)
            .wrapping_add(ev.start as u32)
            .wrapping_add(u32::from(ev.after_fin))
    };
    let ack = peer_isn.wrapping_add(1).wrapping_add(ev.ack as u32);
    let options = tcp_options(conn, ev, mss_of(conn, mtu) as u16);
    TcpFrame {
        src_mac: mac_of(&src.ip()),
        dst_mac: mac_of(&dst.ip()),
        vlans: &conn.vlan,
        src,
        dst,
        seq,
        flags: TcpFlags {
            syn: ev.flags & F_SYN != 0,
            fin: ev.flags & F_FIN != 0,
            rst: ev.flags & F_RST != 0,
            psh: ev.flags & F_PSH != 0,
            ack: (ev.flags & F_ACK != 0).then_some(ack),
        },
        window: TcpFrame::DEFAULT_WINDOW,
        options: &options,
    }
    .write(payload, out);
}
