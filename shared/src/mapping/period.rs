//! Closed accounting periods, decided before anything is posted: which period a record's voucher goes into
//! under `[ifs] closed_period` (see [`ClosedPeriodPolicy`]), and when a company's current period is about to
//! close (`connector doctor`'s warning). The rules are pure functions of IFS's calendar; reading the
//! calendar goes through the chart port ([`ChartOfAccounts::calendar`]).

use chrono::{Datelike, NaiveDate};

use super::document::ClosedPeriodPolicy;
use super::error::MappingError;
use crate::error::ExternalError;
use crate::ifs::AccountingPeriodInfo;
use crate::ifs::reference::period_for_date;
use crate::ports::ChartOfAccounts;
use crate::proposal::{MAX_ROW_TEXT, Proposal};

/// Where a date stands in a company's calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodChoice<'a> {
    /// The period containing the date is open: post as dated.
    Open(&'a AccountingPeriodInfo),
    /// The period containing the date is closed; `next_open` is the first open ordinary period after it.
    Closed { closed: &'a AccountingPeriodInfo, next_open: Option<&'a AccountingPeriodInfo> },
    /// No period contains the date: IFS refuses it whatever the policy (no period to reopen or move from).
    Unknown,
}

/// The first open ordinary period starting after `after` (year opening/closing periods are not for
/// everyday vouchers).
pub fn next_open_period(periods: &[AccountingPeriodInfo], after: NaiveDate) -> Option<&AccountingPeriodInfo> {
    periods.iter().filter(|p| p.open && p.is_ordinary() && p.date_from > after).min_by_key(|p| p.date_from)
}

/// Where `date` stands in `periods` (any order, several years at once).
pub fn choose_period(periods: &[AccountingPeriodInfo], date: NaiveDate) -> PeriodChoice<'_> {
    match period_for_date(periods, date) {
        None => PeriodChoice::Unknown,
        Some(period) if period.open => PeriodChoice::Open(period),
        Some(closed) => PeriodChoice::Closed { closed, next_open: next_open_period(periods, closed.date_until) },
    }
}

/// `2026/10`.
pub fn period_label(period: &AccountingPeriodInfo) -> String {
    format!("{}/{:02}", period.accounting_year, period.accounting_period)
}

/// The calendar around `date`: its own year first, and the neighbouring years (fiscal years need not be
/// calendar years) only when the date's period is not plainly open — the usual case costs one cached read.
async fn calendar_around(
    chart: &dyn ChartOfAccounts,
    proposal: &Proposal,
    fresh: bool,
) -> Result<Vec<AccountingPeriodInfo>, MappingError> {
    let date = proposal.voucher_date;
    let read = |year: i32| chart.calendar(&proposal.company, year, fresh);
    let wrap = |source: ExternalError| MappingError::Chart { record: proposal.reference_number.clone(), source };
    let mut periods = read(date.year()).await.map_err(wrap)?;
    if matches!(choose_period(&periods, date), PeriodChoice::Open(_)) {
        return Ok(periods);
    }
    for year in [date.year() + 1, date.year() - 1] {
        periods.extend(read(year).await.map_err(wrap)?);
    }
    Ok(periods)
}

