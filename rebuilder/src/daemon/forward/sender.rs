//! The sender tasks: each owns one keep-alive HTTP/1.1 connection to the upstream, connects
//! before it takes a request (so requests wait in the queue while the upstream is down),
//! backs off while connecting fails, and writes each request at most once. The prober checks
//! the upstream while no delivery completes, so `/healthz` is right without traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

use super::queue::{QueueState, Queued};
use super::rewrite::upstream_request;
use super::upstream::{Connector, ForwardConfig, build_connector};
use crate::daemon::telemetry::{RequestDropReason, Telemetry, UpstreamErrorClass};

/// Largest backoff between attempts while the upstream fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// What every sender task shares: the configuration, the connector, the failure streak.
pub(super) struct Delivery {
    pub(super) cfg: ForwardConfig,
    connector: Connector,
    /// scheme://authority/ of the upstream (what the connector dials).
    dial_uri: Uri,
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
    sender: Sender,
    last_used: Instant,
}

/// How one delivery ended.
enum Outcome {
    Answered(http::StatusCode),
    /// The request was not written (the connection was not ready): it can be sent again.
    NotSent(Box<Request<Full<Bytes>>>),
    Failed(UpstreamErrorClass),
}

impl Delivery {
    pub(super) fn new(cfg: ForwardConfig, telemetry: Arc<Telemetry>) -> Delivery {
        let dial_uri = Uri::builder()
            .scheme(cfg.upstream.scheme.clone())
            .authority(cfg.upstream.authority.clone())
            .path_and_query("/")
            .build()
            .expect("scheme and authority were validated");
        Delivery {
            connector: build_connector(&cfg),
            dial_uri,
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
        let attempt = tokio::time::timeout(self.cfg.connect_timeout, async {
            use tower_service::Service as _;
            let mut connector = self.connector.clone();
            let io = connector.call(self.dial_uri.clone()).await.ok()?;
            let (sender, conn) = hyper::client::conn::http1::Builder::new()
                .title_case_headers(true)
                .handshake(io)
                .await
                .ok()?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            });
            Some(sender)
        })
        .await;
        match attempt {
            Ok(Some(sender)) => {
                self.failing.store(0, Relaxed);
                Some(UpstreamConn {
                    sender,
                    last_used: Instant::now(),
                })
            }
            _ => {
                self.failing.fetch_add(1, Relaxed);
                self.telemetry.upstream_error(UpstreamErrorClass::Connect);
                None
            }
        }
    }

    async fn send(&self, conn: &mut UpstreamConn, req: Request<Full<Bytes>>) -> Outcome {
        let result = tokio::time::timeout(self.cfg.request_timeout, async {
            let resp = match conn.sender.try_send_request(req).await {
                Ok(r) => r,
                Err(mut e) => {
                    return match e.take_message() {
                        Some(req) => Outcome::NotSent(Box::new(req)),
                        None => {
                            tracing::debug!(error = %e.error(), "upstream request failed");
                            Outcome::Failed(UpstreamErrorClass::Io)
                        }
                    };
                }
            };
            let status = resp.status();
            // Read the response to its end so the connection can carry the next request.
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    return Outcome::Failed(UpstreamErrorClass::Io);
                }
            }
            Outcome::Answered(status)
        })
        .await;
        result.unwrap_or(Outcome::Failed(UpstreamErrorClass::Timeout))
    }

    fn set_in_flight(&self) {
        self.telemetry.set_in_flight(self.busy.load(Relaxed));
    }
}

/// One sender task: makes sure it holds a usable connection, then takes the next request.
/// A request is written at most once (a request the connection did not take is sent once
/// more on a fresh connection), so the upstream never sees duplicates.
pub(super) async fn sender_loop(
    inner: Arc<Delivery>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
    state: Arc<QueueState>,
) {
    let t = &inner.telemetry;
    let mut conn: Option<UpstreamConn> = None;
    loop {
        if let Some(c) = &conn
            && (c.sender.is_closed() || c.last_used.elapsed() >= inner.cfg.pool_idle_timeout)
        {
            conn = None;
        }
        if conn.is_none() {
            conn = inner.connect().await;
            if conn.is_none() {
                if rx.lock().await.is_closed() && state.depth.load(Relaxed) <= 0 {
                    return;
                }
                continue;
            }
        }
        let next = rx.lock().await.recv().await;
        let Some(q) = next else { return };
        state.depth.fetch_sub(1, Relaxed);
        state.bytes.fetch_sub(q.size as i64, Relaxed);
        state.publish(t);
        let target = q.req.target.clone();
        let req = match upstream_request(q.req, &inner.cfg) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, %target, "request not forwardable");
                t.request_dropped(RequestDropReason::Invalid);
                continue;
            }
        };
        inner.busy.fetch_add(1, Relaxed);
        inner.set_in_flight();
        let start = Instant::now();
        let c = conn.as_mut().expect("connected above");
        let mut outcome = inner.send(c, req).await;
        if let Outcome::NotSent(req) = outcome {
            // The connection went away before the request was written: one more try.
            conn = inner.connect().await;
            outcome = match conn.as_mut() {
                Some(c) => match inner.send(c, *req).await {
                    Outcome::NotSent(_) => Outcome::Failed(UpstreamErrorClass::Io),
                    o => o,
                },
                None => Outcome::Failed(UpstreamErrorClass::Connect),
            };
        }
        inner.busy.fetch_sub(1, Relaxed);
        inner.set_in_flight();
        inner.last_delivery_us.store(inner.now_us(), Relaxed);
        match outcome {
            Outcome::Answered(status) => {
                inner.failing.store(0, Relaxed);
                t.request_forwarded(status.as_u16(), start.elapsed());
                if let Some(c) = conn.as_mut() {
                    c.last_used = Instant::now();
                }
            }
            Outcome::Failed(class) => {
                conn = None;
                let reason = match class {
                    UpstreamErrorClass::Connect => RequestDropReason::UpstreamConnect,
                    UpstreamErrorClass::Timeout => {
                        inner.failing.fetch_add(1, Relaxed);
                        t.upstream_error(class);
                        RequestDropReason::UpstreamTimeout
                    }
                    _ => {
                        t.upstream_error(class);
                        RequestDropReason::UpstreamIo
                    }
                };
                t.request_dropped(reason);
            }
            Outcome::NotSent(_) => unreachable!("resolved above"),
        }
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
        use tower_service::Service as _;
        let mut connector = self.connector.clone();
        let dial = connector.call(self.dial_uri.clone());
        matches!(
            tokio::time::timeout(self.cfg.connect_timeout, dial).await,
            Ok(Ok(_))
        )
    }
}
