//! The JSON report of a run and its CloudWatch Embedded Metric Format (EMF) line.
//!
//! The handler builds a [`Report`] from the [`Plan`] ([`Report::from_plan`]) and records the
//! outcome of each action as it applies it ([`Report::created`], [`Report::failed`], …). In a
//! dry run, [`Report::dry_run`] lists the planned actions as if done.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::capacity::{CapacityDecision, Traffic};
use crate::plan::{Change, DeleteReason, Plan, RefusedEni, Shadowed, Skipped, Unchanged};
use crate::selection::SkipReason;

/// At most this many entries are listed per list; the rest are only counted (a full
/// reconcile of thousands of ENIs keeps its report small).
pub const REPORT_MAX_LISTED: usize = 200;

/// Default CloudWatch namespace of the EMF metrics.
pub const METRICS_NAMESPACE: &str = "mirrorfleet";

/// The bounded set of failure classes (also metric names, see [`ErrorClass::as_str`]), from
/// the API's error code (docs/control-plane-aws.md has the table of codes).
///
/// Only [`ErrorClass::Throttled`], [`ErrorClass::ServerError`] and [`ErrorClass::Timeout`] are
/// worth retrying soon: the others are answers about this request (this ENI, this account, our
/// permissions) that the same request will get again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The ENI (or its instance, or the session) no longer exists.
    EniGone,
    /// The ENI cannot be a mirror source (its instance type, or it is a mirror target).
    UnsupportedSource,
    /// The ENI already has the maximum number of sessions.
    SessionLimit,
    /// An account or target limit (sessions per account, per target, sources per target).
    AccountLimit,
    /// Missing IAM permission (or a condition of ours: another VPC, another owner).
    PermissionDenied,
    /// The request was refused as invalid (a parameter, a missing target or filter, a reused
    /// ClientToken with other parameters).
    InvalidRequest,
    /// Request rate exceeded (after the SDK's retries).
    Throttled,
    /// A 5xx or an AWS "internal error" / "unavailable" code (after the SDK's retries).
    ServerError,
    /// No answer in time, or no connection (after the SDK's retries).
    Timeout,
    /// Any other code: not understood, so not retried until something changes.
    Other,
}

impl ErrorClass {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::EniGone => "eni_gone",
            ErrorClass::UnsupportedSource => "unsupported_source",
            ErrorClass::SessionLimit => "session_limit",
            ErrorClass::AccountLimit => "account_limit",
            ErrorClass::PermissionDenied => "permission_denied",
            ErrorClass::InvalidRequest => "invalid_request",
            ErrorClass::Throttled => "throttled",
            ErrorClass::ServerError => "server_error",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Other => "other",
        }
    }

    /// Whether retrying the run can help (the function should then return an error so that
    /// Lambda retries / the DLQ receives the event): throttling, server errors, timeouts.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled | ErrorClass::ServerError | ErrorClass::Timeout
        )
    }

    /// Whether a create refused with this class is remembered for its ENI and not tried again
    /// until the ENI changes ([`crate::refusals`]): every permanent class but a vanished ENI
    /// (which the next observation no longer returns anyway).
    pub fn is_remembered(self) -> bool {
        !self.is_retryable() && self != ErrorClass::EniGone
    }

    /// Every class.
    pub const ALL: [ErrorClass; 10] = [
        ErrorClass::EniGone,
        ErrorClass::UnsupportedSource,
        ErrorClass::SessionLimit,
        ErrorClass::AccountLimit,
        ErrorClass::PermissionDenied,
        ErrorClass::InvalidRequest,
        ErrorClass::Throttled,
        ErrorClass::ServerError,
        ErrorClass::Timeout,
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
    /// Reading or writing the source map or the remembered refusals (S3).
    Publish,
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

/// An event that was understood but names nothing to onboard (a failed API call, a dry run):
/// the run does nothing and succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredEvent {
    /// A bounded label: `failed_call`, `no_network_interface`.
    pub reason: String,
    /// What the event said (e.g. the CloudTrail `errorCode`).
    pub detail: String,
}

/// What happened to the source map in this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMapOutcome {
    /// `s3://bucket/key`.
    pub uri: String,
    /// Sources listed.
    pub sources: usize,
    /// True when the document was written (its content changed).
    pub written: bool,
    /// Why it could not be read or written, if so.
    pub error: Option<String>,
}

