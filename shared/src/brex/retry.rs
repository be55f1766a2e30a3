//! The Brex retry policy (exponential backoff with full jitter, `Retry-After` honoured) and the client-side
//! token bucket that keeps one instance under `BREX_REQUESTS_PER_MINUTE`.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included.
    pub max_attempts: u32,
    /// Ceiling of the first backoff; doubles per retry.
    pub base_delay: Duration,
    /// Ceiling of any backoff.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited out inside one invocation: the call fails (retryable)
    /// and the queue's redelivery takes over.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(16),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the delay before retry number `retry` (0 = the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.checked_pow(retry).unwrap_or(u32::MAX);
        self.base_delay.checked_mul(factor).map_or(self.max_delay, |d| d.min(self.max_delay))
    }

    /// Full jitter: uniform in `[0, ceiling(retry)]`.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=millis))
    }

    /// How long to wait before the next attempt after `attempt` attempts failed, or `None` to give up.
    pub fn next_delay(&self, attempt: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        match retry_after {
            Some(wait) if wait > self.max_retry_after => None,
            Some(wait) => Some(wait),
            None => Some(self.backoff(attempt.saturating_sub(1), rng)),
        }
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A token bucket. Brex allows 1000 requests per 60 s; the bucket refills at that rate and holds a tenth
/// of a minute's worth, so even a cold start's burst stays well inside the window.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn per_minute(requests: u32) -> Self {
        let requests = f64::from(requests.max(1));
        let capacity = (requests / 10.0).max(1.0);
        Self {
            capacity,
            per_second: requests / 60.0,
            bucket: Mutex::new(Bucket { tokens: capacity, at: Instant::now() }),
        }
    }

    /// Takes a token if one is there at `now`; otherwise says how long until one is.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.capacity);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }

    pub async fn acquire(&self) {
        while let Err(wait) = self.try_take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_capped_ceiling() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.ceiling(0), Duration::from_millis(500));
        assert_eq!(policy.ceiling(1), Duration::from_secs(1));
        assert_eq!(policy.ceiling(3), Duration::from_secs(4));
        assert_eq!(policy.ceiling(10), Duration::from_secs(16));
        assert_eq!(policy.ceiling(40), Duration::from_secs(16));
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 0..8 {
            let samples: Vec<Duration> = (0..200).map(|_| policy.backoff(retry, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= policy.ceiling(retry)));
            // Full jitter spreads over the whole range, down to near zero.
            assert!(samples.iter().any(|d| *d < policy.ceiling(retry) / 4), "retry {retry}");
            assert!(samples.iter().any(|d| *d > policy.ceiling(retry) / 2), "retry {retry}");
        }
    }

    #[test]
    fn attempts_are_bounded_and_retry_after_is_honoured_up_to_a_cap() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        assert!(policy.next_delay(1, None, &mut rng).is_some());
        assert!(policy.next_delay(4, None, &mut rng).is_some());
        assert_eq!(policy.next_delay(5, None, &mut rng), None);
        assert_eq!(policy.next_delay(1, Some(Duration::from_secs(7)), &mut rng), Some(Duration::from_secs(7)));
        assert_eq!(policy.next_delay(1, Some(Duration::from_secs(61)), &mut rng), None);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn bucket_allows_a_burst_then_the_configured_rate() {
        let limiter = RateLimiter::per_minute(600); // 10/s, burst 60
        let start = Instant::now();
        for _ in 0..60 {
            assert!(limiter.try_take(start).is_ok());
        }
        let wait = limiter.try_take(start).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        let later = start + Duration::from_secs(1);
        let taken = (0..20).filter(|_| limiter.try_take(later).is_ok()).count();
        assert_eq!(taken, 10);
        // Over a long idle period the bucket never holds more than its capacity.
        let much_later = start + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| limiter.try_take(much_later).is_ok()).count(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_a_token() {
        let limiter = RateLimiter::per_minute(60); // 1/s, burst 6
        let start = Instant::now();
        for _ in 0..6 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire().await;
        limiter.acquire().await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100), "{waited:?}");
    }
}
