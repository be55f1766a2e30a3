//! The work queue (SQS).

use async_trait::async_trait;

use crate::domain::WorkItem;
use crate::error::AwsError;

/// Puts work on the queue. Returns only once every item is durably accepted.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    async fn enqueue(&self, items: &[WorkItem]) -> Result<(), AwsError>;
}

/// Delays the redelivery of a message the poster hands back (SQS `ChangeMessageVisibility`), so a record
/// held for a deployment fault comes back with backoff rather than every visibility timeout.
#[async_trait]
pub trait Redelivery: Send + Sync {
    async fn delay(&self, receipt_handle: &str, delay: std::time::Duration) -> Result<(), AwsError>;
}
