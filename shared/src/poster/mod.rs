//! The poster: one SQS batch of work items → balanced vouchers in IFS, each Brex record posted exactly once.
//!
//! Per batch: parse every message on its own (a bad one fails alone); claim every record id in DynamoDB
//! (Powertools semantics, lease = the invocation's remaining time); fetch all claimed records from Brex in one
//! call; map and validate each; one IFS dedup query per company for the whole batch; create what is not in IFS
//! yet; record the outcome; report export results to Brex in one call; return only the messages that hold a
//! record worth retrying. Permanent failures are recorded and reported, never looped to the DLQ.

mod brex_source;
mod ifs_ledger;
mod ports;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::brex::model::{AccountingRecord, ReviewStatus};
use crate::domain::{AccountingRecordId, CompanyCode, ReferenceNumber, WorkItem};
use crate::error::Classify;
use crate::mapping::{map_record, validate_proposal};
use crate::ports::{Begin, Clock, IdempotencyStore};
use crate::proposal::Proposal;

pub use ports::{CachedMapping, ExportOutcome, FetchedRecords, Ledger, MappingLoadError, MappingSource, RecordSource};

#[derive(Debug, Clone)]
pub struct PosterOptions {
    pub report_export_results: bool,
    pub dry_run: bool,
    /// How long completed/failed records are remembered.
    pub retention: Duration,
    /// Added to the invocation's remaining time for the in-progress lease, so a lease never ends while its
    /// invocation may still be writing.
    pub lease_margin: Duration,
}

impl Default for PosterOptions {
    fn default() -> Self {
        Self {
            report_export_results: true,
            dry_run: false,
            retention: Duration::days(400),
            lease_margin: Duration::seconds(30),
        }
    }
}

/// One SQS message as the poster sees it.
#[derive(Debug, Clone)]
pub struct Message {
    pub message_id: String,
    pub body: String,
}

/// What happened to each record of a batch; logged, and asserted on by tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchReport {
    /// Newly created vouchers: record → voucher key.
    pub posted: BTreeMap<AccountingRecordId, String>,
    /// Found already in IFS (dedup) or completed before: record → voucher key.
    pub already_posted: BTreeMap<AccountingRecordId, String>,
    /// Permanent failures, recorded and reported to Brex.
    pub failed: BTreeMap<AccountingRecordId, String>,
    /// Retryable problems: the messages carrying these are returned to SQS.
    pub retry: BTreeMap<AccountingRecordId, String>,
    /// Not postable and not worth a retry (e.g. no longer READY_FOR_EXPORT).
    pub skipped: BTreeMap<AccountingRecordId, String>,
    /// `DRY_RUN`: the proposals that would have been posted.
    pub proposals: Vec<Proposal>,
    /// Message ids SQS must redeliver.
    pub failed_messages: Vec<String>,
}

pub struct Poster {
    pub records: Arc<dyn RecordSource>,
    pub ledger: Arc<dyn Ledger>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub mapping: Arc<dyn MappingSource>,
    pub clock: Arc<dyn Clock>,
    pub options: PosterOptions,
}

/// The idempotency key of a record (the poller reads these items to skip settled records).
pub(crate) fn record_key(id: &AccountingRecordId) -> String {
    format!("record#{id}")
}

