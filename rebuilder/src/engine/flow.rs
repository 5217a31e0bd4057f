//! The flow table: one entry per direction of a TCP connection, keyed by
//! (GWLB endpoint, VNI, source ip:port, destination ip:port), the two directions linked when
//! both are seen.
//!
//! Entries live in a slab (chunks of at most 256 KiB, never moved) indexed by `u32`; a hash
//! index ([`index`]: slot numbers with a 32-bit tag of the key's foldhash, randomly seeded;
//! keys compared in the slab so each key is stored once) maps keys to slots; two intrusive
//! doubly linked lists order the entries: **open** ones by recency (LRU) and **closed** ones
//! by closing time. At the cap, a closed entry is evicted first,
//! else the least recently used open one.
//!
//! The LRU is maintained lazily (second chance): a packet only stamps its own entry
//! (`touch`), it does not relink it, which would touch two more random entries per packet.
//! Entries touched since they were linked are moved to the front when they reach the tail
//! during expiry or eviction. Every operation is O(1) amortized.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

mod index;

use index::{Index, tag_of};

/// Identity of one direction of a connection: (GWLB endpoint, VNI, source ip:port,
/// destination ip:port), stored compactly (addresses as 16 bytes, IPv4 mapped) so that
/// comparing keys is a few word compares.
///
/// The GWLB endpoint id is the address *domain*: mirrors that arrive through different
/// Gateway Load Balancer endpoints come from different VPCs (or accounts), which may reuse
/// the same private addresses and even the same VNI. Traffic received as plain VXLAN has no
/// endpoint (a domain of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct FlowKey {
    src_ip: [u8; 16],
    dst_ip: [u8; 16],
    /// The endpoint id as two words (keeps the key 4-aligned); meaningful when `has_gwlbe`.
    gwlbe: [u32; 2],
    vni: u32,
    src_port: u16,
    dst_port: u16,
    v4: bool,
    has_gwlbe: bool,
}

fn ip_bytes(ip: IpAddr) -> ([u8; 16], bool) {
    match ip {
        IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), true),
        IpAddr::V6(a) => (a.octets(), false),
    }
}

impl FlowKey {
    /// The key of direction `src` → `dst` under `vni`. Mixed address families do not occur
    /// in one packet; the family of `src` is recorded.
    #[inline]
    pub fn new(vni: u32, src: SocketAddr, dst: SocketAddr) -> FlowKey {
        let (src_ip, v4) = ip_bytes(src.ip());
        let (dst_ip, _) = ip_bytes(dst.ip());
        FlowKey {
            src_ip,
            dst_ip,
            gwlbe: [0; 2],
            vni,
            src_port: src.port(),
            dst_port: dst.port(),
            v4,
            has_gwlbe: false,
        }
    }

