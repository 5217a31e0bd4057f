//! The parser's data: its state ([`ParserState`]), what it buffers and holds ([`Parser`]),
//! what it writes to ([`Ctx`]) and its caps ([`HttpLimits`]); the bookkeeping every part of
//! the state machine shares (the budget account, dropping a message).
//!
//! A leaf of `http`: the parts of the state machine (`mod.rs`, `framing`, `resync`,
//! `proxy_prefix`) import it; it imports none of them.

use std::net::{IpAddr, SocketAddr};

use crate::engine::flow::FlowKey;
use crate::engine::health_check::HealthCheckRule;
use crate::engine::ranges::AddrRanges;
use crate::engine::reassembly::Budget;
use crate::engine::request::{Fields, HttpRequest};
use crate::engine::stats::{DropReason, EngineStats};

/// Caps and rules of the parser (copied from the engine configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Maximum head size.
    pub max_header_bytes: usize,
    /// Maximum header fields.
    pub max_headers: usize,
    /// Maximum body kept.
    pub max_body_bytes: usize,
    /// Whether bodies are kept; if not, measured as if kept (`HttpRequest::measured_body_len`)
    /// and never copied nor charged.
    pub keep_bodies: bool,
    /// Whether requests keep their target and fields. When not (`EngineConfig::
    /// keep_request_heads` off and no health-check rule, the only reader of them before a
    /// request goes out), they are not copied out of the stream at all; the method is kept
    /// (pairing reads HEAD / CONNECT), and the fields are read for framing as when kept.
    pub keep_heads: bool,
    /// Requests dropped as load-balancer health checks.
    pub health_checks: HealthCheckRule,
    /// Peers whose PROXY protocol headers are believed.
    pub proxy_protocol_from: AddrRanges,
}

/// Who a stream belongs to: copied into each request. The flow key as stored, its addresses
/// made on use (a request needs them; most segments do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The stream's direction: (GWLB endpoint, VNI, sender, receiver).
    pub key: FlowKey,
    /// The IP source of the VXLAN datagrams that carried the stream (the mirror's source).
    pub mirror_source: Option<IpAddr>,
}

impl Meta {
    /// VXLAN VNI.
    pub fn vni(&self) -> u32 {
        self.key.vni()
    }
    /// Sender of this stream.
    pub fn client(&self) -> SocketAddr {
        self.key.src()
    }
    /// Receiver of this stream.
    pub fn server(&self) -> SocketAddr {
        self.key.dst()
    }
    /// The Gateway Load Balancer endpoint the stream came through (GENEVE), if any.
    pub fn gwlbe(&self) -> Option<u64> {
        self.key.gwlbe()
    }
}

/// Everything the parser writes to.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Caps.
    pub limits: &'a HttpLimits,
    /// Global memory budget.
    pub budget: &'a mut Budget,
    /// Counters.
    pub stats: &'a mut EngineStats,
    /// Emitted requests (boxed: pairing queues them as they are).
    pub out: &'a mut Vec<Box<HttpRequest>>,
    /// How many of `out`'s first requests were parsed from bytes held for an answer (set
    /// when held bytes are resumed): they came before the bytes of the call, not in them.
    pub from_held: usize,
    /// Set when the parser gave up bytes it buffered as the start of a message (a candidate
    /// request line that was not one, or was one further in; a message dropped): the message
    /// it reads now began after where the given-up one did, perhaps in a later packet than
    /// that one, whose ACK number is not known here.
    pub restarted: bool,
    /// Flow identity.
    pub meta: Meta,
}

/// Parser state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParserState {
    /// Stream start seen (SYN), no byte yet: the first bytes decide PROXY header, HTTP/1 or
    /// opaque.
    Start,
    /// The stream starts like a PROXY header (`buf` holds its first bytes, at most
    /// [`crate::engine::proxy::MAX_PREFIX`]).
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
    /// Trailer section, one line at a time (`buf` holds the start of the current line).
    Trailers {
        /// The current line is too long: skipped up to its end.
        skip_line: bool,
    },
    /// Not HTTP/1 (TLS, HTTP/2, other): ignored.
    Opaque,
    /// After an Upgrade / CONNECT request, until the server's answer decides (`buf` holds the
    /// client bytes that came meanwhile, at most `max_header_bytes`, charged): a switch
    /// ([`Parser::switched`]) makes the stream `Upgraded`, any other answer — or none
    /// ([`Parser::resume`]) — parses them as HTTP.
    Held,
    /// The server switched protocols (101 to an Upgrade, 2xx to a CONNECT): ignored.
    Upgraded,
    /// The stream ended.
    Ended,
}

/// A request whose body is being read.
#[derive(Debug)]
pub(super) struct Pending {
    /// Boxed from the start: the box is what pairing queues and emits, so the request is
    /// not moved (384 bytes) at every hand-off.
    pub(super) req: Box<HttpRequest>,
    pub(super) upgrade: bool,
    pub(super) expect_continue: bool,
    pub(super) body_seen: u64,
    /// Heap bytes of the request but its body and trailers (fixed once built), the box
    /// included.
    fixed_cost: usize,
}

