use std::net::SocketAddr;

use proptest::prelude::*;

use super::framing::parse_chunk_size;
use super::resync::{Line, request_line};
use super::*;
use crate::engine::health_check::HealthCheckRule;
use crate::testkit::ParserHarness as H;

const LIMITS: HttpLimits = H::LIMITS;

/// A parser with these caps and a 64 MiB budget.
fn with(start: bool, limits: HttpLimits) -> H {
    H::with(start, limits, 1 << 26)
}

#[test]
fn simple_get_is_emitted_with_headers_in_order() {
    let mut h = H::new(true);
    h.feed(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 2\r\nhost: dup\r\n\r\n");
    assert_eq!(h.out.len(), 1);
    let r = &h.out[0];
    assert_eq!(
        (r.method.as_str(), r.target.as_str(), r.version),
        ("GET", "/a?b=1", 1)
    );
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Host", "X-Two", "host"]);
    assert_eq!(r.header("x-two"), Some(&b"2"[..]));
    assert_eq!(r.vni, 7);
    assert!(r.body.is_empty() && !r.chunked && !r.body_truncated);
}

#[test]
fn content_length_body_is_collected_across_pieces() {
    let mut h = H::new(true);
    h.feed(b"POST /p HTTP/1.0\r\nContent-Length: 10\r\n\r\n0123");
    assert!(h.out.is_empty());
    h.feed(b"456789GET /next HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/p", "/next"]);
    assert_eq!(h.out[0].body, b"0123456789");
    assert_eq!(h.out[0].version, 0);
}

#[test]
fn chunked_body_is_decoded_and_trailers_are_appended() {
    let mut h = H::new(true);
    h.feed(
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(h.out.len(), 1);
    let r = &h.out[0];
    assert_eq!(r.body, b"hello world");
    assert!(r.chunked);
    assert_eq!(r.headers.last().unwrap().0, "X-Trailer");
}

#[test]
fn chunk_terminator_split_across_segments_completes_the_request() {
    let stream: &[u8] =
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    for cut in 1..stream.len() {
        let mut h = H::new(true);
        h.feed(&stream[..cut]).feed(&stream[cut..]);
        assert_eq!(h.out.len(), 1, "cut at {cut}");
        assert_eq!(h.out[0].body, b"abc");
    }
}

#[test]
fn pipelined_requests_are_all_emitted() {
    let mut h = H::new(true);
    h.feed(b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET /3 HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/1", "/2", "/3"]);
}

#[test]
fn gap_inside_a_head_drops_that_message_and_resyncs() {
    let mut h = H::new(true);
    h.feed(b"GET /lost HTTP/1.1\r\nHo");
    h.gap(10);
    h.feed(b"junk\r\n\r\nGET /ok HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/ok"]);
    assert_eq!(h.stats.drops(DropReason::MessageGap), 1);
}

#[test]
fn gap_inside_a_content_length_body_skips_exactly_that_body() {
    let mut h = H::new(true);
    h.feed(b"POST /lost HTTP/1.1\r\nContent-Length: 20\r\n\r\n01234");
    h.gap(10);
    // The remaining 5 body bytes begin with something that looks like a request line
    // fragment; the parser knows where the body ends.
    h.feed(b"GET /GET /x HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/x"]);
    assert_eq!(h.stats.drops(DropReason::MessageGap), 1);
}

#[test]
fn gap_between_messages_loses_nothing() {
    let mut h = H::new(true);
    h.feed(b"GET /1 HTTP/1.1\r\n\r\n");
    h.gap(30);
    h.feed(b"GET /3 HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/1", "/3"]);
    assert_eq!(h.stats.total_drops(), 0);
}

#[test]
fn joining_mid_stream_syncs_on_the_next_request_line() {
    let mut h = H::new(false);
    h.feed(b"ody of an earlier request\r\nwith GET lines HTTP/1.1 inside\r\n");
    h.feed(b"PUT /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(h.targets(), ["/x"]);
    assert_eq!(h.out[0].body, b"ok");
}

#[test]
fn request_line_split_while_syncing_is_found() {
    let mut h = H::new(false);
    h.feed(b"xx\r\nDEL")
        .feed(b"ETE /d HT")
        .feed(b"TP/1.1\r")
        .feed(b"\n\r\n");
    assert_eq!(h.targets(), ["/d"]);
}

#[test]
fn after_lost_bytes_a_known_method_is_preferred_to_a_longer_token() {
    let mut h = H::new(false);
    h.feed(b"tail of a body\nAPUT /a HTTP/1.1\r\n\r\n");
    h.gap(5);
    h.feed(b"xyzAP").feed(b"UT /b HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/a", "/b"]);
    assert!(h.out.iter().all(|r| r.method == "PUT"));
}

