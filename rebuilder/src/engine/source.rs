//! Per-source counters: the engine's counters split by the key a mirrored datagram carries
//! ([`SourceKey`]: GWLB endpoint, VXLAN sender, VNI), so that completeness can be told per
//! mirrored ENI (`docs/sources.md`).
//!
//! A leaf of the engine, like [`crate::engine::stats`] (which holds one [`SourceTable`]): every
//! counter of a row is incremented at the same place as its fleet-wide counter, into the row
//! of the *current* source, so the rows always add up to the totals. The engine sets the
//! current source once per packet (a one-entry cache makes that a comparison for a burst from
//! one sender) and around the work a timer or an eviction does for one direction.
//!
//! The table is bounded ([`SourceTable::new`]: `max_source_keys` rows); keys beyond the cap
//! share the overflow row (key `None`), counted in [`SourceTable::overflowed`].

use std::collections::HashMap;
use std::net::IpAddr;

use crate::engine::stats::DropReason;

/// What identifies the source of mirrored traffic, as far as a datagram tells it.
///
/// `sender`: the IP source of the VXLAN datagram (the source ENI's primary address); `vni`:
/// its VNI; `gwlbe`: the Gateway Load Balancer endpoint it came through. A field is `None`
/// when the datagram did not get far enough to tell it (a malformed VXLAN header has no VNI)
/// or the input has none (a plain capture has no sender).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SourceKey {
    pub gwlbe: Option<u64>,
    pub sender: Option<IpAddr>,
    pub vni: Option<u32>,
}

/// The counters of one source. Each one mirrors a fleet-wide counter of
/// [`crate::engine::stats::EngineStats`] (named in its comment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Datagrams or frames (`packets`).
    pub datagrams: u64,
    /// Their bytes (`bytes`).
    pub bytes: u64,
    /// TCP segments cut short by the session's PacketLength (`truncated_packets`).
    pub truncated_packets: u64,
    /// Holes skipped in a stream (`gaps`).
    pub gaps: u64,
    /// Requests parsed (`requests`).
    pub requests: u64,
    /// Final responses parsed (`responses`).
    pub responses: u64,
    /// Requests emitted with their response (`responses_paired`).
    pub paired: u64,
    /// Requests emitted without their response (sum of `responses_missing`).
    pub unpaired: u64,
    /// Drops by reason (`drops`).
    pub drops: [u64; DropReason::ALL.len()],
}

/// Message-level drop reasons: a request lost because bytes of it were missing or its flow
/// was evicted (what makes a source's requests incomplete).
pub const INCOMPLETE_REASONS: [DropReason; 3] = [
    DropReason::MessageGap,
    DropReason::MessageIncomplete,
    DropReason::FlowEvicted,
];

impl SourceCounters {
    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &SourceCounters) {
        self.datagrams += other.datagrams;
        self.bytes += other.bytes;
        self.truncated_packets += other.truncated_packets;
        self.gaps += other.gaps;
        self.requests += other.requests;
        self.responses += other.responses;
        self.paired += other.paired;
        self.unpaired += other.unpaired;
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
    }

    /// Requests emitted with their response, over those emitted plus those lost to missing
    /// bytes or eviction ([`INCOMPLETE_REASONS`]); `None` before any request.
    pub fn complete_share(&self) -> Option<f64> {
        let lost: u64 = INCOMPLETE_REASONS
            .iter()
            .map(|r| self.drops[*r as usize])
            .sum();
        let all = self.paired + self.unpaired + lost;
        (all > 0).then(|| self.paired as f64 / all as f64)
    }
}

/// Rows of counters by source key, bounded. Row 0 is the overflow row (key `None`).
///
/// A packet is counted lazily: [`SourceTable::packet`] notes it, [`SourceTable::refine`]
/// changes its key for free while it is pending, and it lands in its row when anything else
/// is counted (or read). A burst from one source costs a key comparison per packet; a hash
/// look-up is made only when the source changes.
#[derive(Debug, Clone)]
pub struct SourceTable {
    max_keys: usize,
    index: HashMap<SourceKey, u32, foldhash::fast::RandomState>,
    keys: Vec<Option<SourceKey>>,
    rows: Vec<SourceCounters>,
    /// The row counted into now, and its key (`None`: nothing set yet).
    cur: u32,
    cur_key: Option<SourceKey>,
    /// A packet noted and not yet counted: its key and length.
    pending: Option<(SourceKey, u64)>,
    overflowed: u64,
}

impl Default for SourceTable {
    fn default() -> Self {
        SourceTable::new(DEFAULT_MAX_SOURCE_KEYS)
    }
}

impl PartialEq for SourceTable {
    fn eq(&self, other: &Self) -> bool {
        self.overflowed == other.overflowed && self.rows() == other.rows()
    }
}
impl Eq for SourceTable {}

