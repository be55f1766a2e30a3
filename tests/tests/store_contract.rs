//! One contract for every storage port (and the queue and secrets): each test body below runs twice, against
//! the in-memory adapters (`shared::memory`, what unit tests use) and against the DynamoDB, SQS and Secrets
//! Manager adapters on moto (`<backend>::<test>`). A unit test on the memory adapters proves something about
//! production only as far as both backends behave alike, and this suite is what says they do.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use shared::audit::{AuditEntry, AuditOutcome};
use shared::aws::dynamodb::StoredMapping;
use shared::aws::operator::IdempotencyState;
use shared::aws::poll_state::DynamoPollState;
use shared::aws::report::DynamoReportStore;
use shared::aws::{CachedMapping, DynamoStore, SecretsManagerStore, SqsQueue};
use shared::brex::model::SourceType;
use shared::domain::WorkItem;
use shared::domain::{AccountingRecordId, CompanyCode, ExpenseId, Origin, ReferenceNumber, Secret, Subject, WebhookId};
use shared::error::{AwsError, Classify, Disposition};
use shared::mapping::MappingLoadError;
use shared::memory::{MemoryPollState, MemoryQueue, MemoryReports, MemorySecrets, MemoryStore};
use shared::ports::{
    AttachedReceipts, AuditTrail, Begin, Capability, CapabilityStore, EnqueueLedger, Feed, IdempotencyKey,
    IdempotencyStore, LeaseStore, MappingSource, Paging, PollState, PollStateStore, PostedVersion, ReportStore,
    SecretStore, SpendClaim, SpendClaims, WorkQueue,
};
use shared::receipts::AttachedReceipt;
use shared::reference::{CompanySummary, ValidationReport};
use sims::aws::{Moto, Stack, StackSpec};

/// Runs each named contract (an `async fn(Backend)`) once per backend.
macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::memory()).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::dynamodb().await).await;
                }
            )*
        }
    };
}

contract!(
    idempotency_follows_powertools_semantics,
    concurrent_begins_have_exactly_one_winner,
    an_expired_claim_is_taken_over_and_an_unexpired_one_is_not,
    a_held_key_is_claimed_again_and_keeps_its_hold_history,
    a_hold_never_overwrites_completed_failed_or_held,
    deliveries_records_and_expenses_have_separate_keys,
    leases_exclude_other_holders_until_expiry,
    spend_claims_keep_every_holder_so_a_crashed_post_is_still_found,
    a_posted_spend_is_final_whoever_held_it,
    capabilities_are_remembered_with_their_time,
    the_audit_trail_reads_back_oldest_first,
    the_mapping_document_is_versioned_and_served_parsed,
    poll_positions_round_trip_per_feed,
    settled_is_done_or_claimed_with_an_unexpired_lease,
    queued_marks_block_until_they_expire_or_are_dropped,
    the_latest_validation_report_is_kept,
    secrets_round_trip,
    the_queue_receives_every_item,
    attached_receipts_are_kept_per_voucher_once_per_file,
    the_posted_voucher_is_kept_beside_the_item_and_never_rolled_back,
    a_revision_claim_is_its_own_key,
);

/// The ports of one backend, and what the tests read behind them.
struct Backend {
    idem: Arc<dyn IdempotencyStore>,
    spend: Arc<dyn SpendClaims>,
    leases: Arc<dyn LeaseStore>,
    capabilities: Arc<dyn CapabilityStore>,
    audit: Arc<dyn AuditTrail>,
    mapping: Arc<dyn MappingSource>,
    positions: Arc<dyn PollStateStore>,
    enqueue: Arc<dyn EnqueueLedger>,
    reports: Arc<dyn ReportStore>,
    queue: Arc<dyn WorkQueue>,
    secrets: Arc<dyn SecretStore>,
    attached: Arc<dyn AttachedReceipts>,
    /// A secret that exists, holding [`SECRET`].
    secret_id: String,
    peek: Arc<dyn Peek>,
}

const SECRET: &str = r#"{"token":"bxt_sim_user_token"}"#;

/// What no port reads but the tests must see: the operator's view of the table, the mapping document's
/// versions, and the queue's contents.
#[async_trait]
trait Peek: Send + Sync {
    async fn idempotency(&self, subject: &Subject) -> Option<IdempotencyState>;
    async fn queued_until(&self, subject: &Subject) -> Option<DateTime<Utc>>;
    async fn load_mapping(&self) -> Result<Option<StoredMapping>, AwsError>;
    async fn store_mapping(&self, document: &str, expected_version: Option<i64>) -> Result<i64, AwsError>;
    /// Receives (and removes) everything on the queue.
    async fn received(&self) -> Vec<WorkItem>;
}

fn memory() -> Backend {
    let store = MemoryStore::new();
    let poll = store.poll_state();
    let queue = Arc::new(MemoryQueue::new());
    let secret_id = "brex".to_owned();
    Backend {
        idem: Arc::new(store.clone()),
        spend: Arc::new(store.clone()),
        leases: Arc::new(store.clone()),
        capabilities: Arc::new(store.clone()),
        audit: Arc::new(store.clone()),
        mapping: Arc::new(store.clone()),
        positions: Arc::new(poll.clone()),
        enqueue: Arc::new(poll.clone()),
        reports: Arc::new(MemoryReports::new()),
        queue: queue.clone(),
        secrets: Arc::new(MemorySecrets::new().with(&secret_id, SECRET)),
        attached: Arc::new(store.clone()),
        secret_id,
        peek: Arc::new(MemoryPeek { store, poll, queue }),
    }
}

struct MemoryPeek {
    store: MemoryStore,
    poll: MemoryPollState,
    queue: Arc<MemoryQueue>,
}

