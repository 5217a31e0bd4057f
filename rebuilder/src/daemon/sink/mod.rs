//! Where extracted transactions go (`--sink`): `http-replay` (each request re-sent to the
//! analyzer: [`crate::daemon::forward`], the default) or `ndjson` ([`ndjson`]: batches of the
//! JSON records of [`crate::record`] POSTed to the upstream). Both take the same bounded queue
//! from the workers, deliver through the same connection layer
//! ([`crate::daemon::forward::connection`]), count into the same telemetry and drive the same
//! upstream state.

pub mod ndjson;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::daemon::config::{RunArgs, SinkKind};
use crate::daemon::forward::{self, ForwardConfig, ForwardQueue, PendingHandle};
use crate::daemon::telemetry::Telemetry;
use crate::sources::SourcesReader;

/// A sink ready to run: the workers' queue handle, the task, and how much it still holds.
pub struct Started {
    pub queue: ForwardQueue,
    pub task: Pin<Box<dyn Future<Output = ()> + Send>>,
    pub pending: PendingHandle,
}

/// The sink `args` ask for.
pub fn start(
    args: &RunArgs,
    fcfg: ForwardConfig,
    telemetry: Arc<Telemetry>,
    sources: SourcesReader,
) -> Started {
    match args.sink {
        SinkKind::HttpReplay => {
            let (queue, forwarder) = forward::channel(fcfg, telemetry);
            let pending = forwarder.pending_handle();
            Started {
                queue,
                task: Box::pin(forwarder.run()),
                pending,
            }
        }
        SinkKind::Ndjson => {
            let (queue, rx) = forward::queue(fcfg, telemetry);
            let pending = rx.pending_handle();
            let cfg = ndjson::NdjsonConfig::from_args(args);
            Started {
                queue,
                task: Box::pin(ndjson::run(rx, cfg, sources)),
                pending,
            }
        }
    }
}
