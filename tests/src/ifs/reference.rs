//! Reference data the simulator validates vouchers against: companies, chart of accounts, code part values,
//! the accounting calendar and voucher types.

use chrono::{Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::model::CODE_PARTS;

/// Code part demand on an account (`ReqCodeB` … `ReqCodeJ`), serialized as a single letter.
///
/// The real IFS enumeration has longer client values; the simulator uses `"M"` (mandatory: the row must
/// carry the code part), `"O"` (optional) and `"N"` (not allowed: the row must leave it empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Demand {
    #[serde(rename = "M")]
    Mandatory,
    #[serde(rename = "O")]
    Optional,
    #[serde(rename = "N")]
    NotAllowed,
}

impl Demand {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mandatory => "M",
            Self::Optional => "O",
            Self::NotAllowed => "N",
        }
    }
}

/// Open or closed accounting period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeriodStatus {
    Open,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Company {
    pub company: String,
    pub name: String,
    /// Accounting currency; the default `CurrencyCode` of rows that give none.
    pub currency: String,
}

/// A GL account of one company.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub company: String,
    pub account: String,
    pub description: String,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
    /// Demands for code parts B..=J (index 0 is B).
    pub req_code: [Demand; 9],
    pub accnt_type: String,
}

/// Earliest and latest validity dates used when none are given.
pub fn default_valid_from() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default()
}

pub fn default_valid_until() -> NaiveDate {
    NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or_default()
}

impl Account {
    /// An account valid 2000-01-01..=9999-12-31 with every code part `NotAllowed`, type `COST`.
    pub fn new(company: &str, account: &str, description: &str) -> Self {
        Self {
            company: company.into(),
            account: account.into(),
            description: description.into(),
            valid_from: default_valid_from(),
            valid_until: default_valid_until(),
            req_code: [Demand::NotAllowed; 9],
            accnt_type: "COST".into(),
        }
    }

    /// Sets the demand for code part `part` (`'B'`..=`'J'`; other letters are ignored).
    pub fn demand(mut self, part: char, demand: Demand) -> Self {
        if let Some(i) = CODE_PARTS.iter().position(|p| *p == part) {
            self.req_code[i] = demand;
        }
        self
    }

    pub fn accnt_type(mut self, t: &str) -> Self {
        self.accnt_type = t.into();
        self
    }

    pub fn valid_until(mut self, until: NaiveDate) -> Self {
        self.valid_until = until;
        self
    }

    pub fn demand_for(&self, part: char) -> Demand {
        CODE_PARTS.iter().position(|p| *p == part).map_or(Demand::NotAllowed, |i| self.req_code[i])
    }
}

/// A value of code part B..=J (cost centre, project, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodePartValue {
    pub company: String,
    /// `'B'`..=`'J'`.
    pub code_part: char,
    pub value: String,
    pub description: String,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
}

