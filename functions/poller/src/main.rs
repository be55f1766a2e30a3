//! The poller Lambda (EventBridge schedule; the event payload is irrelevant). All logic is in `shared`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::config::{PollerConfig, ProcessEnv};
use shared::lambda::build::aws_config;
use shared::lambda::poster::deadline_from_epoch_ms;
use shared::poller::{PollReport, build_poller};
use tokio::sync::OnceCell;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json_logging();
    let config = PollerConfig::from_env(&ProcessEnv)?;
    // Built on the first run (see `shared::lambda`); a failed build fails that run.
    let poller = OnceCell::new();
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let (poller, config) = (&poller, &config);
        async move {
            let poller = poller.get_or_try_init(|| async { build_poller(config, &aws_config().await).await }).await?;
            let report = poller.run(deadline_from_epoch_ms(event.context.deadline)).await;
            answer(report)
        }
    }))
    .await
}

/// The summary on success; an error (carrying the summary) when a source failed, so the
/// schedule's failures show up in Lambda's error metrics instead of as silent gaps.
fn answer(report: PollReport) -> Result<PollReport, Error> {
    if report.has_errors() {
        let summary = serde_json::to_string(&report).unwrap_or_default();
        return Err(format!("polling failed: {summary}").into());
    }
    Ok(report)
}
