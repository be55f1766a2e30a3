//! The poster on the in-memory adapters, with Brex and IFS faked without a simulator: every behaviour the
//! end-to-end tests (`tests/tests/poster_e2e.rs`) show on moto and the simulators, in milliseconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Datelike;
use serde_json::json;

use super::*;
use crate::audit::BrexReport;
use crate::aws::operator::IdempotencyState;
use crate::brex::Expense;
use crate::domain::AccountingRecordId;
use crate::domain::{ExpenseId, WebhookId};
use crate::error::ExternalError;
use crate::memory::{ManualClock, MemoryQueue, MemoryStore};
use crate::ports::{
    AccountInfo, ChartOfAccounts, FetchedExpenses, FetchedRecords, IdempotencyKey, IdempotencyStore, Removal,
    SpendClaim, SpendClaims, VoucherState,
};

const MAPPING: &str = include_str!("../../../infra/mapping.example.toml");

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap()
}

/// Brex as the poster sees it: records and expenses from maps, every export result it was told.
#[derive(Default)]
struct FakeBrex {
    records: Mutex<HashMap<AccountingRecordId, AccountingRecord>>,
    expenses: Mutex<HashMap<ExpenseId, Expense>>,
    reported: Mutex<Vec<ExportOutcome>>,
    fetches: AtomicUsize,
    report_calls: AtomicUsize,
    fail_fetches: Mutex<Option<ExternalError>>,
    fail_reports: Mutex<Option<ExternalError>>,
}

fn brex_error(disposition: Disposition) -> ExternalError {
    let mut e = ExternalError::new("Brex", format!("{disposition:?} failure"), disposition);
    if disposition == Disposition::Hold {
        e.fix = Some("rotate the Brex token in Secrets Manager".into());
    }
    e
}

impl FakeBrex {
    fn insert(&self, record: AccountingRecord) {
        lock(&self.records).insert(record.id.clone(), record);
    }

    fn insert_expense(&self, expense: Expense) {
        lock(&self.expenses).insert(expense.id.clone(), expense);
    }

    fn fail_fetches(&self, disposition: Option<Disposition>) {
        *lock(&self.fail_fetches) = disposition.map(brex_error);
    }

    fn fail_reports(&self, disposition: Option<Disposition>) {
        *lock(&self.fail_reports) = disposition.map(brex_error);
    }

    fn reported(&self) -> Vec<ExportOutcome> {
        lock(&self.reported).clone()
    }
}

#[async_trait]
impl RecordSource for FakeBrex {
    async fn fetch_records(&self, ids: &[AccountingRecordId]) -> Result<FetchedRecords, ExternalError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = lock(&self.fail_fetches).clone() {
            return Err(e);
        }
        let records = lock(&self.records);
        let mut fetched = FetchedRecords::default();
        for id in ids {
            match records.get(id) {
                Some(record) => fetched.records.push(record.clone()),
                None => fetched.missing.push(id.clone()),
            }
        }
        Ok(fetched)
    }

    async fn fetch_expenses(&self, ids: &[ExpenseId]) -> Result<FetchedExpenses, ExternalError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = lock(&self.fail_fetches).clone() {
            return Err(e);
        }
        let expenses = lock(&self.expenses);
        let mut fetched = FetchedExpenses::default();
        for id in ids {
            match expenses.get(id) {
                Some(expense) => fetched.expenses.push(expense.clone()),
                None => fetched.missing.push(id.clone()),
            }
        }
        Ok(fetched)
    }

    async fn report_export_results(&self, results: &[ExportOutcome]) -> Result<(), ExternalError> {
        self.report_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = lock(&self.fail_reports).clone() {
            return Err(e);
        }
        lock(&self.reported).extend_from_slice(results);
        Ok(())
    }
}

/// IFS as the poster sees it: vouchers by (company, serie, reference), a chart that knows every account but
/// those it is told not to, failures on demand, and commits whose answer is lost.
/// Where a voucher is found by the dedup query: company, ReferenceSerie, ReferenceNumber.
type VoucherRef = (CompanyCode, String, ReferenceNumber);

#[derive(Default)]
struct FakeIfs {
    /// Each voucher's key and the proposal it was made from.
    vouchers: Mutex<BTreeMap<VoucherRef, (String, Proposal)>>,
    creates: AtomicUsize,
    dedup_queries: AtomicUsize,
    /// Keyed by reference; `None` fails every voucher.
    fail_creates: Mutex<HashMap<Option<ReferenceNumber>, ExternalError>>,
    fail_dedup: Mutex<Option<ExternalError>>,
    /// Committed, but the caller is told the connection broke.
    lose_answers: Mutex<HashSet<ReferenceNumber>>,
    unknown_accounts: Mutex<HashSet<String>>,
    /// Voucher keys approved in IFS (no longer removable); and how many were removed.
    approved: Mutex<HashSet<String>>,
    removed: AtomicUsize,
}

impl FakeIfs {
    fn fail_creates(&self, reference: Option<&str>, error: Option<ExternalError>) {
        let reference = reference.map(|r| ReferenceNumber::parse(r).unwrap());
        match error {
            Some(e) => lock(&self.fail_creates).insert(reference, e),
            None => lock(&self.fail_creates).remove(&reference),
        };
    }

    fn lose_answer(&self, reference: &str) {
        lock(&self.lose_answers).insert(ReferenceNumber::parse(reference).unwrap());
    }

    fn creates(&self) -> usize {
        self.creates.load(Ordering::SeqCst)
    }

    /// reference → every voucher key carrying it.
    fn vouchers_by_reference(&self) -> BTreeMap<String, Vec<String>> {
        let mut by_ref: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ((_, _, reference), (key, _)) in lock(&self.vouchers).iter() {
            by_ref.entry(reference.to_string()).or_default().push(key.clone());
        }
        by_ref
    }

    fn proposal(&self, reference: &str) -> Proposal {
        let vouchers = lock(&self.vouchers);
        vouchers.iter().find(|((_, _, r), _)| r.as_str() == reference).map(|(_, (_, p))| p.clone()).unwrap()
    }
}

