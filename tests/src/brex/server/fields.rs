//! Brex's Fields API (version 1.0.0-beta): custom fields and their values, with the same auth, rate
//! limit, faults and counters as every other route (the router runs these handlers through `pipeline`).
//!
//! Where the spec is silent the simulator picks:
//! - lists default to `limit` 100, at most 1000 (larger → 400); cursors are opaque offsets in creation order.
//! - `POST /v1/fields` and `POST …/values` need `Idempotency-Key` (400 without); both POSTs and the bulk PUT
//!   replay the first answer for the same key and body (`idempotent-replayed: true`) and refuse the same key
//!   with another body (422).
//! - bulk calls take 1 to 1000 items (else 400) and are all-or-nothing: one unknown value (404), one remote
//!   id already in the field or twice in the batch (400) and nothing changes.
//! - a field's `remote_id` is unique among fields (400), and cannot be changed (the spec's update body has
//!   only `name` and `is_disabled`).
//! - DELETE of a field removes its values too and answers `{}`; DELETE of values answers `{"deleted": n}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::BrexSimHandle;
use super::query::parse_query;
use super::router::{Sim, error};
use super::state::{IdemEntry, Inner, now_micros};
use crate::brex::generator::{GeneratorOptions, RecordGenerator};
use crate::brex::model::{AccountingFieldValue, AccountingRecord, LineType};

/// Brex's bulk limit for values, and the largest `limit` on lists.
pub const MAX_FIELD_ITEMS: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

/// A custom field as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimField {
    pub brex_id: String,
    pub name: String,
    pub remote_id: Option<String>,
    /// `ACCOUNTING`, `USER` or `ERP`.
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<String>,
    pub is_disabled: bool,
    pub updated_at: DateTime<Utc>,
}

/// A field value as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimFieldValue {
    pub brex_id: String,
    pub field_id: String,
    pub value: String,
    pub value_id: Option<String>,
    pub remote_id: Option<String>,
    pub is_disabled: bool,
    pub updated_at: DateTime<Utc>,
}

/// Fields and values in creation order (ids are sequential).
#[derive(Default)]
pub(super) struct FieldsState {
    fields: BTreeMap<String, SimField>,
    values: BTreeMap<String, Vec<SimFieldValue>>,
    seq: u64,
    idempotency: HashMap<String, IdemEntry>,
}

impl FieldsState {
    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}{:012}", self.seq)
    }
}

