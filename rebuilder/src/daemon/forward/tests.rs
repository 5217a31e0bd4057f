use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{Method, Request};
use http_body_util::Full;

use super::rewrite::origin_form;
use super::upstream::parse_extra_header;
use super::*;
use crate::daemon::telemetry::RequestDropReason;
use crate::engine::request::HttpRequest;

fn cfg() -> ForwardConfig {
    ForwardConfig {
        upstream: Upstream::parse("http://127.0.0.1:9/").unwrap(),
        forwarded_for: Some(HeaderName::from_static("x-forwarded-for")),
        extra_headers: vec![],
        queue_capacity: 4,
        queue_max_bytes: 1 << 20,
        concurrency: 2,
        connect_timeout: Duration::from_millis(100),
        request_timeout: Duration::from_millis(500),
        pool_idle_timeout: Duration::from_secs(1),
        failure_backoff: Duration::from_millis(10),
        probe_interval: Duration::from_secs(1),
        ca_certs: Vec::new(),
    }
}

fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpRequest {
    HttpRequest {
        ts_us: 1,
        vni: 7,
        client: "10.1.2.3:40000".parse().unwrap(),
        peer: "10.1.2.3:40000".parse().unwrap(),
        server: "10.9.9.9:80".parse().unwrap(),
        method: method.into(),
        target: target.into(),
        version: 1,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
        chunked: false,
        body_truncated: false,
        response: None,
        response_missing: None,
    }
}

fn header_list(r: &Request<Full<Bytes>>) -> Vec<(String, String)> {
    r.headers()
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect()
}

#[test]
fn method_target_and_header_order_are_kept_and_host_is_not_the_connection_target() {
    let r = req(
        "GET",
        "/a/b?c=d",
        &[
            ("Host", "shop.example"),
            ("User-Agent", "curl"),
            ("Accept", "*/*"),
        ],
        b"",
    );
    let out = upstream_request(r.clone(), &cfg()).unwrap();
    assert_eq!(out.method(), Method::GET);
    assert_eq!(out.uri().to_string(), "/a/b?c=d");
    assert_eq!(
        header_list(&out),
        vec![
            ("host".into(), "shop.example".into()),
            ("user-agent".into(), "curl".into()),
            ("accept".into(), "*/*".into()),
            ("x-forwarded-for".into(), "10.1.2.3".into()),
        ]
    );
}