fn ifs_error(disposition: Disposition, message: &str, fix: Option<&str>) -> ExternalError {
    let mut e = ExternalError::new("IFS", message, disposition);
    e.fix = fix.map(str::to_owned);
    e
}

#[async_trait]
impl ChartOfAccounts for FakeIfs {
    async fn account(
        &self,
        company: &CompanyCode,
        account: &crate::domain::AccountCode,
    ) -> Result<Option<AccountInfo>, ExternalError> {
        if lock(&self.unknown_accounts).contains(account.as_str()) {
            return Ok(None);
        }
        Ok(Some(AccountInfo {
            company: company.clone(),
            account: account.clone(),
            description: format!("account {account}"),
            valid_from: None,
            valid_until: None,
            demands: BTreeMap::new(),
        }))
    }
}

#[async_trait]
impl Ledger for FakeIfs {
    fn as_chart(&self) -> &dyn ChartOfAccounts {
        self
    }

    fn use_api(&self, _api: &crate::ifs::IfsApiNames) {}

    async fn find_posted(
        &self,
        company: &CompanyCode,
        serie: &str,
        refs: &[ReferenceNumber],
    ) -> Result<HashMap<ReferenceNumber, String>, ExternalError> {
        self.dedup_queries.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = lock(&self.fail_dedup).clone() {
            return Err(e);
        }
        let vouchers = lock(&self.vouchers);
        Ok(refs
            .iter()
            .filter_map(|r| {
                vouchers.get(&(company.clone(), serie.to_owned(), r.clone())).map(|(key, _)| (r.clone(), key.clone()))
            })
            .collect())
    }

    async fn create_voucher(&self, proposal: &Proposal) -> Result<String, ExternalError> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        let refusal = {
            let fails = lock(&self.fail_creates);
            fails.get(&Some(proposal.reference_number.clone())).or_else(|| fails.get(&None)).cloned()
        };
        if let Some(e) = refusal {
            return Err(e);
        }
        let mut vouchers = lock(&self.vouchers);
        let key = format!(
            "{}-{}-{}-{}",
            proposal.company,
            proposal.voucher_date.year(),
            proposal.voucher_type.as_str(),
            vouchers.len() + self.removed.load(Ordering::SeqCst) + 1
        );
        let id = (proposal.company.clone(), proposal.reference_serie.clone(), proposal.reference_number.clone());
        vouchers.insert(id, (key.clone(), proposal.clone()));
        if lock(&self.lose_answers).remove(&proposal.reference_number) {
            return Err(ExternalError::new("IFS", "connection reset after the commit", Disposition::Retryable));
        }
        Ok(key)
    }

    async fn voucher_state(&self, _company: &CompanyCode, voucher: &str) -> Result<VoucherState, ExternalError> {
        if lock(&self.approved).contains(voucher) {
            return Ok(VoucherState::Approved);
        }
        let there = lock(&self.vouchers).values().any(|(key, _)| key == voucher);
        Ok(if there {
            VoucherState::Unapproved { etag: crate::domain::ETag::parse(&format!("W/\"{voucher}\"")).unwrap() }
        } else {
            VoucherState::Missing
        })
    }

    async fn remove_voucher(
        &self,
        _company: &CompanyCode,
        voucher: &str,
        _etag: &crate::domain::ETag,
    ) -> Result<Removal, ExternalError> {
        if lock(&self.approved).contains(voucher) {
            return Ok(Removal::Approved);
        }
        let mut vouchers = lock(&self.vouchers);
        let before = vouchers.len();
        vouchers.retain(|_, (key, _)| key != voucher);
        if vouchers.len() == before {
            return Ok(Removal::Missing);
        }
        self.removed.fetch_add(1, Ordering::SeqCst);
        Ok(Removal::Removed)
    }
}

fn line(side: &str, amount: &str, fields: serde_json::Value) -> serde_json::Value {
    json!({"id": format!("accrli_{side}"), "type": side, "amount": {"amount": amount, "currency": "USD"},
           "accounting_field_values": fields})
}

/// A card purchase of 171.75 USD coded `gl` ("6500 Travel" posts to 6500; `None` cannot be mapped), the
/// spend of `expense` when given.
fn card_record(id: &str, gl: Option<&str>, expense: Option<&str>) -> AccountingRecord {
    let mut coding = vec![json!({"brex_field_id": "extended_field_department", "remote_field_id": "DEPARTMENT",
        "brex_field_value_id": "efo_x", "field_name": "Department", "field_value_name": "Engineering",
        "type": "IDENTIFIER"})];
    if let Some(gl) = gl {
        coding.push(json!({"brex_field_id": "extended_field_gl_account", "remote_field_id": "GL_ACCOUNT",
            "brex_field_value_id": "efo_gl", "field_name": "GL Account", "field_value_name": gl,
            "type": "IDENTIFIER"}));
    }
    serde_json::from_value(json!({
        "id": id, "amount": {"amount": "171.75", "currency": "USD"}, "type": "CARD_EXPENSE_POST",
        "review_status": "READY_FOR_EXPORT", "source_id": expense, "source_type": "CARD",
        "erp_posting_date": "2026-06-11T00:00:00Z", "posted_at": "2026-06-10T09:09:10Z",
        "updated_at": "2026-06-11T09:09:10Z", "version": 3,
        "user": {"id": "cuuser_1", "first_name": "Ada", "last_name": "Lovelace", "department_name": "Engineering"},
        "vendor": {"id": "pmch_1", "name": "Delta"}, "memo": "Flight to SFO",
        "line_items": [line("DEBIT", "171.75", json!(coding)), line("CREDIT", "171.75", json!([]))],
    }))
    .unwrap()
}

/// An approved card expense of 42.18 USD at a restaurant (posts to 6510).
fn card_expense(id: &str) -> Expense {
    serde_json::from_value(json!({
        "id": id, "memo": "Team lunch", "updated_at": "2026-06-11T10:00:00Z", "category": "RESTAURANTS",
        "department": {"id": "dept_1", "name": "Engineering"}, "expense_type": "CARD", "status": "APPROVED",
        "original_amount": {"amount": 4218, "currency": "USD"}, "billing_amount": {"amount": 4218, "currency": "USD"},
        "purchased_at": "2026-06-10T12:00:00Z", "payment_posted_at": "2026-06-11T09:00:00Z",
        "user": {"id": "cuuser_1", "first_name": "Ada", "last_name": "Lovelace"}
    }))
    .unwrap()
}

