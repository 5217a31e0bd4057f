//! Scratch directories, child processes and free ports.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::prereq::find_tool;

/// A number unique in this process (file names).
pub fn unique() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A per-test scratch directory under the system temp dir (never in a crate folder), removed
/// on drop; kept when the test panics or `MIRRORFLEET_KEEP_LOGS` is set.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "mirrorfleet-{tag}-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch { dir }
    }

    /// `dir/<name>`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.dir.display());
        } else if std::env::var_os("MIRRORFLEET_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A command for `program` that also gets SIGKILL when the test process dies without
/// unwinding (killed by the runner's timeout), where util-linux's `setpriv` exists; so no
/// server outlives its test. `setpriv` execs the program: the pid is the program's.
pub fn command(program: &Path) -> Command {
    match find_tool("SETPRIV", "setpriv") {
        Some(setpriv) => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A child process with its output in a log file, killed (and reaped) on drop.
pub struct Proc {
    pub what: String,
    pub log: PathBuf,
    child: Mutex<Child>,
}

impl Proc {
    /// Spawns `cmd` (stdin closed) with stdout and stderr in `log`.
    pub fn spawn(what: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what} ({cmd:?}): {e}"));
        Proc {
            what: what.to_owned(),
            log,
            child: Mutex::new(child),
        }
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it accepts TCP connections on 127.0.0.1:`port`; panics with its log if it
    /// exits first or `timeout` passes.
    pub fn wait_listening(&self, port: u16, timeout: Duration) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + timeout;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited with {status} before listening on {port}; log {}:\n{}",
                    self.what,
                    self.log.display(),
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening on {port} after {timeout:?}; log {}",
                self.what,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let mut child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }
}
