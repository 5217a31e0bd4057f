//! Helpers shared by the daemon's integration tests: a recording HTTP sink (the analyzer), a
//! `rebuilder run` process guard with metric scraping, VXLAN payloads from the synthetic
//! capture generator, and the system-prerequisite policy.
#![allow(dead_code)]

pub mod netns;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Prerequisite policy: with `MIRRORFLEET_REQUIRE_SYSTEM=1` a missing prerequisite fails the
/// test; otherwise the caller returns (skips) after the reason is printed.
pub fn skip_or_fail(reason: &str) {
    if std::env::var("MIRRORFLEET_REQUIRE_SYSTEM").as_deref() == Ok("1") {
        panic!("prerequisite missing (MIRRORFLEET_REQUIRE_SYSTEM=1): {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// A request as the sink received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    /// In order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A local HTTP server standing in for the analyzer: counts (and optionally records) every
/// request, can be slowed down, stopped (connections closed) and restarted on the same port.
pub struct Sink {
    pub addr: SocketAddr,
    pub count: Arc<AtomicU64>,
    pub records: Arc<Mutex<Vec<Recorded>>>,
    pub delay_ms: Arc<AtomicU64>,
    record: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    /// Binds 127.0.0.1:0 (or `addr`) and serves in a thread of its own.
    pub fn start(addr: Option<SocketAddr>, record: bool) -> Sink {
        let addr = addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let listener = std::net::TcpListener::bind(addr).expect("sink binds");
        let addr = listener.local_addr().unwrap();
        let mut s = Sink {
            addr,
            count: Arc::new(AtomicU64::new(0)),
            records: Arc::new(Mutex::new(Vec::new())),
            delay_ms: Arc::new(AtomicU64::new(0)),
            record,
            stop: None,
            thread: None,
        };
        s.serve(listener);
        s
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let count = self.count.clone();
        let records = self.records.clone();
        let delay = self.delay_ms.clone();
        let record = self.record;
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        acc = listener.accept() => {
                            let Ok((stream, _)) = acc else { continue };
                            let count = count.clone();
                            let records = records.clone();
                            let delay = delay.clone();
                            conns.spawn(async move {
                                let svc = service_fn(move |req: Request<Incoming>| {
                                    let count = count.clone();
                                    let records = records.clone();
                                    let delay = delay.clone();
                                    async move {
                                        let method = req.method().to_string();
                                        let target = req
                                            .uri()
                                            .path_and_query()
                                            .map(|p| p.to_string())
                                            .unwrap_or_default();
                                        let headers: Vec<(String, String)> = req
                                            .headers()
                                            .iter()
                                            .map(|(n, v)| {
                                                (
                                                    n.as_str().to_string(),
                                                    String::from_utf8_lossy(v.as_bytes()).into(),
                                                )
                                            })
                                            .collect();
                                        let body = req
                                            .into_body()
                                            .collect()
                                            .await
                                            .map(|b| b.to_bytes().to_vec())
                                            .unwrap_or_default();
                                        let d = delay.load(SeqCst);
                                        if d > 0 {
                                            tokio::time::sleep(Duration::from_millis(d)).await;
                                        }
                                        if record {
                                            records.lock().unwrap().push(Recorded {
                                                method,
                                                target,
                                                headers,
                                                body,
                                            });
                                        }
                                        count.fetch_add(1, SeqCst);
                                        Ok::<_, std::convert::Infallible>(Response::new(
                                            Full::new(Bytes::from_static(b"ok")),
                                        ))
                                    }
                                });
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    }
                }
                conns.abort_all();
            });
        });
        self.stop = Some(tx);
        self.thread = Some(thread);
    }

    /// Stops listening and closes every connection (the upstream goes down).
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("sink cannot rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    pub fn received(&self) -> u64 {
        self.count.load(SeqCst)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP or UDP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = t.local_addr().unwrap().port();
    // Make sure the UDP port is free as well.
    if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
        p
    } else {
        free_port()
    }
}

/// A `rebuilder run` child process, killed on drop.
pub struct RebuilderProc {
    pub child: Child,
    pub admin: SocketAddr,
    pub udp: SocketAddr,
}

