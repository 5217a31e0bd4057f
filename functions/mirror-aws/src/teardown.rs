//! The teardown custom resource: on stack Delete, remove every session carrying our owner tag
//! that uses our target or our filter (AWS refuses to delete a target or filter "in use by a
//! Traffic Mirror session": `TrafficMirrorTargetInUseException` / `TrafficMirrorFilterInUse`,
//! EC2 error codes) and every version of the objects the stack wrote (a versioned bucket that
//! holds any cannot be deleted), then report SUCCESS to CloudFormation. Create and Update do
//! nothing and succeed.
//!
//! Ordering (template.yaml): the custom resource references the target, the filter and the
//! bucket, so CloudFormation deletes it before them; the functions that create sessions depend
//! on it, so they (and their rules and schedules) are deleted before it runs.
//!
//! It never hangs the stack: the work is bounded by the invocation's deadline (minus the time
//! the response needs), a failure is reported as FAILED with its reason, and the resource's
//! `ServiceTimeout` bounds CloudFormation's wait should the function die without answering.
//! DRY_RUN does not apply: the stack is going away, and sessions left on its target would stop
//! the delete.

use std::time::{Duration, Instant};

use mirror::plan::{DeleteReason, DeleteSession};
use mirror::report::ErrorClass;
use mirror::settings::TeardownSettings;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::custom_resource::{Request, RequestType, Response, Status};
use crate::ec2::Ec2Api;
use crate::error::AwsError;
use crate::store::ObjectStore;

/// Deletes in flight at once.
pub const DELETE_CONCURRENCY: usize = 8;
/// Sweeps (describe, delete what is left) at most; each finds what the previous left or what
/// an invocation still running created meanwhile.
pub const MAX_SWEEPS: usize = 10;

/// How one teardown runs.
#[derive(Debug, Clone)]
pub struct Teardown {
    pub settings: TeardownSettings,
    /// After a sweep that deleted something, wait this long and sweep again: an onboard or
    /// reconcile invocation that started before its function was deleted may still create a
    /// session.
    pub settle: Duration,
}

/// What a Delete did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    pub sessions_deleted: usize,
    pub object_versions_deleted: usize,
}

/// Our sessions that keep our target or filter in use.
async fn blocking_sessions<E: Ec2Api>(
    ec2: &E,
    s: &TeardownSettings,
) -> Result<Vec<DeleteSession>, AwsError> {
    // Unfiltered: a session of ours may point at our filter with another target (or the
    // reverse); tag filters are not relied on (moto ignores them), ownership is checked here.
    let sessions = ec2.describe_sessions(Vec::new()).await?;
    Ok(sessions
        .into_iter()
        .filter(|x| x.is_owned_by(&s.owner))
        .filter(|x| x.target_id == s.target_id || x.filter_id == s.filter_id)
        .map(|x| DeleteSession {
            session_id: x.id,
            eni_id: x.eni_id,
            number: x.number,
            reason: DeleteReason::EniGone,
        })
        .collect())
}

impl Teardown {
    /// The Delete: sweep the sessions until none is left (or the deadline), then remove the
    /// objects.
    pub async fn sweep<E: Ec2Api + Clone, S: ObjectStore>(
        &self,
        ec2: &E,
        store: &S,
        deadline: Instant,
    ) -> Result<Swept, String> {
        let s = &self.settings;
        let mut swept = Swept::default();
        let mut confirmed = false;
        for _ in 0..MAX_SWEEPS {
            if Instant::now() >= deadline {
                break;
            }
            let left = blocking_sessions(ec2, s)
                .await
                .map_err(|e| format!("describing the sessions: {e}"))?;
            if left.is_empty() {
                if swept.sessions_deleted == 0 || confirmed {
                    confirmed = true;
                    break;
                }
                // Deleted some: look once more after a pause, for sessions an invocation still
                // running may have created.
                confirmed = true;
                tokio::time::sleep(
                    self.settle
                        .min(deadline.saturating_duration_since(Instant::now())),
                )
                .await;
                continue;
            }
            confirmed = false;
            let mut set = tokio::task::JoinSet::new();
            let mut failures: Vec<AwsError> = Vec::new();
            for d in left {
                if set.len() >= DELETE_CONCURRENCY
                    && let Some(done) = set.join_next().await
                {
                    collect(done, &mut swept, &mut failures);
                }
                let ec2 = ec2.clone();
                set.spawn(async move { (d.session_id.clone(), ec2.delete_session(&d).await) });
            }
            while let Some(done) = set.join_next().await {
                collect(done, &mut swept, &mut failures);
            }
            if let Some(first) = failures.first() {
                let retried = failures.iter().all(AwsError::retryable);
                if !retried {
                    return Err(format!(
                        "{} session(s) could not be deleted, first: {first}",
                        failures.len()
                    ));
                }
                warn!(failures = failures.len(), first = %first, "retrying session deletes");
            }
        }
        if !confirmed {
            let left = blocking_sessions(ec2, s)
                .await
                .map(|l| l.len())
                .unwrap_or(0);
            return Err(format!(
                "{left} session(s) with mirrorfleet:owner={} still use target {} or filter {} \
                 after {} deleted (deadline or {MAX_SWEEPS} sweeps reached)",
                s.owner, s.target_id, s.filter_id, swept.sessions_deleted
            ));
        }
        for uri in &s.objects {
            swept.object_versions_deleted += store
                .delete_all_versions(uri)
                .await
                .map_err(|e| format!("removing {uri}: {e}"))?;
        }
        Ok(swept)
    }

