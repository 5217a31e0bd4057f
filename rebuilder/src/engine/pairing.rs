//! Pairing: every request of a connection with the response the server gave it, in order.
//!
//! HTTP/1.x answers requests in the order they were sent (pipelining included), so pairing
//! is counting — as long as nothing is lost. One [`Pairing`] per connection (held by the
//! request direction) keeps the requests that wait for their response, oldest first, and is
//! told by the response parser ([`Answering`]) where each response begins.
//!
//! Policies (the rule: a response is paired only when its position is known for sure; a
//! request whose response cannot be told for sure goes out without one, with the reason):
//!
//! - **In step** (`anchored`): the next response answers the oldest waiting request. It is
//!   still checked against TCP causality: the server cannot answer a request it has not
//!   received (the response's ACK number must be past the request's first byte) and the client
//!   cannot have sent a request after receiving its answer (the request's ACK number must not
//!   be past the response's first byte). A response that fails the check answers nothing held
//!   (`responses_unmatched`: a response without a request, more responses than requests,
//!   unsolicited answers such as a 408 before a close) and shifts nothing.
//! - **Out of step**: after lost bytes where responses are not framed (between responses, in a
//!   head, in a chunk-size line), after a malformed response, or when lost client bytes may have
//!   held requests, the number of responses or requests missed is unknown. Every request then
//!   waiting is marked with that reason, and pairing resumes only on positive evidence: a
//!   response that begins exactly where the client's ACK number stood when it sent a waiting
//!   request (the client had received every byte before that response, and none of it, when it
//!   sent the request: the response answers that request unless the client pipelined it behind
//!   an unanswered one) and that the causality check accepts. Pairing does not resume that way
//!   on a connection where pipelining was seen (two requests sent with the same ACK number),
//!   nor, on a connection joined mid-way and never in step since, on a request whose
//!   predecessor still waits with no response head read since it was sent (a response to a
//!   request from before the capture may have been in progress: this one may be the
//!   predecessor's answer).
//!   The requests before the one re-anchored on go out without a response (the reason marked).
//! - **Directions out of order**: a response that arrives while no request waits, but whose
//!   ACK number shows the server had client bytes not parsed yet (the mirror delivered the
//!   server's packets ahead of the client's), may answer a request still to come: the stream
//!   goes out of step (`reordered`) instead of counting it as a response without a request.
//!   Lost client bytes that the server acknowledged are skipped at once (they will not be
//!   retransmitted), so requests behind them are not held back behind their own responses.
//! - **Answered early**: a server may answer a request before its body has come (nginx's
//!   405 or 413, a 401 from a handler that does not read the body, a 417 to `Expect:
//!   100-continue` after which the client never sends it). A response whose ACK number is
//!   past the first byte of the request in progress is kept the same way and answers that
//!   request when it is complete, with the same checks; it is not a response without a
//!   request, and the responses after it keep their places. When the client's stream ends
//!   before the request does, the request is emitted with what came of its body
//!   (`body_incomplete`) and this answer, instead of being lost.
//! - **HTTP/0.9**: the answer to a simple request (`GET /x`, no version) is raw content up
//!   to the close, with no status line: none is attributed to it (a status line in that
//!   content is not its response), and it goes out when the connection ends.
//! - **Given up**: a request waits at most `response_timeout_us` (capture clock) after it is
//!   complete for its response to begin (once its head came, the response is waited for
//!   until it completes, is lost or the connection ends: a long download is not a missing
//!   response), `server_wait_us` when the server's direction has not been seen, then goes out
//!   without its response (`timeout`, or `server_not_seen`, after which later requests of the
//!   connection do not wait at all until the server's direction shows up); at most
//!   `max_pending` wait per connection (the oldest goes out first, `over_budget`); every byte
//!   held is charged to the engine's budget (a request that does not fit goes out at once,
//!   `over_budget`), and a request given up keeps its place in the count.
//! - **Ends**: the server's stream ending (FIN, RST) gives up what is still waiting
//!   (`connection_closed`), so does the connection's state ending (`flow_evicted`,
//!   `connection_closed` when it expired, `input_ended` at the end of a capture).

use std::collections::VecDeque;

use crate::engine::http::alloc_cost;
use crate::engine::http::response::{Answering, Asked, At, ResponseParser};
use crate::engine::reassembly::{Budget, seq_diff};
use crate::engine::request::{HttpRequest, HttpResponse};
use crate::engine::stats::{Anomaly, EngineStats, ResponseMissing};

