//! `plan(desired, observed, spec)`: the actions that bring the observed sessions to the
//! desired state. Pure and deterministic: the same inputs in any order (and with duplicates)
//! give the same plan, sorted by ENI id, then session number, then session id.
//!
//! Rules, per ENI (only ENIs in the [`Scope`]):
//! - wanted, no owned session: create one with the lowest session number not used on the
//!   ENI (by any session) in 1..=32766; an ENI already carrying 3 sessions is skipped
//!   ([`SkipReason::SessionLimit`]).
//! - wanted, owned sessions: keep one (the one already matching the spec, else the lowest
//!   number, then the lowest id); modify it if its target, filter, VNI or packet length
//!   drifted; delete the other owned ones ([`DeleteReason::Duplicate`]).
//! - not wanted: delete its owned sessions ([`DeleteReason::Unwanted`]).
//! - not observed at all: delete its owned sessions ([`DeleteReason::EniGone`]).
//!
//! Sessions without our owner tag (or with another owner's value) are never modified or
//! deleted; they only count towards the 3-per-ENI limit and the numbers in use.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{
    Eni, MAX_SESSIONS_PER_ENI, MirrorSpec, Observed, SESSION_NUMBER_MAX, SESSION_NUMBER_MIN,
    Session, Tags,
};
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

/// What to do. Each list is sorted by ENI id (then session number and id).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    pub create: Vec<CreateSession>,
    pub delete: Vec<DeleteSession>,
    pub modify: Vec<ModifySession>,
    pub unchanged: Vec<Unchanged>,
    pub skipped: Vec<Skipped>,
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

/// The changes that bring `session` to `spec` (empty when it matches).
pub fn drift(session: &Session, spec: &MirrorSpec) -> Vec<Change> {
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
    if session.packet_length != spec.packet_length {
        changes.push(Change::PacketLength {
            from: session.packet_length,
            to: spec.packet_length,
        });
    }
    changes
}

/// The lowest session number in 1..=32766 not in `used` (`used` sorted ascending).
fn lowest_free_number(used: &[u32]) -> Option<u32> {
    let mut candidate = SESSION_NUMBER_MIN;
    for &n in used {
        if n == candidate {
            candidate += 1;
        } else if n > candidate {
            break;
        }
    }
    (candidate <= SESSION_NUMBER_MAX).then_some(candidate)
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
                let mut used: Vec<u32> = sessions.iter().map(|s| s.number).collect();
                used.sort_unstable();
                match lowest_free_number(&used) {
                    Some(number) => plan.create.push(CreateSession {
                        eni_id: eni_id.to_owned(),
                        target_id: spec.target_id.clone(),
                        filter_id: spec.filter_id.clone(),
                        number,
                        vni: spec.vni,
                        packet_length: spec.packet_length,
                        tags: spec.session_tags(),
                        client_token: client_token(eni_id, spec, number, observed.observed_at_unix),
                    }),
                    None => plan.skipped.push(Skipped {
                        eni_id: eni_id.to_owned(),
                        reason: SkipReason::NoFreeSessionNumber,
                    }),
                }
            }
            Ok(()) => {
                // Keep the first session that already matches the spec, else the first.
                let drifts: Vec<Vec<Change>> = owned.iter().map(|s| drift(s, spec)).collect();
                let keep = drifts.iter().position(Vec::is_empty).unwrap_or(0);
                let kept = owned[keep];
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
