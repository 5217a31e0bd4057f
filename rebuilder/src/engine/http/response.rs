//! HTTP/1.0 and HTTP/1.1 response extraction from one reassembled server→client stream.
//!
//! Driven like the request parser (bytes in order, gaps, end of stream), it tells the pairing
//! (an [`Answering`]) about every response: where a final response begins (the pairing answers
//! which request it is for, which decides its framing), when it is complete, when it lost
//! bytes, and when an unknown number of responses may have been lost.
//!
//! Policies:
//! - **Status line**: `HTTP/1.x`, one to 16 spaces, `3DIGIT` (then SP or HTAB and the
//!   reason, or the line end: curl reads a tab there); heads and trailers parsed with
//!   httparse's lenient response options (several spaces, obs-fold, spaces before the colon,
//!   invalid header lines skipped) — what clients accept from servers; an obs-fold is replaced
//!   by one space in the value (RFC 9112 §5.2, as the request side joins them).
//! - **Interim responses** (1xx other than 101: `100 Continue`, `103 Early Hints`) are skipped
//!   (`responses_interim`): they are not the answer.
//! - **Framing** (RFC 9112 §6.3): no body for a response to HEAD, for 1xx, 204 and 304, and
//!   for a 2xx to CONNECT; `Transfer-Encoding` ending in `chunked` → chunked (decoded, trailers
//!   appended to the headers); any other `Transfer-Encoding` → until the end of the stream;
//!   else `Content-Length` (all values equal, digits only, any leading zeros; otherwise the
//!   response is malformed, unless a `Transfer-Encoding` frames it); else until the end of
//!   the stream (close-delimited). Framing fields are read as curl reads them ([`framing`]):
//!   a name with a space before the colon is no framing field, a value counts to its first
//!   line end.
//! - **Switch**: `101 Switching Protocols`, or a 2xx to CONNECT, ends HTTP on the connection:
//!   the rest of the stream is ignored.
//! - **Gaps**: a gap inside a body whose end is known (Content-Length, inside chunk data, a
//!   close-delimited body) loses that response only and the parser stays framed; anywhere
//!   else (head, chunk-size line, trailers, between responses) the response in progress is lost
//!   and an unknown number of responses may be gone: the pairing is told to re-anchor, and the
//!   parser resynchronises on the next `HTTP/1.x NNN` it finds.
//! - **Caps**: a head over `max_header_bytes` (or with more than `max_headers` fields) is kept
//!   up to the cap, its complete lines only, and the rest of it is read without being held
//!   ([`HeadRest`]) for its framing fields (`Content-Length`, `Transfer-Encoding`, kept up to
//!   [`MAX_REST_FRAMING`] bytes): the response is framed as the whole head says, flagged
//!   `head_truncated` and counted (`response_heads_truncated`), and the responses after it keep
//!   their places (clients read such heads: curl up to 300 KiB, Go's client 10 MB). A status
//!   line longer than the cap, or a framing field past it that cannot be kept, is malformed. A
//!   trailer section over the caps is malformed; a chunk-size line over 1,024 bytes keeps its
//!   size and `;` and skips the rest of its extension (malformed without a `;`); bodies are
//!   kept up to `max_body_bytes` (cut and flagged beyond, counted in full in `body_len`); every
//!   byte held is charged to the budget (capacity, not length).

use std::borrow::Cow;
use std::mem::MaybeUninit;

use memchr::memmem;

use super::framing::{head_end, parse_chunk_size};
use crate::engine::reassembly::Budget;
use crate::engine::request::{Fields, HttpResponse};
use crate::engine::stats::{EngineStats, ResponseMissing};

/// Where a response begins: capture time, the server's sequence number of its first byte and
/// the acknowledgment number carried by that packet (the client bytes the server had then).
pub use crate::engine::reassembly::At;

/// What the request a response answers means for its framing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    /// The request was HEAD: no body.
    pub head: bool,
    /// The request was CONNECT: a 2xx opens a tunnel.
    pub connect: bool,
    /// The request is not known (the response is not attributed for sure): a body announced
    /// by Content-Length is taken as absent when the next bytes are a status line (the
    /// request may have been HEAD).
    pub guess: bool,
    /// The request was an HTTP/0.9 simple request (`GET /x` with no version): its answer is
    /// the raw content up to the close, with no status line, so a status line the server
    /// sends is content, never its response (the pairing attributes none to it).
    pub http09: bool,
}

/// The pairing side of the response parser.
pub trait Answering {
    /// A final response begins at `at`: the request it answers, if the pairing knows it for
    /// sure (`None`: it answers no request held; it is parsed and counted, never paired).
    fn head(&mut self, at: At) -> Option<Asked>;
    /// The response whose head was attributed is complete.
    fn complete(&mut self, response: Box<HttpResponse>);
    /// The response whose head was attributed will not be complete (lost bytes, cap, end).
    fn lost(&mut self, reason: ResponseMissing);
    /// An unknown number of responses may have been lost here.
    fn desync(&mut self, reason: ResponseMissing);
    /// The connection switched protocols: no more responses.
    fn switched(&mut self);
    /// The server's stream ended (`reason`: why the responses still awaited are missing).
    fn ended(&mut self, reason: ResponseMissing);
    /// The engine's memory budget.
    fn budget(&mut self) -> &mut Budget;
    /// The engine's counters.
    fn stats(&mut self) -> &mut EngineStats;
}

/// Caps of the response parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Largest response head.
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest body kept.
    pub max_body_bytes: usize,
    /// Whether body bytes are kept at all. When not, a body is framed and measured
    /// (`body_len`, and `body_truncated` exactly as if it had been kept: longer than
    /// `max_body_bytes`) but never copied nor charged: for outputs that do not read it.
    pub keep_bodies: bool,
    /// Whether the reason phrase and the header and trailer fields are kept (parsed and
    /// checked the same either way).
    pub keep_heads: bool,
}

