//! `plan(desired, observed, spec)`: the actions that bring the observed sessions to the
//! desired state. Pure and deterministic: the same inputs in any order (and with duplicates)
//! give the same plan, sorted by ENI id, then session number, then session id.
//!
//! Rules, per ENI (only ENIs in the [`Scope`]):
//! - wanted, no owned session: create one with a session number not used on the ENI (by any
//!   session) in 1..=32766 — the highest free one by default ([`SessionPriority::Low`]: other
//!   tools' sessions are evaluated first and keep their traffic), the lowest with
//!   [`SessionPriority::High`]; an ENI already carrying 3 sessions is skipped
//!   ([`SkipReason::SessionLimit`]), and so is one AWS refused before and that has not changed
//!   since ([`SkipReason::Refused`], see [`crate::refusals`]).
//! - wanted, owned sessions: keep one (the one already matching the spec, else the lowest
//!   number, then the lowest id); modify it if its target, filter, VNI or packet length
//!   drifted — compared as AWS describes them ([`drift`]: a packet length equal to the
//!   target's default is "whole packets"); delete the other owned ones
//!   ([`DeleteReason::Duplicate`]).
//! - not wanted: delete its owned sessions ([`DeleteReason::Unwanted`]).
//! - not observed at all: delete its owned sessions ([`DeleteReason::EniGone`]).
//!
//! Sessions without our owner tag (or with another owner's value) are never modified or
//! deleted; they only count towards the 3-per-ENI limit and the numbers in use, and one with a
//! lower number than ours is listed as shadowing it ([`Plan::shadowed`]): AWS mirrors each
//! packet once, for the first session by number whose filter matches.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{
    Eni, MAX_SESSIONS_PER_ENI, MirrorSpec, Observed, SESSION_NUMBER_MAX, SESSION_NUMBER_MIN,
    Session, SessionPriority, Tags,
};
use crate::refusals::Fingerprints;
use crate::report::ErrorClass;
use crate::selection::{Selection, Selector, SkipReason, canonical};

/// Which ENIs a run may act on. An event narrows the scope; the schedule uses [`Scope::All`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Scope {
    /// Every observed ENI and every owned session.
    #[default]
    All,
    /// Only these ENIs, and the ENIs attached to these instances.
    Only {
        eni_ids: BTreeSet<String>,
        instance_ids: BTreeSet<String>,
    },
}

impl Scope {
    /// A scope of just these ENIs.
    pub fn enis(ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Scope::Only {
            eni_ids: ids.into_iter().map(Into::into).collect(),
            instance_ids: BTreeSet::new(),
        }
    }

    /// A scope of the ENIs attached to these instances.
    pub fn instances(ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Scope::Only {
            eni_ids: BTreeSet::new(),
            instance_ids: ids.into_iter().map(Into::into).collect(),
        }
    }

    /// True for the full scope.
    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }

    /// Whether an ENI (by id, and by its observed attachment if any) is in scope.
    pub fn contains(&self, eni_id: &str, eni: Option<&Eni>) -> bool {
        match self {
            Scope::All => true,
            Scope::Only {
                eni_ids,
                instance_ids,
            } => {
                eni_ids.contains(eni_id)
                    || eni
                        .and_then(|e| e.attachment_instance_id.as_deref())
                        .is_some_and(|i| instance_ids.contains(i))
            }
        }
    }
}

/// Create a session (`CreateTrafficMirrorSession`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CreateSession {
    pub eni_id: String,
    pub target_id: String,
    pub filter_id: String,
    pub number: u32,
    pub vni: u32,
    pub packet_length: Option<u32>,
    /// `TagSpecifications` for resource type `traffic-mirror-session`: the owner tag.
    pub tags: Tags,
    /// `ClientToken`, see [`client_token`].
    pub client_token: String,
}

/// Why an owned session is deleted. [`DeleteReason::as_str`] is a bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// The ENI was not observed (deleted, or not returned by the describes).
    EniGone,
    /// The ENI is observed but no longer wanted.
    Unwanted { because: SkipReason },
    /// Another owned session on the same ENI is kept.
    Duplicate { kept_session_id: String },
}

impl DeleteReason {
    /// Stable label.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeleteReason::EniGone => "eni_gone",
            DeleteReason::Unwanted { .. } => "unwanted",
            DeleteReason::Duplicate { .. } => "duplicate",
        }
    }
}

/// Delete a session we own (`DeleteTrafficMirrorSession`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeleteSession {
    pub session_id: String,
    pub eni_id: String,
    pub number: u32,
    pub reason: DeleteReason,
}

