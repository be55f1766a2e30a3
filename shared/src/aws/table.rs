//! The one DynamoDB table's schema (`pk`/`sk`, TTL `expires_at`): every key the connector writes, the status
//! names of an idempotency item, and the helpers that read and write attribute values. The adapters in this
//! folder build keys only through here, so the layout below is the whole truth.
//!
//! - idempotency: `pk = record#<id> | expense#<id> | webhook#<webhook-id>`, `sk = "idem"`, `status`
//!   IN_PROGRESS | COMPLETED | FAILED | HELD, `lease_until` (N, epoch ms), `result`/`reason` (S), `expires_at`
//!   (N, epoch s), `updated_at` (S); a HELD item also has `fix` (S), `held_since` (S, RFC 3339, the first
//!   hold) and `held_times` (N)
//! - revision claim: `pk = revision#record#<id>#v<version>`, `sk = "idem"`, as an idempotency item
//! - posted voucher: `pk = record#<id> | expense#<id>`, `sk = "posted"`, `version` (N), `voucher` (S),
//!   `total` (S, for people), `proposal` (S, JSON), `expires_at`, `updated_at`
//! - audit trail: `pk = record#<id> | expense#<id>`, `sk = audit#<at>#<seq>`
//! - poll position: `pk = poll#accounting_records#<source> | poll#expenses`, `sk = "cursor"`
//! - queued mark: `pk = queued#record#<id> | queued#expense#<id>`, `sk = "queued"`
//! - spend claim: `pk = spend#<expense id>`
//! - attached receipt: `pk = voucher#<voucher key>`, `sk = receipt#<sha256 hex>`, `entry` (S, JSON: receipt
//!   id, file name, size, the subject, when), `expires_at` — one item per file attached to the voucher
//! - lease: `pk = "lease#<name>"`, `sk = "lease"`, `holder` (S), `lease_until` (N, epoch ms)
//! - mapping: `pk = "config"`, `sk = "mapping"`, `document` (S), `version` (N), `updated_at` (S) — the
//!   operator CLI and the functions share this item, see `docs/contract.md`

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::domain::{ExpenseId, Subject};
use crate::error::{AwsError, Disposition};
use crate::ports::{Feed, IdempotencyKey};

pub const IDEM_SK: &str = "idem";
pub const POSTED_SK: &str = "posted";
pub const QUEUED_SK: &str = "queued";
pub const LEASE_SK: &str = "lease";
/// How the partitions of [`subject_pk`] begin, for Scans that look for every subject's items.
pub const RECORD_PK_PREFIX: &str = "record#";
pub const EXPENSE_PK_PREFIX: &str = "expense#";

/// The `status` of an idempotency item.
pub mod status {
    pub const IN_PROGRESS: &str = "IN_PROGRESS";
    pub const COMPLETED: &str = "COMPLETED";
    pub const FAILED: &str = "FAILED";
    /// The deployment or tenant is at fault (IFS/Brex auth, a missing IFS path, …): never reported to Brex;
    /// `replay` re-enqueues it and the poster takes the item over.
    pub const HELD: &str = "HELD";
}

/// The partition of a subject's idempotency item and audit trail.
pub fn subject_pk(subject: &Subject) -> String {
    match subject {
        Subject::Record(id) => format!("{RECORD_PK_PREFIX}{id}"),
        Subject::Expense(id) => format!("{EXPENSE_PK_PREFIX}{id}"),
    }
}

pub fn idempotency_pk(key: &IdempotencyKey) -> String {
    match key {
        IdempotencyKey::Posting(subject) => subject_pk(subject),
        IdempotencyKey::Delivery(webhook_id) => format!("webhook#{webhook_id}"),
        // Its own partition, so scans for `record#`/`expense#` items (status, failures) never see it.
        IdempotencyKey::Revision(subject, version) => format!("revision#{}#v{version}", subject_pk(subject)),
    }
}

/// The poller's "queued recently" mark of a subject.
pub fn queued_pk(subject: &Subject) -> String {
    format!("queued#{}", subject_pk(subject))
}

/// Where a poll feed's position (watermark, paging) is kept.
pub fn poll_pk(feed: Feed) -> String {
    match feed {
        Feed::Records(source) => format!("poll#accounting_records#{}", source.as_str()),
        Feed::Expenses => "poll#expenses".to_owned(),
    }
}

pub fn lease_pk(name: &str) -> String {
    format!("lease#{name}")
}

/// The partition of a voucher's attached receipts (the voucher key as the poster records it, `10-2026-M-17`).
pub fn voucher_pk(voucher: &str) -> String {
    format!("voucher#{voucher}")
}

/// How the sort keys of attached receipts begin.
pub const RECEIPT_SK_PREFIX: &str = "receipt#";
/// The latest run of a stored report (`report#mapping`, `report#reconcile`); each run's copy is `run#<time>`.
pub const LATEST_REPORT_SK: &str = "latest";

/// The sort key of one attached file, by its content hash.
pub fn receipt_sk(sha256: &str) -> String {
    format!("{RECEIPT_SK_PREFIX}{sha256}")
}

pub fn spend_pk(spend: &ExpenseId) -> String {
    format!("spend#{spend}")
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, key: &str) -> Option<&'a str> {
    item.get(key).and_then(|v| v.as_s().ok()).map(String::as_str)
}

pub(crate) fn get_n(item: &HashMap<String, AttributeValue>, key: &str) -> Option<i64> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

pub(crate) fn conditional_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    err: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> bool {
    err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

/// A DynamoDB failure that is not the SDK's: an item we cannot read, an entry we cannot write, work left
/// unprocessed.
pub(crate) fn table_error(operation: &'static str, message: impl Into<String>, disposition: Disposition) -> AwsError {
    AwsError::new("dynamodb", operation, message, disposition)
}

/// An item that is not what this module writes: retrying reads it again, so it is permanent.
pub(crate) fn corrupt(operation: &'static str, message: impl Into<String>) -> AwsError {
    table_error(operation, message, Disposition::Permanent)
}

/// The latest run of a report kept as JSON in its `report` attribute (`pk`, `sk = "latest"`: the mapping
/// validation, the reconciliation); `None` before the first run. `what` names it in errors.
pub(crate) async fn read_latest_report<T: serde::de::DeserializeOwned>(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    what: &str,
) -> Result<Option<T>, AwsError> {
    let out = client
        .get_item()
        .table_name(table)
        .key("pk", s(pk))
        .key("sk", s(LATEST_REPORT_SK))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("dynamodb", "GetItem", &e))?;
    let Some(item) = out.item else { return Ok(None) };
    let json = get_s(&item, "report").ok_or_else(|| corrupt("GetItem", format!("{what} item has no `report`")))?;
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| corrupt("GetItem", format!("{what} item holds no readable report: {e}")))
}

/// Every item of partition `pk` whose sort key starts with `sk_prefix`, in sort-key order, page by page, each
/// handed to `each` (the audit trail, a voucher's attached receipts). Consistent reads: they follow writes.
pub(crate) async fn query_sk_prefix(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sk_prefix: &str,
    mut each: impl FnMut(&HashMap<String, AttributeValue>),
) -> Result<(), AwsError> {
    let mut start = None;
    loop {
        let out = client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(sk_prefix))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "Query", &e))?;
        out.items().iter().for_each(&mut each);
        start = out.last_evaluated_key;
        if start.is_none() {
            return Ok(());
        }
    }
}
