//! `connector doctor`: one report of everything the connector depends on, each check ✓ or ✗ with the fix.
//! Every check proves itself with a real call (a Brex query with the token, an IFS account read with its
//! ETag, the mapping applied to real records); nothing is written anywhere.

use std::io::Write;
use std::sync::Arc;

use chrono::{Datelike, Duration, Utc};
use serde_json::json;
use shared::aws::DynamoStore;
use shared::aws::report::DynamoReportStore;
use shared::brex::BrexClient;
use shared::brex::model::{ReviewStatus, SourceType};
use shared::brex::{BrexError, RecordQuery};
use shared::ifs::filter::key_literal;
use shared::ifs::probe::{BatchProbe, EtagReferenceProbe, Flow, decide_flow};
use shared::ifs::{BatchMode, IfsClient, IfsError};
use shared::lambda::build::StartupError;
use shared::mapping::period::{CLOSING_SOON_DAYS, closing_soon};
use shared::mapping::{ClosedPeriodPolicy, LoadedMapping, MappingDocument};
use shared::ports::ChartOfAccounts;
use shared::reference::{ReferenceRefresh, ValidationReport, mapping_code_parts, mapping_companies, validate_mapping};

use crate::context::Ctx;
use crate::error::CliError;
use crate::evaluate::evaluate;
use crate::output::{clip, json_line};
use crate::ready::ReadyPages;

