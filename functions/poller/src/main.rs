//! The poller Lambda (EventBridge schedule). All logic is in `shared`.

use lambda_runtime::{Error, service_fn};
use shared::config::{PollerConfig, ProcessEnv};
use shared::lambda::poller;
use shared::lambda::start::Lazy;
use shared::poller::Poller;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json_logging();
    let function = Lazy::<Poller>::new(PollerConfig::from_env(&ProcessEnv)?);
    lambda_runtime::run(service_fn(|event| poller::handle(&function, event))).await
}
