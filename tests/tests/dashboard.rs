//! What the operator looks at: the dashboard and the alarms of `template.yaml` read only metrics the functions
//! emit (`shared::metrics::Metric`), in the namespace the functions emit into, with dimension sets they publish;
//! the body is JSON after `!Sub`; every alarm reaches the stack's encrypted topic. The checker is shown to
//! refuse the mistakes it exists for on modified copies.

use std::collections::BTreeSet;

use serde_json::{Value as Json, json};
use serde_yaml::Value as Yaml;
use shared::metrics::Metric;
use shared::poster::{FailureClass, HoldClass};
use sims::template::{
    MetricUse, alarm_metrics, catalogue_problems, custom_metrics_referenced, dashboard_body, dashboard_metrics, load,
    own_namespace, resources_of, substitute,
};

fn template() -> Yaml {
    load().unwrap()
}

/// Every problem of the dashboard body and the alarms of `t`.
fn problems(t: &Yaml, body: &Json) -> Vec<String> {
    let namespace = own_namespace(t).unwrap();
    let mut uses = match dashboard_metrics(body) {
        Ok(uses) => uses,
        Err(e) => return vec![e],
    };
    uses.extend(alarm_metrics(t).unwrap());
    catalogue_problems(&uses, &namespace)
}

fn yaml(text: &str) -> Yaml {
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn the_dashboard_and_the_alarms_name_only_metrics_the_functions_emit() {
    let t = template();
    let names = custom_metrics_referenced();
    assert!(!names.is_empty());
    let known: BTreeSet<String> = Metric::ALL.iter().map(|m| m.name().to_owned()).collect();
    let unknown: Vec<_> = names.difference(&known).collect();
    assert!(unknown.is_empty(), "not in the catalogue: {unknown:?}");
    let body = dashboard_body(&t).unwrap();
    let problems = problems(&t, &body);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The functions emit where the dashboard and the alarms look.
    assert_eq!(own_namespace(&t).unwrap(), "BrexIfsConnector/stack");
}

#[test]
fn the_dashboard_shows_what_the_operator_needs() {
    let t = template();
    let body = dashboard_body(&t).unwrap();
    let uses = dashboard_metrics(&body).unwrap();
    let graphed: BTreeSet<&str> = uses.iter().map(|u| u.name.as_str()).collect();
    for needed in
        ["RecordsPosted", "RecordsFailed", "RecordsHeld", "PostLatency", "Ifs412", "Ifs429", "IfsRequests", "PollerLag"]
    {
        assert!(graphed.contains(needed), "the dashboard does not graph {needed}");
    }
    // Failures and holds by reason: every reason class the poster records.
    let reasons = |metric: &str| -> BTreeSet<String> {
        uses.iter().filter(|u| u.name == metric).filter_map(|u| u.dimensions.get("ReasonClass").cloned()).collect()
    };
    let failed = FailureClass::ALL.iter().map(|c| c.as_str().to_owned()).collect::<BTreeSet<_>>();
    let held = HoldClass::ALL.iter().map(|c| c.as_str().to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(reasons("RecordsFailed"), failed);
    assert_eq!(reasons("RecordsHeld"), held);
    // The queue's oldest message and the DLQ's depth.
    let sqs = |metric: &str, queue: &str| {
        uses.iter().any(|u| {
            u.namespace == "AWS/SQS"
                && u.name == metric
                && u.dimensions.get("QueueName").map(String::as_str) == Some(queue)
        })
    };
    assert!(sqs("ApproximateAgeOfOldestMessage", "WorkQueue-QueueName"));
    assert!(sqs("ApproximateNumberOfMessagesVisible", "WorkDLQ-QueueName"));
    let widgets = body["widgets"].as_array().unwrap();
    let widget_with = |metric: &str| -> Vec<&Json> {
        widgets
            .iter()
            .filter(|w| w["properties"]["metrics"].as_array().into_iter().flatten().any(|r| r[1] == metric))
            .collect()
    };
    // Latency at p50 and p95 (the poster keeps every value, so percentiles work).
    let stats: BTreeSet<&str> = widget_with("PostLatency")
        .iter()
        .flat_map(|w| w["properties"]["metrics"].as_array().unwrap())
        .filter(|r| r[1] == "PostLatency")
        .filter_map(|r| r.as_array().and_then(|a| a.last()).and_then(|o| o["stat"].as_str()))
        .collect();
    assert_eq!(stats, BTreeSet::from(["p50", "p95"]));
    // IFS requests per minute, drawn against the budget parameter (its default after substitution).
    let budget = t["Parameters"]["IfsRequestsPerMinute"]["Default"].as_u64().unwrap();
    assert!(
        widget_with("IfsRequests")
            .iter()
            .any(|w| w["properties"]["period"] == 60
                && w["properties"]["annotations"]["horizontal"][0]["value"] == budget),
        "no per-minute IfsRequests widget with the IfsRequestsPerMinute line"
    );
    // The latest failures and holds, from the poster's log, with the record id and the reason.
    let logs: Vec<&str> =
        widgets.iter().filter(|w| w["type"] == "log").filter_map(|w| w["properties"]["query"].as_str()).collect();
    assert_eq!(logs.len(), 1);
    for part in ["SOURCE 'PosterLogGroup'", "'failed permanently'", "outcome = 'held'", "subject", "reason", "fix"] {
        assert!(logs[0].contains(part), "the log query lacks {part}: {}", logs[0]);
    }
    for w in widgets {
        assert!(w["properties"]["region"] == "eu-west-1", "a widget without the stack's region: {w}");
    }
}

#[test]
fn the_body_stays_json_after_substitution_and_uses_only_known_placeholders() {
    let t = template();
    let (_, dashboard) = resources_of(&t, "AWS::CloudWatch::Dashboard").pop().unwrap();
    let Yaml::Tagged(sub) = &dashboard["Properties"]["DashboardBody"] else { panic!("DashboardBody is not !Sub") };
    let raw = sub.value.as_str().unwrap();
    // Every ${X} names a pseudo parameter, a parameter or a resource, or CloudFormation refuses the stack.
    let mut rest = raw;
    while let Some(i) = rest.find("${") {
        let end = rest[i..].find('}').unwrap() + i;
        let name = &rest[i + 2..end];
        let head = name.split('.').next().unwrap();
        assert!(
            name.starts_with("AWS::") || !t["Parameters"][head].is_null() || !t["Resources"][head].is_null(),
            "${{{name}}} names nothing in the template"
        );
        rest = &rest[end..];
    }
    // Only rendered text is JSON: a Number parameter outside quotes stays a number.
    assert!(serde_json::from_str::<Json>(raw).is_err(), "the raw body has bare placeholders; this check must see them");
    let body: Json = serde_json::from_str(&substitute(&t, raw)).unwrap();
    assert!(body["widgets"].as_array().is_some_and(|w| w.len() >= 8));
}

#[test]
fn every_alarm_publishes_to_the_stacks_encrypted_topic() {
    let t = template();
    let alarms = resources_of(&t, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 8, "{} alarms", alarms.len());
    for (name, alarm) in &alarms {
        let actions = alarm["Properties"]["AlarmActions"].as_sequence().unwrap_or_else(|| panic!("{name}: no actions"));
        assert_eq!(actions, &vec![yaml("!Ref AlarmTopic")], "{name}");
    }
    let topics = resources_of(&t, "AWS::SNS::Topic");
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].0, "AlarmTopic");
    assert_eq!(topics[0].1["Properties"]["KmsMasterKeyId"], yaml("!Ref ConnectorKey"));
    // CloudWatch publishes as itself: the key must let it (an AWS-managed alias/aws/sns key cannot).
    let statements = t["Resources"]["ConnectorKey"]["Properties"]["KeyPolicy"]["Statement"].as_sequence().unwrap();
    let cloudwatch = statements
        .iter()
        .find(|s| s["Principal"]["Service"].as_str() == Some("cloudwatch.amazonaws.com"))
        .expect("the key policy lets CloudWatch use the key");
    let actions: Vec<&str> = cloudwatch["Action"].as_sequence().unwrap().iter().filter_map(Yaml::as_str).collect();
    assert!(actions.contains(&"kms:Decrypt") && actions.contains(&"kms:GenerateDataKey"), "{actions:?}");
    // The email subscription exists only when an address is given.
    let subscriptions = resources_of(&t, "AWS::SNS::Subscription");
    assert_eq!(subscriptions.len(), 1);
    let (_, email) = &subscriptions[0];
    assert_eq!(email["Properties"]["Protocol"].as_str(), Some("email"));
    assert_eq!(email["Properties"]["Endpoint"], yaml("!Ref AlarmEmail"));
    let condition = email["Condition"].as_str().unwrap();
    assert_eq!(t["Conditions"][condition], yaml("!Not [!Equals [!Ref AlarmEmail, \"\"]]"));
    assert_eq!(t["Parameters"]["AlarmEmail"]["Default"].as_str(), Some(""));
    assert!(t["Parameters"]["AlarmTopicArn"].is_null(), "the stack's own topic replaced the optional parameter");
}

