//! `connector failures` (failed records from the table, dead-lettered messages from the DLQ) and
//! `connector replay [--all | ID…]` (retry them once the mapping or the data is fixed).

use std::collections::HashSet;
use std::io::Write;

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use shared::domain::{AccountingRecordId, ExpenseId, Origin, Subject, WorkItem};
use shared::error::AwsError;
use shared::ports::WorkQueue;

use crate::context::Ctx;
use crate::error::CliError;
use crate::output::{Table, clip, json_line};

/// How long a peeked DLQ message stays hidden while we page through the queue; it is handed back at once.
const PEEK_VISIBILITY: i32 = 30;
/// Bounds one listing (the DLQ alarm fires long before this many).
const MAX_PEEK: usize = 1000;

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

pub async fn list(ctx: &Ctx<'_>, out: &mut dyn Write) -> Result<i32, CliError> {
    let store = ctx.store()?;
    let failed = store.failed_subjects().await?;
    let dlq_url = ctx.dlq_url().await?;
    let dlq = match &dlq_url {
        Some(url) => Some(peek_dlq(&ctx.sqs(), url).await?),
        None => None,
    };
    let total = failed.len() + dlq.as_ref().map_or(0, Vec::len);
    if ctx.json {
        let table: Vec<_> = failed
            .iter()
            .map(|(subject, state)| {
                json!({
                    "subject": subject, "key": subject.key(), "failed_at": state.updated_at, "reason": state.reason,
                })
            })
            .collect();
        json_line(out, &json!({ "table": table, "dlq_url": dlq_url, "dlq": dlq }))?;
        return Ok(if total == 0 { 0 } else { 1 });
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
    if total > 0 {
        writeln!(
            out,
            "fix the mapping (`connector mapping push FILE`) or the coding in Brex, then `connector replay --all`"
        )?;
    }
    Ok(if total == 0 { 0 } else { 1 })
}

/// Enqueues subjects with origin Replay (records and expenses in their own messages).
async fn enqueue(ctx: &Ctx<'_>, subjects: &[Subject]) -> Result<(), CliError> {
    let records: Vec<AccountingRecordId> = subjects.iter().filter_map(|s| s.as_record().cloned()).collect();
    let expenses: Vec<ExpenseId> = subjects
        .iter()
        .filter_map(|s| match s {
            Subject::Expense(id) => Some(id.clone()),
            Subject::Record(_) => None,
        })
        .collect();
    let now = Utc::now();
    let mut items = WorkItem::accounting_records(&records, &Origin::Replay, now);
    items.extend(WorkItem::expenses(&expenses, &Origin::Replay, now));
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

pub async fn replay(ctx: &Ctx<'_>, all: bool, ids: &[String], out: &mut dyn Write) -> Result<i32, CliError> {
    let store = ctx.store()?;
    let mut replayed: Vec<Subject> = Vec::new();
    let mut passed_over: Vec<(Subject, String)> = Vec::new();
    if all {
        for (subject, _) in store.failed_subjects().await? {
            if store.clear_failure(&subject).await? {
                replayed.push(subject);
            }
        }
    } else {
        for raw in ids {
            let subject = Subject::parse(raw).map_err(|e| CliError::Input(format!("{raw:?}: {e}")))?;
            match store.idempotency_state(&subject).await? {
                Some(state) if state.status == "FAILED" => {
                    if store.clear_failure(&subject).await? {
                        replayed.push(subject);
                    } else {
                        passed_over.push((subject, "changed while replaying; run `connector trace`".into()));
                    }
                }
                Some(state) if state.status == "COMPLETED" => passed_over
                    .push((subject, format!("already posted (voucher {})", state.result.as_deref().unwrap_or("?")))),
                Some(state) => passed_over.push((subject, format!("being posted now ({})", state.status))),
                // Never settled (e.g. only in the DLQ): enqueue it.
                None => replayed.push(subject),
            }
        }
    }
    enqueue(ctx, &replayed).await?;
    let dlq = match (all, ctx.dlq_url().await?) {
        (true, Some(url)) => Some(redrive(ctx, &url).await?),
        _ => None,
    };
    if ctx.json {
        let over: Vec<_> = passed_over.iter().map(|(s, why)| json!({ "subject": s, "reason": why })).collect();
        json_line(out, &json!({ "replayed": replayed, "passed_over": over, "dlq": dlq }))?;
        return Ok(0);
    }
    writeln!(out, "re-enqueued {} record(s) with origin replay", replayed.len())?;
    for s in &replayed {
        writeln!(out, "  {s}")?;
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
