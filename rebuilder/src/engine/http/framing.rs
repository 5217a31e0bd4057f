//! Message framing (RFC 9112 §6, §7) as the common origins read it: where a head ends, how
//! long its body is (`Transfer-Encoding` / `Content-Length`, [`FieldFacts`] and
//! [`decide`]), and the chunked coding — chunk-size lines, chunk data ends and the trailer
//! section, whose fields go to [`crate::engine::request::HttpRequest::trailers`].
//!
//! Readings, where origins disagree (each request carries the [`Anomaly`]):
//! - `Transfer-Encoding` whose last coding is `chunked` frames the body, also next to
//!   `Content-Length` (Apache, Go; nginx and Node answer 400), with several codings or fields
//!   (Apache, Node; nginx and Go 501), and on HTTP/1.0 (Apache, Node; nginx 400; Go ignores it
//!   and reads Content-Length — the other reading, flagged `te_http10`).
//! - Any other `Transfer-Encoding`: no origin reads a body; Node hands the head to the
//!   application before answering 400, so the head is emitted (`unknown_coding`) and the
//!   bytes after it are searched for requests.
//! - `Content-Length`: digits, leading zeros allowed, at most `i64::MAX` (nginx's `off_t`);
//!   repeated equal values are one length (Go); different or invalid values: every origin
//!   answers 400 (`bad_request`).
//! - Chunk sizes: any number of leading zeros (nginx, Apache, Node), value at most `i64::MAX`,
//!   spaces or tabs before `;` or the line end, any extension bytes but LF (nginx), bare LF
//!   line ends (nginx 1.22); an empty size line is an error (every origin; `httparse` would
//!   read it as 0).
//! - A chunked body that breaks (bad size line, data not followed by a line end): Node and Go
//!   hand the head to the application first, so the request is emitted with the body read so
//!   far (`body_error`) and the bytes from the bad line on are parsed as the next request.

use memchr::memchr;

use super::head::{trail_line_end, trailer_field, trim_ows};
use super::state::{self, Ctx, Parser, ParserState};
use crate::engine::stats::{Anomalies, Anomaly, DropReason};

/// Length of the head in `prev ++ input` counted in `input` bytes, if its end (an empty
/// line) is there. `prev` holds the last (up to 2) bytes already buffered.
pub(super) fn head_end(prev: &[u8], input: &[u8]) -> Option<usize> {
    let at = |i: usize| -> Option<u8> {
        if i < prev.len() {
            Some(prev[i])
        } else {
            input.get(i - prev.len()).copied()
        }
    };
    let end_after_lf = |i: usize| -> Option<usize> {
        match at(i + 1) {
            Some(b'\n') => Some(i + 2),
            Some(b'\r') if at(i + 2) == Some(b'\n') => Some(i + 3),
            _ => None,
        }
    };
    for i in 0..prev.len() {
        if prev[i] == b'\n'
            && let Some(e) = end_after_lf(i)
        {
            return Some(e - prev.len());
        }
    }
    for lf in memchr::memchr_iter(b'\n', input) {
        if let Some(e) = end_after_lf(lf + prev.len()) {
            return Some(e - prev.len());
        }
    }
    None
}

/// Largest body or chunk length accepted (nginx: `off_t`).
const MAX_LENGTH: u64 = i64::MAX as u64;

/// The size of a complete chunk-size line (its LF included), or `None` when no origin would
/// read one from it.
pub fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if end == 0 {
        return None;
    }
    let zeros = line[..end].iter().take_while(|&&b| b == b'0').count();
    let digits = &line[zeros..end];
    if digits.len() > 16 {
        return None;
    }
    let rest = &line[end..];
    let rest_ok = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .is_none_or(|p| rest[p] == b';');
    if !rest_ok {
        return None;
    }
    let size = digits.iter().fold(0u64, |n, &d| {
        n << 4 | u64::from((d as char).to_digit(16).unwrap_or(0))
    });
    (size <= MAX_LENGTH).then_some(size)
}

/// A Content-Length value: digits (leading zeros allowed), at most [`MAX_LENGTH`].
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digits = &v[v.iter().take_while(|&&b| b == b'0').count()..];
    if digits.len() > 19 {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u128, |n, &d| n * 10 + u128::from(d - b'0'));
    u64::try_from(n).ok().filter(|&n| n <= MAX_LENGTH)
}