/// Everything the response parser writes to.
pub struct RespCtx<'a> {
    /// Caps.
    pub limits: &'a ResponseLimits,
    /// The pairing (and the engine's budget and counters, through it).
    pub answering: &'a mut dyn Answering,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for a status line.
    Sync,
    /// At a message boundary (`buf` empty) or inside a head (`buf` holds it).
    Head,
    /// Inside a head past its cap: `buf` holds its first complete lines, `rest` reads on.
    HeadRest,
    /// Content-Length body.
    Body {
        remaining: u64,
    },
    /// A chunk-size line (`buf` holds its start); `skip_ext`: it is longer than
    /// [`MAX_CHUNK_LINE`], `buf` holds its size and `;`, the rest of its extension is skipped.
    ChunkSize {
        skip_ext: bool,
    },
    ChunkData {
        remaining: u64,
    },
    ChunkDataEnd {
        seen_cr: bool,
    },
    Trailers {
        line_start: usize,
    },
    /// Body until the end of the stream.
    Close,
    /// After a protocol switch, or a stream that is not HTTP: ignored.
    Tunnel,
    Ended,
}

/// The response in progress (after its head).
#[derive(Debug)]
struct Current {
    /// Boxed as it goes out: moved into its request as it is (no copy).
    resp: Box<HttpResponse>,
    /// The pairing attributed it to a request.
    attributed: bool,
    /// Bytes were lost: it is only framed to its end.
    discard: bool,
    /// It switches protocols once complete.
    switch: bool,
    /// Its request is not known: see [`Asked::guess`].
    guess: bool,
}

/// Response parser of one stream.
///
/// Invariants:
/// - `held` is the capacity of `buf` plus the memory of the response in progress, and is
///   charged to the engine's budget;
/// - the pairing is told `complete` or `lost` exactly once for each response it attributed.
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    buf: Vec<u8>,
    held: usize,
    /// Where the message in `buf` (or the next one) begins.
    msg: At,
    /// The head in `buf` was checked to start like a status line.
    verified: bool,
    /// The head being read is a resync candidate (not at a known message boundary).
    from_sync: bool,
    cur: Option<Current>,
    /// The head being read is past its cap ([`State::HeadRest`]).
    rest: Option<Box<HeadRest>>,
}

/// The part of a response head past its cap, read to the head's end without being held: only
/// the framing fields in it are kept, so that the response is framed as its whole head says.
#[derive(Debug)]
struct HeadRest {
    /// The first bytes of the line being read (at most [`MAX_REST_LINE`]).
    line: Vec<u8>,
    /// The line being read is longer than that.
    line_long: bool,
    /// The framing fields found (`Content-Length`, `Transfer-Encoding`), each line ending in
    /// CRLF; at most [`MAX_REST_FRAMING`] bytes.
    framing: Vec<u8>,
}

/// A line past a head's cap is looked at up to this many bytes: more than any framing field's
/// name and value need.
const MAX_REST_LINE: usize = 256;
/// Framing fields kept from past a head's cap, in bytes: more is malformed.
const MAX_REST_FRAMING: usize = 1024;
/// Field slots a cut head is parsed with beyond `max_headers`: room for every framing line
/// [`MAX_REST_FRAMING`] holds (each at least `Content-Length:` and CRLF, 17 bytes).
const MAX_REST_FIELDS: usize = MAX_REST_FRAMING / 16;

impl HeadRest {
    fn new() -> HeadRest {
        HeadRest {
            line: Vec::with_capacity(MAX_REST_LINE),
            line_long: false,
            framing: Vec::with_capacity(MAX_REST_FRAMING),
        }
    }

    /// Bytes a `HeadRest` holds, boxed (fixed: both buffers are allocated whole).
    const HELD: usize = std::mem::size_of::<HeadRest>() + MAX_REST_LINE + MAX_REST_FRAMING;

    /// Bytes held.
    fn held(&self) -> usize {
        std::mem::size_of::<HeadRest>() + self.line.capacity() + self.framing.capacity()
    }

    /// Reads `input`, the head's bytes in order: `Ok(Some(n))` the head ended after `n` bytes,
    /// `Ok(None)` all read and the head goes on, `Err(n)` a framing field that cannot be kept
    /// (longer than [`MAX_REST_LINE`], or past [`MAX_REST_FRAMING`]) ended after `n` bytes.
    fn scan(&mut self, input: &[u8]) -> Result<Option<usize>, usize> {
        let mut pos = 0;
        loop {
            let lf = memchr::memchr(b'\n', &input[pos..]).map(|i| pos + i);
            let piece = &input[pos..lf.unwrap_or(input.len())];
            let room = MAX_REST_LINE - self.line.len();
            self.line_long |= piece.len() > room;
            self.line.extend_from_slice(&piece[..piece.len().min(room)]);
            let Some(lf) = lf else {
                return Ok(None);
            };
            pos = lf + 1;
            let ended = self.end_line().map_err(|()| pos)?;
            self.line.clear();
            self.line_long = false;
            if ended {
                return Ok(Some(pos));
            }
        }
    }

    /// The line in `line` ended: `Ok(true)` it was the head's empty last line.
    fn end_line(&mut self) -> Result<bool, ()> {
        let line = &self.line[..];
        if !self.line_long && (line.is_empty() || line == b"\r") {
            return Ok(true);
        }
        // Framing is read as curl reads it (see [`framing`]): a name with a space before
        // the colon is not one, and an obs-fold continuation adds nothing to it.
        let name = line
            .iter()
            .position(|&b| b == b':')
            .map_or(&line[..0], |c| &line[..c]);
        let framing = name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding");
        if framing {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if self.line_long || self.framing.len() + line.len() + 2 > MAX_REST_FRAMING {
                return Err(());
            }
            self.framing.extend_from_slice(line);
            self.framing.extend_from_slice(b"\r\n");
        }
        Ok(false)
    }
}

