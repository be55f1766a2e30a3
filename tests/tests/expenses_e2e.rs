//! Approved expenses end to end on moto: the Brex simulator's `/v1/expenses` → the poller (POLL_SOURCES
//! =expenses) → SQS → the poster → one voucher per expense in the IFS simulator, accounts from the example
//! mapping's category rules. With both sources on, the same spend (an expense and the accounting record whose
//! `source_id` is that expense) is posted once.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use shared::audit::AuditOutcome;
use shared::aws::DynamoStore;
use shared::domain::Subject;
use shared::poller::{PollReport, Poller};
use shared::ports::AuditTrail;
use sims::brex::ExportOutcome;
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::brex::model::{AccountingRecord, Expense, ReviewStatus};
use sims::brex::webhook::{HeaderFamily, WebhookDelivery};
use sims::ifs::IfsSimConfig;
use sims::ifs::model::Voucher;
use sims::pipeline::{Pipeline, PipelineOptions};

async fn world(name: &str) -> Pipeline {
    Pipeline::start(PipelineOptions {
        name: name.into(),
        poster_env: vec![("IFS_REQUESTS_PER_MINUTE".into(), "100000".into())],
        ifs: IfsSimConfig { requests_per_minute: 100_000, ..Default::default() },
        ..PipelineOptions::default()
    })
    .await
    .expect("pipeline")
}

async fn poller(w: &Pipeline, sources: &str) -> Poller {
    w.poller(&[("POLL_SOURCES", sources)]).await.unwrap()
}

async fn run(p: &Poller) -> PollReport {
    let report = p.run(Utc::now() + chrono::Duration::minutes(5)).await;
    assert!(!report.has_errors(), "{report:?}");
    report
}

/// US-entity spend (expenses carry no entity field, so they book in the default company).
fn spend(seed: u64, n: usize) -> Vec<(AccountingRecord, Expense)> {
    let options = GeneratorOptions {
        count: n,
        refund_rate: 0.2,
        foreign_rate: 0.25,
        reimbursement_rate: 0.15,
        missing_gl_rate: 0.0,
        entity_rate: 0.0,
        ..GeneratorOptions::default()
    };
    RecordGenerator::with_options(seed, options).pairs(n)
}

/// The example mapping's category → account rules.
fn account_for(category: &str) -> &'static str {
    match category {
        "AIRLINE_EXPENSES" | "LODGING" | "TAXI_AND_RIDESHARE" | "CAR_RENTAL_EXPENSES" => "6500",
        "RESTAURANTS" => "6510",
        c if c.starts_with("SOFTWARE_") => "6600",
        "OFFICE_SUPPLIES" => "6700",
        other => panic!("no rule for category {other}"),
    }
}

fn cents(amount: i64) -> Decimal {
    Decimal::new(amount.abs(), 2)
}

#[tokio::test]
async fn approved_expenses_become_vouchers_including_a_refund_and_a_foreign_purchase() {
    let w = world("expenses-only").await;
    let expenses: Vec<Expense> = spend(31, 30)
        .into_iter()
        .map(|(_, e)| e)
        // Shipping and rent book to 7500 like the records do; keep the category table above short.
        .filter(|e| !matches!(e.category.as_deref(), Some("SHIPPING" | "RENT")))
        .collect();
    let billed = |e: &Expense| e.billing_amount.clone().unwrap();
    assert!(expenses.iter().any(|e| billed(e).amount < 0), "the sample holds a refund");
    assert!(
        expenses.iter().any(|e| e.original_amount.as_ref().unwrap().currency != billed(e).currency),
        "the sample holds a foreign-currency purchase"
    );
    w.brex.insert_expenses(expenses.clone());

    let p = poller(&w, "expenses").await;
    let report = run(&p).await;
    assert_eq!(report.enqueued(), expenses.len(), "{report:?}");
    w.drain(Duration::from_secs(180)).await.unwrap();

    let by_ref = w.vouchers_by_reference();
    assert_eq!(by_ref.len(), expenses.len(), "one voucher per expense, referenced by the expense id");
    for e in &expenses {
        let vouchers = &by_ref[&e.id];
        assert_eq!(vouchers.len(), 1, "{} posted once", e.id);
        let v: &Voucher = &vouchers[0];
        assert_eq!(v.company, "10");
        let money = billed(e);
        let amount = cents(money.amount);
        let refund = money.amount < 0;
        let account = account_for(e.category.as_deref().unwrap());
        let expense_row = v.rows.iter().find(|r| r.account == account).unwrap_or_else(|| panic!("{}: {v:?}", e.id));
        let funding = v.rows.iter().find(|r| r.account != account).unwrap();
        let (expense_amount, funding_amount) = if refund {
            (expense_row.currency_credit_amount, funding.currency_debet_amount)
        } else {
            (expense_row.currency_debet_amount, funding.currency_credit_amount)
        };
        assert_eq!((expense_amount, funding_amount), (Some(amount), Some(amount)), "{}: exact cents", e.id);
        assert_eq!(expense_row.currency_code, money.currency);
        let payable = if e.expense_type == "REIMBURSEMENT" { "2420" } else { "2410" };
        assert_eq!(funding.account, payable, "{}", e.id);
        let dept_code = match e.department.as_ref().map(|d| d.name.as_str()) {
            Some("Sales") => "100",
            Some("Engineering") => "200",
            Some("Marketing") => "300",
            Some("Finance") => "400",
            Some("Operations") => "500",
            other => panic!("department {other:?}"),
        };
        assert_eq!(expense_row.code_b.as_deref(), Some(dept_code), "{}: cost centre from the department", e.id);
        let original = e.original_amount.clone().unwrap();
        if original.currency != money.currency {
            let text = expense_row.text.as_deref().unwrap_or_default();
            assert!(text.contains("(orig ") && text.contains(&original.currency), "{}: {text}", e.id);
        }
        assert!(v.rows.iter().all(|r| r.reference_number.as_deref() == Some(e.id.as_str())));
    }

    // Posted: the next run re-reads its overlap window and enqueues nothing.
    assert_eq!(run(&p).await.enqueued(), 0);
}

