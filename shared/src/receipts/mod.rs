//! Receipts beside the voucher: after a subject's voucher exists (newly posted, or found already posted on a
//! redelivery), each receipt Brex holds for it is downloaded at once (its URIs are presigned for ~15
//! minutes), hashed (SHA-256) and attached to the voucher in IFS document management, unless a file with
//! that hash is already recorded as attached to that voucher. The record of what is attached lives in the
//! table (per voucher), so each file is attached once across redeliveries, replays, and the two sources of
//! one spend (an expense and its accounting record share a voucher).
//!
//! A failed attachment never touches the posting: the subject stays COMPLETED and EXPORTED. It is logged
//! (`outcome = "attachment_failed"`) and reported in [`AttachReport::pending`]; the poster returns its
//! message to SQS with backoff, and the redelivery (the subject is COMPLETED, so nothing is posted again)
//! comes back here and attaches what is still missing. A receipt added in Brex after the export arrives the
//! same way: the record comes back (webhook, poll or replay), and the file not yet recorded is attached.
//!
//! Requests per receipt: one download (from S3, outside Brex's rate limit), two IFS requests (the document
//! reference, then its file data), one DynamoDB write; per batch, one Brex read of the subjects' receipts
//! and one DynamoDB query per voucher. A receipt already recorded (by its Brex id) costs nothing more.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::Subject;
use crate::ifs::IfsApiNames;
use crate::ports::{AttachedReceipts, AttachmentStore, Clock, ReceiptSource};

/// Largest receipt file taken (Brex's own upload limit is far below; a bigger answer is not a receipt).
pub const MAX_RECEIPT_BYTES: usize = 25 * 1024 * 1024;

/// A receipt as Brex lists it on a record or expense: its id and the presigned URIs it can be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRef {
    pub id: String,
    pub download_uris: Vec<String>,
}

/// A downloaded receipt file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptFile {
    /// The Brex receipt id it came from.
    pub receipt_id: String,
    /// The file name given to IFS: `brex-<receipt id>.<ext>`, the extension from the content type.
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl ReceiptFile {
    pub fn new(receipt_id: &str, content_type: Option<&str>, bytes: Vec<u8>) -> Self {
        let content_type = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "application/octet-stream".into());
        let ext = match content_type.as_str() {
            "application/pdf" => "pdf",
            "image/jpeg" | "image/jpg" => "jpg",
            "image/png" => "png",
            "image/heic" => "heic",
            "image/gif" => "gif",
            "image/tiff" => "tiff",
            "image/webp" => "webp",
            "text/html" => "html",
            "text/plain" => "txt",
            _ => "bin",
        };
        // Receipt ids are Brex tokens; anything else is replaced so the name is safe in IFS and in a path.
        let safe: String = receipt_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
            .collect();
        Self { receipt_id: receipt_id.to_owned(), name: format!("brex-{safe}.{ext}"), content_type, bytes }
    }

    /// Lowercase hex SHA-256 of the content.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.bytes)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Why a download failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DownloadError {
    /// The presigned URI is past its expiry (S3 answers 403 or 410): the record must be read again for
    /// fresh URIs.
    #[error("receipt URI expired (HTTP {status})")]
    Expired { status: u16 },
    /// Anything else (the file is gone, the storage is down, the answer is too big …).
    #[error("receipt download failed: {message}")]
    Failed { message: String },
}

/// One file attached to a voucher, as recorded in the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedReceipt {
    /// Lowercase hex SHA-256 of the file: what "already attached" is decided on.
    pub sha256: String,
    pub receipt_id: String,
    pub name: String,
    pub size: u64,
    /// The Brex subject it came with (a spend posted as expense and record shares one voucher).
    pub subject: String,
    pub attached_at: DateTime<Utc>,
}

