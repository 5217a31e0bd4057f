//! The JSON report of a run and its CloudWatch Embedded Metric Format (EMF) line.
//!
//! The handler builds a [`Report`] from the [`Plan`] ([`Report::from_plan`]) and records the
//! outcome of each action as it applies it ([`Report::created`], [`Report::failed`], …). In a
//! dry run, [`Report::dry_run`] lists the planned actions as if done.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::capacity::CapacityDecision;
use crate::plan::{Change, DeleteReason, Plan, Skipped, Unchanged};
use crate::selection::SkipReason;

/// At most this many entries are listed per list; the rest are only counted (a full
/// reconcile of thousands of ENIs keeps its report small).
pub const REPORT_MAX_LISTED: usize = 200;

/// Default CloudWatch namespace of the EMF metrics.
pub const METRICS_NAMESPACE: &str = "mirrorfleet";

/// The bounded set of failure classes (also metric names, see [`ErrorClass::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The ENI (or session) no longer exists.
    EniGone,
    /// The ENI or its instance type cannot be a mirror source.
    UnsupportedSource,
    /// The ENI already has the maximum number of sessions.
    SessionLimit,
    /// Request rate exceeded (after the SDK's retries).
    Throttled,
    /// Missing IAM permission.
    PermissionDenied,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::EniGone => "eni_gone",
            ErrorClass::UnsupportedSource => "unsupported_source",
            ErrorClass::SessionLimit => "session_limit",
            ErrorClass::Throttled => "throttled",
            ErrorClass::PermissionDenied => "permission_denied",
            ErrorClass::Other => "other",
        }
    }

    /// Whether retrying the run can help (the function should then return an error so that
    /// Lambda retries / the DLQ receives the event).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Throttled | ErrorClass::Other)
    }

    /// Every class.
    pub const ALL: [ErrorClass; 6] = [
        ErrorClass::EniGone,
        ErrorClass::UnsupportedSource,
        ErrorClass::SessionLimit,
        ErrorClass::Throttled,
        ErrorClass::PermissionDenied,
        ErrorClass::Other,
    ];
}

/// The action that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Delete,
    Modify,
    Observe,
}

/// A created session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub eni_id: String,
    /// `None` in a dry run.
    pub session_id: Option<String>,
    pub number: u32,
}

/// A deleted session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub eni_id: String,
    pub session_id: String,
    pub reason: DeleteReason,
}

/// A modified session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modified {
    pub eni_id: String,
    pub session_id: String,
    /// Changed fields: `target`, `filter`, `vni`, `packet_length`.
    pub fields: Vec<String>,
}

/// A failed action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The ENI concerned (empty for a run-wide failure such as observing).
    pub eni_id: String,
    pub action: Action,
    pub class: ErrorClass,
    pub message: String,
}

/// A list capped at [`REPORT_MAX_LISTED`] entries plus the total count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capped<T> {
    pub count: usize,
    pub items: Vec<T>,
}

impl<T> Default for Capped<T> {
    fn default() -> Self {
        Self {
            count: 0,
            items: Vec::new(),
        }
    }
}

impl<T> Capped<T> {
    /// Counts the entry and lists it while under the cap.
    pub fn push(&mut self, item: T) {
        self.count += 1;
        if self.items.len() < REPORT_MAX_LISTED {
            self.items.push(item);
        }
    }

    /// Entries counted but not listed.
    pub fn truncated(&self) -> usize {
        self.count - self.items.len()
    }
}

/// The report of one onboard/reconcile run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Report {
    /// Function name (`onboard-eni`, `reconcile-mirrors`).
    pub function: String,
    pub dry_run: bool,
    pub created: Capped<Created>,
    pub deleted: Capped<Deleted>,
    pub modified: Capped<Modified>,
    pub unchanged: Capped<Unchanged>,
    pub skipped: Capped<Skipped>,
    /// Skipped ENIs per reason (all of them, not capped).
    pub skipped_by_reason: BTreeMap<SkipReason, usize>,
    pub errors: Capped<Failure>,
    /// Errors per class (all of them).
    pub errors_by_class: BTreeMap<ErrorClass, usize>,
}

