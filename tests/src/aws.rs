//! The AWS stand-in: a moto server on loopback, reached only through the real AWS SDK for Rust.
//!
//! `.ci/run` (and the local run) start one moto and export the standard `AWS_ENDPOINT_URL`; a test process
//! started without it launches its own moto from the project venv (`infra/scripts/bootstrap.sh` installs
//! it). If neither works the tests fail with instructions — they never skip.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

/// Everything a test needs to know about the emulator.
#[derive(Debug, Clone)]
pub struct Moto {
    endpoint: String,
}

/// Keeps the moto child alive for the life of this process: when the process exits, the pipe closes and the
/// wrapper kills moto, so no emulator outlives its tests.
struct Guard {
    _child: Child,
    _stdin: ChildStdin,
}

static MOTO: OnceLock<Result<(Moto, Option<Guard>), String>> = OnceLock::new();

const INSTALL_HINT: &str = "moto is needed for these tests: run `infra/scripts/bootstrap.sh` (creates .venv with \
     moto[server]) or start one and export AWS_ENDPOINT_URL=http://127.0.0.1:PORT";

impl Moto {
    /// The process-wide emulator: the one at `AWS_ENDPOINT_URL` if set, else one started from `.venv`.
    ///
    /// # Panics
    /// When no emulator can be reached or started — on purpose: a test without its AWS stand-in must fail
    /// loudly, never skip.
    pub fn get() -> Moto {
        match MOTO.get_or_init(start_or_attach) {
            Ok((moto, _)) => moto.clone(),
            Err(why) => panic!("{why}\n{INSTALL_HINT}"),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// SDK configuration equivalent to `aws_config::load_from_env()` with `AWS_ENDPOINT_URL` set to moto.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "moto"))
            .load()
            .await
    }

    /// Environment for child processes (Lambda binaries, the local run): the standard variables only.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ]
    }
}