/// The caps of pairing (copied from the engine configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairingLimits {
    /// How long a complete request waits for its response to begin (capture clock, µs).
    pub response_timeout_us: u64,
    /// ... while the server's direction has not been seen at all.
    pub server_wait_us: u64,
    /// Requests waiting per connection.
    pub max_pending: usize,
    /// Whether a waiting request keeps its head (`EngineConfig::keep_request_heads`).
    pub keep_request_heads: bool,
}

/// Memory a waiting slot costs besides its request.
const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// What the responses kept ahead of their requests make of a request ([`Pairing::answer_kept`]).
enum Kept {
    /// This response answers it.
    Answers(Box<HttpResponse>),
    /// The one kept answered nothing held: the count goes on.
    Unsolicited,
    /// None answers it and their place is not known: the connection goes out of step.
    OutOfStep,
}

/// One request in the count.
#[derive(Debug)]
struct Slot {
    /// The request, while it waits (`None`: already emitted without its response).
    req: Option<Box<HttpRequest>>,
    /// Bytes charged for it.
    held: usize,
    /// Client sequence number at or before its first byte.
    start: u32,
    /// ACK number of the packet that carried its first byte (what the client had received).
    ack: Option<u32>,
    /// ACK number of the client packet parsed before that one (`None`: none seen). Equal to
    /// `ack`: the request was sent in one burst with the bytes before it (pipelining).
    prev_ack: Option<u32>,
    /// When it is given up.
    deadline_us: u64,
    /// Unknown requests (lost client bytes) may precede it.
    unknown_before: bool,
    /// Why its response would be missing if it never comes (set when the stream went out of
    /// step while it waited).
    hint: Option<ResponseMissing>,
    asked: Asked,
    /// An Upgrade / CONNECT request: the client's parser holds what follows until its answer
    /// ([`Verdict`]).
    upgrade: bool,
}

/// What the answer to an Upgrade / CONNECT request decided for the client's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 101 (Upgrade) or 2xx (CONNECT): the connection left HTTP.
    Switched,
    /// Any other answer: the connection stays HTTP.
    Declined,
    /// No answer will be seen (given up, lost, the stream ended).
    Unanswered,
}

impl Slot {
    /// A request's place only (no request held), to test a response that came early against.
    fn probe(start: u32, ack: Option<u32>, asked: Asked) -> Slot {
        Slot {
            req: None,
            held: 0,
            start,
            ack,
            prev_ack: None,
            deadline_us: 0,
            unknown_before: false,
            hint: None,
            asked,
            upgrade: false,
        }
    }

    /// The client received bytes between the packet before this request and the request
    /// (so it was not sent in one burst with what precedes it).
    fn sequential(&self) -> bool {
        matches!((self.prev_ack, self.ack), (Some(p), Some(c)) if seq_diff(c, p) > 0)
    }
}

/// What pairing writes to.
pub struct PairCtx<'a> {
    /// Caps.
    pub limits: &'a PairingLimits,
    /// The engine's memory budget.
    pub budget: &'a mut Budget,
    /// Counters.
    pub stats: &'a mut EngineStats,
    /// Emitted requests.
    pub out: &'a mut Vec<HttpRequest>,
}

/// The pairing state of one connection (see the module documentation).
///
/// Invariants:
/// - `queue` is in the order requests were sent; `anchored` ⇒ the next response answers
///   `queue[skip]` ... in other words: the next `skip` responses answer requests already
///   given up, then the front answers the next one;
/// - `current` ⇒ `anchored` was true when the front's response head was attributed, and the
///   front waits for `complete` or `lost`;
/// - `held` is [`PAIRING_BYTES`] (the pairing itself) plus the sum of the slots' `held`,
///   charged to the budget; a connection holds a pairing only once it needs one (a request
///   complete, or the server's direction sending), see [`Pairing::create`].
#[derive(Debug)]
pub struct Pairing {
    queue: VecDeque<Slot>,
    skip: u32,
    anchored: bool,
    /// Why the stream is out of step.
    desync: ResponseMissing,
    pipelined: bool,
    current: bool,
    /// Unknown requests may follow the last slot.
    unknown_tail: bool,
    server_seen: bool,
    server_absent: bool,
    switched: bool,
    ended: bool,
    held: usize,
    /// The parser of the server's stream (kept with the pairing it informs; `None` until the
    /// server's direction sends something while this connection is tracked).
    pub(crate) resp: Option<ResponseParser>,
    /// Responses that came ahead of their request (at most [`MAX_EARLY`]), oldest first.
    early: VecDeque<(At, Box<HttpResponse>)>,
    /// Bytes they hold (charged).
    early_held: usize,
    /// The response in progress came ahead of its request.
    current_early: Option<At>,
    /// What the answer to an Upgrade / CONNECT request decided, until the engine tells the
    /// client's parser.
    verdict: Option<Verdict>,
    /// Joined mid-way (its client stream not seen from its start) and never in step since:
    /// requests not seen may precede the first one held.
    joined: bool,
    /// Server sequence number of the last response head read.
    last_head: Option<u32>,
    /// The deadline of the engine's waiting entry for this connection while it is listed
    /// (`Direction::waiting`; 0: not listed, or not by this pairing): the engine lists it
    /// again, earlier, when [`Pairing::next_deadline`] falls below it, and skips the entries
    /// left behind (those that do not match it).
    pub(crate) armed_us: u64,
}

