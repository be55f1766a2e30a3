//! Idempotency records in memory, with the conditions `DynamoStore` writes them under (Powertools semantics
//! plus HELD): one lock around each call stands for DynamoDB's conditional write.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use super::from_millis;
use crate::aws::operator::IdempotencyState;
use crate::aws::table::status;
use crate::error::AwsError;
use crate::ports::{Begin, IdempotencyKey, IdempotencyStore, PostedVersion};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    InProgress,
    Completed,
    Failed,
    Held,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => status::IN_PROGRESS,
            Self::Completed => status::COMPLETED,
            Self::Failed => status::FAILED,
            Self::Held => status::HELD,
        }
    }
}

/// One idempotency item: the attributes `aws::table` lists for it.
#[derive(Debug, Clone)]
pub(super) struct IdemItem {
    pub status: Status,
    /// Epoch ms, while in progress.
    pub lease_until: Option<i64>,
    pub result: Option<String>,
    pub reason: Option<String>,
    pub fix: Option<String>,
    pub held_since: Option<String>,
    pub held_times: Option<u64>,
    pub updated_at: String,
}

impl IdemItem {
    fn new(status: Status, updated_at: String) -> Self {
        Self {
            status,
            lease_until: None,
            result: None,
            reason: None,
            fix: None,
            held_since: None,
            held_times: None,
            updated_at,
        }
    }

    fn in_progress(lease_until: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self { lease_until: Some(lease_until.timestamp_millis()), ..Self::new(Status::InProgress, now.to_rfc3339()) }
    }

    fn state(&self) -> IdempotencyState {
        IdempotencyState {
            status: self.status.as_str().to_owned(),
            result: self.result.clone(),
            reason: self.reason.clone(),
            fix: self.fix.clone(),
            held_since: self.held_since.clone(),
            held_times: self.held_times,
            updated_at: Some(self.updated_at.clone()),
            lease_until: self.lease_until.map(from_millis),
        }
    }

    /// Settled for the poller: done, or claimed by someone whose lease has not run out.
    pub fn settled(&self, now: DateTime<Utc>) -> bool {
        match self.status {
            Status::Completed | Status::Failed => true,
            Status::InProgress => self.lease_until.is_some_and(|ms| ms > now.timestamp_millis()),
            Status::Held => false,
        }
    }
}

impl MemoryStore {
    /// The item of `key` as the operator sees it (`DynamoStore::idempotency_state`), if there is one.
    pub fn idempotency_state(&self, key: &IdempotencyKey) -> Option<IdempotencyState> {
        self.table().idempotency.get(key).map(IdemItem::state)
    }

    /// Every idempotency item, in no particular order.
    pub fn idempotency_states(&self) -> Vec<(IdempotencyKey, IdempotencyState)> {
        self.table().idempotency.iter().map(|(key, item)| (key.clone(), item.state())).collect()
    }

    fn finish(&self, key: &IdempotencyKey, mut item: IdemItem) {
        item.updated_at = Utc::now().to_rfc3339();
        // A put: whatever was there (a claim, a hold's history) is replaced.
        self.table().idempotency.insert(key.clone(), item);
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Begin, AwsError> {
        let mut table = self.table();
        let Some(item) = table.idempotency.get_mut(key) else {
            table.idempotency.insert(key.clone(), IdemItem::in_progress(lease_until, now));
            return Ok(Begin::Started);
        };
        match item.status {
            // An expired claim is taken over whole, as DynamoDB's conditional put replaces the item.
            Status::InProgress if item.lease_until.is_some_and(|ms| ms < now.timestamp_millis()) => {
                *item = IdemItem::in_progress(lease_until, now);
                Ok(Begin::Started)
            }
            Status::InProgress => {
                Ok(Begin::InProgress { until: item.lease_until.map_or(DateTime::<Utc>::MIN_UTC, from_millis) })
            }
            // A held key is claimed in place: reason, fix and the hold history stay for the next hold.
            Status::Held => {
                item.status = Status::InProgress;
                item.lease_until = Some(lease_until.timestamp_millis());
                item.updated_at = now.to_rfc3339();
                Ok(Begin::Started)
            }
            Status::Completed => Ok(Begin::Completed { result: item.result.clone() }),
            Status::Failed => Ok(Begin::Failed { reason: item.reason.clone().unwrap_or_default() }),
        }
    }

    async fn complete(
        &self,
        key: &IdempotencyKey,
        result: Option<&str>,
        _retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        let item = IdemItem { result: result.map(str::to_owned), ..IdemItem::new(Status::Completed, String::new()) };
        self.finish(key, item);
        Ok(())
    }

    async fn fail(&self, key: &IdempotencyKey, reason: &str, _retain_until: DateTime<Utc>) -> Result<(), AwsError> {
        let item = IdemItem { reason: Some(reason.to_owned()), ..IdemItem::new(Status::Failed, String::new()) };
        self.finish(key, item);
        Ok(())
    }

    async fn hold(
        &self,
        key: &IdempotencyKey,
        reason: &str,
        fix: &str,
        now: DateTime<Utc>,
        _retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        let mut table = self.table();
        // Never over a COMPLETED or FAILED outcome, nor over another hold.
        if table.idempotency.get(key).is_some_and(|item| item.status != Status::InProgress) {
            return Ok(());
        }
        let item = table.idempotency.entry(key.clone()).or_insert_with(|| IdemItem::new(Status::Held, String::new()));
        item.status = Status::Held;
        item.reason = Some(reason.to_owned());
        item.fix = Some(fix.to_owned());
        item.updated_at = now.to_rfc3339();
        item.held_since.get_or_insert_with(|| now.to_rfc3339());
        item.held_times = Some(item.held_times.unwrap_or(0) + 1);
        item.lease_until = None;
        Ok(())
    }

    async fn posted_voucher(&self, subject: &crate::domain::Subject) -> Result<Option<PostedVersion>, AwsError> {
        Ok(self.posted_voucher_of(subject))
    }

    async fn record_posted(
        &self,
        subject: &crate::domain::Subject,
        posted: &PostedVersion,
        _retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        self.record_posted_voucher(subject, posted);
        Ok(())
    }

    async fn release(&self, key: &IdempotencyKey) -> Result<(), AwsError> {
        let mut table = self.table();
        // Already completed/failed/held/gone: nothing to give back.
        if table.idempotency.get(key).is_some_and(|item| item.status == Status::InProgress) {
            table.idempotency.remove(key);
        }
        Ok(())
    }
}
