//! The onboard and reconcile handlers against the test kit's in-memory EC2, which enforces
//! the AWS rules moto does not (3 sessions per ENI, unique numbers per ENI, the ENI must exist,
//! ClientToken idempotency, the NLB target's default packet length) and can be told to fail a
//! given ENI with a given error; reconcile-mirrors' S3 objects in the kit's in-memory store.

use mirror::model::{Eni, MirrorTarget};
use mirror::report::{ErrorClass, Report};
use mirror::selection::SkipReason;
use mirror::settings::S3Uri;
use mirror_aws::error::{AwsError, HandlerError};
use mirror_aws::handlers::{self, MirrorRun};
use mirror_testkit::settings::{
    FILTER, OBJECTS, REFUSALS_URI, SOURCES_URI, TARGET, reconcile_settings, settings,
};
use mirror_testkit::{Ec2World, FakeEc2, FakeStore, eni_event, instance_event, sample_event};
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
    assert_eq!(
        (s.number, s.vni, s.packet_length),
        (32766, Some(4242), None)
    );
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
async fn our_session_takes_the_highest_free_number_and_a_lower_foreign_one_is_reported_shadowing_it()
 {
    let (w, ec2) = tagged(&["eni-a"]);
    let ids = w.add_session("eni-a", 1, None);
    let report = onboard(&ec2, eni_event("eni-a")).await.unwrap();
    assert_eq!(w.sessions_on("eni-a").len(), 2);
    let ours = &w.owned_on("eni-a")[0];
    assert_eq!(ours.number, 32766, "the IDS session keeps its traffic");
    assert_eq!(report.shadowed.count, 1);
    let s = &report.shadowed.items[0];
    assert_eq!(
        (
            s.session_id.as_deref(),
            s.by_session_id.as_str(),
            s.by_number
        ),
        (Some(ours.id.as_str()), ids.as_str(), 1)
    );
    let line: Value = serde_json::from_str(&report.emf_line("mirrorfleet", 1)).unwrap();
    assert_eq!(line["Shadowed"], 1);
    // Steady state: still reported by a reconcile that changes nothing.
    let again = reconcile(&ec2, &[]).await.unwrap();
    assert_eq!((again.created.count, again.shadowed.count), (0, 1));
}

#[tokio::test]
async fn with_high_priority_our_session_takes_the_lowest_free_number() {
    let (w, ec2) = tagged(&["eni-a"]);
    w.add_session("eni-a", 1, None);
    let r = run("onboard-eni", &[("MIRROR_SESSION_PRIORITY", "high")]);
    let report = handlers::onboard(&ec2, &r, eni_event("eni-a"))
        .await
        .unwrap();
    assert_eq!(w.owned_on("eni-a")[0].number, 2);
    assert_eq!(report.shadowed.count, 1, "1 is still evaluated before 2");
}

#[tokio::test]
async fn a_converged_session_on_an_nlb_target_is_never_modified() {
    let (w, ec2) = tagged(&["eni-a", "eni-b"]);
    w.add_target(MirrorTarget {
        id: TARGET.into(),
        network_load_balancer_arn: Some(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/m/1".into(),
        ),
        ..MirrorTarget::default()
    });
    reconcile(&ec2, &[]).await.unwrap();
    // AWS describes a session created without a packet length with 8500 on an NLB target.
    assert_eq!(w.owned_on("eni-a")[0].packet_length, Some(8500));
    let writes = w.writes().len();
    for _ in 0..3 {
        let r = reconcile(&ec2, &[]).await.unwrap();
        assert_eq!((r.modified.count, r.unchanged.count), (0, 2), "{r:?}");
    }
    assert_eq!(
        w.writes().len(),
        writes,
        "a converged state plans zero writes"
    );
    // A packet length of 8500 asked for explicitly is the same thing.
    let r = reconcile(&ec2, &[("MIRROR_PACKET_LENGTH", "8500")])
        .await
        .unwrap();
    assert_eq!(r.modified.count, 0);
    // A real difference is still drift, and removing it lands on 8500 again.
    w.with(|o| o.sessions[0].packet_length = Some(100));
    let r = reconcile(&ec2, &[]).await.unwrap();
    assert_eq!(r.modified.count, 1);
    assert_eq!(w.sessions_on("eni-a")[0].packet_length, Some(8500));
}

