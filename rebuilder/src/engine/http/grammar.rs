//! The request line as the common origins read it (the union of what nginx, Apache httpd,
//! Node's llhttp and Go net/http accept; each leniency names the origins that have it, and
//! the request carries the matching [`Anomaly`]):
//!
//! ```text
//! request-line = method 1*SP target 1*SP version *SP line-end
//!              / "GET" 1*SP target *SP line-end          ; HTTP/0.9 simple request
//! method       = 1*tchar
//! target       = 1*( %x21-7E / %x80-FF )                 ; no CTL, SP, DEL
//! version      = "HTTP/" %x31-39 "." 1*2DIGIT / "HTTP/0.9"
//! line-end     = CRLF / LF
//! ```
//!
//! - several spaces between the parts: nginx and Node accept them (Apache and Go answer 400);
//! - spaces after the version: nginx;
//! - HTTP/1.2 to 1.9: nginx, Apache, Go; two minor digits (`1.10`, `1.01`): nginx; 2.0:
//!   Apache and Node; 3.0 to 9.9: Apache; `HTTP/0.9` written out: Node;
//! - a simple request `GET /x` without version: nginx and Apache answer it (GET only, as
//!   nginx requires);
//! - bare LF line ends: nginx and Go; methods of any token characters (lower case, `xxGET`):
//!   Apache and Go; raw bytes ≥ 0x80 in the target: nginx, Apache, Go.
//!
//! Not accepted, because no origin does: HTAB delimiters, a leading space, `CR CR LF` after
//! the version, lower-case `http/1.1`, `HTTP/10.0`, three minor digits, CTL or space in the
//! target.
//!
//! Pure functions over bytes; no state.

use crate::engine::stats::{Anomalies, Anomaly};

/// Result of checking bytes for a request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Line {
    /// A complete request line.
    Yes,
    /// Not a request line.
    No,
    /// A valid prefix: more bytes needed.
    More,
}

/// Which bytes a method may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Methods {
    /// Any token (RFC 9110 tchar), any length: what some origin serves.
    Token,
    /// Upper-case letters, `-` and `_`, at most [`MAX_SCAN_METHOD`] bytes: recognising a
    /// request line inside arbitrary bytes (after a gap, mid-stream).
    Upper,
}

/// Longest method recognised while scanning arbitrary bytes.
pub(super) const MAX_SCAN_METHOD: usize = 32;

/// A complete request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RequestLine<'a> {
    pub(super) method: &'a [u8],
    pub(super) target: &'a [u8],
    pub(super) major: u8,
    pub(super) minor: u8,
    /// HTTP/0.9 simple request (no version, no header section).
    pub(super) simple: bool,
    pub(super) anomalies: Anomalies,
    /// Bytes of the line, its end included.
    pub(super) len: usize,
}

/// RFC 9110 token character.
pub(super) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] as a table (a request line is scanned a byte at a time, twice per request).
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

fn is_target_byte(b: u8) -> bool {
    b > 0x20 && b != 0x7f
}

/// Spaces from `i` on: the index after them.
fn skip_spaces(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    i
}

/// A line end at `i` (CRLF or LF): its length, `More` when cut, `No` otherwise.
fn line_end(bytes: &[u8], i: usize) -> Result<usize, Line> {
    match bytes.get(i..) {
        None | Some([]) | Some([b'\r']) => Err(Line::More),
        Some([b'\n', ..]) => Ok(1),
        Some([b'\r', b'\n', ..]) => Ok(2),
        Some(_) => Err(Line::No),
    }
}

