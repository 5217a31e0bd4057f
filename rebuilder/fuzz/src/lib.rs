//! Harnesses of the fuzz targets: each takes structured input (`arbitrary`), drives one stage
//! of the engine and checks its invariants, panicking (= a finding) when one is broken.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Arbitrary;
use std::time::Duration;

use rebuilder::daemon::forward::{ForwardConfig, Upstream, write_request};
use rebuilder::engine::health_check::HealthCheckRule;
use rebuilder::engine::http::HttpLimits;
use rebuilder::engine::http::response::{
    Answering, Asked, RespCtx, ResponseLimits, ResponseParser,
};
use rebuilder::engine::ranges::AddrRanges;
use rebuilder::engine::stats::Anomaly;
use rebuilder::engine::reassembly::{
    At, Budget, Pushed, Segment, Sink, Stream, StreamLimits, seq_diff,
};
use rebuilder::engine::request::{HttpResponse, ResponseMissing};
use rebuilder::engine::request::HttpRequest;
use rebuilder::{Engine, EngineConfig, EngineStats};
use rebuilder_testkit::frames::{
    TEST_GWLBE, TcpFlags, TcpFrame, aws_options, geneve_datagram, vxlan_datagram,
};
use rebuilder_testkit::parser::ParserHarness;

/// A canned client byte stream: segments cut from it carry consistent data at consistent
/// sequence numbers, so reordering, duplication and loss of real requests are explored fast.
pub const STREAM: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n\
PUT /d HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc\
GET /e HTTP/1.0\nHost: y\n\n\
POST /f HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n\
GET /g HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello";

/// Payload of a built segment.
#[derive(Arbitrary, Debug, Clone)]
pub enum Payload {
    /// `STREAM[offset..offset + len]` (sequence number = ISN + 1 + offset).
    Canned { offset: u16, len: u16 },
    /// Arbitrary bytes at an arbitrary offset (conflicting overlaps, garbage).
    Raw { offset: u16, bytes: Vec<u8> },
}

/// One input event of the engine target.
#[derive(Arbitrary, Debug, Clone)]
pub enum EngineOp {
    /// A raw UDP payload (VXLAN header first), as received on port 4789.
    Datagram(Vec<u8>),
    /// A raw captured link-layer frame.
    Frame(Vec<u8>),
    /// A raw inner frame behind a valid VXLAN header.
    Inner { vni: u8, frame: Vec<u8> },
    /// A well-formed TCP segment of one of a few connections, VXLAN-encapsulated.
    Segment {
        conn: u8,
        /// Server -> client instead of client -> server.
        reverse: bool,
        syn: bool,
        fin: bool,
        rst: bool,
        /// A second incarnation of the connection (another ISN).
        new_isn: bool,
        /// A sequence number far from the stream (outside any window).
        wild_seq: Option<u32>,
        payload: Payload,
        /// Bytes cut off the end of the inner frame (AWS PacketLength).
        cut: u8,
        ipv6: bool,
    },
    /// The clock advances by this many µs (scaled), then the timer runs.
    Timer(u16),
}

/// Input of the engine target.
#[derive(Arbitrary, Debug, Clone)]
pub struct EngineInput {
    /// Tiny caps (evictions, budgets, gaps) instead of the defaults.
    pub small_caps: bool,
    pub ops: Vec<EngineOp>,
}

fn small_engine_config() -> EngineConfig {
    EngineConfig {
        max_flows: 6,
        max_ooo_bytes_per_flow: 600,
        max_ooo_segments_per_flow: 6,
        memory_budget_bytes: 2_000,
        gap_skip_bytes: 300,
        gap_timeout_us: 2_000,
        gap_timeout_after_fin_us: 500,
        idle_timeout_us: 50_000,
        closed_linger_us: 5_000,
        max_header_bytes: 256,
        max_headers: 8,
        max_body_bytes: 16,
        ..EngineConfig::default()
    }
}