/// Where the fields of `head` (its status line, then complete lines) stop fitting `max` fields:
/// the start of the line of field `max + 1`, or of the head's empty last line, or `head`'s
/// length. A line starting with a space or a tab continues its field (obs-fold); httparse
/// gives no field a slot that this counts none for (it skips invalid lines).
fn field_lines_end(head: &[u8], max: usize) -> usize {
    let mut fields = 0;
    let mut start = match memchr::memchr(b'\n', head) {
        Some(lf) => lf + 1,
        None => return head.len(),
    };
    let first = start;
    for lf in memchr::memchr_iter(b'\n', &head[first..]).map(|i| first + i) {
        let line = &head[start..lf];
        if line.is_empty() || line == b"\r" {
            return start;
        }
        if !matches!(line[0], b' ' | b'\t') {
            fields += 1;
            if fields > max {
                return start;
            }
        }
        start = lf + 1;
    }
    start
}

/// Spaces read between the version and the status code (httparse's lenient option reads any
/// number; a status line is recognised with up to this many).
const MAX_STATUS_SPACES: usize = 16;
/// Bytes that decide whether a status line starts: "HTTP/1.1", the spaces, "200", one more.
const STATUS_PREFIX: usize = 8 + MAX_STATUS_SPACES + 4;
const HTTP_MARK: &[u8] = b"HTTP/1.";
const STACK_HEADERS: usize = 128;
const MAX_CHUNK_LINE: usize = 1024;

/// Whether `b` starts like a status line (`HTTP/1.x`, one to [`MAX_STATUS_SPACES`] spaces,
/// three digits, then a space, a tab or the line's end): `Some(true)` yes, `Some(false)` no,
/// `None` too short to tell.
fn status_prefix(b: &[u8]) -> Option<bool> {
    for (i, &m) in HTTP_MARK.iter().enumerate() {
        match b.get(i) {
            Some(&c) if c == m => {}
            Some(_) => return Some(false),
            None => return None,
        }
    }
    let mut i = HTTP_MARK.len();
    match b.get(i) {
        Some(b'0' | b'1') => i += 1,
        Some(_) => return Some(false),
        None => return None,
    }
    let spaces = b[i..].iter().take_while(|&&c| c == b' ').count();
    if spaces > MAX_STATUS_SPACES {
        return Some(false);
    }
    if i + spaces == b.len() {
        return None;
    }
    if spaces == 0 {
        return Some(false);
    }
    i += spaces;
    for k in 0..4 {
        let ok = |c: u8| {
            if k < 3 {
                c.is_ascii_digit()
            } else {
                matches!(c, b' ' | b'\t' | b'\r' | b'\n')
            }
        };
        match b.get(i + k) {
            Some(&c) if ok(c) => {}
            Some(_) => return Some(false),
            None => return None,
        }
    }
    Some(true)
}

/// Whether `b` begins with a status line ([`status_prefix`]).
pub(crate) fn starts_with_status_line(b: &[u8]) -> bool {
    status_prefix(b) == Some(true)
}

/// Where the tab after the status code is in `head`, if one is there (`HTTP/1.1 200<TAB>OK`).
fn tab_after_code(head: &[u8]) -> Option<usize> {
    let spaces = head
        .get(HTTP_MARK.len() + 1..)?
        .iter()
        .take_while(|&&c| c == b' ')
        .count();
    let at = HTTP_MARK.len() + 1 + spaces + 3;
    (head.get(at) == Some(&b'\t')).then_some(at)
}

/// `head` as curl reads it where httparse does not (borrowed when nothing differs): a tab
/// after the status code is a space (`HTTP/1.1 200<TAB>OK`), and a CR not followed by LF is
/// dropped (`X-A: a<CR>b` reads as `ab`; a CR CR LF line end as CR LF). curl 7.88 read both
/// from a raw server on loopback; Node and Python's http.client refuse a bare CR.
fn as_curl_reads(head: &[u8]) -> Cow<'_, [u8]> {
    let tab = tab_after_code(head);
    let bare_cr = |i: usize| head[i] == b'\r' && head.get(i + 1) != Some(&b'\n');
    if tab.is_none() && !(0..head.len()).any(bare_cr) {
        return Cow::Borrowed(head);
    }
    let mut fixed: Vec<u8> = (0..head.len())
        .filter(|&i| !bare_cr(i))
        .map(|i| head[i])
        .collect();
    if let Some(t) = tab_after_code(&fixed) {
        fixed[t] = b' ';
    }
    Cow::Owned(fixed)
}

/// The reason phrase: httparse's, or, when it gives none for a phrase that is not UTF-8
/// (`HTTP/1.1 200 \xd6k`), the phrase's bytes read as Latin-1 (as curl shows them, and
/// Node's and Python's clients decode them: `Ök`).
fn reason(head: &[u8], parsed: Option<&str>) -> String {
    match parsed {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => {
            let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let spaces = line
                .get(HTTP_MARK.len() + 1..)
                .map_or(0, |r| r.iter().take_while(|&&c| c == b' ').count());
            let after_code = HTTP_MARK.len() + 1 + spaces + 4;
            line.get(after_code..)
                .unwrap_or_default()
                .iter()
                .map(|&b| char::from(b))
                .collect()
        }
    }
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new(false)
    }
}

impl ResponseParser {
    /// A parser at the start of the server's stream (its SYN was seen: the first bytes must be
    /// a response), or joined mid-way (it syncs on the first status line).
    pub fn new(at_stream_start: bool) -> ResponseParser {
        ResponseParser {
            state: if at_stream_start {
                State::Head
            } else {
                State::Sync
            },
            buf: Vec::new(),
            held: 0,
            msg: At {
                ts_us: 0,
                seq: 0,
                ack: None,
            },
            verified: false,
            from_sync: !at_stream_start,
            cur: None,
            rest: None,
        }
    }

