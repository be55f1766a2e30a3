//! Settings (flags over environment) and the clients, built the way the Lambdas build theirs.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::QueueAttributeName;
use shared::aws::CachedMapping;
use shared::aws::{DynamoStore, SqsQueue};
use shared::brex::BrexClient;
use shared::config::{CommonConfig, ConfigError, IfsConfig, Lookup};
use shared::ifs::IfsClient;
use shared::lambda::build;
use shared::metrics::Metrics;

use crate::args::Invocation;
use crate::error::CliError;

/// Flags first, then the environment.
struct Settings<'a> {
    flags: Vec<(&'static str, String)>,
    env: &'a dyn Lookup,
}

impl Lookup for Settings<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.flags
            .iter()
            .rev()
            .find(|(var, _)| *var == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.trim().is_empty())
            .or_else(|| self.env.get(name))
    }
}

pub struct Ctx<'a> {
    settings: Settings<'a>,
    pub sdk: SdkConfig,
    pub json: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(env: &'a dyn Lookup, invocation: &Invocation, sdk: SdkConfig) -> Self {
        Self { settings: Settings { flags: invocation.settings.clone(), env }, sdk, json: invocation.json }
    }

    pub fn var(&self, name: &str) -> Option<String> {
        self.settings.get(name)
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.var(name).ok_or(ConfigError::Missing(name))
    }

    pub fn common(&self) -> Result<CommonConfig, ConfigError> {
        CommonConfig::from_env(&self.settings)
    }

    pub fn ifs_config(&self) -> Result<IfsConfig, ConfigError> {
        IfsConfig::from_env(&self.settings)
    }

    pub fn store(&self) -> Result<DynamoStore, ConfigError> {
        Ok(DynamoStore::new(aws_sdk_dynamodb::Client::new(&self.sdk), self.required("TABLE_NAME")?))
    }

    pub fn queue_url(&self) -> Result<String, ConfigError> {
        self.required("QUEUE_URL")
    }

    pub fn queue(&self) -> Result<SqsQueue, ConfigError> {
        Ok(SqsQueue::new(self.sqs(), self.queue_url()?))
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    pub async fn brex(&self, store: &DynamoStore) -> Result<BrexClient, CliError> {
        Ok(build::brex_client(&self.common()?, &self.sdk, store, &Metrics::default()).await?)
    }

    /// The IFS client with the projection names of the stored mapping document (as the poster builds it).
    pub async fn ifs(&self, store: &DynamoStore) -> Result<IfsClient, CliError> {
        let mapping = CachedMapping::new(store.clone(), Duration::from_secs(60));
        Ok(build::ifs_client(&self.ifs_config()?, &self.sdk, store, &mapping, &Metrics::default()).await?)
    }

    /// `DLQ_URL`, else the work queue's redrive target. `Ok(None)` when neither is known.
    pub async fn dlq_url(&self) -> Result<Option<String>, CliError> {
        if let Some(url) = self.var("DLQ_URL") {
            return Ok(Some(url));
        }
        let Some(queue_url) = self.var("QUEUE_URL") else { return Ok(None) };
        let sqs = self.sqs();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| shared::error::AwsError::from_sdk("sqs", "GetQueueAttributes", &e))?;
        let Some(policy) = attrs.attributes.and_then(|a| a.get(&QueueAttributeName::RedrivePolicy).cloned()) else {
            return Ok(None);
        };
        let arn = serde_json::from_str::<serde_json::Value>(&policy)
            .ok()
            .and_then(|p| p.get("deadLetterTargetArn").and_then(|v| v.as_str()).map(str::to_owned));
        let Some(name) = arn.as_deref().and_then(|a| a.rsplit(':').next()) else { return Ok(None) };
        let out = sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| shared::error::AwsError::from_sdk("sqs", "GetQueueUrl", &e))?;
        Ok(out.queue_url)
    }
}