/// The inner Ethernet frame of a TCP segment of a connection (server → client when
/// `reverse`), with ACK 1.
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    client: SocketAddr,
    server: SocketAddr,
    reverse: bool,
    seq: u32,
    syn: bool,
    fin: bool,
    rst: bool,
    payload: &[u8],
) -> Vec<u8> {
    let (src, dst) = if reverse {
        (server, client)
    } else {
        (client, server)
    };
    let flags = TcpFlags {
        syn,
        fin,
        rst,
        psh: false,
        ack: Some(1),
    };
    TcpFrame::new(src, dst, seq).flags(flags).build(payload)
}

fn conn_addrs(conn: u8, ipv6: bool) -> (SocketAddr, SocketAddr) {
    let c = conn % 4;
    if ipv6 {
        (
            SocketAddr::new(
                Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into(),
                40_000 + u16::from(c),
            ),
            SocketAddr::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).into(), 80),
        )
    } else {
        (
            SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 40_000 + u16::from(c)),
            SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 80),
        )
    }
}

/// Runs the ops through one engine; checks the engine's invariants.
pub fn run_engine(input: &EngineInput) {
    let mut engine = Engine::new(if input.small_caps {
        small_engine_config()
    } else {
        EngineConfig::default()
    });
    let mut out: Vec<HttpRequest> = Vec::new();
    let mut now: u64 = 1_700_000_000_000_000;
    let mut emitted = 0u64;
    for op in &input.ops {
        now += 1;
        match op {
            EngineOp::Datagram(d) => engine.on_vxlan_payload(now, d, &mut out),
            EngineOp::Frame(f) => engine.on_captured_frame(now, f, &mut out),
            EngineOp::Inner { vni, frame } => {
                let d = vxlan_datagram(u32::from(*vni), frame);
                engine.on_vxlan_payload(now, &d, &mut out);
            }
            EngineOp::Segment {
                conn,
                reverse,
                syn,
                fin,
                rst,
                new_isn,
                wild_seq,
                payload,
                cut,
                ipv6,
            } => {
                let (client, server) = conn_addrs(*conn, *ipv6);
                // ISNs just below 2^32: every stream crosses the wraparound.
                let isn = 0xFFFF_FF00u32
                    .wrapping_add(u32::from(*conn) * 7919)
                    .wrapping_add(if *new_isn { 0x4000_0000 } else { 0 })
                    .wrapping_add(if *reverse { 0x1234_5678 } else { 0 });
                let (offset, bytes): (u32, &[u8]) = match payload {
                    Payload::Canned { offset, len } => {
                        let o = usize::from(*offset) % (STREAM.len() + 1);
                        let e = (o + usize::from(*len) % 1400).min(STREAM.len());
                        (o as u32, &STREAM[o..e])
                    }
                    Payload::Raw { offset, bytes } => {
                        (u32::from(*offset), &bytes[..bytes.len().min(9000)])
                    }
                };
                let seq = match (wild_seq, syn) {
                    (Some(s), _) => *s,
                    (None, true) => isn,
                    (None, false) => isn.wrapping_add(1).wrapping_add(offset),
                };
                let mut frame = tcp_frame(client, server, *reverse, seq, *syn, *fin, *rst, bytes);
                let cut = usize::from(*cut).min(bytes.len());
                frame.truncate(frame.len() - cut);
                let d = vxlan_datagram(4242, &frame);
                engine.on_vxlan_payload(now, &d, &mut out);
            }
            EngineOp::Timer(dt) => {
                now += u64::from(*dt) * 16;
                engine.on_timer(now, &mut out);
            }
        }
        check_requests(&out[emitted as usize..]);
        emitted = out.len() as u64;
        assert!(
            engine.buffered_bytes() <= engine.config().memory_budget_bytes,
            "budget exceeded: {} > {}",
            engine.buffered_bytes(),
            engine.config().memory_budget_bytes
        );
        assert!(engine.active_flows() <= engine.config().max_flows);
    }
    engine.finish(&mut out);
    check_requests(&out[emitted as usize..]);
    let stats = engine.stats();
    assert_eq!(
        stats.requests,
        out.len() as u64,
        "every emitted request is counted"
    );
    assert_eq!(engine.buffered_bytes(), 0, "finish releases every buffer");
    assert_eq!(engine.active_flows(), 0, "finish empties the table");
    assert_eq!(
        stats.packets,
        input
            .ops
            .iter()
            .filter(|o| !matches!(o, EngineOp::Timer(_)))
            .count() as u64
    );
}

