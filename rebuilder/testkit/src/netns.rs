//! The network-namespace mirror lab: the kernel plays AWS Traffic Mirroring.
//!
//! ```text
//!   PREFIX-cli  client      eth0 10.77.1.10/24 ─┐
//!   PREFIX-srv  web server  eth0 10.77.1.20/24 ─┘  tc mirred (ingress and/or egress of eth0)
//!                           mir0 10.77.2.1/24  ─┐  → vxlan0, vxlan1... (VNI, UDP port, MTU 9001)
//!   PREFIX-col  collector   eth0 10.77.2.2/24  ─┘  rebuilder(s) on UDP/4789..., analyzer on 127.0.0.1
//! ```
//!
//! The mirrored copies leave the server namespace as VXLAN datagrams from 10.77.2.1 (the
//! source ENI's primary IP) to 10.77.2.2 (the load balancer), as AWS delivers them to a
//! target. TX offloads are off on every veth (otherwise the copies carry partial checksums
//! and GSO super-frames); the mirror link has a jumbo MTU.
//!
//! With [`LabSpec::through_gwlb`] a Gateway Load Balancer stands between the mirror and the
//! collector, as when a GWLB endpoint is the mirror target:
//!
//! ```text
//!   PREFIX-srv  mirror source  mir0 10.77.2.1/24 ─┐  VXLAN to the endpoint, 10.77.2.3
//!   PREFIX-gw   GWLB endpoint  eth0 10.77.2.3/24 ─┘  the GWLB node: each VXLAN datagram, as the
//!               GWLB node      eth1 10.77.3.1/24 ─┐  IP packet it is, inside GENEVE with AWS's
//!   PREFIX-col  collector      eth0 10.77.3.2/24 ─┘  options → UDP/6081 of the collector
//! ```
//!
//! The node is user-space code of this kit ([`GwlbNode`], a thread inside PREFIX-gw): it reads
//! the VXLAN datagrams with a raw socket (IP header included), wraps them as a GWLB does
//! (RFC 8926 GENEVE, protocol type IPv4, option class 0x0108: endpoint id, attachment id,
//! flow cookie) and sends them from one of several source ports chosen by the inner flow, as
//! a load balancer spreads flows. Not the kernel's `geneve` device: it cannot add AWS's
//! options without the `tunnel_key` tc action, and kernels built without `CONFIG_GENEVE` (this
//! project's test machines among them) have no such device at all. A UDP socket bound on the
//! endpoint's 4789 keeps the kernel from answering the mirror with ICMP port unreachable.
//!
//! Everything a [`MirrorLab`] creates is removed when it is dropped (also when a test
//! panics): the processes still running in its namespaces are killed, then the namespaces
//! (and with them every veth and VXLAN device) are deleted. [`reap`] removes labs left behind
//! by a process that was killed.
//!
//! [`spawn_in`] and [`run_in`] run Rust code inside a namespace (a thread that joined it with
//! `setns`), so servers and clients of the tests need no helper program.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use rebuilder::engine::encap::geneve::{AwsOptions, GENEVE_PORT, encapsulate_aws_into};
use rebuilder::engine::encap::vxlan::VXLAN_PORT;
use socket2::{Domain, Protocol, Socket, Type};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::system::{self, sh};

/// Addresses of the lab (the same in every lab: each has its own namespaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabAddrs {
    pub client: Ipv4Addr,
    pub server: Ipv4Addr,
    /// The server's address on the mirror link (the outer source of the VXLAN copies).
    pub mirror_src: Ipv4Addr,
    /// The collector's address (the outer destination).
    pub collector: Ipv4Addr,
    /// GWLB mode: the endpoint's address (where the mirror sends its VXLAN).
    pub gwlb_endpoint: Ipv4Addr,
    /// GWLB mode: the node's address (the source of the GENEVE packets).
    pub gwlb_node: Ipv4Addr,
}

