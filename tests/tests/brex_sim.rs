//! The Brex simulator over real HTTP.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::webhook::{self, WebhookDelivery, WebhookSender};
use sims::brex::{
    AccountingRecord, BrexSim, BrexSimConfig, ExportOutcome, Faults, OAuthClient, ReviewStatus, SecretStatus,
};

const TOKEN: &str = "bxt_sim_user_token";

async fn sim_with(config: BrexSimConfig) -> BrexSim {
    BrexSim::start(config).await.expect("sim starts")
}

async fn sim() -> BrexSim {
    sim_with(BrexSimConfig::default()).await
}

/// One client for the whole file (building a rustls client is slow in debug builds). No idle pool: each
/// test has its own runtime, and a pooled connection must not outlive the runtime that opened it.
fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client")).clone()
}

/// Records updated within the last `hours` hours (all READY_FOR_EXPORT).
fn recent_records(seed: u64, n: usize, hours: i64) -> Vec<AccountingRecord> {
    let end = Utc::now() - TimeDelta::minutes(1);
    let opts = GeneratorOptions { start: end - TimeDelta::hours(hours), end, ..GeneratorOptions::default() };
    RecordGenerator::with_options(seed, opts).records(n)
}

async fn get(sim: &BrexSim, path_and_query: &str, token: &str) -> (StatusCode, Value) {
    let resp = client().get(format!("{}{path_and_query}", sim.base_url())).bearer_auth(token).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post_export(sim: &BrexSim, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
    let mut req =
        client().post(format!("{}/v3/accounting/records/export-results", sim.base_url())).bearer_auth(TOKEN).json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn refresh(sim: &BrexSim, refresh_token: &str, secret: &str) -> (StatusCode, Value) {
    let resp = client()
        .post(sim.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", "cid"),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn auth_user_tokens_and_error_shapes() {
    let sim = sim().await;
    let (s, _) = get(&sim, "/v1/expenses", TOKEN).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = get(&sim, "/v1/expenses", "bxt_wrong").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["type"], "UNAUTHORIZED");
    let (s, body) = get(&sim, "/v3/accounting/records?updated_at[gt]=2020-01-01", "bxt_wrong").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error_code"], "UNAUTHORIZED");
    let resp = client().get(format!("{}/v1/webhooks/secrets", sim.base_url())).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("x-brex-trace-id"));
    let c = sim.counters();
    assert_eq!(c.unauthorized, 3);
    assert_eq!(c.count("GET", "/v1/expenses", 401), 1);
    assert_eq!(c.count("GET", "/v1/expenses", 200), 1);
    assert_eq!(c.total_requests, 4);
}

#[tokio::test]
async fn oauth_refresh_tokens_rotate_and_access_tokens_expire() {
    let sim = sim_with(BrexSimConfig {
        oauth: Some(OAuthClient { client_id: "cid".into(), client_secret: "cs".into(), refresh_token: "rt0".into() }),
        ..BrexSimConfig::default()
    })
    .await;
    let (s, body) = refresh(&sim, "rt0", "wrong").await;
    assert_eq!((s, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));

    let (s, body) = refresh(&sim, "rt0", "cs").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let access1 = body["access_token"].as_str().unwrap().to_owned();
    let rt1 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, "rt0");
    assert_eq!(sim.current_refresh_token().as_deref(), Some(rt1.as_str()));
    assert_eq!(get(&sim, "/v1/webhooks/secrets", &access1).await.0, StatusCode::OK);

    // The old refresh token is dead after use.
    let (s, body) = refresh(&sim, "rt0", "cs").await;
    assert_eq!((s, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));

    let (s, body) = refresh(&sim, &rt1, "cs").await;
    assert_eq!(s, StatusCode::OK);
    let access2 = body["access_token"].as_str().unwrap().to_owned();

    sim.expire_access_tokens();
    let (s, body) = get(&sim, "/v1/webhooks/secrets", &access2).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Expired token");

    let c = sim.counters();
    assert_eq!((c.token_fetches, c.invalid_grants), (2, 1));
    assert_eq!(c.count("POST", "/oauth2/default/v1/token", 400), 1);
}