fn start_or_attach() -> Result<(Moto, Option<Guard>), String> {
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let addr: SocketAddr =
            addr.parse().map_err(|e| format!("AWS_ENDPOINT_URL={endpoint} is not host:port: {e}"))?;
        wait_until_listening(addr, Duration::from_secs(10))
            .map_err(|e| format!("AWS_ENDPOINT_URL={endpoint} is set but nothing answers there: {e}"))?;
        return Ok((Moto { endpoint }, None));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    // moto with DynamoDB calls serialised (see the script: conditional writes must be atomic).
    let moto_server = root.join("infra/scripts/moto_server.py");
    if !root.join(".venv/bin/moto_server").exists() {
        return Err(format!("{} does not exist", root.join(".venv/bin/moto_server").display()));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    // The wrapper terminates moto when our end of its stdin closes (i.e. when this process exits).
    let wrapper = "import subprocess, sys\n\
                   p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
                   sys.stdout.write('started\\n'); sys.stdout.flush()\n\
                   sys.stdin.read()\n\
                   p.terminate()\n";
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(wrapper)
        .arg(&python)
        .arg(&moto_server)
        .args(["127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", moto_server.display()))?;
    let stdin = child.stdin.take().ok_or("moto wrapper has no stdin")?;
    if let Some(out) = child.stdout.take() {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until_listening(addr, Duration::from_secs(30)).map_err(|e| format!("moto did not start on {addr}: {e}"))?;
    Ok((Moto { endpoint: format!("http://{addr}") }, Some(Guard { _child: child, _stdin: stdin })))
}

fn wait_until_listening(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() > timeout => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The resources of one stack (what template.yaml creates), with names unique to one test.
#[derive(Debug, Clone)]
pub struct Stack {
    pub sdk: SdkConfig,
    pub queue_url: String,
    pub dlq_url: String,
    pub table_name: String,
    pub brex_secret_id: String,
    pub ifs_secret_id: String,
}

pub struct StackSpec<'a> {
    pub name: &'a str,
    pub brex_secret: &'a str,
    pub ifs_secret: &'a str,
    /// Seconds a received message stays hidden (short in tests so redelivery is quick).
    pub visibility_timeout: u32,
    pub max_receive_count: u32,
}

impl Default for StackSpec<'_> {
    fn default() -> Self {
        Self {
            name: "test",
            brex_secret: r#"{"token":"bxt_sim_user_token"}"#,
            ifs_secret: "{}",
            visibility_timeout: 30,
            max_receive_count: 5,
        }
    }
}

impl Stack {
    /// Creates queue + DLQ (redrive), table (`pk`/`sk`, TTL `expires_at`) and both secrets.
    pub async fn create(moto: &Moto, spec: StackSpec<'_>) -> Result<Stack, String> {
        let sdk = moto.sdk_config().await;
        let unique = format!("{}-{}", spec.name, &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("{unique}-dlq"))
            .send()
            .await
            .map_err(|e| format!("create DLQ: {e:?}"))?
            .queue_url
            .ok_or("no DLQ url")?;
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| format!("DLQ arn: {e:?}"))?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or("no DLQ arn")?;
        let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count});
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{unique}-work"))
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .attributes(QueueAttributeName::VisibilityTimeout, spec.visibility_timeout.to_string())
            .send()
            .await
            .map_err(|e| format!("create queue: {e:?}"))?
            .queue_url
            .ok_or("no queue url")?;

        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let table_name = format!("{unique}-table");
        let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build();
        let attr = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build()
        };
        ddb.create_table()
            .table_name(&table_name)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("pk", KeyType::Hash).map_err(|e| e.to_string())?)
            .key_schema(key("sk", KeyType::Range).map_err(|e| e.to_string())?)
            .attribute_definitions(attr("pk").map_err(|e| e.to_string())?)
            .attribute_definitions(attr("sk").map_err(|e| e.to_string())?)
            .send()
            .await
            .map_err(|e| format!("create table: {e:?}"))?;
        ddb.update_time_to_live()
            .table_name(&table_name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .send()
            .await
            .map_err(|e| format!("ttl: {e:?}"))?;

        let sm = aws_sdk_secretsmanager::Client::new(&sdk);
        let mut ids = Vec::new();
        for (which, value) in [("brex", spec.brex_secret), ("ifs", spec.ifs_secret)] {
            let arn = sm
                .create_secret()
                .name(format!("{unique}/{which}"))
                .secret_string(value)
                .send()
                .await
                .map_err(|e| format!("create secret {which}: {e:?}"))?
                .arn
                .ok_or("no secret arn")?;
            ids.push(arn);
        }
        let ifs_secret_id = ids.pop().unwrap_or_default();
        let brex_secret_id = ids.pop().unwrap_or_default();
        Ok(Stack { sdk, queue_url, dlq_url, table_name, brex_secret_id, ifs_secret_id })
    }

    /// The idempotency item of `key` (e.g. `record#accr_…`) as stored (`sk = "idem"`), read consistently and
    /// straight through the SDK so that tests check the table layout, not the adapter's reading of it; empty
    /// when there is none.
    pub async fn idempotency_item(&self, key: &str) -> HashMap<String, AttributeValue> {
        aws_sdk_dynamodb::Client::new(&self.sdk)
            .get_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(key.into()))
            .key("sk", AttributeValue::S("idem".into()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item
            .unwrap_or_default()
    }

    /// Receives and deletes every message currently visible on `queue_url`, returning the bodies.
    pub async fn drain(&self, queue_url: &str) -> Vec<String> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let mut bodies = Vec::new();
        let mut empty_polls = 0;
        while empty_polls < 2 {
            let received = match sqs.receive_message().queue_url(queue_url).max_number_of_messages(10).send().await {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(_) => break,
            };
            if received.is_empty() {
                empty_polls += 1;
                continue;
            }
            for message in received {
                if let Some(handle) = message.receipt_handle() {
                    let _ = sqs.delete_message().queue_url(queue_url).receipt_handle(handle).send().await;
                }
                bodies.extend(message.body);
            }
        }
        bodies
    }

    /// `ApproximateNumberOfMessages` (visible) + `…NotVisible` (in flight) of a queue.
    pub async fn queue_depth(&self, queue_url: &str) -> usize {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .ok()
            .and_then(|o| o.attributes)
            .unwrap_or_default();
        attrs.values().filter_map(|v| v.parse::<usize>().ok()).sum()
    }
}

