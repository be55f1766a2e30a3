//! What the connector keeps in its table: idempotency records, spend claims, leases, learned capabilities,
//! the poller's positions and queued marks, validation reports, the audit trail and the mapping document.
//! `crate::aws` implements them on DynamoDB; `crate::memory` in memory for unit tests, and one contract suite
//! holds both to the same behaviour.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::audit::AuditEntry;
use crate::brex::model::SourceType;
use crate::domain::{ExpenseId, ReferenceNumber, Subject, WebhookId};
use crate::error::AwsError;
use crate::mapping::{LoadedMapping, MappingLoadError};
use crate::reference::ValidationReport;

/// What a conditional "begin" found (Powertools idempotency semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// We own the key now, until the in-progress expiry.
    Started,
    /// Someone else is working on it and their lease has not expired.
    InProgress { until: DateTime<Utc> },
    /// Done before; `result` is what was recorded (e.g. the IFS voucher key).
    Completed { result: Option<String> },
    /// Failed permanently before, with the recorded reason.
    Failed { reason: String },
}

/// What an idempotency record guards: the posting of one Brex record or expense, or the acceptance of one
/// webhook delivery (its `webhook-id`). The adapter turns it into its own storage key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdempotencyKey {
    Posting(Subject),
    Delivery(WebhookId),
    /// The revision of a posted subject to one Brex `version` (changed after export): claimed before its
    /// reversal, removal or new voucher is written, completed with the new voucher.
    Revision(Subject, i64),
}

impl From<&Subject> for IdempotencyKey {
    fn from(subject: &Subject) -> Self {
        Self::Posting(subject.clone())
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Posting(subject) => write!(f, "posting of {subject}"),
            Self::Delivery(id) => write!(f, "webhook delivery {id}"),
            Self::Revision(subject, version) => write!(f, "revision of {subject} to version {version}"),
        }
    }
}

