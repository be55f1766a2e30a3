//! The per-instance token bucket as the IFS request budget (the DynamoDB-backed one shared by all Lambda
//! instances is `crate::aws::budget`).

use async_trait::async_trait;

use crate::ports::RequestBudget;
use crate::retry::TokenBucket;

#[async_trait]
impl RequestBudget for TokenBucket {
    async fn acquire(&self) {
        TokenBucket::acquire(self).await;
    }
}
