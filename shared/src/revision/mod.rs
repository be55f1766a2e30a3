//! Changes after export: a Brex record (or expense) that comes back with a higher `version` than the one its
//! voucher was posted from.
//!
//! The new version is mapped again and compared with what was posted ([`same_booking`]): a change the voucher
//! does not carry (a receipt, a memo, a text) is no change, and the posted voucher is reported again as
//! always. Otherwise `[ifs] changed_after_export` decides ([`decide`]):
//!
//! - `hold` (the default): held for a person, the fix naming both versions; nothing is written.
//! - `replace`: the new version is posted under `<id>-v<version>`; the old voucher is removed from the hold
//!   table while it is not approved (If-Match on its ETag), or reversed once it is.
//! - `reverse`: the new version is posted and the old voucher reversed (`<old reference>-R`, same rows with
//!   the sides swapped), whatever its approval state.
//!
//! Every step is idempotent ([`Reviser::revise`]): the revision to one version is claimed in the idempotency
//! store, each IFS write is looked for with the dedup query (or the voucher's state is read) before it is
//! made, and the new voucher is recorded as the subject's posted voucher only after every write is done.

use chrono::{DateTime, NaiveDate, Utc};

use crate::audit::{RevisionAudit, Undone};
use crate::domain::{ReferenceNumber, Subject};
use crate::error::{Disposition, ExternalError};
use crate::mapping::ChangedAfterExport;
use crate::ports::{Begin, IdempotencyKey, IdempotencyStore, Ledger, PostedVersion, Removal, VoucherState};
use crate::proposal::{MAX_ROW_TEXT, Proposal, ProposalRow, truncate_chars};

/// What the voucher carries into the books, texts left out: the company, type, date and reference serie,
/// and each row's account, code parts, side, amount, currency and rate, in any order.
fn booking(proposal: &Proposal) -> impl PartialEq + std::fmt::Debug {
    let mut rows: Vec<String> = proposal
        .rows
        .iter()
        .map(|r: &ProposalRow| {
            // `normalize` so 171.750 and 171.75 are one amount.
            format!(
                "{}|{:?}|{:?}|{}|{}|{:?}",
                r.account,
                r.code_parts,
                r.side,
                r.amount.normalize(),
                r.currency,
                r.currency_rate.map(|d| d.normalize())
            )
        })
        .collect();
    rows.sort();
    (
        proposal.company.clone(),
        proposal.voucher_type.clone(),
        proposal.voucher_date,
        proposal.reference_serie.clone(),
        rows,
    )
}

/// Whether two proposals book the same thing (see [`booking`]).
pub fn same_booking(a: &Proposal, b: &Proposal) -> bool {
    booking(a) == booking(b)
}

/// What to do with a subject whose record came back after its voucher was posted.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not newer, or newer without a change the voucher carries: report the posted voucher again.
    Unchanged,
    /// `hold`: a person decides.
    Hold { reason: String, fix: String },
    /// `replace` / `reverse`: post the new version and take the old voucher out.
    Revise(ChangedAfterExport),
}

/// Decides for a record now at `version`, mapped to `proposal`, whose voucher was posted as `posted`.
pub fn decide(posted: &PostedVersion, version: i64, proposal: &Proposal, policy: ChangedAfterExport) -> Decision {
    if version <= posted.version || same_booking(&posted.proposal, proposal) {
        return Decision::Unchanged;
    }
    match policy {
        ChangedAfterExport::Hold => {
            let new_total = PostedVersion { version, voucher: String::new(), proposal: proposal.clone() }.total();
            Decision::Hold {
                reason: format!(
                    "changed in Brex after export: version {} was posted as voucher {} ({}); version {version} books \
                     something else ({new_total})",
                    posted.version,
                    posted.voucher,
                    posted.total()
                ),
                fix: format!(
                    "decide which version stands: to book version {version}, push the mapping with `[ifs] \
                     changed_after_export = \"replace\"` or `\"reverse\"` (voucher {} of version {} is then removed \
                     or reversed) and the held message posts it when it comes back (`connector replay --all` once it \
                     is in the DLQ); to keep version {}, undo the change in Brex",
                    posted.voucher, posted.version, posted.version
                ),
            }
        }
        other => Decision::Revise(other),
    }
}

/// The reference of the voucher of a revised version: `<id>-v<version>`, so the dedup query tells it from
/// the first voucher (which carries the bare id).
pub fn revision_reference(subject: &Subject, version: i64) -> Result<ReferenceNumber, ExternalError> {
    reference(&format!("{}-v{version}", subject.reference()))
}

/// The reference of the reversal of a voucher: its own reference with `-R`.
pub fn reversal_reference(of: &ReferenceNumber) -> Result<ReferenceNumber, ExternalError> {
    reference(&format!("{of}-R"))
}

fn reference(text: &str) -> Result<ReferenceNumber, ExternalError> {
    ReferenceNumber::parse(text).map_err(|e| {
        let mut err =
            ExternalError::new("IFS", format!("no room for the revision's reference: {e}"), Disposition::Hold);
        err.fix = Some(
            "the Brex id is too long to mark a revision in IFS's 50-char ReferenceNumber: correct the \
                        voucher in IFS by hand, then mark the record exported in Brex"
                .into(),
        );
        err
    })
}

/// The reversal of `posted`: the same rows with the sides swapped, dated `date` (an open period: the new
/// version's date), its texts saying what it reverses.
pub fn reversal(posted: &PostedVersion, date: NaiveDate) -> Result<Proposal, ExternalError> {
    let old = &posted.proposal;
    let mark = format!("Reversal of {} (Brex version {})", posted.voucher, posted.version);
    let rows = old
        .rows
        .iter()
        .map(|r| ProposalRow {
            side: r.side.reversed(),
            text: truncate_chars(&format!("{mark}: {}", r.text), MAX_ROW_TEXT),
            ..r.clone()
        })
        .collect();
    Ok(Proposal {
        reference_number: reversal_reference(&old.reference_number)?,
        voucher_date: date,
        text: truncate_chars(&format!("{mark} {}", old.text), MAX_ROW_TEXT),
        rows,
        ..old.clone()
    })
}

