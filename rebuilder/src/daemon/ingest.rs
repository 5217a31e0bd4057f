//! UDP ingest: one worker thread per core, each with its own `SO_REUSEPORT` sockets (one per
//! listen address: VXLAN `--listen`, GENEVE `--geneve-listen`) and its own [`Engine`]. Nothing
//! is shared on the hot path: a worker receives batches with `recvmmsg` (each datagram with its
//! source address, which the engine checks against `--allow-from` before parsing), feeds the
//! engine, hands extracted requests to the forwarding queue without waiting, runs the engine
//! timers between batches and publishes its counters every tick.
//!
//! Liveness: each worker counts itself alive in the telemetry from its start until its thread
//! ends (a guard, so a panic counts too); a worker that is gone makes `/healthz` 503. `rebuilder
//! run` goes further and aborts the whole process on a panic (see [`crate::daemon`]).
//!
//! Nothing is ever sent from these sockets. Being bound is also what keeps the kernel from
//! answering each mirrored datagram with an ICMP port unreachable.

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};

use crate::daemon::forward::ForwardQueue;
use crate::daemon::telemetry::workers::SourceQueueDrops;
use crate::daemon::telemetry::{RequestDropReason, Telemetry, WorkerCounters};
use crate::dedup::Dedup;
use crate::engine::encap::Encap;
use crate::engine::request::HttpRequest;
use crate::engine::{Engine, EngineConfig};
use crate::sources::SourcesReader;

/// Errors while setting up the sockets.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no UDP listen address could be bound")]
    NothingBound,
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
}

/// Receive settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// VXLAN addresses.
    pub listen: Vec<SocketAddr>,
    /// GENEVE addresses.
    pub geneve_listen: Vec<SocketAddr>,
    pub workers: usize,
    pub rcvbuf_bytes: usize,
    pub batch: usize,
    pub max_datagram: usize,
    pub timer_interval: Duration,
    /// Pause after a partial batch (0 = none).
    pub coalesce: Duration,
    pub engine: EngineConfig,
}

impl IngestConfig {
    pub fn from_args(a: &crate::daemon::config::RunArgs) -> IngestConfig {
        IngestConfig {
            listen: a.listen.clone(),
            geneve_listen: a.geneve_listen.clone(),
            workers: a.worker_count(),
            rcvbuf_bytes: a.rcvbuf_bytes,
            batch: a.recv_batch as usize,
            max_datagram: a.max_datagram_bytes as usize,
            timer_interval: a.timer_interval(),
            coalesce: Duration::from_micros(a.recv_coalesce_us),
            engine: a.engine_config(),
        }
    }
}

/// The sockets of every worker, bound.
pub struct BoundSockets {
    /// `per_worker[w]` = one socket per bound listen address, with its encapsulation.
    per_worker: Vec<Vec<(Encap, Socket)>>,
    /// The addresses actually bound (port 0 resolved), with their encapsulation.
    pub local_addrs: Vec<(Encap, SocketAddr)>,
    /// The smallest receive buffer the kernel granted one of the sockets, bytes.
    pub rcvbuf_bytes: usize,
}

impl BoundSockets {
    /// Inode numbers of every socket (to find their kernel drop counters in /proc/net/udp).
    pub fn inodes(&self) -> Vec<u64> {
        use std::os::unix::fs::MetadataExt;
        self.per_worker
            .iter()
            .flatten()
            .filter_map(|(_, s)| std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd())).ok())
            .map(|m| m.ino())
            .collect()
    }

    /// The bound addresses of one encapsulation.
    pub fn addrs(&self, encap: Encap) -> Vec<SocketAddr> {
        self.local_addrs
            .iter()
            .filter(|(e, _)| *e == encap)
            .map(|(_, a)| *a)
            .collect()
    }
}

