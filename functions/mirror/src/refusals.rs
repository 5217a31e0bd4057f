//! The ENIs AWS refused, remembered level-triggered: a create refused with a permanent class
//! ([`ErrorClass::is_remembered`]: the instance type is not supported, the ENI is at its session
//! limit, our permissions do not reach it, ...) is not sent again while the ENI, as observed,
//! is the same — the same [`fingerprint`] — and the entry is younger than
//! [`RECHECK_AFTER_SECS`]. Anything that could change the answer changes the fingerprint: the
//! ENI's type, status, attachment, tags, requester; its instance's type and state; the sessions
//! on it; our spec (target, filter, VNI, packet length, owner); for account limits also the
//! number of sessions in the account. So an operator retries an ENI at once by touching one of
//! its tags.
//!
//! Why not a tag on the ENI: the ENI is not ours to write (and our role may not). The memory is
//! one small JSON document ([`Refusals`]) that reconcile-mirrors reads at the start of a run and
//! writes back when it changed (the stack keeps it next to the source map in S3; without one
//! configured nothing is remembered and every run tries again, as the report says). onboard-eni
//! does not read it: its events (an ENI created, attached, retagged, an instance started) are
//! themselves changes of the ENI, the cases where trying again is right.
//!
//! Pure: [`fingerprint`], [`Refusals::blocking`] (used by the planner) and [`Refusals::next`]
//! (the memory after a run).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{Eni, Instance, MirrorSpec, Observed, Session};
use crate::plan::Scope;
use crate::report::ErrorClass;

/// How long a refusal is trusted without a change: after this, the next reconcile tries the
/// ENI once more (AWS may have started supporting its instance type, a quota may have been
/// raised). One failed call per refused ENI per day.
pub const RECHECK_AFTER_SECS: u64 = 24 * 3600;

/// At most this many ENIs are remembered (the account holds at most 10,000 sessions, Traffic
/// Mirroring quotas); beyond it the oldest entries are dropped, which only means those ENIs
/// are tried again.
pub const MAX_REMEMBERED: usize = 10_000;

/// The document's format version.
pub const REFUSALS_VERSION: u32 = 1;

/// One refused ENI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// [`fingerprint`] of the ENI when it was refused.
    pub fingerprint: String,
    pub class: ErrorClass,
    /// The API's error code.
    pub code: String,
    pub message: String,
    /// When it was first refused with this fingerprint (Unix seconds).
    pub first_refused_unix: u64,
    /// The last create sent for it (Unix seconds).
    pub last_attempt_unix: u64,
}

/// What is remembered, by ENI id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    pub version: u32,
    pub enis: BTreeMap<String, Refusal>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            version: REFUSALS_VERSION,
            enis: BTreeMap::new(),
        }
    }
}

/// A create that failed in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCreate {
    pub eni_id: String,
    pub class: ErrorClass,
    pub code: String,
    pub message: String,
}

/// 64-bit FNV-1a.
fn fnv1a64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What the answer to a create for `eni` depends on, hashed: `fp1-` and 32 hex digits.
/// `account_sessions` is only part of it for [`ErrorClass::AccountLimit`] (pass `None` for the
/// other classes), so that freeing sessions anywhere retries those ENIs, and only those.
pub fn fingerprint(
    eni: &Eni,
    instance: Option<&Instance>,
    sessions: &[&Session],
    spec: &MirrorSpec,
    account_sessions: Option<usize>,
) -> String {
    let mut parts: Vec<String> = vec![
        eni.id.clone(),
        eni.interface_type.clone(),
        eni.status.clone().unwrap_or_default(),
        eni.subnet_id.clone(),
        format!("{:?}", eni.requester_managed),
        eni.requester_id.clone().unwrap_or_default(),
        eni.attachment_instance_id.clone().unwrap_or_default(),
        format!("{:?}", eni.tags),
    ];
    if let Some(i) = instance {
        parts.push(i.instance_type.clone());
        parts.push(i.state.clone().unwrap_or_default());
    }
    let mut on_eni: Vec<String> = sessions
        .iter()
        .map(|s| format!("{}:{}:{}", s.id, s.number, s.is_owned_by(&spec.owner)))
        .collect();
    on_eni.sort();
    parts.extend(on_eni);
    parts.push(format!(
        "{}|{}|{}|{:?}|{}",
        spec.target_id, spec.filter_id, spec.vni, spec.packet_length, spec.owner
    ));
    if let Some(n) = account_sessions {
        parts.push(format!("account:{n}"));
    }
    let input = parts.join("\u{1f}");
    let a = fnv1a64(0xcbf2_9ce4_8422_2325, input.as_bytes());
    let b = fnv1a64(0x6c62_272e_07bb_0142, input.as_bytes());
    format!("fp1-{a:016x}{b:016x}")
}

