//! The reference reader: accounts (with their code-part demands), code-part values and the accounting
//! calendar, read through the transport. It owns its cache, shared by its clones (one per Lambda instance),
//! kept for a few minutes: reference data changes rarely, and a closed period or a new account should still
//! be noticed within one cache lifetime.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Datelike, NaiveDate};
use serde_json::{Map, Value};
use tokio::time::{Duration, Instant};

use super::api_names::IfsApiNames;
use super::error::IfsError;
use super::filter::{Filter, key_literal};
use super::transport::{IfsTransport, ListQuery};
use crate::domain::{AccountCode, CodePartValue, CompanyCode};
use crate::error::ExternalError;
use crate::ports::ReferenceSource;
use crate::ports::{AccountInfo, ChartOfAccounts, Demand};
use crate::proposal::CodePart;

/// How long a reference answer is trusted.
pub const REFERENCE_TTL: Duration = Duration::from_secs(300);

/// A value of code part B…J.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodePartInfo {
    pub company: CompanyCode,
    pub code_part: CodePart,
    pub value: CodePartValue,
    pub description: String,
    pub valid_from: Option<NaiveDate>,
    pub valid_until: Option<NaiveDate>,
}

impl CodePartInfo {
    pub fn is_valid_on(&self, date: NaiveDate) -> bool {
        self.valid_from.is_none_or(|from| from <= date) && self.valid_until.is_none_or(|until| date <= until)
    }
}

/// One period of IFS's accounting calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountingPeriodInfo {
    pub company: CompanyCode,
    pub accounting_year: i32,
    pub accounting_period: u32,
    pub date_from: NaiveDate,
    pub date_until: NaiveDate,
    /// `PeriodStatus` is `Open`. A closed (or otherwise not open) period refuses vouchers.
    pub open: bool,
    /// `YearEndPeriod` (`Ordinary`, or a year opening/closing period that shares dates with an ordinary one).
    pub year_end_period: Option<String>,
}

impl AccountingPeriodInfo {
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.date_from <= date && date <= self.date_until
    }

    /// Not a year opening or closing period.
    pub fn is_ordinary(&self) -> bool {
        self.year_end_period.as_deref().is_none_or(|p| p.eq_ignore_ascii_case("ordinary"))
    }
}

struct Entry<T> {
    at: Instant,
    value: T,
}

type Cache<K, T> = Mutex<HashMap<K, Entry<T>>>;

#[derive(Default)]
struct ReferenceCache {
    accounts: Cache<(CompanyCode, AccountCode), Option<AccountInfo>>,
    /// Companies whose whole chart was read within the TTL.
    charts: Cache<CompanyCode, ()>,
    periods: Cache<(CompanyCode, i32), Vec<AccountingPeriodInfo>>,
}

fn fresh<K: std::hash::Hash + Eq, T: Clone>(map: &Mutex<HashMap<K, Entry<T>>>, key: &K) -> Option<T> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.get(key).filter(|e| e.at.elapsed() < REFERENCE_TTL).map(|e| e.value.clone())
}

fn store<K: std::hash::Hash + Eq, T>(map: &Mutex<HashMap<K, Entry<T>>>, key: K, value: T) {
    map.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Entry { at: Instant::now(), value });
}

fn text(row: &Map<String, Value>, name: &str) -> Option<String> {
    row.get(name).and_then(Value::as_str).map(str::to_owned)
}

fn date(row: &Map<String, Value>, name: &str) -> Result<Option<NaiveDate>, IfsError> {
    match row.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d")
            .map(Some)
            .map_err(|_| IfsError::Decode(format!("{name}: not a date: {s:?}"))),
        Some(other) => Err(IfsError::Decode(format!("{name}: not a date: {other}"))),
    }
}

/// Integers may come as JSON numbers or, under `IEEE754Compatible=true`, as strings.
pub(crate) fn int(row: &Map<String, Value>, name: &str) -> Result<i64, IfsError> {
    match row.get(name) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| IfsError::Decode(format!("{name}: missing or not an integer")))
}

/// `ReqCodeX` → demand. The simulator (and older tailorings) say `M`/`O`/`N`; client values spelled out
/// are accepted too. An absent demand constrains nothing.
pub fn parse_demand(value: Option<&str>) -> Result<Demand, IfsError> {
    match value.map(str::trim) {
        None | Some("") => Ok(Demand::Optional),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "m" | "mandatory" => Ok(Demand::Mandatory),
            "o" | "optional" => Ok(Demand::Optional),
            "n" | "notallowed" | "not_allowed" | "blocked" | "never" => Ok(Demand::Blocked),
            _ => Err(IfsError::Decode(format!("unknown code part demand {v:?}"))),
        },
    }
}

