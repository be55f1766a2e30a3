//! The poster: one SQS batch of work items → balanced vouchers in IFS, each Brex record or expense posted
//! exactly once.
//!
//! Per batch: parse every message on its own (a bad one fails alone); claim every subject (record or expense)
//! in DynamoDB (Powertools semantics, lease = the invocation's remaining time); fetch the claimed records from
//! Brex in one call and the expenses one by one; map and validate each; claim the spend behind it (so a card
//! expense seen both as an expense and as its accounting record posts once); one IFS dedup query per company
//! for the whole batch; create what is not in IFS yet; record the outcome; report export results for the
//! records to Brex in one call; append the audit trail; return only the messages that hold a subject worth
//! retrying. Who is at fault decides the rest (see [`crate::fault`]): the record's own faults are recorded and
//! reported, never looped to the DLQ; a passing fault is retried; when the deployment or the tenant is at
//! fault the subject is held — recorded with the operator's fix, never failed or reported to Brex — and its
//! message comes back with backoff until the fix (or the DLQ and `connector replay`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tracing::Instrument;

use crate::audit::{AuditEntry, AuditOutcome, BrexReport};
use crate::brex::model::{AccountingRecord, ReviewStatus};
use crate::domain::{CompanyCode, ExpenseId, Origin, ReferenceNumber, Subject, WorkItem};
use crate::error::{Classify, Disposition};
use crate::mapping::{ClosedPeriodPolicy, LoadedMapping, check_proposal, map_record, recheck_refusal};
use crate::metrics::{Metric, Metrics, dim};
use crate::ports::{
    AuditTrail, Begin, Clock, ExportOutcome, IdempotencyKey, IdempotencyStore, Ledger, MappingSource, RecordSource,
    SpendClaim, SpendClaims,
};
use crate::proposal::Proposal;

#[derive(Debug, Clone)]
pub struct PosterOptions {
    pub report_export_results: bool,
    pub dry_run: bool,
    /// How long completed/failed subjects and their audit trail are remembered.
    pub retention: Duration,
    /// Added to the invocation's remaining time for the in-progress lease, so a lease never ends while its
    /// invocation may still be writing.
    pub lease_margin: Duration,
    /// A held message comes back after `hold_backoff × 4^(receives − 1)`, at most `hold_backoff_cap`: soon
    /// after a quick fix, rarely while nobody has fixed anything, and in the DLQ (alarmed) when the
    /// receives run out.
    pub hold_backoff: std::time::Duration,
    pub hold_backoff_cap: std::time::Duration,
}

impl PosterOptions {
    /// How long a held message stays away after its `receives`-th delivery.
    pub fn hold_delay(&self, receives: u32) -> std::time::Duration {
        let factor = 4u32.saturating_pow(receives.saturating_sub(1).min(15));
        self.hold_backoff.saturating_mul(factor).min(self.hold_backoff_cap)
    }
}

impl Default for PosterOptions {
    fn default() -> Self {
        Self {
            report_export_results: true,
            dry_run: false,
            retention: Duration::days(400),
            lease_margin: Duration::seconds(30),
            hold_backoff: std::time::Duration::from_secs(30),
            hold_backoff_cap: std::time::Duration::from_secs(3600),
        }
    }
}

/// One SQS message as the poster sees it.
#[derive(Debug, Clone)]
pub struct Message {
    pub message_id: String,
    pub body: String,
}

/// What happened to each subject of a batch; logged, audited, and asserted on by tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchReport {
    /// Newly created vouchers: subject → voucher key.
    pub posted: BTreeMap<Subject, String>,
    /// Found already in IFS (dedup), posted through the other source, or completed before: → voucher key.
    pub already_posted: BTreeMap<Subject, String>,
    /// Permanent failures, recorded (and for records reported to Brex).
    pub failed: BTreeMap<Subject, String>,
    /// What each failure of this batch was about (not those failed before it and redelivered).
    pub failure_classes: BTreeMap<Subject, FailureClass>,
    /// Retryable problems: the messages carrying these are returned to SQS.
    pub retry: BTreeMap<Subject, String>,
    /// The deployment or tenant is at fault: recorded as held with the fix, not reported to Brex; the
    /// messages carrying these come back with backoff.
    pub held: BTreeMap<Subject, Held>,
    /// Not postable and not worth a retry (e.g. no longer READY_FOR_EXPORT, a voided expense).
    pub skipped: BTreeMap<Subject, String>,
    /// `DRY_RUN`: the proposals that would have been posted.
    pub proposals: Vec<Proposal>,
    /// The company of each posted or already posted subject whose proposal was made in this batch.
    pub companies: BTreeMap<Subject, CompanyCode>,
    /// Brex `updated_at` → voucher created, for each voucher this batch created, in milliseconds.
    pub post_latencies_ms: Vec<i64>,
    /// The mapping document version the batch was judged with.
    pub mapping_version: Option<i64>,
    /// Posted or failed records whose export result Brex did not take: their messages are redelivered.
    pub unreported: BTreeSet<Subject>,
    /// Message ids SQS must redeliver.
    pub failed_messages: Vec<String>,
    /// What was changed on the way (a voucher date moved out of a closed period), for the audit trail.
    pub notes: BTreeMap<Subject, String>,
    /// Those of `failed_messages` that carry a held subject (or one with a receipt still to attach):
    /// redelivered with backoff.
    pub held_messages: Vec<String>,
    /// Receipts attached to vouchers by this batch, per subject (see [`crate::receipts`]).
    pub receipts_attached: BTreeMap<Subject, usize>,
    /// Posted subjects with a receipt that could not be attached: still COMPLETED and EXPORTED; their
    /// messages come back (with the held ones' backoff) and the redelivery attaches what is missing.
    pub attachments_pending: BTreeSet<Subject>,
    /// The Brex version each voucher of this batch was made from; and the changes after export carried out.
    pub versions: BTreeMap<Subject, i64>,
    pub revisions: BTreeMap<Subject, crate::audit::RevisionAudit>,
}

