//! The evasion corpus: request streams an attacker can send, each with what the common
//! origins do with it (measured: nginx 1.22 Debian, Apache 2.4, Node 20 / llhttp, Go 1.27 —
//! `docs/evasion.md` has the matrix and the sources) and what the analyzer is given.
//!
//! Verdict letters: `A` served, `R<code>` rejected, `I` served with that header field ignored,
//! `H` head handed to the application then the body failed, `W` the server waits for more.
//!
//! Shared by `evasion_nginx.rs` (every case also goes to a real nginx, the oracle) and kept
//! apart from the cases that depend on work merged later (`evasion_after_merge.rs`).

#![allow(dead_code)]

use rebuilder::engine::stats::Anomaly;
use rebuilder::{Engine, EngineConfig, EngineStats, HttpRequest};
use rebuilder_testkit::frames::TcpConn;

/// One case.
pub struct Case {
    /// Row of the matrix in `docs/evasion.md` (`A1`…), or `X…` for cases of our own.
    pub id: &'static str,
    pub what: &'static str,
    /// Issue 14 item the case checks.
    pub item: u8,
    /// nginx · Apache · Node · Go.
    pub origins: &'static str,
    /// The client's bytes on one connection.
    pub wire: fn() -> Vec<u8>,
    /// What the analyzer is given, in order: (method, target, body).
    pub sees: &'static [(&'static str, &'static str, &'static str)],
    /// Anomalies the first request seen must carry.
    pub flags: &'static [Anomaly],
}

/// A request that follows most cases, to show where the origin (and the engine) thinks the
/// case's message ended.
pub const SENTINEL: &[u8] = b"GET /sentinel HTTP/1.1\r\nHost: h\r\n\r\n";

/// `parts` concatenated.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const S: (&str, &str, &str) = ("GET", "/sentinel", "");

macro_rules! case {
    ($id:literal, $item:literal, $what:literal, $origins:literal, $wire:expr, [$($m:literal $t:literal $b:literal),* $(,)?] $(, flags [$($f:ident),*])?) => {
        Case {
            id: $id,
            item: $item,
            what: $what,
            origins: $origins,
            wire: $wire,
            sees: &[$(($m, $t, $b)),*],
            flags: &[$($(Anomaly::$f),*)?],
        }
    };
}

fn many_headers(n: usize) -> Vec<u8> {
    let mut w = b"GET /many HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 1..n {
        w.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    w.extend_from_slice(b"\r\n");
    w.extend_from_slice(SENTINEL);
    w
}

fn chunk_zeros(zeros: usize) -> Vec<u8> {
    let mut w = b"POST /zeros HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    w.extend(std::iter::repeat_n(b'0', zeros));
    w.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
    w.extend_from_slice(SENTINEL);
    w
}

