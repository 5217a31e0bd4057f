//! The three Lambda handlers, generic over [`Ec2Api`] / [`FleetApi`] so tests use fakes.
//!
//! Every run is observe ([`crate::observe`]) → decide (pure, in `mirror`) → apply
//! ([`crate::apply`]), whatever the trigger: the event only narrows the scope. One ENI's
//! failure never aborts the run; the handler returns an error (so Lambda retries and the DLQ
//! gets the event) only when observing failed or a retryable failure happened (throttling
//! after the SDK's retries, server errors).

use std::time::{SystemTime, UNIX_EPOCH};

use mirror::plan::Scope;
use mirror::report::{Action, CapacityReport, Report};
use mirror::settings::{FleetSettings, MirrorSettings};
use serde_json::Value;
use tracing::info;

use crate::apply::{DEFAULT_APPLY_CONCURRENCY, apply, apply_fleet};
use crate::ec2::Ec2Api;
pub use crate::error::HandlerError;
use crate::events::{self, Home, Trigger, Triggered};
use crate::fleet::FleetApi;
use crate::observe::{observe, observe_fleet};
use crate::telemetry;

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

    /// The event's trigger and scope, if this function handles it: a malformed event is named
    /// as such first, then a well-formed one from elsewhere is refused, then one for the other
    /// function.
    fn admit(&self, payload: Value, scheduled: bool) -> Result<Triggered, HandlerError> {
        let admitted = self.home.admits(&payload);
        let triggered = events::parse(payload)?;
        admitted?;
        if (triggered.trigger == Trigger::Scheduled) != scheduled {
            return Err(HandlerError::WrongTrigger {
                function: self.function,
                trigger: triggered.trigger.label(),
            });
        }
        Ok(triggered)
    }
}

/// `onboard-eni`: an instance/ENI event narrows the scope to the ENIs it names.
pub async fn onboard<E: Ec2Api + Clone>(
    ec2: &E,
    run: &MirrorRun,
    payload: Value,
) -> Result<Report, HandlerError> {
    let triggered = run.admit(payload, false)?;
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
    run.admit(payload, true)?;
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
            report.failed("", Action::Observe, e.class, e.to_string());
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
        let first = report.errors.items.iter().find(|f| f.class.is_retryable());
        return Err(HandlerError::Retryable {
            count: report
                .errors_by_class
                .iter()
                .filter(|(c, _)| c.is_retryable())
                .map(|(_, n)| n)
                .sum(),
            first: first
                .map(|f| format!("{} {}: {}", f.eni_id, f.class.as_str(), f.message))
                .unwrap_or_default(),
        });
    }
    Ok(report)
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
    let observed = observe_fleet(ec2, fleet, settings).await?;
    let plan = mirror::capacity::decide(&settings.policy, &observed);
    let mut report = CapacityReport {
        function: function.to_owned(),
        dry_run: settings.dry_run,
        asg_name: settings.asg_name.clone(),
        sessions: observed.load.sessions,
        current_desired: observed.load.current_desired,
        decision: plan.decision,
        applied: false,
        error: None,
    };
    let retryable = if settings.dry_run {
        None
    } else {
        apply_fleet(fleet, &settings.asg_name, &plan, &mut report).await
    };
    telemetry::emit_capacity(&report);
    if let Some(first) = retryable {
        return Err(HandlerError::Retryable { count: 1, first });
    }
    Ok(report)
}