/// The lab's addresses.
pub const ADDRS: LabAddrs = LabAddrs {
    client: Ipv4Addr::new(10, 77, 1, 10),
    server: Ipv4Addr::new(10, 77, 1, 20),
    mirror_src: Ipv4Addr::new(10, 77, 2, 1),
    collector: Ipv4Addr::new(10, 77, 2, 2),
    gwlb_endpoint: Ipv4Addr::new(10, 77, 2, 3),
    gwlb_node: Ipv4Addr::new(10, 77, 3, 1),
};

/// The addresses of a lab with a Gateway Load Balancer: the collector sits behind the node.
pub const GWLB_ADDRS: LabAddrs = LabAddrs {
    collector: Ipv4Addr::new(10, 77, 3, 2),
    ..ADDRS
};

/// A direction at the server's client-facing interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → server (tc ingress of the server's eth0).
    Ingress,
    /// Server → client (tc egress).
    Egress,
}

impl Direction {
    fn tc(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// One tc mirred rule: the TCP/IP packets of `direction` (those of clients whose port has
/// parity `client_port_parity`, or all packets) are mirrored to VXLAN device `device` (an
/// index into [`LabSpec::vxlan_ports`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorRule {
    pub direction: Direction,
    pub client_port_parity: Option<u8>,
    pub device: usize,
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// Namespace names are `PREFIX-cli`, `PREFIX-srv`, `PREFIX-col`.
    pub prefix: String,
    /// The VXLAN Network Identifier of every mirror device (the session's VirtualNetworkId).
    pub vni: u32,
    /// One VXLAN device per UDP destination port at the collector.
    pub vxlan_ports: Vec<u16>,
    pub rules: Vec<MirrorRule>,
    /// A Gateway Load Balancer between the mirror and the collector: the endpoint id its
    /// GENEVE options carry (the collector then receives GENEVE on UDP/6081 only).
    pub gwlb_endpoint_id: Option<u64>,
}

impl LabSpec {
    /// Both directions mirrored to UDP/4789 (a session with an accept-all filter).
    pub fn new(prefix: &str, vni: u32) -> LabSpec {
        LabSpec {
            prefix: prefix.to_owned(),
            vni,
            vxlan_ports: vec![4789],
            rules: [Direction::Ingress, Direction::Egress]
                .map(|direction| MirrorRule {
                    direction,
                    client_port_parity: None,
                    device: 0,
                })
                .to_vec(),
            gwlb_endpoint_id: None,
        }
    }

    /// The mirror's target is a GWLB endpoint: the VXLAN datagrams go to a Gateway Load
    /// Balancer node that delivers them to the collector inside GENEVE, with `endpoint_id` in
    /// AWS's option (see the module documentation). Every VXLAN device (`vxlan_ports`) then
    /// sends to the endpoint; the ports still tell the devices apart.
    pub fn through_gwlb(mut self, endpoint_id: u64) -> LabSpec {
        self.gwlb_endpoint_id = Some(endpoint_id);
        self
    }

    /// Only the client → server direction mirrored.
    pub fn ingress_only(mut self) -> LabSpec {
        self.rules.retain(|r| r.direction == Direction::Ingress);
        self
    }
}

/// Why a lab could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("VNI must be 0..=16777215, got {0}")]
    Vni(u32),
    #[error("mirror rule for device {device} but only {devices} VXLAN ports")]
    Device { device: usize, devices: usize },
    #[error("building the lab: {0}")]
    Command(String),
}

/// A built lab (see the module documentation); removed on drop unless [`MirrorLab::keep`].
#[derive(Debug)]
pub struct MirrorLab {
    pub prefix: String,
    pub addrs: LabAddrs,
    /// The Gateway Load Balancer node, in GWLB mode (stopped with the lab; a lab kept with
    /// [`MirrorLab::keep`] loses it when this process exits).
    pub gwlb: Option<GwlbNode>,
    keep: bool,
}

