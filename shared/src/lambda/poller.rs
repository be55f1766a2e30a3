//! The poller's EventBridge schedule (the event's payload is irrelevant).

use aws_config::SdkConfig;
use lambda_runtime::LambdaEvent;

use super::build::{self, StartupError};
use super::start::{Lazy, Start, deadline};
use crate::config::PollerConfig;
use crate::poller::{PollReport, Poller};

impl Start for Poller {
    type Config = PollerConfig;
    const FUNCTION: &'static str = "poller";

    async fn start(config: &PollerConfig, sdk: &SdkConfig) -> Result<Self, StartupError> {
        build::poller(config, sdk).await
    }
}

/// One scheduled run: the summary on success; an error carrying the summary when a source failed, so the
/// schedule's failures show in Lambda's error metrics instead of as silent gaps.
pub async fn handle(
    poller: &Lazy<Poller>,
    event: LambdaEvent<serde_json::Value>,
) -> Result<PollReport, lambda_runtime::Error> {
    let report = run(poller.get().await?, deadline(&event.context)).await;
    if report.has_errors() {
        let summary = serde_json::to_string(&report).unwrap_or_default();
        return Err(format!("polling failed: {summary}").into());
    }
    Ok(report)
}

/// One run, its metrics flushed (the runners that host the poller call this too).
pub async fn run(poller: &Poller, deadline: chrono::DateTime<chrono::Utc>) -> PollReport {
    let report = poller.run(deadline).await;
    poller.metrics.flush();
    report
}
