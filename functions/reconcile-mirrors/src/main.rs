//! reconcile-mirrors: Scheduled Event → observe everything → plan → apply (or only report
//! with `DRY_RUN=true`). Wiring only.

use anyhow::Context as _;
use lambda_runtime::{LambdaEvent, service_fn};
use mirror::settings::MirrorSettings;
use mirror_aws::{MirrorRun, clients, handlers, telemetry};
use serde_json::Value;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let settings =
        MirrorSettings::from_process_env().context("invalid reconcile-mirrors settings")?;
    let config = clients::sdk_config().await;
    let ec2 = clients::ec2(&config);
    let run = MirrorRun::new("reconcile-mirrors", settings);
    let region = config.region().map(ToString::to_string);
    let (ec2, run, region) = (&ec2, &run, region.as_deref());
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        // Events for another account or region are refused before any API call.
        let run = run.for_function(&event.context.invoked_function_arn, region);
        handlers::reconcile(ec2, &run, event.payload).await
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}
