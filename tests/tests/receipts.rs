//! Receipts beside the voucher, end to end on moto with both simulators: Brex serves each receipt at a
//! presigned, expiring link; the poster (mapping `[ifs] attach_receipts = true`) downloads it after the
//! voucher exists, hashes it, and attaches it to the voucher in IFS document management, once per file
//! across redeliveries. A receipt added after the export is attached to the existing voucher; a failed
//! attachment leaves the voucher posted and exported and only the attachment is retried; with the switch off
//! nothing is downloaded.

use std::time::Duration;

use sha2::{Digest, Sha256};
use shared::aws::DynamoStore;
use shared::domain::{AccountingRecordId, Origin, Subject, WebhookId};
use shared::ports::AttachedReceipts;
use shared::poster::BatchReport;
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::model::{AccountingRecord, ReviewStatus};
use sims::ifs::IfsFaults;
use sims::ifs::documents::SimAttachment;
use sims::ifs::model::Voucher;
use sims::logs::{captured_lines, install_capture};
use sims::operator::cli;
use sims::pipeline::{EXAMPLE_MAPPING, Pipeline, PipelineOptions};

const PDF: &[u8] = b"%PDF-1.4 receipt: Delta Air Lines, 171.75 USD";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n receipt: hotel folio";

fn mapping(attach: bool) -> String {
    if attach {
        EXAMPLE_MAPPING.replacen("[ifs]\n", "[ifs]\nattach_receipts = true\n", 1)
    } else {
        EXAMPLE_MAPPING.into()
    }
}

async fn world(name: &str, attach: bool) -> Pipeline {
    install_capture("info");
    let options = PipelineOptions { name: name.into(), mapping: Some(mapping(attach)), ..PipelineOptions::default() };
    Pipeline::start(options).await.expect("pipeline")
}