/// Why a subject is held, and what the operator should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub reason: String,
    pub fix: String,
    pub class: HoldClass,
}

/// Whose side a held subject waits on (the `ReasonClass` of the `RecordsHeld` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldClass {
    /// IFS credentials, or what the tenant serves.
    Ifs,
    /// Brex credentials or URL.
    Brex,
    /// No usable mapping document.
    MappingDocument,
    /// Changed in Brex after its voucher was posted: waits for a person (`[ifs] changed_after_export`).
    ChangedAfterExport,
}

impl HoldClass {
    pub const ALL: [HoldClass; 4] = [Self::Ifs, Self::Brex, Self::MappingDocument, Self::ChangedAfterExport];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ifs => "ifs",
            Self::Brex => "brex",
            Self::MappingDocument => "mapping_document",
            Self::ChangedAfterExport => "changed_after_export",
        }
    }

    fn of(error: &crate::error::ExternalError) -> Self {
        if error.system.eq_ignore_ascii_case("brex") { Self::Brex } else { Self::Ifs }
    }
}

/// What a permanent failure is about (the `ReasonClass` of the `RecordsFailed` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The mapping cannot book the record as it is coded.
    Mapping,
    /// IFS refused the voucher on its merits (unknown account, closed period, a demanded code part, …).
    IfsRefusal,
    /// Brex does not know the record, or it cannot be read.
    BrexRecord,
}

impl FailureClass {
    pub const ALL: [FailureClass; 3] = [Self::Mapping, Self::IfsRefusal, Self::BrexRecord];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mapping => "mapping",
            Self::IfsRefusal => "ifs_refusal",
            Self::BrexRecord => "brex_record",
        }
    }
}

/// The fix named for a held error that carries none.
const GENERIC_FIX: &str = "run `connector doctor`, fix what it reports, then `connector replay`";

pub struct Poster {
    pub records: Arc<dyn RecordSource>,
    pub ledger: Arc<dyn Ledger>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub spend: Arc<dyn SpendClaims>,
    pub audit: Arc<dyn AuditTrail>,
    pub mapping: Arc<dyn MappingSource>,
    pub clock: Arc<dyn Clock>,
    /// Where held messages are delayed (the work queue); `None` leaves them to the visibility timeout.
    pub redelivery: Option<Arc<dyn crate::ports::Redelivery>>,
    /// Where the batch's outcomes are counted (the function flushes it after each invocation).
    pub metrics: Metrics,
    pub options: PosterOptions,
    /// Attaches receipts to the vouchers when the mapping says `[ifs] attach_receipts = true`.
    pub receipts: Option<Arc<crate::receipts::ReceiptAttacher>>,
}

/// A subject that mapped and validated, on its way to IFS.
struct Candidate {
    subject: Subject,
    proposal: Proposal,
    version: i64,
    /// When Brex last changed it: the start of the latency the dashboard shows.
    updated_at: DateTime<Utc>,
    /// The expense it books, when it books one.
    spend: Option<ExpenseId>,
    /// Other Brex ids that claimed the same spend: their vouchers count as ours in the dedup.
    other_holders: Vec<ReferenceNumber>,
    /// `[ifs] closed_period` of the mapping that made it: how an IFS refusal over the period is taken.
    closed_period: ClosedPeriodPolicy,
}

/// One batch's working state.
struct Batch {
    report: BatchReport,
    /// Spend claims we hold, to give back on failure.
    spends: HashMap<Subject, ExpenseId>,
    lease_until: DateTime<Utc>,
}

