//! The table's idempotency records, leases and mapping document on DynamoDB (layout: [`super::table`]).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeZone, Utc};

use super::table::status::{COMPLETED, FAILED, HELD, IN_PROGRESS};
use super::table::{
    IDEM_SK, LEASE_SK, conditional_failed, corrupt, get_n, get_s, idempotency_pk, lease_pk, n, s, table_error,
};
use crate::error::{AwsError, Disposition};
use crate::ports::{Begin, IdempotencyKey, IdempotencyStore, LeaseStore, PostedVersion};

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// The stored mapping document (docs/contract.md §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMapping {
    pub document: String,
    pub version: i64,
    pub updated_at: String,
}

impl DynamoStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }

    async fn read_idem(&self, key: &str) -> Result<Option<HashMap<String, AttributeValue>>, AwsError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .key("sk", s(IDEM_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "GetItem", &e))?;
        Ok(out.item)
    }

    /// Reads the mapping document, if one was pushed.
    pub async fn load_mapping(&self) -> Result<Option<StoredMapping>, AwsError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s("config"))
            .key("sk", s("mapping"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "GetItem", &e))?;
        let Some(item) = out.item else { return Ok(None) };
        let document =
            get_s(&item, "document").ok_or_else(|| corrupt("GetItem", "mapping item has no `document`"))?.to_owned();
        Ok(Some(StoredMapping {
            document,
            version: get_n(&item, "version").unwrap_or(0),
            updated_at: get_s(&item, "updated_at").unwrap_or_default().to_owned(),
        }))
    }

    /// Stores a new mapping version; fails (retryable) if someone else stored one since `expected_version`.
    pub async fn store_mapping(&self, document: &str, expected_version: Option<i64>) -> Result<i64, AwsError> {
        let version = expected_version.unwrap_or(0) + 1;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s("config"))
            .item("sk", s("mapping"))
            .item("document", s(document))
            .item("version", n(version))
            .item("updated_at", s(Utc::now().to_rfc3339()));
        put = match expected_version {
            Some(v) => put.condition_expression("version = :v").expression_attribute_values(":v", n(v)),
            None => put.condition_expression("attribute_not_exists(pk)"),
        };
        put.send().await.map_err(|e| {
            let mut err = AwsError::from_sdk("dynamodb", "PutItem", &e);
            if conditional_failed(&e) {
                err.message = "the mapping changed since it was read; read it again".into();
                err.disposition = Disposition::Retryable;
            }
            err
        })?;
        Ok(version)
    }
}

impl DynamoStore {
    /// Deletes `pk`/`sk` only while `condition` (on `:v`) holds; a failed condition means the item is no longer
    /// ours to delete, which is not an error.
    async fn delete_if(
        &self,
        pk: &str,
        sk: &str,
        condition: &str,
        name: Option<(&str, &str)>,
        value: &str,
    ) -> Result<(), AwsError> {
        let mut delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .condition_expression(condition)
            .expression_attribute_values(":v", s(value));
        if let Some((placeholder, attribute)) = name {
            delete = delete.expression_attribute_names(placeholder, attribute);
        }
        match delete.send().await {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "DeleteItem", &e)),
        }
    }

    /// Claims a HELD key (its reason, fix and hold history stay for the next hold); `false` when someone
    /// else changed it first.
    async fn claim_held(&self, key: &str, lease_until: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool, AwsError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .key("sk", s(IDEM_SK))
            .update_expression("SET #st = :inprog, lease_until = :lease, updated_at = :now")
            .condition_expression("#st = :held")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":inprog", s(IN_PROGRESS))
            .expression_attribute_values(":held", s(HELD))
            .expression_attribute_values(":lease", n(lease_until.timestamp_millis()))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .send()
            .await;
        match update {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "UpdateItem", &e)),
        }
    }

    /// Writes the final state of an idempotency record, whoever held the claim.
    async fn finish(
        &self,
        key: &str,
        status: &str,
        detail: Option<(&str, &str)>,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(key))
            .item("sk", s(IDEM_SK))
            .item("status", s(status))
            .item("expires_at", n(retain_until.timestamp()))
            .item("updated_at", s(Utc::now().to_rfc3339()));
        if let Some((name, value)) = detail {
            put = put.item(name, s(value));
        }
        put.send().await.map_err(|e| AwsError::from_sdk("dynamodb", "PutItem", &e))?;
        Ok(())
    }
}

