//! `connector status` against the local stack (moto through the real SDK, the Brex and IFS simulators, the
//! real poller and poster): a known state is built the way production builds it — records polled and posted,
//! one unmappable, two held by a wrong `[ifs.api]` name until their message is dead-lettered, a tenant that
//! refuses `$batch` — plus a few items written straight into the table (older than the window, a claim),
//! and the screen is asserted line by line, as JSON, and with `--since` narrowing and widening the window.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue::{N, S};
use chrono::{DateTime, SecondsFormat, Utc};
use shared::aws::{CachedMapping, DynamoStore};
use shared::domain::{Origin, WebhookId};
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::model::AccountingRecord;
use sims::ifs::BatchSupport;
use sims::operator::cli;
use sims::pipeline::{EXAMPLE_MAPPING, Pipeline, PipelineOptions};

/// A pipeline whose poster sees a pushed mapping at once and retries a held message quickly, as
/// tests/tests/tenant_faults.rs builds it.
async fn world(name: &str) -> Pipeline {
    let mut p =
        Pipeline::start(PipelineOptions { name: name.into(), ..PipelineOptions::default() }).await.expect("pipeline");
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&p.stack.sdk), &p.stack.table_name);
    p.poster.mapping = Arc::new(CachedMapping::new(store, Duration::ZERO));
    p.poster.options.hold_backoff = Duration::from_millis(10);
    p.poster.options.hold_backoff_cap = Duration::from_millis(10);
    p
}

/// Card records, all last updated at `at`.
fn card_records(seed: u64, n: usize, at: DateTime<Utc>) -> Vec<AccountingRecord> {
    let options = GeneratorOptions {
        count: n,
        missing_gl_rate: 0.0,
        reimbursement_rate: 0.0,
        start: at,
        end: at,
        ..GeneratorOptions::default()
    };
    RecordGenerator::with_options(seed, options).batch()
}

/// Strips the GL coding from one purchase: no rule can give it an account. Returns its id.
fn break_one(records: &mut [AccountingRecord]) -> String {
    let broken = records.iter_mut().find(|r| !r.record_type.ends_with("_REFUND")).expect("a purchase");
    for line in &mut broken.line_items {
        line.accounting_field_values.retain(|f| f.field_name.as_deref() != Some("GL Account"));
    }
    broken.id.clone()
}

