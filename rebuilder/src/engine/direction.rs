//! What the engine keeps per direction of a connection: its role, where its stream stands for
//! pairing ([`Cursor`]), the receive window its peer advertised ([`Window`]).

use super::*;

/// What a direction is known to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Not known yet: parsed, looking for requests.
    Unknown,
    /// Requests were parsed from it.
    Requests,
    /// Its peer carries the requests, or it sent a SYN+ACK: its responses are parsed while
    /// its peer is tracked (else it is ignored cheaply).
    Responses,
}

/// Where the client message in progress began: a sequence number at or before its first
/// byte, and the ACK number of the packet that carried it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct MsgAt {
    pub(super) seq: u32,
    pub(super) ack: Option<u32>,
}

/// Where a request direction's stream stands, as pairing needs it. Kept in the direction
/// (not in its [`Pairing`]) so that a connection holds a pairing only once it needs one: a
/// flood of connections that never complete a request allocates none.
/// Packed: 24 bytes in every direction (the `Option`s would take 40).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cursor {
    /// Where the client message in progress began: a sequence number at or before its first
    /// byte, the ACK number of its packet, the ACK number of the client chunk before it (see
    /// `pairing::Slot::prev_ack`).
    pub(super) msg_seq: u32,
    pub(super) msg_ack: u32,
    pub(super) msg_prev_ack: u32,
    /// ACK number of the last client chunk parsed.
    pub(super) last_chunk_ack: u32,
    /// The client's stream has been parsed up to this sequence number (exclusive).
    pub(super) next: u32,
    /// Which of the numbers above are known (`HAS_*`), and [`Cursor::UNKNOWN`]: client bytes
    /// that may have held requests were lost while the connection had no pairing (or its
    /// pairing did not fit the budget), so the responses' count is unknown.
    pub(super) flags: u8,
}

impl Cursor {
    pub(super) const HAS_MSG_ACK: u8 = 1;
    pub(super) const HAS_MSG_PREV_ACK: u8 = 2;
    pub(super) const HAS_LAST_CHUNK_ACK: u8 = 4;
    pub(super) const HAS_NEXT: u8 = 8;
    pub(super) const UNKNOWN: u8 = 16;

    pub(super) fn get(&self, flag: u8, v: u32) -> Option<u32> {
        (self.flags & flag != 0).then_some(v)
    }

    pub(super) fn set(&mut self, flag: u8, v: Option<u32>) -> u32 {
        if v.is_some() {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
        v.unwrap_or(0)
    }

    pub(super) fn msg_at(&self) -> (u32, Option<u32>, Option<u32>) {
        (
            self.msg_seq,
            self.get(Self::HAS_MSG_ACK, self.msg_ack),
            self.get(Self::HAS_MSG_PREV_ACK, self.msg_prev_ack),
        )
    }

    pub(super) fn set_msg_at(&mut self, seq: u32, ack: Option<u32>, prev_ack: Option<u32>) {
        self.msg_seq = seq;
        self.msg_ack = self.set(Self::HAS_MSG_ACK, ack);
        self.msg_prev_ack = self.set(Self::HAS_MSG_PREV_ACK, prev_ack);
    }

    pub(super) fn last_chunk_ack(&self) -> Option<u32> {
        self.get(Self::HAS_LAST_CHUNK_ACK, self.last_chunk_ack)
    }

    /// A client chunk ending before `next`, carried by a packet acknowledging `ack`, was
    /// parsed.
    pub(super) fn parsed(&mut self, next: u32, ack: Option<u32>) {
        self.next = self.set(Self::HAS_NEXT, Some(next));
        self.last_chunk_ack = self.set(Self::HAS_LAST_CHUNK_ACK, ack);
    }

    pub(super) fn next(&self) -> Option<u32> {
        self.get(Self::HAS_NEXT, self.next)
    }

    pub(super) fn unknown(&self) -> bool {
        self.flags & Self::UNKNOWN != 0
    }

    pub(super) fn set_unknown(&mut self, unknown: bool) {
        if unknown {
            self.flags |= Self::UNKNOWN;
        } else {
            self.flags &= !Self::UNKNOWN;
        }
    }

    /// Whether client bytes were lost before a pairing existed (and forgets it).
    pub(super) fn take_unknown(&mut self) -> bool {
        let u = self.unknown();
        self.set_unknown(false);
        u
    }
}

/// How far a direction may send: the receive window its peer (the receiver) advertised
/// (issue 14 item 5). Kept in the sending direction, updated from the receiver's segments
/// where they are processed anyway (no extra table access per packet).
///
/// Policy: a segment that starts past the right edge (the highest `ack + window << scale`
/// the receiver advertised) by more than the largest window the receiver could advertise
/// (`65535 << scale`: the mirror may show data before the window update that made room for
/// it) is counted `out_of_window` and ignored: the receiver would have dropped it, and
/// buffering it would make the stream skip to it. Scaling is RFC 7323's: the SYNs' window
/// scale options, in force only when both carried one, never on SYNs themselves. A SYN not
/// seen leaves the scale unknown: the edges are taken unscaled and the slack the largest the
/// known options allow (`65535 << 14` without the receiver's SYN); nothing is checked before
/// an edge is known. Checked for the client's side (request and undecided directions).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Window {
    pub(super) edge: u32,
    /// The receiver's SYN window scale option (with `THEIRS_WSCALE`).
    pub(super) theirs: u8,
    pub(super) flags: u8,
}

