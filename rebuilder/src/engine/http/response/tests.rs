use super::*;
use proptest::prelude::*;

/// An [`Answering`] that attributes every response (to requests whose methods are queued in
/// `asked`), or none when `unasked`, and records what it is told.
#[derive(Default)]
struct Rec {
    asked: Vec<Asked>,
    unasked: bool,
    heads: Vec<u32>,
    complete: Vec<HttpResponse>,
    lost: Vec<ResponseMissing>,
    desync: Vec<ResponseMissing>,
    switched: usize,
    ended: Vec<ResponseMissing>,
    budget: Budget,
    stats: EngineStats,
}

impl Answering for Rec {
    fn head(&mut self, at: At) -> Option<Asked> {
        self.heads.push(at.seq);
        if self.unasked {
            return None;
        }
        Some(if self.asked.is_empty() {
            Asked::default()
        } else {
            self.asked.remove(0)
        })
    }
    fn complete(&mut self, response: Box<HttpResponse>) {
        self.complete.push(*response);
    }
    fn lost(&mut self, reason: ResponseMissing) {
        self.lost.push(reason);
    }
    fn desync(&mut self, reason: ResponseMissing) {
        self.desync.push(reason);
    }
    fn switched(&mut self) {
        self.switched += 1;
    }
    fn ended(&mut self, reason: ResponseMissing) {
        self.ended.push(reason);
    }
    fn budget(&mut self) -> &mut Budget {
        &mut self.budget
    }
    fn stats(&mut self) -> &mut EngineStats {
        &mut self.stats
    }
}

const LIMITS: ResponseLimits = ResponseLimits {
    max_header_bytes: 8192,
    max_headers: 64,
    max_body_bytes: 1 << 20,
    keep_bodies: true,
    keep_heads: true,
};

struct H {
    p: ResponseParser,
    r: Rec,
    limits: ResponseLimits,
    seq: u32,
}

impl H {
    fn new(start: bool) -> H {
        H::with(start, LIMITS, 1 << 26)
    }
    fn with(start: bool, limits: ResponseLimits, budget: usize) -> H {
        H {
            p: ResponseParser::new(start),
            r: Rec {
                budget: Budget::new(budget),
                ..Rec::default()
            },
            limits,
            seq: 1000,
        }
    }
    fn check(&self) {
        assert_eq!(self.r.budget.used, self.p.held(), "held bytes are charged");
    }
    fn feed(&mut self, b: &[u8]) -> &mut Self {
        let at = At {
            ts_us: 5,
            seq: self.seq,
            ack: Some(1),
        };
        self.seq = self.seq.wrapping_add(b.len() as u32);
        let mut ctx = RespCtx {
            limits: &self.limits,
            answering: &mut self.r,
        };
        self.p.data(at, b, &mut ctx);
        self.check();
        self
    }
    fn gap(&mut self, n: u64) -> &mut Self {
        self.seq = self.seq.wrapping_add(n as u32);
        let mut ctx = RespCtx {
            limits: &self.limits,
            answering: &mut self.r,
        };
        self.p.gap(n, &mut ctx);
        self.check();
        self
    }
    fn end(&mut self, clean: bool) -> &mut Self {
        let mut ctx = RespCtx {
            limits: &self.limits,
            answering: &mut self.r,
        };
        self.p
            .end(clean, ResponseMissing::ConnectionClosed, &mut ctx);
        assert_eq!(self.r.budget.used, 0);
        self
    }
    fn statuses(&self) -> Vec<u16> {
        self.r.complete.iter().map(|r| r.status).collect()
    }
}

#[test]
fn a_response_no_request_asked_for_is_framed_without_holding_its_head_or_body() {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nX-Padding: {}\r\n\r\n",
        "p".repeat(2000)
    );
    let mut h = H::new(true);
    h.r.unasked = true;
    h.feed(head.as_bytes());
    let at_head = h.p.held();
    assert!(at_head < 1000, "its fields are not kept: {at_head}");
    h.feed(&[b'x'; 60_000]);
    assert_eq!(h.p.held(), at_head, "none of its body is held");
    h.feed(&[b'x'; 40_000]);
    h.feed(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        h.r.heads.len(),
        2,
        "the next head is read where the body ends"
    );
    assert!(h.r.complete.is_empty() && h.r.lost.is_empty() && h.r.desync.is_empty());
    assert_eq!(h.p.held(), 0);
    // The same bytes, asked for: the head and the body are held.
    let mut asked = H::new(true);
    asked.feed(head.as_bytes());
    assert!(asked.p.held() > 2000);
    asked.feed(&[b'x'; 60_000]);
    assert!(asked.p.held() >= 62_000);
}

