//! `/v1/webhooks`: subscriptions (`GET`/`POST /v1/webhooks`, `GET`/`PUT`/`DELETE /v1/webhooks/{id}`) and
//! the signing secrets (`GET /v1/webhooks/secrets`), with their rotation. Errors have the classic shape
//! (`type`/`message`). Delivery and signing live in [`crate::brex::webhook`].

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::BrexSimHandle;
use super::query::{parse_limit, parse_query};
use super::router::{Sim, error};
use super::state::IdemEntry;
use crate::brex::webhook::{self, DeliveryReport, HttpTransport, WebhookSender};

/// Webhook secret status as `GET /v1/webhooks/secrets` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecretStatus {
    Active,
    PendingRevoke,
}

/// One webhook signing secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecret {
    pub secret: String,
    pub status: SecretStatus,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecret").field("secret", &"<redacted>").field("status", &self.status).finish()
    }
}

/// A webhook subscription as `/v1/webhooks` shows it: `{id, url, event_types, status}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSubscription {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    /// `ACTIVE` or `INACTIVE`.
    pub status: String,
}

/// Brex's `WebhookEventType` enum: the only event types a subscription may name.
pub const WEBHOOK_EVENT_TYPES: [&str; 20] = [
    "REFERRAL_CREATED",
    "REFERRAL_ACTIVATED",
    "REFERRAL_APPLICATION_STATUS_CHANGED",
    "TRANSFER_PROCESSED",
    "TRANSFER_FAILED",
    "EXPENSE_PAYMENT_UPDATED",
    "USER_UPDATED",
    "EMBEDDED_CARD_TRANSACTION_UPDATED",
    "EMBEDDED_CARD_UPDATED",
    "EMBEDDED_ACCOUNT_UPDATED",
    "EMBEDDED_CARD_SHIPPING_UPDATED",
    "EMBEDDED_DISPUTE_UPDATED",
    "PARTNERSHIP_INTEGRATION_CONNECTION_UPDATED",
    "EMBEDDED_CARD_AUTHORIZATION",
    "EMBEDDED_FRAUD_ALERT",
    "EMBEDDED_BILLING_GROUP_UPDATED",
    "EMBEDDED_LEGAL_ENTITY_UPDATED",
    "EMBEDDED_BILLING_STATEMENT_UPDATED",
    "EMBEDDED_USER_STATUS_UPDATED",
    "ACCOUNTING_RECORD_READY_FOR_EXPORT",
];

/// `whsec_` + base64 of 32 bytes from the simulator's seeded RNG.
pub(super) fn random_secret(rng: &mut StdRng) -> String {
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    format!("whsec_{}", STANDARD.encode(key))
}

// ---------------------------------------------------------------------------------------------------------
// Routes

pub(super) async fn list_secrets(State(inner): Sim) -> Response {
    Json(inner.lock().secrets.clone()).into_response()
}

#[derive(Deserialize)]
struct SubscriptionBody {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    status: Option<String>,
    /// Partners only; accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    group_id: Option<String>,
}

