//! Checks the mapping document as a whole against a snapshot of IFS's reference data, before any record
//! meets it. `crate::mapping::validate_proposal` checks one proposal at post time; this finds the same
//! problems ahead of time and names the rule that causes them.
//!
//! # How rules combine
//!
//! A line's targets come from every rule that matches it, so a rule setting `code_b` by department
//! complements a rule setting the account by GL field. Rules do not say which records they will meet, so the
//! checks reason about which rules *can* meet the same line:
//!
//! * Two rules are **compatible** unless they test the same key (the same `field`, or the same record-level
//!   key, or `side`) against values that cannot both hold (`department = "Sales"` vs `"Finance"`).
//! * Rule B **implies** rule A when B tests everything A tests: whenever B matches, A matches too.
//! * A rule **can post in** the company it sets; else in the company of the last company rule it implies
//!   (it always lands there); else in the default company and in every company whose rule is compatible
//!   with it.
//!
//! A code part an account demands counts as **set** in company X when some rule that can post in X, is
//! compatible with the rule setting the account, and sets that code part exists. So "never set" is certain:
//! no combination of rules can supply it (whether every department has its rule is not provable and is not
//! claimed). Funding lines (credit accounts) are reached only by line-level rules, so only those count for
//! them. A **blocked** code part is reported only where it surely lands: set by the rule that sets the
//! account, or by a rule that implies it.

use std::collections::BTreeSet;

use chrono::NaiveDate;

use super::report::{CompanySummary, Finding, FindingKind, Severity, ValidationReport};
use super::snapshot::{CompanyReference, ReferenceSnapshot, mapping_companies};
use crate::domain::{AccountCode, CompanyCode};
use crate::ifs::reference::period_for_date;
use crate::ifs::{AccountingPeriodInfo, CodePartInfo};
use crate::mapping::{Condition, MappingDocument, Pattern, Rule, code_part_key};
use crate::ports::{AccountInfo, Demand};
use crate::proposal::CodePart;

/// Validates `doc` against `snapshot` as of `today`. Pure: the refresh adds the mapping version and time.
pub fn validate_mapping(doc: &MappingDocument, snapshot: &ReferenceSnapshot, today: NaiveDate) -> ValidationReport {
    let scopes: Vec<BTreeSet<CompanyCode>> = doc.rules.iter().map(|r| rule_companies(doc, r)).collect();
    let empty = CompanyReference::default();
    let mut findings = Vec::new();
    let mut companies = Vec::new();
    for company in mapping_companies(doc) {
        let reference = snapshot.companies.get(&company).unwrap_or(&empty);
        companies.push(summary(&company, reference, today));
        let mut check = Check { doc, scopes: &scopes, company: &company, reference, today, findings: &mut findings };
        if reference.accounts.is_empty() {
            // Every account would be "unknown": one finding says it better.
            let (source, rule) = check.company_source();
            check.push(
                Severity::Error,
                FindingKind::UnknownCompany,
                &source,
                rule,
                format!(
                    "{source} posts to IFS company {company}, which has no accounts in IFS (is the company code right?)"
                ),
            );
            continue;
        }
        check.periods();
        check.funding_account(&doc.credit_account, "[ifs] credit_account", None);
        if let Some(account) = &doc.reimbursement_credit_account {
            check.funding_account(account, "[ifs] reimbursement_credit_account", None);
        }
        for (rule, scope) in doc.rules.iter().zip(&scopes) {
            if !scope.contains(&company) {
                continue;
            }
            if let Some(account) = &rule.set.account {
                check.rule_account(rule, account);
            }
            if let Some(account) = &rule.set.credit_account {
                check.funding_account(account, &format!("rule #{}", rule.number), Some(rule.number));
            }
            check.code_part_values(rule);
        }
    }
    findings.sort_by(|a, b| {
        (a.severity, &a.company, a.rule.unwrap_or(0), a.kind, &a.message).cmp(&(
            b.severity,
            &b.company,
            b.rule.unwrap_or(0),
            b.kind,
            &b.message,
        ))
    });
    ValidationReport { mapping_version: None, checked_at: None, today, companies, findings }
}

