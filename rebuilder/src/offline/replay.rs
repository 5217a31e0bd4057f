//! `rebuilder replay` and `rebuilder generate`: offline runs of the engine over capture files.
//!
//! [`run_capture`] drives an [`Engine`] over a pcap/pcapng stream (calling `on_timer` every
//! 100 ms of capture time, like the daemon does in real time) and hands every request to a
//! sink. A malformed record stops the read, but the engine is still flushed and every request
//! found so far is delivered: the error is returned in [`ReplayOutcome::error`].

use crate::dedup::Dedup;
use crate::engine::request::HttpRequest;
use crate::engine::stats::{DropReason, EngineStats, ResponseMissing};
use crate::engine::{Engine, EngineConfig};
use crate::offline::capture::{
    CaptureError, CaptureFormat, CaptureReader, PcapStream, ReaderStats,
};
use crate::offline::synth::{Generator, SynthConfig, TruthRequest};
pub use crate::record::rfc3339_us;
use crate::record::{DecodeStats, JsonOut, RecordOptions};
use crate::sources::SourceMap;
use std::io::{Read, Write};
use std::path::PathBuf;

/// How often (capture time) the engine's timer runs during a replay.
pub const TIMER_INTERVAL_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Capture(#[from] CaptureError),
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    #[error("invalid argument: {0}")]
    Argument(String),
    #[error(transparent)]
    Sources(#[from] crate::sources::SourcesError),
}

/// What a replay read and did.
#[derive(Debug)]
pub struct ReplayOutcome {
    pub format: CaptureFormat,
    pub reader: ReaderStats,
    pub engine: EngineStats,
    /// The engine's flow table size at end of input (before the final flush).
    pub active_flows_at_end: usize,
    /// First and last capture timestamps (µs).
    pub first_ts_us: u64,
    pub last_ts_us: u64,
    /// The read stopped on this error; everything before it was processed.
    pub error: Option<CaptureError>,
}

/// Replays a capture through a new engine with `config`; every request goes to `sink`.
/// `Err` only when the file can't be opened as a capture at all or the sink fails.
pub fn run_capture<R: Read>(
    input: R,
    config: EngineConfig,
    mut sink: impl FnMut(&HttpRequest) -> std::io::Result<()>,
) -> Result<ReplayOutcome, ReplayError> {
    let mut reader = CaptureReader::new(input)?;
    let mut engine = Engine::new(config);
    let mut out: Vec<HttpRequest> = Vec::new();
    let mut next_timer = 0u64;
    let mut max_ts = 0u64;
    let mut first_ts = None;
    let mut error = None;
    loop {
        match reader.next_packet() {
            Ok(Some(p)) => {
                first_ts.get_or_insert(p.ts_us);
                if p.ts_us > max_ts {
                    max_ts = p.ts_us;
                }
                let [next, after] = p.next_frames;
                engine.prefetch_frames(next, after);
                engine.on_captured_frame(p.ts_us, p.frame, &mut out);
                if max_ts >= next_timer {
                    engine.on_timer(max_ts, &mut out);
                    next_timer = max_ts + TIMER_INTERVAL_US;
                }
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        if !out.is_empty() {
            for r in out.drain(..) {
                sink(&r).map_err(ReplayError::Output)?;
            }
        }
    }
    let active_flows_at_end = engine.active_flows();
    engine.finish(&mut out);
    for r in out.drain(..) {
        sink(&r).map_err(ReplayError::Output)?;
    }
    Ok(ReplayOutcome {
        format: reader.format(),
        reader: reader.stats(),
        engine: engine.stats().clone(),
        active_flows_at_end,
        first_ts_us: first_ts.unwrap_or(0),
        last_ts_us: max_ts,
        error,
    })
}

/// Output formats of `rebuilder replay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per request on stdout.
    Jsonl,
    /// Each request as an HTTP/1.x message (head as sent, body de-chunked and re-framed).
    Http,
    /// Only the counters (on stderr).
    Summary,
}

/// `rebuilder replay FILE`: extract the HTTP requests of a pcap/pcapng capture.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// pcap or pcapng file (VXLAN on UDP/4789, GENEVE on UDP/6081 around it, or plain
    /// Ethernet); `-` reads stdin.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Jsonl)]
    pub format: OutputFormat,
    /// Only these VNIs (repeatable; default all).
    #[arg(long = "vni")]
    pub vni: Vec<u32>,
    /// Include the bodies (base64) in jsonl output.
    #[arg(long)]
    pub with_body: bool,
    /// Decode gzip / deflate bodies (`Content-Encoding`) for the jsonl output.
    #[arg(long)]
    pub decode_bodies: bool,
    /// Largest decoded body kept with --decode-bodies (bytes); longer ones are cut and flagged.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_decoded_body_bytes: usize,
    /// How long a request waits for its response to begin, capture clock (µs), from its end
    /// or the end of the answer before it, whichever is later; a response whose head came is
    /// waited for until it completes, one whose head began in time for its head to end (at
    /// most this long after its first byte).
    #[arg(long, default_value_t = EngineConfig::default().response_timeout_us)]
    pub response_timeout_us: u64,
    /// How long a request waits while the server's direction was never seen (µs).
    #[arg(long, default_value_t = EngineConfig::default().server_wait_us)]
    pub server_wait_us: u64,
    /// Largest body kept per request (bytes); longer bodies are cut and flagged.
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Under memory pressure (the budget more than 7/8 used), flows that hold buffered bytes
    /// and have had no packet for this long, capture clock (µs), are evicted, least recently
    /// active first, down to 3/4 (`flows_reclaimed`); past the idle timeout: off.
    #[arg(long, default_value_t = EngineConfig::default().reclaim_idle_us)]
    pub reclaim_idle_us: u64,
    #[command(flatten)]
    pub health_checks: crate::engine::health_check::HealthCheckArgs,
    #[command(flatten)]
    pub proxy_protocol: crate::engine::proxy::ProxyProtocolArgs,
    /// The source map (`docs/sources.md`): each record's `source` names the ENI and workload
    /// its key belongs to (`"eni": null` for keys not in it), and the summary counts per
    /// source. Read once; a version this rebuilder does not know is an error.
    #[arg(long, env = "REBUILDER_SOURCES_FILE")]
    pub sources_file: Option<PathBuf>,
    #[command(flatten)]
    pub dedup: crate::dedup::DedupArgs,
}

impl ReplayArgs {
    pub fn engine_config(&self) -> EngineConfig {
        let mut config = EngineConfig::default();
        if !self.vni.is_empty() {
            config.vni_allow = Some(self.vni.clone());
        }
        if let Some(m) = self.max_body_bytes {
            config.max_body_bytes = m;
        }
        // Request bodies are read by the http format, by a JSON record with a body (or decoded
        // from one) and by --dedup (a pair is one request only if its bodies are equal).
        config.keep_request_bodies = self.format == OutputFormat::Http
            || (self.format == OutputFormat::Jsonl && (self.with_body || self.decode_bodies))
            || self.dedup.dedup;
        // Every output but the summary shows requests; --dedup compares them.
        config.keep_request_heads = self.format != OutputFormat::Summary || self.dedup.dedup;
        // Only a JSON record with a body (or decoded from one) reads response bodies.
        config.keep_response_bodies =
            self.format == OutputFormat::Jsonl && (self.with_body || self.decode_bodies);
        // Only a JSON record shows a response's reason and fields.
        config.keep_response_heads = self.format == OutputFormat::Jsonl;
        config.response_timeout_us = self.response_timeout_us;
        config.server_wait_us = self.server_wait_us;
        config.reclaim_idle_us = self.reclaim_idle_us;
        config.health_checks = self.health_checks.rule();
        config.proxy_protocol_from = self.proxy_protocol.ranges();
        config
    }
}

/// Runs `rebuilder replay`: requests on `stdout`, the summary on `stderr`.
pub fn replay_command(
    args: &ReplayArgs,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<ReplayOutcome, ReplayError> {
    let input: Box<dyn Read> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&args.file).map_err(|source| ReplayError::Open {
                path: args.file.clone(),
                source,
            })?,
        )
    };
    let sources = match &args.sources_file {
        Some(path) => SourceMap::load(path)?,
        None => SourceMap::empty(),
    };
    let mut line = Vec::with_capacity(4096);
    let opts = RecordOptions {
        with_body: args.with_body,
        decode_bodies: args.decode_bodies.then_some(args.max_decoded_body_bytes),
    };
    let mut decoded = DecodeStats::default();
    let mut emit = |r: &HttpRequest| match args.format {
        OutputFormat::Jsonl => {
            line.clear();
            crate::record::write_line(&mut line, r, &sources, &opts, &mut decoded);
            stdout.write_all(&line)
        }
        OutputFormat::Http => write_http(stdout, r),
        OutputFormat::Summary => Ok(()),
    };
    let mut dedup = args.dedup.config().map(Dedup::new);
    // The dedup window runs on the capture clock: the latest time an emitted request shows.
    let mut now = 0u64;
    let mut ready = Vec::new();
    let outcome = run_capture(input, args.engine_config(), |r| {
        let Some(d) = dedup.as_mut() else {
            return emit(r);
        };
        now = now.max(r.response.as_ref().map_or(r.ts_us, |resp| resp.ts_us));
        d.push(
            r.clone(),
            sources.is_load_balancer(&r.source_key()),
            now,
            &mut ready,
        );
        d.expire(now, &mut ready);
        ready.drain(..).try_for_each(|r| emit(&r))
    })?;
    if let Some(d) = dedup.as_mut() {
        d.flush(&mut ready);
        ready
            .drain(..)
            .try_for_each(|r| emit(&r))
            .map_err(ReplayError::Output)?;
    }
    stdout.flush().map_err(ReplayError::Output)?;
    write_summary(stderr, &outcome).map_err(ReplayError::Output)?;
    write_source_summary(stderr, &outcome.engine, &sources).map_err(ReplayError::Output)?;
    if let Some(d) = &dedup {
        let s = d.stats();
        writeln!(stderr, "dedup_held {}", s.held).map_err(ReplayError::Output)?;
        writeln!(stderr, "dedup_collapsed {}", s.collapsed).map_err(ReplayError::Output)?;
        writeln!(stderr, "dedup_released {}", s.released).map_err(ReplayError::Output)?;
        writeln!(stderr, "dedup_over_budget {}", s.over_budget).map_err(ReplayError::Output)?;
    }
    if args.decode_bodies {
        writeln!(stderr, "bodies_decoded {}", decoded.decoded).map_err(ReplayError::Output)?;
        writeln!(stderr, "bodies_decoded_truncated {}", decoded.truncated)
            .map_err(ReplayError::Output)?;
        writeln!(stderr, "body_decode_failures {}", decoded.failed).map_err(ReplayError::Output)?;
    }
    Ok(outcome)
}

