//! The chaos run at N = 1 000 with a fixed seed: webhooks (1–3 deliveries each, out of order) and
//! the poller at once, four poster loops on one queue, faults at every boundary, two posters killed mid-batch.
//! Exactly one voucher per postable record, nothing lost, no virtual voucher left in IFS, only the deliberately unmappable records failed and
//! were reported to Brex. The time limit inside the run is a safety bound, not a timing assertion.

use sims::chaos::{ChaosOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_records_through_chaos_post_exactly_once() {
    let report = run(ChaosOptions { n: 1000, seed: 7, ..ChaosOptions::default() }).await.expect("chaos run");
    assert!(!report.timed_out, "the run did not settle within its safety limit");

    let expected = report.n - report.unmappable.len();
    assert!(!report.unmappable.is_empty(), "the seed makes some records unmappable");
    assert!(report.duplicates.is_empty(), "duplicates: {:?}", report.duplicates);
    assert!(report.lost.is_empty(), "lost: {:?}", report.lost);
    assert!(report.unexpected_vouchers.is_empty(), "unexpected vouchers: {:?}", report.unexpected_vouchers);
    assert_eq!(report.posted_once, expected, "one voucher per postable record");
    assert_eq!(report.vouchers, expected, "and no other voucher");
    assert_eq!(report.abandoned_virtual_vouchers, 0, "no virtual voucher left behind in IFS");

    // Only the unmappable records failed, each reported to Brex with the reason.
    assert!(report.failures.keys().eq(report.unmappable.iter()), "failures: {:?}", report.failures.keys());
    for (id, message) in &report.failures {
        assert!(message.contains(id.as_str()) && message.to_lowercase().contains("account"), "{id}: {message}");
    }
    assert!(report.not_exported.is_empty(), "posted but Brex not told: {:?}", report.not_exported);
    for entry in &report.dlq {
        assert!(entry.explained(), "unexplained DLQ entry: {entry:?}");
    }

    // The faults really struck.
    let fault = |kind: &str| report.faults.get(kind).copied().unwrap_or(0);
    for kind in [
        "IFS concurrent_modification",
        "IFS status_502",
        "IFS status_503",
        "IFS status_504",
        "IFS commit_then_drop",
        "Brex 5xx injected (before or after the change)",
    ] {
        assert!(fault(kind) > 0, "{kind} was never injected: {:?}", report.faults);
    }
    let activity = |kind: &str| report.activity.get(kind).copied().unwrap_or(0);
    assert!(activity("SQS redeliveries (receive count > 1)") > 0, "{:?}", report.activity);
    assert!(fault("poster killed mid-batch") > 0, "{:?}", report.faults);
}
