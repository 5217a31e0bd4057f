//! Settings from the environment, validated at start-up. Every problem names its variable;
//! all problems are reported at once.
//!
//! The variables each function reads are listed once, here ([`FUNCTION_VARS`]: onboard-eni
//! and reconcile-mirrors read [`MIRROR_VARS`], reconcile-mirrors also [`RECONCILE_VARS`],
//! size-fleet [`FLEET_VARS`], teardown [`TEARDOWN_VARS`]), each [`Var`] with its meaning and
//! default. The readers below take their names from these lists (a unit test checks that they
//! read exactly the listed variables), and the template test checks that the stack sets every
//! one of them and nothing else.

use std::collections::BTreeSet;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::capacity::CapacityPolicy;
use crate::filters::{FilterError, Filterable, Filters};
use crate::model::{DEFAULT_EXCLUDE_TAG, MirrorSpec, PACKET_LENGTH_MAX, SessionPriority, VNI_MAX};
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

    pub const TARGET_ID: Var = Var::required("MIRROR_TARGET_ID", "traffic mirror target id (the rebuilders' NLB or GWLB endpoint)");
    pub const FILTER_ID: Var = Var::required("MIRROR_FILTER_ID", "traffic mirror filter id");
    pub const VNI: Var = Var::optional("MIRROR_VNI", "VXLAN id of the sessions, 0..=16777215", "derived from MIRROR_VNI_SEED");
    pub const VNI_SEED: Var = Var::optional("MIRROR_VNI_SEED", "the stack id; VNI = 1 + (first 24 bits of SHA-256(seed)) mod 16777215 (docs/deploy.md)", "none (then MIRROR_VNI is required)");
    pub const PACKET_LENGTH: Var = Var::optional("MIRROR_PACKET_LENGTH", "bytes mirrored per packet, 1..=8500", "whole packets");
    pub const ENI_FILTERS: Var = Var::optional("MIRROR_ENI_FILTERS", "DescribeNetworkInterfaces filters, CLI shorthand", EITHER);
    pub const INSTANCE_FILTERS: Var = Var::optional("MIRROR_INSTANCE_FILTERS", "DescribeInstances filters, CLI shorthand", EITHER);
    pub const EXCLUDE_TAG: Var = Var::optional("MIRROR_EXCLUDE_TAG", "tag key excluding an ENI or instance (unless `false`)", DEFAULT_EXCLUDE_TAG);
    pub const OWNER: Var = Var::required("MIRROR_OWNER", "value of the `mirrorfleet:owner` tag on our sessions");
    pub const SESSION_PRIORITY: Var = Var::optional("MIRROR_SESSION_PRIORITY", "`low`: new sessions take the highest free number (others are evaluated first); `high`: the lowest", "low");
    pub const REQUESTER_MANAGED: Var = Var::optional("MIRROR_REQUESTER_MANAGED", "requesters (e.g. `amazon-elb`) whose requester-managed ENIs may be mirrored, comma separated", "none");
    /// As onboard-eni and reconcile-mirrors read it.
    pub const EXCLUDED_FLEET: Var = Var::optional("FLEET_ASG_NAME", "the rebuilder group, never mirrored", "none excluded");
    pub const SOURCES_S3_URI: Var = Var::optional("MIRROR_SOURCES_S3_URI", "`s3://bucket/key` of the source map (docs/sources.md)", "no source map");
    pub const SOURCE_TAGS: Var = Var::optional("MIRROR_SOURCE_TAGS", "tag keys copied from ENIs and instances into the source map, comma separated", "none");
    pub const REFUSALS_S3_URI: Var = Var::optional("MIRROR_REFUSALS_S3_URI", "`s3://bucket/key` where the ENIs AWS refused are remembered", "nothing remembered");
    /// As size-fleet reads it.
    pub const FLEET_ASG_NAME: Var = Var::required("FLEET_ASG_NAME", "the rebuilder Auto Scaling group");
    pub const FLEET_MIN: Var = Var::required("FLEET_MIN", "fewest rebuilders");
    pub const FLEET_MAX: Var = Var::required("FLEET_MAX", "most rebuilders, at least FLEET_MIN");
    pub const SESSIONS_PER_INSTANCE: Var = Var::required("FLEET_SESSIONS_PER_INSTANCE", "sessions one rebuilder handles, ≥ 1");
    pub const SCALE_IN_AFTER: Var = Var::optional("FLEET_SCALE_IN_AFTER", "lower readings before scaling in, ≥ 1", "3");
    pub const METRICS_NAMESPACE: Var = Var::optional("FLEET_METRICS_NAMESPACE", "CloudWatch namespace of the rebuilders' DatagramsReceived and KernelDrops", "sessions only");
    pub const DATAGRAMS_PER_SECOND: Var = Var::optional("FLEET_DATAGRAMS_PER_SECOND_PER_INSTANCE", "mirrored datagrams per second one rebuilder is sized for, ≥ 1", "50000");
    pub const DRY_RUN: Var = Var::optional("DRY_RUN", "report without acting (true/false/1/0/yes/no)", "false");
}

