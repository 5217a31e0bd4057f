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

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::mpsc;

use crate::daemon::telemetry::{RequestDropReason, Telemetry, UpstreamErrorClass};
use crate::engine::request::HttpRequest;

/// Header added (value `true`) when the engine cut the body at `--max-body-bytes`.
pub const TRUNCATED_HEADER: &str = "x-rebuilder-body-truncated";

/// Largest backoff between attempts while the upstream fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Errors in the forwarding configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("upstream URL {0:?} is not a valid http:// or https:// URL")]
    Upstream(String),
    #[error("extra header {0:?} is not `Name: value`")]
    ExtraHeader(String),
    #[error("header name {0:?} is invalid")]
    HeaderName(String),
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
}

/// Why one request cannot be expressed as an upstream request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("invalid method")]
    Method,
    #[error("request target cannot be forwarded (authority-form or asterisk-form)")]
    Target,
    #[error("invalid header {0:?}")]
    Header(String),
}

/// The upstream: scheme, authority and an optional path prefix.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Prepended to every request target ("" when the URL has no path).
    pub path_prefix: String,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Upstream, ConfigError> {
        let bad = || ConfigError::Upstream(url.to_string());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let scheme = uri.scheme().cloned().ok_or_else(bad)?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(bad());
        }
        let authority = uri.authority().cloned().ok_or_else(bad)?;
        if uri.query().is_some() || authority.as_str().contains('@') {
            return Err(bad());
        }
        let path_prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Upstream {
            scheme,
            authority,
            path_prefix,
        })
    }

    /// host:port for connection probes.
    pub fn host_port(&self) -> (String, u16) {
        let default = if self.scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        let host = self.authority.host();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (
            host.to_string(),
            self.authority.port_u16().unwrap_or(default),
        )
    }
}

/// How requests are rewritten and delivered.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub upstream: Upstream,
    /// Header that receives the client IP (the PROXY protocol source when there was a header, else the inner TCP source); `None` = off.
    pub forwarded_for: Option<HeaderName>,
    /// Static headers, replacing same-named request headers.
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    pub queue_capacity: usize,
    pub queue_max_bytes: usize,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub failure_backoff: Duration,
    pub probe_interval: Duration,
    /// CA certificates trusted for https (empty = the public web PKI roots).
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl ForwardConfig {
    pub fn from_args(a: &crate::daemon::config::RunArgs) -> Result<ForwardConfig, ConfigError> {
        let forwarded_for = if a.no_forwarded_for || a.forwarded_for_header.is_empty() {
            None
        } else {
            Some(
                HeaderName::from_bytes(a.forwarded_for_header.as_bytes())
                    .map_err(|_| ConfigError::HeaderName(a.forwarded_for_header.clone()))?,
            )
        };
        let extra_headers = a
            .extra_headers
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| parse_extra_header(h))
            .collect::<Result<_, _>>()?;
        Ok(ForwardConfig {
            upstream: Upstream::parse(&a.upstream)?,
            forwarded_for,
            extra_headers,
            queue_capacity: a.queue_capacity.max(1),
            queue_max_bytes: a.queue_max_bytes.max(1),
            concurrency: a.concurrency.max(1),
            connect_timeout: Duration::from_millis(a.connect_timeout_ms.max(1)),
            request_timeout: Duration::from_millis(a.request_timeout_ms.max(1)),
            pool_idle_timeout: Duration::from_millis(a.pool_idle_timeout_ms.max(1)),
            failure_backoff: Duration::from_millis(a.failure_backoff_ms.max(1)),
            probe_interval: Duration::from_millis(a.health_probe_interval_ms.max(10)),
            ca_certs: match &a.upstream_ca_file {
                Some(p) => load_ca_file(p)?,
                None => Vec::new(),
            },
        })
    }
}

fn load_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    let err = |reason: String| ConfigError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in it".into()));
    }
    Ok(certs)
}