impl Poster {
    /// Processes one batch. `deadline` is when the invocation will be cut off.
    pub async fn process(&self, messages: &[Message], deadline: DateTime<Utc>) -> BatchReport {
        // subject → the messages carrying it (a subject may arrive in several), and how it first arrived.
        let mut carriers: BTreeMap<Subject, Vec<String>> = BTreeMap::new();
        let mut deliveries: HashMap<Subject, (Origin, DateTime<Utc>)> = HashMap::new();
        let mut bad_messages: HashSet<String> = HashSet::new();
        for message in messages {
            let (subjects, origin, enqueued_at): (Vec<Subject>, _, _) =
                match serde_json::from_str::<WorkItem>(&message.body) {
                    Ok(WorkItem::AccountingRecords { ids, origin, enqueued_at }) => {
                        (ids.into_iter().map(Subject::Record).collect(), origin, enqueued_at)
                    }
                    Ok(WorkItem::Expenses { ids, origin, enqueued_at }) => {
                        (ids.into_iter().map(Subject::Expense).collect(), origin, enqueued_at)
                    }
                    Err(e) => {
                        // Cannot succeed on retry either; the DLQ keeps it as evidence after maxReceiveCount.
                        tracing::error!(message_id = %message.message_id, error = %e, "malformed work item");
                        bad_messages.insert(message.message_id.clone());
                        continue;
                    }
                };
            for subject in subjects {
                deliveries.entry(subject.clone()).or_insert_with(|| (origin.clone(), enqueued_at));
                carriers.entry(subject).or_default().push(message.message_id.clone());
            }
        }
        // Every line logged while the batch is handled carries its records' ids (the span's `records`).
        let records: Vec<String> = carriers.keys().map(Subject::to_string).collect();
        let span = tracing::info_span!("batch", records = %records.join(","));
        self.settle_batch(carriers, deliveries, bad_messages, deadline).instrument(span).await
    }

    async fn settle_batch(
        &self,
        carriers: BTreeMap<Subject, Vec<String>>,
        deliveries: HashMap<Subject, (Origin, DateTime<Utc>)>,
        mut bad_messages: HashSet<String>,
        deadline: DateTime<Utc>,
    ) -> BatchReport {
        let now = self.clock.now();
        let mut batch = Batch {
            report: BatchReport::default(),
            spends: HashMap::new(),
            lease_until: deadline.max(now) + self.options.lease_margin,
        };
        if self.options.dry_run {
            self.dry_run(carriers.keys().cloned().collect(), &mut batch).await;
        } else {
            let (mut mine, mut completed) = (Vec::new(), Vec::new());
            for subject in carriers.keys() {
                match self.idempotency.begin(&IdempotencyKey::from(subject), batch.lease_until, now).await {
                    Ok(Begin::Started) => mine.push(subject.clone()),
                    Ok(Begin::Completed { result }) => completed.push((subject.clone(), result)),
                    Ok(Begin::Failed { reason }) => {
                        batch.report.failed.insert(subject.clone(), reason);
                    }
                    Ok(Begin::InProgress { .. }) => {
                        batch.report.retry.insert(subject.clone(), "another invocation is posting it".into());
                    }
                    Err(e) => {
                        batch.report.retry.insert(subject.clone(), format!("idempotency store: {e}"));
                    }
                }
            }
            if !mine.is_empty() {
                self.post_claimed(mine, &mut batch).await;
            }
            self.completed(completed, &mut batch).await;
            let reported = self.report_to_brex(&batch.report).await;
            self.write_audit(&batch.report, &deliveries, &reported).await;
            // A record is done only once Brex knows: its voucher (or failure) is recorded, so the redelivery
            // posts nothing and only reports again. Neither the poller (a settled record is not re-read) nor a
            // webhook would bring it back otherwise.
            batch.report.unreported =
                reported.into_iter().filter(|(_, told)| !told.reached_brex()).map(|(subject, _)| subject).collect();
            self.attach_receipts(&mut batch.report).await;
        }

        let mut report = batch.report;
        let mut held_messages: BTreeSet<String> = BTreeSet::new();
        for subject in report.held.keys().chain(&report.attachments_pending) {
            if let Some(ids) = carriers.get(subject) {
                held_messages.extend(ids.iter().cloned());
            }
        }
        for subject in report.retry.keys().chain(&report.unreported) {
            if let Some(ids) = carriers.get(subject) {
                bad_messages.extend(ids.iter().cloned());
            }
        }
        bad_messages.extend(held_messages.iter().cloned());
        let mut failed_messages: Vec<String> = bad_messages.into_iter().collect();
        failed_messages.sort();
        report.failed_messages = failed_messages;
        report.held_messages = held_messages.into_iter().collect();
        tracing::info!(
            posted = report.posted.len(),
            already_posted = report.already_posted.len(),
            failed = report.failed.len(),
            retry = report.retry.len(),
            held = report.held.len(),
            skipped = report.skipped.len(),
            unreported = report.unreported.len(),
            failed_messages = report.failed_messages.len(),
            mapping_version = report.mapping_version,
            dry_run = self.options.dry_run,
            "batch done"
        );
        if !self.options.dry_run {
            record_metrics(&self.metrics, &report);
        }
        report
    }