/// What onboard-eni and reconcile-mirrors read ([`MirrorSettings::from_env`]).
pub const MIRROR_VARS: &[Var] = &[
    TARGET_ID,
    FILTER_ID,
    VNI,
    VNI_SEED,
    PACKET_LENGTH,
    OWNER,
    ENI_FILTERS,
    INSTANCE_FILTERS,
    EXCLUDE_TAG,
    EXCLUDED_FLEET,
    SESSION_PRIORITY,
    REQUESTER_MANAGED,
    DRY_RUN,
];

/// What reconcile-mirrors reads besides [`MIRROR_VARS`] ([`ReconcileSettings::from_env`]).
pub const RECONCILE_VARS: &[Var] = &[SOURCES_S3_URI, SOURCE_TAGS, REFUSALS_S3_URI];

/// What size-fleet reads ([`FleetSettings::from_env`]); it counts the sessions sending to
/// `MIRROR_TARGET_ID`.
pub const FLEET_VARS: &[Var] = &[
    FLEET_ASG_NAME,
    TARGET_ID,
    FLEET_MIN,
    FLEET_MAX,
    SESSIONS_PER_INSTANCE,
    SCALE_IN_AFTER,
    METRICS_NAMESPACE,
    DATAGRAMS_PER_SECOND,
    DRY_RUN,
];

/// What the teardown custom resource reads ([`TeardownSettings::from_env`]): the same
/// variables as the others, for what it removes on stack delete.
pub const TEARDOWN_VARS: &[Var] = &[TARGET_ID, FILTER_ID, OWNER, SOURCES_S3_URI, REFUSALS_S3_URI];

/// Each function (its binary) and the lists of variables it reads.
pub const FUNCTION_VARS: [(&str, &[&[Var]]); 4] = [
    ("onboard-eni", &[MIRROR_VARS]),
    ("reconcile-mirrors", &[MIRROR_VARS, RECONCILE_VARS]),
    ("size-fleet", &[FLEET_VARS]),
    ("teardown", &[TEARDOWN_VARS]),
];

/// The variables `function` (a binary name) reads, in list order; empty for an unknown one.
pub fn vars_of(function: &str) -> Vec<Var> {
    FUNCTION_VARS
        .iter()
        .filter(|(f, _)| *f == function)
        .flat_map(|(_, lists)| lists.iter().flat_map(|l| l.iter().copied()))
        .collect()
}

/// Every variable any function reads, by name.
pub fn all_vars() -> BTreeSet<&'static str> {
    FUNCTION_VARS
        .iter()
        .flat_map(|(_, lists)| lists.iter().flat_map(|l| l.iter().map(|v| v.name)))
        .collect()
}