/// Responses kept while their requests may still come.
const MAX_EARLY: usize = 4;

/// What a pairing costs by itself (its box, the server stream's parser inline), charged to
/// the budget while it exists. Its queue's slots are charged with their requests.
pub const PAIRING_BYTES: usize = alloc_cost(std::mem::size_of::<Pairing>());

impl Pairing {
    /// The pairing of a connection, its own memory charged to `budget` (`None`: it does not
    /// fit); `in_step` when its client stream was seen from its start, `unknown` when client
    /// bytes that may have held requests were lost before it existed.
    pub fn create(in_step: bool, unknown: bool, budget: &mut Budget) -> Option<Box<Pairing>> {
        if !budget.try_take(PAIRING_BYTES) {
            return None;
        }
        let mut p = Box::new(Pairing::new(in_step));
        p.held = PAIRING_BYTES;
        p.unknown_tail = unknown;
        Some(p)
    }

    /// Frees a pairing: what it holds (requests still waiting are dropped uncounted: flush
    /// them first unless they are known not to be requests), its server stream's parser and
    /// kept responses, and its own cost go back to `budget`.
    pub fn free(mut self: Box<Pairing>, budget: &mut Budget) {
        self.drop_parser(budget);
        budget.give(self.held);
    }

    /// Frees a pairing whose requests turned out not to be requests (its direction carries
    /// responses), as [`Pairing::free`], and returns the requests still waiting, for the
    /// caller to count as dropped.
    #[must_use = "the requests were counted as parsed; their drop is counted too"]
    pub fn discard(mut self: Box<Pairing>, budget: &mut Budget) -> Vec<Box<HttpRequest>> {
        let reqs = self.queue.iter_mut().filter_map(|s| s.req.take()).collect();
        self.free(budget);
        reqs
    }

    /// Drops the server stream's parser (a new server stream starts), returning what it holds.
    pub fn drop_resp(&mut self, budget: &mut Budget) {
        if let Some(r) = self.resp.take() {
            budget.give(r.held());
        }
    }

    fn new(in_step: bool) -> Pairing {
        Pairing {
            queue: VecDeque::new(),
            skip: 0,
            anchored: in_step,
            desync: ResponseMissing::Gap,
            pipelined: false,
            current: false,
            unknown_tail: false,
            server_seen: false,
            server_absent: false,
            switched: false,
            ended: false,
            held: 0,
            resp: None,
            early: VecDeque::new(),
            early_held: 0,
            current_early: None,
            verdict: None,
            joined: !in_step,
            last_head: None,
            armed_us: 0,
        }
    }

    /// What an answer to an Upgrade / CONNECT request decided since the last call.
    pub fn take_verdict(&mut self) -> Option<Verdict> {
        self.verdict.take()
    }

    /// Requests waiting.
    pub fn pending(&self) -> usize {
        self.queue.iter().filter(|s| s.req.is_some()).count()
    }