/// `Ok` when this machine can build a lab (root, ip, tc, ethtool, namespaces, VXLAN), else
/// why not.
pub fn check() -> Result<(), String> {
    system::root()?;
    system::tools(&["ip", "tc", "ethtool"])?;
    let probe = system::unique("mfprobe");
    sh("ip", &["netns", "add", &probe])
        .map_err(|e| format!("cannot create a network namespace: {e}"))?;
    let vxlan = sh(
        "ip",
        &[
            "-n",
            &probe,
            "link",
            "add",
            "vxprobe",
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            "127.0.0.1",
            "remote",
            "127.0.0.2",
            "dstport",
            "4789",
            "nolearning",
        ],
    );
    let _ = sh("ip", &["netns", "del", &probe]);
    vxlan
        .map(|_| ())
        .map_err(|e| format!("the kernel has no vxlan support: {e}"))
}

impl MirrorLab {
    /// Builds the lab of `spec` (a lab of the same prefix is removed first).
    pub fn up(spec: &LabSpec) -> Result<MirrorLab, LabError> {
        if spec.vni > 0x00ff_ffff {
            return Err(LabError::Vni(spec.vni));
        }
        if let Some(r) = spec
            .rules
            .iter()
            .find(|r| r.device >= spec.vxlan_ports.len())
        {
            return Err(LabError::Device {
                device: r.device,
                devices: spec.vxlan_ports.len(),
            });
        }
        down(&spec.prefix);
        // From here on a failure removes whatever was built.
        let mut lab = MirrorLab {
            prefix: spec.prefix.clone(),
            addrs: if spec.gwlb_endpoint_id.is_some() {
                GWLB_ADDRS
            } else {
                ADDRS
            },
            gwlb: None,
            keep: false,
        };
        lab.build(spec).map_err(LabError::Command)?;
        if let Some(id) = spec.gwlb_endpoint_id {
            lab.gwlb = Some(
                GwlbNode::start(&lab.gwlb_ns(), lab.addrs, id)
                    .map_err(|e| LabError::Command(format!("starting the GWLB node: {e}")))?,
            );
        }
        Ok(lab)
    }

