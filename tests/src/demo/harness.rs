//! Prerequisites, paths, ports, child processes and bounded waits: the data plane's test kit
//! (`rebuilder_testkit::system`: the project's skip-or-fail policy and process guards), plus
//! the paths and the Python of the demo scripts.

use std::path::PathBuf;
use std::process::{Command, Stdio};

pub use rebuilder_testkit::system::{
    Output, Proc, REQUIRE_VAR, TempDir, bin_dir, find_tool, free_port, missing, required, run,
    run_ok, tool, unique, venv_bins, venv_path, wait_tcp, wait_until, workspace_bin,
    workspace_root,
};

/// `scripts/demo/NAME`.
pub fn demo_script(name: &str) -> PathBuf {
    workspace_root().join("scripts/demo").join(name)
}

/// The Python that has boto3: the pinned venv's first (`find_tool`), as for moto.
pub fn python() -> Option<PathBuf> {
    let p = find_tool("MIRRORFLEET_PYTHON", "python3").ok()?;
    let ok = Command::new(&p)
        .args(["-c", "import boto3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
}