/// A revision carried out (or found carried out).
#[derive(Debug, Clone, PartialEq)]
pub struct Revised {
    /// The voucher of the new version: reported to Brex.
    pub voucher: String,
    /// For the audit trail; `None` when a redelivery found the revision done.
    pub audit: Option<RevisionAudit>,
}

/// Why a revision did not go through.
#[derive(Debug, Clone)]
pub enum NotRevised {
    /// Another invocation is revising it now.
    Busy,
    /// An outside system failed or refused: its disposition decides (the claim is given back).
    Failed(ExternalError),
}

/// One revision to carry out: `subject`, posted as `posted`, is now at Brex `version` and maps to
/// `proposal`; `policy` is `replace` or `reverse`.
#[derive(Debug, Clone)]
pub struct Change {
    pub subject: Subject,
    pub posted: PostedVersion,
    pub version: i64,
    pub proposal: Proposal,
    pub policy: ChangedAfterExport,
}

/// Carries out revisions through the ledger and the idempotency store.
pub struct Reviser<'a> {
    pub ledger: &'a dyn Ledger,
    pub idempotency: &'a dyn IdempotencyStore,
}

impl Reviser<'_> {
    /// Carries out `change`. Safe to repeat after any crash: see the module docs.
    pub async fn revise(
        &self,
        change: Change,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
        retain_until: DateTime<Utc>,
    ) -> Result<Revised, NotRevised> {
        let Change { subject, posted, version, mut proposal, policy } = change;
        let (subject, posted) = (&subject, &posted);
        let claim = IdempotencyKey::Revision(subject.clone(), version);
        let aws = |e: crate::error::AwsError| {
            NotRevised::Failed(ExternalError::new("DynamoDB", e.to_string(), Disposition::Retryable))
        };
        match self.idempotency.begin(&claim, lease_until, now).await.map_err(aws)? {
            Begin::Started => {}
            Begin::Completed { result } => {
                return Ok(Revised { voucher: result.unwrap_or_else(|| posted.voucher.clone()), audit: None });
            }
            Begin::InProgress { .. } => return Err(NotRevised::Busy),
            Begin::Failed { reason } => {
                return Err(NotRevised::Failed(ExternalError::new("IFS", reason, Disposition::Hold)));
            }
        }
        let outcome = self.steps(subject, posted, version, &mut proposal, policy).await;
        let (voucher, undone) = match outcome {
            Ok(done) => done,
            Err(e) => {
                let _ = self.idempotency.release(&claim).await;
                return Err(NotRevised::Failed(e));
            }
        };
        let now_posted = PostedVersion { version, voucher: voucher.clone(), proposal };
        // Recorded before the claim completes: a completed claim always means the new voucher is on record.
        if let Err(e) = self.idempotency.record_posted(subject, &now_posted, retain_until).await {
            let _ = self.idempotency.release(&claim).await;
            return Err(aws(e));
        }
        if let Err(e) = self.idempotency.complete(&claim, Some(&voucher), retain_until).await {
            // Every write is found again by the redelivery; only this bookkeeping is repeated.
            tracing::warn!(%subject, version, error = %e, "revised but could not complete the claim");
        }
        let audit = RevisionAudit {
            from_version: posted.version,
            from_voucher: posted.voucher.clone(),
            to_version: version,
            to_voucher: voucher.clone(),
            undone,
        };
        tracing::info!(%subject, revision = %audit, "changed after export: revised");
        Ok(Revised { voucher, audit: Some(audit) })
    }

    /// The IFS writes, each looked for before it is made: the new voucher, then the old one removed or
    /// reversed.
    async fn steps(
        &self,
        subject: &Subject,
        posted: &PostedVersion,
        version: i64,
        proposal: &mut Proposal,
        policy: ChangedAfterExport,
    ) -> Result<(String, Undone), ExternalError> {
        proposal.reference_number = revision_reference(subject, version)?;
        let reversal = reversal(posted, proposal.voucher_date)?;
        let old = &posted.proposal;

        let found = self
            .ledger
            .find_posted(&proposal.company, &proposal.reference_serie, std::slice::from_ref(&proposal.reference_number))
            .await?;
        let voucher = match found.get(&proposal.reference_number) {
            Some(key) => key.clone(),
            None => self.ledger.create_voucher(proposal).await?,
        };

        let reversed = self
            .ledger
            .find_posted(&old.company, &old.reference_serie, std::slice::from_ref(&reversal.reference_number))
            .await?;
        if let Some(key) = reversed.get(&reversal.reference_number) {
            return Ok((voucher, Undone::Reversed { reversal: key.clone() }));
        }
        if policy == ChangedAfterExport::Replace {
            match self.ledger.voucher_state(&old.company, &posted.voucher).await? {
                VoucherState::Missing => return Ok((voucher, Undone::Removed)),
                VoucherState::Unapproved { etag } => {
                    match self.ledger.remove_voucher(&old.company, &posted.voucher, &etag).await? {
                        Removal::Removed | Removal::Missing => return Ok((voucher, Undone::Removed)),
                        // Approved meanwhile: reversed below.
                        Removal::Approved => {}
                    }
                }
                VoucherState::Approved => {}
            }
        }
        let key = self.ledger.create_voucher(&reversal).await?;
        Ok((voucher, Undone::Reversed { reversal: key }))
    }
}

#[cfg(test)]
mod tests;
