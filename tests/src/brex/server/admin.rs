//! The `/_sim` admin routes: unauthenticated, not counted, and loopback only. They read and change the
//! simulator the way [`BrexSimHandle`] does, for a simulator running in another process (`brex-sim`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::BrexSimHandle;
use super::config::Faults;
use super::records::sorted_records;
use super::router::Sim;
use super::state::{Inner, snapshot};
use crate::brex::model::{AccountingRecord, Expense};
use crate::brex::webhook::{self, HttpTransport};

/// The admin routes, for `router()` to merge beside the API (they skip its request pipeline).
pub(super) fn routes() -> Router<Arc<Inner>> {
    Router::new()
        .route("/_sim/counters", get(admin_counters))
        .route("/_sim/faults", get(admin_get_faults).post(admin_set_faults))
        .route("/_sim/records", get(admin_list_records).post(admin_insert_records))
        .route("/_sim/records/ready", post(admin_mark_ready))
        .route("/_sim/records/{record_id}", get(admin_get_record))
        .route("/_sim/expenses", post(admin_insert_expenses))
        .route("/_sim/generate", post(admin_generate))
        .route("/_sim/export-results", get(admin_export_results))
        .route("/_sim/secrets", get(admin_secrets))
        .route("/_sim/rotate-secret", post(admin_rotate))
        .route("/_sim/finish-rotation", post(admin_finish_rotation))
        .route("/_sim/webhooks/send", post(admin_send_webhook))
        .route_layer(middleware::from_fn(loopback_only))
}

async fn loopback_only(ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request, next: Next) -> Response {
    if peer.ip().is_loopback() {
        next.run(req).await
    } else {
        (StatusCode::FORBIDDEN, "admin routes are loopback-only").into_response()
    }
}

async fn admin_counters(State(inner): Sim) -> Response {
    Json(snapshot(&inner)).into_response()
}

async fn admin_get_faults(State(inner): Sim) -> Response {
    Json(inner.lock().faults.clone()).into_response()
}

async fn admin_set_faults(State(inner): Sim, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            inner.lock().faults = f.clone();
            Json(f).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn admin_list_records(State(inner): Sim) -> Response {
    let all = sorted_records(inner.lock().records.values().cloned().collect());
    Json(all).into_response()
}

async fn admin_insert_records(State(inner): Sim, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<AccountingRecord>>(&body) {
        Ok(records) => {
            let n = records.len();
            BrexSimHandle { inner }.insert_records(records);
            Json(json!({"inserted": n})).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn admin_insert_expenses(State(inner): Sim, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<Expense>>(&body) {
        Ok(expenses) => {
            let n = expenses.len();
            BrexSimHandle { inner }.insert_expenses(expenses);
            Json(json!({"inserted": n})).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn admin_get_record(State(inner): Sim, Path(id): Path<String>) -> Response {
    match inner.lock().records.get(&id) {
        Some(r) => Json(r).into_response(),
        None => (StatusCode::NOT_FOUND, "no such record").into_response(),
    }
}

#[derive(Deserialize)]
struct IdsBody {
    ids: Vec<String>,
}

async fn admin_mark_ready(State(inner): Sim, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<IdsBody>(&body) else {
        return (StatusCode::BAD_REQUEST, "expected {\"ids\": [...]}").into_response();
    };
    let n = BrexSimHandle { inner }.mark_ready_for_export(&req.ids);
    Json(json!({"updated": n})).into_response()
}

/// Keeps one admin call from exhausting memory.
const MAX_GENERATE: usize = 100_000;

#[derive(Deserialize)]
struct GenerateBody {
    count: usize,
}

async fn admin_generate(State(inner): Sim, body: Bytes) -> Response {
    let req = match serde_json::from_slice::<GenerateBody>(&body) {
        Ok(r) if r.count <= MAX_GENERATE => r,
        _ => {
            return (StatusCode::BAD_REQUEST, format!("expected {{\"count\": n}} with n <= {MAX_GENERATE}"))
                .into_response();
        }
    };
    let sim = BrexSimHandle { inner };
    Json(json!({"ids": sim.generate_records(req.count)})).into_response()
}

async fn admin_export_results(State(inner): Sim) -> Response {
    Json(inner.lock().exports.clone()).into_response()
}

async fn admin_secrets(State(inner): Sim) -> Response {
    Json(inner.lock().secrets.clone()).into_response()
}

async fn admin_rotate(State(inner): Sim) -> Response {
    let sim = BrexSimHandle { inner };
    sim.rotate_webhook_secret();
    Json(sim.webhook_secrets()).into_response()
}

async fn admin_finish_rotation(State(inner): Sim) -> Response {
    let sim = BrexSimHandle { inner };
    sim.finish_rotation();
    Json(sim.webhook_secrets()).into_response()
}

#[derive(Deserialize)]
struct SendBody {
    url: String,
    record_ids: Vec<String>,
    #[serde(default = "default_scale")]
    time_scale: f64,
}

fn default_scale() -> f64 {
    1.0
}

/// Starts a delivery in the background (retries can take hours at scale 1) and returns its message id.
async fn admin_send_webhook(State(inner): Sim, body: Bytes) -> Response {
    let req = match serde_json::from_slice::<SendBody>(&body) {
        Ok(r) if r.time_scale.is_finite() && r.time_scale >= 0.0 => r,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "expected {\"url\": \"…\", \"record_ids\": [...], \"time_scale\"?: finite f64 >= 0}",
            )
                .into_response();
        }
    };
    let sender = BrexSimHandle { inner: inner.clone() }.webhook_sender().time_scale(req.time_scale);
    let payload = webhook::ready_for_export_body(&req.record_ids, &inner.config.company_id);
    let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let id = msg_id.clone();
    tokio::spawn(async move {
        let report = sender.send_with_id(&HttpTransport::new(req.url), &id, payload).await;
        tracing::info!(msg_id = %report.msg_id, delivered = report.delivered,
                       attempts = report.attempts.len(), "webhook delivery finished");
    });
    (StatusCode::ACCEPTED, Json(json!({"msg_id": msg_id}))).into_response()
}
