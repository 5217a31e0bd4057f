//! The onboard and reconcile handlers against the test kit's in-memory EC2, which enforces
//! the AWS rules moto does not (3 sessions per ENI, unique numbers per ENI, the ENI must exist,
//! ClientToken idempotency) and can be told to fail a given ENI with a given error.

use mirror::model::MirrorTarget;
use mirror::report::{ErrorClass, Report};
use mirror::selection::SkipReason;
use mirror_aws::error::{AwsError, HandlerError};
use mirror_aws::handlers::{self, MirrorRun};
use mirror_testkit::settings::{FILTER, TARGET, settings};
use mirror_testkit::{Ec2World, FakeEc2, eni_event, instance_event, sample_event};
use serde_json::Value;

const TAGGED: (&str, &str) = mirror_testkit::ENI_TAG;
const TAGGED_INSTANCE: (&str, &str) = mirror_testkit::INSTANCE_TAG;

fn run(function: &'static str, extra: &[(&str, &str)]) -> MirrorRun {
    MirrorRun::new(function, settings(extra))
}

/// A world of ENIs carrying the ENI tag, and a client of it.
fn tagged(ids: &[&str]) -> (Ec2World, FakeEc2) {
    let w = Ec2World::default();
    for id in ids {
        w.add_eni(id, None, &[TAGGED]);
    }
    let ec2 = w.client("test");
    (w, ec2)
}

async fn onboard(ec2: &FakeEc2, event: Value) -> Result<Report, HandlerError> {
    handlers::onboard(ec2, &run("onboard-eni", &[]), event).await
}

async fn reconcile(ec2: &FakeEc2, extra: &[(&str, &str)]) -> Result<Report, HandlerError> {
    let r = run("reconcile-mirrors", extra);
    handlers::reconcile(ec2, &r, sample_event("scheduled.json")).await
}

#[tokio::test]
async fn onboard_gives_a_tagged_eni_exactly_one_owned_session() {
    let (w, ec2) = tagged(&["eni-a"]);
    let report = onboard(&ec2, eni_event("eni-a")).await.unwrap();
    assert_eq!(report.created.count, 1);
    let owned = w.owned_on("eni-a");
    assert_eq!(owned.len(), 1);
    let s = &owned[0];
    assert_eq!((s.number, s.vni, s.packet_length), (1, Some(4242), None));
    assert_eq!(
        (s.target_id.as_str(), s.filter_id.as_str()),
        (TARGET, FILTER)
    );
}

#[tokio::test]
async fn the_same_event_ten_times_still_gives_one_session() {
    let (w, ec2) = tagged(&["eni-a"]);
    for _ in 0..10 {
        onboard(&ec2, eni_event("eni-a")).await.unwrap();
    }
    assert_eq!(w.sessions_on("eni-a").len(), 1);
    assert_eq!(w.writes().len(), 1, "observe before create");
}

#[tokio::test]
async fn an_instance_event_covers_every_eni_of_that_instance_and_nothing_else() {
    let (w, ec2) = tagged(&["eni-other"]);
    w.add_instance("i-1", &[TAGGED_INSTANCE]);
    w.add_eni("eni-a", Some("i-1"), &[]);
    w.add_eni("eni-b", Some("i-1"), &[]);
    let report = onboard(&ec2, instance_event("i-1")).await.unwrap();
    assert_eq!(report.created.count, 2);
    assert_eq!(w.sessions_on("eni-a").len(), 1);
    assert_eq!(w.sessions_on("eni-b").len(), 1);
    assert!(
        w.sessions_on("eni-other").is_empty(),
        "outside the event's scope"
    );
}

#[tokio::test]
async fn an_untagged_eni_in_an_event_is_skipped_with_a_reason() {
    let w = Ec2World::default();
    w.add_eni("eni-a", None, &[]);
    let report = onboard(&w.client("test"), eni_event("eni-a"))
        .await
        .unwrap();
    assert_eq!(report.created.count, 0);
    assert_eq!(
        report.skipped_by_reason.get(&SkipReason::NotSelected),
        Some(&1)
    );
}

