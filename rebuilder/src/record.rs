//! The JSON record of one transaction — a request and its response, or the reason it has none —
//! written by `rebuilder replay --format jsonl` and by the daemon's ndjson sink (one
//! writer for both, [`write_line`]; by hand, see [`JsonOut`] for why).
//!
//! Fields, in order: the request's (`ts`, `ts_us`, `vni`, `client`, `peer`, `server`,
//! `method`, `target`, `version`, `headers`, `body_len`, `body_truncated`, `chunked`,
//! `body_b64` with bodies, `trailers` and `anomalies` when there are any, `gwlbe` and
//! `mirror_source` when known), then `source` (the mirrored source the request is attributed
//! to: the source map's entry, or the key with `"eni": null`; [`crate::sources`]), `via`
//! (the load balancer's copy collapsed into this one, [`crate::dedup`]; only then), then
//! `response` (an object, or `null`; `head_truncated` in it only when its head was cut at a
//! cap, [`HttpResponse::head_truncated`]), `response_missing`
//! (the reason, only when `response` is `null`) and `latency_ms` (first request byte to first
//! response byte, capture clock; `null` without a response).
//!
//! Bodies: with [`RecordOptions::decode_bodies`], a body whose `Content-Encoding` is `gzip`
//! (`x-gzip`) or `deflate` is decompressed for `body_b64` (the `*_len` fields stay the length
//! as framed) and marked `"content_decoded": "gzip"`; stacked codings (`deflate, gzip`, or
//! several `Content-Encoding` fields; at most 5, as curl) are undone last first and marked
//! with the list (`"deflate, gzip"`); a coding not among these leaves the body as it is; the
//! decoded size is capped (`max_decoded_bytes`: decompression bombs are cut,
//! `decoded_truncated`, at every stage); a body that does not decode is kept as is and marked
//! `"decode_failed": true`. Counted in [`DecodeStats`].

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;

use crate::engine::request::{Fields, HttpRequest, HttpResponse};
use crate::sources::{Attribution, SourceMap};

/// What goes into a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordOptions {
    /// Include bodies (`body_b64`).
    pub with_body: bool,
    /// Decode gzip / deflate bodies, keeping at most this many decoded bytes (`None`: off).
    pub decode_bodies: Option<usize>,
}

/// Counters of body decoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Bodies decompressed (gzip or deflate).
    pub decoded: u64,
    /// Of those, cut at the decoded-size cap (or after a body cut at `max_body_bytes`).
    pub truncated: u64,
    /// Bodies that claimed gzip / deflate and did not decode (kept as is).
    pub failed: u64,
}

impl DecodeStats {
    /// Adds `other`.
    pub fn merge(&mut self, other: &DecodeStats) {
        self.decoded += other.decoded;
        self.truncated += other.truncated;
        self.failed += other.failed;
    }
}

fn version(minor: u8) -> &'static str {
    if minor == 0 { "HTTP/1.0" } else { "HTTP/1.1" }
}

/// `HTTP/major.minor` of a request (static for 1.0 and 1.1).
fn request_version(major: u8, minor: u8) -> Cow<'static, str> {
    match (major, minor) {
        (1, 0 | 1) => Cow::Borrowed(version(minor)),
        _ => Cow::Owned(format!("HTTP/{major}.{minor}")),
    }
}

/// The last `width` decimal digits of `v` into `buf` at `at` (zero-padded; `width` even),
/// two at a time from a table.
#[inline]
fn put_digits(buf: &mut [u8], at: usize, mut v: u64, width: usize) {
    const PAIRS: [[u8; 2]; 100] = {
        let mut t = [[0u8; 2]; 100];
        let mut i = 0;
        while i < 100 {
            t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
            i += 1;
        }
        t
    };
    for pair in buf[at..at + width].rchunks_exact_mut(2) {
        pair.copy_from_slice(&PAIRS[(v % 100) as usize]);
        v /= 100;
    }
}

/// The body fields of `body` (whose headers are `headers`; `cut`: the body was cut at the
/// cap, so a compressed stream may end early).
fn body(
    body: &[u8],
    headers: &Fields,
    cut: bool,
    opts: &RecordOptions,
    stats: &mut DecodeStats,
) -> JsonBody {
    let mut out = JsonBody::default();
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    // The codings are looked up only when bodies are decoded (a walk of the fields per
    // message).
    if let Some(max) = opts.decode_bodies.filter(|_| !body.is_empty())
        && let Some(codings) = codings(headers)
    {
        // The last coding applied is undone first (RFC 9110 §8.4); what a stage cut is a
        // cut stream for the next one.
        let mut data = Cow::Borrowed(body);
        let mut truncated = false;
        let mut failed = false;
        for coding in codings.iter().rev() {
            match decode(&data, coding, max, cut || truncated) {
                Some((decoded, t)) => {
                    truncated |= t;
                    data = Cow::Owned(decoded);
                }
                None => {
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            stats.decoded += 1;
            stats.truncated += u64::from(truncated);
            out.content_decoded = Some(if codings.len() == 1 {
                Cow::Borrowed(codings[0])
            } else {
                Cow::Owned(codings.join(", "))
            });
            out.decoded_len = Some(data.len());
            out.decoded_truncated = truncated;
            if opts.with_body {
                out.body_b64 = Some(encode(&data));
            }
            return out;
        }
        stats.failed += 1;
        out.decode_failed = true;
    }
    if opts.with_body {
        out.body_b64 = Some(encode(body));
    }
    out
}

/// The most codings undone one after the other (curl's `MAX_ENCODE_STACK`).
const MAX_CODINGS: usize = 5;

/// The content codings of a message in the order they were applied — every
/// `Content-Encoding` field, each a list (RFC 9110 §8.4; `identity` and empty elements left
/// out) — when there are some, at most [`MAX_CODINGS`], and each is one [`decode`] undoes;
/// otherwise `None` (the body is not decoded).
fn codings(headers: &Fields) -> Option<Vec<&'static str>> {
    let mut list = Vec::new();
    for (_, v) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
    {
        for c in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if c.is_empty() || c.eq_ignore_ascii_case(b"identity") {
                continue;
            }
            list.push(
                if c.eq_ignore_ascii_case(b"gzip") || c.eq_ignore_ascii_case(b"x-gzip") {
                    "gzip"
                } else if c.eq_ignore_ascii_case(b"deflate") {
                    "deflate"
                } else {
                    return None;
                },
            );
            if list.len() > MAX_CODINGS {
                return None;
            }
        }
    }
    (!list.is_empty()).then_some(list)
}