fn parse_extra_header(s: &str) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let bad = || ConfigError::ExtraHeader(s.to_string());
    let (name, value) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?,
        HeaderValue::from_str(value.trim()).map_err(|_| bad())?,
    ))
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the framing
/// headers we replace.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "content-length",
];

/// Turns an extracted request into the request sent upstream.
///
/// - method and target kept (an absolute-form target becomes origin-form), prefixed by the
///   upstream path;
/// - headers kept in their order (Host included); hop-by-hop headers and those named in
///   `Connection` removed; the body re-framed with `Content-Length`;
/// - the client IP (PROXY protocol source, else inner TCP source) appended to the
///   forwarded-for header (values of repeated headers are joined, in place of the first one);
/// - static extra headers replace same-named ones, at the end.
pub fn build_request(
    mut req: HttpRequest,
    cfg: &ForwardConfig,
) -> Result<Request<Full<Bytes>>, BuildError> {
    let method = Method::from_bytes(req.method.as_bytes()).map_err(|_| BuildError::Method)?;
    let path_and_query = origin_form(&req.target).ok_or(BuildError::Target)?;
    // Origin-form: the connection already goes to the upstream; Host stays the client's.
    let uri = Uri::builder()
        .path_and_query(format!("{}{}", cfg.upstream.path_prefix, path_and_query))
        .build()
        .map_err(|_| BuildError::Target)?;

    // Tokens named by Connection are hop-by-hop too; values of the forwarded-for header are
    // joined into one.
    let mut connection_tokens: Vec<String> = Vec::new();
    let mut xff_values: Vec<u8> = Vec::new();
    let mut framed = req.chunked || !req.body.is_empty();
    for (name, value) in &req.headers {
        if name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(value).split(',') {
                let t = token.trim().to_ascii_lowercase();
                if !t.is_empty() {
                    connection_tokens.push(t);
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            framed = true;
        } else if let Some(xff) = &cfg.forwarded_for
            && name.eq_ignore_ascii_case(xff.as_str())
        {
            let v = value.trim_ascii();
            if !v.is_empty() {
                xff_values.extend_from_slice(v);
                xff_values.extend_from_slice(b", ");
            }
        }
    }

    let mut b = Request::builder().method(method).uri(uri);
    let headers = b.headers_mut().expect("builder is valid so far");
    let mut has_host = false;
    let mut xff_done = false;
    for (name, value) in std::mem::take(&mut req.headers) {
        // Standard names are parsed without allocating; the result is lower-case.
        let hname = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| BuildError::Header(name.to_ascii_lowercase()))?;
        let lower = hname.as_str();
        if HOP_BY_HOP.contains(&lower)
            || connection_tokens.iter().any(|t| t == lower)
            || cfg.extra_headers.iter().any(|(n, _)| *n == hname)
        {
            continue;
        }
        if cfg.forwarded_for.as_ref() == Some(&hname) {
            if xff_done {
                continue;
            }
            xff_done = true;
            let mut joined = std::mem::take(&mut xff_values);
            joined.extend_from_slice(req.client.ip().to_string().as_bytes());
            let v = HeaderValue::from_maybe_shared(Bytes::from(joined))
                .map_err(|_| BuildError::Header(lower.to_string()))?;
            headers.append(hname, v);
            continue;
        }
        has_host |= hname == http::header::HOST;
        // Zero-copy: the engine's value buffer becomes the header value.
        let v = HeaderValue::from_maybe_shared(Bytes::from(value))
            .map_err(|_| BuildError::Header(lower.to_string()))?;
        headers.append(hname, v);
    }
    if !has_host {
        // HTTP/1.0 without Host: name the original server so the analyzer sees a destination.
        let v = HeaderValue::from_str(&req.server.to_string()).expect("socket address is ASCII");
        headers.append(http::header::HOST, v);
    }
    if let Some(xff) = &cfg.forwarded_for
        && !xff_done
    {
        let v = HeaderValue::from_str(&req.client.ip().to_string()).expect("IP is ASCII");
        headers.append(xff.clone(), v);
    }
    if framed {
        headers.append(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(req.body.len()),
        );
    }
    if req.body_truncated {
        headers.append(TRUNCATED_HEADER, HeaderValue::from_static("true"));
    }
    for (n, v) in &cfg.extra_headers {
        headers.append(n.clone(), v.clone());
    }
    b.body(Full::new(Bytes::from(std::mem::take(&mut req.body))))
        .map_err(|_| BuildError::Target)
}

