//! The poster Lambda on the SQS work queue (`ReportBatchItemFailures`). All logic is in `shared`.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::config::{PosterConfig, ProcessEnv};
use shared::lambda::{build, poster};
use tokio::sync::OnceCell;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json_logging();
    let config = PosterConfig::from_env(&ProcessEnv)?;
    // Built on the first invocation (see `shared::lambda`); a failed build fails that batch, which SQS
    // redelivers.
    let service = OnceCell::new();
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let (service, config) = (&service, &config);
        async move {
            let service =
                service.get_or_try_init(|| async { build::poster(config, &build::aws_config().await).await }).await?;
            let deadline = poster::deadline_from_epoch_ms(event.context.deadline);
            Ok::<_, Error>(poster::handle_sqs_event(service, event.payload, deadline).await)
        }
    }))
    .await
}
