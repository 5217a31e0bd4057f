//! TCP stream reassembly for one direction of a flow.
//!
//! Policies (documented once, here):
//! - **Sequence space**: 32-bit with wraparound; "before/after" is the sign of the wrapping
//!   difference (RFC 793 / 1982 serial arithmetic), so a stream may cross 2^32 freely.
//! - **Start**: a SYN fixes the stream start at ISN+1. A stream joined without a SYN starts at
//!   the first segment seen with payload; bytes before it are treated as old.
//! - **Duplicates**: bytes before `next_seq`, or already buffered, are never delivered twice
//!   (retransmissions, the same packet mirrored twice). A segment adding no new byte is a
//!   duplicate.
//! - **Overlaps: first data wins.** Bytes already delivered or buffered are kept; a later
//!   segment only fills the ranges nobody covered yet. (An attacker cannot rewrite bytes the
//!   analyzer sees by sending a conflicting retransmission after the original.) A segment
//!   whose bytes differ from buffered bytes at the same sequence numbers is reported to the
//!   sink (`different_overlap`, suricata's "overlap with different data"); bytes already
//!   delivered are not kept, so a conflicting copy of them is only a duplicate.
//! - **Holes acknowledged by the receiver** (`acked`) are skipped after a short grace instead
//!   of the gap timeout: acknowledged bytes are never retransmitted.
//! - **Truncated segments** (PacketLength): the missing tail is a known-lost range, reported
//!   as a gap as soon as the stream reaches it.
//! - **Holes**: out-of-order bytes are buffered within per-direction caps (bytes, pieces) and
//!   the global [`Budget`]. A hole is skipped — reported to the sink as a gap — when
//!   `gap_skip_bytes` are buffered past it, when it has been open `gap_timeout_us` (or
//!   `gap_timeout_after_fin_us` once the FIN is known), when buffering one more segment would
//!   exceed a per-direction cap, or when the stream is closed (RST, idle, eviction, end of
//!   input). A segment that would exceed the global budget is dropped instead
//!   ([`Pushed::OverBudget`]); its bytes become a hole.
//! - **End**: the sink's `end` is called exactly once, when the stream reaches its FIN or is
//!   closed.

/// Where delivered bytes come from: the capture time of the packet that carried them, the
/// sequence number of their first byte and that packet's acknowledgment number (what the
/// sender had received from its peer; `None` without the ACK flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// Capture time.
    pub ts_us: u64,
    /// Sequence number of the first byte.
    pub seq: u32,
    /// ACK number of the packet.
    pub ack: Option<u32>,
}

impl At {
    /// The position `n` bytes further in the same packet.
    pub fn advance(self, n: usize) -> At {
        At {
            seq: self.seq.wrapping_add(n as u32),
            ..self
        }
    }
}

/// Receives the reassembled stream, in order.
pub trait Sink {
    /// Contiguous bytes; `at` says where they come from.
    fn data(&mut self, at: At, bytes: &[u8]);
    /// `len` bytes of the stream are lost.
    fn gap(&mut self, len: u64);
    /// The stream ended (FIN reached, or closed).
    fn end(&mut self);
    /// The engine's memory budget (out-of-order bytes are charged to it).
    fn budget(&mut self) -> &mut Budget;
    /// A segment carried bytes that differ from the bytes buffered at the same sequence
    /// numbers (suricata's "overlap with different data"); first data wins.
    fn different_overlap(&mut self) {}
}

/// Caps of one direction (copied from the engine configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Out-of-order bytes buffered per direction.
    pub max_ooo_bytes: usize,
    /// Out-of-order pieces buffered per direction.
    pub max_ooo_segments: usize,
    /// Skip a hole once this many bytes are buffered past it.
    pub gap_skip_bytes: usize,
    /// Skip a hole once it has been open this long.
    pub gap_timeout_us: u64,
    /// ... or this long after the FIN was seen.
    pub gap_timeout_after_fin_us: u64,
    /// ... or this long after the receiver acknowledged bytes past it.
    pub acked_hole_grace_us: u64,
}

/// Global memory budget shared by every stream and parser of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes in use.
    pub used: usize,
    /// Maximum bytes.
    pub limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: usize) -> Budget {
        Budget { used: 0, limit }
    }

    /// Reserves `n` bytes if they fit.
    pub fn try_take(&mut self, n: usize) -> bool {
        if self.used + n <= self.limit {
            self.used += n;
            true
        } else {
            false
        }
    }

    /// Returns `n` bytes.
    pub fn give(&mut self, n: usize) {
        debug_assert!(n <= self.used);
        self.used -= n.min(self.used);
    }
}

/// What happened to a pushed segment (for counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Some of its bytes (or its flags) were new.
    Accepted,
    /// All of its payload bytes had been seen already.
    Duplicate,
    /// Out of order and over the global budget: dropped.
    OverBudget,
    /// Payload past the FIN or after the stream was closed.
    AfterClose,
}

