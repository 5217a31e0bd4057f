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
use rebuilder::engine::reassembly::{
    At, Budget, Pushed, Segment, Sink, Stream, StreamLimits, seq_diff,
};
use rebuilder::engine::request::HttpRequest;
use rebuilder::engine::request::{HttpResponse, ResponseMissing};
use rebuilder::engine::stats::{Anomaly, DropReason};
use rebuilder::{Engine, EngineConfig, EngineStats};
use rebuilder_testkit::frames::{
    TEST_GWLBE, TcpFlags, TcpFrame, aws_options, geneve_datagram, vxlan_datagram,
};
use rebuilder_testkit::parser::ParserHarness;

mod geneve;
mod http;
mod response;
mod stream;

pub use geneve::*;
pub use http::*;
pub use response::*;
pub use stream::*;

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
        // Reclaiming under pressure within the fuzzer's milliseconds.
        reclaim_idle_us: 1_000,
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
        out.len() as u64 + stats.drops(DropReason::NotARequest),
        "every request parsed is emitted or counted as not one"
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

/// The places a stream of `len` bytes is cut at: each of `cuts` modulo `len + 1`, plus both
/// ends, in order.
fn cut_points<T: Copy + Into<usize>>(cuts: &[T], len: usize) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|c| (*c).into() % (len + 1)).collect();
    points.push(0);
    points.push(len);
    points.sort_unstable();
    points
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
        source_headers: None,
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
            assert!(
                !v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
                "{r:?}"
            );
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
