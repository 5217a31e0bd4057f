//! Rebuilder fleet size from the traffic the fleet carries and the number of sessions:
//!
//! ```text
//! floor   = ceil(sessions / sessions_per_instance)
//! traffic = ceil(datagrams per second / datagrams_per_second_per_instance)   (when measured)
//! target  = clamp(max(floor, traffic) + (1 while kernel drops are non-zero), min, max)
//! ```
//!
//! Scaling out happens at once; scaling in only after `scale_in_after` consecutive lower
//! readings. The traffic comes from CloudWatch (the rebuilders' `DatagramsReceived` and
//! `KernelDrops`, per-minute sums over the group, see [`Traffic`]); without data (a new fleet,
//! the agent down) the session floor alone decides, and the report says so.
//!
//! size-fleet is observe → decide → apply like the mirror runs: the adapter fills a
//! [`FleetObservation`], [`decide`] (pure) turns it into a [`FleetPlan`], the adapter applies it.
//!
//! The state between runs is a [`ScaleInHistory`], which serialises to a short string
//! (`"<count>:<highest>"`, e.g. `"2:4"`) meant to be stored as a tag on the Auto Scaling
//! group ([`SCALE_IN_HISTORY_TAG`]). A missing or unreadable value is an empty history, which
//! only ever delays a scale-in. The plan stores a history only when it changed, and a history
//! that goes with a new capacity only once that capacity was set (a refused
//! `SetDesiredCapacity` keeps the streak, so the next run scales in at once).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Tag key on the fleet's Auto Scaling group holding the [`ScaleInHistory`].
pub const SCALE_IN_HISTORY_TAG: &str = "mirrorfleet:scale-in-history";

/// The capacity policy (from the settings). Invariants (checked by the settings):
/// `min <= max`, `sessions_per_instance >= 1`, `scale_in_after >= 1`,
/// `datagrams_per_second_per_instance >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapacityPolicy {
    pub min: u32,
    pub max: u32,
    pub sessions_per_instance: u32,
    /// Consecutive lower readings needed before scaling in (1 = scale in at once).
    pub scale_in_after: u32,
    /// Mirrored datagrams per second one rebuilder is sized for.
    pub datagrams_per_second_per_instance: u64,
}

/// The fleet's traffic as CloudWatch has it: sums over every rebuilder of the group, per minute.
/// `None` fields: no datapoint in the window (not zero: CloudWatch leaves periods without data
/// out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Traffic {
    /// The busiest minute's `DatagramsReceived` of the window.
    pub datagrams_per_minute: Option<u64>,
    /// `KernelDrops` of the latest minute with data.
    pub kernel_drops: Option<u64>,
}

impl Traffic {
    /// Datagrams per second of the busiest minute (rounded up).
    pub fn datagrams_per_second(&self) -> Option<u64> {
        self.datagrams_per_minute.map(|d| d.div_ceil(60))
    }

    /// True when the kernel dropped datagrams in the latest minute with data.
    pub fn dropping(&self) -> bool {
        self.kernel_drops.is_some_and(|d| d > 0)
    }
}

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Load {
    /// Mirror sessions sending to our target.
    pub sessions: u32,
    /// The group's current desired capacity.
    pub current_desired: u32,
    /// What CloudWatch says the fleet carries.
    pub traffic: Traffic,
}

/// How a target capacity was reached (for the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Sizing {
    /// `ceil(sessions / sessions_per_instance)`.
    pub session_floor: u32,
    /// `ceil(datagrams per second / per instance)`; `None` without traffic data.
    pub by_traffic: Option<u32>,
    /// One more because the kernel dropped datagrams.
    pub drops_add_one: bool,
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
    /// This reading's target (see the module documentation).
    pub target: u32,
    /// How the target was reached.
    pub sizing: Sizing,
    /// The history to store for the next run.
    pub history: ScaleInHistory,
    /// True when `desired != load.current_desired` (call SetDesiredCapacity).
    pub changed: bool,
}

