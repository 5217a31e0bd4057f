//! SDK clients from the standard environment: region, credentials and `AWS_ENDPOINT_URL`
//! (a moto server in tests) are read by aws-config. Standard retry mode with backoff; more
//! attempts than the default because EC2's mutating calls share small rate buckets.
//!
//! Timeouts: the SDK's defaults bound only the TCP connect, so an endpoint that accepts the
//! connection and never answers would hold a run until Lambda kills it (no report, no
//! metrics). Each attempt is bounded (then retried like any transient failure) and so is each
//! operation with its retries, well inside the functions' 60 s Lambda timeout: a hung call
//! becomes an `Other/Timeout` failure of that ENI (or of the observation), the run reports,
//! and the function returns an error so that Lambda retries it.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::ec2::SdkEc2;
use crate::fleet::SdkFleet;
use crate::metrics::SdkMetrics;
use crate::store::SdkStore;

/// Attempts per call (first try included) before a throttling error reaches the handler.
pub const MAX_ATTEMPTS: u32 = 6;
/// TCP connect timeout (the SDK's default).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);
/// One attempt of one call (describe pages of 1,000 items answer in well under a second).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// One call, retries and backoff included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(25);

/// The timeouts every client uses.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The shared SDK configuration.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .timeout_config(timeouts())
        .load()
        .await
}

pub fn ec2(config: &aws_config::SdkConfig) -> SdkEc2 {
    SdkEc2::new(aws_sdk_ec2::Client::new(config))
}

pub fn fleet(config: &aws_config::SdkConfig) -> SdkFleet {
    SdkFleet::new(aws_sdk_autoscaling::Client::new(config))
}

/// S3 with path-style addressing when an endpoint override is set (a local S3 stand-in has no
/// `bucket.host` DNS names); virtual-hosted style, the default, on AWS.
pub fn store(config: &aws_config::SdkConfig) -> SdkStore {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(config.endpoint_url().is_some())
        .build();
    SdkStore::new(aws_sdk_s3::Client::from_conf(s3))
}

pub fn metrics(config: &aws_config::SdkConfig) -> SdkMetrics {
    SdkMetrics::new(aws_sdk_cloudwatch::Client::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_bounded_inside_the_lambda_timeout() {
        let t = timeouts();
        assert_eq!(t.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(t.operation_timeout(), Some(OPERATION_TIMEOUT));
        assert_eq!(t.connect_timeout(), Some(CONNECT_TIMEOUT));
        // onboard-eni / reconcile-mirrors run with Timeout: 60 (template.yaml).
        assert!(OPERATION_TIMEOUT < Duration::from_secs(60));
        assert!(ATTEMPT_TIMEOUT < OPERATION_TIMEOUT);
    }
}
