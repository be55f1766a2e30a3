use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use super::*;
use crate::brex::Expense;
use crate::brex::model::AccountingRecord;
use crate::brex::{ExpenseQueryPage, RecordQueryPage};
use crate::domain::AccountingRecordId;
use crate::memory::{ManualClock, MemoryPollState, MemoryQueue, MemoryStore};
use crate::ports::{IdempotencyKey, IdempotencyStore};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn record(id: &str, source: &str, updated_at: DateTime<Utc>) -> AccountingRecord {
    serde_json::from_value(serde_json::json!({
        "id": id, "amount": {"amount": 1, "currency": "USD"}, "type": "CARD_EXPENSE_POST",
        "review_status": "READY_FOR_EXPORT", "source_type": source,
        "posted_at": "2026-01-01T00:00:00Z", "updated_at": updated_at.to_rfc3339(), "version": 1, "line_items": []
    }))
    .unwrap()
}

/// Brex's filtered query over an in-memory set: ascending by (updated_at, id), cursor = offset.
fn expense(id: &str, status: &str, updated_at: DateTime<Utc>) -> Expense {
    serde_json::from_value(serde_json::json!({
        "id": id, "status": status, "expense_type": "CARD", "updated_at": updated_at.to_rfc3339(),
        "billing_amount": {"amount": 1234, "currency": "USD"}
    }))
    .unwrap()
}

#[derive(Default)]
struct FakeBrex {
    records: Mutex<Vec<AccountingRecord>>,
    queries: Mutex<Vec<RecordQuery>>,
    expenses: Mutex<Vec<Expense>>,
    expense_queries: Mutex<Vec<ExpenseQuery>>,
}

#[async_trait]
impl BrexPages for FakeBrex {
    async fn expense_page(&self, query: &ExpenseQuery) -> Result<ExpenseQueryPage, BrexError> {
        self.expense_queries.lock().unwrap().push(query.clone());
        let mut matching: Vec<Expense> = self
            .expenses
            .lock()
            .unwrap()
            .iter()
            .filter(|e| query.statuses.contains(&e.status) && e.updated_at >= query.updated_from)
            .cloned()
            .collect();
        matching.sort_by(|a, b| (a.updated_at, a.id.as_str()).cmp(&(b.updated_at, b.id.as_str())));
        let start: usize = query.cursor.as_deref().map_or(0, |c| c.parse().unwrap());
        let end = (start + query.limit as usize).min(matching.len());
        Ok(ExpenseQueryPage {
            expenses: matching[start..end].to_vec(),
            malformed: Vec::new(),
            next_cursor: (end < matching.len()).then(|| end.to_string()),
        })
    }

    async fn record_page(&self, query: &RecordQuery) -> Result<RecordQueryPage, BrexError> {
        self.queries.lock().unwrap().push(query.clone());
        let mut matching: Vec<AccountingRecord> = self
            .records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.source_type == query.source_type && r.updated_at > query.updated_after)
            .cloned()
            .collect();
        matching.sort_by(|a, b| (a.updated_at, a.id.as_str()).cmp(&(b.updated_at, b.id.as_str())));
        let start: usize = query.cursor.as_deref().map_or(0, |c| c.parse().unwrap());
        let end = (start + query.limit as usize).min(matching.len());
        let has_next_page = end < matching.len();
        Ok(RecordQueryPage {
            records: matching[start..end].to_vec(),
            malformed: Vec::new(),
            next_cursor: has_next_page.then(|| end.to_string()),
            has_next_page,
        })
    }
}

/// The in-memory queue, and SQS going down on demand.
#[derive(Default)]
struct FakeQueue {
    queue: MemoryQueue,
    fail: AtomicBool,
}

impl FakeQueue {
    fn ids(&self) -> Vec<String> {
        self.queue
            .sent()
            .iter()
            .flat_map(|item| -> Vec<String> {
                match item {
                    WorkItem::AccountingRecords { ids, .. } => ids.iter().map(|i| i.to_string()).collect(),
                    WorkItem::Expenses { ids, .. } => ids.iter().map(|i| i.to_string()).collect(),
                }
            })
            .collect()
    }
}

