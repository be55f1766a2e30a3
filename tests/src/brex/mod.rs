//! Brex API simulator: Accounting v3 records and export-results, Expenses v1, webhook secrets, OAuth with
//! rotating refresh tokens, rate limiting, fault injection, counters, a seeded record generator and a
//! Svix-style webhook sender.
//!
//! It speaks the wire format documented in `brex-api.md` on its own (no dependency on the connector's
//! `shared` crate), so a disagreement between the connector and the docs shows up as a failing test.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sims::brex::{BrexSim, BrexSimConfig, generator::RecordGenerator};
//! let sim = BrexSim::start(BrexSimConfig::default()).await?;
//! sim.insert_records(RecordGenerator::new(42).records(10));
//! println!("{} {}", sim.base_url(), sim.user_token().unwrap_or_default());
//! # Ok(()) }
//! ```

pub mod generator;
pub mod model;
mod server;
pub mod webhook;

pub use model::{
    AccountingFieldValue, AccountingRecord, Amount, Expense, ExpenseDepartment, ExpenseMerchant, ExpenseUser, LineItem,
    LineType, Money, Receipt, RecordUser, ReviewStatus, SourceType, Vendor,
};
pub use server::{
    BrexCounters, BrexSim, BrexSimConfig, BrexSimHandle, ExportOutcome, ExportResult, Faults, OAuthClient, RouteCount,
    SecretStatus, TOKEN_PATH, WebhookSecret,
};
