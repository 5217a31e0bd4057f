//! The receive workers' side of telemetry: plain counters, published into one slot per
//! worker on every timer tick, summed at scrape time.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::engine::source::SourceKey;
use crate::engine::stats::EngineStats;

/// Requests a worker could not queue, by the key of their source: `[queue_full,
/// queue_bytes]`. At most `max` keys; further keys share the entry `None` (`eni="other"`).
#[derive(Debug, Default, Clone)]
pub struct SourceQueueDrops {
    max: usize,
    map: HashMap<Option<SourceKey>, [u64; 2]>,
}

impl SourceQueueDrops {
    /// At most `max` keys (`--max-source-keys`).
    pub fn new(max: usize) -> SourceQueueDrops {
        SourceQueueDrops {
            max,
            map: HashMap::new(),
        }
    }

    /// One request of `key` refused by the queue (`bytes`: at `--queue-max-bytes`, else
    /// at `--queue-capacity`).
    pub fn count(&mut self, key: SourceKey, bytes: bool) {
        let k = Some(key);
        let k = if self.map.contains_key(&k) || self.map.len() < self.max {
            k
        } else {
            None
        };
        self.map.entry(k).or_default()[usize::from(bytes)] += 1;
    }

    /// The counts by key.
    pub fn iter(&self) -> impl Iterator<Item = (Option<SourceKey>, [u64; 2])> + '_ {
        self.map.iter().map(|(k, v)| (*k, *v))
    }

    /// Adds every count of `other` (a sum holds every key of its parts).
    pub fn merge(&mut self, other: &SourceQueueDrops) {
        for (k, v) in &other.map {
            let e = self.map.entry(*k).or_default();
            e[0] += v[0];
            e[1] += v[1];
        }
    }
}

/// Counts kept by a receive worker in plain integers.
#[derive(Debug, Default, Clone)]
pub struct WorkerCounters {
    pub datagrams: u64,
    pub bytes: u64,
    /// Datagrams longer than the receive buffer (dropped).
    pub oversize: u64,
    /// recvmmsg errors other than EAGAIN/EINTR.
    pub recv_errors: u64,
    /// Requests the engine emitted.
    pub extracted: u64,
    /// Requests dropped by this worker because the queue was full (count, bytes).
    pub queue_full: u64,
    pub queue_bytes: u64,
    /// The same two, by source.
    pub source_queue_drops: SourceQueueDrops,
}

impl WorkerCounters {
    /// Adds every counter of `other` (workers are summed for metrics).
    pub(crate) fn merge(&mut self, other: &WorkerCounters) {
        self.datagrams += other.datagrams;
        self.bytes += other.bytes;
        self.oversize += other.oversize;
        self.recv_errors += other.recv_errors;
        self.extracted += other.extracted;
        self.queue_full += other.queue_full;
        self.queue_bytes += other.queue_bytes;
        self.source_queue_drops.merge(&other.source_queue_drops);
    }
}

/// What one worker last published (a copy, taken ~10 times a second; the lock is only ever
/// contended by a metrics scrape).
#[derive(Debug, Default)]
pub struct WorkerSlot {
    inner: Mutex<Published>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Published {
    pub(crate) counters: WorkerCounters,
    pub(crate) engine: EngineStats,
    pub(crate) active_flows: u64,
}

impl WorkerSlot {
    /// Publishes the worker's counters and a copy of its engine's stats.
    pub fn publish(&self, c: &WorkerCounters, stats: &EngineStats, active_flows: usize) {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        p.counters.clone_from(c);
        p.engine.clone_from(stats);
        p.active_flows = active_flows as u64;
    }
    pub(crate) fn get(&self) -> Published {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Sum over workers.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) c: WorkerCounters,
    pub(crate) e: EngineStats,
    pub(crate) active_flows: u64,
}

impl Totals {
    /// The sum of what every worker last published.
    pub(crate) fn of(workers: &[WorkerSlot]) -> Totals {
        let mut t = Totals::default();
        for w in workers {
            let p = w.get();
            t.c.merge(&p.counters);
            t.e.merge(&p.engine);
            t.active_flows += p.active_flows;
        }
        t
    }
}