#[async_trait]
impl Peek for MemoryPeek {
    async fn idempotency(&self, subject: &Subject) -> Option<IdempotencyState> {
        self.store.idempotency_state(&IdempotencyKey::from(subject))
    }
    async fn queued_until(&self, subject: &Subject) -> Option<DateTime<Utc>> {
        self.poll.queued_marks().get(subject).copied()
    }
    async fn load_mapping(&self) -> Result<Option<StoredMapping>, AwsError> {
        self.store.load_mapping().await
    }
    async fn store_mapping(&self, document: &str, expected_version: Option<i64>) -> Result<i64, AwsError> {
        self.store.store_mapping(document, expected_version).await
    }
    async fn received(&self) -> Vec<WorkItem> {
        self.queue.take()
    }
}

async fn dynamodb() -> Backend {
    let stack =
        Stack::create(&Moto::get(), StackSpec { name: "contract", brex_secret: SECRET, ..StackSpec::default() })
            .await
            .expect("stack");
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let store = DynamoStore::new(client.clone(), &stack.table_name);
    let poll = DynamoPollState::new(client.clone(), &stack.table_name);
    Backend {
        idem: Arc::new(store.clone()),
        spend: Arc::new(store.clone()),
        leases: Arc::new(store.clone()),
        capabilities: Arc::new(store.clone()),
        audit: Arc::new(store.clone()),
        // No cache: every call reads the table, as the memory store does.
        mapping: Arc::new(CachedMapping::new(store.clone(), std::time::Duration::ZERO)),
        positions: Arc::new(poll.clone()),
        enqueue: Arc::new(poll),
        reports: Arc::new(DynamoReportStore::new(client, &stack.table_name)),
        queue: Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&stack.sdk), &stack.queue_url)),
        secrets: Arc::new(SecretsManagerStore::new(aws_sdk_secretsmanager::Client::new(&stack.sdk))),
        attached: Arc::new(store.clone()),
        secret_id: stack.brex_secret_id.clone(),
        peek: Arc::new(DynamoPeek { store, stack }),
    }
}

struct DynamoPeek {
    store: DynamoStore,
    stack: Stack,
}

#[async_trait]
impl Peek for DynamoPeek {
    async fn idempotency(&self, subject: &Subject) -> Option<IdempotencyState> {
        self.store.idempotency_state(subject).await.expect("GetItem")
    }
    async fn queued_until(&self, subject: &Subject) -> Option<DateTime<Utc>> {
        self.store.queued_until(subject).await.expect("GetItem")
    }
    async fn load_mapping(&self) -> Result<Option<StoredMapping>, AwsError> {
        self.store.load_mapping().await
    }
    async fn store_mapping(&self, document: &str, expected_version: Option<i64>) -> Result<i64, AwsError> {
        self.store.store_mapping(document, expected_version).await
    }
    async fn received(&self) -> Vec<WorkItem> {
        let bodies = self.stack.drain(&self.stack.queue_url).await;
        bodies.iter().map(|b| serde_json::from_str(b).expect("a work item")).collect()
    }
}

fn record(id: &str) -> Subject {
    Subject::Record(AccountingRecordId::parse(id).unwrap())
}

fn posting(id: &str) -> IdempotencyKey {
    IdempotencyKey::Posting(record(id))
}

fn reference(id: &str) -> ReferenceNumber {
    ReferenceNumber::parse(id).unwrap()
}

async fn state(b: &Backend, id: &str) -> IdempotencyState {
    b.peek.idempotency(&record(id)).await.unwrap_or_else(|| panic!("{id} has an idempotency item"))
}

async fn idempotency_follows_powertools_semantics(b: Backend) {
    let store = b.idem.as_ref();
    let now = Utc::now();
    let lease = now + Duration::seconds(60);

    assert_eq!(store.begin(&posting("accr_1"), lease, now).await.unwrap(), Begin::Started);
    match store.begin(&posting("accr_1"), lease, now).await.unwrap() {
        Begin::InProgress { until } => assert_eq!(until.timestamp_millis(), lease.timestamp_millis()),
        other => panic!("expected in progress, got {other:?}"),
    }
    // An expired lease is taken over.
    let later = lease + Duration::seconds(1);
    assert_eq!(store.begin(&posting("accr_1"), later + Duration::seconds(60), later).await.unwrap(), Begin::Started);

    store.complete(&posting("accr_1"), Some("10-2026-M-1"), now + Duration::days(30)).await.unwrap();
    assert_eq!(
        store.begin(&posting("accr_1"), lease, now).await.unwrap(),
        Begin::Completed { result: Some("10-2026-M-1".into()) }
    );
    // Release never removes a completed record.
    store.release(&posting("accr_1")).await.unwrap();
    assert!(matches!(store.begin(&posting("accr_1"), lease, now).await.unwrap(), Begin::Completed { .. }));

    assert_eq!(store.begin(&posting("accr_2"), lease, now).await.unwrap(), Begin::Started);
    store.release(&posting("accr_2")).await.unwrap();
    assert_eq!(b.peek.idempotency(&record("accr_2")).await, None, "a released claim leaves nothing behind");
    assert_eq!(store.begin(&posting("accr_2"), lease, now).await.unwrap(), Begin::Started, "released claims restart");
    store.fail(&posting("accr_2"), "no GL account", now + Duration::days(30)).await.unwrap();
    assert_eq!(
        store.begin(&posting("accr_2"), lease, now).await.unwrap(),
        Begin::Failed { reason: "no GL account".into() }
    );
    store.release(&posting("accr_2")).await.unwrap();
    assert!(matches!(store.begin(&posting("accr_2"), lease, now).await.unwrap(), Begin::Failed { .. }));

    // Completing without a result, and completing or failing a key nobody claimed, are recorded as such.
    store.complete(&posting("accr_3"), None, now + Duration::days(30)).await.unwrap();
    assert_eq!(store.begin(&posting("accr_3"), lease, now).await.unwrap(), Begin::Completed { result: None });
    let done = state(&b, "accr_3").await;
    assert_eq!((done.status.as_str(), done.lease_until), ("COMPLETED", None));
}

