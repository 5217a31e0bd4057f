//! EC2 behind a small trait: the describes the observer needs (server-side filters, paginated)
//! and the three session writes the applier needs, taking the plan's own actions. [`SdkEc2`]
//! implements it with aws-sdk-ec2; tests implement it with the test kit's fake EC2.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_ec2::types::{self as sdk, ResourceType, TagSpecification, TrafficMirrorSessionField};
use aws_smithy_async::future::pagination_stream::PaginationStream;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use mirror::filters::Filter;
use mirror::model::{Eni, Instance, MirrorTarget, Session, Tags};
use mirror::plan::{Change, CreateSession, DeleteSession, ModifySession};
use mirror::report::ErrorClass;

use crate::error::AwsError;

/// EC2 allows at most this many values in one filter.
pub const MAX_FILTER_VALUES: usize = 200;
/// Page size for every describe (the API maximum for these operations).
pub const PAGE_SIZE: i32 = 1000;

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
    /// `CreateTrafficMirrorSession` as planned (number, ClientToken and owner tag included);
    /// returns the new session's id.
    fn create_session(
        &self,
        req: &CreateSession,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// `DeleteTrafficMirrorSession`. A session that is already gone is not an error.
    fn delete_session(
        &self,
        req: &DeleteSession,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `ModifyTrafficMirrorSession` with every change of `req`; a packet length changed to
    /// `None` is removed (whole packets), not left as it is.
    fn modify_session(
        &self,
        req: &ModifySession,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Split `values` into filters of at most [`MAX_FILTER_VALUES`] values each (one describe per
/// returned filter).
pub fn chunked_filters(name: &str, values: &[String]) -> Vec<Filter> {
    values
        .chunks(MAX_FILTER_VALUES)
        .map(|chunk| Filter::new(name, chunk.iter().cloned()))
        .collect()
}

/// The EC2 operations of [`Ec2Api`] (error messages and call counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ec2Op {
    DescribeNetworkInterfaces,
    DescribeInstances,
    DescribeTrafficMirrorSessions,
    DescribeTrafficMirrorTargets,
    CreateTrafficMirrorSession,
    DeleteTrafficMirrorSession,
    ModifyTrafficMirrorSession,
}

impl Ec2Op {
    /// Every operation, in a fixed order.
    pub const ALL: [Ec2Op; 7] = [
        Ec2Op::DescribeNetworkInterfaces,
        Ec2Op::DescribeInstances,
        Ec2Op::DescribeTrafficMirrorSessions,
        Ec2Op::DescribeTrafficMirrorTargets,
        Ec2Op::CreateTrafficMirrorSession,
        Ec2Op::DeleteTrafficMirrorSession,
        Ec2Op::ModifyTrafficMirrorSession,
    ];

    /// The API's name of the operation.
    pub fn as_str(self) -> &'static str {
        match self {
            Ec2Op::DescribeNetworkInterfaces => "DescribeNetworkInterfaces",
            Ec2Op::DescribeInstances => "DescribeInstances",
            Ec2Op::DescribeTrafficMirrorSessions => "DescribeTrafficMirrorSessions",
            Ec2Op::DescribeTrafficMirrorTargets => "DescribeTrafficMirrorTargets",
            Ec2Op::CreateTrafficMirrorSession => "CreateTrafficMirrorSession",
            Ec2Op::DeleteTrafficMirrorSession => "DeleteTrafficMirrorSession",
            Ec2Op::ModifyTrafficMirrorSession => "ModifyTrafficMirrorSession",
        }
    }
}

/// API calls made, by operation (one per page or write, retries by the SDK not included).
#[derive(Debug, Default)]
pub struct ApiCalls {
    counts: [AtomicU64; Ec2Op::ALL.len()],
}

impl ApiCalls {
    fn bump(&self, op: Ec2Op) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `(operation, calls)` pairs, in the order of [`Ec2Op::ALL`].
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Ec2Op::ALL
            .iter()
            .map(|op| {
                (
                    op.as_str(),
                    self.counts[*op as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().iter().map(|(_, n)| n).sum()
    }
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

    /// Every item of every page, each page counted as one call.
    async fn all_pages<O, E, T>(
        &self,
        op: Ec2Op,
        mut pages: PaginationStream<Result<O, SdkError<E, HttpResponse>>>,
        items: impl Fn(&O) -> Vec<T>,
    ) -> Result<Vec<T>, AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            self.calls.bump(op);
            let page = page.map_err(|e| AwsError::from_sdk(op.as_str(), &e))?;
            out.extend(items(&page));
        }
        Ok(out)
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

fn to_i32(op: Ec2Op, field: &'static str, v: u32) -> Result<i32, AwsError> {
    i32::try_from(v).map_err(|_| {
        AwsError::new(
            ErrorClass::InvalidRequest,
            op.as_str(),
            "InvalidParameterValue",
            format!("{field} {v} does not fit the API's integer"),
        )
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
        private_ip: ni.private_ip_address().map(str::to_owned),
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
        gateway_load_balancer_endpoint_id: t.gateway_load_balancer_endpoint_id().map(str::to_owned),
    }
}

impl Ec2Api for SdkEc2 {
    async fn describe_network_interfaces(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<Eni>, AwsError> {
        let pages = self
            .client
            .describe_network_interfaces()
            .set_filters(sdk_filters(filters))
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        self.all_pages(Ec2Op::DescribeNetworkInterfaces, pages, |p| {
            p.network_interfaces().iter().map(eni_from_sdk).collect()
        })
        .await
    }

    async fn describe_instances(&self, filters: Vec<Filter>) -> Result<Vec<Instance>, AwsError> {
        let pages = self
            .client
            .describe_instances()
            .set_filters(sdk_filters(filters))
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        self.all_pages(Ec2Op::DescribeInstances, pages, |p| {
            p.reservations()
                .iter()
                .flat_map(|r| r.instances().iter().map(instance_from_sdk))
                .collect()
        })
        .await
    }

    async fn describe_sessions(&self, filters: Vec<Filter>) -> Result<Vec<Session>, AwsError> {
        let pages = self
            .client
            .describe_traffic_mirror_sessions()
            .set_filters(sdk_filters(filters))
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        self.all_pages(Ec2Op::DescribeTrafficMirrorSessions, pages, |p| {
            p.traffic_mirror_sessions()
                .iter()
                .map(session_from_sdk)
                .collect()
        })
        .await
    }

    async fn describe_targets(&self) -> Result<Vec<MirrorTarget>, AwsError> {
        let pages = self
            .client
            .describe_traffic_mirror_targets()
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        self.all_pages(Ec2Op::DescribeTrafficMirrorTargets, pages, |p| {
            p.traffic_mirror_targets()
                .iter()
                .map(target_from_sdk)
                .collect()
        })
        .await
    }

    async fn create_session(&self, req: &CreateSession) -> Result<String, AwsError> {
        const OP: Ec2Op = Ec2Op::CreateTrafficMirrorSession;
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
            Some(p) => Some(to_i32(OP, "PacketLength", p)?),
            None => None,
        };
        let call = self
            .client
            .create_traffic_mirror_session()
            .network_interface_id(&req.eni_id)
            .traffic_mirror_target_id(&req.target_id)
            .traffic_mirror_filter_id(&req.filter_id)
            .session_number(to_i32(OP, "SessionNumber", req.number)?)
            .virtual_network_id(to_i32(OP, "VirtualNetworkId", req.vni)?)
            .set_packet_length(packet_length)
            .client_token(&req.client_token)
            .tag_specifications(tag_spec);
        self.calls.bump(OP);
        let out = call
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OP.as_str(), &e))?;
        Ok(out
            .traffic_mirror_session()
            .and_then(|s| s.traffic_mirror_session_id())
            .unwrap_or_default()
            .to_owned())
    }

    async fn delete_session(&self, req: &DeleteSession) -> Result<(), AwsError> {
        const OP: Ec2Op = Ec2Op::DeleteTrafficMirrorSession;
        self.calls.bump(OP);
        match self
            .client
            .delete_traffic_mirror_session()
            .traffic_mirror_session_id(&req.session_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match AwsError::from_sdk(OP.as_str(), &e) {
                // Already gone (its ENI was deleted, or a concurrent run deleted it).
                gone if gone.class == ErrorClass::EniGone => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn modify_session(&self, req: &ModifySession) -> Result<(), AwsError> {
        const OP: Ec2Op = Ec2Op::ModifyTrafficMirrorSession;
        let mut call = self
            .client
            .modify_traffic_mirror_session()
            .traffic_mirror_session_id(&req.session_id);
        for change in &req.changes {
            call = match change {
                Change::Target { to, .. } => call.traffic_mirror_target_id(to),
                Change::Filter { to, .. } => call.traffic_mirror_filter_id(to),
                Change::Vni { to, .. } => {
                    call.virtual_network_id(to_i32(OP, "VirtualNetworkId", *to)?)
                }
                Change::PacketLength { to: Some(p), .. } => {
                    call.packet_length(to_i32(OP, "PacketLength", *p)?)
                }
                Change::PacketLength { to: None, .. } => {
                    call.remove_fields(TrafficMirrorSessionField::PacketLength)
                }
            };
        }
        self.calls.bump(OP);
        call.send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk(OP.as_str(), &e))
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

    #[test]
    fn call_counts_are_listed_per_operation_in_a_fixed_order() {
        let calls = ApiCalls::default();
        calls.bump(Ec2Op::CreateTrafficMirrorSession);
        calls.bump(Ec2Op::CreateTrafficMirrorSession);
        calls.bump(Ec2Op::DescribeInstances);
        let snapshot = calls.snapshot();
        let names: Vec<&str> = snapshot.iter().map(|(op, _)| *op).collect();
        assert_eq!(names, Ec2Op::ALL.map(Ec2Op::as_str));
        assert_eq!(snapshot[1], ("DescribeInstances", 1));
        assert_eq!(snapshot[4], ("CreateTrafficMirrorSession", 2));
        assert_eq!(calls.total(), 3);
    }
}
