//! The three Lambda handlers, generic over [`Ec2Api`] / [`FleetApi`] so tests use fakes.
//!
//! Every mirror run is observe → plan (pure, in `mirror`) → apply, whatever the trigger: the
//! event only narrows the scope. One ENI's failure never aborts the run; the handler returns
//! an error (so Lambda retries and the DLQ gets the event) only when observing failed or a
//! retryable failure happened (throttling after the SDK's retries, server errors).

use std::time::{SystemTime, UNIX_EPOCH};

use lambda_runtime::Diagnostic;
use mirror::capacity::{
    CapacityPolicy, Load, SCALE_IN_HISTORY_TAG, ScaleInHistory, desired_capacity,
};
use mirror::filters::Filter;
use mirror::plan::{Change, CreateSession, DeleteSession, ModifySession, Plan, Scope};
use mirror::report::{Action, CapacityReport, Failure, Report};
use mirror::settings::{FleetSettings, MirrorSettings};
use serde_json::Value;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::ec2::{Ec2Api, NewSession, PacketLengthChange, SessionUpdate};
use crate::error::AwsError;
use crate::events::{self, EventError, Home, Trigger};
use crate::fleet::FleetApi;
use crate::observe::observe;
use crate::telemetry;

/// Writes in flight at once during apply (well under EC2's mutating-call rate buckets; the
/// SDK's retry with backoff absorbs the rest).
pub const DEFAULT_APPLY_CONCURRENCY: usize = 8;