    /// The response to one custom resource request (the work of a Delete included).
    pub async fn respond<E: Ec2Api + Clone, S: ObjectStore>(
        &self,
        ec2: &E,
        store: &S,
        request: &Request,
        deadline: Instant,
    ) -> Response {
        match request.request_type {
            RequestType::Create | RequestType::Update => {
                info!(request = ?request.request_type, "nothing to do");
                request.respond(Status::Success, None, serde_json::Map::new())
            }
            RequestType::Delete => match self.sweep(ec2, store, deadline).await {
                Ok(swept) => {
                    info!(
                        sessions = swept.sessions_deleted,
                        object_versions = swept.object_versions_deleted,
                        "teardown done"
                    );
                    let data = json!({
                        "SessionsDeleted": swept.sessions_deleted.to_string(),
                        "ObjectVersionsDeleted": swept.object_versions_deleted.to_string(),
                    });
                    request.respond(Status::Success, None, as_map(data))
                }
                Err(reason) => {
                    warn!(%reason, "teardown failed");
                    request.respond(Status::Failed, Some(reason), serde_json::Map::new())
                }
            },
        }
    }
}

fn as_map(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

fn collect(
    done: Result<(String, Result<(), AwsError>), tokio::task::JoinError>,
    swept: &mut Swept,
    failures: &mut Vec<AwsError>,
) {
    match done {
        Ok((id, Ok(()))) => {
            info!(session = %id, "deleted");
            swept.sessions_deleted += 1;
        }
        // Already gone (the trait's delete treats a missing session as done).
        Ok((_, Err(e))) if e.class == ErrorClass::EniGone => swept.sessions_deleted += 1,
        Ok((_, Err(e))) => failures.push(e),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Why a payload is not a custom resource request.
pub fn parse_request(payload: Value) -> Result<Request, String> {
    serde_json::from_value(payload)
        .map_err(|e| format!("not a CloudFormation custom resource request: {e}"))
}

/// The time left for the work: the invocation's deadline minus what the response needs
/// (`reserve`, or a quarter of the time left when that is less: a short timeout still leaves
/// most of it to the work). A deadline that is not in the future is not a deadline (a local
/// Runtime API may send a relative or no value): then `fallback` from now.
pub fn work_deadline(
    lambda_deadline_ms: u64,
    now_ms: u64,
    reserve: Duration,
    fallback: Duration,
) -> Instant {
    if lambda_deadline_ms <= now_ms {
        return Instant::now() + fallback;
    }
    let left = Duration::from_millis(lambda_deadline_ms - now_ms);
    Instant::now() + left.saturating_sub(reserve.min(left / 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_ends_before_the_invocation_leaving_time_to_answer() {
        let now = Instant::now();
        let reserve = Duration::from_secs(30);
        let fallback = Duration::from_secs(60);
        let d = work_deadline(1_000_300_000, 1_000_000_000, reserve, fallback);
        let work = d.saturating_duration_since(now);
        assert!(
            work <= Duration::from_secs(271) && work > Duration::from_secs(268),
            "{work:?}"
        );
        // A 20 s invocation: 15 s of work, 5 s to answer.
        let d = work_deadline(1_000_020_000, 1_000_000_000, reserve, fallback);
        let work = d.saturating_duration_since(now);
        assert!(
            work <= Duration::from_secs(16) && work > Duration::from_secs(13),
            "{work:?}"
        );
        // No usable deadline (e.g. 600000 from a local Runtime API): the fallback.
        let d = work_deadline(600_000, 1_000_000_000, reserve, fallback);
        let work = d.saturating_duration_since(now);
        assert!(
            work <= Duration::from_secs(61) && work > Duration::from_secs(58),
            "{work:?}"
        );
    }
}
