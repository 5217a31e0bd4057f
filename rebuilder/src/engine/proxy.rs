//! PROXY protocol (HAProxy, versions 1 and 2) at the start of a client→server stream.
//!
//! A load balancer that speaks PROXY protocol (a classic ELB with the ProxyProtocol policy:
//! v1; an NLB target group with `proxy_protocol_v2.enabled`: v2) prefixes every connection
//! it opens to the instance with a header naming the real client. Mirroring the instance's
//! ENI captures that header in front of the first request. [`parse`] recognises it from the
//! first bytes of a stream; the HTTP parser strips it and uses its source address as the
//! request's `client` — only when the stream's TCP sender is in the configured trusted ranges
//! ([`ProxyProtocolArgs`], `EngineConfig::proxy_protocol_from`): a client connecting directly
//! could otherwise attribute its requests to any address.
//!
//! Pure: bytes in, a verdict out. The caller buffers at most [`MAX_PREFIX`] bytes before a
//! verdict is reached (v2 TLVs beyond the address block are not buffered: the caller skips
//! them as they stream past).
//!
//! Specification: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature (12 bytes).
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Longest v1 header, CRLF included (spec §2.1).
pub const V1_MAX: usize = 107;
/// Bytes the caller may have to buffer before [`parse`] decides.
pub const MAX_PREFIX: usize = V1_MAX;

/// What the first bytes of a stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not a PROXY header (no signature): the stream is to be parsed as it is.
    NotProxy,
    /// A prefix of a signature or of a header: more bytes are needed.
    Incomplete,
    /// A valid header.
    Header(Header),
    /// The signature is there but the header is invalid. When its end is known
    /// (`Some`, a v1 line end or a v2 length), the header spans those bytes; otherwise
    /// (`None`: bad v2 version or command, v1 line without its end) nothing after the
    /// signature can be trusted to be a boundary.
    Malformed(Option<Span>),
}

/// Where a header ends: `consumed` bytes of the input passed to [`parse`], then `skip`
/// more bytes of the stream (v2 TLVs, or the part of a v2 address block not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Bytes of the input that belong to the header.
    pub consumed: usize,
    /// Further stream bytes that belong to the header.
    pub skip: u64,
}

/// A valid PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    /// Extent of the header.
    pub span: Span,
    /// The real client: `Some` for a proxied TCP connection over IPv4 or IPv6; `None` for
    /// v1 `UNKNOWN`, v2 `LOCAL` (the balancer's own connection, e.g. a health check), and
    /// v2 families without an address we can use (UNSPEC, UNIX, datagram transport).
    pub source: Option<SocketAddr>,
}

/// Recognises a PROXY header at the start of `bytes` (the first bytes of a stream).
pub fn parse(bytes: &[u8]) -> Parsed {
    if let Some(&first) = bytes.first() {
        if first == V1_PREFIX[0] {
            return v1(bytes);
        }
        if first == V2_SIGNATURE[0] {
            return v2(bytes);
        }
    }
    if bytes.is_empty() {
        Parsed::Incomplete
    } else {
        Parsed::NotProxy
    }
}

/// Whether `bytes` (shorter than `sig`) could still become `sig`.
fn prefix_of(bytes: &[u8], sig: &[u8]) -> Option<bool> {
    let n = bytes.len().min(sig.len());
    if bytes[..n] != sig[..n] {
        None
    } else {
        Some(n == sig.len())
    }
}