/// One request as an HTTP/1.x message, preceded by a `###` line naming where it came from.
/// A chunked body is re-framed as a single chunk so the message stays well-formed.
pub fn write_http(w: &mut dyn Write, r: &HttpRequest) -> std::io::Result<()> {
    writeln!(
        w,
        "### {} vni={} {} -> {}{}{}{}{}{}",
        rfc3339_us(r.ts_us),
        r.vni,
        r.client,
        r.server,
        if r.peer != r.client {
            format!(" via={}", r.peer)
        } else {
            String::new()
        },
        r.gwlbe_name()
            .map(|g| format!(" gwlbe={g}"))
            .unwrap_or_default(),
        r.mirror_source
            .map(|m| format!(" mirror={m}"))
            .unwrap_or_default(),
        if r.body_truncated {
            " body_truncated"
        } else {
            ""
        },
        if r.anomalies.is_empty() {
            String::new()
        } else {
            format!(" anomalies={}", r.anomalies)
        }
    )?;
    write!(
        w,
        "{} {} HTTP/{}.{}\r\n",
        r.method, r.target, r.version_major, r.version
    )?;
    for (n, v) in &r.headers {
        w.write_all(n.as_bytes())?;
        w.write_all(b": ")?;
        w.write_all(v)?;
        w.write_all(b"\r\n")?;
    }
    w.write_all(b"\r\n")?;
    if r.chunked {
        if !r.body.is_empty() {
            write!(w, "{:x}\r\n", r.body.len())?;
            w.write_all(&r.body)?;
            w.write_all(b"\r\n")?;
        }
        w.write_all(b"0\r\n")?;
        for (n, v) in &r.trailers {
            w.write_all(n.as_bytes())?;
            w.write_all(b": ")?;
            w.write_all(v)?;
            w.write_all(b"\r\n")?;
        }
        w.write_all(b"\r\n")?;
    } else {
        w.write_all(&r.body)?;
    }
    w.write_all(b"\n")
}

