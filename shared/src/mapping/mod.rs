//! The mapping engine: Brex accounting records → IFS posting proposals, steered by the mapping document
//! (docs/contract.md §5; example in `infra/mapping.example.toml`).
//!
//! # Semantics
//!
//! * **One record, one voucher.** Every non-zero line becomes a row with its exact amount in the line's billed
//!   currency, on the side Brex gave it (DEBIT → debit) except for a refund shaped like its purchase (below).
//!   Lines must balance per currency and share one currency, and each side must add up to the record
//!   amount's magnitude (when that is in the lines' currency), or the record is a mapping error. Zero-amount
//!   lines are skipped; negative ones are an error.
//! * **Expense and funding lines.** On a purchase the DEBIT lines carry the expense and the CREDIT lines the
//!   funding (card liability, employee payable). Brex codes only the expense side: its funding lines come
//!   with no accounting fields, which is how the engine tells a record's layout.
//! * **Refunds.** A refund (`*_REFUND`: `CARD_EXPENSE_REFUND`, `REIMBURSEMENT_EXPENSE_REFUND`, …) is booked
//!   as the reversal of its purchase: the funding account (card liability / employee payable) debited, the
//!   expense account credited, with the code parts the purchase would get. Brex documents line amounts as
//!   positive but not a refund's sides, so both shapes are accepted, with the record amount positive or
//!   negative: lines already reversed (coded lines CREDIT) are booked as given; lines shaped like the
//!   purchase (coded lines DEBIT) are flipped, every row on the opposite side. Rules see the booked side, so
//!   `side = "DEBIT"` on a refund means its funding row in either shape. A refund with no coded line (or
//!   coding on both sides) is taken as already reversed. Expenses (cents, negative = refund) arrive reversed.
//! * **Contradictions.** Refused, naming the record type, the amount and the coded/uncoded lines: a
//!   negative amount on any type that is not a `*_REFUND` (its direction cannot be known); a purchase type
//!   (`CARD_EXPENSE_POST`, `REIMBURSEMENT_EXPENSE_APPROVAL`/`_POST`, `BILL_EXPENSE`) whose coded lines are
//!   CREDIT; a record amount that is not what the lines add up to. Other types (payments, repayments) keep
//!   Brex's sides with DEBIT as the expense side.
//! * **Accounts.** `[passthrough] gl_account_remote_id = true` first takes a line's `GL_ACCOUNT` remote id as
//!   its account; then the rules run in document order and a later rule overrides an earlier one (and
//!   passthrough). A funding line still without an account takes the credit account; an expense line
//!   without one is a mapping error naming the line.
//! * **Code parts.** `[passthrough] code_parts = { code_b = "Cost Center" }` likewise first takes a line's
//!   `CODE_B` remote id (the field the reference sync publishes as "Cost Center") as its CodeB; a rule
//!   setting `code_b` overrides it. A remote value that is no valid IFS code is a mapping error unless a rule
//!   sets that part. Parts not listed there are never taken from Brex.
//! * **Which lines a rule reaches.** A rule applies to a line when every `when` condition holds. A rule with
//!   a line-level condition (`field`/`value`, `side`) can reach any line; a rule with only record-level
//!   conditions (`department`, `category`, `source_type`, `record_type`, `currency`, `user_email`) reaches
//!   only expense lines — record facts describe the purchase, and copying a cost centre onto the card
//!   liability would be refused by IFS.
//! * **Record-wide targets.** `set.company` and `set.credit_account` apply to the whole voucher whichever line
//!   the rule matched; lines setting different values are a mapping error. Lines that set no company use
//!   the default `[ifs] company`, so write a company rule for every entity.
//! * **Credit account.** `[ifs] reimbursement_credit_account` for `REIMBURSEMENT` records when given, else
//!   `[ifs] credit_account`; any matching rule's `set.credit_account` overrides either (restrict such a rule
//!   with `source_type` when it is meant for card records only).
//! * **Currency.** Rows are in the billed currency (`amount.currency`); a foreign original amount is shown at
//!   the end of the row text (`(orig 92.50 EUR)`). `currency_rate` stays `None`: the original/billed ratio is
//!   not the rate from the row currency to the company's currency, which IFS takes from its rate table.
//! * **Texts.** `[ifs] text` per row and `[ifs] voucher_text` for VoucherText2, each cut to 200 characters.
//! * **Closed periods.** The voucher date is the record's posting date. When IFS's calendar has it in a
//!   closed period of the voucher's company, `[ifs] closed_period` decides (see [`period`]): `"fail"` (the
//!   default) posts it as dated and IFS's refusal is reported to Brex; `"next_open"` dates the voucher the
//!   first day of the company's first open (ordinary) period after it and appends `(Brex date YYYY-MM-DD)` to
//!   every row text (the note in the audit trail says what moved where); `"hold"` holds the record with the
//!   fix "reopen period Y/P of company C in IFS, then `connector replay`". Under `next_open`, a calendar with
//!   no open period after the date holds the record too. Any other value is a document error naming the key.
//! * **Changes after export.** A record that comes back with a higher Brex `version` than its posted voucher
//!   is mapped again; when the new proposal books the same thing (same company, date, accounts, code parts,
//!   sides, amounts and currencies — texts do not count, so a memo or receipt is no change) the posted
//!   voucher is reported again. Otherwise `[ifs] changed_after_export` decides (see `crate::revision`):
//!   `"hold"` (the default: nothing moves in the books without a person) holds the record with a fix naming
//!   both versions; `"replace"` removes the old voucher while it still awaits approval and posts the new
//!   version (`<id>-v<version>` as its reference), or once it is approved posts a reversal of it
//!   (`<old reference>-R`, sides swapped) and the new voucher; `"reverse"` always reverses and reposts.
//!   Any other value is a document error naming the key.