/// Binds every listen address (VXLAN, then GENEVE) once per worker with `SO_REUSEPORT`. An
/// address whose port is 0 gets a port from the kernel for the first worker; the others bind
/// the same port. An IPv6 address that cannot be bound is skipped when its list has another.
pub fn bind(cfg: &IngestConfig) -> Result<BoundSockets, IngestError> {
    let workers = cfg.workers.max(1);
    let mut bound = BoundSockets {
        per_worker: (0..workers).map(|_| Vec::new()).collect(),
        local_addrs: Vec::new(),
        rcvbuf_bytes: usize::MAX,
    };
    for (encap, list) in [
        (Encap::Vxlan, &cfg.listen),
        (Encap::Geneve, &cfg.geneve_listen),
    ] {
        for &addr in list {
            let (first, granted) = match open_socket(addr, cfg.rcvbuf_bytes) {
                Ok(s) => s,
                Err(e) if addr.is_ipv6() && ipv6_unavailable(&e) && list.len() > 1 => {
                    tracing::warn!(%addr, error = %e, "IPv6 listen address skipped");
                    continue;
                }
                Err(source) => return Err(IngestError::Bind { addr, source }),
            };
            let local = first
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .unwrap_or(addr);
            bound.rcvbuf_bytes = bound.rcvbuf_bytes.min(granted);
            bound.per_worker[0].push((encap, first));
            for sockets in bound.per_worker.iter_mut().skip(1) {
                let (s, granted) =
                    open_socket(local, cfg.rcvbuf_bytes).map_err(|source| IngestError::Bind {
                        addr: local,
                        source,
                    })?;
                bound.rcvbuf_bytes = bound.rcvbuf_bytes.min(granted);
                sockets.push((encap, s));
            }
            bound.local_addrs.push((encap, local));
        }
    }
    if bound.local_addrs.is_empty() {
        return Err(IngestError::NothingBound);
    }
    Ok(bound)
}

fn ipv6_unavailable(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::EAFNOSUPPORT | libc_errno::EADDRNOTAVAIL | libc_errno::EPROTONOSUPPORT)
    )
}

/// errno values used above (Linux).
mod libc_errno {
    pub const EAFNOSUPPORT: i32 = nix::errno::Errno::EAFNOSUPPORT as i32;
    pub const EADDRNOTAVAIL: i32 = nix::errno::Errno::EADDRNOTAVAIL as i32;
    pub const EPROTONOSUPPORT: i32 = nix::errno::Errno::EPROTONOSUPPORT as i32;
}

/// A bound non-blocking socket, and the receive buffer it got.
fn open_socket(addr: SocketAddr, rcvbuf: usize) -> std::io::Result<(Socket, usize)> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    let granted = set_receive_buffer(&s, rcvbuf, addr);
    s.bind(&addr.into())?;
    Ok((s, granted))
}

/// Asks for `want` bytes of receive buffer with SO_RCVBUF, which the kernel caps at
/// net.core.rmem_max ("the maximum allowed value is set by the /proc/sys/net/core/rmem_max
/// file", socket(7); install.sh raises it, so the unit needs no capability). Only when that
/// gives less is SO_RCVBUFFORCE tried: it passes the cap but needs CAP_NET_ADMIN, so it is
/// expected to fail under the systemd unit. Warns with the size in force when it is smaller
/// than asked; returns it.
fn set_receive_buffer(s: &Socket, want: usize, addr: SocketAddr) -> usize {
    let _ = s.set_recv_buffer_size(want);
    // Linux reports twice the size set (bookkeeping overhead included).
    let effective = |s: &Socket| s.recv_buffer_size().unwrap_or(0) / 2;
    let mut granted = effective(s);
    let mut forced = false;
    if granted < want {
        forced = setsockopt(s, sockopt::RcvBufForce, &want).is_ok();
        granted = effective(s);
    }
    if granted < want {
        let rmem_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        tracing::warn!(
            %addr,
            requested = want,
            effective = granted,
            ?rmem_max,
            "receive buffer smaller than requested: raise net.core.rmem_max to at least the \
             requested size (install.sh does); datagrams may be dropped under load \
             (rebuilder_kernel_drops_total)"
        );
    } else {
        tracing::debug!(%addr, effective = granted, forced, "receive buffer set");
    }
    granted
}

/// Running workers.
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Workers {
    /// Stops receiving: every worker leaves its loop within one timer interval, flushes its
    /// engine into the queue and exits. Blocks until they are gone.
    pub fn stop_and_join(self) {
        self.stop.store(true, Relaxed);
        for h in self.handles {
            if h.join().is_err() {
                tracing::error!("a receive worker panicked");
            }
        }
    }
}