/// The counters, one `name value` per line.
pub fn write_summary(w: &mut dyn Write, o: &ReplayOutcome) -> std::io::Result<()> {
    let s = &o.engine;
    let format = match o.format {
        CaptureFormat::Pcap => "pcap",
        CaptureFormat::PcapNg => "pcapng",
    };
    writeln!(w, "capture_format {format}")?;
    writeln!(w, "capture_packets {}", o.reader.packets)?;
    writeln!(
        w,
        "capture_unsupported_link_type {}",
        o.reader.unsupported_link_type
    )?;
    writeln!(
        w,
        "capture_duration_us {}",
        o.last_ts_us.saturating_sub(o.first_ts_us)
    )?;
    writeln!(w, "packets {}", s.packets)?;
    writeln!(w, "bytes {}", s.bytes)?;
    writeln!(w, "requests {}", s.requests)?;
    writeln!(w, "bodies_truncated {}", s.bodies_truncated)?;
    writeln!(w, "flows_created {}", s.flows_created)?;
    writeln!(w, "flows_evicted {}", s.flows_evicted)?;
    writeln!(w, "flows_reclaimed {}", s.flows_reclaimed)?;
    writeln!(w, "flows_expired {}", s.flows_expired)?;
    writeln!(w, "flows_active_at_end {}", o.active_flows_at_end)?;
    writeln!(w, "gaps {}", s.gaps)?;
    writeln!(w, "gap_bytes {}", s.gap_bytes)?;
    writeln!(w, "opaque_flows {}", s.opaque_flows)?;
    writeln!(w, "upgraded_flows {}", s.upgraded_flows)?;
    writeln!(w, "response_packets {}", s.response_packets)?;
    writeln!(w, "proxy_headers {}", s.proxy_headers)?;
    writeln!(w, "responses {}", s.responses)?;
    writeln!(w, "responses_paired {}", s.responses_paired)?;
    writeln!(w, "responses_unmatched {}", s.responses_unmatched)?;
    writeln!(w, "responses_interim {}", s.responses_interim)?;
    writeln!(
        w,
        "response_bodies_truncated {}",
        s.response_bodies_truncated
    )?;
    writeln!(w, "response_heads_truncated {}", s.response_heads_truncated)?;
    writeln!(w, "overlap_different_data {}", s.overlap_different_data)?;
    writeln!(w, "truncated_packets {}", s.truncated_packets)?;
    for reason in DropReason::ALL {
        writeln!(w, "drop_{} {}", reason.as_str(), s.drops(reason))?;
    }
    for reason in ResponseMissing::ALL {
        writeln!(
            w,
            "response_missing_{} {}",
            reason.as_str(),
            s.responses_missing(reason)
        )?;
    }
    Ok(())
}