fn origin() -> Origin {
    Origin::Webhook { webhook_id: WebhookId::parse("msg_wh").unwrap() }
}

fn records_message(message_id: &str, ids: &[&str]) -> Message {
    let ids: Vec<_> = ids.iter().map(|i| AccountingRecordId::parse(i).unwrap()).collect();
    let item = WorkItem::accounting_records(&ids, &origin(), t0()).remove(0);
    Message { message_id: message_id.into(), body: serde_json::to_string(&item).unwrap() }
}

fn expenses_message(message_id: &str, ids: &[&str]) -> Message {
    let ids: Vec<_> = ids.iter().map(|i| ExpenseId::parse(i).unwrap()).collect();
    let item = WorkItem::expenses(&ids, &origin(), t0()).remove(0);
    Message { message_id: message_id.into(), body: serde_json::to_string(&item).unwrap() }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-11T12:00:00Z").unwrap().with_timezone(&Utc)
}

fn subject(id: &str) -> Subject {
    Subject::parse(id).unwrap()
}

struct Rig {
    brex: Arc<FakeBrex>,
    ifs: Arc<FakeIfs>,
    store: MemoryStore,
    queue: Arc<MemoryQueue>,
    clock: Arc<ManualClock>,
    poster: Poster,
}

fn rig() -> Rig {
    rig_with(PosterOptions::default())
}

fn rig_with(options: PosterOptions) -> Rig {
    let rig = rig_without_mapping(options);
    rig.store.put_mapping(MAPPING);
    rig
}

fn rig_without_mapping(options: PosterOptions) -> Rig {
    let brex = Arc::new(FakeBrex::default());
    let ifs = Arc::new(FakeIfs::default());
    let store = MemoryStore::new();
    let queue = Arc::new(MemoryQueue::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let poster = Poster {
        records: brex.clone(),
        ledger: ifs.clone(),
        idempotency: Arc::new(store.clone()),
        spend: Arc::new(store.clone()),
        audit: Arc::new(store.clone()),
        mapping: Arc::new(store.clone()),
        clock: clock.clone(),
        redelivery: Some(queue.clone()),
        metrics: crate::metrics::Metrics::new("Test", "poster"),
        options,
        receipts: None,
    };
    Rig { brex, ifs, store, queue, clock, poster }
}

impl Rig {
    async fn process(&self, messages: &[Message]) -> BatchReport {
        self.poster.process(messages, self.clock.now() + Duration::seconds(60)).await
    }

    /// As Lambda's SQS event source delivers it: each message with its receipt handle and receive count.
    async fn handle(&self, messages: &[(&Message, u32)]) -> (Vec<String>, BatchReport) {
        let records: Vec<_> = messages
            .iter()
            .map(|(m, receives)| {
                json!({"messageId": m.message_id, "receiptHandle": format!("rh-{}", m.message_id), "body": m.body,
                       "attributes": {"ApproximateReceiveCount": receives.to_string()}, "eventSource": "aws:sqs"})
            })
            .collect();
        let event = serde_json::from_value(json!({ "Records": records })).unwrap();
        let deadline = self.clock.now() + Duration::seconds(60);
        let (response, report) = crate::lambda::poster::process_sqs_event(&self.poster, event, deadline).await;
        (response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect(), report)
    }

    fn state(&self, id: &str) -> Option<IdempotencyState> {
        self.store.idempotency_state(&IdempotencyKey::from(&subject(id)))
    }

    fn status(&self, id: &str) -> Option<String> {
        self.state(id).map(|s| s.status)
    }

    async fn trail(&self, id: &str) -> Vec<AuditEntry> {
        self.store.read(&subject(id)).await.unwrap()
    }

    /// The proposal `record` maps to with the mapping in force (to put its voucher in IFS behind our back).
    fn proposal_of(&self, record: &AccountingRecord) -> Proposal {
        crate::mapping::map_record(&crate::mapping::MappingDocument::parse(MAPPING).unwrap(), record).unwrap()
    }
}

fn posted(entries: &BTreeMap<Subject, String>) -> Vec<(String, String)> {
    entries.iter().map(|(s, v)| (s.to_string(), v.clone())).collect()
}

fn names<V>(entries: &BTreeMap<Subject, V>) -> Vec<String> {
    entries.keys().map(Subject::to_string).collect()
}

fn success(id: &str, key: &str) -> ExportOutcome {
    ExportOutcome::Success { id: AccountingRecordId::parse(id).unwrap(), reference_id: key.into(), deep_link_url: None }
}

#[tokio::test]
async fn a_record_posts_once_and_brex_is_told_its_voucher() {
    let rig = rig();
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    let report = rig.process(&[records_message("m1", &["accr_1"])]).await;

    assert_eq!(posted(&report.posted), [("accr_1".to_owned(), "10-2026-M-1".to_owned())]);
    assert!(report.failed_messages.is_empty() && report.retry.is_empty() && report.held.is_empty(), "{report:?}");
    assert_eq!(report.mapping_version, Some(1));
    assert_eq!(rig.ifs.creates(), 1);
    let voucher = rig.ifs.proposal("accr_1");
    assert!(voucher.is_balanced());
    let accounts: Vec<_> = voucher.rows.iter().map(|r| r.account.as_str()).collect();
    assert_eq!(accounts, ["6500", "2410"]);
    assert_eq!(rig.brex.reported(), [success("accr_1", "10-2026-M-1")]);
    let state = rig.state("accr_1").unwrap();
    assert_eq!((state.status.as_str(), state.result.as_deref()), ("COMPLETED", Some("10-2026-M-1")));

    let trail = rig.trail("accr_1").await;
    assert_eq!(trail.len(), 1);
    let entry = &trail[0];
    assert_eq!((entry.outcome, entry.voucher.as_deref()), (AuditOutcome::Posted, Some("10-2026-M-1")));
    assert_eq!(entry.reported_to_brex, Some(BrexReport::Exported { voucher: "10-2026-M-1".into() }));
    assert_eq!((entry.origin.clone(), entry.enqueued_at, entry.mapping_version), (Some(origin()), Some(t0()), Some(1)));
}

#[tokio::test]
async fn a_redelivered_completed_record_posts_nothing_and_is_reported_again() {
    let rig = rig();
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    let message = records_message("m1", &["accr_1"]);
    rig.process(std::slice::from_ref(&message)).await;
    let fetches = rig.brex.fetches.load(Ordering::SeqCst);

    let again = rig.process(&[message]).await;
    assert!(again.posted.is_empty());
    assert_eq!(posted(&again.already_posted), [("accr_1".to_owned(), "10-2026-M-1".to_owned())]);
    assert!(again.failed_messages.is_empty());
    assert_eq!(rig.ifs.creates(), 1, "nothing created");
    assert_eq!(rig.ifs.dedup_queries.load(Ordering::SeqCst), 1, "not even asked");
    // Read again once, to see whether Brex changed it after export (it did not).
    assert_eq!(rig.brex.fetches.load(Ordering::SeqCst), fetches + 1, "one fetch to compare versions");
    assert_eq!(rig.brex.reported(), [success("accr_1", "10-2026-M-1"), success("accr_1", "10-2026-M-1")]);
    let outcomes: Vec<_> = rig.trail("accr_1").await.iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, [AuditOutcome::Posted, AuditOutcome::AlreadyPosted]);
}