use super::webhook::EVENT_TYPE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Pass,
    /// Works today, but needs attention soon; does not fail the run.
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, serde::Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    findings: Vec<String>,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.checks.push(Check { name, status: Status::Pass, detail: detail.into(), fix: None, findings: vec![] });
    }

    fn fail(&mut self, name: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
            findings: vec![],
        });
    }

    fn warn(&mut self, name: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
            findings: vec![],
        });
    }

    fn skip(&mut self, name: &'static str, detail: impl Into<String>) {
        self.checks.push(Check { name, status: Status::Skip, detail: detail.into(), fix: None, findings: vec![] });
    }

    fn failed(&self) -> usize {
        self.count(Status::Fail)
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// The mapping checked against IFS reference data (accounts, code part values, calendar), or why that
/// could not be done. Read-only: unlike the poller's refresh, nothing is stored.
pub enum IfsReferenceCheck {
    Unavailable(String),
    Report(ValidationReport),
}

impl IfsReferenceCheck {
    /// `severity source (company): message`, errors first.
    pub fn findings(report: &ValidationReport) -> Vec<String> {
        report
            .findings
            .iter()
            .map(|f| format!("{} {} (company {}): {}", f.severity.as_str(), f.source, f.company, f.message))
            .collect()
    }
}

pub async fn reference_check(ctx: &Ctx<'_>, doc: &MappingDocument) -> IfsReferenceCheck {
    if let Err(e) = ctx.ifs_config() {
        return IfsReferenceCheck::Unavailable(format!("IFS not configured ({e})"));
    }
    let store = match ctx.store() {
        Ok(store) => store,
        Err(e) => return IfsReferenceCheck::Unavailable(e.to_string()),
    };
    let ifs = match ctx.ifs(&store).await {
        Ok(ifs) => ifs,
        Err(e) => return IfsReferenceCheck::Unavailable(e.to_string()),
    };
    let today = Utc::now().date_naive();
    let refresh = ReferenceRefresh::new(
        Arc::new(ifs.reference().clone()),
        Arc::new(DynamoReportStore::new(ctx.dynamodb(), store.table())),
    );
    match refresh.read_snapshot(doc, today).await {
        Ok(snapshot) => IfsReferenceCheck::Report(validate_mapping(doc, &snapshot, today)),
        Err(e) => IfsReferenceCheck::Unavailable(e.to_string()),
    }
}

/// Warns [`CLOSING_SOON_DAYS`] ahead when the current period of a company the mapping posts to ends, naming
/// the next open period and what `[ifs] closed_period` will do with records dated in it that arrive late.
async fn period_closing(ifs: &IfsClient, doc: &MappingDocument, report: &mut Report) {
    let name = "IFS period closing";
    let today = Utc::now().date_naive();
    let mut soon = Vec::new();
    let mut fine = Vec::new();
    for company in mapping_companies(doc) {
        let mut periods = Vec::new();
        // The current period's year, and the next one for the period after it (fiscal years may straddle).
        for year in [today.year() - 1, today.year(), today.year() + 1] {
            match ifs.reference().accounting_periods(&company, year).await {
                Ok(found) => periods.extend(found),
                Err(e) => {
                    report.fail(
                        name,
                        format!("company {company}: calendar not readable: {e}"),
                        "check the IFS checks above",
                    );
                    return;
                }
            }
        }
        match closing_soon(&periods, today, CLOSING_SOON_DAYS) {
            Some(s) => soon.push(s),
            None => fine.push(company.to_string()),
        }
    }
    if soon.is_empty() {
        report.pass(
            name,
            format!("no current period of company {} ends within {CLOSING_SOON_DAYS} days", fine.join(", ")),
        );
        return;
    }
    let what = match doc.closed_period {
        ClosedPeriodPolicy::Fail => "fail (reported to Brex as failed)",
        ClosedPeriodPolicy::NextOpen => "post in the next open period, dated its first day",
        ClosedPeriodPolicy::Hold => "be held until the period is reopened",
    };
    report.warn(
        name,
        soon.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        format!(
            "have the bookkeepers export records dated in it before it closes: once closed, late records will {what} \
             ([ifs] closed_period = \"{}\")",
            doc.closed_period
        ),
    );
}

fn configuration(ctx: &Ctx<'_>, report: &mut Report) {
    let mut missing = Vec::new();
    for (var, needed_for) in [
        ("TABLE_NAME", "everything"),
        ("QUEUE_URL", "backfill, replay"),
        ("BREX_SECRET_ID", "Brex"),
        ("IFS_SECRET_ID", "IFS"),
        ("IFS_URL", "IFS"),
        ("IFS_REALM", "IFS"),
    ] {
        if ctx.var(var).is_none() {
            missing.push(format!("{var} ({needed_for})"));
        }
    }
    let invalid: Vec<String> = [ctx.common().err(), ctx.ifs_config().err()]
        .into_iter()
        .flatten()
        .filter(|e| matches!(e, shared::config::ConfigError::Invalid { .. }))
        .map(|e| e.to_string())
        .collect();
    if missing.is_empty() && invalid.is_empty() {
        report.pass("configuration", "every setting present");
    } else {
        let mut detail: Vec<String> = missing.iter().map(|m| format!("missing {m}")).collect();
        detail.extend(invalid);
        report.fail(
            "configuration",
            detail.join("; "),
            "set the variables as the Lambdas have them (docs/contract.md §1), or pass --table, --queue-url, … flags",
        );
    }
}

async fn aws_resources(ctx: &Ctx<'_>, store: &DynamoStore, report: &mut Report) {
    match ctx.dynamodb().describe_table().table_name(store.table()).send().await {
        Ok(out) => {
            let status = out.table.and_then(|t| t.table_status).map(|s| s.as_str().to_owned()).unwrap_or_default();
            report.pass("DynamoDB table", format!("{} {status}", store.table()));
        }
        Err(e) => report.fail(
            "DynamoDB table",
            shared::error::AwsError::from_sdk("dynamodb", "DescribeTable", &e).to_string(),
            "check TABLE_NAME, the AWS region/credentials and dynamodb:DescribeTable permission",
        ),
    }
    let Ok(queue_url) = ctx.queue_url() else {
        report.skip("SQS work queue", "QUEUE_URL not set");
        return;
    };
    match queue_depth(ctx, &queue_url).await {
        Ok(n) => report.pass("SQS work queue", format!("reachable, {n} message(s) waiting or in flight")),
        Err(e) => report.fail("SQS work queue", e, "check QUEUE_URL and sqs:GetQueueAttributes permission"),
    }
    match ctx.dlq_url().await {
        Ok(Some(dlq)) => match queue_depth(ctx, &dlq).await {
            Ok(0) => report.pass("dead-letter queue", "empty"),
            Ok(n) => report.fail(
                "dead-letter queue",
                format!("{n} message(s) dead-lettered"),
                "`connector failures` shows them; fix the cause, then `connector replay --all`",
            ),
            Err(e) => report.fail("dead-letter queue", e, "check DLQ_URL"),
        },
        Ok(None) => report.skip("dead-letter queue", "no DLQ_URL and the work queue has no redrive policy"),
        Err(e) => report.fail("dead-letter queue", e.to_string(), "set DLQ_URL"),
    }
}

async fn queue_depth(ctx: &Ctx<'_>, url: &str) -> Result<usize, String> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = ctx
        .sqs()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| shared::error::AwsError::from_sdk("sqs", "GetQueueAttributes", &e).to_string())?;
    Ok(out.attributes.unwrap_or_default().values().filter_map(|v| v.parse::<usize>().ok()).sum())
}

