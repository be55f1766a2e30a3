//! The audit trail: what happened to each Brex record or expense, when, how it reached us, which mapping
//! version judged it and what Brex was told. Written by the poster, read by `connector trace`.
//!
//! Writing it never decides an outcome: a failed audit write is logged and the posting stands.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Origin;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// A new voucher was created.
    Posted,
    /// Found in IFS already (dedup) or completed before.
    AlreadyPosted,
    /// Failed permanently (mapping or IFS validation).
    Failed,
    /// A retryable problem; SQS redelivers.
    Retry,
    /// The deployment or tenant is at fault: held until fixed, never reported to Brex as failed.
    Held,
    /// Not postable now (e.g. no longer READY_FOR_EXPORT), not retried.
    Skipped,
}

/// One attempt at a subject, as the poster saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub outcome: AuditOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voucher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the work item reached the queue (webhook id, poll, backfill, replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_version: Option<i64>,
    /// What Brex was told through export-results: `None` when nothing was reported (expenses, retries,
    /// holds, reporting off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_to_brex: Option<BrexReport>,
    /// What the poster changed on the way, e.g. a voucher date moved out of a closed IFS period
    /// (`[ifs] closed_period = "next_open"`). Absent in entries written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The Brex `version` the voucher of this attempt was made from (entries before it was kept have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brex_version: Option<i64>,
    /// A change after export: which version and voucher this one took the place of, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<RevisionAudit>,
}

/// One change after export as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionAudit {
    pub from_version: i64,
    pub from_voucher: String,
    pub to_version: i64,
    pub to_voucher: String,
    pub undone: Undone,
}

/// How the old voucher was taken out of the books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Undone {
    /// Removed from the hold table before anyone approved it.
    Removed,
    /// Approved already: a reversal voucher (same rows, sides swapped) cancels it.
    Reversed { reversal: String },
}

impl std::fmt::Display for RevisionAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match &self.undone {
            Undone::Removed => "removed from the hold table (replaced)".to_owned(),
            Undone::Reversed { reversal } => format!("reversed by {reversal}"),
        };
        write!(
            f,
            "version {} posted as {}; version {}'s voucher {} {how}",
            self.to_version, self.to_voucher, self.from_version, self.from_voucher
        )
    }
}

impl AuditEntry {
    pub fn new(at: DateTime<Utc>, outcome: AuditOutcome) -> Self {
        Self {
            at,
            outcome,
            voucher: None,
            reason: None,
            origin: None,
            enqueued_at: None,
            mapping_version: None,
            reported_to_brex: None,
            note: None,
            brex_version: None,
            revision: None,
        }
    }
}

/// What the poster told Brex about a record through export-results.
///
/// Stored as `{"told": "exported", "voucher": …}`, `{"told": "failed", "reason": …}` or
/// `{"told": "report_failed", "error": …}`. Entries written before it was typed hold `{"Ok": "EXPORTED <voucher>"}`,
/// `{"Ok": "FAILED: <reason>"}` or `{"Err": "<error>"}`, and still read (they stay in the table for the retention).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "told", rename_all = "snake_case", try_from = "StoredReport")]
pub enum BrexReport {
    /// Brex took the record as exported with this voucher key.
    Exported { voucher: String },
    /// Brex took the record as failed, with this reason.
    Failed { reason: String },
    /// The export-results call failed: Brex knows nothing new, and the record's message is redelivered to
    /// report it again.
    ReportFailed { error: String },
}

impl BrexReport {
    /// Whether Brex took the report.
    pub fn reached_brex(&self) -> bool {
        !matches!(self, Self::ReportFailed { .. })
    }
}

/// A stored [`BrexReport`], in either of its shapes.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredReport {
    Typed(TypedReport),
    Untyped(Result<String, String>),
}