#[tokio::test]
async fn a_record_carried_by_two_messages_of_one_batch_posts_once() {
    let rig = rig();
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    rig.brex.insert(card_record("accr_2", Some("6500 Travel"), None));
    let report = rig.process(&[records_message("m1", &["accr_1", "accr_2"]), records_message("m2", &["accr_1"])]).await;
    assert_eq!(names(&report.posted), ["accr_1", "accr_2"]);
    assert!(report.failed_messages.is_empty());
    assert_eq!(rig.ifs.creates(), 2);
    assert_eq!(rig.brex.fetches.load(Ordering::SeqCst), 1, "one Brex call for the batch");
}

#[tokio::test]
async fn a_crash_after_commit_is_found_by_dedup_and_not_posted_twice() {
    let rig = rig();
    let record = card_record("accr_1", Some("6500 Travel"), None);
    rig.brex.insert(record.clone());
    // IFS committed, then the poster died before recording it: the voucher exists, the claim is in progress.
    let key = rig.ifs.create_voucher(&rig.proposal_of(&record)).await.unwrap();
    let lease = t0() + Duration::minutes(5);
    rig.store.begin(&IdempotencyKey::from(&subject("accr_1")), lease, t0()).await.unwrap();

    // Redelivered while the dead claim's lease still runs: left for later, nothing touched.
    let early = rig.process(&[records_message("m1", &["accr_1"])]).await;
    assert_eq!(names(&early.retry), ["accr_1"]);
    assert_eq!(early.failed_messages, ["m1"]);
    assert_eq!((rig.ifs.creates(), rig.brex.fetches.load(Ordering::SeqCst)), (1, 0));

    // Once it has run out, the redelivery takes over, finds the voucher and completes the record.
    rig.clock.advance(Duration::minutes(6));
    let report = rig.process(&[records_message("m1", &["accr_1"])]).await;
    assert!(report.posted.is_empty());
    assert_eq!(posted(&report.already_posted), [("accr_1".to_owned(), key.clone())]);
    assert!(report.failed_messages.is_empty());
    assert_eq!(rig.ifs.creates(), 1, "not posted twice");
    assert_eq!(rig.ifs.vouchers_by_reference()["accr_1"].len(), 1);
    assert_eq!(rig.state("accr_1").unwrap().result, Some(key.clone()));
    assert_eq!(rig.brex.reported(), [success("accr_1", &key)]);
}

#[tokio::test]
async fn an_answer_lost_after_the_commit_is_retried_and_found_by_dedup() {
    let rig = rig();
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    rig.ifs.lose_answer("accr_1");
    let first = rig.process(&[records_message("m1", &["accr_1"])]).await;
    assert_eq!(names(&first.retry), ["accr_1"]);
    assert_eq!(first.failed_messages, ["m1"]);
    assert!(rig.brex.reported().is_empty(), "nothing reported on a retry");
    assert_eq!(rig.state("accr_1"), None, "the claim was given back");
    assert_eq!(rig.ifs.vouchers_by_reference()["accr_1"].len(), 1, "IFS has it nonetheless");

    let again = rig.process(&[records_message("m1", &["accr_1"])]).await;
    assert_eq!(posted(&again.already_posted), [("accr_1".to_owned(), "10-2026-M-1".to_owned())]);
    assert_eq!(rig.ifs.creates(), 1, "found, not created again");
    assert_eq!(rig.brex.reported(), [success("accr_1", "10-2026-M-1")]);
}

#[tokio::test]
async fn a_spend_reached_as_expense_and_as_record_posts_once() {
    let rig = rig();
    rig.brex.insert(card_record("accr_s1", Some("6500 Travel"), Some("expense_s1")));
    rig.brex.insert_expense(card_expense("expense_s1"));
    let both = rig.process(&[records_message("m1", &["accr_s1"]), expenses_message("m2", &["expense_s1"])]).await;
    assert_eq!(posted(&both.posted), [("accr_s1".to_owned(), "10-2026-M-1".to_owned())]);
    assert_eq!(names(&both.retry), ["expense_s1"], "the same spend is being posted as the record");
    assert_eq!(both.failed_messages, ["m2"]);

    let redelivered = rig.process(&[expenses_message("m2", &["expense_s1"])]).await;
    assert_eq!(posted(&redelivered.already_posted), [("expense_s1".to_owned(), "10-2026-M-1".to_owned())]);
    assert!(redelivered.failed_messages.is_empty());
    assert_eq!(rig.ifs.creates(), 1);
    assert_eq!(rig.ifs.vouchers_by_reference().len(), 1, "one voucher for the spend");
    // Only records are reported to Brex.
    assert_eq!(rig.brex.reported(), [success("accr_s1", "10-2026-M-1")]);
}

