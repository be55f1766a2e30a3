//! The message on the SQS work queue. Internal format (contract leaves it to us): one message carries up to
//! [`WorkItem::MAX_IDS`] record ids so that one poster batch (10 messages) is one Brex call of ≤ 500 ids.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{AccountingRecordId, ExpenseId, WebhookId};
use super::subject::Subject;

/// How the work reached us; kept for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Origin {
    Webhook { webhook_id: WebhookId },
    Poll,
    Backfill,
    Replay,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkItem {
    AccountingRecords { ids: Vec<AccountingRecordId>, origin: Origin, enqueued_at: DateTime<Utc> },
    Expenses { ids: Vec<ExpenseId>, origin: Origin, enqueued_at: DateTime<Utc> },
}

impl WorkItem {
    /// Ids per message: 10 messages per poster batch × 50 = the 500 ids one Brex call may carry.
    pub const MAX_IDS: usize = 50;

    /// Splits record ids into messages of at most [`Self::MAX_IDS`], dropping repeats.
    pub fn accounting_records(ids: &[AccountingRecordId], origin: &Origin, now: DateTime<Utc>) -> Vec<Self> {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<_> = ids.iter().filter(|id| seen.insert(*id)).cloned().collect();
        unique
            .chunks(Self::MAX_IDS)
            .map(|chunk| Self::AccountingRecords { ids: chunk.to_vec(), origin: origin.clone(), enqueued_at: now })
            .collect()
    }

    pub fn expenses(ids: &[ExpenseId], origin: &Origin, now: DateTime<Utc>) -> Vec<Self> {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<_> = ids.iter().filter(|id| seen.insert(*id)).cloned().collect();
        unique
            .chunks(Self::MAX_IDS)
            .map(|chunk| Self::Expenses { ids: chunk.to_vec(), origin: origin.clone(), enqueued_at: now })
            .collect()
    }

    /// The messages for `subjects`: one per chunk of records, one per chunk of expenses.
    pub fn for_subjects(subjects: &[Subject], origin: &Origin, now: DateTime<Utc>) -> Vec<Self> {
        let (records, expenses) = Subject::split(subjects);
        let mut items = Self::accounting_records(&records, origin, now);
        items.extend(Self::expenses(&expenses, origin, now));
        items
    }

    pub fn origin(&self) -> &Origin {
        match self {
            Self::AccountingRecords { origin, .. } | Self::Expenses { origin, .. } => origin,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::AccountingRecords { ids, .. } => ids.len(),
            Self::Expenses { ids, .. } => ids.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_chunked_deduplicated_and_round_trip() {
        let ids: Vec<_> = (0..120).map(|i| AccountingRecordId::parse(&format!("accr_{}", i % 110)).unwrap()).collect();
        let items = WorkItem::accounting_records(&ids, &Origin::Poll, Utc::now());
        assert_eq!(items.iter().map(WorkItem::len).collect::<Vec<_>>(), vec![50, 50, 10]);
        let json = serde_json::to_string(&items[2]).unwrap();
        assert!(json.contains(r#""kind":"accounting_records""#) && json.contains(r#""via":"poll""#));
        assert_eq!(serde_json::from_str::<WorkItem>(&json).unwrap(), items[2]);
    }
}
