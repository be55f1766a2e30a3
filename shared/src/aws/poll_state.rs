//! The poller's DynamoDB items, in the one table.
//!
//! - position: `pk = "poll#accounting_records#<SOURCE>"` or `"poll#expenses"`, `sk = "cursor"`, `watermark` and `completed_at` (S, RFC 3339), and while
//!   paging is under way `cursor` (S), `query_from` (S, RFC 3339), `max_seen` (S, RFC 3339)
//! - queued mark: `pk = "queued#<subject key>"` (`queued#record#accr_…`, `queued#expense#…`), `sk = "queued"`, `queued_until` (N, epoch ms), `expires_at` (N,
//!   epoch s, TTL). TTL deletion is lazy, so the condition checks `queued_until` itself.
//! - read only: the poster's idempotency items `pk = "record#<id>" | "expense#<id>"`, `sk = "idem"`.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt};

use super::table::status;
use super::table::{IDEM_SK, QUEUED_SK, n, poll_pk, queued_pk, s, subject_pk, table_error};
use crate::domain::Subject;
use crate::error::{AwsError, Disposition};
use crate::ports::{EnqueueLedger, Feed, Paging, PollState, PollStateStore};

const CURSOR_SK: &str = "cursor";
/// BatchGetItem takes at most 100 keys.
const BATCH_GET: usize = 100;
/// Conditional puts in flight at once when marking a page queued.
const PUT_CONCURRENCY: usize = 16;
/// Rounds of `UnprocessedKeys` before giving up (retryable).
const BATCH_ROUNDS: usize = 5;

#[derive(Debug, Clone)]
pub struct DynamoPollState {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn time(t: DateTime<Utc>) -> AttributeValue {
    s(t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

fn get_time(item: &HashMap<String, AttributeValue>, key: &str) -> Result<Option<DateTime<Utc>>, AwsError> {
    match item.get(key).and_then(|v| v.as_s().ok()) {
        None => Ok(None),
        Some(raw) => DateTime::parse_from_rfc3339(raw).map(|t| Some(t.with_timezone(&Utc))).map_err(|e| {
            table_error("GetItem", format!("poll position `{key}` is not RFC 3339: {e}"), Disposition::Permanent)
        }),
    }
}

impl DynamoPollState {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Reads the poster's idempotency items for ≤ 100 keys, following `UnprocessedKeys`.
    async fn idem_items(&self, keys: &[String]) -> Result<Vec<HashMap<String, AttributeValue>>, AwsError> {
        let mut pending: Vec<HashMap<String, AttributeValue>> =
            keys.iter().map(|k| HashMap::from([("pk".to_owned(), s(k)), ("sk".to_owned(), s(IDEM_SK))])).collect();
        let mut items = Vec::new();
        for _ in 0..BATCH_ROUNDS {
            if pending.is_empty() {
                return Ok(items);
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .projection_expression("pk, #st, lease_until")
                .expression_attribute_names("#st", "status")
                .build()
                .map_err(|e| table_error("BatchGetItem", e.to_string(), Disposition::Permanent))?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("dynamodb", "BatchGetItem", &e))?;
            if let Some(mut responses) = out.responses {
                items.extend(responses.remove(&self.table).unwrap_or_default());
            }
            pending = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).map(|k| k.keys).unwrap_or_default();
        }
        if pending.is_empty() {
            Ok(items)
        } else {
            Err(table_error("BatchGetItem", format!("{} keys left unprocessed", pending.len()), Disposition::Retryable))
        }
    }

    async fn unmark_one(&self, id: &Subject) -> Result<(), AwsError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(queued_pk(id)))
            .key("sk", s(QUEUED_SK))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "DeleteItem", &e))?;
        Ok(())
    }

    /// Conditional put of one queued mark: true when this call made it.
    async fn mark_one(&self, id: &Subject, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool, AwsError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(queued_pk(id)))
            .item("sk", s(QUEUED_SK))
            .item("queued_until", n(until.timestamp_millis()))
            .item("expires_at", n(until.timestamp()))
            .condition_expression("attribute_not_exists(pk) OR queued_until < :now")
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "PutItem", &e)),
        }
    }
}