/// The forwarding configuration the emitted requests are written with (any upstream: only
/// the writer runs).
fn forward_config() -> ForwardConfig {
    ForwardConfig {
        upstream: Upstream::parse("http://127.0.0.1:9/prefix").expect("a valid URL"),
        forwarded_for: Some("X-Forwarded-For".into()),
        extra_headers: Vec::new(),
        queue_capacity: 1,
        queue_max_bytes: 1,
        concurrency: 1,
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        pool_idle_timeout: Duration::from_secs(1),
        failure_backoff: Duration::from_secs(1),
        probe_interval: Duration::from_secs(1),
        pipeline_depth: 1,
        linger: Duration::ZERO,
        ca_certs: Vec::new(),
    }
}

/// What every emitted request must be: a token method, a target without space or control
/// bytes, a version some origin serves (flagged when unusual), fields that cannot split a
/// forwarded head — and the forwarder writes it (the engine never emits a request the
/// analyzer cannot be given), as one well-formed HTTP/1.1 head.
fn check_requests(reqs: &[HttpRequest]) {
    let cfg = forward_config();
    for r in reqs {
        assert!(
            !r.method.is_empty() && r.method.bytes().all(|b| b.is_ascii_graphic()),
            "{r:?}"
        );
        assert!(
            !r.target.is_empty() && r.target.bytes().all(|b| b > b' ' && b != 0x7f),
            "{r:?}"
        );
        assert!(r.version_major <= 9 && r.version <= 99, "{r:?}");
        if (r.version_major, r.version) != (1, 0) && (r.version_major, r.version) != (1, 1) {
            assert!(
                r.anomalies.contains(Anomaly::Version) || r.anomalies.contains(Anomaly::Http09),
                "an unusual version is flagged: {r:?}"
            );
        }
        for (n, v) in &r.headers {
            assert!(
                !n.is_empty() && n.bytes().all(|b| b > b' ' && b != b':' && b != 0x7f),
                "{r:?}"
            );
            assert!(!v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0), "{r:?}");
        }
        let mut out = Vec::new();
        write_request(r, &cfg, &mut out).unwrap_or_else(|e| panic!("not forwardable: {e}: {r:?}"));
        let mut fields = vec![httparse::EMPTY_HEADER; r.headers.len() + r.trailers.len() + 16];
        let mut parsed = httparse::Request::new(&mut fields);
        let mut config = httparse::ParserConfig::default();
        config.ignore_invalid_headers_in_requests(true);
        let status = config.parse_request(&mut parsed, &out);
        assert!(
            matches!(status, Ok(httparse::Status::Complete(n)) if n + r.body.len() == out.len()),
            "the forwarded head is not one well-formed head: {status:?} {:?}",
            String::from_utf8_lossy(&out)
        );
    }
}

/// Input of the HTTP target: a byte stream and the points where it is split.
#[derive(Arbitrary, Debug, Clone)]
pub struct HttpInput {
    /// The stream start (SYN) was seen.
    pub at_start: bool,
    /// Tiny caps instead of the defaults.
    pub small_caps: bool,
    /// Split points (positions modulo the stream length).
    pub cuts: Vec<u16>,
    /// Some pieces are followed by a gap of this length (second, gap-tolerant pass).
    pub gaps: Vec<(u16, u16)>,
    /// The sender (10.0.0.1) is a trusted PROXY protocol peer.
    pub trust_proxy: bool,
    pub wire: Vec<u8>,
}