mod document;
mod engine;
mod error;
mod link;
pub mod period;
mod template;
mod validate;

pub use document::{
    ChangedAfterExport, ClosedPeriodPolicy, Condition, DEFAULT_GL_ACCOUNT_FIELD, DEFAULT_TEXT, DEFAULT_VOUCHER_TEXT,
    DocumentError, LoadedMapping, MappingDocument, Passthrough, Pattern, Rule, RuleSet, code_part_key,
    code_part_remote_id,
};
pub use engine::{
    CATEGORY_FIELD, DEPARTMENT_FIELD, GL_ACCOUNT_FIELD, GL_ACCOUNT_REMOTE_ID, MAX_VOUCHER_TEXT, map_record,
};
pub use error::{Conflict, LineRef, LineSides, MappingError};
pub use link::{LINK_PLACEHOLDERS, VoucherLink};
pub use period::{recheck_refusal, settle_period};
pub use template::{Placeholder, Template, TemplateError};
pub use validate::{check_proposal, validate_proposal};

use crate::error::{Classify, Disposition};

/// Why the mapping document in force could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MappingLoadError {
    #[error("no mapping document in the table (pk=config, sk=mapping); push one with the operator CLI")]
    Missing,
    #[error("the stored mapping document (version {version}) is invalid: {error}")]
    Invalid { version: i64, error: DocumentError },
    #[error("reading the mapping document: {0}")]
    Store(#[from] crate::error::AwsError),
}

impl Classify for MappingLoadError {
    fn disposition(&self) -> Disposition {
        match self {
            // A missing or broken document is the deployment's fault, fixed by the operator, after which the
            // same records must post: held, never failed.
            Self::Missing | Self::Invalid { .. } => Disposition::Hold,
            Self::Store(e) => e.disposition(),
        }
    }
}

impl MappingLoadError {
    pub fn fix(&self) -> String {
        match self {
            Self::Missing | Self::Invalid { .. } => {
                "push a valid mapping document (`connector mapping validate FILE`, then `mapping push FILE`), then \
                 `connector replay`"
                    .into()
            }
            Self::Store(_) => "check that the functions can read the table (TABLE_NAME, IAM)".into(),
        }
    }
}
