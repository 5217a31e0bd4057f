//! The Lambda handlers, generic over [`Ec2Api`] / [`FleetApi`] / [`ObjectStore`] /
//! [`MetricsApi`] so tests use fakes.
//!
//! Every run is observe ([`crate::observe`]) → decide (pure, in `mirror`) → apply
//! ([`crate::apply`]), whatever the trigger: the event only narrows the scope. One ENI's
//! failure never aborts the run; the handler returns an error (so Lambda retries and the DLQ
//! gets the event) only when observing failed or a retryable failure happened (throttling,
//! server errors, timeouts, after the SDK's retries). An event understood but naming nothing
//! to do (a failed CloudTrail call) succeeds with the reason in the report.
//!
//! reconcile-mirrors also keeps what AWS refused ([`mirror::refusals`]) and publishes the source
//! map ([`mirror::sources`]), both in S3 ([`Publish`]).

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use mirror::model::Observed;
use mirror::plan::{Plan, Scope};
use mirror::refusals::{Fingerprints, Refusals};
use mirror::report::{Action, CapacityReport, Report, SourceMapOutcome};
use mirror::settings::{FleetSettings, MirrorSettings, ReconcileSettings, S3Uri};
use mirror::sources::SourceMap;
use serde_json::Value;
use tracing::{info, warn};

