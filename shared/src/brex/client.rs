//! The Brex HTTP client: accounting records (by id and by filter), export results, webhook secrets.
//!
//! Every request goes through the token bucket, carries the bearer token, and is retried by one policy:
//! 429 (honouring `Retry-After`), 5xx and transport failures are retried with capped, fully jittered
//! exponential backoff; other 4xx are final. A 401 invalidates an OAuth token and is retried once.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::auth::BrexAuth;
use super::error::{BrexError, status_is_retryable};
use super::model::{AccountingRecord, RecordPage, ReviewStatus, SourceType};
use crate::domain::{AccountingRecordId, Secret};
use crate::metrics::{Metric, Metrics};
use crate::retry::{RetryPolicy, TokenBucket, parse_retry_after};

/// Brex's documented maximum of `ids` per query, reused as the export-results batch size.
pub const MAX_IDS_PER_CALL: usize = 500;
/// Guards against a server that keeps handing out cursors.
const MAX_PAGES: usize = 1000;
/// Rounds of "drop the ids Brex says are done, send the rest" per export-results batch.
const MAX_EXPORT_ROUNDS: usize = 3;

#[derive(Debug, Clone)]
pub struct BrexConfig {
    /// `BREX_API_URL`, e.g. `https://api.brex.com`.
    pub base_url: String,
    /// `BREX_REQUESTS_PER_MINUTE`.
    pub requests_per_minute: u32,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Where requests and 429s are counted (off by default).
    pub metrics: Metrics,
}

impl BrexConfig {
    pub fn new(base_url: impl Into<String>, requests_per_minute: u32) -> Self {
        Self {
            base_url: base_url.into(),
            requests_per_minute,
            retry: RetryPolicy::brex(),
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            metrics: Metrics::default(),
        }
    }
}

#[derive(Debug)]
pub struct BrexClient {
    http: reqwest::Client,
    base: String,
    auth: BrexAuth,
    limiter: TokenBucket,
    retry: RetryPolicy,
    metrics: Metrics,
}

/// An item Brex returned that does not parse as an accounting record. Reported instead of failing the
/// whole batch.
#[derive(Debug, Clone, PartialEq)]
pub struct MalformedRecord {
    /// The item's id, when it has a valid one.
    pub id: Option<AccountingRecordId>,
    pub error: String,
}

/// The outcome of [`BrexClient::records_by_ids`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordFetch {
    pub records: Vec<AccountingRecord>,
    pub malformed: Vec<MalformedRecord>,
    /// Asked for, not returned (deleted, or not visible to this token).
    pub missing: Vec<AccountingRecordId>,
}

/// A polling query (`GET /v3/accounting/records` with filters). `updated_after` is required: Brex's
/// default window silently returns nothing for older records.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordQuery {
    pub source_type: Option<SourceType>,
    /// Brex accepts it only together with `source_type` CARD or REIMBURSEMENT.
    pub review_status: Option<ReviewStatus>,
    /// Sent as `updated_at[gt]`.
    pub updated_after: DateTime<Utc>,
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordQueryPage {
    pub records: Vec<AccountingRecord>,
    pub malformed: Vec<MalformedRecord>,
    pub next_cursor: Option<String>,
    pub has_next_page: bool,
}

/// One entry of `POST /v3/accounting/records/export-results`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportResult {
    pub accounting_record_id: AccountingRecordId,
    #[serde(flatten)]
    pub outcome: ExportStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportStatus {
    Success {
        reference_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        deep_link_url: Option<String>,
    },
    Failure {
        error_message: String,
    },
}

/// What Brex did with reported results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Brex's `updated_accounting_record_ids`.
    pub updated: Vec<AccountingRecordId>,
    /// Refused with 422 `ACCOUNTING_RECORD_NOT_READY_FOR_EXPORT`: no longer READY_FOR_EXPORT, i.e. exported
    /// already (by an earlier report whose answer we did not see). Counts as done.
    pub already_exported: Vec<AccountingRecordId>,
    /// Refused with 404: Brex does not know these ids.
    pub not_found: Vec<AccountingRecordId>,
}

