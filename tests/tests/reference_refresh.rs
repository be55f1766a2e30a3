//! The IFS reference refresh end to end: the mapping document from the table (moto) → the real IFS client
//! against the simulator (paged lists, code part names, calendar) → the validation report, stored in the
//! table and read back the way the operator CLI does.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Datelike, NaiveDate, Utc};
use shared::aws::DynamoStore;
use shared::aws::report::{DynamoReportStore, REPORT_PK};
use shared::aws::table::LATEST_REPORT_SK;
use shared::domain::{IfsCredentials, Secret};
use shared::ifs::{IfsClient, IfsClientConfig};
use shared::mapping::LoadedMapping;
use shared::ports::ReportStore;
use shared::reference::{FindingKind, ReferenceRefresh, Severity, ValidationReport};
use shared::retry::RetryPolicy;
use sims::aws::{Moto, Stack, StackSpec};
use sims::ifs::{IfsSim, IfsSimConfig, PeriodStatus, ReferenceData};

fn client(sim: &IfsSim) -> IfsClient {
    let (client_id, secret) = sim.client().unwrap();
    let creds = IfsCredentials { client_id, client_secret: Secret::new(secret) };
    let mut config = IfsClientConfig::new(sim.base_url(), sim.realm(), creds);
    config.requests_per_minute = 600_000;
    config.request_timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(20),
        cap: Duration::from_secs(1),
        max_retry_after: Duration::from_secs(1),
        retry_after_jitter: true,
    };
    IfsClient::new(config, reqwest::Client::new()).unwrap()
}

/// Stores `document` as the mapping (docs/contract.md §2) and loads it back as the poller will.
async fn mapping(stack: &Stack, document: &str) -> LoadedMapping {
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name);
    store.store_mapping(document, None).await.unwrap();
    let stored = store.load_mapping().await.unwrap().unwrap();
    LoadedMapping::parse(&stored.document, stored.version).unwrap()
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// The first day of the month after `day`'s.
fn next_month(day: NaiveDate) -> (i32, u32) {
    if day.month() == 12 { (day.year() + 1, 1) } else { (day.year(), day.month() + 1) }
}

const BROKEN_MAPPING: &str = r#"
[ifs]
company = "10"
voucher_type = "M"
reference_serie = "BREX"
credit_account = "2410"

[[rule]]
when = { field = "GL Account", value = "Misc" }
set = { account = "6999" }

[[rule]]
when = { field = "GL Account", value = "Travel" }
set = { account = "6500" }

[[rule]]
when = { field = "GL Account", value = "Software" }
set = { account = "6600", code_b = "200" }

[[rule]]
when = { field = "Entity", value = "Acme Canada" }
set = { company = "20", credit_account = "2415" }
"#;

#[tokio::test]
async fn the_refresh_names_the_unknown_account_and_the_missing_code_part_and_stores_the_report() {
    let stack = Stack::create(&Moto::get(), StackSpec { name: "ref-refresh", ..StackSpec::default() }).await.unwrap();
    let sim = IfsSim::start(IfsSimConfig::default()).await.unwrap();
    let (year, period) = next_month(today());
    assert!(sim.set_period_status("20", year, period, PeriodStatus::Closed), "the demo calendar has next month");
    let loaded = mapping(&stack, BROKEN_MAPPING).await;
    let ddb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let refresh = refresh_for(client(&sim), ddb.clone(), &stack.table_name);

    let report = refresh.refresh(&loaded, today()).await.unwrap();

    let lines: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{} {} {} {}", f.severity.as_str(), f.company, f.source, f.message))
        .collect();
    let next = format!("{year}/{period:02}");
    // Rules #1 and #2 can meet records of either entity, so each is named in both companies.
    let mut expected = Vec::new();
    for company in ["10", "20"] {
        expected.push(format!(
            "error {company} rule #1 rule #1 sets account 6999 which IFS company {company} does not have"
        ));
        expected.push(format!(
            "error {company} rule #2 rule #2 sets account 6500 (Travel) in company {company}, which demands code part B \
             (Cost Center) but no rule that can apply to the same lines in company {company} sets code_b (only rule #3 \
             set it)"
        ));
    }
    assert_eq!(lines[..4], expected[..], "{report}");
    assert_eq!(lines.len(), 5, "{report}");
    assert!(
        lines[4].starts_with(&format!("warning 20 rule #4 IFS company 20's next accounting period {next} (")),
        "a closed period ahead: {}",
        lines[4]
    );
    assert_eq!(report.findings[0].kind, FindingKind::UnknownAccount);
    assert_eq!(report.findings[1].kind, FindingKind::MissingCodePart);
    assert_eq!(report.findings[4].severity, Severity::Warning);
    assert_eq!((report.errors(), report.warnings()), (4, 1));
    assert_eq!(report.mapping_version, Some(1));
    assert_eq!(report.companies.len(), 2);
    assert!(report.companies.iter().all(|c| c.accounts == 10), "{report}");
    // The code part name came from IFS's code part definition, read once per company.
    assert_eq!(sim.counters().count("AccountingCodePartRef.GET", 200), 2);

    // Stored as the latest report, readable the way the operator CLI reads it …
    let store = DynamoReportStore::new(ddb.clone(), &stack.table_name);
    let latest: ValidationReport = store.load_latest().await.unwrap().expect("a stored report");
    assert_eq!(latest, report);
    let printed = latest.to_string();
    assert!(printed.contains("rule #1 sets account 6999 which IFS company 10 does not have"), "{printed}");
    assert!(printed.starts_with("mapping v1 checked against IFS at "), "{printed}");

    // … with the counts as attributes, and a per-run copy that expires.
    let items = ddb
        .query()
        .table_name(&stack.table_name)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(REPORT_PK.into()))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert_eq!(items.len(), 2, "latest + one run");
    let sk = |item: &std::collections::HashMap<String, AttributeValue>| item["sk"].as_s().unwrap().clone();
    let latest_item = items.iter().find(|i| sk(i) == LATEST_REPORT_SK).unwrap();
    assert_eq!(latest_item["errors"].as_n().unwrap(), "4");
    assert_eq!(latest_item["warnings"].as_n().unwrap(), "1");
    assert_eq!(latest_item["mapping_version"].as_n().unwrap(), "1");
    assert!(!latest_item.contains_key("expires_at"), "the latest report stays");
    let run = items.iter().find(|i| sk(i).starts_with("run#")).unwrap();
    let expires: i64 = run["expires_at"].as_n().unwrap().parse().unwrap();
    assert!(expires > Utc::now().timestamp() + 29 * 86_400, "kept about a month");

    // The mapping fixed: the next refresh replaces the latest report with a clean one.
    let fixed = BROKEN_MAPPING.replace("account = \"6999\"", "account = \"6700\"").replace(
        "[[rule]]\nwhen = { field = \"Entity\"",
        "[[rule]]\nwhen = { department = \"*\" }\nset = { code_b = \"100\" }\n\n[[rule]]\nwhen = { field = \"Entity\"",
    );
    let store_mapping = DynamoStore::new(ddb.clone(), &stack.table_name);
    store_mapping.store_mapping(&fixed, Some(1)).await.unwrap();
    let stored = store_mapping.load_mapping().await.unwrap().unwrap();
    let loaded = LoadedMapping::parse(&stored.document, stored.version).unwrap();
    sim.set_period_status("20", year, period, PeriodStatus::Open);
    let clean = refresh.refresh(&loaded, today()).await.unwrap();
    assert!(clean.is_clean(), "{clean}");
    let latest = store.load_latest().await.unwrap().unwrap();
    assert_eq!((latest.mapping_version, latest.errors()), (Some(2), 0));
}

