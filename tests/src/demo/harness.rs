//! Prerequisites, paths, ports, child processes and bounded waits: the data plane's test kit
//! (`rebuilder_testkit::system`: the project's skip-or-fail policy and process guards), plus
//! the paths and the Python of the demo scripts.

use std::path::PathBuf;
use std::process::{Command, Stdio};

pub use rebuilder_testkit::system::{
    Output, Proc, REQUIRE_VAR, TempDir, bin_dir, free_port, missing, required, run, run_ok, tool,
    unique, wait_tcp, wait_until, workspace_bin, workspace_root,
};

/// `scripts/demo/NAME`.
pub fn demo_script(name: &str) -> PathBuf {
    workspace_root().join("scripts/demo").join(name)
}

/// The Python that has boto3 (the venv's when there is one).
pub fn python() -> Option<PathBuf> {
    let venv = workspace_root().join(".venv/bin/python3");
    if venv.is_file() {
        return Some(venv);
    }
    let p = tool("python3")?;
    let ok = Command::new(&p)
        .args(["-c", "import boto3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
}

/// PATH with the venv first, for children that call `moto_server`, `cargo lambda`, `python3`.
pub fn child_path() -> String {
    let venv = workspace_root().join(".venv/bin");
    let mut dirs = vec![venv];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs)
        .expect("PATH entries")
        .to_string_lossy()
        .into_owned()
}
