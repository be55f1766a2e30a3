//! The template's security pass, enforced on `template.yaml` as rules over every resource,
//! so a resource added later is held to them too:
//! - no wildcard IAM actions, and resources scoped to ARNs (the few documented exceptions are named below);
//! - encryption at rest with the stack's customer-managed key for every resource that stores data, and every
//!   resource type classified (a new data store fails here until it is);
//! - the webhook route throttled, on an API defined in the template (SAM's implicit API has no throttling);
//! - every Lambda's concurrency bounded, and an SQS event source never allowed more than that bound.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

fn template() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).expect("template.yaml");
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

fn resources(t: &Value) -> BTreeMap<String, &Value> {
    t["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .map(|(k, v)| (k.as_str().expect("resource name").to_owned(), v))
        .collect()
}

fn of_type<'a>(t: &'a Value, kind: &str) -> Vec<(String, &'a Value)> {
    resources(t).into_iter().filter(|(_, r)| r["Type"].as_str() == Some(kind)).collect()
}

/// A CloudFormation intrinsic in either form: `!Ref X` (a YAML tag) or `{Ref: X}` / `{"Fn::GetAtt": …}`.
#[derive(Debug, Clone, PartialEq)]
enum Intrinsic {
    Ref(String),
    GetAtt(String),
    Sub(String),
    Other(String),
}

fn intrinsic(v: &Value) -> Option<Intrinsic> {
    let (name, arg) = match v {
        Value::Tagged(tagged) => (tagged.tag.to_string().trim_start_matches('!').to_owned(), &tagged.value),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, arg) = m.iter().next()?;
            let k = k.as_str()?;
            if k != "Ref" && !k.starts_with("Fn::") {
                return None;
            }
            (k.trim_start_matches("Fn::").to_owned(), arg)
        }
        _ => return None,
    };
    let text = match arg {
        Value::String(s) => s.clone(),
        Value::Sequence(parts) => parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("."),
        other => serde_yaml::to_string(other).unwrap_or_default(),
    };
    Some(match name.as_str() {
        "Ref" => Intrinsic::Ref(text),
        "GetAtt" => Intrinsic::GetAtt(text),
        "Sub" => Intrinsic::Sub(text),
        _ => Intrinsic::Other(name),
    })
}

fn strings(v: &Value) -> Vec<&Value> {
    match v {
        Value::Sequence(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// Where a policy statement sits, which decides what `Resource: "*"` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyKind {
    /// Attached to a principal: `Resource` must name ARNs.
    Identity,
    /// A KMS key policy: `Resource: "*"` means "this key" (the only form AWS accepts there).
    KeyPolicy,
    /// Who may assume a role: no `Resource` at all.
    Trust,
}

struct Statement<'a> {
    owner: String,
    kind: PolicyKind,
    body: &'a Value,
}

impl Statement<'_> {
    fn actions(&self) -> Vec<String> {
        strings(&self.body["Action"]).into_iter().map(|a| a.as_str().expect("action is a string").to_owned()).collect()
    }
}

fn statements_of<'a>(owner: &str, kind: PolicyKind, document: &'a Value, out: &mut Vec<Statement<'a>>) {
    let list = document["Statement"].as_sequence().unwrap_or_else(|| panic!("{owner}: policy without statements"));
    out.extend(list.iter().map(|body| Statement { owner: owner.to_owned(), kind, body }));
}

/// Every policy statement in the template, wherever it lives.
fn statements(t: &Value) -> Vec<Statement<'_>> {
    let mut out = Vec::new();
    for (name, r) in resources(t) {
        let p = &r["Properties"];
        match r["Type"].as_str().unwrap_or_default() {
            "AWS::IAM::Role" => {
                statements_of(&name, PolicyKind::Trust, &p["AssumeRolePolicyDocument"], &mut out);
                for policy in p["Policies"].as_sequence().into_iter().flatten() {
                    statements_of(&name, PolicyKind::Identity, &policy["PolicyDocument"], &mut out);
                }
            }
            "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" => {
                statements_of(&name, PolicyKind::Identity, &p["PolicyDocument"], &mut out)
            }
            "AWS::KMS::Key" => statements_of(&name, PolicyKind::KeyPolicy, &p["KeyPolicy"], &mut out),
            _ => {}
        }
    }
    out
}

/// Actions that have no resource-level permissions in IAM: `Resource: "*"` is the only form that works. X-Ray
/// traces every function (`Tracing: Active`), and its upload actions name no resource type at all.
const NO_RESOURCE_LEVEL: &[&str] = &["xray:PutTraceSegments", "xray:PutTelemetryRecords"];

