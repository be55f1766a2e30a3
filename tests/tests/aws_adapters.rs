//! The AWS adapters of `shared` against moto, through the real SDK.

use chrono::{Duration, Utc};
use shared::aws::{DynamoStore, SecretsManagerStore, SqsQueue};
use shared::domain::{AccountingRecordId, Origin, Secret, Subject, WebhookId, WorkItem};
use shared::ports::{Begin, IdempotencyKey, IdempotencyStore, LeaseStore, SecretStore, WorkQueue};
use sims::aws::{Moto, Stack, StackSpec};

fn record_key(id: &str) -> IdempotencyKey {
    IdempotencyKey::Posting(Subject::Record(AccountingRecordId::parse(id).unwrap()))
}

async fn stack(name: &str) -> Stack {
    Stack::create(&Moto::get(), StackSpec { name, ..StackSpec::default() }).await.expect("stack")
}

#[tokio::test]
async fn idempotency_follows_powertools_semantics() {
    let stack = stack("idem").await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name);
    let now = Utc::now();
    let lease = now + Duration::seconds(60);

    assert_eq!(store.begin(&record_key("accr_1"), lease, now).await.unwrap(), Begin::Started);
    match store.begin(&record_key("accr_1"), lease, now).await.unwrap() {
        Begin::InProgress { until } => assert_eq!(until.timestamp_millis(), lease.timestamp_millis()),
        other => panic!("expected in progress, got {other:?}"),
    }
    // An expired lease is taken over.
    let later = lease + Duration::seconds(1);
    assert_eq!(store.begin(&record_key("accr_1"), later + Duration::seconds(60), later).await.unwrap(), Begin::Started);

    store.complete(&record_key("accr_1"), Some("10-2026-M-1"), now + Duration::days(30)).await.unwrap();
    assert_eq!(
        store.begin(&record_key("accr_1"), lease, now).await.unwrap(),
        Begin::Completed { result: Some("10-2026-M-1".into()) }
    );
    // Release never removes a completed record.
    IdempotencyStore::release(&store, &record_key("accr_1")).await.unwrap();
    assert!(matches!(store.begin(&record_key("accr_1"), lease, now).await.unwrap(), Begin::Completed { .. }));

    assert_eq!(store.begin(&record_key("accr_2"), lease, now).await.unwrap(), Begin::Started);
    IdempotencyStore::release(&store, &record_key("accr_2")).await.unwrap();
    assert_eq!(
        store.begin(&record_key("accr_2"), lease, now).await.unwrap(),
        Begin::Started,
        "released claims restart"
    );
    store.fail(&record_key("accr_2"), "no GL account", now + Duration::days(30)).await.unwrap();
    assert_eq!(
        store.begin(&record_key("accr_2"), lease, now).await.unwrap(),
        Begin::Failed { reason: "no GL account".into() }
    );
}

#[tokio::test]
async fn concurrent_begins_have_exactly_one_winner() {
    let stack = stack("race").await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name);
    let now = Utc::now();
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        async move {
            store
                .begin(&IdempotencyKey::Delivery(WebhookId::parse("msg_1").unwrap()), now + Duration::seconds(30), now)
                .await
                .unwrap()
        }
    });
    let results = futures::future::join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| **r == Begin::Started).count(), 1, "{results:?}");
}

#[tokio::test]
async fn leases_exclude_other_holders_until_expiry() {
    let stack = stack("lease").await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name);
    let now = Utc::now();
    let until = now + Duration::seconds(10);
    assert!(store.try_acquire("refresh", "a", until, now).await.unwrap());
    assert!(!store.try_acquire("refresh", "b", until, now).await.unwrap());
    assert!(store.try_acquire("refresh", "a", until, now).await.unwrap(), "holder may extend");
    assert!(
        store.try_acquire("refresh", "b", until + Duration::seconds(10), until + Duration::seconds(1)).await.unwrap()
    );
    LeaseStore::release(&store, "refresh", "a").await.unwrap();
    assert!(!store.try_acquire("refresh", "c", until, now).await.unwrap(), "a's release must not free b's lease");
    LeaseStore::release(&store, "refresh", "b").await.unwrap();
    assert!(store.try_acquire("refresh", "c", until, now).await.unwrap());
}

#[tokio::test]
async fn mapping_document_is_versioned() {
    let stack = stack("mapping").await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name);
    assert!(store.load_mapping().await.unwrap().is_none());
    assert_eq!(store.store_mapping("[ifs]\ncompany = \"10\"\n", None).await.unwrap(), 1);
    assert!(store.store_mapping("x", None).await.is_err(), "creating twice must fail");
    assert_eq!(store.store_mapping("[ifs]\ncompany = \"20\"\n", Some(1)).await.unwrap(), 2);
    assert!(store.store_mapping("stale", Some(1)).await.is_err(), "stale version must fail");
    let loaded = store.load_mapping().await.unwrap().unwrap();
    assert_eq!((loaded.version, loaded.document.as_str()), (2, "[ifs]\ncompany = \"20\"\n"));
}

