//! The control plane's test kit: one place for everything the control-plane tests start, fake
//! or seed, used by the adapter tests, the Lambda binaries' moto tests, the reconcile benchmark
//! and the system tests.
//!
//! Real components, started by the test on 127.0.0.1 and free ports, stopped on drop:
//! - [`prereq`]: finding moto and cargo-lambda, under the project's one skip-or-fail policy
//!   (`rebuilder_testkit::system`; `MIRRORFLEET_REQUIRE_SYSTEM=1` turns a missing tool into a
//!   failure), whose scratch directories, child-process guards and free ports the kit uses too;
//! - [`moto`]: a moto server with the documented AWS behaviours moto lacks (`moto_aws.py`);
//! - [`runtime_api`]: `cargo lambda watch --only-lambda-apis` (the Lambda Runtime API) and a
//!   Lambda binary polling it, invoked with `cargo lambda invoke --data-file`;
//! - [`harness`]: the three together, per test;
//! - [`events`]: the sample events of `events/`, with ids replaced;
//! - [`response_url`]: the presigned URL a custom resource answers to, as a local server;
//! - [`settings`]: the settings the tests give the functions.
//!
//! With the `aws` feature (the SDK side):
//! - [`seed`]: a VPC, subnets, an NLB mirror target and a filter created in moto through the
//!   Rust SDK, and ENIs, instances, sessions and groups on demand;
//! - [`fake_ec2`]: an in-memory EC2 behind `mirror_aws::Ec2Api`, its rules those of
//!   [`mirror::sim`] (ClientToken, 3 sessions per ENI, unique numbers, the ENI must exist), with
//!   a call log, injected failures and seeded interleavings;
//! - [`fake_fleet`]: an in-memory Auto Scaling group behind `mirror_aws::FleetApi`;
//! - [`fake_store`]: in-memory S3 objects and CloudWatch traffic behind
//!   `mirror_aws::{ObjectStore, MetricsApi}`;
//! - [`mocks`]: SDK clients answered by aws-smithy-mocks rules (real EC2 error documents).

/// A client of the SDK crate `$sdk` in [`settings::REGION`] with static test credentials; the
/// tokens after it continue the config builder (`.endpoint_url(..)`, `.http_client(..)`, ...).
/// The calling crate names the SDK crate, so it depends on it.
#[macro_export]
macro_rules! test_client {
    ($sdk:ident $($builder:tt)*) => {{
        use $sdk::config::{BehaviorVersion, Credentials, Region};
        let config = $sdk::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new($crate::settings::REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            $($builder)*
            .build();
        $sdk::Client::from_conf(config)
    }};
}

pub mod events;
pub mod harness;
pub mod moto;
pub mod prereq;
pub mod response_url;
pub mod runtime_api;
pub mod settings;

#[cfg(feature = "aws")]
pub mod fake_ec2;
#[cfg(feature = "aws")]
pub mod fake_fleet;
#[cfg(feature = "aws")]
pub mod fake_store;
#[cfg(feature = "aws")]
pub mod mocks;
#[cfg(feature = "aws")]
pub mod seed;

/// The SDK crates, for tests that name their types.
#[cfg(feature = "aws")]
pub mod sdk {
    pub use aws_sdk_autoscaling as autoscaling;
    pub use aws_sdk_cloudwatch as cloudwatch;
    pub use aws_sdk_ec2 as ec2;
    pub use aws_sdk_elasticloadbalancingv2 as elbv2;
    pub use aws_sdk_s3 as s3;
}

pub use events::{eni_event, event_for, instance_event, sample_event};
pub use harness::{Harness, scratch};
pub use moto::Moto;
pub use prereq::{Tools, require_system, tools, workspace_root};
pub use rebuilder_testkit::system::TempDir;
pub use response_url::{Caught, ResponseUrl};
pub use runtime_api::{Function, RuntimeApi};
pub use settings::{ENI_TAG, INSTANCE_TAG, OWNER, REGION, VNI};

#[cfg(feature = "aws")]
pub use fake_ec2::{Call, Ec2World, FakeEc2};
#[cfg(feature = "aws")]
pub use fake_fleet::FakeFleet;
#[cfg(feature = "aws")]
pub use fake_store::{FakeMetrics, FakeStore};
#[cfg(feature = "aws")]
pub use seed::{Seed, group_state, is_owned};