/// Reads the request line at the start of `bytes`: `Ok` when complete, `Err(More)` when
/// `bytes` is a valid prefix of one, `Err(No)` when it cannot become one.
pub(super) fn request_line(bytes: &[u8], methods: Methods) -> Result<RequestLine<'_>, Line> {
    let mut anomalies = Anomalies::NONE;
    let max_method = match methods {
        Methods::Token => usize::MAX,
        Methods::Upper => MAX_SCAN_METHOD,
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let ok = match methods {
            Methods::Token => is_tchar(b),
            Methods::Upper => b.is_ascii_uppercase() || b == b'-' || b == b'_',
        };
        if !ok {
            break;
        }
        i += 1;
        if i > max_method {
            return Err(Line::No);
        }
    }
    if i == bytes.len() {
        return Err(Line::More);
    }
    if i == 0 || bytes[i] != b' ' {
        return Err(Line::No);
    }
    let method = &bytes[..i];
    let t = skip_spaces(bytes, i);
    if t > i + 1 {
        anomalies.insert(Anomaly::MultipleSpaces);
    }
    let mut j = t;
    while j < bytes.len() && is_target_byte(bytes[j]) {
        j += 1;
    }
    if j == bytes.len() {
        return Err(Line::More);
    }
    if j == t {
        return Err(Line::No);
    }
    let target = &bytes[t..j];
    let v = skip_spaces(bytes, j);
    if v == bytes.len() {
        return Err(Line::More);
    }
    if matches!(bytes[v], b'\r' | b'\n') {
        // HTTP/0.9 simple request (nginx: GET only, spaces allowed before the line end).
        if method != b"GET" {
            return Err(Line::No);
        }
        let end = line_end(bytes, v)?;
        return Ok(RequestLine {
            method,
            target,
            major: 0,
            minor: 9,
            simple: true,
            anomalies: anomalies.with(Anomaly::Http09),
            len: v + end,
        });
    }
    if v == j {
        return Err(Line::No); // a byte that is neither target, space nor line end
    }
    if v > j + 1 {
        anomalies.insert(Anomaly::MultipleSpaces);
    }
    const PREFIX: &[u8] = b"HTTP/";
    let rest = &bytes[v..];
    let n = rest.len().min(PREFIX.len());
    if rest[..n] != PREFIX[..n] {
        return Err(Line::No);
    }
    let mut k = v + n;
    if n < PREFIX.len() {
        return Err(Line::More);
    }
    let major = match bytes.get(k) {
        None => return Err(Line::More),
        Some(d @ b'0'..=b'9') => d - b'0',
        Some(_) => return Err(Line::No),
    };
    k += 1;
    match bytes.get(k) {
        None => return Err(Line::More),
        Some(b'.') => k += 1,
        Some(_) => return Err(Line::No),
    }
    let digits_start = k;
    while k < bytes.len() && k - digits_start < 3 && bytes[k].is_ascii_digit() {
        k += 1;
    }
    let digits = &bytes[digits_start..k];
    if k == bytes.len() {
        return Err(Line::More);
    }
    if digits.is_empty() || digits.len() > 2 {
        return Err(Line::No);
    }
    let minor = digits.iter().fold(0u8, |m, d| m * 10 + (d - b'0'));
    let accepted = match major {
        0 => digits == b"9",
        _ => true,
    };
    if !accepted {
        return Err(Line::No);
    }
    if !(major == 1 && (digits == b"0" || digits == b"1")) {
        anomalies.insert(Anomaly::Version);
    }
    let e = skip_spaces(bytes, k);
    if e > k {
        anomalies.insert(Anomaly::TrailingSpace);
    }
    let end = line_end(bytes, e)?;
    Ok(RequestLine {
        method,
        target,
        major,
        minor,
        simple: false,
        anomalies,
        len: e + end,
    })
}

/// [`request_line`] as a verdict only.
#[cfg(test)]
pub(super) fn verdict(bytes: &[u8], methods: Methods) -> Line {
    match request_line(bytes, methods) {
        Ok(_) => Line::Yes,
        Err(l) => l,
    }
}

