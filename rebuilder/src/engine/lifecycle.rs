//! How directions end: a closed or expired direction finalized (its parser told, its
//! connection's pairing flushed), the timer's work (holes, idle flows, requests waiting for
//! their responses) and the end of input.

use super::*;

/// Directions a reclaim pass looks at, at most (from the least recently active).
const RECLAIM_LOOK: usize = 1 << 16;

impl Engine {
    /// Gives up every request waiting on a request direction.
    pub(super) fn flush_pairing(
        &mut self,
        idx: u32,
        reason: ResponseMissing,
        out: &mut Vec<HttpRequest>,
    ) {
        let Some(mut pairing) = self.table.entry_mut(idx).value.pairing.take() else {
            return;
        };
        let mut ctx = self.shared.pair_ctx(out);
        pairing.flush(reason, &mut ctx);
        self.table.entry_mut(idx).value.pairing = Some(pairing);
    }

    /// Closes one direction's stream at a RST: delivers what is buffered, ends it (aborted).
    pub(super) fn close_direction(&mut self, idx: u32, ts_us: u64, out: &mut Vec<HttpRequest>) {
        self.drive(idx, ts_us, EndKind::Reset, out, |stream, _, sink| {
            stream.close(sink)
        });
        self.table.set_lifecycle(idx, Lifecycle::Closed, ts_us);
    }

    /// Ends a removed direction: buffered bytes are delivered (with gaps), the parser ends,
    /// requests still waiting go out without their response (counted for its source).
    pub(super) fn finalize(
        &mut self,
        removed: Removed<Direction>,
        end: EndKind,
        now_us: u64,
        out: &mut Vec<HttpRequest>,
    ) {
        let src = removed.value.source(&removed.key);
        self.for_source(src, |e| e.finalize_direction(removed, end, now_us, out));
    }

    pub(super) fn finalize_direction(
        &mut self,
        removed: Removed<Direction>,
        end: EndKind,
        now_us: u64,
        out: &mut Vec<HttpRequest>,
    ) {
        let Removed {
            key,
            mut value,
            was_open,
            stamp_us,
        } = removed;
        // An expired direction ends when it expired, not when the timer noticed: deadlines of
        // its connection that passed before then are kept first, as a packet would have kept
        // them, and what its end parses is queued at that time. Whether a request is
        // `timeout` or `server_not_seen` rather than `connection_closed` does not depend on
        // how late the timer ran.
        let expired = end == EndKind::Expired;
        let mut now_us = now_us;
        if expired {
            let wait = if was_open {
                self.config.idle_timeout_us
            } else {
                self.config.closed_linger_us
            };
            now_us = now_us.min(stamp_us.saturating_add(wait));
        }
        if value.role == Role::Responses {
            // An open server stream lost to expiry or eviction (no FIN, no RST): the
            // connection may go on, and its next answers come on a new server direction.
            let lost_open = value.stream.state() != StreamState::Closed
                && matches!(end, EndKind::Expired | EndKind::Evicted);
            // Its connection's requests (if tracked) get the end of the server's stream.
            let client = self
                .table
                .find(&key.reverse())
                .filter(|&c| self.table.entry(c).value.role != Role::Responses);
            if expired && let Some(c) = client {
                self.expire_due(c, now_us, out);
            }
            let mut pairing = client.and_then(|c| self.table.entry_mut(c).value.pairing.take());
            let ahead_from = client.and_then(|c| self.table.entry(c).value.answers_ahead_from());
            let pairing_ref = pairing.as_deref_mut();
            self.end_server_into(&mut value.stream, pairing_ref, ahead_from, end, now_us, out);
            if lost_open && let Some(p) = pairing.as_deref_mut() {
                // The requests waiting went out with the end's reason; those to come wait.
                p.server_restarts();
            }
            if let Some(c) = client {
                self.table.entry_mut(c).value.pairing = pairing;
                self.apply_verdict(c, now_us, out);
            }
            return;
        }
        if expired && let Some(pairing) = value.pairing.as_deref_mut() {
            let mut ctx = self.shared.pair_ctx(out);
            pairing.expire(now_us, &mut ctx);
        }
        let server_known = self.table.find(&key.reverse()).is_some();
        let (stream, parts) = value.for_parsing(&key);
        let mut sink = ParserSink::new(parts, &mut self.shared, out, server_known, now_us, end);
        // Ends the parser too (`Sink::end`), exactly once per stream.
        stream.close(&mut sink);
        if end == EndKind::Input {
            // The server's stream ends first, into this pairing: what it holds behind a hole
            // is its last responses (finalized after this direction, it would find no
            // pairing and its bytes would be read by nothing).
            self.end_server_stream(&key, &mut value, end, now_us, out);
        }
        if let Some(mut pairing) = value.pairing.take() {
            let mut ctx = self.shared.pair_ctx(out);
            pairing.flush(end.missing(), &mut ctx);
            pairing.free(ctx.budget);
        }
    }

