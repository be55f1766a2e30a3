//! The table in memory: what `DynamoStore` keeps in DynamoDB, plus its leases, capabilities and mapping
//! document.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use super::idempotency::IdemItem;
use super::spend::SpendItem;
use super::{from_millis, lock};
use crate::audit::AuditEntry;
use crate::aws::dynamodb::StoredMapping;
use crate::domain::{ExpenseId, Subject};
use crate::error::{AwsError, Disposition};
use crate::mapping::{LoadedMapping, MappingLoadError};
use crate::ports::{Capability, CapabilityStore, Feed, IdempotencyKey, LeaseStore, MappingSource, PollState};

/// Every item of the one table, by kind.
#[derive(Default)]
pub(super) struct Table {
    pub idempotency: HashMap<IdempotencyKey, IdemItem>,
    pub spend: HashMap<ExpenseId, SpendItem>,
    /// name → (holder, lease_until in epoch ms).
    pub leases: HashMap<String, (String, i64)>,
    pub capabilities: HashMap<String, Capability>,
    /// subject → entries by sort key (`at` in ms, then the order of writing), as DynamoDB's `audit#…` keys.
    pub audit: HashMap<Subject, BTreeMap<(i64, u64), AuditEntry>>,
    pub audit_sequence: u64,
    pub mapping: Option<StoredMapping>,
    pub positions: HashMap<Feed, PollState>,
    /// subject → queued until, epoch ms.
    pub queued: HashMap<Subject, i64>,
    /// voucher key → attached files by hash.
    pub attachments: HashMap<String, BTreeMap<String, crate::receipts::AttachedReceipt>>,
    /// subject → the voucher it is posted as (`sk = "posted"`).
    pub posted: HashMap<Subject, crate::ports::PostedVersion>,
}

/// The table in memory. Clones share it, as `DynamoStore` clones share the DynamoDB table.
#[derive(Clone, Default)]
pub struct MemoryStore {
    table: Arc<Mutex<Table>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    pub(super) fn shared(&self) -> Arc<Mutex<Table>> {
        self.table.clone()
    }

    /// The poller's positions and queued marks, in this table (so `settled` sees the poster's records).
    pub fn poll_state(&self) -> super::MemoryPollState {
        super::MemoryPollState::new(self)
    }

    /// The stored mapping document, as `DynamoStore::load_mapping`.
    pub async fn load_mapping(&self) -> Result<Option<StoredMapping>, AwsError> {
        Ok(self.table().mapping.clone())
    }

    /// Stores a new mapping version, as `DynamoStore::store_mapping`: fails (retryable) if the stored
    /// version is not `expected_version` (`None`: if any is stored).
    pub async fn store_mapping(&self, document: &str, expected_version: Option<i64>) -> Result<i64, AwsError> {
        let mut table = self.table();
        let current = table.mapping.as_ref().map(|m| m.version);
        if current != expected_version {
            return Err(AwsError::new(
                "dynamodb",
                "PutItem",
                "the mapping changed since it was read; read it again",
                Disposition::Retryable,
            ));
        }
        let version = expected_version.unwrap_or(0) + 1;
        table.mapping =
            Some(StoredMapping { document: document.to_owned(), version, updated_at: Utc::now().to_rfc3339() });
        Ok(version)
    }

    /// Stores `document` as the next version whatever is there (what an operator's push does); returns it.
    pub fn put_mapping(&self, document: &str) -> i64 {
        let mut table = self.table();
        let version = table.mapping.as_ref().map_or(0, |m| m.version) + 1;
        table.mapping =
            Some(StoredMapping { document: document.to_owned(), version, updated_at: Utc::now().to_rfc3339() });
        version
    }
}

#[async_trait]
impl MappingSource for MemoryStore {
    /// Read afresh on every call: `CachedMapping` with no time to live.
    async fn mapping(&self) -> Result<Arc<LoadedMapping>, MappingLoadError> {
        let stored = self.load_mapping().await?.ok_or(MappingLoadError::Missing)?;
        let loaded = LoadedMapping::parse(&stored.document, stored.version)
            .map_err(|error| MappingLoadError::Invalid { version: stored.version, error })?;
        Ok(Arc::new(loaded))
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, AwsError> {
        let mut table = self.table();
        let free = table
            .leases
            .get(name)
            .is_none_or(|(held_by, lease_until)| *lease_until < now.timestamp_millis() || held_by == holder);
        if free {
            table.leases.insert(name.to_owned(), (holder.to_owned(), until.timestamp_millis()));
        }
        Ok(free)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), AwsError> {
        let mut table = self.table();
        // Taken over by someone else after expiry: theirs now, leave it.
        if table.leases.get(name).is_some_and(|(held_by, _)| held_by == holder) {
            table.leases.remove(name);
        }
        Ok(())
    }
}

impl MemoryStore {
    /// Until when `name` is leased and to whom, if it is.
    pub fn lease(&self, name: &str) -> Option<(String, DateTime<Utc>)> {
        self.table().leases.get(name).map(|(holder, until)| (holder.clone(), from_millis(*until)))
    }
}

#[async_trait]
impl CapabilityStore for MemoryStore {
    async fn recall(&self, name: &str) -> Result<Option<Capability>, AwsError> {
        Ok(self.table().capabilities.get(name).cloned())
    }

    async fn remember(&self, name: &str, capability: &Capability) -> Result<(), AwsError> {
        // DynamoDB keeps `until` in epoch seconds.
        let until = Utc.timestamp_opt(capability.until.timestamp(), 0).single().unwrap_or(capability.until);
        self.table().capabilities.insert(name.to_owned(), Capability { until, ..capability.clone() });
        Ok(())
    }
}

impl MemoryStore {
    pub(super) fn posted_voucher_of(&self, subject: &Subject) -> Option<crate::ports::PostedVersion> {
        self.table().posted.get(subject).cloned()
    }

    pub(super) fn record_posted_voucher(&self, subject: &Subject, posted: &crate::ports::PostedVersion) {
        let mut table = self.table();
        // As DynamoDB's condition: never over a higher version.
        if table.posted.get(subject).is_none_or(|old| old.version <= posted.version) {
            table.posted.insert(subject.clone(), posted.clone());
        }
    }
}
