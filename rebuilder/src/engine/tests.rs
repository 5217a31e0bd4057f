//! Tests of the engine driver (every stage together, through the public API).
use std::net::SocketAddr;

use super::*;
use crate::engine::http::tests::{GenRequest, gen_request};
use crate::testkit::{TcpConn as Conn, TcpFlags, TcpFrame, vxlan_datagram, vxlan_frame};
use proptest::prelude::*;

/// An engine whose requests do not wait for responses past the next timer tick (the tests
/// of request extraction; pairing has its own).
fn engine() -> Engine {
    Engine::new(EngineConfig {
        response_timeout_us: 0,
        server_wait_us: 0,
        ..EngineConfig::default()
    })
}

/// An engine whose requests wait for their responses (a second; [`engine`]'s give up at
/// once, so a response a packet later is already late).
fn waiting_engine() -> Engine {
    Engine::new(EngineConfig {
        response_timeout_us: 1_000_000,
        server_wait_us: 1_000_000,
        ..EngineConfig::default()
    })
}

/// Feeds the datagrams (1 µs apart from time 1,000), then a timer tick 1 µs later: requests
/// whose wait is over come out.
fn run(e: &mut Engine, datagrams: &[Vec<u8>]) -> Vec<HttpRequest> {
    let mut out = Vec::new();
    for (i, d) in datagrams.iter().enumerate() {
        e.on_vxlan_payload(1_000 + i as u64, d, &mut out);
    }
    e.on_timer(1_000 + datagrams.len() as u64, &mut out);
    out
}

fn targets(reqs: &[HttpRequest]) -> Vec<&str> {
    reqs.iter().map(|r| r.target.as_str()).collect()
}

#[test]
fn request_over_vxlan_is_emitted_with_its_flow_identity_and_time() {
    let mut c = Conn::new(4242, "10.0.0.1:40000", "10.0.0.2:8080", 1000);
    let mut e = engine();
    let d = [
        c.syn(),
        c.syn_ack(),
        c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"),
    ];
    let out = run(&mut e, &d);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(
        (r.vni, r.client, r.server, r.ts_us),
        (4242, c.client, c.server, 1_002)
    );
    assert_eq!(e.stats().requests, 1);
    assert_eq!(e.active_flows(), 2);
}

#[test]
fn captured_outer_frames_and_plain_frames_are_both_understood() {
    let c = Conn::new(9, "10.0.0.1:40000", "10.0.0.2:80", 5);
    let inner =
        TcpFrame::new(c.client, c.server, c.client_next()).build(b"GET /v HTTP/1.1\r\n\r\n");
    let mut e = engine();
    let mut out = Vec::new();
    e.on_captured_frame(1, &vxlan_frame([172, 16, 0, 1].into(), 9, &inner), &mut out);
    let plain = TcpFrame::new(c.client, c.server, 1).build(b"GET /p HTTP/1.1\r\n\r\n");
    e.on_captured_frame(2, &plain, &mut out);
    e.on_timer(3, &mut out);
    assert_eq!(targets(&out), ["/v", "/p"]);
    assert_eq!((out[0].vni, out[1].vni), (9, 0));
}

#[test]
fn retransmitted_first_segment_does_not_duplicate_the_request() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let first = c.send(b"GET /once HTTP/1.1\r\n\r\n");
    let mut e = engine();
    let out = run(&mut e, &[c.syn(), first.clone(), first.clone(), first]);
    assert_eq!(targets(&out), ["/once"]);
    assert_eq!(e.stats().drops(DropReason::DuplicateSegment), 2);
}