fn summary(company: &CompanyCode, reference: &CompanyReference, today: NaiveDate) -> CompanySummary {
    CompanySummary {
        company: company.clone(),
        accounts: reference.accounts.len(),
        code_part_values: reference.code_parts.values().map(|v| v.len()).sum(),
        current_period: period_for_date(&reference.periods, today)
            .map(|p| format!("{} {}", period_label(p), if p.open { "open" } else { "closed" })),
    }
}

struct Check<'a> {
    doc: &'a MappingDocument,
    scopes: &'a [BTreeSet<CompanyCode>],
    company: &'a CompanyCode,
    reference: &'a CompanyReference,
    today: NaiveDate,
    findings: &'a mut Vec<Finding>,
}

impl Check<'_> {
    fn push(&mut self, severity: Severity, kind: FindingKind, source: &str, rule: Option<usize>, message: String) {
        self.findings.push(Finding {
            severity,
            kind,
            source: source.to_owned(),
            rule,
            company: self.company.clone(),
            message,
        });
    }

    /// Why the mapping posts to this company: the default, or the first rule that sets it.
    fn company_source(&self) -> (String, Option<usize>) {
        if self.company == &self.doc.company {
            return ("[ifs] company".into(), None);
        }
        match self.doc.rules.iter().find(|r| r.set.company.as_ref() == Some(self.company)) {
            Some(rule) => (format!("rule #{}", rule.number), Some(rule.number)),
            None => ("[ifs] company".into(), None),
        }
    }

    fn can_post_here(&self, rule: &Rule) -> bool {
        self.scopes.get(rule.number.saturating_sub(1)).is_some_and(|s| s.contains(self.company))
    }

    /// Today's period must be open; the next one should be, and should exist.
    fn periods(&mut self) {
        let (source, rule) = self.company_source();
        let company = self.company.clone();
        let Some(current) = period_for_date(&self.reference.periods, self.today).cloned() else {
            let message = format!("IFS company {company} has no accounting period for today ({})", self.today);
            self.push(Severity::Error, FindingKind::NoAccountingPeriod, &source, rule, message);
            return;
        };
        if !current.open {
            let message =
                format!("IFS company {company}'s accounting period {}, today's, is closed", period_span(&current));
            self.push(Severity::Error, FindingKind::ClosedAccountingPeriod, &source, rule, message);
        }
        let next = current.date_until.succ_opt().and_then(|day| period_for_date(&self.reference.periods, day));
        match next.cloned() {
            None => {
                let message = format!(
                    "IFS company {company} has no accounting period after {}: vouchers dated later will be refused",
                    current.date_until
                );
                self.push(Severity::Warning, FindingKind::NoAccountingPeriod, &source, rule, message);
            }
            Some(next) if !next.open => {
                let message =
                    format!("IFS company {company}'s next accounting period {} is closed", period_span(&next));
                self.push(Severity::Warning, FindingKind::ClosedAccountingPeriod, &source, rule, message);
            }
            Some(_) => {}
        }
    }

    /// Exists and is valid today; `None` (after a finding) when it cannot be checked further.
    fn account(
        &mut self,
        subject: &str,
        source: &str,
        rule: Option<usize>,
        account: &AccountCode,
    ) -> Option<AccountInfo> {
        let company = self.company.clone();
        let Some(info) = self.reference.accounts.get(account).cloned() else {
            let message = format!("{subject} {account} which IFS company {company} does not have");
            self.push(Severity::Error, FindingKind::UnknownAccount, source, rule, message);
            return None;
        };
        if !info.is_valid_on(self.today) {
            let message = format!(
                "{subject} {} which IFS company {company} does not accept on {} ({})",
                account_label(&info),
                self.today,
                validity(info.valid_from, info.valid_until)
            );
            self.push(Severity::Error, FindingKind::AccountNotValid, source, rule, message);
        }
        Some(info)
    }

    fn rule_account(&mut self, rule: &Rule, account: &AccountCode) {
        let source = format!("rule #{}", rule.number);
        let Some(info) = self.account(&format!("{source} sets account"), &source, Some(rule.number), account) else {
            return;
        };
        let doc = self.doc;
        for part in CodePart::ALL {
            match info.demands.get(&part) {
                Some(Demand::Mandatory) => {
                    let setters: Vec<&Rule> =
                        doc.rules.iter().filter(|b| b.set.code_parts.contains_key(&part)).collect();
                    if setters.iter().any(|b| self.can_post_here(b) && compatible(rule, b)) {
                        continue;
                    }
                    let key = code_part_key(part);
                    let why = if setters.is_empty() {
                        format!("no rule sets {key}")
                    } else {
                        let numbers: Vec<String> = setters.iter().map(|b| format!("#{}", b.number)).collect();
                        format!(
                            "no rule that can apply to the same lines in company {} sets {key} (only rule {} set it)",
                            self.company,
                            numbers.join(", ")
                        )
                    };
                    let message = format!(
                        "{source} sets account {} in company {}, which demands {} but {why}",
                        account_label(&info),
                        self.company,
                        self.reference.code_part_label(part),
                    );
                    self.push(Severity::Error, FindingKind::MissingCodePart, &source, Some(rule.number), message);
                }
                Some(Demand::Blocked) => {
                    let surely = doc.rules.iter().find(|b| {
                        b.set.code_parts.contains_key(&part)
                            && self.can_post_here(b)
                            && implies(b, rule)
                            && (rule.is_line_level() || !b.is_line_level())
                    });
                    let Some(setter) = surely else { continue };
                    let value = setter.set.code_parts.get(&part).map(|v| v.as_str()).unwrap_or_default();
                    let message = format!(
                        "{source} sets account {} in company {}, which does not allow {}, but rule #{} sets {} = {value:?} on the same lines",
                        account_label(&info),
                        self.company,
                        self.reference.code_part_label(part),
                        setter.number,
                        code_part_key(part),
                    );
                    self.push(Severity::Error, FindingKind::BlockedCodePart, &source, Some(rule.number), message);
                }
                _ => {}
            }
        }
    }

    /// A credit account (card liability, employee payable): on funding lines, which only line-level rules
    /// reach.
    fn funding_account(&mut self, account: &AccountCode, source: &str, rule: Option<usize>) {
        let subject = match rule {
            Some(_) => format!("{source} sets credit_account"),
            None => format!("{source} names account"),
        };
        let Some(info) = self.account(&subject, source, rule, account) else { return };
        for part in CodePart::ALL {
            if info.demands.get(&part) != Some(&Demand::Mandatory) {
                continue;
            }
            let covered = self
                .doc
                .rules
                .iter()
                .any(|b| b.is_line_level() && b.set.code_parts.contains_key(&part) && self.can_post_here(b));
            if covered {
                continue;
            }
            let message = format!(
                "{subject} {} in company {}, which demands {} but no rule that reaches funding lines sets {}",
                account_label(&info),
                self.company,
                self.reference.code_part_label(part),
                code_part_key(part),
            );
            self.push(Severity::Error, FindingKind::MissingCodePart, source, rule, message);
        }
    }

    /// Every code part value the rule sets exists in this company and is valid today.
    fn code_part_values(&mut self, rule: &Rule) {
        let source = format!("rule #{}", rule.number);
        for (part, value) in &rule.set.code_parts {
            // Not read (should not happen for a part a rule sets): nothing to compare with.
            let Some(values) = self.reference.code_parts.get(part) else { continue };
            let key = code_part_key(*part);
            let label = self.reference.code_part_label(*part);
            let company = self.company.clone();
            match values.get(value) {
                None => {
                    let message = format!(
                        "{source} sets {key} = {:?} which IFS company {company} does not have as {label}",
                        value.as_str()
                    );
                    self.push(Severity::Error, FindingKind::UnknownCodePartValue, &source, Some(rule.number), message);
                }
                Some(info) if !info.is_valid_on(self.today) => {
                    let message = format!(
                        "{source} sets {key} = {:?} ({}) which IFS company {company} does not accept as {label} on {} ({})",
                        value.as_str(),
                        value_description(info),
                        self.today,
                        validity(info.valid_from, info.valid_until)
                    );
                    self.push(Severity::Error, FindingKind::CodePartValueNotValid, &source, Some(rule.number), message);
                }
                Some(_) => {}
            }
        }
    }
}

