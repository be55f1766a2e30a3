//! Reconciliation's reads and its report in the one table.
//!
//! - completed subjects: a filtered Scan of the idempotency items (`sk = "idem"`, `status = COMPLETED`,
//!   `pk = record#… | expense#…`) — once a day, never on the poster's path
//! - latest report: `pk = "report#reconcile"`, `sk = "latest"`; one per run: `sk = "run#<checked_at>"`, kept
//!   for [`RUN_RETENTION_DAYS`] (TTL `expires_at`). Both carry `run_day` and `checked_at` (S), `differences`
//!   (N) and `report` (S, the JSON of [`ReconcileReport`]); `run_day` of the latest is the poller's "ran
//!   today" mark.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};

use super::DynamoStore;
use super::operator::SubjectScan;
use super::table::status::COMPLETED;
use super::table::{LATEST_REPORT_SK, corrupt, get_s, n, read_latest_report, s};
use crate::error::AwsError;
use crate::ports::{CompletedSubject, CompletedSubjects, ReconcileStore};
use crate::reconcile::ReconcileReport;

pub const REPORT_PK: &str = "report#reconcile";
/// How long the per-run copies are kept.
pub const RUN_RETENTION_DAYS: i64 = 30;

#[async_trait]
impl CompletedSubjects for DynamoStore {
    async fn completed_subjects(&self) -> Result<Vec<CompletedSubject>, AwsError> {
        let mut out = Vec::new();
        let done =
            SubjectScan { statuses: &[COMPLETED], attributes: Some(&["result", "updated_at"]), ..Default::default() };
        self.scan_subjects(&done, |subject, item| {
            // A completed item without a voucher predates nothing this version writes; it names no voucher to
            // check, so it is left out rather than reported as missing.
            let Some(voucher) = get_s(item, "result").filter(|v| !v.is_empty()) else { return };
            let updated_at = get_s(item, "updated_at")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            out.push(CompletedSubject { subject, voucher: voucher.to_owned(), updated_at });
        })
        .await?;
        out.sort_by(|a, b| a.subject.cmp(&b.subject));
        Ok(out)
    }
}

impl DynamoStore {
    async fn put_reconcile(
        &self,
        sk: &str,
        report: &ReconcileReport,
        json: &str,
        expires_at: Option<i64>,
    ) -> Result<(), AwsError> {
        let mut put = self
            .client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(REPORT_PK))
            .item("sk", s(sk))
            .item("run_day", s(report.run_day.to_string()))
            .item("checked_at", s(report.checked_at.to_rfc3339_opts(SecondsFormat::Secs, true)))
            .item("differences", n(i64::try_from(report.differences.len()).unwrap_or(i64::MAX)))
            .item("report", s(json));
        if let Some(at) = expires_at {
            put = put.item("expires_at", n(at));
        }
        put.send().await.map_err(|e| AwsError::from_sdk("dynamodb", "PutItem", &e))?;
        Ok(())
    }
}

#[async_trait]
impl ReconcileStore for DynamoStore {
    /// The per-run copy first: if the second write fails, "latest" still names a report that exists.
    async fn save(&self, report: &ReconcileReport) -> Result<(), AwsError> {
        let json = serde_json::to_string(report)
            .map_err(|e| corrupt("PutItem", format!("reconciliation report does not serialise: {e}")))?;
        let run_sk = format!("run#{}", report.checked_at.to_rfc3339_opts(SecondsFormat::Millis, true));
        let expires = (report.checked_at + chrono::Duration::days(RUN_RETENTION_DAYS)).timestamp();
        self.put_reconcile(&run_sk, report, &json, Some(expires)).await?;
        self.put_reconcile(LATEST_REPORT_SK, report, &json, None).await
    }

    async fn load_latest(&self) -> Result<Option<ReconcileReport>, AwsError> {
        read_latest_report(self.client(), self.table(), REPORT_PK, "reconciliation report").await
    }
}