    fn build(&self, spec: &LabSpec) -> Result<(), String> {
        let (cli, srv, col) = (self.client(), self.server(), self.collector());
        let gw = spec.gwlb_endpoint_id.map(|_| self.gwlb_ns());
        let a = self.addrs;
        for ns in [&cli, &srv, &col].into_iter().chain(gw.as_ref()) {
            sh("ip", &["netns", "add", ns])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        let ip = |ns: &str, args: &[&str]| {
            let mut v = vec!["-n", ns];
            v.extend_from_slice(args);
            sh("ip", &v)
        };
        let exec = |ns: &str, args: &[&str]| {
            let mut v = vec!["netns", "exec", ns];
            v.extend_from_slice(args);
            sh("ip", &v)
        };
        // client <-> server
        sh(
            "ip",
            &[
                "link", "add", "eth0", "netns", &cli, "type", "veth", "peer", "name", "eth0",
                "netns", &srv,
            ],
        )?;
        // server (mirror source) <-> collector (mirror target), jumbo MTU like the AWS path;
        // in GWLB mode server <-> GWLB endpoint/node <-> collector.
        let mut links = vec![
            (&cli, a.client, "eth0"),
            (&srv, a.server, "eth0"),
            (&srv, a.mirror_src, "mir0"),
            (&col, a.collector, "eth0"),
        ];
        let mirror_peer = gw.as_ref().unwrap_or(&col);
        sh(
            "ip",
            &[
                "link",
                "add",
                "mir0",
                "netns",
                &srv,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                mirror_peer,
            ],
        )?;
        ip(&srv, &["link", "set", "mir0", "mtu", "9100"])?;
        ip(mirror_peer, &["link", "set", "eth0", "mtu", "9100"])?;
        if let Some(gw) = &gw {
            sh(
                "ip",
                &[
                    "link", "add", "eth1", "netns", gw, "type", "veth", "peer", "name", "eth0",
                    "netns", &col,
                ],
            )?;
            ip(gw, &["link", "set", "eth1", "mtu", "9100"])?;
            ip(&col, &["link", "set", "eth0", "mtu", "9100"])?;
            links.push((gw, a.gwlb_endpoint, "eth0"));
            links.push((gw, a.gwlb_node, "eth1"));
        }
        for (ns, addr, dev) in links {
            ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            // Without this the mirrored copies carry partial checksums and GSO super-frames.
            exec(
                ns,
                &[
                    "ethtool", "-K", dev, "tx", "off", "gso", "off", "tso", "off", "gro", "off",
                ],
            )?;
            ip(ns, &["link", "set", dev, "up"])?;
        }
        // The mirror: VXLAN devices, and tc mirred from the server's client-facing eth0.
        let vni = spec.vni.to_string();
        let target = if gw.is_some() {
            a.gwlb_endpoint
        } else {
            a.collector
        };
        let (local, remote) = (a.mirror_src.to_string(), target.to_string());
        for (i, port) in spec.vxlan_ports.iter().enumerate() {
            let dev = format!("vxlan{i}");
            ip(
                &srv,
                &[
                    "link",
                    "add",
                    &dev,
                    "type",
                    "vxlan",
                    "id",
                    &vni,
                    "local",
                    &local,
                    "remote",
                    &remote,
                    "dstport",
                    &port.to_string(),
                    "dev",
                    "mir0",
                    "nolearning",
                ],
            )?;
            ip(&srv, &["link", "set", &dev, "mtu", "9001", "up"])?;
        }
        exec(&srv, &["tc", "qdisc", "add", "dev", "eth0", "clsact"])?;
        for (prio, rule) in spec.rules.iter().enumerate() {
            let prio = (prio + 1).to_string();
            let dev = format!("vxlan{}", rule.device);
            let mut args = vec![
                "tc",
                "filter",
                "add",
                "dev",
                "eth0",
                rule.direction.tc(),
                "protocol",
            ];
            let parity;
            let port_field = match rule.direction {
                // Ingress packets come from the client (its port is the source port), egress
                // packets go to it (destination port).
                Direction::Ingress => "sport",
                Direction::Egress => "dport",
            };
            match rule.client_port_parity {
                None => args.extend(["all", "prio", &prio, "u32", "match", "u32", "0", "0"]),
                Some(p) => {
                    parity = (p % 2).to_string();
                    args.extend([
                        "ip", "prio", &prio, "u32", "match", "ip", "protocol", "6", "0xff",
                        "match", "ip", port_field, &parity, "0x0001",
                    ]);
                }
            }
            args.extend(["action", "mirred", "egress", "mirror", "dev", &dev]);
            exec(&srv, &args)?;
        }
        Ok(())
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
    /// The namespace of the GWLB endpoint and node (GWLB mode).
    pub fn gwlb_ns(&self) -> String {
        format!("{}-gw", self.prefix)
    }

    /// Leaves the lab in place when this value is dropped (`mirror-lab up`); returns its
    /// prefix, for [`down`].
    pub fn keep(mut self) -> String {
        self.keep = true;
        self.prefix.clone()
    }
}

impl Drop for MirrorLab {
    fn drop(&mut self) {
        if !self.keep {
            // The node's thread leaves its namespace before the namespace is deleted.
            drop(self.gwlb.take());
            down(&self.prefix);
        }
    }
}

/// The Gateway Load Balancer node of a GWLB-mode lab (see the module documentation): a thread
/// in the lab's `-gw` namespace. Stops when dropped.
#[derive(Debug)]
pub struct GwlbNode {
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    /// Joined on drop; its result (the namespace could not be entered, the loop failed) is
    /// only of interest to a debugger.
    thread: Option<JoinHandle<std::io::Result<std::io::Result<()>>>>,
}

/// Source ports the node spreads flows over (a GWLB keeps each flow on one).
const GWLB_NODE_PORTS: usize = 8;

impl GwlbNode {
    /// Starts the node in namespace `ns` of a lab with addresses `a`, putting `endpoint_id` in
    /// AWS's option.
    pub fn start(ns: &str, a: LabAddrs, endpoint_id: u64) -> std::io::Result<GwlbNode> {
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (s, f) = (stop.clone(), forwarded.clone());
        let thread = spawn_in(Some(ns), "gwlb-node", move || {
            gwlb_node(a, endpoint_id, &s, &f, ready_tx)
        })?;
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                stop.store(true, Relaxed);
                let result = thread.join();
                return Err(std::io::Error::other(format!(
                    "the GWLB node did not start: {result:?}"
                )));
            }
        }
        Ok(GwlbNode {
            stop,
            forwarded,
            thread: Some(thread),
        })
    }

