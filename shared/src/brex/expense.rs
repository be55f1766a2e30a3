//! Brex Expenses API v1 (`/v1/expenses`, money in integer cents): approved expenses for tenants that post spend without the
//! accounting integration. Money here is integer minor units (cents), never decimals.
//!
//! An expense carries no GL coding, so it is mapped as a two-line record view (the purchase line and its
//! funding line) and the mapping document's rules decide accounts and code parts from department, category,
//! merchant and user.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, stream};
use serde::Deserialize;
use serde_json::Value;

use super::client::{BrexClient, Method, too_many_pages};
use super::error::BrexError;
use super::model::{
    AccountingFieldValue, AccountingRecord, BrexUser, LineItem, LineSide, ReviewStatus, SourceType, Vendor,
};
use crate::domain::{AccountingRecordId, ExpenseId, MinorUnits, Money};

/// `GET /v1/expenses/{id}` calls in flight at once (each still passes the shared rate limiter).
const FETCH_CONCURRENCY: usize = 4;
/// Brex's page-size limit for expenses (the docs conflict between 100 and 1000; 100 is safe with both).
pub const MAX_EXPENSE_PAGE: u32 = 100;
/// Statuses at which an expense is final enough to post: SETTLED follows APPROVED, so polling APPROVED
/// alone would miss an expense approved and settled between two polls.
pub const POSTABLE_STATUSES: [&str; 2] = ["APPROVED", "SETTLED"];
/// Line field the category is exposed as, so `when = { category = … }` and `{category}` read it.
const CATEGORY_FIELD: &str = "Category";

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ExpenseDepartment {
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ExpenseMerchant {
    pub raw_descriptor: Option<String>,
    pub mcc: Option<String>,
    pub country: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ExpenseUser {
    pub id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub department_id: Option<String>,
}

/// An `ExpandableExpense`, parsed leniently (unknown fields ignored; the API is versioned 0.1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Expense {
    pub id: ExpenseId,
    #[serde(default)]
    pub memo: Option<String>,
    #[serde(default)]
    pub department: Option<ExpenseDepartment>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub merchant_id: Option<String>,
    #[serde(default)]
    pub merchant: Option<ExpenseMerchant>,
    /// `CARD`, `BILLPAY`, `REIMBURSEMENT`, `CLAWBACK`, `UNSET`.
    #[serde(default)]
    pub expense_type: Option<String>,
    #[serde(default)]
    pub original_amount: Option<MinorUnits>,
    #[serde(default)]
    pub billing_amount: Option<MinorUnits>,
    #[serde(default)]
    pub purchased_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub payment_posted_at: Option<DateTime<Utc>>,
    /// `DRAFT`, `SUBMITTED`, `APPROVED`, `OUT_OF_POLICY`, `VOID`, `CANCELED`, `SPLIT`, `SETTLED`.
    pub status: String,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub user: Option<ExpenseUser>,
}

/// Why an expense cannot be seen as a postable record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpenseViewError {
    #[error("expense {0} has no billing_amount")]
    NoAmount(ExpenseId),
    #[error("expense {id}: {message}")]
    Amount { id: ExpenseId, message: String },
}

impl Expense {
    pub fn is_postable(&self) -> bool {
        POSTABLE_STATUSES.contains(&self.status.as_str())
    }

    fn source_type(&self) -> SourceType {
        match self.expense_type.as_deref() {
            Some("CARD") => SourceType::Card,
            Some("REIMBURSEMENT") => SourceType::Reimbursement,
            Some("BILLPAY") => SourceType::Bill,
            _ => SourceType::Unknown,
        }
    }

