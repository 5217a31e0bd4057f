//! Offline benchmark: a generated capture of ≥ 1,000,000 packets (10,000 concurrent
//! interleaved flows, both directions, realistic mix) replayed by `rebuilder replay`, compared
//! with tshark (and suricata when installed) on the same file, in CPU time.
//!
//! Phases:
//! 1. generate the capture into a temporary pcap, keeping a fingerprint of every request;
//! 2. correctness: the engine in this process over the pcap; 100 % of the requests must come
//!    out, identical, with no duplicate;
//! 3. speed and memory: `rebuilder replay --format summary FILE` as a child process, then
//!    `--format jsonl` with its output sent to /dev/null (the targets' measure); CPU time
//!    (user + system) and peak RSS from getrusage(RUSAGE_CHILDREN) of a small measuring process
//!    (this binary re-executed), so neither the generator nor the check pollutes them;
//!    with `MF_BENCH_BASELINE`, both formats again, each run paired with one of the baseline
//!    (the engine before responses were paired), alternating which goes first;
//! 4. the same file through `tshark -Y http.request` (and suricata), CPU time from the same
//!    counters; ratios printed together;
//! 5. the floor: a bare walk of the same file in this process (read every record, decode the
//!    outer frame, VXLAN and the inner TCP segment, nothing else), best of the same number of
//!    runs; its packet and segment counts are checked against the generator's, and replay's
//!    CPU is printed as a multiple of it;
//! 6. the writer alone: the records of phase 2 (kept as `replay --format jsonl` keeps them)
//!    written again from memory by the same writer, once and twice each (best of the same
//!    number of runs; the difference is the writer's cost on a record in the cache, as replay
//!    writes a record as it completes); the bytes must be those `replay --format jsonl` writes
//!    (length and hash of its output, read once untimed). Replay does the walk's work and
//!    this work and more, so `1 + writer / walk` is a floor under `jsonl / walk` that no
//!    engine goes below with this reader and this record.
//!
//! Environment: `MF_BENCH_CONNECTIONS` (default 36,000), `MF_BENCH_CONCURRENCY` (10,000),
//! `MF_BENCH_SEED` (1), `MF_BENCH_KEEP=1` keeps the pcap, `MF_BENCH_SKIP_TSHARK=1`,
//! `MF_BENCH_RUNS` (3: rebuilder runs, best and median CPU time reported),
//! `MF_BENCH_BASELINE` (a `rebuilder` built before responses were paired: its CPU against
//! this build's, `MF_BENCH_PAIRED_RUNS` (10) alternating runs of each; `make bench
//! BENCHES=pairing` builds b0a53fa and sets it).
//! Exits non-zero if a request is missing, different or duplicated.

use nix::sys::resource::{UsageWho, getrusage};
use rebuilder::engine::encap::vxlan::VxlanPacket;
use rebuilder::engine::packet::{Parsed, parse_ethernet};
use rebuilder::offline::capture::{CaptureReader, PcapStream};
use rebuilder::offline::replay::run_capture;
use rebuilder::offline::synth::{Generator, SynthConfig};
use rebuilder::record::{DecodeStats, RecordOptions, write_line};
use rebuilder::sources::SourceMap;
use rebuilder::{EngineConfig, HttpRequest};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const TARGET_PPS: f64 = 3_500_000.0;
/// Replay's CPU at most this many times the bare walk + decode of the same file.
const TARGET_WALK_RATIO: f64 = 2.0;
const TARGET_RSS_MIB: f64 = 64.0;
const MIN_PACKETS: u64 = 1_000_000;
/// Replay's CPU with responses paired at most this many times that of the engine before
/// responses (b0a53fa, `MF_BENCH_BASELINE`) on the same capture.
const TARGET_PAIRING_RATIO: f64 = 1.3;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
struct Cpu {
    seconds: f64,
    max_rss_kib: i64,
}

fn children_cpu() -> Cpu {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    Cpu {
        seconds: t(u.user_time()) + t(u.system_time()),
        max_rss_kib: u.max_rss(),
    }
}

