//! The HTTP side of a generated connection: random requests (methods, targets, headers,
//! Content-Length or chunked bodies, Expect: 100-continue), an ALB health check, responses.

use std::net::SocketAddr;

use super::config::SynthConfig;
use super::rng::SplitMix64;
use crate::engine::request::HttpRequest;

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
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    BuiltRequest {
        head_len: bytes.len(),
        bytes,
        terminator_at: None,
        request: HttpRequest {
            ts_us: 0,
            vni: 0,
            client: any,
            peer: any,
            server: any,
            method: "GET".into(),
            target: "/health".into(),
            version: 1,
            headers,
            body: Vec::new(),
            chunked: false,
            body_truncated: false,
            response: None,
            response_missing: None,
        },
        expect: false,
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
    let request = HttpRequest {
        ts_us: 0,
        vni: 0,
        client: SocketAddr::from(([0, 0, 0, 0], 0)),
        peer: SocketAddr::from(([0, 0, 0, 0], 0)),
        server: SocketAddr::from(([0, 0, 0, 0], 0)),
        method,
        target,
        version,
        headers,
        body,
        chunked,
        body_truncated: false,
        response: None,
        response_missing: None,
    };
    BuiltRequest {
        bytes,
        head_len,
        terminator_at,
        request,
        expect,
    }
}

pub(super) fn response_bytes(rng: &mut SplitMix64, max_body: usize, head_request: bool) -> Vec<u8> {
    let n = rng.range(0, max_body);
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {n}\r\nServer: synth\r\n\r\n"
    )
    .into_bytes();
    if !head_request {
        rng.fill_from(&mut out, n, BODY_ALPHABET);
    }
    out
}