#[tokio::test]
async fn a_spend_posted_under_the_other_id_before_a_crash_is_found_through_its_holders() {
    let rig = rig();
    let record = card_record("accr_s1", Some("6500 Travel"), Some("expense_s1"));
    rig.brex.insert_expense(card_expense("expense_s1"));
    // The record's poster claimed the spend, committed its voucher and died.
    let spend = ExpenseId::parse("expense_s1").unwrap();
    let as_record = ReferenceNumber::parse("accr_s1").unwrap();
    rig.store.claim(&spend, &as_record, t0() - Duration::minutes(1), t0() - Duration::minutes(6)).await.unwrap();
    let key = rig.ifs.create_voucher(&rig.proposal_of(&record)).await.unwrap();

    let report = rig.process(&[expenses_message("m1", &["expense_s1"])]).await;
    assert_eq!(posted(&report.already_posted), [("expense_s1".to_owned(), key.clone())]);
    assert_eq!(rig.ifs.creates(), 1, "the record's voucher counts");
    let later = t0() + Duration::minutes(1);
    assert_eq!(
        rig.store.claim(&spend, &ReferenceNumber::parse("expense_s1").unwrap(), later, later).await.unwrap(),
        SpendClaim::Posted { by: as_record, voucher: key }
    );
}

#[tokio::test]
async fn a_mapping_error_fails_the_record_and_tells_brex_once_and_for_all() {
    let rig = rig();
    rig.brex.insert(card_record("accr_bad", None, None));
    let message = records_message("m1", &["accr_bad"]);
    let report = rig.process(std::slice::from_ref(&message)).await;
    let reason = report.failed[&subject("accr_bad")].clone();
    assert!(reason.contains("accr_bad") && reason.to_lowercase().contains("account"), "{reason}");
    assert!(report.failed_messages.is_empty(), "a permanent failure is not handed back to SQS");
    assert_eq!(rig.ifs.creates(), 0);
    let state = rig.state("accr_bad").unwrap();
    assert_eq!((state.status.as_str(), state.reason.as_deref()), ("FAILED", Some(reason.as_str())));
    let failure =
        ExportOutcome::Failure { id: AccountingRecordId::parse("accr_bad").unwrap(), message: reason.clone() };
    assert_eq!(rig.brex.reported(), std::slice::from_ref(&failure));

    // Delivered again (the poller would find it still READY_FOR_EXPORT): recognised, not tried again.
    let again = rig.process(&[message]).await;
    assert_eq!(again.failed.get(&subject("accr_bad")), Some(&reason));
    assert!(again.failed_messages.is_empty());
    assert_eq!((rig.ifs.creates(), rig.brex.fetches.load(Ordering::SeqCst)), (0, 1));
    assert_eq!(rig.brex.reported(), [failure.clone(), failure]);
}

#[tokio::test]
async fn an_account_ifs_does_not_have_fails_the_record() {
    let rig = rig();
    lock(&rig.ifs.unknown_accounts).insert("6500".into());
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    let report = rig.process(&[records_message("m1", &["accr_1"])]).await;
    assert!(report.failed[&subject("accr_1")].contains("6500"), "{report:?}");
    assert!(report.failed_messages.is_empty());
    assert_eq!(rig.ifs.creates(), 0);
    assert_eq!(rig.status("accr_1").as_deref(), Some("FAILED"));
}

#[tokio::test]
async fn a_retryable_ifs_error_leaves_the_record_for_retry() {
    let rig = rig();
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    rig.ifs.fail_creates(None, Some(ifs_error(Disposition::Retryable, "503 after every retry", None)));
    let report = rig.process(&[records_message("m1", &["accr_1"])]).await;
    assert!(report.retry[&subject("accr_1")].contains("503"), "{report:?}");
    assert_eq!(report.failed_messages, ["m1"], "the message comes back");
    assert!(report.held_messages.is_empty());
    assert_eq!(rig.brex.report_calls.load(Ordering::SeqCst), 0, "not reported");
    assert_eq!(rig.state("accr_1"), None, "the claim was given back at once");
    let trail = rig.trail("accr_1").await;
    assert_eq!((trail[0].outcome, trail[0].reported_to_brex.clone()), (AuditOutcome::Retry, None));

    rig.ifs.fail_creates(None, None);
    let retried = rig.process(&[records_message("m1", &["accr_1"])]).await;
    assert_eq!(names(&retried.posted), ["accr_1"]);
    assert_eq!(rig.ifs.vouchers_by_reference()["accr_1"].len(), 1);
}

#[tokio::test]
async fn a_failed_dedup_query_posts_nothing_and_retries() {
    let rig = rig();
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    *lock(&rig.ifs.fail_dedup) = Some(ifs_error(Disposition::Retryable, "timed out", None));
    let report = rig.process(&[records_message("m1", &["accr_1"])]).await;
    assert!(report.retry[&subject("accr_1")].contains("dedup"), "{report:?}");
    assert_eq!(report.failed_messages, ["m1"]);
    assert_eq!(rig.ifs.creates(), 0, "never posted without knowing what is there");
}