#[tokio::test]
async fn more_than_5000_accounts_are_read_in_full_through_next_link() {
    let stack = Stack::create(&Moto::get(), StackSpec { name: "ref-paging", ..StackSpec::default() }).await.unwrap();
    let document = r#"
        [ifs]
        company = "10"
        voucher_type = "M"
        reference_serie = "BREX"
        credit_account = "2410"
        [[rule]]
        when = { field = "GL Account", value = "Generated" }
        set = { account = "105999" }
        [[rule]]
        when = { field = "GL Account", value = "Travel" }
        set = { account = "6500" }
        [[rule]]
        when = { department = "Engineering" }
        set = { code_b = "200" }
    "#;
    let loaded = mapping(&stack, document).await;

    // 6 010 accounts in company 10: pages of 5 000 (our $top) + 1 010.
    let sim = IfsSim::start(IfsSimConfig { reference: ReferenceData::with_generated(6000, 0), ..Default::default() })
        .await
        .unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let report = refresh_for(client(&sim), ddb.clone(), &stack.table_name).refresh(&loaded, today()).await.unwrap();
    assert!(report.is_clean(), "account 105999 is on the second page: {report}");
    assert_eq!(report.companies[0].accounts, 6010);
    assert_eq!(sim.counters().count("AccountSet.LIST", 200), 2, "5000 + 1010");

    // A server handing out pages of 1 000 under our $top=5000: only following @odata.nextLink reads them all.
    let small = IfsSim::start(IfsSimConfig {
        reference: ReferenceData::with_generated(6000, 0),
        max_page_size: 1000,
        ..Default::default()
    })
    .await
    .unwrap();
    let report = refresh_for(client(&small), ddb, &stack.table_name).refresh(&loaded, today()).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.companies[0].accounts, 6010);
    assert_eq!(small.counters().count("AccountSet.LIST", 200), 7, "six pages of 1000 and one of 10");
    // The same refresh without the generated account on a page: 105999 unknown proves the check reads them.
    let gone = IfsSim::start(IfsSimConfig { reference: ReferenceData::with_generated(5000, 0), ..Default::default() })
        .await
        .unwrap();
    let report = refresh_for(client(&gone), aws_sdk_dynamodb::Client::new(&stack.sdk), &stack.table_name)
        .refresh(&loaded, today())
        .await
        .unwrap();
    let messages: Vec<&str> = report.findings.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(messages, ["rule #1 sets account 105999 which IFS company 10 does not have"]);
}

/// The refresh as the poller wires it: reading through the client's reference reader, storing in the table.
fn refresh_for(ifs: IfsClient, ddb: aws_sdk_dynamodb::Client, table: &str) -> ReferenceRefresh {
    ReferenceRefresh::new(
        std::sync::Arc::new(ifs.reference().clone()),
        std::sync::Arc::new(DynamoReportStore::new(ddb, table)),
    )
}
