//! What the connector learned about a tenant, shared by every instance through the table:
//! `pk = "capability"`, `sk = <name>`, `value` (S), `reason` (S), `until` (N, epoch s), `expires_at` (N).

use async_trait::async_trait;
use chrono::{TimeZone, Utc};

use super::DynamoStore;
use super::table::{get_n, get_s, n, s};
use crate::error::AwsError;
use crate::ports::{Capability, CapabilityStore};

const PK: &str = "capability";

#[async_trait]
impl CapabilityStore for DynamoStore {
    async fn recall(&self, name: &str) -> Result<Option<Capability>, AwsError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(PK))
            .key("sk", s(name))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "GetItem", &e))?;
        let Some(item) = out.item else { return Ok(None) };
        let until = get_n(&item, "until").and_then(|t| Utc.timestamp_opt(t, 0).single());
        Ok(match (get_s(&item, "value"), until) {
            (Some(value), Some(until)) => Some(Capability {
                value: value.to_owned(),
                reason: get_s(&item, "reason").unwrap_or_default().to_owned(),
                until,
            }),
            // Unreadable: as if nothing were known, so $batch is simply tried.
            _ => None,
        })
    }

    async fn remember(&self, name: &str, capability: &Capability) -> Result<(), AwsError> {
        self.client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(PK))
            .item("sk", s(name))
            .item("value", s(&capability.value))
            .item("reason", s(&capability.reason))
            .item("until", n(capability.until.timestamp()))
            .item("expires_at", n(capability.until.timestamp() + 86_400))
            .item("updated_at", s(Utc::now().to_rfc3339()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "PutItem", &e))?;
        Ok(())
    }
}