fn v1(bytes: &[u8]) -> Parsed {
    match prefix_of(bytes, V1_PREFIX) {
        None => return Parsed::NotProxy,
        Some(false) => return Parsed::Incomplete,
        Some(true) => {}
    }
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return if bytes.len() >= V1_MAX {
            Parsed::Malformed(None)
        } else {
            Parsed::Incomplete
        };
    };
    let span = Span {
        consumed: lf + 1,
        skip: 0,
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Parsed::Malformed(Some(span));
    }
    let Ok(line) = std::str::from_utf8(&window[V1_PREFIX.len()..lf - 1]) else {
        return Parsed::Malformed(Some(span));
    };
    let mut fields = line.split(' ');
    let source = match fields.next() {
        Some("UNKNOWN") => None,
        Some(proto @ ("TCP4" | "TCP6")) => {
            let rest: Vec<&str> = fields.collect();
            let [src, dst, sport, dport] = rest[..] else {
                return Parsed::Malformed(Some(span));
            };
            let ips = if proto == "TCP4" {
                src.parse::<Ipv4Addr>()
                    .ok()
                    .zip(dst.parse::<Ipv4Addr>().ok())
                    .map(|(s, _)| IpAddr::V4(s))
            } else {
                src.parse::<Ipv6Addr>()
                    .ok()
                    .zip(dst.parse::<Ipv6Addr>().ok())
                    .map(|(s, _)| IpAddr::V6(s))
            };
            let (Some(ip), Some(port), Some(_)) = (ips, port(sport), port(dport)) else {
                return Parsed::Malformed(Some(span));
            };
            Some(SocketAddr::new(ip, port))
        }
        _ => return Parsed::Malformed(Some(span)),
    };
    Parsed::Header(Header {
        version: 1,
        span,
        source,
    })
}

/// A v1 port: 1 to 5 decimal digits, no sign, at most 65535.
fn port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn v2(bytes: &[u8]) -> Parsed {
    match prefix_of(bytes, V2_SIGNATURE) {
        None => return Parsed::NotProxy,
        Some(false) => return Parsed::Incomplete,
        Some(true) => {}
    }
    if bytes.len() < 16 {
        return Parsed::Incomplete;
    }
    let (ver_cmd, fam) = (bytes[12], bytes[13]);
    let len = u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
    if ver_cmd >> 4 != 2 || ver_cmd & 0x0f > 1 {
        return Parsed::Malformed(None);
    }
    let whole = Span {
        consumed: 16,
        skip: len as u64,
    };
    let local = ver_cmd & 0x0f == 0;
    let (family, transport) = (fam >> 4, fam & 0x0f);
    let addr_len = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Parsed::Malformed(Some(whole)),
    };
    if transport > 2 || (family == 0) != (transport == 0) && !local {
        return Parsed::Malformed(Some(whole));
    }
    if local {
        // The balancer's own connection: addresses, if any, are ignored.
        return Parsed::Header(Header {
            version: 2,
            span: whole,
            source: None,
        });
    }
    if len < addr_len {
        return Parsed::Malformed(Some(whole));
    }
    let source = match (family, transport) {
        (1, 1) | (2, 1) => {
            if bytes.len() < 16 + addr_len {
                return Parsed::Incomplete;
            }
            let a = &bytes[16..16 + addr_len];
            let (ip, port_at) = if family == 1 {
                let o: [u8; 4] = a[..4].try_into().expect("4 bytes");
                (IpAddr::V4(Ipv4Addr::from(o)), 8)
            } else {
                let o: [u8; 16] = a[..16].try_into().expect("16 bytes");
                (IpAddr::V6(Ipv6Addr::from(o)), 32)
            };
            Some(SocketAddr::new(
                ip,
                u16::from_be_bytes([a[port_at], a[port_at + 1]]),
            ))
        }
        _ => None,
    };
    let consumed = if source.is_some() { 16 + addr_len } else { 16 };
    Parsed::Header(Header {
        version: 2,
        span: Span {
            consumed,
            skip: (16 + len - consumed) as u64,
        },
        source,
    })
}

/// Builds a v1 header for a TCP connection (generator and tests).
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// Builds a v2 `PROXY` header for a TCP connection with `tlvs` appended after the
/// addresses (generator and tests). Both addresses must be of the same family.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    let mut addrs = Vec::with_capacity(36);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(0x21);
            addrs.extend_from_slice(&to_v6(s).octets());
            addrs.extend_from_slice(&to_v6(d).octets());
        }
    }
    addrs.extend_from_slice(&src.port().to_be_bytes());
    addrs.extend_from_slice(&dst.port().to_be_bytes());
    let len = u16::try_from(addrs.len() + tlvs.len()).expect("header fits in 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&addrs);
    out.extend_from_slice(tlvs);
    out
}

