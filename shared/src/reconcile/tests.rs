//! The comparison on in-memory fakes: each kind of difference found with its fix, nothing on agreement.

use std::collections::BTreeSet;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::TimeZone;
use rust_decimal::Decimal;

use super::*;
use crate::brex::model::AccountingRecord;
use crate::domain::ExpenseId;
use crate::ports::{ExportOutcome, FetchedExpenses, FetchedRecords};

struct Ifs(Vec<PostedVoucher>);

#[async_trait]
impl VoucherListing for Ifs {
    async fn vouchers_in_serie(&self, _serie: &str) -> Result<Vec<PostedVoucher>, ExternalError> {
        Ok(self.0.clone())
    }
}

struct Table(Vec<CompletedSubject>);

#[async_trait]
impl CompletedSubjects for Table {
    async fn completed_subjects(&self) -> Result<Vec<CompletedSubject>, AwsError> {
        Ok(self.0.clone())
    }
}

struct Brex {
    amounts: HashMap<String, Decimal>,
    calls: Mutex<Vec<usize>>,
}

#[async_trait]
impl RecordSource for Brex {
    async fn fetch_records(&self, ids: &[AccountingRecordId]) -> Result<FetchedRecords, ExternalError> {
        self.calls.lock().unwrap().push(ids.len());
        let records = ids
            .iter()
            .filter_map(|id| self.amounts.get(id.as_str()).map(|a| (id, *a)))
            .map(|(id, amount)| {
                let json = serde_json::json!({
                    "id": id.as_str(), "amount": {"amount": amount.to_string(), "currency": "USD"},
                    "type": "CARD_EXPENSE_POST", "review_status": "EXPORTED", "source_type": "CARD",
                    "line_items": [], "created_at": "2026-11-01T00:00:00Z", "updated_at": "2026-11-01T00:00:00Z",
                    "version": 1, "posted_at": "2026-11-01T00:00:00Z"
                });
                serde_json::from_value::<AccountingRecord>(json).unwrap()
            })
            .collect();
        Ok(FetchedRecords { records, ..FetchedRecords::default() })
    }
    async fn fetch_expenses(&self, _ids: &[ExpenseId]) -> Result<FetchedExpenses, ExternalError> {
        unreachable!("expenses are not fetched")
    }
    async fn report_export_results(&self, _results: &[ExportOutcome]) -> Result<(), ExternalError> {
        unreachable!("reconciliation writes nothing to Brex")
    }
}

fn voucher(key: &str, reference: &str, total: &str) -> PostedVoucher {
    let total: Decimal = total.parse().unwrap();
    PostedVoucher {
        key: key.into(),
        references: BTreeSet::from([reference.to_owned()]),
        currencies: BTreeSet::from(["USD".to_owned()]),
        debit_total: total,
        credit_total: total,
        rows: 2,
    }
}

fn completed(id: &str, voucher: &str) -> CompletedSubject {
    CompletedSubject {
        subject: Subject::parse(id).unwrap(),
        voucher: voucher.into(),
        updated_at: Some(Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap()),
    }
}

fn doc() -> MappingDocument {
    MappingDocument::parse(
        "[ifs]\ncompany = \"10\"\nvoucher_type = \"M\"\nreference_serie = \"BREX\"\ncredit_account = \"2410\"\n",
    )
    .unwrap()
}

#[tokio::test]
async fn each_kind_of_difference_is_found_with_its_fix() {
    let ifs = Ifs(vec![
        voucher("10-2026-M-1", "accr_a", "10.00"),
        voucher("10-2026-M-2", "accr_b", "20.01"),
        voucher("10-2026-M-4", "accr_manual", "5"),
        voucher("10-2026-M-5", "exp_1", "7"),
    ]);
    let table = Table(vec![
        completed("accr_a", "10-2026-M-1"),
        completed("accr_b", "10-2026-M-2"),
        completed("accr_c", "10-2026-M-3"),
        completed("exp_1", "10-2026-M-5"),
    ]);
    let brex = Brex {
        amounts: HashMap::from([("accr_a".into(), "10".parse().unwrap()), ("accr_b".into(), "20".parse().unwrap())]),
        calls: Mutex::new(Vec::new()),
    };
    let r = Reconciler::new(Arc::new(ifs), Arc::new(table), Arc::new(brex));
    let since = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let report = r.run(&doc(), since).await.unwrap();
    let got: Vec<(DifferenceKind, Option<&str>, &str)> =
        report.differences.iter().map(|d| (d.kind, d.subject.as_deref(), d.voucher.as_str())).collect();
    assert_eq!(
        got,
        [
            (DifferenceKind::MissingVoucher, Some("accr_c"), "10-2026-M-3"),
            (DifferenceKind::ExtraVoucher, Some("accr_manual"), "10-2026-M-4"),
            (DifferenceKind::AmountMismatch, Some("accr_b"), "10-2026-M-2"),
        ]
    );
    assert!(report.differences[0].fix.contains("connector replay --completed accr_c"), "{:?}", report.differences[0]);
    assert!(report.differences[1].fix.contains("remove or reverse it"), "{:?}", report.differences[1]);
    assert!(report.differences[2].detail.contains("record 20 USD"), "{:?}", report.differences[2]);
    assert_eq!((report.subjects_checked, report.amounts_checked, report.vouchers_in_ifs), (4, 2, 4));
    assert_eq!(report.counts().values().sum::<usize>(), 3);
}

#[tokio::test]
async fn agreement_reports_nothing_and_old_vouchers_are_not_extra() {
    let ifs = Ifs(vec![voucher("10-2026-M-1", "accr_old", "3"), voucher("10-2026-M-2", "accr_new", "4")]);
    let mut old = completed("accr_old", "10-2026-M-1");
    old.updated_at = Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap());
    let table = Table(vec![old, completed("accr_new", "10-2026-M-2")]);
    let brex =
        Brex { amounts: HashMap::from([("accr_new".into(), "4".parse().unwrap())]), calls: Mutex::new(Vec::new()) };
    let r = Reconciler::new(Arc::new(ifs), Arc::new(table), Arc::new(brex));
    let report = r.run(&doc(), Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.differences);
    assert_eq!(report.subjects_checked, 1, "only the window is checked");
}
