//! The size-fleet handler against the test kit's in-memory EC2 (the sessions), Auto Scaling
//! group (which, like AWS, refuses a size outside its own min/max) and CloudWatch traffic.

use mirror::capacity::{CapacityPolicy, SCALE_IN_HISTORY_TAG, Traffic};
use mirror::report::{CapacityReport, TrafficSource};
use mirror::settings::FleetSettings;
use mirror_aws::error::{AwsError, HandlerError};
use mirror_aws::handlers;
use mirror_testkit::settings::TARGET;
use mirror_testkit::{Ec2World, FakeFleet, FakeMetrics, OWNER, sample_event};

const GROUP: &str = "rebuilders";
/// Datagrams per second one rebuilder is sized for in these tests.
const PER_INSTANCE: u64 = 1_000;

fn settings(min: u32, max: u32, per: u32, after: u32) -> FleetSettings {
    FleetSettings {
        asg_name: GROUP.into(),
        target_id: TARGET.into(),
        policy: CapacityPolicy {
            min,
            max,
            sessions_per_instance: per,
            scale_in_after: after,
            datagrams_per_second_per_instance: PER_INSTANCE,
        },
        metrics_namespace: Some("mirrorfleet/test".into()),
        dry_run: false,
    }
}

/// Traffic of `per_second` datagrams a second in the busiest minute and `drops` kernel drops.
fn traffic(per_second: u64, drops: u64) -> Traffic {
    Traffic {
        datagrams_per_minute: Some(per_second * 60),
        kernel_drops: Some(drops),
    }
}

/// `n` sessions sending to our target, each on its own ENI.
fn with_sessions(n: u32) -> Ec2World {
    let w = Ec2World::default();
    for i in 0..n {
        let eni = format!("eni-{i}");
        w.add_eni(&eni, None, &[]);
        w.add_session(&eni, 1, Some(OWNER));
    }
    w
}

async fn size(
    w: &Ec2World,
    fleet: &FakeFleet,
    s: &FleetSettings,
) -> Result<CapacityReport, HandlerError> {
    size_with(w, fleet, &FakeMetrics::default(), s).await
}

async fn size_with(
    w: &Ec2World,
    fleet: &FakeFleet,
    metrics: &FakeMetrics,
    s: &FleetSettings,
) -> Result<CapacityReport, HandlerError> {
    let ec2 = w.client("size-fleet");
    handlers::size_fleet(
        &ec2,
        fleet,
        metrics,
        s,
        "size-fleet",
        sample_event("scheduled.json"),
    )
    .await
}

#[tokio::test]
async fn size_fleet_scales_out_at_once_from_the_session_count() {
    let fleet = FakeFleet::with(GROUP, 1, 10, 1);
    let report = size(&with_sessions(25), &fleet, &settings(1, 10, 10, 3))
        .await
        .unwrap();
    assert_eq!(report.sessions, 25);
    assert!(report.applied);
    assert_eq!(fleet.desired(), 3);
}

#[tokio::test]
async fn size_fleet_respects_max_and_does_not_call_when_unchanged() {
    let w = with_sessions(100);
    let fleet = FakeFleet::with(GROUP, 1, 10, 1);
    let s = settings(1, 4, 10, 3);
    size(&w, &fleet, &s).await.unwrap();
    assert_eq!(fleet.desired(), 4);
    size(&w, &fleet, &s).await.unwrap();
    assert_eq!(fleet.set_calls(), 1, "only when different");
}

#[tokio::test]
async fn size_fleet_never_asks_beyond_the_groups_own_bounds() {
    let fleet = FakeFleet::with(GROUP, 2, 10, 5);
    let report = size(&with_sessions(0), &fleet, &settings(0, 10, 10, 1))
        .await
        .unwrap();
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(fleet.desired(), 2, "the group's min wins over FLEET_MIN=0");
}

#[tokio::test]
async fn size_fleet_scales_in_only_after_consecutive_lower_readings_kept_on_the_group() {
    let w = with_sessions(5);
    let fleet = FakeFleet::with(GROUP, 1, 10, 4);
    let s = settings(1, 10, 10, 3);
    for reading in 1..=2 {
        size(&w, &fleet, &s).await.unwrap();
        assert_eq!(fleet.desired(), 4, "reading {reading} keeps the size");
        assert!(fleet.group().tags.contains_key(SCALE_IN_HISTORY_TAG));
    }
    size(&w, &fleet, &s).await.unwrap();
    assert_eq!(fleet.desired(), 1);
}

#[tokio::test]
async fn size_fleet_dry_run_changes_nothing() {
    let fleet = FakeFleet::with(GROUP, 1, 10, 1);
    let mut s = settings(1, 10, 10, 3);
    s.dry_run = true;
    let report = size(&with_sessions(30), &fleet, &s).await.unwrap();
    assert_eq!(report.decision.desired, 3);
    assert!(!report.applied);
    assert_eq!(fleet.desired(), 1);
    assert!(fleet.group().tags.is_empty());
}

