//! The reference sync end to end: IFS accounts and cost centres (IFS simulator, read by the real
//! IFS client) → Brex fields (Brex simulator, written by the real Brex client) → a record coded in Brex with
//! the synced values → the poster (moto + both simulators) → a correct voucher from a mapping without rules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use shared::brex::{BrexAuth, BrexClient, BrexConfig};
use shared::domain::{IfsCredentials, Origin, Secret};
use shared::ifs::{IfsClient, IfsClientConfig};
use shared::mapping::LoadedMapping;
use shared::retry::RetryPolicy;
use shared::sync::{FieldSync, FieldSyncOptions, SyncReport};
use sims::brex::{BrexCounters, SimFieldValue};
use sims::ifs::{IfsSimConfig, ReferenceData};
use sims::pipeline::{Pipeline, PipelineOptions};

/// Only `[passthrough]`: no `[[rule]]` at all.
const MAPPING: &str = r#"
[ifs]
company = "10"
voucher_type = "M"
reference_serie = "BREX"
credit_account = "2410"

[passthrough]
gl_account_remote_id = true
code_parts = { code_b = "Cost Center" }
"#;

const WRITES: [(&str, &str); 3] =
    [("POST", "/v1/fields"), ("POST", "/v1/fields/{field_id}/values"), ("PUT", "/v1/fields/{field_id}/values")];

fn ifs_client(p: &Pipeline) -> IfsClient {
    let (client_id, secret) = p.ifs.client().unwrap();
    let creds = IfsCredentials { client_id, client_secret: Secret::new(secret) };
    let mut config = IfsClientConfig::new(p.ifs.base_url(), p.ifs.realm(), creds);
    config.request_timeout = Duration::from_secs(20);
    config.retry = RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(20),
        cap: Duration::from_secs(1),
        max_retry_after: Duration::from_secs(1),
        retry_after_jitter: true,
    };
    IfsClient::new(config, reqwest::Client::new()).unwrap()
}

fn field_sync(p: &Pipeline) -> FieldSync {
    let auth = BrexAuth::user_token(Secret::new(p.brex.user_token().unwrap()));
    let brex = BrexClient::new(BrexConfig::new(p.brex.base_url(), 1000), auth).unwrap();
    FieldSync::new(ifs_client(p), Arc::new(brex)).with_options(FieldSyncOptions { max_brex_requests: 20 })
}

/// Requests per (method, route) between two counter snapshots.
fn delta(before: &BrexCounters, after: &BrexCounters, method: &str, route: &str) -> u64 {
    after.route_total(method, route) - before.route_total(method, route)
}

fn writes(before: &BrexCounters, after: &BrexCounters) -> Vec<(&'static str, &'static str, u64)> {
    WRITES.iter().map(|(m, r)| (*m, *r, delta(before, after, m, r))).filter(|(_, _, n)| *n > 0).collect()
}

fn by_remote(values: Vec<SimFieldValue>) -> BTreeMap<String, SimFieldValue> {
    values.into_iter().map(|v| (v.remote_id.clone().expect("synced values carry the IFS code"), v)).collect()
}

async fn cli(p: &Pipeline, line: &[&str]) -> (i32, String) {
    let run = sims::operator::cli(p, line).await;
    (run.code, run.out)
}

