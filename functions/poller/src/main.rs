//! The poller Lambda (EventBridge schedule). Polling is not built yet: every run fails loudly instead of
//! pretending to have looked, so a schedule left on shows up as errors rather than silent gaps.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json_logging();
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        tracing::error!(request_id = %event.context.request_id, "poller invoked, but polling is not implemented yet");
        Err::<(), Error>("the poller is not implemented yet: records reach IFS only through the webhook".into())
    }))
    .await
}
