//! The retry policy: bounded attempts, exponential backoff with full jitter under a capped ceiling, and
//! `Retry-After` honoured when the server (or a gateway in front of it) sends one.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (so 1 means "never retry").
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry; doubles per retry.
    pub base: Duration,
    /// Highest backoff ceiling.
    pub cap: Duration,
    /// The longest `Retry-After` waited out in-process. A longer one gives up, so the caller (the queue's
    /// redelivery) takes over instead of a Lambda sitting idle.
    pub max_retry_after: Duration,
    /// Add up to `base` of random delay on top of a `Retry-After`, so instances told the same time do not
    /// all return in lockstep. Off: wait exactly what the server asked.
    pub retry_after_jitter: bool,
}

impl RetryPolicy {
    /// IFS Cloud: six attempts from 200 ms up to 20 s; a `Retry-After` above 20 s goes back to the queue.
    pub const fn ifs() -> Self {
        Self {
            max_attempts: 6,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(20),
            retry_after_jitter: true,
        }
    }

    /// Brex: five attempts from 500 ms up to 16 s; a `Retry-After` of up to a minute (Brex's rate-limit
    /// window) is waited out exactly.
    pub const fn brex() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(16),
            max_retry_after: Duration::from_secs(60),
            retry_after_jitter: false,
        }
    }

    /// How long to wait before the next attempt after `failed` attempts (≥ 1) failed retryably, or `None`
    /// to give up.
    pub fn next_delay(&self, failed: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Option<Duration> {
        if failed >= self.max_attempts.max(1) {
            return None;
        }
        match retry_after {
            Some(after) if after > self.max_retry_after => None,
            Some(after) if self.retry_after_jitter => {
                Some(after.saturating_add(self.backoff(failed, rng).min(self.base)))
            }
            Some(after) => Some(after),
            None => Some(self.backoff(failed, rng)),
        }
    }

    /// Full jitter: uniform in `[0, ceiling(failed)]`.
    pub fn backoff(&self, failed: u32, rng: &mut impl Rng) -> Duration {
        let nanos = u64::try_from(self.ceiling(failed).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// `min(cap, base · 2^(failed-1))`.
    pub fn ceiling(&self, failed: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// A small policy (100 ms up to 1 s, Retry-After up to 1 s with jitter), as the IFS tests use.
    fn small() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(1),
            retry_after_jitter: true,
        }
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let brex = RetryPolicy::brex();
        assert_eq!(brex.ceiling(1), Duration::from_millis(500));
        assert_eq!(brex.ceiling(2), Duration::from_secs(1));
        assert_eq!(brex.ceiling(4), Duration::from_secs(4));
        assert_eq!(brex.ceiling(11), Duration::from_secs(16));
        assert_eq!(brex.ceiling(41), Duration::from_secs(16));
        let p = small();
        assert_eq!(p.ceiling(30), p.cap, "no overflow for large attempt numbers");
        assert_eq!(RetryPolicy::ifs().ceiling(1), Duration::from_millis(200));
        assert_eq!(RetryPolicy::ifs().ceiling(40), Duration::from_secs(20));
    }

    #[test]
    fn full_jitter_spreads_under_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(1);
        let p = small();
        for failed in 1..5 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(failed - 1)).min(p.cap);
            let waits: Vec<Duration> = (0..500)
                .map(|_| match p.next_delay(failed, None, &mut rng) {
                    Some(d) => d,
                    None => panic!("attempt {failed} must be retried"),
                })
                .collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "attempt {failed} exceeded {ceiling:?}");
            // Full jitter spreads over the whole range, not just near the ceiling.
            assert!(waits.iter().any(|w| *w < ceiling / 4) && waits.iter().any(|w| *w > ceiling * 3 / 4));
        }
        let brex = RetryPolicy::brex();
        let mut rng = StdRng::seed_from_u64(7);
        for failed in 1..9 {
            let samples: Vec<Duration> = (0..200).map(|_| brex.backoff(failed, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= brex.ceiling(failed)));
            // Down to near zero, and up to near the ceiling.
            assert!(samples.iter().any(|d| *d < brex.ceiling(failed) / 4), "failed {failed}");
            assert!(samples.iter().any(|d| *d > brex.ceiling(failed) / 2), "failed {failed}");
        }
    }

    #[test]
    fn attempts_are_bounded() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(small().next_delay(5, None, &mut rng), None, "attempts are bounded");
        let brex = RetryPolicy::brex();
        assert!(brex.next_delay(1, None, &mut rng).is_some());
        assert!(brex.next_delay(4, None, &mut rng).is_some());
        assert_eq!(brex.next_delay(5, None, &mut rng), None);
    }

    #[test]
    fn retry_after_is_honoured_up_to_a_limit() {
        let mut rng = StdRng::seed_from_u64(2);
        // With jitter: a floor, at most `base` above it.
        let p = small();
        for _ in 0..200 {
            let Some(d) = p.next_delay(1, Some(Duration::from_millis(700)), &mut rng) else {
                panic!("700ms is within the limit")
            };
            assert!(d >= Duration::from_millis(700) && d <= Duration::from_millis(800), "{d:?}");
        }
        assert_eq!(p.next_delay(1, Some(Duration::from_secs(5)), &mut rng), None);
        // Without: exactly what the server asked.
        let brex = RetryPolicy::brex();
        assert_eq!(brex.next_delay(1, Some(Duration::from_secs(7)), &mut rng), Some(Duration::from_secs(7)));
        assert_eq!(brex.next_delay(1, Some(Duration::from_secs(61)), &mut rng), None);
    }
}
