//! HTTP/1.0 and HTTP/1.1 request extraction from one reassembled client→server stream.
//!
//! The parser is driven by the reassembly ([`crate::engine::reassembly::Sink`]): bytes in order,
//! gaps, end of stream. Heads are parsed with `httparse` once their terminating empty line
//! is present (never re-parsed per segment), straight from the segment when the head fits in
//! it (no copy), otherwise from a per-direction buffer.
//!
//! Policies:
//! - **Framing** (RFC 9112 §6): `Transfer-Encoding` whose last coding is `chunked` → chunked
//!   (decoded; chunk extensions ignored); any other `Transfer-Encoding` → bad request; else
//!   `Content-Length` (all values equal, digits only) → that many bytes; else no body.
//! - **Trailers** of a chunked body are kept: appended to `headers` after the header fields.
//! - **Pipelining**: every complete request in the stream is emitted, in order.
//! - **Expect: 100-continue**: the body is awaited like any other; if the stream ends cleanly
//!   right after such a head with no body byte sent (the server refused, the client gave up),
//!   the request is emitted with an empty body.
//! - **Upgrade / CONNECT**: the request is emitted, then the rest of the stream is ignored.
//! - **Opaque**: a stream whose start was seen (SYN) and that begins with a TLS record, the
//!   HTTP/2 preface or anything that is not an HTTP/1.x request line is ignored.
//! - **Gaps**: a gap inside a message drops that message (never emitted with missing bytes);
//!   a gap inside a Content-Length body skips to the known end of that body; otherwise the
//!   parser resynchronises on the next request line (`METHOD SP target SP HTTP/1.x`, method
//!   in upper case) that starts a line or starts right after the gap.
//! - **PROXY protocol** (v1 line or v2 binary header, [`crate::engine::proxy`]) at the start of a
//!   stream whose SYN was seen: stripped; its source address becomes the requests' `client`
//!   (the TCP sender stays in `peer`). A malformed or truncated header is counted
//!   (`proxy_header_malformed`); when its end is known the stream goes on after it (parsed
//!   only if it starts with a request line, else opaque), otherwise it is parsed like a
//!   stream joined mid-way (only clear request lines are recognised).
//! - **Health checks** matching [`crate::engine::health_check::HealthCheckRule`] are dropped
//!   (`health_check`).
//! - **Caps**: a head over `max_header_bytes`, or with more than `max_headers` fields, drops
//!   that message (counted); bodies over `max_body_bytes` (or beyond the global budget) are
//!   cut, the request is emitted flagged `body_truncated`.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::LazyLock;

use memchr::memmem::Finder;
use memchr::{memchr, memrchr};

use crate::engine::health_check::HealthCheckRule;
use crate::engine::proxy;
use crate::engine::reassembly::Budget;
use crate::engine::request::HttpRequest;
use crate::engine::{DropReason, EngineStats};

/// Caps and rules of the parser (copied from the engine configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum head size.
    pub max_header_bytes: usize,
    /// Maximum header fields.
    pub max_headers: usize,
    /// Maximum body kept.
    pub max_body_bytes: usize,
    /// Requests dropped as load-balancer health checks.
    pub health_checks: HealthCheckRule,
}

/// Who a stream belongs to: copied into each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// VXLAN VNI.
    pub vni: u32,
    /// Sender of this stream.
    pub client: SocketAddr,
    /// Receiver of this stream.
    pub server: SocketAddr,
}

/// Everything the parser writes to.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Caps.
    pub limits: &'a Limits,
    /// Global memory budget.
    pub budget: &'a mut Budget,
    /// Counters.
    pub stats: &'a mut EngineStats,
    /// Emitted requests.
    pub out: &'a mut Vec<HttpRequest>,
    /// Flow identity.
    pub meta: Meta,
}

/// Parser state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Stream start seen (SYN), no byte yet: the first bytes decide PROXY header, HTTP/1 or
    /// opaque.
    Start,
    /// The stream starts like a PROXY header (`buf` holds its first bytes, at most
    /// [`proxy::MAX_PREFIX`]).
    Proxy,
    /// Looking for a request line; `line_start`: the next byte starts a line.
    Sync {
        /// The next byte starts a line (after `\n` or a gap).
        line_start: bool,
    },
    /// At a message boundary (`buf` empty) or inside a head (`buf` holds it).
    Head,
    /// Content-Length body; `discard` after a gap inside it.
    Body {
        /// Body bytes still to come.
        remaining: u64,
        /// The message was dropped; skip to its end.
        discard: bool,
    },
    /// A chunk-size line (`buf` holds its start).
    ChunkSize,
    /// Chunk data.
    ChunkData {
        /// Bytes of the chunk still to come.
        remaining: u64,
    },
    /// The CRLF after chunk data.
    ChunkDataEnd {
        /// The CR was seen.
        seen_cr: bool,
    },
    /// Trailer section (`buf` holds it; the current line starts at `line_start`).
    Trailers {
        /// Offset in `buf` of the line being read.
        line_start: usize,
    },
    /// Not HTTP/1 (TLS, HTTP/2, other): ignored.
    Opaque,
    /// After Upgrade / CONNECT: ignored.
    Upgraded,
    /// The stream ended.
    Ended,
}

#[derive(Debug)]
struct Pending {
    req: HttpRequest,
    upgrade: bool,
    expect_continue: bool,
    body_seen: u64,
}

/// Request parser of one stream.
///
/// Invariants:
/// - `pending` is `Some` exactly in the body states (`Body` not discarding, `Chunk*`,
///   `Trailers`).
/// - `held` equals `buf.len()` plus the pending body's length, and is charged to the
///   engine's [`Budget`].
/// - A request is pushed to `out` only when every byte of it was delivered with no gap.
#[derive(Debug)]
pub struct Parser {
    state: State,
    buf: Vec<u8>,
    held: usize,
    msg_ts: u64,
    pending: Option<Box<Pending>>,
    first_message: bool,
    /// The candidate request line in `buf` (while syncing) starts a line: any upper-case
    /// method is accepted; otherwise only a known method.
    candidate_at_line_start: bool,
    /// Saturating (only compared with small numbers).
    emitted: u32,
    /// The real client named by the stream's PROXY header (boxed: rare, keeps flows small).
    proxied: Option<Box<SocketAddr>>,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

const HTTP_MARK: &[u8] = b" HTTP/1.";
static HTTP_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(HTTP_MARK));
const MAX_METHOD: usize = 32;
const MAX_CHUNK_LINE: usize = 1024;
const STACK_HEADERS: usize = 128;
/// Capacity a direction's buffer may keep while empty.
const IDLE_BUF_CAPACITY: usize = 256;

