//! The poller's positions and queued marks in memory, in the same table as the poster's idempotency records
//! (as `aws::poll_state` keeps them in the one DynamoDB table).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};

use super::store::Table;
use super::{MemoryStore, from_millis, lock};
use crate::domain::Subject;
use crate::error::AwsError;
use crate::ports::{EnqueueLedger, Feed, IdempotencyKey, Paging, PollState, PollStateStore};

/// Positions and queued marks. [`MemoryPollState::default`] has a table of its own; [`MemoryPollState::new`]
/// (or [`MemoryStore::poll_state`]) shares a store's, so `settled` sees what the poster recorded there.
#[derive(Clone, Default)]
pub struct MemoryPollState {
    table: Arc<Mutex<Table>>,
}

impl std::fmt::Debug for MemoryPollState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPollState").finish_non_exhaustive()
    }
}

/// DynamoDB keeps the times as RFC 3339 with microseconds.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

impl MemoryPollState {
    pub fn new(store: &MemoryStore) -> Self {
        Self { table: store.shared() }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// The saved position of `feed`, `None` when none was ever saved.
    pub fn position(&self, feed: Feed) -> Option<PollState> {
        self.table().positions.get(&feed).cloned()
    }

    /// Every saved position.
    pub fn positions(&self) -> HashMap<Feed, PollState> {
        self.table().positions.clone()
    }

    /// Every queued mark (lapsed ones too, until overwritten or dropped): subject → queued until.
    pub fn queued_marks(&self) -> HashMap<Subject, DateTime<Utc>> {
        self.table().queued.iter().map(|(subject, ms)| (subject.clone(), from_millis(*ms))).collect()
    }
}

#[async_trait]
impl PollStateStore for MemoryPollState {
    async fn load(&self, feed: Feed) -> Result<PollState, AwsError> {
        Ok(self.position(feed).unwrap_or_default())
    }

    async fn save(&self, feed: Feed, state: &PollState) -> Result<(), AwsError> {
        let stored = PollState {
            watermark: state.watermark.map(micros),
            paging: state.paging.as_ref().map(|p| Paging {
                query_from: micros(p.query_from),
                cursor: p.cursor.clone(),
                max_seen: p.max_seen.map(micros),
            }),
            completed_at: state.completed_at.map(micros),
        };
        self.table().positions.insert(feed, stored);
        Ok(())
    }
}

#[async_trait]
impl EnqueueLedger for MemoryPollState {
    async fn settled(&self, ids: &[Subject], now: DateTime<Utc>) -> Result<HashSet<Subject>, AwsError> {
        let table = self.table();
        Ok(ids
            .iter()
            .filter(|id| table.idempotency.get(&IdempotencyKey::from(*id)).is_some_and(|item| item.settled(now)))
            .cloned()
            .collect())
    }

    async fn mark_queued(
        &self,
        ids: &[Subject],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Subject>, AwsError> {
        let mut table = self.table();
        let mut marked = Vec::new();
        for id in ids {
            // A lapsed mark counts as none (DynamoDB's TTL deletes lazily, so the condition checks the time).
            if table.queued.get(id).is_none_or(|ms| *ms < now.timestamp_millis()) {
                table.queued.insert(id.clone(), until.timestamp_millis());
                marked.push(id.clone());
            }
        }
        Ok(marked)
    }

    async fn unmark_queued(&self, ids: &[Subject]) -> Result<(), AwsError> {
        let mut table = self.table();
        for id in ids {
            table.queued.remove(id);
        }
        Ok(())
    }
}