/// What the header fields say about framing and the connection, gathered field by field
/// (also over fields past the `max_headers` cap).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FieldFacts {
    /// Transfer-Encoding fields with at least one coding.
    te_fields: u32,
    /// Codings over all of them.
    te_codings: u32,
    /// The last coding is `chunked`.
    te_chunked_last: bool,
    /// A Transfer-Encoding field without any coding.
    te_empty: bool,
    /// The Content-Length (all values equal).
    length: Option<u64>,
    /// Content-Length values seen (fields and list items).
    length_values: u32,
    /// A Content-Length value that is invalid or differs from another.
    length_bad: bool,
    /// `Connection: close`.
    pub(super) close: bool,
    /// `Connection: keep-alive`.
    pub(super) keep_alive: bool,
    /// An `Upgrade` field.
    pub(super) upgrade: bool,
    /// `Expect: 100-continue`.
    pub(super) expect_continue: bool,
}

impl FieldFacts {
    /// Takes one field into account.
    pub(super) fn observe(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let mut last = None;
            for coding in value.split(|&b| b == b',').map(trim_ows) {
                if !coding.is_empty() {
                    self.te_codings += 1;
                    last = Some(coding);
                }
            }
            match last {
                Some(c) => {
                    self.te_fields += 1;
                    self.te_chunked_last = c.eq_ignore_ascii_case(b"chunked");
                }
                None => self.te_empty = true,
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for v in value.split(|&b| b == b',').map(trim_ows) {
                self.length_values += 1;
                match parse_length(v) {
                    Some(n) if self.length.is_none_or(|l| l == n) => self.length = Some(n),
                    _ => self.length_bad = true,
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            self.close |= has_token(value, b"close");
            self.keep_alive |= has_token(value, b"keep-alive");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            self.expect_continue |= has_token(value, b"100-continue");
        }
    }

    /// The Content-Length, when there is exactly one valid length.
    #[cfg(test)]
    pub(super) fn content_length(&self) -> Option<u64> {
        self.length.filter(|_| !self.length_bad)
    }
}

/// Body framing of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    None,
    /// Content-Length.
    Length(u64),
    /// Chunked.
    Chunked,
    /// A Transfer-Encoding no origin reads a body with: the head only.
    Unknown,
}

/// The framing of a head of HTTP/`major`.`minor` with these facts, and the anomalies of that
/// reading; `Err` when every origin refuses the head (`bad_request`).
pub(super) fn decide(f: &FieldFacts, major: u8, minor: u8) -> Result<(Framing, Anomalies), ()> {
    let mut a = Anomalies::NONE;
    if f.te_fields > 0 {
        if f.te_fields > 1 || f.te_codings > 1 {
            a.insert(Anomaly::TeCodings);
        }
        if f.length_values > 0 {
            a.insert(Anomaly::TeAndCl);
        }
        if major == 0 || (major == 1 && minor == 0) {
            a.insert(Anomaly::TeHttp10);
        }
        if !f.te_chunked_last {
            a.insert(Anomaly::UnknownCoding);
            return Ok((Framing::Unknown, a));
        }
        return Ok((Framing::Chunked, a));
    }
    if f.te_empty {
        a.insert(Anomaly::TeCodings);
    }
    if f.length_bad {
        return Err(());
    }
    if f.length_values > 1 {
        a.insert(Anomaly::DuplicateContentLength);
    }
    Ok((f.length.map_or(Framing::None, Framing::Length), a))
}

/// Whether the comma-separated `value` holds `token` (ASCII case-insensitive).
pub(super) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
}

