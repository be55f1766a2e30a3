//! Brex as the receipt attacher's [`ReceiptSource`]: the receipts of records (`receipts[]` on
//! `GET /v3/accounting/records?ids=…`) and of expenses (`GET /v1/expenses/{id}` with
//! `expand[]=receipts.download_uris`), and the files behind their presigned URIs.
//!
//! The URIs are presigned S3-style links valid about 15 minutes: they carry their own authorization, so the
//! download goes out on a plain client, never with the Brex bearer token (S3 would refuse a second
//! authorization, and the token has no business outside Brex). S3 answers an expired link with 403 (some
//! stores with 410); both read as [`DownloadError::Expired`], which makes the attacher read the record again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;

use super::client::{BrexClient, Method, encode};
use super::error::BrexError;
use super::model::{Receipt, null_as_empty};
use crate::domain::Subject;
use crate::error::ExternalError;
use crate::ports::ReceiptSource;
use crate::receipts::{DownloadError, MAX_RECEIPT_BYTES, ReceiptFile, ReceiptRef};

/// Expense reads in flight at once (each still passes the Brex client's rate limiter).
const EXPENSE_CONCURRENCY: usize = 4;

/// Brex's receipts: read through the Brex client, downloaded on a client of their own.
#[derive(Debug, Clone)]
pub struct BrexReceipts {
    brex: Arc<BrexClient>,
    http: reqwest::Client,
}

impl BrexReceipts {
    pub fn new(brex: Arc<BrexClient>) -> Result<Self, BrexError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            // A presigned link points at the file itself; a redirect elsewhere is not followed blindly.
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("brex-ifs-connector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BrexError::InvalidRequest(format!("receipt HTTP client: {e}")))?;
        Ok(Self { brex, http })
    }

    async fn expense_receipts(&self, id: &crate::domain::ExpenseId) -> Result<Option<Vec<Receipt>>, BrexError> {
        const OP: &str = "expense_receipts";
        #[derive(Deserialize)]
        struct Receipts {
            #[serde(default, deserialize_with = "null_as_empty")]
            receipts: Vec<Receipt>,
        }
        let path = format!("/v1/expenses/{}?expand[]=receipts.download_uris", encode(id.as_str()));
        let answer = self.brex.execute(OP, &path, Method::Get).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        if !answer.is_success() {
            return Err(answer.into_error(OP));
        }
        Ok(Some(answer.json::<Receipts>(OP)?.receipts))
    }
}

fn refs(receipts: Vec<Receipt>) -> Vec<ReceiptRef> {
    receipts.into_iter().map(|r| ReceiptRef { id: r.id, download_uris: r.download_uris }).collect()
}

#[async_trait]
impl ReceiptSource for BrexReceipts {
    async fn receipts(&self, subjects: &[Subject]) -> Result<HashMap<Subject, Vec<ReceiptRef>>, ExternalError> {
        let (record_ids, expense_ids) = Subject::split(subjects);
        let mut out = HashMap::new();
        if !record_ids.is_empty() {
            let fetch = self.brex.records_by_ids(&record_ids).await?;
            for record in fetch.records {
                out.insert(Subject::Record(record.id.clone()), refs(record.receipts));
            }
        }
        let answers: Vec<_> = futures::stream::iter(expense_ids)
            .map(|id| async move {
                let receipts = self.expense_receipts(&id).await;
                (id, receipts)
            })
            .buffered(EXPENSE_CONCURRENCY)
            .collect()
            .await;
        for (id, receipts) in answers {
            if let Some(receipts) = receipts? {
                out.insert(Subject::Expense(id), refs(receipts));
            }
        }
        Ok(out)
    }

    async fn download(&self, receipt_id: &str, uri: &str) -> Result<ReceiptFile, DownloadError> {
        let failed = |message: String| DownloadError::Failed { message };
        let url = url::Url::parse(uri).map_err(|e| failed(format!("bad receipt URI: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(failed(format!("receipt URI scheme {:?} refused", url.scheme())));
        }
        // The query is the signature: never logged.
        let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
        let resp = self.http.get(url).send().await.map_err(|e| failed(format!("{shown}: {e}")))?;
        let status = resp.status().as_u16();
        if status == 403 || status == 410 {
            return Err(DownloadError::Expired { status });
        }
        if !resp.status().is_success() {
            return Err(failed(format!("{shown} answered {status}")));
        }
        if resp.content_length().is_some_and(|n| n > MAX_RECEIPT_BYTES as u64) {
            return Err(failed(format!("{shown}: larger than {MAX_RECEIPT_BYTES} bytes")));
        }
        let content_type =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut resp = resp;
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| failed(format!("{shown}: {e}")))? {
            if bytes.len() + chunk.len() > MAX_RECEIPT_BYTES {
                return Err(failed(format!("{shown}: larger than {MAX_RECEIPT_BYTES} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(ReceiptFile::new(receipt_id, content_type.as_deref(), bytes))
    }
}
