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
    /// reporting off), `Some(Err)` when the report call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_to_brex: Option<Result<String, String>>,
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
        }
    }
}
