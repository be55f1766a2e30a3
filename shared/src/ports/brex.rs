//! What the connector needs from Brex: the records and expenses to post, the export results it reports, the
//! poller's filtered pages, the webhook signing secrets and the custom fields the reference sync writes. The Brex client implements them in
//! `crate::brex::adapter`.

use async_trait::async_trait;

use crate::brex::fields::Page;
use crate::brex::model::AccountingRecord;
use crate::brex::{
    BrexError, Expense, ExpenseQuery, ExpenseQueryPage, Field, FieldValue, FieldValueUpdate, NewField, NewFieldValue,
    RecordQuery, RecordQueryPage,
};
use crate::domain::{AccountingRecordId, ExpenseId, Secret};
use crate::error::ExternalError;

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
    /// `deep_link_url`: the voucher's address in IFS (`[ifs] voucher_link`), when the mapping gives one.
    Success {
        id: AccountingRecordId,
        reference_id: String,
        deep_link_url: Option<String>,
    },
    Failure {
        id: AccountingRecordId,
        message: String,
    },
}

#[async_trait]
pub trait RecordSource: Send + Sync {
    async fn fetch_records(&self, ids: &[AccountingRecordId]) -> Result<FetchedRecords, ExternalError>;
    async fn fetch_expenses(&self, ids: &[ExpenseId]) -> Result<FetchedExpenses, ExternalError>;
    async fn report_export_results(&self, results: &[ExportOutcome]) -> Result<(), ExternalError>;
}

/// Pages of Brex's filtered queries (the Brex client; a fake in unit tests).
#[async_trait]
pub trait BrexPages: Send + Sync {
    async fn record_page(&self, query: &RecordQuery) -> Result<RecordQueryPage, BrexError>;
    async fn expense_page(&self, query: &ExpenseQuery) -> Result<ExpenseQueryPage, BrexError>;
}

/// Brex's webhook signing secrets (`GET /v1/webhooks/secrets`), every one currently valid.
#[async_trait]
pub trait WebhookSecretSource: Send + Sync {
    async fn webhook_secrets(&self) -> Result<Vec<Secret>, ExternalError>;
}

/// Brex's custom fields and their values, which the reference sync publishes IFS codes into (reference data,
/// never financial data). `scope` keys the idempotency of each write.
#[async_trait]
pub trait BrexFields: Send + Sync {
    async fn fields_page(&self, cursor: Option<&str>) -> Result<Page<Field>, BrexError>;
    async fn field_values_page(&self, field_id: &str, cursor: Option<&str>) -> Result<Page<FieldValue>, BrexError>;
    async fn create_field(&self, field: &NewField, scope: &str) -> Result<Field, BrexError>;
    async fn create_field_values(
        &self,
        field_id: &str,
        values: &[NewFieldValue],
        scope: &str,
    ) -> Result<Vec<FieldValue>, BrexError>;
    async fn update_field_values(
        &self,
        field_id: &str,
        updates: &[FieldValueUpdate],
        scope: &str,
    ) -> Result<Vec<FieldValue>, BrexError>;
}

/// Brex as the receipt attacher reads it: the receipts of records and expenses (with fresh presigned URIs)
/// and the files behind them. Implemented in `crate::brex::receipts`.
#[async_trait]
pub trait ReceiptSource: Send + Sync {
    /// The receipts of each subject, read now. A subject Brex does not return has none.
    async fn receipts(
        &self,
        subjects: &[crate::domain::Subject],
    ) -> Result<std::collections::HashMap<crate::domain::Subject, Vec<crate::receipts::ReceiptRef>>, ExternalError>;
    /// Downloads one receipt from one of its presigned URIs.
    async fn download(
        &self,
        receipt_id: &str,
        uri: &str,
    ) -> Result<crate::receipts::ReceiptFile, crate::receipts::DownloadError>;
}
