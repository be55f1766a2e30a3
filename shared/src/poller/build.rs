//! Builds the poller once per cold start, the way `crate::lambda::build` builds the other functions.

use std::sync::Arc;

use aws_config::SdkConfig;

use super::{Poller, PollerOptions, ReferenceCheck};
use crate::aws::CachedMapping;
use crate::aws::poll_state::DynamoPollState;
use crate::aws::report::DynamoReportStore;
use crate::aws::{DynamoStore, SqsQueue};
use crate::config::PollerConfig;
use crate::lambda::build::{MAPPING_TTL, StartupError, brex_client, ifs_client};
use crate::ports::{Clock, SystemClock};
use crate::reference::ReferenceRefresh;
use crate::sync::FieldSync;

pub async fn build_poller(config: &PollerConfig, sdk: &SdkConfig) -> Result<Poller, StartupError> {
    let common = &config.common;
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let table = DynamoStore::new(dynamodb.clone(), &common.table_name);
    let mapping = Arc::new(CachedMapping::new(table.clone(), MAPPING_TTL));
    let (brex, ifs) =
        tokio::join!(brex_client(common, sdk, &table), ifs_client(&config.ifs, sdk, &table, mapping.as_ref()));
    let brex = Arc::new(brex?);
    // A broken IFS secret must not stop the polling itself: the refresh reports it on every run instead.
    let reference = match ifs {
        Ok(ifs) => ReferenceCheck::On {
            fields: config.field_sync.map(|options| {
                FieldSync::new(ifs.clone(), brex.clone()).with_options(options).with_clock(clock.clone())
            }),
            refresh: ReferenceRefresh::new(
                Arc::new(ifs.reference().clone()),
                Arc::new(DynamoReportStore::new(dynamodb.clone(), &common.table_name)),
            )
            .with_clock(clock.clone()),
            mapping,
        },
        Err(e) => {
            tracing::error!(error = %e, "IFS client unavailable; the reference refresh will report it on every run");
            ReferenceCheck::Unavailable(e.to_string())
        }
    };
    let store = Arc::new(DynamoPollState::new(dynamodb, &common.table_name));
    Ok(Poller {
        brex,
        state: store.clone(),
        ledger: store,
        queue: Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &config.queue_url)),
        clock,
        sources: config.poll_sources.clone(),
        reference,
        options: PollerOptions::default(),
    })
}
