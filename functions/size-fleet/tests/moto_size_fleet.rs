//! size-fleet as a binary behind the Lambda Runtime API (`cargo lambda watch`), invoked with
//! `events/scheduled.json`; the rebuilder group's desired capacity is checked in moto, and the
//! fleet's traffic is metric data the test puts into moto's CloudWatch.

use std::path::Path;

use mirror_testkit::{Harness, OWNER, Seed, group_state, sample_event};

const BIN: &str = env!("CARGO_BIN_EXE_size-fleet");
const GROUP: &str = "mirrorfleet-rebuilders";
const HISTORY_TAG: &str = "mirrorfleet:scale-in-history";

/// `n` sessions to our target (the fleet's load), each on its own ENI.
async fn add_sessions(seed: &Seed, n: usize) {
    for i in 0..n {
        let eni = seed.eni(i, &[]).await;
        seed.foreign_session(&eni, 1, Some(OWNER)).await;
    }
}

fn env(seed: &Seed, min: u32, max: u32, per: u32, after: u32) -> Vec<(String, String)> {
    [
        ("FLEET_ASG_NAME", GROUP.to_owned()),
        ("MIRROR_TARGET_ID", seed.target_id.clone()),
        ("FLEET_MIN", min.to_string()),
        ("FLEET_MAX", max.to_string()),
        ("FLEET_SESSIONS_PER_INSTANCE", per.to_string()),
        ("FLEET_SCALE_IN_AFTER", after.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_size_fleet_follows_the_session_count_within_min_and_max() {
    let Some(h) = Harness::start("size-fleet") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let asg = h.moto.autoscaling();
    // The group itself allows up to 20: FLEET_MAX=4 must be what bounds it.
    seed.fleet_group(&asg, GROUP, 0, 20, 1).await;
    let f = h.function(Path::new(BIN), &env(&seed, 1, 4, 10, 2));
    let scheduled = sample_event("scheduled.json");

    // 25 sessions at 10 per instance: 3 instances, at once.
    add_sessions(&seed, 25).await;
    let r = h.invoke(&f, &scheduled).await.unwrap();
    assert_eq!(r["sessions"], 25, "{r}");
    assert_eq!(r["applied"], true, "{r}");
    assert_eq!(group_state(&asg, GROUP).await.0, 3);

    // 75 sessions would need 8: FLEET_MAX caps at 4.
    add_sessions(&seed, 50).await;
    let r = h.invoke(&f, &scheduled).await.unwrap();
    assert_eq!(r["decision"]["desired"], 4, "{r}");
    assert_eq!(group_state(&asg, GROUP).await.0, 4);

    // Unchanged load: no SetDesiredCapacity.
    let r = h.invoke(&f, &scheduled).await.unwrap();
    assert_eq!(r["applied"], false, "{r}");
    assert_eq!(group_state(&asg, GROUP).await.0, 4);

    // All sessions gone: scale in only after 2 consecutive lower readings, down to FLEET_MIN.
    let all = seed.all_sessions().await;
    assert_eq!(all.len(), 75);
    for s in &all {
        seed.ec2
            .delete_traffic_mirror_session()
            .traffic_mirror_session_id(s.traffic_mirror_session_id().unwrap())
            .send()
            .await
            .expect("delete session");
    }
    let r = h.invoke(&f, &scheduled).await.unwrap();
    assert_eq!(r["sessions"], 0, "{r}");
    let (desired, tags) = group_state(&asg, GROUP).await;
    assert_eq!(desired, 4, "first lower reading keeps the size");
    assert!(
        tags.iter().any(|(k, v)| k == HISTORY_TAG && v == "1:1"),
        "hysteresis kept on the group: {tags:?}"
    );
    h.invoke(&f, &scheduled).await.unwrap();
    assert_eq!(group_state(&asg, GROUP).await.0, 1, "FLEET_MIN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_size_fleet_names_a_missing_group() {
    let Some(h) = Harness::start("size-fleet-missing") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let f = h.function(Path::new(BIN), &env(&seed, 1, 4, 10, 2));
    let err = h
        .invoke(&f, &sample_event("scheduled.json"))
        .await
        .unwrap_err();
    assert!(err.contains(GROUP), "{err}");
}

/// size-fleet reading the fleet's traffic from `namespace` (1,000 datagrams/s per rebuilder).
fn traffic_env(seed: &Seed, namespace: &str) -> Vec<(String, String)> {
    let mut e = env(seed, 1, 8, 10, 2);
    e.push(("FLEET_METRICS_NAMESPACE".into(), namespace.into()));
    e.push((
        "FLEET_DATAGRAMS_PER_SECOND_PER_INSTANCE".into(),
        "1000".into(),
    ));
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_size_fleet_follows_the_fleets_traffic_in_cloudwatch() {
    let Some(h) = Harness::start("size-fleet-traffic") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let asg = h.moto.autoscaling();
    let cw = h.moto.cloudwatch();
    seed.fleet_group(&asg, GROUP, 0, 20, 1).await;
    // 5 sessions at 10 per rebuilder: a floor of 1.
    add_sessions(&seed, 5).await;
    let busy = "mirrorfleet/busy";
    let f = h.function(Path::new(BIN), &traffic_env(&seed, busy));
    let scheduled = sample_event("scheduled.json");

    // A new fleet: no metric data yet. The sessions decide, and the report says so.
    let r = h.invoke(&f, &scheduled).await.unwrap();
    assert_eq!(r["traffic_source"], "no_data", "{r}");
    assert_eq!(r["decision"]["desired"], 1, "{r}");

    // 330,000 datagrams in a minute = 5,500/s: 6 rebuilders, at once.
    seed.put_fleet_metric(&cw, busy, GROUP, "DatagramsReceived", 2, 330_000.0)
        .await;
    let r = h.invoke(&f, &scheduled).await.unwrap();
    assert_eq!(r["traffic_source"], "cloudwatch", "{r}");
    assert_eq!(r["decision"]["sizing"]["by_traffic"], 6, "{r}");
    assert_eq!(group_state(&asg, GROUP).await.0, 6);

    // The kernel drops datagrams: one more.
    seed.put_fleet_metric(&cw, busy, GROUP, "KernelDrops", 1, 50.0)
        .await;
    let r = h.invoke(&f, &scheduled).await.unwrap();
    assert_eq!(r["decision"]["sizing"]["drops_add_one"], true, "{r}");
    assert_eq!(group_state(&asg, GROUP).await.0, 7);

    // The traffic falls to 1,500/s: scale in only after FLEET_SCALE_IN_AFTER=2 lower readings,
    // to 2. (moto's GetMetricData adds up the data of every namespace, and data cannot be taken
    // back, so the later minutes are a fresh moto whose group has the size reached above.)
    drop((f, h));
    let Some(h) = Harness::start("size-fleet-traffic-quiet") else {
        return;
    };
    let seed = Seed::create(&h.moto).await;
    let asg = h.moto.autoscaling();
    let cw = h.moto.cloudwatch();
    seed.fleet_group(&asg, GROUP, 0, 20, 7).await;
    add_sessions(&seed, 5).await;
    let quiet = "mirrorfleet/quiet";
    seed.put_fleet_metric(&cw, quiet, GROUP, "DatagramsReceived", 2, 90_000.0)
        .await;
    seed.put_fleet_metric(&cw, quiet, GROUP, "KernelDrops", 1, 0.0)
        .await;
    let f = h.function(Path::new(BIN), &traffic_env(&seed, quiet));
    let r = h.invoke(&f, &scheduled).await.unwrap();
    assert_eq!(r["decision"]["target"], 2, "{r}");
    assert_eq!(
        group_state(&asg, GROUP).await.0,
        7,
        "the first lower reading keeps the size"
    );
    h.invoke(&f, &scheduled).await.unwrap();
    assert_eq!(group_state(&asg, GROUP).await.0, 2);
}
