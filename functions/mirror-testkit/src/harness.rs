//! Everything a moto test starts: its tools, a scratch directory, moto and the Runtime API.

use std::path::Path;

use serde_json::Value;

use rebuilder_testkit::system::{TempDir, unique};

use crate::moto::Moto;
use crate::prereq::{Tools, tools};
use crate::runtime_api::{Function, RuntimeApi};

/// A scratch directory for one test's logs and files (under the system temp dir, never in a
/// crate folder; kept when the test fails or with `MIRRORFLEET_KEEP_LOGS=1`).
pub fn scratch(tag: &str) -> TempDir {
    TempDir::new(&format!("mirrorfleet-{tag}-")).expect("create a scratch directory")
}

/// moto and the Lambda Runtime API for one test, stopped on drop.
pub struct Harness {
    pub tools: Tools,
    pub moto: Moto,
    pub api: RuntimeApi,
    pub scratch: TempDir,
}

impl Harness {
    /// Start moto and the Runtime API, or `None` (skip) when the tools are missing (a failure
    /// under `MIRRORFLEET_REQUIRE_SYSTEM=1`).
    pub fn start(tag: &str) -> Option<Harness> {
        Some(Harness::with_tools(tools()?, tag))
    }

    /// Start moto and the Runtime API with tools already found.
    pub fn with_tools(tools: Tools, tag: &str) -> Harness {
        let scratch = scratch(tag);
        let moto = Moto::start(&tools, &scratch);
        let api = RuntimeApi::start(&tools, &scratch);
        Harness {
            tools,
            moto,
            api,
            scratch,
        }
    }

    /// Start a Lambda binary against this harness, with `env` (its settings).
    pub fn function(&self, binary: &Path, env: &[(String, String)]) -> Function {
        Function::start(binary, &self.api, &self.moto, env, &self.scratch)
    }

    /// Write `event` to a file and invoke the running function with it.
    pub async fn invoke(&self, function: &Function, event: &Value) -> Result<Value, String> {
        let path = self.scratch.join(&format!("{}.json", unique("event-")));
        std::fs::write(&path, serde_json::to_vec_pretty(event).expect("event JSON"))
            .expect("write event");
        self.api.invoke(function, &path).await
    }
}