#[test]
fn same_packet_mirrored_from_both_ends_is_seen_once() {
    let c = Conn::new(3, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let inner = TcpFrame::new(c.client, c.server, c.client_next())
        .flags(TcpFlags::ack(0))
        .build(b"POST /m HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
    let mut e = engine();
    let mut out = Vec::new();
    e.on_captured_frame(1, &vxlan_frame([10, 0, 0, 1].into(), 3, &inner), &mut out);
    e.on_captured_frame(1, &vxlan_frame([10, 0, 0, 2].into(), 3, &inner), &mut out);
    e.on_timer(2, &mut out);
    assert_eq!(targets(&out), ["/m"]);
}

#[test]
fn request_split_across_segments_with_moving_acks_is_one_request() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut d = vec![c.syn()];
    d.push(c.send(b"POST /split HTTP/1.1\r\nContent-"));
    d.push(c.respond(b"HTTP/1.1 100 Continue\r\n\r\n"));
    d.push(c.send(b"Length: 5\r\n\r\nab"));
    d.push(c.respond(b"x"));
    d.push(c.send(b"cde"));
    let mut e = engine();
    let out = run(&mut e, &d);
    assert_eq!(targets(&out), ["/split"]);
    assert_eq!(out[0].body, b"abcde");
}

#[test]
fn response_direction_is_ignored_even_when_it_looks_like_requests() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut d = vec![c.syn(), c.syn_ack(), c.send(b"GET / HTTP/1.1\r\n\r\n")];
    d.push(c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nGET /evil HTTP/1.1\r\n\r\n"));
    let mut e = engine();
    let out = run(&mut e, &d);
    assert_eq!(targets(&out), ["/"]);
    assert!(e.stats().response_packets >= 2);
}

#[test]
fn request_text_in_a_response_joined_mid_stream_does_not_silence_the_client() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = engine();
    // Joined mid-way: the response body quotes a request, then the client sends two.
    let mut d = vec![c.respond(b"ml>\nGET /quoted HTTP/1.1\r\n\r\n<p>")];
    d.push(c.send(b"GET /1 HTTP/1.1\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    d.push(c.send(b"GET /2 HTTP/1.1\r\n\r\n"));
    let out = run(&mut e, &d);
    assert!(
        targets(&out).ends_with(&["/1", "/2"]),
        "{:?}",
        targets(&out)
    );
    // Now the client direction is known: the response direction is ignored.
    let later = run(&mut e, &[c.respond(b"GET /ignored HTTP/1.1\r\n\r\n")]);
    assert!(later.is_empty());
}

#[test]
fn a_request_read_from_what_turns_out_to_be_the_server_is_dropped_and_counted_not_emitted() {
    // Joined mid-stream: the server's direction comes first and reads as a request, which
    // waits for its response; then the client's direction sends two requests, so the first
    // direction carries responses and its "request" was none.
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let d = [
        c.respond(b"GET /quoted HTTP/1.1\r\nHost: x\r\n\r\n"),
        c.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ];
    let mut e = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    for (i, x) in d.iter().enumerate() {
        e.on_vxlan_payload(1_000 + i as u64, x, &mut out);
    }
    e.finish(&mut out);
    assert_eq!(targets(&out), ["/1", "/2"]);
    let s = e.stats();
    assert_eq!(s.requests, 3, "parsed");
    assert_eq!(
        s.drops(DropReason::NotARequest),
        1,
        "and the one not emitted said"
    );
    let rows = s.sources.rows();
    let requests: u64 = rows.iter().map(|(_, r)| r.requests).sum();
    let dropped: u64 = rows
        .iter()
        .map(|(_, r)| r.drops[DropReason::NotARequest as usize])
        .sum();
    assert_eq!((requests, dropped), (3, 1), "in its source's row too");
    assert_eq!(e.buffered_bytes(), 0);
}

#[test]
fn joining_mid_stream_without_syn_recovers_the_next_request() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let _lost = c.send(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234");
    let d = [c.send(b"56789"), c.send(b"GET /b HTTP/1.1\r\n\r\n")];
    let mut e = engine();
    let out = run(&mut e, &d);
    assert_eq!(targets(&out), ["/b"]);
}

/// Feeds the datagrams (1 µs apart from time 1,000); what came out.
fn feed(e: &mut Engine, d: &[Vec<u8>]) -> Vec<HttpRequest> {
    let mut out = Vec::new();
    for (i, x) in d.iter().enumerate() {
        e.on_vxlan_payload(1_000 + i as u64, x, &mut out);
    }
    out
}

/// Runs `d` through a [`waiting_engine`] ([`feed`]) to the end of the input.
fn run_to_end(d: &[Vec<u8>]) -> (Engine, Vec<HttpRequest>) {
    let mut e = waiting_engine();
    let mut out = feed(&mut e, d);
    e.finish(&mut out);
    (e, out)
}

#[test]
fn a_server_joined_mid_way_is_known_by_its_first_status_line_and_every_answer_is_counted() {
    // Joined mid-way, the client first; the server's first bytes are a status line. Before,
    // the roles waited for the client's second request and the first answer was skipped
    // uncounted (read as bytes between requests).
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let d = [
        c.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"),
        c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        c.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
        c.respond(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    ];
    let (e, out) = run_to_end(&d);
    let got = outcomes(&out);
    // /1 may have been pipelined behind a request sent before the capture: the first
    // answer is not for sure its own.
    assert_eq!(got[0].0, "/1");
    assert_eq!(got[0].1, None, "{got:?}");
    assert_eq!(got[1], ("/2", Some(404), None), "{got:?}");
    let s = e.stats();
    assert_eq!((s.responses, s.responses_paired), (2, 1));
    assert_eq!(s.responses_unmatched, 1, "the first answer, said");
    assert_eq!(e.buffered_bytes(), 0);
}

#[test]
fn a_server_joined_mid_body_is_known_by_a_status_line_at_a_later_segments_start() {
    // The server's first bytes are the end of a body; then the client sends a request and
    // the server's answer begins a segment.
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let d = [
        c.respond(b"...the end of a body sent before the capture</html>"),
        c.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"),
        c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        c.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
        c.respond(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    ];
    let (e, out) = run_to_end(&d);
    let got = outcomes(&out);
    assert_eq!(targets(&out), ["/1", "/2"]);
    assert_eq!(got[1], ("/2", Some(404), None), "{got:?}");
    assert_eq!(e.stats().responses, 2);
}

#[test]
fn a_status_line_from_a_direction_that_sent_a_request_or_is_inside_one_makes_it_no_server() {
    // Joined mid-way, both directions read as requests once each (the server's is text in a
    // body); then the client begins a segment with a status line (text of its own), after a
    // request or inside one. Taken for the server, it would lose its requests: the roles wait
    // for its second request, as before.
    let mut a = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let after_one = [
        a.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"),
        a.respond(b"GET /quoted HTTP/1.1\r\nHost: x\r\n\r\n"),
        a.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        a.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ];
    let mut b = Conn::new(1, "10.0.0.1:40001", "10.0.0.2:80", 1);
    let inside_one = [
        b.respond(b"GET /quoted HTTP/1.1\r\nHost: x\r\n\r\n"),
        b.send(b"POST /1 HTTP/1.1\r\nContent-Length: 40\r\n\r\n"),
        // The body, 40 bytes.
        b.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        b.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ];
    for d in [after_one, inside_one] {
        let (e, out) = run_to_end(&d);
        assert_eq!(targets(&out), ["/1", "/2"]);
        assert_eq!(e.stats().drops(DropReason::NotARequest), 1, "/quoted");
    }
}

#[test]
fn a_syn_that_carries_a_status_line_does_not_make_its_sender_the_server() {
    // The server's bytes read as a request (joined mid-way), then the other end opens the
    // connection anew with data in its SYN that begins with a status line: a SYN's sender is
    // the client, whatever its bytes.
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let d = [
        c.respond(b"GET /quoted HTTP/1.1\r\nHost: x\r\n\r\n"),
        c.client_segment(
            c.client_isn,
            TcpFlags::SYN,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
    ];
    let mut e = waiting_engine();
    feed(&mut e, &d);
    let client = e.table.find(&FlowKey::new(1, c.client, c.server)).unwrap();
    assert_ne!(e.table.entry(client).value.role, Role::Responses);
    assert_eq!(e.stats().responses, 0);
}

#[test]
fn a_status_line_with_no_request_across_from_it_decides_no_role() {
    // Joined mid-way: the server's first bytes end a body, then the client's first bytes (the
    // rest of an upload) begin with a status line. No request was read across from it, so
    // nothing says it is the server's answer: the roles wait, and the requests still come.
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let d = [
        c.respond(b"...the end of a body sent before the capture</html>"),
        c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        c.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"),
        c.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ];
    let (e, out) = run_to_end(&d);
    assert_eq!(targets(&out), ["/1", "/2"]);
    assert_eq!(e.stats().responses, 0);
}

#[test]
fn vni_outside_the_allow_list_is_dropped() {
    let mut c = Conn::new(5, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = Engine::new(EngineConfig {
        vni_allow: Some(vec![6]),
        ..EngineConfig::default()
    });
    let out = run(&mut e, &[c.syn(), c.send(b"GET / HTTP/1.1\r\n\r\n")]);
    assert!(out.is_empty());
    assert_eq!(e.stats().drops(DropReason::VniNotAllowed), 2);
    assert_eq!(e.active_flows(), 0);
}

#[test]
fn malformed_datagrams_are_counted_and_lose_nothing_else() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = engine();
    let mut out = Vec::new();
    e.on_vxlan_payload(0, &c.syn(), &mut out);
    e.on_vxlan_payload(0, &[0x08, 0, 0], &mut out);
    e.on_vxlan_payload(0, &[0; 8], &mut out);
    e.on_vxlan_payload(0, &vxlan_datagram(1, &[1, 2, 3]), &mut out);
    let good = c.send(b"GET /ok HTTP/1.1\r\n\r\n");
    e.on_vxlan_payload(0, &good[..8 + 14 + 20 + 10], &mut out);
    e.on_vxlan_payload(0, &good, &mut out);
    e.on_timer(1, &mut out);
    assert_eq!(targets(&out), ["/ok"]);
    assert_eq!(e.stats().drops(DropReason::VxlanMalformed), 2);
    // An inner frame of 3 bytes and a TCP header cut short.
    assert_eq!(e.stats().drops(DropReason::MalformedPacket), 2);
}

#[test]
fn packet_cut_by_packet_length_drops_only_its_request() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let big = format!(
        "POST /cut HTTP/1.1\r\nContent-Length: 2000\r\n\r\n{}",
        "x".repeat(2000)
    );
    let cut = c.send(big.as_bytes());
    let d = [
        c.syn(),
        cut[..8 + 14 + 20 + 20 + 500].to_vec(),
        c.send(b"GET /next HTTP/1.1\r\n\r\n"),
    ];
    let mut e = engine();
    let out = run(&mut e, &d);
    assert_eq!(targets(&out), ["/next"]);
    assert_eq!(e.stats().drops(DropReason::MessageGap), 1);
    assert_eq!(e.stats().gaps, 1);
}

#[test]
fn hole_is_skipped_by_the_timer_and_later_requests_survive() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let _lost = c.send(b"GET /lost HTTP/1.1\r\n\r\n");
    let d = [c.syn(), c.send(b"GET /after HTTP/1.1\r\n\r\n")];
    let mut e = engine();
    let mut out = run(&mut e, &d);
    assert!(out.is_empty());
    e.on_timer(1_001 + e.config().gap_timeout_us, &mut out);
    assert_eq!(targets(&out), ["/after"]);
    // The live connection holds its pairing (charged) and nothing else.
    assert_eq!(e.buffered_bytes(), crate::engine::pairing::PAIRING_BYTES);
}

#[test]
fn idle_flows_expire_and_their_unfinished_request_is_counted() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = engine();
    let mut out = run(&mut e, &[c.syn(), c.send(b"GET /half HTTP/1.1\r\n")]);
    e.on_timer(10_000, &mut out);
    assert_eq!(e.active_flows(), 1);
    e.on_timer(1_001 + e.config().idle_timeout_us, &mut out);
    assert_eq!(e.active_flows(), 0);
    assert!(out.is_empty());
    assert_eq!(e.stats().flows_expired, 1);
    assert_eq!(e.stats().drops(DropReason::MessageIncomplete), 1);
    assert_eq!(e.buffered_bytes(), 0);
}

#[test]
fn flow_cap_evicts_the_least_recently_used_and_counts_it() {
    let mut e = Engine::new(EngineConfig {
        max_flows: 2,
        ..EngineConfig::default()
    });
    let mut out = Vec::new();
    let mut conns: Vec<Conn> = (0..3)
        .map(|i| Conn::new(1, &format!("10.0.0.1:{}", 1000 + i), "10.0.0.2:80", 1))
        .collect();
    for c in &mut conns {
        e.on_vxlan_payload(0, &c.syn(), &mut out);
        e.on_vxlan_payload(0, &c.send(b"GET /p HTTP/1.1\r\nA"), &mut out);
    }
    assert_eq!(e.active_flows(), 2);
    assert_eq!(e.stats().flows_evicted, 1);
    assert_eq!(e.stats().drops(DropReason::FlowEvicted), 1);
    // 18 bytes of head in each direction's buffer, charged at what the buffer costs: a
    // 64-byte allocation (16-byte granule + 16 of bookkeeping).
    assert_eq!(e.buffered_bytes(), 2 * (64 + 16));
}

#[test]
fn reset_closes_both_directions_and_counts_the_unfinished_request() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = engine();
    let d = [
        c.syn(),
        c.syn_ack(),
        c.send(b"POST /r HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc"),
        c.rst(),
    ];
    let out = run(&mut e, &d);
    assert!(out.is_empty());
    assert_eq!(e.stats().drops(DropReason::MessageIncomplete), 1);
    assert_eq!(e.buffered_bytes(), 0);
}

#[test]
fn expect_continue_body_lost_before_fin_or_reset_drops_the_request() {
    for end in ["fin", "rst"] {
        let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut d = vec![c.syn(), c.syn_ack()];
        d.push(c.send(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"));
        let _lost = c.send(b"body");
        d.push(if end == "fin" {
            c.fin()
        } else {
            c.client_rst()
        });
        let mut e = engine();
        let mut out = run(&mut e, &d);
        e.finish(&mut out);
        assert!(out.is_empty(), "{end}: {:?}", targets(&out));
        assert_eq!(e.stats().drops(DropReason::MessageGap), 1, "{end}");
    }
}

#[test]
fn fin_completes_the_stream_and_late_data_is_counted() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = engine();
    let mut d = vec![c.syn(), c.send(b"GET /f HTTP/1.1\r\n\r\n"), c.fin()];
    d.push(c.send(b"GET /late HTTP/1.1\r\n\r\n"));
    let out = run(&mut e, &d);
    assert_eq!(targets(&out), ["/f"]);
    assert_eq!(e.stats().drops(DropReason::AfterClose), 1);
}

#[test]
fn new_syn_on_a_reused_port_starts_a_new_connection() {
    let mut a = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut b = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 900_000);
    let mut e = engine();
    let d = [
        a.syn(),
        a.send(b"GET /a HTTP/1.1\r\n\r\n"),
        a.fin(),
        b.syn(),
        b.send(b"GET /b HTTP/1.1\r\n\r\n"),
    ];
    let out = run(&mut e, &d);
    assert_eq!(targets(&out), ["/a", "/b"]);
}

#[test]
fn tls_flow_is_opaque_and_its_packets_are_counted() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:443", 1);
    let mut e = engine();
    let d = [
        c.syn(),
        c.send(&[0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0]),
        c.send(b"GET / HTTP/1.1\r\n\r\n"),
    ];
    let out = run(&mut e, &d);
    assert!(out.is_empty());
    assert_eq!(e.stats().opaque_flows, 1);
    assert_eq!(e.stats().drops(DropReason::OpaqueFlow), 1);
}

