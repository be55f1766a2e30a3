//! The IFS simulator playing tenants that differ from the documented IFS (`sims::ifs::IfsTenant`), over
//! real HTTP: `$batch` absent, `$batch` without ETag references, projections a release does not ship, and
//! that nothing is left behind (open / removed virtual vouchers).

use chrono::{Datelike, Utc};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sims::ifs::batch::{MimePart, boundary, render_multipart, split_multipart};
use sims::ifs::{BatchSupport, IfsSim, IfsSimConfig, IfsTenant};

const ENTRY: &str = "VoucherEntryAssistantHandling.svc";
const CREATE: &str = "IfsApp.VoucherEntryAssistantHandling.VoucherEntry_CreateVoucher";
const REMOVE: &str = "IfsApp.VoucherEntryAssistantHandling.VoucherEntry_RemoveTempVoucher";

struct Api {
    sim: IfsSim,
    http: Client,
    token: String,
}

async fn start(tenant: IfsTenant) -> Api {
    let sim = IfsSim::start(IfsSimConfig { tenant, ..IfsSimConfig::default() }).await.unwrap();
    let http = Client::new();
    let body: Value = http
        .post(sim.token_url())
        .form(&[("grant_type", "client_credentials"), ("client_id", "brex-connector"), ("client_secret", "sim-secret")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    Api { sim, http, token }
}

fn batch_mode(batch: BatchSupport) -> IfsTenant {
    IfsTenant { batch, ..IfsTenant::default() }
}

fn header() -> Value {
    let year = Utc::now().year();
    json!({
        "Company": "10", "VoucherType": "M", "VoucherDate": format!("{year}-03-15"),
        "AccountingYear": year, "AccountingPeriod": 3, "VoucherStatus": "NotApproved",
    })
}

fn row(side: &str, account: &str, amount: &str) -> Value {
    let mut r = json!({"Account": account, "CurrencyCode": "USD", side: amount,
                       "ReferenceSerie": "BREX", "ReferenceNumber": "accr_t1"});
    if account == "6500" {
        r["CodeB"] = json!("200");
    }
    r
}

/// One operation of a batch: (Content-ID, method, target, If-Match, body).
type Op<'a> = (Option<u32>, &'a str, String, Option<&'a str>, Option<Value>);

fn http_part((id, method, target, if_match, body): &Op<'_>) -> MimePart {
    let mut headers = vec![("Content-Type".into(), "application/http".into())];
    if let Some(id) = id {
        headers.push(("Content-ID".into(), id.to_string()));
    }
    let mut text = format!("{method} {target} HTTP/1.1\r\nAccept: application/json\r\n");
    if let Some(tag) = if_match {
        text.push_str(&format!("If-Match: {tag}\r\n"));
    }
    match body {
        Some(b) => text.push_str(&format!("Content-Type: application/json\r\n\r\n{b}")),
        None => text.push_str("\r\n"),
    }
    MimePart { headers, body: text }
}

/// Top-level parts: a change set (`Some`) or a single operation outside one.
fn batch_body(items: &[Vec<Op<'_>>], change_set: bool) -> String {
    let parts: Vec<MimePart> = items
        .iter()
        .enumerate()
        .flat_map(|(i, ops)| {
            if change_set {
                let cs = format!("cs{i}");
                let inner: Vec<MimePart> = ops.iter().map(http_part).collect();
                vec![MimePart {
                    headers: vec![("Content-Type".into(), format!("multipart/mixed;boundary={cs}"))],
                    body: render_multipart(&cs, &inner).trim_end().to_owned(),
                }]
            } else {
                ops.iter().map(http_part).collect()
            }
        })
        .collect();
    render_multipart("b0", &parts)
}

/// One answered operation: status and JSON body (Null when empty).
#[derive(Debug)]
struct PartAnswer {
    status: u16,
    body: Value,
}

fn part_answer(part: &MimePart) -> PartAnswer {
    let status = part.body.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
    let body = part.body.split_once("\r\n\r\n").map(|(_, b)| b.trim()).unwrap_or("");
    PartAnswer { status, body: if body.is_empty() { Value::Null } else { serde_json::from_str(body).unwrap() } }
}

/// A batch answer: per top-level part, the answers of its operations (one for a failed change set or a
/// single operation).
async fn answers(resp: reqwest::Response) -> Vec<Vec<PartAnswer>> {
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let text = resp.text().await.unwrap();
    let parts = split_multipart(&text, &boundary(&ct).unwrap()).unwrap();
    parts
        .iter()
        .map(|p| match p.header("content-type").and_then(boundary) {
            Some(inner) => split_multipart(&p.body, &inner).unwrap().iter().map(part_answer).collect(),
            None => vec![part_answer(p)],
        })
        .collect()
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.sim.projection_url())
    }

    async fn batch(&self, projection: &str, body: String) -> reqwest::Response {
        self.http
            .post(self.url(&format!("{projection}/$batch")))
            .bearer_auth(&self.token)
            .header("Content-Type", "multipart/mixed;boundary=b0")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(&self.token).send().await.unwrap()
    }

    /// A virtual voucher step by step: (Objkey, ETag).
    async fn virtual_voucher(&self) -> (String, String) {
        let resp =
            self.http.post(self.url(&format!("{ENTRY}/VoucherSet"))).bearer_auth(&self.token).json(&header()).send();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let tag = resp.headers()["etag"].to_str().unwrap().to_owned();
        let body: Value = resp.json().await.unwrap();
        (body["Objkey"].as_str().unwrap().to_owned(), tag)
    }

    async fn admin(&self, method: reqwest::Method, route: &str, body: Option<&str>) -> reqwest::Response {
        let mut req = self.http.request(method, format!("{}/_sim/{route}", self.sim.base_url()));
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b.to_owned());
        }
        req.send().await.unwrap()
    }
}

