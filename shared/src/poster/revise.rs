//! The poster's side of changes after export (the logic is [`crate::revision`]'s): which version each voucher
//! was posted from is remembered, and a completed subject handed to us again is compared with what Brex has
//! now before the posted voucher is reported again.

use std::collections::HashMap;

use super::{Batch, Candidate, GENERIC_FIX, Held, HoldClass, Poster};
use crate::brex::model::{AccountingRecord, ReviewStatus};
use crate::domain::Subject;
use crate::error::{Classify, Disposition};
use crate::mapping::{check_proposal, map_record};
use crate::ports::PostedVersion;
use crate::revision::{Change, Decision, NotRevised, Reviser, decide, same_booking};

impl Poster {
    /// Remembers which voucher `c` was posted as and from which Brex version. A failure only costs the
    /// comparison later: the subject is then re-reported as it always was.
    pub(super) async fn remember_posted(&self, c: &Candidate, voucher: &str, batch: &mut Batch) {
        let posted = PostedVersion { version: c.version, voucher: voucher.to_owned(), proposal: c.proposal.clone() };
        let retain = self.clock.now() + self.options.retention;
        if let Err(e) = self.idempotency.record_posted(&c.subject, &posted, retain).await {
            tracing::warn!(subject = %c.subject, voucher, error = %e, "could not record the posted version");
        }
        batch.report.versions.insert(c.subject.clone(), c.version);
    }

    /// Subjects completed before: re-reported with their voucher, unless Brex has changed what the voucher
    /// books since; then `[ifs] changed_after_export` decides (see [`crate::revision`]).
    pub(super) async fn completed(&self, done: Vec<(Subject, Option<String>)>, batch: &mut Batch) {
        let mut known: HashMap<Subject, PostedVersion> = HashMap::new();
        for (subject, result) in done {
            match self.idempotency.posted_voucher(&subject).await {
                Ok(Some(posted)) => {
                    known.insert(subject, posted);
                }
                // Posted before versions were kept, or unreadable: as it always was.
                Ok(None) => {
                    batch.report.already_posted.insert(subject, result.unwrap_or_default());
                }
                Err(e) => {
                    tracing::warn!(%subject, error = %e, "could not read the posted version; reported again");
                    batch.report.already_posted.insert(subject, result.unwrap_or_default());
                }
            }
        }
        if known.is_empty() {
            return;
        }
        let subjects: Vec<Subject> = known.keys().cloned().collect();
        let views = self.fetch_completed(&subjects, batch).await;
        let mapping = match self.mapping.mapping().await {
            Ok(mapping) => mapping,
            Err(e) => {
                tracing::warn!(error = %e, "no usable mapping document; completed records are reported again");
                for (subject, posted) in known {
                    batch.report.already_posted.insert(subject, posted.voucher);
                }
                return;
            }
        };
        self.ledger.use_api(&mapping.document.api);
        batch.report.mapping_version = Some(mapping.version);
        for (subject, view) in views {
            let Some(posted) = known.remove(&subject) else { continue };
            self.judge(subject, posted, view, &mapping.document, batch).await;
        }
        // Not returned by Brex (or unreadable): nothing to compare with.
        for (subject, posted) in known {
            if !batch.report.retry.contains_key(&subject) {
                batch.report.already_posted.insert(subject, posted.voucher);
            }
        }
    }

