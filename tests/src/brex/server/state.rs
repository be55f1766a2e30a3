//! What the simulator holds: records, expenses, tokens, secrets, subscriptions, idempotency stores, fault
//! knobs and counters, behind one lock (the Fields API keeps its own, see `fields`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{BrexSimConfig, Faults};
use super::export::ExportResult;
use super::fields;
use super::webhooks::{WebhookSecret, WebhookSubscription};
use crate::brex::generator::RecordGenerator;
use crate::brex::model::{AccountingRecord, Expense};

/// Requests counted per (method, route template, status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCount {
    pub method: String,
    pub route: String,
    pub status: u16,
    pub count: u64,
}

/// Counter snapshot ([`BrexSim::counters`](super::BrexSimHandle::counters), `GET /_sim/counters`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrexCounters {
    /// Every request to an API route or the token endpoint (not `/_sim`).
    pub total_requests: u64,
    pub by_route: Vec<RouteCount>,
    /// Every 429 sent (rate limit + injected bursts).
    pub rate_limited: u64,
    /// 429s from `Faults::burst_429`.
    pub injected_429: u64,
    /// 5xx from `Faults::error_rate` / `post_commit_error_rate`.
    pub injected_5xx: u64,
    /// 401/403 auth rejections.
    pub unauthorized: u64,
    /// Access tokens issued by the token endpoint.
    pub token_fetches: u64,
    /// Token requests rejected with `invalid_grant` (e.g. a reused refresh token).
    pub invalid_grants: u64,
    /// Export-results responses replayed from the idempotency store.
    pub idempotent_replays: u64,
    /// Webhook delivery attempts made through
    /// [`BrexSim::webhook_sender`](super::BrexSimHandle::webhook_sender) senders.
    pub webhook_deliveries: u64,
}

impl BrexCounters {
    /// Requests with exactly this method, route template (e.g. `/v3/accounting/records/{record_id}`) and status.
    pub fn count(&self, method: &str, route: &str, status: u16) -> u64 {
        self.by_route
            .iter()
            .filter(|c| c.method == method && c.route == route && c.status == status)
            .map(|c| c.count)
            .sum()
    }

    /// Requests with this method and route, any status.
    pub fn route_total(&self, method: &str, route: &str) -> u64 {
        self.by_route.iter().filter(|c| c.method == method && c.route == route).map(|c| c.count).sum()
    }
}

pub(super) struct IdemEntry {
    pub(super) request: Value,
    pub(super) status: StatusCode,
    pub(super) body: Value,
    pub(super) at: Instant,
}

pub(super) struct RateWindow {
    pub(super) start: Instant,
    pub(super) count: u32,
}

pub(super) struct SimState {
    pub(super) records: HashMap<String, AccountingRecord>,
    pub(super) expenses: HashMap<String, Expense>,
    pub(super) user_tokens: Vec<String>,
    pub(super) access_tokens: HashMap<String, Instant>,
    pub(super) refresh_token: Option<String>,
    pub(super) secrets: Vec<WebhookSecret>,
    pub(super) rate: Option<RateWindow>,
    pub(super) faults: Faults,
    pub(super) rng: StdRng,
    pub(super) generator: RecordGenerator,
    pub(super) idempotency: HashMap<String, IdemEntry>,
    pub(super) exports: Vec<ExportResult>,
    /// Webhook subscriptions by id (`/v1/webhooks`); ids are sequential so the map order is creation order.
    pub(super) subscriptions: BTreeMap<String, WebhookSubscription>,
    pub(super) subscription_seq: u64,
    /// `POST /v1/webhooks` idempotency keys, kept apart from export-results' keys.
    pub(super) webhook_idempotency: HashMap<String, IdemEntry>,
    pub(super) routes: BTreeMap<(String, String, u16), u64>,
    pub(super) counters: BrexCounters,
    /// Receipt files and their presigned links (`receipts`).
    pub(super) receipts: super::receipts::ReceiptState,
}

pub(super) struct Inner {
    pub(super) addr: SocketAddr,
    pub(super) config: BrexSimConfig,
    pub(super) state: Mutex<SimState>,
    pub(super) deliveries: Arc<AtomicU64>,
    /// The Fields API (`fields.rs`), locked on its own.
    pub(super) fields: Mutex<fields::FieldsState>,
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters to a sim.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) fn snapshot(inner: &Inner) -> BrexCounters {
    let st = inner.lock();
    let mut c = st.counters.clone();
    c.by_route = st
        .routes
        .iter()
        .map(|((method, route, status), count)| RouteCount {
            method: method.clone(),
            route: route.clone(),
            status: *status,
            count: *count,
        })
        .collect();
    c.webhook_deliveries = inner.deliveries.load(Ordering::Relaxed);
    c
}

/// Truncates to the microsecond precision the wire carries, so keyset cursors (µs) and stored values agree.
pub(super) fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t - TimeDelta::nanoseconds(i64::from(t.timestamp_subsec_nanos() % 1000))
}

pub(super) fn now_micros() -> DateTime<Utc> {
    to_micros(Utc::now())
}

/// Marks a record as changed: newer `updated_at` (strictly increasing) and `version + 1`.
pub(super) fn bump(record: &mut AccountingRecord) {
    let now = now_micros();
    record.updated_at = if now > record.updated_at { now } else { record.updated_at + TimeDelta::microseconds(1) };
    record.version += 1;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bump_is_strictly_increasing_even_for_future_timestamps() {
        let mut r: AccountingRecord = serde_json::from_value(json!({
            "id": "accr_1", "amount": {"amount": 1, "currency": "USD"}, "type": "CARD_EXPENSE_POST",
            "review_status": "PREPARE", "source_type": "CARD",
            "erp_posting_date": "2026-06-11T09:09:05.840865Z", "posted_at": "2026-06-11T09:09:05.840Z",
            "updated_at": "2999-01-01T00:00:00Z", "version": 2, "line_items": []
        }))
        .unwrap();
        let before = r.updated_at;
        bump(&mut r);
        assert!(r.updated_at > before);
        assert_eq!(r.version, 3);
    }
}
