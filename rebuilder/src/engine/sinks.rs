//! Where reassembled bytes go: the request parser ([`ParserSink`]), the response parser
//! ([`RespSink`]), either ([`AnySink`]).

use super::*;

/// Feeds the reassembled stream of a request direction into its parser, and the requests it
/// emits into the connection's pairing.
pub(super) struct ParserSink<'a> {
    pub(super) parser: &'a mut Parser,
    pub(super) shared: &'a mut Shared,
    pub(super) out: &'a mut Vec<HttpRequest>,
    pub(super) meta: Meta,
    pub(super) pairing: &'a mut Option<Box<Pairing>>,
    pub(super) cursor: &'a mut Cursor,
    /// The direction's `waiting_late` ([`RequestParts::waiting_late`]).
    pub(super) waiting_late: &'a mut bool,
    /// The stream was seen from its SYN.
    pub(super) in_step: bool,
    /// The server's direction is tracked.
    pub(super) server_known: bool,
    pub(super) now_us: u64,
    pub(super) end: EndKind,
    /// The direction turned out to carry responses: whatever the parser finds is discarded.
    pub(super) discard: bool,
    /// The parser holds bytes for the answer to an Upgrade / CONNECT request that will not
    /// be seen: they are parsed at once.
    pub(super) resume_now: bool,
}