#[async_trait]
impl PollStateStore for DynamoPollState {
    async fn load(&self, source: Feed) -> Result<PollState, AwsError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(poll_pk(source)))
            .key("sk", s(CURSOR_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "GetItem", &e))?;
        let Some(item) = out.item else { return Ok(PollState::default()) };
        let cursor = item.get("cursor").and_then(|v| v.as_s().ok()).cloned();
        let paging = match (cursor, get_time(&item, "query_from")?) {
            (Some(cursor), Some(query_from)) => {
                Some(Paging { query_from, cursor, max_seen: get_time(&item, "max_seen")? })
            }
            // A cursor without its query cannot be resumed; start the paging over (dedup makes that safe).
            _ => None,
        };
        Ok(PollState {
            watermark: get_time(&item, "watermark")?,
            paging,
            completed_at: get_time(&item, "completed_at")?,
        })
    }

    async fn save(&self, source: Feed, state: &PollState) -> Result<(), AwsError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(poll_pk(source)))
            .item("sk", s(CURSOR_SK))
            .item("updated_at", time(Utc::now()));
        if let Some(watermark) = state.watermark {
            put = put.item("watermark", time(watermark));
        }
        if let Some(completed_at) = state.completed_at {
            put = put.item("completed_at", time(completed_at));
        }
        if let Some(paging) = &state.paging {
            put = put.item("cursor", s(&paging.cursor)).item("query_from", time(paging.query_from));
            if let Some(max_seen) = paging.max_seen {
                put = put.item("max_seen", time(max_seen));
            }
        }
        put.send().await.map_err(|e| AwsError::from_sdk("dynamodb", "PutItem", &e))?;
        Ok(())
    }
}

#[async_trait]
impl EnqueueLedger for DynamoPollState {
    async fn settled(&self, ids: &[Subject], now: DateTime<Utc>) -> Result<HashSet<Subject>, AwsError> {
        let by_key: HashMap<String, &Subject> = ids.iter().map(|id| (subject_pk(id), id)).collect();
        let keys: Vec<String> = by_key.keys().cloned().collect();
        let mut settled = HashSet::new();
        for chunk in keys.chunks(BATCH_GET) {
            for item in self.idem_items(chunk).await? {
                let Some(id) = item.get("pk").and_then(|v| v.as_s().ok()).and_then(|pk| by_key.get(pk)) else {
                    continue;
                };
                let status = item.get("status").and_then(|v| v.as_s().ok()).map(String::as_str);
                let lease_until =
                    item.get("lease_until").and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok());
                let done = match status {
                    Some(status::COMPLETED | status::FAILED) => true,
                    // An expired claim was abandoned: the record needs work again.
                    Some("IN_PROGRESS") => lease_until.is_some_and(|ms| ms > now.timestamp_millis()),
                    _ => false,
                };
                if done {
                    settled.insert((*id).clone());
                }
            }
        }
        Ok(settled)
    }

    async fn mark_queued(
        &self,
        ids: &[Subject],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Subject>, AwsError> {
        let results: Vec<(Subject, bool)> = futures::stream::iter(ids.iter().cloned())
            .map(|id| async move { self.mark_one(&id, until, now).await.map(|made| (id, made)) })
            .buffered(PUT_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(results.into_iter().filter(|(_, made)| *made).map(|(id, _)| id).collect())
    }

    async fn unmark_queued(&self, ids: &[Subject]) -> Result<(), AwsError> {
        // ≤ one page of ids, so all at once is fine.
        futures::future::try_join_all(ids.iter().map(|id| self.unmark_one(id))).await?;
        Ok(())
    }
}
