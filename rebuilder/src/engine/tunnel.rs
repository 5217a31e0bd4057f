//! The engine's entry points and the tunnels around a mirrored packet: the sender allow-list,
//! GENEVE, VXLAN and the VNI allow-list, down to the inner packet ([`Carrier`]: what carried it).

use super::*;

impl Engine {
    /// Live path: the payload of one UDP datagram received on a tunnel port (`encap`: the
    /// port's encapsulation; the tunnel header first), from `sender`.
    pub fn on_datagram(
        &mut self,
        ts_us: u64,
        encap: Encap,
        sender: IpAddr,
        payload: &[u8],
        out: &mut Vec<HttpRequest>,
    ) {
        self.count_packet(
            SourceKey {
                sender: Some(sender),
                ..SourceKey::default()
            },
            payload.len(),
        );
        self.tunnel(
            ts_us,
            Tunnel {
                encap,
                source: sender,
                payload,
            },
            out,
        );
    }

    /// The payload of one UDP datagram received on port 4789 (VXLAN header first) whose sender
    /// is not known: no allow-list check, no `mirror_source` (tests and benchmarks).
    pub fn on_vxlan_payload(&mut self, ts_us: u64, payload: &[u8], out: &mut Vec<HttpRequest>) {
        self.count_packet(SourceKey::default(), payload.len());
        self.vxlan(ts_us, Carrier::DIRECT, payload, out);
    }

    /// Replay path: one captured link-layer frame: an outer Ethernet frame carrying
    /// IPv4/IPv6 -> UDP dst 4789 -> VXLAN or UDP dst 6081 -> GENEVE, or a plain (already
    /// decapsulated) Ethernet frame.
    pub fn on_captured_frame(&mut self, ts_us: u64, frame: &[u8], out: &mut Vec<HttpRequest>) {
        self.count_packet(SourceKey::default(), frame.len());
        match parse_ethernet(frame, true) {
            Ok(Parsed::Tunnel(t)) => self.tunnel(ts_us, t, out),
            Ok(Parsed::Tcp(seg)) => {
                self.refine_source(Carrier::PLAIN.source(Some(0)));
                if self.vni_allowed(0) {
                    self.segment(ts_us, Carrier::PLAIN, &seg, out);
                } else {
                    self.shared.stats.count_drop(DropReason::VniNotAllowed);
                }
            }
            Err(e) => self.packet_error(e),
        }
    }

    /// A hint about the frames that [`Engine::on_captured_frame`] will get next (`next`) and
    /// after it (`after`): the lookups of each are started early enough that neither the index
    /// nor the flow entries are cache misses when its packet comes. `after`'s index lines are
    /// requested now; `next`'s were requested one packet ago (when it was `after`), so its
    /// probes are cheap and its entries are requested now. Both directions' entries: a
    /// response packet also reads its client's. Changes nothing.
    ///
    /// Only the common shape is looked at (IPv4 / UDP 4789 / VXLAN / Ethernet / IPv4 / TCP, no
    /// VLAN tag), read by hand: decoding the frames in full would cost more than the cache
    /// misses it saves.
    ///
    /// The tags read from `after` are kept for the next call, where the same frame is `next`
    /// (recognised by its address and length in the reader's buffer; a frame that moved is
    /// read again, and a different frame at the same place only makes a useless hint).
    pub fn prefetch_frames(&mut self, next: Option<&[u8]>, after: Option<&[u8]>) {
        let at = |f: &[u8]| (f.as_ptr() as usize, f.len());
        let tags = |k: FlowKey| [self.table.tag(&k), self.table.tag(&k.reverse())];
        let (seen, kept) = self.lookahead;
        if let Some(next) = next {
            let known = if seen == at(next) {
                kept
            } else {
                vxlan_v4_key(next).map(tags)
            };
            for tag in known.into_iter().flatten() {
                self.table.prefetch(tag);
            }
        }
        self.lookahead = match after {
            Some(after) => {
                let known = vxlan_v4_key(after).map(tags);
                for tag in known.into_iter().flatten() {
                    self.table.prefetch_index(tag);
                }
                (at(after), known)
            }
            None => ((0, 0), None),
        };
    }

