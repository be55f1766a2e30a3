//! Connector-side fixtures shared by the client tests (not used by the simulators, which never see `shared`).

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use shared::domain::{AccountCode, CodePartValue, CompanyCode, CurrencyCode, ReferenceNumber, VoucherType};
use shared::proposal::{CodePart, Proposal, ProposalRow, Side, VoucherStatus};

/// A balanced-or-not proposal in company 10: Travel (6500, cost centre 200) against the card liability (2410).
/// Panics on a bad literal: test input only.
pub fn travel_proposal(reference: &str, day: NaiveDate, debit: &str, credit: &str) -> Proposal {
    let row = |account: &str, side, amount: &str| ProposalRow {
        account: AccountCode::parse(account).expect("account literal"),
        code_parts: BTreeMap::new(),
        side,
        amount: Decimal::from_str(amount).expect("amount literal"),
        currency: CurrencyCode::parse("USD").expect("currency literal"),
        currency_rate: None,
        text: format!("{reference} {account}"),
    };
    let mut expense = row("6500", Side::Debit, debit);
    expense.code_parts.insert(CodePart::B, CodePartValue::parse("200").expect("code part literal"));
    Proposal {
        reference_number: ReferenceNumber::parse(reference).expect("reference literal"),
        reference_serie: "BREX".into(),
        source_version: 1,
        company: CompanyCode::parse("10").expect("company literal"),
        voucher_type: VoucherType::parse("M").expect("voucher type literal"),
        voucher_status: VoucherStatus::NotApproved,
        voucher_date: day,
        text: format!("Brex {reference}"),
        rows: vec![expense, row("2410", Side::Credit, credit)],
    }
}
