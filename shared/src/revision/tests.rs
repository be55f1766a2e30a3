use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::*;
use crate::domain::{AccountCode, CompanyCode, CurrencyCode, VoucherType};
use crate::proposal::{Side, VoucherStatus};

fn row(account: &str, side: Side, amount: &str, text: &str) -> ProposalRow {
    ProposalRow {
        account: AccountCode::parse(account).unwrap(),
        code_parts: Default::default(),
        side,
        amount: amount.parse::<Decimal>().unwrap(),
        currency: CurrencyCode::parse("USD").unwrap(),
        currency_rate: None,
        text: text.into(),
    }
}

fn proposal(amount: &str, memo: &str) -> Proposal {
    Proposal {
        reference_number: ReferenceNumber::parse("accr_1").unwrap(),
        reference_serie: "BREX".into(),
        source_version: 2,
        company: CompanyCode::parse("10").unwrap(),
        voucher_type: VoucherType::parse("M").unwrap(),
        voucher_status: VoucherStatus::NotApproved,
        voucher_date: NaiveDate::from_ymd_opt(2026, 6, 11).unwrap(),
        text: memo.into(),
        rows: vec![row("6500", Side::Debit, amount, memo), row("2410", Side::Credit, amount, memo)],
    }
}

fn posted() -> PostedVersion {
    PostedVersion { version: 2, voucher: "10-2026-M-1".into(), proposal: proposal("171.75", "Flight") }
}

#[test]
fn a_memo_or_a_trailing_zero_is_no_change_an_amount_is() {
    let old = posted();
    assert!(same_booking(&old.proposal, &proposal("171.750", "Flight to SFO, receipt attached")));
    assert!(!same_booking(&old.proposal, &proposal("180.00", "Flight")));
    let mut recoded = proposal("171.75", "Flight");
    recoded.rows[0].account = AccountCode::parse("6510").unwrap();
    assert!(!same_booking(&old.proposal, &recoded));
    let mut reordered = proposal("171.75", "Flight");
    reordered.rows.reverse();
    assert!(same_booking(&old.proposal, &reordered), "row order is not booking");
}

#[test]
fn the_policy_decides_only_for_a_newer_version_that_books_something_else() {
    let old = posted();
    let changed = proposal("180.00", "Flight");
    for policy in ChangedAfterExport::ALL {
        assert_eq!(decide(&old, 2, &changed, policy), Decision::Unchanged, "same version");
        assert_eq!(decide(&old, 5, &proposal("171.75", "memo"), policy), Decision::Unchanged, "memo only");
    }
    assert_eq!(decide(&old, 3, &changed, ChangedAfterExport::Replace), Decision::Revise(ChangedAfterExport::Replace));
    assert_eq!(decide(&old, 3, &changed, ChangedAfterExport::Reverse), Decision::Revise(ChangedAfterExport::Reverse));
    match decide(&old, 3, &changed, ChangedAfterExport::Hold) {
        Decision::Hold { reason, fix } => {
            assert!(reason.contains("version 2") && reason.contains("version 3"), "{reason}");
            assert!(reason.contains("10-2026-M-1") && reason.contains("180.00 USD"), "{reason}");
            assert!(fix.contains("version 2") && fix.contains("version 3") && fix.contains("replay"), "{fix}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reversal_swaps_every_side_and_marks_its_reference() {
    let old = posted();
    let date = NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
    let rev = reversal(&old, date).unwrap();
    assert_eq!(rev.reference_number.as_str(), "accr_1-R");
    assert_eq!(rev.voucher_date, date);
    assert_eq!(rev.rows.iter().map(|r| r.side).collect::<Vec<_>>(), [Side::Credit, Side::Debit]);
    assert!(rev.rows.iter().all(|r| r.amount == old.proposal.rows[0].amount));
    assert!(rev.text.starts_with("Reversal of 10-2026-M-1"), "{}", rev.text);
    assert_eq!(rev.totals(), old.proposal.totals(), "still balanced");
    let subject = Subject::Record(crate::domain::AccountingRecordId::parse("accr_1").unwrap());
    assert_eq!(revision_reference(&subject, 3).unwrap().as_str(), "accr_1-v3");
    let long = Subject::Record(crate::domain::AccountingRecordId::parse(&"a".repeat(49)).unwrap());
    assert_eq!(revision_reference(&long, 3).unwrap_err().disposition, Disposition::Hold, "no room: a person decides");
}
