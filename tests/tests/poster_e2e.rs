//! The poster end to end on moto: records in the Brex simulator → work items on SQS → the poster invoked
//! with SQS batches exactly as Lambda's event source would → vouchers in the IFS simulator, export results in
//! the Brex simulator. Every test runs against each tenant the IFS simulator can be (`$batch` as documented,
//! `$batch` without ETag references, no `$batch`): the poster finds out which flow the tenant takes, and the
//! outcome is the same.

use std::time::{Duration, Instant};

use chrono::Utc;
use rust_decimal::Decimal;
use shared::aws::DynamoStore;
use shared::domain::{AccountingRecordId, Origin, WebhookId};
use sims::brex::ExportOutcome;
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::model::{AccountingRecord, LineType, ReviewStatus};
use sims::ifs::model::Voucher;
use sims::ifs::tenant::BatchSupport;
use sims::ifs::{IfsFaults, IfsSimConfig};
use sims::pipeline::{Pipeline, PipelineOptions};

const MAPPING: &str = sims::pipeline::EXAMPLE_MAPPING;

/// Runs each named test (an `async fn(BatchSupport)`) once per tenant, as `<tenant>::<test>`.
macro_rules! in_every_tenant {
    ($($test:ident),* $(,)?) => {
        in_every_tenant!(@tenant full, BatchSupport::Full; $($test),*);
        in_every_tenant!(@tenant no_etag_references, BatchSupport::NoEtagReferences; $($test),*);
        in_every_tenant!(@tenant no_batch, BatchSupport::Absent; $($test),*);
    };
    (@tenant $module:ident, $support:expr; $($test:ident),*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($support).await;
                }
            )*
        }
    };
}

in_every_tenant!(
    records_become_balanced_vouchers_and_are_reported_exported,
    redelivery_posts_nothing_new_and_a_crash_after_commit_is_completed_without_a_duplicate,
    chaos_in_ifs_still_posts_every_record_exactly_once_with_if_match_on_every_mutation,
    short_lived_ifs_tokens_cause_no_auth_failures,
    an_unmappable_record_is_reported_to_brex_and_never_retried_forever,
    dry_run_posts_nothing,
    an_export_result_brex_did_not_take_is_reported_on_redelivery_without_posting_again,
);

async fn world(name: &str, tenant: BatchSupport, mut ifs: IfsSimConfig, extra_env: &[(&str, &str)]) -> Pipeline {
    let poster_env = extra_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    ifs.tenant.batch = tenant;
    let name = format!("{name}-{}", tenant.as_str().replace('_', "-"));
    Pipeline::start(PipelineOptions { name, ifs, poster_env, ..PipelineOptions::default() }).await.expect("pipeline")
}

/// What must hold on every tenant: no mutation without If-Match, no virtual voucher left behind, and Brex
/// told of a failure only for the records in `at_fault` (mapping or IFS business refusals).
fn assert_tenant_invariants(w: &Pipeline, ids: &[String], at_fault: &[&str]) {
    let c = w.ifs.counters();
    assert_eq!(c.mutations_without_if_match, 0, "every mutation carried If-Match: {c:?}");
    assert_eq!(w.ifs.pending_virtual_count(), 0, "no virtual voucher left behind: {c:?}");
    let failed: Vec<&str> = ids
        .iter()
        .filter(|id| matches!(w.brex.export_result(id).map(|r| r.outcome), Some(ExportOutcome::Failure { .. })))
        .map(String::as_str)
        .collect();
    assert_eq!(failed, at_fault, "reported to Brex as failed");
}

/// The flow the tenant should end up with (see `shared::ifs::ledger::capability`).
fn assert_flow(w: &Pipeline, tenant: BatchSupport) {
    let c = w.ifs.counters();
    match tenant {
        BatchSupport::Full => {
            assert!(c.count_label("Batch.POST") > 0 && c.count_label("VoucherSet.POST") == 0, "{c:?}")
        }
        BatchSupport::NoEtagReferences | BatchSupport::Absent => {
            assert!(c.count_label("VoucherSet.POST") > 0, "fell back to step by step: {c:?}")
        }
    }
}

