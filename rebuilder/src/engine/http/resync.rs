//! Finding requests where the stream does not say where they start: recognising a request
//! line (`METHOD SP target SP HTTP/1.x`), deciding at stream start whether the stream is
//! HTTP/1 at all (TLS, HTTP/2 and anything else are opaque), and resynchronising after a gap
//! or a mid-stream join by scanning for candidate request lines ([`ParserState::Sync`]).
//!
//! Rules: after a line feed (or at a stream start) any upper-case token is accepted as a
//! method; elsewhere (right after a gap, inside a line) only a known method is, and of a
//! token that ends with a known method (`XPUT` after lost bytes) only that method. A
//! candidate that continues past the end of the bytes at hand is buffered (charged to the
//! budget, at most `max_header_bytes`) until it is decided.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use memchr::{memchr, memrchr};

use super::state::{Ctx, Parser, ParserState};
use crate::engine::stats::DropReason;

const HTTP_MARK: &[u8] = b" HTTP/1.";
static HTTP_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(HTTP_MARK));
const MAX_METHOD: usize = 32;

/// Result of checking bytes for a request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Line {
    /// A request line of this many bytes (including the line end).
    Yes,
    /// Not a request line.
    No,
    /// A valid prefix: more bytes needed.
    More,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks whether `bytes` starts with `METHOD SP target SP HTTP/1.[01] (CR)LF`.
/// With `strict`, the method must be upper case (resync on arbitrary bytes).
pub(super) fn request_line(bytes: &[u8], strict: bool) -> Line {
    let mut i = 0;
    while i < bytes.len() && i <= MAX_METHOD {
        let b = bytes[i];
        let ok = if strict {
            b.is_ascii_uppercase() || b == b'-' || b == b'_'
        } else {
            is_tchar(b)
        };
        if !ok {
            break;
        }
        i += 1;
    }
    if i == bytes.len() {
        return if i <= MAX_METHOD {
            Line::More
        } else {
            Line::No
        };
    }
    if i == 0 || bytes[i] != b' ' {
        return Line::No;
    }
    i += 1;
    let target_start = i;
    while i < bytes.len() && bytes[i] != b' ' {
        if bytes[i] < 0x21 || bytes[i] == 0x7f {
            return Line::No;
        }
        i += 1;
    }
    if i == bytes.len() {
        return Line::More;
    }
    if i == target_start {
        return Line::No;
    }
    let rest = &bytes[i..];
    const TAIL: &[u8] = b" HTTP/1.";
    let n = rest.len().min(TAIL.len());
    if rest[..n] != TAIL[..n] {
        return Line::No;
    }
    if rest.len() <= TAIL.len() {
        return Line::More;
    }
    if !matches!(rest[TAIL.len()], b'0' | b'1') {
        return Line::No;
    }
    match rest.get(TAIL.len() + 1..) {
        None | Some([]) => Line::More,
        Some([b'\n', ..]) | Some([b'\r', b'\n', ..]) => Line::Yes,
        Some([b'\r']) => Line::More,
        Some(_) => Line::No,
    }
}

/// What the first bytes of a stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    Http,
    Opaque,
    More,
}

pub(super) fn classify_start(bytes: &[u8], max_line: usize) -> Start {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
    let Some(&first) = bytes.first() else {
        return Start::More;
    };
    if first == 0x16 {
        return Start::Opaque; // TLS handshake record (ClientHello)
    }
    let n = bytes.len().min(PREFACE.len());
    if bytes[..n] == PREFACE[..n] {
        return if n == PREFACE.len() {
            Start::Opaque
        } else {
            Start::More
        };
    }
    match request_line(bytes, false) {
        Line::Yes => Start::Http,
        Line::No => Start::Opaque,
        Line::More if bytes.len() > max_line => Start::Opaque,
        Line::More => Start::More,
    }
}

/// Standard and WebDAV methods: the only ones accepted for a request line that does not
/// start right after a line feed (after a gap, at a mid-stream join, after a body).
const KNOWN_METHODS: &[&[u8]] = &[
    b"MKACTIVITY",
    b"PROPPATCH",
    b"PROPFIND",
    b"CHECKOUT",
    b"OPTIONS",
    b"CONNECT",
    b"DELETE",
    b"UNLOCK",
    b"SEARCH",
    b"REPORT",
    b"MKCOL",
    b"PATCH",
    b"TRACE",
    b"MERGE",
    b"PURGE",
    b"POST",
    b"HEAD",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"GET",
    b"PUT",
];

/// Length of the known method that `region` ends with, if any (longest first).
fn known_method_suffix(region: &[u8]) -> Option<usize> {
    KNOWN_METHODS
        .iter()
        .find(|m| region.ends_with(m))
        .map(|m| m.len())
}

/// Where the request line containing the ` HTTP/1.` found at `m` would start.
/// After a line feed any upper-case token is a method; elsewhere only a known method.
fn candidate_start(input: &[u8], m: usize, line_start: bool) -> Option<usize> {
    let floor = memrchr(b'\n', &input[..m]).map_or(0, |p| p + 1);
    let sp = floor + memrchr(b' ', &input[floor..m])?;
    let region = &input[floor..sp];
    if (floor > 0 || line_start)
        && !region.is_empty()
        && region.len() <= MAX_METHOD
        && region
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    {
        return Some(floor + refine_start(&input[floor..]));
    }
    known_method_suffix(region).map(|len| sp - len)
}

