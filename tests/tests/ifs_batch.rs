//! Voucher creation through OData `$batch` against the IFS simulator, and the step-by-step fallback
//! (`[ifs.api] batch = false`): several vouchers per request, If-Match on every mutation, a 412 inside a
//! change set, a refused change set leaving nothing half-posted, an unanswered `$batch` settled by the dedup
//! query, and the poster's dedup still holding on redelivery in both flows.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use shared::domain::{AccountingRecordId, CompanyCode, IfsCredentials, Origin, ReferenceNumber, Secret, WebhookId};
use shared::error::Classify;
use shared::ifs::{IfsClient, IfsClientConfig, IfsError};
use shared::proposal::Proposal;
use shared::retry::RetryPolicy;
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::ifs::{IfsFaults, IfsSim, IfsSimConfig};
use sims::pipeline::{EXAMPLE_MAPPING, Pipeline, PipelineOptions};

fn date(month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(Utc::now().year(), month, day).unwrap()
}

fn co() -> CompanyCode {
    CompanyCode::parse("10").unwrap()
}

async fn start(config: IfsSimConfig) -> IfsSim {
    IfsSim::start(config).await.expect("simulator starts")
}

fn client(sim: &IfsSim, batch: bool) -> IfsClient {
    let (client_id, secret) = sim.client().unwrap();
    let creds = IfsCredentials { client_id, client_secret: Secret::new(secret) };
    let mut config = IfsClientConfig::new(sim.base_url(), sim.realm(), creds);
    config.requests_per_minute = 600_000;
    config.request_timeout = Duration::from_secs(5);
    config.retry = RetryPolicy {
        max_attempts: 8,
        base: Duration::from_millis(20),
        cap: Duration::from_secs(2),
        max_retry_after: Duration::from_secs(2),
        retry_after_jitter: true,
    };
    config.api.batch = if batch { shared::ifs::BatchMode::On } else { shared::ifs::BatchMode::Off };
    IfsClient::new(config, reqwest::Client::new()).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn proposal(reference: &str, day: NaiveDate, debit: &str, credit: &str) -> Proposal {
    sims::fixtures::travel_proposal(reference, day, debit, credit)
}

fn proposals(prefix: &str, n: u32) -> Vec<Proposal> {
    (0..n).map(|i| proposal(&format!("accr_{prefix}_{i}"), date(3, 1 + i % 28), "25.50", "25.50")).collect()
}

/// Committed vouchers per ReferenceNumber.
fn per_reference(sim: &IfsSim) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for v in sim.vouchers() {
        *out.entry(v.rows[0].reference_number.clone().unwrap_or_default()).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn one_batch_request_carries_ten_vouchers_with_if_match_on_every_mutation() {
    let sim = start(IfsSimConfig::default()).await;
    let client = client(&sim, true);
    let ps = proposals("b10", 10);

    let results = client.create_vouchers(&ps).await;
    let keys: Vec<String> = results.into_iter().map(|r| r.unwrap().to_string()).collect();
    let year = Utc::now().year();
    assert_eq!(keys, (1..=10).map(|n| format!("10-{year}-M-{n}")).collect::<Vec<_>>());

    let c = sim.counters();
    assert_eq!(c.count("Batch.POST", 200), 1, "all ten in one request: {c:?}");
    assert_eq!(c.total_requests, 3, "token, calendar, one $batch: {:?}", c.requests);
    assert_eq!(c.count_label("VoucherSet.POST") + c.count_label("CreateVoucher.POST"), 0, "no step-by-step calls");
    assert_eq!(c.part_count("VoucherSet.POST", 201), 10);
    assert_eq!(c.part_count("VoucherPostingArray.POST", 201), 20);
    assert_eq!(c.part_count("CreateVoucher.POST", 200), 10);
    assert_eq!((c.mutations_with_if_match, c.mutations_without_if_match), (30, 0), "rows and commits are guarded");
    assert_eq!((c.changesets_committed, c.changesets_rolled_back), (10, 0));
    assert_eq!(sim.pending_virtual_count(), 0);
    assert_eq!(client.stats().requests, c.total_requests);

    // The rows are the proposal's, exactly.
    let vouchers = sim.vouchers();
    for (p, v) in ps.iter().zip(&vouchers) {
        assert_eq!(v.rows.len(), 2);
        assert!(v.rows.iter().all(|r| r.reference_number.as_deref() == Some(p.reference_number.as_str())));
        assert_eq!(v.rows[0].currency_debet_amount, Some(dec("25.50")));
        assert_eq!((v.rows[0].account.as_str(), v.rows[0].code_b.as_deref()), ("6500", Some("200")));
        assert_eq!(v.rows[1].currency_credit_amount, Some(dec("25.50")));
        assert_eq!(v.status.as_str(), "NotApproved");
    }
}

#[tokio::test]
async fn batch_max_vouchers_splits_larger_sets() {
    let sim = start(IfsSimConfig::default()).await;
    let (client_id, secret) = sim.client().unwrap();
    let mut config = IfsClientConfig::new(
        sim.base_url(),
        sim.realm(),
        IfsCredentials { client_id, client_secret: Secret::new(secret) },
    );
    config.api.batch_max_vouchers = 4;
    let client = IfsClient::new(config, reqwest::Client::new()).unwrap();
    let results = client.create_vouchers(&proposals("split", 10)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(sim.counters().count("Batch.POST", 200), 3, "4 + 4 + 2");
    assert_eq!(sim.voucher_count(), 10);
}

#[tokio::test]
async fn with_batch_off_the_step_by_step_flow_is_used() {
    let sim = start(IfsSimConfig::default()).await;
    let client = client(&sim, false);
    let results = client.create_vouchers(&proposals("steps", 3)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let c = sim.counters();
    assert_eq!(c.count_label("Batch.POST"), 0);
    assert_eq!(c.count("VoucherSet.POST", 201), 3);
    assert_eq!(c.count("VoucherPostingArray.POST", 201), 6);
    assert_eq!(c.count("CreateVoucher.POST", 200), 3);
    assert_eq!(c.mutations_without_if_match, 0);
    assert_eq!(sim.voucher_count(), 3);
}

#[tokio::test]
async fn a_412_inside_a_change_set_rolls_it_back_and_it_is_sent_again() {
    let sim = start(IfsSimConfig { seed: 5, ..IfsSimConfig::default() }).await;
    sim.set_faults(IfsFaults { concurrent_modification_rate: 0.2, ..IfsFaults::default() });
    let client = client(&sim, true);
    let ps = proposals("stale", 10);

    let results = client.create_vouchers(&ps).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let c = sim.counters();
    assert!(c.status_412 > 0 && c.changesets_rolled_back > 0, "412s were injected inside change sets: {c:?}");
    assert_eq!(c.status_412, c.changesets_rolled_back, "each 412 rolled its change set back");
    assert_eq!(c.changesets_committed, 10);
    assert_eq!(c.mutations_without_if_match, 0);
    assert_eq!(sim.pending_virtual_count(), 0, "rolled-back change sets leave no virtual voucher behind");
    let per_ref = per_reference(&sim);
    assert_eq!(per_ref.len(), 10);
    assert!(per_ref.values().all(|n| *n == 1), "{per_ref:?}");
    assert!(client.stats().stale_etag_rereads >= c.status_412);
    assert!(c.count("Batch.POST", 200) >= 2, "the stale change sets went out again");
}

#[tokio::test]
async fn persistent_412s_end_in_a_retryable_precondition_failure() {
    let sim = start(IfsSimConfig::default()).await;
    sim.set_faults(IfsFaults { concurrent_modification_rate: 1.0, ..IfsFaults::default() });
    let client = client(&sim, true);
    let results = client.create_vouchers(&proposals("hot", 2)).await;
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(matches!(e, IfsError::PreconditionFailed { .. }) && e.is_retryable(), "{e:?}");
    }
    assert_eq!(sim.voucher_count(), 0);
    assert_eq!(sim.pending_virtual_count(), 0);
    assert_eq!(sim.counters().count("Batch.POST", 200), 6, "first try plus five bounded repeats");
}

#[tokio::test]
async fn a_refused_change_set_leaves_nothing_half_posted_and_the_others_commit() {
    let sim = start(IfsSimConfig::default()).await;
    let client = client(&sim, true);
    let ps = vec![
        proposal("accr_ok_1", date(4, 2), "10.00", "10.00"),
        proposal("accr_unbalanced", date(4, 3), "10.00", "9.99"),
        proposal("accr_ok_2", date(4, 4), "12.00", "12.00"),
    ];
    let results = client.create_vouchers(&ps).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    match &results[1] {
        Err(e @ IfsError::Rejected { status: 400, message, .. }) => {
            assert!(!e.is_retryable());
            assert!(message.contains("not balanced"), "IFS's own message: {message}");
        }
        other => panic!("expected a permanent refusal, got {other:?}"),
    }
    let c = sim.counters();
    assert_eq!(c.count("Batch.POST", 200), 1, "one refusal did not stop the others (continue-on-error)");
    assert_eq!((c.changesets_committed, c.changesets_rolled_back), (2, 1));
    assert_eq!(sim.pending_virtual_count(), 0, "the refused change set's virtual voucher and rows were rolled back");
    let per_ref = per_reference(&sim);
    assert_eq!(per_ref.len(), 2);
    assert!(!per_ref.contains_key("accr_unbalanced"));
    // Voucher numbers stay dense: the rollback also returned the number.
    let mut numbers: Vec<i64> = sim.vouchers().iter().map(|v| v.voucher_no).collect();
    numbers.sort();
    assert_eq!(numbers, vec![1, 2]);
}

#[tokio::test]
async fn an_unanswered_batch_is_settled_by_the_dedup_query_without_duplicates() {
    let sim = start(IfsSimConfig::default()).await;
    // The $batch commits, then the connection drops: the client cannot know what committed.
    sim.set_faults(IfsFaults { commit_then_drop_next: 1, ..IfsFaults::default() });
    let client = client(&sim, true);
    let ps = proposals("drop", 5);
    let results = client.create_vouchers(&ps).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(sim.voucher_count(), 5, "nothing was sent twice");
    let c = sim.counters();
    assert_eq!(c.fault("commit_then_drop"), 1);
    assert_eq!(c.count("Batch.POST", 0), 1, "the dropped $batch");
    assert_eq!(c.count_label("Batch.POST"), 1, "found by the dedup query, not re-sent");
    assert!(c.count("VoucherRowSet.LIST", 200) >= 1);
    assert_eq!(client.stats().uncertain_commit_checks, 1);
}

#[tokio::test]
async fn a_batch_rate_limited_as_a_whole_is_waited_out() {
    let sim = start(IfsSimConfig::default()).await;
    let client = client(&sim, true);
    // Warm the token and calendar so the burst hits the $batch itself.
    client.create_vouchers(&proposals("warm", 1)).await.into_iter().for_each(|r| assert!(r.is_ok()));
    sim.set_faults(IfsFaults { burst_429_next: 2, ..IfsFaults::default() });
    let results = client.create_vouchers(&proposals("burst", 3)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let c = sim.counters();
    assert_eq!(c.count("Batch.POST", 429), 2);
    assert_eq!(sim.voucher_count(), 4);
}

#[tokio::test]
async fn dedup_first_then_batch_only_the_absent_ones() {
    let sim = start(IfsSimConfig::default()).await;
    let client = client(&sim, true);
    let ps = proposals("dedup", 8);
    for r in client.create_vouchers(&ps[..4]).await {
        r.unwrap();
    }
    // The poster's order: one dedup query, then create what is absent.
    let refs: Vec<ReferenceNumber> = ps.iter().map(|p| p.reference_number.clone()).collect();
    let found = client.find_posted(&co(), "BREX", &refs).await.unwrap();
    assert_eq!(found.len(), 4);
    let absent: Vec<Proposal> = ps.iter().filter(|p| !found.contains_key(&p.reference_number)).cloned().collect();
    for r in client.create_vouchers(&absent).await {
        r.unwrap();
    }
    let per_ref = per_reference(&sim);
    assert_eq!(per_ref.len(), 8);
    assert!(per_ref.values().all(|n| *n == 1));
}

// ---------------------------------------------------------------------------------------------------------
// Through the poster (moto + simulators), in both flows.

fn mapping(batch: bool) -> String {
    format!("{EXAMPLE_MAPPING}\n[ifs.api]\nbatch = {batch}\n")
}

async fn world(name: &str, batch: bool) -> Pipeline {
    Pipeline::start(PipelineOptions { name: name.into(), mapping: Some(mapping(batch)), ..PipelineOptions::default() })
        .await
        .expect("pipeline")
}

async fn redelivery_holds(batch: bool) {
    let w = world(if batch { "batch-redeliver" } else { "steps-redeliver" }, batch).await;
    let options = GeneratorOptions { count: 12, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    let records = RecordGenerator::with_options(31, options).batch();
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    w.brex.insert_records(records);
    let origin = Origin::Webhook { webhook_id: WebhookId::parse("msg_batch").unwrap() };
    w.enqueue(&ids, &origin).await.unwrap();
    w.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(w.ifs.voucher_count(), 12);
    let c = w.ifs.counters();
    if batch {
        assert!(c.count("Batch.POST", 200) >= 2, "10 + 2 in SQS batches: {c:?}");
        assert_eq!(c.count_label("CreateVoucher.POST"), 0);
    } else {
        assert_eq!(c.count_label("Batch.POST"), 0);
        assert_eq!(c.count("CreateVoucher.POST", 200), 12);
    }
    assert_eq!(c.mutations_without_if_match, 0);

    // SQS at-least-once: the same ids again.
    w.enqueue(&ids, &origin).await.unwrap();
    w.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(w.ifs.voucher_count(), 12, "redelivery created nothing");

    // A crash after IFS committed but before DynamoDB recorded it: the claim is in progress with an expired
    // lease; the redelivery's dedup query must find the voucher.
    let more_records =
        RecordGenerator::with_options(32, GeneratorOptions { count: 3, missing_gl_rate: 0.0, ..Default::default() })
            .batch();
    let more: Vec<String> = more_records.iter().map(|r| r.id.clone()).collect();
    w.brex.insert_records(more_records);
    let store = shared::aws::DynamoStore::new(aws_sdk_dynamodb::Client::new(&w.stack.sdk), &w.stack.table_name);
    let past = Utc::now() - chrono::Duration::minutes(10);
    for id in &more {
        use shared::ports::IdempotencyStore;
        store.begin(&record_key(id), past, past - chrono::Duration::minutes(1)).await.unwrap();
    }
    let doc = shared::mapping::MappingDocument::parse(&mapping(batch)).unwrap();
    let fetched = shared::ports::RecordSource::fetch_records(
        w.poster.records.as_ref(),
        &more.iter().map(|i| AccountingRecordId::parse(i).unwrap()).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let crashed: Vec<Proposal> =
        fetched.records.iter().map(|r| shared::mapping::map_record(&doc, r).unwrap()).collect();
    for r in w.poster.ledger.create_vouchers(&crashed).await {
        r.unwrap();
    }
    assert_eq!(w.ifs.voucher_count(), 15);
    w.enqueue(&more, &origin).await.unwrap();
    w.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(w.ifs.voucher_count(), 15, "the redelivery found the vouchers with the dedup query");
    let by_ref = w.vouchers_by_reference();
    assert!(by_ref.values().all(|v| v.len() == 1), "no duplicates");
    for id in &more {
        use shared::ports::{Begin, IdempotencyStore};
        let state = store.begin(&record_key(id), Utc::now(), Utc::now()).await.unwrap();
        assert!(matches!(state, Begin::Completed { result: Some(_) }), "{id} completed: {state:?}");
    }
}

#[tokio::test]
async fn poster_with_batch_posts_once_and_dedup_holds_on_redelivery() {
    redelivery_holds(true).await;
}

#[tokio::test]
async fn poster_step_by_step_posts_once_and_dedup_holds_on_redelivery() {
    redelivery_holds(false).await;
}

/// The idempotency key the poster claims for the record `id`.
fn record_key(id: &str) -> shared::ports::IdempotencyKey {
    shared::ports::IdempotencyKey::Posting(shared::domain::Subject::Record(AccountingRecordId::parse(id).unwrap()))
}