fn clean_records(seed: u64, n: usize) -> Vec<AccountingRecord> {
    let options = GeneratorOptions { count: n, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    RecordGenerator::with_options(seed, options).batch()
}

trait Harness {
    fn insert(&self, records: Vec<AccountingRecord>) -> Vec<String>;
    async fn enqueue_ids(&self, ids: &[String]);
    async fn drain_ok(&self, limit: Duration) -> usize;
}

impl Harness for Pipeline {
    fn insert(&self, records: Vec<AccountingRecord>) -> Vec<String> {
        let ids = records.iter().map(|r| r.id.clone()).collect();
        self.brex.insert_records(records);
        ids
    }

    async fn enqueue_ids(&self, ids: &[String]) {
        let origin = Origin::Webhook { webhook_id: WebhookId::parse("msg_test").unwrap() };
        self.enqueue(ids, &origin).await.unwrap();
    }

    async fn drain_ok(&self, limit: Duration) -> usize {
        self.drain(limit).await.unwrap()
    }
}

fn debit_credit(v: &Voucher) -> (Decimal, Decimal) {
    v.rows.iter().fold((Decimal::ZERO, Decimal::ZERO), |(d, c), r| {
        (d + r.currency_debet_amount.unwrap_or_default(), c + r.currency_credit_amount.unwrap_or_default())
    })
}

fn field<'a>(record: &'a AccountingRecord, line: LineType, name: &str) -> Option<&'a str> {
    record
        .line_items
        .iter()
        .filter(|l| l.line_type == line)
        .flat_map(|l| l.accounting_field_values.iter())
        .find(|f| f.field_name.as_deref() == Some(name))
        .and_then(|f| f.field_value_name.as_deref())
}

async fn records_become_balanced_vouchers_and_are_reported_exported(tenant: BatchSupport) {
    let w = world("post-happy", tenant, IfsSimConfig::default(), &[]).await;
    let ids = w.insert(clean_records(7, 40));
    w.enqueue_ids(&ids).await;
    w.drain_ok(Duration::from_secs(60)).await;

    let by_ref = w.vouchers_by_reference();
    assert_eq!(by_ref.len(), ids.len(), "one voucher per record");
    let records: Vec<_> = ids.iter().map(|id| w.brex.record(id).unwrap()).collect();
    let kinds = |f: &dyn Fn(&AccountingRecord) -> bool| records.iter().filter(|r| f(r)).count();
    assert!(kinds(&|r| r.record_type.ends_with("_REFUND")) > 0, "the sample holds a refund");
    assert!(kinds(&|r| r.source_type.as_str() == "REIMBURSEMENT") > 0, "… a reimbursement");
    assert!(
        kinds(&|r| r.original_amount.as_ref().is_some_and(|o| o.currency != r.amount.currency)) > 0,
        "… foreign currency"
    );
    assert!(kinds(&|r| r.line_items.iter().filter(|l| l.line_type == LineType::Debit).count() > 1) > 0, "… a split");
    assert!(kinds(&|r| field(r, LineType::Debit, "Entity") == Some("Acme Canada")) > 0, "… a Canadian entity");
    for id in &ids {
        let record = w.brex.record(id).unwrap();
        let vouchers = &by_ref[id];
        assert_eq!(vouchers.len(), 1, "{id} posted once");
        let v = &vouchers[0];
        let (debit, credit) = debit_credit(v);
        assert_eq!(debit, credit, "{id} balanced");
        assert_eq!(debit, record.amount.amount, "{id}: the voucher carries the record's amount");
        assert!(v.rows.iter().all(|r| r.currency_code == record.amount.currency), "{id} currency");
        assert_eq!(v.status.as_str(), "NotApproved", "awaiting approval in the hold table");
        assert!(v.rows.iter().all(|r| r.reference_serie.as_deref() == Some("BREX")));
        let canada = field(&record, LineType::Debit, "Entity") == Some("Acme Canada")
            || field(&record, LineType::Credit, "Entity") == Some("Acme Canada");
        assert_eq!(v.company, if canada { "20" } else { "10" }, "{id} company");
        // The liability side: card → 2410/2415, reimbursement → 2420.
        let refund = record.record_type.ends_with("_REFUND");
        let funding_side = if refund { LineType::Debit } else { LineType::Credit };
        let funding_rows: Vec<_> = v
            .rows
            .iter()
            .filter(|r| {
                if funding_side == LineType::Credit {
                    r.currency_credit_amount.is_some()
                } else {
                    r.currency_debet_amount.is_some()
                }
            })
            .collect();
        let expected_funding = match (record.source_type.as_str(), canada) {
            ("REIMBURSEMENT", _) => "2420",
            (_, true) => "2415",
            _ => "2410",
        };
        assert!(funding_rows.iter().all(|r| r.account == expected_funding), "{id}: funding rows {funding_rows:?}");
        // Expense rows carry a cost centre: every expense account in the demo chart but 7900 demands one.
        for row in v.rows.iter().filter(|r| r.account.starts_with('6') || r.account.starts_with('7')) {
            assert!(row.code_b.is_some(), "{id}: expense row without cost centre {row:?}");
        }
        // Brex shows it exported with the IFS voucher as reference.
        assert_eq!(record.review_status, ReviewStatus::Exported, "{id}");
        let reported = w.brex.export_result(id).expect("export result");
        let key = format!("{}-{}-{}-{}", v.company, v.accounting_year, v.voucher_type, v.voucher_no);
        assert_eq!(reported.outcome, ExportOutcome::Success { reference_id: Some(key), deep_link_url: None });
    }
    let engineering_travel = ids.iter().map(|id| w.brex.record(id).unwrap()).find(|r| {
        r.line_items.iter().filter(|l| l.line_type == LineType::Debit).count() == 1
            && field(r, LineType::Debit, "GL Account") == Some("6500 Travel")
            && r.user.as_ref().and_then(|u| u.department_name.as_deref()) == Some("Engineering")
            && field(r, LineType::Debit, "Department").is_none_or(|d| d == "Engineering")
            && !r.record_type.ends_with("_REFUND")
    });
    if let Some(record) = engineering_travel {
        let v = &by_ref[&record.id][0];
        let expense = v.rows.iter().find(|r| r.currency_debet_amount.is_some()).unwrap();
        assert_eq!((expense.account.as_str(), expense.code_b.as_deref()), ("6500", Some("200")));
    }
    let counters = w.ifs.counters();
    assert!(counters.mutations_with_if_match > 0);
    assert_tenant_invariants(&w, &ids, &[]);
    assert_flow(&w, tenant);
}