    /// The expense as the two-line record the mapping engine reads: the purchase line (DEBIT; CREDIT on a
    /// refund, which Brex gives as a negative amount) and the funding line opposite it, both in the billed
    /// currency, exactly converted from cents. Department, category, merchant and user become the facts the
    /// rules match on; the record type is the accounting record type the same spend would have, so rules
    /// written for records apply unchanged. The expense id takes the record id's place: it is the Brex id
    /// the voucher rows reference.
    pub fn as_record(&self) -> Result<AccountingRecord, ExpenseViewError> {
        let amount_error =
            |e: crate::domain::MoneyError| ExpenseViewError::Amount { id: self.id.clone(), message: e.to_string() };
        let billed = self.billing_amount.ok_or_else(|| ExpenseViewError::NoAmount(self.id.clone()))?;
        let billed = billed.to_money().map_err(amount_error)?;
        let original = match self.original_amount {
            Some(o) => Some(o.to_money().map_err(amount_error)?.abs()),
            None => None,
        };
        let refund = billed.is_negative();
        let source_type = self.source_type();
        let record_type = match (source_type, refund) {
            (SourceType::Reimbursement, false) => "REIMBURSEMENT_EXPENSE_POST",
            (SourceType::Reimbursement, true) => "REIMBURSEMENT_EXPENSE_REFUND",
            (SourceType::Bill, _) => "BILL_EXPENSE",
            (_, false) => "CARD_EXPENSE_POST",
            (_, true) => "CARD_EXPENSE_REFUND",
        };
        let amount = billed.abs();
        let original = original.filter(|o| o.currency != amount.currency);
        let (purchase_side, funding_side) =
            if refund { (LineSide::Credit, LineSide::Debit) } else { (LineSide::Debit, LineSide::Credit) };
        let category = self.category.as_deref().map(str::trim).filter(|c| !c.is_empty());
        let purchase = LineItem {
            id: Some(format!("{}#purchase", self.id)),
            side: purchase_side,
            amount,
            original_amount: original,
            memo: self.memo.clone(),
            accounting_field_values: category
                .map(|c| AccountingFieldValue {
                    field_name: Some(CATEGORY_FIELD.into()),
                    field_value_name: Some(c.to_owned()),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
        };
        let funding = LineItem {
            id: Some(format!("{}#funding", self.id)),
            side: funding_side,
            amount,
            original_amount: None,
            memo: None,
            accounting_field_values: Vec::new(),
        };
        let user = self.user.as_ref();
        Ok(AccountingRecord {
            // Same token rules and bound (50) for both id kinds.
            id: AccountingRecordId::parse(self.id.as_str())
                .map_err(|e| ExpenseViewError::Amount { id: self.id.clone(), message: e.to_string() })?,
            amount: if refund { Money { amount: -amount.amount, currency: amount.currency } } else { amount },
            original_amount: original,
            record_type: record_type.into(),
            review_status: if self.is_postable() { ReviewStatus::ReadyForExport } else { ReviewStatus::Unknown },
            source_id: Some(self.id.as_str().to_owned()),
            source_type: Some(source_type),
            erp_posting_date: None,
            posted_at: self.payment_posted_at.or(self.purchased_at),
            updated_at: self.updated_at,
            version: 0,
            user: Some(BrexUser {
                id: user.and_then(|u| u.id.clone()).or_else(|| self.user_id.clone()),
                first_name: user.and_then(|u| u.first_name.clone()),
                last_name: user.and_then(|u| u.last_name.clone()),
                email: None,
                department_id: self.department.as_ref().and_then(|d| d.id.clone()),
                department_name: self.department.as_ref().and_then(|d| d.name.clone()),
                location_name: None,
            }),
            vendor: self
                .merchant
                .as_ref()
                .map(|m| Vendor { id: self.merchant_id.clone(), name: m.raw_descriptor.clone() }),
            memo: self.memo.clone(),
            line_items: vec![purchase, funding],
            receipts: Vec::new(),
        })
    }
}

/// An item Brex returned that does not parse as an expense.
#[derive(Debug, Clone, PartialEq)]
pub struct MalformedExpense {
    pub id: Option<ExpenseId>,
    pub error: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpenseFetch {
    pub expenses: Vec<Expense>,
    pub malformed: Vec<MalformedExpense>,
    /// 404: deleted, or not visible to this token.
    pub missing: Vec<ExpenseId>,
}

/// A polling query: `GET /v1/expenses?status[]=…&updated_at_start=…`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpenseQuery {
    pub statuses: Vec<String>,
    /// Sent as `updated_at_start` (inclusive).
    pub updated_from: DateTime<Utc>,
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpenseQueryPage {
    pub expenses: Vec<Expense>,
    pub malformed: Vec<MalformedExpense>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ExpensePage {
    #[serde(default)]
    items: Vec<Value>,
    #[serde(default)]
    next_cursor: Option<String>,
}

fn parse_expense(item: Value) -> Result<Expense, MalformedExpense> {
    let id = item.get("id").and_then(Value::as_str).and_then(|raw| ExpenseId::parse(raw).ok());
    serde_json::from_value(item).map_err(|e| MalformedExpense { id, error: e.to_string() })
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The expansions the mapping reads (department, merchant, user).
const EXPAND: &str = "expand[]=department&expand[]=merchant&expand[]=user";

fn expense_query(query: &ExpenseQuery) -> String {
    let mut q: Vec<String> = query.statuses.iter().map(|s| format!("status[]={}", encode(s))).collect();
    q.push(format!("updated_at_start={}", encode(&query.updated_from.to_rfc3339_opts(SecondsFormat::Micros, true))));
    q.push(format!("limit={}", query.limit.clamp(1, MAX_EXPENSE_PAGE)));
    if let Some(cursor) = &query.cursor {
        q.push(format!("cursor={}", encode(cursor)));
    }
    q.push(EXPAND.into());
    q.join("&")
}

impl BrexClient {
    /// `GET /v1/expenses/{id}` for each id (the list endpoint has no id filter), a few at a time.
    pub async fn expenses_by_ids(&self, ids: &[ExpenseId]) -> Result<ExpenseFetch, BrexError> {
        const OP: &str = "expense_by_id";
        let mut seen = HashSet::new();
        let unique: Vec<ExpenseId> = ids.iter().filter(|id| seen.insert(*id)).cloned().collect();
        let answers: Vec<(ExpenseId, Result<super::client::Answer, BrexError>)> = stream::iter(unique)
            .map(|id: ExpenseId| async move {
                let path = format!("/v1/expenses/{}?{EXPAND}", encode(id.as_str()));
                let answer = self.execute(OP, &path, Method::Get).await;
                (id, answer)
            })
            .buffered(FETCH_CONCURRENCY)
            .collect()
            .await;
        let mut fetch = ExpenseFetch::default();
        for (id, answer) in answers {
            let answer = answer?;
            if answer.status == 404 {
                fetch.missing.push(id);
                continue;
            }
            if !answer.is_success() {
                return Err(answer.into_error(OP));
            }
            let item: Value = answer.json(OP)?;
            match parse_expense(item) {
                Ok(expense) if expense.id == id => fetch.expenses.push(expense),
                Ok(other) => fetch
                    .malformed
                    .push(MalformedExpense { id: Some(id), error: format!("Brex answered with expense {}", other.id) }),
                Err(bad) => fetch.malformed.push(MalformedExpense { id: Some(id), error: bad.error }),
            }
        }
        Ok(fetch)
    }

    /// One page of a polling query.
    pub async fn query_expenses(&self, query: &ExpenseQuery) -> Result<ExpenseQueryPage, BrexError> {
        const OP: &str = "query_expenses";
        let path = format!("/v1/expenses?{}", expense_query(query));
        let answer = self.execute(OP, &path, Method::Get).await?;
        if !answer.is_success() {
            return Err(answer.into_error(OP));
        }
        let page: ExpensePage = answer.json(OP)?;
        let mut out = ExpenseQueryPage::default();
        for item in page.items {
            match parse_expense(item) {
                Ok(e) => out.expenses.push(e),
                Err(bad) => out.malformed.push(bad),
            }
        }
        let next = page.next_cursor.filter(|c| !c.is_empty());
        if next.is_some() && next == query.cursor {
            return Err(too_many_pages(OP));
        }
        out.next_cursor = next;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn expense(json: &str) -> Expense {
        serde_json::from_str(json).unwrap()
    }

    const CARD: &str = r#"{
      "id": "expense_1", "memo": "Team lunch", "updated_at": "2026-11-20T10:00:00Z", "category": "RESTAURANTS",
      "department": {"id": "dept_1", "name": "Engineering"}, "merchant_id": "m_1",
      "merchant": {"raw_descriptor": "BLUE BOTTLE", "mcc": "5814", "country": "USA"},
      "expense_type": "CARD", "status": "APPROVED",
      "original_amount": {"amount": 4218, "currency": "USD"}, "billing_amount": {"amount": 4218, "currency": "USD"},
      "purchased_at": "2026-11-19T12:00:00Z", "payment_posted_at": "2026-11-20T09:00:00Z",
      "user": {"id": "cuuser_1", "first_name": "Ada", "last_name": "Lovelace"}, "budget_id": "b_1"
    }"#;

    #[test]
    fn a_card_expense_becomes_a_balanced_two_line_record_in_exact_decimals() {
        let r = expense(CARD).as_record().unwrap();
        assert_eq!(r.id.as_str(), "expense_1");
        assert_eq!(r.record_type, "CARD_EXPENSE_POST");
        assert_eq!(r.review_status, ReviewStatus::ReadyForExport);
        assert_eq!(r.amount.amount, Decimal::from_str("42.18").unwrap());
        assert_eq!(r.line_items[0].side, LineSide::Debit);
        assert_eq!(r.line_items[1].side, LineSide::Credit);
        assert!(r.line_items.iter().all(|l| l.amount.amount == Decimal::from_str("42.18").unwrap()));
        assert_eq!(r.line_items[0].field("category").unwrap().field_value_name.as_deref(), Some("RESTAURANTS"));
        assert_eq!(r.user.as_ref().unwrap().department_name.as_deref(), Some("Engineering"));
        assert_eq!(r.vendor.as_ref().unwrap().name.as_deref(), Some("BLUE BOTTLE"));
        assert_eq!(r.posting_date().to_string(), "2026-11-20");
        assert_eq!(r.original_amount, None, "same currency: no foreign original");
    }

    #[test]
    fn a_refund_reverses_the_sides_and_a_foreign_purchase_keeps_its_original() {
        let json = CARD
            .replace(
                r#""billing_amount": {"amount": 4218, "currency": "USD"}"#,
                r#""billing_amount": {"amount": -1100, "currency": "USD"}"#,
            )
            .replace(
                r#""original_amount": {"amount": 4218, "currency": "USD"}"#,
                r#""original_amount": {"amount": -1500, "currency": "JPY"}"#,
            );
        let r = expense(&json).as_record().unwrap();
        assert_eq!(r.record_type, "CARD_EXPENSE_REFUND");
        assert!(r.is_refund());
        assert_eq!(r.line_items[0].side, LineSide::Credit);
        assert_eq!(r.line_items[0].amount.amount, Decimal::from_str("11.00").unwrap());
        let original = r.line_items[0].original_amount.unwrap();
        assert_eq!((original.amount, original.currency.as_str()), (Decimal::from(1500), "JPY"));
    }

    #[test]
    fn a_refund_expense_maps_to_the_reversal_of_its_purchase() {
        use crate::mapping::{MappingDocument, map_record};
        use crate::proposal::Side;
        let doc = MappingDocument::parse(include_str!("../../../infra/mapping.example.toml")).unwrap();
        let refund = |expense_type: &str| {
            CARD.replace(r#""expense_type": "CARD""#, &format!(r#""expense_type": "{expense_type}""#))
                .replace(
                    r#""billing_amount": {"amount": 4218, "currency": "USD"}"#,
                    r#""billing_amount": {"amount": -1100, "currency": "USD"}"#,
                )
                .replace(
                    r#""original_amount": {"amount": 4218, "currency": "USD"}"#,
                    r#""original_amount": {"amount": -1500, "currency": "JPY"}"#,
                )
        };
        let rows = |json: &str| {
            let p = map_record(&doc, &expense(json).as_record().unwrap()).unwrap();
            assert!(p.is_balanced());
            p.rows
                .iter()
                .map(|r| {
                    let b = r.code_parts.values().map(|v| v.as_str().to_owned()).collect::<Vec<_>>().join(",");
                    (r.account.as_str().to_owned(), b, r.side, r.amount, r.text.clone())
                })
                .collect::<Vec<_>>()
        };
        let eleven = Decimal::from_str("11.00").unwrap();
        // The funding line carries the whole amount, so it shows the record's original too.
        let text = "BLUE BOTTLE Team lunch / Ada Lovelace (orig 1500 JPY)";
        assert_eq!(
            rows(&refund("CARD")),
            vec![
                ("6510".into(), "200".into(), Side::Credit, eleven, text.into()),
                ("2410".into(), String::new(), Side::Debit, eleven, text.into()),
            ]
        );
        assert_eq!(
            rows(&refund("REIMBURSEMENT")),
            vec![
                ("6510".into(), "200".into(), Side::Credit, eleven, text.into()),
                ("2420".into(), String::new(), Side::Debit, eleven, text.into()),
            ]
        );
    }

    #[test]
    fn unpostable_and_unreadable_expenses_are_told_apart() {
        let void = expense(&CARD.replace("APPROVED", "VOID"));
        assert!(!void.is_postable());
        assert_eq!(void.as_record().unwrap().review_status, ReviewStatus::Unknown);
        let no_amount = expense(&CARD.replace("billing_amount", "other_amount"));
        assert_eq!(no_amount.as_record(), Err(ExpenseViewError::NoAmount(no_amount.id.clone())));
        let bad =
            parse_expense(serde_json::json!({"id": "expense_2", "updated_at": "yesterday", "status": "APPROVED"}));
        assert_eq!(bad.unwrap_err().id.map(|i| i.to_string()).as_deref(), Some("expense_2"));
    }

    #[test]
    fn the_polling_query_asks_for_both_final_statuses_from_an_inclusive_start() {
        let q = ExpenseQuery {
            statuses: POSTABLE_STATUSES.iter().map(|s| s.to_string()).collect(),
            updated_from: DateTime::parse_from_rfc3339("2026-11-20T10:00:00+00:00").unwrap().with_timezone(&Utc),
            limit: 500,
            cursor: Some("c/1".into()),
        };
        assert_eq!(
            expense_query(&q),
            "status[]=APPROVED&status[]=SETTLED&updated_at_start=2026-11-20T10%3A00%3A00.000000Z&limit=100&cursor=c%2F1&expand[]=department&expand[]=merchant&expand[]=user"
        );
    }
}
