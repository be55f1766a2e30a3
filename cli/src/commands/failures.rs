//! `connector failures` (failed and held records from the table, dead-lettered messages from the DLQ) and
//! `connector replay [--all | ID…]` (retry them once the mapping, the data or the deployment is fixed).

use std::collections::{HashMap, HashSet};
use std::io::Write;

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use shared::aws::operator::SubjectState;
use shared::domain::{Origin, Subject, WorkItem};
use shared::error::AwsError;
use shared::ports::WorkQueue;

use crate::context::Ctx;
use crate::error::CliError;
use crate::output::{Table, clip, json_line};

/// How long a peeked DLQ message stays hidden while we page through the queue; it is handed back at once.
const PEEK_VISIBILITY: i32 = 30;
/// Bounds one listing (the DLQ alarm fires long before this many).
const MAX_PEEK: usize = 1000;
/// Held records shown per cause in text; one broken deployment holds every record, and `--json` lists them all.
const HELD_ROWS_PER_CAUSE: usize = 10;
/// Replayed records named one by one in text before the rest is counted.
const REPLAYED_LINES: usize = 50;
/// The heading of the held section.
pub(crate) const HELD_HEADING: &str = "the deployment or tenant is at fault; fix, then `connector replay`";

#[derive(Debug, Clone, serde::Serialize)]
pub struct DlqMessage {
    pub message_id: String,
    pub sent_at: Option<DateTime<Utc>>,
    pub receive_count: Option<u32>,
    /// The work item, when the body is one.
    pub item: Option<WorkItem>,
    /// The raw body, when it is not a work item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

fn sqs_err<E>(
    operation: &'static str,
) -> impl Fn(aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>) -> AwsError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    move |e| AwsError::from_sdk("sqs", operation, &e)
}

/// Reads every DLQ message without consuming it: received with a short visibility timeout, then made visible
/// again (visibility 0). Each peek counts as a receive; the DLQ has no redrive policy, so that is harmless.
pub async fn peek_dlq(sqs: &aws_sdk_sqs::Client, dlq_url: &str) -> Result<Vec<DlqMessage>, CliError> {
    let mut seen = HashSet::new();
    let mut messages = Vec::new();
    let mut receipts = Vec::new();
    let mut result = Ok(());
    while messages.len() < MAX_PEEK {
        let out = match sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(PEEK_VISIBILITY)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                result = Err(sqs_err("ReceiveMessage")(e));
                break;
            }
        };
        let batch = out.messages.unwrap_or_default();
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let (Some(id), Some(handle)) = (m.message_id.clone(), m.receipt_handle.clone()) else { continue };
            receipts.push(handle);
            if !seen.insert(id.clone()) {
                continue;
            }
            let attrs = m.attributes.unwrap_or_default();
            let body = m.body.unwrap_or_default();
            let item = serde_json::from_str::<WorkItem>(&body).ok();
            messages.push(DlqMessage {
                message_id: id,
                sent_at: attrs
                    .get(&MessageSystemAttributeName::SentTimestamp)
                    .and_then(|v| v.parse::<i64>().ok())
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
                receive_count: attrs
                    .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|v| v.parse().ok()),
                body: item.is_none().then_some(body),
                item,
            });
        }
    }
    // Hand everything back even if a receive failed half-way.
    for (n, chunk) in receipts.chunks(10).enumerate() {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, handle)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(format!("m{n}_{i}"))
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        sqs.change_message_visibility_batch()
            .queue_url(dlq_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(sqs_err("ChangeMessageVisibilityBatch"))?;
    }
    result?;
    Ok(messages)
}

fn item_ids(item: &WorkItem) -> Vec<String> {
    match item {
        WorkItem::AccountingRecords { ids, .. } => ids.iter().map(ToString::to_string).collect(),
        WorkItem::Expenses { ids, .. } => ids.iter().map(ToString::to_string).collect(),
    }
}

pub fn origin_text(origin: &Origin) -> String {
    match origin {
        Origin::Webhook { webhook_id } => format!("webhook {webhook_id}"),
        Origin::Poll => "poll".into(),
        Origin::Backfill => "backfill".into(),
        Origin::Replay => "replay".into(),
    }
}

/// Held records that share one cause: the same reason and the same fix.
#[derive(Debug)]
pub(crate) struct HeldCause<'a> {
    pub reason: &'a str,
    pub fix: &'a str,
    /// Longest held first (the order of the listing they came from).
    pub records: Vec<&'a SubjectState>,
}

