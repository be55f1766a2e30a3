//! `connector reconcile [--since 30d]`: Brex and IFS compared (read-only, see `shared::reconcile`); each
//! difference with its fix, counted by kind. Exit 1 when there is any.

use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use shared::reconcile::{DifferenceKind, Reconciler};

use crate::context::Ctx;
use crate::error::CliError;
use crate::output::{Table, clip, json_line};

pub async fn run(ctx: &Ctx<'_>, since: DateTime<Utc>, out: &mut dyn Write) -> Result<i32, CliError> {
    let store = ctx.store()?;
    let mapping = store.mapping_in_force().await?;
    let brex = ctx.brex(&store).await?;
    let ifs = ctx.ifs(&store).await?;
    let reconciler = Reconciler::new(Arc::new(ifs.ledger().clone()), Arc::new(store.clone()), Arc::new(brex));
    let report = reconciler.run(&mapping.document, since).await.map_err(|e| CliError::Input(e.to_string()))?;
    let ifs_requests = ifs.stats().requests;
    let counts = report.counts();
    let code = i32::from(!report.is_clean());
    if ctx.json {
        let by_kind: serde_json::Map<String, serde_json::Value> =
            counts.iter().map(|(k, n)| (k.as_str().to_owned(), json!(n))).collect();
        json_line(out, &json!({ "report": report, "counts": by_kind, "ifs_requests": ifs_requests }))?;
        return Ok(code);
    }
    writeln!(
        out,
        "reconciled since {}: {} completed record(s) checked against IFS ({} amounts compared with Brex), {} IFS voucher(s) with ReferenceSerie {}",
        report.since.format("%Y-%m-%d %H:%M UTC"),
        report.subjects_checked,
        report.amounts_checked,
        report.vouchers_in_ifs,
        report.reference_serie,
    )?;
    for kind in DifferenceKind::ALL {
        let of_kind: Vec<_> = report.differences.iter().filter(|d| d.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        writeln!(out, "{} ({}):", kind.as_str(), of_kind.len())?;
        let mut table = Table::new(&["RECORD", "VOUCHER", "DETAIL"]);
        for d in &of_kind {
            table.row(vec![d.subject.clone().unwrap_or_else(|| "-".into()), d.voucher.clone(), clip(&d.detail, 100)]);
        }
        table.write(out, "  ")?;
        // The fix is the same text for a kind except for the ids it names: print each once.
        let mut fixes: Vec<&str> = of_kind.iter().map(|d| d.fix.as_str()).collect();
        fixes.dedup();
        for fix in fixes {
            writeln!(out, "  fix: {fix}")?;
        }
    }
    if !report.not_in_brex.is_empty() {
        writeln!(out, "not returned by Brex (amount not compared): {}", report.not_in_brex.join(", "))?;
    }
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {}", k.as_str())).collect();
    writeln!(
        out,
        "{} difference(s): {} — nothing written to IFS or Brex ({} IFS requests)",
        report.differences.len(),
        summary.join(", "),
        ifs_requests
    )?;
    Ok(code)
}