    /// Bytes held (charged to the budget).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether the stream is no longer parsed (switched protocols, not HTTP, ended).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Tunnel | State::Ended)
    }

    /// Whether the parser is waiting for its first status line after joining mid-way or
    /// after lost bytes.
    pub fn is_syncing(&self) -> bool {
        self.state == State::Sync
    }

    /// When the first byte of a head still incomplete came (capture clock), while one is
    /// coming in.
    pub fn head_begun_us(&self) -> Option<u64> {
        let begun = match self.state {
            State::Head => !self.buf.is_empty(),
            State::HeadRest => true,
            _ => false,
        };
        begun.then_some(self.msg.ts_us)
    }

    fn account(&mut self, budget: &mut Budget) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            // No allocation kept between responses (what is held is what is charged).
            self.buf = Vec::new();
        }
        let now = self.buf.capacity()
            + self.cur.as_ref().map_or(0, |c| c.resp.held_bytes())
            + self.rest.as_ref().map_or(0, |r| r.held());
        if now > self.held {
            budget.used += now - self.held;
            debug_assert!(budget.used <= budget.limit, "charged past the budget");
        } else {
            budget.give(self.held - now);
        }
        self.held = now;
    }

    /// In-order bytes of the stream; `at` is where `input[0]` is.
    pub fn data(&mut self, at: At, mut input: &[u8], ctx: &mut RespCtx<'_>) {
        let end = at.advance(input.len());
        while !input.is_empty() {
            let here = At {
                seq: end.seq.wrapping_sub(input.len() as u32),
                ..at
            };
            input = match self.state {
                State::Sync => self.sync(here, input, ctx),
                State::Head => self.head(here, input, ctx),
                State::HeadRest => self.head_rest(input, ctx),
                State::Body { .. } if self.bodiless_guess(input) => {
                    if let Some(c) = self.cur.as_mut() {
                        c.resp.body = Vec::new();
                    }
                    self.finish(ctx);
                    input
                }
                State::Body { remaining } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    let remaining = remaining - n as u64;
                    self.append_body(&input[..n], remaining, ctx);
                    self.state = State::Body { remaining };
                    if remaining == 0 {
                        self.finish(ctx);
                    }
                    &input[n..]
                }
                State::ChunkSize { skip_ext } => self.chunk_size(skip_ext, input, ctx),
                State::ChunkData { remaining } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    self.append_body(&input[..n], u64::MAX, ctx);
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
                        self.state = State::ChunkSize { skip_ext: false };
                        &input[1..]
                    }
                    _ => {
                        self.broken(ResponseMissing::Malformed, ctx);
                        input
                    }
                },
                State::Trailers { line_start } => self.trailers(line_start, input, ctx),
                State::Close => {
                    self.append_body(input, u64::MAX, ctx);
                    &[]
                }
                State::Tunnel | State::Ended => &[],
            };
        }
        self.account(ctx.answering.budget());
    }

    /// `len` bytes of the stream were lost.
    pub fn gap(&mut self, len: u64, ctx: &mut RespCtx<'_>) {
        match self.state {
            State::Sync => {
                self.buf.clear();
            }
            State::Head if self.buf.is_empty() => {
                ctx.answering.desync(ResponseMissing::Gap);
                self.resync();
            }
            State::Head | State::HeadRest => {
                self.buf.clear();
                self.rest = None;
                ctx.answering.desync(ResponseMissing::Gap);
                self.resync();
            }
            State::Body { remaining } => {
                self.lose(ResponseMissing::Gap, ctx);
                if len < remaining {
                    self.state = State::Body {
                        remaining: remaining - len,
                    };
                } else if len == remaining {
                    self.finish(ctx);
                } else {
                    self.cur = None;
                    ctx.answering.desync(ResponseMissing::Gap);
                    self.resync();
                }
            }
            State::ChunkData { remaining } if len <= remaining => {
                self.lose(ResponseMissing::Gap, ctx);
                self.state = if len == remaining {
                    State::ChunkDataEnd { seen_cr: false }
                } else {
                    State::ChunkData {
                        remaining: remaining - len,
                    }
                };
            }
            State::ChunkData { .. }
            | State::ChunkSize { .. }
            | State::ChunkDataEnd { .. }
            | State::Trailers { .. } => self.broken(ResponseMissing::Gap, ctx),
            State::Close => self.lose(ResponseMissing::Gap, ctx),
            State::Tunnel | State::Ended => {}
        }
        self.account(ctx.answering.budget());
    }

    /// The stream ended: a close-delimited body is complete when `clean` (FIN seen; not at a
    /// RST, which aborts it); any other response in progress is lost (`reason`); the pairing
    /// is told.
    pub fn end(&mut self, clean: bool, reason: ResponseMissing, ctx: &mut RespCtx<'_>) {
        match self.state {
            State::Close if clean => self.finish(ctx),
            State::Head if self.buf.is_empty() => {}
            State::Sync | State::Tunnel | State::Ended | State::Head | State::HeadRest => {}
            _ => self.lose(reason, ctx),
        }
        self.cur = None;
        self.rest = None;
        self.buf = Vec::new();
        if self.state != State::Tunnel {
            ctx.answering.ended(reason);
        }
        self.state = State::Ended;
        self.account(ctx.answering.budget());
    }

    /// Whether the body of a response whose request is not known is really absent: none of
    /// it read yet, and the bytes that follow the head are a status line.
    fn bodiless_guess(&self, input: &[u8]) -> bool {
        self.cur
            .as_ref()
            .is_some_and(|c| c.guess && c.resp.body_len == 0)
            && status_prefix(input) == Some(true)
    }

    /// Looks for the next status line (not at a known message boundary any more).
    fn resync(&mut self) {
        self.state = State::Sync;
        self.from_sync = true;
    }

    /// The response in progress is lost (the pairing is told once); it is still framed.
    fn lose(&mut self, reason: ResponseMissing, ctx: &mut RespCtx<'_>) {
        if let Some(c) = self.cur.as_mut()
            && !c.discard
        {
            c.discard = true;
            c.resp.body = Vec::new();
            if c.attributed {
                ctx.answering.lost(reason);
            }
        }
    }

    /// Framing is lost: the response in progress is lost, responses may be gone, resync.
    fn broken(&mut self, reason: ResponseMissing, ctx: &mut RespCtx<'_>) {
        self.lose(reason, ctx);
        self.cur = None;
        self.rest = None;
        self.buf.clear();
        ctx.answering.desync(reason);
        self.resync();
    }

    fn sync<'i>(&mut self, at: At, input: &'i [u8], ctx: &mut RespCtx<'_>) -> &'i [u8] {
        if let Some(i) = memmem::find(input, HTTP_MARK) {
            self.state = State::Head;
            self.from_sync = true;
            self.buf.clear();
            return &input[i..];
        }
        // A status line may begin in the last bytes: keep them as a head candidate.
        let keep = (1..HTTP_MARK.len())
            .rev()
            .find(|&k| input.len() >= k && input[input.len() - k..] == HTTP_MARK[..k])
            .unwrap_or(0);
        let budget = ctx.answering.budget();
        if keep > 0 && budget.used + keep <= budget.limit {
            self.state = State::Head;
            self.from_sync = true;
            self.buf = Vec::with_capacity(keep);
            self.buf.extend_from_slice(&input[input.len() - keep..]);
            self.msg = at.advance(input.len() - keep);
            self.verified = false;
        }
        &[]
    }

    /// The bytes at a boundary (or a candidate) are not a response: tell the pairing (when
    /// the stream was in step) and resync one byte further.
    fn not_a_response(&mut self, ctx: &mut RespCtx<'_>) {
        if !self.from_sync {
            ctx.answering.desync(ResponseMissing::Malformed);
        }
        self.from_sync = true;
        self.resync();
    }

    fn head<'i>(&mut self, at: At, mut input: &'i [u8], ctx: &mut RespCtx<'_>) -> &'i [u8] {
        let max = ctx.limits.max_header_bytes;
        if self.buf.is_empty() {
            let skip = input
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            input = &input[skip..];
            if input.is_empty() {
                return input;
            }
            self.msg = at.advance(skip);
            match status_prefix(input) {
                Some(false) => {
                    self.not_a_response(ctx);
                    return &input[1..];
                }
                Some(true) => self.verified = true,
                None => self.verified = false,
            }
            if self.verified
                && let Some(end) = head_end(&[], input)
            {
                if end > max {
                    return self.past_cap(input, ctx);
                }
                self.complete_head(&input[..end], ctx);
                return &input[end..];
            }
            if self.verified && input.len() > max {
                return self.past_cap(input, ctx);
            }
            if !self.may_buffer(input.len(), ctx) {
                return &[];
            }
            self.buf.extend_from_slice(input);
            return &[];
        }
        let n = self.buf.len();
        if !self.verified {
            let mut probe = [0u8; STATUS_PREFIX];
            let have = n.min(STATUS_PREFIX);
            probe[..have].copy_from_slice(&self.buf[..have]);
            let more = (STATUS_PREFIX - have).min(input.len());
            probe[have..have + more].copy_from_slice(&input[..more]);
            match status_prefix(&probe[..have + more]) {
                Some(false) => {
                    // Not a status line: scan the held bytes again, one byte further.
                    let held = std::mem::take(&mut self.buf);
                    let msg = self.msg;
                    self.not_a_response(ctx);
                    self.data(msg.advance(1), &held[1..], ctx);
                    return input;
                }
                Some(true) => self.verified = true,
                None => {
                    if self.may_buffer(input.len(), ctx) {
                        self.buf.extend_from_slice(input);
                    }
                    return &[];
                }
            }
        }
        let prev_start = n.saturating_sub(2);
        let mut prev = [0u8; 2];
        prev[..n - prev_start].copy_from_slice(&self.buf[prev_start..]);
        let end = head_end(&prev[..n - prev_start], input);
        let take = end.unwrap_or(input.len());
        if n + take > max {
            return self.past_cap(input, ctx);
        }
        if !self.may_buffer(take, ctx) {
            return &input[take..];
        }
        self.buf.extend_from_slice(&input[..take]);
        if end.is_some() {
            let head = std::mem::take(&mut self.buf);
            self.complete_head(&head, ctx);
            self.buf = head;
            self.buf.clear();
        }
        &input[take..]
    }

    /// Whether `take` more head bytes may be held (within the budget); if not, the response
    /// is lost (`over_budget`) and the parser resyncs.
    fn may_buffer(&mut self, take: usize, ctx: &mut RespCtx<'_>) -> bool {
        let grow = (self.buf.len() + take).saturating_sub(self.buf.capacity());
        if self.buf.len() + take > ctx.limits.max_header_bytes {
            self.broken(ResponseMissing::Malformed, ctx);
            return false;
        }
        if ctx.answering.budget().used + grow > ctx.answering.budget().limit {
            self.broken(ResponseMissing::OverBudget, ctx);
            return false;
        }
        // Exact growth: what is charged is the capacity.
        self.buf.reserve_exact(take);
        true
    }

    /// The head in `buf`, then `input`, is longer than `max_header_bytes` (its status line
    /// checked): `buf` is filled to the cap and keeps its complete lines up to `max_headers`
    /// fields; the rest of the head is read by a [`HeadRest`].
    fn past_cap<'i>(&mut self, input: &'i [u8], ctx: &mut RespCtx<'_>) -> &'i [u8] {
        let fill = ctx
            .limits
            .max_header_bytes
            .saturating_sub(self.buf.len())
            .min(input.len());
        if !self.may_buffer(fill, ctx) {
            return &input[fill..];
        }
        self.buf.extend_from_slice(&input[..fill]);
        self.account(ctx.answering.budget());
        let Some(lf) = memchr::memrchr(b'\n', &self.buf) else {
            // The status line alone is longer than the cap.
            self.broken(ResponseMissing::Malformed, ctx);
            return &input[fill..];
        };
        let budget = ctx.answering.budget();
        if budget.used + HeadRest::HELD > budget.limit {
            self.broken(ResponseMissing::OverBudget, ctx);
            return &input[fill..];
        }
        let cut = field_lines_end(&self.buf[..=lf], ctx.limits.max_headers);
        let mut rest = Box::new(HeadRest::new());
        // Complete lines past the fields kept, then the line the cap cut: no head end there.
        if let Err(n) | Ok(Some(n)) = rest.scan(&self.buf[cut..]) {
            debug_assert!(n <= self.buf.len() - cut);
            self.broken(ResponseMissing::Malformed, ctx);
            return &input[fill..];
        }
        self.buf.truncate(cut);
        self.rest = Some(rest);
        self.state = State::HeadRest;
        self.account(ctx.answering.budget());
        self.head_rest(&input[fill..], ctx)
    }

    /// Bytes of a head past its cap.
    fn head_rest<'i>(&mut self, input: &'i [u8], ctx: &mut RespCtx<'_>) -> &'i [u8] {
        let Some(rest) = self.rest.as_mut() else {
            self.state = State::Head;
            return input;
        };
        match rest.scan(input) {
            Ok(None) => &[],
            Err(n) => {
                self.broken(ResponseMissing::Malformed, ctx);
                &input[n..]
            }
            Ok(Some(n)) => {
                let rest = self.rest.take().map(|r| r.framing).unwrap_or_default();
                let mut head = std::mem::take(&mut self.buf);
                head.extend_from_slice(&rest);
                head.extend_from_slice(b"\r\n");
                self.state = State::Head;
                self.complete_cut_head(&head, ctx);
                &input[n..]
            }
        }
    }

    /// A complete head within the caps (the usual case: one parse).
    fn complete_head(&mut self, head: &[u8], ctx: &mut RespCtx<'_>) {
        let again = parse_lenient(head, ctx.limits.max_headers, |parsed, resp| {
            if parsed.is_err() {
                return true;
            }
            self.head_parsed(head, parsed, resp, false, ctx);
            false
        });
        if again {
            self.complete_head_again(head, ctx);
        }
    }

    /// A head httparse did not read as it came: read again as curl reads it ([`as_curl_reads`]:
    /// a tab after the status code, a bare CR), and with more fields than `max_headers` the
    /// first ones kept, then its framing fields; malformed if it still does not parse.
    #[cold]
    #[inline(never)]
    fn complete_head_again(&mut self, head: &[u8], ctx: &mut RespCtx<'_>) {
        let head = as_curl_reads(head);
        let max = ctx.limits.max_headers;
        let too_many = parse_lenient(&head, max, |parsed, resp| {
            if matches!(parsed, Err(httparse::Error::TooManyHeaders)) {
                return true;
            }
            self.head_parsed(&head, parsed, resp, false, ctx);
            false
        });
        if !too_many {
            return;
        }
        let at = field_lines_end(&head, max);
        let mut rest = HeadRest::new();
        let Ok(Some(_)) = rest.scan(&head[at..]) else {
            return self.broken(ResponseMissing::Malformed, ctx);
        };
        let mut kept = Vec::with_capacity(at + rest.framing.len() + 2);
        kept.extend_from_slice(&head[..at]);
        kept.extend_from_slice(&rest.framing);
        kept.extend_from_slice(b"\r\n");
        self.complete_cut_head(&kept, ctx);
    }

    /// A head cut at a cap (its fields within the cap, then the framing fields past it):
    /// parsed with room for those beyond `max_headers`.
    #[cold]
    #[inline(never)]
    fn complete_cut_head(&mut self, head: &[u8], ctx: &mut RespCtx<'_>) {
        let head = as_curl_reads(head);
        let slots = ctx.limits.max_headers + MAX_REST_FIELDS;
        parse_lenient(&head, slots, |parsed, resp| {
            self.head_parsed(&head, parsed, resp, true, ctx)
        });
    }

    /// `head`: the bytes httparse read (`parsed`, `resp`).
    fn head_parsed(
        &mut self,
        head: &[u8],
        parsed: httparse::Result<usize>,
        resp: &httparse::Response<'_, '_>,
        cut: bool,
        ctx: &mut RespCtx<'_>,
    ) {
        let (Ok(httparse::Status::Complete(_)), Some(version), Some(status)) =
            (parsed, resp.version, resp.code)
        else {
            return self.broken(ResponseMissing::Malformed, ctx);
        };
        self.from_sync = false;
        if (100..200).contains(&status) && status != 101 {
            ctx.answering.stats().responses_interim += 1;
            self.state = State::Head;
            return;
        }
        ctx.answering.stats().count_response();
        if cut {
            ctx.answering.stats().response_heads_truncated += 1;
        }
        let asked = ctx.answering.head(self.msg);
        if asked.is_none() {
            ctx.answering.stats().responses_unmatched += 1;
        }
        let attributed = asked.is_some();
        let asked = asked.unwrap_or(Asked {
            guess: true,
            ..Asked::default()
        });
        let switch = status == 101 || (asked.connect && (200..300).contains(&status));
        let framing = if asked.head || status == 204 || status == 304 || switch {
            Ok(Framing::Length(0))
        } else {
            framing(head, resp.headers)
        };
        let Ok(framing) = framing else {
            // The response is there but its length cannot be known: it is lost, and so is
            // the position of the next ones.
            if attributed {
                ctx.answering.lost(ResponseMissing::Malformed);
            }
            self.cur = None;
            ctx.answering.desync(ResponseMissing::Malformed);
            self.resync();
            return;
        };
        // A response no request asked for never goes out: framed, nothing of it kept.
        let (headers, reason) = if ctx.limits.keep_heads && attributed {
            // A value that spans lines holds an obs-fold (httparse keeps it as it came).
            let folded = resp.headers.iter().any(|h| h.value.contains(&b'\n'));
            let fields = if folded {
                let joined = unfolded(resp.headers);
                Fields::collect_sized(joined.iter().map(|(n, v)| (*n, v.as_ref())))
            } else {
                Fields::collect_sized(resp.headers.iter().map(|h| (h.name, h.value)))
            };
            (fields, reason(head, resp.reason))
        } else {
            (Fields::new(), String::new())
        };
        self.from_sync = false;
        self.cur = Some(Current {
            resp: Box::new(HttpResponse {
                ts_us: self.msg.ts_us,
                version,
                status,
                reason,
                headers,
                // Allocated as its bytes come (`append_body`), not at the head for the length
                // it announces.
                body: Vec::new(),
                body_len: 0,
                chunked: matches!(framing, Framing::Chunked),
                body_truncated: false,
                head_truncated: cut,
            }),
            attributed,
            discard: false,
            switch,
            guess: asked.guess,
        });
        // The response's memory must fit the budget; if not it is only framed (lost).
        let cost = self.cur.as_ref().map_or(0, |c| c.resp.held_bytes());
        let budget = ctx.answering.budget();
        if budget.used + cost > budget.limit
            && let Some(c) = self.cur.as_mut()
        {
            c.resp.headers = Fields::new();
            c.resp.reason = String::new();
            c.resp.body = Vec::new();
            let small = c.resp.held_bytes();
            if budget.used + small > budget.limit {
                self.cur = None;
                if attributed {
                    ctx.answering.lost(ResponseMissing::OverBudget);
                }
                ctx.answering.desync(ResponseMissing::OverBudget);
                self.resync();
                return;
            }
            self.lose(ResponseMissing::OverBudget, ctx);
        }
        match framing {
            Framing::Length(0) => self.finish(ctx),
            Framing::Length(n) => self.state = State::Body { remaining: n },
            Framing::Chunked => self.state = State::ChunkSize { skip_ext: false },
            Framing::Close => self.state = State::Close,
        }
        self.account(ctx.answering.budget());
    }

    /// `rest`: the body bytes still announced after these (`u64::MAX` when not known:
    /// chunked, or delimited by the close).
    fn append_body(&mut self, bytes: &[u8], rest: u64, ctx: &mut RespCtx<'_>) {
        let Some(c) = self.cur.as_mut() else {
            return;
        };
        c.resp.body_len += bytes.len() as u64;
        if c.discard || c.resp.body_truncated {
            return;
        }
        let max = ctx.limits.max_body_bytes;
        if !ctx.limits.keep_bodies || !c.attributed {
            // Measured, not kept (no output reads it, or no request asked for it: such a
            // response never goes out): cut where a kept body would be.
            c.resp.body_truncated = c.resp.body_len > max as u64;
            return;
        }
        // The capacity is what is charged (as it is: `HttpResponse::held_bytes`).
        let budget = ctx.answering.budget();
        let room = budget.limit.saturating_sub(budget.used);
        let body = &mut c.resp.body;
        let take = super::state::body_room(body, bytes.len(), rest, max, room, |n| n);
        if take < bytes.len() {
            c.resp.body_truncated = true;
        }
        body.extend_from_slice(&bytes[..take]);
        self.account(ctx.answering.budget());
    }

    /// The response in progress is complete.
    fn finish(&mut self, ctx: &mut RespCtx<'_>) {
        self.state = State::Head;
        let Some(c) = self.cur.take() else {
            return;
        };
        let Current {
            resp,
            attributed,
            discard,
            switch,
            ..
        } = c;
        if resp.body_truncated && !discard {
            ctx.answering.stats().response_bodies_truncated += 1;
        }
        if attributed && !discard {
            ctx.answering.complete(resp);
        }
        if switch {
            ctx.answering.switched();
            self.buf = Vec::new();
            self.state = State::Tunnel;
        }
        self.account(ctx.answering.budget());
    }

    fn chunk_size<'i>(
        &mut self,
        skip_ext: bool,
        input: &'i [u8],
        ctx: &mut RespCtx<'_>,
    ) -> &'i [u8] {
        let (take, complete) = match memchr::memchr(b'\n', input) {
            Some(j) => (j + 1, true),
            None => (input.len(), false),
        };
        let mut skip_ext = skip_ext;
        if !skip_ext && self.buf.len() + take > MAX_CHUNK_LINE {
            // Longer than any size needs: only a chunk extension makes a line this long
            // (nobody reads one, and clients — curl, Node — read past any length of it), so
            // its size and `;` are kept and the rest is skipped without being held; a line
            // with no `;` in its first MAX_CHUNK_LINE bytes is malformed.
            let semi = self
                .buf
                .iter()
                .chain(&input[..take])
                .take(MAX_CHUNK_LINE)
                .position(|&b| b == b';');
            let Some(semi) = semi else {
                self.broken(ResponseMissing::Malformed, ctx);
                return &input[take..];
            };
            if semi < self.buf.len() {
                self.buf.truncate(semi + 1);
            } else {
                let from_input = semi + 1 - self.buf.len();
                if !self.may_buffer(from_input, ctx) {
                    return &input[take..];
                }
                self.buf.extend_from_slice(&input[..from_input]);
            }
            skip_ext = true;
        }
        if skip_ext {
            // The rest of an over-long chunk extension: skipped to the line's end.
            if !complete {
                self.state = State::ChunkSize { skip_ext: true };
                return &[];
            }
            self.buf.push(b'\n');
            let size = parse_chunk_size(&self.buf);
            self.buf.clear();
            self.after_chunk_size(size, ctx);
            return &input[take..];
        }
        if !complete {
            if self.may_buffer(take, ctx) {
                self.buf.extend_from_slice(input);
            }
            return &[];
        }
        let size = if self.buf.is_empty() {
            parse_chunk_size(&input[..take])
        } else {
            self.buf.extend_from_slice(&input[..take]);
            parse_chunk_size(&self.buf)
        };
        self.buf.clear();
        self.after_chunk_size(size, ctx);
        &input[take..]
    }

    /// The chunk-size line read: its size, or `None` (malformed).
    fn after_chunk_size(&mut self, size: Option<u64>, ctx: &mut RespCtx<'_>) {
        match size {
            None => self.broken(ResponseMissing::Malformed, ctx),
            Some(0) => self.state = State::Trailers { line_start: 0 },
            Some(n) => self.state = State::ChunkData { remaining: n },
        }
    }

    fn trailers<'i>(
        &mut self,
        line_start: usize,
        input: &'i [u8],
        ctx: &mut RespCtx<'_>,
    ) -> &'i [u8] {
        let (take, complete) = match memchr::memchr(b'\n', input) {
            Some(j) => (j + 1, true),
            None => (input.len(), false),
        };
        if !self.may_buffer(take, ctx) {
            return &input[take..];
        }
        self.buf.extend_from_slice(&input[..take]);
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
            // Read as the head is (the lenient options, `max_headers` fields): behind a
            // status line of its own, as httparse reads fields leniently only in a head.
            let mut section = Vec::with_capacity(TRAILER_STATUS.len() + self.buf.len());
            section.extend_from_slice(TRAILER_STATUS);
            section.extend_from_slice(&self.buf);
            let max = ctx.limits.max_headers;
            let keep = ctx.limits.keep_heads;
            let cur = self
                .cur
                .as_mut()
                .filter(|c| keep && c.attributed && !c.discard);
            // `None`: malformed; `Some(false)`: the budget cannot hold them.
            let fits = parse_lenient(&section, max, |parsed, resp| {
                if !matches!(parsed, Ok(httparse::Status::Complete(_))) {
                    return None;
                }
                let Some(c) = cur else {
                    return Some(true);
                };
                // Kept only when the budget holds them (computed before anything is
                // allocated), as the head: otherwise the response is lost, framed.
                let joined = unfolded(resp.headers);
                let pairs = joined.iter().map(|(n, v)| (*n, v.as_ref()));
                let fields = &mut c.resp.headers;
                let grows = fields.held_bytes_with(pairs.clone()) - fields.held_bytes();
                let budget = ctx.answering.budget();
                let fits = budget.used + grows <= budget.limit;
                if fits {
                    fields.extend_sized(pairs);
                }
                Some(fits)
            });
            match fits {
                Some(true) => {}
                Some(false) => self.lose(ResponseMissing::OverBudget, ctx),
                None => {
                    self.broken(ResponseMissing::Malformed, ctx);
                    return &input[take..];
                }
            }
        }
        self.buf.clear();
        self.finish(ctx);
        &input[take..]
    }
}

