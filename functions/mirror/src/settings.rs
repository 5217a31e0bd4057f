//! Settings from the environment, validated at start-up. Every problem names its variable;
//! all problems are reported at once.
//!
//! The variables each function reads are listed once, here: [`MIRROR_VARS`] (onboard-eni,
//! reconcile-mirrors) and [`FLEET_VARS`] (size-fleet), each [`Var`] with its meaning and
//! default. The readers below take their names from these lists (a unit test checks that they
//! read exactly the listed variables), and the template test checks that the stack sets
//! every one of them and nothing else.

use std::fmt;

use crate::capacity::CapacityPolicy;
use crate::filters::{FilterError, Filterable, Filters};
use crate::model::{DEFAULT_EXCLUDE_TAG, MirrorSpec, PACKET_LENGTH_MAX, VNI_MAX};
use crate::selection::Selector;

/// Looks a variable up (`std::env::var(..).ok()` in production, a map in tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One environment variable a function reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Var {
    pub name: &'static str,
    pub meaning: &'static str,
    /// `None`: required. `Some(text)`: optional, and what applies when it is unset or blank.
    pub default: Option<&'static str>,
}

impl Var {
    const fn required(name: &'static str, meaning: &'static str) -> Var {
        Var {
            name,
            meaning,
            default: None,
        }
    }

    const fn optional(name: &'static str, meaning: &'static str, default: &'static str) -> Var {
        Var {
            name,
            meaning,
            default: Some(default),
        }
    }

    /// True when the variable must be set.
    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }
}

pub use vars::*;

/// Every variable, one a line: name, meaning, and the default if it has one.
#[rustfmt::skip]
mod vars {
    use super::Var;
    use crate::model::DEFAULT_EXCLUDE_TAG;

    /// The default of the two filter lists.
    const EITHER: &str = "none (at least one of the two filter lists is required)";

    pub const TARGET_ID: Var = Var::required("MIRROR_TARGET_ID", "traffic mirror target id (the rebuilders' NLB)");
    pub const FILTER_ID: Var = Var::required("MIRROR_FILTER_ID", "traffic mirror filter id");
    pub const VNI: Var = Var::required("MIRROR_VNI", "VXLAN id of the sessions, 0..=16777215");
    pub const PACKET_LENGTH: Var = Var::optional("MIRROR_PACKET_LENGTH", "bytes mirrored per packet, 1..=8500", "whole packets");
    pub const ENI_FILTERS: Var = Var::optional("MIRROR_ENI_FILTERS", "DescribeNetworkInterfaces filters, CLI shorthand", EITHER);
    pub const INSTANCE_FILTERS: Var = Var::optional("MIRROR_INSTANCE_FILTERS", "DescribeInstances filters, CLI shorthand", EITHER);
    pub const EXCLUDE_TAG: Var = Var::optional("MIRROR_EXCLUDE_TAG", "tag key excluding an ENI or instance (unless `false`)", DEFAULT_EXCLUDE_TAG);
    pub const OWNER: Var = Var::required("MIRROR_OWNER", "value of the `mirrorfleet:owner` tag on our sessions");
    /// As onboard-eni and reconcile-mirrors read it.
    pub const EXCLUDED_FLEET: Var = Var::optional("FLEET_ASG_NAME", "the rebuilder group, never mirrored", "none excluded");
    /// As size-fleet reads it.
    pub const FLEET_ASG_NAME: Var = Var::required("FLEET_ASG_NAME", "the rebuilder Auto Scaling group");
    pub const FLEET_MIN: Var = Var::required("FLEET_MIN", "fewest rebuilders");
    pub const FLEET_MAX: Var = Var::required("FLEET_MAX", "most rebuilders, at least FLEET_MIN");
    pub const SESSIONS_PER_INSTANCE: Var = Var::required("FLEET_SESSIONS_PER_INSTANCE", "sessions one rebuilder handles, ≥ 1");
    pub const SCALE_IN_AFTER: Var = Var::optional("FLEET_SCALE_IN_AFTER", "lower readings before scaling in, ≥ 1", "3");
    pub const DRY_RUN: Var = Var::optional("DRY_RUN", "report without acting (true/false/1/0/yes/no)", "false");
}

