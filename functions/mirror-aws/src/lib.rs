//! mirrorfleet control-plane adapters: EC2, Auto Scaling, S3 and CloudWatch behind small
//! traits, the EventBridge event parsing, the Lambda handlers (generic over the traits so tests
//! use fakes) and the teardown custom resource. The Lambda binaries only wire these together.
//!
//! A run: [`events`] (what the trigger narrows the scope to) → [`observe`] (describes) →
//! decide (pure, the `mirror` crate) → [`apply`] (writes) → [`telemetry`] (report and metrics),
//! driven by [`handlers`]. [`ec2`], [`fleet`], [`store`] (S3) and [`metrics`] (CloudWatch) are
//! the API traits with their SDK implementations, [`clients`] builds the SDK clients, [`error`]
//! classifies failures. [`teardown`] and [`custom_resource`] are the stack-delete path.

pub mod apply;
pub mod clients;
pub mod custom_resource;
pub mod ec2;
pub mod error;
pub mod events;
pub mod fleet;
pub mod handlers;
pub mod metrics;
pub mod observe;
pub mod store;
pub mod teardown;
pub mod telemetry;

pub use ec2::{Ec2Api, SdkEc2};
pub use error::{AwsError, HandlerError};
pub use fleet::{FleetApi, SdkFleet};
pub use handlers::MirrorRun;
pub use metrics::{MetricsApi, SdkMetrics};
pub use store::{ObjectStore, SdkStore};
