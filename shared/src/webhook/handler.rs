//! The webhook handler: body cap, signature, payload, idempotency on the webhook id, enqueue — in that order,
//! so junk costs no secret fetch, and a body is only judged once its signature is valid. It answers a
//! [`WebhookOutcome`]; `crate::lambda::webhook` turns that into Brex's HTTP answer.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use http::HeaderMap;
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tracing::Instrument;

use super::verify::{SignedHeaders, VerifyError, WebhookVerifier};
use crate::domain::{AccountingRecordId, Origin, WebhookId, WorkItem};
use crate::metrics::Metrics;
use crate::ports::{Begin, Clock, IdempotencyKey, IdempotencyStore, WebhookSecretSource, WorkQueue};

pub const READY_FOR_EXPORT: &str = "ACCOUNTING_RECORD_READY_FOR_EXPORT";

#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Signature timestamp tolerance, both ways.
    pub tolerance: Duration,
    /// Larger bodies are refused as too large before any other work.
    pub max_body_bytes: usize,
    /// How long an accepted webhook id is remembered (Svix retries for about a day).
    pub retention: Duration,
    /// How long a claim on a webhook id blocks a concurrent delivery of the same id.
    pub lease: Duration,
    /// At most one re-fetch of the signing secrets per this interval after a signature mismatch.
    pub refetch_interval: Duration,
    /// With no secrets cached, a failed fetch is not retried sooner than this (each request would otherwise
    /// cost a Brex call).
    pub cold_retry_interval: Duration,
    /// More ids than this in one event is a malformed body.
    pub max_ids: usize,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            tolerance: Duration::seconds(300),
            max_body_bytes: 256 * 1024,
            retention: Duration::days(7),
            lease: Duration::seconds(60),
            refetch_interval: Duration::seconds(60),
            cold_retry_interval: Duration::seconds(5),
            max_ids: 10_000,
        }
    }
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The event's ids are durably queued: `enqueued` of them, repeats removed.
    Accepted { enqueued: usize },
    /// This webhook id was accepted before: nothing is queued again.
    Duplicate,
    /// Another event type: nothing to do.
    Ignored,
    /// The body is over the cap (judged before anything else).
    TooLarge,
    /// The signature is missing, wrong or expired.
    Unauthorized,
    /// The body behind a valid signature is not an event we can read.
    BadRequest(PayloadError),
    /// Another invocation is handling this webhook id right now.
    InProgress,
    /// Something the delivery needs cannot be reached; Brex retries it.
    Unavailable(Unavailable),
}

/// What a delivery needed and could not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    SigningSecrets,
    IdempotencyStore,
    WorkQueue,
}

#[derive(Default)]
struct SecretCache {
    verifier: Option<Arc<WebhookVerifier>>,
    last_fetch_attempt: Option<DateTime<Utc>>,
    /// Only re-fetches after a mismatch count against the once-per-interval budget: the cold-start fetch
    /// does not, or a rotation right after a cold start would be refused for a whole interval.
    last_refetch: Option<DateTime<Utc>>,
}

pub struct WebhookService {
    queue: Arc<dyn WorkQueue>,
    idempotency: Arc<dyn IdempotencyStore>,
    secrets: Arc<dyn WebhookSecretSource>,
    clock: Arc<dyn Clock>,
    options: WebhookOptions,
    cache: Mutex<SecretCache>,
    metrics: Metrics,
}

/// A parsed `ACCOUNTING_RECORD_READY_FOR_EXPORT` event, or another event type to ignore.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    ReadyForExport { ids: Vec<AccountingRecordId>, company_id: Option<String> },
    Other { event_type: String },
}

/// Why a signed body is not an event we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not JSON")]
    NotJson,
    #[error("body is not a JSON object")]
    NotObject,
    #[error("event_type is missing or not a string")]
    EventType,
    #[error("accountingRecordIds is missing or not a list")]
    IdsMissing,
    #[error("accountingRecordIds is empty")]
    IdsEmpty,
    #[error("more than {0} accounting record ids")]
    TooManyIds(usize),
    #[error("accounting record id #{0} is not a valid id string")]
    InvalidId(usize),
    #[error("companyId is not a string")]
    CompanyId,
}

