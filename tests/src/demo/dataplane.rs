//! The data plane in network namespaces: client, web server, kernel VXLAN mirror (tc mirred)
//! to a collector namespace running the rebuilder and an analyzer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::harness::{self, Proc};

/// Addresses of `scripts/demo/netns.sh`.
pub const CLIENT_IP: &str = "10.77.1.10";
pub const SERVER_IP: &str = "10.77.1.20";
pub const MIRROR_SRC_IP: &str = "10.77.2.1";
pub const COLLECTOR_IP: &str = "10.77.2.2";
/// Where the analyzer listens inside the collector namespace.
pub const ANALYZER_ADDR: &str = "127.0.0.1:8080";
/// The rebuilder's admin listener inside the collector namespace.
pub const ADMIN_ADDR: &str = "127.0.0.1:9445";

/// Why the namespace tests can't run here, if they can't.
pub fn prerequisites() -> Result<(), String> {
    for t in ["ip", "tc", "ethtool", "curl", "python3"] {
        if harness::tool(t).is_none() {
            return Err(format!("{t} not found"));
        }
    }
    let out = harness::run(
        {
            let mut c = Command::new("bash");
            c.arg(harness::demo_script("netns.sh")).arg("check");
            c
        },
        Duration::from_secs(20),
    )
    .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "network namespaces unavailable: {}",
            out.stdout.trim()
        ));
    }
    Ok(())
}

/// The three namespaces `PREFIX-cli`, `PREFIX-srv`, `PREFIX-col`; removed on drop (which also
/// kills whatever still runs inside).
pub struct Topology {
    pub prefix: String,
}

impl Topology {
    /// Builds the topology with the mirror's VXLAN VNI; `both` mirrors the server's ingress and
    /// egress (as a session with an accept-all filter does), otherwise ingress only.
    pub fn up(vni: u32, both: bool) -> Result<Self> {
        let _ = Command::new("bash")
            .arg(harness::demo_script("netns.sh"))
            .args(["reap", "mft"])
            .status();
        let prefix = harness::unique("mft");
        let topo = Self { prefix };
        let mut cmd = Command::new("bash");
        cmd.arg(harness::demo_script("netns.sh"))
            .args(["up", &topo.prefix, &vni.to_string()])
            .arg(if both { "both" } else { "ingress" });
        harness::run_ok(cmd, Duration::from_secs(60))?;
        Ok(topo)
    }

    pub fn client(&self) -> String {
        format!("{}-cli", self.prefix)
    }
    pub fn server(&self) -> String {
        format!("{}-srv", self.prefix)
    }
    pub fn collector(&self) -> String {
        format!("{}-col", self.prefix)
    }

    /// `ip netns exec NS program args...`
    pub fn exec(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Waits until `addr` accepts TCP connections, seen from inside `ns`.
    pub fn wait_tcp_in(ns: &str, addr: &str, timeout: Duration) -> bool {
        let probe = format!(
            "import socket; h,p='{addr}'.rsplit(':',1); socket.create_connection((h,int(p)),0.5).close()"
        );
        harness::wait_until(timeout, || {
            let mut c = Self::exec(ns, "python3");
            c.args(["-c", &probe]);
            harness::run(c, Duration::from_secs(5)).is_ok_and(|o| o.status.success())
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(harness::demo_script("netns.sh"))
            .args(["down", &self.prefix])
            .status();
    }
}

/// `scripts/demo/analyzer.py serve` inside a namespace, recording every request.
pub struct HttpRecorder {
    pub record: PathBuf,
    pub proc: Proc,
}

impl HttpRecorder {
    pub fn start(ns: &str, listen: &str, label: &str, dir: &Path) -> Result<Self> {
        let record = dir.join(format!("{label}.jsonl"));
        let mut cmd = Topology::exec(ns, "python3");
        cmd.arg(harness::demo_script("analyzer.py"))
            .args(["serve", "--listen", listen, "--label", label, "--record"])
            .arg(&record);
        let proc = Proc::spawn(label, cmd, dir)?;
        let probe = if listen.starts_with("0.0.0.0") {
            listen.replacen("0.0.0.0", "127.0.0.1", 1)
        } else {
            listen.to_owned()
        };
        if !Topology::wait_tcp_in(ns, &probe, Duration::from_secs(15)) {
            bail!("{label} did not listen on {listen}:\n{}", proc.log_tail(20));
        }
        Ok(Self { record, proc })
    }

    /// The requests recorded so far.
    pub fn requests(&self) -> Result<Vec<Recorded>> {
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).context("a record line"))
            .collect()
    }
}

/// One request as `analyzer.py` records it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Recorded {
    pub peer: String,
    pub method: String,
    pub target: String,
    pub version: u8,
    pub headers: Vec<(String, String)>,
    pub body_b64: String,
    pub body_len: usize,
    pub chunked: bool,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn peer_ip(&self) -> &str {
        self.peer.rsplit_once(':').map_or("", |(ip, _)| ip)
    }