    /// After the batch: the receipts of every subject whose voucher exists (posted now or before) go beside
    /// the voucher, when the mapping asks for it. Never changes a posting outcome; what could not be attached
    /// is `attachments_pending` (see [`crate::receipts`]).
    async fn attach_receipts(&self, report: &mut BatchReport) {
        let Some(attacher) = &self.receipts else { return };
        let vouchers: BTreeMap<Subject, String> =
            report.posted.iter().chain(&report.already_posted).map(|(s, v)| (s.clone(), v.clone())).collect();
        if vouchers.is_empty() {
            return;
        }
        let mapping = match self.mapping.mapping().await {
            Ok(mapping) if mapping.document.attach_receipts => mapping,
            Ok(_) => return,
            Err(e) => {
                // Only redelivered COMPLETED subjects get here (nothing posts without a mapping): whether
                // receipts are wanted is unknown, so nothing is held back for them.
                tracing::warn!(error = %e, "no usable mapping document: receipts not looked at");
                return;
            }
        };
        let done = attacher.attach(&vouchers, &mapping.document.api).await;
        report.receipts_attached = done.attached.iter().map(|(s, a)| (s.clone(), a.len())).collect();
        report.attachments_pending = done.pending();
    }

    /// Fetches the subjects from Brex and sees each as a record the mapping engine reads. Subjects that
    /// cannot be fetched, read or posted are settled here (failed, skipped or given back).
    async fn fetch_views(&self, subjects: &[Subject], batch: &mut Batch) -> Vec<(Subject, AccountingRecord)> {
        let mut views = Vec::new();
        let (record_ids, expense_ids) = Subject::split(subjects);
        if !record_ids.is_empty() {
            match self.records.fetch_records(&record_ids).await {
                Ok(fetched) => {
                    for id in fetched.missing {
                        let reason = "Brex does not know this accounting record";
                        self.fail(&Subject::Record(id), reason, FailureClass::BrexRecord, batch).await;
                    }
                    for (id, why) in fetched.malformed {
                        let reason = format!("Brex record could not be read: {why}");
                        self.fail(&Subject::Record(id), &reason, FailureClass::BrexRecord, batch).await;
                    }
                    views.extend(fetched.records.into_iter().map(|r| (Subject::Record(r.id.clone()), r)));
                }
                Err(e) => {
                    let subjects: Vec<Subject> = record_ids.into_iter().map(Subject::Record).collect();
                    self.not_posted(&subjects, &fetch_error(&e), &e, batch).await;
                }
            }
        }
        if !expense_ids.is_empty() {
            match self.records.fetch_expenses(&expense_ids).await {
                Ok(fetched) => {
                    for id in fetched.missing {
                        let reason = "Brex does not know this expense";
                        self.fail(&Subject::Expense(id), reason, FailureClass::BrexRecord, batch).await;
                    }
                    for (id, why) in fetched.malformed {
                        let reason = format!("Brex expense could not be read: {why}");
                        self.fail(&Subject::Expense(id), &reason, FailureClass::BrexRecord, batch).await;
                    }
                    for expense in fetched.expenses {
                        let subject = Subject::Expense(expense.id.clone());
                        match expense.as_record() {
                            Ok(view) => views.push((subject, view)),
                            Err(e) => self.fail(&subject, &e.to_string(), FailureClass::BrexRecord, batch).await,
                        }
                    }
                }
                Err(e) => {
                    let subjects: Vec<Subject> = expense_ids.into_iter().map(Subject::Expense).collect();
                    self.not_posted(&subjects, &fetch_error(&e), &e, batch).await;
                }
            }
        }
        views
    }

