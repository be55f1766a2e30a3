//! The whole connector wired to its stand-ins: moto (through the real SDK), the Brex and IFS simulators, and
//! the real webhook and poster services built exactly as the Lambda binaries build them. Events reach them the
//! way AWS delivers them: API Gateway HTTP API v2 events for the webhook, SQS event-source batches for the
//! poster. Used by the end-to-end tests, the benchmarks and the local run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use chrono::Utc;
use shared::aws::{DynamoStore, SqsQueue};
use shared::config::{PollerConfig, PosterConfig, WebhookConfig};
use shared::domain::{AccountingRecordId, Origin, WorkItem};
use shared::lambda::start::Lazy;
use shared::lambda::{build, poster, webhook};
use shared::poller::Poller;
use shared::ports::WorkQueue;
use shared::poster::{BatchReport, Poster};
use shared::webhook::WebhookService;

use crate::apigw::http_v2_event;
use crate::aws::{Moto, SqsEventSource, Stack, StackSpec};
use crate::brex::webhook::WebhookDelivery;
use crate::brex::{BrexSim, BrexSimConfig};
use crate::ifs::model::Voucher;
use crate::ifs::{IfsSim, IfsSimConfig};

/// The example mapping document the local run loads.
pub const EXAMPLE_MAPPING: &str = include_str!("../../infra/mapping.example.toml");
/// The IFS client the simulator accepts by default.
pub const IFS_SECRET: &str = r#"{"client_id":"brex-connector","client_secret":"sim-secret"}"#;

pub struct PipelineOptions {
    pub name: String,
    pub brex: BrexSimConfig,
    pub ifs: IfsSimConfig,
    /// Extra poster environment (e.g. `DRY_RUN=true`, `IFS_REQUESTS_PER_MINUTE`).
    pub poster_env: Vec<(String, String)>,
    /// SQS visibility timeout: short in tests so a retried message comes back quickly.
    pub visibility_timeout: u32,
    pub mapping: Option<String>,
    /// Point the functions at a real Brex instead of the simulator (its credentials go in the stack's secret).
    pub brex_url: Option<String>,
    /// Point the functions at a real IFS Cloud (`IFS_URL`, `IFS_REALM`) instead of the simulator.
    pub ifs_target: Option<(String, String)>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            name: "pipeline".into(),
            brex: BrexSimConfig::default(),
            ifs: IfsSimConfig::default(),
            poster_env: Vec::new(),
            visibility_timeout: 1,
            mapping: Some(EXAMPLE_MAPPING.to_owned()),
            brex_url: None,
            ifs_target: None,
        }
    }
}

pub struct Pipeline {
    pub stack: Stack,
    pub brex: BrexSim,
    pub ifs: IfsSim,
    pub webhook: Arc<WebhookService>,
    pub poster: Poster,
    pub source: SqsEventSource,
    /// The poster's environment variables: the poller of a local run is configured from them.
    pub poster_env: HashMap<String, String>,
}