/// One segment as the stream sees it.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Capture time.
    pub ts_us: u64,
    /// Sequence number (of the SYN when `syn`).
    pub seq: u32,
    /// Acknowledgment number (`None` without the ACK flag).
    pub ack: Option<u32>,
    /// SYN flag.
    pub syn: bool,
    /// FIN flag.
    pub fin: bool,
    /// Payload bytes present.
    pub payload: &'a [u8],
    /// Payload bytes cut off after `payload`.
    pub missing: u32,
}

/// Lifecycle of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Nothing with a sequence number seen yet.
    Listen,
    /// Receiving; `next_seq` is the next byte to deliver.
    Established,
    /// FIN reached or closed: `end` was delivered.
    Closed,
}

#[derive(Debug)]
enum PieceData {
    Bytes(Vec<u8>),
    Lost(u32),
}

#[derive(Debug)]
struct Piece {
    seq: u32,
    ack: Option<u32>,
    ts_us: u64,
    data: PieceData,
}

impl Piece {
    fn len(&self) -> u32 {
        match &self.data {
            PieceData::Bytes(b) => b.len() as u32,
            PieceData::Lost(n) => *n,
        }
    }
    fn end(&self) -> u32 {
        self.seq.wrapping_add(self.len())
    }
    /// Memory charged for it: its bytes (capacity) and its bookkeeping.
    fn mem(&self) -> usize {
        PIECE_COST
            + match &self.data {
                PieceData::Bytes(b) => b.capacity(),
                PieceData::Lost(_) => 0,
            }
    }
}

/// What a buffered piece costs besides its bytes: its slot in the piece list (with the list's
/// growth slack) and the allocator's overhead for its byte buffer.
pub const PIECE_COST: usize = 2 * std::mem::size_of::<Piece>() + 16;

/// Signed distance from `b` to `a` in sequence space (positive: `a` is after `b`).
#[inline]
pub fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

/// One direction's reassembly state.
///
/// Invariants:
/// - `state == Listen` ⇒ `ooo` is empty and nothing was delivered.
/// - Every piece of `ooo` starts strictly after `next_seq` (a hole precedes the first one),
///   pieces are sorted by sequence, and no two pieces overlap.
/// - `ooo_bytes` is the sum of the byte pieces' lengths, and is also counted in the
///   engine's [`Budget`].
/// - `hole_since_us` is meaningful only while `ooo` is non-empty.
#[derive(Debug)]
pub struct Stream {
    state: StreamState,
    next_seq: u32,
    syn_seq: Option<u32>,
    fin_seq: Option<u32>,
    fin_seen_us: u64,
    ooo: Vec<Piece>,
    ooo_bytes: u32,
    hole_since_us: u64,
    /// End of the furthest byte known to have been sent (segments seen, even dropped ones;
    /// the FIN; an RST's sequence number).
    sent_end: u32,
}

impl Default for Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Stream {
    /// A stream that has seen nothing.
    pub fn new() -> Stream {
        Stream {
            state: StreamState::Listen,
            next_seq: 0,
            syn_seq: None,
            fin_seq: None,
            fin_seen_us: 0,
            ooo: Vec::new(),
            ooo_bytes: 0,
            hole_since_us: 0,
            sent_end: 0,
        }
    }

    /// Current lifecycle state.
    pub fn state(&self) -> StreamState {
        self.state
    }

    /// Sequence number of the stream's SYN, if seen.
    pub fn syn_seq(&self) -> Option<u32> {
        self.syn_seq
    }

    /// Whether the stream start (SYN) was seen.
    pub fn saw_syn(&self) -> bool {
        self.syn_seq.is_some()
    }

    /// Whether the stream was seen from its SYN and nothing after it was delivered or
    /// skipped yet (its next byte is its first).
    pub fn at_start(&self) -> bool {
        self.state == StreamState::Established
            && self.ooo.is_empty()
            && self
                .syn_seq
                .is_some_and(|isn| self.next_seq == isn.wrapping_add(1))
    }

    /// Bytes buffered out of order.
    pub fn buffered_bytes(&self) -> usize {
        self.ooo_bytes as usize
    }

    /// Whether a hole is open (bytes buffered behind it).
    pub fn has_hole(&self) -> bool {
        !self.ooo.is_empty()
    }

    /// Whether `seg` is a SYN that starts a different connection than the one tracked: a SYN
    /// with another ISN than the one seen, or — for a stream joined without its SYN — one
    /// whose first byte is not at or before the bytes already delivered (a late original
    /// SYN, reordered behind data, is not a new connection).
    pub fn is_new_connection(&self, seg: &Segment<'_>) -> bool {
        if !seg.syn || self.state == StreamState::Listen {
            return false;
        }
        match self.syn_seq {
            Some(isn) => isn != seg.seq,
            None => {
                let behind = seq_diff(self.next_seq, seg.seq.wrapping_add(1));
                !(0..1 << 30).contains(&behind)
            }
        }
    }

    /// Time at which the open hole is skipped, if one is open.
    pub fn gap_deadline(&self, limits: &StreamLimits) -> Option<u64> {
        if self.ooo.is_empty() {
            return None;
        }
        let mut d = self.hole_since_us.saturating_add(limits.gap_timeout_us);
        if self.fin_seq.is_some() {
            d = d.min(
                self.fin_seen_us
                    .max(self.hole_since_us)
                    .saturating_add(limits.gap_timeout_after_fin_us),
            );
        }
        Some(d)
    }