    /// Fetch, map and validate: the proposals worth posting, with the mapping that made them.
    async fn propose(&self, subjects: &[Subject], batch: &mut Batch) -> Vec<Candidate> {
        let views = self.fetch_views(subjects, batch).await;
        if views.is_empty() {
            return Vec::new();
        }
        let mapping: Arc<LoadedMapping> = match self.mapping.mapping().await {
            Ok(mapping) => mapping,
            Err(e) => {
                tracing::error!(error = %e, "no usable mapping document; records wait for one");
                let waiting: Vec<Subject> = views.into_iter().map(|(s, _)| s).collect();
                let held =
                    Held { reason: format!("mapping document: {e}"), fix: e.fix(), class: HoldClass::MappingDocument };
                self.route(&waiting, e.disposition(), held, FailureClass::Mapping, batch).await;
                return Vec::new();
            }
        };
        batch.report.mapping_version = Some(mapping.version);
        self.ledger.use_api(&mapping.document.api);
        let mut candidates = Vec::new();
        for (subject, view) in views {
            if view.review_status != ReviewStatus::ReadyForExport {
                // Edited back in Brex, exported elsewhere, or a voided expense: nothing to post now. Dropping
                // the claim lets a later READY_FOR_EXPORT event (or poll) post it.
                let why = match &subject {
                    Subject::Record(_) => format!("review status is {:?}", view.review_status),
                    Subject::Expense(_) => "the expense is no longer APPROVED or SETTLED".to_owned(),
                };
                self.skip(&subject, &why, batch).await;
                continue;
            }
            let mut proposal = match map_record(&mapping.document, &view) {
                Ok(p) => p,
                Err(e) => {
                    self.fail(&subject, &e.to_string(), FailureClass::Mapping, batch).await;
                    continue;
                }
            };
            match check_proposal(&mut proposal, mapping.document.closed_period, self.ledger.as_chart()).await {
                Ok(note) => {
                    if let Some(note) = note {
                        batch.report.notes.insert(subject.clone(), note);
                    }
                    let spend = match &subject {
                        Subject::Expense(id) => Some(id.clone()),
                        Subject::Record(_) => view.spend_id(),
                    };
                    candidates.push(Candidate {
                        subject,
                        proposal,
                        version: view.version,
                        updated_at: view.updated_at,
                        spend,
                        other_holders: Vec::new(),
                        closed_period: mapping.document.closed_period,
                    });
                }
                Err(e) => {
                    let fix = e.fix().unwrap_or_else(|| GENERIC_FIX.into());
                    let held = Held { reason: e.to_string(), fix, class: HoldClass::Ifs };
                    self.route(&[subject], e.disposition(), held, FailureClass::IfsRefusal, batch).await;
                }
            }
        }
        candidates
    }

    /// Claims the spend behind each candidate; returns those still to post.
    async fn claim_spends(&self, candidates: Vec<Candidate>, batch: &mut Batch) -> Vec<Candidate> {
        let now = self.clock.now();
        let mut kept = Vec::with_capacity(candidates.len());
        for mut c in candidates {
            let Some(spend) = c.spend.clone() else {
                kept.push(c);
                continue;
            };
            let me = c.subject.reference();
            match self.spend.claim(&spend, &me, batch.lease_until, now).await {
                Ok(SpendClaim::Claimed { holders }) => {
                    batch.spends.insert(c.subject.clone(), spend);
                    c.other_holders = holders.into_iter().filter(|h| *h != me).collect();
                    kept.push(c);
                }
                Ok(SpendClaim::Posted { by, voucher }) => {
                    tracing::info!(subject = %c.subject, spend = %spend, posted_as = %by, %voucher,
                        "spend already posted through the other source");
                    self.complete(&c.subject, &voucher, batch, false).await;
                }
                Ok(SpendClaim::Busy { by, .. }) => {
                    let reason = format!("the same spend ({spend}) is being posted as {by}");
                    self.give_back(&[c.subject], &reason, batch).await;
                }
                Err(e) => self.give_back(&[c.subject], &format!("spend claim: {e}"), batch).await,
            }
        }
        kept
    }