fn account_label(info: &AccountInfo) -> String {
    if info.description.trim().is_empty() {
        info.account.to_string()
    } else {
        format!("{} ({})", info.account, info.description)
    }
}

fn value_description(info: &CodePartInfo) -> &str {
    if info.description.trim().is_empty() { "no description" } else { &info.description }
}

fn validity(from: Option<NaiveDate>, until: Option<NaiveDate>) -> String {
    match (from, until) {
        (Some(from), Some(until)) => format!("valid {from} to {until}"),
        (Some(from), None) => format!("valid from {from}"),
        (None, Some(until)) => format!("valid until {until}"),
        (None, None) => "no validity period".to_owned(),
    }
}

fn period_label(p: &AccountingPeriodInfo) -> String {
    format!("{}/{:02}", p.accounting_year, p.accounting_period)
}

fn period_span(p: &AccountingPeriodInfo) -> String {
    format!("{} ({} to {})", period_label(p), p.date_from, p.date_until)
}

/// The companies a rule can post in (see the module docs).
fn rule_companies(doc: &MappingDocument, rule: &Rule) -> BTreeSet<CompanyCode> {
    if let Some(company) = &rule.set.company {
        return BTreeSet::from([company.clone()]);
    }
    let company_rules = doc.rules.iter().filter_map(|c| c.set.company.as_ref().map(|company| (c, company)));
    if let Some((_, forced)) = company_rules.clone().rfind(|(c, _)| implies(rule, c)) {
        return BTreeSet::from([forced.clone()]);
    }
    let mut companies = BTreeSet::from([doc.company.clone()]);
    companies.extend(company_rules.filter(|(c, _)| compatible(rule, c)).map(|(_, company)| company.clone()));
    companies
}