async fn redelivery_posts_nothing_new_and_a_crash_after_commit_is_completed_without_a_duplicate(tenant: BatchSupport) {
    let w = world("post-redeliver", tenant, IfsSimConfig::default(), &[]).await;
    let ids = w.insert(clean_records(11, 12));
    w.enqueue_ids(&ids).await;
    w.drain_ok(Duration::from_secs(60)).await;
    assert_eq!(w.ifs.voucher_count(), 12);

    // The same batch again (a webhook redelivery, or SQS at-least-once).
    w.enqueue_ids(&ids).await;
    w.drain_ok(Duration::from_secs(60)).await;
    assert_eq!(w.ifs.voucher_count(), 12, "redelivery created nothing");

    // A crash after IFS committed but before DynamoDB recorded it: the voucher exists, the claim is still
    // "in progress" and its lease has run out by the time SQS redelivers.
    let more = w.insert(clean_records(12, 3));
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&w.stack.sdk), &w.stack.table_name);
    let past = Utc::now() - chrono::Duration::minutes(10);
    for id in &more {
        use shared::ports::IdempotencyStore;
        store.begin(&record_key(id), past, past - chrono::Duration::minutes(1)).await.unwrap();
    }
    let mapping = shared::mapping::MappingDocument::parse(MAPPING).unwrap();
    let fetched = shared::ports::RecordSource::fetch_records(
        w.poster.records.as_ref(),
        &more.iter().map(|i| AccountingRecordId::parse(i).unwrap()).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    for record in &fetched.records {
        let proposal = shared::mapping::map_record(&mapping, record).unwrap();
        w.poster.ledger.create_voucher(&proposal).await.unwrap();
    }
    assert_eq!(w.ifs.voucher_count(), 15);
    w.enqueue_ids(&more).await;
    w.drain_ok(Duration::from_secs(60)).await;
    assert_eq!(w.ifs.voucher_count(), 15, "the redelivery created nothing");
    for id in &more {
        use shared::ports::{Begin, IdempotencyStore};
        let state = store.begin(&record_key(id), Utc::now(), Utc::now()).await.unwrap();
        assert!(matches!(state, Begin::Completed { result: Some(_) }), "{id} completed: {state:?}");
        assert_eq!(w.brex.record(id).unwrap().review_status, ReviewStatus::Exported);
    }
    assert_tenant_invariants(&w, &[ids, more].concat(), &[]);
}

