//! Records Brex changes after their voucher was posted, under each `[ifs] changed_after_export` policy, end to
//! end on moto + both simulators. The bookkeeper edits the record in Brex (a new amount: the Brex simulator
//! bumps its `version`) and marks it ready for export again; a person approves a voucher in IFS through the
//! IFS simulator's admin route `POST /_sim/vouchers/{company}/{year}/{type}/{no}/approve`.
//!
//! - `replace`, old voucher unapproved: removed from the hold table (If-Match), the new version posted as
//!   `<id>-v<version>`, Brex told the new voucher; one voucher net. A redelivery writes nothing more.
//! - `replace`, old voucher approved: a reversal (`<id>-R`, sides swapped) plus the new voucher; per account
//!   the vouchers net to the new version. A redelivery writes nothing more.
//! - `hold` (the default): held with both versions named, nothing written to IFS or reported to Brex.
//! - a version bump that changes nothing the voucher books (a memo): reported again, nothing written.
//! - `connector trace` shows which version was posted as which voucher, and what replaced it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use shared::aws::{CachedMapping, DynamoStore};
use shared::domain::{Origin, WebhookId};
use sims::brex::ExportOutcome;
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::model::{AccountingRecord, LineType, ReviewStatus};
use sims::ifs::model::Voucher;
use sims::operator::cli;
use sims::pipeline::{EXAMPLE_MAPPING, Pipeline, PipelineOptions};

/// The example mapping with `[ifs] changed_after_export = policy`, or without the key.
fn mapping(policy: Option<&str>) -> String {
    const LINE: &str = "changed_after_export = \"hold\"\n";
    assert!(EXAMPLE_MAPPING.contains(LINE), "the example spells the default out");
    let line = policy.map(|p| format!("changed_after_export = \"{p}\"\n")).unwrap_or_default();
    EXAMPLE_MAPPING.replacen(LINE, &line, 1)
}

async fn pipeline(name: &str, policy: Option<&str>) -> Pipeline {
    let options =
        PipelineOptions { name: name.to_owned(), mapping: Some(mapping(policy)), ..PipelineOptions::default() };
    let mut p = Pipeline::start(options).await.expect("pipeline");
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&p.stack.sdk), &p.stack.table_name);
    p.poster.mapping = Arc::new(CachedMapping::new(store, Duration::ZERO));
    // Held messages come back quickly here (production: 30 s × 4ⁿ).
    p.poster.options.hold_backoff = Duration::from_millis(10);
    p.poster.options.hold_backoff_cap = Duration::from_millis(10);
    p
}

/// Two clean card purchases (one debit line, one credit line each).
fn records(seed: u64) -> Vec<AccountingRecord> {
    let options = GeneratorOptions {
        count: 2,
        missing_gl_rate: 0.0,
        refund_rate: 0.0,
        reimbursement_rate: 0.0,
        foreign_rate: 0.0,
        split_rate: 0.0,
        entity_rate: 0.0,
        ..GeneratorOptions::default()
    };
    let simple: Vec<AccountingRecord> = RecordGenerator::with_options(seed, options)
        .batch()
        .into_iter()
        .filter(|r| {
            r.record_type == "CARD_EXPENSE_POST"
                && r.line_items.len() == 2
                && r.line_items.iter().any(|l| l.line_type == LineType::Debit)
        })
        .take(2)
        .collect();
    assert_eq!(simple.len(), 2, "the generator makes plain card purchases");
    simple
}

async fn deliver(p: &Pipeline, ids: &[String], webhook: &str) {
    let origin = Origin::Webhook { webhook_id: WebhookId::parse(webhook).unwrap() };
    p.enqueue(ids, &origin).await.unwrap();
    p.drain(Duration::from_secs(90)).await.expect("drained");
}

/// Posts two records; returns their ids and the Brex version the first was posted from.
async fn post(p: &Pipeline, seed: u64) -> (Vec<String>, u64) {
    let records = records(seed);
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let posted_version = records[0].version;
    p.brex.insert_records(records);
    deliver(p, &ids, &format!("msg_first_{seed}")).await;
    (ids, posted_version)
}

/// The bookkeeper changes the amount by `delta` in Brex and exports the record again.
fn change_amount(p: &Pipeline, id: &str, delta: Decimal) {
    assert!(p.brex.update_record(id, |r| {
        r.amount.amount += delta;
        if let Some(original) = &mut r.original_amount {
            original.amount += delta;
        }
        for line in &mut r.line_items {
            line.amount.amount += delta;
            if let Some(original) = &mut line.original_amount {
                original.amount += delta;
            }
        }
        r.review_status = ReviewStatus::ReadyForExport;
    }));
}

fn version(p: &Pipeline, id: &str) -> u64 {
    p.brex.record(id).map(|r| r.version).unwrap()
}

fn voucher_key(v: &Voucher) -> String {
    format!("{}-{}-{}-{}", v.company, v.accounting_year, v.voucher_type, v.voucher_no)
}

