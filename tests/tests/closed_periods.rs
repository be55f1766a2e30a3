//! Records dated in a closed IFS accounting period, under each `[ifs] closed_period` policy, end to end on
//! moto + both simulators. The period is closed (and reopened) the way a bookkeeper would, at runtime, through
//! the IFS simulator's admin route `PUT /_sim/periods/{company}/{year}/{period}`; IFS refuses a voucher dated
//! in it at `CreateVoucher` (a business refusal).
//!
//! - `fail` (the default): reported to Brex as failed with IFS's refusal, nothing posted.
//! - `next_open`: posted once in the first open period after the date, dated its first day, the Brex date in
//!   every row's text, and a note in the audit trail that `connector trace` shows.
//! - `hold`: HELD with the fix "reopen period … then `connector replay`", nothing posted or reported; once the
//!   period is reopened, `connector replay --all` posts each exactly once in the original period. Also when
//!   the period closed after the poster had cached the calendar as open.
//!
//! The dates are in last year's calendar (the simulator's spans current year − 2 ..= + 1) so the tests do not
//! depend on today.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use shared::aws::{CachedMapping, DynamoStore};
use shared::domain::{Origin, WebhookId};
use sims::brex::ExportOutcome;
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::model::{AccountingRecord, ReviewStatus};
use sims::ifs::model::Voucher;
use sims::ifs::tenant::BatchSupport;
use sims::ifs::{IfsSimConfig, PeriodStatus};
use sims::operator::cli;
use sims::pipeline::{EXAMPLE_MAPPING, Pipeline, PipelineOptions};

/// The example mapping maps into both of these (Acme Canada by its Entity field).
const COMPANIES: [&str; 2] = ["10", "20"];

fn year() -> i32 {
    Utc::now().year() - 1
}

fn day(month: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year(), month, d).unwrap()
}

/// The example mapping with `[ifs] closed_period = policy`, or without the key.
fn mapping(policy: Option<&str>) -> String {
    const LINE: &str = "closed_period = \"fail\"\n";
    assert!(EXAMPLE_MAPPING.contains(LINE), "the example spells the default out");
    let line = policy.map(|p| format!("closed_period = \"{p}\"\n")).unwrap_or_default();
    EXAMPLE_MAPPING.replacen(LINE, &line, 1)
}

async fn pipeline(name: &str, policy: Option<&str>) -> Pipeline {
    pipeline_on(name, policy, BatchSupport::Full).await
}

async fn pipeline_on(name: &str, policy: Option<&str>, tenant: BatchSupport) -> Pipeline {
    let mut ifs = IfsSimConfig::default();
    ifs.tenant.batch = tenant;
    let options = PipelineOptions {
        name: format!("{name}-{}", tenant.as_str().replace('_', "-")),
        ifs,
        mapping: Some(mapping(policy)),
        ..PipelineOptions::default()
    };
    let mut p = Pipeline::start(options).await.expect("pipeline");
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&p.stack.sdk), &p.stack.table_name);
    p.poster.mapping = Arc::new(CachedMapping::new(store, Duration::ZERO));
    // Held messages come back quickly here (production: 30 s × 4ⁿ).
    p.poster.options.hold_backoff = Duration::from_millis(10);
    p.poster.options.hold_backoff_cap = Duration::from_millis(10);
    p
}

/// A bookkeeper closing or reopening a period in IFS, through the simulator's admin route.
async fn set_period(p: &Pipeline, month: u32, status: &str) {
    for company in COMPANIES {
        let url = format!("{}/_sim/periods/{company}/{}/{month}", p.ifs.base_url(), year());
        let response =
            reqwest::Client::new().put(&url).json(&serde_json::json!({ "status": status })).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let period: serde_json::Value = response.json().await.unwrap();
        assert_eq!(period["status"], status, "{period}");
    }
}

