//! What this tenant's IFS serves, found by asking it (for `connector doctor`): whether `$batch` exists,
//! whether it resolves ETag references (`If-Match: $1`) inside a change set, whether every configured
//! projection / entity-set name answers, and from that which flow the poster gets.
//!
//! Every probe reads, except [`probe_etag_references`], which creates one virtual voucher and removes it in
//! the same change set; nothing is ever committed (no `CreateVoucher` is sent). They go through the
//! transport like every other request (budget, token, retries).

use chrono::NaiveDate;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Map, Value};

use super::api_names::{BatchMode, IfsApiNames};
use super::error::{IfsError, parse_error_body};
use super::multipart::{ChangeSetAnswer, PartResponse, parse_batch_response, write_operation};
use super::reference::IfsReference;
use super::transport::{Body, IfsTransport, JSON_MEDIA_TYPE, Request, Resend};
use crate::domain::{CompanyCode, VoucherType};
use crate::proposal::CodePart;

/// IFS's code for a business-rule refusal (`Error_SYS`).
const DATABASE_ERROR: &str = "DATABASE_ERROR";

/// Text the probe's virtual voucher carries, so anyone who sees it in IFS knows where it came from.
const PROBE_TEXT: &str = "connector doctor probe (removed in the same change set)";

/// What `POST {voucher_entry_projection}/$batch` with one read did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum BatchProbe {
    /// Answered multipart with the read's answer.
    Supported,
    /// The route is not there (404, 405 or 501), as on a release or gateway without `$batch`.
    Absent { status: u16, code: String, message: String },
    /// Served, but the answer is unusable (refused a plain read, not multipart, no answer for the read).
    Broken { problem: String },
    /// The probe itself failed (token, network, 5xx): it says nothing about `$batch`.
    Failed { error: String },
}

/// What one change set `POST VoucherSet` + `POST $1/<remove_voucher_action>` with `If-Match: $1` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum EtagReferenceProbe {
    /// Both operations succeeded: `$1` in If-Match stood for the new virtual voucher's ETag (and it is gone).
    Supported,
    /// The guarded operation was refused (412, 428 or 400): the change set rolled back.
    NotUnderstood { status: u16, code: String, message: String },
    /// `$batch` itself is not there.
    BatchAbsent { status: u16, code: String, message: String },
    /// Nothing can be concluded (no period for today, the header was refused, the request failed …).
    Inconclusive { problem: String },
}

/// One configured name read with `$top=1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameProbe {
    /// What the set is for, e.g. `voucher rows`.
    pub what: String,
    /// The `[ifs.api]` keys naming the projection and the entity set; empty for the code-part sets,
    /// whose names are fixed.
    pub settings: Vec<&'static str>,
    /// The path read, relative to the projection root.
    pub path: String,
    /// HTTP status of a refusal (`None`: the read worked, or no answer came).
    pub status: Option<u16>,
    /// Why the read failed; `None` when it worked.
    pub error: Option<String>,
}

impl NameProbe {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// How to fix a failed read.
    pub fn fix(&self) -> Option<String> {
        self.error.as_ref()?;
        let projection = self.path.split('/').next().unwrap_or_default();
        Some(match (self.status, self.settings.as_slice()) {
            (Some(404), [projection_key, set_key]) => format!(
                "set [ifs.api] {projection_key} (and {set_key}) to your release's names; the API Explorer lists them"
            ),
            (Some(404), _) => {
                format!("this release does not serve {projection}: check the code parts the mapping sets")
            }
            (Some(401 | 403), _) => format!("grant the IAM client the permission set of {projection}"),
            _ => "check IFS_URL and the IFS checks above".to_owned(),
        })
    }
}

/// The flow the poster uses on this tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Vouchers travel in `$batch` change sets.
    Batch,
    /// Header, rows and `CreateVoucher` as separate requests.
    StepByStep,
    /// `[ifs.api] batch = true` on a tenant whose `$batch` cannot post: records are held.
    Blocked,
    /// The probes could not tell.
    Unknown,
}

/// [`decide_flow`]'s verdict: the flow, one line saying why, and a fix when the flow cannot post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowDecision {
    pub flow: Flow,
    /// e.g. `flow: step by step — $batch answered 404 ODP_RESOURCE_NOTFOUND (auto falls back; …)`.
    pub summary: String,
    pub fix: Option<String>,
}