    /// Whether nothing waits and nothing is held.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether nothing waits, nothing is in progress and nothing is kept.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty()
            && !self.current
            && self.early.is_empty()
            && self.current_early.is_none()
    }

    /// Whether a response that came ahead of its request is kept or in progress (the
    /// server answered the client's request in progress, or the mirror delivered its
    /// direction first).
    pub fn answered_ahead(&self) -> bool {
        !self.early.is_empty() || self.current_early.is_some()
    }

    /// Bytes charged to the budget (its own and its waiting requests').
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether it holds more than its own cost: requests waiting, a response in progress or
    /// kept ahead of its request (what evicting its connection would give back).
    pub fn holds_more_than_itself(&self) -> bool {
        self.held > PAIRING_BYTES
            || self.early_held > 0
            || self.resp.as_ref().is_some_and(|r| r.held() > 0)
    }

    /// When the front is given up ([`Pairing::expire`]; `None` while its response is in
    /// progress: a response whose head came is waited for until it completes, is lost or its
    /// connection ends — a long download is not a missing response). Not monotonic: it drops
    /// back when a head that began in time ends or is lost, or a later request becomes the
    /// front (see `Engine::note_waiting`).
    pub fn next_deadline(&self, limits: &PairingLimits) -> Option<u64> {
        if self.answer_in_progress() {
            return None;
        }
        self.queue.front().map(|s| self.front_deadline(s, limits))
    }

    /// An answer just ended (`now_us`): the next request's answer could not begin before it
    /// (answers come in order), so its wait starts again from now — a request pipelined
    /// behind a slow answer is not given up for the time that answer took.
    fn restart_front_wait(&mut self, now_us: u64, limits: &PairingLimits) {
        if let Some(front) = self.queue.front_mut() {
            let again = now_us.saturating_add(limits.response_timeout_us);
            front.deadline_us = front.deadline_us.max(again);
        }
    }

    /// Whether the next deadline may fall below `deadline` (what [`Pairing::next_deadline`]
    /// gave, or the one the engine's entry is armed at) without the queue growing: it is
    /// later than the front's own (an extension: its answer's head began in time, and it
    /// drops back when the head ends or is lost; or a front given up over the cap), or a
    /// request behind the front has an earlier one, next once the front is answered (a
    /// request that completed before the server's direction was seen waits
    /// `server_wait_us`, those after it `response_timeout_us`, and the first may be the
    /// longer; a restarted wait, [`Pairing::restart_front_wait`], may end after a later
    /// request's own, and the next answer's packet may carry an earlier time than the one
    /// the entry was listed at: mirrored packets are not in time order).
    pub fn may_drop_back(&self, deadline: u64) -> bool {
        let mut slots = self.queue.iter();
        slots.next().is_some_and(|s| deadline > s.deadline_us)
            || slots.any(|s| s.deadline_us < deadline)
    }

    /// When the front (`front`) is given up: at its deadline, unless the head of its answer
    /// began by then and is still coming in (a response that began in time is waited for
    /// until its head is complete, for at most the response wait from its first byte).
    fn front_deadline(&self, front: &Slot, limits: &PairingLimits) -> u64 {
        // The next head answers the front only in step and with no answer to skip first (and
        // never an HTTP/0.9 request: its answer has no head).
        let in_step = self.anchored && self.skip == 0 && !self.switched && !front.asked.http09;
        let begun = in_step
            .then(|| self.resp.as_ref().and_then(ResponseParser::head_begun_us))
            .flatten()
            .filter(|&t| t <= front.deadline_us);
        match begun {
            Some(t) => front
                .deadline_us
                .max(t.saturating_add(limits.response_timeout_us)),
            None => front.deadline_us,
        }
    }

    /// The front's response is in progress (its head was attributed to it).
    fn answer_in_progress(&self) -> bool {
        self.current && self.current_early.is_none() && !self.queue.is_empty()
    }

    /// Drops the server stream's parser (its connection's state ends), returning what it holds.
    pub fn drop_parser(&mut self, budget: &mut Budget) {
        if let Some(r) = self.resp.take() {
            budget.give(r.held());
        }
        budget.give(self.early_held);
        self.early_held = 0;
        self.early.clear();
    }

    /// Forgets the responses kept for requests still to come (counted as unmatched).
    fn drop_early(&mut self, ctx: &mut PairCtx<'_>) {
        ctx.stats.responses_unmatched += self.early.len() as u64;
        ctx.budget.give(self.early_held);
        self.early_held = 0;
        self.early.clear();
    }

    /// The server's stream is out of step from here on (joined mid-way, its state lost).
    pub fn out_of_step(&mut self, reason: ResponseMissing) {
        self.current = false;
        self.go_out_of_step(reason);
    }

    /// The server's stream starts again (a new server direction after the old one's state
    /// was lost): it may answer again.
    pub fn server_restarts(&mut self) {
        self.ended = false;
        // The answers still to skip were the old stream's: they will not come.
        self.skip = 0;
    }

    /// Whether a response whose packet acknowledges `ack` answers client bytes that are not
    /// a complete request yet (`ahead_from`: the start of the request in progress, else the
    /// end of what was parsed): the mirror delivered the server's direction ahead of the
    /// client's, or the server answered a request before its body came.
    fn ahead_of_requests(ack: Option<u32>, ahead_from: Option<u32>) -> bool {
        match (ack, ahead_from) {
            (Some(a), Some(n)) => seq_diff(a, n) > 0,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The server's direction was seen (a packet of it reached the engine).
    pub fn server_seen(&mut self) {
        self.server_seen = true;
        self.server_absent = false;
    }

    /// Lost client bytes may have held requests (a gap, or a message the request parser
    /// dropped): their responses cannot be counted.
    pub fn unknown_requests(&mut self) {
        self.unknown_tail = true;
    }

    /// A complete request, whose first byte is at client sequence number `start` (or after)
    /// and was carried by a packet acknowledging `ack`; `now_us` is the capture time;
    /// `upgrade`: an Upgrade / CONNECT request whose answer the client's parser awaits.
    /// Returns whether that answer will be told ([`Pairing::take_verdict`]): the request
    /// waits for its response.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        mut req: Box<HttpRequest>,
        start: u32,
        ack: Option<u32>,
        prev_ack: Option<u32>,
        now_us: u64,
        upgrade: bool,
        ctx: &mut PairCtx<'_>,
    ) -> bool {
        // Requests whose wait was over before this one came are given up first, as the
        // timer would have: whether this one was pipelined behind them must not depend on
        // when it last ran.
        self.expire(now_us, ctx);
        if upgrade {
            // Only the answer to this request counts from here on: an earlier Upgrade whose
            // held bytes the parser gave up waiting with (past its cap) holds nothing now.
            self.verdict = None;
            for s in &mut self.queue {
                s.upgrade = false;
            }
        }
        let asked = Asked {
            head: req.method.eq_ignore_ascii_case("HEAD"),
            connect: req.method.eq_ignore_ascii_case("CONNECT"),
            guess: false,
            http09: req.anomalies.contains(Anomaly::Http09),
        };
        if !ctx.limits.keep_request_heads {
            req.forget_head();
        }
        let placed = Slot {
            prev_ack,
            ..Slot::probe(start, ack, asked)
        };
        if let Some(kept) = self.answer_kept(&placed, asked, ctx) {
            match kept {
                Kept::Answers(resp) => {
                    if upgrade {
                        self.verdict = Some(verdict_of(asked, &resp));
                    }
                    emit(req, Some(resp), None, ctx);
                    return upgrade;
                }
                Kept::Unsolicited => {}
                Kept::OutOfStep => {
                    self.drop_early(ctx);
                    self.go_out_of_step(ResponseMissing::Reordered);
                }
            }
        }
        if let Some(at) = self.current_early {
            // The response in progress came ahead of this request. Its framing was read
            // without the request's method: it answers this one only if the method changes
            // nothing there (a response to HEAD or a 2xx to CONNECT has no body, RFC 9112
            // §6.3; an HTTP/0.9 answer is no response), else it is out of step, never
            // paired with bytes that are not its own.
            let framed_alike = !(asked.head || asked.connect || asked.http09);
            if self.anchored
                && self.queue.is_empty()
                && self.early.is_empty()
                && !self.unknown_tail
                && framed_alike
                && Pairing::causal(&placed, at)
            {
                self.current_early = None;
                // Now the front, its response in progress (`current` stays set).
                return self.push_slot(req, placed, now_us, upgrade, ctx);
            }
            self.go_out_of_step(ResponseMissing::Reordered);
        }
        if self.switched || self.server_absent || self.ended {
            let reason = if self.switched {
                ResponseMissing::Malformed
            } else if self.ended {
                ResponseMissing::ConnectionClosed
            } else {
                ResponseMissing::ServerNotSeen
            };
            emit(req, None, Some(reason), ctx);
            return false;
        }
        self.push_slot(req, placed, now_us, upgrade, ctx)
    }

    /// The oldest response kept ahead of its request, taken out (its bytes given back to the
    /// budget).
    fn take_early(&mut self, ctx: &mut PairCtx<'_>) -> Option<(At, Box<HttpResponse>)> {
        let (at, resp) = self.early.pop_front()?;
        self.early_held -= resp.held_bytes();
        ctx.budget.give(resp.held_bytes());
        Some((at, resp))
    }

    /// What the responses kept ahead of their requests make of the request placed at
    /// `placed` (`None`: none is kept): a response that came ahead of its request
    /// (directions out of order) answers it if nothing waits before it, causality holds and
    /// its framing fits; out of step, one answers it only by the evidence rule. Every kept
    /// response given up is counted `responses_unmatched`; those taken are given back to the
    /// budget.
    fn answer_kept(&mut self, placed: &Slot, asked: Asked, ctx: &mut PairCtx<'_>) -> Option<Kept> {
        let (at, resp) = self.take_early(ctx)?;
        let in_step = self.anchored && self.queue.is_empty() && !self.unknown_tail;
        if in_step && Pairing::causal(placed, at) && fits_of(asked, &resp) {
            return Some(Kept::Answers(resp));
        }
        let unsolicited = at.ack.is_some_and(|a| seq_diff(a, placed.start) <= 0);
        if in_step && unsolicited && self.early.is_empty() {
            // The server had not received this request: the response answered nothing
            // held (a 408 before a close, ...): the count goes on. A response in progress
            // that came ahead of this request is judged after this all the same (until
            // 2026-12-06 it was not: a HEAD's answer read with a body then completed as
            // kept, and the next response was taken for the HEAD's).
            ctx.stats.responses_unmatched += 1;
            return Some(Kept::Unsolicited);
        }
        if in_step || !self.queue.is_empty() || self.pipelined {
            ctx.stats.responses_unmatched += 1;
            return Some(Kept::OutOfStep);
        }
        // Out of step: the evidence rule, over the kept responses in order.
        let sequential = placed
            .prev_ack
            .is_some_and(|p| placed.ack.is_some_and(|c| seq_diff(c, p) > 0));
        let mut kept = Some((at, resp));
        while let Some((at, resp)) = kept.take() {
            if placed.ack == Some(at.seq)
                && sequential
                && Pairing::causal(placed, at)
                && fits_of(asked, &resp)
            {
                self.unknown_tail = false;
                self.anchored = true;
                self.joined = false;
                self.skip = 0;
                return Some(Kept::Answers(resp));
            }
            ctx.stats.responses_unmatched += 1;
            kept = self.take_early(ctx);
        }
        Some(Kept::OutOfStep)
    }

    /// Queues the request whose place is `slot` (from [`Slot::probe`], with its `prev_ack`).
    fn push_slot(
        &mut self,
        req: Box<HttpRequest>,
        mut slot: Slot,
        now_us: u64,
        upgrade: bool,
        ctx: &mut PairCtx<'_>,
    ) -> bool {
        if let Some(last) = self.queue.back()
            && last.req.is_some()
            && slot.ack.is_some()
            && last.ack == slot.ack
            && !self.unknown_tail
        {
            self.pipelined = true;
        }
        while self.queue.len() >= ctx.limits.max_pending.max(1) {
            self.give_up_front(ResponseMissing::OverBudget, ctx);
        }
        let wait = if self.server_seen {
            ctx.limits.response_timeout_us
        } else {
            ctx.limits.server_wait_us
        };
        slot.deadline_us = now_us.saturating_add(wait);
        slot.unknown_before = std::mem::take(&mut self.unknown_tail);
        let cost = req.held_bytes() + SLOT_BYTES;
        let waits = ctx.budget.try_take(cost);
        if waits {
            slot.held = cost;
            self.held += cost;
            slot.req = Some(req);
            slot.upgrade = upgrade;
        } else {
            emit(req, None, Some(ResponseMissing::OverBudget), ctx);
        }
        if self.queue.is_empty() && slot.unknown_before && !self.current {
            self.go_out_of_step(ResponseMissing::Gap);
        }
        if !self.anchored {
            slot.hint = Some(self.desync);
        }
        self.queue.push_back(slot);
        waits && upgrade
    }

    /// Gives up the requests whose deadline passed.
    pub fn expire(&mut self, now_us: u64, ctx: &mut PairCtx<'_>) {
        while let Some(front) = self.queue.front() {
            if self.front_deadline(front, ctx.limits) > now_us || self.answer_in_progress() {
                break;
            }
            let reason = if self.server_seen {
                ResponseMissing::Timeout
            } else {
                self.server_absent = true;
                ResponseMissing::ServerNotSeen
            };
            self.give_up_front(reason, ctx);
        }
        if self.server_absent {
            // The server's direction is elsewhere: nothing more waits.
            while !self.queue.is_empty() {
                self.give_up_front(ResponseMissing::ServerNotSeen, ctx);
            }
        }
    }

    /// Gives up every waiting request (the connection's state ends).
    pub fn flush(&mut self, reason: ResponseMissing, ctx: &mut PairCtx<'_>) {
        while !self.queue.is_empty() {
            self.give_up_front(reason, ctx);
        }
        self.drop_early(ctx);
    }

    /// The front goes out without its response; while in step its response is still to
    /// come, so the next one is skipped.
    fn give_up_front(&mut self, reason: ResponseMissing, ctx: &mut PairCtx<'_>) {
        let Some(slot) = self.queue.pop_front() else {
            return;
        };
        if self.current {
            // Its response is in progress: it will be ignored when it completes.
            self.current = false;
        } else if self.anchored {
            self.skip += 1;
        }
        self.release(slot, Some(reason), None, ctx);
        self.after_front_change();
    }

    fn release(
        &mut self,
        slot: Slot,
        reason: Option<ResponseMissing>,
        resp: Option<Box<HttpResponse>>,
        ctx: &mut PairCtx<'_>,
    ) {
        ctx.budget.give(slot.held);
        self.held -= slot.held;
        if slot.upgrade {
            self.verdict = Some(match &resp {
                Some(r) => verdict_of(slot.asked, r),
                None => Verdict::Unanswered,
            });
        }
        if let Some(req) = slot.req {
            let reason = if resp.is_some() {
                None
            } else {
                Some(slot.hint.or(reason).unwrap_or(ResponseMissing::Timeout))
            };
            emit(req, resp, reason, ctx);
        }
    }

    /// The front changed: unknown requests before it put the stream out of step.
    fn after_front_change(&mut self) {
        if self.anchored
            && !self.current
            && self
                .queue
                .front()
                .map_or(self.unknown_tail, |s| s.unknown_before)
            && self.skip == 0
        {
            self.go_out_of_step(ResponseMissing::Gap);
        }
    }

    fn go_out_of_step(&mut self, reason: ResponseMissing) {
        if self.anchored {
            self.desync = reason;
        }
        self.anchored = false;
        self.skip = 0;
        for s in &mut self.queue {
            s.hint.get_or_insert(reason);
        }
    }

    /// Causality: the server had the request's first byte when it began `at`, and the client
    /// sent the request before it received `at`.
    fn causal(slot: &Slot, at: At) -> bool {
        let received = at.ack.is_none_or(|a| seq_diff(a, slot.start) > 0);
        let sent_before = slot.ack.is_none_or(|c| seq_diff(at.seq, c) >= 0);
        received && sent_before
    }
}

