//! The SQS work queue.

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::domain::WorkItem;
use crate::error::{AwsError, Disposition};
use crate::ports::{Redelivery, WorkQueue};

/// SQS allows 10 entries per `SendMessageBatch`.
const SQS_BATCH: usize = 10;
/// Entries that SQS refused in a batch are re-sent this many times before we give up (and the caller
/// answers 5xx / lets the message be redelivered).
const RESEND_ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }

    async fn send_batch(&self, bodies: &[(String, String)]) -> Result<Vec<(String, String)>, AwsError> {
        let entries = bodies
            .iter()
            .map(|(id, body)| SendMessageBatchRequestEntry::builder().id(id).message_body(body).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AwsError::new("sqs", "SendMessageBatch", e.to_string(), Disposition::Permanent))?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sqs", "SendMessageBatch", &e))?;
        let failed: std::collections::HashSet<String> = out.failed.iter().map(|f| f.id.clone()).collect();
        Ok(bodies.iter().filter(|(id, _)| failed.contains(id)).cloned().collect())
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    async fn enqueue(&self, items: &[WorkItem]) -> Result<(), AwsError> {
        let bodies = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                serde_json::to_string(item).map(|body| (i.to_string(), body)).map_err(|e| {
                    AwsError::new(
                        "sqs",
                        "SendMessageBatch",
                        format!("cannot encode work item: {e}"),
                        Disposition::Permanent,
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for chunk in bodies.chunks(SQS_BATCH) {
            let mut pending = chunk.to_vec();
            for _ in 0..RESEND_ATTEMPTS {
                pending = self.send_batch(&pending).await?;
                if pending.is_empty() {
                    break;
                }
            }
            if !pending.is_empty() {
                return Err(AwsError {
                    service: "sqs",
                    operation: "SendMessageBatch",
                    code: None,
                    message: format!(
                        "{} of {} messages refused after {RESEND_ATTEMPTS} tries",
                        pending.len(),
                        chunk.len()
                    ),
                    disposition: Disposition::Retryable,
                });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Redelivery for SqsQueue {
    async fn delay(&self, receipt_handle: &str, delay: std::time::Duration) -> Result<(), AwsError> {
        // SQS takes 0..=43 200 s (12 h).
        let seconds = i32::try_from(delay.as_secs().min(43_200)).unwrap_or(43_200);
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sqs", "ChangeMessageVisibility", &e))?;
        Ok(())
    }
}
