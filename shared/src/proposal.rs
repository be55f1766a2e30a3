//! A posting proposal: what one Brex record becomes in IFS — one balanced voucher, left in the hold table
//! awaiting approval. Built by `crate::mapping`, posted by `crate::ifs`.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::{AccountCode, CodePartValue, CompanyCode, CurrencyCode, ReferenceNumber, VoucherType};

/// IFS code parts B…J (A is the account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CodePart {
    B,
    C,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
}

impl CodePart {
    pub const ALL: [CodePart; 9] = [Self::B, Self::C, Self::D, Self::E, Self::F, Self::G, Self::H, Self::I, Self::J];

    /// The OData property name on voucher rows and on the `CodeXHandling` sets (`CodeB`).
    pub fn property(&self) -> &'static str {
        match self {
            Self::B => "CodeB",
            Self::C => "CodeC",
            Self::D => "CodeD",
            Self::E => "CodeE",
            Self::F => "CodeF",
            Self::G => "CodeG",
            Self::H => "CodeH",
            Self::I => "CodeI",
            Self::J => "CodeJ",
        }
    }

    /// The demand property on accounts (`ReqCodeB`).
    pub fn demand_property(&self) -> &'static str {
        match self {
            Self::B => "ReqCodeB",
            Self::C => "ReqCodeC",
            Self::D => "ReqCodeD",
            Self::E => "ReqCodeE",
            Self::F => "ReqCodeF",
            Self::G => "ReqCodeG",
            Self::H => "ReqCodeH",
            Self::I => "ReqCodeI",
            Self::J => "ReqCodeJ",
        }
    }

    /// Parses `b`, `B`, `code_b`, `CodeB`.
    pub fn parse(input: &str) -> Option<Self> {
        let lower = input.to_ascii_lowercase();
        let letter = lower.strip_prefix("code_").or_else(|| lower.strip_prefix("code")).unwrap_or(&lower);
        Self::ALL.into_iter().find(|p| p.property()[4..].eq_ignore_ascii_case(letter))
    }
}

impl fmt::Display for CodePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.property())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    Debit,
    Credit,
}

impl Side {
    pub fn reversed(self) -> Self {
        match self {
            Self::Debit => Self::Credit,
            Self::Credit => Self::Debit,
        }
    }
}

/// The status the voucher is created in (the assistant's NewVouStatus subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum VoucherStatus {
    #[default]
    NotApproved,
    AwaitingApproval,
    Approved,
}

impl VoucherStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotApproved => "NotApproved",
            Self::AwaitingApproval => "AwaitingApproval",
            Self::Approved => "Approved",
        }
    }
}

/// IFS limits on row text.
pub const MAX_ROW_TEXT: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalRow {
    pub account: AccountCode,
    pub code_parts: BTreeMap<CodePart, CodePartValue>,
    pub side: Side,
    /// Positive, in `currency`.
    pub amount: Decimal,
    pub currency: CurrencyCode,
    /// Units of accounting currency per unit of `currency`, when known.
    pub currency_rate: Option<Decimal>,
    /// At most [`MAX_ROW_TEXT`] chars.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// ReferenceNumber on every row: the Brex id, which makes the voucher findable (dedup) in IFS.
    pub reference_number: ReferenceNumber,
    pub reference_serie: String,
    /// The Brex record version this proposal was built from (audit).
    pub source_version: i64,
    pub company: CompanyCode,
    pub voucher_type: VoucherType,
    pub voucher_status: VoucherStatus,
    pub voucher_date: NaiveDate,
    /// VoucherText2.
    pub text: String,
    pub rows: Vec<ProposalRow>,
}

impl Proposal {
    /// (debits, credits) per currency; a proposal is postable only when they agree in every currency.
    pub fn totals(&self) -> BTreeMap<CurrencyCode, (Decimal, Decimal)> {
        let mut totals: BTreeMap<CurrencyCode, (Decimal, Decimal)> = BTreeMap::new();
        for row in &self.rows {
            let entry = totals.entry(row.currency).or_default();
            match row.side {
                Side::Debit => entry.0 += row.amount,
                Side::Credit => entry.1 += row.amount,
            }
        }
        totals
    }

    pub fn is_balanced(&self) -> bool {
        !self.rows.is_empty() && self.totals().values().all(|(d, c)| d == c)
    }
}

/// Cuts text to at most `max` chars on a char boundary.
pub fn truncate_chars(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// A proposal for company 10, voucher type M, referencing `accr_1`: the fixture of the tests that need one.
#[cfg(test)]
pub(crate) fn test_proposal(
    voucher_status: VoucherStatus,
    voucher_date: NaiveDate,
    rows: Vec<ProposalRow>,
) -> Proposal {
    Proposal {
        reference_number: ReferenceNumber::parse("accr_1").unwrap(),
        reference_serie: "BREX".into(),
        source_version: 1,
        company: CompanyCode::parse("10").unwrap(),
        voucher_type: VoucherType::parse("M").unwrap(),
        voucher_status,
        voucher_date,
        text: String::new(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn row(side: Side, amount: &str) -> ProposalRow {
        ProposalRow {
            account: AccountCode::parse("6500").unwrap(),
            code_parts: BTreeMap::new(),
            side,
            amount: Decimal::from_str(amount).unwrap(),
            currency: CurrencyCode::parse("USD").unwrap(),
            currency_rate: None,
            text: String::new(),
        }
    }

    #[test]
    fn balance_is_exact_per_currency() {
        let mut p = test_proposal(
            VoucherStatus::NotApproved,
            NaiveDate::from_ymd_opt(2026, 6, 1).unwrap(),
            vec![row(Side::Debit, "0.1"), row(Side::Debit, "0.2"), row(Side::Credit, "0.3")],
        );
        assert!(p.is_balanced());
        p.rows.push(row(Side::Credit, "0.01"));
        assert!(!p.is_balanced());
        p.rows.clear();
        assert!(!p.is_balanced(), "an empty voucher is not postable");
    }

    #[test]
    fn code_parts_parse_from_rule_keys() {
        assert_eq!(CodePart::parse("code_b"), Some(CodePart::B));
        assert_eq!(CodePart::parse("CodeJ"), Some(CodePart::J));
        assert_eq!(CodePart::parse("c"), Some(CodePart::C));
        assert_eq!(CodePart::parse("code_k"), None);
        assert_eq!(CodePart::B.demand_property(), "ReqCodeB");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars(&"x".repeat(300), MAX_ROW_TEXT).len(), 200);
    }
}
