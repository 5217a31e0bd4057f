//! Encapsulations that carry mirrored frames to the rebuilder, and who may send them.
//!
//! AWS Traffic Mirroring uses VXLAN (RFC 7348) on UDP/4789 ([`vxlan`]); behind a Gateway
//! Load Balancer endpoint each VXLAN datagram arrives as an IP packet inside GENEVE
//! (RFC 8926) on UDP/6081 ([`geneve`]). The allow-list of datagram sources, checked before
//! anything is parsed, is `EngineConfig::allow_from` (an [`AddrRanges`]).
//!
//! [`AddrRanges`]: crate::engine::ranges::AddrRanges

pub mod geneve;
pub mod vxlan;

/// The tunnel a datagram arrived through (the listening port it was received on, or the
/// destination port of a captured outer UDP datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// VXLAN from Traffic Mirroring (an NLB or an ENI target): UDP/4789.
    Vxlan,
    /// GENEVE from a Gateway Load Balancer around the mirror's VXLAN datagram: UDP/6081.
    Geneve,
}

impl Encap {
    /// The IANA port of this encapsulation.
    pub const fn port(self) -> u16 {
        match self {
            Encap::Vxlan => vxlan::VXLAN_PORT,
            Encap::Geneve => geneve::GENEVE_PORT,
        }
    }

    /// The encapsulation whose IANA port is `port`.
    pub const fn of_port(port: u16) -> Option<Encap> {
        match port {
            vxlan::VXLAN_PORT => Some(Encap::Vxlan),
            geneve::GENEVE_PORT => Some(Encap::Geneve),
            _ => None,
        }
    }
}
