//! `connector trace RECORD_ID`: everything known about one record — its idempotency state (posted with which
//! voucher, failed why), each attempt from the audit trail (how it arrived, when it was enqueued, the mapping
//! version, what Brex was told, what was changed on the way such as a voucher date moved out of a closed
//! period), the poller's queued mark, the receipts attached to its voucher (name, SHA-256, size, when) and
//! Brex's current view of the record.

use std::io::Write;

use serde_json::json;
use shared::audit::{AuditOutcome, BrexReport};
use shared::domain::Subject;
use shared::ports::{AttachedReceipts, AuditTrail};

use crate::context::Ctx;
use crate::error::CliError;
use crate::output::{Table, clip, json_line};

use super::failures::origin_text;

fn outcome_text(outcome: AuditOutcome) -> &'static str {
    match outcome {
        AuditOutcome::Posted => "posted",
        AuditOutcome::AlreadyPosted => "already posted",
        AuditOutcome::Failed => "failed",
        AuditOutcome::Retry => "retry",
        AuditOutcome::Held => "held",
        AuditOutcome::Skipped => "skipped",
    }
}

pub async fn run(ctx: &Ctx<'_>, raw: &str, out: &mut dyn Write) -> Result<i32, CliError> {
    let subject = Subject::parse(raw).map_err(|e| CliError::Input(format!("{raw:?}: {e}")))?;
    let store = ctx.store()?;
    let state = store.idempotency_state(&subject).await?;
    let attempts = AuditTrail::read(&store, &subject).await?;
    let queued_until = store.queued_until(&subject).await?;
    // The receipts attached to its voucher (`[ifs] attach_receipts`), kept per voucher.
    let voucher = state.as_ref().filter(|s| s.status == "COMPLETED").and_then(|s| s.result.clone());
    let receipts = match voucher.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => AttachedReceipts::attached(&store, v).await?,
        None => Vec::new(),
    };
    // Brex's side when Brex is configured: the record's review status now (EXPORTED after a success).
    let brex_view = match (subject.as_record(), ctx.common()) {
        (Some(id), Ok(_)) => {
            let brex = ctx.brex(&store).await?;
            let fetch = brex.records_by_ids(std::slice::from_ref(id)).await?;
            Some(match fetch.records.first() {
                Some(r) => json!({
                    "review_status": r.review_status, "version": r.version, "updated_at": r.updated_at,
                    "amount": r.amount.to_string(), "type": r.record_type,
                }),
                None => json!({ "missing": true }),
            })
        }
        _ => None,
    };
    let known = state.is_some() || !attempts.is_empty() || queued_until.is_some();
    if ctx.json {
        json_line(
            out,
            &json!({
                "subject": subject, "key": shared::aws::table::subject_pk(&subject), "state": state, "queued_until": queued_until,
                "brex": brex_view, "attempts": attempts, "receipts": receipts,
            }),
        )?;
        return Ok(if known { 0 } else { 1 });
    }
    let kind = match subject {
        Subject::Record(_) => "accounting record",
        Subject::Expense(_) => "expense",
    };
    writeln!(out, "{subject} ({kind})")?;
    match &state {
        None => writeln!(out, "  state      not seen by the poster")?,
        Some(s) => {
            let detail = match s.status.as_str() {
                "COMPLETED" => format!("voucher {}", s.result.as_deref().unwrap_or("?")),
                "FAILED" => clip(s.reason.as_deref().unwrap_or(""), 300),
                "HELD" => format!(
                    "{} (held since {}, {} time(s)); fix: {}",
                    clip(s.reason.as_deref().unwrap_or(""), 300),
                    s.held_since.as_deref().unwrap_or("?"),
                    s.held_times.unwrap_or(0),
                    clip(s.fix.as_deref().unwrap_or("?"), 300)
                ),
                _ => s.lease_until.map(|t| format!("claimed until {}", t.to_rfc3339())).unwrap_or_default(),
            };
            writeln!(out, "  state      {} {detail} (updated {})", s.status, s.updated_at.as_deref().unwrap_or("?"))?;
        }
    }
    if let Some(until) = queued_until {
        writeln!(out, "  queued     marked queued by the poller/backfill until {}", until.to_rfc3339())?;
    }
    if let Some(view) = &brex_view {
        match view.get("review_status").and_then(|v| v.as_str()) {
            Some(status) => writeln!(
                out,
                "  Brex       {status} (version {}, updated {})",
                view["version"],
                view["updated_at"].as_str().unwrap_or("?")
            )?,
            None => writeln!(out, "  Brex       not found")?,
        }
    }
    if !receipts.is_empty() {
        writeln!(out, "  receipts   {} attached to voucher {}", receipts.len(), voucher.as_deref().unwrap_or("?"))?;
        for r in &receipts {
            let from = if r.subject.is_empty() || r.subject == subject.to_string() {
                String::new()
            } else {
                format!(", with {}", r.subject)
            };
            writeln!(
                out,
                "    {} (Brex {}{from}) sha256 {} {} bytes, {}",
                r.name,
                r.receipt_id,
                r.sha256,
                r.size,
                r.attached_at.to_rfc3339()
            )?;
        }
    }
    writeln!(out, "  attempts   {}", attempts.len())?;
    if !attempts.is_empty() {
        let mut t =
            Table::new(&["AT", "OUTCOME", "VIA", "ENQUEUED", "MAPPING", "VOUCHER", "REPORTED TO BREX", "REASON"]);
        for a in &attempts {
            let reported = match &a.reported_to_brex {
                None => "-".to_owned(),
                Some(BrexReport::Exported { voucher }) => format!("ok: EXPORTED {voucher}"),
                Some(BrexReport::Failed { reason }) => format!("ok: FAILED: {reason}"),
                Some(BrexReport::ReportFailed { error }) => format!("report failed: {error}"),
            };
            t.row(vec![
                a.at.to_rfc3339(),
                outcome_text(a.outcome).into(),
                a.origin.as_ref().map(origin_text).unwrap_or_else(|| "-".into()),
                a.enqueued_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into()),
                a.mapping_version.map(|v| format!("v{v}")).unwrap_or_else(|| "-".into()),
                a.voucher.clone().unwrap_or_else(|| "-".into()),
                clip(&reported, 80),
                clip(a.reason.as_deref().unwrap_or("-"), 120),
            ]);
        }
        t.write(out, "    ")?;
        for a in attempts.iter().filter(|a| a.note.is_some()) {
            writeln!(out, "    note {}: {}", a.at.to_rfc3339(), a.note.as_deref().unwrap_or_default())?;
        }
    }
    // Every Brex version that became a voucher, and what took the place of the one before.
    let mut versions = Vec::new();
    for a in &attempts {
        match (&a.revision, a.brex_version, a.outcome, &a.voucher) {
            (Some(revision), ..) => versions.push(format!("{}: {revision}", a.at.to_rfc3339())),
            (None, Some(version), AuditOutcome::Posted, Some(voucher)) => {
                versions.push(format!("{}: version {version} posted as {voucher}", a.at.to_rfc3339()))
            }
            _ => {}
        }
    }
    if !versions.is_empty() {
        writeln!(out, "  versions")?;
        for line in &versions {
            writeln!(out, "    {line}")?;
        }
    }
    // A completed record held since (changed after export): its state line names the old voucher, so the
    // hold and its fix are shown in full here.
    if let Some(last) = attempts.last()
        && last.outcome == AuditOutcome::Held
        && state.as_ref().is_some_and(|s| s.status == "COMPLETED")
    {
        writeln!(out, "  held now: {}", last.reason.as_deref().unwrap_or_default())?;
    }
    if !known {
        writeln!(out, "  nothing recorded for this record in the table")?;
    }
    Ok(if known { 0 } else { 1 })
}
