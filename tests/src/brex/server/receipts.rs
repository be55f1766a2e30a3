//! Receipt files, the way Brex hands them out: a record's (or, with `expand[]=receipts.download_uris`, an
//! expense's) `receipts[]` carry `download_uris` minted on every read, presigned S3-style links valid
//! [`DEFAULT_RECEIPT_URL_TTL`] (about 15 minutes). Reading one after its expiry answers 403 `AccessDenied`
//! "Request has expired" as S3 does; a tampered link answers 403 `SignatureDoesNotMatch`. The links carry
//! their own authorization: no bearer token is asked for (and one sent anyway is ignored, as S3 would refuse
//! it). Downloads are counted per receipt.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::BrexSimHandle;
use super::query::parse_query;
use super::router::Sim;
use super::state::{SimState, bump};
use crate::brex::model::{AccountingRecord, Receipt};

/// Brex's presigned receipt links last about 15 minutes.
pub const DEFAULT_RECEIPT_URL_TTL: Duration = Duration::from_secs(15 * 60);
/// Where the files are served (the stand-in for S3), beside the API on the same listener.
pub(super) const FILE_ROUTE: &str = "/_files/receipts/{receipt_id}";
const AMZ_DATE: &str = "%Y%m%dT%H%M%SZ";

/// One stored receipt file.
#[derive(Debug, Clone)]
pub(super) struct ReceiptFile {
    pub(super) content_type: String,
    pub(super) bytes: Vec<u8>,
}

/// The receipt side of the simulator's state.
#[derive(Debug)]
pub(super) struct ReceiptState {
    pub(super) files: HashMap<String, ReceiptFile>,
    pub(super) ttl: Duration,
    /// The next N links minted are already expired (as if the record had been read a quarter hour ago).
    pub(super) expire_next: u32,
    /// Successful downloads per receipt id.
    pub(super) downloads: HashMap<String, u64>,
    /// Downloads refused because the link had expired.
    pub(super) expired_hits: u64,
    /// Key the links are signed with.
    pub(super) key: u64,
}

impl ReceiptState {
    pub(super) fn new(key: u64) -> Self {
        Self {
            files: HashMap::new(),
            ttl: DEFAULT_RECEIPT_URL_TTL,
            expire_next: 0,
            downloads: HashMap::new(),
            expired_hits: 0,
            key,
        }
    }

    fn signature(&self, receipt_id: &str, date: &str, expires: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.key.to_be_bytes());
        h.update(format!("{receipt_id}\n{date}\n{expires}").as_bytes());
        format!("{:x}", h.finalize())
    }

    /// A fresh presigned link for a stored receipt.
    fn mint(&mut self, base: &str, receipt_id: &str) -> String {
        let expires = self.ttl.as_secs().max(1);
        let mut issued = Utc::now();
        if self.expire_next > 0 {
            self.expire_next -= 1;
            issued -= TimeDelta::seconds(expires as i64 + 60);
        }
        let date = issued.format(AMZ_DATE).to_string();
        let signature = self.signature(receipt_id, &date, expires);
        format!(
            "{base}/_files/receipts/{receipt_id}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={date}\
             &X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}"
        )
    }
}

/// Fills fresh `download_uris` into every receipt with a stored file (the links are minted per read).
pub(super) fn present_receipts(st: &mut SimState, base: &str, receipts: &mut [Receipt]) {
    for receipt in receipts {
        if st.receipts.files.contains_key(&receipt.id) {
            receipt.download_uris = Some(vec![st.receipts.mint(base, &receipt.id)]);
        }
    }
}

/// A record as a read returns it: with fresh receipt links.
pub(super) fn present_record(st: &mut SimState, base: &str, record: &AccountingRecord) -> AccountingRecord {
    let mut record = record.clone();
    if let Some(receipts) = record.receipts.as_mut() {
        present_receipts(st, base, receipts);
    }
    record
}

/// An expense's JSON with `receipts[]` links minted, when `expand[]=receipts.download_uris` asked for them.
pub(super) fn present_expense_receipts(st: &mut SimState, base: &str, expense: &mut Value, expand: bool) {
    let Some(list) = expense.get_mut("receipts") else { return };
    let Ok(mut receipts) = serde_json::from_value::<Vec<Receipt>>(list.clone()) else { return };
    if expand {
        present_receipts(st, base, &mut receipts);
    } else {
        receipts.iter_mut().for_each(|r| r.download_uris = None);
    }
    *list = serde_json::to_value(receipts).unwrap_or(Value::Null);
}