fn alarm_reading<'a>(t: &'a Yaml, metric: &str) -> Vec<(String, &'a Yaml)> {
    let readers: BTreeSet<String> =
        alarm_metrics(t).unwrap().into_iter().filter(|u| u.name == metric).map(|u| u.used_by).collect();
    resources_of(t, "AWS::CloudWatch::Alarm").into_iter().filter(|(n, _)| readers.contains(n)).collect()
}

fn one_alarm_reading<'a>(t: &'a Yaml, metric: &str) -> &'a Yaml {
    let alarms = alarm_reading(t, metric);
    assert_eq!(alarms.len(), 1, "alarms reading {metric}: {:?}", alarms.iter().map(|(n, _)| n).collect::<Vec<_>>());
    &alarms[0].1["Properties"]
}

#[test]
fn the_alarms_watch_what_they_promise() {
    let t = template();
    let uses = alarm_metrics(&t).unwrap();
    let function_of = |metric: &str| -> BTreeSet<String> {
        uses.iter().filter(|u| u.name == metric).filter_map(|u| u.dimensions.get("Function").cloned()).collect()
    };
    // Held: any held record in 15 minutes.
    let held = one_alarm_reading(&t, "RecordsHeld");
    assert_eq!(function_of("RecordsHeld"), BTreeSet::from(["poster".to_owned()]));
    assert_eq!((held["Period"].as_u64(), held["Statistic"].as_str()), (Some(900), Some("Sum")));
    assert_eq!(
        (held["Threshold"].as_u64(), held["ComparisonOperator"].as_str()),
        (Some(0), Some("GreaterThanThreshold"))
    );
    // Failure rate: failed / (posted + failed) above a parameter, in percent.
    let rate = one_alarm_reading(&t, "RecordsFailed");
    assert_eq!(rate, one_alarm_reading(&t, "RecordsPosted"));
    let expression =
        rate["Metrics"].as_sequence().unwrap().iter().find(|m| m["ReturnData"].as_bool() == Some(true)).unwrap();
    let expression = expression["Expression"].as_str().unwrap();
    assert!(
        expression.contains("failed") && expression.contains("(FILL(posted, 0) + FILL(failed, 0))"),
        "{expression}"
    );
    assert_eq!(rate["Threshold"], yaml("!Ref FailureRateAlarmPercent"));
    // The work queue's oldest message, against a parameter.
    let age = one_alarm_reading(&t, "ApproximateAgeOfOldestMessage");
    assert_eq!(age["Dimensions"][0]["Value"], yaml("!GetAtt WorkQueue.QueueName"));
    assert_eq!(age["Threshold"], yaml("!Ref QueueAgeAlarmSeconds"));
    // Poller lag above twice the poll interval: lag / 2 > interval; silence breaches too.
    let lag = one_alarm_reading(&t, "PollerLag");
    assert_eq!(function_of("PollerLag"), BTreeSet::from(["poller".to_owned()]));
    let metrics = lag["Metrics"].as_sequence().unwrap();
    assert!(metrics.iter().any(|m| m["Expression"].as_str() == Some("lag / 2")));
    assert!(metrics.iter().any(|m| m["Id"].as_str() == Some("lag") && m["MetricStat"]["Stat"] == "Maximum"));
    assert_eq!(lag["Threshold"], yaml("!Ref PollIntervalSeconds"));
    assert_eq!(lag["TreatMissingData"].as_str(), Some("breaching"));
    // IFS 429s sustained: every one of several consecutive periods.
    let throttled = one_alarm_reading(&t, "Ifs429");
    assert_eq!(function_of("Ifs429"), BTreeSet::from(["poller".to_owned(), "poster".to_owned()]));
    let periods = throttled["EvaluationPeriods"].as_u64().unwrap();
    assert!(periods >= 3 && throttled["DatapointsToAlarm"].as_u64() == Some(periods));
    // The dead-letter queue, as before.
    assert_eq!(one_alarm_reading(&t, "ApproximateNumberOfMessagesVisible")["Threshold"].as_u64(), Some(0));
    // No log metric filter counts what the functions now emit themselves.
    assert!(resources_of(&t, "AWS::Logs::MetricFilter").is_empty());
}