#[tokio::test]
async fn size_fleet_names_a_missing_group() {
    let err = size(
        &with_sessions(1),
        &FakeFleet::default(),
        &settings(1, 2, 1, 1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HandlerError::GroupNotFound(_)), "{err}");
    assert!(err.to_string().contains(GROUP), "{err}");
}

#[tokio::test]
async fn size_fleet_counts_only_the_sessions_sending_to_its_target() {
    let w = with_sessions(4);
    w.with(|o| o.sessions[0].target_id = "tmt-other".into());
    let fleet = FakeFleet::with(GROUP, 1, 10, 1);
    let report = size(&w, &fleet, &settings(1, 10, 1, 1)).await.unwrap();
    assert_eq!(report.sessions, 3);
    assert_eq!(fleet.desired(), 3);
}

#[tokio::test]
async fn scaling_out_does_not_wait_for_the_cooldown_and_scaling_in_does() {
    let w = with_sessions(25);
    let fleet = FakeFleet::with(GROUP, 1, 10, 1);
    let s = settings(1, 10, 10, 1);
    size(&w, &fleet, &s).await.unwrap();
    w.with(|o| o.sessions.truncate(5));
    size(&w, &fleet, &s).await.unwrap();
    assert_eq!(fleet.desired(), 1);
    assert_eq!(fleet.cooldowns(), vec![false, true]);
}

#[tokio::test]
async fn a_refused_scale_in_keeps_the_history_so_the_next_run_scales_in_at_once() {
    let w = with_sessions(5);
    let fleet = FakeFleet::with(GROUP, 1, 10, 4);
    let s = settings(1, 10, 10, 3);
    size(&w, &fleet, &s).await.unwrap();
    size(&w, &fleet, &s).await.unwrap();
    let streak = fleet.group().tags[SCALE_IN_HISTORY_TAG].clone();
    assert_eq!(streak, "2:1");
    // The third lower reading decides the scale-in; the group is busy.
    fleet.refuse_next("ScalingActivityInProgress");
    let r = size(&w, &fleet, &s).await.unwrap();
    assert!(!r.applied);
    assert_eq!(fleet.desired(), 4);
    assert_eq!(
        fleet.group().tags[SCALE_IN_HISTORY_TAG],
        streak,
        "the history only changes with the capacity"
    );
    // Next run: the streak is still there, so it scales in now.
    size(&w, &fleet, &s).await.unwrap();
    assert_eq!(fleet.desired(), 1);
    assert_eq!(fleet.group().tags[SCALE_IN_HISTORY_TAG], "0:0");
}

#[tokio::test]
async fn the_fleet_follows_its_traffic_above_the_session_floor() {
    let w = with_sessions(5);
    let fleet = FakeFleet::with(GROUP, 1, 10, 1);
    let metrics = FakeMetrics::default();
    metrics.set(traffic(4_500, 0));
    let r = size_with(&w, &fleet, &metrics, &settings(1, 10, 10, 1))
        .await
        .unwrap();
    assert_eq!(r.traffic_source, TrafficSource::Cloudwatch);
    assert_eq!(r.decision.sizing.by_traffic, Some(5));
    assert_eq!(r.decision.sizing.session_floor, 1);
    assert_eq!(fleet.desired(), 5);
    assert_eq!(metrics.calls(), 1, "one GetMetricData per run");
}

#[tokio::test]
async fn kernel_drops_add_one_rebuilder() {
    let w = with_sessions(0);
    let fleet = FakeFleet::with(GROUP, 1, 10, 3);
    let metrics = FakeMetrics::default();
    metrics.set(traffic(2_500, 17));
    let r = size_with(&w, &fleet, &metrics, &settings(1, 10, 10, 1))
        .await
        .unwrap();
    assert!(r.decision.sizing.drops_add_one);
    assert_eq!(fleet.desired(), 4);
}

#[tokio::test]
async fn without_metric_data_or_with_a_failing_call_the_sessions_size_the_fleet_and_the_report_says_so()
 {
    let w = with_sessions(25);
    let s = settings(1, 10, 10, 1);
    let fleet = FakeFleet::with(GROUP, 1, 10, 1);
    let r = size_with(&w, &fleet, &FakeMetrics::default(), &s)
        .await
        .unwrap();
    assert_eq!(r.traffic_source, TrafficSource::NoData);
    assert_eq!(fleet.desired(), 3);
    let metrics = FakeMetrics::default();
    metrics.fail_with(AwsError::classify("GetMetricData", "AccessDenied", "no"));
    let fleet = FakeFleet::with(GROUP, 1, 10, 1);
    let r = size_with(&w, &fleet, &metrics, &s).await.unwrap();
    assert_eq!(r.traffic_source, TrafficSource::Failed);
    assert!(r.traffic_error.unwrap().contains("AccessDenied"));
    assert_eq!(fleet.desired(), 3);
    let mut unset = s.clone();
    unset.metrics_namespace = None;
    let metrics = FakeMetrics::default();
    let r = size_with(&w, &FakeFleet::with(GROUP, 1, 10, 1), &metrics, &unset)
        .await
        .unwrap();
    assert_eq!(
        (r.traffic_source, metrics.calls()),
        (TrafficSource::NotConfigured, 0)
    );
}
