//! The base world of a moto test, created through the Rust SDK: a VPC, two subnets, an
//! internal NLB with a UDP/4789 listener, the mirror target on it and a filter; then ENIs,
//! instances, sessions and Auto Scaling groups on demand.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    Filter, InstanceType, ResourceType, Tag, TagSpecification, TrafficMirrorSession,
};
use mirror::model::OWNER_TAG_KEY;
use mirror::settings::{MirrorSettings, ReconcileSettings};
use mirror_aws::fleet::{FleetApi, SdkFleet};

use crate::moto::Moto;
use crate::settings::{OWNER, mirror_env, mirror_settings, reconcile_settings};

fn tag_spec(resource: ResourceType, tags: &[(&str, &str)]) -> Option<Vec<TagSpecification>> {
    if tags.is_empty() {
        return None;
    }
    Some(vec![
        TagSpecification::builder()
            .resource_type(resource)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .build(),
    ])
}

/// The base world: a VPC, two subnets, an internal NLB with a UDP/4789 listener, the mirror
/// target on it, and a filter.
pub struct Seed {
    pub ec2: aws_sdk_ec2::Client,
    pub vpc_id: String,
    pub subnets: Vec<String>,
    pub nlb_arn: String,
    pub target_id: String,
    pub filter_id: String,
}