/// What a response to an Upgrade / CONNECT request decides (the response parser switches on
/// the same rule and then tells [`Answering::switched`]).
fn verdict_of(asked: Asked, resp: &HttpResponse) -> Verdict {
    let switched = resp.status == 101 || (asked.connect && (200..300).contains(&resp.status));
    if switched {
        Verdict::Switched
    } else {
        Verdict::Declined
    }
}

/// Whether a response's framing fits the request it would answer.
fn fits_of(asked: Asked, resp: &HttpResponse) -> bool {
    let head_with_body = asked.head && resp.body_len > 0;
    let tunnel = asked.connect && (200..300).contains(&resp.status);
    !head_with_body && !tunnel && !asked.http09
}

/// Emits a request with its response or the reason it has none (moved out of its box once,
/// here).
pub(crate) fn emit(
    mut req: Box<HttpRequest>,
    resp: Option<Box<HttpResponse>>,
    reason: Option<ResponseMissing>,
    ctx: &mut PairCtx<'_>,
) {
    match resp {
        Some(r) => {
            ctx.stats.count_paired();
            req.response = Some(r);
            req.response_missing = None;
        }
        None => {
            let reason = reason.unwrap_or(ResponseMissing::Timeout);
            ctx.stats.count_missing(reason);
            req.response = None;
            req.response_missing = Some(reason);
        }
    }
    ctx.out.push(*req);
}

