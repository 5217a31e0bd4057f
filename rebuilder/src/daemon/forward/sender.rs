//! The sender tasks: each owns one keep-alive HTTP/1.1 connection to the upstream, connects
//! before it takes a request (so requests wait in the queue while the upstream is down),
//! backs off while connecting fails, and writes each request at most once — several at a
//! time (pipelining, `--pipeline-depth`), in one write; when fewer are waiting it lingers
//! (`--forward-linger-us`) once for more. The prober checks the upstream while
//! no delivery completes, so `/healthz` is right without traffic.
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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::mpsc;

use super::answer::{AnswerError, Asked, ReadBuf, read_answer};
use super::queue::{QueueState, Queued};
use super::rewrite::{Written, write_request};
use super::upstream::{Connector, ForwardConfig, Stream, build_connector};
use crate::daemon::telemetry::{RequestDropReason, Telemetry, UpstreamErrorClass};
use crate::engine::request::HttpRequest;

/// Largest backoff between attempts while the upstream fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What every sender task shares: the configuration, the connector, the failure streak.
pub(super) struct Delivery {
    pub(super) cfg: ForwardConfig,
    connector: Connector,
    pub(super) telemetry: Arc<Telemetry>,
    /// Requests being delivered now.
    pub(super) busy: AtomicU64,
    /// Consecutive connect errors / timeouts (drives the backoff; 5xx do not).
    failing: AtomicU64,
    /// While failing, one sender at a time tries to connect.
    connect_gate: tokio::sync::Mutex<()>,
    /// Last time a delivery completed (µs since `epoch`), for the prober.
    last_delivery_us: AtomicU64,
    epoch: Instant,
}

/// The keep-alive connection of one sender task.
struct UpstreamConn {
    io: Stream,
    /// Bytes read and not consumed (between answers: none).
    rb: ReadBuf,
    last_used: Instant,
}

impl UpstreamConn {
    /// Whether an idle connection can no longer carry a request: the upstream closed it, or
    /// sent bytes nobody asked for. Polls once without waiting.
    fn is_dead(&mut self) -> bool {
        if !self.rb.is_empty() {
            return true;
        }
        let mut scratch = [0u8; 64];
        let mut buf = tokio::io::ReadBuf::new(&mut scratch);
        let mut cx = Context::from_waker(Waker::noop());
        !matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }
}

/// A request on its way.
struct Job {
    req: HttpRequest,
    /// Attempts on which nothing of it went out.
    unsent: u8,
    /// Written at least once (markers are counted once).
    written: bool,
}

/// How writing a batch failed: the bytes that went out before, and why.
struct WriteFailed {
    written: usize,
    class: UpstreamErrorClass,
}

