//! What is particular to the AWS adapters of `shared`, against moto through the real SDK: the table layout
//! other tools read, and how SQS answers. What every adapter of a port must do, in memory or on AWS, is the
//! contract suite's (`store_contract.rs`).

use chrono::{Duration, Utc};
use shared::aws::{DynamoStore, SqsQueue};
use shared::domain::{AccountingRecordId, Origin, Subject, WorkItem};
use shared::ports::{IdempotencyKey, IdempotencyStore, Redelivery, WorkQueue};
use sims::aws::{Moto, SqsEventSource, Stack, StackSpec};

fn record_key(id: &str) -> IdempotencyKey {
    IdempotencyKey::Posting(Subject::Record(AccountingRecordId::parse(id).unwrap()))
}

async fn stack(name: &str) -> Stack {
    Stack::create(&Moto::get(), StackSpec { name, ..StackSpec::default() }).await.expect("stack")
}

#[tokio::test]
async fn queue_errors_are_retryable_when_sqs_is_unreachable() {
    let stack = stack("gone").await;
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&stack.sdk), format!("{}-missing", stack.queue_url));
    let item = WorkItem::accounting_records(&[AccountingRecordId::parse("accr_1").unwrap()], &Origin::Poll, Utc::now());
    let err = queue.enqueue(&item).await.unwrap_err();
    assert_eq!(err.service, "sqs");
}

/// The operator CLI reads these attributes straight from the table (the layout in `shared::aws::table`).
#[tokio::test]
async fn idempotency_items_carry_the_documented_attributes() {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let stack = stack("layout").await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name);
    let now = Utc::now();
    let lease = now + Duration::seconds(60);
    store.begin(&record_key("accr_1"), lease, now).await.unwrap();
    let claimed = stack.idempotency_item("record#accr_1").await;
    assert_eq!(claimed.get("status"), Some(&S("IN_PROGRESS".into())));
    assert_eq!(claimed.get("lease_until"), Some(&N(lease.timestamp_millis().to_string())));
    // An abandoned claim does not live forever.
    assert_eq!(claimed.get("expires_at"), Some(&N((lease.timestamp() + 86_400).to_string())));

    let retain = now + Duration::days(400);
    store.hold(&record_key("accr_1"), "IFS: 401", "rotate the IFS secret", now, retain).await.unwrap();
    let held = stack.idempotency_item("record#accr_1").await;
    assert_eq!(held.get("status"), Some(&S("HELD".into())));
    assert_eq!(held.get("fix"), Some(&S("rotate the IFS secret".into())));
    assert_eq!(held.get("held_since"), Some(&S(now.to_rfc3339())));
    assert_eq!(held.get("held_times"), Some(&N("1".into())));
    assert_eq!(held.get("expires_at"), Some(&N(retain.timestamp().to_string())));
    assert!(!held.contains_key("lease_until"), "{held:?}");

    store.begin(&record_key("accr_1"), lease, now).await.unwrap();
    store.complete(&record_key("accr_1"), Some("10-2026-M-1"), retain).await.unwrap();
    let done = stack.idempotency_item("record#accr_1").await;
    assert_eq!(done.get("result"), Some(&S("10-2026-M-1".into())));
    assert_eq!(done.get("expires_at"), Some(&N(retain.timestamp().to_string())));
    assert!(!done.contains_key("held_since") && !done.contains_key("lease_until"), "{done:?}");
}

#[tokio::test]
async fn a_delayed_message_stays_away_and_a_bad_receipt_is_an_error() {
    let stack = stack("delay").await;
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&stack.sdk), &stack.queue_url);
    let source = SqsEventSource::new(&stack.sdk, &stack.queue_url);
    let item = WorkItem::accounting_records(&[AccountingRecordId::parse("accr_1").unwrap()], &Origin::Poll, Utc::now());
    queue.enqueue(&item).await.unwrap();

    // No delay: back at once (what a zero backoff would do).
    let first = source.receive(10, 1).await.unwrap().expect("the message");
    queue.delay(&first.receipts[0].1, std::time::Duration::ZERO).await.unwrap();
    let again = source.receive(10, 1).await.unwrap().expect("visible again");
    assert_eq!(again.receipts[0].0, first.receipts[0].0);
    // A held message's backoff keeps it away.
    queue.delay(&again.receipts[0].1, std::time::Duration::from_secs(600)).await.unwrap();
    assert!(source.receive(10, 1).await.unwrap().is_none(), "hidden for the delay");

    let err = queue.delay("not-a-receipt-handle", std::time::Duration::from_secs(30)).await.unwrap_err();
    assert_eq!((err.service, err.operation), ("sqs", "ChangeMessageVisibility"));
}
