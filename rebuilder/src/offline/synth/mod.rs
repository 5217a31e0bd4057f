//! Deterministic capture generator: mirrored HTTP/1.x traffic with a ground truth.
//!
//! A [`Generator`] is an iterator of timestamped link-layer [`Frame`]s: outer
//! Ethernet/IPv4|IPv6/UDP 4789/VXLAN frames carrying inner Ethernet (802.1Q optional)/IPv4|IPv6/TCP
//! segments, the same VXLAN datagrams inside GENEVE from a Gateway Load Balancer node
//! (`SynthConfig::geneve`), or the inner frames alone for a plain capture. Every connection is scripted when it
//! starts (handshake, requests, server responses, ACKs, close), its segments are then mutated
//! by the knobs of [`SynthConfig`] (loss, reordering, retransmissions, truncation, duplicate
//! mirroring, capture start mid-stream), and the connections are interleaved so that
//! `concurrency` of them are open at any time.
//!
//! The ground truth ([`TruthRequest`]) lists every request each connection carries, in the
//! engine's [`HttpRequest`] terms, with `expected = true` iff every byte of it was captured
//! (in at least one emitted copy). A request that lost a byte is never expected: the engine
//! drops a message containing a gap and resynchronises on the next request line, and request
//! bodies are generated from an alphabet without CR/LF or spaces, so no body byte sequence
//! can look like a request line.
//!
//! The generator is seeded ([`SplitMix64`]): the same configuration yields the same bytes.
//! Memory stays bounded by the open connections, so million-packet captures can be streamed.
//!
//! Layout: [`config`] (the knobs), [`rng`] (the seeded random numbers), [`output`] (frames,
//! truth, counters), [`script`] (one
//! connection: streams, segments, mutations, truth), [`http`] (requests and responses),
//! [`wire`] (addresses and frames); this module interleaves the connections.

pub mod config;
mod http;
pub mod output;
pub mod rng;
mod script;
#[cfg(test)]
mod tests;
mod wire;

use crate::engine::encap::vxlan;
pub use crate::engine::encap::vxlan::VXLAN_PORT;
pub use config::SynthConfig;
pub use output::{Frame, GenStats, TruthRequest};
pub use rng::SplitMix64;
use script::{Dir, Ev, SynthConnection, build_connection};

/// The deterministic generator; iterate it for frames, [`Generator::drain_truth`] for the truth
/// of the connections that are complete so far (all of it once the iterator is exhausted).
pub struct Generator {
    cfg: SynthConfig,
    rng: SplitMix64,
    active: Vec<SynthConnection>,
    next_conn: u64,
    clock: u64,
    pending: Option<Frame>,
    truth_out: Vec<TruthRequest>,
    stats: GenStats,
    scratch: Vec<u8>,
    scratch2: Vec<u8>,
}

impl Generator {
    pub fn new(cfg: SynthConfig) -> Self {
        let rng = SplitMix64::new(cfg.seed);
        let clock = cfg.start_ts_us;
        let mut generator = Generator {
            cfg,
            rng,
            active: Vec::new(),
            next_conn: 0,
            clock,
            pending: None,
            truth_out: Vec::new(),
            stats: GenStats::default(),
            scratch: Vec::new(),
            scratch2: Vec::new(),
        };
        let initial = generator
            .cfg
            .concurrency
            .max(1)
            .min(generator.cfg.connections);
        for _ in 0..initial {
            let mid = generator.cfg.mid_stream;
            generator.open_connection(mid);
        }
        generator
    }

    /// Truth of every connection whose frames have all been produced since the last call.
    pub fn drain_truth(&mut self) -> Vec<TruthRequest> {
        std::mem::take(&mut self.truth_out)
    }

    pub fn stats(&self) -> &GenStats {
        &self.stats
    }

    fn open_connection(&mut self, mid_stream: bool) {
        let id = self.next_conn;
        self.next_conn += 1;
        let conn = build_connection(&self.cfg, &mut self.rng, id, mid_stream);
        self.stats.connections += 1;
        self.active.push(conn);
    }

