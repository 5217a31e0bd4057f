//! Who may send tunnelled traffic: a list of CIDR blocks (`--allow-from`). A datagram whose
//! source address is outside every block is dropped before a byte of it is parsed
//! (`source_not_allowed`).
//!
//! The address checked is the one the datagram came from: the mirrored ENI's in NLB mode
//! (NLB UDP target groups preserve the client IP), a Gateway Load Balancer node's in GWLB mode,
//! the outer IP source of a captured datagram in a replay. An IPv4-mapped IPv6 source
//! (`::ffff:a.b.c.d`) is checked as the IPv4 address it maps.

use std::net::IpAddr;
use std::str::FromStr;

/// One CIDR block: an address and a prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR block could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or CIDR block (e.g. 10.0.0.0/16, fd00::/8)")]
    Syntax(String),
    #[error("{0:?}: prefix length over {1}")]
    Prefix(String, u8),
    #[error("{given:?} has host bits set: did you mean {network}?")]
    HostBits { given: String, network: Cidr },
}

impl Cidr {
    /// The block `addr/prefix` (host bits must be zero).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let text = format!("{addr}/{prefix}");
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError::Prefix(text, max));
        }
        let network = Cidr {
            addr: mask(addr, prefix),
            prefix,
        };
        if network.addr != addr {
            return Err(CidrError::HostBits {
                given: text,
                network,
            });
        }
        Ok(network)
    }

    /// Whether `ip` is inside the block (IPv4-mapped IPv6 addresses as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDR/PREFIX`, or a bare address (a block of one address).
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let syntax = || CidrError::Syntax(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| syntax())?;
                let prefix: u8 = p.parse().map_err(|_| syntax())?;
                (addr, prefix)
            }
            None => {
                let addr: IpAddr = s.parse().map_err(|_| syntax())?;
                (addr, max_prefix(addr))
            }
        };
        Cidr::new(addr, prefix)
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// The senders a rebuilder accepts: any (no list), or those inside one of the blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderAllowList {
    blocks: Option<Vec<Cidr>>,
}

impl SenderAllowList {
    /// Every sender is accepted.
    pub const ANY: SenderAllowList = SenderAllowList { blocks: None };

    /// Only senders inside `blocks` (an empty list: every sender, as if unset).
    pub fn new(blocks: Vec<Cidr>) -> SenderAllowList {
        SenderAllowList {
            blocks: (!blocks.is_empty()).then_some(blocks),
        }
    }

    /// Whether a datagram from `ip` is processed.
    #[inline]
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.blocks
            .as_ref()
            .is_none_or(|b| b.iter().any(|c| c.contains(ip)))
    }

    /// The blocks, when the list is restricted.
    pub fn blocks(&self) -> Option<&[Cidr]> {
        self.blocks.as_deref()
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
    fn blocks_contain_their_addresses_and_nothing_else() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.0.0")));
        assert!(c.contains(ip("10.1.255.255")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(!c.contains(ip("fd00::1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        let v6: Cidr = "fd00:a::/32".parse().unwrap();
        assert!(v6.contains(ip("fd00:a:1::5")));
        assert!(!v6.contains(ip("fd00:b::5")));
        assert!(!v6.contains(ip("10.1.0.1")));
    }

    #[test]
    fn a_bare_address_is_a_block_of_one_and_slash_zero_is_everything() {
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("::1")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn mistakes_are_refused_with_a_clear_error() {
        assert_eq!(
            "10.0.0.5/16".parse::<Cidr>().unwrap_err().to_string(),
            "\"10.0.0.5/16\" has host bits set: did you mean 10.0.0.0/16?"
        );
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix(..))
        ));
        assert!(matches!(
            "fd00::/129".parse::<Cidr>(),
            Err(CidrError::Prefix(..))
        ));
        for bad in [
            "",
            "vpc",
            "10.0.0.0/",
            "10.0.0/8",
            "10.0.0.0/x",
            "10.0.0.0/8/8",
        ] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            " 10.0.0.0/8 ".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn an_empty_or_absent_list_accepts_every_sender() {
        assert!(SenderAllowList::ANY.allows(ip("198.51.100.1")));
        assert!(SenderAllowList::new(Vec::new()).allows(ip("::1")));
        let l = SenderAllowList::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        assert!(l.allows(ip("10.9.9.9")));
        assert!(l.allows(ip("fd12::1")));
        assert!(!l.allows(ip("172.16.0.1")));
    }

    proptest! {
        /// An address is in a block exactly when its first `prefix` bits are the block's.
        #[test]
        fn membership_is_a_prefix_comparison(a in any::<u32>(), b in any::<u32>(), prefix in 0u8..=32) {
            let net = if prefix == 0 { 0 } else { a & (u32::MAX << (32 - u32::from(prefix))) };
            let c = Cidr::new(IpAddr::V4(net.into()), prefix).unwrap();
            let same = prefix == 0 || (a ^ b) >> (32 - u32::from(prefix)) == 0;
            prop_assert_eq!(c.contains(IpAddr::V4(b.into())), same);
            prop_assert!(c.contains(IpAddr::V4(a.into())));
            prop_assert_eq!(c.to_string().parse::<Cidr>().unwrap(), c);
        }
    }
}
