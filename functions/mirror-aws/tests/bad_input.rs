//! Bad input: malformed events, events for another account or region, settings with bad
//! filter syntax. Each gets a clear error naming the problem, and nothing is done: not one
//! API call (describe or write) reaches EC2, and a good event after a bad one still works.

use mirror_aws::events::Home;
use mirror_aws::handlers::{self, HandlerError, MirrorRun};
use mirror_testkit::settings::{settings, try_settings};
use mirror_testkit::{Ec2World, eni_event, sample_event as event};
use serde_json::{Value, json};

fn world() -> Ec2World {
    let w = Ec2World::default();
    w.add_eni("eni-0123456789abcdef0", None, &[("mirror", "true")]);
    w.add_instance("i-0abcd1234ef567890", &[("mirror-instance", "true")]);
    w.add_eni("eni-attached", Some("i-0abcd1234ef567890"), &[]);
    w
}

fn with(mut v: Value, path: &[&str], value: Value) -> Value {
    let mut at = &mut v;
    for key in &path[..path.len() - 1] {
        at = &mut at[*key];
    }
    at[path[path.len() - 1]] = value;
    v
}

fn without(mut v: Value, path: &[&str]) -> Value {
    let mut at = &mut v;
    for key in &path[..path.len() - 1] {
        at = &mut at[*key];
    }
    at.as_object_mut().unwrap().remove(path[path.len() - 1]);
    v
}

/// (what, payload, expected error label, a word the message must contain)
fn malformed_events() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let running = event("instance-running.json");
    let create = event("cloudtrail-create-network-interface.json");
    let attach = event("cloudtrail-attach-network-interface.json");
    let tag_eni = event("tag-change-eni.json");
    vec![
        (
            "a JSON array",
            json!([1, 2]),
            "not_eventbridge",
            "EventBridge",
        ),
        (
            "a JSON string",
            json!("hello"),
            "not_eventbridge",
            "EventBridge",
        ),
        ("null", Value::Null, "not_eventbridge", "EventBridge"),
        (
            "an empty object",
            json!({}),
            "not_eventbridge",
            "EventBridge",
        ),
        (
            "no detail-type",
            without(running.clone(), &["detail-type"]),
            "not_eventbridge",
            "detail-type",
        ),
        (
            "detail-type of another service",
            with(
                running.clone(),
                &["detail-type"],
                json!("EBS Volume Notification"),
            ),
            "unsupported_detail_type",
            "EBS Volume Notification",
        ),
        (
            "detail-type not a string",
            with(running.clone(), &["detail-type"], json!(7)),
            "not_eventbridge",
            "EventBridge",
        ),
        (
            "instance state change without instance-id",
            without(running.clone(), &["detail", "instance-id"]),
            "malformed_detail",
            "instance-id",
        ),
        (
            "empty instance-id",
            with(running.clone(), &["detail", "instance-id"], json!("")),
            "bad_id",
            "instance",
        ),
        (
            "instance-id with a space and a comma",
            with(
                running.clone(),
                &["detail", "instance-id"],
                json!("i-1, i-2"),
            ),
            "bad_id",
            "i-1, i-2",
        ),
        (
            "detail is a string",
            with(running, &["detail"], json!("running")),
            "malformed_detail",
            "EC2 Instance State-change Notification",
        ),
        (
            "CreateNetworkInterface response whose id is not a string",
            with(
                create,
                &[
                    "detail",
                    "responseElements",
                    "networkInterface",
                    "networkInterfaceId",
                ],
                json!(["eni-1"]),
            ),
            "bad_id",
            "networkInterfaceId",
        ),
        (
            "AttachNetworkInterface whose userIdentity is not an object",
            with(attach.clone(), &["detail", "userIdentity"], json!(42)),
            "malformed_detail",
            "AWS API Call via CloudTrail",
        ),
        (
            "another CloudTrail call",
            with(
                attach,
                &["detail", "eventName"],
                json!("DeleteNetworkInterface"),
            ),
            "unsupported_api_call",
            "DeleteNetworkInterface",
        ),
        (
            "tag change naming no resource",
            with(tag_eni.clone(), &["resources"], json!([])),
            "no_resource",
            "network-interface",
        ),
        (
            "tag change on a volume",
            with(
                tag_eni.clone(),
                &["detail", "resource-type"],
                json!("volume"),
            ),
            "unsupported_resource_type",
            "volume",
        ),
        (
            "tag change whose ARN carries a filter wildcard",
            with(
                tag_eni,
                &["resources"],
                json!(["arn:aws:ec2:us-east-1:123456789012:network-interface/eni-*"]),
            ),
            "bad_id",
            "eni-*",
        ),
    ]
}

