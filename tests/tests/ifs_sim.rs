//! The IFS Cloud simulator over real HTTP.

use chrono::{Datelike, Utc};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sims::ifs::{IfsFaults, IfsSim, IfsSimConfig, PeriodStatus, ReferenceData, VoucherStatus};
use std::collections::HashSet;
use std::time::Duration;

const CREATE: &str = "IfsApp.VoucherEntryAssistantHandling.VoucherEntry_CreateVoucher";

struct Api {
    sim: IfsSim,
    http: Client,
    token: String,
}

async fn fetch_token(http: &Client, sim: &IfsSim, id: &str, secret: &str) -> Response {
    http.post(sim.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("scope", "openid microprofile-jwt"),
        ])
        .send()
        .await
        .unwrap()
}

async fn start(config: IfsSimConfig) -> Api {
    let sim = IfsSim::start(config).await.unwrap();
    let http = Client::new();
    let body: Value = fetch_token(&http, &sim, "brex-connector", "sim-secret").await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();
    Api { sim, http, token }
}

fn year() -> i32 {
    Utc::now().year()
}

fn date() -> String {
    format!("{}-03-15", year())
}

impl Api {
    fn url(&self, path: &str) -> String {
        if path.starts_with("http") { path.to_string() } else { format!("{}/{path}", self.sim.projection_url()) }
    }

    async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).bearer_auth(&self.token).send().await.unwrap()
    }

    async fn post(&self, path: &str, body: &Value, if_match: Option<&str>) -> Response {
        let mut req = self.http.post(self.url(path)).bearer_auth(&self.token).json(body);
        if let Some(tag) = if_match {
            req = req.header("If-Match", tag);
        }
        req.send().await.unwrap()
    }

    /// Step 1: the header. Returns (Objkey, ETag).
    async fn header(&self, company: &str) -> (String, String) {
        let resp = self
            .post(
                "VoucherEntryAssistantHandling.svc/VoucherSet",
                &json!({
                    "Company": company, "VoucherType": "M", "VoucherDate": date(),
                    "AccountingYear": year(), "AccountingPeriod": 3, "VoucherStatus": "NotApproved",
                    "VoucherText2": "Brex card statement", "OpennedFrom": "NEW_VOUCHER",
                }),
                None,
            )
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let header_tag = resp.headers()["etag"].to_str().unwrap().to_string();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["@odata.etag"], header_tag.as_str());
        (body["Objkey"].as_str().unwrap().to_string(), header_tag)
    }

    async fn add_row(&self, objkey: &str, tag: Option<&str>, row: &Value) -> Response {
        self.post(
            &format!("VoucherEntryAssistantHandling.svc/VoucherSet(Objkey='{objkey}')/VoucherPostingArray"),
            row,
            tag,
        )
        .await
    }

    async fn create(&self, objkey: &str, tag: Option<&str>) -> Response {
        self.post(&format!("VoucherEntryAssistantHandling.svc/VoucherSet(Objkey='{objkey}')/{CREATE}"), &json!({}), tag)
            .await
    }

    /// All three steps; returns the CreateVoucher response.
    async fn voucher(&self, company: &str, rows: &[Value]) -> Response {
        let (objkey, tag) = self.header(company).await;
        for row in rows {
            let resp = self.add_row(&objkey, Some(&tag), row).await;
            assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await.unwrap());
        }
        self.create(&objkey, Some(&tag)).await
    }
}

fn debit(account: &str, code_b: Option<&str>, amount: Value, reference: &str) -> Value {
    let mut row = json!({
        "Account": account, "CurrencyCode": "USD", "CurrencyDebetAmount": amount,
        "Text": "Uber ride", "ReferenceSerie": "BREX", "ReferenceNumber": reference,
    });
    if let Some(b) = code_b {
        row["CodeB"] = json!(b);
    }
    row
}