/// Decompresses `body` (`gzip`: one or more members; `deflate`: zlib-wrapped as RFC 9110 says,
/// or raw deflate as some servers send it), keeping at most `max` bytes: the decoded bytes
/// and whether they were cut. `None` when it does not decode (a stream that ends early is
/// not an error when the body itself was `cut`).
pub fn decode(body: &[u8], coding: &str, max: usize, cut: bool) -> Option<(Vec<u8>, bool)> {
    fn read_capped(r: impl Read, max: usize, cut: bool) -> Option<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let mut r = r.take(max as u64 + 1);
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) if cut && !out.is_empty() => return Some((out, true)),
                Err(_) => return None,
            }
        }
        if out.len() > max {
            out.truncate(max);
            return Some((out, true));
        }
        Some((out, false))
    }
    match coding {
        "gzip" => read_capped(flate2::read::MultiGzDecoder::new(body), max, cut),
        "deflate" => read_capped(flate2::read::ZlibDecoder::new(body), max, cut)
            .or_else(|| read_capped(flate2::read::DeflateDecoder::new(body), max, cut)),
        _ => None,
    }
}

/// The body fields of a record (only with bodies or decoding). In the tests it also
/// serializes as the serde model of the record had it (`tests::model`).
#[derive(Debug, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct JsonBody {
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub body_b64: Option<String>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub content_decoded: Option<Cow<'static, str>>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub decoded_len: Option<usize>,
    #[cfg_attr(test, serde(skip_serializing_if = "std::ops::Not::not"))]
    pub decoded_truncated: bool,
    #[cfg_attr(test, serde(skip_serializing_if = "std::ops::Not::not"))]
    pub decode_failed: bool,
}

/// How serde_json escapes each byte of a string: 0 (as is), the letter after the backslash,
/// or `u` for `\u00XX`.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Lowercase hex digits (serde_json's `\u00XX` escapes, IPv6 groups).
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether any of the 8 bytes of `w` needs escaping (a control byte, `"` or `\`): exact as a
/// whole (the classic "has a byte less than n" / "has a zero byte" word tricks).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q & HIGH;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b & HIGH;
    control | quote | backslash != 0
}

/// Whether no byte of `s` needs escaping in a JSON string.
fn clean(s: &[u8]) -> bool {
    let mut words = s.chunks_exact(8);
    let whole = words
        .by_ref()
        .all(|w| !word_needs_escape(u64::from_le_bytes(w.try_into().expect("8 bytes"))));
    let tail = words.remainder();
    let mut last = [b' '; 8];
    last[..tail.len()].copy_from_slice(tail);
    whole && !word_needs_escape(u64::from_le_bytes(last))
}

/// IPv6 groups in lowercase hex without leading zeros, `:` between them.
fn hex_groups(out: &mut Vec<u8>, groups: &[u16]) {
    for (i, &x) in groups.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        let digits = [x >> 12, (x >> 8) & 0xf, (x >> 4) & 0xf, x & 0xf];
        let first = digits.iter().position(|&d| d != 0).unwrap_or(3);
        out.extend(digits[first..].iter().map(|&d| HEX[usize::from(d)]));
    }
}

/// The JSON text of a record being written into a buffer.
///
/// Written by hand rather than through serde_json's `Serializer`: the keys are constants here
/// (serde_json escapes every key at run time), the records had `#[serde(flatten)]` parts (a
/// map serializer per record) and the string escaping checks 8 bytes at a time; together
/// that was ~80 % of a `replay --format jsonl` run's output cost (docs/engine.md). The output
/// is byte for byte what serde_json wrote for the same record (the tests keep that serde
/// model and compare, for arbitrary requests).
pub(crate) struct JsonOut<'a>(pub(crate) &'a mut Vec<u8>);

