//! System prerequisites and processes: the one skip-or-fail policy, tool lookup, free ports,
//! unique names, temporary directories, child processes killed on drop, bounded commands and
//! waits.
//!
//! # The prerequisite policy
//!
//! A test that needs something of the system (root, network namespaces, tshark, nginx, a
//! built binary) asks [`require`] first. With `MIRRORFLEET_REQUIRE_SYSTEM=1` (what `make test`
//! and CI set) a missing prerequisite **fails** the test; otherwise the test is **skipped**:
//! the reason is printed and `require` returns `false`, and the caller returns at once.
//!
//! ```no_run
//! use rebuilder_testkit::system;
//!
//! #[test]
//! fn something_that_needs_tshark() {
//!     if !system::require("something_that_needs_tshark", system::tools(&["tshark"])) {
//!         return;
//!     }
//!     // ...
//! }
//! ```
//!
//! This is the policy of the whole project: the control plane's test kit (`mirror-testkit`)
//! and the system tests use this module too (it needs no AWS SDK, so the data plane never
//! compiles one for it).
//!
//! # Tools
//!
//! [`tool`] looks a program up on `PATH`, then in the workspace's `.venv/bin`.
//! [`find_tool`] is for the Python tools the project pins (moto, cargo-lambda): an explicit
//! variable (`MOTO_SERVER`, ...), then the `.venv/bin` of the workspace — and of the main
//! checkout when the workspace is a git worktree —, then `PATH`: the pinned versions win over
//! whatever older copy `PATH` holds.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Set by `make test`: a missing prerequisite is then a failure, not a skip.
pub const REQUIRE_VAR: &str = "MIRRORFLEET_REQUIRE_SYSTEM";

/// True when `MIRRORFLEET_REQUIRE_SYSTEM=1`.
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// The prerequisite policy (see the module documentation): `true` when `check` is `Ok`;
/// otherwise panics under `MIRRORFLEET_REQUIRE_SYSTEM=1`, or prints why `test` is skipped
/// and returns `false`.
pub fn require(test: &str, check: Result<(), String>) -> bool {
    match check {
        Ok(()) => true,
        Err(why) => {
            missing(test, &why);
            false
        }
    }
}

/// Reports a missing prerequisite of `test`: panics under `MIRRORFLEET_REQUIRE_SYSTEM=1`,
/// otherwise prints why the test is skipped. The caller returns right after.
pub fn missing(test: &str, why: &str) {
    if required() {
        panic!("{test}: prerequisite missing with {REQUIRE_VAR}=1: {why}");
    }
    eprintln!("SKIP {test}: {why} (set {REQUIRE_VAR}=1 to make this a failure)");
}

/// `Ok` when the process runs as root (network namespaces, tc, raw captures need it).
pub fn root() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("?");
    if uid == "0" {
        Ok(())
    } else {
        Err(format!("not root (uid {uid})"))
    }
}

/// `Ok` when every tool is on PATH.
pub fn tools(names: &[&str]) -> Result<(), String> {
    for name in names {
        if tool(name).is_none() {
            return Err(format!("{name} not found on PATH"));
        }
    }
    Ok(())
}

/// A program on PATH, or in `.venv/bin` of the workspace (where `make setup` puts moto and
/// cargo-lambda), or in `/usr/sbin` / `/sbin` (where Debian puts daemons such as nginx, which
/// a non-login PATH may leave out).
pub fn tool(name: &str) -> Option<PathBuf> {
    let venv = workspace_root().join(".venv/bin");
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([venv, PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `.venv/bin` of the workspace, and of the main checkout when the workspace is a git worktree
/// (whose `.git` is a file `gitdir: <main>/.git/worktrees/<name>`).
pub fn venv_bins() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut dirs = vec![root.join(".venv/bin")];
    if let Ok(text) = std::fs::read_to_string(root.join(".git"))
        && let Some(gitdir) = text.trim().strip_prefix("gitdir:")
        && let Some(main_git) = Path::new(gitdir.trim()).ancestors().nth(2)
        && let Some(main) = main_git.parent()
    {
        dirs.push(main.join(".venv/bin"));
    }
    dirs
}

/// A pinned tool: the file named by `$env_var` if set (an error when it is not a file), else
/// `name` in [`venv_bins`], else on `PATH`.
pub fn find_tool(env_var: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{env_var}={} is not a file", p.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    venv_bins()
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{name} not found (set {env_var}, or run make setup; searched {:?} and PATH)",
                venv_bins()
            )
        })
}