    /// VXLAN datagrams delivered to the collector inside GENEVE so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Relaxed)
    }
}

impl Drop for GwlbNode {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The node's loop (inside its namespace): every IPv4 UDP packet to the endpoint's UDP/4789 is
/// sent on, whole, inside GENEVE to the collector's UDP/6081.
fn gwlb_node(
    a: LabAddrs,
    endpoint_id: u64,
    stop: &AtomicBool,
    forwarded: &AtomicU64,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
) -> std::io::Result<()> {
    let setup = || -> std::io::Result<(UdpSocket, UdpSocket, Vec<UdpSocket>)> {
        // A raw UDP socket gets a copy of every UDP packet delivered here, IP header included.
        let raw: UdpSocket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))?.into();
        raw.set_read_timeout(Some(Duration::from_millis(50)))?;
        // Bound so that the kernel does not answer the mirror with ICMP port unreachable.
        let sink = UdpSocket::bind(SocketAddrV4::new(a.gwlb_endpoint, VXLAN_PORT))?;
        sink.set_nonblocking(true)?;
        let out = (0..GWLB_NODE_PORTS)
            .map(|_| UdpSocket::bind(SocketAddrV4::new(a.gwlb_node, 0)))
            .collect::<std::io::Result<_>>()?;
        Ok((raw, sink, out))
    };
    let (raw, sink, out) = match setup() {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(std::io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
    };
    let collector = SocketAddrV4::new(a.collector, GENEVE_PORT);
    let mut buf = vec![0u8; 65_536];
    let mut scratch = [0u8; 9_216];
    let mut geneve = Vec::with_capacity(9_300);
    while !stop.load(Relaxed) {
        while sink.recv(&mut scratch).is_ok() {}
        let n = match raw.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let packet = &buf[..n];
        let Some(sport) = vxlan_to(packet, a.gwlb_endpoint) else {
            continue;
        };
        let aws = AwsOptions {
            endpoint_id: Some(endpoint_id),
            attachment_id: Some(endpoint_id ^ 0x00a7_7ac4),
            flow_cookie: Some(u32::from(sport).wrapping_mul(0x9e37_79b9)),
        };
        geneve.clear();
        encapsulate_aws_into(&aws, packet, &mut geneve);
        if out[usize::from(sport) % out.len()]
            .send_to(&geneve, collector)
            .is_ok()
        {
            forwarded.fetch_add(1, Relaxed);
        }
    }
    Ok(())
}

/// The UDP source port of `packet` if it is a whole IPv4 UDP packet to `endpoint`:4789.
fn vxlan_to(packet: &[u8], endpoint: Ipv4Addr) -> Option<u16> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    let udp = packet.get(ihl..ihl + 8)?;
    let to_endpoint = packet.get(16..20)? == endpoint.octets();
    (packet[0] >> 4 == 4
        && packet[9] == 17
        && total == packet.len()
        && to_endpoint
        && u16::from_be_bytes([udp[2], udp[3]]) == VXLAN_PORT)
        .then(|| u16::from_be_bytes([udp[0], udp[1]]))
}