/// The target for one reading and how it was reached:
/// `clamp(max(floor, traffic) + (1 while drops), min, max)`.
pub fn target_capacity(load: &Load, policy: &CapacityPolicy) -> (u32, Sizing) {
    let per = policy.sessions_per_instance.max(1);
    let session_floor = load.sessions.div_ceil(per);
    let per_dps = policy.datagrams_per_second_per_instance.max(1);
    let by_traffic = load
        .traffic
        .datagrams_per_second()
        .map(|dps| u32::try_from(dps.div_ceil(per_dps)).unwrap_or(u32::MAX));
    let drops_add_one = load.traffic.dropping();
    let needed = session_floor
        .max(by_traffic.unwrap_or(0))
        .saturating_add(u32::from(drops_add_one));
    let target = needed.max(policy.min).min(policy.max.max(policy.min));
    (
        target,
        Sizing {
            session_floor,
            by_traffic,
            drops_add_one,
        },
    )
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
    let (target, sizing) = target_capacity(load, policy);
    let current = load.current_desired;
    let upper = policy.max.max(policy.min);
    let decide = |desired: u32, history: ScaleInHistory| CapacityDecision {
        desired,
        target,
        sizing,
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
    /// Sessions sending to our target, the group's current desired capacity, the traffic.
    pub load: Load,
    /// The group's `MinSize`.
    pub group_min: u32,
    /// The group's `MaxSize`.
    pub group_max: u32,
    /// The value of the group's [`SCALE_IN_HISTORY_TAG`], if any.
    pub history_tag: Option<String>,
}

/// `SetDesiredCapacity` as planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SetDesired {
    pub capacity: u32,
    /// `HonorCooldown`: false when scaling out (the load is there now; AWS's default cooldown
    /// is 300 s), true when scaling in (the hysteresis already waited; a refusal in the
    /// group's cooldown keeps the history and the next run tries again).
    pub honor_cooldown: bool,
}