/// One drifted field of an owned session, with its observed and desired value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// `TrafficMirrorTargetId`.
    Target { from: String, to: String },
    /// `TrafficMirrorFilterId`.
    Filter { from: String, to: String },
    /// `VirtualNetworkId`.
    Vni { from: Option<u32>, to: u32 },
    /// `PacketLength`; `to: None` means `RemoveFields=["packet-length"]`.
    PacketLength { from: Option<u32>, to: Option<u32> },
}

impl Change {
    /// Stable field label: `target`, `filter`, `vni`, `packet_length`.
    pub fn field(&self) -> &'static str {
        match self {
            Change::Target { .. } => "target",
            Change::Filter { .. } => "filter",
            Change::Vni { .. } => "vni",
            Change::PacketLength { .. } => "packet_length",
        }
    }
}

/// Modify a session we own (`ModifyTrafficMirrorSession`): apply each change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModifySession {
    pub session_id: String,
    pub eni_id: String,
    pub number: u32,
    /// Never empty; in the order target, filter, vni, packet length.
    pub changes: Vec<Change>,
}

/// A wanted ENI whose owned session already matches the spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Unchanged {
    pub eni_id: String,
    pub session_id: String,
}

/// An ENI in scope for which nothing is done, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Skipped {
    pub eni_id: String,
    pub reason: SkipReason,
}

/// One of our sessions (kept, or about to be created) with a foreign session of a lower number
/// on the same ENI: that one is evaluated first and takes every packet its filter matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shadowed {
    pub eni_id: String,
    /// Ours; `None` for a session this plan creates.
    pub session_id: Option<String>,
    pub number: u32,
    /// The foreign session with the lowest number on the ENI.
    pub by_session_id: String,
    pub by_number: u32,
}

/// A wanted ENI not tried because AWS refused it before and it has not changed since.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefusedEni {
    pub eni_id: String,
    pub class: ErrorClass,
    /// The API's error code then.
    pub code: String,
    pub message: String,
    /// First refused (Unix seconds).
    pub since_unix: u64,
}

/// What to do. Each list is sorted by ENI id (then session number and id).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    pub create: Vec<CreateSession>,
    pub delete: Vec<DeleteSession>,
    pub modify: Vec<ModifySession>,
    pub unchanged: Vec<Unchanged>,
    pub skipped: Vec<Skipped>,
    /// Our sessions that a foreign session with a lower number may starve.
    pub shadowed: Vec<Shadowed>,
    /// The ENIs skipped as [`SkipReason::Refused`], with what AWS answered.
    pub refused: Vec<RefusedEni>,
}

impl Plan {
    /// True when there is nothing to create, delete or modify.
    pub fn is_noop(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty() && self.modify.is_empty()
    }
}

/// ClientTokens are bucketed by this window of the observation time: concurrent runs in the
/// same window send the same token (AWS deduplicates), and a session deleted and wanted
/// again is recreated at the latest in the next window (AWS remembers a token for a while
/// and would otherwise answer with the deleted session).
pub const CLIENT_TOKEN_WINDOW_SECS: u64 = 3600;

/// 64-bit FNV-1a.
fn fnv1a64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The deterministic `ClientToken` of a `CreateTrafficMirrorSession` request: `mf1-` and 32
/// hex digits (36 ASCII characters), a hash of every request parameter (ENI, target, filter,
/// session number, VNI, packet length, owner) and of the observation time bucket
/// ([`CLIENT_TOKEN_WINDOW_SECS`]). AWS requires a distinct token for distinct parameters.
pub fn client_token(eni_id: &str, spec: &MirrorSpec, number: u32, observed_at_unix: u64) -> String {
    let bucket = observed_at_unix / CLIENT_TOKEN_WINDOW_SECS;
    let packet_length = spec
        .packet_length
        .map_or_else(|| "-".to_owned(), |p| p.to_string());
    let input = [
        eni_id,
        &spec.target_id,
        &spec.filter_id,
        &number.to_string(),
        &spec.vni.to_string(),
        &packet_length,
        &spec.owner,
        &bucket.to_string(),
    ]
    .join("\u{1f}");
    let a = fnv1a64(0xcbf2_9ce4_8422_2325, input.as_bytes());
    let b = fnv1a64(0x6c62_272e_07bb_0142, input.as_bytes());
    format!("mf1-{a:016x}{b:016x}")
}