#[async_trait]
impl WorkQueue for FakeQueue {
    async fn enqueue(&self, items: &[WorkItem]) -> Result<(), AwsError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(AwsError::new("sqs", "SendMessageBatch", "down", crate::error::Disposition::Retryable));
        }
        self.queue.enqueue(items).await
    }
}

const CARD: &str = "accounting_records:CARD";
const CARD_FEED: Feed = Feed::Records(SourceType::Card);
const NOW: &str = "2026-06-11T12:00:00Z";

struct World {
    brex: Arc<FakeBrex>,
    /// The poster's side of the table: what it recorded settles records for the poller.
    store: MemoryStore,
    /// Positions and queued marks, in the same table.
    state: Arc<MemoryPollState>,
    queue: Arc<FakeQueue>,
    poller: Poller,
}

fn world(records: Vec<AccountingRecord>, options: PollerOptions) -> World {
    let brex = Arc::new(FakeBrex { records: Mutex::new(records), ..FakeBrex::default() });
    let store = MemoryStore::new();
    let state = Arc::new(store.poll_state());
    let queue = Arc::new(FakeQueue::default());
    let poller = Poller {
        brex: brex.clone(),
        state: state.clone(),
        ledger: state.clone(),
        queue: queue.clone(),
        clock: Arc::new(ManualClock::new(t(NOW))),
        sources: vec![PollSource::AccountingRecords],
        reference: ReferenceCheck::Off,
        metrics: crate::metrics::Metrics::new("Test", "poller"),
        options,
    };
    World { brex, store, state, queue, poller }
}

fn far() -> DateTime<Utc> {
    t(NOW) + Duration::hours(1)
}

fn cards(n: usize) -> Vec<AccountingRecord> {
    (0..n).map(|i| record(&format!("accr_c{i:04}"), "CARD", t(NOW) - Duration::minutes(600 - i as i64))).collect()
}

#[test]
fn query_starts_from_paging_else_watermark_minus_overlap_else_lookback() {
    let options = PollerOptions::default();
    let now = t(NOW);
    assert_eq!(query_from(&PollState::default(), now, &options), now - Duration::days(90));
    let watermark = t("2026-06-11T10:00:00Z");
    let settled = PollState { watermark: Some(watermark), ..PollState::default() };
    assert_eq!(query_from(&settled, now, &options), t("2026-06-11T09:50:00Z"));
    let paging = PollState {
        watermark: Some(watermark),
        paging: Some(Paging { query_from: t("2026-06-01T00:00:00Z"), cursor: "c".into(), max_seen: None }),
        completed_at: None,
    };
    assert_eq!(query_from(&paging, now, &options), t("2026-06-01T00:00:00Z"), "a resumed paging keeps its query");
}

#[test]
fn watermark_moves_only_when_paging_completes_and_never_backwards() {
    let from = t("2026-06-01T00:00:00Z");
    let now = t(NOW);
    let old = PollState { watermark: Some(t("2026-06-05T00:00:00Z")), ..PollState::default() };
    let mid = after_page(&old, from, Some(t("2026-06-09T00:00:00Z")), Some("c1".into()), now);
    assert_eq!((mid.watermark, mid.completed_at), (old.watermark, None), "unchanged mid-paging");
    assert_eq!(
        mid.paging,
        Some(Paging { query_from: from, cursor: "c1".into(), max_seen: Some(t("2026-06-09T00:00:00Z")) })
    );
    // The last page is older than an earlier one: the max over the whole paging wins.
    let done = after_page(&mid, from, Some(t("2026-06-08T00:00:00Z")), None, now);
    assert_eq!(done, PollState { watermark: Some(t("2026-06-09T00:00:00Z")), paging: None, completed_at: Some(now) });
    // Nothing newer than the old watermark: it stays.
    let empty = after_page(&old, from, None, None, now);
    assert_eq!(empty.watermark, old.watermark);
    let older = after_page(&old, from, Some(t("2026-06-02T00:00:00Z")), None, now);
    assert_eq!(older.watermark, old.watermark);
}