fn begin_from_item(item: &HashMap<String, AttributeValue>) -> Result<Begin, AwsError> {
    match get_s(item, "status") {
        Some(COMPLETED) => Ok(Begin::Completed { result: get_s(item, "result").map(str::to_owned) }),
        Some(FAILED) => Ok(Begin::Failed { reason: get_s(item, "reason").unwrap_or_default().to_owned() }),
        Some(IN_PROGRESS) => {
            let until = get_n(item, "lease_until").and_then(|ms| Utc.timestamp_millis_opt(ms).single());
            Ok(Begin::InProgress { until: until.unwrap_or(DateTime::<Utc>::MIN_UTC) })
        }
        other => Err(corrupt("GetItem", format!("idempotency item has unknown status {other:?}"))),
    }
}

#[async_trait]
impl IdempotencyStore for DynamoStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Begin, AwsError> {
        let key = &idempotency_pk(key);
        // A claim can vanish (released) between our failed put and the read; try again a few times.
        for _ in 0..3 {
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(key))
                .item("sk", s(IDEM_SK))
                .item("status", s(IN_PROGRESS))
                .item("lease_until", n(lease_until.timestamp_millis()))
                // An abandoned claim must not live forever.
                .item("expires_at", n(lease_until.timestamp() + 86_400))
                .item("updated_at", s(now.to_rfc3339()))
                .condition_expression("attribute_not_exists(pk) OR (#st = :inprog AND lease_until < :now)")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":inprog", s(IN_PROGRESS))
                .expression_attribute_values(":now", n(now.timestamp_millis()))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(Begin::Started),
                Err(e) if conditional_failed(&e) => {
                    if let Some(item) = self.read_idem(key).await? {
                        if get_s(&item, "status") == Some(HELD) {
                            if self.claim_held(key, lease_until, now).await? {
                                return Ok(Begin::Started);
                            }
                            continue;
                        }
                        return begin_from_item(&item);
                    }
                }
                Err(e) => return Err(AwsError::from_sdk("dynamodb", "PutItem", &e)),
            }
        }
        Err(table_error("PutItem", format!("idempotency key {key} keeps changing under us"), Disposition::Retryable))
    }

    async fn complete(
        &self,
        key: &IdempotencyKey,
        result: Option<&str>,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        let key = &idempotency_pk(key);
        self.finish(key, COMPLETED, result.map(|r| ("result", r)), retain_until).await
    }

    async fn fail(&self, key: &IdempotencyKey, reason: &str, retain_until: DateTime<Utc>) -> Result<(), AwsError> {
        let key = &idempotency_pk(key);
        self.finish(key, FAILED, Some(("reason", reason)), retain_until).await
    }

    async fn hold(
        &self,
        key: &IdempotencyKey,
        reason: &str,
        fix: &str,
        now: DateTime<Utc>,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        let key = &idempotency_pk(key);
        // Replaces our own claim; keeps when the record was first held and counts the holds, so the operator
        // sees how long and how often. Never overwrites a COMPLETED or FAILED outcome.
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .key("sk", s(IDEM_SK))
            .update_expression(
                "SET #st = :held, reason = :reason, fix = :fix, updated_at = :now, expires_at = :exp, \
                 held_since = if_not_exists(held_since, :now), held_times = if_not_exists(held_times, :zero) + :one \
                 REMOVE lease_until",
            )
            .condition_expression("attribute_not_exists(pk) OR #st = :inprog")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":held", s(HELD))
            .expression_attribute_values(":inprog", s(IN_PROGRESS))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":fix", s(fix))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":exp", n(retain_until.timestamp()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match update {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "UpdateItem", &e)),
        }
    }

    async fn posted_voucher(&self, subject: &crate::domain::Subject) -> Result<Option<PostedVersion>, AwsError> {
        self.read_posted(subject).await
    }

    async fn record_posted(
        &self,
        subject: &crate::domain::Subject,
        posted: &PostedVersion,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        self.write_posted(subject, posted, retain_until).await
    }

    async fn release(&self, key: &IdempotencyKey) -> Result<(), AwsError> {
        let key = &idempotency_pk(key);
        // Already completed/failed/gone: nothing to give back.
        self.delete_if(key, IDEM_SK, "#st = :v", Some(("#st", "status")), IN_PROGRESS).await
    }
}

#[async_trait]
impl LeaseStore for DynamoStore {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, AwsError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(lease_pk(name)))
            .item("sk", s(LEASE_SK))
            .item("holder", s(holder))
            .item("lease_until", n(until.timestamp_millis()))
            .item("expires_at", n(until.timestamp() + 3600))
            .condition_expression("attribute_not_exists(pk) OR lease_until < :now OR holder = :holder")
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "PutItem", &e)),
        }
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), AwsError> {
        // Taken over by someone else after expiry: theirs now, leave it.
        self.delete_if(&lease_pk(name), LEASE_SK, "holder = :v", None, holder).await
    }
}
