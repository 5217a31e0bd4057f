//! `rebuilder run`: wires ingest workers, the forwarder and the admin listener.
//!
//! Threads: one receive worker per core (`rx-N`), the forwarding runtime (`fwd`, or the main
//! thread with one forwarding thread), the admin listener (`admin`, a runtime of its own).
//!
//! Liveness (`/healthz`): sockets bound, every receive worker alive, the forwarder running, not
//! shutting down. The analyzer's health is not part of it (`rebuilder_upstream_up` on
//! `/metrics`): the load balancer and the Auto Scaling group check `/healthz`, and an analyzer
//! outage must not make them replace the fleet.
//!
//! A panic anywhere ends `rebuilder run` at once ([`abort_on_panic`], installed by [`main`]):
//! a worker whose thread died would leave its share of the flows unread, and state after a
//! bug cannot be trusted; systemd (`Restart=always`) starts a fresh process within seconds.
//! Embedders of [`start`] without the hook see the same failure as `/healthz` 503.
//!
//! Shutdown (SIGTERM, SIGINT, or the future given to [`run`]): `/healthz` turns 503, the workers
//! stop receiving and flush their engines into the queue, the queue drains to the upstream
//! within `--drain-timeout-ms`, whatever is left is counted as dropped (`shutdown`), exit 0.
//!
//! The plumbing around the engine, in the order a request goes through it: [`config`] (flags
//! and environment) → [`ingest`] (UDP workers, one engine each) → [`forward`] (queue,
//! rewrite, senders) → the analyzer; [`telemetry`] counts and [`admin`] serves `/healthz`
//! and `/metrics`. This module wires them and is imported by none of them.

pub mod admin;
pub mod config;
pub mod forward;
pub mod ingest;
pub mod sink;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::encap::Encap;
use admin::{AdminConfig, AdminServer};
use config::{LogFormat, RunArgs};
use forward::{ForwardConfig, PendingHandle};
use ingest::{IngestConfig, Workers, WorkersShared};
use telemetry::{RequestDropReason, Telemetry};

use crate::dedup::Dedup;
use crate::sources::{self, SharedSources, SourceMap};

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] forward::ConfigError),
    #[error(transparent)]
    Ingest(#[from] ingest::IngestError),
    #[error("cannot bind the admin listener {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the admin thread: {0}")]
    AdminThread(std::io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the source map watcher: {0}")]
    SourcesThread(std::io::Error),
}

/// What happened during shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Requests still queued or in flight when the drain deadline passed (counted as dropped).
    pub abandoned: u64,
}

/// A started daemon.
pub struct Daemon {
    udp_addrs: Vec<(Encap, SocketAddr)>,
    admin_addr: SocketAddr,
    telemetry: Arc<Telemetry>,
    workers: Workers,
    forwarder: tokio::task::JoinHandle<()>,
    pending: PendingHandle,
    admin: AdminServer,
    drain_timeout: Duration,
    sources: Arc<SharedSources>,
    /// Polls `--sources-file` (stopped when the daemon is).
    _sources_watcher: Option<sources::Watcher>,
}

/// Marks the forwarder running until dropped (its task ends, or unwinds from a panic).
struct ForwarderRunning(Arc<Telemetry>);

impl Drop for ForwarderRunning {
    fn drop(&mut self) {
        self.0.set_forwarder_running(false);
    }
}

