//! Seeded generator of realistic Accounting v3 records and matching `/v1/expenses` objects.
//!
//! Same seed + same options = same records. The default date range ends "now", so pass explicit
//! `start`/`end` for byte-identical output across runs.

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::Map;

use super::model::{
    AccountingFieldValue, AccountingRecord, Amount, Expense, ExpenseDepartment, ExpenseMerchant, ExpenseUser, LineItem,
    LineType, Money, Receipt, RecordUser, ReviewStatus, SourceType, Vendor,
};

/// Departments used for users and the line `Department` field.
pub const DEPARTMENTS: [&str; 5] = ["Engineering", "Sales", "Marketing", "Finance", "Operations"];

/// GL accounts: (code, display name).
pub const GL_ACCOUNTS: [(&str, &str); 5] = [
    ("6500", "6500 Travel"),
    ("6510", "6510 Meals"),
    ("6600", "6600 Software"),
    ("6700", "6700 Office Supplies"),
    ("7500", "7500 Other G&A"),
];

/// Entity field values.
pub const ENTITIES: [&str; 2] = ["Acme Inc", "Acme Canada"];

/// `brex_field_id`s of the three accounting fields.
pub const GL_FIELD_ID: &str = "extended_field_gl_account";
pub const DEPARTMENT_FIELD_ID: &str = "extended_field_department";
pub const ENTITY_FIELD_ID: &str = "extended_field_entity";

/// Knobs of the generator. Rates are probabilities in 0..=1.
#[derive(Debug, Clone)]
pub struct GeneratorOptions {
    /// How many records [`RecordGenerator::batch`] produces.
    pub count: usize,
    /// `posted_at`/`updated_at` fall in `start..=end`.
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Card refunds (`CARD_EXPENSE_REFUND`).
    pub refund_rate: f64,
    /// `REIMBURSEMENT_EXPENSE_POST` records (the rest are card records).
    pub reimbursement_rate: f64,
    /// USD records bought in EUR/GBP/JPY (`original_amount` differs from `amount`).
    pub foreign_rate: f64,
    /// Expense side split over two lines (two GL accounts or departments).
    pub split_rate: f64,
    /// Expense lines without GL coding (GL field with null value, or no GL field).
    pub missing_gl_rate: f64,
    /// Records whose lines carry an `Entity` field.
    pub entity_rate: f64,
    /// Of those, the share coded "Acme Canada" (booked in CAD).
    pub canada_rate: f64,
    /// GL values that carry the code as `remote_field_value_id` (the rest have null).
    pub gl_remote_id_rate: f64,
    /// Review status of generated records.
    pub review_status: ReviewStatus,
    /// Whether a refund's record-level `amount` is negative (lines stay positive either way). Brex docs are
    /// silent; default positive.
    pub negative_refund_amounts: bool,
    /// Whether a refund's lines are shaped like its purchase (coded lines DEBIT, liability CREDIT last), so
    /// only the record type (and a negative amount, with `negative_refund_amounts`) says refund. Brex does not
    /// document a refund's sides; default false: lines reversed (coded CREDIT, liability DEBIT first).
    pub refund_lines_like_purchase: bool,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        let end = Utc::now();
        GeneratorOptions {
            count: 50,
            start: end - Duration::days(30),
            end,
            refund_rate: 0.08,
            reimbursement_rate: 0.12,
            foreign_rate: 0.10,
            split_rate: 0.15,
            missing_gl_rate: 0.05,
            entity_rate: 0.5,
            canada_rate: 0.3,
            gl_remote_id_rate: 0.5,
            review_status: ReviewStatus::ReadyForExport,
            negative_refund_amounts: false,
            refund_lines_like_purchase: false,
        }
    }
}

struct UserSeed {
    first: &'static str,
    last: &'static str,
    dept: usize,
}

const USERS: [UserSeed; 10] = [
    UserSeed { first: "Ada", last: "Lovelace", dept: 0 },
    UserSeed { first: "Linus", last: "Berg", dept: 0 },
    UserSeed { first: "Maya", last: "Chen", dept: 1 },
    UserSeed { first: "Omar", last: "Haddad", dept: 1 },
    UserSeed { first: "Priya", last: "Nair", dept: 2 },
    UserSeed { first: "Lucas", last: "Moreau", dept: 2 },
    UserSeed { first: "Grace", last: "Okafor", dept: 3 },
    UserSeed { first: "Henrik", last: "Larsen", dept: 3 },
    UserSeed { first: "Sofia", last: "Rossi", dept: 4 },
    UserSeed { first: "Kenji", last: "Watanabe", dept: 4 },
];