#[test]
fn method_complete_at_the_end_of_a_segment_is_kept_whole() {
    let mut h = H::new(false);
    h.feed(b"\x01\x02OPTIONS").feed(b" /o HTTP/1.1\r\n\r\n");
    assert_eq!(h.out[0].method, "OPTIONS");
}

#[test]
fn lost_first_letters_of_a_method_never_yield_a_request() {
    for cut in 1..4 {
        let line = b"POST /p HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        let mut h = H::new(true);
        h.gap(9);
        // The remainder arrives in pieces: "OS", "T /p ...", etc.
        h.feed(&line[cut..cut + 2]).feed(&line[cut + 2..]);
        assert!(h.out.is_empty(), "cut {cut}: {:?}", h.targets());
    }
}

#[test]
fn failed_candidate_line_does_not_hide_a_request_line_after_it() {
    let mut h = H::new(false);
    h.feed(b"\x01GE")
        .feed(b"nerated data GET /real HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/real"]);
}

#[test]
fn tls_client_hello_at_stream_start_makes_the_flow_opaque() {
    let mut h = H::new(true);
    h.feed(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    h.feed(b"GET / HTTP/1.1\r\n\r\n");
    assert!(h.out.is_empty());
    assert_eq!(h.parser.state(), ParserState::Opaque);
    assert_eq!(h.stats.opaque_flows, 1);
}

#[test]
fn http2_preface_makes_the_flow_opaque() {
    let mut h = H::new(true);
    h.feed(b"PRI * HTT").feed(b"P/2.0\r\n\r\nSM\r\n\r\n");
    assert_eq!(h.parser.state(), ParserState::Opaque);
}

#[test]
fn response_stream_is_not_parsed_as_requests() {
    let mut h = H::new(true);
    h.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    assert!(h.out.is_empty());
    assert_eq!(h.parser.state(), ParserState::Opaque);
}

#[test]
fn upgrade_request_is_emitted_then_the_flow_is_ignored() {
    let mut h = H::new(true);
    h.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x85GET / HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/ws"]);
    assert_eq!(h.parser.state(), ParserState::Upgraded);
    let mut h = H::new(true);
    h.feed(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    );
    assert_eq!(h.targets(), ["example.com:443"]);
    assert_eq!(h.stats.upgraded_flows, 1);
}

#[test]
fn expect_continue_body_arriving_later_is_attached() {
    let mut h = H::new(true);
    h.feed(b"PUT /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert!(h.out.is_empty());
    h.feed(b"abc");
    assert_eq!(h.out[0].body, b"abc");
}

#[test]
fn expect_continue_head_without_body_is_emitted_at_a_clean_end() {
    let mut h = H::new(true);
    h.feed(b"PUT /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    h.end();
    assert_eq!(h.targets(), ["/e"]);
    assert!(h.out[0].body.is_empty());
}

#[test]
fn expect_continue_chunked_head_without_body_is_emitted_at_a_clean_end() {
    let mut h = H::new(true);
    h.feed(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
    h.end();
    assert_eq!(h.targets(), ["/e"]);
    let mut h = H::new(true);
    h.feed(
        b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab",
    );
    h.end();
    assert!(h.out.is_empty());
    assert_eq!(h.stats.drops(DropReason::MessageIncomplete), 1);
}

#[test]
fn message_cut_by_the_end_of_stream_is_dropped_and_counted() {
    let mut h = H::new(true);
    h.feed(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nab");
    h.end();
    assert!(h.out.is_empty());
    assert_eq!(h.stats.drops(DropReason::MessageIncomplete), 1);
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn proxy_v1_header_is_stripped_and_names_the_client() {
    let mut h = H::new(true);
    h.feed(b"PROXY TCP4 198.51.100.22 10.0.0.2 35646 80\r\nGET /a HTTP/1.1\r\n\r\n");
    h.feed(b"GET /b HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/a", "/b"]);
    for r in &h.out {
        assert_eq!(r.client, sa("198.51.100.22:35646"));
        assert_eq!(r.peer, sa("10.0.0.1:40000"));
    }
    assert_eq!(h.stats.proxy_headers, 1);
}

#[test]
fn proxy_header_split_byte_by_byte_is_recognised() {
    let tlvs = [0x02, 0x00, 0x04, b'h', b'o', b's', b't'];
    let mut wire = proxy::encode_v2(sa("[2001:db8::7]:1111"), sa("[2001:db8::2]:80"), &tlvs);
    wire.extend_from_slice(b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
    let mut h = H::new(true);
    for b in &wire {
        h.feed(std::slice::from_ref(b));
    }
    assert_eq!(h.targets(), ["/p"]);
    assert_eq!(h.out[0].client, sa("[2001:db8::7]:1111"));
    assert_eq!(h.out[0].body, b"hi");
    assert_eq!(h.budget.used, 0);
}

#[test]
fn proxy_v2_local_keeps_the_tcp_peer_as_client() {
    let mut h = H::new(true);
    let mut wire = proxy::encode_v2_local();
    wire.extend_from_slice(b"GET /hc HTTP/1.1\r\n\r\n");
    h.feed(&wire);
    assert_eq!(h.targets(), ["/hc"]);
    assert_eq!(h.out[0].client, h.out[0].peer);
    assert_eq!(h.stats.proxy_headers, 1);
}

#[test]
fn methods_that_look_like_a_proxy_header_are_plain_requests() {
    let mut h = H::new(true);
    h.feed(b"PRO")
        .feed(b"PFIND /d HTTP/1.1\r\n\r\nPUT /e HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.targets(), ["/d", "/e"]);
    assert_eq!(h.stats.proxy_headers, 0);
    assert_eq!(h.stats.total_drops(), 0);
    let mut h = H::new(true);
    h.feed(b"\r\n")
        .feed(b"GET /after-empty-line HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/after-empty-line"]);
}

#[test]
fn malformed_proxy_line_is_counted_and_plain_http_after_it_is_parsed() {
    let mut h = H::new(true);
    h.feed(b"PROXY TCP4 300.1.1.1 10.0.0.2 1 80\r\nGET /x HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/x"]);
    assert_eq!(h.out[0].client, h.out[0].peer);
    assert_eq!(h.stats.drops(DropReason::ProxyHeaderMalformed), 1);
    // After a malformed header, bytes that are not a request line make the flow opaque.
    let mut h = H::new(true);
    h.feed(b"PROXY TCP9 x\r\n\x16\x03\x01\x02\x00");
    assert_eq!(h.parser.state(), ParserState::Opaque);
    assert_eq!(h.stats.drops(DropReason::ProxyHeaderMalformed), 1);
}

#[test]
fn unbounded_bad_proxy_header_only_yields_clear_request_lines() {
    let mut h = H::new(true);
    let mut wire = proxy::V2_SIGNATURE.to_vec();
    wire.extend_from_slice(&[0x31, 0x11, 0, 12]); // version 3
    wire.extend_from_slice(b"garbage GET /no HTTP/1.1 no\r\nGET /yes HTTP/1.1\r\n\r\n");
    h.feed(&wire);
    assert_eq!(h.targets(), ["/yes"]);
    assert_eq!(h.stats.drops(DropReason::ProxyHeaderMalformed), 1);
}

#[test]
fn truncated_proxy_header_is_counted_at_a_gap_or_the_end() {
    let mut h = H::new(true);
    h.feed(b"PROXY TCP4 1.2.3.4").end();
    assert_eq!(h.stats.drops(DropReason::ProxyHeaderMalformed), 1);
    let mut h = H::new(true);
    h.feed(b"PROXY TCP4 1.2.3.4").gap(30);
    h.feed(b"x\r\nGET /later HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/later"]);
    assert_eq!(h.stats.drops(DropReason::ProxyHeaderMalformed), 1);
    assert_eq!(h.out[0].client, h.out[0].peer);
}

#[test]
fn a_proxy_header_mid_stream_is_not_interpreted() {
    // Joined mid-way: the header was before the first byte seen.
    let mut h = H::new(false);
    h.feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET /m HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/m"]);
    assert_eq!(h.out[0].client, h.out[0].peer);
    assert_eq!(h.stats.proxy_headers, 0);
}

#[test]
fn health_checks_are_dropped_and_counted_other_requests_kept() {
    let mut h = with(
        true,
        HttpLimits {
            health_checks: HealthCheckRule::default(),
            ..LIMITS
        },
    );
    h.feed(b"GET /health HTTP/1.1\r\nUser-Agent: ELB-HealthChecker/2.0\r\n\r\n");
    h.feed(b"GET /page HTTP/1.1\r\nUser-Agent: Mozilla/5.0\r\n\r\n");
    h.feed(
        b"POST /health HTTP/1.1\r\nUser-Agent: ELB-HealthChecker/2.0\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!(h.targets(), ["/page", "/health"]);
    assert_eq!(h.stats.drops(DropReason::HealthCheck), 1);
    assert_eq!(h.stats.requests, 2);
    assert_eq!(
        h.parser.emitted(),
        3,
        "a health check still proves the direction carries requests"
    );
}

#[test]
fn body_over_the_cap_is_cut_and_flagged() {
    let mut h = with(
        true,
        HttpLimits {
            max_body_bytes: 4,
            ..LIMITS
        },
    );
    h.feed(b"POST /big HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789GET /n HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/big", "/n"]);
    assert_eq!(h.out[0].body, b"0123");
    assert!(h.out[0].body_truncated);
    assert_eq!(h.stats.bodies_truncated, 1);
}

#[test]
fn head_over_the_cap_is_dropped_and_counted() {
    let mut h = with(
        true,
        HttpLimits {
            max_header_bytes: 64,
            ..LIMITS
        },
    );
    let big = format!(
        "GET / HTTP/1.1\r\nX: {}\r\n\r\nGET /ok HTTP/1.1\r\n\r\n",
        "a".repeat(100)
    );
    h.feed(big.as_bytes());
    assert_eq!(h.targets(), ["/ok"]);
    assert_eq!(h.stats.drops(DropReason::HeadTooLarge), 1);
}

#[test]
fn too_many_headers_drop_the_message() {
    let mut h = with(
        true,
        HttpLimits {
            max_headers: 2,
            ..LIMITS
        },
    );
    h.feed(b"GET /x HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\nGET /y HTTP/1.1\r\nA: 1\r\n\r\n");
    assert_eq!(h.targets(), ["/y"]);
    assert_eq!(h.stats.drops(DropReason::TooManyHeaders), 1);
}

#[test]
fn conflicting_framing_is_a_bad_request() {
    let mut h = H::new(true);
    h.feed(b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
    h.feed(b"\r\nPOST /y HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert!(h.out.is_empty());
    assert_eq!(h.stats.drops(DropReason::BadRequest), 2);
}

#[test]
fn leading_empty_lines_between_requests_are_skipped() {
    let mut h = H::new(true);
    h.feed(b"GET /1 HTTP/1.1\r\n\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
    assert_eq!(h.targets(), ["/1", "/2"]);
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    let mut h = H::new(true);
    h.feed(b"GET /lf HTTP/1.1\nHost: x\n\n");
    assert_eq!(h.targets(), ["/lf"]);
}

#[test]
fn request_line_check_accepts_only_request_lines() {
    assert_eq!(request_line(b"GET / HTTP/1.1\r\n", true), Line::Yes);
    assert_eq!(request_line(b"GET / HTTP/1.0\n", true), Line::Yes);
    assert_eq!(request_line(b"GET / HTTP/1.1", true), Line::More);
    assert_eq!(request_line(b"GE", true), Line::More);
    assert_eq!(request_line(b"get / HTTP/1.1\r\n", true), Line::No);
    assert_eq!(request_line(b"get / HTTP/1.1\r\n", false), Line::Yes);
    assert_eq!(request_line(b"HTTP/1.1 200 OK\r\n", false), Line::No);
    assert_eq!(request_line(b"GET / HTTP/2.0\r\n", true), Line::No);
    assert_eq!(request_line(b"GET  / HTTP/1.1\r\n", true), Line::No);
}

#[test]
fn chunk_size_lines_are_parsed_strictly() {
    assert_eq!(parse_chunk_size(b"1a\r\n"), Some(26));
    assert_eq!(parse_chunk_size(b"1A;name=v\r\n"), Some(26));
    assert_eq!(parse_chunk_size(b"0\n"), Some(0));
    assert_eq!(parse_chunk_size(b"\r\n"), None);
    assert_eq!(parse_chunk_size(b"zz\r\n"), None);
    assert_eq!(parse_chunk_size(b"1 2\r\n"), None);
}

/// One request of a generated stream, with its wire form.
#[derive(Debug, Clone)]
pub(crate) struct GenRequest {
    pub method: &'static str,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunks: Option<Vec<usize>>,
}

impl GenRequest {
    pub(crate) fn wire(&self) -> Vec<u8> {
        let mut w = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (n, v) in &self.headers {
            w.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        match &self.chunks {
            Some(sizes) => {
                w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = &self.body[..];
                for &s in sizes {
                    let s = s.min(rest.len());
                    if s == 0 {
                        continue;
                    }
                    w.extend_from_slice(format!("{s:x}\r\n").as_bytes());
                    w.extend_from_slice(&rest[..s]);
                    w.extend_from_slice(b"\r\n");
                    rest = &rest[s..];
                }
                if !rest.is_empty() {
                    w.extend_from_slice(format!("{:x}\r\n", rest.len()).as_bytes());
                    w.extend_from_slice(rest);
                    w.extend_from_slice(b"\r\n");
                }
                w.extend_from_slice(b"0\r\n\r\n");
            }
            None => {
                if !self.body.is_empty() {
                    w.extend_from_slice(
                        format!("Content-Length: {}\r\n", self.body.len()).as_bytes(),
                    );
                }
                w.extend_from_slice(b"\r\n");
                w.extend_from_slice(&self.body);
            }
        }
        w
    }

    pub(crate) fn matches(&self, r: &HttpRequest) -> bool {
        r.method == self.method
            && r.target == self.target
            && r.body == self.body
            && r.chunked == self.chunks.is_some()
            && r.headers.len() >= self.headers.len()
            && self
                .headers
                .iter()
                .zip(&r.headers)
                .all(|((n, v), (rn, rv))| n == rn && v.as_bytes() == rv.as_slice())
    }
}

pub(crate) fn gen_request() -> impl Strategy<Value = GenRequest> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        "/[a-z0-9/]{0,20}(\\?[a-z]=[0-9]{1,3})?",
        proptest::collection::vec(("X-[A-Za-z]{1,8}", "[ -~]{0,30}"), 0..5),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of(proptest::collection::vec(1usize..80, 1..5)),
    )
        .prop_map(|(method, target, headers, body, chunks)| GenRequest {
            method,
            target,
            headers: headers
                .into_iter()
                .map(|(n, v)| (n, v.trim().to_owned()))
                .collect(),
            body,
            chunks,
        })
}

proptest! {
    /// The parser driven incrementally equals parsing in one piece, whatever the split points.
    #[test]
    fn any_split_points_parse_like_one_piece(
        reqs in proptest::collection::vec(gen_request(), 1..4),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let wire: Vec<u8> = reqs.iter().flat_map(|r| r.wire()).collect();
        let mut whole = H::new(true);
        whole.feed(&wire).end();
        prop_assert_eq!(whole.out.len(), reqs.len());
        for (g, r) in reqs.iter().zip(&whole.out) {
            prop_assert!(g.matches(r), "{:?} vs {:?}", g, r);
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len())).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut split = H::new(true);
        for w in points.windows(2) {
            split.feed(&wire[w[0]..w[1]]);
        }
        split.end();
        prop_assert_eq!(&split.out, &whole.out);
        prop_assert_eq!(split.stats, whole.stats);
    }

    /// Joined mid-stream at any point, every request that starts after the join point is
    /// found, and nothing else is emitted.
    #[test]
    fn joining_mid_stream_recovers_every_later_request(
        reqs in proptest::collection::vec(gen_request(), 2..5),
        join in any::<prop::sample::Index>(),
    ) {
        let wires: Vec<Vec<u8>> = reqs.iter().map(|r| r.wire()).collect();
        let wire: Vec<u8> = wires.concat();
        let at = join.index(wire.len());
        let mut starts = Vec::new();
        let mut pos = 0;
        for w in &wires {
            starts.push(pos);
            pos += w.len();
        }
        let mut h = H::new(false);
        h.feed(&wire[at..]).end();
        let expected: Vec<&GenRequest> = reqs
            .iter()
            .zip(&starts)
            .filter(|(_, s)| **s >= at)
            .map(|(r, _)| r)
            .collect();
        // A body may contain a request line; bodies here are random bytes, so a false
        // match is possible only in theory. Every expected request must be there, in order.
        let mut it = h.out.iter();
        for g in expected {
            prop_assert!(it.any(|r| g.matches(r)), "missing {:?} at {} in {:?}: {:?}", g, at, String::from_utf8_lossy(&wire), h.out);
        }
    }
}