async fn brex_checks(ctx: &Ctx<'_>, store: &DynamoStore, report: &mut Report) -> Option<BrexClient> {
    let secret_id = ctx.var("BREX_SECRET_ID").unwrap_or_default();
    let brex = match ctx.brex(store).await {
        Ok(b) => b,
        Err(e) => {
            report.fail(
                "Brex credentials",
                e.to_string(),
                format!(
                    "put {{\"token\": \"bxt_…\"}} or the OAuth client JSON into secret {secret_id} (docs/contract.md §3) and \
                     allow secretsmanager:GetSecretValue"
                ),
            );
            return None;
        }
    };
    report.pass("Brex credentials", format!("secret {secret_id} readable and well-formed"));
    let probe = RecordQuery {
        source_type: Some(SourceType::Card),
        review_status: Some(ReviewStatus::ReadyForExport),
        updated_after: Utc::now() - Duration::days(1),
        limit: 1,
        cursor: None,
    };
    match brex.query_records(&probe).await {
        Ok(_) => report.pass("Brex token", "accepted; accounting.record.read works (GET /v3/accounting/records)"),
        Err(e) => {
            let fix = match &e {
                BrexError::Status { status: 401 | 403, .. } => {
                    "the token is invalid, expired or lacks accounting.record.read/write: issue a new one and put it \
                     into the Brex secret"
                }
                _ => "check BREX_API_URL and the network path to Brex",
            };
            report.fail("Brex token", e.to_string(), fix);
            return None;
        }
    }
    match brex.list_webhook_secrets().await {
        Ok(secrets) if !secrets.is_empty() => {
            let statuses: Vec<String> =
                secrets.iter().map(|s| s.status.clone().unwrap_or_else(|| "?".into())).collect();
            report.pass("webhook signing secrets", format!("{} readable ({})", secrets.len(), statuses.join(", ")));
        }
        Ok(_) => report.fail(
            "webhook signing secrets",
            "Brex lists no signing secret",
            "register the webhook (`connector webhook register URL`); Brex creates the secret with it",
        ),
        Err(e) => report.fail(
            "webhook signing secrets",
            e.to_string(),
            "GET /v1/webhooks/secrets must work with this token, or every webhook is refused",
        ),
    }
    let ours = ctx.var("WEBHOOK_URL");
    match brex.list_webhooks().await {
        Ok(subs) => {
            let serving = |s: &&shared::brex::WebhookSubscription| s.event_types.iter().any(|t| t == EVENT_TYPE);
            let active = |s: &&shared::brex::WebhookSubscription| s.status.as_deref() == Some("ACTIVE");
            match &ours {
                Some(url) => match subs.iter().find(|s| &s.url == url) {
                    Some(s) if serving(&s) && active(&s) => {
                        report.pass("webhook subscription", format!("{} ACTIVE for {url}", s.id))
                    }
                    Some(s) => report.fail(
                        "webhook subscription",
                        format!(
                            "{} for {url} is {} with events [{}]",
                            s.id,
                            s.status.as_deref().unwrap_or("?"),
                            s.event_types.join(", ")
                        ),
                        format!("`connector webhook register {url}` re-activates it for {EVENT_TYPE}"),
                    ),
                    None => report.fail(
                        "webhook subscription",
                        format!("no subscription for {url}"),
                        format!("`connector webhook register {url}`"),
                    ),
                },
                None => match subs.iter().find(|s| serving(s) && active(s)) {
                    Some(s) => report.pass(
                        "webhook subscription",
                        format!("{} ACTIVE for {} (set WEBHOOK_URL to check that it is ours)", s.id, s.url),
                    ),
                    None => report.fail(
                        "webhook subscription",
                        format!("no ACTIVE subscription for {EVENT_TYPE}"),
                        "`connector webhook register <the stack's WebhookUrl output>`",
                    ),
                },
            }
        }
        Err(e) => report.fail("webhook subscription", e.to_string(), "GET /v1/webhooks must work with this token"),
    }
    Some(brex)
}