fn self_cpu() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

fn fingerprint(r: &HttpRequest) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        r.vni,
        r.client,
        r.server,
        &r.method,
        &r.target,
        r.version,
        &r.headers,
        &r.body,
        r.chunked,
        r.body_truncated,
    )
        .hash(&mut h);
    h.finish()
}

fn request_id(r: &HttpRequest) -> Vec<u8> {
    r.header("X-Request-Id")
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct ChildRun {
    cpu_s: f64,
    max_rss_kib: i64,
    stdout: String,
    stderr: String,
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// Runs a command through a small measuring copy of this binary (`MF_BENCH_MEASURE=1`).
/// A child forked from this big process would inherit its RSS high-water mark at exec (Linux
/// keeps the maximum across exec); the measurer, small when it spawns the command, reports
/// the command's own CPU time (user + system) and peak RSS (getrusage of its only child).
fn run_child(program: &str, args: &[&std::ffi::OsStr]) -> ChildRun {
    run_child_with(program, args, false)
}

/// [`run_child`], the command's standard output sent to /dev/null when `discard_stdout`.
fn run_child_with(program: &str, args: &[&std::ffi::OsStr], discard_stdout: bool) -> ChildRun {
    let report = std::env::temp_dir().join(format!(
        "mirrorfleet-bench-measure-{}-{}",
        std::process::id(),
        program.rsplit('/').next().unwrap_or(program)
    ));
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env("MF_BENCH_MEASURE", "1")
        .env("MF_BENCH_MEASURE_OUT", &report)
        .env(
            "MF_BENCH_MEASURE_DISCARD",
            if discard_stdout { "1" } else { "0" },
        )
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("measurement report");
    let _ = std::fs::remove_file(&report);
    let mut it = text.split_whitespace();
    let cpu_s: f64 = it.next().and_then(|v| v.parse().ok()).expect("cpu seconds");
    let max_rss_kib: i64 = it.next().and_then(|v| v.parse().ok()).expect("max rss");
    ChildRun {
        cpu_s,
        max_rss_kib,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The measuring role: run argv[1..], pass its output through, write "cpu_s max_rss_kib".
fn measure() -> ! {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let discard = std::env::var("MF_BENCH_MEASURE_DISCARD").is_ok_and(|v| v == "1");
    let out = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(if discard {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .output()
        .unwrap_or_else(|e| panic!("{:?}: {e}", args[0]));
    std::io::stdout().write_all(&out.stdout).unwrap();
    std::io::stderr().write_all(&out.stderr).unwrap();
    let c = children_cpu();
    let path = std::env::var("MF_BENCH_MEASURE_OUT").expect("MF_BENCH_MEASURE_OUT");
    std::fs::write(path, format!("{} {}\n", c.seconds, c.max_rss_kib)).unwrap();
    std::process::exit(out.status.code().unwrap_or(1));
}

fn summary_value(summary: &str, name: &str) -> u64 {
    summary
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in summary:\n{summary}"))
}

/// Median CPU ratios of this build to the baseline, `--format summary` and `jsonl`.
struct PairingCost {
    summary: f64,
    jsonl: f64,
}

/// The CPU of `replay` (`bin`) against a build from before responses (`baseline`), on the same
/// capture: `MF_BENCH_PAIRED_RUNS` (10) runs of each, alternating which goes first, so that
/// both meet the same phases of a shared machine (its speed drifts by tens of per cent within
/// an hour); the ratio is the median of the pairs' ratios. Both must read every packet and
/// find every request (`packets`, `requests`: this build's counts, checked against the truth).
fn pairing_cost(
    bin: &str,
    baseline: &std::ffi::OsStr,
    pcap: &Path,
    packets: u64,
    requests: u64,
) -> PairingCost {
    let baseline = baseline.to_str().expect("MF_BENCH_BASELINE: a UTF-8 path");
    let runs: usize = env_or("MF_BENCH_PAIRED_RUNS", 10).max(1);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out = PairingCost {
        summary: 0.0,
        jsonl: 0.0,
    };
    for format in ["summary", "jsonl"] {
        let args = [os("replay"), os("--format"), os(format), pcap.as_os_str()];
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let mut pair = [(bin, 0.0), (baseline, 0.0)];
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let r = run_child_with(pair[k].0, &args, format == "jsonl");
                assert_eq!(
                    summary_value(&r.stderr, "packets"),
                    packets,
                    "{}: every packet read",
                    pair[k].0
                );
                assert_eq!(
                    summary_value(&r.stderr, "requests"),
                    requests,
                    "{}: every request found",
                    pair[k].0
                );
                pair[k].1 = r.cpu_s;
            }
            ours.push(pair[0].1);
            theirs.push(pair[1].1);
            ratios.push(pair[0].1 / pair[1].1);
        }
        let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let (ours_best, theirs_best) = (best(&ours), best(&theirs));
        let (lo, hi) = (best(&ratios), ratios.iter().copied().fold(0.0, f64::max));
        let ratio = median(&mut ratios);
        println!(
            "pairing's cost, --format {format}, {runs} alternating runs each: this build {ours_best:.3} / {:.3} CPU s (best / median), the baseline {theirs_best:.3} / {:.3}; this / baseline {ratio:.3}x (median of the pairs; {lo:.2}-{hi:.2})",
            median(&mut ours),
            median(&mut theirs),
        );
        match format {
            "summary" => out.summary = ratio,
            _ => out.jsonl = ratio,
        }
    }
    out
}

/// The bare walk: every record read and decoded down to the inner TCP segment. Returns
/// (packets, inner TCP segments, their payload bytes).
fn bare_walk(pcap: &Path) -> (u64, u64, u64) {
    let file = std::fs::File::open(pcap).expect("open pcap");
    let mut reader = CaptureReader::new(file).expect("capture header");
    let (mut packets, mut segments, mut bytes) = (0u64, 0u64, 0u64);
    while let Some(p) = reader.next_packet().expect("capture record") {
        packets += 1;
        let inner = match parse_ethernet(p.frame, true) {
            Ok(Parsed::Tunnel(t)) => match VxlanPacket::parse(t.payload) {
                Ok(v) => parse_ethernet(v.inner, false).ok(),
                Err(_) => None,
            },
            other => other.ok(),
        };
        if let Some(Parsed::Tcp(seg)) = inner {
            segments += 1;
            bytes += seg.payload.len() as u64;
        }
    }
    (packets, segments, bytes)
}

/// How `replay --format jsonl` writes records without `--with-body` / `--decode-bodies`.
const JSONL: RecordOptions = RecordOptions {
    with_body: false,
    decode_bodies: None,
};

/// Length and hash of what `rebuilder replay --format jsonl` writes for `pcap` (read as it
/// comes, not timed).
fn jsonl_output(bin: &str, pcap: &Path) -> (u64, u64) {
    use std::io::Read;
    let mut child = Command::new(bin)
        .args([os("replay"), os("--format"), os("jsonl"), pcap.as_os_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rebuilder replay");
    let mut stdout = child.stdout.take().expect("piped");
    let mut h = Fnv(FNV_OFFSET);
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = stdout.read(&mut buf).expect("replay output");
        if k == 0 {
            break;
        }
        h.write(&buf[..k]);
        n += k as u64;
    }
    assert!(child.wait().expect("replay").success());
    (n, h.0)
}

/// Writes every record `times` times in a row as `replay --format jsonl` writes it, each line
/// to `sink`; returns the CPU time it took.
fn write_records(records: &[HttpRequest], times: usize, mut sink: impl FnMut(&[u8])) -> f64 {
    let sources = SourceMap::empty();
    let mut stats = DecodeStats::default();
    let mut line = Vec::with_capacity(4096);
    let c0 = self_cpu();
    for r in records {
        for _ in 0..times {
            line.clear();
            write_line(&mut line, r, &sources, &JSONL, &mut stats);
            sink(&line);
        }
    }
    self_cpu() - c0
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over a byte stream: the same value however the stream is cut into writes.
struct Fnv(u64);

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

struct Truth {
    /// request id -> fingerprint, for every expected request.
    expected: HashMap<Vec<u8>, u64>,
    packets: u64,
    bytes: u64,
    connections: u64,
}

fn generate(path: &Path, cfg: SynthConfig) -> Truth {
    let file = std::fs::File::create(path).expect("create pcap");
    let mut out = PcapStream::new(std::io::BufWriter::with_capacity(1 << 20, file)).unwrap();
    let mut generator = Generator::new(cfg);
    let mut expected = HashMap::new();
    let mut absorb = |batch: Vec<rebuilder::offline::synth::TruthRequest>| {
        for t in batch {
            assert!(t.expected, "the benchmark mix has no loss");
            expected.insert(request_id(&t.request), fingerprint(&t.request));
        }
    };
    let mut n = 0u64;
    while let Some(frame) = generator.next() {
        out.write(&frame).unwrap();
        n += 1;
        if n.is_multiple_of(65_536) {
            absorb(generator.drain_truth());
        }
    }
    absorb(generator.drain_truth());
    out.finish().unwrap().flush().unwrap();
    let stats = generator.stats().clone();
    Truth {
        expected,
        packets: stats.frames,
        bytes: stats.bytes,
        connections: stats.connections,
    }
}

fn main() {
    if std::env::var("MF_BENCH_MEASURE").is_ok_and(|v| v == "1") {
        measure();
    }
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let connections: usize = env_or("MF_BENCH_CONNECTIONS", 36_000);
    let concurrency: usize = env_or("MF_BENCH_CONCURRENCY", 10_000);
    let seed: u64 = env_or("MF_BENCH_SEED", 1);
    let dir = std::env::temp_dir();
    let pcap: PathBuf = dir.join(format!("mirrorfleet-bench-{}.pcap", std::process::id()));
    struct Cleanup(PathBuf, bool);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if !self.1 {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }
    let _cleanup = Cleanup(
        pcap.clone(),
        std::env::var("MF_BENCH_KEEP").is_ok_and(|v| v == "1"),
    );

    println!("== rebuilder replay benchmark ==");
    let loadavg = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at start: {} (CPU-time figures are disturbed by other load on the machine)",
        loadavg().trim()
    );
    let t0 = Instant::now();
    let truth = generate(
        &pcap,
        SynthConfig::realistic(seed, connections, concurrency),
    );
    let file_size = std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0);
    println!(
        "generated {} packets ({:.1} MiB pcap, {} connections, {} concurrent, {} requests) in {:.1} s: {}",
        truth.packets,
        file_size as f64 / (1024.0 * 1024.0),
        truth.connections,
        concurrency,
        truth.expected.len(),
        t0.elapsed().as_secs_f64(),
        pcap.display()
    );
    let _ = truth.bytes;
    if truth.packets < MIN_PACKETS {
        println!("WARNING: fewer than {MIN_PACKETS} packets; raise MF_BENCH_CONNECTIONS");
    }

    // Correctness, in process, the engine configured as `replay --format jsonl` (without
    // `--with-body`) configures it, but for request bodies, which the check compares (the
    // records' `body_len` is the same either way): its records are kept for the writer's
    // phase.
    let cpu0 = self_cpu();
    let mut seen: HashMap<Vec<u8>, u32> = HashMap::with_capacity(truth.expected.len());
    let mut different = 0u64;
    let mut foreign = 0u64;
    let mut records: Vec<HttpRequest> = Vec::with_capacity(truth.expected.len());
    let outcome = run_capture(
        std::fs::File::open(&pcap).unwrap(),
        EngineConfig {
            keep_response_bodies: false,
            keep_response_heads: true,
            ..EngineConfig::default()
        },
        |r| {
            records.push(r.clone());
            let id = request_id(r);
            match truth.expected.get(&id) {
                Some(fp) if *fp == fingerprint(r) => {}
                Some(_) => different += 1,
                None => foreign += 1,
            }
            *seen.entry(id).or_default() += 1;
            Ok(())
        },
    )
    .unwrap();
    let in_process_cpu = self_cpu() - cpu0;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let recovered = truth
        .expected
        .keys()
        .filter(|k| seen.contains_key(*k))
        .count();
    let duplicates: u64 = seen.values().map(|&c| u64::from(c.saturating_sub(1))).sum();
    let pct = 100.0 * recovered as f64 / truth.expected.len().max(1) as f64;
    println!(
        "correctness: {recovered}/{} requests recovered ({pct:.3} %), {different} different, {duplicates} duplicates, {foreign} not in the truth; flows created {}, evicted {}, drops {}",
        truth.expected.len(),
        outcome.engine.flows_created,
        outcome.engine.flows_evicted,
        outcome.engine.total_drops(),
    );
    for reason in rebuilder::DropReason::ALL {
        let n = outcome.engine.drops(reason);
        if n > 0 {
            println!("  drop {} {}", reason.as_str(), n);
        }
    }
    println!(
        "in-process replay (with the check): {:.3} CPU s = {:.0} packets/CPU-s",
        in_process_cpu,
        truth.packets as f64 / in_process_cpu
    );

    // Speed and memory: the real binary as a child.
    let bin = env!("CARGO_BIN_EXE_rebuilder");
    // Several runs: CPU time on a shared machine only ever gets worse with outside load
    // (cache and memory-bandwidth contention), so the best run is the engine's cost; the
    // median is printed too.
    let runs: usize = env_or("MF_BENCH_RUNS", 3).max(1);
    // `runs` runs of `rebuilder replay --format <format>`: the best one and the median CPU time.
    let replay_runs = |format: &str, discard_stdout: bool| {
        let args = [os("replay"), os("--format"), os(format), pcap.as_os_str()];
        let mut all: Vec<ChildRun> = (0..runs)
            .map(|_| run_child_with(bin, &args, discard_stdout))
            .collect();
        all.sort_by(|a, b| a.cpu_s.total_cmp(&b.cpu_s));
        let median = all[all.len() / 2].cpu_s;
        (all.swap_remove(0), median)
    };
    let (run, median_cpu) = replay_runs("summary", false);
    let packets = summary_value(&run.stderr, "packets");
    let requests = summary_value(&run.stderr, "requests");
    let pps = packets as f64 / run.cpu_s;
    let rps = requests as f64 / run.cpu_s;
    let rss_mib = run.max_rss_kib as f64 / 1024.0;
    println!(
        "rebuilder replay (best of {runs}): {packets} packets, {requests} requests in {:.3} CPU s -> {:.0} packets/CPU-s, {:.0} requests/CPU-s, peak RSS {:.1} MiB; median {:.3} CPU s -> {:.0} packets/CPU-s",
        run.cpu_s,
        pps,
        rps,
        rss_mib,
        median_cpu,
        packets as f64 / median_cpu
    );
    let _ = run.stdout;

    // The issue's measure: every transaction as a JSON line, written to /dev/null.
    let (jsonl, jsonl_median) = replay_runs("jsonl", true);
    assert_eq!(summary_value(&jsonl.stderr, "packets"), packets);
    assert_eq!(summary_value(&jsonl.stderr, "requests"), requests);
    let jsonl_pps = packets as f64 / jsonl.cpu_s;
    println!(
        "rebuilder replay --format jsonl > /dev/null (best of {runs}): {:.3} CPU s -> {:.0} packets/CPU-s, peak RSS {:.1} MiB; median {:.3} CPU s",
        jsonl.cpu_s,
        jsonl_pps,
        jsonl.max_rss_kib as f64 / 1024.0,
        jsonl_median
    );

    // Pairing's cost: this build against one from before responses, if given.
    let pairing = std::env::var_os("MF_BENCH_BASELINE")
        .map(|baseline| pairing_cost(bin, &baseline, &pcap, packets, requests));

    // tshark on the same file.
    let mut tshark_cpu = None;
    if std::env::var("MF_BENCH_SKIP_TSHARK").is_ok_and(|v| v == "1") {
        println!("tshark: skipped (MF_BENCH_SKIP_TSHARK=1)");
    } else if on_path("tshark") {
        let t = run_child(
            "tshark",
            &[
                os("-n"),
                os("-r"),
                pcap.as_os_str(),
                os("-d"),
                os("udp.port==4789,vxlan"),
                os("-d"),
                os("tcp.port==8000,http"),
                os("-o"),
                os("tcp.reassemble_out_of_order:TRUE"),
                os("-Y"),
                os("http.request"),
                os("-T"),
                os("fields"),
                os("-E"),
                os("occurrence=a"),
                os("-E"),
                os("aggregator=,"),
                os("-e"),
                os("http.request.method"),
            ],
        );
        let tshark_requests: usize = t
            .stdout
            .lines()
            .map(|l| l.split(',').filter(|m| !m.is_empty()).count())
            .sum();
        println!(
            "tshark: {tshark_requests} requests in {:.3} CPU s -> {:.0} packets/CPU-s, peak RSS {:.1} MiB",
            t.cpu_s,
            packets as f64 / t.cpu_s,
            t.max_rss_kib as f64 / 1024.0
        );
        tshark_cpu = Some(t.cpu_s);
    } else {
        println!("tshark: not installed");
    }

    let mut suricata_cpu = None;
    if on_path("suricata") {
        let logdir = dir.join(format!("mirrorfleet-bench-suricata-{}", std::process::id()));
        std::fs::create_dir_all(&logdir).unwrap();
        let s = run_child(
            "suricata",
            &[
                os("--runmode"),
                os("single"),
                os("-k"),
                os("none"),
                os("-r"),
                pcap.as_os_str(),
                os("-l"),
                logdir.as_os_str(),
            ],
        );
        let http_events = std::fs::read_to_string(logdir.join("eve.json"))
            .map(|e| {
                e.lines()
                    .filter(|l| l.contains("\"event_type\":\"http\""))
                    .count()
            })
            .unwrap_or(0);
        println!(
            "suricata: {http_events} http events in {:.3} CPU s -> {:.0} packets/CPU-s, peak RSS {:.1} MiB",
            s.cpu_s,
            packets as f64 / s.cpu_s,
            s.max_rss_kib as f64 / 1024.0
        );
        let _ = std::fs::remove_dir_all(&logdir);
        suricata_cpu = Some(s.cpu_s);
    } else {
        println!("suricata: not installed");
    }

    // The floor: the bare walk, in this process, best of the same number of runs.
    let mut walk_cpu = f64::INFINITY;
    let mut walked = (0, 0, 0);
    for _ in 0..runs {
        let c0 = self_cpu();
        walked = std::hint::black_box(bare_walk(&pcap));
        walk_cpu = walk_cpu.min(self_cpu() - c0);
    }
    let (walk_packets, walk_segments, walk_bytes) = walked;
    assert_eq!(walk_packets, truth.packets, "the walk read every packet");
    assert_eq!(
        walk_segments, truth.packets,
        "every packet of the bench mix is a mirrored TCP segment"
    );
    println!(
        "bare walk + decode (best of {runs}): {walk_packets} packets, {walk_segments} TCP segments, {walk_bytes} payload bytes in {walk_cpu:.3} CPU s -> {:.0} packets/CPU-s",
        walk_packets as f64 / walk_cpu
    );
    let walk_ratio = run.cpu_s / walk_cpu;
    let jsonl_walk_ratio = jsonl.cpu_s / walk_cpu;

    // The writer alone: phase 2's records as jsonl, from memory, into a 64 KiB buffer over a
    // sink (as replay writes them, less the write calls). First its output is checked against
    // replay's own, untimed.
    let (replay_len, replay_hash) = jsonl_output(bin, &pcap);
    let (mut check, mut check_len) = (Fnv(FNV_OFFSET), 0u64);
    write_records(&records, 1, |line| {
        check.write(line);
        check_len += line.len() as u64;
    });
    assert_eq!(
        (check_len, check.0),
        (replay_len, replay_hash),
        "the records written from memory are the bytes replay --format jsonl writes"
    );
    assert_eq!(records.len() as u64, requests);
    // Each record written `times` times in a row: the first pass pays the cache misses of
    // reading the record back from memory (replay writes a record as it completes), a second the
    // writing alone; the difference of the two timings is the writer's cost on a hot record.
    let write_all = |times: usize| {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::sink());
        let mut n = 0u64;
        let cpu = write_records(&records, times, |line| {
            out.write_all(line).unwrap();
            n += line.len() as u64;
        });
        out.flush().unwrap();
        std::hint::black_box(&out);
        assert_eq!(
            n,
            times as u64 * replay_len,
            "every pass writes replay's bytes"
        );
        cpu
    };
    let (mut once_cpu, mut twice_cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..runs {
        once_cpu = once_cpu.min(write_all(1));
        twice_cpu = twice_cpu.min(write_all(2));
    }
    let write_cpu = (twice_cpu - once_cpu).max(0.0);
    let writer_floor = 1.0 + write_cpu / walk_cpu;
    println!(
        "jsonl writer alone, records from memory (best of {runs}): {} records, {replay_len} bytes (the length and hash of replay's output) in {once_cpu:.3} CPU s, written twice each {twice_cpu:.3}: on a hot record {write_cpu:.3} CPU s = {:.2}x the walk; so jsonl / walk can't go below {writer_floor:.2}x with this reader and record (nor packets/CPU-s above {:.0}), leaving {:.0} ns per packet for everything else under the 2x target",
        records.len(),
        write_cpu / walk_cpu,
        walk_packets as f64 / (walk_cpu + write_cpu),
        ((TARGET_WALK_RATIO - writer_floor) * walk_cpu / walk_packets as f64 * 1e9).max(0.0)
    );
    drop(records);

    println!("load average at end: {}", loadavg().trim());
    println!("== results ==");
    println!(
        "packets/CPU-s, jsonl  {:>12.0}  target >= {:.0}  {}",
        jsonl_pps,
        TARGET_PPS,
        if jsonl_pps >= TARGET_PPS {
            "OK"
        } else {
            "MISS"
        }
    );
    println!(
        "jsonl / walk          {jsonl_walk_ratio:>12.1}x  target <= {TARGET_WALK_RATIO}x  {}",
        if jsonl_walk_ratio <= TARGET_WALK_RATIO {
            "OK"
        } else {
            "MISS"
        }
    );
    println!("jsonl / walk, floor   {writer_floor:>12.2}x  (the walk + the writer alone)");
    println!("packets/CPU-s, summary {pps:>11.0}");
    println!("summary / walk        {walk_ratio:>12.1}x");
    println!("requests/CPU-s {rps:>12.0}");
    let exact =
        recovered == truth.expected.len() && different == 0 && duplicates == 0 && foreign == 0;
    println!(
        "recovered      {pct:>11.3} %  target 100 %  {}",
        if exact { "OK" } else { "MISS" }
    );
    println!(
        "peak RSS       {rss_mib:>10.1} MiB  target <= {TARGET_RSS_MIB} MiB with {concurrency} concurrent flows  {}",
        if rss_mib <= TARGET_RSS_MIB {
            "OK"
        } else {
            "MISS"
        }
    );
    if let Some(p) = &pairing {
        for (format, ratio) in [("summary", p.summary), ("jsonl", p.jsonl)] {
            println!(
                "pairing, {format:<7} {ratio:>12.3}x  target <= {TARGET_PAIRING_RATIO}x the baseline's CPU  {}",
                if ratio <= TARGET_PAIRING_RATIO {
                    "OK"
                } else {
                    "MISS"
                }
            );
        }
    }
    if let Some(t) = tshark_cpu {
        println!("tshark CPU / rebuilder CPU   {:.1}x", t / run.cpu_s);
    }
    if let Some(s) = suricata_cpu {
        println!("suricata CPU / rebuilder CPU {:.1}x", s / run.cpu_s);
    }
    if !exact {
        eprintln!("FAILED: not every request was recovered exactly once");
        std::process::exit(1);
    }
}
