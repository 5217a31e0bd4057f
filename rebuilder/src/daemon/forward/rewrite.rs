//! Rewriting an extracted request into the request sent to the upstream (RFC 9110 §7.6.1
//! hop-by-hop fields, forwarded-for, re-framing with Content-Length, origin-form targets).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;

use super::upstream::ForwardConfig;
use crate::engine::request::HttpRequest;

/// Header added (value `true`) when the engine cut the body at `--max-body-bytes`.
pub const TRUNCATED_HEADER: &str = "x-rebuilder-body-truncated";

/// Why one request cannot be expressed as an upstream request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("invalid method")]
    Method,
    #[error("request target cannot be forwarded (authority-form or asterisk-form)")]
    Target,
    #[error("invalid header {0:?}")]
    Header(String),
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the framing
/// headers we replace.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "content-length",
];

/// Turns an extracted request into the request sent upstream.
///
/// - method and target kept (an absolute-form target becomes origin-form), prefixed by the
///   upstream path;
/// - headers kept in their order (Host included); hop-by-hop headers and those named in
///   `Connection` removed; the body re-framed with `Content-Length`;
/// - the client IP (PROXY protocol source, else inner TCP source) appended to the
///   forwarded-for header (values of repeated headers are joined, in place of the first one);
/// - static extra headers replace same-named ones, at the end.
pub fn upstream_request(
    mut req: HttpRequest,
    cfg: &ForwardConfig,
) -> Result<Request<Full<Bytes>>, RewriteError> {
    let method = Method::from_bytes(req.method.as_bytes()).map_err(|_| RewriteError::Method)?;
    let path_and_query = origin_form(&req.target).ok_or(RewriteError::Target)?;
    // Origin-form: the connection already goes to the upstream; Host stays the client's.
    let uri = Uri::builder()
        .path_and_query(format!("{}{}", cfg.upstream.path_prefix, path_and_query))
        .build()
        .map_err(|_| RewriteError::Target)?;

    // Tokens named by Connection are hop-by-hop too; values of the forwarded-for header are
    // joined into one.
    let mut connection_tokens: Vec<String> = Vec::new();
    let mut xff_values: Vec<u8> = Vec::new();
    let mut framed = req.chunked || !req.body.is_empty();
    for (name, value) in &req.headers {
        if name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(value).split(',') {
                let t = token.trim().to_ascii_lowercase();
                if !t.is_empty() {
                    connection_tokens.push(t);
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            framed = true;
        } else if let Some(xff) = &cfg.forwarded_for
            && name.eq_ignore_ascii_case(xff.as_str())
        {
            let v = value.trim_ascii();
            if !v.is_empty() {
                xff_values.extend_from_slice(v);
                xff_values.extend_from_slice(b", ");
            }
        }
    }

    let mut b = Request::builder().method(method).uri(uri);
    let headers = b.headers_mut().expect("builder is valid so far");
    let mut has_host = false;
    let mut xff_done = false;
    for (name, value) in std::mem::take(&mut req.headers) {
        // Standard names are parsed without allocating; the result is lower-case.
        let hname = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| RewriteError::Header(name.to_ascii_lowercase()))?;
        let lower = hname.as_str();
        if HOP_BY_HOP.contains(&lower)
            || connection_tokens.iter().any(|t| t == lower)
            || cfg.extra_headers.iter().any(|(n, _)| *n == hname)
        {
            continue;
        }
        if cfg.forwarded_for.as_ref() == Some(&hname) {
            if xff_done {
                continue;
            }
            xff_done = true;
            let mut joined = std::mem::take(&mut xff_values);
            joined.extend_from_slice(req.client.ip().to_string().as_bytes());
            let v = HeaderValue::from_maybe_shared(Bytes::from(joined))
                .map_err(|_| RewriteError::Header(lower.to_string()))?;
            headers.append(hname, v);
            continue;
        }
        has_host |= hname == http::header::HOST;
        // Zero-copy: the engine's value buffer becomes the header value.
        let v = HeaderValue::from_maybe_shared(Bytes::from(value))
            .map_err(|_| RewriteError::Header(lower.to_string()))?;
        headers.append(hname, v);
    }
    if !has_host {
        // HTTP/1.0 without Host: name the original server so the analyzer sees a destination.
        let v = HeaderValue::from_str(&req.server.to_string()).expect("socket address is ASCII");
        headers.append(http::header::HOST, v);
    }
    if let Some(xff) = &cfg.forwarded_for
        && !xff_done
    {
        let v = HeaderValue::from_str(&req.client.ip().to_string()).expect("IP is ASCII");
        headers.append(xff.clone(), v);
    }
    if framed {
        headers.append(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(req.body.len()),
        );
    }
    if req.body_truncated {
        headers.append(TRUNCATED_HEADER, HeaderValue::from_static("true"));
    }
    for (n, v) in &cfg.extra_headers {
        headers.append(n.clone(), v.clone());
    }
    b.body(Full::new(Bytes::from(std::mem::take(&mut req.body))))
        .map_err(|_| RewriteError::Target)
}

/// The path and query of a request target, or `None` for targets that name no resource on an
/// origin server (`*`, authority-form). Bytes an URI may not hold are percent-encoded.
pub(super) fn origin_form(target: &str) -> Option<String> {
    let path = if target.starts_with('/') {
        target.to_string()
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .or_else(|| target.strip_prefix("HTTP://"))
        .or_else(|| target.strip_prefix("HTTPS://"))
    {
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_string(),
            Some(i) => format!("/{}", &rest[i..]),
            None => "/".to_string(),
        }
    } else {
        return None;
    };
    if path.parse::<http::uri::PathAndQuery>().is_ok() {
        return Some(path);
    }
    let mut enc = String::with_capacity(path.len() * 3);
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    enc.parse::<http::uri::PathAndQuery>().ok().map(|_| enc)
}