/// Idempotency records, one per [`IdempotencyKey`] (Powertools idempotency semantics).
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` unless it is completed, failed, or in progress with an unexpired lease. An expired
    /// in-progress claim is taken over.
    async fn begin(
        &self,
        key: &IdempotencyKey,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Begin, AwsError>;
    /// Marks `key` completed with an optional result; kept for `retain_until`.
    async fn complete(
        &self,
        key: &IdempotencyKey,
        result: Option<&str>,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError>;
    /// Marks `key` failed permanently with a reason.
    async fn fail(&self, key: &IdempotencyKey, reason: &str, retain_until: DateTime<Utc>) -> Result<(), AwsError>;
    /// Marks `key` held (the deployment or tenant is at fault) with the reason and the operator's fix. A
    /// held key can be claimed again at once (`begin` takes it like a released one), so a redelivery or a
    /// replay after the fix posts it; posting replaces the hold.
    async fn hold(
        &self,
        key: &IdempotencyKey,
        reason: &str,
        fix: &str,
        now: DateTime<Utc>,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError>;
    /// Drops an in-progress claim so a retry can start over at once (used when the work could not be done).
    async fn release(&self, key: &IdempotencyKey) -> Result<(), AwsError>;
    /// The voucher recorded beside `subject`'s idempotency item, if any. A store that keeps none answers
    /// `None`, and completed subjects are re-reported as they always were.
    async fn posted_voucher(&self, _subject: &Subject) -> Result<Option<PostedVersion>, AwsError> {
        Ok(None)
    }
    /// Records `posted` beside `subject`'s idempotency item unless a higher version is recorded already (a
    /// late writer never rolls a revision back); the same version is overwritten (a retry of the write).
    async fn record_posted(
        &self,
        _subject: &Subject,
        _posted: &PostedVersion,
        _retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        Ok(())
    }
}

/// The voucher a subject is posted as now, and the Brex version and proposal it was posted from: what a
/// later version is compared with (a change the voucher does not carry is no change) and what a reversal
/// mirrors. Subjects posted before this was kept have none and are re-reported as they always were.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PostedVersion {
    /// Brex `version` of the record (or expense) the voucher was made from.
    pub version: i64,
    /// The IFS voucher key (`10-2026-M-17`).
    pub voucher: String,
    /// What was sent: reference, company, date, rows.
    pub proposal: crate::proposal::Proposal,
}

impl PostedVersion {
    /// The voucher's total: the debit side, per currency (`171.75 USD`, `10.00 EUR + 5.00 USD`).
    pub fn total(&self) -> String {
        let totals = self.proposal.totals();
        let parts: Vec<String> = totals.iter().map(|(currency, (debit, _))| format!("{debit} {currency}")).collect();
        parts.join(" + ")
    }
}

/// Who posted (or is posting) one piece of spend. With both poll sources on, a card expense reaches us twice:
/// as the expense and as the accounting record whose `source_id` is that expense. It must post once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendClaim {
    /// Ours until the lease ends. `holders`: every Brex id that ever claimed this spend, us included. One of
    /// them may have committed a voucher and crashed before recording it, so the IFS dedup asks for them all.
    Claimed { holders: Vec<ReferenceNumber> },
    /// Posted as `voucher` by the Brex id `by`.
    Posted { by: ReferenceNumber, voucher: String },
    /// Another invocation is posting it under `by`.
    Busy { by: ReferenceNumber, until: DateTime<Utc> },
}

/// Spend claims keyed by the expense id, shared by both sources (DynamoDB conditional writes).
#[async_trait]
pub trait SpendClaims: Send + Sync {
    async fn claim(
        &self,
        spend: &ExpenseId,
        holder: &ReferenceNumber,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<SpendClaim, AwsError>;
    /// Records the voucher; kept until `retain_until`.
    async fn posted(
        &self,
        spend: &ExpenseId,
        holder: &ReferenceNumber,
        voucher: &str,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError>;
    /// Gives the claim back when nothing was posted, keeping the holder history.
    async fn release(&self, spend: &ExpenseId, holder: &ReferenceNumber) -> Result<(), AwsError>;
}

/// A named, time-bounded lock shared by all instances (DynamoDB conditional writes). Used so that only one
/// instance refreshes Brex's rotating OAuth refresh token at a time.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes the lease `name` for `holder` until `until` if it is free or expired. `true` when taken.
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, AwsError>;
    /// Gives the lease back if `holder` still has it.
    async fn release(&self, name: &str, holder: &str) -> Result<(), AwsError>;
}

/// Something learned about an outside system that every instance should know for a while (e.g. that the
/// tenant's IFS refuses `$batch`), stored in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub value: String,
    /// Why, for the logs and `connector doctor`.
    pub reason: String,
    /// Believed until then.
    pub until: DateTime<Utc>,
}

#[async_trait]
pub trait CapabilityStore: Send + Sync {
    async fn recall(&self, name: &str) -> Result<Option<Capability>, AwsError>;
    async fn remember(&self, name: &str, capability: &Capability) -> Result<(), AwsError>;
}

/// One polled stream with its own watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    Records(SourceType),
    Expenses,
}

impl Feed {
    pub fn name(&self) -> String {
        match self {
            Self::Records(source) => format!("accounting_records:{}", source.as_str()),
            Self::Expenses => "expenses".to_owned(),
        }
    }
}

/// Paging that is under way: where it started and where it got to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// The `updated_after` every page of this paging is asked with (the cursor belongs to that query).
    pub query_from: DateTime<Utc>,
    pub cursor: String,
    /// Newest `updated_at` on the pages read so far; becomes the watermark when paging completes.
    pub max_seen: Option<DateTime<Utc>>,
}

/// The saved position of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollState {
    /// Newest `updated_at` seen by a completed paging.
    pub watermark: Option<DateTime<Utc>>,
    pub paging: Option<Paging>,
    /// When a paging last completed: with a page budget, the source waiting longest goes first.
    pub completed_at: Option<DateTime<Utc>>,
}

/// Where each source's position is kept (DynamoDB).
#[async_trait]
pub trait PollStateStore: Send + Sync {
    async fn load(&self, feed: Feed) -> Result<PollState, AwsError>;
    async fn save(&self, feed: Feed, state: &PollState) -> Result<(), AwsError>;
}

/// What the poller needs to know to enqueue each record or expense at most once while it is pending.
#[async_trait]
pub trait EnqueueLedger: Send + Sync {
    /// Of `ids`, those the poster has completed or failed, or holds an unexpired claim on.
    async fn settled(&self, ids: &[Subject], now: DateTime<Utc>) -> Result<HashSet<Subject>, AwsError>;
    /// Marks `ids` queued until `until`; returns those this call marked (the rest are queued already).
    async fn mark_queued(
        &self,
        ids: &[Subject],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Subject>, AwsError>;
    /// Drops queued marks (when the enqueue they were made for failed).
    async fn unmark_queued(&self, ids: &[Subject]) -> Result<(), AwsError>;
}

/// Where validation reports are kept (DynamoDB: `crate::aws::report`).
#[async_trait]
pub trait ReportStore: Send + Sync {
    async fn save(&self, report: &ValidationReport) -> Result<(), AwsError>;
    async fn load_latest(&self) -> Result<Option<ValidationReport>, AwsError>;
}

/// A subject the poster completed, with the voucher it completed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedSubject {
    pub subject: Subject,
    /// The IFS voucher key (`10-2026-M-17`).
    pub voucher: String,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Every subject the poster completed (DynamoDB: a filtered Scan of the idempotency items; a daily job's
/// read, never the poster's).
#[async_trait]
pub trait CompletedSubjects: Send + Sync {
    async fn completed_subjects(&self) -> Result<Vec<CompletedSubject>, AwsError>;
}

/// Where reconciliation reports are kept (DynamoDB: `crate::aws::reconcile`); the latest one also says which
/// day the poller last ran it.
#[async_trait]
pub trait ReconcileStore: Send + Sync {
    async fn save(&self, report: &crate::reconcile::ReconcileReport) -> Result<(), AwsError>;
    async fn load_latest(&self) -> Result<Option<crate::reconcile::ReconcileReport>, AwsError>;
}

#[async_trait]
pub trait AuditTrail: Send + Sync {
    /// Appends entries; kept until `retain_until`.
    async fn append(&self, entries: &[(Subject, AuditEntry)], retain_until: DateTime<Utc>) -> Result<(), AwsError>;
    /// Every entry of `subject`, oldest first.
    async fn read(&self, subject: &Subject) -> Result<Vec<AuditEntry>, AwsError>;
}

/// Which files are attached to each voucher (DynamoDB: `crate::aws::attachments`), so a receipt is attached
/// once across redeliveries and across the two sources of one spend.
#[async_trait]
pub trait AttachedReceipts: Send + Sync {
    /// Every file recorded as attached to `voucher`, oldest first.
    async fn attached(&self, voucher: &str) -> Result<Vec<crate::receipts::AttachedReceipt>, AwsError>;
    /// Records one attached file (by its hash; recording the same hash again replaces it); kept until
    /// `retain_until`.
    async fn record(
        &self,
        voucher: &str,
        attached: &crate::receipts::AttachedReceipt,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError>;
}

#[async_trait]
pub trait MappingSource: Send + Sync {
    async fn mapping(&self) -> Result<Arc<LoadedMapping>, MappingLoadError>;
}