async fn concurrent_begins_have_exactly_one_winner(b: Backend) {
    let now = Utc::now();
    let key = IdempotencyKey::Delivery(WebhookId::parse("msg_1").unwrap());
    let attempts = (0..8).map(|_| {
        let store = b.idem.clone();
        let key = key.clone();
        async move { store.begin(&key, now + Duration::seconds(30), now).await.unwrap() }
    });
    let results = futures::future::join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| **r == Begin::Started).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Begin::Started | Begin::InProgress { .. })), "{results:?}");
}

async fn an_expired_claim_is_taken_over_and_an_unexpired_one_is_not(b: Backend) {
    let store = b.idem.as_ref();
    let now = Utc::now();
    let lease = now + Duration::seconds(60);
    assert_eq!(store.begin(&posting("accr_1"), lease, now).await.unwrap(), Begin::Started);
    let claimed = state(&b, "accr_1").await;
    assert_eq!(claimed.status, "IN_PROGRESS");
    assert_eq!(claimed.lease_until.map(|t| t.timestamp_millis()), Some(lease.timestamp_millis()));
    // At the very end of the lease it is still held; only after it may another take over.
    assert!(matches!(
        store.begin(&posting("accr_1"), lease + Duration::seconds(60), lease).await.unwrap(),
        Begin::InProgress { .. }
    ));
    let after = lease + Duration::milliseconds(1);
    let new_lease = after + Duration::seconds(60);
    assert_eq!(store.begin(&posting("accr_1"), new_lease, after).await.unwrap(), Begin::Started);
    let taken = state(&b, "accr_1").await;
    assert_eq!(taken.lease_until.map(|t| t.timestamp_millis()), Some(new_lease.timestamp_millis()));
    match store.begin(&posting("accr_1"), new_lease, after).await.unwrap() {
        Begin::InProgress { until } => assert_eq!(until.timestamp_millis(), new_lease.timestamp_millis()),
        other => panic!("the new owner's lease holds: {other:?}"),
    }
    // Whoever holds it, the claim can be completed by the one that did the work.
    store.complete(&posting("accr_1"), Some("v"), now + Duration::days(1)).await.unwrap();
    assert!(matches!(store.begin(&posting("accr_1"), new_lease, after).await.unwrap(), Begin::Completed { .. }));
}

async fn a_held_key_is_claimed_again_and_keeps_its_hold_history(b: Backend) {
    let store = b.idem.as_ref();
    let t0 = Utc::now();
    let retain = t0 + Duration::days(30);
    let lease = t0 + Duration::seconds(60);
    assert_eq!(store.begin(&posting("accr_1"), lease, t0).await.unwrap(), Begin::Started);
    store.hold(&posting("accr_1"), "IFS: 401", "rotate the IFS secret", t0, retain).await.unwrap();
    let held = state(&b, "accr_1").await;
    assert_eq!(held.status, "HELD");
    assert_eq!((held.reason.as_deref(), held.fix.as_deref()), (Some("IFS: 401"), Some("rotate the IFS secret")));
    assert_eq!((held.held_since.clone(), held.held_times), (Some(t0.to_rfc3339()), Some(1)));
    assert_eq!(held.lease_until, None, "a held key has no lease");
    assert_eq!(held.updated_at, Some(t0.to_rfc3339()));

    // The redelivery claims it at once (no lease to wait for), keeping the history for the next hold.
    let t1 = t0 + Duration::seconds(30);
    assert_eq!(store.begin(&posting("accr_1"), t1 + Duration::seconds(60), t1).await.unwrap(), Begin::Started);
    let reclaimed = state(&b, "accr_1").await;
    assert_eq!(reclaimed.status, "IN_PROGRESS");
    assert_eq!(
        reclaimed.lease_until.map(|t| t.timestamp_millis()),
        Some((t1 + Duration::seconds(60)).timestamp_millis())
    );
    assert_eq!((reclaimed.held_since.clone(), reclaimed.held_times), (Some(t0.to_rfc3339()), Some(1)));
    assert!(matches!(store.begin(&posting("accr_1"), t1, t1).await.unwrap(), Begin::InProgress { .. }), "claimed now");

    // Held again: counted, first hold kept, reason and fix replaced.
    let t2 = t1 + Duration::seconds(30);
    store.hold(&posting("accr_1"), "IFS: 404 VoucherSet", "set [ifs.api]", t2, retain).await.unwrap();
    let again = state(&b, "accr_1").await;
    assert_eq!((again.status.as_str(), again.held_times), ("HELD", Some(2)));
    assert_eq!(again.held_since, Some(t0.to_rfc3339()));
    assert_eq!((again.reason.as_deref(), again.fix.as_deref()), (Some("IFS: 404 VoucherSet"), Some("set [ifs.api]")));

    // Fixed: posted, and the outcome replaces the hold.
    assert_eq!(store.begin(&posting("accr_1"), t2 + Duration::seconds(60), t2).await.unwrap(), Begin::Started);
    store.complete(&posting("accr_1"), Some("10-2026-M-4"), retain).await.unwrap();
    let done = state(&b, "accr_1").await;
    assert_eq!((done.status.as_str(), done.result.as_deref()), ("COMPLETED", Some("10-2026-M-4")));
    assert_eq!((done.reason, done.fix, done.held_since, done.held_times), (None, None, None, None));

    // A held key whose redelivery was given back (a retryable error) is simply free again.
    store.begin(&posting("accr_2"), lease, t0).await.unwrap();
    store.hold(&posting("accr_2"), "r", "f", t0, retain).await.unwrap();
    store.begin(&posting("accr_2"), lease, t1).await.unwrap();
    store.release(&posting("accr_2")).await.unwrap();
    assert_eq!(b.peek.idempotency(&record("accr_2")).await, None);
}

