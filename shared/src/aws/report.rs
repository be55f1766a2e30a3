//! The mapping validation report in the one table.
//!
//! - latest: `pk = "report#mapping"`, `sk = "latest"`
//! - one per run: `pk = "report#mapping"`, `sk = "run#<checked_at, RFC 3339>"`, kept for
//!   [`RUN_RETENTION_DAYS`] (TTL `expires_at`)
//!
//! Both carry `mapping_version` (N), `checked_at` and `today` (S), `errors` and `warnings` (N) and `report`
//! (S, the JSON of [`ValidationReport`]).

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};

use super::table::{LATEST_REPORT_SK, n, read_latest_report, s};
use crate::error::{AwsError, Disposition};
use crate::ports::ReportStore;
use crate::reference::ValidationReport;

pub const REPORT_PK: &str = "report#mapping";
/// How long the per-run copies are kept.
pub const RUN_RETENTION_DAYS: i64 = 30;

#[derive(Debug, Clone)]
pub struct DynamoReportStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoReportStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    async fn put(
        &self,
        sk: &str,
        report: &ValidationReport,
        json: &str,
        expires_at: Option<i64>,
    ) -> Result<(), AwsError> {
        let checked_at = report.checked_at.unwrap_or_else(Utc::now);
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(REPORT_PK))
            .item("sk", s(sk))
            .item("checked_at", s(checked_at.to_rfc3339_opts(SecondsFormat::Secs, true)))
            .item("today", s(report.today.to_string()))
            .item("errors", n(count(report.errors())))
            .item("warnings", n(count(report.warnings())))
            .item("report", s(json));
        if let Some(version) = report.mapping_version {
            put = put.item("mapping_version", n(version));
        }
        if let Some(at) = expires_at {
            put = put.item("expires_at", n(at));
        }
        put.send().await.map_err(|e| AwsError::from_sdk("dynamodb", "PutItem", &e))?;
        Ok(())
    }
}

fn count(c: usize) -> i64 {
    i64::try_from(c).unwrap_or(i64::MAX)
}

#[async_trait]
impl ReportStore for DynamoReportStore {
    /// The per-run copy first: if the second write fails, "latest" still names a report that exists.
    async fn save(&self, report: &ValidationReport) -> Result<(), AwsError> {
        let json = serde_json::to_string(report).map_err(|e| {
            AwsError::new(
                "dynamodb",
                "PutItem",
                format!("validation report does not serialise: {e}"),
                Disposition::Permanent,
            )
        })?;
        let checked_at = report.checked_at.unwrap_or_else(Utc::now);
        let run_sk = format!("run#{}", checked_at.to_rfc3339_opts(SecondsFormat::Micros, true));
        let expires_at = (checked_at + chrono::Duration::days(RUN_RETENTION_DAYS)).timestamp();
        self.put(&run_sk, report, &json, Some(expires_at)).await?;
        self.put(LATEST_REPORT_SK, report, &json, None).await
    }

    /// The report of the last refresh, if one ran.
    async fn load_latest(&self) -> Result<Option<ValidationReport>, AwsError> {
        read_latest_report(&self.client, &self.table, REPORT_PK, "validation report").await
    }
}
