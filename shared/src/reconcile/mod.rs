//! Reconciliation (read-only): do Brex and IFS agree on what the connector posted?
//!
//! Every subject the poster completed (the table's COMPLETED idempotency items, with their voucher key) must
//! have exactly that voucher in IFS's hold table, and for an accounting record the voucher's total must be
//! the record's amount (Brex, fetched ≤ 500 ids a call). Every IFS voucher of the mapping's
//! `ReferenceSerie` must belong to a completed subject. What disagrees is listed with the operator's fix and
//! counted by kind. IFS is read in pages within the request budget; nothing is written to IFS or Brex.
//!
//! `since` limits which completed subjects are checked (by their last update); the IFS side is always read
//! whole, and a voucher counts as the connector's when any completed subject — of any age the table still
//! remembers — names it, so an old voucher is not reported as extra because it fell out of the window.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{AccountingRecordId, Subject};
use crate::error::{AwsError, ExternalError};
use crate::mapping::MappingDocument;
use crate::ports::{
    Clock, CompletedSubject, CompletedSubjects, MappingSource, PostedVoucher, ReconcileStore, RecordSource,
    SystemClock, VoucherListing,
};

/// Brex's documented maximum of ids per records query.
const FETCH_CHUNK: usize = 500;

/// What kind of disagreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// Completed with a voucher IFS does not hold.
    MissingVoucher,
    /// An IFS voucher of the connector's `ReferenceSerie` that no completed subject names.
    ExtraVoucher,
    /// The voucher's total is not the record's amount (or not in its currency).
    AmountMismatch,
}

impl DifferenceKind {
    pub const ALL: [DifferenceKind; 3] = [Self::MissingVoucher, Self::ExtraVoucher, Self::AmountMismatch];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingVoucher => "missing_voucher",
            Self::ExtraVoucher => "extra_voucher",
            Self::AmountMismatch => "amount_mismatch",
        }
    }
}

/// One disagreement, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub kind: DifferenceKind,
    /// The Brex record or expense, when there is one (`None` for an extra voucher whose reference names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The IFS voucher key.
    pub voucher: String,
    pub detail: String,
    pub fix: String,
}

/// One reconciliation run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub checked_at: DateTime<Utc>,
    /// The day it ran (UTC); the poller runs it once per day.
    pub run_day: NaiveDate,
    pub since: DateTime<Utc>,
    pub reference_serie: String,
    /// Completed subjects updated since `since`, each checked against IFS.
    pub subjects_checked: usize,
    /// Of those, accounting records whose amount was compared with their voucher.
    pub amounts_checked: usize,
    /// Completed subjects the table remembers in all.
    pub subjects_completed: usize,
    /// Vouchers of `reference_serie` in IFS.
    pub vouchers_in_ifs: usize,
    /// Records Brex no longer returned (their amount could not be compared).
    pub not_in_brex: Vec<String>,
    pub differences: Vec<Difference>,
}

impl ReconcileReport {
    /// Differences by kind (every kind present, zero included).
    pub fn counts(&self) -> BTreeMap<DifferenceKind, usize> {
        let mut counts: BTreeMap<DifferenceKind, usize> = DifferenceKind::ALL.iter().map(|k| (*k, 0)).collect();
        for d in &self.differences {
            *counts.entry(d.kind).or_default() += 1;
        }
        counts
    }

    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading the table: {0}")]
    Table(#[from] AwsError),
    #[error("reading IFS: {0}")]
    Ifs(ExternalError),
    #[error("reading Brex: {0}")]
    Brex(ExternalError),
    #[error("mapping document: {0}")]
    Mapping(String),
}

/// The fix for a voucher the table names but IFS does not hold.
fn missing_fix(subject: &Subject, voucher: &str) -> String {
    format!(
        "check in IFS whether voucher {voucher} was deleted or renumbered on purpose; if it should exist, undo the \
         record's export in Brex (Ready for export again) and run `connector replay --completed {id}` (the \
         poster's dedup query still finds the voucher if it exists after all)",
        id = subject
    )
}

const EXTRA_FIX: &str = "no Brex record was exported with this voucher: investigate it in IFS (a manual entry \
    with the connector's ReferenceSerie, a duplicate, or a voucher posted while its record's idempotency item was \
    lost) and remove or reverse it there if nobody meant it; the connector never deletes in IFS";

fn mismatch_fix(voucher: &str) -> String {
    format!(
        "compare voucher {voucher} with the record in Brex: if the voucher was edited in IFS, correct it there; \
         if the record changed in Brex after it was exported, post the difference by hand in IFS"
    )
}

/// Checks the two sides (see the module documentation).
pub struct Reconciler {
    pub ifs: Arc<dyn VoucherListing>,
    pub table: Arc<dyn CompletedSubjects>,
    pub brex: Arc<dyn RecordSource>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").finish_non_exhaustive()
    }
}

