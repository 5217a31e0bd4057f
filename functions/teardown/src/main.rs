//! teardown: the stack's custom resource. On Delete, removes the stack's sessions from its
//! target and filter and the objects it wrote, then answers CloudFormation (PUT to the
//! request's ResponseURL); Create and Update succeed at once. Wiring only.

use std::time::Duration;

use anyhow::Context as _;
use lambda_runtime::{LambdaEvent, service_fn};
use mirror::settings::TeardownSettings;
use mirror_aws::custom_resource::put_response;
use mirror_aws::teardown::{self, Teardown};
use mirror_aws::{clients, handlers, telemetry};
use serde_json::{Value, json};

/// Left for the response after the work: the PUT (20 s at most) and some margin.
const RESPONSE_RESERVE: Duration = Duration::from_secs(30);
/// The work's budget when the invocation carries no usable deadline (the template's Timeout
/// is 300 s).
const WORK_WITHOUT_DEADLINE: Duration = Duration::from_secs(240);
/// The pause before the confirming sweep (see `Teardown::settle`).
const SETTLE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let settings = TeardownSettings::from_process_env().context("invalid teardown settings")?;
    let config = clients::sdk_config().await;
    let ec2 = clients::ec2(&config);
    let store = clients::store(&config);
    let run = Teardown {
        settings,
        settle: SETTLE,
    };
    let (ec2, store, run) = (&ec2, &store, &run);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        let request =
            teardown::parse_request(event.payload).map_err(lambda_runtime::Error::from)?;
        let now_ms = handlers::now_unix() * 1000;
        let deadline = teardown::work_deadline(
            event.context.deadline,
            now_ms,
            RESPONSE_RESERVE,
            WORK_WITHOUT_DEADLINE,
        );
        tracing::info!(
            request = ?request.request_type,
            invocation_deadline_ms = event.context.deadline,
            now_ms,
            "custom resource request"
        );
        let response = run.respond(ec2, store, &request, deadline).await;
        // An error here (the response could not be delivered) makes Lambda retry the event.
        put_response(&request.response_url, response.body()).await?;
        Ok::<Value, lambda_runtime::Error>(json!({ "Status": response.status }))
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}
