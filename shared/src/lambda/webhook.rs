//! The webhook's API Gateway (HTTP API v2) event source.

use lambda_http::{Body, Request, Response};

use aws_config::SdkConfig;
use tokio::sync::OnceCell;

use super::build;
use crate::config::WebhookConfig;
use crate::webhook::handler::WebhookService;

/// Hands the raw body bytes to the service: `lambda_http` has already base64-decoded a binary body, and a
/// text body is used byte for byte — never re-serialised, or the signature would not match.
pub async fn handle_request(service: &WebhookService, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    let body: &[u8] = request.body().as_ref();
    let answer = service.handle(request.headers(), body).await;
    let response = Response::builder()
        .status(answer.status)
        .header("content-type", "application/json")
        .body(Body::Text(answer.body))?;
    Ok(response)
}

/// The webhook function as deployed: the service is built on the first request (see the module docs of
/// `crate::lambda`) and kept; while it cannot be built (a secret or the table unreachable) every request is
/// answered 503, so Brex retries the delivery, and the next request tries again.
pub struct WebhookFunction {
    config: WebhookConfig,
    /// `None`: the standard AWS configuration, loaded with the service.
    sdk: Option<SdkConfig>,
    service: OnceCell<WebhookService>,
}

impl WebhookFunction {
    pub fn new(config: WebhookConfig) -> Self {
        Self { config, sdk: None, service: OnceCell::new() }
    }

    /// With a given AWS configuration (an emulator's, in tests).
    pub fn with_sdk(config: WebhookConfig, sdk: SdkConfig) -> Self {
        Self { config, sdk: Some(sdk), service: OnceCell::new() }
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, lambda_http::Error> {
        let built = self.service.get_or_try_init(|| async {
            match &self.sdk {
                Some(sdk) => build::webhook_service(&self.config, sdk).await,
                None => build::webhook_service(&self.config, &build::aws_config().await).await,
            }
        });
        match built.await {
            Ok(service) => handle_request(service, request).await,
            Err(error) => {
                // The reason goes to the log, not to the caller.
                tracing::error!(error = %error, "webhook cannot start; answering 503");
                let response = Response::builder()
                    .status(503)
                    .header("content-type", "application/json")
                    .body(Body::Text(r#"{"error":"webhook unavailable"}"#.to_owned()))?;
                Ok(response)
            }
        }
    }
}