/// Groups held records by (reason, fix), so a cause that holds every record reads as one fix plus a list. The
/// causes come in the order of their longest-held record.
pub(crate) fn held_causes(held: &[SubjectState]) -> Vec<HeldCause<'_>> {
    let mut causes: Vec<HeldCause<'_>> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    for entry in held {
        let state = &entry.1;
        let key = (state.reason.as_deref().unwrap_or(""), state.fix.as_deref().unwrap_or(""));
        let at = *index.entry(key).or_insert_with(|| {
            causes.push(HeldCause { reason: key.0, fix: key.1, records: Vec::new() });
            causes.len() - 1
        });
        if let Some(cause) = causes.get_mut(at) {
            cause.records.push(entry);
        }
    }
    causes
}

fn write_held(out: &mut dyn Write, held: &[SubjectState]) -> std::io::Result<()> {
    writeln!(out, "held records (table): {} — {HELD_HEADING}", held.len())?;
    for cause in held_causes(held) {
        let reason = if cause.reason.is_empty() { "(no reason recorded)" } else { cause.reason };
        writeln!(out, "  {} record(s): {}", cause.records.len(), clip(reason, 300))?;
        if !cause.fix.is_empty() {
            writeln!(out, "    fix: {}", clip(cause.fix, 300))?;
        }
        let mut t = Table::new(&["RECORD", "HELD SINCE", "TIMES", "UPDATED"]);
        for (subject, state) in cause.records.iter().take(HELD_ROWS_PER_CAUSE) {
            t.row(vec![
                subject.to_string(),
                state.held_since.clone().unwrap_or_default(),
                state.held_times.map(|n| n.to_string()).unwrap_or_default(),
                state.updated_at.clone().unwrap_or_default(),
            ]);
        }
        t.write(out, "    ")?;
        let rest = cause.records.len().saturating_sub(HELD_ROWS_PER_CAUSE);
        if rest > 0 {
            writeln!(out, "    … and {rest} more (`connector failures --json` lists them all)")?;
        }
    }
    Ok(())
}

fn held_json((subject, state): &SubjectState) -> serde_json::Value {
    json!({
        "subject": subject, "key": shared::aws::table::subject_pk(subject), "held_since": state.held_since, "held_times": state.held_times,
        "updated_at": state.updated_at, "reason": state.reason, "fix": state.fix,
    })
}

pub async fn list(ctx: &Ctx<'_>, out: &mut dyn Write) -> Result<i32, CliError> {
    let store = ctx.store()?;
    let (failed, held) = store.failed_and_held_subjects().await?;
    let dlq_url = ctx.dlq_url().await?;
    let dlq = match &dlq_url {
        Some(url) => Some(peek_dlq(&ctx.sqs(), url).await?),
        None => None,
    };
    let record_faults = failed.len() + dlq.as_ref().map_or(0, Vec::len);
    let code = if record_faults + held.len() == 0 { 0 } else { 1 };
    if ctx.json {
        let table: Vec<_> = failed
            .iter()
            .map(|(subject, state)| {
                json!({
                    "subject": subject, "key": shared::aws::table::subject_pk(subject), "failed_at": state.updated_at, "reason": state.reason,
                })
            })
            .collect();
        let causes: Vec<_> = held_causes(&held)
            .iter()
            .map(|c| {
                let records: Vec<_> = c.records.iter().map(|(subject, _)| subject.to_string()).collect();
                json!({ "reason": c.reason, "fix": c.fix, "count": records.len(), "records": records })
            })
            .collect();
        let held: Vec<_> = held.iter().map(held_json).collect();
        json_line(
            out,
            &json!({ "table": table, "held": held, "held_causes": causes, "dlq_url": dlq_url, "dlq": dlq }),
        )?;
        return Ok(code);
    }
    writeln!(out, "failed records (table): {}", failed.len())?;
    if !failed.is_empty() {
        let mut t = Table::new(&["RECORD", "FAILED AT", "REASON"]);
        for (subject, state) in &failed {
            t.row(vec![
                subject.to_string(),
                state.updated_at.clone().unwrap_or_default(),
                clip(state.reason.as_deref().unwrap_or(""), 200),
            ]);
        }
        t.write(out, "  ")?;
    }
    write_held(out, &held)?;
    match &dlq {
        None => writeln!(out, "dead-lettered messages: DLQ unknown (set DLQ_URL or QUEUE_URL)")?,
        Some(messages) => {
            writeln!(out, "dead-lettered messages (DLQ): {}", messages.len())?;
            if !messages.is_empty() {
                let mut t = Table::new(&["MESSAGE", "SENT", "RECEIVES", "ORIGIN", "IDS"]);
                for m in messages {
                    let (origin, ids) = match &m.item {
                        Some(item) => (origin_text(item.origin()), item_ids(item).join(" ")),
                        None => {
                            ("?".into(), format!("(not a work item: {})", clip(m.body.as_deref().unwrap_or(""), 60)))
                        }
                    };
                    t.row(vec![
                        m.message_id.clone(),
                        m.sent_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        m.receive_count.map(|c| c.to_string()).unwrap_or_default(),
                        origin,
                        clip(&ids, 120),
                    ]);
                }
                t.write(out, "  ")?;
            }
        }
    }
    // The held section carries its own fixes; this advice is for records at fault.
    if record_faults > 0 {
        writeln!(
            out,
            "fix the mapping (`connector mapping push FILE`) or the coding in Brex, then `connector replay --all`"
        )?;
    }
    Ok(code)
}

