//! SDK clients from the standard environment: region, credentials and `AWS_ENDPOINT_URL`
//! (a moto server in tests) are read by aws-config. Standard retry mode with backoff; more
//! attempts than the default because EC2's mutating calls share small rate buckets.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;

use crate::ec2::SdkEc2;
use crate::fleet::SdkFleet;

/// Attempts per call (first try included) before a throttling error reaches the handler.
pub const MAX_ATTEMPTS: u32 = 6;

/// The shared SDK configuration.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .load()
        .await
}

pub fn ec2(config: &aws_config::SdkConfig) -> SdkEc2 {
    SdkEc2::new(aws_sdk_ec2::Client::new(config))
}

pub fn fleet(config: &aws_config::SdkConfig) -> SdkFleet {
    SdkFleet::new(aws_sdk_autoscaling::Client::new(config))
}
