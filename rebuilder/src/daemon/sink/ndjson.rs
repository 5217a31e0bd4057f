//! The ndjson sink: transactions as JSON lines ([`crate::record`], the objects of `rebuilder
//! replay --format jsonl`), in batches POSTed to `--upstream` with `Content-Type:
//! application/x-ndjson` (gzip with `--sink-gzip`): what log pipelines (Vector, Fluent Bit,
//! Logstash, an OpenTelemetry collector's HTTP receivers) and API-security ingestion
//! endpoints take.
//!
//! A batch is sent once it holds `--sink-batch-lines` lines or `--sink-batch-bytes` bytes, or
//! `--sink-flush-ms` (1 s by default) after its first line. One batch is in flight at a time
//! (order kept). It goes through the same connection layer as the `http-replay` senders
//! ([`crate::daemon::forward::connection`]): a keep-alive connection opened before a line is
//! taken (while the upstream is down the lines wait in the queue, and the full queue drops new
//! ones, counted), the same backoff, the same prober. A batch is written at most once, except
//! when the upstream cannot have processed it (nothing of it went out: written again on a new
//! connection, twice at most); after a timeout, an I/O error or a connection closed without
//! an answer every line of it is dropped and counted. Every line counts as one request in the
//! forwarding metrics (`requests_forwarded{status}`, `requests_dropped{reason}`,
//! `requests_resent`) and in the upstream's state (`rebuilder_upstream_up`).

use std::io::Write;
use std::time::Duration;

use crate::daemon::config::RunArgs;
use crate::daemon::forward::QueueReceiver;
use crate::daemon::forward::connection::{Asked, Delivery, UpstreamConn, probe_loop};
use crate::daemon::telemetry::UpstreamErrorClass;
use crate::engine::request::HttpRequest;
use crate::record::{DecodeStats, RecordOptions, write_line};
use crate::sources::{SourceMap, SourcesReader};

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
    fn add(
        &mut self,
        r: &HttpRequest,
        sources: &SourceMap,
        opts: &RecordOptions,
        decode: &mut DecodeStats,
    ) {
        write_line(&mut self.body, r, sources, opts, decode);
        self.lines += 1;
    }
    fn full(&self, cfg: &NdjsonConfig) -> bool {
        self.lines >= cfg.batch_lines as u64 || self.body.len() >= cfg.batch_bytes
    }
}

/// Runs until every queue handle is gone and the last batch is sent.
pub async fn run(mut rx: QueueReceiver, cfg: NdjsonConfig, mut sources: SourcesReader) {
    let inner = rx.inner.clone();
    let prober = tokio::spawn(probe_loop(inner.clone()));
    let mut conn: Option<UpstreamConn> = None;
    let mut wbuf = Vec::new();
    loop {
        // Connected before a line is taken: while the upstream is down, lines wait queued.
        if !inner.ready(&mut conn).await {
            if rx.is_drained() {
                break;
            }
            continue;
        }
        let Some(first) = rx.recv().await else { break };
        let mut batch = Batch::default();
        let mut decode = DecodeStats::default();
        batch.add(&first, sources.map(), &cfg.record, &mut decode);
        drop(first);
        let deadline = tokio::time::Instant::now() + cfg.flush;
        let mut closed = false;
        while !batch.full(&cfg) {
            // What is queued already goes in without waiting.
            if let Some(r) = rx.try_recv() {
                batch.add(&r, sources.map(), &cfg.record, &mut decode);
                continue;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => batch.add(&r, sources.map(), &cfg.record, &mut decode),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        inner.telemetry.bodies_decoded(&decode);
        post(&inner, &mut conn, &cfg, &batch, &mut wbuf).await;
        if closed {
            break;
        }
    }
    prober.abort();
    inner.telemetry.set_in_flight(0);
}

/// Writes the POST of one batch into `out`.
fn write_post(out: &mut Vec<u8>, inner: &Delivery, cfg: &NdjsonConfig, body: &[u8]) {
    let up = &inner.cfg.upstream;
    let path = if up.path_prefix.is_empty() {
        "/"
    } else {
        up.path_prefix.as_str()
    };
    let extra = &inner.cfg.extra_headers;
    let field = |out: &mut Vec<u8>, name: &str, value: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    out.clear();
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // --extra-header fields replace ours of the same name, except the framing.
    let ours = [
        ("Host", up.authority.as_str().as_bytes()),
        ("Content-Type", b"application/x-ndjson".as_slice()),
        ("Content-Encoding", b"gzip".as_slice()),
    ];
    for (name, value) in ours {
        if (name != "Content-Encoding" || cfg.gzip)
            && !extra
                .iter()
                .any(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
        {
            field(out, name, value);
        }
    }
    for (n, v) in extra {
        if !n.as_str().eq_ignore_ascii_case("content-length") {
            field(out, n.as_str(), v.as_bytes());
        }
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
}

/// POSTs one batch and settles its lines: every line counts as one request delivered or
/// dropped (or written again).
async fn post(
    inner: &Delivery,
    conn: &mut Option<UpstreamConn>,
    cfg: &NdjsonConfig,
    batch: &Batch,
    wbuf: &mut Vec<u8>,
) {
    let t = &inner.telemetry;
    if cfg.gzip {
        let mut e = flate2::write::GzEncoder::new(
            Vec::with_capacity(batch.body.len() / 4),
            flate2::Compression::fast(),
        );
        let _ = e.write_all(&batch.body);
        write_post(wbuf, inner, cfg, &e.finish().unwrap_or_default());
    } else {
        write_post(wbuf, inner, cfg, &batch.body);
    }
    let mut unsent = 0;
    loop {
        if !inner.ready(conn).await {
            continue;
        }
        let ex = inner.exchange(conn, wbuf, &[Asked::default()]).await;
        if let Some(&(status, latency)) = ex.answers.first() {
            for _ in 0..batch.lines {
                t.request_forwarded(status, latency);
            }
            break;
        }
        if let Some(class) = ex.failure {
            for _ in 0..batch.lines {
                inner.lost(class);
            }
            break;
        }
        // Nothing of it went out: written again on a new connection, once.
        unsent += 1;
        if unsent >= 2 {
            for _ in 0..batch.lines {
                inner.lost(UpstreamErrorClass::Io);
            }
            break;
        }
        for _ in 0..batch.lines {
            t.request_resent();
        }
    }
    inner.settled(batch.lines);
}