struct VendorSeed {
    name: &'static str,
    mcc: &'static str,
    category: &'static str,
    website: &'static str,
}

/// Vendors per GL account index, with a cents range for purchases.
const VENDORS: [(&[VendorSeed], (i64, i64)); 5] = [
    (
        &[
            VendorSeed {
                name: "United Airlines",
                mcc: "3000",
                category: "AIRLINE_EXPENSES",
                website: "https://www.united.com",
            },
            VendorSeed { name: "Marriott", mcc: "3509", category: "LODGING", website: "https://www.marriott.com" },
            VendorSeed { name: "Uber", mcc: "4121", category: "TAXI_AND_RIDESHARE", website: "https://www.uber.com" },
            VendorSeed {
                name: "Hertz",
                mcc: "3357",
                category: "CAR_RENTAL_EXPENSES",
                website: "https://www.hertz.com",
            },
        ],
        (1_500, 180_000),
    ),
    (
        &[
            VendorSeed {
                name: "Sweetgreen",
                mcc: "5812",
                category: "RESTAURANTS",
                website: "https://www.sweetgreen.com",
            },
            VendorSeed {
                name: "Blue Bottle Coffee",
                mcc: "5814",
                category: "RESTAURANTS",
                website: "https://bluebottlecoffee.com",
            },
            VendorSeed { name: "DoorDash", mcc: "5812", category: "RESTAURANTS", website: "https://www.doordash.com" },
        ],
        (650, 30_000),
    ),
    (
        &[
            VendorSeed {
                name: "Amazon Web Services",
                mcc: "4816",
                category: "SOFTWARE_NON_RECURRING",
                website: "https://aws.amazon.com",
            },
            VendorSeed {
                name: "GitHub",
                mcc: "5734",
                category: "SOFTWARE_NON_RECURRING",
                website: "https://github.com",
            },
            VendorSeed {
                name: "Figma",
                mcc: "5734",
                category: "SOFTWARE_NON_RECURRING",
                website: "https://www.figma.com",
            },
            VendorSeed { name: "Slack", mcc: "5734", category: "SOFTWARE_NON_RECURRING", website: "https://slack.com" },
        ],
        (900, 250_000),
    ),
    (
        &[
            VendorSeed {
                name: "Staples",
                mcc: "5943",
                category: "OFFICE_SUPPLIES",
                website: "https://www.staples.com",
            },
            VendorSeed {
                name: "Office Depot",
                mcc: "5943",
                category: "OFFICE_SUPPLIES",
                website: "https://www.officedepot.com",
            },
        ],
        (400, 60_000),
    ),
    (
        &[
            VendorSeed { name: "FedEx", mcc: "4215", category: "SHIPPING", website: "https://www.fedex.com" },
            VendorSeed { name: "WeWork", mcc: "6513", category: "RENT", website: "https://www.wework.com" },
        ],
        (1_000, 90_000),
    ),
];

const MEMOS: [&[&str]; 5] = [
    &["Customer visit", "Team offsite travel", "Conference trip", "Airport transfer"],
    &["Team lunch", "Client dinner", "Coffee with candidate"],
    &["Monthly subscription", "Annual licence renewal", "Cloud usage"],
    &["Desk supplies", "Printer toner", "Notebooks and pens"],
    &["Courier", "Coworking day pass", "Miscellaneous"],
];

/// (currency, USD per unit, minor-unit exponent, merchant country).
const FOREIGN: [(&str, &str, u32, &str); 3] =
    [("EUR", "1.08", 2, "FRA"), ("GBP", "1.27", 2, "GBR"), ("JPY", "0.0067", 0, "JPN")];

/// USD per CAD, for `usd_equivalent_amount` of Canadian expenses.
const CAD_USD: &str = "0.73";

/// Produces records (and matching expenses) from a seed.
#[derive(Debug)]
pub struct RecordGenerator {
    rng: StdRng,
    pub options: GeneratorOptions,
}

