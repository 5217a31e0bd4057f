//! Deterministic capture generator: mirrored HTTP/1.x traffic with a ground truth.
//!
//! A [`Generator`] is an iterator of timestamped link-layer [`Frame`]s: outer
//! Ethernet/IPv4|IPv6/UDP 4789/VXLAN frames carrying inner Ethernet (802.1Q optional)/IPv4|IPv6/TCP
//! segments, or the inner frames alone for a plain capture. Every connection is scripted when it
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

use crate::engine::request::HttpRequest;
use etherparse::PacketBuilder;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The UDP destination port of VXLAN (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;

/// splitmix64: tiny, fast, good enough to drive a test-traffic generator deterministically.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; `0` yields `0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi` (`hi < lo` yields `lo`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// `true` with probability `p` (clamped to 0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        ((self.next_u64() >> 11) as f64) < p * (1u64 << 53) as f64
    }

    /// Appends `n` bytes drawn from `alphabet`.
    pub fn fill_from(&mut self, out: &mut Vec<u8>, n: usize, alphabet: &[u8]) {
        let mut left = n;
        while left > 0 {
            let mut word = self.next_u64();
            for _ in 0..left.min(8) {
                out.push(alphabet[(word & 0xff) as usize % alphabet.len()]);
                word >>= 8;
            }
            left -= left.min(8);
        }
    }
}

/// Body alphabet: no CR, LF or space, so no body can contain a request line.
const BODY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=&.";
const PATH_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The knobs of the generator. [`SynthConfig::default`] is clean traffic: a handful of keep-alive
/// IPv4 connections over VXLAN, both directions, no loss, no mutation.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Connections in the whole capture.
    pub connections: usize,
    /// Connections open (and interleaved) at any time.
    pub concurrency: usize,
    /// Requests per connection (`min..=max`); 1 when `keep_alive` is false.
    pub min_requests: usize,
    pub max_requests: usize,
    /// Methods, chosen uniformly. POST, PUT and PATCH carry a body.
    pub methods: Vec<String>,
    /// Body size of requests that carry one (`min..=max` bytes).
    pub min_body: usize,
    pub max_body: usize,
    /// Fraction of bodies sent with `Transfer-Encoding: chunked` (HTTP/1.1 only).
    pub chunked: f64,
    /// Force a segment boundary inside every chunked body's `0\r\n\r\n` terminator.
    pub split_chunk_terminator: bool,
    /// Fraction of body requests sent with `Expect: 100-continue` (head, interim 100, body).
    pub expect_continue: f64,
    /// Fraction of connections that pipeline all their requests in one write.
    pub pipelining: f64,
    /// Persistent connections (several requests); otherwise one request and `Connection: close`.
    pub keep_alive: bool,
    /// Fraction of connections speaking HTTP/1.0.
    pub http10: f64,
    /// Fraction of writes cut into random small segments (instead of MSS-sized ones).
    pub small_segments: f64,
    /// Probability that a client data segment is swapped with the next one.
    pub reorder: f64,
    /// Probability that a client data segment is retransmitted unchanged a little later.
    pub retransmit: f64,
    /// Probability that a retransmission partially overlapping two segments follows a segment.
    pub overlap: f64,
    /// Probability that a client data segment is lost (never captured).
    pub loss: f64,
    /// AWS PacketLength: inner frames longer than this are cut to this many bytes.
    pub packet_length: Option<usize>,
    /// Fraction of connections over IPv6 (inner).
    pub ipv6: f64,
    /// Outer (VXLAN carrier) packets over IPv6.
    pub outer_ipv6: bool,
    /// Fraction of connections opened by a load balancer with a PROXY protocol v1 line
    /// naming another client (`TCP4`/`TCP6` following the inner family).
    pub proxy_v1: f64,
    /// Fraction of connections with a PROXY protocol v2 header (after `proxy_v1` is drawn;
    /// with a TLV, as an NLB sends).
    pub proxy_v2: f64,
    /// Fraction of connections that are a load balancer's health check: one
    /// `GET /health` with `User-Agent: ELB-HealthChecker/2.0`, as an ALB sends it (dropped by
    /// the engine's default health-check rule; the truth lists it as captured).
    pub health_checks: f64,
    /// Fraction of connections whose inner frames carry an 802.1Q tag.
    pub vlan: f64,
    /// Fraction of tagged connections that use two tags (QinQ) instead of one.
    pub qinq: f64,
    /// Inner MTU (1500, or 9001 for jumbo frames).
    pub mtu: usize,
    /// Probability that a packet is mirrored twice (second copy from another outer source).
    pub duplicate_mirror: f64,
    /// The capture starts mid-stream: the first connections are already in progress.
    pub mid_stream: bool,
    /// Server responses present (server -> client direction).
    pub responses: bool,
    /// Pure ACK packets present.
    pub acks: bool,
    /// Fraction of connections closed by RST instead of FIN.
    pub rst: f64,
    /// Fraction of connections that use TCP timestamps (a 12-byte option on every segment).
    pub tcp_timestamps: f64,
    /// Fraction of connections whose initial sequence numbers are just below 2^32 (wraparound).
    pub isn_wrap: f64,
    /// Encapsulate in VXLAN (otherwise a plain Ethernet capture; VNI 0 in the truth).
    pub vxlan: bool,
    /// VNIs, one chosen per connection.
    pub vnis: Vec<u32>,
    /// Timestamp of the first frame (µs since the UNIX epoch).
    pub start_ts_us: u64,
    /// Each frame is 1..=max_step_us µs after the previous one.
    pub max_step_us: u64,
    /// Server response body size (`0..=max`).
    pub max_response_body: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1,
            connections: 20,
            concurrency: 4,
            min_requests: 1,
            max_requests: 5,
            methods: ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]
                .iter()
                .map(|m| m.to_string())
                .collect(),
            min_body: 0,
            max_body: 4000,
            chunked: 0.0,
            split_chunk_terminator: false,
            expect_continue: 0.0,
            pipelining: 0.0,
            keep_alive: true,
            http10: 0.0,
            small_segments: 0.0,
            reorder: 0.0,
            retransmit: 0.0,
            overlap: 0.0,
            loss: 0.0,
            packet_length: None,
            ipv6: 0.0,
            outer_ipv6: false,
            proxy_v1: 0.0,
            proxy_v2: 0.0,
            health_checks: 0.0,
            vlan: 0.0,
            qinq: 0.0,
            mtu: 1500,
            duplicate_mirror: 0.0,
            mid_stream: false,
            responses: true,
            acks: true,
            rst: 0.0,
            tcp_timestamps: 0.0,
            isn_wrap: 0.0,
            vxlan: true,
            vnis: vec![4242],
            start_ts_us: 1_700_000_000_000_000,
            max_step_us: 20,
            max_response_body: 2000,
        }
    }
}