/// What onboard-eni and reconcile-mirrors read ([`MirrorSettings::from_env`]).
pub const MIRROR_VARS: [Var; 10] = [
    TARGET_ID,
    FILTER_ID,
    VNI,
    PACKET_LENGTH,
    OWNER,
    ENI_FILTERS,
    INSTANCE_FILTERS,
    EXCLUDE_TAG,
    EXCLUDED_FLEET,
    DRY_RUN,
];

/// What size-fleet reads ([`FleetSettings::from_env`]); it counts the sessions sending to
/// `MIRROR_TARGET_ID`.
pub const FLEET_VARS: [Var; 7] = [
    FLEET_ASG_NAME,
    TARGET_ID,
    FLEET_MIN,
    FLEET_MAX,
    SESSIONS_PER_INSTANCE,
    SCALE_IN_AFTER,
    DRY_RUN,
];

/// Default of `FLEET_SCALE_IN_AFTER`.
pub const DEFAULT_SCALE_IN_AFTER: u32 = 3;
/// AWS limit on a tag key's length.
const TAG_KEY_MAX: usize = 128;
/// AWS limit on a tag value's length.
const TAG_VALUE_MAX: usize = 256;

/// What is wrong with one variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("is required")]
    Missing,
    #[error("`{value}` is not valid: {expected}")]
    Invalid { value: String, expected: String },
    #[error("{0}")]
    Filter(#[from] FilterError),
}

/// One invalid variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var} {problem}")]
pub struct VarError {
    pub var: &'static str,
    pub problem: Problem,
}

/// Every invalid variable found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub errors: Vec<VarError>,
}

impl SettingsError {
    /// The names of the variables in error.
    pub fn vars(&self) -> Vec<&'static str> {
        self.errors.iter().map(|e| e.var).collect()
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid settings: ")?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsError {}

/// Settings of `onboard-eni` and `reconcile-mirrors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSettings {
    pub spec: MirrorSpec,
    pub selector: Selector,
    pub dry_run: bool,
}

/// Settings of `size-fleet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    pub asg_name: String,
    /// Sessions sending to this target are the fleet's load.
    pub target_id: String,
    pub policy: CapacityPolicy,
    pub dry_run: bool,
}

/// Collects problems while reading variables.
struct Reader<'a> {
    env: EnvLookup<'a>,
    errors: Vec<VarError>,
}

impl<'a> Reader<'a> {
    fn new(env: EnvLookup<'a>) -> Self {
        Self {
            env,
            errors: Vec::new(),
        }
    }

    /// The trimmed value; unset and blank are both `None`.
    fn get(&self, var: Var) -> Option<String> {
        (self.env)(var.name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn fail(&mut self, var: Var, problem: Problem) {
        self.errors.push(VarError {
            var: var.name,
            problem,
        });
    }

    fn invalid(&mut self, var: Var, value: &str, expected: &str) {
        self.fail(
            var,
            Problem::Invalid {
                value: value.to_owned(),
                expected: expected.to_owned(),
            },
        );
    }

    fn required(&mut self, var: Var) -> Option<String> {
        let v = self.get(var);
        if v.is_none() {
            self.fail(var, Problem::Missing);
        }
        v
    }

    /// A required id: non-empty, no whitespace (ids are never parsed by prefix).
    fn id(&mut self, var: Var) -> String {
        match self.required(var) {
            Some(v) if v.chars().any(char::is_whitespace) => {
                self.invalid(var, &v, "an id without spaces");
                String::new()
            }
            Some(v) => v,
            None => String::new(),
        }
    }

    fn number(&mut self, var: Var, value: Option<String>, min: u32, max: u32) -> Option<u32> {
        let v = value?;
        match v.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.invalid(var, &v, &format!("an integer in {min}..={max}"));
                None
            }
        }
    }