fn fields(changes: &[Change]) -> Vec<String> {
    changes.iter().map(|c| c.field().to_owned()).collect()
}

impl Report {
    /// An empty report.
    pub fn new(function: impl Into<String>, dry_run: bool) -> Self {
        Self {
            function: function.into(),
            dry_run,
            ..Self::default()
        }
    }

    /// A report holding the plan's unchanged and skipped entries; the handler then records
    /// each applied action.
    pub fn from_plan(function: impl Into<String>, dry_run: bool, plan: &Plan) -> Self {
        let mut report = Self::new(function, dry_run);
        for u in &plan.unchanged {
            report.unchanged.push(u.clone());
        }
        for s in &plan.skipped {
            report.skip(s.clone());
        }
        report
    }

    /// The report of a dry run: every planned action listed as if done.
    pub fn dry_run(function: impl Into<String>, plan: &Plan) -> Self {
        let mut report = Self::from_plan(function, true, plan);
        for c in &plan.create {
            report.created(&c.eni_id, None, c.number);
        }
        for d in &plan.delete {
            report.deleted(&d.eni_id, &d.session_id, d.reason.clone());
        }
        for m in &plan.modify {
            report.modified(&m.eni_id, &m.session_id, &m.changes);
        }
        report
    }

    /// Records a skipped ENI.
    pub fn skip(&mut self, skipped: Skipped) {
        *self.skipped_by_reason.entry(skipped.reason).or_default() += 1;
        self.skipped.push(skipped);
    }

    /// Records a created session.
    pub fn created(&mut self, eni_id: &str, session_id: Option<String>, number: u32) {
        self.created.push(Created {
            eni_id: eni_id.to_owned(),
            session_id,
            number,
        });
    }

    /// Records a deleted session.
    pub fn deleted(&mut self, eni_id: &str, session_id: &str, reason: DeleteReason) {
        self.deleted.push(Deleted {
            eni_id: eni_id.to_owned(),
            session_id: session_id.to_owned(),
            reason,
        });
    }

    /// Records a modified session.
    pub fn modified(&mut self, eni_id: &str, session_id: &str, changes: &[Change]) {
        self.modified.push(Modified {
            eni_id: eni_id.to_owned(),
            session_id: session_id.to_owned(),
            fields: fields(changes),
        });
    }

    /// Records a failed action.
    pub fn failed(
        &mut self,
        eni_id: &str,
        action: Action,
        class: ErrorClass,
        message: impl Into<String>,
    ) {
        *self.errors_by_class.entry(class).or_default() += 1;
        self.errors.push(Failure {
            eni_id: eni_id.to_owned(),
            action,
            class,
            message: message.into(),
        });
    }

    /// True when a failure was of a retryable class.
    pub fn has_retryable_errors(&self) -> bool {
        self.errors_by_class
            .iter()
            .any(|(class, n)| *n > 0 && class.is_retryable())
    }

    /// The counts as (metric name, value), in a fixed order: `Created`, `Deleted`, `Modified`,
    /// `Unchanged`, `Skipped`, `Errors`, then one `Errors_<class>` per error class.
    pub fn metrics(&self) -> Vec<(String, usize)> {
        let mut m = vec![
            ("Created".to_owned(), self.created.count),
            ("Deleted".to_owned(), self.deleted.count),
            ("Modified".to_owned(), self.modified.count),
            ("Unchanged".to_owned(), self.unchanged.count),
            ("Skipped".to_owned(), self.skipped.count),
            ("Errors".to_owned(), self.errors.count),
        ];
        for class in ErrorClass::ALL {
            let n = self.errors_by_class.get(&class).copied().unwrap_or(0);
            m.push((format!("Errors_{}", class.as_str()), n));
        }
        m
    }