async fn chaos_in_ifs_still_posts_every_record_exactly_once_with_if_match_on_every_mutation(tenant: BatchSupport) {
    let faults = IfsFaults {
        concurrent_modification_rate: 0.3,
        status_5xx_rate: 0.05,
        status_5xx_codes: vec![503],
        burst_429_next: 5,
        ..IfsFaults::default()
    };
    let w = world("post-chaos", tenant, IfsSimConfig { faults, seed: 99, ..IfsSimConfig::default() }, &[]).await;
    let ids = w.insert(clean_records(21, 30));
    w.enqueue_ids(&ids).await;
    w.drain_ok(Duration::from_secs(120)).await;
    let by_ref = w.vouchers_by_reference();
    assert_eq!(by_ref.len(), 30);
    assert!(by_ref.values().all(|v| v.len() == 1), "no duplicates");
    let c = w.ifs.counters();
    assert!(c.fault("concurrent_modification") > 0 && c.status_412 > 0, "412s were injected: {c:?}");
    assert!(c.status_429 >= 5 && c.fault("status_503") > 0, "429s and 503s were injected: {c:?}");
    assert_eq!(c.status_428, 0);
    assert_tenant_invariants(&w, &ids, &[]);
    assert_flow(&w, tenant);
}

async fn short_lived_ifs_tokens_cause_no_auth_failures(tenant: BatchSupport) {
    let w =
        world("post-token", tenant, IfsSimConfig { token_ttl: Duration::from_secs(2), ..IfsSimConfig::default() }, &[])
            .await;
    let start = Instant::now();
    let mut round = 0u64;
    let mut all = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        round += 1;
        let ids = w.insert(clean_records(100 + round, 2));
        all.extend(ids.iter().cloned());
        w.enqueue_ids(&ids).await;
        w.drain_ok(Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let c = w.ifs.counters();
    assert_eq!(w.ifs.voucher_count() as u64, 2 * round, "every record posted");
    assert!(c.token_fetches >= 4, "tokens were refreshed as they expired: {c:?}");
    // Refreshing at 80 % of expires_in means no request should even meet an expired token; at most one
    // 401 per refresh is tolerated (the single retry), and none may surface as a failure.
    assert!(c.status_401 <= c.token_fetches, "{c:?}");
    assert_tenant_invariants(&w, &all, &[]);
}

async fn an_unmappable_record_is_reported_to_brex_and_never_retried_forever(tenant: BatchSupport) {
    let w = world("post-unmappable", tenant, IfsSimConfig::default(), &[]).await;
    let mut records = clean_records(31, 3);
    // Strip the GL coding of one card expense: no rule can give it an account.
    let broken = records.iter_mut().find(|r| !r.record_type.ends_with("_REFUND")).unwrap();
    for line in &mut broken.line_items {
        line.accounting_field_values.retain(|f| f.field_name.as_deref() != Some("GL Account"));
    }
    let broken_id = broken.id.clone();
    let ids = w.insert(records);
    w.enqueue_ids(&ids).await;
    let invocations = w.drain_ok(Duration::from_secs(30)).await;
    assert_eq!(invocations, 1, "the permanent failure was not handed back to SQS");
    assert_eq!(w.ifs.voucher_count(), 2);
    match w.brex.export_result(&broken_id).expect("reported").outcome {
        ExportOutcome::Failure { error_message } => {
            assert!(
                error_message.contains(&broken_id) && error_message.to_lowercase().contains("account"),
                "{error_message}"
            );
        }
        other => panic!("expected a failure report, got {other:?}"),
    }
    assert_eq!(w.stack.queue_depth(&w.stack.dlq_url).await, 0, "nothing in the DLQ");
    // Delivered again (the poller would find it still READY_FOR_EXPORT): recognised, not re-tried.
    w.enqueue_ids(std::slice::from_ref(&broken_id)).await;
    assert_eq!(w.drain_ok(Duration::from_secs(30)).await, 1);
    assert_eq!(w.ifs.voucher_count(), 2);
    assert_tenant_invariants(&w, &ids, &[broken_id.as_str()]);
}

async fn dry_run_posts_nothing(tenant: BatchSupport) {
    let w = world("post-dry", tenant, IfsSimConfig::default(), &[("DRY_RUN", "true")]).await;
    let ids = w.insert(clean_records(41, 5));
    w.enqueue_ids(&ids).await;
    w.drain_ok(Duration::from_secs(30)).await;
    assert_eq!(w.ifs.voucher_count(), 0);
    assert!(ids.iter().all(|id| w.brex.export_result(id).is_none()), "nothing reported to Brex");
    assert_eq!(w.ifs.counters().count_label("VoucherSet.POST"), 0);
    assert_eq!(w.ifs.counters().count_label("Batch.POST"), 0);
    assert_tenant_invariants(&w, &ids, &[]);
}

/// Brex as the poster sees it, except that the first export-results call fails (a Brex outage right after
/// the vouchers were created).
struct ReportFailsOnce {
    inner: std::sync::Arc<dyn shared::ports::RecordSource>,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl shared::ports::RecordSource for ReportFailsOnce {
    async fn fetch_records(
        &self,
        ids: &[AccountingRecordId],
    ) -> Result<shared::ports::FetchedRecords, shared::error::ExternalError> {
        self.inner.fetch_records(ids).await
    }
    async fn fetch_expenses(
        &self,
        ids: &[shared::domain::ExpenseId],
    ) -> Result<shared::ports::FetchedExpenses, shared::error::ExternalError> {
        self.inner.fetch_expenses(ids).await
    }
    async fn report_export_results(
        &self,
        results: &[shared::ports::ExportOutcome],
    ) -> Result<(), shared::error::ExternalError> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return Err(shared::error::ExternalError::new(
                "Brex",
                "503 after every retry",
                shared::error::Disposition::Retryable,
            ));
        }
        self.inner.report_export_results(results).await
    }
}

