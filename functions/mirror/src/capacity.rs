//! Rebuilder fleet size: `clamp(ceil(sessions / per_instance), min, max)`, scaling out at
//! once and scaling in only after `scale_in_after` consecutive lower readings.
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
