//! Forwarding: a bounded queue between the receive workers and the senders, and a hyper client
//! (keep-alive pool, http or https with rustls) that delivers each extracted request to the one
//! configured upstream.
//!
//! Invariants:
//! - A worker never waits: [`ForwardQueue::try_submit`] either enqueues or returns the drop reason.
//! - The queue is bounded in requests (`--queue-capacity`) and bytes (`--queue-max-bytes`), so
//!   memory stays bounded whatever the upstream does.
//! - Each sender task holds one keep-alive connection and connects BEFORE taking a request: while
//!   the upstream is down, requests stay queued (and the full queue drops new ones, counted)
//!   instead of being burnt on connect errors. While connecting fails, attempts are serialised
//!   and spaced by a doubling backoff (up to 2 s): no connect or retry storms.
//! - A request is written at most once: it is sent again (once) only when hyper hands it back
//!   unsent; after a timeout or an I/O error mid-request it is dropped and counted.
//! - The connection always goes to the configured upstream; the Host header is only a header.

//!
//! Layout, in the order a request goes: [`queue`] (the bounded hand-off from the workers),
//! [`rewrite`] (extracted request → upstream request), [`sender`] (keep-alive connections,
//! backoff, the idle prober); [`upstream`] holds the configuration and the connector.

mod queue;
mod rewrite;
mod sender;
#[cfg(test)]
mod tests;
mod upstream;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;

use crate::daemon::telemetry::Telemetry;
pub use queue::ForwardQueue;
use queue::{QueueState, Queued};
pub use rewrite::{RewriteError, TRUNCATED_HEADER, upstream_request};
use sender::{Delivery, probe_loop, sender_loop};
pub use upstream::{ConfigError, ForwardConfig, Upstream};
pub(crate) use upstream::{Connector, build_connector};

/// The sender side: `concurrency` sender tasks, each owning one keep-alive connection to the
/// upstream, taking requests from the queue one at a time; plus a prober that checks the
/// upstream while no request reaches it.
pub struct Forwarder {
    rx: mpsc::Receiver<Queued>,
    state: Arc<QueueState>,
    inner: Arc<Delivery>,
}

/// Creates the queue and the forwarder.
pub fn channel(cfg: ForwardConfig, telemetry: Arc<Telemetry>) -> (ForwardQueue, Forwarder) {
    let (tx, rx) = mpsc::channel(cfg.queue_capacity);
    let state = Arc::new(QueueState::default());
    telemetry.set_queue_capacity(cfg.queue_capacity as u64);
    let queue = ForwardQueue {
        tx,
        state: state.clone(),
        max_bytes: cfg.queue_max_bytes.min(i64::MAX as usize) as i64,
        telemetry: telemetry.clone(),
    };
    let inner = Arc::new(Delivery::new(cfg, telemetry));
    (queue, Forwarder { rx, state, inner })
}

impl Forwarder {
    /// Runs until every queue handle is dropped and the queue is drained.
    pub async fn run(self) {
        let inner = self.inner.clone();
        let prober = tokio::spawn(probe_loop(inner.clone()));
        let rx = Arc::new(tokio::sync::Mutex::new(self.rx));
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..inner.cfg.concurrency {
            senders.spawn(sender_loop(inner.clone(), rx.clone(), self.state.clone()));
        }
        while senders.join_next().await.is_some() {}
        inner.telemetry.set_in_flight(0);
        prober.abort();
    }

    /// Requests queued or in flight now (what a shutdown deadline would drop).
    pub fn pending_handle(&self) -> PendingHandle {
        PendingHandle {
            state: self.state.clone(),
            inner: Some(self.inner.clone()),
            taken: None,
        }
    }
}

/// Reads how many requests are still queued or in flight.
#[derive(Clone)]
pub struct PendingHandle {
    state: Arc<QueueState>,
    inner: Option<Arc<Delivery>>,
    /// Requests taken from the queue by another sink and not delivered yet.
    taken: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl PendingHandle {
    pub fn pending(&self) -> u64 {
        self.state.depth.load(Relaxed).max(0) as u64
            + self.inner.as_ref().map_or(0, |i| i.busy.load(Relaxed))
            + self.taken.as_ref().map_or(0, |t| t.load(Relaxed))
    }
}

/// The receiving end of the queue for a sink other than the senders (the ndjson sink): the
/// same bounds, counters and accounting.
pub struct QueueReceiver {
    rx: mpsc::Receiver<Queued>,
    state: Arc<QueueState>,
    telemetry: Arc<Telemetry>,
    /// Requests taken and not yet delivered or dropped (the sink keeps it).
    pub taken: Arc<std::sync::atomic::AtomicU64>,
}

impl QueueReceiver {
    fn taken(&mut self, q: Queued) -> crate::engine::request::HttpRequest {
        self.state.depth.fetch_sub(1, Relaxed);
        self.state.bytes.fetch_sub(q.size as i64, Relaxed);
        self.state.publish(&self.telemetry);
        self.taken.fetch_add(1, Relaxed);
        q.req
    }

    /// The next request, waiting for one; `None` once every queue handle is gone.
    pub async fn recv(&mut self) -> Option<crate::engine::request::HttpRequest> {
        let q = self.rx.recv().await?;
        Some(self.taken(q))
    }

    /// The next request if one is queued.
    pub fn try_recv(&mut self) -> Option<crate::engine::request::HttpRequest> {
        let q = self.rx.try_recv().ok()?;
        Some(self.taken(q))
    }

    /// How many requests are still queued or taken and not delivered.
    pub fn pending_handle(&self) -> PendingHandle {
        PendingHandle {
            state: self.state.clone(),
            inner: None,
            taken: Some(self.taken.clone()),
        }
    }
}

/// The bounded queue alone (the workers' side and a receiving end), for a sink other than
/// the senders.
pub fn queue(cfg: &ForwardConfig, telemetry: Arc<Telemetry>) -> (ForwardQueue, QueueReceiver) {
    let (tx, rx) = mpsc::channel(cfg.queue_capacity);
    let state = Arc::new(QueueState::default());
    telemetry.set_queue_capacity(cfg.queue_capacity as u64);
    let queue = ForwardQueue {
        tx,
        state: state.clone(),
        max_bytes: cfg.queue_max_bytes.min(i64::MAX as usize) as i64,
        telemetry: telemetry.clone(),
    };
    (
        queue,
        QueueReceiver {
            rx,
            state,
            telemetry,
            taken: Arc::default(),
        },
    )
}