impl Parser {
    pub(super) fn chunk_size<'i>(&mut self, input: &'i [u8], ctx: &mut Ctx<'_>) -> &'i [u8] {
        let (take, complete) = match memchr(b'\n', input) {
            Some(j) => (j + 1, true),
            None => (input.len(), false),
        };
        if self.buf.len() + take > ctx.limits.max_header_bytes {
            // No origin reads a chunk-size line this long as a size.
            self.body_error(ctx);
            self.buf.clear();
            self.state = ParserState::Sync { line_start: false };
            self.account(ctx.budget);
            return &input[take..];
        }
        if !complete {
            if !self.may_grow(take, ctx) {
                self.drop_message(
                    DropReason::OverBudget,
                    ParserState::Sync { line_start: false },
                    ctx,
                );
                return &input[take..];
            }
            self.buf.extend_from_slice(input);
            self.account(ctx.budget);
            return &[];
        }
        let size = if self.buf.is_empty() {
            parse_chunk_size(&input[..take])
        } else {
            let mut line = std::mem::take(&mut self.buf);
            line.extend_from_slice(&input[..take]);
            let size = parse_chunk_size(&line);
            if size.is_none() {
                // The bad line is read again as the start of the next message: what was
                // buffered of it goes back, the rest is still in `input`.
                line.truncate(line.len() - take);
            } else {
                line.clear();
            }
            self.buf = line;
            size
        };
        match size {
            None => {
                self.body_error(ctx);
                self.account(ctx.budget);
                // `buf` (if any) holds the start of the bad line; `input` the rest of it.
                return if self.state == ParserState::Head {
                    input
                } else {
                    self.buf.clear();
                    self.account(ctx.budget);
                    &[]
                };
            }
            Some(0) => self.state = ParserState::Trailers { skip_line: false },
            Some(n) => self.state = ParserState::ChunkData { remaining: n },
        }
        self.account(ctx.budget);
        &input[take..]
    }

    /// The chunked body broke: the request is emitted with what was read of its body
    /// (`body_error`); the caller decides what to do with the bytes that broke it.
    pub(super) fn body_error(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(p) = self.pending.as_mut() {
            p.req.anomalies.insert(Anomaly::BodyError);
        }
        self.emit(ctx);
    }

