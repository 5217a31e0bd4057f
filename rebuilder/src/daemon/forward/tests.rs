use std::time::Duration;

use super::upstream::parse_extra_header;
use super::*;
use crate::daemon::telemetry::RequestDropReason;
use crate::engine::request::HttpRequest;
use crate::engine::stats::{Anomalies, Anomaly};

fn cfg() -> ForwardConfig {
    ForwardConfig {
        upstream: Upstream::parse("http://127.0.0.1:9/").unwrap(),
        forwarded_for: Some("x-forwarded-for".into()),
        extra_headers: vec![],
        queue_capacity: 4,
        queue_max_bytes: 1 << 20,
        concurrency: 2,
        connect_timeout: Duration::from_millis(100),
        request_timeout: Duration::from_millis(500),
        pool_idle_timeout: Duration::from_secs(1),
        failure_backoff: Duration::from_millis(10),
        probe_interval: Duration::from_secs(1),
        pipeline_depth: 8,
        linger: Duration::from_millis(1),
        ca_certs: Vec::new(),
        source_headers: None,
    }
}
fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpRequest {
    HttpRequest {
        ts_us: 1,
        vni: 7,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
        ..HttpRequest::new(
            method,
            target,
            "10.1.2.3:40000".parse().unwrap(),
            "10.9.9.9:80".parse().unwrap(),
        )
    }
}

/// The bytes written for `r` with `c`, as text.
fn wire_with(r: &HttpRequest, c: &ForwardConfig) -> String {
    let mut out = Vec::new();
    write_request(r, c, &mut out).expect("written");
    String::from_utf8_lossy(&out).into_owned()
}

fn wire(r: &HttpRequest) -> String {
    wire_with(r, &cfg())
}

#[test]
fn names_order_values_and_repeated_fields_go_out_as_received() {
    let r = req(
        "GET",
        "/a/b?c=d",
        &[
            ("host", "shop.example"),
            ("USER-AGENT", "curl"),
            ("X-Dup", "1"),
            ("Accept", "*/*"),
            ("x-dup", "2"),
        ],
        b"",
    );
    assert_eq!(
        wire(&r),
        "GET /a/b?c=d HTTP/1.1\r\nhost: shop.example\r\nUSER-AGENT: curl\r\nX-Dup: 1\r\n\
         Accept: */*\r\nx-dup: 2\r\nx-forwarded-for: 10.1.2.3\r\n\r\n"
    );
}