/// The whole voucher in one change set, with `If-Match: $1` on every guarded operation.
fn voucher_change_set<'a>() -> Vec<Op<'a>> {
    vec![
        (Some(1), "POST", "VoucherSet".into(), None, Some(header())),
        (
            Some(2),
            "POST",
            "$1/VoucherPostingArray".into(),
            Some("$1"),
            Some(row("CurrencyDebetAmount", "6500", "10.00")),
        ),
        (
            Some(3),
            "POST",
            "$1/VoucherPostingArray".into(),
            Some("$1"),
            Some(row("CurrencyCreditAmount", "2410", "10.00")),
        ),
        (Some(4), "POST", format!("$1/{CREATE}"), Some("$1"), Some(json!({}))),
    ]
}

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn full_tenant_commits_a_change_set_with_etag_references() {
    let api = start(IfsTenant::default()).await;
    let resp = api.batch(ENTRY, batch_body(&[voucher_change_set()], true)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let got = answers(resp).await;
    let statuses: Vec<u16> = got[0].iter().map(|a| a.status).collect();
    assert_eq!(statuses, [201, 201, 201, 200]);
    assert_eq!(got[0][3].body["value"], 1, "the voucher number");
    let c = api.sim.counters();
    assert_eq!((c.changesets_committed, c.vouchers_created, c.virtual_vouchers_open), (1, 1, 0));
}

#[tokio::test]
async fn absent_batch_answers_404_runs_nothing_and_can_be_switched_at_runtime() {
    let api = start(batch_mode(BatchSupport::Absent)).await;
    let resp = api.batch(ENTRY, batch_body(&[voucher_change_set()], true)).await;
    assert_eq!(error_code(resp).await, (404, "ODP_RESOURCE_NOTFOUND".to_owned()));
    let c = api.sim.counters();
    assert_eq!(c.count("Batch.POST", 404), 1);
    assert!(c.batch_parts.is_empty(), "no part ran: {:?}", c.batch_parts);
    assert_eq!((c.changesets_committed, c.virtual_vouchers_open, c.vouchers_created), (0, 0, 0));
    assert_eq!(api.sim.voucher_count(), 0);
    // Step by step still works on that tenant.
    let (objkey, tag) = api.virtual_voucher().await;
    assert!(!objkey.is_empty() && !tag.is_empty());

    api.sim.set_batch_support(BatchSupport::Full);
    let resp = api.batch(ENTRY, batch_body(&[voucher_change_set()], true)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(api.sim.counters().changesets_committed, 1);
}

#[tokio::test]
async fn without_etag_references_if_match_dollar_n_fails_and_rolls_back() {
    let api = start(batch_mode(BatchSupport::NoEtagReferences)).await;
    let resp = api.batch(ENTRY, batch_body(&[voucher_change_set()], true)).await;
    assert_eq!(resp.status(), StatusCode::OK, "the $batch itself is served");
    let got = answers(resp).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), 1, "a failed change set is answered with its failing part");
    assert_eq!(got[0][0].status, 412);
    assert_eq!(got[0][0].body["error"]["code"], "ODP_PRECONDITION_FAILED");
    let c = api.sim.counters();
    assert_eq!((c.changesets_rolled_back, c.changesets_committed, c.status_412), (1, 0, 1));
    assert_eq!(c.part_count("VoucherSet.POST", 201), 1, "the header was created, then rolled back");
    assert_eq!(c.part_count("VoucherPostingArray.POST", 412), 1);
    assert_eq!((c.virtual_vouchers_open, c.vouchers_created), (0, 0), "nothing left behind");

    // URL references resolve (`*` passes the guard), and a real ETag in If-Match works.
    let star = vec![
        (Some(1), "POST", "VoucherSet".into(), None, Some(header())),
        (Some(2), "POST", "$1/VoucherPostingArray".into(), Some("*"), Some(row("CurrencyDebetAmount", "6500", "1"))),
    ];
    let got = answers(api.batch(ENTRY, batch_body(&[star], true)).await).await;
    assert_eq!(got[0].iter().map(|a| a.status).collect::<Vec<_>>(), [201, 201]);
    let (objkey, tag) = api.virtual_voucher().await;
    let real = vec![(
        Some(1),
        "POST",
        format!("VoucherSet(Objkey='{objkey}')/VoucherPostingArray"),
        Some(tag.as_str()),
        Some(row("CurrencyDebetAmount", "6500", "1")),
    )];
    let got = answers(api.batch(ENTRY, batch_body(&[real], true)).await).await;
    assert_eq!(got[0][0].status, 201, "{:?}", got[0][0].body);
    assert_eq!(api.sim.counters().virtual_vouchers_open, 2, "both virtuals of this test are still open");
}

