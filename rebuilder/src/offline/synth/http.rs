//! The HTTP side of a generated connection: random requests (methods, targets, headers,
//! Content-Length or chunked bodies, Expect: 100-continue), an ALB health check, responses.

use std::net::SocketAddr;

use super::config::SynthConfig;
use super::rng::SplitMix64;
use crate::engine::request::{HttpRequest, HttpResponse};

/// Body alphabet: no CR, LF or space, so no body can contain a request line.
pub(super) const BODY_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=&.";
const PATH_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn pick_method(cfg: &SynthConfig, rng: &mut SplitMix64) -> String {
    if cfg.methods.is_empty() {
        return "GET".to_string();
    }
    cfg.methods[rng.below(cfg.methods.len() as u64) as usize].clone()
}

fn carries_body(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH")
}

/// One request as bytes, plus where its chunked terminator starts and where its head ends.
pub(super) struct BuiltRequest {
    pub(super) bytes: Vec<u8>,
    pub(super) head_len: usize,
    pub(super) terminator_at: Option<usize>,
    pub(super) request: HttpRequest,
    pub(super) expect: bool,
}

/// Appends a request head: the request line (HTTP/1.`version`), the fields, the empty line.
fn write_head(
    method: &str,
    target: &str,
    version: u8,
    headers: &[(String, Vec<u8>)],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(if version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// An ALB health check, byte for byte as the ALB sends it.
pub(super) fn health_check_request(server: &SocketAddr) -> BuiltRequest {
    let headers: Vec<(String, Vec<u8>)> = [
        ("Host", server.to_string()),
        ("Connection", "close".to_string()),
        ("User-Agent", "ELB-HealthChecker/2.0".to_string()),
        ("Accept-Encoding", "gzip, compressed".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_bytes()))
    .collect();
    let mut bytes = Vec::new();
    write_head("GET", "/health", 1, &headers, &mut bytes);
    BuiltRequest {
        head_len: bytes.len(),
        bytes,
        terminator_at: None,
        request: truth(
            "GET".into(),
            "/health".into(),
            1,
            headers,
            Vec::new(),
            false,
        ),
        expect: false,
    }
}

/// A request as the engine must report it (addresses, time and the tunnel are filled in by the
/// generator when the connection is placed).
fn truth(
    method: String,
    target: String,
    version: u8,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    chunked: bool,
) -> HttpRequest {
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    HttpRequest {
        version,
        headers: headers.into(),
        body,
        chunked,
        ..HttpRequest::new(method, target, any, any)
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn random_request(
    cfg: &SynthConfig,
    rng: &mut SplitMix64,
    conn: u64,
    index: usize,
    last: bool,
    http10: bool,
    pipelined: bool,
    host: &str,
) -> BuiltRequest {
    let method = pick_method(cfg, rng);
    let mut target = String::from("/");
    let depth = rng.range(1, 3);
    for d in 0..depth {
        if d > 0 {
            target.push('/');
        }
        let mut seg = Vec::new();
        let n = rng.range(3, 10);
        rng.fill_from(&mut seg, n, PATH_ALPHABET);
        target.push_str(std::str::from_utf8(&seg).expect("ASCII alphabet"));
    }
    if rng.chance(0.5) {
        target.push_str(&format!("?id={}&c={conn}&i={index}", rng.below(1_000_000)));
    }
    let version: u8 = if http10 { 0 } else { 1 };
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        ("Host".into(), host.as_bytes().to_vec()),
        ("User-Agent".into(), b"mirrorfleet-synth/1.0".to_vec()),
        ("Accept".into(), b"*/*".to_vec()),
        (
            "X-Request-Id".into(),
            format!("c{conn}-r{index}").into_bytes(),
        ),
    ];
    let mut body = Vec::new();
    let mut chunked = false;
    let mut expect = false;
    if carries_body(&method) {
        let n = rng.range(cfg.min_body, cfg.max_body);
        rng.fill_from(&mut body, n, BODY_ALPHABET);
        headers.push((
            "Content-Type".into(),
            b"application/x-www-form-urlencoded".to_vec(),
        ));
        chunked = !http10 && rng.chance(cfg.chunked);
        if chunked {
            headers.push(("Transfer-Encoding".into(), b"chunked".to_vec()));
        } else {
            let name = if rng.chance(0.3) {
                "content-length"
            } else {
                "Content-Length"
            };
            headers.push((name.into(), n.to_string().into_bytes()));
        }
        expect = !http10 && !pipelined && rng.chance(cfg.expect_continue);
        if expect {
            headers.push(("Expect".into(), b"100-continue".to_vec()));
        }
    }
    if !cfg.keep_alive || last && rng.chance(0.3) {
        headers.push(("Connection".into(), b"close".to_vec()));
    } else if http10 {
        headers.push(("Connection".into(), b"keep-alive".to_vec()));
    }
    let mut bytes = Vec::with_capacity(256 + body.len());
    write_head(&method, &target, version, &headers, &mut bytes);
    let head_len = bytes.len();
    let mut terminator_at = None;
    if chunked {
        let mut at = 0;
        while at < body.len() {
            let size = rng.range(1, 2048).min(body.len() - at);
            if rng.chance(0.5) {
                bytes.extend_from_slice(format!("{size:x}").as_bytes());
            } else {
                bytes.extend_from_slice(format!("{size:X}").as_bytes());
            }
            if rng.chance(0.1) {
                bytes.extend_from_slice(b";ext=1");
            }
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&body[at..at + size]);
            bytes.extend_from_slice(b"\r\n");
            at += size;
        }
        terminator_at = Some(bytes.len());
        bytes.extend_from_slice(b"0\r\n\r\n");
    } else {
        bytes.extend_from_slice(&body);
    }
    let request = truth(method, target, version, headers, body, chunked);
    BuiltRequest {
        bytes,
        head_len,
        terminator_at,
        request,
        expect,
    }
}

/// One response as bytes and as the engine must report it.
pub(super) struct BuiltResponse {
    pub(super) bytes: Vec<u8>,
    pub(super) response: HttpResponse,
}

/// A websocket upgrade request (`Connection: Upgrade`), the last of its connection.
pub(super) fn upgrade_request(conn: u64, index: usize, host: &str) -> BuiltRequest {
    let headers: Vec<(String, Vec<u8>)> = [
        ("Host", host.to_string()),
        ("Upgrade", "websocket".to_string()),
        ("Connection", "Upgrade".to_string()),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".to_string()),
        ("Sec-WebSocket-Version", "13".to_string()),
        ("X-Request-Id", format!("c{conn}-r{index}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_bytes()))
    .collect();
    let mut bytes = Vec::new();
    write_head("GET", "/ws", 1, &headers, &mut bytes);
    BuiltRequest {
        head_len: bytes.len(),
        bytes,
        terminator_at: None,
        request: truth("GET".into(), "/ws".into(), 1, headers, Vec::new(), false),
        expect: false,
    }
}

/// The server's answer to `req`: a status drawn by method, framed by Content-Length, chunked
/// (`cfg.response_chunked`) or, for the last response of a connection the client closes, by
/// the end of the stream; no body for HEAD, 204 and 304; `101` for an upgrade request.
/// Bodies use [`BODY_ALPHABET`] (no status line can appear in them).
pub(super) fn random_response(
    rng: &mut SplitMix64,
    cfg: &SynthConfig,
    req: &HttpRequest,
    last_before_close: bool,
) -> BuiltResponse {
    let upgrade = req.header("Upgrade").is_some();
    let (status, reason) = if upgrade {
        (101, "Switching Protocols")
    } else {
        let r = rng.below(100);
        match r {
            0..60 => (200, "OK"),
            60..67 => (201, "Created"),
            67..74 => (204, "No Content"),
            74..80 if req.method == "GET" => (304, "Not Modified"),
            74..80 => (202, "Accepted"),
            80..84 => (301, "Moved Permanently"),
            84..94 => (404, "Not Found"),
            _ => (500, "Internal Server Error"),
        }
    };
    let no_body = req.method == "HEAD" || matches!(status, 101 | 204 | 304);
    let n = if matches!(status, 101 | 204 | 304) {
        0
    } else {
        rng.range(0, cfg.max_response_body)
    };
    let mut body = Vec::new();
    rng.fill_from(&mut body, n, BODY_ALPHABET);
    let version = req.version;
    let framing = if no_body {
        0
    } else if last_before_close && rng.chance(0.5) {
        2 // close-delimited
    } else if version == 1 && rng.chance(cfg.response_chunked) {
        1 // chunked
    } else {
        0
    };
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        ("Server".into(), b"synth".to_vec()),
        ("Content-Type".into(), b"text/plain".to_vec()),
    ];
    if let Some(id) = req.header("X-Request-Id") {
        headers.push(("X-Request-Id".into(), id.to_vec()));
    }
    if upgrade {
        headers.push(("Upgrade".into(), b"websocket".to_vec()));
        headers.push(("Connection".into(), b"Upgrade".to_vec()));
    } else if framing == 1 {
        headers.push(("Transfer-Encoding".into(), b"chunked".to_vec()));
    } else if framing == 0 && status != 204 && status != 304 {
        headers.push(("Content-Length".into(), n.to_string().into_bytes()));
    } else if framing == 2 {
        headers.push(("Connection".into(), b"close".to_vec()));
    }
    let mut bytes = format!("HTTP/1.{version} {status} {reason}\r\n").into_bytes();
    for (k, v) in &headers {
        bytes.extend_from_slice(k.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(v);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    let mut trailers = Vec::new();
    if !no_body {
        if framing == 1 {
            let mut at = 0;
            while at < body.len() {
                let size = rng.range(1, 1500).min(body.len() - at);
                bytes.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                bytes.extend_from_slice(&body[at..at + size]);
                bytes.extend_from_slice(b"\r\n");
                at += size;
            }
            bytes.extend_from_slice(b"0\r\n");
            if rng.chance(0.2) {
                bytes.extend_from_slice(b"X-Checksum: 1\r\n");
                trailers.push(("X-Checksum".to_string(), b"1".to_vec()));
            }
            bytes.extend_from_slice(b"\r\n");
        } else {
            bytes.extend_from_slice(&body);
        }
    }
    headers.extend(trailers);
    let body_len = if no_body { 0 } else { body.len() as u64 };
    BuiltResponse {
        bytes,
        response: HttpResponse {
            ts_us: 0,
            version,
            status,
            reason: reason.to_string(),
            headers: headers.into(),
            body: if no_body { Vec::new() } else { body },
            body_len,
            chunked: framing == 1,
            body_truncated: false,
            head_truncated: false,
        },
    }
}
