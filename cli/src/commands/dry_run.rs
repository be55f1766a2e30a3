//! `connector dry-run [--since …] [--ids …]`: the proposals that would be posted, as a table, CSV or JSON.
//! Posts nothing and writes nothing to the table.

use std::collections::HashSet;
use std::io::Write;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use shared::aws::poll_state::DynamoPollState;
use shared::brex::model::{AccountingRecord, ReviewStatus};
use shared::domain::Subject;
use shared::ports::ChartOfAccounts;
use shared::ports::EnqueueLedger;
use shared::proposal::{Proposal, ProposalRow, Side};

use crate::context::Ctx;
use crate::error::CliError;
use crate::evaluate::evaluate;
use crate::output::{Table, clip, csv_line, json_line};
use crate::ready::ReadyPages;

/// How far back `dry-run` looks without `--since`.
const DEFAULT_SINCE_DAYS: i64 = 7;

/// `6500/200` for an account with code parts B=200.
pub fn row_target(row: &ProposalRow) -> String {
    let mut target = row.account.to_string();
    for value in row.code_parts.values() {
        target.push('/');
        target.push_str(value.as_str());
    }
    target
}

fn side(row: &ProposalRow) -> &'static str {
    match row.side {
        Side::Debit => "D",
        Side::Credit => "C",
    }
}

pub fn rows_summary(p: &Proposal) -> String {
    p.rows.iter().map(|r| format!("{} {} {}", row_target(r), side(r), r.amount)).collect::<Vec<_>>().join(", ")
}

pub async fn run(
    ctx: &Ctx<'_>,
    since: Option<DateTime<Utc>>,
    ids: &[String],
    csv: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    let store = ctx.store()?;
    let mapping = store.mapping_in_force().await?;
    let brex = ctx.brex(&store).await?;
    // Validation against IFS when it is configured, exactly as the poster validates.
    let ifs = match ctx.ifs_config() {
        Ok(_) => Some(ctx.ifs(&store).await?),
        Err(_) => None,
    };
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let records: Vec<AccountingRecord> = if ids.is_empty() {
        let since = since.unwrap_or_else(|| Utc::now() - Duration::days(DEFAULT_SINCE_DAYS));
        let ready = ReadyPages::new(&brex, since, None).collect().await?;
        // What the poller would enqueue: records the poster has not completed, failed or claimed.
        let ledger = DynamoPollState::new(ctx.dynamodb(), store.table());
        let subjects: Vec<_> = ready.iter().map(|r| Subject::Record(r.id.clone())).collect();
        let settled: HashSet<_> = ledger.settled(&subjects, Utc::now()).await?;
        let (settled_records, open): (Vec<_>, Vec<_>) =
            ready.into_iter().partition(|r| settled.contains(&Subject::Record(r.id.clone())));
        for r in settled_records {
            skipped.push((r.id.to_string(), "already handled by the poster (see `connector trace`)".into()));
        }
        open
    } else {
        let wanted = super::record_ids(ids)?;
        let fetch = brex.records_by_ids(&wanted).await?;
        for id in fetch.missing {
            failures.push((id.to_string(), "Brex does not know this accounting record".into()));
        }
        for bad in fetch.malformed {
            let id = bad.id.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
            failures.push((id, format!("Brex record could not be read: {}", bad.error)));
        }
        let (ready, not_ready): (Vec<_>, Vec<_>) =
            fetch.records.into_iter().partition(|r| r.review_status == ReviewStatus::ReadyForExport);
        for r in not_ready {
            skipped.push((r.id.to_string(), format!("review status is {:?}, not READY_FOR_EXPORT", r.review_status)));
        }
        ready
    };
    let chart = ifs.as_ref().map(|c| c.reference() as &dyn ChartOfAccounts);
    let mut proposals: Vec<(AccountingRecord, Proposal)> = Vec::new();
    for e in evaluate(&mapping.document, records, chart).await {
        match e.outcome {
            Ok(p) => proposals.push((e.record, p)),
            Err(reason) => failures.push((e.record.id.to_string(), reason)),
        }
    }

    if ctx.json {
        let pairs = |v: &[(String, String)]| {
            v.iter().map(|(id, reason)| json!({ "record": id, "reason": reason })).collect::<Vec<_>>()
        };
        json_line(
            out,
            &json!({
                "mapping_version": mapping.version,
                "validated_against_ifs": ifs.is_some(),
                "proposals": proposals.iter().map(|(_, p)| p).collect::<Vec<_>>(),
                "failures": pairs(&failures),
                "skipped": pairs(&skipped),
            }),
        )?;
        return Ok(0);
    }
    if csv {
        let header = [
            "record",
            "status",
            "company",
            "voucher_type",
            "voucher_date",
            "row",
            "account",
            "code_parts",
            "side",
            "amount",
            "currency",
            "text",
            "error",
        ];
        writeln!(out, "{}", csv_line(&header.map(str::to_owned)))?;
        for (_, p) in &proposals {
            for (i, r) in p.rows.iter().enumerate() {
                let parts =
                    r.code_parts.iter().map(|(k, v)| format!("{k}={}", v.as_str())).collect::<Vec<_>>().join(";");
                writeln!(
                    out,
                    "{}",
                    csv_line(&[
                        p.reference_number.to_string(),
                        "proposal".into(),
                        p.company.to_string(),
                        p.voucher_type.to_string(),
                        p.voucher_date.to_string(),
                        (i + 1).to_string(),
                        r.account.to_string(),
                        parts,
                        side(r).into(),
                        r.amount.to_string(),
                        r.currency.to_string(),
                        r.text.clone(),
                        String::new(),
                    ])
                )?;
            }
        }
        for (id, reason) in &failures {
            let mut cells = vec![id.clone(), "would_fail".into()];
            cells.extend(std::iter::repeat_n(String::new(), 10));
            cells.push(reason.clone());
            writeln!(out, "{}", csv_line(&cells))?;
        }
        return Ok(0);
    }
    let mut table =
        Table::new(&["RECORD", "TYPE", "AMOUNT", "COMPANY", "DATE", "ROWS (account/code parts D|C amount)"]);
    for (record, p) in &proposals {
        table.row(vec![
            p.reference_number.to_string(),
            record.record_type.to_lowercase(),
            record.amount.to_string(),
            p.company.to_string(),
            p.voucher_date.to_string(),
            rows_summary(p),
        ]);
    }
    if !table.is_empty() {
        table.write(out, "")?;
    }
    if !failures.is_empty() {
        writeln!(out, "would fail ({}):", failures.len())?;
        for (id, reason) in &failures {
            writeln!(out, "  {id}: {}", clip(reason, 300))?;
        }
    }
    if !skipped.is_empty() {
        writeln!(out, "skipped ({}):", skipped.len())?;
        for (id, reason) in &skipped {
            writeln!(out, "  {id}: {reason}")?;
        }
    }
    writeln!(
        out,
        "{} proposals, {} would fail, {} skipped — nothing posted (mapping version {}, {})",
        proposals.len(),
        failures.len(),
        skipped.len(),
        mapping.version,
        if ifs.is_some() { "validated against IFS" } else { "IFS not configured: mapping only" }
    )?;
    Ok(0)
}