    /// One EMF line (a JSON object on one line) with the counts, dimension `Function`.
    pub fn emf_line(&self, namespace: &str, timestamp_ms: u64) -> String {
        let metrics: Vec<(String, u64)> = self
            .metrics()
            .into_iter()
            .map(|(k, v)| (k, v as u64))
            .collect();
        emf_line(namespace, &self.function, timestamp_ms, &metrics)
    }
}

/// The report of one size-fleet run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityReport {
    pub function: String,
    pub dry_run: bool,
    pub asg_name: String,
    pub sessions: u32,
    pub current_desired: u32,
    pub decision: CapacityDecision,
    /// Whether SetDesiredCapacity was called (and succeeded).
    pub applied: bool,
    pub error: Option<Failure>,
}

impl CapacityReport {
    /// One EMF line with `Sessions`, `CurrentCapacity`, `TargetCapacity`, `DesiredCapacity`,
    /// `CapacityChanged`, `Errors`.
    pub fn emf_line(&self, namespace: &str, timestamp_ms: u64) -> String {
        let metrics = [
            ("Sessions".to_owned(), u64::from(self.sessions)),
            (
                "CurrentCapacity".to_owned(),
                u64::from(self.current_desired),
            ),
            ("TargetCapacity".to_owned(), u64::from(self.decision.target)),
            (
                "DesiredCapacity".to_owned(),
                u64::from(self.decision.desired),
            ),
            ("CapacityChanged".to_owned(), u64::from(self.applied)),
            ("Errors".to_owned(), u64::from(self.error.is_some())),
        ];
        emf_line(namespace, &self.function, timestamp_ms, &metrics)
    }
}

