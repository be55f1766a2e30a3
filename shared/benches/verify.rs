//! Webhook signature verification cost (goal: ≤ 5 µs for a 2 KiB body).

use std::hint::black_box;

use base64::Engine as _;
use chrono::DateTime;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use shared::domain::Secret;
use shared::webhook::{WebhookVerifier, sign};

fn secret(n: u8) -> Secret {
    Secret::new(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([n; 32])))
}

fn bench_verify(c: &mut Criterion) {
    let ts = 1_750_000_000;
    let now = DateTime::from_timestamp(ts, 0).expect("valid timestamp");
    let mut group = c.benchmark_group("webhook_verify");
    for size in [2 * 1024, 64 * 1024] {
        let body = vec![b'x'; size];
        let signature = sign(&secret(1), "msg_2Lh9KRb0pzN4LePd3XiA0cbjZ0g", ts, &body).expect("sign");
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_static("msg_2Lh9KRb0pzN4LePd3XiA0cbjZ0g"));
        headers.insert("webhook-timestamp", HeaderValue::from_str(&ts.to_string()).expect("header"));
        headers.insert("webhook-signature", HeaderValue::from_str(&signature).expect("header"));

        let one = WebhookVerifier::new(&[secret(1)]).expect("verifier");
        // Rotation: the matching secret last, so both keys are computed.
        let two = WebhookVerifier::new(&[secret(2), secret(1)]).expect("verifier");
        group.throughput(Throughput::Bytes(size as u64));
        for (name, verifier) in [("one_secret", &one), ("two_secrets", &two)] {
            group.bench_with_input(BenchmarkId::new(name, format!("{}KiB", size / 1024)), &body, |b, body| {
                b.iter(|| verifier.verify(black_box(&headers), black_box(body), now).expect("valid"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
