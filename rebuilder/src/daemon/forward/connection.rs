//! The connection layer both sinks deliver through: keep-alive HTTP/1.1 connections to the
//! upstream (plain TCP, or TLS with rustls: [`super::upstream::Connector`]), opened with a
//! doubling backoff while the upstream fails (one attempt at a time: no connect storms), one
//! write per batch of messages and their answers read in order ([`super::answer`]), and the
//! prober that checks the upstream while no delivery completes, so `rebuilder_upstream_up` is
//! right without traffic.
//!
//! What a message is, and what becomes of the messages an exchange did not settle, is the
//! sink's business: the `http-replay` senders ([`super::sender`]) write requests, the ndjson
//! sink (`crate::daemon::sink::ndjson`) one POST per batch of lines. Both count every request
//! in the same counters and decide what may be written again by the same rule: only what the
//! upstream cannot have processed ([`Exchange::again`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWriteExt};

pub(crate) use super::answer::Asked;
use super::answer::{AnswerError, ReadBuf, read_answer};
use super::upstream::{Connector, ForwardConfig, Stream, build_connector};
use crate::daemon::telemetry::{RequestDropReason, Telemetry, UpstreamErrorClass};

/// Largest backoff between attempts while the upstream fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What every delivering task shares: the configuration, the connector, the failure streak.
pub(crate) struct Delivery {
    pub(crate) cfg: ForwardConfig,
    connector: Connector,
    pub(crate) telemetry: Arc<Telemetry>,
    /// Requests being delivered now (taken from the queue, not settled yet).
    pub(crate) busy: AtomicU64,
    /// Consecutive connect errors / timeouts (drives the backoff; 5xx do not).
    failing: AtomicU64,
    /// While failing, one task at a time tries to connect.
    connect_gate: tokio::sync::Mutex<()>,
    /// Last time a delivery completed (µs since `epoch`), for the prober.
    last_delivery_us: AtomicU64,
    epoch: Instant,
}

/// A keep-alive connection to the upstream.
pub(crate) struct UpstreamConn {
    io: Stream,
    /// Bytes read and not consumed (between answers: none).
    rb: ReadBuf,
    last_used: Instant,
}

impl UpstreamConn {
    /// Whether an idle connection can no longer carry a message: the upstream closed it, or
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

/// How writing a batch failed: the bytes that went out before, and why.
struct WriteFailed {
    written: usize,
    class: UpstreamErrorClass,
}

/// What became of the messages of one write.
#[derive(Debug, Default)]
pub(crate) struct Exchange {
    /// The answers read, in order (status, time since the write began): the first
    /// `answers.len()` messages are delivered.
    pub(crate) answers: Vec<(u16, Duration)>,
    /// The messages after the answered ones were written and not answered (I/O error,
    /// timeout, connection closed): the upstream may have processed them; they are lost.
    pub(crate) failure: Option<UpstreamErrorClass>,
    /// The messages after the answered ones may be written again on a new connection: the
    /// upstream cannot have processed them (nothing of the write went out, or they came after
    /// an answer that ended the connection; RFC 9112 §9.6).
    pub(crate) again: bool,
    /// Nothing of the write went out (the connection turned out closed).
    pub(crate) nothing_went_out: bool,
}

impl Delivery {
    pub(crate) fn new(cfg: ForwardConfig, telemetry: Arc<Telemetry>) -> Delivery {
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

    /// Drops `conn` when it can no longer carry a message (idle past the pool timeout, closed
    /// by the upstream); then opens one if there is none. `false` when connecting failed
    /// (counted; the next attempt waits for the backoff).
    pub(crate) async fn ready(&self, conn: &mut Option<UpstreamConn>) -> bool {
        if let Some(c) = conn.as_mut()
            && (c.last_used.elapsed() >= self.cfg.pool_idle_timeout || c.is_dead())
        {
            *conn = None;
        }
        if conn.is_none() {
            *conn = self.connect().await;
        }
        conn.is_some()
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

    /// Writes `wbuf` (one message per entry of `asked`, in order) on `conn` in one go and
    /// reads the answers. The connection is kept only when every answer left it reusable.
    /// Answers reset the failure streak; a timeout extends it; a failure is counted as an
    /// upstream error.
    pub(crate) async fn exchange(
        &self,
        conn: &mut Option<UpstreamConn>,
        wbuf: &[u8],
        asked: &[Asked],
    ) -> Exchange {
        let mut ex = Exchange::default();
        let Some(c) = conn.as_mut() else {
            ex.again = true;
            ex.nothing_went_out = true;
            return ex;
        };
        let start = Instant::now();
        let keep = match write_all(&mut c.io, wbuf, start + self.cfg.request_timeout).await {
            Err(WriteFailed { written: 0, .. }) => {
                // Nothing went out: the connection was gone. Every message can be written again.
                ex.again = true;
                ex.nothing_went_out = true;
                false
            }
            Err(WriteFailed { class, .. }) => {
                ex.failure = Some(class);
                false
            }
            Ok(()) => {
                for &a in asked {
                    let deadline = Instant::now() + self.cfg.request_timeout;
                    match read_answer(&mut c.io, &mut c.rb, a, deadline).await {
                        Ok(answer) => {
                            self.failing.store(0, Relaxed);
                            ex.answers.push((answer.status, start.elapsed()));
                            if !answer.reusable || a.connect {
                                ex.again = true;
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "upstream answer failed");
                            ex.failure = Some(match e {
                                AnswerError::Timeout => UpstreamErrorClass::Timeout,
                                _ => UpstreamErrorClass::Io,
                            });
                            break;
                        }
                    }
                }
                ex.failure.is_none() && !ex.again
            }
        };
        if keep {
            c.last_used = Instant::now();
        } else {
            *conn = None;
        }
        if let Some(class) = ex.failure {
            if class == UpstreamErrorClass::Timeout {
                self.failing.fetch_add(1, Relaxed);
            }
            self.telemetry.upstream_error(class);
        }
        ex
    }

    /// Publishes the requests being delivered.
    pub(crate) fn set_in_flight(&self) {
        self.telemetry.set_in_flight(self.busy.load(Relaxed));
    }

    /// `n` requests taken from the queue are now being delivered.
    pub(crate) fn taken(&self, n: u64) {
        self.busy.fetch_add(n, Relaxed);
        self.set_in_flight();
    }

    /// `n` requests are settled (delivered or dropped, each counted): a delivery completed.
    pub(crate) fn settled(&self, n: u64) {
        self.busy.fetch_sub(n, Relaxed);
        self.set_in_flight();
        self.last_delivery_us.store(self.now_us(), Relaxed);
    }

    /// Counts a request that will not be delivered.
    pub(crate) fn lost(&self, class: UpstreamErrorClass) {
        let reason = match class {
            UpstreamErrorClass::Connect => RequestDropReason::UpstreamConnect,
            UpstreamErrorClass::Timeout => RequestDropReason::UpstreamTimeout,
            _ => RequestDropReason::UpstreamIo,
        };
        self.telemetry.request_dropped(reason);
    }

    /// Opens (and closes) a connection the way a sender does: TCP, and TLS for https.
    async fn probe(&self) -> bool {
        matches!(
            tokio::time::timeout(self.cfg.connect_timeout, self.connector.connect()).await,
            Ok(Ok(_))
        )
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

/// While no delivery completed within the probe interval, checks that the upstream accepts
/// connections, so the upstream's state is right even without traffic.
pub(crate) async fn probe_loop(inner: Arc<Delivery>) {
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
