//! Which ENIs should be mirrored.
//!
//! An ENI is wanted when it matches the ENI filters, or is attached to an instance that matches
//! the instance filters (an empty filter list selects nothing: it is "not configured"), minus
//! the exclusions, checked in this order:
//! 1. the ENI is a mirror target itself (AWS refuses an ENI that is both source and target);
//! 2. the ENI belongs to a mirror target's network load balancer (`ELB net/<name>/<id>`), or,
//!    when a target is a Gateway Load Balancer endpoint (GWLB mode), the ENI is a Gateway Load
//!    Balancer's or a GWLB endpoint's (`InterfaceType` `gateway_load_balancer` /
//!    `gateway_load_balancer_endpoint`, DescribeNetworkInterfaces): the endpoint id a target
//!    names does not identify its load balancer, and mirroring the fleet's own GWLB would send
//!    the mirrored traffic round again (any other GWLB's ENIs carry its appliances' GENEVE, not
//!    the HTTP the rebuilders read);
//! 3. the ENI is requester-managed (created by an AWS service in your VPC: VPC endpoints, NAT
//!    gateways, Lambda, load balancers, ...) and its requester is not one the settings allow
//!    (`MIRROR_REQUESTER_MANAGED`, none by default; the load-balancer recipe allows
//!    `amazon-elb`). AWS documents only RDS and ElastiCache interfaces among them as sources
//!    ("You can only use requester-managed network interfaces created by Amazon RDS or Amazon
//!    ElastiCache as a Traffic Mirroring source", Traffic Mirroring limitations), so a broad
//!    filter would otherwise send creates that fail, or mirror a service's plumbing;
//! 4. the ENI belongs to an instance of our own rebuilder fleet (`aws:autoscaling:groupName`);
//! 5. the exclude tag is on the ENI, or 6. on its instance.
//!
//! The exclude tag excludes when present with any value except `false` (any case), so
//! `mirrorfleet:exclude=false` can be used to keep an ENI explicitly.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::filters::{EniFilters, InstanceFilters};
use crate::model::{ASG_NAME_TAG, DEFAULT_EXCLUDE_TAG, Eni, Instance, Observed, Tags, TargetKind};

/// The selection policy (from the settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub eni_filters: EniFilters,
    pub instance_filters: InstanceFilters,
    /// Tag key that excludes an ENI or its instance; default [`DEFAULT_EXCLUDE_TAG`].
    pub exclude_tag: String,
    /// Name of our rebuilder Auto Scaling group: its instances are never mirrored.
    pub fleet_asg_name: Option<String>,
    /// The requesters (`RequesterId`, e.g. `amazon-elb`) whose requester-managed ENIs may be
    /// mirrored when the filters select them; empty: none.
    pub requester_managed: BTreeSet<String>,
}

impl Default for Selector {
    fn default() -> Self {
        Self {
            eni_filters: EniFilters::default(),
            instance_filters: InstanceFilters::default(),
            exclude_tag: DEFAULT_EXCLUDE_TAG.to_owned(),
            fleet_asg_name: None,
            requester_managed: BTreeSet::new(),
        }
    }
}

/// Why an ENI that was considered is not wanted (or, in a plan, why a wanted ENI got no
/// session). A closed set: [`SkipReason::as_str`] is usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Matches neither the ENI filters nor (through its instance) the instance filters.
    NotSelected,
    /// The ENI is a traffic mirror target.
    IsMirrorTarget,
    /// The ENI belongs to a mirror target's network load balancer.
    MirrorTargetLoadBalancer,
    /// The ENI is requester-managed by a service the settings do not allow.
    RequesterManaged,
    /// The ENI is attached to an instance of our rebuilder fleet.
    RebuilderFleet,
    /// The ENI carries the exclude tag.
    ExcludeTag,
    /// The ENI's instance carries the exclude tag.
    InstanceExcludeTag,
    /// Wanted, but the ENI already has the maximum of 3 sessions (none of them ours).
    SessionLimit,
    /// Wanted, but no session number in 1..=32766 is free on the ENI.
    NoFreeSessionNumber,
    /// Wanted, but AWS refused a session for it before and it has not changed since
    /// ([`crate::refusals`]).
    Refused,
}