impl Window {
    pub(super) const HAS_EDGE: u8 = 1;
    /// This direction's SYN was seen ...
    pub(super) const OWN_SYN: u8 = 2;
    /// ... with a window scale option.
    pub(super) const OWN_WSCALE: u8 = 4;
    /// The receiver's SYN(+ACK) was seen ...
    pub(super) const RECEIVER_SYN: u8 = 8;
    /// ... with a window scale option (`theirs`).
    pub(super) const THEIRS_WSCALE: u8 = 16;

    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub(super) fn put(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// This direction's SYN (window scale option or none).
    pub(super) fn own_syn(&mut self, wscale: Option<u8>) {
        self.put(Self::OWN_SYN, true);
        self.put(Self::OWN_WSCALE, wscale.is_some());
    }

    /// The scale of the receiver's windows in force (RFC 7323: both SYNs carried one).
    pub(super) fn shift(&self) -> u8 {
        if self.has(Self::OWN_WSCALE) && self.has(Self::THEIRS_WSCALE) {
            self.theirs
        } else {
            0
        }
    }

    /// The scale bounding any window the receiver can advertise, as far as is known.
    pub(super) fn slack_shift(&self) -> u8 {
        if !self.has(Self::RECEIVER_SYN) {
            14
        } else if !self.has(Self::THEIRS_WSCALE)
            || (self.has(Self::OWN_SYN) && !self.has(Self::OWN_WSCALE))
        {
            0
        } else {
            self.theirs
        }
    }

    /// A segment of the receiver: its SYN's option, and its ACK's right edge.
    pub(super) fn advertised(&mut self, seg: &TcpSegment<'_>) {
        if seg.syn {
            self.put(Self::RECEIVER_SYN, true);
            self.put(Self::THEIRS_WSCALE, seg.wscale.is_some());
            self.theirs = seg.wscale.map_or(0, |s| s.min(14));
        }
        if !seg.ack {
            return;
        }
        let shift = if seg.syn { 0 } else { self.shift() };
        let edge = seg.ack_no.wrapping_add(u32::from(seg.window) << shift);
        // A SYN+ACK starts a window (a new connection on the same ports too).
        if seg.syn || !self.has(Self::HAS_EDGE) || reassembly::seq_diff(edge, self.edge) > 0 {
            self.edge = edge;
            self.put(Self::HAS_EDGE, true);
        }
    }

    /// Whether a segment starting at `start` is beyond what the receiver allows.
    pub(super) fn refuses(&self, start: u32) -> bool {
        self.has(Self::HAS_EDGE)
            && reassembly::seq_diff(start, self.edge) > 65_535i64 << self.slack_shift()
    }
}

/// A deadline rounded down to 2^20 µs (about 1 s), plus 1: 4 bytes in the direction, where a
/// `u64` would make every entry 16 bytes longer; 0: none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WaitingMark(u32);

impl WaitingMark {
    pub(super) const NONE: WaitingMark = WaitingMark(0);

    /// The mark of `deadline_us` (rounded down: never later than it).
    pub(super) fn of(deadline_us: u64) -> WaitingMark {
        WaitingMark((deadline_us >> 20).min(u64::from(u32::MAX) - 1) as u32 + 1)
    }

    pub(super) fn is_some(self) -> bool {
        self.0 > 0
    }