fn credit(amount: Value, reference: &str) -> Value {
    json!({
        "Account": "2410", "CurrencyCode": "USD", "CurrencyCreditAmount": amount,
        "Text": "Card liability", "ReferenceSerie": "BREX", "ReferenceNumber": reference,
    })
}

fn balanced(reference: &str) -> Vec<Value> {
    vec![debit("6500", Some("200"), json!(12.5), reference), credit(json!("12.50"), reference)]
}

async fn error_of(resp: Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or_default().to_string(),
        body["error"]["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn token_good_bad_and_expired() {
    let config = IfsSimConfig { token_ttl: Duration::from_secs(2), ..Default::default() };
    let sim = IfsSim::start(config).await.unwrap();
    let http = Client::new();
    let resp = fetch_token(&http, &sim, "brex-connector", "sim-secret").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["expires_in"], 2);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "openid microprofile-jwt");
    let token = body["access_token"].as_str().unwrap().to_string();

    let bad = fetch_token(&http, &sim, "brex-connector", "wrong").await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["error"], "invalid_client");

    let api = Api { sim, http, token };
    let resp = api.get("AccountsHandling.svc/AccountSet(Company='10',Account='6500')").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let tag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert!(tag.starts_with("W/\""));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["@odata.etag"], tag.as_str());
    assert_eq!(body["ReqCodeB"], "M");
    assert_eq!(body["Description"], "Travel");

    let anonymous = api.http.get(api.url("AccountsHandling.svc/AccountSet")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, code, _) =
        error_of(api.get("AccountsHandling.svc/AccountSet(Company='10',Account='6500')").await).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    let c = api.sim.counters();
    assert_eq!(c.token_fetches, 1);
    assert_eq!(c.status_401, 3, "bad client, anonymous, expired");
    assert_eq!(c.count("AccountSet.GET", 200), 1);
    assert_eq!(c.count("AccountSet.GET", 401), 1);
    assert_eq!(c.count("Token.POST", 401), 1);
}

