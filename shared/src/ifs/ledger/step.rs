//! The step-by-step voucher flow through the voucher-entry assistant: create the virtual voucher, post
//! each row under its ETag, then `CreateVoucher`. Nothing is committed before `CreateVoucher`; an
//! abandoned virtual voucher is removed.

use serde_json::{Value, json};

use super::dedup::find_posted;
use super::voucher::{VoucherKey, header_body, row_body, voucher_no};
use crate::domain::ETag;
use crate::ifs::error::IfsError;
use crate::ifs::filter::key_literal;
use crate::ifs::reference::IfsReference;
use crate::ifs::transport::{Body, IfsTransport, Request, Resend, body_etag};
use crate::proposal::Proposal;

/// How one attempt at assembling a voucher ended badly. `virtual_voucher`: the virtual voucher it left
/// (its path and last ETag), to be removed so nothing is left behind in IFS.
enum Attempt {
    /// A row POST lost its answer: the virtual voucher may hold a row twice, so it is abandoned and the
    /// voucher assembled afresh (nothing is committed before `CreateVoucher`).
    StartOver {
        error: IfsError,
        virtual_voucher: (String, ETag),
    },
    Fail {
        error: IfsError,
        virtual_voucher: Option<(String, ETag)>,
    },
}

impl Attempt {
    fn fail(error: IfsError) -> Self {
        Self::Fail { error, virtual_voucher: None }
    }
}

/// Creates vouchers one at a time, through `transport`, with the calendar of `reference`.
#[derive(Clone, Copy)]
pub(super) struct StepByStep<'a> {
    transport: &'a IfsTransport,
    reference: &'a IfsReference,
}

impl<'a> StepByStep<'a> {
    pub(super) fn new(transport: &'a IfsTransport, reference: &'a IfsReference) -> Self {
        Self { transport, reference }
    }

    /// Creates each voucher in turn, keeping the caller's index with its result.
    pub(super) async fn create_each<'p>(
        &self,
        proposals: impl Iterator<Item = (usize, &'p Proposal)>,
    ) -> Vec<(usize, Result<VoucherKey, IfsError>)> {
        let mut out = Vec::new();
        for (index, proposal) in proposals {
            out.push((index, self.create_voucher(proposal).await));
        }
        out
    }

    /// Creates a voucher from `proposal` in the status it asks for and returns its key. The caller runs the
    /// dedup query first; this method re-runs it itself when `CreateVoucher` ends without a clear answer
    /// (timeout, dropped connection, 5xx), so an uncertain commit is never duplicated.
    ///
    /// The proposal is sent as it is: IFS's verdict on balance, accounts and periods comes back as
    /// [`IfsError::Rejected`] with IFS's own message.
    pub(super) async fn create_voucher(&self, proposal: &Proposal) -> Result<VoucherKey, IfsError> {
        if proposal.rows.is_empty() {
            return Err(IfsError::InvalidRequest(format!("proposal {} has no rows", proposal.reference_number)));
        }
        let period =
            self.reference.accounting_period(&proposal.company, proposal.voucher_date).await?.ok_or_else(|| {
                IfsError::NoAccountingPeriod { company: proposal.company.to_string(), date: proposal.voucher_date }
            })?;
        let header = header_body(proposal, &period);
        let rows: Vec<Value> = proposal.rows.iter().map(|row| row_body(row, proposal)).collect();
        let mut starts = 0;
        loop {
            starts += 1;
            let (error, left) = match self.assemble_and_commit(proposal, &header, &rows).await {
                Ok(key) => return Ok(key),
                Err(Attempt::StartOver { error, virtual_voucher }) if starts < self.transport.retry().max_attempts => {
                    tracing::warn!(reference = %proposal.reference_number, %error, "voucher row outcome unknown; assembling the voucher afresh");
                    self.remove_virtual(virtual_voucher).await;
                    continue;
                }
                Err(Attempt::StartOver { error, virtual_voucher }) => (error, Some(virtual_voucher)),
                Err(Attempt::Fail { error, virtual_voucher }) => (error, virtual_voucher),
            };
            if let Some(left) = left {
                self.remove_virtual(left).await;
            }
            return Err(error);
        }
    }

    /// Removes a virtual voucher we abandoned (`[ifs.api] remove_voucher_action`), best effort: IFS drops
    /// virtuals by itself eventually, and removing one cannot touch a committed voucher, so a failure here
    /// is only logged. Skipped when the release has no such action configured.
    async fn remove_virtual(&self, (entity_path, mut etag): (String, ETag)) {
        let api = self.transport.api();
        let action = &api.remove_voucher_action;
        if action.is_empty() {
            return;
        }
        match self.transport.guarded_post(&entity_path, action, &json!({}), &mut etag, Resend::Answered).await {
            Ok(_) => self.transport.count_removed_virtual(),
            // Committed after all (an uncertain CreateVoucher that landed), or removed already.
            Err(IfsError::Vanished { .. } | IfsError::Unsupported { status: 404, .. }) => {}
            Err(error) => {
                tracing::warn!(virtual_voucher = entity_path, %error, "could not remove an abandoned virtual voucher")
            }
        }
    }