    fn optional_number(&mut self, var: Var, min: u32, max: u32) -> Option<u32> {
        let v = self.get(var);
        self.number(var, v, min, max)
    }

    fn required_number(&mut self, var: Var, min: u32, max: u32) -> u32 {
        let v = self.required(var);
        self.number(var, v, min, max).unwrap_or(min)
    }

    fn dry_run(&mut self) -> bool {
        match self.get(DRY_RUN) {
            None => false,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    self.invalid(DRY_RUN, &v, "true, false, 1, 0, yes or no");
                    false
                }
            },
        }
    }

    fn tag_key(&mut self, var: Var, default: &str) -> String {
        let v = self.get(var).unwrap_or_else(|| default.to_owned());
        if v.len() > TAG_KEY_MAX {
            self.invalid(var, &v, "a tag key of at most 128 characters");
        }
        v
    }

    /// A filter list (unset: empty); `None` when it does not parse.
    fn filters<T: Filterable>(&mut self, var: Var) -> (Option<String>, Option<Filters<T>>) {
        let raw = self.get(var);
        match Filters::parse(raw.as_deref().unwrap_or("")) {
            Ok(f) => (raw, Some(f)),
            Err(e) => {
                self.fail(var, e.into());
                (raw, None)
            }
        }
    }

    fn finish<T>(self, value: T) -> Result<T, SettingsError> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(SettingsError {
                errors: self.errors,
            })
        }
    }
}

impl MirrorSettings {
    /// Reads and validates the settings of `onboard-eni` / `reconcile-mirrors`
    /// ([`MIRROR_VARS`]).
    pub fn from_env(env: EnvLookup<'_>) -> Result<Self, SettingsError> {
        let mut r = Reader::new(env);
        let target_id = r.id(TARGET_ID);
        let filter_id = r.id(FILTER_ID);
        let vni = r.required_number(VNI, 0, VNI_MAX);
        let packet_length = r.optional_number(PACKET_LENGTH, 1, PACKET_LENGTH_MAX);
        let owner = r.required(OWNER).unwrap_or_default();
        if owner.len() > TAG_VALUE_MAX {
            r.invalid(OWNER, &owner, "a tag value of at most 256 characters");
        }
        let (eni_raw, eni_filters) = r.filters(ENI_FILTERS);
        let (_, instance_filters) = r.filters(INSTANCE_FILTERS);
        // Both lists empty would select nothing, so every reconcile would delete all our
        // sessions: refused, whether the variables are unset, empty, or an empty JSON list.
        if let (Some(eni), Some(instance)) = (&eni_filters, &instance_filters)
            && eni.is_empty()
            && instance.is_empty()
        {
            r.invalid(
                ENI_FILTERS,
                &eni_raw.unwrap_or_default(),
                "at least one of MIRROR_ENI_FILTERS and MIRROR_INSTANCE_FILTERS",
            );
        }
        let exclude_tag = r.tag_key(EXCLUDE_TAG, DEFAULT_EXCLUDE_TAG);
        let fleet_asg_name = r.get(EXCLUDED_FLEET);
        let dry_run = r.dry_run();
        r.finish(MirrorSettings {
            spec: MirrorSpec {
                target_id,
                filter_id,
                vni,
                packet_length,
                owner,
            },
            selector: Selector {
                eni_filters: eni_filters.unwrap_or_default(),
                instance_filters: instance_filters.unwrap_or_default(),
                exclude_tag,
                fleet_asg_name,
            },
            dry_run,
        })
    }

    /// [`MirrorSettings::from_env`] over the process environment.
    pub fn from_process_env() -> Result<Self, SettingsError> {
        Self::from_env(&|k| std::env::var(k).ok())
    }
}

