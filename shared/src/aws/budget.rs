//! The IFS request budget shared by every Lambda instance (docs/contract.md §1: `IFS_REQUESTS_PER_MINUTE` is for the
//! whole deployment), kept in the one DynamoDB table.
//!
//! Design: time is cut into short slices (1 s for a one-minute budget); each slice is one item
//! (`pk = budget#<name>`, `sk = slice#<n>`) whose `used` counter is raised by one conditional `UpdateItem`
//! (`ADD used 1` if `used < capacity`) per request. No read-modify-write, so concurrent instances never lose
//! updates and an uncontended request costs one DynamoDB write; a full slice answers
//! `ConditionalCheckFailed` and the instance sleeps until the next slice.
//!
//! Why slices and not one counter per minute: IFS (and the simulator) count their minute from wherever they
//! like, so a calendar-minute counter could let 2 × the budget through across a minute boundary. Slice `k`
//! gets `⌊(k+1)·L/d⌋ − ⌊k·L/d⌋` units with `d` = slices per window + 2, so any `d` consecutive slices hold
//! exactly `L`. Any window of the server's, wherever it starts, overlaps at most `d − 1` slices plus one
//! slice of slack for the time between being admitted and arriving: never more than `L` requests, and
//! `(d − 2)/d` of the budget is usable (96.8 % for 60 slices). Clocks of Lambda instances are NTP-synced to
//! milliseconds, far below a slice.
//!
//! If DynamoDB itself fails, posting must neither stop nor overrun IFS: the instance falls back to a local
//! token bucket holding its share of the budget (`limit / max_instances`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::DynamoStore;
use super::table::{conditional_failed, n, s};
use crate::error::AwsError;
use crate::ports::RequestBudget;
use crate::retry::TokenBucket;

/// How long a slice item is kept (TTL) after its slice ended.
const SLICE_RETENTION_SECS: i64 = 600;

/// A request budget shared through DynamoDB.
pub struct DynamoBudget {
    store: DynamoStore,
    pk: String,
    limit: u64,
    slice: Duration,
    /// `d`: slices per window + 2.
    divisor: u64,
    fallback: TokenBucket,
}

impl std::fmt::Debug for DynamoBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoBudget")
            .field("pk", &self.pk)
            .field("limit", &self.limit)
            .field("slice", &self.slice)
            .field("divisor", &self.divisor)
            .finish_non_exhaustive()
    }
}

impl DynamoBudget {
    /// `per_minute` requests per minute for every instance together, in 1 s slices. `max_instances` (the
    /// poster's maximum concurrency) sizes the local fallback used while DynamoDB fails.
    pub fn per_minute(store: DynamoStore, name: &str, per_minute: u32, max_instances: u32) -> Self {
        Self::new(store, name, per_minute, Duration::from_secs(60), Duration::from_secs(1), max_instances)
    }

    /// `limit` requests per `window` (e.g. a time-scaled minute in benchmarks), counted in `slice`s.
    pub fn new(
        store: DynamoStore,
        name: &str,
        limit: u32,
        window: Duration,
        slice: Duration,
        max_instances: u32,
    ) -> Self {
        let slice = slice.max(Duration::from_millis(1)).min(window.max(Duration::from_millis(1)));
        let per_window = (window.as_nanos() / slice.as_nanos()).max(1) as u64;
        let limit = u64::from(limit.max(1));
        let share = u32::try_from(limit / u64::from(max_instances.max(1))).unwrap_or(u32::MAX).max(1);
        let fallback_per_minute = (f64::from(share) * 60.0 / window.as_secs_f64().max(0.001)).min(f64::from(u32::MAX));
        Self {
            store,
            pk: format!("budget#{name}"),
            limit,
            slice,
            divisor: per_window + 2,
            fallback: TokenBucket::ifs(fallback_per_minute as u32),
        }
    }

    /// Units slice `k` may hand out.
    pub fn capacity(&self, k: u64) -> u64 {
        let at = |i: u64| (u128::from(i) * u128::from(self.limit) / u128::from(self.divisor)) as u64;
        at(k + 1) - at(k)
    }

    fn now(&self) -> Duration {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
    }

    /// Takes one unit of the current slice, or says how long until the next slice starts.
    pub async fn try_acquire(&self) -> Result<Result<(), Duration>, AwsError> {
        let now = self.now();
        let slice_ns = self.slice.as_nanos();
        let k = (now.as_nanos() / slice_ns) as u64;
        let until_next = Duration::from_nanos(((u128::from(k) + 1) * slice_ns - now.as_nanos()) as u64);
        let capacity = self.capacity(k);
        if capacity == 0 {
            return Ok(Err(until_next));
        }
        let expires = i64::try_from(now.as_secs()).unwrap_or(i64::MAX).saturating_add(SLICE_RETENTION_SECS);
        let update = self
            .store
            .client()
            .update_item()
            .table_name(self.store.table())
            .key("pk", s(&self.pk))
            .key("sk", s(format!("slice#{k}")))
            .update_expression("SET expires_at = :exp ADD used :one")
            .condition_expression("attribute_not_exists(used) OR used < :cap")
            .expression_attribute_values(":exp", n(expires))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":cap", n(i64::try_from(capacity).unwrap_or(i64::MAX)))
            .send()
            .await;
        match update {
            Ok(_) => Ok(Ok(())),
            Err(e) if conditional_failed(&e) => Ok(Err(until_next)),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "UpdateItem", &e)),
        }
    }
}

#[async_trait]
impl RequestBudget for DynamoBudget {
    async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(Ok(())) => return,
                // A little jitter so waiting instances do not all hit the next slice's first millisecond.
                Ok(Err(wait)) => {
                    let jitter = self.slice.mul_f64(rand::random::<f64>() * 0.05);
                    tokio::time::sleep(wait + jitter).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "shared IFS budget unavailable; using this instance's share");
                    self.fallback.acquire().await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: u32, window_ms: u64, slice_ms: u64) -> DynamoBudget {
        let conf = aws_sdk_dynamodb::Config::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(conf), "t");
        DynamoBudget::new(store, "ifs", limit, Duration::from_millis(window_ms), Duration::from_millis(slice_ms), 4)
    }

    #[test]
    fn any_window_of_slices_holds_at_most_the_limit_and_nearly_all_of_it() {
        for (limit, window, slice) in [(1000, 60_000, 1000), (7, 60_000, 1000), (600, 6_000, 100), (1, 1000, 10)] {
            let b = budget(limit, window, slice);
            let d = b.divisor;
            for start in 0..500 {
                let sum: u64 = (start..start + d).map(|k| b.capacity(k)).sum();
                assert_eq!(sum, u64::from(limit), "d consecutive slices hold exactly the limit");
            }
            // What one server window (d - 2 slices, or d - 1 when misaligned) can see is below the limit.
            let per_window: u64 = (0..d - 1).map(|k| b.capacity(k)).sum();
            assert!(per_window <= u64::from(limit));
        }
        let b = budget(1000, 60_000, 1000);
        let usable: u64 = (0..60).map(|k| b.capacity(k)).sum();
        assert!(usable >= 960, "{usable} of 1000 per minute usable");
    }
}
