//! Reconciliation end to end on moto + the simulators: records posted by the real poster, then differences
//! planted in the IFS simulator as a person editing IFS would (a voucher deleted, one entered by hand with the
//! connector's ReferenceSerie, an amount changed), found by `connector reconcile` each with its fix; a clean
//! run of 1 000 records finds nothing, reading IFS in pages; the poller runs it once a day and stores the
//! report. Nothing is ever written to IFS or Brex by it.

use std::time::{Duration, Instant};

use chrono::Utc;
use rust_decimal::Decimal;
use shared::domain::{Origin, WebhookId};
use shared::reconcile::{DailyOutcome, DifferenceKind};
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::ifs::IfsSimConfig;
use sims::ifs::model::Voucher;
use sims::operator::cli;
use sims::pipeline::{Pipeline, PipelineOptions};

/// The label the IFS simulator counts voucher-row reads under.
const ROWS_GET: &str = "VoucherRowSet.LIST";

/// A pipeline whose IFS serves at most `page` rows a request, with `n` clean records posted through it.
async fn posted(name: &str, n: usize, page: usize) -> (Pipeline, Vec<String>) {
    let w = Pipeline::start(PipelineOptions {
        name: name.into(),
        ifs: IfsSimConfig { max_page_size: page, ..IfsSimConfig::default() },
        ..PipelineOptions::default()
    })
    .await
    .expect("pipeline");
    let options = GeneratorOptions { count: n, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    let records = RecordGenerator::with_options(23, options).batch();
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    w.brex.insert_records(records);
    w.enqueue(&ids, &Origin::Webhook { webhook_id: WebhookId::parse("msg_reconcile").unwrap() }).await.unwrap();
    w.drain(Duration::from_secs(240)).await.unwrap();
    assert_eq!(w.vouchers_by_reference().len(), ids.len(), "every record posted once");
    (w, ids)
}

fn voucher_of(w: &Pipeline, id: &str) -> Voucher {
    w.vouchers_by_reference()[id][0].clone()
}

fn key(v: &Voucher) -> String {
    format!("{}-{}-{}-{}", v.company, v.accounting_year, v.voucher_type, v.voucher_no)
}

/// Plants one of each difference; returns (deleted record, its voucher key), (extra voucher key), (edited
/// record, its voucher key).
fn plant(w: &Pipeline, ids: &[String]) -> ((String, String), String, (String, String)) {
    let gone = voucher_of(w, &ids[3]);
    assert!(w.ifs.remove_voucher(&gone.company, gone.accounting_year, &gone.voucher_type, gone.voucher_no).is_some());

    let mut manual = voucher_of(w, &ids[5]);
    for row in &mut manual.rows {
        row.reference_number = Some("MANUAL-0042".into());
    }
    let manual_no = w.ifs.add_voucher(manual.clone());
    let extra = format!("{}-{}-{}-{}", manual.company, manual.accounting_year, manual.voucher_type, manual_no);

    let edited = voucher_of(w, &ids[7]);
    // Still balanced (IFS would refuse otherwise): one more on the first debit row and the first credit row.
    let bump = Decimal::new(100, 2);
    assert!(w.ifs.edit_voucher(
        &edited.company,
        edited.accounting_year,
        &edited.voucher_type,
        edited.voucher_no,
        |v| {
            if let Some(d) = v.rows.iter_mut().find_map(|r| r.currency_debet_amount.as_mut()) {
                *d += bump;
            }
            if let Some(c) = v.rows.iter_mut().find_map(|r| r.currency_credit_amount.as_mut()) {
                *c += bump;
            }
        }
    ));
    ((ids[3].clone(), key(&gone)), extra, (ids[7].clone(), key(&edited)))
}

#[tokio::test]
async fn planted_differences_are_each_found_with_their_fix() {
    let (w, ids) = posted("reconcile-planted", 30, 5000).await;
    let clean = cli(&w, &["reconcile"]).await;
    assert_eq!(clean.code, 0, "nothing to find yet: {}", clean.out);
    assert!(clean.out.contains("0 difference(s)"), "{}", clean.out);

    let ((missing_id, missing_key), extra_key, (edited_id, edited_key)) = plant(&w, &ids);
    let vouchers_before = w.ifs.voucher_count();
    w.ifs.reset_counters();
    let exports_before = w.brex.export_results().len();

    let text = cli(&w, &["reconcile", "--since", "30d"]).await;
    assert_eq!(text.code, 1, "differences exit 1: {}", text.out);
    assert!(text.out.contains("missing_voucher (1):") && text.out.contains(&missing_id), "{}", text.out);
    assert!(
        text.out.contains(&format!("connector replay --completed {missing_id}")),
        "the fix names the replay: {}",
        text.out
    );
    assert!(text.out.contains("extra_voucher (1):") && text.out.contains(&extra_key), "{}", text.out);
    assert!(text.out.contains("remove or reverse it there"), "{}", text.out);
    assert!(text.out.contains("amount_mismatch (1):") && text.out.contains(&edited_key), "{}", text.out);
    assert!(
        text.out.contains("3 difference(s): 1 missing_voucher, 1 extra_voucher, 1 amount_mismatch"),
        "{}",
        text.out
    );

    let json = cli(&w, &["reconcile", "--json"]).await;
    assert_eq!(json.code, 1);
    let v: serde_json::Value = serde_json::from_str(&json.out).unwrap();
    assert_eq!(v["counts"], serde_json::json!({"missing_voucher": 1, "extra_voucher": 1, "amount_mismatch": 1}));
    let diffs = v["report"]["differences"].as_array().unwrap();
    let found: Vec<(String, String, String)> = diffs
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or("-").to_owned();
            (s("kind"), s("subject"), s("voucher"))
        })
        .collect();
    assert_eq!(
        found,
        [
            ("missing_voucher".to_owned(), missing_id.clone(), missing_key),
            ("extra_voucher".to_owned(), "MANUAL-0042".to_owned(), extra_key),
            ("amount_mismatch".to_owned(), edited_id, edited_key),
        ]
    );
    assert!(diffs.iter().all(|d| !d["fix"].as_str().unwrap().is_empty()));
    assert_eq!(v["report"]["subjects_checked"], 30);

    // Read-only: IFS and Brex are as the plant left them.
    assert_eq!(w.ifs.voucher_count(), vouchers_before);
    assert_eq!(w.brex.export_results().len(), exports_before);
    let c = w.ifs.counters();
    assert_eq!(c.mutations_with_if_match + c.mutations_without_if_match, 0, "no IFS write at all: {c:?}");
    assert_eq!(c.total_requests, c.count_label(ROWS_GET) + c.token_fetches, "only row reads and tokens: {c:?}");

    // The missing voucher's fix, followed: the export undone in Brex, the completed record replayed → posted
    // again, once; the other two differences are IFS's to fix and stay.
    let plain = cli(&w, &["replay", &missing_id]).await;
    assert!(plain.out.contains("use --completed"), "a plain replay passes over a completed record: {}", plain.out);
    assert_eq!(w.brex.mark_ready_for_export(&[&missing_id]), 1);
    let replay = cli(&w, &["replay", "--completed", &missing_id]).await;
    assert_eq!(replay.code, 0, "{}", replay.out);
    assert!(replay.out.contains("completed, voucher missing in IFS"), "{}", replay.out);
    w.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(w.vouchers_by_reference()[&missing_id].len(), 1, "posted again, once");
    let after = cli(&w, &["reconcile", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&after.out).unwrap();
    assert_eq!(v["counts"], serde_json::json!({"missing_voucher": 0, "extra_voucher": 1, "amount_mismatch": 1}));
}

