//! mirrorfleet control-plane adapters: EC2 and Auto Scaling behind small traits, the
//! EventBridge event parsing, and the three Lambda handlers (generic over the traits so tests
//! use fakes). The Lambda binaries only wire these together.

pub mod clients;
pub mod ec2;
pub mod error;
pub mod events;
pub mod fleet;
pub mod handlers;
pub mod observe;
pub mod telemetry;

pub use ec2::{Ec2Api, SdkEc2};
pub use error::AwsError;
pub use fleet::{FleetApi, SdkFleet};
pub use handlers::{HandlerError, MirrorRun};
