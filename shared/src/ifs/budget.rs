//! The IFS request budget (contract §1: `IFS_REQUESTS_PER_MINUTE` for the whole deployment). Every HTTP
//! request, token fetches included, takes one unit first. Behind a trait so a DynamoDB-backed budget shared
//! by all Lambda instances can replace the per-instance bucket.

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::{Duration, Instant};

#[async_trait]
pub trait RequestBudget: Send + Sync {
    /// Waits until one request may be sent.
    async fn acquire(&self);
}

/// A client-side token bucket: refills at `per_minute / 60` per second up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `per_minute` and `burst` are raised to at least 1 (a zero budget would block forever).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            burst,
            per_second: f64::from(per_minute.max(1)) / 60.0,
            state: Mutex::new(BucketState { tokens: burst, last: Instant::now() }),
        }
    }

    /// The bucket the client uses for a per-minute budget: a sixth of a minute's worth may go at once, so
    /// a cold start does not spend the whole minute in one burst.
    pub fn per_minute(per_minute: u32) -> Self {
        Self::new(per_minute, (per_minute / 6).max(1))
    }

    /// Takes a unit if one is there, else says how long until one will be.
    async fn try_take(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let elapsed = now.duration_since(state.last).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.per_second).min(self.burst);
        state.last = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - state.tokens) / self.per_second))
        }
    }
}

#[async_trait]
impl RequestBudget for TokenBucket {
    async fn acquire(&self) {
        while let Err(wait) = self.try_take().await {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_the_refill_rate() {
        // 600/min = 10/s, burst 5.
        let bucket = TokenBucket::new(600, 5);
        let start = Instant::now();
        for _ in 0..5 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");
        for _ in 0..10 {
            bucket.acquire().await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(990) && took <= Duration::from_millis(1100), "{took:?}");
    }

    #[test]
    fn zero_budget_is_raised_to_one() {
        let bucket = TokenBucket::per_minute(0);
        assert_eq!(bucket.burst, 1.0);
        assert!(bucket.per_second > 0.0);
    }
}