    /// Everything after the subject claims: fetch, map, validate, claim spend, dedup, create, record.
    async fn post_claimed(&self, subjects: Vec<Subject>, batch: &mut Batch) {
        let candidates = self.propose(&subjects, batch).await;
        let candidates = self.claim_spends(candidates, batch).await;

        // One dedup query per company for the whole batch, asking for every id that may hold each voucher.
        let mut by_company: BTreeMap<(CompanyCode, String), Vec<ReferenceNumber>> = BTreeMap::new();
        for c in &candidates {
            let refs = by_company.entry((c.proposal.company.clone(), c.proposal.reference_serie.clone())).or_default();
            refs.push(c.proposal.reference_number.clone());
            refs.extend(c.other_holders.iter().cloned());
        }
        let mut existing = HashMap::new();
        let mut dedup_failed: HashMap<CompanyCode, crate::error::ExternalError> = HashMap::new();
        for ((company, serie), refs) in &mut by_company {
            refs.sort();
            refs.dedup();
            match self.ledger.find_posted(company, serie, refs).await {
                Ok(found) => existing.extend(found),
                Err(e) => {
                    tracing::warn!(%company, error = %e, "IFS dedup query failed");
                    dedup_failed.insert(company.clone(), e);
                }
            }
        }

        let mut to_create = Vec::new();
        for c in candidates {
            if let Some(e) = dedup_failed.get(&c.proposal.company) {
                // Never post without knowing what is there; and never blame the record for the query.
                self.not_posted(&[c.subject], &format!("IFS dedup query failed: {e}"), e, batch).await;
                continue;
            }
            let found = std::iter::once(&c.proposal.reference_number)
                .chain(&c.other_holders)
                .find_map(|r| existing.get(r).map(|key| (r.clone(), key.clone())));
            if let Some((holder, key)) = found {
                self.spend_posted(&c, &holder, &key).await;
                self.remember_posted(&c, &key, batch).await;
                if self.complete(&c.subject, &key, batch, false).await {
                    batch.report.companies.insert(c.subject.clone(), c.proposal.company.clone());
                }
                continue;
            }
            to_create.push(c);
        }
        // All creates of the batch in one call, so the ledger can send them together (`$batch`).
        let proposals: Vec<Proposal> = to_create.iter().map(|c| c.proposal.clone()).collect();
        let outcomes = self.ledger.create_vouchers(&proposals).await;
        let mut outcomes = outcomes.into_iter();
        for c in to_create {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(crate::error::ExternalError::new(
                    "IFS",
                    "the ledger returned no outcome for this voucher",
                    Disposition::Retryable,
                ))
            });
            match outcome {
                Ok(key) => {
                    tracing::info!(subject = %c.subject, voucher = %key, version = c.version, "posted");
                    self.spend_posted(&c, &c.proposal.reference_number, &key).await;
                    self.remember_posted(&c, &key, batch).await;
                    let latency = self.clock.now() - c.updated_at;
                    if self.complete(&c.subject, &key, batch, true).await {
                        batch.report.companies.insert(c.subject.clone(), c.proposal.company.clone());
                        batch.report.post_latencies_ms.push(latency.num_milliseconds());
                    }
                }
                Err(e) => {
                    // A period closed since the calendar was read: the policy decides, not the refusal.
                    let (disposition, held) =
                        match recheck_refusal(&c.proposal, c.closed_period, &e, self.ledger.as_chart()).await {
                            Some(p) => {
                                let fix = p.fix().unwrap_or_default();
                                (p.disposition(), Held { reason: p.to_string(), fix, class: HoldClass::Ifs })
                            }
                            None => (e.disposition, held_from(&e.to_string(), &e)),
                        };
                    self.route(&[c.subject], disposition, held, FailureClass::IfsRefusal, batch).await;
                }
            }
        }
    }

    /// Settles subjects that could not be posted, by who is at fault; `class` says what a permanent
    /// failure is about.
    async fn route(
        &self,
        subjects: &[Subject],
        disposition: Disposition,
        held: Held,
        class: FailureClass,
        batch: &mut Batch,
    ) {
        match disposition {
            Disposition::Retryable => self.give_back(subjects, &held.reason, batch).await,
            Disposition::Permanent => {
                for subject in subjects {
                    self.fail(subject, &held.reason, class, batch).await;
                }
            }
            Disposition::Hold => self.hold(subjects, held, batch).await,
        }
    }

    /// A failure of an outside system before anything about the record is known (the Brex fetch, the IFS
    /// dedup query): held when the deployment is at fault, else retried — it is never the record's fault.
    async fn not_posted(&self, subjects: &[Subject], reason: &str, e: &crate::error::ExternalError, batch: &mut Batch) {
        let disposition = if e.is_held() || e.disposition == Disposition::Permanent {
            Disposition::Hold
        } else {
            Disposition::Retryable
        };
        // Never permanent here, so the failure class is never used.
        self.route(subjects, disposition, held_from(reason, e), FailureClass::IfsRefusal, batch).await;
    }

    /// Holds subjects: the claim turns into a HELD record with the reason and the fix (so the operator sees
    /// it and a redelivery or replay can claim it again), spend claims are given back, nothing is reported.
    async fn hold(&self, subjects: &[Subject], held: Held, batch: &mut Batch) {
        for subject in subjects {
            if !self.options.dry_run {
                // `outcome = "held"` is what the dashboard's latest-failures widget lists.
                tracing::error!(%subject, outcome = "held", reason = %held.reason, fix = %held.fix,
                    reason_class = held.class.as_str(),
                    "held: the deployment or the tenant is at fault; not reported to Brex");
                self.release_spend(subject, batch).await;
                let now = self.clock.now();
                let retain = now + self.options.retention;
                if let Err(e) =
                    self.idempotency.hold(&IdempotencyKey::from(subject), &held.reason, &held.fix, now, retain).await
                {
                    // Not recorded as held: give the claim back so the redelivery is not kept waiting.
                    tracing::warn!(%subject, error = %e, "could not record the hold");
                    let _ = self.idempotency.release(&IdempotencyKey::from(subject)).await;
                }
            }
            batch.report.held.insert(subject.clone(), held.clone());
        }
    }

    /// Records the voucher on the spend claim. A failure here is survivable: the claim's holder history still
    /// names us, so whoever takes it over finds our voucher with the dedup query.
    async fn spend_posted(&self, c: &Candidate, holder: &ReferenceNumber, voucher: &str) {
        let Some(spend) = &c.spend else { return };
        let retain = self.clock.now() + self.options.retention;
        if let Err(e) = self.spend.posted(spend, holder, voucher, retain).await {
            tracing::warn!(subject = %c.subject, %spend, voucher, error = %e, "could not record the spend as posted");
        }
    }

    async fn dry_run(&self, subjects: Vec<Subject>, batch: &mut Batch) {
        if subjects.is_empty() {
            return;
        }
        for c in self.propose(&subjects, batch).await {
            tracing::info!(subject = %c.subject, outcome = "would_post",
                proposal = %serde_json::to_string(&c.proposal).unwrap_or_default(), "dry run: would post");
            batch.report.proposals.push(c.proposal);
        }
        // Every record is accounted for, not only the postable ones.
        let report = &batch.report;
        for (subject, reason) in &report.failed {
            tracing::warn!(%subject, outcome = "would_fail", reason, "dry run: would fail (reported to Brex)");
        }
        for (subject, held) in &report.held {
            tracing::warn!(%subject, outcome = "would_hold", reason = %held.reason, fix = %held.fix,
                "dry run: would be held (the deployment or tenant is at fault)");
        }
        for (subject, reason) in &report.retry {
            tracing::warn!(%subject, outcome = "would_retry", reason, "dry run: would be retried");
        }
        for (subject, reason) in &report.skipped {
            tracing::info!(%subject, outcome = "would_skip", reason, "dry run: would be skipped");
        }
    }

    /// Records the voucher; `false` when that failed and the subject is given back for a retry.
    async fn complete(&self, subject: &Subject, key: &str, batch: &mut Batch, new: bool) -> bool {
        let retain = self.clock.now() + self.options.retention;
        if let Err(e) = self.idempotency.complete(&IdempotencyKey::from(subject), Some(key), retain).await {
            // The voucher exists; a redelivery finds it with the dedup query and completes the subject then.
            tracing::warn!(%subject, voucher = key, error = %e, "posted but could not record it");
            batch.report.retry.insert(subject.clone(), format!("recording the voucher: {e}"));
            return false;
        }
        let done = if new { &mut batch.report.posted } else { &mut batch.report.already_posted };
        done.insert(subject.clone(), key.to_owned());
        true
    }

    async fn fail(&self, subject: &Subject, reason: &str, class: FailureClass, batch: &mut Batch) {
        if self.options.dry_run {
            batch.report.failed.insert(subject.clone(), reason.to_owned());
            batch.report.failure_classes.insert(subject.clone(), class);
            return;
        }
        tracing::warn!(%subject, reason, reason_class = class.as_str(), "failed permanently");
        self.release_spend(subject, batch).await;
        let retain = self.clock.now() + self.options.retention;
        if let Err(e) = self.idempotency.fail(&IdempotencyKey::from(subject), reason, retain).await {
            batch.report.retry.insert(subject.clone(), format!("recording the failure: {e}"));
            return;
        }
        batch.report.failed.insert(subject.clone(), reason.to_owned());
        batch.report.failure_classes.insert(subject.clone(), class);
    }

    async fn skip(&self, subject: &Subject, reason: &str, batch: &mut Batch) {
        if !self.options.dry_run {
            let _ = self.idempotency.release(&IdempotencyKey::from(subject)).await;
        }
        batch.report.skipped.insert(subject.clone(), reason.to_owned());
    }

    /// Drops our claims so the redelivery can start over at once.
    async fn give_back(&self, subjects: &[Subject], reason: &str, batch: &mut Batch) {
        for subject in subjects {
            if !self.options.dry_run {
                tracing::warn!(%subject, reason, "will retry");
                self.release_spend(subject, batch).await;
                if let Err(e) = self.idempotency.release(&IdempotencyKey::from(subject)).await {
                    // The lease expires by itself; the retry only waits longer.
                    tracing::warn!(%subject, error = %e, "could not release claim");
                }
            }
            batch.report.retry.insert(subject.clone(), reason.to_owned());
        }
    }

    async fn release_spend(&self, subject: &Subject, batch: &mut Batch) {
        if let Some(spend) = batch.spends.remove(subject)
            && let Err(e) = self.spend.release(&spend, &subject.reference()).await
        {
            tracing::warn!(%subject, %spend, error = %e, "could not release the spend claim; it expires by itself");
        }
    }

    /// Reports the batch's records to Brex; returns what each was told (for the audit trail).
    async fn report_to_brex(&self, report: &BatchReport) -> HashMap<Subject, BrexReport> {
        let mut told: HashMap<Subject, BrexReport> = HashMap::new();
        if !self.options.report_export_results {
            return told;
        }
        let mut exports: Vec<ExportOutcome> = Vec::new();
        // The mapping is cached; without one (or without `voucher_link`) no link is sent.
        let link = self.mapping.mapping().await.ok().and_then(|m| m.document.voucher_link.clone());
        for (subject, key) in report.posted.iter().chain(report.already_posted.iter()) {
            if let Subject::Record(id) = subject {
                let deep_link_url = link.as_ref().and_then(|l| l.render(key));
                exports.push(ExportOutcome::Success { id: id.clone(), reference_id: key.clone(), deep_link_url });
                told.insert(subject.clone(), BrexReport::Exported { voucher: key.clone() });
            }
        }
        for (subject, reason) in &report.failed {
            if let Subject::Record(id) = subject {
                exports.push(ExportOutcome::Failure { id: id.clone(), message: reason.clone() });
                told.insert(subject.clone(), BrexReport::Failed { reason: reason.clone() });
            }
        }
        if exports.is_empty() {
            return told;
        }
        if let Err(e) = self.records.report_export_results(&exports).await {
            // The vouchers stand and are recorded; completed records are re-reported whenever Brex hands
            // them to us again (webhook redelivery or the poller), so the status catches up.
            tracing::warn!(error = %e, results = exports.len(), "could not report export results to Brex");
            let error = e.to_string();
            told.values_mut().for_each(|t| *t = BrexReport::ReportFailed { error: error.clone() });
        }
        told
    }

    async fn write_audit(
        &self,
        report: &BatchReport,
        deliveries: &HashMap<Subject, (Origin, DateTime<Utc>)>,
        reported: &HashMap<Subject, BrexReport>,
    ) {
        let now = self.clock.now();
        let held: BTreeMap<Subject, String> =
            report.held.iter().map(|(s, h)| (s.clone(), format!("{} — fix: {}", h.reason, h.fix))).collect();
        let outcomes = [
            (AuditOutcome::Posted, &report.posted, true),
            (AuditOutcome::AlreadyPosted, &report.already_posted, true),
            (AuditOutcome::Failed, &report.failed, false),
            (AuditOutcome::Retry, &report.retry, false),
            (AuditOutcome::Held, &held, false),
            (AuditOutcome::Skipped, &report.skipped, false),
        ];
        let mut entries = Vec::new();
        for (outcome, subjects, is_voucher) in outcomes {
            for (subject, detail) in subjects {
                let mut entry = AuditEntry::new(now, outcome);
                if is_voucher {
                    entry.voucher = Some(detail.clone());
                } else {
                    entry.reason = Some(detail.clone());
                }
                if let Some((origin, enqueued_at)) = deliveries.get(subject) {
                    entry.origin = Some(origin.clone());
                    entry.enqueued_at = Some(*enqueued_at);
                }
                entry.mapping_version = report.mapping_version;
                entry.reported_to_brex = reported.get(subject).cloned();
                entry.note = report.notes.get(subject).cloned();
                (entry.brex_version, entry.revision) =
                    (report.versions.get(subject).copied(), report.revisions.get(subject).cloned());
                entries.push((subject.clone(), entry));
            }
        }
        if entries.is_empty() {
            return;
        }
        if let Err(e) = self.audit.append(&entries, now + self.options.retention).await {
            tracing::warn!(error = %e, entries = entries.len(), "could not write the audit trail");
        }
    }
}

