//! Reading accounting records: `GET /v3/accounting/records` (filters, Brex's default recent-only window, keyset
//! paging on (updated_at, id)) and `GET /v3/accounting/records/{id}`. Errors have the v3 shape
//! (`error_code`/`message`).

use std::collections::HashSet;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::BrexSimHandle;
use super::query::{decode_cursor, encode_cursor, parse_limit, parse_query, parse_time};
use super::receipts::present_record;
use super::router::{Sim, error};
use super::state::{bump, to_micros};
use crate::brex::generator::GeneratorOptions;
use crate::brex::model::{AccountingRecord, ReviewStatus, SourceType};

#[derive(Clone, Copy)]
enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

pub(super) async fn list_records(State(inner): Sim, RawQuery(q): RawQuery) -> Response {
    let bad = |m: &str| error(true, StatusCode::BAD_REQUEST, "INVALID_REQUEST", m);
    let cfg = &inner.config;
    let mut ids: Vec<String> = Vec::new();
    let mut review: Option<ReviewStatus> = None;
    let mut source: Option<SourceType> = None;
    let mut bounds: Vec<(Cmp, DateTime<Utc>)> = Vec::new();
    let mut limit = 100_u32;
    let mut cursor = None;
    for (k, v) in parse_query(q.as_deref()) {
        match k.as_str() {
            "ids" => ids.push(v),
            "review_status" => match ReviewStatus::parse(&v) {
                Some(s) => review = Some(s),
                None => return bad(&format!("Invalid review_status: {v}")),
            },
            "source_type" => match SourceType::parse(&v) {
                Some(s) => source = Some(s),
                None => return bad(&format!("Invalid source_type: {v}")),
            },
            "updated_at[gt]" | "updated_at[gte]" | "updated_at[lt]" | "updated_at[lte]" => {
                let op = match k.as_str() {
                    "updated_at[gt]" => Cmp::Gt,
                    "updated_at[gte]" => Cmp::Gte,
                    "updated_at[lt]" => Cmp::Lt,
                    _ => Cmp::Lte,
                };
                match parse_time(&v) {
                    Some(t) => bounds.push((op, t)),
                    None => return bad(&format!("Invalid {k}: {v}")),
                }
            }
            "limit" => match parse_limit(&v, cfg.max_records_limit) {
                Ok(n) => limit = n,
                Err(m) => return bad(&m),
            },
            "cursor" => match decode_cursor(&v) {
                Some(c) => cursor = Some(c),
                None => return bad("Invalid cursor"),
            },
            // Like most APIs, unknown parameters (incl. `single_entry`) are ignored.
            _ => {}
        }
    }
    if ids.len() > 500 {
        return bad("ids must contain at most 500 items");
    }
    if review.is_some()
        && cfg.review_status_requires_source_type
        && !matches!(source, Some(SourceType::Card | SourceType::Reimbursement))
    {
        return bad("review_status is only supported with source_type CARD or REIMBURSEMENT");
    }
    // Brex's narrow default window when neither ids nor an updated_at range is given.
    let floor = (ids.is_empty() && bounds.is_empty())
        .then(|| TimeDelta::from_std(cfg.default_updated_window).ok().and_then(|w| Utc::now().checked_sub_signed(w)))
        .flatten();
    let id_set: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut st = inner.lock();
    let mut matching: Vec<&AccountingRecord> = st
        .records
        .values()
        .filter(|r| id_set.is_empty() || id_set.contains(r.id.as_str()))
        .filter(|r| review.is_none_or(|s| r.review_status == s))
        .filter(|r| source.is_none_or(|s| r.source_type == s))
        .filter(|r| floor.is_none_or(|f| r.updated_at >= f))
        .filter(|r| {
            bounds.iter().all(|(op, t)| match op {
                Cmp::Gt => r.updated_at > *t,
                Cmp::Gte => r.updated_at >= *t,
                Cmp::Lt => r.updated_at < *t,
                Cmp::Lte => r.updated_at <= *t,
            })
        })
        .collect();
    matching.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
    let total = matching.len();
    let rest: Vec<&AccountingRecord> = match &cursor {
        Some((t, id)) => matching.into_iter().filter(|r| (r.updated_at, &r.id) > (*t, id)).collect(),
        None => matching,
    };
    let page_len = rest.len().min(limit as usize);
    let has_next = rest.len() > page_len;
    let page = &rest[..page_len];
    let next_cursor = if has_next { page.last().map(|r| encode_cursor(r.updated_at, &r.id)) } else { None };
    let page: Vec<AccountingRecord> = page.iter().map(|r| (*r).clone()).collect();
    let base = format!("http://{}", inner.addr);
    let page: Vec<AccountingRecord> = page.iter().map(|r| present_record(&mut st, &base, r)).collect();
    Json(json!({
        "items": page,
        "next_cursor": next_cursor,
        "has_next_page": has_next,
        "total_count": total,
    }))
    .into_response()
}