/// A packet length as AWS means it: `None` (whole packets) for an explicit value equal to the
/// default AWS fills in for the target (8500 for an NLB, see
/// [`crate::model::MirrorTarget::default_packet_length`]).
fn whole_packets_as_none(packet_length: Option<u32>, default: Option<u32>) -> Option<u32> {
    match (packet_length, default) {
        (Some(p), Some(d)) if p == d => None,
        (p, _) => p,
    }
}

/// The changes that bring `session` to `spec` (empty when it matches), comparing every field
/// we set as AWS describes it: target, filter, VNI exactly; the packet length with
/// `default_packet_length` (the target's, [`crate::model::MirrorTarget::default_packet_length`])
/// and "none" taken as the same value, because AWS describes a session created without one on an
/// NLB target with 8500 — without that, every run would remove the field and AWS would put 8500
/// back. The session number, description and tags are not ours to converge (the owner tag is
/// what makes a session ours).
pub fn drift(
    session: &Session,
    spec: &MirrorSpec,
    default_packet_length: Option<u32>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    if session.target_id != spec.target_id {
        changes.push(Change::Target {
            from: session.target_id.clone(),
            to: spec.target_id.clone(),
        });
    }
    if session.filter_id != spec.filter_id {
        changes.push(Change::Filter {
            from: session.filter_id.clone(),
            to: spec.filter_id.clone(),
        });
    }
    if session.vni != Some(spec.vni) {
        changes.push(Change::Vni {
            from: session.vni,
            to: spec.vni,
        });
    }
    if whole_packets_as_none(session.packet_length, default_packet_length)
        != whole_packets_as_none(spec.packet_length, default_packet_length)
    {
        changes.push(Change::PacketLength {
            from: session.packet_length,
            to: spec.packet_length,
        });
    }
    changes
}

/// A session number in 1..=32766 not in `used`: the highest free one for
/// [`SessionPriority::Low`], the lowest for [`SessionPriority::High`].
fn free_number(used: &BTreeSet<u32>, priority: SessionPriority) -> Option<u32> {
    let mut all = SESSION_NUMBER_MIN..=SESSION_NUMBER_MAX;
    let free = |n: &u32| !used.contains(n);
    match priority {
        SessionPriority::Low => all.rev().find(free),
        SessionPriority::High => all.find(free),
    }
}

/// The foreign session evaluated before ours (number `ours`), if any: the lowest-numbered one.
fn shadowing<'a>(sessions: &[&'a Session], owner: &str, ours: u32) -> Option<&'a Session> {
    sessions
        .iter()
        .copied()
        .filter(|s| !s.is_owned_by(owner) && s.number < ours)
        .min_by_key(|s| (s.number, &s.id))
}

/// Plan over the full scope.
pub fn plan(desired: &Selection, observed: &Observed, spec: &MirrorSpec) -> Plan {
    plan_scoped(&Scope::All, desired, observed, spec)
}