/// The VNI derived from a seed (the stack id), as docs/deploy.md ("Mirror VNI") writes it and
/// the rebuilders' `install.sh --vni-seed` computes it: `1 + ((h[0] << 16 | h[1] << 8 | h[2])
/// mod 16777215)` with `h = SHA-256(seed as UTF-8)`, so 1..=16777215.
pub fn vni_from_seed(seed: &str) -> u32 {
    let h = Sha256::digest(seed.as_bytes());
    let first24 = (u32::from(h[0]) << 16) | (u32::from(h[1]) << 8) | u32::from(h[2]);
    1 + first24 % VNI_MAX
}

/// Default of `FLEET_DATAGRAMS_PER_SECOND_PER_INSTANCE`: the live benchmark's highest rate
/// without a kernel drop, with headroom (docs/deploy.md, `DatagramsPerSecondPerRebuilder`).
pub const DEFAULT_DATAGRAMS_PER_SECOND: u64 = 50_000;

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

/// An S3 object named `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    /// `s3://bucket/key` with a non-empty bucket and key; `None` otherwise.
    pub fn parse(text: &str) -> Option<S3Uri> {
        let (bucket, key) = text.strip_prefix("s3://")?.split_once('/')?;
        let bucket_ok = !bucket.is_empty()
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        (bucket_ok && !key.is_empty()).then(|| S3Uri {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Settings of `reconcile-mirrors`: [`MirrorSettings`] and what it publishes or remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileSettings {
    pub mirror: MirrorSettings,
    /// Where the source map goes (docs/sources.md); `None`: not published.
    pub sources: Option<S3Uri>,
    /// Tag keys copied from ENIs and instances into the source map.
    pub source_tags: Vec<String>,
    /// Where the refused ENIs are remembered ([`crate::refusals`]); `None`: not remembered.
    pub refusals: Option<S3Uri>,
}

/// Settings of `size-fleet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    pub asg_name: String,
    /// Sessions sending to this target are the fleet's load.
    pub target_id: String,
    pub policy: CapacityPolicy,
    /// The CloudWatch namespace of the rebuilders' metrics; `None`: size by sessions only.
    pub metrics_namespace: Option<String>,
    pub dry_run: bool,
}

/// Settings of the `teardown` custom resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeardownSettings {
    pub target_id: String,
    pub filter_id: String,
    pub owner: String,
    /// The objects the stack writes (every version is removed on stack delete, so that the
    /// bucket can be deleted).
    pub objects: Vec<S3Uri>,
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

impl Reader<'_> {
    /// The VNI: `MIRROR_VNI` if set, else derived from `MIRROR_VNI_SEED`; one is required.
    fn vni(&mut self) -> u32 {
        let explicit = self.optional_number(VNI, 0, VNI_MAX);
        let seed = self.get(VNI_SEED);
        match (explicit, seed) {
            (Some(vni), _) => vni,
            (None, Some(seed)) => vni_from_seed(&seed),
            (None, None) => {
                if self.get(VNI).is_none() {
                    self.fail(VNI, Problem::Missing);
                }
                0
            }
        }
    }

    fn priority(&mut self) -> SessionPriority {
        match self.get(SESSION_PRIORITY).map(|v| v.to_ascii_lowercase()) {
            None => SessionPriority::Low,
            Some(v) if v == "low" => SessionPriority::Low,
            Some(v) if v == "high" => SessionPriority::High,
            Some(v) => {
                self.invalid(SESSION_PRIORITY, &v, "low or high");
                SessionPriority::Low
            }
        }
    }

    /// A comma-separated list (unset or blank: empty), items trimmed, empty items dropped.
    fn list(&mut self, var: Var) -> Vec<String> {
        self.get(var)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn s3_uri(&mut self, var: Var) -> Option<S3Uri> {
        let v = self.get(var)?;
        let uri = S3Uri::parse(&v);
        if uri.is_none() {
            self.invalid(var, &v, "s3://bucket/key");
        }
        uri
    }

    fn owner(&mut self) -> String {
        let owner = self.required(OWNER).unwrap_or_default();
        if owner.len() > TAG_VALUE_MAX {
            self.invalid(OWNER, &owner, "a tag value of at most 256 characters");
        }
        owner
    }

    fn mirror(&mut self) -> MirrorSettings {
        let target_id = self.id(TARGET_ID);
        let filter_id = self.id(FILTER_ID);
        let vni = self.vni();
        let packet_length = self.optional_number(PACKET_LENGTH, 1, PACKET_LENGTH_MAX);
        let owner = self.owner();
        let (eni_raw, eni_filters) = self.filters(ENI_FILTERS);
        let (_, instance_filters) = self.filters(INSTANCE_FILTERS);
        // Both lists empty would select nothing, so every reconcile would delete all our
        // sessions: refused, whether the variables are unset, empty, or an empty JSON list.
        if let (Some(eni), Some(instance)) = (&eni_filters, &instance_filters)
            && eni.is_empty()
            && instance.is_empty()
        {
            self.invalid(
                ENI_FILTERS,
                &eni_raw.unwrap_or_default(),
                "at least one of MIRROR_ENI_FILTERS and MIRROR_INSTANCE_FILTERS",
            );
        }
        let exclude_tag = self.tag_key(EXCLUDE_TAG, DEFAULT_EXCLUDE_TAG);
        let fleet_asg_name = self.get(EXCLUDED_FLEET);
        let priority = self.priority();
        let requester_managed = self.list(REQUESTER_MANAGED).into_iter().collect();
        let dry_run = self.dry_run();
        MirrorSettings {
            spec: MirrorSpec {
                target_id,
                filter_id,
                vni,
                packet_length,
                owner,
                priority,
            },
            selector: Selector {
                eni_filters: eni_filters.unwrap_or_default(),
                instance_filters: instance_filters.unwrap_or_default(),
                exclude_tag,
                fleet_asg_name,
                requester_managed,
            },
            dry_run,
        }
    }
}

impl MirrorSettings {
    /// Reads and validates the settings of `onboard-eni` / `reconcile-mirrors`
    /// ([`MIRROR_VARS`]).
    pub fn from_env(env: EnvLookup<'_>) -> Result<Self, SettingsError> {
        let mut r = Reader::new(env);
        let settings = r.mirror();
        r.finish(settings)
    }

    /// [`MirrorSettings::from_env`] over the process environment.
    pub fn from_process_env() -> Result<Self, SettingsError> {
        Self::from_env(&|k| std::env::var(k).ok())
    }
}

impl ReconcileSettings {
    /// Reads and validates the settings of `reconcile-mirrors` ([`MIRROR_VARS`] and
    /// [`RECONCILE_VARS`]).
    pub fn from_env(env: EnvLookup<'_>) -> Result<Self, SettingsError> {
        let mut r = Reader::new(env);
        let mirror = r.mirror();
        let sources = r.s3_uri(SOURCES_S3_URI);
        let source_tags = r.list(SOURCE_TAGS);
        for key in &source_tags {
            if key.len() > TAG_KEY_MAX {
                r.invalid(SOURCE_TAGS, key, "tag keys of at most 128 characters");
            }
        }
        let refusals = r.s3_uri(REFUSALS_S3_URI);
        r.finish(ReconcileSettings {
            mirror,
            sources,
            source_tags,
            refusals,
        })
    }

    /// [`ReconcileSettings::from_env`] over the process environment.
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
        let metrics_namespace = r.get(METRICS_NAMESPACE);
        let datagrams_per_second_per_instance = r
            .optional_number(DATAGRAMS_PER_SECOND, 1, u32::MAX)
            .map_or(DEFAULT_DATAGRAMS_PER_SECOND, u64::from);
        let dry_run = r.dry_run();
        r.finish(FleetSettings {
            asg_name,
            target_id,
            policy: CapacityPolicy {
                min,
                max,
                sessions_per_instance,
                scale_in_after,
                datagrams_per_second_per_instance,
            },
            metrics_namespace,
            dry_run,
        })
    }

    /// [`FleetSettings::from_env`] over the process environment.
    pub fn from_process_env() -> Result<Self, SettingsError> {
        Self::from_env(&|k| std::env::var(k).ok())
    }
}

impl TeardownSettings {
    /// Reads and validates the settings of `teardown` ([`TEARDOWN_VARS`]).
    pub fn from_env(env: EnvLookup<'_>) -> Result<Self, SettingsError> {
        let mut r = Reader::new(env);
        let target_id = r.id(TARGET_ID);
        let filter_id = r.id(FILTER_ID);
        let owner = r.owner();
        let objects = [SOURCES_S3_URI, REFUSALS_S3_URI]
            .into_iter()
            .filter_map(|var| r.s3_uri(var))
            .collect();
        r.finish(TeardownSettings {
            target_id,
            filter_id,
            owner,
            objects,
        })
    }

    /// [`TeardownSettings::from_env`] over the process environment.
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
        env.insert("MIRROR_SOURCES_S3_URI", "s3://bucket/sources.json");
        env.insert("MIRROR_REFUSALS_S3_URI", "s3://bucket/state/refusals.json");
        let all = all_vars();
        let seen = RefCell::new(BTreeSet::new());
        read(&|k| {
            let name = all.iter().copied().find(|n| *n == k);
            seen.borrow_mut()
                .insert(name.unwrap_or("an unlisted variable"));
            env.get(k).map(|v| (*v).to_owned())
        });
        seen.into_inner()
    }

    fn names(function: &str) -> BTreeSet<&'static str> {
        vars_of(function).iter().map(|v| v.name).collect()
    }

    #[test]
    fn each_function_reads_exactly_its_listed_variables() {
        let read = |f: fn(EnvLookup<'_>)| looked_up(f);
        assert_eq!(
            read(|env| {
                MirrorSettings::from_env(env).unwrap();
            }),
            names("onboard-eni")
        );
        assert_eq!(
            read(|env| {
                ReconcileSettings::from_env(env).unwrap();
            }),
            names("reconcile-mirrors")
        );
        assert_eq!(
            read(|env| {
                FleetSettings::from_env(env).unwrap();
            }),
            names("size-fleet")
        );
        assert_eq!(
            read(|env| {
                TeardownSettings::from_env(env).unwrap();
            }),
            names("teardown")
        );
        assert!(vars_of("no-such-function").is_empty());
    }

    #[test]
    fn the_vni_is_derived_from_the_stack_id_as_docs_deploy_md_writes_it() {
        // The test vectors of docs/deploy.md ("Mirror VNI"), which install.sh is checked
        // against too (rebuilder/tests/deploy_install.rs).
        assert_eq!(
            vni_from_seed(
                "arn:aws:cloudformation:us-east-1:123456789012:stack/mirrorfleet/1c2fa620-982a-11e3-aff7-50e2416294e0"
            ),
            14_049_789
        );
        assert_eq!(
            vni_from_seed(
                "arn:aws:cloudformation:eu-west-1:210987654321:stack/mf-prod/6b2f5f10-4a1e-11ef-9a3b-0a1b2c3d4e5f"
            ),
            15_251_097
        );
        let seed = "arn:aws:cloudformation:us-east-1:123456789012:stack/mirrorfleet/1c2fa620-982a-11e3-aff7-50e2416294e0";
        let mut env = mirror_env();
        env.remove("MIRROR_VNI");
        env.insert("MIRROR_VNI_SEED", seed);
        assert_eq!(mirror(&env).unwrap().spec.vni, 14_049_789);
        env.insert("MIRROR_VNI", "7");
        assert_eq!(mirror(&env).unwrap().spec.vni, 7, "an explicit VNI wins");
        env.remove("MIRROR_VNI");
        env.remove("MIRROR_VNI_SEED");
        assert_eq!(mirror(&env).unwrap_err().vars(), vec!["MIRROR_VNI"]);
    }

    #[test]
    fn the_session_priority_and_allowed_requesters_are_read() {
        let mut env = mirror_env();
        assert_eq!(mirror(&env).unwrap().spec.priority, SessionPriority::Low);
        env.insert("MIRROR_SESSION_PRIORITY", "HIGH");
        assert_eq!(mirror(&env).unwrap().spec.priority, SessionPriority::High);
        env.insert("MIRROR_SESSION_PRIORITY", "first");
        assert_eq!(
            mirror(&env).unwrap_err().vars(),
            vec!["MIRROR_SESSION_PRIORITY"]
        );
        let mut env = mirror_env();
        assert!(mirror(&env).unwrap().selector.requester_managed.is_empty());
        env.insert("MIRROR_REQUESTER_MANAGED", " amazon-elb , ,amazon-rds");
        let allowed: Vec<String> = mirror(&env)
            .unwrap()
            .selector
            .requester_managed
            .into_iter()
            .collect();
        assert_eq!(allowed, vec!["amazon-elb", "amazon-rds"]);
    }

    #[test]
    fn reconcile_and_teardown_read_their_s3_objects() {
        let mut env = mirror_env();
        env.insert("MIRROR_SOURCES_S3_URI", "s3://my-bucket/maps/sources.json");
        env.insert("MIRROR_SOURCE_TAGS", "app, team");
        env.insert(
            "MIRROR_REFUSALS_S3_URI",
            "s3://my-bucket/state/refusals.json",
        );
        let r = ReconcileSettings::from_env(&|k| env.get(k).map(|v| (*v).to_owned())).unwrap();
        let sources = r.sources.unwrap();
        assert_eq!(
            (sources.bucket.as_str(), sources.key.as_str()),
            ("my-bucket", "maps/sources.json")
        );
        assert_eq!(sources.to_string(), "s3://my-bucket/maps/sources.json");
        assert_eq!(r.source_tags, vec!["app", "team"]);
        assert!(r.refusals.is_some());
        let t = TeardownSettings::from_env(&|k| env.get(k).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(t.objects.len(), 2);
        assert_eq!(
            (t.target_id.as_str(), t.owner.as_str()),
            ("tmt-0123", "prod")
        );
        for bad in [
            "my-bucket/x",
            "s3://my-bucket",
            "s3:///key",
            "s3://My_Bucket/k",
        ] {
            env.insert("MIRROR_SOURCES_S3_URI", bad);
            let e =
                ReconcileSettings::from_env(&|k| env.get(k).map(|v| (*v).to_owned())).unwrap_err();
            assert_eq!(e.vars(), vec!["MIRROR_SOURCES_S3_URI"], "{bad}");
        }
        let none =
            ReconcileSettings::from_env(&|k| mirror_env().get(k).map(|v| (*v).to_owned())).unwrap();
        assert_eq!((none.sources, none.refusals), (None, None));
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
        assert_eq!(
            DATAGRAMS_PER_SECOND.default,
            Some(
                f.policy
                    .datagrams_per_second_per_instance
                    .to_string()
                    .as_str()
            )
        );
        assert_eq!(SESSION_PRIORITY.default, Some(s.spec.priority.as_str()));
        for (_, lists) in FUNCTION_VARS {
            for var in lists.iter().flat_map(|l| l.iter()) {
                assert!(!var.meaning.is_empty(), "{}", var.name);
            }
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
                scale_in_after: DEFAULT_SCALE_IN_AFTER,
                datagrams_per_second_per_instance: DEFAULT_DATAGRAMS_PER_SECOND,
            }
        );
        assert_eq!(s.metrics_namespace, None);
        let mut env = fleet_env();
        env.insert("FLEET_METRICS_NAMESPACE", "mirrorfleet/prod");
        env.insert("FLEET_DATAGRAMS_PER_SECOND_PER_INSTANCE", "250000");
        let s = fleet(&env).unwrap();
        assert_eq!(s.metrics_namespace.as_deref(), Some("mirrorfleet/prod"));
        assert_eq!(s.policy.datagrams_per_second_per_instance, 250_000);
        env.insert("FLEET_DATAGRAMS_PER_SECOND_PER_INSTANCE", "0");
        assert_eq!(
            fleet(&env).unwrap_err().vars(),
            vec!["FLEET_DATAGRAMS_PER_SECOND_PER_INSTANCE"]
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