impl Reconciler {
    pub fn new(ifs: Arc<dyn VoucherListing>, table: Arc<dyn CompletedSubjects>, brex: Arc<dyn RecordSource>) -> Self {
        Self { ifs, table, brex, clock: Arc::new(SystemClock) }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Compares the subjects completed since `since` with IFS, and every IFS voucher of the mapping's
    /// `ReferenceSerie` with the table.
    pub async fn run(
        &self,
        mapping: &MappingDocument,
        since: DateTime<Utc>,
    ) -> Result<ReconcileReport, ReconcileError> {
        let serie = mapping.reference_serie.clone();
        let completed = self.table.completed_subjects().await?;
        let vouchers = self.ifs.vouchers_in_serie(&serie).await.map_err(ReconcileError::Ifs)?;
        let now = self.clock.now();
        let by_key: HashMap<&str, &PostedVoucher> = vouchers.iter().map(|v| (v.key.as_str(), v)).collect();
        let claimed: HashSet<&str> = completed.iter().map(|c| c.voucher.as_str()).collect();
        let known_ids: HashSet<String> = completed.iter().map(|c| c.subject.to_string()).collect();
        let in_window: Vec<&CompletedSubject> =
            completed.iter().filter(|c| c.updated_at.is_none_or(|at| at >= since)).collect();

        let mut differences = Vec::new();
        let mut to_compare: Vec<(AccountingRecordId, &PostedVoucher)> = Vec::new();
        for c in &in_window {
            match by_key.get(c.voucher.as_str()) {
                None => {
                    let reference = c.subject.to_string();
                    let elsewhere: Vec<&str> =
                        vouchers.iter().filter(|v| v.references.contains(&reference)).map(|v| v.key.as_str()).collect();
                    let detail = if elsewhere.is_empty() {
                        format!("completed with voucher {} which IFS does not hold", c.voucher)
                    } else {
                        format!(
                            "completed with voucher {} which IFS does not hold; IFS holds {} with its reference",
                            c.voucher,
                            elsewhere.join(", ")
                        )
                    };
                    differences.push(Difference {
                        kind: DifferenceKind::MissingVoucher,
                        subject: Some(c.subject.to_string()),
                        voucher: c.voucher.clone(),
                        detail,
                        fix: missing_fix(&c.subject, &c.voucher),
                    });
                }
                Some(voucher) => {
                    if let Subject::Record(id) = &c.subject {
                        to_compare.push((id.clone(), voucher));
                    }
                }
            }
        }

        let mut not_in_brex = Vec::new();
        let mut amounts_checked = 0;
        for chunk in to_compare.chunks(FETCH_CHUNK) {
            let ids: Vec<AccountingRecordId> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let fetched = self.brex.fetch_records(&ids).await.map_err(ReconcileError::Brex)?;
            let records: HashMap<&AccountingRecordId, _> = fetched.records.iter().map(|r| (&r.id, r)).collect();
            for (id, voucher) in chunk {
                let Some(record) = records.get(id) else {
                    not_in_brex.push(id.to_string());
                    continue;
                };
                amounts_checked += 1;
                let expected = record.amount.amount.abs();
                let currency = record.amount.currency.to_string();
                let same_currency = voucher.currencies.len() == 1 && voucher.currencies.contains(&currency);
                if voucher.debit_total != expected || voucher.credit_total != expected || !same_currency {
                    differences.push(Difference {
                        kind: DifferenceKind::AmountMismatch,
                        subject: Some(Subject::Record(id.clone()).to_string()),
                        voucher: voucher.key.clone(),
                        detail: format!(
                            "record {expected} {currency}, voucher debit {} / credit {} {}",
                            voucher.debit_total,
                            voucher.credit_total,
                            voucher.currencies.iter().cloned().collect::<Vec<_>>().join("+")
                        ),
                        fix: mismatch_fix(&voucher.key),
                    });
                }
            }
        }

        for voucher in &vouchers {
            if claimed.contains(voucher.key.as_str()) {
                continue;
            }
            let subject = voucher.references.iter().next().cloned();
            let known = voucher.references.iter().any(|r| known_ids.contains(r));
            let detail = format!(
                "{} row(s), debit {}, reference {}{}",
                voucher.rows,
                voucher.debit_total,
                if voucher.references.is_empty() {
                    "(none)".to_owned()
                } else {
                    voucher.references.iter().cloned().collect::<Vec<_>>().join(", ")
                },
                if known { " — that record completed with another voucher (a duplicate)" } else { "" }
            );
            differences.push(Difference {
                kind: DifferenceKind::ExtraVoucher,
                subject,
                voucher: voucher.key.clone(),
                detail,
                fix: EXTRA_FIX.to_owned(),
            });
        }
        differences.sort_by(|a, b| (a.kind, &a.voucher, &a.subject).cmp(&(b.kind, &b.voucher, &b.subject)));

        Ok(ReconcileReport {
            checked_at: now,
            run_day: now.date_naive(),
            since,
            reference_serie: serie,
            subjects_checked: in_window.len(),
            amounts_checked,
            subjects_completed: completed.len(),
            vouchers_in_ifs: vouchers.len(),
            not_in_brex,
            differences,
        })
    }
}

/// How the poller's daily reconciliation went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum DailyOutcome {
    /// Already ran today (the stored report's `run_day`).
    AlreadyRan {
        run_day: NaiveDate,
    },
    /// Ran; the counts by kind.
    Ran {
        differences: BTreeMap<DifferenceKind, usize>,
        subjects_checked: usize,
        vouchers_in_ifs: usize,
    },
    Failed {
        error: String,
    },
}