#[tokio::test]
async fn remove_temp_voucher_step_by_step_and_inside_a_change_set() {
    let api = start(IfsTenant::default()).await;
    let (objkey, tag) = api.virtual_voucher().await;
    assert_eq!(api.sim.counters().virtual_vouchers_open, 1);
    let remove = |tag: Option<String>| {
        let mut req = api.http.post(api.url(&format!("{ENTRY}/VoucherSet(Objkey='{objkey}')/{REMOVE}")));
        req = req.bearer_auth(&api.token).json(&json!({}));
        if let Some(t) = tag {
            req = req.header("If-Match", t);
        }
        req.send()
    };
    assert_eq!(remove(None).await.unwrap().status(), StatusCode::PRECONDITION_REQUIRED, "If-Match is required");
    assert_eq!(remove(Some(tag.clone())).await.unwrap().status(), StatusCode::NO_CONTENT);
    let c = api.sim.counters();
    assert_eq!((c.virtual_vouchers_open, c.virtual_vouchers_removed), (0, 1));
    assert_eq!(remove(Some(tag)).await.unwrap().status(), StatusCode::NOT_FOUND, "it is gone");

    // Create and remove in one change set: `If-Match: $1` resolves to the new virtual's ETag.
    let probe = vec![
        (Some(1), "POST", "VoucherSet".into(), None, Some(header())),
        (Some(2), "POST", format!("$1/{REMOVE}"), Some("$1"), Some(json!({}))),
    ];
    let got = answers(api.batch(ENTRY, batch_body(std::slice::from_ref(&probe), true)).await).await;
    assert_eq!(got[0].iter().map(|a| a.status).collect::<Vec<_>>(), [201, 204]);
    let c = api.sim.counters();
    assert_eq!((c.virtual_vouchers_open, c.virtual_vouchers_removed, c.changesets_committed), (0, 2, 1));
    assert_eq!(c.part_count("RemoveTempVoucher.POST", 204), 1);

    // The same change set where `$1` is not resolved: 412, rolled back, nothing removed, nothing left.
    api.sim.set_batch_support(BatchSupport::NoEtagReferences);
    let got = answers(api.batch(ENTRY, batch_body(&[probe], true)).await).await;
    assert_eq!(got[0][0].status, 412);
    let c = api.sim.counters();
    assert_eq!((c.virtual_vouchers_open, c.virtual_vouchers_removed, c.changesets_rolled_back), (0, 2, 1));
    assert_eq!(api.sim.voucher_count(), 0, "nothing committed");
}

#[tokio::test]
async fn a_batch_of_one_read_outside_any_change_set_is_answered() {
    let api = start(IfsTenant::default()).await;
    let read = vec![(None, "GET", "VoucherSet?$top=1".into(), None, None)];
    let resp = api.batch(ENTRY, batch_body(std::slice::from_ref(&read), false)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let got = answers(resp).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][0].status, 200, "{:?}", got[0][0].body);
    assert_eq!(got[0][0].body["value"], json!([]), "no virtual voucher exists yet");
    assert!(got[0][0].body["@odata.context"].as_str().unwrap().ends_with("$metadata#VoucherSet"));

    let (objkey, _) = api.virtual_voucher().await;
    let got = answers(api.batch(ENTRY, batch_body(std::slice::from_ref(&read), false)).await).await;
    assert_eq!(got[0][0].body["value"][0]["Objkey"], objkey.as_str());
    let c = api.sim.counters();
    assert_eq!(c.part_count("VoucherSet.LIST", 200), 2);
    assert_eq!(c.count("Batch.POST", 200), 2);
    // The same read outside $batch, and a GET inside a change set is still refused.
    let direct: Value = api.get(&format!("{ENTRY}/VoucherSet?$top=1")).await.json().await.unwrap();
    assert_eq!(direct["value"][0]["Objkey"], objkey.as_str());
    let got = answers(api.batch(ENTRY, batch_body(&[read], true)).await).await;
    assert_eq!(got[0][0].status, 400);
}