#[tokio::test]
async fn the_lowest_free_number_is_used_next_to_someone_elses_session() {
    let (w, ec2) = tagged(&["eni-a"]);
    w.add_session("eni-a", 1, None);
    onboard(&ec2, eni_event("eni-a")).await.unwrap();
    assert_eq!(w.sessions_on("eni-a").len(), 2);
    assert_eq!(w.owned_on("eni-a")[0].number, 2);
}

#[tokio::test]
async fn an_eni_with_three_foreign_sessions_is_skipped_not_failed() {
    let (w, ec2) = tagged(&["eni-a"]);
    for n in 1..=3 {
        w.add_session("eni-a", n, Some("someone-else"));
    }
    let report = onboard(&ec2, eni_event("eni-a")).await.unwrap();
    assert_eq!(report.errors.count, 0);
    assert_eq!(
        report.skipped_by_reason.get(&SkipReason::SessionLimit),
        Some(&1)
    );
    assert!(w.writes().is_empty());
}

#[tokio::test]
async fn reconcile_deletes_our_session_once_the_tag_is_removed_and_leaves_others_alone() {
    let (w, ec2) = tagged(&["eni-a"]);
    w.add_eni("eni-b", None, &[]);
    let foreign = w.add_session("eni-b", 1, None);
    reconcile(&ec2, &[]).await.unwrap();
    assert_eq!(w.owned_on("eni-a").len(), 1);

    w.set_eni_tags("eni-a", &[]);
    let report = reconcile(&ec2, &[]).await.unwrap();
    assert_eq!(report.deleted.count, 1);
    assert!(w.sessions_on("eni-a").is_empty());
    let b = w.sessions_on("eni-b");
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].id.as_str(), b[0].vni), (foreign.as_str(), Some(99)));
}

#[tokio::test]
async fn reconcile_brings_a_drifted_vni_and_packet_length_back() {
    let (w, ec2) = tagged(&["eni-a"]);
    let id = w.add_session("eni-a", 1, Some(mirror_testkit::OWNER));
    w.with(|o| o.sessions[0].packet_length = Some(100));
    let report = reconcile(&ec2, &[]).await.unwrap();
    assert_eq!(report.modified.count, 1);
    assert_eq!(report.modified.items[0].fields, ["vni", "packet_length"]);
    let s = &w.sessions_on("eni-a")[0];
    assert_eq!(
        (s.id.as_str(), s.vni, s.packet_length),
        (id.as_str(), Some(4242), None)
    );
}

#[tokio::test]
async fn dry_run_reports_the_plan_and_changes_nothing() {
    let (w, ec2) = tagged(&["eni-a"]);
    let report = reconcile(&ec2, &[("DRY_RUN", "true")]).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(report.created.count, 1);
    assert!(w.writes().is_empty());
    assert!(w.sessions_on("eni-a").is_empty());
}

#[tokio::test]
async fn a_create_refused_for_one_eni_is_reported_with_its_class_and_the_others_go_on() {
    for (code, class) in [
        (
            "NetworkInterfaceNotSupported",
            ErrorClass::UnsupportedSource,
        ),
        (
            "TrafficMirrorSessionsPerInterfaceLimitExceeded",
            ErrorClass::SessionLimit,
        ),
        ("InvalidNetworkInterfaceID.NotFound", ErrorClass::EniGone),
    ] {
        let (w, ec2) = tagged(&["eni-a", "eni-b", "eni-c"]);
        w.fail_create("eni-b", code);
        let report = reconcile(&ec2, &[]).await.expect("not retryable");
        assert_eq!(report.created.count, 2, "{code}");
        assert_eq!(report.errors_by_class.get(&class), Some(&1), "{code}");
        assert_eq!(report.errors.items[0].eni_id, "eni-b");
        assert_eq!(w.sessions_on("eni-a").len(), 1);
        assert_eq!(w.sessions_on("eni-c").len(), 1);
    }
}

