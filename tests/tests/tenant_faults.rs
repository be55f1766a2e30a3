//! When the deployment or the tenant is at fault, no record is blamed: a wrong `[ifs.api]` name holds every
//! record (nothing FAILED, nothing reported to Brex, nothing posted), `connector failures` lists them with
//! the reason and the fix, and once the mapping is fixed `connector replay --all` posts each exactly once.
//! And a dry run accounts for every record of its batch by id. The test binary logs through the production
//! JSON subscriber into a buffer (`sims::logs`), so what the operator would read in CloudWatch is what is asserted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shared::aws::CachedMapping;
use shared::aws::DynamoStore;
use shared::domain::{Origin, WebhookId};
use sims::brex::ExportOutcome;
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::model::{AccountingRecord, ReviewStatus};
use sims::ifs::IfsSimConfig;
use sims::ifs::tenant::BatchSupport;
use sims::logs::{captured_lines, install_capture};
use sims::operator::cli;
use sims::pipeline::{EXAMPLE_MAPPING, Pipeline, PipelineOptions};

/// The example mapping with one `[ifs.api]` name this tenant does not serve.
fn mapping_with_wrong_voucher_set() -> String {
    let anchor = "[passthrough]";
    assert!(EXAMPLE_MAPPING.contains(anchor));
    EXAMPLE_MAPPING.replacen(anchor, "[ifs.api]\nvoucher_entry_set = \"VoucherEntrySet\"\n\n[passthrough]", 1)
}

fn clean_records(seed: u64, n: usize) -> Vec<AccountingRecord> {
    let options = GeneratorOptions { count: n, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    RecordGenerator::with_options(seed, options).batch()
}

async fn pipeline(name: &str, tenant: BatchSupport, mapping: String, poster_env: &[(&str, &str)]) -> Pipeline {
    let mut ifs = IfsSimConfig::default();
    ifs.tenant.batch = tenant;
    let poster_env = poster_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let options =
        PipelineOptions { name: name.into(), ifs, mapping: Some(mapping), poster_env, ..PipelineOptions::default() };
    let mut p = Pipeline::start(options).await.expect("pipeline");
    // A pushed mapping is seen at the next batch (in production within the cache's minute).
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&p.stack.sdk), &p.stack.table_name);
    p.poster.mapping = Arc::new(CachedMapping::new(store, Duration::ZERO));
    // Held messages come back quickly here (production: 30 s × 4ⁿ).
    p.poster.options.hold_backoff = Duration::from_millis(10);
    p.poster.options.hold_backoff_cap = Duration::from_millis(10);
    p
}

/// `status` of each record's idempotency item.
async fn statuses(p: &Pipeline, ids: &[String]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for id in ids {
        let item = p.stack.idempotency_item(&format!("record#{id}")).await;
        out.push(item.get("status").and_then(|v| v.as_s().ok()).cloned());
    }
    out
}

