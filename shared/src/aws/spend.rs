//! Spend claims in the one table: `pk = "spend#<expense id>"`, `sk = "spend"`, `status` IN_PROGRESS | POSTED |
//! RELEASED, `holder` (S, the Brex id holding or having posted it), `holders` (SS, every Brex id that ever
//! claimed it), `lease_until` (N, epoch ms), `voucher` (S), `expires_at` (N, TTL).
//!
//! A claim is never deleted while it may matter: a released claim keeps its holder history, so a voucher
//! committed by a holder that crashed before recording it is still found by the IFS dedup query.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, TimeZone, Utc};

use super::DynamoStore;
use super::table::{conditional_failed, corrupt, get_n, get_s, n, s, spend_pk};
use crate::domain::{ExpenseId, ReferenceNumber};
use crate::error::{AwsError, Disposition};
use crate::ports::{SpendClaim, SpendClaims};

const SK: &str = "spend";
const IN_PROGRESS: &str = "IN_PROGRESS";
const POSTED: &str = "POSTED";
const RELEASED: &str = "RELEASED";
/// Claims outlive any lease by far: the holder history must survive until every redelivery is over.
const CLAIM_RETENTION_SECS: i64 = 30 * 86_400;

fn reference(item: &HashMap<String, AttributeValue>, name: &str) -> Result<ReferenceNumber, AwsError> {
    get_s(item, name)
        .and_then(|v| ReferenceNumber::parse(v).ok())
        .ok_or_else(|| corrupt("GetItem", format!("spend claim has no valid `{name}`")))
}

fn holders(item: &HashMap<String, AttributeValue>) -> Vec<ReferenceNumber> {
    let mut all: Vec<ReferenceNumber> = item
        .get("holders")
        .and_then(|v| v.as_ss().ok())
        .map(|ss| ss.iter().filter_map(|h| ReferenceNumber::parse(h).ok()).collect())
        .unwrap_or_default();
    all.sort();
    all
}

impl DynamoStore {
    async fn read_spend(&self, spend: &ExpenseId) -> Result<Option<HashMap<String, AttributeValue>>, AwsError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(spend_pk(spend)))
            .key("sk", s(SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "GetItem", &e))?;
        Ok(out.item)
    }
}

#[async_trait]
impl SpendClaims for DynamoStore {
    async fn claim(
        &self,
        spend: &ExpenseId,
        holder: &ReferenceNumber,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<SpendClaim, AwsError> {
        // The item may change between a refused update and the read (released, taken over): retry a little.
        for _ in 0..3 {
            let update = self
                .client()
                .update_item()
                .table_name(self.table())
                .key("pk", s(spend_pk(spend)))
                .key("sk", s(SK))
                .update_expression(
                    "SET #st = :inprog, holder = :me, lease_until = :until, expires_at = :exp ADD holders :meset",
                )
                .condition_expression(
                    "attribute_not_exists(pk) OR #st = :released OR \
                     (#st = :inprog AND (lease_until < :now OR holder = :me))",
                )
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":inprog", s(IN_PROGRESS))
                .expression_attribute_values(":released", s(RELEASED))
                .expression_attribute_values(":me", s(holder.as_str()))
                .expression_attribute_values(":meset", AttributeValue::Ss(vec![holder.as_str().to_owned()]))
                .expression_attribute_values(":until", n(lease_until.timestamp_millis()))
                .expression_attribute_values(":now", n(now.timestamp_millis()))
                .expression_attribute_values(":exp", n(now.timestamp() + CLAIM_RETENTION_SECS))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match update {
                Ok(out) => {
                    let item = out.attributes.unwrap_or_default();
                    return Ok(SpendClaim::Claimed { holders: holders(&item) });
                }
                Err(e) if conditional_failed(&e) => {
                    let Some(item) = self.read_spend(spend).await? else { continue };
                    match get_s(&item, "status") {
                        Some(POSTED) => {
                            return Ok(SpendClaim::Posted {
                                by: reference(&item, "holder")?,
                                voucher: get_s(&item, "voucher").unwrap_or_default().to_owned(),
                            });
                        }
                        Some(IN_PROGRESS) => {
                            let until = get_n(&item, "lease_until")
                                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                                .unwrap_or(DateTime::<Utc>::MIN_UTC);
                            if until < now {
                                continue;
                            }
                            return Ok(SpendClaim::Busy { by: reference(&item, "holder")?, until });
                        }
                        _ => continue,
                    }
                }
                Err(e) => return Err(AwsError::from_sdk("dynamodb", "UpdateItem", &e)),
            }
        }
        Err(AwsError::new(
            "dynamodb",
            "UpdateItem",
            format!("spend claim {spend} keeps changing under us"),
            Disposition::Retryable,
        ))
    }

    async fn posted(
        &self,
        spend: &ExpenseId,
        holder: &ReferenceNumber,
        voucher: &str,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        // Unconditional: the voucher exists whoever held the claim, and this is the fact to remember.
        self.client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(spend_pk(spend)))
            .key("sk", s(SK))
            .update_expression("SET #st = :posted, holder = :me, voucher = :v, expires_at = :exp ADD holders :meset")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":posted", s(POSTED))
            .expression_attribute_values(":me", s(holder.as_str()))
            .expression_attribute_values(":meset", AttributeValue::Ss(vec![holder.as_str().to_owned()]))
            .expression_attribute_values(":v", s(voucher))
            .expression_attribute_values(":exp", n(retain_until.timestamp()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "UpdateItem", &e))?;
        Ok(())
    }

    async fn release(&self, spend: &ExpenseId, holder: &ReferenceNumber) -> Result<(), AwsError> {
        let out = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(spend_pk(spend)))
            .key("sk", s(SK))
            .update_expression("SET #st = :released REMOVE lease_until")
            .condition_expression("#st = :inprog AND holder = :me")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":released", s(RELEASED))
            .expression_attribute_values(":inprog", s(IN_PROGRESS))
            .expression_attribute_values(":me", s(holder.as_str()))
            .send()
            .await;
        match out {
            // Not ours any more (taken over after expiry, or posted): nothing to give back.
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "UpdateItem", &e)),
            Ok(_) => Ok(()),
        }
    }
}

impl DynamoStore {
    /// Turns a spend posted with `voucher` back into a released claim (its holder history kept), for
    /// `connector replay --completed` after `connector reconcile` found that voucher missing in IFS: otherwise
    /// the poster would complete the record again with the voucher that is gone. `false` when the claim is
    /// not posted with that voucher.
    pub async fn release_posted_spend(&self, spend: &ExpenseId, voucher: &str) -> Result<bool, AwsError> {
        let out = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", s(spend_pk(spend)))
            .key("sk", s(SK))
            .update_expression("SET #st = :released REMOVE voucher")
            .condition_expression("#st = :posted AND voucher = :v")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":released", s(RELEASED))
            .expression_attribute_values(":posted", s(POSTED))
            .expression_attribute_values(":v", s(voucher))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "UpdateItem", &e)),
        }
    }
}
