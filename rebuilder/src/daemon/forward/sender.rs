//! The sender tasks: each owns one keep-alive HTTP/1.1 connection to the upstream, connects
//! before it takes a request (so requests wait in the queue while the upstream is down),
//! backs off while connecting fails, and writes each request at most once — several at a
//! time (pipelining, `--pipeline-depth`), in one write; when fewer are waiting it lingers
//! (`--forward-linger-us`) once for more. Connections, the backoff and the prober are the
//! connection layer's ([`super::connection`]).
//!
//! At most once: a request is written again only when the upstream cannot have processed it —
//! it was written after an answer that ended the connection (`Connection: close`, a body that
//! ran to the end, a `101`: an HTTP/1.1 server processes nothing after such an answer, RFC
//! 9112 §9.6; every round answers at least one request, so this makes progress even with a
//! server that closes after each answer), or nothing of it went out (the connection turned
//! out closed; tried on two connections at most). Any other failure (I/O error, timeout, a
//! connection closed without an answer) drops it and every request written after it, each
//! counted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;

use super::answer::Asked;
use super::connection::{Delivery, UpstreamConn};
use super::queue::{QueueState, Queued};
use super::rewrite::{Written, write_request};
use crate::daemon::telemetry::{RequestDropReason, UpstreamErrorClass};
use crate::engine::request::HttpRequest;

/// A request on its way.
struct Job {
    req: HttpRequest,
    /// Attempts on which nothing of it went out.
    unsent: u8,
    /// Written at least once (markers are counted once).
    written: bool,
}

/// One sender task (see the module documentation).
pub(super) async fn sender_loop(
    inner: Arc<Delivery>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
    state: Arc<QueueState>,
) {
    let t = &inner.telemetry;
    let cfg = &inner.cfg;
    let mut conn: Option<UpstreamConn> = None;
    // Requests to write again (the upstream did not process them), oldest first.
    let mut again: VecDeque<Job> = VecDeque::new();
    // Reused from batch to batch.
    let mut wbuf: Vec<u8> = Vec::new();
    let mut batch: Vec<Job> = Vec::new();
    let mut taken: Vec<Queued> = Vec::new();
    let mut sent: Vec<(Job, Written)> = Vec::new();
    let mut asked: Vec<Asked> = Vec::new();
    loop {
        if !inner.ready(&mut conn).await {
            if again.is_empty() && rx.lock().await.is_closed() && state.depth.load(Relaxed) <= 0 {
                return;
            }
            continue;
        }
        // The next batch: requests to write again first, else what the queue holds now (at
        // most the pipeline depth; a request that must be last on its connection ends it).
        batch.clear();
        while batch.len() < cfg.pipeline_depth
            && !batch
                .last()
                .is_some_and(|j| j.req.method.eq_ignore_ascii_case("CONNECT"))
            && let Some(job) = again.pop_front()
        {
            batch.push(job);
        }
        if batch.is_empty() {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            taken.clear();
            taken.push(first);
            let ends = |t: &[Queued]| {
                t.len() >= cfg.pipeline_depth
                    || t.last()
                        .is_some_and(|q| q.req.method.eq_ignore_ascii_case("CONNECT"))
            };
            let mut lingered = cfg.linger.is_zero();
            while !ends(&taken) {
                match rx.try_recv() {
                    Ok(q) => taken.push(q),
                    Err(_) if !lingered => {
                        // Let a few more arrive: one write and one read for all of them.
                        lingered = true;
                        tokio::time::sleep(cfg.linger).await;
                    }
                    Err(_) => break,
                }
            }
            drop(rx);
            for q in &taken {
                state.depth.fetch_sub(1, Relaxed);
                state.bytes.fetch_sub(q.size as i64, Relaxed);
            }
            state.publish(t);
            // In flight from now until answered or lost (also while waiting to be written
            // again): what a shutdown would drop.
            inner.taken(taken.len() as u64);
            batch.extend(taken.drain(..).map(|q| Job {
                req: q.req,
                unsent: 0,
                written: false,
            }));
        }

        wbuf.clear();
        sent.clear();
        for mut job in batch.drain(..) {
            match write_request(&job.req, cfg, &mut wbuf) {
                Ok(w) => {
                    if w.markers_removed > 0 && !job.written {
                        t.marker_headers_removed(u64::from(w.markers_removed));
                    }
                    job.written = true;
                    sent.push((job, w));
                }
                Err(e) => {
                    tracing::debug!(error = %e, target = %job.req.target, "request not forwardable");
                    t.request_dropped(RequestDropReason::Invalid);
                    inner.busy.fetch_sub(1, Relaxed);
                }
            }
        }
        if sent.is_empty() {
            inner.set_in_flight();
            continue;
        }
        let n_sent = sent.len();
        asked.clear();
        asked.extend(sent.iter().map(|(_, w)| Asked {
            head: w.head,
            connect: w.last_on_connection,
        }));
        let ex = inner.exchange(&mut conn, &wbuf, &asked).await;
        for &(status, latency) in &ex.answers {
            t.request_forwarded(status, latency);
        }
        let answered = ex.answers.len();
        let mut settled = answered;
        {
            let rest = sent.drain(answered.min(n_sent)..).map(|(job, _)| job);
            if let Some(class) = ex.failure {
                // Written, not answered: the upstream may have processed them.
                for _ in rest {
                    inner.lost(class);
                    settled += 1;
                }
            } else if ex.again {
                for mut job in rest {
                    if ex.nothing_went_out {
                        job.unsent += 1;
                    }
                    if job.unsent >= 2 {
                        inner.lost(UpstreamErrorClass::Io);
                        settled += 1;
                    } else {
                        t.request_resent();
                        again.push_back(job);
                    }
                }
            }
        }
        // The answered ones: freed now, not when the next batch comes.
        sent.clear();
        debug_assert!(settled <= n_sent);
        inner.settled(settled as u64);
    }
}
