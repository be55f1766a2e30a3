//! Brex Accounting API v3 records (`/v3/accounting/records`, amounts in decimal major units). Parsed leniently: unknown fields are ignored and
//! unknown enum values kept, because the API is alpha and real payloads already carry fields the spec lacks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{AccountingRecordId, Money};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReviewStatus {
    Prepare,
    Review,
    ReadyForExport,
    Exported,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceType {
    Card,
    Reimbursement,
    Bill,
    #[serde(other)]
    Unknown,
}

impl SourceType {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Card => "CARD",
            Self::Reimbursement => "REIMBURSEMENT",
            Self::Bill => "BILL",
            Self::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineSide {
    Debit,
    Credit,
}

/// One accounting field (dimension) on a line: GL account, department, entity …
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountingFieldValue {
    pub brex_field_id: Option<String>,
    pub remote_field_id: Option<String>,
    pub brex_field_value_id: Option<String>,
    pub remote_field_value_id: Option<String>,
    pub field_name: Option<String>,
    pub field_value_name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineItem {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub side: LineSide,
    /// Always positive; the side says which way it goes.
    pub amount: Money,
    #[serde(default)]
    pub original_amount: Option<Money>,
    #[serde(default)]
    pub memo: Option<String>,
    #[serde(default)]
    pub accounting_field_values: Vec<AccountingFieldValue>,
}

impl LineItem {
    /// The field with this display name (`field_name`), if the line carries it with a value.
    pub fn field(&self, name: &str) -> Option<&AccountingFieldValue> {
        self.accounting_field_values
            .iter()
            .find(|f| f.field_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }

    /// The field whose ERP-side id (`remote_field_id`) is `remote_id`.
    pub fn remote_field(&self, remote_id: &str) -> Option<&AccountingFieldValue> {
        self.accounting_field_values.iter().find(|f| f.remote_field_id.as_deref() == Some(remote_id))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrexUser {
    pub id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub department_id: Option<String>,
    pub department_name: Option<String>,
    pub location_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Vendor {
    pub id: Option<String>,
    pub name: Option<String>,
}

/// The purchase record types: card spend, a reimbursement (accrual or cash basis), a bill.
pub const PURCHASE_TYPES: [&str; 4] =
    ["CARD_EXPENSE_POST", "REIMBURSEMENT_EXPENSE_APPROVAL", "REIMBURSEMENT_EXPENSE_POST", "BILL_EXPENSE"];

/// One `receipts[]` entry: Brex's receipt id and presigned download URIs (S3-style, valid about 15 minutes
/// from the moment the record was read, so a receipt is downloaded at once or its record read again).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Receipt {
    pub id: String,
    /// `null` when Brex was not asked to expand them (expenses) or has no file yet.
    #[serde(deserialize_with = "null_as_empty")]
    pub download_uris: Vec<String>,
}

/// `null` and absent read as an empty list (Brex sends both).
pub(crate) fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountingRecord {
    pub id: AccountingRecordId,
    pub amount: Money,
    #[serde(default)]
    pub original_amount: Option<Money>,
    /// `CARD_EXPENSE_POST`, `CARD_EXPENSE_REFUND`, … kept as text: the list grows.
    #[serde(rename = "type")]
    pub record_type: String,
    pub review_status: ReviewStatus,
    #[serde(default)]
    pub source_id: Option<String>,
    #[serde(default)]
    pub source_type: Option<SourceType>,
    #[serde(default)]
    pub erp_posting_date: Option<DateTime<Utc>>,
    #[serde(default)]
    pub posted_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub version: i64,
    #[serde(default)]
    pub user: Option<BrexUser>,
    #[serde(default)]
    pub vendor: Option<Vendor>,
    #[serde(default)]
    pub memo: Option<String>,
    #[serde(default)]
    pub line_items: Vec<LineItem>,
    /// The receipts behind the record (see [`crate::receipts`]).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub receipts: Vec<Receipt>,
}

impl AccountingRecord {
    /// Refund-type records move money back. Brex does not document which sides a refund's lines take:
    /// they may come reversed or shaped like the purchase (the mapping engine books both the same way).
    pub fn is_refund(&self) -> bool {
        self.record_type.ends_with("_REFUND")
    }

    /// Record types that book a purchase (spend moving out): their expense lines are DEBIT and their
    /// amount is never negative.
    pub fn is_purchase(&self) -> bool {
        PURCHASE_TYPES.contains(&self.record_type.as_str())
    }

    /// The expense this record books, when it books one (its `source_id`): the same spend the Expenses API
    /// shows, which must not be posted twice when both sources are on. Payments, payouts and repayments
    /// point elsewhere and have no spend of their own.
    pub fn spend_id(&self) -> Option<crate::domain::ExpenseId> {
        const SPEND_REFUNDS: [&str; 2] = ["CARD_EXPENSE_REFUND", "REIMBURSEMENT_EXPENSE_REFUND"];
        if !self.is_purchase() && !SPEND_REFUNDS.contains(&self.record_type.as_str()) {
            return None;
        }
        self.source_id.as_deref().and_then(|id| crate::domain::ExpenseId::parse(id).ok())
    }

    /// The date the voucher should carry: Brex's ERP impact date, else the settlement date.
    pub fn posting_date(&self) -> chrono::NaiveDate {
        self.erp_posting_date.or(self.posted_at).unwrap_or(self.updated_at).date_naive()
    }
}

/// A page of `GET /v3/accounting/records`.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordPage<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
    #[serde(default)]
    pub has_next_page: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    /// Shape of a real production record, with extra fields the published spec lacks.
    const REAL_SHAPE: &str = r#"{
      "id": "accr_2xY", "amount": {"amount": 171.75, "currency": "USD"}, "billing_amount": {"amount": 171.75, "currency": "USD"},
      "original_amount": null, "type": "CARD_EXPENSE_POST", "review_status": "READY_FOR_EXPORT", "status": "SUBMITTED",
      "source_id": "expense_9", "source_type": "CARD", "erp_posting_date": "2026-06-11T00:00:00Z",
      "posted_at": "2026-06-10T09:09:10.422192Z", "updated_at": "2026-06-11T09:09:10.422192Z", "version": 3,
      "user": {"id": "cuuser_1", "first_name": "Ada", "last_name": "L", "email": "ada@acme.test", "role": "EMPLOYEE", "status": "ACTIVE", "department_name": "Engineering"},
      "vendor": {"id": "pmch_1", "name": "Delta"}, "memo": "Flight",
      "line_items": [
        {"id": "accrli_1", "type": "DEBIT", "amount": {"amount": 171.75, "currency": "USD"}, "amortization": null,
         "accounting_field_values": [{"brex_field_id": "ef_1", "remote_field_id": "GL_ACCOUNT", "brex_field_value_id": "efo_1",
           "remote_field_value_id": null, "field_name": "GL Account", "field_value_name": "6500 Travel", "type": "IDENTIFIER"}]},
        {"id": "accrli_2", "type": "CREDIT", "amount": {"amount": 171.75, "currency": "USD"}, "accounting_field_values": []}
      ],
      "receipts": [{"id": "rcpt_1", "download_uris": ["https://s3.test/r1?X-Amz-Expires=900"]}, {"id": "rcpt_2", "download_uris": null}],
      "some_future_field": {"x": 1}
    }"#;

    #[test]
    fn parses_the_real_shape_leniently() {
        let r: AccountingRecord = serde_json::from_str(REAL_SHAPE).unwrap();
        assert_eq!(r.id.as_str(), "accr_2xY");
        assert_eq!(r.amount.amount, Decimal::from_str("171.75").unwrap());
        assert_eq!(r.review_status, ReviewStatus::ReadyForExport);
        assert_eq!(r.source_type, Some(SourceType::Card));
        assert_eq!(r.line_items[0].field("gl account").unwrap().field_value_name.as_deref(), Some("6500 Travel"));
        assert!(r.line_items[0].remote_field("GL_ACCOUNT").is_some());
        assert_eq!(r.posting_date().to_string(), "2026-06-11");
        assert_eq!(r.receipts.len(), 2);
        assert_eq!(r.receipts[0].download_uris, vec!["https://s3.test/r1?X-Amz-Expires=900".to_owned()]);
        assert!(r.receipts[1].download_uris.is_empty(), "null URIs read as none");
        let bare: AccountingRecord =
            serde_json::from_str(&REAL_SHAPE.replace("\"receipts\"", "\"receipts_x\"")).unwrap();
        assert!(bare.receipts.is_empty());
        assert!(!r.is_refund() && r.is_purchase());
        assert_eq!(r.spend_id().map(|id| id.to_string()).as_deref(), Some("expense_9"));
        let payment: AccountingRecord =
            serde_json::from_str(&REAL_SHAPE.replace("CARD_EXPENSE_POST", "CARD_PAYMENT")).unwrap();
        assert_eq!(payment.spend_id(), None, "a payment books no expense of its own");
        assert!(!payment.is_purchase() && !payment.is_refund());
        let refund: AccountingRecord =
            serde_json::from_str(&REAL_SHAPE.replace("CARD_EXPENSE_POST", "CARD_EXPENSE_REFUND")).unwrap();
        assert!(refund.is_refund() && !refund.is_purchase());
        assert_eq!(refund.spend_id().map(|id| id.to_string()).as_deref(), Some("expense_9"), "a refund books spend");
    }

    #[test]
    fn unknown_enum_values_do_not_fail_the_record() {
        let json = REAL_SHAPE.replace("READY_FOR_EXPORT", "ARCHIVED").replace("\"CARD\"", "\"TRAVEL\"");
        let r: AccountingRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(r.review_status, ReviewStatus::Unknown);
        assert_eq!(r.source_type, Some(SourceType::Unknown));
    }
}
