//! Table reads and repairs for the operator CLI (`connector failures`, `replay`, `trace`). Nothing here runs
//! in a Lambda: these are one-off calls made by a person, so a Scan is acceptable where noted.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeZone, Utc};

use super::DynamoStore;
use super::table::status::{COMPLETED, FAILED, HELD};
use super::table::{
    EXPENSE_PK_PREFIX, IDEM_SK, RECORD_PK_PREFIX, conditional_failed, get_n, get_s, queued_pk, s, subject_pk,
};
use crate::domain::Subject;
use crate::error::AwsError;

/// A subject's idempotency item as the poster left it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IdempotencyState {
    /// `IN_PROGRESS`, `COMPLETED`, `FAILED` or `HELD`.
    pub status: String,
    /// The IFS voucher key of a completed record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Why a failed record failed, or what holds a held one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the operator should do about a held record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// When a held record was first held (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_since: Option<String>,
    /// How many deliveries of a held record were held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_times: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Until when an in-progress claim is held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
}

/// A subject with its idempotency state.
pub type SubjectState = (Subject, IdempotencyState);

/// Which idempotency items [`DynamoStore::scan_subjects`] reads, and how.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SubjectScan<'a> {
    /// The statuses wanted; empty: every status.
    pub statuses: &'a [&'a str],
    /// The attributes handed on beside `pk`; `None`: the whole item.
    pub attributes: Option<&'a [&'a str]>,
    /// Stop after this many pages of 1 MB.
    pub max_pages: Option<usize>,
    pub consistent: bool,
}

/// How far a scan read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanExtent {
    /// Idempotency items of subjects handed on.
    pub items: u64,
    pub pages: usize,
    /// It stopped at its page limit: what it handed on is a lower bound.
    pub truncated: bool,
}

pub(super) fn state_from_item(item: &HashMap<String, AttributeValue>) -> IdempotencyState {
    IdempotencyState {
        status: get_s(item, "status").unwrap_or_default().to_owned(),
        result: get_s(item, "result").map(str::to_owned),
        reason: get_s(item, "reason").map(str::to_owned),
        fix: get_s(item, "fix").map(str::to_owned),
        held_since: get_s(item, "held_since").map(str::to_owned),
        held_times: get_n(item, "held_times").and_then(|n| u64::try_from(n).ok()),
        updated_at: get_s(item, "updated_at").map(str::to_owned),
        lease_until: get_n(item, "lease_until").and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
    }
}

impl DynamoStore {
    /// Every subject whose idempotency item is FAILED, oldest update first. A filtered Scan reads the whole
    /// table: acceptable for an operator command run by hand, never for a function's hot path.
    pub async fn failed_subjects(&self) -> Result<Vec<(Subject, IdempotencyState)>, AwsError> {
        Ok(self.failed_and_held_subjects().await?.0)
    }

    /// Every subject whose idempotency item is HELD, the longest held first.
    pub async fn held_subjects(&self) -> Result<Vec<(Subject, IdempotencyState)>, AwsError> {
        Ok(self.failed_and_held_subjects().await?.1)
    }

    /// FAILED subjects (oldest update first) and HELD ones (longest held first) from one filtered Scan, so an
    /// operator command reads the table once for both.
    pub async fn failed_and_held_subjects(&self) -> Result<(Vec<SubjectState>, Vec<SubjectState>), AwsError> {
        let (mut failed, mut held) = (Vec::new(), Vec::new());
        let scan = SubjectScan { statuses: &[FAILED, HELD], consistent: true, ..SubjectScan::default() };
        self.scan_subjects(&scan, |subject, item| {
            let state = state_from_item(item);
            if state.status == HELD { held.push((subject, state)) } else { failed.push((subject, state)) }
        })
        .await?;
        failed.sort_by(|a, b| (&a.1.updated_at, &a.0).cmp(&(&b.1.updated_at, &b.0)));
        // Compared as instants, not text (offsets may differ); an item without `held_since` falls back to its
        // last update, and one with neither sorts first.
        held.sort_by_cached_key(|(subject, state)| {
            let since = state.held_since.as_deref().or(state.updated_at.as_deref());
            let at = since.and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
            (at, subject.clone())
        });
        Ok((failed, held))
    }

