//! Planner invariants over generated worlds, checked with the `sim` applier (which enforces
//! the AWS rules: at most 3 sessions per ENI, a number used once per ENI, existing ENI and
//! session, and describes an NLB target's session created without a packet length with 8500).
//!
//! A world's `u8` picks the packet length of the spec (none, 100, 8500), the session priority
//! (low, high) and whether the target is an observed NLB (which fills in 8500).

use std::collections::{BTreeMap, BTreeSet};

use mirror::filters::{EniFilters, InstanceFilters};
use mirror::model::{
    DEFAULT_EXCLUDE_TAG, MAX_SESSIONS_PER_ENI, MirrorTarget, OWNER_TAG_KEY, SessionPriority,
};
use mirror::plan::drift;
use mirror::sim::apply_to;
use mirror::{Eni, Instance, MirrorSpec, Observed, Plan, Scope, Selector, Session, reconcile};
use proptest::prelude::*;

const OWNER: &str = "prod";

#[derive(Debug, Clone)]
struct SessionSeed {
    owner: u8,
    target_ok: bool,
    filter_ok: bool,
    vni: u8,
    packet_length: u8,
}

#[derive(Debug, Clone)]
struct EniSeed {
    observed: bool,
    tagged: bool,
    excluded: bool,
    instance: Option<(u8, bool)>,
    numbers: Vec<u32>,
    sessions: Vec<SessionSeed>,
}

fn session_seed() -> impl Strategy<Value = SessionSeed> {
    (0u8..3, any::<bool>(), any::<bool>(), 0u8..3, 0u8..3).prop_map(
        |(owner, target_ok, filter_ok, vni, packet_length)| SessionSeed {
            owner,
            target_ok,
            filter_ok,
            vni,
            packet_length,
        },
    )
}

fn eni_seed() -> impl Strategy<Value = EniSeed> {
    (
        prop::bool::weighted(0.85),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::option::of((0u8..4, any::<bool>())),
        prop::sample::subsequence((1u32..=5).collect::<Vec<_>>(), 0..=MAX_SESSIONS_PER_ENI),
        prop::collection::vec(session_seed(), MAX_SESSIONS_PER_ENI),
    )
        .prop_map(
            |(observed, tagged, excluded, instance, numbers, sessions)| EniSeed {
                observed,
                tagged,
                excluded,
                instance,
                numbers,
                sessions,
            },
        )
}

fn spec_for(pick: u8) -> MirrorSpec {
    MirrorSpec {
        target_id: "tmt-1".into(),
        filter_id: "tmf-1".into(),
        vni: 42,
        packet_length: [None, Some(100), Some(8500)][usize::from(pick % 3)],
        owner: OWNER.into(),
        priority: [SessionPriority::Low, SessionPriority::High][usize::from(pick / 3 % 2)],
    }
}

fn selector() -> Selector {
    Selector {
        eni_filters: EniFilters::parse("Name=tag:mirror,Values=true").unwrap(),
        instance_filters: InstanceFilters::parse("Name=tag:team,Values=payments").unwrap(),
        exclude_tag: DEFAULT_EXCLUDE_TAG.into(),
        ..Selector::default()
    }
}