/// Enqueues subjects with origin Replay (records and expenses in their own messages).
async fn enqueue(ctx: &Ctx<'_>, subjects: &[Subject]) -> Result<(), CliError> {
    let items = WorkItem::for_subjects(subjects, &Origin::Replay, Utc::now());
    if !items.is_empty() {
        ctx.queue()?.enqueue(&items).await?;
    }
    Ok(())
}

#[derive(Debug, serde::Serialize)]
struct DlqRedrive {
    method: &'static str,
    moved: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_handle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback_reason: Option<String>,
}

/// Moves every DLQ message back to the work queue: `StartMessageMoveTask` (SQS's own redrive, to the queue
/// the messages came from), or, where that is not available (some emulators), receive → send → delete.
async fn redrive(ctx: &Ctx<'_>, dlq_url: &str) -> Result<DlqRedrive, CliError> {
    let sqs = ctx.sqs();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(sqs_err("GetQueueAttributes"))?
        .attributes
        .unwrap_or_default();
    let waiting: usize =
        attrs.get(&QueueAttributeName::ApproximateNumberOfMessages).and_then(|v| v.parse().ok()).unwrap_or(0);
    if waiting == 0 {
        return Ok(DlqRedrive { method: "none", moved: 0, task_handle: None, fallback_reason: None });
    }
    let arn = attrs.get(&QueueAttributeName::QueueArn).cloned().unwrap_or_default();
    let fallback_reason = match sqs.start_message_move_task().source_arn(&arn).send().await {
        Ok(task) => {
            return Ok(DlqRedrive {
                method: "StartMessageMoveTask",
                moved: waiting,
                task_handle: task.task_handle,
                fallback_reason: None,
            });
        }
        Err(e) => AwsError::from_sdk("sqs", "StartMessageMoveTask", &e).to_string(),
    };
    let queue_url = ctx.queue_url()?;
    let mut moved = 0;
    loop {
        let batch = sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(sqs_err("ReceiveMessage"))?
            .messages
            .unwrap_or_default();
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let (Some(body), Some(handle)) = (m.body, m.receipt_handle) else { continue };
            // Send first, delete after: a crash in between duplicates a message, which the poster absorbs.
            sqs.send_message().queue_url(&queue_url).message_body(body).send().await.map_err(sqs_err("SendMessage"))?;
            sqs.delete_message()
                .queue_url(dlq_url)
                .receipt_handle(handle)
                .send()
                .await
                .map_err(sqs_err("DeleteMessage"))?;
            moved += 1;
        }
    }
    Ok(DlqRedrive { method: "receive/send/delete", moved, task_handle: None, fallback_reason: Some(fallback_reason) })
}

/// The spend behind a completed record is remembered as posted with the missing voucher too; it is released
/// (holders kept) so the poster does not complete the record with that voucher again.
async fn release_spend(
    ctx: &Ctx<'_>,
    store: &shared::aws::DynamoStore,
    subject: &Subject,
    voucher: &str,
) -> Result<(), CliError> {
    let spend = match subject {
        Subject::Expense(id) => Some(id.clone()),
        Subject::Record(id) => {
            let brex = ctx.brex(store).await?;
            let fetch = brex.records_by_ids(std::slice::from_ref(id)).await?;
            fetch.records.first().and_then(|r| r.spend_id())
        }
    };
    if let Some(spend) = spend {
        store.release_posted_spend(&spend, voucher).await?;
    }
    Ok(())
}

