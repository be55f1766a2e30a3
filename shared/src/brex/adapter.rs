//! The Brex client as the ports see it: the poster's [`RecordSource`], the poller's [`BrexPages`] and the
//! webhook's [`WebhookSecretSource`] and the reference sync's [`BrexFields`].

use async_trait::async_trait;

use super::client::{BrexClient, ExportResult, ExportStatus};
use super::client::{RecordQuery, RecordQueryPage};
use super::error::BrexError;
use super::expense::{ExpenseQuery, ExpenseQueryPage};
use super::fields::{Field, FieldValue, FieldValueUpdate, NewField, NewFieldValue, Page};
use crate::domain::{AccountingRecordId, ExpenseId, Secret};
use crate::error::ExternalError;
use crate::ports::{
    BrexFields, BrexPages, ExportOutcome, FetchedExpenses, FetchedRecords, RecordSource, WebhookSecretSource,
};

#[async_trait]
impl RecordSource for BrexClient {
    async fn fetch_records(&self, ids: &[AccountingRecordId]) -> Result<FetchedRecords, ExternalError> {
        let fetch = self.records_by_ids(ids).await?;
        let mut malformed = Vec::new();
        for bad in fetch.malformed {
            match bad.id {
                Some(id) => malformed.push((id, bad.error)),
                // Without a usable id it cannot be tied to a claim; the claim shows up as missing instead.
                None => tracing::warn!(error = %bad.error, "Brex returned an unreadable record without an id"),
            }
        }
        let mut missing = fetch.missing;
        // Ids that came back unreadable but whose id we could not read are "missing" as far as we can tell.
        let seen: std::collections::HashSet<&AccountingRecordId> =
            fetch.records.iter().map(|r| &r.id).chain(malformed.iter().map(|(id, _)| id)).collect();
        for id in ids {
            if !seen.contains(id) && !missing.contains(id) {
                missing.push(id.clone());
            }
        }
        Ok(FetchedRecords { records: fetch.records, malformed, missing })
    }

    async fn fetch_expenses(&self, ids: &[ExpenseId]) -> Result<FetchedExpenses, ExternalError> {
        let fetch = self.expenses_by_ids(ids).await?;
        // Every id was asked for on its own, so each unreadable answer carries the id it was asked for.
        let malformed = fetch.malformed.into_iter().filter_map(|bad| bad.id.map(|id| (id, bad.error))).collect();
        Ok(FetchedExpenses { expenses: fetch.expenses, malformed, missing: fetch.missing })
    }

    async fn report_export_results(&self, results: &[ExportOutcome]) -> Result<(), ExternalError> {
        let wire: Vec<ExportResult> = results
            .iter()
            .map(|r| match r {
                ExportOutcome::Success { id, reference_id, deep_link_url } => ExportResult {
                    accounting_record_id: id.clone(),
                    outcome: ExportStatus::Success {
                        reference_id: Some(reference_id.clone()),
                        deep_link_url: deep_link_url.clone(),
                    },
                },
                ExportOutcome::Failure { id, message } => ExportResult {
                    accounting_record_id: id.clone(),
                    outcome: ExportStatus::Failure { error_message: message.clone() },
                },
            })
            .collect();
        let report = BrexClient::report_export_results(self, &wire).await?;
        if !report.not_found.is_empty() {
            tracing::warn!(ids = ?report.not_found, "Brex does not know some reported records");
        }
        Ok(())
    }
}

#[async_trait]
impl BrexPages for BrexClient {
    async fn record_page(&self, query: &RecordQuery) -> Result<RecordQueryPage, BrexError> {
        self.query_records(query).await
    }
    async fn expense_page(&self, query: &ExpenseQuery) -> Result<ExpenseQueryPage, BrexError> {
        self.query_expenses(query).await
    }
}

#[async_trait]
impl WebhookSecretSource for BrexClient {
    async fn webhook_secrets(&self) -> Result<Vec<Secret>, ExternalError> {
        Ok(self.list_webhook_secrets().await?.into_iter().map(|entry| entry.secret).collect())
    }
}

#[async_trait]
impl BrexFields for BrexClient {
    async fn fields_page(&self, cursor: Option<&str>) -> Result<Page<Field>, BrexError> {
        BrexClient::fields_page(self, cursor).await
    }
    async fn field_values_page(&self, field_id: &str, cursor: Option<&str>) -> Result<Page<FieldValue>, BrexError> {
        BrexClient::field_values_page(self, field_id, cursor).await
    }
    async fn create_field(&self, field: &NewField, scope: &str) -> Result<Field, BrexError> {
        BrexClient::create_field(self, field, scope).await
    }
    async fn create_field_values(
        &self,
        field_id: &str,
        values: &[NewFieldValue],
        scope: &str,
    ) -> Result<Vec<FieldValue>, BrexError> {
        BrexClient::create_field_values(self, field_id, values, scope).await
    }
    async fn update_field_values(
        &self,
        field_id: &str,
        updates: &[FieldValueUpdate],
        scope: &str,
    ) -> Result<Vec<FieldValue>, BrexError> {
        BrexClient::update_field_values(self, field_id, updates, scope).await
    }
}
