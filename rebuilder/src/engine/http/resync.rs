//! Finding requests where the stream does not say where they start: recognising a request
//! line (`METHOD SP target SP HTTP/1.x`), deciding at stream start whether the stream is
//! HTTP/1 at all (TLS, HTTP/2 and anything else are opaque), and resynchronising after a gap
//! or a mid-stream join by scanning for candidate request lines ([`ParserState::Sync`]).
//!
//! Rules: after a line feed (or at a stream start) any upper-case token is accepted as a
//! method; elsewhere (right after a gap, inside a line) only a known method is, and of a
//! token that ends with a known method (`XPUT` after lost bytes) only that method. The rest
//! of the line follows the grammar of [`super::grammar`] (several spaces, any 1.x version);
//! candidates are found by their ` HTTP/1.` (HTTP/0.9 lines and other majors are recognised
//! only at message boundaries). A candidate that continues past the end of the bytes at hand
//! is buffered (charged to the budget, at most `max_header_bytes`) until it is decided.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use memchr::{memchr, memrchr};

use super::grammar::{self, Line, MAX_SCAN_METHOD, Methods};
use super::state::{Ctx, Parser, ParserState};
use crate::engine::stats::DropReason;

const HTTP_MARK: &[u8] = b" HTTP/1.";
static HTTP_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(HTTP_MARK));

/// Checks whether `bytes` starts with a request line with a version (see
/// [`super::grammar`]; an HTTP/0.9 line is recognised only at a message boundary). With
/// `strict`, the method must be upper case (resync on arbitrary bytes).
pub(super) fn request_line(bytes: &[u8], strict: bool) -> Line {
    let methods = if strict {
        Methods::Upper
    } else {
        Methods::Token
    };
    match grammar::request_line(bytes, methods) {
        Ok(l) if l.simple => Line::No,
        Ok(_) => Line::Yes,
        Err(l) => l,
    }
}

/// What the first bytes of a stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// To be parsed as HTTP/1 (requests, or text that is counted and skipped).
    Http,
    /// Not HTTP/1 on evidence: ignored.
    Opaque,
    /// Undecided: more bytes needed.
    More,
}

/// Bytes of a stream's start that [`classify_start`] needs at most to decide.
pub(super) const START_PROBE: usize = 16;

/// Whether the stream starting with `bytes` (leading empty lines skipped) is opaque. Only
/// positive evidence counts: a TLS record (0x16), the HTTP/2 preface, a status line (the
/// stream carries responses), or binary bytes — a control byte other than HTAB, CR or LF (or
/// DEL, NUL) where a request's method would be (the first [`START_PROBE`] bytes, up to the
/// first space or line end). Anything else is parsed as HTTP/1 (an unusual request line is
/// never a reason to stop looking).
pub(super) fn classify_start(bytes: &[u8]) -> Start {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
    const STATUS: &[u8] = b"HTTP/";
    let Some(&first) = bytes.first() else {
        return Start::More;
    };
    if first == 0x16 {
        return Start::Opaque; // TLS handshake record (ClientHello)
    }
    let probe = &bytes[..bytes.len().min(START_PROBE)];
    let line = &probe[..memchr(b'\n', probe).unwrap_or(probe.len())];
    let word = &line[..memchr(b' ', line).unwrap_or(line.len())];
    if word
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t' && b != b'\r') || b == 0x7f)
    {
        return Start::Opaque;
    }
    for sig in [PREFACE, STATUS] {
        let n = bytes.len().min(sig.len());
        if bytes[..n] == sig[..n] {
            return if n == sig.len() {
                Start::Opaque
            } else {
                Start::More
            };
        }
    }
    if probe.len() == START_PROBE || line.len() < probe.len() {
        Start::Http
    } else {
        Start::More
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
    // `input[floor..m]` is `METHOD SP+ TARGET SP*` (several spaces: nginx, Node).
    let before = trim_spaces_end(&input[floor..m]);
    let tsp = memrchr(b' ', before)?;
    let region = trim_spaces_end(&before[..tsp]);
    let end = floor + region.len();
    if (floor > 0 || line_start)
        && !region.is_empty()
        && region.len() <= MAX_SCAN_METHOD
        && region
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    {
        return Some(floor + refine_start(&input[floor..]));
    }
    known_method_suffix(region).map(|len| end - len)
}

fn trim_spaces_end(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().rev().take_while(|&&b| b == b' ').count();
    &bytes[..bytes.len() - n]
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
            // Where this packet's bytes begin in the candidate.
            let held = self.buf.len();
            let verdict = if self.buf.len() + take > max {
                Line::No
            } else if !self.may_grow(take, ctx) {
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
                        if skip > 0 {
                            self.buf.drain(..skip);
                            ctx.restarted = true;
                            if skip >= held {
                                // The request begins in this packet: its time.
                                self.msg_ts = ts_us;
                            }
                        }
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
                    ctx.restarted = true;
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
        if tail.len() <= ctx.limits.max_header_bytes && self.may_grow(tail.len(), ctx) {
            self.buf.extend_from_slice(tail);
            self.msg_ts = ts_us;
            self.account(ctx.budget);
        }
        &[]
    }
}
