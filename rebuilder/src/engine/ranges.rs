//! [`AddrRanges`]: address ranges of the configuration (peers whose PROXY protocol headers are
//! believed, load-balancer nodes whose health checks are dropped). A leaf: imports nothing of
//! the engine.

use std::net::IpAddr;

use ipnet::IpNet;

/// A list of address ranges (CIDR blocks; a bare address is a /32 or /128). Empty: nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrRanges(Vec<IpNet>);

/// A range that is not `ADDRESS[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address range (CIDR like 10.0.0.0/16 or fd00::/8, or an address)")]
pub struct RangeError(String);

impl AddrRanges {
    /// No range: matches nothing.
    pub const NONE: AddrRanges = AddrRanges(Vec::new());

    /// These ranges.
    pub fn new(ranges: Vec<IpNet>) -> AddrRanges {
        AddrRanges(ranges)
    }

    /// Parses one range (`10.0.0.0/16`, `fd00::/8`, `192.0.2.7`).
    pub fn parse_one(s: &str) -> Result<IpNet, RangeError> {
        let s = s.trim();
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map(|n| n.trunc())
            .map_err(|_| RangeError(s.to_string()))
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
    /// also matches the IPv4 ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.0
            .iter()
            .any(|n| n.contains(&ip) || v4.is_some_and(|v4| n.contains(&v4)))
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
        assert!(AddrRanges::parse("10.0.0.0/33").is_err());
        assert!(AddrRanges::parse("example.com").is_err());
        assert_eq!(
            AddrRanges::parse("10.0.0.9/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}
