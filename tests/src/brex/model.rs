//! Wire types of the simulated Brex APIs.
//!
//! Accounting v3 amounts are decimal MAJOR units written as JSON numbers (`171.75`); Expenses (v1) amounts are
//! integer MINOR units (`17175`). The two are deliberately separate types (`Amount` vs `Money`).
//! Unknown JSON keys on inserted records are kept (`extra`) so tests can exercise schema drift.

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Accounting v3 `review_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReviewStatus {
    Prepare,
    Review,
    ReadyForExport,
    Exported,
}

impl ReviewStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Prepare => "PREPARE",
            ReviewStatus::Review => "REVIEW",
            ReviewStatus::ReadyForExport => "READY_FOR_EXPORT",
            ReviewStatus::Exported => "EXPORTED",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Prepare, Self::Review, Self::ReadyForExport, Self::Exported].into_iter().find(|v| v.as_str() == s)
    }
}

/// Accounting v3 `source_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceType {
    Card,
    Reimbursement,
    Bill,
}

impl SourceType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Card => "CARD",
            SourceType::Reimbursement => "REIMBURSEMENT",
            SourceType::Bill => "BILL",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Card, Self::Reimbursement, Self::Bill].into_iter().find(|v| v.as_str() == s)
    }
}

/// Line side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineType {
    Debit,
    Credit,
}

/// v3 amount: decimal major units, serialized as a JSON number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    #[serde(with = "decimal_number")]
    pub amount: Decimal,
    pub currency: String,
}

impl Amount {
    pub fn new(amount: Decimal, currency: &str) -> Self {
        Amount { amount, currency: currency.to_owned() }
    }
}

/// One `accounting_field_values[]` entry, with the real-payload extras (`field_name`, `field_value_name`, `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountingFieldValue {
    pub brex_field_id: String,
    #[serde(default)]
    pub remote_field_id: Option<String>,
    #[serde(default)]
    pub field_name: Option<String>,
    #[serde(default)]
    pub brex_field_value_id: Option<String>,
    #[serde(default)]
    pub remote_field_value_id: Option<String>,
    #[serde(default)]
    pub field_value_name: Option<String>,
    #[serde(default, rename = "type")]
    pub value_type: Option<String>,
}

/// `line_items[]` entry. Line amounts are always positive; the side is `line_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineItem {
    pub id: String,
    #[serde(rename = "type")]
    pub line_type: LineType,
    pub amount: Amount,
    #[serde(default)]
    pub original_amount: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_amount: Option<Amount>,
    #[serde(default)]
    pub memo: Option<String>,
    #[serde(default)]
    pub accounting_field_values: Vec<AccountingFieldValue>,
    #[serde(default)]
    pub amortization: Option<Value>,
}

/// `user` on a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordUser {
    pub id: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// `vendor` on a record (the merchant for card records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vendor {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub contact_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub website: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
}

/// `receipts[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: String,
    #[serde(default)]
    pub download_uris: Option<Vec<String>>,
}

/// An Accounting v3 record (Brex's `AccountingRecordDetailed` schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountingRecord {
    pub id: String,
    pub amount: Amount,
    #[serde(default)]
    pub original_amount: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_amount: Option<Amount>,
    /// `CARD_EXPENSE_POST`, `CARD_EXPENSE_REFUND`, `REIMBURSEMENT_EXPENSE_POST`, `BILL_EXPENSE`, ...
    #[serde(rename = "type")]
    pub record_type: String,
    pub review_status: ReviewStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default)]
    pub source_id: Option<String>,
    pub source_type: SourceType,
    #[serde(with = "micros")]
    pub erp_posting_date: DateTime<Utc>,
    #[serde(with = "millis")]
    pub posted_at: DateTime<Utc>,
    #[serde(with = "micros")]
    pub updated_at: DateTime<Utc>,
    pub version: u64,
    #[serde(default)]
    pub receipts: Option<Vec<Receipt>>,
    #[serde(default)]
    pub user: Option<RecordUser>,
    #[serde(default)]
    pub vendor: Option<Vendor>,
    #[serde(default)]
    pub memo: Option<String>,
    #[serde(default)]
    pub due_at: Option<String>,
    #[serde(default)]
    pub invoice_number: Option<String>,
    pub line_items: Vec<LineItem>,
    /// Keys not modelled above, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AccountingRecord {
    /// Sum of line amounts on one side.
    pub fn side_total(&self, side: LineType) -> Decimal {
        self.line_items.iter().filter(|l| l.line_type == side).map(|l| l.amount.amount).sum()
    }

    /// True when sum(DEBIT) == sum(CREDIT).
    pub fn is_balanced(&self) -> bool {
        self.side_total(LineType::Debit) == self.side_total(LineType::Credit)
    }
}

/// v1 money: integer minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

/// `department` expansion on an expense.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpenseDepartment {
    pub id: String,
    pub name: String,
}

/// `merchant` expansion on an expense.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpenseMerchant {
    pub raw_descriptor: String,
    pub mcc: String,
    /// ISO 3166 alpha-3.
    pub country: String,
}

