//! The bounded hand-off between the receive workers and the senders: counted in requests
//! (the channel's capacity) and in bytes; a worker never waits on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use tokio::sync::mpsc;

use crate::daemon::telemetry::{RequestDropReason, Telemetry};
use crate::engine::request::HttpRequest;

/// Approximate memory held by a queued request.
fn queued_size(r: &HttpRequest) -> usize {
    256 + r.method.len()
        + r.target.len()
        + r.body.len()
        + r.headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 48)
            .sum::<usize>()
}

/// Queued request plus its accounted size.
pub(super) struct Queued {
    pub(super) req: HttpRequest,
    pub(super) size: usize,
}

/// Shared queue accounting. Signed: the dispatcher may count a request out before the worker
/// that sent it has counted it in.
#[derive(Debug, Default)]
pub(super) struct QueueState {
    pub(super) depth: AtomicI64,
    pub(super) bytes: AtomicI64,
}

impl QueueState {
    pub(super) fn publish(&self, t: &Telemetry) {
        t.set_queue(
            self.depth.load(Relaxed).max(0) as u64,
            self.bytes.load(Relaxed).max(0) as u64,
        );
    }
}

/// The worker side of the queue: clone one per worker.
#[derive(Clone)]
pub struct ForwardQueue {
    pub(super) tx: mpsc::Sender<Queued>,
    pub(super) state: Arc<QueueState>,
    pub(super) max_bytes: i64,
    pub(super) telemetry: Arc<Telemetry>,
}

impl ForwardQueue {
    /// Enqueues without waiting; on `Err` the request was dropped and the caller counts it.
    pub fn try_submit(&self, req: HttpRequest) -> Result<(), RequestDropReason> {
        let size = queued_size(&req);
        let before = self.state.bytes.fetch_add(size as i64, Relaxed);
        if before.saturating_add(size as i64) > self.max_bytes {
            self.state.bytes.fetch_sub(size as i64, Relaxed);
            return Err(RequestDropReason::QueueBytes);
        }
        self.state.depth.fetch_add(1, Relaxed);
        match self.tx.try_send(Queued { req, size }) {
            Ok(()) => {
                self.state.publish(&self.telemetry);
                Ok(())
            }
            Err(e) => {
                self.state.depth.fetch_sub(1, Relaxed);
                self.state.bytes.fetch_sub(size as i64, Relaxed);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => RequestDropReason::QueueFull,
                    mpsc::error::TrySendError::Closed(_) => RequestDropReason::Shutdown,
                })
            }
        }
    }
}
