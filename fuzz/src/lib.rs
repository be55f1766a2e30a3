//! The bodies of the fuzz targets, shared by the libFuzzer binaries (`fuzz_targets/*.rs`, nightly +
//! cargo-fuzz) and the stable `smoke` driver. Each one feeds outside input to a public entry point of
//! `shared` and checks what must hold for *every* input, not only that nothing panics.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use shared::brex::model::AccountingRecord;
use shared::domain::{AccountingRecordId, Secret, WebhookId, WorkItem};
use shared::error::ExternalError;
use shared::error::{AwsError, Classify, Disposition};
use shared::ifs::error::{MI_MODIFIED_ERROR, ODP_MISSING_PRECONDITION, classify_status, parse_error_body};
use shared::lambda::webhook::WebhookResponse;
use shared::mapping::MappingDocument;
use shared::ports::{Begin, Clock, IdempotencyKey, IdempotencyStore, WebhookSecretSource, WorkQueue};
use shared::webhook::{WebhookOptions, WebhookService, WebhookVerifier};

/// The fixed "now" of every target (signatures are judged against it).
const NOW: i64 = 1_750_000_000;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOLERANCE: i64 = 300;

/// One fuzz target body.
pub type Target = fn(&[u8]);

/// The target names, in the order the scripts run them.
pub const TARGETS: [(&str, Target); 5] = [
    ("signature", signature),
    ("webhook_body", webhook_body),
    ("brex_record", brex_record),
    ("ifs_error", ifs_error),
    ("mapping_toml", mapping_toml),
];

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).unwrap_or_default()
}

fn secret() -> Secret {
    Secret::new(SECRET)
}

/// `v1,<base64 HMAC>` over exactly these bytes, computed here independently of `shared`.
fn expected_entry(id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = B64.decode(SECRET.trim_start_matches("whsec_")).unwrap_or_default();
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&key) else { return String::new() };
    for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
        mac.update(part);
    }
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Splits `data` at the first `n - 1` zero bytes.
fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0).collect();
    out.resize(n, &[]);
    out
}

/// Signature header parsing and verification (`shared::webhook::verify`).
///
/// Input: `flags, offset, id \0 timestamp \0 signature header \0 body`. Flags pick the header family, whether
/// the timestamp is `NOW + offset·10` instead of the fuzzed text, whether a correct entry is put in front of
/// the fuzzed signature header, and whether a header of the other family is mixed in.
///
/// Must hold: an accepted request carries the exact correct `v1,` entry for its id, timestamp and body,
/// within ±300 s; a request the fuzzer made correct (and kept well-formed) is accepted.
pub fn signature(data: &[u8]) {
    let [flags, offset] = [data.first().copied().unwrap_or(0), data.get(1).copied().unwrap_or(0)];
    let rest = data.get(2..).unwrap_or_default();
    let parts = fields(rest, 4);
    let (id, raw_ts, raw_sig, body) = (parts[0], parts[1], parts[2], parts[3]);
    let svix = flags & 1 != 0;
    let fixed_ts = (NOW + i64::from(offset as i8) * 10).to_string();
    let ts: &[u8] = if flags & 2 != 0 { fixed_ts.as_bytes() } else { raw_ts };
    let trimmed = |b: &[u8]| std::str::from_utf8(b).map(|s| s.trim().to_owned()).ok();
    let (id_text, ts_text) = (trimmed(id), trimmed(ts));
    let correct = match (&id_text, &ts_text) {
        (Some(i), Some(t)) => expected_entry(i, t, body),
        _ => String::new(),
    };
    let sig: Vec<u8> = if flags & 4 != 0 { [correct.as_bytes(), b" ", raw_sig].concat() } else { raw_sig.to_vec() };
    let prefix = if svix { "svix" } else { "webhook" };
    let mut headers = HeaderMap::new();
    let mut well_formed = true;
    for (name, value) in [("id", id), ("timestamp", ts), ("signature", sig.as_slice())] {
        let name = HeaderName::try_from(format!("{prefix}-{name}")).ok();
        match (name, HeaderValue::from_bytes(value)) {
            (Some(name), Ok(value)) if value.to_str().is_ok() => {
                headers.insert(name, value);
            }
            (Some(name), Ok(value)) => {
                headers.insert(name, value);
                well_formed = false;
            }
            _ => well_formed = false,
        }
    }
    let mixed = flags & 8 != 0;
    if mixed {
        let other = if svix { "webhook-id" } else { "svix-id" };
        headers.insert(other, HeaderValue::from_static("msg_other"));
    }

    static VERIFIER: OnceLock<Option<WebhookVerifier>> = OnceLock::new();
    let Some(verifier) = VERIFIER.get_or_init(|| WebhookVerifier::new(&[secret()]).ok()) else {
        panic!("the fixed secret is valid");
    };
    let result = verifier.verify(&headers, body, now());
    if let Ok(verified) = &result {
        let header = headers.get(format!("{prefix}-signature")).and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(header.trim().split(' ').any(|e| e == correct), "accepted a signature that is not the correct one");
        assert!((verified.timestamp - NOW).abs() <= TOLERANCE, "accepted a stale or future timestamp");
        assert_eq!(Some(verified.id.as_str()), id_text.as_deref(), "verified another id than the header's");
        assert!(!(mixed && svix), "a webhook-* header makes the svix-* family invalid");
    }
    let fresh = ts_text.as_deref().is_some_and(|t| {
        !t.is_empty()
            && t.len() <= 18
            && t.bytes().all(|b| b.is_ascii_digit())
            && t.parse::<i64>().is_ok_and(|t| (t - NOW).abs() <= TOLERANCE)
    });
    let valid_id = id_text.as_deref().is_some_and(|i| WebhookId::parse(i).is_ok());
    if flags & 4 != 0 && well_formed && fresh && valid_id && !mixed {
        assert!(result.is_ok(), "a correctly signed request was refused: {result:?}");
    }
}