/// Renders an EMF line: `{"_aws":{"Timestamp":…,"CloudWatchMetrics":[{"Namespace":…,
/// "Dimensions":[["Function"]],"Metrics":[{"Name":…,"Unit":"Count"},…]}]},"Function":…,
/// "<Name>":<value>,…}`.
pub fn emf_line(
    namespace: &str,
    function: &str,
    timestamp_ms: u64,
    metrics: &[(String, u64)],
) -> String {
    let mut root = serde_json::Map::new();
    root.insert(
        "_aws".to_owned(),
        serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Function"]],
                "Metrics": metrics
                    .iter()
                    .map(|(name, _)| serde_json::json!({"Name": name, "Unit": "Count"}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    root.insert("Function".to_owned(), serde_json::Value::from(function));
    for (name, value) in metrics {
        root.insert(name.clone(), serde_json::Value::from(*value));
    }
    serde_json::Value::Object(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::ScaleInHistory;
    use crate::model::Tags;
    use crate::plan::{CreateSession, DeleteSession, ModifySession};

    fn plan() -> Plan {
        Plan {
            create: vec![CreateSession {
                eni_id: "eni-1".into(),
                target_id: "tmt-1".into(),
                filter_id: "tmf-1".into(),
                number: 1,
                vni: 42,
                packet_length: None,
                tags: Tags::new(),
                client_token: "mf1-x".into(),
            }],
            delete: vec![DeleteSession {
                session_id: "tms-2".into(),
                eni_id: "eni-2".into(),
                number: 1,
                reason: DeleteReason::EniGone,
            }],
            modify: vec![ModifySession {
                session_id: "tms-3".into(),
                eni_id: "eni-3".into(),
                number: 2,
                changes: vec![Change::Vni {
                    from: Some(1),
                    to: 42,
                }],
            }],
            unchanged: vec![Unchanged {
                eni_id: "eni-4".into(),
                session_id: "tms-4".into(),
            }],
            skipped: vec![
                Skipped {
                    eni_id: "eni-5".into(),
                    reason: SkipReason::SessionLimit,
                },
                Skipped {
                    eni_id: "eni-6".into(),
                    reason: SkipReason::NotSelected,
                },
            ],
        }
    }

    #[test]
    fn a_dry_run_report_lists_every_planned_action() {
        let r = Report::dry_run("reconcile-mirrors", &plan());
        assert!(r.dry_run);
        assert_eq!(
            (
                r.created.count,
                r.deleted.count,
                r.modified.count,
                r.unchanged.count,
                r.skipped.count
            ),
            (1, 1, 1, 1, 2)
        );
        assert_eq!(r.modified.items[0].fields, vec!["vni".to_owned()]);
        assert_eq!(r.skipped_by_reason.get(&SkipReason::SessionLimit), Some(&1));
        assert!(!r.has_retryable_errors());
    }

    #[test]
    fn the_report_serialises_to_json_with_reasons_per_eni() {
        let mut r = Report::from_plan("onboard-eni", false, &plan());
        r.failed(
            "eni-1",
            Action::Create,
            ErrorClass::UnsupportedSource,
            "m6i not supported",
        );
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["function"], "onboard-eni");
        assert_eq!(json["skipped"]["items"][0]["reason"], "session_limit");
        assert_eq!(json["errors"]["items"][0]["class"], "unsupported_source");
        assert_eq!(json["errors_by_class"]["unsupported_source"], 1);
        assert_eq!(json["skipped_by_reason"]["not_selected"], 1);
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn only_throttling_and_unknown_errors_are_retryable() {
        let mut r = Report::new("reconcile-mirrors", false);
        for class in [
            ErrorClass::EniGone,
            ErrorClass::UnsupportedSource,
            ErrorClass::SessionLimit,
            ErrorClass::PermissionDenied,
        ] {
            r.failed("eni-1", Action::Create, class, "x");
        }
        assert!(!r.has_retryable_errors());
        r.failed("eni-2", Action::Delete, ErrorClass::Throttled, "slow down");
        assert!(r.has_retryable_errors());
    }

    #[test]
    fn long_lists_are_capped_but_fully_counted() {
        let mut r = Report::new("reconcile-mirrors", false);
        for i in 0..(REPORT_MAX_LISTED + 50) {
            r.skip(Skipped {
                eni_id: format!("eni-{i}"),
                reason: SkipReason::NotSelected,
            });
        }
        assert_eq!(r.skipped.count, REPORT_MAX_LISTED + 50);
        assert_eq!(r.skipped.items.len(), REPORT_MAX_LISTED);
        assert_eq!(r.skipped.truncated(), 50);
        assert_eq!(
            r.skipped_by_reason[&SkipReason::NotSelected],
            REPORT_MAX_LISTED + 50
        );
    }

    #[test]
    fn the_emf_line_declares_every_metric_it_carries() {
        let mut r = Report::dry_run("reconcile-mirrors", &plan());
        r.failed("eni-9", Action::Modify, ErrorClass::Throttled, "x");
        let line = r.emf_line(METRICS_NAMESPACE, 1_700_000_000_000);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(cw["Namespace"], "mirrorfleet");
        assert_eq!(cw["Dimensions"], serde_json::json!([["Function"]]));
        assert_eq!(v["Function"], "reconcile-mirrors");
        let names: Vec<&str> = cw["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 6 + ErrorClass::ALL.len());
        for name in names {
            assert!(v[name].is_u64(), "{name} has no value");
        }
        assert_eq!(v["Created"], 1);
        assert_eq!(v["Skipped"], 2);
        assert_eq!(v["Errors"], 1);
        assert_eq!(v["Errors_throttled"], 1);
        assert_eq!(v["Errors_other"], 0);
    }

    #[test]
    fn the_capacity_emf_line_carries_the_decision() {
        let r = CapacityReport {
            function: "size-fleet".into(),
            dry_run: false,
            asg_name: "rebuilders".into(),
            sessions: 450,
            current_desired: 2,
            decision: CapacityDecision {
                desired: 5,
                target: 5,
                history: ScaleInHistory::default(),
                changed: true,
            },
            applied: true,
            error: None,
        };
        let v: serde_json::Value = serde_json::from_str(&r.emf_line(METRICS_NAMESPACE, 1)).unwrap();
        assert_eq!(v["Sessions"], 450);
        assert_eq!(v["DesiredCapacity"], 5);
        assert_eq!(v["CapacityChanged"], 1);
        assert_eq!(v["Function"], "size-fleet");
    }
}