/// Result of checking bytes for a request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
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
fn request_line(bytes: &[u8], strict: bool) -> Line {
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
enum Start {
    Http,
    Opaque,
    More,
}

fn classify_start(bytes: &[u8], max_line: usize) -> Start {
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

/// Length of the head in `prev ++ input` counted in `input` bytes, if its end (an empty
/// line) is there. `prev` holds the last (up to 2) bytes already buffered.
fn head_end(prev: &[u8], input: &[u8]) -> Option<usize> {
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

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if end == 0 || end > 15 {
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
    u64::from_str_radix(std::str::from_utf8(&line[..end]).ok()?, 16).ok()
}

/// Body framing from the header fields.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, ()> {
    let mut te_last: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if let Some(last) = h
                .value
                .split(|&b| b == b',')
                .map(|c| c.trim_ascii())
                .rfind(|c| !c.is_empty())
            {
                te_last = Some(last);
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for v in h.value.split(|&b| b == b',') {
                let v = v.trim_ascii();
                if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                    return Err(());
                }
                let n: u64 = std::str::from_utf8(v)
                    .map_err(|_| ())?
                    .parse()
                    .map_err(|_| ())?;
                if length.is_some_and(|l| l != n) {
                    return Err(());
                }
                length = Some(n);
            }
        }
    }
    match te_last {
        Some(c) if c.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
        Some(_) => Err(()),
        None => Ok(length.map_or(Framing::None, Framing::Length)),
    }
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
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
    /// A parser for a stream joined mid-way: it syncs on the first request line.
    pub fn new() -> Parser {
        Parser {
            state: State::Sync { line_start: false },
            buf: Vec::new(),
            held: 0,
            msg_ts: 0,
            pending: None,
            first_message: false,
            candidate_at_line_start: false,
            emitted: 0,
            proxied: None,
        }
    }

    /// A parser for a stream whose start (SYN) was seen.
    pub fn at_stream_start() -> Parser {
        Parser {
            state: State::Start,
            ..Parser::new()
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Requests emitted so far.
    pub fn emitted(&self) -> u64 {
        u64::from(self.emitted)
    }

    /// Whether further bytes are ignored (opaque, upgraded, ended).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Opaque | State::Upgraded | State::Ended)
    }

    /// Bytes held in buffers (charged to the budget).
    pub fn held(&self) -> usize {
        self.held
    }

    fn account(&mut self, budget: &mut Budget) {
        let now = self.buf.len() + self.pending.as_ref().map_or(0, |p| p.req.body.len());
        if now > self.held {
            budget.used += now - self.held;
        } else {
            budget.give(self.held - now);
        }
        self.held = now;
        // Idle directions hold no allocation beyond a small one (RSS with many flows).
        if self.buf.is_empty() && self.buf.capacity() > IDLE_BUF_CAPACITY {
            self.buf = Vec::new();
        }
    }

    fn drop_message(&mut self, reason: DropReason, next: State, ctx: &mut Ctx<'_>) {
        ctx.stats.count_drop(reason);
        self.pending = None;
        self.buf.clear();
        self.state = next;
        self.account(ctx.budget);
    }

    fn become_opaque(&mut self, ctx: &mut Ctx<'_>) {
        ctx.stats.opaque_flows += 1;
        self.pending = None;
        self.buf.clear();
        self.state = State::Opaque;
        self.account(ctx.budget);
    }

    /// Feeds in-order bytes; `ts_us` is the time of the packet that carried them.
    pub fn data(&mut self, ts_us: u64, mut input: &[u8], ctx: &mut Ctx<'_>) {
        while !input.is_empty() {
            input = match self.state {
                State::Start => {
                    self.first_message = true;
                    self.msg_ts = ts_us;
                    self.state = if matches!(
                        input[0],
                        b if b == proxy::V1_PREFIX[0] || b == proxy::V2_SIGNATURE[0]
                    ) {
                        State::Proxy
                    } else {
                        State::Head
                    };
                    input
                }
                State::Proxy => self.proxy_header(input, ctx),
                State::Sync { line_start } => self.sync(ts_us, input, line_start, ctx),
                State::Head => self.head(ts_us, input, ctx),
                State::Body { remaining, discard } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    if !discard {
                        self.append_body(&input[..n], ctx);
                    }
                    let remaining = remaining - n as u64;
                    self.state = State::Body { remaining, discard };
                    if remaining == 0 {
                        if discard {
                            self.state = State::Head;
                        } else {
                            self.emit(ctx);
                        }
                    }
                    &input[n..]
                }
                State::ChunkSize => self.chunk_size(input, ctx),
                State::ChunkData { remaining } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    self.append_body(&input[..n], ctx);
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::ChunkDataEnd { seen_cr: false }
                    } else {
                        State::ChunkData { remaining }
                    };
                    &input[n..]
                }
                State::ChunkDataEnd { seen_cr } => match input[0] {
                    b'\r' if !seen_cr => {
                        self.state = State::ChunkDataEnd { seen_cr: true };
                        &input[1..]
                    }
                    b'\n' => {
                        self.state = State::ChunkSize;
                        &input[1..]
                    }
                    _ => {
                        self.drop_message(
                            DropReason::BadRequest,
                            State::Sync { line_start: false },
                            ctx,
                        );
                        input
                    }
                },
                State::Trailers { line_start } => self.trailers(line_start, input, ctx),
                State::Opaque | State::Upgraded | State::Ended => return,
            };
        }
    }

    /// `len` bytes of the stream were lost.
    pub fn gap(&mut self, len: u64, ctx: &mut Ctx<'_>) {
        let resync = State::Sync { line_start: false };
        match self.state {
            State::Start => self.state = resync,
            State::Proxy => {
                ctx.stats.count_drop(DropReason::ProxyHeaderMalformed);
                self.buf.clear();
                self.state = resync;
                self.account(ctx.budget);
            }
            State::Sync { .. } => {
                self.buf.clear();
                self.state = resync;
                self.account(ctx.budget);
            }
            State::Head if self.buf.is_empty() => self.state = resync,
            State::Head
            | State::ChunkSize
            | State::ChunkData { .. }
            | State::ChunkDataEnd { .. }
            | State::Trailers { .. } => self.drop_message(DropReason::MessageGap, resync, ctx),
            State::Body { remaining, discard } => {
                if !discard {
                    ctx.stats.count_drop(DropReason::MessageGap);
                    self.pending = None;
                    self.account(ctx.budget);
                }
                self.state = if len < remaining {
                    State::Body {
                        remaining: remaining - len,
                        discard: true,
                    }
                } else if len == remaining {
                    State::Head
                } else {
                    resync
                };
            }
            State::Opaque | State::Upgraded | State::Ended => {}
        }
        self.first_message = false;
    }

    /// The stream ended: a message in progress is lost, except an `Expect: 100-continue`
    /// head whose body was never sent.
    pub fn end(&mut self, ctx: &mut Ctx<'_>) {
        match self.state {
            State::Head if !self.buf.is_empty() => {
                ctx.stats.count_drop(DropReason::MessageIncomplete)
            }
            State::Proxy => ctx.stats.count_drop(DropReason::ProxyHeaderMalformed),
            State::Body { discard: false, .. } | State::ChunkSize
                if self.buf.is_empty()
                    && self
                        .pending
                        .as_ref()
                        .is_some_and(|p| p.expect_continue && p.body_seen == 0) =>
            {
                self.emit(ctx);
            }
            State::Body { discard: false, .. }
            | State::ChunkSize
            | State::ChunkData { .. }
            | State::ChunkDataEnd { .. }
            | State::Trailers { .. } => ctx.stats.count_drop(DropReason::MessageIncomplete),
            _ => {}
        }
        self.pending = None;
        self.buf = Vec::new();
        if !matches!(self.state, State::Opaque | State::Upgraded) {
            self.state = State::Ended;
        }
        self.account(ctx.budget);
    }

    /// The flow was evicted: a message in progress is lost (counted as `flow_evicted`).
    pub fn evict(&mut self, ctx: &mut Ctx<'_>) {
        let in_message = match self.state {
            State::Head => !self.buf.is_empty(),
            State::Body { discard, .. } => !discard,
            State::ChunkSize
            | State::ChunkData { .. }
            | State::ChunkDataEnd { .. }
            | State::Trailers { .. } => true,
            _ => false,
        };
        if in_message {
            ctx.stats.count_drop(DropReason::FlowEvicted);
        }
        self.pending = None;
        self.buf = Vec::new();
        self.state = State::Ended;
        self.account(ctx.budget);
    }

    fn sync<'i>(
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
                    self.state = State::Head;
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
                    self.state = State::Sync { line_start: false };
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
                        self.state = State::Head;
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
            self.state = State::Sync { line_start: true };
            return &[];
        }
        self.state = State::Sync { line_start: false };
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
        self.state = State::Sync { line_start: false };
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

    fn head<'i>(&mut self, ts_us: u64, mut input: &'i [u8], ctx: &mut Ctx<'_>) -> &'i [u8] {
        let max = ctx.limits.max_header_bytes;
        if self.buf.is_empty() {
            // Empty lines between messages are skipped (RFC 9112 §2.2).
            let skip = input
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            input = &input[skip..];
            if input.is_empty() {
                return input;
            }
            self.msg_ts = ts_us;
            if self.first_message {
                match classify_start(input, max) {
                    Start::Opaque => {
                        self.become_opaque(ctx);
                        return &[];
                    }
                    Start::Http => self.first_message = false,
                    Start::More => {}
                }
            }
            if let Some(end) = head_end(&[], input) {
                if end > max {
                    self.drop_message(
                        DropReason::HeadTooLarge,
                        State::Sync { line_start: true },
                        ctx,
                    );
                } else {
                    self.complete_head(&input[..end], ctx);
                }
                return &input[end..];
            }
            if input.len() > max {
                self.drop_message(
                    DropReason::HeadTooLarge,
                    State::Sync { line_start: false },
                    ctx,
                );
                return &[];
            }
            if ctx.budget.used + input.len() > ctx.budget.limit {
                self.drop_message(
                    DropReason::OverBudget,
                    State::Sync { line_start: false },
                    ctx,
                );
                return &[];
            }
            self.buf.extend_from_slice(input);
            self.account(ctx.budget);
            return &[];
        }
        let n = self.buf.len();
        let prev_start = n.saturating_sub(2);
        let mut prev = [0u8; 2];
        prev[..n - prev_start].copy_from_slice(&self.buf[prev_start..]);
        let end = head_end(&prev[..n - prev_start], input);
        let take = end.unwrap_or(input.len());
        if self.first_message {
            // Decide HTTP or opaque on the bytes so far before any cap applies, as when the
            // same bytes arrive in one piece (the verdict must not depend on segmentation).
            let mut probe = Vec::with_capacity(n + take.min(max + 1));
            probe.extend_from_slice(&self.buf);
            probe.extend_from_slice(&input[..take.min(max + 1)]);
            match classify_start(&probe, max) {
                Start::Opaque => {
                    self.become_opaque(ctx);
                    return &[];
                }
                Start::Http => self.first_message = false,
                Start::More => {}
            }
        }
        if n + take > max {
            self.drop_message(
                DropReason::HeadTooLarge,
                State::Sync {
                    line_start: end.is_some(),
                },
                ctx,
            );
            return &input[take..];
        }
        if ctx.budget.used + take > ctx.budget.limit {
            self.drop_message(
                DropReason::OverBudget,
                State::Sync { line_start: false },
                ctx,
            );
            return &input[take..];
        }
        self.buf.extend_from_slice(&input[..take]);
        if end.is_some() {
            let head = std::mem::take(&mut self.buf);
            self.complete_head(&head, ctx);
            self.buf = head;
            self.buf.clear();
        }
        self.account(ctx.budget);
        &input[take..]
    }

    /// The first bytes of a stream that may be a PROXY header: buffered (at most
    /// [`proxy::MAX_PREFIX`] bytes) until [`proxy::parse`] decides, then the header is
    /// stripped and the bytes after it are parsed from the start state.
    fn proxy_header<'i>(&mut self, input: &'i [u8], ctx: &mut Ctx<'_>) -> &'i [u8] {
        let take = input.len().min(proxy::MAX_PREFIX - self.buf.len());
        self.buf.extend_from_slice(&input[..take]);
        let rest = &input[take..];
        let (span, next) = match proxy::parse(&self.buf) {
            proxy::Parsed::Incomplete => {
                self.account(ctx.budget);
                return rest;
            }
            proxy::Parsed::NotProxy => (
                proxy::Span {
                    consumed: 0,
                    skip: 0,
                },
                State::Head,
            ),
            proxy::Parsed::Header(h) => {
                ctx.stats.proxy_headers += 1;
                self.proxied = h.source.map(Box::new);
                (h.span, State::Head)
            }
            proxy::Parsed::Malformed(Some(span)) => {
                ctx.stats.count_drop(DropReason::ProxyHeaderMalformed);
                (span, State::Head)
            }
            proxy::Parsed::Malformed(None) => {
                ctx.stats.count_drop(DropReason::ProxyHeaderMalformed);
                // Nothing marks the end of the header: only clear request lines count.
                self.first_message = false;
                (
                    proxy::Span {
                        consumed: 0,
                        skip: 0,
                    },
                    State::Sync { line_start: false },
                )
            }
        };
        let after = self.buf.split_off(span.consumed);
        self.buf.clear();
        self.state = if span.skip > 0 {
            // v2 TLVs: skipped as they stream past; the start state follows.
            State::Body {
                remaining: span.skip,
                discard: true,
            }
        } else {
            next
        };
        self.account(ctx.budget);
        if !after.is_empty() {
            self.data(self.msg_ts, &after, ctx);
        }
        rest
    }

    /// Parses a complete head and sets up its body.
    fn complete_head(&mut self, head: &[u8], ctx: &mut Ctx<'_>) {
        let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        let mut heap;
        let slots: &mut [MaybeUninit<httparse::Header<'_>>] =
            if ctx.limits.max_headers <= STACK_HEADERS {
                &mut stack[..ctx.limits.max_headers]
            } else {
                heap = Vec::with_capacity(ctx.limits.max_headers);
                heap.resize_with(ctx.limits.max_headers, MaybeUninit::uninit);
                &mut heap[..]
            };
        let mut req = httparse::Request::new(&mut []);
        let resync = State::Sync { line_start: true };
        match req.parse_with_uninit_headers(head, slots) {
            Ok(httparse::Status::Complete(_)) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return self.drop_message(DropReason::TooManyHeaders, resync, ctx);
            }
            Ok(httparse::Status::Partial) | Err(_) => {
                return self.drop_message(DropReason::BadRequest, resync, ctx);
            }
        }
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return self.drop_message(DropReason::BadRequest, resync, ctx);
        };
        let Ok(framing) = framing(req.headers) else {
            return self.drop_message(DropReason::BadRequest, resync, ctx);
        };
        let mut upgrade = method.eq_ignore_ascii_case("CONNECT");
        let mut expect_continue = false;
        let mut headers = Vec::with_capacity(req.headers.len());
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            } else if h.name.eq_ignore_ascii_case("expect") {
                expect_continue |= has_token(h.value, b"100-continue");
            }
            headers.push((h.name.to_owned(), h.value.to_vec()));
        }
        let chunked = matches!(framing, Framing::Chunked);
        // A Content-Length body is allocated once (bounded: the length is the sender's word).
        let body = match framing {
            Framing::Length(n) => {
                Vec::with_capacity((n.min(64 * 1024) as usize).min(ctx.limits.max_body_bytes))
            }
            _ => Vec::new(),
        };
        self.pending = Some(Box::new(Pending {
            req: HttpRequest {
                ts_us: self.msg_ts,
                vni: ctx.meta.vni,
                client: self.proxied.as_deref().copied().unwrap_or(ctx.meta.client),
                peer: ctx.meta.client,
                server: ctx.meta.server,
                method: method.to_owned(),
                target: target.to_owned(),
                version,
                headers,
                body,
                chunked,
                body_truncated: false,
            },
            upgrade,
            expect_continue,
            body_seen: 0,
        }));
        match framing {
            Framing::Chunked if !upgrade || !method.eq_ignore_ascii_case("CONNECT") => {
                self.state = State::ChunkSize;
            }
            Framing::Length(n) if n > 0 && !method.eq_ignore_ascii_case("CONNECT") => {
                self.state = State::Body {
                    remaining: n,
                    discard: false,
                };
            }
            _ => self.emit(ctx),
        }
    }

    fn append_body(&mut self, bytes: &[u8], ctx: &mut Ctx<'_>) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        p.body_seen += bytes.len() as u64;
        if p.req.body_truncated {
            // Once cut, the body stays a prefix: bytes are never appended after a hole (the
            // budget may have room again later).
            return;
        }
        let room = ctx.limits.max_body_bytes.saturating_sub(p.req.body.len());
        let budget_room = ctx.budget.limit.saturating_sub(ctx.budget.used);
        let take = bytes.len().min(room).min(budget_room);
        if take < bytes.len() {
            p.req.body_truncated = true;
        }
        p.req.body.extend_from_slice(&bytes[..take]);
        ctx.budget.used += take;
        self.held += take;
    }

    fn emit(&mut self, ctx: &mut Ctx<'_>) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let p = *p;
        self.account(ctx.budget);
        self.emitted = self.emitted.saturating_add(1);
        if ctx.limits.health_checks.matches(&p.req) {
            ctx.stats.count_drop(DropReason::HealthCheck);
        } else {
            ctx.stats.requests += 1;
            if p.req.body_truncated {
                ctx.stats.bodies_truncated += 1;
            }
            ctx.out.push(p.req);
        }
        if p.upgrade {
            ctx.stats.upgraded_flows += 1;
            self.buf = Vec::new();
            self.state = State::Upgraded;
            self.account(ctx.budget);
        } else {
            self.state = State::Head;
        }
    }

    fn chunk_size<'i>(&mut self, input: &'i [u8], ctx: &mut Ctx<'_>) -> &'i [u8] {
        let (take, complete) = match memchr(b'\n', input) {
            Some(j) => (j + 1, true),
            None => (input.len(), false),
        };
        if self.buf.len() + take > MAX_CHUNK_LINE {
            self.drop_message(
                DropReason::BadRequest,
                State::Sync { line_start: false },
                ctx,
            );
            return &input[take..];
        }
        if !complete && ctx.budget.used + take > ctx.budget.limit {
            self.drop_message(
                DropReason::OverBudget,
                State::Sync { line_start: false },
                ctx,
            );
            return &input[take..];
        }
        if !complete {
            self.buf.extend_from_slice(input);
            self.account(ctx.budget);
            return &[];
        }
        let size = if self.buf.is_empty() {
            parse_chunk_size(&input[..take])
        } else {
            self.buf.extend_from_slice(&input[..take]);
            parse_chunk_size(&self.buf)
        };
        self.buf.clear();
        match size {
            None => self.drop_message(
                DropReason::BadRequest,
                State::Sync { line_start: true },
                ctx,
            ),
            Some(0) => self.state = State::Trailers { line_start: 0 },
            Some(n) => self.state = State::ChunkData { remaining: n },
        }
        self.account(ctx.budget);
        &input[take..]
    }

    fn trailers<'i>(&mut self, line_start: usize, input: &'i [u8], ctx: &mut Ctx<'_>) -> &'i [u8] {
        let (take, complete) = match memchr(b'\n', input) {
            Some(j) => (j + 1, true),
            None => (input.len(), false),
        };
        if self.buf.len() + take > ctx.limits.max_header_bytes {
            self.drop_message(
                DropReason::HeadTooLarge,
                State::Sync { line_start: false },
                ctx,
            );
            return &input[take..];
        }
        if ctx.budget.used + take > ctx.budget.limit {
            self.drop_message(
                DropReason::OverBudget,
                State::Sync { line_start: false },
                ctx,
            );
            return &input[take..];
        }
        self.buf.extend_from_slice(&input[..take]);
        self.account(ctx.budget);
        if !complete {
            return &[];
        }
        let line = &self.buf[line_start..];
        if line != b"\r\n" && line != b"\n" {
            self.state = State::Trailers {
                line_start: self.buf.len(),
            };
            return &input[take..];
        }
        if line_start > 0 {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            match httparse::parse_headers(&self.buf, &mut fields) {
                Ok(httparse::Status::Complete((_, parsed))) => {
                    if let Some(p) = self.pending.as_mut() {
                        p.req
                            .headers
                            .extend(parsed.iter().map(|h| (h.name.to_owned(), h.value.to_vec())));
                    }
                }
                Err(httparse::Error::TooManyHeaders) => {
                    self.drop_message(
                        DropReason::TooManyHeaders,
                        State::Sync { line_start: true },
                        ctx,
                    );
                    return &input[take..];
                }
                _ => {
                    self.drop_message(
                        DropReason::BadRequest,
                        State::Sync { line_start: true },
                        ctx,
                    );
                    return &input[take..];
                }
            }
        }
        self.buf.clear();
        self.emit(ctx);
        self.account(ctx.budget);
        &input[take..]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) const LIMITS: Limits = Limits {
        max_header_bytes: 8192,
        max_headers: 64,
        max_body_bytes: 1 << 20,
        health_checks: HealthCheckRule::OFF,
    };

    pub(crate) struct H {
        pub p: Parser,
        pub budget: Budget,
        pub stats: EngineStats,
        pub out: Vec<HttpRequest>,
        pub limits: Limits,
    }

    impl H {
        pub(crate) fn new(start: bool) -> H {
            H::with(start, LIMITS)
        }
        pub(crate) fn with(start: bool, limits: Limits) -> H {
            H {
                p: if start {
                    Parser::at_stream_start()
                } else {
                    Parser::new()
                },
                budget: Budget::new(1 << 26),
                stats: EngineStats::default(),
                out: Vec::new(),
                limits,
            }
        }
        fn ctx(&mut self) -> Ctx<'_> {
            Ctx {
                limits: &self.limits,
                budget: &mut self.budget,
                stats: &mut self.stats,
                out: &mut self.out,
                meta: Meta {
                    vni: 7,
                    client: "10.0.0.1:40000".parse().unwrap(),
                    server: "10.0.0.2:80".parse().unwrap(),
                },
            }
        }
        pub(crate) fn feed(&mut self, bytes: &[u8]) -> &mut Self {
            let mut p = std::mem::take(&mut self.p);
            p.data(1, bytes, &mut self.ctx());
            self.p = p;
            assert_eq!(self.budget.used, self.p.held(), "budget tracks buffers");
            self
        }
        pub(crate) fn gap(&mut self, len: u64) -> &mut Self {
            let mut p = std::mem::take(&mut self.p);
            p.gap(len, &mut self.ctx());
            self.p = p;
            self
        }
        pub(crate) fn end(&mut self) -> &mut Self {
            let mut p = std::mem::take(&mut self.p);
            p.end(&mut self.ctx());
            self.p = p;
            assert_eq!(self.budget.used, 0);
            self
        }
        fn targets(&self) -> Vec<&str> {
            self.out.iter().map(|r| r.target.as_str()).collect()
        }
    }

    #[test]
    fn simple_get_is_emitted_with_headers_in_order() {
        let mut h = H::new(true);
        h.feed(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 2\r\nhost: dup\r\n\r\n");
        assert_eq!(h.out.len(), 1);
        let r = &h.out[0];
        assert_eq!(
            (r.method.as_str(), r.target.as_str(), r.version),
            ("GET", "/a?b=1", 1)
        );
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Host", "X-Two", "host"]);
        assert_eq!(r.header("x-two"), Some(&b"2"[..]));
        assert_eq!(r.vni, 7);
        assert!(r.body.is_empty() && !r.chunked && !r.body_truncated);
    }

    #[test]
    fn content_length_body_is_collected_across_pieces() {
        let mut h = H::new(true);
        h.feed(b"POST /p HTTP/1.0\r\nContent-Length: 10\r\n\r\n0123");
        assert!(h.out.is_empty());
        h.feed(b"456789GET /next HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/p", "/next"]);
        assert_eq!(h.out[0].body, b"0123456789");
        assert_eq!(h.out[0].version, 0);
    }

    #[test]
    fn chunked_body_is_decoded_and_trailers_are_appended() {
        let mut h = H::new(true);
        h.feed(
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        );
        assert_eq!(h.out.len(), 1);
        let r = &h.out[0];
        assert_eq!(r.body, b"hello world");
        assert!(r.chunked);
        assert_eq!(r.headers.last().unwrap().0, "X-Trailer");
    }

    #[test]
    fn chunk_terminator_split_across_segments_completes_the_request() {
        let stream: &[u8] =
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for cut in 1..stream.len() {
            let mut h = H::new(true);
            h.feed(&stream[..cut]).feed(&stream[cut..]);
            assert_eq!(h.out.len(), 1, "cut at {cut}");
            assert_eq!(h.out[0].body, b"abc");
        }
    }

    #[test]
    fn pipelined_requests_are_all_emitted() {
        let mut h = H::new(true);
        h.feed(b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET /3 HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/1", "/2", "/3"]);
    }

    #[test]
    fn gap_inside_a_head_drops_that_message_and_resyncs() {
        let mut h = H::new(true);
        h.feed(b"GET /lost HTTP/1.1\r\nHo");
        h.gap(10);
        h.feed(b"junk\r\n\r\nGET /ok HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/ok"]);
        assert_eq!(h.stats.drops(DropReason::MessageGap), 1);
    }

    #[test]
    fn gap_inside_a_content_length_body_skips_exactly_that_body() {
        let mut h = H::new(true);
        h.feed(b"POST /lost HTTP/1.1\r\nContent-Length: 20\r\n\r\n01234");
        h.gap(10);
        // The remaining 5 body bytes begin with something that looks like a request line
        // fragment; the parser knows where the body ends.
        h.feed(b"GET /GET /x HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/x"]);
        assert_eq!(h.stats.drops(DropReason::MessageGap), 1);
    }

    #[test]
    fn gap_between_messages_loses_nothing() {
        let mut h = H::new(true);
        h.feed(b"GET /1 HTTP/1.1\r\n\r\n");
        h.gap(30);
        h.feed(b"GET /3 HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/1", "/3"]);
        assert_eq!(h.stats.total_drops(), 0);
    }

    #[test]
    fn joining_mid_stream_syncs_on_the_next_request_line() {
        let mut h = H::new(false);
        h.feed(b"ody of an earlier request\r\nwith GET lines HTTP/1.1 inside\r\n");
        h.feed(b"PUT /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(h.targets(), ["/x"]);
        assert_eq!(h.out[0].body, b"ok");
    }

    #[test]
    fn request_line_split_while_syncing_is_found() {
        let mut h = H::new(false);
        h.feed(b"xx\r\nDEL")
            .feed(b"ETE /d HT")
            .feed(b"TP/1.1\r")
            .feed(b"\n\r\n");
        assert_eq!(h.targets(), ["/d"]);
    }

    #[test]
    fn after_lost_bytes_a_known_method_is_preferred_to_a_longer_token() {
        let mut h = H::new(false);
        h.feed(b"tail of a body\nAPUT /a HTTP/1.1\r\n\r\n");
        h.gap(5);
        h.feed(b"xyzAP").feed(b"UT /b HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/a", "/b"]);
        assert!(h.out.iter().all(|r| r.method == "PUT"));
    }

    #[test]
    fn method_complete_at_the_end_of_a_segment_is_kept_whole() {
        let mut h = H::new(false);
        h.feed(b"\x01\x02OPTIONS").feed(b" /o HTTP/1.1\r\n\r\n");
        assert_eq!(h.out[0].method, "OPTIONS");
    }

    #[test]
    fn lost_first_letters_of_a_method_never_yield_a_request() {
        for cut in 1..4 {
            let line = b"POST /p HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
            let mut h = H::new(true);
            h.gap(9);
            // The remainder arrives in pieces: "OS", "T /p ...", etc.
            h.feed(&line[cut..cut + 2]).feed(&line[cut + 2..]);
            assert!(h.out.is_empty(), "cut {cut}: {:?}", h.targets());
        }
    }

    #[test]
    fn failed_candidate_line_does_not_hide_a_request_line_after_it() {
        let mut h = H::new(false);
        h.feed(b"\x01GE")
            .feed(b"nerated data GET /real HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/real"]);
    }

    #[test]
    fn tls_client_hello_at_stream_start_makes_the_flow_opaque() {
        let mut h = H::new(true);
        h.feed(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
        h.feed(b"GET / HTTP/1.1\r\n\r\n");
        assert!(h.out.is_empty());
        assert_eq!(h.p.state(), State::Opaque);
        assert_eq!(h.stats.opaque_flows, 1);
    }

    #[test]
    fn http2_preface_makes_the_flow_opaque() {
        let mut h = H::new(true);
        h.feed(b"PRI * HTT").feed(b"P/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(h.p.state(), State::Opaque);
    }

    #[test]
    fn response_stream_is_not_parsed_as_requests() {
        let mut h = H::new(true);
        h.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert!(h.out.is_empty());
        assert_eq!(h.p.state(), State::Opaque);
    }

    #[test]
    fn upgrade_request_is_emitted_then_the_flow_is_ignored() {
        let mut h = H::new(true);
        h.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x85GET / HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/ws"]);
        assert_eq!(h.p.state(), State::Upgraded);
        let mut h = H::new(true);
        h.feed(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["example.com:443"]);
        assert_eq!(h.stats.upgraded_flows, 1);
    }

    #[test]
    fn expect_continue_body_arriving_later_is_attached() {
        let mut h = H::new(true);
        h.feed(b"PUT /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(h.out.is_empty());
        h.feed(b"abc");
        assert_eq!(h.out[0].body, b"abc");
    }

    #[test]
    fn expect_continue_head_without_body_is_emitted_at_a_clean_end() {
        let mut h = H::new(true);
        h.feed(b"PUT /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        h.end();
        assert_eq!(h.targets(), ["/e"]);
        assert!(h.out[0].body.is_empty());
    }

    #[test]
    fn expect_continue_chunked_head_without_body_is_emitted_at_a_clean_end() {
        let mut h = H::new(true);
        h.feed(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
        h.end();
        assert_eq!(h.targets(), ["/e"]);
        let mut h = H::new(true);
        h.feed(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab");
        h.end();
        assert!(h.out.is_empty());
        assert_eq!(h.stats.drops(DropReason::MessageIncomplete), 1);
    }

    #[test]
    fn message_cut_by_the_end_of_stream_is_dropped_and_counted() {
        let mut h = H::new(true);
        h.feed(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nab");
        h.end();
        assert!(h.out.is_empty());
        assert_eq!(h.stats.drops(DropReason::MessageIncomplete), 1);
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn proxy_v1_header_is_stripped_and_names_the_client() {
        let mut h = H::new(true);
        h.feed(b"PROXY TCP4 198.51.100.22 10.0.0.2 35646 80\r\nGET /a HTTP/1.1\r\n\r\n");
        h.feed(b"GET /b HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/a", "/b"]);
        for r in &h.out {
            assert_eq!(r.client, sa("198.51.100.22:35646"));
            assert_eq!(r.peer, sa("10.0.0.1:40000"));
        }
        assert_eq!(h.stats.proxy_headers, 1);
    }

    #[test]
    fn proxy_header_split_byte_by_byte_is_recognised() {
        let tlvs = [0x02, 0x00, 0x04, b'h', b'o', b's', b't'];
        let mut wire = proxy::encode_v2(sa("[2001:db8::7]:1111"), sa("[2001:db8::2]:80"), &tlvs);
        wire.extend_from_slice(b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
        let mut h = H::new(true);
        for b in &wire {
            h.feed(std::slice::from_ref(b));
        }
        assert_eq!(h.targets(), ["/p"]);
        assert_eq!(h.out[0].client, sa("[2001:db8::7]:1111"));
        assert_eq!(h.out[0].body, b"hi");
        assert_eq!(h.budget.used, 0);
    }

    #[test]
    fn proxy_v2_local_keeps_the_tcp_peer_as_client() {
        let mut h = H::new(true);
        let mut wire = proxy::encode_v2_local();
        wire.extend_from_slice(b"GET /hc HTTP/1.1\r\n\r\n");
        h.feed(&wire);
        assert_eq!(h.targets(), ["/hc"]);
        assert_eq!(h.out[0].client, h.out[0].peer);
        assert_eq!(h.stats.proxy_headers, 1);
    }

    #[test]
    fn methods_that_look_like_a_proxy_header_are_plain_requests() {
        let mut h = H::new(true);
        h.feed(b"PRO")
            .feed(b"PFIND /d HTTP/1.1\r\n\r\nPUT /e HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.targets(), ["/d", "/e"]);
        assert_eq!(h.stats.proxy_headers, 0);
        assert_eq!(h.stats.total_drops(), 0);
        let mut h = H::new(true);
        h.feed(b"\r\n")
            .feed(b"GET /after-empty-line HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/after-empty-line"]);
    }

    #[test]
    fn malformed_proxy_line_is_counted_and_plain_http_after_it_is_parsed() {
        let mut h = H::new(true);
        h.feed(b"PROXY TCP4 300.1.1.1 10.0.0.2 1 80\r\nGET /x HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/x"]);
        assert_eq!(h.out[0].client, h.out[0].peer);
        assert_eq!(h.stats.drops(DropReason::ProxyHeaderMalformed), 1);
        // After a malformed header, bytes that are not a request line make the flow opaque.
        let mut h = H::new(true);
        h.feed(b"PROXY TCP9 x\r\n\x16\x03\x01\x02\x00");
        assert_eq!(h.p.state(), State::Opaque);
        assert_eq!(h.stats.drops(DropReason::ProxyHeaderMalformed), 1);
    }

    #[test]
    fn unbounded_bad_proxy_header_only_yields_clear_request_lines() {
        let mut h = H::new(true);
        let mut wire = proxy::V2_SIGNATURE.to_vec();
        wire.extend_from_slice(&[0x31, 0x11, 0, 12]); // version 3
        wire.extend_from_slice(b"garbage GET /no HTTP/1.1 no\r\nGET /yes HTTP/1.1\r\n\r\n");
        h.feed(&wire);
        assert_eq!(h.targets(), ["/yes"]);
        assert_eq!(h.stats.drops(DropReason::ProxyHeaderMalformed), 1);
    }

    #[test]
    fn truncated_proxy_header_is_counted_at_a_gap_or_the_end() {
        let mut h = H::new(true);
        h.feed(b"PROXY TCP4 1.2.3.4").end();
        assert_eq!(h.stats.drops(DropReason::ProxyHeaderMalformed), 1);
        let mut h = H::new(true);
        h.feed(b"PROXY TCP4 1.2.3.4").gap(30);
        h.feed(b"x\r\nGET /later HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/later"]);
        assert_eq!(h.stats.drops(DropReason::ProxyHeaderMalformed), 1);
        assert_eq!(h.out[0].client, h.out[0].peer);
    }

    #[test]
    fn a_proxy_header_mid_stream_is_not_interpreted() {
        // Joined mid-way: the header was before the first byte seen.
        let mut h = H::new(false);
        h.feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET /m HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/m"]);
        assert_eq!(h.out[0].client, h.out[0].peer);
        assert_eq!(h.stats.proxy_headers, 0);
    }

    #[test]
    fn health_checks_are_dropped_and_counted_other_requests_kept() {
        let mut h = H::with(
            true,
            Limits {
                health_checks: HealthCheckRule::default(),
                ..LIMITS
            },
        );
        h.feed(b"GET /health HTTP/1.1\r\nUser-Agent: ELB-HealthChecker/2.0\r\n\r\n");
        h.feed(b"GET /page HTTP/1.1\r\nUser-Agent: Mozilla/5.0\r\n\r\n");
        h.feed(b"POST /health HTTP/1.1\r\nUser-Agent: ELB-HealthChecker/2.0\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(h.targets(), ["/page", "/health"]);
        assert_eq!(h.stats.drops(DropReason::HealthCheck), 1);
        assert_eq!(h.stats.requests, 2);
        assert_eq!(
            h.p.emitted(),
            3,
            "a health check still proves the direction carries requests"
        );
    }

    #[test]
    fn body_over_the_cap_is_cut_and_flagged() {
        let mut h = H::with(
            true,
            Limits {
                max_body_bytes: 4,
                ..LIMITS
            },
        );
        h.feed(
            b"POST /big HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789GET /n HTTP/1.1\r\n\r\n",
        );
        assert_eq!(h.targets(), ["/big", "/n"]);
        assert_eq!(h.out[0].body, b"0123");
        assert!(h.out[0].body_truncated);
        assert_eq!(h.stats.bodies_truncated, 1);
    }

    #[test]
    fn head_over_the_cap_is_dropped_and_counted() {
        let mut h = H::with(
            true,
            Limits {
                max_header_bytes: 64,
                ..LIMITS
            },
        );
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\nGET /ok HTTP/1.1\r\n\r\n",
            "a".repeat(100)
        );
        h.feed(big.as_bytes());
        assert_eq!(h.targets(), ["/ok"]);
        assert_eq!(h.stats.drops(DropReason::HeadTooLarge), 1);
    }

    #[test]
    fn too_many_headers_drop_the_message() {
        let mut h = H::with(
            true,
            Limits {
                max_headers: 2,
                ..LIMITS
            },
        );
        h.feed(b"GET /x HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\nGET /y HTTP/1.1\r\nA: 1\r\n\r\n");
        assert_eq!(h.targets(), ["/y"]);
        assert_eq!(h.stats.drops(DropReason::TooManyHeaders), 1);
    }

    #[test]
    fn conflicting_framing_is_a_bad_request() {
        let mut h = H::new(true);
        h.feed(b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
        h.feed(b"\r\nPOST /y HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert!(h.out.is_empty());
        assert_eq!(h.stats.drops(DropReason::BadRequest), 2);
    }

    #[test]
    fn leading_empty_lines_between_requests_are_skipped() {
        let mut h = H::new(true);
        h.feed(b"GET /1 HTTP/1.1\r\n\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
        assert_eq!(h.targets(), ["/1", "/2"]);
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let mut h = H::new(true);
        h.feed(b"GET /lf HTTP/1.1\nHost: x\n\n");
        assert_eq!(h.targets(), ["/lf"]);
    }

    #[test]
    fn request_line_check_accepts_only_request_lines() {
        assert_eq!(request_line(b"GET / HTTP/1.1\r\n", true), Line::Yes);
        assert_eq!(request_line(b"GET / HTTP/1.0\n", true), Line::Yes);
        assert_eq!(request_line(b"GET / HTTP/1.1", true), Line::More);
        assert_eq!(request_line(b"GE", true), Line::More);
        assert_eq!(request_line(b"get / HTTP/1.1\r\n", true), Line::No);
        assert_eq!(request_line(b"get / HTTP/1.1\r\n", false), Line::Yes);
        assert_eq!(request_line(b"HTTP/1.1 200 OK\r\n", false), Line::No);
        assert_eq!(request_line(b"GET / HTTP/2.0\r\n", true), Line::No);
        assert_eq!(request_line(b"GET  / HTTP/1.1\r\n", true), Line::No);
    }

    #[test]
    fn chunk_size_lines_are_parsed_strictly() {
        assert_eq!(parse_chunk_size(b"1a\r\n"), Some(26));
        assert_eq!(parse_chunk_size(b"1A;name=v\r\n"), Some(26));
        assert_eq!(parse_chunk_size(b"0\n"), Some(0));
        assert_eq!(parse_chunk_size(b"\r\n"), None);
        assert_eq!(parse_chunk_size(b"zz\r\n"), None);
        assert_eq!(parse_chunk_size(b"1 2\r\n"), None);
    }

    /// One request of a generated stream, with its wire form.
    #[derive(Debug, Clone)]
    pub(crate) struct GenRequest {
        pub method: &'static str,
        pub target: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        pub chunks: Option<Vec<usize>>,
    }

    impl GenRequest {
        pub(crate) fn wire(&self) -> Vec<u8> {
            let mut w = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
            for (n, v) in &self.headers {
                w.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            match &self.chunks {
                Some(sizes) => {
                    w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    let mut rest = &self.body[..];
                    for &s in sizes {
                        let s = s.min(rest.len());
                        if s == 0 {
                            continue;
                        }
                        w.extend_from_slice(format!("{s:x}\r\n").as_bytes());
                        w.extend_from_slice(&rest[..s]);
                        w.extend_from_slice(b"\r\n");
                        rest = &rest[s..];
                    }
                    if !rest.is_empty() {
                        w.extend_from_slice(format!("{:x}\r\n", rest.len()).as_bytes());
                        w.extend_from_slice(rest);
                        w.extend_from_slice(b"\r\n");
                    }
                    w.extend_from_slice(b"0\r\n\r\n");
                }
                None => {
                    if !self.body.is_empty() {
                        w.extend_from_slice(
                            format!("Content-Length: {}\r\n", self.body.len()).as_bytes(),
                        );
                    }
                    w.extend_from_slice(b"\r\n");
                    w.extend_from_slice(&self.body);
                }
            }
            w
        }

        pub(crate) fn matches(&self, r: &HttpRequest) -> bool {
            r.method == self.method
                && r.target == self.target
                && r.body == self.body
                && r.chunked == self.chunks.is_some()
                && r.headers.len() >= self.headers.len()
                && self
                    .headers
                    .iter()
                    .zip(&r.headers)
                    .all(|((n, v), (rn, rv))| n == rn && v.as_bytes() == rv.as_slice())
        }
    }

    pub(crate) fn gen_request() -> impl Strategy<Value = GenRequest> {
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
            "/[a-z0-9/]{0,20}(\\?[a-z]=[0-9]{1,3})?",
            proptest::collection::vec(("X-[A-Za-z]{1,8}", "[ -~]{0,30}"), 0..5),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::option::of(proptest::collection::vec(1usize..80, 1..5)),
        )
            .prop_map(|(method, target, headers, body, chunks)| GenRequest {
                method,
                target,
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n, v.trim().to_owned()))
                    .collect(),
                body,
                chunks,
            })
    }

    proptest! {
        /// The parser driven incrementally equals parsing in one piece, whatever the split points.
        #[test]
        fn any_split_points_parse_like_one_piece(
            reqs in proptest::collection::vec(gen_request(), 1..4),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let wire: Vec<u8> = reqs.iter().flat_map(|r| r.wire()).collect();
            let mut whole = H::new(true);
            whole.feed(&wire).end();
            prop_assert_eq!(whole.out.len(), reqs.len());
            for (g, r) in reqs.iter().zip(&whole.out) {
                prop_assert!(g.matches(r), "{:?} vs {:?}", g, r);
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len())).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let mut split = H::new(true);
            for w in points.windows(2) {
                split.feed(&wire[w[0]..w[1]]);
            }
            split.end();
            prop_assert_eq!(&split.out, &whole.out);
            prop_assert_eq!(split.stats, whole.stats);
        }

        /// Joined mid-stream at any point, every request that starts after the join point is
        /// found, and nothing else is emitted.
        #[test]
        fn joining_mid_stream_recovers_every_later_request(
            reqs in proptest::collection::vec(gen_request(), 2..5),
            join in any::<prop::sample::Index>(),
        ) {
            let wires: Vec<Vec<u8>> = reqs.iter().map(|r| r.wire()).collect();
            let wire: Vec<u8> = wires.concat();
            let at = join.index(wire.len());
            let mut starts = Vec::new();
            let mut pos = 0;
            for w in &wires {
                starts.push(pos);
                pos += w.len();
            }
            let mut h = H::new(false);
            h.feed(&wire[at..]).end();
            let expected: Vec<&GenRequest> = reqs
                .iter()
                .zip(&starts)
                .filter(|(_, s)| **s >= at)
                .map(|(r, _)| r)
                .collect();
            // A body may contain a request line; bodies here are random bytes, so a false
            // match is possible only in theory. Every expected request must be there, in order.
            let mut it = h.out.iter();
            for g in expected {
                prop_assert!(it.any(|r| g.matches(r)), "missing {:?} at {} in {:?}: {:?}", g, at, String::from_utf8_lossy(&wire), h.out);
            }
        }
    }
}