impl JsonOut<'_> {
    #[inline(always)]
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    /// `"name":`, after a comma unless it is the first member of its object (always inlined:
    /// the name's length is then a constant and its copy a few moves, not a `memcpy` call).
    #[inline(always)]
    pub(crate) fn key(&mut self, name: &'static str) {
        if !matches!(self.0.last(), Some(b'{')) {
            self.0.push(b',');
        }
        self.0.push(b'"');
        self.raw(name.as_bytes());
        self.raw(b"\":");
    }

    /// A string (UTF-8), quoted and escaped as serde_json does.
    pub(crate) fn str(&mut self, s: &str) {
        self.text(s.as_bytes());
    }

    /// UTF-8 text (a `str`'s bytes, or ASCII), quoted and escaped as serde_json does.
    fn text(&mut self, s: &[u8]) {
        self.0.reserve(s.len() + 2);
        self.0.push(b'"');
        let (mut start, mut i) = (0, 0);
        while i < s.len() {
            // 8 bytes at a time. The last few: the string's last 8 bytes when it has 8 (those
            // before `i` were clean), else padded with spaces (nothing to escape).
            let w = match s.get(i..i + 8) {
                Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
                None if s.len() >= 8 => {
                    u64::from_le_bytes(s[s.len() - 8..].try_into().expect("8 bytes"))
                }
                None => s[i..]
                    .iter()
                    .rev()
                    .fold(u64::from_le_bytes([b' '; 8]), |w, &b| {
                        (w << 8) | u64::from(b)
                    }),
            };
            if !word_needs_escape(w) {
                i = (i + 8).min(s.len());
                continue;
            }
            let b = s[i];
            let e = ESCAPE[usize::from(b)];
            i += 1;
            if e == 0 {
                continue;
            }
            self.raw(&s[start..i - 1]);
            start = i;
            if e == b'u' {
                let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
                self.raw(b"\\u00");
                self.raw(&hex);
            } else {
                self.raw(&[b'\\', e]);
            }
        }
        self.raw(&s[start..]);
        self.0.push(b'"');
    }

    /// Bytes as a string: UTF-8 as is, invalid sequences replaced (U+FFFD). ASCII needs no
    /// more; anything else is validated first: for the usual valid value that is cheaper than
    /// the lossy conversion's chunking.
    fn lossy(&mut self, b: &[u8]) {
        if b.is_ascii() {
            // ASCII is UTF-8: the usual field value needs no validation of its own.
            return self.text(b);
        }
        match std::str::from_utf8(b) {
            Ok(s) => self.str(s),
            Err(_) => self.str(&String::from_utf8_lossy(b)),
        }
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.raw(itoa::Buffer::new().format(v).as_bytes());
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.raw(if v { b"true" } else { b"false" });
    }

    fn null(&mut self) {
        self.raw(b"null");
    }

    /// A number as serde_json writes an `f64` (shortest round-trip digits; `null` when not
    /// finite).
    fn f64(&mut self, v: f64) {
        if v.is_finite() {
            self.raw(zmij::Buffer::new().format_finite(v).as_bytes());
        } else {
            self.null();
        }
    }

    /// A socket address as its text, as `Display` shows it (by hand: through `fmt` an IPv6
    /// address cost ~1,500 instructions).
    fn socket(&mut self, a: &SocketAddr) {
        self.0.push(b'"');
        match a {
            SocketAddr::V4(a) => {
                self.v4(a.ip().octets());
                self.port(a.port());
            }
            SocketAddr::V6(a) if a.scope_id() == 0 => {
                self.0.push(b'[');
                self.v6(a.ip());
                self.0.push(b']');
                self.port(a.port());
            }
            SocketAddr::V6(a) => {
                use std::io::Write as _;
                let _ = write!(self.0, "{a}"); // (scoped: rare) writing into a Vec cannot fail
            }
        }
        self.0.push(b'"');
    }

    /// An IP address as its text, as `Display` shows it.
    fn ip(&mut self, a: &IpAddr) {
        self.0.push(b'"');
        match a {
            IpAddr::V4(v4) => self.v4(v4.octets()),
            IpAddr::V6(v6) => self.v6(v6),
        }
        self.0.push(b'"');
    }

    fn port(&mut self, port: u16) {
        self.0.push(b':');
        self.raw(itoa::Buffer::new().format(port).as_bytes());
    }

    /// `a.b.c.d`, assembled on the stack from a table of the 256 octets' digits (one copy into
    /// the output instead of one per octet).
    fn v4(&mut self, ip: [u8; 4]) {
        const OCTETS: [([u8; 3], u8); 256] = {
            let mut t = [([0u8; 3], 0u8); 256];
            let mut o = 0;
            while o < 256 {
                let (h, te, u) = ((o / 100) as u8, (o / 10 % 10) as u8, (o % 10) as u8);
                t[o] = match o {
                    0..=9 => ([b'0' + u, 0, 0], 1),
                    10..=99 => ([b'0' + te, b'0' + u, 0], 2),
                    _ => ([b'0' + h, b'0' + te, b'0' + u], 3),
                };
                o += 1;
            }
            t
        };
        let mut buf = [0u8; 18]; // 15 at most, and room for the last 3-byte copy
        let mut n = 0;
        for (i, o) in ip.into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            let (digits, len) = OCTETS[usize::from(o)];
            buf[n..n + 3].copy_from_slice(&digits);
            n += usize::from(len);
        }
        self.raw(&buf[..n]);
    }

    /// As `Ipv6Addr`'s `Display` writes it: IPv4-mapped as `::ffff:a.b.c.d`, else the groups
    /// in lowercase hex with the longest run of two or more zero groups (the first of equal
    /// runs) as `::`.
    fn v6(&mut self, ip: &std::net::Ipv6Addr) {
        if let Some(v4) = ip.to_ipv4_mapped() {
            self.raw(b"::ffff:");
            return self.v4(v4.octets());
        }
        let g = ip.segments();
        let (mut best, mut run) = ((0, 0), (0, 0)); // (start, length)
        for (i, &x) in g.iter().enumerate() {
            if x == 0 {
                run = if run.1 == 0 {
                    (i, 1)
                } else {
                    (run.0, run.1 + 1)
                };
                if run.1 > best.1 {
                    best = run;
                }
            } else {
                run = (0, 0);
            }
        }
        if best.1 > 1 {
            hex_groups(self.0, &g[..best.0]);
            self.raw(b"::");
            hex_groups(self.0, &g[best.0 + best.1..]);
        } else {
            hex_groups(self.0, &g);
        }
    }

    fn time(&mut self, text: &[u8; 27]) {
        self.0.push(b'"');
        self.raw(text);
        self.0.push(b'"');
    }

    /// Header or trailer fields: `[["name", "value"], ...]`.
    fn fields(&mut self, fields: &Fields) {
        let (names, values) = fields.packed();
        if values.is_ascii() && clean(names.as_bytes()) && clean(values) {
            // The usual list: nothing to escape in any name or value, and every value ASCII
            // (so UTF-8 field by field): each is copied as it is, checked once for all.
            self.0
                .reserve(names.len() + values.len() + 8 * fields.len() + 2);
            self.0.push(b'[');
            for (i, (n, v)) in fields.iter().enumerate() {
                if i > 0 {
                    self.0.push(b',');
                }
                self.raw(b"[\"");
                self.raw(n.as_bytes());
                self.raw(b"\",\"");
                self.raw(v);
                self.raw(b"\"]");
            }
            self.0.push(b']');
            return;
        }
        self.0.push(b'[');
        for (i, (n, v)) in fields.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            self.0.push(b'[');
            self.str(n);
            self.0.push(b',');
            self.lossy(v);
            self.0.push(b']');
        }
        self.0.push(b']');
    }

    /// The body fields (those that are set).
    fn body(&mut self, b: &JsonBody) {
        if let Some(v) = &b.body_b64 {
            self.key("body_b64");
            self.raw(b"\"");
            self.raw(v.as_bytes()); // base64: nothing to escape
            self.raw(b"\"");
        }
        if let Some(v) = &b.content_decoded {
            self.key("content_decoded");
            self.str(v);
        }
        if let Some(v) = b.decoded_len {
            self.key("decoded_len");
            self.u64(v as u64);
        }
        if b.decoded_truncated {
            self.key("decoded_truncated");
            self.bool(true);
        }
        if b.decode_failed {
            self.key("decode_failed");
            self.bool(true);
        }
    }

    /// The `"source"` object: the map's entry as published, or the key with `"eni": null`.
    fn attribution(&mut self, a: &Attribution<'_>) {
        match a {
            Attribution::Known(v) => {
                // The map's own JSON: written by serde_json (its keys are the map's). A JSON
                // value cannot fail to write into a Vec; were it to, `null` stands in.
                let mark = self.0.len();
                if serde_json::to_writer(&mut *self.0, v).is_err() {
                    self.0.truncate(mark);
                    self.null();
                }
            }
            Attribution::Unknown(u) => {
                self.raw(b"{\"eni\":null");
                self.key("sender_ip");
                match &u.sender_ip {
                    Some(ip) => self.ip(ip),
                    None => self.null(),
                }
                self.key("vni");
                match u.vni {
                    Some(v) => self.u64(u64::from(v)),
                    None => self.null(),
                }
                self.key("gwlbe");
                match &u.gwlbe {
                    Some(g) => self.str(g),
                    None => self.null(),
                }
                self.0.push(b'}');
            }
        }
    }

    /// `{"ts": …, "ts_us": …` of a message that began at `ts_us` (both objects start so;
    /// `text`: its [`Rfc3339Us`] bytes).
    fn open(&mut self, ts_us: u64, text: &[u8; 27]) {
        self.raw(b"{");
        self.key("ts");
        self.time(text);
        self.key("ts_us");
        self.u64(ts_us);
    }

    /// `"headers"` to the body fields, the same in both objects.
    fn message(
        &mut self,
        headers: &Fields,
        body_len: u64,
        truncated: bool,
        chunked: bool,
        body: &JsonBody,
    ) {
        self.key("headers");
        self.fields(headers);
        self.key("body_len");
        self.u64(body_len);
        self.key("body_truncated");
        self.bool(truncated);
        self.key("chunked");
        self.bool(chunked);
        self.body(body);
    }

    /// The `"response"` object.
    /// `asked`: the request's time and its text (a response in the same second shares it).
    fn response(
        &mut self,
        r: &HttpResponse,
        asked: (u64, &[u8; 27]),
        opts: &RecordOptions,
        stats: &mut DecodeStats,
    ) {
        self.open(r.ts_us, &Rfc3339Us(r.ts_us).bytes_after(asked));
        self.key("status");
        self.u64(u64::from(r.status));
        self.key("reason");
        self.str(&r.reason);
        self.key("version");
        self.str(version(r.version));
        let b = body(&r.body, &r.headers, r.body_truncated, opts, stats);
        self.message(&r.headers, r.body_len, r.body_truncated, r.chunked, &b);
        if r.head_truncated {
            self.key("head_truncated");
            self.bool(true);
        }
        self.0.push(b'}');
    }

    /// The record of a transaction (`sources`: the source map in force), as one JSON object.
    pub(crate) fn record(
        &mut self,
        r: &HttpRequest,
        sources: &SourceMap,
        opts: &RecordOptions,
        stats: &mut DecodeStats,
    ) {
        let time = Rfc3339Us(r.ts_us).bytes();
        self.open(r.ts_us, &time);
        self.key("vni");
        self.u64(u64::from(r.vni));
        self.key("client");
        self.socket(&r.client);
        self.key("peer");
        self.socket(&r.peer);
        self.key("server");
        self.socket(&r.server);
        self.key("method");
        self.str(&r.method);
        self.key("target");
        self.str(&r.target);
        self.key("version");
        self.str(&request_version(r.version_major, r.version));
        let b = body(&r.body, &r.headers, r.body_truncated, opts, stats);
        self.message(&r.headers, r.body_len(), r.body_truncated, r.chunked, &b);
        if !r.trailers.is_empty() {
            self.key("trailers");
            self.fields(&r.trailers);
        }
        if !r.anomalies.is_empty() {
            self.key("anomalies");
            self.0.push(b'[');
            for (i, a) in r.anomalies.iter().enumerate() {
                if i > 0 {
                    self.0.push(b',');
                }
                self.str(a.as_str());
            }
            self.0.push(b']');
        }
        if let Some(g) = r.gwlbe_name() {
            self.key("gwlbe");
            self.str(&g);
        }
        if let Some(ip) = &r.mirror_source {
            self.key("mirror_source");
            self.ip(ip);
        }
        self.key("source");
        self.attribution(&sources.attribute(r.source_key()));
        if let Some(k) = r.via.as_deref() {
            self.key("via");
            self.attribution(&sources.attribute(*k));
        }
        self.key("response");
        match r.response.as_deref() {
            Some(resp) => self.response(resp, (r.ts_us, &time), opts, stats),
            None => self.null(),
        }
        if r.response.is_none()
            && let Some(m) = r.response_missing
        {
            self.key("response_missing");
            self.str(m.as_str());
        }
        self.key("latency_ms");
        match r.latency_us() {
            Some(us) => self.f64(us as f64 / 1000.0),
            None => self.null(),
        }
        self.0.push(b'}');
    }
}

