//! The poller: the hourly fallback to webhooks, and the only way approved expenses arrive (they have no
//! webhook). For each feed — accounting records per source (CARD, REIMBURSEMENT, BILL) and approved
//! expenses — it pages Brex's filtered query from a per-feed watermark (minus an overlap window, so late
//! updates are never missed), and enqueues what the poster has neither finished nor is holding, and that no
//! earlier run queued recently.
//!
//! Progress is saved after every page (cursor + the `updated_after` the paging started with), so a run cut
//! off by its deadline, or a crash, resumes where it stopped; a page read twice is harmless because
//! enqueueing is deduplicated. When a source's paging completes, its watermark moves to the newest
//! `updated_at` seen.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::brex::expense::{MAX_EXPENSE_PAGE, POSTABLE_STATUSES};
use crate::brex::model::{ReviewStatus, SourceType};
use crate::brex::{BrexError, ExpenseQuery, RecordQuery};
use crate::config::PollSource;
use crate::domain::{Origin, Subject, WorkItem};
use crate::error::{AwsError, Classify};
use crate::metrics::{Metric, Metrics, dim};
use crate::ports::MappingSource;
use crate::ports::{BrexPages, Clock, EnqueueLedger, Feed, Paging, PollState, PollStateStore, WorkQueue};
use crate::reconcile::{DailyOutcome, DailyReconcile, DifferenceKind};
use crate::reference::ReferenceRefresh;
use crate::sync::{FieldSync, SyncReport};

#[derive(Debug, Clone)]
pub struct PollerOptions {
    /// Each query starts this far before the watermark, for updates Brex indexes late.
    pub overlap: Duration,
    /// Brex `limit`.
    pub page_size: u32,
    /// How far back a source with no watermark yet starts.
    pub initial_lookback: Duration,
    /// No new page is started with less than this left before the deadline (a page may take a Brex retry,
    /// a DynamoDB round and an SQS send).
    pub stop_margin: Duration,
    /// Pages per run over all sources; `None` = only the deadline limits a run.
    pub max_pages_per_run: Option<u32>,
    /// How long a queued mark blocks re-enqueueing. After it, a record the poster skipped is queued again.
    pub queued_ttl: Duration,
    /// The reconciliation run once a day after polling, when wired.
    pub reconcile: Option<Arc<DailyReconcile>>,
}

impl Default for PollerOptions {
    fn default() -> Self {
        Self {
            overlap: Duration::minutes(10),
            page_size: 100,
            initial_lookback: Duration::days(90),
            stop_margin: Duration::seconds(30),
            max_pages_per_run: None,
            queued_ttl: Duration::hours(1),
            reconcile: None,
        }
    }
}

/// How a source's part of a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Paged to the end; the watermark moved.
    Complete,
    /// Stopped for the deadline or the page budget; the next run resumes from the saved cursor.
    Paused,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    pub source: String,
    pub outcome: Outcome,
    pub pages: u32,
    pub seen: usize,
    pub enqueued: usize,
    /// Seen but not enqueued: done, claimed, or queued already.
    pub skipped: usize,
    /// Items that did not parse as records (logged; not enqueued).
    pub malformed: usize,
    /// The feed is read completely up to here: when its last paging completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_until: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SourceReport {
    fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            outcome: Outcome::Complete,
            pages: 0,
            seen: 0,
            enqueued: 0,
            skipped: 0,
            malformed: 0,
            read_until: None,
            error: None,
        }
    }
}