/// Builds a v2 `LOCAL` header (the balancer's own connection, e.g. its health checks).
pub fn encode_v2_local() -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    out
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Command-line and environment setting of the peers whose headers are believed
/// (`rebuilder run`, `rebuilder replay`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ProxyProtocolArgs {
    /// Believe PROXY protocol headers only from TCP senders in these ranges (comma separated
    /// CIDRs: the load balancer's nodes, e.g. the NLB's subnets). From any other sender a
    /// header is stripped and counted (`proxy_header_untrusted`), and the TCP sender is the
    /// client. Default: none.
    #[arg(long, env = "REBUILDER_PROXY_PROTOCOL_FROM", value_delimiter = ',', value_parser = crate::engine::ranges::AddrRanges::parse_one, help_heading = "PROXY protocol")]
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
}

impl ProxyProtocolArgs {
    /// The trusted ranges.
    pub fn ranges(&self) -> crate::engine::ranges::AddrRanges {
        crate::engine::ranges::AddrRanges::new(self.proxy_protocol_from.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_header_names_the_real_client() {
        let h = b"PROXY TCP4 198.51.100.22 10.0.0.5 35646 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Parsed::Header(Header {
                version: 1,
                span: Span {
                    consumed: 44,
                    skip: 0
                },
                source: Some(sa("198.51.100.22:35646")),
            })
        );
    }

    #[test]
    fn v1_tcp6_and_unknown_are_recognised() {
        let h = encode_v1(sa("[2001:db8::1]:4000"), sa("[2001:db8::2]:443"));
        let Parsed::Header(p) = parse(&h) else {
            panic!("{:?}", parse(&h))
        };
        assert_eq!(p.source, Some(sa("[2001:db8::1]:4000")));
        assert_eq!(p.span.consumed, h.len());
        let Parsed::Header(u) = parse(b"PROXY UNKNOWN whatever follows\r\n") else {
            panic!()
        };
        assert_eq!((u.source, u.span.consumed), (None, 32));
    }

    #[test]
    fn a_method_starting_like_proxy_is_not_a_header() {
        assert_eq!(parse(b"PROPFIND / HTTP/1.1\r\n"), Parsed::NotProxy);
        assert_eq!(parse(b"PUT / HTTP/1.1\r\n"), Parsed::NotProxy);
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
        assert_eq!(parse(b"\r\nGET / HTTP/1.1\r\n"), Parsed::NotProxy);
        assert_eq!(parse(b"\r\n\r\n\0"), Parsed::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::NotProxy);
    }

    #[test]
    fn malformed_v1_lines_are_reported_with_their_end() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Parsed::Malformed(Some(Span {
                    consumed: bad.len(),
                    skip: 0
                })),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [&b"PROXY TCP4 "[..], &[b'1'; 120]].concat();
        assert_eq!(parse(&long), Parsed::Malformed(None));
        assert_eq!(parse(&long[..100]), Parsed::Incomplete);
    }

    #[test]
    fn v2_header_with_tlvs_is_skipped_whole() {
        let tlvs = [0x04, 0x00, 0x03, b'a', b'b', b'c'];
        let h = encode_v2(sa("192.0.2.7:5555"), sa("10.0.0.5:80"), &tlvs);
        let Parsed::Header(p) = parse(&h) else {
            panic!()
        };
        assert_eq!(p.source, Some(sa("192.0.2.7:5555")));
        assert_eq!(p.span.consumed as u64 + p.span.skip, h.len() as u64);
        assert_eq!(p.span.consumed, 28);
        // The address block is needed; the TLVs are not.
        assert_eq!(parse(&h[..27]), Parsed::Incomplete);
        assert_eq!(parse(&h[..28]), Parsed::Header(p));
    }

    #[test]
    fn v2_ipv6_local_and_unspec_headers() {
        let h = encode_v2(sa("[2001:db8::9]:1234"), sa("[2001:db8::1]:80"), &[]);
        let Parsed::Header(p) = parse(&h) else {
            panic!()
        };
        assert_eq!(p.source, Some(sa("[2001:db8::9]:1234")));
        assert_eq!((p.span.consumed, p.span.skip), (52, 0));
        let Parsed::Header(l) = parse(&encode_v2_local()) else {
            panic!()
        };
        assert_eq!((l.source, l.span.consumed, l.span.skip), (None, 16, 0));
        // LOCAL with an address block: ignored, skipped.
        let mut local_with_addr = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"), &[]);
        local_with_addr[12] = 0x20;
        let Parsed::Header(l) = parse(&local_with_addr) else {
            panic!()
        };
        assert_eq!((l.source, l.span.consumed, l.span.skip), (None, 16, 12));
        // PROXY with AF_UNSPEC: no address.
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0x00, 0x02, 0xaa, 0xbb]);
        let Parsed::Header(u) = parse(&unspec) else {
            panic!()
        };
        assert_eq!((u.source, u.span.consumed, u.span.skip), (None, 16, 2));
    }

    #[test]
    fn malformed_v2_headers_are_reported() {
        let good = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"), &[]);
        let mut bad_version = good.clone();
        bad_version[12] = 0x11;
        assert_eq!(parse(&bad_version), Parsed::Malformed(None));
        let mut bad_command = good.clone();
        bad_command[12] = 0x22;
        assert_eq!(parse(&bad_command), Parsed::Malformed(None));
        let mut short = good.clone();
        short[15] = 4; // INET needs 12 address bytes
        assert_eq!(
            parse(&short),
            Parsed::Malformed(Some(Span {
                consumed: 16,
                skip: 4
            }))
        );
        let mut bad_family = good;
        bad_family[13] = 0x41;
        assert!(matches!(
            parse(&bad_family),
            Parsed::Malformed(Some(Span { consumed: 16, .. }))
        ));
    }

    proptest! {
        #[test]
        fn any_prefix_of_a_header_is_incomplete_and_the_whole_is_recognised(
            v6 in any::<bool>(), v2 in any::<bool>(), a in any::<[u8; 16]>(),
            sport in any::<u16>(), tlv_len in 0usize..40,
        ) {
            let ip: IpAddr = if v6 { Ipv6Addr::from(a).into() } else {
                Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()
            };
            let src = SocketAddr::new(ip, sport);
            let dst = SocketAddr::new(ip, 80);
            let h = if v2 { encode_v2(src, dst, &vec![0x05; tlv_len]) } else { encode_v1(src, dst) };
            let Parsed::Header(p) = parse(&h) else { panic!("{:?}", parse(&h)) };
            prop_assert_eq!(p.source, Some(src));
            prop_assert_eq!(p.span.consumed as u64 + p.span.skip, h.len() as u64);
            for n in 0..p.span.consumed {
                prop_assert_eq!(parse(&h[..n]), Parsed::Incomplete);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_verdicts_stay_within_bounds(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            sig in 0usize..3,
        ) {
            let mut input = match sig {
                0 => Vec::new(),
                1 => V1_PREFIX.to_vec(),
                _ => V2_SIGNATURE.to_vec(),
            };
            input.extend_from_slice(&bytes);
            match parse(&input) {
                Parsed::Header(Header { span, .. }) | Parsed::Malformed(Some(span)) => {
                    prop_assert!(span.consumed <= input.len());
                }
                Parsed::Incomplete => prop_assert!(input.len() < MAX_PREFIX),
                Parsed::NotProxy | Parsed::Malformed(None) => {}
            }
        }
    }
}
