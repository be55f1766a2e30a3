//! What the poster needs from Brex, IFS and the mapping document; adapters live beside the clients.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::aws::DynamoStore;
use crate::brex::Expense;
use crate::brex::model::AccountingRecord;
use crate::domain::{AccountingRecordId, CompanyCode, ExpenseId, ReferenceNumber};
use crate::error::{Classify, Disposition};
use crate::mapping::{DocumentError, LoadedMapping};
use crate::ports::{ChartOfAccounts, ExternalError};
use crate::proposal::Proposal;

/// The result of fetching records by id: one bad record never spoils the rest.
#[derive(Debug, Clone, Default)]
pub struct FetchedRecords {
    pub records: Vec<AccountingRecord>,
    /// Returned by Brex but unreadable: id and why.
    pub malformed: Vec<(AccountingRecordId, String)>,
    /// Asked for, not returned.
    pub missing: Vec<AccountingRecordId>,
}

/// The result of fetching expenses by id.
#[derive(Debug, Clone, Default)]
pub struct FetchedExpenses {
    pub expenses: Vec<Expense>,
    /// Returned by Brex but unreadable: id and why.
    pub malformed: Vec<(ExpenseId, String)>,
    /// Asked for, not returned.
    pub missing: Vec<ExpenseId>,
}

/// One export result for Brex (`POST /v3/accounting/records/export-results`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportOutcome {
    Success { id: AccountingRecordId, reference_id: String },
    Failure { id: AccountingRecordId, message: String },
}

#[async_trait]
pub trait RecordSource: Send + Sync {
    async fn fetch_records(&self, ids: &[AccountingRecordId]) -> Result<FetchedRecords, ExternalError>;
    async fn fetch_expenses(&self, ids: &[ExpenseId]) -> Result<FetchedExpenses, ExternalError>;
    async fn report_export_results(&self, results: &[ExportOutcome]) -> Result<(), ExternalError>;
}

/// IFS as the poster uses it.
#[async_trait]
pub trait Ledger: Send + Sync {
    fn as_chart(&self) -> &dyn ChartOfAccounts;
    /// Takes the tenant's names and flow switches from the mapping document in force (`[ifs.api]`), so a
    /// fix pushed by the operator applies to warm instances too.
    fn use_api(&self, api: &crate::ifs::IfsApiNames);
    /// Which of `refs` already have a voucher in `company` (ReferenceSerie `serie`): ref → voucher key.
    async fn find_posted(
        &self,
        company: &CompanyCode,
        serie: &str,
        refs: &[ReferenceNumber],
    ) -> Result<HashMap<ReferenceNumber, String>, ExternalError>;
    /// Creates the voucher; returns its key. Resolves an uncertain commit itself (dedup re-check).
    async fn create_voucher(&self, proposal: &Proposal) -> Result<String, ExternalError>;
    /// Creates a voucher per proposal (one result each, in order), in as few requests as the ledger can.
    /// Each voucher stands or falls alone; the default creates them one after the other.
    async fn create_vouchers(&self, proposals: &[Proposal]) -> Vec<Result<String, ExternalError>> {
        let mut out = Vec::with_capacity(proposals.len());
        for proposal in proposals {
            out.push(self.create_voucher(proposal).await);
        }
        out
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MappingLoadError {
    #[error("no mapping document in the table (pk=config, sk=mapping); push one with the operator CLI")]
    Missing,
    #[error("the stored mapping document (version {version}) is invalid: {error}")]
    Invalid { version: i64, error: DocumentError },
    #[error("reading the mapping document: {0}")]
    Store(#[from] crate::error::AwsError),
}

impl Classify for MappingLoadError {
    fn disposition(&self) -> Disposition {
        match self {
            // A missing or broken document is the deployment's fault, fixed by the operator, after which the
            // same records must post: held, never failed.
            Self::Missing | Self::Invalid { .. } => Disposition::Hold,
            Self::Store(e) => e.disposition(),
        }
    }
}

impl MappingLoadError {
    pub fn fix(&self) -> String {
        match self {
            Self::Missing | Self::Invalid { .. } => {
                "push a valid mapping document (`connector mapping validate FILE`, then `mapping push FILE`), then \
                 `connector replay`"
                    .into()
            }
            Self::Store(_) => "check that the functions can read the table (TABLE_NAME, IAM)".into(),
        }
    }
}

#[async_trait]
pub trait MappingSource: Send + Sync {
    async fn mapping(&self) -> Result<Arc<LoadedMapping>, MappingLoadError>;
}

/// The mapping document from DynamoDB, re-read at most every `ttl` (a pushed change reaches warm instances
/// within that time).
pub struct CachedMapping {
    store: DynamoStore,
    ttl: Duration,
    cached: Mutex<Option<(Instant, Arc<LoadedMapping>)>>,
}

impl CachedMapping {
    pub fn new(store: DynamoStore, ttl: Duration) -> Self {
        Self { store, ttl, cached: Mutex::new(None) }
    }
}

#[async_trait]
impl MappingSource for CachedMapping {
    async fn mapping(&self) -> Result<Arc<LoadedMapping>, MappingLoadError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, mapping)) = cached.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(mapping.clone());
        }
        let stored = self.store.load_mapping().await?.ok_or(MappingLoadError::Missing)?;
        let loaded = LoadedMapping::parse(&stored.document, stored.version)
            .map_err(|error| MappingLoadError::Invalid { version: stored.version, error })?;
        let loaded = Arc::new(loaded);
        *cached = Some((Instant::now(), loaded.clone()));
        Ok(loaded)
    }
}
