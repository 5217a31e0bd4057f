//! HTTP/1.0 and HTTP/1.1 request extraction from one reassembled client→server stream.
//!
//! The parser is driven by the reassembly ([`crate::engine::reassembly::Sink`]): bytes in order,
//! gaps, end of stream. Heads are parsed with `httparse` once their terminating empty line
//! is present (never re-parsed per segment), straight from the segment when the head fits in
//! it (no copy), otherwise from a per-direction buffer.
//!
//! The principle: read as leniently as the common origins (nginx, Apache httpd, Node's
//! llhttp, Go net/http) do, so that a request some origin serves is never hidden from the
//! analyzer; tag each request with the leniencies it needed ([`Anomaly`]); stop only on
//! positive evidence that the stream is not HTTP/1.
//!
//! Policies:
//! - **Heads** ([`head`], [`grammar`]): the request-line grammar every origin's union accepts
//!   (several spaces, versions 1.2–9.9 and 0.9, HTTP/0.9 simple requests, raw bytes in the
//!   target), obs-fold, odd header names, control bytes in values; more than `max_headers`
//!   fields keeps the request with the first ones (flagged). A first line no origin reads as
//!   a request line is a `bad_request` and the parser resyncs on the next line.
//! - **Framing** ([`framing`]): `Transfer-Encoding` ending in `chunked` (also with
//!   Content-Length, several codings, on HTTP/1.0: each flagged); another `Transfer-Encoding`
//!   → the head alone (flagged); `Content-Length` (equal values, leading zeros) → that many
//!   bytes; conflicting or invalid lengths → `bad_request`. A chunked body that breaks emits
//!   the head with the body read so far (flagged) and the bad line is parsed as a request.
//! - **Trailers** of a chunked body are kept apart, in `trailers`.
//! - **After close**: requests after one that closed the connection are still emitted,
//!   flagged `after_close`.
//! - **Pipelining**: every complete request in the stream is emitted, in order.
//! - **Expect: 100-continue**: the body is awaited like any other; if the stream ends cleanly
//!   right after such a head with no body byte sent (the server refused, the client gave up),
//!   the request is emitted with an empty body.
//! - **Upgrade / CONNECT**: the request is emitted, then the client's bytes are held (up to
//!   `max_header_bytes`, charged) until the server's answer decides, as at the origin: a 101
//!   (Upgrade) or 2xx (CONNECT) switches the stream out of HTTP ([`Parser::switched`]: the rest
//!   is ignored, counted `upgraded_flow`); any other answer leaves it HTTP and the held bytes
//!   are parsed ([`Parser::resume`]). With no answer to wait for (the server's direction not
//!   seen, the answer lost or given up, the hold cap reached, the stream's end or a gap) the
//!   bytes are parsed as HTTP and the requests flagged `upgrade_unanswered`: the analyzer is
//!   never blinded by a request alone.
//! - **Opaque**: a stream whose start was seen (SYN) and that begins with a TLS record, the
//!   HTTP/2 preface, a status line (a response stream) or binary bytes (control bytes in its
//!   first bytes) is ignored. Nothing else makes a stream opaque: text that is not a request
//!   line is counted (`bad_request`) and the parser looks for the next request line.
//! - **Gaps**: a gap inside a message drops that message (never emitted with missing bytes);
//!   a gap inside a Content-Length body skips to the known end of that body; otherwise the
//!   parser resynchronises on the next request line (`METHOD SP target SP HTTP/1.x`, method
//!   in upper case) that starts a line or starts right after the gap.
//! - **PROXY protocol** (v1 line or v2 binary header, [`crate::engine::proxy`]) at the start of a
//!   stream whose SYN was seen: stripped; its source address becomes the requests' `client`
//!   (the TCP sender stays in `peer`) when the sender is in `proxy_protocol_from`; from any
//!   other sender the header is stripped, counted (`proxy_header_untrusted`) and not
//!   believed. A malformed or truncated header is counted
//!   (`proxy_header_malformed`); when its end is known the stream goes on after it (parsed
//!   only if it starts with a request line, else opaque), otherwise it is parsed like a
//!   stream joined mid-way (only clear request lines are recognised).
//! - **Health checks** matching [`crate::engine::health_check::HealthCheckRule`] are dropped
//!   (`health_check`).
//! - **Caps**: a head over `max_header_bytes` drops that message (counted); fields past
//!   `max_headers` are not kept (flagged); bodies over `max_body_bytes` (or beyond the global
//!   budget) are cut, the request is emitted flagged `body_truncated`.
//! - **Memory**: every heap byte the parser holds (its buffer's capacity, the pending request
//!   with its fields, body capacity and trailers) is charged to the global budget; a pending
//!   request the budget cannot hold is dropped (`over_budget`).

