//! Builds the poller once per cold start, the way `crate::lambda::build` builds the other functions.

use std::sync::Arc;

use aws_config::SdkConfig;

use super::{Poller, PollerOptions};
use crate::aws::poll_state::DynamoPollState;
use crate::aws::{DynamoStore, SecretsManagerStore, SqsQueue};
use crate::brex::{AuthOptions, BrexAuth, BrexClient, BrexConfig, OAuthContext};
use crate::config::PollerConfig;
use crate::lambda::build::StartupError;
use crate::ports::{Clock, SystemClock};

pub async fn build_poller(config: &PollerConfig, sdk: &SdkConfig) -> Result<Poller, StartupError> {
    let common = &config.common;
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ctx = OAuthContext {
        secrets: Arc::new(SecretsManagerStore::new(aws_sdk_secretsmanager::Client::new(sdk))),
        leases: Arc::new(DynamoStore::new(dynamodb.clone(), &common.table_name)),
        clock: clock.clone(),
        secret_id: common.brex_secret_id.clone(),
    };
    let auth = BrexAuth::load(ctx, AuthOptions::default()).await?;
    let brex = BrexClient::new(BrexConfig::new(&common.brex_api_url, common.brex_requests_per_minute), auth)?;
    let store = Arc::new(DynamoPollState::new(dynamodb, &common.table_name));
    Ok(Poller {
        brex: Arc::new(brex),
        state: store.clone(),
        ledger: store,
        queue: Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &config.queue_url)),
        clock,
        sources: config.poll_sources.clone(),
        options: PollerOptions::default(),
    })
}