async fn push_mapping(p: &Pipeline, text: &str) {
    let file = std::env::temp_dir().join(format!("cli-status-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, text).unwrap();
    assert_eq!(cli(p, &["mapping", "push", file.to_str().unwrap(), "--force"]).await.code, 0);
    let _ = std::fs::remove_file(file);
}

/// Writes an idempotency item the way the poster does (`pk = record#<id>`, `sk = "idem"`), straight through
/// the SDK, so the CLI is read against the table layout rather than the poster's code.
async fn put_idem(p: &Pipeline, key: &str, status: &str, attrs: &[(&str, &str)], updated_at: DateTime<Utc>) {
    let expires_at = (Utc::now() + chrono::Duration::days(30)).timestamp();
    let mut put = aws_sdk_dynamodb::Client::new(&p.stack.sdk)
        .put_item()
        .table_name(&p.stack.table_name)
        .item("pk", S(key.into()))
        .item("sk", S("idem".into()))
        .item("status", S(status.into()))
        .item("updated_at", S(updated_at.to_rfc3339()))
        .item("expires_at", N(expires_at.to_string()));
    for (name, value) in attrs {
        put = put.item(
            *name,
            if name.ends_with("_until") || *name == "held_times" { N((*value).into()) } else { S((*value).into()) },
        );
    }
    put.send().await.expect("put idempotency item");
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

const IFS_AUTH: &str = "IFS refused the connector's token (401 invalid_client)";
const FIX_SECRET: &str = "put the IFS client secret into the IFS secret, check with `connector doctor`";

#[tokio::test]
async fn status_on_a_fresh_stack_is_quiet_and_a_bad_since_is_usage() {
    let p = world("cli-status-fresh").await;
    let run = cli(&p, &["status"]).await;
    assert_eq!(run.code, 0, "nothing failed or held");
    assert!(run.out.starts_with("status at ") && run.out.contains(", window 24h (since "), "{}", run.out);
    assert_eq!(run.line("posted "), "posted          0");
    assert_eq!(run.line("failed "), "failed          0");
    assert_eq!(run.line("held            "), "held            0");
    assert_eq!(run.line("in flight "), "in flight       0 claimed");
    assert_eq!(run.line("work queue "), "work queue      0 waiting, 0 in flight");
    assert_eq!(run.line("dead-letter "), "dead-letter     0");
    assert_eq!(run.line("oldest waiting "), "oldest waiting  none");
    assert_eq!(run.line("poller "), "poller          never ran (no poll position stored)");
    assert_eq!(
        run.line("IFS flow "),
        "IFS flow        not yet discovered: nothing posted yet ([ifs.api] batch = auto)"
    );
    assert!(!run.out.contains("top failure reasons") && !run.out.contains("held causes"), "{}", run.out);
    let json = cli(&p, &["status", "--json"]).await.json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["ifs_voucher_flow"]["flow"], "not_yet_discovered");
    assert_eq!(json["poller"], serde_json::json!([]));

    for bad in [&["status", "--since", "soon"][..], &["status", "--since", "-3d"], &["status", "extra"]] {
        assert_eq!(cli(&p, bad).await.code, 2, "{bad:?}");
    }
}

#[tokio::test]
async fn status_counts_posted_failed_held_and_claimed_and_names_reasons_causes_flow_and_lag() {
    let p = world("cli-status").await;

    // 1. Five card records last updated two hours ago, one unmappable; the poller finds them, the poster
    //    posts four and fails one.
    let seen = DateTime::from_timestamp((Utc::now() - chrono::Duration::hours(2)).timestamp(), 0).unwrap();
    let mut records = card_records(51, 5, seen);
    for r in &mut records {
        r.updated_at = seen;
    }
    let unmappable = break_one(&mut records);
    p.brex.insert_records(records.clone());
    let poller = p.poller(&[]).await.unwrap();
    let report = poller.run(Utc::now() + chrono::Duration::minutes(5)).await;
    assert!(!report.has_errors(), "{report:?}");
    assert_eq!(report.enqueued(), 5, "{report:?}");
    p.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(p.ifs.voucher_count(), 4);

    let first = cli(&p, &["status"]).await;
    assert_eq!(first.code, 1, "a record failed");
    assert_eq!(first.line("posted "), "posted          4");
    assert_eq!(first.line("failed "), "failed          1");
    assert_eq!(first.line("IFS flow "), "IFS flow        $batch (IFS has not refused it; [ifs.api] batch = auto)");

    // 2. A wrong [ifs.api] name holds the next two records (nothing is blamed on them); their message comes
    //    back until its receives run out and rests in the DLQ.
    let wrong = EXAMPLE_MAPPING.replacen(
        "[passthrough]",
        "[ifs.api]\nvoucher_entry_set = \"VoucherEntrySet\"\n\n[passthrough]",
        1,
    );
    push_mapping(&p, &wrong).await;
    let held_records = card_records(52, 2, Utc::now());
    let held_ids: Vec<String> = held_records.iter().map(|r| r.id.clone()).collect();
    p.brex.insert_records(held_records);
    p.enqueue(&held_ids, &Origin::Webhook { webhook_id: WebhookId::parse("msg_status_held").unwrap() }).await.unwrap();
    p.drain(Duration::from_secs(90)).await.unwrap();
    assert_eq!(p.stack.queue_depth(&p.stack.dlq_url).await, 1, "the held message was dead-lettered");

    // 3. The name is fixed, but this tenant serves no $batch: the next record goes step by step and the
    //    poster remembers the refusal in the table.
    push_mapping(&p, EXAMPLE_MAPPING).await;
    p.ifs.set_batch_support(BatchSupport::Absent);
    let late = card_records(53, 1, Utc::now());
    let late_id = late[0].id.clone();
    p.brex.insert_records(late);
    p.enqueue(std::slice::from_ref(&late_id), &Origin::Poll).await.unwrap();
    p.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(p.ifs.voucher_count(), 5);

    // 4. Straight into the table: a post and a failure from three days ago, a record held for three days by
    //    another cause, and a claim taken ten minutes ago whose lease still runs.
    let days_ago = Utc::now() - chrono::Duration::days(3);
    put_idem(&p, "record#accr_status_oldpost", "COMPLETED", &[("result", "1-2026-M-1")], days_ago).await;
    let old_reason = "record accr_status_oldfail line 1 (accrli_x, DEBIT 9.00 USD): no GL account — no rule matched";
    put_idem(&p, "record#accr_status_oldfail", "FAILED", &[("reason", old_reason)], days_ago).await;
    let held_at = days_ago.to_rfc3339();
    put_idem(
        &p,
        "record#accr_status_oldheld",
        "HELD",
        &[("reason", IFS_AUTH), ("fix", FIX_SECRET), ("held_since", &held_at), ("held_times", "9")],
        days_ago,
    )
    .await;
    let lease = (Utc::now() + chrono::Duration::minutes(5)).timestamp_millis().to_string();
    put_idem(
        &p,
        "record#accr_status_claimed",
        "IN_PROGRESS",
        &[("lease_until", &lease)],
        Utc::now() - chrono::Duration::minutes(10),
    )
    .await;
    // One message waiting on the work queue, not yet taken by the poster.
    p.enqueue(std::slice::from_ref(&late_id), &Origin::Replay).await.unwrap();

    let capability = aws_sdk_dynamodb::Client::new(&p.stack.sdk)
        .get_item()
        .table_name(&p.stack.table_name)
        .key("pk", S("capability".into()))
        .key("sk", S("ifs_voucher_flow".into()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the poster remembered the flow");
    let refusal = capability.get("reason").and_then(|v| v.as_s().ok()).cloned().expect("a stored refusal");
    let until: i64 = capability.get("until").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap();
    let until = DateTime::from_timestamp(until, 0).unwrap();

    let run = cli(&p, &["status"]).await;
    assert_eq!(run.code, 1, "failed and held records");
    assert_eq!(run.line("posted "), "posted          5", "the three-day-old post is outside the window");
    assert_eq!(
        run.line("failed "),
        "failed          1  (and 1 still failed from before; `connector failures` lists them)"
    );
    assert_eq!(run.line("held            "), "held            3", "a hold is shown whatever its age");
    assert_eq!(run.line("in flight "), "in flight       1 claimed");
    assert_eq!(run.line("work queue "), "work queue      1 waiting, 0 in flight");
    assert_eq!(run.line("dead-letter "), "dead-letter     1 message(s) — `connector failures` lists them");
    assert_eq!(
        run.line("oldest waiting "),
        format!("oldest waiting  accr_status_oldheld, held 3d ago (since {})", stamp(days_ago))
    );
    let card = run.line("poller          accounting_records:CARD: read to its end ");
    assert!(card.contains(" ago (lag), newest record seen 2h ago"), "{card}");
    assert!(card.ends_with(&format!("({})", stamp(seen))), "{card}");
    assert_eq!(
        run.line("IFS flow "),
        format!(
            "IFS flow        step by step until {}, then $batch is tried again ([ifs.api] batch = auto); why: {refusal}",
            stamp(until)
        )
    );
    assert!(refusal.contains("$batch"), "{refusal}");
    // The top failure reason: the record part and the detail go, the cause stays.
    let reasons = run.out.split("top failure reasons (window 24h):\n").nth(1).expect("a reasons section");
    let mut rows = reasons.lines();
    assert_eq!(
        rows.next().map(str::split_whitespace).map(Iterator::collect::<Vec<_>>),
        Some(vec!["COUNT", "REASON", "EXAMPLE"])
    );
    let row = rows.next().unwrap();
    assert!(
        row.starts_with("  1      no GL account  ")
            && row.contains(&format!("{unmappable}: record {unmappable} line ")),
        "{row}"
    );
    // Held causes: the oldest cause first, each once with its fix.
    let causes = run.out.split_once("held causes — ").expect("a held section").1;
    assert!(causes.starts_with("the deployment or tenant is at fault; fix, then `connector replay`:\n"), "{causes}");
    assert!(causes.contains(&format!("  1 record(s): {IFS_AUTH}\n    fix: {FIX_SECRET}\n  2 record(s): ")), "{causes}");
    assert!(causes.contains("VoucherEntrySet") && causes.matches("fix: ").count() == 2, "{causes}");

    // The same as one JSON object.
    let json = cli(&p, &["status", "--json"]).await.json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["window"], "24h");
    assert_eq!(
        json["records"],
        serde_json::json!({
            "posted": 5, "failed": 1, "failed_before_window": 1, "held": 3, "in_progress": 1, "in_progress_expired": 0,
        })
    );
    assert_eq!((json["queue"]["waiting"].as_u64(), json["queue"]["in_flight"].as_u64()), (Some(1), Some(0)));
    assert_eq!(json["queue"]["url"], p.stack.queue_url.as_str());
    assert_eq!(json["dlq"]["waiting"], 1);
    assert_eq!(json["oldest_waiting"]["subject"]["id"], "accr_status_oldheld");
    assert_eq!(json["oldest_waiting"]["status"], "HELD");
    assert!(json["oldest_waiting"]["age_seconds"].as_i64().unwrap() >= 3 * 86_400);
    let card =
        json["poller"].as_array().unwrap().iter().find(|f| f["feed"] == "accounting_records:CARD").cloned().unwrap();
    assert_eq!(card["watermark"].as_str().map(|w| DateTime::parse_from_rfc3339(w).unwrap()), Some(seen.into()));
    let newest = card["newest_record_age_seconds"].as_i64().unwrap();
    assert!((7200..7200 + 600).contains(&newest), "{newest}");
    assert!(card["lag_seconds"].as_i64().unwrap() < 600, "the feed was read to its end moments ago");
    assert_eq!(card["paging"], false);
    let flow = &json["ifs_voucher_flow"];
    assert_eq!((flow["flow"].as_str(), flow["configured"].as_str()), (Some("step_by_step"), Some("auto")));
    assert_eq!(flow["reason"], refusal.as_str());
    let top = json["top_failure_reasons"].as_array().unwrap();
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!((top[0]["reason"].as_str(), top[0]["count"].as_u64()), (Some("no GL account"), Some(1)));
    assert_eq!(top[0]["example"]["subject"]["id"], unmappable.as_str());
    let held = json["held_causes"].as_array().unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!((held[0]["reason"].as_str(), held[0]["count"].as_u64()), (Some(IFS_AUTH), Some(1)));
    assert_eq!(held[1]["count"], 2);
    let mut listed: Vec<String> =
        held[1]["records"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    listed.sort();
    let mut expected = held_ids.clone();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(held[1]["fix"].as_str().unwrap().contains("[ifs.api]"), "{held:?}");
    assert_eq!(json["scan"]["truncated"], false);
    // Every record item the table holds was read: 5 polled, 2 held, 1 late, 4 written.
    assert_eq!(json["scan"]["items"], 5 + 2 + 1 + 4);

    // --since: a week brings the old post and failure in (they group with the new failure by reason) …
    let week = cli(&p, &["status", "--since", "7d", "--json"]).await.json();
    assert_eq!((week["records"]["posted"].as_u64(), week["records"]["failed"].as_u64()), (Some(6), Some(2)));
    assert_eq!(week["records"]["failed_before_window"], 0);
    assert_eq!(week["top_failure_reasons"][0]["count"], 2, "{week}");
    assert_eq!(week["top_failure_reasons"][0]["reason"], "no GL account");
    // … and 90 minutes (what the poster did in this test) leaves them out again.
    let recent = cli(&p, &["status", "--since", "90m"]).await;
    assert!(recent.out.contains(", window 90m (since "), "{}", recent.out);
    assert_eq!(recent.line("posted "), "posted          5");
    assert_eq!(
        recent.line("failed "),
        "failed          1  (and 1 still failed from before; `connector failures` lists them)"
    );
}