// ---------------------------------------------------------------------------------------------- webhook body

#[derive(Default)]
struct Queue(Mutex<Vec<WorkItem>>);

#[async_trait]
impl WorkQueue for Queue {
    async fn enqueue(&self, items: &[WorkItem]) -> Result<(), AwsError> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(items);
        Ok(())
    }
}

#[derive(Default)]
struct Store(Mutex<std::collections::HashSet<IdempotencyKey>>);

#[async_trait]
impl IdempotencyStore for Store {
    async fn begin(&self, key: &IdempotencyKey, _: DateTime<Utc>, _: DateTime<Utc>) -> Result<Begin, AwsError> {
        let fresh = self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone());
        Ok(if fresh { Begin::Started } else { Begin::Completed { result: None } })
    }
    async fn complete(&self, _: &IdempotencyKey, _: Option<&str>, _: DateTime<Utc>) -> Result<(), AwsError> {
        Ok(())
    }
    async fn fail(&self, _: &IdempotencyKey, _: &str, _: DateTime<Utc>) -> Result<(), AwsError> {
        Ok(())
    }
    async fn hold(
        &self,
        _: &IdempotencyKey,
        _: &str,
        _: &str,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        Ok(())
    }
    async fn release(&self, key: &IdempotencyKey) -> Result<(), AwsError> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        Ok(())
    }
}

struct Secrets;

#[async_trait]
impl WebhookSecretSource for Secrets {
    async fn webhook_secrets(&self) -> Result<Vec<Secret>, ExternalError> {
        Ok(vec![secret()])
    }
}

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        now()
    }
}

struct Rig {
    runtime: tokio::runtime::Runtime,
    service: WebhookService,
    queue: Arc<Queue>,
    store: Arc<Store>,
}

thread_local! {
    static RIG: RefCell<Option<Rig>> = const { RefCell::new(None) };
}

fn rig() -> Option<Rig> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().ok()?;
    let (queue, store) = (Arc::new(Queue::default()), Arc::new(Store::default()));
    let service = WebhookService::new(
        queue.clone(),
        store.clone(),
        Arc::new(Secrets),
        Arc::new(FixedClock),
        WebhookOptions::default(),
    );
    Some(Rig { runtime, service, queue, store })
}

/// What a validly signed body must be answered (`shared::lambda::webhook`), judged independently of the handler.
fn expected_status(body: &[u8], max_bytes: usize, max_ids: usize) -> (u16, Option<usize>) {
    if body.len() > max_bytes {
        return (413, None);
    }
    let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(body) else { return (400, None) };
    match event.get("event_type").and_then(Value::as_str) {
        None => return (400, None),
        Some(t) if t != "ACCOUNTING_RECORD_READY_FOR_EXPORT" => return (200, None),
        Some(_) => {}
    }
    let ids = event.get("accountingRecordIds").or_else(|| event.get("accounting_record_ids"));
    let Some(Value::Array(ids)) = ids else { return (400, None) };
    if ids.is_empty() || ids.len() > max_ids {
        return (400, None);
    }
    let mut unique = std::collections::BTreeSet::new();
    for id in ids {
        match id.as_str().map(AccountingRecordId::parse) {
            Some(Ok(id)) => unique.insert(id),
            _ => return (400, None),
        };
    }
    match event.get("companyId").or_else(|| event.get("company_id")) {
        None | Some(Value::Null | Value::String(_)) => (200, Some(unique.len())),
        Some(_) => (400, None),
    }
}