/// What one batch's receipts came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachReport {
    /// Files attached now, per subject.
    pub attached: BTreeMap<Subject, Vec<AttachedReceipt>>,
    /// Receipts found attached already (by receipt id or by hash), per subject.
    pub already: BTreeMap<Subject, usize>,
    /// Receipts that could not be attached: subject → (receipt id, why). Their messages come back.
    pub failed: BTreeMap<Subject, Vec<(String, String)>>,
    /// Brex downloads made (expired ones included).
    pub downloads: usize,
    /// Records read again from Brex for fresh URIs after one expired.
    pub refetched: usize,
}

impl AttachReport {
    /// Subjects with something still to attach.
    pub fn pending(&self) -> BTreeSet<Subject> {
        self.failed.keys().cloned().collect()
    }
}

/// Attaches the receipts of posted subjects to their vouchers.
pub struct ReceiptAttacher {
    pub source: Arc<dyn ReceiptSource>,
    pub ifs: Arc<dyn AttachmentStore>,
    pub attached: Arc<dyn AttachedReceipts>,
    pub clock: Arc<dyn Clock>,
    /// How long the record of an attachment is kept (as long as the subject's idempotency record).
    pub retention: Duration,
}

/// A receipt on its way: whom it belongs to, where to read it.
struct Pending {
    subject: Subject,
    voucher: String,
    receipt: ReceiptRef,
}

impl ReceiptAttacher {
    /// Attaches every receipt of `vouchers` (subject → voucher key) not attached yet. `api` names the IFS
    /// document-management projection of the mapping in force.
    pub async fn attach(&self, vouchers: &BTreeMap<Subject, String>, api: &IfsApiNames) -> AttachReport {
        let mut report = AttachReport::default();
        let vouchers: BTreeMap<Subject, String> =
            vouchers.iter().filter(|(_, v)| !v.is_empty()).map(|(s, v)| (s.clone(), v.clone())).collect();
        if vouchers.is_empty() {
            return report;
        }
        self.ifs.use_api(api);
        let subjects: Vec<Subject> = vouchers.keys().cloned().collect();
        // Read now, so the URIs are minutes old at most when downloaded.
        let receipts = match self.source.receipts(&subjects).await {
            Ok(r) => r,
            Err(e) => {
                for subject in &subjects {
                    self.failed(&mut report, subject, &vouchers[subject], "*", &format!("reading receipts: {e}"));
                }
                return report;
            }
        };
        // What each voucher already has: by hash, and by the Brex receipt id it came from.
        let mut known: HashMap<String, Vec<AttachedReceipt>> = HashMap::new();
        let mut todo = Vec::new();
        for (subject, voucher) in &vouchers {
            let Some(list) = receipts.get(subject).filter(|l| !l.is_empty()) else { continue };
            if !known.contains_key(voucher) {
                match self.attached.attached(voucher).await {
                    Ok(done) => {
                        known.insert(voucher.clone(), done);
                    }
                    Err(e) => {
                        self.failed(&mut report, subject, voucher, "*", &format!("reading attached receipts: {e}"));
                        continue;
                    }
                }
            }
            let done = &known[voucher];
            for receipt in list {
                // The same Brex receipt is the same file: skip it without downloading it again.
                if done.iter().any(|a| a.receipt_id == receipt.id) {
                    *report.already.entry(subject.clone()).or_default() += 1;
                    continue;
                }
                todo.push(Pending { subject: subject.clone(), voucher: voucher.clone(), receipt: receipt.clone() });
            }
        }
        let mut expired = Vec::new();
        for p in todo {
            match self.download(&p.receipt, &mut report).await {
                Ok(file) => self.attach_one(&p, file, &mut known, &mut report).await,
                Err(DownloadError::Expired { .. }) => expired.push(p),
                Err(e) => self.failed(&mut report, &p.subject, &p.voucher, &p.receipt.id, &e.to_string()),
            }
        }
        if !expired.is_empty() {
            self.retry_expired(expired, &mut known, &mut report).await;
        }
        report
    }

