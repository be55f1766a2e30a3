//! Voucher creation through OData `$batch`: one multipart/mixed request carries several vouchers, each as
//! its own atomic change set of the same three steps as the step-by-step flow:
//!
//! 1. `POST VoucherSet` (Content-ID n) — the virtual voucher;
//! 2. `POST $n/VoucherPostingArray` per row with `If-Match: $n` (the ETag part n created);
//! 3. `POST $n/…VoucherEntry_CreateVoucher` with `If-Match: $n`.
//!
//! Every mutation still carries If-Match. A change set is all or nothing, so a refused voucher (unbalanced,
//! closed period) or a stale ETag (412) leaves nothing behind: the 412 is handled by sending that change set
//! again (bounded), which builds a fresh virtual voucher. `Prefer: odata.continue-on-error` keeps one refusal
//! from stopping the other vouchers. JSON batch (OData 4.01) is not confirmed for IFS, so this is multipart.
//!
//! A `$batch` that ends without a readable answer (timeout, dropped connection, 5xx) may have committed any
//! of its change sets: the dedup query is run for all of them before any is sent again, exactly as after an
//! uncertain `CreateVoucher` in the step-by-step flow.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::Value;

use super::capability::FlowMemory;
use super::dedup::find_posted;
use super::step::StepByStep;
use super::voucher::{VoucherKey, header_body, row_body, voucher_no};
use crate::domain::CompanyCode;
use crate::ifs::api_names::{BatchMode, IfsApiNames};
use crate::ifs::error::{IfsError, classify_status, parse_error_body};
use crate::ifs::multipart::{ChangeSetAnswer, PartResponse, parse_batch_response, write_operation};
use crate::ifs::reference::{AccountingPeriodInfo, IfsReference};
use crate::ifs::transport::{Body, IfsTransport, MAX_STALE_ETAG_RETRIES, Request, Resend};
use crate::proposal::Proposal;
use crate::retry::parse_retry_after;

/// A proposal ready to go: the header and rows as they go on the wire.
struct Prepared<'a> {
    /// Position in the caller's slice.
    index: usize,
    proposal: &'a Proposal,
    accounting_year: i32,
    header: Value,
    rows: Vec<Value>,
}