async fn a_hold_never_overwrites_completed_failed_or_held(b: Backend) {
    let store = b.idem.as_ref();
    let now = Utc::now();
    let retain = now + Duration::days(30);
    let lease = now + Duration::seconds(60);

    store.begin(&posting("accr_done"), lease, now).await.unwrap();
    store.complete(&posting("accr_done"), Some("10-2026-M-1"), retain).await.unwrap();
    store.hold(&posting("accr_done"), "late", "none", now, retain).await.unwrap();
    assert_eq!(
        store.begin(&posting("accr_done"), lease, now).await.unwrap(),
        Begin::Completed { result: Some("10-2026-M-1".into()) }
    );
    assert_eq!(state(&b, "accr_done").await.held_times, None);

    store.begin(&posting("accr_bad"), lease, now).await.unwrap();
    store.fail(&posting("accr_bad"), "no GL account", retain).await.unwrap();
    store.hold(&posting("accr_bad"), "late", "none", now, retain).await.unwrap();
    assert_eq!(
        store.begin(&posting("accr_bad"), lease, now).await.unwrap(),
        Begin::Failed { reason: "no GL account".into() }
    );

    // A hold with no claim behind it (the claim expired and was released meanwhile) is still recorded.
    store.hold(&posting("accr_lost"), "IFS: 401", "fix", now, retain).await.unwrap();
    let held = state(&b, "accr_lost").await;
    assert_eq!((held.status.as_str(), held.held_times), ("HELD", Some(1)));
    // Held twice without a claim in between: the first hold stands, uncounted.
    store.hold(&posting("accr_lost"), "other", "other fix", now + Duration::seconds(1), retain).await.unwrap();
    let still = state(&b, "accr_lost").await;
    assert_eq!((still.reason.as_deref(), still.held_times), (Some("IFS: 401"), Some(1)));
    // Release gives back claims only, never a hold.
    store.release(&posting("accr_lost")).await.unwrap();
    assert_eq!(state(&b, "accr_lost").await.status, "HELD");
}

async fn deliveries_records_and_expenses_have_separate_keys(b: Backend) {
    let store = b.idem.as_ref();
    let now = Utc::now();
    let lease = now + Duration::seconds(60);
    let keys = [
        IdempotencyKey::Delivery(WebhookId::parse("accr_1").unwrap()),
        posting("accr_1"),
        IdempotencyKey::Posting(Subject::Expense(ExpenseId::parse("accr_1").unwrap())),
    ];
    for key in &keys {
        assert_eq!(store.begin(key, lease, now).await.unwrap(), Begin::Started, "{key}");
    }
    store.complete(&keys[0], Some("enqueued=1"), now + Duration::days(1)).await.unwrap();
    assert!(matches!(store.begin(&keys[1], lease, now).await.unwrap(), Begin::InProgress { .. }));
    assert!(matches!(store.begin(&keys[2], lease, now).await.unwrap(), Begin::InProgress { .. }));
}

async fn leases_exclude_other_holders_until_expiry(b: Backend) {
    let store = b.leases.as_ref();
    let now = Utc::now();
    let until = now + Duration::seconds(10);
    assert!(store.try_acquire("refresh", "a", until, now).await.unwrap());
    assert!(!store.try_acquire("refresh", "b", until, now).await.unwrap());
    assert!(store.try_acquire("refresh", "a", until, now).await.unwrap(), "holder may extend");
    assert!(
        !store.try_acquire("refresh", "b", until + Duration::seconds(10), until).await.unwrap(),
        "not before it ends"
    );
    assert!(
        store.try_acquire("refresh", "b", until + Duration::seconds(10), until + Duration::seconds(1)).await.unwrap()
    );
    store.release("refresh", "a").await.unwrap();
    assert!(!store.try_acquire("refresh", "c", until, now).await.unwrap(), "a's release must not free b's lease");
    store.release("refresh", "b").await.unwrap();
    assert!(store.try_acquire("refresh", "c", until, now).await.unwrap());
    // Names are separate locks.
    assert!(store.try_acquire("other", "a", until, now).await.unwrap());
}

async fn spend_claims_keep_every_holder_so_a_crashed_post_is_still_found(b: Backend) {
    let store = b.spend.as_ref();
    let spend = ExpenseId::parse("expense_1").unwrap();
    let as_record = reference("accr_1");
    let as_expense = reference("expense_1");
    let now = Utc::now();
    let lease = now + Duration::seconds(60);

    assert_eq!(
        store.claim(&spend, &as_record, lease, now).await.unwrap(),
        SpendClaim::Claimed { holders: vec![as_record.clone()] }
    );
    match store.claim(&spend, &as_expense, lease, now).await.unwrap() {
        SpendClaim::Busy { by, until } => {
            assert_eq!((by, until.timestamp_millis()), (as_record.clone(), lease.timestamp_millis()))
        }
        other => panic!("expected busy, got {other:?}"),
    }
    // The holder itself may claim again (a redelivery to the same poster).
    assert_eq!(
        store.claim(&spend, &as_record, lease, now).await.unwrap(),
        SpendClaim::Claimed { holders: vec![as_record.clone()] }
    );
    // The record's poster died (maybe after IFS committed): once its lease is over, the expense takes over
    // and learns whose voucher to look for.
    let later = lease + Duration::seconds(1);
    assert_eq!(
        store.claim(&spend, &as_expense, later + Duration::seconds(60), later).await.unwrap(),
        SpendClaim::Claimed { holders: vec![as_record.clone(), as_expense.clone()] }
    );
    // Releasing someone else's claim does nothing; the holder's own release keeps the history.
    store.release(&spend, &as_record).await.unwrap();
    assert!(matches!(store.claim(&spend, &as_record, lease, later).await.unwrap(), SpendClaim::Busy { .. }));
    store.release(&spend, &as_expense).await.unwrap();
    assert_eq!(
        store.claim(&spend, &as_record, later + Duration::seconds(60), later).await.unwrap(),
        SpendClaim::Claimed { holders: vec![as_record.clone(), as_expense.clone()] }
    );
    store.posted(&spend, &as_record, "10-2026-M-7", now + Duration::days(30)).await.unwrap();
    assert_eq!(
        store.claim(&spend, &as_expense, later, later).await.unwrap(),
        SpendClaim::Posted { by: as_record, voucher: "10-2026-M-7".into() }
    );
}