/// Binds everything and starts the workers, the forwarder (on the calling runtime) and the
/// admin listener (on its own thread). Must be called inside a tokio runtime.
pub async fn start(args: RunArgs) -> Result<Daemon, DaemonError> {
    let mut fcfg = ForwardConfig::from_args(&args)?;
    let shared_sources = Arc::new(SharedSources::new(SourceMap::empty()));
    let sources_watcher = match &args.sources_file {
        Some(path) => Some(
            sources::watch(
                path.clone(),
                Duration::from_millis(args.sources_poll_ms.max(10)),
                shared_sources.clone(),
            )
            .map_err(DaemonError::SourcesThread)?,
        ),
        None => None,
    };
    if args.source_headers {
        fcfg.source_headers = Some(shared_sources.clone());
    }
    let icfg = IngestConfig::from_args(&args);
    let telemetry = Arc::new(Telemetry::new(
        icfg.workers.max(1),
        args.health_failure_threshold,
    ));
    telemetry.set_sources(shared_sources.clone(), args.source_metrics_top);
    let admin_error = |source| DaemonError::Admin {
        addr: args.admin,
        source,
    };
    let admin_listener = admin::bind(args.admin).map_err(admin_error)?;
    let admin_addr = admin_listener.local_addr().unwrap_or(args.admin);
    let sockets = ingest::bind(&icfg)?;
    let udp_addrs = sockets.local_addrs.clone();
    let rcvbuf_granted = sockets.rcvbuf_bytes;

    let sink = sink::start(
        &args,
        fcfg.clone(),
        telemetry.clone(),
        shared_sources.reader(),
    );
    let (queue, pending, task) = (sink.queue, sink.pending, sink.task);
    telemetry.set_forwarder_running(true);
    let running = ForwarderRunning(telemetry.clone());
    let forwarder = tokio::spawn(async move {
        let _running = running;
        task.await;
    });
    let dedup = args
        .dedup
        .config()
        .map(|c| Arc::new(std::sync::Mutex::new(Dedup::new(c))));
    if let Some(d) = &dedup {
        telemetry.set_dedup(d.clone());
    }
    let shared = WorkersShared {
        sources: shared_sources.reader(),
        dedup,
    };
    let workers = ingest::spawn(sockets, &icfg, queue, telemetry.clone(), shared)?;
    let admin_cfg = AdminConfig {
        max_connections: args.admin_max_connections as usize,
        timeout: Duration::from_millis(args.admin_timeout_ms.max(1)),
    };
    let admin = AdminServer::spawn(admin_listener, telemetry.clone(), admin_cfg)
        .map_err(DaemonError::AdminThread)?;
    tracing::info!(
        udp = ?udp_addrs,
        admin = %admin_addr,
        upstream = %args.upstream,
        sink = ?args.sink,
        sources_file = args.sources_file.as_ref().map(|p| tracing::field::display(p.display())),
        workers = icfg.workers,
        allow_from = icfg.engine.allow_from.as_ref().map(tracing::field::display),
        rcvbuf_bytes = icfg.rcvbuf_bytes,
        rcvbuf_granted,
        queue_capacity = fcfg.queue_capacity,
        concurrency = fcfg.concurrency,
        "rebuilder running"
    );
    Ok(Daemon {
        udp_addrs,
        admin_addr,
        telemetry,
        workers,
        forwarder,
        pending,
        admin,
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        sources: shared_sources,
        _sources_watcher: sources_watcher,
    })
}

impl Daemon {
    /// UDP addresses bound (port 0 resolved), with their encapsulation.
    pub fn udp_addrs(&self) -> &[(Encap, SocketAddr)] {
        &self.udp_addrs
    }
    /// Admin listener address (port 0 resolved).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }
    /// The source map in force (`--sources-file`).
    pub fn sources(&self) -> &Arc<SharedSources> {
        &self.sources
    }

    /// Stops receiving, drains the queue within the deadline, stops the admin listener.
    pub async fn shutdown(self) -> ShutdownReport {
        self.telemetry.set_shutting_down();
        tracing::info!("shutting down: receive stopped, draining the queue");
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || workers.stop_and_join()).await;
        // The workers dropped their queue handles: the forwarder ends once the queue is empty
        // and the deliveries in flight are done.
        let mut forwarder = self.forwarder;
        let abandoned = match tokio::time::timeout(self.drain_timeout, &mut forwarder).await {
            Ok(_) => 0,
            Err(_) => {
                let left = self.pending.pending();
                forwarder.abort();
                for _ in 0..left {
                    self.telemetry.request_dropped(RequestDropReason::Shutdown);
                }
                tracing::warn!(abandoned = left, "drain deadline passed");
                left
            }
        };
        let admin = self.admin;
        let _ = tokio::task::spawn_blocking(move || admin.stop()).await;
        tracing::info!(abandoned, "stopped");
        ShutdownReport { abandoned }
    }
}

/// Runs until `shutdown` completes, then shuts down cleanly.
pub async fn run(
    args: RunArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<ShutdownReport, DaemonError> {
    let daemon = start(args).await?;
    shutdown.await;
    Ok(daemon.shutdown().await)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; waiting for ctrl-c");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Sets up logging as configured (no-op when a subscriber is already installed).
pub fn init_logging(format: LogFormat, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Makes any panic end the process at once, after the panic message (and the default hook's
/// output) has been written: see the module documentation. `rebuilder run` installs it; the
/// library leaves the hook alone otherwise.
pub fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("?"),
            panic = %info,
            "panic: aborting so that the service manager starts a fresh process"
        );
        std::process::abort();
    }));
}

/// Entry point of `rebuilder run`: logging, the panic policy, runtime, signals.
pub fn main(args: RunArgs) -> Result<(), DaemonError> {
    init_logging(args.log_format, &args.log_filter);
    abort_on_panic();
    // One forwarding thread (the default) runs a current-thread runtime: no work-stealing
    // machinery between the senders, the admin listener and the workers' wakeups.
    let threads = args.forward_thread_count();
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = builder
        .thread_name("fwd")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    rt.block_on(run(args, termination_signal()))?;
    Ok(())
}
