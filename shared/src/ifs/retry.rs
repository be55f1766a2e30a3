//! The one retry policy: bounded attempts, exponential backoff with full jitter, capped, and `Retry-After`
//! honoured when IFS (or a gateway in front of it) sends one.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (so 1 means "never retry").
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry; doubles per retry.
    pub base: Duration,
    /// Highest backoff ceiling, and the longest `Retry-After` we wait in-process. A longer one is handed to
    /// the caller (SQS redelivery) instead of holding a Lambda idle.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 6, base: Duration::from_millis(200), cap: Duration::from_secs(20) }
    }
}

/// What to do after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    Wait(Duration),
    GiveUp,
}

impl RetryPolicy {
    /// The delay before attempt `failed + 1`, after `failed` attempts (≥ 1) failed retryably.
    pub fn backoff(&self, failed: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Backoff {
        if failed >= self.max_attempts.max(1) {
            return Backoff::GiveUp;
        }
        let ceiling = self.ceiling(failed);
        let jitter = Duration::from_secs_f64(rng.random_range(0.0..=1.0) * ceiling.as_secs_f64());
        match retry_after {
            Some(after) if after > self.cap => Backoff::GiveUp,
            // Wait at least what the server asked; the small jitter on top keeps instances from returning
            // in lockstep.
            Some(after) => Backoff::Wait(after + jitter.min(self.base)),
            None => Backoff::Wait(jitter),
        }
    }

    /// `min(cap, base · 2^(failed-1))`.
    fn ceiling(&self, failed: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 5, base: Duration::from_millis(100), cap: Duration::from_secs(1) }
    }

    #[test]
    fn full_jitter_stays_under_the_doubling_capped_ceiling() {
        let mut rng = StdRng::seed_from_u64(1);
        let p = policy();
        for failed in 1..5 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(failed - 1)).min(p.cap);
            let waits: Vec<Duration> = (0..500)
                .map(|_| match p.backoff(failed, None, &mut rng) {
                    Backoff::Wait(d) => d,
                    Backoff::GiveUp => panic!("attempt {failed} must be retried"),
                })
                .collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "attempt {failed} exceeded {ceiling:?}");
            // Full jitter spreads over the whole range, not just near the ceiling.
            assert!(waits.iter().any(|w| *w < ceiling / 4) && waits.iter().any(|w| *w > ceiling * 3 / 4));
        }
        assert_eq!(p.ceiling(30), p.cap, "no overflow for large attempt numbers");
        assert_eq!(p.backoff(5, None, &mut rng), Backoff::GiveUp, "attempts are bounded");
    }

    #[test]
    fn retry_after_is_a_floor_and_too_long_gives_up() {
        let mut rng = StdRng::seed_from_u64(2);
        let p = policy();
        for _ in 0..200 {
            let Backoff::Wait(d) = p.backoff(1, Some(Duration::from_millis(700)), &mut rng) else {
                panic!("700ms is within the cap")
            };
            assert!(d >= Duration::from_millis(700) && d <= Duration::from_millis(800), "{d:?}");
        }
        assert_eq!(p.backoff(1, Some(Duration::from_secs(5)), &mut rng), Backoff::GiveUp);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-05T10:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Mon, 05 Jan 2026 10:00:07 GMT", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Mon, 05 Jan 2026 09:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
