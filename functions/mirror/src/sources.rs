//! The source map (docs/sources.md): for every session we own, the source ENI, what it belongs
//! to, and the keys a rebuilder can see in a mirrored datagram — the VXLAN sender address (the
//! source ENI's primary private IPv4: "the outer source IP of the VXLAN packet is the IP address
//! of the source network interface", Traffic Mirroring packet formats), the session's VNI, and in
//! GWLB mode the endpoint id the GENEVE header carries. reconcile-mirrors publishes it as one JSON
//! document; the rebuilders read the same document.
//!
//! Pure: [`SourceMap::build`] from what a run observed; [`SourceMap::content_hash`] ignores the
//! generation time, so the document is only written again when a source changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{
    ASG_NAME_TAG, Eni, Instance, MirrorSpec, MirrorTarget, Session, Tags, TargetKind,
};

/// The document's format version (docs/sources.md).
pub const SOURCE_MAP_VERSION: u32 = 1;

/// Instance tags naming an EKS cluster (managed node groups, eksctl, Karpenter).
pub const EKS_INSTANCE_TAGS: [&str; 2] = ["eks:cluster-name", "aws:eks:cluster-name"];
/// ENI tag the Amazon VPC CNI puts on the ENIs it creates.
pub const EKS_ENI_TAG: &str = "cluster.k8s.amazonaws.com/name";

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMap {
    pub version: u32,
    /// RFC 3339, UTC, seconds.
    pub generated_at: String,
    /// The stack (the `mirrorfleet:owner` value of the sessions).
    pub owner: String,
    /// Our traffic mirror target.
    pub target: TargetRef,
    /// Sorted by ENI id, then session id.
    pub sources: Vec<Source>,
}

/// The mirror target every listed session sends to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    pub id: String,
    pub kind: TargetKind,
    /// The Gateway Load Balancer endpoint (`vpce-…`) in GWLB mode, else `null`.
    pub gwlbe: Option<String>,
}

/// One mirrored source: one session we own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The source ENI.
    pub eni: String,
    /// Our session on it.
    pub session: String,
    /// The VXLAN network identifier of its datagrams.
    pub vni: Option<u32>,
    /// The ENI's primary private IPv4: the outer source address of its VXLAN datagrams.
    pub sender_ip: Option<String>,
    pub vpc: String,
    pub subnet: String,
    pub az: Option<String>,
    /// In GWLB mode, the endpoint the datagrams arrive through (the GENEVE endpoint id);
    /// `null` in NLB mode.
    pub gwlbe: Option<String>,
    pub instance: Option<InstanceRef>,
    pub load_balancer: Option<LoadBalancerRef>,
    pub eks_cluster: Option<String>,
    /// The Auto Scaling group of its instance.
    pub asg: Option<String>,
    /// The chosen tags (`MIRROR_SOURCE_TAGS`): the ENI's value, else its instance's.
    pub tags: Tags,
}

/// The instance an ENI is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRef {
    pub id: String,
    /// Its `Name` tag.
    pub name: Option<String>,
}

/// The load balancer an ENI belongs to, from the description AWS gives its ENIs
/// (`ELB app/<name>/<id>`, `ELB net/<name>/<id>`, `ELB gwy/<name>/<id>`, `ELB <name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerRef {
    /// `app`, `net`, `gwy`, or `classic`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    /// The id part of its ARN; `null` for a Classic Load Balancer.
    pub id: Option<String>,
}