/// Resource types whose `Ref` is their ARN (e.g. a queue's `Ref` is its URL, a table's its name).
const REF_IS_ARN: &[&str] = &["AWS::SecretsManager::Secret", "AWS::SNS::Topic", "AWS::IAM::ManagedPolicy"];

/// Whether a policy `Resource` entry names ARNs.
fn is_arn(t: &Value, resource: &Value) -> Result<(), String> {
    match (resource.as_str(), intrinsic(resource)) {
        (Some(s), _) if s.starts_with("arn:") && !s.ends_with(":*") => Ok(()),
        (_, Some(Intrinsic::GetAtt(attr))) if attr.ends_with(".Arn") => Ok(()),
        (_, Some(Intrinsic::Sub(s))) if s.starts_with("arn:") && !s.ends_with(":*") && !s.ends_with("/*") => Ok(()),
        (_, Some(Intrinsic::Ref(name))) => {
            let kind = t["Resources"][name.as_str()]["Type"].as_str().unwrap_or("a parameter");
            if REF_IS_ARN.contains(&kind) { Ok(()) } else { Err(format!("!Ref {name} ({kind}) is not an ARN")) }
        }
        _ => Err(format!("{} is not an ARN", serde_yaml::to_string(resource).unwrap_or_default().trim())),
    }
}

fn iam_problems(t: &Value) -> Vec<String> {
    let all = statements(t);
    assert!(all.len() >= 10, "found only {} statements: the walk is broken", all.len());
    let mut problems = Vec::new();
    for s in &all {
        let (owner, body) = (&s.owner, s.body);
        for key in ["NotAction", "NotResource", "NotPrincipal"] {
            if !body[key].is_null() {
                problems.push(format!("{owner}: {key} grants by exclusion"));
            }
        }
        let effect = body["Effect"].as_str();
        if effect != Some("Allow") {
            // A Deny only narrows; nothing else to check.
            assert_eq!(effect, Some("Deny"), "{owner}: Effect");
            continue;
        }
        let actions = s.actions();
        for action in &actions {
            // The one exception is the key policy statement for the account itself: it is AWS's default key
            // policy, which only delegates the key to IAM (whose policies are checked here), and without it
            // the key could become unmanageable.
            let root_admin = s.kind == PolicyKind::KeyPolicy
                && action == "kms:*"
                && intrinsic(&body["Principal"]["AWS"])
                    .is_some_and(|p| matches!(p, Intrinsic::Sub(ref arn) if arn.ends_with(":root")));
            if action.contains('*') && !root_admin {
                problems.push(format!("{owner}: wildcard action {action}"));
            }
            if !action.contains(':') {
                problems.push(format!("{owner}: action {action} has no service prefix"));
            }
        }
        let principal = &body["Principal"];
        if principal.as_str() == Some("*") || principal["AWS"].as_str() == Some("*") {
            problems.push(format!("{owner}: Allow to every principal"));
        }
        match s.kind {
            PolicyKind::Trust => {
                if !body["Resource"].is_null() || actions != ["sts:AssumeRole"] {
                    problems.push(format!("{owner}: trust statement is not a plain sts:AssumeRole"));
                }
                if principal["Service"].as_str().is_none() {
                    problems.push(format!("{owner}: only an AWS service may assume the role"));
                }
            }
            PolicyKind::KeyPolicy => {
                if body["Resource"].as_str() != Some("*") {
                    problems.push(format!("{owner}: a key policy's Resource is \"*\" (this key)"));
                }
                if principal["Service"].as_str().is_some_and(|svc| svc.starts_with("logs.")) {
                    // CloudWatch Logs may use the key only for our own log groups.
                    if body["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"].is_null() {
                        problems.push(format!("{owner}: CloudWatch Logs may use the key for any log group"));
                    }
                }
            }
            PolicyKind::Identity => {
                let resources = strings(&body["Resource"]);
                let anywhere = resources.iter().any(|r| r.as_str() == Some("*"));
                if anywhere {
                    if !actions.iter().all(|a| NO_RESOURCE_LEVEL.contains(&a.as_str())) {
                        problems.push(format!("{owner}: {actions:?} granted on every resource"));
                    }
                    continue;
                }
                for r in resources {
                    if let Err(e) = is_arn(t, r) {
                        problems.push(format!("{owner}: {actions:?}: {e}"));
                    }
                }
            }
        }
    }
    // SAM would generate roles (with AWS managed policies and their wildcards) for functions without one.
    for (name, f) in of_type(t, "AWS::Serverless::Function") {
        let p = &f["Properties"];
        if !matches!(intrinsic(&p["Role"]), Some(Intrinsic::GetAtt(ref a)) if a.ends_with(".Arn")) {
            problems.push(format!("{name}: no explicit role (SAM would generate one)"));
        }
        if !p["Policies"].is_null() {
            problems.push(format!("{name}: SAM policy templates instead of the reviewed role"));
        }
    }
    for (name, r) in resources(t) {
        if !r["Properties"]["ManagedPolicyArns"].is_null() {
            problems.push(format!("{name}: managed policies are not reviewed here"));
        }
    }
    problems
}

