//! The JSON record of one transaction — a request and its response, or the reason it has none —
//! written by `rebuilder replay --format jsonl` and by the daemon's ndjson sink (one
//! serializer for both).
//!
//! Fields, in order: the request's (`ts`, `ts_us`, `vni`, `client`, `peer`, `server`,
//! `method`, `target`, `version`, `headers`, `body_len`, `body_truncated`, `chunked`,
//! `body_b64` with bodies, `trailers` and `anomalies` when there are any, `gwlbe` and
//! `mirror_source` when known), then `source` (the mirrored source the request is attributed
//! to: the source map's entry, or the key with `"eni": null`; [`crate::sources`]), `via`
//! (the load balancer's copy collapsed into this one, [`crate::dedup`]; only then), then
//! `response` (an object, or `null`), `response_missing`
//! (the reason, only when `response` is `null`) and `latency_ms` (first request byte to first
//! response byte, capture clock; `null` without a response).
//!
//! Bodies: with [`RecordOptions::decode_bodies`], a body whose `Content-Encoding` is `gzip`
//! (`x-gzip`) or `deflate` is decompressed for `body_b64` (the `*_len` fields stay the length
//! as framed) and marked `"content_decoded": "gzip"`; the decoded size is capped
//! (`max_decoded_bytes`: decompression bombs are cut, `decoded_truncated`); a body that does
//! not decode is kept as is and marked `"decode_failed": true`. Counted in [`DecodeStats`].

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use crate::engine::request::{HttpRequest, HttpResponse};
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
    /// The Gateway Load Balancer endpoint (`vpce-…`) the mirror came through; absent for VXLAN.
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

/// A body as shown (only with bodies or decoding).
#[derive(Debug, Default, Serialize)]
pub struct JsonBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_decoded: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoded_len: Option<usize>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub decoded_truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub decode_failed: bool,
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

/// Header or trailer fields, written as `[["name", "value"], ...]` (values as UTF-8, invalid
/// bytes replaced) straight from the request: no list is built per record.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a>(pub &'a [(String, Vec<u8>)]);

impl Fields<'_> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (n, v) in self.0 {
            seq.serialize_element(&(n.as_str(), String::from_utf8_lossy(v)))?;
        }
        seq.end()
    }
}

/// Digits of `v` into `buf` at `at`, at least `width` of them (zero-padded); the index after.
fn put_digits(buf: &mut [u8], at: usize, mut v: u64, width: usize) -> usize {
    let mut tmp = [0u8; 20];
    let mut n = 0;
    while v > 0 || n < width.max(1) {
        tmp[n] = b'0' + (v % 10) as u8;
        v /= 10;
        n += 1;
    }
    for (i, d) in tmp[..n].iter().rev().enumerate() {
        buf[at + i] = *d;
    }
    at + n
}

/// An IPv4 address (and port) as `a.b.c.d[:port]` into `buf`; its length.
fn put_v4(buf: &mut [u8; 21], ip: [u8; 4], port: Option<u16>) -> usize {
    let mut at = 0;
    for (i, o) in ip.iter().enumerate() {
        if i > 0 {
            buf[at] = b'.';
            at += 1;
        }
        at = put_digits(buf, at, u64::from(*o), 1);
    }
    if let Some(p) = port {
        buf[at] = b':';
        at = put_digits(buf, at + 1, u64::from(p), 1);
    }
    at
}

/// An IPv4 address (and port) serialized as its text.
fn v4_text<S: Serializer>(ip: [u8; 4], port: Option<u16>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 21];
    let n = put_v4(&mut buf, ip, port);
    s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
}

/// An address written as its text, as `Display` shows it. The common IPv4 case is formatted by
/// hand: through `fmt` it was ~10 % of a `--format jsonl` run's instructions.
fn as_text<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    match a {
        SocketAddr::V4(v4) => v4_text(v4.ip().octets(), Some(v4.port()), s),
        SocketAddr::V6(_) => s.collect_str(a),
    }
}

fn opt_as_text<S: Serializer>(v: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(IpAddr::V4(v4)) => v4_text(v4.octets(), None, s),
        Some(ip) => s.collect_str(ip),
        None => s.serialize_none(),
    }
}

