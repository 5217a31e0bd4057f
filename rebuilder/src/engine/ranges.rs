//! [`AddrRanges`]: the address ranges of the configuration, one type for every list of CIDR
//! blocks: the tunnel senders whose datagrams are processed (`--allow-from`), the peers whose
//! PROXY protocol headers are believed (`--proxy-protocol-from`), the load-balancer nodes whose
//! health checks are dropped (`--health-check-from`). A leaf: imports nothing of the engine.
//!
//! A block is `ADDRESS/PREFIX` with the host bits zero (`10.0.0.0/16`, `fd00::/8`) or a bare
//! address (a block of one). A block with host bits set (`10.0.0.5/16`) is refused with the
//! network it would mean: a list that decides what is trusted should say exactly what it
//! means. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is checked as the IPv4 address it
//! maps (what a dual-stack socket reports for an IPv4 peer).

use std::net::IpAddr;

use ipnet::IpNet;

/// A list of address ranges (CIDR blocks). Empty: matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrRanges(Vec<IpNet>);

/// Why a range could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not `ADDRESS[/PREFIX]`, or a prefix longer than the address.
    #[error("{0:?} is not an address range (CIDR like 10.0.0.0/16 or fd00::/8, or an address)")]
    Syntax(String),
    /// Host bits set after the prefix.
    #[error("{given:?} has host bits set: did you mean {network}?")]
    HostBits {
        /// The text as given.
        given: String,
        /// The network it would mean.
        network: IpNet,
    },
}

impl AddrRanges {
    /// No range: matches nothing.
    pub const NONE: AddrRanges = AddrRanges(Vec::new());

    /// These ranges.
    pub fn new(ranges: Vec<IpNet>) -> AddrRanges {
        AddrRanges(ranges)
    }

    /// Parses one range (`10.0.0.0/16`, `fd00::/8`, `192.0.2.7`): the value parser of the
    /// command-line lists.
    pub fn parse_one(s: &str) -> Result<IpNet, RangeError> {
        let s = s.trim();
        let net = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| RangeError::Syntax(s.to_string()))?;
        if net.trunc() != net {
            return Err(RangeError::HostBits {
                given: s.to_string(),
                network: net.trunc(),
            });
        }
        Ok(net)
    }

    /// Parses a comma-separated list (empty items are ignored).
    pub fn parse(list: &str) -> Result<AddrRanges, RangeError> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(AddrRanges::parse_one)
            .collect::<Result<_, _>>()
            .map(AddrRanges)
    }

    /// Whether there is no range.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is in one of the ranges. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// is checked as the IPv4 address it maps.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The ranges.
    pub fn ranges(&self) -> &[IpNet] {
        &self.0
    }
}

impl std::fmt::Display for AddrRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_match_addresses_of_both_families() {
        let r = AddrRanges::parse("10.0.0.0/16, fd00::/8,192.0.2.7,").unwrap();
        assert_eq!(r.ranges().len(), 3);
        for ip in ["10.0.3.4", "fd00::1", "192.0.2.7", "::ffff:10.0.9.9"] {
            assert!(r.contains(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.1.0.1", "192.0.2.8", "2001:db8::1"] {
            assert!(!r.contains(ip.parse().unwrap()), "{ip}");
        }
        assert!(!AddrRanges::NONE.contains("10.0.0.1".parse().unwrap()));
        assert!(AddrRanges::parse("").unwrap().is_empty());
        assert_eq!(r.to_string(), "10.0.0.0/16,fd00::/8,192.0.2.7/32");
    }

    #[test]
    fn blocks_contain_their_addresses_and_nothing_else() {
        let c = AddrRanges::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.0.0")));
        assert!(c.contains(ip("10.1.255.255")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(!c.contains(ip("fd00::1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        let v6 = AddrRanges::parse("fd00:a::/32").unwrap();
        assert!(v6.contains(ip("fd00:a:1::5")));
        assert!(!v6.contains(ip("fd00:b::5")));
        assert!(!v6.contains(ip("10.1.0.1")));
    }

    #[test]
    fn a_bare_address_is_a_block_of_one_and_slash_zero_is_everything_of_its_family() {
        let one = AddrRanges::parse("192.0.2.7").unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        let all = AddrRanges::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("::1")));
        let all6 = AddrRanges::parse("::/0").unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn mistakes_are_refused_with_a_clear_error() {
        assert_eq!(
            AddrRanges::parse_one("10.0.0.5/16")
                .unwrap_err()
                .to_string(),
            "\"10.0.0.5/16\" has host bits set: did you mean 10.0.0.0/16?"
        );
        for bad in [
            "",
            "vpc",
            "example.com",
            "10.0.0.0/",
            "10.0.0/8",
            "10.0.0.0/x",
            "10.0.0.0/8/8",
            "10.0.0.0/33",
            "fd00::/129",
        ] {
            assert!(
                matches!(AddrRanges::parse_one(bad), Err(RangeError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            AddrRanges::parse_one(" 10.0.0.0/8 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    proptest! {
        /// An address is in a block exactly when its first `prefix` bits are the block's.
        #[test]
        fn membership_is_a_prefix_comparison(a in any::<u32>(), b in any::<u32>(), prefix in 0u8..=32) {
            let net = if prefix == 0 { 0 } else { a & (u32::MAX << (32 - u32::from(prefix))) };
            let block = format!("{}/{prefix}", std::net::Ipv4Addr::from(net));
            let r = AddrRanges::parse(&block).unwrap();
            let same = prefix == 0 || (a ^ b) >> (32 - u32::from(prefix)) == 0;
            prop_assert_eq!(r.contains(IpAddr::V4(b.into())), same);
            prop_assert!(r.contains(IpAddr::V4(a.into())));
            prop_assert_eq!(AddrRanges::parse(&r.to_string()).unwrap(), r);
        }
    }
}