/// Plan for the ENIs in `scope` only (an event run). `desired` is usually
/// `selector.select(observed)`; an observed ENI absent from it counts as not selected.
/// O((ENIs + sessions) · log).
pub fn plan_scoped(
    scope: &Scope,
    desired: &Selection,
    observed: &Observed,
    spec: &MirrorSpec,
) -> Plan {
    let enis: BTreeMap<&str, &Eni> = canonical(&observed.enis, |e| &e.id)
        .into_iter()
        .map(|e| (e.id.as_str(), e))
        .collect();
    // Sessions per ENI, sorted by (number, id): canonical() sorts by id first, so re-sort.
    let mut by_eni: BTreeMap<&str, Vec<&Session>> = BTreeMap::new();
    for s in canonical(&observed.sessions, |s| &s.id) {
        by_eni.entry(s.eni_id.as_str()).or_default().push(s);
    }
    for list in by_eni.values_mut() {
        list.sort_by(|a, b| (a.number, &a.id).cmp(&(b.number, &b.id)));
    }
    let mut eni_ids: BTreeSet<&str> = enis.keys().copied().collect();
    for (eni_id, sessions) in &by_eni {
        if sessions.iter().any(|s| s.is_owned_by(&spec.owner)) {
            eni_ids.insert(eni_id);
        }
    }

    let default_packet_length = observed
        .target(&spec.target_id)
        .and_then(|t| t.default_packet_length());
    let fingerprints = Fingerprints::new(observed, spec);
    let mut plan = Plan::default();
    let no_sessions: Vec<&Session> = Vec::new();
    for eni_id in eni_ids {
        let eni = enis.get(eni_id).copied();
        if !scope.contains(eni_id, eni) {
            continue;
        }
        let sessions = by_eni.get(eni_id).unwrap_or(&no_sessions);
        let owned: Vec<&Session> = sessions
            .iter()
            .copied()
            .filter(|s| s.is_owned_by(&spec.owner))
            .collect();
        let verdict = match eni {
            None => Err(None),
            Some(_) if desired.is_wanted(eni_id) => Ok(()),
            Some(_) => Err(Some(
                desired
                    .unwanted
                    .get(eni_id)
                    .copied()
                    .unwrap_or(SkipReason::NotSelected),
            )),
        };
        match verdict {
            Ok(()) if owned.is_empty() => {
                if sessions.len() >= MAX_SESSIONS_PER_ENI {
                    plan.skipped.push(Skipped {
                        eni_id: eni_id.to_owned(),
                        reason: SkipReason::SessionLimit,
                    });
                    continue;
                }
                if let Some(r) = observed.refused.blocking(eni_id, &fingerprints) {
                    plan.refused.push(RefusedEni {
                        eni_id: eni_id.to_owned(),
                        class: r.class,
                        code: r.code.clone(),
                        message: r.message.clone(),
                        since_unix: r.first_refused_unix,
                    });
                    plan.skipped.push(Skipped {
                        eni_id: eni_id.to_owned(),
                        reason: SkipReason::Refused,
                    });
                    continue;
                }
                let used: BTreeSet<u32> = sessions.iter().map(|s| s.number).collect();
                match free_number(&used, spec.priority) {
                    Some(number) => {
                        if let Some(by) = shadowing(sessions, &spec.owner, number) {
                            plan.shadowed.push(Shadowed {
                                eni_id: eni_id.to_owned(),
                                session_id: None,
                                number,
                                by_session_id: by.id.clone(),
                                by_number: by.number,
                            });
                        }
                        plan.create.push(CreateSession {
                            eni_id: eni_id.to_owned(),
                            target_id: spec.target_id.clone(),
                            filter_id: spec.filter_id.clone(),
                            number,
                            vni: spec.vni,
                            packet_length: spec.packet_length,
                            tags: spec.session_tags(),
                            client_token: client_token(
                                eni_id,
                                spec,
                                number,
                                observed.observed_at_unix,
                            ),
                        });
                    }
                    None => plan.skipped.push(Skipped {
                        eni_id: eni_id.to_owned(),
                        reason: SkipReason::NoFreeSessionNumber,
                    }),
                }
            }
            Ok(()) => {
                // Keep the first session that already matches the spec, else the first.
                let drifts: Vec<Vec<Change>> = owned
                    .iter()
                    .map(|s| drift(s, spec, default_packet_length))
                    .collect();
                let keep = drifts.iter().position(Vec::is_empty).unwrap_or(0);
                let kept = owned[keep];
                if let Some(by) = shadowing(sessions, &spec.owner, kept.number) {
                    plan.shadowed.push(Shadowed {
                        eni_id: eni_id.to_owned(),
                        session_id: Some(kept.id.clone()),
                        number: kept.number,
                        by_session_id: by.id.clone(),
                        by_number: by.number,
                    });
                }
                for (i, s) in owned.iter().enumerate() {
                    if i != keep {
                        plan.delete.push(DeleteSession {
                            session_id: s.id.clone(),
                            eni_id: eni_id.to_owned(),
                            number: s.number,
                            reason: DeleteReason::Duplicate {
                                kept_session_id: kept.id.clone(),
                            },
                        });
                    }
                }
                let changes = drifts.into_iter().nth(keep).unwrap_or_default();
                if changes.is_empty() {
                    plan.unchanged.push(Unchanged {
                        eni_id: eni_id.to_owned(),
                        session_id: kept.id.clone(),
                    });
                } else {
                    plan.modify.push(ModifySession {
                        session_id: kept.id.clone(),
                        eni_id: eni_id.to_owned(),
                        number: kept.number,
                        changes,
                    });
                }
            }
            Err(because) => {
                if owned.is_empty() {
                    if let Some(reason) = because {
                        plan.skipped.push(Skipped {
                            eni_id: eni_id.to_owned(),
                            reason,
                        });
                    }
                    continue;
                }
                let reason = match because {
                    None => DeleteReason::EniGone,
                    Some(because) => DeleteReason::Unwanted { because },
                };
                for s in owned {
                    plan.delete.push(DeleteSession {
                        session_id: s.id.clone(),
                        eni_id: eni_id.to_owned(),
                        number: s.number,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }
    plan
}

/// Select, then plan within `scope`: the whole pure part of a run.
pub fn reconcile(
    scope: &Scope,
    selector: &Selector,
    observed: &Observed,
    spec: &MirrorSpec,
) -> Plan {
    plan_scoped(scope, &selector.select(observed), observed, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::EniFilters;
    use crate::model::{MirrorTarget, OWNER_TAG_KEY};

    const OWNER: &str = "prod";

    fn spec() -> MirrorSpec {
        MirrorSpec {
            target_id: "tmt-1".into(),
            filter_id: "tmf-1".into(),
            vni: 42,
            packet_length: None,
            owner: OWNER.into(),
            priority: SessionPriority::Low,
        }
    }

    fn eni(id: &str, wanted: bool) -> Eni {
        let mut e = Eni {
            id: id.into(),
            interface_type: "interface".into(),
            ..Eni::default()
        };
        if wanted {
            e.tags.insert("mirror".into(), "true".into());
        }
        e
    }

    fn session(id: &str, eni: &str, number: u32, owner: Option<&str>) -> Session {
        let mut s = Session {
            id: id.into(),
            eni_id: eni.into(),
            target_id: "tmt-1".into(),
            filter_id: "tmf-1".into(),
            number,
            vni: Some(42),
            packet_length: None,
            tags: Tags::new(),
        };
        if let Some(o) = owner {
            s.tags.insert(OWNER_TAG_KEY.into(), o.into());
        }
        s
    }

    fn selector() -> Selector {
        Selector {
            eni_filters: EniFilters::parse("Name=tag:mirror,Values=true").unwrap(),
            ..Selector::default()
        }
    }

    fn run(scope: &Scope, observed: &Observed) -> Plan {
        reconcile(scope, &selector(), observed, &spec())
    }

    #[test]
    fn a_wanted_eni_gets_the_highest_free_session_number_by_default_and_is_shadowed_by_lower_ones()
    {
        let observed = Observed {
            enis: vec![eni("eni-1", true), eni("eni-2", true)],
            sessions: vec![
                session("tms-a", "eni-1", 1, None),
                session("tms-b", "eni-1", 32766, Some("someone-else")),
            ],
            ..Observed::default()
        };
        let plan = run(&Scope::All, &observed);
        let created: Vec<(&str, u32)> = plan
            .create
            .iter()
            .map(|c| (c.eni_id.as_str(), c.number))
            .collect();
        assert_eq!(created, vec![("eni-1", 32765), ("eni-2", 32766)]);
        let c = &plan.create[0];
        assert_eq!(c.tags.get(OWNER_TAG_KEY).map(String::as_str), Some(OWNER));
        assert_eq!((c.vni, c.packet_length), (42, None));
        assert!(plan.delete.is_empty() && plan.modify.is_empty());
        assert_eq!(
            plan.shadowed,
            vec![Shadowed {
                eni_id: "eni-1".into(),
                session_id: None,
                number: 32765,
                by_session_id: "tms-a".into(),
                by_number: 1,
            }]
        );
    }

    #[test]
    fn high_priority_takes_the_lowest_free_number_and_is_shadowed_by_none_below_it() {
        let mut s = spec();
        s.priority = SessionPriority::High;
        let observed = Observed {
            enis: vec![eni("eni-1", true), eni("eni-2", true)],
            sessions: vec![
                session("tms-a", "eni-1", 1, None),
                session("tms-b", "eni-1", 3, Some("someone-else")),
            ],
            ..Observed::default()
        };
        let plan = reconcile(&Scope::All, &selector(), &observed, &s);
        let created: Vec<(&str, u32)> = plan
            .create
            .iter()
            .map(|c| (c.eni_id.as_str(), c.number))
            .collect();
        assert_eq!(created, vec![("eni-1", 2), ("eni-2", 1)]);
        let shadowed: Vec<(&str, &str)> = plan
            .shadowed
            .iter()
            .map(|x| (x.eni_id.as_str(), x.by_session_id.as_str()))
            .collect();
        assert_eq!(shadowed, vec![("eni-1", "tms-a")]);
    }

    #[test]
    fn a_kept_session_with_a_foreign_one_below_it_is_listed_as_shadowed() {
        let observed = Observed {
            enis: vec![eni("eni-1", true), eni("eni-2", true)],
            sessions: vec![
                session("tms-ours", "eni-1", 10, Some(OWNER)),
                session("tms-ids", "eni-1", 5, Some("ids")),
                session("tms-low", "eni-1", 7, None),
                session("tms-ours-2", "eni-2", 1, Some(OWNER)),
                session("tms-after", "eni-2", 2, None),
            ],
            ..Observed::default()
        };
        let plan = run(&Scope::All, &observed);
        assert!(plan.is_noop(), "{plan:?}");
        assert_eq!(
            plan.shadowed,
            vec![Shadowed {
                eni_id: "eni-1".into(),
                session_id: Some("tms-ours".into()),
                number: 10,
                by_session_id: "tms-ids".into(),
                by_number: 5,
            }]
        );
    }

    #[test]
    fn an_eni_aws_refused_is_not_tried_again_until_it_changes() {
        use crate::refusals::{FailedCreate, Fingerprints, Refusals};
        let observed = Observed {
            enis: vec![eni("eni-1", true), eni("eni-2", true)],
            observed_at_unix: 1_000,
            ..Observed::default()
        };
        let sp = spec();
        let refused = Refusals::default().next(
            &Scope::All,
            &Fingerprints::new(&observed, &sp),
            &BTreeSet::new(),
            &[FailedCreate {
                eni_id: "eni-1".into(),
                class: ErrorClass::UnsupportedSource,
                code: "NetworkInterfaceNotSupported".into(),
                message: "not supported".into(),
            }],
        );
        let mut again = observed.clone();
        again.refused = refused;
        again.observed_at_unix = 1_300;
        let plan = run(&Scope::All, &again);
        let created: Vec<&str> = plan.create.iter().map(|c| c.eni_id.as_str()).collect();
        assert_eq!(created, vec!["eni-2"]);
        assert_eq!(
            plan.skipped,
            vec![Skipped {
                eni_id: "eni-1".into(),
                reason: SkipReason::Refused
            }]
        );
        assert_eq!(plan.refused.len(), 1);
        assert_eq!(plan.refused[0].code, "NetworkInterfaceNotSupported");
        assert_eq!(plan.refused[0].since_unix, 1_000);
        // A tag changed on the ENI: tried again.
        again.enis[0].tags.insert("retry".into(), "1".into());
        let plan = run(&Scope::All, &again);
        assert_eq!(plan.create.len(), 2);
        assert!(plan.refused.is_empty());
    }

    #[test]
    fn an_eni_already_at_three_sessions_is_skipped_with_a_reason() {
        let observed = Observed {
            enis: vec![eni("eni-1", true)],
            sessions: (1..=3)
                .map(|n| session(&format!("tms-{n}"), "eni-1", n, None))
                .collect(),
            ..Observed::default()
        };
        let plan = run(&Scope::All, &observed);
        assert!(plan.is_noop());
        assert_eq!(
            plan.skipped,
            vec![Skipped {
                eni_id: "eni-1".into(),
                reason: SkipReason::SessionLimit
            }]
        );
    }

    #[test]
    fn the_free_number_skips_every_used_number_from_either_end() {
        let set = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        let (low, high) = (SessionPriority::Low, SessionPriority::High);
        assert_eq!(free_number(&set(&[]), high), Some(1));
        assert_eq!(free_number(&set(&[1, 2, 4]), high), Some(3));
        assert_eq!(free_number(&set(&[2, 3]), high), Some(1));
        assert_eq!(free_number(&set(&[]), low), Some(32766));
        assert_eq!(free_number(&set(&[32766, 32765, 1]), low), Some(32764));
        let all: BTreeSet<u32> = (SESSION_NUMBER_MIN..=SESSION_NUMBER_MAX).collect();
        assert_eq!(free_number(&all, low), None);
        assert_eq!(free_number(&all, high), None);
    }

    fn nlb_target() -> MirrorTarget {
        MirrorTarget {
            id: "tmt-1".into(),
            network_load_balancer_arn: Some(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/m/1".into(),
            ),
            ..MirrorTarget::default()
        }
    }

    fn gwlbe_target() -> MirrorTarget {
        MirrorTarget {
            id: "tmt-1".into(),
            gateway_load_balancer_endpoint_id: Some("vpce-0123456789abcdef0".into()),
            ..MirrorTarget::default()
        }
    }

    #[test]
    fn a_session_described_with_the_load_balancers_default_packet_length_is_converged() {
        for target in [nlb_target(), gwlbe_target()] {
            for (described, wanted) in [
                (Some(8500), None),
                (None, None),
                (None, Some(8500)),
                (Some(8500), Some(8500)),
            ] {
                let mut s = session("tms-1", "eni-1", 32766, Some(OWNER));
                s.packet_length = described;
                let mut sp = spec();
                sp.packet_length = wanted;
                let observed = Observed {
                    enis: vec![eni("eni-1", true)],
                    sessions: vec![s],
                    targets: vec![target.clone()],
                    ..Observed::default()
                };
                let plan = reconcile(&Scope::All, &selector(), &observed, &sp);
                assert!(
                    plan.is_noop(),
                    "{:?} described {described:?}, wanted {wanted:?}: {plan:?}",
                    target.kind()
                );
            }
        }
    }

    #[test]
    fn a_real_packet_length_difference_is_still_drift_whatever_the_target() {
        for target in [nlb_target(), gwlbe_target()] {
            let mut s = session("tms-1", "eni-1", 32766, Some(OWNER));
            s.packet_length = Some(1500);
            let observed = Observed {
                enis: vec![eni("eni-1", true)],
                sessions: vec![s],
                targets: vec![target],
                ..Observed::default()
            };
            let plan = run(&Scope::All, &observed);
            assert_eq!(plan.modify.len(), 1);
            assert_eq!(
                plan.modify[0].changes,
                vec![Change::PacketLength {
                    from: Some(1500),
                    to: None
                }]
            );
        }
    }

    #[test]
    fn an_eni_target_has_no_default_so_8500_is_a_packet_length() {
        let mut s = session("tms-1", "eni-1", 32766, Some(OWNER));
        s.packet_length = Some(8500);
        let observed = Observed {
            enis: vec![eni("eni-1", true)],
            sessions: vec![s],
            targets: vec![MirrorTarget {
                id: "tmt-1".into(),
                network_interface_id: Some("eni-target".into()),
                ..MirrorTarget::default()
            }],
            ..Observed::default()
        };
        assert_eq!(run(&Scope::All, &observed).modify.len(), 1);
    }

    #[test]
    fn owned_sessions_of_unwanted_or_gone_enis_are_deleted_and_others_left_alone() {
        let observed = Observed {
            enis: vec![eni("eni-untagged", false)],
            sessions: vec![
                session("tms-1", "eni-untagged", 1, Some(OWNER)),
                session("tms-2", "eni-untagged", 2, None),
                session("tms-3", "eni-gone", 1, Some(OWNER)),
                session("tms-4", "eni-gone", 2, Some("someone-else")),
            ],
            ..Observed::default()
        };
        let plan = run(&Scope::All, &observed);
        let deleted: Vec<(&str, &DeleteReason)> = plan
            .delete
            .iter()
            .map(|d| (d.session_id.as_str(), &d.reason))
            .collect();
        assert_eq!(
            deleted,
            vec![
                ("tms-3", &DeleteReason::EniGone),
                (
                    "tms-1",
                    &DeleteReason::Unwanted {
                        because: SkipReason::NotSelected
                    }
                ),
            ]
        );
        assert!(plan.create.is_empty() && plan.modify.is_empty());
        assert!(
            plan.skipped.is_empty(),
            "ENIs with a deletion are not also skipped"
        );
    }

    #[test]
    fn a_drifted_session_is_modified_field_by_field() {
        let mut s = session("tms-1", "eni-1", 1, Some(OWNER));
        s.vni = Some(7);
        s.packet_length = Some(100);
        s.filter_id = "tmf-old".into();
        let observed = Observed {
            enis: vec![eni("eni-1", true)],
            sessions: vec![s],
            ..Observed::default()
        };
        let plan = run(&Scope::All, &observed);
        assert_eq!(
            plan.modify,
            vec![ModifySession {
                session_id: "tms-1".into(),
                eni_id: "eni-1".into(),
                number: 1,
                changes: vec![
                    Change::Filter {
                        from: "tmf-old".into(),
                        to: "tmf-1".into()
                    },
                    Change::Vni {
                        from: Some(7),
                        to: 42
                    },
                    Change::PacketLength {
                        from: Some(100),
                        to: None
                    },
                ],
            }]
        );
        assert!(plan.create.is_empty() && plan.delete.is_empty());
    }

    #[test]
    fn an_unowned_drifted_session_is_not_modified_and_we_add_our_own() {
        let mut s = session("tms-1", "eni-1", 1, None);
        s.vni = Some(7);
        let observed = Observed {
            enis: vec![eni("eni-1", true)],
            sessions: vec![s],
            ..Observed::default()
        };
        let plan = run(&Scope::All, &observed);
        assert!(plan.modify.is_empty());
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create[0].number, 32766);
    }

    #[test]
    fn duplicate_owned_sessions_keep_the_matching_one() {
        let mut drifted = session("tms-a", "eni-1", 1, Some(OWNER));
        drifted.vni = Some(1);
        let observed = Observed {
            enis: vec![eni("eni-1", true)],
            sessions: vec![
                drifted,
                session("tms-b", "eni-1", 2, Some(OWNER)),
                session("tms-c", "eni-1", 3, Some(OWNER)),
            ],
            ..Observed::default()
        };
        let plan = run(&Scope::All, &observed);
        let deleted: Vec<&str> = plan.delete.iter().map(|d| d.session_id.as_str()).collect();
        assert_eq!(deleted, vec!["tms-a", "tms-c"]);
        assert_eq!(
            plan.delete[0].reason,
            DeleteReason::Duplicate {
                kept_session_id: "tms-b".into()
            }
        );
        assert!(plan.modify.is_empty());
        assert_eq!(
            plan.unchanged,
            vec![Unchanged {
                eni_id: "eni-1".into(),
                session_id: "tms-b".into()
            }]
        );
    }

    #[test]
    fn an_event_scope_only_acts_on_its_enis() {
        let mut attached = eni("eni-3", true);
        attached.attachment_instance_id = Some("i-1".into());
        let observed = Observed {
            enis: vec![eni("eni-1", true), eni("eni-2", true), attached],
            sessions: vec![
                session("tms-gone-in", "eni-9", 1, Some(OWNER)),
                session("tms-gone-out", "eni-8", 1, Some(OWNER)),
            ],
            ..Observed::default()
        };
        let plan = run(&Scope::enis(["eni-1", "eni-9"]), &observed);
        let created: Vec<&str> = plan.create.iter().map(|c| c.eni_id.as_str()).collect();
        assert_eq!(created, vec!["eni-1"]);
        let deleted: Vec<&str> = plan.delete.iter().map(|d| d.session_id.as_str()).collect();
        assert_eq!(deleted, vec!["tms-gone-in"]);

        let plan = run(&Scope::instances(["i-1"]), &observed);
        let created: Vec<&str> = plan.create.iter().map(|c| c.eni_id.as_str()).collect();
        assert_eq!(created, vec!["eni-3"]);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn client_tokens_are_short_ascii_deterministic_and_parameter_specific() {
        let s = spec();
        let t = client_token("eni-1", &s, 1, 1_000);
        assert!(t.len() <= 64 && t.is_ascii(), "{t}");
        assert_eq!(t, client_token("eni-1", &s, 1, 1_000));
        assert_eq!(t, client_token("eni-1", &s, 1, 1_100), "same window");
        assert_ne!(
            t,
            client_token("eni-1", &s, 1, 1_000 + CLIENT_TOKEN_WINDOW_SECS)
        );
        assert_ne!(t, client_token("eni-2", &s, 1, 1_000));
        assert_ne!(t, client_token("eni-1", &s, 2, 1_000));
        for changed in [
            MirrorSpec {
                target_id: "tmt-2".into(),
                ..s.clone()
            },
            MirrorSpec {
                filter_id: "tmf-2".into(),
                ..s.clone()
            },
            MirrorSpec {
                vni: 43,
                ..s.clone()
            },
            MirrorSpec {
                packet_length: Some(8500),
                ..s.clone()
            },
            MirrorSpec {
                owner: "dev".into(),
                ..s.clone()
            },
        ] {
            assert_ne!(t, client_token("eni-1", &changed, 1, 1_000), "{changed:?}");
        }
    }

    #[test]
    fn the_plan_is_the_same_whatever_the_input_order() {
        let enis: Vec<Eni> = (0..20)
            .map(|i| eni(&format!("eni-{i:02}"), i % 3 != 0))
            .collect();
        let sessions: Vec<Session> = (0..20)
            .map(|i| {
                session(
                    &format!("tms-{i:02}"),
                    &format!("eni-{:02}", i * 7 % 23),
                    1 + i % 2,
                    (i % 2 == 0).then_some(OWNER),
                )
            })
            .collect();
        let a = run(
            &Scope::All,
            &Observed {
                enis: enis.clone(),
                sessions: sessions.clone(),
                ..Observed::default()
            },
        );
        let b = run(
            &Scope::All,
            &Observed {
                enis: enis
                    .iter()
                    .rev()
                    .cloned()
                    .chain(enis.iter().take(3).cloned())
                    .collect(),
                sessions: sessions.iter().rev().cloned().collect(),
                ..Observed::default()
            },
        );
        assert_eq!(a, b);
        assert!(!a.create.is_empty() && !a.delete.is_empty());
    }
}
