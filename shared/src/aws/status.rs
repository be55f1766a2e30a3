//! Table reads for `connector status`: every idempotency item sorted into posted, failed, held and claimed,
//! and each poll feed's position. Nothing here runs in a Lambda.
//!
//! Cost: one paged Scan of the whole table (a Scan reads every item whatever its filter; the filter only
//! trims what comes back), eventually consistent, so 128 read units per 1 MB page. Idempotency items are
//! small and expire by TTL, so a busy tenant's table is a few MB; [`MAX_SCAN_PAGES`] bounds a pathological
//! one, and the result says when it stopped early. Plus one GetItem per poll feed.

use chrono::{DateTime, Utc};

use super::DynamoStore;
use super::operator::{SubjectScan, SubjectState, state_from_item};
use super::poll_state::DynamoPollState;
use super::table::status::{COMPLETED, FAILED, HELD, IN_PROGRESS};
use crate::brex::model::SourceType;
use crate::error::AwsError;
use crate::ports::{Feed, PollState, PollStateStore};

/// Pages of 1 MB read at most by one status: ~64 000 read units, far above any real table (at ~300 bytes an
/// item, 500 MB is over a million records kept).
pub const MAX_SCAN_PAGES: usize = 500;

/// Every feed the poller can keep a position for.
pub const FEEDS: [Feed; 4] = [
    Feed::Records(SourceType::Card),
    Feed::Records(SourceType::Reimbursement),
    Feed::Records(SourceType::Bill),
    Feed::Expenses,
];

/// The poster's idempotency items, sorted for a status report.
#[derive(Debug, Clone, Default)]
pub struct StatusScan {
    /// COMPLETED items last updated at or after `since`.
    pub posted: u64,
    /// Whether any COMPLETED item exists at all (whatever its age).
    pub posted_ever: bool,
    /// FAILED items last updated at or after `since`, the newest first.
    pub failed: Vec<SubjectState>,
    /// FAILED items last updated before `since` (still FAILED: never replayed).
    pub failed_earlier: u64,
    /// Every HELD item whatever its age (a hold is a present state, not an event), the longest held first.
    pub held: Vec<SubjectState>,
    /// Every IN_PROGRESS item (claimed, not finished), the oldest claim first.
    pub in_progress: Vec<SubjectState>,
    /// Idempotency items examined and pages read.
    pub items: u64,
    pub pages: usize,
    /// The scan stopped at `max_pages`: the counts are a lower bound.
    pub truncated: bool,
}

/// When an item last changed, as an instant (offsets in the text may differ).
pub fn updated_at(state: &crate::aws::operator::IdempotencyState) -> Option<DateTime<Utc>> {
    parse_time(state.updated_at.as_deref())
}

/// Since when a held item is held: its first hold, else its last update.
pub fn held_since(state: &crate::aws::operator::IdempotencyState) -> Option<DateTime<Utc>> {
    parse_time(state.held_since.as_deref()).or_else(|| updated_at(state))
}

fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
}

impl DynamoStore {
    /// Reads every record/expense idempotency item once (paged, at most `max_pages` pages) and sorts it.
    /// Posted and failed are events counted from `since`; held and claimed items are present states and
    /// are all returned.
    pub async fn status_scan(&self, since: DateTime<Utc>, max_pages: usize) -> Result<StatusScan, AwsError> {
        let mut scan = StatusScan::default();
        let attributes = ["status", "reason", "fix", "held_since", "held_times", "updated_at", "lease_until"];
        let every = SubjectScan { attributes: Some(&attributes), max_pages: Some(max_pages), ..SubjectScan::default() };
        let extent = self
            .scan_subjects(&every, |subject, item| {
                let state = state_from_item(item);
                let recent = updated_at(&state).is_some_and(|t| t >= since);
                match state.status.as_str() {
                    COMPLETED => {
                        scan.posted_ever = true;
                        scan.posted += u64::from(recent);
                    }
                    FAILED if recent => scan.failed.push((subject, state)),
                    FAILED => scan.failed_earlier += 1,
                    HELD => scan.held.push((subject, state)),
                    IN_PROGRESS => scan.in_progress.push((subject, state)),
                    _ => {}
                }
            })
            .await?;
        (scan.items, scan.pages, scan.truncated) = (extent.items, extent.pages, extent.truncated);
        scan.failed.sort_by_cached_key(|(subject, state)| (std::cmp::Reverse(updated_at(state)), subject.clone()));
        scan.held.sort_by_cached_key(|(subject, state)| (held_since(state), subject.clone()));
        scan.in_progress.sort_by_cached_key(|(subject, state)| (updated_at(state), subject.clone()));
        Ok(scan)
    }

    /// The stored position of every feed the poller has run (a feed never polled has none).
    pub async fn poll_positions(&self) -> Result<Vec<(Feed, PollState)>, AwsError> {
        let positions = DynamoPollState::new(self.client().clone(), self.table());
        let mut found = Vec::new();
        for feed in FEEDS {
            let state = positions.load(feed).await?;
            if state.watermark.is_some() || state.completed_at.is_some() || state.paging.is_some() {
                found.push((feed, state));
            }
        }
        Ok(found)
    }
}