/// One line per source key seen (`source eni=… sender=… vni=… gwlbe=…` and its counters,
/// `complete`: the share of requests complete), sorted by key; the ENI from `sources` (`-`
/// when the key is not in it). Their counters add up to the totals above.
pub fn write_source_summary(
    w: &mut dyn Write,
    s: &EngineStats,
    sources: &SourceMap,
) -> std::io::Result<()> {
    let mut rows = s.sources.rows();
    rows.sort_by_key(|(k, _)| *k);
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for (key, c) in rows {
        let (eni, sender, vni, gwlbe) = match key {
            Some(k) => (
                opt(sources.eni(&k).map(str::to_owned)),
                opt(k.sender.map(|a| a.to_string())),
                opt(k.vni.map(|v| v.to_string())),
                opt(k.gwlbe.map(crate::engine::encap::geneve::endpoint_name)),
            ),
            None => ("other".into(), "-".into(), "-".into(), "-".into()),
        };
        writeln!(
            w,
            "source eni={eni} sender={sender} vni={vni} gwlbe={gwlbe} datagrams={} bytes={} \
             truncated_packets={} gaps={} requests={} responses={} paired={} unpaired={} \
             drops={} complete={}",
            c.datagrams,
            c.bytes,
            c.truncated_packets,
            c.gaps,
            c.requests,
            c.responses,
            c.paired,
            c.unpaired,
            c.drops.iter().sum::<u64>(),
            c.complete_share()
                .map_or_else(|| "-".into(), |v| format!("{v:.4}")),
        )?;
    }
    Ok(())
}