    /// The key of direction `src` → `dst` (IPv4 addresses and ports as on the wire) under
    /// `vni`: what [`FlowKey::new`] makes of the same addresses, without building them.
    #[inline]
    pub fn v4(vni: u32, src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> FlowKey {
        let mapped = |a: [u8; 4]| Ipv4Addr::from(a).to_ipv6_mapped().octets();
        FlowKey {
            src_ip: mapped(src.0),
            dst_ip: mapped(dst.0),
            gwlbe: [0; 2],
            vni,
            src_port: src.1,
            dst_port: dst.1,
            v4: true,
            has_gwlbe: false,
        }
    }

    /// The same direction in the address domain of GWLB endpoint `gwlbe` (`None`: traffic
    /// that came through no endpoint).
    #[inline]
    pub fn in_domain(mut self, gwlbe: Option<u64>) -> FlowKey {
        let id = gwlbe.unwrap_or(0);
        self.gwlbe = [(id >> 32) as u32, id as u32];
        self.has_gwlbe = gwlbe.is_some();
        self
    }

    /// The GWLB endpoint of the key's domain, if any.
    pub fn gwlbe(&self) -> Option<u64> {
        self.has_gwlbe
            .then(|| (u64::from(self.gwlbe[0]) << 32) | u64::from(self.gwlbe[1]))
    }

    fn addr(&self, ip: [u8; 16], port: u16) -> SocketAddr {
        let v6 = Ipv6Addr::from(ip);
        let ip = match (self.v4, v6.to_ipv4_mapped()) {
            (true, Some(v4)) => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, port)
    }

    /// VXLAN VNI (0 for plain frames).
    pub fn vni(&self) -> u32 {
        self.vni
    }

    /// Sender.
    pub fn src(&self) -> SocketAddr {
        self.addr(self.src_ip, self.src_port)
    }

    /// Receiver.
    pub fn dst(&self) -> SocketAddr {
        self.addr(self.dst_ip, self.dst_port)
    }

    /// The other direction.
    pub fn reverse(&self) -> FlowKey {
        FlowKey {
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            gwlbe: self.gwlbe,
            vni: self.vni,
            src_port: self.dst_port,
            dst_port: self.src_port,
            v4: self.v4,
            has_gwlbe: self.has_gwlbe,
        }
    }
}

/// Six 64-bit words (the addresses, the endpoint, VNI and ports): cheaper for the hasher than
/// the field-by-field derive with its length prefixes. `v4` and `has_gwlbe` are left out (equal
/// keys still hash equally; they never tell otherwise-equal keys apart in practice).
impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        let word =
            |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        h.write_u64(word(&self.src_ip, 0));
        h.write_u64(word(&self.src_ip, 8));
        h.write_u64(word(&self.dst_ip, 0));
        h.write_u64(word(&self.dst_ip, 8));
        h.write_u64((u64::from(self.gwlbe[0]) << 32) | u64::from(self.gwlbe[1]));
        h.write_u64(
            (u64::from(self.vni) << 32)
                | (u64::from(self.src_port) << 16)
                | u64::from(self.dst_port),
        );
    }
}

/// Which list an entry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Receiving: on the LRU list, expired after the idle timeout.
    Open,
    /// Closed (FIN reached or RST): kept for the linger time to absorb retransmissions.
    Closed,
}

const NONE: u32 = u32::MAX;

/// One entry: the caller's state plus the table's bookkeeping (key and bookkeeping first:
/// the lookup reads the key, the packet path the stamp, in the same lines).
#[derive(Debug)]
#[repr(C)]
pub struct Entry<T> {
    /// The key.
    pub key: FlowKey,
    lifecycle: Lifecycle,
    /// Time of the last packet (open) or of closing (closed).
    pub stamp_us: u64,
    /// When it was (re)linked at the front of its list; lists are sorted by it.
    linked_us: u64,
    prev: u32,
    next: u32,
    peer: u32,
    /// The caller's per-direction state.
    pub value: T,
}

impl<T> Entry<T> {
    /// Open or closed.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }
    /// Slot of the other direction, if tracked.
    pub fn peer(&self) -> Option<u32> {
        (self.peer != NONE).then_some(self.peer)
    }
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32, // most recent
    tail: u32, // least recent
}

const EMPTY: List = List {
    head: NONE,
    tail: NONE,
};

/// An entry removed from the table (evicted or expired).
#[derive(Debug)]
pub struct Removed<T> {
    /// Its key.
    pub key: FlowKey,
    /// Its state.
    pub value: T,
    /// Whether it was open (not closed) when removed.
    pub was_open: bool,
    /// Its last packet's time (open), or its closing time (closed): what
    /// [`FlowTable::pop_expired`] counts the idle timeout or the linger from.
    pub stamp_us: u64,
}

/// The table.
///
/// Invariants:
/// - `index` holds `i` (under the hash of `k`) ⇔ slot `i` is `Some` with key `k`; `len`
///   counts the `Some` slots.
/// - Every live entry is on exactly the list of its `lifecycle`; `free` holds the `None` slots.
/// - Along each list from head to tail `linked_us` does not increase, and
///   `stamp_us >= linked_us` for open entries (a packet since linking ⇔ `>`).
/// - `peer` links are symmetric: slot `i`'s peer is `j` ⇔ slot `j`'s peer is `i`, and exist
///   exactly when both `k` and `k.reverse()` are in the table.
#[derive(Debug)]
pub struct FlowTable<T> {
    /// The slab, in fixed-size chunks: growing it never moves (or copies) entries, so a
    /// large table has no reallocation peak (old and new copies resident at once).
    chunks: Vec<Vec<Option<Entry<T>>>>,
    /// Slots handed out so far (live or free).
    slots: usize,
    free: Vec<u32>,
    index: Index,
    hasher: foldhash::fast::RandomState,
    lists: [List; 2],
    cap: usize,
    len: usize,
}