impl<'a> ParserSink<'a> {
    /// The sink of a request direction's stream (`parts`), reaching the end kind `end`.
    pub(super) fn new(
        parts: RequestParts<'a>,
        shared: &'a mut Shared,
        out: &'a mut Vec<HttpRequest>,
        server_known: bool,
        now_us: u64,
        end: EndKind,
    ) -> ParserSink<'a> {
        ParserSink {
            parser: parts.parser,
            shared,
            out,
            meta: parts.meta,
            pairing: parts.pairing,
            cursor: parts.cursor,
            waiting_late: parts.waiting_late,
            in_step: parts.in_step,
            server_known,
            now_us,
            end,
            discard: false,
            resume_now: false,
        }
    }

    pub(super) fn at_boundary(&self) -> bool {
        self.parser.held() == 0
            && matches!(
                self.parser.state(),
                ParserState::Head
                    | ParserState::Start
                    | ParserState::Sync { .. }
                    | ParserState::Held
            )
    }

    /// Runs one parser call and hands what it emitted to pairing; then, while the parser
    /// holds bytes for an answer that will not be seen, parses them.
    pub(super) fn call(
        &mut self,
        at: Option<At>,
        gap: bool,
        f: impl FnOnce(&mut Parser, &mut http::Ctx<'_>),
    ) {
        self.call_once(at, gap, f);
        while std::mem::take(&mut self.resume_now) {
            self.call_once(None, false, |p, ctx| p.resume(true, ctx));
        }
    }

    pub(super) fn call_once(
        &mut self,
        at: Option<At>,
        gap: bool,
        f: impl FnOnce(&mut Parser, &mut http::Ctx<'_>),
    ) {
        let boundary = self.at_boundary();
        let drops = self.shared.stats.total_drops();
        let from_held;
        let restarted;
        {
            let shared = &mut *self.shared;
            let mut ctx = http::Ctx {
                limits: &shared.http_limits,
                budget: &mut shared.budget,
                stats: &mut shared.stats,
                out: &mut shared.scratch,
                from_held: 0,
                restarted: false,
                meta: self.meta,
            };
            f(self.parser, &mut ctx);
            from_held = ctx.from_held;
            restarted = ctx.restarted;
        }
        if self.discard {
            self.shared.scratch.clear();
            return;
        }
        let dropped = self.shared.stats.total_drops() > drops;
        let chunk = at.map(|a| MsgAt {
            seq: a.seq,
            ack: a.ack,
        });
        let cursor = &mut *self.cursor;
        if boundary && let Some(c) = chunk {
            cursor.set_msg_at(c.seq, c.ack, cursor.last_chunk_ack());
        }
        if restarted {
            // The message now read began after the buffered one, maybe in a later packet:
            // still at or after where that one began, but what the client had received when
            // it sent it (the ACK number) is not known. Unknown, it can't be taken as the
            // evidence that re-anchors pairing (a stale one made a request the answer of the
            // request before it).
            let (seq, _, _) = cursor.msg_at();
            cursor.set_msg_at(seq, None, None);
        }
        let emitted = self.shared.scratch.len();
        if emitted == 0 && !dropped && !gap {
            return;
        }
        let unknown = gap || (dropped && emitted == 0);
        if self.pairing.is_none() {
            if emitted == 0 {
                // Nothing to pair yet: the loss is remembered for when something is.
                if unknown {
                    cursor.set_unknown(true);
                }
                return;
            }
            *self.pairing =
                Pairing::create(self.in_step, cursor.take_unknown(), &mut self.shared.budget);
        }
        let shared = &mut *self.shared;
        let mut ctx = PairCtx {
            limits: &shared.pair_limits,
            budget: &mut shared.budget,
            stats: &mut shared.stats,
            out: self.out,
        };
        // The last request of the call is an Upgrade / CONNECT when the parser now holds
        // what follows for its answer.
        let holding = self.parser.awaiting_answer();
        let Some(pairing) = self.pairing.as_deref_mut() else {
            // The budget cannot hold the connection's pairing: its requests go out without
            // their responses, whose count is unknown from here on.
            cursor.set_unknown(true);
            for req in shared.scratch.drain(..) {
                pairing::emit(req, None, Some(ResponseMissing::OverBudget), &mut ctx);
            }
            self.resume_now |= holding;
            return;
        };
        if self.server_known {
            pairing.server_seen();
        }
        if unknown {
            pairing.unknown_requests();
        }
        let first = cursor.msg_at();
        for (i, req) in shared.scratch.drain(..).enumerate() {
            // Requests after the first in one chunk were sent in one burst with it; those
            // parsed from bytes held for an answer came before the chunk (past the hold cap,
            // its bytes resume them), where the message in progress began.
            let from = match chunk {
                Some(c) if i > 0 && i >= from_held => (c.seq, c.ack, c.ack),
                _ => first,
            };
            if dropped {
                // A message was dropped somewhere in this call: requests may be missing
                // before any of these.
                pairing.unknown_requests();
            }
            let upgrade = holding && i + 1 == emitted;
            let told = pairing.push(req, from.0, from.1, from.2, self.now_us, upgrade, &mut ctx);
            if upgrade && (!told || !self.server_known) {
                // No answer will be seen here (the server's direction is not mirrored to this
                // engine, or the request went out without waiting): keep parsing.
                self.resume_now = true;
            }
        }
        if pairing.armed_us != 0 && pairing.may_drop_back(pairing.armed_us) {
            // The next deadline may fall below the one the connection's waiting entry holds
            // (a request queued now with an earlier one, a front given up over the cap): the
            // engine checks it after each packet until it lists the entry again.
            *self.waiting_late = true;
        }
        if emitted > 0
            && let Some(c) = chunk
        {
            // A message still in progress began in this chunk.
            cursor.set_msg_at(c.seq, c.ack, c.ack);
        }
    }
}

impl Sink for ParserSink<'_> {
    fn data(&mut self, at: At, bytes: &[u8]) {
        self.now_us = self.now_us.max(at.ts_us);
        self.call(Some(at), false, |p, ctx| p.data(at.ts_us, bytes, ctx));
        self.cursor.parsed(at.advance(bytes.len()).seq, at.ack);
    }
    fn gap(&mut self, len: u64) {
        self.shared.stats.count_gap(len);
        // Bytes held for an answer came before the lost ones: parsed in a call of their own,
        // so that the requests among them are queued before pairing learns of the gap.
        self.call(None, false, |p, ctx| p.resume_all(ctx));
        self.call(None, true, |p, ctx| p.gap(len, ctx));
    }
    fn end(&mut self) {
        let evicting = self.end == EndKind::Evicted;
        // The server already answered the request in progress: it is not lost with the end.
        let answered = self.pairing.as_deref().is_some_and(Pairing::answered_ahead);
        self.call(None, false, |p, ctx| {
            if evicting {
                p.evict(ctx)
            } else if answered {
                p.end_answered(ctx)
            } else {
                p.end(ctx)
            }
        });
    }
    fn budget(&mut self) -> &mut Budget {
        &mut self.shared.budget
    }
    fn different_overlap(&mut self) {
        self.shared.stats.overlap_different_data += 1;
    }
}

