//! The functions' metrics as CloudWatch would read them: one known run on moto and both simulators, the
//! functions' log captured (`sims::logs`) and its embedded-metric-format lines parsed. Every metric the
//! template's dashboard and alarms name is emitted, with the value this run must give: the record outcomes
//! exactly, the request counts equal to what the simulators counted on their side.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use shared::aws::{CachedMapping, DynamoStore};
use shared::domain::{AccountingRecordId, Origin, Subject, WebhookId};
use shared::ports::{IdempotencyKey, IdempotencyStore};
use shared::reconcile::{DailyOutcome, DifferenceKind};
use sims::brex::BrexSimConfig;
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::model::ReviewStatus;
use sims::brex::webhook::{HeaderFamily, WebhookDelivery};
use sims::ifs::IfsSimConfig;
use sims::logs::{captured_lines, install_capture};
use sims::pipeline::{EXAMPLE_MAPPING, Pipeline, PipelineOptions};
use sims::template::custom_metrics_referenced;

/// Every EMF line captured so far.
fn emf_lines() -> Vec<Value> {
    captured_lines().into_iter().filter(|l| l.get("_aws").is_some()).collect()
}

/// The sum of `metric` over the lines whose dimensions include every pair of `with`.
fn sum(lines: &[Value], metric: &str, with: &[(&str, &str)]) -> f64 {
    values(lines, metric, with).iter().sum()
}

/// Every value of `metric` (a line holds one number or an array of them).
fn values(lines: &[Value], metric: &str, with: &[(&str, &str)]) -> Vec<f64> {
    lines
        .iter()
        .filter(|l| with.iter().all(|(k, v)| l[*k] == *v))
        .filter_map(|l| l.get(metric))
        .flat_map(|v| -> Vec<f64> {
            match v {
                Value::Array(many) => many.iter().filter_map(Value::as_f64).collect(),
                one => one.as_f64().into_iter().collect(),
            }
        })
        .collect()
}

fn wrong_voucher_set_mapping() -> String {
    EXAMPLE_MAPPING.replacen("[passthrough]", "[ifs.api]\nvoucher_entry_set = \"VoucherEntrySet\"\n\n[passthrough]", 1)
}

