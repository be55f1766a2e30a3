//! What a unit of work is about: a Brex accounting record or a Brex expense. Both reach IFS as one voucher;
//! the two kinds keep separate idempotency keys because their ids come from different Brex APIs.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::{AccountingRecordId, ExpenseId, ReferenceNumber};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Subject {
    Record(AccountingRecordId),
    Expense(ExpenseId),
}

impl Subject {
    /// The IFS `ReferenceNumber` its voucher rows carry.
    pub fn reference(&self) -> ReferenceNumber {
        match self {
            Self::Record(id) => id.into(),
            Self::Expense(id) => id.into(),
        }
    }

    /// Parses what an operator types: an `accr_…` id is a record, anything else an expense; `record#…` and
    /// `expense#…` (as the table and `connector failures --json` show them) are accepted too.
    pub fn parse(input: &str) -> Result<Self, super::ids::InvalidId> {
        let input = input.trim();
        if let Some(id) = input.strip_prefix("record#") {
            return AccountingRecordId::parse(id).map(Self::Record);
        }
        if let Some(id) = input.strip_prefix("expense#") {
            return ExpenseId::parse(id).map(Self::Expense);
        }
        if input.starts_with("accr_") {
            AccountingRecordId::parse(input).map(Self::Record)
        } else {
            ExpenseId::parse(input).map(Self::Expense)
        }
    }

    /// Splits subjects by kind (records and expenses come from different Brex APIs and travel in separate
    /// messages), keeping their order.
    pub fn split(subjects: &[Self]) -> (Vec<AccountingRecordId>, Vec<ExpenseId>) {
        let mut records = Vec::new();
        let mut expenses = Vec::new();
        for subject in subjects {
            match subject {
                Self::Record(id) => records.push(id.clone()),
                Self::Expense(id) => expenses.push(id.clone()),
            }
        }
        (records, expenses)
    }

    pub fn as_record(&self) -> Option<&AccountingRecordId> {
        match self {
            Self::Record(id) => Some(id),
            Self::Expense(_) => None,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Record(id) => write!(f, "{id}"),
            Self::Expense(id) => write!(f, "{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_parsing_round_trip() {
        let record = Subject::parse("accr_1").unwrap();
        assert_eq!(record, Subject::Record(AccountingRecordId::parse("accr_1").unwrap()));
        assert_eq!(Subject::parse("record#accr_1").unwrap(), record);
        let expense = Subject::parse("expense_9").unwrap();
        assert_eq!(expense, Subject::Expense(ExpenseId::parse("expense_9").unwrap()));
        assert_eq!(expense.reference().as_str(), "expense_9");
        assert_eq!(Subject::parse("expense#expense_9").unwrap(), expense);
        assert!(Subject::parse("record#bad id").is_err());
    }

    #[test]
    fn split_keeps_kind_and_order() {
        let subjects: Vec<Subject> =
            ["accr_2", "expense_1", "accr_1", "expense_3"].iter().map(|s| Subject::parse(s).unwrap()).collect();
        let (records, expenses) = Subject::split(&subjects);
        assert_eq!(records.iter().map(|r| r.as_str()).collect::<Vec<_>>(), ["accr_2", "accr_1"]);
        assert_eq!(expenses.iter().map(|e| e.as_str()).collect::<Vec<_>>(), ["expense_1", "expense_3"]);
    }
}