/// The report of one onboard/reconcile run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Report {
    /// Function name (`onboard-eni`, `reconcile-mirrors`).
    pub function: String,
    pub dry_run: bool,
    /// Set when the event was understood and deliberately not acted on.
    pub ignored_event: Option<IgnoredEvent>,
    pub created: Capped<Created>,
    pub deleted: Capped<Deleted>,
    pub modified: Capped<Modified>,
    pub unchanged: Capped<Unchanged>,
    pub skipped: Capped<Skipped>,
    /// Skipped ENIs per reason (all of them, not capped).
    pub skipped_by_reason: BTreeMap<SkipReason, usize>,
    /// Our sessions with a foreign session of a lower number on the same ENI, which is
    /// evaluated first and may take their traffic.
    pub shadowed: Capped<Shadowed>,
    /// Wanted ENIs not tried because AWS refused them before and they have not changed.
    pub refused: Capped<RefusedEni>,
    pub errors: Capped<Failure>,
    /// Errors per class (all of them).
    pub errors_by_class: BTreeMap<ErrorClass, usize>,
    /// Warnings about the selection (e.g. a load balancer mirrored with its targets).
    pub warnings: Capped<String>,
    /// The source map, when this run publishes one.
    pub source_map: Option<SourceMapOutcome>,
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

    /// The report of a run that ignored its event.
    pub fn ignored(function: impl Into<String>, event: IgnoredEvent) -> Self {
        Self {
            ignored_event: Some(event),
            ..Self::new(function, false)
        }
    }

    /// A report holding the plan's unchanged, skipped, refused and shadowed entries (those of
    /// sessions that exist already); the handler then records each applied action.
    pub fn from_plan(function: impl Into<String>, dry_run: bool, plan: &Plan) -> Self {
        let mut report = Self::new(function, dry_run);
        for u in &plan.unchanged {
            report.unchanged.push(u.clone());
        }
        for s in &plan.skipped {
            report.skip(s.clone());
        }
        for r in &plan.refused {
            report.refused.push(r.clone());
        }
        for s in plan.shadowed.iter().filter(|s| s.session_id.is_some()) {
            report.shadowed.push(s.clone());
        }
        report
    }

    /// The report of a dry run: every planned action listed as if done.
    pub fn dry_run(function: impl Into<String>, plan: &Plan) -> Self {
        let mut report = Self::from_plan(function, true, plan);
        for c in &plan.create {
            report.created(&c.eni_id, None, c.number);
        }
        for s in plan.shadowed.iter().filter(|s| s.session_id.is_none()) {
            report.shadowed.push(s.clone());
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
    /// `Unchanged`, `Skipped`, `Shadowed`, `Refused`, `IgnoredEvents`, `Warnings`,
    /// `SourceMapWritten`, `Errors`, then one `Errors_<class>` per error class.
    pub fn metrics(&self) -> Vec<(String, usize)> {
        let written = self.source_map.as_ref().is_some_and(|m| m.written);
        let mut m = vec![
            ("Created".to_owned(), self.created.count),
            ("Deleted".to_owned(), self.deleted.count),
            ("Modified".to_owned(), self.modified.count),
            ("Unchanged".to_owned(), self.unchanged.count),
            ("Skipped".to_owned(), self.skipped.count),
            ("Shadowed".to_owned(), self.shadowed.count),
            ("Refused".to_owned(), self.refused.count),
            (
                "IgnoredEvents".to_owned(),
                usize::from(self.ignored_event.is_some()),
            ),
            ("Warnings".to_owned(), self.warnings.count),
            ("SourceMapWritten".to_owned(), usize::from(written)),
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

/// Where size-fleet's traffic figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficSource {
    /// `GetMetricData` answered with data.
    Cloudwatch,
    /// `GetMetricData` answered, but with no datapoint in the window (a new fleet, the agent
    /// down): sized by the sessions alone.
    NoData,
    /// `GetMetricData` failed: sized by the sessions alone (see `error`).
    Failed,
    /// No namespace configured: sized by the sessions alone.
    NotConfigured,
}

/// The report of one size-fleet run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityReport {
    pub function: String,
    pub dry_run: bool,
    pub asg_name: String,
    pub sessions: u32,
    pub current_desired: u32,
    /// Where the traffic below came from.
    pub traffic_source: TrafficSource,
    pub traffic: Traffic,
    /// Why `GetMetricData` failed, when it did.
    pub traffic_error: Option<String>,
    pub decision: CapacityDecision,
    /// Whether SetDesiredCapacity was called (and succeeded).
    pub applied: bool,
    pub error: Option<Failure>,
}

impl CapacityReport {
    /// One EMF line with `Sessions`, `DatagramsPerSecond`, `KernelDrops`, `TrafficData`
    /// (1 when CloudWatch had data), `CurrentCapacity`, `TargetCapacity`, `DesiredCapacity`,
    /// `CapacityChanged`, `Errors`.
    pub fn emf_line(&self, namespace: &str, timestamp_ms: u64) -> String {
        let metrics = [
            ("Sessions".to_owned(), u64::from(self.sessions)),
            (
                "DatagramsPerSecond".to_owned(),
                self.traffic.datagrams_per_second().unwrap_or(0),
            ),
            (
                "KernelDrops".to_owned(),
                self.traffic.kernel_drops.unwrap_or(0),
            ),
            (
                "TrafficData".to_owned(),
                u64::from(self.traffic_source == TrafficSource::Cloudwatch),
            ),
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
    use crate::capacity::{ScaleInHistory, Sizing};
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
            shadowed: vec![
                Shadowed {
                    eni_id: "eni-1".into(),
                    session_id: None,
                    number: 32766,
                    by_session_id: "tms-ids".into(),
                    by_number: 1,
                },
                Shadowed {
                    eni_id: "eni-4".into(),
                    session_id: Some("tms-4".into()),
                    number: 32766,
                    by_session_id: "tms-ids-4".into(),
                    by_number: 10,
                },
            ],
            refused: Vec::new(),
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
    fn only_throttling_server_errors_and_timeouts_are_retryable() {
        let retryable: Vec<ErrorClass> = ErrorClass::ALL
            .into_iter()
            .filter(|c| c.is_retryable())
            .collect();
        assert_eq!(
            retryable,
            vec![
                ErrorClass::Throttled,
                ErrorClass::ServerError,
                ErrorClass::Timeout
            ]
        );
        let mut r = Report::new("reconcile-mirrors", false);
        for class in ErrorClass::ALL.into_iter().filter(|c| !c.is_retryable()) {
            r.failed("eni-1", Action::Create, class, "x");
        }
        assert!(!r.has_retryable_errors(), "an unknown code is not retried");
        r.failed("eni-2", Action::Delete, ErrorClass::ServerError, "500");
        assert!(r.has_retryable_errors());
    }

    #[test]
    fn shadowed_sessions_are_reported_once_they_exist() {
        let r = Report::from_plan("reconcile-mirrors", false, &plan());
        let ids: Vec<&str> = r.shadowed.items.iter().map(|s| s.eni_id.as_str()).collect();
        assert_eq!(ids, vec!["eni-4"], "the planned create is not there yet");
        let r = Report::dry_run("reconcile-mirrors", &plan());
        assert_eq!(r.shadowed.count, 2);
        let line: serde_json::Value =
            serde_json::from_str(&r.emf_line(METRICS_NAMESPACE, 1)).unwrap();
        assert_eq!(line["Shadowed"], 2);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["shadowed"]["items"][0]["by_session_id"], "tms-ids-4");
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
        assert_eq!(names.len(), 11 + ErrorClass::ALL.len());
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
            traffic_source: TrafficSource::Cloudwatch,
            traffic: Traffic {
                datagrams_per_minute: Some(600_000),
                kernel_drops: Some(3),
            },
            traffic_error: None,
            decision: CapacityDecision {
                desired: 5,
                target: 5,
                sizing: Sizing::default(),
                history: ScaleInHistory::default(),
                changed: true,
            },
            applied: true,
            error: None,
        };
        let v: serde_json::Value = serde_json::from_str(&r.emf_line(METRICS_NAMESPACE, 1)).unwrap();
        assert_eq!(v["Sessions"], 450);
        assert_eq!(v["DatagramsPerSecond"], 10_000);
        assert_eq!(v["KernelDrops"], 3);
        assert_eq!(v["TrafficData"], 1);
        assert_eq!(v["DesiredCapacity"], 5);
        assert_eq!(v["CapacityChanged"], 1);
        assert_eq!(v["Function"], "size-fleet");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["traffic_source"], "cloudwatch");
    }
}