impl SkipReason {
    /// Stable snake_case name (metric label, JSON value).
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotSelected => "not_selected",
            SkipReason::IsMirrorTarget => "is_mirror_target",
            SkipReason::MirrorTargetLoadBalancer => "mirror_target_load_balancer",
            SkipReason::RequesterManaged => "requester_managed",
            SkipReason::RebuilderFleet => "rebuilder_fleet",
            SkipReason::ExcludeTag => "exclude_tag",
            SkipReason::InstanceExcludeTag => "instance_exclude_tag",
            SkipReason::SessionLimit => "session_limit",
            SkipReason::NoFreeSessionNumber => "no_free_session_number",
            SkipReason::Refused => "refused",
        }
    }

    /// Every reason, for exhaustive metric dimensions and tests.
    pub const ALL: [SkipReason; 10] = [
        SkipReason::NotSelected,
        SkipReason::IsMirrorTarget,
        SkipReason::MirrorTargetLoadBalancer,
        SkipReason::RequesterManaged,
        SkipReason::RebuilderFleet,
        SkipReason::ExcludeTag,
        SkipReason::InstanceExcludeTag,
        SkipReason::SessionLimit,
        SkipReason::NoFreeSessionNumber,
        SkipReason::Refused,
    ];
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of selection over every observed ENI.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Selection {
    /// ENI ids to mirror.
    pub wanted: BTreeSet<String>,
    /// ENI ids considered and not wanted, with the reason.
    pub unwanted: BTreeMap<String, SkipReason>,
}

impl Selection {
    /// True when `eni_id` is wanted.
    pub fn is_wanted(&self, eni_id: &str) -> bool {
        self.wanted.contains(eni_id)
    }
}

fn has_exclude_tag(tags: &Tags, key: &str) -> bool {
    tags.get(key)
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("false"))
}

impl Selector {
    /// The decision for one ENI, given its instance (if observed) and the target exclusions.
    fn decide(
        &self,
        eni: &Eni,
        instance: Option<&Instance>,
        targets: &TargetExclusions<'_>,
    ) -> Result<(), SkipReason> {
        let by_eni = !self.eni_filters.is_empty() && self.eni_filters.matches(eni);
        let by_instance = !self.instance_filters.is_empty()
            && instance.is_some_and(|i| self.instance_filters.matches(i));
        if !(by_eni || by_instance) {
            return Err(SkipReason::NotSelected);
        }
        if targets.enis.contains(eni.id.as_str()) {
            return Err(SkipReason::IsMirrorTarget);
        }
        if targets.descriptions.contains(eni.description.as_str())
            || (targets.gwlb_mode && GWLB_INTERFACE_TYPES.contains(&eni.interface_type.as_str()))
        {
            return Err(SkipReason::MirrorTargetLoadBalancer);
        }
        if eni.requester_managed == Some(true)
            && !eni
                .requester_id
                .as_ref()
                .is_some_and(|r| self.requester_managed.contains(r))
        {
            return Err(SkipReason::RequesterManaged);
        }
        if let (Some(asg), Some(i)) = (&self.fleet_asg_name, instance)
            && i.tags.get(ASG_NAME_TAG) == Some(asg)
        {
            return Err(SkipReason::RebuilderFleet);
        }
        if has_exclude_tag(&eni.tags, &self.exclude_tag) {
            return Err(SkipReason::ExcludeTag);
        }
        if instance.is_some_and(|i| has_exclude_tag(&i.tags, &self.exclude_tag)) {
            return Err(SkipReason::InstanceExcludeTag);
        }
        Ok(())
    }

