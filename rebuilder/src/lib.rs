//! mirrorfleet rebuilder: VXLAN mirror traffic -> TCP reassembly -> HTTP requests.

pub mod engine;
pub mod request;

pub use engine::{DropReason, Engine, EngineConfig, EngineStats};
pub use request::HttpRequest;
