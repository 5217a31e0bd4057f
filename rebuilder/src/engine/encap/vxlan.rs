//! VXLAN (RFC 7348): the 8-byte header that AWS Traffic Mirroring puts in front of each
//! mirrored frame, carried in UDP to port 4789.
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//! Only the I flag is checked (it must be set); reserved bits are ignored, as the RFC asks of
//! receivers. The inner frame follows the header and may be a 9001-byte jumbo frame or be
//! cut short by the session's PacketLength: nothing here assumes a maximum size.

use thiserror::Error;

/// The IANA port for VXLAN.
pub const VXLAN_PORT: u16 = 4789;
/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag (valid VNI) in the first byte.
const FLAG_I: u8 = 0x08;

/// Why a datagram is not a usable VXLAN packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VxlanError {
    /// Fewer than 8 bytes.
    #[error("VXLAN datagram shorter than its 8-byte header ({0} bytes)")]
    TooShort(usize),
    /// The I flag is not set, so the VNI is not valid.
    #[error("VXLAN I flag not set")]
    NoVni,
}

/// A checked view of one VXLAN datagram: header fields and the inner Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanPacket<'a> {
    /// The 24-bit VXLAN Network Identifier.
    pub vni: u32,
    /// The inner Ethernet frame (everything after the header).
    pub inner: &'a [u8],
}

impl<'a> VxlanPacket<'a> {
    /// Checks the header of `payload` (a UDP payload) and splits off the inner frame.
    pub fn parse(payload: &'a [u8]) -> Result<VxlanPacket<'a>, VxlanError> {
        let Some((header, inner)) = payload.split_first_chunk::<HEADER_LEN>() else {
            return Err(VxlanError::TooShort(payload.len()));
        };
        if header[0] & FLAG_I == 0 {
            return Err(VxlanError::NoVni);
        }
        let vni = u32::from_be_bytes([0, header[4], header[5], header[6]]);
        Ok(VxlanPacket { vni, inner })
    }
}

/// Whether `payload` has the shape of a VXLAN header: the I flag set and the reserved bytes
/// after the flags zero (where GENEVE carries its protocol type, never 0). Used only to name
/// the drop reason of a datagram that failed as GENEVE (a VXLAN datagram sent to the GENEVE
/// port).
pub fn looks_like_vxlan(payload: &[u8]) -> bool {
    payload
        .first_chunk::<HEADER_LEN>()
        .is_some_and(|h| h[0] & FLAG_I != 0 && h[2] == 0 && h[3] == 0)
}

/// A VXLAN header for `vni` followed by `inner` (the generator and the tests send these).
pub fn encapsulate(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + inner.len());
    encapsulate_into(vni, inner, &mut out);
    out
}

/// Appends a VXLAN header for `vni` (the low 24 bits) and `inner` to `out`.
pub fn encapsulate_into(vni: u32, inner: &[u8], out: &mut Vec<u8>) {
    let v = vni.to_be_bytes();
    out.extend_from_slice(&[FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]);
    out.extend_from_slice(inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vni_and_inner_frame_are_split_off() {
        let d = encapsulate(0x00ab_cdef, b"frame");
        let p = VxlanPacket::parse(&d).unwrap();
        assert_eq!(p.vni, 0x00ab_cdef);
        assert_eq!(p.inner, b"frame");
    }

    #[test]
    fn datagram_without_i_flag_is_rejected() {
        let mut d = encapsulate(7, b"x");
        d[0] = 0;
        assert_eq!(VxlanPacket::parse(&d), Err(VxlanError::NoVni));
    }

    #[test]
    fn datagram_shorter_than_header_is_rejected() {
        assert_eq!(
            VxlanPacket::parse(&[0x08, 0, 0]),
            Err(VxlanError::TooShort(3))
        );
    }

    #[test]
    fn reserved_bits_are_ignored() {
        let mut d = encapsulate(42, b"");
        d[0] |= 0xf7;
        d[1] = 0xff;
        d[7] = 0xff;
        assert_eq!(VxlanPacket::parse(&d).unwrap().vni, 42);
    }

    #[test]
    fn a_vxlan_header_is_recognised_by_its_flag_and_zero_reserved_bytes() {
        assert!(looks_like_vxlan(&encapsulate(7, b"")));
        let mut d = encapsulate(7, b"");
        d[0] = 0;
        assert!(!looks_like_vxlan(&d));
        let mut d = encapsulate(7, b"");
        d[2] = 0x08; // a GENEVE protocol type there
        assert!(!looks_like_vxlan(&d));
        assert!(!looks_like_vxlan(&[0x08, 0, 0]));
    }

    #[test]
    fn jumbo_inner_frame_is_kept_whole() {
        let inner = vec![0x5a; 9001 + 18];
        let d = encapsulate(1, &inner);
        assert_eq!(VxlanPacket::parse(&d).unwrap().inner.len(), 9019);
    }
}
