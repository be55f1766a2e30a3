//! The webhook Lambda behind API Gateway (HTTP API): Brex `ACCOUNTING_RECORD_READY_FOR_EXPORT` events in,
//! record ids onto SQS. All logic is in `shared`.

use shared::config::{ProcessEnv, WebhookConfig};
use shared::lambda::start::Lazy;
use shared::lambda::webhook;
use shared::webhook::WebhookService;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init_json_logging();
    let function = Lazy::<WebhookService>::new(WebhookConfig::from_env(&ProcessEnv)?);
    lambda_http::run(lambda_http::service_fn(|request| webhook::handle(&function, request))).await
}