/// `n` clean records (every one maps), dated `date`.
fn records_dated(seed: u64, n: usize, date: NaiveDate) -> Vec<AccountingRecord> {
    let options = GeneratorOptions { count: n, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    let at = Utc.from_utc_datetime(&date.and_hms_opt(15, 30, 0).unwrap());
    let mut records = RecordGenerator::with_options(seed, options).batch();
    for r in &mut records {
        r.erp_posting_date = at;
        r.posted_at = at;
    }
    records
}

async fn post(p: &Pipeline, records: Vec<AccountingRecord>, webhook: &str) -> Vec<String> {
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    p.brex.insert_records(records);
    let origin = Origin::Webhook { webhook_id: WebhookId::parse(webhook).unwrap() };
    p.enqueue(&ids, &origin).await.unwrap();
    p.drain(Duration::from_secs(90)).await.expect("drained");
    ids
}

async fn status(p: &Pipeline, id: &str) -> Option<String> {
    let item = p.stack.idempotency_item(&format!("record#{id}")).await;
    item.get("status").and_then(|v| v.as_s().ok()).cloned()
}

fn vouchers_of(p: &Pipeline, id: &str) -> Vec<Voucher> {
    let by_ref: BTreeMap<String, Vec<Voucher>> = p.vouchers_by_reference();
    by_ref.get(id).cloned().unwrap_or_default()
}

/// Requests that start a voucher: a `$batch` (the connector sends one only to create vouchers) or a
/// step-by-step virtual voucher.
fn voucher_writes(p: &Pipeline) -> u64 {
    let c = p.ifs.counters();
    c.count_label("Batch.POST") + c.count_label("VoucherSet.POST")
}

fn exported(p: &Pipeline, id: &str) -> bool {
    matches!(p.brex.export_result(id).map(|r| r.outcome), Some(ExportOutcome::Success { .. }))
}

#[tokio::test]
async fn fail_reports_the_refusal_to_brex_and_a_replay_after_the_reopen_posts_it() {
    let p = pipeline("closed-fail", Some("fail")).await;
    set_period(&p, 10, "Closed").await;
    let ids = post(&p, records_dated(301, 3, day(10, 28)), "msg_closed_fail").await;

    assert_eq!(p.ifs.voucher_count(), 0, "nothing posted");
    for id in &ids {
        match p.brex.export_result(id).map(|r| r.outcome) {
            Some(ExportOutcome::Failure { error_message }) => {
                assert!(error_message.contains(&format!("Period {}/10 is closed", year())), "{error_message}")
            }
            other => panic!("{id}: reported as failed expected, got {other:?}"),
        }
        assert_eq!(status(&p, id).await.as_deref(), Some("FAILED"));
    }
    assert_eq!(p.stack.queue_depth(&p.stack.dlq_url).await, 0, "a business refusal never loops to the DLQ");
    assert_eq!(p.ifs.pending_virtual_count(), 0, "no virtual voucher left behind");

    // Once the period is reopened, replaying the failures posts each once, as dated.
    set_period(&p, 10, "Open").await;
    assert_eq!(cli(&p, &["replay", "--all"]).await.code, 0);
    p.drain(Duration::from_secs(90)).await.expect("drained");
    for id in &ids {
        let vouchers = vouchers_of(&p, id);
        assert_eq!(vouchers.len(), 1, "{id} posted exactly once");
        assert_eq!((vouchers[0].voucher_date, vouchers[0].accounting_period), (day(10, 28), 10));
        assert!(exported(&p, id), "{id} reported exported after the replay");
    }

    // No policy at all is the same as "fail": today's behaviour.
    let p = pipeline("closed-default", None).await;
    set_period(&p, 10, "Closed").await;
    let ids = post(&p, records_dated(302, 2, day(10, 28)), "msg_closed_default").await;
    assert_eq!(p.ifs.voucher_count(), 0);
    for id in &ids {
        assert!(matches!(p.brex.export_result(id).map(|r| r.outcome), Some(ExportOutcome::Failure { .. })), "{id}");
    }
}

#[tokio::test]
async fn next_open_posts_in_the_next_open_period_with_the_brex_date_in_the_rows_and_the_audit_trail() {
    let p = pipeline("closed-next-open", Some("next_open")).await;
    // October and November are closed: the first open period after 28 October is December.
    set_period(&p, 10, "Closed").await;
    set_period(&p, 11, "Closed").await;
    let late = post(&p, records_dated(311, 4, day(10, 28)), "msg_closed_next").await;
    let on_time = post(&p, records_dated(312, 1, day(9, 15)), "msg_open_next").await;

    let brex_date = format!("(Brex date {})", day(10, 28));
    for id in &late {
        let vouchers = vouchers_of(&p, id);
        assert_eq!(vouchers.len(), 1, "{id} posted exactly once");
        let v = &vouchers[0];
        assert_eq!((v.voucher_date, v.accounting_year, v.accounting_period), (day(12, 1), year(), 12), "{id}");
        for row in &v.rows {
            let text = row.text.as_deref().unwrap_or_default();
            assert!(text.ends_with(&brex_date), "{id} row {}: {text:?}", row.row_no);
        }
        assert!(exported(&p, id), "{id} reported exported");
        assert_eq!(status(&p, id).await.as_deref(), Some("COMPLETED"));
    }
    // A record in an open period is posted as dated, its text untouched.
    let v = &vouchers_of(&p, &on_time[0])[0];
    assert_eq!((v.voucher_date, v.accounting_period), (day(9, 15), 9));
    assert!(v.rows.iter().all(|r| !r.text.as_deref().unwrap_or_default().contains("Brex date")));

    // The audit trail says what was moved, and `connector trace` shows it.
    let trace = cli(&p, &["trace", &late[0]]).await;
    assert_eq!(trace.code, 0);
    let moved = format!(
        "voucher date moved from {} (period {y}/10 of company 10 is closed) to {}, the first day of the next open \
         period {y}/12",
        day(10, 28),
        day(12, 1),
        y = year()
    );
    let moved_20 = moved.replace("company 10", "company 20");
    assert!(trace.out.contains(&moved) || trace.out.contains(&moved_20), "{}", trace.out);
    let json = cli(&p, &["trace", &late[0], "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&json.out).expect("json");
    let notes: Vec<&str> = json["attempts"].as_array().unwrap().iter().filter_map(|a| a["note"].as_str()).collect();
    assert_eq!(notes.len(), 1, "one posting, one note: {json}");
    let untouched = cli(&p, &["trace", &on_time[0], "--json"]).await;
    let untouched: serde_json::Value = serde_json::from_str(&untouched.out).expect("json");
    assert!(untouched["attempts"].as_array().unwrap().iter().all(|a| a.get("note").is_none()), "{untouched}");
    assert_eq!(p.ifs.pending_virtual_count(), 0);
}

#[tokio::test]
async fn hold_holds_until_the_period_is_reopened_then_replay_posts_each_once_with_batch() {
    hold_holds_until_the_period_is_reopened_then_replay_posts_each_once_in_its_own_period(BatchSupport::Full).await;
}

#[tokio::test]
async fn hold_holds_until_the_period_is_reopened_then_replay_posts_each_once_without_batch() {
    hold_holds_until_the_period_is_reopened_then_replay_posts_each_once_in_its_own_period(BatchSupport::Absent).await;
}

async fn hold_holds_until_the_period_is_reopened_then_replay_posts_each_once_in_its_own_period(tenant: BatchSupport) {
    let p = pipeline_on("closed-hold", Some("hold"), tenant).await;
    // One record posted while October is open: the poster's calendar cache now says October is open.
    let early = post(&p, records_dated(321, 1, day(10, 5)), "msg_hold_early").await;
    assert_eq!(vouchers_of(&p, &early[0]).len(), 1);

    set_period(&p, 10, "Closed").await;
    // These meet IFS's refusal (the cache still says open), and the policy holds them all the same.
    let writes_before = voucher_writes(&p);
    let stale = post(&p, records_dated(322, 2, day(10, 28)), "msg_hold_stale").await;
    assert!(voucher_writes(&p) > writes_before, "IFS was asked, and refused");
    // By now the calendar was read again: these are held before anything is sent to IFS.
    let creates_before = voucher_writes(&p);
    let fresh = post(&p, records_dated(323, 2, day(10, 29)), "msg_hold_fresh").await;
    let held: Vec<String> = stale.iter().chain(&fresh).cloned().collect();
    assert_eq!(voucher_writes(&p), creates_before, "a period known to be closed is not tried");

    assert_eq!(p.ifs.voucher_count(), 1, "only the record from before the close");
    for id in &held {
        assert!(p.brex.export_result(id).is_none(), "{id}: nothing reported to Brex");
        assert_eq!(p.brex.record(id).unwrap().review_status, ReviewStatus::ReadyForExport);
        assert_eq!(status(&p, id).await.as_deref(), Some("HELD"), "{id}: held, never FAILED");
    }
    let listed = cli(&p, &["failures", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&listed.out).expect("json");
    assert_eq!(json["table"].as_array().map(Vec::len), Some(0), "nothing FAILED: {json}");
    assert_eq!(json["held"].as_array().map(Vec::len), Some(held.len()), "{json}");
    for cause in json["held_causes"].as_array().unwrap() {
        let fix = cause["fix"].as_str().unwrap();
        let reopen = format!("reopen period {}/10 of company", year());
        assert!(fix.contains(&reopen) && fix.contains("in IFS, then `connector replay`"), "{fix}");
        assert!(cause["reason"].as_str().unwrap().contains("which is closed"), "{cause}");
    }

    // The bookkeeper reopens October; the operator replays.
    set_period(&p, 10, "Open").await;
    assert_eq!(cli(&p, &["replay", "--all"]).await.code, 0);
    p.drain(Duration::from_secs(90)).await.expect("drained");
    // A second replay, or a late redelivery of the webhook, posts nothing more.
    assert_eq!(cli(&p, &["replay", "--all"]).await.code, 0);
    let origin = Origin::Webhook { webhook_id: WebhookId::parse("msg_hold_again").unwrap() };
    p.enqueue(&held, &origin).await.unwrap();
    p.drain(Duration::from_secs(90)).await.expect("drained");

    for (id, date) in stale.iter().map(|id| (id, day(10, 28))).chain(fresh.iter().map(|id| (id, day(10, 29)))) {
        let vouchers = vouchers_of(&p, id);
        assert_eq!(vouchers.len(), 1, "{id} posted exactly once");
        assert_eq!((vouchers[0].voucher_date, vouchers[0].accounting_period), (date, 10), "{id}: its own date");
        assert!(vouchers[0].rows.iter().all(|r| !r.text.as_deref().unwrap_or_default().contains("Brex date")));
        assert!(exported(&p, id), "{id} reported exported");
        assert_eq!(status(&p, id).await.as_deref(), Some("COMPLETED"));
    }
    assert_eq!(p.ifs.voucher_count(), 1 + held.len());
    assert_eq!(p.ifs.pending_virtual_count(), 0);
}

#[tokio::test]
async fn doctor_warns_when_the_current_period_is_about_to_close() {
    // Today's period ends tomorrow; the one after is closed, so the next open one is the one after that.
    let today = Utc::now().date_naive();
    let mut ifs = IfsSimConfig::default();
    let periods = &mut ifs.reference.periods;
    periods.retain(|p| p.company == "10");
    periods.sort_by_key(|p| p.date_from);
    let i = periods.iter().position(|p| p.date_from <= today && today <= p.date_until).unwrap();
    let tomorrow = today.succ_opt().unwrap();
    periods[i].date_until = tomorrow;
    periods[i + 1].date_from = tomorrow.succ_opt().unwrap();
    periods[i + 1].status = PeriodStatus::Closed;
    let (current, next_open) = (periods[i].clone(), periods[i + 2].clone());
    // The mapping posts to company 10 only.
    let only_10 = mapping(Some("hold")).replace("company = \"20\"", "company = \"10\"");
    assert!(!only_10.contains("company = \"20\""), "company 10 only");
    let options = PipelineOptions { name: "closed-doctor".into(), ifs, mapping: Some(only_10), ..Default::default() };
    let p = Pipeline::start(options).await.expect("pipeline");

    let run = cli(&p, &["doctor"]).await;
    let label = |p: &sims::ifs::AccountingPeriod| format!("{}/{:02}", p.accounting_year, p.accounting_period);
    let line = run.out.lines().find(|l| l.contains("IFS period closing")).expect("a period line");
    assert!(line.starts_with("! "), "a warning, not a failure: {line}");
    assert!(
        line.contains(&format!("company 10: period {} ends {tomorrow} (tomorrow)", label(&current))),
        "names the period and its end: {line}"
    );
    assert!(
        line.contains(&format!("the next open period is {} from {}", label(&next_open), next_open.date_from)),
        "names the next open period: {line}"
    );
    assert!(run.out.contains("late records will be held until the period is reopened"), "{}", run.out);
    let json = cli(&p, &["doctor", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&json.out).expect("json");
    let check = json["checks"].as_array().unwrap().iter().find(|c| c["name"] == "IFS period closing").unwrap();
    assert_eq!(check["status"], "warn", "{check}");

    // With the period ending in a month, no warning.
    let calm = pipeline("closed-doctor-calm", None).await;
    let run = cli(&calm, &["doctor"]).await;
    let line = run.out.lines().find(|l| l.contains("IFS period closing")).expect("a period line");
    if Utc::now().date_naive().day() < 25 {
        assert!(line.starts_with("✓ "), "{line}");
    }
}