/// What to change on the group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FleetPlan {
    pub decision: CapacityDecision,
    /// `SetDesiredCapacity` (only when the capacity differs from the current one).
    pub set_desired: Option<SetDesired>,
    /// Store this value as the group's [`SCALE_IN_HISTORY_TAG`] (only when it changed, and,
    /// with [`FleetPlan::set_desired`], only once the capacity was set).
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
        set_desired: decision.changed.then_some(SetDesired {
            capacity: decision.desired,
            honor_cooldown: decision.desired < observed.load.current_desired,
        }),
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
        datagrams_per_second_per_instance: 1_000,
    };

    fn load(sessions: u32, current: u32) -> Load {
        Load {
            sessions,
            current_desired: current,
            traffic: Traffic::default(),
        }
    }

    fn with_traffic(sessions: u32, current: u32, per_minute: u64, drops: u64) -> Load {
        Load {
            traffic: Traffic {
                datagrams_per_minute: Some(per_minute),
                kernel_drops: Some(drops),
            },
            ..load(sessions, current)
        }
    }

    fn run(sessions: u32, current: u32, history: ScaleInHistory) -> CapacityDecision {
        desired_capacity(&load(sessions, current), &POLICY, &history)
    }

    fn target(l: &Load) -> u32 {
        target_capacity(l, &POLICY).0
    }

    #[test]
    fn without_traffic_data_the_target_is_the_session_floor_clamped() {
        assert_eq!(target(&load(0, 2)), 2);
        assert_eq!(target(&load(201, 2)), 3);
        assert_eq!(target(&load(300, 2)), 3);
        assert_eq!(target(&load(5_000, 2)), 10);
        let (_, sizing) = target_capacity(&load(201, 2), &POLICY);
        assert_eq!(
            sizing,
            Sizing {
                session_floor: 3,
                by_traffic: None,
                drops_add_one: false
            }
        );
    }

    #[test]
    fn traffic_above_the_session_floor_sets_the_target() {
        // 330,000 datagrams in the busiest minute = 5,500/s at 1,000/s per instance: 6.
        let l = with_traffic(100, 2, 330_000, 0);
        let (t, sizing) = target_capacity(&l, &POLICY);
        assert_eq!(t, 6);
        assert_eq!(sizing.by_traffic, Some(6));
        assert_eq!(sizing.session_floor, 1);
        // Little traffic: the session floor still holds.
        assert_eq!(target(&with_traffic(450, 2, 60, 0)), 5);
        // Exactly one instance's worth is one instance.
        assert_eq!(target(&with_traffic(0, 2, 60_000 * 3, 0)), 3);
    }

    #[test]
    fn kernel_drops_add_exactly_one_instance() {
        assert_eq!(target(&with_traffic(0, 2, 240_000, 0)), 4);
        assert_eq!(target(&with_traffic(0, 2, 240_000, 1)), 5);
        assert_eq!(target(&with_traffic(0, 2, 240_000, 999_999)), 5);
        // Drops alone (no datagram data) add one to the floor.
        let drops_only = Load {
            traffic: Traffic {
                datagrams_per_minute: None,
                kernel_drops: Some(10),
            },
            ..load(250, 2)
        };
        assert_eq!(target(&drops_only), 4);
        // Never above max.
        assert_eq!(target(&with_traffic(0, 2, 60_000 * 10, 5)), 10);
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
            load: load(sessions, current),
            group_min: 0,
            group_max: 20,
            history_tag: tag.map(str::to_owned),
        }
    }

    #[test]
    fn a_fleet_plan_writes_only_what_changed() {
        // Scale out at once, without the cooldown; the empty history is already stored.
        let plan = decide(&POLICY, &observed(450, 2, Some("0:0")));
        assert_eq!(
            plan.set_desired,
            Some(SetDesired {
                capacity: 5,
                honor_cooldown: false
            })
        );
        assert_eq!(plan.store_history, None);
        // A lower reading keeps the size and stores the streak.
        let plan = decide(&POLICY, &observed(100, 5, None));
        assert_eq!(plan.set_desired, None);
        assert_eq!(plan.store_history.as_deref(), Some("1:2"));
        // The group's min (3) wins over the policy's (2); scaling in honours the cooldown.
        let mut o = observed(0, 5, Some("2:2"));
        o.group_min = 3;
        let plan = decide(&POLICY, &o);
        assert_eq!(
            plan.set_desired,
            Some(SetDesired {
                capacity: 3,
                honor_cooldown: true
            })
        );
        assert_eq!(plan.store_history.as_deref(), Some("0:0"));
    }

    fn policy() -> impl Strategy<Value = CapacityPolicy> {
        (0u32..5, 0u32..20, 1u32..50, 1u32..5, 1u64..5_000).prop_map(
            |(min, extra, per, after, dps)| CapacityPolicy {
                min,
                max: min + extra,
                sessions_per_instance: per,
                scale_in_after: after,
                datagrams_per_second_per_instance: dps,
            },
        )
    }

    fn traffic() -> impl Strategy<Value = Traffic> {
        (
            prop::option::of(0u64..20_000_000),
            prop::option::of(prop_oneof![Just(0u64), 1u64..1_000]),
        )
            .prop_map(|(datagrams_per_minute, kernel_drops)| Traffic {
                datagrams_per_minute,
                kernel_drops,
            })
    }

    proptest! {
        #[test]
        fn a_sequence_of_readings_obeys_the_rules(
            policy in policy(),
            start in 0u32..40,
            readings in prop::collection::vec((0u32..2_000, traffic()), 1..30),
        ) {
            let mut current = start;
            let mut history = ScaleInHistory::default();
            let mut lower_streak = 0u32;
            for (sessions, traffic) in readings {
                let l = Load { sessions, current_desired: current, traffic };
                let d = desired_capacity(&l, &policy, &history);
                let (target, _) = target_capacity(&l, &policy);
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
        fn more_sessions_or_more_traffic_never_give_a_smaller_capacity(
            policy in policy(),
            current in 0u32..40,
            a in 0u32..2_000,
            b in 0u32..2_000,
            ta in traffic(),
            extra in 0u64..5_000_000,
            count in 0u32..5,
            highest in 0u32..40,
        ) {
            let history = ScaleInHistory { lower_readings: count, highest_target: highest };
            let (lo, hi) = (a.min(b), a.max(b));
            let more = Traffic {
                datagrams_per_minute: Some(ta.datagrams_per_minute.unwrap_or(0) + extra),
                ..ta
            };
            let d = |sessions, traffic| desired_capacity(
                &Load { sessions, current_desired: current, traffic }, &policy, &history,
            ).desired;
            prop_assert!(d(hi, ta) >= d(lo, ta));
            prop_assert!(d(lo, more) >= d(lo, ta));
        }

        #[test]
        fn the_target_is_the_clamped_max_of_floor_and_traffic_plus_one_on_drops(
            policy in policy(),
            sessions in 0u32..2_000,
            traffic in traffic(),
        ) {
            let l = Load { sessions, current_desired: 0, traffic };
            let (t, sizing) = target_capacity(&l, &policy);
            let floor = sessions.div_ceil(policy.sessions_per_instance);
            let by_traffic = traffic.datagrams_per_minute.map(|d| {
                u32::try_from(d.div_ceil(60).div_ceil(policy.datagrams_per_second_per_instance))
                    .unwrap()
            });
            let drops = u32::from(traffic.kernel_drops.unwrap_or(0) > 0);
            let want = (floor.max(by_traffic.unwrap_or(0)) + drops).clamp(policy.min, policy.max);
            prop_assert_eq!(t, want);
            prop_assert_eq!(sizing.session_floor, floor);
            prop_assert_eq!(sizing.by_traffic, by_traffic);
            // No traffic data: exactly what the sessions alone give.
            if traffic == Traffic::default() {
                prop_assert_eq!(t, floor.clamp(policy.min, policy.max));
            }
        }
    }
}