/// Why a run failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("bad event: {0}")]
    Event(#[from] EventError),
    #[error("{function} does not handle {trigger} events")]
    WrongTrigger {
        function: &'static str,
        trigger: &'static str,
    },
    #[error("observing failed: {0}")]
    Observe(#[source] AwsError),
    #[error("{count} retryable failure(s), first: {first}")]
    Retryable { count: usize, first: String },
    #[error("auto scaling group {0:?} not found")]
    GroupNotFound(String),
    #[error("fleet: {0}")]
    Fleet(#[source] AwsError),
}

impl HandlerError {
    /// Bounded label (error type in the Lambda response, metric dimension).
    pub fn label(&self) -> &'static str {
        match self {
            HandlerError::Event(e) => e.label(),
            HandlerError::WrongTrigger { .. } => "wrong_trigger",
            HandlerError::Observe(_) => "observe_failed",
            HandlerError::Retryable { .. } => "retryable_failures",
            HandlerError::GroupNotFound(_) => "group_not_found",
            HandlerError::Fleet(_) => "fleet_failed",
        }
    }
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Diagnostic {
        Diagnostic {
            error_type: format!("mirrorfleet.{}", e.label()),
            error_message: e.to_string(),
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a mirror run needs besides the clients.
#[derive(Debug, Clone)]
pub struct MirrorRun {
    /// `onboard-eni` or `reconcile-mirrors` (report and metric dimension).
    pub function: &'static str,
    pub settings: MirrorSettings,
    pub concurrency: usize,
    /// The account and region this function acts in; events from elsewhere are refused
    /// before any API call. Empty (nothing checked) unless the binary sets it.
    pub home: Home,
}

impl MirrorRun {
    pub fn new(function: &'static str, settings: MirrorSettings) -> Self {
        MirrorRun {
            function,
            settings,
            concurrency: DEFAULT_APPLY_CONCURRENCY,
            home: Home::default(),
        }
    }

    /// This run for one invocation of the function `function_arn` in the SDK's `region`.
    pub fn for_function(&self, function_arn: &str, region: Option<&str>) -> MirrorRun {
        MirrorRun {
            home: Home::from_function_arn(function_arn, region),
            ..self.clone()
        }
    }
}

/// `onboard-eni`: an instance/ENI event narrows the scope to the ENIs it names.
pub async fn onboard<E: Ec2Api + Clone>(
    ec2: &E,
    run: &MirrorRun,
    payload: Value,
) -> Result<Report, HandlerError> {
    // A malformed event is named as such first; a well-formed one from elsewhere is refused.
    let admitted = run.home.admits(&payload);
    let triggered = events::parse(payload)?;
    admitted?;
    if triggered.trigger == Trigger::Scheduled {
        return Err(HandlerError::WrongTrigger {
            function: run.function,
            trigger: triggered.trigger.label(),
        });
    }
    info!(
        trigger = triggered.trigger.label(),
        scope = ?triggered.scope,
        home_account = run.home.account.as_deref().unwrap_or("unchecked"),
        home_region = run.home.region.as_deref().unwrap_or("unchecked"),
        "onboard"
    );
    run_mirror(ec2, run, &triggered.scope, now_unix()).await
}

/// `reconcile-mirrors`: a Scheduled Event, full scope. `DRY_RUN=true` reports without acting.
pub async fn reconcile<E: Ec2Api + Clone>(
    ec2: &E,
    run: &MirrorRun,
    payload: Value,
) -> Result<Report, HandlerError> {
    // A malformed event is named as such first; a well-formed one from elsewhere is refused.
    let admitted = run.home.admits(&payload);
    let triggered = events::parse(payload)?;
    admitted?;
    if triggered.trigger != Trigger::Scheduled {
        return Err(HandlerError::WrongTrigger {
            function: run.function,
            trigger: triggered.trigger.label(),
        });
    }
    run_mirror(ec2, run, &Scope::All, now_unix()).await
}

/// Observe → plan → apply for `scope`, then log the report and print its EMF line.
pub async fn run_mirror<E: Ec2Api + Clone>(
    ec2: &E,
    run: &MirrorRun,
    scope: &Scope,
    now_unix: u64,
) -> Result<Report, HandlerError> {
    let s = &run.settings;
    let observed = match observe(ec2, scope, &s.selector, &s.spec, now_unix).await {
        Ok(o) => o,
        Err(e) => {
            let mut report = Report::new(run.function, s.dry_run);
            report.failed("", Action::Observe, e.class(), e.to_string());
            telemetry::emit_report(&report);
            return Err(HandlerError::Observe(e));
        }
    };
    let plan = mirror::plan::reconcile(scope, &s.selector, &observed, &s.spec);
    info!(
        enis = observed.enis.len(),
        instances = observed.instances.len(),
        sessions = observed.sessions.len(),
        create = plan.create.len(),
        delete = plan.delete.len(),
        modify = plan.modify.len(),
        dry_run = s.dry_run,
        "planned"
    );
    let report = if s.dry_run {
        Report::dry_run(run.function, &plan)
    } else {
        let mut report = Report::from_plan(run.function, false, &plan);
        apply(ec2, &plan, &mut report, run.concurrency).await;
        report
    };
    telemetry::emit_report(&report);
    if report.has_retryable_errors() {
        let retryable: Vec<&Failure> = report
            .errors
            .items
            .iter()
            .filter(|f| f.class.is_retryable())
            .collect();
        return Err(HandlerError::Retryable {
            count: report
                .errors_by_class
                .iter()
                .filter(|(c, _)| c.is_retryable())
                .map(|(_, n)| n)
                .sum(),
            first: retryable
                .first()
                .map(|f| format!("{} {}: {}", f.eni_id, f.class.as_str(), f.message))
                .unwrap_or_default(),
        });
    }
    Ok(report)
}

enum Op {
    Delete(DeleteSession),
    Modify(ModifySession),
    Create(CreateSession),
}

enum Outcome {
    Deleted(DeleteSession, Result<(), AwsError>),
    Modified(ModifySession, Result<(), AwsError>),
    Created(CreateSession, Result<String, AwsError>),
}

fn update_for(m: &ModifySession) -> SessionUpdate {
    let mut u = SessionUpdate {
        session_id: m.session_id.clone(),
        target_id: None,
        filter_id: None,
        vni: None,
        packet_length: PacketLengthChange::Keep,
    };
    for change in &m.changes {
        match change {
            Change::Target { to, .. } => u.target_id = Some(to.clone()),
            Change::Filter { to, .. } => u.filter_id = Some(to.clone()),
            Change::Vni { to, .. } => u.vni = Some(*to),
            Change::PacketLength { to: Some(p), .. } => {
                u.packet_length = PacketLengthChange::Set(*p);
            }
            Change::PacketLength { to: None, .. } => u.packet_length = PacketLengthChange::Remove,
        }
    }
    u
}

fn new_session(c: &CreateSession) -> NewSession {
    NewSession {
        eni_id: c.eni_id.clone(),
        target_id: c.target_id.clone(),
        filter_id: c.filter_id.clone(),
        number: c.number,
        vni: c.vni,
        packet_length: c.packet_length,
        client_token: c.client_token.clone(),
        tags: c.tags.clone(),
    }
}

async fn execute<E: Ec2Api + Clone>(ec2: E, op: Op) -> Outcome {
    match op {
        Op::Delete(d) => {
            let r = ec2.delete_session(d.session_id.clone()).await;
            Outcome::Deleted(d, r)
        }
        Op::Modify(m) => {
            let r = ec2.modify_session(update_for(&m)).await;
            Outcome::Modified(m, r)
        }
        Op::Create(c) => {
            let r = ec2.create_session(new_session(&c)).await;
            Outcome::Created(c, r)
        }
    }
}

/// Run `ops` with at most `limit` in flight.
async fn run_bounded<E: Ec2Api + Clone>(ec2: &E, ops: Vec<Op>, limit: usize) -> Vec<Outcome> {
    let mut set = JoinSet::new();
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        if set.len() >= limit.max(1)
            && let Some(done) = set.join_next().await
        {
            out.push(done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())));
        }
        set.spawn(execute(ec2.clone(), op));
    }
    while let Some(done) = set.join_next().await {
        out.push(done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())));
    }
    out
}