    /// Feeds one segment. A SYN of another connection must be handled by the caller first
    /// (see [`Stream::is_new_connection`]): here it is treated as a retransmission.
    pub fn push(
        &mut self,
        seg: Segment<'_>,
        limits: &StreamLimits,
        sink: &mut impl Sink,
    ) -> Pushed {
        let wire_len = seg.payload.len() as u32 + seg.missing;
        let mut start = seg.seq;
        if seg.syn {
            start = seg.seq.wrapping_add(1);
            if self.state == StreamState::Listen {
                self.syn_seq = Some(seg.seq);
                self.next_seq = start;
                self.sent_end = start;
                self.state = StreamState::Established;
            }
        }
        match self.state {
            StreamState::Listen => {
                if wire_len == 0 {
                    return Pushed::Accepted;
                }
                self.next_seq = start;
                self.sent_end = start;
                self.state = StreamState::Established;
            }
            StreamState::Closed => {
                if wire_len == 0 {
                    return Pushed::Accepted;
                }
                let end = start.wrapping_add(wire_len);
                return if seq_diff(end, self.next_seq) <= 0 {
                    Pushed::Duplicate
                } else {
                    Pushed::AfterClose
                };
            }
            StreamState::Established => {}
        }
        let mut end = start.wrapping_add(wire_len);
        self.note_sent(end);
        if seg.fin && self.fin_seq.is_none() {
            self.fin_seq = Some(end);
            self.fin_seen_us = seg.ts_us;
        }
        let mut seg = seg;
        if let Some(fin) = self.fin_seq
            && seq_diff(end, fin) > 0
            && seq_diff(start, fin) < 0
        {
            // Bytes past the FIN are not part of the stream: keep the part before it.
            let keep = seq_diff(fin, start) as usize;
            let present = seg.payload.len().min(keep);
            seg.payload = &seg.payload[..present];
            seg.missing = (keep - present) as u32;
            end = fin;
        }
        let mut outcome = Pushed::Accepted;
        if wire_len > 0 {
            outcome = self.place(seg, start, end, limits, sink);
        }
        // A gap timeout noticed on packet arrival is handled at once (no need for a timer).
        if let Some(deadline) = self.gap_deadline(limits)
            && seg.ts_us >= deadline
        {
            self.skip_holes_until_due(seg.ts_us, limits, sink);
        }
        self.check_end(sink);
        outcome
    }

    fn place(
        &mut self,
        seg: Segment<'_>,
        start: u32,
        end: u32,
        limits: &StreamLimits,
        sink: &mut impl Sink,
    ) -> Pushed {
        if let Some(fin) = self.fin_seq
            && seq_diff(start, fin) >= 0
        {
            return Pushed::AfterClose;
        }
        if !self.ooo.is_empty() && self.differs_from_buffered(seg, start) {
            sink.different_overlap();
        }
        loop {
            if seq_diff(end, self.next_seq) <= 0 {
                return Pushed::Duplicate;
            }
            let offset = seq_diff(start, self.next_seq);
            if offset <= 0 {
                self.deliver_in_order(seg, start, end, sink);
                return Pushed::Accepted;
            }
            // Out of order: fits the per-direction caps?
            let new_pieces = self.uncovered(start, end);
            if new_pieces.is_empty() {
                return Pushed::Duplicate;
            }
            let new_bytes: usize = new_pieces
                .iter()
                .map(|&(s, e)| piece_cost(seg, start, s, e))
                .sum();
            let fits = self.ooo.len() + new_pieces.len() * 2 <= limits.max_ooo_segments
                && self.ooo_bytes as usize + new_bytes <= limits.max_ooo_bytes;
            if !fits {
                // Skip the first hole (or, with nothing buffered, the hole before this segment).
                if self.ooo.is_empty() {
                    let skip = seq_diff(start, self.next_seq) as u64;
                    sink.gap(skip);
                    self.next_seq = start;
                } else {
                    self.skip_first_hole(sink);
                }
                continue;
            }
            if !sink.budget().try_take(new_bytes) {
                return Pushed::OverBudget;
            }
            let opened = self.ooo.is_empty();
            for (s, e) in new_pieces {
                self.insert_piece(seg, start, s, e);
            }
            self.ooo_bytes += new_bytes as u32;
            if opened {
                self.hole_since_us = seg.ts_us;
            }
            // Too much buffered past the hole: skip holes until within the window.
            while let Some(last) = self.ooo.last() {
                let span = seq_diff(last.end(), self.next_seq) as usize;
                if span <= limits.gap_skip_bytes {
                    break;
                }
                self.skip_first_hole(sink);
            }
            return Pushed::Accepted;
        }
    }

