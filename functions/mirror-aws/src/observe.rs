//! Observe: the describes that fill [`Observed`] for a [`Scope`], using server-side filters
//! and whole pages (never one describe per ENI).
//!
//! Full scope:
//! 1. every mirror target (to exclude target ENIs and their load balancer's ENIs);
//! 2. ENIs matching the ENI filters, instances matching the instance filters, and the ENIs
//!    attached to those instances (`attachment.instance-id`, ≤ 200 ids per call);
//! 3. every session (numbers in use and the 3-per-ENI limit count sessions of any owner);
//! 4. the ENIs carrying an owned session that the filters did not return (so a session whose
//!    ENI merely stopped matching is deleted as unwanted, not as gone);
//! 5. the instances of every observed ENI not yet described (fleet and exclude-tag exclusions).
//!
//! Narrow scope: the same, but by id (`network-interface-id`, `instance-id`,
//! `attachment.instance-id`) and the sessions of the ENIs in scope only.
//!
//! size-fleet ([`observe_fleet`]): the rebuilder group, the sessions sending to our target
//! (every session to the target loads the fleet, ours or not), and the fleet's traffic from
//! CloudWatch (one `GetMetricData`; without data or on failure the sessions alone size the
//! fleet, and the report says which).

use std::collections::BTreeSet;

use mirror::capacity::{FleetObservation, Load, SCALE_IN_HISTORY_TAG, Traffic};
use mirror::filters::Filter;
use mirror::model::{MirrorSpec, Observed};
use mirror::plan::Scope;
use mirror::report::TrafficSource;
use mirror::selection::Selector;
use mirror::settings::FleetSettings;

use crate::ec2::{Ec2Api, chunked_filters};
use crate::error::{AwsError, HandlerError};
use crate::fleet::FleetApi;
use crate::metrics::MetricsApi;

async fn enis_by<E: Ec2Api>(
    ec2: &E,
    observed: &mut Observed,
    name: &str,
    ids: &[String],
) -> Result<(), AwsError> {
    for filter in chunked_filters(name, ids) {
        observed
            .enis
            .extend(ec2.describe_network_interfaces(vec![filter]).await?);
    }
    Ok(())
}

async fn instances_by_id<E: Ec2Api>(
    ec2: &E,
    observed: &mut Observed,
    ids: &[String],
) -> Result<(), AwsError> {
    for filter in chunked_filters("instance-id", ids) {
        observed
            .instances
            .extend(ec2.describe_instances(vec![filter]).await?);
    }
    Ok(())
}

async fn sessions_by_eni<E: Ec2Api>(
    ec2: &E,
    observed: &mut Observed,
    ids: &[String],
) -> Result<(), AwsError> {
    for filter in chunked_filters("network-interface-id", ids) {
        observed
            .sessions
            .extend(ec2.describe_sessions(vec![filter]).await?);
    }
    Ok(())
}

fn known_enis(observed: &Observed) -> BTreeSet<String> {
    observed.enis.iter().map(|e| e.id.clone()).collect()
}

/// Instances attached to observed ENIs that were not described yet.
async fn attached_instances<E: Ec2Api>(ec2: &E, observed: &mut Observed) -> Result<(), AwsError> {
    let known: BTreeSet<&str> = observed.instances.iter().map(|i| i.id.as_str()).collect();
    let missing: Vec<String> = observed
        .enis
        .iter()
        .filter_map(|e| e.attachment_instance_id.as_deref())
        .filter(|id| !known.contains(id))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(str::to_owned)
        .collect();
    instances_by_id(ec2, observed, &missing).await
}

fn not_empty(filters: &[Filter]) -> Option<Vec<Filter>> {
    (!filters.is_empty()).then(|| filters.to_vec())
}