async fn a_posted_spend_is_final_whoever_held_it(b: Backend) {
    let store = b.spend.as_ref();
    let now = Utc::now();
    let lease = now + Duration::seconds(60);
    let retain = now + Duration::days(30);
    let spend = ExpenseId::parse("expense_2").unwrap();
    let (as_record, as_expense) = (reference("accr_2"), reference("expense_2"));

    // Found in IFS under the record while the expense holds the claim: the voucher is the fact.
    store.claim(&spend, &as_expense, lease, now).await.unwrap();
    store.posted(&spend, &as_record, "10-2026-M-8", retain).await.unwrap();
    let posted = SpendClaim::Posted { by: as_record.clone(), voucher: "10-2026-M-8".into() };
    assert_eq!(store.claim(&spend, &as_expense, lease, now).await.unwrap(), posted);
    // Neither a release nor an expired lease undoes it.
    store.release(&spend, &as_expense).await.unwrap();
    store.release(&spend, &as_record).await.unwrap();
    assert_eq!(store.claim(&spend, &as_expense, lease, now + Duration::days(1)).await.unwrap(), posted);

    // Posted without ever being claimed (a crash between the voucher and the claim).
    let fresh = ExpenseId::parse("expense_3").unwrap();
    store.posted(&fresh, &as_expense, "10-2026-M-9", retain).await.unwrap();
    assert_eq!(
        store.claim(&fresh, &as_record, lease, now).await.unwrap(),
        SpendClaim::Posted { by: as_expense, voucher: "10-2026-M-9".into() }
    );
    // Releasing a spend nobody claimed is nothing.
    store.release(&ExpenseId::parse("expense_4").unwrap(), &as_record).await.unwrap();
}

async fn capabilities_are_remembered_with_their_time(b: Backend) {
    let store = b.capabilities.as_ref();
    let now = Utc::now();
    assert_eq!(store.recall("ifs.voucher_flow").await.unwrap(), None);
    let refused = Capability {
        value: "step_by_step".into(),
        reason: "$batch answered 404".into(),
        until: now + Duration::hours(6),
    };
    store.remember("ifs.voucher_flow", &refused).await.unwrap();
    let recalled = store.recall("ifs.voucher_flow").await.unwrap().expect("remembered");
    assert_eq!((recalled.value.as_str(), recalled.reason.as_str()), ("step_by_step", "$batch answered 404"));
    // Kept to the second.
    assert_eq!(recalled.until.timestamp(), refused.until.timestamp());
    assert!(recalled.until <= refused.until && refused.until - recalled.until < Duration::seconds(1));
    assert_eq!(store.recall("other").await.unwrap(), None, "names are separate");

    // Remembering again replaces it; a lapsed one is still handed back with its time, for the caller to judge.
    let lapsed = Capability { value: "batch".into(), reason: "upgraded".into(), until: now - Duration::minutes(1) };
    store.remember("ifs.voucher_flow", &lapsed).await.unwrap();
    let recalled = store.recall("ifs.voucher_flow").await.unwrap().expect("still there");
    assert_eq!((recalled.value.as_str(), recalled.until.timestamp()), ("batch", lapsed.until.timestamp()));
    assert!(recalled.until < now);
}

async fn the_audit_trail_reads_back_oldest_first(b: Backend) {
    let store = b.audit.as_ref();
    let subject = Subject::parse("accr_9").unwrap();
    let other = Subject::parse("expense_9").unwrap();
    let t0 = Utc::now();
    let mut retry = AuditEntry::new(t0, AuditOutcome::Retry);
    retry.reason = Some("IFS: 503".into());
    retry.origin = Some(Origin::Poll);
    let mut posted = AuditEntry::new(t0 + Duration::seconds(5), AuditOutcome::Posted);
    posted.voucher = Some("10-2026-M-9".into());
    posted.mapping_version = Some(3);
    posted.reported_to_brex = Some(shared::audit::BrexReport::Exported { voucher: "10-2026-M-9".into() });
    // 30 entries: more than one DynamoDB BatchWriteItem.
    let mut entries = vec![(subject.clone(), retry.clone()), (subject.clone(), posted.clone())];
    entries.extend(
        (0..28).map(|i| (other.clone(), AuditEntry::new(t0 + Duration::milliseconds(i), AuditOutcome::Skipped))),
    );
    store.append(&entries, t0 + Duration::days(30)).await.unwrap();
    assert_eq!(store.read(&subject).await.unwrap(), vec![retry.clone(), posted.clone()]);
    let others = store.read(&other).await.unwrap();
    assert_eq!(others.len(), 28);
    assert!(others.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");
    assert!(store.read(&Subject::parse("accr_none").unwrap()).await.unwrap().is_empty());

    // Order is by time, not by order of writing: an entry stamped earlier, written later, reads first.
    let mut early = AuditEntry::new(t0 - Duration::seconds(1), AuditOutcome::Held);
    early.reason = Some("IFS: 401 — fix: rotate the secret".into());
    early.reported_to_brex = Some(shared::audit::BrexReport::ReportFailed { error: "Brex: 503".into() });
    store.append(&[(subject.clone(), early.clone())], t0 + Duration::days(30)).await.unwrap();
    assert_eq!(store.read(&subject).await.unwrap(), vec![early, retry, posted]);
    // Entries of the same millisecond keep the order they were written in.
    let same: Vec<_> = [AuditOutcome::Retry, AuditOutcome::Posted, AuditOutcome::AlreadyPosted]
        .into_iter()
        .map(|outcome| (Subject::parse("accr_same").unwrap(), AuditEntry::new(t0, outcome)))
        .collect();
    store.append(&same, t0 + Duration::days(30)).await.unwrap();
    let outcomes: Vec<_> =
        store.read(&Subject::parse("accr_same").unwrap()).await.unwrap().into_iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, [AuditOutcome::Retry, AuditOutcome::Posted, AuditOutcome::AlreadyPosted]);
}

