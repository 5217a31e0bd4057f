//! Flood scenarios for the engine, shared by `rebuilder/tests/flood.rs` (small, in `make
//! test`) and `rebuilder/benches/flood.rs` (full size, RSS of a child process): attacker
//! traffic interleaved with legitimate connections from the generator; the caps must hold,
//! evictions and drops must be counted, and the legitimate requests are checked against the
//! generator's truth.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use rebuilder::engine::encap::vxlan::encapsulate_into;
use rebuilder::engine::packet::build::{TcpFlags, TcpFrame};
use rebuilder::offline::synth::{Generator, SplitMix64, SynthConfig};
use rebuilder::{DropReason, Engine, EngineConfig, EngineStats, HttpRequest};

rebuilder::label_enum! {
    /// What the attacker sends.
    pub enum Flood {
        /// Concurrent connections: SYN, then a partial request head that never completes
        /// (each holds a parser buffer and a table entry).
        Flows => "flows",
        /// SYN-only packets from random addresses and ports.
        Syn => "syn",
        /// Random datagrams: random bytes; a valid VXLAN header over random bytes; valid
        /// Ethernet/IPv4/TCP headers over random payload.
        Garbage => "garbage",
        /// Maximum-size datagrams (9216 bytes: VXLAN + a 9001-byte-MTU inner frame + tags),
        /// each an out-of-order segment that would have to be buffered.
        Jumbo => "jumbo",
        /// Concurrent connections, each a SYN then 8 KB of a request head that never ends
        /// (pending heads held in parser buffers).
        Heads => "heads",
        /// Concurrent connections, each a complete head with 1,000 header fields announcing a
        /// body that never comes (the pending requests hold their fields).
        Fields => "fields",
        /// Concurrent connections, each a head announcing a 60,000-byte body that never comes
        /// (the pending requests held their body's first allocation, up to 64 KiB, until
        /// bodies were allocated as their bytes come).
        Bodies => "bodies",
        /// Concurrent connections, each a SYN then one-byte segments past a hole (out-of-order
        /// pieces, each with its bookkeeping).
        Pieces => "pieces",
    }
}

/// Size of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub flood: Flood,
    /// Attacker packets (for `Flows`: attacker connections, two packets each).
    pub flood_packets: usize,
    /// Legitimate connections mixed in.
    pub legit_connections: usize,
    /// Of which open at once.
    pub legit_concurrency: usize,
    /// The legitimate responses carry bodies (up to the generator's `max_response_body`).
    /// Off for peak-RSS runs: the generator holds the frames of its open connections whole
    /// and the truth each response's body, harness memory that a ceiling made of the engine's
    /// caps does not count (measured with 200 connections, 50 open: 5.7 MiB of peak RSS with
    /// bodies, 4.4 MiB without). The responses are still sent, parsed and paired.
    pub legit_response_bodies: bool,
    pub config: EngineConfig,
    pub seed: u64,
}