pub(crate) fn account_from_row(row: &Map<String, Value>) -> Result<AccountInfo, IfsError> {
    let company = text(row, "Company").unwrap_or_default();
    let account = text(row, "Account").unwrap_or_default();
    let mut demands = BTreeMap::new();
    for part in CodePart::ALL {
        demands.insert(part, parse_demand(row.get(part.demand_property()).and_then(Value::as_str))?);
    }
    Ok(AccountInfo {
        company: CompanyCode::parse(&company).map_err(|e| IfsError::Decode(e.to_string()))?,
        account: AccountCode::parse(&account).map_err(|e| IfsError::Decode(e.to_string()))?,
        description: text(row, "Description").unwrap_or_default(),
        valid_from: date(row, "ValidFrom")?,
        valid_until: date(row, "ValidUntil")?,
        demands,
    })
}

pub(crate) fn period_from_row(
    company: &CompanyCode,
    row: &Map<String, Value>,
) -> Result<AccountingPeriodInfo, IfsError> {
    let missing = |name: &str| IfsError::Decode(format!("AccountingPeriod: {name} missing"));
    Ok(AccountingPeriodInfo {
        company: company.clone(),
        accounting_year: i32::try_from(int(row, "AccountingYear")?).map_err(|_| missing("AccountingYear"))?,
        accounting_period: u32::try_from(int(row, "AccountingPeriod")?).map_err(|_| missing("AccountingPeriod"))?,
        date_from: date(row, "DateFrom")?.ok_or_else(|| missing("DateFrom"))?,
        date_until: date(row, "DateUntil")?.ok_or_else(|| missing("DateUntil"))?,
        open: text(row, "PeriodStatus").is_some_and(|s| s.eq_ignore_ascii_case("open")),
        year_end_period: text(row, "YearEndPeriod"),
    })
}

/// The period a voucher dated `date` belongs to: an ordinary one if there is, else any that contains it.
pub fn period_for_date(periods: &[AccountingPeriodInfo], date: NaiveDate) -> Option<&AccountingPeriodInfo> {
    periods.iter().find(|p| p.contains(date) && p.is_ordinary()).or_else(|| periods.iter().find(|p| p.contains(date)))
}

/// Reads IFS's reference data through a transport, and caches it. Clones share the cache.
#[derive(Clone)]
pub struct IfsReference {
    transport: IfsTransport,
    cache: Arc<ReferenceCache>,
}

impl std::fmt::Debug for IfsReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IfsReference").field("transport", &self.transport).finish_non_exhaustive()
    }
}

impl IfsReference {
    /// A reader with an empty cache.
    pub fn new(transport: IfsTransport) -> Self {
        Self { transport, cache: Arc::default() }
    }

    /// One account, or `None` when IFS does not know it. The first miss for a company reads its whole chart
    /// (one paged list, usually one request) instead of one GET per account: a cold instance posting a batch
    /// meets several accounts at once. A miss after that (an account created since) is one GET.
    pub async fn account(&self, company: &CompanyCode, account: &AccountCode) -> Result<Option<AccountInfo>, IfsError> {
        let key = (company.clone(), account.clone());
        if let Some(hit) = fresh(&self.cache.accounts, &key) {
            return Ok(hit);
        }
        if fresh(&self.cache.charts, company).is_none() {
            self.list_accounts(company).await?;
            if let Some(hit) = fresh(&self.cache.accounts, &key) {
                return Ok(hit);
            }
        }
        let api = self.transport.api();
        let path = format!(
            "{}/{}(Company={},Account={})",
            api.accounts_projection,
            api.accounts_set,
            key_literal(company.as_str()),
            key_literal(account.as_str())
        );
        let info = match self.transport.get_entity::<Map<String, Value>>(&path).await? {
            Some((row, _)) => Some(account_from_row(&row)?),
            None => None,
        };
        store(&self.cache.accounts, key, info.clone());
        Ok(info)
    }

    /// The whole chart of accounts of a company (also fills the per-account cache).
    pub async fn list_accounts(&self, company: &CompanyCode) -> Result<Vec<AccountInfo>, IfsError> {
        let api = self.transport.api();
        let query = ListQuery {
            filter: Some(Filter::eq_str("Company", company.as_str())),
            orderby: vec!["Company".into(), "Account".into()],
            ..ListQuery::default()
        };
        let rows: Vec<Map<String, Value>> =
            self.transport.list_all(&format!("{}/{}", api.accounts_projection, api.accounts_set), &query).await?;
        let (accounts, skipped) = parse_all(&rows, account_from_row);
        if skipped > 0 {
            tracing::warn!(company = %company, skipped, "IFS accounts with codes outside the supported alphabet were skipped");
        }
        for info in &accounts {
            store(&self.cache.accounts, (info.company.clone(), info.account.clone()), Some(info.clone()));
        }
        store(&self.cache.charts, company.clone(), ());
        Ok(accounts)
    }

