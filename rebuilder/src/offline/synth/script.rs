//! The script of one generated connection: its byte streams, its TCP segments in logical
//! order with a plausible ACK clock, the mutations of the knobs, and its ground truth.
//!
//! [`build_connection`] draws everything of one connection from the generator's random
//! numbers, in a fixed order (the same seed must give the same capture): its endpoints
//! ([`new_connection`]), its requests ([`requests`]), its streams and segments
//! ([`StreamWriter`]), the mutations ([`mutate`]) and the truth ([`truth`]).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::config::{DEFAULT_GWLBE, SynthConfig};
use super::http::{
    BuiltRequest, BuiltResponse, health_check_request, random_request, random_response,
    upgrade_request,
};
use super::output::TruthRequest;
use super::rng::SplitMix64;
use crate::engine::proxy;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dir {
    ClientToServer,
    ServerToClient,
}

pub(super) const F_SYN: u8 = 1;
pub(super) const F_ACK: u8 = 2;
pub(super) const F_FIN: u8 = 4;
pub(super) const F_RST: u8 = 8;
pub(super) const F_PSH: u8 = 16;

/// One scripted TCP segment: stream offsets `start..end` of its direction's byte stream.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ev {
    pub(super) dir: Dir,
    pub(super) flags: u8,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Bytes of the peer's stream acknowledged (relative, SYN/FIN included as in TCP minus the
    /// peer's SYN): the ACK number is `peer_isn + 1 + ack`.
    pub(super) ack: usize,
    /// The sender's FIN was sent before this segment (it occupies one sequence number).
    pub(super) after_fin: bool,
    /// Sequence-number order key used while mutating (reordering, retransmissions).
    pub(super) key: f64,
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

/// One generated connection: its endpoints and wire choices, both byte streams, the
/// segments still to emit and the truth of its requests.
pub(super) struct SynthConnection {
    pub(super) id: u64,
    pub(super) vni: u32,
    pub(super) client: SocketAddr,
    pub(super) server: SocketAddr,
    pub(super) vlan: Vec<u16>,
    pub(super) tcp_ts: bool,
    pub(super) c_isn: u32,
    pub(super) s_isn: u32,
    pub(super) c_stream: Vec<u8>,
    pub(super) s_stream: Vec<u8>,
    pub(super) events: VecDeque<Ev>,
    /// `(start, end)` of every request in `c_stream`, parallel to `truth`.
    pub(super) bounds: Vec<(usize, usize)>,
    /// `(start, end)` of every request's final response in `s_stream`, parallel to `truth`.
    pub(super) s_bounds: Vec<(usize, usize)>,
    pub(super) truth: Vec<TruthRequest>,
    pub(super) outer_sport: u16,
    pub(super) ts_counter: u32,
    /// The GWLB endpoint it is mirrored through (`SynthConfig::geneve`).
    pub(super) gwlbe: Option<u64>,
}

/// Bytes of the IP header of a connection's packets (no options).
fn ip_header_len(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() { 20 } else { 40 }
}

