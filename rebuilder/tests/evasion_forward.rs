//! Issue 14 item 6, end to end: what reaches the analyzer through `rebuilder run` is what the
//! origin received — header names with their case, order, repeated fields apart, values byte
//! for byte — except the framing it must rewrite, the X-Forwarded-For it appends to and its
//! markers. Mirrored segments of one connection go to a `rebuilder run` process over UDP; the
//! recording analyzer shows the exact fields that arrived.

use std::net::UdpSocket;
use std::time::Duration;

use rebuilder_testkit::analyzer::{Analyzer, Recorded};
use rebuilder_testkit::daemon::RebuilderProc;
use rebuilder_testkit::frames::TcpConn;
use rebuilder_testkit::system::wait_until;

/// The requests of one connection, in one segment each.
const REQUESTS: &[&[u8]] = &[
    // Names with their case, repeated fields apart, Connection naming other fields.
    b"GET /case HTTP/1.1\r\nhost: shop.example\r\nX-UPPER: A\r\nx-lower: b\r\nCookie: s=1\r\n\
Connection: keep-alive, Cookie, X-Upper\r\nAccept: */*\r\nCookie: t=2\r\n\r\n",
    // An absolute-form target: its authority is the Host.
    b"GET http://other.example:8080/abs?q=1 HTTP/1.1\r\nHost: shop.example\r\nX-A: 1\r\n\r\n",
    // A chunked body with trailers (one named Host), forged markers, odd names nginx ignores.
    b"POST /trail HTTP/1.1\r\nHost: shop.example\r\nX-Rebuilder-Body-Truncated: true\r\n\
Foo@Bar: odd\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n\
5\r\nhello\r\n0\r\nHost: evil.example\r\nX-Sum: 5\r\n\r\n",
    // Several spaces and another version: the request and its anomalies.
    b"GET  /spaces  HTTP/1.2\r\nHost: shop.example\r\n\r\n",
];

fn fields(r: &Recorded) -> Vec<(&str, &str)> {
    r.headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

#[test]
fn requests_reach_the_analyzer_as_the_origin_received_them() {
    let analyzer = Analyzer::loopback();
    let p = RebuilderProc::start(&analyzer.url(), &["--workers", "1"]);
    p.wait_health(200, Duration::from_secs(10));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut c = TcpConn::new(3, "10.0.0.1:40000", "10.0.0.2:80", 900);
    let mut datagrams = vec![c.syn()];
    datagrams.extend(REQUESTS.iter().map(|r| c.send(r)));
    datagrams.push(c.fin());
    for d in &datagrams {
        sock.send_to(d, p.udp).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(10), || analyzer.records().len()
            >= REQUESTS.len()),
        "got {:?}",
        analyzer.records()
    );
    std::thread::sleep(Duration::from_millis(300));
    let recs = analyzer.records();
    assert_eq!(recs.len(), REQUESTS.len(), "{recs:?}");

    assert_eq!(recs[0].target, "/case");
    assert_eq!(
        fields(&recs[0]),
        [
            ("host", "shop.example"),
            ("X-UPPER", "A"),
            ("x-lower", "b"),
            ("Cookie", "s=1"),
            ("x-rebuilder-connection", "keep-alive, Cookie, X-Upper"),
            ("Accept", "*/*"),
            ("Cookie", "t=2"),
            ("X-Forwarded-For", "10.0.0.1"),
        ]
    );

    assert_eq!(recs[1].target, "/abs?q=1");
    assert_eq!(
        fields(&recs[1]),
        [
            ("Host", "other.example:8080"),
            ("X-A", "1"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("x-rebuilder-target", "http://other.example:8080/abs?q=1"),
            ("x-rebuilder-client-host", "shop.example"),
        ]
    );

    assert_eq!(recs[2].body(), b"hello");
    assert_eq!(
        fields(&recs[2]),
        [
            ("Host", "shop.example"),
            ("Foo@Bar", "odd"),
            ("Content-Length", "5"),
            ("X-Forwarded-For", "198.51.100.1, 10.0.0.1"),
            ("x-rebuilder-anomalies", "invalid_header_name"),
            ("x-rebuilder-trailer-Host", "evil.example"),
            ("x-rebuilder-trailer-X-Sum", "5"),
        ]
    );
    assert_eq!(recs[2].header("host"), ["shop.example"], "one Host only");

    assert_eq!(recs[3].target, "/spaces");
    assert_eq!(
        recs[3].first_header("x-rebuilder-anomalies"),
        Some("multiple_spaces,version")
    );
    let m = p.metrics();
    assert_eq!(m.get("rebuilder_marker_headers_removed_total"), 1);
}