    /// Every value of code part `part` in a company.
    pub async fn list_code_part_values(
        &self,
        company: &CompanyCode,
        part: CodePart,
    ) -> Result<Vec<CodePartInfo>, IfsError> {
        let (projection, set) = IfsApiNames::code_part_projection(part);
        let query = ListQuery {
            filter: Some(Filter::eq_str("Company", company.as_str())),
            orderby: vec!["Company".into(), part.property().into()],
            ..ListQuery::default()
        };
        let rows: Vec<Map<String, Value>> = self.transport.list_all(&format!("{projection}/{set}"), &query).await?;
        let (values, skipped) = parse_all(&rows, |row| {
            Ok(CodePartInfo {
                company: company.clone(),
                code_part: part,
                value: CodePartValue::parse(&text(row, part.property()).unwrap_or_default())
                    .map_err(|e| IfsError::Decode(e.to_string()))?,
                description: text(row, "Description").unwrap_or_default(),
                valid_from: date(row, "ValidFrom")?,
                valid_until: date(row, "ValidUntil")?,
            })
        });
        if skipped > 0 {
            tracing::warn!(company = %company, %part, skipped, "IFS code part values outside the supported alphabet were skipped");
        }
        Ok(values)
    }

    /// The periods of one accounting year (cached per company and year).
    pub async fn accounting_periods(
        &self,
        company: &CompanyCode,
        year: i32,
    ) -> Result<Vec<AccountingPeriodInfo>, IfsError> {
        if let Some(hit) = fresh(&self.cache.periods, &(company.clone(), year)) {
            return Ok(hit);
        }
        self.fetch_accounting_periods(company, year).await
    }

    /// The periods of one accounting year read from IFS now, past the cache (which they refill): for the
    /// reference refresh, which must see a period closed a minute ago.
    pub async fn fetch_accounting_periods(
        &self,
        company: &CompanyCode,
        year: i32,
    ) -> Result<Vec<AccountingPeriodInfo>, IfsError> {
        let key = (company.clone(), year);
        let api = self.transport.api();
        let query = ListQuery {
            filter: Some(
                Filter::eq_str("Company", company.as_str()).and(Filter::eq_num("AccountingYear", year.into())),
            ),
            orderby: vec!["AccountingPeriod".into()],
            ..ListQuery::default()
        };
        let rows: Vec<Map<String, Value>> =
            self.transport.list_all(&format!("{}/{}", api.periods_projection, api.periods_set), &query).await?;
        let periods = rows.iter().map(|row| period_from_row(company, row)).collect::<Result<Vec<_>, _>>()?;
        store(&self.cache.periods, key, periods.clone());
        Ok(periods)
    }

    /// The company's name for a code part (`AccountingCodeParts.CodeName`, e.g. "Cost Center"), read through
    /// the one-to-one reference `CodePartValuesHandling.svc/CompanyFinanceSet(Company=…)/AccountingCodePartBRef`.
    /// `None` when IFS has no definition for it.
    pub async fn code_part_name(&self, company: &CompanyCode, part: CodePart) -> Result<Option<String>, IfsError> {
        let letter = &part.property()[4..];
        let path = format!(
            "CodePartValuesHandling.svc/CompanyFinanceSet(Company={})/AccountingCodePart{letter}Ref",
            key_literal(company.as_str())
        );
        let row = self.transport.get_entity::<Map<String, Value>>(&path).await?;
        Ok(row.and_then(|(row, _)| text(&row, "CodeName")).filter(|name| !name.trim().is_empty()))
    }

    /// The accounting year and period of a date from IFS's calendar, with whether it is open. Fiscal years
    /// need not match calendar years, so the neighbouring years are looked at when the date's own has no
    /// period for it.
    pub async fn accounting_period(
        &self,
        company: &CompanyCode,
        date: NaiveDate,
    ) -> Result<Option<AccountingPeriodInfo>, IfsError> {
        for year in [date.year(), date.year() + 1, date.year() - 1] {
            let periods = self.accounting_periods(company, year).await?;
            if let Some(found) = period_for_date(&periods, date) {
                return Ok(Some(found.clone()));
            }
        }
        Ok(None)
    }
}

