//! Adapter tests with aws-smithy-mocks for what moto cannot produce: throttling then success,
//! an unsupported source, an ENI deleted mid-run, the per-ENI session limit. Errors are real
//! EC2 error documents (HTTP status + XML body) so the SDK's own deserialisation and retry
//! classification run, not a shortcut.
//!
//! The clients are built by hand (mock HTTP client + interceptor) so that aws-sdk-ec2 needs
//! no `test-util` feature and is compiled once for build and test.

use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
use aws_sdk_autoscaling::operation::set_desired_capacity::SetDesiredCapacityOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
use aws_sdk_ec2::operation::describe_traffic_mirror_sessions::DescribeTrafficMirrorSessionsOutput;
use aws_sdk_ec2::operation::describe_traffic_mirror_targets::DescribeTrafficMirrorTargetsOutput;
use aws_sdk_ec2::operation::modify_traffic_mirror_session::ModifyTrafficMirrorSessionOutput;
use aws_sdk_ec2::types::{ResourceType, TrafficMirrorSessionField};
use aws_smithy_mocks::{Rule, RuleMode, mock};
use mirror::model::OWNER_TAG_KEY;
use mirror::plan::{Change, CreateSession, DeleteReason, DeleteSession, ModifySession};
use mirror::report::ErrorClass;
use mirror_aws::ec2::{Ec2Api, SdkEc2};
use mirror_aws::fleet::FleetApi;
use mirror_aws::handlers::{self, MirrorRun};
use mirror_testkit::mocks::{self, ATTEMPTS, created, ec2_error, tagged_eni};
use mirror_testkit::sample_event;
use mirror_testkit::settings::settings;

fn ec2(mode: RuleMode, rules: &[&Rule]) -> SdkEc2 {
    mocks::ec2(mode, rules)
}