fn parse_event(body: &[u8], max_ids: usize) -> Result<Event, PayloadError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| PayloadError::NotJson)?;
    let Value::Object(object) = value else { return Err(PayloadError::NotObject) };
    let event_type = object.get("event_type").and_then(Value::as_str).ok_or(PayloadError::EventType)?;
    if event_type != READY_FOR_EXPORT {
        return Ok(Event::Other { event_type: event_type.chars().take(64).collect() });
    }
    let ids = field(&object, "accountingRecordIds", "accounting_record_ids")
        .and_then(Value::as_array)
        .ok_or(PayloadError::IdsMissing)?;
    if ids.is_empty() {
        return Err(PayloadError::IdsEmpty);
    }
    if ids.len() > max_ids {
        return Err(PayloadError::TooManyIds(max_ids));
    }
    let ids = ids
        .iter()
        .enumerate()
        .map(|(i, v)| v.as_str().and_then(|s| AccountingRecordId::parse(s).ok()).ok_or(PayloadError::InvalidId(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let company_id = match field(&object, "companyId", "company_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.chars().take(128).collect()),
        Some(_) => return Err(PayloadError::CompanyId),
    };
    Ok(Event::ReadyForExport { ids, company_id })
}

/// Brex's documentation has shown the event's fields both in camelCase (current) and in snake_case.
fn field<'a>(object: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    object.get(camel).or_else(|| object.get(snake))
}

impl WebhookService {
    pub fn new(
        queue: Arc<dyn WorkQueue>,
        idempotency: Arc<dyn IdempotencyStore>,
        secrets: Arc<dyn WebhookSecretSource>,
        clock: Arc<dyn Clock>,
        options: WebhookOptions,
    ) -> Self {
        let cache = Mutex::new(SecretCache::default());
        Self { queue, idempotency, secrets, clock, options, cache, metrics: Metrics::default() }
    }

    /// Counts the deliveries into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn options(&self) -> &WebhookOptions {
        &self.options
    }

    pub async fn handle(&self, headers: &HeaderMap, body: &[u8]) -> WebhookOutcome {
        if body.len() > self.options.max_body_bytes {
            tracing::warn!(bytes = body.len(), outcome = "too_large", "webhook rejected");
            return WebhookOutcome::TooLarge;
        }
        let now = self.clock.now();

        // Headers and freshness first: they need no secrets, so junk never costs a Brex call.
        let parsed = match SignedHeaders::parse(headers, now, self.options.tolerance.num_seconds()) {
            Ok(parsed) => parsed,
            Err(err) => return unauthorized(None, &err),
        };
        let webhook_id = parsed.id.clone();
        match self.check_signature(&parsed, body, now).await {
            Ok(()) => {}
            Err(SignatureFailure::Unavailable) => return WebhookOutcome::Unavailable(Unavailable::SigningSecrets),
            Err(SignatureFailure::Invalid(err)) => return unauthorized(Some(&webhook_id), &err),
        }

        let (ids, company_id) = match parse_event(body, self.options.max_ids) {
            Ok(Event::ReadyForExport { ids, company_id }) => (ids, company_id),
            Ok(Event::Other { event_type }) => {
                tracing::info!(webhook_id = %webhook_id, event_type, outcome = "ignored", "webhook ignored");
                return WebhookOutcome::Ignored;
            }
            Err(err) => {
                tracing::warn!(webhook_id = %webhook_id, error = %err, outcome = "bad_request", "webhook rejected");
                return WebhookOutcome::BadRequest(err);
            }
        };
        // Every line logged while the records are handled carries their ids (the span's `records`).
        let records: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let span = tracing::info_span!("delivery", records = %records.join(","));
        self.accept(&webhook_id, &ids, company_id.as_deref(), now).instrument(span).await
    }

    async fn accept(
        &self,
        webhook_id: &WebhookId,
        ids: &[AccountingRecordId],
        company_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> WebhookOutcome {
        let key = IdempotencyKey::Delivery(webhook_id.clone());
        match self.idempotency.begin(&key, now + self.options.lease, now).await {
            Ok(Begin::Started) => {}
            Ok(Begin::Completed { .. } | Begin::Failed { .. }) => {
                tracing::info!(webhook_id = %webhook_id, outcome = "duplicate", "webhook already accepted");
                return WebhookOutcome::Duplicate;
            }
            Ok(Begin::InProgress { until }) => {
                tracing::info!(webhook_id = %webhook_id, %until, outcome = "in_progress", "webhook being handled");
                return WebhookOutcome::InProgress;
            }
            Err(err) => {
                tracing::error!(webhook_id = %webhook_id, error = %err, outcome = "store_unavailable", "webhook failed");
                return WebhookOutcome::Unavailable(Unavailable::IdempotencyStore);
            }
        }

        let items = WorkItem::accounting_records(ids, &Origin::Webhook { webhook_id: webhook_id.clone() }, now);
        let unique: usize = items.iter().map(WorkItem::len).sum();
        if let Err(err) = self.queue.enqueue(&items).await {
            tracing::error!(webhook_id = %webhook_id, error = %err, outcome = "queue_unavailable", "webhook failed");
            if let Err(release_err) = self.idempotency.release(&key).await {
                // The claim then simply expires after the lease; Brex's retry finds it in progress until then.
                tracing::warn!(webhook_id = %webhook_id, error = %release_err, "could not release webhook claim");
            }
            return WebhookOutcome::Unavailable(Unavailable::WorkQueue);
        }
        let result = format!("enqueued={unique}");
        if let Err(err) = self.idempotency.complete(&key, Some(&result), now + self.options.retention).await {
            // The work is durably queued, which is what acceptance promises; a redelivery after the lease would
            // queue the ids again, which the poster's per-record dedup absorbs.
            tracing::warn!(webhook_id = %webhook_id, error = %err, "could not record webhook completion");
        }
        tracing::info!(
            webhook_id = %webhook_id,
            company_id,
            ids = ids.len(),
            enqueued = unique,
            messages = items.len(),
            outcome = "accepted",
            "webhook accepted"
        );
        WebhookOutcome::Accepted { enqueued: unique }
    }

    async fn check_signature(
        &self,
        parsed: &SignedHeaders<'_>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), SignatureFailure> {
        let verifier = self.verifier(now).await?;
        match verifier.verify_parsed(parsed, body) {
            Err(VerifyError::NoMatchingSignature) => {}
            other => return other.map_err(SignatureFailure::Invalid),
        }
        // Perhaps the secret was rotated since we fetched it: re-fetch, but at most once per interval.
        match self.refetch(now).await {
            Some(fresh) => fresh.verify_parsed(parsed, body).map_err(SignatureFailure::Invalid),
            None => Err(SignatureFailure::Invalid(VerifyError::NoMatchingSignature)),
        }
    }

    /// The cached verifier, fetching the secrets on first use.
    async fn verifier(&self, now: DateTime<Utc>) -> Result<Arc<WebhookVerifier>, SignatureFailure> {
        let mut cache = self.cache.lock().await;
        if let Some(verifier) = &cache.verifier {
            return Ok(Arc::clone(verifier));
        }
        if cache.last_fetch_attempt.is_some_and(|at| now - at < self.options.cold_retry_interval) {
            return Err(SignatureFailure::Unavailable);
        }
        self.fetch_into(&mut cache, now).await.ok_or(SignatureFailure::Unavailable)
    }

    /// A fresh verifier if a re-fetch is allowed now and succeeds.
    async fn refetch(&self, now: DateTime<Utc>) -> Option<Arc<WebhookVerifier>> {
        let mut cache = self.cache.lock().await;
        if cache.last_refetch.is_some_and(|at| now - at < self.options.refetch_interval) {
            return None;
        }
        cache.last_refetch = Some(now);
        self.fetch_into(&mut cache, now).await
    }

    async fn fetch_into(&self, cache: &mut SecretCache, now: DateTime<Utc>) -> Option<Arc<WebhookVerifier>> {
        cache.last_fetch_attempt = Some(now);
        let secrets = match self.secrets.webhook_secrets().await {
            Ok(secrets) => secrets,
            Err(err) => {
                tracing::error!(error = %err, "could not fetch webhook signing secrets");
                return None;
            }
        };
        match WebhookVerifier::new_skipping_invalid(&secrets) {
            Ok((verifier, skipped)) => {
                if skipped > 0 {
                    tracing::warn!(skipped, "ignored unusable webhook signing secrets");
                }
                tracing::info!(secrets = verifier.key_count(), "webhook signing secrets loaded");
                let verifier = Arc::new(verifier.with_tolerance_secs(self.options.tolerance.num_seconds()));
                cache.verifier = Some(Arc::clone(&verifier));
                Some(verifier)
            }
            Err(err) => {
                tracing::error!(error = %err, fetched = secrets.len(), "no usable webhook signing secret");
                None
            }
        }
    }
}

enum SignatureFailure {
    Invalid(VerifyError),
    Unavailable,
}

fn unauthorized(webhook_id: Option<&WebhookId>, err: &VerifyError) -> WebhookOutcome {
    tracing::warn!(webhook_id = webhook_id.map(WebhookId::as_str), error = %err, outcome = "unauthorized", "webhook rejected");
    WebhookOutcome::Unauthorized
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;
    use base64::Engine as _;
    use http::HeaderValue;
    use serde_json::json;

    use super::*;
    use crate::domain::Secret;
    use crate::error::ExternalError;
    use crate::error::{AwsError, Disposition};
    use crate::lambda::webhook::WebhookResponse;
    use crate::memory::{ManualClock, MemoryQueue, MemoryStore};
    use crate::webhook::verify::sign;

    fn aws_down(operation: &'static str) -> AwsError {
        AwsError::new("test", operation, "down", Disposition::Retryable)
    }

    /// The in-memory queue, and SQS going down on demand.
    #[derive(Default)]
    struct FakeQueue {
        queue: MemoryQueue,
        fail: AtomicBool,
    }

    #[async_trait]
    impl WorkQueue for FakeQueue {
        async fn enqueue(&self, items: &[WorkItem]) -> Result<(), AwsError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(aws_down("SendMessageBatch"));
            }
            self.queue.enqueue(items).await
        }
    }

    fn delivery(id: &str) -> IdempotencyKey {
        IdempotencyKey::Delivery(WebhookId::parse(id).unwrap())
    }

    /// The in-memory table, DynamoDB going down on demand, and a count of the claims given back.
    #[derive(Default)]
    struct FakeStore {
        store: MemoryStore,
        fail: AtomicBool,
        releases: AtomicUsize,
    }

    impl FakeStore {
        /// The delivery's record as (status, result), if there is one.
        fn entry(&self, id: &str) -> Option<(String, Option<String>)> {
            self.store.idempotency_state(&delivery(id)).map(|s| (s.status, s.result))
        }

        fn is_empty(&self) -> bool {
            self.store.idempotency_states().is_empty()
        }
    }

    #[async_trait]
    impl IdempotencyStore for FakeStore {
        async fn begin(
            &self,
            key: &IdempotencyKey,
            lease_until: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> Result<Begin, AwsError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(aws_down("PutItem"));
            }
            self.store.begin(key, lease_until, now).await
        }
        async fn complete(
            &self,
            key: &IdempotencyKey,
            result: Option<&str>,
            retain_until: DateTime<Utc>,
        ) -> Result<(), AwsError> {
            self.store.complete(key, result, retain_until).await
        }
        async fn fail(&self, _: &IdempotencyKey, _: &str, _: DateTime<Utc>) -> Result<(), AwsError> {
            unreachable!("the webhook never fails a key permanently")
        }
        async fn hold(
            &self,
            _: &IdempotencyKey,
            _: &str,
            _: &str,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> Result<(), AwsError> {
            unreachable!("the webhook never holds a key")
        }
        async fn release(&self, key: &IdempotencyKey) -> Result<(), AwsError> {
            self.releases.fetch_add(1, Ordering::SeqCst);
            self.store.release(key).await
        }
    }

    #[derive(Default)]
    struct FakeSecrets {
        secrets: StdMutex<Vec<Secret>>,
        down: AtomicBool,
        fetches: AtomicUsize,
    }

    #[async_trait]
    impl WebhookSecretSource for FakeSecrets {
        async fn webhook_secrets(&self) -> Result<Vec<Secret>, ExternalError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(ExternalError::new("brex", "down", Disposition::Retryable));
            }
            Ok(self.secrets.lock().unwrap().clone())
        }
    }

    struct Rig {
        service: WebhookService,
        queue: Arc<FakeQueue>,
        store: Arc<FakeStore>,
        secrets: Arc<FakeSecrets>,
        clock: Arc<ManualClock>,
    }

    fn secret(n: u8) -> Secret {
        Secret::new(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([n; 32])))
    }

    fn rig() -> Rig {
        let queue = Arc::new(FakeQueue::default());
        let store = Arc::new(FakeStore::default());
        let secrets = Arc::new(FakeSecrets::default());
        *secrets.secrets.lock().unwrap() = vec![secret(1)];
        let clock = Arc::new(ManualClock::new(DateTime::from_timestamp(1_750_000_000, 0).unwrap()));
        let service = WebhookService::new(
            queue.clone(),
            store.clone(),
            secrets.clone(),
            clock.clone(),
            WebhookOptions::default(),
        );
        Rig { service, queue, store, secrets, clock }
    }

    impl Rig {
        fn signed(&self, with: &Secret, id: &str, body: &[u8]) -> HeaderMap {
            let ts = self.clock.now().timestamp();
            let mut h = HeaderMap::new();
            h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
            h.insert("webhook-timestamp", HeaderValue::from_str(&ts.to_string()).unwrap());
            h.insert("webhook-signature", HeaderValue::from_str(&sign(with, id, ts, body).unwrap()).unwrap());
            h
        }

        async fn send(&self, id: &str, body: &[u8]) -> WebhookResponse {
            self.handle(&self.signed(&secret(1), id, body), body).await
        }

        /// The service's outcome as Brex is answered it.
        async fn handle(&self, headers: &HeaderMap, body: &[u8]) -> WebhookResponse {
            WebhookResponse::from(&self.service.handle(headers, body).await)
        }

        fn queued_ids(&self) -> Vec<String> {
            self.queue
                .queue
                .sent()
                .iter()
                .flat_map(|item| match item {
                    WorkItem::AccountingRecords { ids, .. } => ids.iter().map(|i| i.to_string()).collect(),
                    WorkItem::Expenses { .. } => Vec::new(),
                })
                .collect()
        }
    }

    fn ready(ids: &[&str]) -> Vec<u8> {
        json!({ "event_type": READY_FOR_EXPORT, "accountingRecordIds": ids, "companyId": "cuacc_1" })
            .to_string()
            .into_bytes()
    }

    fn body_json(response: &WebhookResponse) -> Value {
        serde_json::from_str(&response.body).unwrap()
    }

    #[tokio::test]
    async fn ready_event_is_enqueued_once_and_replies_200() {
        let rig = rig();
        let response = rig.send("msg_1", &ready(&["accr_1", "accr_2", "accr_1"])).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(body_json(&response), json!({ "status": "accepted", "enqueued": 2 }));
        assert_eq!(rig.queued_ids(), ["accr_1", "accr_2"]);
        let items = rig.queue.queue.sent();
        assert_eq!(items[0].origin(), &Origin::Webhook { webhook_id: WebhookId::parse("msg_1").unwrap() });
        assert_eq!(rig.store.entry("msg_1"), Some(("COMPLETED".into(), Some("enqueued=2".into()))));

        // Brex redelivers the same id: 200, nothing new on the queue.
        let again = rig.send("msg_1", &ready(&["accr_1", "accr_2"])).await;
        assert_eq!((again.status, body_json(&again)), (200, json!({ "status": "duplicate" })));
        assert_eq!(rig.queued_ids().len(), 2);
    }

    #[tokio::test]
    async fn snake_case_payload_and_many_ids_are_chunked() {
        let rig = rig();
        let ids: Vec<String> = (0..120).map(|i| format!("accr_{i}")).collect();
        let body = json!({ "event_type": READY_FOR_EXPORT, "accounting_record_ids": ids, "company_id": null });
        let response = rig.send("msg_2", body.to_string().as_bytes()).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(rig.queue.queue.sent().len(), 3);
        assert_eq!(rig.queued_ids().len(), 120);
    }

    #[tokio::test]
    async fn other_event_types_are_ignored_with_200() {
        let rig = rig();
        let body = br#"{"event_type":"EXPENSE_PAYMENT_UPDATED","expense_id":"x"}"#;
        let response = rig.send("msg_3", body).await;
        assert_eq!((response.status, body_json(&response)), (200, json!({ "status": "ignored" })));
        assert!(rig.queued_ids().is_empty());
        assert!(rig.store.is_empty());
    }

    #[tokio::test]
    async fn oversized_body_is_413_before_anything_else() {
        let rig = rig();
        let body = vec![b' '; 256 * 1024 + 1];
        let response = rig.handle(&HeaderMap::new(), &body).await;
        assert_eq!(response.status, 413);
        assert_eq!(rig.secrets.fetches.load(Ordering::SeqCst), 0);
        // Exactly at the cap is judged on its merits (here: no headers → 401).
        let response = rig.handle(&HeaderMap::new(), &body[..256 * 1024]).await;
        assert_eq!(response.status, 401);
    }

    #[tokio::test]
    async fn bad_signatures_are_401_and_never_enqueue() {
        let rig = rig();
        let body = ready(&["accr_1"]);
        let mut wrong = rig.signed(&secret(7), "msg_4", &body);
        assert_eq!(rig.handle(&wrong, &body).await.status, 401);
        wrong.remove("webhook-signature");
        assert_eq!(rig.handle(&wrong, &body).await.status, 401);

        let stale = rig.signed(&secret(1), "msg_4", &body);
        rig.clock.advance(Duration::seconds(301));
        assert_eq!(rig.handle(&stale, &body).await.status, 401);

        let fresh = rig.signed(&secret(1), "msg_4", &body);
        let tampered = ready(&["accr_2"]);
        assert_eq!(rig.handle(&fresh, &tampered).await.status, 401);
        assert!(rig.queued_ids().is_empty());
        assert!(rig.store.is_empty());
    }

    #[tokio::test]
    async fn malformed_bodies_after_a_valid_signature_are_400() {
        let rig = rig();
        let too_many: Vec<String> = (0..10_001).map(|i| format!("accr_{i}")).collect();
        let cases: Vec<Vec<u8>> = vec![
            b"not json".to_vec(),
            b"[1,2]".to_vec(),
            b"{}".to_vec(),
            br#"{"event_type":7}"#.to_vec(),
            json!({ "event_type": READY_FOR_EXPORT }).to_string().into_bytes(),
            json!({ "event_type": READY_FOR_EXPORT, "accountingRecordIds": "accr_1" }).to_string().into_bytes(),
            ready(&[]),
            json!({ "event_type": READY_FOR_EXPORT, "accountingRecordIds": ["accr_1", 5] }).to_string().into_bytes(),
            ready(&["accr_1", "accr_'or'1"]),
            json!({ "event_type": READY_FOR_EXPORT, "accountingRecordIds": too_many }).to_string().into_bytes(),
            json!({ "event_type": READY_FOR_EXPORT, "accountingRecordIds": ["accr_1"], "companyId": 5 })
                .to_string()
                .into_bytes(),
            vec![0xff, 0xfe, 0x00],
        ];
        for (i, body) in cases.iter().enumerate() {
            let response = rig.send(&format!("msg_bad_{i}"), body).await;
            assert_eq!(response.status, 400, "case {i}: {}", response.body);
            assert!(body_json(&response)["error"].is_string());
        }
        assert!(rig.queued_ids().is_empty());
    }

    #[tokio::test]
    async fn queue_failure_releases_the_claim_and_answers_503() {
        let rig = rig();
        let body = ready(&["accr_1"]);
        rig.queue.fail.store(true, Ordering::SeqCst);
        assert_eq!(rig.send("msg_5", &body).await.status, 503);
        assert_eq!(rig.store.releases.load(Ordering::SeqCst), 1);
        assert!(rig.store.is_empty());

        // Brex's retry succeeds once SQS is back.
        rig.queue.fail.store(false, Ordering::SeqCst);
        assert_eq!(rig.send("msg_5", &body).await.status, 200);
        assert_eq!(rig.queued_ids(), ["accr_1"]);
    }

    #[tokio::test]
    async fn store_failure_is_503_and_in_progress_is_409() {
        let rig = rig();
        let body = ready(&["accr_1"]);
        rig.store.fail.store(true, Ordering::SeqCst);
        assert_eq!(rig.send("msg_6", &body).await.status, 503);
        rig.store.fail.store(false, Ordering::SeqCst);

        let until = rig.clock.now() + Duration::seconds(30);
        // Another invocation holds the claim.
        rig.store.store.begin(&delivery("msg_7"), until, rig.clock.now()).await.unwrap();
        assert_eq!(rig.send("msg_7", &body).await.status, 409);
        assert!(rig.queued_ids().is_empty());
        // An expired claim (crashed invocation) is taken over.
        rig.clock.advance(Duration::seconds(31));
        assert_eq!(rig.send("msg_7", &body).await.status, 200);
    }

    #[tokio::test]
    async fn secrets_are_fetched_once_and_cached() {
        let rig = rig();
        for i in 0..5 {
            assert_eq!(rig.send(&format!("msg_c{i}"), &ready(&["accr_1"])).await.status, 200);
        }
        assert_eq!(rig.secrets.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn mismatch_refetches_at_most_once_per_minute() {
        let rig = rig();
        assert_eq!(rig.send("msg_r0", &ready(&["accr_1"])).await.status, 200);
        assert_eq!(rig.secrets.fetches.load(Ordering::SeqCst), 1);

        // Forged signatures: the first mismatch may re-fetch once the minute since the last fetch is over,
        // every later one within the minute may not.
        rig.clock.advance(Duration::seconds(61));
        let body = ready(&["accr_1"]);
        for i in 0..10 {
            let h = rig.signed(&secret(9), &format!("msg_f{i}"), &body);
            assert_eq!(rig.handle(&h, &body).await.status, 401);
        }
        assert_eq!(rig.secrets.fetches.load(Ordering::SeqCst), 2);

        // Brex rotates: the new secret verifies after a re-fetch, and the old one keeps working meanwhile.
        *rig.secrets.secrets.lock().unwrap() = vec![secret(2), secret(1)];
        let h = rig.signed(&secret(2), "msg_rot", &body);
        assert_eq!(rig.handle(&h, &body).await.status, 401, "within the minute: no re-fetch yet");
        rig.clock.advance(Duration::seconds(60));
        let h = rig.signed(&secret(2), "msg_rot", &body);
        assert_eq!(rig.handle(&h, &body).await.status, 200);
        assert_eq!(rig.secrets.fetches.load(Ordering::SeqCst), 3);
        let h = rig.signed(&secret(1), "msg_old", &body);
        assert_eq!(rig.handle(&h, &body).await.status, 200);
        assert_eq!(rig.secrets.fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn secret_source_down_with_empty_cache_is_503_without_a_fetch_per_request() {
        let rig = rig();
        rig.secrets.down.store(true, Ordering::SeqCst);
        let body = ready(&["accr_1"]);
        for _ in 0..3 {
            assert_eq!(rig.send("msg_d", &body).await.status, 503);
        }
        assert_eq!(rig.secrets.fetches.load(Ordering::SeqCst), 1);
        rig.secrets.down.store(false, Ordering::SeqCst);
        rig.clock.advance(Duration::seconds(6));
        assert_eq!(rig.send("msg_d", &body).await.status, 200);
        // Unsigned junk never triggers a fetch.
        let fresh = super::tests::rig();
        assert_eq!(fresh.handle(&HeaderMap::new(), &body).await.status, 401);
        assert_eq!(fresh.secrets.fetches.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn source_down_with_a_cache_keeps_verifying() {
        let rig = rig();
        assert_eq!(rig.send("msg_k1", &ready(&["accr_1"])).await.status, 200);
        rig.secrets.down.store(true, Ordering::SeqCst);
        rig.clock.advance(Duration::seconds(120));
        assert_eq!(rig.send("msg_k2", &ready(&["accr_2"])).await.status, 200);
        let body = ready(&["accr_3"]);
        let forged = rig.signed(&secret(8), "msg_k3", &body);
        assert_eq!(rig.handle(&forged, &body).await.status, 401);
    }

    #[test]
    fn parse_event_never_panics_on_odd_input() {
        for body in [&b""[..], b"null", b"\"s\"", b"{\"event_type\":null}", b"{\"event_type\":\"\"}", b"{{{{"] {
            let _ = parse_event(body, 10);
        }
        assert_eq!(parse_event(br#"{"event_type":"X"}"#, 10), Ok(Event::Other { event_type: "X".into() }));
        assert_eq!(
            parse_event(
                br#"{"event_type":"ACCOUNTING_RECORD_READY_FOR_EXPORT","accountingRecordIds":["accr_1"],"accounting_record_ids":["accr_2"]}"#,
                10
            ),
            Ok(Event::ReadyForExport { ids: vec![AccountingRecordId::parse("accr_1").unwrap()], company_id: None })
        );
    }
}
