//! Builds each function's service (webhook, poster, poller) once per cold start, from its configuration and
//! one AWS `SdkConfig` (loaded the standard way, so `AWS_ENDPOINT_URL` points everything at an emulator). The
//! Lambda binaries, the operator CLI, the local run and the end-to-end tests all go through here.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;

use crate::aws::CachedMapping;
use crate::aws::budget::DynamoBudget;
use crate::aws::poll_state::DynamoPollState;
use crate::aws::report::DynamoReportStore;
use crate::aws::{DynamoStore, SecretsManagerStore, SqsQueue};
use crate::brex::{AuthOptions, BrexAuth, BrexClient, BrexConfig, BrexError, OAuthContext};
use crate::config::{CommonConfig, ConfigError, IfsConfig, PollerConfig, PosterConfig, WebhookConfig};
use crate::domain::IfsCredentials;
use crate::error::AwsError;
use crate::ifs::{IfsClient, IfsClientConfig, IfsError};
use crate::metrics::Metrics;
use crate::poller::{Poller, PollerOptions, ReferenceCheck};
use crate::ports::MappingSource;
use crate::ports::{Clock, SecretStore, SystemClock};
use crate::poster::{Poster, PosterOptions};
use crate::reconcile::{DailyReconcile, Reconciler};
use crate::reference::ReferenceRefresh;
use crate::sync::FieldSync;
use crate::webhook::{WebhookOptions, WebhookService};

/// How long a warm poster keeps a mapping document before re-reading it.
pub const MAPPING_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading a secret: {0}")]
    Secret(#[from] AwsError),
    #[error("the IFS secret is not {{\"client_id\": …, \"client_secret\": …}}: {0}")]
    IfsSecretShape(String),
    #[error("Brex client: {0}")]
    Brex(#[from] BrexError),
    #[error("IFS client: {0}")]
    Ifs(#[from] IfsError),
}

/// The AWS configuration, loaded the standard way. Loading it reads the system's TLS root certificates
/// (several ms), so the functions do it inside their first invocation, with the rest of the build.
pub async fn aws_config() -> SdkConfig {
    aws_config::load_from_env().await
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The Brex client every function (and the operator CLI) uses: credentials from Secrets Manager, OAuth refresh
/// under a DynamoDB lease.
pub async fn brex_client(
    common: &CommonConfig,
    sdk: &SdkConfig,
    store: &DynamoStore,
    metrics: &Metrics,
) -> Result<BrexClient, StartupError> {
    let ctx = OAuthContext {
        secrets: Arc::new(SecretsManagerStore::new(aws_sdk_secretsmanager::Client::new(sdk))),
        leases: Arc::new(store.clone()),
        clock: clock(),
        secret_id: common.brex_secret_id.clone(),
    };
    let auth = BrexAuth::load(ctx, AuthOptions::default()).await?;
    let mut config = BrexConfig::new(&common.brex_api_url, common.brex_requests_per_minute);
    config.metrics = metrics.clone();
    Ok(BrexClient::new(config, auth)?)
}

pub async fn webhook_service(config: &WebhookConfig, sdk: &SdkConfig) -> Result<WebhookService, StartupError> {
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), &config.common.table_name);
    let metrics = Metrics::new(&config.common.metrics_namespace, "webhook");
    let brex = brex_client(&config.common, sdk, &store, &metrics).await?;
    Ok(WebhookService::new(
        Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &config.queue_url)),
        Arc::new(store),
        Arc::new(brex),
        clock(),
        WebhookOptions::default(),
    )
    .with_metrics(metrics))
}

/// The IFS client: credentials from Secrets Manager, projection names from the mapping document, and the
/// deployment-wide request budget shared through the table (every poster, the poller and the CLI draw on the
/// same `IFS_REQUESTS_PER_MINUTE`). The two reads run concurrently: they are the cold start.
pub async fn ifs_client(
    ifs: &IfsConfig,
    sdk: &SdkConfig,
    store: &DynamoStore,
    mapping: &dyn MappingSource,
    metrics: &Metrics,
) -> Result<IfsClient, StartupError> {
    let secrets = SecretsManagerStore::new(aws_sdk_secretsmanager::Client::new(sdk));
    let (secret, loaded) = tokio::join!(secrets.get_secret(&ifs.ifs_secret_id), mapping.mapping());
    let credentials: IfsCredentials =
        serde_json::from_str(secret?.expose()).map_err(|e| StartupError::IfsSecretShape(secret_shape_error(&e)))?;
    let mut client_config = IfsClientConfig::new(&ifs.ifs_url, &ifs.ifs_realm, credentials);
    client_config.metrics = metrics.clone();
    // Projection names come from the mapping document's `[ifs.api]`; defaults until a document exists (the
    // poster refuses to post without one anyway).
    if let Ok(loaded) = loaded {
        client_config.api = loaded.document.api.clone();
    }
    // The poller is one more instance beside the posters.
    let budget = DynamoBudget::per_minute(
        store.clone(),
        "ifs",
        ifs.ifs_requests_per_minute,
        ifs.poster_max_concurrency.saturating_add(1),
    );
    Ok(IfsClient::with_budget(client_config, reqwest::Client::new(), Arc::new(budget))?)
}

