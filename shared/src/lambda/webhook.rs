//! The webhook's API Gateway (HTTP API v2) event source.

use lambda_http::{Body, Request, Response};

use super::build::StartupError;
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

/// The answer while the service cannot be built (a secret or the table unreachable): 503, so Brex retries
/// the delivery, and the reason in the log rather than in the response.
pub fn unavailable(error: &StartupError) -> Result<Response<Body>, lambda_http::Error> {
    tracing::error!(error = %error, "webhook cannot start; answering 503");
    let response = Response::builder()
        .status(503)
        .header("content-type", "application/json")
        .body(Body::Text(r#"{"error":"webhook unavailable"}"#.to_owned()))?;
    Ok(response)
}
