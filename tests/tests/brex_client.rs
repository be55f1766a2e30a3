//! The Brex HTTP client (`shared::brex`) against the Brex simulator: paging and chunking, per-record
//! parsing, export results with idempotency and NOT_READY handling, the retry policy, the rate limiter,
//! OAuth refresh with rotating refresh tokens shared through the secret store, and webhook secrets.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use shared::aws::{DynamoStore, SecretsManagerStore};
use shared::brex::model::{ReviewStatus, SourceType};
use shared::brex::{
    AuthOptions, BrexAuth, BrexClient, BrexConfig, BrexError, ExportResult, ExportStatus, OAuthContext, RecordQuery,
};
use shared::domain::{AccountingRecordId, BrexCredentials, Secret};
use shared::error::Classify;
use shared::ports::{Clock, LeaseStore, SecretStore, SystemClock, WebhookSecretSource};
use shared::retry::RetryPolicy;
use shared::webhook::WebhookVerifier;
use sims::aws::{Moto, Stack, StackSpec};
use sims::brex::generator::RecordGenerator;
use sims::brex::{BrexSim, BrexSimConfig, Faults, OAuthClient};

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
        ..RetryPolicy::brex()
    }
}

fn config(sim: &BrexSim, max_attempts: u32) -> BrexConfig {
    BrexConfig { retry: fast_retry(max_attempts), ..BrexConfig::new(sim.base_url(), 100_000) }
}

fn user_client(sim: &BrexSim) -> BrexClient {
    let token = Secret::new(sim.user_token().expect("user token"));
    BrexClient::new(config(sim, 4), BrexAuth::user_token(token)).expect("client")
}

fn rid(s: &str) -> AccountingRecordId {
    AccountingRecordId::parse(s).expect("id")
}

