//! Spend claims in memory, under the conditions `aws::spend` writes them with.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryStore, from_millis};
use crate::domain::{ExpenseId, ReferenceNumber};
use crate::error::AwsError;
use crate::ports::{SpendClaim, SpendClaims};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpendStatus {
    InProgress,
    Posted,
    Released,
}

/// One spend claim. Never deleted: a released claim keeps its holder history.
#[derive(Debug, Clone)]
pub(super) struct SpendItem {
    status: SpendStatus,
    holder: ReferenceNumber,
    /// Every Brex id that ever claimed or posted it (DynamoDB's string set).
    holders: BTreeSet<ReferenceNumber>,
    /// Epoch ms.
    lease_until: Option<i64>,
    voucher: Option<String>,
}

#[async_trait]
impl SpendClaims for MemoryStore {
    async fn claim(
        &self,
        spend: &ExpenseId,
        holder: &ReferenceNumber,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<SpendClaim, AwsError> {
        let mut table = self.table();
        let item = table.spend.entry(spend.clone()).or_insert_with(|| SpendItem {
            status: SpendStatus::Released,
            holder: holder.clone(),
            holders: BTreeSet::new(),
            lease_until: None,
            voucher: None,
        });
        let free = match item.status {
            SpendStatus::Released => true,
            SpendStatus::InProgress => {
                item.lease_until.is_some_and(|ms| ms < now.timestamp_millis()) || item.holder == *holder
            }
            SpendStatus::Posted => false,
        };
        if free {
            item.status = SpendStatus::InProgress;
            item.holder = holder.clone();
            item.lease_until = Some(lease_until.timestamp_millis());
            item.holders.insert(holder.clone());
            return Ok(SpendClaim::Claimed { holders: item.holders.iter().cloned().collect() });
        }
        Ok(match item.status {
            SpendStatus::Posted => {
                SpendClaim::Posted { by: item.holder.clone(), voucher: item.voucher.clone().unwrap_or_default() }
            }
            _ => SpendClaim::Busy {
                by: item.holder.clone(),
                until: item.lease_until.map_or(DateTime::<Utc>::MIN_UTC, from_millis),
            },
        })
    }

    async fn posted(
        &self,
        spend: &ExpenseId,
        holder: &ReferenceNumber,
        voucher: &str,
        _retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        // Unconditional: the voucher exists whoever held the claim.
        let mut table = self.table();
        let item = table.spend.entry(spend.clone()).or_insert_with(|| SpendItem {
            status: SpendStatus::Posted,
            holder: holder.clone(),
            holders: BTreeSet::new(),
            lease_until: None,
            voucher: None,
        });
        item.status = SpendStatus::Posted;
        item.holder = holder.clone();
        item.voucher = Some(voucher.to_owned());
        item.holders.insert(holder.clone());
        Ok(())
    }

    async fn release(&self, spend: &ExpenseId, holder: &ReferenceNumber) -> Result<(), AwsError> {
        let mut table = self.table();
        // Not ours any more (taken over after expiry, or posted): nothing to give back.
        if let Some(item) = table.spend.get_mut(spend)
            && item.status == SpendStatus::InProgress
            && item.holder == *holder
        {
            item.status = SpendStatus::Released;
            item.lease_until = None;
        }
        Ok(())
    }
}