/// Entries per slab chunk: the largest power of two whose chunk fits 256 KiB, so that a chunk
/// stays within the allocator's size class of that size (an entry of 264 bytes in chunks of
/// 1,024 took the next class up, and with eagerly committed memory ~6 MiB more RSS at 72,000
/// directions), and finding a slot's chunk is a shift, not a division (every access to an
/// entry pays it: ~3 % of a replay's instructions with 840-entry chunks).
const fn chunk_len<T>() -> usize {
    let size = std::mem::size_of::<Option<Entry<T>>>();
    let mut n = 1;
    while n * 2 * size <= 256 * 1024 {
        n *= 2;
    }
    n
}

#[inline]
fn slot<T>(chunks: &[Vec<Option<Entry<T>>>], i: u32) -> &Option<Entry<T>> {
    let i = i as usize;
    &chunks[i / chunk_len::<T>()][i % chunk_len::<T>()]
}

#[inline]
fn slot_mut<T>(chunks: &mut [Vec<Option<Entry<T>>>], i: u32) -> &mut Option<Entry<T>> {
    let i = i as usize;
    &mut chunks[i / chunk_len::<T>()][i % chunk_len::<T>()]
}

/// Prefetches every cache line of `*v` (a hint to the CPU; no-op off x86_64).
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch_lines<V>(v: &V) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = (v as *const V).cast::<i8>();
        let size = std::mem::size_of::<V>();
        let mut off = 0;
        while off < size {
            // SAFETY: PREFETCHT0 (SSE, part of the x86_64 baseline) is a hint: it never faults,
            // reads nothing into the program and writes nothing; the address is inside `*v`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
            off += 64;
        }
        // The last line, when `*v` does not start on a line boundary. SAFETY: as above.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(size.saturating_sub(1))) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

fn list_index(l: Lifecycle) -> usize {
    match l {
        Lifecycle::Open => 0,
        Lifecycle::Closed => 1,
    }
}

impl<T> FlowTable<T> {
    /// An empty table holding at most `cap` entries (at least 1). The hash index has room
    /// for up to 65,536 entries from the start (a few hundred KiB), so that a busy table does
    /// not rehash on the packet path; the slab grows as needed (pre-sizing it would make the
    /// allocator hand out, and the kernel back, memory no flow uses).
    pub fn new(cap: usize) -> FlowTable<T> {
        let reserve = cap.clamp(1, 1 << 16);
        FlowTable {
            chunks: Vec::new(),
            slots: 0,
            free: Vec::new(),
            index: Index::with_capacity(reserve),
            hasher: foldhash::fast::RandomState::default(),
            lists: [EMPTY; 2],
            cap: cap.max(1),
            len: 0,
        }
    }

    /// Entries tracked.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No entry tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slot of `key`.
    #[inline]
    pub fn find(&self, key: &FlowKey) -> Option<u32> {
        let chunks = &self.chunks;
        self.index.find(self.tag(key), |i| {
            slot(chunks, i).as_ref().is_some_and(|e| e.key == *key)
        })
    }

    /// The index tag of `key`.
    #[inline]
    pub fn tag(&self, key: &FlowKey) -> u32 {
        tag_of(self.hasher.hash_one(key))
    }

    /// Asks the CPU to start loading the entry of the key whose tag ([`FlowTable::tag`]) is
    /// `tag` (every entry stored under that tag) into its cache, without waiting: called for
    /// the next packet while the current one is processed, so that [`FlowTable::find`] and the
    /// packet's work on its direction do not stall on memory. A hint: it changes nothing and
    /// costs an index probe.
    #[inline]
    pub fn prefetch(&self, tag: u32) {
        let chunks = &self.chunks;
        for i in self.index.candidates(tag) {
            if (i as usize) < self.slots {
                prefetch_lines(slot(chunks, i));
            }
        }
    }