impl Plan {
    /// The peak-RSS runs: `flood_packets` of `flood` mixed with 200 legitimate connections
    /// (50 at a time) under an 8 MiB memory budget and a 20,000-flow table, seed 14. The
    /// legitimate responses carry no body, so that the harness's own memory stays small next
    /// to what is measured.
    pub fn peak_rss(flood: Flood, flood_packets: usize) -> Plan {
        Plan {
            flood,
            flood_packets,
            legit_connections: 200,
            legit_concurrency: 50,
            legit_response_bodies: false,
            config: EngineConfig {
                max_flows: 20_000,
                memory_budget_bytes: 8 * 1024 * 1024,
                ..EngineConfig::default()
            },
            seed: 14,
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub stats: EngineStats,
    pub flood_packets: u64,
    pub legit_packets: u64,
    pub legit_expected: u64,
    /// Legitimate requests emitted identical to the truth (method, target, headers, body).
    pub legit_recovered: u64,
    /// Legitimate requests emitted flagged `body_truncated`, the body a prefix of the truth
    /// (the budget was used up while the body arrived: documented behaviour).
    pub legit_truncated: u64,
    /// Legitimate requests emitted but different from the truth (must be 0).
    pub legit_corrupted: u64,
    /// Requests emitted that are not legitimate (attacker heads never complete: must be 0).
    pub foreign: u64,
    pub max_active_flows: usize,
    pub max_buffered_bytes: usize,
    /// Most bytes the harness held at once in requests waiting to be matched (the truth of
    /// legitimate requests not emitted (yet): those the flood made the engine drop stay to the
    /// end), as [`HttpRequest::held_bytes`] counts them: memory of the harness, not the engine.
    pub max_harness_held_bytes: usize,
    pub seconds: f64,
}

impl Outcome {
    pub fn recovered_fraction(&self) -> f64 {
        if self.legit_expected == 0 {
            return 1.0;
        }
        self.legit_recovered as f64 / self.legit_expected as f64
    }

    pub fn drops_line(&self) -> String {
        DropReason::ALL
            .iter()
            .filter(|r| self.stats.drops(**r) > 0)
            .map(|r| format!("{}={}", r.as_str(), self.stats.drops(*r)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

const FLOOD_VNI: u32 = 9;

fn legit_config(plan: &Plan) -> SynthConfig {
    let mut cfg = SynthConfig::realistic(plan.seed, plan.legit_connections, plan.legit_concurrency);
    cfg.loss = 0.0;
    if !plan.legit_response_bodies {
        cfg.max_response_body = 0;
    }
    // A slower clock (≈ 20 µs between frames) so that the run spans timer ticks.
    cfg.max_step_us = 40;
    cfg
}

/// The VXLAN datagram (flood VNI) of a TCP segment: a SYN, or an ACK with `payload`.
fn tcp_payload(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    syn: bool,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let flags = if syn { TcpFlags::SYN } else { TcpFlags::ack(1) };
    let frame = TcpFrame::new(src, dst, seq).flags(flags).build(payload);
    out.clear();
    encapsulate_into(FLOOD_VNI, &frame, out);
}

/// An attacker address: 172.16.0.0/12 sources, never the legitimate 10/8 and fd00::/8 ones.
fn attacker(i: u64) -> SocketAddr {
    let ip = 0xAC10_0000u32 | ((i >> 16) as u32 & 0x000F_FFFF);
    SocketAddr::new(
        Ipv4Addr::from(ip).into(),
        1024 + (i & 0xFFFF) as u16 % 60000,
    )
}

struct Attacker {
    flood: Flood,
    /// Datagrams the attacker will send in all.
    total: u64,
    rng: SplitMix64,
    n: u64,
    buf: Vec<u8>,
    jumbo: Vec<u8>,
    /// The second packet of a `Flows`, `Heads`, `Fields` or `Bodies` connection.
    pending: Vec<u8>,
}

/// The request bytes one connection of a pending-request flood sends after its SYN.
fn pending_bytes(flood: Flood) -> Vec<u8> {
    match flood {
        Flood::Flows => {
            let mut h = b"POST /flood HTTP/1.1\r\nHost: victim\r\nX-Pad: ".to_vec();
            h.extend(std::iter::repeat_n(b'p', 150));
            h
        }
        Flood::Heads => {
            let mut h = b"POST /flood HTTP/1.1\r\nHost: victim\r\nX-Pad: ".to_vec();
            h.resize(8000, b'p');
            h
        }
        Flood::Fields => {
            let mut h =
                b"POST /flood HTTP/1.1\r\nHost: victim\r\nContent-Length: 1000\r\n".to_vec();
            for i in 0..997 {
                h.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
            }
            h.extend_from_slice(b"\r\n");
            h
        }
        Flood::Bodies => {
            b"POST /flood HTTP/1.1\r\nHost: victim\r\nContent-Length: 60000\r\n\r\n".to_vec()
        }
        _ => Vec::new(),
    }
}

impl Attacker {
    fn new(flood: Flood, seed: u64, total: u64) -> Attacker {
        Attacker {
            flood,
            total,
            rng: SplitMix64::new(seed ^ 0xF100D),
            n: 0,
            buf: Vec::with_capacity(9216),
            jumbo: vec![b'j'; 9001 - 20 - 20],
            pending: pending_bytes(flood),
        }
    }

    /// The next attacker datagram (a VXLAN payload).
    fn next(&mut self) -> &[u8] {
        let i = self.n;
        self.n += 1;
        let server: SocketAddr = "10.200.0.1:80".parse().unwrap();
        match self.flood {
            Flood::Flows | Flood::Heads | Flood::Fields | Flood::Bodies => {
                // Two packets per connection: SYN, then the bytes that stay pending.
                let conn = i / 2;
                let src = attacker(conn);
                let isn = (conn as u32).wrapping_mul(2_654_435_761);
                if i.is_multiple_of(2) {
                    tcp_payload(src, server, isn, true, b"", &mut self.buf);
                } else {
                    let bytes = std::mem::take(&mut self.pending);
                    tcp_payload(
                        src,
                        server,
                        isn.wrapping_add(1),
                        false,
                        &bytes,
                        &mut self.buf,
                    );
                    self.pending = bytes;
                }
            }
            Flood::Pieces => {
                // 64 packets per connection: SYN, then one-byte segments past a hole of 10
                // bytes at the stream start (never filled).
                let conn = i / 64;
                let k = i % 64;
                let src = attacker(conn);
                let isn = (conn as u32).wrapping_mul(2_654_435_761);
                if k == 0 {
                    tcp_payload(src, server, isn, true, b"", &mut self.buf);
                } else {
                    let seq = isn.wrapping_add(1 + 10 + 2 * k as u32);
                    tcp_payload(src, server, seq, false, b"x", &mut self.buf);
                }
            }
            Flood::Syn => {
                let src = attacker(self.rng.next_u64());
                let seq = self.rng.next_u64() as u32;
                tcp_payload(src, server, seq, true, b"", &mut self.buf);
            }
            Flood::Garbage => {
                let len = self.rng.below(1500) as usize;
                match i % 3 {
                    0 => {
                        self.buf.clear();
                        self.buf.extend((0..len).map(|_| self.rng.next_u64() as u8));
                    }
                    1 => {
                        self.buf.clear();
                        self.buf.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 9, 0]);
                        self.buf.extend((0..len).map(|_| self.rng.next_u64() as u8));
                    }
                    _ => {
                        let payload: Vec<u8> =
                            (0..len).map(|_| self.rng.next_u64() as u8).collect();
                        let src = attacker(self.rng.below(1 << 20));
                        let seq = self.rng.next_u64() as u32;
                        tcp_payload(src, server, seq, false, &payload, &mut self.buf);
                    }
                }
            }
            Flood::Jumbo => {
                // One attacker connection per 8 datagrams: a SYN each, then segments past a
                // hole at the stream start that is never filled (7 × 8,961 bytes stay under
                // `gap_skip_bytes`: all of it is held until the hole times out).
                let conns = (self.total / 8).max(1);
                let conn = i % conns;
                let src = attacker(conn);
                let isn = (conn as u32).wrapping_mul(2_654_435_761);
                if i < conns {
                    tcp_payload(src, server, isn, true, b"", &mut self.buf);
                } else {
                    let k = i / conns - 1;
                    let jumbo = std::mem::take(&mut self.jumbo);
                    let seq = isn
                        .wrapping_add(1 + 100)
                        .wrapping_add((k as u32).wrapping_mul(jumbo.len() as u32));
                    tcp_payload(src, server, seq, false, &jumbo, &mut self.buf);
                    // Padded to the maximum datagram size (bytes after the IP packet are
                    // ignored: the IP total length rules).
                    self.buf.resize(9216, 0);
                    self.jumbo = jumbo;
                }
            }
        }
        &self.buf
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS:`, `VmHWM:`), 0 when unreadable.
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes a flow-table entry may take, for memory ceilings (docs/engine.md: 312 bytes per
/// entry + its share of the index, 8-byte slots at least 3/8 full: ≤ 22 bytes; rounded up for
/// slab chunks).
pub const ENTRY_BYTES: u64 = 400;

/// Everything [`run`] generates for `plan` (the legitimate traffic, the attacker's packets), and
/// nothing else: no engine. Its peak RSS over its baseline, in a process of its own, is the
/// harness's share of a flood run's peak (the generator holds each open legitimate connection's
/// packets: ~20 MiB at 300 concurrent), which the engine's caps do not cover.
pub fn generate_only(plan: &Plan) {
    let mut legit = Generator::new(legit_config(plan));
    let mut attacker = Attacker::new(plan.flood, plan.seed, plan.flood_packets as u64);
    let mut bytes = 0usize;
    while let Some(frame) = legit.next() {
        bytes += frame.data.len();
        legit.drain_truth();
    }
    for _ in 0..plan.flood_packets {
        bytes += attacker.next().len();
    }
    std::hint::black_box(bytes);
}

/// The memory a process running `plan` may reach: its baseline plus the engine's budget and
/// its flow table at its cap (what the caps promise).
pub fn ceiling_kib(baseline_kib: u64, plan: &Plan) -> u64 {
    baseline_kib
        + (plan.config.memory_budget_bytes as u64 + plan.config.max_flows as u64 * ENTRY_BYTES)
            / 1024
}

/// Set (to the flood's label) in a child process that runs one flood and reports its RSS.
pub const CHILD_VAR: &str = "MF_FLOOD_CHILD";

/// What a flood run in a child process reported.
#[derive(Debug, Clone)]
pub struct RssReport {
    /// VmRSS before the run, KiB.
    pub baseline_kib: u64,
    /// VmHWM after it, KiB.
    pub peak_kib: u64,
    /// The child's summary line (counters, recovered requests).
    pub summary: String,
}

/// The child side of [`peak_rss_in_child`]: when this process is the child for `plan`'s
/// flood, runs it, prints the report and returns `true` (the caller then returns);
/// otherwise returns `false` at once.
pub fn run_as_child(plan: &Plan) -> bool {
    if std::env::var(CHILD_VAR).as_deref() != Ok(plan.flood.as_str()) {
        return false;
    }
    let baseline = status_kib("VmRSS:");
    let o = run(plan, |_| {});
    let peak = status_kib("VmHWM:");
    println!(
        "\nMF-RSS {baseline} {peak} flows {} evicted {} recovered {}/{} truncated {} corrupted {} foreign {} buffered-max {} drops {}",
        o.max_active_flows,
        o.stats.flows_evicted,
        o.legit_recovered,
        o.legit_expected,
        o.legit_truncated,
        o.legit_corrupted,
        o.foreign,
        o.max_buffered_bytes,
        o.drops_line()
    );
    assert_eq!(o.legit_corrupted, 0, "a legitimate request was altered");
    assert_eq!(o.foreign, 0, "attacker bytes became a request");
    true
}

/// Runs `test` (a test of the current test binary that calls [`run_as_child`] first) in a
/// child process for `flood`, and returns what it reported: the peak RSS of a process that
/// did nothing but that flood.
pub fn peak_rss_in_child(test: &str, flood: Flood) -> RssReport {
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_VAR, flood.as_str())
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("MF-RSS ").map(|(_, r)| r))
        .unwrap_or_else(|| {
            panic!(
                "the child reported nothing ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        out.status.success(),
        "the child failed: {line}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut words = line.split_whitespace();
    let mut num = || words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    RssReport {
        baseline_kib: num(),
        peak_kib: num(),
        summary: line.to_string(),
    }
}

/// The identity of a request for matching with the truth.
fn request_id(r: &HttpRequest) -> Option<&[u8]> {
    r.header("X-Request-Id")
}

fn same(a: &HttpRequest, b: &HttpRequest) -> bool {
    a.method == b.method
        && a.target == b.target
        && a.version == b.version
        && a.headers == b.headers
        && a.body == b.body
        && a.client == b.client
        && a.server == b.server
}

/// Matches emitted legitimate requests with the truth as both arrive, so that memory holds
/// only what is in flight (the RSS measured is the engine's, not the checker's).
#[derive(Default)]
struct Matcher {
    emitted: HashMap<Vec<u8>, HttpRequest>,
    truth: HashMap<Vec<u8>, HttpRequest>,
    matched: std::collections::HashSet<Vec<u8>>,
    expected: u64,
    recovered: u64,
    truncated: u64,
    corrupted: u64,
    /// Bytes of the requests in `emitted` and `truth` (and the most at once).
    held: usize,
    held_max: usize,
}

impl Matcher {
    fn hold(&mut self, r: &HttpRequest) {
        self.held += r.held_bytes() + 64;
        self.held_max = self.held_max.max(self.held);
    }

    fn release(&mut self, r: &HttpRequest) {
        self.held = self.held.saturating_sub(r.held_bytes() + 64);
    }

    fn emitted(&mut self, id: Vec<u8>, r: HttpRequest) {
        if self.matched.contains(&id) || self.emitted.contains_key(&id) {
            self.corrupted += 1; // emitted twice
        } else if let Some(t) = self.truth.remove(&id) {
            self.release(&t);
            self.judge(&t, &r);
            self.matched.insert(id);
        } else {
            self.hold(&r);
            self.emitted.insert(id, r);
        }
    }

    fn truth(&mut self, id: Vec<u8>, t: HttpRequest) {
        self.expected += 1;
        if let Some(r) = self.emitted.remove(&id) {
            self.release(&r);
            self.judge(&t, &r);
            self.matched.insert(id);
        } else {
            self.hold(&t);
            self.truth.insert(id, t);
        }
    }

    fn judge(&mut self, t: &HttpRequest, r: &HttpRequest) {
        if same(t, r) {
            self.recovered += 1;
        } else if r.body_truncated
            && t.body.starts_with(&r.body)
            && same(
                t,
                &HttpRequest {
                    body: t.body.clone(),
                    body_truncated: t.body_truncated,
                    ..r.clone()
                },
            )
        {
            self.truncated += 1;
        } else {
            if self.corrupted == 0 && std::env::var_os("MF_FLOOD_DEBUG").is_some() {
                let diff = r.body.iter().zip(&t.body).position(|(a, b)| a != b);
                eprintln!(
                    "altered: len {} truth {} truncated {} first diff {diff:?} headers equal {}",
                    r.body.len(),
                    t.body.len(),
                    r.body_truncated,
                    r.headers == t.headers
                );
            }
            self.corrupted += 1;
        }
    }
}

/// Runs the plan in this process. `sample` is called every 100 ms of traffic time with the
/// engine (for RSS sampling by the caller).
pub fn run(plan: &Plan, mut sample: impl FnMut(&Engine)) -> Outcome {
    let started = std::time::Instant::now();
    let legit_frames = {
        let mut g = Generator::new(legit_config(plan));
        let mut n = 0usize;
        while g.next().is_some() {
            n += 1;
            if n.is_multiple_of(1024) {
                g.drain_truth();
            }
        }
        n.max(1)
    };
    let mut legit = Generator::new(legit_config(plan));
    let mut attacker = Attacker::new(plan.flood, plan.seed, plan.flood_packets as u64);
    let mut engine = Engine::new(plan.config.clone());
    let mut out = Vec::new();
    let mut m = Matcher::default();
    let mut o = Outcome {
        stats: EngineStats::default(),
        flood_packets: 0,
        legit_packets: 0,
        legit_expected: 0,
        legit_recovered: 0,
        legit_truncated: 0,
        legit_corrupted: 0,
        foreign: 0,
        max_active_flows: 0,
        max_buffered_bytes: 0,
        max_harness_held_bytes: 0,
        seconds: 0.0,
    };
    let mut now = legit_config(plan).start_ts_us;
    let mut next_timer = 0u64;
    let collect = |out: &mut Vec<HttpRequest>, o: &mut Outcome, m: &mut Matcher| {
        for r in out.drain(..) {
            let from_attacker =
                matches!(r.client.ip(), std::net::IpAddr::V4(a) if a.octets()[0] == 172);
            match request_id(&r) {
                Some(id) if !from_attacker => {
                    let id = id.to_vec();
                    m.emitted(id, r);
                }
                _ => o.foreign += 1,
            }
        }
    };
    let truth = |legit: &mut Generator, m: &mut Matcher| {
        for t in legit.drain_truth() {
            if t.expected
                && let Some(id) = request_id(&t.request)
            {
                let id = id.to_vec();
                m.truth(id, t.request);
            }
        }
    };
    let mut sent_flood = 0usize;
    let step = |engine: &Engine, o: &mut Outcome| {
        o.max_active_flows = o.max_active_flows.max(engine.active_flows());
        o.max_buffered_bytes = o.max_buffered_bytes.max(engine.buffered_bytes());
        assert!(engine.active_flows() <= plan.config.max_flows);
        assert!(
            engine.buffered_bytes() <= plan.config.memory_budget_bytes,
            "buffered {} > budget {} ({} flows)",
            engine.buffered_bytes(),
            plan.config.memory_budget_bytes,
            engine.active_flows()
        );
    };
    let mut n = 0usize;
    while let Some(frame) = legit.next() {
        now = frame.ts_us;
        engine.on_captured_frame(now, &frame.data, &mut out);
        o.legit_packets += 1;
        n += 1;
        // Attacker packets spread evenly over the legitimate traffic.
        let due = n * plan.flood_packets / legit_frames;
        while sent_flood < due.min(plan.flood_packets) {
            let d = attacker.next();
            engine.on_vxlan_payload(now, d, &mut out);
            sent_flood += 1;
        }
        if now >= next_timer {
            engine.on_timer(now, &mut out);
            next_timer = now + 100_000;
            sample(&engine);
        }
        step(&engine, &mut o);
        collect(&mut out, &mut o, &mut m);
        truth(&mut legit, &mut m);
    }
    while sent_flood < plan.flood_packets {
        let d = attacker.next();
        engine.on_vxlan_payload(now, d, &mut out);
        sent_flood += 1;
        if sent_flood.is_multiple_of(4096) {
            step(&engine, &mut o);
            collect(&mut out, &mut o, &mut m);
        }
    }
    step(&engine, &mut o);
    sample(&engine);
    engine.finish(&mut out);
    collect(&mut out, &mut o, &mut m);
    truth(&mut legit, &mut m);
    // Emitted without a truth: not a legitimate request as sent.
    m.corrupted += m.emitted.len() as u64;
    o.legit_expected = m.expected;
    o.legit_recovered = m.recovered;
    o.legit_truncated = m.truncated;
    o.legit_corrupted = m.corrupted;
    o.max_harness_held_bytes = m.held_max;
    o.flood_packets = sent_flood as u64;
    o.stats = engine.stats().clone();
    o.seconds = started.elapsed().as_secs_f64();
    assert_eq!(engine.buffered_bytes(), 0);
    o
}
