//! Writing an extracted request as the HTTP/1.1 bytes sent to the upstream: what the origin
//! received, byte for byte, except what must change to travel on our keep-alive connection.
//!
//! - **Request line**: the method as sent; the target as sent (raw bytes), prefixed by the
//!   upstream URL's path. An absolute-form target (`http://h/p`) becomes origin-form (`/p`)
//!   and its authority becomes the Host value (RFC 9112 §3.2.2: an origin ignores Host then;
//!   nginx, Apache and Go do). An authority-form target (`CONNECT h:443`, which Go also serves
//!   for other methods) becomes `/` with that Host. `*` stays `*` (`/*` under a path prefix).
//!   The version is always HTTP/1.1 (the request's own is in `x-rebuilder-anomalies` when it
//!   was not 1.0 or 1.1).
//! - **Header fields**: names (case), order and values byte-exact, repeated fields kept
//!   apart, except:
//!   - `Content-Length` / `Transfer-Encoding`: replaced by one `Content-Length` of the decoded
//!     body, where the first of them was (the body is re-framed; at the end when the request
//!     had neither but a body);
//!   - `Connection` (it would manage our connection to the upstream: `close` ends it,
//!     `upgrade` may switch protocols): renamed `x-rebuilder-connection`, value kept, in
//!     place. Its tokens delete no other field;
//!   - the forwarded-for field (`--forwarded-for-header`): the client IP is appended to its
//!     last occurrence (`, <ip>`), or one is added at the end;
//!   - a Host replaced by the target's authority; the client's value is kept in
//!     `x-rebuilder-client-host` when it differed;
//!   - fields named like the rebuilder's markers (`x-rebuilder-*`): removed (a client must
//!     not forge them), counted;
//!   - `--extra-header` fields replace same-named request fields.
//! - **Markers** added at the end: `x-rebuilder-body-truncated: true`,
//!   `x-rebuilder-anomalies: <labels>` ([`crate::engine::stats::Anomaly`]),
//!   `x-rebuilder-target: <as sent>` when the target was rewritten (not only prefixed),
//!   `x-rebuilder-trailer-<name>: <value>` for each trailer of a chunked body (trailers are
//!   never merged into the header section: a `Host` trailer must not read as a second Host);
//!   with `--source-headers`, `x-rebuilder-source-eni: <eni>` (`unknown` when the key is not
//!   in the source map) and `x-rebuilder-source: <the record's "source" object, JSON>`
//!   (`docs/sources.md`), and `x-rebuilder-source-via: <JSON>` when the load balancer's copy
//!   of the request was collapsed into it (`--dedup`).
//! - **Body**: the decoded body.
//!
//! The parser never emits a CR, LF or NUL in a field, nor a space, colon or control byte in a
//! name; this writer checks anyway and refuses (`invalid_request`) rather than write bytes
//! that would change how the upstream splits the stream.

use super::upstream::ForwardConfig;
use crate::engine::request::HttpRequest;

/// Prefix of every field the rebuilder adds (and removes from requests).
pub const MARKER_PREFIX: &str = "x-rebuilder-";
/// Header added (value `true`) when the engine cut the body at `--max-body-bytes`.
pub const TRUNCATED_HEADER: &str = "x-rebuilder-body-truncated";
/// The request's anomalies (comma-separated labels).
pub const ANOMALIES_HEADER: &str = "x-rebuilder-anomalies";
/// The client's `Connection` field, renamed.
pub const CONNECTION_HEADER: &str = "x-rebuilder-connection";
/// The target as sent, when it was rewritten.
pub const TARGET_HEADER: &str = "x-rebuilder-target";
/// The client's Host, when the target's authority replaced it.
pub const CLIENT_HOST_HEADER: &str = "x-rebuilder-client-host";
/// Prefix of the fields carrying trailers.
pub const TRAILER_PREFIX: &str = "x-rebuilder-trailer-";
/// The ENI a request is attributed to (`--source-headers`).
pub const SOURCE_ENI_HEADER: &str = "x-rebuilder-source-eni";
/// The record's `source` object, JSON (`--source-headers`).
pub const SOURCE_HEADER: &str = "x-rebuilder-source";
/// The source of the load balancer's copy collapsed into a request, JSON (`--dedup`).
pub const VIA_HEADER: &str = "x-rebuilder-source-via";

/// Why one request cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("invalid method")]
    Method,
    #[error("invalid header {0:?}")]
    Header(String),
}