fn build(seeds: &[EniSeed], pick: u8) -> Observed {
    let mut observed = Observed {
        observed_at_unix: 1_700_000_000,
        ..Observed::default()
    };
    if pick / 6 % 2 == 1 {
        observed.targets.push(MirrorTarget {
            id: "tmt-1".into(),
            network_load_balancer_arn: Some(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/m/1".into(),
            ),
            ..MirrorTarget::default()
        });
    }
    let mut instances: BTreeMap<u8, bool> = BTreeMap::new();
    for (i, seed) in seeds.iter().enumerate() {
        let eni_id = format!("eni-{i:03}");
        if seed.observed {
            let mut eni = Eni {
                id: eni_id.clone(),
                subnet_id: "subnet-a".into(),
                vpc_id: "vpc-1".into(),
                interface_type: "interface".into(),
                attachment_instance_id: seed.instance.map(|(k, _)| format!("i-{k}")),
                ..Eni::default()
            };
            if seed.tagged {
                eni.tags.insert("mirror".into(), "true".into());
            }
            if seed.excluded {
                eni.tags.insert(DEFAULT_EXCLUDE_TAG.into(), "true".into());
            }
            observed.enis.push(eni);
        }
        if let Some((k, team)) = seed.instance {
            instances.insert(k, team);
        }
        for (n, (number, s)) in seed.numbers.iter().zip(&seed.sessions).enumerate() {
            let mut session = Session {
                id: format!("tms-{i:03}-{n}"),
                eni_id: eni_id.clone(),
                target_id: if s.target_ok { "tmt-1" } else { "tmt-old" }.into(),
                filter_id: if s.filter_ok { "tmf-1" } else { "tmf-old" }.into(),
                number: *number,
                vni: [Some(42), Some(7), None][usize::from(s.vni)],
                packet_length: [None, Some(100), Some(8500)][usize::from(s.packet_length)],
                ..Session::default()
            };
            match s.owner {
                0 => {
                    session.tags.insert(OWNER_TAG_KEY.into(), OWNER.into());
                }
                1 => {
                    session.tags.insert(OWNER_TAG_KEY.into(), "other".into());
                }
                _ => {}
            }
            observed.sessions.push(session);
        }
    }
    for (k, team) in instances {
        let mut instance = Instance {
            id: format!("i-{k}"),
            instance_type: "m5.large".into(),
            ..Instance::default()
        };
        if team {
            instance.tags.insert("team".into(), "payments".into());
        }
        observed.instances.push(instance);
    }
    observed
}

