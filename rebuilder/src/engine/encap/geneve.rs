//! GENEVE (RFC 8926): the encapsulation a Gateway Load Balancer puts around every packet it
//! sends to its targets, on UDP/6081. When a GWLB endpoint is the traffic mirror target, the
//! packet inside is the mirror's VXLAN datagram as an IP packet (IPv4 or IPv6 → UDP/4789 →
//! VXLAN → the mirrored frame): AWS documents that such appliances "should be able to parse
//! both outer GENEVE encapsulation (from Gateway Load Balancer) and an inner VXLAN
//! encapsulation (from VPC Traffic Mirroring)" (Traffic Mirroring guide, "Traffic Mirroring
//! packet format").
//!
//! ```text
//!  0                   1                   2                   3
//! |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! |                    Variable-Length Options                    |
//!
//! one option:
//! |          Option Class         |      Type     |R|R|R| Length  |
//! |                      Variable-Length Option Data              |
//! ```
//!
//! What is checked, with the RFC's words:
//! - **Version** 0 only: "Packets received by a tunnel endpoint with an unknown version MUST be
//!   dropped" (§3.4).
//! - **O bit** (control packet): "Tunnel endpoints MUST NOT forward the payload" — dropped.
//! - **Options** are walked, every one of them, inside the `Opt Len` area (at most 63 words,
//!   so the walk is bounded): the area must fit the packet and each option's length must fit
//!   the area. An option of a class and type we do not know whose type has the critical bit
//!   (0x80) set is a reason to drop: "If a receiving tunnel endpoint encounters a critical
//!   option that it does not recognize, it MUST drop the packet" (§3.5). Unknown
//!   non-critical options are skipped.
//! - **AWS options** (class 0x0108): type 1 the GWLB endpoint id (8 bytes), type 2 the
//!   attachment id (8 bytes), type 3 the flow cookie (4 bytes) — the layout AWS's own GWLB
//!   tunnel handler sample parses (aws-samples/aws-gateway-load-balancer-tunnel-handler,
//!   `GenevePacket.cpp`). One of those types with another length is malformed: the endpoint
//!   id is part of the flow key, it is not guessed.
//! - **Protocol type**: IPv4 (0x0800) or IPv6 (0x86DD); anything else (Ethernet 0x6558
//!   included — a GWLB always sends IP) is not a packet the rebuilder can use.
//!
//! No checksum is verified and nothing is ever sent back (see `docs/deploy.md`, "Does the
//! appliance send mirrored traffic back?").

use thiserror::Error;

/// The IANA port for GENEVE (the only one a Gateway Load Balancer uses).
pub const GENEVE_PORT: u16 = 6081;
/// Length of the fixed GENEVE header.
pub const HEADER_LEN: usize = 8;
/// Option class of AWS's Gateway Load Balancer options.
pub const AWS_OPTION_CLASS: u16 = 0x0108;
/// AWS option type: the GWLB endpoint id (8 bytes).
pub const AWS_ENDPOINT_ID: u8 = 1;
/// AWS option type: the attachment id (8 bytes).
pub const AWS_ATTACHMENT_ID: u8 = 2;
/// AWS option type: the flow cookie (4 bytes).
pub const AWS_FLOW_COOKIE: u8 = 3;
/// Protocol type of an inner IPv4 packet.
pub const PROTOCOL_IPV4: u16 = 0x0800;
/// Protocol type of an inner IPv6 packet.
pub const PROTOCOL_IPV6: u16 = 0x86dd;
/// Protocol type of an inner Ethernet frame (not sent by a GWLB; refused).
pub const PROTOCOL_ETHERNET: u16 = 0x6558;

/// The critical bit of an option's type.
const CRITICAL: u8 = 0x80;
/// The O (control packet) bit of the second byte.
const FLAG_O: u8 = 0x80;

/// Why a datagram is not a usable GENEVE packet. Each maps to one drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum GeneveError {
    /// Shorter than the fixed header, a version other than 0, or an AWS option with a length
    /// other than its documented one.
    #[error("malformed GENEVE header")]
    Malformed,
    /// The options area (`Opt Len`) runs past the packet, or an option's length past the area.
    #[error("GENEVE option length past the packet")]
    OptionsTruncated,
    /// A critical option of a class/type we do not know.
    #[error("unknown critical GENEVE option (class {class:#06x}, type {kind:#04x})")]
    CriticalOption { class: u16, kind: u8 },
    /// The O bit: a control message between tunnel endpoints, not a packet to process.
    #[error("GENEVE control packet")]
    Control,
    /// The inner protocol is not IPv4 or IPv6.
    #[error("GENEVE inner protocol {0:#06x} is not IP")]
    NotIp(u16),
}

