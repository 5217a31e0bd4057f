//! The observed world as the planner sees it: ENIs, instances, mirror targets, mirror sessions,
//! and the desired mirror spec. Plain data; the AWS adapter converts SDK types into these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Tags as an ordered map (key → value), so every output built from them is deterministic.
pub type Tags = BTreeMap<String, String>;

/// Tags from `(key, value)` pairs.
pub fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Tag key carried by every session we create; its value is [`MirrorSpec::owner`].
/// Sessions without this tag (or with another owner value) are never modified or deleted.
pub const OWNER_TAG_KEY: &str = "mirrorfleet:owner";
/// Default tag key that excludes an ENI (or every ENI of an instance) from mirroring.
pub const DEFAULT_EXCLUDE_TAG: &str = "mirrorfleet:exclude";
/// Tag AWS Auto Scaling puts on the instances of a group; used to exclude our own fleet.
pub const ASG_NAME_TAG: &str = "aws:autoscaling:groupName";
/// AWS limit: at most this many mirror sessions per source ENI (any owner, any target).
pub const MAX_SESSIONS_PER_ENI: usize = 3;
/// Lowest valid session number.
pub const SESSION_NUMBER_MIN: u32 = 1;
/// Highest valid session number.
pub const SESSION_NUMBER_MAX: u32 = 32766;
/// Highest VXLAN network identifier (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;
/// Packet length range AWS accepts for network load balancer targets.
pub const PACKET_LENGTH_MAX: u32 = 8500;
/// What AWS stores as the packet length of a session created (or modified with
/// `RemoveFields=packet-length`) without one, on a Network Load Balancer target: "For sessions
/// with Network Load Balancer (NLB) Traffic Mirror targets the default PacketLength will be set
/// to 8500" (CreateTrafficMirrorSession, ModifyTrafficMirrorSession, EC2 API reference).
pub const NLB_DEFAULT_PACKET_LENGTH: u32 = 8500;

/// An elastic network interface, as returned by `DescribeNetworkInterfaces`.
///
/// Optional fields are `None` when the API did not return them; a filter on such a field never
/// matches (as on the server).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Eni {
    /// `eni-…`
    pub id: String,
    pub subnet_id: String,
    pub vpc_id: String,
    /// e.g. `eu-west-1a`.
    pub availability_zone: Option<String>,
    /// `InterfaceType` as the API spells it: `interface`, `network_load_balancer`, `efa`, …
    pub interface_type: String,
    /// Free text; the ENIs of a load balancer read `ELB net/<name>/<id>`.
    pub description: String,
    /// `in-use`, `available`, … (filter `status`).
    pub status: Option<String>,
    /// The AWS service or account that created the ENI (e.g. `amazon-elb`).
    pub requester_id: Option<String>,
    /// Whether the ENI is managed by an AWS service.
    pub requester_managed: Option<bool>,
    /// `Attachment.InstanceId`.
    pub attachment_instance_id: Option<String>,
    /// `Attachment.InstanceOwnerId` (an account id, or e.g. `amazon-elb`).
    pub attachment_instance_owner_id: Option<String>,
    /// `PrivateIpAddress`: the primary private IPv4 address, the outer source address of the
    /// VXLAN datagrams Traffic Mirroring sends for this ENI.
    pub private_ip: Option<String>,
    /// `TagSet`.
    pub tags: Tags,
}

/// An EC2 instance, as returned by `DescribeInstances`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Instance {
    /// `i-…`
    pub id: String,
    /// e.g. `m5.large`.
    pub instance_type: String,
    pub availability_zone: Option<String>,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    /// `State.Name`: `pending`, `running`, … (filter `instance-state-name`).
    pub state: Option<String>,
    pub tags: Tags,
}

/// A traffic mirror target, as returned by `DescribeTrafficMirrorTargets`. Used to exclude
/// ENIs that are targets, and the ENIs of a target's network load balancer; its kind decides
/// the packet length AWS fills in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct MirrorTarget {
    pub id: String,
    /// Set for ENI targets.
    pub network_interface_id: Option<String>,
    /// Set for NLB targets (`arn:aws:elasticloadbalancing:…:loadbalancer/net/<name>/<id>`).
    pub network_load_balancer_arn: Option<String>,
    /// Set for Gateway Load Balancer endpoint targets (`vpce-…`).
    pub gateway_load_balancer_endpoint_id: Option<String>,
}

/// What a traffic mirror target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    NetworkLoadBalancer,
    GatewayLoadBalancerEndpoint,
    NetworkInterface,
    /// The describe named none of the three.
    Unknown,
}

impl MirrorTarget {
    /// Which of the three kinds of target this is.
    pub fn kind(&self) -> TargetKind {
        if self.network_load_balancer_arn.is_some() {
            TargetKind::NetworkLoadBalancer
        } else if self.gateway_load_balancer_endpoint_id.is_some() {
            TargetKind::GatewayLoadBalancerEndpoint
        } else if self.network_interface_id.is_some() {
            TargetKind::NetworkInterface
        } else {
            TargetKind::Unknown
        }
    }