/// Deterministic shuffle (xorshift + Fisher–Yates).
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    seed |= 1;
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = (seed % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

fn world() -> impl Strategy<Value = (Vec<EniSeed>, u8)> {
    (prop::collection::vec(eni_seed(), 0..14), 0u8..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn applying_a_plan_then_planning_again_gives_an_empty_plan((seeds, pl) in world()) {
        let observed = build(&seeds, pl);
        let spec = spec_for(pl);
        let plan = reconcile(&Scope::All, &selector(), &observed, &spec);
        let after = apply_to(&observed, &plan).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = reconcile(&Scope::All, &selector(), &after, &spec);
        prop_assert!(again.is_noop(), "second plan {again:?}");

        // Every wanted ENI that was not skipped has exactly one owned session matching the
        // spec; no other ENI has an owned session.
        let wanted = selector().select(&after).wanted;
        let skipped: BTreeSet<&str> = plan.skipped.iter().map(|s| s.eni_id.as_str()).collect();
        let mut owned: BTreeMap<&str, Vec<&Session>> = BTreeMap::new();
        for s in after.sessions.iter().filter(|s| s.is_owned_by(OWNER)) {
            owned.entry(s.eni_id.as_str()).or_default().push(s);
        }
        for eni in &wanted {
            if skipped.contains(eni.as_str()) {
                prop_assert!(!owned.contains_key(eni.as_str()));
                continue;
            }
            let sessions = owned.get(eni.as_str()).cloned().unwrap_or_default();
            prop_assert_eq!(sessions.len(), 1, "ENI {}", eni);
            let default = after.target("tmt-1").and_then(MirrorTarget::default_packet_length);
            prop_assert!(drift(sessions[0], &spec, default).is_empty());
        }
        for eni in owned.keys() {
            prop_assert!(wanted.contains(*eni), "owned session left on {}", eni);
        }
    }

    #[test]
    fn a_plan_never_deletes_or_modifies_an_unowned_session((seeds, pl) in world()) {
        let observed = build(&seeds, pl);
        let plan = reconcile(&Scope::All, &selector(), &observed, &spec_for(pl));
        let owned: BTreeSet<&str> = observed
            .sessions
            .iter()
            .filter(|s| s.is_owned_by(OWNER))
            .map(|s| s.id.as_str())
            .collect();
        for d in &plan.delete {
            prop_assert!(owned.contains(d.session_id.as_str()), "deletes {}", d.session_id);
        }
        for m in &plan.modify {
            prop_assert!(owned.contains(m.session_id.as_str()), "modifies {}", m.session_id);
        }
        let after = apply_to(&observed, &plan).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let unowned = |o: &Observed| -> Vec<Session> {
            let mut v: Vec<Session> =
                o.sessions.iter().filter(|s| !s.is_owned_by(OWNER)).cloned().collect();
            v.sort();
            v
        };
        prop_assert_eq!(unowned(&observed), unowned(&after));
    }

    #[test]
    fn a_plan_never_exceeds_three_sessions_or_reuses_a_number((seeds, pl) in world()) {
        let observed = build(&seeds, pl);
        let plan = reconcile(&Scope::All, &selector(), &observed, &spec_for(pl));
        // The simulator refuses a fourth session or a reused number.
        let after = apply_to(&observed, &plan).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut per_eni: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for s in &after.sessions {
            per_eni.entry(s.eni_id.as_str()).or_default().push(s.number);
        }
        for (eni, mut numbers) in per_eni {
            prop_assert!(numbers.len() <= MAX_SESSIONS_PER_ENI, "{eni}: {numbers:?}");
            let n = numbers.len();
            numbers.sort_unstable();
            numbers.dedup();
            prop_assert_eq!(numbers.len(), n, "number reused on {}", eni);
            prop_assert!(numbers.iter().all(|n| (1..=32766).contains(n)));
        }
    }

    #[test]
    fn the_plan_is_the_same_for_any_input_order_and_duplicates(
        (seeds, pl) in world(),
        seed in any::<u64>(),
        dups in 0usize..4,
    ) {
        let observed = build(&seeds, pl);
        let spec = spec_for(pl);
        let plan = reconcile(&Scope::All, &selector(), &observed, &spec);
        let mut shuffled = observed.clone();
        shuffled.enis.extend(observed.enis.iter().take(dups).cloned());
        shuffled.sessions.extend(observed.sessions.iter().take(dups).cloned());
        shuffled.instances.extend(observed.instances.iter().take(dups).cloned());
        shuffle(&mut shuffled.enis, seed);
        shuffle(&mut shuffled.sessions, seed.rotate_left(17));
        shuffle(&mut shuffled.instances, seed.rotate_left(33));
        prop_assert_eq!(&plan, &reconcile(&Scope::All, &selector(), &shuffled, &spec));
        // And the plan lists are sorted by ENI id.
        let sorted = |ids: Vec<&str>| ids.windows(2).all(|w| w[0] <= w[1]);
        prop_assert!(sorted(plan.create.iter().map(|c| c.eni_id.as_str()).collect()));
        prop_assert!(sorted(plan.delete.iter().map(|c| c.eni_id.as_str()).collect()));
        prop_assert!(sorted(plan.modify.iter().map(|c| c.eni_id.as_str()).collect()));
    }

    #[test]
    fn a_scoped_plan_is_the_full_plan_restricted_to_the_scope(
        (seeds, pl) in world(),
        picks in prop::collection::vec(0usize..14, 0..5),
    ) {
        let observed = build(&seeds, pl);
        let spec = spec_for(pl);
        let scope_ids: BTreeSet<String> = picks.iter().map(|i| format!("eni-{i:03}")).collect();
        let full = reconcile(&Scope::All, &selector(), &observed, &spec);
        let scoped = reconcile(&Scope::enis(scope_ids.clone()), &selector(), &observed, &spec);
        let within = |id: &String| scope_ids.contains(id);
        let expected = Plan {
            create: full.create.iter().filter(|c| within(&c.eni_id)).cloned().collect(),
            delete: full.delete.iter().filter(|c| within(&c.eni_id)).cloned().collect(),
            modify: full.modify.iter().filter(|c| within(&c.eni_id)).cloned().collect(),
            unchanged: full.unchanged.iter().filter(|c| within(&c.eni_id)).cloned().collect(),
            skipped: full.skipped.iter().filter(|c| within(&c.eni_id)).cloned().collect(),
            shadowed: full.shadowed.iter().filter(|c| within(&c.eni_id)).cloned().collect(),
            refused: full.refused.iter().filter(|c| within(&c.eni_id)).cloned().collect(),
        };
        prop_assert_eq!(scoped, expected);
    }
}