#[tokio::test]
async fn a_clean_run_of_1000_records_reports_nothing_reading_ifs_in_pages() {
    let started = Instant::now();
    let (w, ids) = posted("reconcile-1000", 1000, 1000).await;
    eprintln!("posted {} records in {:?}", ids.len(), started.elapsed());
    let rows: usize = w.ifs.vouchers().iter().map(|v| v.rows.len()).sum();
    w.ifs.reset_counters();
    let exports_before = w.brex.export_results().len();
    let brex_before = w.brex.counters();

    let run = cli(&w, &["reconcile", "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.out);
    let v: serde_json::Value = serde_json::from_str(&run.out).unwrap();
    assert_eq!(v["report"]["differences"], serde_json::json!([]));
    assert_eq!(v["report"]["subjects_checked"], 1000);
    assert_eq!(v["report"]["amounts_checked"], 1000, "every record's amount compared with its voucher");
    assert_eq!(v["report"]["vouchers_in_ifs"], 1000);

    // Paged: the simulator serves ≤ 1 000 rows a request, so the rows take ⌈rows / 1000⌉ reads (a last full
    // page costs one more, empty, read).
    let c = w.ifs.counters();
    let pages = c.count_label(ROWS_GET);
    assert!(rows > 2000, "several pages' worth of rows: {rows}");
    assert!(
        pages == rows.div_ceil(1000) as u64 || pages == (rows / 1000 + 1) as u64,
        "{pages} reads for {rows} rows: {c:?}"
    );
    assert_eq!(c.total_requests, pages + c.token_fetches, "only row reads and the token: {c:?}");
    assert_eq!(v["ifs_requests"].as_u64(), Some(c.total_requests), "the CLI counts what the simulator served");
    eprintln!(
        "IFS requests: {} ({} pages of voucher rows for {rows} rows, {} token)",
        c.total_requests, pages, c.token_fetches
    );

    // Brex: the records read by id (≤ 500 a query, each query paged by the simulator's 100); nothing reported.
    assert_eq!(w.brex.export_results().len(), exports_before);
    let brex = w.brex.counters();
    let delta = |method: &str, route: &str| brex.count(method, route, 200) - brex_before.count(method, route, 200);
    let reads = delta("GET", "/v3/accounting/records");
    eprintln!("Brex requests: {reads} reads");
    assert!((2..=10).contains(&reads), "1 000 records in two queries of 500 ids, paged: {brex:?}");
    assert_eq!(delta("POST", "/v3/accounting/records/export-results"), 0);
    assert_eq!(brex.total_requests - brex_before.total_requests, reads, "nothing but the reads");
    assert!(started.elapsed() < Duration::from_secs(300), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_poller_reconciles_once_a_day_and_stores_the_report() {
    let (w, ids) = posted("reconcile-daily", 12, 5000).await;
    let ((missing_id, _), _, _) = plant(&w, &ids);
    // The poller as built for Lambda reconciles daily.
    let poller = w.poller(&[]).await.unwrap();
    let daily = poller.options.reconcile.clone().expect("the built poller reconciles");

    let first = poller.run(Utc::now() + chrono::Duration::minutes(5)).await;
    let Some(DailyOutcome::Ran { differences, subjects_checked, .. }) = first.reconcile else {
        panic!("the first run of the day reconciles: {:?}", first.reconcile)
    };
    assert_eq!(subjects_checked, 12);
    assert_eq!(
        differences.into_iter().map(|(k, n)| (k.as_str(), n)).collect::<Vec<_>>(),
        [("missing_voucher", 1), ("extra_voucher", 1), ("amount_mismatch", 1)]
    );
    let stored = daily.store.load_latest().await.unwrap().expect("report stored at report#reconcile");
    assert_eq!(stored.run_day, Utc::now().date_naive());
    assert!(
        stored
            .differences
            .iter()
            .any(|d| d.kind == DifferenceKind::MissingVoucher && d.subject.as_deref() == Some(missing_id.as_str()))
    );

    w.ifs.reset_counters();
    let second = poller.run(Utc::now() + chrono::Duration::minutes(5)).await;
    assert_eq!(second.reconcile, Some(DailyOutcome::AlreadyRan { run_day: Utc::now().date_naive() }));
    assert_eq!(w.ifs.counters().count_label(ROWS_GET), 0, "the second run of the day reads no voucher rows");
}
