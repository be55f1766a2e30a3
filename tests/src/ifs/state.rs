//! The simulator's mutable state: tokens, request budget, fault knobs, counters, virtual and committed
//! vouchers, and the voucher validation that `CreateVoucher` runs.

use chrono::{NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::model::{CODE_PARTS, Voucher, VoucherRow, VoucherStatus, etag};
use super::reference::{Demand, PeriodStatus, ReferenceData};
use super::tenant::IfsTenant;

/// Fault knobs. Every random decision comes from one RNG seeded with [`super::IfsSimConfig::seed`], so a
/// given request sequence sees the same faults on every run. Rates are probabilities in `0.0..=1.0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IfsFaults {
    /// Just before a guarded mutation (row POST, CreateVoucher, RemoveTempVoucher) "another user" modifies
    /// the virtual voucher, bumping its objversion: the request's If-Match is then stale → 412 (unless `*`).
    pub concurrent_modification_rate: f64,
    /// Probability that a projection request fails with a gateway error before doing anything.
    pub status_5xx_rate: f64,
    /// Which statuses `status_5xx_rate` picks from (uniformly); empty means 502, 503 and 504.
    /// 504 carries `ODP_OPERATION_TIMEOUT`, 503 `SERVICE_UNAVAILABLE`, 502 `BAD_GATEWAY`.
    pub status_5xx_codes: Vec<u16>,
    /// Probability of 500 `MI_MODIFIED_ERROR` (stale metadata cache) before the request does anything.
    pub mi_modified_rate: f64,
    /// Probability that a successful CreateVoucher commits and then drops the connection unanswered.
    pub commit_then_drop_rate: f64,
    /// The next N successful CreateVoucher calls commit and then drop the connection.
    pub commit_then_drop_next: u32,
    /// The next N requests (token and projection) get 429 with `Retry-After: 1`.
    pub burst_429_next: u32,
    /// Added latency for every token and projection request, in milliseconds.
    pub latency_ms: u64,
    /// Probability that a projection (or `$batch`) request is carried out — a commit stands — but answered
    /// only after `stall_ms`: past the client's timeout, an answer that never comes in time.
    pub stall_rate: f64,
    pub stall_ms: u64,
    /// The next N requests to document management (`EdmFileSet`) fail with `attachment_fault_status`.
    pub attachment_fail_next: u32,
    pub attachment_fault_status: u16,
}

impl Default for IfsFaults {
    fn default() -> Self {
        Self {
            concurrent_modification_rate: 0.0,
            status_5xx_rate: 0.0,
            status_5xx_codes: Vec::new(),
            mi_modified_rate: 0.0,
            commit_then_drop_rate: 0.0,
            commit_then_drop_next: 0,
            burst_429_next: 0,
            latency_ms: 0,
            stall_rate: 0.0,
            stall_ms: 35_000,
            attachment_fail_next: 0,
            attachment_fault_status: 503,
        }
    }
}

/// What the simulator has seen. Admin routes (`/_sim/…`) are not counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IfsCounters {
    /// Every token/projection request, including refused ones.
    pub total_requests: u64,
    /// Endpoint label (e.g. `VoucherSet.POST`) → HTTP status → count. Status `0` means the connection was
    /// dropped without an answer (commit-then-drop).
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Tokens issued.
    pub token_fetches: u64,
    pub status_401: u64,
    pub status_412: u64,
    pub status_428: u64,
    pub status_429: u64,
    /// Injected faults by kind: `concurrent_modification`, `status_502`, `status_503`, `status_504`,
    /// `mi_modified`, `commit_then_drop`, `burst_429`, `stall`.
    pub faults: BTreeMap<String, u64>,
    /// Guarded mutations (on an existing voucher: row POST, CreateVoucher, RemoveTempVoucher) that carried an
    /// If-Match header (`*` included) …
    pub mutations_with_if_match: u64,
    /// … and those that did not. Creating the virtual (`VoucherSet.POST`) is not a guarded mutation.
    pub mutations_without_if_match: u64,
    /// Vouchers committed by CreateVoucher.
    pub vouchers_created: u64,
    /// Operations inside `$batch` requests: endpoint label → status → count (not in `total_requests`: the
    /// `$batch` itself is the one HTTP request, counted as `Batch.POST`).
    pub batch_parts: BTreeMap<String, BTreeMap<u16, u64>>,
    /// `$batch` change sets applied in full …
    pub changesets_committed: u64,
    /// … and rolled back because one of their operations failed.
    pub changesets_rolled_back: u64,
    /// Virtual vouchers that exist right now, neither committed nor removed (a client that leaves these
    /// behind litters the tenant). Computed when the counters are read.
    pub virtual_vouchers_open: u64,
    /// Virtual vouchers discarded by `RemoveTempVoucher`.
    pub virtual_vouchers_removed: u64,
    /// Files stored in document management (`EdmFileSet(…)/FileData`).
    pub attachments_stored: u64,
    /// Committed vouchers removed from the hold table (`RemoveVoucher`, only while not approved).
    pub vouchers_removed: u64,
}