    /// Counts one packet, first attributed to `key` (refined as more of its key is read).
    #[inline]
    pub(super) fn count_packet(&mut self, key: SourceKey, len: usize) {
        self.packet_len = len as u64;
        self.shared.stats.count_packet(key, self.packet_len);
    }

    /// The packet being processed comes from `key`.
    #[inline]
    pub(super) fn refine_source(&mut self, key: SourceKey) {
        self.shared.stats.sources.refine(key, self.packet_len);
    }

    /// Runs `f` with `key` as the current source (work of a timer or an eviction for a
    /// direction other than the packet's).
    #[inline]
    pub(super) fn for_source<R>(&mut self, key: SourceKey, f: impl FnOnce(&mut Engine) -> R) -> R {
        let before = self.shared.stats.sources.current();
        self.shared.stats.sources.set(key);
        let r = f(self);
        self.shared.stats.sources.restore(before);
        r
    }

    /// A tunnel datagram: the sender check before anything is parsed, then its header.
    #[inline]
    pub(super) fn tunnel(&mut self, ts_us: u64, t: Tunnel<'_>, out: &mut Vec<HttpRequest>) {
        if let Some(allowed) = &self.config.allow_from
            && !allowed.contains(t.source)
        {
            self.shared.stats.count_drop(DropReason::SourceNotAllowed);
            return;
        }
        match t.encap {
            Encap::Vxlan => {
                let carrier = Carrier {
                    mirror: Some(t.source),
                    ..Carrier::DIRECT
                };
                self.vxlan(ts_us, carrier, t.payload, out);
            }
            Encap::Geneve => self.geneve(ts_us, t.payload, out),
        }
    }

    /// A GENEVE packet of a Gateway Load Balancer: its inner IP packet must be the mirror's
    /// VXLAN datagram, whose IP source is the mirror's source.
    pub(super) fn geneve(&mut self, ts_us: u64, payload: &[u8], out: &mut Vec<HttpRequest>) {
        let g = match GenevePacket::parse(payload) {
            Ok(g) => g,
            Err(e) => {
                let reason = if looks_like_vxlan(payload) {
                    DropReason::VxlanOnGenevePort
                } else {
                    match e {
                        GeneveError::Malformed => DropReason::GeneveMalformed,
                        GeneveError::OptionsTruncated => DropReason::GeneveOptionsTruncated,
                        GeneveError::CriticalOption { .. } => DropReason::GeneveCriticalOption,
                        GeneveError::Control => DropReason::GeneveControl,
                        GeneveError::NotIp(_) => DropReason::GeneveNotIp,
                    }
                };
                self.shared.stats.count_drop(reason);
                return;
            }
        };
        match parse_ip(etherparse::EtherType(g.protocol), g.inner, true) {
            Ok(Parsed::Tunnel(Tunnel {
                encap: Encap::Vxlan,
                source,
                payload,
            })) => {
                let carrier = Carrier {
                    vni: 0,
                    gwlbe: g.aws.endpoint_id,
                    mirror: Some(source),
                    in_geneve: true,
                };
                self.vxlan(ts_us, carrier, payload, out);
            }
            Ok(_) | Err(PacketError::NonTcp) => {
                self.shared.stats.count_drop(DropReason::GeneveNotVxlan)
            }
            Err(e) => self.packet_error(e),
        }
    }

    pub(super) fn vni_allowed(&self, vni: u32) -> bool {
        self.config
            .vni_allow
            .as_ref()
            .is_none_or(|allow| allow.contains(&vni))
    }

    pub(super) fn packet_error(&mut self, e: PacketError) {
        self.shared.stats.count_drop(match e {
            PacketError::Malformed => DropReason::MalformedPacket,
            PacketError::Fragment => DropReason::IpFragment,
            PacketError::NonTcp => DropReason::NonTcp,
        });
    }

