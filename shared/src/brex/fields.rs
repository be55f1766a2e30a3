//! The Fields API (`/v1/fields`, 1.0.0-beta): custom fields and their values. The reference sync
//! (`crate::sync`) publishes IFS accounts and code parts through it, with the IFS code as `remote_id`, so
//! accounting records come back carrying IFS codes.
//!
//! Creates and updates are one call each (≤ [`MAX_VALUES_PER_CALL`] values); the caller chunks and counts
//! them against its request budget. Every write carries an `Idempotency-Key` derived from the body and a
//! caller-given scope, so a retry inside one sync run is one change to Brex, while a later run (which plans
//! from what Brex then holds) never gets an earlier run's answer replayed for a new change.

use serde::{Deserialize, Serialize};

use super::client::{Answer, BrexClient, Method, encode, keyed_uuid, too_many_pages};
use super::error::BrexError;

/// Brex's bulk limit for creating, updating and deleting field values.
pub const MAX_VALUES_PER_CALL: usize = 1000;
/// Brex's maximum `limit` on the field and field value lists.
pub const MAX_PAGE_LIMIT: u32 = 1000;
/// Guards against a server that keeps handing out cursors.
const MAX_PAGES: usize = 1000;

/// The category of a field. The sync creates `ACCOUNTING` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FieldGroup {
    Accounting,
    User,
    Erp,
    /// A group this client does not know yet (the API is beta).
    #[serde(other)]
    Unknown,
}

/// A custom field (`extended_field_…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub brex_id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The ERP's id of the field: `GL_ACCOUNT`, `CODE_B` … for the fields the sync owns.
    #[serde(default)]
    pub remote_id: Option<String>,
    #[serde(default)]
    pub group: Option<FieldGroup>,
    #[serde(default)]
    pub is_disabled: bool,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// One value of a field (`efo_…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldValue {
    pub brex_id: String,
    #[serde(default)]
    pub field_id: Option<String>,
    /// The display name bookkeepers pick from.
    pub value: String,
    #[serde(default)]
    pub value_id: Option<String>,
    /// The IFS code, for values the sync owns.
    #[serde(default)]
    pub remote_id: Option<String>,
    #[serde(default)]
    pub is_disabled: bool,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// `POST /v1/fields`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewField {
    pub name: String,
    pub group: FieldGroup,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<String>,
}

/// One item of `POST /v1/fields/{field_id}/values`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewFieldValue {
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_disabled: Option<bool>,
}

/// How an update addresses a value: Brex accepts any one of the three ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKey {
    BrexId(String),
    RemoteId(String),
    ValueId(String),
}

/// The changeable part of a value. Absent members are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FieldValueData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_disabled: Option<bool>,
}

/// One item of `PUT /v1/fields/{field_id}/values`: `{"brex_id": "efo_…", "data": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldValueUpdate {
    #[serde(flatten)]
    pub key: ValueKey,
    pub data: FieldValueData,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Serialize)]
struct Items<'a, T> {
    items: &'a [T],
}

#[derive(Deserialize)]
struct ItemsAnswer<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

impl BrexClient {
    /// `GET /v1/fields`, one page.
    pub async fn fields_page(&self, cursor: Option<&str>) -> Result<Page<Field>, BrexError> {
        const OP: &str = "list_fields";
        let path = format!("/v1/fields?{}", page_query(cursor));
        let answer = self.execute(OP, &path, Method::Get).await?;
        ok(answer, OP)?.json(OP)
    }

    /// Every field of the account.
    pub async fn list_fields(&self) -> Result<Vec<Field>, BrexError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.fields_page(cursor.as_deref()).await?;
            all.extend(page.items);
            match follow(page.next_cursor, cursor.as_deref()) {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
        Err(too_many_pages("list_fields"))
    }

