//! The IFS client (`shared::ifs`) against the IFS Cloud simulator: voucher creation, dedup, faults
//! (412s, 429 bursts, 5xx, commit-then-drop), short-lived tokens, paging and IFS's business-rule refusals.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use shared::domain::{AccountCode, CompanyCode, IfsCredentials, ReferenceNumber, Secret};
use shared::error::Classify;
use shared::ifs::{IfsClient, IfsClientConfig, IfsError};
use shared::ports::{ChartOfAccounts, Demand};
use shared::proposal::{CodePart, Proposal};
use shared::retry::RetryPolicy;
use sims::ifs::{IfsFaults, IfsSim, IfsSimConfig, ReferenceData};

fn year() -> i32 {
    Utc::now().year()
}

fn date(month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year(), month, day).unwrap()
}

fn co() -> CompanyCode {
    CompanyCode::parse("10").unwrap()
}

async fn start(config: IfsSimConfig) -> IfsSim {
    IfsSim::start(config).await.expect("simulator starts")
}

fn client_with(sim: &IfsSim, tweak: impl FnOnce(&mut IfsClientConfig)) -> IfsClient {
    let (client_id, secret) = sim.client().unwrap();
    let creds = IfsCredentials { client_id, client_secret: Secret::new(secret) };
    let mut config = IfsClientConfig::new(sim.base_url(), sim.realm(), creds);
    config.requests_per_minute = 600_000;
    config.request_timeout = Duration::from_secs(5);
    config.retry = RetryPolicy {
        max_attempts: 8,
        base: Duration::from_millis(20),
        cap: Duration::from_secs(2),
        max_retry_after: Duration::from_secs(2),
        retry_after_jitter: true,
    };
    tweak(&mut config);
    IfsClient::new(config, reqwest::Client::new()).unwrap()
}