/// `rebuilder generate`: write a deterministic synthetic capture and its ground truth.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Output pcap.
    #[arg(long)]
    pub out: PathBuf,
    /// Output ground truth (jsonl: the replay fields plus `conn`, `index`, `expected`, `body_b64`).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 20)]
    pub connections: usize,
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 1)]
    pub min_requests: usize,
    #[arg(long, default_value_t = 5)]
    pub max_requests: usize,
    /// Comma-separated methods, chosen uniformly (POST, PUT, PATCH carry bodies).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "GET,POST,PUT,DELETE,HEAD,PATCH,OPTIONS"
    )]
    pub methods: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub min_body: usize,
    #[arg(long, default_value_t = 4000)]
    pub max_body: usize,
    /// Fraction of bodies sent chunked.
    #[arg(long, default_value_t = 0.0)]
    pub chunked: f64,
    /// Cut every chunked terminator `0\r\n\r\n` across two segments.
    #[arg(long)]
    pub split_chunk_terminator: bool,
    #[arg(long, default_value_t = 0.0)]
    pub expect_continue: f64,
    /// Fraction of connections pipelining all their requests in one write.
    #[arg(long, default_value_t = 0.0)]
    pub pipelining: f64,
    /// One request per connection (`Connection: close`).
    #[arg(long)]
    pub no_keep_alive: bool,
    #[arg(long, default_value_t = 0.0)]
    pub http10: f64,
    #[arg(long, default_value_t = 0.0)]
    pub small_segments: f64,
    #[arg(long, default_value_t = 0.0)]
    pub reorder: f64,
    #[arg(long, default_value_t = 0.0)]
    pub retransmit: f64,
    #[arg(long, default_value_t = 0.0)]
    pub overlap: f64,
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// AWS PacketLength: inner frames cut to this many bytes.
    #[arg(long)]
    pub packet_length: Option<usize>,
    #[arg(long, default_value_t = 0.0)]
    pub ipv6: f64,
    #[arg(long)]
    pub outer_ipv6: bool,
    /// Fraction of connections starting with a PROXY protocol v1 line.
    #[arg(long, default_value_t = 0.0)]
    pub proxy_v1: f64,
    /// Fraction of connections starting with a PROXY protocol v2 header.
    #[arg(long, default_value_t = 0.0)]
    pub proxy_v2: f64,
    /// Fraction of connections that are an ALB health check (`ELB-HealthChecker/2.0`).
    #[arg(long, default_value_t = 0.0)]
    pub health_checks: f64,
    #[arg(long, default_value_t = 0.0)]
    pub vlan: f64,
    #[arg(long, default_value_t = 1500)]
    pub mtu: usize,
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_mirror: f64,
    /// The capture starts mid-stream.
    #[arg(long)]
    pub mid_stream: bool,
    /// Leave out the server -> client data.
    #[arg(long)]
    pub no_responses: bool,
    /// Plain Ethernet capture (no VXLAN).
    #[arg(long)]
    pub plain: bool,
    /// Deliver the VXLAN datagrams as a Gateway Load Balancer does behind a GWLB endpoint
    /// target: inside GENEVE (UDP/6081 from a GWLB node) with AWS's options. The same inner
    /// traffic as without it.
    #[arg(long, conflicts_with = "plain")]
    pub geneve: bool,
    /// GWLB endpoint ids for --geneve (`vpce-…`, comma separated), one per connection in turn.
    #[arg(long, value_delimiter = ',', value_parser = crate::engine::encap::geneve::parse_endpoint_name, requires = "geneve")]
    pub gwlb_endpoints: Vec<u64>,
    /// Comma-separated VNIs, one chosen per connection.
    #[arg(long, value_delimiter = ',', default_value = "4242")]
    pub vnis: Vec<u32>,
    /// Start from the realistic benchmark mix (other knobs then override nothing but the seed,
    /// connections, concurrency and --geneve).
    #[arg(long)]
    pub realistic: bool,
}

