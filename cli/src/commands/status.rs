//! `connector status [--since 24h]`: one screen for whoever is on call — is spend flowing, how far behind,
//! what is failing or held and why. Posted and failed are counted within the window; held and claimed
//! records are present states and are shown whatever their age (a record held last week is still waiting).
//! Exit 1 when a record failed within the window, any is held, or the DLQ holds messages (as `failures`).

use std::collections::HashMap;
use std::io::Write;

use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::json;
use shared::aws::operator::SubjectState;
use shared::aws::status::{MAX_SCAN_PAGES, StatusScan, held_since, updated_at};
use shared::ifs::BatchMode;
use shared::ifs::ledger::capability::{FLOW_CAPABILITY, STEP_BY_STEP};
use shared::mapping::LoadedMapping;
use shared::ports::{Capability, CapabilityStore, PollState};

use super::failures::{HELD_HEADING, held_causes};
use crate::context::Ctx;
use crate::error::CliError;
use crate::output::{Table, clip, json_line};

/// Failure reasons shown in text; `--json` has them all.
const TOP_REASONS: usize = 5;
/// Held causes shown in text.
const TOP_CAUSES: usize = 5;

/// What a failure reason says once the record it is about is taken out, so one cause reads as one line:
/// `record accr_1 line 1 (accrli_1, DEBIT 42.00 USD): no GL account — no rule matched …` → `no GL account`.
/// The record part (before the first `: `) goes, then the detail (after ` — ` or `: `), then any id, amount
/// or date left is masked as `…`.
pub fn reason_kind(reason: &str) -> String {
    let mut text = reason.trim();
    if (text.starts_with("record ") || text.starts_with("expense "))
        && let Some((_, rest)) = text.split_once(": ")
    {
        text = rest;
    }
    if let Some(cut) = [" — ", ": "].iter().filter_map(|sep| text.find(sep)).min() {
        text = &text[..cut];
    }
    let kind = text.split_whitespace().map(mask_word).collect::<Vec<_>>().join(" ");
    if kind.is_empty() { "(no reason recorded)".to_owned() } else { kind }
}

/// `accr_9`, `42.00`, `2026-06-01`, `(exp_1)` → `…`, `(…)`; short numbers (`404`, `#3`) and words stay.
fn mask_word(word: &str) -> String {
    let core = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ',' | ':');
    let start = word.find(core).unwrap_or(word.len());
    let end = word.rfind(core).map_or(start, |i| i + 1).max(start);
    let middle = &word[start..end];
    let digits = middle.chars().filter(char::is_ascii_digit).count();
    let specific = digits > 0 && (digits > 3 || middle.contains(['_', '.', '-', ',', ':']));
    if specific { format!("{}…{}", &word[..start], &word[end..]) } else { word.to_owned() }
}

/// Failed records grouped by [`reason_kind`], the most frequent first (ties: the newest failure first).
#[derive(Debug)]
pub struct ReasonGroup<'a> {
    pub kind: String,
    /// Newest first, as `failed` came.
    pub records: Vec<&'a SubjectState>,
}

pub fn failure_reasons(failed: &[SubjectState]) -> Vec<ReasonGroup<'_>> {
    let mut groups: Vec<ReasonGroup<'_>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for entry in failed {
        let kind = reason_kind(entry.1.reason.as_deref().unwrap_or(""));
        let at = *index.entry(kind.clone()).or_insert_with(|| {
            groups.push(ReasonGroup { kind, records: Vec::new() });
            groups.len() - 1
        });
        if let Some(group) = groups.get_mut(at) {
            group.records.push(entry);
        }
    }
    // Stable: equal counts keep the order of their newest failure.
    groups.sort_by_key(|g| std::cmp::Reverse(g.records.len()));
    groups
}

/// The IFS voucher flow the poster takes, as far as the table and the mapping tell.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FlowStatus {
    /// `batch`, `step_by_step` or `not_yet_discovered`.
    pub flow: &'static str,
    /// `[ifs.api] batch` of the stored mapping: `auto`, `true`, `false`, or `unknown` without a mapping.
    pub configured: &'static str,
    /// Why this flow (IFS's refusal of `$batch`, when that is the reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Until when a refusal of `$batch` is believed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    pub text: String,
}