    /// The first step of [`FlowTable::prefetch`], one packet earlier: asks for the index
    /// line a lookup of `tag` ([`FlowTable::tag`]) starts at, so that the probe that
    /// prefetch makes for the same key a packet later finds it in the cache.
    #[inline]
    pub fn prefetch_index(&self, tag: u32) {
        prefetch_lines(self.index.home_line(tag));
    }

    /// The entry in slot `i` (which must be live).
    #[inline]
    pub fn entry(&self, i: u32) -> &Entry<T> {
        slot(&self.chunks, i).as_ref().expect("live slot")
    }

    /// The entry in slot `i` (which must be live).
    #[inline]
    pub fn entry_mut(&mut self, i: u32) -> &mut Entry<T> {
        slot_mut(&mut self.chunks, i).as_mut().expect("live slot")
    }

    /// The entry in slot `i`, if live (slots are reused: check the key if it matters).
    pub fn get_mut(&mut self, i: u32) -> Option<&mut Entry<T>> {
        if (i as usize) < self.slots {
            slot_mut(&mut self.chunks, i).as_mut()
        } else {
            None
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next, l) = {
            let e = self.entry(i);
            (e.prev, e.next, list_index(e.lifecycle))
        };
        if prev == NONE {
            self.lists[l].head = next;
        } else {
            self.entry_mut(prev).next = next;
        }
        if next == NONE {
            self.lists[l].tail = prev;
        } else {
            self.entry_mut(next).prev = prev;
        }
    }

    fn push_front(&mut self, i: u32, lifecycle: Lifecycle, linked_us: u64) {
        let l = list_index(lifecycle);
        let head = self.lists[l].head;
        let linked_us = if head == NONE {
            linked_us
        } else {
            linked_us.max(self.entry(head).linked_us)
        };
        {
            let e = self.entry_mut(i);
            e.lifecycle = lifecycle;
            e.linked_us = linked_us;
            e.prev = NONE;
            e.next = head;
        }
        if head == NONE {
            self.lists[l].tail = i;
        } else {
            self.entry_mut(head).prev = i;
        }
        self.lists[l].head = i;
    }

    /// Records a packet at `now_us` on an open entry (it is moved to the front of the LRU
    /// lazily). A closed entry keeps its closing time.
    #[inline]
    pub fn touch(&mut self, i: u32, now_us: u64) {
        let e = self.entry_mut(i);
        if e.lifecycle == Lifecycle::Open && now_us > e.stamp_us {
            e.stamp_us = now_us;
        }
    }

    /// Moves the open list's tail to the front if it was touched since it was linked;
    /// returns whether it did.
    fn second_chance(&mut self) -> bool {
        let tail = self.lists[0].tail;
        if tail == NONE {
            return false;
        }
        let (stamp, linked) = {
            let e = self.entry(tail);
            (e.stamp_us, e.linked_us)
        };
        if stamp <= linked || self.lists[0].head == tail {
            return false;
        }
        self.unlink(tail);
        self.push_front(tail, Lifecycle::Open, stamp);
        true
    }

    /// Moves an entry to the closed list (or back to the open one), stamped `now_us`.
    pub fn set_lifecycle(&mut self, i: u32, lifecycle: Lifecycle, now_us: u64) {
        if self.entry(i).lifecycle == lifecycle {
            return;
        }
        self.unlink(i);
        self.entry_mut(i).stamp_us = now_us;
        self.push_front(i, lifecycle, now_us);
    }