    fn finish_connection(&mut self, index: usize) {
        let conn = self.active.swap_remove(index);
        for t in conn.truth {
            self.stats.requests += 1;
            if t.expected {
                self.stats.requests_expected += 1;
            }
            self.truth_out.push(t);
        }
        if (self.next_conn as usize) < self.cfg.connections {
            self.open_connection(false);
        }
    }

    fn emit(&mut self, index: usize, ev: Ev, duplicate: bool) -> Frame {
        let cfg = &self.cfg;
        let conn = &mut self.active[index];
        conn.ts_counter = conn.ts_counter.wrapping_add(1);
        let inner = &mut self.scratch;
        inner.clear();
        wire::inner_frame(conn, &ev, cfg.mtu, inner);
        let full_inner = inner.len();
        let captured_inner = cfg.packet_length.map_or(full_inner, |l| full_inner.min(l));
        let headers = full_inner - (ev.end - ev.start);
        if ev.dir == Dir::ClientToServer && ev.end > ev.start {
            let got = captured_inner.saturating_sub(headers);
            let ts = self.clock;
            for (i, &(start, _)) in conn.bounds.iter().enumerate() {
                if start >= ev.start && start < ev.start + got && conn.truth[i].request.ts_us == 0 {
                    conn.truth[i].request.ts_us = ts;
                }
            }
        }
        if ev.dir == Dir::ServerToClient && ev.end > ev.start {
            let got = captured_inner.saturating_sub(headers);
            let ts = self.clock;
            for (i, &(start, _)) in conn.s_bounds.iter().enumerate() {
                if start >= ev.start
                    && start < ev.start + got
                    && let Some(r) = conn.truth[i].request.response.as_mut()
                    && r.ts_us == 0
                {
                    r.ts_us = ts;
                }
            }
        }
        let (data, orig_len) = if cfg.vxlan {
            let datagram = &mut self.scratch2;
            datagram.clear();
            vxlan::encapsulate_into(conn.vni, &inner[..captured_inner], datagram);
            let (src, alt) = config::outer_sources(conn.id, cfg.outer_ipv6);
            let src = if duplicate { alt } else { src };
            let frame = match conn.gwlbe {
                Some(gwlbe) => wire::gwlb_frame(src, conn.outer_sport, gwlbe, datagram),
                None => wire::outer_frame(src, conn.outer_sport, datagram),
            };
            let len = frame.len() as u32;
            (frame, len)
        } else {
            (inner[..captured_inner].to_vec(), full_inner as u32)
        };
        self.stats.frames += 1;
        self.stats.bytes += data.len() as u64;
        Frame {
            ts_us: self.clock,
            data,
            orig_len,
        }
    }
}

impl Iterator for Generator {
    type Item = Frame;

    fn next(&mut self) -> Option<Frame> {
        if let Some(frame) = self.pending.take() {
            return Some(frame);
        }
        loop {
            if self.active.is_empty() {
                return None;
            }
            let index = self.rng.below(self.active.len() as u64) as usize;
            let Some(ev) = self.active[index].events.pop_front() else {
                self.finish_connection(index);
                continue;
            };
            self.clock += 1 + self.rng.below(self.cfg.max_step_us.max(1));
            let frame = self.emit(index, ev, false);
            if self.rng.chance(self.cfg.duplicate_mirror) {
                self.clock += 1;
                let mut copy = self.emit(index, ev, true);
                // The copy from the other mirrored end carries the same inner packet; make
                // the truth timestamps refer to the first copy.
                copy.ts_us = self.clock;
                self.pending = Some(copy);
            }
            return Some(frame);
        }
    }
}

/// Generates the whole capture in memory (small captures: tests).
pub fn generate(cfg: SynthConfig) -> (Vec<Frame>, Vec<TruthRequest>) {
    let mut generator = Generator::new(cfg);
    let frames: Vec<Frame> = generator.by_ref().collect();
    let mut truth = generator.drain_truth();
    truth.sort_by_key(|t| (t.conn, t.index));
    (frames, truth)
}
