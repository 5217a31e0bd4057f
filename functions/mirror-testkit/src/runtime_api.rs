//! The Lambda Runtime API of `cargo lambda watch --only-lambda-apis`, and Lambda binaries
//! polling it as on AWS, invoked with `cargo lambda invoke --data-file`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rebuilder_testkit::system::{Proc, TempDir, free_port, unique};
use serde_json::Value;

use crate::moto::Moto;
use crate::prereq::{Tools, workspace_root};

/// How long one invocation may take.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// `cargo lambda watch --only-lambda-apis`, run from the workspace root with its log in the
/// scratch directory (never in a crate folder); killed on drop.
pub struct RuntimeApi {
    pub port: u16,
    cargo_lambda: PathBuf,
    _proc: Proc,
}

impl RuntimeApi {
    pub fn start(tools: &Tools, dir: &TempDir) -> RuntimeApi {
        let port = free_port();
        let mut cmd = Command::new(&tools.cargo_lambda);
        cmd.args(["lambda", "watch", "--only-lambda-apis", "--ignore-changes"])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .current_dir(workspace_root());
        let mut proc = Proc::spawn(&unique("cargo-lambda-watch-"), cmd, dir.path())
            .unwrap_or_else(|e| panic!("start cargo lambda watch: {e}"));
        proc.wait_listening(port, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        RuntimeApi {
            port,
            cargo_lambda: tools.cargo_lambda.clone(),
            _proc: proc,
        }
    }

    /// `AWS_LAMBDA_RUNTIME_API` for a function binary.
    pub fn runtime_api(&self) -> String {
        format!("http://127.0.0.1:{}/.rt", self.port)
    }

    /// `cargo lambda invoke _ --data-file <file>` for the running `function`: its JSON
    /// response, or the error it returned (as cargo lambda printed it) with the function's
    /// log.
    pub async fn invoke(&self, function: &Function, data_file: &Path) -> Result<Value, String> {
        if let Some(status) = function.proc().exited() {
            return Err(format!(
                "{} exited ({status}) before the invocation:\n{}",
                function.name,
                function.log_text()
            ));
        }
        let out = tokio::process::Command::new(&self.cargo_lambda)
            .args(["lambda", "invoke", "_", "--data-file"])
            .arg(data_file)
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &self.port.to_string()])
            .args(["--output-format", "json"])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let failed = |what: String| {
            format!(
                "{what}\n--- {} log ---\n{}",
                function.name,
                function.log_text()
            )
        };
        let out = tokio::time::timeout(INVOKE_TIMEOUT, out)
            .await
            .map_err(|_| {
                failed(format!(
                    "cargo lambda invoke timed out after {INVOKE_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| failed(format!("run cargo lambda invoke: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(failed(format!(
                "{} on {}: {}\n{stdout}\n{stderr}",
                function.name,
                data_file.display(),
                out.status
            )));
        }
        serde_json::from_str(stdout.trim())
            .map_err(|e| failed(format!("response is not JSON ({e}): {stdout}\n{stderr}")))
    }

    /// [`RuntimeApi::invoke`] for tests without an async runtime.
    pub fn invoke_blocking(&self, function: &Function, data_file: &Path) -> Result<Value, String> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?
            .block_on(self.invoke(function, data_file))
    }
}

/// A Lambda binary connected to a [`RuntimeApi`] as function `_`; killed on drop.
pub struct Function {
    pub name: String,
    proc: Mutex<Proc>,
}

impl Function {
    /// Starts `binary` with exactly this environment: `PATH`, the Lambda variables,
    /// `RUST_LOG=info`, the AWS environment of `moto`, then `env` (every other variable of the
    /// test process is removed, so nothing of the developer's AWS setup leaks in).
    pub fn start(
        binary: &Path,
        api: &RuntimeApi,
        moto: &Moto,
        env: &[(String, String)],
        dir: &TempDir,
    ) -> Function {
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut wanted: BTreeMap<OsString, OsString> = BTreeMap::new();
        let fixed = [
            ("AWS_LAMBDA_RUNTIME_API".to_owned(), api.runtime_api()),
            ("AWS_LAMBDA_FUNCTION_NAME".to_owned(), "_".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION".to_owned(), "1".to_owned()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_owned(),
                "128".to_owned(),
            ),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ];
        for (k, v) in fixed
            .into_iter()
            .chain(moto.aws_env())
            .chain(env.iter().cloned())
        {
            wanted.insert(k.into(), v.into());
        }
        wanted.insert("PATH".into(), std::env::var_os("PATH").unwrap_or_default());
        let mut cmd = Command::new(binary);
        // Explicit removals rather than env_clear(), which the process guard's wrapper cannot
        // see (it rebuilds the command around `setpriv`).
        for (k, _) in std::env::vars_os() {
            if !wanted.contains_key(&k) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(&wanted);
        let proc = Proc::spawn(&unique(&format!("{name}-")), cmd, dir.path())
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Function {
            proc: Mutex::new(proc),
            name,
        }
    }

    fn proc(&self) -> MutexGuard<'_, Proc> {
        self.proc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        self.proc().log_text()
    }
}