#[tokio::test]
async fn pages_every_source_enqueues_once_and_sets_watermarks() {
    let mut records = cards(250);
    records.push(record("accr_r1", "REIMBURSEMENT", t("2026-06-11T11:00:00Z")));
    records.push(record("accr_b1", "BILL", t("2026-06-11T11:30:00Z")));
    let w = world(records, PollerOptions::default());
    let report = w.poller.run(far()).await;
    assert!(report.is_complete() && !report.has_errors(), "{report:?}");
    assert_eq!(report.sources.iter().map(|s| s.pages).collect::<Vec<_>>(), vec![3, 1, 1]);
    assert_eq!(report.enqueued(), 252);
    let mut ids = w.queue.ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 252, "no id enqueued twice");

    let queries = w.brex.queries.lock().unwrap().clone();
    let card = queries.iter().find(|q| q.source_type == Some(SourceType::Card)).unwrap();
    assert_eq!(card.review_status, Some(ReviewStatus::ReadyForExport));
    assert_eq!(card.limit, 100);
    let bill = queries.iter().find(|q| q.source_type == Some(SourceType::Bill)).unwrap();
    assert_eq!(bill.review_status, None, "Brex rejects review_status for bills");

    let state = w.state.positions();
    assert_eq!(state[&CARD_FEED].watermark, Some(t(NOW) - Duration::minutes(600 - 249)));
    assert_eq!(state[&Feed::Records(SourceType::Bill)].watermark, Some(t("2026-06-11T11:30:00Z")));
    assert_eq!(state[&Feed::Records(SourceType::Bill)].paging, None);

    // Again: the overlap re-reads the newest cards, the queued marks keep them off the queue.
    let again = w.poller.run(far()).await;
    assert_eq!(again.enqueued(), 0);
    assert!(again.source(CARD).unwrap().skipped > 0, "the overlap window was re-read: {again:?}");
}

#[tokio::test]
async fn finished_or_claimed_records_are_not_enqueued() {
    let w = world(cards(3), PollerOptions::default());
    // The poster has posted it.
    let done = IdempotencyKey::Posting(Subject::Record(AccountingRecordId::parse("accr_c0001").unwrap()));
    w.store.begin(&done, far(), t(NOW)).await.unwrap();
    w.store.complete(&done, Some("10-2026-M-1"), far()).await.unwrap();
    let report = w.poller.run(far()).await;
    let card = report.source(CARD).unwrap();
    assert_eq!((card.enqueued, card.skipped), (2, 1));
    assert!(!w.queue.ids().contains(&"accr_c0001".to_owned()));
}

/// Refuses every cursor, like Brex with an expired one.
struct NoCursors(FakeBrex);

#[async_trait]
impl BrexPages for NoCursors {
    async fn record_page(&self, query: &RecordQuery) -> Result<RecordQueryPage, BrexError> {
        if query.cursor.is_some() {
            return Err(BrexError::InvalidRequest("Invalid cursor".into()));
        }
        self.0.record_page(query).await
    }
    async fn expense_page(&self, query: &ExpenseQuery) -> Result<ExpenseQueryPage, BrexError> {
        self.0.expense_page(query).await
    }
}

#[tokio::test]
async fn a_refused_cursor_restarts_the_paging_instead_of_failing_forever() {
    let w = world(Vec::new(), PollerOptions::default());
    let stale = PollState {
        watermark: Some(t("2026-06-11T01:00:00Z")),
        paging: Some(Paging { query_from: t("2026-06-01T00:00:00Z"), cursor: "old".into(), max_seen: None }),
        completed_at: None,
    };
    w.state.save(CARD_FEED, &stale).await.unwrap();
    let mut poller = w.poller;
    poller.brex = Arc::new(NoCursors(FakeBrex { records: Mutex::new(cards(5)), ..FakeBrex::default() }));
    let report = poller.run(far()).await;
    let card = report.source(CARD).unwrap();
    assert_eq!((card.outcome, card.enqueued), (Outcome::Complete, 5), "{report:?}");
    assert_eq!(w.state.positions()[&CARD_FEED].paging, None);
}

