//! The webhook path end to end: the Brex simulator signs and delivers (retrying like Svix) to the webhook
//! handler, invoked with the API Gateway HTTP API v2 event it would really get, on moto through the real SDK.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shared::config::WebhookConfig;
use shared::domain::WorkItem;
use shared::lambda::build;
use shared::webhook::WebhookService;
use sims::aws::{Moto, Stack, StackSpec};
use sims::brex::webhook::{HeaderFamily, WebhookDelivery};
use sims::brex::{BrexSim, BrexSimConfig};

struct World {
    stack: Stack,
    brex: BrexSim,
    service: Arc<WebhookService>,
}

fn config(stack: &Stack, brex: &BrexSim, queue_url: &str) -> WebhookConfig {
    let env: HashMap<String, String> = [
        ("TABLE_NAME", stack.table_name.clone()),
        ("BREX_SECRET_ID", stack.brex_secret_id.clone()),
        ("BREX_API_URL", brex.base_url()),
        ("QUEUE_URL", queue_url.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    WebhookConfig::from_env(&env).expect("config")
}

async fn world(name: &str) -> World {
    let stack = Stack::create(&Moto::get(), StackSpec { name, ..StackSpec::default() }).await.expect("stack");
    let brex = BrexSim::start(BrexSimConfig::default()).await.expect("brex sim");
    let service =
        Arc::new(build::webhook_service(&config(&stack, &brex, &stack.queue_url), &stack.sdk).await.expect("service"));
    World { stack, brex, service }
}

async fn invoke(service: &WebhookService, delivery: WebhookDelivery) -> u16 {
    sims::pipeline::invoke_webhook(service, delivery).await
}

fn transport(
    service: Arc<WebhookService>,
) -> impl Fn(WebhookDelivery) -> std::pin::Pin<Box<dyn Future<Output = u16> + Send>> + Send + Sync {
    move |delivery| {
        let service = service.clone();
        Box::pin(async move { invoke(&service, delivery).await })
    }
}

async fn queued_ids(stack: &Stack, queue_url: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for body in stack.drain(queue_url).await {
        match serde_json::from_str::<WorkItem>(&body).expect("work item") {
            WorkItem::AccountingRecords { ids: batch, .. } => ids.extend(batch.into_iter().map(|i| i.to_string())),
            other => panic!("unexpected {other:?}"),
        }
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn signed_event_puts_the_record_ids_on_the_queue_once_per_webhook_id() {
    let w = world("wh-happy").await;
    let ids = w.brex.generate_records(120);
    let sender = w.brex.webhook_sender().time_scale(0.0);
    let t = transport(w.service.clone());
    let body = w.brex.ready_for_export_body(&ids);
    for _ in 0..3 {
        let report = sender.send_with_id(&t, "msg_same_delivery", body.clone()).await;
        assert!(report.delivered, "{report:?}");
        assert_eq!(report.attempts.len(), 1);
    }
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(queued_ids(&w.stack, &w.stack.queue_url).await, expected, "three deliveries, one enqueue");

    // The svix-* header family is accepted too, and a new webhook id is new work.
    let svix = w.brex.webhook_sender().time_scale(0.0).family(HeaderFamily::Svix);
    assert!(svix.send(&t, w.brex.ready_for_export_body(&ids[..2])).await.delivered);
    assert_eq!(queued_ids(&w.stack, &w.stack.queue_url).await.len(), 2);
}

#[tokio::test]
async fn messages_are_shaped_for_500_id_brex_calls() {
    let w = world("wh-shape").await;
    let ids = w.brex.generate_records(500);
    let t = transport(w.service.clone());
    assert!(w.brex.webhook_sender().time_scale(0.0).send(&t, w.brex.ready_for_export_body(&ids)).await.delivered);
    let bodies = w.stack.drain(&w.stack.queue_url).await;
    assert_eq!(bodies.len(), 10, "500 ids → 10 messages of 50 = one poster batch = one Brex call");
    for body in bodies {
        let item: WorkItem = serde_json::from_str(&body).unwrap();
        assert_eq!(item.len(), WorkItem::MAX_IDS);
    }
}

#[tokio::test]
async fn hostile_deliveries_get_the_contract_status_and_enqueue_nothing() {
    let w = world("wh-hostile").await;
    let ids = w.brex.generate_records(3);
    let secrets = w.brex.webhook_secret_strings();
    let now = chrono::Utc::now().timestamp();
    let good_body = w.brex.ready_for_export_body(&ids);
    let signed = |body: &[u8], ts: i64| {
        WebhookDelivery::new(&format!("msg_{ts}_{}", body.len()), ts, body.to_vec(), &secrets, HeaderFamily::Webhook)
    };
    let without = |name: &str| {
        let mut d = signed(&good_body, now);
        d.headers.retain(|(k, _)| k != name);
        d
    };
    let mut tampered = signed(&good_body, now);
    tampered.body = String::from_utf8(good_body.clone()).unwrap().replace("accr_", "accx_").into_bytes();
    let reserialised = {
        let mut d = signed(&good_body, now);
        let value: serde_json::Value = serde_json::from_slice(&good_body).unwrap();
        d.body = serde_json::to_vec_pretty(&value).unwrap();
        d
    };
    let wrong_secret = WebhookDelivery::new(
        "msg_wrong",
        now,
        good_body.clone(),
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()],
        HeaderFamily::Webhook,
    );
    let mut oversized_body = good_body.clone();
    oversized_body.extend(std::iter::repeat_n(b' ', 256 * 1024));
    let cases: Vec<(&str, WebhookDelivery, u16)> = vec![
        ("tampered body", tampered, 401),
        ("re-serialised body", reserialised, 401),
        ("wrong secret", wrong_secret, 401),
        ("missing webhook-id", without("webhook-id"), 401),
        ("missing webhook-timestamp", without("webhook-timestamp"), 401),
        ("missing webhook-signature", without("webhook-signature"), 401),
        // Well outside the 5-minute tolerance: the cases run seconds after `now` was taken on a loaded machine.
        ("stale timestamp", signed(&good_body, now - 900), 401),
        ("future timestamp", signed(&good_body, now + 900), 401),
        ("oversized", signed(&oversized_body, now), 413),
        ("not JSON", signed(b"{not json", now), 400),
        (
            "invalid id",
            signed(br#"{"event_type":"ACCOUNTING_RECORD_READY_FOR_EXPORT","accountingRecordIds":["accr_'1"]}"#, now),
            400,
        ),
        (
            "empty id list",
            signed(br#"{"event_type":"ACCOUNTING_RECORD_READY_FOR_EXPORT","accountingRecordIds":[]}"#, now),
            400,
        ),
        ("other event type", signed(br#"{"event_type":"EXPENSE_PAYMENT_UPDATED","expense_id":"e_1"}"#, now), 200),
        ("non-UTF-8 body", signed(&[0xff, 0xfe, 0x00, 0x7b], now), 400),
    ];
    for (name, delivery, expected) in cases {
        assert_eq!(invoke(&w.service, delivery).await, expected, "{name}");
    }
    assert!(queued_ids(&w.stack, &w.stack.queue_url).await.is_empty(), "nothing hostile reached the queue");
}

#[tokio::test]
async fn rotation_with_two_signatures_is_accepted() {
    let w = world("wh-rotate").await;
    let ids = w.brex.generate_records(2);
    let t = transport(w.service.clone());
    assert!(w.brex.webhook_sender().time_scale(0.0).send(&t, w.brex.ready_for_export_body(&ids[..1])).await.delivered);
    // The handler cached the old secret; the rotation adds a new one and signs with both.
    w.brex.rotate_webhook_secret();
    assert!(w.brex.webhook_sender().time_scale(0.0).send(&t, w.brex.ready_for_export_body(&ids[1..])).await.delivered);
    // After the old one is revoked, only the new signature is sent: the handler must re-fetch (once) to accept it.
    w.brex.finish_rotation();
    let report = w.brex.webhook_sender().time_scale(0.0).send(&t, w.brex.ready_for_export_body(&ids)).await;
    assert!(report.delivered, "{report:?}");
    assert_eq!(queued_ids(&w.stack, &w.stack.queue_url).await.len(), 4);
}

#[tokio::test]
async fn sqs_outage_answers_5xx_and_the_brex_retry_succeeds() {
    let moto = Moto::get();
    let stack = Stack::create(&moto, StackSpec { name: "wh-outage", ..StackSpec::default() }).await.unwrap();
    let brex = BrexSim::start(BrexSimConfig::default()).await.unwrap();
    // The queue the function is configured with does not exist yet: every send fails like an outage.
    let queue_name = format!("outage-{}", uuid::Uuid::new_v4().simple());
    let queue_url = format!("{}/123456789012/{queue_name}", moto.endpoint());
    let service = Arc::new(build::webhook_service(&config(&stack, &brex, &queue_url), &stack.sdk).await.unwrap());
    let ids = brex.generate_records(5);

    let attempts = Arc::new(AtomicUsize::new(0));
    let sdk = stack.sdk.clone();
    let counted = {
        let attempts = attempts.clone();
        move |delivery: WebhookDelivery| {
            let (service, sdk, attempts, queue_name) =
                (service.clone(), sdk.clone(), attempts.clone(), queue_name.clone());
            Box::pin(async move {
                if attempts.fetch_add(1, Ordering::SeqCst) == 2 {
                    // SQS is back before the third attempt.
                    aws_sdk_sqs::Client::new(&sdk).create_queue().queue_name(&queue_name).send().await.unwrap();
                }
                invoke(&service, delivery).await
            }) as std::pin::Pin<Box<dyn Future<Output = u16> + Send>>
        }
    };
    let report = brex.webhook_sender().time_scale(0.0002).send(&counted, brex.ready_for_export_body(&ids)).await;
    let statuses: Vec<u16> = report.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![503, 503, 200], "{report:?}");
    let got: BTreeSet<String> = queued_ids(&stack, &queue_url).await.into_iter().collect();
    assert_eq!(got, ids.into_iter().collect::<BTreeSet<_>>());
}

/// As deployed, the service is built on the first request: a Brex secret that cannot be read yet answers
/// 503 (Brex retries), nothing is queued, and once the secret exists the retry is accepted.
#[tokio::test]
async fn a_webhook_that_cannot_start_answers_503_until_it_can() {
    use shared::lambda::start::Lazy;
    let stack = Stack::create(&Moto::get(), StackSpec { name: "wh-lazy", ..StackSpec::default() }).await.unwrap();
    let brex = BrexSim::start(BrexSimConfig::default()).await.unwrap();
    let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let brex_secret =
        secrets.get_secret_value().secret_id(&stack.brex_secret_id).send().await.unwrap().secret_string.unwrap();
    let missing = format!("brex-later-{}", uuid::Uuid::new_v4().simple());
    let mut config = config(&stack, &brex, &stack.queue_url);
    config.common.brex_secret_id = missing.clone();
    let function = Arc::new(Lazy::<WebhookService>::with_sdk(config, stack.sdk.clone()));
    let ids = brex.generate_records(3);

    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = {
        let attempts = attempts.clone();
        move |delivery: WebhookDelivery| {
            let (function, secrets, attempts, missing, brex_secret) =
                (function.clone(), secrets.clone(), attempts.clone(), missing.clone(), brex_secret.clone());
            Box::pin(async move {
                if attempts.fetch_add(1, Ordering::SeqCst) == 2 {
                    secrets.create_secret().name(&missing).secret_string(&brex_secret).send().await.unwrap();
                }
                sims::pipeline::invoke_webhook_function(&function, delivery).await
            }) as std::pin::Pin<Box<dyn Future<Output = u16> + Send>>
        }
    };
    let report = brex.webhook_sender().time_scale(0.0002).send(&counted, brex.ready_for_export_body(&ids)).await;
    let statuses: Vec<u16> = report.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![503, 503, 200], "{report:?}");
    let got: BTreeSet<String> = queued_ids(&stack, &stack.queue_url).await.into_iter().collect();
    assert_eq!(got, ids.into_iter().collect::<BTreeSet<_>>());
}
