//! mirrorfleet control-plane core: the model, the selection policy, `plan(desired, observed)`
//! and the fleet capacity policy. Pure: no AWS SDK, no async runtime.
//!
//! A mirror run is: settings ([`settings`]) → observe (adapter, fills [`model::Observed`]) →
//! [`plan::reconcile`] (= [`selection::Selector::select`] + [`plan::plan_scoped`]) → apply
//! (adapter) → [`report::Report`]. A fleet run is: settings → observe (adapter, fills
//! [`capacity::FleetObservation`]) → [`capacity::decide`] → apply (adapter) →
//! [`report::CapacityReport`]. [`sim`] plays the EC2 side of a plan with the API's rules;
//! [`refusals`] remembers the ENIs AWS refused; [`sources`] builds the source map the
//! rebuilders read.

pub mod capacity;
pub mod filters;
pub mod model;
pub mod permissions;
pub mod plan;
pub mod refusals;
pub mod report;
pub mod selection;
pub mod settings;
pub mod sim;
pub mod sources;

pub use capacity::{
    CapacityDecision, CapacityPolicy, FleetObservation, FleetPlan, Load, ScaleInHistory,
    SetDesired, Traffic, decide, desired_capacity, effective_policy,
};
pub use filters::{
    EniFilters, Filter, FilterError, Filterable, Filters, InstanceFilters, parse_filters,
};
pub use model::{
    Eni, Instance, MirrorSpec, MirrorTarget, Observed, Session, SessionPriority, Tags, TargetKind,
};
pub use plan::{Plan, Scope, client_token, plan, plan_scoped, reconcile};
pub use report::{ErrorClass, Report};
pub use selection::{Selection, Selector, SkipReason};
pub use settings::{
    FLEET_VARS, FUNCTION_VARS, FleetSettings, MIRROR_VARS, MirrorSettings, RECONCILE_VARS,
    ReconcileSettings, S3Uri, SettingsError, TEARDOWN_VARS, TeardownSettings, Var,
};