impl Delivery {
    pub(super) fn new(cfg: ForwardConfig, telemetry: Arc<Telemetry>) -> Delivery {
        Delivery {
            connector: build_connector(&cfg),
            cfg,
            telemetry,
            busy: AtomicU64::new(0),
            failing: AtomicU64::new(0),
            connect_gate: tokio::sync::Mutex::new(()),
            last_delivery_us: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn backoff(&self) -> Option<Duration> {
        let n = self.failing.load(Relaxed);
        if n == 0 {
            return None;
        }
        let d = self.cfg.failure_backoff * 2u32.saturating_pow((n - 1).min(16) as u32);
        Some(d.min(MAX_BACKOFF))
    }

    /// Opens a connection to the upstream. While the upstream fails, attempts are serialised
    /// and spaced by the backoff: no connect storms.
    async fn connect(&self) -> Option<UpstreamConn> {
        let _gate = if self.failing.load(Relaxed) > 0 {
            Some(self.connect_gate.lock().await)
        } else {
            None
        };
        if let Some(wait) = self.backoff() {
            tokio::time::sleep(wait).await;
        }
        match tokio::time::timeout(self.cfg.connect_timeout, self.connector.connect()).await {
            Ok(Ok(io)) => {
                self.failing.store(0, Relaxed);
                Some(UpstreamConn {
                    io,
                    rb: ReadBuf::default(),
                    last_used: Instant::now(),
                })
            }
            other => {
                if let Ok(Err(e)) = other {
                    tracing::debug!(error = %e, "upstream connect failed");
                }
                self.failing.fetch_add(1, Relaxed);
                self.telemetry.upstream_error(UpstreamErrorClass::Connect);
                None
            }
        }
    }

    fn set_in_flight(&self) {
        self.telemetry.set_in_flight(self.busy.load(Relaxed));
    }

    /// Counts a request that will not be delivered.
    fn lost(&self, class: UpstreamErrorClass) {
        let reason = match class {
            UpstreamErrorClass::Connect => RequestDropReason::UpstreamConnect,
            UpstreamErrorClass::Timeout => RequestDropReason::UpstreamTimeout,
            _ => RequestDropReason::UpstreamIo,
        };
        self.telemetry.request_dropped(reason);
    }
}

/// Writes `buf`, counting the bytes that went out.
async fn write_all(io: &mut Stream, buf: &[u8], deadline: Instant) -> Result<(), WriteFailed> {
    let mut written = 0;
    let fail = |written, e: Option<std::io::Error>| {
        if let Some(e) = e {
            tracing::debug!(error = %e, "writing to the upstream failed");
        }
        WriteFailed {
            written,
            class: UpstreamErrorClass::Io,
        }
    };
    let timeout = |written| WriteFailed {
        written,
        class: UpstreamErrorClass::Timeout,
    };
    while written < buf.len() {
        match tokio::time::timeout_at(deadline.into(), io.write(&buf[written..])).await {
            Ok(Ok(0)) => return Err(fail(written, None)),
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) => return Err(fail(written, Some(e))),
            Err(_) => return Err(timeout(written)),
        }
    }
    match tokio::time::timeout_at(deadline.into(), io.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(fail(written, Some(e))),
        Err(_) => Err(timeout(written)),
    }
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
    let mut wbuf: Vec<u8> = Vec::new();
    loop {
        if let Some(c) = conn.as_mut()
            && (c.last_used.elapsed() >= cfg.pool_idle_timeout || c.is_dead())
        {
            conn = None;
        }
        if conn.is_none() {
            conn = inner.connect().await;
            if conn.is_none() {
                if again.is_empty() && rx.lock().await.is_closed() && state.depth.load(Relaxed) <= 0
                {
                    return;
                }
                continue;
            }
        }
        // The next batch: requests to write again first, else what the queue holds now (at
        // most the pipeline depth; a request that must be last on its connection ends it).
        let mut batch: Vec<Job> = Vec::new();
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
            let mut taken = vec![first];
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
            inner.busy.fetch_add(taken.len() as u64, Relaxed);
            inner.set_in_flight();
            batch.extend(taken.into_iter().map(|q| Job {
                req: q.req,
                unsent: 0,
                written: false,
            }));
        }

        wbuf.clear();
        let mut sent: Vec<(Job, Written)> = Vec::with_capacity(batch.len());
        for mut job in batch {
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
        let c = conn.as_mut().expect("connected above");
        let start = Instant::now();
        let written = write_all(&mut c.io, &wbuf, start + cfg.request_timeout).await;
        let mut answered = 0usize;
        let mut failure: Option<UpstreamErrorClass> = None;
        let mut resend_from: Option<usize> = None;
        let mut nothing_went_out = false;
        match written {
            Err(WriteFailed { written: 0, .. }) => {
                // Nothing went out: the connection was gone. Every request can be written again.
                conn = None;
                resend_from = Some(0);
                nothing_went_out = true;
            }
            Err(WriteFailed { class, .. }) => {
                conn = None;
                failure = Some(class);
            }
            Ok(()) => {
                for (i, (_, w)) in sent.iter().enumerate() {
                    let deadline = Instant::now() + cfg.request_timeout;
                    let asked = Asked {
                        head: w.head,
                        connect: w.last_on_connection,
                    };
                    match read_answer(&mut c.io, &mut c.rb, asked, deadline).await {
                        Ok(a) => {
                            inner.failing.store(0, Relaxed);
                            t.request_forwarded(a.status, start.elapsed());
                            answered = i + 1;
                            if !a.reusable || w.last_on_connection {
                                resend_from = Some(i + 1);
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "upstream answer failed");
                            failure = Some(match e {
                                AnswerError::Timeout => UpstreamErrorClass::Timeout,
                                _ => UpstreamErrorClass::Io,
                            });
                            break;
                        }
                    }
                }
                if failure.is_some() || resend_from.is_some() {
                    conn = None;
                } else if let Some(c) = conn.as_mut() {
                    c.last_used = Instant::now();
                }
            }
        }
        let mut settled = answered;
        let rest = sent.into_iter().skip(answered).map(|(job, _)| job);
        if let Some(class) = failure {
            // Written, not answered: the upstream may have processed them.
            if class == UpstreamErrorClass::Timeout {
                inner.failing.fetch_add(1, Relaxed);
            }
            t.upstream_error(class);
            for _ in rest {
                inner.lost(class);
                settled += 1;
            }
        } else if resend_from.is_some() {
            for mut job in rest {
                if nothing_went_out {
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
        debug_assert!(settled <= n_sent);
        inner.busy.fetch_sub(settled as u64, Relaxed);
        inner.set_in_flight();
        inner.last_delivery_us.store(inner.now_us(), Relaxed);
    }
}

/// While no delivery completed within the probe interval, checks that the upstream accepts
/// connections, so /healthz is right even without traffic.
pub(super) async fn probe_loop(inner: Arc<Delivery>) {
    let interval = inner.cfg.probe_interval;
    loop {
        let last = inner.last_delivery_us.load(Relaxed);
        let idle = last == 0 || inner.now_us().saturating_sub(last) >= interval.as_micros() as u64;
        if idle {
            let ok = inner.probe().await;
            inner.telemetry.probe_result(ok);
        }
        tokio::time::sleep(interval).await;
    }
}

impl Delivery {
    /// Opens (and closes) a connection the way a sender does: TCP, and TLS for https.
    async fn probe(&self) -> bool {
        matches!(
            tokio::time::timeout(self.cfg.connect_timeout, self.connector.connect()).await,
            Ok(Ok(_))
        )
    }
}
