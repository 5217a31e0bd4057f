//! mirrorfleet rebuilder: VXLAN mirror traffic -> TCP reassembly -> HTTP requests.

pub mod engine;
pub mod flow;
pub mod health_check;
pub mod http;
pub mod packet;
pub mod proxy;
pub mod reassembly;
pub mod request;
pub mod vxlan;

pub use engine::{DropReason, Engine, EngineConfig, EngineStats};
pub use request::HttpRequest;

pub mod capture;
pub mod replay;
pub mod synth;

pub mod admin;
pub mod config;
pub mod daemon;
pub mod forward;
pub mod ingest;
pub mod telemetry;