    /// `POST /v1/fields`. `scope` goes into the idempotency key (see the module docs).
    pub async fn create_field(&self, field: &NewField, scope: &str) -> Result<Field, BrexError> {
        const OP: &str = "create_field";
        let body = serde_json::to_vec(field).map_err(|e| BrexError::InvalidRequest(format!("field: {e}")))?;
        let key = keyed_uuid(format!("brex-ifs-connector/fields/{scope}/v1\n").as_bytes(), &body);
        let answer = self.execute(OP, "/v1/fields", Method::Post { body, idempotency_key: key }).await?;
        ok(answer, OP)?.json(OP)
    }

    /// `GET /v1/fields/{field_id}/values`, one page.
    pub async fn field_values_page(&self, field_id: &str, cursor: Option<&str>) -> Result<Page<FieldValue>, BrexError> {
        const OP: &str = "list_field_values";
        let path = format!("/v1/fields/{}/values?{}", encode(field_id), page_query(cursor));
        let answer = self.execute(OP, &path, Method::Get).await?;
        ok(answer, OP)?.json(OP)
    }

    /// Every value of a field.
    pub async fn list_field_values(&self, field_id: &str) -> Result<Vec<FieldValue>, BrexError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.field_values_page(field_id, cursor.as_deref()).await?;
            all.extend(page.items);
            match follow(page.next_cursor, cursor.as_deref()) {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
        Err(too_many_pages("list_field_values"))
    }

    /// `POST /v1/fields/{field_id}/values`: 1 to [`MAX_VALUES_PER_CALL`] values in one call.
    pub async fn create_field_values(
        &self,
        field_id: &str,
        values: &[NewFieldValue],
        scope: &str,
    ) -> Result<Vec<FieldValue>, BrexError> {
        const OP: &str = "create_field_values";
        let (body, key) = bulk_body(field_id, values, scope, "create")?;
        let path = format!("/v1/fields/{}/values", encode(field_id));
        let answer = self.execute(OP, &path, Method::Post { body, idempotency_key: key }).await?;
        Ok(ok(answer, OP)?.json::<ItemsAnswer<FieldValue>>(OP)?.items)
    }

    /// `PUT /v1/fields/{field_id}/values`: 1 to [`MAX_VALUES_PER_CALL`] updates in one call.
    pub async fn update_field_values(
        &self,
        field_id: &str,
        updates: &[FieldValueUpdate],
        scope: &str,
    ) -> Result<Vec<FieldValue>, BrexError> {
        const OP: &str = "update_field_values";
        let (body, key) = bulk_body(field_id, updates, scope, "update")?;
        let path = format!("/v1/fields/{}/values", encode(field_id));
        let answer = self.execute(OP, &path, Method::Put { body, idempotency_key: key }).await?;
        Ok(ok(answer, OP)?.json::<ItemsAnswer<FieldValue>>(OP)?.items)
    }
}

fn ok(answer: Answer, operation: &'static str) -> Result<Answer, BrexError> {
    if answer.is_success() { Ok(answer) } else { Err(answer.into_error(operation)) }
}

fn page_query(cursor: Option<&str>) -> String {
    match cursor {
        Some(c) => format!("limit={MAX_PAGE_LIMIT}&cursor={}", encode(c)),
        None => format!("limit={MAX_PAGE_LIMIT}"),
    }
}

/// The cursor to follow; one equal to the one just used would loop forever.
fn follow(next: Option<String>, current: Option<&str>) -> Option<String> {
    next.filter(|c| !c.is_empty() && Some(c.as_str()) != current)
}