    /// Removes the server direction of `client` (a request direction just removed, keyed
    /// `client_key`), if tracked, and ends its stream into `client`'s pairing: buffered bytes
    /// are delivered (holes skipped) and its response parser ends (`end`).
    fn end_server_stream(
        &mut self,
        client_key: &FlowKey,
        client: &mut Direction,
        end: EndKind,
        now_us: u64,
        out: &mut Vec<HttpRequest>,
    ) {
        let Some(s) = self
            .table
            .find(&client_key.reverse())
            .filter(|&s| self.table.entry(s).value.role == Role::Responses)
        else {
            return;
        };
        let mut server = self.table.remove(s).value;
        let ahead_from = client.answers_ahead_from();
        let pairing = client.pairing.as_deref_mut();
        self.end_server_into(&mut server.stream, pairing, ahead_from, end, now_us, out);
    }

    /// Closes a server direction's `stream` (`end`) into its connection's `pairing`, whose
    /// response parser reads what it delivers (holes skipped; `ahead_from`: see
    /// `Direction::answers_ahead_from`), or into nothing when the connection's requests are
    /// not tracked.
    fn end_server_into(
        &mut self,
        stream: &mut Stream,
        pairing: Option<&mut Pairing>,
        ahead_from: Option<u32>,
        end: EndKind,
        now_us: u64,
        out: &mut Vec<HttpRequest>,
    ) {
        match pairing {
            Some(pairing) => {
                let mut parser = take_resp(pairing, stream);
                let shared = &mut self.shared;
                let mut sink =
                    RespSink::new(&mut parser, pairing, shared, out, ahead_from, end, now_us);
                stream.close(&mut sink);
            }
            None => stream.close(&mut AnySink::Nothing(&mut self.shared.budget)),
        }
    }

    /// Idle timeouts, gap timeouts, response waits; call every ~100 ms with the current time
    /// (same clock as the packet timestamps). Never blocks long: work is proportional to what
    /// expires.
    pub fn on_timer(&mut self, now_us: u64, out: &mut Vec<HttpRequest>) {
        while let Some(removed) = self.table.pop_expired(
            now_us,
            self.config.idle_timeout_us,
            self.config.closed_linger_us,
        ) {
            self.shared.stats.flows_expired += 1;
            self.finalize(removed, EndKind::Expired, now_us, out);
        }
        let holes = std::mem::take(&mut self.holes);
        for idx in holes {
            let Some(entry) = self.table.get_mut(idx) else {
                continue;
            };
            if !entry.value.in_holes {
                continue;
            }
            let src = entry.value.source(&entry.key);
            self.shared.stats.sources.set(src);
            self.drive(idx, now_us, EndKind::Closed, out, |stream, limits, sink| {
                stream.on_timer(now_us, limits, sink)
            });
            let dir = &mut self.table.entry_mut(idx).value;
            let closed = dir.stream.state() == StreamState::Closed
                && (dir.role == Role::Responses || ignored_state(&dir.parser).is_none());
            if dir.role == Role::Unknown && dir.is_surely_requests() {
                dir.role = Role::Requests;
                self.demote_peer(idx);
            }
            let dir = &mut self.table.entry_mut(idx).value;
            if dir.stream.has_hole() {
                self.holes.push(idx);
            } else {
                dir.in_holes = false;
            }
            if closed {
                self.table.set_lifecycle(idx, Lifecycle::Closed, now_us);
            }
        }
        // A reused slot may be listed twice.
        self.holes.sort_unstable();
        self.holes.dedup();
        self.expire_waiting(now_us, out);
    }