#[tokio::test]
async fn a_hold_class_error_holds_the_record_and_delays_its_message() {
    let rig = rig();
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    let fix = "grant the IFS user the ACCOUNTING permission set, then `connector replay`";
    rig.ifs.fail_creates(None, Some(ifs_error(Disposition::Hold, "403 on VoucherSet", Some(fix))));
    let message = records_message("m1", &["accr_1"]);

    let (failures, report) = rig.handle(&[(&message, 2)]).await;
    assert_eq!(failures, ["m1"], "the message comes back");
    assert_eq!(report.held_messages, ["m1"]);
    let held = &report.held[&subject("accr_1")];
    assert!(held.reason.contains("403"), "{held:?}");
    assert_eq!(held.fix, fix);
    assert!(report.failed.is_empty() && report.retry.is_empty());
    // With backoff: 30 s × 4^(2 − 1).
    assert_eq!(rig.queue.delays(), [("rh-m1".to_owned(), std::time::Duration::from_secs(120))]);
    assert_eq!(rig.brex.report_calls.load(Ordering::SeqCst), 0, "never reported to Brex");
    let state = rig.state("accr_1").unwrap();
    assert_eq!(state.status, "HELD");
    assert_eq!((state.reason.as_deref(), state.fix.as_deref()), (Some(held.reason.as_str()), Some(fix)));
    assert_eq!((state.held_since, state.held_times), (Some(t0().to_rfc3339()), Some(1)));
    let trail = rig.trail("accr_1").await;
    assert_eq!(trail[0].outcome, AuditOutcome::Held);
    assert!(trail[0].reason.as_deref().is_some_and(|r| r.contains(fix)), "{trail:?}");

    // Still broken on the next delivery: held again, counted, longer backoff.
    rig.clock.advance(Duration::minutes(2));
    let (_, again) = rig.handle(&[(&message, 3)]).await;
    assert_eq!(names(&again.held), ["accr_1"]);
    assert_eq!(rig.queue.delays()[1], ("rh-m1".to_owned(), std::time::Duration::from_secs(480)));
    assert_eq!(rig.state("accr_1").unwrap().held_times, Some(2));

    // The operator fixes IFS: the next delivery posts it.
    rig.ifs.fail_creates(None, None);
    let (failures, fixed) = rig.handle(&[(&message, 4)]).await;
    assert!(failures.is_empty());
    assert_eq!(names(&fixed.posted), ["accr_1"]);
    assert_eq!(rig.status("accr_1").as_deref(), Some("COMPLETED"));
    assert_eq!(rig.queue.delays().len(), 2, "no delay once posted");
    assert_eq!(rig.brex.reported(), [success("accr_1", "10-2026-M-1")]);
}

#[tokio::test]
async fn a_missing_mapping_document_holds_every_record_until_one_is_pushed() {
    let rig = rig_without_mapping(PosterOptions::default());
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    rig.brex.insert(card_record("accr_2", Some("6500 Travel"), None));
    let message = records_message("m1", &["accr_1", "accr_2"]);
    let report = rig.process(std::slice::from_ref(&message)).await;
    assert_eq!(names(&report.held), ["accr_1", "accr_2"]);
    let held = &report.held[&subject("accr_1")];
    assert!(held.reason.starts_with("mapping document:") && held.fix.contains("mapping push"), "{held:?}");
    assert_eq!(report.held_messages, ["m1"]);
    assert_eq!((rig.ifs.creates(), rig.ifs.dedup_queries.load(Ordering::SeqCst)), (0, 0));
    assert_eq!(rig.brex.report_calls.load(Ordering::SeqCst), 0);
    assert_eq!(rig.status("accr_1").as_deref(), Some("HELD"));

    rig.store.put_mapping(MAPPING);
    let pushed = rig.process(&[message]).await;
    assert_eq!(names(&pushed.posted), ["accr_1", "accr_2"]);
    assert_eq!(pushed.mapping_version, Some(1));
}

#[tokio::test]
async fn a_brex_outage_retries_and_a_brex_credential_fault_holds() {
    let rig = rig();
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    let message = records_message("m1", &["accr_1"]);
    rig.brex.fail_fetches(Some(Disposition::Retryable));
    let outage = rig.process(std::slice::from_ref(&message)).await;
    assert_eq!(
        (names(&outage.retry), outage.failed_messages.clone()),
        (vec!["accr_1".to_owned()], vec!["m1".to_owned()])
    );
    assert!(outage.held.is_empty());
    assert_eq!(rig.state("accr_1"), None);

    // Not the record's fault either way: a fetch Brex refuses for good holds it, never fails it.
    for disposition in [Disposition::Hold, Disposition::Permanent] {
        rig.brex.fail_fetches(Some(disposition));
        let refused = rig.process(std::slice::from_ref(&message)).await;
        assert_eq!(names(&refused.held), ["accr_1"], "{disposition:?}");
        assert!(refused.failed.is_empty());
        assert_eq!(rig.status("accr_1").as_deref(), Some("HELD"));
    }
    assert_eq!(rig.brex.report_calls.load(Ordering::SeqCst), 0);
    rig.brex.fail_fetches(None);
    assert_eq!(names(&rig.process(&[message]).await.posted), ["accr_1"]);
}

#[tokio::test]
async fn one_bad_record_never_fails_its_batch() {
    let rig = rig();
    for id in ["accr_1", "accr_2", "accr_3", "accr_4"] {
        rig.brex.insert(card_record(id, Some("6500 Travel"), None));
    }
    rig.brex.insert(card_record("accr_bad", None, None));
    rig.ifs.fail_creates(Some("accr_3"), Some(ifs_error(Disposition::Retryable, "503", None)));
    rig.ifs.fail_creates(Some("accr_4"), Some(ifs_error(Disposition::Hold, "401", Some("rotate the IFS secret"))));
    let malformed = Message { message_id: "m3".into(), body: "not json".into() };
    let messages = [
        records_message("m1", &["accr_1", "accr_bad"]),
        records_message("m2", &["accr_2", "accr_missing"]),
        malformed,
        records_message("m4", &["accr_3"]),
        records_message("m5", &["accr_4"]),
    ];
    let report = rig.process(&messages).await;
    assert_eq!(names(&report.posted), ["accr_1", "accr_2"]);
    assert_eq!(names(&report.failed), ["accr_bad", "accr_missing"]);
    assert_eq!(names(&report.retry), ["accr_3"]);
    assert_eq!(names(&report.held), ["accr_4"]);
    assert_eq!(report.failed_messages, ["m3", "m4", "m5"], "only what can succeed later, and the malformed one");
    assert_eq!(report.held_messages, ["m5"]);
    assert_eq!(rig.brex.report_calls.load(Ordering::SeqCst), 1, "one report for the batch");
    let mut told: Vec<_> = rig
        .brex
        .reported()
        .into_iter()
        .map(|o| match o {
            ExportOutcome::Success { id, .. } => format!("ok {id}"),
            ExportOutcome::Failure { id, .. } => format!("failed {id}"),
        })
        .collect();
    told.sort();
    assert_eq!(told, ["failed accr_bad", "failed accr_missing", "ok accr_1", "ok accr_2"]);
}