#[tokio::test]
async fn records_query_validation() {
    let sim = sim().await;
    let ids: String = (0..501).map(|i| format!("ids=accr_{i}&")).collect();
    let (s, body) = get(&sim, &format!("/v3/accounting/records?{ids}"), TOKEN).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_code"], "INVALID_REQUEST");
    let ids: String = (0..500).map(|i| format!("ids=accr_{i}&")).collect();
    assert_eq!(get(&sim, &format!("/v3/accounting/records?{ids}"), TOKEN).await.0, StatusCode::OK);

    for q in [
        "review_status=READY_FOR_EXPORT&source_type=BILL",
        "review_status=READY_FOR_EXPORT",
        "review_status=DONE&source_type=CARD",
        "source_type=CASH",
        "updated_at[gt]=yesterday",
        "limit=0",
        "limit=1001",
        "cursor=garbage!",
    ] {
        let (s, body) = get(&sim, &format!("/v3/accounting/records?{q}"), TOKEN).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(body["error_code"], "INVALID_REQUEST", "{q}");
    }
    let (s, _) =
        get(&sim, "/v3/accounting/records?review_status=READY_FOR_EXPORT&source_type=REIMBURSEMENT", TOKEN).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = get(&sim, "/v3/accounting/records/accr_nope", TOKEN).await;
    assert_eq!((s, body["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
}

#[tokio::test]
async fn pages_through_250_records_exactly_once() {
    let sim = sim().await;
    let records = recent_records(11, 250, 6);
    sim.insert_records(records.clone());
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{}/v3/accounting/records", sim.base_url());
        let mut query =
            vec![("updated_at[gt]".to_owned(), "2020-01-01T00:00:00Z".to_owned()), ("limit".into(), "100".into())];
        if let Some(c) = &cursor {
            query.push(("cursor".into(), c.clone()));
        }
        url.push('?');
        url.push_str(&serde_urlencode(&query));
        let body: Value = client().get(url).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        pages += 1;
        assert_eq!(body["total_count"], 250);
        let items = body["items"].as_array().unwrap();
        seen.extend(items.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        let has_next = body["has_next_page"].as_bool().unwrap();
        assert_eq!(has_next, !body["next_cursor"].is_null());
        if !has_next {
            break;
        }
        cursor = Some(body["next_cursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let mut sorted = seen.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "every id exactly once");
    // Ordered by (updated_at, id).
    let order: Vec<String> = sim.records().into_iter().map(|r| r.id).collect();
    assert_eq!(seen, order);
}

fn serde_urlencode(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[tokio::test]
async fn updated_at_filters_and_the_narrow_default_window() {
    let sim = sim().await;
    let now = Utc::now();
    let mut recs = recent_records(5, 4, 1);
    let ages = [TimeDelta::days(10), TimeDelta::days(3), TimeDelta::hours(2), TimeDelta::minutes(5)];
    for (r, age) in recs.iter_mut().zip(ages) {
        r.updated_at = now - age;
    }
    sim.insert_records(recs.clone());
    let ids = |body: &Value| -> Vec<String> {
        body["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
    };

    // No ids, no updated_at: only the last 24 h.
    let (_, body) = get(&sim, "/v3/accounting/records", TOKEN).await;
    assert_eq!(ids(&body), vec![recs[2].id.clone(), recs[3].id.clone()]);

    let (_, body) = get(&sim, "/v3/accounting/records?updated_at[gt]=2000-01-01", TOKEN).await;
    assert_eq!(ids(&body).len(), 4);

    let gte = (now - TimeDelta::days(3)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let lt = (now - TimeDelta::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let resp = client()
        .get(format!("{}/v3/accounting/records", sim.base_url()))
        .query(&[("updated_at[gte]", gte.as_str()), ("updated_at[lt]", lt.as_str())])
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(ids(&body), vec![recs[1].id.clone(), recs[2].id.clone()]);

    // ids bypass the default window.
    let (_, body) = get(&sim, &format!("/v3/accounting/records?ids={}", recs[0].id), TOKEN).await;
    assert_eq!(ids(&body), vec![recs[0].id.clone()]);

    // A touch moves an old record past a watermark.
    let watermark = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(sim.touch_record(&recs[0].id));
    let (_, body) =
        get(&sim, &format!("/v3/accounting/records?updated_at[gt]={}", watermark.replace('+', "%2B")), TOKEN).await;
    assert_eq!(ids(&body), vec![recs[0].id.clone()]);
    assert_eq!(body["items"][0]["version"].as_u64(), Some(recs[0].version + 1));
}

#[tokio::test]
async fn export_results_validation_effects_and_idempotency() {
    let sim = sim().await;
    let recs = recent_records(21, 4, 2);
    sim.insert_records(recs.clone());
    let (a, b, c, d) = (&recs[0].id, &recs[1].id, &recs[2].id, &recs[3].id);
    sim.set_review_status(&[d.as_str()], ReviewStatus::Review);

    let (s, body) = post_export(
        &sim,
        &json!({"results": [
        {"accounting_record_id": a, "success": {"reference_id": "V1"}},
        {"accounting_record_id": "accr_missing", "failure": {"error_message": "x"}}]}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["details"]["not_found_export_entry_source_ids"], json!(["accr_missing"]));

    let (s, body) = post_export(
        &sim,
        &json!({"results": [
        {"accounting_record_id": a, "success": {"reference_id": "V1"}},
        {"accounting_record_id": a, "failure": {"error_message": "x"}}]}),
        None,
    )
    .await;
    assert_eq!(
        (s, body["error_code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("DUPLICATE_ACCOUNTING_RECORD_IDS"))
    );

    let (s, body) = post_export(
        &sim,
        &json!({"results": [
        {"accounting_record_id": a, "success": {"reference_id": "V1"}},
        {"accounting_record_id": d, "success": {"reference_id": "V2"}}]}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error_code"], "ACCOUNTING_RECORD_NOT_READY_FOR_EXPORT");
    assert_eq!(body["details"]["not_ready_for_export_accounting_record_ids"], json!([d]));
    // All or nothing: `a` was not touched by the rejected batches.
    assert_eq!(sim.record(a).unwrap().review_status, ReviewStatus::ReadyForExport);
    assert!(sim.export_results().is_empty());

    let (s, _) = post_export(&sim, &json!({"results": []}), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let ok_body = json!({"results": [
        {"accounting_record_id": a, "success": {"reference_id": "V1", "deep_link_url": "https://ifs.example/v/1"}},
        {"accounting_record_id": b, "failure": {"error_message": "Invalid GL account"}}]});
    let (s, body) = post_export(&sim, &ok_body, Some("key-1")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["updated_accounting_record_ids"], json!([a, b]));
    let ra = sim.record(a).unwrap();
    assert_eq!(ra.review_status, ReviewStatus::Exported);
    assert_eq!(ra.version, recs[0].version + 1);
    assert!(ra.updated_at > recs[0].updated_at);
    let rb = sim.record(b).unwrap();
    assert_eq!((rb.review_status, rb.version), (ReviewStatus::ReadyForExport, recs[1].version));
    assert_eq!(
        sim.export_result(a).unwrap().outcome,
        ExportOutcome::Success {
            reference_id: Some("V1".into()),
            deep_link_url: Some("https://ifs.example/v/1".into())
        }
    );
    assert_eq!(
        sim.export_result(b).unwrap().outcome,
        ExportOutcome::Failure { error_message: "Invalid GL account".into() }
    );

    // Same key + same body → the stored 200, even though `a` is no longer READY_FOR_EXPORT.
    let (s, replay) = post_export(&sim, &ok_body, Some("key-1")).await;
    assert_eq!((s, &replay), (StatusCode::OK, &body));
    assert_eq!(sim.counters().idempotent_replays, 1);
    assert_eq!(sim.export_results().len(), 2);
    // Same key + different body → 422.
    let other = json!({"results": [{"accounting_record_id": c, "success": {"reference_id": "V3"}}]});
    let (s, _) = post_export(&sim, &other, Some("key-1")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Without the key, re-reporting an exported record is NOT_READY (the connector treats that as done).
    let (s, body) = post_export(&sim, &ok_body, None).await;
    assert_eq!(
        (s, body["error_code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("ACCOUNTING_RECORD_NOT_READY_FOR_EXPORT"))
    );
    assert_eq!(sim.records_by_status(ReviewStatus::Exported).len(), 1);
}

#[tokio::test]
async fn expenses_in_cents_with_status_filter_expand_and_paging() {
    let sim = sim().await;
    let end = Utc::now();
    let mut g = RecordGenerator::with_options(
        3,
        GeneratorOptions { start: end - TimeDelta::days(2), end, ..GeneratorOptions::default() },
    );
    let pairs = g.pairs(30);
    sim.insert_expenses(pairs.iter().map(|(_, e)| e.clone()).collect());
    let approved = pairs.iter().filter(|(_, e)| e.status == "APPROVED").count();
    assert!(approved > 0 && approved < 30);

    let (s, body) = get(&sim, "/v1/expenses?status[]=APPROVED&limit=100", TOKEN).await;
    assert_eq!(s, StatusCode::OK);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), approved);
    assert!(body["next_cursor"].is_null());
    let first = &items[0];
    assert!(first["billing_amount"]["amount"].is_i64(), "cents are integers: {first}");
    assert!(first.get("department").is_none() && first.get("merchant").is_none());
    let (rec, _) = pairs.iter().find(|(_, e)| e.id == first["id"].as_str().unwrap()).unwrap();
    let cents = first["billing_amount"]["amount"].as_i64().unwrap();
    assert_eq!(rust_decimal::Decimal::new(cents.abs(), 2), rec.amount.amount);

    let (_, body) =
        get(&sim, "/v1/expenses?status[]=APPROVED&status[]=SETTLED&expand[]=department&expand[]=merchant", TOKEN).await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 30);
    assert!(items.iter().all(|e| e["department"]["name"].is_string() && e["merchant"]["mcc"].is_string()));
    assert!(items[0].get("user").is_none());

    // Paging with limit 7 visits every expense once.
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let q = if cursor.is_empty() { "limit=7".to_owned() } else { format!("limit=7&cursor={cursor}") };
        let (_, body) = get(&sim, &format!("/v1/expenses?{q}"), TOKEN).await;
        ids.extend(body["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30);

    let start = (end - TimeDelta::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let start_t = chrono::DateTime::parse_from_rfc3339(&start).unwrap();
    let (_, body) = get(&sim, &format!("/v1/expenses?updated_at_start={start}&limit=100"), TOKEN).await;
    let recent = pairs.iter().filter(|(_, e)| e.updated_at >= start_t).count();
    assert!(recent > 0 && recent < 30, "{recent}");
    assert_eq!(body["items"].as_array().unwrap().len(), recent);

    assert_eq!(get(&sim, "/v1/expenses?limit=101", TOKEN).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(get(&sim, "/v1/expenses?status[]=NOPE", TOKEN).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn rate_limit_without_retry_after() {
    let sim = sim_with(BrexSimConfig { rate_limit_per_window: 20, ..BrexSimConfig::default() }).await;
    for i in 0..20 {
        assert_eq!(get(&sim, "/v1/webhooks/secrets", TOKEN).await.0, StatusCode::OK, "request {}", i + 1);
    }
    let resp = client().get(format!("{}/v1/webhooks/secrets", sim.base_url())).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "RATE_LIMITED");
    // Unauthenticated requests do not use the budget but get 401 regardless.
    assert_eq!(get(&sim, "/v1/webhooks/secrets", "bad").await.0, StatusCode::UNAUTHORIZED);
    let c = sim.counters();
    assert_eq!((c.rate_limited, c.injected_429), (1, 0));
    assert_eq!(c.count("GET", "/v1/webhooks/secrets", 429), 1);
}

#[tokio::test]
async fn fault_knobs_burst_errors_latency_and_determinism() {
    let sim = sim().await;
    sim.set_faults(Faults { burst_429: 3, retry_after_secs: Some(2), ..Faults::default() });
    for _ in 0..3 {
        let resp =
            client().get(format!("{}/v1/webhooks/secrets", sim.base_url())).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "2");
    }
    assert_eq!(get(&sim, "/v1/webhooks/secrets", TOKEN).await.0, StatusCode::OK);

    // Through the admin API, as the binary's users do.
    let resp = client()
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"error_rate": 1.0, "error_statuses": [503], "latency_ms": 150}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let t = Instant::now();
    let resp = client()
        .get(format!("{}/v3/accounting/records?updated_at[gt]=2020-01-01", sim.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(t.elapsed() >= Duration::from_millis(150));
    let c = sim.counters();
    assert_eq!((c.injected_429, c.injected_5xx), (3, 1));

    // Post-commit errors: the export happens, the client sees 500, the keyed retry replays the 200.
    let recs = recent_records(2, 1, 1);
    sim.insert_records(recs.clone());
    sim.set_faults(Faults { post_commit_error_rate: 1.0, error_statuses: vec![500], ..Faults::default() });
    let body = json!({"results": [{"accounting_record_id": recs[0].id, "success": {"reference_id": "V9"}}]});
    let (s, _) = post_export(&sim, &body, Some("k9")).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(sim.record(&recs[0].id).unwrap().review_status, ReviewStatus::Exported);
    sim.set_faults(Faults::default());
    let (s, _) = post_export(&sim, &body, Some("k9")).await;
    assert_eq!(s, StatusCode::OK);

    // Same seed, same fault sequence.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let s = sim_with(BrexSimConfig {
            seed: 99,
            faults: Faults { error_rate: 0.5, ..Faults::default() },
            ..BrexSimConfig::default()
        })
        .await;
        let mut statuses = Vec::new();
        for _ in 0..16 {
            statuses.push(get(&s, "/v1/webhooks/secrets", TOKEN).await.0.as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&200) && runs[0].iter().any(|s| *s >= 500), "{:?}", runs[0]);
}

#[tokio::test]
async fn secret_rotation_gives_two_signatures() {
    let sim = sim().await;
    let (_, body) = get(&sim, "/v1/webhooks/secrets", TOKEN).await;
    let secrets = body.as_array().unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0]["status"], "ACTIVE");
    let old = secrets[0]["secret"].as_str().unwrap().to_owned();
    assert!(old.starts_with("whsec_"));

    let new = sim.rotate_webhook_secret();
    let (_, body) = get(&sim, "/v1/webhooks/secrets", TOKEN).await;
    assert_eq!(body, json!([{"secret": new, "status": "ACTIVE"}, {"secret": old, "status": "PENDING_REVOKE"}]));

    let captured = Arc::new(Mutex::new(Vec::<WebhookDelivery>::new()));
    let cap = captured.clone();
    let transport = move |d: WebhookDelivery| {
        cap.lock().unwrap().push(d);
        async { 200 }
    };
    let report = sim.webhook_sender().send(&transport, sim.ready_for_export_body(&["accr_1"])).await;
    assert!(report.delivered);
    let d = captured.lock().unwrap()[0].clone();
    let sig = d.header("webhook-signature").unwrap().to_owned();
    let ts: i64 = d.header("webhook-timestamp").unwrap().parse().unwrap();
    let entries: Vec<&str> = sig.split(' ').collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0], webhook::sign(&d.msg_id, ts, &d.body, std::slice::from_ref(&new)));
    assert_eq!(entries[1], webhook::sign(&d.msg_id, ts, &d.body, &[old]));
    let payload: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(payload["companyId"], sim.company_id());

    sim.finish_rotation();
    let secrets = sim.webhook_secrets();
    assert_eq!(secrets.len(), 1);
    assert_eq!((secrets[0].secret.as_str(), secrets[0].status), (new.as_str(), SecretStatus::Active));
}

/// A tiny receiver that verifies the signature, fails twice, then accepts.
#[tokio::test]
async fn webhook_sender_retries_over_http_like_svix() {
    use axum::http::HeaderMap;
    let sim = sim().await;
    let secrets = sim.webhook_secret_strings();
    let seen = Arc::new(Mutex::new(Vec::<(String, i64, bool)>::new()));
    let seen2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen2.clone();
            let secrets = secrets.clone();
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let (id, ts) = (h("webhook-id"), h("webhook-timestamp").parse::<i64>().unwrap_or(0));
                let valid = h("webhook-signature") == webhook::sign(&id, ts, &body, &secrets);
                let mut v = seen.lock().unwrap();
                v.push((id, ts, valid));
                if v.len() <= 2 { axum::http::StatusCode::INTERNAL_SERVER_ERROR } else { axum::http::StatusCode::OK }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let started = Instant::now();
    // 0.001: 5 s → 5 ms, 5 min → 300 ms.
    let report = sim.send_ready_for_export(&format!("http://{addr}/hook"), &["accr_a", "accr_b"], 0.001).await;
    let elapsed = started.elapsed();
    assert!(report.delivered);
    assert_eq!(report.final_status, 200);
    let delays: Vec<u64> = report.attempts.iter().map(|a| a.scheduled_delay_ms).collect();
    assert_eq!(delays, vec![0, 5_000, 300_000]);
    assert!(elapsed >= Duration::from_millis(305), "{elapsed:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(id, _, valid)| *id == report.msg_id && *valid));
    assert_eq!(sim.counters().webhook_deliveries, 3);
    server.abort();
}

#[test]
fn standard_webhooks_known_vector() {
    let sig = webhook::sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        br#"{"test": 2432232314}"#,
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()],
    );
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    let sender = WebhookSender::new(vec![]);
    assert_eq!(sender.schedule.len(), 8);
}

#[tokio::test]
async fn admin_routes_generate_and_inspect() {
    let sim = sim().await;
    let base = sim.base_url();
    let body: Value = client()
        .post(format!("{base}/_sim/generate"))
        .json(&json!({"count": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids = body["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 5);
    let id = ids[0].as_str().unwrap();
    let rec: Value = client().get(format!("{base}/_sim/records/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(rec["id"], id);
    assert_eq!(rec["review_status"], "READY_FOR_EXPORT");
    let expense_id = rec["source_id"].as_str().unwrap();
    assert!(sim.expense(expense_id).is_some());
    let (s, api_rec) = get(&sim, &format!("/v3/accounting/records/{id}"), TOKEN).await;
    assert_eq!((s, &api_rec), (StatusCode::OK, &rec));

    let resp = client().post(format!("{base}/_sim/records")).json(&json!([rec.clone()])).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = client().post(format!("{base}/_sim/records")).json(&json!([{"id": "broken"}])).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    sim.set_review_status(&[id], ReviewStatus::Exported);
    let resp = client().post(format!("{base}/_sim/records/ready")).json(&json!({"ids": [id, "accr_x"]})).send().await;
    let body: Value = resp.unwrap().json().await.unwrap();
    assert_eq!(body["updated"], 1);
    assert_eq!(sim.record(id).unwrap().review_status, ReviewStatus::ReadyForExport);
    let bad = json!({"url": "http://127.0.0.1:9/", "record_ids": [id], "time_scale": -1.0});
    let resp = client().post(format!("{base}/_sim/webhooks/send")).json(&bad).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = client().post(format!("{base}/_sim/generate")).json(&json!({"count": 1_000_000})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let secrets: Value =
        client().post(format!("{base}/_sim/rotate-secret")).send().await.unwrap().json().await.unwrap();
    assert_eq!(secrets.as_array().unwrap().len(), 2);
    let counters: Value = client().get(format!("{base}/_sim/counters")).send().await.unwrap().json().await.unwrap();
    assert_eq!(counters["total_requests"], 1, "admin calls are not counted: {counters}");
    assert_eq!(counters["by_route"][0]["route"], "/v3/accounting/records/{record_id}");
}

#[tokio::test]
async fn binary_prints_one_json_line_and_serves() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_brex-sim"))
        .args(["--port", "0", "--seed", "42", "--records", "7"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), BufReader::new(stdout).read_line(&mut line)).await.unwrap().unwrap();
    let info: Value = serde_json::from_str(&line).unwrap();
    let base = info["base_url"].as_str().unwrap();
    assert_eq!(info["token_url"], format!("{base}/oauth2/default/v1/token"));
    assert_eq!(info["user_token"], TOKEN);
    assert!(info["webhook_secrets"][0].as_str().unwrap().starts_with("whsec_"));
    let body: Value = client()
        .get(format!("{base}/v3/accounting/records?updated_at[gt]=2000-01-01"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["total_count"], 7);
    child.kill().await.unwrap();
}
