//! EC2 behind a small trait: the describes the observer needs (server-side filters, paginated)
//! and the three session writes the applier needs. [`SdkEc2`] implements it with aws-sdk-ec2;
//! tests implement it with fakes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_ec2::types::{self as sdk, ResourceType, TagSpecification, TrafficMirrorSessionField};
use mirror::filters::Filter;
use mirror::model::{Eni, Instance, MirrorTarget, Session, Tags};

use crate::error::AwsError;

/// EC2 allows at most this many values in one filter.
pub const MAX_FILTER_VALUES: usize = 200;
/// Page size for every describe (the API maximum for these operations).
pub const PAGE_SIZE: i32 = 1000;

/// A session to create (the planner decided number, token and tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub eni_id: String,
    pub target_id: String,
    pub filter_id: String,
    pub number: u32,
    pub vni: u32,
    pub packet_length: Option<u32>,
    pub client_token: String,
    pub tags: Tags,
}

/// Bring an existing session back to the spec. `packet_length: None` removes the field
/// (whole packets), it does not leave it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUpdate {
    pub session_id: String,
    pub target_id: Option<String>,
    pub filter_id: Option<String>,
    pub vni: Option<u32>,
    pub packet_length: PacketLengthChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketLengthChange {
    Keep,
    Set(u32),
    Remove,
}