/// Starts one thread per worker. Each takes a clone of the queue handle.
pub fn spawn(
    sockets: BoundSockets,
    cfg: &IngestConfig,
    queue: ForwardQueue,
    telemetry: Arc<Telemetry>,
    shared: WorkersShared,
) -> Result<Workers, IngestError> {
    let stop = Arc::new(AtomicBool::new(false));
    let total: usize = sockets.per_worker.iter().map(Vec::len).sum();
    telemetry.set_sockets_bound(total as u64);
    telemetry.set_socket_inodes(sockets.inodes());
    telemetry.set_rcvbuf_bytes(sockets.rcvbuf_bytes as u64);
    telemetry.set_workers_expected(sockets.per_worker.len() as u64);
    let mut handles = Vec::new();
    for (id, socks) in sockets.per_worker.into_iter().enumerate() {
        // Counted alive before the thread runs (so /healthz never sees it missing at start);
        // the guard, moved into the thread, counts it gone when the thread ends, however.
        let alive = WorkerAlive::new(telemetry.clone());
        let w = Worker {
            id,
            socks,
            cfg: cfg.clone(),
            queue: queue.clone(),
            telemetry: telemetry.clone(),
            stop: stop.clone(),
            shared: shared.clone(),
        };
        let h = std::thread::Builder::new()
            .name(format!("rx-{id}"))
            .spawn(move || {
                let _alive = alive;
                w.run()
            })
            .map_err(IngestError::Thread)?;
        handles.push(h);
    }
    Ok(Workers { handles, stop })
}

/// A receive worker counted alive in the telemetry until this is dropped (its thread ends,
/// normally or by a panic).
pub struct WorkerAlive(Arc<Telemetry>);

impl WorkerAlive {
    pub fn new(telemetry: Arc<Telemetry>) -> WorkerAlive {
        telemetry.worker_started();
        WorkerAlive(telemetry)
    }
}

impl Drop for WorkerAlive {
    fn drop(&mut self) {
        self.0.worker_stopped();
    }
}

/// Test hook, debug builds only: `REBUILDER_DEBUG_PANIC_AFTER_DATAGRAMS=N` makes receive worker
/// 0 panic when it has received N datagrams, so that tests can check what a dying worker does
/// to the process. Release builds (what is deployed) do not have it.
#[cfg(debug_assertions)]
fn debug_panic_after() -> Option<u64> {
    std::env::var("REBUILDER_DEBUG_PANIC_AFTER_DATAGRAMS")
        .ok()?
        .parse()
        .ok()
}

struct Worker {
    id: usize,
    socks: Vec<(Encap, Socket)>,
    cfg: IngestConfig,
    queue: ForwardQueue,
    telemetry: Arc<Telemetry>,
    stop: Arc<AtomicBool>,
    shared: WorkersShared,
}

/// What every receive worker shares beyond the queue.
#[derive(Debug, Clone)]
pub struct WorkersShared {
    /// The source map (whether a request's source is a load balancer, for `dedup`).
    pub sources: SourcesReader,
    /// The duplicate-mirroring filter (`--dedup`), one for all workers so that the two
    /// copies of a request find each other whichever worker rebuilt each.
    pub dedup: Option<Arc<Mutex<Dedup>>>,
}

impl WorkersShared {
    /// Passes the requests of `out` through the duplicate filter (when on) at `now`, leaving
    /// in `out` what may go to the queue now. `flush`: everything held goes too.
    fn filter(&mut self, out: &mut Vec<HttpRequest>, now: u64, flush: bool) {
        let Some(dedup) = &self.dedup else {
            return;
        };
        let mut d = dedup.lock().unwrap_or_else(|e| e.into_inner());
        let map = self.sources.map();
        let mut ready = Vec::with_capacity(out.len());
        for r in out.drain(..) {
            let lb = map.is_load_balancer(&r.source_key());
            d.push(r, lb, now, &mut ready);
        }
        if flush {
            d.flush(&mut ready);
        } else {
            d.expire(now, &mut ready);
        }
        *out = ready;
    }
}

