//! The poster's SQS event source: `ReportBatchItemFailures` semantics.

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;

use super::build::{self, StartupError};
use super::start::{Lazy, Start, deadline};
use crate::config::PosterConfig;
use crate::poster::{BatchReport, Message, Poster};

impl Start for Poster {
    type Config = PosterConfig;
    const FUNCTION: &'static str = "poster";

    async fn start(config: &PosterConfig, sdk: &SdkConfig) -> Result<Self, StartupError> {
        build::poster(config, sdk).await
    }
}

/// One invocation: a poster that cannot start fails the whole batch, which SQS redelivers.
pub async fn handle(
    poster: &Lazy<Poster>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    Ok(handle_sqs_event(poster.get().await?, event.payload, deadline(&event.context)).await)
}

/// Runs one SQS batch and answers with exactly the message ids SQS must redeliver.
///
/// Every id returned comes from the event itself, so the response is always well-formed: a malformed
/// failure response would make Lambda retry the whole batch.
pub async fn handle_sqs_event(poster: &Poster, event: SqsEvent, deadline: DateTime<Utc>) -> SqsBatchResponse {
    process_sqs_event(poster, event, deadline).await.0
}

/// [`handle_sqs_event`] with the batch's report, for runners that summarise what happened (the local run).
pub async fn process_sqs_event(
    poster: &Poster,
    event: SqsEvent,
    deadline: DateTime<Utc>,
) -> (SqsBatchResponse, BatchReport) {
    let mut messages = Vec::with_capacity(event.records.len());
    let mut response = SqsBatchResponse::default();
    // message id → (receipt handle, receives so far), for the held messages' backoff.
    let mut receipts = std::collections::HashMap::new();
    for record in event.records {
        if let (Some(id), Some(handle)) = (&record.message_id, &record.receipt_handle) {
            let receives = record.attributes.get("ApproximateReceiveCount").and_then(|n| n.parse::<u32>().ok());
            receipts.insert(id.clone(), (handle.clone(), receives.unwrap_or(1)));
        }
        match (record.message_id, record.body) {
            (Some(message_id), Some(body)) => messages.push(Message { message_id, body }),
            (Some(message_id), None) => {
                tracing::error!(%message_id, "SQS message without a body");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message_id;
                response.batch_item_failures.push(failure);
            }
            // Without an id nothing can be reported for it; Lambda deletes it with the batch.
            (None, _) => tracing::error!("SQS record without a message id"),
        }
    }
    let report = poster.process(&messages, deadline).await;
    if let Some(redelivery) = &poster.redelivery {
        for message_id in &report.held_messages {
            let Some((handle, receives)) = receipts.get(message_id) else { continue };
            let delay = poster.options.hold_delay(*receives);
            // Without the delay the message simply comes back after the visibility timeout.
            if let Err(e) = redelivery.delay(handle, delay).await {
                tracing::warn!(%message_id, error = %e, "could not delay a held message");
            }
        }
    }
    for message_id in &report.failed_messages {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = message_id.clone();
        response.batch_item_failures.push(failure);
    }
    poster.metrics.flush();
    (response, report)
}
