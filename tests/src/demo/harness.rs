//! Prerequisites, paths, ports, child processes and bounded waits.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Set by `make test`: a missing prerequisite is then a failure, not a skip.
pub const REQUIRE_VAR: &str = "MIRRORFLEET_REQUIRE_SYSTEM";

/// True when `MIRRORFLEET_REQUIRE_SYSTEM=1`.
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// Call when a prerequisite is missing: panics under `MIRRORFLEET_REQUIRE_SYSTEM=1`, otherwise
/// prints why the test is skipped. The caller returns right after.
pub fn missing(test: &str, why: &str) {
    if required() {
        panic!("{test}: prerequisite missing with {REQUIRE_VAR}=1: {why}");
    }
    eprintln!("SKIP {test}: {why} (set {REQUIRE_VAR}=1 to make this a failure)");
}

/// The workspace root (the `tests/` package's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `scripts/demo/NAME`.
pub fn demo_script(name: &str) -> PathBuf {
    workspace_root().join("scripts/demo").join(name)
}

/// The directory holding the workspace's binaries for this profile (`target/debug`): the
/// parent of the `deps/` directory the test executable runs from, or `MIRRORFLEET_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MIRRORFLEET_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A workspace binary (`onboard-eni`, `rebuilder`, ...) if it has been built.
pub fn workspace_bin(name: &str) -> Option<PathBuf> {
    let p = bin_dir().join(name);
    p.is_file().then_some(p)
}

/// Finds a tool on PATH, then in the workspace's `.venv/bin` (where `make setup` puts moto and
/// cargo-lambda).
pub fn tool(name: &str) -> Option<PathBuf> {
    let venv = workspace_root().join(".venv/bin");
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::iter::once(venv))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
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

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A name unique to this process and call: `<prefix><pid>x<counter>` (short enough for
/// namespace and interface names).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory removed on drop (kept when the test panics, for its logs).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self> {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process with its output in a log file; SIGTERM then SIGKILL on drop.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr going to `dir/<name>.log`. Where util-linux's
    /// `setpriv` exists the child also gets SIGKILL when the test dies without unwinding
    /// (e.g. killed by the runner's timeout), so that no server outlives its test.
    pub fn spawn(name: &str, cmd: Command, dir: &Path) -> Result<Self> {
        let mut cmd = with_parent_death_signal(cmd);
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            log,
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, up to `grace`, then SIGKILL; reaps it.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// `setpriv --pdeathsig KILL -- <cmd>` (same environment and directory) when `setpriv` is
/// there, else `cmd` unchanged. setpriv execs the program, so the pid stays the program's.
fn with_parent_death_signal(cmd: Command) -> Command {
    let Some(setpriv) = tool("setpriv") else {
        return cmd;
    };
    let mut wrapped = Command::new(setpriv);
    wrapped
        .args(["--pdeathsig", "KILL", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        wrapped.current_dir(d);
    }
    wrapped
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        sleep(Duration::from_millis(100));
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    wait_until(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
    })
}

/// What a bounded command produced.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion within `timeout` (killed after it), output captured via files so
/// a chatty child can never block on a full pipe.
pub fn run(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let dir = TempDir::new("mfrun")?;
    let out_p = dir.path().join("out");
    let err_p = dir.path().join("err");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_p)?)
        .stderr(File::create(&err_p)?)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{cmd:?} did not finish within {timeout:?}; stderr: {}",
                std::fs::read_to_string(&err_p).unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: std::fs::read_to_string(&out_p)?,
        stderr: std::fs::read_to_string(&err_p)?,
    })
}

/// [`run`], and an error naming the command and its stderr unless it exits 0.
pub fn run_ok(cmd: Command, timeout: Duration) -> Result<Output> {
    let what = format!("{cmd:?}");
    let out = run(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
    Ok(out)
}