    /// The trailer section, one line at a time: each complete line becomes a trailer field
    /// (at most `max_headers`); only the line being read is buffered (at most
    /// `max_header_bytes`: a longer line is skipped and the request flagged `bad_trailer`).
    pub(super) fn trailers<'i>(
        &mut self,
        skip_line: bool,
        input: &'i [u8],
        ctx: &mut Ctx<'_>,
    ) -> &'i [u8] {
        let (take, complete) = match memchr(b'\n', input) {
            Some(j) => (j + 1, true),
            None => (input.len(), false),
        };
        if skip_line {
            if complete {
                self.state = ParserState::Trailers { skip_line: false };
            }
            return &input[take..];
        }
        if self.buf.len() + take > ctx.limits.max_header_bytes
            || (!complete && !self.may_grow(take, ctx))
        {
            self.flag_pending(Anomaly::BadTrailer);
            self.buf.clear();
            self.state = ParserState::Trailers {
                skip_line: !complete,
            };
            self.account(ctx.budget);
            return &input[take..];
        }
        if !complete {
            self.buf.extend_from_slice(input);
            self.account(ctx.budget);
            return &[];
        }
        let owned;
        let line: &[u8] = if self.buf.is_empty() {
            &input[..take]
        } else {
            self.buf.extend_from_slice(&input[..take]);
            owned = std::mem::take(&mut self.buf);
            &owned
        };
        let line = trail_line_end(line);
        if line.is_empty() {
            self.buf.clear();
            self.emit(ctx);
            return &input[take..];
        }
        let (name, value, odd) = trailer_field(line);
        if odd {
            self.flag_pending(Anomaly::BadTrailer);
        }
        let max = ctx.limits.max_headers;
        if let Some(p) = self.pending.as_mut() {
            // A trailer is kept only when the budget holds it: its cost is known before it is
            // allocated (each buffer grown by exactly what it needs), and is charged with the
            // pending request's at `account` below. Otherwise the request keeps the first ones.
            let t = &mut p.req.trailers;
            let grows = state::capacities_cost(t.capacities_with(1, name.len(), value.len()))
                - state::fields_cost(t);
            if t.len() < max && ctx.budget.used + grows <= ctx.budget.limit {
                t.reserve(1, name.len(), value.len());
                t.push(&name, &value);
            } else {
                p.req.anomalies.insert(Anomaly::TooManyHeaders);
            }
        }
        self.buf.clear();
        self.account(ctx.budget);
        &input[take..]
    }

    fn flag_pending(&mut self, a: Anomaly) {
        if let Some(p) = self.pending.as_mut() {
            p.req.anomalies.insert(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_read_like_the_most_lenient_origins() {
        assert_eq!(parse_chunk_size(b"1a\r\n"), Some(26));
        assert_eq!(parse_chunk_size(b"1A;name=v\r\n"), Some(26));
        assert_eq!(parse_chunk_size(b"5 ;x\r\n"), Some(5));
        assert_eq!(parse_chunk_size(b"5\t\r\n"), Some(5));
        assert_eq!(parse_chunk_size(b"5;x=\x01\r\n"), Some(5));
        assert_eq!(parse_chunk_size(b"0\n"), Some(0));
        let zeros = format!("{}5\r\n", "0".repeat(100));
        assert_eq!(parse_chunk_size(zeros.as_bytes()), Some(5));
        assert_eq!(
            parse_chunk_size(b"7fffffffffffffff\r\n"),
            Some(i64::MAX as u64)
        );
        for bad in [
            &b"\r\n"[..],
            b"zz\r\n",
            b"1 2\r\n",
            b" 5\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b"8000000000000000\r\n",
            b"ffffffffffffffff\r\n",
            b"10000000000000005\r\n",
            b"5",
        ] {
            assert_eq!(
                parse_chunk_size(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn facts(fields: &[(&str, &str)]) -> FieldFacts {
        let mut f = FieldFacts::default();
        for (n, v) in fields {
            f.observe(n.as_bytes(), v.as_bytes());
        }
        f
    }

    #[test]
    fn framing_follows_the_origins_that_serve_the_request() {
        use Anomaly::*;
        let d = |fields: &[(&str, &str)], minor| decide(&facts(fields), 1, minor);
        let has = |r: Result<(Framing, Anomalies), ()>, fr: Framing, a: &[Anomaly]| {
            let (f, set) = r.expect("framed");
            assert_eq!(f, fr);
            assert_eq!(set.iter().collect::<Vec<_>>(), a);
        };
        has(d(&[], 1), Framing::None, &[]);
        has(d(&[("Content-Length", "007")], 1), Framing::Length(7), &[]);
        has(d(&[("content-length", "5 ")], 1), Framing::Length(5), &[]);
        has(
            d(&[("Content-Length", "5"), ("Content-Length", "5")], 1),
            Framing::Length(5),
            &[DuplicateContentLength],
        );
        has(
            d(&[("Transfer-Encoding", "Chunked")], 1),
            Framing::Chunked,
            &[],
        );
        has(
            d(
                &[("Transfer-Encoding", "\tchunked "), ("Content-Length", "3")],
                1,
            ),
            Framing::Chunked,
            &[TeAndCl],
        );
        has(
            d(&[("Transfer-Encoding", "gzip, chunked")], 1),
            Framing::Chunked,
            &[TeCodings],
        );
        has(
            d(
                &[
                    ("Transfer-Encoding", "gzip"),
                    ("Transfer-Encoding", "chunked"),
                ],
                1,
            ),
            Framing::Chunked,
            &[TeCodings],
        );
        has(
            d(&[("Transfer-Encoding", "chunked")], 0),
            Framing::Chunked,
            &[TeHttp10],
        );
        has(
            d(&[("Transfer-Encoding", "chunked, gzip")], 1),
            Framing::Unknown,
            &[TeCodings, UnknownCoding],
        );
        has(
            d(&[("Transfer-Encoding", "xchunked")], 1),
            Framing::Unknown,
            &[UnknownCoding],
        );
        has(
            d(&[("Transfer-Encoding", ""), ("Content-Length", "5")], 1),
            Framing::Length(5),
            &[TeCodings],
        );
        for bad in [
            &[("Content-Length", "5"), ("Content-Length", "6")][..],
            &[("Content-Length", "5, 6")],
            &[("Content-Length", "+5")],
            &[("Content-Length", "")],
            &[("Content-Length", "0x5")],
            &[("Content-Length", "99999999999999999999")],
            &[("Content-Length", "9223372036854775808")],
        ] {
            assert_eq!(d(bad, 1), Err(()), "{bad:?}");
        }
        let f = facts(&[
            ("Connection", "Keep-Alive, Upgrade"),
            ("Expect", "100-Continue"),
        ]);
        assert!(f.keep_alive && !f.close && f.expect_continue && !f.upgrade);
        assert_eq!(parse_length(b"9223372036854775807"), Some(i64::MAX as u64));
        assert_eq!(parse_length(b"0000000000000000000000005"), Some(5));
    }
}