fn client(sim: &IfsSim) -> IfsClient {
    client_with(sim, |_| {})
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn proposal(reference: &str, day: NaiveDate, debit: &str, credit: &str) -> Proposal {
    sims::fixtures::travel_proposal(reference, day, debit, credit)
}

/// What the poster does per record: dedup first, create only when absent; a retryable failure is tried
/// again (SQS redelivery), a permanent one ends it.
async fn post_once(client: &IfsClient, p: &Proposal) -> Result<String, IfsError> {
    let mut last = None;
    for _ in 0..3 {
        let found = client.find_posted(&p.company, &p.reference_serie, std::slice::from_ref(&p.reference_number)).await;
        match found {
            Ok(f) if f.contains_key(&p.reference_number) => return Ok(f[&p.reference_number].to_string()),
            Ok(_) => {}
            Err(e) if e.is_retryable() => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        }
        match client.create_voucher(p).await {
            Ok(key) => return Ok(key.to_string()),
            Err(e) if e.is_retryable() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap())
}

#[tokio::test]
async fn creates_a_voucher_with_exact_rows_and_finds_it_again() {
    let sim = start(IfsSimConfig::default()).await;
    let client = client(&sim);
    let p = proposal("accr_full_1", date(3, 15), "171.75", "171.75");

    let key = client.create_voucher(&p).await.unwrap();
    assert_eq!(key.to_string(), format!("10-{}-M-1", year()));

    let vouchers = sim.vouchers();
    assert_eq!(vouchers.len(), 1);
    let v = &vouchers[0];
    assert_eq!((v.company.as_str(), v.accounting_year, v.accounting_period, v.voucher_no), ("10", year(), 3, 1));
    assert_eq!(v.status.as_str(), "NotApproved");
    assert_eq!(v.text.as_deref(), Some("Brex accr_full_1"));
    assert_eq!(v.rows.len(), 2);
    let (debit, credit) = (&v.rows[0], &v.rows[1]);
    assert_eq!((debit.account.as_str(), debit.code_b.as_deref()), ("6500", Some("200")));
    assert_eq!((debit.currency_debet_amount, debit.currency_credit_amount), (Some(dec("171.75")), None));
    assert_eq!((credit.account.as_str(), credit.code_b.as_deref()), ("2410", None));
    assert_eq!(credit.currency_credit_amount, Some(dec("171.75")));
    for row in &v.rows {
        assert_eq!(row.reference_serie.as_deref(), Some("BREX"));
        assert_eq!(row.reference_number.as_deref(), Some("accr_full_1"));
        assert_eq!(row.currency_code, "USD");
    }

    let refs = ["accr_full_1", "accr_absent", "accr_o'neil_safe"]
        .iter()
        .filter_map(|r| ReferenceNumber::parse(r).ok())
        .collect::<Vec<_>>();
    let found = client.find_posted(&co(), "BREX", &refs).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[&refs[0]], key);
    // Another serie does not match.
    assert!(client.find_posted(&co(), "OTHER", &refs).await.unwrap().is_empty());

    let counters = sim.counters();
    assert_eq!(counters.mutations_without_if_match, 0);
    assert_eq!(counters.count("VoucherPostingArray.POST", 201), 2);
    assert_eq!(counters.count("CreateVoucher.POST", 200), 1);
    assert_eq!(client.stats().token_fetches, 1);
    assert_eq!(client.stats().requests, counters.total_requests);
}

#[tokio::test]
async fn decimal_amounts_balance_exactly() {
    let sim = start(IfsSimConfig::default()).await;
    let client = client(&sim);
    let mut p = proposal("accr_exact", date(4, 1), "0.1", "0.3");
    let mut second = p.rows[0].clone();
    second.amount = dec("0.2");
    p.rows.insert(1, second);
    client.create_voucher(&p).await.unwrap();
    let rows = &sim.vouchers()[0].rows;
    let debits: Decimal = rows.iter().filter_map(|r| r.currency_debet_amount).sum();
    assert_eq!(debits, dec("0.3"));
}

#[tokio::test]
async fn chaos_still_gives_exactly_one_voucher_per_proposal_and_every_mutation_is_guarded() {
    let sim = start(IfsSimConfig { seed: 7, ..IfsSimConfig::default() }).await;
    sim.set_faults(IfsFaults {
        concurrent_modification_rate: 0.3,
        burst_429_next: 6,
        status_5xx_rate: 0.1,
        ..IfsFaults::default()
    });
    let client = client(&sim);
    let proposals: Vec<Proposal> =
        (0..20u32).map(|i| proposal(&format!("accr_chaos_{i}"), date(5, 1 + i % 28), "10.00", "10.00")).collect();

    // Five at a time, as a poster batch would.
    let mut results = Vec::new();
    for batch in proposals.chunks(5) {
        results.extend(futures::future::join_all(batch.iter().map(|p| post_once(&client, p))).await);
    }
    for (p, r) in proposals.iter().zip(&results) {
        assert!(r.is_ok(), "{}: {r:?}", p.reference_number);
    }

    let vouchers = sim.vouchers();
    let mut per_ref: HashMap<String, usize> = HashMap::new();
    for v in &vouchers {
        *per_ref.entry(v.rows[0].reference_number.clone().unwrap()).or_default() += 1;
    }
    assert_eq!(vouchers.len(), 20, "{per_ref:?}");
    assert!(per_ref.values().all(|n| *n == 1), "{per_ref:?}");

    let c = sim.counters();
    assert_eq!(c.mutations_without_if_match, 0);
    assert_eq!(c.status_428, 0);
    // The faults really happened, so the above means something.
    assert!(c.status_412 > 0, "no 412 injected: {c:?}");
    assert!(c.fault("burst_429") == 6 && c.status_429 >= 6, "{c:?}");
    assert!(c.fault("status_502") + c.fault("status_503") + c.fault("status_504") > 0, "{c:?}");
    let stats = client.stats();
    assert!(stats.stale_etag_rereads >= c.status_412, "every 412 was answered with a re-read: {stats:?} {c:?}");
    assert!(stats.retries > 0);
}

#[tokio::test]
async fn short_tokens_are_renewed_ahead_of_expiry() {
    let sim = start(IfsSimConfig { token_ttl: Duration::from_secs(2), ..IfsSimConfig::default() }).await;
    let client = client(&sim);
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let p = proposal(&format!("accr_tok_{n}"), date(6, 10), "5.00", "5.00");
        client.create_voucher(&p).await.unwrap();
        client.account(&co(), &AccountCode::parse("7900").unwrap()).await.unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(sim.voucher_count(), n);
    let stats = client.stats();
    let c = sim.counters();
    // 80 % of 2 s: a fresh token every ~1.6 s over 6 s.
    assert!((3..=6).contains(&stats.token_fetches), "{stats:?}");
    assert_eq!(c.token_fetches, stats.token_fetches);
    // Any 401 was answered by exactly one refresh and one resend, never a failure.
    assert_eq!(c.status_401, stats.unauthorized_refreshes);
}

#[tokio::test]
async fn a_revoked_token_gets_one_refresh_and_one_resend() {
    let first = start(IfsSimConfig::default()).await;
    let addr = first.addr();
    let (client_id, secret) = first.client().unwrap();
    let config = IfsClientConfig::new(
        first.base_url(),
        first.realm(),
        IfsCredentials { client_id, client_secret: Secret::new(secret) },
    );
    // No pooled connections, so every request reaches whichever server listens now.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let client = IfsClient::new(config, http).unwrap();
    client.list_code_part_values(&co(), CodePart::C).await.unwrap();
    // A restarted IFS knows none of the tokens it issued before: the cached one now gets 401.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = start(IfsSimConfig { bind: addr, ..IfsSimConfig::default() }).await;
    let values = client.list_code_part_values(&co(), CodePart::C).await.unwrap();
    assert_eq!(values.len(), 2);
    let c = second.counters();
    assert_eq!((c.status_401, c.token_fetches), (1, 1));
    assert_eq!(c.count("CodeCSet.LIST", 200), 1);
    let stats = client.stats();
    assert_eq!((stats.unauthorized_refreshes, stats.token_fetches), (1, 2));
}

#[tokio::test]
async fn commit_then_drop_is_resolved_by_the_dedup_recheck_without_a_duplicate() {
    let sim = start(IfsSimConfig::default()).await;
    sim.set_faults(IfsFaults { commit_then_drop_next: 1, ..IfsFaults::default() });
    let client = client(&sim);
    let p = proposal("accr_drop", date(7, 4), "99.99", "99.99");

    let key = client.create_voucher(&p).await.unwrap();
    assert_eq!(key.to_string(), format!("10-{}-M-1", year()));
    assert_eq!(sim.voucher_count(), 1);
    let c = sim.counters();
    assert_eq!(c.count("CreateVoucher.POST", 0), 1, "the answer was dropped");
    assert_eq!(c.count_label("CreateVoucher.POST"), 1, "CreateVoucher was not re-sent blindly");
    assert_eq!(client.stats().uncertain_commit_checks, 1);

    // And the poster's own dedup sees it too.
    assert_eq!(post_once(&client, &p).await.unwrap(), key.to_string());
    assert_eq!(sim.voucher_count(), 1);
}

#[tokio::test]
async fn create_voucher_5xx_is_rechecked_then_retried_on_the_same_virtual() {
    let sim = start(IfsSimConfig::default()).await;
    let client = client(&sim);
    // Warm up (token, calendar) so the only faults hit the voucher calls.
    client.accounting_period(&co(), date(8, 1)).await.unwrap();
    sim.set_faults(IfsFaults { status_5xx_rate: 0.35, status_5xx_codes: vec![504], ..IfsFaults::default() });
    for i in 0..8 {
        client.create_voucher(&proposal(&format!("accr_504_{i}"), date(8, 1), "1", "1")).await.unwrap();
    }
    assert_eq!(sim.voucher_count(), 8);
    assert!(sim.counters().fault("status_504") > 0);
}

#[tokio::test]
async fn twelve_thousand_accounts_page_through_next_link() {
    let sim =
        start(IfsSimConfig { reference: ReferenceData::with_generated(12_000, 0), ..IfsSimConfig::default() }).await;
    let client = client(&sim);
    let accounts = client.list_accounts(&co()).await.unwrap();
    assert_eq!(accounts.len(), 12_010);
    let mut codes: Vec<&str> = accounts.iter().map(|a| a.account.as_str()).collect();
    codes.dedup();
    assert_eq!(codes.len(), 12_010, "no row twice");
    assert_eq!(sim.counters().count("AccountSet.LIST", 200), 3, "5000 + 5000 + 2010");
    let generated = accounts.iter().find(|a| a.account.as_str() == "111999").unwrap();
    assert_eq!(generated.demands[&CodePart::B], Demand::Optional);

    // A server capping pages below our $top still pages fully via nextLink.
    let small = start(IfsSimConfig {
        reference: ReferenceData::with_generated(12_000, 0),
        max_page_size: 1000,
        ..IfsSimConfig::default()
    })
    .await;
    let accounts = client_with(&small, |_| {}).list_accounts(&co()).await.unwrap();
    assert_eq!(accounts.len(), 12_010);
    assert_eq!(small.counters().count("AccountSet.LIST", 200), 13);
}

#[tokio::test]
async fn reference_reads_map_demands_and_are_cached() {
    let sim = start(IfsSimConfig { reference: ReferenceData::with_generated(0, 30), ..IfsSimConfig::default() }).await;
    let client = client(&sim);
    let software = AccountCode::parse("6600").unwrap();
    let info = client.account(&co(), &software).await.unwrap().unwrap();
    assert_eq!(info.demands[&CodePart::B], Demand::Mandatory);
    assert_eq!(info.demands[&CodePart::C], Demand::Optional);
    assert_eq!(info.demands[&CodePart::D], Demand::Blocked);
    let old = client.account(&co(), &AccountCode::parse("1999").unwrap()).await.unwrap().unwrap();
    assert!(!old.is_valid_on(date(1, 1)));
    assert!(client.account(&co(), &AccountCode::parse("4242").unwrap()).await.unwrap().is_none());
    // Through the port, from the cache.
    let chart: &dyn ChartOfAccounts = client.reference();
    assert_eq!(chart.account(&co(), &software).await.unwrap(), Some(info));
    // The first miss read the company's chart (one page); only the unknown 4242 was asked for alone.
    assert_eq!(sim.counters().count_label("AccountSet.LIST"), 1);
    assert_eq!(sim.counters().count_label("AccountSet.GET"), 1);

    let centres = client.list_code_part_values(&co(), CodePart::B).await.unwrap();
    assert_eq!(centres.len(), 35);
    assert!(centres.iter().any(|c| c.value.as_str() == "CC000029" && c.description.contains("cost centre")));

    let p = client.accounting_period(&co(), date(2, 28)).await.unwrap().unwrap();
    assert_eq!((p.accounting_year, p.accounting_period, p.open), (year(), 2, true));
    client.accounting_period(&co(), date(11, 30)).await.unwrap().unwrap();
    assert_eq!(sim.counters().count_label("AccountingPeriodSet.LIST"), 1, "one read per company and year");
    assert!(client.accounting_period(&co(), NaiveDate::from_ymd_opt(1990, 1, 1).unwrap()).await.unwrap().is_none());
}

#[tokio::test]
async fn unbalanced_and_closed_period_are_permanent_with_ifs_message() {
    let reference = ReferenceData::demo_for_year(year(), &[(year(), 9)]);
    let sim = start(IfsSimConfig { reference, ..IfsSimConfig::default() }).await;
    let client = client(&sim);

    let unbalanced = proposal("accr_unbal", date(3, 3), "10.00", "9.99");
    let err = client.create_voucher(&unbalanced).await.unwrap_err();
    match &err {
        IfsError::Rejected { status: 400, message, .. } => assert!(message.contains("not balanced"), "{message}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(shared::error::ExternalError::from(err).message.contains("not balanced"));

    let period = client.accounting_period(&co(), date(9, 10)).await.unwrap().unwrap();
    assert!(!period.open);
    let closed = proposal("accr_closed", date(9, 10), "10.00", "10.00");
    match client.create_voucher(&closed).await.unwrap_err() {
        IfsError::Rejected { message, .. } => assert!(message.contains("closed"), "{message}"),
        other => panic!("expected Rejected, got {other:?}"),
    }

    let mut bad_account = proposal("accr_badacct", date(3, 3), "1", "1");
    bad_account.rows[1].account = AccountCode::parse("4242").unwrap();
    match client.create_voucher(&bad_account).await.unwrap_err() {
        IfsError::Rejected { message, .. } => assert!(message.contains("4242"), "{message}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(sim.voucher_count(), 0);
    let c = sim.counters();
    assert_eq!(c.count_label("CreateVoucher.POST"), 3, "permanent refusals are not retried");
}

#[tokio::test]
async fn find_posted_chunks_large_batches_into_few_queries() {
    let sim = start(IfsSimConfig::default()).await;
    let client = client(&sim);
    let a = client.create_voucher(&proposal("accr_batch_a", date(3, 3), "1", "1")).await.unwrap();
    let b = client.create_voucher(&proposal("accr_batch_b", date(3, 3), "2", "2")).await.unwrap();
    let mut refs: Vec<ReferenceNumber> =
        (0..300).map(|i| ReferenceNumber::parse(&format!("accr_{i:030}")).unwrap()).collect();
    refs.insert(150, ReferenceNumber::parse("accr_batch_b").unwrap());
    refs.push(ReferenceNumber::parse("accr_batch_a").unwrap());
    refs.push(ReferenceNumber::parse("accr_batch_a").unwrap());
    sim.reset_counters();
    let found = client.find_posted(&co(), "BREX", &refs).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!((found[&refs[150]].clone(), found[refs.last().unwrap()].clone()), (b, a));
    let queries = sim.counters().count("VoucherRowSet.LIST", 200);
    // ~300 × 60 encoded bytes ≈ 18 KB of terms: a handful of < 6 KB URLs, not 300 queries.
    assert!((3..=6).contains(&queries), "{queries} queries");
}

#[tokio::test]
async fn wrong_credentials_are_an_auth_error() {
    let sim = start(IfsSimConfig::default()).await;
    let client = client_with(&sim, |c| c.credentials.client_secret = Secret::new("wrong"));
    match client.list_accounts(&co()).await.unwrap_err() {
        IfsError::Auth { status: 401, code, .. } => assert_eq!(code, "invalid_client"),
        other => panic!("expected Auth, got {other:?}"),
    }
    assert_eq!(sim.counters().count("Token.POST", 401), 1, "a refused client is not hammered");
}

#[tokio::test]
async fn the_sim_budget_429_with_retry_after_is_waited_out() {
    // 30 requests per 1.2 s window; our own bucket is generous, so IFS's 429s must be honoured.
    let sim = start(IfsSimConfig { requests_per_minute: 30, time_scale: 0.02, ..IfsSimConfig::default() }).await;
    let client = client(&sim);
    // 2 + 12 × 4 requests: more than one window's worth.
    for i in 0..12 {
        client.create_voucher(&proposal(&format!("accr_budget_{i}"), date(3, 3), "1", "1")).await.unwrap();
    }
    assert_eq!(sim.voucher_count(), 12);
    let c = sim.counters();
    assert!(c.status_429 > 0, "{c:?}");
    assert_eq!(client.stats().retries, c.status_429, "each 429 was waited out and sent again");
}
