//! The operator CLI (`connector`) against the local stack: moto through the real SDK, the Brex and IFS
//! simulators, and the real poster. Each command runs in-process through `connector::run_with`, configured by
//! the same variables the Lambdas get.

use std::collections::HashMap;
use std::time::Duration;

use shared::domain::{Origin, WebhookId, WorkItem};
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::model::{AccountingRecord, ReviewStatus};
use sims::operator::{cli, cli_with};
use sims::pipeline::{EXAMPLE_MAPPING, Pipeline, PipelineOptions};

const HOOK_URL: &str = "https://abc123.execute-api.us-east-1.amazonaws.com/webhooks/brex";

async fn world(name: &str) -> Pipeline {
    Pipeline::start(PipelineOptions { name: name.into(), ..PipelineOptions::default() }).await.expect("pipeline")
}

fn env_of(p: &Pipeline) -> HashMap<String, String> {
    p.operator_env()
}

fn clean_records(seed: u64, n: usize) -> Vec<AccountingRecord> {
    let options = GeneratorOptions { count: n, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    RecordGenerator::with_options(seed, options).batch()
}

/// Clean records plus one card expense stripped of its GL coding (no rule can give it an account).
fn records_with_one_unmappable(seed: u64, n: usize) -> (Vec<AccountingRecord>, String, AccountingRecord) {
    let mut records = clean_records(seed, n);
    let broken = records.iter_mut().find(|r| !r.record_type.ends_with("_REFUND")).expect("a purchase");
    let original = broken.clone();
    for line in &mut broken.line_items {
        line.accounting_field_values.retain(|f| f.field_name.as_deref() != Some("GL Account"));
    }
    let id = broken.id.clone();
    (records, id, original)
}

fn insert(p: &Pipeline, records: Vec<AccountingRecord>) -> Vec<String> {
    let ids = records.iter().map(|r| r.id.clone()).collect();
    p.brex.insert_records(records);
    ids
}

#[tokio::test]
async fn webhook_register_is_idempotent_and_reactivates() {
    let p = world("cli-webhook").await;
    let first = cli(&p, &["webhook", "register", HOOK_URL]).await;
    assert_eq!(first.code, 0, "{}", first.err);
    assert!(first.out.starts_with("registered: wsub_"), "{}", first.out);
    let again = cli(&p, &["webhook", "register", HOOK_URL, "--json"]).await;
    assert_eq!(again.json()["action"], "unchanged");
    let subs = p.brex.webhook_subscriptions();
    assert_eq!(subs.len(), 1, "one subscription however often it is registered");
    assert_eq!(subs[0].event_types, vec!["ACCOUNTING_RECORD_READY_FOR_EXPORT"]);
    assert_eq!(subs[0].status, "ACTIVE");
    // Brex turned it off (failing endpoint): registering again re-activates the same subscription.
    assert!(p.brex.set_webhook_subscription_status(&subs[0].id, "INACTIVE"));
    let reactivated = cli(&p, &["webhook", "register", HOOK_URL]).await;
    assert!(reactivated.out.starts_with("re-activated:"), "{}", reactivated.out);
    let subs = p.brex.webhook_subscriptions();
    assert_eq!((subs.len(), subs[0].status.as_str()), (1, "ACTIVE"));
    let c = p.brex.counters();
    assert_eq!(c.route_total("POST", "/v1/webhooks"), 1, "{c:?}");
    assert_eq!(c.route_total("PUT", "/v1/webhooks/{webhook_id}"), 1, "{c:?}");
    let listed = cli(&p, &["webhook", "list"]).await;
    assert!(listed.out.contains(&subs[0].id) && listed.out.contains(HOOK_URL), "{}", listed.out);
}

#[tokio::test]
async fn brex_sim_webhook_endpoints_follow_the_docs() {
    let p = world("cli-sim-webhooks").await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/webhooks", p.brex.base_url());
    let token = p.brex.user_token().unwrap();
    let body = serde_json::json!({"url": HOOK_URL, "event_types": ["ACCOUNTING_RECORD_READY_FOR_EXPORT"]});
    let post = |key: Option<&str>, body: serde_json::Value| {
        let mut req = http.post(&url).bearer_auth(&token).json(&body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        req.send()
    };
    assert_eq!(post(None, body.clone()).await.unwrap().status(), 400, "Idempotency-Key is required");
    let a: serde_json::Value = post(Some("k1"), body.clone()).await.unwrap().json().await.unwrap();
    let b: serde_json::Value = post(Some("k1"), body.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(a, b, "same key, same body: the same subscription");
    let other = serde_json::json!({"url": HOOK_URL, "event_types": ["USER_UPDATED"]});
    assert_eq!(post(Some("k1"), other).await.unwrap().status(), 422);
    let http_url = serde_json::json!({"url": "http://x.example.com", "event_types": ["USER_UPDATED"]});
    assert_eq!(post(Some("k2"), http_url).await.unwrap().status(), 400, "HTTPS only");
    let unknown = serde_json::json!({"url": HOOK_URL, "event_types": ["NOPE"]});
    assert_eq!(post(Some("k3"), unknown).await.unwrap().status(), 400);
    for i in 0..3 {
        let b = serde_json::json!({"url": format!("https://h{i}.example.com"), "event_types": ["USER_UPDATED"]});
        assert_eq!(post(Some(&format!("p{i}")), b).await.unwrap().status(), 200);
    }
    // Cursor paging over 4 subscriptions, 3 per page.
    let page1: serde_json::Value =
        http.get(format!("{url}?limit=3")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2: serde_json::Value = http
        .get(format!("{url}?limit=3&cursor={cursor}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert!(page2["next_cursor"].is_null());
    let id = a["id"].as_str().unwrap();
    let one = http.get(format!("{url}/{id}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(one.status(), 200);
    let partial = http.put(format!("{url}/{id}")).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(partial.status(), 400, "PUT needs url, event_types and status");
    assert_eq!(http.delete(format!("{url}/{id}")).bearer_auth(&token).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{url}/{id}")).bearer_auth(&token).send().await.unwrap().status(), 404);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401, "authenticated like every API route");
}

#[tokio::test]
async fn doctor_passes_then_finds_an_unmappable_record_and_a_broken_ifs_secret() {
    let p = world("cli-doctor").await;
    insert(&p, clean_records(3, 6));
    let mut vars = env_of(&p);
    vars.insert("WEBHOOK_URL".into(), HOOK_URL.into());
    // Not registered yet: the subscription check fails and says how to fix it.
    let before = cli_with(&p, vars.clone(), &["doctor"]).await;
    assert_eq!(before.code, 1);
    assert!(
        before.out.contains("✗ webhook subscription") && before.out.contains("connector webhook register"),
        "{}",
        before.out
    );

    assert_eq!(cli(&p, &["webhook", "register", HOOK_URL]).await.code, 0);
    let healthy = cli_with(&p, vars.clone(), &["doctor"]).await;
    assert_eq!(healthy.code, 0, "{}", healthy.out);
    for check in [
        "✓ configuration",
        "✓ DynamoDB table",
        "✓ SQS work queue",
        "✓ dead-letter queue",
        "✓ Brex credentials",
        "✓ Brex token",
        "✓ webhook signing secrets",
        "✓ webhook subscription",
        "✓ mapping document",
        "✓ IFS credentials",
        "✓ IFS token",
        "✓ IFS /int/ projections",
        "✓ mapping vs IFS reference data",
        "✓ mapping vs recent records",
    ] {
        assert!(healthy.out.contains(check), "{check} missing:\n{}", healthy.out);
    }
    assert!(healthy.out.contains("with ETag"), "{}", healthy.out);
    assert!(healthy.out.contains("the last 6 READY_FOR_EXPORT record(s)"), "{}", healthy.out);

    // A bookkeeper exports a record nobody coded.
    let (records, broken, _) = records_with_one_unmappable(5, 2);
    insert(&p, records);
    let report = cli_with(&p, vars.clone(), &["doctor", "--json"]).await;
    assert_eq!(report.code, 1);
    let json = report.json();
    let checks = json["checks"].as_array().unwrap();
    let by_name = |name: &str| checks.iter().find(|c| c["name"] == name).cloned().unwrap_or_default();
    let mapping = by_name("mapping vs recent records");
    assert_eq!(mapping["status"], "fail");
    let findings = mapping["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    let finding = findings[0].as_str().unwrap();
    assert!(finding.starts_with(&broken) && finding.contains("no GL account"), "{finding}");
    assert_eq!(by_name("IFS token")["status"], "pass");

    // Someone pastes the wrong IFS client secret.
    p.stack_put_secret(&p.stack.ifs_secret_id, r#"{"client_id":"brex-connector","client_secret":"wrong"}"#).await;
    let broken_ifs = cli_with(&p, vars.clone(), &["doctor"]).await;
    assert_eq!(broken_ifs.code, 1);
    assert!(broken_ifs.out.contains("✓ IFS credentials"), "the secret itself is readable:\n{}", broken_ifs.out);
    assert!(broken_ifs.out.contains("✗ IFS token"), "{}", broken_ifs.out);
    assert!(broken_ifs.out.contains(&format!("into secret {}", p.stack.ifs_secret_id)), "names the secret to fix");
    assert!(!broken_ifs.out.contains("wrong") && !broken_ifs.out.contains("sim-secret"), "never prints secrets");
    // Not JSON at all.
    p.stack_put_secret(&p.stack.ifs_secret_id, "not json").await;
    let shapeless = cli_with(&p, vars, &["doctor"]).await;
    assert!(shapeless.out.contains("✗ IFS credentials"), "{}", shapeless.out);
    assert!(shapeless.out.contains(&p.stack.ifs_secret_id), "{}", shapeless.out);
}

#[tokio::test]
async fn doctor_says_which_voucher_flow_each_tenant_gets_and_which_name_is_wrong() {
    let p = world("cli-doctor-flow").await;
    let line = |out: &str, check: &str| -> String {
        out.lines().find(|l| l.contains(check)).unwrap_or_else(|| panic!("{check} missing:\n{out}")).to_owned()
    };
    let full = cli(&p, &["doctor", "--probe-writes"]).await;
    assert!(line(&full.out, "IFS projection names").starts_with("✓"), "{}", full.out);
    assert!(line(&full.out, "IFS $batch").starts_with("✓"), "{}", full.out);
    assert!(line(&full.out, "IFS ETag references").contains("If-Match: $1 resolved"), "{}", full.out);
    let flow = line(&full.out, "IFS voucher flow");
    assert!(flow.starts_with("✓") && flow.contains("batch = auto; flow: $batch"), "{flow}");
    assert!(flow.contains("If-Match: $1 resolves"), "{flow}");
    assert_eq!(p.ifs.voucher_count(), 0, "the write probe commits nothing");
    assert_eq!(p.ifs.pending_virtual_count(), 0, "… and leaves no virtual voucher");
    assert_eq!(p.ifs.counters().count_label("CreateVoucher.POST"), 0);

    // Without --probe-writes nothing is written: the reference probe is skipped and says how to run it.
    let before = p.ifs.counters().mutations_with_if_match + p.ifs.counters().mutations_without_if_match;
    let reads_only = cli(&p, &["doctor"]).await;
    assert!(line(&reads_only.out, "IFS ETag references").contains("--probe-writes"), "{}", reads_only.out);
    let after = p.ifs.counters().mutations_with_if_match + p.ifs.counters().mutations_without_if_match;
    assert_eq!(before, after, "doctor without --probe-writes sends no mutation");

    p.ifs.set_batch_support(sims::ifs::BatchSupport::NoEtagReferences);
    let no_refs = cli(&p, &["doctor", "--probe-writes"]).await;
    let flow = line(&no_refs.out, "IFS voucher flow");
    assert!(flow.starts_with("✓") && flow.contains("flow: step by step"), "{flow}");
    assert!(flow.contains("does not resolve If-Match: $1 (412"), "{flow}");
    assert_eq!(p.ifs.pending_virtual_count(), 0, "the refused change set rolled back");

    p.ifs.set_batch_support(sims::ifs::BatchSupport::Absent);
    let absent = cli(&p, &["doctor"]).await;
    let flow = line(&absent.out, "IFS voucher flow");
    assert!(flow.contains("flow: step by step — $batch answered 404 ODP_RESOURCE_NOTFOUND"), "{flow}");
    assert!(line(&absent.out, "IFS $batch").contains("not served here (404"), "{}", absent.out);

    // A mapping whose [ifs.api] names a set this tenant does not serve.
    let wrong =
        EXAMPLE_MAPPING.replacen("[passthrough]", "[ifs.api]\nvoucher_rows_set = \"VoucherRows\"\n\n[passthrough]", 1);
    let file = std::env::temp_dir().join(format!("doctor-flow-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, wrong).unwrap();
    assert_eq!(cli(&p, &["mapping", "push", file.to_str().unwrap()]).await.code, 0);
    let named = cli(&p, &["doctor"]).await;
    assert_eq!(named.code, 1);
    assert!(line(&named.out, "IFS projection names").starts_with("✗ IFS projection names"), "{}", named.out);
    assert!(named.out.contains("voucher rows (VoucherRowsAnalysis.svc/VoucherRows)"), "{}", named.out);
    assert!(
        named.out.contains("set [ifs.api] voucher_rows_projection (and voucher_rows_set) to your release's names"),
        "{}",
        named.out
    );
}

trait PutSecret {
    async fn stack_put_secret(&self, id: &str, value: &str);
}

impl PutSecret for Pipeline {
    async fn stack_put_secret(&self, id: &str, value: &str) {
        aws_sdk_secretsmanager::Client::new(&self.stack.sdk)
            .put_secret_value()
            .secret_id(id)
            .secret_string(value)
            .send()
            .await
            .expect("put secret");
    }
}

#[tokio::test]
async fn mapping_validate_push_and_show() {
    let p = world("cli-mapping").await;
    let dir = std::env::temp_dir().join(format!("cli-mapping-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("mapping.toml");
    std::fs::write(&good, EXAMPLE_MAPPING).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, EXAMPLE_MAPPING.replace("code_b = \"200\"", "code_k = \"200\"")).unwrap();

    let ok = cli(&p, &["mapping", "validate", good.to_str().unwrap()]).await;
    assert_eq!(ok.code, 0);
    assert!(ok.out.starts_with("✓ ") && ok.out.contains("valid mapping document"), "{}", ok.out);
    assert!(ok.out.contains("checked against IFS reference data"), "{}", ok.out);
    let invalid = cli(&p, &["mapping", "validate", bad.to_str().unwrap(), "--json"]).await;
    assert_eq!(invalid.code, 1);
    let problems = invalid.json()["problems"].to_string();
    assert!(problems.contains("code_k"), "{problems}");

    // The pipeline stored the example as version 1: the same text is not a new version.
    let same = cli(&p, &["mapping", "push", good.to_str().unwrap()]).await;
    assert_eq!(same.code, 0);
    assert!(same.out.contains("unchanged") && same.out.contains("version 1"), "{}", same.out);
    let refused = cli(&p, &["mapping", "push", bad.to_str().unwrap()]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.out.contains("not pushed"), "{}", refused.out);
    std::fs::write(&good, format!("{EXAMPLE_MAPPING}\n# reviewed\n")).unwrap();
    let pushed = cli(&p, &["mapping", "push", good.to_str().unwrap()]).await;
    assert_eq!(pushed.code, 0);
    assert!(pushed.out.contains("pushed mapping version 2 (was 1)"), "{}", pushed.out);
    let shown = cli(&p, &["mapping", "show"]).await;
    assert!(shown.out.starts_with("# mapping version 2") && shown.out.contains("# reviewed"), "{}", shown.out);
    let json = cli(&p, &["mapping", "show", "--json"]).await.json();
    assert_eq!(json["version"], 2);
    assert!(json["document"].as_str().unwrap().ends_with("# reviewed\n"));
    // Well-formed, but names an account IFS does not have: refused unless forced.
    let unknown = dir.join("unknown-account.toml");
    std::fs::write(&unknown, EXAMPLE_MAPPING.replace("set = { account = \"6510\" }", "set = { account = \"6999\" }"))
        .unwrap();
    let checked = cli(&p, &["mapping", "validate", unknown.to_str().unwrap()]).await;
    assert_eq!(checked.code, 1);
    assert!(checked.out.starts_with("✗ ") && checked.out.contains("6999"), "{}", checked.out);
    let refused = cli(&p, &["mapping", "push", unknown.to_str().unwrap()]).await;
    assert_eq!(refused.code, 1);
    assert_eq!(cli(&p, &["mapping", "show", "--json"]).await.json()["version"], 2);
    let forced = cli(&p, &["mapping", "push", unknown.to_str().unwrap(), "--force"]).await;
    assert!(forced.out.contains("pushed mapping version 3 (was 2)"), "{}", forced.out);
    // Without IFS settings only the document itself is checked, and the output says so.
    let mut vars = env_of(&p);
    vars.remove("IFS_URL");
    let unchecked = cli_with(&p, vars, &["mapping", "validate", unknown.to_str().unwrap()]).await;
    assert_eq!(unchecked.code, 0);
    assert!(unchecked.out.contains("IFS reference data not checked"), "{}", unchecked.out);

    let missing = cli(&p, &["mapping", "validate", "/nonexistent/mapping.toml"]).await;
    assert_eq!(missing.code, 1);
    assert!(missing.err.contains("reading /nonexistent/mapping.toml"), "{}", missing.err);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn dry_run_shows_proposals_and_failures_and_posts_nothing() {
    let p = world("cli-dry-run").await;
    let (records, broken, _) = records_with_one_unmappable(11, 5);
    let ids = insert(&p, records);
    let table = cli(&p, &["dry-run", "--since", "400d"]).await;
    assert_eq!(table.code, 0, "{}", table.err);
    for id in ids.iter().filter(|i| **i != broken) {
        assert!(table.out.contains(id.as_str()), "{id} missing:\n{}", table.out);
    }
    assert!(table.out.contains(&format!("  {broken}: ")), "{}", table.out);
    assert!(table.out.contains("4 proposals, 1 would fail, 0 skipped — nothing posted"), "{}", table.out);
    assert!(table.out.contains("validated against IFS"), "{}", table.out);

    let csv = cli(&p, &["dry-run", "--ids", &ids.join(","), "--csv"]).await;
    let lines: Vec<&str> = csv.out.lines().collect();
    assert!(lines[0].starts_with("record,status,company,voucher_type,voucher_date,row,account"), "{}", lines[0]);
    assert!(lines.iter().any(|l| l.starts_with(&format!("{broken},would_fail,"))), "{}", csv.out);
    assert!(lines.iter().filter(|l| l.contains(",proposal,")).count() >= 8, "two rows or more per voucher");

    let json = cli(&p, &["dry-run", "--ids", &ids.join(","), "--json"]).await.json();
    let proposals = json["proposals"].as_array().unwrap();
    assert_eq!(proposals.len(), 4);
    assert_eq!(json["failures"][0]["record"], broken.as_str());
    assert_eq!(json["validated_against_ifs"], true);

    assert_eq!(p.ifs.voucher_count(), 0, "nothing posted");
    assert!(ids.iter().all(|id| p.brex.export_result(id).is_none()), "nothing reported to Brex");
    assert_eq!(p.stack.queue_depth(&p.stack.queue_url).await, 0, "nothing enqueued");
}

#[tokio::test]
async fn backfill_enqueues_each_record_once_and_a_rerun_enqueues_nothing_new() {
    let p = world("cli-backfill").await;
    // More than one Brex page (100) per run.
    let ids = insert(&p, clean_records(21, 130));
    let mut older = clean_records(22, 1);
    older[0].updated_at = chrono::Utc::now() - chrono::Duration::days(200);
    insert(&p, older);

    let first = cli(&p, &["backfill", "--since", "90d"]).await;
    assert_eq!(first.code, 0, "{}", first.err);
    assert!(first.err.contains("backfill: card page"), "progress on stderr: {}", first.err);
    assert!(
        first.out.contains(
            "130 READY_FOR_EXPORT records, 130 enqueued, 0 already posted/failed/in progress, 0 already queued"
        ),
        "{}",
        first.out
    );
    let bodies = p.stack.drain(&p.stack.queue_url).await;
    let mut queued: Vec<String> = Vec::new();
    for body in &bodies {
        match serde_json::from_str::<WorkItem>(body).unwrap() {
            WorkItem::AccountingRecords { ids, origin, .. } => {
                assert_eq!(origin, Origin::Backfill);
                queued.extend(ids.iter().map(ToString::to_string));
            }
            other => panic!("{other:?}"),
        }
    }
    queued.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(queued, expected, "each record exactly once, the 200-day-old one not at all");

    let rerun = cli(&p, &["backfill", "--since", "90d", "--json"]).await;
    let json = rerun.json();
    assert_eq!((json["ready"].as_u64(), json["enqueued"].as_u64()), (Some(130), Some(0)), "{json}");
    assert_eq!(json["already_queued"], 130);
    assert_eq!(p.stack.queue_depth(&p.stack.queue_url).await, 0);

    // Posted meanwhile (they become EXPORTED): a later re-run finds nothing to do either.
    p.enqueue(&ids, &Origin::Backfill).await.unwrap();
    p.drain(Duration::from_secs(120)).await.unwrap();
    assert_eq!(p.ifs.voucher_count(), 130);
    let after = cli(&p, &["backfill", "--since", "90d", "--json"]).await.json();
    assert_eq!(after["enqueued"], 0, "{after}");
    // A range that ends before the old record excludes it; one that includes it enqueues just it.
    let until = (chrono::Utc::now() - chrono::Duration::days(100)).to_rfc3339();
    let old = cli(&p, &["backfill", "--since", "400d", "--until", &until, "--json"]).await.json();
    assert_eq!((old["ready"].as_u64(), old["enqueued"].as_u64()), (Some(1), Some(1)), "{old}");
}

#[tokio::test]
async fn failures_lists_table_and_dlq_and_replay_posts_them_once_fixed() {
    let p = world("cli-failures").await;
    let (records, broken, original) = records_with_one_unmappable(31, 3);
    let ids = insert(&p, records);
    let webhook = Origin::Webhook { webhook_id: WebhookId::parse("msg_cli_1").unwrap() };
    let posted_first: Vec<String> = ids.iter().filter(|i| **i != broken).take(1).cloned().collect();
    let mut first_batch = posted_first.clone();
    first_batch.push(broken.clone());
    p.enqueue(&first_batch, &webhook).await.unwrap();
    p.drain(Duration::from_secs(30)).await.unwrap();
    // A record whose message was dead-lettered (SQS gave up on it after 5 receives).
    let dead: Vec<String> = ids.iter().filter(|i| **i != broken && !posted_first.contains(i)).cloned().collect();
    let dead_ids: Vec<_> = dead.iter().map(|i| shared::domain::AccountingRecordId::parse(i).unwrap()).collect();
    let body =
        serde_json::to_string(&WorkItem::accounting_records(&dead_ids, &Origin::Poll, chrono::Utc::now())[0]).unwrap();
    aws_sdk_sqs::Client::new(&p.stack.sdk)
        .send_message()
        .queue_url(&p.stack.dlq_url)
        .message_body(body)
        .send()
        .await
        .unwrap();

    let listed = cli(&p, &["failures"]).await;
    assert_eq!(listed.code, 1, "failures exist");
    assert!(listed.out.contains("failed records (table): 1"), "{}", listed.out);
    assert!(listed.out.contains(&broken) && listed.out.contains("no GL account"), "{}", listed.out);
    assert!(listed.out.contains("dead-lettered messages (DLQ): 1"), "{}", listed.out);
    assert!(listed.out.contains(&dead[0]) && listed.out.contains("poll"), "{}", listed.out);
    let json = cli(&p, &["failures", "--json"]).await.json();
    assert_eq!(json["table"][0]["subject"]["id"], broken.as_str());
    assert_eq!(json["dlq"].as_array().unwrap().len(), 1);
    assert_eq!(p.stack.queue_depth(&p.stack.dlq_url).await, 1, "peeking consumed nothing");

    // Replaying before the fix only fails again (and says so in `failures`); fix the coding in Brex first.
    p.brex.update_record(&broken, |r| {
        r.line_items = original.line_items.clone();
        r.review_status = ReviewStatus::ReadyForExport;
    });
    let replay = cli(&p, &["replay", "--all"]).await;
    assert_eq!(replay.code, 0, "{}", replay.err);
    assert!(replay.out.contains("re-enqueued 1 record(s)") && replay.out.contains(&broken), "{}", replay.out);
    assert!(replay.out.contains("DLQ: 1 message(s) moved back to the work queue via"), "{}", replay.out);
    // StartMessageMoveTask runs asynchronously on AWS; wait for the DLQ to empty either way.
    for _ in 0..50 {
        if p.stack.queue_depth(&p.stack.dlq_url).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(p.stack.queue_depth(&p.stack.dlq_url).await, 0);
    p.drain(Duration::from_secs(30)).await.unwrap();
    let by_ref = p.vouchers_by_reference();
    for id in &ids {
        assert_eq!(by_ref.get(id).map(Vec::len), Some(1), "{id} posted exactly once");
    }
    let after = cli(&p, &["failures"]).await;
    assert_eq!(after.code, 0);
    assert!(after.out.contains("failed records (table): 0") && after.out.contains("(DLQ): 0"), "{}", after.out);

    // Replaying a posted record does nothing.
    let noop = cli(&p, &["replay", &posted_first[0]]).await;
    assert!(noop.out.contains("re-enqueued 0 record(s)") && noop.out.contains("already posted"), "{}", noop.out);
}

const NO_VOUCHER_SET: &str = "IFS has no VoucherEntryAssistantHandling.svc/VoucherSet (404 ODP_RESOURCE_NOTFOUND)";
const DEPLOY_PROJECTION: &str = "deploy the VoucherEntryAssistantHandling projection to this IFS environment and \
grant the connector's IFS user its permission set, then `connector replay --all`";
const IFS_AUTH: &str = "IFS refused the connector's token (401 invalid_client)";
const FIX_SECRET: &str = "put the IFS client secret into the IFS secret, check with `connector doctor`";

/// Writes a HELD idempotency item the way the poster does (`pk = Subject::key()`, `sk = "idem"`), straight
/// through the SDK, so the CLI is tested against the layout rather than against the poster's code.
async fn put_held(p: &Pipeline, key: &str, reason: &str, fix: &str, since: &str, times: u32) {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let expires_at = (chrono::Utc::now() + chrono::Duration::days(30)).timestamp();
    aws_sdk_dynamodb::Client::new(&p.stack.sdk)
        .put_item()
        .table_name(&p.stack.table_name)
        .item("pk", S(key.into()))
        .item("sk", S("idem".into()))
        .item("status", S("HELD".into()))
        .item("reason", S(reason.into()))
        .item("fix", S(fix.into()))
        .item("held_since", S(since.into()))
        .item("held_times", N(times.to_string()))
        .item("updated_at", S(chrono::Utc::now().to_rfc3339()))
        .item("expires_at", N(expires_at.to_string()))
        .send()
        .await
        .expect("put held item");
}

/// The `status` and `held_times` of an idempotency item.
async fn idem_of(p: &Pipeline, key: &str) -> (Option<String>, Option<String>) {
    let item = p.stack.idempotency_item(key).await;
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().or_else(|_| v.as_n()).ok()).cloned();
    (text("status"), text("held_times"))
}

/// Drains the work queue: the ids of every work item on it, each with the item's origin.
async fn queued_ids(p: &Pipeline) -> Vec<(String, Origin)> {
    let mut ids = Vec::new();
    for body in p.stack.drain(&p.stack.queue_url).await {
        match serde_json::from_str::<WorkItem>(&body).unwrap() {
            WorkItem::AccountingRecords { ids: batch, origin, .. } => {
                ids.extend(batch.iter().map(|i| (i.to_string(), origin.clone())))
            }
            WorkItem::Expenses { ids: batch, origin, .. } => {
                ids.extend(batch.iter().map(|i| (i.to_string(), origin.clone())))
            }
        }
    }
    ids.sort_by(|a, b| a.0.cmp(&b.0));
    ids
}

#[tokio::test]
async fn held_records_are_listed_by_cause_and_replayed_without_losing_the_hold() {
    let p = world("cli-held").await;
    // Three held by a missing IFS projection (one of them an expense), one by IFS auth.
    put_held(&p, "record#accr_held_b", NO_VOUCHER_SET, DEPLOY_PROJECTION, "2026-06-02T08:00:00+00:00", 4).await;
    put_held(&p, "record#accr_held_a", NO_VOUCHER_SET, DEPLOY_PROJECTION, "2026-06-01T08:00:00+00:00", 7).await;
    put_held(&p, "expense#expense_held_c", NO_VOUCHER_SET, DEPLOY_PROJECTION, "2026-06-03T08:00:00+00:00", 1).await;
    put_held(&p, "record#accr_held_d", IFS_AUTH, FIX_SECRET, "2026-06-02T09:00:00+00:00", 2).await;

    let listed = cli(&p, &["failures"]).await;
    assert_eq!(listed.code, 1, "held records are something to fix: {}", listed.err);
    let out = &listed.out;
    assert!(out.contains("failed records (table): 0"), "{out}");
    assert!(
        out.contains("held records (table): 4 — the deployment or tenant is at fault; fix, then `connector replay`"),
        "{out}"
    );
    // Each cause once, with its fix, its count and its records (longest held first).
    assert_eq!(out.matches(NO_VOUCHER_SET).count(), 1, "{out}");
    assert_eq!(out.matches(DEPLOY_PROJECTION).count(), 1, "{out}");
    assert!(out.contains(&format!("  3 record(s): {NO_VOUCHER_SET}\n    fix: {DEPLOY_PROJECTION}\n")), "{out}");
    assert!(out.contains(&format!("  1 record(s): {IFS_AUTH}\n    fix: {FIX_SECRET}\n")), "{out}");
    let at = |needle: &str| out.find(needle).unwrap_or_else(|| panic!("{needle} missing:\n{out}"));
    assert!(at(NO_VOUCHER_SET) < at("accr_held_a"), "records follow their cause");
    assert!(at("accr_held_a") < at("accr_held_b") && at("accr_held_b") < at("expense_held_c"), "oldest first");
    assert!(at("expense_held_c") < at(IFS_AUTH) && at(IFS_AUTH) < at("accr_held_d"), "{out}");
    let row_a = out.lines().find(|l| l.contains("accr_held_a")).unwrap();
    assert!(row_a.contains("2026-06-01T08:00:00+00:00") && row_a.contains("  7  "), "since and times: {row_a}");
    assert!(!out.contains("fix the mapping"), "no record is at fault: {out}");

    let json = cli(&p, &["failures", "--json"]).await.json();
    let held = json["held"].as_array().unwrap();
    let order: Vec<_> = held.iter().map(|h| h["subject"]["id"].as_str().unwrap()).collect();
    assert_eq!(order, ["accr_held_a", "accr_held_b", "accr_held_d", "expense_held_c"], "longest held first");
    assert_eq!(held[0]["key"], "record#accr_held_a");
    assert_eq!(held[0]["held_since"], "2026-06-01T08:00:00+00:00");
    assert_eq!(held[0]["held_times"], 7);
    assert_eq!((held[0]["reason"].as_str(), held[0]["fix"].as_str()), (Some(NO_VOUCHER_SET), Some(DEPLOY_PROJECTION)));
    assert_eq!(held[3]["subject"]["kind"], "expense");
    assert!(held[2]["updated_at"].is_string());
    let causes = json["held_causes"].as_array().unwrap();
    assert_eq!(causes.len(), 2, "{causes:?}");
    assert_eq!((causes[0]["fix"].as_str(), causes[0]["count"].as_u64()), (Some(DEPLOY_PROJECTION), Some(3)));
    assert_eq!(causes[0]["records"], serde_json::json!(["accr_held_a", "accr_held_b", "expense_held_c"]));
    assert_eq!((causes[1]["reason"].as_str(), causes[1]["records"][0].as_str()), (Some(IFS_AUTH), Some("accr_held_d")));
    assert_eq!(json["table"].as_array().map(Vec::len), Some(0));

    // The secret is fixed: replay that one record. It is enqueued, and its hold stays for the poster to take.
    let one = cli(&p, &["replay", "accr_held_d"]).await;
    assert_eq!(one.code, 0, "{}", one.err);
    assert!(one.out.contains("re-enqueued 1 record(s) with origin replay (0 failed, 1 held)"), "{}", one.out);
    assert_eq!(queued_ids(&p).await, vec![("accr_held_d".to_owned(), Origin::Replay)]);
    assert_eq!(idem_of(&p, "record#accr_held_d").await, (Some("HELD".into()), Some("2".into())));

    // The projection is deployed: replay everything.
    let all = cli(&p, &["replay", "--all"]).await;
    assert_eq!(all.code, 0, "{}", all.err);
    assert!(all.out.contains("re-enqueued 4 record(s) with origin replay (0 failed, 4 held)"), "{}", all.out);
    assert!(all.out.contains("DLQ: empty"), "{}", all.out);
    let queued = queued_ids(&p).await;
    let expected: Vec<_> = ["accr_held_a", "accr_held_b", "accr_held_d", "expense_held_c"]
        .into_iter()
        .map(|id| (id.to_owned(), Origin::Replay))
        .collect();
    assert_eq!(queued, expected, "one work item entry per held subject");
    for key in ["record#accr_held_a", "record#accr_held_b", "record#accr_held_d", "expense#expense_held_c"] {
        assert_eq!(idem_of(&p, key).await.0.as_deref(), Some("HELD"), "{key} keeps its hold");
    }
    let json = cli(&p, &["replay", "--all", "--json"]).await.json();
    assert_eq!(json["held"].as_array().map(Vec::len), Some(4), "{json}");
    assert_eq!(json["failed"].as_array().map(Vec::len), Some(0), "{json}");
    p.stack.drain(&p.stack.queue_url).await;
    // Until the poster posts them they are still listed.
    assert!(cli(&p, &["failures"]).await.out.contains("held records (table): 4"));
}

#[tokio::test]
async fn trace_shows_the_audit_trail_of_a_record() {
    // Needs the poster to write the audit trail (shared::audit, one entry per attempt).
    let p = world("cli-trace").await;
    let (records, broken, original) = records_with_one_unmappable(41, 2);
    let ids = insert(&p, records);
    let good = ids.iter().find(|i| **i != broken).unwrap().clone();
    let webhook = Origin::Webhook { webhook_id: WebhookId::parse("msg_trace_1").unwrap() };
    p.enqueue(&ids, &webhook).await.unwrap();
    p.drain(Duration::from_secs(30)).await.unwrap();

    let posted = cli(&p, &["trace", &good]).await;
    assert_eq!(posted.code, 0, "{}", posted.err);
    let voucher = p.vouchers_by_reference()[&good][0].clone();
    assert!(posted.out.contains("state      COMPLETED voucher "), "{}", posted.out);
    assert!(posted.out.contains("Brex       EXPORTED"), "{}", posted.out);
    assert!(posted.out.contains("webhook msg_trace_1") && posted.out.contains("posted"), "{}", posted.out);
    assert!(posted.out.contains(" v1 "), "mapping version: {}", posted.out);
    let _ = voucher;

    // Failed, fixed, replayed: two attempts, the second posted via replay.
    p.brex.update_record(&broken, |r| r.line_items = original.line_items.clone());
    assert_eq!(cli(&p, &["replay", &broken]).await.code, 0);
    p.drain(Duration::from_secs(30)).await.unwrap();
    let json = cli(&p, &["trace", &broken, "--json"]).await.json();
    let attempts = json["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{json}");
    assert_eq!(attempts[0]["outcome"], "failed");
    assert!(attempts[0]["reason"].as_str().unwrap().contains("no GL account"));
    assert_eq!(attempts[1]["outcome"], "posted");
    assert_eq!(attempts[1]["origin"]["via"], "replay");
    assert_eq!(json["state"]["status"], "COMPLETED");
    assert_eq!(json["brex"]["review_status"], "EXPORTED");

    let unknown = cli(&p, &["trace", "accr_doesnotexist"]).await;
    assert_eq!(unknown.code, 1);
    assert!(unknown.out.contains("not seen by the poster"), "{}", unknown.out);
}

#[tokio::test]
async fn usage_and_configuration_errors_exit_2() {
    let p = world("cli-usage").await;
    assert_eq!(cli(&p, &["replay"]).await.code, 2);
    assert_eq!(cli(&p, &["backfill", "--since", "someday"]).await.code, 2);
    let help = cli(&p, &["--help"]).await;
    assert_eq!(help.code, 0);
    for command in ["doctor", "mapping", "dry-run", "backfill", "failures", "replay", "trace", "webhook"] {
        assert!(help.out.contains(command), "{command} missing from help");
    }
    let mut vars = env_of(&p);
    vars.remove("TABLE_NAME");
    let missing = cli_with(&p, vars.clone(), &["failures"]).await;
    assert_eq!(missing.code, 2);
    assert!(missing.err.contains("TABLE_NAME"), "{}", missing.err);
    // A flag stands in for the variable.
    let table = p.stack.table_name.clone();
    assert_eq!(cli_with(&p, vars, &["failures", "--table", &table]).await.code, 0);
}