/// The connection's MSS for an inner `mtu` (what its segments are cut to).
pub(super) fn mss_of(conn: &SynthConnection, mtu: usize) -> usize {
    // A usable MSS even for an absurd MTU (the CLI rejects those; the library clamps).
    mtu.saturating_sub(ip_header_len(&conn.client) + 20 + if conn.tcp_ts { 12 } else { 0 })
        .clamp(64, 65_000)
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

/// Scripts connection `id` (see the module documentation).
pub(super) fn build_connection(
    cfg: &SynthConfig,
    rng: &mut SplitMix64,
    id: u64,
    mid_stream: bool,
) -> SynthConnection {
    let (mut conn, v6) = new_connection(cfg, rng, id);
    let mss = mss_of(&conn, cfg.mtu);

    let n = if cfg.keep_alive {
        rng.range(cfg.min_requests.max(1), cfg.max_requests.max(1))
    } else {
        1
    };
    let http10 = rng.chance(cfg.http10);
    let pipelined = n > 1 && rng.chance(cfg.pipelining);
    let host = format!("svc-{}.internal", id % 16);

    let mut w = StreamWriter {
        cfg,
        mss,
        script: Script::default(),
        c_stream: Vec::new(),
        s_stream: Vec::new(),
        bounds: Vec::new(),
        s_bounds: Vec::new(),
        responses: Vec::new(),
        // Responses draw from a stream of their own: requests do not depend on them.
        resp_rng: SplitMix64::new(
            cfg.seed ^ id.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x7E5B,
        ),
    };
    w.script.push(Dir::ClientToServer, F_SYN, 0, 0);
    w.script.push(Dir::ServerToClient, F_SYN | F_ACK, 0, 0);
    w.script.push(Dir::ClientToServer, F_ACK, 0, 0);

    let mut requests = requests(cfg, rng, &conn, n, http10, pipelined, &host);
    // Drawn only when asked: same seeds, same captures as before the knob existed.
    let upgrade = cfg.upgrades > 0.0 && !http10 && !pipelined && rng.chance(cfg.upgrades);
    if upgrade
        && let Some(last) = requests.last_mut()
        && last.request.method != "HEAD"
    {
        let index = requests.len() - 1;
        *requests.last_mut().expect("a last request") = upgrade_request(id, index, &host);
    }
    let real_client = w.proxy_header(rng, id, v6, conn.server);
    if pipelined {
        w.pipelined(rng, &requests);
    } else {
        w.one_by_one(rng, &requests);
    }
    let fin_key = w.close(rng);
    let StreamWriter {
        script,
        c_stream,
        s_stream,
        bounds,
        s_bounds,
        responses,
        ..
    } = w;
    conn.c_stream = c_stream;
    conn.s_stream = s_stream;
    conn.bounds = bounds;
    conn.s_bounds = s_bounds;

    let all = mutate(cfg, rng, script.evs, fin_key, mss, mid_stream);
    let shape = Shape {
        pipelined,
        mid_stream,
    };
    conn.truth = truth(cfg, &conn, &all, requests, responses, real_client, shape);
    conn.events = all.into();
    conn
}

/// Endpoints and wire choices of connection `id`: (the connection with empty streams, whether
/// it is IPv6).
fn new_connection(cfg: &SynthConfig, rng: &mut SplitMix64, id: u64) -> (SynthConnection, bool) {
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
    let conn = SynthConnection {
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
        s_bounds: Vec::new(),
        truth: Vec::new(),
        outer_sport,
        ts_counter: rng.next_u64() as u32,
        // Not drawn: a GENEVE capture carries the same inner traffic as a VXLAN one.
        gwlbe: (cfg.vxlan && cfg.geneve).then(|| {
            let e = &cfg.gwlb_endpoints;
            e.get((id % e.len().max(1) as u64) as usize)
                .copied()
                .unwrap_or(DEFAULT_GWLBE)
        }),
    };
    (conn, v6)
}

/// The requests of a connection: `n` random ones (fewer after a `Connection: close`), or one
/// load-balancer health check.
fn requests(
    cfg: &SynthConfig,
    rng: &mut SplitMix64,
    conn: &SynthConnection,
    n: usize,
    http10: bool,
    pipelined: bool,
    host: &str,
) -> Vec<BuiltRequest> {
    let mut requests = Vec::with_capacity(n);
    // Drawn only when asked: same seeds, same captures as before the knob existed.
    let health_check = cfg.health_checks > 0.0 && rng.chance(cfg.health_checks);
    if health_check {
        requests.push(health_check_request(&conn.server));
        return requests;
    }
    for i in 0..n {
        let built = random_request(cfg, rng, conn.id, i, i + 1 == n, http10, pipelined, host);
        let close = built
            .request
            .headers
            .iter()
            .any(|(k, v)| k == "Connection" && v == b"close");
        requests.push(built);
        if close {
            break;
        }
    }
    requests
}

/// Writes a connection's two byte streams and scripts their segments.
struct StreamWriter<'a> {
    cfg: &'a SynthConfig,
    mss: usize,
    script: Script,
    c_stream: Vec<u8>,
    s_stream: Vec<u8>,
    /// `(start, end)` of every request in `c_stream`.
    bounds: Vec<(usize, usize)>,
    /// `(start, end)` of every final response in `s_stream`.
    s_bounds: Vec<(usize, usize)>,
    /// The final responses, parallel to `bounds`.
    responses: Vec<crate::engine::request::HttpResponse>,
    resp_rng: SplitMix64,
}

