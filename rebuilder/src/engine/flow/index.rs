//! The flow table's hash index: open addressing with linear probing over 8-byte slots (a
//! 32-bit tag of the key's hash and the entry's slab slot), in a power-of-two array.
//!
//! Why not hashbrown (which the table used before): a lookup's cost on the bench capture was
//! its cache misses, first on the index and then on the entry, and the replay hides them by
//! asking for both ahead of time: the index line of the packet after next, then (that line
//! now in cache) the entry of the next packet. That needs the address of the line a hash
//! probes first, which hashbrown does not expose. Here it is `slots[home(tag)]`, and a probe
//! rarely leaves it (at most 3/4 full; a line holds 8 slots).
//!
//! The tag is the home position's source too (`home = tag & mask`), so growing the array and
//! deleting (backward shift, no tombstones: probe lengths never degrade with churn) need no
//! hash of the key and never touch the slab. Equal tags are told apart by the caller's key
//! comparison; a tag mismatch saves touching an entry.

/// Empty slot.
const EMPTY: u64 = 0;

/// The index: `slots[p]` is `EMPTY` or `(tag << 32) | (slot + 1)`.
///
/// Invariants: `len` counts the non-empty slots, `len * 4 <= slots.len() * 3`, and every
/// element sits at or after its home position with no empty slot in between (cyclically).
#[derive(Debug)]
pub(super) struct Index {
    slots: Vec<u64>,
    mask: usize,
    len: usize,
}

/// A key's hash folded to the 32-bit tag the index stores.
#[inline]
pub(super) fn tag_of(hash: u64) -> u32 {
    (hash ^ (hash >> 32)) as u32
}

#[inline]
fn pack(tag: u32, slot: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(slot + 1)
}

impl Index {
    /// An index with room for `reserve` elements before it first grows.
    pub(super) fn with_capacity(reserve: usize) -> Index {
        let size = (reserve.max(1) * 4).div_ceil(3).next_power_of_two().max(8);
        Index {
            slots: vec![EMPTY; size],
            mask: size - 1,
            len: 0,
        }
    }

