//! Benchmark: reconcile N ENIs (default 5,000; `MIRRORFLEET_BENCH_ENIS`) in a moto server this
//! binary starts, printing the API calls made per operation (pages, not per-ENI describes) and
//! the wall time of:
//! 1. the first reconcile (every ENI needs a session),
//! 2. a steady-state reconcile (nothing to do),
//! 3. an onboard run scoped to one ENI.
//!
//! The reconcile runs in-process through the same handler and SDK adapter the Lambda binary
//! uses, so the adapter's call counters are readable. moto (a Python server on one core) is
//! much slower per call than EC2; the call counts are the transferable result.
//!
//! Run: `cargo bench -p reconcile-mirrors --bench reconcile_moto` (release), or
//! `cargo test --workspace --bench reconcile_moto` (debug, same numbers of calls).

use std::sync::Arc;
use std::time::Instant;

use mirror::plan::Scope;
use mirror_aws::ec2::{Ec2Api, SdkEc2};
use mirror_aws::handlers::{self, MirrorRun};
use mirror_aws::observe::observe;
use mirror_testkit::{ENI_TAG, Moto, Seed, scratch, tools};

/// One run of `run` over `scope`, and its wall time in seconds.
async fn timed_run(
    ec2: &SdkEc2,
    run: &MirrorRun,
    scope: &Scope,
    what: &str,
) -> (mirror::report::Report, f64) {
    let t = Instant::now();
    let report = handlers::run_mirror(ec2, &handlers::NoStore, run, scope, handlers::now_unix())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    (report, t.elapsed().as_secs_f64())
}

fn print_calls(label: &str, ec2: &SdkEc2, before: &[(&'static str, u64)], secs: f64) {
    let after = ec2.calls().snapshot();
    let mut total = 0;
    let mut parts = Vec::new();
    for ((op, a), (_, b)) in after.iter().zip(before) {
        let n = a - b;
        total += n;
        if n > 0 {
            parts.push(format!("{op}={n}"));
        }
    }
    println!(
        "{label}: {secs:.2} s wall, {total} API calls ({})",
        parts.join(", ")
    );
}

fn main() {
    // `cargo test --benches` passes libtest flags; a bench with harness = false ignores them.
    let n: usize = std::env::var("MIRRORFLEET_BENCH_ENIS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let Some(tools) = tools() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(tools, n));
}

async fn bench(tools: mirror_testkit::Tools, n: usize) {
    let scratch = scratch("bench");
    let moto = Moto::start(&tools, &scratch);
    let seed = Arc::new(Seed::create(&moto).await);

    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut enis = Vec::with_capacity(n);
    for i in 0..n {
        if set.len() >= 8
            && let Some(id) = set.join_next().await
        {
            enis.push(id.expect("seed task"));
        }
        let seed = Arc::clone(&seed);
        set.spawn(async move { seed.eni(i, &[ENI_TAG]).await });
    }
    while let Some(id) = set.join_next().await {
        enis.push(id.expect("seed task"));
    }
    println!(
        "seeded {n} tagged ENIs in moto in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let settings = seed.mirror_settings(&[]);
    let ec2 = SdkEc2::new(moto.ec2());
    let reconcile = MirrorRun::new("reconcile-mirrors", settings.clone());

    let before = ec2.calls().snapshot();
    let (report, secs) = timed_run(&ec2, &reconcile, &Scope::All, "first reconcile").await;
    assert_eq!(report.created.count, n, "every ENI got its session");
    assert_eq!(report.errors.count, 0);
    print_calls(
        &format!("reconcile #1 ({n} ENIs, {n} creates)"),
        &ec2,
        &before,
        secs,
    );

    let before = ec2.calls().snapshot();
    let (report, secs) = timed_run(&ec2, &reconcile, &Scope::All, "steady-state reconcile").await;
    assert_eq!(report.unchanged.count, n);
    assert_eq!(
        report.created.count + report.deleted.count + report.modified.count,
        0
    );
    print_calls(
        &format!("reconcile #2 ({n} ENIs, steady state)"),
        &ec2,
        &before,
        secs,
    );

    // Where the time of a steady-state run goes.
    let s = &reconcile.settings;
    let t = Instant::now();
    let targets = ec2.describe_targets().await.expect("targets").len();
    let t_targets = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let seen = ec2
        .describe_network_interfaces(s.selector.eni_filters.filters().to_vec())
        .await
        .expect("ENIs")
        .len();
    let t_enis = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let sessions = ec2
        .describe_sessions(Vec::new())
        .await
        .expect("sessions")
        .len();
    let t_sessions = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let observed = observe(
        &ec2,
        &Scope::All,
        &s.selector,
        &s.spec,
        handlers::now_unix(),
    )
    .await
    .expect("observe");
    let t_observe = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let plan = mirror::plan::reconcile(&Scope::All, &s.selector, &observed, &s.spec);
    let t_plan = t.elapsed().as_secs_f64();
    assert!(plan.is_noop());
    println!(
        "steady state breakdown: DescribeTrafficMirrorTargets {t_targets:.2} s ({targets}), \
         DescribeNetworkInterfaces {t_enis:.2} s ({seen}), DescribeTrafficMirrorSessions \
         {t_sessions:.2} s ({sessions}); whole observe {t_observe:.2} s; plan {t_plan:.3} s"
    );

    let onboard = MirrorRun::new("onboard-eni", settings);
    let before = ec2.calls().snapshot();
    let (report, secs) = timed_run(
        &ec2,
        &onboard,
        &Scope::enis([enis[0].clone()]),
        "onboard run",
    )
    .await;
    assert_eq!(report.unchanged.count, 1);
    print_calls("onboard (1 ENI in scope)", &ec2, &before, secs);
}