pub(super) async fn get_record(State(inner): Sim, Path(id): Path<String>) -> Response {
    let mut st = inner.lock();
    match st.records.get(&id).cloned() {
        Some(r) => Json(present_record(&mut st, &format!("http://{}", inner.addr), &r)).into_response(),
        None => error(true, StatusCode::NOT_FOUND, "NOT_FOUND", &format!("Accounting record {id} not found")),
    }
}

pub(super) fn sorted_records(mut v: Vec<AccountingRecord>) -> Vec<AccountingRecord> {
    v.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
    v
}

// ---------------------------------------------------------------------------------------------------------
// Test-side access

impl BrexSimHandle {
    /// Inserts or replaces records (by id), stored exactly as given.
    pub fn insert_records(&self, records: Vec<AccountingRecord>) {
        let mut st = self.inner.lock();
        for mut r in records {
            r.updated_at = to_micros(r.updated_at);
            st.records.insert(r.id.clone(), r);
        }
    }

    /// Parses and inserts records given as wire JSON. Nothing is inserted if any fails to parse.
    pub fn insert_records_json(&self, records: Vec<Value>) -> Result<usize, serde_json::Error> {
        let parsed = records.into_iter().map(serde_json::from_value).collect::<Result<Vec<AccountingRecord>, _>>()?;
        let n = parsed.len();
        self.insert_records(parsed);
        Ok(n)
    }

    pub fn record(&self, id: &str) -> Option<AccountingRecord> {
        self.inner.lock().records.get(id).cloned()
    }

    /// All records ordered by (updated_at, id).
    pub fn records(&self) -> Vec<AccountingRecord> {
        sorted_records(self.inner.lock().records.values().cloned().collect())
    }

    /// Records with this review status, ordered by (updated_at, id).
    pub fn records_by_status(&self, status: ReviewStatus) -> Vec<AccountingRecord> {
        sorted_records(self.inner.lock().records.values().filter(|r| r.review_status == status).cloned().collect())
    }

    /// Sets the review status of the given records (bumping updated_at and version). Returns how many existed.
    pub fn set_review_status<S: AsRef<str>>(&self, ids: &[S], status: ReviewStatus) -> usize {
        let mut st = self.inner.lock();
        let mut n = 0;
        for id in ids {
            if let Some(r) = st.records.get_mut(id.as_ref()) {
                r.review_status = status;
                bump(r);
                n += 1;
            }
        }
        n
    }

    /// `set_review_status(ids, READY_FOR_EXPORT)`: what a bookkeeper clicking "export" does.
    pub fn mark_ready_for_export<S: AsRef<str>>(&self, ids: &[S]) -> usize {
        self.set_review_status(ids, ReviewStatus::ReadyForExport)
    }

    /// An edit in Brex: bumps updated_at and version. False if unknown.
    pub fn touch_record(&self, id: &str) -> bool {
        match self.inner.lock().records.get_mut(id) {
            Some(r) => {
                bump(r);
                true
            }
            None => false,
        }
    }

    /// Applies `f` to a record and bumps it (for ad-hoc edits in tests). False if unknown.
    pub fn update_record(&self, id: &str, f: impl FnOnce(&mut AccountingRecord)) -> bool {
        match self.inner.lock().records.get_mut(id) {
            Some(r) => {
                f(r);
                bump(r);
                true
            }
            None => false,
        }
    }

    /// Generates `n` records (updated within the last 30 days, READY_FOR_EXPORT) plus their expenses, inserts
    /// them, and returns the record ids. Deterministic in content for a given seed and call order.
    pub fn generate_records(&self, n: usize) -> Vec<String> {
        let mut st = self.inner.lock();
        let defaults = GeneratorOptions::default();
        st.generator.options.start = defaults.start;
        st.generator.options.end = defaults.end;
        let pairs = st.generator.pairs(n);
        let mut ids = Vec::with_capacity(n);
        for (r, e) in pairs {
            ids.push(r.id.clone());
            st.records.insert(r.id.clone(), r);
            st.expenses.insert(e.id.clone(), e);
        }
        ids
    }
}