impl SynthConfig {
    /// A realistic production-like mix for benchmarks: many interleaved keep-alive connections,
    /// both directions, a little pipelining, chunked uploads, IPv6 and VLAN tags, a few
    /// retransmissions and mirrored duplicates — and no loss, so every request is expected.
    pub fn realistic(seed: u64, connections: usize, concurrency: usize) -> Self {
        SynthConfig {
            seed,
            connections,
            concurrency,
            min_requests: 1,
            max_requests: 8,
            methods: [
                "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "HEAD", "PATCH",
            ]
            .iter()
            .map(|m| m.to_string())
            .collect(),
            min_body: 16,
            max_body: 6000,
            chunked: 0.1,
            split_chunk_terminator: false,
            expect_continue: 0.02,
            pipelining: 0.05,
            keep_alive: true,
            http10: 0.02,
            small_segments: 0.05,
            reorder: 0.01,
            retransmit: 0.01,
            overlap: 0.005,
            loss: 0.0,
            packet_length: None,
            ipv6: 0.2,
            outer_ipv6: false,
            proxy_v1: 0.0,
            proxy_v2: 0.0,
            health_checks: 0.0,
            vlan: 0.1,
            qinq: 0.1,
            mtu: 1500,
            duplicate_mirror: 0.01,
            mid_stream: false,
            responses: true,
            acks: true,
            rst: 0.05,
            tcp_timestamps: 0.5,
            isn_wrap: 0.05,
            vxlan: true,
            vnis: vec![101, 202, 303],
            start_ts_us: 1_700_000_000_000_000,
            max_step_us: 2,
            max_response_body: 3000,
        }
    }
}

/// One captured link-layer frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub ts_us: u64,
    /// The captured bytes.
    pub data: Vec<u8>,
    /// The length on the wire (> `data.len()` when the capture cut the frame).
    pub orig_len: u32,
}

/// A request of the ground truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruthRequest {
    /// Connection number (0-based, in order of creation).
    pub conn: u64,
    /// Position of the request on its connection.
    pub index: u32,
    /// Every byte of the request was captured: the engine must emit it (exactly once).
    /// `false`: a byte is missing and the engine must not emit it.
    pub expected: bool,
    /// The request as the engine must report it. `ts_us` is the capture time of the first
    /// emitted frame holding the request's first byte (0 if that byte was never captured).
    pub request: HttpRequest,
}

/// Counters of what the generator produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenStats {
    pub frames: u64,
    pub bytes: u64,
    pub connections: u64,
    pub requests: u64,
    pub requests_expected: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

const F_SYN: u8 = 1;
const F_ACK: u8 = 2;
const F_FIN: u8 = 4;
const F_RST: u8 = 8;
const F_PSH: u8 = 16;

/// One scripted TCP segment: stream offsets `start..end` of its direction's byte stream.
#[derive(Clone, Copy, Debug)]
struct Ev {
    dir: Dir,
    flags: u8,
    start: usize,
    end: usize,
    /// Bytes of the peer's stream acknowledged (relative, SYN/FIN included as in TCP minus the
    /// peer's SYN): the ACK number is `peer_isn + 1 + ack`.
    ack: usize,
    /// The sender's FIN was sent before this segment (it occupies one sequence number).
    after_fin: bool,
    /// Sequence-number order key used while mutating (reordering, retransmissions).
    key: f64,
}