impl StreamWriter<'_> {
    /// Client data segments of the write `a..b`; pure ACKs from the server after every
    /// second one.
    fn client_write(&mut self, rng: &mut SplitMix64, a: usize, b: usize, cuts: &[usize]) {
        let small = rng.chance(self.cfg.small_segments);
        for (k, (s, e)) in segment(rng, a, b, self.mss, small, cuts)
            .into_iter()
            .enumerate()
        {
            self.script.push(Dir::ClientToServer, F_ACK | F_PSH, s, e);
            if self.cfg.acks && k % 2 == 1 {
                self.script.push(Dir::ServerToClient, F_ACK, 0, 0);
            }
        }
    }

    /// Server data segments of the write `a..b` (left out without responses); pure ACKs
    /// from the client after every second one.
    fn server_write(&mut self, rng: &mut SplitMix64, a: usize, b: usize) {
        for (k, (s, e)) in segment(rng, a, b, self.mss, false, &[])
            .into_iter()
            .enumerate()
        {
            if self.cfg.responses {
                self.script.push(Dir::ServerToClient, F_ACK | F_PSH, s, e);
            } else {
                self.script.sent[1] = e;
            }
            if self.cfg.acks && k % 2 == 1 {
                self.script.push(Dir::ClientToServer, F_ACK, 0, 0);
            }
        }
    }

    /// A PROXY protocol header first, in its own segment, when the knobs draw one: the real
    /// client it names and how many bytes the engine needs to read it.
    fn proxy_header(
        &mut self,
        rng: &mut SplitMix64,
        id: u64,
        v6: bool,
        server: SocketAddr,
    ) -> Option<(SocketAddr, usize)> {
        // Drawn only when asked: same seeds, same captures as before the knob existed.
        let version = if self.cfg.proxy_v1 > 0.0 && rng.chance(self.cfg.proxy_v1) {
            1
        } else if self.cfg.proxy_v2 > 0.0 && rng.chance(self.cfg.proxy_v2) {
            2
        } else {
            return None;
        };
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
            proxy::encode_v1(real, server)
        } else {
            // PP2_TYPE_AWS (0xEA), subtype VPC endpoint id, as an NLB sends it.
            let mut tlv = vec![0xEA, 0x00, 0x17, 0x01];
            tlv.extend_from_slice(b"vpce-08d2bf15fac5001c9");
            proxy::encode_v2(real, server, &tlv)
        };
        self.c_stream.extend_from_slice(&header);
        self.client_write(rng, 0, header.len(), &[]);
        // The engine needs the bytes up to the addresses; v2 TLVs may be lost.
        let needed = match proxy::parse(&header) {
            proxy::Parsed::Header(h) => h.span.consumed,
            other => unreachable!("generated header not recognised: {other:?}"),
        };
        Some((real, needed))
    }

    /// A segment boundary inside the chunked terminator of the request at `base`, when asked.
    fn terminator_cut(&self, rng: &mut SplitMix64, r: &BuiltRequest, base: usize) -> Vec<usize> {
        match r.terminator_at {
            Some(t) if self.cfg.split_chunk_terminator => vec![base + t + rng.range(1, 4)],
            _ => Vec::new(),
        }
    }

    /// Every request in one write, then every response in one write.
    fn pipelined(&mut self, rng: &mut SplitMix64, requests: &[BuiltRequest]) {
        let start = self.c_stream.len();
        let mut cuts = Vec::new();
        for r in requests {
            let base = self.c_stream.len();
            self.bounds.push((base, base + r.bytes.len()));
            cuts.extend(self.terminator_cut(rng, r, base));
            self.c_stream.extend_from_slice(&r.bytes);
        }
        let end = self.c_stream.len();
        self.client_write(rng, start, end, &cuts);
        let s0 = self.s_stream.len();
        let n = requests.len();
        for (i, r) in requests.iter().enumerate() {
            self.response(r, i + 1 == n);
        }
        let s1 = self.s_stream.len();
        self.server_write(rng, s0, s1);
    }

    /// Appends the final response to `r` to the server's stream (not written yet).
    fn response(&mut self, r: &BuiltRequest, last: bool) {
        let closes = last && r.request.header("Connection") == Some(&b"close"[..]);
        let BuiltResponse { bytes, response } =
            random_response(&mut self.resp_rng, self.cfg, &r.request, closes);
        let s0 = self.s_stream.len();
        self.s_stream.extend_from_slice(&bytes);
        self.s_bounds.push((s0, self.s_stream.len()));
        self.responses.push(response);
    }

    /// Each request, then its response (with an interim 100 Continue between head and body
    /// for `Expect: 100-continue`).
    fn one_by_one(&mut self, rng: &mut SplitMix64, requests: &[BuiltRequest]) {
        for r in requests {
            let base = self.c_stream.len();
            self.bounds.push((base, base + r.bytes.len()));
            self.c_stream.extend_from_slice(&r.bytes);
            let cuts = self.terminator_cut(rng, r, base);
            let end = self.c_stream.len();
            if r.expect {
                self.client_write(rng, base, base + r.head_len, &[]);
                let s0 = self.s_stream.len();
                self.s_stream
                    .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                let s1 = self.s_stream.len();
                self.server_write(rng, s0, s1);
                self.client_write(rng, base + r.head_len, end, &cuts);
            } else {
                self.client_write(rng, base, end, &cuts);
            }
            let s0 = self.s_stream.len();
            let last = std::ptr::eq(r, requests.last().expect("a request"));
            self.response(r, last);
            let s1 = self.s_stream.len();
            self.server_write(rng, s0, s1);
            if r.request.header("Upgrade").is_some() {
                // The connection now carries websocket frames both ways.
                let c0 = self.c_stream.len();
                self.c_stream
                    .extend_from_slice(b"\x81\x85abcd\x09\x07\x0f\x08\x0e");
                let c1 = self.c_stream.len();
                self.client_write(rng, c0, c1, &[]);
                let s0 = self.s_stream.len();
                self.s_stream.extend_from_slice(b"\x81\x05hello");
                let s1 = self.s_stream.len();
                self.server_write(rng, s0, s1);
            }
        }
    }

    /// The close: the client's RST, or FIN both ways and the last ACK. Returns the order key
    /// of the client's RST or FIN (no data segment may move past it).
    fn close(&mut self, rng: &mut SplitMix64) -> f64 {
        let (c_len, s_len) = (self.c_stream.len(), self.s_stream.len());
        if rng.chance(self.cfg.rst) {
            self.script
                .push(Dir::ClientToServer, F_RST | F_ACK, c_len, c_len);
            (self.script.evs.len() - 1) as f64
        } else {
            self.script
                .push(Dir::ClientToServer, F_FIN | F_ACK, c_len, c_len);
            let fin_key = (self.script.evs.len() - 1) as f64;
            self.script
                .push(Dir::ServerToClient, F_FIN | F_ACK, s_len, s_len);
            self.script.push(Dir::ClientToServer, F_ACK, c_len, c_len);
            fin_key
        }
    }
}

