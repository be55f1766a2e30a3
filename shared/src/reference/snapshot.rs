//! What the refresh reads from IFS for one validation: per company the mapping can post to, the chart of
//! accounts, the values of the code parts the rules set, the code part names and the calendar around today.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{AccountCode, CodePartValue, CompanyCode};
use crate::ifs::{AccountingPeriodInfo, CodePartInfo};
use crate::mapping::MappingDocument;
use crate::ports::AccountInfo;
use crate::proposal::CodePart;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceSnapshot {
    /// A company the mapping posts to but that is missing here counts as one IFS does not know.
    pub companies: BTreeMap<CompanyCode, CompanyReference>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompanyReference {
    pub accounts: BTreeMap<AccountCode, AccountInfo>,
    /// Only the code parts that were read; a part missing here is not checked for unknown values.
    pub code_parts: BTreeMap<CodePart, BTreeMap<CodePartValue, CodePartInfo>>,
    /// The company's names for its code parts (`Cost Center`), where known.
    pub code_part_names: BTreeMap<CodePart, String>,
    /// Periods of the years around today, in any order.
    pub periods: Vec<AccountingPeriodInfo>,
}

impl CompanyReference {
    pub fn new(
        accounts: Vec<AccountInfo>,
        code_parts: Vec<CodePartInfo>,
        code_part_names: BTreeMap<CodePart, String>,
        periods: Vec<AccountingPeriodInfo>,
    ) -> Self {
        let mut by_part: BTreeMap<CodePart, BTreeMap<CodePartValue, CodePartInfo>> = BTreeMap::new();
        for value in code_parts {
            by_part.entry(value.code_part).or_default().insert(value.value.clone(), value);
        }
        Self {
            accounts: accounts.into_iter().map(|a| (a.account.clone(), a)).collect(),
            code_parts: by_part,
            code_part_names,
            periods,
        }
    }

    /// `code part B (Cost Center)`, or `code part B` when IFS gave no name.
    pub fn code_part_label(&self, part: CodePart) -> String {
        let letter = &part.property()[4..];
        match self.code_part_names.get(&part) {
            Some(name) => format!("code part {letter} ({name})"),
            None => format!("code part {letter}"),
        }
    }
}

/// The default company and every `set.company`: where the mapping can post.
pub fn mapping_companies(doc: &MappingDocument) -> BTreeSet<CompanyCode> {
    let mut companies = BTreeSet::from([doc.company.clone()]);
    companies.extend(doc.rules.iter().filter_map(|r| r.set.company.clone()));
    companies
}

/// Every code part some rule sets: the ones whose values are worth reading.
pub fn mapping_code_parts(doc: &MappingDocument) -> BTreeSet<CodePart> {
    doc.rules.iter().flat_map(|r| r.set.code_parts.keys().copied()).collect()
}

/// Every account the mapping names (rule accounts and credit accounts): the accounts whose demanded code
/// parts need a name in the report.
pub fn mapping_accounts(doc: &MappingDocument) -> BTreeSet<AccountCode> {
    let mut accounts = BTreeSet::from([doc.credit_account.clone()]);
    accounts.extend(doc.reimbursement_credit_account.clone());
    for rule in &doc.rules {
        accounts.extend(rule.set.account.clone());
        accounts.extend(rule.set.credit_account.clone());
    }
    accounts
}