/// One expense-side line being built.
struct Part {
    cents: i64,
    gl: usize,
    dept: usize,
}

impl RecordGenerator {
    pub fn new(seed: u64) -> Self {
        Self::with_options(seed, GeneratorOptions::default())
    }

    pub fn with_options(seed: u64, options: GeneratorOptions) -> Self {
        RecordGenerator { rng: StdRng::seed_from_u64(seed), options }
    }

    /// `options.count` records.
    pub fn batch(&mut self) -> Vec<AccountingRecord> {
        self.records(self.options.count)
    }

    /// `n` records.
    pub fn records(&mut self, n: usize) -> Vec<AccountingRecord> {
        (0..n).map(|_| self.generate()).collect()
    }

    /// `n` (record, expense) pairs; each expense id equals its record's `source_id`.
    pub fn pairs(&mut self, n: usize) -> Vec<(AccountingRecord, Expense)> {
        (0..n)
            .map(|_| {
                let r = self.generate();
                let e = self.expense_for(&r);
                (r, e)
            })
            .collect()
    }

    /// `n` expenses (each derived from a freshly generated record).
    pub fn expenses(&mut self, n: usize) -> Vec<Expense> {
        self.pairs(n).into_iter().map(|(_, e)| e).collect()
    }

    /// One expense (derived from a freshly generated record).
    pub fn generate_expense(&mut self) -> Expense {
        let r = self.generate();
        self.expense_for(&r)
    }

    fn id(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let s: String = (0..24).map(|_| char::from(ALPHABET[self.rng.random_range(0..ALPHABET.len())])).collect();
        format!("{prefix}_{s}")
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }

    fn timestamp_between(&mut self, start: DateTime<Utc>, end: DateTime<Utc>) -> DateTime<Utc> {
        let span = (end - start).num_microseconds().unwrap_or(0);
        let offset = if span > 0 { self.rng.random_range(0..=span) } else { 0 };
        start + TimeDelta::microseconds(offset)
    }