    /// Reads the records of expired receipts again (fresh URIs) and tries each once more.
    async fn retry_expired(
        &self,
        expired: Vec<Pending>,
        known: &mut HashMap<String, Vec<AttachedReceipt>>,
        report: &mut AttachReport,
    ) {
        let mut subjects: Vec<Subject> = expired.iter().map(|p| p.subject.clone()).collect();
        subjects.sort();
        subjects.dedup();
        report.refetched += subjects.len();
        tracing::info!(subjects = subjects.len(), receipts = expired.len(), "receipt URIs expired: reading fresh ones");
        let fresh = match self.source.receipts(&subjects).await {
            Ok(fresh) => fresh,
            Err(e) => {
                for p in &expired {
                    let why = format!("URI expired and the record could not be read again: {e}");
                    self.failed(report, &p.subject, &p.voucher, &p.receipt.id, &why);
                }
                return;
            }
        };
        for mut p in expired {
            let Some(receipt) = fresh.get(&p.subject).and_then(|l| l.iter().find(|r| r.id == p.receipt.id)) else {
                // Removed from the record in the meantime: nothing to attach.
                tracing::info!(subject = %p.subject, receipt = %p.receipt.id, "receipt no longer on the record");
                continue;
            };
            p.receipt = receipt.clone();
            match self.download(&p.receipt, report).await {
                Ok(file) => self.attach_one(&p, file, known, report).await,
                Err(e) => self.failed(report, &p.subject, &p.voucher, &p.receipt.id, &e.to_string()),
            }
        }
    }

    /// Tries the receipt's URIs in turn; an expired one counts only when none works.
    async fn download(&self, receipt: &ReceiptRef, report: &mut AttachReport) -> Result<ReceiptFile, DownloadError> {
        let mut last = DownloadError::Failed { message: "Brex gave no download URI".into() };
        for uri in &receipt.download_uris {
            report.downloads += 1;
            match self.source.download(&receipt.id, uri).await {
                Ok(file) => return Ok(file),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn attach_one(
        &self,
        p: &Pending,
        file: ReceiptFile,
        known: &mut HashMap<String, Vec<AttachedReceipt>>,
        report: &mut AttachReport,
    ) {
        let sha256 = file.sha256();
        let done = known.entry(p.voucher.clone()).or_default();
        if done.iter().any(|a| a.sha256 == sha256) {
            tracing::info!(subject = %p.subject, voucher = %p.voucher, receipt = %p.receipt.id, %sha256,
                outcome = "attachment_exists", "receipt already attached to the voucher");
            *report.already.entry(p.subject.clone()).or_default() += 1;
            return;
        }
        if let Err(e) = self.ifs.attach(&p.voucher, &file).await {
            self.failed(report, &p.subject, &p.voucher, &p.receipt.id, &format!("attaching in IFS: {e}"));
            return;
        }
        let now = self.clock.now();
        let entry = AttachedReceipt {
            sha256: sha256.clone(),
            receipt_id: p.receipt.id.clone(),
            name: file.name.clone(),
            size: file.bytes.len() as u64,
            subject: p.subject.to_string(),
            attached_at: now,
        };
        if let Err(e) = self.attached.record(&p.voucher, &entry, now + self.retention).await {
            // Attached but not recorded: the retry would attach it a second time, which is better than
            // losing it; say so loudly.
            tracing::error!(subject = %p.subject, voucher = %p.voucher, receipt = %p.receipt.id, %sha256, error = %e,
                outcome = "attachment_unrecorded", "receipt attached in IFS but not recorded");
        }
        tracing::info!(subject = %p.subject, voucher = %p.voucher, receipt = %p.receipt.id, %sha256,
            size = entry.size, name = %entry.name, outcome = "attached", "receipt attached to the voucher");
        done.push(entry.clone());
        report.attached.entry(p.subject.clone()).or_default().push(entry);
    }

    fn failed(&self, report: &mut AttachReport, subject: &Subject, voucher: &str, receipt: &str, why: &str) {
        // `record_id` names the Brex id whichever kind the subject is, for the log queries.
        tracing::error!(%subject, record_id = %subject, voucher, receipt, reason = why,
            outcome = "attachment_failed", "receipt not attached; the voucher stands, the attachment is retried");
        report.failed.entry(subject.clone()).or_default().push((receipt.to_owned(), why.to_owned()));
    }
}

#[cfg(test)]
mod tests;