/// `mode` from the mapping (`None`: no readable mapping, the poster's default `auto`), the remembered
/// capability, whether anything was ever posted, and now.
pub fn voucher_flow(
    mode: Option<BatchMode>,
    remembered: Option<&Capability>,
    posted_ever: bool,
    now: DateTime<Utc>,
) -> FlowStatus {
    let configured = match mode {
        Some(BatchMode::Auto) => "auto",
        Some(BatchMode::On) => "true",
        Some(BatchMode::Off) => "false",
        None => "unknown",
    };
    let status =
        |flow, reason: Option<String>, until, text: String| FlowStatus { flow, configured, reason, until, text };
    match mode {
        Some(BatchMode::On) => return status("batch", None, None, "$batch (forced: [ifs.api] batch = true)".into()),
        Some(BatchMode::Off) => {
            return status("step_by_step", None, None, "step by step (forced: [ifs.api] batch = false)".into());
        }
        _ => {}
    }
    let setting = if mode.is_some() { "[ifs.api] batch = auto" } else { "no mapping stored; auto" };
    match remembered {
        Some(c) if c.value == STEP_BY_STEP && c.until > now => status(
            "step_by_step",
            Some(c.reason.clone()),
            Some(c.until),
            format!(
                "step by step until {}, then $batch is tried again ({setting}); why: {}",
                stamp(c.until),
                clip(&c.reason, 300)
            ),
        ),
        Some(c) if c.value == STEP_BY_STEP => status(
            "batch",
            Some(c.reason.clone()),
            Some(c.until),
            format!(
                "$batch, tried again: IFS refused it until {} ({}) ({setting})",
                stamp(c.until),
                clip(&c.reason, 200)
            ),
        ),
        _ if posted_ever => status("batch", None, None, format!("$batch (IFS has not refused it; {setting})")),
        _ => status("not_yet_discovered", None, None, format!("not yet discovered: nothing posted yet ({setting})")),
    }
}