/// One clean, postable record with no receipt of its own (the generator's have no file behind them).
fn record(seed: u64) -> AccountingRecord {
    let options = GeneratorOptions { count: 1, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    let mut r = RecordGenerator::with_options(seed, options).batch().remove(0);
    r.receipts = Some(Vec::new());
    r.review_status = ReviewStatus::ReadyForExport;
    r
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn subject(id: &str) -> Subject {
    Subject::Record(AccountingRecordId::parse(id).unwrap())
}

fn the_voucher(w: &Pipeline, id: &str) -> Voucher {
    let by_ref = w.vouchers_by_reference();
    let vouchers = by_ref.get(id).cloned().unwrap_or_default();
    assert_eq!(vouchers.len(), 1, "{id}: one voucher");
    vouchers[0].clone()
}

fn attachments(w: &Pipeline, v: &Voucher) -> Vec<SimAttachment> {
    w.ifs.attachments(&v.company, v.accounting_year, &v.voucher_type, v.voucher_no)
}

fn key(v: &Voucher) -> String {
    format!("{}-{}-{}-{}", v.company, v.accounting_year, v.voucher_type, v.voucher_no)
}

async fn enqueue(w: &Pipeline, id: &str) {
    let origin = Origin::Webhook { webhook_id: WebhookId::parse("msg_receipts").unwrap() };
    w.enqueue(&[id.to_owned()], &origin).await.unwrap();
}

/// Receives one batch and runs the poster on it `times` times (a redelivery of the very same message), then
/// settles it as the event source would; returns each run's failed ids and report.
async fn deliver(w: &Pipeline, times: usize) -> Vec<(Vec<String>, BatchReport)> {
    let batch = w.source.receive(10, 2).await.unwrap().expect("a message");
    let mut runs = Vec::new();
    for _ in 0..times {
        runs.push(w.invoke_poster_reported(&batch.event).await.unwrap());
    }
    w.source.settle(&batch, &[]).await.unwrap();
    runs
}

fn store(w: &Pipeline) -> DynamoStore {
    DynamoStore::new(aws_sdk_dynamodb::Client::new(&w.stack.sdk), &w.stack.table_name)
}

#[tokio::test]
async fn two_receipts_are_attached_once_each_across_a_redelivery_and_a_late_one_joins_the_voucher() {
    let w = world("receipts-two", true).await;
    let r = record(11);
    let id = r.id.clone();
    w.brex.insert_records(vec![r]);
    assert!(w.brex.add_receipt(&id, "rcpt_pdf", "application/pdf", PDF));
    assert!(w.brex.add_receipt(&id, "rcpt_png", "image/png", PNG));
    enqueue(&w, &id).await;

    let runs = deliver(&w, 2).await;
    let (failed, first) = &runs[0];
    assert!(failed.is_empty(), "{first:?}");
    assert!(first.posted.contains_key(&subject(&id)));
    assert_eq!(first.receipts_attached.get(&subject(&id)), Some(&2));
    let (failed, second) = &runs[1];
    assert!(failed.is_empty() && second.already_posted.contains_key(&subject(&id)), "{second:?}");
    assert!(second.receipts_attached.is_empty(), "nothing attached twice: {second:?}");

    let v = the_voucher(&w, &id);
    let mut got: Vec<(String, String, u64)> =
        attachments(&w, &v).into_iter().map(|a| (a.file_name, a.sha256, a.size)).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("brex-rcpt_pdf.pdf".to_owned(), sha(PDF), PDF.len() as u64),
            ("brex-rcpt_png.png".to_owned(), sha(PNG), PNG.len() as u64),
        ]
    );
    assert_eq!(w.ifs.documents().len(), 2, "no document left without its file");
    // Downloaded once each: the redelivery knew them by their Brex ids.
    assert_eq!((w.brex.receipt_downloads("rcpt_pdf"), w.brex.receipt_downloads("rcpt_png")), (1, 1));
    let c = w.ifs.counters();
    assert_eq!(c.count("EdmFileSet.POST", 201), 2, "{c:?}");
    assert_eq!(c.count("EdmFileSet.FileData.PUT", 204), 2, "{c:?}");
    assert_eq!(c.mutations_without_if_match, 0);
    let recorded = store(&w).attached(&key(&v)).await.unwrap();
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|a| a.subject == id));
    assert_eq!(w.brex.record(&id).unwrap().review_status, ReviewStatus::Exported);

    // A receipt uploaded after the export: the record changes (version, updated_at) and comes back.
    let before = w.brex.record(&id).unwrap();
    assert!(w.brex.add_receipt(&id, "rcpt_late", "application/pdf", b"%PDF late taxi receipt"));
    let after = w.brex.record(&id).unwrap();
    assert!(after.version > before.version && after.updated_at > before.updated_at);
    enqueue(&w, &id).await;
    let runs = deliver(&w, 1).await;
    let (failed, late) = &runs[0];
    assert!(failed.is_empty(), "{late:?}");
    assert!(late.posted.is_empty() && late.already_posted.contains_key(&subject(&id)), "no second voucher");
    assert_eq!(late.receipts_attached.get(&subject(&id)), Some(&1));
    assert_eq!(the_voucher(&w, &id), v, "the same voucher, untouched");
    let names: Vec<String> = attachments(&w, &v).into_iter().map(|a| a.file_name).collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&"brex-rcpt_late.pdf".to_owned()));
    assert_eq!((w.brex.receipt_downloads("rcpt_pdf"), w.brex.receipt_downloads("rcpt_late")), (1, 1));
    assert_eq!(w.ifs.counters().vouchers_created, 1);
    // The links are credentials: never logged.
    assert!(!captured_lines().iter().any(|l| l.to_string().contains("X-Amz-Signature")), "a presigned link was logged");
}

#[tokio::test]
async fn an_expired_link_is_refreshed_by_reading_the_record_again() {
    let w = world("receipts-expired", true).await;
    let r = record(12);
    let id = r.id.clone();
    w.brex.insert_records(vec![r]);
    assert!(w.brex.add_receipt(&id, "rcpt_old", "application/pdf", PDF));
    // The poster's own read and the attacher's read hand out links already a quarter hour old.
    w.brex.expire_next_receipt_urls(2);
    enqueue(&w, &id).await;
    let runs = deliver(&w, 1).await;
    let (failed, report) = &runs[0];
    assert!(failed.is_empty(), "{report:?}");
    assert!(report.attachments_pending.is_empty(), "{report:?}");
    assert_eq!(w.brex.expired_receipt_downloads(), 1, "the stale link was tried once …");
    assert_eq!(w.brex.receipt_downloads("rcpt_old"), 1, "… and the fresh one worked");
    let v = the_voucher(&w, &id);
    assert_eq!(attachments(&w, &v).iter().map(|a| a.sha256.clone()).collect::<Vec<_>>(), vec![sha(PDF)]);
}

