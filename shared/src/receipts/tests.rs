use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::domain::AccountingRecordId;
use crate::error::{Disposition, ExternalError};
use crate::memory::{ManualClock, MemoryStore};
use crate::ports::{AttachedReceipts, AttachmentStore, ReceiptSource};

/// Brex: receipts per subject; a URI is `uri:<receipt>:<generation>`, and generations below `fresh_from`
/// are expired (a read of the receipts bumps the generation, as fresh presigned URIs would).
#[derive(Default)]
struct FakeBrex {
    receipts: Mutex<HashMap<Subject, Vec<String>>>,
    files: Mutex<HashMap<String, Vec<u8>>>,
    generation: AtomicU32,
    fresh_from: AtomicU32,
    broken: Mutex<HashSet<String>>,
    reads: AtomicU32,
    downloads: AtomicU32,
}

impl FakeBrex {
    fn give(&self, subject: &Subject, receipt: &str, bytes: &[u8]) {
        self.receipts.lock().unwrap().entry(subject.clone()).or_default().push(receipt.to_owned());
        self.files.lock().unwrap().insert(receipt.to_owned(), bytes.to_vec());
    }
}

#[async_trait]
impl ReceiptSource for FakeBrex {
    async fn receipts(&self, subjects: &[Subject]) -> Result<HashMap<Subject, Vec<ReceiptRef>>, ExternalError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst);
        let all = self.receipts.lock().unwrap();
        Ok(subjects
            .iter()
            .filter_map(|s| all.get(s).map(|ids| (s, ids)))
            .map(|(s, ids)| {
                let refs = ids
                    .iter()
                    .map(|id| ReceiptRef { id: id.clone(), download_uris: vec![format!("uri:{id}:{generation}")] })
                    .collect();
                (s.clone(), refs)
            })
            .collect())
    }

    async fn download(&self, receipt_id: &str, uri: &str) -> Result<ReceiptFile, DownloadError> {
        self.downloads.fetch_add(1, Ordering::SeqCst);
        let generation: u32 = uri.rsplit(':').next().unwrap().parse().unwrap();
        if generation < self.fresh_from.load(Ordering::SeqCst) {
            return Err(DownloadError::Expired { status: 403 });
        }
        if self.broken.lock().unwrap().contains(receipt_id) {
            return Err(DownloadError::Failed { message: "404".into() });
        }
        let bytes = self.files.lock().unwrap().get(receipt_id).cloned().unwrap();
        Ok(ReceiptFile::new(receipt_id, Some("application/pdf"), bytes))
    }
}

#[derive(Default)]
struct FakeIfs {
    fail_next: AtomicU32,
    files: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl AttachmentStore for FakeIfs {
    fn use_api(&self, _api: &IfsApiNames) {}

    async fn attach(&self, voucher: &str, file: &ReceiptFile) -> Result<(), ExternalError> {
        if self.fail_next.load(Ordering::SeqCst) > 0 {
            self.fail_next.fetch_sub(1, Ordering::SeqCst);
            return Err(ExternalError::new("IFS", "503 Service Unavailable", Disposition::Retryable));
        }
        self.files.lock().unwrap().push((voucher.to_owned(), file.sha256()));
        Ok(())
    }
}

struct Rig {
    brex: Arc<FakeBrex>,
    ifs: Arc<FakeIfs>,
    store: MemoryStore,
    attacher: ReceiptAttacher,
}

fn rig() -> Rig {
    let brex = Arc::new(FakeBrex::default());
    let ifs = Arc::new(FakeIfs::default());
    let store = MemoryStore::new();
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()));
    let attacher = ReceiptAttacher {
        source: brex.clone(),
        ifs: ifs.clone(),
        attached: Arc::new(store.clone()),
        clock,
        retention: Duration::days(400),
    };
    Rig { brex, ifs, store, attacher }
}

fn record(id: &str) -> Subject {
    Subject::Record(AccountingRecordId::parse(id).unwrap())
}

fn vouchers(pairs: &[(&Subject, &str)]) -> BTreeMap<Subject, String> {
    pairs.iter().map(|(s, v)| ((*s).clone(), (*v).to_owned())).collect()
}