impl Poster {
    /// Processes one batch. `deadline` is when the invocation will be cut off.
    pub async fn process(&self, messages: &[Message], deadline: DateTime<Utc>) -> BatchReport {
        let mut report = BatchReport::default();
        // record id → the messages carrying it (a record may arrive in several).
        let mut carriers: BTreeMap<AccountingRecordId, Vec<String>> = BTreeMap::new();
        let mut bad_messages: HashSet<String> = HashSet::new();
        for message in messages {
            match serde_json::from_str::<WorkItem>(&message.body) {
                Ok(WorkItem::AccountingRecords { ids, .. }) => {
                    for id in ids {
                        carriers.entry(id).or_default().push(message.message_id.clone());
                    }
                }
                Ok(WorkItem::Expenses { ids, .. }) => {
                    // Not posted by this version: keep them (redelivery, then the DLQ) rather than drop them.
                    tracing::error!(message_id = %message.message_id, ids = ids.len(), "expense work items are not supported yet");
                    bad_messages.insert(message.message_id.clone());
                }
                Err(e) => {
                    // Cannot succeed on retry either; the DLQ keeps it as evidence after maxReceiveCount.
                    tracing::error!(message_id = %message.message_id, error = %e, "malformed work item");
                    bad_messages.insert(message.message_id.clone());
                }
            }
        }

        if self.options.dry_run {
            self.dry_run(carriers.keys().cloned().collect(), &mut report).await;
        } else {
            let now = self.clock.now();
            let lease_until = deadline.max(now) + self.options.lease_margin;
            let mut mine = Vec::new();
            for id in carriers.keys() {
                match self.idempotency.begin(&record_key(id), lease_until, now).await {
                    Ok(Begin::Started) => mine.push(id.clone()),
                    Ok(Begin::Completed { result }) => {
                        report.already_posted.insert(id.clone(), result.unwrap_or_default());
                    }
                    Ok(Begin::Failed { reason }) => {
                        report.failed.insert(id.clone(), reason);
                    }
                    Ok(Begin::InProgress { .. }) => {
                        report.retry.insert(id.clone(), "another invocation is posting it".into());
                    }
                    Err(e) => {
                        report.retry.insert(id.clone(), format!("idempotency store: {e}"));
                    }
                }
            }
            if !mine.is_empty() {
                self.post_claimed(&mine, &mut report).await;
            }
            self.report_to_brex(&report).await;
        }

        for id in report.retry.keys() {
            if let Some(ids) = carriers.get(id) {
                bad_messages.extend(ids.iter().cloned());
            }
        }
        let mut failed_messages: Vec<String> = bad_messages.into_iter().collect();
        failed_messages.sort();
        report.failed_messages = failed_messages;
        tracing::info!(
            posted = report.posted.len(),
            already_posted = report.already_posted.len(),
            failed = report.failed.len(),
            retry = report.retry.len(),
            skipped = report.skipped.len(),
            failed_messages = report.failed_messages.len(),
            dry_run = self.options.dry_run,
            "batch done"
        );
        report
    }

    /// Everything after the claims: fetch, map, validate, dedup, create, record.
    async fn post_claimed(&self, ids: &[AccountingRecordId], report: &mut BatchReport) {
        let fetched = match self.records.fetch_records(ids).await {
            Ok(fetched) => fetched,
            Err(e) => {
                self.give_back(ids, &format!("fetching from Brex: {e}"), report).await;
                return;
            }
        };
        for id in &fetched.missing {
            self.fail(id, "Brex does not know this accounting record", report).await;
        }
        for (id, why) in &fetched.malformed {
            self.fail(id, &format!("Brex record could not be read: {why}"), report).await;
        }

        let mapping = match self.mapping.mapping().await {
            Ok(mapping) => mapping,
            Err(e) => {
                let claimed: Vec<_> = fetched.records.iter().map(|r| r.id.clone()).collect();
                tracing::error!(error = %e, "no usable mapping document; records wait for one");
                self.give_back(&claimed, &format!("mapping document: {e}"), report).await;
                return;
            }
        };

        let mut proposals: Vec<(AccountingRecord, Proposal)> = Vec::new();
        for record in fetched.records {
            if record.review_status != ReviewStatus::ReadyForExport {
                // Edited back in Brex (or exported elsewhere): nothing to post now. Dropping the claim lets a
                // later READY_FOR_EXPORT event post it.
                let _ = self.idempotency.release(&record_key(&record.id)).await;
                report.skipped.insert(record.id.clone(), format!("review status is {:?}", record.review_status));
                continue;
            }
            let proposal = match map_record(&mapping.document, &record) {
                Ok(p) => p,
                Err(e) => {
                    self.fail(&record.id, &e.to_string(), report).await;
                    continue;
                }
            };
            match validate_proposal(&proposal, self.ledger.as_chart()).await {
                Ok(()) => proposals.push((record, proposal)),
                Err(e) if e.is_retryable() => {
                    self.give_back(std::slice::from_ref(&record.id), &e.to_string(), report).await
                }
                Err(e) => self.fail(&record.id, &e.to_string(), report).await,
            }
        }

        // One dedup query per company for the whole batch.
        let mut by_company: BTreeMap<(CompanyCode, String), Vec<ReferenceNumber>> = BTreeMap::new();
        for (_, p) in &proposals {
            by_company
                .entry((p.company.clone(), p.reference_serie.clone()))
                .or_default()
                .push(p.reference_number.clone());
        }
        let mut existing = std::collections::HashMap::new();
        let mut dedup_failed: HashSet<CompanyCode> = HashSet::new();
        for ((company, serie), refs) in &by_company {
            match self.ledger.find_posted(company, serie, refs).await {
                Ok(found) => existing.extend(found),
                Err(e) => {
                    tracing::warn!(%company, error = %e, "IFS dedup query failed");
                    dedup_failed.insert(company.clone());
                }
            }
        }

        for (record, proposal) in proposals {
            let id = record.id.clone();
            if dedup_failed.contains(&proposal.company) {
                self.give_back(&[id], "IFS dedup query failed", report).await;
                continue;
            }
            if let Some(key) = existing.get(&proposal.reference_number) {
                self.complete(&id, key, report, false).await;
                continue;
            }
            match self.ledger.create_voucher(&proposal).await {
                Ok(key) => {
                    tracing::info!(record = %id, voucher = %key, version = record.version, "posted");
                    self.complete(&id, &key, report, true).await;
                }
                Err(e) if e.is_retryable() => self.give_back(&[id], &e.to_string(), report).await,
                Err(e) => self.fail(&id, &e.to_string(), report).await,
            }
        }
    }