/// Parses every row, skipping (and counting) those that do not fit our identifier types.
fn parse_all<T>(
    rows: &[Map<String, Value>],
    parse: impl Fn(&Map<String, Value>) -> Result<T, IfsError>,
) -> (Vec<T>, usize) {
    let mut skipped = 0;
    let parsed = rows
        .iter()
        .filter_map(|row| match parse(row) {
            Ok(v) => Some(v),
            Err(e) => {
                skipped += 1;
                tracing::debug!(error = %e, "skipping IFS reference row");
                None
            }
        })
        .collect();
    (parsed, skipped)
}

#[async_trait]
impl ChartOfAccounts for IfsReference {
    async fn account(
        &self,
        company: &CompanyCode,
        account: &AccountCode,
    ) -> Result<Option<AccountInfo>, ExternalError> {
        IfsReference::account(self, company, account).await.map_err(ExternalError::from)
    }

    async fn calendar(
        &self,
        company: &CompanyCode,
        year: i32,
        fresh: bool,
    ) -> Result<Vec<AccountingPeriodInfo>, ExternalError> {
        let periods = if fresh {
            self.fetch_accounting_periods(company, year).await
        } else {
            IfsReference::accounting_periods(self, company, year).await
        };
        periods.map_err(ExternalError::from)
    }
}

/// The reference refresh reads through the same reader (and its cache and request budget).
#[async_trait]
impl ReferenceSource for IfsReference {
    async fn accounts(&self, company: &CompanyCode) -> Result<Vec<AccountInfo>, ExternalError> {
        self.list_accounts(company).await.map_err(ExternalError::from)
    }

    async fn code_part_values(
        &self,
        company: &CompanyCode,
        part: CodePart,
    ) -> Result<Vec<CodePartInfo>, ExternalError> {
        self.list_code_part_values(company, part).await.map_err(ExternalError::from)
    }

    async fn code_part_name(&self, company: &CompanyCode, part: CodePart) -> Result<Option<String>, ExternalError> {
        IfsReference::code_part_name(self, company, part).await.map_err(ExternalError::from)
    }

    async fn accounting_periods(
        &self,
        company: &CompanyCode,
        year: i32,
    ) -> Result<Vec<AccountingPeriodInfo>, ExternalError> {
        self.fetch_accounting_periods(company, year).await.map_err(ExternalError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn account_rows_map_demands_and_validity() {
        let row = obj(json!({
            "@odata.etag": "W/\"x\"", "Company": "10", "Account": "6600", "Description": "Software",
            "ValidFrom": "2000-01-01", "ValidUntil": "9999-12-31",
            "ReqCodeB": "M", "ReqCodeC": "O", "ReqCodeD": "N", "ReqCodeE": "Blocked", "ReqCodeF": "Mandatory"
        }));
        let info = account_from_row(&row).unwrap();
        assert_eq!(info.account.as_str(), "6600");
        assert_eq!(info.demands[&CodePart::B], Demand::Mandatory);
        assert_eq!(info.demands[&CodePart::C], Demand::Optional);
        assert_eq!(info.demands[&CodePart::D], Demand::Blocked);
        assert_eq!(info.demands[&CodePart::E], Demand::Blocked);
        assert_eq!(info.demands[&CodePart::F], Demand::Mandatory);
        assert_eq!(info.demands[&CodePart::J], Demand::Optional, "absent demand constrains nothing");
        assert!(info.is_valid_on(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()));
        assert!(parse_demand(Some("X")).is_err());
        let bad = obj(json!({"Company": "10", "Account": "6500", "ValidFrom": "01/01/2000"}));
        assert!(account_from_row(&bad).is_err());
    }

    #[test]
    fn the_ordinary_period_containing_the_date_wins() {
        let co = CompanyCode::parse("10").unwrap();
        let rows = [
            json!({"AccountingYear": 2026, "AccountingPeriod": 0, "DateFrom": "2026-01-01", "DateUntil": "2026-01-01", "PeriodStatus": "Open", "YearEndPeriod": "YearOpening"}),
            json!({"AccountingYear": "2026", "AccountingPeriod": "1", "DateFrom": "2026-01-01", "DateUntil": "2026-01-31", "PeriodStatus": "Closed", "YearEndPeriod": "Ordinary"}),
            json!({"AccountingYear": 2026, "AccountingPeriod": 2, "DateFrom": "2026-02-01", "DateUntil": "2026-02-28", "PeriodStatus": "Open"}),
        ];
        let periods: Vec<_> = rows.iter().map(|r| period_from_row(&co, r.as_object().unwrap()).unwrap()).collect();
        let jan1 = period_for_date(&periods, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()).unwrap();
        assert_eq!((jan1.accounting_period, jan1.open), (1, false));
        let feb = period_for_date(&periods, NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()).unwrap();
        assert_eq!((feb.accounting_year, feb.accounting_period, feb.open), (2026, 2, true));
        assert!(period_for_date(&periods, NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()).is_none());
    }
}