use crate::apply::{Applied, DEFAULT_APPLY_CONCURRENCY, apply, apply_fleet};
use crate::ec2::Ec2Api;
use crate::error::AwsError;
pub use crate::error::HandlerError;
use crate::events::{self, Home, Trigger, Triggered};
use crate::fleet::FleetApi;
use crate::metrics::MetricsApi;
use crate::observe::{observe, observe_fleet};
use crate::store::ObjectStore;
use crate::telemetry;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What reconcile-mirrors keeps in S3 (both optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publish {
    /// The source map (docs/sources.md).
    pub sources: Option<S3Uri>,
    /// The tag keys copied into it.
    pub source_tags: Vec<String>,
    /// The remembered refusals.
    pub refusals: Option<S3Uri>,
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
    /// What a full run reads and writes in S3 (reconcile-mirrors); nothing by default.
    pub publish: Publish,
}

impl MirrorRun {
    pub fn new(function: &'static str, settings: MirrorSettings) -> Self {
        MirrorRun {
            function,
            settings,
            concurrency: DEFAULT_APPLY_CONCURRENCY,
            home: Home::default(),
            publish: Publish::default(),
        }
    }

    /// reconcile-mirrors with its S3 objects.
    pub fn reconcile(settings: ReconcileSettings) -> Self {
        MirrorRun {
            publish: Publish {
                sources: settings.sources,
                source_tags: settings.source_tags,
                refusals: settings.refusals,
            },
            ..MirrorRun::new("reconcile-mirrors", settings.mirror)
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

/// An [`ObjectStore`] for runs that publish nothing: every call fails (never reached when
/// [`MirrorRun::publish`] is empty).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStore;

fn no_store(op: &'static str) -> AwsError {
    AwsError::new(
        mirror::report::ErrorClass::InvalidRequest,
        op,
        "NoObjectStore",
        "this run has no object store",
    )
}

impl ObjectStore for NoStore {
    async fn get(&self, _: &S3Uri) -> Result<Option<Vec<u8>>, AwsError> {
        Err(no_store("GetObject"))
    }
    async fn content_hash(&self, _: &S3Uri) -> Result<Option<String>, AwsError> {
        Err(no_store("HeadObject"))
    }
    async fn put_json(&self, _: &S3Uri, _: Vec<u8>, _: &str) -> Result<(), AwsError> {
        Err(no_store("PutObject"))
    }
    async fn delete_all_versions(&self, _: &S3Uri) -> Result<usize, AwsError> {
        Err(no_store("DeleteObject"))
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
        actor = triggered.actor.as_deref().unwrap_or("-"),
        home_account = run.home.account.as_deref().unwrap_or("unchecked"),
        home_region = run.home.region.as_deref().unwrap_or("unchecked"),
        "onboard"
    );
    if let Some(ignored) = triggered.ignored {
        info!(reason = ignored.reason, detail = %ignored.detail, "event ignored");
        let report = Report::ignored(run.function, ignored.into());
        telemetry::emit_report(&report);
        return Ok(report);
    }
    run_mirror(ec2, &NoStore, run, &triggered.scope, now_unix()).await
}

/// `reconcile-mirrors` without S3 (tests): a Scheduled Event, full scope.
pub async fn reconcile<E: Ec2Api + Clone>(
    ec2: &E,
    run: &MirrorRun,
    payload: Value,
) -> Result<Report, HandlerError> {
    reconcile_with(ec2, &NoStore, run, payload).await
}

/// `reconcile-mirrors`: a Scheduled Event, full scope; the refusals and the source map in
/// `store`. `DRY_RUN=true` reports without acting.
pub async fn reconcile_with<E: Ec2Api + Clone, S: ObjectStore>(
    ec2: &E,
    store: &S,
    run: &MirrorRun,
    payload: Value,
) -> Result<Report, HandlerError> {
    run.admit(payload, true)?;
    run_mirror(ec2, store, run, &Scope::All, now_unix()).await
}

/// Reads the remembered refusals; a missing or unreadable document is an empty memory (the
/// run then tries everything once more), recorded in the report.
async fn read_refusals<S: ObjectStore>(store: &S, uri: &S3Uri, report: &mut Report) -> Refusals {
    match store.get(uri).await {
        Ok(None) => Refusals::default(),
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn!(%uri, error = %e, "unreadable refusals document; starting empty");
            Refusals::default()
        }),
        Err(e) => {
            warn!(%uri, error = %e, "could not read the refusals");
            report.failed("", Action::Publish, e.class, e.to_string());
            Refusals::default()
        }
    }
}

/// Observe → plan → apply for `scope`, then (full runs with S3 configured) remember the
/// refusals and publish the source map; log the report and print its EMF line.
pub async fn run_mirror<E: Ec2Api + Clone, S: ObjectStore>(
    ec2: &E,
    store: &S,
    run: &MirrorRun,
    scope: &Scope,
    now_unix: u64,
) -> Result<Report, HandlerError> {
    let s = &run.settings;
    let full = scope.is_all();
    let mut early = Report::new(run.function, s.dry_run);
    let remembered = match (&run.publish.refusals, full) {
        (Some(uri), true) => read_refusals(store, uri, &mut early).await,
        _ => Refusals::default(),
    };
    let mut observed = match observe(ec2, scope, &s.selector, &s.spec, now_unix).await {
        Ok(o) => o,
        Err(e) => {
            early.failed("", Action::Observe, e.class, e.to_string());
            telemetry::emit_report(&early);
            return Err(HandlerError::Observe(e));
        }
    };
    observed.refused = remembered;
    let selection = s.selector.select(&observed);
    let plan = mirror::plan::plan_scoped(scope, &selection, &observed, &s.spec);
    info!(
        enis = observed.enis.len(),
        instances = observed.instances.len(),
        sessions = observed.sessions.len(),
        create = plan.create.len(),
        delete = plan.delete.len(),
        modify = plan.modify.len(),
        refused = plan.refused.len(),
        shadowed = plan.shadowed.len(),
        dry_run = s.dry_run,
        "planned"
    );
    let mut report = if s.dry_run {
        Report::dry_run(run.function, &plan)
    } else {
        Report::from_plan(run.function, false, &plan)
    };
    for e in early.errors.items {
        report.failed(&e.eni_id, e.action, e.class, e.message);
    }
    if full {
        for w in mirror::selection::selection_warnings(&selection, &observed) {
            warn!(warning = %w, "selection");
            report.warnings.push(w);
        }
    }
    if !s.dry_run {
        let applied = apply(ec2, &plan, &mut report, run.concurrency).await;
        if full {
            remember(store, run, &observed, &plan, &applied, &mut report).await;
            publish_sources(ec2, store, run, &observed, applied.wrote, &mut report).await;
        }
    }
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

/// Writes the refusals after a full run, when they changed.
async fn remember<S: ObjectStore>(
    store: &S,
    run: &MirrorRun,
    observed: &Observed,
    plan: &Plan,
    applied: &Applied,
    report: &mut Report,
) {
    let Some(uri) = &run.publish.refusals else {
        return;
    };
    let fingerprints = Fingerprints::new(observed, &run.settings.spec);
    let held: BTreeSet<String> = plan.refused.iter().map(|r| r.eni_id.clone()).collect();
    let next = observed
        .refused
        .next(&Scope::All, &fingerprints, &held, &applied.failed_creates);
    if next == observed.refused {
        return;
    }
    let body = serde_json::to_vec_pretty(&next).unwrap_or_default();
    if let Err(e) = store.put_json(uri, body, "").await {
        warn!(%uri, error = %e, "could not store the refusals");
        report.failed("", Action::Publish, e.class, e.to_string());
    }
}

/// Publishes the source map after a full run, when its content changed: built from the
/// sessions as they are now (described again when this run wrote any).
async fn publish_sources<E: Ec2Api, S: ObjectStore>(
    ec2: &E,
    store: &S,
    run: &MirrorRun,
    observed: &Observed,
    wrote: bool,
    report: &mut Report,
) {
    let Some(uri) = &run.publish.sources else {
        return;
    };
    let mut outcome = SourceMapOutcome {
        uri: uri.to_string(),
        sources: 0,
        written: false,
        error: None,
    };
    let result: Result<(), AwsError> = async {
        let described;
        let sessions = if wrote {
            described = ec2.describe_sessions(Vec::new()).await?;
            &described
        } else {
            &observed.sessions
        };
        let spec = &run.settings.spec;
        let map = SourceMap::build(
            spec,
            observed.target(&spec.target_id),
            &observed.enis,
            &observed.instances,
            sessions,
            &run.publish.source_tags,
            observed.observed_at_unix,
        );
        outcome.sources = map.sources.len();
        let hash = map.content_hash();
        if store.content_hash(uri).await?.as_deref() == Some(hash.as_str()) {
            return Ok(());
        }
        store
            .put_json(uri, map.to_json().into_bytes(), &hash)
            .await?;
        outcome.written = true;
        info!(%uri, sources = outcome.sources, "source map written");
        Ok(())
    }
    .await;
    if let Err(e) = result {
        warn!(%uri, error = %e, "could not publish the source map");
        outcome.error = Some(e.to_string());
        report.failed("", Action::Publish, e.class, e.to_string());
    }
    report.source_map = Some(outcome);
}

/// `size-fleet`: a Scheduled Event; sets the rebuilder group's desired capacity from the
/// fleet's traffic (CloudWatch) and the number of sessions sending to our target (only when it
/// differs; scaling out without the cooldown).
pub async fn size_fleet<E: Ec2Api, F: FleetApi, M: MetricsApi>(
    ec2: &E,
    fleet: &F,
    metrics: &M,
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
    let observed = observe_fleet(ec2, fleet, metrics, settings, now_unix()).await?;
    if let Some(e) = &observed.traffic_error {
        warn!(error = %e, "no traffic figures; sizing by sessions only");
    }
    let load = observed.observation.load;
    let plan = mirror::capacity::decide(&settings.policy, &observed.observation);
    let mut report = CapacityReport {
        function: function.to_owned(),
        dry_run: settings.dry_run,
        asg_name: settings.asg_name.clone(),
        sessions: load.sessions,
        current_desired: load.current_desired,
        traffic_source: observed.traffic_source,
        traffic: load.traffic,
        traffic_error: observed.traffic_error.as_ref().map(ToString::to_string),
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