/// The step-by-step flow's cost, as the operator budgets IFS requests.
const STEP_COST: &str = "2 + rows requests per voucher";

/// Which flow `[ifs.api] batch` gives with what the probes found (`etag` is `None` without
/// `--probe-writes`).
pub fn decide_flow(api: &IfsApiNames, batch: &BatchProbe, etag: Option<&EtagReferenceProbe>) -> FlowDecision {
    let batch_cost = format!("up to {} vouchers per request", api.batch_max_vouchers.max(1));
    let hold_fix = Some(
        "set [ifs.api] batch = \"auto\" (or false) and push the mapping (`connector mapping push FILE`)".to_owned(),
    );
    let decision = |flow, summary: String, fix| FlowDecision { flow, summary: format!("flow: {summary}"), fix };
    let refusal =
        |status: u16, code: &str| if code.is_empty() { status.to_string() } else { format!("{status} {code}") };
    let etag_note = match etag {
        Some(EtagReferenceProbe::Supported) => "; If-Match: $1 resolves".to_owned(),
        Some(EtagReferenceProbe::Inconclusive { problem }) => format!("; If-Match: $1 not checked: {problem}"),
        _ => "; If-Match: $1 not checked (--probe-writes)".to_owned(),
    };
    if api.batch == BatchMode::Off {
        let note = if *batch == BatchProbe::Supported { "; this tenant answers $batch" } else { "" };
        return decision(Flow::StepByStep, format!("step by step — [ifs.api] batch = false ({STEP_COST}){note}"), None);
    }
    let forced = api.batch == BatchMode::On;
    match (batch, etag) {
        (BatchProbe::Failed { error }, _) => decision(
            Flow::Unknown,
            format!("unknown — the $batch probe failed: {error}"),
            Some("fix the IFS access reported above, then run doctor again".to_owned()),
        ),
        (BatchProbe::Absent { status, code, .. }, _)
        | (_, Some(EtagReferenceProbe::BatchAbsent { status, code, .. })) => {
            let why = format!("$batch answered {}", refusal(*status, code));
            if forced {
                decision(Flow::Blocked, format!("none — [ifs.api] batch = true but {why}: records are held"), hold_fix)
            } else {
                decision(Flow::StepByStep, format!("step by step — {why} (auto falls back; {STEP_COST})"), None)
            }
        }
        (BatchProbe::Broken { problem }, _) if forced => {
            let fix =
                Some("set [ifs.api] batch = false and push the mapping (`connector mapping push FILE`)".to_owned());
            decision(Flow::Blocked, format!("none — $batch is served but unusable: {problem}"), fix)
        }
        (BatchProbe::Broken { problem }, _) => decision(
            Flow::StepByStep,
            format!("step by step — $batch is served but unusable: {problem} (auto falls back; {STEP_COST})"),
            None,
        ),
        (BatchProbe::Supported, Some(EtagReferenceProbe::NotUnderstood { status, code, .. })) => {
            let why = format!("$batch does not resolve If-Match: $1 ({})", refusal(*status, code));
            if forced {
                decision(Flow::Blocked, format!("none — [ifs.api] batch = true but {why}: records are held"), hold_fix)
            } else {
                decision(Flow::StepByStep, format!("step by step — {why} (auto falls back; {STEP_COST})"), None)
            }
        }
        (BatchProbe::Supported, _) => {
            let how = if forced { "[ifs.api] batch = true; $batch answered" } else { "$batch answered" };
            decision(Flow::Batch, format!("$batch — {how} ({batch_cost}){etag_note}"), None)
        }
    }
}

fn new_boundary() -> String {
    format!("probe_{}", uuid::Uuid::new_v4().simple())
}

/// `status code: message` of a part's answer.
fn describe(part: &PartResponse) -> (String, String) {
    let e = parse_error_body(part.body.as_bytes());
    (e.code, e.message)
}

/// `$batch` missing: the statuses a server without the route gives.
fn route_missing(e: &IfsError) -> Option<(u16, String, String)> {
    match e {
        IfsError::Rejected { status: status @ (404 | 405 | 501), code, message }
        | IfsError::Unsupported { status: status @ (404 | 405 | 501), code, message, .. } => {
            Some((*status, code.clone(), message.clone()))
        }
        _ => None,
    }
}