fn ids_of(list: &[AccountingRecordId]) -> BTreeSet<String> {
    list.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn records_by_ids_chunks_pages_and_reports_missing_and_malformed() {
    let sim = BrexSim::start(BrexSimConfig::default()).await.expect("sim");
    let ids = sim.generate_records(550);
    // Valid for the simulator, not for the connector: a bad currency (id usable) and a bad id.
    let mut generator = RecordGenerator::new(9);
    let mut bad_currency = generator.generate();
    bad_currency.id = "accr_badcurrency".into();
    bad_currency.amount.currency = "US".into();
    let mut bad_id = generator.generate();
    bad_id.id = "accr.bad.id".into();
    sim.insert_records(vec![bad_currency, bad_id]);

    let mut wanted: Vec<AccountingRecordId> = ids.iter().map(|i| rid(i)).collect();
    wanted.push(rid("accr_badcurrency"));
    wanted.push(rid("accr_missing1"));
    wanted.push(rid("accr_missing2"));
    wanted.push(wanted[0].clone()); // repeats are asked for once

    let client = user_client(&sim);
    let fetch = client.records_by_ids(&wanted).await.expect("fetch");
    assert_eq!(fetch.records.len(), 550);
    assert_eq!(fetch.records.iter().map(|r| r.id.to_string()).collect::<BTreeSet<_>>(), ids.iter().cloned().collect());
    assert_eq!(fetch.malformed.len(), 1, "{:?}", fetch.malformed);
    assert_eq!(fetch.malformed[0].id, Some(rid("accr_badcurrency")));
    assert_eq!(ids_of(&fetch.missing), BTreeSet::from(["accr_missing1".to_owned(), "accr_missing2".to_owned()]));

    // 553 unique ids → chunks of 500 and 53; Brex pages 100 at a time → 5 + 1 calls.
    let counters = sim.counters();
    assert_eq!(counters.count("GET", "/v3/accounting/records", 200), 6);
    assert_eq!(counters.total_requests, 6);
}

#[tokio::test]
async fn query_records_pages_through_the_filter() {
    let sim = BrexSim::start(BrexSimConfig::default()).await.expect("sim");
    sim.generate_records(260);
    let expected: BTreeSet<String> = sim
        .records_by_status(sims::brex::ReviewStatus::ReadyForExport)
        .into_iter()
        .filter(|r| r.source_type == sims::brex::SourceType::Card)
        .map(|r| r.id)
        .collect();
    assert!(!expected.is_empty());

    let client = user_client(&sim);
    let mut query = RecordQuery {
        source_type: Some(SourceType::Card),
        review_status: Some(ReviewStatus::ReadyForExport),
        updated_after: DateTime::<Utc>::from_timestamp(0, 0).expect("epoch"),
        limit: 50,
        cursor: None,
    };
    let mut seen = BTreeSet::new();
    let mut pages = 0;
    loop {
        let page = client.query_records(&query).await.expect("page");
        pages += 1;
        assert!(page.malformed.is_empty());
        assert!(page.records.iter().all(|r| r.review_status == ReviewStatus::ReadyForExport));
        seen.extend(page.records.into_iter().map(|r| r.id.to_string()));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, expected.len().div_ceil(50));

    // An explicit watermark in the future returns nothing (the filter really reaches Brex).
    query.cursor = None;
    query.updated_after = Utc::now() + chrono::Duration::days(1);
    assert!(client.query_records(&query).await.expect("page").records.is_empty());
}

fn success(id: &str) -> ExportResult {
    ExportResult {
        accounting_record_id: rid(id),
        outcome: ExportStatus::Success { reference_id: Some(format!("IFS-{id}")), deep_link_url: None },
    }
}

#[tokio::test]
async fn export_results_are_idempotent_and_not_ready_counts_as_done() {
    let sim = BrexSim::start(BrexSimConfig::default()).await.expect("sim");
    let ids = sim.generate_records(6);
    sim.mark_ready_for_export(&ids);
    let client = user_client(&sim);

    let first = vec![
        success(&ids[0]),
        success(&ids[1]),
        ExportResult {
            accounting_record_id: rid(&ids[2]),
            outcome: ExportStatus::Failure { error_message: "Account 9999 does not exist in company 10".into() },
        },
    ];
    let report = client.report_export_results(&first).await.expect("report");
    assert_eq!(ids_of(&report.updated), ids[..3].iter().cloned().collect());
    assert!(report.already_exported.is_empty() && report.not_found.is_empty());
    assert_eq!(sim.record(&ids[0]).expect("record").review_status, sims::brex::ReviewStatus::Exported);

    // The very same report again: same body, same Idempotency-Key, Brex replays its answer.
    let again = client.report_export_results(&first).await.expect("replay");
    assert_eq!(again, report);
    assert_eq!(sim.counters().idempotent_replays, 1);

    // ids[0] is exported already: Brex says NOT_READY for it, the rest is re-sent without it.
    let mixed = vec![success(&ids[0]), success(&ids[3]), success(&ids[4]), success("accr_unknown")];
    let report = client.report_export_results(&mixed).await.expect("report");
    assert_eq!(ids_of(&report.updated), BTreeSet::from([ids[3].clone(), ids[4].clone()]));
    assert_eq!(ids_of(&report.already_exported), BTreeSet::from([ids[0].clone()]));
    assert_eq!(ids_of(&report.not_found), BTreeSet::from(["accr_unknown".to_owned()]));
    let keys: BTreeSet<Option<String>> = sim.export_results().into_iter().map(|r| r.idempotency_key).collect();
    assert!(keys.iter().all(|k| k.as_deref().is_some_and(|k| uuid::Uuid::parse_str(k).is_ok())), "{keys:?}");
    let counters = sim.counters();
    assert_eq!(counters.count("POST", "/v3/accounting/records/export-results", 404), 1);
    assert_eq!(counters.count("POST", "/v3/accounting/records/export-results", 422), 1);
}

#[tokio::test]
async fn export_results_survive_5xx_after_commit() {
    let sim = BrexSim::start(BrexSimConfig { seed: 3, ..BrexSimConfig::default() }).await.expect("sim");
    let ids = sim.generate_records(20);
    sim.mark_ready_for_export(&ids);
    let client = BrexClient::new(config(&sim, 12), BrexAuth::user_token(Secret::new(sim.user_token().expect("t"))))
        .expect("client");
    sim.set_faults(Faults { post_commit_error_rate: 0.6, ..Faults::default() });
    let results: Vec<ExportResult> = ids.iter().map(|i| success(i)).collect();
    let report = client.report_export_results(&results).await.expect("report");
    // Whether Brex's first answer was lost or not, every record is reported once and counted as updated.
    assert_eq!(ids_of(&report.updated), ids.iter().cloned().collect());
    assert_eq!(sim.export_results().len(), 20);
    let counters = sim.counters();
    assert!(counters.injected_5xx >= 1, "{counters:?}");
    assert_eq!(counters.idempotent_replays, counters.injected_5xx);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_within_bounds() {
    let sim = BrexSim::start(BrexSimConfig::default()).await.expect("sim");
    let ids = sim.generate_records(3);
    let wanted: Vec<AccountingRecordId> = ids.iter().map(|i| rid(i)).collect();
    let client = user_client(&sim); // 4 attempts

    sim.set_faults(Faults { burst_429: 3, ..Faults::default() });
    assert_eq!(client.records_by_ids(&wanted).await.expect("after 429s").records.len(), 3);
    assert_eq!(sim.counters().injected_429, 3);

    // More 429s than attempts: a retryable error after exactly 4 requests.
    sim.reset_counters();
    sim.set_faults(Faults { burst_429: 10, ..Faults::default() });
    let err = client.records_by_ids(&wanted).await.expect_err("429 beyond the budget");
    assert_eq!(err.status(), Some(429));
    assert!(err.is_retryable());
    assert_eq!(sim.counters().total_requests, 4);

    // Retry-After is honoured...
    sim.reset_counters();
    sim.set_faults(Faults { burst_429: 1, retry_after_secs: Some(1), ..Faults::default() });
    let started = Instant::now();
    client.records_by_ids(&wanted).await.expect("after Retry-After");
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    // ...unless it is longer than we wait inside one call.
    sim.reset_counters();
    sim.set_faults(Faults { burst_429: 1, retry_after_secs: Some(30), ..Faults::default() });
    let err = client.records_by_ids(&wanted).await.expect_err("too long to wait");
    assert_eq!((err.status(), sim.counters().total_requests), (Some(429), 1));

    // 5xx: retried, then given up as retryable.
    sim.reset_counters();
    sim.set_faults(Faults { error_rate: 1.0, error_statuses: vec![502, 503], ..Faults::default() });
    let err = client.records_by_ids(&wanted).await.expect_err("5xx");
    assert!(err.is_retryable() && matches!(err.status(), Some(502 | 503)), "{err}");
    assert_eq!(sim.counters().total_requests, 4);

    // A 4xx is final at once and permanent.
    sim.reset_counters();
    sim.set_faults(Faults::default());
    let query = RecordQuery {
        source_type: Some(SourceType::Card),
        review_status: None,
        updated_after: Utc::now(),
        limit: 5000,
        cursor: None,
    };
    let err = client.query_records(&query).await.expect_err("limit too large");
    assert_eq!(err.status(), Some(400));
    assert!(!err.is_retryable());
    assert!(
        matches!(&err, BrexError::Status { code: Some(c), trace_id: Some(_), .. } if c == "INVALID_REQUEST"),
        "{err:?}"
    );
    assert_eq!(sim.counters().total_requests, 1);
}

#[tokio::test]
async fn a_refused_user_token_is_final() {
    let sim = BrexSim::start(BrexSimConfig::default()).await.expect("sim");
    let client = BrexClient::new(config(&sim, 4), BrexAuth::user_token(Secret::new("bxt_wrong"))).expect("client");
    let err = client.list_webhook_secrets().await.expect_err("401");
    assert_eq!(err.status(), Some(401));
    assert_eq!(sim.counters().total_requests, 1);
}

#[tokio::test]
async fn the_client_side_bucket_spaces_requests() {
    let sim = BrexSim::start(BrexSimConfig::default()).await.expect("sim");
    // 600/min = 10/s with a burst of 60: 63 calls need at least ~0.3 s.
    let client = BrexClient::new(
        BrexConfig { retry: fast_retry(2), ..BrexConfig::new(sim.base_url(), 600) },
        BrexAuth::user_token(Secret::new(sim.user_token().expect("t"))),
    )
    .expect("client");
    let started = Instant::now();
    for _ in 0..63 {
        client.list_webhook_secrets().await.expect("secrets");
    }
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    assert_eq!(sim.counters().rate_limited, 0);
}

#[tokio::test]
async fn webhook_secrets_verify_what_the_simulator_signs() {
    let sim = BrexSim::start(BrexSimConfig::default()).await.expect("sim");
    sim.rotate_webhook_secret();
    let client = user_client(&sim);
    let secrets = client.webhook_secrets().await.expect("secrets");
    assert_eq!(secrets.len(), 2);
    let verifier = WebhookVerifier::new(&secrets).expect("verifier");

    let body = sim.ready_for_export_body(&["accr_1"]);
    let now = Utc::now();
    let signature = sims::brex::webhook::sign("msg_x", now.timestamp(), &body, &sim.webhook_secret_strings());
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", http::HeaderValue::from_static("msg_x"));
    headers.insert("webhook-timestamp", http::HeaderValue::from_str(&now.timestamp().to_string()).expect("ts"));
    headers.insert("webhook-signature", http::HeaderValue::from_str(&signature).expect("sig"));
    verifier.verify(&headers, &body, now).expect("simulator signature verifies");
}

// ---- OAuth (secret and lease in Secrets Manager / DynamoDB on moto, through the real adapters) -----------

struct OAuthWorld {
    sim: BrexSim,
    stack: Stack,
    secrets: Arc<SecretsManagerStore>,
    leases: Arc<DynamoStore>,
}

fn oauth_secret(sim: &BrexSim, refresh_token: &str) -> String {
    serde_json::to_string(&BrexCredentials::OAuth {
        client_id: "cid".into(),
        client_secret: Secret::new("csecret"),
        refresh_token: Secret::new(refresh_token),
        token_url: sim.token_url(),
        access_token: None,
        access_token_expires_at: None,
    })
    .expect("json")
}

impl OAuthWorld {
    async fn start(name: &str) -> Self {
        let sim = BrexSim::start(BrexSimConfig {
            oauth: Some(OAuthClient {
                client_id: "cid".into(),
                client_secret: "csecret".into(),
                refresh_token: "rt0".into(),
            }),
            ..BrexSimConfig::default()
        })
        .await
        .expect("sim");
        let secret = oauth_secret(&sim, "rt0");
        let stack = Stack::create(&Moto::get(), StackSpec { name, brex_secret: &secret, ..StackSpec::default() })
            .await
            .expect("stack");
        let secrets = Arc::new(SecretsManagerStore::new(aws_sdk_secretsmanager::Client::new(&stack.sdk)));
        let leases = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), stack.table_name.clone()));
        Self { sim, stack, secrets, leases }
    }

    fn ctx(&self) -> OAuthContext {
        OAuthContext {
            secrets: self.secrets.clone(),
            leases: self.leases.clone(),
            clock: Arc::new(SystemClock) as Arc<dyn Clock>,
            secret_id: self.stack.brex_secret_id.clone(),
        }
    }

    /// A fresh "Lambda instance": loads the secret as it is now.
    async fn instance(&self) -> BrexClient {
        let options = AuthOptions { wait_step: Duration::from_millis(20), ..AuthOptions::default() };
        let auth = BrexAuth::load(self.ctx(), options).await.expect("auth");
        BrexClient::new(config(&self.sim, 3), auth).expect("client")
    }

    async fn stored(&self) -> BrexCredentials {
        let secret = self.secrets.get_secret(&self.stack.brex_secret_id).await.expect("secret");
        serde_json::from_str(secret.expose()).expect("credentials")
    }
}

