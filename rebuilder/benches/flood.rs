//! Full-size floods through the engine, each in a child process whose peak RSS (VmHWM) is
//! measured: 100,000+ concurrent attacker connections, a SYN flood, random garbage and
//! maximum-size datagrams, each mixed with generated legitimate traffic (3,000 connections).
//! Default engine caps (100,000 flow directions, 32 MiB budget). Prints one row per flood with
//! evictions, drops, the legitimate requests recovered, and RSS vs. the configured ceiling
//! (memory budget + flow table at its cap + the process's baseline + the harness's own peak,
//! measured in a child that only generates the same traffic). Exit 1 when a cap or the
//! ceiling is exceeded, or a legitimate request is altered.
//!
//! `cargo bench -p rebuilder --bench flood`; knobs: MF_FLOOD (comma list of flows,syn,garbage,
//! jumbo), MF_FLOOD_SCALE (multiplies the attacker packet counts, default 1),
//! MF_FLOOD_RECLAIM_IDLE_US (the engine's `reclaim_idle_us`; `off` turns reclaiming off).
//! The evicted column counts flow directions evicted at the flow cap / reclaimed from the
//! memory budget.

use rebuilder::EngineConfig;
use rebuilder_testkit::flood::{Flood, Plan, ceiling_kib, generate_only, run, status_kib};

fn plan(flood: Flood, scale: f64) -> Plan {
    let n = |x: f64| (x * scale) as usize;
    Plan {
        flood,
        flood_packets: match flood {
            // 150,000 connections (two packets each): the 100,000-direction table overflows.
            Flood::Flows => n(300_000.0),
            Flood::Syn => n(1_000_000.0),
            Flood::Garbage => n(1_000_000.0),
            Flood::Jumbo => n(100_000.0),
            // 40,000 connections each holding a pending request (two packets each).
            Flood::Heads | Flood::Bodies => n(80_000.0),
            Flood::Fields => n(20_000.0),
            Flood::Pieces => n(640_000.0),
        },
        legit_connections: 3_000,
        legit_concurrency: 300,
        // Peak RSS: the harness's own memory kept small (see `Plan::legit_response_bodies`).
        legit_response_bodies: false,
        config: EngineConfig {
            reclaim_idle_us: reclaim_idle_us(),
            ..EngineConfig::default()
        },
        seed: 2026,
    }
}

/// `MF_FLOOD_RECLAIM_IDLE_US`: a number of µs, `off`, or the default.
fn reclaim_idle_us() -> u64 {
    match std::env::var("MF_FLOOD_RECLAIM_IDLE_US").as_deref() {
        Ok("off") => u64::MAX,
        Ok(v) => v.parse().expect("MF_FLOOD_RECLAIM_IDLE_US: µs or off"),
        Err(_) => EngineConfig::default().reclaim_idle_us,
    }
}

/// The harness's own peak for `flood` (its generators, no engine), KiB over its baseline: a
/// child of its own.
fn harness_kib(exe: &std::path::Path, flood: Flood) -> u64 {
    let out = std::process::Command::new(exe)
        .env("MF_FLOOD_CHILD", flood.as_str())
        .env("MF_FLOOD_GENERATE_ONLY", "1")
        .output()
        .expect("child runs");
    assert!(out.status.success(), "the generate-only child failed");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the generate-only child prints KiB")
}

fn child(flood: Flood, scale: f64) -> i32 {
    let plan = plan(flood, scale);
    let baseline = status_kib("VmRSS:");
    if std::env::var("MF_FLOOD_GENERATE_ONLY").is_ok() {
        generate_only(&plan);
        println!("{}", status_kib("VmHWM:").saturating_sub(baseline));
        return 0;
    }
    let harness: u64 = std::env::var("MF_FLOOD_HARNESS_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let o = run(&plan, |_| {});
    let hwm = status_kib("VmHWM:");
    // What the caps promise (budget, flow table at its cap) over the process's baseline, plus
    // what the harness itself holds: its generators (measured without the engine) and the
    // legitimate requests it keeps to match (those the flood made the engine drop stay).
    let harness = harness + o.max_harness_held_bytes as u64 / 1024;
    let ceiling_kib = ceiling_kib(baseline, &plan) + harness;
    println!(
        "| {} | {} | {:.1} s | {} | {} / {} | {} / {} ({:.2} %) + {} truncated, {} altered, {} foreign | {:.1} MiB (ceiling {:.1}, of which harness {:.1}) | {} |",
        flood.as_str(),
        o.flood_packets,
        o.seconds,
        o.max_active_flows,
        o.stats.flows_evicted,
        o.stats.flows_reclaimed,
        o.legit_recovered,
        o.legit_expected,
        o.recovered_fraction() * 100.0,
        o.legit_truncated,
        o.legit_corrupted,
        o.foreign,
        hwm as f64 / 1024.0,
        ceiling_kib as f64 / 1024.0,
        harness as f64 / 1024.0,
        o.drops_line(),
    );
    if hwm > ceiling_kib || o.legit_corrupted > 0 || o.foreign > 0 {
        eprintln!("flood {}: FAILED", flood.as_str());
        return 1;
    }
    0
}

fn main() {
    let scale: f64 = std::env::var("MF_FLOOD_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    if let Ok(name) = std::env::var("MF_FLOOD_CHILD") {
        let flood = Flood::from_label(&name).expect("known flood");
        std::process::exit(child(flood, scale));
    }
    let floods: Vec<Flood> = std::env::var("MF_FLOOD")
        .ok()
        .map(|v| v.split(',').filter_map(Flood::from_label).collect())
        .unwrap_or_else(|| Flood::ALL.to_vec());
    println!(
        "| flood | attacker packets | time | max flows | evicted / reclaimed | legitimate requests recovered | peak RSS | drops |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().unwrap();
    let mut failed = false;
    for f in floods {
        let harness = harness_kib(&exe, f);
        let st = std::process::Command::new(&exe)
            .env("MF_FLOOD_CHILD", f.as_str())
            .env("MF_FLOOD_HARNESS_KIB", harness.to_string())
            .status()
            .expect("child runs");
        failed |= !st.success();
    }
    if failed {
        std::process::exit(1);
    }
}