    /// Gives budget back under memory pressure: directions that hold buffered bytes and have
    /// had no packet for `reclaim_idle_us` (nor their peer) are evicted, the least recently
    /// active first, until the budget is at most 3/4 used. Called before a packet when the
    /// budget is more than 7/8 used. The bytes an attacker's unfinished requests hold are
    /// idle by nature; the traffic that moves keeps its place (suricata's flow engine likewise
    /// enters an "emergency mode" with shorter timeouts when its memcap is reached:
    /// `flow.emergency-recovery` and `flow-timeouts.*.emergency-*` in suricata.yaml). A pass that
    /// cannot get down to 3/4 (every holder active) is not tried again before half the idle
    /// time has passed, so that a busy budget is not walked on every packet.
    #[cold]
    #[inline(never)]
    pub(super) fn reclaim(&mut self, now_us: u64, out: &mut Vec<HttpRequest>) {
        let limit = self.shared.budget.limit;
        let target = limit - limit / 4;
        let idle_us = self.config.reclaim_idle_us;
        let mut victims = std::mem::take(&mut self.reclaim_victims);
        victims.clear();
        self.table.idle_open(
            now_us,
            idle_us,
            RECLAIM_LOOK,
            |e| e.value.holds_reclaimable(),
            &mut victims,
        );
        for &idx in &victims {
            if self.shared.budget.used <= target {
                break;
            }
            // Ending one direction may close another (its peer's verdict): only open ones.
            let e = self.table.entry(idx);
            if e.lifecycle() != Lifecycle::Open || !e.value.holds_reclaimable() {
                continue;
            }
            let removed = self.table.remove(idx);
            self.shared.stats.flows_reclaimed += 1;
            self.finalize(removed, EndKind::Evicted, now_us, out);
        }
        if self.shared.budget.used > target {
            self.reclaim_after_us = now_us.saturating_add((idle_us / 2).max(1_000));
        }
        self.reclaim_victims = victims;
    }

    /// Gives up the requests whose response wait is over.
    pub(super) fn expire_waiting(&mut self, now_us: u64, out: &mut Vec<HttpRequest>) {
        while let Some(&Reverse((deadline, idx, generation))) = self.waiting.peek() {
            if deadline > now_us {
                break;
            }
            self.waiting.pop();
            let Some(entry) = self.table.get_mut(idx) else {
                continue;
            };
            let dir = &mut entry.value;
            if dir.generation != generation || !dir.waiting.is_some() {
                continue;
            }
            if dir
                .pairing
                .as_ref()
                .is_some_and(|p| p.armed_us != 0 && p.armed_us != deadline)
            {
                // Left behind when the direction was listed again, earlier.
                continue;
            }
            dir.waiting = WaitingMark::NONE;
            dir.waiting_late = false;
            if let Some(p) = dir.pairing.as_deref_mut() {
                p.armed_us = 0;
            }
            let src = dir.source(&entry.key);
            self.shared.stats.sources.set(src);
            let dir = &mut self.table.entry_mut(idx).value;
            if let Some(mut pairing) = dir.pairing.take() {
                let mut ctx = self.shared.pair_ctx(out);
                pairing.expire(now_us, &mut ctx);
                self.table.entry_mut(idx).value.pairing = Some(pairing);
            }
            self.note_waiting(idx);
            self.apply_verdict(idx, now_us, out);
        }
    }

    /// Flush everything at end of input (replay EOF / shutdown): holes are skipped, what is
    /// buffered is delivered, every stream ends, requests still waiting go out without their
    /// response (`input_ended`). The table is empty afterwards.
    pub fn finish(&mut self, out: &mut Vec<HttpRequest>) {
        while let Some(removed) = self.table.pop_any() {
            self.finalize(removed, EndKind::Input, u64::MAX, out);
        }
        self.holes.clear();
        self.waiting.clear();
    }
}