#[tokio::test]
async fn a_failed_attachment_leaves_the_voucher_and_only_the_attachment_is_retried() {
    let w = world("receipts-fault", true).await;
    let r = record(13);
    let id = r.id.clone();
    w.brex.insert_records(vec![r]);
    assert!(w.brex.add_receipt(&id, "rcpt_f", "application/pdf", PDF));
    // Every attempt the IFS client makes at the document fails (it retries 503 itself).
    w.ifs.set_faults(IfsFaults { attachment_fail_next: 6, ..IfsFaults::default() });
    enqueue(&w, &id).await;
    let batch = w.source.receive(10, 2).await.unwrap().expect("a message");
    let (failed, first) = w.invoke_poster_reported(&batch.event).await.unwrap();
    assert!(first.posted.contains_key(&subject(&id)), "posted: {first:?}");
    assert_eq!(first.attachments_pending, [subject(&id)].into());
    assert_eq!(failed.len(), 1, "the message comes back for the attachment");
    assert_eq!(first.held_messages, failed, "with the held messages' backoff");
    assert!(first.failed.is_empty() && first.retry.is_empty() && first.held.is_empty(), "{first:?}");
    let v = the_voucher(&w, &id);
    assert!(attachments(&w, &v).is_empty());
    assert!(w.ifs.documents().is_empty(), "nothing half-made in IFS");
    assert_eq!(w.ifs.counters().fault("attachment"), 6);
    assert_eq!(w.brex.record(&id).unwrap().review_status, ReviewStatus::Exported, "the export stands");
    let state = store(&w).idempotency_state(&subject(&id)).await.unwrap().expect("recorded");
    assert_eq!(state.status, "COMPLETED");
    let logged = captured_lines();
    assert!(
        logged.iter().any(|l| l["outcome"] == "attachment_failed" && l["record_id"] == id.as_str()),
        "the failure is reported on its own"
    );

    // The redelivery (the same message) posts nothing and attaches the receipt.
    let (failed, second) = w.invoke_poster_reported(&batch.event).await.unwrap();
    w.source.settle(&batch, &failed).await.unwrap();
    assert!(failed.is_empty(), "{second:?}");
    assert!(second.posted.is_empty() && second.already_posted.contains_key(&subject(&id)));
    assert_eq!(second.receipts_attached.get(&subject(&id)), Some(&1));
    assert_eq!(the_voucher(&w, &id), v);
    assert_eq!(attachments(&w, &v).len(), 1);
    assert_eq!(w.ifs.counters().vouchers_created, 1, "only the attachment was retried");
    assert_eq!(w.brex.receipt_downloads("rcpt_f"), 2, "downloaded again: nothing was kept between deliveries");
}

#[tokio::test]
async fn with_the_switch_off_nothing_is_downloaded_or_attached() {
    let w = world("receipts-off", false).await;
    let r = record(14);
    let id = r.id.clone();
    w.brex.insert_records(vec![r]);
    assert!(w.brex.add_receipt(&id, "rcpt_x", "application/pdf", PDF));
    enqueue(&w, &id).await;
    w.drain(Duration::from_secs(30)).await.unwrap();
    let v = the_voucher(&w, &id);
    assert_eq!(w.brex.record(&id).unwrap().review_status, ReviewStatus::Exported);
    assert_eq!(w.brex.total_receipt_downloads() + w.brex.expired_receipt_downloads(), 0);
    assert!(w.ifs.documents().is_empty());
    assert!(store(&w).attached(&key(&v)).await.unwrap().is_empty());
    assert_eq!(w.brex.counters().route_total("GET", "/v3/accounting/records"), 1, "no extra read for receipts");
}

