//! The `eni` label of the per-source metrics, bounded.
//!
//! The workers count by source key ([`crate::engine::source`]); at scrape time the keys are
//! summed, named through the source map in force ([`crate::sources`]) and labelled:
//!
//! - `unknown`: keys the map does not have (and every key while there is no map);
//! - an ENI id: at most `--source-metrics-top` ENIs get a label of their own. A free slot goes
//!   to the heaviest ENI (by bytes) not labelled yet, and a label, once given, is kept for the
//!   life of the process: a series never moves to `other` and back, so every counter stays
//!   monotonic;
//! - `other`: the ENIs without a slot, and the keys beyond `--max-source-keys`.
//!
//! Every key lands in exactly one label: the labels add up to the fleet-wide counters.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::workers::SourceQueueDrops;
use crate::engine::source::{SourceCounters, SourceKey, SourceTable};

/// The per-source series of one scrape: counters, and requests the queue refused
/// (`[queue_full, queue_bytes]`), by label.
#[derive(Debug, Default)]
pub struct Labelled {
    pub counters: Vec<(String, SourceCounters)>,
    pub queue_drops: Vec<(String, [u64; 2])>,
}
use crate::sources::SharedSources;

/// The label of keys not in the map.
pub const UNKNOWN: &str = "unknown";
/// The label of ENIs without a slot and of keys beyond the key cap.
pub const OTHER: &str = "other";

#[derive(Debug, Default)]
struct Slots {
    map: Option<Arc<SharedSources>>,
    top: usize,
    labelled: HashSet<String>,
}

/// The source map and the label slots given so far.
#[derive(Debug, Default)]
pub struct SourceLabels {
    slots: Mutex<Slots>,
}

impl SourceLabels {
    /// Names ENIs through `map`, at most `top` of them.
    pub fn configure(&self, map: Arc<SharedSources>, top: usize) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.map = Some(map);
        s.top = top;
    }

    /// Entries in force, documents loaded, documents refused.
    pub fn map_counts(&self) -> [u64; 3] {
        let s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match &s.map {
            Some(m) => {
                let (ok, err) = m.load_counts();
                [m.get().len() as u64, ok, err]
            }
            None => [0; 3],
        }
    }

    /// `table`'s rows and `queue`'s counts by label: the labelled ENIs (sorted), then `other`,
    /// then `unknown`.
    pub fn label(&self, table: &SourceTable, queue: &SourceQueueDrops) -> Labelled {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let map = s.map.as_ref().map(|m| m.get());
        let mut by_eni: HashMap<String, SourceCounters> = HashMap::new();
        let mut other = SourceCounters::default();
        let mut unknown = SourceCounters::default();
        for (key, c) in table.rows() {
            match key {
                None => other.merge(&c),
                Some(k) => match map.as_ref().and_then(|m| m.eni(&k)) {
                    Some(eni) => by_eni.entry(eni.to_owned()).or_default().merge(&c),
                    None => unknown.merge(&c),
                },
            }
        }
        let free = s.top.saturating_sub(s.labelled.len());
        if free > 0 {
            let mut candidates: Vec<(&String, u64)> = by_eni
                .iter()
                .filter(|(e, _)| !s.labelled.contains(*e))
                .map(|(e, c)| (e, c.bytes))
                .collect();
            candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            let chosen: Vec<String> = candidates
                .into_iter()
                .take(free)
                .map(|(e, _)| e.clone())
                .collect();
            s.labelled.extend(chosen);
        }
        let mut out: Vec<(String, SourceCounters)> = s
            .labelled
            .iter()
            .map(|e| (e.clone(), SourceCounters::default()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        for (eni, c) in by_eni {
            match out.binary_search_by(|(e, _)| e.as_str().cmp(&eni)) {
                Ok(i) => out[i].1.merge(&c),
                Err(_) => other.merge(&c),
            }
        }
        out.push((OTHER.to_owned(), other));
        out.push((UNKNOWN.to_owned(), unknown));
        // The same labels for the queue's refusals.
        let label_of = |key: Option<SourceKey>| -> usize {
            let other = out.len() - 2;
            let Some(k) = key else { return other };
            match map.as_ref().and_then(|m| m.eni(&k)) {
                None => out.len() - 1,
                Some(eni) => out[..other]
                    .binary_search_by(|(e, _)| e.as_str().cmp(eni))
                    .unwrap_or(other),
            }
        };
        let mut queue_drops: Vec<(String, [u64; 2])> =
            out.iter().map(|(l, _)| (l.clone(), [0, 0])).collect();
        for (key, n) in queue.iter() {
            let i = label_of(key);
            queue_drops[i].1[0] += n[0];
            queue_drops[i].1[1] += n[1];
        }
        Labelled {
            counters: out,
            queue_drops,
        }
    }
}
