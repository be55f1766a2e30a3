//! Prints the request breakdown behind the README's table, measured in one run against the simulators on moto:
//! - IFS requests per posted record for a batch of 10, per endpoint (vouchers go through `$batch`, the
//!   default; `infra/scripts/bench.sh` compares it with the step-by-step flow);
//! - Brex requests per batch.
//!
//! `cargo bench -p connector-tests --bench pipeline` (needs moto: `infra/scripts/bootstrap.sh`).

use std::time::{Duration, Instant};

use shared::domain::Origin;
use sims::brex::generator::{GeneratorOptions, RecordGenerator};
use sims::pipeline::{Pipeline, PipelineOptions};

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument of `--list` or similar needs no work.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pipeline = Pipeline::start(PipelineOptions { name: "bench".into(), ..PipelineOptions::default() })
        .await
        .expect("pipeline (is moto installed? run infra/scripts/bootstrap.sh)");
    let records = RecordGenerator::with_options(
        5,
        GeneratorOptions { count: 10, missing_gl_rate: 0.0, ..GeneratorOptions::default() },
    )
    .batch();
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    pipeline.brex.insert_records(records);
    pipeline.enqueue(&ids, &Origin::Poll).await.expect("enqueue");
    pipeline.ifs.reset_counters();
    pipeline.brex.reset_counters();
    let start = Instant::now();
    let invocations = pipeline.drain(Duration::from_secs(60)).await.expect("drain");
    let elapsed = start.elapsed();
    let ifs = pipeline.ifs.counters();
    let brex = pipeline.brex.counters();
    let posted = pipeline.ifs.voucher_count();
    assert_eq!(posted, 10, "every record posted");
    println!("poster, batch of 10 records, vouchers through $batch (cold caches, one invocation = {invocations}):");
    println!(
        "  IFS requests per posted record   {:>6.2}  ({} requests / {posted} records; goal ≤ 1.0)",
        ifs.total_requests as f64 / posted as f64,
        ifs.total_requests
    );
    println!("  of which token fetches           {:>6}", ifs.token_fetches);
    for (label, statuses) in &ifs.requests {
        println!("    {label:<40} {:>4}", statuses.values().sum::<u64>());
    }
    println!("  Brex requests for the batch      {:>6}", brex.total_requests);
    println!("  wall time                        {:>6.0} ms", elapsed.as_secs_f64() * 1000.0);

    // Warm caches: the same poster instance, another 10 records.
    let more = RecordGenerator::with_options(
        6,
        GeneratorOptions { count: 10, missing_gl_rate: 0.0, ..GeneratorOptions::default() },
    )
    .batch();
    let more_ids: Vec<String> = more.iter().map(|r| r.id.clone()).collect();
    pipeline.brex.insert_records(more);
    pipeline.enqueue(&more_ids, &Origin::Poll).await.expect("enqueue");
    pipeline.ifs.reset_counters();
    pipeline.drain(Duration::from_secs(60)).await.expect("drain");
    let warm = pipeline.ifs.counters();
    println!("  warm instance: IFS requests per posted record {:>6.2}", warm.total_requests as f64 / 10.0);
}
