//! The webhook's API Gateway (HTTP API v2) event source, and what Brex is answered for each outcome:
//!
//! - 200 `{"status": "accepted", "enqueued": n}` once the ids are durably queued, 200 `duplicate` for a
//!   webhook id accepted before, 200 `ignored` for other event types;
//! - 413 for a body over the cap, 401 for a missing, bad or expired signature, 400 for a malformed body;
//! - 409 while another invocation handles the same webhook id: Brex (Svix) retries any non-2xx, so the
//!   redelivery lands after that invocation has finished, and 409 keeps the 5xx alarms for real outages;
//! - 503 when the signing secrets, the table or the queue are unavailable, or the function cannot start:
//!   Brex retries.

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::build::{self, StartupError};
use super::start::{Lazy, Start};
use crate::config::WebhookConfig;
use crate::metrics::Metric;
use crate::webhook::{Unavailable, WebhookOutcome, WebhookService};

impl Start for WebhookService {
    type Config = WebhookConfig;
    const FUNCTION: &'static str = "webhook";

    async fn start(config: &WebhookConfig, sdk: &SdkConfig) -> Result<Self, StartupError> {
        build::webhook_service(config, sdk).await
    }
}

/// What Brex is answered: a status and a small JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status: u16,
    pub body: String,
}

impl WebhookResponse {
    fn new(status: u16, body: Value) -> Self {
        Self { status, body: body.to_string() }
    }

    fn error(status: u16, message: &str) -> Self {
        Self::new(status, json!({ "error": message }))
    }

    /// A function that cannot start: the reason is in the log, not in the answer.
    fn not_started() -> Self {
        Self::error(503, "webhook unavailable")
    }
}

impl From<&WebhookOutcome> for WebhookResponse {
    fn from(outcome: &WebhookOutcome) -> Self {
        match outcome {
            WebhookOutcome::Accepted { enqueued } => {
                Self::new(200, json!({ "status": "accepted", "enqueued": enqueued }))
            }
            WebhookOutcome::Duplicate => Self::new(200, json!({ "status": "duplicate" })),
            WebhookOutcome::Ignored => Self::new(200, json!({ "status": "ignored" })),
            WebhookOutcome::TooLarge => Self::error(413, "payload too large"),
            WebhookOutcome::Unauthorized => Self::error(401, "invalid signature"),
            WebhookOutcome::BadRequest(error) => Self::error(400, &error.to_string()),
            WebhookOutcome::InProgress => Self::error(409, "webhook is being processed; retry later"),
            WebhookOutcome::Unavailable(Unavailable::SigningSecrets) => Self::error(503, "signing secrets unavailable"),
            WebhookOutcome::Unavailable(Unavailable::IdempotencyStore) => {
                Self::error(503, "idempotency store unavailable")
            }
            WebhookOutcome::Unavailable(Unavailable::WorkQueue) => Self::error(503, "work queue unavailable"),
        }
    }
}

/// One request to the function as deployed: the service is started on the first request (see
/// [`super::start`]); while it cannot be, every request is answered 503, so Brex retries the delivery, and
/// the next request tries again.
pub async fn handle(webhook: &Lazy<WebhookService>, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    match webhook.get().await {
        Ok(service) => handle_request(service, request).await,
        Err(_) => respond(WebhookResponse::not_started()),
    }
}

/// Hands the raw body bytes to the service: `lambda_http` has already base64-decoded a binary body, and a
/// text body is used byte for byte — never re-serialised, or the signature would not match.
pub async fn handle_request(service: &WebhookService, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    let body: &[u8] = request.body().as_ref();
    let outcome = service.handle(request.headers(), body).await;
    let answer = WebhookResponse::from(&outcome);
    let accepted = if answer.status == 200 { "accepted" } else { "refused" };
    let dimensions = vec![("Outcome", accepted.to_owned()), ("Status", answer.status.to_string())];
    service.metrics().count(Metric::WebhookDeliveries, 1, dimensions);
    service.metrics().flush();
    respond(answer)
}

fn respond(answer: WebhookResponse) -> Result<Response<Body>, lambda_http::Error> {
    let response = Response::builder()
        .status(answer.status)
        .header("content-type", "application/json")
        .body(Body::Text(answer.body))?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::PayloadError;

    /// The bytes Brex has always been answered (the end-to-end tests compare the parsed bodies).
    #[test]
    fn every_outcome_answers_its_status_and_body() {
        let cases = [
            (WebhookOutcome::Accepted { enqueued: 2 }, 200, r#"{"enqueued":2,"status":"accepted"}"#),
            (WebhookOutcome::Duplicate, 200, r#"{"status":"duplicate"}"#),
            (WebhookOutcome::Ignored, 200, r#"{"status":"ignored"}"#),
            (WebhookOutcome::TooLarge, 413, r#"{"error":"payload too large"}"#),
            (WebhookOutcome::Unauthorized, 401, r#"{"error":"invalid signature"}"#),
            (WebhookOutcome::BadRequest(PayloadError::IdsEmpty), 400, r#"{"error":"accountingRecordIds is empty"}"#),
            (WebhookOutcome::InProgress, 409, r#"{"error":"webhook is being processed; retry later"}"#),
            (
                WebhookOutcome::Unavailable(Unavailable::SigningSecrets),
                503,
                r#"{"error":"signing secrets unavailable"}"#,
            ),
            (
                WebhookOutcome::Unavailable(Unavailable::IdempotencyStore),
                503,
                r#"{"error":"idempotency store unavailable"}"#,
            ),
            (WebhookOutcome::Unavailable(Unavailable::WorkQueue), 503, r#"{"error":"work queue unavailable"}"#),
        ];
        for (outcome, status, body) in cases {
            assert_eq!(WebhookResponse::from(&outcome), WebhookResponse { status, body: body.into() }, "{outcome:?}");
        }
        assert_eq!(WebhookResponse::not_started().body, r#"{"error":"webhook unavailable"}"#);
    }
}