/// The fingerprint of every observed ENI, as each remembered class needs it.
pub struct Fingerprints<'a> {
    observed: &'a Observed,
    spec: &'a MirrorSpec,
    sessions: BTreeMap<&'a str, Vec<&'a Session>>,
    instances: BTreeMap<&'a str, &'a Instance>,
    enis: BTreeMap<&'a str, &'a Eni>,
    account_sessions: usize,
}

impl<'a> Fingerprints<'a> {
    pub fn new(observed: &'a Observed, spec: &'a MirrorSpec) -> Self {
        let mut sessions: BTreeMap<&str, Vec<&Session>> = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for s in &observed.sessions {
            if ids.insert(s.id.as_str()) {
                sessions.entry(s.eni_id.as_str()).or_default().push(s);
            }
        }
        Fingerprints {
            observed,
            spec,
            sessions,
            instances: observed
                .instances
                .iter()
                .map(|i| (i.id.as_str(), i))
                .collect(),
            enis: observed.enis.iter().map(|e| (e.id.as_str(), e)).collect(),
            account_sessions: ids.len(),
        }
    }

    /// The fingerprint of `eni_id` for a refusal of `class`; `None` when the ENI was not
    /// observed.
    pub fn of(&self, eni_id: &str, class: ErrorClass) -> Option<String> {
        let eni = self.enis.get(eni_id)?;
        let instance = eni
            .attachment_instance_id
            .as_deref()
            .and_then(|i| self.instances.get(i).copied());
        let sessions = self.sessions.get(eni_id).map(Vec::as_slice).unwrap_or(&[]);
        let account = (class == ErrorClass::AccountLimit).then_some(self.account_sessions);
        Some(fingerprint(eni, instance, sessions, self.spec, account))
    }

    /// When the observation was made.
    pub fn now(&self) -> u64 {
        self.observed.observed_at_unix
    }
}

impl Refusals {
    /// The refusal that still holds for `eni_id`: remembered, the same fingerprint now, and
    /// younger than [`RECHECK_AFTER_SECS`].
    pub fn blocking(&self, eni_id: &str, fingerprints: &Fingerprints<'_>) -> Option<&Refusal> {
        let r = self.enis.get(eni_id)?;
        let current = fingerprints.of(eni_id, r.class)?;
        let fresh = fingerprints.now() < r.last_attempt_unix.saturating_add(RECHECK_AFTER_SECS);
        (current == r.fingerprint && fresh).then_some(r)
    }