    /// Inserts a new open entry for `key` (which must be absent). When the table is full,
    /// first removes and returns the victim (a closed entry if any, else the LRU open one).
    pub fn insert(&mut self, key: FlowKey, value: T, now_us: u64) -> (u32, Option<Removed<T>>) {
        debug_assert!(self.find(&key).is_none());
        let evicted = if self.len >= self.cap {
            let victim = if self.lists[1].tail != NONE {
                self.lists[1].tail
            } else {
                while self.second_chance() {}
                self.lists[0].tail
            };
            Some(self.remove(victim))
        } else {
            None
        };
        let peer = self.find(&key.reverse()).unwrap_or(NONE);
        let entry = Entry {
            key,
            value,
            stamp_us: now_us,
            linked_us: now_us,
            lifecycle: Lifecycle::Open,
            prev: NONE,
            next: NONE,
            peer,
        };
        let i = match self.free.pop() {
            Some(i) => {
                *slot_mut(&mut self.chunks, i) = Some(entry);
                i
            }
            None => {
                if self
                    .chunks
                    .last()
                    .is_none_or(|c| c.len() == chunk_len::<T>())
                {
                    self.chunks.push(Vec::with_capacity(chunk_len::<T>()));
                }
                self.chunks.last_mut().expect("a chunk").push(Some(entry));
                self.slots += 1;
                (self.slots - 1) as u32
            }
        };
        if peer != NONE {
            self.entry_mut(peer).peer = i;
        }
        let tag = self.tag(&key);
        self.index.insert(tag, i);
        self.len += 1;
        self.push_front(i, Lifecycle::Open, now_us);
        (i, evicted)
    }

    /// Removes slot `i` (which must be live).
    pub fn remove(&mut self, i: u32) -> Removed<T> {
        self.unlink(i);
        let e = slot_mut(&mut self.chunks, i).take().expect("live slot");
        if e.peer != NONE
            && let Some(p) = slot_mut(&mut self.chunks, e.peer).as_mut()
        {
            p.peer = NONE;
        }
        let indexed = self.index.remove(self.tag(&e.key), i);
        debug_assert!(indexed, "a live slot is indexed");
        self.free.push(i);
        self.len -= 1;
        Removed {
            key: e.key,
            value: e.value,
            was_open: e.lifecycle == Lifecycle::Open,
            stamp_us: e.stamp_us,
        }
    }

    /// Removes and returns one entry that is due: an open one idle since before
    /// `now - idle_us`, or a closed one closed before `now - linger_us`.
    pub fn pop_expired(&mut self, now_us: u64, idle_us: u64, linger_us: u64) -> Option<Removed<T>> {
        let tail = self.lists[1].tail;
        if tail != NONE && self.entry(tail).stamp_us.saturating_add(linger_us) <= now_us {
            return Some(self.remove(tail));
        }
        loop {
            let tail = self.lists[0].tail;
            if tail == NONE {
                return None;
            }
            let e = self.entry(tail);
            if e.stamp_us.saturating_add(idle_us) <= now_us {
                return Some(self.remove(tail));
            }
            // Not idle. If it was linked long ago it was touched since: move it up and look
            // at the next one; otherwise every entry was linked recently enough.
            if e.linked_us.saturating_add(idle_us) > now_us || !self.second_chance() {
                return None;
            }
        }
    }

    /// Pushes onto `out` the open entries that have had no packet since `now_us -
    /// min_idle_us`, neither they nor their peer, and for which `pick` holds, least recently
    /// linked first; at most `max_look` entries are looked at. Changes nothing. The walk stops
    /// at the first entry linked after `now_us - min_idle_us`: every entry after it on the
    /// list had a packet since (`stamp_us >= linked_us`).
    pub fn idle_open(
        &self,
        now_us: u64,
        min_idle_us: u64,
        max_look: usize,
        mut pick: impl FnMut(&Entry<T>) -> bool,
        out: &mut Vec<u32>,
    ) {
        let idle = |stamp_us: u64| stamp_us.saturating_add(min_idle_us) <= now_us;
        let mut i = self.lists[0].tail;
        let mut looked = 0;
        while i != NONE && looked < max_look {
            let e = self.entry(i);
            if !idle(e.linked_us) {
                break;
            }
            looked += 1;
            if idle(e.stamp_us) && e.peer().is_none_or(|p| idle(self.entry(p).stamp_us)) && pick(e)
            {
                out.push(i);
            }
            i = e.prev;
        }
    }

