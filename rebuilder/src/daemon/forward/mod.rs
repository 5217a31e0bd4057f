//! Forwarding: a bounded queue between the receive workers and the senders, which write each
//! extracted request as HTTP/1.1 bytes of their own (what the origin received: names, order and
//! values byte-exact, see [`rewrite`]) on keep-alive connections (http, or https with rustls)
//! to the one configured upstream, several at a time (pipelining), and read the answers
//! ([`answer`]).
//!
//! Why not an HTTP client library: hyper (like most) Title-Cases or lower-cases names, groups
//! repeated fields and cannot write a request exactly as received; writing the bytes ourselves
//! is also cheaper (one buffer per batch, no header map).
//!
//! Invariants:
//! - A worker never waits: [`ForwardQueue::try_submit`] either enqueues or returns the drop reason.
//! - The queue is bounded in requests (`--queue-capacity`) and bytes (`--queue-max-bytes`), so
//!   memory stays bounded whatever the upstream does.
//! - Each sender task holds one keep-alive connection and connects BEFORE taking a request: while
//!   the upstream is down, requests stay queued (and the full queue drops new ones, counted)
//!   instead of being burnt on connect errors. While connecting fails, attempts are serialised
//!   and spaced by a doubling backoff (up to 2 s): no connect or retry storms.
//! - A request is written at most once: it is sent again (once) only when the upstream cannot
//!   have processed it (not written, or written after an answer that ended the connection);
//!   after a timeout or an I/O error it is dropped and counted.
//! - The connection always goes to the configured upstream; the Host header is only a header.

//!
//! Layout, in the order a request goes: [`queue`] (the bounded hand-off from the workers),
//! [`rewrite`] (extracted request → HTTP/1.1 bytes), [`sender`] (pipelined batches of
//! requests, what is written again), [`connection`] (keep-alive connections, backoff, one
//! write and its answers, the idle prober; the ndjson sink delivers through it too),
//! [`answer`] (reading the upstream's answers); [`upstream`] holds the configuration and the
//! connector.

mod answer;
pub(crate) mod connection;
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
use connection::{Delivery, probe_loop};
pub use queue::ForwardQueue;
use queue::{QueueState, Queued};
pub use rewrite::{
    ANOMALIES_HEADER, CLIENT_HOST_HEADER, CONNECTION_HEADER, MARKER_PREFIX, RewriteError,
    TARGET_HEADER, TRAILER_PREFIX, TRUNCATED_HEADER, Written, write_request,
};
use sender::sender_loop;
pub use upstream::{ConfigError, ForwardConfig, Upstream};

/// The sender side: `concurrency` sender tasks, each owning one keep-alive connection to the
/// upstream, taking requests from the queue; plus a prober that checks the upstream while no
/// request reaches it.
pub struct Forwarder {
    rx: QueueReceiver,
}

/// Creates the queue and the forwarder.
pub fn channel(cfg: ForwardConfig, telemetry: Arc<Telemetry>) -> (ForwardQueue, Forwarder) {
    let (queue, rx) = queue(cfg, telemetry);
    (queue, Forwarder { rx })
}

impl Forwarder {
    /// Runs until every queue handle is dropped and the queue is drained.
    pub async fn run(self) {
        let QueueReceiver { rx, state, inner } = self.rx;
        let prober = tokio::spawn(probe_loop(inner.clone()));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..inner.cfg.concurrency {
            senders.spawn(sender_loop(inner.clone(), rx.clone(), state.clone()));
        }
        while senders.join_next().await.is_some() {}
        inner.telemetry.set_in_flight(0);
        prober.abort();
    }

    /// Requests queued or in flight now (what a shutdown deadline would drop).
    pub fn pending_handle(&self) -> PendingHandle {
        self.rx.pending_handle()
    }
}

/// Reads how many requests are still queued or in flight.
#[derive(Clone)]
pub struct PendingHandle {
    state: Arc<QueueState>,
    inner: Arc<Delivery>,
}

impl PendingHandle {
    pub fn pending(&self) -> u64 {
        self.state.depth.load(Relaxed).max(0) as u64 + self.inner.busy.load(Relaxed)
    }
}

/// The receiving end of the queue, with the connection layer its requests are delivered
/// through: the senders' (`http-replay`) or the ndjson sink's. Requests taken from it count
/// as in flight until the sink settles them ([`connection::Delivery::settled`]).
pub struct QueueReceiver {
    rx: mpsc::Receiver<Queued>,
    state: Arc<QueueState>,
    pub(crate) inner: Arc<Delivery>,
}

impl QueueReceiver {
    fn taken(&mut self, q: Queued) -> crate::engine::request::HttpRequest {
        self.state.depth.fetch_sub(1, Relaxed);
        self.state.bytes.fetch_sub(q.size as i64, Relaxed);
        self.state.publish(&self.inner.telemetry);
        self.inner.taken(1);
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

    /// Whether every queue handle is gone and nothing is left to take.
    pub fn is_drained(&self) -> bool {
        self.rx.is_closed() && self.state.depth.load(Relaxed) <= 0
    }

    /// How many requests are still queued or taken and not settled.
    pub fn pending_handle(&self) -> PendingHandle {
        PendingHandle {
            state: self.state.clone(),
            inner: self.inner.clone(),
        }
    }
}

/// The bounded queue (the workers' side) and its receiving end, delivering to the upstream of
/// `cfg`.
pub fn queue(cfg: ForwardConfig, telemetry: Arc<Telemetry>) -> (ForwardQueue, QueueReceiver) {
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
    (queue, QueueReceiver { rx, state, inner })
}