/// Feeds the reassembled stream of a response direction into its response parser, which
/// tells the connection's pairing.
pub(super) struct RespSink<'a> {
    pub(super) parser: &'a mut ResponseParser,
    pub(super) shared: &'a mut Shared,
    pub(super) out: &'a mut Vec<HttpRequest>,
    pub(super) pairing: &'a mut Pairing,
    /// Where the client's stream stands ([`Answer::ahead_from`]).
    pub(super) ahead_from: Option<u32>,
    pub(super) end: EndKind,
    /// The time of the packet (or timer tick) that drives it ([`Answer::now_us`]).
    pub(super) now_us: u64,
}

impl<'a> RespSink<'a> {
    /// The sink of a server stream: its parser, its connection's pairing.
    pub(super) fn new(
        parser: &'a mut ResponseParser,
        pairing: &'a mut Pairing,
        shared: &'a mut Shared,
        out: &'a mut Vec<HttpRequest>,
        ahead_from: Option<u32>,
        end: EndKind,
        now_us: u64,
    ) -> RespSink<'a> {
        RespSink {
            parser,
            shared,
            out,
            pairing,
            ahead_from,
            end,
            now_us,
        }
    }

    pub(super) fn run(
        &mut self,
        f: impl FnOnce(&mut ResponseParser, &mut http::response::RespCtx<'_>),
    ) {
        let shared = &mut *self.shared;
        let mut pctx = PairCtx {
            limits: &shared.pair_limits,
            budget: &mut shared.budget,
            stats: &mut shared.stats,
            out: self.out,
        };
        let mut answer = Answer {
            pairing: self.pairing,
            ctx: &mut pctx,
            ahead_from: self.ahead_from,
            now_us: self.now_us,
        };
        let mut ctx = http::response::RespCtx {
            limits: &shared.resp_limits,
            answering: &mut answer,
        };
        f(self.parser, &mut ctx);
    }
}

impl Sink for RespSink<'_> {
    fn data(&mut self, at: At, bytes: &[u8]) {
        self.run(|p, ctx| p.data(at, bytes, ctx));
    }
    fn gap(&mut self, len: u64) {
        self.shared.stats.count_gap(len);
        self.run(|p, ctx| p.gap(len, ctx));
    }
    fn end(&mut self) {
        let end = self.end;
        self.run(|p, ctx| p.end(end == EndKind::Closed, end.missing(), ctx));
    }
    fn budget(&mut self) -> &mut Budget {
        &mut self.shared.budget
    }
    fn different_overlap(&mut self) {
        self.shared.stats.overlap_different_data += 1;
    }
}

/// Either sink, by the direction's role.
pub(super) enum AnySink<'a> {
    Requests(ParserSink<'a>),
    Responses(RespSink<'a>),
    /// A response direction whose connection is not tracked: nothing is parsed.
    Nothing(&'a mut Budget),
}

impl Sink for AnySink<'_> {
    fn data(&mut self, at: At, bytes: &[u8]) {
        match self {
            AnySink::Requests(s) => s.data(at, bytes),
            AnySink::Responses(s) => s.data(at, bytes),
            AnySink::Nothing(_) => {}
        }
    }
    fn gap(&mut self, len: u64) {
        match self {
            AnySink::Requests(s) => s.gap(len),
            AnySink::Responses(s) => s.gap(len),
            AnySink::Nothing(_) => {}
        }
    }
    fn end(&mut self) {
        match self {
            AnySink::Requests(s) => s.end(),
            AnySink::Responses(s) => s.end(),
            AnySink::Nothing(_) => {}
        }
    }
    fn budget(&mut self) -> &mut Budget {
        match self {
            AnySink::Requests(s) => s.budget(),
            AnySink::Responses(s) => s.budget(),
            AnySink::Nothing(b) => b,
        }
    }
    fn different_overlap(&mut self) {
        match self {
            AnySink::Requests(s) => s.different_overlap(),
            AnySink::Responses(s) => s.different_overlap(),
            AnySink::Nothing(_) => {}
        }
    }
}