#[test]
fn response_trailers_are_kept_only_when_the_budget_holds_them_else_the_response_is_lost() {
    let mut wire =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n".to_vec();
    for i in 0..20 {
        wire.extend_from_slice(format!("X-T-{i}: {}\r\n", "v".repeat(40)).as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    let run = |budget: usize| {
        let mut h = H::with(true, LIMITS, budget);
        let mut peak = 0;
        for b in &wire {
            h.feed(std::slice::from_ref(b));
            peak = peak.max(h.r.budget.used);
        }
        (h, peak)
    };
    // Room to spare: the trailers are kept.
    let (roomy, peak) = run(1 << 20);
    assert_eq!(roomy.statuses(), [200]);
    assert_eq!(roomy.r.complete[0].headers.len(), 1 + 20);
    // Room for the trailer lines while they are read, not for the fields made of them.
    let (tight, tight_peak) = run(peak + 16);
    assert!(tight_peak <= peak + 16);
    assert!(tight.r.complete.is_empty(), "{:?}", tight.statuses());
    assert_eq!(tight.r.lost, [ResponseMissing::OverBudget]);
    assert_eq!(tight.r.budget.used, 0);
}

#[test]
fn content_length_response_is_complete_with_its_head_and_body() {
    let mut h = H::new(true);
    h.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhel");
    assert!(h.r.complete.is_empty());
    h.feed(b"lo");
    let r = &h.r.complete[0];
    assert_eq!(
        (r.status, r.reason.as_str(), r.version),
        (201, "Created", 1)
    );
    assert_eq!(r.body, b"hello");
    assert_eq!(r.body_len, 5);
    assert_eq!(r.header("x-a"), Some(&b"b"[..]));
    assert_eq!(h.r.heads, [1000]);
}

#[test]
fn chunked_close_delimited_and_bodiless_responses_are_framed() {
    let mut h = H::new(true);
    h.r.asked = vec![
        Asked::default(),
        Asked::default(),
        Asked::default(),
        Asked {
            head: true,
            ..Asked::default()
        },
        Asked::default(),
    ];
    h.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n");
    h.feed(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n");
    h.feed(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
    h.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
    h.feed(b"HTTP/1.0 200 OK\r\n\r\nuntil the end");
    assert_eq!(h.statuses(), [200, 204, 304, 200]);
    assert_eq!(h.r.complete[0].body, b"abcde");
    assert!(h.r.complete[0].chunked);
    assert_eq!(h.r.complete[0].headers.iter().next_back().unwrap().0, "T");
    h.feed(b" of the stream").end(true);
    let last = h.r.complete.last().unwrap();
    assert_eq!(last.body, b"until the end of the stream");
    assert_eq!(last.version, 0);
}

#[test]
fn interim_responses_are_not_the_answer_but_101_is_and_switches() {
    let mut h = H::new(true);
    h.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
    h.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    h.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
    assert_eq!(h.statuses(), [200, 101]);
    assert_eq!(h.r.stats.responses_interim, 2);
    assert_eq!(h.r.switched, 1);
    assert!(h.p.is_done());
}

#[test]
fn a_2xx_to_connect_opens_a_tunnel() {
    let mut h = H::new(true);
    h.r.asked = vec![Asked {
        connect: true,
        ..Asked::default()
    }];
    h.feed(b"HTTP/1.1 200 Connection Established\r\nContent-Length: 99\r\n\r\n\x16\x03\x01");
    assert_eq!(h.statuses(), [200]);
    assert_eq!(h.r.switched, 1);
}

#[test]
fn a_status_line_split_anywhere_parses_like_one_piece() {
    let wire: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    for cut in 1..wire.len() {
        let mut h = H::new(true);
        h.feed(&wire[..cut]).feed(&wire[cut..]);
        assert_eq!(h.statuses(), [404, 200], "cut at {cut}");
    }
}

#[test]
fn forms_clients_accept_are_read_however_the_stream_is_cut() {
    // What curl and Node's client read: several spaces after the version, obs-fold, a chunk
    // extension longer than any size line, more trailer fields than a fixed array held,
    // obs-fold and a space before the colon in a trailer.
    let mut wire: Vec<u8> =
        b"HTTP/1.1  200 OK\r\nX-F: a\r\n  b\r\n\tc\r\nContent-Length: 1\r\n\r\na".to_vec();
    wire.extend(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=");
    wire.extend(std::iter::repeat_n(b'x', 2000));
    wire.extend(b"\r\nabc\r\n0\r\n\r\n");
    wire.extend(b"HTTP/1.1 202 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n");
    for i in 0..70 {
        wire.extend(format!("X-T{i}: {i}\r\n").as_bytes());
    }
    wire.extend(b"\r\n");
    wire.extend(b"HTTP/1.1 203 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n");
    wire.extend(b"X-Fold: a\r\n b\r\nX-Sp : c\r\n\r\n");
    let limits = ResponseLimits {
        max_headers: 100,
        ..LIMITS
    };
    for cut in (1..wire.len()).step_by(7).chain([wire.len() - 1]) {
        let mut h = H::with(true, limits, 1 << 26);
        h.feed(&wire[..cut]).feed(&wire[cut..]);
        assert_eq!(h.statuses(), [200, 201, 202, 203], "cut at {cut}");
        assert!(h.r.desync.is_empty() && h.r.lost.is_empty(), "cut at {cut}");
        let c = &h.r.complete;
        assert_eq!((&c[0].body[..], &c[1].body[..]), (&b"a"[..], &b"abc"[..]));
        assert_eq!(c[2].headers.len(), 1 + 70, "cut at {cut}");
        assert_eq!(c[3].headers.len(), 1 + 2, "cut at {cut}");
        // obs-fold joined with one space (RFC 9112 §5.2), in the head and in trailers.
        assert_eq!(c[0].header("x-f"), Some(&b"a b c"[..]), "cut at {cut}");
        assert_eq!(c[3].header("x-fold"), Some(&b"a b"[..]), "cut at {cut}");
        // Held bytes stay small: the extension was skipped, not held.
        assert!(h.p.held() < 4096, "cut at {cut}: {}", h.p.held());
    }
    // A long line without `;` is no chunk-size line.
    let mut h = H::new(true);
    h.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        .feed(&[b'a'; 1500]);
    assert_eq!(h.r.lost, [ResponseMissing::Malformed]);
    // Nor is a status line with more spaces than any server writes.
    let mut h = H::new(true);
    h.feed(b"HTTP/1.1                    200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(h.statuses().is_empty());
}

#[test]
fn a_gap_inside_a_framed_body_loses_only_that_response() {
    let mut h = H::new(true);
    h.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
    h.gap(3).feed(b"fghij");
    h.feed(b"HTTP/1.1 201 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.r.lost, [ResponseMissing::Gap]);
    assert!(h.r.desync.is_empty());
    assert_eq!(h.statuses(), [201]);
}

#[test]
fn a_gap_across_responses_desyncs_and_the_parser_resyncs_on_a_status_line() {
    let mut h = H::new(true);
    h.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
    h.gap(50)
        .feed(b"tail of something\r\nHTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.r.lost, [ResponseMissing::Gap]);
    assert_eq!(h.r.desync, [ResponseMissing::Gap]);
    assert_eq!(h.statuses(), [500]);
}

#[test]
fn garbage_in_the_server_direction_is_malformed_and_bounded() {
    let mut h = H::new(true);
    h.feed(b"SSH-2.0-OpenSSH\r\n").feed(&[0u8; 5000]);
    assert_eq!(h.r.desync, [ResponseMissing::Malformed]);
    assert!(h.r.complete.is_empty());
    assert_eq!(h.p.held(), 0);
    // A response after the garbage is still found.
    h.feed(b"xxHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.statuses(), [200]);
}

#[test]
fn conflicting_content_lengths_are_malformed() {
    let mut h = H::new(true);
    h.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd");
    assert_eq!(h.r.lost, [ResponseMissing::Malformed]);
    assert_eq!(h.r.desync, [ResponseMissing::Malformed]);
}

#[test]
fn bodies_are_cut_at_the_cap_and_counted_whole() {
    let mut h = H::with(
        true,
        ResponseLimits {
            max_body_bytes: 4,
            ..LIMITS
        },
        1 << 20,
    );
    h.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789");
    let r = &h.r.complete[0];
    assert_eq!(
        (r.body.as_slice(), r.body_len, r.body_truncated),
        (&b"0123"[..], 10, true)
    );
    assert_eq!(h.r.stats.response_bodies_truncated, 1);
}

#[test]
fn a_response_body_is_allocated_as_it_comes_never_past_its_announced_length() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
    let mut h = H::new(true);
    h.feed(head);
    // Nothing is held for the 100,000 bytes the head announces until they come.
    let at_head = h.p.held();
    assert!(at_head < 4096, "{at_head}");
    // Then the body holds at most twice what came, never past its announced end.
    h.feed(&[b'z'; 10_000]);
    let body = h.p.held() - at_head;
    assert!((10_000..=20_000).contains(&body), "{body}");
    h.feed(&[b'z'; 90_000]);
    assert_eq!(h.statuses(), [200]);
    assert_eq!(h.r.complete[0].body.capacity(), 100_000);
    assert_eq!(h.r.budget.used, 0);
    // A chunked or close-delimited body (its end unknown) doubles from what came.
    for (head, n) in [
        (
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2710\r\n"[..],
            3_000,
        ),
        (b"HTTP/1.0 200 OK\r\n\r\n", 5_000),
    ] {
        let mut h = H::new(true);
        h.feed(head);
        let at_head = h.p.held();
        h.feed(&vec![b'c'; n]);
        let body = h.p.held() - at_head;
        assert!((n..=2 * n).contains(&body), "{body}");
    }
    // Within a small budget the body grows as far as it leaves and is cut there, counted.
    let mut h = H::with(true, LIMITS, 8_000);
    h.feed(head).feed(&[b'y'; 100_000]);
    let r = &h.r.complete[0];
    assert!(r.body_truncated && r.body.len() < 8_000 && r.body_len == 100_000);
    assert_eq!(h.r.stats.response_bodies_truncated, 1);
}

#[test]
fn heads_not_kept_leave_out_only_the_reason_and_the_fields_and_charge_less() {
    // Framing read from the fields (length, chunked with a trailer, a 204, a close-delimited
    // last one), fed byte by byte.
    let wire: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabc\
HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\nX-T: t\r\n\r\n\
HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n\
HTTP/1.0 500 Oops\r\n\r\nuntil the end";
    let run = |keep_heads: bool| {
        let mut h = H::with(
            true,
            ResponseLimits {
                keep_heads,
                ..LIMITS
            },
            1 << 20,
        );
        let mut peak = 0;
        for b in wire {
            h.feed(std::slice::from_ref(b));
            peak = peak.max(h.r.budget.used);
        }
        h.end(true);
        (h, peak)
    };
    let (kept, kept_peak) = run(true);
    let (bare, bare_peak) = run(false);
    assert!(
        bare_peak < kept_peak,
        "{bare_peak} charged without heads, {kept_peak} with"
    );
    assert_eq!(kept.r.complete.len(), 4);
    assert_eq!(kept.r.complete[1].reason, "Not Found");
    assert_eq!(
        kept.r.complete[1].header("x-t"),
        Some(&b"t"[..]),
        "the trailer is kept"
    );
    assert!(
        bare.r
            .complete
            .iter()
            .all(|r| r.headers.is_empty() && r.reason.is_empty())
    );
    let mut expected = kept.r.complete.clone();
    for r in &mut expected {
        r.headers.clear();
        r.reason.clear();
    }
    assert_eq!(bare.r.complete, expected);
    assert_eq!(bare.r.stats, kept.r.stats);
}

#[test]
fn bodies_not_kept_are_measured_and_cut_as_if_kept_and_charge_nothing_for_their_bytes() {
    let wire: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyz\
HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwxyz";
    let run = |keep_bodies: bool| {
        let limits = ResponseLimits {
            max_body_bytes: 4,
            keep_bodies,
            ..LIMITS
        };
        let mut h = H::with(true, limits, 1 << 20);
        // Byte by byte: the body is measured across every segment boundary. `mid`: what is
        // charged inside the first body.
        let mut mid = 0;
        for (i, b) in wire.iter().enumerate() {
            h.feed(std::slice::from_ref(b));
            if i == 41 {
                mid = h.r.budget.used;
            }
        }
        (h, mid)
    };
    let (kept, kept_mid) = run(true);
    let (measured, measured_mid) = run(false);
    assert!(
        measured_mid < kept_mid,
        "{measured_mid} charged without the body, {kept_mid} with it"
    );
    let fields = |h: &H| {
        h.r.complete
            .iter()
            .map(|r| {
                (
                    r.status,
                    r.headers.clone(),
                    r.body_len,
                    r.body_truncated,
                    r.chunked,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(fields(&measured), fields(&kept));
    assert_eq!(
        kept.r
            .complete
            .iter()
            .map(|r| r.body.as_slice())
            .collect::<Vec<_>>(),
        [&b"0123"[..], b"abcd", b"xyz", b"wxyz"]
    );
    assert!(measured.r.complete.iter().all(|r| r.body.is_empty()));
    assert_eq!(
        measured
            .r
            .complete
            .iter()
            .map(|r| (r.body_len, r.body_truncated))
            .collect::<Vec<_>>(),
        [(10, true), (5, true), (3, false), (4, false)]
    );
    assert_eq!(measured.r.stats, kept.r.stats);
}

#[test]
fn a_head_that_never_ends_is_held_within_the_cap() {
    let mut h = H::with(
        true,
        ResponseLimits {
            max_header_bytes: 100,
            ..LIMITS
        },
        1 << 20,
    );
    h.feed(b"HTTP/1.1 200 OK\r\n");
    for _ in 0..1000 {
        h.feed(b"X-Long: 0123456789\r\n");
    }
    assert!(h.r.desync.is_empty() && h.r.complete.is_empty());
    assert!(h.p.held() <= 100 + 2048, "{}", h.p.held());
    // A status line longer than the cap is no response.
    let mut h = H::with(
        true,
        ResponseLimits {
            max_header_bytes: 100,
            ..LIMITS
        },
        1 << 20,
    );
    h.feed(b"HTTP/1.1 200 ")
        .feed(&[b'x'; 200])
        .feed(b"\r\n\r\n");
    assert_eq!(h.r.desync, [ResponseMissing::Malformed]);
    assert!(h.statuses().is_empty());
}

/// Cut in two at every 5th byte (and fed whole): what `check` says of each run.
fn every_cut(wire: &[u8], limits: ResponseLimits, check: impl Fn(&H, usize)) {
    for cut in (1..wire.len()).step_by(5).chain([wire.len()]) {
        let mut h = H::with(true, limits, 1 << 26);
        h.feed(&wire[..cut]);
        if cut < wire.len() {
            h.feed(&wire[cut..]);
        }
        check(&h, cut);
    }
}

#[test]
fn a_head_over_the_cap_is_kept_to_it_framed_as_the_whole_head_says_and_the_next_keep_their_places()
{
    // curl reads a head of up to 300 KiB (an 80 KB Set-Cookie); the framing fields may come
    // after the cap, and the responses after it must keep their places.
    let limits = ResponseLimits {
        max_header_bytes: 200,
        ..LIMITS
    };
    let mut wire: Vec<u8> = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nSet-Cookie: ".to_vec();
    wire.extend(std::iter::repeat_n(b'c', 3000));
    wire.extend(b"\r\nX-B: 2\r\nContent-Length: 0005\r\nX-C: 3\r\n\r\nhello");
    wire.extend(b"HTTP/1.1 201 Created\r\nX-D: ");
    wire.extend(std::iter::repeat_n(b'd', 500));
    wire.extend(b"\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    wire.extend(b"HTTP/1.1 404 NF\r\nContent-Length: 2\r\n\r\nno");
    every_cut(&wire, limits, |h, cut| {
        assert_eq!(h.statuses(), [200, 201, 404], "cut at {cut}");
        assert!(h.r.desync.is_empty() && h.r.lost.is_empty(), "cut at {cut}");
        let c = &h.r.complete;
        assert_eq!(
            (&c[0].body[..], &c[1].body[..], &c[2].body[..]),
            (&b"hello"[..], &b"abc"[..], &b"no"[..]),
            "cut at {cut}"
        );
        let names = |r: &HttpResponse| {
            r.headers
                .iter()
                .map(|(n, _)| n.to_owned())
                .collect::<Vec<_>>()
        };
        // The fields within the cap, then the framing fields found past it.
        assert_eq!(names(&c[0]), ["X-A", "Content-Length"], "cut at {cut}");
        assert_eq!(names(&c[1]), ["Transfer-Encoding"], "cut at {cut}");
        assert_eq!(
            [
                c[0].head_truncated,
                c[1].head_truncated,
                c[2].head_truncated
            ],
            [true, true, false]
        );
        assert_eq!(h.r.stats.response_heads_truncated, 2);
        assert!(h.p.held() < 4096, "cut at {cut}: {}", h.p.held());
    });
}

#[test]
fn a_head_read_past_its_cap_is_held_within_the_budget_or_lost_over_budget() {
    let limits = ResponseLimits {
        max_header_bytes: 200,
        ..LIMITS
    };
    let mut wire: Vec<u8> = b"HTTP/1.1 200 OK\r\nX-A: ".to_vec();
    wire.extend([b'a'; 400]);
    wire.extend(b"\r\nContent-Length: 1\r\n\r\nzHTTP/1.1 204 No\r\n\r\n");
    let room = 200 + HeadRest::HELD;
    // (Room for the response being built as well: the head is charged until it is parsed.)
    for (budget, statuses) in [(room + 4096, &[200, 204][..]), (room - 1, &[204][..])] {
        for cut in 1..wire.len() {
            let mut h = H::with(true, limits, budget);
            h.feed(&wire[..cut]).feed(&wire[cut..]);
            assert!(h.r.budget.used <= budget, "cut at {cut}");
            assert_eq!(h.statuses(), statuses, "budget {budget}, cut at {cut}");
            if budget < room {
                // Lost, counted; the parser finds the next response.
                assert_eq!(h.r.desync[0], ResponseMissing::OverBudget, "cut at {cut}");
            }
        }
    }
}

#[test]
fn a_head_with_more_fields_than_the_cap_keeps_the_first_and_its_framing() {
    let limits = ResponseLimits {
        max_headers: 4,
        ..LIMITS
    };
    let mut wire: Vec<u8> = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..10 {
        wire.extend(format!("X-{i}: {i}\r\n  folded\r\n").as_bytes());
    }
    wire.extend(b"Content-Length: 3\r\n\r\nabcHTTP/1.1 204 No Content\r\n\r\n");
    every_cut(&wire, limits, |h, cut| {
        assert_eq!(h.statuses(), [200, 204], "cut at {cut}");
        let r = &h.r.complete[0];
        assert_eq!(r.body, b"abc");
        assert!(r.head_truncated && !h.r.complete[1].head_truncated);
        assert_eq!(r.headers.len(), 4 + 1, "cut at {cut}");
        assert_eq!(r.header("x-3"), Some(&b"3 folded"[..]));
        assert_eq!(r.header("content-length"), Some(&b"3"[..]));
    });
}

#[test]
fn framing_past_the_cap_that_cannot_be_kept_is_malformed() {
    let limits = ResponseLimits {
        max_header_bytes: 100,
        ..LIMITS
    };
    // A Content-Length line longer than any framing field needs, then conflicting lengths
    // either side of the cap.
    let mut long: Vec<u8> = b"HTTP/1.1 200 OK\r\nX-A: ".to_vec();
    long.extend([b'a'; 150]);
    long.extend(b"\r\nContent-Length: 1");
    long.extend([b' '; 300]);
    long.extend(b"\r\n\r\nz");
    let mut conflict: Vec<u8> = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: ".to_vec();
    conflict.extend([b'a'; 150]);
    conflict.extend(b"\r\nContent-Length: 2\r\n\r\nzz");
    for wire in [long, conflict] {
        every_cut(&wire, limits, |h, cut| {
            assert!(h.statuses().is_empty(), "cut at {cut}");
            assert_eq!(h.r.desync, [ResponseMissing::Malformed], "cut at {cut}");
        });
    }
}

#[test]
fn framing_fields_are_read_as_curl_reads_them() {
    // Each case on a keep-alive connection between two ordinary responses: the status and
    // body (or none: malformed) curl 7.88 read, and whether the next response keeps its place.
    let next = b"HTTP/1.1 204 No Content\r\n\r\n";
    let cases: [(&[u8], Option<&[u8]>); 6] = [
        // Leading zeros, however many.
        (b"Content-Length: 00000000000000000005\r\n\r\nhello", Some(b"hello")),
        // Transfer-Encoding overrides a Content-Length that does not parse.
        (
            b"Transfer-Encoding: chunked\r\nContent-Length: 99999999999999999999\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Some(b"hello"),
        ),
        // Only a value's first line frames: a folded length is its first line ...
        (b"Content-Length: 5\r\n 5\r\n\r\nhello", Some(b"hello")),
        // ... and a folded coding list ends with gzip: until the close.
        (
            b"Transfer-Encoding: gzip,\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            None,
        ),
        // A space before the colon: not a framing field (until the close).
        (b"Content-Length : 5\r\n\r\nhello", None),
        // A bare CR in a value is dropped, as curl shows it.
        (b"X-A: a\rb\r\nContent-Length: 5\r\n\r\nhello", Some(b"hello")),
    ];
    for (i, (fields, body)) in cases.into_iter().enumerate() {
        let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
        wire.extend(fields);
        wire.extend(next);
        every_cut(&wire, LIMITS, |h, cut| match body {
            Some(body) => {
                assert_eq!(h.statuses(), [200, 204], "case {i}, cut at {cut}");
                assert_eq!(h.r.complete[0].body, body, "case {i}, cut at {cut}");
            }
            None => {
                // Close-delimited: the rest of the stream is its body.
                assert!(h.statuses().is_empty() && h.r.desync.is_empty(), "case {i}");
            }
        });
    }
    let mut h = H::new(true);
    h.feed(b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.r.complete[0].header("x-a"), Some(&b"ab"[..]));
}

#[test]
fn a_reason_phrase_that_is_not_utf8_is_read_as_latin1() {
    let mut h = H::new(true);
    h.feed(b"HTTP/1.1 200 \xd6k\r\nContent-Length: 0\r\n\r\nHTTP/1.1  404\t\xe9\r\n\r\n");
    assert_eq!(h.statuses(), [200]);
    assert_eq!(h.r.complete[0].reason, "\u{d6}k");
    h.end(true);
    assert_eq!(h.statuses(), [200, 404]);
    assert_eq!(h.r.complete[1].reason, "\u{e9}");
}

#[test]
fn a_tab_after_the_status_code_is_read_as_curl_reads_it() {
    let wire = b"HTTP/1.1 200\tOK\r\nContent-Length: 1\r\n\r\naHTTP/1.1  404\tNot Found\r\nContent-Length: 0\r\n\r\n";
    every_cut(wire, LIMITS, |h, cut| {
        assert_eq!(h.statuses(), [200, 404], "cut at {cut}");
        assert_eq!(h.r.complete[0].reason, "OK");
        assert_eq!(h.r.complete[1].reason, "Not Found");
    });
}

#[test]
fn the_end_of_the_stream_loses_a_response_in_progress() {
    let mut h = H::new(true);
    h.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        .end(true);
    assert_eq!(h.r.lost, [ResponseMissing::ConnectionClosed]);
    assert_eq!(h.r.ended, [ResponseMissing::ConnectionClosed]);
}

#[test]
fn a_mid_stream_join_syncs_on_the_first_status_line() {
    let mut h = H::new(false);
    h.feed(b"dy>...</html>HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.statuses(), [302]);
    assert!(h.r.desync.is_empty());
}

proptest! {
    /// Any segmentation of a stream of responses gives the same responses, and the budget
    /// always matches what the parser holds.
    #[test]
    fn any_split_points_parse_like_one_piece(
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let wire: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\nHTTP/1.1 404 NF\r\nContent-Length: 2\r\n\r\nnoHTTP/1.0 500 x\r\n\r\nrest";
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len())).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        points.dedup();
        let mut h = H::new(true);
        for w in points.windows(2) {
            h.feed(&wire[w[0]..w[1]]);
        }
        h.end(true);
        prop_assert_eq!(h.statuses(), [200, 404, 500]);
        prop_assert_eq!(&h.r.complete[0].body, b"wiki");
        prop_assert_eq!(&h.r.complete[2].body, b"rest");
    }

    /// Arbitrary bytes and gaps never panic and never leave bytes uncharged.
    #[test]
    fn arbitrary_input_is_bounded(
        ops in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..200).prop_map(Ok),
                (1u64..300).prop_map(Err),
            ],
            0..20),
    ) {
        let mut h = H::with(true, ResponseLimits { max_header_bytes: 300, max_headers: 8, max_body_bytes: 64, keep_bodies: true, keep_heads: true }, 4096);
        for op in &ops {
            match op {
                Ok(b) => { h.feed(b); }
                Err(n) => { h.gap(*n); }
            }
        }
        h.end(false);
    }
}
