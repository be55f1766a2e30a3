//! Every log line a function writes while it handles a record carries that record's id, so that a person
//! searching CloudWatch for one record finds its whole story: the poster's lines (its own, the IFS and Brex
//! clients' retries and warnings, the ledger's) and the webhook's. The functions log through the production
//! JSON subscriber into a buffer (`sims::logs`).

use std::time::Duration;

use serde_json::Value;
use shared::domain::{Origin, WebhookId};
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::ifs::IfsSimConfig;
use sims::ifs::tenant::BatchSupport;
use sims::logs::{captured_lines, install_capture};
use sims::pipeline::{Pipeline, PipelineOptions};

/// The lines the connector's own code logged (not the harness's, not the metric lines).
fn connector_lines(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l.get("_aws").is_none())
        .filter(|l| l["target"].as_str().is_some_and(|t| t.starts_with("shared::")))
        .collect()
}

#[tokio::test]
async fn every_line_the_poster_and_the_webhook_log_for_a_record_carries_its_id() {
    install_capture("info");
    let mut ifs = IfsSimConfig::default();
    // Step by step, with stale ETags, 429s and gateway errors: the clients log retries and warnings.
    ifs.tenant.batch = BatchSupport::Absent;
    ifs.faults.concurrent_modification_rate = 0.3;
    ifs.faults.burst_429_next = 3;
    ifs.faults.status_5xx_rate = 0.1;
    let options = PipelineOptions { name: "record-logs".into(), ifs, ..PipelineOptions::default() };
    let p = Pipeline::start(options).await.expect("pipeline");
    let generated = GeneratorOptions { count: 8, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    let mut records = RecordGenerator::with_options(23, generated).batch();
    for line in &mut records[0].line_items {
        line.accounting_field_values.clear();
    }
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    p.brex.insert_records(records);

    // One record per message and per invocation, so each invocation's lines belong to one record.
    for (i, id) in ids.iter().enumerate() {
        let origin = Origin::Webhook { webhook_id: WebhookId::parse(&format!("msg_logs_{i}")).unwrap() };
        p.enqueue(std::slice::from_ref(id), &origin).await.unwrap();
    }
    let mut checked = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while p.stack.queue_depth(&p.stack.queue_url).await > 0 {
        assert!(std::time::Instant::now() < deadline, "queue not drained");
        let Some(batch) = p.source.receive(1, 1).await.unwrap() else { continue };
        let body: Value = serde_json::from_str(batch.event["Records"][0]["body"].as_str().unwrap()).unwrap();
        let id = body["ids"][0].as_str().unwrap().to_owned();
        let before = captured_lines().len();
        let failed = p.invoke_poster(&batch.event).await.unwrap();
        p.source.settle(&batch, &failed).await.unwrap();
        let lines = captured_lines();
        let mine = connector_lines(&lines[before..]);
        assert!(!mine.is_empty());
        for line in mine {
            assert!(line.to_string().contains(&id), "a line logged while handling {id} does not name it: {line}");
            checked += 1;
        }
    }
    let all = captured_lines();
    let kinds: Vec<&str> = connector_lines(&all).iter().filter_map(|l| l["message"].as_str()).collect();
    for expected in ["posted", "failed permanently", "batch done"] {
        assert!(kinds.contains(&expected), "the run logged no {expected:?} line: {kinds:?}");
    }
    assert!(checked > ids.len() * 2, "{checked} lines checked");

    // The webhook: the lines of an accepted delivery name the records it carried.
    let before = captured_lines().len();
    let sender = p.brex.webhook_sender().time_scale(0.0);
    let service = p.webhook.clone();
    let transport = move |delivery| {
        let service = service.clone();
        async move { sims::pipeline::invoke_webhook(&service, delivery).await }
    };
    assert!(sender.send(&transport, p.brex.ready_for_export_body(&ids[1..3])).await.delivered);
    let lines = captured_lines();
    let accepted = connector_lines(&lines[before..]);
    assert!(accepted.iter().any(|l| l["message"] == "webhook accepted"), "{accepted:?}");
    for line in accepted.iter().filter(|l| l["outcome"] == "accepted") {
        assert!(line.to_string().contains(&ids[1]) && line.to_string().contains(&ids[2]), "{line}");
    }
}