    /// The packet length a session to this target is described with when none was given
    /// ("whole packets"), if AWS fills one in.
    ///
    /// - Network Load Balancer: 8500, documented ([`NLB_DEFAULT_PACKET_LENGTH`]).
    /// - Gateway Load Balancer endpoint: not documented. Its MTU is 8,500 ("Maximum number of
    ///   MTUs for a Gateway Load Balancer endpoint | 8,500", Traffic Mirroring quotas), so a
    ///   packet length of 8500 and none mirror the same bytes; both descriptions are taken as
    ///   "whole packets" (docs/control-plane-aws.md), so whichever AWS answers, a converged
    ///   session is never modified.
    /// - ENI target: none (its MTU is the instance's, up to 9001, so 8500 would truncate).
    pub fn default_packet_length(&self) -> Option<u32> {
        match self.kind() {
            TargetKind::NetworkLoadBalancer | TargetKind::GatewayLoadBalancerEndpoint => {
                Some(NLB_DEFAULT_PACKET_LENGTH)
            }
            TargetKind::NetworkInterface | TargetKind::Unknown => None,
        }
    }

    /// The description AWS gives the ENIs of this target's load balancer
    /// (`ELB net/<name>/<id>`), derived from its ARN.
    pub fn load_balancer_eni_description(&self) -> Option<String> {
        let arn = self.network_load_balancer_arn.as_deref()?;
        let (_, rest) = arn.split_once(":loadbalancer/")?;
        if rest.is_empty() {
            return None;
        }
        Some(format!("ELB {rest}"))
    }
}

/// A traffic mirror session, as returned by `DescribeTrafficMirrorSessions`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Session {
    /// `tms-…`
    pub id: String,
    /// The source ENI.
    pub eni_id: String,
    pub target_id: String,
    pub filter_id: String,
    /// 1..=32766; lower numbers take precedence on the same ENI.
    pub number: u32,
    /// `VirtualNetworkId`; `None` if the API did not return one.
    pub vni: Option<u32>,
    /// `PacketLength`; `None` means the whole packet.
    pub packet_length: Option<u32>,
    pub tags: Tags,
}

impl Session {
    /// True when this session carries our owner tag with exactly `owner` as its value.
    pub fn is_owned_by(&self, owner: &str) -> bool {
        self.tags.get(OWNER_TAG_KEY).map(String::as_str) == Some(owner)
    }
}

/// Where new sessions take their number in 1..=32766. Sessions on one ENI are evaluated by
/// number, lowest first, and "the first session with a matching filter is the one that mirrors
/// the packets" (TrafficMirrorSession, EC2 API reference): a lower number takes traffic from a
/// higher one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionPriority {
    /// The highest free number (32766 down): every other tool's session on the ENI is
    /// evaluated first and keeps its traffic. The default.
    #[default]
    Low,
    /// The lowest free number (1 up): ours is evaluated before the others already there.
    High,
}

impl SessionPriority {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionPriority::Low => "low",
            SessionPriority::High => "high",
        }
    }
}

/// What every session we own should look like.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct MirrorSpec {
    pub target_id: String,
    pub filter_id: String,
    pub vni: u32,
    /// `None`: mirror whole packets (and remove a packet length that drifted in).
    pub packet_length: Option<u32>,
    /// Value of the [`OWNER_TAG_KEY`] tag on the sessions we own.
    pub owner: String,
    /// Where new sessions take their number.
    pub priority: SessionPriority,
}

impl MirrorSpec {
    /// Target `tmt-1`, filter `tmf-1`, this owner and VNI, whole packets, low priority: the
    /// spec of the core's unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(owner: &str, vni: u32) -> MirrorSpec {
        MirrorSpec {
            target_id: "tmt-1".into(),
            filter_id: "tmf-1".into(),
            vni,
            owner: owner.into(),
            ..MirrorSpec::default()
        }
    }

    /// The tags a session created for this spec carries (`TagSpecifications`).
    pub fn session_tags(&self) -> Tags {
        let mut tags = Tags::new();
        tags.insert(OWNER_TAG_KEY.to_owned(), self.owner.clone());
        tags
    }
}

/// Everything one run observed. The adapter fills it; the planner reads it.
///
/// What the adapter should describe, so that the plan is right:
/// - `enis`: every ENI that may be wanted — those matching the ENI filters, and those attached
///   to instances matching the instance filters — and every ENI carrying a session we own
///   (an owned session whose ENI is absent here is deleted as [`crate::plan::DeleteReason::EniGone`]).
/// - `instances`: the instances matching the instance filters, and the instances the ENIs
///   above are attached to (at least those carrying the exclude tag or the fleet's
///   [`ASG_NAME_TAG`]), so that exclusions on instances apply.
/// - `sessions`: every session on the ENIs in scope, whatever its owner or target (the
///   3-per-ENI limit and number uniqueness count them all), and every session we own.
/// - `targets`: the traffic mirror targets (at least ours), to exclude target ENIs.
///
/// - `refused`: what reconcile-mirrors remembers of the ENIs AWS refused before
///   ([`crate::refusals`]); empty when nothing is remembered.
///
/// Duplicates (the same id from overlapping describes) are harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Observed {
    pub enis: Vec<Eni>,
    pub instances: Vec<Instance>,
    pub sessions: Vec<Session>,
    pub targets: Vec<MirrorTarget>,
    pub refused: crate::refusals::Refusals,
    /// Unix time of the observation (seconds): buckets ClientTokens
    /// ([`crate::plan::client_token`]) and ages remembered refusals.
    pub observed_at_unix: u64,
}

impl Observed {
    /// The target `id`, if it was observed.
    pub fn target(&self, id: &str) -> Option<&MirrorTarget> {
        self.targets.iter().find(|t| t.id == id)
    }
}
