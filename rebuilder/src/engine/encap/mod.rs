//! Encapsulations that carry mirrored frames to the rebuilder. AWS Traffic Mirroring uses
//! VXLAN (RFC 7348) on UDP/4789; a Gateway Load Balancer would add GENEVE (RFC 8926) here.

pub mod vxlan;