/// A connection's segments in logical order, with a plausible ACK clock: each side
/// acknowledges what the other has sent before it (so analyzers such as tshark see no
/// spurious retransmission), pure ACKs and FINs sit at the sender's current offset.
#[derive(Default)]
struct Script {
    evs: Vec<Ev>,
    /// Bytes sent so far: [client, server].
    sent: [usize; 2],
    fin: [bool; 2],
}

impl Script {
    fn push(&mut self, dir: Dir, flags: u8, start: usize, end: usize) {
        let (me, peer) = match dir {
            Dir::ClientToServer => (0, 1),
            Dir::ServerToClient => (1, 0),
        };
        let ack = self.sent[peer] + usize::from(self.fin[peer]);
        let (start, end) = if start == end {
            (self.sent[me], self.sent[me])
        } else {
            (start, end)
        };
        let key = self.evs.len() as f64;
        let after_fin = self.fin[me];
        self.evs.push(Ev {
            dir,
            flags,
            start,
            end,
            ack,
            after_fin,
            key,
        });
        self.sent[me] = self.sent[me].max(end);
        if flags & F_FIN != 0 {
            self.fin[me] = true;
        }
    }
}

struct Conn {
    id: u64,
    vni: u32,
    client: SocketAddr,
    server: SocketAddr,
    vlan: Vec<u16>,
    tcp_ts: bool,
    c_isn: u32,
    s_isn: u32,
    c_stream: Vec<u8>,
    s_stream: Vec<u8>,
    events: VecDeque<Ev>,
    /// `(start, end)` of every request in `c_stream`, parallel to `truth`.
    bounds: Vec<(usize, usize)>,
    truth: Vec<TruthRequest>,
    outer_sport: u16,
    ts_counter: u32,
}

/// The deterministic generator; iterate it for frames, [`Generator::drain_truth`] for the truth
/// of the connections that are complete so far (all of it once the iterator is exhausted).
pub struct Generator {
    cfg: SynthConfig,
    rng: SplitMix64,
    active: Vec<Conn>,
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
        build_inner(conn, &ev, cfg.mtu, inner);
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
        let (data, orig_len) = if cfg.vxlan {
            let outer = &mut self.scratch2;
            outer.clear();
            outer.extend_from_slice(&[0x08, 0, 0, 0]);
            outer.extend_from_slice(&conn.vni.to_be_bytes()[1..]);
            outer.push(0);
            outer.extend_from_slice(&inner[..captured_inner]);
            let (src, alt) = outer_sources(conn.id, cfg.outer_ipv6);
            let src = if duplicate { alt } else { src };
            let frame = build_outer(src, cfg.outer_ipv6, conn.outer_sport, outer);
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

fn outer_sources(id: u64, v6: bool) -> (IpAddr, IpAddr) {
    let n = (id % 200) as u8;
    if v6 {
        (
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 1, u16::from(n) + 1)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 2, u16::from(n) + 1)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(172, 31, 1, n + 1)),
            IpAddr::V4(Ipv4Addr::new(172, 31, 2, n + 1)),
        )
    }
}

const COLLECTOR_V4: [u8; 4] = [172, 31, 0, 100];
const COLLECTOR_V6: [u8; 16] = [0xfd, 0, 0, 0xa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64];

fn build_outer(src: IpAddr, v6: bool, sport: u16, payload: &[u8]) -> Vec<u8> {
    let smac = [0x02, 0, 0, 0, 0, 0x01];
    let dmac = [0x02, 0, 0, 0, 0, 0x64];
    let mut out = Vec::with_capacity(payload.len() + 62);
    let eth = PacketBuilder::ethernet2(smac, dmac);
    let result = match (src, v6) {
        (IpAddr::V6(s), true) => eth
            .ipv6(s.octets(), COLLECTOR_V6, 64)
            .udp(sport, VXLAN_PORT)
            .write(&mut out, payload),
        (IpAddr::V4(s), _) => eth
            .ipv4(s.octets(), COLLECTOR_V4, 64)
            .udp(sport, VXLAN_PORT)
            .write(&mut out, payload),
        (IpAddr::V6(s), false) => eth
            .ipv6(s.octets(), COLLECTOR_V6, 64)
            .udp(sport, VXLAN_PORT)
            .write(&mut out, payload),
    };
    result.expect("writing to a Vec cannot fail and the sizes are within IP limits");
    out
}

fn mac_of(ip: &IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            [0x02, 0x42, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(a) => {
            let o = a.octets();
            [0x02, 0x66, o[12], o[13], o[14], o[15]]
        }
    }
}

fn tcp_options(conn: &Conn, ev: &Ev, mss: u16) -> Vec<u8> {
    let mut o = Vec::with_capacity(20);
    if ev.flags & F_SYN != 0 {
        o.extend_from_slice(&[2, 4]);
        o.extend_from_slice(&mss.to_be_bytes());
        o.extend_from_slice(&[1, 3, 3, 7, 4, 2]);
        if conn.tcp_ts {
            o.extend_from_slice(&[8, 10]);
            o.extend_from_slice(&conn.ts_counter.to_be_bytes());
            o.extend_from_slice(&0u32.to_be_bytes());
        }
        while o.len() % 4 != 0 {
            o.push(1);
        }
    } else if conn.tcp_ts {
        o.extend_from_slice(&[1, 1, 8, 10]);
        o.extend_from_slice(&conn.ts_counter.to_be_bytes());
        o.extend_from_slice(&conn.ts_counter.wrapping_sub(3).to_be_bytes());
    }
    o
}