/// The knobs' mutations of the client data segments — loss, retransmissions, overlapping
/// retransmissions, reordering (none but loss for a connection joined mid-stream: its first
/// captured segment must be the lowest sequence number the engine sees) — then the capture
/// order, cut at a random point for a mid-stream start.
fn mutate(
    cfg: &SynthConfig,
    rng: &mut SplitMix64,
    mut evs: Vec<Ev>,
    fin_key: f64,
    mss: usize,
    mid_stream: bool,
) -> Vec<Ev> {
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
    if cfg.response_loss > 0.0 {
        // Drawn only when asked: same seeds, same captures as before the knob existed.
        for (i, e) in evs.iter().enumerate() {
            if e.dir == Dir::ServerToClient && e.end > e.start && rng.chance(cfg.response_loss) {
                lost[i] = true;
            }
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
    all
}

/// What decides whether a response's position can be known after losses.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    pub(super) pipelined: bool,
    pub(super) mid_stream: bool,
}

/// Merged byte ranges of `dir`'s stream that were captured (after loss and truncation).
fn coverage(
    cfg: &SynthConfig,
    conn: &SynthConnection,
    all: &[Ev],
    dir: Dir,
) -> Vec<(usize, usize)> {
    let hdr = 14
        + 4 * conn.vlan.len()
        + ip_header_len(&conn.client)
        + 20
        + if conn.tcp_ts { 12 } else { 0 };
    let mut covered: Vec<(usize, usize)> = all
        .iter()
        .filter(|e| e.dir == dir && e.end > e.start)
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
    merged
}

/// The ground truth of a connection whose captured segments are `all`: a request is expected
/// iff every byte of it was captured; its client is the PROXY header's when the engine can
/// read that header. Its response is expected (paired) iff the request is, every byte of the
/// response was captured, and its position is decidable: on a connection that does not
/// pipeline, always (each request is sent when the client has received every byte before its
/// response: the engine re-anchors on that after any loss); on a pipelining connection (or
/// one joined mid-stream), only when no byte of either direction before it was lost.
/// Otherwise the request must come out without a response (`gap`: lost bytes).
#[allow(clippy::too_many_arguments)]
fn truth(
    cfg: &SynthConfig,
    conn: &SynthConnection,
    all: &[Ev],
    requests: Vec<BuiltRequest>,
    responses: Vec<crate::engine::request::HttpResponse>,
    real_client: Option<(SocketAddr, usize)>,
    shape: Shape,
) -> Vec<TruthRequest> {
    let merged = coverage(cfg, conn, all, Dir::ClientToServer);
    let is_covered = |a: usize, b: usize| merged.iter().any(|&(x, y)| x <= a && b <= y);
    let s_merged = coverage(cfg, conn, all, Dir::ServerToClient);
    let s_covered = |a: usize, b: usize| s_merged.iter().any(|&(x, y)| x <= a && b <= y);
    // Prefix of each stream captured without a hole.
    let c_clean = merged
        .first()
        .map_or(0, |&(x, y)| if x == 0 { y } else { 0 });
    let s_clean = s_merged
        .first()
        .map_or(0, |&(x, y)| if x == 0 { y } else { 0 });

    // The engine reads a PROXY header only at a stream start it saw (the SYN) and only
    // when every byte of it up to the addresses was captured.
    let proxied = real_client.and_then(|(real, len)| {
        let syn = all
            .iter()
            .any(|e| e.dir == Dir::ClientToServer && e.flags & F_SYN != 0);
        (syn && is_covered(0, len)).then_some(real)
    });
    let health_check = requests.len() == 1
        && requests[0].request.header("User-Agent") == Some(&b"ELB-HealthChecker/2.0"[..]);
    // Closed by the client's RST, the server never closes: a close-delimited response (the
    // last, `Connection: close` without a length) is never known complete (RFC 9112 §8).
    let server_closes = all
        .iter()
        .any(|e| e.dir == Dir::ServerToClient && e.flags & F_FIN != 0);
    let aborted_by_reset = |resp: &crate::engine::request::HttpResponse| {
        !server_closes
            && resp.header("connection") == Some(&b"close"[..])
            && resp.header("content-length").is_none()
            && !resp.chunked
    };
    requests
        .into_iter()
        .zip(responses)
        .enumerate()
        .map(|(i, (r, resp))| {
            let (a, b) = conn.bounds[i];
            let (sa, sb) = conn.s_bounds[i];
            let mut request = r.request;
            request.vni = conn.vni;
            request.gwlbe = conn.gwlbe;
            // The mirror's first copy of a packet comes from the connection's ENI (a duplicate
            // from the other end always follows it).
            request.mirror_source = cfg
                .vxlan
                .then(|| super::config::outer_sources(conn.id, cfg.outer_ipv6).0);
            request.client = proxied.unwrap_or(conn.client);
            request.peer = conn.client;
            request.server = conn.server;
            let expected = is_covered(a, b);
            let whole = s_covered(sa, sb);
            let decidable = if shape.pipelined || shape.mid_stream {
                c_clean >= b && s_clean >= sb
            } else {
                true
            };
            let aborted = aborted_by_reset(&resp);
            let captured = expected && whole && cfg.responses && !health_check && !aborted;
            if captured {
                request.response = Some(Box::new(resp));
            } else {
                request.response_missing = Some(if !cfg.responses {
                    crate::engine::request::ResponseMissing::InputEnded
                } else if aborted {
                    crate::engine::request::ResponseMissing::ConnectionClosed
                } else {
                    crate::engine::request::ResponseMissing::Gap
                });
            }
            TruthRequest {
                conn: conn.id,
                index: i as u32,
                expected,
                request,
                response_certain: captured && decidable,
            }
        })
        .collect()
}