impl Seed {
    pub async fn create(moto: &Moto) -> Seed {
        let ec2 = moto.ec2();
        let vpc_id = ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .send()
            .await
            .expect("create VPC")
            .vpc()
            .and_then(|v| v.vpc_id())
            .expect("VPC id")
            .to_owned();
        let mut subnets = Vec::new();
        for (i, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
            let out = ec2
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(format!("10.0.{}.0/20", i * 16))
                .availability_zone(*az)
                .send()
                .await
                .expect("create subnet");
            subnets.push(out.subnet().and_then(|s| s.subnet_id()).unwrap().to_owned());
        }
        let elb = moto.elbv2();
        use aws_sdk_elasticloadbalancingv2::types::{
            Action, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, ProtocolEnum,
        };
        let nlb_arn = elb
            .create_load_balancer()
            .name("mirrorfleet-target")
            .r#type(LoadBalancerTypeEnum::Network)
            .scheme(LoadBalancerSchemeEnum::Internal)
            .set_subnets(Some(subnets.clone()))
            .send()
            .await
            .expect("create NLB")
            .load_balancers()
            .first()
            .and_then(|l| l.load_balancer_arn())
            .expect("NLB ARN")
            .to_owned();
        let tg_arn = elb
            .create_target_group()
            .name("mirrorfleet-rebuilders")
            .protocol(ProtocolEnum::Udp)
            .port(4789)
            .vpc_id(&vpc_id)
            .health_check_protocol(ProtocolEnum::Tcp)
            .health_check_port("8080")
            .send()
            .await
            .expect("create target group")
            .target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
            .expect("target group ARN")
            .to_owned();
        elb.create_listener()
            .load_balancer_arn(&nlb_arn)
            .protocol(ProtocolEnum::Udp)
            .port(4789)
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(&tg_arn)
                    .build(),
            )
            .send()
            .await
            .expect("create UDP listener");
        let target_id = ec2
            .create_traffic_mirror_target()
            .network_load_balancer_arn(&nlb_arn)
            .description("mirrorfleet rebuilders")
            .send()
            .await
            .expect("create mirror target")
            .traffic_mirror_target()
            .and_then(|t| t.traffic_mirror_target_id())
            .expect("target id")
            .to_owned();
        let filter_id = ec2
            .create_traffic_mirror_filter()
            .description("mirrorfleet http")
            .send()
            .await
            .expect("create mirror filter")
            .traffic_mirror_filter()
            .and_then(|f| f.traffic_mirror_filter_id())
            .expect("filter id")
            .to_owned();
        Seed {
            ec2,
            vpc_id,
            subnets,
            nlb_arn,
            target_id,
            filter_id,
        }
    }

    /// The settings of onboard-eni / reconcile-mirrors for this world, with `extra` added or
    /// replacing.
    pub fn mirror_env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        mirror_env(&self.target_id, &self.filter_id, extra)
    }

    /// [`Seed::mirror_env`] parsed, for handlers run in-process.
    pub fn mirror_settings(&self, extra: &[(&str, &str)]) -> MirrorSettings {
        mirror_settings(&self.target_id, &self.filter_id, extra)
    }

    /// reconcile-mirrors' settings for this world with `extra`.
    pub fn reconcile_settings(&self, extra: &[(&str, &str)]) -> ReconcileSettings {
        reconcile_settings(&self.target_id, &self.filter_id, extra)
    }

    /// A versioned bucket, as the stack creates for the source map.
    pub async fn bucket(&self, s3: &aws_sdk_s3::Client, name: &str) {
        s3.create_bucket()
            .bucket(name)
            .send()
            .await
            .expect("create bucket");
        s3.put_bucket_versioning()
            .bucket(name)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .expect("enable versioning");
    }

    /// The body and version count of `s3://bucket/key` (`None`: no such object).
    pub async fn object(
        &self,
        s3: &aws_sdk_s3::Client,
        bucket: &str,
        key: &str,
    ) -> Option<(Vec<u8>, usize)> {
        let body = s3.get_object().bucket(bucket).key(key).send().await.ok()?;
        let body = body.body.collect().await.ok()?.into_bytes().to_vec();
        let versions = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(key)
            .send()
            .await
            .expect("list object versions")
            .versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .count();
        Some((body, versions))
    }

    /// One per-minute `Sum` datapoint of `metric` for the group `asg` in `namespace`, at the
    /// start of the minute `minutes_ago` complete minutes before now (as the rebuilders' agent
    /// publishes them).
    pub async fn put_fleet_metric(
        &self,
        cw: &aws_sdk_cloudwatch::Client,
        namespace: &str,
        asg: &str,
        metric: &str,
        minutes_ago: u64,
        value: f64,
    ) {
        use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let minute = (now / 60 - minutes_ago) * 60;
        cw.put_metric_data()
            .namespace(namespace)
            .metric_data(
                MetricDatum::builder()
                    .metric_name(metric)
                    .dimensions(
                        Dimension::builder()
                            .name("AutoScalingGroupName")
                            .value(asg)
                            .build(),
                    )
                    .timestamp(aws_smithy_types::DateTime::from_secs(minute as i64))
                    .value(value)
                    .unit(StandardUnit::Count)
                    .build(),
            )
            .send()
            .await
            .expect("put metric data");
    }

    /// A standalone ENI in subnet `subnet` (index) with `tags`.
    pub async fn eni(&self, subnet: usize, tags: &[(&str, &str)]) -> String {
        self.eni_described(subnet, "app", tags).await
    }

    /// A standalone ENI with this description (a load balancer's ENIs read
    /// `ELB <type>/<name>/<id>`; moto creates none for its load balancers).
    pub async fn eni_described(
        &self,
        subnet: usize,
        description: &str,
        tags: &[(&str, &str)],
    ) -> String {
        self.ec2
            .create_network_interface()
            .subnet_id(&self.subnets[subnet % self.subnets.len()])
            .description(description)
            .set_tag_specifications(tag_spec(ResourceType::NetworkInterface, tags))
            .send()
            .await
            .expect("create ENI")
            .network_interface()
            .and_then(|n| n.network_interface_id())
            .expect("ENI id")
            .to_owned()
    }

    /// Attach `eni` to `instance` as its device `index`.
    pub async fn attach(&self, eni: &str, instance: &str, index: i32) {
        self.ec2
            .attach_network_interface()
            .network_interface_id(eni)
            .instance_id(instance)
            .device_index(index)
            .send()
            .await
            .expect("attach ENI");
    }

    /// A running instance with `tags`; returns its id and its primary ENI.
    pub async fn instance(&self, tags: &[(&str, &str)]) -> (String, String) {
        self.instance_of_type(InstanceType::M5Large, tags).await
    }

    /// A running instance of `instance_type` with `tags`; returns its id and its primary ENI.
    pub async fn instance_of_type(
        &self,
        instance_type: InstanceType,
        tags: &[(&str, &str)],
    ) -> (String, String) {
        let out = self
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(instance_type)
            .min_count(1)
            .max_count(1)
            .subnet_id(&self.subnets[0])
            .set_tag_specifications(tag_spec(ResourceType::Instance, tags))
            .send()
            .await
            .expect("run instance");
        let i = out.instances().first().expect("one instance");
        let id = i.instance_id().expect("instance id").to_owned();
        let eni = i
            .network_interfaces()
            .first()
            .and_then(|n| n.network_interface_id())
            .expect("primary ENI")
            .to_owned();
        (id, eni)
    }

    /// A session not created by us (no owner tag, or another owner).
    pub async fn foreign_session(&self, eni: &str, number: i32, owner: Option<&str>) -> String {
        let tags: Vec<(&str, &str)> = owner.map(|o| vec![(OWNER_TAG_KEY, o)]).unwrap_or_default();
        self.ec2
            .create_traffic_mirror_session()
            .network_interface_id(eni)
            .traffic_mirror_target_id(&self.target_id)
            .traffic_mirror_filter_id(&self.filter_id)
            .session_number(number)
            .virtual_network_id(99)
            .set_tag_specifications(tag_spec(ResourceType::TrafficMirrorSession, &tags))
            .send()
            .await
            .expect("create foreign session")
            .traffic_mirror_session()
            .and_then(|s| s.traffic_mirror_session_id())
            .expect("session id")
            .to_owned()
    }

    /// Every session on `eni`.
    pub async fn sessions_on(&self, eni: &str) -> Vec<TrafficMirrorSession> {
        self.ec2
            .describe_traffic_mirror_sessions()
            .filters(
                Filter::builder()
                    .name("network-interface-id")
                    .values(eni)
                    .build(),
            )
            .send()
            .await
            .expect("describe sessions")
            .traffic_mirror_sessions()
            .to_vec()
    }

    /// Every session in moto (all pages).
    pub async fn all_sessions(&self) -> Vec<TrafficMirrorSession> {
        let mut out = Vec::new();
        let mut pages = self
            .ec2
            .describe_traffic_mirror_sessions()
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            out.extend(
                page.expect("describe sessions")
                    .traffic_mirror_sessions()
                    .to_vec(),
            );
        }
        out
    }

    /// Change a session's VNI behind our back (drift).
    pub async fn set_session_vni(&self, session_id: &str, vni: i32) {
        self.ec2
            .modify_traffic_mirror_session()
            .traffic_mirror_session_id(session_id)
            .virtual_network_id(vni)
            .send()
            .await
            .expect("modify session");
    }

    /// An Auto Scaling group for the rebuilder fleet (launch configuration included).
    pub async fn fleet_group(
        &self,
        asg: &aws_sdk_autoscaling::Client,
        name: &str,
        min: i32,
        max: i32,
        desired: i32,
    ) {
        asg.create_launch_configuration()
            .launch_configuration_name(format!("{name}-lc"))
            .image_id("ami-12c6146b")
            .instance_type("c5.large")
            .send()
            .await
            .expect("create launch configuration");
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_configuration_name(format!("{name}-lc"))
            .min_size(min)
            .max_size(max)
            .desired_capacity(desired)
            .vpc_zone_identifier(self.subnets.join(","))
            .send()
            .await
            .expect("create auto scaling group");
    }

    pub async fn add_tag(&self, resource: &str, key: &str, value: &str) {
        self.ec2
            .create_tags()
            .resources(resource)
            .tags(Tag::builder().key(key).value(value).build())
            .send()
            .await
            .expect("create tag");
    }

    pub async fn remove_tag(&self, resource: &str, key: &str) {
        self.ec2
            .delete_tags()
            .resources(resource)
            .tags(Tag::builder().key(key).build())
            .send()
            .await
            .expect("delete tag");
    }
}

/// The group's desired capacity and its tags, read through the adapter.
pub async fn group_state(
    asg: &aws_sdk_autoscaling::Client,
    name: &str,
) -> (u32, BTreeMap<String, String>) {
    let group = SdkFleet::new(asg.clone())
        .describe_group(name)
        .await
        .expect("describe auto scaling groups")
        .expect("the group exists");
    (group.desired_capacity, group.tags)
}

/// True when the session carries our owner tag.
pub fn is_owned(s: &TrafficMirrorSession) -> bool {
    s.tags()
        .iter()
        .any(|t| t.key() == Some(OWNER_TAG_KEY) && t.value() == Some(OWNER))
}