impl CodePartValue {
    pub fn new(company: &str, code_part: char, value: &str, description: &str) -> Self {
        Self {
            company: company.into(),
            code_part,
            value: value.into(),
            description: description.into(),
            valid_from: default_valid_from(),
            valid_until: default_valid_until(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountingPeriod {
    pub company: String,
    pub accounting_year: i32,
    pub accounting_period: u32,
    pub date_from: NaiveDate,
    pub date_until: NaiveDate,
    pub status: PeriodStatus,
    /// `YearEndPeriod` client value; monthly periods are `Ordinary`.
    pub year_end_period: String,
}

/// A voucher type of a company.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoucherTypeDef {
    pub company: String,
    pub voucher_type: String,
    pub description: String,
    /// IFS's "Reference Mandatory" setting: every row needs ReferenceSerie and ReferenceNumber.
    pub reference_mandatory: bool,
}

/// Everything the simulator validates against. All fields are public so tests can shape the data freely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceData {
    pub companies: Vec<Company>,
    pub accounts: Vec<Account>,
    pub code_parts: Vec<CodePartValue>,
    pub periods: Vec<AccountingPeriod>,
    pub voucher_types: Vec<VoucherTypeDef>,
    /// Display names of code parts B..=J, used in error messages ("Code part B (Cost Center) …").
    pub code_part_names: [String; 9],
}

impl Default for ReferenceData {
    fn default() -> Self {
        Self::demo()
    }
}

impl ReferenceData {
    /// Opens or closes a period; the period as it is now, or `None` if it does not exist.
    pub fn set_period_status(
        &mut self,
        company: &str,
        year: i32,
        period: u32,
        status: PeriodStatus,
    ) -> Option<&AccountingPeriod> {
        let found = self
            .periods
            .iter_mut()
            .find(|p| p.company == company && p.accounting_year == year && p.accounting_period == period)?;
        found.status = status;
        Some(found)
    }

    /// The demo seed used by the local run and the example mapping, with a calendar for
    /// (current year − 2) ..= (current year + 1), all periods open.
    ///
    /// Companies `10` (USD) and `20` (CAD) share the chart. Code part demands not listed below are `N`
    /// (not allowed): 6500, 6510 and 7500 demand B; 6600 demands B and allows C; 6700 allows B; the
    /// liability, payable and bank-fee accounts take no code parts. 1999 expired on 2020-12-31.
    /// Voucher type `M` (Manual) has "Reference Mandatory" on.
    pub fn demo() -> Self {
        Self::demo_for_year(Utc::now().year(), &[])
    }

    /// [`ReferenceData::demo`] with the calendar centred on `current_year` and the given
    /// `(year, period)` pairs closed in every company.
    pub fn demo_for_year(current_year: i32, closed: &[(i32, u32)]) -> Self {
        let companies = vec![
            Company { company: "10".into(), name: "Acme US".into(), currency: "USD".into() },
            Company { company: "20".into(), name: "Acme Canada".into(), currency: "CAD".into() },
        ];
        let mut accounts = Vec::new();
        let mut code_parts = Vec::new();
        let mut periods = Vec::new();
        let mut voucher_types = Vec::new();
        for c in &companies {
            let co = c.company.as_str();
            accounts.extend([
                Account::new(co, "1999", "Old clearing")
                    .accnt_type("ASSET")
                    .valid_until(NaiveDate::from_ymd_opt(2020, 12, 31).unwrap_or_default()),
                Account::new(co, "2410", "Card liability").accnt_type("LIAB"),
                Account::new(co, "2415", "Card liability CA").accnt_type("LIAB"),
                Account::new(co, "2420", "Employee payable").accnt_type("LIAB"),
                Account::new(co, "6500", "Travel").demand('B', Demand::Mandatory),
                Account::new(co, "6510", "Meals").demand('B', Demand::Mandatory),
                Account::new(co, "6600", "Software").demand('B', Demand::Mandatory).demand('C', Demand::Optional),
                Account::new(co, "6700", "Office supplies").demand('B', Demand::Optional),
                Account::new(co, "7500", "Other G&A").demand('B', Demand::Mandatory),
                Account::new(co, "7900", "Bank fees"),
            ]);
            for (v, d) in [
                ("100", "Sales"),
                ("200", "Engineering"),
                ("300", "Marketing"),
                ("400", "Finance"),
                ("500", "Operations"),
            ] {
                code_parts.push(CodePartValue::new(co, 'B', v, d));
            }
            for (v, d) in [("P100", "Project 100"), ("P200", "Project 200")] {
                code_parts.push(CodePartValue::new(co, 'C', v, d));
            }
            for year in current_year - 2..=current_year + 1 {
                for period in 1..=12u32 {
                    let Some(date_from) = NaiveDate::from_ymd_opt(year, period, 1) else { continue };
                    let next = if period == 12 {
                        NaiveDate::from_ymd_opt(year + 1, 1, 1)
                    } else {
                        NaiveDate::from_ymd_opt(year, period + 1, 1)
                    };
                    let Some(date_until) = next.and_then(|d| d.pred_opt()) else { continue };
                    let status =
                        if closed.contains(&(year, period)) { PeriodStatus::Closed } else { PeriodStatus::Open };
                    periods.push(AccountingPeriod {
                        company: co.into(),
                        accounting_year: year,
                        accounting_period: period,
                        date_from,
                        date_until,
                        status,
                        year_end_period: "Ordinary".into(),
                    });
                }
            }
            voucher_types.push(VoucherTypeDef {
                company: co.into(),
                voucher_type: "M".into(),
                description: "Manual".into(),
                reference_mandatory: true,
            });
        }
        Self {
            companies,
            accounts,
            code_parts,
            periods,
            voucher_types,
            code_part_names: [
                "Cost Center",
                "Project",
                "Object",
                "Code E",
                "Code F",
                "Code G",
                "Code H",
                "Code I",
                "Code J",
            ]
            .map(String::from),
        }
    }

    /// The demo seed plus `accounts` generated accounts (`100000`, `100001`, … with `ReqCodeB` optional)
    /// and `cost_centres` generated code B values (`CC000000`, …), all in company `10`: big lists for
    /// paging tests.
    pub fn with_generated(accounts: usize, cost_centres: usize) -> Self {
        let mut data = Self::demo();
        for i in 0..accounts {
            let no = format!("{}", 100_000 + i);
            data.accounts
                .push(Account::new("10", &no, &format!("Generated account {no}")).demand('B', Demand::Optional));
        }
        for i in 0..cost_centres {
            let v = format!("CC{i:06}");
            data.code_parts.push(CodePartValue::new("10", 'B', &v, &format!("Generated cost centre {v}")));
        }
        data
    }

    pub fn company(&self, company: &str) -> Option<&Company> {
        self.companies.iter().find(|c| c.company == company)
    }

    pub fn account(&self, company: &str, account: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.company == company && a.account == account)
    }

    pub fn code_part(&self, company: &str, part: char, value: &str) -> Option<&CodePartValue> {
        self.code_parts.iter().find(|c| c.company == company && c.code_part == part && c.value == value)
    }

    pub fn period(&self, company: &str, year: i32, period: u32) -> Option<&AccountingPeriod> {
        self.periods.iter().find(|p| p.company == company && p.accounting_year == year && p.accounting_period == period)
    }

    pub fn voucher_type(&self, company: &str, voucher_type: &str) -> Option<&VoucherTypeDef> {
        self.voucher_types.iter().find(|v| v.company == company && v.voucher_type == voucher_type)
    }

    /// Display name of a code part letter.
    pub fn code_part_name(&self, part: char) -> &str {
        CODE_PARTS.iter().position(|p| *p == part).map_or("", |i| self.code_part_names[i].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_has_the_documented_chart_and_calendar() {
        let d = ReferenceData::demo_for_year(2026, &[(2025, 12)]);
        assert_eq!(d.company("20").unwrap().currency, "CAD");
        let travel = d.account("10", "6500").unwrap();
        assert_eq!(travel.demand_for('B'), Demand::Mandatory);
        assert_eq!(travel.demand_for('C'), Demand::NotAllowed);
        assert_eq!(d.account("20", "6600").unwrap().demand_for('C'), Demand::Optional);
        assert_eq!(d.account("10", "1999").unwrap().valid_until, NaiveDate::from_ymd_opt(2020, 12, 31).unwrap());
        assert_eq!(d.periods.iter().filter(|p| p.company == "10").count(), 48);
        let feb = d.period("10", 2024, 2).unwrap();
        assert_eq!(feb.date_until, NaiveDate::from_ymd_opt(2024, 2, 29).unwrap());
        assert_eq!(d.period("10", 2025, 12).unwrap().status, PeriodStatus::Closed);
        assert_eq!(d.period("10", 2026, 1).unwrap().status, PeriodStatus::Open);
        assert!(d.code_part("10", 'B', "200").is_some());
        assert!(d.code_part("10", 'C', "200").is_none());
        assert!(d.voucher_type("10", "M").unwrap().reference_mandatory);
    }

    #[test]
    fn generated_chart_is_additive() {
        let d = ReferenceData::with_generated(50, 7);
        assert_eq!(d.accounts.iter().filter(|a| a.company == "10").count(), 60);
        assert!(d.account("10", "100049").is_some());
        assert_eq!(d.code_parts.iter().filter(|c| c.company == "10" && c.code_part == 'B').count(), 12);
    }
}