/// What the sender needs to know about a written request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// A HEAD request: its response has no body.
    pub head: bool,
    /// The connection must not carry anything after this request (CONNECT: a 2xx answer
    /// turns it into a tunnel).
    pub last_on_connection: bool,
    /// Client fields named like the rebuilder's markers that were removed.
    pub markers_removed: u32,
}

/// RFC 9110 token character.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What a request target is.
enum Target<'a> {
    /// `/path?query` (written as is).
    Origin(&'a str),
    /// `scheme://authority/path`: the path (a `/` added when it has none), the authority.
    Absolute { authority: &'a str, path: &'a str },
    /// `host:port` (CONNECT), or any other target without a `/`: written `/`.
    Authority(&'a str),
    /// `*`.
    Asterisk,
    /// Anything else (`a/b`): written after a `/`.
    Other(&'a str),
}

fn target(t: &str) -> Target<'_> {
    if t.starts_with('/') {
        return Target::Origin(t);
    }
    if t == "*" {
        return Target::Asterisk;
    }
    if let Some(i) = t.find("://") {
        let scheme = &t.as_bytes()[..i];
        if scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
        {
            let rest = &t[i + 3..];
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..end];
            // Userinfo is not part of the host (Go, Node keep the request; nginx refuses it).
            let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            return Target::Absolute {
                authority,
                path: &rest[end..],
            };
        }
    }
    if t.contains('/') {
        Target::Other(t)
    } else {
        Target::Authority(t)
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Bytes a field value may not hold (they would end the field or the head).
fn unsafe_value(v: &[u8]) -> bool {
    v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

/// Bytes a field name may not hold (they would change where the name ends).
fn unsafe_name(n: &[u8]) -> bool {
    n.is_empty() || n.iter().any(|&b| b <= b' ' || b == b':' || b == 0x7f)
}

/// `bytes` with every byte that is not a token character percent-encoded (a trailer's name
/// becomes part of a field name).
fn token_encoded(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if is_tchar(b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

/// `bytes` with CR, LF and NUL percent-encoded (a trailer's value in a marker field).
fn value_encoded(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if matches!(b, b'\r' | b'\n' | 0 | b'%') {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
}

fn is_marker(name: &str) -> bool {
    name.len() >= MARKER_PREFIX.len()
        && name.as_bytes()[..MARKER_PREFIX.len()].eq_ignore_ascii_case(MARKER_PREFIX.as_bytes())
}

/// Appends the HTTP/1.1 request sent upstream for `req` to `out` (see the module
/// documentation). On error nothing is appended.
pub fn write_request(
    req: &HttpRequest,
    cfg: &ForwardConfig,
    out: &mut Vec<u8>,
) -> Result<Written, RewriteError> {
    let start = out.len();
    let result = write(req, cfg, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write(
    req: &HttpRequest,
    cfg: &ForwardConfig,
    out: &mut Vec<u8>,
) -> Result<Written, RewriteError> {
    let method = req.method.as_bytes();
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(RewriteError::Method);
    }
    out.extend_from_slice(method);
    out.push(b' ');
    let prefix = cfg.upstream.path_prefix.as_bytes();
    let mut authority: Option<&str> = None;
    let mut rewritten = true;
    match target(&req.target) {
        Target::Origin(p) => {
            out.extend_from_slice(prefix);
            out.extend_from_slice(p.as_bytes());
            rewritten = false;
        }
        Target::Absolute { authority: a, path } => {
            authority = Some(a);
            out.extend_from_slice(prefix);
            if !path.starts_with('/') {
                out.push(b'/');
            }
            out.extend_from_slice(path.as_bytes());
        }
        Target::Authority(a) => {
            authority = Some(a);
            out.extend_from_slice(prefix);
            out.push(b'/');
        }
        Target::Asterisk => {
            if prefix.is_empty() {
                out.push(b'*');
                rewritten = false;
            } else {
                out.extend_from_slice(prefix);
                out.extend_from_slice(b"/*");
            }
        }
        Target::Other(t) => {
            out.extend_from_slice(prefix);
            out.push(b'/');
            out.extend_from_slice(t.as_bytes());
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let xff = cfg.forwarded_for.as_deref();
    let is = |name: &str, other: &str| name.eq_ignore_ascii_case(other);
    let replaced = |name: &str| cfg.extra_headers.iter().any(|(n, _)| is(name, n.as_str()));
    let last_xff = xff.and_then(|x| req.headers.iter().rposition(|(n, _)| is(n, x)));
    let framed = req.chunked
        || !req.body.is_empty()
        || req
            .headers
            .iter()
            .any(|(n, _)| is(n, "content-length") || is(n, "transfer-encoding"));
    // The client's address as text, once, without an allocation (at most 39 bytes: IPv6).
    let mut ip_text = [0u8; 48];
    let ip = {
        let mut w = &mut ip_text[..];
        // A slice writer fails only when full; no address is that long.
        let _ = std::io::Write::write_fmt(&mut w, format_args!("{}", req.client.ip()));
        let left = w.len();
        &ip_text[..ip_text.len() - left]
    };
    let mut length = itoa::Buffer::new();
    let length = length.format(req.body.len()).as_bytes();
    let mut length_written = false;
    let mut host_seen = false;
    let mut client_host: Option<&[u8]> = None;
    let mut markers_removed = 0u32;
    for (i, (name, value)) in req.headers.iter().enumerate() {
        let (n, v) = (name.as_bytes(), value);
        if unsafe_name(n) || unsafe_value(v) {
            return Err(RewriteError::Header(name.to_owned()));
        }
        if is_marker(name) {
            markers_removed += 1;
            continue;
        }
        if replaced(name) {
            continue;
        }
        if is(name, "content-length") || is(name, "transfer-encoding") {
            if !length_written {
                field(out, b"Content-Length", length);
                length_written = true;
            }
            continue;
        }
        if is(name, "connection") {
            field(out, CONNECTION_HEADER.as_bytes(), v);
            continue;
        }
        if is(name, "host") && !host_seen {
            host_seen = true;
            if let Some(a) = authority {
                field(out, n, a.as_bytes());
                if v != a.as_bytes() {
                    client_host = Some(v);
                }
                continue;
            }
        }
        if Some(i) == last_xff {
            out.extend_from_slice(n);
            out.extend_from_slice(b": ");
            if !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(ip);
            out.extend_from_slice(b"\r\n");
            continue;
        }
        field(out, n, v);
    }
    if !host_seen {
        // No Host (HTTP/1.0): the authority, else the original server, so that the analyzer
        // sees a destination.
        let host = authority.map_or_else(|| req.server.to_string(), str::to_string);
        field(out, b"Host", host.as_bytes());
    }
    if framed && !length_written {
        field(out, b"Content-Length", length);
    }
    if let Some(x) = xff
        && last_xff.is_none()
    {
        field(out, x.as_bytes(), ip);
    }
    if req.body_truncated {
        field(out, TRUNCATED_HEADER.as_bytes(), b"true");
    }
    if !req.anomalies.is_empty() {
        field(
            out,
            ANOMALIES_HEADER.as_bytes(),
            req.anomalies.to_string().as_bytes(),
        );
    }
    if rewritten {
        field(out, TARGET_HEADER.as_bytes(), req.target.as_bytes());
    }
    if let Some(h) = client_host {
        field(out, CLIENT_HOST_HEADER.as_bytes(), h);
    }
    for (name, value) in &req.trailers {
        out.extend_from_slice(TRAILER_PREFIX.as_bytes());
        token_encoded(name.as_bytes(), out);
        out.extend_from_slice(b": ");
        value_encoded(value, out);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(sources) = &cfg.source_headers {
        let map = sources.get();
        let source = map.attribute(req.source_key());
        field(
            out,
            SOURCE_ENI_HEADER.as_bytes(),
            source.eni().unwrap_or("unknown").as_bytes(),
        );
        // Compact JSON holds no CR, LF or NUL (serde_json escapes control bytes in strings).
        if let Ok(json) = serde_json::to_vec(&source) {
            field(out, SOURCE_HEADER.as_bytes(), &json);
        }
        if let Some(via) = req.via.as_deref()
            && let Ok(json) = serde_json::to_vec(&map.attribute(*via))
        {
            field(out, VIA_HEADER.as_bytes(), &json);
        }
    }
    for (n, v) in &cfg.extra_headers {
        field(out, n.as_str().as_bytes(), v.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.body);
    Ok(Written {
        head: req.method.eq_ignore_ascii_case("HEAD"),
        last_on_connection: req.method.eq_ignore_ascii_case("CONNECT"),
        markers_removed,
    })
}