/// What a condition tests, and against what.
fn key_and_pattern(condition: &Condition) -> (String, Pattern) {
    match condition {
        Condition::Field { name, value } => (format!("field:{}", name.trim().to_lowercase()), value.clone()),
        Condition::Department(p) => ("department".into(), p.clone()),
        Condition::Category(p) => ("category".into(), p.clone()),
        Condition::SourceType(p) => ("source_type".into(), p.clone()),
        Condition::RecordType(p) => ("record_type".into(), p.clone()),
        Condition::Currency(p) => ("currency".into(), p.clone()),
        Condition::UserEmail(p) => ("user_email".into(), p.clone()),
        Condition::Merchant(p) => ("merchant".into(), p.clone()),
        Condition::User(p) => ("user".into(), p.clone()),
        Condition::Side(side) => ("side".into(), Pattern::new(&format!("{side:?}"))),
    }
}

fn same(a: &Condition, b: &Condition) -> bool {
    let ((ka, pa), (kb, pb)) = (key_and_pattern(a), key_and_pattern(b));
    ka == kb && pa.as_str().to_lowercase() == pb.as_str().to_lowercase()
}

/// Both conditions test the same thing with values that cannot both hold. Two wildcard patterns are
/// assumed to overlap.
fn contradict(a: &Condition, b: &Condition) -> bool {
    let ((ka, pa), (kb, pb)) = (key_and_pattern(a), key_and_pattern(b));
    if ka != kb {
        return false;
    }
    let (wild_a, wild_b) = (pa.as_str().contains('*'), pb.as_str().contains('*'));
    match (wild_a, wild_b) {
        (false, _) => !pb.matches(pa.as_str()),
        (true, false) => !pa.matches(pb.as_str()),
        (true, true) => false,
    }
}

/// The two rules can match the same line.
fn compatible(a: &Rule, b: &Rule) -> bool {
    !a.when.iter().any(|ca| b.when.iter().any(|cb| contradict(ca, cb)))
}