/// `ip netns exec NS program`.
pub fn exec(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

fn namespaces() -> Vec<String> {
    sh("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Removes the lab `prefix`: kills what still runs in its namespaces (it would keep their
/// sockets alive), then deletes them. Quiet when there is nothing to remove.
pub fn down(prefix: &str) {
    let existing = namespaces();
    for ns in ["cli", "srv", "col", "gw"].map(|s| format!("{prefix}-{s}")) {
        if !existing.contains(&ns) {
            continue;
        }
        for signal in [Signal::SIGTERM, Signal::SIGKILL] {
            let pids = sh("ip", &["netns", "pids", &ns]).unwrap_or_default();
            let pids: Vec<i32> = pids
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = sh("ip", &["netns", "del", &ns]);
    }
}

/// Removes the labs named `BASE<pid>...` whose process is gone (left by a run that was
/// killed); returns their prefixes.
pub fn reap(base: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for ns in namespaces() {
        let Some(rest) = ns.strip_prefix(base) else {
            continue;
        };
        let Some(prefix_end) = ns.rfind('-') else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let prefix = ns[..prefix_end].to_owned();
        if !removed.contains(&prefix) {
            down(&prefix);
            removed.push(prefix);
        }
    }
    removed
}

/// Joins network namespace `ns` (this thread only).
fn enter(ns: &str) -> std::io::Result<()> {
    let f = File::open(format!("/run/netns/{ns}"))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Runs `f` on a thread of its own inside namespace `ns` (`None`: this one) and returns its
/// handle. Sockets it creates live in that namespace.
pub fn spawn_in<T: Send + 'static>(
    ns: Option<&str>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<std::io::Result<T>>> {
    let ns = ns.map(str::to_owned);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Some(ns) = ns {
                enter(&ns)?;
            }
            Ok(f())
        })
}

/// Runs `f` inside namespace `ns` and returns what it returned.
pub fn run_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    spawn_in(Some(ns), "netns", f)?
        .join()
        .map_err(|_| std::io::Error::other("the thread in the namespace panicked"))?
}

/// Waits until `addr` accepts TCP connections, seen from inside `ns`.
pub fn wait_tcp_in(ns: &str, addr: SocketAddr, timeout: Duration) -> bool {
    system::wait_until(timeout, || {
        run_in(ns, move || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
        })
        .unwrap_or(false)
    })
}

/// A request body of `len` bytes (`a` to `z` over and over) written to `dir/upload.bin`:
/// the body and the `curl --data-binary` argument that sends that file.
pub fn upload_body(dir: &std::path::Path, len: u32) -> (Vec<u8>, String) {
    let body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    let path = dir.join("upload.bin");
    std::fs::write(&path, &body).unwrap();
    (body, format!("@{}", path.display()))
}

/// `curl -sS -o /dev/null --max-time 10 ARGS...` inside namespace `ns` (20 s at most);
/// panics when curl fails.
pub fn curl_in(ns: &str, args: &[&str]) {
    let mut cmd = exec(ns, "curl");
    cmd.args(["-sS", "-o", "/dev/null", "--max-time", "10"])
        .args(args);
    system::run_ok(cmd, Duration::from_secs(20)).expect("curl");
}

/// `GET path` from `addr`, seen from inside `ns`.
pub fn http_get_in(ns: &str, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let path = path.to_owned();
    run_in(ns, move || crate::metrics::http_get(addr, &path))
        .ok()
        .flatten()
}

/// Waits (10 s at most) until the `/healthz` of the rebuilder `proc` (admin address `admin`
/// in namespace `ns`) answers 200; panics with its log tail otherwise.
pub fn wait_healthy_in(ns: &str, admin: SocketAddr, proc: &crate::system::Proc) {
    let health = || http_get_in(ns, admin, "/healthz").map_or(0, |(s, _)| s);
    assert!(
        crate::system::wait_until(Duration::from_secs(10), || health() == 200),
        "/healthz of the collector: {}\n{}",
        health(),
        proc.log_tail(20)
    );
}
