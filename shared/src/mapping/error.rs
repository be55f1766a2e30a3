//! Mapping errors. Each is meant for a bookkeeper reading it in Brex (export-results failure message) or in
//! the operator CLI, so it names the record, the line or row, and the missing piece.

use std::fmt;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::brex::model::{LineItem, LineSide};
use crate::domain::{AccountCode, CompanyCode, CurrencyCode, Money, ReferenceNumber};
use crate::error::ExternalError;
use crate::error::{Classify, Disposition};
use crate::proposal::CodePart;

/// A Brex line as messages show it: `line 1 (accrli_9, DEBIT 42.00 USD)`; `index` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRef {
    pub index: usize,
    pub id: Option<String>,
    pub side: LineSide,
    pub amount: Money,
}

impl LineRef {
    pub(crate) fn new(position: usize, line: &LineItem) -> Self {
        Self { index: position + 1, id: line.id.clone(), side: line.side, amount: line.amount }
    }
}

impl fmt::Display for LineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            LineSide::Debit => "DEBIT",
            LineSide::Credit => "CREDIT",
        };
        write!(
            f,
            "line {} ({}, {side} {} {})",
            self.index,
            self.id.as_deref().unwrap_or("no id"),
            show_amount(self.amount.amount, self.amount.currency),
            self.amount.currency
        )
    }
}

/// A record's lines split by whether they carry accounting coding (the expense side) or none (the funding
/// side), as contradiction messages show them: `coded lines: line 1 (…); uncoded lines: line 2 (…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineSides {
    pub coded: Vec<LineRef>,
    pub uncoded: Vec<LineRef>,
}

impl fmt::Display for LineSides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |lines: &[LineRef]| {
            if lines.is_empty() {
                "none".to_owned()
            } else {
                lines.iter().map(LineRef::to_string).collect::<Vec<_>>().join(", ")
            }
        };
        write!(f, "coded lines: {}; uncoded lines: {}", list(&self.coded), list(&self.uncoded))
    }
}

/// Two lines whose rules set different values for a record-wide target (company, credit account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict<T> {
    pub first: T,
    pub first_line: LineRef,
    /// Number of the rule that set `first` (1-based `[[rule]]` position).
    pub first_rule: usize,
    pub second: T,
    pub second_line: LineRef,
    pub second_rule: usize,
}

impl<T: fmt::Display> fmt::Display for Conflict<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} → {} (rule #{}), {} → {} (rule #{})",
            self.first_line, self.first, self.first_rule, self.second_line, self.second, self.second_rule
        )
    }
}

/// Money as bookkeepers read it: `-42.00 USD`.
pub(crate) fn show_money(money: &Money) -> String {
    format!("{} {}", show_amount(money.amount, money.currency), money.currency)
}

/// Shows an amount with at least the currency's minor digits (`42.00`), as bookkeepers read money.
pub(crate) fn show_amount(amount: Decimal, currency: CurrencyCode) -> Decimal {
    let mut shown = amount;
    let digits = currency.minor_unit_digits();
    if shown.scale() < digits {
        shown.rescale(digits);
    }
    shown
}