fn bad_request(message: &str) -> Response {
    error(false, StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

fn subscription_not_found(id: &str) -> Response {
    error(false, StatusCode::NOT_FOUND, "NOT_FOUND", &format!("Webhook subscription {id} not found"))
}

/// Checks url (HTTPS), event types (non-empty, known) and status; returns them normalised, or the 400.
fn validate_subscription(
    body: SubscriptionBody,
    require_status: bool,
) -> Result<(String, Vec<String>, String), Box<Response>> {
    let bad_request = |m: &str| Box::new(bad_request(m));
    let url = body.url.ok_or_else(|| bad_request("url is required"))?;
    match url::Url::parse(&url) {
        Ok(parsed) if parsed.scheme() == "https" && parsed.host().is_some() => {}
        _ => return Err(bad_request("url must be a valid HTTPS URL")),
    }
    let event_types = body.event_types.ok_or_else(|| bad_request("event_types is required"))?;
    if event_types.is_empty() {
        return Err(bad_request("event_types must contain at least 1 item"));
    }
    if let Some(unknown) = event_types.iter().find(|t| !WEBHOOK_EVENT_TYPES.contains(&t.as_str())) {
        return Err(bad_request(&format!("Invalid event type: {unknown}")));
    }
    let status = match body.status {
        None if require_status => return Err(bad_request("status is required")),
        None => "ACTIVE".to_owned(),
        Some(s) if s == "ACTIVE" || s == "INACTIVE" => s,
        Some(s) => return Err(bad_request(&format!("Invalid status: {s}"))),
    };
    Ok((url, event_types, status))
}

/// `cursor` (opaque: the last id of the previous page) and `limit` (default 100, at most 1000).
pub(super) async fn list_webhooks(State(inner): Sim, RawQuery(q): RawQuery) -> Response {
    let mut limit = 100_u32;
    let mut after: Option<String> = None;
    for (k, v) in parse_query(q.as_deref()) {
        match k.as_str() {
            "limit" => match parse_limit(&v, 1000) {
                Ok(n) => limit = n,
                Err(m) => return bad_request(&m),
            },
            "cursor" => match URL_SAFE_NO_PAD.decode(&v).ok().and_then(|b| String::from_utf8(b).ok()) {
                Some(id) => after = Some(id),
                None => return bad_request("Invalid cursor"),
            },
            _ => {}
        }
    }
    let st = inner.lock();
    let rest: Vec<&WebhookSubscription> =
        st.subscriptions.values().filter(|s| after.as_ref().is_none_or(|a| s.id > *a)).collect();
    let page_len = rest.len().min(limit as usize);
    let next_cursor =
        (rest.len() > page_len).then(|| rest[..page_len].last().map(|s| URL_SAFE_NO_PAD.encode(&s.id))).flatten();
    Json(json!({"next_cursor": next_cursor, "items": &rest[..page_len]})).into_response()
}

/// `Idempotency-Key` is required; the same key with the same body answers the first answer again, with a
/// different body 422.
pub(super) async fn create_webhook(State(inner): Sim, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return bad_request("Idempotency-Key header is required");
    };
    let fingerprint = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let mut st = inner.lock();
    let window = inner.config.idempotency_window;
    st.webhook_idempotency.retain(|_, e| e.at.elapsed() < window);
    if let Some(entry) = st.webhook_idempotency.get(&key) {
        if entry.request != fingerprint {
            return error(
                false,
                StatusCode::UNPROCESSABLE_ENTITY,
                "BAD_REQUEST",
                "Idempotency-Key was already used with a different request body",
            );
        }
        let mut resp = (entry.status, Json(entry.body.clone())).into_response();
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        st.counters.idempotent_replays += 1;
        return resp;
    }
    let parsed = match serde_json::from_slice::<SubscriptionBody>(&body) {
        Ok(b) => validate_subscription(b, false),
        Err(e) => Err(Box::new(bad_request(&format!("Invalid request body: {e}")))),
    };
    let (url, event_types, status) = match parsed {
        Ok(v) => v,
        // Refusals are not remembered: the client may fix the body and retry with the same key.
        Err(resp) => return *resp,
    };
    st.subscription_seq += 1;
    let sub = WebhookSubscription { id: format!("wsub_{:012}", st.subscription_seq), url, event_types, status };
    let out = serde_json::to_value(&sub).unwrap_or(Value::Null);
    st.subscriptions.insert(sub.id.clone(), sub);
    st.webhook_idempotency
        .insert(key, IdemEntry { request: fingerprint, status: StatusCode::OK, body: out.clone(), at: Instant::now() });
    Json(out).into_response()
}

pub(super) async fn get_webhook(State(inner): Sim, Path(id): Path<String>) -> Response {
    match inner.lock().subscriptions.get(&id) {
        Some(sub) => Json(sub).into_response(),
        None => subscription_not_found(&id),
    }
}

/// `url`, `event_types` and `status` are all required (the older spec; the newer accepts the same body).
pub(super) async fn update_webhook(State(inner): Sim, Path(id): Path<String>, body: Bytes) -> Response {
    let (url, event_types, status) = match serde_json::from_slice::<SubscriptionBody>(&body) {
        Ok(b) => match validate_subscription(b, true) {
            Ok(v) => v,
            Err(resp) => return *resp,
        },
        Err(e) => return bad_request(&format!("Invalid request body: {e}")),
    };
    match inner.lock().subscriptions.get_mut(&id) {
        Some(sub) => {
            sub.url = url;
            sub.event_types = event_types;
            sub.status = status;
            Json(sub.clone()).into_response()
        }
        None => subscription_not_found(&id),
    }
}

pub(super) async fn delete_webhook(State(inner): Sim, Path(id): Path<String>) -> Response {
    match inner.lock().subscriptions.remove(&id) {
        Some(_) => Json(json!({})).into_response(),
        None => subscription_not_found(&id),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Test-side access

impl BrexSimHandle {
    /// Current secrets (ACTIVE first, then PENDING_REVOKE during a rotation).
    pub fn webhook_secrets(&self) -> Vec<WebhookSecret> {
        self.inner.lock().secrets.clone()
    }

    /// Just the secret strings, in the order signatures are emitted.
    pub fn webhook_secret_strings(&self) -> Vec<String> {
        self.webhook_secrets().into_iter().map(|s| s.secret).collect()
    }

    /// Starts a rotation: a new ACTIVE secret; the previous ACTIVE becomes PENDING_REVOKE. Returns the new one.
    pub fn rotate_webhook_secret(&self) -> String {
        let mut st = self.inner.lock();
        let new = random_secret(&mut st.rng);
        // Only one old key is kept: a second rotation before finishing drops the oldest.
        st.secrets.retain(|s| s.status == SecretStatus::Active);
        for s in &mut st.secrets {
            s.status = SecretStatus::PendingRevoke;
        }
        st.secrets.insert(0, WebhookSecret { secret: new.clone(), status: SecretStatus::Active });
        new
    }

    /// Ends a rotation: drops PENDING_REVOKE secrets.
    pub fn finish_rotation(&self) {
        self.inner.lock().secrets.retain(|s| s.status == SecretStatus::Active);
    }

    /// Every webhook subscription, in creation order.
    pub fn webhook_subscriptions(&self) -> Vec<WebhookSubscription> {
        self.inner.lock().subscriptions.values().cloned().collect()
    }

    /// Sets a subscription's status (Brex may turn a failing endpoint `INACTIVE`). False if unknown.
    pub fn set_webhook_subscription_status(&self, id: &str, status: &str) -> bool {
        match self.inner.lock().subscriptions.get_mut(id) {
            Some(sub) => {
                sub.status = status.to_owned();
                true
            }
            None => false,
        }
    }

    /// A sender that signs with the sim's current secrets at each attempt and counts deliveries.
    pub fn webhook_sender(&self) -> WebhookSender {
        let inner = self.inner.clone();
        WebhookSender::with_source(
            Arc::new(move || inner.lock().secrets.iter().map(|s| s.secret.clone()).collect()),
            self.inner.deliveries.clone(),
        )
    }

    /// `ACCOUNTING_RECORD_READY_FOR_EXPORT` body for these ids with this sim's company id.
    pub fn ready_for_export_body<S: AsRef<str>>(&self, ids: &[S]) -> Vec<u8> {
        webhook::ready_for_export_body(ids, &self.inner.config.company_id)
    }

    /// Delivers a ready-for-export webhook to `url` with Svix retries scaled by `time_scale`.
    pub async fn send_ready_for_export<S: AsRef<str>>(&self, url: &str, ids: &[S], time_scale: f64) -> DeliveryReport {
        let body = self.ready_for_export_body(ids);
        self.webhook_sender().time_scale(time_scale).send(&HttpTransport::new(url), body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_the_secret() {
        let w = WebhookSecret { secret: "whsec_x".into(), status: SecretStatus::Active };
        assert!(!format!("{w:?}").contains("whsec_x"));
    }
}
