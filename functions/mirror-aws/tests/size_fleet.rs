//! The size-fleet handler against the test kit's in-memory EC2 (the sessions) and Auto Scaling
//! group (which, like AWS, refuses a size outside its own min/max).

use mirror::capacity::{CapacityPolicy, SCALE_IN_HISTORY_TAG};
use mirror::report::CapacityReport;
use mirror::settings::FleetSettings;
use mirror_aws::error::HandlerError;
use mirror_aws::handlers;
use mirror_testkit::settings::TARGET;
use mirror_testkit::{Ec2World, FakeFleet, OWNER, sample_event};

const GROUP: &str = "rebuilders";

fn settings(min: u32, max: u32, per: u32, after: u32) -> FleetSettings {
    FleetSettings {
        asg_name: GROUP.into(),
        target_id: TARGET.into(),
        policy: CapacityPolicy {
            min,
            max,
            sessions_per_instance: per,
            scale_in_after: after,
        },
        dry_run: false,
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
    let ec2 = w.client("size-fleet");
    handlers::size_fleet(&ec2, fleet, s, "size-fleet", sample_event("scheduled.json")).await
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