    /// Headers that must arrive unchanged (not hop-by-hop, not re-framed, not appended to).
    pub fn end_to_end_headers(&self) -> Vec<(String, String)> {
        const SKIP: [&str; 10] = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "content-length",
            "expect",
            "x-forwarded-for",
        ];
        self.headers
            .iter()
            .filter(|(k, _)| !SKIP.contains(&k.to_ascii_lowercase().as_str()))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    }
}

/// Runs `scripts/demo/traffic.sh` in the client namespace; returns how many requests it sent.
pub fn drive_traffic(topo: &Topology) -> Result<usize> {
    let mut cmd = Command::new("bash");
    cmd.arg(harness::demo_script("traffic.sh"))
        .arg(topo.client())
        .arg(format!("{SERVER_IP}:80"));
    let out = harness::run_ok(cmd, Duration::from_secs(120))?;
    let sent = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("sent "))
        .context("traffic.sh printed no 'sent N'")?;
    Ok(sent.trim().parse()?)
}

/// The real `rebuilder run` inside the collector namespace, listening on UDP/4789 and forwarding
/// to the analyzer.
pub fn start_rebuilder(topo: &Topology, dir: &Path) -> Result<Proc> {
    let bin = harness::workspace_bin("rebuilder").context("rebuilder is not built")?;
    let mut cmd = Topology::exec(&topo.collector(), &bin);
    cmd.args(["run", "--listen", "0.0.0.0:4789"])
        .args(["--upstream", &format!("http://{ANALYZER_ADDR}")])
        .args(["--admin", ADMIN_ADDR]);
    let mut proc = Proc::spawn("rebuilder", cmd, dir)?;
    let listening = Topology::wait_tcp_in(&topo.collector(), ADMIN_ADDR, Duration::from_secs(20));
    // The admin listener may come up before a start-up failure elsewhere: give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    if !listening || proc.exited().is_some() {
        bail!(
            "rebuilder run did not start (admin {ADMIN_ADDR} listening: {listening}, exited: {:?}):\n{}",
            proc.exited(),
            proc.log_tail(30)
        );
    }
    Ok(proc)
}

/// True when the built `rebuilder` has the `run` sub-command.
pub fn rebuilder_has_run() -> bool {
    harness::workspace_bin("rebuilder").is_some_and(|b| {
        Command::new(b)
            .args(["run", "--help"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// `GET /metrics` from the rebuilder's admin listener.
pub fn rebuilder_metrics(topo: &Topology) -> Result<String> {
    let mut cmd = Topology::exec(&topo.collector(), "curl");
    cmd.args([
        "-sS",
        "--max-time",
        "5",
        &format!("http://{ADMIN_ADDR}/metrics"),
    ]);
    Ok(harness::run_ok(cmd, Duration::from_secs(10))?.stdout)
}

/// VXLAN datagram counts of `analyzer.py udp-sink`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SinkCounts {
    pub datagrams: u64,
    pub per_vni: std::collections::BTreeMap<String, u64>,
}

/// `analyzer.py udp-sink` on the collector's UDP/4789 (kernel-only checks).
pub struct UdpSink {
    pub record: PathBuf,
    pub proc: Proc,
}

impl UdpSink {
    pub fn start(topo: &Topology, dir: &Path) -> Result<Self> {
        let record = dir.join("udp-sink.json");
        let mut cmd = Topology::exec(&topo.collector(), "python3");
        cmd.arg(harness::demo_script("analyzer.py"))
            .args(["udp-sink", "--listen", "0.0.0.0:4789", "--record"])
            .arg(&record);
        let proc = Proc::spawn("udp-sink", cmd, dir)?;
        if !harness::wait_until(Duration::from_secs(10), || record.is_file()) {
            bail!("udp-sink did not start:\n{}", proc.log_tail(20));
        }
        Ok(Self { record, proc })
    }

    pub fn counts(&self) -> SinkCounts {
        std::fs::read_to_string(&self.record)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }
}

/// A `SocketAddr` from a literal.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address literal")
}