#[tokio::test]
async fn queue_receives_every_item_in_batches() {
    let stack = stack("queue").await;
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&stack.sdk), &stack.queue_url);
    let ids: Vec<_> = (0..1234).map(|i| AccountingRecordId::parse(&format!("accr_{i}")).unwrap()).collect();
    let items = WorkItem::accounting_records(&ids, &Origin::Poll, Utc::now());
    assert_eq!(items.len(), 25);
    queue.enqueue(&items).await.unwrap();
    let bodies = stack.drain(&stack.queue_url).await;
    let mut seen: Vec<String> = bodies
        .iter()
        .flat_map(|b| match serde_json::from_str::<WorkItem>(b).unwrap() {
            WorkItem::AccountingRecords { ids, .. } => ids.into_iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            WorkItem::Expenses { .. } => vec![],
        })
        .collect();
    seen.sort();
    let mut expected: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn queue_errors_are_retryable_when_sqs_is_unreachable() {
    let stack = stack("gone").await;
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&stack.sdk), format!("{}-missing", stack.queue_url));
    let item = WorkItem::accounting_records(&[AccountingRecordId::parse("accr_1").unwrap()], &Origin::Poll, Utc::now());
    let err = queue.enqueue(&item).await.unwrap_err();
    assert_eq!(err.service, "sqs");
}

#[tokio::test]
async fn secrets_round_trip() {
    let stack = stack("secrets").await;
    let store = SecretsManagerStore::new(aws_sdk_secretsmanager::Client::new(&stack.sdk));
    assert_eq!(store.get_secret(&stack.brex_secret_id).await.unwrap().expose(), r#"{"token":"bxt_sim_user_token"}"#);
    store.put_secret(&stack.brex_secret_id, &Secret::new(r#"{"token":"bxt_rotated"}"#)).await.unwrap();
    assert_eq!(store.get_secret(&stack.brex_secret_id).await.unwrap().expose(), r#"{"token":"bxt_rotated"}"#);
    let missing = store.get_secret("no-such-secret").await.unwrap_err();
    assert!(!shared::error::Classify::is_retryable(&missing), "unknown secret is permanent: {missing}");
}

#[tokio::test]
async fn spend_claims_keep_every_holder_so_a_crashed_post_is_still_found() {
    use shared::domain::{ExpenseId, ReferenceNumber};
    use shared::ports::{SpendClaim, SpendClaims};
    let stack = stack("spend").await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name);
    let spend = ExpenseId::parse("expense_1").unwrap();
    let as_record = ReferenceNumber::parse("accr_1").unwrap();
    let as_expense = ReferenceNumber::parse("expense_1").unwrap();
    let now = Utc::now();
    let lease = now + Duration::seconds(60);

    assert_eq!(
        store.claim(&spend, &as_record, lease, now).await.unwrap(),
        SpendClaim::Claimed { holders: vec![as_record.clone()] }
    );
    match store.claim(&spend, &as_expense, lease, now).await.unwrap() {
        SpendClaim::Busy { by, until } => {
            assert_eq!((by, until.timestamp_millis()), (as_record.clone(), lease.timestamp_millis()))
        }
        other => panic!("expected busy, got {other:?}"),
    }
    // The record's poster died (maybe after IFS committed): once its lease is over, the expense takes over
    // and learns whose voucher to look for.
    let later = lease + Duration::seconds(1);
    assert_eq!(
        store.claim(&spend, &as_expense, later + Duration::seconds(60), later).await.unwrap(),
        SpendClaim::Claimed { holders: vec![as_record.clone(), as_expense.clone()] }
    );
    // Releasing someone else's claim does nothing; the holder's own release keeps the history.
    SpendClaims::release(&store, &spend, &as_record).await.unwrap();
    assert!(matches!(store.claim(&spend, &as_record, lease, later).await.unwrap(), SpendClaim::Busy { .. }));
    SpendClaims::release(&store, &spend, &as_expense).await.unwrap();
    assert_eq!(
        store.claim(&spend, &as_record, later + Duration::seconds(60), later).await.unwrap(),
        SpendClaim::Claimed { holders: vec![as_record.clone(), as_expense.clone()] }
    );
    store.posted(&spend, &as_record, "10-2026-M-7", now + Duration::days(30)).await.unwrap();
    assert_eq!(
        store.claim(&spend, &as_expense, later, later).await.unwrap(),
        SpendClaim::Posted { by: as_record, voucher: "10-2026-M-7".into() }
    );
}

#[tokio::test]
async fn the_audit_trail_reads_back_in_order() {
    use shared::audit::{AuditEntry, AuditOutcome, BrexReport};
    use shared::domain::Subject;
    use shared::ports::AuditTrail;
    let stack = stack("audit").await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name);
    let subject = Subject::parse("accr_9").unwrap();
    let other = Subject::parse("expense_9").unwrap();
    let t0 = Utc::now();
    let mut retry = AuditEntry::new(t0, AuditOutcome::Retry);
    retry.reason = Some("IFS: 503".into());
    retry.origin = Some(Origin::Poll);
    let mut posted = AuditEntry::new(t0 + Duration::seconds(5), AuditOutcome::Posted);
    posted.voucher = Some("10-2026-M-9".into());
    posted.mapping_version = Some(3);
    posted.reported_to_brex = Some(BrexReport::Exported { voucher: "10-2026-M-9".into() });
    // 30 entries: more than one BatchWriteItem.
    let mut entries = vec![(subject.clone(), retry.clone()), (subject.clone(), posted.clone())];
    entries.extend(
        (0..28).map(|i| (other.clone(), AuditEntry::new(t0 + Duration::milliseconds(i), AuditOutcome::Skipped))),
    );
    store.append(&entries, t0 + Duration::days(30)).await.unwrap();
    assert_eq!(store.read(&subject).await.unwrap(), vec![retry, posted]);
    assert_eq!(store.read(&other).await.unwrap().len(), 28);
    assert!(store.read(&Subject::parse("accr_none").unwrap()).await.unwrap().is_empty());
}
