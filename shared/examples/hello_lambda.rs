//! The smallest `lambda_runtime` function: the cold-start and size baseline `infra/scripts/bench.sh` builds
//! beside the three functions, with the same profile and dependency versions.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        Ok::<_, Error>(serde_json::json!({ "hello": event.context.request_id }))
    }))
    .await
}