#[tokio::test]
async fn each_receipt_is_attached_once_across_redeliveries() {
    let r = rig();
    let a = record("accr_a");
    r.brex.give(&a, "rcpt_1", b"one");
    r.brex.give(&a, "rcpt_2", b"two");
    let v = vouchers(&[(&a, "10-2026-M-1")]);
    let first = r.attacher.attach(&v, &IfsApiNames::default()).await;
    assert_eq!(first.attached[&a].len(), 2);
    assert!(first.pending().is_empty());
    assert_eq!(r.ifs.files.lock().unwrap().len(), 2);
    let recorded = r.store.attached("10-2026-M-1").await.unwrap();
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().any(|x| x.sha256 == sha256_hex(b"one") && x.receipt_id == "rcpt_1" && x.size == 3));

    let downloads = r.brex.downloads.load(Ordering::SeqCst);
    let again = r.attacher.attach(&v, &IfsApiNames::default()).await;
    assert!(again.attached.is_empty());
    assert_eq!(again.already[&a], 2);
    assert_eq!(r.brex.downloads.load(Ordering::SeqCst), downloads, "a recorded receipt is not downloaded again");
    assert_eq!(r.ifs.files.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_same_file_on_two_subjects_of_one_voucher_is_attached_once() {
    let r = rig();
    let (a, b) = (record("accr_a"), Subject::parse("expense_b").unwrap());
    r.brex.give(&a, "rcpt_1", b"same");
    r.brex.give(&b, "rcpt_9", b"same");
    let report =
        r.attacher.attach(&vouchers(&[(&a, "10-2026-M-1"), (&b, "10-2026-M-1")]), &IfsApiNames::default()).await;
    assert_eq!(report.attached.values().map(Vec::len).sum::<usize>(), 1);
    assert_eq!(report.already.values().sum::<usize>(), 1);
    assert_eq!(r.ifs.files.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_expired_uri_is_read_again_and_retried_once() {
    let r = rig();
    let a = record("accr_a");
    r.brex.give(&a, "rcpt_1", b"one");
    // Every URI of the first read is expired by the time it is used.
    r.brex.fresh_from.store(1, Ordering::SeqCst);
    let report = r.attacher.attach(&vouchers(&[(&a, "10-2026-M-1")]), &IfsApiNames::default()).await;
    assert_eq!(report.refetched, 1);
    assert_eq!(report.downloads, 2);
    assert_eq!(report.attached[&a].len(), 1);
    assert_eq!(r.brex.reads.load(Ordering::SeqCst), 2);

    // Expired again after the second read: given up for this delivery, pending.
    let b = record("accr_b");
    r.brex.give(&b, "rcpt_2", b"two");
    r.brex.fresh_from.store(100, Ordering::SeqCst);
    let report = r.attacher.attach(&vouchers(&[(&b, "10-2026-M-2")]), &IfsApiNames::default()).await;
    assert_eq!(report.pending(), [b.clone()].into());
    assert_eq!(report.refetched, 1, "one re-read only");
}

#[tokio::test]
async fn a_failed_attachment_is_pending_and_the_next_run_attaches_only_what_is_missing() {
    let r = rig();
    let a = record("accr_a");
    r.brex.give(&a, "rcpt_1", b"one");
    r.brex.give(&a, "rcpt_2", b"two");
    r.ifs.fail_next.store(1, Ordering::SeqCst);
    let v = vouchers(&[(&a, "10-2026-M-1")]);
    let first = r.attacher.attach(&v, &IfsApiNames::default()).await;
    assert_eq!(first.pending(), [a.clone()].into());
    assert_eq!(first.attached[&a].len(), 1);
    let second = r.attacher.attach(&v, &IfsApiNames::default()).await;
    assert!(second.pending().is_empty());
    assert_eq!(second.attached[&a].len(), 1);
    assert_eq!(second.already[&a], 1);
    let files = r.ifs.files.lock().unwrap().clone();
    assert_eq!(files.len(), 2);
    assert_ne!(files[0].1, files[1].1);
}

#[tokio::test]
async fn a_broken_download_is_pending_and_subjects_without_receipts_cost_nothing() {
    let r = rig();
    let (a, b) = (record("accr_a"), record("accr_b"));
    r.brex.give(&a, "rcpt_1", b"one");
    r.brex.broken.lock().unwrap().insert("rcpt_1".into());
    let report =
        r.attacher.attach(&vouchers(&[(&a, "10-2026-M-1"), (&b, "10-2026-M-2")]), &IfsApiNames::default()).await;
    assert_eq!(report.pending(), [a].into());
    assert_eq!(report.refetched, 0, "only an expired URI is worth a re-read");
    assert!(r.ifs.files.lock().unwrap().is_empty());
    let none = r.attacher.attach(&BTreeMap::new(), &IfsApiNames::default()).await;
    assert_eq!(none, AttachReport::default());
    assert_eq!(r.brex.reads.load(Ordering::SeqCst), 1, "no vouchers, no Brex read");
}

#[test]
fn file_names_follow_the_content_type_and_stay_safe() {
    let f = ReceiptFile::new("rcpt_1", Some("image/jpeg; charset=binary"), vec![1]);
    assert_eq!((f.name.as_str(), f.content_type.as_str()), ("brex-rcpt_1.jpg", "image/jpeg"));
    let f = ReceiptFile::new("../x y", None, vec![]);
    assert_eq!((f.name.as_str(), f.content_type.as_str()), ("brex-___x_y.bin", "application/octet-stream"));
    assert_eq!(f.sha256(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