/// [`BrexReport`]'s own shape (serde cannot derive both it and the fallback on one type).
#[derive(Deserialize)]
#[serde(tag = "told", rename_all = "snake_case")]
enum TypedReport {
    Exported { voucher: String },
    Failed { reason: String },
    ReportFailed { error: String },
}

impl TryFrom<StoredReport> for BrexReport {
    type Error = String;

    fn try_from(stored: StoredReport) -> Result<Self, String> {
        Ok(match stored {
            StoredReport::Typed(TypedReport::Exported { voucher }) => Self::Exported { voucher },
            StoredReport::Typed(TypedReport::Failed { reason }) => Self::Failed { reason },
            StoredReport::Typed(TypedReport::ReportFailed { error }) => Self::ReportFailed { error },
            StoredReport::Untyped(Err(error)) => Self::ReportFailed { error },
            StoredReport::Untyped(Ok(told)) => match (told.strip_prefix("EXPORTED "), told.strip_prefix("FAILED: ")) {
                (Some(voucher), _) => Self::Exported { voucher: voucher.to_owned() },
                (_, Some(reason)) => Self::Failed { reason: reason.to_owned() },
                _ => return Err(format!("not a report to Brex: {told:?}")),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_untyped_entries_still_read() {
        let reports = [
            BrexReport::Exported { voucher: "10-2026-M-1".into() },
            BrexReport::Failed { reason: "no GL account".into() },
            BrexReport::ReportFailed { error: "brex: 503".into() },
        ];
        for report in &reports {
            let json = serde_json::to_string(report).unwrap();
            assert_eq!(&serde_json::from_str::<BrexReport>(&json).unwrap(), report, "{json}");
        }
        assert_eq!(
            serde_json::to_value(&reports[0]).unwrap(),
            serde_json::json!({ "told": "exported", "voucher": "10-2026-M-1" })
        );
        let untyped =
            [r#"{"Ok":"EXPORTED 10-2026-M-1"}"#, r#"{"Ok":"FAILED: no GL account"}"#, r#"{"Err":"brex: 503"}"#];
        for (json, report) in untyped.iter().zip(&reports) {
            assert_eq!(&serde_json::from_str::<BrexReport>(json).unwrap(), report, "{json}");
        }
        assert!(serde_json::from_str::<BrexReport>(r#"{"Ok":"SOMETHING"}"#).is_err());

        let entry =
            r#"{"at":"2026-01-01T00:00:00Z","outcome":"posted","voucher":"v","reported_to_brex":{"Ok":"EXPORTED v"}}"#;
        let entry: AuditEntry = serde_json::from_str(entry).unwrap();
        assert_eq!(entry.reported_to_brex, Some(BrexReport::Exported { voucher: "v".into() }));
        assert_eq!(entry.note, None, "entries written before the note still read");
        let noted = AuditEntry { note: Some("voucher date moved".into()), ..entry };
        let json = serde_json::to_string(&noted).unwrap();
        assert_eq!(serde_json::from_str::<AuditEntry>(&json).unwrap(), noted);
        let plain = serde_json::to_value(AuditEntry::new(noted.at, AuditOutcome::Posted)).unwrap();
        assert!(plain.get("note").is_none(), "no note, no key: {plain}");
        assert_eq!((noted.brex_version, noted.revision.clone()), (None, None), "old entries read without versions");
        let revised = AuditEntry {
            brex_version: Some(3),
            revision: Some(RevisionAudit {
                from_version: 2,
                from_voucher: "10-2026-M-1".into(),
                to_version: 3,
                to_voucher: "10-2026-M-3".into(),
                undone: Undone::Reversed { reversal: "10-2026-M-2".into() },
            }),
            ..noted
        };
        let json = serde_json::to_string(&revised).unwrap();
        assert_eq!(serde_json::from_str::<AuditEntry>(&json).unwrap(), revised);
        let shown = revised.revision.unwrap().to_string();
        assert!(shown.contains("version 3 posted as 10-2026-M-3") && shown.contains("reversed by 10-2026-M-2"));
    }
}