#[tokio::test]
async fn ifs_reference_data_is_published_into_brex_fields_and_coded_records_post_without_rules() {
    let p = Pipeline::start(PipelineOptions {
        name: "fields-sync".into(),
        ifs: IfsSimConfig { reference: ReferenceData::with_generated(3000, 200), ..IfsSimConfig::default() },
        mapping: Some(MAPPING.to_owned()),
        ..PipelineOptions::default()
    })
    .await
    .expect("pipeline");
    let mapping = LoadedMapping::parse(MAPPING, 1).unwrap();
    assert!(mapping.document.rules.is_empty());
    let sync = field_sync(&p);

    // What IFS holds for company 10: the demo chart plus 3 000 generated accounts, 5 + 200 cost centres.
    let today = Utc::now().date_naive();
    let reference = p.ifs.reference();
    let accounts: BTreeMap<String, String> = reference
        .accounts
        .iter()
        .filter(|a| a.company == "10" && a.valid_from <= today && today <= a.valid_until)
        .map(|a| (a.account.clone(), format!("{} {}", a.account, a.description)))
        .collect();
    let centres: BTreeMap<String, String> = reference
        .code_parts
        .iter()
        .filter(|c| c.company == "10" && c.code_part == 'B' && c.valid_from <= today && today <= c.valid_until)
        .map(|c| (c.value.clone(), format!("{} {}", c.value, c.description)))
        .collect();
    assert!(accounts.len() >= 3000 && centres.len() >= 200, "{} accounts, {} centres", accounts.len(), centres.len());

    // 1. The first sync creates both fields and every value, in bulk calls of ≤ 1000.
    let (b0, i0) = (p.brex.counters(), p.ifs.counters());
    let first = sync.sync(&mapping).await.expect("first sync");
    let (b1, i1) = (p.brex.counters(), p.ifs.counters());
    assert_eq!(
        first,
        SyncReport {
            fields_created: 2,
            created: accounts.len() + centres.len(),
            brex_requests: 1 + 2 + accounts.len().div_ceil(1000) + 1,
            ifs_values: first.ifs_values,
            ..SyncReport::default()
        }
    );
    assert_eq!(
        writes(&b0, &b1),
        vec![
            ("POST", "/v1/fields", 2),
            ("POST", "/v1/fields/{field_id}/values", (accounts.len().div_ceil(1000) + 1) as u64)
        ]
    );
    assert_eq!(delta(&b0, &b1, "GET", "/v1/fields"), 1);
    assert_eq!(b1.total_requests - b0.total_requests, first.brex_requests as u64, "every Brex call is counted");
    // IFS: a token and one page per list (≤ 5000 per page).
    assert_eq!(i1.total_requests - i0.total_requests, 3, "{:?}", i1.requests);

    let gl = p.brex.field_by_remote_id("GL_ACCOUNT").expect("GL Account field");
    let cc = p.brex.field_by_remote_id("CODE_B").expect("Cost Center field");
    assert_eq!((gl.name.as_str(), gl.group.as_str(), cc.name.as_str()), ("GL Account", "ACCOUNTING", "Cost Center"));
    let gl_values = by_remote(p.brex.field_values(&gl.brex_id));
    let cc_values = by_remote(p.brex.field_values(&cc.brex_id));
    let shown = |values: &BTreeMap<String, SimFieldValue>| -> BTreeMap<String, String> {
        values.iter().map(|(code, v)| (code.clone(), v.value.clone())).collect()
    };
    assert_eq!(shown(&gl_values), accounts, "each IFS account is a value with its code as remote id");
    assert_eq!(shown(&cc_values), centres);
    assert!(gl_values.values().chain(cc_values.values()).all(|v| !v.is_disabled && v.value_id == v.remote_id));

    // 2. Nothing changed in IFS: the second run reads and writes nothing.
    let again = sync.sync(&mapping).await.expect("second sync");
    let b2 = p.brex.counters();
    assert_eq!((again.created, again.updated, again.disabled), (0, 0, 0));
    assert_eq!(again.unchanged, accounts.len() + centres.len());
    assert_eq!(writes(&b1, &b2), vec![], "an unchanged IFS means no Brex write");

    // 3. Rename an account and expire a cost centre in IFS.
    let mut renamed = reference.account("10", "100007").expect("generated account").clone();
    renamed.description = "Travel (renamed in IFS)".into();
    p.ifs.add_account(renamed);
    let mut expired = reference.code_part("10", 'B', "CC000042").expect("generated cost centre").clone();
    expired.valid_until = today - TimeDelta::days(1);
    p.ifs.add_code_part(expired);

    // The dry run shows exactly that, and writes nothing.
    let (code, diff) = cli(&p, &["fields", "sync", "--dry-run"]).await;
    let b3 = p.brex.counters();
    assert_eq!(code, 0);
    assert_eq!(writes(&b2, &b3), vec![], "the dry run writes nothing");
    assert!(diff.contains(&format!(
        "field \"GL Account\" (remote id GL_ACCOUNT, {}) ← IFS accounts: 0 to create, 1 to update, 0 to disable, {} unchanged",
        gl.brex_id,
        accounts.len() - 1
    )), "{diff}");
    assert!(
        diff.contains("  ~ 100007       \"100007 Generated account 100007\" → \"100007 Travel (renamed in IFS)\""),
        "{diff}"
    );
    assert!(
        diff.contains(
            "  - CC000042     \"CC000042 Generated cost centre CC000042\" (disabled: expired or removed in IFS)"
        ),
        "{diff}"
    );
    assert!(diff.contains("total: 0 to create, 1 to update, 1 to disable\n"), "{diff}");

    // The next sync updates one and disables one — in one bulk call per field — and writes nothing else.
    let third = sync.sync(&mapping).await.expect("third sync");
    let b4 = p.brex.counters();
    assert_eq!((third.created, third.updated, third.disabled, third.fields_created), (0, 1, 1, 0));
    assert_eq!(writes(&b3, &b4), vec![("PUT", "/v1/fields/{field_id}/values", 2)]);
    let gl_after = by_remote(p.brex.field_values(&gl.brex_id));
    let cc_after = by_remote(p.brex.field_values(&cc.brex_id));
    assert_eq!(gl_after["100007"].value, "100007 Travel (renamed in IFS)");
    assert!(!gl_after["100007"].is_disabled);
    assert!(cc_after["CC000042"].is_disabled, "expired values are disabled, never deleted");
    assert_eq!(cc_after["CC000042"].brex_id, cc_values["CC000042"].brex_id);
    let untouched = |before: &BTreeMap<String, SimFieldValue>, after: &BTreeMap<String, SimFieldValue>, skip: &str| {
        before.iter().filter(|(code, _)| *code != skip).all(|(code, v)| after.get(code) == Some(v))
    };
    assert!(untouched(&gl_values, &gl_after, "100007") && gl_after.len() == gl_values.len());
    assert!(untouched(&cc_values, &cc_after, "CC000042") && cc_after.len() == cc_values.len());

    // 4. A bookkeeper codes a purchase with synced values; the poster books it with no rule at all.
    let record = p.brex.insert_coded_record(9, &[("GL_ACCOUNT", "100007"), ("CODE_B", "CC000007")]).unwrap();
    let amount = record.amount.amount;
    p.enqueue(std::slice::from_ref(&record.id), &Origin::Poll).await.unwrap();
    p.drain(Duration::from_secs(60)).await.unwrap();
    let vouchers = p.vouchers_by_reference();
    let voucher = match vouchers.get(&record.id).map(Vec::as_slice) {
        Some([one]) => one,
        other => panic!("expected one voucher for {}: {other:?}", record.id),
    };
    assert_eq!(voucher.company, "10");
    let rows: Vec<(&str, Option<&str>, Option<_>, Option<_>, &str)> = voucher
        .rows
        .iter()
        .map(|r| {
            (
                r.account.as_str(),
                r.code_b.as_deref(),
                r.currency_debet_amount,
                r.currency_credit_amount,
                r.reference_number.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("100007", Some("CC000007"), Some(amount), None, record.id.as_str()),
            ("2410", None, None, Some(amount), record.id.as_str()),
        ]
    );
    assert!(matches!(
        p.brex.export_result(&record.id).map(|r| r.outcome),
        Some(sims::brex::ExportOutcome::Success { .. })
    ));
}

#[tokio::test]
async fn a_small_budget_defers_writes_and_the_next_run_finishes() {
    let p = Pipeline::start(PipelineOptions {
        name: "fields-budget".into(),
        ifs: IfsSimConfig { reference: ReferenceData::with_generated(2500, 0), ..IfsSimConfig::default() },
        mapping: Some(MAPPING.to_owned()),
        ..PipelineOptions::default()
    })
    .await
    .expect("pipeline");
    let mapping = LoadedMapping::parse(MAPPING, 1).unwrap();
    let auth = BrexAuth::user_token(Secret::new(p.brex.user_token().unwrap()));
    let brex = Arc::new(BrexClient::new(BrexConfig::new(p.brex.base_url(), 1000), auth).unwrap());
    let small =
        |n| FieldSync::new(ifs_client(&p), brex.clone()).with_options(FieldSyncOptions { max_brex_requests: n });

    // 1 read + the GL field + 2 bulk creates = 4 calls: the other accounts and the Cost Center field wait.
    let first = small(4).sync(&mapping).await.unwrap();
    assert_eq!((first.fields_created, first.created, first.brex_requests), (1, 2000, 4), "{first:?}");
    let total = first.created + first.deferred;
    assert!(first.deferred > 500, "{first:?}");
    let second = small(20).sync(&mapping).await.unwrap();
    assert_eq!((second.fields_created, second.created, second.deferred), (1, first.deferred, 0), "{second:?}");
    let gl = p.brex.field_by_remote_id("GL_ACCOUNT").unwrap();
    let cc = p.brex.field_by_remote_id("CODE_B").unwrap();
    assert_eq!(p.brex.field_values(&gl.brex_id).len() + p.brex.field_values(&cc.brex_id).len(), total);

    // Reading alone needs 1 + 3 + 1 pages now: a budget below that fails the run, permanently, writing nothing.
    let before = p.brex.counters();
    let err = small(3).sync(&mapping).await.unwrap_err();
    assert!(!shared::error::Classify::is_retryable(&err), "{err}");
    assert_eq!(writes(&before, &p.brex.counters()), vec![]);
}

#[tokio::test]
async fn brex_sim_fields_api_follows_the_spec() {
    let p = Pipeline::start(PipelineOptions { name: "fields-sim".into(), ..PipelineOptions::default() })
        .await
        .expect("pipeline");
    let http = reqwest::Client::new();
    let base = p.brex.base_url();
    let token = p.brex.user_token().unwrap();
    let send = |method: reqwest::Method, path: &str, key: Option<&str>, body: Option<serde_json::Value>| {
        let mut req = http.request(method, format!("{base}{path}")).bearer_auth(&token);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    use reqwest::Method as M;
    use serde_json::json;

    let field = json!({"name": "Project", "group": "ACCOUNTING", "remote_id": "CODE_D"});
    assert_eq!(send(M::POST, "/v1/fields", None, Some(field.clone())).await.0, 400, "Idempotency-Key is required");
    let (status, created) = send(M::POST, "/v1/fields", Some("k1"), Some(field.clone())).await;
    assert_eq!(status, 200);
    let id = created["brex_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("extended_field_"));
    assert_eq!(send(M::POST, "/v1/fields", Some("k1"), Some(field.clone())).await.1, created, "replayed");
    assert_eq!(send(M::POST, "/v1/fields", Some("k1"), Some(json!({"name": "X", "group": "USER"}))).await.0, 422);
    assert_eq!(send(M::POST, "/v1/fields", Some("k2"), Some(field)).await.0, 400, "remote ids are unique");
    assert_eq!(p.brex.fields().len(), 1);

    let values = format!("/v1/fields/{id}/values");
    let items = json!({"items": [
        {"value": "P1 Apollo", "value_id": "P1", "remote_id": "P1"},
        {"value": "P2 Gemini", "value_id": "P2", "remote_id": "P2"},
    ]});
    assert_eq!(send(M::POST, &values, None, Some(items.clone())).await.0, 400);
    let (status, made) = send(M::POST, &values, Some("v1"), Some(items)).await;
    assert_eq!((status, made["items"].as_array().map(Vec::len)), (200, Some(2)));
    let dup = json!({"items": [{"value": "P3", "remote_id": "P3"}, {"value": "again", "remote_id": "P1"}]});
    assert_eq!(send(M::POST, &values, Some("v2"), Some(dup)).await.0, 400, "all or nothing");
    let too_many: Vec<_> = (0..1001).map(|i| json!({"value": format!("v{i}")})).collect();
    assert_eq!(send(M::POST, &values, Some("v3"), Some(json!({"items": too_many}))).await.0, 400);
    assert_eq!(p.brex.field_values(&id).len(), 2);

    // Updates address a value by brex_id, remote_id or value_id; an unknown one refuses the whole batch.
    let p1 = made["items"][0]["brex_id"].as_str().unwrap().to_owned();
    let update = json!({"items": [
        {"brex_id": p1, "data": {"value": "P1 Apollo (renamed)"}},
        {"value_id": "P2", "data": {"is_disabled": true}},
    ]});
    assert_eq!(send(M::PUT, &values, None, Some(update)).await.0, 200);
    let unknown = json!({"items": [{"remote_id": "P1", "data": {"value": "x"}}, {"remote_id": "P9", "data": {}}]});
    assert_eq!(send(M::PUT, &values, None, Some(unknown)).await.0, 404);
    let (_, listed) = send(M::GET, &format!("{values}?remote_id[]=P1&remote_id[]=P2&limit=1"), None, None).await;
    assert_eq!(listed["items"][0]["value"], "P1 Apollo (renamed)");
    let (_, rest) = send(M::GET, &format!("{values}?remote_id[]=P2&limit=1"), None, None).await;
    assert_eq!(rest["items"][0]["is_disabled"], true);
    assert!(listed["next_cursor"].is_string());
    assert_eq!(send(M::GET, &format!("{values}?limit=1001"), None, None).await.0, 400);
    assert_eq!(send(M::GET, &format!("{values}/{p1}"), None, None).await.1["remote_id"], "P1");

    // Field update takes name and is_disabled only; DELETE removes values, then the field.
    let (status, renamed) = send(M::PUT, &format!("/v1/fields/{id}"), None, Some(json!({"name": "Projects"}))).await;
    assert_eq!(
        (status, renamed["name"].as_str(), renamed["remote_id"].as_str()),
        (200, Some("Projects"), Some("CODE_D"))
    );
    assert_eq!(send(M::PUT, &format!("/v1/fields/{id}"), None, Some(json!({"remote_id": "X"}))).await.0, 400);
    let (status, deleted) = send(M::DELETE, &values, None, Some(json!({"items": [{"remote_id": "P2"}]}))).await;
    assert_eq!((status, deleted["deleted"].as_u64()), (200, Some(1)));
    assert_eq!(send(M::DELETE, &format!("/v1/fields/{id}"), None, None).await.0, 200);
    assert_eq!(send(M::GET, &format!("/v1/fields/{id}"), None, None).await.0, 404);
    let c = p.brex.counters();
    assert_eq!(c.count("POST", "/v1/fields/{field_id}/values", 200), 1, "{c:?}");
    assert_eq!(c.idempotent_replays, 1);
}

#[tokio::test]
async fn the_scheduled_poller_runs_the_sync_when_switched_on_and_writes_nothing_the_second_time() {
    let p = Pipeline::start(PipelineOptions {
        name: "fields-poller".into(),
        mapping: Some(MAPPING.to_owned()),
        ..PipelineOptions::default()
    })
    .await
    .expect("pipeline");
    let off = p.poller(&[]).await.unwrap();
    let report = off.run(Utc::now() + TimeDelta::minutes(5)).await;
    assert_eq!(report.fields, None, "off by default");
    assert!(p.brex.fields().is_empty());

    let on = p.poller(&[("SYNC_BREX_FIELDS", "true")]).await.unwrap();
    let first = on.run(Utc::now() + TimeDelta::minutes(5)).await;
    assert!(!first.has_errors(), "{first:?}");
    let synced = first.fields.as_ref().and_then(|f| f.report.clone()).expect("the sync ran");
    assert_eq!((synced.fields_created, synced.deferred), (2, 0), "{synced:?}");
    assert!(synced.created > 0);
    let (accounts, cost_centres) = (
        p.brex.field_by_remote_id("GL_ACCOUNT").expect("GL Account field"),
        p.brex.field_by_remote_id("CODE_B").expect("Cost Center field"),
    );
    assert!(!by_remote(p.brex.field_values(&accounts.brex_id)).is_empty());
    assert!(by_remote(p.brex.field_values(&cost_centres.brex_id)).contains_key("200"), "cost centre 200 published");

    let before = p.brex.counters();
    let second = on.run(Utc::now() + TimeDelta::minutes(5)).await;
    let again = second.fields.and_then(|f| f.report).expect("the sync ran again");
    assert_eq!((again.created, again.updated, again.disabled), (0, 0, 0));
    assert!(writes(&before, &p.brex.counters()).is_empty(), "no IFS change, no Brex write");
}