async fn the_mapping_document_is_versioned_and_served_parsed(b: Backend) {
    let peek = b.peek.as_ref();
    assert!(peek.load_mapping().await.unwrap().is_none());
    assert!(matches!(b.mapping.mapping().await, Err(MappingLoadError::Missing)));
    let v1 = sims::pipeline::EXAMPLE_MAPPING;
    assert_eq!(peek.store_mapping(v1, None).await.unwrap(), 1);
    let twice = peek.store_mapping("x", None).await.unwrap_err();
    assert!(twice.is_retryable(), "creating twice must fail, retryably: {twice}");
    let loaded = b.mapping.mapping().await.expect("a valid document");
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.document.company, CompanyCode::parse("10").unwrap());

    assert_eq!(peek.store_mapping("[ifs]\ncompany = \"20\"\n", Some(1)).await.unwrap(), 2);
    let stale = peek.store_mapping("stale", Some(1)).await.unwrap_err();
    assert_eq!(stale.disposition(), Disposition::Retryable, "stale version must fail: {stale}");
    assert!(peek.store_mapping("ahead", Some(5)).await.is_err(), "a version that never was must fail");
    let stored = peek.load_mapping().await.unwrap().unwrap();
    assert_eq!((stored.version, stored.document.as_str()), (2, "[ifs]\ncompany = \"20\"\n"));
    assert!(!stored.updated_at.is_empty());
    // The document in force is invalid: the poster is told which version, and holds its records.
    match b.mapping.mapping().await {
        Err(e @ MappingLoadError::Invalid { version: 2, .. }) => assert!(e.is_held(), "{e}"),
        other => panic!("expected version 2 to be invalid, got {:?}", other.map(|m| m.version)),
    }
}

async fn poll_positions_round_trip_per_feed(b: Backend) {
    let store = b.positions.as_ref();
    let card = Feed::Records(SourceType::Card);
    let bill = Feed::Records(SourceType::Bill);
    for feed in [card, bill, Feed::Expenses] {
        assert_eq!(store.load(feed).await.unwrap(), PollState::default());
    }
    let now = Utc::now();
    let micros = |t: DateTime<Utc>| DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap();
    let paging = PollState {
        watermark: Some(now - Duration::hours(1)),
        paging: Some(Paging { query_from: now - Duration::days(1), cursor: "c/1+ =".into(), max_seen: Some(now) }),
        completed_at: Some(now - Duration::hours(2)),
    };
    store.save(card, &paging).await.unwrap();
    // Kept to the microsecond.
    let expected = PollState {
        watermark: paging.watermark.map(micros),
        paging: Some(Paging {
            query_from: micros(now - Duration::days(1)),
            cursor: "c/1+ =".into(),
            max_seen: Some(micros(now)),
        }),
        completed_at: paging.completed_at.map(micros),
    };
    assert_eq!(store.load(card).await.unwrap(), expected);
    assert_eq!(store.load(bill).await.unwrap(), PollState::default(), "feeds are separate");

    // Paging done: saving without it drops it.
    let done = PollState { watermark: Some(micros(now)), paging: None, completed_at: Some(micros(now)) };
    store.save(card, &done).await.unwrap();
    assert_eq!(store.load(card).await.unwrap(), done);
    // A paging without max_seen yet (the first page was empty).
    let started = PollState {
        watermark: None,
        paging: Some(Paging { query_from: micros(now), cursor: "2".into(), max_seen: None }),
        completed_at: None,
    };
    store.save(Feed::Expenses, &started).await.unwrap();
    assert_eq!(store.load(Feed::Expenses).await.unwrap(), started);
}

async fn settled_is_done_or_claimed_with_an_unexpired_lease(b: Backend) {
    let idem = b.idem.as_ref();
    let now = Utc::now();
    let lease = now + Duration::seconds(60);
    let retain = now + Duration::days(30);
    let expense_done = IdempotencyKey::Posting(Subject::parse("expense_done").unwrap());
    idem.begin(&posting("accr_done"), lease, now).await.unwrap();
    idem.complete(&posting("accr_done"), Some("v1"), retain).await.unwrap();
    idem.begin(&posting("accr_bad"), lease, now).await.unwrap();
    idem.fail(&posting("accr_bad"), "no GL", retain).await.unwrap();
    idem.begin(&posting("accr_busy"), lease, now).await.unwrap();
    idem.begin(&posting("accr_stale"), now - Duration::seconds(1), now - Duration::seconds(61)).await.unwrap();
    idem.begin(&posting("accr_held"), lease, now).await.unwrap();
    idem.hold(&posting("accr_held"), "IFS: 401", "fix", now, retain).await.unwrap();
    idem.begin(&expense_done, lease, now).await.unwrap();
    idem.complete(&expense_done, Some("v2"), retain).await.unwrap();
    // A webhook delivery's key is no posting.
    idem.begin(&IdempotencyKey::Delivery(WebhookId::parse("accr_delivered").unwrap()), lease, now).await.unwrap();
    // 150 unknown ids on top: more than one DynamoDB BatchGetItem.
    let mut ids: Vec<_> =
        ["accr_done", "accr_bad", "accr_busy", "accr_stale", "accr_held", "accr_new", "accr_delivered"]
            .map(record)
            .to_vec();
    ids.push(Subject::parse("expense_done").unwrap());
    ids.push(Subject::Expense(ExpenseId::parse("accr_done").unwrap()));
    ids.extend((0..150).map(|i| record(&format!("accr_x{i}"))));
    let settled = b.enqueue.settled(&ids, now).await.unwrap();
    let mut names: Vec<_> = settled.iter().map(|i| i.to_string()).collect();
    names.sort();
    assert_eq!(names, ["accr_bad", "accr_busy", "accr_done", "expense_done"], "expired claims and holds need work");
    assert!(!settled.contains(&Subject::Expense(ExpenseId::parse("accr_done").unwrap())), "kinds are separate");
    // The busy claim's lease runs out: it needs work again.
    let later = b.enqueue.settled(&ids, lease + Duration::seconds(1)).await.unwrap();
    assert!(!later.contains(&record("accr_busy")) && later.contains(&record("accr_done")));
    assert!(b.enqueue.settled(&[], now).await.unwrap().is_empty());
}

