//! The IFS request budget (`IFS_REQUESTS_PER_MINUTE`, for the whole deployment). Every HTTP request, token
//! fetches included, takes one unit first. Behind a trait so a DynamoDB-backed budget shared by all Lambda
//! instances can replace the per-instance token bucket.

use async_trait::async_trait;

use crate::retry::TokenBucket;

#[async_trait]
pub trait RequestBudget: Send + Sync {
    /// Waits until one request may be sent.
    async fn acquire(&self);
}

#[async_trait]
impl RequestBudget for TokenBucket {
    async fn acquire(&self) {
        TokenBucket::acquire(self).await;
    }
}
