//! Faults during a run, each with its outcome (retried by the SDK, reported for that ENI, or
//! the function fails so that Lambda retries it) and proof that the other ENIs of the same
//! run are unaffected.
//!
//! The SDK-level faults (throttling storms, 5xx, permission denied, an ENI that vanished) go
//! through the real aws-sdk-ec2 client: real EC2 error documents served by aws-smithy-mocks,
//! so the SDK's deserialisation and retry classification run. Timeouts use a real TCP
//! listener on 127.0.0.1 that accepts and never answers, with short SDK timeouts. The ENI
//! deleted between observe and apply is also shown against the faithful in-memory EC2, where
//! the ENI really disappears after the handler observed it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
use aws_sdk_ec2::operation::describe_traffic_mirror_sessions::DescribeTrafficMirrorSessionsOutput;
use aws_sdk_ec2::operation::describe_traffic_mirror_targets::DescribeTrafficMirrorTargetsOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock};
use aws_smithy_types::timeout::TimeoutConfig;
use mirror::filters::Filter;
use mirror::model::{Eni, Instance, MirrorTarget, Session};
use mirror::plan::{CreateSession, DeleteSession, ModifySession, Scope};
use mirror::report::{ErrorClass, Report};
use mirror_aws::ec2::{Ec2Api, Ec2Op, SdkEc2};
use mirror_aws::error::{AwsError, HandlerError};
use mirror_aws::handlers::{self, MirrorRun};
use mirror_testkit::fake_ec2::api_error;
use mirror_testkit::mocks::{self, ATTEMPTS, created, ec2_error, fast_retry, tagged_eni};
use mirror_testkit::settings::settings;
use mirror_testkit::{Call, Ec2World, FakeEc2, test_client};

const NOW: u64 = 1_795_660_200;

fn mocked(rules: &[&Rule]) -> SdkEc2 {
    mocks::ec2(RuleMode::MatchAny, rules)
}

/// The describes of a full run over `ids` (no sessions yet, no instances, no targets).
fn world_rules(ids: &'static [&'static str]) -> Vec<Rule> {
    vec![
        mock!(aws_sdk_ec2::Client::describe_traffic_mirror_targets)
            .sequence()
            .output(|| DescribeTrafficMirrorTargetsOutput::builder().build())
            .repeatedly()
            .build(),
        mock!(aws_sdk_ec2::Client::describe_network_interfaces)
            .sequence()
            .output(move || {
                let mut b = DescribeNetworkInterfacesOutput::builder();
                for id in ids {
                    b = b.network_interfaces(tagged_eni(id));
                }
                b.build()
            })
            .repeatedly()
            .build(),
        mock!(aws_sdk_ec2::Client::describe_instances)
            .sequence()
            .output(|| DescribeInstancesOutput::builder().build())
            .repeatedly()
            .build(),
        mock!(aws_sdk_ec2::Client::describe_traffic_mirror_sessions)
            .sequence()
            .output(|| DescribeTrafficMirrorSessionsOutput::builder().build())
            .repeatedly()
            .build(),
    ]
}

/// A create rule for one ENI that succeeds every time it is called.
fn create_ok(id: &'static str) -> Rule {
    mock!(aws_sdk_ec2::Client::create_traffic_mirror_session)
        .match_requests(move |r| r.network_interface_id() == Some(id))
        .sequence()
        .output(move || created(id))
        .repeatedly()
        .build()
}

/// A create rule for one ENI that answers `status`/`code` every time.
fn create_fails(id: &'static str, status: u16, code: &'static str) -> Rule {
    mock!(aws_sdk_ec2::Client::create_traffic_mirror_session)
        .match_requests(move |r| r.network_interface_id() == Some(id))
        .sequence()
        .http_response(move || ec2_error(status, code, "injected"))
        .repeatedly()
        .build()
}

async fn run_all(ec2: &SdkEc2) -> Result<Report, HandlerError> {
    let run = MirrorRun::new("reconcile-mirrors", settings(&[]));
    handlers::run_mirror(ec2, &handlers::NoStore, &run, &Scope::All, NOW).await
}

const FOUR: &[&str] = &["eni-1", "eni-2", "eni-3", "eni-4"];