/// How the IFS reference refresh went (the mapping validated against IFS's chart, code parts and calendar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReferenceSummary {
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping_version: Option<i64>,
    /// Findings in the stored report (they are the operator's to fix; they do not fail the run).
    pub errors: usize,
    pub warnings: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How publishing IFS reference data into Brex fields went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldSyncSummary {
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<SyncReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PollReport {
    pub sources: Vec<SourceReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldSyncSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<DailyOutcome>,
}

impl PollReport {
    /// True when some source or the reference refresh failed: the invocation must report an error.
    pub fn has_errors(&self) -> bool {
        self.sources.iter().any(|s| s.outcome == Outcome::Failed)
            || self.reference.as_ref().is_some_and(|r| r.outcome == Outcome::Failed)
            || self.fields.as_ref().is_some_and(|f| f.outcome == Outcome::Failed)
    }

    /// True when every source paged to its end.
    pub fn is_complete(&self) -> bool {
        self.sources.iter().all(|s| s.outcome == Outcome::Complete)
    }

    /// The report of one source by name (e.g. `accounting_records:CARD`).
    pub fn source(&self, name: &str) -> Option<&SourceReport> {
        self.sources.iter().find(|s| s.source == name)
    }

    pub fn enqueued(&self) -> usize {
        self.sources.iter().map(|s| s.enqueued).sum()
    }
}

#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error("Brex: {0}")]
    Brex(#[from] BrexError),
    #[error("{0}")]
    Aws(#[from] AwsError),
}

/// The accounting-record queries: READY_FOR_EXPORT for cards and reimbursements; bills by
/// `updated_at` alone, because Brex accepts `review_status` only with CARD and REIMBURSEMENT.
pub const ACCOUNTING_SOURCES: [(SourceType, Option<ReviewStatus>); 3] = [
    (SourceType::Card, Some(ReviewStatus::ReadyForExport)),
    (SourceType::Reimbursement, Some(ReviewStatus::ReadyForExport)),
    (SourceType::Bill, None),
];

/// The `updated_after` a source's next page is asked with: the in-progress paging's, else the watermark
/// minus the overlap, else the initial lookback.
pub fn query_from(state: &PollState, now: DateTime<Utc>, options: &PollerOptions) -> DateTime<Utc> {
    match (&state.paging, state.watermark) {
        (Some(paging), _) => paging.query_from,
        (None, Some(watermark)) => watermark - options.overlap,
        (None, None) => now - options.initial_lookback,
    }
}

/// The state after a page was read and enqueued: still paging while Brex hands out a cursor, otherwise the
/// watermark moves to the newest `updated_at` seen (never backwards) and the cursor is cleared.
pub fn after_page(
    state: &PollState,
    query_from: DateTime<Utc>,
    page_max: Option<DateTime<Utc>>,
    next_cursor: Option<String>,
    now: DateTime<Utc>,
) -> PollState {
    let before = state.paging.as_ref().and_then(|p| p.max_seen);
    let max_seen = before.max(page_max);
    match next_cursor {
        Some(cursor) => PollState {
            watermark: state.watermark,
            paging: Some(Paging { query_from, cursor, max_seen }),
            completed_at: state.completed_at,
        },
        None => PollState { watermark: state.watermark.max(max_seen), paging: None, completed_at: Some(now) },
    }
}

/// The reference refresh as the poller runs it, after polling, on every scheduled run.
pub enum ReferenceCheck {
    /// Not wired (unit tests, or tools that only poll).
    Off,
    /// Could not be built at cold start (e.g. the IFS secret is unreadable): every run reports it failed.
    Unavailable(String),
    On {
        refresh: ReferenceRefresh,
        mapping: Arc<dyn MappingSource>,
        /// `SYNC_BREX_FIELDS`: also publish the reference data into Brex fields.
        fields: Option<FieldSync>,
    },
}

pub struct Poller {
    pub brex: Arc<dyn BrexPages>,
    pub state: Arc<dyn PollStateStore>,
    pub ledger: Arc<dyn EnqueueLedger>,
    pub queue: Arc<dyn WorkQueue>,
    pub clock: Arc<dyn Clock>,
    pub sources: Vec<PollSource>,
    pub reference: ReferenceCheck,
    /// Where each run's enqueued ids, lag and reference warnings are counted.
    pub metrics: Metrics,
    pub options: PollerOptions,
}

/// What one page brought: the subjects to consider, the newest `updated_at` on it, the next cursor.
struct PageItems {
    subjects: Vec<Subject>,
    newest: Option<DateTime<Utc>>,
    next_cursor: Option<String>,
}

impl Poller {
    /// One scheduled run. Never starts a page after `deadline - stop_margin`; each feed's progress is saved
    /// page by page, so an early stop loses nothing.
    pub async fn run(&self, deadline: DateTime<Utc>) -> PollReport {
        let mut report = PollReport::default();
        let mut pages_left = self.options.max_pages_per_run;
        let mut feeds = Vec::new();
        for source in &self.sources {
            match source {
                PollSource::AccountingRecords => feeds.extend(ACCOUNTING_SOURCES.map(|(s, _)| Feed::Records(s))),
                PollSource::Expenses => feeds.push(Feed::Expenses),
            }
        }
        let mut due = Vec::new();
        for feed in feeds {
            match self.state.load(feed).await {
                Ok(state) => due.push((feed, state)),
                Err(e) => report.sources.push(failed(SourceReport::new(feed.name()), &e.to_string())),
            }
        }
        due.sort_by_key(|(_, state)| poll_order(state));
        for (feed, state) in due {
            report.sources.push(self.poll_feed(feed, state, deadline, &mut pages_left).await);
        }
        report.reference = self.check_reference(deadline).await;
        report.fields = self.sync_fields(deadline).await;
        if let Some(daily) = &self.options.reconcile
            && self.clock.now() + self.options.stop_margin < deadline
        {
            report.reconcile = Some(daily.run_if_due().await);
        }
        tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "poll run finished");
        self.record_metrics(&report);
        report
    }

    /// The lag is measured from where each feed is read completely, not from its watermark (the newest
    /// `updated_at` seen): on a quiet weekend the watermark stands still while the poller is fully caught up.
    fn record_metrics(&self, report: &PollReport) {
        let now = self.clock.now();
        for source in &report.sources {
            self.metrics.count(Metric::PollerEnqueued, source.enqueued as u64, dim("Source", source.source.as_str()));
            if let Some(read_until) = source.read_until {
                let lag = (now - read_until).num_seconds().max(0);
                self.metrics.record(Metric::PollerLag, lag as f64, dim("Source", source.source.as_str()));
            }
        }
        if let Some(reference) = report.reference.as_ref().filter(|r| r.outcome == Outcome::Complete) {
            // Written even when 0: the latest refresh's count, not an event.
            self.metrics.record(Metric::ReferenceWarnings, reference.warnings as f64, Vec::new());
        }
        // Every kind, 0 included: the day's finding, which the alarm reads.
        if let Some(DailyOutcome::Ran { differences, .. }) = &report.reconcile {
            for kind in DifferenceKind::ALL {
                let found = differences.get(&kind).copied().unwrap_or(0) as f64;
                self.metrics.record(Metric::ReconcileDifferences, found, dim("Kind", kind.as_str()));
            }
        }
    }

    /// Validates the current mapping against IFS's reference data, if there is time left.
    async fn check_reference(&self, deadline: DateTime<Utc>) -> Option<ReferenceSummary> {
        let summary = |outcome, error: Option<String>| ReferenceSummary {
            outcome,
            mapping_version: None,
            errors: 0,
            warnings: 0,
            error,
        };
        let (refresh, mapping) = match &self.reference {
            ReferenceCheck::Off => return None,
            ReferenceCheck::Unavailable(why) => {
                tracing::error!(error = %why, "IFS reference refresh unavailable");
                return Some(summary(Outcome::Failed, Some(why.clone())));
            }
            ReferenceCheck::On { refresh, mapping, .. } => (refresh, mapping),
        };
        if self.clock.now() + self.options.stop_margin >= deadline {
            return Some(summary(Outcome::Paused, None));
        }
        let loaded = match mapping.mapping().await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "no mapping document to validate");
                return Some(summary(Outcome::Failed, Some(e.to_string())));
            }
        };
        match refresh.refresh(&loaded, self.clock.now().date_naive()).await {
            Ok(report) => Some(ReferenceSummary {
                outcome: Outcome::Complete,
                mapping_version: Some(loaded.version),
                errors: report.errors(),
                warnings: report.warnings(),
                error: None,
            }),
            Err(e) => {
                tracing::error!(error = %e, "IFS reference refresh failed");
                Some(ReferenceSummary {
                    mapping_version: Some(loaded.version),
                    ..summary(Outcome::Failed, Some(e.to_string()))
                })
            }
        }
    }

    /// Publishes IFS accounts and code parts into Brex fields, if configured and there is time left.
    async fn sync_fields(&self, deadline: DateTime<Utc>) -> Option<FieldSyncSummary> {
        let ReferenceCheck::On { mapping, fields: Some(sync), .. } = &self.reference else { return None };
        let summary = |outcome, report, error| Some(FieldSyncSummary { outcome, report, error });
        if self.clock.now() + self.options.stop_margin >= deadline {
            return summary(Outcome::Paused, None, None);
        }
        let loaded = match mapping.mapping().await {
            Ok(loaded) => loaded,
            Err(e) => return summary(Outcome::Failed, None, Some(e.to_string())),
        };
        match sync.sync(&loaded).await {
            // Deferred writes (budget) are finished by the next run.
            Ok(report) if report.deferred > 0 => summary(Outcome::Paused, Some(report), None),
            Ok(report) => summary(Outcome::Complete, Some(report), None),
            Err(e) => {
                tracing::error!(error = %e, "Brex field sync failed");
                summary(Outcome::Failed, None, Some(e.to_string()))
            }
        }
    }

    async fn poll_feed(
        &self,
        feed: Feed,
        mut state: PollState,
        deadline: DateTime<Utc>,
        pages_left: &mut Option<u32>,
    ) -> SourceReport {
        let mut report = SourceReport::new(feed.name());
        loop {
            report.read_until = state.completed_at;
            if *pages_left == Some(0) || self.clock.now() + self.options.stop_margin >= deadline {
                report.outcome = Outcome::Paused;
                return report;
            }
            let from = query_from(&state, self.clock.now(), &self.options);
            let cursor = state.paging.as_ref().map(|p| p.cursor.clone());
            let next = match self.page(feed, from, cursor, &mut report).await {
                Ok(next) => next,
                // Brex refusing a saved cursor (expired, or its format changed) would otherwise fail every run:
                // start that paging over from the watermark instead; enqueueing is deduplicated.
                Err(PageError::Brex(e)) if !e.is_retryable() && state.paging.is_some() => {
                    tracing::warn!(source = %report.source, error = %e, "Brex refused the saved cursor; paging restarts");
                    state.paging = None;
                    if let Err(e) = self.state.save(feed, &state).await {
                        return failed(report, &e.to_string());
                    }
                    continue;
                }
                Err(e) => return failed(report, &e.to_string()),
            };
            *pages_left = pages_left.map(|n| n.saturating_sub(1));
            state = after_page(&state, from, next.0, next.1, self.clock.now());
            report.read_until = state.completed_at;
            if let Err(e) = self.state.save(feed, &state).await {
                return failed(report, &e.to_string());
            }
            if state.paging.is_none() {
                report.outcome = Outcome::Complete;
                return report;
            }
        }
    }

    /// Reads one page of a feed.
    async fn read(
        &self,
        feed: Feed,
        from: DateTime<Utc>,
        cursor: Option<String>,
        report: &mut SourceReport,
    ) -> Result<PageItems, BrexError> {
        match feed {
            Feed::Records(source) => {
                let review_status = ACCOUNTING_SOURCES.iter().find(|(s, _)| *s == source).and_then(|(_, r)| r.clone());
                let query = RecordQuery {
                    source_type: Some(source),
                    review_status: review_status.clone(),
                    updated_after: from,
                    limit: self.options.page_size,
                    cursor,
                };
                let page = self.brex.record_page(&query).await?;
                report.malformed += page.malformed.len();
                // A READY_FOR_EXPORT record that does not parse is still enqueued (when it has an id): the
                // poster fails it and reports that to Brex, where the bookkeeper sees it. A bill's review
                // state is unknown, so an unreadable bill is only logged.
                let ready_only = review_status == Some(ReviewStatus::ReadyForExport);
                for bad in &page.malformed {
                    tracing::warn!(record = ?bad.id, error = %bad.error, enqueued = ready_only && bad.id.is_some(),
                        "Brex returned a record that does not parse");
                }
                let malformed = page.malformed.iter().filter(|_| ready_only).filter_map(|bad| bad.id.clone());
                Ok(PageItems {
                    subjects: page.records.iter().map(|r| r.id.clone()).chain(malformed).map(Subject::Record).collect(),
                    newest: page.records.iter().map(|r| r.updated_at).max(),
                    next_cursor: page.next_cursor,
                })
            }
            Feed::Expenses => {
                let query = ExpenseQuery {
                    statuses: POSTABLE_STATUSES.iter().map(|s| (*s).to_owned()).collect(),
                    updated_from: from,
                    limit: self.options.page_size.min(MAX_EXPENSE_PAGE),
                    cursor,
                };
                let page = self.brex.expense_page(&query).await?;
                report.malformed += page.malformed.len();
                // Asked for by status, so an unreadable one with an id is postable as far as we know: the
                // poster fails it visibly (and keeps the reason for `connector failures`).
                for bad in &page.malformed {
                    tracing::warn!(expense = ?bad.id, error = %bad.error, "Brex returned an expense that does not parse");
                }
                let postable = page.expenses.iter().filter(|e| e.is_postable()).map(|e| e.id.clone());
                let malformed = page.malformed.iter().filter_map(|bad| bad.id.clone());
                Ok(PageItems {
                    subjects: postable.chain(malformed).map(Subject::Expense).collect(),
                    newest: page.expenses.iter().map(|e| e.updated_at).max(),
                    next_cursor: page.next_cursor,
                })
            }
        }
    }

    /// Reads one page and enqueues what it should; returns the page's newest `updated_at` and next cursor.
    async fn page(
        &self,
        feed: Feed,
        from: DateTime<Utc>,
        cursor: Option<String>,
        report: &mut SourceReport,
    ) -> Result<(Option<DateTime<Utc>>, Option<String>), PageError> {
        let page = self.read(feed, from, cursor, report).await?;
        report.pages += 1;
        let mut unique = HashSet::new();
        let ids: Vec<Subject> = page.subjects.into_iter().filter(|id| unique.insert(id.clone())).collect();
        report.seen += ids.len();
        let now = self.clock.now();
        let settled = if ids.is_empty() { HashSet::new() } else { self.ledger.settled(&ids, now).await? };
        let candidates: Vec<Subject> = ids.iter().filter(|id| !settled.contains(*id)).cloned().collect();
        let marked = if candidates.is_empty() {
            Vec::new()
        } else {
            self.ledger.mark_queued(&candidates, now + self.options.queued_ttl, now).await?
        };
        if !marked.is_empty()
            && let Err(e) = self.queue.enqueue(&work_items(&marked, now)).await
        {
            // Unmark so the next run (which re-reads this page) enqueues them instead of skipping them.
            if let Err(unmark) = self.ledger.unmark_queued(&marked).await {
                tracing::warn!(error = %unmark, "could not drop queued marks; they expire by themselves");
            }
            return Err(e.into());
        }
        report.enqueued += marked.len();
        report.skipped += ids.len() - marked.len();
        Ok((page.newest, page.next_cursor))
    }
}

/// The queue messages for `subjects` (records and expenses travel in separate messages).
fn work_items(subjects: &[Subject], now: DateTime<Utc>) -> Vec<WorkItem> {
    WorkItem::for_subjects(subjects, &Origin::Poll, now)
}

/// Resumed pagings first, then the source whose last completed paging is oldest (never = first), so a page
/// budget or deadline smaller than the work cannot starve the later sources.
fn poll_order(state: &PollState) -> (bool, Option<DateTime<Utc>>) {
    (state.paging.is_none(), state.completed_at)
}

fn failed(mut report: SourceReport, error: &str) -> SourceReport {
    tracing::error!(source = %report.source, error, "polling failed; the next run resumes from the saved position");
    report.outcome = Outcome::Failed;
    report.error = Some(error.to_owned());
    report
}

#[cfg(test)]
mod tests;
