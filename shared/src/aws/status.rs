//! Table reads for `connector status`: every idempotency item sorted into posted, failed, held and claimed,
//! and each poll feed's position. Nothing here runs in a Lambda.
//!
//! Cost: one paged Scan of the whole table (a Scan reads every item whatever its filter; the filter only
//! trims what comes back), eventually consistent, so 128 read units per 1 MB page. Idempotency items are
//! small and expire by TTL, so a busy tenant's table is a few MB; [`MAX_SCAN_PAGES`] bounds a pathological
//! one, and the result says when it stopped early. Plus one GetItem per poll feed.

use chrono::{DateTime, Utc};

use super::DynamoStore;
use super::operator::{SubjectState, state_from_item};
use super::poll_state::DynamoPollState;
use super::table::status::{COMPLETED, FAILED, HELD, IN_PROGRESS};
use super::table::{EXPENSE_PK_PREFIX, IDEM_SK, RECORD_PK_PREFIX, get_s, s};
use crate::brex::model::SourceType;
use crate::domain::Subject;
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
        let mut start = None;
        loop {
            let out = self
                .client()
                .scan()
                .table_name(self.table())
                .filter_expression("#sk = :idem AND (begins_with(#pk, :rec) OR begins_with(#pk, :exp))")
                // Only what the report shows (less to transfer; the read cost is the same).
                .projection_expression("#pk, #st, #reason, #fix, #hs, #ht, #upd, #lease")
                .expression_attribute_names("#pk", "pk")
                .expression_attribute_names("#sk", "sk")
                .expression_attribute_names("#st", "status")
                .expression_attribute_names("#reason", "reason")
                .expression_attribute_names("#fix", "fix")
                .expression_attribute_names("#hs", "held_since")
                .expression_attribute_names("#ht", "held_times")
                .expression_attribute_names("#upd", "updated_at")
                .expression_attribute_names("#lease", "lease_until")
                .expression_attribute_values(":idem", s(IDEM_SK))
                .expression_attribute_values(":rec", s(RECORD_PK_PREFIX))
                .expression_attribute_values(":exp", s(EXPENSE_PK_PREFIX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("dynamodb", "Scan", &e))?;
            scan.pages += 1;
            for item in out.items() {
                // A key this version cannot parse is someone else's item; skip it.
                let Some(subject) = get_s(item, "pk").and_then(|pk| Subject::parse(pk).ok()) else { continue };
                scan.items += 1;
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
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
            if scan.pages >= max_pages {
                scan.truncated = true;
                break;
            }
        }
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