/// The body fields of `body` (whose headers are `headers`; `cut`: the body was cut at the
/// cap, so a compressed stream may end early).
fn body(
    body: &[u8],
    headers: &[(String, Vec<u8>)],
    cut: bool,
    opts: &RecordOptions,
    stats: &mut DecodeStats,
) -> JsonBody {
    let mut out = JsonBody::default();
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let coding = headers
        .iter()
        .rfind(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
        .map(|(_, v)| v.trim_ascii().to_ascii_lowercase());
    let coding = match coding.as_deref() {
        Some(b"gzip" | b"x-gzip") => Some("gzip"),
        Some(b"deflate") => Some("deflate"),
        _ => None,
    };
    if let (Some(max), Some(coding), false) = (opts.decode_bodies, coding, body.is_empty()) {
        match decode(body, coding, max, cut) {
            Some((decoded, truncated)) => {
                stats.decoded += 1;
                stats.truncated += u64::from(truncated);
                out.content_decoded = Some(coding);
                out.decoded_len = Some(decoded.len());
                out.decoded_truncated = truncated;
                if opts.with_body {
                    out.body_b64 = Some(encode(&decoded));
                }
                return out;
            }
            None => {
                stats.failed += 1;
                out.decode_failed = true;
            }
        }
    }
    if opts.with_body {
        out.body_b64 = Some(encode(body));
    }
    out
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
        body_len: r.body.len(),
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

/// Appends the record of `r` and a line feed to `line`.
pub fn write_line(
    line: &mut Vec<u8>,
    r: &HttpRequest,
    sources: &SourceMap,
    opts: &RecordOptions,
    stats: &mut DecodeStats,
) -> std::io::Result<()> {
    serde_json::to_writer(&mut *line, &record(r, sources, opts, stats))
        .map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(())
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
    /// The 27 bytes of `YYYY-MM-DDTHH:MM:SS.ffffffZ` (the calendar from the `time` crate, the
    /// digits by hand: through `fmt` they cost ~5,000 instructions per record).
    fn bytes(&self) -> [u8; 27] {
        let t = i64::try_from(self.0 / 1_000_000)
            .ok()
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        let year = u64::try_from(t.year()).unwrap_or(0).min(9999);
        put_digits(&mut b, 0, year, 4);
        put_digits(&mut b, 5, u64::from(u8::from(t.month())), 2);
        put_digits(&mut b, 8, u64::from(t.day()), 2);
        put_digits(&mut b, 11, u64::from(t.hour()), 2);
        put_digits(&mut b, 14, u64::from(t.minute()), 2);
        put_digits(&mut b, 17, u64::from(t.second()), 2);
        put_digits(&mut b, 20, self.0 % 1_000_000, 6);
        b
    }
}

impl fmt::Display for Rfc3339Us {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.bytes()).unwrap_or_default())
    }
}

impl Serialize for Rfc3339Us {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(&self.bytes()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::request::ResponseMissing;
    use std::io::Write;

    fn request() -> HttpRequest {
        HttpRequest {
            ts_us: 1_000,
            vni: 7,
            headers: vec![("Host".into(), b"h".to_vec())],
            response_missing: Some(ResponseMissing::Gap),
            ..HttpRequest::new(
                "GET",
                "/x",
                "10.0.0.1:1234".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap(),
            )
        }
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
            ts in proptest::prelude::any::<u64>(),
        ) {
            #[derive(Serialize)]
            struct A {
                #[serde(serialize_with = "as_text")]
                a: SocketAddr,
                #[serde(serialize_with = "opt_as_text")]
                b: Option<IpAddr>,
            }
            for (a, b) in [
                (SocketAddr::from((ip, port)), IpAddr::from(ip)),
                (SocketAddr::from((v6, port)), IpAddr::from(v6)),
            ] {
                let json = serde_json::to_string(&A { a, b: Some(b) }).unwrap();
                proptest::prop_assert_eq!(json, format!(r#"{{"a":"{a}","b":"{b}"}}"#));
            }
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
            proptest::prop_assert_eq!(
                serde_json::to_string(&Rfc3339Us(ts)).unwrap(),
                format!("\"{want}\"")
            );
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
        let v = serde_json::to_value(record(
            &r,
            &SourceMap::empty(),
            &RecordOptions::default(),
            &mut DecodeStats::default(),
        ))
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
        r.trailers = vec![("Host".into(), b"evil".to_vec())];
        r.anomalies = Anomalies::NONE
            .with(Anomaly::Version)
            .with(Anomaly::MultipleSpaces);
        r.gwlbe = Some(0x0123_4567_89ab_cdef);
        r.mirror_source = Some("10.1.2.3".parse().unwrap());
        let line = serde_json::to_string(&record(
            &r,
            &SourceMap::empty(),
            &RecordOptions::default(),
            &mut DecodeStats::default(),
        ))
        .unwrap();
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
            headers: vec![("Content-Length".into(), b"2".to_vec())],
            body: b"no".to_vec(),
            body_len: 2,
            chunked: false,
            body_truncated: false,
        }));
        let opts = RecordOptions {
            with_body: true,
            decode_bodies: None,
        };
        let line = serde_json::to_string(&record(
            &r,
            &SourceMap::empty(),
            &opts,
            &mut DecodeStats::default(),
        ))
        .unwrap();
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
    fn gzip_and_deflate_bodies_are_decoded_and_bombs_are_cut() {
        let mut stats = DecodeStats::default();
        let opts = RecordOptions {
            with_body: true,
            decode_bodies: Some(1000),
        };
        let plain = b"hello hello hello".to_vec();
        let hdr = |c: &str| vec![("Content-Encoding".to_string(), c.as_bytes().to_vec())];
        let b = body(&gzip(&plain), &hdr("gzip"), false, &opts, &mut stats);
        assert_eq!(b.content_decoded, Some("gzip"));
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