#[tokio::test]
async fn full_flow_numbers_vouchers_and_reads_them_back() {
    let api = start(IfsSimConfig::default()).await;
    let resp = api.voucher("10", &balanced("accr_1")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["value"], 1);
    let resp = api.voucher("10", &balanced("accr_2")).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["value"], 2);
    // Numbering is per (company, type, year).
    let ca = vec![
        json!({"Account": "6600", "CodeB": "100", "CodeC": "P100", "CurrencyDebetAmount": "99.99",
               "ReferenceSerie": "BREX", "ReferenceNumber": "accr_3"}),
        json!({"Account": "2415", "CurrencyCreditAmount": 99.99, "ReferenceSerie": "BREX", "ReferenceNumber": "accr_3"}),
    ];
    let resp = api.voucher("20", &ca).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["value"], 1);

    let vouchers = api.sim.vouchers();
    assert_eq!(api.sim.voucher_count(), 3);
    assert_eq!(api.sim.pending_virtual_count(), 0);
    let v = &vouchers[0];
    assert_eq!((v.company.as_str(), v.voucher_type.as_str(), v.voucher_no), ("10", "M", 1));
    assert_eq!(v.status, VoucherStatus::NotApproved);
    assert_eq!(v.text.as_deref(), Some("Brex card statement"));
    assert_eq!(v.rows.len(), 2);
    assert_eq!(v.rows[0].code_b.as_deref(), Some("200"));
    assert_eq!(v.rows[0].currency_debet_amount, Some("12.5".parse().unwrap()));
    assert_eq!(v.rows[1].reference_number.as_deref(), Some("accr_1"));
    assert_eq!(vouchers[2].rows[0].currency_code, "CAD", "row currency defaults to the company's");

    let path =
        format!("VoucherHandling.svc/VoucherSet(Company='10',AccountingYear={},VoucherType='M',VoucherNo=2)", year());
    let resp = api.get(&path).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("etag"));
    let head: Value = resp.json().await.unwrap();
    assert_eq!(head["VoucherStatus"], "NotApproved");
    let rows: Value = api.get(&format!("{path}/VoucherPostingArray")).await.json().await.unwrap();
    assert_eq!(rows["value"].as_array().unwrap().len(), 2);
    assert_eq!(rows["value"][1]["CurrencyCreditAmount"], 12.5);

    let admin: Value =
        api.http.get(format!("{}/_sim/vouchers", api.sim.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(admin.as_array().unwrap().len(), 3);

    let c = api.sim.counters();
    assert_eq!(c.mutations_without_if_match, 0);
    assert_eq!(c.mutations_with_if_match, 9);
    assert_eq!(c.count("VoucherSet.POST", 201), 3);
    assert_eq!(c.count("VoucherPostingArray.POST", 201), 6);
    assert_eq!(c.count("CreateVoucher.POST", 200), 3);
    assert_eq!(c.vouchers_created, 3);
    let admin: Value =
        api.http.get(format!("{}/_sim/counters", api.sim.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(admin["requests"]["CreateVoucher.POST"]["200"], 3);
}

#[tokio::test]
async fn if_match_missing_is_428_and_stale_is_412() {
    let api = start(IfsSimConfig::default()).await;
    let (objkey, tag) = api.header("10").await;
    let (status, code, _) = error_of(api.add_row(&objkey, None, &balanced("r")[0]).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::PRECONDITION_REQUIRED, "ODP_MISSING_PRECONDITION"));
    let stale = sims::ifs::model::etag("AAAVOU", "20200101000000000001");
    let (status, code, _) = error_of(api.add_row(&objkey, Some(&stale), &balanced("r")[0]).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::PRECONDITION_FAILED, "ODP_PRECONDITION_FAILED"));
    let (status, _, _) = error_of(api.create(&objkey, None).await).await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED);
    // Adding rows leaves the header's ETag valid.
    for row in balanced("r") {
        assert_eq!(api.add_row(&objkey, Some(&tag), &row).await.status(), StatusCode::CREATED);
    }
    let rows: Value = api
        .get(&format!("VoucherEntryAssistantHandling.svc/VoucherSet(Objkey='{objkey}')/VoucherPostingArray"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rows["value"].as_array().unwrap().len(), 2);
    assert_eq!(api.create(&objkey, Some("*")).await.status(), StatusCode::OK);
    let c = api.sim.counters();
    assert_eq!((c.mutations_without_if_match, c.mutations_with_if_match), (2, 4));
    assert_eq!((c.status_428, c.status_412), (2, 1));
}

#[tokio::test]
async fn concurrent_modification_gives_412_then_reread_etag_works() {
    let api = start(IfsSimConfig::default()).await;
    let (objkey, tag) = api.header("10").await;
    api.sim.set_faults(IfsFaults { concurrent_modification_rate: 1.0, ..Default::default() });
    let (status, _, _) = error_of(api.add_row(&objkey, Some(&tag), &balanced("r")[0]).await).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    api.sim.set_faults(IfsFaults::default());
    assert_eq!(api.add_row(&objkey, Some(&tag), &balanced("r")[0]).await.status(), StatusCode::PRECONDITION_FAILED);

    let resp = api.get(&format!("VoucherEntryAssistantHandling.svc/VoucherSet(Objkey='{objkey}')")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let fresh = resp.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(fresh, tag);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["@odata.etag"], fresh.as_str());
    assert_eq!(body["Company"], "10");
    for row in balanced("r") {
        assert_eq!(api.add_row(&objkey, Some(&fresh), &row).await.status(), StatusCode::CREATED);
    }
    assert_eq!(api.create(&objkey, Some(&fresh)).await.status(), StatusCode::OK);
    assert_eq!(api.sim.counters().fault("concurrent_modification"), 1);
}

#[tokio::test]
async fn body_hygiene_is_enforced() {
    let api = start(IfsSimConfig::default()).await;
    let (objkey, tag) = api.header("10").await;
    let mut row = balanced("r")[0].clone();
    row["Foo"] = json!("bar");
    let (status, code, message) = error_of(api.add_row(&objkey, Some(&tag), &row).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "ODP_DESERIALIZATION_ERROR"));
    assert!(message.contains("'Foo'"), "{message}");

    let resp = api
        .http
        .post(api.url(&format!("VoucherEntryAssistantHandling.svc/VoucherSet(Objkey='{objkey}')/VoucherPostingArray")))
        .bearer_auth(&api.token)
        .header("If-Match", &tag)
        .body(balanced("r")[0].to_string())
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "ODP_DESERIALIZATION_ERROR"));

    let mut long = balanced("r")[0].clone();
    long["Text"] = json!("x".repeat(201));
    assert_eq!(api.add_row(&objkey, Some(&tag), &long).await.status(), StatusCode::BAD_REQUEST);
    let (status, _, message) =
        error_of(api.post("VoucherEntryAssistantHandling.svc/VoucherSet", &json!({"Company": "10"}), None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("VoucherType"), "{message}");
}