async fn an_export_result_brex_did_not_take_is_reported_on_redelivery_without_posting_again(tenant: BatchSupport) {
    use shared::audit::AuditOutcome;
    use shared::ports::AuditTrail;
    let mut w = world("post-unreported", tenant, IfsSimConfig::default(), &[]).await;
    let failing = std::sync::Arc::new(ReportFailsOnce { inner: w.poster.records.clone(), calls: Default::default() });
    w.poster.records = failing.clone();
    let ids = w.insert(clean_records(61, 4));
    w.enqueue_ids(&ids).await;
    w.drain_ok(Duration::from_secs(60)).await;

    assert_eq!(failing.calls.load(std::sync::atomic::Ordering::SeqCst), 2, "reported again on redelivery");
    let by_ref = w.vouchers_by_reference();
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&w.stack.sdk), &w.stack.table_name);
    for id in &ids {
        assert_eq!(by_ref.get(id).map(Vec::len), Some(1), "{id}: one voucher");
        assert_eq!(w.brex.record(id).unwrap().review_status, ReviewStatus::Exported, "{id}: Brex knows now");
        let trail = store.read(&shared::domain::Subject::parse(id).unwrap()).await.unwrap();
        let steps: Vec<_> = trail
            .iter()
            .map(|e| (e.outcome, e.reported_to_brex.as_ref().map(shared::audit::BrexReport::reached_brex)))
            .collect();
        assert_eq!(steps, [(AuditOutcome::Posted, Some(false)), (AuditOutcome::AlreadyPosted, Some(true))], "{id}");
    }
    assert_tenant_invariants(&w, &ids, &[]);
}

/// The idempotency key the poster claims for the record `id`.
fn record_key(id: &str) -> shared::ports::IdempotencyKey {
    shared::ports::IdempotencyKey::Posting(shared::domain::Subject::Record(AccountingRecordId::parse(id).unwrap()))
}