/// Runs a full reconcile over four ENIs where `eni-2`'s create gets `rule`, and checks the
/// three others were each created by exactly one call.
async fn one_bad_eni(bad: Rule) -> (Result<Report, HandlerError>, Rule) {
    let world = world_rules(FOUR);
    let ok: Vec<Rule> = ["eni-1", "eni-3", "eni-4"].map(create_ok).into();
    let mut rules: Vec<&Rule> = world.iter().collect();
    rules.push(&bad);
    rules.extend(ok.iter());
    let ec2 = mocked(&rules);
    let result = run_all(&ec2).await;
    for r in &ok {
        assert_eq!(r.num_calls(), 1, "another ENI was affected");
    }
    (result, bad)
}

#[tokio::test]
async fn a_throttling_storm_beyond_the_sdk_retries_fails_the_run_for_lambda_after_the_others() {
    let (result, bad) = one_bad_eni(create_fails("eni-2", 503, "RequestLimitExceeded")).await;
    assert_eq!(bad.num_calls(), ATTEMPTS as usize, "the SDK retried it");
    match result {
        Err(HandlerError::Retryable { count: 1, first }) => {
            assert!(
                first.contains("eni-2") && first.contains("throttled"),
                "{first}"
            );
        }
        other => panic!("expected a retryable failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_throttling_burst_inside_the_sdk_retries_is_absorbed() {
    let bad = mock!(aws_sdk_ec2::Client::create_traffic_mirror_session)
        .match_requests(|r| r.network_interface_id() == Some("eni-2"))
        .sequence()
        .http_response(|| ec2_error(503, "RequestLimitExceeded", "Request limit exceeded."))
        .times(ATTEMPTS as usize - 1)
        .output(|| created("eni-2"))
        .build();
    let (result, bad) = one_bad_eni(bad).await;
    let report = result.expect("absorbed by the SDK's retries");
    assert_eq!(report.created.count, 4);
    assert_eq!(report.errors.count, 0);
    assert_eq!(bad.num_calls(), ATTEMPTS as usize);
}

#[tokio::test]
async fn a_throttling_storm_on_every_call_fails_observation_and_writes_nothing() {
    let storm = mock!(aws_sdk_ec2::Client::describe_traffic_mirror_targets)
        .sequence()
        .http_response(|| ec2_error(503, "RequestLimitExceeded", "Request limit exceeded."))
        .repeatedly()
        .build();
    let create = create_ok("eni-1");
    let ec2 = mocked(&[&storm, &create]);
    let err = run_all(&ec2).await.unwrap_err();
    assert!(
        matches!(&err, HandlerError::Observe(e) if e.class == ErrorClass::Throttled),
        "{err}"
    );
    assert_eq!(storm.num_calls(), ATTEMPTS as usize);
    assert_eq!(create.num_calls(), 0, "no write without a full observation");
}

#[tokio::test]
async fn server_errors_are_retried_then_fail_the_run_for_lambda() {
    for (status, code) in [(500, "InternalError"), (503, "Unavailable")] {
        let (result, bad) = one_bad_eni(create_fails("eni-2", status, code)).await;
        assert_eq!(bad.num_calls(), ATTEMPTS as usize, "{code}: retried");
        match result {
            Err(HandlerError::Retryable { count: 1, first }) => {
                assert!(first.contains("eni-2") && first.contains(code), "{first}");
            }
            other => panic!("{code}: expected a retryable failure, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_transient_server_error_is_absorbed_by_the_sdk() {
    let bad = mock!(aws_sdk_ec2::Client::create_traffic_mirror_session)
        .match_requests(|r| r.network_interface_id() == Some("eni-2"))
        .sequence()
        .http_response(|| ec2_error(500, "InternalError", "We encountered an internal error."))
        .output(|| created("eni-2"))
        .build();
    let (result, bad) = one_bad_eni(bad).await;
    assert_eq!(result.unwrap().created.count, 4);
    assert_eq!(bad.num_calls(), 2);
}

#[tokio::test]
async fn permission_denied_on_one_eni_is_reported_not_retried_and_the_run_succeeds() {
    for code in ["UnauthorizedOperation", "AccessDenied"] {
        let (result, bad) = one_bad_eni(create_fails("eni-2", 403, code)).await;
        assert_eq!(bad.num_calls(), 1, "{code}: an IAM refusal is not retried");
        let report = result.unwrap_or_else(|e| panic!("{code}: {e}"));
        assert_eq!(report.created.count, 3);
        assert_eq!(
            report.errors_by_class.get(&ErrorClass::PermissionDenied),
            Some(&1),
            "{code}"
        );
        assert_eq!(report.errors.items[0].eni_id, "eni-2");
    }
}

#[tokio::test]
async fn permission_denied_on_observation_fails_the_run_before_any_write() {
    let denied = mock!(aws_sdk_ec2::Client::describe_network_interfaces)
        .sequence()
        .http_response(|| ec2_error(403, "UnauthorizedOperation", "You are not authorized."))
        .repeatedly()
        .build();
    let mut rules = world_rules(FOUR);
    rules.remove(1);
    let create = create_ok("eni-1");
    let mut all: Vec<&Rule> = vec![&denied, &create];
    all.extend(rules.iter());
    let err = run_all(&mocked(&all)).await.unwrap_err();
    assert!(
        matches!(&err, HandlerError::Observe(e) if e.class == ErrorClass::PermissionDenied),
        "{err}"
    );
    assert_eq!(denied.num_calls(), 1);
    assert_eq!(create.num_calls(), 0);
}

#[tokio::test]
async fn an_eni_deleted_between_observe_and_create_is_skipped_as_gone() {
    let (result, bad) = one_bad_eni(create_fails(
        "eni-2",
        400,
        "InvalidNetworkInterfaceID.NotFound",
    ))
    .await;
    assert_eq!(bad.num_calls(), 1, "not retried");
    let report = result.expect("a gone ENI is not worth a Lambda retry");
    assert_eq!(report.created.count, 3);
    assert_eq!(report.errors_by_class.get(&ErrorClass::EniGone), Some(&1));
    assert_eq!(report.errors.items[0].eni_id, "eni-2");
}

/// The same against the faithful in-memory EC2: the ENI really disappears once the handler
/// has observed it (just before the first write), so the create meets the API's own answer;
/// the next reconcile no longer sees it and does nothing.
#[tokio::test]
async fn an_eni_that_really_vanishes_after_observation_fails_alone() {
    for victim in ["eni-1", "eni-2", "eni-3", "eni-4"] {
        let w = Ec2World::default();
        for id in FOUR {
            w.add_eni(id, None, &[("mirror", "true")]);
        }
        let gone = victim.to_owned();
        w.set_write_hook(Box::new(move |state, _call| {
            state.enis.retain(|e| e.id != gone);
            None
        }));
        let run = MirrorRun::new("reconcile-mirrors", settings(&[]));
        let report = handlers::run_mirror(
            &w.client("reconcile"),
            &handlers::NoStore,
            &run,
            &Scope::All,
            NOW,
        )
        .await
        .expect("not retryable");
        assert_eq!(report.created.count, 3, "{victim}");
        assert_eq!(report.errors.items.len(), 1);
        assert_eq!(report.errors.items[0].eni_id, victim);
        assert_eq!(report.errors.items[0].class, ErrorClass::EniGone);
        for id in FOUR.iter().filter(|id| **id != victim) {
            assert_eq!(w.owned_on(id).len(), 1, "{id}");
        }
        w.clear_write_hook();
        let again = handlers::run_mirror(
            &w.client("next"),
            &handlers::NoStore,
            &run,
            &Scope::All,
            NOW + 60,
        )
        .await
        .unwrap();
        assert_eq!(again.created.count + again.errors.count, 0, "{victim}");
    }
}

// ---- timeouts ----

/// A TCP listener on 127.0.0.1 that accepts connections and never answers. Counts them.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        // Ends with the test's runtime.
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            held.push(stream);
        }
    });
    (url, accepted)
}

const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);