impl GenerateArgs {
    pub fn synth_config(&self) -> Result<SynthConfig, ReplayError> {
        if self.vnis.is_empty() || self.vnis.iter().any(|v| *v > 0x00ff_ffff) {
            return Err(ReplayError::Argument("VNIs are 24-bit numbers".into()));
        }
        if !(576..=9216).contains(&self.mtu) {
            return Err(ReplayError::Argument(
                "--mtu must be within 576..=9216".into(),
            ));
        }
        if self.realistic {
            return Ok(SynthConfig {
                geneve: self.geneve,
                gwlb_endpoints: self.gwlb_endpoints.clone(),
                ..SynthConfig::realistic(self.seed, self.connections, self.concurrency)
            });
        }
        Ok(SynthConfig {
            seed: self.seed,
            connections: self.connections,
            concurrency: self.concurrency,
            min_requests: self.min_requests,
            max_requests: self.max_requests,
            methods: self.methods.clone(),
            min_body: self.min_body,
            max_body: self.max_body.max(self.min_body),
            chunked: self.chunked,
            split_chunk_terminator: self.split_chunk_terminator,
            expect_continue: self.expect_continue,
            pipelining: self.pipelining,
            keep_alive: !self.no_keep_alive,
            http10: self.http10,
            small_segments: self.small_segments,
            reorder: self.reorder,
            retransmit: self.retransmit,
            overlap: self.overlap,
            loss: self.loss,
            packet_length: self.packet_length,
            ipv6: self.ipv6,
            outer_ipv6: self.outer_ipv6,
            proxy_v1: self.proxy_v1,
            proxy_v2: self.proxy_v2,
            health_checks: self.health_checks,
            vlan: self.vlan,
            mtu: self.mtu,
            duplicate_mirror: self.duplicate_mirror,
            mid_stream: self.mid_stream,
            responses: !self.no_responses,
            vxlan: !self.plain,
            geneve: self.geneve,
            gwlb_endpoints: self.gwlb_endpoints.clone(),
            vnis: self.vnis.clone(),
            ..SynthConfig::default()
        })
    }
}

/// Appends the truth jsonl line of one request to `out`: the replay fields (with `body_b64`;
/// the response the engine must pair with it, or the reason it must give for its absence)
/// then `conn`, `index`, `expected` and `response_certain`.
pub fn write_truth_line(out: &mut Vec<u8>, t: &TruthRequest) {
    let opts = RecordOptions {
        with_body: true,
        decode_bodies: None,
    };
    let mut json = JsonOut(out);
    json.record(
        &t.request,
        SourceMap::none(),
        &opts,
        &mut DecodeStats::default(),
    );
    json.0.pop(); // the record's closing brace: the truth's fields follow
    json.key("conn");
    json.u64(t.conn);
    json.key("index");
    json.u64(u64::from(t.index));
    json.key("expected");
    json.bool(t.expected);
    json.key("response_certain");
    json.bool(t.response_certain);
    json.0.extend_from_slice(b"}\n");
}