/// Sends a `$batch` to the voucher-entry projection holding one read outside any change set.
pub async fn probe_batch(transport: &IfsTransport) -> BatchProbe {
    let api = transport.api();
    let url = match transport.url(&format!("{}/$batch", api.voucher_entry_projection)) {
        Ok(u) => u,
        Err(e) => return BatchProbe::Failed { error: e.to_string() },
    };
    let boundary = new_boundary();
    // The assistant's own entity set (the virtual `VoucherEntry`): it exists
    // wherever vouchers can be posted, and reading it lists the caller's own virtual vouchers (normally
    // none), so the probe touches nothing. A read of another projection's set would test that one.
    let text = format!(
        "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
         GET {}?$top=1 HTTP/1.1\r\nAccept: {JSON_MEDIA_TYPE}\r\n\r\n\r\n--{boundary}--\r\n",
        api.voucher_entry_set
    );
    let req = Request {
        method: Method::POST,
        url,
        body: Body::Batch { boundary: &boundary, text: &text },
        if_match: None,
        // One read: sending it again cannot change anything.
        resend: Resend::Always,
    };
    let resp = match transport.execute(&req).await {
        Ok(resp) => resp,
        Err(e) => {
            return match (route_missing(&e), e) {
                (Some((status, code, message)), _) => BatchProbe::Absent { status, code, message },
                (None, IfsError::Rejected { status, code, message }) => {
                    BatchProbe::Broken { problem: format!("a plain read was refused: {status} {code}: {message}") }
                }
                (None, e) => BatchProbe::Failed { error: e.to_string() },
            };
        }
    };
    let answers = match parse_batch_response(resp.content_type.as_deref().unwrap_or(""), &resp.body) {
        Ok(a) => a,
        Err(problem) => return BatchProbe::Broken { problem },
    };
    // A part outside a change set parses as `Failed` whatever its status; its status tells.
    match answers.as_slice() {
        [ChangeSetAnswer::Failed(part)] if (200..300).contains(&part.status) => {
            let listed = serde_json::from_str::<Map<String, Value>>(&part.body)
                .ok()
                .is_some_and(|m| m.get("value").is_some_and(Value::is_array));
            if listed {
                BatchProbe::Supported
            } else {
                BatchProbe::Broken { problem: "the read's answer inside $batch has no value array".into() }
            }
        }
        [ChangeSetAnswer::Failed(part)] => {
            let (code, message) = describe(part);
            BatchProbe::Broken { problem: format!("the read inside $batch answered {} {code}: {message}", part.status) }
        }
        [] => BatchProbe::Broken { problem: "the $batch answer holds no answer for the read".into() },
        other => BatchProbe::Broken { problem: format!("{} answers for one read", other.len()) },
    }
}

