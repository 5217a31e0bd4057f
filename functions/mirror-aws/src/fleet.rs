//! The rebuilder Auto Scaling group behind a small trait: read it, set its desired capacity,
//! and keep the scale-in hysteresis state on the group itself (the tag
//! [`mirror::capacity::SCALE_IN_HISTORY_TAG`]): it survives cold starts and concurrent
//! invocations need no other store, and an operator sees it next to the group.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_autoscaling::types::Tag;
use mirror::report::ErrorClass;

use crate::error::AwsError;

/// What size-fleet needs to know about the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub min_size: u32,
    pub max_size: u32,
    pub desired_capacity: u32,
    pub tags: BTreeMap<String, String>,
}

pub trait FleetApi: Send + Sync + 'static {
    /// `DescribeAutoScalingGroups` for one group; `Ok(None)` when it does not exist.
    fn describe_group(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Group>, AwsError>> + Send;
    /// `SetDesiredCapacity`, with `HonorCooldown` as given (false: the change is not held
    /// for the group's cooldown, "By default, Amazon EC2 Auto Scaling does not honor the
    /// cooldown period during manual scaling activities", SetDesiredCapacity).
    fn set_desired_capacity(
        &self,
        name: &str,
        desired: u32,
        honor_cooldown: bool,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `CreateOrUpdateTags` for one tag on the group (not propagated to instances).
    fn put_group_tag(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// [`FleetApi`] on aws-sdk-autoscaling.
#[derive(Clone, Debug)]
pub struct SdkFleet {
    client: aws_sdk_autoscaling::Client,
}

impl SdkFleet {
    pub fn new(client: aws_sdk_autoscaling::Client) -> Self {
        SdkFleet { client }
    }
}

fn to_u32(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

impl FleetApi for SdkFleet {
    async fn describe_group(&self, name: &str) -> Result<Option<Group>, AwsError> {
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeAutoScalingGroups", &e))?;
        Ok(out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
            .map(|g| Group {
                name: name.to_owned(),
                min_size: to_u32(g.min_size()),
                max_size: to_u32(g.max_size()),
                desired_capacity: to_u32(g.desired_capacity()),
                tags: g
                    .tags()
                    .iter()
                    .filter_map(|t| {
                        Some((
                            t.key()?.to_owned(),
                            t.value().unwrap_or_default().to_owned(),
                        ))
                    })
                    .collect(),
            }))
    }

    async fn set_desired_capacity(
        &self,
        name: &str,
        desired: u32,
        honor_cooldown: bool,
    ) -> Result<(), AwsError> {
        let desired = i32::try_from(desired).map_err(|_| {
            AwsError::new(
                ErrorClass::InvalidRequest,
                "SetDesiredCapacity",
                "InvalidParameterValue",
                format!("desired capacity {desired} out of range"),
            )
        })?;
        self.client
            .set_desired_capacity()
            .auto_scaling_group_name(name)
            .desired_capacity(desired)
            .honor_cooldown(honor_cooldown)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("SetDesiredCapacity", &e))
    }

    async fn put_group_tag(&self, name: &str, key: &str, value: &str) -> Result<(), AwsError> {
        self.client
            .create_or_update_tags()
            .tags(
                Tag::builder()
                    .resource_id(name)
                    .resource_type("auto-scaling-group")
                    .key(key)
                    .value(value)
                    .propagate_at_launch(false)
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("CreateOrUpdateTags", &e))
    }
}
