//! One module per command.

mod backfill;
mod doctor;
mod dry_run;
mod failures;
mod fields;
mod mapping;
mod reconcile;
mod status;
mod trace;
mod webhook;

use std::io::Write;

use crate::args::Command;
use crate::context::Ctx;
use crate::error::CliError;

/// Runs a command; `Ok(exit code)`.
pub async fn dispatch(
    ctx: &Ctx<'_>,
    command: &Command,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, CliError> {
    match command {
        Command::Doctor { records, lookback_days, probe_writes } => {
            doctor::run(ctx, *records, *lookback_days, *probe_writes, out).await
        }
        Command::MappingValidate { file } => mapping::validate(ctx, file, out).await,
        Command::MappingPush { file, force } => mapping::push(ctx, file, *force, out).await,
        Command::MappingShow => mapping::show(ctx, out).await,
        Command::DryRun { since, ids, csv } => dry_run::run(ctx, *since, ids, *csv, out).await,
        Command::Backfill { since, until } => backfill::run(ctx, *since, *until, out, err).await,
        Command::Failures => failures::list(ctx, out).await,
        Command::Status { since, window } => status::run(ctx, *since, window, out).await,
        Command::Replay { all, ids, completed } => failures::replay(ctx, *all, ids, *completed, out).await,
        Command::Trace { id } => trace::run(ctx, id, out).await,
        Command::WebhookRegister { url } => webhook::register(ctx, url, out).await,
        Command::WebhookList => webhook::list(ctx, out).await,
        Command::FieldsSync { dry_run } => fields::sync(ctx, *dry_run, out).await,
        Command::Reconcile { since } => reconcile::run(ctx, *since, out).await,
    }
}

/// Parses record ids typed by the operator.
pub(crate) fn record_ids(ids: &[String]) -> Result<Vec<shared::domain::AccountingRecordId>, CliError> {
    ids.iter()
        .map(|id| {
            shared::domain::AccountingRecordId::parse(id.trim())
                .map_err(|e| CliError::Input(format!("{id:?} is not a Brex accounting record id: {e}")))
        })
        .collect()
}
