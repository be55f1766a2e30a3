//! The webhook Lambda behind API Gateway (HTTP API): Brex `ACCOUNTING_RECORD_READY_FOR_EXPORT` events in,
//! record ids onto SQS. All logic is in `shared`.

use shared::config::{ProcessEnv, WebhookConfig};
use shared::lambda::{build, webhook};
use tokio::sync::OnceCell;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init_json_logging();
    let config = WebhookConfig::from_env(&ProcessEnv)?;
    let sdk = aws_config::load_from_env().await;
    // Built on the first request (see `build`); until it builds, Brex is answered 503 and retries.
    let service = OnceCell::new();
    lambda_http::run(lambda_http::service_fn(|request| {
        let (service, config, sdk) = (&service, &config, &sdk);
        async move {
            match service.get_or_try_init(|| build::webhook_service(config, sdk)).await {
                Ok(service) => webhook::handle_request(service, request).await,
                Err(e) => webhook::unavailable(&e),
            }
        }
    }))
    .await
}
