//! The mapping validation report: what the reference refresh found, stored in DynamoDB, logged, and shown by
//! the operator CLI as a table.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::CompanyCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Records that meet this part of the mapping will fail (or already do).
    Error,
    /// Nothing fails yet, but will soon (e.g. the next period is closed).
    Warning,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// What kind of problem a finding is, for filtering and metrics; the message says it in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A company the mapping posts to has no accounts in IFS.
    UnknownCompany,
    UnknownAccount,
    /// Expired, or not yet valid, today.
    AccountNotValid,
    /// The account demands a code part that no rule able to reach its lines sets.
    MissingCodePart,
    /// The account does not allow a code part that the same lines surely get.
    BlockedCodePart,
    UnknownCodePartValue,
    CodePartValueNotValid,
    /// No accounting period contains today, or the calendar ends with today's period.
    NoAccountingPeriod,
    ClosedAccountingPeriod,
}

/// One problem, named the way the finance-systems engineer wrote the mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: FindingKind,
    /// Where in the mapping it comes from: `rule #3`, `[ifs] credit_account`, `[ifs] company`.
    pub source: String,
    /// The rule's 1-based number when `source` is a rule.
    pub rule: Option<usize>,
    pub company: CompanyCode,
    /// A complete sentence naming the rule, account, code part and company.
    pub message: String,
}

/// What was read from one company.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanySummary {
    pub company: CompanyCode,
    pub accounts: usize,
    pub code_part_values: usize,
    /// Today's period as `2026/06 open`, when the calendar has one.
    pub current_period: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The mapping document version (`pk = "config"`, `sk = "mapping"`) that was checked.
    pub mapping_version: Option<i64>,
    /// When the refresh ran (set by the refresh; the pure validation leaves it empty).
    pub checked_at: Option<DateTime<Utc>>,
    /// The date validity and periods were judged for.
    pub today: NaiveDate,
    pub companies: Vec<CompanySummary>,
    /// Errors first, then by company and source.
    pub findings: Vec<Finding>,
}

impl ValidationReport {
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Error).count()
    }

    pub fn warnings(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Warning).count()
    }

    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// A header line, then one row per finding: `severity  source  company  message`.
impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = self.mapping_version.map_or_else(|| "?".to_owned(), |v| v.to_string());
        let at = self.checked_at.map_or_else(String::new, |t| format!(" at {}", t.format("%Y-%m-%d %H:%M:%SZ")));
        writeln!(
            f,
            "mapping v{version} checked against IFS{at} for {}: {} error(s), {} warning(s)",
            self.today,
            self.errors(),
            self.warnings()
        )?;
        for c in &self.companies {
            writeln!(
                f,
                "  company {:<6} {} accounts, {} code part values, period today: {}",
                c.company.as_str(),
                c.accounts,
                c.code_part_values,
                c.current_period.as_deref().unwrap_or("none")
            )?;
        }
        if self.findings.is_empty() {
            return writeln!(f, "no findings");
        }
        let source_width = self.findings.iter().map(|x| x.source.len()).max().unwrap_or(0).max("source".len());
        let company_width =
            self.findings.iter().map(|x| x.company.as_str().len()).max().unwrap_or(0).max("company".len());
        writeln!(f, "{:<8} {:<source_width$} {:<company_width$} finding", "severity", "source", "company")?;
        for x in &self.findings {
            writeln!(
                f,
                "{:<8} {:<source_width$} {:<company_width$} {}",
                x.severity.as_str(),
                x.source,
                x.company.as_str(),
                x.message
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_counts_by_severity() {
        let co = CompanyCode::parse("10").unwrap();
        let report = ValidationReport {
            mapping_version: Some(7),
            checked_at: None,
            today: NaiveDate::from_ymd_opt(2026, 6, 11).unwrap(),
            companies: vec![CompanySummary {
                company: co.clone(),
                accounts: 10,
                code_part_values: 7,
                current_period: Some("2026/06 open".into()),
            }],
            findings: vec![
                Finding {
                    severity: Severity::Error,
                    kind: FindingKind::UnknownAccount,
                    source: "rule #3".into(),
                    rule: Some(3),
                    company: co.clone(),
                    message: "rule #3 sets account 6999 which IFS company 10 does not have".into(),
                },
                Finding {
                    severity: Severity::Warning,
                    kind: FindingKind::ClosedAccountingPeriod,
                    source: "[ifs] company".into(),
                    rule: None,
                    company: co,
                    message: "the next period is closed".into(),
                },
            ],
        };
        assert_eq!((report.errors(), report.warnings()), (1, 1));
        let table = report.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "mapping v7 checked against IFS for 2026-06-11: 1 error(s), 1 warning(s)");
        assert_eq!(lines[1], "  company 10     10 accounts, 7 code part values, period today: 2026/06 open");
        assert_eq!(lines[2], "severity source        company finding");
        assert_eq!(
            lines[3],
            "error    rule #3       10      rule #3 sets account 6999 which IFS company 10 does not have"
        );
        assert_eq!(lines[4], "warning  [ifs] company 10      the next period is closed");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["findings"][0]["kind"], "unknown_account");
        assert_eq!(json["findings"][0]["severity"], "error");
        let back: ValidationReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }
}