/// Where an IFS secret fails to parse, without serde's message: that can quote the value it met, which
/// may be the secret.
fn secret_shape_error(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Data => "a field is missing or has the wrong type",
        _ => "not JSON",
    };
    format!("{what} (line {}, column {})", error.line(), error.column())
}

pub async fn poster(config: &PosterConfig, sdk: &SdkConfig) -> Result<Poster, StartupError> {
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), &config.common.table_name);
    let mapping = Arc::new(CachedMapping::new(store.clone(), MAPPING_TTL));
    let metrics = Metrics::new(&config.common.metrics_namespace, "poster");
    let (brex, ifs) = tokio::try_join!(
        brex_client(&config.common, sdk, &store, &metrics),
        ifs_client(&config.ifs, sdk, &store, mapping.as_ref(), &metrics)
    )?;
    // Every instance shares what it learns of the tenant's `$batch` through the table.
    ifs.remember_flow_in(Arc::new(store.clone()));
    let brex = Arc::new(brex);
    let options = PosterOptions {
        report_export_results: config.report_export_results,
        dry_run: config.dry_run,
        ..PosterOptions::default()
    };
    // Built always, used only while the mapping says `[ifs] attach_receipts = true`.
    let receipts = crate::receipts::ReceiptAttacher {
        source: Arc::new(crate::brex::BrexReceipts::new(brex.clone())?),
        ifs: Arc::new(crate::ifs::IfsAttachments::new(ifs.transport().clone())),
        attached: Arc::new(store.clone()),
        clock: clock(),
        retention: options.retention,
    };
    Ok(Poster {
        records: brex,
        ledger: Arc::new(ifs.ledger().clone()),
        idempotency: Arc::new(store.clone()),
        spend: Arc::new(store.clone()),
        audit: Arc::new(store),
        mapping,
        clock: clock(),
        redelivery: Some(Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &config.queue_url))),
        metrics,
        options,
        receipts: Some(Arc::new(receipts)),
    })
}

pub async fn poller(config: &PollerConfig, sdk: &SdkConfig) -> Result<Poller, StartupError> {
    let common = &config.common;
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let clock = clock();
    let table = DynamoStore::new(dynamodb.clone(), &common.table_name);
    let mapping = Arc::new(CachedMapping::new(table.clone(), MAPPING_TTL));
    let metrics = Metrics::new(&common.metrics_namespace, "poller");
    let (brex, ifs) = tokio::join!(
        brex_client(common, sdk, &table, &metrics),
        ifs_client(&config.ifs, sdk, &table, mapping.as_ref(), &metrics)
    );
    let brex = Arc::new(brex?);
    // A broken IFS secret must not stop the polling itself: the refresh reports it on every run instead.
    let mut options = PollerOptions::default();
    let reference = match ifs {
        Ok(ifs) => {
            options.reconcile = Some(Arc::new(DailyReconcile {
                reconciler: Reconciler::new(Arc::new(ifs.ledger().clone()), Arc::new(table.clone()), brex.clone()),
                mapping: mapping.clone(),
                store: Arc::new(table.clone()),
                window: chrono::Duration::days(DailyReconcile::DEFAULT_WINDOW_DAYS),
            }));
            ReferenceCheck::On {
                fields: config.field_sync.map(|options| {
                    FieldSync::new(ifs.clone(), brex.clone()).with_options(options).with_clock(clock.clone())
                }),
                refresh: ReferenceRefresh::new(
                    Arc::new(ifs.reference().clone()),
                    Arc::new(DynamoReportStore::new(dynamodb.clone(), &common.table_name)),
                )
                .with_clock(clock.clone()),
                mapping,
            }
        }
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
        metrics,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_ifs_secret_is_described_without_its_content() {
        for text in [
            r#""s3cr3t-value""#,
            r#"{"client_id": "c", "client_secret": 987654}"#,
            "s3cr3t-value",
            r#"{"client_id": "s3cr3t-value"}"#,
        ] {
            let Err(error) = serde_json::from_str::<IfsCredentials>(text) else { panic!("{text} parsed") };
            let message = StartupError::IfsSecretShape(secret_shape_error(&error)).to_string();
            assert!(!message.contains("s3cr3t") && !message.contains("987654"), "{message}");
            assert!(message.contains("line 1"), "{message}");
        }
    }
}
