//! Rebuilder fleet size: `clamp(ceil(sessions / per_instance), min, max)`, scaling out at
//! once and scaling in only after `scale_in_after` consecutive lower readings.
//!
//! size-fleet is observe → decide → apply like the mirror runs: the adapter fills a
//! [`FleetObservation`], [`decide`] (pure) turns it into a [`FleetPlan`], the adapter applies it.
//!
//! The state between runs is a [`ScaleInHistory`], which serialises to a short string
//! (`"<count>:<highest>"`, e.g. `"2:4"`) meant to be stored as a tag on the Auto Scaling
//! group ([`SCALE_IN_HISTORY_TAG`]). A missing or unreadable value is an empty history, which
//! only ever delays a scale-in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Tag key on the fleet's Auto Scaling group holding the [`ScaleInHistory`].
pub const SCALE_IN_HISTORY_TAG: &str = "mirrorfleet:scale-in-history";

/// The capacity policy (from the settings). Invariants (checked by the settings):
/// `min <= max`, `sessions_per_instance >= 1`, `scale_in_after >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapacityPolicy {
    pub min: u32,
    pub max: u32,
    pub sessions_per_instance: u32,
    /// Consecutive lower readings needed before scaling in (1 = scale in at once).
    pub scale_in_after: u32,
}

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Load {
    /// Mirror sessions sending to our target.
    pub sessions: u32,
    /// The group's current desired capacity.
    pub current_desired: u32,
}

/// Consecutive readings whose target was below the current capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ScaleInHistory {
    /// How many consecutive lower readings.
    pub lower_readings: u32,
    /// The highest target among them (the size we scale in to, so a short dip never
    /// scales in further than the whole streak allows).
    pub highest_target: u32,
}

/// Why a [`ScaleInHistory`] string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scale-in history `{value}` (expected `<count>:<highest>`)")]
pub struct HistoryParseError {
    pub value: String,
}

impl fmt::Display for ScaleInHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.lower_readings, self.highest_target)
    }
}

impl FromStr for ScaleInHistory {
    type Err = HistoryParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || HistoryParseError {
            value: s.to_owned(),
        };
        let (count, highest) = s.trim().split_once(':').ok_or_else(err)?;
        Ok(Self {
            lower_readings: count.parse().map_err(|_| err())?,
            highest_target: highest.parse().map_err(|_| err())?,
        })
    }
}

impl ScaleInHistory {
    /// Reads a stored value; missing or invalid → empty history.
    pub fn from_tag(value: Option<&str>) -> Self {
        value.and_then(|v| v.parse().ok()).unwrap_or_default()
    }
}

/// What a run decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapacityDecision {
    /// The capacity the group should have now.
    pub desired: u32,
    /// `clamp(ceil(sessions / per_instance), min, max)` for this reading.
    pub target: u32,
    /// The history to store for the next run.
    pub history: ScaleInHistory,
    /// True when `desired != load.current_desired` (call SetDesiredCapacity).
    pub changed: bool,
}

/// `clamp(ceil(sessions / per_instance), min, max)`.
pub fn target_capacity(sessions: u32, policy: &CapacityPolicy) -> u32 {
    let per = policy.sessions_per_instance.max(1);
    let needed = sessions.div_ceil(per);
    needed.max(policy.min).min(policy.max.max(policy.min))
}

/// The decision for one reading.
///
/// - target ≥ current (or current below `min`): desired = target at once, history cleared.
/// - current above `max`: desired = target at once (the policy bound wins).
/// - target < current: one more lower reading; once there are `scale_in_after` of them,
///   desired = the highest target of the streak and the history is cleared; until then
///   desired = current.
pub fn desired_capacity(
    load: &Load,
    policy: &CapacityPolicy,
    history: &ScaleInHistory,
) -> CapacityDecision {
    let target = target_capacity(load.sessions, policy);
    let current = load.current_desired;
    let upper = policy.max.max(policy.min);
    let decide = |desired: u32, history: ScaleInHistory| CapacityDecision {
        desired,
        target,
        history,
        changed: desired != current,
    };
    if target >= current || current > upper || current < policy.min {
        return decide(target, ScaleInHistory::default());
    }
    let streak = ScaleInHistory {
        lower_readings: history.lower_readings.saturating_add(1),
        highest_target: if history.lower_readings == 0 {
            target
        } else {
            history.highest_target.max(target)
        },
    };
    if streak.lower_readings >= policy.scale_in_after.max(1) {
        // Never scale in below this reading's target nor above the current size.
        let to = streak.highest_target.clamp(target, current);
        decide(to, ScaleInHistory::default())
    } else {
        decide(current, streak)
    }
}