fn hung_client(url: &str) -> SdkEc2 {
    SdkEc2::new(test_client!(
        aws_sdk_ec2
            .endpoint_url(url)
            .retry_config(fast_retry())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(ATTEMPT_TIMEOUT * (ATTEMPTS + 2))
                    .build(),
            )
    ))
}

#[tokio::test]
async fn a_call_that_never_answers_times_out_is_retried_and_is_retryable() {
    let (url, accepted) = black_hole().await;
    let ec2 = hung_client(&url);
    let started = Instant::now();
    let err = ec2
        .describe_network_interfaces(Vec::new())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code, "Timeout", "{err}");
    assert!(err.retryable());
    assert!(took < ATTEMPT_TIMEOUT * (ATTEMPTS + 4), "{took:?}");
    let tries = accepted.load(Ordering::Relaxed);
    eprintln!("hung endpoint: {tries} connection(s), gave up after {took:?}");
    assert!(tries >= 1);
}

/// Observation through the in-memory EC2; the create of `eni-2` goes to the real SDK client
/// on the endpoint that never answers; the others to the in-memory EC2.
#[derive(Clone)]
struct HangOne {
    fake: FakeEc2,
    hung: SdkEc2,
    eni: &'static str,
}

impl Ec2Api for HangOne {
    async fn describe_network_interfaces(&self, f: Vec<Filter>) -> Result<Vec<Eni>, AwsError> {
        self.fake.describe_network_interfaces(f).await
    }
    async fn describe_instances(&self, f: Vec<Filter>) -> Result<Vec<Instance>, AwsError> {
        self.fake.describe_instances(f).await
    }
    async fn describe_sessions(&self, f: Vec<Filter>) -> Result<Vec<Session>, AwsError> {
        self.fake.describe_sessions(f).await
    }
    async fn describe_targets(&self) -> Result<Vec<MirrorTarget>, AwsError> {
        self.fake.describe_targets().await
    }
    async fn create_session(&self, req: &CreateSession) -> Result<String, AwsError> {
        if req.eni_id == self.eni {
            self.hung.create_session(req).await
        } else {
            self.fake.create_session(req).await
        }
    }
    async fn delete_session(&self, req: &DeleteSession) -> Result<(), AwsError> {
        self.fake.delete_session(req).await
    }
    async fn modify_session(&self, req: &ModifySession) -> Result<(), AwsError> {
        self.fake.modify_session(req).await
    }
}