/// Why a record cannot become a posting proposal. Permanent: retrying cannot fix the record or the
/// document, so it is reported to Brex as a failure and listed by the operator CLI. The one exception is
/// [`MappingError::Chart`], an IFS failure while validating, which keeps IFS's own classification.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MappingError {
    #[error("record {record}: no lines with a non-zero amount, nothing to post")]
    NoLines { record: ReferenceNumber },

    #[error("record {record} {line}: negative line amount (Brex sends line amounts positive, the type gives the side)")]
    NegativeAmount { record: ReferenceNumber, line: LineRef },

    /// `detail` says why, e.g. `no rule matched field "GL Account" = "9999 Unknown"`.
    #[error("record {record} {line}: no GL account — {detail}")]
    NoAccount { record: ReferenceNumber, line: LineRef, detail: String },

    #[error("record {record} {line}: GL_ACCOUNT remote id {value:?} is not a valid IFS account ({reason})")]
    InvalidRemoteAccount { record: ReferenceNumber, line: LineRef, value: String, reason: &'static str },

    #[error(
        "record {record} {line}: {id} remote id {value:?} is not a valid IFS {part} value ({reason})",
        id = super::document::code_part_remote_id(*.part)
    )]
    InvalidRemoteCodePart {
        record: ReferenceNumber,
        line: LineRef,
        part: CodePart,
        value: String,
        reason: &'static str,
    },

    #[error("record {record}: lines disagree on the IFS company — {conflict}; one voucher needs one company")]
    CompanyConflict { record: ReferenceNumber, conflict: Box<Conflict<CompanyCode>> },

    #[error("record {record}: lines disagree on the credit account — {conflict}")]
    CreditAccountConflict { record: ReferenceNumber, conflict: Box<Conflict<AccountCode>> },

    #[error("record {record}: lines do not balance in {currency} (debits {debits}, credits {credits})")]
    Unbalanced { record: ReferenceNumber, currency: CurrencyCode, debits: Decimal, credits: Decimal },

    /// The record's amount is not what its lines add up to (either sign: a refund's may be negative).
    #[error(
        "record {record}: the record amount {} does not match its lines, which add up to {} {currency} on each \
         side (DEBIT and CREDIT)",
        show_money(.amount),
        show_amount(*.lines_total, *.currency)
    )]
    AmountMismatch { record: ReferenceNumber, amount: Money, currency: CurrencyCode, lines_total: Decimal },

    /// A negative amount is a refund's sign; on any other record type the direction is unknowable.
    #[error(
        "record {record}: record type {record_type} is not a refund, but the record amount {} is negative ({sides}) \
         — a negative amount needs a *_REFUND record type",
        show_money(.amount)
    )]
    NegativeAmountNotRefund { record: ReferenceNumber, record_type: String, amount: Money, sides: LineSides },

    /// A purchase type with a non-negative amount whose coded lines are CREDIT: the lines say refund.
    #[error(
        "record {record}: record type {record_type} and the record amount {} say purchase, but the lines have a \
         refund's sides ({sides}) — a purchase's coded lines are DEBIT",
        show_money(.amount)
    )]
    PurchaseLinesReversed { record: ReferenceNumber, record_type: String, amount: Money, sides: LineSides },

    #[error("record {record}: the {currency} lines add up to more than an amount can hold")]
    AmountOverflow { record: ReferenceNumber, currency: CurrencyCode },

    #[error("record {record}: lines are in several currencies ({}); one voucher takes one currency", join(.currencies))]
    MixedCurrencies { record: ReferenceNumber, currencies: Vec<CurrencyCode> },

    /// Rows are numbered from 1 in proposal order (= the Brex line order).
    #[error("record {record} row {row}: account {account} does not exist in IFS company {company}")]
    UnknownAccount { record: ReferenceNumber, row: usize, company: CompanyCode, account: AccountCode },

    #[error("record {record} row {row}: account {account} is not valid on the voucher date {date} ({validity})")]
    AccountNotValid { record: ReferenceNumber, row: usize, account: AccountCode, date: NaiveDate, validity: String },

    #[error(
        "record {record} row {row}: account {account} ({description}) demands {part} but no rule sets {key}",
        key = super::document::code_part_key(*.part)
    )]
    MissingCodePart { record: ReferenceNumber, row: usize, account: AccountCode, description: String, part: CodePart },

    #[error(
        "record {record} row {row}: account {account} ({description}) does not allow {part}, but {key} = {value:?} \
         is set",
        key = super::document::code_part_key(*.part)
    )]
    BlockedCodePart {
        record: ReferenceNumber,
        row: usize,
        account: AccountCode,
        description: String,
        part: CodePart,
        value: String,
    },

    /// The voucher date falls in a closed IFS period and `[ifs] closed_period` is not `next_open` (or the
    /// period closed after the calendar was read). Held under `hold`, retried under `next_open`.
    #[error(
        "record {record}: the voucher date {date} falls in accounting period {period} of IFS company {company}, which is closed"
    )]
    PeriodClosed {
        record: ReferenceNumber,
        company: CompanyCode,
        date: NaiveDate,
        period: String,
        policy: super::document::ClosedPeriodPolicy,
    },

    /// `next_open`, but IFS's calendar has no open period after the closed one.
    #[error(
        "record {record}: the voucher date {date} falls in closed accounting period {closed} of IFS company {company}, \
         and no open period follows it"
    )]
    NoOpenPeriod { record: ReferenceNumber, company: CompanyCode, date: NaiveDate, closed: String },

    /// IFS could not be asked (validation): retryable or not as IFS's failure is.
    #[error("record {record}: could not check the chart of accounts: {source}")]
    Chart {
        record: ReferenceNumber,
        #[source]
        source: ExternalError,
    },
}

fn join(currencies: &[CurrencyCode]) -> String {
    currencies.iter().map(CurrencyCode::as_str).collect::<Vec<_>>().join(", ")
}

impl Classify for MappingError {
    fn disposition(&self) -> Disposition {
        match self {
            Self::Chart { source, .. } => source.disposition(),
            Self::PeriodClosed { policy, .. } => match policy {
                super::document::ClosedPeriodPolicy::Fail => Disposition::Permanent,
                super::document::ClosedPeriodPolicy::NextOpen => Disposition::Retryable,
                super::document::ClosedPeriodPolicy::Hold => Disposition::Hold,
            },
            // The tenant's calendar, not the record, is what stands in the way.
            Self::NoOpenPeriod { .. } => Disposition::Hold,
            _ => Disposition::Permanent,
        }
    }
}

impl MappingError {
    /// The operator's fix when reading IFS's chart is what failed (a held error).
    pub fn fix(&self) -> Option<String> {
        match self {
            Self::Chart { source, .. } => source.fix.clone(),
            Self::PeriodClosed { company, period, .. } => {
                Some(format!("reopen period {period} of company {company} in IFS, then `connector replay`"))
            }
            Self::NoOpenPeriod { company, date, closed, .. } => Some(format!(
                "open a period of company {company} after {date} in IFS (or reopen period {closed}), then \
                 `connector replay`"
            )),
            _ => None,
        }
    }
}