/// Apply a plan: deletes first (they free session slots), then modifies, then creates. Each
/// outcome is recorded in the report; a failure concerns its ENI only.
pub async fn apply<E: Ec2Api + Clone>(ec2: &E, plan: &Plan, report: &mut Report, limit: usize) {
    let phases: [Vec<Op>; 3] = [
        plan.delete.iter().cloned().map(Op::Delete).collect(),
        plan.modify.iter().cloned().map(Op::Modify).collect(),
        plan.create.iter().cloned().map(Op::Create).collect(),
    ];
    for ops in phases {
        let mut outcomes = run_bounded(ec2, ops, limit).await;
        // Completion order varies; the report does not.
        outcomes.sort_by(|a, b| key(a).cmp(&key(b)));
        for outcome in outcomes {
            record(report, outcome);
        }
    }
}

fn key(o: &Outcome) -> (&str, u32) {
    match o {
        Outcome::Deleted(d, _) => (&d.eni_id, d.number),
        Outcome::Modified(m, _) => (&m.eni_id, m.number),
        Outcome::Created(c, _) => (&c.eni_id, c.number),
    }
}

fn record(report: &mut Report, outcome: Outcome) {
    match outcome {
        Outcome::Deleted(d, Ok(())) => {
            info!(eni = %d.eni_id, session = %d.session_id, reason = d.reason.as_str(), "deleted");
            report.deleted(&d.eni_id, &d.session_id, d.reason);
        }
        Outcome::Modified(m, Ok(())) => {
            info!(eni = %m.eni_id, session = %m.session_id, "modified");
            report.modified(&m.eni_id, &m.session_id, &m.changes);
        }
        Outcome::Created(c, Ok(id)) => {
            info!(eni = %c.eni_id, session = %id, number = c.number, "created");
            report.created(&c.eni_id, Some(id), c.number);
        }
        Outcome::Deleted(d, Err(e)) => fail(report, &d.eni_id, Action::Delete, &e),
        Outcome::Modified(m, Err(e)) => fail(report, &m.eni_id, Action::Modify, &e),
        Outcome::Created(c, Err(e)) => fail(report, &c.eni_id, Action::Create, &e),
    }
}