/// The batch's outcomes as metrics (see [`crate::metrics::Metric`] for what each counts).
fn record_metrics(metrics: &Metrics, report: &BatchReport) {
    let company = |subject: &Subject| report.companies.get(subject).map(|c| dim("Company", c.as_str()));
    for (done, metric) in
        [(&report.posted, Metric::RecordsPosted), (&report.already_posted, Metric::RecordsAlreadyPosted)]
    {
        for subject in done.keys() {
            metrics.count(metric, 1, company(subject).unwrap_or_default());
        }
    }
    for class in report.failure_classes.values() {
        metrics.count(Metric::RecordsFailed, 1, dim("ReasonClass", class.as_str()));
    }
    for held in report.held.values() {
        metrics.count(Metric::RecordsHeld, 1, dim("ReasonClass", held.class.as_str()));
    }
    metrics.count(Metric::RecordsRetried, report.retry.len() as u64, Vec::new());
    metrics.count(Metric::RecordsSkipped, report.skipped.len() as u64, Vec::new());
    for ms in &report.post_latencies_ms {
        metrics.record(Metric::PostLatency, (*ms).max(0) as f64, Vec::new());
    }
}

fn fetch_error(e: &crate::error::ExternalError) -> String {
    format!("fetching from Brex: {e}")
}

fn held_from(reason: &str, e: &crate::error::ExternalError) -> Held {
    Held {
        reason: reason.to_owned(),
        fix: e.fix.clone().unwrap_or_else(|| GENERIC_FIX.into()),
        class: HoldClass::of(e),
    }
}

mod revise;
#[cfg(test)]
mod tests;
