//! The Lambda Runtime API of `cargo lambda watch --only-lambda-apis`, and Lambda binaries
//! polling it as on AWS, invoked with `cargo lambda invoke --data-file`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::moto::Moto;
use crate::prereq::{Tools, workspace_root};
use crate::process::{Proc, Scratch, command, free_port, unique};

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
    pub fn start(tools: &Tools, scratch: &Scratch) -> RuntimeApi {
        let port = free_port();
        let mut cmd = command(&tools.cargo_lambda);
        cmd.args(["lambda", "watch", "--only-lambda-apis", "--ignore-changes"])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .current_dir(workspace_root());
        let proc = Proc::spawn(
            "cargo lambda watch",
            cmd,
            scratch.path("cargo-lambda-watch.log"),
        );
        proc.wait_listening(port, Duration::from_secs(60));
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
        if let Some(status) = function.proc.exited() {
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
    proc: Proc,
}

impl Function {
    /// Starts `binary` with a clean environment: `PATH`, the Lambda variables, `RUST_LOG=info`,
    /// the AWS environment of `moto`, then `env`.
    pub fn start(
        binary: &Path,
        api: &RuntimeApi,
        moto: &Moto,
        env: &[(String, String)],
        scratch: &Scratch,
    ) -> Function {
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = command(binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.runtime_api())
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("RUST_LOG", "info")
            .envs(moto.aws_env())
            .envs(env.iter().cloned());
        let log = scratch.path(&format!("{name}-{}.log", unique()));
        Function {
            proc: Proc::spawn(&name, cmd, log),
            name,
        }
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}