fn ip_header_len(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() { 20 } else { 40 }
}

fn mss_of(conn: &Conn, mtu: usize) -> usize {
    // A usable MSS even for an absurd MTU (the CLI rejects those; the library clamps).
    mtu.saturating_sub(ip_header_len(&conn.client) + 20 + if conn.tcp_ts { 12 } else { 0 })
        .clamp(64, 65_000)
}

fn build_inner(conn: &Conn, ev: &Ev, mtu: usize, out: &mut Vec<u8>) {
    let (src, dst, stream, isn, peer_isn) = match ev.dir {
        Dir::ClientToServer => (
            conn.client,
            conn.server,
            &conn.c_stream,
            conn.c_isn,
            conn.s_isn,
        ),
        Dir::ServerToClient => (
            conn.server,
            conn.client,
            &conn.s_stream,
            conn.s_isn,
            conn.c_isn,
        ),
    };
    let payload = &stream[ev.start..ev.end];
    let seq = if ev.flags & F_SYN != 0 {
        isn
    } else {
        isn.wrapping_add(1)
            .wrapping_add(ev.start as u32)
            .wrapping_add(u32::from(ev.after_fin))
    };
    let ack = peer_isn.wrapping_add(1).wrapping_add(ev.ack as u32);
    let eth = PacketBuilder::ethernet2(mac_of(&src.ip()), mac_of(&dst.ip()));
    let vlan_ids: Vec<etherparse::VlanId> = conn
        .vlan
        .iter()
        .map(|v| etherparse::VlanId::try_new(*v).expect("VLAN ids are generated below 4095"))
        .collect();
    macro_rules! finish {
        ($ip:expr) => {{
            let mut tcp = $ip.tcp(src.port(), dst.port(), seq, 64240);
            if ev.flags & F_SYN != 0 {
                tcp = tcp.syn();
            }
            if ev.flags & F_FIN != 0 {
                tcp = tcp.fin();
            }
            if ev.flags & F_RST != 0 {
                tcp = tcp.rst();
            }
            if ev.flags & F_PSH != 0 {
                tcp = tcp.psh();
            }
            if ev.flags & F_ACK != 0 {
                tcp = tcp.ack(ack);
            }
            let options = tcp_options(conn, ev, mss_of(conn, mtu) as u16);
            let tcp = tcp
                .options_raw(&options)
                .expect("TCP options are at most 40 bytes and 4-aligned");
            tcp.write(out, payload)
                .expect("writing to a Vec cannot fail and the sizes are within IP limits");
        }};
    }
    match (src.ip(), dst.ip(), vlan_ids.as_slice()) {
        (IpAddr::V4(s), IpAddr::V4(d), []) => finish!(eth.ipv4(s.octets(), d.octets(), 64)),
        (IpAddr::V4(s), IpAddr::V4(d), [v]) => {
            finish!(eth.single_vlan(*v).ipv4(s.octets(), d.octets(), 64))
        }
        (IpAddr::V4(s), IpAddr::V4(d), [a, b, ..]) => {
            finish!(eth.double_vlan(*a, *b).ipv4(s.octets(), d.octets(), 64))
        }
        (IpAddr::V6(s), IpAddr::V6(d), []) => finish!(eth.ipv6(s.octets(), d.octets(), 64)),
        (IpAddr::V6(s), IpAddr::V6(d), [v]) => {
            finish!(eth.single_vlan(*v).ipv6(s.octets(), d.octets(), 64))
        }
        (IpAddr::V6(s), IpAddr::V6(d), [a, b, ..]) => {
            finish!(eth.double_vlan(*a, *b).ipv6(s.octets(), d.octets(), 64))
        }
        _ => unreachable!("client and server of a connection share an address family"),
    }
}

fn pick_method(cfg: &SynthConfig, rng: &mut SplitMix64) -> String {
    if cfg.methods.is_empty() {
        return "GET".to_string();
    }
    cfg.methods[rng.below(cfg.methods.len() as u64) as usize].clone()
}

fn carries_body(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH")
}

/// One request as bytes, plus where its chunked terminator starts and where its head ends.
struct BuiltRequest {
    bytes: Vec<u8>,
    head_len: usize,
    terminator_at: Option<usize>,
    request: HttpRequest,
    expect: bool,
}