/// One change set: `POST VoucherSet` (Content-ID 1; `company`, `voucher_type`, `date` and its accounting
/// year/period from the calendar), then `POST $1/<remove_voucher_action>` with `If-Match: $1`. Nothing is
/// committed either way: the virtual voucher is removed, or the change set rolls back.
pub async fn probe_etag_references(
    transport: &IfsTransport,
    reference: &IfsReference,
    company: &CompanyCode,
    voucher_type: &VoucherType,
    date: NaiveDate,
) -> EtagReferenceProbe {
    let api = transport.api();
    let inconclusive = |problem: String| EtagReferenceProbe::Inconclusive { problem };
    if api.remove_voucher_action.trim().is_empty() {
        return inconclusive("[ifs.api] remove_voucher_action is empty, so nothing would remove the probe".into());
    }
    let period = match reference.accounting_period(company, date).await {
        Ok(Some(p)) => p,
        Ok(None) => return inconclusive(format!("company {company} has no accounting period for {date}")),
        Err(e) => return inconclusive(format!("reading the calendar: {e}")),
    };
    let url = match transport.url(&format!("{}/$batch", api.voucher_entry_projection)) {
        Ok(u) => u,
        Err(e) => return inconclusive(e.to_string()),
    };
    // The fields the poster's header carries (voucher::header_body), so the probe meets the same rules.
    let header = serde_json::json!({
        "Company": company.as_str(),
        "VoucherType": voucher_type.as_str(),
        "VoucherDate": date.format("%Y-%m-%d").to_string(),
        "AccountingYear": period.accounting_year,
        "AccountingPeriod": period.accounting_period,
        "VoucherText2": PROBE_TEXT,
    });
    let boundary = new_boundary();
    let changeset = format!("{boundary}_cs");
    let mut text = format!("--{boundary}\r\nContent-Type: multipart/mixed;boundary={changeset}\r\n\r\n");
    text.push_str(&format!("--{changeset}\r\n"));
    write_operation(&mut text, 1, &api.voucher_entry_set, None, &header.to_string());
    text.push_str(&format!("--{changeset}\r\n"));
    write_operation(&mut text, 2, &format!("$1/{}", api.remove_voucher_action), Some(1), "{}");
    text.push_str(&format!("--{changeset}--\r\n--{boundary}--\r\n"));
    let req = Request {
        method: Method::POST,
        url,
        body: Body::Batch { boundary: &boundary, text: &text },
        if_match: None,
        // A lost answer is not sent again blindly: each attempt makes a virtual voucher.
        resend: Resend::Answered,
    };
    let resp = match transport.execute(&req).await {
        Ok(resp) => resp,
        Err(e) => {
            return match route_missing(&e) {
                Some((status, code, message)) => EtagReferenceProbe::BatchAbsent { status, code, message },
                None => inconclusive(e.to_string()),
            };
        }
    };
    let content_type = resp.content_type.as_deref().unwrap_or("");
    let answers = match parse_batch_response(content_type, &resp.body) {
        Ok(a) => a,
        Err(e) => return inconclusive(format!("unreadable $batch answer: {e}")),
    };
    match answers.as_slice() {
        [ChangeSetAnswer::Applied(ops)] if ops.len() == 2 && ops.iter().all(|op| (200..300).contains(&op.status)) => {
            EtagReferenceProbe::Supported
        }
        [ChangeSetAnswer::Applied(ops)] => inconclusive(format!("the change set applied with {} answers", ops.len())),
        [ChangeSetAnswer::Failed(part)] => {
            let (code, message) = describe(part);
            let failed_op = part.content_id.as_deref();
            // The header (part 1) failing says nothing about references; a business refusal
            // (DATABASE_ERROR) without a Content-ID is taken for it too.
            let header_failed = failed_op == Some("1") || (failed_op.is_none() && code == DATABASE_ERROR);
            match part.status {
                _ if header_failed => inconclusive(format!(
                    "creating the probe's virtual voucher was refused: {} {code}: {message}",
                    part.status
                )),
                412 | 428 | 400 => EtagReferenceProbe::NotUnderstood { status: part.status, code, message },
                status => inconclusive(format!("the change set was refused: {status} {code}: {message}")),
            }
        }
        other => inconclusive(format!("{} answers for one change set", other.len())),
    }
}

