//! The IFS access-token cache. Lifetimes come from `expires_in` (IFS defaults to 3 minutes since 24R2, so
//! never assume an hour); a token is renewed once 80 % of its life has passed. One mutex makes the refresh
//! single-flight: concurrent callers wait for the one fetch instead of each fetching.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;
use tokio::time::{Duration, Instant};

use super::error::IfsError;
use crate::domain::Secret;

/// A fetched token and how long IFS said it lives.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    pub access_token: Secret,
    /// `None` when the response carried no `expires_in`: then the token is used for one request only.
    pub expires_in: Option<Duration>,
}

#[derive(Debug)]
struct Cached {
    token: Secret,
    refresh_at: Instant,
}

/// When to renew a token that lives `expires_in`: at 80 % of its life.
pub fn refresh_after(expires_in: Duration) -> Duration {
    expires_in.mul_f64(0.8)
}

#[derive(Debug, Default)]
pub struct TokenCache {
    slot: Mutex<Option<Cached>>,
    fetches: AtomicU64,
}

impl TokenCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Token fetches so far (successful ones).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The cached token if still fresh, else the result of `fetch` (run by one caller at a time).
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Secret, IfsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FetchedToken, IfsError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = slot.as_ref()
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let fetched_at = Instant::now();
        let fetched = fetch().await?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        *slot = match fetched.expires_in {
            Some(ttl) => {
                Some(Cached { token: fetched.access_token.clone(), refresh_at: fetched_at + refresh_after(ttl) })
            }
            None => {
                tracing::warn!("IFS token response had no expires_in; the token is used for one request only");
                None
            }
        };
        Ok(fetched.access_token)
    }

    /// Drops `rejected` after IFS answered 401 to it. A token someone else already replaced is left alone,
    /// so a burst of 401s on one stale token leads to a single re-fetch.
    pub async fn invalidate(&self, rejected: &Secret) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|c| &c.token == rejected) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    fn fetcher(
        counter: Arc<AtomicU32>,
        ttl: Option<Duration>,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<FetchedToken, IfsError>> + Send>> {
        move || {
            let counter = counter.clone();
            Box::pin(async move {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                // A slow IAM makes concurrent callers pile up on the one fetch.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(FetchedToken { access_token: Secret::new(format!("t{n}")), expires_in: ttl })
            })
        }
    }

    #[test]
    fn refresh_is_at_eighty_percent() {
        assert_eq!(refresh_after(Duration::from_secs(180)), Duration::from_secs(144));
        assert_eq!(refresh_after(Duration::from_secs(2)), Duration::from_millis(1600));
    }

    #[tokio::test(start_paused = true)]
    async fn token_is_reused_until_eighty_percent_of_its_life() {
        let cache = TokenCache::new();
        let n = Arc::new(AtomicU32::new(0));
        let f = fetcher(n.clone(), Some(Duration::from_secs(10)));
        let start = Instant::now();
        assert_eq!(cache.get(&f).await.unwrap().expose(), "t1");
        tokio::time::sleep_until(start + Duration::from_millis(7_900)).await;
        assert_eq!(cache.get(&f).await.unwrap().expose(), "t1", "still inside 80 % of 10 s");
        tokio::time::sleep_until(start + Duration::from_millis(8_100)).await;
        assert_eq!(cache.get(&f).await.unwrap().expose(), "t2", "renewed after 8 s");
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch_and_401_drops_only_the_stale_token() {
        let cache = Arc::new(TokenCache::new());
        let n = Arc::new(AtomicU32::new(0));
        let f = fetcher(n.clone(), Some(Duration::from_secs(180)));
        let tokens = futures::future::join_all((0..20).map(|_| cache.get(&f))).await;
        assert!(tokens.iter().all(|t| t.as_ref().unwrap().expose() == "t1"));
        assert_eq!(n.load(Ordering::SeqCst), 1);

        let stale = Secret::new("t1");
        cache.invalidate(&stale).await;
        assert_eq!(cache.get(&f).await.unwrap().expose(), "t2");
        cache.invalidate(&stale).await;
        assert_eq!(cache.get(&f).await.unwrap().expose(), "t2", "a second 401 on the old token refetches nothing");
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn missing_expires_in_means_single_use() {
        let cache = TokenCache::new();
        let n = Arc::new(AtomicU32::new(0));
        let f = fetcher(n.clone(), None);
        assert_eq!(cache.get(&f).await.unwrap().expose(), "t1");
        assert_eq!(cache.get(&f).await.unwrap().expose(), "t2");
    }
}
