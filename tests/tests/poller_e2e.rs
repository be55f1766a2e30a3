//! The poller end to end on moto: READY_FOR_EXPORT records in the Brex simulator → scheduled poller runs
//! (the real adapters: Brex client, DynamoDB positions and marks, SQS) → the poster on SQS batches → one
//! voucher per record in the IFS simulator.

use std::time::Duration;

use chrono::Utc;
use shared::aws::DynamoStore;
use shared::aws::poll_state::DynamoPollState;
use shared::domain::{AccountingRecordId, Subject};
use shared::poller::{Outcome, PollReport, Poller};
use shared::ports::IdempotencyStore;
use shared::ports::{EnqueueLedger, Feed, Paging, PollState, PollStateStore};
use sims::aws::{Moto, Stack, StackSpec};
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::model::{AccountingRecord, ReviewStatus};
use sims::ifs::IfsSimConfig;
use sims::pipeline::{Pipeline, PipelineOptions};

async fn world(name: &str) -> Pipeline {
    Pipeline::start(PipelineOptions {
        name: name.into(),
        // 1 234 records through the poster: IFS's default budget would make the test wait on the limiter.
        poster_env: vec![("IFS_REQUESTS_PER_MINUTE".into(), "100000".into())],
        ifs: IfsSimConfig { requests_per_minute: 100_000, ..Default::default() },
        ..PipelineOptions::default()
    })
    .await
    .expect("pipeline")
}

async fn poller(w: &Pipeline) -> Poller {
    w.poller(&[]).await.unwrap()
}

fn clean_records(seed: u64, n: usize) -> Vec<AccountingRecord> {
    let options = GeneratorOptions { count: n, missing_gl_rate: 0.0, ..GeneratorOptions::default() };
    RecordGenerator::with_options(seed, options).batch()
}

async fn run(p: &Poller) -> PollReport {
    let report = p.run(Utc::now() + chrono::Duration::minutes(5)).await;
    assert!(!report.has_errors(), "{report:?}");
    report
}

#[tokio::test]
async fn runs_cut_short_resume_and_every_record_is_posted_once() {
    let w = world("poll-many").await;
    let records = clean_records(11, 1234);
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    w.brex.insert_records(records);
    let mut p = poller(&w).await;
    // A run that may read only 4 pages stands in for a deadline reached half way.
    p.options.max_pages_per_run = Some(4);

    let mut enqueued = 0;
    let mut runs = 0;
    loop {
        let report = run(&p).await;
        runs += 1;
        enqueued += report.enqueued();
        if report.is_complete() {
            break;
        }
        assert!(runs < 10, "paging never completes: {report:?}");
    }
    assert!(runs >= 3, "1 234 records are 13+ pages: the budget must have cut runs short ({runs} runs)");
    // Every run also validated the example mapping against the IFS simulator's chart: clean.
    let reference = run(&p).await.reference.expect("reference refresh ran");
    assert_eq!((reference.outcome, reference.errors, reference.mapping_version), (Outcome::Complete, 0, Some(1)));
    assert_eq!(enqueued, ids.len(), "every record enqueued exactly once over the resumed runs");

    // Queued but not posted yet: the next run re-reads the overlap window and enqueues nothing.
    p.options.max_pages_per_run = None;
    assert_eq!(run(&p).await.enqueued(), 0);

    // A safety bound, not a timing assertion: a loaded 2-core machine needs a while for 1 234 records.
    w.drain(Duration::from_secs(300)).await.unwrap();
    let by_ref = w.vouchers_by_reference();
    assert_eq!(by_ref.len(), ids.len(), "one voucher per record");
    for id in &ids {
        assert_eq!(by_ref.get(id).map(Vec::len), Some(1), "{id} posted once");
        assert_eq!(w.brex.record(id).unwrap().review_status, ReviewStatus::Exported, "{id} reported");
    }

    // Posted and exported: nothing to do.
    let after = run(&p).await;
    assert_eq!(after.enqueued(), 0, "{after:?}");
    assert!(after.is_complete());
}