#[tokio::test]
async fn float_noise_unbalances_the_voucher() {
    let api = start(IfsSimConfig::default()).await;
    let rows = vec![debit("6500", Some("200"), json!(0.1 + 0.2), "n"), credit(json!(0.3), "n")];
    let (status, code, message) = error_of(api.voucher("10", &rows).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "DATABASE_ERROR"));
    assert!(message.contains("The voucher is not balanced"), "{message}");
    assert!(message.contains("0.30000000000000004"), "{message}");
    assert_eq!(api.sim.voucher_count(), 0);
    // Exact decimals as strings balance.
    let rows = vec![debit("6500", Some("200"), json!("0.30"), "n"), credit(json!(0.3), "n")];
    assert_eq!(api.voucher("10", &rows).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn business_rules_name_the_row_and_problem() {
    let api = start(IfsSimConfig::default()).await;
    let expect = async |rows: Vec<Value>, needle: &str| {
        let (status, code, message) = error_of(api.voucher("10", &rows).await).await;
        assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "DATABASE_ERROR"), "{message}");
        assert!(message.contains(needle), "expected '{needle}' in '{message}'");
    };
    expect(
        vec![debit("6500", None, json!(5), "x"), credit(json!(5), "x")],
        "Row 1: Code part B (Cost Center) is mandatory for account 6500",
    )
    .await;
    expect(
        vec![debit("9999", None, json!(5), "x"), credit(json!(5), "x")],
        "Account 9999 does not exist in company 10",
    )
    .await;
    expect(vec![debit("1999", None, json!(5), "x"), credit(json!(5), "x")], "Account 1999 is not valid").await;
    expect(vec![debit("6500", Some("999"), json!(5), "x"), credit(json!(5), "x")], "value 999 does not exist").await;
    expect(
        vec![debit("7900", Some("200"), json!(5), "x"), credit(json!(5), "x")],
        "Code part B (Cost Center) is not allowed for account 7900",
    )
    .await;
    let mut no_ref = credit(json!(5), "x");
    no_ref.as_object_mut().unwrap().remove("ReferenceNumber");
    expect(
        vec![debit("7900", None, json!(5), "x"), no_ref],
        "Row 2: Reference serie and reference number are mandatory",
    )
    .await;
    expect(vec![credit(json!(5), "x")], "at least 2 rows").await;

    assert!(api.sim.expire_account("10", "6510", chrono::NaiveDate::from_ymd_opt(year(), 3, 1).unwrap()));
    expect(vec![debit("6510", Some("100"), json!(5), "x"), credit(json!(5), "x")], "Account 6510 is not valid").await;

    assert!(api.sim.set_period_status("10", year(), 3, PeriodStatus::Closed));
    expect(balanced("x"), &format!("Period {}/03 is closed", year())).await;
    assert_eq!(api.sim.voucher_count(), 0);
    // The failed virtuals stay until removed, as in IFS.
    assert_eq!(api.sim.pending_virtual_count(), 9);
}

