//! size-fleet: Scheduled Event → the fleet's traffic (CloudWatch) and the sessions sending to
//! our target → set the rebuilder group's desired capacity. Wiring only.

use anyhow::Context as _;
use lambda_runtime::{LambdaEvent, service_fn};
use mirror::settings::FleetSettings;
use mirror_aws::{clients, handlers, telemetry};
use serde_json::Value;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let settings = FleetSettings::from_process_env().context("invalid size-fleet settings")?;
    let config = clients::sdk_config().await;
    let ec2 = clients::ec2(&config);
    let fleet = clients::fleet(&config);
    let metrics = clients::metrics(&config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        handlers::size_fleet(
            &ec2,
            &fleet,
            &metrics,
            &settings,
            "size-fleet",
            event.payload,
        )
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}
