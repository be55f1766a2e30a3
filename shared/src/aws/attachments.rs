//! Receipts attached to vouchers, in the one table: `pk = voucher#<voucher key>`, `sk = receipt#<sha256>`,
//! `entry` (S, the [`AttachedReceipt`] as JSON), `expires_at`. Keyed by the file's hash, so recording the
//! same file twice (a retry after a lost answer) leaves one item.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::DynamoStore;
use super::table::{RECEIPT_SK_PREFIX, get_s, n, query_sk_prefix, receipt_sk, s, voucher_pk};
use crate::error::{AwsError, Disposition};
use crate::ports::AttachedReceipts;
use crate::receipts::AttachedReceipt;

#[async_trait]
impl AttachedReceipts for DynamoStore {
    async fn attached(&self, voucher: &str) -> Result<Vec<AttachedReceipt>, AwsError> {
        let mut found = Vec::new();
        query_sk_prefix(self.client(), self.table(), &voucher_pk(voucher), RECEIPT_SK_PREFIX, |item| {
            match get_s(item, "entry").map(serde_json::from_str::<AttachedReceipt>) {
                Some(Ok(entry)) => found.push(entry),
                // Unreadable: its hash (the sort key) still says the file is there.
                _ => match get_s(item, "sk").and_then(|sk| sk.strip_prefix(RECEIPT_SK_PREFIX)) {
                    Some(sha256) => found.push(AttachedReceipt {
                        sha256: sha256.to_owned(),
                        receipt_id: String::new(),
                        name: String::new(),
                        size: 0,
                        subject: String::new(),
                        attached_at: DateTime::<Utc>::MIN_UTC,
                    }),
                    None => tracing::warn!(voucher, "unreadable attached-receipt item"),
                },
            }
        })
        .await?;
        found.sort_by(|a, b| (a.attached_at, &a.sha256).cmp(&(b.attached_at, &b.sha256)));
        Ok(found)
    }

    async fn record(
        &self,
        voucher: &str,
        attached: &AttachedReceipt,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        let entry = serde_json::to_string(attached).map_err(|e| {
            AwsError::new(
                "dynamodb",
                "PutItem",
                format!("attached receipt does not serialise: {e}"),
                Disposition::Permanent,
            )
        })?;
        self.client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(voucher_pk(voucher)))
            .item("sk", s(receipt_sk(&attached.sha256)))
            .item("entry", s(entry))
            .item("expires_at", n(retain_until.timestamp()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "PutItem", &e))?;
        Ok(())
    }
}