/// What an allocation of `n` bytes costs: rounded up to the allocator's 16-byte granule, plus
/// 16 bytes of bookkeeping.
pub(crate) const fn alloc_cost(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n.next_multiple_of(16) + 16
    }
}

/// Makes room in `body` for up to `wanted` more bytes and says how many fit. The allocation
/// grows only as bytes come: doubling from what it holds, never past `len + wanted + rest`
/// (`rest`: the bytes still announced after these; `u64::MAX` when unknown) nor `max` (the
/// per-message cap), and only as far as `room` (the budget's free bytes, spent at `cost` of a
/// capacity) allows; within the budget, as much as fits. So a body never holds more than
/// twice what came, and a head that announces a length the bytes never bring holds nothing
/// for it. Shared by request and response bodies.
pub(super) fn body_room(
    body: &mut Vec<u8>,
    wanted: usize,
    rest: u64,
    max: usize,
    room: usize,
    cost: fn(usize) -> usize,
) -> usize {
    let len = body.len();
    let cap = body.capacity();
    let take = wanted.min(max.saturating_sub(len));
    let need = len + take;
    if need <= cap {
        return take;
    }
    let end = need.saturating_add(usize::try_from(rest).unwrap_or(usize::MAX));
    let want = need.saturating_mul(2).min(end).min(max).max(need);
    let afford = |c: usize| cost(c) - cost(cap) <= room;
    let new_cap = if afford(want) {
        want
    } else {
        // As much as fits.
        let mut c = need;
        while c > cap && !afford(c) {
            c = cap + (c - cap) / 2;
        }
        c
    };
    if new_cap > cap {
        body.reserve_exact(new_cap - len);
    }
    take.min(body.capacity() - len)
}

/// Heap bytes of a list of fields (its three buffers).
pub(super) fn fields_cost(fields: &Fields) -> usize {
    capacities_cost(fields.capacities())
}

/// Heap bytes of a list of fields whose buffers have these capacities
/// ([`Fields::capacities`], [`Fields::capacities_with`]).
pub(super) fn capacities_cost(capacities: [usize; 3]) -> usize {
    capacities.into_iter().map(alloc_cost).sum()
}

impl Pending {
    /// A request whose body is awaited (charged to the budget meanwhile; a request emitted
    /// at once never becomes a `Pending`).
    pub(super) fn new(req: Box<HttpRequest>, upgrade: bool, expect_continue: bool) -> Box<Pending> {
        let fixed_cost = alloc_cost(std::mem::size_of::<Pending>())
            + alloc_cost(std::mem::size_of::<HttpRequest>())
            + alloc_cost(req.method.capacity())
            + alloc_cost(req.target.capacity())
            + fields_cost(&req.headers);
        Box::new(Pending {
            req,
            upgrade,
            expect_continue,
            body_seen: 0,
            fixed_cost,
        })
    }

    /// Heap bytes held now (what is charged to the budget).
    pub(super) fn cost(&self) -> usize {
        self.fixed_cost + alloc_cost(self.req.body.capacity()) + fields_cost(&self.req.trailers)
    }
}

/// Request parser of one stream.
///
/// Invariants:
/// - `pending` is `Some` exactly in the body states (`Body` not discarding, `Chunk*`,
///   `Trailers`).
/// - `held` is every heap byte the parser holds — `buf`'s capacity, the pending request
///   (fields, body capacity, trailers, the box), the PROXY client's box — and is charged to
///   the engine's [`Budget`]; no allocation is kept while `buf` is empty.
/// - A request is pushed to `out` only when every byte of it was delivered with no gap.
#[derive(Debug)]
pub struct Parser {
    pub(super) state: ParserState,
    pub(super) buf: Vec<u8>,
    pub(super) held: usize,
    pub(super) msg_ts: u64,
    pub(super) pending: Option<Box<Pending>>,
    pub(super) first_message: bool,
    /// The candidate request line in `buf` (while syncing) starts a line: any upper-case
    /// method is accepted; otherwise only a known method.
    pub(super) candidate_at_line_start: bool,
    /// Saturating (only compared with small numbers; 16 bits keep the parser at 80 bytes).
    pub(super) emitted: u16,
    /// The real client named by the stream's PROXY header (boxed: rare, keeps flows small).
    pub(super) proxied: Option<Box<SocketAddr>>,
    /// The first line of the head in `buf` was checked: a request line (HTTP/1.x or later).
    pub(super) line_ok: bool,
    /// A request of this stream closed the connection (`Connection: close`, HTTP/1.0
    /// without keep-alive, HTTP/0.9): origins ignore what follows.
    pub(super) closed: bool,
    /// An Upgrade / CONNECT of this stream was not answered as far as the engine saw: the
    /// requests after it are flagged [`crate::engine::stats::Anomaly::UpgradeUnanswered`].
    pub(super) unanswered: bool,
    /// Held bytes are being parsed with no answer awaited any longer (`Parser::resume_all`):
    /// an Upgrade / CONNECT request among them does not hold what follows it.
    pub(super) no_hold: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser for a stream joined mid-way: it syncs on the first request line.
    pub fn new() -> Parser {
        Parser {
            state: ParserState::Sync { line_start: false },
            buf: Vec::new(),
            held: 0,
            msg_ts: 0,
            pending: None,
            first_message: false,
            candidate_at_line_start: false,
            emitted: 0,
            proxied: None,
            line_ok: false,
            closed: false,
            unanswered: false,
            no_hold: false,
        }
    }