#[test]
fn hop_by_hop_headers_and_connection_tokens_are_removed() {
    let r = req(
        "GET",
        "/",
        &[
            ("Host", "h"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Secret-Hop", "1"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
            ("Proxy-Connection", "keep-alive"),
            ("X-End", "2"),
        ],
        b"",
    );
    let out = upstream_request(r.clone(), &cfg()).unwrap();
    let names: Vec<String> = header_list(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["host", "x-end", "x-forwarded-for"]);
}

#[test]
fn chunked_body_is_reframed_with_content_length() {
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
    let out = upstream_request(r.clone(), &cfg()).unwrap();
    assert!(out.headers().get("transfer-encoding").is_none());
    assert!(out.headers().get("trailer").is_none());
    assert_eq!(out.headers()["content-length"], "11");
    assert_eq!(out.headers()["content-type"], "text/plain");
}

#[test]
fn content_length_is_recomputed_from_the_body() {
    let mut r = req(
        "POST",
        "/",
        &[("Host", "h"), ("Content-Length", "100")],
        b"cut",
    );
    r.body_truncated = true;
    let out = upstream_request(r.clone(), &cfg()).unwrap();
    assert_eq!(out.headers()["content-length"], "3");
    assert_eq!(out.headers()[TRUNCATED_HEADER], "true");
    let get = upstream_request(req("GET", "/", &[("Host", "h")], b""), &cfg()).unwrap();
    assert!(get.headers().get("content-length").is_none());
}

#[test]
fn client_ip_is_appended_to_an_existing_forwarded_for_in_place() {
    let r = req(
        "GET",
        "/",
        &[
            ("Host", "h"),
            ("X-Forwarded-For", "1.1.1.1"),
            ("Accept", "*/*"),
            ("x-forwarded-for", "2.2.2.2"),
        ],
        b"",
    );
    let out = upstream_request(r.clone(), &cfg()).unwrap();
    assert_eq!(
        header_list(&out),
        vec![
            ("host".into(), "h".into()),
            (
                "x-forwarded-for".into(),
                "1.1.1.1, 2.2.2.2, 10.1.2.3".into()
            ),
            ("accept".into(), "*/*".into()),
        ]
    );
}

#[test]
fn forwarded_for_can_be_renamed_or_turned_off() {
    let mut c = cfg();
    c.forwarded_for = Some(HeaderName::from_static("x-real-client"));
    let out = upstream_request(req("GET", "/", &[("Host", "h")], b""), &c).unwrap();
    assert_eq!(out.headers()["x-real-client"], "10.1.2.3");
    assert!(out.headers().get("x-forwarded-for").is_none());
    c.forwarded_for = None;
    let out = upstream_request(req("GET", "/", &[("Host", "h")], b""), &c).unwrap();
    assert_eq!(out.headers().len(), 1);
}

#[test]
fn ipv6_client_is_written_without_port_or_brackets() {
    let mut r = req("GET", "/", &[("Host", "h")], b"");
    r.client = "[2001:db8::5]:5555".parse().unwrap();
    let out = upstream_request(r.clone(), &cfg()).unwrap();
    assert_eq!(out.headers()["x-forwarded-for"], "2001:db8::5");
}

#[test]
fn the_proxy_protocol_client_not_the_balancer_goes_into_x_forwarded_for() {
    let mut r = req("GET", "/", &[("Host", "h")], b"");
    r.client = "198.51.100.7:40000".parse().unwrap();
    r.peer = "10.0.5.9:61000".parse().unwrap();
    let out = upstream_request(r, &cfg()).unwrap();
    assert_eq!(out.headers()["x-forwarded-for"], "198.51.100.7");
}

#[test]
fn extra_headers_replace_request_headers_of_the_same_name() {
    let mut c = cfg();
    c.extra_headers = vec![parse_extra_header("X-Tenant: blue").unwrap()];
    let r = req("GET", "/", &[("Host", "h"), ("X-Tenant", "spoofed")], b"");
    let out = upstream_request(r.clone(), &c).unwrap();
    let all: Vec<_> = out.headers().get_all("x-tenant").iter().collect();
    assert_eq!(all, vec!["blue"]);
    assert!(parse_extra_header("no colon").is_err());
}

#[test]
fn missing_host_names_the_original_server() {
    let out = upstream_request(req("GET", "/", &[], b""), &cfg()).unwrap();
    assert_eq!(out.headers()["host"], "10.9.9.9:80");
}

#[test]
fn absolute_targets_become_origin_form_and_odd_bytes_are_encoded() {
    assert_eq!(
        origin_form("http://x.example/p?q=1").as_deref(),
        Some("/p?q=1")
    );
    assert_eq!(origin_form("http://x.example").as_deref(), Some("/"));
    assert_eq!(origin_form("http://x.example?a").as_deref(), Some("/?a"));
    assert_eq!(origin_form("*"), None);
    assert_eq!(origin_form("x.example:443"), None);
    assert_eq!(origin_form("/a b").as_deref(), Some("/a%20b"));
    assert_eq!(origin_form("/a\tb").as_deref(), Some("/a%09b"));
    assert_eq!(
        origin_form("/é").as_deref(),
        Some("/é"),
        "obs-text is kept as sent"
    );
}

#[test]
fn upstream_path_prefix_is_prepended() {
    let mut c = cfg();
    c.upstream = Upstream::parse("https://analyzer.internal:8443/mirror/").unwrap();
    let out = upstream_request(req("GET", "/x?y", &[("Host", "h")], b""), &c).unwrap();
    assert_eq!(out.uri().to_string(), "/mirror/x?y");
    assert_eq!(c.upstream.host_port(), ("analyzer.internal".into(), 8443));
    assert!(Upstream::parse("ftp://x").is_err());
    assert!(Upstream::parse("/relative").is_err());
    assert_eq!(
        Upstream::parse("http://[::1]").unwrap().host_port(),
        ("::1".into(), 80)
    );
}

#[test]
fn invalid_methods_and_targets_are_typed_errors() {
    let out = upstream_request(req("GE T", "/", &[], b""), &cfg());
    assert_eq!(out.unwrap_err(), RewriteError::Method);
    let out = upstream_request(req("OPTIONS", "*", &[], b""), &cfg());
    assert_eq!(out.unwrap_err(), RewriteError::Target);
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