    /// Elements stored.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask
    }

    /// The first slot of `tag` for which `eq` holds.
    #[inline]
    pub(super) fn find(&self, tag: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut p = self.home(tag);
        loop {
            let s = self.slots[p];
            if s == EMPTY {
                return None;
            }
            if (s >> 32) as u32 == tag && eq(s as u32 - 1) {
                return Some(s as u32 - 1);
            }
            p = (p + 1) & self.mask;
        }
    }

    /// Every stored slot under `tag` (candidates: their keys still have to be compared).
    #[inline]
    pub(super) fn candidates(&self, tag: u32) -> impl Iterator<Item = u32> + '_ {
        let mut p = self.home(tag);
        std::iter::from_fn(move || {
            loop {
                let s = self.slots[p];
                if s == EMPTY {
                    return None;
                }
                p = (p + 1) & self.mask;
                if (s >> 32) as u32 == tag {
                    return Some(s as u32 - 1);
                }
            }
        })
    }

    /// Address of the first line a lookup of `tag` reads (for a prefetch).
    #[inline]
    pub(super) fn home_line(&self, tag: u32) -> &u64 {
        &self.slots[self.home(tag)]
    }

    /// Stores `slot` under `tag` (the caller knows it is not stored yet).
    pub(super) fn insert(&mut self, tag: u32, slot: u32) {
        debug_assert!(slot < u32::MAX);
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        self.place(pack(tag, slot));
        self.len += 1;
    }

    fn place(&mut self, packed: u64) {
        let mut p = self.home((packed >> 32) as u32);
        while self.slots[p] != EMPTY {
            p = (p + 1) & self.mask;
        }
        self.slots[p] = packed;
    }

    /// Twice the slots; every element re-placed from its tag alone.
    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; size]);
        self.mask = size - 1;
        for s in old.into_iter().filter(|&s| s != EMPTY) {
            self.place(s);
        }
    }

    /// Removes `slot` (stored under `tag`); false when it is not there.
    pub(super) fn remove(&mut self, tag: u32, slot: u32) -> bool {
        let wanted = pack(tag, slot);
        let mut hole = self.home(tag);
        loop {
            match self.slots[hole] {
                EMPTY => return false,
                s if s == wanted => break,
                _ => hole = (hole + 1) & self.mask,
            }
        }
        // Backward shift: every later element of the run whose home is not cyclically in
        // (hole, p] moves into the hole, which moves to where it was.
        let mut p = hole;
        loop {
            p = (p + 1) & self.mask;
            let s = self.slots[p];
            if s == EMPTY {
                break;
            }
            let home = self.home((s >> 32) as u32);
            let stays = if hole <= p {
                hole < home && home <= p
            } else {
                hole < home || home <= p
            };
            if !stays {
                self.slots[hole] = s;
                hole = p;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }

    /// Bytes the index holds.
    #[cfg(test)]
    pub(super) fn held_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// Every element is found from its home with no empty slot on the way.
    fn check(ix: &Index) {
        let mut n = 0;
        for (p, &s) in ix.slots.iter().enumerate() {
            if s == EMPTY {
                continue;
            }
            n += 1;
            let mut q = ix.home((s >> 32) as u32);
            while q != p {
                assert_ne!(ix.slots[q], EMPTY, "a hole between home and element");
                q = (q + 1) & ix.mask;
            }
        }
        assert_eq!(n, ix.len());
        assert!(ix.len() * 4 <= ix.slots.len() * 3);
    }

    #[test]
    fn colliding_tags_are_told_apart_by_the_callers_comparison() {
        let mut ix = Index::with_capacity(4);
        ix.insert(7, 1);
        ix.insert(7, 2);
        ix.insert(7 + 8, 3); // same home, other tag
        assert_eq!(ix.find(7, |s| s == 2), Some(2));
        assert_eq!(ix.find(7, |s| s == 1), Some(1));
        assert_eq!(ix.find(15, |_| true), Some(3));
        assert_eq!(ix.candidates(7).collect::<Vec<_>>(), vec![1, 2]);
        assert!(ix.remove(7, 1));
        assert!(!ix.remove(7, 1));
        assert_eq!(ix.find(7, |s| s == 2), Some(2));
        assert_eq!(ix.find(15, |_| true), Some(3));
        check(&ix);
    }

    #[test]
    fn an_index_grows_past_its_reservation_and_keeps_every_element() {
        let mut ix = Index::with_capacity(2);
        let before = ix.held_bytes();
        for s in 0..1000u32 {
            ix.insert(s.wrapping_mul(2_654_435_761), s);
        }
        assert!(ix.held_bytes() > before);
        for s in 0..1000u32 {
            assert_eq!(ix.find(s.wrapping_mul(2_654_435_761), |x| x == s), Some(s));
        }
        check(&ix);
    }

    proptest! {
        /// Against a map, under any mix of inserts and removes with tags from a small set
        /// (long runs, wrap-around at the end of the array, equal tags): every stored slot
        /// is found under its tag, no removed one is, and the layout invariant holds.
        #[test]
        fn the_index_agrees_with_a_map_under_inserts_and_removes(
            ops in proptest::collection::vec((any::<bool>(), 0u32..40, 0u32..12), 1..400),
        ) {
            let mut ix = Index::with_capacity(8);
            let mut model: HashMap<u32, u32> = HashMap::new(); // slot -> tag
            for (insert, slot, t) in ops {
                // Tags near the top of the array's range wrap runs around its end.
                let tag = t.wrapping_sub(3);
                if insert {
                    if let std::collections::hash_map::Entry::Vacant(v) = model.entry(slot) {
                        v.insert(tag);
                        ix.insert(tag, slot);
                    }
                } else if let Some(tag) = model.remove(&slot) {
                    prop_assert!(ix.remove(tag, slot));
                } else {
                    prop_assert!(!ix.remove(tag, slot));
                }
                check(&ix);
                for (&s, &t) in &model {
                    prop_assert_eq!(ix.find(t, |x| x == s), Some(s));
                }
                for s in (0..40u32).filter(|s| !model.contains_key(s)) {
                    for t in 0u32..12 {
                        prop_assert_eq!(ix.find(t.wrapping_sub(3), |x| x == s), None);
                    }
                }
            }
        }
    }
}