fn bulk_body<T: Serialize>(
    field_id: &str,
    items: &[T],
    scope: &str,
    verb: &str,
) -> Result<(Vec<u8>, String), BrexError> {
    if items.is_empty() || items.len() > MAX_VALUES_PER_CALL {
        return Err(BrexError::InvalidRequest(format!(
            "field values: {} items in one call (Brex takes 1 to {MAX_VALUES_PER_CALL})",
            items.len()
        )));
    }
    let body = serde_json::to_vec(&Items { items }).map_err(|e| BrexError::InvalidRequest(format!("values: {e}")))?;
    let key = keyed_uuid(format!("brex-ifs-connector/field-values/{verb}/{field_id}/{scope}/v1\n").as_bytes(), &body);
    Ok((body, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_serialise_as_the_fields_spec_documents() {
        let create = NewFieldValue {
            value: "6500 Travel".into(),
            value_id: Some("6500".into()),
            remote_id: Some("6500".into()),
            is_disabled: None,
        };
        assert_eq!(
            serde_json::to_value(Items { items: &[create] }).unwrap(),
            json!({"items": [{"value": "6500 Travel", "value_id": "6500", "remote_id": "6500"}]})
        );
        let updates = [
            FieldValueUpdate {
                key: ValueKey::BrexId("efo_1".into()),
                data: FieldValueData { value: Some("6500 Travel & lodging".into()), is_disabled: None },
            },
            FieldValueUpdate {
                key: ValueKey::RemoteId("6510".into()),
                data: FieldValueData { value: None, is_disabled: Some(true) },
            },
        ];
        assert_eq!(
            serde_json::to_value(Items { items: &updates }).unwrap(),
            json!({"items": [
                {"brex_id": "efo_1", "data": {"value": "6500 Travel & lodging"}},
                {"remote_id": "6510", "data": {"is_disabled": true}},
            ]})
        );
        let field = NewField {
            name: "Cost Center".into(),
            group: FieldGroup::Accounting,
            remote_id: Some("CODE_B".into()),
            integration_id: None,
        };
        assert_eq!(
            serde_json::to_value(&field).unwrap(),
            json!({"name": "Cost Center", "group": "ACCOUNTING", "remote_id": "CODE_B"})
        );
    }

    #[test]
    fn lists_parse_leniently() {
        let page: Page<Field> = serde_json::from_value(json!({
            "items": [{"brex_id": "extended_field_1", "name": "GL Account", "remote_id": "GL_ACCOUNT",
                       "group": "SOMETHING_NEW", "is_disabled": false, "updated_at": "2026-06-11T09:09:10Z"}],
            "next_cursor": null
        }))
        .unwrap();
        assert_eq!(page.items[0].group, Some(FieldGroup::Unknown));
        let values: Page<FieldValue> = serde_json::from_value(json!({
            "items": [{"brex_id": "efo_1", "field_id": "extended_field_1", "value": "6500 Travel",
                       "is_disabled": true, "extra": 1}]
        }))
        .unwrap();
        assert_eq!(values.items[0].remote_id, None);
        assert!(values.items[0].is_disabled);
    }

    #[test]
    fn bulk_calls_are_bounded_and_keyed_by_scope_and_body() {
        let one = [NewFieldValue { value: "x".into(), value_id: None, remote_id: None, is_disabled: None }];
        let (body, key) = bulk_body("ef_1", &one, "run-1", "create").unwrap();
        assert_eq!(bulk_body("ef_1", &one, "run-1", "create").unwrap(), (body, key.clone()));
        assert_ne!(bulk_body("ef_1", &one, "run-2", "create").unwrap().1, key);
        assert_ne!(bulk_body("ef_2", &one, "run-1", "create").unwrap().1, key);
        assert!(uuid::Uuid::parse_str(&key).is_ok());
        let empty: [NewFieldValue; 0] = [];
        assert!(bulk_body("ef_1", &empty, "s", "create").is_err());
        let many = vec![one[0].clone(); MAX_VALUES_PER_CALL + 1];
        assert!(bulk_body("ef_1", &many, "s", "create").is_err());
        assert!(bulk_body("ef_1", &many[..MAX_VALUES_PER_CALL], "s", "create").is_ok());
    }

    #[test]
    fn cursors_stop_on_end_and_repeats() {
        assert_eq!(follow(Some("b".into()), Some("a")), Some("b".into()));
        assert_eq!(follow(Some("a".into()), Some("a")), None);
        assert_eq!(follow(Some(String::new()), None), None);
        assert_eq!(follow(None, None), None);
    }
}
