//! Brex webhook delivery as Brex (Svix) does it: Standard-Webhooks signatures and the Svix retry schedule.
//!
//! Signature: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), key = base64-decode of the secret
//! after stripping `whsec_`; one entry per secret, space-separated (two during a rotation).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// Svix's default retry schedule: the delay before each attempt (the first is immediate).
pub const SVIX_SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// Svix counts a delivery as failed when the endpoint takes longer than this.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Computes the `webhook-signature` header value for `secrets` (one `v1,<b64>` entry per secret).
///
/// A secret that is not valid base64 (after stripping `whsec_`) is used as raw bytes, so a malformed secret
/// still yields a signature, just one no correct verifier will accept.
pub fn sign(msg_id: &str, timestamp_secs: i64, body: &[u8], secrets: &[String]) -> String {
    secrets
        .iter()
        .map(|secret| {
            let trimmed = secret.strip_prefix("whsec_").unwrap_or(secret);
            let key = STANDARD.decode(trimmed).unwrap_or_else(|_| trimmed.as_bytes().to_vec());
            // HMAC accepts keys of any length, so this cannot fail.
            let mut mac = match Hmac::<Sha256>::new_from_slice(&key) {
                Ok(m) => m,
                Err(_) => return String::new(),
            };
            mac.update(msg_id.as_bytes());
            mac.update(b".");
            mac.update(timestamp_secs.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which header names a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderFamily {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` (Standard Webhooks; what Brex documents).
    #[default]
    Webhook,
    /// `svix-id`, `svix-timestamp`, `svix-signature`.
    Svix,
}

/// One signed HTTP delivery: headers (lower-case names, incl. `content-type`) and the raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub msg_id: String,
    pub timestamp: i64,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WebhookDelivery {
    /// Signs `body` with every secret and builds the headers.
    pub fn new(msg_id: &str, timestamp: i64, body: Vec<u8>, secrets: &[String], family: HeaderFamily) -> Self {
        let prefix = match family {
            HeaderFamily::Webhook => "webhook",
            HeaderFamily::Svix => "svix",
        };
        let headers = vec![
            (format!("{prefix}-id"), msg_id.to_owned()),
            (format!("{prefix}-timestamp"), timestamp.to_string()),
            (format!("{prefix}-signature"), sign(msg_id, timestamp, &body, secrets)),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        WebhookDelivery { msg_id: msg_id.to_owned(), timestamp, headers, body }
    }

    /// The value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// `ACCOUNTING_RECORD_READY_FOR_EXPORT` body exactly as Brex documents it (snake `event_type`, camelCase rest).
pub fn ready_for_export_body<S: AsRef<str>>(ids: &[S], company_id: &str) -> Vec<u8> {
    let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
    serde_json::json!({
        "event_type": "ACCOUNTING_RECORD_READY_FOR_EXPORT",
        "accountingRecordIds": ids,
        "companyId": company_id,
    })
    .to_string()
    .into_bytes()
}

/// The older documented variant (`accounting_record_ids`, no company id), for leniency tests.
pub fn ready_for_export_body_snake<S: AsRef<str>>(ids: &[S]) -> Vec<u8> {
    let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
    serde_json::json!({
        "event_type": "ACCOUNTING_RECORD_READY_FOR_EXPORT",
        "accounting_record_ids": ids,
    })
    .to_string()
    .into_bytes()
}

/// Boxed future returned by a [`Transport`].
pub type TransportFuture<'a> = Pin<Box<dyn Future<Output = u16> + Send + 'a>>;

/// Delivers one signed request and returns the HTTP status (0 = connection error or timeout).
pub trait Transport: Send + Sync {
    fn deliver(&self, delivery: WebhookDelivery) -> TransportFuture<'_>;
}

impl<F, Fut> Transport for F
where
    F: Fn(WebhookDelivery) -> Fut + Send + Sync,
    Fut: Future<Output = u16> + Send + 'static,
{
    fn deliver(&self, delivery: WebhookDelivery) -> TransportFuture<'_> {
        Box::pin(self(delivery))
    }
}

/// POSTs deliveries to a URL.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    url: String,
}

impl HttpTransport {
    pub fn new(url: impl Into<String>) -> Self {
        let client = reqwest::Client::builder().timeout(DELIVERY_TIMEOUT).build().unwrap_or_default();
        HttpTransport { client, url: url.into() }
    }
}

impl Transport for HttpTransport {
    fn deliver(&self, delivery: WebhookDelivery) -> TransportFuture<'_> {
        Box::pin(async move {
            let mut req = self.client.post(&self.url);
            for (k, v) in &delivery.headers {
                req = req.header(k, v);
            }
            match req.body(delivery.body).send().await {
                Ok(resp) => resp.status().as_u16(),
                Err(e) => {
                    tracing::debug!(error = %e, "webhook delivery failed");
                    0
                }
            }
        })
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// 1-based.
    pub number: usize,
    /// The (unscaled) schedule delay that preceded this attempt.
    pub scheduled_delay_ms: u64,
    /// `webhook-timestamp` sent with this attempt (fresh per attempt).
    pub timestamp: i64,
    pub status: u16,
}

/// Outcome of [`WebhookSender::send`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    pub msg_id: String,
    pub attempts: Vec<Attempt>,
    /// Status of the last attempt.
    pub final_status: u16,
    pub delivered: bool,
}

type SecretSource = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Sends webhooks with Svix's retry behaviour: any 2xx is success; anything else (incl. 3xx, timeouts) is
/// retried on `schedule`, each delay multiplied by `time_scale`. Every attempt is re-signed with a fresh
/// timestamp and the current secrets, keeping the same message id.
#[derive(Clone)]
pub struct WebhookSender {
    secrets: SecretSource,
    pub schedule: Vec<Duration>,
    pub time_scale: f64,
    pub family: HeaderFamily,
    deliveries: Arc<AtomicU64>,
}

impl std::fmt::Debug for WebhookSender {
    // Secrets stay out of Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("schedule", &self.schedule)
            .field("time_scale", &self.time_scale)
            .field("family", &self.family)
            .field("deliveries", &self.deliveries.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// A sender signing with a fixed set of secrets.
    pub fn new(secrets: Vec<String>) -> Self {
        Self::with_source(Arc::new(move || secrets.clone()), Arc::default())
    }

    /// A sender reading secrets at each attempt and counting attempts into `deliveries`.
    pub(crate) fn with_source(secrets: SecretSource, deliveries: Arc<AtomicU64>) -> Self {
        WebhookSender {
            secrets,
            schedule: SVIX_SCHEDULE.to_vec(),
            time_scale: 1.0,
            family: HeaderFamily::Webhook,
            deliveries,
        }
    }

    /// Builder: scale every retry delay (e.g. 0.001 turns 10 h into 36 s).
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    /// Builder: header names.
    pub fn family(mut self, family: HeaderFamily) -> Self {
        self.family = family;
        self
    }

    /// Builder: custom schedule (delay before each attempt; length = max attempts).
    pub fn schedule(mut self, schedule: Vec<Duration>) -> Self {
        self.schedule = schedule;
        self
    }

    /// Delivery attempts made so far by this sender (and its clones).
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Sends `body` with a fresh `msg_…` id.
    pub async fn send(&self, transport: &dyn Transport, body: Vec<u8>) -> DeliveryReport {
        let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        self.send_with_id(transport, &msg_id, body).await
    }

    /// Sends `body` under `msg_id`, retrying on the schedule until a 2xx or the schedule runs out.
    pub async fn send_with_id(&self, transport: &dyn Transport, msg_id: &str, body: Vec<u8>) -> DeliveryReport {
        let mut attempts = Vec::new();
        for (i, delay) in self.schedule.iter().enumerate() {
            // A non-finite or negative scale means "no waiting" rather than a panic.
            let scaled = Duration::try_from_secs_f64(delay.as_secs_f64() * self.time_scale).unwrap_or(Duration::ZERO);
            if !scaled.is_zero() {
                tokio::time::sleep(scaled).await;
            }
            let timestamp = chrono::Utc::now().timestamp();
            let delivery = WebhookDelivery::new(msg_id, timestamp, body.clone(), &(self.secrets)(), self.family);
            self.deliveries.fetch_add(1, Ordering::Relaxed);
            let status = transport.deliver(delivery).await;
            attempts.push(Attempt {
                number: i + 1,
                scheduled_delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                timestamp,
                status,
            });
            if (200..300).contains(&status) {
                break;
            }
        }
        let final_status = attempts.last().map_or(0, |a| a.status);
        DeliveryReport {
            msg_id: msg_id.to_owned(),
            delivered: (200..300).contains(&final_status),
            final_status,
            attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn standard_webhooks_test_vector() {
        let sig = sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()],
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secret_without_prefix_signs_the_same_and_two_secrets_give_two_entries() {
        let body = b"{}";
        let with = sign("m", 1, body, &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()]);
        let without = sign("m", 1, body, &["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()]);
        assert_eq!(with, without);
        let two = sign("m", 1, body, &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(), "whsec_AAAA".into()]);
        let parts: Vec<&str> = two.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], with);
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn ready_for_export_body_is_camel_case() {
        let body = ready_for_export_body(&["accr_1", "accr_2"], "cuacc_1");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["event_type"], "ACCOUNTING_RECORD_READY_FOR_EXPORT");
        assert_eq!(v["accountingRecordIds"], serde_json::json!(["accr_1", "accr_2"]));
        assert_eq!(v["companyId"], "cuacc_1");
    }

    #[test]
    fn svix_family_headers() {
        let d = WebhookDelivery::new("msg_1", 5, b"{}".to_vec(), &["whsec_AAAA".into()], HeaderFamily::Svix);
        assert_eq!(d.header("svix-id"), Some("msg_1"));
        assert_eq!(d.header("Svix-Timestamp"), Some("5"));
        assert!(d.header("svix-signature").unwrap().starts_with("v1,"));
        assert!(d.header("webhook-id").is_none());
    }

    #[tokio::test]
    async fn retries_until_success_keeping_the_id() {
        let seen = Arc::new(Mutex::new(Vec::<WebhookDelivery>::new()));
        let s2 = seen.clone();
        let transport = move |d: WebhookDelivery| {
            let s2 = s2.clone();
            async move {
                let mut v = s2.lock().unwrap();
                v.push(d);
                if v.len() < 3 { 503 } else { 204 }
            }
        };
        let sender = WebhookSender::new(vec!["whsec_AAAA".into()]).time_scale(0.0);
        let report = sender.send(&transport, b"{}".to_vec()).await;
        assert!(report.delivered);
        assert_eq!(report.attempts.len(), 3);
        assert_eq!(report.attempts[1].scheduled_delay_ms, 5_000);
        assert_eq!(report.attempts[2].scheduled_delay_ms, 300_000);
        let seen = seen.lock().unwrap();
        assert!(seen.iter().all(|d| d.msg_id == report.msg_id));
        assert_eq!(sender.deliveries(), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_schedule() {
        let transport = |_d: WebhookDelivery| async { 302 };
        let sender = WebhookSender::new(vec![]).time_scale(0.0);
        let report = sender.send(&transport, b"{}".to_vec()).await;
        assert!(!report.delivered);
        assert_eq!(report.attempts.len(), 8);
        assert_eq!(report.final_status, 302);
    }
}