/// One received datagram in the batch buffer.
#[derive(Debug, Clone, Copy)]
struct Rx {
    len: usize,
    truncated: bool,
    /// Its source address (unspecified if the kernel gave none, which UDP always does).
    src: IpAddr,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Worker {
    fn run(self) {
        let Worker {
            id,
            socks,
            cfg,
            queue,
            telemetry,
            stop,
            mut shared,
        } = self;
        let slot = telemetry.worker(id);
        // Counts this worker's sockets out of /healthz when it stops, panics included.
        let _bound = SocketsBound {
            telemetry: &telemetry,
            n: socks.len() as u64,
        };
        let mut engine = Engine::new(cfg.engine.clone());
        let batch = cfg.batch.max(1);
        let max = cfg.max_datagram.max(64);
        let mut bufs = vec![0u8; batch * max];
        let mut headers: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(batch, None);
        let mut rx: Vec<Rx> = Vec::with_capacity(batch);
        let mut out: Vec<HttpRequest> = Vec::new();
        let mut c = WorkerCounters {
            source_queue_drops: SourceQueueDrops::new(cfg.engine.max_source_keys),
            ..WorkerCounters::default()
        };
        let mut next_tick = Instant::now() + cfg.timer_interval;
        #[cfg(debug_assertions)]
        let panic_after = debug_panic_after().filter(|_| id == 0);

        tracing::debug!(worker = id, sockets = socks.len(), "receive worker started");
        while !stop.load(Relaxed) {
            let mut received_any = false;
            let mut any_full = false;
            for &(encap, ref sock) in &socks {
                // A bounded number of batches per socket, so timers and other sockets get a turn.
                for _ in 0..16 {
                    let n = match recv_batch(sock, &mut headers, &mut bufs, max, batch, &mut rx) {
                        Ok(n) => n,
                        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => 0,
                        Err(e) => {
                            c.recv_errors += 1;
                            tracing::debug!(worker = id, error = %e, "recvmmsg failed");
                            0
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    received_any = true;
                    let ts = now_us();
                    for (i, m) in rx.iter().enumerate() {
                        if m.truncated {
                            c.oversize += 1;
                            continue;
                        }
                        c.datagrams += 1;
                        c.bytes += m.len as u64;
                        let payload = &bufs[i * max..i * max + m.len];
                        engine.on_datagram(ts, encap, m.src, payload, &mut out);
                    }
                    #[cfg(debug_assertions)]
                    if panic_after.is_some_and(|n| c.datagrams >= n) {
                        panic!(
                            "REBUILDER_DEBUG_PANIC_AFTER_DATAGRAMS reached (debug-build test hook)"
                        );
                    }
                    if !out.is_empty() {
                        shared.filter(&mut out, ts, false);
                    }
                    submit(&queue, &telemetry, &mut out, &mut c);
                    if n < batch {
                        break;
                    }
                    any_full = true;
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                let now_wall = now_us();
                engine.on_timer(now_wall, &mut out);
                shared.filter(&mut out, now_wall, false);
                submit(&queue, &telemetry, &mut out, &mut c);
                slot.publish(&c, engine.stats(), engine.active_flows());
                next_tick = now + cfg.timer_interval;
            }
            if received_any && !any_full && !cfg.coalesce.is_zero() {
                // The sockets are drained and traffic is light: let datagrams accumulate for a
                // moment so the next recvmmsg returns a batch instead of one datagram per wakeup.
                std::thread::sleep(cfg.coalesce);
            } else if !received_any {
                let wait = next_tick
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100));
                let mut fds: Vec<PollFd<'_>> = socks
                    .iter()
                    .map(|(_, s)| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                    .collect();
                let timeout = PollTimeout::try_from(wait.as_millis().max(1) as u64)
                    .unwrap_or(PollTimeout::MAX);
                let _ = nix::poll::poll(&mut fds, timeout);
            }
        }
        engine.finish(&mut out);
        shared.filter(&mut out, now_us(), true);
        submit(&queue, &telemetry, &mut out, &mut c);
        slot.publish(&c, engine.stats(), engine.active_flows());
        tracing::debug!(worker = id, "receive worker stopped");
    }
}

/// Removes a worker's sockets from the bound count when dropped.
struct SocketsBound<'a> {
    telemetry: &'a Telemetry,
    n: u64,
}

impl Drop for SocketsBound<'_> {
    fn drop(&mut self) {
        self.telemetry.sockets_closed(self.n);
    }
}

/// Hands every extracted request to the queue; a refused one is counted, never waited on.
fn submit(
    queue: &ForwardQueue,
    telemetry: &Telemetry,
    out: &mut Vec<HttpRequest>,
    c: &mut WorkerCounters,
) {
    for req in out.drain(..) {
        c.extracted += 1;
        let key = req.source_key();
        match queue.try_submit(req) {
            Ok(()) => {}
            Err(RequestDropReason::QueueBytes) => {
                c.queue_bytes += 1;
                c.source_queue_drops.count(key, true);
            }
            Err(RequestDropReason::QueueFull) => {
                c.queue_full += 1;
                c.source_queue_drops.count(key, false);
            }
            Err(other) => telemetry.request_dropped(other),
        }
    }
}

/// One `recvmmsg` call (non-blocking) into `bufs`, `max` bytes per datagram, with each
/// datagram's source address.
fn recv_batch(
    sock: &Socket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &mut [u8],
    max: usize,
    batch: usize,
    rx: &mut Vec<Rx>,
) -> nix::Result<usize> {
    rx.clear();
    let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
        .chunks_exact_mut(max)
        .take(batch)
        .map(|b| [IoSliceMut::new(b)])
        .collect();
    let msgs = recvmmsg(
        sock.as_raw_fd(),
        headers,
        iovs.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    for m in msgs {
        rx.push(Rx {
            len: m.bytes,
            truncated: m.flags.contains(MsgFlags::MSG_TRUNC),
            src: m.address.as_ref().map_or(UNKNOWN_SOURCE, source_ip),
        });
    }
    Ok(rx.len())
}

/// What an unknown source is checked as (never inside a real allow-list block).
const UNKNOWN_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

fn source_ip(a: &SockaddrStorage) -> IpAddr {
    if let Some(v4) = a.as_sockaddr_in() {
        IpAddr::V4(v4.ip())
    } else if let Some(v6) = a.as_sockaddr_in6() {
        IpAddr::V6(v6.ip())
    } else {
        UNKNOWN_SOURCE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn cfg(listen: &str, workers: usize) -> IngestConfig {
        IngestConfig {
            listen: listen.split(',').map(|a| a.parse().unwrap()).collect(),
            geneve_listen: Vec::new(),
            workers,
            rcvbuf_bytes: 1 << 20,
            batch: 8,
            max_datagram: 2048,
            timer_interval: Duration::from_millis(20),
            coalesce: Duration::ZERO,
            engine: EngineConfig::default(),
        }
    }

    #[test]
    fn port_zero_is_resolved_once_and_shared_by_every_worker() {
        let b = bind(&cfg("127.0.0.1:0", 3)).unwrap();
        assert_eq!(b.local_addrs.len(), 1);
        let port = b.local_addrs[0].1.port();
        assert_ne!(port, 0);
        for socks in &b.per_worker {
            assert_eq!(socks.len(), 1);
            let a = socks[0].1.local_addr().unwrap().as_socket().unwrap();
            assert_eq!(a.port(), port);
        }
    }

    #[test]
    fn a_batch_reports_lengths_and_oversize_datagrams() {
        let b = bind(&cfg("127.0.0.1:0", 1)).unwrap();
        let sock = &b.per_worker[0][0].1;
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[1u8; 100], b.local_addrs[0].1).unwrap();
        tx.send_to(&[2u8; 3000], b.local_addrs[0].1).unwrap();
        tx.send_to(&[3u8; 7], b.local_addrs[0].1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut headers: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(8, None);
        let mut bufs = vec![0u8; 8 * 2048];
        let mut rx = Vec::new();
        let n = recv_batch(sock, &mut headers, &mut bufs, 2048, 8, &mut rx).unwrap();
        assert_eq!(n, 3);
        assert_eq!(rx[0].len, 100);
        assert!(!rx[0].truncated);
        assert!(rx[1].truncated, "3000 bytes do not fit 2048");
        assert_eq!(rx[2].len, 7);
        assert_eq!(bufs[2 * 2048], 3);
        let from = tx.local_addr().unwrap().ip();
        assert!(
            rx.iter().all(|m| m.src == from),
            "each datagram's source is kept"
        );
        assert_eq!(
            recv_batch(sock, &mut headers, &mut bufs, 2048, 8, &mut rx),
            Err(nix::errno::Errno::EAGAIN)
        );
    }

    #[test]
    fn ipv6_listen_addresses_receive_too() {
        let bound = bind(&cfg("[::1]:0", 2));
        let tx = UdpSocket::bind("[::1]:0");
        let check = match (&bound, &tx) {
            (Ok(_), Ok(_)) => Ok(()),
            _ => Err("IPv6 loopback unavailable".to_owned()),
        };
        if !rebuilder_testkit::system::require("ipv6_listen_addresses_receive_too", check) {
            return;
        }
        let (b, tx) = (bound.unwrap(), tx.unwrap());
        tx.send_to(b"0123456789", b.local_addrs[0].1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut headers: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(8, None);
        let mut bufs = vec![0u8; 8 * 2048];
        let mut rx = Vec::new();
        let got: usize = b
            .per_worker
            .iter()
            .map(|s| recv_batch(&s[0].1, &mut headers, &mut bufs, 2048, 8, &mut rx).unwrap_or(0))
            .sum();
        assert_eq!(got, 1, "one of the two reuseport sockets got the datagram");
    }

    #[test]
    fn an_unbindable_ipv6_address_is_skipped_when_another_is_bound() {
        // 2001:db8::/32 is documentation space: never configured on this host.
        let b = bind(&cfg("127.0.0.1:0,[2001:db8::1]:0", 1)).unwrap();
        assert_eq!(b.local_addrs.len(), 1);
        assert!(b.local_addrs[0].1.is_ipv4());
        assert!(
            bind(&cfg("[2001:db8::1]:0", 1)).is_err(),
            "alone it is an error"
        );
    }

    #[test]
    fn vxlan_and_geneve_addresses_are_bound_by_every_worker_with_their_encapsulation() {
        let mut c = cfg("127.0.0.1:0", 2);
        c.geneve_listen = vec!["127.0.0.1:0".parse().unwrap()];
        let b = bind(&c).unwrap();
        assert_eq!(b.addrs(Encap::Vxlan).len(), 1);
        assert_eq!(b.addrs(Encap::Geneve).len(), 1);
        assert_ne!(b.addrs(Encap::Vxlan), b.addrs(Encap::Geneve));
        for socks in &b.per_worker {
            let encaps: Vec<Encap> = socks.iter().map(|(e, _)| *e).collect();
            assert_eq!(encaps, [Encap::Vxlan, Encap::Geneve]);
        }
        // GENEVE alone is enough.
        let mut c = cfg("127.0.0.1:0", 1);
        c.listen.clear();
        c.geneve_listen = vec!["127.0.0.1:0".parse().unwrap()];
        assert!(bind(&c).is_ok());
        c.geneve_listen.clear();
        assert!(matches!(bind(&c), Err(IngestError::NothingBound)));
    }

    #[test]
    fn the_receive_buffer_comes_from_so_rcvbuf_up_to_rmem_max() {
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Within the cap plain SO_RCVBUF gives exactly what is asked, no capability needed.
        let want = (rmem_max / 2).clamp(4096, 1 << 20);
        let mut c = cfg("127.0.0.1:0", 1);
        c.rcvbuf_bytes = want;
        assert_eq!(bind(&c).unwrap().rcvbuf_bytes, want);
    }

    #[test]
    fn kernel_drops_of_our_sockets_are_found_by_inode() {
        let mut c = cfg("127.0.0.1:0", 1);
        c.rcvbuf_bytes = 4096; // tiny on purpose: the kernel will drop
        let b = bind(&c).unwrap();
        let _ = b.per_worker[0][0].1.set_recv_buffer_size(4096);
        let inodes = b.inodes();
        assert_eq!(inodes.len(), 1);
        let before =
            crate::daemon::telemetry::read_socket_drops(&inodes).expect("our socket is listed");
        assert_eq!(before.drops, 0);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            let _ = tx.send_to(&[0u8; 1000], b.local_addrs[0].1);
        }
        let after = crate::daemon::telemetry::read_socket_drops(&inodes).unwrap();
        assert!(after.drops > 0, "a 4 KiB buffer cannot hold 200 KB");
        assert!(after.rx_queue_bytes > 0);
    }
}