/// What AWS's options (class 0x0108) said, each when present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AwsOptions {
    /// The Gateway Load Balancer endpoint the packet came through (`vpce-…`, see
    /// [`endpoint_name`]).
    pub endpoint_id: Option<u64>,
    /// The attachment id.
    pub attachment_id: Option<u64>,
    /// The flow cookie.
    pub flow_cookie: Option<u32>,
}

/// A checked view of one GENEVE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenevePacket<'a> {
    /// The 24-bit VNI (a GWLB leaves it 0).
    pub vni: u32,
    /// [`PROTOCOL_IPV4`] or [`PROTOCOL_IPV6`].
    pub protocol: u16,
    /// AWS's options.
    pub aws: AwsOptions,
    /// The inner IP packet.
    pub inner: &'a [u8],
}

impl<'a> GenevePacket<'a> {
    /// Checks `payload` (a UDP payload) as described in the module documentation.
    pub fn parse(payload: &'a [u8]) -> Result<GenevePacket<'a>, GeneveError> {
        let Some((header, rest)) = payload.split_first_chunk::<HEADER_LEN>() else {
            return Err(GeneveError::Malformed);
        };
        if header[0] >> 6 != 0 {
            return Err(GeneveError::Malformed);
        }
        let options_len = usize::from(header[0] & 0x3f) * 4;
        let Some((options, inner)) = rest.split_at_checked(options_len) else {
            return Err(GeneveError::OptionsTruncated);
        };
        let aws = walk_options(options)?;
        if header[1] & FLAG_O != 0 {
            return Err(GeneveError::Control);
        }
        let protocol = u16::from_be_bytes([header[2], header[3]]);
        if protocol != PROTOCOL_IPV4 && protocol != PROTOCOL_IPV6 {
            return Err(GeneveError::NotIp(protocol));
        }
        Ok(GenevePacket {
            vni: u32::from_be_bytes([0, header[4], header[5], header[6]]),
            protocol,
            aws,
            inner,
        })
    }
}

/// Walks every option of the options area `area`.
fn walk_options(mut area: &[u8]) -> Result<AwsOptions, GeneveError> {
    let mut aws = AwsOptions::default();
    while !area.is_empty() {
        let Some((head, rest)) = area.split_first_chunk::<4>() else {
            return Err(GeneveError::OptionsTruncated);
        };
        let class = u16::from_be_bytes([head[0], head[1]]);
        let kind = head[2];
        let len = usize::from(head[3] & 0x1f) * 4;
        let Some((data, rest)) = rest.split_at_checked(len) else {
            return Err(GeneveError::OptionsTruncated);
        };
        area = rest;
        if class == AWS_OPTION_CLASS {
            match (kind, data.len()) {
                (AWS_ENDPOINT_ID, 8) => aws.endpoint_id = Some(be_u64(data)),
                (AWS_ATTACHMENT_ID, 8) => aws.attachment_id = Some(be_u64(data)),
                (AWS_FLOW_COOKIE, 4) => {
                    aws.flow_cookie = Some(u32::from_be_bytes([data[0], data[1], data[2], data[3]]))
                }
                (AWS_ENDPOINT_ID | AWS_ATTACHMENT_ID | AWS_FLOW_COOKIE, _) => {
                    return Err(GeneveError::Malformed);
                }
                _ if kind & CRITICAL != 0 => {
                    return Err(GeneveError::CriticalOption { class, kind });
                }
                _ => {}
            }
        } else if kind & CRITICAL != 0 {
            return Err(GeneveError::CriticalOption { class, kind });
        }
    }
    Ok(aws)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Whether `payload` has the shape of a GENEVE header carrying IP or Ethernet: version 0, a
/// known protocol type, the options area inside the packet. Used only to name the drop
/// reason of a datagram that failed as VXLAN (a GENEVE packet sent to the VXLAN port).
pub fn looks_like_geneve(payload: &[u8]) -> bool {
    let Some(header) = payload.first_chunk::<HEADER_LEN>() else {
        return false;
    };
    let protocol = u16::from_be_bytes([header[2], header[3]]);
    header[0] >> 6 == 0
        && matches!(protocol, PROTOCOL_IPV4 | PROTOCOL_IPV6 | PROTOCOL_ETHERNET)
        && payload.len() >= HEADER_LEN + usize::from(header[0] & 0x3f) * 4
}

/// The AWS name of a GWLB endpoint id: `vpce-` and 17 hexadecimal digits, as AWS's GWLB tunnel
/// handler sample renders it (`MakeGwlbeStr`: "17-char zero-padded hex, matching the vpce-
/// endpoint id as shown in the AWS console").
pub fn endpoint_name(id: u64) -> String {
    format!("vpce-{id:017x}")
}

/// The endpoint id of an AWS GWLB endpoint name (`vpce-` and up to 17 hexadecimal digits; the
/// inverse of [`endpoint_name`]).
pub fn parse_endpoint_name(name: &str) -> Result<u64, String> {
    let bad = || format!("{name:?} is not a GWLB endpoint id (vpce- and 17 hexadecimal digits)");
    let hex = name.strip_prefix("vpce-").ok_or_else(bad)?;
    // (from_str_radix alone would accept a sign)
    if hex.is_empty() || hex.len() > 17 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u64::from_str_radix(hex, 16).map_err(|_| bad())
}

/// A GENEVE packet as a Gateway Load Balancer sends it: version 0, no O or C bit, VNI 0,
/// protocol type for `inner` (an IPv4 or IPv6 packet, told by its version nibble) and the
/// three AWS options. The generator and the tests write these.
pub fn encapsulate_aws_into(aws: &AwsOptions, inner: &[u8], out: &mut Vec<u8>) {
    let protocol = match inner.first().map(|b| b >> 4) {
        Some(6) => PROTOCOL_IPV6,
        _ => PROTOCOL_IPV4,
    };
    let mut options = Vec::with_capacity(32);
    if let Some(id) = aws.endpoint_id {
        push_option(
            &mut options,
            AWS_OPTION_CLASS,
            AWS_ENDPOINT_ID,
            &id.to_be_bytes(),
        );
    }
    if let Some(id) = aws.attachment_id {
        push_option(
            &mut options,
            AWS_OPTION_CLASS,
            AWS_ATTACHMENT_ID,
            &id.to_be_bytes(),
        );
    }
    if let Some(c) = aws.flow_cookie {
        push_option(
            &mut options,
            AWS_OPTION_CLASS,
            AWS_FLOW_COOKIE,
            &c.to_be_bytes(),
        );
    }
    encapsulate_into(protocol, &options, inner, out);
}

/// Appends one option (`data` a multiple of 4 bytes, at most 124) to an options area.
pub fn push_option(area: &mut Vec<u8>, class: u16, kind: u8, data: &[u8]) {
    debug_assert!(data.len().is_multiple_of(4) && data.len() <= 124);
    area.extend_from_slice(&class.to_be_bytes());
    area.push(kind);
    area.push((data.len() / 4) as u8);
    area.extend_from_slice(data);
}

/// Appends a GENEVE header (version 0, VNI 0, `protocol`), the options area `options` (a
/// multiple of 4 bytes, at most 252) and `inner` to `out`.
pub fn encapsulate_into(protocol: u16, options: &[u8], inner: &[u8], out: &mut Vec<u8>) {
    debug_assert!(options.len().is_multiple_of(4) && options.len() <= 252);
    let p = protocol.to_be_bytes();
    out.extend_from_slice(&[(options.len() / 4) as u8, 0, p[0], p[1], 0, 0, 0, 0]);
    out.extend_from_slice(options);
    out.extend_from_slice(inner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AWS: AwsOptions = AwsOptions {
        endpoint_id: Some(0x0ab1_c2d3_e4f5_a6b7),
        attachment_id: Some(0x1122_3344_5566_7788),
        flow_cookie: Some(0xdead_beef),
    };

    fn ipv4_inner() -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28];
        p.resize(28, 0);
        p
    }

    fn aws_packet(inner: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encapsulate_aws_into(&AWS, inner, &mut out);
        out
    }

    #[test]
    fn a_gateway_load_balancer_packet_yields_its_aws_options_and_the_inner_ip_packet() {
        let inner = ipv4_inner();
        let d = aws_packet(&inner);
        // Three options: 12 + 12 + 8 bytes = 8 words.
        assert_eq!(d[0], 8);
        let p = GenevePacket::parse(&d).unwrap();
        assert_eq!(p.aws, AWS);
        assert_eq!(p.protocol, PROTOCOL_IPV4);
        assert_eq!(p.vni, 0);
        assert_eq!(p.inner, &inner[..]);
    }

    /// Bytes written out by hand from RFC 8926 §3.4–3.5 and the option layout of AWS's GWLB
    /// tunnel handler sample (`GenevePacket.cpp`), not by this module's encoder: a symmetric
    /// misreading of the format by `encapsulate_aws_into` and `parse` would pass the round
    /// trips above, not this.
    #[test]
    fn a_packet_written_by_hand_from_the_rfc_and_aws_layout_is_read_as_written() {
        #[rustfmt::skip]
        let mut d: Vec<u8> = vec![
            // Ver 0, Opt Len 10 words | O=0 C=0 | protocol IPv4 | VNI 0 | reserved
            0x0a, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00,
            // AWS flow cookie first (options come in any order): class 0x0108, type 3, 1 word
            0x01, 0x08, 0x03, 0x01, 0xde, 0xad, 0xbe, 0xef,
            // a non-critical option of another class, 1 word: skipped
            0x01, 0x01, 0x7f, 0x01, 0x00, 0x00, 0x00, 0x00,
            // AWS endpoint id: type 1, 2 words, big-endian
            0x01, 0x08, 0x01, 0x02, 0x0a, 0xb1, 0xc2, 0xd3, 0xe4, 0xf5, 0xa6, 0xb7,
            // AWS attachment id: type 2, 2 words; the R bits above Length set (ignored)
            0x01, 0x08, 0x02, 0xe2, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        ];
        assert_eq!(d.len(), HEADER_LEN + 4 * 10);
        let inner = ipv4_inner();
        d.extend_from_slice(&inner);
        let p = GenevePacket::parse(&d).unwrap();
        assert_eq!(p.protocol, PROTOCOL_IPV4);
        assert_eq!(p.vni, 0);
        assert_eq!(p.aws.endpoint_id, Some(0x0ab1_c2d3_e4f5_a6b7));
        assert_eq!(p.aws.attachment_id, Some(0x1122_3344_5566_7788));
        assert_eq!(p.aws.flow_cookie, Some(0xdead_beef));
        assert_eq!(
            endpoint_name(p.aws.endpoint_id.unwrap()),
            "vpce-00ab1c2d3e4f5a6b7"
        );
        assert_eq!(p.inner, &inner[..]);
        // The C bit (0x40 of the second byte) only says a critical option is present: the
        // packet still parses when none is unknown.
        d[1] = 0x40;
        assert!(GenevePacket::parse(&d).is_ok());
        // A VNI in bytes 4..7.
        d[4..7].copy_from_slice(&[0x12, 0x34, 0x56]);
        assert_eq!(GenevePacket::parse(&d).unwrap().vni, 0x12_3456);
    }

    #[test]
    fn an_inner_ipv6_packet_is_announced_as_ipv6() {
        let mut inner = vec![0x60];
        inner.resize(40, 0);
        let d = aws_packet(&inner);
        assert_eq!(GenevePacket::parse(&d).unwrap().protocol, PROTOCOL_IPV6);
    }

    #[test]
    fn the_endpoint_id_renders_as_aws_names_it() {
        assert_eq!(
            endpoint_name(0x0ab1_c2d3_e4f5_a6b7),
            "vpce-00ab1c2d3e4f5a6b7"
        );
        assert_eq!(endpoint_name(u64::MAX), "vpce-0ffffffffffffffff");
    }

    #[test]
    fn endpoint_names_read_back() {
        for id in [0, 1, 0x0ab1_c2d3_e4f5_a6b7, u64::MAX] {
            assert_eq!(parse_endpoint_name(&endpoint_name(id)), Ok(id));
        }
        for bad in [
            "0123",
            "vpce-",
            "vpce-xyz",
            "vpce-123456789012345678",
            "vpce-+1",
        ] {
            assert!(parse_endpoint_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn packets_without_options_are_accepted() {
        let mut d = Vec::new();
        encapsulate_into(PROTOCOL_IPV6, &[], b"x", &mut d);
        let p = GenevePacket::parse(&d).unwrap();
        assert_eq!(p.aws, AwsOptions::default());
        assert_eq!(p.inner, b"x");
    }

    #[test]
    fn an_options_area_longer_than_the_packet_is_truncated() {
        let d = aws_packet(&[]);
        assert_eq!(
            GenevePacket::parse(&d[..d.len() - 1]),
            Err(GeneveError::OptionsTruncated)
        );
        let mut d = Vec::new();
        encapsulate_into(PROTOCOL_IPV4, &[], &[], &mut d);
        d[0] = 0x3f; // 252 bytes of options announced, none present
        assert_eq!(GenevePacket::parse(&d), Err(GeneveError::OptionsTruncated));
    }

    #[test]
    fn an_option_longer_than_the_options_area_is_truncated() {
        let mut area = Vec::new();
        push_option(&mut area, 0x0101, 1, &[0; 4]);
        area[3] = 2; // announces 8 bytes of data, 4 present in the area
        let mut d = Vec::new();
        encapsulate_into(PROTOCOL_IPV4, &area, &ipv4_inner(), &mut d);
        assert_eq!(GenevePacket::parse(&d), Err(GeneveError::OptionsTruncated));
    }

    #[test]
    fn an_unknown_critical_option_drops_the_packet_an_unknown_plain_one_is_skipped() {
        for (class, kind, want) in [
            (
                0x0101,
                0x80,
                Err(GeneveError::CriticalOption {
                    class: 0x0101,
                    kind: 0x80,
                }),
            ),
            (
                AWS_OPTION_CLASS,
                0x84,
                Err(GeneveError::CriticalOption {
                    class: AWS_OPTION_CLASS,
                    kind: 0x84,
                }),
            ),
            (0x0101, 0x7f, Ok(())),
            (AWS_OPTION_CLASS, 4, Ok(())),
        ] {
            let mut area = Vec::new();
            push_option(&mut area, class, kind, &[1, 2, 3, 4]);
            push_option(&mut area, AWS_OPTION_CLASS, AWS_FLOW_COOKIE, &[0, 0, 0, 9]);
            let mut d = Vec::new();
            encapsulate_into(PROTOCOL_IPV4, &area, &ipv4_inner(), &mut d);
            let got = GenevePacket::parse(&d);
            assert_eq!(got.map(|_| ()), want, "class {class:#x} type {kind:#x}");
            if let Ok(p) = got {
                assert_eq!(
                    p.aws.flow_cookie,
                    Some(9),
                    "the walk goes on after a skipped option"
                );
            }
        }
    }

    #[test]
    fn an_aws_option_with_another_length_is_malformed() {
        let mut area = Vec::new();
        push_option(&mut area, AWS_OPTION_CLASS, AWS_ENDPOINT_ID, &[0; 4]);
        let mut d = Vec::new();
        encapsulate_into(PROTOCOL_IPV4, &area, &ipv4_inner(), &mut d);
        assert_eq!(GenevePacket::parse(&d), Err(GeneveError::Malformed));
    }

    #[test]
    fn other_versions_short_headers_control_packets_and_non_ip_are_refused() {
        let good = aws_packet(&ipv4_inner());
        let mut v1 = good.clone();
        v1[0] |= 0x40;
        assert_eq!(GenevePacket::parse(&v1), Err(GeneveError::Malformed));
        assert_eq!(GenevePacket::parse(&good[..7]), Err(GeneveError::Malformed));
        let mut control = good.clone();
        control[1] |= FLAG_O;
        assert_eq!(GenevePacket::parse(&control), Err(GeneveError::Control));
        let mut ethernet = good.clone();
        ethernet[2..4].copy_from_slice(&PROTOCOL_ETHERNET.to_be_bytes());
        assert_eq!(
            GenevePacket::parse(&ethernet),
            Err(GeneveError::NotIp(PROTOCOL_ETHERNET))
        );
    }

    #[test]
    fn the_critical_bit_of_the_header_alone_changes_nothing() {
        let mut d = aws_packet(&ipv4_inner());
        d[1] |= 0x40; // C: "critical options present" — the walk checks each option anyway
        assert!(GenevePacket::parse(&d).is_ok());
    }

    #[test]
    fn a_vxlan_datagram_does_not_look_like_geneve_and_a_geneve_packet_does() {
        let vxlan = super::super::vxlan::encapsulate(42, &[0u8; 64]);
        assert!(!looks_like_geneve(&vxlan));
        assert!(looks_like_geneve(&aws_packet(&ipv4_inner())));
        assert!(!looks_like_geneve(&aws_packet(&[])[..20]));
    }

    /// One option of any class, type and length (0..=31 words), as (class, type, data).
    fn option() -> impl Strategy<Value = (u16, u8, Vec<u8>)> {
        (any::<u16>(), any::<u8>(), 0usize..=31).prop_flat_map(|(c, t, words)| {
            (
                Just(c),
                Just(t),
                proptest::collection::vec(any::<u8>(), words * 4),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Options of every length: a well-formed area of options none of which is critical
        /// and unknown is always walked to its end, the inner packet is exactly what follows,
        /// and the AWS options are the last well-formed ones of each type.
        #[test]
        fn well_formed_options_of_every_length_are_walked_to_the_inner_packet(
            opts in proptest::collection::vec(option(), 0..8),
            inner in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut area = Vec::new();
            let mut want = AwsOptions::default();
            let mut expect_err = None;
            for (class, kind, data) in &opts {
                if area.len() + 4 + data.len() > 252 {
                    break;
                }
                push_option(&mut area, *class, *kind, data);
                if expect_err.is_some() {
                    continue;
                }
                let known = *class == AWS_OPTION_CLASS
                    && matches!(*kind, AWS_ENDPOINT_ID | AWS_ATTACHMENT_ID | AWS_FLOW_COOKIE);
                if known {
                    match (*kind, data.len()) {
                        (AWS_ENDPOINT_ID, 8) => want.endpoint_id = Some(be_u64(data)),
                        (AWS_ATTACHMENT_ID, 8) => want.attachment_id = Some(be_u64(data)),
                        (AWS_FLOW_COOKIE, 4) => {
                            want.flow_cookie = Some(u32::from_be_bytes(data[..4].try_into().unwrap()))
                        }
                        _ => expect_err = Some(GeneveError::Malformed),
                    }
                } else if kind & CRITICAL != 0 {
                    expect_err = Some(GeneveError::CriticalOption { class: *class, kind: *kind });
                }
            }
            let mut d = Vec::new();
            encapsulate_into(PROTOCOL_IPV4, &area, &inner, &mut d);
            match GenevePacket::parse(&d) {
                Ok(p) => {
                    prop_assert_eq!(expect_err, None);
                    prop_assert_eq!(p.inner, &inner[..]);
                    prop_assert_eq!(p.aws, want);
                }
                Err(e) => prop_assert_eq!(Some(e), expect_err),
            }
        }

        /// Truncated anywhere inside the header or options: never an inner packet, never a
        /// panic; cut exactly at the end of the options, an empty inner packet.
        #[test]
        fn truncated_packets_are_refused(cut in 0usize..70) {
            let d = aws_packet(&ipv4_inner());
            let cut = cut.min(d.len());
            let options_end = HEADER_LEN + 32;
            let r = GenevePacket::parse(&d[..cut]);
            if cut < HEADER_LEN {
                prop_assert_eq!(r, Err(GeneveError::Malformed));
            } else if cut < options_end {
                prop_assert_eq!(r, Err(GeneveError::OptionsTruncated));
            } else {
                prop_assert_eq!(r.unwrap().inner.len(), cut - options_end);
            }
        }

        /// Nested garbage: any bytes at all. Parsing never panics, and whatever it accepts
        /// is consistent: version 0, an IP protocol, the inner packet a suffix of the input
        /// after the announced options.
        #[test]
        fn arbitrary_bytes_never_panic_and_accepted_ones_are_consistent(
            d in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            if let Ok(p) = GenevePacket::parse(&d) {
                prop_assert_eq!(d[0] >> 6, 0);
                prop_assert!(p.protocol == PROTOCOL_IPV4 || p.protocol == PROTOCOL_IPV6);
                let start = HEADER_LEN + usize::from(d[0] & 0x3f) * 4;
                prop_assert_eq!(p.inner, &d[start..]);
                prop_assert!(looks_like_geneve(&d));
            }
        }

        /// A GENEVE packet nested in a GENEVE packet's inner bytes is not unwrapped twice:
        /// the outer parse hands the inner bytes back untouched.
        #[test]
        fn nested_geneve_is_handed_back_as_inner_bytes(inner in proptest::collection::vec(any::<u8>(), 0..64)) {
            let nested = aws_packet(&inner);
            let outer = aws_packet(&nested);
            let p = GenevePacket::parse(&outer).unwrap();
            prop_assert_eq!(p.inner, &nested[..]);
        }
    }
}