#[tokio::test]
async fn with_both_sources_on_each_spend_is_posted_once() {
    let w = world("expenses-both").await;
    let pairs: Vec<(AccountingRecord, Expense)> = spend(32, 24)
        .into_iter()
        .filter(|(_, e)| !matches!(e.category.as_deref(), Some("SHIPPING" | "RENT")))
        .collect();
    let third = pairs.len() / 3;
    let (a, rest) = pairs.split_at(third);
    let (b, c) = rest.split_at(third);
    let records = |group: &[(AccountingRecord, Expense)]| group.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>();
    let expenses = |group: &[(AccountingRecord, Expense)]| group.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>();
    w.brex.insert_records(pairs.iter().map(|(r, _)| r.clone()).collect());

    // A: the records arrive by webhook and post first.
    let secrets = w.brex.webhook_secret_strings();
    let a_ids: Vec<String> = records(a).iter().map(|r| r.id.clone()).collect();
    let body = w.brex.ready_for_export_body(&a_ids);
    let delivery = WebhookDelivery::new("msg_both_1", Utc::now().timestamp(), body, &secrets, HeaderFamily::Webhook);
    assert_eq!(w.deliver_webhook(delivery).await, 200);
    w.drain(Duration::from_secs(120)).await.unwrap();

    // Then A's and B's expenses are approved and polled: A's are posted already, B's post as expenses.
    w.brex.insert_expenses([expenses(a), expenses(b)].concat());
    run(&poller(&w, "expenses").await).await;
    w.drain(Duration::from_secs(120)).await.unwrap();

    // Then C's expenses; one poll of both feeds brings B's and C's records and C's expenses together, so a
    // record and its expense meet in the same poster batches.
    // Approved just now: their updated_at is past the expense feed's watermark.
    let approved_now = Utc::now();
    w.brex.insert_expenses(expenses(c).into_iter().map(|e| Expense { updated_at: approved_now, ..e }).collect());
    let both = poller(&w, "accounting_records,expenses").await;
    run(&both).await;
    w.drain(Duration::from_secs(180)).await.unwrap();
    assert_eq!(run(&both).await.enqueued(), 0, "settled: nothing enqueued again");

    let by_ref = w.vouchers_by_reference();
    assert_eq!(w.ifs.vouchers().len(), pairs.len(), "one voucher per spend, not per source");
    let mut posted_as: BTreeMap<&str, usize> = BTreeMap::new();
    for (record, expense) in &pairs {
        let as_record = by_ref.get(&record.id).map_or(0, Vec::len);
        let as_expense = by_ref.get(&expense.id).map_or(0, Vec::len);
        assert_eq!(as_record + as_expense, 1, "{} / {}: posted once", record.id, expense.id);
        *posted_as.entry(if as_record == 1 { "record" } else { "expense" }).or_default() += 1;

        // Brex shows every record exported, pointing at the one voucher, whichever source posted it.
        assert_eq!(w.brex.record(&record.id).unwrap().review_status, ReviewStatus::Exported, "{}", record.id);
        let reported = w.brex.export_result(&record.id).unwrap();
        let ExportOutcome::Success { reference_id: Some(key), .. } = reported.outcome else {
            panic!("{}: {reported:?}", record.id)
        };
        let voucher = &by_ref.get(&record.id).or(by_ref.get(&expense.id)).unwrap()[0];
        assert!(key.contains(&voucher.voucher_no.to_string()), "{}: reported {key}, voucher {voucher:?}", record.id);
    }
    println!("posted as: {posted_as:?}");

    // The audit trail of every subject ends with the voucher, and says how it arrived.
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&w.stack.sdk), &w.stack.table_name);
    let mut contended = 0;
    for (record, expense) in &pairs {
        for subject in [Subject::parse(&record.id).unwrap(), Subject::parse(&expense.id).unwrap()] {
            let trail = store.read(&subject).await.unwrap();
            let last = trail.last().unwrap_or_else(|| panic!("{subject}: no audit trail"));
            assert!(matches!(last.outcome, AuditOutcome::Posted | AuditOutcome::AlreadyPosted), "{subject}: {trail:?}");
            assert!(last.voucher.is_some() && last.origin.is_some() && last.mapping_version == Some(1), "{last:?}");
            contended += trail.iter().filter(|e| e.reason.as_deref().is_some_and(|r| r.contains("same spend"))).count();
        }
    }
    println!("retries while the same spend was being posted under the other id: {contended}");
    for (record, _) in a {
        assert!(by_ref.contains_key(&record.id), "A posted as records");
    }
    for (record, expense) in b {
        assert!(by_ref.contains_key(&expense.id) && !by_ref.contains_key(&record.id), "B posted as expenses");
    }
}