/// Applies the closed-period policy to a proposal before it is validated and posted. `fail` reads nothing
/// (IFS refuses the voucher: today's behaviour). Otherwise a date in a closed period is, under `next_open`,
/// moved to the first day of the next open period with the original date appended to every row text (the
/// returned note says so, for the audit trail), and under `hold` an error that holds the record until the
/// period is reopened. A period seen closed is read again past the cache first, so one reopened a minute
/// ago is noticed at once (the replay after the fix).
pub async fn settle_period(
    proposal: &mut Proposal,
    policy: ClosedPeriodPolicy,
    chart: &dyn ChartOfAccounts,
) -> Result<Option<String>, MappingError> {
    if policy == ClosedPeriodPolicy::Fail {
        return Ok(None);
    }
    let date = proposal.voucher_date;
    let cached = calendar_around(chart, proposal, false).await?;
    if !matches!(choose_period(&cached, date), PeriodChoice::Closed { .. }) {
        return Ok(None);
    }
    let periods = calendar_around(chart, proposal, true).await?;
    let (closed, next_open) = match choose_period(&periods, date) {
        PeriodChoice::Closed { closed, next_open } => (closed, next_open),
        PeriodChoice::Open(_) | PeriodChoice::Unknown => return Ok(None),
    };
    match (policy, next_open) {
        (ClosedPeriodPolicy::NextOpen, Some(next)) => {
            let note = format!(
                "voucher date moved from {date} (period {} of company {} is closed) to {}, the first day of the \
                 next open period {}",
                period_label(closed),
                proposal.company,
                next.date_from,
                period_label(next)
            );
            move_to(proposal, next.date_from);
            Ok(Some(note))
        }
        (ClosedPeriodPolicy::NextOpen, None) => Err(MappingError::NoOpenPeriod {
            record: proposal.reference_number.clone(),
            company: proposal.company.clone(),
            date,
            closed: period_label(closed),
        }),
        _ => Err(closed_error(proposal, closed, policy)),
    }
}

fn closed_error(proposal: &Proposal, closed: &AccountingPeriodInfo, policy: ClosedPeriodPolicy) -> MappingError {
    MappingError::PeriodClosed {
        record: proposal.reference_number.clone(),
        company: proposal.company.clone(),
        date: proposal.voucher_date,
        period: period_label(closed),
        policy,
    }
}

/// Dates the voucher `to`, keeping the record's own date in every row's text (cut so the note fits).
fn move_to(proposal: &mut Proposal, to: NaiveDate) {
    let note = format!(" (Brex date {})", proposal.voucher_date);
    for row in &mut proposal.rows {
        let room = MAX_ROW_TEXT.saturating_sub(note.chars().count());
        let mut text: String = row.text.chars().take(room).collect();
        text.truncate(text.trim_end().len());
        text.push_str(&note);
        row.text = text.trim_start().to_owned();
    }
    proposal.voucher_date = to;
}

/// After IFS refused a voucher on its merits: was it the period, closed since the cached calendar was read?
/// Under `hold` that holds the record, under `next_open` it is retried (the redelivery moves it); `None`
/// keeps IFS's verdict (always under `fail`, and whenever the period is open after all).
pub async fn recheck_refusal(
    proposal: &Proposal,
    policy: ClosedPeriodPolicy,
    refusal: &ExternalError,
    chart: &dyn ChartOfAccounts,
) -> Option<MappingError> {
    if policy == ClosedPeriodPolicy::Fail || refusal.disposition != crate::error::Disposition::Permanent {
        return None;
    }
    let periods = calendar_around(chart, proposal, true).await.ok()?;
    match choose_period(&periods, proposal.voucher_date) {
        PeriodChoice::Closed { closed, .. } => Some(closed_error(proposal, closed, policy)),
        _ => None,
    }
}

/// How many days ahead `connector doctor` warns that a company's current period ends.
pub const CLOSING_SOON_DAYS: i64 = 3;

/// A mapped company's current period that ends soon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosingSoon {
    pub current: AccountingPeriodInfo,
    /// Whole days from today to the period's last day (0: today is the last day).
    pub days_left: i64,
    pub next_open: Option<AccountingPeriodInfo>,
}

impl std::fmt::Display for ClosingSoon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = match self.days_left {
            0 => "today".to_owned(),
            1 => "tomorrow".to_owned(),
            n => format!("in {n} days"),
        };
        write!(
            f,
            "company {}: period {} ends {} ({days})",
            self.current.company,
            period_label(&self.current),
            self.current.date_until
        )?;
        match &self.next_open {
            Some(next) => write!(f, "; the next open period is {} from {}", period_label(next), next.date_from),
            None => write!(f, "; no open period follows it in IFS's calendar"),
        }
    }
}