#[tokio::test]
async fn a_create_that_times_out_fails_the_run_for_lambda_and_the_others_are_created() {
    let (url, _) = black_hole().await;
    let w = Ec2World::default();
    for id in FOUR {
        w.add_eni(id, None, &[("mirror", "true")]);
    }
    let ec2 = HangOne {
        fake: w.client("reconcile"),
        hung: hung_client(&url),
        eni: "eni-2",
    };
    let run = MirrorRun::new("reconcile-mirrors", settings(&[]));
    let err = handlers::run_mirror(&ec2, &handlers::NoStore, &run, &Scope::All, NOW)
        .await
        .unwrap_err();
    match err {
        HandlerError::Retryable { count: 1, first } => {
            assert!(
                first.contains("eni-2") && first.contains("Timeout"),
                "{first}"
            );
        }
        other => panic!("{other}"),
    }
    for id in ["eni-1", "eni-3", "eni-4"] {
        assert_eq!(w.owned_on(id).len(), 1, "{id}");
    }
    // Lambda's retry, the endpoint healthy again: only the missing session is created.
    let report = handlers::run_mirror(
        &w.client("retry"),
        &handlers::NoStore,
        &run,
        &Scope::All,
        NOW + 30,
    )
    .await
    .unwrap();
    assert_eq!(report.created.count, 1);
    assert_eq!(report.created.items[0].eni_id, "eni-2");
}

/// A failing write hook for one ENI in the in-memory EC2: every error class at once, one ENI
/// each, in one run — the healthy ENI is still created, and the run fails only because two
/// of the classes are retryable.
#[tokio::test]
async fn every_error_class_at_once_leaves_the_healthy_eni_alone() {
    let codes: BTreeMap<&str, &str> = [
        ("eni-gone", "InvalidNetworkInterfaceID.NotFound"),
        ("eni-unsupported", "NetworkInterfaceNotSupported"),
        (
            "eni-limit",
            "TrafficMirrorSessionsPerInterfaceLimitExceeded",
        ),
        ("eni-throttled", "RequestLimitExceeded"),
        ("eni-denied", "UnauthorizedOperation"),
        ("eni-other", "InternalError"),
    ]
    .into();
    let w = Ec2World::default();
    for id in codes.keys().chain(["eni-healthy"].iter()) {
        w.add_eni(id, None, &[("mirror", "true")]);
    }
    let table = codes.clone();
    w.set_write_hook(Box::new(move |_, call| match call {
        Call::Create { eni_id, .. } => table
            .get(eni_id.as_str())
            .map(|code| api_error(Ec2Op::CreateTrafficMirrorSession, code)),
        _ => None,
    }));
    let run = MirrorRun::new("reconcile-mirrors", settings(&[]));
    let err = handlers::run_mirror(
        &w.client("reconcile"),
        &handlers::NoStore,
        &run,
        &Scope::All,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, HandlerError::Retryable { count: 2, .. }),
        "{err}"
    );
    assert_eq!(w.owned_on("eni-healthy").len(), 1);
    for id in codes.keys() {
        assert!(w.owned_on(id).is_empty(), "{id}");
    }
}