/// A span as people say it: `45s`, `12m`, `3h 12m`, `2d 4h`.
pub fn span(d: Duration) -> String {
    let secs = d.num_seconds().max(0);
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Messages on one queue (SQS's approximate counts).
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Depth {
    url: String,
    /// Visible: waiting for the poster.
    waiting: u64,
    /// Received and not yet deleted: being posted, or held back for a retry.
    in_flight: u64,
    delayed: u64,
}

async fn depth(ctx: &Ctx<'_>, url: &str) -> Result<Depth, String> {
    use QueueAttributeName as A;
    let attrs = ctx
        .sqs()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| shared::error::AwsError::from_sdk("sqs", "GetQueueAttributes", &e).to_string())?
        .attributes
        .unwrap_or_default();
    let get = |name: &A| attrs.get(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(Depth {
        url: url.to_owned(),
        waiting: get(&A::ApproximateNumberOfMessages),
        in_flight: get(&A::ApproximateNumberOfMessagesNotVisible),
        delayed: get(&A::ApproximateNumberOfMessagesDelayed),
    })
}

/// A queue's depth, or why it is not known (unset, unreadable): the rest of the screen still matters.
type QueueRead = Result<Depth, String>;

fn queue_json(read: &QueueRead) -> serde_json::Value {
    match read {
        Ok(d) => serde_json::to_value(d).unwrap_or_default(),
        Err(e) => json!({ "error": e }),
    }
}

/// The record waiting longest: the oldest hold or claim.
fn oldest_waiting(scan: &StatusScan) -> Option<(&SubjectState, DateTime<Utc>)> {
    let held = scan.held.iter().filter_map(|e| held_since(&e.1).map(|t| (e, t)));
    let claimed = scan.in_progress.iter().filter_map(|e| updated_at(&e.1).map(|t| (e, t)));
    held.chain(claimed).min_by_key(|(_, t)| *t)
}

struct Feed {
    name: String,
    state: PollState,
}

pub async fn run(ctx: &Ctx<'_>, since: DateTime<Utc>, window: &str, out: &mut dyn Write) -> Result<i32, CliError> {
    let store = ctx.store()?;
    let now = Utc::now();
    let scan = store.status_scan(since, MAX_SCAN_PAGES).await?;
    let feeds: Vec<Feed> =
        store.poll_positions().await?.into_iter().map(|(feed, state)| Feed { name: feed.name(), state }).collect();
    // An unreadable mapping is `doctor`'s business; here it only means "the poster's default".
    let mode = match store.load_mapping().await {
        Ok(Some(stored)) => LoadedMapping::parse(&stored.document, stored.version).ok().map(|m| m.document.api.batch),
        _ => None,
    };
    let remembered = store.recall(FLOW_CAPABILITY).await?;
    let flow = voucher_flow(mode, remembered.as_ref(), scan.posted_ever, now);
    let queue: QueueRead = match ctx.queue_url() {
        Ok(url) => depth(ctx, &url).await,
        Err(_) => Err("QUEUE_URL not set".into()),
    };
    let dlq: QueueRead = match ctx.dlq_url().await {
        Ok(Some(url)) => depth(ctx, &url).await,
        Ok(None) => Err("unknown (set DLQ_URL or QUEUE_URL)".into()),
        Err(e) => Err(e.to_string()),
    };
    let dead = dlq.as_ref().map_or(0, |d| d.waiting + d.in_flight + d.delayed);
    let code = if scan.failed.is_empty() && scan.held.is_empty() && dead == 0 { 0 } else { 1 };
    let reasons = failure_reasons(&scan.failed);
    let causes = held_causes(&scan.held);
    let expired = scan.in_progress.iter().filter(|(_, st)| st.lease_until.is_none_or(|t| t <= now)).count();
    let oldest = oldest_waiting(&scan);

    if ctx.json {
        let poller: Vec<_> = feeds
            .iter()
            .map(|f| {
                json!({
                    "feed": f.name,
                    "last_run": f.state.completed_at,
                    // The lag is the `PollerLag` metric's: since the feed was last read to its end.
                    "lag_seconds": f.state.completed_at.map(|t| (now - t).num_seconds()),
                    "watermark": f.state.watermark,
                    "newest_record_age_seconds": f.state.watermark.map(|t| (now - t).num_seconds()),
                    "paging": f.state.paging.is_some(),
                })
            })
            .collect();
        let top: Vec<_> = reasons
            .iter()
            .map(|g| {
                let example = g.records.first().map(|(subject, st)| json!({ "subject": subject, "reason": st.reason }));
                let records: Vec<String> = g.records.iter().map(|(s, _)| s.to_string()).collect();
                json!({ "reason": g.kind, "count": g.records.len(), "example": example, "records": records })
            })
            .collect();
        let held: Vec<_> = causes
            .iter()
            .map(|c| {
                let records: Vec<String> = c.records.iter().map(|(s, _)| s.to_string()).collect();
                json!({ "reason": c.reason, "fix": c.fix, "count": records.len(), "records": records })
            })
            .collect();
        let oldest = oldest.map(|((subject, st), at)| {
            json!({ "subject": subject, "status": st.status, "since": at, "age_seconds": (now - at).num_seconds() })
        });
        let body = json!({
            "now": now,
            "since": since,
            "window": window,
            "ok": code == 0,
            "records": {
                "posted": scan.posted,
                "failed": scan.failed.len(),
                "failed_before_window": scan.failed_earlier,
                "held": scan.held.len(),
                "in_progress": scan.in_progress.len(),
                "in_progress_expired": expired,
            },
            "queue": queue_json(&queue),
            "dlq": queue_json(&dlq),
            "oldest_waiting": oldest,
            "poller": poller,
            "ifs_voucher_flow": flow,
            "top_failure_reasons": top,
            "held_causes": held,
            "scan": { "items": scan.items, "pages": scan.pages, "truncated": scan.truncated },
        });
        json_line(out, &body)?;
        return Ok(code);
    }

    writeln!(out, "status at {}, window {window} (since {})", stamp(now), stamp(since))?;
    writeln!(out, "posted          {}", scan.posted)?;
    let earlier = if scan.failed_earlier > 0 {
        format!("  (and {} still failed from before; `connector failures` lists them)", scan.failed_earlier)
    } else {
        String::new()
    };
    writeln!(out, "failed          {}{earlier}", scan.failed.len())?;
    writeln!(out, "held            {}", scan.held.len())?;
    let stale =
        if expired > 0 { format!(" ({expired} with an expired claim, retried on redelivery)") } else { String::new() };
    writeln!(out, "in flight       {} claimed{stale}", scan.in_progress.len())?;
    match &queue {
        Ok(d) => writeln!(
            out,
            "work queue      {} waiting, {} in flight{}",
            d.waiting,
            d.in_flight,
            if d.delayed > 0 { format!(", {} delayed", d.delayed) } else { String::new() }
        )?,
        Err(e) => writeln!(out, "work queue      unknown: {e}")?,
    }
    match &dlq {
        Ok(_) if dead == 0 => writeln!(out, "dead-letter     0")?,
        Ok(_) => writeln!(out, "dead-letter     {dead} message(s) — `connector failures` lists them")?,
        Err(e) => writeln!(out, "dead-letter     {e}")?,
    }
    match oldest {
        Some(((subject, st), at)) => {
            let what = if st.status == "HELD" { "held" } else { "claimed" };
            writeln!(out, "oldest waiting  {subject}, {what} {} ago (since {})", span(now - at), stamp(at))?
        }
        None => writeln!(out, "oldest waiting  none")?,
    }
    if feeds.is_empty() {
        writeln!(out, "poller          never ran (no poll position stored)")?;
    }
    for (i, f) in feeds.iter().enumerate() {
        let label = if i == 0 { "poller" } else { "" };
        // The lag is the `PollerLag` metric's (and its alarm's): since the feed was last read to its end. The
        // newest record seen is older on a quiet day without the poller being behind.
        let run = f
            .state
            .completed_at
            .map_or("no completed run".to_owned(), |t| format!("read to its end {} ago (lag)", span(now - t)));
        let lag = f.state.watermark.map_or("no record seen yet".to_owned(), |t| {
            format!("newest record seen {} ago ({})", span(now - t), stamp(t))
        });
        let paging = if f.state.paging.is_some() { ", paging under way" } else { "" };
        writeln!(out, "{label:<16}{}: {run}, {lag}{paging}", f.name)?;
    }
    writeln!(out, "IFS flow        {}", flow.text)?;
    if scan.truncated {
        writeln!(out, "(the table scan stopped after {} pages: counts are a lower bound)", scan.pages)?;
    }
    if !reasons.is_empty() {
        writeln!(out, "top failure reasons (window {window}):")?;
        let mut t = Table::new(&["COUNT", "REASON", "EXAMPLE"]);
        for g in reasons.iter().take(TOP_REASONS) {
            let example = g
                .records
                .first()
                .map(|(s, st)| format!("{s}: {}", st.reason.as_deref().unwrap_or("")))
                .unwrap_or_default();
            t.row(vec![g.records.len().to_string(), clip(&g.kind, 60), clip(&example, 120)]);
        }
        t.write(out, "  ")?;
        if reasons.len() > TOP_REASONS {
            writeln!(out, "  … and {} more reason(s) (`--json` lists them all)", reasons.len() - TOP_REASONS)?;
        }
        writeln!(
            out,
            "  fix the mapping (`connector mapping push FILE`) or the coding in Brex, then `connector replay --all`"
        )?;
    }
    if !causes.is_empty() {
        writeln!(out, "held causes — {HELD_HEADING}:")?;
        for c in causes.iter().take(TOP_CAUSES) {
            let reason = if c.reason.is_empty() { "(no reason recorded)" } else { c.reason };
            writeln!(out, "  {} record(s): {}", c.records.len(), clip(reason, 300))?;
            if !c.fix.is_empty() {
                writeln!(out, "    fix: {}", clip(c.fix, 300))?;
            }
        }
        if causes.len() > TOP_CAUSES {
            writeln!(out, "  … and {} more cause(s) (`connector failures` lists them)", causes.len() - TOP_CAUSES)?;
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use shared::aws::operator::IdempotencyState;
    use shared::domain::Subject;

    use super::*;

    fn ids(records: &[&SubjectState]) -> Vec<String> {
        records.iter().map(|entry| entry.0.to_string()).collect()
    }

    fn failed(id: &str, reason: &str) -> SubjectState {
        let state = IdempotencyState {
            status: "FAILED".into(),
            result: None,
            reason: Some(reason.into()),
            fix: None,
            held_since: None,
            held_times: None,
            updated_at: Some("2026-06-01T00:00:00+00:00".into()),
            lease_until: None,
        };
        (Subject::parse(id).unwrap(), state)
    }

    #[test]
    fn reasons_lose_their_record_part_detail_and_ids() {
        let no_gl =
            "record accr_1 line 1 (accrli_1, DEBIT 42.00 USD): no GL account — the line carries no \"GL Account\"";
        assert_eq!(reason_kind(no_gl), "no GL account");
        let other = "record accr_77 line 3 (accrli_9, CREDIT 1,042.50 EUR): no GL account — no rule matched field \"GL Account\" = \"9999 Unknown\"";
        assert_eq!(reason_kind(other), "no GL account");
        assert_eq!(
            reason_kind("record accr_5: no lines with a non-zero amount, nothing to post"),
            "no lines with a non-zero amount, nothing to post"
        );
        assert_eq!(reason_kind("Brex record could not be read: 404 not found"), "Brex record could not be read");
        assert_eq!(
            reason_kind("the same spend (exp_123) is being posted as accr_9"),
            "the same spend (…) is being posted as …"
        );
        assert_eq!(reason_kind("IFS answered 400 on 2026-06-01"), "IFS answered 400 on …", "short codes stay");
        assert_eq!(reason_kind(""), "(no reason recorded)");
        assert_eq!(reason_kind("expense exp_1: over 5000.00 USD"), "over … USD");
    }

    #[test]
    fn similar_failures_group_and_the_most_frequent_comes_first() {
        let list = vec![
            failed("accr_a", "record accr_a: no lines with a non-zero amount, nothing to post"),
            failed("accr_b", "record accr_b line 1 (accrli_1, DEBIT 42.00 USD): no GL account — x"),
            failed("accr_c", "record accr_c line 2 (accrli_2, DEBIT 7.00 USD): no GL account — y"),
        ];
        let groups = failure_reasons(&list);
        let summary: Vec<(&str, Vec<String>)> = groups.iter().map(|g| (g.kind.as_str(), ids(&g.records))).collect();
        assert_eq!(
            summary,
            vec![
                ("no GL account", vec!["accr_b".to_owned(), "accr_c".to_owned()]),
                ("no lines with a non-zero amount, nothing to post", vec!["accr_a".to_owned()]),
            ]
        );
    }

    #[test]
    fn the_flow_says_what_the_mapping_forces_or_what_ifs_refused_and_until_when() {
        let now = DateTime::parse_from_rfc3339("2026-06-11T12:00:00Z").unwrap().with_timezone(&Utc);
        let refused = |until: DateTime<Utc>| Capability {
            value: "step_by_step".into(),
            reason: "$batch answered 404 ODP_RESOURCE_NOTFOUND".into(),
            until,
        };
        let later = refused(now + Duration::minutes(40));
        let f = voucher_flow(Some(BatchMode::Auto), Some(&later), true, now);
        assert_eq!((f.flow, f.configured), ("step_by_step", "auto"));
        assert_eq!(
            f.text,
            "step by step until 2026-06-11T12:40:00Z, then $batch is tried again ([ifs.api] batch = auto); why: \
             $batch answered 404 ODP_RESOURCE_NOTFOUND"
        );
        let lapsed = refused(now - Duration::minutes(1));
        assert_eq!(voucher_flow(Some(BatchMode::Auto), Some(&lapsed), true, now).flow, "batch");
        let f = voucher_flow(Some(BatchMode::Auto), None, true, now);
        assert_eq!(f.text, "$batch (IFS has not refused it; [ifs.api] batch = auto)");
        let f = voucher_flow(Some(BatchMode::Auto), None, false, now);
        assert_eq!(
            (f.flow, f.text.as_str()),
            ("not_yet_discovered", "not yet discovered: nothing posted yet ([ifs.api] batch = auto)")
        );
        assert_eq!(voucher_flow(Some(BatchMode::Off), Some(&later), true, now).flow, "step_by_step");
        assert_eq!(voucher_flow(Some(BatchMode::On), Some(&later), false, now).flow, "batch");
        assert_eq!(voucher_flow(None, None, false, now).configured, "unknown");
    }

    #[test]
    fn spans_read_like_people_say_them() {
        assert_eq!(span(Duration::seconds(45)), "45s");
        assert_eq!(span(Duration::minutes(12)), "12m");
        assert_eq!(span(Duration::minutes(192)), "3h 12m");
        assert_eq!(span(Duration::hours(3)), "3h");
        assert_eq!(span(Duration::hours(52)), "2d 4h");
        assert_eq!(span(Duration::days(7)), "7d");
        assert_eq!(span(Duration::seconds(-5)), "0s");
    }
}