/// An ALB health check, byte for byte as the ALB sends it.
fn health_check_request(server: &SocketAddr) -> BuiltRequest {
    let headers: Vec<(String, Vec<u8>)> = [
        ("Host", server.to_string()),
        ("Connection", "close".to_string()),
        ("User-Agent", "ELB-HealthChecker/2.0".to_string()),
        ("Accept-Encoding", "gzip, compressed".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_bytes()))
    .collect();
    let mut bytes = b"GET /health HTTP/1.1\r\n".to_vec();
    for (k, v) in &headers {
        bytes.extend_from_slice(k.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(v);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    BuiltRequest {
        head_len: bytes.len(),
        bytes,
        terminator_at: None,
        request: HttpRequest {
            ts_us: 0,
            vni: 0,
            client: any,
            peer: any,
            server: any,
            method: "GET".into(),
            target: "/health".into(),
            version: 1,
            headers,
            body: Vec::new(),
            chunked: false,
            body_truncated: false,
        },
        expect: false,
    }
}

#[allow(clippy::too_many_arguments)]
fn build_request(
    cfg: &SynthConfig,
    rng: &mut SplitMix64,
    conn: u64,
    index: usize,
    last: bool,
    http10: bool,
    pipelined: bool,
    host: &str,
) -> BuiltRequest {
    let method = pick_method(cfg, rng);
    let mut target = String::from("/");
    let depth = rng.range(1, 3);
    for d in 0..depth {
        if d > 0 {
            target.push('/');
        }
        let mut seg = Vec::new();
        let n = rng.range(3, 10);
        rng.fill_from(&mut seg, n, PATH_ALPHABET);
        target.push_str(std::str::from_utf8(&seg).expect("ASCII alphabet"));
    }
    if rng.chance(0.5) {
        target.push_str(&format!("?id={}&c={conn}&i={index}", rng.below(1_000_000)));
    }
    let version: u8 = if http10 { 0 } else { 1 };
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        ("Host".into(), host.as_bytes().to_vec()),
        ("User-Agent".into(), b"mirrorfleet-synth/1.0".to_vec()),
        ("Accept".into(), b"*/*".to_vec()),
        (
            "X-Request-Id".into(),
            format!("c{conn}-r{index}").into_bytes(),
        ),
    ];
    let mut body = Vec::new();
    let mut chunked = false;
    let mut expect = false;
    if carries_body(&method) {
        let n = rng.range(cfg.min_body, cfg.max_body);
        rng.fill_from(&mut body, n, BODY_ALPHABET);
        headers.push((
            "Content-Type".into(),
            b"application/x-www-form-urlencoded".to_vec(),
        ));
        chunked = !http10 && rng.chance(cfg.chunked);
        if chunked {
            headers.push(("Transfer-Encoding".into(), b"chunked".to_vec()));
        } else {
            let name = if rng.chance(0.3) {
                "content-length"
            } else {
                "Content-Length"
            };
            headers.push((name.into(), n.to_string().into_bytes()));
        }
        expect = !http10 && !pipelined && rng.chance(cfg.expect_continue);
        if expect {
            headers.push(("Expect".into(), b"100-continue".to_vec()));
        }
    }
    if !cfg.keep_alive || last && rng.chance(0.3) {
        headers.push(("Connection".into(), b"close".to_vec()));
    } else if http10 {
        headers.push(("Connection".into(), b"keep-alive".to_vec()));
    }
    let mut bytes = Vec::with_capacity(256 + body.len());
    bytes.extend_from_slice(method.as_bytes());
    bytes.push(b' ');
    bytes.extend_from_slice(target.as_bytes());
    bytes.extend_from_slice(if http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (name, value) in &headers {
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    let head_len = bytes.len();
    let mut terminator_at = None;
    if chunked {
        let mut at = 0;
        while at < body.len() {
            let size = rng.range(1, 2048).min(body.len() - at);
            if rng.chance(0.5) {
                bytes.extend_from_slice(format!("{size:x}").as_bytes());
            } else {
                bytes.extend_from_slice(format!("{size:X}").as_bytes());
            }
            if rng.chance(0.1) {
                bytes.extend_from_slice(b";ext=1");
            }
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&body[at..at + size]);
            bytes.extend_from_slice(b"\r\n");
            at += size;
        }
        terminator_at = Some(bytes.len());
        bytes.extend_from_slice(b"0\r\n\r\n");
    } else {
        bytes.extend_from_slice(&body);
    }
    let request = HttpRequest {
        ts_us: 0,
        vni: 0,
        client: SocketAddr::from(([0, 0, 0, 0], 0)),
        peer: SocketAddr::from(([0, 0, 0, 0], 0)),
        server: SocketAddr::from(([0, 0, 0, 0], 0)),
        method,
        target,
        version,
        headers,
        body,
        chunked,
        body_truncated: false,
    };
    BuiltRequest {
        bytes,
        head_len,
        terminator_at,
        request,
        expect,
    }
}

fn response_bytes(rng: &mut SplitMix64, max_body: usize, head_request: bool) -> Vec<u8> {
    let n = rng.range(0, max_body);
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {n}\r\nServer: synth\r\n\r\n"
    )
    .into_bytes();
    if !head_request {
        rng.fill_from(&mut out, n, BODY_ALPHABET);
    }
    out
}

/// Cuts the write `start..end` into segments of at most `mss` bytes; `cuts` are positions
/// that must be segment boundaries.
fn segment(
    rng: &mut SplitMix64,
    start: usize,
    end: usize,
    mss: usize,
    small: bool,
    cuts: &[usize],
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let mut next = if small {
            at + rng.range(1, mss.min(end - at).min(400))
        } else {
            (at + mss).min(end)
        };
        if let Some(&c) = cuts.iter().find(|&&c| c > at && c < next) {
            next = c;
        }
        out.push((at, next));
        at = next;
    }
    out
}