/// The pairing of one connection as the response parser sees it.
pub struct Answer<'a, 'c> {
    /// The connection's pairing.
    pub pairing: &'a mut Pairing,
    /// Where it writes.
    pub ctx: &'a mut PairCtx<'c>,
    /// The client byte from which a response answers a request still to come: the start of
    /// the request in progress, else the end of what the client's stream was parsed to.
    pub ahead_from: Option<u32>,
    /// The time of the packet (or timer tick) being read: when an answer ends, the next
    /// request's wait starts again from it.
    pub now_us: u64,
}

impl Answering for Answer<'_, '_> {
    fn head(&mut self, at: At) -> Option<Asked> {
        let p = &mut *self.pairing;
        p.server_seen();
        let last_head = p.last_head.replace(at.seq);
        if p.switched || p.current {
            return None;
        }
        if p.anchored {
            if p.skip > 0 {
                p.skip -= 1;
                return None;
            }
            let Some(front) = p.queue.front() else {
                // The client's parser may still hold the requests this answers: the bytes
                // after a declined Upgrade / CONNECT, parsed once the verdict is applied.
                let held = p.verdict == Some(Verdict::Declined);
                if held || Pairing::ahead_of_requests(at.ack, self.ahead_from) {
                    // Its request may still come: keep the response (bounded) for it.
                    if p.early.len() < MAX_EARLY && !p.unknown_tail {
                        p.current_early = Some(at);
                        p.current = true;
                        return Some(Asked {
                            guess: true,
                            ..Asked::default()
                        });
                    }
                    p.drop_early(self.ctx);
                    p.go_out_of_step(ResponseMissing::Reordered);
                }
                return None;
            };
            if front.unknown_before {
                p.go_out_of_step(ResponseMissing::Gap);
            } else if front.asked.http09 {
                // Content of an HTTP/0.9 answer that reads as a status line: not a response.
                return None;
            } else if Pairing::causal(front, at) {
                p.current = true;
                return Some(front.asked);
            } else {
                return None;
            }
        }
        // Out of step: only a request sent exactly when the client had received every byte
        // before this response re-anchors, and not on a pipelining connection.
        if p.pipelined {
            return None;
        }
        let i = p.queue.iter().position(|s| {
            s.ack == Some(at.seq) && s.sequential() && !s.asked.http09 && Pairing::causal(s, at)
        })?;
        if i > 0
            && p.queue[i - 1].ack == p.queue[i].ack
            && !p.queue[i].unknown_before
            && p.queue[i - 1].req.is_some()
        {
            return None;
        }
        // On a connection joined mid-way and never in step since, the request before it
        // still waits and no response head was read since it was sent: a response not
        // seen may have been in progress then (one to a request sent before the capture
        // began), so this one may be that request's answer — not for sure this one's (the
        // client pipelined it while the earlier one was unanswered).
        if p.joined
            && i > 0
            && p.queue[i - 1].req.is_some()
            && let Some(sent) = p.queue[i - 1].ack
            && last_head.is_none_or(|h| seq_diff(h, sent) < 0)
        {
            return None;
        }
        let reason = p.desync;
        for _ in 0..i {
            if let Some(slot) = p.queue.pop_front() {
                p.release(slot, Some(reason), None, self.ctx);
            }
        }
        p.anchored = true;
        p.joined = false;
        p.skip = 0;
        p.current = true;
        let front = p.queue.front_mut()?;
        front.unknown_before = false;
        front.hint = None;
        Some(front.asked)
    }