/// One parser run: the test kit's harness (which checks after every step that the bytes held
/// are what is charged to the budget) plus the checks of this target.
struct HttpRun(ParserHarness);

impl HttpRun {
    fn new(at_start: bool, small: bool, trust_proxy: bool) -> HttpRun {
        let proxy_protocol_from = if trust_proxy {
            AddrRanges::parse("10.0.0.0/8").expect("a range")
        } else {
            AddrRanges::NONE
        };
        let (limits, budget) = if small {
            (
                HttpLimits {
                    max_header_bytes: 128,
                    max_headers: 6,
                    max_body_bytes: 16,
                    health_checks: HealthCheckRule::OFF,
                    proxy_protocol_from,
                },
                512,
            )
        } else {
            (
                HttpLimits {
                    max_header_bytes: 32 * 1024,
                    max_headers: 1000,
                    max_body_bytes: 1 << 20,
                    health_checks: HealthCheckRule::OFF,
                    proxy_protocol_from,
                },
                1 << 20,
            )
        };
        HttpRun(ParserHarness::with(at_start, limits, budget))
    }
    fn data(&mut self, bytes: &[u8]) {
        self.0.feed(bytes);
        self.check();
    }
    fn gap(&mut self, len: u64) {
        self.0.gap(len);
        self.check();
    }
    fn end(&mut self) {
        self.0.end();
        self.check();
    }
    fn check(&self) {
        let h = &self.0;
        check_requests(&h.out);
        assert_eq!(h.stats.requests, h.out.len() as u64);
        for r in &h.out {
            assert!(r.body.len() <= h.limits.max_body_bytes, "body over the cap");
        }
    }
}

/// Whole stream vs. the same stream split anywhere: identical requests and counters. Then
/// the stream with gaps: the parser's accounting stays exact and nothing panics.
pub fn run_http(input: &HttpInput) {
    let wire = &input.wire;
    let mut whole = HttpRun::new(input.at_start, input.small_caps, input.trust_proxy);
    whole.data(wire);
    whole.end();

    let mut points: Vec<usize> = input
        .cuts
        .iter()
        .map(|c| usize::from(*c) % (wire.len() + 1))
        .collect();
    points.push(0);
    points.push(wire.len());
    points.sort_unstable();
    let mut split = HttpRun::new(input.at_start, input.small_caps, input.trust_proxy);
    for w in points.windows(2) {
        split.data(&wire[w[0]..w[1]]);
    }
    split.end();
    assert_eq!(split.0.out, whole.0.out, "split points change the requests");
    assert_eq!(
        split.0.stats, whole.0.stats,
        "split points change the counters"
    );

    if !input.gaps.is_empty() {
        let mut gappy = HttpRun::new(input.at_start, input.small_caps, input.trust_proxy);
        let mut gaps: Vec<(usize, u64)> = input
            .gaps
            .iter()
            .map(|(at, len)| (usize::from(*at) % (wire.len() + 1), u64::from(*len) + 1))
            .collect();
        gaps.sort_unstable();
        let mut pos = 0;
        for (at, len) in gaps {
            // The bytes of the gap are not delivered.
            let at = at.max(pos);
            gappy.data(&wire[pos..at]);
            gappy.gap(len);
            pos = (at + len as usize).min(wire.len());
        }
        gappy.data(&wire[pos..]);
        gappy.end();
        // A request emitted despite gaps is one of the whole stream's requests or lies
        // wholly inside bytes the whole run did not emit a request for (resync on a
        // request line inside a body): it never holds bytes across a gap, which the
        // per-request check cannot see; the exact accounting above is what is asserted.
        assert!(gappy.0.out.len() <= wire.len());
    }
}

/// Input of the reassembly target.
#[derive(Arbitrary, Debug, Clone)]
pub struct StreamInput {
    pub tiny_caps: bool,
    pub isn: u32,
    pub ops: Vec<StreamOp>,
}