/// The current period when it is open and its last day is at most `within_days` days after `today`, with
/// the next open period. A current period that is closed or missing is the reference validation's finding,
/// not a warning about the future.
pub fn closing_soon(periods: &[AccountingPeriodInfo], today: NaiveDate, within_days: i64) -> Option<ClosingSoon> {
    let current = period_for_date(periods, today).filter(|p| p.open)?;
    let days_left = (current.date_until - today).num_days();
    (days_left <= within_days).then(|| ClosingSoon {
        current: current.clone(),
        days_left,
        next_open: next_open_period(periods, current.date_until).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use rust_decimal::Decimal;

    use super::*;
    use crate::domain::{AccountCode, CompanyCode, CurrencyCode};
    use crate::error::{Classify, Disposition};
    use crate::ports::AccountInfo;
    use crate::proposal::{ProposalRow, Side, VoucherStatus};

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// Monthly periods of 2026 and 2027 for company 10; `closed` lists (year, month).
    fn calendar(closed: &[(i32, u32)]) -> Vec<AccountingPeriodInfo> {
        let mut out = Vec::new();
        for year in [2026, 2027] {
            for month in 1..=12u32 {
                let from = day(year, month, 1);
                let until = if month == 12 { day(year, 12, 31) } else { day(year, month + 1, 1).pred_opt().unwrap() };
                out.push(AccountingPeriodInfo {
                    company: CompanyCode::parse("10").unwrap(),
                    accounting_year: year,
                    accounting_period: month,
                    date_from: from,
                    date_until: until,
                    open: !closed.contains(&(year, month)),
                    year_end_period: Some("Ordinary".into()),
                });
            }
        }
        out
    }

    #[test]
    fn a_closed_period_points_at_the_first_open_one_after_it() {
        let periods = calendar(&[(2026, 10), (2026, 11)]);
        assert!(matches!(choose_period(&periods, day(2026, 9, 30)), PeriodChoice::Open(p) if p.accounting_period == 9));
        match choose_period(&periods, day(2026, 10, 28)) {
            PeriodChoice::Closed { closed, next_open: Some(next) } => {
                assert_eq!(period_label(closed), "2026/10");
                assert_eq!((period_label(next), next.date_from), ("2026/12".into(), day(2026, 12, 1)));
            }
            other => panic!("{other:?}"),
        }
        // Across the year end, and none at all when everything after is closed.
        let periods = calendar(&[(2026, 12)]);
        match choose_period(&periods, day(2026, 12, 31)) {
            PeriodChoice::Closed { next_open: Some(next), .. } => assert_eq!(period_label(next), "2027/01"),
            other => panic!("{other:?}"),
        }
        let all_closed: Vec<(i32, u32)> = (10..=12).map(|m| (2026, m)).chain((1..=12).map(|m| (2027, m))).collect();
        let periods = calendar(&all_closed);
        assert!(matches!(choose_period(&periods, day(2026, 10, 2)), PeriodChoice::Closed { next_open: None, .. }));
        assert_eq!(choose_period(&periods, day(2030, 1, 1)), PeriodChoice::Unknown);
    }

    #[test]
    fn year_end_periods_are_not_moved_into() {
        let mut periods = calendar(&[(2026, 12)]);
        // A year-closing period sharing 2026-12-31 and open: not an ordinary period to post everyday vouchers in.
        periods.push(AccountingPeriodInfo {
            accounting_period: 13,
            date_from: day(2026, 12, 31),
            date_until: day(2026, 12, 31),
            year_end_period: Some("YearClosing".into()),
            ..periods[11].clone()
        });
        periods.retain(|p| !(p.accounting_year == 2027 && p.accounting_period == 1));
        match choose_period(&periods, day(2026, 12, 15)) {
            PeriodChoice::Closed { next_open: Some(next), .. } => assert_eq!(period_label(next), "2027/02"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_doctor_warns_days_ahead_and_names_the_next_open_period() {
        let periods = calendar(&[(2026, 11)]);
        let soon = closing_soon(&periods, day(2026, 10, 29), 3).expect("Oct 31 is 2 days away");
        assert_eq!((period_label(&soon.current), soon.days_left), ("2026/10".into(), 2));
        assert_eq!(soon.next_open.as_ref().map(period_label).as_deref(), Some("2026/12"), "November is closed");
        let text = soon.to_string();
        assert!(text.contains("period 2026/10 ends 2026-10-31 (in 2 days)") && text.contains("2026/12"), "{text}");
        assert_eq!(closing_soon(&periods, day(2026, 10, 28), 3).map(|s| s.days_left), Some(3), "the edge warns");
        assert!(closing_soon(&periods, day(2026, 10, 27), 3).is_none(), "4 days ahead: not yet");
        assert!(closing_soon(&periods, day(2026, 10, 31), 3).unwrap().to_string().contains("(today)"));
        assert!(closing_soon(&periods, day(2026, 11, 29), 3).is_none(), "a closed current period is not a warning");
        assert!(closing_soon(&periods, day(2031, 1, 1), 3).is_none(), "no period: the validation's finding");
        let last = closing_soon(&calendar(&[]), day(2027, 12, 30), 3).unwrap();
        assert!(last.next_open.is_none() && last.to_string().contains("no open period follows"), "{last}");
    }

    /// A chart that only knows a calendar, counting reads by freshness; `stale` is what its cache says.
    struct Calendar {
        now: Vec<AccountingPeriodInfo>,
        stale: Vec<AccountingPeriodInfo>,
        reads: Mutex<Vec<(i32, bool)>>,
    }

    #[async_trait]
    impl ChartOfAccounts for Calendar {
        async fn account(&self, _: &CompanyCode, _: &AccountCode) -> Result<Option<AccountInfo>, ExternalError> {
            Ok(None)
        }

        async fn calendar(
            &self,
            _: &CompanyCode,
            year: i32,
            fresh: bool,
        ) -> Result<Vec<AccountingPeriodInfo>, ExternalError> {
            self.reads.lock().unwrap().push((year, fresh));
            let source = if fresh { &self.now } else { &self.stale };
            Ok(source.iter().filter(|p| p.accounting_year == year).cloned().collect())
        }
    }

    fn chart(now: &[(i32, u32)], stale: &[(i32, u32)]) -> Calendar {
        Calendar { now: calendar(now), stale: calendar(stale), reads: Mutex::new(Vec::new()) }
    }

    fn proposal(date: NaiveDate, texts: &[&str]) -> Proposal {
        let rows = texts
            .iter()
            .map(|t| ProposalRow {
                account: AccountCode::parse("6500").unwrap(),
                code_parts: BTreeMap::new(),
                side: Side::Debit,
                amount: Decimal::ONE,
                currency: CurrencyCode::parse("USD").unwrap(),
                currency_rate: None,
                text: (*t).to_owned(),
            })
            .collect();
        crate::proposal::test_proposal(VoucherStatus::NotApproved, date, rows)
    }

    #[tokio::test]
    async fn next_open_moves_the_date_and_keeps_the_original_in_the_row_text() {
        let c = chart(&[(2026, 10), (2026, 11)], &[(2026, 10), (2026, 11)]);
        let long = "x".repeat(MAX_ROW_TEXT);
        let mut p = proposal(day(2026, 10, 28), &["Delta team offsite", &long]);
        let note = settle_period(&mut p, ClosedPeriodPolicy::NextOpen, &c).await.unwrap().expect("moved");
        assert_eq!(p.voucher_date, day(2026, 12, 1));
        assert_eq!(p.rows[0].text, "Delta team offsite (Brex date 2026-10-28)");
        assert_eq!(p.rows[1].text.chars().count(), MAX_ROW_TEXT);
        assert!(p.rows[1].text.ends_with(" (Brex date 2026-10-28)"), "the note survives a full text");
        assert!(note.contains("2026-10-28") && note.contains("2026/10") && note.contains("2026/12"), "{note}");

        // An open date is left alone, read once from the cache.
        let mut open = proposal(day(2026, 9, 3), &["a"]);
        let c = chart(&[(2026, 10)], &[(2026, 10)]);
        assert_eq!(settle_period(&mut open, ClosedPeriodPolicy::NextOpen, &c).await.unwrap(), None);
        assert_eq!((open.voucher_date, open.rows[0].text.as_str()), (day(2026, 9, 3), "a"));
        assert_eq!(*c.reads.lock().unwrap(), vec![(2026, false)]);
    }

    #[tokio::test]
    async fn hold_holds_with_the_fix_and_fail_reads_nothing() {
        let c = chart(&[(2026, 10)], &[(2026, 10)]);
        let mut p = proposal(day(2026, 10, 28), &["a"]);
        let err = settle_period(&mut p, ClosedPeriodPolicy::Hold, &c).await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Hold);
        let fix = err.fix().unwrap();
        assert!(
            fix.contains("reopen period 2026/10 of company 10 in IFS") && fix.contains("connector replay"),
            "{fix}"
        );
        assert_eq!(p.voucher_date, day(2026, 10, 28), "not moved");

        let fail = chart(&[(2026, 10)], &[(2026, 10)]);
        assert_eq!(settle_period(&mut p, ClosedPeriodPolicy::Fail, &fail).await.unwrap(), None);
        assert!(fail.reads.lock().unwrap().is_empty(), "fail leaves the verdict to IFS, as before");

        // next_open with nothing open after the date holds too: someone must open a period.
        let shut: Vec<(i32, u32)> = (10..=12).map(|m| (2026, m)).chain((1..=12).map(|m| (2027, m))).collect();
        let c = chart(&shut, &shut);
        let err = settle_period(&mut p, ClosedPeriodPolicy::NextOpen, &c).await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Hold);
        assert!(err.fix().unwrap().contains("company 10"), "{err}");
    }

    #[tokio::test]
    async fn a_period_reopened_within_the_cache_lifetime_is_seen_at_once() {
        // The cache still says closed; IFS says open again.
        let c = chart(&[], &[(2026, 10)]);
        let mut p = proposal(day(2026, 10, 28), &["a"]);
        assert_eq!(settle_period(&mut p, ClosedPeriodPolicy::Hold, &c).await.unwrap(), None);
        assert_eq!(p.voucher_date, day(2026, 10, 28));
        assert!(c.reads.lock().unwrap().iter().any(|(_, fresh)| *fresh), "read past the cache");

        // And the other way round: IFS refused a voucher the cache thought open.
        let c = chart(&[(2026, 10)], &[]);
        let refusal = ExternalError::new("IFS", "Period 2026/10 is closed", Disposition::Permanent);
        let held = recheck_refusal(&p, ClosedPeriodPolicy::Hold, &refusal, &c).await.expect("the period");
        assert_eq!(held.disposition(), Disposition::Hold);
        let moved = recheck_refusal(&p, ClosedPeriodPolicy::NextOpen, &refusal, &c).await.unwrap();
        assert_eq!(moved.disposition(), Disposition::Retryable, "the redelivery moves it");
        assert!(recheck_refusal(&p, ClosedPeriodPolicy::Fail, &refusal, &c).await.is_none());
        let open = chart(&[], &[]);
        assert!(recheck_refusal(&p, ClosedPeriodPolicy::Hold, &refusal, &open).await.is_none(), "IFS's verdict");
    }
}