fn s3_error(code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (StatusCode::FORBIDDEN, [("content-type", "application/xml")], body).into_response()
}

/// `GET /_files/receipts/{id}?X-Amz-…`: the file, if the link is genuine and unexpired.
pub(super) async fn download(State(inner): Sim, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let query: HashMap<String, String> = parse_query(q.as_deref()).into_iter().collect();
    let (Some(date), Some(expires), Some(signature)) =
        (query.get("X-Amz-Date"), query.get("X-Amz-Expires"), query.get("X-Amz-Signature"))
    else {
        return s3_error("AccessDenied", "Query-string authentication requires the X-Amz parameters");
    };
    let mut st = inner.lock();
    let Ok(expires) = expires.parse::<u64>() else {
        return s3_error("AuthorizationQueryParametersError", "X-Amz-Expires");
    };
    if st.receipts.signature(&id, date, expires) != *signature {
        return s3_error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    let Ok(issued) = NaiveDateTime::parse_from_str(date, AMZ_DATE) else {
        return s3_error("AuthorizationQueryParametersError", "X-Amz-Date");
    };
    let until: DateTime<Utc> = issued.and_utc() + TimeDelta::seconds(expires as i64);
    if Utc::now() > until {
        st.receipts.expired_hits += 1;
        return s3_error("AccessDenied", "Request has expired");
    }
    let Some(file) = st.receipts.files.get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, [("content-type", "application/xml")], "<Error><Code>NoSuchKey</Code></Error>")
            .into_response();
    };
    *st.receipts.downloads.entry(id).or_default() += 1;
    (StatusCode::OK, [("content-type", file.content_type)], file.bytes).into_response()
}

// ---------------------------------------------------------------------------------------------------------
// Test-side access

impl BrexSimHandle {
    /// Adds a receipt (its file) to a record, as a bookkeeper uploading one does: the record's version and
    /// `updated_at` move on. False if the record is unknown.
    pub fn add_receipt(&self, record_id: &str, receipt_id: &str, content_type: &str, bytes: &[u8]) -> bool {
        let mut st = self.inner.lock();
        let Some(record) = st.records.get_mut(record_id) else { return false };
        record.receipts.get_or_insert_with(Vec::new).push(Receipt { id: receipt_id.to_owned(), download_uris: None });
        bump(record);
        st.receipts.files.insert(
            receipt_id.to_owned(),
            ReceiptFile { content_type: content_type.to_owned(), bytes: bytes.to_vec() },
        );
        true
    }

    /// Adds a receipt to an expense (its `receipts[]`, read with `expand[]=receipts.download_uris`). False if
    /// the expense is unknown.
    pub fn add_expense_receipt(&self, expense_id: &str, receipt_id: &str, content_type: &str, bytes: &[u8]) -> bool {
        let mut st = self.inner.lock();
        let Some(expense) = st.expenses.get_mut(expense_id) else { return false };
        let list = expense.extra.entry("receipts").or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = list {
            items.push(serde_json::json!({"id": receipt_id, "download_uris": null}));
        }
        expense.updated_at = super::state::now_micros().max(expense.updated_at + TimeDelta::microseconds(1));
        st.receipts.files.insert(
            receipt_id.to_owned(),
            ReceiptFile { content_type: content_type.to_owned(), bytes: bytes.to_vec() },
        );
        true
    }

    /// How long minted receipt links stay valid (default [`DEFAULT_RECEIPT_URL_TTL`]).
    pub fn set_receipt_url_ttl(&self, ttl: Duration) {
        self.inner.lock().receipts.ttl = ttl;
    }

    /// The next `n` receipt links minted are already expired, as if the read had been a quarter hour ago.
    pub fn expire_next_receipt_urls(&self, n: u32) {
        self.inner.lock().receipts.expire_next = n;
    }

    /// Successful downloads of one receipt.
    pub fn receipt_downloads(&self, receipt_id: &str) -> u64 {
        self.inner.lock().receipts.downloads.get(receipt_id).copied().unwrap_or(0)
    }

    /// Successful downloads of every receipt.
    pub fn total_receipt_downloads(&self) -> u64 {
        self.inner.lock().receipts.downloads.values().sum()
    }

    /// Downloads refused because their link had expired.
    pub fn expired_receipt_downloads(&self) -> u64 {
        self.inner.lock().receipts.expired_hits
    }
}
