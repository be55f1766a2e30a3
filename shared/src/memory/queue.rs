//! The work queue in memory: keeps what was sent and which messages were delayed.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::lock;
use crate::domain::WorkItem;
use crate::error::{AwsError, Disposition};
use crate::ports::{Redelivery, WorkQueue};

/// SQS's longest visibility timeout (12 h), which `SqsQueue` clamps a delay to.
const MAX_DELAY: Duration = Duration::from_secs(43_200);

#[derive(Debug, Default)]
pub struct MemoryQueue {
    sent: Mutex<Vec<WorkItem>>,
    delays: Mutex<Vec<(String, Duration)>>,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every item enqueued so far, in order (one item is one SQS message).
    pub fn sent(&self) -> Vec<WorkItem> {
        lock(&self.sent).clone()
    }

    /// Takes the items enqueued so far, as a consumer receiving and deleting them would.
    pub fn take(&self) -> Vec<WorkItem> {
        std::mem::take(&mut *lock(&self.sent))
    }

    /// Every delayed redelivery: receipt handle and delay, in order.
    pub fn delays(&self) -> Vec<(String, Duration)> {
        lock(&self.delays).clone()
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    async fn enqueue(&self, items: &[WorkItem]) -> Result<(), AwsError> {
        // An item SQS could not carry (it sends JSON bodies) fails the same way here.
        for item in items {
            serde_json::to_string(item).map_err(|e| {
                AwsError::new(
                    "sqs",
                    "SendMessageBatch",
                    format!("cannot encode work item: {e}"),
                    Disposition::Permanent,
                )
            })?;
        }
        lock(&self.sent).extend_from_slice(items);
        Ok(())
    }
}

#[async_trait]
impl Redelivery for MemoryQueue {
    async fn delay(&self, receipt_handle: &str, delay: Duration) -> Result<(), AwsError> {
        lock(&self.delays).push((receipt_handle.to_owned(), delay.min(MAX_DELAY)));
        Ok(())
    }
}