    /// Whether the deadline marked may have passed at `now_us` (always, when none is).
    pub(super) fn may_have_passed(self, now_us: u64) -> bool {
        u64::from(self.0.saturating_sub(1)) << 20 <= now_us
    }
}

/// State of one direction (role first: it decides whether anything else is read).
///
/// Invariants:
/// - a `Responses` direction holds no parser state: its stream carries responses, parsed (by
///   the response parser its peer's pairing holds) while its peer is tracked; only a request
///   direction holds `pairing`;
/// - `waiting.is_some()` ⇔ an entry of `Engine::waiting` names this direction (with its
///   `gen`) that `Engine::expire_waiting` acts on: its deadline is its pairing's `armed_us`
///   (or that is 0); entries left behind by a listing again, earlier, are skipped.
#[derive(Debug)]
#[repr(C)]
pub(super) struct Direction {
    pub(super) role: Role,
    /// Listed in `Engine::holes` (checked by the timer).
    pub(super) in_holes: bool,
    /// Its pairing's next deadline may fall below the one its waiting entry holds
    /// ([`Pairing::may_drop_back`]): that is later than its front request's own (the
    /// answer's head began in time, [`Pairing::next_deadline`]; it drops back when the head
    /// ends or is lost), or a request behind the front has an earlier one (next once the
    /// front is answered). The engine checks the deadline again after each packet of the
    /// connection while this is set (else the entry is only read when it may have passed).
    pub(super) waiting_late: bool,
    /// The IP source of the VXLAN datagram that created the direction (the mirror's source).
    pub(super) mirror: Option<IpAddr>,
    /// Identifies this direction among those that used its slot.
    pub(super) generation: u32,
    /// The row of its source in the engine's source table, once looked up
    /// ([`SourceTable::set_cached`]; 0: not yet).
    pub(super) source_row: u32,
    /// Listed in `Engine::waiting` (requests waiting for responses): [`WaitingMark`] of the
    /// deadline that entry holds, which is at or before its pairing's next one (when that
    /// may drop back, `waiting_late` has the entry listed again, earlier, as soon as it
    /// does); 0: not listed.
    /// Read on the server's packets, in the entry the look-ahead loaded, so that the
    /// pairing's queue is read only when a deadline may have passed.
    pub(super) waiting: WaitingMark,
    pub(super) stream: Stream,
    pub(super) parser: Parser,
    /// Of a request direction: its connection's pairing (the requests waiting for their
    /// responses, and the parser of the server's stream), from the first request complete
    /// or the server's first packet on, charged to the budget.
    pub(super) pairing: Option<Box<Pairing>>,
    /// Of a request direction: where its stream stands, for pairing.
    pub(super) cursor: Cursor,
    /// How far it may send (the receive window its peer advertised).
    pub(super) window: Window,
}

impl Direction {
    pub(super) fn new(role: Role, mirror: Option<IpAddr>, generation: u32) -> Direction {
        Direction {
            role,
            mirror,
            stream: Stream::new(),
            parser: Parser::new(),
            in_holes: false,
            waiting_late: false,
            waiting: WaitingMark::NONE,
            generation,
            source_row: 0,
            pairing: None,
            cursor: Cursor::default(),
            window: Window::default(),
        }
    }

    /// Whether it holds budget that evicting it would give back: bytes out of order, a
    /// partial message, requests waiting or a response in progress (not a connection's bare
    /// pairing: every keep-alive connection has one).
    pub(super) fn holds_reclaimable(&self) -> bool {
        self.stream.buffered_bytes() > 0
            || self.parser.held() > 0
            || self
                .pairing
                .as_deref()
                .is_some_and(Pairing::holds_more_than_itself)
    }

    /// Its stream (key `key`), and apart from it what a request parser's sink borrows.
    pub(super) fn for_parsing(&mut self, key: &FlowKey) -> (&mut Stream, RequestParts<'_>) {
        let in_step = self.stream.saw_syn();
        let meta = self.meta(key);
        (
            &mut self.stream,
            RequestParts {
                meta,
                parser: &mut self.parser,
                pairing: &mut self.pairing,
                cursor: &mut self.cursor,
                waiting_late: &mut self.waiting_late,
                in_step,
            },
        )
    }

    /// Of a request direction: the client byte from which the server's answers are not to
    /// requests parsed and complete — the start of the request in progress (a server may
    /// answer one before its body comes: 401, 405, 413, a 417 to `Expect: 100-continue`),
    /// else the end of what was parsed. `None`: nothing parsed yet.
    pub(super) fn answers_ahead_from(&self) -> Option<u32> {
        // Not while it holds what follows an Upgrade / CONNECT request (pairing decides
        // those bytes by the verdict).
        if self.parser.in_message() && self.parser.state() != ParserState::Held {
            Some(self.cursor.msg_seq)
        } else {
            self.cursor.next()
        }
    }

    /// Who the stream of this direction (key `key`) belongs to.
    #[inline]
    pub(super) fn meta(&self, key: &FlowKey) -> Meta {
        Meta {
            key: *key,
            mirror_source: self.mirror,
        }
    }

    /// The source key of this direction (key `key`): what its requests are attributed to.
    #[inline]
    pub(super) fn source(&self, key: &FlowKey) -> SourceKey {
        SourceKey {
            gwlbe: key.gwlbe(),
            sender: self.mirror,
            vni: Some(key.vni()),
        }
    }

    /// Whether this direction surely carries requests, so that its peer can be ignored:
    /// a request parsed from a stream seen from its SYN, or two requests. (One request found
    /// by resync in a stream joined mid-way could be text inside a response body; ignoring
    /// the real client direction on that evidence would lose all its requests.)
    pub(super) fn is_surely_requests(&self) -> bool {
        let n = self.parser.emitted();
        n >= 2 || (n >= 1 && self.stream.saw_syn())
    }
}

/// What a request direction lends its parser's sink ([`Direction::for_parsing`]).
pub(super) struct RequestParts<'a> {
    pub(super) meta: Meta,
    pub(super) parser: &'a mut Parser,
    pub(super) pairing: &'a mut Option<Box<Pairing>>,
    pub(super) cursor: &'a mut Cursor,
    /// The direction's `waiting_late`: set when, after requests were queued, the pairing's
    /// next deadline may fall below the one its waiting entry holds
    /// ([`Pairing::may_drop_back`]).
    pub(super) waiting_late: &'a mut bool,
    /// The stream was seen from its SYN.
    pub(super) in_step: bool,
}