/// Every case of the corpus that the engine alone decides (item 1, 3, 4 and the parser side
/// of 7); `evasion_after_merge.rs` has those that need the server's answers or TCP state.
pub fn cases() -> Vec<Case> {
    vec![
        // ---- request line (A) ----
        case!("A1", 1, "two spaces after the method", "A · R400 · A · R400",
            || cat(&[b"GET  /a1 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/a1" "", "GET" "/sentinel" ""], flags [MultipleSpaces]),
        case!("A2", 1, "two spaces before the version", "A · R400 · A · R400",
            || cat(&[b"GET /a2  HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/a2" "", "GET" "/sentinel" ""], flags [MultipleSpaces]),
        case!("A3", 1, "many spaces everywhere", "A · R400 · A · R400",
            || cat(&[b"GET      /a3      HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/a3" "", "GET" "/sentinel" ""], flags [MultipleSpaces]),
        case!("A4", 1, "HTAB delimiters", "R400 · R400 · R400 · R400",
            || cat(&[b"GET\t/a4\tHTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("A5", 1, "spaces after the version", "A · R400 · R400 · R400",
            || cat(&[b"GET /a5 HTTP/1.1   \r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/a5" "", "GET" "/sentinel" ""], flags [TrailingSpace]),
        case!("A6", 1, "a space before the method", "R400 · R400 · R400 · R400",
            || cat(&[b" GET /a6 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/a6" "", "GET" "/sentinel" ""]),
        case!("A7", 1, "empty lines before the request line", "A · A · A · R400",
            || cat(&[b"\r\n\r\nGET /a7 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/a7" "", "GET" "/sentinel" ""]),
        case!("A8", 1, "bare LF empty lines before the request line", "A · R400 · A · R400",
            || cat(&[b"\n\nGET /a8 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/a8" "", "GET" "/sentinel" ""]),
        case!("A9", 1, "bare LF line ends everywhere", "A · R400 · R400 · A",
            || cat(&[b"GET /a9 HTTP/1.1\nHost: h\n\n", SENTINEL]),
            ["GET" "/a9" "", "GET" "/sentinel" ""]),
        case!("A10", 1, "bare LF only after the request line", "A · R400 · R400 · A",
            || cat(&[b"GET /a10 HTTP/1.1\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/a10" "", "GET" "/sentinel" ""]),
        case!("A11", 1, "bare CR ends the request line", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /a11 HTTP/1.1\rHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("A12", 1, "CR CR LF after the version", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /a12 HTTP/1.1\r\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("A13", 1, "bare CR ends a header line", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /a13 HTTP/1.1\r\nX-A: b\rHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("A15", 1, "a header line ending in CR CR LF", "A · R400 · R400 · R400",
            || cat(&[b"GET /a15 HTTP/1.1\r\nFoo: x\r\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/a15" "", "GET" "/sentinel" ""], flags [CrLineEnd]),
        // ---- version (B) ----
        case!("B2", 1, "HTTP/1.2", "A · A · R400 · A",
            || cat(&[b"GET /b2 HTTP/1.2\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/b2" "", "GET" "/sentinel" ""], flags [Version]),
        case!("B2b", 1, "HTTP/1.9", "A · A · R400 · A",
            || cat(&[b"GET /b2b HTTP/1.9\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/b2b" "", "GET" "/sentinel" ""], flags [Version]),
        case!("B3", 1, "HTTP/1.10", "A · R400 · R400 · R400",
            || cat(&[b"GET /b3 HTTP/1.10\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/b3" "", "GET" "/sentinel" ""], flags [Version]),
        case!("B4", 1, "HTTP/1.01", "A · R400 · R400 · R400",
            || cat(&[b"GET /b4 HTTP/1.01\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/b4" "", "GET" "/sentinel" ""], flags [Version]),
        case!("B5", 1, "HTTP/2.0 in an HTTP/1 request line", "R505 · A · A · R505",
            || cat(&[b"GET /b5 HTTP/2.0\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/b5" "", "GET" "/sentinel" ""], flags [Version]),
        case!("B6", 1, "HTTP/3.0", "R505 · A · R400 · R505",
            || cat(&[b"GET /b6 HTTP/3.0\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/b6" "", "GET" "/sentinel" ""], flags [Version]),
        case!("B7", 1, "HTTP/10.0", "R505 · R400 · R400 · R400",
            || cat(&[b"GET /b7 HTTP/10.0\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("B8", 1, "HTTP/0.9 written out", "R400 · R400 · A · R505",
            || cat(&[b"GET /b8 HTTP/0.9\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/b8" "", "GET" "/sentinel" ""], flags [Version]),
        case!("B9", 1, "an HTTP/0.9 simple request", "A · A · W · R400",
            || b"GET /b9\r\n".to_vec(),
            ["GET" "/b9" ""], flags [Http09]),
        case!("B10", 1, "lower-case http/1.1", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /b10 http/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        // ---- methods (C) ----
        case!("C1", 1, "a lower-case method", "R400 · A · R400 · A",
            || cat(&[b"get /c1 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["get" "/c1" "", "GET" "/sentinel" ""]),
        case!("C2", 1, "an unknown method", "A · A · R400 · A",
            || cat(&[b"FOO /c2 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["FOO" "/c2" "", "GET" "/sentinel" ""]),
        case!("C3", 1, "M-SEARCH_X", "A · A · R400 · A",
            || cat(&[b"M-SEARCH_X /c3 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["M-SEARCH_X" "/c3" "", "GET" "/sentinel" ""]),
        case!("C4", 1, "a method of every token character", "R400 · A · R400 · A",
            || cat(&[b"F!#$%&'*+.^`|~O /c4 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["F!#$%&'*+.^`|~O" "/c4" "", "GET" "/sentinel" ""]),
        case!("C5", 1, "a method with a separator", "R400 · R400 · R400 · R400",
            || cat(&[b"GE(T /c5 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        // ---- target and Host (D) ----
        case!("D1", 1, "absolute-form target with another Host", "A · A · A · A",
            || cat(&[b"GET http://other.example/d1?q=1 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "http://other.example/d1?q=1" "", "GET" "/sentinel" ""]),
        case!("D4", 1, "absolute-form with another scheme", "A · R400 · A · A",
            || cat(&[b"GET ftp://other.example/d4 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "ftp://other.example/d4" "", "GET" "/sentinel" ""]),
        case!("D7", 1, "userinfo in an absolute target", "R400 · R400 · A · A",
            || cat(&[b"GET http://u:p@other.example/d7 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "http://u:p@other.example/d7" "", "GET" "/sentinel" ""]),
        case!("D8", 1, "absolute-form without a path", "A · A · A · A",
            || cat(&[b"GET http://other.example HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "http://other.example" "", "GET" "/sentinel" ""]),
        case!("D11", 1, "authority-form with GET", "R400 · R400 · R400 · A",
            || cat(&[b"GET other.example:443 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "other.example:443" "", "GET" "/sentinel" ""]),
        case!("D12", 1, "OPTIONS *", "R400 · A · A · A",
            || cat(&[b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["OPTIONS" "*" "", "GET" "/sentinel" ""]),
        case!("D13", 1, "GET *", "R400 · R400 · A · A",
            || cat(&[b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "*" "", "GET" "/sentinel" ""]),
        case!("D14", 1, "a space inside the target", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /d14 b HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("D15", 1, "raw UTF-8 in the target", "A · A · R400 · A",
            || cat(&[b"GET /d15/\xc3\xa9t\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/d15/été" "", "GET" "/sentinel" ""]),
        case!("D16", 1, "raw Latin-1 in the target", "R400 · A · R400 · A",
            || cat(&[b"GET /d16/\xe9 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/d16/%E9" "", "GET" "/sentinel" ""], flags [TargetObsText]),
        case!("D17", 1, "a control byte in the target", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /d17\x01 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("D18", 1, "a fragment in the target", "A · R400 · A · A",
            || cat(&[b"GET /d18?x=1#frag HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/d18?x=1#frag" "", "GET" "/sentinel" ""]),
        case!("D20", 1, "dot segments", "A · A · A · A",
            || cat(&[b"GET /d20/../b HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/d20/../b" "", "GET" "/sentinel" ""]),
        case!("D21", 1, "quotes, braces, pipe, caret in the path", "A · A · A · A",
            || cat(&[b"GET /d21\\\"{|}^ HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/d21\\\"{|}^" "", "GET" "/sentinel" ""]),
        case!("D22", 1, "a bad percent escape", "R400 · R400 · A · R400",
            || cat(&[b"GET /d22%zz HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/d22%zz" "", "GET" "/sentinel" ""]),
        case!("D25", 1, "two Host fields", "R400 · R400 · A · R400",
            || cat(&[b"GET /d25 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", SENTINEL]),
            ["GET" "/d25" "", "GET" "/sentinel" ""]),
        case!("D26", 1, "an empty Host", "R400 · R400 · A · A",
            || cat(&[b"GET /d26 HTTP/1.1\r\nHost:\r\n\r\n", SENTINEL]),
            ["GET" "/d26" "", "GET" "/sentinel" ""]),
        case!("D27", 1, "a space in Host", "R400 · R400 · A · R400",
            || cat(&[b"GET /d27 HTTP/1.1\r\nHost: a b\r\n\r\n", SENTINEL]),
            ["GET" "/d27" "", "GET" "/sentinel" ""]),
        // ---- header fields (E) ----
        case!("E1", 1, "a space inside a field name", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /e1 HTTP/1.1\r\nHost: h\r\nFoo Bar: x\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("E3", 1, "@ in a field name", "I · R400 · R400 · R400",
            || cat(&[b"GET /e3 HTTP/1.1\r\nHost: h\r\nFoo@: x\r\n\r\n", SENTINEL]),
            ["GET" "/e3" "", "GET" "/sentinel" ""], flags [InvalidHeaderName]),
        case!("E4", 1, "an underscore in a field name", "I · A · A · A",
            || cat(&[b"GET /e4 HTTP/1.1\r\nHost: h\r\nFoo_Bar: x\r\n\r\n", SENTINEL]),
            ["GET" "/e4" "", "GET" "/sentinel" ""]),
        case!("E5", 1, "a dot in a field name", "I · A · A · A",
            || cat(&[b"GET /e5 HTTP/1.1\r\nHost: h\r\nFoo.Bar: x\r\n\r\n", SENTINEL]),
            ["GET" "/e5" "", "GET" "/sentinel" ""]),
        case!("E6", 1, "a non-ASCII field name", "I · R400 · R400 · R400",
            || cat(&[b"GET /e6 HTTP/1.1\r\nHost: h\r\nFoo\xc3\xa9: x\r\n\r\n", SENTINEL]),
            ["GET" "/e6" "", "GET" "/sentinel" ""], flags [InvalidHeaderName]),
        case!("E7", 1, "a space before the colon", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /e7 HTTP/1.1\r\nHost: h\r\nFoo : x\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("E11", 1, "a field line without colon", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /e11 HTTP/1.1\r\nHost: h\r\nFoo x\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("E12", 1, "a space before the first field", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /e12 HTTP/1.1\r\n Host: h\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("E13", 1, "obs-fold", "R400 · A · R400 · A",
            || cat(&[b"GET /e13 HTTP/1.1\r\nHost: h\r\nFoo: x\r\n  y\r\n\r\n", SENTINEL]),
            ["GET" "/e13" "", "GET" "/sentinel" ""], flags [ObsFold]),
        case!("E16", 1, "NUL in a value", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /e16 HTTP/1.1\r\nHost: h\r\nFoo: a\0b\r\n\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("E17", 1, "control bytes and DEL in a value", "R400 · R400 · R400 · R400",
            || cat(&[b"GET /e17 HTTP/1.1\r\nHost: h\r\nFoo: a\x01\x0b\x7fb\r\n\r\n", SENTINEL]),
            ["GET" "/e17" "", "GET" "/sentinel" ""], flags [CtlInValue]),
        case!("E17b", 1, "a control byte in a value", "A · R400 · R400 · R400",
            || cat(&[b"GET /e17b HTTP/1.1\r\nHost: h\r\nFoo: a\x01b\r\n\r\n", SENTINEL]),
            ["GET" "/e17b" "", "GET" "/sentinel" ""], flags [CtlInValue]),
        case!("E18", 1, "UTF-8 and Latin-1 in values", "A · A · A · A",
            || cat(&[b"GET /e18 HTTP/1.1\r\nHost: h\r\nA: \xc3\xa9\r\nB: \xe9\r\n\r\n", SENTINEL]),
            ["GET" "/e18" "", "GET" "/sentinel" ""]),
        case!("E20", 1, "a repeated field", "A · A · A · A",
            || cat(&[b"GET /e20 HTTP/1.1\r\nHost: h\r\nFoo: 1\r\nFoo: 2\r\n\r\n", SENTINEL]),
            ["GET" "/e20" "", "GET" "/sentinel" ""]),
        // ---- limits (F) ----
        case!("F1", 1, "1,000 header fields", "A · R400 · A · R431", || many_headers(1000),
            ["GET" "/many" "", "GET" "/sentinel" ""]),
        case!("F2", 1, "1,001 header fields (kept with the first 1,000)", "R400 · R400 · A · R431",
            || many_headers(1001),
            ["GET" "/many" "", "GET" "/sentinel" ""], flags [TooManyHeaders]),
        // ---- Content-Length (G) ----
        case!("G1", 1, "Content-Length twice, equal", "R400 · R400 · R400 · A",
            || cat(&[b"POST /g1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", SENTINEL]),
            ["POST" "/g1" "hello", "GET" "/sentinel" ""], flags [DuplicateContentLength]),
        case!("G2", 1, "two different lengths", "R400 · R400 · R400 · R400",
            || cat(&[b"POST /g2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("G4", 1, "a signed length", "R400 · R400 · R400 · R400",
            || cat(&[b"POST /g4 HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello", SENTINEL]),
            ["GET" "/sentinel" ""]),
        case!("G5", 1, "leading zeros in the length", "A · A · A · A",
            || cat(&[b"POST /g5 HTTP/1.1\r\nHost: h\r\nContent-Length: 0000000000000000000005\r\n\r\nhello", SENTINEL]),
            ["POST" "/g5" "hello", "GET" "/sentinel" ""]),
        case!("G6", 1, "trailing space after the length", "A · A · A · A",
            || cat(&[b"POST /g6 HTTP/1.1\r\nHost: h\r\nContent-Length: 5 \r\n\r\nhello", SENTINEL]),
            ["POST" "/g6" "hello", "GET" "/sentinel" ""]),
        case!("G9", 1, "a body on GET", "A · A · A · A",
            || cat(&[b"GET /g9 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", SENTINEL]),
            ["GET" "/g9" "hello", "GET" "/sentinel" ""]),
        case!("G10", 1, "an unannounced body glued to the next request", "A,R400 · A,A · H,R400 · A,A",
            || cat(&[b"GET /g10 HTTP/1.1\r\nHost: h\r\n\r\nhelloGET /sentinel HTTP/1.1\r\nHost: h\r\n\r\n"]),
            ["GET" "/g10" "", "helloGET" "/sentinel" ""]),
        // ---- Transfer-Encoding (H) ----
        case!("H1", 1, "CHUNKED in capitals", "A · A · A · A",
            || cat(&[b"POST /h1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/h1" "hello", "GET" "/sentinel" ""]),
        case!("H2", 1, "chunked, chunked", "R501 · A · R400 · R501",
            || cat(&[b"POST /h2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/h2" "hello", "GET" "/sentinel" ""], flags [TeCodings]),
        case!("H3", 1, "gzip, chunked", "R501 · A · A · R501",
            || cat(&[b"POST /h3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/h3" "hello", "GET" "/sentinel" ""], flags [TeCodings]),
        case!("H4", 1, "chunked, gzip", "R501 · R400 · R400 · R501",
            || cat(&[b"POST /h4 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/h4" "", "GET" "/sentinel" ""], flags [UnknownCoding]),
        case!("H7", 1, "two TE fields: gzip, then chunked", "R400 · A · A · R501",
            || cat(&[b"POST /h7 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/h7" "hello", "GET" "/sentinel" ""], flags [TeCodings]),
        case!("H9", 1, "Content-Length and chunked", "R400 · A · R400 · A",
            || cat(&[b"POST /h9 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/h9" "hello", "GET" "/sentinel" ""], flags [TeAndCl]),
        case!("H11", 1, "chunked on HTTP/1.0", "R400 · A · H · A(TE ignored)",
            || cat(&[b"POST /h11 HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/h11" "hello", "GET" "/sentinel" ""], flags [TeHttp10]),
        case!("H12", 1, "chunked on HTTP/1.0 keep-alive, a request where the body would be", "R400 · R400 · H · A,A",
            || cat(&[b"POST /h12 HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"]),
            ["POST" "/h12" "", "GET" "/smuggled" ""], flags [TeHttp10, BodyError]),
        case!("H14", 1, "chunked with a trailing space", "A · A · A · A",
            || cat(&[b"POST /h14 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/h14" "hello", "GET" "/sentinel" ""]),
        case!("H15", 1, "chunked after an HTAB", "R501 · A · A · A",
            || cat(&[b"POST /h15 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/h15" "hello", "GET" "/sentinel" ""]),
        case!("H17", 1, "obs-folded Transfer-Encoding", "R400 · A · R400 · A",
            || cat(&[b"POST /h17 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/h17" "hello", "GET" "/sentinel" ""], flags [ObsFold]),
        case!("H18", 1, "xchunked", "R501 · R400 · H · R501",
            || cat(&[b"POST /h18 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/h18" "", "GET" "/sentinel" ""], flags [UnknownCoding]),
        case!("H19", 1, "an empty Transfer-Encoding with a length", "R501 · R400 · A · R501",
            || cat(&[b"POST /h19 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\nContent-Length: 5\r\n\r\nhello", SENTINEL]),
            ["POST" "/h19" "hello", "GET" "/sentinel" ""], flags [TeCodings]),
        // ---- chunk lines (I) ----
        case!("I2", 1, "100 leading zeros in a chunk size", "A · A · A · H", || chunk_zeros(100),
            ["POST" "/zeros" "hello", "GET" "/sentinel" ""]),
        case!("I2b", 1, "5,000 leading zeros in a chunk size", "A · A · A · H", || chunk_zeros(5000),
            ["POST" "/zeros" "hello", "GET" "/sentinel" ""]),
        case!("I6", 1, "a chunk size over 2^64", "R400 · R413 · R400 · H",
            || cat(&[b"POST /i6 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/i6" "", "GET" "/sentinel" ""], flags [BodyError]),
        case!("I9", 1, "an empty chunk-size line", "R400 · R400 · R400 · H",
            || cat(&[b"POST /i9 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/i9" "", "GET" "/sentinel" ""], flags [BodyError]),
        case!("I11", 1, "a space before the extension", "A · A · R400 · H",
            || cat(&[b"POST /i11 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 ;foo=bar\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/i11" "hello", "GET" "/sentinel" ""]),
        case!("I13", 1, "spaces after the chunk size", "A · A · R400 · A",
            || cat(&[b"POST /i13 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \t \r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/i13" "hello", "GET" "/sentinel" ""]),
        case!("I15", 1, "a control byte in an extension", "A · R400 · R400 · A",
            || cat(&[b"POST /i15 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;foo=b\x01r\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/i15" "hello", "GET" "/sentinel" ""]),
        case!("I17", 1, "bare LF line ends in the chunked body", "A · R400 · R400 · H",
            || cat(&[b"POST /i17 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", SENTINEL]),
            ["POST" "/i17" "hello", "GET" "/sentinel" ""]),
        case!("I21", 1, "chunk data not followed by CRLF", "R400 · R400 · R400 · H",
            || cat(&[b"POST /i21 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", SENTINEL]),
            ["POST" "/i21" "hello", "GET" "/sentinel" ""], flags [BodyError]),
        case!("I22", 1, "a size one too big swallows the CR", "A · R400 · R400 · H",
            || cat(&[b"POST /i22 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello\r\n0\r\n\r\n", SENTINEL]),
            ["POST" "/i22" "hello\r", "GET" "/sentinel" ""]),
        // ---- trailers (J) ----
        case!("J1", 1, "a trailer field", "A · A · A · A",
            || cat(&[b"POST /j1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: tv\r\n\r\n", SENTINEL]),
            ["POST" "/j1" "hello", "GET" "/sentinel" ""]),
        case!("J3", 1, "a trailer name with a space", "A · R400 · R400 · A",
            || cat(&[b"POST /j3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nBad Name: tv\r\n\r\n", SENTINEL]),
            ["POST" "/j3" "hello", "GET" "/sentinel" ""], flags [BadTrailer]),
        case!("J5", 1, "the last CRLF missing: the next head read as trailers", "A(swallows) · R400 · R400 · H",
            || cat(&[b"POST /j5 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", SENTINEL]),
            ["POST" "/j5" "hello"], flags [BadTrailer]),
        // ---- Expect, Connection (K) ----
        case!("K4", 1, "Expect: foo", "A · R417 · R417 · R417",
            || cat(&[b"GET /k4 HTTP/1.1\r\nHost: h\r\nExpect: foo\r\n\r\n", SENTINEL]),
            ["GET" "/k4" "", "GET" "/sentinel" ""]),
        case!("K5", 1, "HTTP/1.0 without keep-alive, then a pipelined request", "A,- · A,- · H,R400 · A,-",
            || cat(&[b"GET /k5 HTTP/1.0\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/k5" "", "GET" "/sentinel" ""]),
        case!("K7", 1, "Connection: close, then a pipelined request", "A,- · A,- · A,R400 · A,-",
            || cat(&[b"GET /k7 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", SENTINEL]),
            ["GET" "/k7" "", "GET" "/sentinel" ""]),
        // ---- pipelining (L) ----
        case!("L3", 1, "empty lines between pipelined requests", "A,A · A,A · A,A · A,R400",
            || cat(&[b"GET /l3 HTTP/1.1\r\nHost: h\r\n\r\n\r\n\r\n", SENTINEL]),
            ["GET" "/l3" "", "GET" "/sentinel" ""]),
        case!("L4", 1, "a line of text between pipelined requests", "A,R400 · A,R400 · A,R400 · A,R400",
            || cat(&[b"GET /l4 HTTP/1.1\r\nHost: h\r\n\r\nXYZ\r\n", SENTINEL]),
            ["GET" "/l4" "", "GET" "/sentinel" ""]),
        case!("L5", 1, "bytes glued before the next method", "A,R400 · A,A · A,R400 · A,A",
            || cat(&[b"GET /l5 HTTP/1.1\r\nHost: h\r\n\r\nxxGET /sentinel HTTP/1.1\r\nHost: h\r\n\r\n"]),
            ["GET" "/l5" "", "xxGET" "/sentinel" ""]),
        // ---- our own (X) ----
        case!("X1", 3, "a forged load-balancer health check (no rule configured)", "A · A · A · A",
            || cat(&[b"GET /admin HTTP/1.1\r\nHost: h\r\nUser-Agent: ELB-HealthChecker/2.0\r\n\r\n", SENTINEL]),
            ["GET" "/admin" "", "GET" "/sentinel" ""]),
        case!("X2", 4, "a PROXY header from a direct client (not a trusted peer)", "R400 · R400 · R400 · R400",
            || cat(&[b"PROXY TCP4 203.0.113.66 10.0.0.2 1234 80\r\nGET /x2 HTTP/1.1\r\nHost: h\r\n\r\n", SENTINEL]),
            ["GET" "/x2" "", "GET" "/sentinel" ""]),
        case!("X3", 1, "a request line split by spaces at a segment border", "A · R400 · A · R400",
            || cat(&[b"POST   /x3   HTTP/1.1  \r\nHost: h\r\nContent-Length: 2\r\n\r\nok", SENTINEL]),
            ["POST" "/x3" "ok", "GET" "/sentinel" ""], flags [MultipleSpaces, TrailingSpace]),
        case!("X4", 1, "a 2,000-byte method", "A · A · R400 · A",
            || {
                let mut w = "X".repeat(2000).into_bytes();
                w.extend_from_slice(b" /x4 HTTP/1.1\r\nHost: h\r\n\r\n");
                w.extend_from_slice(SENTINEL);
                w
            },
            ["X*2000" "/x4" "", "GET" "/sentinel" ""]),
        case!("X5", 1, "a 40 KB header section", "R400 · A · R431 · A",
            || {
                let mut w = b"GET /x5 HTTP/1.1\r\nHost: h\r\n".to_vec();
                for i in 0..10 {
                    w.extend_from_slice(format!("X-Big{i}: {}\r\n", "b".repeat(4000)).as_bytes());
                }
                w.extend_from_slice(b"\r\n");
                w.extend_from_slice(SENTINEL);
                w
            },
            ["GET" "/x5" "", "GET" "/sentinel" ""]),
        case!("X6", 1, "an SSH banner, then a request (text is never opaque)", "R400 · R400 · R400 · R400",
            || cat(&[b"SSH-2.0-OpenSSH_9.6\r\n", SENTINEL]),
            ["GET" "/sentinel" ""]),
    ]
}

/// What one connection carrying `wire` gives the engine (default configuration), the bytes
/// cut into pieces of `piece` bytes (0: one segment).
pub fn through_engine(wire: &[u8], piece: usize) -> (Vec<HttpRequest>, EngineStats) {
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    let mut c = TcpConn::new(7, "10.0.0.1:40000", "10.0.0.2:80", 4242);
    let mut datagrams = vec![c.syn()];
    if piece == 0 {
        datagrams.push(c.send(wire));
    } else {
        datagrams.extend(wire.chunks(piece).map(|p| c.send(p)));
    }
    datagrams.push(c.fin());
    for (i, d) in datagrams.iter().enumerate() {
        engine.on_vxlan_payload(1_700_000_000_000_000 + i as u64 * 10, d, &mut out);
    }
    engine.finish(&mut out);
    assert_eq!(engine.buffered_bytes(), 0, "every buffer returned");
    (out, engine.stats().clone())
}

/// (method, target, body) of each request.
pub fn seen(reqs: &[HttpRequest]) -> Vec<(String, String, String)> {
    reqs.iter()
        .map(|r| {
            (
                r.method.clone(),
                r.target.clone(),
                String::from_utf8_lossy(&r.body).into_owned(),
            )
        })
        .collect()
}