/// The path and query of a request target, or `None` for targets that name no resource on an
/// origin server (`*`, authority-form). Bytes an URI may not hold are percent-encoded.
fn origin_form(target: &str) -> Option<String> {
    let path = if target.starts_with('/') {
        target.to_string()
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .or_else(|| target.strip_prefix("HTTP://"))
        .or_else(|| target.strip_prefix("HTTPS://"))
    {
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_string(),
            Some(i) => format!("/{}", &rest[i..]),
            None => "/".to_string(),
        }
    } else {
        return None;
    };
    if path.parse::<http::uri::PathAndQuery>().is_ok() {
        return Some(path);
    }
    let mut enc = String::with_capacity(path.len() * 3);
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    enc.parse::<http::uri::PathAndQuery>().ok().map(|_| enc)
}

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
struct Queued {
    req: HttpRequest,
    size: usize,
}

/// Shared queue accounting. Signed: the dispatcher may count a request out before the worker
/// that sent it has counted it in.
#[derive(Debug, Default)]
struct QueueState {
    depth: AtomicI64,
    bytes: AtomicI64,
}

impl QueueState {
    fn publish(&self, t: &Telemetry) {
        t.set_queue(
            self.depth.load(Relaxed).max(0) as u64,
            self.bytes.load(Relaxed).max(0) as u64,
        );
    }
}