/// Reads each configured projection / entity set (`$top=1`) and each code-part set in `code_parts`.
pub async fn probe_names(transport: &IfsTransport, code_parts: &[CodePart]) -> Vec<NameProbe> {
    let api = transport.api();
    let mut targets: Vec<(String, Vec<&'static str>, String)> = vec![
        (
            "voucher entry".into(),
            vec!["voucher_entry_projection", "voucher_entry_set"],
            format!("{}/{}", api.voucher_entry_projection, api.voucher_entry_set),
        ),
        (
            "voucher rows".into(),
            vec!["voucher_rows_projection", "voucher_rows_set"],
            format!("{}/{}", api.voucher_rows_projection, api.voucher_rows_set),
        ),
        (
            "accounts".into(),
            vec!["accounts_projection", "accounts_set"],
            format!("{}/{}", api.accounts_projection, api.accounts_set),
        ),
        (
            "periods".into(),
            vec!["periods_projection", "periods_set"],
            format!("{}/{}", api.periods_projection, api.periods_set),
        ),
    ];
    for part in code_parts {
        let (projection, set) = IfsApiNames::code_part_projection(*part);
        targets.push((format!("code part {}", &part.property()[4..]), Vec::new(), format!("{projection}/{set}")));
    }
    let mut out = Vec::with_capacity(targets.len());
    for (what, settings, path) in targets {
        let (status, error) = match transport.read_first(&path).await {
            Ok(()) => (None, None),
            Err(e) => {
                let status = match &e {
                    IfsError::Rejected { status, .. }
                    | IfsError::Unsupported { status, .. }
                    | IfsError::Auth { status, .. }
                    | IfsError::Unavailable { status, .. }
                    | IfsError::MissingPrecondition { status, .. } => Some(*status),
                    _ => None,
                };
                (status, Some(e.to_string()))
            }
        };
        out.push(NameProbe { what, settings, path, status, error });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(batch: BatchMode) -> IfsApiNames {
        IfsApiNames { batch, ..IfsApiNames::default() }
    }

    fn absent() -> BatchProbe {
        BatchProbe::Absent { status: 404, code: "ODP_RESOURCE_NOTFOUND".into(), message: "no".into() }
    }

    fn not_understood() -> EtagReferenceProbe {
        EtagReferenceProbe::NotUnderstood { status: 412, code: "ODP_PRECONDITION_FAILED".into(), message: "m".into() }
    }

    #[test]
    fn the_flow_follows_the_mode_and_the_probes() {
        let auto = api(BatchMode::Auto);
        let d = decide_flow(&auto, &absent(), None);
        assert_eq!(d.flow, Flow::StepByStep);
        assert_eq!(
            d.summary,
            "flow: step by step — $batch answered 404 ODP_RESOURCE_NOTFOUND (auto falls back; 2 + rows requests per voucher)"
        );
        assert!(d.fix.is_none());
        let d = decide_flow(&auto, &BatchProbe::Supported, Some(&not_understood()));
        assert_eq!(d.flow, Flow::StepByStep);
        assert!(d.summary.contains("does not resolve If-Match: $1 (412 ODP_PRECONDITION_FAILED)"), "{}", d.summary);
        let d = decide_flow(&auto, &BatchProbe::Supported, Some(&EtagReferenceProbe::Supported));
        assert_eq!(
            (d.flow, d.summary.as_str()),
            (Flow::Batch, "flow: $batch — $batch answered (up to 10 vouchers per request); If-Match: $1 resolves")
        );
        assert!(decide_flow(&auto, &BatchProbe::Supported, None).summary.ends_with("not checked (--probe-writes)"));

        let on = api(BatchMode::On);
        for d in [decide_flow(&on, &absent(), None), decide_flow(&on, &BatchProbe::Supported, Some(&not_understood()))]
        {
            assert_eq!(d.flow, Flow::Blocked, "{}", d.summary);
            assert!(d.summary.contains("records are held") && d.fix.as_deref().unwrap().contains("batch = \"auto\""));
        }
        assert_eq!(decide_flow(&on, &BatchProbe::Supported, None).flow, Flow::Batch);

        let off = api(BatchMode::Off);
        let d = decide_flow(&off, &BatchProbe::Supported, None);
        assert_eq!(d.flow, Flow::StepByStep);
        assert!(d.summary.contains("batch = false") && d.summary.contains("this tenant answers $batch"));
        assert_eq!(decide_flow(&off, &absent(), None).flow, Flow::StepByStep);

        let broken = BatchProbe::Broken { problem: "not multipart".into() };
        assert_eq!(decide_flow(&auto, &broken, None).flow, Flow::StepByStep);
        assert_eq!(decide_flow(&on, &broken, None).flow, Flow::Blocked);
        let failed = BatchProbe::Failed { error: "timeout".into() };
        assert_eq!(decide_flow(&auto, &failed, None).flow, Flow::Unknown);
    }

    #[test]
    fn name_probes_say_which_setting_to_fix() {
        let probe = |status, settings: Vec<&'static str>, path: &str| NameProbe {
            what: "x".into(),
            settings,
            path: path.into(),
            status,
            error: status.map(|s| format!("HTTP {s}")),
        };
        let rows = probe(
            Some(404),
            vec!["voucher_rows_projection", "voucher_rows_set"],
            "VoucherRowAnalysis.svc/VoucherRowSet",
        );
        assert_eq!(
            rows.fix().unwrap(),
            "set [ifs.api] voucher_rows_projection (and voucher_rows_set) to your release's names; the API Explorer lists them"
        );
        assert!(probe(Some(403), vec![], "CodeBHandling.svc/CodeBSet").fix().unwrap().contains("CodeBHandling.svc"));
        assert!(probe(None, vec![], "A.svc/B").ok() && probe(None, vec![], "A.svc/B").fix().is_none());
    }
}