#[tokio::test]
async fn the_functions_emit_every_metric_the_dashboard_and_alarms_read_with_the_values_of_a_known_run() {
    install_capture("info");
    let mut ifs = IfsSimConfig::default();
    ifs.faults.burst_429_next = 2;
    ifs.faults.concurrent_modification_rate = 0.3;
    let mut brex = BrexSimConfig::default();
    brex.faults.burst_429 = 1;
    let options = PipelineOptions { name: "metrics".into(), ifs, brex, ..PipelineOptions::default() };
    let mut p = Pipeline::start(options).await.expect("pipeline");
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&p.stack.sdk), &p.stack.table_name);
    // A pushed mapping is seen at the next batch (in production within the cache's minute).
    p.poster.mapping = Arc::new(CachedMapping::new(store.clone(), Duration::ZERO));
    p.poster.options.hold_backoff = Duration::from_millis(10);
    p.poster.options.hold_backoff_cap = Duration::from_millis(10);

    // 30 records ready for export; the first has no coding at all, so the mapping cannot book it.
    let options = GeneratorOptions { count: 30, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    let mut records = RecordGenerator::with_options(17, options).batch();
    for line in &mut records[0].line_items {
        line.accounting_field_values.clear();
    }
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    p.brex.insert_records(records);

    // 20 arrive by webhook (plus one forged delivery, refused); the poller finds the other 10.
    let service = p.webhook.clone();
    let transport = move |delivery: WebhookDelivery| {
        let service = service.clone();
        async move { sims::pipeline::invoke_webhook(&service, delivery).await }
    };
    let sender = p.brex.webhook_sender().time_scale(0.0);
    for chunk in ids[..20].chunks(10) {
        assert!(sender.send(&transport, p.brex.ready_for_export_body(chunk)).await.delivered);
    }
    let body = p.brex.ready_for_export_body(&ids[..1]);
    let forged = WebhookDelivery::new(
        "msg_forged",
        Utc::now().timestamp(),
        body,
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()],
        HeaderFamily::Webhook,
    );
    assert_eq!(p.deliver_webhook(forged).await, 401);
    p.drain(Duration::from_secs(60)).await.expect("drained");
    let poller = p.poller(&[]).await.expect("poller");
    let polled = shared::lambda::poller::run(&poller, Utc::now() + chrono::Duration::seconds(60)).await;
    assert_eq!(polled.enqueued(), 10, "{polled:?}");
    p.drain(Duration::from_secs(60)).await.expect("drained");

    // A record posted already, delivered again; a record no longer ready for export.
    let origin = Origin::Webhook { webhook_id: WebhookId::parse("msg_again").unwrap() };
    p.enqueue(&ids[1..2], &origin).await.unwrap();
    let extra = RecordGenerator::with_options(
        18,
        GeneratorOptions { count: 3, missing_gl_rate: 0.0, ..GeneratorOptions::default() },
    )
    .batch();
    let extra_ids: Vec<String> = extra.iter().map(|r| r.id.clone()).collect();
    p.brex.insert_records(extra);
    p.brex.set_review_status(&extra_ids[..1], ReviewStatus::Review);
    p.enqueue(&extra_ids[..1], &origin).await.unwrap();
    // A record another invocation holds a claim on for two more seconds: given back until it runs out.
    let busy = Subject::Record(AccountingRecordId::parse(&extra_ids[1]).unwrap());
    let lease = Utc::now() + chrono::Duration::seconds(2);
    store.begin(&IdempotencyKey::from(&busy), lease, Utc::now()).await.unwrap();
    p.enqueue(&extra_ids[1..2], &origin).await.unwrap();
    p.drain(Duration::from_secs(60)).await.expect("drained");

    // The operator pushes a mapping naming an entity set this tenant lacks: the next record is held.
    store.store_mapping(&wrong_voucher_set_mapping(), Some(1)).await.unwrap();
    p.enqueue(&extra_ids[2..3], &origin).await.unwrap();
    let batch = p.source.receive(10, 1).await.unwrap().expect("a batch");
    let failed = p.invoke_poster(&batch.event).await.unwrap();
    p.source.settle(&batch, &failed).await.unwrap();

    let lines = emf_lines();
    assert!(!lines.is_empty(), "no metric was written");
    for line in &lines {
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "BrexIfsConnector", "the default namespace: {line}");
        for name in directive["Metrics"].as_array().unwrap() {
            assert!(line.get(name["Name"].as_str().unwrap()).is_some(), "a declared metric has its value: {line}");
        }
        for set in directive["Dimensions"].as_array().unwrap() {
            for key in set.as_array().unwrap() {
                assert!(line[key.as_str().unwrap()].is_string(), "a dimension has its value: {line}");
            }
        }
    }

    // Every metric the dashboard and the alarms read is emitted.
    let emitted: BTreeSet<String> = lines
        .iter()
        .flat_map(|l| l["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m["Name"].as_str().map(str::to_owned))
        .collect();
    let referenced = custom_metrics_referenced();
    let never: Vec<&String> = referenced.difference(&emitted).collect();
    assert!(never.is_empty(), "the template reads metrics this run never emitted: {never:?}");

    // The record outcomes, exactly.
    let poster = [("Function", "poster")];
    assert_eq!(sum(&lines, "RecordsPosted", &poster), 30.0, "29 of the 30 plus the one freed from its claim");
    let by_company: f64 =
        lines.iter().filter(|l| l["Company"].is_string()).filter_map(|l| l["RecordsPosted"].as_f64()).sum();
    assert_eq!(by_company, 30.0, "every voucher counts under its company");
    assert_eq!(sum(&lines, "RecordsFailed", &[("Function", "poster"), ("ReasonClass", "mapping")]), 1.0);
    assert_eq!(sum(&lines, "RecordsFailed", &poster), 1.0);
    assert_eq!(sum(&lines, "RecordsSkipped", &poster), 1.0);
    assert_eq!(sum(&lines, "RecordsHeld", &[("Function", "poster"), ("ReasonClass", "ifs")]), 1.0);
    // Stale ETags past their bounded repeats and the claimed record come back with their whole messages, so
    // how many are retried, and then found already posted, depends on the run: the batches' own log says.
    let batches: Vec<Value> = captured_lines().into_iter().filter(|l| l["message"] == "batch done").collect();
    let logged = |field: &str| batches.iter().filter_map(|b| b[field].as_f64()).sum::<f64>();
    assert_eq!(sum(&lines, "RecordsAlreadyPosted", &poster), logged("already_posted"));
    assert!(logged("already_posted") >= 1.0, "the record delivered again");
    assert_eq!(sum(&lines, "RecordsRetried", &poster), logged("retry"));
    assert!(logged("retry") >= 1.0, "the claimed record came back while its claim ran");
    let latencies = values(&lines, "PostLatency", &poster);
    assert_eq!(latencies.len(), 30, "one latency per voucher created");
    assert!(latencies.iter().all(|ms| *ms >= 0.0));

    // Requests, 412s, 429s and tokens: what the simulators counted, nothing more, nothing less.
    let ifs = p.ifs.counters();
    let ifs_side =
        |metric| sum(&lines, metric, &[("Function", "poster")]) + sum(&lines, metric, &[("Function", "poller")]);
    assert_eq!(ifs_side("IfsRequests"), ifs.total_requests as f64);
    assert_eq!(ifs_side("Ifs412"), ifs.status_412 as f64);
    assert!(ifs.status_412 > 0, "the run must have met stale ETags");
    assert_eq!(ifs_side("Ifs429"), ifs.status_429 as f64);
    assert_eq!(ifs.status_429, 2);
    assert_eq!(ifs_side("IfsTokenFetches"), ifs.token_fetches as f64);
    let kinds: f64 = ["token", "read", "write", "batch"]
        .iter()
        .map(|k| sum(&lines, "IfsRequests", &[("Function", "poster"), ("Kind", k)]))
        .sum();
    assert_eq!(kinds, sum(&lines, "IfsRequests", &poster), "every request has its kind");
    assert!(sum(&lines, "IfsRequests", &[("Function", "poster"), ("Kind", "batch")]) > 0.0);
    let flows = values(&lines, "IfsBatchFlow", &poster);
    assert!(!flows.is_empty() && flows.iter().all(|f| *f == 1.0), "this tenant takes $batch: {flows:?}");
    let brex = p.brex.counters();
    let brex_side: f64 =
        ["webhook", "poller", "poster"].iter().map(|f| sum(&lines, "BrexRequests", &[("Function", f)])).sum();
    assert_eq!(brex_side, brex.total_requests as f64);
    let brex_429: f64 =
        ["webhook", "poller", "poster"].iter().map(|f| sum(&lines, "Brex429", &[("Function", f)])).sum();
    assert_eq!((brex_429, brex.rate_limited), (1.0, 1));

    // The webhook: two accepted, one refused with 401.
    let webhook = |outcome, status| {
        sum(&lines, "WebhookDeliveries", &[("Function", "webhook"), ("Outcome", outcome), ("Status", status)])
    };
    assert_eq!((webhook("accepted", "200"), webhook("refused", "401")), (2.0, 1.0));

    // The poller: what it enqueued per feed, a lag for each feed it read to the end, the refresh's warnings.
    let by_source: BTreeMap<String, usize> = polled.sources.iter().map(|s| (s.source.clone(), s.enqueued)).collect();
    for (source, enqueued) in &by_source {
        let counted = sum(&lines, "PollerEnqueued", &[("Function", "poller"), ("Source", source)]);
        assert_eq!(counted, *enqueued as f64, "{source}");
        let lag = values(&lines, "PollerLag", &[("Function", "poller"), ("Source", source)]);
        assert_eq!(lag.len(), 1, "{source}: {lag:?}");
        assert!(lag[0] < 60.0, "read to the end moments ago: {lag:?}");
    }
    let Some(DailyOutcome::Ran { differences, .. }) = &polled.reconcile else {
        panic!("the first run of the day reconciles: {:?}", polled.reconcile)
    };
    for kind in DifferenceKind::ALL {
        let found = differences.get(&kind).copied().unwrap_or(0) as f64;
        let written = values(&lines, "ReconcileDifferences", &[("Function", "poller"), ("Kind", kind.as_str())]);
        assert_eq!(written, [found], "{kind:?}");
    }
    let warnings = polled.reference.as_ref().map(|r| r.warnings).expect("the refresh ran");
    assert_eq!(values(&lines, "ReferenceWarnings", &[("Function", "poller")]), [warnings as f64]);
}
