//! mirrorfleet rebuilder: VXLAN mirror traffic -> TCP reassembly -> HTTP requests.

pub mod engine;

pub mod daemon;

pub mod offline;

pub use engine::request::HttpRequest;
pub use engine::{DropReason, Engine, EngineConfig, EngineStats};