    /// One record.
    pub fn generate(&mut self) -> AccountingRecord {
        let o = self.options.clone();
        let reimbursement = self.chance(o.reimbursement_rate);
        let refund = !reimbursement && self.chance(o.refund_rate);
        let user_idx = self.rng.random_range(0..USERS.len());
        let user_dept = USERS[user_idx].dept;
        let gl = self.rng.random_range(0..GL_ACCOUNTS.len());
        let (vendors, (lo, hi)) = VENDORS[gl];
        let vendor_idx = self.rng.random_range(0..vendors.len());
        let vendor_seed = &vendors[vendor_idx];
        let memo = MEMOS[gl].choose(&mut self.rng).copied().unwrap_or("Expense");

        let entity =
            if self.chance(o.entity_rate) { Some(if self.chance(o.canada_rate) { 1 } else { 0 }) } else { None };
        let canada = entity == Some(1);
        let currency = if canada { "CAD" } else { "USD" };
        let total_cents = self.rng.random_range(lo..=hi);
        let total = Decimal::new(total_cents, 2);

        let foreign =
            if !canada && self.chance(o.foreign_rate) { FOREIGN.choose(&mut self.rng).copied() } else { None };
        let original_total = match foreign {
            Some((cur, rate, exp, _)) => Amount::new(to_foreign(total, rate, exp), cur),
            None => Amount::new(total, currency),
        };

        // Expense-side parts.
        let mut parts = vec![Part { cents: total_cents, gl, dept: user_dept }];
        if self.chance(o.split_rate) && total_cents >= 200 {
            let first = total_cents * self.rng.random_range(20..=80) / 100;
            let (gl2, dept2) = if self.rng.random_bool(0.5) {
                ((gl + self.rng.random_range(1..GL_ACCOUNTS.len())) % GL_ACCOUNTS.len(), user_dept)
            } else {
                (gl, (user_dept + self.rng.random_range(1..DEPARTMENTS.len())) % DEPARTMENTS.len())
            };
            parts = vec![
                Part { cents: first, gl, dept: user_dept },
                Part { cents: total_cents - first, gl: gl2, dept: dept2 },
            ];
        }
        let missing_gl = self.chance(o.missing_gl_rate);
        let missing_gl_field_absent = missing_gl && self.rng.random_bool(0.5);

        // No rng draw depends on the shape, so switching it changes nothing else about the records.
        let reversed = refund && !o.refund_lines_like_purchase;
        let expense_side = if reversed { LineType::Credit } else { LineType::Debit };
        let other_side = if reversed { LineType::Debit } else { LineType::Credit };
        let mut lines = Vec::new();
        let mut original_left = original_total.amount;
        let n_parts = parts.len();
        for (i, part) in parts.iter().enumerate() {
            let amount = Decimal::new(part.cents, 2);
            // Original amounts split pro rata; the last part takes the remainder so they add up.
            let original = match foreign {
                Some((cur, rate, exp, _)) => {
                    let v = if i + 1 == n_parts { original_left } else { to_foreign(amount, rate, exp) };
                    original_left -= v;
                    Amount::new(v, cur)
                }
                None => Amount::new(amount, currency),
            };
            let mut fields = Vec::new();
            if !missing_gl {
                let (code, name) = GL_ACCOUNTS[part.gl];
                let remote = self.chance(o.gl_remote_id_rate).then(|| code.to_owned());
                fields.push(field(
                    GL_FIELD_ID,
                    "GL_ACCOUNT",
                    "GL Account",
                    Some(format!("efo_gl_{code}")),
                    remote,
                    Some(name.to_owned()),
                ));
            } else if !missing_gl_field_absent {
                fields.push(field(GL_FIELD_ID, "GL_ACCOUNT", "GL Account", None, None, None));
            }
            let dept = DEPARTMENTS[part.dept];
            fields.push(field(
                DEPARTMENT_FIELD_ID,
                "DEPARTMENT",
                "Department",
                Some(format!("efo_dept_{}", dept.to_lowercase())),
                None,
                Some(dept.to_owned()),
            ));
            if let Some(e) = entity {
                fields.push(field(
                    ENTITY_FIELD_ID,
                    "ENTITY",
                    "Entity",
                    Some(format!("efo_entity_{}", ENTITIES[e].to_lowercase().replace(' ', "_"))),
                    None,
                    Some(ENTITIES[e].to_owned()),
                ));
            }
            lines.push(LineItem {
                id: self.id("accrli"),
                line_type: expense_side,
                amount: Amount::new(amount, currency),
                original_amount: Some(original),
                billing_amount: Some(Amount::new(amount, currency)),
                memo: None,
                accounting_field_values: fields,
                amortization: None,
            });
        }
        // Liability side (card liability / employee payable): no field values, as in the real payload.
        lines.push(LineItem {
            id: self.id("accrli"),
            line_type: other_side,
            amount: Amount::new(total, currency),
            original_amount: Some(original_total.clone()),
            billing_amount: None,
            memo: None,
            accounting_field_values: Vec::new(),
            amortization: None,
        });
        if reversed {
            // Liability line first, as Brex lists the debit side first.
            lines.rotate_right(1);
        }

        let latest_post = (o.end - Duration::hours(1)).max(o.start);
        let posted_at = trunc_millis(self.timestamp_between(o.start, latest_post));
        let updated_at = trunc_micros(self.timestamp_between(
            posted_at + Duration::minutes(1),
            (posted_at + Duration::hours(12)).min(o.end).max(posted_at + Duration::minutes(1)),
        ));
        let record_amount = if refund && o.negative_refund_amounts { -total } else { total };
        let (record_type, source_type) = match (reimbursement, refund) {
            (true, _) => ("REIMBURSEMENT_EXPENSE_POST", SourceType::Reimbursement),
            (false, true) => ("CARD_EXPENSE_REFUND", SourceType::Card),
            (false, false) => ("CARD_EXPENSE_POST", SourceType::Card),
        };
        let u = &USERS[user_idx];
        let dept_name = DEPARTMENTS[u.dept];
        let user = RecordUser {
            id: format!("cuuser_{:024}", user_idx + 1),
            first_name: u.first.to_owned(),
            last_name: u.last.to_owned(),
            email: format!("{}.{}@acme.example", u.first.to_lowercase(), u.last.to_lowercase()),
            role: Some("EMPLOYEE".to_owned()),
            status: Some("ACTIVE".to_owned()),
            department_id: Some(department_id(u.dept)),
            department_name: Some(dept_name.to_owned()),
            location_id: Some(if canada { "culoc_toronto" } else { "culoc_san_francisco" }.to_owned()),
            location_name: Some(if canada { "Toronto" } else { "San Francisco" }.to_owned()),
            account_id: Some("cuacc_000000000000000000000001".to_owned()),
        };
        let vendor = Vendor {
            id: format!("pmch_{:024}", gl * 10 + vendor_idx + 1),
            name: vendor_seed.name.to_owned(),
            contact_name: None,
            email: None,
            website: Some(vendor_seed.website.to_owned()),
            phone: None,
        };
        let receipts = if self.rng.random_bool(0.7) {
            vec![Receipt { id: self.id("receipt"), download_uris: None }]
        } else {
            Vec::new()
        };
        let version = self.rng.random_range(1..=3);
        let source_id = self.id("expense");
        AccountingRecord {
            id: self.id("accr"),
            amount: Amount::new(record_amount, currency),
            original_amount: Some(original_total),
            billing_amount: Some(Amount::new(total, currency)),
            record_type: record_type.to_owned(),
            review_status: o.review_status,
            status: Some("SUBMITTED".to_owned()),
            source_id: Some(source_id),
            source_type,
            erp_posting_date: trunc_micros(posted_at),
            posted_at,
            updated_at,
            version,
            receipts: Some(receipts),
            user: Some(user),
            vendor: Some(vendor),
            memo: Some(memo.to_owned()),
            due_at: None,
            invoice_number: None,
            line_items: lines,
            extra: Map::new(),
        }
    }