    /// A parser for a stream whose start (SYN) was seen.
    pub fn at_stream_start() -> Parser {
        Parser {
            state: ParserState::Start,
            ..Parser::new()
        }
    }

    /// Current state.
    pub fn state(&self) -> ParserState {
        self.state
    }

    /// Requests emitted so far.
    pub fn emitted(&self) -> u64 {
        u64::from(self.emitted)
    }

    /// Whether the parser holds the client's bytes until the server answers an Upgrade or
    /// CONNECT request (see [`ParserState::Held`]).
    pub fn awaiting_answer(&self) -> bool {
        self.state == ParserState::Held
    }

    /// Whether the parser stopped holding for an Upgrade / CONNECT answer before it came
    /// (a later switch still stops it).
    pub fn resumed_unanswered(&self) -> bool {
        self.unanswered
    }

    /// Whether further bytes are ignored (opaque, upgraded, ended).
    pub fn is_done(&self) -> bool {
        matches!(
            self.state,
            ParserState::Opaque | ParserState::Upgraded | ParserState::Ended
        )
    }

    /// Bytes held in buffers (charged to the budget).
    pub fn held(&self) -> usize {
        self.held
    }

    pub(super) fn account(&mut self, budget: &mut Budget) {
        // Idle directions hold no allocation (RSS with many flows).
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
        let now = alloc_cost(self.buf.capacity())
            + self.pending.as_ref().map_or(0, |p| p.cost())
            + self
                .proxied
                .as_ref()
                .map_or(0, |_| alloc_cost(std::mem::size_of::<SocketAddr>()));
        if now > self.held {
            budget.used += now - self.held;
            debug_assert!(budget.used <= budget.limit, "charged past the budget");
        } else {
            budget.give(self.held - now);
        }
        self.held = now;
    }

    /// Whether `buf` may grow by `take` bytes within the budget; if so its capacity is
    /// reserved (exactly what is charged at the next [`Self::account`]).
    pub(super) fn may_grow(&mut self, take: usize, ctx: &mut Ctx<'_>) -> bool {
        let need = self.buf.len() + take;
        let cap = self.buf.capacity();
        if need <= cap {
            return true;
        }
        let new_cap = need.max(cap * 2).max(64);
        let delta = alloc_cost(new_cap) - alloc_cost(cap);
        let delta_min = alloc_cost(need) - alloc_cost(cap);
        let room = ctx.budget.limit.saturating_sub(ctx.budget.used);
        let new_cap = if delta <= room {
            new_cap
        } else if delta_min <= room {
            need
        } else {
            return false;
        };
        self.buf.reserve_exact(new_cap - self.buf.len());
        true
    }

    pub(super) fn drop_message(
        &mut self,
        reason: DropReason,
        next: ParserState,
        ctx: &mut Ctx<'_>,
    ) {
        ctx.stats.count_drop(reason);
        self.pending = None;
        self.buf.clear();
        self.state = next;
        // The next message begins after this one, maybe in a later packet.
        ctx.restarted = true;
        self.account(ctx.budget);
    }

    /// Whether `take` more bytes may be buffered: with what `buf` holds, within `cap`, and
    /// within the global budget. If not, the message is dropped (`head_too_large`, or
    /// `over_budget`) and the parser resyncs — at a line start when `line_start` and the cap
    /// was the reason.
    pub(super) fn may_buffer(
        &mut self,
        take: usize,
        cap: usize,
        line_start: bool,
        ctx: &mut Ctx<'_>,
    ) -> bool {
        let (reason, line_start) = if self.buf.len() + take > cap {
            (DropReason::HeadTooLarge, line_start)
        } else if !self.may_grow(take, ctx) {
            (DropReason::OverBudget, false)
        } else {
            return true;
        };
        self.drop_message(reason, ParserState::Sync { line_start }, ctx);
        false
    }

    pub(super) fn become_opaque(&mut self, ctx: &mut Ctx<'_>) {
        ctx.stats.opaque_flows += 1;
        self.pending = None;
        self.buf.clear();
        self.state = ParserState::Opaque;
        self.account(ctx.budget);
    }
}
