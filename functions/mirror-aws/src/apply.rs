//! Apply: carry out what the pure core decided, recording each outcome in the run's report.
//!
//! - [`apply`]: a mirror [`Plan`] — deletes first (they free session slots), then modifies,
//!   then creates, a bounded number in flight; a failure concerns its ENI only.
//! - [`apply_fleet`]: a [`FleetPlan`] — `SetDesiredCapacity`, then the scale-in history tag
//!   (only once the capacity is set, when the plan changes both).

use mirror::capacity::{FleetPlan, SCALE_IN_HISTORY_TAG};
use mirror::plan::{CreateSession, DeleteSession, ModifySession, Plan};
use mirror::refusals::FailedCreate;
use mirror::report::{Action, CapacityReport, Failure, Report};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::ec2::Ec2Api;
use crate::error::AwsError;
use crate::fleet::FleetApi;

/// Writes in flight at once during apply (well under EC2's mutating-call rate buckets; the
/// SDK's retry with backoff absorbs the rest).
pub const DEFAULT_APPLY_CONCURRENCY: usize = 8;

/// One planned write.
enum Op {
    Delete(DeleteSession),
    Modify(ModifySession),
    Create(CreateSession),
}

/// A write and how it went.
enum Outcome {
    Deleted(DeleteSession, Result<(), AwsError>),
    Modified(ModifySession, Result<(), AwsError>),
    Created(CreateSession, Result<String, AwsError>),
}

impl Outcome {
    /// Report order: by ENI, then session number.
    fn key(&self) -> (&str, u32) {
        match self {
            Outcome::Deleted(d, _) => (&d.eni_id, d.number),
            Outcome::Modified(m, _) => (&m.eni_id, m.number),
            Outcome::Created(c, _) => (&c.eni_id, c.number),
        }
    }
}

async fn execute<E: Ec2Api + Clone>(ec2: E, op: Op) -> Outcome {
    match op {
        Op::Delete(d) => {
            let r = ec2.delete_session(&d).await;
            Outcome::Deleted(d, r)
        }
        Op::Modify(m) => {
            let r = ec2.modify_session(&m).await;
            Outcome::Modified(m, r)
        }
        Op::Create(c) => {
            let r = ec2.create_session(&c).await;
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

/// What applying a plan left to remember: the creates AWS refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub failed_creates: Vec<FailedCreate>,
    /// True when at least one write succeeded (the sessions changed).
    pub wrote: bool,
}

/// Apply a plan: deletes first (they free session slots), then modifies, then creates. Each
/// outcome is recorded in the report; a failure concerns its ENI only.
pub async fn apply<E: Ec2Api + Clone>(
    ec2: &E,
    plan: &Plan,
    report: &mut Report,
    limit: usize,
) -> Applied {
    let phases: [Vec<Op>; 3] = [
        plan.delete.iter().cloned().map(Op::Delete).collect(),
        plan.modify.iter().cloned().map(Op::Modify).collect(),
        plan.create.iter().cloned().map(Op::Create).collect(),
    ];
    let mut applied = Applied::default();
    for ops in phases {
        let mut outcomes = run_bounded(ec2, ops, limit).await;
        // Completion order varies; the report does not.
        outcomes.sort_by(|a, b| a.key().cmp(&b.key()));
        for outcome in outcomes {
            record(report, plan, &mut applied, outcome);
        }
    }
    applied
}

fn record(report: &mut Report, plan: &Plan, applied: &mut Applied, outcome: Outcome) {
    match outcome {
        Outcome::Deleted(d, Ok(())) => {
            info!(eni = %d.eni_id, session = %d.session_id, reason = d.reason.as_str(), "deleted");
            report.deleted(&d.eni_id, &d.session_id, d.reason);
            applied.wrote = true;
        }
        Outcome::Modified(m, Ok(())) => {
            info!(eni = %m.eni_id, session = %m.session_id, "modified");
            report.modified(&m.eni_id, &m.session_id, &m.changes);
            applied.wrote = true;
        }
        Outcome::Created(c, Ok(id)) => {
            info!(eni = %c.eni_id, session = %id, number = c.number, "created");
            // Now that it exists, a foreign session below it shadows it.
            if let Some(s) = plan
                .shadowed
                .iter()
                .find(|s| s.eni_id == c.eni_id && s.session_id.is_none())
            {
                warn!(eni = %c.eni_id, by = %s.by_session_id, by_number = s.by_number, "shadowed");
                report.shadowed.push(mirror::plan::Shadowed {
                    session_id: Some(id.clone()),
                    ..s.clone()
                });
            }
            report.created(&c.eni_id, Some(id), c.number);
            applied.wrote = true;
        }
        Outcome::Deleted(d, Err(e)) => fail(report, &d.eni_id, Action::Delete, &e),
        Outcome::Modified(m, Err(e)) => fail(report, &m.eni_id, Action::Modify, &e),
        Outcome::Created(c, Err(e)) => {
            fail(report, &c.eni_id, Action::Create, &e);
            applied.failed_creates.push(FailedCreate {
                eni_id: c.eni_id,
                class: e.class,
                code: e.code,
                message: e.message,
            });
        }
    }
}

fn fail(report: &mut Report, eni_id: &str, action: Action, e: &AwsError) {
    warn!(eni = %eni_id, ?action, class = e.class.as_str(), error = %e, "action failed");
    report.failed(eni_id, action, e.class, e.to_string());
}

/// Apply a fleet plan to the group `asg_name`: set its desired capacity (`HonorCooldown` as
/// planned), then store the scale-in history — but a history that goes with a new capacity
/// only once that capacity is set: when `SetDesiredCapacity` is refused (a scaling activity in
/// progress, the cooldown of a scale-in, any error) the stored streak stays as it was, so the
/// next run decides the same scale-in again instead of starting the streak over. Records the
/// outcome in `report`; returns the message of a retryable failure, if one happened.
pub async fn apply_fleet<F: FleetApi>(
    fleet: &F,
    asg_name: &str,
    plan: &FleetPlan,
    report: &mut CapacityReport,
) -> Option<String> {
    let mut retryable = None;
    let mut failed = |report: &mut CapacityReport, e: AwsError| {
        if e.retryable() {
            retryable = Some(e.to_string());
        }
        report.error = Some(Failure {
            eni_id: String::new(),
            action: Action::Modify,
            class: e.class,
            message: e.to_string(),
        });
    };
    let mut capacity_set = true;
    if let Some(set) = plan.set_desired {
        match fleet
            .set_desired_capacity(asg_name, set.capacity, set.honor_cooldown)
            .await
        {
            Ok(()) => report.applied = true,
            // A scaling activity (or a scale-in's cooldown) is in the way: the next run tries
            // again, with the history as it was.
            Err(e) if e.code == "ScalingActivityInProgress" => {
                info!(error = %e, "scaling activity in progress; not resized this time");
                capacity_set = false;
            }
            Err(e) => {
                capacity_set = false;
                failed(report, e);
            }
        }
    }
    if capacity_set
        && let Some(history) = &plan.store_history
        && let Err(e) = fleet
            .put_group_tag(asg_name, SCALE_IN_HISTORY_TAG, history)
            .await
    {
        warn!(error = %e, "could not store the scale-in history");
        failed(report, e);
    }
    retryable
}
