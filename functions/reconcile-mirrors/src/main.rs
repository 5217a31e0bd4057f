//! reconcile-mirrors: Scheduled Event → observe everything → plan → apply (or only report
//! with `DRY_RUN=true`), remember what AWS refused and publish the source map. Wiring only.

use anyhow::Context as _;
use lambda_runtime::{LambdaEvent, service_fn};
use mirror::settings::ReconcileSettings;
use mirror_aws::{MirrorRun, clients, handlers, telemetry};
use serde_json::Value;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let settings =
        ReconcileSettings::from_process_env().context("invalid reconcile-mirrors settings")?;
    let config = clients::sdk_config().await;
    let ec2 = clients::ec2(&config);
    let store = clients::store(&config);
    let run = MirrorRun::reconcile(settings);
    let region = config.region().map(ToString::to_string);
    let (ec2, store, run, region) = (&ec2, &store, &run, region.as_deref());
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        // Events for another account or region are refused before any API call.
        let run = run.for_function(&event.context.invoked_function_arn, region);
        handlers::reconcile_with(ec2, store, &run, event.payload).await
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}
