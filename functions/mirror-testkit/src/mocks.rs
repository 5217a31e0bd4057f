//! SDK clients whose HTTP is answered by aws-smithy-mocks rules, for the faults moto cannot
//! produce. Errors are real EC2 error documents (HTTP status + XML body) so the SDK's own
//! deserialisation and retry classification run, not a shortcut.
//!
//! The clients are built by hand (mock HTTP client + interceptor) so that aws-sdk-ec2 needs
//! no `test-util` feature and is compiled once for build and test.

use std::time::Duration;

use aws_sdk_ec2::operation::create_traffic_mirror_session::CreateTrafficMirrorSessionOutput;
use aws_sdk_ec2::types::{NetworkInterface, Tag, TrafficMirrorSession};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client};
use aws_smithy_runtime_api::http::{Response as HttpResponse, StatusCode};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::RetryConfig;
use mirror_aws::ec2::SdkEc2;
use mirror_aws::fleet::SdkFleet;

use crate::settings::ENI_TAG;

/// Attempts per call (first try included) of the mocked clients.
pub const ATTEMPTS: u32 = 4;

/// Standard retries, [`ATTEMPTS`] attempts, millisecond backoff.
pub fn fast_retry() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5))
}

fn interceptor(mode: RuleMode, rules: &[&Rule]) -> MockResponseInterceptor {
    rules
        .iter()
        .fold(MockResponseInterceptor::new().rule_mode(mode), |i, rule| {
            i.with_rule(rule)
        })
}

/// The adapter on an EC2 client answered by `rules`.
pub fn ec2(mode: RuleMode, rules: &[&Rule]) -> SdkEc2 {
    SdkEc2::new(test_client!(
        aws_sdk_ec2
            .http_client(create_mock_http_client())
            .interceptor(interceptor(mode, rules))
            .retry_config(fast_retry())
    ))
}

/// The adapter on an Auto Scaling client answered by `rules` (any order).
pub fn autoscaling(rules: &[&Rule]) -> SdkFleet {
    SdkFleet::new(test_client!(
        aws_sdk_autoscaling
            .http_client(create_mock_http_client())
            .interceptor(interceptor(RuleMode::MatchAny, rules))
            .retry_config(fast_retry())
    ))
}

/// An EC2 error document as the API returns it.
pub fn ec2_error(status: u16, code: &str, message: &str) -> HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>5f0e6b8c-test</RequestID></Response>"
    );
    HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body))
}

/// An ENI carrying [`ENI_TAG`], as DescribeNetworkInterfaces lists it.
pub fn tagged_eni(id: &str) -> NetworkInterface {
    NetworkInterface::builder()
        .network_interface_id(id)
        .subnet_id("subnet-1")
        .vpc_id("vpc-1")
        .tag_set(Tag::builder().key(ENI_TAG.0).value(ENI_TAG.1).build())
        .build()
}

/// The answer of a create that made `session`.
pub fn created(session: &str) -> CreateTrafficMirrorSessionOutput {
    CreateTrafficMirrorSessionOutput::builder()
        .traffic_mirror_session(
            TrafficMirrorSession::builder()
                .traffic_mirror_session_id(session)
                .build(),
        )
        .build()
}