impl LoadBalancerRef {
    /// The load balancer of an ENI description, if it is one AWS gives load-balancer ENIs.
    pub fn from_description(description: &str) -> Option<LoadBalancerRef> {
        let rest = description.strip_prefix("ELB ")?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [kind @ ("app" | "net" | "gwy"), name, id] if !name.is_empty() => {
                Some(LoadBalancerRef {
                    kind: (*kind).to_owned(),
                    name: (*name).to_owned(),
                    id: Some((*id).to_owned()),
                })
            }
            [name] if !name.is_empty() && !name.contains(' ') => Some(LoadBalancerRef {
                kind: "classic".to_owned(),
                name: (*name).to_owned(),
                id: None,
            }),
            _ => None,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (UTC). A time past the year 9999 (the `time`
/// crate's range, far past any clock this runs with) reads as the largest one.
pub fn rfc3339(unix: u64) -> String {
    let t = i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    // Whole seconds: RFC 3339 without a fraction.
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("a year of four digits formats")
}

fn first_tag(tags: &Tags, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| tags.get(*k).cloned())
}

impl SourceMap {
    /// The map of `sessions` (every session; those owned by `spec.owner` are listed) over the
    /// observed ENIs and instances. A session whose ENI was not observed is listed with what the
    /// session itself says.
    pub fn build(
        spec: &MirrorSpec,
        target: Option<&MirrorTarget>,
        enis: &[Eni],
        instances: &[Instance],
        sessions: &[Session],
        source_tags: &[String],
        now_unix: u64,
    ) -> SourceMap {
        let enis: BTreeMap<&str, &Eni> = enis.iter().map(|e| (e.id.as_str(), e)).collect();
        let instances: BTreeMap<&str, &Instance> =
            instances.iter().map(|i| (i.id.as_str(), i)).collect();
        let targets_gwlbe = |target_id: &str| {
            target
                .filter(|t| t.id == target_id)
                .and_then(|t| t.gateway_load_balancer_endpoint_id.clone())
        };
        let mut sources: Vec<Source> = sessions
            .iter()
            .filter(|s| s.is_owned_by(&spec.owner))
            .map(|s| {
                let eni = enis.get(s.eni_id.as_str()).copied();
                let instance = eni
                    .and_then(|e| e.attachment_instance_id.as_deref())
                    .and_then(|i| instances.get(i).copied());
                let no_tags = Tags::new();
                let eni_tags = eni.map_or(&no_tags, |e| &e.tags);
                let instance_tags = instance.map_or(&no_tags, |i| &i.tags);
                let tags = source_tags
                    .iter()
                    .filter_map(|k| {
                        eni_tags
                            .get(k)
                            .or_else(|| instance_tags.get(k))
                            .map(|v| (k.clone(), v.clone()))
                    })
                    .collect();
                Source {
                    eni: s.eni_id.clone(),
                    session: s.id.clone(),
                    vni: s.vni,
                    sender_ip: eni.and_then(|e| e.private_ip.clone()),
                    vpc: eni.map(|e| e.vpc_id.clone()).unwrap_or_default(),
                    subnet: eni.map(|e| e.subnet_id.clone()).unwrap_or_default(),
                    az: eni.and_then(|e| e.availability_zone.clone()),
                    gwlbe: targets_gwlbe(&s.target_id),
                    instance: eni
                        .and_then(|e| e.attachment_instance_id.clone())
                        .map(|id| InstanceRef {
                            name: instance.and_then(|i| i.tags.get("Name").cloned()),
                            id,
                        }),
                    load_balancer: eni
                        .and_then(|e| LoadBalancerRef::from_description(&e.description)),
                    eks_cluster: first_tag(instance_tags, &EKS_INSTANCE_TAGS)
                        .or_else(|| first_tag(eni_tags, &[EKS_ENI_TAG])),
                    asg: first_tag(instance_tags, &[ASG_NAME_TAG]),
                    tags,
                }
            })
            .collect();
        sources.sort_by(|a, b| (&a.eni, &a.session).cmp(&(&b.eni, &b.session)));
        sources.dedup_by(|a, b| a.session == b.session);
        SourceMap {
            version: SOURCE_MAP_VERSION,
            generated_at: rfc3339(now_unix),
            owner: spec.owner.clone(),
            target: TargetRef {
                id: spec.target_id.clone(),
                kind: target.map_or(TargetKind::Unknown, MirrorTarget::kind),
                gwlbe: target.and_then(|t| t.gateway_load_balancer_endpoint_id.clone()),
            },
            sources,
        }
    }

    /// SHA-256 (hex) of the document without `generated_at`: equal hashes, same content.
    pub fn content_hash(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("generated_at");
        }
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The document as written (pretty JSON, a final newline).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OWNER_TAG_KEY, tags};

    fn spec() -> MirrorSpec {
        MirrorSpec::for_tests("prod", 4242)
    }

    fn session(id: &str, eni: &str, owner: &str) -> Session {
        Session {
            id: id.into(),
            eni_id: eni.into(),
            target_id: "tmt-1".into(),
            filter_id: "tmf-1".into(),
            number: 32766,
            vni: Some(4242),
            tags: tags(&[(OWNER_TAG_KEY, owner)]),
            ..Session::default()
        }
    }

    fn eni(id: &str, ip: &str) -> Eni {
        Eni {
            id: id.into(),
            subnet_id: "subnet-a".into(),
            vpc_id: "vpc-1".into(),
            availability_zone: Some("us-east-1a".into()),
            interface_type: "interface".into(),
            private_ip: Some(ip.into()),
            ..Eni::default()
        }
    }

    #[test]
    fn every_owned_session_is_listed_with_what_its_eni_belongs_to() {
        let mut node = eni("eni-node", "10.0.1.10");
        node.attachment_instance_id = Some("i-node".into());
        node.tags = tags(&[("app", "checkout")]);
        let mut alb = eni("eni-alb", "10.0.2.20");
        alb.description = "ELB app/shop/50dc6c495c0c9188".into();
        let instance = Instance {
            id: "i-node".into(),
            tags: tags(&[
                ("Name", "node-1"),
                ("eks:cluster-name", "prod"),
                (ASG_NAME_TAG, "eks-web"),
                ("team", "payments"),
                ("app", "ignored-the-eni-wins"),
            ]),
            ..Instance::default()
        };
        let map = SourceMap::build(
            &spec(),
            None,
            &[node, alb],
            &[instance],
            &[
                session("tms-1", "eni-node", "prod"),
                session("tms-2", "eni-alb", "prod"),
                session("tms-x", "eni-node", "someone-else"),
            ],
            &["app".into(), "team".into(), "absent".into()],
            1_764_754_800,
        );
        assert_eq!(map.generated_at, "2025-12-03T09:40:00Z");
        assert_eq!(map.sources.len(), 2);
        let alb = &map.sources[0];
        assert_eq!(alb.eni, "eni-alb");
        assert_eq!(
            alb.load_balancer,
            Some(LoadBalancerRef {
                kind: "app".into(),
                name: "shop".into(),
                id: Some("50dc6c495c0c9188".into())
            })
        );
        assert_eq!(alb.instance, None);
        let node = &map.sources[1];
        assert_eq!(
            (node.session.as_str(), node.sender_ip.as_deref(), node.vni),
            ("tms-1", Some("10.0.1.10"), Some(4242))
        );
        assert_eq!(
            node.instance,
            Some(InstanceRef {
                id: "i-node".into(),
                name: Some("node-1".into())
            })
        );
        assert_eq!(node.eks_cluster.as_deref(), Some("prod"));
        assert_eq!(node.asg.as_deref(), Some("eks-web"));
        assert_eq!(
            node.tags,
            tags(&[("app", "checkout"), ("team", "payments")])
        );
        assert_eq!(node.gwlbe, None);
    }

    #[test]
    fn in_gwlb_mode_each_source_names_the_endpoint_the_rebuilder_sees() {
        let target = MirrorTarget {
            id: "tmt-1".into(),
            gateway_load_balancer_endpoint_id: Some("vpce-0123456789abcdef0".into()),
            ..MirrorTarget::default()
        };
        let map = SourceMap::build(
            &spec(),
            Some(&target),
            &[eni("eni-1", "10.0.0.5")],
            &[],
            &[session("tms-1", "eni-1", "prod")],
            &[],
            0,
        );
        assert_eq!(map.target.kind, TargetKind::GatewayLoadBalancerEndpoint);
        assert_eq!(
            map.sources[0].gwlbe.as_deref(),
            Some("vpce-0123456789abcdef0")
        );
        let json = serde_json::to_value(&map).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["target"]["kind"], "gateway_load_balancer_endpoint");
        assert_eq!(json["sources"][0]["sender_ip"], "10.0.0.5");
        assert_eq!(json["generated_at"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_content_hash_ignores_only_the_generation_time() {
        let build = |now, ip: &str| {
            SourceMap::build(
                &spec(),
                None,
                &[eni("eni-1", ip)],
                &[],
                &[session("tms-1", "eni-1", "prod")],
                &[],
                now,
            )
        };
        assert_eq!(
            build(1, "10.0.0.1").content_hash(),
            build(999, "10.0.0.1").content_hash()
        );
        assert_ne!(
            build(1, "10.0.0.1").content_hash(),
            build(1, "10.0.0.2").content_hash()
        );
        let text = build(1, "10.0.0.1").to_json();
        let back: SourceMap = serde_json::from_str(&text).unwrap();
        assert_eq!(back, build(1, "10.0.0.1"));
    }

    #[test]
    fn load_balancer_descriptions_are_read_as_aws_writes_them() {
        let lb = |d: &str| LoadBalancerRef::from_description(d).map(|l| (l.kind, l.name));
        assert_eq!(
            lb("ELB net/mirror/abc"),
            Some(("net".into(), "mirror".into()))
        );
        assert_eq!(
            lb("ELB gwy/inspect/abc"),
            Some(("gwy".into(), "inspect".into()))
        );
        assert_eq!(
            lb("ELB my-classic"),
            Some(("classic".into(), "my-classic".into()))
        );
        assert_eq!(lb("app server"), None);
        assert_eq!(lb("ELB app/x"), None);
        assert_eq!(lb("elb app/x/1"), None);
    }

    #[test]
    fn rfc3339_dates_cross_leap_years_and_centuries() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }
}
