//! The audit trail in the one table: `pk = <subject key>` (beside the subject's idempotency record),
//! `sk = "audit#<RFC 3339 ms>#<n>"`, `entry` (S, JSON), `expires_at`.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use chrono::{DateTime, SecondsFormat, Utc};

use super::DynamoStore;
use super::table::{get_s, n, query_sk_prefix, s, subject_pk};
use crate::audit::AuditEntry;
use crate::domain::Subject;
use crate::error::{AwsError, Disposition};
use crate::ports::AuditTrail;

/// BatchWriteItem's limit.
const BATCH: usize = 25;
/// Sort keys of one instance never collide, even for entries written in the same millisecond.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn sort_key(at: DateTime<Utc>) -> String {
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    // The random part keeps concurrent instances apart; the sequence keeps one instance's entries ordered.
    format!("audit#{}#{seq:010}-{:08x}", at.to_rfc3339_opts(SecondsFormat::Millis, true), rand::random::<u32>())
}

#[async_trait]
impl AuditTrail for DynamoStore {
    async fn append(&self, entries: &[(Subject, AuditEntry)], retain_until: DateTime<Utc>) -> Result<(), AwsError> {
        for chunk in entries.chunks(BATCH) {
            let mut requests = Vec::with_capacity(chunk.len());
            for (subject, entry) in chunk {
                let json = serde_json::to_string(entry).map_err(|e| {
                    AwsError::new(
                        "dynamodb",
                        "BatchWriteItem",
                        format!("audit entry does not serialise: {e}"),
                        Disposition::Permanent,
                    )
                })?;
                let put = PutRequest::builder()
                    .item("pk", s(subject_pk(subject)))
                    .item("sk", s(sort_key(entry.at)))
                    .item("entry", s(json))
                    .item("expires_at", n(retain_until.timestamp()))
                    .build()
                    .map_err(|e| AwsError::new("dynamodb", "BatchWriteItem", e.to_string(), Disposition::Permanent))?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            let mut pending = requests;
            // Unprocessed items (throttling) are retried a few times; audit is best effort beyond that.
            for attempt in 0..4 {
                let out = self
                    .client()
                    .batch_write_item()
                    .request_items(self.table(), pending)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("dynamodb", "BatchWriteItem", &e))?;
                pending = out.unprocessed_items.and_then(|mut m| m.remove(self.table())).unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
            if !pending.is_empty() {
                return Err(AwsError::new(
                    "dynamodb",
                    "BatchWriteItem",
                    format!("{} audit entries left unprocessed", pending.len()),
                    Disposition::Retryable,
                ));
            }
        }
        Ok(())
    }

    async fn read(&self, subject: &Subject) -> Result<Vec<AuditEntry>, AwsError> {
        let mut entries = Vec::new();
        query_sk_prefix(self.client(), self.table(), &subject_pk(subject), "audit#", |item| {
            // An entry written by a newer version that this one cannot read is skipped, not fatal.
            match get_s(item, "entry").map(serde_json::from_str::<AuditEntry>) {
                Some(Ok(entry)) => entries.push(entry),
                other => tracing::warn!(subject = %subject, ok = other.is_some(), "unreadable audit entry"),
            }
        })
        .await?;
        Ok(entries)
    }
}