    /// Whether the present bytes of `seg` (data from `start`) differ from buffered bytes at
    /// the same sequence numbers.
    fn differs_from_buffered(&self, seg: Segment<'_>, start: u32) -> bool {
        // In offsets from `start`, not sequence numbers: a segment half the sequence space
        // away from a buffered piece (an old duplicate, or forged) would otherwise compare
        // its ends across the wrap and index its payload 2^31 bytes out (found by the fuzz
        // target `reassembly_segments`).
        let len = seg.payload.len() as i64;
        self.ooo.iter().any(|p| {
            let PieceData::Bytes(b) = &p.data else {
                return false;
            };
            let at = seq_diff(p.seq, start);
            let lo = at.max(0);
            let hi = (at + b.len() as i64).min(len);
            if hi <= lo {
                return false;
            }
            let (a, c, n) = (lo as usize, (lo - at) as usize, (hi - lo) as usize);
            seg.payload[a..a + n] != b[c..c + n]
        })
    }

    /// Sub-ranges of `[start, end)` not covered by a buffered piece.
    fn uncovered(&self, start: u32, end: u32) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut pos = start;
        for p in &self.ooo {
            if seq_diff(p.end(), pos) <= 0 {
                continue;
            }
            if seq_diff(p.seq, end) >= 0 {
                break;
            }
            if seq_diff(p.seq, pos) > 0 {
                out.push((pos, p.seq));
            }
            pos = p.end();
            if seq_diff(pos, end) >= 0 {
                return out;
            }
        }
        if seq_diff(end, pos) > 0 {
            out.push((pos, end));
        }
        out
    }

    /// Inserts the part `[s, e)` of `seg` (whose data starts at `start`), split into a bytes
    /// piece and a lost piece where it crosses the truncation point.
    fn insert_piece(&mut self, seg: Segment<'_>, start: u32, s: u32, e: u32) {
        let present_end = start.wrapping_add(seg.payload.len() as u32);
        let idx = self
            .ooo
            .iter()
            .position(|p| seq_diff(p.seq, s) > 0)
            .unwrap_or(self.ooo.len());
        let mut pieces = Vec::with_capacity(2);
        if seq_diff(present_end, s) > 0 {
            let be = if seq_diff(e, present_end) < 0 {
                e
            } else {
                present_end
            };
            let a = seq_diff(s, start) as usize;
            let b = seq_diff(be, start) as usize;
            pieces.push(Piece {
                seq: s,
                ack: seg.ack,
                ts_us: seg.ts_us,
                data: PieceData::Bytes(seg.payload[a..b].to_vec()),
            });
        }
        let lost_start = if seq_diff(present_end, s) > 0 {
            present_end
        } else {
            s
        };
        if seq_diff(e, lost_start) > 0 {
            pieces.push(Piece {
                seq: lost_start,
                ack: seg.ack,
                ts_us: seg.ts_us,
                data: PieceData::Lost(seq_diff(e, lost_start) as u32),
            });
        }
        for (i, p) in pieces.into_iter().enumerate() {
            self.ooo.insert(idx + i, p);
        }
    }

    /// Delivers a segment that starts at or before `next_seq`, interleaving buffered pieces
    /// that cover parts of it (first data wins), then drains what became contiguous.
    fn deliver_in_order(&mut self, seg: Segment<'_>, start: u32, end: u32, sink: &mut impl Sink) {
        let present_end = start.wrapping_add(seg.payload.len() as u32);
        while seq_diff(end, self.next_seq) > 0 {
            if let Some(first) = self.ooo.first()
                && seq_diff(first.seq, self.next_seq) <= 0
            {
                self.pop_first(sink);
                continue;
            }
            let limit = match self.ooo.first() {
                Some(p) if seq_diff(p.seq, end) < 0 => p.seq,
                _ => end,
            };
            // Bytes [next_seq, limit) come from this segment: present part, then lost part.
            if seq_diff(present_end, self.next_seq) > 0 {
                let upto = if seq_diff(limit, present_end) < 0 {
                    limit
                } else {
                    present_end
                };
                let a = seq_diff(self.next_seq, start) as usize;
                let b = seq_diff(upto, start) as usize;
                let at = At {
                    ts_us: seg.ts_us,
                    seq: self.next_seq,
                    ack: seg.ack,
                };
                sink.data(at, &seg.payload[a..b]);
                self.next_seq = upto;
            }
            if seq_diff(limit, self.next_seq) > 0 {
                sink.gap(seq_diff(limit, self.next_seq) as u64);
                self.next_seq = limit;
            }
        }
        self.drain(sink);
    }

    /// Delivers the first piece (trimmed to `next_seq`) and removes it.
    fn pop_first(&mut self, sink: &mut impl Sink) {
        let p = self.ooo.remove(0);
        let mem = p.mem();
        self.ooo_bytes -= mem as u32;
        sink.budget().give(mem);
        let skip = seq_diff(self.next_seq, p.seq);
        let end = p.end();
        if seq_diff(end, self.next_seq) > 0 {
            let at = At {
                ts_us: p.ts_us,
                seq: self.next_seq,
                ack: p.ack,
            };
            match &p.data {
                PieceData::Bytes(b) => sink.data(at, &b[skip.max(0) as usize..]),
                PieceData::Lost(_) => sink.gap(seq_diff(end, self.next_seq) as u64),
            }
            self.next_seq = end;
        }
        if !self.ooo.is_empty() {
            // The next hole counts from now at the earliest.
            self.hole_since_us = self.hole_since_us.max(p.ts_us);
        }
    }

    /// Delivers every buffered piece that became contiguous.
    fn drain(&mut self, sink: &mut impl Sink) {
        while let Some(first) = self.ooo.first() {
            if seq_diff(first.seq, self.next_seq) > 0 {
                break;
            }
            self.pop_first(sink);
        }
        if self.ooo.is_empty() && self.ooo.capacity() > 0 {
            // No allocation kept by an in-order stream (RSS with many flows).
            self.ooo = Vec::new();
        }
    }

    /// Reports the first hole as a gap and delivers what follows it.
    fn skip_first_hole(&mut self, sink: &mut impl Sink) {
        let Some(first) = self.ooo.first() else {
            return;
        };
        let len = seq_diff(first.seq, self.next_seq);
        if len > 0 {
            sink.gap(len as u64);
            self.next_seq = first.seq;
        }
        self.drain(sink);
    }

    fn skip_holes_until_due(&mut self, now_us: u64, limits: &StreamLimits, sink: &mut impl Sink) {
        while let Some(deadline) = self.gap_deadline(limits) {
            if now_us < deadline {
                break;
            }
            self.skip_first_hole(sink);
            if !self.ooo.is_empty() {
                self.hole_since_us = now_us;
            }
        }
    }

    fn check_end(&mut self, sink: &mut impl Sink) {
        if self.state == StreamState::Established && self.fin_seq == Some(self.next_seq) {
            self.release(sink);
            self.state = StreamState::Closed;
            sink.end();
        }
    }

    fn release(&mut self, sink: &mut impl Sink) {
        sink.budget().give(self.ooo_bytes as usize);
        self.ooo_bytes = 0;
        self.ooo.clear();
        self.ooo.shrink_to_fit();
    }

    /// Timer: skips holes whose deadline passed.
    pub fn on_timer(&mut self, now_us: u64, limits: &StreamLimits, sink: &mut impl Sink) {
        if self.state == StreamState::Established {
            self.skip_holes_until_due(now_us, limits, sink);
            self.check_end(sink);
        }
    }

    /// The receiver acknowledged every byte before `ack` at `now_us`: a hole it covers, with
    /// bytes buffered past it, will not be filled by a retransmission (the sender does not
    /// resend acknowledged bytes; the mirror lost them, or delivers them late): it is skipped
    /// `acked_hole_grace_us` from now (if the gap timeout is not sooner), instead of waiting
    /// the whole gap timeout.
    pub fn acked(&mut self, ack: u32, now_us: u64, limits: &StreamLimits) {
        if self.state != StreamState::Established {
            return;
        }
        if let Some(first) = self.ooo.first()
            && seq_diff(ack, first.seq) >= 0
        {
            let since = now_us
                .saturating_add(limits.acked_hole_grace_us)
                .saturating_sub(limits.gap_timeout_us);
            self.hole_since_us = self.hole_since_us.min(since);
        }
    }

    /// Records that the sender sent bytes up to `end` (e.g. the sequence number of its RST).
    pub fn note_sent(&mut self, end: u32) {
        if self.state == StreamState::Established && seq_diff(end, self.sent_end) > 0 {
            self.sent_end = end;
        }
    }

    /// Closes the stream (RST, idle timeout, eviction, end of input): every hole is skipped,
    /// everything buffered is delivered, bytes known to have been sent but never seen (up
    /// to the FIN, the furthest segment or the RST) are reported as a gap, then `end`.
    pub fn close(&mut self, sink: &mut impl Sink) {
        match self.state {
            StreamState::Closed => {}
            StreamState::Listen => {
                self.state = StreamState::Closed;
                sink.end();
            }
            StreamState::Established => {
                while !self.ooo.is_empty() {
                    if let Some(fin) = self.fin_seq
                        && seq_diff(self.ooo[0].seq, fin) >= 0
                    {
                        break;
                    }
                    self.skip_first_hole(sink);
                }
                let sent = match self.fin_seq {
                    Some(fin) if seq_diff(self.sent_end, fin) > 0 => fin,
                    _ => self.sent_end,
                };
                let lost = seq_diff(sent, self.next_seq);
                if lost > 0 {
                    sink.gap(lost as u64);
                    self.next_seq = sent;
                }
                self.release(sink);
                self.state = StreamState::Closed;
                sink.end();
            }
        }
    }
}

