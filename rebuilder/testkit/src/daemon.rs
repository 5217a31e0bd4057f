//! A `rebuilder run` process under test: started with its configuration in the environment
//! (as the systemd unit does), waited for, scraped, measured (RSS, CPU time per thread group),
//! stopped with SIGTERM; killed on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, http_get};
use crate::system::{free_port, terminate, wait_until, workspace_bin};

/// The `rebuilder` binary of the running profile (built next to the test or benchmark
/// executable: cargo builds a package's binaries for its integration tests and benchmarks).
pub fn rebuilder_bin() -> std::path::PathBuf {
    workspace_bin("rebuilder").expect("the rebuilder binary is built next to the test")
}

/// A `rebuilder run` child process on loopback.
#[derive(Debug)]
pub struct RebuilderProc {
    pub child: Child,
    pub admin: SocketAddr,
    pub udp: SocketAddr,
}

impl RebuilderProc {
    /// Starts the workspace's `rebuilder run` (see [`rebuilder_bin`]) on free loopback
    /// ports, forwarding to `upstream`, with `extra` arguments; waits for its admin listener.
    pub fn start(upstream: &str, extra: &[&str]) -> RebuilderProc {
        RebuilderProc::start_bin(&rebuilder_bin(), upstream, extra)
    }

    /// [`RebuilderProc::start`] with this binary.
    pub fn start_bin(bin: &Path, upstream: &str, extra: &[&str]) -> RebuilderProc {
        let udp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(bin)
            .arg("run")
            .args(extra)
            .env("REBUILDER_LISTEN", udp.to_string())
            .env("REBUILDER_ADMIN", admin.to_string())
            .env("REBUILDER_UPSTREAM", upstream)
            .env("REBUILDER_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("rebuilder starts");
        let p = RebuilderProc { child, admin, udp };
        assert!(
            wait_until(Duration::from_secs(20), || http_get(p.admin, "/healthz")
                .is_some()),
            "the admin listener never came up"
        );
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn metrics(&self) -> Metrics {
        Metrics::scrape(self.admin).expect("metrics answer")
    }

    pub fn healthz(&self) -> u16 {
        http_get(self.admin, "/healthz").map_or(0, |(s, _)| s)
    }

    /// Resident set size, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// CPU time (user + system) of the process, µs.
    pub fn cpu_us(&self) -> u64 {
        stat_cpu_us(&std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap())
            .unwrap_or(0)
    }

    /// CPU time (user + system, µs) per thread name prefix ("rx", "fwd", ...).
    pub fn cpu_by_thread(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return out;
        };
        for t in dir.flatten() {
            let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = &stat[open + 1..close];
            let group = name.split(['-', ' ']).next().unwrap_or(name).to_string();
            *out.entry(group).or_insert(0) += stat_cpu_us(&stat).unwrap_or(0);
        }
        out
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        terminate(self.child.id());
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `cond` holds on the metrics, or panics after `within`.
    pub fn wait_metrics(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + within;
        loop {
            let m = self.metrics();
            if cond(&m) {
                return m;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; metrics:\n{}", m.text);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the daemon reports its upstream reachable (`rebuilder_upstream_up` 1), or
    /// panics after `within`. (`/healthz` is liveness only: 200 says nothing of the upstream.)
    pub fn wait_upstream_up(&self, within: Duration) {
        self.wait_metrics(within, "the upstream reported up", |m| {
            m.get("rebuilder_upstream_up") == 1
        });
    }

    pub fn wait_health(&self, want: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let s = self.healthz();
            if s == want {
                return;
            }
            if Instant::now() > deadline {
                panic!("/healthz stayed {s}, wanted {want}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RebuilderProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a /proc/<pid>/stat line, µs (USER_HZ = 100 on Linux).
fn stat_cpu_us(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}