async fn mapping_check(store: &DynamoStore, report: &mut Report) -> Option<LoadedMapping> {
    let fix = "`connector mapping push FILE` (see infra/mapping.example.toml)";
    match store.load_mapping().await {
        Ok(None) => report.fail("mapping document", "none stored (pk=config, sk=mapping)", fix),
        Ok(Some(stored)) => match LoadedMapping::parse(&stored.document, stored.version) {
            Ok(loaded) => {
                report.pass(
                    "mapping document",
                    format!(
                        "version {} ({} rules, updated {})",
                        stored.version,
                        loaded.document.rules.len(),
                        stored.updated_at
                    ),
                );
                return Some(loaded);
            }
            Err(e) => report.fail("mapping document", format!("version {} is invalid: {e}", stored.version), fix),
        },
        Err(e) => report.fail("mapping document", e.to_string(), "check TABLE_NAME and dynamodb:GetItem permission"),
    }
    None
}

async fn ifs_checks(
    ctx: &Ctx<'_>,
    store: &DynamoStore,
    mapping: Option<&LoadedMapping>,
    report: &mut Report,
) -> Option<IfsClient> {
    let Ok(config) = ctx.ifs_config() else {
        report.skip("IFS credentials", "IFS_SECRET_ID / IFS_URL / IFS_REALM not set");
        return None;
    };
    let secret_fix = format!(
        "put the IFS IAM client as {{\"client_id\": \"…\", \"client_secret\": \"…\"}} into secret {} (docs/contract.md §3)",
        config.ifs_secret_id
    );
    let ifs = match ctx.ifs(store).await {
        Ok(ifs) => ifs,
        Err(CliError::Startup(e @ (StartupError::Secret(_) | StartupError::IfsSecretShape(_)))) => {
            report.fail("IFS credentials", e.to_string(), secret_fix);
            return None;
        }
        Err(e) => {
            report.fail("IFS credentials", e.to_string(), "check IFS_URL and IFS_REALM");
            return None;
        }
    };
    report.pass("IFS credentials", format!("secret {} readable and well-formed", config.ifs_secret_id));
    let Some(mapping) = mapping else {
        report.skip("IFS token", "needs a mapping document to know which account to read");
        return Some(ifs);
    };
    // One real read proves the token, the /int/ projections and ETags: the mapping's default credit account.
    let doc = &mapping.document;
    let api = ifs.api();
    let path = format!(
        "{}/{}(Company={},Account={})",
        api.accounts_projection,
        api.accounts_set,
        key_literal(doc.company.as_str()),
        key_literal(doc.credit_account.as_str())
    );
    let read = ifs.transport().get_entity::<serde_json::Value>(&path).await;
    let token_ok = ifs.stats().token_fetches > 0;
    match (&read, token_ok) {
        (Err(e @ IfsError::Auth { .. }), false) => {
            report.fail(
                "IFS token",
                format!("realm {}: {e}", config.ifs_realm),
                format!("{secret_fix}; the client needs the client-credentials grant in realm {}", config.ifs_realm),
            );
            report.skip("IFS /int/ projections", "no token");
            return None;
        }
        (Err(e), false) => {
            report.fail("IFS token", e.to_string(), "check IFS_URL, IFS_REALM and the network path to IFS");
            report.skip("IFS /int/ projections", "no token");
            return None;
        }
        _ => report.pass("IFS token", format!("client-credentials token from realm {}", config.ifs_realm)),
    }
    match read {
        Ok(Some((_, Some(etag)))) => {
            report.pass("IFS /int/ projections", format!("read {path} with ETag {}", etag.as_str()));
        }
        Ok(Some((_, None))) => report.fail(
            "IFS /int/ projections",
            format!("{path} came back without an ETag"),
            "every mutation needs If-Match: check the projection (tailoring) and `[ifs.api]` names",
        ),
        Ok(None) => report.fail(
            "IFS /int/ projections",
            format!("account {} does not exist in company {}", doc.credit_account, doc.company),
            "fix `[ifs] credit_account` / `company` in the mapping, or the `[ifs.api]` names",
        ),
        Err(e) => report.fail(
            "IFS /int/ projections",
            e.to_string(),
            "the IAM client needs the permission sets of AccountsHandling and VoucherEntryAssistantHandling",
        ),
    }
    Some(ifs)
}