fn new_session(eni: &str) -> CreateSession {
    CreateSession {
        eni_id: eni.into(),
        target_id: "tmt-1".into(),
        filter_id: "tmf-1".into(),
        number: 1,
        vni: 42,
        packet_length: None,
        client_token: format!("token-{eni}"),
        tags: [(OWNER_TAG_KEY.to_owned(), "owner".to_owned())].into(),
    }
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_then_every_page_is_read() {
    let rule = mock!(aws_sdk_ec2::Client::describe_network_interfaces)
        .sequence()
        .http_response(|| ec2_error(503, "RequestLimitExceeded", "Request limit exceeded."))
        .times(2)
        .output(|| {
            DescribeNetworkInterfacesOutput::builder()
                .network_interfaces(tagged_eni("eni-1"))
                .next_token("page-2")
                .build()
        })
        .output(|| {
            DescribeNetworkInterfacesOutput::builder()
                .network_interfaces(tagged_eni("eni-2"))
                .build()
        })
        .build();
    let ec2 = ec2(RuleMode::Sequential, &[&rule]);
    let enis = ec2.describe_network_interfaces(Vec::new()).await.unwrap();
    let ids: Vec<&str> = enis.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["eni-1", "eni-2"]);
    assert_eq!(enis[0].tags.get("mirror").map(String::as_str), Some("true"));
    assert_eq!(
        rule.num_calls(),
        4,
        "two throttled attempts, then two pages"
    );
    assert_eq!(ec2.calls().snapshot()[0], ("DescribeNetworkInterfaces", 2));
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_is_classified_throttled() {
    let rule = mock!(aws_sdk_ec2::Client::create_traffic_mirror_session)
        .sequence()
        .http_response(|| ec2_error(503, "RequestLimitExceeded", "Request limit exceeded."))
        .repeatedly()
        .build();
    let ec2 = ec2(RuleMode::Sequential, &[&rule]);
    let err = ec2.create_session(&new_session("eni-1")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Throttled, "{err}");
    assert!(err.retryable());
    assert_eq!(rule.num_calls(), ATTEMPTS as usize);
}

#[tokio::test]
async fn an_unsupported_source_is_recognised_from_the_api_error_and_not_retried() {
    let rule = mock!(aws_sdk_ec2::Client::create_traffic_mirror_session).then_http_response(|| {
        ec2_error(
            400,
            "NetworkInterfaceNotSupported",
            "The network interface is not supported for Traffic Mirroring.",
        )
    });
    let ec2 = ec2(RuleMode::Sequential, &[&rule]);
    let err = ec2.create_session(&new_session("eni-1")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::UnsupportedSource, "{err}");
    assert!(!err.retryable());
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn the_per_eni_session_limit_is_classified() {
    let rule = mock!(aws_sdk_ec2::Client::create_traffic_mirror_session).then_http_response(|| {
        ec2_error(
            400,
            "TrafficMirrorSessionsPerInterfaceLimitExceeded",
            "The allowed number of Traffic Mirror sessions for the specified network interface has been exceeded.",
        )
    });
    let ec2 = ec2(RuleMode::Sequential, &[&rule]);
    let err = ec2.create_session(&new_session("eni-1")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::SessionLimit, "{err}");
}

#[tokio::test]
async fn create_sends_number_vni_client_token_and_the_owner_tag() {
    let rule = mock!(aws_sdk_ec2::Client::create_traffic_mirror_session)
        .match_requests(|req| {
            let tagged = req.tag_specifications().iter().any(|spec| {
                spec.resource_type() == Some(&ResourceType::TrafficMirrorSession)
                    && spec
                        .tags()
                        .iter()
                        .any(|t| t.key() == Some(OWNER_TAG_KEY) && t.value() == Some("owner"))
            });
            tagged
                && req.client_token() == Some("token-eni-1")
                && req.session_number() == Some(1)
                && req.virtual_network_id() == Some(42)
                && req.packet_length().is_none()
                && req.network_interface_id() == Some("eni-1")
        })
        .then_output(|| created("tms-new"));
    let ec2 = ec2(RuleMode::Sequential, &[&rule]);
    let id = ec2.create_session(&new_session("eni-1")).await.unwrap();
    assert_eq!(id, "tms-new");
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn modify_removes_the_packet_length_when_the_spec_has_none() {
    let rule = mock!(aws_sdk_ec2::Client::modify_traffic_mirror_session)
        .match_requests(|req| {
            req.remove_fields() == [TrafficMirrorSessionField::PacketLength]
                && req.packet_length().is_none()
                && req.virtual_network_id() == Some(7)
        })
        .then_output(|| ModifyTrafficMirrorSessionOutput::builder().build());
    let ec2 = ec2(RuleMode::Sequential, &[&rule]);
    ec2.modify_session(&ModifySession {
        session_id: "tms-1".into(),
        eni_id: "eni-1".into(),
        number: 1,
        changes: vec![
            Change::Vni {
                from: Some(99),
                to: 7,
            },
            Change::PacketLength {
                from: Some(100),
                to: None,
            },
        ],
    })
    .await
    .unwrap();
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn deleting_a_session_that_is_already_gone_succeeds() {
    let rule = mock!(aws_sdk_ec2::Client::delete_traffic_mirror_session).then_http_response(|| {
        ec2_error(
            400,
            "InvalidTrafficMirrorSessionId.NotFound",
            "The traffic mirror session 'tms-1' does not exist.",
        )
    });
    let ec2 = ec2(RuleMode::Sequential, &[&rule]);
    ec2.delete_session(&DeleteSession {
        session_id: "tms-1".into(),
        eni_id: "eni-1".into(),
        number: 1,
        reason: DeleteReason::EniGone,
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_eni_deleted_mid_run_fails_alone_and_the_run_succeeds() {
    let targets = mock!(aws_sdk_ec2::Client::describe_traffic_mirror_targets)
        .then_output(|| DescribeTrafficMirrorTargetsOutput::builder().build());
    let enis = mock!(aws_sdk_ec2::Client::describe_network_interfaces).then_output(|| {
        DescribeNetworkInterfacesOutput::builder()
            .network_interfaces(tagged_eni("eni-gone"))
            .network_interfaces(tagged_eni("eni-ok"))
            .build()
    });
    let instances = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| DescribeInstancesOutput::builder().build());
    let sessions = mock!(aws_sdk_ec2::Client::describe_traffic_mirror_sessions)
        .then_output(|| DescribeTrafficMirrorSessionsOutput::builder().build());
    let create_gone = mock!(aws_sdk_ec2::Client::create_traffic_mirror_session)
        .match_requests(|req| req.network_interface_id() == Some("eni-gone"))
        .then_http_response(|| {
            ec2_error(
                400,
                "InvalidNetworkInterfaceID.NotFound",
                "The networkInterface ID 'eni-gone' does not exist",
            )
        });
    let create_ok = mock!(aws_sdk_ec2::Client::create_traffic_mirror_session)
        .match_requests(|req| req.network_interface_id() == Some("eni-ok"))
        .then_output(|| created("tms-ok"));
    let ec2 = ec2(
        RuleMode::MatchAny,
        &[
            &targets,
            &enis,
            &instances,
            &sessions,
            &create_gone,
            &create_ok,
        ],
    );
    let report = handlers::reconcile(
        &ec2,
        &MirrorRun::new("reconcile-mirrors", settings(&[])),
        sample_event("scheduled.json"),
    )
    .await
    .expect("a gone ENI is not retryable: the run succeeds");
    assert_eq!(report.created.count, 1);
    assert_eq!(report.created.items[0].eni_id, "eni-ok");
    assert_eq!(report.errors_by_class.get(&ErrorClass::EniGone), Some(&1));
    assert_eq!(report.errors.items[0].eni_id, "eni-gone");
    assert_eq!((create_gone.num_calls(), create_ok.num_calls()), (1, 1));
}

#[tokio::test]
async fn set_desired_capacity_sends_the_honor_cooldown_it_is_given() {
    let describe =
        mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
            DescribeAutoScalingGroupsOutput::builder()
                .auto_scaling_groups(
                    aws_sdk_autoscaling::types::AutoScalingGroup::builder()
                        .auto_scaling_group_name("rebuilders")
                        .min_size(1)
                        .max_size(5)
                        .desired_capacity(2)
                        .tags(
                            aws_sdk_autoscaling::types::TagDescription::builder()
                                .key("mirrorfleet:scale-in-history")
                                .value("1:2")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let scale_out = mock!(aws_sdk_autoscaling::Client::set_desired_capacity)
        .match_requests(|req| {
            req.honor_cooldown() == Some(false)
                && req.desired_capacity() == Some(3)
                && req.auto_scaling_group_name() == Some("rebuilders")
        })
        .then_output(|| SetDesiredCapacityOutput::builder().build());
    let scale_in = mock!(aws_sdk_autoscaling::Client::set_desired_capacity)
        .match_requests(|req| {
            req.honor_cooldown() == Some(true) && req.desired_capacity() == Some(1)
        })
        .then_output(|| SetDesiredCapacityOutput::builder().build());
    let fleet = mocks::autoscaling(&[&describe, &scale_out, &scale_in]);
    let group = fleet.describe_group("rebuilders").await.unwrap().unwrap();
    assert_eq!(
        (group.min_size, group.max_size, group.desired_capacity),
        (1, 5, 2)
    );
    assert_eq!(
        group
            .tags
            .get("mirrorfleet:scale-in-history")
            .map(String::as_str),
        Some("1:2")
    );
    fleet
        .set_desired_capacity("rebuilders", 3, false)
        .await
        .unwrap();
    fleet
        .set_desired_capacity("rebuilders", 1, true)
        .await
        .unwrap();
    assert_eq!((scale_out.num_calls(), scale_in.num_calls()), (1, 1));
}