/// The settings' bounds intersected with the group's own (AWS rejects a desired capacity
/// outside the group's min/max).
pub fn effective_policy(policy: &CapacityPolicy, group_min: u32, group_max: u32) -> CapacityPolicy {
    let min = policy.min.max(group_min);
    let max = policy.max.min(group_max).max(min);
    CapacityPolicy {
        min,
        max,
        ..*policy
    }
}

/// What size-fleet observed: the load and the Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FleetObservation {
    /// Sessions sending to our target, and the group's current desired capacity.
    pub load: Load,
    /// The group's `MinSize`.
    pub group_min: u32,
    /// The group's `MaxSize`.
    pub group_max: u32,
    /// The value of the group's [`SCALE_IN_HISTORY_TAG`], if any.
    pub history_tag: Option<String>,
}

/// What to change on the group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FleetPlan {
    pub decision: CapacityDecision,
    /// `SetDesiredCapacity` to this value (only when it differs from the current one).
    pub set_desired: Option<u32>,
    /// Store this value as the group's [`SCALE_IN_HISTORY_TAG`] (only when it changed).
    pub store_history: Option<String>,
}

/// The plan for one size-fleet run: [`desired_capacity`] under the policy bounded by the
/// group's own min/max ([`effective_policy`]), with the history read from the group's tag.
pub fn decide(policy: &CapacityPolicy, observed: &FleetObservation) -> FleetPlan {
    let policy = effective_policy(policy, observed.group_min, observed.group_max);
    let history = ScaleInHistory::from_tag(observed.history_tag.as_deref());
    let decision = desired_capacity(&observed.load, &policy, &history);
    let next = decision.history.to_string();
    FleetPlan {
        decision,
        set_desired: decision.changed.then_some(decision.desired),
        store_history: (observed.history_tag.as_deref() != Some(next.as_str())).then_some(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: CapacityPolicy = CapacityPolicy {
        min: 2,
        max: 10,
        sessions_per_instance: 100,
        scale_in_after: 3,
    };

    fn run(sessions: u32, current: u32, history: ScaleInHistory) -> CapacityDecision {
        desired_capacity(
            &Load {
                sessions,
                current_desired: current,
            },
            &POLICY,
            &history,
        )
    }

    #[test]
    fn the_target_is_the_ceiling_of_sessions_per_instance_clamped() {
        assert_eq!(target_capacity(0, &POLICY), 2);
        assert_eq!(target_capacity(201, &POLICY), 3);
        assert_eq!(target_capacity(300, &POLICY), 3);
        assert_eq!(target_capacity(5_000, &POLICY), 10);
    }

    #[test]
    fn scaling_out_happens_at_once() {
        let d = run(
            450,
            2,
            ScaleInHistory {
                lower_readings: 2,
                highest_target: 2,
            },
        );
        assert_eq!(d.desired, 5);
        assert!(d.changed);
        assert_eq!(d.history, ScaleInHistory::default());
    }

    #[test]
    fn scaling_in_waits_for_consecutive_lower_readings() {
        let mut history = ScaleInHistory::default();
        let mut desired = Vec::new();
        for sessions in [250, 180, 300] {
            let d = run(sessions, 5, history);
            desired.push(d.desired);
            history = d.history;
        }
        // Readings want 3, 2, 3: after the third, scale in to the highest of them.
        assert_eq!(desired, vec![5, 5, 3]);
        assert_eq!(history, ScaleInHistory::default());
    }

    #[test]
    fn a_reading_at_or_above_the_current_size_resets_the_streak() {
        let d1 = run(100, 5, ScaleInHistory::default());
        let d2 = run(100, 5, d1.history);
        let d3 = run(500, 5, d2.history);
        assert_eq!(d2.history.lower_readings, 2);
        assert_eq!(d3.desired, 5);
        assert!(!d3.changed);
        assert_eq!(d3.history, ScaleInHistory::default());
        let d4 = run(100, 5, d3.history);
        assert_eq!(d4.desired, 5);
        assert_eq!(d4.history.lower_readings, 1);
    }

    #[test]
    fn a_size_outside_the_bounds_is_corrected_at_once() {
        assert_eq!(run(0, 50, ScaleInHistory::default()).desired, 2);
        assert_eq!(run(0, 0, ScaleInHistory::default()).desired, 2);
    }

    #[test]
    fn the_history_round_trips_as_a_short_string_and_bad_values_are_empty() {
        let h = ScaleInHistory {
            lower_readings: 2,
            highest_target: 4,
        };
        assert_eq!(h.to_string(), "2:4");
        assert_eq!("2:4".parse::<ScaleInHistory>(), Ok(h));
        assert_eq!(ScaleInHistory::from_tag(Some("2:4")), h);
        assert_eq!(
            ScaleInHistory::from_tag(Some("garbage")),
            ScaleInHistory::default()
        );
        assert_eq!(ScaleInHistory::from_tag(None), ScaleInHistory::default());
        assert!("3".parse::<ScaleInHistory>().is_err());
    }

    #[test]
    fn the_groups_own_bounds_narrow_the_policy() {
        let p = effective_policy(&POLICY, 3, 8);
        assert_eq!((p.min, p.max), (3, 8));
        let p = effective_policy(&POLICY, 0, 20);
        assert_eq!((p.min, p.max), (2, 10));
        // A group whose max is below the policy's min: the min wins, never min > max.
        let p = effective_policy(&POLICY, 0, 1);
        assert_eq!((p.min, p.max), (2, 2));
        assert_eq!(p.sessions_per_instance, POLICY.sessions_per_instance);
    }

    fn observed(sessions: u32, current: u32, tag: Option<&str>) -> FleetObservation {
        FleetObservation {
            load: Load {
                sessions,
                current_desired: current,
            },
            group_min: 0,
            group_max: 20,
            history_tag: tag.map(str::to_owned),
        }
    }

    #[test]
    fn a_fleet_plan_writes_only_what_changed() {
        // Scale out at once; the empty history is already stored.
        let plan = decide(&POLICY, &observed(450, 2, Some("0:0")));
        assert_eq!(plan.set_desired, Some(5));
        assert_eq!(plan.store_history, None);
        // A lower reading keeps the size and stores the streak.
        let plan = decide(&POLICY, &observed(100, 5, None));
        assert_eq!(plan.set_desired, None);
        assert_eq!(plan.store_history.as_deref(), Some("1:2"));
        // The group's min (3) wins over the policy's (2).
        let mut o = observed(0, 5, Some("2:2"));
        o.group_min = 3;
        let plan = decide(&POLICY, &o);
        assert_eq!(plan.set_desired, Some(3));
        assert_eq!(plan.store_history.as_deref(), Some("0:0"));
    }

    fn policy() -> impl Strategy<Value = CapacityPolicy> {
        (0u32..5, 0u32..20, 1u32..50, 1u32..5).prop_map(|(min, extra, per, after)| CapacityPolicy {
            min,
            max: min + extra,
            sessions_per_instance: per,
            scale_in_after: after,
        })
    }

    proptest! {
        #[test]
        fn a_sequence_of_readings_obeys_the_rules(
            policy in policy(),
            start in 0u32..40,
            readings in prop::collection::vec(0u32..2_000, 1..30),
        ) {
            let mut current = start;
            let mut history = ScaleInHistory::default();
            let mut lower_streak = 0u32;
            for sessions in readings {
                let d = desired_capacity(&Load { sessions, current_desired: current }, &policy, &history);
                let target = target_capacity(sessions, &policy);
                prop_assert!(d.desired >= policy.min && d.desired <= policy.max, "{d:?}");
                prop_assert!(d.desired >= target, "never below what the load needs: {d:?}");
                if target >= current {
                    prop_assert_eq!(d.desired, target, "scale out at once");
                }
                if (policy.min..=policy.max).contains(&current) && target < current {
                    lower_streak += 1;
                    if lower_streak < policy.scale_in_after {
                        prop_assert_eq!(d.desired, current, "no scale-in before the streak");
                    }
                } else {
                    lower_streak = 0;
                }
                if d.desired != current {
                    lower_streak = 0;
                }
                prop_assert_eq!(d.changed, d.desired != current);
                let stored = d.history.to_string();
                history = ScaleInHistory::from_tag(Some(&stored));
                prop_assert_eq!(history, d.history);
                current = d.desired;
            }
        }

        #[test]
        fn more_sessions_never_give_a_smaller_capacity(
            policy in policy(),
            current in 0u32..40,
            a in 0u32..2_000,
            b in 0u32..2_000,
            count in 0u32..5,
            highest in 0u32..40,
        ) {
            let history = ScaleInHistory { lower_readings: count, highest_target: highest };
            let (lo, hi) = (a.min(b), a.max(b));
            let dlo = desired_capacity(&Load { sessions: lo, current_desired: current }, &policy, &history);
            let dhi = desired_capacity(&Load { sessions: hi, current_desired: current }, &policy, &history);
            prop_assert!(dhi.desired >= dlo.desired, "{dlo:?} {dhi:?}");
        }
    }
}