#[tokio::test]
async fn oauth_refreshes_once_and_writes_the_rotated_token_back() {
    let w = OAuthWorld::start("brex-oauth-rotate").await;
    let a = w.instance().await;
    a.list_webhook_secrets().await.expect("first call refreshes");
    a.list_webhook_secrets().await.expect("second call reuses");
    assert_eq!(w.sim.counters().token_fetches, 1);

    let BrexCredentials::OAuth { refresh_token, access_token, access_token_expires_at, .. } = w.stored().await else {
        panic!("shape changed")
    };
    assert_eq!(Some(refresh_token.expose().to_owned()), w.sim.current_refresh_token());
    assert_ne!(refresh_token.expose(), "rt0");
    assert!(access_token.is_some());
    assert!(access_token_expires_at.expect("expiry") > Utc::now() + chrono::Duration::minutes(50));

    // Another instance starts: it uses the stored access token instead of refreshing again.
    let b = w.instance().await;
    b.list_webhook_secrets().await.expect("peer call");
    assert_eq!(w.sim.counters().token_fetches, 1);

    // Brex expires the tokens early: 401 → one refresh → the call goes through.
    w.sim.expire_access_tokens();
    a.list_webhook_secrets().await.expect("after 401");
    // b holds the same dead token; it gets 401, re-reads the secret and takes a's new token.
    b.list_webhook_secrets().await.expect("peer after 401");
    let counters = w.sim.counters();
    assert_eq!((counters.token_fetches, counters.invalid_grants), (2, 0), "{counters:?}");
    assert_eq!(counters.unauthorized, 2);
}

