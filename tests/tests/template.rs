//! `template.yaml` is the deployment contract: each function gets exactly the environment of docs/contract.md §1 it
//! uses, the IAM actions it needs (and no wildcard action), and the SQS/DynamoDB settings the code relies on.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

fn template() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).expect("template.yaml");
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    &t["Resources"][name]
}

fn env_names(t: &Value, function: &str) -> BTreeSet<String> {
    resource(t, function)["Properties"]["Environment"]["Variables"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{function} has no environment"))
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Action → the resources it is granted on (as YAML, `!GetAtt` etc. kept as tagged values).
fn actions(t: &Value, role: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for policy in resource(t, role)["Properties"]["Policies"].as_sequence().expect("policies") {
        for statement in policy["PolicyDocument"]["Statement"].as_sequence().expect("statements") {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"));
            let resource = serde_yaml::to_string(&statement["Resource"]).unwrap().trim().to_owned();
            let list = match &statement["Action"] {
                Value::Sequence(s) => s.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
                Value::String(a) => vec![a.clone()],
                other => panic!("unexpected Action {other:?}"),
            };
            for action in list {
                out.entry(action).or_default().push(resource.clone());
            }
        }
    }
    out
}

// METRICS_NAMESPACE is an addition to contract §1 (README, "Deviations from the contract").
const COMMON: &[&str] =
    &["QUEUE_URL", "TABLE_NAME", "BREX_SECRET_ID", "BREX_API_URL", "BREX_REQUESTS_PER_MINUTE", "METRICS_NAMESPACE"];
const IFS: &[&str] = &["IFS_SECRET_ID", "IFS_URL", "IFS_REALM", "IFS_REQUESTS_PER_MINUTE", "POSTER_MAX_CONCURRENCY"];

#[test]
fn each_function_gets_exactly_its_contract_environment() {
    let t = template();
    assert_eq!(env_names(&t, "WebhookFunction"), set(COMMON));
    let mut poller = set(COMMON);
    poller.extend(set(IFS));
    poller.extend(set(&["POLL_SOURCES", "SYNC_BREX_FIELDS", "BREX_FIELDS_MAX_REQUESTS"]));
    assert_eq!(env_names(&t, "PollerFunction"), poller);
    let mut poster = set(COMMON);
    poster.extend(set(IFS));
    poster.extend(set(&["REPORT_EXPORT_RESULTS", "DRY_RUN"]));
    assert_eq!(env_names(&t, "PosterFunction"), poster);
    // One namespace per stack, where the dashboard and the alarms look (tests/tests/dashboard.rs).
    for function in ["WebhookFunction", "PollerFunction", "PosterFunction"] {
        let namespace = &resource(&t, function)["Properties"]["Environment"]["Variables"]["METRICS_NAMESPACE"];
        let expected: Value = serde_yaml::from_str(r#"!Sub "BrexIfsConnector/${AWS::StackName}""#).unwrap();
        assert_eq!(namespace, &expected, "{function}");
    }
}

#[test]
fn the_environment_the_code_reads_is_what_the_template_sets() {
    // The config parsers accept exactly these environments (a missing variable would stop the function).
    use shared::config::{PollerConfig, PosterConfig, WebhookConfig};
    let t = template();
    let fake = |function: &str| -> std::collections::HashMap<String, String> {
        let value = |name: &str| match name {
            n if n.ends_with("_PER_MINUTE") => "1000",
            "REPORT_EXPORT_RESULTS" | "DRY_RUN" => "true",
            "POLL_SOURCES" => "accounting_records",
            "SYNC_BREX_FIELDS" => "false",
            "BREX_FIELDS_MAX_REQUESTS" => "100",
            "POSTER_MAX_CONCURRENCY" => "2",
            "METRICS_NAMESPACE" => "BrexIfsConnector/stack",
            _ => "https://example.test",
        };
        env_names(&t, function).into_iter().map(|k| (k.clone(), value(&k).to_owned())).collect()
    };
    let mut webhook = fake("WebhookFunction");
    WebhookConfig::from_env(&webhook).expect("webhook env complete");
    webhook.remove("QUEUE_URL");
    assert!(WebhookConfig::from_env(&webhook).is_err());
    PosterConfig::from_env(&fake("PosterFunction")).expect("poster env complete");
    PollerConfig::from_env(&fake("PollerFunction")).expect("poller env complete");
}

#[test]
fn roles_grant_what_each_function_needs_and_nothing_wild() {
    let t = template();
    let webhook = actions(&t, "WebhookRole");
    let poster = actions(&t, "PosterRole");
    let poller = actions(&t, "PollerRole");
    for (role, granted) in [("webhook", &webhook), ("poster", &poster), ("poller", &poller)] {
        for (action, resources) in granted.iter() {
            assert!(!action.contains('*'), "{role}: wildcard action {action}");
            if !action.starts_with("xray:") {
                assert!(resources.iter().all(|r| r != "'*'" && r != "*"), "{role}: {action} on every resource");
            }
        }
        for needed in [
            "logs:PutLogEvents",
            "secretsmanager:GetSecretValue",
            "kms:Decrypt",
            "dynamodb:PutItem",
            "dynamodb:GetItem",
        ] {
            assert!(granted.contains_key(needed), "{role} lacks {needed}");
        }
        // Brex OAuth refresh tokens rotate: every function may have to write the new one back.
        assert!(granted.contains_key("secretsmanager:PutSecretValue"), "{role} cannot store a rotated refresh token");
    }
    assert!(webhook.contains_key("sqs:SendMessage") && webhook.contains_key("dynamodb:DeleteItem"));
    assert!(!webhook.contains_key("sqs:ReceiveMessage"), "the webhook never reads the queue");
    for needed in ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"] {
        assert!(poster.contains_key(needed), "poster lacks {needed}");
    }
    assert!(poller.contains_key("sqs:SendMessage"));
    for (role, granted) in [("poster", &poster), ("poller", &poller)] {
        assert!(
            granted.contains_key("dynamodb:UpdateItem"),
            "{role}: the shared IFS budget is one UpdateItem a request"
        );
    }
    // Only the poller and poster may read the IFS secret.
    let ifs_readers: Vec<_> = [("webhook", &webhook), ("poster", &poster), ("poller", &poller)]
        .into_iter()
        .filter(|(_, g)| g["secretsmanager:GetSecretValue"].iter().any(|r| r.contains("IfsSecret")))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(ifs_readers, vec!["poster", "poller"]);
}

#[test]
fn queue_table_and_functions_match_what_the_code_assumes() {
    let t = template();
    let queue = &resource(&t, "WorkQueue")["Properties"];
    let poster_timeout = resource(&t, "PosterFunction")["Properties"]["Timeout"].as_u64().unwrap();
    assert!(queue["VisibilityTimeout"].as_u64().unwrap() >= 6 * poster_timeout, "visibility ≥ 6 × poster timeout");
    assert_eq!(queue["RedrivePolicy"]["maxReceiveCount"].as_u64(), Some(5));
    let table = &resource(&t, "Table")["Properties"];
    assert_eq!(table["TimeToLiveSpecification"]["AttributeName"].as_str(), Some("expires_at"));
    assert_eq!(table["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    let keys: Vec<_> =
        table["KeySchema"].as_sequence().unwrap().iter().map(|k| k["AttributeName"].as_str().unwrap()).collect();
    assert_eq!(keys, vec!["pk", "sk"]);
    let sqs_event = &resource(&t, "PosterFunction")["Properties"]["Events"]["Work"]["Properties"];
    assert_eq!(sqs_event["FunctionResponseTypes"][0].as_str(), Some("ReportBatchItemFailures"));
    assert!(sqs_event["ScalingConfig"]["MaximumConcurrency"].is_tagged(), "MaximumConcurrency comes from a parameter");
    for (function, binary) in [
        ("WebhookFunction", "brex-ifs-webhook"),
        ("PollerFunction", "brex-ifs-poller"),
        ("PosterFunction", "brex-ifs-poster"),
    ] {
        let f = resource(&t, function);
        assert_eq!(f["Metadata"]["BuildMethod"].as_str(), Some("rust-cargolambda"), "{function}");
        assert_eq!(f["Metadata"]["BuildProperties"]["Binary"].as_str(), Some(binary), "{function}");
        assert_eq!(f["Properties"]["CodeUri"].as_str(), Some("."), "{function}: SAM cannot build a workspace member");
    }
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(globals["Architectures"][0].as_str(), Some("arm64"));
}

#[test]
fn every_function_is_traced_with_x_ray() {
    let t = template();
    assert_eq!(t["Globals"]["Function"]["Tracing"].as_str(), Some("Active"));
    for (function, role) in
        [("WebhookFunction", "WebhookRole"), ("PollerFunction", "PollerRole"), ("PosterFunction", "PosterRole")]
    {
        let own = &resource(&t, function)["Properties"]["Tracing"];
        assert!(own.is_null() || own.as_str() == Some("Active"), "{function} turns tracing off");
        // An explicit role gets none of SAM's tracing policy: it must grant the segments upload itself.
        let granted = actions(&t, role);
        for needed in ["xray:PutTraceSegments", "xray:PutTelemetryRecords"] {
            assert!(granted.contains_key(needed), "{role} lacks {needed}");
        }
    }
}

trait Tagged {
    fn is_tagged(&self) -> bool;
}

impl Tagged for Value {
    fn is_tagged(&self) -> bool {
        matches!(self, Value::Tagged(_))
    }
}