    /// Removes and returns some entry, closed ones first (end of input: call until `None`;
    /// one at a time, so that emptying a large table allocates nothing).
    pub fn pop_any(&mut self) -> Option<Removed<T>> {
        let victim = [self.lists[1].tail, self.lists[0].tail]
            .into_iter()
            .find(|&i| i != NONE)?;
        Some(self.remove(victim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> FlowKey {
        FlowKey::new(
            1,
            SocketAddr::from(([10, 0, 0, 1], n)),
            SocketAddr::from(([10, 0, 0, 2], 80)),
        )
    }

    #[test]
    fn a_key_built_from_ipv4_bytes_is_the_key_of_the_same_addresses() {
        let a = SocketAddr::from(([192, 0, 2, 7], 40000));
        let b = SocketAddr::from(([198, 51, 100, 1], 443));
        let k = FlowKey::v4(5, ([192, 0, 2, 7], 40000), ([198, 51, 100, 1], 443));
        assert_eq!(k, FlowKey::new(5, a, b));
        let h = foldhash::fast::RandomState::default();
        assert_eq!(h.hash_one(k), h.hash_one(FlowKey::new(5, a, b)));
    }

    #[test]
    fn keys_round_trip_addresses_of_both_families() {
        for (a, b) in [
            ("10.0.0.1:1234", "10.0.0.2:80"),
            ("[fd00::1]:5", "[fd00::2]:6"),
            ("[::ffff:10.0.0.1]:7", "[::ffff:10.0.0.2]:8"),
        ] {
            let (a, b): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
            let k = FlowKey::new(9, a, b);
            assert_eq!((k.vni(), k.src(), k.dst()), (9, a, b));
            assert_eq!(k.reverse(), FlowKey::new(9, b, a));
            assert_ne!(k, k.reverse());
        }
        let v4 = FlowKey::new(
            1,
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.2:2".parse().unwrap(),
        );
        let mapped = FlowKey::new(
            1,
            "[::ffff:10.0.0.1]:1".parse().unwrap(),
            "[::ffff:10.0.0.2]:2".parse().unwrap(),
        );
        assert_ne!(v4, mapped);
    }

    fn check<T>(t: &FlowTable<T>) {
        let mut seen = 0;
        for l in 0..2 {
            let mut i = t.lists[l].head;
            let mut prev = NONE;
            while i != NONE {
                let e = t.entry(i);
                assert_eq!(e.prev, prev);
                assert_eq!(list_index(e.lifecycle), l);
                if prev != NONE {
                    assert!(
                        t.entry(prev).linked_us >= e.linked_us,
                        "sorted by link time"
                    );
                }
                assert_eq!(t.find(&e.key), Some(i));
                if let Some(p) = e.peer() {
                    assert_eq!(t.entry(p).peer(), Some(i));
                    assert_eq!(t.entry(p).key, e.key.reverse());
                }
                prev = i;
                i = e.next;
                seen += 1;
            }
            assert_eq!(t.lists[l].tail, prev);
        }
        assert_eq!(seen, t.len());
        assert_eq!(t.index.len(), t.len());
    }

    #[test]
    fn least_recently_used_open_entry_is_evicted_at_the_cap() {
        let mut t = FlowTable::new(3);
        let a = t.insert(key(1), "a", 1).0;
        t.insert(key(2), "b", 2);
        t.insert(key(3), "c", 3);
        t.touch(a, 4);
        let (_, ev) = t.insert(key(4), "d", 5);
        let ev = ev.unwrap();
        assert_eq!((ev.value, ev.was_open), ("b", true));
        assert_eq!(t.len(), 3);
        check(&t);
    }

    #[test]
    fn touched_entries_get_a_second_chance_before_expiry_and_eviction() {
        let mut t = FlowTable::new(3);
        let a = t.insert(key(1), 'a', 0).0;
        t.insert(key(2), 'b', 10);
        t.insert(key(3), 'c', 20);
        t.touch(a, 500);
        // b is idle past 100 µs, a is not (touched at 500) although it is at the tail.
        assert_eq!(t.pop_expired(520, 100, 0).unwrap().value, 'b');
        assert_eq!(t.pop_expired(520, 100, 0).unwrap().value, 'c');
        assert!(t.pop_expired(520, 100, 0).is_none());
        check(&t);
        t.insert(key(4), 'd', 530);
        t.insert(key(5), 'e', 540);
        t.touch(a, 600);
        let ev = t.insert(key(6), 'f', 610).1.unwrap();
        assert_eq!(ev.value, 'd');
        check(&t);
    }

    #[test]
    fn closed_entries_are_evicted_before_open_ones() {
        let mut t = FlowTable::new(2);
        t.insert(key(1), 1, 1);
        let b = t.insert(key(2), 2, 2).0;
        t.set_lifecycle(b, Lifecycle::Closed, 3);
        let ev = t.insert(key(3), 3, 4).1.unwrap();
        assert_eq!((ev.value, ev.was_open), (2, false));
        check(&t);
    }

    #[test]
    fn both_directions_are_linked_and_unlinked() {
        let mut t = FlowTable::new(10);
        let a = t.insert(key(1), 'a', 0).0;
        let b = t.insert(key(1).reverse(), 'b', 0).0;
        assert_eq!(t.entry(a).peer(), Some(b));
        assert_eq!(t.entry(b).peer(), Some(a));
        assert_eq!((t.entry(a).value, t.entry(b).value), ('a', 'b'));
        check(&t);
        t.remove(a);
        assert_eq!(t.entry(b).peer(), None);
        check(&t);
    }

    #[test]
    fn idle_and_closed_entries_expire_after_their_timeouts() {
        let mut t = FlowTable::new(10);
        t.insert(key(1), 1, 100);
        let b = t.insert(key(2), 2, 100).0;
        t.set_lifecycle(b, Lifecycle::Closed, 150);
        t.insert(key(3), 3, 300);
        assert!(t.pop_expired(159, 1000, 10).is_none());
        assert_eq!(t.pop_expired(160, 1000, 10).unwrap().value, 2);
        assert!(t.pop_expired(1099, 1000, 10).is_none());
        assert_eq!(t.pop_expired(1100, 1000, 10).unwrap().value, 1);
        assert!(t.pop_expired(1100, 1000, 10).is_none());
        assert_eq!(t.len(), 1);
        check(&t);
    }

    #[test]
    fn idle_open_entries_are_listed_oldest_first_unless_they_or_their_peer_had_a_packet() {
        let mut t = FlowTable::new(10);
        let a = t.insert(key(1), 'a', 0).0;
        t.insert(key(2), 'b', 10);
        let c = t.insert(key(3), 'c', 20).0;
        t.insert(key(3).reverse(), 'C', 25);
        t.insert(key(4), 'd', 30);
        let e = t.insert(key(5), 'e', 40).0;
        t.insert(key(6), 'f', 900);
        t.touch(a, 950);
        t.set_lifecycle(e, Lifecycle::Closed, 45);
        t.touch(c, 60);
        let mut out = Vec::new();
        // Idle since before 1000 - 500: b, c (its last packet at 60, its peer's at 25), C and
        // d; a had a packet at 950, e is closed, f is recent.
        t.idle_open(1000, 500, usize::MAX, |_| true, &mut out);
        let names: Vec<char> = out.iter().map(|&i| t.entry(i).value).collect();
        assert_eq!(names, ['b', 'c', 'C', 'd']);
        out.clear();
        t.idle_open(1000, 500, usize::MAX, |e| e.value != 'c', &mut out);
        let names: Vec<char> = out.iter().map(|&i| t.entry(i).value).collect();
        assert_eq!(names, ['b', 'C', 'd']);
        out.clear();
        // A peer's packet keeps its direction out; at most `max_look` entries are looked at.
        let cc = t.find(&key(3).reverse()).unwrap();
        t.touch(cc, 990);
        t.idle_open(1000, 500, 3, |_| true, &mut out);
        let names: Vec<char> = out.iter().map(|&i| t.entry(i).value).collect();
        assert_eq!(names, ['b']);
        out.clear();
        // Nothing is idle for long enough.
        t.idle_open(1000, 995, usize::MAX, |_| true, &mut out);
        assert!(out.is_empty());
        check(&t);
    }

    #[test]
    fn slots_are_reused_and_pop_any_empties_the_table() {
        let mut t = FlowTable::new(100);
        for round in 0..3 {
            for n in 0..50 {
                t.insert(key(n), n, round);
            }
            check(&t);
            let mut n = 0;
            while t.pop_any().is_some() {
                n += 1;
            }
            assert_eq!(n, 50);
            assert!(t.is_empty());
        }
        assert_eq!(t.slots, 50);
    }
}