#[test]
fn packets_after_an_upgrade_are_counted_as_upgraded_even_after_reordering() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = waiting_engine();
    let mut d = c.open();
    let up = c.send(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    let switch = c.respond(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    let f1 = c.send(b"\x81\x05hello");
    let f2 = c.send(b"\x81\x05world");
    // f2 arrives first (buffered), then the upgrade and its answer, then f1.
    d.extend([f2, up, switch, f1]);
    let out = run(&mut e, &d);
    assert_eq!(targets(&out), ["/ws"]);
    assert_eq!(out[0].response.as_ref().map(|r| r.status), Some(101));
    assert_eq!(e.stats().upgraded_flows, 1);
    assert_eq!(e.stats().drops(DropReason::UpgradedFlow), 1);
    assert_eq!(e.stats().drops(DropReason::AfterClose), 0);
    // The live connection holds its pairing (charged) and nothing else.
    assert_eq!(e.buffered_bytes(), crate::engine::pairing::PAIRING_BYTES);
    // Still tracked (the websocket goes on) until it idles out.
    assert_eq!(e.active_flows(), 2);
    let mut out = Vec::new();
    e.on_timer(1_000 + e.config().closed_linger_us + 10, &mut out);
    assert_eq!(e.active_flows(), 2);
}

#[test]
fn responses_coalesced_behind_a_declined_upgrade_answer_the_requests_it_held() {
    // The server's answers to the upgrade and to the request pipelined behind it come in one
    // segment: the second is kept until the held request is parsed.
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = Engine::new(EngineConfig::default());
    let mut d = c.open();
    d.push(c.send(
        b"GET /ws HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\nGET /a HTTP/1.1\r\n\r\n",
    ));
    d.push(c.respond(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nwHTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\na",
    ));
    let mut out = run(&mut e, &d);
    e.finish(&mut out);
    let got: Vec<_> = out
        .iter()
        .map(|r| (r.target.as_str(), r.response.as_ref().map(|r| r.status)))
        .collect();
    assert_eq!(got, [("/ws", Some(200)), ("/a", Some(404))]);
    assert_eq!(e.stats().responses_unmatched, 0);
}

/// A segment with a window and TCP options (a VXLAN payload, VNI 1).
fn segment_with(
    (src, dst): (&str, &str),
    seq: u32,
    flags: TcpFlags,
    window: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut f = TcpFrame::new(src.parse().unwrap(), dst.parse().unwrap(), seq).flags(flags);
    f.window = window;
    f.options = options;
    vxlan_datagram(1, &f.build(payload))
}

/// A connection whose SYNs carry window scale 7 (`scaled`) or none; the server answers `/a`
/// advertising 502 (64,256 bytes scaled); the client sends a segment `ahead` bytes past its
/// stream, and `/b`.
fn window_case(scaled: bool, ahead: u32) -> (Vec<HttpRequest>, u64) {
    window_case_with(scaled, true, ahead)
}

/// [`window_case`], the server's SYN+ACK mirrored or not (`syn_ack`).
fn window_case_with(scaled: bool, syn_ack: bool, ahead: u32) -> (Vec<HttpRequest>, u64) {
    const C: (&str, &str) = ("10.0.0.1:40000", "10.0.0.2:80");
    const S: (&str, &str) = ("10.0.0.2:80", "10.0.0.1:40000");
    let ws7: &[u8] = &[1, 3, 3, 7];
    let client_ws = if scaled { ws7 } else { &[] };
    let (isn, sisn) = (1000u32, 5000u32);
    let a = b"GET /a HTTP/1.1\r\n\r\n";
    let next = isn + 1 + a.len() as u32;
    let d = [
        segment_with(C, isn, TcpFlags::SYN, 64240, client_ws, b""),
        if syn_ack {
            segment_with(S, sisn, TcpFlags::ack(isn + 1).syn(), 65160, ws7, b"")
        } else {
            Vec::new()
        },
        segment_with(C, isn + 1, TcpFlags::ack(sisn + 1), 502, &[], a),
        segment_with(
            S,
            sisn + 1,
            TcpFlags::ack(next),
            502,
            &[],
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ),
        segment_with(
            C,
            next + ahead,
            TcpFlags::ack(sisn + 1),
            502,
            &[],
            b"GET /far HTTP/1.1\r\n\r\n",
        ),
        segment_with(
            C,
            next,
            TcpFlags::ack(sisn + 1),
            502,
            &[],
            b"GET /b HTTP/1.1\r\n\r\n",
        ),
    ];
    let d: Vec<Vec<u8>> = d.into_iter().filter(|d| !d.is_empty()).collect();
    let mut e = engine();
    let mut out = run(&mut e, &d);
    e.finish(&mut out);
    (out, e.stats().drops(DropReason::OutOfWindow))
}

#[test]
fn a_client_segment_far_beyond_the_servers_window_is_counted_and_ignored_not_skipped_to() {
    // Scaled (shift 7): 9 MB ahead is past the edge by more than 65,535 << 7.
    let (out, refused) = window_case(true, 9_000_000);
    assert_eq!(targets(&out), ["/a", "/b"]);
    assert_eq!(refused, 1);
    // Unscaled (the client's SYN had no option: RFC 7323 scaling is off): 200 KB is too far.
    let (out, refused) = window_case(false, 200_000);
    assert_eq!(targets(&out), ["/a", "/b"]);
    assert_eq!(refused, 1);
    // Scaled, 200 KB ahead is within what the server could advertise: not refused (the
    // mirror may show data before the window update that allowed it).
    let (_, refused) = window_case(true, 200_000);
    assert_eq!(refused, 0);
    // The server's SYN+ACK not seen: its scale is unknown, only what no window can reach
    // (past 65,535 << 14) is refused.
    let (_, refused) = window_case_with(true, false, 9_000_000);
    assert_eq!(refused, 0);
    let (out, refused) = window_case_with(true, false, 1_500_000_000);
    assert_eq!(targets(&out), ["/a", "/b"]);
    assert_eq!(refused, 1);
}

#[test]
fn an_upgrade_whose_answer_is_not_mirrored_here_leaves_the_client_stream_parsed() {
    // Only the client's half reaches this engine (the NLB put the server's elsewhere).
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = engine();
    let d = [
        c.syn(),
        c.send(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /a HTTP/1.1\r\n\r\n"),
        c.send(b"GET /b HTTP/1.1\r\n\r\n"),
    ];
    let out = run(&mut e, &d);
    assert_eq!(targets(&out), ["/ws", "/a", "/b"]);
    for r in &out[1..] {
        assert!(r.anomalies.contains(stats::Anomaly::UpgradeUnanswered));
    }
    assert_eq!(e.stats().upgraded_flows, 0);
}

#[test]
fn requests_pipelined_behind_a_declined_upgrade_are_delivered_with_their_responses() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = Engine::new(EngineConfig::default());
    let mut d = c.open();
    d.push(c.send(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /a HTTP/1.1\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    d.push(c.send(b"GET /b HTTP/1.1\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"));
    let mut out = run(&mut e, &d);
    e.finish(&mut out);
    let got: Vec<_> = out
        .iter()
        .map(|r| (r.target.as_str(), r.response.as_ref().map(|r| r.status)))
        .collect();
    assert_eq!(
        got,
        [("/ws", Some(426)), ("/a", Some(200)), ("/b", Some(404))]
    );
    assert!(out.iter().all(|r| r.anomalies.is_empty()));
    assert_eq!(e.stats().upgraded_flows, 0);
}

#[test]
fn jumbo_segment_of_a_9001_byte_mtu_is_handled_whole() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let head = b"PUT /j HTTP/1.1\r\nContent-Length: 8900\r\n\r\n";
    let mut payload = head.to_vec();
    payload.resize(head.len() + 8900, b'j');
    assert!(payload.len() <= 9001 - 40);
    let mut e = engine();
    let out = run(&mut e, &[c.syn(), c.send(&payload)]);
    assert_eq!(out[0].body.len(), 8900);
}

#[test]
fn ipv6_and_ipv4_fragments_are_handled() {
    let mut c = Conn::new(1, "[fd00::1]:40000", "[fd00::2]:80", 1);
    let mut e = engine();
    let out = run(&mut e, &[c.syn(), c.send(b"GET /six HTTP/1.1\r\n\r\n")]);
    assert_eq!(targets(&out), ["/six"]);
}

#[test]
fn per_direction_state_stays_small() {
    // The RSS target (64 MiB with 10,000 connections) and cache behaviour depend on it.
    // 272: the key's GWLB endpoint (8 bytes) and the direction's mirror source (17 bytes,
    // padded to 24 by the stream's alignment) on top of the 240 they took before, and the
    // pointer to the connection's pairing (requests waiting for their responses and the
    // response parser live behind it, allocated only for request directions).
    // 296: the client stream's cursor for pairing (24 bytes), so that the pairing (a
    // 256-byte allocation) exists only once a request is complete or the server sends.
    // 304: the receive window it advertised (edge, scale: 8 bytes).
    // 312: the row of its source in the source table (4 bytes, 8 with alignment), which saves
    // a hash look-up per packet.
    // Still 312 with the deadline its waiting entry holds (4 bytes, in place of a flag and
    // padding; `WaitingMark`), which saves a read of the pairing's queue on nearly every
    // server packet.
    let size = std::mem::size_of::<crate::engine::flow::Entry<Direction>>();
    assert!(size <= 312, "{size}");
}

#[test]
fn connections_that_never_complete_a_request_hold_no_pairing_and_no_uncharged_memory() {
    let mut e = engine();
    let mut out = Vec::new();
    let mut held = 0;
    for port in 0..200u16 {
        let mut c = Conn::new(1, &format!("10.0.1.1:{}", 1000 + port), "10.0.0.2:80", 7);
        for d in [
            c.syn(),
            c.send(b"POST /never HTTP/1.1\r\nHost: h\r\nX-Pad: ppp"),
        ] {
            e.on_vxlan_payload(1_000, &d, &mut out);
        }
        let idx = e.table.find(&FlowKey::new(1, c.client, c.server)).unwrap();
        let dir = &e.table.entry(idx).value;
        assert!(dir.pairing.is_none(), "a pairing before any request");
        held += dir.parser.held();
    }
    assert!(out.is_empty());
    assert_eq!(e.buffered_bytes(), held, "every byte held is the parsers'");
    e.finish(&mut out);
    assert_eq!(e.buffered_bytes(), 0);
}

#[test]
fn a_connections_pairing_is_charged_to_the_budget_while_it_exists() {
    let mut e = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    let mut c = Conn::new(1, "10.0.1.1:1000", "10.0.0.2:80", 7);
    let mut now = 1_000;
    let mut feed = |e: &mut Engine, d: Vec<u8>, out: &mut Vec<HttpRequest>| {
        now += 1;
        e.on_vxlan_payload(now, &d, out);
    };
    for d in c.open() {
        feed(&mut e, d, &mut out);
    }
    assert_eq!(e.buffered_bytes(), 0);
    feed(
        &mut e,
        c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"),
        &mut out,
    );
    assert!(out.is_empty(), "the request waits for its response");
    assert!(
        e.buffered_bytes() > pairing::PAIRING_BYTES,
        "{} charged: the pairing and the waiting request",
        e.buffered_bytes()
    );
    feed(
        &mut e,
        c.respond(b"HTTP/1.1 204 No Content\r\n\r\n"),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response.as_ref().map(|r| r.status), Some(204));
    assert_eq!(
        e.buffered_bytes(),
        pairing::PAIRING_BYTES,
        "an idle keep-alive connection: its pairing alone"
    );
    let fin = c.fin();
    feed(&mut e, fin, &mut out);
    let server_fin = c.server_fin();
    feed(&mut e, server_fin, &mut out);
    assert_eq!(e.buffered_bytes(), 0, "freed when both streams are over");
}

#[test]
fn requests_whose_pairing_does_not_fit_the_budget_go_out_counted_over_budget() {
    let mut e = Engine::new(EngineConfig {
        memory_budget_bytes: pairing::PAIRING_BYTES - 1,
        ..EngineConfig::default()
    });
    let mut c = Conn::new(1, "10.0.1.1:1000", "10.0.0.2:80", 7);
    let mut d = c.open();
    d.push(c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    let out = run(&mut e, &d);
    assert_eq!(targets(&out), ["/a"]);
    assert_eq!(out[0].response_missing, Some(ResponseMissing::OverBudget));
    assert_eq!(e.stats().responses_missing(ResponseMissing::OverBudget), 1);
    assert_eq!(e.buffered_bytes(), 0);
}

/// Builds the client datagrams of one connection carrying `reqs`, cut at `cuts`.
fn conn_datagrams(c: &mut Conn, reqs: &[GenRequest], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let wire: Vec<u8> = reqs.iter().flat_map(|r| r.wire()).collect();
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len())).collect();
    points.push(0);
    points.push(wire.len());
    points.sort_unstable();
    points.dedup();
    let mut d = vec![c.syn()];
    for w in points.windows(2) {
        d.push(c.send(&wire[w[0]..w[1]]));
    }
    d.push(c.fin());
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any segmentation, reordering and duplication of a set of request streams yields
    /// the same requests (per connection, in order), with no duplicate and no drop.
    #[test]
    fn any_segmentation_reordering_and_duplication_yields_the_same_requests(
        streams in proptest::collection::vec(
            (proptest::collection::vec(gen_request(), 1..4),
             proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
             any::<u32>()),
            1..4),
        swaps in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..40),
        dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut syns = Vec::new();
        let mut rest = Vec::new();
        let mut conns = Vec::new();
        for (i, (reqs, cuts, isn)) in streams.iter().enumerate() {
            let mut c = Conn::new(7, &format!("10.1.0.{}:5000", i + 1), "10.2.0.1:80", *isn);
            let mut d = conn_datagrams(&mut c, reqs, cuts);
            syns.push(d.remove(0));
            rest.extend(d);
            conns.push(c);
        }
        for d in &dups {
            let x = rest[d.index(rest.len())].clone();
            rest.push(x);
        }
        for (a, b) in &swaps {
            let (a, b) = (a.index(rest.len()), b.index(rest.len()));
            rest.swap(a, b);
        }
        let mut e = engine();
        let mut out = run(&mut e, &syns);
        out.extend(run(&mut e, &rest));
        e.finish(&mut out);
        for (c, (reqs, _, _)) in conns.iter().zip(&streams) {
            let got: Vec<&HttpRequest> = out.iter().filter(|r| r.client == c.client).collect();
            prop_assert_eq!(got.len(), reqs.len());
            for (g, r) in reqs.iter().zip(got) {
                prop_assert!(g.matches(r), "{:?} vs {:?}", g, r);
            }
        }
        prop_assert_eq!(out.len(), streams.iter().map(|s| s.0.len()).sum::<usize>());
        let s = e.stats();
        for reason in DropReason::ALL {
            if reason != DropReason::DuplicateSegment {
                prop_assert_eq!(s.drops(reason), 0, "{}", reason.as_str());
            }
        }
        prop_assert_eq!(s.gaps, 0);
        prop_assert_eq!(e.buffered_bytes(), 0);
    }

    /// Under pressure from every cap at once (tiny flow table, out-of-order caps and memory
    /// budget), with loss, truncation, duplication, reordering and resets: nothing panics,
    /// every buffer is returned, and every request emitted is one that was sent (body
    /// possibly cut and flagged), at most as many times as it was sent — unless a direction
    /// was evicted: a duplicate arriving after its state was forgotten is parsed afresh.
    #[test]
    fn under_every_cap_nothing_foreign_or_duplicated_is_emitted(
        streams in proptest::collection::vec(
            (proptest::collection::vec(gen_request(), 1..4),
             proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
             any::<u32>()),
            1..5),
        lost in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        cut in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..60), 0..4),
        dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        swaps in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..20),
        rst in proptest::option::of(any::<prop::sample::Index>()),
        max_flows in 2usize..6,
    ) {
        let mut all = Vec::new();
        let mut conns = Vec::new();
        for (i, (reqs, cuts, isn)) in streams.iter().enumerate() {
            let mut c = Conn::new(7, &format!("10.1.0.{}:5000", i + 1), "10.2.0.1:80", *isn);
            all.extend(conn_datagrams(&mut c, reqs, cuts));
            conns.push(c);
        }
        let mut lost: Vec<usize> = lost.iter().map(|i| i.index(all.len())).collect();
        lost.sort_unstable();
        lost.dedup();
        for i in lost.into_iter().rev() {
            if all.len() > 1 {
                all.remove(i);
            }
        }
        for (i, keep) in &cut {
            let n = all.len();
            let d = &mut all[i.index(n)];
            let keep = (8 + 14 + 20 + 20 + keep).min(d.len());
            d.truncate(keep);
        }
        for d in &dups {
            let x = all[d.index(all.len())].clone();
            all.push(x);
        }
        for (a, b) in &swaps {
            let (a, b) = (a.index(all.len()), b.index(all.len()));
            all.swap(a, b);
        }
        if let Some(r) = rst {
            let c = &conns[r.index(conns.len())];
            let at = r.index(all.len());
            all.insert(at, c.rst());
        }
        let mut e = Engine::new(EngineConfig {
            max_flows,
            max_ooo_bytes_per_flow: 200,
            max_ooo_segments_per_flow: 3,
            memory_budget_bytes: 1500,
            gap_skip_bytes: 150,
            max_header_bytes: 400,
            max_body_bytes: 100,
            ..EngineConfig::default()
        });
        let mut out = run(&mut e, &all);
        // Forgotten state (an open or a closed direction evicted at the cap) lets a late
        // duplicate be parsed afresh.
        let evicted = e.stats().flows_evicted + e.stats().flows_expired > 0;
        e.on_timer(10_000_000, &mut out);
        e.finish(&mut out);
        prop_assert_eq!(e.buffered_bytes(), 0);
        prop_assert_eq!(e.active_flows(), 0);
        let mut sent: Vec<(SocketAddr, &GenRequest, bool)> = Vec::new();
        for (c, (reqs, _, _)) in conns.iter().zip(&streams) {
            sent.extend(reqs.iter().map(|g| (c.client, g, false)));
        }
        for r in &out {
            let found = sent.iter_mut().find(|(client, g, used)| {
                (!*used || evicted) && *client == r.client && {
                    let body_ok = if r.body_truncated {
                        g.body.starts_with(&r.body) && r.body.len() < g.body.len()
                    } else {
                        r.body == g.body
                    };
                    let mut whole = r.clone();
                    whole.body = g.body.clone();
                    body_ok && g.matches(&whole)
                }
            });
            prop_assert!(found.is_some(), "foreign or duplicated request {:?}", r);
            if let Some(f) = found {
                f.2 = true;
            }
        }
    }

    /// Under loss (and reordering), every request whose bytes all arrived is emitted,
    /// and no request that lost a byte is.
    #[test]
    fn under_loss_exactly_the_fully_received_requests_are_emitted(
        reqs in proptest::collection::vec(gen_request(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        lost in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        swaps in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..10),
        isn in any::<u32>(),
    ) {
        let wires: Vec<Vec<u8>> = reqs.iter().map(|r| r.wire()).collect();
        let wire = wires.concat();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len())).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        points.dedup();
        let ranges: Vec<(usize, usize)> = points.windows(2).map(|w| (w[0], w[1])).collect();
        let lost: std::collections::HashSet<usize> = lost.iter().map(|i| i.index(ranges.len())).collect();
        let mut c = Conn::new(1, "10.9.0.1:6000", "10.9.0.2:80", isn);
        let mut kept = Vec::new();
        for (i, (a, b)) in ranges.iter().enumerate() {
            let d = c.send(&wire[*a..*b]);
            if !lost.contains(&i) {
                kept.push(d);
            }
        }
        kept.push(c.fin());
        for (a, b) in &swaps {
            let (a, b) = (a.index(kept.len()), b.index(kept.len()));
            kept.swap(a, b);
        }
        let mut e = engine();
        let mut out = run(&mut e, &[c.syn()]);
        out.extend(run(&mut e, &kept));
        e.finish(&mut out);
        let mut expected = Vec::new();
        let mut pos = 0;
        for (g, w) in reqs.iter().zip(&wires) {
            let (s, t) = (pos, pos + w.len());
            pos = t;
            let hit = ranges
                .iter()
                .enumerate()
                .any(|(i, (a, b))| lost.contains(&i) && *a < t && *b > s);
            if !hit {
                expected.push(g);
            }
        }
        prop_assert_eq!(out.len(), expected.len(), "{:?} wire={:?} ranges={:?} lost={:?}", targets(&out), String::from_utf8_lossy(&wire), ranges, lost);
        for (g, r) in expected.iter().zip(&out) {
            prop_assert!(g.matches(r), "{:?} vs {:?}", g, r);
        }
    }
}