#[tokio::test]
async fn an_update_after_the_watermark_is_picked_up_by_the_next_run() {
    let w = world("poll-update").await;
    let records = clean_records(12, 40);
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    w.brex.insert_records(records);
    // Five are still being reviewed in Brex.
    let (later, ready) = ids.split_at(5);
    w.brex.set_review_status(later, ReviewStatus::Prepare);
    let p = poller(&w).await;

    // No time left before the deadline: no page is read, nothing is lost.
    let late = p.run(Utc::now()).await;
    assert!(late.sources.iter().all(|s| s.outcome == Outcome::Paused && s.pages == 0), "{late:?}");

    assert_eq!(run(&p).await.enqueued(), ready.len());
    w.drain(Duration::from_secs(120)).await.unwrap();
    assert_eq!(run(&p).await.enqueued(), 0);

    // The bookkeeper finishes the review: updated_at moves past the watermark.
    w.brex.mark_ready_for_export(later);
    let report = run(&p).await;
    assert_eq!(report.enqueued(), later.len(), "{report:?}");
    w.drain(Duration::from_secs(120)).await.unwrap();
    let by_ref = w.vouchers_by_reference();
    assert_eq!(by_ref.len(), ids.len());
    assert!(ids.iter().all(|id| by_ref[id].len() == 1));
}

#[tokio::test]
async fn the_dynamodb_ledger_reads_the_posters_claims_and_expires_marks() {
    let stack =
        Stack::create(&Moto::get(), StackSpec { name: "poll-ledger", ..StackSpec::default() }).await.expect("stack");
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let idem = DynamoStore::new(client.clone(), &stack.table_name);
    let ledger = DynamoPollState::new(client, &stack.table_name);
    let now = Utc::now();
    let id = |s: &str| Subject::Record(AccountingRecordId::parse(s).unwrap());
    let lease = now + chrono::Duration::seconds(60);
    idem.begin(&posting("record#accr_done"), lease, now).await.unwrap();
    idem.complete(&posting("record#accr_done"), Some("v1"), now + chrono::Duration::days(30)).await.unwrap();
    idem.begin(&posting("record#accr_bad"), lease, now).await.unwrap();
    idem.fail(&posting("record#accr_bad"), "no GL", now + chrono::Duration::days(30)).await.unwrap();
    idem.begin(&posting("record#accr_busy"), lease, now).await.unwrap();
    idem.begin(&posting("record#accr_stale"), now - chrono::Duration::seconds(1), now - chrono::Duration::seconds(61))
        .await
        .unwrap();
    idem.begin(&posting("expense#expense_done"), lease, now).await.unwrap();
    idem.complete(&posting("expense#expense_done"), Some("v2"), now + chrono::Duration::days(30)).await.unwrap();
    // 150 unknown ids on top: more than one BatchGetItem.
    let mut ids: Vec<_> = ["accr_done", "accr_bad", "accr_busy", "accr_stale", "accr_new"].map(id).to_vec();
    ids.push(Subject::parse("expense_done").unwrap());
    ids.push(Subject::parse("accr_done_other").unwrap());
    ids.extend((0..150).map(|i| id(&format!("accr_x{i}"))));
    let settled = ledger.settled(&ids, now).await.unwrap();
    let mut names: Vec<_> = settled.iter().map(|i| i.to_string()).collect();
    names.sort();
    assert_eq!(names, ["accr_bad", "accr_busy", "accr_done", "expense_done"], "an expired claim needs work again");

    let until = now + chrono::Duration::hours(1);
    let fresh = [id("accr_new"), id("accr_stale")];
    assert_eq!(ledger.mark_queued(&fresh, until, now).await.unwrap().len(), 2);
    assert!(ledger.mark_queued(&fresh, until, now).await.unwrap().is_empty(), "queued already");
    // After the mark's time (a record the poster skipped), it can be queued again.
    let later = until + chrono::Duration::seconds(1);
    assert_eq!(ledger.mark_queued(&fresh[..1], later + chrono::Duration::hours(1), later).await.unwrap().len(), 1);
    ledger.unmark_queued(&fresh).await.unwrap();
    assert_eq!(ledger.mark_queued(&fresh, until, now).await.unwrap().len(), 2, "unmarked");

    let source = Feed::Records(shared::brex::model::SourceType::Card);
    assert_eq!(ledger.load(source).await.unwrap(), PollState::default());
    let state = PollState {
        watermark: Some(now),
        paging: Some(Paging {
            query_from: now - chrono::Duration::days(1),
            cursor: "c/1+".into(),
            max_seen: Some(now),
        }),
        completed_at: Some(now),
    };
    ledger.save(source, &state).await.unwrap();
    let loaded = ledger.load(source).await.unwrap();
    assert_eq!(loaded.paging.as_ref().map(|p| p.cursor.as_str()), Some("c/1+"));
    assert_eq!(loaded.watermark.map(|t| t.timestamp_micros()), Some(now.timestamp_micros()));
}

/// The idempotency key of a posting, from its table form (`record#…`, `expense#…`).
fn posting(key: &str) -> shared::ports::IdempotencyKey {
    shared::ports::IdempotencyKey::Posting(shared::domain::Subject::parse(key).unwrap())
}