#[tokio::test]
async fn a_throttled_eni_fails_the_run_after_the_others_are_done() {
    let (w, ec2) = tagged(&["eni-a", "eni-b"]);
    w.fail_create("eni-a", "RequestLimitExceeded");
    let err = reconcile(&ec2, &[]).await.unwrap_err();
    assert!(
        matches!(err, HandlerError::Retryable { count: 1, .. }),
        "{err}"
    );
    assert_eq!(
        w.sessions_on("eni-b").len(),
        1,
        "the other ENI was still handled"
    );
}

#[tokio::test]
async fn a_failed_observe_fails_the_run_with_its_class() {
    let (w, ec2) = tagged(&["eni-a"]);
    w.fail_describes(AwsError::classify(
        "DescribeNetworkInterfaces",
        "UnauthorizedOperation",
        "no",
    ));
    let err = reconcile(&ec2, &[]).await.unwrap_err();
    assert!(
        matches!(&err, HandlerError::Observe(e) if e.class == ErrorClass::PermissionDenied),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_event_fails_with_a_typed_error_and_touches_nothing() {
    let w = Ec2World::default();
    let mut v = sample_event("cloudtrail-create-network-interface.json");
    v["detail"]["responseElements"] = Value::Null;
    let err = onboard(&w.client("test"), v).await.unwrap_err();
    assert_eq!(err.label(), "missing_field");
    assert_eq!(w.describes(), 0);
}

#[tokio::test]
async fn each_function_rejects_the_other_functions_triggers() {
    let ec2 = Ec2World::default().client("test");
    let err = onboard(&ec2, sample_event("scheduled.json"))
        .await
        .unwrap_err();
    assert_eq!(err.label(), "wrong_trigger");
    let err = handlers::reconcile(
        &ec2,
        &run("reconcile-mirrors", &[]),
        sample_event("tag-change-eni.json"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.label(), "wrong_trigger");
}

#[tokio::test]
async fn every_sample_event_drives_onboard_or_reconcile() {
    let w = Ec2World::default();
    w.add_instance("i-0abcd1234ef567890", &[TAGGED_INSTANCE]);
    w.add_eni("eni-0123456789abcdef0", Some("i-0abcd1234ef567890"), &[]);
    let ec2 = w.client("test");
    for name in [
        "instance-running.json",
        "cloudtrail-create-network-interface.json",
        "cloudtrail-attach-network-interface.json",
        "tag-change-instance.json",
        "tag-change-eni.json",
    ] {
        onboard(&ec2, sample_event(name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(w.sessions_on("eni-0123456789abcdef0").len(), 1, "{name}");
    }
    reconcile(&ec2, &[]).await.unwrap();
    assert_eq!(w.sessions_on("eni-0123456789abcdef0").len(), 1);
}

#[tokio::test]
async fn the_rebuilder_fleet_and_the_target_eni_are_never_mirrored() {
    let (w, ec2) = tagged(&["eni-target"]);
    w.add_instance("i-fleet", &[("aws:autoscaling:groupName", "rebuilders")]);
    w.add_eni("eni-fleet", Some("i-fleet"), &[TAGGED]);
    w.add_target(MirrorTarget {
        id: TARGET.into(),
        network_interface_id: Some("eni-target".into()),
        network_load_balancer_arn: None,
    });
    let report = reconcile(&ec2, &[("FLEET_ASG_NAME", "rebuilders")])
        .await
        .unwrap();
    assert_eq!(report.created.count, 0);
    for reason in [SkipReason::RebuilderFleet, SkipReason::IsMirrorTarget] {
        assert_eq!(report.skipped_by_reason.get(&reason), Some(&1), "{reason}");
    }
}

#[tokio::test]
async fn a_full_reconcile_describes_by_pages_not_per_eni() {
    let ids: Vec<String> = (0..500).map(|i| format!("eni-{i:04}")).collect();
    let (w, ec2) = tagged(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    reconcile(&ec2, &[]).await.unwrap();
    // targets, ENIs by filter, instances by filter, sessions: a constant, not 500.
    assert!(w.describes() <= 6, "{}", w.describes());
    assert_eq!(w.writes().len(), 500);
}
