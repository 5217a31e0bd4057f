//! Inner (and outer) packet parsing: Ethernet II, 802.1Q / QinQ, IPv4 (options) or IPv6
//! (extension headers), TCP (options), with etherparse's zero-copy lax slicing.
//!
//! Checksums are never verified: AWS truncation (PacketLength) removes the bytes they cover.
//! A packet whose IP length announces more bytes than were captured yields the bytes
//! present and the count of the missing tail ([`TcpSegment::missing`]), which the
//! reassembly turns into a gap.
//!
//! [`build`] is the inverse: the frame builder of the generator and the tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{
    EtherType, Ethernet2Header, Ethernet2HeaderSlice, LaxIpv4Slice, LaxIpv6Slice, SingleVlanHeader,
    SingleVlanHeaderSlice, TcpSlice, UdpSlice, ip_number,
};
use thiserror::Error;

use crate::engine::encap::Encap;

pub mod build;
#[cfg(test)]
mod tests;

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
    /// Acknowledgment number (meaningful with `ack`).
    pub ack_no: u32,
    /// Advertised receive window (unscaled).
    pub window: u16,
    /// Window scale option (SYN segments only).
    pub wscale: Option<u8>,
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
    /// A UDP datagram to a tunnel port (4789 VXLAN, 6081 GENEVE).
    Tunnel(Tunnel<'a>),
}

/// A UDP datagram to a tunnel port, as found in a frame or in a GENEVE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel<'a> {
    /// Which tunnel (by destination port).
    pub encap: Encap,
    /// The IP source of the datagram: its sender (for VXLAN, the mirror's source ENI).
    pub source: IpAddr,
    /// The UDP payload (the tunnel header first).
    pub payload: &'a [u8],
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
    /// Not TCP (and not a tunnel datagram where that is allowed).
    #[error("not a TCP segment")]
    NonTcp,
}

/// Parses an Ethernet frame. With `tunnels_allowed`, a UDP datagram to port 4789 or 6081 is
/// returned as [`Parsed::Tunnel`]; otherwise it is [`PacketError::NonTcp`] (no nested
/// tunnel: a mirrored host's own VXLAN traffic is not unwrapped).
///
/// Layer by layer with etherparse's header slices (cheaper than the all-in-one
/// `LaxSlicedPacket`, which copies a large struct per packet): Ethernet II, any number of
/// 802.1Q / 802.1ad / QinQ tags, then [`parse_ip`].
#[inline]
pub fn parse_ethernet(frame: &[u8], tunnels_allowed: bool) -> Result<Parsed<'_>, PacketError> {
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
    parse_ip(ether_type, rest, tunnels_allowed)
}

/// Parses an IP packet whose EtherType is `ether_type` (IPv4 or IPv6; anything else is
/// [`PacketError::NonTcp`]): lax IPv4 / IPv6 (a length beyond the captured bytes yields the
/// bytes present), then TCP, or UDP to a tunnel port when `tunnels_allowed`.
#[inline]
pub fn parse_ip(
    ether_type: EtherType,
    rest: &[u8],
    tunnels_allowed: bool,
) -> Result<Parsed<'_>, PacketError> {
    if ether_type == EtherType::IPV4
        && let Some(parsed) = parse_ipv4_common(rest, tunnels_allowed)
    {
        return parsed;
    }
    parse_ip_general(ether_type, rest, tunnels_allowed)
}

/// The two shapes nearly every packet has, read by hand (etherparse's slices cost ~100
/// instructions per layer, twice per mirrored packet): IPv4, not a fragment, carrying TCP
/// without SYN (a SYN's options are read by etherparse) or UDP. `None`: any other packet,
/// left to [`parse_ip_general`], whose reading this matches exactly (lengths, padding,
/// truncation; a proptest compares the two on generated headers).
#[inline]
fn parse_ipv4_common(
    rest: &[u8],
    tunnels_allowed: bool,
) -> Option<Result<Parsed<'_>, PacketError>> {
    let h = rest.get(..20)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < 20 || rest.len() < ihl {
        return None;
    }
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return None; // more fragments, or an offset
    }
    // etherparse's lax reading: a total length shorter than the header, or longer than the
    // bytes present, falls back to the bytes present (and the latter counts them missing).
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let payload = if total < ihl || total > rest.len() {
        &rest[ihl..]
    } else {
        &rest[ihl..total]
    };
    let word16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let word32 = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    match h[9] {
        // IP protocol numbers: TCP 6, UDP 17
        6 => {
            let t = payload.get(..20)?;
            let offset = usize::from(t[12] >> 4) * 4;
            let flags = t[13];
            if offset < 20 || payload.len() < offset || flags & 0x02 != 0 {
                return None;
            }
            let dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
            Some(Ok(Parsed::Tcp(TcpSegment {
                src: SocketAddr::new(src, word16(t, 0)),
                dst: SocketAddr::new(dst, word16(t, 2)),
                seq: word32(t, 4),
                syn: false,
                ack: flags & 0x10 != 0,
                ack_no: word32(t, 8),
                window: word16(t, 14),
                wscale: None,
                fin: flags & 0x01 != 0,
                rst: flags & 0x04 != 0,
                payload: &payload[offset..],
                missing: total.saturating_sub(rest.len()) as u32,
            })))
        }
        17 if tunnels_allowed => {
            let u = payload.get(..8)?;
            let len = usize::from(word16(u, 4));
            let udp = if payload.len() < len || len < 8 {
                payload
            } else {
                &payload[..len]
            };
            Some(match Encap::of_port(word16(u, 2)) {
                Some(encap) => Ok(Parsed::Tunnel(Tunnel {
                    encap,
                    source: src,
                    payload: &udp[8..],
                })),
                None => Err(PacketError::NonTcp),
            })
        }
        _ => None,
    }
}

/// [`parse_ip`] for any packet, with etherparse.
fn parse_ip_general(
    ether_type: EtherType,
    rest: &[u8],
    tunnels_allowed: bool,
) -> Result<Parsed<'_>, PacketError> {
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
                ack_no: tcp.acknowledgment_number(),
                window: tcp.window_size(),
                wscale: if tcp.syn() {
                    tcp.options_iterator().find_map(|o| match o {
                        Ok(etherparse::TcpOptionElement::WindowScale(s)) => Some(s),
                        _ => None,
                    })
                } else {
                    None
                },
                fin: tcp.fin(),
                rst: tcp.rst(),
                payload: tcp.payload(),
                missing,
            }))
        }
        ip_number::UDP if tunnels_allowed => {
            let udp =
                UdpSlice::from_slice_lax(payload.payload).map_err(|_| PacketError::Malformed)?;
            match Encap::of_port(udp.destination_port()) {
                Some(encap) => Ok(Parsed::Tunnel(Tunnel {
                    encap,
                    source: src_ip,
                    payload: udp.payload(),
                })),
                None => Err(PacketError::NonTcp),
            }
        }
        _ => Err(PacketError::NonTcp),
    }
}