/// One reassembly event.
#[derive(Arbitrary, Debug, Clone)]
pub enum StreamOp {
    Segment {
        /// Offset from the ISN (sequence = ISN + offset, wrapping).
        offset: u16,
        /// Far outside any window instead.
        wild: Option<u32>,
        len: u16,
        /// Bytes cut off the end (PacketLength).
        missing: u8,
        syn: bool,
        fin: bool,
        /// Carries the alternative content (a conflicting overlap).
        conflicting: bool,
    },
    Timer(u16),
    Close,
}

/// The true content at sequence number `s`, and the conflicting alternative.
fn content(s: u32, conflicting: bool) -> u8 {
    let b = (s.wrapping_mul(2_654_435_761) >> 24) as u8;
    if conflicting { !b } else { b }
}

struct Recorder {
    budget: Budget,
    /// Sequence number of the next byte the sink expects (known once the start is known).
    cursor: Option<u32>,
    ends: u32,
    delivered: u64,
    gap_bytes: u64,
    /// Sequence ranges written with conflicting content.
    conflicts: Vec<(u32, u32)>,
    /// The first broken invariant seen by the sink.
    err: Option<String>,
}

impl Sink for Recorder {
    fn data(&mut self, at: At, bytes: &[u8]) {
        assert_eq!(self.ends, 0, "data after end");
        let c = self.cursor.expect("start known before data");
        assert_eq!(at.seq, c, "data delivered at its sequence number");
        for (i, b) in bytes.iter().enumerate() {
            let s = c.wrapping_add(i as u32);
            if *b == content(s, false) {
                continue;
            }
            let conflicted = self
                .conflicts
                .iter()
                .any(|&(a, e)| seq_diff(s, a) >= 0 && seq_diff(e, s) > 0);
            if !(conflicted && *b == content(s, true)) {
                self.err = Some(format!("foreign byte at seq {s}"));
            }
        }
        self.cursor = Some(c.wrapping_add(bytes.len() as u32));
        self.delivered += bytes.len() as u64;
    }
    fn gap(&mut self, len: u64) {
        assert_eq!(self.ends, 0, "gap after end");
        assert!(len > 0 && len < 1 << 32, "gap of {len}");
        let c = self.cursor.expect("start known before a gap");
        self.cursor = Some(c.wrapping_add(len as u32));
        self.gap_bytes += len;
    }
    fn end(&mut self) {
        self.ends += 1;
        assert_eq!(self.ends, 1, "end delivered twice");
    }
    fn budget(&mut self) -> &mut Budget {
        &mut self.budget
    }
}

