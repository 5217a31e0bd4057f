//! The tools the control-plane tests need, under the project's one prerequisite policy
//! (`rebuilder_testkit::system`): a missing tool skips the test with a printed reason, or fails
//! it under `MIRRORFLEET_REQUIRE_SYSTEM=1` (as `make test` sets it).
//!
//! Tools are found by `system::find_tool`: `MOTO_SERVER` / `CARGO_LAMBDA`, then the repository's
//! `.venv/bin` (from a git worktree also the main checkout's), then `PATH` — the `.venv` first
//! because it holds the versions `scripts/setup.sh` pins, and an older moto on `PATH` may lack
//! the traffic-mirror API. moto is run by the Python interpreter of that `moto_server` (its
//! `#!` line), with the documented AWS behaviours of [`crate::moto`] loaded first.

use std::path::{Path, PathBuf};

pub use rebuilder_testkit::system::{REQUIRE_VAR, required as require_system, workspace_root};
use rebuilder_testkit::system::{find_tool, missing};

/// The tools a moto test runs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The pinned `moto_server` (found, not run: [`Tools::moto_python`] runs moto).
    pub moto_server: PathBuf,
    /// The Python interpreter `moto_server` runs with (the one that can import moto).
    pub moto_python: PathBuf,
    pub cargo_lambda: PathBuf,
}

/// The interpreter on the `#!` line of a console script such as `moto_server`.
fn interpreter(script: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read(script).map_err(|e| format!("{}: {e}", script.display()))?;
    let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(first);
    let python = line
        .strip_prefix("#!")
        .and_then(|l| l.split_whitespace().next())
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .ok_or_else(|| format!("{} has no usable #! interpreter line", script.display()))?;
    Ok(python)
}

impl Tools {
    /// Both tools, or what is missing and where it was looked for.
    pub fn find() -> Result<Tools, String> {
        let moto = find_tool("MOTO_SERVER", "moto_server")
            .map_err(|e| format!("{e} (pip install 'moto[server]')"));
        let lambda = find_tool("CARGO_LAMBDA", "cargo-lambda")
            .map_err(|e| format!("{e} (pip install cargo-lambda)"));
        match (moto, lambda) {
            (Ok(moto_server), Ok(cargo_lambda)) => Ok(Tools {
                moto_python: interpreter(&moto_server)?,
                moto_server,
                cargo_lambda,
            }),
            (moto, lambda) => Err([moto.err(), lambda.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }
}

/// The tools a moto test needs, or `None` (after printing why) when the test should skip;
/// panics when they are missing and `MIRRORFLEET_REQUIRE_SYSTEM=1`.
pub fn tools() -> Option<Tools> {
    match Tools::find() {
        Ok(tools) => Some(tools),
        Err(why) => {
            let thread = std::thread::current();
            missing(thread.name().unwrap_or("moto test"), &why);
            None
        }
    }
}