    /// Reads every record/expense idempotency item whose status is one of `scan.statuses` (all when empty), page by
    /// page, handing each to `each` with its subject; items whose key this version cannot parse are someone else's
    /// and skipped. A filtered Scan reads the whole table whatever the filter: for operator commands and the daily
    /// reconciliation, never a function's hot path.
    pub(crate) async fn scan_subjects(
        &self,
        scan: &SubjectScan<'_>,
        mut each: impl FnMut(Subject, &HashMap<String, AttributeValue>),
    ) -> Result<ScanExtent, AwsError> {
        let mut filter = "#sk = :idem AND (begins_with(#pk, :rec) OR begins_with(#pk, :exp))".to_owned();
        if !scan.statuses.is_empty() {
            let alternatives: Vec<String> = (0..scan.statuses.len()).map(|i| format!("#st = :st{i}")).collect();
            filter.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
        }
        let mut extent = ScanExtent::default();
        let mut start = None;
        loop {
            let mut request = self
                .client()
                .scan()
                .table_name(self.table())
                .filter_expression(&filter)
                .expression_attribute_names("#pk", "pk")
                .expression_attribute_names("#sk", "sk")
                .expression_attribute_values(":idem", s(IDEM_SK))
                .expression_attribute_values(":rec", s(RECORD_PK_PREFIX))
                .expression_attribute_values(":exp", s(EXPENSE_PK_PREFIX))
                .consistent_read(scan.consistent)
                .set_exclusive_start_key(start);
            if !scan.statuses.is_empty() {
                request = request.expression_attribute_names("#st", "status");
            }
            for (i, status) in scan.statuses.iter().enumerate() {
                request = request.expression_attribute_values(format!(":st{i}"), s(*status));
            }
            if let Some(attributes) = scan.attributes {
                // Only what the caller reads (less to transfer; the read cost is the same).
                let names: Vec<String> = (0..attributes.len()).map(|i| format!("#a{i}")).collect();
                request = request.projection_expression(format!("#pk, {}", names.join(", ")));
                for (name, attribute) in names.iter().zip(attributes) {
                    request = request.expression_attribute_names(name, *attribute);
                }
            }
            let out = request.send().await.map_err(|e| AwsError::from_sdk("dynamodb", "Scan", &e))?;
            extent.pages += 1;
            for item in out.items() {
                let Some(subject) = get_s(item, "pk").and_then(|pk| Subject::parse(pk).ok()) else { continue };
                extent.items += 1;
                each(subject, item);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(extent);
            }
            if scan.max_pages.is_some_and(|max| extent.pages >= max) {
                extent.truncated = true;
                return Ok(extent);
            }
        }
    }

    /// The subject's idempotency item, if the poster has seen it.
    pub async fn idempotency_state(&self, subject: &Subject) -> Result<Option<IdempotencyState>, AwsError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(subject_pk(subject)))
            .key("sk", s(IDEM_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "GetItem", &e))?;
        Ok(out.item.as_ref().map(state_from_item))
    }

    /// Deletes the subject's idempotency item only while it is FAILED, so the poster will take the subject
    /// on again. `false` when there was no failed item (never failed, or completed/claimed meanwhile).
    pub async fn clear_failure(&self, subject: &Subject) -> Result<bool, AwsError> {
        let out = self
            .client()
            .delete_item()
            .table_name(self.table())
            .key("pk", s(subject_pk(subject)))
            .key("sk", s(IDEM_SK))
            .condition_expression("#st = :failed")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":failed", s(FAILED))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "DeleteItem", &e)),
        }
    }

    /// Deletes the subject's idempotency item only while it is COMPLETED with `voucher`, so the poster takes
    /// it on again (`connector replay --completed`, after `connector reconcile` found the voucher missing).
    /// `false` when the item is not that (changed meanwhile).
    pub async fn clear_completed(&self, subject: &Subject, voucher: &str) -> Result<bool, AwsError> {
        let out = self
            .client()
            .delete_item()
            .table_name(self.table())
            .key("pk", s(subject_pk(subject)))
            .key("sk", s(IDEM_SK))
            .condition_expression("#st = :done AND #res = :voucher")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#res", "result")
            .expression_attribute_values(":done", s(COMPLETED))
            .expression_attribute_values(":voucher", s(voucher))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "DeleteItem", &e)),
        }
    }

    /// Until when the poller (or a backfill) marked the subject queued (item layout: `aws::poll_state`), if a
    /// mark exists (it may have lapsed).
    pub async fn queued_until(&self, subject: &Subject) -> Result<Option<DateTime<Utc>>, AwsError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(queued_pk(subject)))
            .key("sk", s("queued"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "GetItem", &e))?;
        Ok(out.item.and_then(|item| get_n(&item, "queued_until")).and_then(|ms| Utc.timestamp_millis_opt(ms).single()))
    }
}