#[test]
fn a_syn_ack_sent_from_the_clients_side_does_not_flip_the_roles() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut d = c.open();
    d.push(c.send(b"GET /1 HTTP/1.1\r\n\r\n"));
    // The client forges a SYN+ACK of its own, then goes on with requests.
    d.push(c.client_segment(5, TcpFlags::ack(77_000).syn(), b""));
    d.push(c.send(b"GET /2 HTTP/1.1\r\n\r\n"));
    let mut e = engine();
    let out = run(&mut e, &d);
    assert_eq!(targets(&out), ["/1", "/2"]);
    assert_eq!(e.stats().drops(DropReason::InconsistentSynAck), 1);
}

#[test]
fn a_syn_ack_before_any_request_from_the_client_is_ignored_for_roles() {
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut d = vec![c.syn()];
    d.push(c.client_segment(9, TcpFlags::ack(77_000).syn(), b""));
    d.push(c.send(b"GET /x HTTP/1.1\r\n\r\n"));
    let mut e = engine();
    let out = run(&mut e, &d);
    assert_eq!(targets(&out), ["/x"]);
}

/// Every per-source counter summed over the sources equals its fleet-wide counter.
fn assert_sources_add_up(s: &EngineStats) {
    let mut sum = source::SourceCounters::default();
    for (_, c) in s.sources.rows() {
        sum.merge(&c);
    }
    let unpaired: u64 = ResponseMissing::ALL
        .iter()
        .map(|r| s.responses_missing(*r))
        .sum();
    assert_eq!(
        (
            sum.datagrams,
            sum.bytes,
            sum.truncated_packets,
            sum.gaps,
            sum.requests,
            sum.responses,
            sum.paired,
            sum.unpaired
        ),
        (
            s.packets,
            s.bytes,
            s.truncated_packets,
            s.gaps,
            s.requests,
            s.responses,
            s.responses_paired,
            unpaired
        )
    );
    for r in DropReason::ALL {
        assert_eq!(sum.drops[r as usize], s.drops(r), "{r}");
    }
}