#[tokio::test]
async fn dedup_query_and_period_listing() {
    let api = start(IfsSimConfig::default()).await;
    for r in ["a", "b", "c"] {
        assert_eq!(api.voucher("10", &balanced(r)).await.status(), StatusCode::OK);
    }
    let resp = api
        .http
        .get(api.url("VoucherRowsAnalysis.svc/VoucherRowSet"))
        .bearer_auth(&api.token)
        .query(&[
            ("$filter", "(ReferenceNumber eq 'a' or ReferenceNumber eq 'b') and Company eq '10'"),
            ("$select", "ReferenceNumber,VoucherNo"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let refs: HashSet<&str> =
        body["value"].as_array().unwrap().iter().map(|r| r["ReferenceNumber"].as_str().unwrap()).collect();
    assert_eq!(refs, HashSet::from(["a", "b"]));
    assert_eq!(body["value"].as_array().unwrap().len(), 4);
    assert!(body["value"][0].get("Account").is_none(), "$select projects");

    let resp = api
        .http
        .get(api.url("VoucherRowsAnalysis.svc/VoucherRowSet"))
        .bearer_auth(&api.token)
        .query(&[("$filter", "ReferenceNumber in ('a','b')")])
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (StatusCode::NOT_IMPLEMENTED, "ODP_NOT_IMPLEMENTED"));

    let resp = api
        .http
        .get(api.url("AccountingPeriodsHandling.svc/AccountingPeriodSet"))
        .bearer_auth(&api.token)
        .query(&[("$filter", format!("Company eq '10' and AccountingYear eq {}", year()))])
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let periods = body["value"].as_array().unwrap();
    assert_eq!(periods.len(), 12);
    assert_eq!(periods[2]["DateFrom"], format!("{}-03-01", year()));
    assert_eq!(periods[2]["PeriodStatus"], "Open");
    assert_eq!(api.sim.counters().count("VoucherRowSet.LIST", 200), 1);
}

#[tokio::test]
async fn paging_follows_next_link_over_a_big_chart() {
    let config = IfsSimConfig { reference: ReferenceData::with_generated(12_000, 0), ..Default::default() };
    let api = start(config).await;
    let first = reqwest::Url::parse_with_params(
        &api.url("AccountsHandling.svc/AccountSet"),
        &[("$filter", "Company eq '10'"), ("$top", "5000"), ("$orderby", "Account")],
    )
    .unwrap();
    let mut next = Some(first.to_string());
    let (mut pages, mut seen) = (0, HashSet::new());
    while let Some(url) = next {
        let body: Value = api.get(&url).await.json().await.unwrap();
        pages += 1;
        for row in body["value"].as_array().unwrap() {
            assert!(seen.insert(row["Account"].as_str().unwrap().to_string()), "duplicate row");
        }
        next = body["@odata.nextLink"].as_str().map(String::from);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 12_010);

    let capped = reqwest::Url::parse_with_params(
        &api.url("AccountsHandling.svc/AccountSet"),
        &[("$top", "9000"), ("$select", "Account")],
    )
    .unwrap();
    let body: Value = api.get(capped.as_str()).await.json().await.unwrap();
    assert_eq!(body["value"].as_array().unwrap().len(), 5000);
    assert!(body["@odata.nextLink"].as_str().unwrap().contains("%24skip=5000"));
}

#[tokio::test]
async fn request_budget_gives_429_with_retry_after() {
    let config = IfsSimConfig { requests_per_minute: 3, time_scale: 0.02, ..Default::default() };
    let api = start(config).await; // request 1: the token
    assert_eq!(api.get("CodeBHandling.svc/CodeBSet").await.status(), StatusCode::OK);
    assert_eq!(api.get("CodeBHandling.svc/CodeBSet").await.status(), StatusCode::OK);
    let resp = api.get("CodeBHandling.svc/CodeBSet").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // The window is 1.2 s long: the wait until it resets rounds up to 1 or 2 seconds.
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(error_of(resp).await.1, "TOO_MANY_REQUESTS");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(api.get("CodeBHandling.svc/CodeBSet").await.status(), StatusCode::OK);

    api.sim.set_faults(IfsFaults { burst_429_next: 1, ..Default::default() });
    let resp = api.get("CodeBHandling.svc/CodeBSet").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    let c = api.sim.counters();
    assert_eq!(c.status_429, 2);
    assert_eq!(c.fault("burst_429"), 1);
}

#[tokio::test]
async fn commit_then_drop_loses_the_answer_but_not_the_voucher() {
    let api = start(IfsSimConfig::default()).await;
    api.sim.set_faults(IfsFaults { commit_then_drop_next: 1, ..Default::default() });
    let (objkey, tag) = api.header("10").await;
    for row in balanced("lost") {
        assert_eq!(api.add_row(&objkey, Some(&tag), &row).await.status(), StatusCode::CREATED);
    }
    let result = api
        .http
        .post(api.url(&format!("VoucherEntryAssistantHandling.svc/VoucherSet(Objkey='{objkey}')/{CREATE}")))
        .bearer_auth(&api.token)
        .header("If-Match", &tag)
        .json(&json!({}))
        .send()
        .await;
    assert!(result.is_err(), "expected a transport error, got {result:?}");
    assert_eq!(api.sim.voucher_count(), 1);
    let resp = api
        .http
        .get(api.url("VoucherRowsAnalysis.svc/VoucherRowSet"))
        .bearer_auth(&api.token)
        .query(&[("$filter", "Company eq '10' and ReferenceSerie eq 'BREX' and ReferenceNumber eq 'lost'")])
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["value"].as_array().unwrap().len(), 2);
    let c = api.sim.counters();
    assert_eq!(c.fault("commit_then_drop"), 1);
    assert_eq!(c.count("CreateVoucher.POST", 0), 1);
}

#[tokio::test]
async fn gateway_faults() {
    let api = start(IfsSimConfig::default()).await;
    api.sim.set_faults(IfsFaults { status_5xx_rate: 1.0, status_5xx_codes: vec![504], ..Default::default() });
    let (status, code, _) = error_of(api.get("CodeBHandling.svc/CodeBSet").await).await;
    assert_eq!((status, code.as_str()), (StatusCode::GATEWAY_TIMEOUT, "ODP_OPERATION_TIMEOUT"));
    api.sim.set_faults(IfsFaults { mi_modified_rate: 1.0, ..Default::default() });
    let (status, code, _) = error_of(api.get("CodeBHandling.svc/CodeBSet").await).await;
    assert_eq!((status, code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "MI_MODIFIED_ERROR"));
    let c = api.sim.counters();
    assert_eq!((c.fault("status_504"), c.fault("mi_modified")), (1, 1));
}

#[tokio::test]
async fn main_deployment_needs_xsrf_for_mutations() {
    let api = start(IfsSimConfig::default()).await;
    let main = format!("{}/main/ifsapplications/projection/v1", api.sim.base_url());
    let header = json!({"Company": "10", "VoucherType": "M", "VoucherDate": date(),
                        "AccountingYear": year(), "AccountingPeriod": 3});
    let resp = api.post(&format!("{main}/VoucherEntryAssistantHandling.svc/VoucherSet"), &header, None).await;
    let (status, code, _) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "CSRF_ERROR"));

    let resp = api.get(&format!("{main}/CodeBHandling.svc/CodeBSet")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let xsrf = cookie.strip_prefix("XSRF-TOKEN=").unwrap().to_string();
    let resp = api
        .http
        .post(format!("{main}/VoucherEntryAssistantHandling.svc/VoucherSet"))
        .bearer_auth(&api.token)
        .header("Cookie", cookie)
        .header("X-XSRF-TOKEN", xsrf)
        .json(&header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}