#[tokio::test]
async fn concurrent_instances_never_race_the_refresh_token() {
    let w = OAuthWorld::start("brex-oauth-race").await;
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(w.instance().await);
    }
    let calls = instances.iter().map(|c| c.list_webhook_secrets());
    for result in futures::future::join_all(calls).await {
        result.expect("every instance gets a working token");
    }
    let counters = w.sim.counters();
    assert_eq!((counters.token_fetches, counters.invalid_grants), (1, 0), "{counters:?}");
    // The lease was given back: the next refresher takes it at once.
    let now = Utc::now();
    assert!(
        w.leases
            .try_acquire("brex-oauth-refresh", "probe", now + chrono::Duration::seconds(5), now)
            .await
            .expect("lease")
    );
}

#[tokio::test]
async fn a_dead_refresh_token_holds_the_record_until_someone_reauthorises() {
    let w = OAuthWorld::start("brex-oauth-dead").await;
    let client = w.instance().await;
    // Someone used the refresh token outside the connector: the one in the secret is dead now.
    let stale = Secret::new(oauth_secret(&w.sim, "rt-dead"));
    w.secrets.put_secret(&w.stack.brex_secret_id, &stale).await.expect("put");
    let err = client.list_webhook_secrets().await.expect_err("invalid_grant");
    assert!(
        matches!(&err, BrexError::Token { status: Some(400), message } if message.starts_with("invalid_grant")),
        "{err:?}"
    );
    // Retrying cannot revive the token: the deployment is at fault, so the record is held, not failed.
    assert!(err.is_held() && !err.is_retryable(), "{err:?}");
    assert!(!err.to_string().contains("rt-dead") && !err.to_string().contains("csecret"));
    assert_eq!(w.sim.counters().invalid_grants, 1);
}
