//! `rebuilder run`: wires ingest workers, the forwarder and the admin listener.
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

use config::{LogFormat, RunArgs};
use forward::{ForwardConfig, PendingHandle};
use ingest::{IngestConfig, Workers};
use telemetry::{RequestDropReason, Telemetry};

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
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// What happened during shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Requests still queued or in flight when the drain deadline passed (counted as dropped).
    pub abandoned: u64,
}

/// A started daemon.
pub struct Daemon {
    udp_addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
    telemetry: Arc<Telemetry>,
    workers: Workers,
    forwarder: tokio::task::JoinHandle<()>,
    pending: PendingHandle,
    admin: tokio::task::JoinHandle<()>,
    drain_timeout: Duration,
}

/// Binds everything and starts the workers, the forwarder and the admin listener. Must be called
/// inside a tokio runtime.
pub async fn start(args: RunArgs) -> Result<Daemon, DaemonError> {
    let fcfg = ForwardConfig::from_args(&args)?;
    let icfg = IngestConfig::from_args(&args);
    let telemetry = Arc::new(Telemetry::new(
        icfg.workers.max(1),
        args.health_failure_threshold,
    ));
    let admin_listener = admin::bind(args.admin)
        .await
        .map_err(|source| DaemonError::Admin {
            addr: args.admin,
            source,
        })?;
    let admin_addr = admin_listener.local_addr().unwrap_or(args.admin);
    let sockets = ingest::bind(&icfg)?;
    let udp_addrs = sockets.local_addrs.clone();

    let sink = sink::start(&args, fcfg.clone(), telemetry.clone());
    let (queue, pending) = (sink.queue, sink.pending);
    let forwarder = tokio::spawn(sink.task);
    let workers = ingest::spawn(sockets, &icfg, queue, telemetry.clone())?;
    let admin = tokio::spawn(admin::serve(admin_listener, telemetry.clone()));
    tracing::info!(
        udp = ?udp_addrs,
        admin = %admin_addr,
        upstream = %args.upstream,
        sink = ?args.sink,
        workers = icfg.workers,
        rcvbuf_bytes = icfg.rcvbuf_bytes,
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
    })
}

impl Daemon {
    /// UDP addresses bound (port 0 resolved).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }
    /// Admin listener address (port 0 resolved).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
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
        self.admin.abort();
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

/// Entry point of `rebuilder run`: logging, runtime, signals.
pub fn main(args: RunArgs) -> Result<(), DaemonError> {
    init_logging(args.log_format, &args.log_filter);
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