#[tokio::test]
async fn requester_managed_enis_are_left_alone_unless_their_requester_is_allowed() {
    let (w, ec2) = tagged(&["eni-app"]);
    for (id, requester, description) in [
        (
            "eni-vpce",
            "727180483921",
            "VPC Endpoint Interface vpce-0123",
        ),
        ("eni-lambda", "AROAEXAMPLE:lambda", "AWS Lambda VPC ENI-fn"),
        ("eni-alb", "amazon-elb", "ELB app/shop/50dc6c495c0c9188"),
    ] {
        w.add_eni_as(Eni {
            id: id.into(),
            subnet_id: "subnet-1".into(),
            vpc_id: "vpc-1".into(),
            interface_type: "interface".into(),
            description: description.into(),
            requester_id: Some(requester.into()),
            requester_managed: Some(true),
            tags: [(TAGGED.0.to_owned(), TAGGED.1.to_owned())].into(),
            ..Eni::default()
        });
    }
    let report = reconcile(&ec2, &[]).await.unwrap();
    assert_eq!(report.created.count, 1);
    assert_eq!(
        report.skipped_by_reason.get(&SkipReason::RequesterManaged),
        Some(&3)
    );
    let report = reconcile(&ec2, &[("MIRROR_REQUESTER_MANAGED", "amazon-elb")])
        .await
        .unwrap();
    assert_eq!(report.created.count, 1, "the load-balancer recipe");
    assert_eq!(w.owned_on("eni-alb").len(), 1);
    assert!(w.sessions_on("eni-vpce").is_empty() && w.sessions_on("eni-lambda").is_empty());
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
async fn a_failed_cloudtrail_call_is_ignored_with_its_reason_and_touches_nothing() {
    let w = Ec2World::default();
    for name in [
        "cloudtrail-create-network-interface-failed.json",
        "cloudtrail-create-network-interface-dry-run.json",
        "cloudtrail-attach-network-interface-failed.json",
    ] {
        let report = onboard(&w.client("test"), sample_event(name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ignored = report.ignored_event.expect(name);
        assert_eq!(ignored.reason, "failed_call", "{name}");
        assert!(
            ignored.detail.contains("Client."),
            "{name}: {}",
            ignored.detail
        );
    }
    assert_eq!(w.describes(), 0);
    let mut v = sample_event("cloudtrail-create-network-interface.json");
    v["detail"]["responseElements"] = Value::Null;
    let report = onboard(&w.client("test"), v).await.unwrap();
    assert_eq!(
        report.ignored_event.map(|i| i.reason),
        Some("no_network_interface".to_owned())
    );
    assert_eq!(w.describes(), 0);
}

/// Every CloudTrail sample of `events/`: the ENI it names is onboarded when the selection
/// wants it, or skipped with a reason (requester-managed service ENIs), or the event is ignored
/// with a reason (failed calls).
#[tokio::test]
async fn every_cloudtrail_sample_onboards_or_is_skipped_or_ignored_with_a_reason() {
    let mut found = 0;
    for entry in std::fs::read_dir(mirror_testkit::workspace_root().join("events")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with("cloudtrail-") {
            continue;
        }
        found += 1;
        let event = sample_event(&name);
        let detail = &event["detail"];
        let w = Ec2World::default();
        let eni = detail["responseElements"]["networkInterface"]["networkInterfaceId"]
            .as_str()
            .or(detail["requestParameters"]["networkInterfaceId"].as_str())
            .unwrap_or("eni-none")
            .to_owned();
        let ni = &detail["responseElements"]["networkInterface"];
        w.add_eni_as(Eni {
            id: eni.clone(),
            subnet_id: "subnet-1".into(),
            vpc_id: "vpc-1".into(),
            interface_type: ni["interfaceType"].as_str().unwrap_or("interface").into(),
            description: ni["description"].as_str().unwrap_or_default().into(),
            requester_id: ni["requesterId"].as_str().map(str::to_owned),
            requester_managed: ni["requesterManaged"].as_bool(),
            tags: [(TAGGED.0.to_owned(), TAGGED.1.to_owned())].into(),
            ..Eni::default()
        });
        let report = onboard(&w.client("test"), event.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let outcome = if let Some(i) = &report.ignored_event {
            format!("ignored:{}", i.reason)
        } else if report.created.count == 1 {
            "onboarded".to_owned()
        } else {
            let reasons: Vec<&str> = report
                .skipped
                .items
                .iter()
                .map(|s| s.reason.as_str())
                .collect();
            assert_eq!(reasons.len(), 1, "{name}: {report:?}");
            format!("skipped:{}", reasons[0])
        };
        let want = if detail["errorCode"].is_string() {
            "ignored:failed_call"
        } else if ni["requesterManaged"] == true {
            "skipped:requester_managed"
        } else {
            "onboarded"
        };
        assert_eq!(outcome, want, "{name}");
    }
    assert!(found >= 13, "{found} CloudTrail samples");
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
        ..MirrorTarget::default()
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

fn uri(text: &str) -> S3Uri {
    S3Uri::parse(text).unwrap()
}

/// reconcile-mirrors with its S3 objects in `store`.
async fn reconcile_publishing(
    ec2: &FakeEc2,
    store: &FakeStore,
    extra: &[(&str, &str)],
) -> Result<Report, HandlerError> {
    let mut env = OBJECTS.to_vec();
    env.push(("MIRROR_SOURCE_TAGS", "app"));
    env.extend_from_slice(extra);
    let run = MirrorRun::reconcile(reconcile_settings(TARGET, FILTER, &env));
    handlers::reconcile_with(ec2, store, &run, sample_event("scheduled.json")).await
}

#[tokio::test]
async fn a_refused_eni_is_not_tried_again_until_it_changes() {
    let (w, ec2) = tagged(&["eni-a", "eni-b"]);
    let store = FakeStore::default();
    w.fail_create("eni-b", "NetworkInterfaceNotSupported");
    let first = reconcile_publishing(&ec2, &store, &[])
        .await
        .expect("not retryable");
    assert_eq!(
        first.errors_by_class.get(&ErrorClass::UnsupportedSource),
        Some(&1)
    );
    let memory = store
        .json(&uri(REFUSALS_URI))
        .expect("the refusal is remembered");
    assert_eq!(
        memory["enis"]["eni-b"]["code"],
        "NetworkInterfaceNotSupported"
    );
    let creates = |w: &Ec2World| {
        w.writes()
            .iter()
            .filter(
                |c| matches!(c, mirror_testkit::Call::Create { eni_id, .. } if eni_id == "eni-b"),
            )
            .count()
    };
    assert_eq!(creates(&w), 1);

    for _ in 0..3 {
        let r = reconcile_publishing(&ec2, &store, &[]).await.unwrap();
        assert_eq!(r.errors.count, 0, "{r:?}");
        assert_eq!(
            (
                r.refused.count,
                r.skipped_by_reason.get(&SkipReason::Refused)
            ),
            (1, Some(&1))
        );
        assert_eq!(r.refused.items[0].class, ErrorClass::UnsupportedSource);
        let line: Value = serde_json::from_str(&r.emf_line("mirrorfleet", 1)).unwrap();
        assert_eq!(line["Refused"], 1);
    }
    assert_eq!(creates(&w), 1, "not sent again while the ENI is unchanged");

    // Its state changes (a tag touched): tried again, and now it works.
    w.clear_write_hook();
    w.set_eni_tags("eni-b", &[TAGGED, ("retry", "1")]);
    let r = reconcile_publishing(&ec2, &store, &[]).await.unwrap();
    assert_eq!((r.created.count, r.refused.count), (1, 0));
    assert_eq!(w.owned_on("eni-b").len(), 1);
    let memory = store.json(&uri(REFUSALS_URI)).unwrap();
    assert!(memory["enis"].as_object().unwrap().is_empty(), "{memory}");
}

#[tokio::test]
async fn only_throttling_server_errors_and_timeouts_fail_the_run_and_nothing_else_is_retried() {
    for (code, retryable) in [
        ("RequestLimitExceeded", true),
        ("InternalError", true),
        ("ServiceUnavailable", true),
        ("TrafficMirrorSessionLimitExceeded", false),
        ("UnauthorizedOperation", false),
        ("InvalidParameterValue", false),
        ("SomethingAwsAddsNextYear", false),
    ] {
        let (w, ec2) = tagged(&["eni-a", "eni-b"]);
        w.fail_create("eni-a", code);
        let store = FakeStore::default();
        let result = reconcile_publishing(&ec2, &store, &[]).await;
        assert_eq!(result.is_err(), retryable, "{code}: {result:?}");
        assert_eq!(w.owned_on("eni-b").len(), 1, "{code}");
        let remembered = store
            .json(&uri(REFUSALS_URI))
            .is_some_and(|m| m["enis"].get("eni-a").is_some());
        assert_eq!(remembered, !retryable, "{code}");
    }
}

#[tokio::test]
async fn the_source_map_lists_every_owned_session_and_is_written_only_when_it_changes() {
    let (w, ec2) = tagged(&["eni-a", "eni-b"]);
    w.add_instance("i-1", &[("Name", "web-1"), ("app", "shop")]);
    w.add_eni("eni-c", Some("i-1"), &[TAGGED]);
    w.add_eni("eni-x", None, &[]);
    w.add_session("eni-x", 1, None);
    let store = FakeStore::default();
    let r = reconcile_publishing(&ec2, &store, &[]).await.unwrap();
    let outcome = r.source_map.clone().unwrap();
    assert!(outcome.written && outcome.error.is_none(), "{outcome:?}");
    assert_eq!(outcome.sources, 3);
    let map = store.json(&uri(SOURCES_URI)).unwrap();
    assert_eq!(map["version"], 1);
    let sources = map["sources"].as_array().unwrap();
    let enis: Vec<&str> = sources.iter().map(|s| s["eni"].as_str().unwrap()).collect();
    assert_eq!(enis, vec!["eni-a", "eni-b", "eni-c"], "owned sessions only");
    for s in sources {
        let owned = w.owned_on(s["eni"].as_str().unwrap());
        assert_eq!(s["session"], owned[0].id.as_str());
        assert_eq!(s["vni"], 4242);
        assert!(s["sender_ip"].as_str().unwrap().starts_with("10.0."));
    }
    let c = &sources[2];
    assert_eq!(c["instance"]["id"], "i-1");
    assert_eq!(c["instance"]["name"], "web-1");
    assert_eq!(c["tags"]["app"], "shop");

    // Nothing changed: not written again.
    let r = reconcile_publishing(&ec2, &store, &[]).await.unwrap();
    assert!(!r.source_map.unwrap().written);
    assert_eq!(store.versions(&uri(SOURCES_URI)), 1);

    // An ENI untagged: its session goes, and so does its source.
    w.set_eni_tags("eni-a", &[]);
    let r = reconcile_publishing(&ec2, &store, &[]).await.unwrap();
    assert!(r.source_map.unwrap().written);
    let map = store.json(&uri(SOURCES_URI)).unwrap();
    assert_eq!(map["sources"].as_array().unwrap().len(), 2);
    assert_eq!(store.versions(&uri(SOURCES_URI)), 2);
}

#[tokio::test]
async fn a_source_map_that_cannot_be_written_fails_a_retryable_run_and_is_reported() {
    let (_w, ec2) = tagged(&["eni-a"]);
    let store = FakeStore::default();
    store.fail_with(AwsError::classify(
        "PutObject",
        "InternalError",
        "try again",
    ));
    let err = reconcile_publishing(&ec2, &store, &[]).await.unwrap_err();
    assert!(matches!(err, HandlerError::Retryable { .. }), "{err}");
    let store = FakeStore::default();
    store.fail_with(AwsError::classify("PutObject", "AccessDenied", "no"));
    let report = reconcile_publishing(&ec2, &store, &[]).await.unwrap();
    assert!(report.source_map.unwrap().error.is_some());
    assert_eq!(
        report.errors_by_class.get(&ErrorClass::PermissionDenied),
        Some(&2)
    );
}
