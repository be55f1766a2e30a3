//! Checks a proposal against IFS's chart of accounts before anything is posted, so a bad account or a
//! missing cost centre becomes a clear mapping error instead of a half-built voucher in IFS.

use std::collections::HashMap;

use super::error::MappingError;
use crate::domain::AccountCode;
use crate::ports::{AccountInfo, ChartOfAccounts, Demand};
use crate::proposal::{CodePart, Proposal};

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