/// The EC2 operations the control plane uses.
pub trait Ec2Api: Send + Sync + 'static {
    /// `DescribeNetworkInterfaces` with these server-side filters, every page.
    fn describe_network_interfaces(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = Result<Vec<Eni>, AwsError>> + Send;
    /// `DescribeInstances` with these server-side filters, every page.
    fn describe_instances(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = Result<Vec<Instance>, AwsError>> + Send;
    /// `DescribeTrafficMirrorSessions` with these server-side filters, every page.
    fn describe_sessions(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = Result<Vec<Session>, AwsError>> + Send;
    /// `DescribeTrafficMirrorTargets`, every page.
    fn describe_targets(&self) -> impl Future<Output = Result<Vec<MirrorTarget>, AwsError>> + Send;
    /// `CreateTrafficMirrorSession`; returns the new session's id.
    fn create_session(
        &self,
        req: NewSession,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// `DeleteTrafficMirrorSession`. A session that is already gone is not an error.
    fn delete_session(
        &self,
        session_id: String,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `ModifyTrafficMirrorSession`.
    fn modify_session(
        &self,
        req: SessionUpdate,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

impl<T: Ec2Api> Ec2Api for Arc<T> {
    fn describe_network_interfaces(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = Result<Vec<Eni>, AwsError>> + Send {
        (**self).describe_network_interfaces(filters)
    }
    fn describe_instances(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = Result<Vec<Instance>, AwsError>> + Send {
        (**self).describe_instances(filters)
    }
    fn describe_sessions(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = Result<Vec<Session>, AwsError>> + Send {
        (**self).describe_sessions(filters)
    }
    fn describe_targets(&self) -> impl Future<Output = Result<Vec<MirrorTarget>, AwsError>> + Send {
        (**self).describe_targets()
    }
    fn create_session(
        &self,
        req: NewSession,
    ) -> impl Future<Output = Result<String, AwsError>> + Send {
        (**self).create_session(req)
    }
    fn delete_session(
        &self,
        session_id: String,
    ) -> impl Future<Output = Result<(), AwsError>> + Send {
        (**self).delete_session(session_id)
    }
    fn modify_session(
        &self,
        req: SessionUpdate,
    ) -> impl Future<Output = Result<(), AwsError>> + Send {
        (**self).modify_session(req)
    }
}

/// Split `values` into filters of at most [`MAX_FILTER_VALUES`] values each (one describe per
/// returned filter).
pub fn chunked_filters(name: &str, values: &[String]) -> Vec<Filter> {
    values
        .chunks(MAX_FILTER_VALUES)
        .map(|chunk| Filter::new(name, chunk.iter().cloned()))
        .collect()
}

/// API calls made, by operation (one per page or write, retries by the SDK not included).
#[derive(Debug, Default)]
pub struct ApiCalls {
    pub describe_network_interfaces: AtomicU64,
    pub describe_instances: AtomicU64,
    pub describe_sessions: AtomicU64,
    pub describe_targets: AtomicU64,
    pub create_session: AtomicU64,
    pub delete_session: AtomicU64,
    pub modify_session: AtomicU64,
}

impl ApiCalls {
    /// `(operation, calls)` pairs, in a fixed order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            (
                "DescribeNetworkInterfaces",
                self.describe_network_interfaces.load(Ordering::Relaxed),
            ),
            (
                "DescribeInstances",
                self.describe_instances.load(Ordering::Relaxed),
            ),
            (
                "DescribeTrafficMirrorSessions",
                self.describe_sessions.load(Ordering::Relaxed),
            ),
            (
                "DescribeTrafficMirrorTargets",
                self.describe_targets.load(Ordering::Relaxed),
            ),
            (
                "CreateTrafficMirrorSession",
                self.create_session.load(Ordering::Relaxed),
            ),
            (
                "DeleteTrafficMirrorSession",
                self.delete_session.load(Ordering::Relaxed),
            ),
            (
                "ModifyTrafficMirrorSession",
                self.modify_session.load(Ordering::Relaxed),
            ),
        ]
    }

    pub fn total(&self) -> u64 {
        self.snapshot().iter().map(|(_, n)| n).sum()
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// [`Ec2Api`] on aws-sdk-ec2.
#[derive(Clone, Debug)]
pub struct SdkEc2 {
    client: aws_sdk_ec2::Client,
    calls: Arc<ApiCalls>,
}

impl SdkEc2 {
    pub fn new(client: aws_sdk_ec2::Client) -> Self {
        SdkEc2 {
            client,
            calls: Arc::new(ApiCalls::default()),
        }
    }

    pub fn calls(&self) -> &ApiCalls {
        &self.calls
    }
}

fn sdk_filters(filters: Vec<Filter>) -> Option<Vec<sdk::Filter>> {
    if filters.is_empty() {
        return None;
    }
    Some(
        filters
            .into_iter()
            .map(|f| {
                sdk::Filter::builder()
                    .name(f.name)
                    .set_values(Some(f.values))
                    .build()
            })
            .collect(),
    )
}

fn tags(tags: &[sdk::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn owned(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

fn to_u32(v: Option<i32>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

fn to_i32(op: &'static str, field: &'static str, v: u32) -> Result<i32, AwsError> {
    i32::try_from(v).map_err(|_| AwsError::Other {
        op,
        code: "InvalidParameterValue".into(),
        message: format!("{field} {v} does not fit the API's integer"),
    })
}

pub fn eni_from_sdk(ni: &sdk::NetworkInterface) -> Eni {
    Eni {
        id: owned(ni.network_interface_id()),
        subnet_id: owned(ni.subnet_id()),
        vpc_id: owned(ni.vpc_id()),
        availability_zone: ni.availability_zone().map(str::to_owned),
        interface_type: ni
            .interface_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_else(|| "interface".to_owned()),
        description: owned(ni.description()),
        status: ni.status().map(|s| s.as_str().to_owned()),
        requester_id: ni.requester_id().map(str::to_owned),
        requester_managed: ni.requester_managed(),
        attachment_instance_id: ni
            .attachment()
            .and_then(|a| a.instance_id())
            .map(str::to_owned),
        attachment_instance_owner_id: ni
            .attachment()
            .and_then(|a| a.instance_owner_id())
            .map(str::to_owned),
        tags: tags(ni.tag_set()),
    }
}

pub fn instance_from_sdk(i: &sdk::Instance) -> Instance {
    Instance {
        id: owned(i.instance_id()),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_owned),
        subnet_id: i.subnet_id().map(str::to_owned),
        vpc_id: i.vpc_id().map(str::to_owned),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned()),
        tags: tags(i.tags()),
    }
}

pub fn session_from_sdk(s: &sdk::TrafficMirrorSession) -> Session {
    Session {
        id: owned(s.traffic_mirror_session_id()),
        eni_id: owned(s.network_interface_id()),
        target_id: owned(s.traffic_mirror_target_id()),
        filter_id: owned(s.traffic_mirror_filter_id()),
        number: to_u32(s.session_number()).unwrap_or(0),
        vni: to_u32(s.virtual_network_id()),
        packet_length: to_u32(s.packet_length()),
        tags: tags(s.tags()),
    }
}

pub fn target_from_sdk(t: &sdk::TrafficMirrorTarget) -> MirrorTarget {
    MirrorTarget {
        id: owned(t.traffic_mirror_target_id()),
        network_interface_id: t.network_interface_id().map(str::to_owned),
        network_load_balancer_arn: t.network_load_balancer_arn().map(str::to_owned),
    }
}

const OP_DESCRIBE_ENIS: &str = "DescribeNetworkInterfaces";
const OP_DESCRIBE_INSTANCES: &str = "DescribeInstances";
const OP_DESCRIBE_SESSIONS: &str = "DescribeTrafficMirrorSessions";
const OP_DESCRIBE_TARGETS: &str = "DescribeTrafficMirrorTargets";
const OP_CREATE: &str = "CreateTrafficMirrorSession";
const OP_DELETE: &str = "DeleteTrafficMirrorSession";
const OP_MODIFY: &str = "ModifyTrafficMirrorSession";

impl Ec2Api for SdkEc2 {
    async fn describe_network_interfaces(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<Eni>, AwsError> {
        let mut pages = self
            .client
            .describe_network_interfaces()
            .set_filters(sdk_filters(filters))
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            bump(&self.calls.describe_network_interfaces);
            let page = page.map_err(|e| AwsError::from_sdk(OP_DESCRIBE_ENIS, &e))?;
            out.extend(page.network_interfaces().iter().map(eni_from_sdk));
        }
        Ok(out)
    }

    async fn describe_instances(&self, filters: Vec<Filter>) -> Result<Vec<Instance>, AwsError> {
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(sdk_filters(filters))
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            bump(&self.calls.describe_instances);
            let page = page.map_err(|e| AwsError::from_sdk(OP_DESCRIBE_INSTANCES, &e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().map(instance_from_sdk));
            }
        }
        Ok(out)
    }

    async fn describe_sessions(&self, filters: Vec<Filter>) -> Result<Vec<Session>, AwsError> {
        let mut pages = self
            .client
            .describe_traffic_mirror_sessions()
            .set_filters(sdk_filters(filters))
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            bump(&self.calls.describe_sessions);
            let page = page.map_err(|e| AwsError::from_sdk(OP_DESCRIBE_SESSIONS, &e))?;
            out.extend(page.traffic_mirror_sessions().iter().map(session_from_sdk));
        }
        Ok(out)
    }

    async fn describe_targets(&self) -> Result<Vec<MirrorTarget>, AwsError> {
        let mut pages = self
            .client
            .describe_traffic_mirror_targets()
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            bump(&self.calls.describe_targets);
            let page = page.map_err(|e| AwsError::from_sdk(OP_DESCRIBE_TARGETS, &e))?;
            out.extend(page.traffic_mirror_targets().iter().map(target_from_sdk));
        }
        Ok(out)
    }

    async fn create_session(&self, req: NewSession) -> Result<String, AwsError> {
        let tag_spec = TagSpecification::builder()
            .resource_type(ResourceType::TrafficMirrorSession)
            .set_tags(Some(
                req.tags
                    .iter()
                    .map(|(k, v)| sdk::Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build();
        let packet_length = match req.packet_length {
            Some(p) => Some(to_i32(OP_CREATE, "PacketLength", p)?),
            None => None,
        };
        bump(&self.calls.create_session);
        let out = self
            .client
            .create_traffic_mirror_session()
            .network_interface_id(&req.eni_id)
            .traffic_mirror_target_id(&req.target_id)
            .traffic_mirror_filter_id(&req.filter_id)
            .session_number(to_i32(OP_CREATE, "SessionNumber", req.number)?)
            .virtual_network_id(to_i32(OP_CREATE, "VirtualNetworkId", req.vni)?)
            .set_packet_length(packet_length)
            .client_token(&req.client_token)
            .tag_specifications(tag_spec)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OP_CREATE, &e))?;
        Ok(out
            .traffic_mirror_session()
            .and_then(|s| s.traffic_mirror_session_id())
            .unwrap_or_default()
            .to_owned())
    }

    async fn delete_session(&self, session_id: String) -> Result<(), AwsError> {
        bump(&self.calls.delete_session);
        match self
            .client
            .delete_traffic_mirror_session()
            .traffic_mirror_session_id(&session_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match AwsError::from_sdk(OP_DELETE, &e) {
                // Already gone (its ENI was deleted, or a concurrent run deleted it).
                AwsError::EniGone { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn modify_session(&self, req: SessionUpdate) -> Result<(), AwsError> {
        let mut call = self
            .client
            .modify_traffic_mirror_session()
            .traffic_mirror_session_id(&req.session_id)
            .set_traffic_mirror_target_id(req.target_id.clone())
            .set_traffic_mirror_filter_id(req.filter_id.clone());
        if let Some(vni) = req.vni {
            call = call.virtual_network_id(to_i32(OP_MODIFY, "VirtualNetworkId", vni)?);
        }
        call = match req.packet_length {
            PacketLengthChange::Keep => call,
            PacketLengthChange::Set(p) => call.packet_length(to_i32(OP_MODIFY, "PacketLength", p)?),
            PacketLengthChange::Remove => {
                call.remove_fields(TrafficMirrorSessionField::PacketLength)
            }
        };
        bump(&self.calls.modify_session);
        call.send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk(OP_MODIFY, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_filters_are_split_at_two_hundred_values() {
        let ids: Vec<String> = (0..450).map(|i| format!("eni-{i}")).collect();
        let filters = chunked_filters("network-interface-id", &ids);
        assert_eq!(filters.len(), 3);
        assert_eq!(filters[0].values.len(), 200);
        assert_eq!(filters[2].values.len(), 50);
        assert!(filters.iter().all(|f| f.name == "network-interface-id"));
        assert!(chunked_filters("x", &[]).is_empty());
    }

    #[test]
    fn a_session_without_a_packet_length_maps_to_whole_packets() {
        let s = sdk::TrafficMirrorSession::builder()
            .traffic_mirror_session_id("tms-1")
            .network_interface_id("eni-1")
            .traffic_mirror_target_id("tmt-1")
            .traffic_mirror_filter_id("tmf-1")
            .session_number(2)
            .virtual_network_id(42)
            .tags(
                sdk::Tag::builder()
                    .key("mirrorfleet:owner")
                    .value("prod")
                    .build(),
            )
            .build();
        let s = session_from_sdk(&s);
        assert_eq!(s.number, 2);
        assert_eq!(s.vni, Some(42));
        assert_eq!(s.packet_length, None);
        assert!(s.is_owned_by("prod"));
    }
}