/// One batch received from SQS, shaped as the Lambda SQS event source delivers it.
#[derive(Debug, Clone)]
pub struct ReceivedBatch {
    /// The `SqsEvent` JSON (`Records[…]` with `messageId`, `receiptHandle`, `body`, `eventSource`, …).
    pub event: serde_json::Value,
    /// message id → receipt handle.
    pub receipts: Vec<(String, String)>,
}

/// What Lambda's SQS event source mapping does: receive up to a batch, invoke, then delete every message
/// not named in `batchItemFailures` (those become visible again after the visibility timeout).
#[derive(Debug, Clone)]
pub struct SqsEventSource {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
}

impl SqsEventSource {
    pub fn new(sdk: &SdkConfig, queue_url: &str) -> Self {
        let name = queue_url.rsplit('/').next().unwrap_or_default();
        Self {
            client: aws_sdk_sqs::Client::new(sdk),
            queue_url: queue_url.to_owned(),
            queue_arn: format!("arn:aws:sqs:us-east-1:123456789012:{name}"),
        }
    }

    pub async fn receive(&self, max: i32, wait_seconds: i32) -> Result<Option<ReceivedBatch>, String> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait_seconds)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| format!("receive: {e:?}"))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(None);
        }
        let mut records = Vec::new();
        let mut receipts = Vec::new();
        for m in messages {
            let (Some(id), Some(handle)) = (m.message_id.clone(), m.receipt_handle.clone()) else { continue };
            let attributes: serde_json::Map<String, serde_json::Value> = m
                .attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.as_str().to_owned(), serde_json::Value::String(v)))
                .collect();
            records.push(serde_json::json!({
                "messageId": id,
                "receiptHandle": handle,
                "body": m.body.unwrap_or_default(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body.unwrap_or_default(),
                "eventSource": "aws:sqs",
                "eventSourceARN": self.queue_arn,
                "awsRegion": "us-east-1"
            }));
            receipts.push((id, handle));
        }
        Ok(Some(ReceivedBatch { event: serde_json::json!({ "Records": records }), receipts }))
    }

    /// Deletes the batch's messages except `failed` (message ids from `batchItemFailures`).
    pub async fn settle(&self, batch: &ReceivedBatch, failed: &[String]) -> Result<usize, String> {
        let mut deleted = 0;
        for (id, handle) in &batch.receipts {
            if failed.contains(id) {
                continue;
            }
            self.client
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(handle)
                .send()
                .await
                .map_err(|e| format!("delete: {e:?}"))?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// What the local run needs to know from `template.yaml` to create the same resources on moto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateResources {
    pub visibility_timeout: u32,
    pub max_receive_count: u32,
    pub ttl_attribute: String,
    pub key_schema: Vec<String>,
}

impl TemplateResources {
    /// Reads the queue, DLQ redrive and table settings from template.yaml (the single source of truth).
    pub fn from_template(text: &str) -> Result<Self, String> {
        let t: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| format!("template.yaml: {e}"))?;
        let props = |name: &str| t["Resources"][name]["Properties"].clone();
        let queue = props("WorkQueue");
        let table = props("Table");
        let number = |v: &serde_yaml::Value, what: &str| {
            v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| format!("template.yaml: {what} missing"))
        };
        let key_schema = table["KeySchema"]
            .as_sequence()
            .ok_or("template.yaml: Table.KeySchema missing")?
            .iter()
            .filter_map(|k| k["AttributeName"].as_str().map(str::to_owned))
            .collect();
        Ok(Self {
            visibility_timeout: number(&queue["VisibilityTimeout"], "WorkQueue.VisibilityTimeout")?,
            max_receive_count: number(
                &queue["RedrivePolicy"]["maxReceiveCount"],
                "WorkQueue.RedrivePolicy.maxReceiveCount",
            )?,
            ttl_attribute: table["TimeToLiveSpecification"]["AttributeName"]
                .as_str()
                .ok_or("template.yaml: Table TTL attribute missing")?
                .to_owned(),
            key_schema,
        })
    }
}
