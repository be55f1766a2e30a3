//! `connector backfill --since … [--until …]`: enqueues the READY_FOR_EXPORT records of a range the way the
//! poller does — skipping what the poster has settled and what is already marked queued — so a re-run
//! enqueues nothing new.

use std::collections::HashSet;
use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::json;
use shared::aws::poll_state::DynamoPollState;
use shared::domain::{Origin, Subject, WorkItem};
use shared::poller::PollerOptions;
use shared::ports::EnqueueLedger;
use shared::ports::WorkQueue;

use crate::context::Ctx;
use crate::error::CliError;
use crate::output::json_line;
use crate::ready::ReadyPages;

#[derive(Debug, Default, serde::Serialize)]
struct Counts {
    ready: usize,
    enqueued: usize,
    /// Completed, failed or claimed by the poster.
    settled: usize,
    /// Marked queued by the poller or an earlier backfill, not yet expired.
    already_queued: usize,
    pages: usize,
}

pub async fn run(
    ctx: &Ctx<'_>,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, CliError> {
    if until.is_some_and(|u| u <= since) {
        return Err(CliError::Usage("--until must be after --since".into()));
    }
    let store = ctx.store()?;
    let queue = ctx.queue()?;
    let brex = ctx.brex(&store).await?;
    let ledger = DynamoPollState::new(ctx.dynamodb(), store.table());
    let queued_ttl = PollerOptions::default().queued_ttl;
    let mut pages = ReadyPages::new(&brex, since, until);
    let mut counts = Counts::default();
    while let Some((source, records)) = pages.next().await? {
        counts.pages += 1;
        let ids: Vec<Subject> = records.into_iter().map(|r| Subject::Record(r.id)).collect();
        counts.ready += ids.len();
        if !ids.is_empty() {
            let now = Utc::now();
            let settled: HashSet<_> = ledger.settled(&ids, now).await?;
            let open: Vec<_> = ids.iter().filter(|id| !settled.contains(*id)).cloned().collect();
            counts.settled += settled.len();
            let marked = ledger.mark_queued(&open, now + queued_ttl, now).await?;
            counts.already_queued += open.len() - marked.len();
            if !marked.is_empty() {
                let marked_ids: Vec<_> = marked.iter().filter_map(|s| s.as_record().cloned()).collect();
                if let Err(e) = queue.enqueue(&WorkItem::accounting_records(&marked_ids, &Origin::Backfill, now)).await
                {
                    // Not on the queue after all: drop the marks so a re-run (or the poller) picks them up.
                    ledger.unmark_queued(&marked).await?;
                    return Err(e.into());
                }
                counts.enqueued += marked.len();
            }
        }
        // A progress line that rewrites itself; stderr, so `--json` output stays clean.
        let _ = write!(
            err,
            "\rbackfill: {} page {:>3} | {} ready | {} enqueued | {} settled | {} already queued ",
            source.as_str().to_lowercase(),
            counts.pages,
            counts.ready,
            counts.enqueued,
            counts.settled,
            counts.already_queued
        );
        let _ = err.flush();
    }
    let _ = writeln!(err);
    if ctx.json {
        json_line(
            out,
            &json!({
                "since": since, "until": until, "ready": counts.ready, "enqueued": counts.enqueued,
                "settled": counts.settled, "already_queued": counts.already_queued, "pages": counts.pages,
            }),
        )?;
    } else {
        let range = match until {
            Some(u) => format!("{} – {}", since.to_rfc3339(), u.to_rfc3339()),
            None => format!("since {}", since.to_rfc3339()),
        };
        writeln!(
            out,
            "backfill {range}: {} READY_FOR_EXPORT records, {} enqueued, {} already posted/failed/in progress, \
             {} already queued",
            counts.ready, counts.enqueued, counts.settled, counts.already_queued
        )?;
    }
    Ok(0)
}
