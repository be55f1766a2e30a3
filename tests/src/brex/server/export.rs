//! Reporting export results: `POST /v3/accounting/records/export-results`, all-or-nothing per batch, with
//! `Idempotency-Key` replay.

use std::collections::HashSet;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::BrexSimHandle;
use super::router::{Sim, error};
use super::state::{IdemEntry, SimState, bump};
use crate::brex::model::ReviewStatus;

/// What the connector reported for a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportOutcome {
    Success { reference_id: Option<String>, deep_link_url: Option<String> },
    Failure { error_message: String },
}

/// One accepted export-results entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportResult {
    pub accounting_record_id: String,
    pub outcome: ExportOutcome,
    /// The record's version when the result was reported.
    pub record_version: u64,
    pub idempotency_key: Option<String>,
    pub reported_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct ExportRequest {
    results: Vec<ExportEntry>,
}

#[derive(Deserialize)]
struct ExportEntry {
    accounting_record_id: String,
    #[serde(default)]
    success: Option<SuccessBody>,
    #[serde(default)]
    failure: Option<FailureBody>,
}

#[derive(Deserialize)]
struct SuccessBody {
    #[serde(default)]
    reference_id: Option<String>,
    #[serde(default)]
    deep_link_url: Option<String>,
}

#[derive(Deserialize)]
struct FailureBody {
    error_message: String,
}

pub(super) async fn export_results(State(inner): Sim, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Compare requests semantically (key order / whitespace do not matter) when the body is JSON.
    let fingerprint = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let mut st = inner.lock();
    if let Some(k) = &key {
        let window = inner.config.idempotency_window;
        st.idempotency.retain(|_, e| e.at.elapsed() < window);
        if let Some(entry) = st.idempotency.get(k) {
            if entry.request != fingerprint {
                return error(
                    true,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "INVALID_REQUEST",
                    "Idempotency-Key was already used with a different request body",
                );
            }
            let mut resp = (entry.status, Json(entry.body.clone())).into_response();
            resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            st.counters.idempotent_replays += 1;
            return resp;
        }
    }
    let (status, out) = apply_export(&mut st, &body, key.as_deref(), inner.config.max_export_batch);
    if let Some(k) = key {
        st.idempotency.insert(k, IdemEntry { request: fingerprint, status, body: out.clone(), at: Instant::now() });
    }
    (status, Json(out)).into_response()
}

/// Validates the whole batch first (all-or-nothing), then applies it.
///
/// Success → EXPORTED with updated_at/version bumped. Failure → the record stays READY_FOR_EXPORT with
/// updated_at/version untouched (Brex docs are silent; not bumping keeps a watermark poller from re-reading
/// it forever) and the error message is stored for tests to inspect.
fn apply_export(st: &mut SimState, body: &[u8], key: Option<&str>, max_batch: usize) -> (StatusCode, Value) {
    let invalid = |m: String| (StatusCode::BAD_REQUEST, json!({"error_code": "INVALID_REQUEST", "message": m}));
    let req: ExportRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return invalid(format!("Invalid request body: {e}")),
    };
    if req.results.is_empty() {
        return invalid("results must contain at least 1 item".into());
    }
    if req.results.len() > max_batch {
        return invalid(format!("results must contain at most {max_batch} items"));
    }
    if let Some(e) = req.results.iter().find(|e| e.success.is_some() == e.failure.is_some()) {
        return invalid(format!("Result for {} must have exactly one of success or failure", e.accounting_record_id));
    }
    let mut not_found: Vec<&str> = Vec::new();
    for e in &req.results {
        let id = e.accounting_record_id.as_str();
        if !st.records.contains_key(id) && !not_found.contains(&id) {
            not_found.push(id);
        }
    }
    if !not_found.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            json!({"error_code": "NOT_FOUND", "message": "Accounting records not found",
                   "details": {"not_found_export_entry_source_ids": not_found}}),
        );
    }
    let mut seen = HashSet::new();
    let mut dups: Vec<&str> = Vec::new();
    for e in &req.results {
        let id = e.accounting_record_id.as_str();
        if !seen.insert(id) && !dups.contains(&id) {
            dups.push(id);
        }
    }
    if !dups.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error_code": "DUPLICATE_ACCOUNTING_RECORD_IDS",
                   "message": "The same accounting record id appears more than once",
                   "details": {"duplicate_accounting_record_ids": dups}}),
        );
    }
    let not_ready: Vec<&str> = req
        .results
        .iter()
        .map(|e| e.accounting_record_id.as_str())
        .filter(|id| st.records.get(*id).is_some_and(|r| r.review_status != ReviewStatus::ReadyForExport))
        .collect();
    if !not_ready.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error_code": "ACCOUNTING_RECORD_NOT_READY_FOR_EXPORT",
                   "message": "Only accounting records with review status READY_FOR_EXPORT can be updated via this endpoint",
                   "details": {"not_ready_for_export_accounting_record_ids": not_ready}}),
        );
    }
    let now = Utc::now();
    let mut updated = Vec::new();
    for e in req.results {
        let Some(record) = st.records.get_mut(&e.accounting_record_id) else {
            continue;
        };
        let outcome = match (e.success, e.failure) {
            (Some(s), _) => {
                record.review_status = ReviewStatus::Exported;
                bump(record);
                ExportOutcome::Success { reference_id: s.reference_id, deep_link_url: s.deep_link_url }
            }
            (None, Some(f)) => ExportOutcome::Failure { error_message: f.error_message },
            (None, None) => continue,
        };
        let version = record.version;
        updated.push(e.accounting_record_id.clone());
        st.exports.push(ExportResult {
            accounting_record_id: e.accounting_record_id,
            outcome,
            record_version: version,
            idempotency_key: key.map(str::to_owned),
            reported_at: now,
        });
    }
    (StatusCode::OK, json!({"updated_accounting_record_ids": updated}))
}

// ---------------------------------------------------------------------------------------------------------
// Test-side access

impl BrexSimHandle {
    /// The latest export result reported for a record.
    pub fn export_result(&self, id: &str) -> Option<ExportResult> {
        self.inner.lock().exports.iter().rev().find(|e| e.accounting_record_id == id).cloned()
    }

    /// Every accepted export result, in the order reported (replays are not repeated).
    pub fn export_results(&self) -> Vec<ExportResult> {
        self.inner.lock().exports.clone()
    }
}