impl RebuilderProc {
    /// Starts the binary on loopback with the given extra arguments; waits for /healthz to answer.
    pub fn start(upstream: &str, extra: &[&str]) -> RebuilderProc {
        let udp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rebuilder"))
            .arg("run")
            .args(extra)
            // Configuration through the environment, as the systemd unit does.
            .env("REBUILDER_LISTEN", udp.to_string())
            .env("REBUILDER_ADMIN", admin.to_string())
            .env("REBUILDER_UPSTREAM", upstream)
            .env("REBUILDER_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("rebuilder starts");
        let p = RebuilderProc { child, admin, udp };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(p.admin, "/healthz").is_none() {
            assert!(Instant::now() < deadline, "admin listener never came up");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn metrics(&self) -> Metrics {
        let (_, body) = http_get(self.admin, "/metrics").expect("metrics answer");
        Metrics::parse(&body)
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
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        let hz = 100; // USER_HZ on Linux
        ticks * 1_000_000 / hz
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
            let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            let ticks: u64 = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
            *out.entry(group).or_insert(0) += ticks * 10_000;
        }
        out
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
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

/// A scrape of /metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub values: HashMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let values = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect();
        Metrics {
            text: text.to_string(),
            values,
        }
    }
    /// Value of a series (exact text, labels included); 0 when absent.
    pub fn get(&self, series: &str) -> u64 {
        self.values.get(series).copied().unwrap_or(0.0) as u64
    }
    pub fn dropped(&self, reason: &str) -> u64 {
        self.get(&format!(
            "rebuilder_requests_dropped_total{{reason=\"{reason}\"}}"
        ))
    }
    pub fn forwarded(&self) -> u64 {
        ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .map(|c| {
                self.get(&format!(
                    "rebuilder_requests_forwarded_total{{status=\"{c}\"}}"
                ))
            })
            .sum()
    }
    pub fn decode_drops(&self, reason: &str) -> u64 {
        self.get(&format!(
            "rebuilder_decode_drops_total{{reason=\"{reason}\"}}"
        ))
    }
    pub fn upstream_errors(&self, class: &str) -> u64 {
        self.get(&format!(
            "rebuilder_upstream_errors_total{{class=\"{class}\"}}"
        ))
    }
}

/// Minimal HTTP/1.0 GET: (status, body), `None` when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

/// The VXLAN payload (UDP payload) of an outer Ethernet/IP/UDP frame, with the outer UDP
/// source port.
pub fn vxlan_payload(frame: &[u8]) -> Option<(u16, &[u8])> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    match p.transport? {
        etherparse::TransportSlice::Udp(u) => Some((u.source_port(), u.payload())),
        _ => None,
    }
}

/// Sends datagrams through a set of sender sockets (chosen by outer source port, as the mirror
/// spreads flows), pacing to `pps` (0 = as fast as possible).
pub struct Sender {
    socks: Vec<UdpSocket>,
    to: SocketAddr,
}

impl Sender {
    pub fn new(to: SocketAddr, sockets: usize) -> Sender {
        let socks = (0..sockets.max(1))
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        Sender { socks, to }
    }

    pub fn send(&self, sport: u16, payload: &[u8]) {
        let s = &self.socks[sport as usize % self.socks.len()];
        // Loopback UDP can report ENOBUFS under pressure; retry a little.
        for _ in 0..100 {
            match s.send_to(payload, self.to) {
                Ok(_) => return,
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }
}

/// Synthetic clean traffic: `connections` keep-alive connections, requests only in the
/// client->server direction that matter, responses and ACKs included.
pub fn synth_payloads(
    seed: u64,
    connections: usize,
    max_body: usize,
) -> (Vec<(u16, Vec<u8>)>, usize) {
    let cfg = rebuilder::offline::synth::SynthConfig {
        seed,
        connections,
        concurrency: 16,
        min_body: 16,
        max_body,
        ..Default::default()
    };
    let (frames, truth) = rebuilder::offline::synth::generate(cfg);
    let expected = truth.iter().filter(|t| t.expected).count();
    let payloads = frames
        .iter()
        .filter_map(|f| vxlan_payload(&f.data).map(|(p, d)| (p, d.to_vec())))
        .collect();
    (payloads, expected)
}

/// Paces `total` items at `pps` per second (call `wait(i)` before item i).
pub struct Pacer {
    start: Instant,
    pps: u64,
}

impl Pacer {
    pub fn new(pps: u64) -> Pacer {
        Pacer {
            start: Instant::now(),
            pps,
        }
    }
    pub fn wait(&self, i: u64) {
        if self.pps == 0 {
            return;
        }
        let due = Duration::from_nanos(i * 1_000_000_000 / self.pps);
        let el = self.start.elapsed();
        if due > el + Duration::from_micros(200) {
            std::thread::sleep(due - el);
        }
    }
}

/// Runs `ok` until it is true or `within` passes.
pub fn wait_until(within: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
