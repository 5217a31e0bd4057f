//! The data plane in network namespaces: client, web server, kernel VXLAN mirror (tc mirred)
//! to a collector namespace running the rebuilder and an analyzer — the mirror lab and the
//! recording analyzer of the data plane's test kit (`rebuilder_testkit`), as `make demo` uses
//! them through `mirror-lab`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
pub use rebuilder_testkit::analyzer::Recorded;
use rebuilder_testkit::analyzer::{Analyzer, AnalyzerConfig};
use rebuilder_testkit::netns::{self, LabSpec, MirrorLab};
pub use rebuilder_testkit::udp_sink::SinkCounts;

use super::harness::{self, Proc};

/// Addresses of the lab (`rebuilder_testkit::netns::ADDRS`).
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
    netns::check()?;
    harness::tool("curl")
        .map(|_| ())
        .ok_or("curl not found".into())
}

/// The three namespaces `PREFIX-cli`, `PREFIX-srv`, `PREFIX-col`; removed on drop (which also
/// kills whatever still runs inside).
pub struct Topology {
    pub lab: MirrorLab,
}

impl Topology {
    /// Builds the topology with the mirror's VXLAN VNI; `both` mirrors the server's ingress and
    /// egress (as a session with an accept-all filter does), otherwise ingress only.
    pub fn up(vni: u32, both: bool) -> Result<Self> {
        netns::reap("mft");
        let mut spec = LabSpec::new(&harness::unique("mft"), vni);
        if !both {
            spec = spec.ingress_only();
        }
        Ok(Self {
            lab: MirrorLab::up(&spec)?,
        })
    }

    pub fn client(&self) -> String {
        self.lab.client()
    }
    pub fn server(&self) -> String {
        self.lab.server()
    }
    pub fn collector(&self) -> String {
        self.lab.collector()
    }

    /// `ip netns exec NS program`.
    pub fn exec(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        netns::exec(ns, program)
    }
}

/// The recording analyzer inside a namespace; its records also go to `DIR/LABEL.jsonl`.
pub struct HttpRecorder {
    pub analyzer: Analyzer,
}

impl HttpRecorder {
    pub fn start(ns: &str, listen: &str, label: &str, dir: &Path) -> Result<Self> {
        let listen: SocketAddr = listen.parse().context("listen address")?;
        let analyzer = Analyzer::start(AnalyzerConfig {
            netns: Some(ns.to_owned()),
            record: Some(dir.join(format!("{label}.jsonl"))),
            label: label.to_owned(),
            ..AnalyzerConfig::new(listen)
        })
        .with_context(|| format!("{label} on {listen} in {ns}"))?;
        Ok(Self { analyzer })
    }

    /// The requests recorded so far.
    pub fn requests(&self) -> Result<Vec<Recorded>> {
        Ok(self.analyzer.records())
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
    let admin: SocketAddr = ADMIN_ADDR.parse()?;
    let listening = netns::wait_tcp_in(&topo.collector(), admin, Duration::from_secs(20));
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
    let admin: SocketAddr = ADMIN_ADDR.parse()?;
    netns::http_get_in(&topo.collector(), admin, "/metrics")
        .map(|(_, body)| body)
        .context("no answer from /metrics")
}

/// The VXLAN datagram counter on the collector's UDP/4789 (kernel-only checks).
pub struct UdpSink {
    pub sink: rebuilder_testkit::udp_sink::UdpSink,
}

impl UdpSink {
    pub fn start(topo: &Topology, _dir: &Path) -> Result<Self> {
        let sink = rebuilder_testkit::udp_sink::UdpSink::start(
            Some(&topo.collector()),
            "0.0.0.0:4789".parse()?,
        )?;
        Ok(Self { sink })
    }

    pub fn counts(&self) -> SinkCounts {
        self.sink.counts()
    }
}

/// A `SocketAddr` from a literal.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address literal")
}
