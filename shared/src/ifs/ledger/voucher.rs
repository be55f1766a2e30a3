//! A voucher as it goes on the wire: the header of the virtual voucher, its posting rows, and the key and
//! number IFS gives it.
//!
//! Amounts are sent as decimal *strings* under `IEEE754Compatible=true` (declared in `Content-Type` and
//! `Accept`): the text of the `Decimal` goes on the wire as is, so no amount ever passes through a binary
//! float, whatever its number of digits.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::domain::{CompanyCode, VoucherType};
use crate::ifs::reference::AccountingPeriodInfo;
use crate::proposal::{MAX_ROW_TEXT, Proposal, ProposalRow, Side, truncate_chars};

/// `VoucherText2` is a 200-char column like row texts.
const MAX_VOUCHER_TEXT: usize = 200;

/// A voucher in IFS's hold table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VoucherKey {
    pub company: CompanyCode,
    pub accounting_year: i32,
    pub voucher_type: VoucherType,
    pub voucher_no: i64,
}

impl fmt::Display for VoucherKey {
    /// `10-2026-M-17`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}-{}", self.company, self.accounting_year, self.voucher_type, self.voucher_no)
    }
}

impl VoucherKey {
    /// Reads back what [`fmt::Display`] wrote (`10-2026-M-17`). Taken apart from the right, because a
    /// company code may itself hold a `-`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.rsplitn(4, '-');
        let voucher_no = parts.next()?.parse().ok()?;
        let voucher_type = VoucherType::parse(parts.next()?).ok()?;
        let accounting_year = parts.next()?.parse().ok()?;
        let company = CompanyCode::parse(parts.next()?).ok()?;
        Some(Self { company, accounting_year, voucher_type, voucher_no })
    }

    /// The voucher's key reference in IFS (the object key document management connects documents to).
    pub fn key_ref(&self) -> String {
        format!(
            "ACCOUNTING_YEAR={}^COMPANY={}^VOUCHER_NO={}^VOUCHER_TYPE={}^",
            self.accounting_year, self.company, self.voucher_no, self.voucher_type
        )
    }
}

/// An amount as it goes on the wire: its exact decimal text.
pub fn amount_json(amount: Decimal) -> Value {
    Value::String(amount.to_string())
}

/// The header of the virtual voucher (only properties the assistant's `VoucherEntry` has).
pub fn header_body(proposal: &Proposal, period: &AccountingPeriodInfo) -> Value {
    let mut body = Map::new();
    body.insert("Company".into(), json!(proposal.company.as_str()));
    body.insert("VoucherType".into(), json!(proposal.voucher_type.as_str()));
    body.insert("VoucherDate".into(), json!(proposal.voucher_date.format("%Y-%m-%d").to_string()));
    body.insert("AccountingYear".into(), json!(period.accounting_year));
    body.insert("AccountingPeriod".into(), json!(period.accounting_period));
    body.insert("VoucherStatus".into(), json!(proposal.voucher_status.as_str()));
    let text = truncate_chars(&proposal.text, MAX_VOUCHER_TEXT);
    if !text.is_empty() {
        body.insert("VoucherText2".into(), json!(text));
    }
    Value::Object(body)
}

/// One posting row: present code parts only, one of debit/credit, the rate when known, the reference.
pub fn row_body(row: &ProposalRow, proposal: &Proposal) -> Value {
    let mut body = Map::new();
    body.insert("Account".into(), json!(row.account.as_str()));
    for (part, value) in &row.code_parts {
        body.insert(part.property().into(), json!(value.as_str()));
    }
    body.insert("CurrencyCode".into(), json!(row.currency.as_str()));
    let side = match row.side {
        Side::Debit => "CurrencyDebetAmount",
        Side::Credit => "CurrencyCreditAmount",
    };
    body.insert(side.into(), amount_json(row.amount));
    if let Some(rate) = row.currency_rate {
        body.insert("CurrencyRate".into(), amount_json(rate));
    }
    let text = truncate_chars(&row.text, MAX_ROW_TEXT);
    if !text.is_empty() {
        body.insert("Text".into(), json!(text));
    }
    body.insert("ReferenceSerie".into(), json!(proposal.reference_serie));
    body.insert("ReferenceNumber".into(), json!(proposal.reference_number.as_str()));
    Value::Object(body)
}