/// `bytes` as text: UTF-8 kept, every byte of an invalid sequence percent-encoded (`%E9`).
/// The flag says whether anything was encoded.
pub(super) fn text(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), false),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len() + 8);
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
                for b in chunk.invalid() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            (out, true)
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn token_and_target_bytes_are_the_rfc_9110_sets() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), tchar, "{b:#04x}");
            // Visible ASCII or obs-text (what origins accept in a target).
            let target = (0x21..0x7f).contains(&b) || b >= 0x80;
            assert_eq!(is_target_byte(b), target, "{b:#04x}");
        }
    }

    use super::*;

    fn yes(line: &str) -> RequestLine<'_> {
        request_line(line.as_bytes(), Methods::Token).unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
    }

    fn no(line: &[u8]) {
        assert_eq!(
            request_line(line, Methods::Token),
            Err(Line::No),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }

    #[test]
    fn every_request_line_an_origin_serves_is_read_with_its_anomalies() {
        let l = yes("GET /a HTTP/1.1\r\n");
        assert_eq!(
            (l.method, l.target, l.major, l.minor),
            (&b"GET"[..], &b"/a"[..], 1, 1)
        );
        assert!(l.anomalies.is_empty() && !l.simple && l.len == 17);
        assert!(
            yes("GET  /a HTTP/1.1\r\n")
                .anomalies
                .contains(Anomaly::MultipleSpaces)
        );
        assert!(
            yes("GET /a   HTTP/1.1\n")
                .anomalies
                .contains(Anomaly::MultipleSpaces)
        );
        assert!(
            yes("GET /a HTTP/1.1  \r\n")
                .anomalies
                .contains(Anomaly::TrailingSpace)
        );
        for (v, major, minor) in [
            ("1.2", 1, 2),
            ("1.9", 1, 9),
            ("1.10", 1, 10),
            ("1.01", 1, 1),
            ("2.0", 2, 0),
            ("3.0", 3, 0),
            ("9.9", 9, 9),
            ("0.9", 0, 9),
        ] {
            let line = format!("GET / HTTP/{v}\r\n");
            let l = yes(&line);
            assert_eq!((l.major, l.minor), (major, minor), "{v}");
            assert!(l.anomalies.contains(Anomaly::Version), "{v}");
        }
        let l = yes("GET /x\r\n");
        assert!(l.simple && l.anomalies.contains(Anomaly::Http09) && l.major == 0);
        assert!(yes("GET /x   \n").simple);
        assert_eq!(yes("xxGET / HTTP/1.0\r\n").method, b"xxGET");
        assert_eq!(yes("get / HTTP/1.0\r\n").method, b"get");
        let long = format!("{} / HTTP/1.1\r\n", "X".repeat(2000));
        assert_eq!(yes(&long).method.len(), 2000);
        let latin1 = request_line(b"GET /\xe9 HTTP/1.1\r\n", Methods::Token).unwrap();
        assert_eq!(latin1.target, b"/\xe9");
    }

    #[test]
    fn request_lines_no_origin_serves_are_refused() {
        for line in [
            &b"GET\t/a\tHTTP/1.1\r\n"[..],
            b" GET /a HTTP/1.1\r\n",
            b"GET /a HTTP/1.1\r\r\n",
            b"GET /a HTTP/1.1\rX",
            b"GET /a http/1.1\r\n",
            b"GET /a HTTP/10.0\r\n",
            b"GET /a HTTP/01.1\r\n",
            b"GET /a HTTP/1.100\r\n",
            b"GET /a HTTP/1\r\n",
            b"GET /a HTTP/0.8\r\n",
            b"GET /a b HTTP/1.1\r\n",
            b"GET /\x01 HTTP/1.1\r\n",
            b"GET /\x7f HTTP/1.1\r\n",
            b"POST /x\r\n",
            b"GE(T / HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"GET /a HTTP/1.1 x\r\n",
        ] {
            no(line);
        }
    }

    #[test]
    fn prefixes_of_request_lines_ask_for_more() {
        let full = b"GET  /abc HTTP/1.1  \r\n";
        for n in 0..full.len() {
            assert_eq!(
                verdict(&full[..n], Methods::Token),
                Line::More,
                "{:?}",
                String::from_utf8_lossy(&full[..n])
            );
        }
        assert_eq!(verdict(full, Methods::Token), Line::Yes);
        assert_eq!(verdict(b"GET / HTTP/1.1\r\n", Methods::Upper), Line::Yes);
        assert_eq!(verdict(b"get / HTTP/1.1\r\n", Methods::Upper), Line::No);
        let long = format!("{} / HTTP/1.1\r\n", "X".repeat(MAX_SCAN_METHOD + 1));
        assert_eq!(verdict(long.as_bytes(), Methods::Upper), Line::No);
    }

    #[test]
    fn text_keeps_utf8_and_percent_encodes_other_bytes() {
        assert_eq!(text("/é".as_bytes()), ("/é".to_string(), false));
        assert_eq!(text(b"/\xe9x"), ("/%E9x".to_string(), true));
    }
}