    async fn judge(
        &self,
        subject: Subject,
        posted: PostedVersion,
        view: AccountingRecord,
        document: &crate::mapping::MappingDocument,
        batch: &mut Batch,
    ) {
        let again = |batch: &mut Batch, subject: Subject, posted: PostedVersion| {
            batch.report.already_posted.insert(subject, posted.voucher);
        };
        if view.version <= posted.version {
            return again(batch, subject, posted);
        }
        let ready = view.review_status == ReviewStatus::ReadyForExport;
        let mut proposal = match map_record(document, &view) {
            Ok(p) => p,
            Err(e) if ready => {
                let reason = format!(
                    "changed in Brex after export (version {} posted as {}), and version {} cannot be mapped: {e}",
                    posted.version, posted.voucher, view.version
                );
                let fix = "fix the coding in Brex or the mapping document, then `connector replay`".to_owned();
                batch.report.held.insert(subject, Held { reason, fix, class: HoldClass::ChangedAfterExport });
                return;
            }
            Err(_) => return again(batch, subject, posted),
        };
        // A date moved out of a closed period when it was posted is compared as moved.
        if !same_booking(&posted.proposal, &proposal)
            && let Err(e) = check_proposal(&mut proposal, document.closed_period, self.ledger.as_chart()).await
        {
            if !ready {
                return again(batch, subject, posted);
            }
            let fix = e.fix().unwrap_or_else(|| GENERIC_FIX.into());
            let held = Held { reason: format!("version {}: {e}", view.version), fix, class: HoldClass::Ifs };
            match e.disposition() {
                Disposition::Retryable => {
                    batch.report.retry.insert(subject, held.reason);
                }
                _ => {
                    batch.report.held.insert(subject, held);
                }
            }
            return;
        }
        match decide(&posted, view.version, &proposal, document.changed_after_export) {
            Decision::Unchanged => again(batch, subject, posted),
            _ if !ready => {
                let why = format!(
                    "changed in Brex after export (version {} → {}) and now {:?}: waits until it is ready for export",
                    posted.version, view.version, view.review_status
                );
                batch.report.skipped.insert(subject, why);
            }
            Decision::Hold { reason, fix } => {
                tracing::warn!(%subject, reason, fix, "changed after export: held for a person");
                batch.report.held.insert(subject, Held { reason, fix, class: HoldClass::ChangedAfterExport });
            }
            Decision::Revise(policy) => {
                let company = proposal.company.clone();
                let version = view.version;
                let change = Change { subject: subject.clone(), posted, version, proposal, policy };
                let reviser = Reviser { ledger: self.ledger.as_ref(), idempotency: self.idempotency.as_ref() };
                let now = self.clock.now();
                let retain = now + self.options.retention;
                match reviser.revise(change, batch.lease_until, now, retain).await {
                    Ok(revised) => {
                        batch.report.companies.insert(subject.clone(), company);
                        batch.report.versions.insert(subject.clone(), version);
                        match revised.audit {
                            Some(audit) => {
                                batch.report.revisions.insert(subject.clone(), audit);
                                batch.report.posted.insert(subject, revised.voucher);
                            }
                            None => {
                                batch.report.already_posted.insert(subject, revised.voucher);
                            }
                        }
                    }
                    Err(NotRevised::Busy) => {
                        batch.report.retry.insert(subject, "another invocation is revising it".into());
                    }
                    Err(NotRevised::Failed(e)) if e.disposition == Disposition::Retryable => {
                        batch.report.retry.insert(subject, format!("changed after export: {e}"));
                    }
                    Err(NotRevised::Failed(e)) => {
                        let held = Held {
                            reason: format!("changed after export, version {version} not booked: {e}"),
                            fix: e.fix.clone().unwrap_or_else(|| GENERIC_FIX.into()),
                            class: HoldClass::of(&e),
                        };
                        batch.report.held.insert(subject, held);
                    }
                }
            }
        }
    }

    /// What Brex has now for completed subjects. A fetch that fails sends them back for a retry; ids Brex
    /// does not return are left to the caller (reported again).
    async fn fetch_completed(&self, subjects: &[Subject], batch: &mut Batch) -> Vec<(Subject, AccountingRecord)> {
        let mut views = Vec::new();
        let (record_ids, expense_ids) = Subject::split(subjects);
        if !record_ids.is_empty() {
            match self.records.fetch_records(&record_ids).await {
                Ok(fetched) => {
                    views.extend(fetched.records.into_iter().map(|r| (Subject::Record(r.id.clone()), r)));
                }
                Err(e) => {
                    for id in record_ids {
                        batch.report.retry.insert(Subject::Record(id), super::fetch_error(&e));
                    }
                }
            }
        }
        if !expense_ids.is_empty() {
            match self.records.fetch_expenses(&expense_ids).await {
                Ok(fetched) => {
                    for expense in fetched.expenses {
                        if let Ok(view) = expense.as_record() {
                            views.push((Subject::Expense(expense.id.clone()), view));
                        }
                    }
                }
                Err(e) => {
                    for id in expense_ids {
                        batch.report.retry.insert(Subject::Expense(id), super::fetch_error(&e));
                    }
                }
            }
        }
        views
    }
}