fn vouchers_of(p: &Pipeline, reference: &str) -> Vec<Voucher> {
    p.vouchers_by_reference().get(reference).cloned().unwrap_or_default()
}

/// Debit minus credit per account over `vouchers`.
fn net(vouchers: &[Voucher]) -> BTreeMap<String, Decimal> {
    let mut net: BTreeMap<String, Decimal> = BTreeMap::new();
    for v in vouchers {
        for r in &v.rows {
            let amount = r.currency_debet_amount.unwrap_or_default() - r.currency_credit_amount.unwrap_or_default();
            *net.entry(r.account.clone()).or_default() += amount;
        }
    }
    net.retain(|_, amount| !amount.is_zero());
    net
}

fn exported_as(p: &Pipeline, id: &str) -> Option<String> {
    match p.brex.export_result(id).map(|r| r.outcome) {
        Some(ExportOutcome::Success { reference_id, .. }) => reference_id,
        _ => None,
    }
}

/// Requests that write to IFS: a voucher started (`$batch` or a virtual voucher) or removed.
fn ifs_writes(p: &Pipeline) -> u64 {
    let c = p.ifs.counters();
    c.count_label("Batch.POST") + c.count_label("VoucherSet.POST") + c.count_label("RemoveVoucher.POST")
}

async fn approve(p: &Pipeline, v: &Voucher) {
    let url = format!(
        "{}/_sim/vouchers/{}/{}/{}/{}/approve",
        p.ifs.base_url(),
        v.company,
        v.accounting_year,
        v.voucher_type,
        v.voucher_no
    );
    let response = reqwest::Client::new().post(&url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let approved: serde_json::Value = response.json().await.unwrap();
    assert_eq!(approved["status"], "Approved", "{approved}");
}

async fn trace(p: &Pipeline, id: &str) -> String {
    let run = cli(p, &["trace", id]).await;
    assert_eq!(run.code, 0);
    run.out
}

async fn status(p: &Pipeline, id: &str) -> Option<String> {
    let item = p.stack.idempotency_item(&format!("record#{id}")).await;
    item.get("status").and_then(|v| v.as_s().ok()).cloned()
}

#[tokio::test]
async fn replace_removes_the_unapproved_voucher_and_posts_the_new_version_once() {
    let p = pipeline("revise-replace", Some("replace")).await;
    let (ids, posted_version) = post(&p, 501).await;
    let (id, other) = (&ids[0], &ids[1]);
    let old = vouchers_of(&p, id).remove(0);

    change_amount(&p, id, Decimal::new(1000, 2));
    let changed_version = version(&p, id);
    let before = p.vouchers_by_reference()[id.as_str()].clone();
    deliver(&p, std::slice::from_ref(id), "msg_changed").await;

    assert!(vouchers_of(&p, id).is_empty(), "the old voucher is gone from the hold table");
    let new = vouchers_of(&p, &format!("{id}-v{changed_version}"));
    assert_eq!(new.len(), 1, "the new version posted once: {:?}", p.vouchers_by_reference().keys());
    let old_net = net(&before);
    let new_net = net(&new);
    assert_ne!(old_net, new_net);
    let old_total: Decimal = old_net.values().filter(|a| a.is_sign_positive()).sum();
    let new_total: Decimal = new_net.values().filter(|a| a.is_sign_positive()).sum();
    assert_eq!(new_total - old_total, Decimal::new(1000, 2), "the new amount");
    assert_eq!(p.ifs.counters().vouchers_removed, 1);
    assert_eq!(p.ifs.voucher_count(), 2, "one voucher net for the changed record, plus the other record's");
    assert_eq!(exported_as(&p, id), Some(voucher_key(&new[0])), "Brex is told the new voucher");
    assert_eq!(vouchers_of(&p, other).len(), 1);

    // Redelivery (and the webhook of the export itself bumping the version): nothing more is written.
    let writes = ifs_writes(&p);
    deliver(&p, std::slice::from_ref(id), "msg_changed_again").await;
    deliver(&p, &ids, "msg_both_again").await;
    assert_eq!(ifs_writes(&p), writes, "nothing more written to IFS");
    assert_eq!(p.ifs.voucher_count(), 2);
    assert_eq!(exported_as(&p, id), Some(voucher_key(&new[0])));
    assert_eq!(p.stack.queue_depth(&p.stack.dlq_url).await, 0);

    let shown = trace(&p, id).await;
    assert!(shown.contains(&format!("version {posted_version} posted as {}", voucher_key(&old))), "{shown}");
    assert!(
        shown.contains(&format!(
            "version {changed_version} posted as {}; version {posted_version}'s voucher {} removed",
            voucher_key(&new[0]),
            voucher_key(&old)
        )),
        "{shown}"
    );
}

#[tokio::test]
async fn an_approved_voucher_is_reversed_and_the_vouchers_net_to_the_new_version() {
    let p = pipeline("revise-reverse", Some("replace")).await;
    let (ids, _) = post(&p, 502).await;
    let id = &ids[0];
    let old = vouchers_of(&p, id).remove(0);
    approve(&p, &old).await;

    change_amount(&p, id, Decimal::new(-2500, 2));
    let changed_version = version(&p, id);
    deliver(&p, std::slice::from_ref(id), "msg_changed").await;

    let new = vouchers_of(&p, &format!("{id}-v{changed_version}"));
    let reversal = vouchers_of(&p, &format!("{id}-R"));
    assert_eq!((new.len(), reversal.len()), (1, 1), "{:?}", p.vouchers_by_reference().keys());
    assert_eq!(vouchers_of(&p, id).len(), 1, "an approved voucher is never removed");
    assert_eq!(p.ifs.counters().vouchers_removed, 0);
    let all: Vec<Voucher> = [old.clone(), new[0].clone(), reversal[0].clone()].to_vec();
    assert_eq!(net(&all), net(&new), "per account, the books say what the new version says");
    assert_eq!(net(&[old.clone(), reversal[0].clone()]), BTreeMap::new(), "the reversal cancels the old voucher");
    assert!(reversal[0].text.as_deref().unwrap_or_default().contains(&voucher_key(&old)), "{:?}", reversal[0].text);
    assert_eq!(exported_as(&p, id), Some(voucher_key(&new[0])));

    let writes = ifs_writes(&p);
    deliver(&p, std::slice::from_ref(id), "msg_changed_again").await;
    assert_eq!(ifs_writes(&p), writes, "nothing more written to IFS");
    assert_eq!(p.ifs.voucher_count(), 4);

    let shown = trace(&p, id).await;
    assert!(shown.contains(&format!("reversed by {}", voucher_key(&reversal[0]))), "{shown}");
}

#[tokio::test]
async fn hold_by_default_writes_nothing_names_both_versions_and_books_once_a_person_decides() {
    let p = pipeline("revise-hold", None).await;
    let (ids, posted_version) = post(&p, 503).await;
    let id = &ids[0];
    let old = vouchers_of(&p, id).remove(0);
    let reported = p.brex.export_result(id).unwrap();

    change_amount(&p, id, Decimal::new(500, 2));
    let changed_version = version(&p, id);
    let writes = ifs_writes(&p);
    deliver(&p, std::slice::from_ref(id), "msg_changed").await;

    assert_eq!(ifs_writes(&p), writes, "nothing written to IFS");
    assert_eq!(p.ifs.voucher_count(), 2);
    assert_eq!(vouchers_of(&p, id), std::slice::from_ref(&old));
    let now = p.brex.export_result(id).unwrap();
    assert_eq!(now.reported_at, reported.reported_at, "not reported to Brex");
    assert_eq!(status(&p, id).await.as_deref(), Some("COMPLETED"), "the posted voucher stays on record");

    let shown = trace(&p, id).await;
    assert!(shown.contains("held"), "{shown}");
    assert!(shown.contains(&format!("version {changed_version}")), "{shown}");
    let named = format!("version {posted_version} was posted as voucher {}", voucher_key(&old));
    assert!(shown.contains(&named), "{shown}");
    assert!(shown.contains("held now: changed in Brex after export") && shown.contains("fix: decide"), "{shown}");
    assert_eq!(p.stack.queue_depth(&p.stack.dlq_url).await, 1, "held until a person decides, then the DLQ");

    // The person decides for the new version: the mapping says "reverse", the DLQ is replayed.
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&p.stack.sdk), &p.stack.table_name);
    let current = store.load_mapping().await.unwrap().unwrap();
    store.store_mapping(&mapping(Some("reverse")), Some(current.version)).await.unwrap();
    let replayed = cli(&p, &["replay", "--all"]).await;
    assert_eq!(replayed.code, 0, "{}", replayed.err);
    p.drain(Duration::from_secs(90)).await.expect("drained");
    let new = vouchers_of(&p, &format!("{id}-v{changed_version}"));
    let reversal = vouchers_of(&p, &format!("{id}-R"));
    assert_eq!((new.len(), reversal.len()), (1, 1), "{:?}", p.vouchers_by_reference().keys());
    assert_eq!(exported_as(&p, id), Some(voucher_key(&new[0])));
}

#[tokio::test]
async fn a_version_bump_that_changes_nothing_booked_is_reported_again() {
    let p = pipeline("revise-noop", Some("replace")).await;
    let (ids, _) = post(&p, 504).await;
    let id = &ids[0];
    let old = vouchers_of(&p, id).remove(0);
    let first = p.brex.export_result(id).unwrap();
    assert!(p.brex.update_record(id, |r| {
        r.memo = Some("receipt attached, memo reworded".into());
        r.review_status = ReviewStatus::ReadyForExport;
    }));
    let writes = ifs_writes(&p);
    deliver(&p, std::slice::from_ref(id), "msg_memo").await;

    assert_eq!(ifs_writes(&p), writes, "nothing written to IFS");
    assert_eq!(vouchers_of(&p, id), std::slice::from_ref(&old));
    let again = p.brex.export_result(id).unwrap();
    assert!(again.record_version > first.record_version, "reported again, on the newer version");
    assert_eq!(exported_as(&p, id), Some(voucher_key(&old)));
}
