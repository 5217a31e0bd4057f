//! The tools the control-plane tests need and what happens when one is missing: the test is
//! skipped with a printed reason, or fails when `MIRRORFLEET_REQUIRE_SYSTEM=1` (as `make test`
//! sets it).
//!
//! Tools are found through `MOTO_SERVER` / `CARGO_LAMBDA`, then the repository's `.venv/bin`
//! (for a git worktree, also the main checkout's `.venv`), then `PATH`: the `.venv` comes
//! first because it holds the versions `scripts/setup.sh` pins, and an older moto on `PATH`
//! may lack the traffic-mirror API.

use std::path::{Path, PathBuf};

/// The variable that turns a missing prerequisite into a failure.
pub const REQUIRE_VAR: &str = "MIRRORFLEET_REQUIRE_SYSTEM";

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// `.venv/bin` of the repository, and of the main checkout when this is a git worktree.
fn venv_bins() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut dirs = vec![root.join(".venv/bin")];
    // A worktree's `.git` is a file: `gitdir: <main>/.git/worktrees/<name>`.
    if let Ok(text) = std::fs::read_to_string(root.join(".git"))
        && let Some(gitdir) = text.trim().strip_prefix("gitdir:")
        && let Some(main_git) = Path::new(gitdir.trim()).ancestors().nth(2)
        && let Some(main) = main_git.parent()
    {
        dirs.push(main.join(".venv/bin"));
    }
    dirs
}

/// Find a tool: `$env_var`, then the repository's `.venv/bin`, then `PATH`.
pub fn find_tool(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            eprintln!("{env_var}={} is not a file", p.display());
            return None;
        }
        return Some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    venv_bins()
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// True when `MIRRORFLEET_REQUIRE_SYSTEM=1`: missing prerequisites fail instead of skipping.
pub fn require_system() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// The tools a moto test runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub moto_server: PathBuf,
    pub cargo_lambda: PathBuf,
}

impl Tools {
    /// Both tools, or what is missing and where it was looked for.
    pub fn find() -> Result<Tools, String> {
        let moto = find_tool("MOTO_SERVER", "moto_server");
        let lambda = find_tool("CARGO_LAMBDA", "cargo-lambda");
        match (moto, lambda) {
            (Some(moto_server), Some(cargo_lambda)) => Ok(Tools {
                moto_server,
                cargo_lambda,
            }),
            (moto, lambda) => {
                let missing: Vec<&str> = [
                    moto.is_none()
                        .then_some("moto_server (set MOTO_SERVER, or pip install 'moto[server]')"),
                    lambda
                        .is_none()
                        .then_some("cargo-lambda (set CARGO_LAMBDA, or pip install cargo-lambda)"),
                ]
                .into_iter()
                .flatten()
                .collect();
                Err(format!(
                    "missing {} (searched the env var, {:?} and PATH)",
                    missing.join(" and "),
                    venv_bins()
                ))
            }
        }
    }
}

/// The tools a moto test needs, or `None` (after printing why) when the test should skip.
/// Panics when they are missing and [`require_system`] is set.
pub fn tools() -> Option<Tools> {
    match Tools::find() {
        Ok(tools) => Some(tools),
        Err(msg) => {
            assert!(!require_system(), "{REQUIRE_VAR}=1: {msg}");
            eprintln!("skipping moto test: {msg}");
            None
        }
    }
}