#[test]
fn connection_is_renamed_and_its_tokens_delete_nothing() {
    let r = req(
        "GET",
        "/",
        &[
            ("Host", "h"),
            ("Connection", "keep-alive, Cookie, X-Secret-Hop"),
            ("Cookie", "session=1"),
            ("Keep-Alive", "timeout=5"),
            ("X-Secret-Hop", "1"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
            ("Proxy-Connection", "keep-alive"),
        ],
        b"",
    );
    let w = wire(&r);
    assert!(
        w.contains("\r\nx-rebuilder-connection: keep-alive, Cookie, X-Secret-Hop\r\n"),
        "{w}"
    );
    for kept in [
        "Cookie: session=1",
        "Keep-Alive: timeout=5",
        "X-Secret-Hop: 1",
        "TE: trailers",
        "Upgrade: websocket",
        "Proxy-Connection: keep-alive",
    ] {
        assert!(
            w.contains(&format!("\r\n{kept}\r\n")),
            "{kept} missing: {w}"
        );
    }
    assert!(!w.to_ascii_lowercase().contains("\r\nconnection:"), "{w}");
}

#[test]
fn a_chunked_body_is_reframed_in_place_and_trailers_travel_as_markers() {
    let mut r = req(
        "POST",
        "/up",
        &[
            ("Host", "h"),
            ("Transfer-Encoding", "chunked"),
            ("Trailer", "X-Sum"),
            ("Content-Type", "text/plain"),
        ],
        b"hello world",
    );
    r.chunked = true;
    r.trailers = vec![
        ("X-Sum", &b"42"[..]),
        ("Host", b"evil"),
        ("Bad Name: x", b"a\rb"),
    ]
    .into();
    assert_eq!(
        wire(&r),
        "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nTrailer: X-Sum\r\n\
         Content-Type: text/plain\r\nx-forwarded-for: 10.1.2.3\r\n\
         x-rebuilder-trailer-X-Sum: 42\r\nx-rebuilder-trailer-Host: evil\r\n\
         x-rebuilder-trailer-Bad%20Name%3A%20x: a%0Db\r\n\r\nhello world"
    );
}

#[test]
fn content_length_is_recomputed_in_place_and_a_cut_body_is_marked() {
    let mut r = req(
        "POST",
        "/",
        &[("Content-Length", "100"), ("Host", "h")],
        b"cut",
    );
    r.body_truncated = true;
    let w = wire(&r);
    assert!(
        w.starts_with("POST / HTTP/1.1\r\nContent-Length: 3\r\nHost: h\r\n"),
        "{w}"
    );
    assert!(
        w.contains("\r\nx-rebuilder-body-truncated: true\r\n"),
        "{w}"
    );
    assert!(w.ends_with("\r\n\r\ncut"));
    let get = wire(&req("GET", "/", &[("Host", "h")], b""));
    assert!(!get.contains("Content-Length"), "{get}");
    let empty = wire(&req(
        "POST",
        "/",
        &[("Host", "h"), ("Content-Length", "0")],
        b"",
    ));
    assert!(empty.contains("\r\nContent-Length: 0\r\n"), "{empty}");
    let no_length = wire(&req("POST", "/", &[("Host", "h")], b"xy"));
    assert!(
        no_length.contains("\r\nContent-Length: 2\r\n"),
        "{no_length}"
    );
}

#[test]
fn the_client_ip_is_appended_to_the_last_forwarded_for_in_place() {
    let r = req(
        "GET",
        "/",
        &[
            ("Host", "h"),
            ("X-Forwarded-For", "1.1.1.1"),
            ("Accept", "*/*"),
            ("x-forwarded-for", "2.2.2.2"),
            ("X-After", "1"),
        ],
        b"",
    );
    assert_eq!(
        wire(&r),
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nAccept: */*\r\n\
         x-forwarded-for: 2.2.2.2, 10.1.2.3\r\nX-After: 1\r\n\r\n"
    );
}

#[test]
fn forwarded_for_can_be_renamed_or_turned_off() {
    let mut c = cfg();
    c.forwarded_for = Some("X-Real-Client".into());
    let w = wire_with(&req("GET", "/", &[("Host", "h")], b""), &c);
    assert!(w.contains("\r\nX-Real-Client: 10.1.2.3\r\n"), "{w}");
    assert!(!w.contains("x-forwarded-for"));
    c.forwarded_for = None;
    let w = wire_with(&req("GET", "/", &[("Host", "h")], b""), &c);
    assert_eq!(w, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
}

#[test]
fn ipv6_clients_and_the_proxy_protocol_client_go_into_forwarded_for() {
    let mut r = req("GET", "/", &[("Host", "h")], b"");
    r.client = "[2001:db8::5]:5555".parse().unwrap();
    assert!(wire(&r).contains("x-forwarded-for: 2001:db8::5\r\n"));
    // The longest address text there is (39 bytes).
    r.client = "[fedc:ba98:7654:3210:fedc:ba98:7654:3211]:1"
        .parse()
        .unwrap();
    assert!(wire(&r).contains("x-forwarded-for: fedc:ba98:7654:3210:fedc:ba98:7654:3211\r\n"));
    r.client = "198.51.100.7:40000".parse().unwrap();
    r.peer = "10.0.5.9:61000".parse().unwrap();
    assert!(wire(&r).contains("x-forwarded-for: 198.51.100.7\r\n"));
}

#[test]
fn extra_headers_replace_request_headers_of_the_same_name() {
    let mut c = cfg();
    c.extra_headers = vec![parse_extra_header("X-Tenant: blue").unwrap()];
    let r = req("GET", "/", &[("Host", "h"), ("X-Tenant", "spoofed")], b"");
    let w = wire_with(&r, &c);
    assert!(!w.contains("spoofed"), "{w}");
    assert!(w.ends_with("x-tenant: blue\r\n\r\n"), "{w}");
    assert!(parse_extra_header("no colon").is_err());
}

#[test]
fn missing_host_names_the_original_server() {
    let w = wire(&req("GET", "/", &[], b""));
    assert!(w.contains("\r\nHost: 10.9.9.9:80\r\n"), "{w}");
}

#[test]
fn an_absolute_target_becomes_origin_form_with_its_authority_as_host() {
    let r = req(
        "GET",
        "http://user:pw@other.example:8080/p?q=1",
        &[("Host", "h"), ("X", "1")],
        b"",
    );
    assert_eq!(
        wire(&r),
        "GET /p?q=1 HTTP/1.1\r\nHost: other.example:8080\r\nX: 1\r\n\
         x-forwarded-for: 10.1.2.3\r\nx-rebuilder-target: http://user:pw@other.example:8080/p?q=1\r\n\
         x-rebuilder-client-host: h\r\n\r\n"
    );
    // No path, a query only, no Host at all (HTTP/1.0), another scheme.
    let w = wire(&req("GET", "HTTP://other.example", &[], b""));
    assert!(
        w.starts_with("GET / HTTP/1.1\r\nHost: other.example\r\n"),
        "{w}"
    );
    let w = wire(&req(
        "GET",
        "https://x.example?a",
        &[("Host", "x.example")],
        b"",
    ));
    assert!(
        w.starts_with("GET /?a HTTP/1.1\r\nHost: x.example\r\n"),
        "{w}"
    );
    assert!(!w.contains("client-host"), "same host: {w}");
    let w = wire(&req("GET", "ftp://f.example/x", &[("Host", "h")], b""));
    assert!(
        w.starts_with("GET /x HTTP/1.1\r\nHost: f.example\r\n"),
        "{w}"
    );
}

#[test]
fn authority_and_asterisk_targets_are_written_for_an_origin_server() {
    let w = wire(&req(
        "CONNECT",
        "db.example:5432",
        &[("Host", "db.example:5432")],
        b"",
    ));
    assert!(
        w.starts_with("CONNECT / HTTP/1.1\r\nHost: db.example:5432\r\n"),
        "{w}"
    );
    assert!(w.contains("x-rebuilder-target: db.example:5432\r\n"));
    let mut out = Vec::new();
    let written = write_request(
        &req("CONNECT", "db.example:5432", &[], b""),
        &cfg(),
        &mut out,
    )
    .unwrap();
    assert!(written.last_on_connection && !written.head);
    let w = wire(&req("OPTIONS", "*", &[("Host", "h")], b""));
    assert!(w.starts_with("OPTIONS * HTTP/1.1\r\n"), "{w}");
    assert!(!w.contains("x-rebuilder-target"));
    let mut c = cfg();
    c.upstream = Upstream::parse("http://a.internal/mirror/").unwrap();
    let w = wire_with(&req("OPTIONS", "*", &[("Host", "h")], b""), &c);
    assert!(w.starts_with("OPTIONS /mirror/* HTTP/1.1\r\n"), "{w}");
}

#[test]
fn targets_are_written_as_received_and_prefixed() {
    for t in ["/é?x=\"{|}\"", "/a%E9b", "/a/../b#frag"] {
        let w = wire(&req("GET", t, &[("Host", "h")], b""));
        assert!(w.starts_with(&format!("GET {t} HTTP/1.1\r\n")), "{w}");
    }
    let mut c = cfg();
    c.upstream = Upstream::parse("https://analyzer.internal:8443/mirror/").unwrap();
    let w = wire_with(&req("GET", "/x?y", &[("Host", "h")], b""), &c);
    assert!(w.starts_with("GET /mirror/x?y HTTP/1.1\r\n"), "{w}");
    assert_eq!(c.upstream.host_port(), ("analyzer.internal".into(), 8443));
    assert!(Upstream::parse("ftp://x").is_err());
    assert!(Upstream::parse("/relative").is_err());
    assert_eq!(
        Upstream::parse("http://[::1]").unwrap().host_port(),
        ("::1".into(), 80)
    );
}

#[test]
fn client_copies_of_the_markers_are_removed_and_counted() {
    let mut r = req(
        "POST",
        "/",
        &[
            ("Host", "h"),
            ("X-Rebuilder-Body-Truncated", "true"),
            ("x-rebuilder-anomalies", "none"),
            ("X-Rebuilder-Connection", "forged"),
        ],
        b"x",
    );
    r.anomalies = Anomalies::NONE
        .with(Anomaly::MultipleSpaces)
        .with(Anomaly::Version);
    let mut out = Vec::new();
    let w = write_request(&r, &cfg(), &mut out).unwrap();
    assert_eq!(w.markers_removed, 3);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("forged") && !text.contains("none"), "{text}");
    assert!(!text.contains("truncated"), "{text}");
    assert!(
        text.contains("\r\nx-rebuilder-anomalies: multiple_spaces,version\r\n"),
        "{text}"
    );
}

#[test]
fn requests_that_cannot_be_written_safely_are_refused_and_nothing_is_written() {
    let mut out = b"before".to_vec();
    let bad_method = req("GE T", "/", &[], b"");
    assert_eq!(
        write_request(&bad_method, &cfg(), &mut out),
        Err(RewriteError::Method)
    );
    for (n, v) in [
        ("X", "a\r\nInjected: 1"),
        ("X", "a\0b"),
        ("Bad Name", "v"),
        ("A:B", "v"),
        ("", "v"),
    ] {
        let r = req("GET", "/", &[(n, v)], b"");
        assert!(
            matches!(
                write_request(&r, &cfg(), &mut out),
                Err(RewriteError::Header(_))
            ),
            "{n:?}: {v:?}"
        );
    }
    assert_eq!(out, b"before");
    // Odd names nginx ignores (kept by the engine) are written as received.
    let w = wire(&req("GET", "/", &[("Foo@", "1"), ("Foo%E9", "2")], b""));
    assert!(w.contains("\r\nFoo@: 1\r\nFoo%E9: 2\r\n"), "{w}");
    // Control bytes other than CR, LF and NUL in values (nginx forwards them) too.
    let w = wire(&req("GET", "/", &[("X", "a\x01\tb")], b""));
    assert!(w.contains("\r\nX: a\x01\tb\r\n"), "{w}");
}

#[tokio::test]
async fn a_full_queue_drops_and_never_waits() {
    let t = Arc::new(Telemetry::new(1, 3));
    let (q, _fwd) = channel(cfg(), t.clone());
    for _ in 0..4 {
        q.try_submit(req("GET", "/", &[], b"")).unwrap();
    }
    assert_eq!(
        q.try_submit(req("GET", "/", &[], b"")),
        Err(RequestDropReason::QueueFull)
    );
    let text = t.render();
    assert!(text.contains("rebuilder_queue_depth 4"), "{text}");
}

#[tokio::test]
async fn the_byte_budget_drops_large_requests() {
    let t = Arc::new(Telemetry::new(1, 3));
    let mut c = cfg();
    c.queue_max_bytes = 10_000;
    let (q, _fwd) = channel(c, t.clone());
    q.try_submit(req("POST", "/", &[], &[0u8; 5000])).unwrap();
    assert_eq!(
        q.try_submit(req("POST", "/", &[], &[0u8; 5000])),
        Err(RequestDropReason::QueueBytes)
    );
    q.try_submit(req("GET", "/", &[], b"")).unwrap();
}

#[tokio::test]
async fn a_closed_forwarder_counts_as_shutdown() {
    let t = Arc::new(Telemetry::new(1, 3));
    let (q, fwd) = channel(cfg(), t);
    drop(fwd);
    assert_eq!(
        q.try_submit(req("GET", "/", &[], b"")),
        Err(RequestDropReason::Shutdown)
    );
}

/// A scripted upstream: records each request's raw bytes (with the connection it came on) and
/// answers as `answer(connection, request index on it)` says: `Some(response)` or `None`
/// (read on, never answer).
struct Scripted {
    addr: std::net::SocketAddr,
    seen: Log,
}

/// Requests received: (connection number, raw bytes).
type Log = Arc<std::sync::Mutex<Vec<(usize, Vec<u8>)>>>;

impl Scripted {
    async fn start(answer: fn(usize, usize) -> Option<&'static [u8]>) -> Scripted {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Log = Default::default();
        let log = seen.clone();
        tokio::spawn(async move {
            let mut conn_no = 0;
            while let Ok((mut s, _)) = listener.accept().await {
                let log = log.clone();
                let me = conn_no;
                conn_no += 1;
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut n = 0;
                    loop {
                        // One complete request at the front of `buf` (head + Content-Length).
                        let mut fields = [httparse::EMPTY_HEADER; 64];
                        let mut r = httparse::Request::new(&mut fields);
                        if let Ok(httparse::Status::Complete(h)) = r.parse(&buf) {
                            let len: usize = r
                                .headers
                                .iter()
                                .find(|f| f.name.eq_ignore_ascii_case("content-length"))
                                .map_or(0, |f| {
                                    std::str::from_utf8(f.value).unwrap().parse().unwrap()
                                });
                            if buf.len() >= h + len {
                                let one: Vec<u8> = buf.drain(..h + len).collect();
                                log.lock().unwrap().push((me, one));
                                if let Some(resp) = answer(me, n) {
                                    if s.write_all(resp).await.is_err() {
                                        return;
                                    }
                                    if resp.windows(17).any(|w| w == b"Connection: close") {
                                        return;
                                    }
                                }
                                n += 1;
                                continue;
                            }
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                });
            }
        });
        Scripted { addr, seen }
    }

    fn seen(&self) -> Vec<(usize, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }
}

/// Forwards `reqs` to `upstream` through the real queue and senders, until all settle.
async fn forward_all(c: ForwardConfig, reqs: Vec<HttpRequest>) -> Arc<Telemetry> {
    let t = Arc::new(Telemetry::new(1, 100));
    let mut c = c;
    c.queue_capacity = reqs.len().max(1);
    let (q, fwd) = channel(c, t.clone());
    for r in reqs {
        q.try_submit(r).unwrap();
    }
    drop(q);
    tokio::time::timeout(Duration::from_secs(20), fwd.run())
        .await
        .expect("the forwarder settles");
    t
}

fn to(addr: std::net::SocketAddr) -> ForwardConfig {
    let mut c = cfg();
    c.upstream = Upstream::parse(&format!("http://{addr}")).unwrap();
    c.concurrency = 1;
    c
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test]
async fn pipelined_requests_arrive_once_in_order_exactly_as_written() {
    let up = Scripted::start(|_, _| Some(OK)).await;
    let reqs: Vec<HttpRequest> = (0..20)
        .map(|i| {
            req(
                "POST",
                &format!("/p{i}"),
                &[("Host", "h"), ("X-I", &i.to_string())],
                format!("body{i}").as_bytes(),
            )
        })
        .collect();
    let expected: Vec<Vec<u8>> = reqs
        .iter()
        .map(|r| {
            let mut w = Vec::new();
            write_request(r, &cfg(), &mut w).unwrap();
            w
        })
        .collect();
    let t = forward_all(to(up.addr), reqs).await;
    let seen = up.seen();
    assert_eq!(
        seen.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(
        seen.iter().all(|(c, _)| *c == seen[0].0),
        "one keep-alive connection"
    );
    assert_eq!(t.forwarded(), 20);
}

#[tokio::test]
async fn requests_written_after_an_answer_that_closes_are_written_again_once() {
    // Every connection answers its first request with `Connection: close`: whatever was
    // pipelined behind it was not processed, and goes out again on the next connection.
    let up = Scripted::start(|_, n| {
        (n == 0)
            .then_some(&b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..])
    })
    .await;
    let reqs: Vec<HttpRequest> = (0..6)
        .map(|i| req("GET", &format!("/r{i}"), &[("Host", "h")], b""))
        .collect();
    let t = forward_all(to(up.addr), reqs).await;
    // The request answered on each connection is its first: each target once.
    let mut firsts: Vec<String> = Vec::new();
    let mut last_conn = None;
    for (c, b) in up.seen() {
        if last_conn != Some(c) {
            let line = &b[..b.iter().position(|&x| x == b'\r').unwrap()];
            firsts.push(String::from_utf8_lossy(line).into_owned());
            last_conn = Some(c);
        }
    }
    let want: Vec<String> = (0..6).map(|i| format!("GET /r{i} HTTP/1.1")).collect();
    assert_eq!(firsts, want);
    assert_eq!(t.forwarded(), 6);
    let text = t.render();
    assert!(
        !text.contains("rebuilder_requests_resent_total 0\n"),
        "{text}"
    );
    assert_eq!(t.dropped(RequestDropReason::UpstreamIo), 0);
}

#[tokio::test]
async fn written_requests_without_an_answer_are_lost_and_counted_never_repeated() {
    let up = Scripted::start(|_, _| None).await;
    let mut c = to(up.addr);
    c.request_timeout = Duration::from_millis(200);
    let reqs: Vec<HttpRequest> = (0..3)
        .map(|i| req("GET", &format!("/t{i}"), &[("Host", "h")], b""))
        .collect();
    let t = forward_all(c, reqs).await;
    assert_eq!(t.forwarded(), 0);
    assert_eq!(t.dropped(RequestDropReason::UpstreamTimeout), 3);
    assert_eq!(up.seen().len(), 3, "each written once");
}