#[tokio::test]
async fn missing_projections_answer_404_directly_in_batch_and_for_their_own_batch() {
    let tenant = IfsTenant { missing_projections: vec!["VoucherRowsAnalysis.svc".into()], ..IfsTenant::default() };
    let api = start(tenant).await;
    let (status, code) = error_code(api.get("VoucherRowsAnalysis.svc/VoucherRowSet?$top=1").await).await;
    assert_eq!((status, code.as_str()), (404, "ODP_RESOURCE_NOTFOUND"));
    assert_eq!(api.get("AccountsHandling.svc/AccountSet?$top=1").await.status(), StatusCode::OK);
    assert_eq!(api.get(&format!("{ENTRY}/VoucherSet?$top=1")).await.status(), StatusCode::OK);
    let c = api.sim.counters();
    assert_eq!(c.count("VoucherRowSet.LIST", 404), 1);

    let body = batch_body(&[vec![(None, "GET", "VoucherRowSet?$top=1".into(), None, None)]], false);
    assert_eq!(error_code(api.batch("VoucherRowsAnalysis.svc", body).await).await.0, 404);
    // A part addressing the missing projection by absolute path inside another projection's batch.
    let path = "/int/ifsapplications/projection/v1/VoucherRowsAnalysis.svc/VoucherRowSet?$top=1".to_owned();
    let got = answers(api.batch(ENTRY, batch_body(&[vec![(None, "GET", path, None, None)]], false)).await).await;
    assert_eq!(got[0][0].status, 404);
    assert_eq!(got[0][0].body["error"]["code"], "ODP_RESOURCE_NOTFOUND");
}

#[tokio::test]
async fn tenant_admin_route_reads_and_sets_the_profile() {
    let api = start(IfsTenant::default()).await;
    let got: Value = api.admin(reqwest::Method::GET, "tenant", None).await.json().await.unwrap();
    assert_eq!(got, json!({"batch": "full", "missing_projections": []}));
    let set = api.admin(reqwest::Method::PUT, "tenant", Some(r#"{"batch":"absent"}"#)).await;
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(api.sim.tenant(), batch_mode(BatchSupport::Absent));
    let resp = api.batch(ENTRY, batch_body(&[voucher_change_set()], true)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "the admin route changed the live behaviour");
    let bad = api.admin(reqwest::Method::PUT, "tenant", Some(r#"{"batch":"sometimes"}"#)).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(api.sim.tenant().batch, BatchSupport::Absent, "a refused document changes nothing");
    let missing = r#"{"missing_projections":["AccountsHandling"]}"#;
    assert_eq!(api.admin(reqwest::Method::POST, "tenant", Some(missing)).await.status(), StatusCode::OK);
    assert_eq!(api.sim.tenant().batch, BatchSupport::Full, "missing fields take their defaults");
    assert_eq!(api.get("AccountsHandling.svc/AccountSet?$top=1").await.status(), StatusCode::NOT_FOUND);

    // The counters route carries the computed figure.
    let _ = api.virtual_voucher().await;
    let counters: Value = api.admin(reqwest::Method::GET, "counters", None).await.json().await.unwrap();
    assert_eq!(
        (counters["virtual_vouchers_open"].as_u64(), counters["virtual_vouchers_removed"].as_u64()),
        (Some(1), Some(0))
    );
}

#[tokio::test]
async fn the_binary_takes_the_tenant_profile_as_flags() {
    use std::io::BufRead;
    let exe = env!("CARGO_BIN_EXE_ifs-sim");
    let refused = std::process::Command::new(exe).args(["--batch", "sometimes"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no_etag_references"));

    /// Stops the simulator process however the test ends.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Running(
        std::process::Command::new(exe)
            .args(["--batch", "no_etag_references", "--missing-projection", "VoucherRowsAnalysis.svc"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let started: Value = serde_json::from_str(&line).unwrap();
    let url = format!("{}/_sim/tenant", started["ifs_url"].as_str().unwrap());
    let tenant: Value = Client::new().get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(tenant, json!({"batch": "no_etag_references", "missing_projections": ["VoucherRowsAnalysis.svc"]}));
}
