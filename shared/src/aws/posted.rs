//! Which voucher each subject is posted as, beside its idempotency item (`sk = "posted"`, see
//! [`super::table`]): the Brex version and the proposal it was posted from, for changes after export.

use chrono::{DateTime, Utc};

use super::DynamoStore;
use super::table::{POSTED_SK, conditional_failed, corrupt, get_n, get_s, n, s, subject_pk};
use crate::domain::Subject;
use crate::error::AwsError;
use crate::ports::PostedVersion;

impl DynamoStore {
    pub(super) async fn read_posted(&self, subject: &Subject) -> Result<Option<PostedVersion>, AwsError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(subject_pk(subject)))
            .key("sk", s(POSTED_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "GetItem", &e))?;
        let Some(item) = out.item else { return Ok(None) };
        let version = get_n(&item, "version").ok_or_else(|| corrupt("GetItem", "posted voucher without a version"))?;
        let voucher = get_s(&item, "voucher").ok_or_else(|| corrupt("GetItem", "posted voucher without a voucher"))?;
        let proposal = get_s(&item, "proposal")
            .ok_or_else(|| corrupt("GetItem", "posted voucher without its proposal"))
            .and_then(|text| {
                serde_json::from_str(text).map_err(|e| corrupt("GetItem", format!("posted voucher's proposal: {e}")))
            })?;
        Ok(Some(PostedVersion { version, voucher: voucher.to_owned(), proposal }))
    }

    pub(super) async fn write_posted(
        &self,
        subject: &Subject,
        posted: &PostedVersion,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        let proposal = serde_json::to_string(&posted.proposal)
            .map_err(|e| corrupt("PutItem", format!("posted voucher's proposal: {e}")))?;
        let put = self
            .client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(subject_pk(subject)))
            .item("sk", s(POSTED_SK))
            .item("version", n(posted.version))
            .item("voucher", s(&posted.voucher))
            .item("total", s(posted.total()))
            .item("proposal", s(proposal))
            .item("expires_at", n(retain_until.timestamp()))
            .item("updated_at", s(Utc::now().to_rfc3339()))
            // A late writer of an older version never rolls a revision back.
            .condition_expression("attribute_not_exists(pk) OR version <= :v")
            .expression_attribute_values(":v", n(posted.version))
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "PutItem", &e)),
        }
    }
}