fn env(pairs: Vec<(&str, String)>, extra: &[(String, String)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    env.extend(extra.iter().cloned());
    env
}

impl Pipeline {
    pub async fn start(options: PipelineOptions) -> Result<Pipeline, String> {
        let stack = Stack::create(
            &Moto::get(),
            StackSpec {
                name: &options.name,
                brex_secret: r#"{"token":"bxt_sim_user_token"}"#,
                ifs_secret: IFS_SECRET,
                visibility_timeout: options.visibility_timeout,
                ..StackSpec::default()
            },
        )
        .await?;
        Self::start_on(stack, options).await
    }

    /// Like [`Pipeline::start`] on resources that already exist (the local run creates them from
    /// template.yaml).
    pub async fn start_on(stack: Stack, options: PipelineOptions) -> Result<Pipeline, String> {
        if let Some(mapping) = &options.mapping {
            DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name)
                .store_mapping(mapping, None)
                .await
                .map_err(|e| format!("storing the mapping: {e}"))?;
        }
        // The simulators start either way (cheap); with a real target the functions simply never call them.
        let brex = BrexSim::start(options.brex).await.map_err(|e| format!("brex sim: {e}"))?;
        let ifs = IfsSim::start(options.ifs).await.map_err(|e| format!("ifs sim: {e}"))?;
        let (ifs_url, ifs_realm) =
            options.ifs_target.clone().unwrap_or_else(|| (ifs.base_url().to_owned(), ifs.realm().to_owned()));
        let common = vec![
            ("TABLE_NAME", stack.table_name.clone()),
            ("BREX_SECRET_ID", stack.brex_secret_id.clone()),
            ("BREX_API_URL", options.brex_url.clone().unwrap_or_else(|| brex.base_url())),
            ("QUEUE_URL", stack.queue_url.clone()),
        ];
        let webhook_config = WebhookConfig::from_env(&env(common.clone(), &[])).map_err(|e| e.to_string())?;
        let mut poster_vars = common;
        poster_vars.extend([
            ("IFS_SECRET_ID", stack.ifs_secret_id.clone()),
            ("IFS_URL", ifs_url),
            ("IFS_REALM", ifs_realm),
        ]);
        let poster_config_env = env(poster_vars, &options.poster_env);
        let poster_config = PosterConfig::from_env(&poster_config_env).map_err(|e| e.to_string())?;
        let webhook = Arc::new(build::webhook_service(&webhook_config, &stack.sdk).await.map_err(|e| e.to_string())?);
        let poster = build::poster(&poster_config, &stack.sdk).await.map_err(|e| e.to_string())?;
        let source = SqsEventSource::new(&stack.sdk, &stack.queue_url);
        Ok(Pipeline { stack, brex, ifs, webhook, poster, source, poster_env: poster_config_env })
    }

    /// The poller of this pipeline, configured from the poster's environment variables (minus the poster-only
    /// ones) plus `extra` (e.g. `POLL_SOURCES`, `SYNC_BREX_FIELDS`).
    pub async fn poller(&self, extra: &[(&str, &str)]) -> Result<Poller, String> {
        let mut env = self.poster_env.clone();
        env.retain(|k, _| !matches!(k.as_str(), "DRY_RUN" | "REPORT_EXPORT_RESULTS"));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let config = PollerConfig::from_env(&env).map_err(|e| e.to_string())?;
        build::poller(&config, &self.stack.sdk).await.map_err(|e| e.to_string())
    }

    /// The variables the operator CLI (`connector`) reads to reach this pipeline's table, queue, secrets and
    /// simulators, as in a deployed stack.
    pub fn operator_env(&self) -> HashMap<String, String> {
        env(
            vec![
                ("TABLE_NAME", self.stack.table_name.clone()),
                ("QUEUE_URL", self.stack.queue_url.clone()),
                ("BREX_SECRET_ID", self.stack.brex_secret_id.clone()),
                ("BREX_API_URL", self.brex.base_url()),
                ("IFS_SECRET_ID", self.stack.ifs_secret_id.clone()),
                ("IFS_URL", self.ifs.base_url().to_owned()),
                ("IFS_REALM", self.ifs.realm().to_owned()),
            ],
            &[],
        )
    }

    /// Puts record ids on the work queue the way the webhook does.
    pub async fn enqueue(&self, ids: &[String], origin: &Origin) -> Result<(), String> {
        let ids = ids
            .iter()
            .map(|i| AccountingRecordId::parse(i).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&self.stack.sdk), &self.stack.queue_url);
        queue.enqueue(&WorkItem::accounting_records(&ids, origin, Utc::now())).await.map_err(|e| e.to_string())
    }

    /// One webhook delivery through API Gateway (v2 event) and the webhook handler; returns the status.
    pub async fn deliver_webhook(&self, delivery: WebhookDelivery) -> u16 {
        invoke_webhook(&self.webhook, delivery).await
    }

    /// One SQS batch through the poster as Lambda would invoke it; returns the `batchItemFailures` ids.
    pub async fn invoke_poster(&self, event: &serde_json::Value) -> Result<Vec<String>, String> {
        let event: SqsEvent = serde_json::from_value(event.clone()).map_err(|e| format!("SqsEvent: {e}"))?;
        let response = poster::handle_sqs_event(&self.poster, event, Utc::now() + chrono::Duration::seconds(60)).await;
        Ok(response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect())
    }

    /// Like [`Self::invoke_poster`], with the poster's report of the batch.
    pub async fn invoke_poster_reported(
        &self,
        event: &serde_json::Value,
    ) -> Result<(Vec<String>, BatchReport), String> {
        let event: SqsEvent = serde_json::from_value(event.clone()).map_err(|e| format!("SqsEvent: {e}"))?;
        let deadline = Utc::now() + chrono::Duration::seconds(60);
        let (response, report) = poster::process_sqs_event(&self.poster, event, deadline).await;
        Ok((response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect(), report))
    }

    /// Lambda's SQS event source: batches of ≤ 10, delete what succeeded, until the queue (visible and in
    /// flight) is empty. Returns the number of poster invocations.
    pub async fn drain(&self, limit: Duration) -> Result<usize, String> {
        let start = Instant::now();
        let mut invocations = 0;
        while start.elapsed() < limit {
            match self.source.receive(10, 0).await? {
                Some(batch) => {
                    invocations += 1;
                    let failed = self.invoke_poster(&batch.event).await?;
                    self.source.settle(&batch, &failed).await?;
                }
                None if self.stack.queue_depth(&self.stack.queue_url).await == 0 => return Ok(invocations),
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Err(format!("queue not drained within {limit:?}"))
    }

    /// Committed vouchers by their rows' ReferenceNumber (the Brex id).
    pub fn vouchers_by_reference(&self) -> BTreeMap<String, Vec<Voucher>> {
        let mut by_ref: BTreeMap<String, Vec<Voucher>> = BTreeMap::new();
        for v in self.ifs.vouchers() {
            let reference = v.rows.first().and_then(|r| r.reference_number.clone()).unwrap_or_default();
            by_ref.entry(reference).or_default().push(v);
        }
        by_ref
    }
}

/// What API Gateway + Lambda do with one delivery: build the v2 event, let lambda_http parse it, run the
/// handler exactly as the Lambda binary does.
pub async fn invoke_webhook(service: &WebhookService, delivery: WebhookDelivery) -> u16 {
    let Some(request) = webhook_request(&delivery) else { return 400 };
    status_of(webhook::handle_request(service, request).await)
}

/// [`invoke_webhook`] through the function as the binary runs it (service built on the first request).
pub async fn invoke_webhook_function(function: &Lazy<WebhookService>, delivery: WebhookDelivery) -> u16 {
    let Some(request) = webhook_request(&delivery) else { return 400 };
    status_of(webhook::handle(function, request).await)
}

fn webhook_request(delivery: &WebhookDelivery) -> Option<lambda_http::Request> {
    let event = http_v2_event("POST", "/webhooks/brex", &delivery.headers, &delivery.body);
    lambda_http::request::from_str(&event.to_string()).ok()
}

fn status_of(response: Result<lambda_http::Response<lambda_http::Body>, lambda_http::Error>) -> u16 {
    match response {
        Ok(response) => response.status().as_u16(),
        Err(_) => 500,
    }
}