/// Which voucher flow this tenant gets: every configured projection name read, `$batch` probed with one
/// read, the ETag references with a virtual voucher created and removed in one change set (only with
/// `--probe-writes`; nothing is committed), and the verdict for `[ifs.api] batch`.
async fn flow_checks(ifs: &IfsClient, mapping: &LoadedMapping, probe_writes: bool, report: &mut Report) {
    let doc = &mapping.document;
    let parts: Vec<_> = mapping_code_parts(doc).into_iter().collect();
    let names = ifs.probe_names(&parts).await;
    let failing: Vec<String> = names
        .iter()
        .filter(|n| !n.ok())
        .map(|n| format!("{} ({}): {}", n.what, n.path, n.error.as_deref().unwrap_or_default()))
        .collect();
    if failing.is_empty() {
        report.pass("IFS projection names", format!("all {} configured entity sets answer", names.len()));
    } else {
        let fixes: Vec<String> = names.iter().filter_map(|n| n.fix()).collect();
        report.fail(
            "IFS projection names",
            format!("{} of {} configured entity sets do not answer", failing.len(), names.len()),
            format!("{}; then `connector mapping push FILE` and `connector replay --all`", fixes.join("; ")),
        );
        if let Some(last) = report.checks.last_mut() {
            last.findings = failing;
        }
    }

    let batch = ifs.probe_batch().await;
    match &batch {
        BatchProbe::Supported => report.pass("IFS $batch", "a $batch holding one read was answered"),
        BatchProbe::Absent { status, code, message } => {
            report.pass("IFS $batch", format!("not served here ({status} {code}: {})", clip(message, 200)))
        }
        BatchProbe::Broken { problem } => report.pass("IFS $batch", format!("served but unusable: {problem}")),
        BatchProbe::Failed { error } => report.fail("IFS $batch", error.clone(), "fix the IFS checks above"),
    }

    let etag = if !probe_writes {
        report.skip("IFS ETag references", "not probed: it writes a virtual voucher (--probe-writes)");
        None
    } else if batch != BatchProbe::Supported {
        report.skip("IFS ETag references", "no usable $batch to probe");
        None
    } else {
        let today = Utc::now().date_naive();
        let probe = ifs.probe_etag_references(&doc.company, &doc.voucher_type, today).await;
        match &probe {
            EtagReferenceProbe::Supported => report.pass(
                "IFS ETag references",
                "If-Match: $1 resolved inside a change set (the probe's virtual voucher was removed; nothing committed)",
            ),
            EtagReferenceProbe::NotUnderstood { status, code, message } => report.pass(
                "IFS ETag references",
                format!("If-Match: $1 not resolved ({status} {code}: {}); the change set rolled back", clip(message, 200)),
            ),
            EtagReferenceProbe::BatchAbsent { status, code, .. } => {
                report.pass("IFS ETag references", format!("no $batch ({status} {code})"))
            }
            EtagReferenceProbe::Inconclusive { problem } => report.fail(
                "IFS ETag references",
                format!("inconclusive: {problem}"),
                "check `[ifs] company`, `voucher_type` and today's accounting period, and `[ifs.api] remove_voucher_action`",
            ),
        }
        Some(probe)
    };

    let decision = decide_flow(&ifs.api(), &batch, etag.as_ref());
    let mode = match ifs.api().batch {
        BatchMode::Auto => "auto",
        BatchMode::On => "true",
        BatchMode::Off => "false",
    };
    let detail = format!("[ifs.api] batch = {mode}; {}", decision.summary);
    match (decision.flow, decision.fix) {
        (Flow::Batch | Flow::StepByStep, _) => report.pass("IFS voucher flow", detail),
        (_, Some(fix)) => report.fail("IFS voucher flow", detail, fix),
        (_, None) => report.fail("IFS voucher flow", detail, "fix the checks above, then run doctor again"),
    }
}