    /// The `/v1/expenses` object behind `record` (id = `record.source_id`, amounts in cents, refunds negative).
    pub fn expense_for(&mut self, record: &AccountingRecord) -> Expense {
        let vendor_name = record.vendor.as_ref().map_or("Unknown", |v| v.name.as_str());
        let vendor_seed = VENDORS.iter().flat_map(|(vs, _)| vs.iter()).find(|v| v.name == vendor_name);
        let refund = record.record_type.ends_with("_REFUND");
        let sign = if refund { -1 } else { 1 };
        let billing = &record.amount;
        let original = record.original_amount.clone().unwrap_or_else(|| billing.clone());
        let billing_cents = to_minor(billing.amount.abs(), 2) * sign;
        let usd_cents = if billing.currency == "CAD" {
            to_minor(billing.amount.abs() * dec(CAD_USD), 2) * sign
        } else {
            billing_cents
        };
        let orig_exp = FOREIGN.iter().find(|f| f.0 == original.currency).map_or(2, |f| f.2);
        let original_money =
            Money { amount: to_minor(original.amount.abs(), orig_exp) * sign, currency: original.currency.clone() };
        let country = FOREIGN
            .iter()
            .find(|f| f.0 == original.currency)
            .map(|f| f.3)
            .unwrap_or(if billing.currency == "CAD" { "CAN" } else { "USA" });
        let user = record.user.as_ref();
        let dept_name = user.and_then(|u| u.department_name.clone());
        let dept_idx = dept_name.as_deref().and_then(|n| DEPARTMENTS.iter().position(|d| *d == n));
        let purchased_at = record.posted_at - Duration::hours(self.rng.random_range(2..72));
        let status = if self.rng.random_bool(0.8) { "APPROVED" } else { "SETTLED" };
        Expense {
            id: record.source_id.clone().unwrap_or_else(|| self.id("expense")),
            memo: record.memo.clone(),
            department_id: dept_idx.map(department_id),
            department: dept_idx.map(|i| ExpenseDepartment { id: department_id(i), name: DEPARTMENTS[i].to_owned() }),
            location_id: user.and_then(|u| u.location_id.clone()),
            updated_at: record.updated_at,
            category: vendor_seed.map(|v| v.category.to_owned()),
            merchant_id: record.vendor.as_ref().map(|v| v.id.clone()),
            merchant: Some(ExpenseMerchant {
                raw_descriptor: vendor_name.to_uppercase(),
                mcc: vendor_seed.map_or("5999", |v| v.mcc).to_owned(),
                country: country.to_owned(),
            }),
            expense_type: if record.source_type == SourceType::Reimbursement { "REIMBURSEMENT" } else { "CARD" }
                .to_owned(),
            original_amount: Some(original_money.clone()),
            billing_amount: Some(Money { amount: billing_cents, currency: billing.currency.clone() }),
            purchased_amount: Some(original_money),
            usd_equivalent_amount: Some(Money { amount: usd_cents, currency: "USD".to_owned() }),
            purchased_at: Some(trunc_micros(purchased_at)),
            payment_posted_at: Some(record.posted_at),
            approved_at: Some(trunc_micros(record.updated_at - Duration::minutes(5))),
            status: status.to_owned(),
            payment_status: Some("CLEARED".to_owned()),
            user_id: user.map(|u| u.id.clone()),
            user: user.map(|u| ExpenseUser {
                id: u.id.clone(),
                first_name: u.first_name.clone(),
                last_name: u.last_name.clone(),
                department_id: u.department_id.clone(),
                location_id: u.location_id.clone(),
            }),
            extra: Map::new(),
        }
    }
}