/// Runs `rebuilder generate`; returns (frames, requests, expected requests).
pub fn generate_command(args: &GenerateArgs) -> Result<(u64, u64, u64), ReplayError> {
    let cfg = args.synth_config()?;
    let create = |p: &PathBuf| {
        std::fs::File::create(p)
            .map(std::io::BufWriter::new)
            .map_err(|source| ReplayError::Open {
                path: p.clone(),
                source,
            })
    };
    let pcap = create(&args.out)?;
    let mut truth_out = args.truth.as_ref().map(create).transpose()?;
    let mut generator = Generator::new(cfg);
    let mut truth_lines = 0u64;
    let mut expected = 0u64;
    let mut line = Vec::with_capacity(4096);
    let mut write_truth = |batch: Vec<TruthRequest>,
                           w: &mut Option<std::io::BufWriter<std::fs::File>>|
     -> Result<(), ReplayError> {
        for t in batch {
            truth_lines += 1;
            expected += u64::from(t.expected);
            if let Some(w) = w.as_mut() {
                line.clear();
                write_truth_line(&mut line, &t);
                w.write_all(&line).map_err(ReplayError::Output)?;
            }
        }
        Ok(())
    };
    // Stream frames to the pcap while collecting truth as connections complete.
    let mut frames = Vec::new();
    let mut written = 0u64;
    let mut writer = PcapStream::new(pcap)?;
    loop {
        frames.clear();
        frames.extend(generator.by_ref().take(4096));
        if frames.is_empty() {
            break;
        }
        for f in frames.drain(..) {
            writer.write(&f)?;
            written += 1;
        }
        let batch = generator.drain_truth();
        write_truth(batch, &mut truth_out)?;
    }
    let batch = generator.drain_truth();
    write_truth(batch, &mut truth_out)?;
    writer.finish()?;
    if let Some(mut w) = truth_out {
        w.flush().map_err(ReplayError::Output)?;
    }
    Ok((written, truth_lines, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine configuration of `rebuilder replay <extra> x.pcap`.
    fn engine_config_of(extra: &[&str]) -> EngineConfig {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            replay: ReplayArgs,
        }
        let args = ["replay"].iter().chain(extra).chain(&["x.pcap"]);
        Cli::try_parse_from(args)
            .expect("parses")
            .replay
            .engine_config()
    }

    #[test]
    fn response_bodies_and_heads_are_kept_only_for_the_json_records_that_show_them() {
        // (bodies kept, heads kept)
        let keep = |extra: &[&str]| {
            let config = engine_config_of(extra);
            (config.keep_response_bodies, config.keep_response_heads)
        };
        assert_eq!(keep(&[]), (false, true), "jsonl is the default");
        assert_eq!(keep(&["--format", "jsonl"]), (false, true));
        assert_eq!(keep(&["--format", "summary"]), (false, false));
        assert_eq!(
            keep(&["--format", "summary", "--with-body"]),
            (false, false)
        );
        assert_eq!(keep(&["--format", "http"]), (false, false));
        assert_eq!(
            keep(&["--format", "http", "--decode-bodies"]),
            (false, false)
        );
        assert_eq!(keep(&["--format", "jsonl", "--with-body"]), (true, true));
        assert_eq!(
            keep(&["--format", "jsonl", "--decode-bodies"]),
            (true, true)
        );
    }

    #[test]
    fn request_bodies_are_kept_only_for_the_outputs_that_read_them() {
        let keep = |extra: &[&str]| engine_config_of(extra).keep_request_bodies;
        assert!(!keep(&[]), "jsonl without bodies is the default");
        assert!(!keep(&["--format", "summary"]));
        assert!(!keep(&["--format", "summary", "--with-body"]));
        assert!(keep(&["--format", "http"]));
        assert!(keep(&["--format", "jsonl", "--with-body"]));
        assert!(keep(&["--format", "jsonl", "--decode-bodies"]));
        assert!(keep(&["--dedup"]), "a pair's bodies are compared");
        assert!(keep(&["--format", "summary", "--dedup"]));
    }

    #[test]
    fn request_heads_are_kept_for_every_output_but_the_summary() {
        let keep = |extra: &[&str]| engine_config_of(extra).keep_request_heads;
        assert!(keep(&[]), "jsonl is the default");
        assert!(keep(&["--format", "http"]));
        assert!(!keep(&["--format", "summary"]));
        assert!(!keep(&["--format", "summary", "--with-body"]));
        assert!(
            keep(&["--format", "summary", "--dedup"]),
            "a pair's heads are compared"
        );
    }

    #[test]
    fn timestamps_render_as_rfc3339_with_microseconds() {
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_us(1_700_000_000_000_123),
            "2023-11-14T22:13:20.000123Z"
        );
        assert_eq!(
            rfc3339_us(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn chunked_requests_are_reframed_in_http_output() {
        let r = HttpRequest {
            ts_us: 1,
            vni: 7,
            headers: vec![("Transfer-Encoding", "chunked")].into(),
            body: b"hello".to_vec(),
            chunked: true,
            ..HttpRequest::new(
                "POST",
                "/x",
                "10.0.0.1:1234".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap(),
            )
        };
        let mut out = Vec::new();
        write_http(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(
            "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ));
        let with_body = RecordOptions {
            with_body: true,
            decode_bodies: None,
        };
        let mut line = Vec::new();
        crate::record::write_line(
            &mut line,
            &r,
            SourceMap::none(),
            &with_body,
            &mut DecodeStats::default(),
        );
        let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(json["body_b64"], "aGVsbG8=");
        assert_eq!(json["headers"][0][0], "Transfer-Encoding");
        assert_eq!(json["version"], "HTTP/1.1");
        let mut line = Vec::new();
        crate::record::write_line(
            &mut line,
            &r,
            SourceMap::none(),
            &RecordOptions::default(),
            &mut DecodeStats::default(),
        );
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.starts_with("{\"ts\":\"1970-01-01T00:00:00.000001Z\",\"ts_us\":1,"),
            "{line}"
        );
        assert!(!line.contains("body_b64"));
    }
}