    async fn assemble_and_commit(
        &self,
        proposal: &Proposal,
        header: &Value,
        rows: &[Value],
    ) -> Result<VoucherKey, Attempt> {
        let api = self.transport.api();
        // 1. The virtual voucher. A lost answer leaves at most an orphan virtual, which IFS discards.
        let req = Request {
            method: reqwest::Method::POST,
            url: self
                .transport
                .url(&format!("{}/{}", api.voucher_entry_projection, api.voucher_entry_set))
                .map_err(Attempt::fail)?,
            body: Body::Json(header),
            if_match: None,
            resend: Resend::Always,
        };
        let resp = self.transport.execute(&req).await.map_err(Attempt::fail)?;
        let entity: Value = resp.json("VoucherSet POST").map_err(Attempt::fail)?;
        let objkey = entity
            .get("Objkey")
            .and_then(Value::as_str)
            .ok_or_else(|| Attempt::fail(IfsError::Decode("VoucherSet POST: no Objkey".into())))?;
        let mut etag: ETag = body_etag(&entity)
            .or(resp.etag)
            .ok_or_else(|| Attempt::fail(IfsError::Decode("VoucherSet POST: no ETag".into())))?;
        let entity_path =
            format!("{}/{}(Objkey={})", api.voucher_entry_projection, api.voucher_entry_set, key_literal(objkey));

        // 2. The rows, each guarded by the voucher's ETag.
        for row in rows {
            match self
                .transport
                .guarded_post(&entity_path, &api.voucher_posting_array, row, &mut etag, Resend::Answered)
                .await
            {
                Ok(_) => {}
                Err(error @ IfsError::Transport { .. }) => {
                    return Err(Attempt::StartOver { error, virtual_voucher: (entity_path, etag) });
                }
                // Gone already: nothing to remove, and nothing committed; start over.
                Err(error @ IfsError::Vanished { .. }) => return Err(Attempt::fail(error)),
                Err(error) => return Err(Attempt::Fail { error, virtual_voucher: Some((entity_path, etag)) }),
            }
        }

        // 3. Commit.
        match self.commit(proposal, &entity_path, &mut etag).await {
            Ok(key) => Ok(key),
            Err(error) => Err(Attempt::Fail { error, virtual_voucher: Some((entity_path, etag)) }),
        }
    }

    async fn commit(&self, proposal: &Proposal, entity_path: &str, etag: &mut ETag) -> Result<VoucherKey, IfsError> {
        let action = self.transport.api().create_voucher_action.clone();
        let mut uncertain = 0u32;
        loop {
            let outcome =
                self.transport.guarded_post(entity_path, &action, &json!({}), etag, Resend::Unprocessed).await;
            let why = match outcome {
                Ok(answer) => match voucher_no(&answer) {
                    Some(no) => {
                        return Ok(VoucherKey {
                            company: proposal.company.clone(),
                            accounting_year: self.committed_year(proposal).await?,
                            voucher_type: proposal.voucher_type.clone(),
                            voucher_no: no,
                        });
                    }
                    // Committed, but the number is unreadable: the dedup query knows it.
                    None => IfsError::Decode(format!("CreateVoucher answer without a voucher number: {answer}")),
                },
                Err(e @ (IfsError::Transport { .. } | IfsError::Unavailable { .. } | IfsError::Decode(_))) => e,
                // After an uncertain round the virtual may be gone because that round did commit.
                Err(e @ (IfsError::Unsupported { status: 404, .. } | IfsError::Vanished { .. })) if uncertain > 0 => e,
                Err(e) => return Err(e),
            };
            self.transport.count_uncertain_check();
            uncertain += 1;
            tracing::warn!(reference = %proposal.reference_number, error = %why, "CreateVoucher outcome unknown; re-checking IFS");
            // Give a commit that is still in flight time to land before looking.
            // The RNG must be dropped before the await: it is not Send.
            let delay = self.transport.retry().next_delay(uncertain, None, &mut rand::rng());
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let refs = std::slice::from_ref(&proposal.reference_number);
            match find_posted(self.transport, &proposal.company, &proposal.reference_serie, refs).await {
                Ok(mut found) => {
                    if let Some(key) = found.remove(&proposal.reference_number) {
                        tracing::info!(reference = %proposal.reference_number, voucher = %key, "uncertain CreateVoucher had committed");
                        return Ok(key);
                    }
                }
                Err(check) => {
                    return Err(IfsError::UncertainCommit {
                        reference: proposal.reference_number.to_string(),
                        message: format!("{why}; the re-check failed too: {check}"),
                    });
                }
            }
            let gone = matches!(why, IfsError::Unsupported { status: 404, .. } | IfsError::Vanished { .. });
            if gone || uncertain >= self.transport.retry().max_attempts {
                return Err(IfsError::UncertainCommit {
                    reference: proposal.reference_number.to_string(),
                    message: why.to_string(),
                });
            }
        }
    }

    /// The accounting year the header was created with (from the cached calendar).
    async fn committed_year(&self, proposal: &Proposal) -> Result<i32, IfsError> {
        self.reference
            .accounting_period(&proposal.company, proposal.voucher_date)
            .await?
            .map(|p| p.accounting_year)
            .ok_or_else(|| IfsError::NoAccountingPeriod {
                company: proposal.company.to_string(),
                date: proposal.voucher_date,
            })
    }
}