/// `user` expansion on an expense.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpenseUser {
    pub id: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(default)]
    pub department_id: Option<String>,
    #[serde(default)]
    pub location_id: Option<String>,
}

/// A `/v1/expenses` item (Brex's `ExpandableExpense` schema). The expandable objects (`department`,
/// `merchant`, `user`) are stored in full and only emitted when the request asks for them with `expand[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expense {
    pub id: String,
    #[serde(default)]
    pub memo: Option<String>,
    #[serde(default)]
    pub department_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<ExpenseDepartment>,
    #[serde(default)]
    pub location_id: Option<String>,
    #[serde(with = "micros")]
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub merchant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<ExpenseMerchant>,
    /// `CARD`, `BILLPAY`, `REIMBURSEMENT`, `CLAWBACK`, `UNSET`.
    pub expense_type: String,
    #[serde(default)]
    pub original_amount: Option<Money>,
    #[serde(default)]
    pub billing_amount: Option<Money>,
    #[serde(default)]
    pub purchased_amount: Option<Money>,
    #[serde(default)]
    pub usd_equivalent_amount: Option<Money>,
    #[serde(default, with = "opt_micros")]
    pub purchased_at: Option<DateTime<Utc>>,
    #[serde(default, with = "opt_micros")]
    pub payment_posted_at: Option<DateTime<Utc>>,
    #[serde(default, with = "opt_micros")]
    pub approved_at: Option<DateTime<Utc>>,
    /// `DRAFT`, `SUBMITTED`, `APPROVED`, `OUT_OF_POLICY`, `VOID`, `CANCELED`, `SPLIT`, `SETTLED`.
    pub status: String,
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ExpenseUser>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Decimal as a JSON number (not a string: `rust_decimal`'s `serde-str` default would quote it).
///
/// serde_json (without `arbitrary_precision`) holds numbers as f64; a decimal string with at most 15
/// significant digits survives the trip through f64's shortest round-trip formatting unchanged, which covers
/// every money value the simulator produces.
pub(crate) mod decimal_number {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        let n = d.normalize();
        if n.scale() == 0 {
            // Whole amounts stay integers on the wire (`100`, not `100.0`).
            if let Ok(i) = i64::try_from(n.mantissa()) {
                return s.serialize_i64(i);
            }
        }
        let f: f64 = n.to_string().parse().map_err(serde::ser::Error::custom)?;
        s.serialize_f64(f)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => parse(&n.to_string()).map_err(serde::de::Error::custom),
            Value::String(s) => parse(&s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("expected a decimal number, got {other}"))),
        }
    }

    fn parse(s: &str) -> Result<Decimal, rust_decimal::Error> {
        Decimal::from_str(s).or_else(|_| Decimal::from_scientific(s))
    }
}

/// UTC with microseconds, `2026-06-11T09:09:10.422192Z` (the v3 style).
pub(crate) mod micros {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom)
    }
}

/// UTC with milliseconds (`posted_at` in the real payload).
pub(crate) mod millis {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        micros::deserialize(d)
    }
}

pub(crate) mod opt_micros {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => {
                DateTime::parse_from_rfc3339(&s).map(|t| Some(t.with_timezone(&Utc))).map_err(serde::de::Error::custom)
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn amount_is_a_json_number_in_major_units() {
        let a = Amount::new(dec("171.75"), "USD");
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v.to_string(), r#"{"amount":171.75,"currency":"USD"}"#);
        let whole = serde_json::to_string(&Amount::new(dec("100.00"), "JPY")).unwrap();
        assert_eq!(whole, r#"{"amount":100,"currency":"JPY"}"#);
        let back: Amount = serde_json::from_value(v).unwrap();
        assert_eq!(back.amount, dec("171.75"));
        let tiny: Amount = serde_json::from_str(r#"{"amount":0.1,"currency":"USD"}"#).unwrap();
        assert_eq!(tiny.amount, dec("0.1"));
    }

    #[test]
    fn timestamps_use_microseconds() {
        let t = DateTime::parse_from_rfc3339("2026-06-11T09:09:10.422192Z").unwrap().with_timezone(&Utc);
        let mut out = Vec::new();
        micros::serialize(&t, &mut serde_json::Serializer::new(&mut out)).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\"2026-06-11T09:09:10.422192Z\"");
    }

    #[test]
    fn unknown_keys_survive_a_round_trip() {
        let json = serde_json::json!({
            "id": "accr_1", "amount": {"amount": 1.5, "currency": "USD"}, "type": "CARD_EXPENSE_POST",
            "review_status": "PREPARE", "source_type": "CARD",
            "erp_posting_date": "2026-06-11T09:09:05.840865Z", "posted_at": "2026-06-11T09:09:05.840Z",
            "updated_at": "2026-06-11T09:09:10.422192Z", "version": 2, "line_items": [],
            "surprise": {"x": 1}
        });
        let r: AccountingRecord = serde_json::from_value(json).unwrap();
        assert_eq!(r.review_status, ReviewStatus::Prepare);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["surprise"]["x"], 1);
        assert_eq!(v["posted_at"], "2026-06-11T09:09:05.840Z");
    }
}