/// The webhook handler on a validly signed body (`WebhookService::handle`, the Lambda's entry point): the
/// body is the fuzz input, signed correctly, so it gets past the signature to the payload parser.
///
/// Must hold: the status that body must get (judged independently here), the ids enqueued are
/// exactly the body's distinct ids, and nothing is enqueued for any other answer.
pub fn webhook_body(data: &[u8]) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RIG.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = rig();
        }
        let Some(rig) = cell.as_ref() else { return };
        rig.queue.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
        rig.store.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let id = format!("msg_fuzz_{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        let ts = NOW.to_string();
        let mut headers = HeaderMap::new();
        for (name, value) in [("webhook-id", id.clone()), ("webhook-timestamp", ts.clone())] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        if let Ok(value) = HeaderValue::from_str(&expected_entry(&id, &ts, data)) {
            headers.insert("webhook-signature", value);
        }
        let options = rig.service.options();
        let (status, enqueued) = expected_status(data, options.max_body_bytes, options.max_ids);
        let answer = WebhookResponse::from(&rig.runtime.block_on(rig.service.handle(&headers, data)));
        assert_eq!(answer.status, status, "answer {}", answer.body);
        let queued: usize = rig.queue.0.lock().unwrap_or_else(|e| e.into_inner()).iter().map(WorkItem::len).sum();
        assert_eq!(queued, enqueued.unwrap_or(0), "enqueued ids");
        assert!(serde_json::from_str::<Value>(&answer.body).is_ok(), "the reply is JSON");
    });
}

// ---------------------------------------------------------------------------------------------- parsers

/// Brex accounting records (`shared::brex::model::AccountingRecord`, parsed from Brex's answers).
///
/// Must hold: what parses can be used (refund, spend id, posting date, field look-ups) and survives a
/// serialise/parse round trip unchanged, so nothing the poster stores or logs is a different record.
pub fn brex_record(data: &[u8]) {
    let Ok(record) = serde_json::from_slice::<AccountingRecord>(data) else { return };
    let _ = (record.is_refund(), record.spend_id(), record.posting_date());
    for line in &record.line_items {
        let _ = (line.field("GL Account"), line.remote_field("GL_ACCOUNT"));
    }
    let text = serde_json::to_string(&record).unwrap_or_else(|e| panic!("a parsed record does not serialise: {e}"));
    let again: AccountingRecord =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("a serialised record does not parse: {e}: {text}"));
    assert_eq!(again, record, "round trip changed the record");
}

/// IFS error bodies (`shared::ifs::error`): parse, then classify under every status the client meets.
///
/// Must hold: a body that is not IFS's JSON envelope yields at most 300 characters of message; the classes by
/// who is at fault: 429, 502–504 and 500 `MI_MODIFIED_ERROR` are retried; auth, 404/405/501, 428
/// and OData-layer (`ODP_…`) 4xx hold the record and name a fix; other answers are the record's own.
pub fn ifs_error(data: &[u8]) {
    let body = parse_error_body(data);
    let envelope = serde_json::from_slice::<Value>(data).ok().is_some_and(|v| v.get("error").is_some());
    if !envelope {
        assert!(body.message.chars().count() <= 300, "raw error text not capped");
    }
    for status in [400u16, 401, 403, 404, 409, 412, 422, 428, 429, 500, 501, 502, 503, 504] {
        let err = classify_status(status, &body, None, "VoucherEntryAssistantHandling.svc/VoucherSet");
        let _ = err.to_string();
        let odata_layer = body.code.starts_with("ODP_");
        let expected = match status {
            _ if body.code == ODP_MISSING_PRECONDITION => Disposition::Hold,
            429 | 502..=504 => Disposition::Retryable,
            500 if body.code == MI_MODIFIED_ERROR => Disposition::Retryable,
            401 | 403 | 404 | 405 | 428 | 501 => Disposition::Hold,
            400..=499 if odata_layer => Disposition::Hold,
            _ => Disposition::Permanent,
        };
        assert_eq!(err.disposition(), expected, "status {status} code {:?}", body.code);
        let external: ExternalError = err.into();
        assert_eq!(external.disposition, expected);
        assert_eq!(external.fix.is_some(), expected == Disposition::Hold, "a held error names its fix");
    }
}

/// The mapping document (`MappingDocument::parse`), written by people and stored in DynamoDB.
///
/// Must hold: parsing is deterministic (same text, same document or the same error).
pub fn mapping_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let first = MappingDocument::parse(text);
    let second = MappingDocument::parse(text);
    assert_eq!(format!("{first:?}"), format!("{second:?}"), "parsing is not deterministic");
    if let Err(err) = &first {
        let _ = err.to_string();
    }
}