//!
//! Layout: [`state`] holds the parser's data and bookkeeping ([`Parser`], [`ParserState`],
//! [`Ctx`]); this module dispatches bytes by state and takes a message through head, body
//! and emit; [`grammar`] is the request-line grammar; [`head`] reads a complete head;
//! [`resync`] finds where requests start (the opaque verdict, candidate scanning after a
//! gap); [`framing`] decides body lengths and decodes the chunked coding; [`proxy_prefix`]
//! strips a PROXY protocol header at a stream start.

mod framing;
mod grammar;
mod head;
mod proxy_prefix;
pub mod response;
mod resync;
mod state;
#[cfg(test)]
pub(crate) mod tests;

use crate::engine::proxy;
use crate::engine::request::{Fields, HttpRequest};
use crate::engine::stats::{Anomaly, DropReason};
pub use framing::parse_chunk_size;
use framing::{Framing, decide, head_end};
use grammar::{Methods, request_line};
use head::{Refused, read_head};
use resync::{Start, classify_start};
use state::Pending;
pub(crate) use state::alloc_cost;
pub use state::{Ctx, HttpLimits, Meta, Parser, ParserState};

/// What the first line of a head is (see [`Parser::judge_line`]).
/// The first line of `input` (up to its LF) ends with `HTTP/1.0` or `HTTP/1.1` (and at most one
/// CR): the only lines `httparse` reads as a request line, so a cheap test of whether the fast
/// path can read a head starting here.
fn ends_like_http1(input: &[u8]) -> bool {
    let Some(lf) = memchr::memchr(b'\n', input) else {
        return false;
    };
    let line = &input[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.ends_with(b"HTTP/1.1") || line.ends_with(b"HTTP/1.0")
}

enum Judged {
    /// Not known yet.
    Wait,
    /// A request line with a version: the head goes on.
    RequestLine,
    /// An HTTP/0.9 request line ending at `input[lf]`.
    Simple { lf: usize },
    /// No origin reads a request line here.
    Refused,
}

impl Parser {
    /// Feeds in-order bytes; `ts_us` is the time of the packet that carried them.
    pub fn data(&mut self, ts_us: u64, mut input: &[u8], ctx: &mut Ctx<'_>) {
        while !input.is_empty() {
            input = match self.state {
                ParserState::Start => {
                    self.first_message = true;
                    self.msg_ts = ts_us;
                    self.state = if matches!(
                        input[0],
                        b if b == proxy::V1_PREFIX[0] || b == proxy::V2_SIGNATURE[0]
                    ) {
                        ParserState::Proxy
                    } else {
                        ParserState::Head
                    };
                    input
                }
                ParserState::Proxy => self.proxy_header(input, ctx),
                ParserState::Sync { line_start } => self.sync(ts_us, input, line_start, ctx),
                ParserState::Head => self.head(ts_us, input, ctx),
                ParserState::Body { remaining, discard } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    let remaining = remaining - n as u64;
                    if !discard {
                        self.append_body(&input[..n], remaining, ctx);
                    }
                    self.state = ParserState::Body { remaining, discard };
                    if remaining == 0 {
                        if discard {
                            self.state = ParserState::Head;
                        } else {
                            self.emit(ctx);
                        }
                    }
                    &input[n..]
                }
                ParserState::ChunkSize => self.chunk_size(input, ctx),
                ParserState::ChunkData { remaining } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    // More chunks may follow: no end known.
                    self.append_body(&input[..n], u64::MAX, ctx);
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        ParserState::ChunkDataEnd { seen_cr: false }
                    } else {
                        ParserState::ChunkData { remaining }
                    };
                    &input[n..]
                }
                ParserState::ChunkDataEnd { seen_cr } => match input[0] {
                    b'\r' if !seen_cr => {
                        self.state = ParserState::ChunkDataEnd { seen_cr: true };
                        &input[1..]
                    }
                    b'\n' => {
                        self.state = ParserState::ChunkSize;
                        &input[1..]
                    }
                    _ => {
                        // Chunk data not followed by its line end: the head was delivered
                        // (Node, Go); these bytes are read as the next message.
                        self.body_error(ctx);
                        if self.state == ParserState::Head {
                            input
                        } else {
                            &[]
                        }
                    }
                },
                ParserState::Trailers { skip_line } => self.trailers(skip_line, input, ctx),
                ParserState::Held => self.hold(ts_us, input, ctx),
                ParserState::Opaque | ParserState::Upgraded | ParserState::Ended => return,
            };
        }
    }

    /// Client bytes while an Upgrade / CONNECT answer is awaited: kept, or — past the cap or
    /// the budget — parsed as HTTP at once (flagged).
    fn hold<'i>(&mut self, ts_us: u64, input: &'i [u8], ctx: &mut Ctx<'_>) -> &'i [u8] {
        if self.buf.is_empty() {
            self.msg_ts = ts_us;
        }
        let max = ctx.limits.max_header_bytes;
        let fits = |p: &Parser| p.buf.len() + input.len() <= max;
        if fits(self) && self.may_grow(input.len(), ctx) {
            self.buf.extend_from_slice(input);
            self.account(ctx.budget);
            return &[];
        }
        self.resume(true, ctx);
        if self.state == ParserState::Held && !fits(self) {
            // A second Upgrade among the held bytes holds what follows it, and that does not
            // fit either: parsed in one pass (resuming again at each request would copy the
            // rest once per request).
            self.resume_all(ctx);
        }
        input
    }

    /// The server switched protocols after the Upgrade / CONNECT request (101, or 2xx to a
    /// CONNECT): the held bytes and everything after them are not HTTP (counted). Also when
    /// the parser resumed already (no answer was awaited any longer): it stops there.
    pub fn switched(&mut self, ctx: &mut Ctx<'_>) {
        if self.is_done() {
            return;
        }
        if self.in_message() {
            ctx.stats.count_drop(DropReason::UpgradedFlow);
        }
        ctx.stats.upgraded_flows += 1;
        self.pending = None;
        self.buf = Vec::new();
        self.state = ParserState::Upgraded;
        self.account(ctx.budget);
    }

    /// The server's answer to the Upgrade / CONNECT request did not switch protocols
    /// (`unanswered`: no answer is awaited any longer): the held bytes, and what follows,
    /// are parsed as HTTP.
    pub fn resume(&mut self, unanswered: bool, ctx: &mut Ctx<'_>) {
        if self.state != ParserState::Held {
            return;
        }
        self.unanswered |= unanswered;
        self.state = ParserState::Head;
        let held = std::mem::take(&mut self.buf);
        self.account(ctx.budget);
        if !held.is_empty() {
            let ts = self.msg_ts;
            self.data(ts, &held, ctx);
            ctx.from_held = ctx.out.len();
        }
    }

    /// Parses every byte held for an answer, none awaited any longer, in one pass: an
    /// Upgrade / CONNECT request among them does not hold what follows it (holding it again
    /// at each such request would copy the rest once per request: quadratic in a burst of
    /// CONNECT lines).
    pub fn resume_all(&mut self, ctx: &mut Ctx<'_>) {
        self.no_hold = true;
        self.resume(true, ctx);
        self.no_hold = false;
    }

    /// `len` bytes of the stream were lost.
    pub fn gap(&mut self, len: u64, ctx: &mut Ctx<'_>) {
        // Held bytes cannot wait across lost ones: parsed now (no answer awaited), all of
        // them, else what a second Upgrade request held would be joined to the bytes after
        // the gap. (The engine's sink parses them in a call of its own first, so that
        // pairing takes the requests among them as before the gap.)
        self.resume_all(ctx);
        let resync = ParserState::Sync { line_start: false };
        match self.state {
            ParserState::Start => self.state = resync,
            ParserState::Proxy => {
                ctx.stats.count_drop(DropReason::ProxyHeaderMalformed);
                self.buf.clear();
                self.state = resync;
                self.account(ctx.budget);
            }
            ParserState::Sync { .. } => {
                self.buf.clear();
                self.state = resync;
                self.account(ctx.budget);
            }
            ParserState::Head if self.buf.is_empty() => self.state = resync,
            ParserState::Head
            | ParserState::ChunkSize
            | ParserState::ChunkData { .. }
            | ParserState::ChunkDataEnd { .. }
            | ParserState::Trailers { .. } => {
                self.drop_message(DropReason::MessageGap, resync, ctx)
            }
            ParserState::Body { remaining, discard } => {
                if !discard {
                    ctx.stats.count_drop(DropReason::MessageGap);
                    self.pending = None;
                    self.account(ctx.budget);
                }
                self.state = if len < remaining {
                    ParserState::Body {
                        remaining: remaining - len,
                        discard: true,
                    }
                } else if len == remaining {
                    ParserState::Head
                } else {
                    resync
                };
            }
            ParserState::Held
            | ParserState::Opaque
            | ParserState::Upgraded
            | ParserState::Ended => {}
        }
        self.first_message = false;
    }

    /// The stream ended: a message in progress is lost, except an `Expect: 100-continue`
    /// head whose body was never sent (and, through [`Parser::end_answered`], a request
    /// the server already answered).
    pub fn end(&mut self, ctx: &mut Ctx<'_>) {
        // Bytes held for an answer that can no longer matter: parsed, all of them (those a
        // second Upgrade request among them holds too).
        self.resume_all(ctx);
        match self.state {
            ParserState::Head if !self.buf.is_empty() => {
                ctx.stats.count_drop(DropReason::MessageIncomplete)
            }
            ParserState::Proxy => ctx.stats.count_drop(DropReason::ProxyHeaderMalformed),
            ParserState::Body { discard: false, .. } | ParserState::ChunkSize
                if self.buf.is_empty()
                    && self
                        .pending
                        .as_ref()
                        .is_some_and(|p| p.expect_continue && p.body_seen == 0) =>
            {
                self.emit(ctx);
            }
            ParserState::Body { discard: false, .. }
            | ParserState::ChunkSize
            | ParserState::ChunkData { .. }
            | ParserState::ChunkDataEnd { .. }
            | ParserState::Trailers { .. } => ctx.stats.count_drop(DropReason::MessageIncomplete),
            _ => {}
        }
        self.pending = None;
        self.buf = Vec::new();
        self.proxied = None;
        if !matches!(self.state, ParserState::Opaque | ParserState::Upgraded) {
            self.state = ParserState::Ended;
        }
        self.account(ctx.budget);
    }

    /// The stream ended after the server answered the request in progress (its answer came
    /// before the rest of it): a request whose head was read is emitted with the body read
    /// so far, flagged `body_incomplete` (unless it is the `Expect: 100-continue` head whose
    /// body was never sent, emitted as [`Parser::end`] does), instead of being lost; then as
    /// [`Parser::end`].
    pub fn end_answered(&mut self, ctx: &mut Ctx<'_>) {
        let mid_body = matches!(
            self.state,
            ParserState::Body { discard: false, .. }
                | ParserState::ChunkSize
                | ParserState::ChunkData { .. }
                | ParserState::ChunkDataEnd { .. }
                | ParserState::Trailers { .. }
        );
        if mid_body && let Some(p) = self.pending.as_mut() {
            if !(p.expect_continue && p.body_seen == 0) {
                p.req.anomalies.insert(Anomaly::BodyIncomplete);
            }
            // A chunk-size or trailer line begun: nothing more of it will come.
            self.buf = Vec::new();
            self.emit(ctx);
        }
        self.end(ctx);
    }

    /// Whether bytes of a message are held or a body is being read (lost if the stream
    /// stops here).
    pub(crate) fn in_message(&self) -> bool {
        match self.state {
            ParserState::Head | ParserState::Held => !self.buf.is_empty(),
            ParserState::Body { discard, .. } => !discard,
            ParserState::ChunkSize
            | ParserState::ChunkData { .. }
            | ParserState::ChunkDataEnd { .. }
            | ParserState::Trailers { .. } => true,
            _ => false,
        }
    }

    /// The flow was evicted: a message in progress is lost (counted as `flow_evicted`).
    pub fn evict(&mut self, ctx: &mut Ctx<'_>) {
        if self.in_message() {
            ctx.stats.count_drop(DropReason::FlowEvicted);
        }
        self.pending = None;
        self.buf = Vec::new();
        self.proxied = None;
        self.state = ParserState::Ended;
        self.account(ctx.budget);
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
            self.line_ok = false;
        }
        if self.first_message {
            // Decide opaque or not on the first bytes, as when they arrive in one piece (the
            // verdict must not depend on segmentation).
            let mut probe = [0u8; resync::START_PROBE];
            let a = self.buf.len().min(probe.len());
            probe[..a].copy_from_slice(&self.buf[..a]);
            let b = input.len().min(probe.len() - a);
            probe[a..a + b].copy_from_slice(&input[..b]);
            match classify_start(&probe[..a + b]) {
                Start::Opaque => {
                    self.become_opaque(ctx);
                    return &[];
                }
                Start::Http => self.first_message = false,
                Start::More => {}
            }
        }
        // Where the head ends when it is all in `input` (nothing buffered), once looked for:
        // the search reads up to all of `input`, so it is made only for a line that may start
        // a head (an HTTP/0.9 line is a request alone: scanning past it for every one of many
        // such lines would be quadratic).
        let mut end_here: Option<Option<usize>> = None;
        if !self.line_ok && self.buf.is_empty() && ends_like_http1(input) {
            let end = head_end(&[], input);
            end_here = Some(end);
            if let Some(end) = end
                && end <= max
                && let Some(h) =
                    head::fast(&input[..end], ctx.limits.max_headers, ctx.limits.keep_heads)
            {
                // The usual case: the whole head at hand, read by the fast path. Its first
                // line needs no judging on its own: the fast path reads only heads whose first
                // line the grammar takes for a request line with a version (a proptest in
                // `head` checks it), so `judge_line` could only have said so.
                let used = self.complete_read(h, ctx);
                return &input[used..];
            }
        }
        if !self.line_ok {
            match self.judge_line(input, max) {
                Judged::Wait => {}
                Judged::RequestLine => self.line_ok = true,
                Judged::Simple { lf } => {
                    // An HTTP/0.9 request is its line alone.
                    let mut line = std::mem::take(&mut self.buf);
                    line.extend_from_slice(&input[..=lf]);
                    self.complete_head(&line, ctx);
                    self.account(ctx.budget);
                    return &input[lf + 1..];
                }
                Judged::Refused => {
                    // No origin reads a request here: counted, and the line is searched for
                    // one like any bytes between messages.
                    ctx.stats.count_drop(DropReason::BadRequest);
                    let old = std::mem::take(&mut self.buf);
                    self.state = ParserState::Sync { line_start: false };
                    self.account(ctx.budget);
                    if !old.is_empty() {
                        self.data(ts_us, &old, ctx);
                    }
                    return input;
                }
            }
        }
        if self.buf.is_empty() {
            // The whole head in the bytes at hand: parsed in place, no copy.
            return match end_here.unwrap_or_else(|| head_end(&[], input)) {
                Some(end) if end > max => {
                    self.drop_message(
                        DropReason::HeadTooLarge,
                        ParserState::Sync { line_start: true },
                        ctx,
                    );
                    &input[end..]
                }
                Some(end) => {
                    let used = self.complete_head(&input[..end], ctx);
                    &input[used..]
                }
                None => self.buffer_head(ts_us, input, None, ctx),
            };
        }
        let n = self.buf.len();
        let prev_start = n.saturating_sub(2);
        let mut prev = [0u8; 2];
        prev[..n - prev_start].copy_from_slice(&self.buf[prev_start..]);
        let end = head_end(&prev[..n - prev_start], input);
        self.buffer_head(ts_us, input, end, ctx)
    }

    /// Buffers the bytes of a head that did not come in one piece, up to `end` (its end in
    /// `input`, if there); a complete head is then parsed.
    fn buffer_head<'i>(
        &mut self,
        ts_us: u64,
        input: &'i [u8],
        end: Option<usize>,
        ctx: &mut Ctx<'_>,
    ) -> &'i [u8] {
        let take = end.unwrap_or(input.len());
        if !self.may_buffer(take, ctx.limits.max_header_bytes, end.is_some(), ctx) {
            return &input[take..];
        }
        self.buf.extend_from_slice(&input[..take]);
        if end.is_some() {
            let head = std::mem::take(&mut self.buf);
            let used = self.complete_head(&head, ctx);
            self.reparse(ts_us, head, used, ctx);
        } else {
            self.account(ctx.budget);
        }
        &input[take..]
    }

    /// What the first line of the head being read is, judged when it is complete (an LF is
    /// in `input`, within the head cap `max`: a line that outgrows the cap is a head too
    /// large) or when its first [`resync::START_PROBE`] bytes are known (which can only
    /// refuse it): the same verdict at the same point whatever the segmentation.
    /// Invariant: while the line is not judged, `buf` holds no LF.
    fn judge_line(&self, input: &[u8], max: usize) -> Judged {
        if let Some(lf) = memchr::memchr(b'\n', input)
            && self.buf.len() + lf < max
        {
            let judged = |line: &[u8]| match request_line(line, Methods::Token) {
                Ok(l) if l.simple => Judged::Simple { lf },
                Ok(_) => Judged::RequestLine,
                Err(_) => Judged::Refused,
            };
            if self.buf.is_empty() {
                return judged(&input[..=lf]);
            }
            let mut line = Vec::with_capacity(self.buf.len() + lf + 1);
            line.extend_from_slice(&self.buf);
            line.extend_from_slice(&input[..=lf]);
            return judged(&line);
        }
        if self.buf.len() >= resync::START_PROBE {
            return Judged::Wait;
        }
        let mut probe = [0u8; resync::START_PROBE];
        let a = self.buf.len();
        probe[..a].copy_from_slice(&self.buf);
        let b = input.len().min(probe.len() - a);
        probe[a..a + b].copy_from_slice(&input[..b]);
        if a + b == probe.len()
            && request_line(&probe, Methods::Token).err() == Some(grammar::Line::No)
        {
            Judged::Refused
        } else {
            Judged::Wait
        }
    }

    /// After a buffered head of which `used` bytes made the message: the bytes after them
    /// (what follows an HTTP/0.9 line or a refused request line) are parsed afresh.
    fn reparse(&mut self, ts_us: u64, mut head: Vec<u8>, used: usize, ctx: &mut Ctx<'_>) {
        if used < head.len() {
            let rest = head.split_off(used);
            drop(head);
            self.data(ts_us, &rest, ctx);
        }
        self.account(ctx.budget);
    }

    /// Reads a head (complete, or a complete first line that decides alone) and sets up its
    /// body. Returns how many bytes of `head` the message used.
    fn complete_head(&mut self, head: &[u8], ctx: &mut Ctx<'_>) -> usize {
        self.line_ok = false;
        let resync = ParserState::Sync { line_start: true };
        let h = match read_head(head, ctx.limits.max_headers, ctx.limits.keep_heads) {
            Ok(h) => h,
            Err(Refused::RequestLine) => {
                // Searched for a request line like any bytes between messages.
                self.drop_message(
                    DropReason::BadRequest,
                    ParserState::Sync { line_start: false },
                    ctx,
                );
                return 0;
            }
            Err(Refused::Fields) => {
                self.drop_message(DropReason::BadRequest, resync, ctx);
                return head.len();
            }
        };
        self.complete_read(h, ctx)
    }

    /// [`Parser::complete_head`] once the head is read (`line_ok` is false): checks its
    /// framing and sets up its body (or emits it). Returns how many bytes of the input the
    /// message used.
    fn complete_read(&mut self, h: head::Head, ctx: &mut Ctx<'_>) -> usize {
        let resync = ParserState::Sync { line_start: true };
        let Ok((framing, framing_anomalies)) = decide(&h.facts, h.major, h.minor) else {
            self.drop_message(DropReason::BadRequest, resync, ctx);
            return h.len;
        };
        let mut anomalies = h.anomalies;
        anomalies.extend(framing_anomalies);
        if self.closed {
            anomalies.insert(Anomaly::AfterClose);
        }
        if self.unanswered {
            anomalies.insert(Anomaly::UpgradeUnanswered);
        }
        let http10 = h.major == 0 || (h.major == 1 && h.minor == 0);
        self.closed |= h.simple || h.facts.close || (http10 && !h.facts.keep_alive);
        let connect = h.method.eq_ignore_ascii_case("CONNECT");
        let upgrade = connect || h.facts.upgrade;
        let chunked = framing == Framing::Chunked;
        let used = h.len;
        let req = Box::new(HttpRequest {
            ts_us: self.msg_ts,
            vni: ctx.meta.vni(),
            client: self
                .proxied
                .as_deref()
                .copied()
                .unwrap_or_else(|| ctx.meta.client()),
            peer: ctx.meta.client(),
            server: ctx.meta.server(),
            gwlbe: ctx.meta.gwlbe(),
            mirror_source: ctx.meta.mirror_source,
            via: None,
            method: h.method,
            target: h.target,
            version: h.minor,
            headers: h.headers,
            body: Vec::new(),
            measured_body_len: None,
            chunked,
            body_truncated: false,
            version_major: h.major,
            trailers: Fields::new(),
            anomalies,
            response: None,
            response_missing: None,
        });
        let has_body = match framing {
            Framing::Chunked => !connect,
            Framing::Length(n) => n > 0 && !connect,
            Framing::None | Framing::Unknown => false,
        };
        if !has_body {
            self.emit_request(req, upgrade, ctx);
            if framing == Framing::Unknown && self.state == ParserState::Head {
                // No origin reads a body: what follows is searched for requests.
                self.state = resync;
            }
            self.account(ctx.budget);
            return used;
        }
        // The pending request is held until its body ends, charged to the budget. Its body
        // is allocated as its bytes come (`append_body`), not for the length it announces:
        // that is the sender's word, and a 60-byte head must not hold 64 KB of the budget.
        let p = Pending::new(req, upgrade, h.facts.expect_continue);
        if ctx.budget.used + p.cost() > ctx.budget.limit {
            self.drop_message(DropReason::OverBudget, ParserState::Head, ctx);
            // The body is skipped, not parsed as requests.
            self.state = match framing {
                Framing::Length(n) => ParserState::Body {
                    remaining: n,
                    discard: true,
                },
                _ => ParserState::Sync { line_start: false },
            };
            return used;
        }
        self.pending = Some(p);
        self.state = match framing {
            Framing::Length(n) => ParserState::Body {
                remaining: n,
                discard: false,
            },
            _ => ParserState::ChunkSize,
        };
        self.account(ctx.budget);
        used
    }

    /// Appends body bytes of the pending request; `rest` more are announced after them
    /// (`u64::MAX`: not known). The body grows as [`state::body_room`] allows: at most twice
    /// what came.
    fn append_body(&mut self, bytes: &[u8], rest: u64, ctx: &mut Ctx<'_>) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        p.body_seen += bytes.len() as u64;
        if !ctx.limits.keep_bodies {
            // Measured, not kept: cut where a kept body would be.
            let max = ctx.limits.max_body_bytes as u64;
            p.req.measured_body_len = Some(p.body_seen.min(max));
            p.req.body_truncated = p.body_seen > max;
            return;
        }
        if p.req.body_truncated {
            // Once cut, the body stays a prefix: bytes are never appended after a hole (the
            // budget may have room again later).
            return;
        }
        // The capacity is what is charged (at the allocator's cost of it).
        let room = ctx.budget.limit.saturating_sub(ctx.budget.used);
        let body = &mut p.req.body;
        let take = state::body_room(
            body,
            bytes.len(),
            rest,
            ctx.limits.max_body_bytes,
            room,
            state::alloc_cost,
        );
        if take < bytes.len() {
            p.req.body_truncated = true;
        }
        body.extend_from_slice(&bytes[..take]);
        self.account(ctx.budget);
    }

    fn emit(&mut self, ctx: &mut Ctx<'_>) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let p = *p;
        self.emit_request(p.req, p.upgrade, ctx);
    }

    /// Emits a complete request (its pending state, if any, already taken).
    fn emit_request(&mut self, req: Box<HttpRequest>, upgrade: bool, ctx: &mut Ctx<'_>) {
        self.line_ok = false;
        self.account(ctx.budget);
        self.emitted = self.emitted.saturating_add(1);
        let health_check = ctx
            .limits
            .health_checks
            .matches(&req, ctx.meta.client().ip());
        if health_check {
            ctx.stats.count_drop(DropReason::HealthCheck);
        } else {
            ctx.stats.count_request();
            if req.body_truncated {
                ctx.stats.bodies_truncated += 1;
            }
            ctx.stats.count_anomalies(req.anomalies);
            ctx.out.push(req);
        }
        if upgrade && health_check {
            // Dropped, it is not paired: no answer will be told. What follows is parsed on,
            // flagged (a balancer's health check does not upgrade).
            self.unanswered = true;
        }
        if upgrade && !self.no_hold && !health_check {
            self.buf = Vec::new();
            self.state = ParserState::Held;
            self.account(ctx.budget);
        } else {
            self.state = ParserState::Head;
        }
    }
}