fn field(
    brex_field_id: &str,
    remote_field_id: &str,
    name: &str,
    value_id: Option<String>,
    remote_value_id: Option<String>,
    value_name: Option<String>,
) -> AccountingFieldValue {
    AccountingFieldValue {
        brex_field_id: brex_field_id.to_owned(),
        remote_field_id: Some(remote_field_id.to_owned()),
        field_name: Some(name.to_owned()),
        brex_field_value_id: value_id,
        remote_field_value_id: remote_value_id,
        field_value_name: value_name,
        value_type: Some("IDENTIFIER".to_owned()),
    }
}

fn department_id(i: usize) -> String {
    format!("cudept_{:024}", i + 1)
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap_or_default()
}

/// USD amount -> foreign amount at `usd_per_unit`, rounded to the currency's minor unit.
fn to_foreign(usd: Decimal, usd_per_unit: &str, exponent: u32) -> Decimal {
    let rate = dec(usd_per_unit);
    if rate.is_zero() {
        return usd;
    }
    let v = (usd / rate).round_dp(exponent);
    // A tiny USD amount must not turn into a zero foreign amount.
    if v.is_zero() { Decimal::new(1, exponent) } else { v }
}

fn to_minor(major: Decimal, exponent: u32) -> i64 {
    let scaled = (major * Decimal::from(10_i64.pow(exponent))).round();
    i64::try_from(scaled.mantissa() / 10_i128.pow(scaled.scale())).unwrap_or(i64::MAX)
}

fn trunc_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

