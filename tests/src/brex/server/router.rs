//! The API route table and the request pipeline every API route runs through: auth, rate limit, injected
//! faults, latency, then the handler; every request is counted and stamped with `x-brex-trace-id`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::json;

use super::expenses::{get_expense, list_expenses};
use super::export::export_results;
use super::oauth::{TOKEN_PATH, token};
use super::records::{get_record, list_records};
use super::state::{Inner, RateWindow, SimState};
use super::webhooks::{create_webhook, delete_webhook, get_webhook, list_secrets, list_webhooks, update_webhook};
use super::{admin, fields};

/// What every handler extracts: the shared simulator.
pub(super) type Sim = State<Arc<Inner>>;

pub(super) fn router(inner: Arc<Inner>) -> Router {
    // Each route carries its own template so counters are per template (axum's MatchedPath needs a feature
    // the workspace does not enable).
    let api_routes: [(&'static str, MethodRouter<Arc<Inner>>); 10] = [
        (TOKEN_PATH, post(token)),
        ("/v1/webhooks/secrets", get(list_secrets)),
        ("/v1/webhooks", get(list_webhooks).post(create_webhook)),
        ("/v1/webhooks/{webhook_id}", get(get_webhook).put(update_webhook).delete(delete_webhook)),
        ("/v2/company", get(company)),
        ("/v3/accounting/records", get(list_records)),
        ("/v3/accounting/records/{record_id}", get(get_record)),
        ("/v3/accounting/records/export-results", post(export_results)),
        ("/v1/expenses", get(list_expenses)),
        ("/v1/expenses/{expense_id}", get(get_expense)),
    ];
    let mut api = Router::new();
    for (path, method_router) in api_routes.into_iter().chain(fields::routes()) {
        api =
            api.route(path, method_router.route_layer(middleware::from_fn_with_state((inner.clone(), path), pipeline)));
    }
    // Presigned receipt links carry their own authorization: outside the API pipeline, as S3 is.
    let files = Router::new().route(super::receipts::FILE_ROUTE, get(super::receipts::download));
    api.merge(admin::routes()).merge(files).with_state(inner)
}

/// Error body in the classic (v1/v2) shape or the v3 shape.
pub(super) fn error(v3: bool, status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        if v3 { json!({"error_code": code, "message": message}) } else { json!({"type": code, "message": message}) };
    (status, Json(body)).into_response()
}

enum Verdict {
    Pass { post_commit: Option<u16> },
    Reject(Response),
}

/// Auth → rate limit → faults → latency → handler; counts everything and stamps `X-Brex-Trace-Id`.
async fn pipeline(State((inner, route)): State<(Arc<Inner>, &'static str)>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let mut resp = if route == TOKEN_PATH {
        next.run(req).await
    } else {
        let v3 = route.starts_with("/v3/");
        let (verdict, latency) = admit(&inner, &req, v3);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match verdict {
            Verdict::Reject(r) => r,
            Verdict::Pass { post_commit: None } => next.run(req).await,
            Verdict::Pass { post_commit: Some(status) } => {
                let _ = next.run(req).await;
                injected_error(v3, status)
            }
        }
    };
    let trace = {
        let mut st = inner.lock();
        st.counters.total_requests += 1;
        let status = resp.status().as_u16();
        *st.routes.entry((method, route.to_owned(), status)).or_insert(0) += 1;
        match status {
            429 => st.counters.rate_limited += 1,
            401 | 403 => st.counters.unauthorized += 1,
            _ => {}
        }
        format!("{:016x}", st.rng.random::<u64>())
    };
    if let Ok(v) = HeaderValue::from_str(&trace) {
        resp.headers_mut().insert("x-brex-trace-id", v);
    }
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn admit(inner: &Inner, req: &Request, v3: bool) -> (Verdict, Duration) {
    let cfg = &inner.config;
    let mut st = inner.lock();
    let latency = Duration::from_millis(st.faults.latency_ms);
    let token = bearer(req.headers());
    let auth = match token {
        None => Err("Missing bearer token"),
        Some(t) if st.user_tokens.iter().any(|u| u == t) => Ok(()),
        Some(t) => match st.access_tokens.get(t) {
            Some(exp) if *exp > Instant::now() => Ok(()),
            Some(_) => Err("Expired token"),
            None => Err("Invalid token"),
        },
    };
    if let Err(msg) = auth {
        let status = if msg == "Expired token" {
            StatusCode::from_u16(cfg.expired_token_status).unwrap_or(StatusCode::UNAUTHORIZED)
        } else {
            StatusCode::UNAUTHORIZED
        };
        let code = if status == StatusCode::FORBIDDEN { "FORBIDDEN" } else { "UNAUTHORIZED" };
        return (Verdict::Reject(error(v3, status, code, msg)), latency);
    }

    let now = Instant::now();
    let window = match &mut st.rate {
        Some(w) if now.duration_since(w.start) < cfg.rate_window => w,
        slot => slot.insert(RateWindow { start: now, count: 0 }),
    };
    window.count = window.count.saturating_add(1);
    if window.count > cfg.rate_limit_per_window {
        let retry = st.faults.retry_after_secs;
        return (Verdict::Reject(rate_limited(retry)), latency);
    }
    if st.faults.burst_429 > 0 {
        st.faults.burst_429 -= 1;
        st.counters.injected_429 += 1;
        let retry = st.faults.retry_after_secs;
        return (Verdict::Reject(rate_limited(retry)), latency);
    }
    let draw: f64 = st.rng.random();
    if draw < st.faults.error_rate {
        let status = pick_status(&mut st);
        st.counters.injected_5xx += 1;
        return (Verdict::Reject(injected_error(v3, status)), latency);
    }
    let draw: f64 = st.rng.random();
    if draw < st.faults.post_commit_error_rate {
        let status = pick_status(&mut st);
        st.counters.injected_5xx += 1;
        return (Verdict::Pass { post_commit: Some(status) }, latency);
    }
    (Verdict::Pass { post_commit: None }, latency)
}

fn pick_status(st: &mut SimState) -> u16 {
    let n = st.faults.error_statuses.len();
    if n == 0 {
        return 500;
    }
    let i = st.rng.random_range(0..n);
    st.faults.error_statuses[i]
}

fn rate_limited(retry_after: Option<u64>) -> Response {
    // The 429 comes from Brex's gateway, so it has the classic shape on every API version.
    let mut resp =
        error(false, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", "Too many requests. Please retry later.");
    if let Some(v) = retry_after.and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok()) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

/// 500 is an application error (JSON); 502/503/504 look like a gateway's plain-text page.
fn injected_error(v3: bool, status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        500 => error(v3, code, "INTERNAL_ERROR", "Internal server error"),
        _ => (code, [("content-type", "text/plain")], code.canonical_reason().unwrap_or("Error").to_owned())
            .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// GET /v2/company: answered from the configuration alone, too small for a file of its own.

async fn company(State(inner): Sim) -> Response {
    Json(json!({
        "id": inner.config.company_id,
        "legal_name": "Acme Inc",
        "mailing_address": {"line1": "1 Market St", "city": "San Francisco", "state": "CA",
                             "country": "US", "postal_code": "94105"},
    }))
    .into_response()
}