    fn complete(&mut self, response: Box<HttpResponse>) {
        let p = &mut *self.pairing;
        if !p.current {
            return;
        }
        p.current = false;
        if let Some(at) = p.current_early.take() {
            let cost = response.held_bytes();
            if self.ctx.budget.try_take(cost) {
                p.early_held += cost;
                p.early.push_back((at, response));
            } else {
                self.ctx.stats.responses_unmatched += 1;
                p.drop_early(self.ctx);
                p.go_out_of_step(ResponseMissing::OverBudget);
            }
            return;
        }
        if let Some(slot) = p.queue.pop_front() {
            p.release(slot, None, Some(response), self.ctx);
        }
        p.restart_front_wait(self.now_us, self.ctx.limits);
        p.after_front_change();
    }

    fn lost(&mut self, reason: ResponseMissing) {
        let p = &mut *self.pairing;
        if !p.current {
            return;
        }
        p.current = false;
        if p.current_early.take().is_some() {
            // It answered a request still to come: the count cannot go on.
            p.drop_early(self.ctx);
            p.go_out_of_step(reason);
            return;
        }
        if let Some(mut slot) = p.queue.pop_front() {
            slot.hint = None;
            p.release(slot, Some(reason), None, self.ctx);
        }
        p.restart_front_wait(self.now_us, self.ctx.limits);
        p.after_front_change();
    }

    fn desync(&mut self, reason: ResponseMissing) {
        self.pairing.current = false;
        self.pairing.current_early = None;
        self.pairing.drop_early(self.ctx);
        self.pairing.go_out_of_step(reason);
    }

    fn switched(&mut self) {
        let p = &mut *self.pairing;
        p.switched = true;
        // Bytes after the switch are not HTTP: nothing after it can be answered.
        while !p.queue.is_empty() {
            let slot = p.queue.pop_front().expect("not empty");
            p.release(slot, Some(ResponseMissing::Malformed), None, self.ctx);
        }
        // The client's side of the connection left HTTP too.
        p.verdict = Some(Verdict::Switched);
    }

    fn ended(&mut self, reason: ResponseMissing) {
        let p = &mut *self.pairing;
        p.ended = true;
        p.current = false;
        p.current_early = None;
        while let Some(slot) = p.queue.pop_front() {
            p.release(slot, Some(reason), None, self.ctx);
        }
    }

    fn budget(&mut self) -> &mut Budget {
        self.ctx.budget
    }

    fn stats(&mut self) -> &mut EngineStats {
        self.ctx.stats
    }
}

#[cfg(test)]
mod tests;