/// Any sequence of segments: only true (or conflicting-overlap) bytes delivered, each
/// position at most once and in order, `end` at most once (exactly once after close), the
/// budget always equal to the buffered bytes and back to 0 at the end; with no conflicting
/// segment, the bytes delivered are exactly the true content.
pub fn run_stream(input: &StreamInput) {
    let limits = if input.tiny_caps {
        StreamLimits {
            max_ooo_bytes: 300,
            max_ooo_segments: 4,
            gap_skip_bytes: 200,
            gap_timeout_us: 1_000,
            gap_timeout_after_fin_us: 100,
            acked_hole_grace_us: 10,
        }
    } else {
        StreamLimits {
            max_ooo_bytes: 256 * 1024,
            max_ooo_segments: 128,
            gap_skip_bytes: 64 * 1024,
            gap_timeout_us: 500_000,
            gap_timeout_after_fin_us: 50_000,
            acked_hole_grace_us: 20_000,
        }
    };
    let mut rec = Recorder {
        budget: Budget::new(if input.tiny_caps { 500 } else { 32 << 20 }),
        cursor: None,
        ends: 0,
        delivered: 0,
        gap_bytes: 0,
        conflicts: Vec::new(),
        err: None,
    };
    let mut stream = Stream::new();
    let mut now = 1u64;
    let mut payload = Vec::new();
    for op in &input.ops {
        now += 1;
        match op {
            StreamOp::Segment {
                offset,
                wild,
                len,
                missing,
                syn,
                fin,
                conflicting,
            } => {
                let seq = wild.unwrap_or(input.isn.wrapping_add(u32::from(*offset)));
                let len = usize::from(*len) % 3000;
                let missing = u32::from(*missing).min(len as u32);
                let start = if *syn { seq.wrapping_add(1) } else { seq };
                payload.clear();
                payload.extend(
                    (0..len - missing as usize)
                        .map(|i| content(start.wrapping_add(i as u32), *conflicting)),
                );
                if *conflicting {
                    rec.conflicts.push((start, start.wrapping_add(len as u32)));
                }
                let seg = Segment {
                    ts_us: now,
                    seq,
                    ack: None,
                    syn: *syn,
                    fin: *fin,
                    payload: &payload,
                    missing,
                };
                if stream.is_new_connection(&seg) {
                    // The engine starts a new stream here; this harness stops.
                    break;
                }
                if rec.cursor.is_none() && (*syn || len > 0) {
                    rec.cursor = Some(start);
                }
                let before = stream.buffered_bytes();
                let pushed = stream.push(seg, &limits, &mut rec);
                if pushed == Pushed::OverBudget {
                    assert_eq!(
                        stream.buffered_bytes(),
                        before,
                        "an over-budget segment is dropped"
                    );
                }
            }
            StreamOp::Timer(dt) => {
                now += u64::from(*dt);
                stream.on_timer(now, &limits, &mut rec);
            }
            StreamOp::Close => stream.close(&mut rec),
        }
        assert_eq!(
            rec.budget.used,
            stream.buffered_bytes(),
            "budget == buffered bytes"
        );
        assert!(stream.buffered_bytes() <= limits.max_ooo_bytes);
        if let Some(e) = &rec.err {
            panic!("{e}");
        }
    }
    stream.close(&mut rec);
    assert_eq!(rec.ends, 1, "end delivered exactly once");
    assert_eq!(rec.budget.used, 0, "close releases the buffer");
    if let Some(e) = &rec.err {
        panic!("{e}");
    }
}

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

/// Input of the response-parser target: a server stream (whole, then split and with gaps).
#[derive(Arbitrary, Debug, Clone)]
pub struct ResponseInput {
    pub at_start: bool,
    pub small_caps: bool,
    /// Methods of the requests answered, in order (`true`: HEAD).
    pub heads: Vec<bool>,
    pub cuts: Vec<u16>,
    pub gaps: Vec<(u16, u16)>,
    pub wire: Vec<u8>,
}

/// The pairing side of the response target: attributes every response, records them, and
/// checks that each attributed response is told complete or lost exactly once.
struct Answers {
    heads: Vec<bool>,
    attributed: u64,
    told: u64,
    complete: Vec<HttpResponse>,
    budget: Budget,
    stats: EngineStats,
    max_body: usize,
}

impl Answering for Answers {
    fn head(&mut self, _at: At) -> Option<Asked> {
        assert_eq!(self.attributed, self.told, "a head before the last one was told");
        self.attributed += 1;
        let head = if self.heads.is_empty() {
            false
        } else {
            self.heads.remove(0)
        };
        Some(Asked {
            head,
            ..Asked::default()
        })
    }
    fn complete(&mut self, response: HttpResponse) {
        self.told += 1;
        assert!(response.body.len() <= self.max_body, "body over the cap");
        assert!(response.body.len() as u64 <= response.body_len);
        assert_eq!(response.body_truncated, (response.body.len() as u64) < response.body_len);
        self.complete.push(response);
    }
    fn lost(&mut self, _reason: ResponseMissing) {
        self.told += 1;
    }
    fn desync(&mut self, _reason: ResponseMissing) {}
    fn switched(&mut self) {}
    fn ended(&mut self, _reason: ResponseMissing) {}
    fn budget(&mut self) -> &mut Budget {
        &mut self.budget
    }
    fn stats(&mut self) -> &mut EngineStats {
        &mut self.stats
    }
}