pub async fn run(
    ctx: &Ctx<'_>,
    records: usize,
    lookback_days: i64,
    probe_writes: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    let mut report = Report::default();
    configuration(ctx, &mut report);
    let store = ctx.store()?;
    aws_resources(ctx, &store, &mut report).await;
    let brex = if ctx.common().is_ok() {
        brex_checks(ctx, &store, &mut report).await
    } else {
        report.skip("Brex credentials", "BREX_SECRET_ID not set");
        None
    };
    let mapping = mapping_check(&store, &mut report).await;
    let ifs = ifs_checks(ctx, &store, mapping.as_ref(), &mut report).await;
    match (&mapping, &ifs) {
        (Some(m), Some(ifs)) => flow_checks(ifs, m, probe_writes, &mut report).await,
        _ => report.skip("IFS voucher flow", "needs the mapping and IFS"),
    }

    match (&mapping, &ifs) {
        (Some(m), Some(_)) => match reference_check(ctx, &m.document).await {
            IfsReferenceCheck::Report(r) => {
                let summary = r
                    .companies
                    .iter()
                    .map(|c| format!("company {}: {} accounts", c.company, c.accounts))
                    .collect::<Vec<_>>()
                    .join(", ");
                if r.errors() == 0 {
                    report.pass(
                        "mapping vs IFS reference data",
                        format!("version {}: {} warning(s) ({summary})", m.version, r.warnings()),
                    );
                } else {
                    report.fail(
                        "mapping vs IFS reference data",
                        format!("version {}: {} error(s), {} warning(s)", m.version, r.errors(), r.warnings()),
                        "fix the rules named below (`connector mapping validate FILE`, then `connector mapping push FILE`)",
                    );
                }
                if let Some(last) = report.checks.last_mut() {
                    last.findings = IfsReferenceCheck::findings(&r);
                }
            }
            IfsReferenceCheck::Unavailable(why) => report.fail(
                "mapping vs IFS reference data",
                format!("IFS reference data could not be read: {why}"),
                "check the IFS checks above",
            ),
        },
        _ => report.skip("mapping vs IFS reference data", "needs the mapping and IFS"),
    }
    match (&mapping, &ifs) {
        (Some(m), Some(ifs)) => period_closing(ifs, &m.document, &mut report).await,
        _ => report.skip("IFS period closing", "needs the mapping and IFS"),
    }

    let name = "mapping vs recent records";
    match (&mapping, &brex) {
        (Some(m), Some(brex)) => {
            let since = Utc::now() - Duration::days(lookback_days.max(0));
            match ReadyPages::new(brex, since, None).collect().await {
                Err(e) => report.fail(name, e.to_string(), "check the Brex token"),
                Ok(mut ready) => {
                    ready.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
                    ready.truncate(records);
                    let n = ready.len();
                    let chart = ifs.as_ref().map(|c| c.reference() as &dyn ChartOfAccounts);
                    let failing: Vec<String> = evaluate(&m.document, ready, chart)
                        .await
                        .into_iter()
                        .filter_map(|e| e.outcome.err().map(|why| format!("{}: {}", e.record.id, clip(&why, 300))))
                        .collect();
                    let against =
                        if chart.is_some() { "mapped and validated against IFS" } else { "mapped, IFS not checked" };
                    if failing.is_empty() {
                        report.pass(name, format!("the last {n} READY_FOR_EXPORT record(s) {against}: all postable"));
                    } else {
                        report.fail(
                            name,
                            format!(
                                "{} of the last {n} READY_FOR_EXPORT record(s) would fail ({against})",
                                failing.len()
                            ),
                            "fix the mapping (`connector mapping push FILE`) or the coding in Brex; check with \
                             `connector dry-run --ids …`, then `connector replay …`",
                        );
                        if let Some(last) = report.checks.last_mut() {
                            last.findings = failing;
                        }
                    }
                }
            }
        }
        _ => report.skip(name, "needs the mapping and Brex"),
    }

    let failed = report.failed();
    if ctx.json {
        json_line(out, &json!({ "ok": failed == 0, "checks": report.checks }))?;
    } else {
        let width = report.checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
        for c in &report.checks {
            let mark = match c.status {
                Status::Pass => "✓",
                Status::Warn => "!",
                Status::Fail => "✗",
                Status::Skip => "-",
            };
            let pad = width - c.name.chars().count();
            writeln!(out, "{mark} {}{}  {}", c.name, " ".repeat(pad), c.detail)?;
            for f in &c.findings {
                writeln!(out, "    · {f}")?;
            }
            if let Some(fix) = &c.fix {
                writeln!(out, "    fix: {fix}")?;
            }
        }
        let (passed, warned, skipped) =
            (report.count(Status::Pass), report.count(Status::Warn), report.count(Status::Skip));
        let warned = if warned > 0 { format!(", {warned} warning(s)") } else { String::new() };
        writeln!(out, "{passed} passed, {failed} failed{warned}, {skipped} skipped")?;
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