#[test]
fn no_wildcard_actions_and_resources_scoped_to_arns() {
    let problems = iam_problems(&template());
    assert!(problems.is_empty(), "IAM problems:\n{}", problems.join("\n"));
}

#[test]
fn the_iam_rules_catch_the_mistakes_they_exist_for() {
    let mutations: Vec<(&str, Mutation)> = vec![
        ("wildcard action", Box::new(|t| role_statement(t, "WebhookRole", 2)["Action"] = Value::from("sqs:*"))),
        ("every resource", Box::new(|t| role_statement(t, "PosterRole", 2)["Resource"] = Value::from("*"))),
        (
            "queue URL instead of ARN",
            Box::new(|t| {
                role_statement(t, "PollerRole", 2)["Resource"] = serde_yaml::from_str("!Ref WorkQueue").unwrap()
            }),
        ),
        (
            "wildcard in the key policy",
            Box::new(|t| {
                t["Resources"]["ConnectorKey"]["Properties"]["KeyPolicy"]["Statement"][1]["Action"] =
                    serde_yaml::from_str("[kms:Decrypt, kms:GenerateDataKey*]").unwrap()
            }),
        ),
        (
            "SAM-generated role",
            Box::new(|t| {
                if let Some(p) = t["Resources"]["PollerFunction"]["Properties"].as_mapping_mut() {
                    p.remove("Role");
                }
            }),
        ),
    ];
    assert!(iam_problems(&template()).is_empty());
    for (name, mutate) in mutations {
        let mut t = template();
        mutate(&mut t);
        assert!(!iam_problems(&t).is_empty(), "{name} went unnoticed");
    }
    let t = template();
    for (text, ok) in [
        ("!GetAtt WorkQueue.Arn", true),
        ("!Ref BrexSecret", true),
        ("!Ref WorkQueue", false),
        ("!Ref Table", false),
        ("!GetAtt WorkQueue.QueueName", false),
        ("!Sub \"arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:*\"", false),
        ("arn:aws:dynamodb:eu-west-1:123456789012:table/t", true),
        ("'arn:aws:s3:::*'", false),
    ] {
        let v: Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(is_arn(&t, &v).is_ok(), ok, "{text}");
    }
}

fn is_our_key(v: &Value) -> bool {
    match intrinsic(v) {
        Some(Intrinsic::Ref(k) | Intrinsic::GetAtt(k)) => k == "ConnectorKey" || k == "ConnectorKey.Arn",
        _ => false,
    }
}

/// A deliberate mistake applied to a copy of the template.
type Mutation = Box<dyn Fn(&mut Value)>;

fn role_statement<'a>(t: &'a mut Value, role: &str, i: usize) -> &'a mut Value {
    &mut t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][i]
}

