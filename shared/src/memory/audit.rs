//! The audit trail in memory, ordered as `aws::audit`'s sort keys order it: by time (ms), then by order of
//! writing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::audit::AuditEntry;
use crate::domain::Subject;
use crate::error::{AwsError, Disposition};
use crate::ports::AuditTrail;

#[async_trait]
impl AuditTrail for MemoryStore {
    async fn append(&self, entries: &[(Subject, AuditEntry)], _retain_until: DateTime<Utc>) -> Result<(), AwsError> {
        // DynamoDB stores each entry as JSON: refuse what it would refuse, before writing any.
        for (_, entry) in entries {
            serde_json::to_string(entry).map_err(|e| {
                AwsError::new(
                    "dynamodb",
                    "BatchWriteItem",
                    format!("audit entry does not serialise: {e}"),
                    Disposition::Permanent,
                )
            })?;
        }
        let mut table = self.table();
        for (subject, entry) in entries {
            table.audit_sequence += 1;
            let key = (entry.at.timestamp_millis(), table.audit_sequence);
            table.audit.entry(subject.clone()).or_default().insert(key, entry.clone());
        }
        Ok(())
    }

    async fn read(&self, subject: &Subject) -> Result<Vec<AuditEntry>, AwsError> {
        Ok(self.table().audit.get(subject).map(|entries| entries.values().cloned().collect()).unwrap_or_default())
    }
}