async fn wrong_projection_name_holds_every_record_and_replay_posts_them_once_fixed(tenant: BatchSupport) {
    install_capture("info");
    let name = format!("held-{}", tenant.as_str().replace('_', "-"));
    let p = pipeline(&name, tenant, mapping_with_wrong_voucher_set(), &[]).await;
    let records = clean_records(71, 6);
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    p.brex.insert_records(records);
    let origin = Origin::Webhook { webhook_id: WebhookId::parse("msg_held").unwrap() };
    p.enqueue(&ids, &origin).await.unwrap();
    // The message comes back (held) until its receives run out, then rests in the DLQ.
    p.drain(Duration::from_secs(90)).await.expect("drained");

    assert_eq!(p.ifs.voucher_count(), 0, "nothing posted");
    assert_eq!(p.ifs.pending_virtual_count(), 0, "no virtual voucher left behind");
    assert!(ids.iter().all(|id| p.brex.export_result(id).is_none()), "nothing reported to Brex");
    assert!(ids.iter().all(|id| p.brex.record(id).unwrap().review_status == ReviewStatus::ReadyForExport));
    assert_eq!(statuses(&p, &ids).await, vec![Some("HELD".to_owned()); ids.len()], "held, never FAILED");
    assert!(p.stack.queue_depth(&p.stack.dlq_url).await > 0, "after the receives ran out: in the DLQ");
    assert_eq!(p.ifs.counters().mutations_without_if_match, 0);
    let held_lines = captured_lines()
        .into_iter()
        .filter(|l| {
            l["outcome"] == "held" && ids.iter().any(|id| l["subject"].as_str().is_some_and(|s| s.contains(id)))
        })
        .count();
    assert!(held_lines >= ids.len(), "every hold is logged (the dashboard's failed-and-held log query lists these)");

    let listed = cli(&p, &["failures", "--json"]).await;
    assert_eq!(listed.code, 1, "held records are something to fix");
    let json: serde_json::Value = serde_json::from_str(&listed.out).expect("json");
    assert_eq!(json["table"].as_array().map(Vec::len), Some(0), "nothing FAILED: {json}");
    let mut held: Vec<String> =
        json["held"].as_array().unwrap().iter().map(|h| h["subject"]["id"].as_str().unwrap().to_owned()).collect();
    held.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(held, expected, "every record is listed as held");
    let causes = json["held_causes"].as_array().unwrap();
    assert_eq!(causes.len(), 1, "one cause: {causes:?}");
    let reason = causes[0]["reason"].as_str().unwrap();
    let fix = causes[0]["fix"].as_str().unwrap();
    assert!(reason.contains("VoucherEntrySet") && reason.contains("404"), "names what is missing: {reason}");
    assert!(fix.contains("[ifs.api]") && fix.contains("replay"), "says how to fix it: {fix}");
    assert!(fix.contains("does not serve VoucherEntryAssistantHandling.svc/VoucherEntrySet"), "names the set: {fix}");

    // The operator fixes the name (the example mapping serves the defaults) and replays.
    let file = std::env::temp_dir().join(format!("{name}-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, EXAMPLE_MAPPING).unwrap();
    assert_eq!(cli(&p, &["mapping", "push", file.to_str().unwrap()]).await.code, 0);
    let replay = cli(&p, &["replay", "--all"]).await;
    assert_eq!(replay.code, 0);
    p.drain(Duration::from_secs(90)).await.expect("drained");

    let by_ref: BTreeMap<_, _> = p.vouchers_by_reference();
    for id in &ids {
        assert_eq!(by_ref.get(id).map(Vec::len), Some(1), "{id} posted exactly once");
        assert!(
            matches!(p.brex.export_result(id).map(|r| r.outcome), Some(ExportOutcome::Success { .. })),
            "{id} reported exported"
        );
    }
    assert_eq!(p.ifs.voucher_count(), ids.len());
    assert_eq!(statuses(&p, &ids).await, vec![Some("COMPLETED".to_owned()); ids.len()]);
    let after = cli(&p, &["failures", "--json"]).await;
    let after: serde_json::Value = serde_json::from_str(&after.out).expect("json");
    assert_eq!(after["held"].as_array().map(Vec::len), Some(0), "nothing held any more: {after}");
    assert_eq!(p.ifs.pending_virtual_count(), 0);
    assert_eq!(p.ifs.counters().mutations_without_if_match, 0);
}

#[tokio::test]
async fn a_wrong_projection_name_holds_then_replays_with_batch() {
    wrong_projection_name_holds_every_record_and_replay_posts_them_once_fixed(BatchSupport::Full).await;
}

#[tokio::test]
async fn a_wrong_projection_name_holds_then_replays_without_batch() {
    wrong_projection_name_holds_every_record_and_replay_posts_them_once_fixed(BatchSupport::Absent).await;
}

#[tokio::test]
async fn a_dry_run_logs_every_record_of_its_batch_by_id() {
    install_capture("info");
    let p = pipeline("dry-every", BatchSupport::Full, EXAMPLE_MAPPING.to_owned(), &[("DRY_RUN", "true")]).await;
    let mut records = clean_records(81, 5);
    let broken = records.iter_mut().find(|r| !r.record_type.ends_with("_REFUND")).unwrap();
    for line in &mut broken.line_items {
        line.accounting_field_values.retain(|f| f.field_name.as_deref() != Some("GL Account"));
    }
    let broken_id = broken.id.clone();
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    p.brex.insert_records(records);
    // One id Brex does not know (deleted since the webhook).
    let unknown = "accr_doesnotexist0001".to_owned();
    let all: Vec<String> = ids.iter().cloned().chain([unknown.clone()]).collect();
    let origin = Origin::Webhook { webhook_id: WebhookId::parse("msg_dry").unwrap() };
    p.enqueue(&all, &origin).await.unwrap();
    p.drain(Duration::from_secs(30)).await.expect("drained");
    assert_eq!(p.ifs.voucher_count(), 0);

    let lines = captured_lines();
    let outcome_of = |id: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["subject"].as_str().is_some_and(|s| s.ends_with(id)))
            .filter_map(|l| l["outcome"].as_str().filter(|o| o.starts_with("would_")).map(str::to_owned))
            .collect()
    };
    for id in &ids {
        let expected = if *id == broken_id { "would_fail" } else { "would_post" };
        assert_eq!(outcome_of(id), vec![expected.to_owned()], "{id} accounted for once");
    }
    let unknown_outcome = outcome_of(&unknown);
    assert_eq!(unknown_outcome.len(), 1, "the unknown id is accounted for too: {unknown_outcome:?}");
    let proposal = lines
        .iter()
        .find(|l| l["outcome"] == "would_post" && l["subject"].as_str().is_some_and(|s| s.ends_with(&ids[0])))
        .or_else(|| lines.iter().find(|l| l["outcome"] == "would_post"))
        .and_then(|l| l["proposal"].as_str())
        .expect("a proposal is logged");
    assert!(proposal.contains("\"rows\""), "{proposal}");
    let failing = lines
        .iter()
        .find(|l| l["outcome"] == "would_fail" && l["subject"].as_str().is_some_and(|s| s.ends_with(&broken_id)))
        .expect("the failing record");
    assert!(failing["reason"].as_str().is_some_and(|r| r.to_lowercase().contains("account")), "{failing}");
}