/// Why a subject was re-enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Replayed {
    /// Its FAILED item was deleted so the poster takes it on again.
    Failed,
    /// Its HELD item stays: the poster claims a held item like a released one and replaces it.
    Held,
    /// The poster has no item for it (e.g. it was only dead-lettered).
    Unseen,
    /// Its COMPLETED item was deleted (`--completed`): its voucher is missing from IFS.
    Completed,
}

impl Replayed {
    fn text(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Held => "held",
            Self::Unseen => "not seen by the poster",
            Self::Completed => "completed, voucher missing in IFS",
        }
    }
}

/// `completed`: also re-enqueue the given COMPLETED records (their voucher found missing by `connector
/// reconcile`). Safe against duplicates: the poster's dedup query finds a voucher that exists after all.
pub async fn replay(
    ctx: &Ctx<'_>,
    all: bool,
    ids: &[String],
    completed: bool,
    out: &mut dyn Write,
) -> Result<i32, CliError> {
    let store = ctx.store()?;
    let mut replayed: Vec<(Subject, Replayed)> = Vec::new();
    let mut passed_over: Vec<(Subject, String)> = Vec::new();
    if all {
        let (failed, held) = store.failed_and_held_subjects().await?;
        for (subject, _) in failed {
            if store.clear_failure(&subject).await? {
                replayed.push((subject, Replayed::Failed));
            }
        }
        replayed.extend(held.into_iter().map(|(subject, _)| (subject, Replayed::Held)));
    } else {
        for raw in ids {
            let subject = Subject::parse(raw).map_err(|e| CliError::Input(format!("{raw:?}: {e}")))?;
            match store.idempotency_state(&subject).await? {
                Some(state) if state.status == "FAILED" => {
                    if store.clear_failure(&subject).await? {
                        replayed.push((subject, Replayed::Failed));
                    } else {
                        passed_over.push((subject, "changed while replaying; run `connector trace`".into()));
                    }
                }
                Some(state) if state.status == "HELD" => replayed.push((subject, Replayed::Held)),
                Some(state) if state.status == "COMPLETED" && completed => {
                    let voucher = state.result.unwrap_or_default();
                    release_spend(ctx, &store, &subject, &voucher).await?;
                    if store.clear_completed(&subject, &voucher).await? {
                        replayed.push((subject, Replayed::Completed));
                    } else {
                        passed_over.push((subject, "changed while replaying; run `connector trace`".into()));
                    }
                }
                Some(state) if state.status == "COMPLETED" => passed_over.push((
                    subject,
                    format!(
                        "already posted (voucher {}; if `connector reconcile` finds it missing, use --completed)",
                        state.result.as_deref().unwrap_or("?")
                    ),
                )),
                Some(state) => passed_over.push((subject, format!("being posted now ({})", state.status))),
                // Never settled (e.g. only in the DLQ): enqueue it.
                None => replayed.push((subject, Replayed::Unseen)),
            }
        }
    }
    let subjects: Vec<Subject> = replayed.iter().map(|(s, _)| s.clone()).collect();
    enqueue(ctx, &subjects).await?;
    let dlq = match (all, ctx.dlq_url().await?) {
        (true, Some(url)) => Some(redrive(ctx, &url).await?),
        _ => None,
    };
    let of = |kind: Replayed| replayed.iter().filter(|(_, k)| *k == kind).map(|(s, _)| s).collect::<Vec<_>>();
    let (failed, held, unseen) = (of(Replayed::Failed), of(Replayed::Held), of(Replayed::Unseen));
    if ctx.json {
        let over: Vec<_> = passed_over.iter().map(|(s, why)| json!({ "subject": s, "reason": why })).collect();
        json_line(
            out,
            &json!({
                "replayed": subjects, "failed": failed, "held": held, "unseen": unseen, "passed_over": over,
                "dlq": dlq,
            }),
        )?;
        return Ok(0);
    }
    let mut counts = vec![format!("{} failed", failed.len()), format!("{} held", held.len())];
    if !unseen.is_empty() {
        counts.push(format!("{} not seen by the poster", unseen.len()));
    }
    let reposting = replayed.iter().filter(|(_, k)| *k == Replayed::Completed).count();
    if reposting > 0 {
        counts.push(format!("{reposting} completed with a missing voucher"));
    }
    writeln!(out, "re-enqueued {} record(s) with origin replay ({})", replayed.len(), counts.join(", "))?;
    for (s, kind) in replayed.iter().take(REPLAYED_LINES) {
        writeln!(out, "  {s}  {}", kind.text())?;
    }
    if replayed.len() > REPLAYED_LINES {
        writeln!(out, "  … and {} more (`--json` lists them all)", replayed.len() - REPLAYED_LINES)?;
    }
    if !held.is_empty() {
        writeln!(
            out,
            "held records keep their hold until the poster posts them; `connector failures` shows any still held"
        )?;
    }
    for (s, why) in &passed_over {
        writeln!(out, "  {s}: not replayed, {why}")?;
    }
    match &dlq {
        Some(r) if r.moved == 0 => writeln!(out, "DLQ: empty")?,
        Some(r) => {
            writeln!(out, "DLQ: {} message(s) moved back to the work queue via {}", r.moved, r.method)?;
            if let Some(why) = &r.fallback_reason {
                writeln!(out, "  (StartMessageMoveTask unavailable: {why})")?;
            }
        }
        None if all => writeln!(out, "DLQ: unknown (set DLQ_URL or QUEUE_URL)")?,
        None => {}
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use shared::aws::operator::IdempotencyState;

    use super::*;

    fn held(id: &str, since: &str, reason: &str, fix: &str) -> SubjectState {
        let state = IdempotencyState {
            status: "HELD".into(),
            result: None,
            reason: Some(reason.into()),
            fix: Some(fix.into()),
            held_since: Some(since.into()),
            held_times: Some(3),
            updated_at: Some(since.into()),
            lease_until: None,
        };
        (Subject::parse(id).unwrap(), state)
    }

    const NO_SET: &str = "IFS has no VoucherEntryAssistantHandling.svc/VoucherSet (404 ODP_RESOURCE_NOTFOUND)";
    const DEPLOY: &str = "deploy the IFS projection";

    #[test]
    fn held_records_group_by_reason_and_fix_in_order_of_their_oldest() {
        let list = vec![
            held("accr_a", "2026-06-01T00:00:00+00:00", NO_SET, DEPLOY),
            held("accr_b", "2026-06-02T00:00:00+00:00", "IFS token refused (401)", "fix the IFS secret"),
            held("expense_c", "2026-06-03T00:00:00+00:00", NO_SET, DEPLOY),
            // Same reason, another fix: a cause of its own.
            held("accr_d", "2026-06-04T00:00:00+00:00", NO_SET, "ask IFS support"),
        ];
        let causes = held_causes(&list);
        let summary: Vec<(&str, &str, Vec<String>)> =
            causes.iter().map(|c| (c.reason, c.fix, c.records.iter().map(|(s, _)| s.to_string()).collect())).collect();
        assert_eq!(
            summary,
            vec![
                (NO_SET, DEPLOY, vec!["accr_a".to_owned(), "expense_c".to_owned()]),
                ("IFS token refused (401)", "fix the IFS secret", vec!["accr_b".to_owned()]),
                (NO_SET, "ask IFS support", vec!["accr_d".to_owned()]),
            ]
        );
    }

    #[test]
    fn five_hundred_records_held_by_one_cause_read_as_one_fix_and_a_clipped_list() {
        let list: Vec<_> =
            (0..500).map(|i| held(&format!("accr_{i:03}"), "2026-06-01T00:00:00+00:00", NO_SET, DEPLOY)).collect();
        let mut buf = Vec::new();
        write_held(&mut buf, &list).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.matches(NO_SET).count(), 1, "{text}");
        assert_eq!(text.matches(DEPLOY).count(), 1, "{text}");
        assert!(text.starts_with(&format!("held records (table): 500 — {HELD_HEADING}\n")), "{text}");
        assert!(text.contains(&format!("  500 record(s): {NO_SET}\n    fix: {DEPLOY}\n")), "{text}");
        assert!(text.contains("accr_000") && text.contains("accr_009") && !text.contains("accr_010"), "{text}");
        assert!(text.contains("… and 490 more"), "{text}");
        assert!(text.lines().count() < 20, "{text}");
    }
}