async fn queued_marks_block_until_they_expire_or_are_dropped(b: Backend) {
    let ledger = b.enqueue.as_ref();
    let now = Utc::now();
    let until = now + Duration::hours(1);
    let fresh = [record("accr_new"), record("accr_stale")];
    let mut marked: HashSet<_> = ledger.mark_queued(&fresh, until, now).await.unwrap().into_iter().collect();
    assert_eq!(marked, fresh.iter().cloned().collect());
    assert_eq!(b.peek.queued_until(&fresh[0]).await.map(|t| t.timestamp_millis()), Some(until.timestamp_millis()));
    assert!(ledger.mark_queued(&fresh, until, now).await.unwrap().is_empty(), "queued already");
    assert!(ledger.mark_queued(&fresh, until, until).await.unwrap().is_empty(), "still queued at the very end");
    // After the mark's time (a record the poster skipped), it can be queued again.
    let later = until + Duration::seconds(1);
    let again = later + Duration::hours(1);
    assert_eq!(ledger.mark_queued(&fresh[..1], again, later).await.unwrap(), fresh[..1].to_vec());
    assert_eq!(b.peek.queued_until(&fresh[0]).await.map(|t| t.timestamp_millis()), Some(again.timestamp_millis()));
    ledger.unmark_queued(&fresh).await.unwrap();
    assert_eq!(b.peek.queued_until(&fresh[1]).await, None);
    marked = ledger.mark_queued(&fresh, until, now).await.unwrap().into_iter().collect();
    assert_eq!(marked.len(), 2, "unmarked");
    // Marks and idempotency records are separate items: a mark settles nothing.
    assert!(ledger.settled(&fresh, now).await.unwrap().is_empty());
    ledger.unmark_queued(&[record("accr_never_marked")]).await.unwrap();
}

async fn the_latest_validation_report_is_kept(b: Backend) {
    let store = b.reports.as_ref();
    assert_eq!(store.load_latest().await.unwrap(), None);
    let today = chrono::NaiveDate::from_ymd_opt(2026, 6, 11).unwrap();
    let report = |version: i64, at: DateTime<Utc>| ValidationReport {
        mapping_version: Some(version),
        checked_at: Some(at),
        today,
        companies: vec![CompanySummary {
            company: CompanyCode::parse("10").unwrap(),
            accounts: 10,
            code_part_values: 7,
            current_period: Some("2026/06 open".into()),
        }],
        findings: Vec::new(),
    };
    let t0 = DateTime::parse_from_rfc3339("2026-06-11T06:00:00Z").unwrap().with_timezone(&Utc);
    store.save(&report(1, t0)).await.unwrap();
    assert_eq!(store.load_latest().await.unwrap(), Some(report(1, t0)));
    store.save(&report(2, t0 + Duration::hours(1))).await.unwrap();
    assert_eq!(store.load_latest().await.unwrap(), Some(report(2, t0 + Duration::hours(1))));
    // An older run saved late (a slow refresh) still becomes the latest: the last save wins.
    store.save(&report(1, t0 + Duration::minutes(30))).await.unwrap();
    assert_eq!(store.load_latest().await.unwrap().and_then(|r| r.mapping_version), Some(1));
}