impl FleetSettings {
    /// Reads and validates the settings of `size-fleet` ([`FLEET_VARS`]).
    pub fn from_env(env: EnvLookup<'_>) -> Result<Self, SettingsError> {
        let mut r = Reader::new(env);
        let asg_name = r.required(FLEET_ASG_NAME).unwrap_or_default();
        let target_id = r.id(TARGET_ID);
        let min = r.required_number(FLEET_MIN, 0, u32::MAX);
        let max = r.required_number(FLEET_MAX, 0, u32::MAX);
        let sessions_per_instance = r.required_number(SESSIONS_PER_INSTANCE, 1, u32::MAX);
        let scale_in_after = r
            .optional_number(SCALE_IN_AFTER, 1, u32::MAX)
            .unwrap_or(DEFAULT_SCALE_IN_AFTER);
        if min > max {
            r.invalid(
                FLEET_MAX,
                &max.to_string(),
                &format!("at least FLEET_MIN ({min})"),
            );
        }
        let dry_run = r.dry_run();
        r.finish(FleetSettings {
            asg_name,
            target_id,
            policy: CapacityPolicy {
                min,
                max,
                sessions_per_instance,
                scale_in_after,
            },
            dry_run,
        })
    }

    /// [`FleetSettings::from_env`] over the process environment.
    pub fn from_process_env() -> Result<Self, SettingsError> {
        Self::from_env(&|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{BTreeSet, HashMap};

    fn mirror_env() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("MIRROR_TARGET_ID", "tmt-0123"),
            ("MIRROR_FILTER_ID", "tmf-0123"),
            ("MIRROR_VNI", "4242"),
            ("MIRROR_ENI_FILTERS", "Name=tag:mirror,Values=true"),
            ("MIRROR_OWNER", "prod"),
        ])
    }

    fn fleet_env() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("MIRROR_TARGET_ID", "tmt-0123"),
            ("FLEET_ASG_NAME", "rebuilders"),
            ("FLEET_MIN", "1"),
            ("FLEET_MAX", "8"),
            ("FLEET_SESSIONS_PER_INSTANCE", "200"),
        ])
    }

    fn mirror(env: &HashMap<&str, &str>) -> Result<MirrorSettings, SettingsError> {
        MirrorSettings::from_env(&|k| env.get(k).map(|v| (*v).to_owned()))
    }

    fn fleet(env: &HashMap<&str, &str>) -> Result<FleetSettings, SettingsError> {
        FleetSettings::from_env(&|k| env.get(k).map(|v| (*v).to_owned()))
    }

    /// The names `read` looks up, given every listed variable set to a valid value.
    fn looked_up(read: impl Fn(EnvLookup<'_>)) -> BTreeSet<&'static str> {
        let mut env = mirror_env();
        env.extend(fleet_env());
        let seen = RefCell::new(BTreeSet::new());
        read(&|k| {
            let name = MIRROR_VARS
                .iter()
                .chain(&FLEET_VARS)
                .map(|v| v.name)
                .find(|n| *n == k);
            seen.borrow_mut()
                .insert(name.unwrap_or("an unlisted variable"));
            env.get(k).map(|v| (*v).to_owned())
        });
        seen.into_inner()
    }

    fn names(vars: &[Var]) -> BTreeSet<&'static str> {
        vars.iter().map(|v| v.name).collect()
    }

    #[test]
    fn each_function_reads_exactly_its_listed_variables() {
        let mirror = looked_up(|env| {
            MirrorSettings::from_env(env).unwrap();
        });
        assert_eq!(mirror, names(&MIRROR_VARS));
        let fleet = looked_up(|env| {
            FleetSettings::from_env(env).unwrap();
        });
        assert_eq!(fleet, names(&FLEET_VARS));
    }

    #[test]
    fn the_listed_defaults_are_the_ones_applied() {
        let s = mirror(&mirror_env()).unwrap();
        assert_eq!(EXCLUDE_TAG.default, Some(s.selector.exclude_tag.as_str()));
        assert_eq!(DRY_RUN.default, Some("false"));
        assert!(!s.dry_run);
        let f = fleet(&fleet_env()).unwrap();
        assert_eq!(
            SCALE_IN_AFTER.default,
            Some(f.policy.scale_in_after.to_string().as_str())
        );
        for var in MIRROR_VARS.iter().chain(&FLEET_VARS) {
            assert!(!var.meaning.is_empty(), "{}", var.name);
        }
        // The required ones are exactly those whose absence is an error.
        let missing = mirror(&HashMap::new()).unwrap_err().vars();
        for var in MIRROR_VARS.iter().filter(|v| v.is_required()) {
            assert!(missing.contains(&var.name), "{}", var.name);
        }
        let missing = fleet(&HashMap::new()).unwrap_err().vars();
        let required: Vec<&str> = FLEET_VARS
            .iter()
            .filter(|v| v.is_required())
            .map(|v| v.name)
            .collect();
        assert_eq!(missing, required);
    }

    #[test]
    fn valid_mirror_settings_get_their_defaults() {
        let s = mirror(&mirror_env()).unwrap();
        assert_eq!(s.spec.target_id, "tmt-0123");
        assert_eq!(s.spec.vni, 4242);
        assert_eq!(s.spec.packet_length, None);
        assert_eq!(s.spec.owner, "prod");
        assert_eq!(s.selector.exclude_tag, DEFAULT_EXCLUDE_TAG);
        assert_eq!(s.selector.eni_filters.filters().len(), 1);
        assert!(s.selector.instance_filters.is_empty());
        assert_eq!(s.selector.fleet_asg_name, None);
        assert!(!s.dry_run);
    }

    #[test]
    fn every_missing_required_variable_is_named_at_once() {
        let e = mirror(&HashMap::new()).unwrap_err();
        assert_eq!(
            e.vars(),
            vec![
                "MIRROR_TARGET_ID",
                "MIRROR_FILTER_ID",
                "MIRROR_VNI",
                "MIRROR_OWNER",
                "MIRROR_ENI_FILTERS"
            ]
        );
        assert!(
            e.to_string().contains("MIRROR_TARGET_ID is required"),
            "{e}"
        );
    }

    #[test]
    fn an_empty_selection_is_refused_however_it_is_written() {
        for (eni, instance) in [("", ""), ("[]", ""), ("[]", "[]"), ("", "[]")] {
            let mut env = mirror_env();
            env.insert("MIRROR_ENI_FILTERS", eni);
            env.insert("MIRROR_INSTANCE_FILTERS", instance);
            let e = mirror(&env).unwrap_err();
            assert_eq!(e.vars(), vec!["MIRROR_ENI_FILTERS"], "{eni:?} {instance:?}");
            assert!(e.to_string().contains("at least one of"), "{e}");
        }
        let mut env = mirror_env();
        env.insert("MIRROR_ENI_FILTERS", "[]");
        env.insert("MIRROR_INSTANCE_FILTERS", "Name=tag:mirror,Values=true");
        assert!(mirror(&env).is_ok());
    }

    #[test]
    fn out_of_range_numbers_name_their_variable() {
        for (var, value) in [
            ("MIRROR_VNI", "16777216"),
            ("MIRROR_VNI", "-1"),
            ("MIRROR_VNI", "x"),
            ("MIRROR_PACKET_LENGTH", "0"),
            ("MIRROR_PACKET_LENGTH", "8501"),
            ("DRY_RUN", "maybe"),
        ] {
            let mut env = mirror_env();
            env.insert(var, value);
            let e = mirror(&env).unwrap_err();
            assert_eq!(e.vars(), vec![var], "{var}={value}");
            assert!(e.to_string().contains(value), "{e}");
        }
    }

    #[test]
    fn optional_values_are_read_when_set() {
        let mut env = mirror_env();
        env.insert("MIRROR_PACKET_LENGTH", "8500");
        env.insert("MIRROR_INSTANCE_FILTERS", "Name=instance-type,Values=m5.*");
        env.insert("MIRROR_EXCLUDE_TAG", "no-mirror");
        env.insert("FLEET_ASG_NAME", "rebuilders");
        env.insert("DRY_RUN", "TRUE");
        let s = mirror(&env).unwrap();
        assert_eq!(s.spec.packet_length, Some(8500));
        assert_eq!(s.selector.instance_filters.filters().len(), 1);
        assert_eq!(s.selector.exclude_tag, "no-mirror");
        assert_eq!(s.selector.fleet_asg_name.as_deref(), Some("rebuilders"));
        assert!(s.dry_run);
        env.insert("MIRROR_PACKET_LENGTH", " ");
        assert_eq!(mirror(&env).unwrap().spec.packet_length, None);
    }

    #[test]
    fn bad_filters_name_the_variable_and_the_token() {
        let mut env = mirror_env();
        env.insert("MIRROR_ENI_FILTERS", "Name=tag:mirror");
        env.insert("MIRROR_INSTANCE_FILTERS", "Name=bogus,Values=1");
        let e = mirror(&env).unwrap_err();
        assert_eq!(
            e.vars(),
            vec!["MIRROR_ENI_FILTERS", "MIRROR_INSTANCE_FILTERS"]
        );
        let text = e.to_string();
        assert!(
            text.contains("MIRROR_ENI_FILTERS filter `Name=tag:mirror` has no `Values=`"),
            "{text}"
        );
        assert!(
            text.contains("unknown instance filter name `bogus`"),
            "{text}"
        );
    }

    #[test]
    fn instance_filters_alone_are_enough() {
        let mut env = mirror_env();
        env.remove("MIRROR_ENI_FILTERS");
        env.insert("MIRROR_INSTANCE_FILTERS", "Name=tag:team,Values=payments");
        assert!(mirror(&env).is_ok());
    }

    #[test]
    fn ids_with_spaces_are_rejected() {
        let mut env = mirror_env();
        env.insert("MIRROR_FILTER_ID", "tmf 1");
        assert_eq!(mirror(&env).unwrap_err().vars(), vec!["MIRROR_FILTER_ID"]);
    }

    #[test]
    fn valid_fleet_settings_default_the_scale_in_streak() {
        let s = fleet(&fleet_env()).unwrap();
        assert_eq!(s.asg_name, "rebuilders");
        assert_eq!(s.target_id, "tmt-0123");
        assert_eq!(
            s.policy,
            CapacityPolicy {
                min: 1,
                max: 8,
                sessions_per_instance: 200,
                scale_in_after: DEFAULT_SCALE_IN_AFTER
            }
        );
    }

    #[test]
    fn fleet_settings_check_their_bounds() {
        let mut env = fleet_env();
        env.insert("FLEET_MIN", "9");
        assert_eq!(fleet(&env).unwrap_err().vars(), vec!["FLEET_MAX"]);
        let mut env = fleet_env();
        env.insert("FLEET_SESSIONS_PER_INSTANCE", "0");
        env.insert("FLEET_SCALE_IN_AFTER", "0");
        assert_eq!(
            fleet(&env).unwrap_err().vars(),
            vec!["FLEET_SESSIONS_PER_INSTANCE", "FLEET_SCALE_IN_AFTER"]
        );
        let e = fleet(&HashMap::new()).unwrap_err();
        assert_eq!(
            e.vars(),
            vec![
                "FLEET_ASG_NAME",
                "MIRROR_TARGET_ID",
                "FLEET_MIN",
                "FLEET_MAX",
                "FLEET_SESSIONS_PER_INSTANCE"
            ]
        );
    }
}