    /// Selects over every observed ENI. Linear in the number of ENIs and instances.
    pub fn select(&self, observed: &Observed) -> Selection {
        let instances: HashMap<&str, &Instance> = canonical(&observed.instances, |i| &i.id)
            .into_iter()
            .map(|i| (i.id.as_str(), i))
            .collect();
        let targets = TargetExclusions::new(observed);
        let mut selection = Selection::default();
        for eni in canonical(&observed.enis, |e| &e.id) {
            let instance = eni
                .attachment_instance_id
                .as_deref()
                .and_then(|id| instances.get(id).copied());
            match self.decide(eni, instance, &targets) {
                Ok(()) => {
                    selection.wanted.insert(eni.id.clone());
                }
                Err(reason) => {
                    selection.unwanted.insert(eni.id.clone(), reason);
                }
            }
        }
        selection
    }
}

/// Warnings about a selection: a load balancer mirrored together with instance ENIs of its VPC.
/// When those instances are the balancer's targets, every request is mirrored twice — once on
/// the client→balancer leg, once on the balancer→target leg (which adds `X-Amzn-Trace-Id`) —
/// and reaches the analyzer twice. Which instances are targets is not observed (that needs the
/// load balancer's API), so the warning names what it sees: the balancer and the number of
/// instance ENIs in the same VPC. One warning per load balancer, sorted.
pub fn selection_warnings(selection: &Selection, observed: &Observed) -> Vec<String> {
    let enis: BTreeMap<&str, &Eni> = canonical(&observed.enis, |e| &e.id)
        .into_iter()
        .filter(|e| selection.is_wanted(&e.id))
        .map(|e| (e.id.as_str(), e))
        .collect();
    let mut balancers: BTreeMap<(&str, String), usize> = BTreeMap::new();
    let mut instance_enis: BTreeMap<&str, usize> = BTreeMap::new();
    for eni in enis.values() {
        if let Some(lb) = crate::sources::LoadBalancerRef::from_description(&eni.description) {
            *balancers
                .entry((eni.vpc_id.as_str(), format!("{} {}", lb.kind, lb.name)))
                .or_default() += 1;
        } else if eni.attachment_instance_id.is_some() {
            *instance_enis.entry(eni.vpc_id.as_str()).or_default() += 1;
        }
    }
    balancers
        .into_iter()
        .filter_map(|((vpc, lb), lb_enis)| {
            let targets = *instance_enis.get(vpc)?;
            Some(format!(
                "the selection mirrors load balancer {lb} ({lb_enis} ENI(s)) and {targets} \
                 instance ENI(s) in {vpc}: if those instances are its targets, each request is \
                 mirrored on both legs and reaches the analyzer twice; select one side \
                 (docs/selection-recipes.md)"
            ))
        })
        .collect()
}

/// The items sorted, one per id (the least by `Ord` when an id appears with different
/// contents), so that the result does not depend on input order or duplicates.
pub(crate) fn canonical<T: Ord>(items: &[T], id: impl Fn(&T) -> &String) -> Vec<&T> {
    let mut refs: Vec<&T> = items.iter().collect();
    refs.sort_unstable();
    refs.dedup_by(|a, b| id(a) == id(b));
    refs
}

/// `InterfaceType` values of a Gateway Load Balancer's ENIs and of a GWLB endpoint's
/// (EC2 API reference, `NetworkInterface`).
const GWLB_INTERFACE_TYPES: [&str; 2] = ["gateway_load_balancer", "gateway_load_balancer_endpoint"];

struct TargetExclusions<'a> {
    enis: HashSet<&'a str>,
    descriptions: HashSet<String>,
    /// A target is a Gateway Load Balancer endpoint.
    gwlb_mode: bool,
}

impl<'a> TargetExclusions<'a> {
    fn new(observed: &'a Observed) -> Self {
        Self {
            enis: observed
                .targets
                .iter()
                .filter_map(|t| t.network_interface_id.as_deref())
                .collect(),
            descriptions: observed
                .targets
                .iter()
                .filter_map(|t| t.load_balancer_eni_description())
                .collect(),
            gwlb_mode: observed
                .targets
                .iter()
                .any(|t| t.kind() == TargetKind::GatewayLoadBalancerEndpoint),
        }
    }
}