/// Serves one fixed page.
struct OnePage(RecordQueryPage);

#[async_trait]
impl BrexPages for OnePage {
    async fn record_page(&self, _query: &RecordQuery) -> Result<RecordQueryPage, BrexError> {
        Ok(self.0.clone())
    }
    async fn expense_page(&self, _query: &ExpenseQuery) -> Result<ExpenseQueryPage, BrexError> {
        Ok(ExpenseQueryPage::default())
    }
}

#[tokio::test]
async fn unreadable_ready_records_are_enqueued_for_the_poster_to_fail_but_bills_are_not() {
    let bad = |id: Option<&str>| crate::brex::MalformedRecord {
        id: id.map(|i| AccountingRecordId::parse(i).unwrap()),
        error: "amount missing".into(),
    };
    let page = RecordQueryPage {
        records: cards(1),
        malformed: vec![bad(Some("accr_bad")), bad(None)],
        next_cursor: None,
        has_next_page: false,
    };
    let mut w = world(Vec::new(), PollerOptions::default());
    w.poller.brex = Arc::new(OnePage(page));
    let report = w.poller.run(far()).await;
    let card = report.source(CARD).unwrap();
    assert_eq!((card.seen, card.malformed, card.enqueued, card.skipped), (2, 2, 2, 0), "seen: the record and accr_bad");
    let bill = report.source("accounting_records:BILL").unwrap();
    // Only the readable record (queued by the card query already) is considered: accr_bad is not.
    assert_eq!((bill.malformed, bill.enqueued, bill.skipped), (2, 0, 1), "an unreadable bill may not be ready");
    assert!(w.queue.ids().contains(&"accr_bad".to_owned()));
}

#[tokio::test]
async fn a_page_budget_pauses_and_the_next_run_resumes_without_loss_or_repeats() {
    let options = PollerOptions { max_pages_per_run: Some(1), ..PollerOptions::default() };
    let w = world(cards(250), options);
    let first = w.poller.run(far()).await;
    assert_eq!(first.source(CARD).unwrap().outcome, Outcome::Paused);
    assert_eq!(first.source("accounting_records:BILL").unwrap().pages, 0, "the budget is spent: later sources wait");
    assert_eq!(w.queue.ids().len(), 100);
    let saved = w.state.positions()[&CARD_FEED].clone();
    assert_eq!(saved.watermark, None);
    assert_eq!(saved.paging.as_ref().map(|p| p.cursor.as_str()), Some("100"));

    // One page a run: card pages 2 and 3, then the sources never polled go before cards come round again.
    let mut order = Vec::new();
    for _ in 0..4 {
        let report = w.poller.run(far()).await;
        order.extend(report.sources.iter().filter(|s| s.pages > 0).map(|s| s.source.clone()));
    }
    assert_eq!(order, [CARD, CARD, "accounting_records:REIMBURSEMENT", "accounting_records:BILL"]);
    let states = w.state.positions();
    assert!(states.values().all(|s| s.paging.is_none() && s.completed_at.is_some()), "{states:?}");
    let ids = w.queue.ids();
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (250, 250));
    // Every page of the card paging was asked with the same updated_after.
    let queries = w.brex.queries.lock().unwrap().clone();
    let card_froms: HashSet<_> =
        queries.iter().filter(|q| q.source_type == Some(SourceType::Card)).map(|q| q.updated_after).collect();
    assert_eq!(card_froms.len(), 1);
}

