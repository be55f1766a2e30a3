//! READY_FOR_EXPORT records of a time range, page by page: the poller's queries (CARD and REIMBURSEMENT
//! filtered by Brex, BILL by us, since Brex takes `review_status` only with those two sources).

use chrono::{DateTime, Utc};
use shared::brex::model::{AccountingRecord, ReviewStatus, SourceType};
use shared::brex::{BrexClient, BrexError, RecordQuery};

const SOURCES: [SourceType; 3] = [SourceType::Card, SourceType::Reimbursement, SourceType::Bill];
const PAGE_SIZE: u32 = 100;

pub struct ReadyPages<'a> {
    brex: &'a BrexClient,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    source: usize,
    cursor: Option<String>,
    pub pages: usize,
}

impl<'a> ReadyPages<'a> {
    pub fn new(brex: &'a BrexClient, since: DateTime<Utc>, until: Option<DateTime<Utc>>) -> Self {
        Self { brex, since, until, source: 0, cursor: None, pages: 0 }
    }

    /// The next page's matching records (possibly none), or `None` when every source is done.
    pub async fn next(&mut self) -> Result<Option<(SourceType, Vec<AccountingRecord>)>, BrexError> {
        let Some(&source) = SOURCES.get(self.source) else { return Ok(None) };
        let query = RecordQuery {
            source_type: Some(source),
            review_status: (source != SourceType::Bill).then_some(ReviewStatus::ReadyForExport),
            updated_after: self.since,
            limit: PAGE_SIZE,
            cursor: self.cursor.take(),
        };
        let page = self.brex.query_records(&query).await?;
        self.pages += 1;
        match page.next_cursor {
            Some(next) => self.cursor = Some(next),
            None => self.source += 1,
        }
        let records = page
            .records
            .into_iter()
            .filter(|r| r.review_status == ReviewStatus::ReadyForExport)
            .filter(|r| self.until.is_none_or(|until| r.updated_at <= until))
            .collect();
        Ok(Some((source, records)))
    }

    /// Every matching record.
    pub async fn collect(mut self) -> Result<Vec<AccountingRecord>, BrexError> {
        let mut all = Vec::new();
        while let Some((_, records)) = self.next().await? {
            all.extend(records);
        }
        Ok(all)
    }
}