/// The reconciliation as the poller runs it: once per UTC day, over the last `window`, the report logged and
/// stored as the latest (which also records the day).
pub struct DailyReconcile {
    pub reconciler: Reconciler,
    pub mapping: Arc<dyn MappingSource>,
    pub store: Arc<dyn ReconcileStore>,
    pub window: chrono::Duration,
}

impl std::fmt::Debug for DailyReconcile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DailyReconcile").field("window", &self.window).finish_non_exhaustive()
    }
}

impl DailyReconcile {
    /// The window when none is given: a month, like `connector reconcile`'s default.
    pub const DEFAULT_WINDOW_DAYS: i64 = 30;

    pub async fn run_if_due(&self) -> DailyOutcome {
        let today = self.reconciler.clock.now().date_naive();
        match self.store.load_latest().await {
            Ok(Some(last)) if last.run_day >= today => return DailyOutcome::AlreadyRan { run_day: last.run_day },
            Ok(_) => {}
            Err(e) => return DailyOutcome::Failed { error: format!("reading the last report: {e}") },
        }
        let mapping = match self.mapping.mapping().await {
            Ok(m) => m,
            Err(e) => return DailyOutcome::Failed { error: ReconcileError::Mapping(e.to_string()).to_string() },
        };
        let since = self.reconciler.clock.now() - self.window;
        let report = match self.reconciler.run(&mapping.document, since).await {
            Ok(report) => report,
            Err(e) => return DailyOutcome::Failed { error: e.to_string() },
        };
        log_report(&report);
        if let Err(e) = self.store.save(&report).await {
            return DailyOutcome::Failed { error: format!("storing the report: {e}") };
        }
        DailyOutcome::Ran {
            differences: report.counts(),
            subjects_checked: report.subjects_checked,
            vouchers_in_ifs: report.vouchers_in_ifs,
        }
    }
}

/// One line per difference at WARN (they are the operator's), the summary at INFO.
pub fn log_report(report: &ReconcileReport) {
    for d in &report.differences {
        tracing::warn!(kind = d.kind.as_str(), subject = ?d.subject, voucher = %d.voucher, detail = %d.detail, fix = %d.fix, "reconciliation difference");
    }
    let counts: BTreeMap<&str, usize> = report.counts().into_iter().map(|(k, n)| (k.as_str(), n)).collect();
    tracing::info!(
        subjects_checked = report.subjects_checked,
        amounts_checked = report.amounts_checked,
        vouchers_in_ifs = report.vouchers_in_ifs,
        differences = ?counts,
        "reconciliation finished"
    );
}

#[cfg(test)]
mod tests;
