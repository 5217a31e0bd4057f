//! `rebuilder replay` and `rebuilder generate`: offline runs of the engine over capture files.
//!
//! [`run_capture`] drives an [`Engine`] over a pcap/pcapng stream (calling `on_timer` every
//! 100 ms of capture time, like the daemon does in real time) and hands every request to a
//! sink. A malformed record stops the read, but the engine is still flushed and every request
//! found so far is delivered: the error is returned in [`ReplayOutcome::error`].

use crate::engine::request::HttpRequest;
use crate::engine::stats::{DropReason, EngineStats};
use crate::engine::{Engine, EngineConfig};
use crate::offline::capture::{
    CaptureError, CaptureFormat, CaptureReader, PcapStream, ReaderStats,
};
use crate::offline::synth::{Generator, SynthConfig, TruthRequest};
use base64::Engine as _;
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
    /// Include the body (base64) in jsonl output.
    #[arg(long)]
    pub with_body: bool,
    /// Largest body kept per request (bytes); longer bodies are cut and flagged.
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    #[command(flatten)]
    pub health_checks: crate::engine::health_check::HealthCheckArgs,
    #[command(flatten)]
    pub proxy_protocol: crate::engine::proxy::ProxyProtocolArgs,
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
    let mut line = Vec::with_capacity(4096);
    let outcome = run_capture(input, args.engine_config(), |r| match args.format {
        OutputFormat::Jsonl => {
            line.clear();
            serde_json::to_writer(&mut line, &request_json(r, args.with_body))
                .map_err(std::io::Error::other)?;
            line.push(b'\n');
            stdout.write_all(&line)
        }
        OutputFormat::Http => write_http(stdout, r),
        OutputFormat::Summary => Ok(()),
    })?;
    stdout.flush().map_err(ReplayError::Output)?;
    write_summary(stderr, &outcome).map_err(ReplayError::Output)?;
    Ok(outcome)
}

/// The jsonl representation of a request (`body_b64` only with `with_body`); fields in this
/// order. Header values and the target are shown as UTF-8 (invalid bytes replaced).
#[derive(Debug, serde::Serialize)]
pub struct JsonRequest<'a> {
    pub ts: String,
    pub ts_us: u64,
    pub vni: u32,
    /// The real client (the PROXY protocol source when the stream had a header).
    pub client: String,
    /// The inner TCP source (equal to `client` without a PROXY header).
    pub peer: String,
    pub server: String,
    pub method: &'a str,
    pub target: &'a str,
    pub version: &'static str,
    pub headers: Vec<(&'a str, std::borrow::Cow<'a, str>)>,
    pub body_len: usize,
    pub body_truncated: bool,
    pub chunked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_b64: Option<String>,
    /// The Gateway Load Balancer endpoint (`vpce-…`) the mirror came through; absent for VXLAN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gwlbe: Option<String>,
    /// The IP source of the VXLAN datagrams (the mirror session's source ENI); absent for
    /// plain captures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_source: Option<String>,
}

pub fn request_json(r: &HttpRequest, with_body: bool) -> JsonRequest<'_> {
    JsonRequest {
        ts: rfc3339_us(r.ts_us),
        ts_us: r.ts_us,
        vni: r.vni,
        client: r.client.to_string(),
        peer: r.peer.to_string(),
        server: r.server.to_string(),
        method: &r.method,
        target: &r.target,
        version: if r.version == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
        headers: r
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v)))
            .collect(),
        body_len: r.body.len(),
        body_truncated: r.body_truncated,
        chunked: r.chunked,
        body_b64: with_body.then(|| base64::engine::general_purpose::STANDARD.encode(&r.body)),
        gwlbe: r.gwlbe_name(),
        mirror_source: r.mirror_source.map(|ip| ip.to_string()),
    }
}

/// One request as an HTTP/1.x message, preceded by a `###` line naming where it came from.
/// A chunked body is re-framed as a single chunk so the message stays well-formed.
pub fn write_http(w: &mut dyn Write, r: &HttpRequest) -> std::io::Result<()> {
    writeln!(
        w,
        "### {} vni={} {} -> {}{}{}{}{}",
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
        }
    )?;
    write!(w, "{} {} HTTP/1.{}\r\n", r.method, r.target, r.version)?;
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
        w.write_all(b"0\r\n\r\n")?;
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
    writeln!(w, "flows_expired {}", s.flows_expired)?;
    writeln!(w, "flows_active_at_end {}", o.active_flows_at_end)?;
    writeln!(w, "gaps {}", s.gaps)?;
    writeln!(w, "gap_bytes {}", s.gap_bytes)?;
    writeln!(w, "opaque_flows {}", s.opaque_flows)?;
    writeln!(w, "upgraded_flows {}", s.upgraded_flows)?;
    writeln!(w, "response_packets {}", s.response_packets)?;
    writeln!(w, "proxy_headers {}", s.proxy_headers)?;
    for reason in DropReason::ALL {
        writeln!(w, "drop_{} {}", reason.as_str(), s.drops(reason))?;
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for µs since the UNIX epoch.
pub fn rfc3339_us(ts_us: u64) -> String {
    let secs = ts_us / 1_000_000;
    let micros = ts_us % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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

/// The truth jsonl line of one request: the replay fields (with `body_b64`) then `conn`,
/// `index` and `expected`.
#[derive(Debug, serde::Serialize)]
pub struct JsonTruth<'a> {
    #[serde(flatten)]
    pub request: JsonRequest<'a>,
    pub conn: u64,
    pub index: u32,
    pub expected: bool,
}

pub fn truth_json(t: &TruthRequest) -> JsonTruth<'_> {
    JsonTruth {
        request: request_json(&t.request, true),
        conn: t.conn,
        index: t.index,
        expected: t.expected,
    }
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
    let mut write_truth = |batch: Vec<TruthRequest>,
                           w: &mut Option<std::io::BufWriter<std::fs::File>>|
     -> Result<(), ReplayError> {
        for t in batch {
            truth_lines += 1;
            expected += u64::from(t.expected);
            if let Some(w) = w.as_mut() {
                serde_json::to_writer(&mut *w, &truth_json(&t))
                    .map_err(|e| ReplayError::Output(e.into()))?;
                w.write_all(b"\n").map_err(ReplayError::Output)?;
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
            client: "10.0.0.1:1234".parse().unwrap(),
            peer: "10.0.0.1:1234".parse().unwrap(),
            server: "10.0.0.2:80".parse().unwrap(),
            gwlbe: None,
            mirror_source: None,
            method: "POST".into(),
            target: "/x".into(),
            version: 1,
            headers: vec![("Transfer-Encoding".into(), b"chunked".to_vec())],
            body: b"hello".to_vec(),
            chunked: true,
            body_truncated: false,
            version_major: 1,
            trailers: Vec::new(),
            anomalies: Default::default(),
        };
        let mut out = Vec::new();
        write_http(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(
            "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ));
        let json = serde_json::to_value(request_json(&r, true)).unwrap();
        assert_eq!(json["body_b64"], "aGVsbG8=");
        assert_eq!(json["headers"][0][0], "Transfer-Encoding");
        assert_eq!(json["version"], "HTTP/1.1");
        let line = serde_json::to_string(&request_json(&r, false)).unwrap();
        assert!(
            line.starts_with("{\"ts\":\"1970-01-01T00:00:00.000001Z\",\"ts_us\":1,"),
            "{line}"
        );
        assert!(!line.contains("body_b64"));
    }
}
