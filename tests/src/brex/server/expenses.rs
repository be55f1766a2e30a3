//! Expenses: `GET /v1/expenses` and `GET /v1/expenses/{id}`, with `expand[]` for the department, merchant
//! and user objects. Errors have the classic shape (`type`/`message`).

use std::collections::HashSet;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::BrexSimHandle;
use super::query::{decode_cursor, encode_cursor, parse_limit, parse_query, parse_time};
use super::receipts::present_expense_receipts;
use super::router::{Sim, error};
use super::state::to_micros;
use crate::brex::model::Expense;

const EXPENSE_STATUSES: [&str; 8] =
    ["DRAFT", "SUBMITTED", "APPROVED", "OUT_OF_POLICY", "VOID", "CANCELED", "SPLIT", "SETTLED"];
const EXPANDABLE: [&str; 3] = ["department", "merchant", "user"];
/// The expansion that mints receipt links (`receipts[].download_uris`, `null` without it).
const RECEIPT_URIS: &str = "receipts.download_uris";

/// Serializes an expense, dropping expandable objects that were not asked for.
fn expense_json(e: &Expense, expand: &HashSet<String>) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        for key in EXPANDABLE {
            if !expand.contains(key) {
                obj.remove(key);
            }
        }
    }
    v
}

/// Filters: `status[]`, `expense_type[]`, `updated_at_start` (inclusive), `updated_at_end` (inclusive),
/// `limit` (≤ max, default 100), `cursor`, `expand[]`.
pub(super) async fn list_expenses(State(inner): Sim, RawQuery(q): RawQuery) -> Response {
    let bad = |m: &str| error(false, StatusCode::BAD_REQUEST, "BAD_REQUEST", m);
    let mut statuses: HashSet<String> = HashSet::new();
    let mut types: HashSet<String> = HashSet::new();
    let mut expand: HashSet<String> = HashSet::new();
    let mut start = None;
    let mut end = None;
    let mut limit = 100_u32.min(inner.config.max_expenses_limit);
    let mut cursor = None;
    for (k, v) in parse_query(q.as_deref()) {
        match k.as_str() {
            "status[]" if EXPENSE_STATUSES.contains(&v.as_str()) => {
                statuses.insert(v);
            }
            "status[]" => return bad(&format!("Invalid status: {v}")),
            "expense_type[]" => {
                types.insert(v);
            }
            "expand[]" => {
                expand.insert(v);
            }
            "updated_at_start" | "updated_at_end" => match parse_time(&v) {
                Some(t) if k == "updated_at_start" => start = Some(t),
                Some(t) => end = Some(t),
                None => return bad(&format!("Invalid {k}: {v}")),
            },
            "limit" => match parse_limit(&v, inner.config.max_expenses_limit) {
                Ok(n) => limit = n,
                Err(m) => return bad(&m),
            },
            "cursor" => match decode_cursor(&v) {
                Some(c) => cursor = Some(c),
                None => return bad("Invalid cursor"),
            },
            _ => {}
        }
    }
    let mut st = inner.lock();
    let mut matching: Vec<&Expense> = st
        .expenses
        .values()
        .filter(|e| statuses.is_empty() || statuses.contains(&e.status))
        .filter(|e| types.is_empty() || types.contains(&e.expense_type))
        .filter(|e| start.is_none_or(|s| e.updated_at >= s))
        .filter(|e| end.is_none_or(|s| e.updated_at <= s))
        .filter(|e| cursor.as_ref().is_none_or(|(t, id)| (e.updated_at, &e.id) > (*t, id)))
        .collect();
    matching.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
    let page_len = matching.len().min(limit as usize);
    let next_cursor = (matching.len() > page_len)
        .then(|| matching[..page_len].last().map(|e| encode_cursor(e.updated_at, &e.id)))
        .flatten();
    let mut items: Vec<Value> = matching[..page_len].iter().map(|e| expense_json(e, &expand)).collect();
    let base = format!("http://{}", inner.addr);
    let uris = expand.contains(RECEIPT_URIS);
    for item in &mut items {
        present_expense_receipts(&mut st, &base, item, uris);
    }
    Json(json!({"items": items, "next_cursor": next_cursor})).into_response()
}

pub(super) async fn get_expense(State(inner): Sim, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let expand: HashSet<String> =
        parse_query(q.as_deref()).into_iter().filter(|(k, _)| k == "expand[]").map(|(_, v)| v).collect();
    let mut st = inner.lock();
    match st.expenses.get(&id).map(|e| expense_json(e, &expand)) {
        Some(mut e) => {
            present_expense_receipts(&mut st, &format!("http://{}", inner.addr), &mut e, expand.contains(RECEIPT_URIS));
            Json(e).into_response()
        }
        None => error(false, StatusCode::NOT_FOUND, "NOT_FOUND", "Expense not found"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Test-side access

impl BrexSimHandle {
    /// Inserts or replaces expenses (by id).
    pub fn insert_expenses(&self, expenses: Vec<Expense>) {
        let mut st = self.inner.lock();
        for mut e in expenses {
            e.updated_at = to_micros(e.updated_at);
            st.expenses.insert(e.id.clone(), e);
        }
    }

    pub fn expense(&self, id: &str) -> Option<Expense> {
        self.inner.lock().expenses.get(id).cloned()
    }
}
