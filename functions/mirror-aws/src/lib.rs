//! mirrorfleet control-plane adapters: EC2 and Auto Scaling behind small traits, the
//! EventBridge event parsing, and the three Lambda handlers (generic over the traits so tests
//! use fakes). The Lambda binaries only wire these together.
//!
//! A run: [`events`] (what the trigger narrows the scope to) → [`observe`] (describes) →
//! decide (pure, the `mirror` crate) → [`apply`] (writes) → [`telemetry`] (report and metrics),
//! driven by [`handlers`]. [`ec2`] and [`fleet`] are the API traits with their SDK
//! implementations, [`clients`] builds the SDK clients, [`error`] classifies failures.

pub mod apply;
pub mod clients;
pub mod ec2;
pub mod error;
pub mod events;
pub mod fleet;
pub mod handlers;
pub mod observe;
pub mod telemetry;

pub use ec2::{Ec2Api, SdkEc2};
pub use error::{AwsError, HandlerError};
pub use fleet::{FleetApi, SdkFleet};
pub use handlers::MirrorRun;