impl IfsCounters {
    /// Requests with `label` answered `status`.
    pub fn count(&self, label: &str, status: u16) -> u64 {
        self.requests.get(label).and_then(|m| m.get(&status)).copied().unwrap_or(0)
    }

    /// Requests with `label`, any status.
    pub fn count_label(&self, label: &str) -> u64 {
        self.requests.get(label).map_or(0, |m| m.values().sum())
    }

    /// Injected faults of `kind`.
    pub fn fault(&self, kind: &str) -> u64 {
        self.faults.get(kind).copied().unwrap_or(0)
    }

    pub(crate) fn record(&mut self, label: &str, status: u16) {
        self.total_requests += 1;
        *self.requests.entry(label.to_string()).or_default().entry(status).or_default() += 1;
        match status {
            401 => self.status_401 += 1,
            412 => self.status_412 += 1,
            428 => self.status_428 += 1,
            429 => self.status_429 += 1,
            _ => {}
        }
    }

    /// Operations inside `$batch` with `label` answered `status`.
    pub fn part_count(&self, label: &str, status: u16) -> u64 {
        self.batch_parts.get(label).and_then(|m| m.get(&status)).copied().unwrap_or(0)
    }

    pub(crate) fn record_part(&mut self, label: &str, status: u16) {
        *self.batch_parts.entry(label.to_string()).or_default().entry(status).or_default() += 1;
        match status {
            401 => self.status_401 += 1,
            412 => self.status_412 += 1,
            428 => self.status_428 += 1,
            _ => {}
        }
    }

    pub(crate) fn add_fault(&mut self, kind: &str) {
        *self.faults.entry(kind.to_string()).or_default() += 1;
    }
}

/// A voucher being assembled through the assistant (a virtual entity).
#[derive(Debug, Clone)]
pub struct VirtualVoucher {
    pub objkey: String,
    pub objid: String,
    pub objversion: String,
    pub company: String,
    pub voucher_type: String,
    pub voucher_date: NaiveDate,
    pub accounting_year: i32,
    pub accounting_period: u32,
    pub status: VoucherStatus,
    pub text: Option<String>,
    pub user_group: Option<String>,
    pub currency_code: Option<String>,
    /// The accepted header body, echoed back on reads.
    pub body: Map<String, Value>,
    pub rows: Vec<VirtualRow>,
}

impl VirtualVoucher {
    pub fn etag(&self) -> String {
        etag(&self.objid, &self.objversion)
    }
}

#[derive(Debug, Clone)]
pub struct VirtualRow {
    pub objkey: String,
    pub objid: String,
    pub objversion: String,
    pub row: VoucherRow,
    /// The accepted row body, echoed back on reads.
    pub body: Map<String, Value>,
}

/// Fixed-window request budget: the window opens with the first request and lasts one (scaled) minute;
/// once `limit` requests were admitted in it, requests get 429 until it ends. Fixed rather than sliding
/// because it is simple to reason about in tests and matches the connector's "N per minute" budget.
#[derive(Debug)]
pub struct Budget {
    pub limit: u32,
    pub window: Duration,
    start: Option<Instant>,
    used: u32,
}

impl Budget {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, start: None, used: 0 }
    }

    /// Admits a request, or returns the seconds (ceil, at least 1) until the window resets.
    pub fn admit(&mut self, now: Instant) -> Result<(), u64> {
        let start = match self.start {
            Some(s) if now.duration_since(s) < self.window => s,
            _ => {
                self.start = Some(now);
                self.used = 0;
                now
            }
        };
        if self.used < self.limit {
            self.used += 1;
            Ok(())
        } else {
            let remaining = self.window.saturating_sub(now.duration_since(start));
            Err((remaining.as_secs_f64().ceil() as u64).max(1))
        }
    }
}

pub struct State {
    pub reference: ReferenceData,
    pub virtuals: HashMap<String, VirtualVoucher>,
    pub vouchers: Vec<Voucher>,
    /// Document revisions connected to vouchers (see `documents`).
    pub documents: Vec<super::documents::Document>,
    pub sequences: HashMap<(String, String, i32), i64>,
    pub tokens: HashMap<String, Instant>,
    pub counters: IfsCounters,
    pub faults: IfsFaults,
    pub tenant: IfsTenant,
    pub rng: StdRng,
    pub budget: Budget,
    pub xsrf_token: String,
    seq: u64,
}