#[tokio::test]
async fn malformed_events_fail_with_a_named_error_and_no_api_call() {
    let w = world();
    let run = MirrorRun::new("onboard-eni", settings(&[]));
    for (what, payload, label, needle) in malformed_events() {
        let err = handlers::onboard(&w.client("onboard"), &run, payload)
            .await
            .expect_err(what);
        assert_eq!(err.label(), label, "{what}: {err}");
        let message = err.to_string();
        assert!(
            message.contains(needle),
            "{what}: {message:?} lacks {needle:?}"
        );
        assert!(w.calls().is_empty(), "{what}: {:?}", w.calls());
    }
    // The events are independent: a good one after all the bad ones is handled.
    let report = handlers::onboard(
        &w.client("onboard"),
        &run,
        eni_event("eni-0123456789abcdef0"),
    )
    .await
    .unwrap();
    assert_eq!(report.created.count, 1);
}

#[tokio::test]
async fn malformed_events_sent_to_reconcile_fail_the_same_way() {
    let w = world();
    let run = MirrorRun::new("reconcile-mirrors", settings(&[]));
    for (what, payload, label, _) in malformed_events() {
        let err = handlers::reconcile(&w.client("reconcile"), &run, payload)
            .await
            .expect_err(what);
        // reconcile only takes Scheduled Events: a well-formed onboard event is the wrong
        // trigger; anything malformed is named as such.
        assert!(
            err.label() == label || err.label() == "wrong_trigger",
            "{what}: {err}"
        );
        assert!(w.calls().is_empty(), "{what}");
    }
}

#[tokio::test]
async fn a_trigger_for_the_other_function_is_refused_without_action() {
    let w = world();
    let err = handlers::onboard(
        &w.client("onboard"),
        &MirrorRun::new("onboard-eni", settings(&[])),
        event("scheduled.json"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HandlerError::WrongTrigger { .. }), "{err}");
    assert!(err.to_string().contains("onboard-eni"), "{err}");
    let err = handlers::reconcile(
        &w.client("reconcile"),
        &MirrorRun::new("reconcile-mirrors", settings(&[])),
        eni_event("eni-0123456789abcdef0"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HandlerError::WrongTrigger { .. }), "{err}");
    assert!(w.calls().is_empty());
}

fn home_run(function: &'static str) -> MirrorRun {
    MirrorRun::new(function, settings(&[])).for_function(
        &format!("arn:aws:lambda:us-east-1:123456789012:function:{function}"),
        Some("us-east-1"),
    )
}