#[tokio::test]
async fn the_simulator_serves_receipts_like_presigned_s3_links() {
    use sims::brex::{BrexSim, BrexSimConfig, DEFAULT_RECEIPT_URL_TTL};
    let sim = BrexSim::start(BrexSimConfig::default()).await.unwrap();
    let r = record(15);
    let id = r.id.clone();
    sim.insert_records(vec![r]);
    assert!(sim.add_receipt(&id, "rcpt_s3", "application/pdf", PDF));
    assert!(!sim.add_receipt("accr_unknown", "rcpt_x", "application/pdf", PDF));
    assert_eq!(DEFAULT_RECEIPT_URL_TTL, Duration::from_secs(900), "Brex's links last about 15 minutes");
    let http = reqwest::Client::new();
    let read_uri = || async {
        let record: serde_json::Value = http
            .get(format!("{}/v3/accounting/records/{id}", sim.base_url()))
            .bearer_auth("bxt_sim_user_token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        record["receipts"][0]["download_uris"][0].as_str().unwrap().to_owned()
    };
    let uri = read_uri().await;
    assert!(uri.contains("X-Amz-Expires=900") && uri.contains("X-Amz-Signature="), "{uri}");
    let got = http.get(&uri).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "application/pdf");
    assert_eq!(got.bytes().await.unwrap().as_ref(), PDF);
    assert_eq!(sim.receipt_downloads("rcpt_s3"), 1);
    let tampered = uri.replace("X-Amz-Expires=900", "X-Amz-Expires=9000");
    let refused = http.get(&tampered).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("SignatureDoesNotMatch"));

    sim.set_receipt_url_ttl(Duration::from_secs(1));
    let short = read_uri().await;
    assert_ne!(short, uri, "links are minted on every read");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = http.get(&short).send().await.unwrap();
    assert_eq!(expired.status(), 403);
    assert!(expired.text().await.unwrap().contains("Request has expired"));
    assert_eq!((sim.receipt_downloads("rcpt_s3"), sim.expired_receipt_downloads()), (1, 1));
}

#[tokio::test]
async fn an_expense_receipt_is_read_with_its_expansion_and_attached() {
    use shared::domain::{ExpenseId, WorkItem};
    use shared::ports::WorkQueue;
    let w = world("receipts-expense", true).await;
    let options = GeneratorOptions {
        count: 1,
        refund_rate: 0.0,
        foreign_rate: 0.0,
        missing_gl_rate: 0.0,
        entity_rate: 0.0,
        ..GeneratorOptions::default()
    };
    let (_, mut expense) = RecordGenerator::with_options(16, options).pairs(1).remove(0);
    expense.status = "APPROVED".into();
    let id = expense.id.clone();
    w.brex.insert_expenses(vec![expense]);
    assert!(w.brex.add_expense_receipt(&id, "rcpt_exp", "image/png", PNG));
    let queue = shared::aws::SqsQueue::new(aws_sdk_sqs::Client::new(&w.stack.sdk), &w.stack.queue_url);
    let ids = [ExpenseId::parse(&id).unwrap()];
    let origin = Origin::Webhook { webhook_id: WebhookId::parse("msg_expense").unwrap() };
    queue.enqueue(&WorkItem::expenses(&ids, &origin, chrono::Utc::now())).await.unwrap();
    let runs = deliver(&w, 1).await;
    let (failed, report) = &runs[0];
    let expense_subject = Subject::Expense(ids[0].clone());
    assert!(failed.is_empty() && report.posted.contains_key(&expense_subject), "{report:?}");
    assert_eq!(report.receipts_attached.get(&expense_subject), Some(&1));
    let v = the_voucher(&w, &id);
    assert_eq!(attachments(&w, &v).iter().map(|a| a.sha256.clone()).collect::<Vec<_>>(), vec![sha(PNG)]);
    assert_eq!(w.brex.receipt_downloads("rcpt_exp"), 1);
}

#[tokio::test]
async fn connector_trace_shows_the_attachments_of_the_voucher() {
    let w = world("receipts-trace", true).await;
    let r = record(17);
    let id = r.id.clone();
    w.brex.insert_records(vec![r]);
    assert!(w.brex.add_receipt(&id, "rcpt_t", "application/pdf", PDF));
    enqueue(&w, &id).await;
    w.drain(Duration::from_secs(30)).await.unwrap();
    let run = cli(&w, &["trace", &id]).await;
    let text = &run.out;
    assert_eq!(run.code, 0, "{text}{}", run.err);
    let v = the_voucher(&w, &id);
    assert!(text.contains(&format!("receipts   1 attached to voucher {}", key(&v))), "{text}");
    assert!(text.contains("brex-rcpt_t.pdf (Brex rcpt_t)") && text.contains(&sha(PDF)), "{text}");
    let run = cli(&w, &["trace", &id, "--json"]).await;
    assert_eq!(run.code, 0);
    let json = run.json();
    assert_eq!(json["receipts"][0]["sha256"], sha(PDF));
    assert_eq!(json["receipts"][0]["size"], PDF.len());
}