impl State {
    pub fn new(reference: ReferenceData, faults: IfsFaults, seed: u64, budget: Budget) -> Self {
        Self::with_tenant(reference, faults, IfsTenant::default(), seed, budget)
    }

    pub fn with_tenant(
        reference: ReferenceData,
        faults: IfsFaults,
        tenant: IfsTenant,
        seed: u64,
        budget: Budget,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let xsrf_token = format!("{:032x}", rng.random::<u128>());
        Self {
            reference,
            virtuals: HashMap::new(),
            vouchers: Vec::new(),
            documents: Vec::new(),
            sequences: HashMap::new(),
            tokens: HashMap::new(),
            counters: IfsCounters::default(),
            faults,
            tenant,
            rng,
            budget,
            xsrf_token,
            seq: 0,
        }
    }

    /// The counters as they stand, with the figures computed on reading filled in.
    pub fn counters_now(&self) -> IfsCounters {
        let mut c = self.counters.clone();
        c.virtual_vouchers_open = self.virtuals.len() as u64;
        c
    }

    /// Draws a fault decision; a zero rate never consumes randomness, so enabling one knob does not shift
    /// the others' sequences.
    pub fn roll(&mut self, rate: f64) -> bool {
        if rate.is_nan() || rate <= 0.0 {
            return false;
        }
        self.rng.random_bool(rate.min(1.0))
    }