#[test]
fn the_poll_interval_parameter_matches_the_default_schedule() {
    let t = template();
    let schedule = t["Parameters"]["PollSchedule"]["Default"].as_str().unwrap();
    let inner = schedule.strip_prefix("rate(").and_then(|s| s.strip_suffix(')')).unwrap();
    let (n, unit) = inner.split_once(' ').unwrap();
    let seconds = n.parse::<u64>().unwrap()
        * match unit.trim_end_matches('s') {
            "minute" => 60,
            "hour" => 3600,
            "day" => 86_400,
            other => panic!("unit {other}"),
        };
    let interval = &t["Parameters"]["PollIntervalSeconds"];
    assert_eq!(interval["Default"].as_u64(), Some(seconds), "PollIntervalSeconds must match {schedule}");
    assert!(interval["MinValue"].as_u64().is_some_and(|m| m >= 60), "alarm periods are whole minutes");
}

#[test]
fn the_checker_refuses_the_mistakes_it_exists_for() {
    let t = template();
    let body = dashboard_body(&t).unwrap();
    assert!(problems(&t, &body).is_empty());
    let with_row = |row: Json| {
        let mut b = body.clone();
        b["widgets"][0]["properties"]["metrics"].as_array_mut().unwrap().push(row);
        b
    };
    let ns = "BrexIfsConnector/stack";
    for (case, row) in [
        ("misspelt metric", json!([ns, "RecordsPostd", "Function", "poster"])),
        ("misspelt namespace", json!(["BrexIfsConnecter/stack", "RecordsPosted", "Function", "poster"])),
        ("no Function dimension", json!([ns, "RecordsPosted", "Company", "10"])),
        ("unknown function", json!([ns, "RecordsPosted", "Function", "posters"])),
        (
            "dimensions never published together",
            json!([ns, "RecordsHeld", "Function", "poster", "ReasonClass", "ifs", "Company", "10"]),
        ),
        ("\".\" repeating into an unknown name", json!([".", "Ifs503", ".", ".", {"label": "x"}])),
        ("SEARCH", json!([{"expression": "SEARCH('{BrexIfsConnector/stack,Function} Ifs503', 'Sum')", "id": "e1"}])),
        ("odd row", json!([ns, "RecordsPosted", "Function"])),
    ] {
        let found = problems(&t, &with_row(row));
        assert!(!found.is_empty(), "{case} went unnoticed");
    }
    // The "." shorthand resolves against the row above, so a correct one passes.
    assert!(problems(&t, &with_row(json!([".", "RecordsAlreadyPosted", ".", "."]))).is_empty());
    // An alarm on an unknown metric, or in another namespace.
    for (case, property, value) in [
        ("alarm on an unknown metric", "MetricName", yaml("RecordsHold")),
        ("alarm in another namespace", "Namespace", yaml("!Sub \"BrexIfs/${AWS::StackName}\"")),
    ] {
        let mut bad = t.clone();
        bad["Resources"]["HeldRecordsAlarm"]["Properties"][property] = value;
        assert!(!problems(&bad, &body).is_empty(), "{case} went unnoticed");
    }
    // A metric-math alarm's MetricStat is read too.
    let mut bad = t.clone();
    bad["Resources"]["Ifs429Alarm"]["Properties"]["Metrics"][1]["MetricStat"]["Metric"]["MetricName"] = yaml("Ifs249");
    assert!(!problems(&bad, &body).is_empty(), "a metric-math alarm's unknown metric went unnoticed");
    // A function emitting elsewhere than the dashboard looks.
    let mut bad = t.clone();
    bad["Resources"]["PollerFunction"]["Properties"]["Environment"]["Variables"]["METRICS_NAMESPACE"] =
        yaml("BrexIfsConnector");
    assert!(own_namespace(&bad).is_err());
    let uses: Vec<MetricUse> = dashboard_metrics(&body).unwrap();
    assert!(!catalogue_problems(&uses, "BrexIfsConnector").is_empty(), "a namespace mismatch went unnoticed");
}
