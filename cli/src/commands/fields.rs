//! `connector fields sync [--dry-run]`: publish IFS accounts and code parts into Brex fields now (the poller
//! does the same on its schedule when `SYNC_BREX_FIELDS=true`). The dry run prints the diff and writes nothing.

use std::io::Write;
use std::sync::Arc;

use serde_json::json;
use shared::mapping::MappingLoadError;
use shared::sync::{
    DEFAULT_MAX_BREX_REQUESTS, FieldPlan, FieldSync, FieldSyncOptions, FieldTarget, SyncError, render_diff,
};

use crate::context::Ctx;
use crate::error::CliError;
use crate::output::json_line;

/// Lines of each kind (create, update, disable) the diff shows per field; the rest are counted.
const DIFF_LINES: usize = 20;

fn failed(e: SyncError) -> CliError {
    match e {
        SyncError::Brex(e) => CliError::Brex(e),
        other => CliError::Input(other.to_string()),
    }
}

fn budget(ctx: &Ctx<'_>) -> Result<usize, CliError> {
    match ctx.var("BREX_FIELDS_MAX_REQUESTS") {
        None => Ok(DEFAULT_MAX_BREX_REQUESTS),
        Some(v) => v.trim().parse::<usize>().ok().filter(|n| *n >= 2).ok_or_else(|| {
            CliError::Usage(format!("BREX_FIELDS_MAX_REQUESTS: expected a whole number of at least 2, got {v:?}"))
        }),
    }
}

fn field_json(f: &FieldPlan) -> serde_json::Value {
    let target = match &f.target {
        FieldTarget::Existing { brex_id } => json!({ "existing": brex_id }),
        FieldTarget::Create => json!("create"),
        FieldTarget::Conflict { brex_id } => json!({ "conflict": brex_id }),
    };
    json!({
        "field": f.spec.name,
        "remote_id": f.spec.remote_id,
        "source": f.spec.source.to_string(),
        "target": target,
        "create": f.creates.iter().map(|c| json!({"code": c.code, "value": c.value})).collect::<Vec<_>>(),
        "update": f.updates.iter()
            .map(|c| json!({"code": c.code, "before": c.before, "after": c.after, "enable": c.enable}))
            .collect::<Vec<_>>(),
        "disable": f.disables.iter().map(|c| json!({"code": c.code, "value": c.before})).collect::<Vec<_>>(),
        "unchanged": f.unchanged,
    })
}

pub async fn sync(ctx: &Ctx<'_>, dry_run: bool, out: &mut dyn Write) -> Result<i32, CliError> {
    let store = ctx.store()?;
    let mapping = match store.mapping_in_force().await {
        Ok(mapping) => mapping,
        Err(MappingLoadError::Missing) => {
            if ctx.json {
                json_line(out, &json!({ "mapping": null }))?;
            } else {
                writeln!(out, "no mapping document stored (push one with `connector mapping push FILE`)")?;
            }
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let options = FieldSyncOptions { max_brex_requests: budget(ctx)? };
    let brex = Arc::new(ctx.brex(&store).await?);
    let ifs = ctx.ifs(&store).await?;
    let sync = FieldSync::new(ifs, brex).with_options(options);
    let planned = sync.plan(&mapping).await.map_err(failed)?;
    if dry_run {
        if ctx.json {
            json_line(
                out,
                &json!({
                    "dry_run": true,
                    "mapping_version": mapping.version,
                    "fields": planned.plan.fields.iter().map(field_json).collect::<Vec<_>>(),
                    "brex_reads": planned.brex_reads,
                    "ifs_values": planned.ifs_values,
                }),
            )?;
        } else {
            write!(out, "{}", render_diff(&planned.plan, DIFF_LINES))?;
            writeln!(
                out,
                "dry run: nothing written to Brex ({} IFS codes read, {} Brex reads)",
                planned.ifs_values, planned.brex_reads
            )?;
        }
        return Ok(0);
    }
    let report = sync.apply(&planned).await.map_err(failed)?;
    if ctx.json {
        json_line(out, &json!({ "dry_run": false, "mapping_version": mapping.version, "report": report }))?;
    } else {
        writeln!(
            out,
            "synced: {} fields created, {} values created, {} updated, {} disabled, {} unchanged ({} Brex requests)",
            report.fields_created,
            report.created,
            report.updated,
            report.disabled,
            report.unchanged,
            report.brex_requests
        )?;
        if report.deferred > 0 {
            writeln!(out, "deferred: {} values (request budget spent; the next run continues)", report.deferred)?;
        }
        for name in &report.conflicts {
            writeln!(out, "skipped: field {name:?} (a hand-made Brex field has that name; see --dry-run)")?;
        }
    }
    // Deferred or skipped work is not a failure of this run, but a script should notice it.
    Ok(if report.deferred == 0 && report.conflicts.is_empty() { 0 } else { 3 })
}