    pub fn pick_5xx(&mut self) -> u16 {
        let codes: Vec<u16> = if self.faults.status_5xx_codes.is_empty() {
            vec![502, 503, 504]
        } else {
            self.faults.status_5xx_codes.clone()
        };
        let i = self.rng.random_range(0..codes.len());
        codes[i]
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A fresh objversion: a timestamp plus a sequence, so it changes on every modification even within
    /// one second.
    pub fn new_objversion(&mut self) -> String {
        let n = self.next_seq();
        format!("{}{:06}", Utc::now().format("%Y%m%d%H%M%S"), n)
    }

    /// A fresh opaque id (for Objkey / objid).
    pub fn new_id(&mut self, prefix: &str) -> String {
        let n = self.next_seq();
        let r: u32 = self.rng.random();
        format!("{prefix}{n:08X}{r:08X}")
    }

    pub fn issue_token(&mut self, ttl: Duration) -> String {
        let now = Instant::now();
        self.tokens.retain(|_, exp| *exp > now);
        let token = format!("sim.{:032x}{:032x}", self.rng.random::<u128>(), self.rng.random::<u128>());
        self.tokens.insert(token.clone(), now + ttl);
        self.counters.token_fetches += 1;
        token
    }

    pub fn token_valid(&self, token: &str) -> bool {
        self.tokens.get(token).is_some_and(|exp| *exp > Instant::now())
    }

    /// Validates a virtual voucher the way `CreateVoucher` does; the first problem wins, as in IFS.
    pub fn validate(&self, v: &VirtualVoucher) -> Result<(), String> {
        let r = &self.reference;
        let co = v.company.as_str();
        if r.company(co).is_none() {
            return Err(format!("Company {co} does not exist"));
        }
        let Some(vtype) = r.voucher_type(co, &v.voucher_type) else {
            return Err(format!("Voucher type {} does not exist in company {co}", v.voucher_type));
        };
        let (y, p) = (v.accounting_year, v.accounting_period);
        let Some(period) = r.period(co, y, p) else {
            return Err(format!("Accounting period {y}/{p:02} does not exist in company {co}"));
        };
        if v.voucher_date < period.date_from || v.voucher_date > period.date_until {
            return Err(format!(
                "Voucher date {} is not within accounting period {y}/{p:02} ({} - {})",
                v.voucher_date, period.date_from, period.date_until
            ));
        }
        if period.status == PeriodStatus::Closed {
            return Err(format!("Period {y}/{p:02} is closed"));
        }
        if v.rows.len() < 2 {
            return Err(format!("The voucher must have at least 2 rows; it has {}", v.rows.len()));
        }
        let date = v.voucher_date;
        let (mut debit, mut credit) = (Decimal::ZERO, Decimal::ZERO);
        for (i, vr) in v.rows.iter().enumerate() {
            let n = i + 1;
            let row = &vr.row;
            if row.account.is_empty() {
                return Err(format!("Row {n}: Account is mandatory"));
            }
            let Some(acc) = r.account(co, &row.account) else {
                return Err(format!("Row {n}: Account {} does not exist in company {co}", row.account));
            };
            if date < acc.valid_from || date > acc.valid_until {
                return Err(format!(
                    "Row {n}: Account {} is not valid on {date} (valid {} to {})",
                    acc.account, acc.valid_from, acc.valid_until
                ));
            }
            for part in CODE_PARTS {
                let name = r.code_part_name(part);
                let value = row.code(part);
                match (acc.demand_for(part), value) {
                    (Demand::Mandatory, None) => {
                        return Err(format!(
                            "Row {n}: Code part {part} ({name}) is mandatory for account {}",
                            acc.account
                        ));
                    }
                    (Demand::NotAllowed, Some(val)) => {
                        return Err(format!(
                            "Row {n}: Code part {part} ({name}) is not allowed for account {} (value {val})",
                            acc.account
                        ));
                    }
                    (_, Some(val)) => match r.code_part(co, part, val) {
                        None => {
                            return Err(format!(
                                "Row {n}: Code part {part} ({name}) value {val} does not exist in company {co}"
                            ));
                        }
                        Some(cp) if date < cp.valid_from || date > cp.valid_until => {
                            return Err(format!(
                                "Row {n}: Code part {part} ({name}) value {val} is not valid on {date}"
                            ));
                        }
                        Some(_) => {}
                    },
                    _ => {}
                }
            }
            if row.currency_code.is_empty() {
                return Err(format!("Row {n}: Currency code is mandatory"));
            }
            match (row.currency_debet_amount, row.currency_credit_amount) {
                (Some(d), None) => debit += d,
                (None, Some(c)) => credit += c,
                _ => return Err(format!("Row {n}: Enter either a debit amount or a credit amount")),
            }
            if vtype.reference_mandatory && (row.reference_serie.is_none() || row.reference_number.is_none()) {
                return Err(format!(
                    "Row {n}: Reference serie and reference number are mandatory for voucher type {}",
                    v.voucher_type
                ));
            }
        }
        if debit != credit {
            return Err(format!("The voucher is not balanced: debit {debit}, credit {credit}"));
        }
        Ok(())
    }

    /// Commits a validated virtual voucher: assigns the next number for (company, type, year) and moves it
    /// to the hold table.
    pub fn commit(&mut self, objkey: &str) -> Option<i64> {
        let v = self.virtuals.remove(objkey)?;
        let key = (v.company.clone(), v.voucher_type.clone(), v.accounting_year);
        let no = self.sequences.entry(key).or_insert(0);
        *no += 1;
        let voucher_no = *no;
        let rows =
            v.rows.into_iter().enumerate().map(|(i, vr)| VoucherRow { row_no: (i + 1) as u32, ..vr.row }).collect();
        self.vouchers.push(Voucher {
            company: v.company,
            accounting_year: v.accounting_year,
            accounting_period: v.accounting_period,
            voucher_type: v.voucher_type,
            voucher_no,
            voucher_date: v.voucher_date,
            status: v.status,
            text: v.text,
            user_group: v.user_group,
            rows,
        });
        self.counters.vouchers_created += 1;
        Some(voucher_no)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window_budget() {
        let mut b = Budget::new(2, Duration::from_millis(1500));
        let t0 = Instant::now();
        assert!(b.admit(t0).is_ok());
        assert!(b.admit(t0).is_ok());
        assert_eq!(b.admit(t0 + Duration::from_millis(100)), Err(2));
        assert_eq!(b.admit(t0 + Duration::from_millis(1000)), Err(1));
        assert!(b.admit(t0 + Duration::from_millis(1600)).is_ok());
    }

    #[test]
    fn counters_record_by_label_and_status() {
        let mut c = IfsCounters::default();
        c.record("VoucherSet.POST", 201);
        c.record("VoucherSet.POST", 412);
        c.record("Token.POST", 429);
        assert_eq!(c.count("VoucherSet.POST", 201), 1);
        assert_eq!(c.count_label("VoucherSet.POST"), 2);
        assert_eq!((c.status_412, c.status_429, c.total_requests), (1, 1, 3));
    }

    #[test]
    fn fault_rolls_are_deterministic_from_the_seed() {
        let draw = |seed| {
            let mut s = State::new(ReferenceData::demo(), IfsFaults::default(), seed, Budget::new(1, Duration::ZERO));
            (0..64).map(|_| s.roll(0.5)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut s = State::new(ReferenceData::demo(), IfsFaults::default(), 1, Budget::new(1, Duration::ZERO));
        assert!(!s.roll(0.0));
        assert!(s.roll(1.0));
    }
}