fn trunc_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> GeneratorOptions {
        let end = DateTime::parse_from_rfc3339("2026-06-30T00:00:00Z").unwrap().with_timezone(&Utc);
        GeneratorOptions { start: end - Duration::days(30), end, ..GeneratorOptions::default() }
    }

    #[test]
    fn same_seed_same_records() {
        let a = RecordGenerator::with_options(7, fixed()).records(20);
        let b = RecordGenerator::with_options(7, fixed()).records(20);
        assert_eq!(a, b);
        let c = RecordGenerator::with_options(8, fixed()).records(20);
        assert_ne!(a, c);
    }

    #[test]
    fn every_record_balances_with_positive_lines() {
        let recs = RecordGenerator::with_options(1, fixed()).records(500);
        for r in &recs {
            assert!(r.is_balanced(), "unbalanced {}", r.id);
            assert!(r.line_items.iter().all(|l| l.amount.amount > Decimal::ZERO));
            assert!(r.line_items.iter().all(|l| l.amount.currency == r.amount.currency));
            assert!(r.updated_at >= r.posted_at && r.updated_at <= fixed().end);
            assert!(r.id.starts_with("accr_") && r.source_id.as_deref().unwrap().starts_with("expense_"));
        }
        let has = |f: &dyn Fn(&AccountingRecord) -> bool| recs.iter().any(f);
        assert!(has(&|r| r.record_type == "CARD_EXPENSE_REFUND"));
        assert!(has(&|r| r.source_type == SourceType::Reimbursement));
        assert!(has(&|r| r.amount.currency == "CAD"));
        assert!(has(&|r| r.original_amount.as_ref().unwrap().currency == "JPY"));
        assert!(has(&|r| r.line_items.len() == 3));
        assert!(has(&|r| r.line_items.iter().any(|l| l.accounting_field_values.iter().any(|f| f
            .field_name
            .as_deref()
            == Some("GL Account")
            && f.brex_field_value_id.is_none()))));
        assert!(has(&|r| r
            .line_items
            .iter()
            .any(|l| l.accounting_field_values.iter().any(|f| f.remote_field_value_id.as_deref() == Some("6500")))));
    }

    #[test]
    fn refunds_put_the_expense_on_the_credit_side() {
        let recs = RecordGenerator::with_options(3, fixed()).records(300);
        let refund = recs.iter().find(|r| r.record_type == "CARD_EXPENSE_REFUND").unwrap();
        let debit = refund.line_items.iter().find(|l| l.line_type == LineType::Debit).unwrap();
        assert!(debit.accounting_field_values.is_empty());
        let credit = refund.line_items.iter().find(|l| l.line_type == LineType::Credit).unwrap();
        assert!(credit.accounting_field_values.iter().any(|f| f.field_name.as_deref() == Some("Department")));
        let post = recs.iter().find(|r| r.record_type == "CARD_EXPENSE_POST").unwrap();
        let dept = post.user.as_ref().unwrap().department_name.clone().unwrap();
        let debit = post.line_items.iter().find(|l| l.line_type == LineType::Debit).unwrap();
        assert!(debit.accounting_field_values.iter().any(|f| f.field_value_name.as_deref() == Some(dept.as_str())));
    }

    #[test]
    fn refunds_can_come_shaped_like_their_purchase_and_nothing_else_changes() {
        let opts = GeneratorOptions { refund_rate: 0.5, split_rate: 0.5, ..fixed() };
        let reversed = RecordGenerator::with_options(4, opts.clone()).records(200);
        let like_purchase =
            RecordGenerator::with_options(4, GeneratorOptions { refund_lines_like_purchase: true, ..opts })
                .records(200);
        assert!(reversed.iter().any(|r| r.record_type == "CARD_EXPENSE_REFUND" && r.line_items.len() == 3));
        for (a, b) in reversed.iter().zip(&like_purchase) {
            if a.record_type != "CARD_EXPENSE_REFUND" {
                assert_eq!(a, b);
                continue;
            }
            assert!(b.is_balanced());
            // Same lines, liability moved last, every side swapped.
            let mut expected = a.line_items.clone();
            expected.rotate_left(1);
            for l in &mut expected {
                l.line_type = if l.line_type == LineType::Debit { LineType::Credit } else { LineType::Debit };
            }
            assert_eq!(b.line_items, expected, "{}", a.id);
            assert!(
                b.line_items
                    .iter()
                    .filter(|l| l.line_type == LineType::Debit)
                    .all(|l| !l.accounting_field_values.is_empty())
            );
            assert!(b.line_items.last().unwrap().accounting_field_values.is_empty());
            let (mut a, mut b) = (a.clone(), b.clone());
            a.line_items.clear();
            b.line_items.clear();
            assert_eq!(a, b, "only the lines differ");
        }
    }

    #[test]
    fn foreign_originals_add_up_across_split_lines() {
        let opts = GeneratorOptions { foreign_rate: 1.0, split_rate: 1.0, entity_rate: 0.0, ..fixed() };
        for r in RecordGenerator::with_options(5, opts).records(100) {
            let orig = r.original_amount.as_ref().unwrap();
            assert_ne!(orig.currency, "USD");
            let sum: Decimal = r
                .line_items
                .iter()
                .filter(|l| !l.accounting_field_values.is_empty())
                .map(|l| l.original_amount.as_ref().unwrap().amount)
                .sum();
            assert_eq!(sum, orig.amount, "{}", r.id);
        }
    }

    #[test]
    fn expenses_match_records_in_cents() {
        let mut g = RecordGenerator::with_options(9, fixed());
        for (r, e) in g.pairs(200) {
            assert_eq!(Some(e.id.clone()), r.source_id);
            let billing = e.billing_amount.unwrap();
            assert_eq!(Decimal::new(billing.amount.abs(), 2), r.amount.amount.abs());
            assert_eq!(billing.amount < 0, r.record_type == "CARD_EXPENSE_REFUND");
            if r.original_amount.as_ref().unwrap().currency == "JPY" {
                assert_eq!(Decimal::from(e.original_amount.unwrap().amount.abs()), r.original_amount.unwrap().amount);
            }
        }
    }
}
