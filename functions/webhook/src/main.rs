//! The webhook Lambda behind API Gateway (HTTP API): Brex `ACCOUNTING_RECORD_READY_FOR_EXPORT` events in,
//! record ids onto SQS. All logic is in `shared`.

use shared::config::{ProcessEnv, WebhookConfig};
use shared::lambda::webhook::WebhookFunction;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init_json_logging();
    let function = WebhookFunction::new(WebhookConfig::from_env(&ProcessEnv)?);
    lambda_http::run(lambda_http::service_fn(|request| function.handle(request))).await
}