/// For a line starting with an upper-case token that is not a known method but ends with
/// one (`XPUT / HTTP/1.1` after lost bytes), the offset of that known method; else 0.
fn refine_start(line: &[u8]) -> usize {
    let region = &line[..memchr(b' ', line).unwrap_or(line.len())];
    if KNOWN_METHODS.contains(&region) {
        return 0;
    }
    known_method_suffix(region).map_or(0, |len| region.len() - len)
}

/// How far back from the end of a chunk a request line that continues in the next chunk is
/// looked for.
const TAIL_WINDOW: usize = 2048;

/// Start of a possible request line that begins in the last line of `input` (from `ls`)
/// and continues past its end. `at_line_start`: `ls` follows a line feed.
fn tail_candidate(input: &[u8], ls: usize, at_line_start: bool) -> Option<usize> {
    let window = ls.max(input.len().saturating_sub(TAIL_WINDOW));
    if at_line_start && window == ls && request_line(&input[ls..], true) == Line::More {
        return Some(ls);
    }
    for sp in memchr::memchr_iter(b' ', &input[window..]) {
        let sp = window + sp;
        if let Some(len) = known_method_suffix(&input[window..sp])
            && request_line(&input[sp - len..], false) == Line::More
        {
            return Some(sp - len);
        }
    }
    // A method cut before its space: the longest suffix that is or begins a known method.
    let line = &input[window..];
    (1..=line.len().min(10)).rev().find_map(|k| {
        let suffix = &line[line.len() - k..];
        KNOWN_METHODS
            .iter()
            .any(|m| m.starts_with(suffix))
            .then_some(input.len() - k)
    })
}

impl Parser {
    pub(super) fn sync<'i>(
        &mut self,
        ts_us: u64,
        input: &'i [u8],
        line_start: bool,
        ctx: &mut Ctx<'_>,
    ) -> &'i [u8] {
        let max = ctx.limits.max_header_bytes;
        if !self.buf.is_empty() {
            // A candidate request line began in earlier bytes.
            let (take, complete) = match memchr(b'\n', input) {
                Some(j) => (j + 1, true),
                None => (input.len(), false),
            };
            let verdict = if self.buf.len() + take > max {
                Line::No
            } else if ctx.budget.used + take > ctx.budget.limit {
                ctx.stats.count_drop(DropReason::OverBudget);
                Line::No
            } else {
                self.buf.extend_from_slice(&input[..take]);
                request_line(&self.buf, false)
            };
            let verdict = match verdict {
                Line::Yes => {
                    let skip = refine_start(&self.buf);
                    let method = &self.buf[skip..];
                    let method = &method[..memchr(b' ', method).unwrap_or(method.len())];
                    if self.candidate_at_line_start || KNOWN_METHODS.contains(&method) {
                        self.buf.drain(..skip);
                        Line::Yes
                    } else {
                        Line::No
                    }
                }
                other => other,
            };
            match verdict {
                Line::Yes => {
                    self.state = ParserState::Head;
                    self.account(ctx.budget);
                    return &input[take..];
                }
                Line::More if !complete => {
                    self.account(ctx.budget);
                    return &[];
                }
                _ => {
                    // Not a request line after all: scan these bytes afresh.
                    self.buf.clear();
                    self.account(ctx.budget);
                    self.state = ParserState::Sync { line_start: false };
                    return self.sync(ts_us, input, false, ctx);
                }
            }
        }
        let mut from = 0;
        while let Some(rel) = HTTP_FINDER.find(&input[from..]) {
            let m = from + rel;
            if let Some(start) = candidate_start(input, m, line_start) {
                match request_line(&input[start..], false) {
                    Line::Yes => {
                        self.state = ParserState::Head;
                        return &input[start..];
                    }
                    Line::More => {
                        let at_line_start = if start == 0 {
                            line_start
                        } else {
                            input[start - 1] == b'\n'
                        };
                        return self.keep_candidate(ts_us, &input[start..], at_line_start, ctx);
                    }
                    Line::No => {}
                }
            }
            from = m + 1;
        }
        // No complete request line: keep a tail that may begin one.
        let ls = memrchr(b'\n', input).map_or(0, |p| p + 1);
        if ls == input.len() {
            self.state = ParserState::Sync { line_start: true };
            return &[];
        }
        self.state = ParserState::Sync { line_start: false };
        if let Some(start) = tail_candidate(input, ls, line_start || ls > 0) {
            let at_line_start = start == ls && (line_start || ls > 0);
            return self.keep_candidate(ts_us, &input[start..], at_line_start, ctx);
        }
        &[]
    }

    fn keep_candidate<'i>(
        &mut self,
        ts_us: u64,
        tail: &[u8],
        at_line_start: bool,
        ctx: &mut Ctx<'_>,
    ) -> &'i [u8] {
        self.state = ParserState::Sync { line_start: false };
        self.candidate_at_line_start = at_line_start;
        if tail.len() <= ctx.limits.max_header_bytes
            && ctx.budget.used + tail.len() <= ctx.budget.limit
        {
            self.buf.extend_from_slice(tail);
            self.msg_ts = ts_us;
            self.account(ctx.budget);
        }
        &[]
    }
}