/// `PATH` with [`venv_bins`] first, for children that run the pinned tools by name.
pub fn venv_path() -> String {
    let mut dirs = venv_bins();
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs)
        .expect("PATH entries")
        .to_string_lossy()
        .into_owned()
}

/// The workspace root (the parent of `rebuilder/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("rebuilder/testkit has a workspace above it")
        .to_path_buf()
}

/// The directory of the workspace's binaries for the running profile: the parent of the
/// `deps/` directory a test executable runs from, or `MIRRORFLEET_BIN_DIR`.
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

/// A workspace binary (`rebuilder`, `mirror-lab`, `onboard-eni`, ...) if it has been built.
pub fn workspace_bin(name: &str) -> Option<PathBuf> {
    let p = bin_dir().join(name);
    p.is_file().then_some(p)
}

/// A port free for both TCP and UDP on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").expect("a free TCP port on 127.0.0.1");
        let p = t.local_addr().expect("bound address").port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no port free for both TCP and UDP on 127.0.0.1")
}

/// A name unique to this process and call: `<prefix><pid>x<counter>` (short enough for
/// network namespace and interface names).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory removed on drop (kept, and named, when the test panics or
/// `MIRRORFLEET_KEEP_LOGS` is set).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `<dir>/<name>`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("MIRRORFLEET_KEEP_LOGS").is_some() {
            eprintln!("logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process with its output in a log file: SIGTERM, then SIGKILL, on drop. Where
/// util-linux's `setpriv` exists the child also gets SIGKILL when the test process dies
/// without unwinding (killed by the runner's timeout), so that no server outlives its test.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr going to `dir/<name>.log`.
    pub fn spawn(name: &str, cmd: Command, dir: &Path) -> std::io::Result<Proc> {
        let mut cmd = with_parent_death_signal(cmd);
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("starting {name}: {e}")))?;
        Ok(Proc {
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

    /// Its whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`; an error with its
    /// log when it exits first or `timeout` passes.
    pub fn wait_listening(&mut self, port: u16, timeout: Duration) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let end = Instant::now() + timeout;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{} exited with {status} before listening on {port}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_text()
                ));
            }
            if Instant::now() >= end {
                return Err(format!(
                    "{} not listening on {port} after {timeout:?}; log {}",
                    self.name,
                    self.log.display()
                ));
            }
            sleep(Duration::from_millis(100));
        }
        Ok(())
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
        terminate(child.id());
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            sleep(Duration::from_millis(20));
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

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
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

/// Polls `f` every 50 ms until it returns true (→ true) or `timeout` passes (→ false).
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        sleep(Duration::from_millis(50));
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

/// Why a bounded command did not produce an [`Output`], or failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{command}: {source}")]
    Io {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} did not finish within {timeout:?}; stderr: {stderr}")]
    Timeout {
        command: String,
        timeout: Duration,
        stderr: String,
    },
    #[error("{command} failed ({status}):\nstdout: {stdout}\nstderr: {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
}

/// Runs `cmd` to completion within `timeout` (killed after it); the output goes through
/// files so that a chatty child never blocks on a full pipe.
pub fn run(mut cmd: Command, timeout: Duration) -> Result<Output, RunError> {
    let command = format!("{cmd:?}");
    let io = |source| RunError::Io {
        command: command.clone(),
        source,
    };
    let dir = TempDir::new("mfrun").map_err(io)?;
    let out_p = dir.path().join("out");
    let err_p = dir.path().join("err");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_p).map_err(io)?)
        .stderr(File::create(&err_p).map_err(io)?)
        .spawn()
        .map_err(io)?;
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(io)? {
            break s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::Timeout {
                command,
                timeout,
                stderr: std::fs::read_to_string(&err_p).unwrap_or_default(),
            });
        }
        sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: std::fs::read_to_string(&out_p).map_err(io)?,
        stderr: std::fs::read_to_string(&err_p).map_err(io)?,
    })
}

/// [`run`], and an error naming the command and its output unless it exits 0.
pub fn run_ok(cmd: Command, timeout: Duration) -> Result<Output, RunError> {
    let command = format!("{cmd:?}");
    let out = run(cmd, timeout)?;
    if !out.status.success() {
        return Err(RunError::Failed {
            command,
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        });
    }
    Ok(out)
}

/// Runs `program args...` (30 s at most) and returns its stdout, or why it failed.
pub fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_ok(cmd, Duration::from_secs(30))
        .map(|o| o.stdout)
        .map_err(|e| e.to_string())
}