struct ResponseRun {
    parser: ResponseParser,
    answers: Answers,
    limits: ResponseLimits,
    seq: u32,
}

impl ResponseRun {
    fn new(input: &ResponseInput) -> ResponseRun {
        let (limits, budget) = if input.small_caps {
            (
                ResponseLimits {
                    max_header_bytes: 128,
                    max_headers: 6,
                    max_body_bytes: 16,
                },
                512,
            )
        } else {
            (
                ResponseLimits {
                    max_header_bytes: 64 * 1024,
                    max_headers: 128,
                    max_body_bytes: 1 << 20,
                },
                1 << 22,
            )
        };
        ResponseRun {
            parser: ResponseParser::new(input.at_start),
            answers: Answers {
                heads: input.heads.clone(),
                attributed: 0,
                told: 0,
                complete: Vec::new(),
                budget: Budget::new(budget),
                stats: EngineStats::default(),
                max_body: limits.max_body_bytes,
            },
            limits,
            seq: 7,
        }
    }
    fn check(&self) {
        assert_eq!(self.answers.budget.used, self.parser.held(), "held is charged");
        assert!(self.answers.budget.used <= self.answers.budget.limit, "over the budget");
    }
    fn data(&mut self, bytes: &[u8]) {
        let at = At {
            ts_us: 1,
            seq: self.seq,
            ack: Some(1),
        };
        self.seq = self.seq.wrapping_add(bytes.len() as u32);
        let mut ctx = RespCtx {
            limits: &self.limits,
            answering: &mut self.answers,
        };
        self.parser.data(at, bytes, &mut ctx);
        self.check();
    }
    fn gap(&mut self, len: u64) {
        self.seq = self.seq.wrapping_add(len as u32);
        let mut ctx = RespCtx {
            limits: &self.limits,
            answering: &mut self.answers,
        };
        self.parser.gap(len, &mut ctx);
        self.check();
    }
    fn end(&mut self) {
        let mut ctx = RespCtx {
            limits: &self.limits,
            answering: &mut self.answers,
        };
        self.parser.end(true, ResponseMissing::ConnectionClosed, &mut ctx);
        assert_eq!(self.answers.budget.used, 0, "the end returns every buffer");
        assert_eq!(self.answers.attributed, self.answers.told, "every response told once");
    }
}

/// Whole stream vs. the same stream split anywhere: identical responses and counters; then
/// with gaps: nothing panics, accounting stays exact, every response is told once.
pub fn run_response(input: &ResponseInput) {
    let wire = &input.wire;
    let mut whole = ResponseRun::new(input);
    whole.data(wire);
    whole.end();
    let mut points: Vec<usize> = input
        .cuts
        .iter()
        .map(|c| usize::from(*c) % (wire.len() + 1))
        .collect();
    points.push(0);
    points.push(wire.len());
    points.sort_unstable();
    let mut split = ResponseRun::new(input);
    for w in points.windows(2) {
        split.data(&wire[w[0]..w[1]]);
    }
    split.end();
    if !input.small_caps {
        // (Under a tight budget, how much of a body fits depends on how it grew.)
        assert_eq!(
            split.answers.complete, whole.answers.complete,
            "split points change the responses"
        );
        assert_eq!(
            split.answers.stats, whole.answers.stats,
            "split points change the counters"
        );
    }

    let mut gapped = ResponseRun::new(input);
    let mut at = 0usize;
    for &(pos, len) in &input.gaps {
        let pos = (usize::from(pos) % (wire.len() + 1)).max(at);
        gapped.data(&wire[at..pos]);
        gapped.gap(u64::from(len) + 1);
        at = (pos + usize::from(len) + 1).min(wire.len());
    }
    gapped.data(&wire[at..]);
    gapped.end();
}