/// One signing secret from `GET /v1/webhooks/secrets`.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSecretEntry {
    pub secret: Secret,
    /// `ACTIVE` or `PENDING_REVOKE`; both still sign during a rotation.
    #[serde(default)]
    pub status: Option<String>,
}

/// A webhook subscription (`GET /v1/webhooks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSubscription {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub event_types: Vec<String>,
    /// `ACTIVE` or `INACTIVE` (older spec: also `ERROR`).
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Deserialize)]
struct WebhookPage {
    #[serde(default)]
    items: Vec<WebhookSubscription>,
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct SubscriptionRequest<'a> {
    url: &'a str,
    event_types: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

/// A final answer (success, a non-retryable failure, or a retryable one after the last attempt).
pub(super) struct Answer {
    pub(super) status: u16,
    trace_id: Option<String>,
    pub(super) body: Vec<u8>,
}

#[derive(Deserialize, Default)]
struct BrexErrorBody {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Option<Value>,
}

impl Answer {
    pub(super) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn error_body(&self) -> BrexErrorBody {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    pub(super) fn into_error(self, operation: &'static str) -> BrexError {
        let parsed = self.error_body();
        let message = parsed
            .message
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_owned())
            .chars()
            .take(500)
            .collect();
        BrexError::Status {
            operation,
            status: self.status,
            code: parsed.error_code.or(parsed.code).or(parsed.kind),
            message,
            trace_id: self.trace_id,
        }
    }

