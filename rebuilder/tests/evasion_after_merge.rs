//! Evasion cases that depend on the server's direction and the TCP state (issue 14 items 2
//! and 5, and the reassembly side of 7: Upgrade/CONNECT decided by the server's answer; TCP
//! roles, receive window, overlaps with different data; out-of-order piece overhead). Each
//! row names the item it depends on and what the origins do (`docs/evasion.md`).
//!
//! The cases drive the engine with both directions of a connection where the server's answer
//! matters, through the test kit's scripted connection.

use rebuilder::engine::packet::build::TcpFlags;
use rebuilder::{Engine, EngineConfig, EngineStats, HttpRequest};
use rebuilder_testkit::flood::{Flood, Plan, ceiling_kib, peak_rss_in_child, run_as_child};
use rebuilder_testkit::frames::TcpConn;

/// Who builds the behaviour a case checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Responses and pairing, Upgrade/CONNECT by the answer, TCP roles/window/overlaps.
    Resp,
}

/// One step of a connection.
enum Step {
    /// Client data (next sequence number).
    Send(&'static [u8]),
    /// Server data (next sequence number).
    Respond(&'static [u8]),
    /// A raw datagram built from the connection.
    Raw(fn(&TcpConn) -> Vec<u8>),
}

struct Case {
    id: &'static str,
    owner: Owner,
    /// Issue 14 item.
    item: u8,
    what: &'static str,
    /// nginx · Apache · Node · Go.
    origins: &'static str,
    /// Open the connection with a full handshake (else a SYN only).
    handshake: bool,
    steps: Vec<Step>,
    /// Targets the analyzer must be given, in order.
    sees: &'static [&'static str],
    /// Something must be counted (a drop reason, or differing overlapping bytes) when the
    /// case hides bytes on purpose.
    counted: bool,
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

fn cases() -> Vec<Case> {
    use Step::*;
    vec![
        Case {
            id: "K8",
            owner: Owner::Resp,
            item: 2,
            what: "Upgrade without Connection: upgrade, then a pipelined request",
            origins: "A,A · A,A · A,A · A,A",
            handshake: true,
            steps: vec![
                Send(b"GET /k8 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\nGET /k8-next HTTP/1.1\r\nHost: h\r\n\r\n"),
                Respond(OK),
                Respond(OK),
            ],
            sees: &["/k8", "/k8-next"],
            counted: false,
        },
        Case {
            id: "K9",
            owner: Owner::Resp,
            item: 2,
            what: "Connection: Upgrade + Upgrade: websocket answered 200: HTTP goes on",
            origins: "A,A · A,A · A,- · A,A",
            handshake: true,
            steps: vec![
                Send(b"GET /k9 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
                Respond(OK),
                Send(b"GET /k9-next HTTP/1.1\r\nHost: h\r\n\r\n"),
                Respond(OK),
            ],
            sees: &["/k9", "/k9-next"],
            counted: false,
        },
        Case {
            id: "K9b",
            owner: Owner::Resp,
            item: 2,
            what: "an upgrade answered 101: what follows is not HTTP",
            origins: "(101) · (101) · (101) · (101)",
            handshake: true,
            steps: vec![
                Send(b"GET /k9b HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
                Respond(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
                Send(b"\x81\x05helloGET /not-http HTTP/1.1\r\n\r\n"),
            ],
            sees: &["/k9b"],
            counted: true,
        },
        Case {
            id: "K9c",
            owner: Owner::Resp,
            item: 2,
            what: "an upgrade request whose answer the mirror never shows: keep parsing",
            origins: "A,A · A,A · A,- · A,A",
            handshake: false,
            steps: vec![Send(
                b"GET /k9c HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /k9c-next HTTP/1.1\r\nHost: h\r\n\r\n",
            )],
            sees: &["/k9c", "/k9c-next"],
            counted: false,
        },
        Case {
            id: "K10",
            owner: Owner::Resp,
            item: 2,
            what: "an h2c upgrade the server declines",
            origins: "A,A · A,A · A,- · A,A",
            handshake: true,
            steps: vec![
                Send(b"GET /k10 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
                Respond(OK),
                Send(b"GET /k10-next HTTP/1.1\r\nHost: h\r\n\r\n"),
                Respond(OK),
            ],
            sees: &["/k10", "/k10-next"],
            counted: false,
        },
        Case {
            id: "K11",
            owner: Owner::Resp,
            item: 2,
            what: "CONNECT refused (405): HTTP goes on",
            origins: "R405 · A · closed · A",
            handshake: true,
            steps: vec![
                Send(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n"),
                Respond(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"),
                Send(b"GET /k11-next HTTP/1.1\r\nHost: h\r\n\r\n"),
                Respond(OK),
            ],
            sees: &["db.example:5432", "/k11-next"],
            counted: false,
        },
        Case {
            id: "K11b",
            owner: Owner::Resp,
            item: 2,
            what: "CONNECT accepted (200): a tunnel, not HTTP",
            origins: "- · (tunnel) · - · (tunnel)",
            handshake: true,
            steps: vec![
                Send(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n"),
                Respond(b"HTTP/1.1 200 Connection Established\r\n\r\n"),
                Send(b"\x00\x00\x00\x08\x04\xd2\x16\x2fGET /tunnelled HTTP/1.1\r\n\r\n"),
            ],
            sees: &["db.example:5432"],
            counted: true,
        },
        Case {
            id: "X10",
            owner: Owner::Resp,
            item: 5,
            what: "a SYN+ACK sent from the client's side does not make it the server",
            origins: "(kernel drops it) · · ·",
            handshake: true,
            steps: vec![
                Raw(|c| c.client_segment(c.client_next(), TcpFlags::ack(c.server_next()).syn(), b"")),
                Send(b"GET /x10 HTTP/1.1\r\nHost: h\r\n\r\n"),
                Respond(OK),
                Send(b"GET /x10-next HTTP/1.1\r\nHost: h\r\n\r\n"),
            ],
            sees: &["/x10", "/x10-next"],
            counted: false,
        },
        Case {
            id: "X11",
            owner: Owner::Resp,
            item: 5,
            what: "one segment far beyond the server's window is ignored, not skipped to",
            origins: "(kernel drops it) · · ·",
            handshake: true,
            steps: vec![
                Raw(|c| {
                    let far = c.client_next().wrapping_add(1_000_000_000);
                    c.client_segment(far, TcpFlags::ack(c.server_next()), b"GET /far HTTP/1.1\r\n\r\n")
                }),
                Send(b"GET /x11 HTTP/1.1\r\nHost: h\r\n\r\n"),
                Respond(OK),
                Send(b"GET /x11-next HTTP/1.1\r\nHost: h\r\n\r\n"),
            ],
            sees: &["/x11", "/x11-next"],
            counted: true,
        },
        Case {
            id: "X12",
            owner: Owner::Resp,
            item: 5,
            what: "an overlapping retransmission with different bytes is counted (first data wins, as documented; the policy is item 5's to confirm)",
            origins: "(the receiver's stack keeps one copy) · · ·",
            handshake: true,
            steps: vec![
                Raw(|c| {
                    c.client_segment(c.client_next().wrapping_add(5), TcpFlags::ack(c.server_next()), b"evil")
                }),
                Send(b"GET /good HTTP/1.1\r\nHost: h\r\n\r\n"),
            ],
            sees: &["/evil"],
            counted: true,
        },
    ]
}

fn run(case: &Case) -> (Vec<HttpRequest>, EngineStats) {
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    let mut c = TcpConn::new(11, "10.0.0.1:40000", "10.0.0.2:80", 5000);
    let mut datagrams = if case.handshake {
        c.open()
    } else {
        vec![c.syn()]
    };
    for s in &case.steps {
        datagrams.push(match s {
            Step::Send(b) => c.send(b),
            Step::Respond(b) => c.respond(b),
            Step::Raw(f) => f(&c),
        });
    }
    for (i, d) in datagrams.iter().enumerate() {
        engine.on_vxlan_payload(1_700_000_000_000_000 + i as u64 * 100, d, &mut out);
    }
    engine.finish(&mut out);
    (out, engine.stats().clone())
}

#[test]
fn cases_that_depend_on_the_server_direction_and_tcp_state_give_the_analyzer_what_origins_serve() {
    let mut failures = Vec::new();
    for case in cases() {
        let (reqs, stats) = run(&case);
        let got: Vec<&str> = reqs.iter().map(|r| r.target.as_str()).collect();
        let mut problems = Vec::new();
        if got != case.sees {
            problems.push(format!("analyzer got {got:?}, expected {:?}", case.sees));
        }
        if case.counted && stats.total_drops() == 0 && stats.overlap_different_data == 0 {
            problems.push("nothing was counted".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} (item {}, {:?}: {}; origins {}): {}",
                case.id,
                case.item,
                case.owner,
                case.what,
                case.origins,
                problems.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Item 7, reassembly side: one-byte out-of-order segments past a hole on thousands of
/// connections (each piece with its bookkeeping) keep the peak RSS of a child process under
/// the configured cap.
#[test]
fn tiny_out_of_order_pieces_keep_the_peak_rss_under_the_configured_cap() {
    const NAME: &str = "tiny_out_of_order_pieces_keep_the_peak_rss_under_the_configured_cap";
    let plan = Plan::peak_rss(Flood::Pieces, 64 * 6_000);
    if run_as_child(&plan) {
        return;
    }
    let r = peak_rss_in_child(NAME, Flood::Pieces);
    let ceiling = ceiling_kib(r.baseline_kib, &plan);
    eprintln!(
        "pieces: peak {} KiB, ceiling {ceiling} KiB: {}",
        r.peak_kib, r.summary
    );
    assert!(
        r.peak_kib <= ceiling,
        "peak RSS {} KiB over {ceiling} KiB",
        r.peak_kib
    );
}