/// The multipart body for `vouchers`: one change set each, Content-IDs unique across the batch.
fn render_batch(api: &IfsApiNames, boundary: &str, vouchers: &[&Prepared<'_>]) -> String {
    let mut out = String::new();
    let mut next_id = 1;
    for (n, v) in vouchers.iter().enumerate() {
        let changeset = format!("{boundary}_cs{n}");
        let _ = write!(out, "--{boundary}\r\nContent-Type: multipart/mixed;boundary={changeset}\r\n\r\n");
        let head = next_id;
        next_id += 1;
        let _ = write!(out, "--{changeset}\r\n");
        write_operation(&mut out, head, &api.voucher_entry_set, None, &v.header.to_string());
        for row in &v.rows {
            let _ = write!(out, "--{changeset}\r\n");
            let target = format!("${head}/{}", api.voucher_posting_array);
            write_operation(&mut out, next_id, &target, Some(head), &row.to_string());
            next_id += 1;
        }
        let _ = write!(out, "--{changeset}\r\n");
        let target = format!("${head}/{}", api.create_voucher_action);
        write_operation(&mut out, next_id, &target, Some(head), "{}");
        next_id += 1;
        let _ = write!(out, "--{changeset}--\r\n");
    }
    let _ = write!(out, "--{boundary}--\r\n");
    out
}

/// The Content-ID of each voucher's first operation that uses an ETag reference (`If-Match: $head`, its
/// first row), as [`render_batch`] numbers them.
fn first_reference_ids(vouchers: &[&Prepared<'_>]) -> Vec<String> {
    let mut next_id = 1;
    vouchers
        .iter()
        .map(|v| {
            let first_row = next_id + 1;
            next_id += v.rows.len() + 2;
            first_row.to_string()
        })
        .collect()
}

/// Whether a refused change set looks like the tenant not resolving the ETag (or URL) reference to the
/// voucher the same change set just created, rather than a stale ETag or a business refusal: it failed on
/// its first referencing operation (when the server names it) with 412, 404, or an OData-layer 400.
fn refuses_reference(part: &PartResponse, first_reference: &str) -> bool {
    let on_reference = part.content_id.as_deref().is_none_or(|id| id == first_reference);
    let odata_layer = || parse_error_body(part.body.as_bytes()).code.starts_with("ODP_");
    on_reference
        && match part.status {
            412 | 404 => true,
            400 => odata_layer(),
            _ => false,
        }
}

/// The `$batch` envelope itself was refused: the tenant has no (usable) `$batch` here. Nothing ran.
fn envelope_refused(error: &IfsError) -> bool {
    matches!(error, IfsError::Unsupported { .. }) || matches!(error, IfsError::Rejected { status: 400..=499, .. })
}

/// What one `$batch` run over some vouchers ended with.
struct BatchRun {
    done: Vec<(usize, Result<VoucherKey, IfsError>)>,
    /// Under `auto`: the tenant refused `$batch`, and the vouchers that have no outcome and surely did not
    /// commit, to be posted step by step.
    refused: Option<Refusal>,
}

/// Why `$batch` was given up for a run, and what is left to post step by step.
struct Refusal {
    reason: String,
    /// Indexes of the vouchers without an outcome.
    rest: Vec<usize>,
    /// Only 412s were seen: that is what a tenant answers when it compares `$n` literally, and also what
    /// sustained contention looks like. Believed (remembered) only once the step-by-step flow posts what
    /// `$batch` could not.
    tentative: bool,
}

/// What the answers of one round say about the tenant and ETag references.
enum ReferenceVerdict {
    /// A 404 or an OData-layer 400 on the reference: the tenant does not resolve it.
    Refused(IfsError),
    /// Only 412s on the reference, round after round (see [`Refusal::tentative`]).
    Suspected(IfsError),
}

/// How one voucher of a round ended.
enum Verdict {
    Done(Result<VoucherKey, IfsError>),
    /// 412 inside its change set: rolled back, send again.
    Stale,
    /// A retryable refusal of its change set (rolled back) or no answer for it: send again.
    Again(IfsError, Option<std::time::Duration>),
    /// It may or may not have committed: ask the dedup query.
    Uncertain(IfsError),
}

fn key_for(v: &Prepared<'_>, answers: &[PartResponse]) -> Verdict {
    let Some(last) = answers.last() else {
        return Verdict::Uncertain(IfsError::Decode("an applied change set without answers".into()));
    };
    let parsed: Option<Value> = serde_json::from_str(&last.body).ok();
    match parsed.as_ref().and_then(voucher_no) {
        Some(no) => Verdict::Done(Ok(VoucherKey {
            company: v.proposal.company.clone(),
            accounting_year: v.accounting_year,
            voucher_type: v.proposal.voucher_type.clone(),
            voucher_no: no,
        })),
        // Committed, but the number is unreadable: the dedup query knows it.
        None => Verdict::Uncertain(IfsError::Decode(format!(
            "CreateVoucher answer without a voucher number: {}",
            last.body
        ))),
    }
}

/// What the failed operation of a voucher's change set addressed (its `Content-ID` names it), for errors
/// that point at a name to fix; `$batch` when the server did not say. `head` is the header's Content-ID.
fn failed_operation(api: &IfsApiNames, v: &Prepared<'_>, head: usize, part: &PartResponse) -> String {
    let op = part.content_id.as_deref().and_then(|id| id.parse::<usize>().ok());
    let target = match op {
        Some(n) if n == head => api.voucher_entry_set.clone(),
        Some(n) if n == head + v.rows.len() + 1 => {
            format!("{}(…)/{}", api.voucher_entry_set, api.create_voucher_action)
        }
        Some(n) if n > head && n <= head + v.rows.len() => {
            format!("{}(…)/{}", api.voucher_entry_set, api.voucher_posting_array)
        }
        _ => return "$batch".into(),
    };
    format!("{}/{target} (in $batch)", api.voucher_entry_projection)
}

fn verdict_for_failure(part: &PartResponse, path: &str) -> Verdict {
    if part.status == 412 {
        return Verdict::Stale;
    }
    let retry_after = part
        .headers
        .iter()
        .find(|(n, _)| n == "retry-after")
        .and_then(|(_, v)| parse_retry_after(v, chrono::Utc::now()));
    let error = classify_status(part.status, &parse_error_body(part.body.as_bytes()), retry_after, path);
    match error {
        // The change set was rolled back as a whole, so sending it again cannot duplicate anything.
        IfsError::RateLimited { .. } | IfsError::Unavailable { .. } => Verdict::Again(error, retry_after),
        other => Verdict::Done(Err(other)),
    }
}

/// The `$batch` flow over `transport`, with the calendar of `reference`, learning into `flow` what the
/// tenant refuses; what `$batch` cannot post goes through `step`.
pub(super) struct BatchFlow<'f> {
    transport: &'f IfsTransport,
    reference: &'f IfsReference,
    flow: &'f FlowMemory,
    step: StepByStep<'f>,
}

impl<'f> BatchFlow<'f> {
    pub(super) fn new(transport: &'f IfsTransport, reference: &'f IfsReference, flow: &'f FlowMemory) -> Self {
        Self { transport, reference, flow, step: StepByStep::new(transport, reference) }
    }

    /// Creates a voucher for each proposal; one result per proposal, in order: in `$batch` requests of up
    /// to `batch_max_vouchers` change sets, until (under `auto`) the tenant refuses `$batch` or its ETag
    /// references; that is remembered in the flow memory and the rest go step by step.
    pub(super) async fn create_vouchers(&self, proposals: &[Proposal]) -> Vec<Result<VoucherKey, IfsError>> {
        let mode = self.transport.api().batch;
        let mut results: Vec<Option<Result<VoucherKey, IfsError>>> = proposals.iter().map(|_| None).collect();
        let mut ready = Vec::new();
        for (index, proposal) in proposals.iter().enumerate() {
            match self.prepare(index, proposal).await {
                Ok(p) => ready.push(p),
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        let mut fell_back = false;
        for chunk in ready.chunks(self.transport.api().batch_max_vouchers.max(1)) {
            let rest: Vec<usize> = if fell_back {
                chunk.iter().map(|v| v.index).collect()
            } else {
                let run = self.post_batch(chunk, mode).await;
                for (index, outcome) in run.done {
                    results[index] = Some(outcome);
                }
                let Some(refusal) = run.refused else { continue };
                fell_back = true;
                if refusal.tentative {
                    let outcomes = self.step.create_each(refusal.rest.into_iter().map(|i| (i, &proposals[i]))).await;
                    if outcomes.iter().any(|(_, r)| r.is_ok()) {
                        self.flow.refuse(&refusal.reason, chrono::Utc::now()).await;
                    }
                    for (index, outcome) in outcomes {
                        results[index] = Some(outcome);
                    }
                    continue;
                }
                self.flow.refuse(&refusal.reason, chrono::Utc::now()).await;
                refusal.rest
            };
            for (index, outcome) in self.step.create_each(rest.into_iter().map(|i| (i, &proposals[i]))).await {
                results[index] = Some(outcome);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(IfsError::Decode("the $batch round ended without an outcome".into()))))
            .collect()
    }

    async fn prepare<'a>(&self, index: usize, proposal: &'a Proposal) -> Result<Prepared<'a>, IfsError> {
        if proposal.rows.is_empty() {
            return Err(IfsError::InvalidRequest(format!("proposal {} has no rows", proposal.reference_number)));
        }
        let period: AccountingPeriodInfo =
            self.reference.accounting_period(&proposal.company, proposal.voucher_date).await?.ok_or_else(|| {
                IfsError::NoAccountingPeriod { company: proposal.company.to_string(), date: proposal.voucher_date }
            })?;
        Ok(Prepared {
            index,
            proposal,
            accounting_year: period.accounting_year,
            header: header_body(proposal, &period),
            rows: proposal.rows.iter().map(|row| row_body(row, proposal)).collect(),
        })
    }

    /// Sends `vouchers` in one `$batch`, then again for those whose change set must be repeated, until every
    /// one has an outcome. Each repeat is bounded: 412s by [`MAX_STALE_ETAG_RETRIES`], retryable refusals and
    /// uncertain rounds by the retry policy's attempts. When the tenant refuses `$batch` itself, or the ETag
    /// references in its change sets (every change set of a round refused on its first reference: at once
    /// for a 404/400, tentatively on the second such round for a 412, never once a change set of ours was
    /// applied), `auto` hands the vouchers back for the step-by-step flow; `true` holds them (an
    /// `Unsupported` error) on a 404/400 and lets 412s end in `PreconditionFailed`.
    async fn post_batch(&self, vouchers: &[Prepared<'_>], mode: BatchMode) -> BatchRun {
        let api = self.transport.api();
        let policy = self.transport.retry();
        let mut done = Vec::new();
        let mut pending: Vec<&Prepared<'_>> = vouchers.iter().collect();
        let mut stale: HashMap<usize, u32> = HashMap::new();
        let mut again: HashMap<usize, u32> = HashMap::new();
        let mut uncertain_rounds = 0u32;
        let mut reference_refusals = 0u32;
        let url = match self.transport.url(&format!("{}/$batch", api.voucher_entry_projection)) {
            Ok(u) => u,
            Err(e) => {
                return BatchRun { done: vouchers.iter().map(|v| (v.index, Err(e.clone()))).collect(), refused: None };
            }
        };
        let hand_back = |done, reason: String, pending: &[&Prepared<'_>], tentative| BatchRun {
            done,
            refused: Some(Refusal { reason, rest: pending.iter().map(|v| v.index).collect(), tentative }),
        };
        while !pending.is_empty() {
            let boundary = format!("batch_{}", uuid::Uuid::new_v4().simple());
            let text = render_batch(&api, &boundary, &pending);
            let req = Request {
                method: reqwest::Method::POST,
                url: url.clone(),
                body: Body::Batch { boundary: &boundary, text: &text },
                if_match: None,
                // A lost answer may hide committed change sets: only a surely unprocessed request (429,
                // connection refused) is re-sent blindly; anything else is settled below.
                resend: Resend::Unprocessed,
            };
            let mut undecodable = false;
            let verdicts: Vec<Verdict> = match self.transport.execute(&req).await {
                Ok(resp) => match parse_batch_response(resp.content_type.as_deref().unwrap_or(""), &resp.body) {
                    Ok(answers) => {
                        for answer in &answers {
                            if matches!(answer, ChangeSetAnswer::Failed(part) if part.status == 412) {
                                self.transport.count_412_in_batch();
                            }
                        }
                        if answers.iter().any(|a| matches!(a, ChangeSetAnswer::Applied(_))) {
                            self.flow.prove_references();
                        } else {
                            match (self.reference_refusal(&pending, &answers, &mut reference_refusals), mode) {
                                (Some(ReferenceVerdict::Refused(e)), BatchMode::Auto) => {
                                    return hand_back(done, e.to_string(), &pending, false);
                                }
                                (Some(ReferenceVerdict::Suspected(e)), BatchMode::Auto) => {
                                    return hand_back(done, e.to_string(), &pending, true);
                                }
                                // `batch = true` holds only on proof; 412s run their bounded repeats.
                                (Some(ReferenceVerdict::Refused(e)), _) => {
                                    done.extend(pending.iter().map(|v| (v.index, Err(e.clone()))));
                                    return BatchRun { done, refused: None };
                                }
                                _ => {}
                            }
                        }
                        let heads = first_reference_ids(&pending);
                        pending
                            .iter()
                            .enumerate()
                            .map(|(i, v)| match answers.get(i) {
                                Some(ChangeSetAnswer::Applied(ops)) => key_for(v, ops),
                                Some(ChangeSetAnswer::Failed(part)) => {
                                    let head = heads[i].parse::<usize>().map_or(0, |first_row| first_row - 1);
                                    verdict_for_failure(part, &failed_operation(&api, v, head, part))
                                }
                                // The server stopped before this change set: it did nothing.
                                None => Verdict::Again(
                                    IfsError::Unavailable {
                                        status: 200,
                                        code: String::new(),
                                        message: "the $batch answer has no response for this change set".into(),
                                    },
                                    None,
                                ),
                            })
                            .collect()
                    }
                    // IFS answered but unreadably: what committed is unknown.
                    Err(e) => {
                        undecodable = true;
                        pending.iter().map(|_| Verdict::Uncertain(IfsError::Decode(e.clone()))).collect()
                    }
                },
                Err(e) if envelope_refused(&e) => {
                    let reason = format!("$batch refused: {e}");
                    if mode == BatchMode::Auto {
                        return hand_back(done, reason, &pending, false);
                    }
                    let held = match e {
                        IfsError::Rejected { status, code, message } => {
                            IfsError::Unsupported { status, code, message, path: "$batch".into() }
                        }
                        other => other,
                    };
                    pending.iter().map(|_| Verdict::Done(Err(held.clone()))).collect()
                }
                Err(e @ (IfsError::Transport { .. } | IfsError::Unavailable { .. } | IfsError::Decode(_))) => {
                    pending.iter().map(|_| Verdict::Uncertain(e.clone())).collect()
                }
                Err(e) => pending.iter().map(|_| Verdict::Done(Err(e.clone()))).collect(),
            };

            let mut next = Vec::new();
            let mut uncertain = Vec::new();
            let mut wait_hint = None;
            let mut wait = false;
            for (v, verdict) in pending.into_iter().zip(verdicts) {
                match verdict {
                    Verdict::Done(outcome) => done.push((v.index, outcome)),
                    Verdict::Stale => {
                        let n = stale.entry(v.index).or_default();
                        *n += 1;
                        if *n > MAX_STALE_ETAG_RETRIES {
                            done.push((v.index, Err(IfsError::PreconditionFailed { attempts: *n })));
                        } else {
                            self.transport.count_stale_reread();
                            tracing::debug!(reference = %v.proposal.reference_number, "412 in a $batch change set: sending it again");
                            next.push(v);
                        }
                    }
                    Verdict::Again(e, after) => {
                        let n = again.entry(v.index).or_default();
                        *n += 1;
                        if *n >= policy.max_attempts {
                            done.push((v.index, Err(e)));
                        } else {
                            wait = true;
                            wait_hint = wait_hint.max(after);
                            next.push(v);
                        }
                    }
                    Verdict::Uncertain(e) => uncertain.push((v, e)),
                }
            }
            if !uncertain.is_empty() {
                uncertain_rounds += 1;
                let (resolved, unresolved) = self.settle_uncertain(uncertain, uncertain_rounds).await;
                done.extend(resolved);
                if undecodable && mode == BatchMode::Auto && !unresolved.is_empty() {
                    // The dedup query settled what committed; an answer we cannot read is a $batch this
                    // tenant (or its gateway) does not really serve.
                    let reason = "$batch answered in a shape the connector cannot read".to_owned();
                    next.extend(unresolved);
                    return hand_back(done, reason, &next, false);
                }
                next.extend(unresolved);
            } else if wait {
                let delay = policy.next_delay(again.values().copied().max().unwrap_or(1), wait_hint, &mut rand::rng());
                if let Some(delay) = delay {
                    self.transport.count_retry();
                    tokio::time::sleep(delay).await;
                }
            }
            pending = next;
        }
        BatchRun { done, refused: None }
    }

    /// Whether every change set of a round was refused on its first ETag reference, seen often enough to
    /// conclude (or, for 412s, suspect) that the tenant does not resolve references (see
    /// [`BatchFlow::post_batch`]); the error naming what was seen.
    fn reference_refusal(
        &self,
        pending: &[&Prepared<'_>],
        answers: &[ChangeSetAnswer],
        rounds: &mut u32,
    ) -> Option<ReferenceVerdict> {
        if self.flow.references_proven() || answers.len() < pending.len() {
            return None;
        }
        let firsts = first_reference_ids(pending);
        let mut refused = Vec::new();
        for (answer, first) in answers.iter().zip(&firsts) {
            match answer {
                ChangeSetAnswer::Failed(part) if refuses_reference(part, first) => refused.push(part),
                _ => {
                    *rounds = 0;
                    return None;
                }
            }
        }
        *rounds += 1;
        let decisive = refused.iter().any(|p| p.status != 412);
        if !decisive && *rounds < 2 {
            return None;
        }
        let part = refused.first()?;
        let body = parse_error_body(part.body.as_bytes());
        let error = IfsError::Unsupported {
            status: part.status,
            code: body.code,
            message: format!(
                "its change sets do not take the reference to the voucher they just created (If-Match: $n answered \
                 {} in {} round(s)): {}",
                part.status, rounds, body.message
            ),
            path: "$batch".into(),
        };
        Some(if decisive { ReferenceVerdict::Refused(error) } else { ReferenceVerdict::Suspected(error) })
    }

    /// After a `$batch` whose outcome is unknown for `uncertain`: waits a little, asks the dedup query, and
    /// returns the vouchers found (done) and those to send again. Gives up with `UncertainCommit` when the
    /// query fails or after the retry policy's attempts.
    async fn settle_uncertain<'p, 'a>(
        &self,
        uncertain: Vec<(&'p Prepared<'a>, IfsError)>,
        round: u32,
    ) -> (Vec<(usize, Result<VoucherKey, IfsError>)>, Vec<&'p Prepared<'a>>) {
        let policy = self.transport.retry();
        self.transport.count_uncertain_check();
        tracing::warn!(vouchers = uncertain.len(), error = %uncertain[0].1, "$batch outcome unknown; re-checking IFS");
        // Give a commit still in flight time to land before looking. The RNG is dropped before the await.
        let delay = policy.next_delay(round, None, &mut rand::rng());
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let mut by_company: BTreeMap<(CompanyCode, String), Vec<_>> = BTreeMap::new();
        for (v, _) in &uncertain {
            by_company
                .entry((v.proposal.company.clone(), v.proposal.reference_serie.clone()))
                .or_default()
                .push(v.proposal.reference_number.clone());
        }
        let mut found = HashMap::new();
        let mut check_failed: HashMap<CompanyCode, String> = HashMap::new();
        for ((company, serie), refs) in &by_company {
            match find_posted(self.transport, company, serie, refs).await {
                Ok(keys) => found.extend(keys),
                Err(e) => {
                    check_failed.insert(company.clone(), e.to_string());
                }
            }
        }
        let mut done = Vec::new();
        let mut again = Vec::new();
        for (v, why) in uncertain {
            let reference = v.proposal.reference_number.to_string();
            if let Some(check) = check_failed.get(&v.proposal.company) {
                let message = format!("{why}; the re-check failed too: {check}");
                done.push((v.index, Err(IfsError::UncertainCommit { reference, message })));
            } else if let Some(key) = found.remove(&v.proposal.reference_number) {
                tracing::info!(reference, voucher = %key, "uncertain $batch change set had committed");
                done.push((v.index, Ok(key)));
            } else if round >= policy.max_attempts {
                done.push((v.index, Err(IfsError::UncertainCommit { reference, message: why.to_string() })));
            } else {
                again.push(v);
            }
        }
        (done, again)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_change_sets_classify() {
        let part = |status, code: &str| PartResponse {
            content_id: None,
            status,
            headers: vec![("retry-after".into(), "2".into())],
            body: format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"The voucher is not balanced\"}}}}"),
        };
        assert!(matches!(
            verdict_for_failure(&part(400, "DATABASE_ERROR"), "$batch"),
            Verdict::Done(Err(IfsError::Rejected { .. }))
        ));
        assert!(matches!(
            verdict_for_failure(&part(428, "ODP_MISSING_PRECONDITION"), "$batch"),
            Verdict::Done(Err(IfsError::MissingPrecondition { .. }))
        ));
        assert!(matches!(verdict_for_failure(&part(503, "SERVICE_UNAVAILABLE"), "$batch"), Verdict::Again(_, Some(_))));
        assert!(matches!(verdict_for_failure(&part(412, "ODP_PRECONDITION_FAILED"), "$batch"), Verdict::Stale));
    }
}
