//! The IFS reference refresh: read IFS's chart of accounts, the code part values the mapping
//! uses and the calendar around today, validate the whole mapping document against them, and store and log
//! the validation report — so a rule naming an account IFS does not have is found on the next poller run,
//! not by the first record that meets it.
//!
//! The poller calls [`ReferenceRefresh::refresh`]; the operator CLI reads the last report with
//! [`crate::aws::report::DynamoReportStore::load_latest`].

mod report;
mod snapshot;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};

pub use report::{CompanySummary, Finding, FindingKind, Severity, ValidationReport};
pub use snapshot::{CompanyReference, ReferenceSnapshot, mapping_accounts, mapping_code_parts, mapping_companies};
pub use validate::validate_mapping;

use crate::domain::CompanyCode;
use crate::error::ExternalError;
use crate::error::{AwsError, Classify, Disposition};
use crate::mapping::{LoadedMapping, MappingDocument};
use crate::ports::{Clock, Demand, ReferenceSource, ReportStore, SystemClock};
use crate::proposal::CodePart;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshError {
    #[error("reading the {what} of IFS company {company} failed: {source}")]
    Read {
        company: CompanyCode,
        what: &'static str,
        #[source]
        source: ExternalError,
    },
    #[error("storing the mapping validation report failed: {0}")]
    Store(#[from] AwsError),
}

impl Classify for RefreshError {
    fn disposition(&self) -> Disposition {
        match self {
            Self::Read { source, .. } => source.disposition(),
            Self::Store(e) => e.disposition(),
        }
    }
}

/// Reads the snapshot, validates, logs and stores. Cheap to keep for the life of a Lambda instance.
pub struct ReferenceRefresh {
    source: Arc<dyn ReferenceSource>,
    store: Arc<dyn ReportStore>,
    clock: Arc<dyn Clock>,
}

impl ReferenceRefresh {
    pub fn new(source: Arc<dyn ReferenceSource>, store: Arc<dyn ReportStore>) -> Self {
        Self { source, store, clock: Arc::new(SystemClock) }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reads, validates `mapping` as of `today`, logs the report (JSON) and stores it as the latest. The
    /// report is logged before it is stored, so a DynamoDB failure still leaves it in the logs.
    pub async fn refresh(&self, mapping: &LoadedMapping, today: NaiveDate) -> Result<ValidationReport, RefreshError> {
        let snapshot = self.read_snapshot(&mapping.document, today).await?;
        let mut report = validate_mapping(&mapping.document, &snapshot, today);
        report.mapping_version = Some(mapping.version);
        report.checked_at = Some(self.clock.now());
        log_report(&report);
        self.store.save(&report).await?;
        Ok(report)
    }

    /// Everything [`validate_mapping`] needs, per company the mapping can post to: the chart of accounts,
    /// the values of every code part a rule sets, the names of the code parts a finding may mention, and
    /// the periods of last, this and next year (fiscal years need not be calendar years).
    pub async fn read_snapshot(
        &self,
        doc: &MappingDocument,
        today: NaiveDate,
    ) -> Result<ReferenceSnapshot, RefreshError> {
        let parts = mapping_code_parts(doc);
        let named_accounts = mapping_accounts(doc);
        let mut snapshot = ReferenceSnapshot::default();
        for company in mapping_companies(doc) {
            let read = |what: &'static str| {
                let company = company.clone();
                move |source| RefreshError::Read { company, what, source }
            };
            let accounts = self.source.accounts(&company).await.map_err(read("accounts"))?;
            if accounts.is_empty() {
                // Not a company IFS knows: the report says so, and there is nothing else to read.
                snapshot.companies.insert(company, CompanyReference::default());
                continue;
            }
            let mut values = Vec::new();
            for part in &parts {
                values.extend(self.source.code_part_values(&company, *part).await.map_err(read("code part values"))?);
            }
            let mut named_parts: BTreeSet<CodePart> = parts.clone();
            for account in accounts.iter().filter(|a| named_accounts.contains(&a.account)) {
                named_parts.extend(account.demands.iter().filter(|(_, d)| **d == Demand::Mandatory).map(|(p, _)| *p));
            }
            let mut names = BTreeMap::new();
            for part in named_parts {
                match self.source.code_part_name(&company, part).await {
                    Ok(Some(name)) => {
                        names.insert(part, name);
                    }
                    Ok(None) => {}
                    // Names only decorate the messages; a tailoring without them must not stop the check.
                    Err(e) if !e.is_retryable() => {
                        tracing::warn!(company = %company, %part, error = %e, "IFS code part name unavailable");
                    }
                    Err(e) => return Err(read("code part names")(e)),
                }
            }
            let mut periods = Vec::new();
            for year in today.year() - 1..=today.year() + 1 {
                periods.extend(self.source.accounting_periods(&company, year).await.map_err(read("calendar"))?);
            }
            snapshot.companies.insert(company, CompanyReference::new(accounts, values, names, periods));
        }
        Ok(snapshot)
    }
}

/// One summary event carrying the whole report as JSON, then one event per finding (so log filters and
/// metric filters can match on `kind`).
fn log_report(report: &ValidationReport) {
    let json = serde_json::to_string(report).unwrap_or_else(|e| format!("{{\"unserialisable\":\"{e}\"}}"));
    let (errors, warnings) = (report.errors(), report.warnings());
    let version = report.mapping_version.unwrap_or_default();
    if report.is_clean() {
        tracing::info!(mapping_version = version, errors, warnings, report = %json, "mapping validated against IFS: clean");
    } else {
        tracing::warn!(mapping_version = version, errors, warnings, report = %json, "mapping validated against IFS: findings");
    }
    for f in &report.findings {
        tracing::warn!(
            severity = f.severity.as_str(),
            kind = ?f.kind,
            source = %f.source,
            company = %f.company,
            "mapping finding: {}",
            f.message
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use async_trait::async_trait;

    use crate::domain::AccountCode;
    use crate::ifs::{AccountingPeriodInfo, CodePartInfo};
    use crate::ports::AccountInfo;

    struct FakeIfs {
        fail_names: Option<Disposition>,
        calls: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl ReferenceSource for FakeIfs {
        async fn accounts(&self, company: &CompanyCode) -> Result<Vec<AccountInfo>, ExternalError> {
            self.calls.lock().unwrap().push(format!("accounts {company}"));
            if company.as_str() != "10" {
                return Ok(Vec::new());
            }
            let demands = CodePart::ALL
                .into_iter()
                .map(|p| (p, if p == CodePart::B { Demand::Mandatory } else { Demand::Blocked }))
                .collect();
            Ok(vec![AccountInfo {
                company: company.clone(),
                account: AccountCode::parse("6500").unwrap(),
                description: "Travel".into(),
                valid_from: None,
                valid_until: None,
                demands,
            }])
        }

        async fn code_part_values(
            &self,
            company: &CompanyCode,
            part: CodePart,
        ) -> Result<Vec<CodePartInfo>, ExternalError> {
            self.calls.lock().unwrap().push(format!("values {company} {part}"));
            Ok(Vec::new())
        }

        async fn code_part_name(&self, company: &CompanyCode, part: CodePart) -> Result<Option<String>, ExternalError> {
            self.calls.lock().unwrap().push(format!("name {company} {part}"));
            match self.fail_names {
                Some(disposition) => Err(ExternalError::new("IFS", "nope", disposition)),
                None => Ok(Some("Cost Center".into())),
            }
        }

        async fn accounting_periods(
            &self,
            company: &CompanyCode,
            year: i32,
        ) -> Result<Vec<AccountingPeriodInfo>, ExternalError> {
            self.calls.lock().unwrap().push(format!("periods {company} {year}"));
            Ok(Vec::new())
        }
    }

    fn doc() -> MappingDocument {
        MappingDocument::parse(
            r#"
            [ifs]
            company = "10"
            voucher_type = "M"
            reference_serie = "BREX"
            credit_account = "6500"
            [[rule]]
            when = { field = "Entity", value = "Acme UK" }
            set = { company = "30" }
            "#,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_snapshot_reads_only_what_the_checks_need() {
        let ifs = FakeIfs { fail_names: None, calls: Mutex::new(Vec::new()) };
        let source = Arc::new(ifs);
        let store = Arc::new(NoStore);
        let refresh = ReferenceRefresh::new(source.clone(), store);
        let today = NaiveDate::from_ymd_opt(2026, 6, 11).unwrap();
        let snapshot = refresh.read_snapshot(&doc(), today).await.unwrap();
        assert_eq!(
            *source.calls.lock().unwrap(),
            [
                "accounts 10",
                "name 10 CodeB",
                "periods 10 2025",
                "periods 10 2026",
                "periods 10 2027",
                // An unknown company: nothing more to read.
                "accounts 30",
            ]
        );
        let co10 = &snapshot.companies[&CompanyCode::parse("10").unwrap()];
        assert_eq!(co10.code_part_label(CodePart::B), "code part B (Cost Center)");
        assert!(snapshot.companies[&CompanyCode::parse("30").unwrap()].accounts.is_empty());
    }

    #[tokio::test]
    async fn a_missing_name_is_tolerated_but_an_outage_is_retryable() {
        let today = NaiveDate::from_ymd_opt(2026, 6, 11).unwrap();
        let permanent = FakeIfs { fail_names: Some(Disposition::Permanent), calls: Mutex::new(Vec::new()) };
        let refresh = ReferenceRefresh::new(Arc::new(permanent), Arc::new(NoStore));
        let snapshot = refresh.read_snapshot(&doc(), today).await.unwrap();
        let co10 = &snapshot.companies[&CompanyCode::parse("10").unwrap()];
        assert_eq!(co10.code_part_label(CodePart::B), "code part B");

        let busy = FakeIfs { fail_names: Some(Disposition::Retryable), calls: Mutex::new(Vec::new()) };
        let refresh = ReferenceRefresh::new(Arc::new(busy), Arc::new(NoStore));
        let err = refresh.read_snapshot(&doc(), today).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(err.to_string(), "reading the code part names of IFS company 10 failed: IFS: nope");
    }

    struct NoStore;

    #[async_trait]
    impl ReportStore for NoStore {
        async fn save(&self, _: &ValidationReport) -> Result<(), AwsError> {
            Ok(())
        }
        async fn load_latest(&self) -> Result<Option<ValidationReport>, AwsError> {
            Ok(None)
        }
    }
}