/// Default cap of distinct source keys per engine.
pub const DEFAULT_MAX_SOURCE_KEYS: usize = 4096;

impl SourceTable {
    /// A table of at most `max_keys` keys (plus the overflow row).
    pub fn new(max_keys: usize) -> SourceTable {
        SourceTable {
            max_keys,
            index: HashMap::default(),
            keys: vec![None],
            rows: vec![SourceCounters::default()],
            cur: 0,
            cur_key: None,
            pending: None,
            overflowed: 0,
        }
    }

    /// Keys that found the table full (their counts went to the overflow row).
    pub fn overflowed(&self) -> u64 {
        let pending = self.pending.is_some_and(|(k, _)| {
            self.cur_key != Some(k)
                && !self.index.contains_key(&k)
                && self.index.len() >= self.max_keys
        });
        self.overflowed + u64::from(pending)
    }

    /// The rows (a pending packet included): key (`None`: overflow) and counters, rows with
    /// nothing counted left out.
    pub fn rows(&self) -> Vec<(Option<SourceKey>, SourceCounters)> {
        let mut rows: Vec<(Option<SourceKey>, SourceCounters)> = self
            .keys
            .iter()
            .copied()
            .zip(self.rows.iter().cloned())
            .collect();
        if let Some((key, len)) = self.pending {
            let i = match self.index.get(&key) {
                Some(&i) => i as usize,
                None if self.index.len() >= self.max_keys => 0,
                None => {
                    rows.push((Some(key), SourceCounters::default()));
                    rows.len() - 1
                }
            };
            rows[i].1.datagrams += 1;
            rows[i].1.bytes += len;
        }
        rows.retain(|(_, c)| *c != SourceCounters::default());
        rows
    }

