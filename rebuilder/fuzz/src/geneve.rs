//! The `geneve` target: GENEVE headers and options of any declared length around the mirror's VXLAN.

use super::*;

/// One GENEVE option of the GENEVE target: class, type, the length field's 5 bits (in words,
/// not necessarily the data's length) and the data.
#[derive(Arbitrary, Debug, Clone)]
pub struct GeneveOption {
    pub class: u16,
    pub kind: u8,
    pub len_words: u8,
    pub data: Vec<u8>,
}

/// What the GENEVE packet carries.
#[derive(Arbitrary, Debug, Clone)]
pub enum GeneveInner {
    /// Any bytes.
    Raw(Vec<u8>),
    /// The mirror's VXLAN datagram (an IP/UDP/4789 packet from the mirrored ENI) carrying a
    /// canned client segment of one of a few connections.
    Mirror {
        conn: u8,
        offset: u16,
        len: u16,
        syn: bool,
        ipv6: bool,
        /// Bytes cut off the end of the IP packet.
        cut: u8,
    },
}

/// Input of the GENEVE target: a datagram built from a header (any first two bytes, any
/// protocol type, an options-area length that may disagree with the options) or raw bytes,
/// sent to the GENEVE port and to the VXLAN port of an engine.
#[derive(Arbitrary, Debug, Clone)]
pub enum GeneveInput {
    Raw(Vec<Vec<u8>>),
    Built(Vec<GeneveDatagram>),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GeneveDatagram {
    /// Version, options length and flags bytes: taken as they are when `raw_header`.
    pub raw_header: Option<[u8; 2]>,
    pub protocol: Option<u16>,
    pub options: Vec<GeneveOption>,
    pub inner: GeneveInner,
}

impl GeneveDatagram {
    fn build(&self) -> Vec<u8> {
        use rebuilder::engine::encap::geneve::{PROTOCOL_IPV4, PROTOCOL_IPV6};
        let mut area = Vec::new();
        for o in self.options.iter().take(16) {
            area.extend_from_slice(&o.class.to_be_bytes());
            area.push(o.kind);
            area.push(o.len_words & 0x1f);
            area.extend_from_slice(&o.data[..o.data.len().min(128)]);
        }
        let inner = match &self.inner {
            GeneveInner::Raw(b) => b.clone(),
            GeneveInner::Mirror {
                conn,
                offset,
                len,
                syn,
                ipv6,
                cut,
            } => {
                let (client, server) = conn_addrs(*conn, false);
                let o = usize::from(*offset) % (STREAM.len() + 1);
                let e = (o + usize::from(*len) % 1400).min(STREAM.len());
                let isn = 0x1000u32 + u32::from(*conn) * 7919;
                let seq = if *syn { isn } else { isn + 1 + o as u32 };
                let frame = tcp_frame(
                    client,
                    server,
                    false,
                    seq,
                    *syn,
                    false,
                    false,
                    &STREAM[o..e],
                );
                let eni: std::net::IpAddr = if *ipv6 {
                    Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 0, 1).into()
                } else {
                    Ipv4Addr::new(172, 31, 1, 1).into()
                };
                let g = geneve_datagram(&aws_options(TEST_GWLBE), eni, &vxlan_datagram(7, &frame));
                // The IP packet inside (after the 40-byte header with AWS's options).
                let mut ip = g[40..].to_vec();
                ip.truncate(ip.len().saturating_sub(usize::from(*cut)));
                ip
            }
        };
        let protocol = self
            .protocol
            .unwrap_or(match inner.first().map(|b| b >> 4) {
                Some(6) => PROTOCOL_IPV6,
                _ => PROTOCOL_IPV4,
            });
        let [b0, b1] = self
            .raw_header
            .unwrap_or([((area.len() / 4) as u8) & 0x3f, 0]);
        let mut d = vec![b0, b1];
        d.extend_from_slice(&protocol.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 0]);
        d.extend_from_slice(&area);
        d.extend_from_slice(&inner);
        d
    }
}

/// The GENEVE parser on its own and through the engine, on both tunnel ports. Checks: an
/// accepted packet is version 0 with an IP protocol and its inner packet is exactly what
/// follows the announced options; each datagram costs the engine at most one drop and is
/// counted once; the engine's caps and its end state hold.
pub fn run_geneve(input: &GeneveInput) {
    use rebuilder::engine::encap::Encap;
    use rebuilder::engine::encap::geneve::{GenevePacket, HEADER_LEN, looks_like_geneve};
    let datagrams: Vec<Vec<u8>> = match input {
        GeneveInput::Raw(d) => d.iter().take(64).cloned().collect(),
        GeneveInput::Built(d) => d.iter().take(64).map(GeneveDatagram::build).collect(),
    };
    let mut engine = Engine::new(small_engine_config());
    let mut out = Vec::new();
    let node: std::net::IpAddr = Ipv4Addr::new(10, 0, 200, 7).into();
    for (i, d) in datagrams.iter().enumerate() {
        if let Ok(p) = GenevePacket::parse(d) {
            assert_eq!(d[0] >> 6, 0);
            assert!(p.protocol == 0x0800 || p.protocol == 0x86dd);
            let start = HEADER_LEN + usize::from(d[0] & 0x3f) * 4;
            assert_eq!(p.inner, &d[start..]);
            assert!(looks_like_geneve(d));
        }
        for encap in [Encap::Geneve, Encap::Vxlan] {
            let before = decoding_drops(engine.stats());
            engine.on_datagram(i as u64, encap, node, d, &mut out);
            assert!(
                decoding_drops(engine.stats()) - before <= 1,
                "a datagram is refused for one reason at most"
            );
        }
        assert!(engine.buffered_bytes() <= engine.config().memory_budget_bytes);
        assert!(engine.active_flows() <= engine.config().max_flows);
    }
    check_requests(&out);
    for r in &out {
        assert!(
            r.mirror_source.is_some(),
            "every tunnel request names its sender"
        );
    }
    engine.finish(&mut out);
    assert_eq!(engine.stats().packets, 2 * datagrams.len() as u64);
    assert_eq!(engine.buffered_bytes(), 0);
    assert_eq!(engine.active_flows(), 0);
}

/// Drops of whole datagrams for what their headers are (not of messages, several of which one
/// RST may end).
fn decoding_drops(s: &EngineStats) -> u64 {
    use rebuilder::DropReason::*;
    [
        SourceNotAllowed,
        GeneveMalformed,
        GeneveOptionsTruncated,
        GeneveCriticalOption,
        GeneveControl,
        GeneveNotIp,
        GeneveNotVxlan,
        GeneveOnVxlanPort,
        VxlanOnGenevePort,
        VxlanMalformed,
        VniNotAllowed,
        MalformedPacket,
        NonTcp,
        IpFragment,
    ]
    .into_iter()
    .map(|r| s.drops(r))
    .sum()
}