/// Describe everything the planner needs for `scope`.
pub async fn observe<E: Ec2Api>(
    ec2: &E,
    scope: &Scope,
    selector: &Selector,
    spec: &MirrorSpec,
    now_unix: u64,
) -> Result<Observed, AwsError> {
    let mut observed = Observed {
        observed_at_unix: now_unix,
        targets: ec2.describe_targets().await?,
        ..Observed::default()
    };
    match scope {
        Scope::All => {
            if let Some(filters) = not_empty(selector.eni_filters.filters()) {
                observed
                    .enis
                    .extend(ec2.describe_network_interfaces(filters).await?);
            }
            if let Some(filters) = not_empty(selector.instance_filters.filters()) {
                let instances = ec2.describe_instances(filters).await?;
                let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
                observed.instances.extend(instances);
                enis_by(ec2, &mut observed, "attachment.instance-id", &ids).await?;
            }
            observed.sessions = ec2.describe_sessions(Vec::new()).await?;
            let known = known_enis(&observed);
            let missing: Vec<String> = observed
                .sessions
                .iter()
                .filter(|s| s.is_owned_by(&spec.owner) && !known.contains(&s.eni_id))
                .map(|s| s.eni_id.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            enis_by(ec2, &mut observed, "network-interface-id", &missing).await?;
            attached_instances(ec2, &mut observed).await?;
        }
        Scope::Only {
            eni_ids,
            instance_ids,
        } => {
            let instance_ids: Vec<String> = instance_ids.iter().cloned().collect();
            instances_by_id(ec2, &mut observed, &instance_ids).await?;
            enis_by(ec2, &mut observed, "attachment.instance-id", &instance_ids).await?;
            let wanted_ids: Vec<String> = eni_ids
                .iter()
                .filter(|id| !observed.enis.iter().any(|e| &e.id == *id))
                .cloned()
                .collect();
            enis_by(ec2, &mut observed, "network-interface-id", &wanted_ids).await?;
            attached_instances(ec2, &mut observed).await?;
            let mut in_scope = known_enis(&observed);
            in_scope.extend(eni_ids.iter().cloned());
            let in_scope: Vec<String> = in_scope.into_iter().collect();
            sessions_by_eni(ec2, &mut observed, &in_scope).await?;
        }
    }
    Ok(observed)
}

/// What size-fleet observed, and where its traffic figures came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetObserved {
    pub observation: FleetObservation,
    pub traffic_source: TrafficSource,
    /// Why `GetMetricData` failed, if it did.
    pub traffic_error: Option<AwsError>,
}

/// Describe the rebuilder group, count the sessions sending to our target, and read the
/// fleet's traffic.
pub async fn observe_fleet<E: Ec2Api, F: FleetApi, M: MetricsApi>(
    ec2: &E,
    fleet: &F,
    metrics: &M,
    settings: &FleetSettings,
    now_unix: u64,
) -> Result<FleetObserved, HandlerError> {
    let group = fleet
        .describe_group(&settings.asg_name)
        .await
        .map_err(HandlerError::Fleet)?
        .ok_or_else(|| HandlerError::GroupNotFound(settings.asg_name.clone()))?;
    let target = &settings.target_id;
    let sessions = ec2
        .describe_sessions(vec![Filter::new(
            "traffic-mirror-target-id",
            [target.clone()],
        )])
        .await
        .map_err(HandlerError::Observe)?;
    let sessions = sessions.iter().filter(|s| &s.target_id == target).count();
    let (traffic, traffic_source, traffic_error) = match &settings.metrics_namespace {
        None => (Traffic::default(), TrafficSource::NotConfigured, None),
        Some(namespace) => match metrics
            .fleet_traffic(namespace, &settings.asg_name, now_unix)
            .await
        {
            Ok(t) if t == Traffic::default() => (t, TrafficSource::NoData, None),
            Ok(t) => (t, TrafficSource::Cloudwatch, None),
            Err(e) => (Traffic::default(), TrafficSource::Failed, Some(e)),
        },
    };
    Ok(FleetObserved {
        observation: FleetObservation {
            load: Load {
                sessions: u32::try_from(sessions).unwrap_or(u32::MAX),
                current_desired: group.desired_capacity,
                traffic,
            },
            group_min: group.min_size,
            group_max: group.max_size,
            history_tag: group.tags.get(SCALE_IN_HISTORY_TAG).cloned(),
        },
        traffic_source,
        traffic_error,
    })
}
