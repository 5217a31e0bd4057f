//! The ndjson sink: transactions as JSON lines ([`crate::record`], the objects of `rebuilder
//! replay --format jsonl`), in batches POSTed to `--upstream` with `Content-Type:
//! application/x-ndjson` (gzip with `--sink-gzip`): what log pipelines (Vector, Fluent Bit,
//! Logstash, an OpenTelemetry collector's HTTP receivers) and API-security ingestion
//! endpoints take.
//!
//! A batch is sent once it holds `--sink-batch-lines` lines or `--sink-batch-bytes` bytes, or
//! `--sink-flush-ms` after its first line. One batch is in flight at a time (order kept);
//! the keep-alive pool of hyper's client resends a request only when it was not written
//! (a connection closed just before), never after a timeout or an I/O error mid-request: then
//! every line of the batch is dropped and counted, like a request of the `http-replay` sink.
//! Every line counts as one request in the forwarding metrics (`requests_forwarded{status}`,
//! `requests_dropped{reason}`); failures feed the health state and back off (doubling from
//! `--failure-backoff-ms` up to 2 s); while no batch goes out, a TCP connection probe checks
//! the upstream every `--health-probe-interval-ms`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::daemon::config::RunArgs;
use crate::daemon::forward::{ForwardConfig, QueueReceiver, build_connector};
use crate::daemon::telemetry::{RequestDropReason, Telemetry, UpstreamErrorClass};
use crate::engine::request::HttpRequest;
use crate::record::{DecodeStats, RecordOptions, write_line};

/// Largest backoff between batches while the upstream fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Settings of the ndjson sink.
#[derive(Debug, Clone)]
pub struct NdjsonConfig {
    pub gzip: bool,
    pub batch_lines: usize,
    pub batch_bytes: usize,
    pub flush: Duration,
    pub record: RecordOptions,
}

impl NdjsonConfig {
    pub fn from_args(a: &RunArgs) -> NdjsonConfig {
        NdjsonConfig {
            gzip: a.sink_gzip,
            batch_lines: a.sink_batch_lines.max(1),
            batch_bytes: a.sink_batch_bytes.max(1),
            flush: Duration::from_millis(a.sink_flush_ms.max(1)),
            record: RecordOptions {
                with_body: a.sink_with_body,
                decode_bodies: a.decode_bodies.then_some(a.max_decoded_body_bytes),
            },
        }
    }
}

/// One batch being filled.
#[derive(Default)]
struct Batch {
    body: Vec<u8>,
    lines: u64,
}

impl Batch {
    fn add(&mut self, r: &HttpRequest, opts: &RecordOptions, decode: &mut DecodeStats) {
        if write_line(&mut self.body, r, opts, decode).is_ok() {
            self.lines += 1;
        }
    }
    fn full(&self, cfg: &NdjsonConfig) -> bool {
        self.lines >= cfg.batch_lines as u64 || self.body.len() >= cfg.batch_bytes
    }
}

/// Runs until every queue handle is gone and the last batch is sent.
pub async fn run(
    mut rx: QueueReceiver,
    cfg: NdjsonConfig,
    fcfg: ForwardConfig,
    telemetry: Arc<Telemetry>,
) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(fcfg.pool_idle_timeout)
        .build(build_connector(&fcfg));
    let path = if fcfg.upstream.path_prefix.is_empty() {
        "/".to_string()
    } else {
        fcfg.upstream.path_prefix.clone()
    };
    let uri: Uri = Uri::builder()
        .scheme(fcfg.upstream.scheme.clone())
        .authority(fcfg.upstream.authority.clone())
        .path_and_query(path)
        .build()
        .expect("scheme and authority were validated");
    let mut failures = 0u32;
    let mut last_sent = Instant::now();
    let mut probed = false;
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = tokio::time::sleep(fcfg.probe_interval) => {
                if last_sent.elapsed() >= fcfg.probe_interval || !probed {
                    probed = true;
                    let ok = probe(&fcfg).await;
                    telemetry.probe_result(ok);
                }
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut batch = Batch::default();
        let mut decode = DecodeStats::default();
        batch.add(&first, &cfg.record, &mut decode);
        drop(first);
        let deadline = tokio::time::Instant::now() + cfg.flush;
        let mut closed = false;
        while !batch.full(&cfg) {
            // What is queued already goes in without waiting.
            if let Some(r) = rx.try_recv() {
                batch.add(&r, &cfg.record, &mut decode);
                continue;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => batch.add(&r, &cfg.record, &mut decode),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        telemetry.bodies_decoded(&decode);
        let ok = send(&client, &uri, &cfg, &fcfg, &telemetry, &batch).await;
        rx.taken.fetch_sub(batch.lines, Relaxed);
        last_sent = Instant::now();
        if ok {
            failures = 0;
        } else {
            failures += 1;
            let wait = fcfg.failure_backoff * 2u32.saturating_pow((failures - 1).min(16));
            tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
        }
        if closed {
            break;
        }
    }
    telemetry.set_in_flight(0);
}

/// POSTs one batch; every line counts as one request delivered or dropped.
async fn send(
    client: &Client<crate::daemon::forward::Connector, Full<Bytes>>,
    uri: &Uri,
    cfg: &NdjsonConfig,
    fcfg: &ForwardConfig,
    telemetry: &Telemetry,
    batch: &Batch,
) -> bool {
    let body = if cfg.gzip {
        let mut e = flate2::write::GzEncoder::new(
            Vec::with_capacity(batch.body.len() / 4),
            flate2::Compression::fast(),
        );
        let _ = e.write_all(&batch.body);
        e.finish().unwrap_or_default()
    } else {
        batch.body.clone()
    };
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
    if let Ok(host) = HeaderValue::from_str(fcfg.upstream.authority.as_str()) {
        b = b.header(HOST, host);
    }
    if cfg.gzip {
        b = b.header(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    for (n, v) in &fcfg.extra_headers {
        b = b.header(n.clone(), v.clone());
    }
    let Ok(req) = b.body(Full::new(Bytes::from(body))) else {
        for _ in 0..batch.lines {
            telemetry.request_dropped(RequestDropReason::Invalid);
        }
        return false;
    };
    telemetry.set_in_flight(batch.lines);
    let start = Instant::now();
    let outcome = tokio::time::timeout(fcfg.request_timeout, async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    })
    .await;
    telemetry.set_in_flight(0);
    let (reason, class) = match outcome {
        Ok(Ok(status)) => {
            let latency = start.elapsed();
            for _ in 0..batch.lines {
                telemetry.request_forwarded(status.as_u16(), latency);
            }
            return !status.is_server_error();
        }
        Ok(Err(e)) if e.is_connect() => (
            RequestDropReason::UpstreamConnect,
            UpstreamErrorClass::Connect,
        ),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "ndjson batch failed");
            (RequestDropReason::UpstreamIo, UpstreamErrorClass::Io)
        }
        Err(_) => (
            RequestDropReason::UpstreamTimeout,
            UpstreamErrorClass::Timeout,
        ),
    };
    telemetry.upstream_error(class);
    for _ in 0..batch.lines {
        telemetry.request_dropped(reason);
    }
    false
}

/// Whether the upstream accepts a TCP connection.
async fn probe(fcfg: &ForwardConfig) -> bool {
    let (host, port) = fcfg.upstream.host_port();
    matches!(
        tokio::time::timeout(
            fcfg.connect_timeout,
            tokio::net::TcpStream::connect((host.as_str(), port))
        )
        .await,
        Ok(Ok(_))
    )
}