#[tokio::test]
async fn dry_run_posts_nothing() {
    let rig = rig_with(PosterOptions { dry_run: true, ..PosterOptions::default() });
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    rig.brex.insert(card_record("accr_bad", None, None));
    let report = rig.process(&[records_message("m1", &["accr_1", "accr_bad"])]).await;
    assert_eq!(report.proposals.len(), 1);
    assert_eq!(report.proposals[0].reference_number.as_str(), "accr_1");
    assert_eq!(names(&report.failed), ["accr_bad"], "accounted for: would fail");
    assert!(report.posted.is_empty() && report.failed_messages.is_empty());
    assert_eq!((rig.ifs.creates(), rig.ifs.dedup_queries.load(Ordering::SeqCst)), (0, 0));
    assert_eq!(rig.brex.report_calls.load(Ordering::SeqCst), 0, "nothing reported to Brex");
    assert!(rig.store.idempotency_states().is_empty(), "nothing claimed or recorded");
    assert!(rig.trail("accr_1").await.is_empty() && rig.trail("accr_bad").await.is_empty());
}

#[tokio::test]
async fn an_export_result_brex_did_not_take_is_reported_on_redelivery_without_posting_again() {
    let rig = rig();
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    rig.brex.fail_reports(Some(Disposition::Retryable));
    let message = records_message("m1", &["accr_1"]);
    let first = rig.process(std::slice::from_ref(&message)).await;
    assert_eq!(names(&first.posted), ["accr_1"]);
    assert_eq!(first.unreported.iter().map(Subject::to_string).collect::<Vec<_>>(), ["accr_1"]);
    assert_eq!(first.failed_messages, ["m1"], "redelivered so that Brex is told");
    assert_eq!(rig.status("accr_1").as_deref(), Some("COMPLETED"));

    rig.brex.fail_reports(None);
    let again = rig.process(&[message]).await;
    assert_eq!(names(&again.already_posted), ["accr_1"]);
    assert!(again.unreported.is_empty() && again.failed_messages.is_empty());
    assert_eq!(rig.ifs.creates(), 1);
    assert_eq!(rig.brex.report_calls.load(Ordering::SeqCst), 2, "reported again on redelivery");
    assert_eq!(rig.brex.reported(), [success("accr_1", "10-2026-M-1")]);
    let steps: Vec<_> = rig
        .trail("accr_1")
        .await
        .iter()
        .map(|e| (e.outcome, e.reported_to_brex.as_ref().map(BrexReport::reached_brex)))
        .collect();
    assert_eq!(steps, [(AuditOutcome::Posted, Some(false)), (AuditOutcome::AlreadyPosted, Some(true))]);
}

#[tokio::test]
async fn a_record_no_longer_ready_is_skipped_and_its_claim_dropped() {
    let rig = rig();
    let mut record = card_record("accr_1", Some("6500 Travel"), None);
    record.review_status = ReviewStatus::Prepare;
    rig.brex.insert(record);
    let report = rig.process(&[records_message("m1", &["accr_1"])]).await;
    assert!(report.skipped[&subject("accr_1")].contains("Prepare"), "{report:?}");
    assert!(report.failed_messages.is_empty());
    assert_eq!(rig.state("accr_1"), None, "a later READY_FOR_EXPORT posts it");
    assert_eq!((rig.ifs.creates(), rig.brex.report_calls.load(Ordering::SeqCst)), (0, 0));
}

/// The batch's outcomes become metrics once: posted by company with its latency, failures by what they are
/// about, an IFS refusal apart from a mapping error; a redelivery counts as already posted.
#[tokio::test]
async fn the_outcomes_are_counted_as_metrics() {
    let rig = rig();
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    rig.brex.insert(card_record("accr_bad", None, None));
    lock(&rig.ifs.unknown_accounts).insert("6510".into());
    rig.brex.insert(card_record("accr_2", Some("6510 Meals"), None));
    let message = records_message("m1", &["accr_1", "accr_bad", "accr_2"]);
    rig.process(std::slice::from_ref(&message)).await;
    let lines: Vec<serde_json::Value> =
        rig.poster.metrics.take_lines(rig.clock.now()).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let value = |metric: &str, key: &str, dim: &str| {
        lines.iter().find(|l| l.get(metric).is_some() && l[key] == dim).map(|l| l[metric].clone())
    };
    assert_eq!(value("RecordsPosted", "Company", "10"), Some(json!(1.0)), "{lines:?}");
    assert_eq!(value("RecordsFailed", "ReasonClass", "mapping"), Some(json!(1.0)), "{lines:?}");
    assert_eq!(value("RecordsFailed", "ReasonClass", "ifs_refusal"), Some(json!(1.0)), "{lines:?}");
    // Brex updated the record at 09:09:10, the clock says 12:00:00.
    let latency = lines.iter().find_map(|l| l.get("PostLatency")).cloned();
    assert_eq!(latency, Some(json!(10_250_000.0)), "{lines:?}");
    assert!(lines.iter().all(|l| l["Function"] == "poster"));

    rig.process(&[message]).await;
    let again: Vec<String> = rig.poster.metrics.take_lines(rig.clock.now());
    assert_eq!(again.len(), 1, "{again:?}");
    let line: serde_json::Value = serde_json::from_str(&again[0]).unwrap();
    assert_eq!(line["RecordsAlreadyPosted"], json!(1.0), "the failed ones are not counted again: {line}");
    assert!(line.get("RecordsFailed").is_none() && line.get("RecordsPosted").is_none(), "{line}");
}

// --- Changes after export --------------------------------------------------------------------------------

/// `accr_1` posted at version 3 (171.75 to 6500), then changed in Brex to version `version` with
/// `amount` and `memo`, under `[ifs] changed_after_export = policy`.
async fn changed_rig(policy: &str, version: i64, amount: &str, memo: &str) -> Rig {
    let rig = rig();
    rig.store.put_mapping(
        &MAPPING.replace("changed_after_export = \"hold\"", &format!("changed_after_export = \"{policy}\"")),
    );
    rig.brex.insert(card_record("accr_1", Some("6500 Travel"), None));
    let first = rig.process(&[records_message("m1", &["accr_1"])]).await;
    assert_eq!(names(&first.posted), ["accr_1"]);
    let mut changed = card_record("accr_1", Some("6500 Travel"), None);
    changed.version = version;
    changed.memo = Some(memo.to_owned());
    let mut json = serde_json::to_value(&changed).unwrap();
    for line in json["line_items"].as_array_mut().unwrap() {
        line["amount"]["amount"] = json!(amount);
    }
    json["amount"]["amount"] = json!(amount);
    rig.brex.insert(serde_json::from_value(json).unwrap());
    rig
}