/// The fields of a parsed head or trailer section, obs-folds joined ([`unfold`]).
fn unfolded<'h>(headers: &[httparse::Header<'h>]) -> Vec<(&'h str, Cow<'h, [u8]>)> {
    headers.iter().map(|h| (h.name, unfold(h.value))).collect()
}

/// A field value with its obs-folds (a line end and the whitespace around it) replaced by
/// one space, as a client must before it reads the value (RFC 9112 §5.2) and as the request
/// side joins them; borrowed when it has none.
fn unfold(v: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b'\n', v).is_none() {
        return Cow::Borrowed(v);
    }
    let mut out = Vec::with_capacity(v.len());
    for part in v.split(|&b| b == b'\n').map(<[u8]>::trim_ascii) {
        if part.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(part);
    }
    Cow::Owned(out)
}

/// What trailer fields are read behind (see [`ResponseParser::trailers`]).
const TRAILER_STATUS: &[u8] = b"HTTP/1.1 200 \r\n";

/// Parses `head` (a status line and its fields, the empty line included) with the lenient
/// response options — several spaces, obs-fold, spaces before the colon, invalid field lines
/// skipped: what clients accept from servers — reading at most `max` fields, and hands the
/// result to `f`.
fn parse_lenient<R>(
    head: &[u8],
    max: usize,
    f: impl FnOnce(httparse::Result<usize>, &httparse::Response<'_, '_>) -> R,
) -> R {
    // A field takes a line: no more slots than line ends (a head within the caps fits on the
    // stack instead of a heap array of `max` slots, 32 KiB at the default 1,000).
    let max = max.min(memchr::memchr_iter(b'\n', head).count());
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max <= STACK_HEADERS {
        &mut stack[..max]
    } else {
        heap = Vec::with_capacity(max);
        heap.resize_with(max, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut config = httparse::ParserConfig::default();
    config
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true)
        .ignore_invalid_headers_in_responses(true);
    let mut resp = httparse::Response::new(&mut []);
    let parsed = config.parse_response_with_uninit_headers(&mut resp, head, slots);
    f(parsed, &resp)
}

/// Body framing of a response (after the no-body cases).
enum Framing {
    Length(u64),
    Chunked,
    Close,
}

/// The framing of a response's fields, read as curl reads it (RFC 9112 §6.3 where clients
/// agree): `head` is the buffer httparse read them from.
/// - A field whose name had a space before the colon is not a framing field (httparse's
///   lenient option trims it; curl ignores such a field, Node refuses the response).
/// - Only a value's first line counts (curl does not join an obs-fold into framing fields).
/// - `Transfer-Encoding` overrides `Content-Length`, also a malformed one (curl and Python
///   read a chunked body next to `Content-Length: 99999999999999999999`).
/// - A length may have any number of leading zeros.
fn framing<'h>(head: &[u8], headers: &[httparse::Header<'h>]) -> Result<Framing, ()> {
    let mut te_last: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    let mut bad_length = false;
    let base = head.as_ptr() as usize;
    // Where the field's name ends in `head`: a framing field only if the colon is there.
    let colon_after = |h: &httparse::Header<'_>| {
        let name_end = (h.name.as_ptr() as usize).wrapping_sub(base) + h.name.len();
        head.get(name_end) == Some(&b':')
    };
    let first_line = |v: &'h [u8]| v.split(|&b| b == b'\n').next().unwrap_or_default();
    for h in headers {
        let te = h.name.eq_ignore_ascii_case("transfer-encoding");
        if !(te || h.name.eq_ignore_ascii_case("content-length")) || !colon_after(h) {
            continue;
        }
        let value = first_line(h.value);
        if te {
            if let Some(last) = value
                .split(|&b| b == b',')
                .map(|c| c.trim_ascii())
                .rfind(|c| !c.is_empty())
            {
                te_last = Some(last);
            }
        } else {
            for v in value.split(|&b| b == b',') {
                let v = v.trim_ascii();
                let zeros = v.iter().take_while(|&&b| b == b'0').count();
                let digits = &v[zeros.min(v.len().saturating_sub(1))..];
                let n = (!digits.is_empty()
                    && digits.len() <= 19
                    && digits.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                .flatten();
                match n {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => bad_length = true,
                }
            }
        }
    }
    Ok(match te_last {
        Some(c) if c.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
        Some(_) => Framing::Close,
        None if bad_length => return Err(()),
        None => length.map_or(Framing::Close, Framing::Length),
    })
}

#[cfg(test)]
mod tests;
