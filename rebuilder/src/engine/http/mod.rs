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

//!
//! Layout: [`state`] holds the parser's data and bookkeeping ([`Parser`], [`ParserState`],
//! [`Ctx`]); this module dispatches bytes by state and takes a message through head, body
//! and emit; [`resync`] finds where
//! requests start (request-line recognition, the opaque verdict, candidate scanning after a
//! gap); [`framing`] decides body lengths and decodes the chunked coding; [`proxy_prefix`]
//! strips a PROXY protocol header at a stream start.

mod framing;
mod proxy_prefix;
pub mod response;
mod resync;
mod state;
#[cfg(test)]
pub(crate) mod tests;

use std::mem::MaybeUninit;

use crate::engine::proxy;
use crate::engine::request::HttpRequest;
use crate::engine::stats::DropReason;
use framing::{Framing, framing, has_token, head_end};
use resync::{Start, classify_start};
use state::Pending;
pub use state::{Ctx, HttpLimits, Meta, Parser, ParserState};

/// Header fields parsed into a stack array (more: a heap one).
const STACK_HEADERS: usize = 128;

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
                    if !discard {
                        self.append_body(&input[..n], ctx);
                    }
                    let remaining = remaining - n as u64;
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
                    self.append_body(&input[..n], ctx);
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
                        self.drop_message(
                            DropReason::BadRequest,
                            ParserState::Sync { line_start: false },
                            ctx,
                        );
                        input
                    }
                },
                ParserState::Trailers { line_start } => self.trailers(line_start, input, ctx),
                ParserState::Opaque | ParserState::Upgraded | ParserState::Ended => return,
            };
        }
    }

    /// `len` bytes of the stream were lost.
    pub fn gap(&mut self, len: u64, ctx: &mut Ctx<'_>) {
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
            ParserState::Opaque | ParserState::Upgraded | ParserState::Ended => {}
        }
        self.first_message = false;
    }

    /// The stream ended: a message in progress is lost, except an `Expect: 100-continue`
    /// head whose body was never sent.
    pub fn end(&mut self, ctx: &mut Ctx<'_>) {
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
        if !matches!(self.state, ParserState::Opaque | ParserState::Upgraded) {
            self.state = ParserState::Ended;
        }
        self.account(ctx.budget);
    }

    /// The flow was evicted: a message in progress is lost (counted as `flow_evicted`).
    pub fn evict(&mut self, ctx: &mut Ctx<'_>) {
        let in_message = match self.state {
            ParserState::Head => !self.buf.is_empty(),
            ParserState::Body { discard, .. } => !discard,
            ParserState::ChunkSize
            | ParserState::ChunkData { .. }
            | ParserState::ChunkDataEnd { .. }
            | ParserState::Trailers { .. } => true,
            _ => false,
        };
        if in_message {
            ctx.stats.count_drop(DropReason::FlowEvicted);
        }
        self.pending = None;
        self.buf = Vec::new();
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
                        ParserState::Sync { line_start: true },
                        ctx,
                    );
                } else {
                    self.complete_head(&input[..end], ctx);
                }
                return &input[end..];
            }
            if self.may_buffer(input.len(), max, false, ctx) {
                self.buf.extend_from_slice(input);
                self.account(ctx.budget);
            }
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
        if !self.may_buffer(take, max, end.is_some(), ctx) {
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
        let resync = ParserState::Sync { line_start: true };
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
                response: None,
                response_missing: None,
            },
            upgrade,
            expect_continue,
            body_seen: 0,
        }));
        match framing {
            Framing::Chunked if !upgrade || !method.eq_ignore_ascii_case("CONNECT") => {
                self.state = ParserState::ChunkSize;
            }
            Framing::Length(n) if n > 0 && !method.eq_ignore_ascii_case("CONNECT") => {
                self.state = ParserState::Body {
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
            self.state = ParserState::Upgraded;
            self.account(ctx.budget);
        } else {
            self.state = ParserState::Head;
        }
    }
}
