//! The IFS request budget shared through DynamoDB (moto): several clients, each with its own
//! `DynamoBudget` on the same table, stay within the simulator's limit (no 429) while using the budget.
//! How much of it they use is a benchmark figure (`infra/scripts/bench.sh`); here only that they do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::aws::DynamoStore;
use shared::aws::budget::DynamoBudget;
use shared::domain::{IfsCredentials, Secret};
use shared::ifs::{IfsClient, IfsClientConfig};
use shared::retry::RetryPolicy;
use sims::aws::{Moto, Stack, StackSpec};
use sims::ifs::{IfsSim, IfsSimConfig};

#[tokio::test]
async fn four_clients_sharing_the_dynamodb_budget_never_see_a_429() {
    const LIMIT: u32 = 60;
    let time_scale = 0.05; // a 3 s "minute"
    let window = Duration::from_secs_f64(60.0 * time_scale);
    let sim = IfsSim::start(IfsSimConfig { requests_per_minute: LIMIT, time_scale, ..IfsSimConfig::default() })
        .await
        .unwrap();
    let stack = Stack::create(&Moto::get(), StackSpec { name: "ifs-budget", ..StackSpec::default() }).await.unwrap();
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name);

    let clients: Vec<IfsClient> = (0..4)
        .map(|_| {
            let (client_id, secret) = sim.client().unwrap();
            let mut config = IfsClientConfig::new(
                sim.base_url(),
                sim.realm(),
                IfsCredentials { client_id, client_secret: Secret::new(secret) },
            );
            // A 429 would be retried and so hidden from the caller: fail on the first instead.
            config.retry = RetryPolicy { max_attempts: 1, ..RetryPolicy::ifs() };
            let budget = DynamoBudget::new(store.clone(), "ifs", LIMIT, window, window / 60, 4);
            IfsClient::with_budget(config, reqwest::Client::new(), Arc::new(budget)).unwrap()
        })
        .collect();

    let run_for = window * 2 + window / 2;
    let start = Instant::now();
    let tasks = clients.into_iter().map(|client| async move {
        let mut ok = 0u32;
        while start.elapsed() < run_for {
            // An uncached read: every call is one request.
            client
                .transport()
                .get_entity::<serde_json::Value>("AccountsHandling.svc/AccountSet(Company='10',Account='6500')")
                .await
                .expect("no request is refused");
            ok += 1;
        }
        ok
    });
    let done: u32 = futures::future::join_all(tasks).await.into_iter().sum();
    let elapsed = start.elapsed();

    let c = sim.counters();
    assert_eq!(c.status_429, 0, "{c:?}");
    let allowed = f64::from(LIMIT) * elapsed.as_secs_f64() / window.as_secs_f64();
    let used = c.total_requests as f64;
    assert!(used <= allowed + f64::from(LIMIT), "never beyond the budget: {used} of {allowed:.0}");
    assert!(used >= allowed * 0.5, "the budget is used, not idled away: {used} of {allowed:.0}");
    assert!(u64::from(done) + 4 >= c.total_requests, "token fetches and reads: {done} {c:?}");
}

/// The functions as deployed (built by `shared::lambda::build`) draw every IFS request from the shared
/// budget: the slices' counters add up to exactly what the simulator served.
#[tokio::test]
async fn the_built_poster_and_poller_draw_every_ifs_request_from_the_table() {
    use shared::domain::{Origin, WebhookId};
    use sims::brex::generator::{GeneratorOptions, RecordGenerator};
    use sims::pipeline::{Pipeline, PipelineOptions};

    let p = Pipeline::start(PipelineOptions { name: "ifs-budget-wired".into(), ..PipelineOptions::default() })
        .await
        .unwrap();
    let records =
        RecordGenerator::with_options(11, GeneratorOptions { count: 12, missing_gl_rate: 0.0, ..Default::default() })
            .batch();
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    p.brex.insert_records(records);
    p.enqueue(&ids, &Origin::Webhook { webhook_id: WebhookId::parse("msg_budget").unwrap() }).await.unwrap();
    p.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(p.vouchers_by_reference().len(), ids.len());
    // The poller's reference refresh reads IFS through the same budget.
    let report = p.poller(&[]).await.unwrap().run(chrono::Utc::now() + chrono::Duration::seconds(60)).await;
    assert!(report.reference.is_some(), "{report:?}");

    let items = aws_sdk_dynamodb::Client::new(&p.stack.sdk)
        .query()
        .table_name(&p.stack.table_name)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S("budget#ifs".into()))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let drawn: u64 = items.iter().map(|item| item["used"].as_n().map(|n| n.parse::<u64>().unwrap()).unwrap()).sum();
    let served = p.ifs.counters().total_requests;
    assert!(served > 0);
    assert_eq!(drawn, served, "every IFS request was drawn from the shared budget");
}
