//! A client-side token bucket: it refills at `per_minute / 60` per second up to its burst, and every
//! request takes one token first, so one instance stays under its per-minute budget.

use std::sync::{Mutex, PoisonError};

use tokio::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// `per_minute` and `burst` are raised to at least 1 (a zero budget would block forever). The bucket
    /// starts full.
    pub fn new(per_minute: u32, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            burst,
            per_second: f64::from(per_minute.max(1)) / 60.0,
            state: Mutex::new(State { tokens: burst, at: Instant::now() }),
        }
    }

    /// IFS: a sixth of a minute's worth may go at once, so a cold start does not spend the whole minute in
    /// one burst.
    pub fn ifs(per_minute: u32) -> Self {
        Self::new(per_minute, f64::from((per_minute / 6).max(1)))
    }

    /// Brex allows its requests per 60 s window: a tenth of a minute's worth at once keeps even a cold
    /// start's burst well inside the window.
    pub fn brex(per_minute: u32) -> Self {
        Self::new(per_minute, f64::from(per_minute.max(1)) / 10.0)
    }

    /// Takes a token if one is there at `now`; otherwise says how long until one is.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(state.at).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.per_second).min(self.burst);
        state.at = state.at.max(now);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - state.tokens) / self.per_second))
        }
    }

    /// Waits until a token is there, and takes it.
    pub async fn acquire(&self) {
        while let Err(wait) = self.try_take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_configured_rate() {
        let bucket = TokenBucket::brex(600); // 10/s, burst 60
        let start = Instant::now();
        for _ in 0..60 {
            assert!(bucket.try_take(start).is_ok());
        }
        let wait = bucket.try_take(start).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        let later = start + Duration::from_secs(1);
        let taken = (0..20).filter(|_| bucket.try_take(later).is_ok()).count();
        assert_eq!(taken, 10);
        // Over a long idle period the bucket never holds more than its burst.
        let much_later = start + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| bucket.try_take(much_later).is_ok()).count(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_the_refill() {
        // 600/min = 10/s, burst 5.
        let bucket = TokenBucket::new(600, 5.0);
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

        let bucket = TokenBucket::brex(60); // 1/s, burst 6
        let start = Instant::now();
        for _ in 0..6 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        bucket.acquire().await;
        bucket.acquire().await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100), "{waited:?}");
    }

    #[test]
    fn the_bursts_of_each_system_and_a_zero_budget_raised_to_one() {
        assert_eq!(TokenBucket::ifs(1000).burst, 166.0, "a sixth of a minute, whole requests");
        assert_eq!(TokenBucket::brex(1000).burst, 100.0);
        for bucket in [TokenBucket::ifs(0), TokenBucket::brex(0), TokenBucket::new(0, 0.0)] {
            assert_eq!(bucket.burst, 1.0);
            assert!(bucket.per_second > 0.0);
        }
    }
}