/// Whenever `b` matches, `a` does: `b` tests everything `a` tests.
fn implies(b: &Rule, a: &Rule) -> bool {
    a.when.iter().all(|ca| b.when.iter().any(|cb| same(ca, cb)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::CodePartValue;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    const TODAY: (i32, u32, u32) = (2026, 6, 11);

    fn today() -> NaiveDate {
        day(TODAY.0, TODAY.1, TODAY.2)
    }

    fn account(company: &str, code: &str, description: &str, demands: &[(CodePart, Demand)]) -> AccountInfo {
        let mut all: BTreeMap<CodePart, Demand> = CodePart::ALL.into_iter().map(|p| (p, Demand::Blocked)).collect();
        all.extend(demands.iter().copied());
        AccountInfo {
            company: CompanyCode::parse(company).unwrap(),
            account: AccountCode::parse(code).unwrap(),
            description: description.into(),
            valid_from: None,
            valid_until: None,
            demands: all,
        }
    }

    fn value(company: &str, part: CodePart, code: &str, description: &str) -> CodePartInfo {
        CodePartInfo {
            company: CompanyCode::parse(company).unwrap(),
            code_part: part,
            value: CodePartValue::parse(code).unwrap(),
            description: description.into(),
            valid_from: None,
            valid_until: None,
        }
    }

    fn periods(company: &str, closed: &[u32]) -> Vec<AccountingPeriodInfo> {
        (1..=12)
            .map(|m| AccountingPeriodInfo {
                company: CompanyCode::parse(company).unwrap(),
                accounting_year: 2026,
                accounting_period: m,
                date_from: day(2026, m, 1),
                date_until: if m == 12 { day(2026, 12, 31) } else { day(2026, m + 1, 1).pred_opt().unwrap() },
                open: !closed.contains(&m),
                year_end_period: Some("Ordinary".into()),
            })
            .collect()
    }

    /// The simulator's demo data for one company, as the refresh would read it.
    fn demo_company(company: &str) -> CompanyReference {
        use CodePart::{B, C};
        use Demand::{Mandatory, Optional};
        let mut old = account(company, "1999", "Old clearing", &[]);
        old.valid_until = Some(day(2020, 12, 31));
        let accounts = vec![
            old,
            account(company, "2410", "Card liability", &[]),
            account(company, "2415", "Card liability CA", &[]),
            account(company, "2420", "Employee payable", &[]),
            account(company, "6500", "Travel", &[(B, Mandatory)]),
            account(company, "6510", "Meals", &[(B, Mandatory)]),
            account(company, "6600", "Software", &[(B, Mandatory), (C, Optional)]),
            account(company, "6700", "Office supplies", &[(B, Optional)]),
            account(company, "7500", "Other G&A", &[(B, Mandatory)]),
            account(company, "7900", "Bank fees", &[]),
        ];
        let mut values: Vec<CodePartInfo> =
            [("100", "Sales"), ("200", "Engineering"), ("300", "Marketing"), ("400", "Finance"), ("500", "Operations")]
                .into_iter()
                .map(|(v, d)| value(company, B, v, d))
                .collect();
        let mut closed = value(company, B, "900", "Closed down");
        closed.valid_until = Some(day(2025, 12, 31));
        values.push(closed);
        values.push(value(company, C, "P100", "Project 100"));
        let names = BTreeMap::from([(B, "Cost Center".to_owned()), (C, "Project".to_owned())]);
        CompanyReference::new(accounts, values, names, periods(company, &[]))
    }

    fn demo() -> ReferenceSnapshot {
        ReferenceSnapshot {
            companies: [("10", demo_company("10")), ("20", demo_company("20"))]
                .into_iter()
                .map(|(c, r)| (CompanyCode::parse(c).unwrap(), r))
                .collect(),
        }
    }

    fn doc(rules: &str) -> MappingDocument {
        let text = format!(
            "[ifs]\ncompany = \"10\"\nvoucher_type = \"M\"\nreference_serie = \"BREX\"\ncredit_account = \"2410\"\n{rules}"
        );
        MappingDocument::parse(&text).unwrap()
    }

    fn messages(report: &ValidationReport) -> Vec<String> {
        report.findings.iter().map(|f| format!("{} {}: {}", f.severity.as_str(), f.company, f.message)).collect()
    }

    #[test]
    fn the_example_mapping_is_clean_against_the_demo_data() {
        let doc = MappingDocument::parse(include_str!("../../../infra/mapping.example.toml")).unwrap();
        let report = validate_mapping(&doc, &demo(), today());
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.companies.len(), 2);
        assert_eq!(report.companies[0].current_period.as_deref(), Some("2026/06 open"));
        assert_eq!(report.companies[1].accounts, 10);
    }

    #[test]
    fn an_unknown_account_is_named_with_rule_and_company() {
        let doc = doc(r#"
            [[rule]]
            when = { department = "*" }
            set = { code_b = "100" }
            [[rule]]
            when = { field = "GL Account", value = "Misc" }
            set = { account = "6999" }
            "#);
        let report = validate_mapping(&doc, &demo(), today());
        assert_eq!(messages(&report), ["error 10: rule #2 sets account 6999 which IFS company 10 does not have"]);
        let f = &report.findings[0];
        assert_eq!((f.kind, f.rule, f.source.as_str()), (FindingKind::UnknownAccount, Some(2), "rule #2"));
    }

    #[test]
    fn a_demanded_code_part_no_rule_sets_is_named() {
        let doc = doc(r#"
            [[rule]]
            when = { field = "GL Account", value = "Travel" }
            set = { account = "6500" }
            "#);
        let report = validate_mapping(&doc, &demo(), today());
        assert_eq!(
            messages(&report),
            ["error 10: rule #1 sets account 6500 (Travel) in company 10, which demands code part B (Cost Center) \
              but no rule sets code_b"]
        );
        assert_eq!(report.findings[0].kind, FindingKind::MissingCodePart);
    }

    #[test]
    fn a_department_rule_complements_an_account_rule_but_a_contradicting_one_does_not() {
        let complemented = doc(r#"
            [[rule]]
            when = { field = "GL Account", value = "Travel" }
            set = { account = "6500" }
            [[rule]]
            when = { department = "Engineering" }
            set = { code_b = "200" }
            "#);
        assert!(validate_mapping(&complemented, &demo(), today()).is_clean());

        // code_b is only set for lines whose GL Account is Software: never on the Travel lines.
        let contradicted = doc(r#"
            [[rule]]
            when = { field = "GL Account", value = "Travel" }
            set = { account = "6500" }
            [[rule]]
            when = { field = "gl account", value = "Software" }
            set = { account = "6600", code_b = "200" }
            "#);
        let report = validate_mapping(&contradicted, &demo(), today());
        assert_eq!(
            messages(&report),
            ["error 10: rule #1 sets account 6500 (Travel) in company 10, which demands code part B (Cost Center) \
              but no rule that can apply to the same lines in company 10 sets code_b (only rule #2 set it)"]
        );
    }

    #[test]
    fn a_code_part_set_only_in_another_company_does_not_count() {
        // Rule 3's code_b lands in company 20 only (it implies the Canada company rule); rule 1's account
        // can also post in 10, where nothing sets code_b.
        let doc = doc(r#"
            [[rule]]
            when = { field = "GL Account", value = "Travel" }
            set = { account = "6500" }
            [[rule]]
            when = { field = "Entity", value = "Acme Canada" }
            set = { company = "20" }
            [[rule]]
            when = { field = "Entity", value = "Acme Canada", department = "Sales" }
            set = { code_b = "100" }
            "#);
        let report = validate_mapping(&doc, &demo(), today());
        assert_eq!(report.findings.len(), 1, "{report}");
        assert_eq!(report.findings[0].company.as_str(), "10");
        assert_eq!(report.findings[0].kind, FindingKind::MissingCodePart);
        assert!(report.findings[0].message.contains("(only rule #3 set it)"), "{report}");
    }

    #[test]
    fn expired_and_not_yet_valid_accounts_are_errors() {
        let mut snapshot = demo();
        let company = snapshot.companies.get_mut(&CompanyCode::parse("10").unwrap()).unwrap();
        let mut future = account("10", "7700", "New leases", &[]);
        future.valid_from = Some(day(2027, 1, 1));
        company.accounts.insert(future.account.clone(), future);
        let doc = doc(r#"
            [[rule]]
            when = { category = "Old" }
            set = { account = "1999" }
            [[rule]]
            when = { category = "Leases" }
            set = { account = "7700" }
            "#);
        let report = validate_mapping(&doc, &snapshot, today());
        assert_eq!(
            messages(&report),
            [
                "error 10: rule #1 sets account 1999 (Old clearing) which IFS company 10 does not accept on 2026-06-11 \
                 (valid until 2020-12-31)",
                "error 10: rule #2 sets account 7700 (New leases) which IFS company 10 does not accept on 2026-06-11 \
                 (valid from 2027-01-01)",
            ]
        );
        assert!(report.findings.iter().all(|f| f.kind == FindingKind::AccountNotValid));
    }

    #[test]
    fn a_blocked_code_part_is_reported_where_it_surely_lands() {
        let doc = doc(r#"
            [[rule]]
            when = { field = "GL Account", value = "Fees" }
            set = { account = "7900", code_b = "200" }
            [[rule]]
            when = { field = "GL Account", value = "Supplies" }
            set = { account = "7900" }
            [[rule]]
            when = { field = "GL Account", value = "Supplies", department = "Sales" }
            set = { code_b = "100" }
            [[rule]]
            when = { department = "Finance" }
            set = { code_b = "400" }
            "#);
        let report = validate_mapping(&doc, &demo(), today());
        assert_eq!(
            messages(&report),
            [
                "error 10: rule #1 sets account 7900 (Bank fees) in company 10, which does not allow code part B \
                 (Cost Center), but rule #1 sets code_b = \"200\" on the same lines",
                "error 10: rule #2 sets account 7900 (Bank fees) in company 10, which does not allow code part B \
                 (Cost Center), but rule #3 sets code_b = \"100\" on the same lines",
            ],
            "rule #4 only may meet 7900 lines: not reported"
        );
        assert!(report.findings.iter().all(|f| f.kind == FindingKind::BlockedCodePart));
    }

    #[test]
    fn unknown_and_expired_code_part_values_are_named() {
        let doc = doc(r#"
            [[rule]]
            when = { department = "Legal" }
            set = { code_b = "777" }
            [[rule]]
            when = { department = "Closed" }
            set = { code_b = "900" }
            [[rule]]
            when = { department = "R&D" }
            set = { code_c = "P100" }
            "#);
        let report = validate_mapping(&doc, &demo(), today());
        assert_eq!(
            messages(&report),
            [
                "error 10: rule #1 sets code_b = \"777\" which IFS company 10 does not have as code part B (Cost Center)",
                "error 10: rule #2 sets code_b = \"900\" (Closed down) which IFS company 10 does not accept as code \
                 part B (Cost Center) on 2026-06-11 (valid until 2025-12-31)",
            ]
        );
        assert_eq!(report.findings[0].kind, FindingKind::UnknownCodePartValue);
        assert_eq!(report.findings[1].kind, FindingKind::CodePartValueNotValid);
    }

    #[test]
    fn credit_accounts_are_checked_in_every_company_they_can_reach() {
        let mut snapshot = demo();
        // In company 20 the card liability demands a cost centre; only a line-level rule can give it one.
        let co20 = snapshot.companies.get_mut(&CompanyCode::parse("20").unwrap()).unwrap();
        co20.accounts.insert(
            AccountCode::parse("2410").unwrap(),
            account("20", "2410", "Card liability", &[(CodePart::B, Demand::Mandatory)]),
        );
        let text = r#"
            [ifs]
            company = "10"
            voucher_type = "M"
            reference_serie = "BREX"
            credit_account = "2410"
            reimbursement_credit_account = "2499"
            [[rule]]
            when = { field = "Entity", value = "Acme Canada" }
            set = { company = "20" }
            [[rule]]
            when = { department = "Sales" }
            set = { code_b = "100" }
            [[rule]]
            when = { field = "Entity", value = "Acme Canada", source_type = "CARD" }
            set = { credit_account = "2416" }
        "#;
        let doc = MappingDocument::parse(text).unwrap();
        let report = validate_mapping(&doc, &snapshot, today());
        assert_eq!(
            messages(&report),
            [
                "error 10: [ifs] reimbursement_credit_account names account 2499 which IFS company 10 does not have",
                "error 20: [ifs] reimbursement_credit_account names account 2499 which IFS company 20 does not have",
                "error 20: [ifs] credit_account names account 2410 (Card liability) in company 20, which demands \
                 code part B (Cost Center) but no rule that reaches funding lines sets code_b",
                "error 20: rule #3 sets credit_account 2416 which IFS company 20 does not have",
            ]
        );
        let sources: Vec<&str> = report.findings.iter().map(|f| f.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "[ifs] reimbursement_credit_account",
                "[ifs] reimbursement_credit_account",
                "[ifs] credit_account",
                "rule #3"
            ]
        );
    }

    #[test]
    fn closed_and_missing_periods_today_and_ahead() {
        let doc = doc("");
        let mut snapshot = demo();
        let co10 = CompanyCode::parse("10").unwrap();
        // Next month closed: a warning (nothing fails yet).
        snapshot.companies.get_mut(&co10).unwrap().periods = periods("10", &[7]);
        let report = validate_mapping(&doc, &snapshot, today());
        assert_eq!(
            messages(&report),
            ["warning 10: IFS company 10's next accounting period 2026/07 (2026-07-01 to 2026-07-31) is closed"]
        );
        assert_eq!(report.findings[0].kind, FindingKind::ClosedAccountingPeriod);
        assert_eq!(report.findings[0].source, "[ifs] company");

        // Today's period closed: an error.
        snapshot.companies.get_mut(&co10).unwrap().periods = periods("10", &[6]);
        let report = validate_mapping(&doc, &snapshot, today());
        assert_eq!(
            messages(&report),
            ["error 10: IFS company 10's accounting period 2026/06 (2026-06-01 to 2026-06-30), today's, is closed"]
        );

        // The calendar ends with this year: fine in June, a warning in December, an error next year.
        snapshot.companies.get_mut(&co10).unwrap().periods = periods("10", &[]);
        let report = validate_mapping(&doc, &snapshot, day(2026, 12, 15));
        assert_eq!(
            messages(&report),
            ["warning 10: IFS company 10 has no accounting period after 2026-12-31: vouchers dated later will be \
                 refused"]
        );
        let report = validate_mapping(&doc, &snapshot, day(2027, 1, 2));
        assert_eq!(messages(&report), ["error 10: IFS company 10 has no accounting period for today (2027-01-02)"]);
        assert_eq!(report.findings[0].kind, FindingKind::NoAccountingPeriod);
        assert_eq!(report.companies[0].current_period, None);
    }

    #[test]
    fn a_company_ifs_does_not_know_is_one_finding() {
        let doc = doc(r#"
            [[rule]]
            when = { field = "Entity", value = "Acme UK" }
            set = { company = "30" }
            [[rule]]
            when = { field = "GL Account", value = "Travel" }
            set = { account = "6500", code_b = "100" }
            "#);
        let report = validate_mapping(&doc, &demo(), today());
        assert_eq!(
            messages(&report),
            ["error 30: rule #1 posts to IFS company 30, which has no accounts in IFS (is the company code right?)"]
        );
        assert_eq!(report.findings[0].kind, FindingKind::UnknownCompany);
    }

    #[test]
    fn rule_companies_follow_implication_and_compatibility() {
        let doc = doc(r#"
            [[rule]]
            when = { field = "Entity", value = "Acme Canada" }
            set = { company = "20" }
            [[rule]]
            when = { department = "Sales" }
            set = { code_b = "100" }
            [[rule]]
            when = { field = "entity", value = "acme canada", department = "Sales" }
            set = { code_b = "100" }
            [[rule]]
            when = { field = "Entity", value = "Acme Inc" }
            set = { code_b = "100" }
            [[rule]]
            when = { field = "Entity", value = "Acme *" }
            set = { code_b = "100" }
            "#);
        let names = |r: &Rule| rule_companies(&doc, r).iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&doc.rules[0]), ["20"]);
        assert_eq!(names(&doc.rules[1]), ["10", "20"], "a department rule meets both entities");
        assert_eq!(names(&doc.rules[2]), ["20"], "implies the Canada rule: always lands in 20");
        assert_eq!(names(&doc.rules[3]), ["10"], "contradicts the Canada rule");
        assert_eq!(names(&doc.rules[4]), ["10", "20"], "a wildcard overlapping the Canada rule");
    }
}
