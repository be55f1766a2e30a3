//! Checks a proposal against IFS's chart of accounts before anything is posted, so a bad account or a
//! missing cost centre becomes a clear mapping error instead of a half-built voucher in IFS.

use std::collections::HashMap;

use super::error::MappingError;
use crate::domain::AccountCode;
use crate::ports::{AccountInfo, ChartOfAccounts, Demand};
use crate::proposal::{CodePart, Proposal};

/// The closed-period policy ([`super::period::settle_period`]), then [`validate_proposal`] on the date the
/// voucher will carry. `Some(note)` when the date was moved, for the audit trail.
pub async fn check_proposal(
    proposal: &mut Proposal,
    closed_period: super::ClosedPeriodPolicy,
    chart: &dyn ChartOfAccounts,
) -> Result<Option<String>, MappingError> {
    let note = super::period::settle_period(proposal, closed_period, chart).await?;
    validate_proposal(proposal, chart).await?;
    Ok(note)
}

/// Every row's account exists in the proposal's company and is valid on the voucher date; every code part
/// the account demands is set and none it blocks is. Stops at the first problem (rows in order, from 1).
/// A code part the chart says nothing about counts as optional: IFS has the last word when posting.
pub async fn validate_proposal(proposal: &Proposal, chart: &dyn ChartOfAccounts) -> Result<(), MappingError> {
    let record = &proposal.reference_number;
    let mut seen: HashMap<&AccountCode, AccountInfo> = HashMap::new();
    for (i, row) in proposal.rows.iter().enumerate() {
        let number = i + 1;
        let info = match seen.get(&row.account) {
            Some(info) => info.clone(),
            None => {
                let found = chart
                    .account(&proposal.company, &row.account)
                    .await
                    .map_err(|source| MappingError::Chart { record: record.clone(), source })?;
                let Some(info) = found else {
                    return Err(MappingError::UnknownAccount {
                        record: record.clone(),
                        row: number,
                        company: proposal.company.clone(),
                        account: row.account.clone(),
                    });
                };
                seen.insert(&row.account, info.clone());
                info
            }
        };
        if !info.is_valid_on(proposal.voucher_date) {
            let validity = match (info.valid_from, info.valid_until) {
                (Some(from), Some(until)) => format!("valid {from} to {until}"),
                (Some(from), None) => format!("valid from {from}"),
                (None, Some(until)) => format!("valid until {until}"),
                (None, None) => "no validity period".to_owned(),
            };
            return Err(MappingError::AccountNotValid {
                record: record.clone(),
                row: number,
                account: row.account.clone(),
                date: proposal.voucher_date,
                validity,
            });
        }
        for part in CodePart::ALL {
            let value = row.code_parts.get(&part);
            match (info.demands.get(&part), value) {
                (Some(Demand::Mandatory), None) => {
                    return Err(MappingError::MissingCodePart {
                        record: record.clone(),
                        row: number,
                        account: row.account.clone(),
                        description: info.description.clone(),
                        part,
                    });
                }
                (Some(Demand::Blocked), Some(value)) => {
                    return Err(MappingError::BlockedCodePart {
                        record: record.clone(),
                        row: number,
                        account: row.account.clone(),
                        description: info.description.clone(),
                        part,
                        value: value.as_str().to_owned(),
                    });
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::str::FromStr;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::NaiveDate;
    use rust_decimal::Decimal;

    use super::*;
    use crate::domain::{CodePartValue, CompanyCode, CurrencyCode};
    use crate::error::ExternalError;
    use crate::error::{Classify, Disposition};
    use crate::proposal::{ProposalRow, Side, VoucherStatus};

    /// The simulator's demo chart, for company 10 only, counting lookups.
    struct FakeChart {
        accounts: Vec<AccountInfo>,
        lookups: Mutex<Vec<String>>,
        fail: Option<Disposition>,
    }

    fn info(account: &str, description: &str, demands: &[(CodePart, Demand)]) -> AccountInfo {
        AccountInfo {
            company: CompanyCode::parse("10").unwrap(),
            account: AccountCode::parse(account).unwrap(),
            description: description.into(),
            valid_from: None,
            valid_until: None,
            demands: demands.iter().copied().collect(),
        }
    }

    fn blocked_except(allowed: &[(CodePart, Demand)]) -> Vec<(CodePart, Demand)> {
        CodePart::ALL
            .into_iter()
            .map(|p| allowed.iter().find(|(a, _)| *a == p).copied().unwrap_or((p, Demand::Blocked)))
            .collect()
    }

    impl FakeChart {
        fn demo() -> Self {
            let mut old = info("1999", "Old clearing", &blocked_except(&[]));
            old.valid_until = NaiveDate::from_ymd_opt(2020, 12, 31);
            Self {
                accounts: vec![
                    old,
                    info("2410", "Card liability", &blocked_except(&[])),
                    info("6500", "Travel", &blocked_except(&[(CodePart::B, Demand::Mandatory)])),
                    info(
                        "6600",
                        "Software",
                        &blocked_except(&[(CodePart::B, Demand::Mandatory), (CodePart::C, Demand::Optional)]),
                    ),
                    info("6700", "Office supplies", &blocked_except(&[(CodePart::B, Demand::Optional)])),
                    // A chart entry that says nothing about code parts.
                    info("7900", "Bank fees", &[]),
                ],
                lookups: Mutex::new(Vec::new()),
                fail: None,
            }
        }
    }

    #[async_trait]
    impl ChartOfAccounts for FakeChart {
        async fn account(
            &self,
            company: &CompanyCode,
            account: &AccountCode,
        ) -> Result<Option<AccountInfo>, ExternalError> {
            self.lookups.lock().unwrap().push(format!("{company}/{account}"));
            if let Some(disposition) = self.fail {
                return Err(ExternalError::new("ifs", "503 busy", disposition));
            }
            Ok(self.accounts.iter().find(|a| &a.company == company && &a.account == account).cloned())
        }
    }

    fn row(account: &str, side: Side, parts: &[(CodePart, &str)]) -> ProposalRow {
        ProposalRow {
            account: AccountCode::parse(account).unwrap(),
            code_parts: parts.iter().map(|(p, v)| (*p, CodePartValue::parse(v).unwrap())).collect::<BTreeMap<_, _>>(),
            side,
            amount: Decimal::from_str("42.00").unwrap(),
            currency: CurrencyCode::parse("USD").unwrap(),
            currency_rate: None,
            text: String::new(),
        }
    }

    fn proposal(rows: Vec<ProposalRow>) -> Proposal {
        crate::proposal::test_proposal(VoucherStatus::NotApproved, NaiveDate::from_ymd_opt(2026, 6, 11).unwrap(), rows)
    }

    #[tokio::test]
    async fn a_well_coded_proposal_passes_with_one_lookup_per_account() {
        let chart = FakeChart::demo();
        let p = proposal(vec![
            row("6500", Side::Debit, &[(CodePart::B, "200")]),
            row("6600", Side::Debit, &[(CodePart::B, "200"), (CodePart::C, "P100")]),
            row("6700", Side::Debit, &[]),
            row("6500", Side::Debit, &[(CodePart::B, "100")]),
            row("7900", Side::Debit, &[(CodePart::D, "X")]),
            row("2410", Side::Credit, &[]),
        ]);
        validate_proposal(&p, &chart).await.unwrap();
        assert_eq!(*chart.lookups.lock().unwrap(), vec!["10/6500", "10/6600", "10/6700", "10/7900", "10/2410"]);
    }

    #[tokio::test]
    async fn an_unknown_account_names_the_row() {
        let p = proposal(vec![row("6500", Side::Debit, &[(CodePart::B, "200")]), row("2499", Side::Credit, &[])]);
        let err = validate_proposal(&p, &FakeChart::demo()).await.unwrap_err();
        assert_eq!(err.to_string(), "record accr_1 row 2: account 2499 does not exist in IFS company 10");
        assert_eq!(err.disposition(), Disposition::Permanent);
    }

    #[tokio::test]
    async fn an_expired_account_is_refused() {
        let p = proposal(vec![row("1999", Side::Debit, &[]), row("2410", Side::Credit, &[])]);
        let err = validate_proposal(&p, &FakeChart::demo()).await.unwrap_err();
        assert!(matches!(&err, MappingError::AccountNotValid { row: 1, .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "record accr_1 row 1: account 1999 is not valid on the voucher date 2026-06-11 (valid until 2020-12-31)"
        );
    }

    #[tokio::test]
    async fn a_missing_mandatory_code_part_is_named() {
        let p = proposal(vec![row("6600", Side::Debit, &[(CodePart::C, "P100")]), row("2410", Side::Credit, &[])]);
        let err = validate_proposal(&p, &FakeChart::demo()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "record accr_1 row 1: account 6600 (Software) demands CodeB but no rule sets code_b"
        );
    }

    #[tokio::test]
    async fn a_blocked_code_part_that_is_set_is_named() {
        let p = proposal(vec![
            row("6500", Side::Debit, &[(CodePart::B, "200")]),
            row("2410", Side::Credit, &[(CodePart::B, "200")]),
        ]);
        let err = validate_proposal(&p, &FakeChart::demo()).await.unwrap_err();
        assert!(matches!(&err, MappingError::BlockedCodePart { row: 2, part: CodePart::B, .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "record accr_1 row 2: account 2410 (Card liability) does not allow CodeB, but code_b = \"200\" is set"
        );
    }

    #[tokio::test]
    async fn chart_failures_keep_their_disposition() {
        let p = proposal(vec![row("6500", Side::Debit, &[(CodePart::B, "200")])]);
        let mut chart = FakeChart::demo();
        chart.fail = Some(Disposition::Retryable);
        let err = validate_proposal(&p, &chart).await.unwrap_err();
        assert!(matches!(err, MappingError::Chart { .. }));
        assert!(err.is_retryable(), "an IFS outage is not the record's fault");
        chart.fail = Some(Disposition::Permanent);
        assert!(!validate_proposal(&p, &chart).await.unwrap_err().is_retryable());
    }

    #[tokio::test]
    async fn the_example_document_maps_the_demo_purchase_to_a_valid_proposal() {
        let doc = crate::mapping::MappingDocument::parse(include_str!("../../../infra/mapping.example.toml")).unwrap();
        let record: crate::brex::model::AccountingRecord = serde_json::from_value(serde_json::json!({
            "id": "accr_2", "amount": {"amount": "12.5", "currency": "USD"}, "type": "CARD_EXPENSE_POST",
            "review_status": "READY_FOR_EXPORT", "source_type": "CARD", "updated_at": "2026-06-11T09:00:00Z",
            "user": {"department_name": "Sales"},
            "line_items": [
                {"id": "accrli_1", "type": "DEBIT", "amount": {"amount": "12.5", "currency": "USD"},
                 "accounting_field_values": [{"remote_field_id": "GL_ACCOUNT", "remote_field_value_id": "6700",
                   "field_name": "GL Account", "field_value_name": "6700 Office Supplies"}]},
                {"id": "accrli_2", "type": "CREDIT", "amount": {"amount": "12.5", "currency": "USD"}}
            ]
        }))
        .unwrap();
        let p = crate::mapping::map_record(&doc, &record).unwrap();
        validate_proposal(&p, &FakeChart::demo()).await.unwrap();
    }
}