/// `{"value": 17}` (or `"17"` under IEEE754Compatible).
pub(crate) fn voucher_no(answer: &Value) -> Option<i64> {
    match answer.get("value")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountCode, CodePartValue, CurrencyCode};
    use crate::proposal::{CodePart, VoucherStatus};
    use chrono::NaiveDate;
    use std::collections::{BTreeMap, HashSet};
    use std::str::FromStr;

    fn proposal() -> Proposal {
        let row = |side, amount: &str, account: &str| ProposalRow {
            account: AccountCode::parse(account).unwrap(),
            code_parts: BTreeMap::new(),
            side,
            amount: Decimal::from_str(amount).unwrap(),
            currency: CurrencyCode::parse("USD").unwrap(),
            currency_rate: None,
            text: String::new(),
        };
        let mut debit = row(Side::Debit, "0.30000000000000004", "6500");
        debit.code_parts.insert(CodePart::B, CodePartValue::parse("200").unwrap());
        debit.currency_rate = Some(Decimal::from_str("1.2345678901234567890123").unwrap());
        debit.text = "é".repeat(250);
        crate::proposal::test_proposal(
            VoucherStatus::AwaitingApproval,
            NaiveDate::from_ymd_opt(2026, 2, 3).unwrap(),
            vec![debit, row(Side::Credit, "12345678901234567890.12", "2410")],
        )
    }

    #[test]
    fn amounts_go_out_as_their_exact_decimal_text() {
        let p = proposal();
        let debit = row_body(&p.rows[0], &p);
        assert_eq!(debit["CurrencyDebetAmount"], json!("0.30000000000000004"));
        assert_eq!(debit["CurrencyRate"], json!("1.2345678901234567890123"));
        let credit = row_body(&p.rows[1], &p);
        assert_eq!(credit["CurrencyCreditAmount"], json!("12345678901234567890.12"));
        // Round trip: what IFS parses back is the very Decimal we hold.
        let back = Decimal::from_str(credit["CurrencyCreditAmount"].as_str().unwrap()).unwrap();
        assert_eq!(back, p.rows[1].amount);
        assert_eq!(amount_json(Decimal::from_str("0.1").unwrap() + Decimal::from_str("0.2").unwrap()), json!("0.3"));
    }

    #[test]
    fn row_and_header_carry_only_what_is_set() {
        let p = proposal();
        let debit = row_body(&p.rows[0], &p);
        let keys: Vec<&str> = debit.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys.iter().copied().collect::<HashSet<_>>(),
            HashSet::from([
                "Account",
                "CodeB",
                "CurrencyCode",
                "CurrencyDebetAmount",
                "CurrencyRate",
                "Text",
                "ReferenceSerie",
                "ReferenceNumber"
            ])
        );
        assert_eq!(debit["Text"].as_str().unwrap().chars().count(), 200);
        let credit = row_body(&p.rows[1], &p);
        assert!(
            credit.get("CodeB").is_none()
                && credit.get("Text").is_none()
                && credit.get("CurrencyDebetAmount").is_none()
        );
        assert_eq!(credit["ReferenceNumber"], json!("accr_1"));

        let period = AccountingPeriodInfo {
            company: p.company.clone(),
            accounting_year: 2026,
            accounting_period: 2,
            date_from: NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(),
            date_until: NaiveDate::from_ymd_opt(2026, 2, 28).unwrap(),
            open: true,
            year_end_period: None,
        };
        assert_eq!(
            header_body(&p, &period),
            json!({"Company": "10", "VoucherType": "M", "VoucherDate": "2026-02-03", "AccountingYear": 2026,
                   "AccountingPeriod": 2, "VoucherStatus": "AwaitingApproval"})
        );
    }

    #[test]
    fn voucher_keys_parse_back() {
        let key = VoucherKey::parse("AB-1-2026-M-17").unwrap();
        assert_eq!(
            (key.company.as_str(), key.accounting_year, key.voucher_type.as_str(), key.voucher_no),
            ("AB-1", 2026, "M", 17)
        );
        assert_eq!(key.to_string(), "AB-1-2026-M-17");
        for bad in ["", "10-2026-M", "10-20x6-M-1", "10-2026-M-x", "-2026-M-1"] {
            assert!(VoucherKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn voucher_keys_display_and_numbers_decode() {
        let key = VoucherKey {
            company: CompanyCode::parse("10").unwrap(),
            accounting_year: 2026,
            voucher_type: VoucherType::parse("M").unwrap(),
            voucher_no: 17,
        };
        assert_eq!(key.to_string(), "10-2026-M-17");
        assert_eq!(VoucherKey::parse("10-2026-M-17"), Some(key.clone()));
        assert_eq!(key.key_ref(), "ACCOUNTING_YEAR=2026^COMPANY=10^VOUCHER_NO=17^VOUCHER_TYPE=M^");
        let dashed = VoucherKey::parse("ACME-US-2026-AP-3").unwrap();
        assert_eq!((dashed.company.as_str(), dashed.voucher_type.as_str(), dashed.voucher_no), ("ACME-US", "AP", 3));
        assert_eq!(VoucherKey::parse("10-M-17"), None);
        assert_eq!(VoucherKey::parse(""), None);
        assert_eq!(voucher_no(&json!({"value": 17})), Some(17));
        assert_eq!(voucher_no(&json!({"value": "18"})), Some(18));
        assert_eq!(voucher_no(&json!({"value": 1.5})), None);
        assert_eq!(voucher_no(&Value::Null), None);
    }
}