    /// A VXLAN datagram (received directly, or inside GENEVE as `carrier` says).
    pub(super) fn vxlan(
        &mut self,
        ts_us: u64,
        carrier: Carrier,
        payload: &[u8],
        out: &mut Vec<HttpRequest>,
    ) {
        // A GENEVE packet sent to the VXLAN port fails one of the three checks below (its
        // inner bytes are options, not a frame); only then is its shape looked at.
        let misdirected = |payload: &[u8]| !carrier.in_geneve && looks_like_geneve(payload);
        self.refine_source(carrier.source(None));
        let Ok(v) = VxlanPacket::parse(payload) else {
            self.shared.stats.count_drop(if misdirected(payload) {
                DropReason::GeneveOnVxlanPort
            } else {
                DropReason::VxlanMalformed
            });
            return;
        };
        self.refine_source(carrier.source(Some(v.vni)));
        if !self.vni_allowed(v.vni) {
            self.shared.stats.count_drop(if misdirected(payload) {
                DropReason::GeneveOnVxlanPort
            } else {
                DropReason::VniNotAllowed
            });
            return;
        }
        match parse_ethernet(v.inner, false) {
            Ok(Parsed::Tcp(seg)) => {
                let carrier = Carrier {
                    vni: v.vni,
                    ..carrier
                };
                self.segment(ts_us, carrier, &seg, out);
            }
            Ok(Parsed::Tunnel(_)) => self.shared.stats.count_drop(DropReason::NonTcp),
            Err(_) if misdirected(payload) => {
                self.shared.stats.count_drop(DropReason::GeneveOnVxlanPort)
            }
            Err(e) => self.packet_error(e),
        }
    }
}

/// What carried a segment: the VXLAN VNI, the GWLB endpoint (GENEVE), the IP source of the
/// VXLAN datagram (the mirror's source).
#[derive(Debug, Clone, Copy)]
pub(super) struct Carrier {
    pub(super) vni: u32,
    pub(super) gwlbe: Option<u64>,
    pub(super) mirror: Option<IpAddr>,
    /// The VXLAN datagram was inside GENEVE (so it cannot be a misdirected GENEVE packet).
    pub(super) in_geneve: bool,
}

impl Carrier {
    /// A VXLAN datagram received directly, sender unknown (the VNI is read from it).
    pub(super) const DIRECT: Carrier = Carrier {
        vni: 0,
        gwlbe: None,
        mirror: None,
        in_geneve: false,
    };
    /// A plain (already decapsulated) captured frame: VNI 0, nothing else known.
    pub(super) const PLAIN: Carrier = Carrier::DIRECT;

    /// The source key it tells (`vni`: once read).
    pub(super) fn source(&self, vni: Option<u32>) -> SourceKey {
        SourceKey {
            gwlbe: self.gwlbe,
            sender: self.mirror,
            vni,
        }
    }
}

/// The flow key of a frame of the common shape (see [`Engine::prefetch_frames`]), `None` for
/// any other (or a short) frame. Nothing is validated beyond what locating the fields needs
/// (and the VXLAN header's own check).
pub(super) fn vxlan_v4_key(frame: &[u8]) -> Option<FlowKey> {
    let (udp, proto, _, _) = ipv4_at(frame)?;
    let dport = frame.get(udp + 2..udp + 4)?;
    if proto != 17
        || u16::from_be_bytes([dport[0], dport[1]]) != crate::engine::encap::vxlan::VXLAN_PORT
    {
        return None;
    }
    let v = VxlanPacket::parse(frame.get(udp + 8..)?).ok()?;
    let (tcp, proto, src, dst) = ipv4_at(v.inner)?;
    let ports = v.inner.get(tcp..tcp + 4)?;
    if proto != 6 {
        return None;
    }
    let port = |i: usize| u16::from_be_bytes([ports[i], ports[i + 1]]);
    Some(FlowKey::v4(v.vni, (src, port(0)), (dst, port(2))))
}

/// The IPv4 header of an untagged Ethernet frame: where its payload starts, its protocol,
/// source and destination.
fn ipv4_at(frame: &[u8]) -> Option<(usize, u8, [u8; 4], [u8; 4])> {
    const ETH: usize = 14;
    let h = frame.get(ETH..ETH + 20)?;
    if frame[ETH - 2..ETH] != [0x08, 0x00] || h[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let (src, dst) = (h[12..16].try_into().ok()?, h[16..20].try_into().ok()?);
    Some((ETH + ihl, h[9], src, dst))
}
