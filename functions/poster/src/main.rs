//! The poster Lambda on the SQS work queue (`ReportBatchItemFailures`). All logic is in `shared`.

use lambda_runtime::{Error, service_fn};
use shared::config::{PosterConfig, ProcessEnv};
use shared::lambda::poster;
use shared::lambda::start::Lazy;
use shared::poster::Poster;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json_logging();
    let function = Lazy::<Poster>::new(PosterConfig::from_env(&ProcessEnv)?);
    lambda_runtime::run(service_fn(|event| poster::handle(&function, event))).await
}
