//! mirrorfleet control-plane core: the model, the selection policy, `plan(desired, observed)`
//! and the fleet capacity policy. Pure: no AWS SDK, no async runtime.