/// Memory the part `[s, e)` of `seg` costs once buffered: its present bytes, and one
/// [`PIECE_COST`] per piece it becomes (a bytes piece and/or a lost piece).
fn piece_cost(seg: Segment<'_>, start: u32, s: u32, e: u32) -> usize {
    let present = present_overlap(seg, start, s, e);
    let present_end = start.wrapping_add(seg.payload.len() as u32);
    let lost_start = if seq_diff(present_end, s) > 0 {
        present_end
    } else {
        s
    };
    let pieces = usize::from(present > 0) + usize::from(seq_diff(e, lost_start) > 0);
    present + pieces * PIECE_COST
}

/// Bytes of `[s, e)` that are present (not cut off) in `seg` whose data starts at `start`.
fn present_overlap(seg: Segment<'_>, start: u32, s: u32, e: u32) -> usize {
    let present_end = start.wrapping_add(seg.payload.len() as u32);
    let hi = if seq_diff(e, present_end) < 0 {
        e
    } else {
        present_end
    };
    seq_diff(hi, s).max(0) as usize
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Records what the sink receives; gaps shown as `#len#`.
    #[derive(Debug, Default)]
    pub(crate) struct Recorder {
        pub bytes: Vec<u8>,
        pub gaps: Vec<u64>,
        pub ends: usize,
        pub events: Vec<String>,
        pub budget: Budget,
    }

    impl Default for Budget {
        fn default() -> Self {
            Budget::new(1 << 24)
        }
    }

    impl Sink for Recorder {
        fn data(&mut self, _at: At, bytes: &[u8]) {
            assert!(!bytes.is_empty(), "empty data chunk");
            self.bytes.extend_from_slice(bytes);
            self.events
                .push(String::from_utf8_lossy(bytes).into_owned());
        }
        fn gap(&mut self, len: u64) {
            assert!(len > 0, "empty gap");
            self.gaps.push(len);
            self.events.push(format!("#{len}#"));
        }
        fn end(&mut self) {
            self.ends += 1;
        }
        fn budget(&mut self) -> &mut Budget {
            &mut self.budget
        }
    }

    impl Recorder {
        fn text(&self) -> String {
            self.events.concat()
        }
    }

    const LIMITS: StreamLimits = StreamLimits {
        max_ooo_bytes: 1 << 20,
        max_ooo_segments: 64,
        gap_skip_bytes: 1 << 19,
        gap_timeout_us: 1_000,
        gap_timeout_after_fin_us: 100,
        acked_hole_grace_us: 10,
    };

    fn seg(seq: u32, payload: &[u8]) -> Segment<'_> {
        Segment {
            ts_us: 0,
            seq,
            ack: None,
            syn: false,
            fin: false,
            payload,
            missing: 0,
        }
    }

    fn syn(seq: u32) -> Segment<'static> {
        Segment {
            syn: true,
            ..seg(seq, b"")
        }
    }

    struct Harness {
        s: Stream,
        r: Recorder,
        l: StreamLimits,
    }

    impl Harness {
        fn new() -> Harness {
            Harness::with(LIMITS)
        }
        fn with(l: StreamLimits) -> Harness {
            Harness {
                s: Stream::new(),
                r: Recorder::default(),
                l,
            }
        }
        fn push(&mut self, seg: Segment<'_>) -> Pushed {
            let out = self.s.push(seg, &self.l, &mut self.r);
            assert_eq!(
                self.r.budget.used,
                self.s.buffered_bytes(),
                "budget tracks buffer"
            );
            out
        }
    }

    #[test]
    fn in_order_segments_are_delivered_as_they_come() {
        let mut h = Harness::new();
        h.push(syn(99));
        h.push(seg(100, b"hello "));
        h.push(seg(106, b"world"));
        assert_eq!(h.r.text(), "hello world");
        assert!(h.s.saw_syn());
    }

    #[test]
    fn out_of_order_segments_are_reordered() {
        let mut h = Harness::new();
        h.push(syn(0));
        assert_eq!(h.push(seg(6, b"cd")), Pushed::Accepted);
        assert_eq!(h.push(seg(5, b"b")), Pushed::Accepted);
        assert!(h.r.bytes.is_empty());
        h.push(seg(1, b"aaaa"));
        assert_eq!(h.r.text(), "aaaabcd");
        assert!(!h.s.has_hole());
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let mut h = Harness::new();
        h.push(syn(u32::MAX - 2));
        h.push(seg(u32::MAX.wrapping_add(2), b"yz"));
        h.push(seg(u32::MAX - 1, b"abc"));
        assert_eq!(h.r.text(), "abcyz");
    }

    #[test]
    fn duplicates_and_retransmissions_are_not_delivered_twice() {
        let mut h = Harness::new();
        h.push(syn(0));
        assert_eq!(h.push(seg(1, b"abc")), Pushed::Accepted);
        assert_eq!(h.push(seg(1, b"abc")), Pushed::Duplicate);
        assert_eq!(h.push(seg(10, b"xyz")), Pushed::Accepted);
        assert_eq!(h.push(seg(10, b"xyz")), Pushed::Duplicate);
        assert_eq!(h.push(seg(2, b"bcdefghi")), Pushed::Accepted);
        assert_eq!(h.r.text(), "abcdefghixyz");
    }

    #[test]
    fn a_conflicting_copy_of_buffered_bytes_is_reported_and_loses() {
        #[derive(Default)]
        struct Counting(Recorder, u32);
        impl Sink for Counting {
            fn data(&mut self, at: At, bytes: &[u8]) {
                self.0.data(at, bytes)
            }
            fn gap(&mut self, len: u64) {
                self.0.gap(len)
            }
            fn end(&mut self) {
                self.0.end()
            }
            fn budget(&mut self) -> &mut Budget {
                self.0.budget()
            }
            fn different_overlap(&mut self) {
                self.1 += 1;
            }
        }
        let mut s = Stream::new();
        let mut k = Counting::default();
        s.push(syn(0), &LIMITS, &mut k);
        s.push(seg(5, b"safe"), &LIMITS, &mut k);
        s.push(seg(5, b"safe"), &LIMITS, &mut k);
        assert_eq!(k.1, 0, "an identical copy is not a conflict");
        s.push(seg(6, b"EVIL"), &LIMITS, &mut k);
        assert_eq!(k.1, 1);
        s.push(seg(1, b"abcd"), &LIMITS, &mut k);
        assert_eq!(k.0.text(), "abcdsafeL");
    }

    #[test]
    fn a_segment_half_the_sequence_space_from_a_buffered_piece_is_compared_with_nothing() {
        let mut h = Harness::new();
        h.push(syn(0));
        // Buffered past a hole: 40 bytes at 101.
        assert_eq!(h.push(seg(101, &[b'p'; 40])), Pushed::Accepted);
        // 2^31 - 22 bytes before the piece, i.e. far behind the stream: old data. Compared
        // across the wrap, its end would seem to fall inside the piece.
        let far = 101u32.wrapping_sub((1 << 31) - 22);
        assert_eq!(h.push(seg(far, b"0123456789")), Pushed::Duplicate);
        h.push(seg(1, &[b'a'; 100]));
        assert_eq!(h.r.bytes.len(), 140);
    }

    #[test]
    fn overlapping_data_keeps_the_first_bytes_seen() {
        let mut h = Harness::new();
        h.push(syn(0));
        h.push(seg(1, b"AAAA"));
        h.push(seg(7, b"CC"));
        // Overlaps delivered bytes (1..5) and buffered bytes (7..9): only 5..7 and 9.. are new.
        h.push(seg(3, b"xxxxxxxx"));
        assert_eq!(h.r.text(), "AAAAxxCCxx");
    }

    #[test]
    fn truncated_segment_tail_becomes_a_gap() {
        let mut h = Harness::new();
        h.push(syn(0));
        h.push(Segment {
            missing: 5,
            ..seg(1, b"abc")
        });
        h.push(seg(9, b"def"));
        assert_eq!(h.r.text(), "abc#5#def");
    }

    #[test]
    fn truncated_out_of_order_segment_keeps_its_lost_tail() {
        let mut h = Harness::new();
        h.push(syn(0));
        h.push(Segment {
            missing: 2,
            ..seg(4, b"de")
        });
        h.push(seg(8, b"h"));
        h.push(seg(1, b"abc"));
        assert_eq!(h.r.text(), "abcde#2#h");
    }

    #[test]
    fn hole_is_skipped_after_the_gap_timeout() {
        let mut h = Harness::new();
        h.push(syn(0));
        h.push(seg(1, b"ab"));
        h.push(seg(5, b"ef"));
        h.s.on_timer(999, &h.l, &mut h.r);
        assert_eq!(h.r.text(), "ab");
        h.s.on_timer(1_000, &h.l, &mut h.r);
        assert_eq!(h.r.text(), "ab#2#ef");
        // The late bytes are now old.
        assert_eq!(h.push(seg(3, b"cd")), Pushed::Duplicate);
        assert_eq!(h.r.budget.used, 0);
    }

    #[test]
    fn hole_is_skipped_sooner_once_the_fin_is_known() {
        let mut h = Harness::new();
        h.push(syn(0));
        h.push(Segment {
            fin: true,
            ..seg(5, b"ef")
        });
        h.s.on_timer(99, &h.l, &mut h.r);
        assert!(h.r.events.is_empty());
        h.s.on_timer(100, &h.l, &mut h.r);
        assert_eq!(h.r.text(), "#4#ef");
        assert_eq!(h.r.ends, 1);
        assert_eq!(h.s.state(), StreamState::Closed);
    }

    #[test]
    fn hole_is_skipped_when_too_many_bytes_are_buffered_past_it() {
        let mut h = Harness::with(StreamLimits {
            gap_skip_bytes: 4,
            ..LIMITS
        });
        h.push(syn(0));
        h.push(seg(3, b"cd"));
        assert!(h.r.events.is_empty());
        h.push(seg(5, b"efg"));
        assert_eq!(h.r.text(), "#2#cdefg");
    }

    #[test]
    fn per_flow_segment_cap_skips_the_hole_instead_of_dropping() {
        let mut h = Harness::with(StreamLimits {
            max_ooo_segments: 2,
            ..LIMITS
        });
        h.push(syn(0));
        h.push(seg(3, b"c"));
        h.push(seg(5, b"e"));
        assert_eq!(h.r.text(), "#2#c");
        h.push(seg(4, b"d"));
        assert_eq!(h.r.text(), "#2#cde");
    }

    #[test]
    fn over_budget_segment_is_dropped_and_counted() {
        let mut h = Harness::new();
        h.r.budget = Budget::new(3);
        h.push(syn(0));
        assert_eq!(h.push(seg(5, b"abcd")), Pushed::OverBudget);
        assert_eq!(h.push(seg(1, b"wxyz")), Pushed::Accepted);
        assert_eq!(h.r.text(), "wxyz");
    }

    #[test]
    fn fin_ends_the_stream_once_all_bytes_arrived() {
        let mut h = Harness::new();
        h.push(syn(0));
        h.push(Segment {
            fin: true,
            ..seg(3, b"c")
        });
        assert_eq!(h.r.ends, 0);
        h.push(seg(1, b"ab"));
        assert_eq!(h.r.text(), "abc");
        assert_eq!(h.r.ends, 1);
        assert_eq!(h.push(seg(4, b"late")), Pushed::AfterClose);
        assert_eq!(h.push(seg(1, b"ab")), Pushed::Duplicate);
    }

    #[test]
    fn bytes_past_a_known_fin_are_cut_off() {
        let mut h = Harness::new();
        h.push(syn(0));
        h.push(Segment {
            fin: true,
            ..seg(4, b"d")
        });
        h.push(seg(1, b"abcXYZ"));
        assert_eq!(h.r.text(), "abcd");
        assert_eq!(h.r.ends, 1);
    }

    #[test]
    fn stream_joined_without_syn_starts_at_first_payload() {
        let mut h = Harness::new();
        h.push(seg(5000, b""));
        assert_eq!(h.s.state(), StreamState::Listen);
        h.push(seg(5000, b"mid"));
        h.push(seg(5003, b"stream"));
        assert_eq!(h.r.text(), "midstream");
        assert!(!h.s.saw_syn());
    }

    #[test]
    fn close_delivers_everything_buffered_with_gaps() {
        let mut h = Harness::new();
        h.push(syn(0));
        h.push(seg(3, b"c"));
        h.push(seg(6, b"f"));
        h.s.close(&mut h.r);
        assert_eq!(h.r.text(), "#2#c#2#f");
        assert_eq!(h.r.ends, 1);
        assert_eq!(h.r.budget.used, 0);
        h.s.close(&mut h.r);
        assert_eq!(h.r.ends, 1);
    }

    #[test]
    fn bytes_lost_before_the_fin_are_a_gap_at_close() {
        let mut h = Harness::new();
        h.push(syn(0));
        h.push(seg(1, b"head"));
        h.push(Segment {
            fin: true,
            ..seg(20, b"")
        });
        h.s.close(&mut h.r);
        assert_eq!(h.r.text(), "head#15#");
        assert_eq!(h.r.ends, 1);
    }

    #[test]
    fn bytes_lost_before_a_reset_are_a_gap_at_close() {
        let mut h = Harness::new();
        h.push(syn(0));
        h.push(seg(1, b"ab"));
        h.s.note_sent(9);
        h.s.close(&mut h.r);
        assert_eq!(h.r.text(), "ab#6#");
        // Nothing lost: no gap.
        let mut h = Harness::new();
        h.push(syn(0));
        h.push(seg(1, b"ab"));
        h.s.note_sent(3);
        h.s.close(&mut h.r);
        assert_eq!(h.r.text(), "ab");
    }

    #[test]
    fn another_syn_is_recognised_as_a_new_connection() {
        let mut h = Harness::new();
        h.push(syn(10));
        assert!(!h.s.is_new_connection(&syn(10)));
        assert!(h.s.is_new_connection(&syn(5000)));
    }

    #[test]
    fn late_original_syn_of_a_joined_stream_is_not_a_new_connection() {
        let mut h = Harness::new();
        h.push(seg(11, b"data"));
        assert!(!h.s.is_new_connection(&syn(10)));
        assert!(h.s.is_new_connection(&syn(10 + 100)));
        assert!(h.s.is_new_connection(&syn(10u32.wrapping_sub(1 << 31))));
    }

    proptest! {
        /// Any segmentation, order and duplication of a stream delivers the same bytes.
        #[test]
        fn any_segmentation_order_and_duplication_delivers_the_same_bytes(
            isn in any::<u32>(),
            data in proptest::collection::vec(any::<u8>(), 1..600),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
            dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len())).collect();
            points.push(0);
            points.push(data.len());
            points.sort_unstable();
            points.dedup();
            let mut segs: Vec<(u32, &[u8])> = points
                .windows(2)
                .map(|w| (isn.wrapping_add(1).wrapping_add(w[0] as u32), &data[w[0]..w[1]]))
                .collect();
            for d in &dups {
                let s = segs[d.index(segs.len())];
                segs.push(s);
            }
            for (i, o) in order.iter().enumerate() {
                let a = i % segs.len();
                let b = o.index(segs.len());
                segs.swap(a, b);
            }
            let mut h = Harness::new();
            h.push(syn(isn));
            for (seq, p) in &segs {
                h.push(seg(*seq, p));
            }
            prop_assert_eq!(&h.r.bytes, &data);
            prop_assert!(h.r.gaps.is_empty());
            prop_assert_eq!(h.r.budget.used, 0);
        }
    }
}
