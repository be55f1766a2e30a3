//! Receipts attached to vouchers, in memory, as `aws::attachments` keeps them: one entry per voucher and
//! file hash, recording a hash again replaces it, listed oldest first.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::error::AwsError;
use crate::ports::AttachedReceipts;
use crate::receipts::AttachedReceipt;

#[async_trait]
impl AttachedReceipts for MemoryStore {
    async fn attached(&self, voucher: &str) -> Result<Vec<AttachedReceipt>, AwsError> {
        let mut found: Vec<AttachedReceipt> =
            self.table().attachments.get(voucher).map(|m| m.values().cloned().collect()).unwrap_or_default();
        found.sort_by(|a, b| (a.attached_at, &a.sha256).cmp(&(b.attached_at, &b.sha256)));
        Ok(found)
    }

    async fn record(
        &self,
        voucher: &str,
        attached: &AttachedReceipt,
        _retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        self.table()
            .attachments
            .entry(voucher.to_owned())
            .or_default()
            .insert(attached.sha256.clone(), attached.clone());
        Ok(())
    }
}