fn fail(report: &mut Report, eni_id: &str, action: Action, e: &AwsError) {
    warn!(eni = %eni_id, ?action, class = e.label(), error = %e, "action failed");
    report.failed(eni_id, action, e.class(), e.to_string());
}

/// `size-fleet`: a Scheduled Event; sets the rebuilder group's desired capacity from the
/// number of sessions sending to our target (only when it differs, honouring the cooldown).
pub async fn size_fleet<E: Ec2Api, F: FleetApi>(
    ec2: &E,
    fleet: &F,
    settings: &FleetSettings,
    function: &'static str,
    payload: Value,
) -> Result<CapacityReport, HandlerError> {
    let triggered = events::parse(payload)?;
    if triggered.trigger != Trigger::Scheduled {
        return Err(HandlerError::WrongTrigger {
            function,
            trigger: triggered.trigger.label(),
        });
    }
    let group = fleet
        .describe_group(&settings.asg_name)
        .await
        .map_err(HandlerError::Fleet)?
        .ok_or_else(|| HandlerError::GroupNotFound(settings.asg_name.clone()))?;
    let sessions = ec2
        .describe_sessions(vec![Filter::new(
            "traffic-mirror-target-id",
            [settings.target_id.clone()],
        )])
        .await
        .map_err(HandlerError::Observe)?;
    let sessions = sessions
        .iter()
        .filter(|s| s.target_id == settings.target_id)
        .count();
    let sessions = u32::try_from(sessions).unwrap_or(u32::MAX);
    let policy = effective_policy(&settings.policy, group.min_size, group.max_size);
    let history =
        ScaleInHistory::from_tag(group.tags.get(SCALE_IN_HISTORY_TAG).map(String::as_str));
    let load = Load {
        sessions,
        current_desired: group.desired_capacity,
    };
    let decision = desired_capacity(&load, &policy, &history);
    let mut report = CapacityReport {
        function: function.to_owned(),
        dry_run: settings.dry_run,
        asg_name: settings.asg_name.clone(),
        sessions,
        current_desired: group.desired_capacity,
        decision,
        applied: false,
        error: None,
    };
    let mut retryable = None;
    if !settings.dry_run {
        if decision.changed {
            match fleet
                .set_desired_capacity(&settings.asg_name, decision.desired)
                .await
            {
                Ok(()) => report.applied = true,
                // A scaling activity or the cooldown is in the way: the next run tries again.
                Err(e) if e.code() == "ScalingActivityInProgress" => {
                    info!(error = %e, "scaling activity in progress; not resized this time");
                }
                Err(e) => {
                    if e.class().is_retryable() {
                        retryable = Some(e.to_string());
                    }
                    report.error = Some(Failure {
                        eni_id: String::new(),
                        action: Action::Modify,
                        class: e.class(),
                        message: e.to_string(),
                    });
                }
            }
        }
        let stored = group.tags.get(SCALE_IN_HISTORY_TAG).cloned();
        let next = decision.history.to_string();
        if report.error.is_none()
            && stored.as_deref() != Some(next.as_str())
            && let Err(e) = fleet
                .put_group_tag(&settings.asg_name, SCALE_IN_HISTORY_TAG, &next)
                .await
        {
            warn!(error = %e, "could not store the scale-in history");
            if e.class().is_retryable() {
                retryable = Some(e.to_string());
            }
            report.error = Some(Failure {
                eni_id: String::new(),
                action: Action::Modify,
                class: e.class(),
                message: e.to_string(),
            });
        }
    }
    telemetry::emit_capacity(&report);
    if let Some(first) = retryable {
        return Err(HandlerError::Retryable { count: 1, first });
    }
    Ok(report)
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