/// Appends the record of `r` and a line feed to `line`.
pub fn write_line(
    line: &mut Vec<u8>,
    r: &HttpRequest,
    sources: &SourceMap,
    opts: &RecordOptions,
    stats: &mut DecodeStats,
) {
    JsonOut(line).record(r, sources, opts, stats);
    line.push(b'\n');
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for µs since the UNIX epoch (UTC). A time past the year 9999
/// (the `time` crate's range; capture timestamps are 32-bit seconds) reads as the largest one.
pub fn rfc3339_us(ts_us: u64) -> String {
    Rfc3339Us(ts_us).to_string()
}

/// A time in µs since the UNIX epoch, shown (and serialized) as [`rfc3339_us`] writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339Us(pub u64);

impl Rfc3339Us {
    /// The 27 bytes of `YYYY-MM-DDTHH:MM:SS.ffffffZ`, by hand (through `fmt` they cost ~5,000
    /// instructions per record, through the `time` crate's calendar ~600): the date from the
    /// day number with H. Hinnant's `civil_from_days` (proleptic Gregorian, as `time` counts;
    /// the tests compare the two for any time). Past 9999-12-31T23:59:59 (the `time` crate's
    /// range, which this kept) the date and time stay there and only the µs move.
    fn bytes(&self) -> [u8; 27] {
        const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        let secs = (self.0 / 1_000_000).min(LAST);
        let (days, tod) = (secs / 86_400, secs % 86_400);
        let z = days + 719_468; // days since 0000-03-01
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        put_digits(&mut b, 0, year, 4);
        put_digits(&mut b, 5, month, 2);
        put_digits(&mut b, 8, day, 2);
        put_digits(&mut b, 11, tod / 3_600, 2);
        put_digits(&mut b, 14, tod / 60 % 60, 2);
        put_digits(&mut b, 17, tod % 60, 2);
        put_digits(&mut b, 20, self.0 % 1_000_000, 6);
        b
    }

    /// [`Rfc3339Us::bytes`], from those of an `earlier` time when both are in the same
    /// second: only the µs are written (a response and its request, nearly always).
    fn bytes_after(&self, earlier: (u64, &[u8; 27])) -> [u8; 27] {
        if self.0 / 1_000_000 != earlier.0 / 1_000_000 {
            return self.bytes();
        }
        let mut b = *earlier.1;
        put_digits(&mut b, 20, self.0 % 1_000_000, 6);
        b
    }
}

impl fmt::Display for Rfc3339Us {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.bytes()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    /// The record as serde_json wrote it before [`JsonOut`]: the model the hand-written
    /// output is compared with, byte for byte.
    mod model {
        use std::borrow::Cow;
        use std::net::{IpAddr, SocketAddr};

        use serde::ser::SerializeSeq;
        use serde::{Serialize, Serializer};

        use super::super::*;

        /// The request part of a record (the fields of the request-only records, unchanged).
        #[derive(Debug, Serialize)]
        pub struct JsonRequest<'a> {
            pub ts: Rfc3339Us,
            pub ts_us: u64,
            pub vni: u32,
            /// The real client (the PROXY protocol source when the stream had a header).
            #[serde(serialize_with = "as_text")]
            pub client: SocketAddr,
            /// The inner TCP source (equal to `client` without a PROXY header).
            #[serde(serialize_with = "as_text")]
            pub peer: SocketAddr,
            #[serde(serialize_with = "as_text")]
            pub server: SocketAddr,
            pub method: &'a str,
            pub target: &'a str,
            /// The version as the request line named it (`HTTP/1.1`; `HTTP/0.9`, `HTTP/2.0`,
            /// `HTTP/1.10` when the parser's leniency read it).
            pub version: Cow<'static, str>,
            pub headers: Fields<'a>,
            pub body_len: usize,
            pub body_truncated: bool,
            pub chunked: bool,
            #[serde(flatten)]
            pub body: JsonBody,
            /// Trailer fields of a chunked body (never merged into `headers`); absent when none.
            #[serde(skip_serializing_if = "Fields::is_empty")]
            pub trailers: Fields<'a>,
            /// The leniencies the request needed (`docs/evasion.md`); absent when none.
            #[serde(skip_serializing_if = "Vec::is_empty")]
            pub anomalies: Vec<&'static str>,
            /// The Gateway Load Balancer endpoint (`vpce-…`) the mirror came through; absent
            /// for VXLAN.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub gwlbe: Option<String>,
            /// The IP source of the VXLAN datagrams (the mirror session's source ENI); absent for
            /// plain captures.
            #[serde(
                skip_serializing_if = "Option::is_none",
                serialize_with = "opt_as_text"
            )]
            pub mirror_source: Option<IpAddr>,
        }

        /// The response part of a record.
        #[derive(Debug, Serialize)]
        pub struct JsonResponse<'a> {
            pub ts: Rfc3339Us,
            pub ts_us: u64,
            pub status: u16,
            pub reason: &'a str,
            pub version: &'static str,
            pub headers: Fields<'a>,
            /// Length of the body as framed (de-chunked, not decompressed).
            pub body_len: u64,
            pub body_truncated: bool,
            pub chunked: bool,
            #[serde(flatten)]
            pub body: JsonBody,
            /// The head was cut at a cap (`HttpResponse::head_truncated`); absent otherwise.
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            pub head_truncated: bool,
        }

        /// One record.
        #[derive(Debug, Serialize)]
        pub struct Record<'a> {
            #[serde(flatten)]
            pub request: JsonRequest<'a>,
            /// The source the request is attributed to.
            pub source: Attribution<'a>,
            /// Duplicate mirroring (`crate::dedup`): the source of the load balancer's copy of this
            /// request, collapsed into this one; absent otherwise.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub via: Option<Attribution<'a>>,
            pub response: Option<JsonResponse<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub response_missing: Option<&'static str>,
            pub latency_ms: Option<f64>,
        }

        /// Header or trailer fields, written as `[["name", "value"], ...]` (values as UTF-8,
        /// invalid bytes replaced) straight from the request: no list is built per record.
        #[derive(Debug, Clone, Copy)]
        pub struct Fields<'a>(pub &'a crate::engine::request::Fields);

        impl Fields<'_> {
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl Serialize for Fields<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for (n, v) in self.0 {
                    seq.serialize_element(&(n, String::from_utf8_lossy(v)))?;
                }
                seq.end()
            }
        }

        /// An IPv4 address (and port) serialized as its text.
        fn v4_text<S: Serializer>(ip: [u8; 4], port: Option<u16>, s: S) -> Result<S::Ok, S::Error> {
            // (by hand before; `Display` is what it matched)
            match port {
                Some(p) => s.collect_str(&std::net::SocketAddrV4::new(ip.into(), p)),
                None => s.collect_str(&std::net::Ipv4Addr::from(ip)),
            }
        }

        /// An address written as its text, as `Display` shows it.
        pub fn as_text<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
            match a {
                SocketAddr::V4(v4) => v4_text(v4.ip().octets(), Some(v4.port()), s),
                SocketAddr::V6(_) => s.collect_str(a),
            }
        }

        pub fn opt_as_text<S: Serializer>(v: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(IpAddr::V4(v4)) => v4_text(v4.octets(), None, s),
                Some(ip) => s.collect_str(ip),
                None => s.serialize_none(),
            }
        }

        /// The request fields of a record.
        pub fn request_json<'a>(
            r: &'a HttpRequest,
            opts: &RecordOptions,
            stats: &mut DecodeStats,
        ) -> JsonRequest<'a> {
            JsonRequest {
                ts: Rfc3339Us(r.ts_us),
                ts_us: r.ts_us,
                vni: r.vni,
                client: r.client,
                peer: r.peer,
                server: r.server,
                method: &r.method,
                target: &r.target,
                version: request_version(r.version_major, r.version),
                headers: Fields(&r.headers),
                body_len: r.body_len() as usize,
                body_truncated: r.body_truncated,
                chunked: r.chunked,
                body: body(&r.body, &r.headers, r.body_truncated, opts, stats),
                trailers: Fields(&r.trailers),
                anomalies: r.anomalies.iter().map(|a| a.as_str()).collect(),
                gwlbe: r.gwlbe_name(),
                mirror_source: r.mirror_source,
            }
        }

        /// The response object of a record.
        pub fn response_json<'a>(
            r: &'a HttpResponse,
            opts: &RecordOptions,
            stats: &mut DecodeStats,
        ) -> JsonResponse<'a> {
            JsonResponse {
                ts: Rfc3339Us(r.ts_us),
                ts_us: r.ts_us,
                status: r.status,
                reason: &r.reason,
                version: version(r.version),
                headers: Fields(&r.headers),
                body_len: r.body_len,
                body_truncated: r.body_truncated,
                chunked: r.chunked,
                body: body(&r.body, &r.headers, r.body_truncated, opts, stats),
                head_truncated: r.head_truncated,
            }
        }

        /// The record of a transaction (`sources`: the source map in force).
        pub fn record<'a>(
            r: &'a HttpRequest,
            sources: &'a SourceMap,
            opts: &RecordOptions,
            stats: &mut DecodeStats,
        ) -> Record<'a> {
            Record {
                request: request_json(r, opts, stats),
                source: sources.attribute(r.source_key()),
                via: r.via.as_deref().map(|k| sources.attribute(*k)),
                response: r
                    .response
                    .as_deref()
                    .map(|resp| response_json(resp, opts, stats)),
                response_missing: if r.response.is_none() {
                    r.response_missing.map(|m| m.as_str())
                } else {
                    None
                },
                latency_ms: r.latency_us().map(|us| us as f64 / 1000.0),
            }
        }

        impl Serialize for Rfc3339Us {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(std::str::from_utf8(&self.bytes()).unwrap_or_default())
            }
        }
    }

    use super::*;
    use crate::engine::request::ResponseMissing;
    use std::io::Write;

    fn request() -> HttpRequest {
        HttpRequest {
            ts_us: 1_000,
            vni: 7,
            headers: vec![("Host", "h")].into(),
            response_missing: Some(ResponseMissing::Gap),
            ..HttpRequest::new(
                "GET",
                "/x",
                "10.0.0.1:1234".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap(),
            )
        }
    }

    /// The record of `r` as the writer writes it.
    fn line(r: &HttpRequest, sources: &SourceMap, opts: &RecordOptions) -> String {
        let mut out = Vec::new();
        JsonOut(&mut out).record(r, sources, opts, &mut DecodeStats::default());
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    proptest::proptest! {
        /// The hand-formatted texts are what `Display` writes (addresses) and what `fmt` made
        /// of the `time` crate's fields (timestamps).
        #[test]
        fn hand_formatted_addresses_and_times_read_as_display_writes_them(
            ip in proptest::prelude::any::<[u8; 4]>(),
            port in proptest::prelude::any::<u16>(),
            v6 in proptest::prelude::any::<[u8; 16]>(),
            zero in proptest::prelude::any::<u8>(),
            scope in proptest::prop_oneof![proptest::strategy::Just(0u32), 1u32..],
            any_ts in proptest::prelude::any::<u64>(),
            // Up to a day past the last time the calendar shows (most u64 are past it).
            in_range in 0u64..253_402_387_200_000_000,
        ) {
            use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
            // IPv6 with runs of zero groups (where `zero` has a bit), IPv4-mapped, scoped.
            let mut groups = Ipv6Addr::from(v6).segments();
            for (i, g) in groups.iter_mut().enumerate() {
                if zero & (1 << i) != 0 {
                    *g = 0;
                }
            }
            let runs = Ipv6Addr::from(groups);
            let mapped = Ipv4Addr::from(ip).to_ipv6_mapped();
            for (a, b) in [
                (SocketAddr::from((ip, port)), IpAddr::from(ip)),
                (SocketAddr::from((v6, port)), IpAddr::from(v6)),
                (SocketAddr::from((runs, port)), IpAddr::from(runs)),
                (SocketAddr::from((mapped, port)), IpAddr::from(mapped)),
                (SocketAddrV6::new(runs, port, 0, scope).into(), IpAddr::from(runs)),
            ] {
                let (mut sa, mut ia) = (Vec::new(), Vec::new());
                JsonOut(&mut sa).socket(&a);
                JsonOut(&mut ia).ip(&b);
                proptest::prop_assert_eq!(String::from_utf8(sa).unwrap(), format!("\"{a}\""));
                proptest::prop_assert_eq!(String::from_utf8(ia).unwrap(), format!("\"{b}\""));
            }
            for ts in [any_ts, in_range] {
            let t = i64::try_from(ts / 1_000_000)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
            let want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                ts % 1_000_000
            );
            proptest::prop_assert_eq!(rfc3339_us(ts), want.clone());
            // From an earlier time's text: the same (in its second or not).
            for earlier in [ts - ts % 1_000_000, ts.saturating_sub(1), ts.saturating_sub(999_999)] {
                let text = Rfc3339Us(earlier).bytes();
                proptest::prop_assert_eq!(
                    Rfc3339Us(ts).bytes_after((earlier, &text)),
                    Rfc3339Us(ts).bytes()
                );
            }
            proptest::prop_assert_eq!(
                serde_json::to_string(&Rfc3339Us(ts)).unwrap(),
                format!("\"{want}\"")
            );
            }
        }
    }

    /// Text for strings: every escape class (quotes, backslashes, control bytes, DEL) and
    /// multi-byte UTF-8, long enough to cross the 8-byte steps of the writer's scan.
    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::string::string_regex(r#"[a-z"\\\x00-\x1f\x7f é€😀/:=-]{0,40}"#).unwrap()
    }

    fn fields() -> impl proptest::strategy::Strategy<Value = Vec<(String, Vec<u8>)>> {
        use proptest::prelude::*;
        // Values: any bytes (invalid UTF-8 included) or text.
        let value = || {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..24),
                text().prop_map(String::into_bytes),
            ]
        };
        // Lists with nothing to escape (the writer's shortcut), and such lists but for one
        // field anywhere in them.
        let plain = || proptest::string::string_regex(r"[A-Za-z0-9 ,./:;=~-]{0,30}").unwrap();
        let plain_field = move || (plain(), plain().prop_map(String::into_bytes));
        prop_oneof![
            proptest::collection::vec((text(), value()), 0..4),
            proptest::collection::vec(plain_field(), 0..6),
            (
                proptest::collection::vec(plain_field(), 1..6),
                (text(), value()),
                any::<prop::sample::Index>(),
            )
                .prop_map(|(mut list, odd, at)| {
                    let at = at.index(list.len() + 1);
                    list.insert(at, odd);
                    list
                }),
        ]
    }

    fn addr() -> impl proptest::strategy::Strategy<Value = SocketAddr> {
        use proptest::prelude::*;
        prop_oneof![
            any::<([u8; 4], u16)>().prop_map(SocketAddr::from),
            any::<([u8; 16], u16)>().prop_map(SocketAddr::from),
        ]
    }

    proptest::proptest! {
        /// The hand-written record is byte for byte what serde_json wrote for the same
        /// transaction (the model), whatever the request, its response or its absence, the
        /// body options and the source's attribution.
        #[test]
        fn the_written_record_is_what_serde_json_wrote_for_it(
            (method, target, reason) in (text(), text(), text()),
            (headers, trailers, resp_headers) in (fields(), fields(), fields()),
            (client, peer, server) in (addr(), addr(), addr()),
            ts_us in proptest::prelude::any::<u64>(),
            (vni, major, minor) in (0u32..1 << 24, 0u8..10, 0u8..12),
            (body, resp_body) in (
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
            ),
            (gwlbe, mirror, via) in (
                proptest::option::of(proptest::prelude::any::<u64>()),
                proptest::option::of(addr()),
                proptest::option::of(addr()),
            ),
            anomalies in 0usize..1 << 8,
            response in proptest::option::of((
                proptest::prelude::any::<u64>(),
                100u16..600,
                0u8..2,
                proptest::prelude::any::<u64>(),
                proptest::prelude::any::<(bool, bool, bool)>(),
            )),
            missing in 0usize..9,
            (with_body, decode, known) in proptest::prelude::any::<(bool, bool, bool)>(),
            (truncated, chunked) in proptest::prelude::any::<(bool, bool)>(),
        ) {
            use crate::engine::stats::{Anomaly, ResponseMissing};
            let mut r = HttpRequest {
                ts_us,
                vni,
                peer,
                headers: headers.into(),
                trailers: trailers.into(),
                body,
                body_truncated: truncated,
                chunked,
                version_major: major,
                version: minor,
                gwlbe,
                mirror_source: mirror.map(|m| m.ip()),
                via: via.map(|v| {
                    Box::new(crate::engine::source::SourceKey {
                        gwlbe: None,
                        sender: Some(v.ip()),
                        vni: Some(vni),
                    })
                }),
                response_missing: Some(ResponseMissing::ALL[missing % ResponseMissing::ALL.len()]),
                ..HttpRequest::new(method, target, client, server)
            };
            for (i, a) in Anomaly::ALL.iter().enumerate() {
                if anomalies & (1 << (i % 8)) != 0 && i % 3 == 0 {
                    r.anomalies.insert(*a);
                }
            }
            if decode {
                r.headers.push("Content-Encoding", b"gzip");
            }
            if let Some((ts, status, version, len, (cut, chunked, head_cut))) = response {
                r.response = Some(Box::new(HttpResponse {
                    ts_us: ts,
                    version,
                    status,
                    reason,
                    headers: resp_headers.into(),
                    body: resp_body,
                    body_len: len,
                    chunked,
                    body_truncated: cut,
                    head_truncated: head_cut,
                }));
            }
            let sender = r.mirror_source.map(|a| a.to_string());
            let map = SourceMap::parse(
                serde_json::json!({
                    "version": 1,
                    "sources": [{"eni": "eni-0a1b2c3d4e5f60718", "sender_ip": sender,
                                 "vni": vni, "name": "web \"a\"\n", "tags": {"k": [1, 2.5]}}],
                })
                .to_string()
                .as_bytes(),
            )
            .unwrap();
            let sources = if known && sender.is_some() { &map } else { SourceMap::none() };
            let opts = RecordOptions {
                with_body,
                decode_bodies: decode.then_some(64),
            };
            let (mut a, mut b) = (DecodeStats::default(), DecodeStats::default());
            let mut written = Vec::new();
            JsonOut(&mut written).record(&r, sources, &opts, &mut a);
            let want = serde_json::to_vec(&model::record(&r, sources, &opts, &mut b)).unwrap();
            // Bytes compared (invalid UTF-8 written would read the same once made lossy).
            proptest::prop_assert!(
                written == want,
                "written {}\nwanted  {}",
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&want)
            );
            proptest::prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds_across_leap_days_and_centuries() {
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_us(951_782_400_123_456),
            "2000-02-29T00:00:00.123456Z"
        );
        assert_eq!(
            rfc3339_us(4_107_542_399_999_999),
            "2100-02-28T23:59:59.999999Z"
        );
        assert_eq!(
            rfc3339_us(1_709_251_199_000_001),
            "2024-02-29T23:59:59.000001Z"
        );
        assert_eq!(rfc3339_us(u64::MAX), "9999-12-31T23:59:59.551615Z");
    }

    #[test]
    fn a_missing_response_is_null_with_its_reason() {
        let r = request();
        let v: serde_json::Value =
            serde_json::from_str(&line(&r, &SourceMap::empty(), &RecordOptions::default()))
                .unwrap();
        assert_eq!(v["response"], serde_json::Value::Null);
        assert_eq!(v["response_missing"], "gap");
        assert_eq!(v["latency_ms"], serde_json::Value::Null);
        assert_eq!(v["method"], "GET");
        assert!(v.get("body_b64").is_none());
        for absent in ["trailers", "anomalies", "gwlbe", "mirror_source"] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn trailers_anomalies_the_version_read_and_the_tunnel_are_in_the_record() {
        use crate::engine::stats::{Anomalies, Anomaly};
        let mut r = request();
        r.version_major = 2;
        r.version = 0;
        r.chunked = true;
        r.trailers = vec![("Host", "evil")].into();
        r.anomalies = Anomalies::NONE
            .with(Anomaly::Version)
            .with(Anomaly::MultipleSpaces);
        r.gwlbe = Some(0x0123_4567_89ab_cdef);
        r.mirror_source = Some("10.1.2.3".parse().unwrap());
        let line = line(&r, &SourceMap::empty(), &RecordOptions::default());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["version"], "HTTP/2.0");
        assert_eq!(
            v["headers"].as_array().unwrap().len(),
            1,
            "trailers stay apart"
        );
        assert_eq!(v["trailers"], serde_json::json!([["Host", "evil"]]));
        assert_eq!(
            v["anomalies"],
            serde_json::json!(["multiple_spaces", "version"])
        );
        assert_eq!(v["gwlbe"], r.gwlbe_name().unwrap());
        assert_eq!(v["mirror_source"], "10.1.2.3");
        // The request's fields come before the response's.
        assert!(line.find("\"mirror_source\"").unwrap() < line.find("\"response\"").unwrap());
    }

    #[test]
    fn a_paired_response_has_its_fields_and_the_latency() {
        let mut r = request();
        r.response_missing = None;
        r.response = Some(Box::new(HttpResponse {
            ts_us: 3_500,
            version: 1,
            status: 404,
            reason: "Not Found".into(),
            headers: vec![("Content-Length", "2")].into(),
            body: b"no".to_vec(),
            body_len: 2,
            chunked: false,
            body_truncated: false,
            head_truncated: false,
        }));
        let opts = RecordOptions {
            with_body: true,
            decode_bodies: None,
        };
        let line = line(&r, &SourceMap::empty(), &opts);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["response"]["status"], 404);
        assert_eq!(v["response"]["reason"], "Not Found");
        assert_eq!(v["response"]["version"], "HTTP/1.1");
        assert_eq!(v["response"]["headers"][0][0], "Content-Length");
        assert_eq!(v["response"]["body_b64"], "bm8=");
        assert_eq!(v["latency_ms"], 2.5);
        assert!(v.get("response_missing").is_none());
        assert!(line.starts_with("{\"ts\":\"1970-01-01T00:00:00.001000Z\",\"ts_us\":1000,"));
    }

    #[test]
    fn stacked_codings_are_undone_last_first_and_unknown_ones_leave_the_body_as_is() {
        let mut stats = DecodeStats::default();
        let opts = RecordOptions {
            with_body: true,
            decode_bodies: Some(1 << 20),
        };
        let plain = b"stacked stacked stacked".repeat(50);
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&plain).unwrap();
        let deflate_then_gzip = gzip(&z.finish().unwrap());
        // One field listing both, in the order applied.
        let hdr = Fields::from(vec![("Content-Encoding", "deflate, gzip")]);
        let b = body(&deflate_then_gzip, &hdr, false, &opts, &mut stats);
        assert_eq!(b.content_decoded.as_deref(), Some("deflate, gzip"));
        assert_eq!(b.body_b64.as_deref(), Some(b64(&plain).as_str()));
        assert_eq!(b.decoded_len, Some(plain.len()));
        // Two fields, gzip twice; `identity` changes nothing.
        let twice = gzip(&gzip(&plain));
        let hdr = Fields::from(vec![
            ("Content-Encoding", "gzip"),
            ("Content-Encoding", "identity, gzip"),
        ]);
        let b = body(&twice, &hdr, false, &opts, &mut stats);
        assert_eq!(b.content_decoded.as_deref(), Some("gzip, gzip"));
        assert_eq!(b.body_b64.as_deref(), Some(b64(&plain).as_str()));
        // In the wrong order it does not decode: kept as is, flagged.
        let hdr = Fields::from(vec![("Content-Encoding", "gzip, deflate")]);
        let b = body(&deflate_then_gzip, &hdr, false, &opts, &mut stats);
        assert!(b.decode_failed && b.content_decoded.is_none());
        assert_eq!(
            b.body_b64.as_deref(),
            Some(b64(&deflate_then_gzip).as_str())
        );
        // A coding it does not undo (br) anywhere in the list: the body as it is, unflagged.
        let hdr = Fields::from(vec![("Content-Encoding", "gzip, br")]);
        let b = body(&twice, &hdr, false, &opts, &mut stats);
        assert!(!b.decode_failed && b.content_decoded.is_none());
        assert_eq!(
            (stats.decoded, stats.failed),
            (2, 1),
            "decoded twice, failed once"
        );
    }

    #[test]
    fn gzip_and_deflate_bodies_are_decoded_and_bombs_are_cut() {
        let mut stats = DecodeStats::default();
        let opts = RecordOptions {
            with_body: true,
            decode_bodies: Some(1000),
        };
        let plain = b"hello hello hello".to_vec();
        let hdr = |c: &str| Fields::from(vec![("Content-Encoding", c)]);
        let b = body(&gzip(&plain), &hdr("gzip"), false, &opts, &mut stats);
        assert_eq!(b.content_decoded.as_deref(), Some("gzip"));
        assert_eq!(
            b.body_b64.unwrap(),
            base64::engine::general_purpose::STANDARD.encode(&plain)
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&plain).unwrap();
        let b = body(
            &z.finish().unwrap(),
            &hdr("deflate"),
            false,
            &opts,
            &mut stats,
        );
        assert_eq!(b.decoded_len, Some(plain.len()));
        // A bomb: 10 MB of zeros in a few KB.
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        let b = body(&bomb, &hdr("gzip"), false, &opts, &mut stats);
        assert_eq!((b.decoded_len, b.decoded_truncated), (Some(1000), true));
        // Not gzip at all: kept as is, counted.
        let b = body(b"plain", &hdr("gzip"), false, &opts, &mut stats);
        assert!(b.decode_failed);
        assert_eq!(b.body_b64.unwrap(), "cGxhaW4=");
        // A body cut at the cap decodes as far as it goes.
        let long: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let gz = gzip(&long);
        let b = body(&gz[..gz.len() / 2], &hdr("gzip"), true, &opts, &mut stats);
        assert!(b.decoded_truncated && !b.decode_failed);
        assert_eq!(
            stats,
            DecodeStats {
                decoded: 4,
                truncated: 2,
                failed: 1
            }
        );
    }
}