#[tokio::test]
async fn no_page_is_started_inside_the_stop_margin() {
    let w = world(cards(5), PollerOptions::default());
    let report = w.poller.run(t(NOW) + Duration::seconds(10)).await;
    assert!(report.sources.iter().all(|s| s.outcome == Outcome::Paused && s.pages == 0));
    assert!(w.brex.queries.lock().unwrap().is_empty());
    assert!(w.queue.ids().is_empty());
}

#[tokio::test]
async fn a_failed_enqueue_drops_its_marks_and_keeps_the_position() {
    let w = world(cards(5), PollerOptions::default());
    w.queue.fail.store(true, Ordering::SeqCst);
    let report = w.poller.run(far()).await;
    assert_eq!(report.source(CARD).unwrap().outcome, Outcome::Failed);
    assert!(report.has_errors());
    assert!(w.state.queued_marks().is_empty(), "marks dropped");
    assert_eq!(w.state.position(CARD_FEED), None, "position not advanced");
    w.queue.fail.store(false, Ordering::SeqCst);
    let retry = w.poller.run(far()).await;
    assert_eq!(retry.source(CARD).unwrap().enqueued, 5);
}

#[tokio::test]
async fn approved_and_settled_expenses_are_polled_into_expense_messages() {
    let mut w = world(Vec::new(), PollerOptions { page_size: 2, ..PollerOptions::default() });
    w.poller.sources = vec![PollSource::Expenses];
    *w.brex.expenses.lock().unwrap() = vec![
        expense("expense_1", "APPROVED", t("2026-06-11T10:00:00Z")),
        expense("expense_2", "SETTLED", t("2026-06-11T10:05:00Z")),
        expense("expense_3", "VOID", t("2026-06-11T10:06:00Z")),
        expense("expense_4", "APPROVED", t("2026-06-11T10:07:00Z")),
    ];
    let report = w.poller.run(far()).await;
    let feed = report.source("expenses").unwrap();
    assert_eq!((feed.outcome, feed.pages, feed.enqueued), (Outcome::Complete, 2, 3), "{report:?}");
    let mut ids = w.queue.ids();
    ids.sort();
    assert_eq!(ids, ["expense_1", "expense_2", "expense_4"]);
    assert!(w.queue.queue.sent().iter().all(|i| matches!(i, WorkItem::Expenses { .. })));
    let queries = w.brex.expense_queries.lock().unwrap().clone();
    assert_eq!(queries[0].statuses, ["APPROVED", "SETTLED"], "SETTLED too: approved-then-settled is not missed");
    assert_eq!(queries[0].updated_from, t(NOW) - Duration::days(90));
    assert_eq!(w.state.positions()[&Feed::Expenses].watermark, Some(t("2026-06-11T10:07:00Z")));

    // An expense approved after the watermark is picked up; the overlap re-reads the others without a repeat.
    w.brex.expenses.lock().unwrap().push(expense("expense_5", "APPROVED", t("2026-06-11T10:09:00Z")));
    let again = w.poller.run(far()).await;
    assert_eq!(again.enqueued(), 1);
    assert_eq!(w.brex.expense_queries.lock().unwrap().last().unwrap().updated_from, t("2026-06-11T09:57:00Z"));
}

#[tokio::test]
async fn an_unavailable_reference_refresh_fails_the_run_but_not_the_polling() {
    let mut w = world(cards(3), PollerOptions::default());
    w.poller.reference = ReferenceCheck::Unavailable("the IFS secret is unreadable".into());
    let report = w.poller.run(far()).await;
    assert_eq!(report.source(CARD).unwrap().enqueued, 3, "polling goes on");
    let reference = report.reference.as_ref().unwrap();
    assert_eq!(
        (reference.outcome, reference.error.as_deref()),
        (Outcome::Failed, Some("the IFS secret is unreadable"))
    );
    assert!(report.has_errors(), "the schedule's error metric must show it");
    // Not wired: no summary, no error.
    w.poller.reference = ReferenceCheck::Off;
    assert_eq!(w.poller.run(far()).await.reference, None);
}