fn encryption_problems(t: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let keys = of_type(t, "AWS::KMS::Key");
    if keys.len() != 1 {
        problems.push(format!("{} customer-managed keys, expected one", keys.len()));
    }
    for (name, key) in &keys {
        if key["Properties"]["EnableKeyRotation"].as_bool() != Some(true) {
            problems.push(format!("{name}: key rotation off"));
        }
        if !key["Properties"]["PendingWindowInDays"].is_null()
            && key["Properties"]["PendingWindowInDays"].as_u64().is_some_and(|d| d < 30)
        {
            problems.push(format!("{name}: short deletion window"));
        }
    }
    // Every type in the template must be classified: a data store added later is caught here.
    const STORES_NOTHING: &[&str] = &[
        "AWS::KMS::Key",
        "AWS::IAM::Role",
        "AWS::Serverless::HttpApi",
        "AWS::CloudWatch::Alarm",
        // Widget definitions only; the metrics and logs it shows are stored (and encrypted) elsewhere.
        "AWS::CloudWatch::Dashboard",
        // Where the alarm topic delivers; the messages rest in the topic.
        "AWS::SNS::Subscription",
        // Code and configuration only; its environment holds no secret (ids and URLs, docs/contract.md §1).
        "AWS::Serverless::Function",
    ];
    let mut encrypted = 0;
    for (name, r) in resources(t) {
        let p = &r["Properties"];
        let kind = r["Type"].as_str().unwrap_or_default();
        let ok = match kind {
            "AWS::SQS::Queue" => is_our_key(&p["KmsMasterKeyId"]),
            "AWS::SecretsManager::Secret" => is_our_key(&p["KmsKeyId"]),
            "AWS::Logs::LogGroup" => is_our_key(&p["KmsKeyId"]),
            // Alarm messages at rest; CloudWatch may publish to it because the key policy lets it use the key.
            "AWS::SNS::Topic" => is_our_key(&p["KmsMasterKeyId"]),
            "AWS::DynamoDB::Table" => {
                let sse = &p["SSESpecification"];
                sse["SSEEnabled"].as_bool() == Some(true)
                    && sse["SSEType"].as_str() == Some("KMS")
                    && is_our_key(&sse["KMSMasterKeyId"])
            }
            other if STORES_NOTHING.contains(&other) => continue,
            other => {
                problems.push(format!("{name}: resource type {other} is not classified by this test"));
                continue;
            }
        };
        encrypted += 1;
        if !ok {
            problems.push(format!("{name} ({kind}) is not encrypted with ConnectorKey"));
        }
    }
    if encrypted < 9 {
        problems.push(format!(
            "only {encrypted} data stores found: queue, DLQ, table, 2 secrets, 3 log groups, alarm topic"
        ));
    }
    // Each function logs into one of those encrypted log groups, not an implicit unencrypted one.
    for (name, f) in of_type(t, "AWS::Serverless::Function") {
        let group = match intrinsic(&f["Properties"]["LoggingConfig"]["LogGroup"]) {
            Some(Intrinsic::Ref(g)) => g,
            _ => String::new(),
        };
        if t["Resources"][group.as_str()]["Type"].as_str() != Some("AWS::Logs::LogGroup") {
            problems.push(format!("{name}: does not log into a log group of the template"));
        }
    }
    // The secrets in the template are placeholders, never real credentials.
    for (name, secret) in of_type(t, "AWS::SecretsManager::Secret") {
        let text = secret["Properties"]["SecretString"].as_str().unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let fields = value.as_object().cloned().unwrap_or_default();
        if fields.is_empty() || fields.values().any(|v| v.as_str() != Some("REPLACE_ME")) {
            problems.push(format!("{name}: SecretString must hold only REPLACE_ME placeholders"));
        }
    }
    problems
}

#[test]
fn everything_that_stores_data_is_encrypted_with_the_stack_key() {
    let problems = encryption_problems(&template());
    assert!(problems.is_empty(), "encryption problems:\n{}", problems.join("\n"));
}