#[tokio::test]
async fn a_version_that_changes_nothing_the_voucher_carries_is_reported_again() {
    let rig = changed_rig("replace", 4, "171.75", "Flight to SFO (receipt added)").await;
    let report = rig.process(&[records_message("m2", &["accr_1"])]).await;
    assert_eq!(posted(&report.already_posted), [("accr_1".to_owned(), "10-2026-M-1".to_owned())]);
    assert!(report.posted.is_empty() && report.held.is_empty() && report.revisions.is_empty(), "{report:?}");
    assert_eq!(rig.ifs.creates(), 1, "nothing written");
}

#[tokio::test]
async fn a_changed_amount_is_held_by_default_naming_both_versions() {
    let rig = changed_rig("hold", 4, "200.00", "Flight to SFO").await;
    let report = rig.process(&[records_message("m2", &["accr_1"])]).await;
    let held = &report.held[&subject("accr_1")];
    assert!(held.reason.contains("version 3") && held.reason.contains("version 4"), "{}", held.reason);
    assert!(held.fix.contains("version 3") && held.fix.contains("version 4"), "{}", held.fix);
    assert_eq!(report.held_messages, ["m2"], "comes back with backoff");
    assert_eq!(rig.ifs.creates(), 1, "nothing written to IFS");
    assert_eq!(rig.brex.reported().len(), 1, "not reported to Brex");
    assert_eq!(rig.status("accr_1").as_deref(), Some("COMPLETED"), "the posted voucher stays on record");
    let default = crate::mapping::MappingDocument::parse(MAPPING).unwrap();
    assert_eq!(default.changed_after_export, crate::mapping::ChangedAfterExport::Hold);
}

#[tokio::test]
async fn replace_removes_an_unapproved_voucher_and_posts_the_new_version_once() {
    let rig = changed_rig("replace", 4, "200.00", "Flight to SFO").await;
    let report = rig.process(&[records_message("m2", &["accr_1"])]).await;
    assert_eq!(posted(&report.posted), [("accr_1".to_owned(), "10-2026-M-2".to_owned())]);
    let revision = &report.revisions[&subject("accr_1")];
    assert_eq!((revision.from_version, revision.to_version), (3, 4));
    assert_eq!(revision.undone, crate::audit::Undone::Removed);
    assert_eq!(rig.ifs.removed.load(Ordering::SeqCst), 1);
    assert_eq!(rig.ifs.vouchers_by_reference().len(), 1, "one voucher net: {:?}", rig.ifs.vouchers_by_reference());
    assert_eq!(rig.ifs.proposal("accr_1-v4").rows[0].amount, rust_decimal::Decimal::from(200));
    assert_eq!(rig.brex.reported().last(), Some(&success("accr_1", "10-2026-M-2")));

    let again = rig.process(&[records_message("m3", &["accr_1"])]).await;
    assert_eq!(posted(&again.already_posted), [("accr_1".to_owned(), "10-2026-M-2".to_owned())]);
    assert_eq!((rig.ifs.creates(), rig.ifs.removed.load(Ordering::SeqCst)), (2, 1), "nothing more written");
    let trail = rig.trail("accr_1").await;
    assert_eq!(trail[0].brex_version, Some(3));
    assert_eq!(trail[1].revision.as_ref(), Some(revision));
}

#[tokio::test]
async fn an_approved_voucher_is_reversed_and_the_books_net_to_the_new_version() {
    let rig = changed_rig("replace", 4, "200.00", "Flight to SFO").await;
    lock(&rig.ifs.approved).insert("10-2026-M-1".into());
    let report = rig.process(&[records_message("m2", &["accr_1"])]).await;
    let revision = &report.revisions[&subject("accr_1")];
    assert_eq!(revision.undone, crate::audit::Undone::Reversed { reversal: "10-2026-M-3".into() });
    assert_eq!(posted(&report.posted), [("accr_1".to_owned(), "10-2026-M-2".to_owned())]);
    // Net per account over every voucher: the new version's.
    let mut net: BTreeMap<String, rust_decimal::Decimal> = BTreeMap::new();
    for (_, (_, p)) in lock(&rig.ifs.vouchers).iter() {
        for r in &p.rows {
            let signed = if r.side == crate::proposal::Side::Debit { r.amount } else { -r.amount };
            *net.entry(r.account.to_string()).or_default() += signed;
        }
    }
    assert_eq!(net["6500"], rust_decimal::Decimal::from(200));
    assert_eq!(net["2410"], rust_decimal::Decimal::from(-200));
    assert_eq!(rig.ifs.proposal("accr_1-R").rows[0].side, crate::proposal::Side::Credit);

    let again = rig.process(&[records_message("m3", &["accr_1"])]).await;
    assert!(again.posted.is_empty(), "{again:?}");
    assert_eq!(rig.ifs.creates(), 3, "nothing more written");
}

#[tokio::test]
async fn a_revision_that_crashed_half_way_finds_its_writes_again() {
    let rig = changed_rig("reverse", 4, "200.00", "Flight to SFO").await;
    // The new voucher commits but its answer is lost: the claim is given back, the message retried.
    rig.ifs.lose_answer("accr_1-v4");
    let first = rig.process(&[records_message("m2", &["accr_1"])]).await;
    assert_eq!(names(&first.retry), ["accr_1"], "{first:?}");
    let again = rig.process(&[records_message("m2", &["accr_1"])]).await;
    assert_eq!(names(&again.posted), ["accr_1"], "{again:?}");
    assert_eq!(rig.ifs.creates(), 3, "first voucher, new voucher once, reversal once");
    assert_eq!(rig.ifs.vouchers_by_reference().len(), 3);
}