/// The worker side of the queue: clone one per worker.
#[derive(Clone)]
pub struct ForwardQueue {
    tx: mpsc::Sender<Queued>,
    state: Arc<QueueState>,
    max_bytes: i64,
    telemetry: Arc<Telemetry>,
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

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// The sender side: `concurrency` sender tasks, each owning one keep-alive connection to the
/// upstream, taking requests from the queue one at a time; plus a prober that checks the
/// upstream while no request reaches it.
pub struct Forwarder {
    rx: mpsc::Receiver<Queued>,
    state: Arc<QueueState>,
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ForwardConfig,
    connector: Connector,
    /// scheme://authority/ of the upstream (what the connector dials).
    dial_uri: Uri,
    telemetry: Arc<Telemetry>,
    /// Requests being delivered now.
    busy: AtomicU64,
    /// Consecutive connect errors / timeouts (drives the backoff; 5xx do not).
    failing: AtomicU64,
    /// While failing, one sender at a time tries to connect.
    connect_gate: tokio::sync::Mutex<()>,
    /// Last time a delivery completed (µs since `epoch`), for the prober.
    last_delivery_us: AtomicU64,
    epoch: Instant,
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
    let dial_uri = Uri::builder()
        .scheme(cfg.upstream.scheme.clone())
        .authority(cfg.upstream.authority.clone())
        .path_and_query("/")
        .build()
        .expect("scheme and authority were validated");
    let inner = Arc::new(Inner {
        connector: build_connector(&cfg),
        dial_uri,
        cfg,
        telemetry,
        busy: AtomicU64::new(0),
        failing: AtomicU64::new(0),
        connect_gate: tokio::sync::Mutex::new(()),
        last_delivery_us: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    (queue, Forwarder { rx, state, inner })
}

fn build_connector(cfg: &ForwardConfig) -> Connector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    // The crypto provider is named, not left to rustls' process default: in the workspace build
    // the AWS SDK also enables rustls' aws-lc-rs, and with two providers compiled in rustls
    // panics instead of choosing one.
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if cfg.ca_certs.is_empty() {
        builder
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("ring supports rustls' default protocol versions")
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(cfg.ca_certs.iter().cloned());
        if ignored > 0 {
            tracing::warn!(added, ignored, "some CA certificates could not be used");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        builder.with_tls_config(tls)
    };
    builder.https_or_http().enable_http1().wrap_connector(http)
}

/// A connection of a sender task.
struct Conn {
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

impl Inner {
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
    async fn connect(&self) -> Option<Conn> {
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
                Some(Conn {
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

    async fn send(&self, conn: &mut Conn, req: Request<Full<Bytes>>) -> Outcome {
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
async fn sender_loop(
    inner: Arc<Inner>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
    state: Arc<QueueState>,
) {
    let t = &inner.telemetry;
    let mut conn: Option<Conn> = None;
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
        let req = match build_request(q.req, &inner.cfg) {
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
            inner: self.inner.clone(),
        }
    }
}

/// Reads how many requests are still queued or in flight.
#[derive(Clone)]
pub struct PendingHandle {
    state: Arc<QueueState>,
    inner: Arc<Inner>,
}

impl PendingHandle {
    pub fn pending(&self) -> u64 {
        self.state.depth.load(Relaxed).max(0) as u64 + self.inner.busy.load(Relaxed)
    }
}

/// While no delivery completed within the probe interval, checks that the upstream accepts
/// connections, so /healthz is right even without traffic.
async fn probe_loop(inner: Arc<Inner>) {
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

impl Inner {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ForwardConfig {
        ForwardConfig {
            upstream: Upstream::parse("http://127.0.0.1:9/").unwrap(),
            forwarded_for: Some(HeaderName::from_static("x-forwarded-for")),
            extra_headers: vec![],
            queue_capacity: 4,
            queue_max_bytes: 1 << 20,
            concurrency: 2,
            connect_timeout: Duration::from_millis(100),
            request_timeout: Duration::from_millis(500),
            pool_idle_timeout: Duration::from_secs(1),
            failure_backoff: Duration::from_millis(10),
            probe_interval: Duration::from_secs(1),
            ca_certs: Vec::new(),
        }
    }

    fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpRequest {
        HttpRequest {
            ts_us: 1,
            vni: 7,
            client: "10.1.2.3:40000".parse().unwrap(),
            peer: "10.1.2.3:40000".parse().unwrap(),
            server: "10.9.9.9:80".parse().unwrap(),
            method: method.into(),
            target: target.into(),
            version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
            chunked: false,
            body_truncated: false,
        }
    }

    fn header_list(r: &Request<Full<Bytes>>) -> Vec<(String, String)> {
        r.headers()
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect()
    }

    #[test]
    fn method_target_and_header_order_are_kept_and_host_is_not_the_connection_target() {
        let r = req(
            "GET",
            "/a/b?c=d",
            &[
                ("Host", "shop.example"),
                ("User-Agent", "curl"),
                ("Accept", "*/*"),
            ],
            b"",
        );
        let out = build_request(r.clone(), &cfg()).unwrap();
        assert_eq!(out.method(), Method::GET);
        assert_eq!(out.uri().to_string(), "/a/b?c=d");
        assert_eq!(
            header_list(&out),
            vec![
                ("host".into(), "shop.example".into()),
                ("user-agent".into(), "curl".into()),
                ("accept".into(), "*/*".into()),
                ("x-forwarded-for".into(), "10.1.2.3".into()),
            ]
        );
    }

    #[test]
    fn hop_by_hop_headers_and_connection_tokens_are_removed() {
        let r = req(
            "GET",
            "/",
            &[
                ("Host", "h"),
                ("Connection", "keep-alive, X-Secret-Hop"),
                ("Keep-Alive", "timeout=5"),
                ("X-Secret-Hop", "1"),
                ("TE", "trailers"),
                ("Upgrade", "websocket"),
                ("Proxy-Connection", "keep-alive"),
                ("X-End", "2"),
            ],
            b"",
        );
        let out = build_request(r.clone(), &cfg()).unwrap();
        let names: Vec<String> = header_list(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["host", "x-end", "x-forwarded-for"]);
    }

    #[test]
    fn chunked_body_is_reframed_with_content_length() {
        let mut r = req(
            "POST",
            "/up",
            &[
                ("Host", "h"),
                ("Transfer-Encoding", "chunked"),
                ("Trailer", "X-Sum"),
                ("Content-Type", "text/plain"),
            ],
            b"hello world",
        );
        r.chunked = true;
        let out = build_request(r.clone(), &cfg()).unwrap();
        assert!(out.headers().get("transfer-encoding").is_none());
        assert!(out.headers().get("trailer").is_none());
        assert_eq!(out.headers()["content-length"], "11");
        assert_eq!(out.headers()["content-type"], "text/plain");
    }

    #[test]
    fn content_length_is_recomputed_from_the_body() {
        let mut r = req(
            "POST",
            "/",
            &[("Host", "h"), ("Content-Length", "100")],
            b"cut",
        );
        r.body_truncated = true;
        let out = build_request(r.clone(), &cfg()).unwrap();
        assert_eq!(out.headers()["content-length"], "3");
        assert_eq!(out.headers()[TRUNCATED_HEADER], "true");
        let get = build_request(req("GET", "/", &[("Host", "h")], b""), &cfg()).unwrap();
        assert!(get.headers().get("content-length").is_none());
    }

    #[test]
    fn client_ip_is_appended_to_an_existing_forwarded_for_in_place() {
        let r = req(
            "GET",
            "/",
            &[
                ("Host", "h"),
                ("X-Forwarded-For", "1.1.1.1"),
                ("Accept", "*/*"),
                ("x-forwarded-for", "2.2.2.2"),
            ],
            b"",
        );
        let out = build_request(r.clone(), &cfg()).unwrap();
        assert_eq!(
            header_list(&out),
            vec![
                ("host".into(), "h".into()),
                (
                    "x-forwarded-for".into(),
                    "1.1.1.1, 2.2.2.2, 10.1.2.3".into()
                ),
                ("accept".into(), "*/*".into()),
            ]
        );
    }

    #[test]
    fn forwarded_for_can_be_renamed_or_turned_off() {
        let mut c = cfg();
        c.forwarded_for = Some(HeaderName::from_static("x-real-client"));
        let out = build_request(req("GET", "/", &[("Host", "h")], b""), &c).unwrap();
        assert_eq!(out.headers()["x-real-client"], "10.1.2.3");
        assert!(out.headers().get("x-forwarded-for").is_none());
        c.forwarded_for = None;
        let out = build_request(req("GET", "/", &[("Host", "h")], b""), &c).unwrap();
        assert_eq!(out.headers().len(), 1);
    }

    #[test]
    fn ipv6_client_is_written_without_port_or_brackets() {
        let mut r = req("GET", "/", &[("Host", "h")], b"");
        r.client = "[2001:db8::5]:5555".parse().unwrap();
        let out = build_request(r.clone(), &cfg()).unwrap();
        assert_eq!(out.headers()["x-forwarded-for"], "2001:db8::5");
    }

    #[test]
    fn the_proxy_protocol_client_not_the_balancer_goes_into_x_forwarded_for() {
        let mut r = req("GET", "/", &[("Host", "h")], b"");
        r.client = "198.51.100.7:40000".parse().unwrap();
        r.peer = "10.0.5.9:61000".parse().unwrap();
        let out = build_request(r, &cfg()).unwrap();
        assert_eq!(out.headers()["x-forwarded-for"], "198.51.100.7");
    }

    #[test]
    fn extra_headers_replace_request_headers_of_the_same_name() {
        let mut c = cfg();
        c.extra_headers = vec![parse_extra_header("X-Tenant: blue").unwrap()];
        let r = req("GET", "/", &[("Host", "h"), ("X-Tenant", "spoofed")], b"");
        let out = build_request(r.clone(), &c).unwrap();
        let all: Vec<_> = out.headers().get_all("x-tenant").iter().collect();
        assert_eq!(all, vec!["blue"]);
        assert!(parse_extra_header("no colon").is_err());
    }

    #[test]
    fn missing_host_names_the_original_server() {
        let out = build_request(req("GET", "/", &[], b""), &cfg()).unwrap();
        assert_eq!(out.headers()["host"], "10.9.9.9:80");
    }

    #[test]
    fn absolute_targets_become_origin_form_and_odd_bytes_are_encoded() {
        assert_eq!(
            origin_form("http://x.example/p?q=1").as_deref(),
            Some("/p?q=1")
        );
        assert_eq!(origin_form("http://x.example").as_deref(), Some("/"));
        assert_eq!(origin_form("http://x.example?a").as_deref(), Some("/?a"));
        assert_eq!(origin_form("*"), None);
        assert_eq!(origin_form("x.example:443"), None);
        assert_eq!(origin_form("/a b").as_deref(), Some("/a%20b"));
        assert_eq!(origin_form("/a\tb").as_deref(), Some("/a%09b"));
        assert_eq!(
            origin_form("/é").as_deref(),
            Some("/é"),
            "obs-text is kept as sent"
        );
    }

    #[test]
    fn upstream_path_prefix_is_prepended() {
        let mut c = cfg();
        c.upstream = Upstream::parse("https://analyzer.internal:8443/mirror/").unwrap();
        let out = build_request(req("GET", "/x?y", &[("Host", "h")], b""), &c).unwrap();
        assert_eq!(out.uri().to_string(), "/mirror/x?y");
        assert_eq!(c.upstream.host_port(), ("analyzer.internal".into(), 8443));
        assert!(Upstream::parse("ftp://x").is_err());
        assert!(Upstream::parse("/relative").is_err());
        assert_eq!(
            Upstream::parse("http://[::1]").unwrap().host_port(),
            ("::1".into(), 80)
        );
    }

    #[test]
    fn invalid_methods_and_targets_are_typed_errors() {
        let out = build_request(req("GE T", "/", &[], b""), &cfg());
        assert_eq!(out.unwrap_err(), BuildError::Method);
        let out = build_request(req("OPTIONS", "*", &[], b""), &cfg());
        assert_eq!(out.unwrap_err(), BuildError::Target);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_never_waits() {
        let t = Arc::new(Telemetry::new(1, 3));
        let (q, _fwd) = channel(cfg(), t.clone());
        for _ in 0..4 {
            q.try_submit(req("GET", "/", &[], b"")).unwrap();
        }
        assert_eq!(
            q.try_submit(req("GET", "/", &[], b"")),
            Err(RequestDropReason::QueueFull)
        );
        let text = t.render();
        assert!(text.contains("rebuilder_queue_depth 4"), "{text}");
    }

    #[tokio::test]
    async fn the_byte_budget_drops_large_requests() {
        let t = Arc::new(Telemetry::new(1, 3));
        let mut c = cfg();
        c.queue_max_bytes = 10_000;
        let (q, _fwd) = channel(c, t.clone());
        q.try_submit(req("POST", "/", &[], &[0u8; 5000])).unwrap();
        assert_eq!(
            q.try_submit(req("POST", "/", &[], &[0u8; 5000])),
            Err(RequestDropReason::QueueBytes)
        );
        q.try_submit(req("GET", "/", &[], b"")).unwrap();
    }

    #[tokio::test]
    async fn a_closed_forwarder_counts_as_shutdown() {
        let t = Arc::new(Telemetry::new(1, 3));
        let (q, fwd) = channel(cfg(), t);
        drop(fwd);
        assert_eq!(
            q.try_submit(req("GET", "/", &[], b"")),
            Err(RequestDropReason::Shutdown)
        );
    }
}