    /// The counters of `key` (the overflow row for `None`), a pending packet included.
    pub fn get(&self, key: Option<SourceKey>) -> Option<SourceCounters> {
        self.rows()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, c)| c)
    }

    fn row_of(&mut self, key: SourceKey) -> u32 {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        if self.index.len() >= self.max_keys {
            self.overflowed += 1;
            return 0;
        }
        self.insert(key)
    }

    fn insert(&mut self, key: SourceKey) -> u32 {
        let i = self.rows.len() as u32;
        self.rows.push(SourceCounters::default());
        self.keys.push(Some(key));
        self.index.insert(key, i);
        i
    }

    #[inline]
    fn select(&mut self, key: SourceKey) {
        if self.cur_key != Some(key) {
            self.cur = self.row_of(key);
            self.cur_key = Some(key);
        }
    }

    /// Counts the pending packet, if any, in its row (which becomes current).
    #[inline]
    fn settle(&mut self) {
        if let Some((key, len)) = self.pending.take() {
            self.select(key);
            let r = &mut self.rows[self.cur as usize];
            r.datagrams += 1;
            r.bytes += len;
        }
    }

    /// Makes `key` the current source.
    #[inline]
    pub fn set(&mut self, key: SourceKey) {
        self.settle();
        self.select(key);
    }

    /// Makes `key` the current source, as [`SourceTable::set`], where `*row` is what an earlier
    /// call left for `key` (0 the first time). With a row known,
    /// neither the pending packet (when it came from `key`) nor the switch costs a look-up: a
    /// direction keeps its row, and its packets come from its own source. A row that is not
    /// `key`'s is ignored (looked up again), so a stale one can't misattribute anything.
    #[inline]
    pub fn set_cached(&mut self, key: SourceKey, row: &mut u32) {
        let at = *row as usize;
        if at == 0 || self.keys.get(at) != Some(&Some(key)) {
            self.set(key);
            *row = self.cur;
            return;
        }
        // A pending packet from `key` is counted here, into the known row; left to `settle`
        // it would be counted later after one more key comparison per packet (+1 % of replay's
        // instructions).
        match self.pending {
            Some((k, len)) if k == key => {
                self.pending = None;
                let r = &mut self.rows[at];
                r.datagrams += 1;
                r.bytes += len;
            }
            _ => self.settle(),
        }
        self.cur = *row;
        self.cur_key = Some(key);
    }

    /// The current source (to restore it after work for another one).
    #[inline]
    pub fn current(&mut self) -> Option<SourceKey> {
        self.settle();
        self.cur_key
    }

    /// Restores a source [`SourceTable::current`] returned.
    #[inline]
    pub fn restore(&mut self, key: Option<SourceKey>) {
        if let Some(k) = key {
            self.set(k);
        }
    }

    /// A packet of `len` bytes from `key` (current once counted).
    #[inline]
    pub fn packet(&mut self, key: SourceKey, len: u64) {
        self.settle();
        self.pending = Some((key, len));
    }

    /// The packet just noted turned out to come from `key` (more of its key was read).
    #[inline]
    pub fn refine(&mut self, key: SourceKey, len: u64) {
        match &mut self.pending {
            Some(p) => p.0 = key,
            None => {
                // Already counted (something was counted for it): its count moves.
                if self.cur_key == Some(key) {
                    return;
                }
                let r = &mut self.rows[self.cur as usize];
                r.datagrams -= 1;
                r.bytes -= len;
                self.pending = Some((key, len));
            }
        }
    }

    /// The current row (the pending packet counted first).
    #[inline]
    pub fn row(&mut self) -> &mut SourceCounters {
        self.settle();
        &mut self.rows[self.cur as usize]
    }

    /// Adds every row of `other` (workers summed for metrics; a sum holds every key of its
    /// parts, each bounded).
    pub fn merge(&mut self, other: &SourceTable) {
        self.settle();
        self.overflowed += other.overflowed();
        for (k, c) in other.rows() {
            let i = match k {
                None => 0,
                Some(k) => match self.index.get(&k) {
                    Some(&i) => i,
                    None => self.insert(k),
                },
            };
            self.rows[i as usize].merge(&c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8, vni: u32) -> SourceKey {
        SourceKey {
            gwlbe: None,
            sender: Some(IpAddr::from([10, 0, 0, last])),
            vni: Some(vni),
        }
    }

    #[test]
    fn a_refined_packet_moves_its_count_to_the_refined_key() {
        let mut t = SourceTable::new(8);
        let coarse = SourceKey {
            vni: None,
            ..key(1, 0)
        };
        t.packet(coarse, 100);
        t.refine(key(1, 7), 100);
        t.row().drops[DropReason::NonTcp as usize] += 1;
        assert_eq!(t.get(Some(coarse)), None);
        let r = t.get(Some(key(1, 7))).unwrap();
        assert_eq!((r.datagrams, r.bytes), (1, 100));
        assert_eq!(r.drops[DropReason::NonTcp as usize], 1);
        assert_eq!(t.rows().len(), 1, "empty rows are left out");
    }

    #[test]
    fn a_cached_row_counts_exactly_as_a_look_up_and_a_stale_one_is_ignored() {
        // The same packets and events through `set` and through `set_cached`.
        let run = |cached: bool| {
            let mut t = SourceTable::new(8);
            let mut rows = [0u32; 3];
            for i in 0..30u32 {
                let d = (i * 7 % 3) as usize;
                let k = key(d as u8, 1);
                // A packet from its direction's source, then one from another sender.
                t.packet(k, 100);
                if cached {
                    t.set_cached(k, &mut rows[d]);
                } else {
                    t.set(k);
                }
                t.row().requests += 1;
                t.packet(key(9, 1), 10);
                if cached {
                    t.set_cached(k, &mut rows[d]);
                } else {
                    t.set(k);
                }
                t.row().gaps += 1;
            }
            (t, rows)
        };
        let (looked_up, _) = run(false);
        let (cached, rows) = run(true);
        assert_eq!(cached, looked_up);
        assert!(rows.iter().all(|&r| r != 0), "rows were cached: {rows:?}");
        // A row of another key is not trusted.
        let mut t = looked_up.clone();
        let mut wrong = rows[1];
        t.packet(key(0, 1), 5);
        t.set_cached(key(0, 1), &mut wrong);
        t.row().requests += 1;
        assert_eq!(wrong, rows[0]);
        let mut expected = looked_up;
        expected.packet(key(0, 1), 5);
        expected.set(key(0, 1));
        expected.row().requests += 1;
        assert_eq!(t, expected);
    }

    #[test]
    fn keys_beyond_the_cap_share_the_overflow_row_and_are_counted() {
        let mut t = SourceTable::new(2);
        for i in 0..5 {
            t.packet(key(i, 1), 10);
        }
        assert_eq!(t.overflowed(), 3);
        assert_eq!(t.get(None).unwrap().datagrams, 3);
        let total: u64 = t.rows().iter().map(|(_, c)| c.datagrams).sum();
        assert_eq!(total, 5);
        let mut sum = SourceTable::new(2);
        sum.merge(&t);
        sum.merge(&t);
        assert_eq!(sum.get(Some(key(0, 1))).unwrap().datagrams, 2);
        assert_eq!(sum.get(None).unwrap().datagrams, 6);
    }

    #[test]
    fn the_complete_share_counts_requests_lost_to_gaps_as_incomplete() {
        let mut c = SourceCounters::default();
        assert_eq!(c.complete_share(), None);
        c.paired = 6;
        c.unpaired = 2;
        c.drops[DropReason::MessageGap as usize] = 2;
        c.drops[DropReason::DuplicateSegment as usize] = 50;
        assert_eq!(c.complete_share(), Some(0.6));
    }
}