/// Convenience: `selector.select(observed)`.
pub fn select(selector: &Selector, observed: &Observed) -> Selection {
    selector.select(observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MirrorTarget, tags};

    fn eni(id: &str, instance: Option<&str>, t: &[(&str, &str)]) -> Eni {
        Eni {
            id: id.into(),
            subnet_id: "subnet-a".into(),
            vpc_id: "vpc-1".into(),
            interface_type: "interface".into(),
            attachment_instance_id: instance.map(Into::into),
            tags: tags(t),
            ..Eni::default()
        }
    }

    fn instance(id: &str, t: &[(&str, &str)]) -> Instance {
        Instance {
            id: id.into(),
            instance_type: "m5.large".into(),
            tags: tags(t),
            ..Instance::default()
        }
    }

    fn selector() -> Selector {
        Selector {
            eni_filters: EniFilters::parse("Name=tag:mirror,Values=true").unwrap(),
            instance_filters: InstanceFilters::parse("Name=tag:team,Values=payments").unwrap(),
            exclude_tag: DEFAULT_EXCLUDE_TAG.into(),
            fleet_asg_name: Some("rebuilders".into()),
            requester_managed: BTreeSet::new(),
        }
    }

    fn reason(sel: &Selection, id: &str) -> Option<SkipReason> {
        sel.unwanted.get(id).copied()
    }

    #[test]
    fn an_eni_matching_the_eni_filters_is_wanted() {
        let observed = Observed {
            enis: vec![
                eni("eni-1", None, &[("mirror", "true")]),
                eni("eni-2", None, &[]),
            ],
            ..Observed::default()
        };
        let sel = selector().select(&observed);
        assert!(sel.is_wanted("eni-1"));
        assert_eq!(reason(&sel, "eni-2"), Some(SkipReason::NotSelected));
    }

    #[test]
    fn an_eni_of_an_instance_matching_the_instance_filters_is_wanted() {
        let observed = Observed {
            enis: vec![
                eni("eni-1", Some("i-1"), &[]),
                eni("eni-2", Some("i-2"), &[]),
            ],
            instances: vec![
                instance("i-1", &[("team", "payments")]),
                instance("i-2", &[("team", "search")]),
            ],
            ..Observed::default()
        };
        let sel = selector().select(&observed);
        assert_eq!(sel.wanted, ["eni-1".to_owned()].into());
        assert_eq!(reason(&sel, "eni-2"), Some(SkipReason::NotSelected));
    }

    #[test]
    fn empty_filter_lists_select_nothing() {
        let observed = Observed {
            enis: vec![eni("eni-1", Some("i-1"), &[("mirror", "true")])],
            instances: vec![instance("i-1", &[])],
            ..Observed::default()
        };
        let sel = Selector::default().select(&observed);
        assert!(sel.wanted.is_empty());
        assert_eq!(reason(&sel, "eni-1"), Some(SkipReason::NotSelected));
    }

    #[test]
    fn the_exclude_tag_on_the_eni_or_its_instance_excludes_unless_false() {
        let observed = Observed {
            enis: vec![
                eni(
                    "eni-1",
                    None,
                    &[("mirror", "true"), (DEFAULT_EXCLUDE_TAG, "")],
                ),
                eni("eni-2", Some("i-2"), &[("mirror", "true")]),
                eni(
                    "eni-3",
                    None,
                    &[("mirror", "true"), (DEFAULT_EXCLUDE_TAG, "False")],
                ),
            ],
            instances: vec![instance("i-2", &[(DEFAULT_EXCLUDE_TAG, "yes")])],
            ..Observed::default()
        };
        let sel = selector().select(&observed);
        assert_eq!(reason(&sel, "eni-1"), Some(SkipReason::ExcludeTag));
        assert_eq!(reason(&sel, "eni-2"), Some(SkipReason::InstanceExcludeTag));
        assert!(sel.is_wanted("eni-3"));
    }

    #[test]
    fn a_custom_exclude_tag_replaces_the_default() {
        let mut s = selector();
        s.exclude_tag = "skip-me".into();
        let observed = Observed {
            enis: vec![
                eni(
                    "eni-1",
                    None,
                    &[("mirror", "true"), (DEFAULT_EXCLUDE_TAG, "true")],
                ),
                eni("eni-2", None, &[("mirror", "true"), ("skip-me", "true")]),
            ],
            ..Observed::default()
        };
        let sel = s.select(&observed);
        assert!(sel.is_wanted("eni-1"));
        assert_eq!(reason(&sel, "eni-2"), Some(SkipReason::ExcludeTag));
    }

    #[test]
    fn our_rebuilder_fleet_is_never_mirrored() {
        let observed = Observed {
            enis: vec![
                eni("eni-1", Some("i-1"), &[("mirror", "true")]),
                eni("eni-2", Some("i-2"), &[("mirror", "true")]),
            ],
            instances: vec![
                instance("i-1", &[(ASG_NAME_TAG, "rebuilders")]),
                instance("i-2", &[(ASG_NAME_TAG, "web")]),
            ],
            ..Observed::default()
        };
        let sel = selector().select(&observed);
        assert_eq!(reason(&sel, "eni-1"), Some(SkipReason::RebuilderFleet));
        assert!(sel.is_wanted("eni-2"));
    }

    #[test]
    fn the_target_load_balancer_enis_and_target_enis_are_excluded() {
        let mut nlb = eni("eni-nlb", None, &[("mirror", "true")]);
        nlb.description = "ELB net/mirror-nlb/50dc6c495c0c9188".into();
        nlb.interface_type = "network_load_balancer".into();
        let mut other_lb = eni("eni-other-lb", None, &[("mirror", "true")]);
        other_lb.description = "ELB net/other/1111".into();
        let observed = Observed {
            enis: vec![nlb, other_lb, eni("eni-tgt", None, &[("mirror", "true")])],
            targets: vec![
                MirrorTarget {
                    id: "tmt-1".into(),
                    network_load_balancer_arn: Some(
                        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/mirror-nlb/50dc6c495c0c9188".into(),
                    ),
                    ..MirrorTarget::default()
                },
                MirrorTarget {
                    id: "tmt-2".into(),
                    network_interface_id: Some("eni-tgt".into()),
                    ..MirrorTarget::default()
                },
            ],
            ..Observed::default()
        };
        let sel = selector().select(&observed);
        assert_eq!(
            reason(&sel, "eni-nlb"),
            Some(SkipReason::MirrorTargetLoadBalancer)
        );
        assert_eq!(reason(&sel, "eni-tgt"), Some(SkipReason::IsMirrorTarget));
        assert!(sel.is_wanted("eni-other-lb"));
    }

    #[test]
    fn in_gwlb_mode_gateway_load_balancer_and_endpoint_enis_are_excluded_even_when_elb_enis_are_allowed()
     {
        let lb_type = |id: &str, kind: &str, description: &str| {
            let mut e = eni(id, None, &[("mirror", "true")]);
            e.interface_type = kind.into();
            e.description = description.into();
            e.requester_managed = Some(true);
            e.requester_id = Some("amazon-elb".into());
            e
        };
        let enis = vec![
            lb_type(
                "eni-gwlb",
                "gateway_load_balancer",
                "ELB gwy/mirrorfleet/0123abcd",
            ),
            lb_type(
                "eni-gwlbe",
                "gateway_load_balancer_endpoint",
                "VPC Endpoint Interface vpce-0123456789abcdef0",
            ),
            lb_type("eni-alb", "interface", "ELB app/web/89ab"),
        ];
        let gwlbe = MirrorTarget {
            id: "tmt-g".into(),
            gateway_load_balancer_endpoint_id: Some("vpce-0123456789abcdef0".into()),
            ..MirrorTarget::default()
        };
        let mut sel = selector();
        sel.requester_managed.insert("amazon-elb".into());
        let gwlb_mode = Observed {
            enis: enis.clone(),
            targets: vec![gwlbe],
            ..Observed::default()
        };
        let picked = sel.select(&gwlb_mode);
        for id in ["eni-gwlb", "eni-gwlbe"] {
            assert_eq!(
                reason(&picked, id),
                Some(SkipReason::MirrorTargetLoadBalancer),
                "{id}"
            );
        }
        assert!(picked.is_wanted("eni-alb"));
        // NLB mode: the rule does not apply (the NLB's own ENIs are matched by description).
        let nlb_mode = Observed {
            enis,
            ..Observed::default()
        };
        let picked = sel.select(&nlb_mode);
        assert!(picked.is_wanted("eni-gwlb") && picked.is_wanted("eni-alb"));
    }

    /// A requester-managed ENI as `DescribeNetworkInterfaces` returns it.
    fn managed(id: &str, requester: &str, description: &str) -> Eni {
        Eni {
            description: description.into(),
            requester_id: Some(requester.into()),
            requester_managed: Some(true),
            ..eni(id, None, &[("mirror", "true")])
        }
    }

    #[test]
    fn requester_managed_enis_are_excluded_unless_their_requester_is_allowed() {
        let observed = Observed {
            enis: vec![
                managed(
                    "eni-vpce",
                    "727180483921",
                    "VPC Endpoint Interface vpce-0123",
                ),
                managed(
                    "eni-nat",
                    "810120213112",
                    "Interface for NAT Gateway nat-0123",
                ),
                managed(
                    "eni-lambda",
                    "AROAEXAMPLE:lambda",
                    "AWS Lambda VPC ENI-fn-1",
                ),
                managed("eni-alb", "amazon-elb", "ELB app/web/50dc6c495c0c9188"),
                eni("eni-app", None, &[("mirror", "true")]),
            ],
            ..Observed::default()
        };
        let sel = selector().select(&observed);
        for id in ["eni-vpce", "eni-nat", "eni-lambda", "eni-alb"] {
            assert_eq!(reason(&sel, id), Some(SkipReason::RequesterManaged), "{id}");
        }
        assert!(sel.is_wanted("eni-app"));

        let mut elb = selector();
        elb.requester_managed = ["amazon-elb".to_owned()].into();
        let sel = elb.select(&observed);
        assert!(
            sel.is_wanted("eni-alb"),
            "the load-balancer recipe allows amazon-elb"
        );
        assert_eq!(reason(&sel, "eni-vpce"), Some(SkipReason::RequesterManaged));
    }

    #[test]
    fn mirroring_a_load_balancer_and_instances_of_its_vpc_is_warned_about() {
        let mut alb = managed("eni-alb", "amazon-elb", "ELB app/shop/50dc6c495c0c9188");
        alb.requester_managed = Some(false);
        let mut other_vpc = eni("eni-elsewhere", Some("i-9"), &[("mirror", "true")]);
        other_vpc.vpc_id = "vpc-2".into();
        let observed = Observed {
            enis: vec![
                alb,
                eni("eni-web-1", Some("i-1"), &[("mirror", "true")]),
                eni("eni-web-2", Some("i-2"), &[("mirror", "true")]),
                other_vpc,
            ],
            ..Observed::default()
        };
        let sel = selector().select(&observed);
        let warnings = selection_warnings(&sel, &observed);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("app shop"), "{}", warnings[0]);
        assert!(
            warnings[0].contains("2 instance ENI(s) in vpc-1"),
            "{}",
            warnings[0]
        );
        // The balancer alone, or the instances alone: nothing to warn about.
        let only_instances = Observed {
            enis: observed.enis[1..].to_vec(),
            ..Observed::default()
        };
        let sel = selector().select(&only_instances);
        assert!(selection_warnings(&sel, &only_instances).is_empty());
    }

    #[test]
    fn selection_does_not_depend_on_order_or_duplicates() {
        let enis = vec![
            eni("eni-1", Some("i-1"), &[]),
            eni("eni-2", None, &[("mirror", "true")]),
            eni("eni-3", None, &[]),
        ];
        let instances = vec![instance("i-1", &[("team", "payments")])];
        let a = selector().select(&Observed {
            enis: enis.clone(),
            instances: instances.clone(),
            ..Observed::default()
        });
        let mut shuffled: Vec<Eni> = enis.iter().rev().cloned().collect();
        shuffled.push(enis[0].clone());
        let b = selector().select(&Observed {
            enis: shuffled,
            instances: [instances.clone(), instances].concat(),
            ..Observed::default()
        });
        assert_eq!(a, b);
        assert_eq!(a.wanted.len(), 2);
    }
}