async fn secrets_round_trip(b: Backend) {
    let store = b.secrets.as_ref();
    assert_eq!(store.get_secret(&b.secret_id).await.unwrap().expose(), SECRET);
    store.put_secret(&b.secret_id, &Secret::new(r#"{"token":"bxt_rotated"}"#)).await.unwrap();
    assert_eq!(store.get_secret(&b.secret_id).await.unwrap().expose(), r#"{"token":"bxt_rotated"}"#);
    let missing = store.get_secret("no-such-secret").await.unwrap_err();
    assert!(!missing.is_retryable(), "unknown secret is permanent: {missing}");
    let unknown = store.put_secret("no-such-secret", &Secret::new("x")).await.unwrap_err();
    assert!(!unknown.is_retryable(), "a secret must exist before a value is put: {unknown}");
}

async fn the_queue_receives_every_item(b: Backend) {
    let ids: Vec<_> = (0..1234).map(|i| AccountingRecordId::parse(&format!("accr_{i}")).unwrap()).collect();
    let now = Utc::now();
    let mut items = WorkItem::accounting_records(&ids, &Origin::Poll, now);
    assert_eq!(items.len(), 25);
    let expense = ExpenseId::parse("expense_1").unwrap();
    let origin = Origin::Webhook { webhook_id: WebhookId::parse("msg_1").unwrap() };
    items.extend(WorkItem::expenses(std::slice::from_ref(&expense), &origin, now));
    // More than one SQS SendMessageBatch (10 entries each).
    b.queue.enqueue(&items).await.unwrap();
    b.queue.enqueue(&[]).await.unwrap();
    let mut received = b.peek.received().await;
    let key = |item: &WorkItem| serde_json::to_string(item).unwrap();
    received.sort_by_key(key);
    items.sort_by_key(key);
    assert_eq!(received, items, "every item arrives whole, once");
}

async fn attached_receipts_are_kept_per_voucher_once_per_file(b: Backend) {
    let at = |s: i64| DateTime::from_timestamp(1_780_000_000 + s, 0).unwrap();
    let entry = |sha: &str, receipt: &str, when: i64| AttachedReceipt {
        sha256: sha.into(),
        receipt_id: receipt.into(),
        name: format!("brex-{receipt}.pdf"),
        size: 42,
        subject: "accr_1".into(),
        attached_at: at(when),
    };
    let retain = at(0) + Duration::days(400);
    assert!(b.attached.attached("10-2026-M-1").await.unwrap().is_empty());
    b.attached.record("10-2026-M-1", &entry("bb", "rcpt_2", 2), retain).await.unwrap();
    b.attached.record("10-2026-M-1", &entry("aa", "rcpt_1", 1), retain).await.unwrap();
    b.attached.record("10-2026-M-2", &entry("aa", "rcpt_9", 3), retain).await.unwrap();
    // The same file recorded again (a retry after a lost answer) stays one entry.
    b.attached.record("10-2026-M-1", &entry("aa", "rcpt_1", 1), retain).await.unwrap();
    let one = b.attached.attached("10-2026-M-1").await.unwrap();
    assert_eq!(one, vec![entry("aa", "rcpt_1", 1), entry("bb", "rcpt_2", 2)], "oldest first, once per hash");
    assert_eq!(b.attached.attached("10-2026-M-2").await.unwrap(), vec![entry("aa", "rcpt_9", 3)]);
    assert!(b.attached.attached("10-2026-M-10").await.unwrap().is_empty(), "no prefix match across vouchers");
}

fn posted_voucher(version: i64, voucher: &str, amount: &str) -> PostedVersion {
    let document = shared::mapping::MappingDocument::parse(include_str!("../../infra/mapping.example.toml")).unwrap();
    let record: shared::brex::model::AccountingRecord = serde_json::from_value(serde_json::json!({
        "id": "accr_1", "amount": {"amount": amount, "currency": "USD"}, "type": "CARD_EXPENSE_POST",
        "review_status": "READY_FOR_EXPORT", "source_type": "CARD", "erp_posting_date": "2026-06-11T00:00:00Z",
        "updated_at": "2026-06-11T09:09:10Z", "version": version, "vendor": {"name": "Delta"}, "memo": "Flight",
        "line_items": [
            {"id": "l1", "type": "DEBIT", "amount": {"amount": amount, "currency": "USD"}, "accounting_field_values": [
                {"brex_field_id": "extended_field_gl_account", "remote_field_id": "GL_ACCOUNT",
                 "brex_field_value_id": "efo_gl", "field_name": "GL Account", "field_value_name": "6500 Travel",
                 "type": "IDENTIFIER"}]},
            {"id": "l2", "type": "CREDIT", "amount": {"amount": amount, "currency": "USD"}, "accounting_field_values": []}
        ]
    }))
    .unwrap();
    let proposal = shared::mapping::map_record(&document, &record).unwrap();
    PostedVersion { version, voucher: voucher.into(), proposal }
}

async fn the_posted_voucher_is_kept_beside_the_item_and_never_rolled_back(b: Backend) {
    let store = b.idem.as_ref();
    let now = Utc::now();
    let retain = now + Duration::days(30);
    assert_eq!(store.posted_voucher(&record("accr_1")).await.unwrap(), None, "items without one read as before");
    store.begin(&posting("accr_1"), now + Duration::seconds(60), now).await.unwrap();
    store.complete(&posting("accr_1"), Some("10-2026-M-1"), retain).await.unwrap();
    let first = posted_voucher(3, "10-2026-M-1", "171.75");
    store.record_posted(&record("accr_1"), &first, retain).await.unwrap();
    let read = store.posted_voucher(&record("accr_1")).await.unwrap().unwrap();
    assert_eq!(read, first, "version, voucher and the whole proposal round-trip");
    assert_eq!(read.total(), "171.75 USD");
    // Beside the idempotency item, not over it.
    let state = state(&b, "accr_1").await;
    assert_eq!((state.status.as_str(), state.result.as_deref()), ("COMPLETED", Some("10-2026-M-1")));
    assert_eq!(
        store.begin(&posting("accr_1"), now + Duration::seconds(60), now).await.unwrap(),
        Begin::Completed { result: Some("10-2026-M-1".into()) }
    );

    let revised = posted_voucher(5, "10-2026-M-3", "200.00");
    store.record_posted(&record("accr_1"), &revised, retain).await.unwrap();
    store.record_posted(&record("accr_1"), &posted_voucher(4, "10-2026-M-2", "180.00"), retain).await.unwrap();
    assert_eq!(store.posted_voucher(&record("accr_1")).await.unwrap(), Some(revised.clone()), "a late writer loses");
    store.record_posted(&record("accr_1"), &revised, retain).await.unwrap();
    assert_eq!(store.posted_voucher(&record("accr_1")).await.unwrap(), Some(revised), "the same write again is fine");
    assert_eq!(store.posted_voucher(&Subject::Expense(ExpenseId::parse("accr_1").unwrap())).await.unwrap(), None);
}

async fn a_revision_claim_is_its_own_key(b: Backend) {
    let store = b.idem.as_ref();
    let now = Utc::now();
    let lease = now + Duration::seconds(60);
    store.begin(&posting("accr_1"), lease, now).await.unwrap();
    store.complete(&posting("accr_1"), Some("10-2026-M-1"), now + Duration::days(1)).await.unwrap();
    let v4 = IdempotencyKey::Revision(record("accr_1"), 4);
    let v5 = IdempotencyKey::Revision(record("accr_1"), 5);
    assert_eq!(store.begin(&v4, lease, now).await.unwrap(), Begin::Started);
    assert!(matches!(store.begin(&v4, lease, now).await.unwrap(), Begin::InProgress { .. }));
    assert_eq!(store.begin(&v5, lease, now).await.unwrap(), Begin::Started, "each version its own claim");
    store.complete(&v4, Some("10-2026-M-2"), now + Duration::days(1)).await.unwrap();
    assert_eq!(store.begin(&v4, lease, now).await.unwrap(), Begin::Completed { result: Some("10-2026-M-2".into()) });
    store.release(&v5).await.unwrap();
    assert_eq!(store.begin(&v5, lease, now).await.unwrap(), Begin::Started);
    // The posting's own item is untouched, and the poller still sees the record as done.
    let state = state(&b, "accr_1").await;
    assert_eq!((state.status.as_str(), state.result.as_deref()), ("COMPLETED", Some("10-2026-M-1")));
    let settled = b.enqueue.settled(&[record("accr_1")], now).await.unwrap();
    assert!(settled.contains(&record("accr_1")));
}