fn build_connection(cfg: &SynthConfig, rng: &mut SplitMix64, id: u64, mid_stream: bool) -> Conn {
    let v6 = rng.chance(cfg.ipv6);
    let (client_ip, server_ip) = if v6 {
        (
            IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0xc,
                0,
                0,
                0,
                (id >> 32) as u16,
                (id >> 16) as u16,
                id as u16,
            )),
            IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0x5,
                0,
                0,
                0,
                0,
                0,
                1 + (id % 16) as u16,
            )),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(
                10,
                64 + ((id >> 16) & 63) as u8,
                (id >> 8) as u8,
                id as u8,
            )),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + (id % 16) as u8)),
        )
    };
    let client = SocketAddr::new(client_ip, 1024 + rng.below(64_000) as u16);
    let server = SocketAddr::new(server_ip, [80, 8080, 8000][rng.below(3) as usize]);
    let vni = if cfg.vxlan {
        let i = rng.below(cfg.vnis.len() as u64) as usize;
        // VNIs are 24 bits; an empty list means the default one.
        cfg.vnis.get(i).map_or(4242, |v| v & 0x00ff_ffff)
    } else {
        0
    };
    let vlan = if rng.chance(cfg.vlan) {
        if rng.chance(cfg.qinq) {
            vec![100 + rng.below(100) as u16, 10 + rng.below(10) as u16]
        } else {
            vec![10 + rng.below(4000) as u16]
        }
    } else {
        Vec::new()
    };
    let tcp_ts = rng.chance(cfg.tcp_timestamps);
    let wrap = rng.chance(cfg.isn_wrap);
    let c_isn = if wrap {
        u32::MAX - rng.below(3000) as u32
    } else {
        rng.next_u64() as u32
    };
    let s_isn = if wrap {
        u32::MAX - rng.below(3000) as u32
    } else {
        rng.next_u64() as u32
    };
    let outer_sport = 49152 + rng.below(16384) as u16;
    let mut conn = Conn {
        id,
        vni,
        client,
        server,
        vlan,
        tcp_ts,
        c_isn,
        s_isn,
        c_stream: Vec::new(),
        s_stream: Vec::new(),
        events: VecDeque::new(),
        bounds: Vec::new(),
        truth: Vec::new(),
        outer_sport,
        ts_counter: rng.next_u64() as u32,
    };
    let mss = mss_of(&conn, cfg.mtu);

    let n = if cfg.keep_alive {
        rng.range(cfg.min_requests.max(1), cfg.max_requests.max(1))
    } else {
        1
    };
    let http10 = rng.chance(cfg.http10);
    let pipelined = n > 1 && rng.chance(cfg.pipelining);
    let host = format!("svc-{}.internal", id % 16);

    let mut script = Script::default();
    script.push(Dir::ClientToServer, F_SYN, 0, 0);
    script.push(Dir::ServerToClient, F_SYN | F_ACK, 0, 0);
    script.push(Dir::ClientToServer, F_ACK, 0, 0);

    let mut requests = Vec::with_capacity(n);
    // Drawn only when asked: same seeds, same captures as before the knob existed.
    let health_check = cfg.health_checks > 0.0 && rng.chance(cfg.health_checks);
    if health_check {
        requests.push(health_check_request(&conn.server));
    }
    for i in 0..if health_check { 0 } else { n } {
        let built = build_request(cfg, rng, id, i, i + 1 == n, http10, pipelined, &host);
        requests.push(built);
        if requests[i]
            .request
            .headers
            .iter()
            .any(|(k, v)| k == "Connection" && v == b"close")
        {
            break;
        }
    }

    // Client data segments of one write; pure ACKs from the server after every second one.
    let client_write =
        |sc: &mut Script, rng: &mut SplitMix64, a: usize, b: usize, cuts: &[usize]| {
            let small = rng.chance(cfg.small_segments);
            for (k, (s, e)) in segment(rng, a, b, mss, small, cuts).into_iter().enumerate() {
                sc.push(Dir::ClientToServer, F_ACK | F_PSH, s, e);
                if cfg.acks && k % 2 == 1 {
                    sc.push(Dir::ServerToClient, F_ACK, 0, 0);
                }
            }
        };
    let server_write = |sc: &mut Script, rng: &mut SplitMix64, a: usize, b: usize| {
        for (k, (s, e)) in segment(rng, a, b, mss, false, &[]).into_iter().enumerate() {
            if cfg.responses {
                sc.push(Dir::ServerToClient, F_ACK | F_PSH, s, e);
            } else {
                sc.sent[1] = e;
            }
            if cfg.acks && k % 2 == 1 {
                sc.push(Dir::ClientToServer, F_ACK, 0, 0);
            }
        }
    };

    let mut c_stream = Vec::new();
    let mut s_stream = Vec::new();
    // A PROXY header first, in its own segment (drawn only when asked: same seeds, same
    // captures as before the knob existed).
    let proxy = if cfg.proxy_v1 > 0.0 && rng.chance(cfg.proxy_v1) {
        Some(1)
    } else if cfg.proxy_v2 > 0.0 && rng.chance(cfg.proxy_v2) {
        Some(2)
    } else {
        None
    };
    let real_client = proxy.map(|version| {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0xcafe,
                0,
                0,
                (id >> 32) as u16,
                (id >> 16) as u16,
                id as u16,
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                198,
                18 + (id >> 16 & 1) as u8,
                (id >> 8) as u8,
                id as u8,
            ))
        };
        let real = SocketAddr::new(ip, 1024 + rng.below(64_000) as u16);
        let header = if version == 1 {
            crate::engine::proxy::encode_v1(real, server)
        } else {
            // PP2_TYPE_AWS (0xEA), subtype VPC endpoint id, as an NLB sends it.
            let mut tlv = vec![0xEA, 0x00, 0x17, 0x01];
            tlv.extend_from_slice(b"vpce-08d2bf15fac5001c9");
            crate::engine::proxy::encode_v2(real, server, &tlv)
        };
        c_stream.extend_from_slice(&header);
        client_write(&mut script, rng, 0, header.len(), &[]);
        // The engine needs the bytes up to the addresses; v2 TLVs may be lost.
        let needed = match crate::engine::proxy::parse(&header) {
            crate::engine::proxy::Parsed::Header(h) => h.span.consumed,
            other => unreachable!("generated header not recognised: {other:?}"),
        };
        (real, needed)
    });
    if pipelined {
        let start = c_stream.len();
        let mut cuts = Vec::new();
        for r in &requests {
            let base = c_stream.len();
            conn.bounds.push((base, base + r.bytes.len()));
            if cfg.split_chunk_terminator
                && let Some(t) = r.terminator_at
            {
                cuts.push(base + t + rng.range(1, 4));
            }
            c_stream.extend_from_slice(&r.bytes);
        }
        client_write(&mut script, rng, start, c_stream.len(), &cuts);
        let s0 = s_stream.len();
        for r in &requests {
            let resp = response_bytes(rng, cfg.max_response_body, r.request.method == "HEAD");
            s_stream.extend_from_slice(&resp);
        }
        server_write(&mut script, rng, s0, s_stream.len());
    } else {
        for r in &requests {
            let base = c_stream.len();
            conn.bounds.push((base, base + r.bytes.len()));
            c_stream.extend_from_slice(&r.bytes);
            let mut cuts = Vec::new();
            if cfg.split_chunk_terminator
                && let Some(t) = r.terminator_at
            {
                cuts.push(base + t + rng.range(1, 4));
            }
            if r.expect {
                client_write(&mut script, rng, base, base + r.head_len, &[]);
                let s0 = s_stream.len();
                s_stream.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                server_write(&mut script, rng, s0, s_stream.len());
                client_write(&mut script, rng, base + r.head_len, c_stream.len(), &cuts);
            } else {
                client_write(&mut script, rng, base, c_stream.len(), &cuts);
            }
            let s0 = s_stream.len();
            let resp = response_bytes(rng, cfg.max_response_body, r.request.method == "HEAD");
            s_stream.extend_from_slice(&resp);
            server_write(&mut script, rng, s0, s_stream.len());
        }
    }
    let c_len = c_stream.len();
    let s_len = s_stream.len();
    let fin_key;
    if rng.chance(cfg.rst) {
        script.push(Dir::ClientToServer, F_RST | F_ACK, c_len, c_len);
        fin_key = (script.evs.len() - 1) as f64;
    } else {
        script.push(Dir::ClientToServer, F_FIN | F_ACK, c_len, c_len);
        fin_key = (script.evs.len() - 1) as f64;
        script.push(Dir::ServerToClient, F_FIN | F_ACK, s_len, s_len);
        script.push(Dir::ClientToServer, F_ACK, c_len, c_len);
    }
    let mut evs = script.evs;
    conn.c_stream = c_stream;
    conn.s_stream = s_stream;

    // Mutations of the client data segments (not for connections joined mid-stream: their
    // first captured segment must be the lowest sequence number the engine will see).
    let mutate = !mid_stream;
    let mut extra = Vec::new();
    let mut lost = vec![false; evs.len()];
    let data_idx: Vec<usize> = (0..evs.len())
        .filter(|&i| evs[i].dir == Dir::ClientToServer && evs[i].end > evs[i].start)
        .collect();
    for (j, &i) in data_idx.iter().enumerate() {
        if rng.chance(cfg.loss) {
            lost[i] = true;
            continue;
        }
        if !mutate {
            continue;
        }
        let next = data_idx.get(j + 1).copied();
        let room = |k: f64| k.min(fin_key - 0.01);
        if rng.chance(cfg.retransmit) {
            let mut copy = evs[i];
            copy.key = room(evs[i].key + 0.5 + rng.below(3) as f64);
            extra.push(copy);
        }
        if let Some(nx) = next
            && rng.chance(cfg.overlap)
        {
            let a = evs[i].start + (evs[i].end - evs[i].start) / 2;
            let b = evs[nx].start + (evs[nx].end - evs[nx].start).div_ceil(2);
            if b > a && b - a <= mss {
                extra.push(Ev {
                    dir: Dir::ClientToServer,
                    flags: F_ACK | F_PSH,
                    start: a,
                    end: b,
                    ack: evs[nx].ack,
                    after_fin: false,
                    key: room(evs[nx].key + 0.25 + rng.below(2) as f64),
                });
            }
        }
        if let Some(nx) = next
            && rng.chance(cfg.reorder)
        {
            let (ki, kn) = (evs[i].key, evs[nx].key);
            evs[i].key = kn;
            evs[nx].key = ki;
        }
    }
    let mut all: Vec<Ev> = evs
        .into_iter()
        .zip(lost)
        .filter(|(_, l)| !*l)
        .map(|(e, _)| e)
        .chain(extra)
        .collect();
    all.sort_by(|a, b| a.key.total_cmp(&b.key));
    if mid_stream {
        let skip = rng.range(1, (all.len() / 2).max(1));
        all.drain(..skip);
    }

    // Coverage of the client stream by captured bytes.
    let hdr = 14
        + 4 * conn.vlan.len()
        + ip_header_len(&conn.client)
        + 20
        + if conn.tcp_ts { 12 } else { 0 };
    let mut covered: Vec<(usize, usize)> = all
        .iter()
        .filter(|e| e.dir == Dir::ClientToServer && e.end > e.start)
        .map(|e| {
            let got = cfg.packet_length.map_or(e.end - e.start, |l| {
                l.saturating_sub(hdr).min(e.end - e.start)
            });
            (e.start, e.start + got)
        })
        .filter(|(a, b)| b > a)
        .collect();
    covered.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (a, b) in covered {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let is_covered = |a: usize, b: usize| merged.iter().any(|&(x, y)| x <= a && b <= y);

    // The engine reads a PROXY header only at a stream start it saw (the SYN) and only
    // when every byte of it up to the addresses was captured.
    let proxied = real_client.and_then(|(real, len)| {
        let syn = all
            .iter()
            .any(|e| e.dir == Dir::ClientToServer && e.flags & F_SYN != 0);
        (syn && is_covered(0, len)).then_some(real)
    });
    for (i, r) in requests.into_iter().enumerate() {
        let (a, b) = conn.bounds[i];
        let mut request = r.request;
        request.vni = vni;
        request.client = proxied.unwrap_or(client);
        request.peer = client;
        request.server = server;
        conn.truth.push(TruthRequest {
            conn: id,
            index: i as u32,
            expected: is_covered(a, b),
            request,
        });
    }
    conn.events = all.into();
    conn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_capture() {
        let cfg = SynthConfig {
            connections: 5,
            ..SynthConfig::default()
        };
        let (a, ta) = generate(cfg.clone());
        let (b, tb) = generate(cfg);
        assert_eq!(a, b);
        assert_eq!(ta, tb);
        assert!(!a.is_empty());
    }

    #[test]
    fn clean_traffic_expects_every_request() {
        let (_, truth) = generate(SynthConfig::default());
        assert!(!truth.is_empty());
        assert!(truth.iter().all(|t| t.expected && t.request.ts_us > 0));
    }

    #[test]
    fn loss_makes_some_requests_unexpected() {
        let cfg = SynthConfig {
            loss: 0.3,
            connections: 30,
            ..SynthConfig::default()
        };
        let (_, truth) = generate(cfg);
        assert!(truth.iter().any(|t| t.expected));
        assert!(truth.iter().any(|t| !t.expected));
    }

    #[test]
    fn frames_parse_as_vxlan_over_udp_4789() {
        let cfg = SynthConfig {
            connections: 2,
            ipv6: 1.0,
            vlan: 1.0,
            ..SynthConfig::default()
        };
        let (frames, _) = generate(cfg);
        for f in frames {
            let p = etherparse::SlicedPacket::from_ethernet(&f.data).unwrap();
            match p.transport {
                Some(etherparse::TransportSlice::Udp(u)) => {
                    assert_eq!(u.destination_port(), VXLAN_PORT);
                    let inner = etherparse::SlicedPacket::from_ethernet(&u.payload()[8..]).unwrap();
                    assert!(matches!(
                        inner.transport,
                        Some(etherparse::TransportSlice::Tcp(_))
                    ));
                }
                other => panic!("not UDP: {other:?}"),
            }
        }
    }

    #[test]
    fn concurrency_interleaves_connections() {
        let cfg = SynthConfig {
            connections: 50,
            concurrency: 10,
            ..SynthConfig::default()
        };
        let mut generator = Generator::new(cfg);
        let first: Vec<Frame> = generator.by_ref().take(40).collect();
        let mut ports = std::collections::HashSet::new();
        for f in &first {
            let p = etherparse::SlicedPacket::from_ethernet(&f.data).unwrap();
            if let Some(etherparse::TransportSlice::Udp(u)) = p.transport {
                ports.insert(u.source_port());
            }
        }
        assert!(
            ports.len() >= 5,
            "{} outer flows in the first frames",
            ports.len()
        );
    }
}