    pub(super) fn json<T: serde::de::DeserializeOwned>(&self, operation: &'static str) -> Result<T, BrexError> {
        serde_json::from_slice(&self.body).map_err(|e| BrexError::Decode { operation, message: e.to_string() })
    }
}

pub(super) enum Method {
    Get,
    Post { body: Vec<u8>, idempotency_key: String },
    Put { body: Vec<u8>, idempotency_key: String },
}

impl BrexClient {
    pub fn new(config: BrexConfig, auth: BrexAuth) -> Result<Self, BrexError> {
        let base = config.base_url.trim().trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&base).map_err(|e| BrexError::InvalidRequest(format!("BREX_API_URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err(BrexError::InvalidRequest("BREX_API_URL must be an http(s) URL without a query".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("brex-ifs-connector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BrexError::InvalidRequest(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            auth,
            limiter: TokenBucket::brex(config.requests_per_minute),
            retry: config.retry,
            metrics: config.metrics,
        })
    }

    /// `GET /v3/accounting/records?ids=…` in chunks of ≤ 500 ids, following pages. Each item is parsed on
    /// its own; ids asked for but not returned are reported missing.
    pub async fn records_by_ids(&self, ids: &[AccountingRecordId]) -> Result<RecordFetch, BrexError> {
        let mut seen = HashSet::new();
        let unique: Vec<&AccountingRecordId> = ids.iter().filter(|id| seen.insert(*id)).collect();
        let mut fetch = RecordFetch::default();
        let mut returned: HashSet<AccountingRecordId> = HashSet::new();
        for chunk in unique.chunks(MAX_IDS_PER_CALL) {
            let wanted: HashSet<&AccountingRecordId> = chunk.iter().copied().collect();
            let mut cursor: Option<String> = None;
            for page_no in 0.. {
                if page_no >= MAX_PAGES {
                    return Err(too_many_pages("records_by_ids"));
                }
                let query = ids_query(chunk, cursor.as_deref());
                let page = self.records_page("records_by_ids", &query).await?;
                for parsed in page.items {
                    match parsed {
                        Ok(record) if wanted.contains(&record.id) => {
                            if returned.insert(record.id.clone()) {
                                fetch.records.push(record);
                            }
                        }
                        Ok(record) => tracing::warn!(id = %record.id, "Brex returned a record that was not asked for"),
                        Err(bad) => {
                            if let Some(id) = &bad.id {
                                returned.insert(id.clone());
                            }
                            fetch.malformed.push(bad);
                        }
                    }
                }
                match next_cursor(page.next_cursor, page.has_next_page, cursor.as_deref()) {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        fetch.missing = unique.into_iter().filter(|id| !returned.contains(*id)).cloned().collect();
        if !fetch.malformed.is_empty() || !fetch.missing.is_empty() {
            tracing::warn!(
                records = fetch.records.len(),
                malformed = fetch.malformed.len(),
                missing = fetch.missing.len(),
                "Brex records fetched with gaps"
            );
        }
        Ok(fetch)
    }

    /// One page of a polling query.
    pub async fn query_records(&self, query: &RecordQuery) -> Result<RecordQueryPage, BrexError> {
        let page = self.records_page("query_records", &filter_query(query)?).await?;
        let mut out = RecordQueryPage { has_next_page: page.has_next_page, ..Default::default() };
        for parsed in page.items {
            match parsed {
                Ok(record) => out.records.push(record),
                Err(bad) => out.malformed.push(bad),
            }
        }
        out.next_cursor = next_cursor(page.next_cursor, page.has_next_page, query.cursor.as_deref());
        Ok(out)
    }

    /// `POST /v3/accounting/records/export-results`, ≤ 500 results per call, each call with an
    /// `Idempotency-Key` derived from its body. Results repeated for one id keep the first.
    pub async fn report_export_results(&self, results: &[ExportResult]) -> Result<ExportReport, BrexError> {
        let mut seen = HashSet::new();
        let unique: Vec<&ExportResult> = results.iter().filter(|r| seen.insert(&r.accounting_record_id)).collect();
        if unique.len() < results.len() {
            tracing::warn!(dropped = results.len() - unique.len(), "repeated export results for one record dropped");
        }
        let mut report = ExportReport::default();
        for chunk in unique.chunks(MAX_IDS_PER_CALL) {
            self.report_chunk(chunk.to_vec(), &mut report).await?;
        }
        tracing::info!(
            updated = report.updated.len(),
            already_exported = report.already_exported.len(),
            not_found = report.not_found.len(),
            "export results reported to Brex"
        );
        Ok(report)
    }

    async fn report_chunk(&self, mut pending: Vec<&ExportResult>, report: &mut ExportReport) -> Result<(), BrexError> {
        const OP: &str = "report_export_results";
        for _ in 0..MAX_EXPORT_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            let body = serde_json::to_vec(&ExportRequest { results: &pending })
                .map_err(|e| BrexError::InvalidRequest(format!("export results: {e}")))?;
            let key = idempotency_key(&body);
            let answer = self
                .execute(OP, "/v3/accounting/records/export-results", Method::Post { body, idempotency_key: key })
                .await?;
            if answer.is_success() {
                let ok: ExportResponse = answer.json(OP)?;
                report.updated.extend(ok.updated_accounting_record_ids.iter().filter_map(|id| parse_id(id)));
                return Ok(());
            }
            let parsed = answer.error_body();
            let code = parsed.error_code.as_deref().or(parsed.code.as_deref());
            let (listed_key, bucket) = match (answer.status, code) {
                (422, Some("ACCOUNTING_RECORD_NOT_READY_FOR_EXPORT")) => {
                    ("not_ready_for_export_accounting_record_ids", &mut report.already_exported)
                }
                (404, _) => ("not_found_export_entry_source_ids", &mut report.not_found),
                _ => return Err(answer.into_error(OP)),
            };
            let listed: HashSet<&str> = parsed
                .details
                .as_ref()
                .and_then(|d| d.get(listed_key))
                .and_then(Value::as_array)
                .map(|ids| ids.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let before = pending.len();
            pending.retain(|r| {
                let drop = listed.contains(r.accounting_record_id.as_str());
                if drop {
                    bucket.push(r.accounting_record_id.clone());
                }
                !drop
            });
            if pending.len() == before {
                // Brex named none of ours: re-sending the same batch cannot help.
                return Err(answer.into_error(OP));
            }
            tracing::info!(status = answer.status, dropped = before - pending.len(), "re-sending export results");
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(BrexError::InvalidRequest(format!(
                "export results still refused after {MAX_EXPORT_ROUNDS} rounds ({} pending)",
                pending.len()
            )))
        }
    }

    /// `GET /v1/webhooks/secrets`: every secret currently signing (two during a rotation).
    pub async fn list_webhook_secrets(&self) -> Result<Vec<WebhookSecretEntry>, BrexError> {
        const OP: &str = "webhook_secrets";
        let answer = self.execute(OP, "/v1/webhooks/secrets", Method::Get).await?;
        if !answer.is_success() {
            return Err(answer.into_error(OP));
        }
        answer.json(OP)
    }

    /// `GET /v1/webhooks`, every page: the subscriptions of this Brex account.
    pub async fn list_webhooks(&self) -> Result<Vec<WebhookSubscription>, BrexError> {
        const OP: &str = "list_webhooks";
        let mut subscriptions = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let path = match &cursor {
                Some(c) => format!("/v1/webhooks?limit=100&cursor={}", encode(c)),
                None => "/v1/webhooks?limit=100".to_owned(),
            };
            let answer = self.execute(OP, &path, Method::Get).await?;
            if !answer.is_success() {
                return Err(answer.into_error(OP));
            }
            let page: WebhookPage = answer.json(OP)?;
            subscriptions.extend(page.items);
            match next_cursor(page.next_cursor, true, cursor.as_deref()) {
                Some(next) => cursor = Some(next),
                None => return Ok(subscriptions),
            }
        }
        Err(too_many_pages(OP))
    }

    /// `POST /v1/webhooks` (status ACTIVE). The `Idempotency-Key` Brex requires is derived from the body, so
    /// registering the same URL for the same events again is the same request.
    pub async fn register_webhook(&self, url: &str, event_types: &[String]) -> Result<WebhookSubscription, BrexError> {
        const OP: &str = "register_webhook";
        let body = serde_json::to_vec(&SubscriptionRequest { url, event_types, status: None })
            .map_err(|e| BrexError::InvalidRequest(format!("webhook subscription: {e}")))?;
        let key = keyed_uuid(b"brex-ifs-connector/webhooks/v1\n", &body);
        let answer = self.execute(OP, "/v1/webhooks", Method::Post { body, idempotency_key: key }).await?;
        if !answer.is_success() {
            return Err(answer.into_error(OP));
        }
        answer.json(OP)
    }

    /// `PUT /v1/webhooks/{id}` with all three fields (the older spec requires them all).
    pub async fn update_webhook(
        &self,
        id: &str,
        url: &str,
        event_types: &[String],
        status: &str,
    ) -> Result<WebhookSubscription, BrexError> {
        const OP: &str = "update_webhook";
        let body = serde_json::to_vec(&SubscriptionRequest { url, event_types, status: Some(status) })
            .map_err(|e| BrexError::InvalidRequest(format!("webhook subscription: {e}")))?;
        let key = keyed_uuid(format!("brex-ifs-connector/webhooks/{id}/v1\n").as_bytes(), &body);
        let path = format!("/v1/webhooks/{}", encode(id));
        let answer = self.execute(OP, &path, Method::Put { body, idempotency_key: key }).await?;
        if !answer.is_success() {
            return Err(answer.into_error(OP));
        }
        answer.json(OP)
    }

    async fn records_page(&self, operation: &'static str, query: &str) -> Result<ParsedPage, BrexError> {
        let path = format!("/v3/accounting/records?{query}");
        let answer = self.execute(operation, &path, Method::Get).await?;
        if !answer.is_success() {
            return Err(answer.into_error(operation));
        }
        let page: RecordPage<Value> = answer.json(operation)?;
        Ok(ParsedPage {
            items: page.items.into_iter().map(parse_record).collect(),
            next_cursor: page.next_cursor,
            has_next_page: page.has_next_page,
        })
    }

    /// Sends with rate limiting, auth and the retry policy; returns the final answer.
    pub(super) async fn execute(
        &self,
        operation: &'static str,
        path_and_query: &str,
        method: Method,
    ) -> Result<Answer, BrexError> {
        let url = format!("{}{path_and_query}", self.base);
        let mut attempt: u32 = 0;
        let mut auth_retried = false;
        loop {
            attempt += 1;
            self.limiter.acquire().await;
            let token = self.auth.bearer(&self.http).await?;
            let request = match &method {
                Method::Get => self.http.get(&url),
                Method::Post { body, idempotency_key } => self
                    .http
                    .post(&url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header("Idempotency-Key", idempotency_key)
                    .body(body.clone()),
                Method::Put { body, idempotency_key } => self
                    .http
                    .put(&url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header("Idempotency-Key", idempotency_key)
                    .body(body.clone()),
            };
            self.metrics.count(Metric::BrexRequests, 1, Vec::new());
            let (failure, retry_after) = match request.bearer_auth(token.expose()).send().await {
                Err(err) => {
                    let timeout = err.is_timeout();
                    (BrexError::Transport { operation, message: err.without_url().to_string(), timeout }, None)
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    if status == 429 {
                        self.metrics.count(Metric::Brex429, 1, Vec::new());
                    }
                    let trace_id = header_text(response.headers(), "x-brex-trace-id");
                    let retry_after =
                        header_text(response.headers(), "retry-after").and_then(|v| parse_retry_after(&v, Utc::now()));
                    let body = match response.bytes().await {
                        Ok(bytes) => bytes.to_vec(),
                        Err(err) => {
                            let timeout = err.is_timeout();
                            let failure =
                                BrexError::Transport { operation, message: err.without_url().to_string(), timeout };
                            if self.pause(operation, attempt, None, &failure).await {
                                continue;
                            }
                            return Err(failure);
                        }
                    };
                    let answer = Answer { status, trace_id, body };
                    if is_auth_failure(&answer) && !auth_retried && self.auth.invalidate(&token).await {
                        tracing::info!(operation, status, "Brex refused the access token; refreshing once");
                        auth_retried = true;
                        attempt -= 1;
                        continue;
                    }
                    if answer.is_success() || !status_is_retryable(status) || attempt >= self.retry.max_attempts {
                        return Ok(answer);
                    }
                    (answer.into_error(operation), retry_after)
                }
            };
            if !self.pause(operation, attempt, retry_after, &failure).await {
                return Err(failure);
            }
        }
    }

    /// Sleeps before the next attempt; `false` when the policy says stop.
    async fn pause(
        &self,
        operation: &'static str,
        attempt: u32,
        retry_after: Option<Duration>,
        failure: &BrexError,
    ) -> bool {
        // The thread-local RNG must not live across the await below (it is not Send).
        let delay = self.retry.next_delay(attempt, retry_after, &mut rand::rng());
        match delay {
            Some(delay) => {
                tracing::warn!(operation, attempt, delay_ms = delay.as_millis() as u64, error = %failure, "retrying Brex call");
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
    }
}

struct ParsedPage {
    items: Vec<Result<AccountingRecord, MalformedRecord>>,
    next_cursor: Option<String>,
    has_next_page: bool,
}

#[derive(Serialize)]
struct ExportRequest<'a> {
    results: &'a [&'a ExportResult],
}

#[derive(Deserialize)]
struct ExportResponse {
    #[serde(default)]
    updated_accounting_record_ids: Vec<String>,
}

fn parse_id(raw: &str) -> Option<AccountingRecordId> {
    AccountingRecordId::parse(raw).ok()
}

fn parse_record(item: Value) -> Result<AccountingRecord, MalformedRecord> {
    let id = item.get("id").and_then(Value::as_str).and_then(parse_id);
    serde_json::from_value(item).map_err(|e| MalformedRecord { id, error: e.to_string() })
}

pub(super) fn too_many_pages(operation: &'static str) -> BrexError {
    BrexError::Decode { operation, message: format!("more than {MAX_PAGES} pages") }
}

/// The cursor to follow, if any. A cursor equal to the one just used would loop forever.
fn next_cursor(next: Option<String>, has_next_page: bool, current: Option<&str>) -> Option<String> {
    let next = next.filter(|c| !c.is_empty())?;
    if !has_next_page || Some(next.as_str()) == current {
        return None;
    }
    Some(next)
}

fn is_auth_failure(answer: &Answer) -> bool {
    // Brex's error page also lists "403 Expired token" for an expired OAuth token.
    answer.status == 401
        || (answer.status == 403
            && answer.error_body().message.is_some_and(|m| m.to_ascii_lowercase().contains("expired")))
}

fn header_text(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.chars().take(128).collect())
}

pub(super) fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `ids=a&ids=b…` (repeated, un-bracketed, as v3 expects).
fn ids_query(ids: &[&AccountingRecordId], cursor: Option<&str>) -> String {
    let mut parts: Vec<String> = ids.iter().map(|id| format!("ids={}", encode(id.as_str()))).collect();
    if let Some(cursor) = cursor {
        parts.push(format!("cursor={}", encode(cursor)));
    }
    parts.join("&")
}

/// The polling filter. Keys are written literally so `updated_at[gt]` keeps its brackets.
fn filter_query(query: &RecordQuery) -> Result<String, BrexError> {
    let mut parts = Vec::new();
    if let Some(status) = &query.review_status {
        let status = match status {
            ReviewStatus::Prepare => "PREPARE",
            ReviewStatus::Review => "REVIEW",
            ReviewStatus::ReadyForExport => "READY_FOR_EXPORT",
            ReviewStatus::Exported => "EXPORTED",
            ReviewStatus::Unknown => return Err(BrexError::InvalidRequest("review_status UNKNOWN".into())),
        };
        parts.push(format!("review_status={status}"));
    }
    if let Some(source) = query.source_type {
        if source == SourceType::Unknown {
            return Err(BrexError::InvalidRequest("source_type UNKNOWN".into()));
        }
        parts.push(format!("source_type={}", source.as_str()));
    }
    let after = query.updated_after.to_rfc3339_opts(SecondsFormat::Micros, true);
    parts.push(format!("updated_at[gt]={}", encode(&after)));
    if query.limit == 0 {
        return Err(BrexError::InvalidRequest("limit must be at least 1".into()));
    }
    parts.push(format!("limit={}", query.limit));
    if let Some(cursor) = &query.cursor {
        parts.push(format!("cursor={}", encode(cursor)));
    }
    Ok(parts.join("&"))
}

/// Same body → same key, so a retried (or re-run) report is one report to Brex. Shaped as a UUID because
/// Brex asks for UUIDs.
fn idempotency_key(body: &[u8]) -> String {
    let digest = Sha256::new().chain_update(b"brex-ifs-connector/export-results/v1\n").chain_update(body).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// A UUID-shaped key from a domain and a body (same inputs → same key).
pub(super) fn keyed_uuid(domain: &[u8], body: &[u8]) -> String {
    let digest = Sha256::new().chain_update(domain).chain_update(body).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AccountingRecordId {
        AccountingRecordId::parse(s).unwrap()
    }

    #[test]
    fn ids_query_repeats_the_key_without_brackets() {
        let ids = [id("accr_1"), id("accr_2")];
        let refs: Vec<&AccountingRecordId> = ids.iter().collect();
        assert_eq!(ids_query(&refs, None), "ids=accr_1&ids=accr_2");
        assert_eq!(ids_query(&refs[..1], Some("a+b/c=")), "ids=accr_1&cursor=a%2Bb%2Fc%3D");
    }

    #[test]
    fn filter_query_always_carries_updated_at_gt() {
        let query = RecordQuery {
            source_type: Some(SourceType::Card),
            review_status: Some(ReviewStatus::ReadyForExport),
            updated_after: DateTime::parse_from_rfc3339("2026-06-11T09:09:10.422192Z").unwrap().with_timezone(&Utc),
            limit: 100,
            cursor: Some("c1".into()),
        };
        assert_eq!(
            filter_query(&query).unwrap(),
            "review_status=READY_FOR_EXPORT&source_type=CARD&updated_at[gt]=2026-06-11T09%3A09%3A10.422192Z&limit=100&cursor=c1"
        );
        let bills = RecordQuery {
            source_type: Some(SourceType::Bill),
            review_status: None,
            updated_after: DateTime::from_timestamp(0, 0).unwrap(),
            limit: 50,
            cursor: None,
        };
        assert_eq!(
            filter_query(&bills).unwrap(),
            "source_type=BILL&updated_at[gt]=1970-01-01T00%3A00%3A00.000000Z&limit=50"
        );
        assert!(filter_query(&RecordQuery { limit: 0, ..bills.clone() }).is_err());
        assert!(filter_query(&RecordQuery { source_type: Some(SourceType::Unknown), ..bills }).is_err());
    }

    #[test]
    fn idempotency_key_is_deterministic_and_uuid_shaped() {
        let a = idempotency_key(br#"{"results":[1]}"#);
        assert_eq!(a, idempotency_key(br#"{"results":[1]}"#));
        assert_ne!(a, idempotency_key(br#"{"results":[2]}"#));
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn export_results_serialise_as_brex_documents() {
        let results = [
            ExportResult {
                accounting_record_id: id("accr_abc123"),
                outcome: ExportStatus::Success { reference_id: Some("10-M-42".into()), deep_link_url: None },
            },
            ExportResult {
                accounting_record_id: id("accr_def456"),
                outcome: ExportStatus::Failure { error_message: "Invalid GL account".into() },
            },
        ];
        let refs: Vec<&ExportResult> = results.iter().collect();
        let json = serde_json::to_value(ExportRequest { results: &refs }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "results": [
                { "accounting_record_id": "accr_abc123", "success": { "reference_id": "10-M-42" } },
                { "accounting_record_id": "accr_def456", "failure": { "error_message": "Invalid GL account" } },
            ]})
        );
    }

    #[test]
    fn one_bad_item_does_not_spoil_the_page() {
        let good = serde_json::json!({
            "id": "accr_1", "amount": {"amount": 1.5, "currency": "USD"}, "type": "CARD_EXPENSE_POST",
            "review_status": "READY_FOR_EXPORT", "updated_at": "2026-06-11T09:09:10Z", "line_items": []
        });
        assert!(parse_record(good.clone()).is_ok());
        let mut bad = good.clone();
        bad["amount"] = serde_json::json!("lots");
        let err = parse_record(bad).unwrap_err();
        assert_eq!(err.id, Some(id("accr_1")));
        let err = parse_record(serde_json::json!({ "id": "accr bad" })).unwrap_err();
        assert_eq!(err.id, None);
    }

    #[test]
    fn cursors_stop_at_the_end_and_on_repeats() {
        assert_eq!(next_cursor(Some("b".into()), true, Some("a")), Some("b".into()));
        assert_eq!(next_cursor(Some("a".into()), true, Some("a")), None);
        assert_eq!(next_cursor(Some("b".into()), false, None), None);
        assert_eq!(next_cursor(None, true, None), None);
        assert_eq!(next_cursor(Some(String::new()), true, None), None);
    }

    #[test]
    fn base_url_must_be_http() {
        let auth = || BrexAuth::user_token(Secret::new("t"));
        assert!(BrexClient::new(BrexConfig::new("https://api.brex.com/", 1000), auth()).is_ok());
        assert!(BrexClient::new(BrexConfig::new("ftp://x", 1000), auth()).is_err());
        assert!(BrexClient::new(BrexConfig::new("not a url", 1000), auth()).is_err());
    }
}