/// The routes, for `router()` to run through the request pipeline.
pub(super) fn routes() -> [(&'static str, MethodRouter<Arc<Inner>>); 4] {
    [
        ("/v1/fields", get(list_fields).post(create_field)),
        ("/v1/fields/{field_id}", get(get_field).put(update_field).delete(delete_field)),
        ("/v1/fields/{field_id}/values", get(list_values).post(create_values).put(update_values).delete(delete_values)),
        ("/v1/fields/{field_id}/values/{brex_id}", get(get_value)),
    ]
}

/// A refusal to send instead of the handler's answer (boxed: a `Response` is large).
type Refusal = Box<Response>;

fn bad_request(message: &str) -> Response {
    error(false, StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

fn not_found(message: &str) -> Response {
    error(false, StatusCode::NOT_FOUND, "NOT_FOUND", message)
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, FieldsState> {
    // A panic while holding the lock cannot leave the maps half-updated in a way that matters to a sim.
    inner.fields.lock().unwrap_or_else(|e| e.into_inner())
}

/// `limit` and `cursor` of a list; `Err` is the 400 to send.
fn paging(params: &[(String, String)]) -> Result<(usize, usize), Refusal> {
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0;
    for (k, v) in params {
        match k.as_str() {
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_FIELD_ITEMS).contains(&n) => limit = n,
                _ => {
                    return Err(Box::new(bad_request(&format!(
                        "limit must be an integer between 1 and {MAX_FIELD_ITEMS}"
                    ))));
                }
            },
            "cursor" => offset = v.parse().map_err(|_| Box::new(bad_request("invalid cursor")))?,
            _ => {}
        }
    }
    Ok((limit, offset))
}

fn page<T: Serialize>(items: Vec<T>, limit: usize, offset: usize) -> Response {
    let total = items.len();
    let shown: Vec<T> = items.into_iter().skip(offset).take(limit).collect();
    let next = (offset + shown.len() < total).then(|| (offset + shown.len()).to_string());
    Json(json!({"items": shown, "next_cursor": next})).into_response()
}

/// Replays a stored answer for `key`, or refuses a reused key; `None` when the key is new.
fn replay(st: &mut FieldsState, inner: &Inner, key: &str, fingerprint: &Value) -> Option<Response> {
    let window = inner.config.idempotency_window;
    st.idempotency.retain(|_, e| e.at.elapsed() < window);
    let entry = st.idempotency.get(key)?;
    if entry.request != *fingerprint {
        return Some(error(
            false,
            StatusCode::UNPROCESSABLE_ENTITY,
            "BAD_REQUEST",
            "Idempotency-Key was already used with a different request body",
        ));
    }
    let mut resp = (entry.status, Json(entry.body.clone())).into_response();
    resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    inner.lock().counters.idempotent_replays += 1;
    Some(resp)
}

fn remember(st: &mut FieldsState, key: Option<String>, fingerprint: Value, body: &Value) {
    if let Some(key) = key {
        st.idempotency.insert(
            key,
            IdemEntry { request: fingerprint, status: StatusCode::OK, body: body.clone(), at: Instant::now() },
        );
    }
}

/// The idempotency store key: the route's own namespace plus the client's key.
fn idem_key(headers: &HeaderMap, namespace: &str) -> Option<String> {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(|k| format!("{namespace} {k}"))
}

fn fingerprint(body: &Bytes) -> Value {
    serde_json::from_slice::<Value>(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

// ---------------------------------------------------------------------------------------------------------
// Fields

async fn list_fields(State(inner): Sim, RawQuery(q): RawQuery) -> Response {
    let params = parse_query(q.as_deref());
    let (limit, offset) = match paging(&params) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let wanted: Vec<&str> = params.iter().filter(|(k, _)| k == "field_id[]").map(|(_, v)| v.as_str()).collect();
    let st = lock(&inner);
    let items: Vec<SimField> =
        st.fields.values().filter(|f| wanted.is_empty() || wanted.contains(&f.brex_id.as_str())).cloned().collect();
    page(items, limit, offset)
}

#[derive(Deserialize)]
struct FieldCreateBody {
    name: String,
    group: String,
    #[serde(default)]
    remote_id: Option<String>,
    #[serde(default)]
    integration_id: Option<String>,
    #[serde(default)]
    is_disabled: Option<bool>,
}

const GROUPS: [&str; 3] = ["ACCOUNTING", "USER", "ERP"];

async fn create_field(State(inner): Sim, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = idem_key(&headers, "fields") else {
        return bad_request("Idempotency-Key header is required");
    };
    let print = fingerprint(&body);
    let mut st = lock(&inner);
    if let Some(resp) = replay(&mut st, &inner, &key, &print) {
        return resp;
    }
    let parsed: FieldCreateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(&format!("Invalid request body: {e}")),
    };
    if parsed.name.trim().is_empty() {
        return bad_request("name must not be empty");
    }
    if !GROUPS.contains(&parsed.group.as_str()) {
        return bad_request(&format!("group must be one of {}", GROUPS.join(", ")));
    }
    let remote_id = parsed.remote_id.filter(|r| !r.is_empty());
    if let Some(remote) = &remote_id
        && st.fields.values().any(|f| f.remote_id.as_ref() == Some(remote))
    {
        return bad_request(&format!("a field with remote_id {remote:?} already exists"));
    }
    let field = SimField {
        brex_id: st.next_id("extended_field_"),
        name: parsed.name,
        remote_id,
        group: parsed.group,
        integration_id: parsed.integration_id,
        is_disabled: parsed.is_disabled.unwrap_or(false),
        updated_at: now_micros(),
    };
    let out = serde_json::to_value(&field).unwrap_or(Value::Null);
    st.values.insert(field.brex_id.clone(), Vec::new());
    st.fields.insert(field.brex_id.clone(), field);
    remember(&mut st, Some(key), print, &out);
    Json(out).into_response()
}

async fn get_field(State(inner): Sim, Path(id): Path<String>) -> Response {
    match lock(&inner).fields.get(&id) {
        Some(f) => Json(f).into_response(),
        None => not_found(&format!("Field {id} not found")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldUpdateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    is_disabled: Option<bool>,
}

async fn update_field(State(inner): Sim, Path(id): Path<String>, body: Bytes) -> Response {
    let parsed: FieldUpdateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(&format!("Invalid request body (name, is_disabled): {e}")),
    };
    let mut st = lock(&inner);
    let Some(field) = st.fields.get_mut(&id) else { return not_found(&format!("Field {id} not found")) };
    if let Some(name) = parsed.name {
        field.name = name;
    }
    if let Some(disabled) = parsed.is_disabled {
        field.is_disabled = disabled;
    }
    field.updated_at = now_micros();
    Json(field.clone()).into_response()
}

async fn delete_field(State(inner): Sim, Path(id): Path<String>) -> Response {
    let mut st = lock(&inner);
    match st.fields.remove(&id) {
        Some(_) => {
            st.values.remove(&id);
            Json(json!({})).into_response()
        }
        None => not_found(&format!("Field {id} not found")),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Values

async fn list_values(State(inner): Sim, Path(field_id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let params = parse_query(q.as_deref());
    let (limit, offset) = match paging(&params) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let filter =
        |name: &str| -> Vec<&str> { params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect() };
    let (brex_ids, value_ids, remote_ids) = (filter("brex_id[]"), filter("value_id[]"), filter("remote_id[]"));
    let value = params.iter().find(|(k, _)| k == "value").map(|(_, v)| v.as_str());
    let any = |wanted: &[&str], have: Option<&str>| wanted.is_empty() || have.is_some_and(|h| wanted.contains(&h));
    let st = lock(&inner);
    let Some(values) = st.values.get(&field_id) else { return not_found(&format!("Field {field_id} not found")) };
    let items: Vec<SimFieldValue> = values
        .iter()
        .filter(|v| {
            any(&brex_ids, Some(&v.brex_id))
                && any(&value_ids, v.value_id.as_deref())
                && any(&remote_ids, v.remote_id.as_deref())
                && value.is_none_or(|want| v.value == want)
        })
        .cloned()
        .collect();
    page(items, limit, offset)
}

async fn get_value(State(inner): Sim, Path((field_id, brex_id)): Path<(String, String)>) -> Response {
    let st = lock(&inner);
    match st.values.get(&field_id).and_then(|vs| vs.iter().find(|v| v.brex_id == brex_id)) {
        Some(v) => Json(v).into_response(),
        None => not_found(&format!("Field value {brex_id} not found in field {field_id}")),
    }
}

#[derive(Deserialize)]
struct ItemsBody<T> {
    items: Vec<T>,
}

#[derive(Deserialize)]
struct CreateValueBody {
    value: String,
    #[serde(default)]
    value_id: Option<String>,
    #[serde(default)]
    remote_id: Option<String>,
    #[serde(default)]
    is_disabled: Option<bool>,
}

/// Parses `{"items": [...]}` with 1 to 1000 items.
fn items<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<Vec<T>, Refusal> {
    let parsed: ItemsBody<T> =
        serde_json::from_slice(body).map_err(|e| Box::new(bad_request(&format!("Invalid request body: {e}"))))?;
    if parsed.items.is_empty() || parsed.items.len() > MAX_FIELD_ITEMS {
        return Err(Box::new(bad_request(&format!("items must hold 1 to {MAX_FIELD_ITEMS} values"))));
    }
    Ok(parsed.items)
}

async fn create_values(State(inner): Sim, Path(field_id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = idem_key(&headers, &format!("values-create {field_id}")) else {
        return bad_request("Idempotency-Key header is required");
    };
    let print = fingerprint(&body);
    let mut st = lock(&inner);
    if let Some(resp) = replay(&mut st, &inner, &key, &print) {
        return resp;
    }
    let parsed: Vec<CreateValueBody> = match items(&body) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let Some(existing) = st.values.get(&field_id) else { return not_found(&format!("Field {field_id} not found")) };
    let mut remotes: std::collections::HashSet<&str> = existing.iter().filter_map(|v| v.remote_id.as_deref()).collect();
    for item in &parsed {
        if item.value.trim().is_empty() {
            return bad_request("value must not be empty");
        }
        if let Some(remote) = item.remote_id.as_deref()
            && !remotes.insert(remote)
        {
            return bad_request(&format!("a value with remote_id {remote:?} already exists in field {field_id}"));
        }
    }
    let now = now_micros();
    let mut created = Vec::with_capacity(parsed.len());
    for item in parsed {
        created.push(SimFieldValue {
            brex_id: st.next_id("efo_"),
            field_id: field_id.clone(),
            value: item.value,
            value_id: item.value_id,
            remote_id: item.remote_id,
            is_disabled: item.is_disabled.unwrap_or(false),
            updated_at: now,
        });
    }
    let out = json!({ "items": created });
    if let Some(values) = st.values.get_mut(&field_id) {
        values.extend(created);
    }
    remember(&mut st, Some(key), print, &out);
    Json(out).into_response()
}

/// `brex_id`, `remote_id` or `value_id`: exactly one.
#[derive(Deserialize)]
struct ValueRef {
    #[serde(default)]
    brex_id: Option<String>,
    #[serde(default)]
    remote_id: Option<String>,
    #[serde(default)]
    value_id: Option<String>,
}

impl ValueRef {
    fn find(&self, values: &[SimFieldValue]) -> Result<usize, Refusal> {
        let matcher: Box<dyn Fn(&SimFieldValue) -> bool + '_> = match (&self.brex_id, &self.remote_id, &self.value_id) {
            (Some(id), None, None) => Box::new(move |v| v.brex_id == *id),
            (None, Some(id), None) => Box::new(move |v| v.remote_id.as_ref() == Some(id)),
            (None, None, Some(id)) => Box::new(move |v| v.value_id.as_ref() == Some(id)),
            _ => return Err(Box::new(bad_request("each item needs exactly one of brex_id, remote_id, value_id"))),
        };
        values.iter().position(matcher).ok_or_else(|| {
            let shown = self.brex_id.as_ref().or(self.remote_id.as_ref()).or(self.value_id.as_ref());
            Box::new(not_found(&format!("Field value {} not found", shown.map_or("?", String::as_str))))
        })
    }
}

#[derive(Deserialize)]
struct UpdateValueData {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    is_disabled: Option<bool>,
}

#[derive(Deserialize)]
struct UpdateValueBody {
    #[serde(flatten)]
    key: ValueRef,
    data: UpdateValueData,
}

async fn update_values(State(inner): Sim, Path(field_id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let key = idem_key(&headers, &format!("values-update {field_id}"));
    let print = fingerprint(&body);
    let mut st = lock(&inner);
    if let Some(resp) = key.as_deref().and_then(|k| replay(&mut st, &inner, k, &print)) {
        return resp;
    }
    let parsed: Vec<UpdateValueBody> = match items(&body) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let Some(values) = st.values.get_mut(&field_id) else { return not_found(&format!("Field {field_id} not found")) };
    // Resolve every item before changing anything: all or nothing.
    let mut targets = Vec::with_capacity(parsed.len());
    for item in &parsed {
        match item.key.find(values) {
            Ok(i) => targets.push(i),
            Err(resp) => return *resp,
        }
        if item.data.value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return bad_request("value must not be empty");
        }
    }
    let now = now_micros();
    let mut updated = Vec::with_capacity(parsed.len());
    for (item, i) in parsed.into_iter().zip(targets) {
        let v = &mut values[i];
        if let Some(value) = item.data.value {
            v.value = value;
        }
        if let Some(disabled) = item.data.is_disabled {
            v.is_disabled = disabled;
        }
        v.updated_at = now;
        updated.push(v.clone());
    }
    let out = json!({ "items": updated });
    remember(&mut st, key, print, &out);
    Json(out).into_response()
}

async fn delete_values(State(inner): Sim, Path(field_id): Path<String>, body: Bytes) -> Response {
    let parsed: Vec<ValueRef> = match items(&body) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let mut st = lock(&inner);
    let Some(values) = st.values.get_mut(&field_id) else { return not_found(&format!("Field {field_id} not found")) };
    let mut doomed = Vec::with_capacity(parsed.len());
    for item in &parsed {
        match item.find(values) {
            Ok(i) => doomed.push(values[i].brex_id.clone()),
            Err(resp) => return *resp,
        }
    }
    let before = values.len();
    values.retain(|v| !doomed.contains(&v.brex_id));
    Json(json!({ "deleted": before - values.len() })).into_response()
}

// ---------------------------------------------------------------------------------------------------------
// Test-side access

impl BrexSimHandle {
    /// Every field, in creation order.
    pub fn fields(&self) -> Vec<SimField> {
        lock(&self.inner).fields.values().cloned().collect()
    }

    /// The field with this `remote_id`.
    pub fn field_by_remote_id(&self, remote_id: &str) -> Option<SimField> {
        lock(&self.inner).fields.values().find(|f| f.remote_id.as_deref() == Some(remote_id)).cloned()
    }

    /// The values of a field, in creation order (empty for an unknown field).
    pub fn field_values(&self, field_id: &str) -> Vec<SimFieldValue> {
        lock(&self.inner).values.get(field_id).cloned().unwrap_or_default()
    }

    /// A card purchase (one expense line, one card-liability line) coded in Brex with values of the
    /// simulator's fields, as a bookkeeper would: `coding` is (field remote id, value remote id) pairs. The
    /// expense line carries each field's `brex_field_id`/`remote_field_id`/`field_name` and the value's
    /// `brex_field_value_id`/`remote_field_value_id`/`field_value_name`. The record is stored READY_FOR_EXPORT.
    pub fn insert_coded_record(&self, seed: u64, coding: &[(&str, &str)]) -> Result<AccountingRecord, String> {
        let mut fields = Vec::with_capacity(coding.len());
        {
            let st = lock(&self.inner);
            for (field_remote, value_remote) in coding {
                let field = st
                    .fields
                    .values()
                    .find(|f| f.remote_id.as_deref() == Some(*field_remote))
                    .ok_or_else(|| format!("no field with remote id {field_remote}"))?;
                let value = st
                    .values
                    .get(&field.brex_id)
                    .and_then(|vs| vs.iter().find(|v| v.remote_id.as_deref() == Some(*value_remote)))
                    .ok_or_else(|| format!("field {field_remote} has no value with remote id {value_remote}"))?;
                fields.push(AccountingFieldValue {
                    brex_field_id: field.brex_id.clone(),
                    remote_field_id: field.remote_id.clone(),
                    field_name: Some(field.name.clone()),
                    brex_field_value_id: Some(value.brex_id.clone()),
                    remote_field_value_id: value.remote_id.clone(),
                    field_value_name: Some(value.value.clone()),
                    value_type: Some("IDENTIFIER".into()),
                });
            }
        }
        let options = GeneratorOptions {
            count: 1,
            refund_rate: 0.0,
            reimbursement_rate: 0.0,
            foreign_rate: 0.0,
            split_rate: 0.0,
            missing_gl_rate: 0.0,
            entity_rate: 0.0,
            ..GeneratorOptions::default()
        };
        let mut record = RecordGenerator::with_options(seed, options).generate();
        for line in record.line_items.iter_mut().filter(|l| l.line_type == LineType::Debit) {
            line.accounting_field_values = fields.clone();
        }
        self.insert_records(vec![record.clone()]);
        Ok(record)
    }
}
