//! Validation reports in memory: the latest and one per run, as `aws::report` keeps them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};

use super::lock;
use crate::error::{AwsError, Disposition};
use crate::ports::ReportStore;
use crate::reference::ValidationReport;

#[derive(Debug, Default)]
pub struct MemoryReports {
    /// The JSON DynamoDB would hold: the latest, and per run by `checked_at` (µs).
    latest: Mutex<Option<String>>,
    runs: Mutex<BTreeMap<String, String>>,
}

impl MemoryReports {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every run's report, oldest first.
    pub fn runs(&self) -> Vec<ValidationReport> {
        lock(&self.runs).values().filter_map(|json| serde_json::from_str(json).ok()).collect()
    }
}

#[async_trait]
impl ReportStore for MemoryReports {
    async fn save(&self, report: &ValidationReport) -> Result<(), AwsError> {
        // Kept as JSON, as in the table, so a report that does not round-trip fails here as it would there.
        let json = serde_json::to_string(report).map_err(|e| {
            AwsError::new(
                "dynamodb",
                "PutItem",
                format!("validation report does not serialise: {e}"),
                Disposition::Permanent,
            )
        })?;
        let checked_at = report.checked_at.unwrap_or_else(Utc::now);
        lock(&self.runs).insert(checked_at.to_rfc3339_opts(SecondsFormat::Micros, true), json.clone());
        *lock(&self.latest) = Some(json);
        Ok(())
    }

    async fn load_latest(&self) -> Result<Option<ValidationReport>, AwsError> {
        let Some(json) = lock(&self.latest).clone() else { return Ok(None) };
        serde_json::from_str(&json).map(Some).map_err(|e| {
            AwsError::new(
                "dynamodb",
                "GetItem",
                format!("validation report item holds no readable report: {e}"),
                Disposition::Permanent,
            )
        })
    }
}