    /// The memory after a run over `scope`: the refusals that still held (and were therefore
    /// not tried) are kept, every create refused now with a remembered class is added (its
    /// first refusal time kept when the fingerprint is unchanged), and everything else in the
    /// scope is forgotten (created, no longer wanted, gone, or changed — it was tried again).
    /// Entries outside the scope are kept as they were. At most [`MAX_REMEMBERED`] entries, the
    /// most recently attempted first.
    pub fn next(
        &self,
        scope: &Scope,
        fingerprints: &Fingerprints<'_>,
        still_blocking: &BTreeSet<String>,
        failed: &[FailedCreate],
    ) -> Refusals {
        let now = fingerprints.now();
        let mut next = Refusals::default();
        for (eni, r) in &self.enis {
            let enis = fingerprints.enis.get(eni.as_str()).copied();
            if still_blocking.contains(eni) || !scope.contains(eni, enis) {
                next.enis.insert(eni.clone(), r.clone());
            }
        }
        for f in failed.iter().filter(|f| f.class.is_remembered()) {
            let Some(fingerprint) = fingerprints.of(&f.eni_id, f.class) else {
                continue;
            };
            let first = self
                .enis
                .get(&f.eni_id)
                .filter(|old| old.fingerprint == fingerprint)
                .map_or(now, |old| old.first_refused_unix);
            next.enis.insert(
                f.eni_id.clone(),
                Refusal {
                    fingerprint,
                    class: f.class,
                    code: f.code.clone(),
                    message: f.message.clone(),
                    first_refused_unix: first,
                    last_attempt_unix: now,
                },
            );
        }
        if next.enis.len() > MAX_REMEMBERED {
            let mut by_age: Vec<(u64, String)> = next
                .enis
                .iter()
                .map(|(id, r)| (r.last_attempt_unix, id.clone()))
                .collect();
            by_age.sort_by(|a, b| b.cmp(a));
            for (_, id) in by_age.into_iter().skip(MAX_REMEMBERED) {
                next.enis.remove(&id);
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OWNER_TAG_KEY, Tags};

    fn spec() -> MirrorSpec {
        MirrorSpec::for_tests("prod", 7)
    }

    fn world() -> Observed {
        Observed {
            enis: vec![Eni {
                id: "eni-1".into(),
                interface_type: "interface".into(),
                attachment_instance_id: Some("i-1".into()),
                ..Eni::default()
            }],
            instances: vec![Instance {
                id: "i-1".into(),
                instance_type: "m6i.large".into(),
                ..Instance::default()
            }],
            observed_at_unix: 1_000_000,
            ..Observed::default()
        }
    }

    fn refused(class: ErrorClass) -> FailedCreate {
        FailedCreate {
            eni_id: "eni-1".into(),
            class,
            code: "NetworkInterfaceNotSupported".into(),
            message: "no".into(),
        }
    }

    fn remember(observed: &Observed, class: ErrorClass) -> Refusals {
        let spec = spec();
        let fp = Fingerprints::new(observed, &spec);
        Refusals::default().next(&Scope::All, &fp, &BTreeSet::new(), &[refused(class)])
    }

    #[test]
    fn a_refusal_holds_while_nothing_about_the_eni_changes() {
        let observed = world();
        let memory = remember(&observed, ErrorClass::UnsupportedSource);
        let spec = spec();
        let fp = Fingerprints::new(&observed, &spec);
        assert!(memory.blocking("eni-1", &fp).is_some());

        type Change = Box<dyn Fn(&mut Observed)>;
        let changes: Vec<Change> = vec![
            Box::new(|o| {
                o.enis[0].tags.insert("touched".into(), "1".into());
            }),
            Box::new(|o| o.instances[0].instance_type = "m5.large".into()),
            Box::new(|o| o.enis[0].attachment_instance_id = None),
            Box::new(|o| {
                o.sessions.push(Session {
                    id: "tms-9".into(),
                    eni_id: "eni-1".into(),
                    number: 1,
                    ..Session::default()
                })
            }),
        ];
        for change in changes {
            let mut o = world();
            change(&mut o);
            let fp = Fingerprints::new(&o, &spec);
            assert!(memory.blocking("eni-1", &fp).is_none(), "{o:?}");
        }
        let mut other_spec = spec.clone();
        other_spec.filter_id = "tmf-2".into();
        let fp = Fingerprints::new(&observed, &other_spec);
        assert!(
            memory.blocking("eni-1", &fp).is_none(),
            "a new spec retries"
        );
    }

    #[test]
    fn a_refusal_is_tried_again_after_a_day() {
        let observed = world();
        let memory = remember(&observed, ErrorClass::UnsupportedSource);
        let spec = spec();
        let mut later = world();
        later.observed_at_unix += RECHECK_AFTER_SECS - 1;
        assert!(
            memory
                .blocking("eni-1", &Fingerprints::new(&later, &spec))
                .is_some()
        );
        later.observed_at_unix += 1;
        assert!(
            memory
                .blocking("eni-1", &Fingerprints::new(&later, &spec))
                .is_none()
        );
    }

    #[test]
    fn only_permanent_classes_are_remembered() {
        for class in ErrorClass::ALL {
            let memory = remember(&world(), class);
            assert_eq!(
                memory.enis.contains_key("eni-1"),
                class.is_remembered(),
                "{}",
                class.as_str()
            );
        }
        assert!(!ErrorClass::Throttled.is_remembered());
        assert!(!ErrorClass::EniGone.is_remembered());
        assert!(ErrorClass::Other.is_remembered());
    }

    #[test]
    fn an_account_limit_is_retried_when_the_account_frees_a_session() {
        let mut observed = world();
        observed.enis.push(Eni {
            id: "eni-2".into(),
            ..Eni::default()
        });
        let mut owned = Tags::new();
        owned.insert(OWNER_TAG_KEY.into(), "someone".into());
        observed.sessions.push(Session {
            id: "tms-elsewhere".into(),
            eni_id: "eni-2".into(),
            number: 1,
            tags: owned,
            ..Session::default()
        });
        let memory = remember(&observed, ErrorClass::AccountLimit);
        let spec = spec();
        assert!(
            memory
                .blocking("eni-1", &Fingerprints::new(&observed, &spec))
                .is_some()
        );
        observed.sessions.clear();
        assert!(
            memory
                .blocking("eni-1", &Fingerprints::new(&observed, &spec))
                .is_none()
        );
    }

    #[test]
    fn the_next_memory_keeps_what_held_and_what_is_out_of_scope_and_forgets_the_rest() {
        let observed = world();
        let spec = spec();
        let fp = Fingerprints::new(&observed, &spec);
        let mut old = remember(&observed, ErrorClass::UnsupportedSource);
        let entry = old.enis["eni-1"].clone();
        old.enis.insert("eni-elsewhere".into(), entry.clone());
        old.enis.insert("eni-created".into(), entry);
        let held: BTreeSet<String> = ["eni-1".to_owned()].into();
        let next = old.next(&Scope::enis(["eni-created"]), &fp, &held, &[]);
        let kept: Vec<&str> = next.enis.keys().map(String::as_str).collect();
        assert_eq!(kept, vec!["eni-1", "eni-elsewhere"]);
        // A full run forgets what is neither held nor refused again.
        let next = old.next(&Scope::All, &fp, &BTreeSet::new(), &[]);
        assert!(next.enis.is_empty());
    }

    #[test]
    fn a_refusal_again_keeps_its_first_time() {
        let observed = world();
        let spec = spec();
        let old = remember(&observed, ErrorClass::UnsupportedSource);
        let mut later = world();
        later.observed_at_unix += 2 * RECHECK_AFTER_SECS;
        let fp = Fingerprints::new(&later, &spec);
        let next = old.next(
            &Scope::All,
            &fp,
            &BTreeSet::new(),
            &[refused(ErrorClass::UnsupportedSource)],
        );
        let r = &next.enis["eni-1"];
        assert_eq!(r.first_refused_unix, 1_000_000);
        assert_eq!(r.last_attempt_unix, later.observed_at_unix);
    }

    #[test]
    fn the_memory_is_bounded_keeping_the_most_recent() {
        let mut o = world();
        o.enis = (0..MAX_REMEMBERED + 5)
            .map(|i| Eni {
                id: format!("eni-{i:05}"),
                ..Eni::default()
            })
            .collect();
        let spec = spec();
        let fp = Fingerprints::new(&o, &spec);
        let failed: Vec<FailedCreate> = o
            .enis
            .iter()
            .map(|e| FailedCreate {
                eni_id: e.id.clone(),
                ..refused(ErrorClass::UnsupportedSource)
            })
            .collect();
        let next = Refusals::default().next(&Scope::All, &fp, &BTreeSet::new(), &failed);
        assert_eq!(next.enis.len(), MAX_REMEMBERED);
    }

    #[test]
    fn the_document_round_trips_as_json_with_its_version() {
        let memory = remember(&world(), ErrorClass::PermissionDenied);
        let json = serde_json::to_value(&memory).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["enis"]["eni-1"]["class"], "permission_denied");
        let back: Refusals = serde_json::from_value(json).unwrap();
        assert_eq!(back, memory);
    }
}