/// Decision: an event for another account or region is refused with
/// `mirrorfleet.foreign_event` before any API call (not silently ignored): such an event only
/// arrives through a misrouted rule or a replay, and failing puts it in the DLQ where the
/// misrouting is visible. The ids it names are never looked up in this account.
#[tokio::test]
async fn events_for_another_account_or_region_cause_no_action() {
    let w = world();
    let samples = [
        "instance-running.json",
        "cloudtrail-create-network-interface.json",
        "cloudtrail-attach-network-interface.json",
        "tag-change-instance.json",
        "tag-change-eni.json",
    ];
    for name in samples {
        for (field, value) in [("account", "210987654321"), ("region", "eu-west-1")] {
            let payload = with(event(name), &[field], json!(value));
            let err = handlers::onboard(&w.client("onboard"), &home_run("onboard-eni"), payload)
                .await
                .expect_err(name);
            assert_eq!(err.label(), "foreign_event", "{name} {field}: {err}");
            assert!(err.to_string().contains(value), "{err}");
        }
    }
    for (field, value) in [("account", "210987654321"), ("region", "eu-west-1")] {
        let payload = with(event("scheduled.json"), &[field], json!(value));
        let err = handlers::reconcile(
            &w.client("reconcile"),
            &home_run("reconcile-mirrors"),
            payload,
        )
        .await
        .unwrap_err();
        assert_eq!(err.label(), "foreign_event", "{err}");
    }
    assert!(w.calls().is_empty(), "{:?}", w.calls());
    // The same events from this account and region are handled.
    for name in samples {
        handlers::onboard(&w.client("onboard"), &home_run("onboard-eni"), event(name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(w.owned_on("eni-0123456789abcdef0").len(), 1);
    assert_eq!(w.owned_on("eni-attached").len(), 1);
}

/// A malformed event is named as malformed even when it also claims another account.
#[tokio::test]
async fn a_malformed_foreign_event_is_reported_as_malformed() {
    let w = world();
    let payload = with(
        without(event("instance-running.json"), &["detail", "instance-id"]),
        &["account"],
        json!("210987654321"),
    );
    let err = handlers::onboard(&w.client("onboard"), &home_run("onboard-eni"), payload)
        .await
        .unwrap_err();
    assert_eq!(err.label(), "malformed_detail", "{err}");
    assert!(w.calls().is_empty());
}

/// Bad filter syntax is refused at start-up, naming the variable and the offending text; the
/// functions build no client and so cannot act (`functions/reconcile-mirrors/tests/
/// bad_settings.rs` shows the binary exits before any connection).
#[test]
fn settings_with_bad_filter_syntax_name_the_variable_and_the_problem() {
    let cases = [
        ("MIRROR_ENI_FILTERS", "Name=tag:mirror", "Values"),
        ("MIRROR_ENI_FILTERS", "Values=true", "Name"),
        (
            "MIRROR_ENI_FILTERS",
            "Name=tag:mirror,Values=\"web",
            "unterminated",
        ),
        (
            "MIRROR_ENI_FILTERS",
            "Name=instance-type,Values=m5.large",
            "instance-type",
        ),
        ("MIRROR_ENI_FILTERS", "tag:mirror=true", "tag:mirror=true"),
        (
            "MIRROR_ENI_FILTERS",
            "Name=tag:mirror,Values=",
            "empty value",
        ),
        ("MIRROR_ENI_FILTERS", "Name=tag:mirror,Colour=red", "Colour"),
        ("MIRROR_ENI_FILTERS", "[{\"Name\": \"tag:mirror\"", "JSON"),
        (
            "MIRROR_INSTANCE_FILTERS",
            "Name=interface-type,Values=efa",
            "interface-type",
        ),
        ("MIRROR_INSTANCE_FILTERS", "Name=,Values=x", "empty name"),
    ];
    for (var, value, needle) in cases {
        let err = try_settings(&[(var, value)]).expect_err(value);
        assert_eq!(err.vars(), [var], "{value}: {err}");
        let message = err.to_string();
        assert!(message.contains(var), "{message}");
        assert!(
            message.contains(needle),
            "{value}: {message:?} lacks {needle:?}"
        );
    }
}

#[test]
fn the_home_of_a_function_is_read_from_its_arn() {
    let run = home_run("onboard-eni");
    assert_eq!(
        run.home,
        Home {
            account: Some("123456789012".into()),
            region: Some("us-east-1".into()),
        }
    );
}