/// One step of a multi-source script.
#[derive(Debug, Clone)]
enum SourceStep {
    /// Connection `conn` sends a request (`lost`: its datagram never arrives).
    Request { conn: usize, lost: bool },
    /// The server of `conn` answers.
    Respond { conn: usize },
    /// A datagram of `conn` cut to `keep` bytes.
    Cut { conn: usize, keep: usize },
    /// A datagram that is not VXLAN, from sender `sender`.
    Garbage { sender: usize },
    /// A timer tick `advance_us` later.
    Tick { advance_us: u64 },
}

fn source_step() -> impl Strategy<Value = SourceStep> {
    prop_oneof![
        4 => (0..6usize, proptest::bool::weighted(0.15))
            .prop_map(|(conn, lost)| SourceStep::Request { conn, lost }),
        3 => (0..6usize).prop_map(|conn| SourceStep::Respond { conn }),
        1 => (0..6usize, 0..80usize).prop_map(|(conn, keep)| SourceStep::Cut { conn, keep }),
        1 => (0..4usize).prop_map(|sender| SourceStep::Garbage { sender }),
        1 => (1..3_000_000u64).prop_map(|advance_us| SourceStep::Tick { advance_us }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever arrives (requests, responses, losses, cut and malformed datagrams, several
    /// senders and VNIs, a key cap that overflows), the per-source counters add up to the
    /// totals, and every request is attributed to the sender of its flow.
    #[test]
    fn per_source_counters_add_up_to_the_totals(
        steps in proptest::collection::vec(source_step(), 1..60),
        max_keys in 1..6usize,
    ) {
        let senders: [IpAddr; 4] = [
            "10.0.1.1".parse().unwrap(),
            "10.0.1.2".parse().unwrap(),
            "10.0.2.1".parse().unwrap(),
            "10.0.2.2".parse().unwrap(),
        ];
        let mut e = Engine::new(EngineConfig {
            max_source_keys: max_keys,
            response_timeout_us: 1_000_000,
            ..EngineConfig::default()
        });
        // Connection i: from sender i % 4, VNI 7 or 8.
        let mut conns: Vec<Conn> = (0..6)
            .map(|i| {
                Conn::new(
                    7 + (i as u32 % 2),
                    &format!("192.168.0.{}:{}", i + 1, 40_000 + i),
                    "192.168.1.1:80",
                    1000 * i as u32,
                )
            })
            .collect();
        let mut opened = [false; 6];
        let mut asked = [0u32; 6];
        let mut out = Vec::new();
        let mut now = 1_000u64;
        let sender_of = |i: usize| senders[i % 4];
        for step in steps {
            now += 10;
            let feed = |e: &mut Engine, conn: usize, d: &[u8], out: &mut Vec<HttpRequest>| {
                e.on_datagram(now, Encap::Vxlan, sender_of(conn), d, out)
            };
            match step {
                SourceStep::Request { conn, lost } => {
                    if !opened[conn] {
                        opened[conn] = true;
                        for d in conns[conn].open() {
                            feed(&mut e, conn, &d, &mut out);
                        }
                    }
                    let d = conns[conn].send(b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n");
                    asked[conn] += 1;
                    if !lost {
                        feed(&mut e, conn, &d, &mut out);
                    }
                }
                SourceStep::Respond { conn } => {
                    if opened[conn] && asked[conn] > 0 {
                        asked[conn] -= 1;
                        let d = conns[conn].respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                        feed(&mut e, conn, &d, &mut out);
                    }
                }
                SourceStep::Cut { conn, keep } => {
                    let d = conns[conn].send_at(0, b"GET /cut HTTP/1.1\r\n\r\n");
                    let keep = keep.min(d.len());
                    feed(&mut e, conn, &d[..keep], &mut out);
                }
                SourceStep::Garbage { sender } => {
                    e.on_datagram(now, Encap::Vxlan, senders[sender], b"\x00\x01", &mut out);
                }
                SourceStep::Tick { advance_us } => {
                    now += advance_us;
                    e.on_timer(now, &mut out);
                }
            }
            assert_sources_add_up(e.stats());
        }
        e.finish(&mut out);
        assert_sources_add_up(e.stats());
        for r in &out {
            let conn = (r.client.ip().to_string()[10..].parse::<usize>().unwrap()) - 1;
            prop_assert_eq!(r.mirror_source, Some(sender_of(conn)));
            prop_assert_eq!(r.vni, 7 + (conn as u32 % 2));
        }
        let s = e.stats();
        prop_assert!(s.sources.rows().len() <= max_keys + 1);
    }
}

#[test]
fn requests_and_their_losses_are_counted_for_the_source_of_their_flow() {
    let a: IpAddr = "10.0.1.1".parse().unwrap();
    let b: IpAddr = "10.0.1.2".parse().unwrap();
    let mut e = waiting_engine();
    let mut out = Vec::new();
    let mut ca = Conn::new(7, "192.168.0.1:40000", "192.168.1.1:80", 1);
    let mut cb = Conn::new(7, "192.168.0.2:40000", "192.168.1.1:80", 1);
    for d in ca.open() {
        e.on_datagram(1_000, Encap::Vxlan, a, &d, &mut out);
    }
    for d in cb.open() {
        e.on_datagram(1_000, Encap::Vxlan, b, &d, &mut out);
    }
    let d = ca.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    e.on_datagram(1_001, Encap::Vxlan, a, &d, &mut out);
    let d = ca.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    e.on_datagram(1_002, Encap::Vxlan, a, &d, &mut out);
    // b: the first half of a request is lost; the rest arrives; the flow is then evicted
    // at the end of input.
    let _lost = cb.send(b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234");
    let d = cb.send(b"56789");
    e.on_datagram(1_003, Encap::Vxlan, b, &d, &mut out);
    e.on_timer(10_000_000, &mut out);
    e.finish(&mut out);
    let key = |s: IpAddr| source::SourceKey {
        gwlbe: None,
        sender: Some(s),
        vni: Some(7),
    };
    let s = e.stats();
    let ra = s.sources.get(Some(key(a))).unwrap();
    assert_eq!((ra.requests, ra.paired, ra.responses), (1, 1, 1));
    assert_eq!(ra.complete_share(), Some(1.0));
    let rb = s.sources.get(Some(key(b))).unwrap();
    assert_eq!(rb.requests, 0);
    assert!(rb.gaps >= 1, "{rb:?}");
    assert_eq!(ra.datagrams, 5);
    assert_eq!(rb.datagrams, 4);
    assert_sources_add_up(s);
}

/// Twenty attackers each hold an unfinished 3 KB head in a 64 KiB budget (time 0); when they
/// `keep_sending` they add a byte every 0.2 s. At 1 s a client sends a 6 KB request in two
/// segments (its first half has to be held).
fn budget_held_by_slow_heads(
    reclaim_idle_us: u64,
    keep_sending: bool,
) -> (Vec<HttpRequest>, Engine) {
    let mut e = Engine::new(EngineConfig {
        memory_budget_bytes: 64 * 1024,
        reclaim_idle_us,
        response_timeout_us: 0,
        server_wait_us: 0,
        ..EngineConfig::default()
    });
    let mut out = Vec::new();
    let mut attackers: Vec<Conn> = (0..20)
        .map(|i| Conn::new(1, &format!("10.0.9.{}:2000", i + 1), "10.0.0.2:80", 1 + i))
        .collect();
    let pad = "a".repeat(3_000);
    for c in &mut attackers {
        for d in c.open() {
            e.on_vxlan_payload(0, &d, &mut out);
        }
        let d = c.send(format!("GET /slow HTTP/1.1\r\nX-Pad: {pad}").as_bytes());
        e.on_vxlan_payload(0, &d, &mut out);
    }
    for ts in [200_000, 400_000, 600_000, 800_000]
        .into_iter()
        .filter(|_| keep_sending)
    {
        for c in &mut attackers {
            let d = c.send(b"a");
            e.on_vxlan_payload(ts, &d, &mut out);
        }
    }
    let mut c = Conn::new(1, "10.0.1.1:3000", "10.0.0.2:80", 99);
    let head = format!(
        "GET /legit HTTP/1.1\r\nHost: h\r\nX-Long: {}\r\n\r\n",
        "b".repeat(6_000)
    );
    let (first, second) = head.as_bytes().split_at(3_000);
    let mut d = c.open();
    d.push(c.send(first));
    d.push(c.send(second));
    for (i, d) in d.iter().enumerate() {
        e.on_vxlan_payload(1_000_000 + i as u64, d, &mut out);
    }
    e.on_timer(1_000_100, &mut out);
    (out, e)
}

#[test]
fn idle_flows_holding_unfinished_heads_give_the_budget_back_to_a_later_request() {
    let (out, e) = budget_held_by_slow_heads(250_000, false);
    assert_eq!(targets(&out), ["/legit"]);
    assert!(e.stats().flows_reclaimed > 0, "{:?}", e.stats());
    // Each one evicted was an attacker's unfinished head: lost, and counted as such.
    assert_eq!(
        e.stats().drops(DropReason::FlowEvicted),
        e.stats().flows_reclaimed
    );
    assert_eq!(e.stats().drops(DropReason::OverBudget), 0);
    assert!(e.buffered_bytes() <= 64 * 1024 - 64 * 1024 / 4 + 6_200);
}

#[test]
fn with_reclaim_off_a_budget_full_of_idle_heads_refuses_the_later_request_and_counts_it() {
    let (out, e) = budget_held_by_slow_heads(u64::MAX, false);
    assert!(targets(&out).is_empty(), "{:?}", targets(&out));
    assert_eq!(e.stats().flows_reclaimed, 0);
    assert!(e.stats().drops(DropReason::OverBudget) > 0);
}

#[test]
fn flows_that_had_a_packet_within_the_reclaim_idle_time_keep_their_place() {
    let (out, e) = budget_held_by_slow_heads(250_000, true);
    assert!(targets(&out).is_empty(), "{:?}", targets(&out));
    assert_eq!(e.stats().flows_reclaimed, 0);
    assert!(e.stats().drops(DropReason::OverBudget) > 0);
}

#[test]
fn requests_behind_a_second_declined_upgrade_are_delivered_though_the_client_closed_first() {
    // The client sends two Upgrade + GET pairs and closes before any answer is mirrored: at
    // its end, every held byte is parsed (the second Upgrade's GET too), and the answers
    // that come after pair with them.
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = Engine::new(EngineConfig::default());
    let mut d = c.open();
    d.push(c.send(b"GET /ws1 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /a HTTP/1.1\r\n\r\nGET /ws2 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /b HTTP/1.1\r\n\r\n"));
    d.push(c.fin());
    let declined_then_ok = b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    d.push(c.respond(declined_then_ok));
    d.push(c.respond(declined_then_ok));
    let mut out = run(&mut e, &d);
    e.finish(&mut out);
    let got: Vec<_> = out
        .iter()
        .map(|r| (r.target.as_str(), r.response.as_ref().map(|r| r.status)))
        .collect();
    assert_eq!(
        got,
        [
            ("/ws1", Some(426)),
            ("/a", Some(200)),
            ("/ws2", Some(426)),
            ("/b", Some(200))
        ]
    );
    assert_eq!(e.stats().responses_unmatched, 0);
    assert_eq!(e.stats().upgraded_flows, 0);
}

/// Each request's target, response status and the reason its response is missing.
fn outcomes(out: &[HttpRequest]) -> Vec<(&str, Option<u16>, Option<stats::ResponseMissing>)> {
    out.iter()
        .map(|r| {
            (
                r.target.as_str(),
                r.response.as_ref().map(|r| r.status),
                r.response_missing,
            )
        })
        .collect()
}

#[test]
fn requests_held_for_an_answer_and_parsed_at_a_gap_are_paired_as_before_it() {
    // ws1 + /a in one segment (/a held for ws1's answer), then a lost client segment: the
    // hole times out before the server answers, so the gap resumes /a. /a's bytes came before
    // the lost ones: its answer (the second) is for sure /a's.
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = waiting_engine();
    let mut out = Vec::new();
    for d in c.open() {
        e.on_vxlan_payload(1_000, &d, &mut out);
    }
    let first = c.send(b"GET /ws1 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /a HTTP/1.1\r\n\r\n");
    let _lost = c.send(b"GET /lost HTTP/1.1\r\n\r\n");
    let after = c.send(b"GET /c HTTP/1.1\r\n\r\n");
    e.on_vxlan_payload(2_000, &first, &mut out);
    e.on_vxlan_payload(3_000, &after, &mut out);
    e.on_timer(3_000 + e.config().gap_timeout_us + 1, &mut out);
    let t = 3_000 + e.config().gap_timeout_us + 10;
    e.on_vxlan_payload(
        t,
        &c.respond(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n"),
        &mut out,
    );
    e.on_vxlan_payload(
        t + 1,
        &c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        &mut out,
    );
    e.finish(&mut out);
    let got = outcomes(&out);
    assert_eq!(got[0], ("/ws1", Some(426), None));
    assert_eq!(got[1], ("/a", Some(200), None), "{got:?}");
}

/// An engine whose hold for an Upgrade's answer (and any head) is capped at 256 bytes.
fn small_hold_cap_engine() -> Engine {
    Engine::new(EngineConfig {
        max_header_bytes: 256,
        response_timeout_us: 1_000_000,
        server_wait_us: 1_000_000,
        ..EngineConfig::default()
    })
}

/// 220 bytes of a tunnel after a switch that begin like a request (parsed as HTTP, they
/// would be one): with a held Upgrade request, they pass [`small_hold_cap_engine`]'s cap.
fn tunnel_bytes() -> Vec<u8> {
    let mut tunnel = b"GET /tunnel-bytes HTTP/1.1\r\n\r\n".to_vec();
    tunnel.resize(220, b'x');
    tunnel
}

#[test]
fn a_second_upgrade_past_the_hold_cap_waits_for_its_own_answer_not_the_first_ones() {
    // ws1 held; ws2 then tunnel bytes past the hold cap: the cap resumes (ws2 emitted, and
    // it holds the tunnel bytes for its own answer). ws1's 426 must not decide ws2's hold:
    // ws2's 101 switches, and the tunnel bytes are never parsed as HTTP.
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = small_hold_cap_engine();
    let mut d = c.open();
    d.push(c.send(b"GET /ws1 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"));
    d.push(c.send(b"GET /ws2 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"));
    d.push(c.send(&tunnel_bytes()));
    d.push(c.respond(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"));
    let mut out = run(&mut e, &d);
    e.finish(&mut out);
    let got = outcomes(&out);
    assert_eq!(targets(&out), ["/ws1", "/ws2"], "{got:?}");
    assert_eq!(got[1], ("/ws2", Some(101), None));
    assert_eq!(e.stats().upgraded_flows, 1);
    assert_eq!(e.stats().drops(DropReason::BadRequest), 0);
}

#[test]
fn requests_parsed_from_held_bytes_past_the_cap_are_placed_where_they_were_sent() {
    // As a_second_upgrade_past_the_hold_cap_waits_for_its_own_answer_not_the_first_ones, but
    // the client sends the tunnel bytes after it received both answers (their ACK number
    // covers them, as a WebSocket client does), and the mirror delivers the server's packets
    // after that client segment. ws2 is parsed from held bytes in the call of the tunnel
    // chunk: placed at that chunk (its ACK number past its own 101), its answer would not be
    // its own.
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = small_hold_cap_engine();
    let mut d = c.open();
    d.push(c.send(b"GET /ws1 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"));
    d.push(c.send(b"GET /a HTTP/1.1\r\n\r\nGET /ws2 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"));
    let r1 = c.respond(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n");
    let ra = c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let r2 = c.respond(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    d.push(c.send(&tunnel_bytes()));
    d.push(r1);
    d.push(ra);
    d.push(r2);
    let mut out = run(&mut e, &d);
    e.finish(&mut out);
    let got = outcomes(&out);
    assert_eq!(targets(&out), ["/ws1", "/a", "/ws2"], "{got:?}");
    assert_eq!(got[2], ("/ws2", Some(101), None), "{got:?}");
    assert_eq!(e.stats().upgraded_flows, 1);
}

#[test]
fn health_checks_are_dropped_when_no_output_reads_request_heads() {
    // `keep_request_heads` off (`replay --format summary`) with a health-check rule: the
    // rule still reads the target and the User-Agent; the request that waits for its
    // answer holds neither.
    let mut c = Conn::new(1, "10.0.0.1:40000", "10.0.0.2:80", 1);
    let mut e = Engine::new(EngineConfig {
        keep_request_heads: false,
        health_checks: crate::engine::health_check::HealthCheckRule {
            paths: vec!["/health".into()],
            from: crate::engine::ranges::AddrRanges::parse("10.0.0.0/24").unwrap(),
            user_agents: vec![],
        },
        ..EngineConfig::default()
    });
    let mut d = c.open();
    d.push(c.send(b"GET /health HTTP/1.1\r\nUser-Agent: ELB-HealthChecker/2.0\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    d.push(c.send(b"GET /page HTTP/1.1\r\n\r\n"));
    d.push(c.respond(b"HTTP/1.1 204 No Content\r\n\r\n"));
    let out = run(&mut e, &d);
    assert_eq!(e.stats().drops(DropReason::HealthCheck), 1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response.as_ref().map(|r| r.status), Some(204));
    assert!(out[0].target.is_empty() && out[0].headers.is_empty());
}

#[test]
fn requests_held_for_an_upgrades_answer_go_out_when_their_flow_is_evicted() {
    // An Upgrade and two requests in one burst (the server not seen yet): the two are held
    // for the Upgrade's answer.
    // The flow cap then evicts the connection before any answer: the Upgrade is unanswered,
    // so the held requests are parsed and, complete, go out (their answers missing,
    // `flow_evicted`); only the cut one after them is a drop.
    let mut e = Engine::new(EngineConfig {
        max_flows: 2,
        ..EngineConfig::default()
    });
    let mut out = Vec::new();
    let mut c = Conn::new(1, "10.0.0.1:1000", "10.0.0.2:80", 1);
    let mut d = vec![c.syn()];
    d.push(c.send(
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
          GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /cut HTTP/1.1\r\nX",
    ));
    for (i, p) in d.iter().enumerate() {
        e.on_vxlan_payload(i as u64, p, &mut out);
    }
    // Three more connections: the first is evicted after the busy one's second chance, the
    // next evicts it.
    let mut others: Vec<Conn> = (0..3)
        .map(|i| Conn::new(1, &format!("10.0.0.3:{}", 2000 + i), "10.0.0.2:80", 1))
        .collect();
    for o in &mut others {
        e.on_vxlan_payload(10, &o.syn(), &mut out);
    }
    assert_eq!(e.stats().flows_evicted, 2);
    assert_eq!(e.stats().drops(DropReason::FlowEvicted), 1);
    assert_eq!(
        outcomes(&out),
        [
            ("/ws", None, Some(stats::ResponseMissing::FlowEvicted)),
            ("/a", None, Some(stats::ResponseMissing::FlowEvicted)),
            ("/b", None, Some(stats::ResponseMissing::FlowEvicted)),
        ]
    );
    assert!(out[1].anomalies.contains(stats::Anomaly::UpgradeUnanswered));
    assert_eq!(e.buffered_bytes(), 0);
}