#[test]
fn the_encryption_rules_catch_the_mistakes_they_exist_for() {
    let drop = |resource: &'static str, path: &'static [&'static str], key: &'static str| {
        move |t: &mut Value| {
            let mut v = &mut t["Resources"][resource]["Properties"];
            for p in path {
                v = &mut v[*p];
            }
            if let Some(m) = v.as_mapping_mut() {
                m.remove(key);
            }
        }
    };
    let mutations: Vec<(&str, Mutation)> = vec![
        ("DLQ without KMS", Box::new(drop("WorkDLQ", &[], "KmsMasterKeyId"))),
        ("table with the AWS-owned key", Box::new(drop("Table", &["SSESpecification"], "KMSMasterKeyId"))),
        ("log group without KMS", Box::new(drop("PosterLogGroup", &[], "KmsKeyId"))),
        ("secret without KMS", Box::new(drop("IfsSecret", &[], "KmsKeyId"))),
        ("alarm topic without KMS", Box::new(drop("AlarmTopic", &[], "KmsMasterKeyId"))),
        (
            "alarm topic on the AWS-managed SNS key (CloudWatch cannot publish to it)",
            Box::new(|t: &mut Value| {
                t["Resources"]["AlarmTopic"]["Properties"]["KmsMasterKeyId"] = Value::from("alias/aws/sns");
            }),
        ),
        ("no key rotation", Box::new(drop("ConnectorKey", &[], "EnableKeyRotation"))),
        ("function logging to an implicit group", Box::new(drop("PollerFunction", &[], "LoggingConfig"))),
        (
            "unclassified bucket",
            Box::new(|t: &mut Value| {
                t["Resources"]["Bucket"] = serde_yaml::from_str("Type: AWS::S3::Bucket").unwrap();
            }),
        ),
        (
            "real secret in the template",
            Box::new(|t: &mut Value| {
                t["Resources"]["BrexSecret"]["Properties"]["SecretString"] = Value::from(r#"{"token":"bxt_live"}"#);
            }),
        ),
    ];
    for (name, mutate) in mutations {
        let mut t = template();
        mutate(&mut t);
        assert!(!encryption_problems(&t).is_empty(), "{name} went unnoticed");
    }
}

/// A number in the template: a literal, or a `!Ref` to a parameter (its default, and its bounds).
#[derive(Debug, PartialEq)]
struct Bounded {
    default: f64,
    max: Option<f64>,
    min: Option<f64>,
    parameter: Option<String>,
}

fn number(t: &Value, v: &Value) -> Bounded {
    fn num(v: &Value) -> Option<f64> {
        v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    }
    match intrinsic(v) {
        Some(Intrinsic::Ref(name)) => {
            let p = &t["Parameters"][name.as_str()];
            assert_eq!(p["Type"].as_str(), Some("Number"), "parameter {name}");
            Bounded {
                default: num(&p["Default"]).unwrap_or_else(|| panic!("{name} has no default")),
                max: num(&p["MaxValue"]),
                min: num(&p["MinValue"]),
                parameter: Some(name),
            }
        }
        _ => {
            let n = num(v).unwrap_or_else(|| panic!("not a number: {v:?}"));
            Bounded { default: n, max: Some(n), min: Some(n), parameter: None }
        }
    }
}

#[test]
fn the_webhook_route_is_throttled() {
    let t = template();
    let webhook = &t["Resources"]["WebhookFunction"];
    let events: &Mapping = webhook["Properties"]["Events"].as_mapping().expect("webhook events");
    let mut routes = 0;
    for (name, event) in events {
        let kind = event["Type"].as_str();
        assert_eq!(kind, Some("HttpApi"), "{name:?}: only the HTTP API route (REST APIs are not reviewed here)");
        // Without ApiId SAM creates an implicit API with no throttling at all.
        let api = match intrinsic(&event["Properties"]["ApiId"]) {
            Some(Intrinsic::Ref(api)) => api,
            other => panic!("{name:?}: the route is on an implicit API ({other:?})"),
        };
        let api = &t["Resources"][api.as_str()];
        assert_eq!(api["Type"].as_str(), Some("AWS::Serverless::HttpApi"));
        let settings = &api["Properties"]["DefaultRouteSettings"];
        for key in ["ThrottlingRateLimit", "ThrottlingBurstLimit"] {
            let limit = number(&t, &settings[key]);
            assert!(limit.default >= 1.0, "{key} default {limit:?}");
            assert!(limit.min.is_some_and(|m| m >= 1.0), "{key} may be set to 0 (which blocks Brex): {limit:?}");
            assert!(limit.max.is_some_and(|m| m <= 10_000.0), "{key} has no upper bound: {limit:?}");
        }
        routes += 1;
    }
    assert_eq!(routes, 1);
    // No other API (and no function URL) bypasses the throttled one.
    for (name, r) in resources(&t) {
        let kind = r["Type"].as_str().unwrap_or_default();
        assert!(
            !matches!(kind, "AWS::Serverless::Api" | "AWS::ApiGateway::RestApi" | "AWS::Lambda::Url")
                && r["Properties"]["FunctionUrlConfig"].is_null(),
            "{name}: an unthrottled way in"
        );
    }
}

#[test]
fn every_function_has_bounded_concurrency() {
    let t = template();
    let functions = of_type(&t, "AWS::Serverless::Function");
    assert_eq!(functions.len(), 3);
    for (name, f) in functions {
        let p = &f["Properties"];
        let reserved = number(&t, &p["ReservedConcurrentExecutions"]);
        assert!(reserved.min.is_some_and(|m| m >= 1.0), "{name}: reserved concurrency may be 0: {reserved:?}");
        assert!(reserved.max.is_some_and(|m| m <= 1000.0), "{name}: reserved concurrency unbounded: {reserved:?}");
        for (event, e) in p["Events"].as_mapping().into_iter().flatten() {
            if e["Type"].as_str() != Some("SQS") {
                continue;
            }
            // An SQS source allowed more pollers than the function may run would only produce throttles.
            let max = number(&t, &e["Properties"]["ScalingConfig"]["MaximumConcurrency"]);
            let same_parameter = max.parameter.is_some() && max.parameter == reserved.parameter;
            assert!(same_parameter || max.max <= reserved.min, "{name}.{event:?}: {max:?} above reserved {reserved:?}");
        }
    }
}