    async fn dry_run(&self, ids: Vec<AccountingRecordId>, report: &mut BatchReport) {
        if ids.is_empty() {
            return;
        }
        let fetched = match self.records.fetch_records(&ids).await {
            Ok(f) => f,
            Err(e) => {
                for id in ids {
                    report.retry.insert(id, format!("fetching from Brex: {e}"));
                }
                return;
            }
        };
        let mapping = match self.mapping.mapping().await {
            Ok(m) => m,
            Err(e) => {
                for r in fetched.records {
                    report.retry.insert(r.id, format!("mapping document: {e}"));
                }
                return;
            }
        };
        for record in fetched.records {
            match map_record(&mapping.document, &record) {
                Ok(p) => match validate_proposal(&p, self.ledger.as_chart()).await {
                    Ok(()) => {
                        tracing::info!(record = %record.id, proposal = %serde_json::to_string(&p).unwrap_or_default(), "dry run: would post");
                        report.proposals.push(p);
                    }
                    Err(e) => {
                        report.failed.insert(record.id, e.to_string());
                    }
                },
                Err(e) => {
                    report.failed.insert(record.id, e.to_string());
                }
            }
        }
    }

    async fn complete(&self, id: &AccountingRecordId, key: &str, report: &mut BatchReport, new: bool) {
        let retain = self.clock.now() + self.options.retention;
        if let Err(e) = self.idempotency.complete(&record_key(id), Some(key), retain).await {
            // The voucher exists; a redelivery finds it with the dedup query and completes the record then.
            tracing::warn!(record = %id, voucher = key, error = %e, "posted but could not record it");
            report.retry.insert(id.clone(), format!("recording the voucher: {e}"));
            return;
        }
        if new {
            report.posted.insert(id.clone(), key.to_owned());
        } else {
            report.already_posted.insert(id.clone(), key.to_owned());
        }
    }

    async fn fail(&self, id: &AccountingRecordId, reason: &str, report: &mut BatchReport) {
        tracing::warn!(record = %id, reason, "record failed permanently");
        let retain = self.clock.now() + self.options.retention;
        if let Err(e) = self.idempotency.fail(&record_key(id), reason, retain).await {
            report.retry.insert(id.clone(), format!("recording the failure: {e}"));
            return;
        }
        report.failed.insert(id.clone(), reason.to_owned());
    }

    /// Drops our claims so the redelivery can start over at once.
    async fn give_back(&self, ids: &[AccountingRecordId], reason: &str, report: &mut BatchReport) {
        for id in ids {
            tracing::warn!(record = %id, reason, "will retry");
            if let Err(e) = self.idempotency.release(&record_key(id)).await {
                // The lease expires by itself; the retry only waits longer.
                tracing::warn!(record = %id, error = %e, "could not release claim");
            }
            report.retry.insert(id.clone(), reason.to_owned());
        }
    }

    async fn report_to_brex(&self, report: &BatchReport) {
        if !self.options.report_export_results {
            return;
        }
        let mut exports: Vec<ExportOutcome> = Vec::new();
        for (id, key) in report.posted.iter().chain(report.already_posted.iter()) {
            exports.push(ExportOutcome::Success { id: id.clone(), reference_id: key.clone() });
        }
        for (id, reason) in &report.failed {
            exports.push(ExportOutcome::Failure { id: id.clone(), message: reason.clone() });
        }
        if exports.is_empty() {
            return;
        }
        if let Err(e) = self.records.report_export_results(&exports).await {
            // The vouchers stand and are recorded; completed records are re-reported whenever Brex hands them
            // to us again (webhook redelivery or the poller), so the status catches up.
            tracing::warn!(error = %e, results = exports.len(), "could not report export results to Brex");
        }
    }
}
