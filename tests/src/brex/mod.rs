//! Brex API simulator: Accounting v3 records and export-results, Expenses v1, webhook secrets, OAuth with
//! rotating refresh tokens, rate limiting, fault injection, counters, a seeded record generator and a
//! Svix-style webhook sender.
//!
//! It speaks Brex's documented wire format on its own (no dependency on the connector's
//! `shared` crate), so a disagreement between the connector and the docs shows up as a failing test.
//!
//! Where the docs are silent the simulator picks (and `BrexSimConfig` mostly lets you change):
//! - records query with neither `ids` nor `updated_at[...]` → only records updated in the last 24 h
//!   (`default_updated_window`); `review_status` without `source_type` CARD/REIMBURSEMENT → 400; `limit`
//!   1..=1000 (`max_records_limit`), else 400; unparsable timestamps/cursors → 400 (a `+` offset must be
//!   percent-encoded, as on any real server); unknown parameters (incl. `single_entry`) are ignored;
//!   paging is keyset on (updated_at, id), so a record edited mid-paging shows up again on a later page.
//! - export-results validates the whole batch (404 unknown → 422 duplicate → 422 not ready) before changing
//!   anything. Success → EXPORTED, updated_at/version bumped. Failure → stays READY_FOR_EXPORT, NOT bumped
//!   (a watermark poller would otherwise re-read it forever), message kept for `export_result`.
//!   `Idempotency-Key`: same key + same JSON body (semantic comparison) within 24 h replays the stored
//!   response (header `idempotent-replayed: true`); same key + different body → 422 INVALID_REQUEST.
//!   At most 500 results per call (`max_export_batch`).
//! - `/v1/expenses`: `updated_at_start` and `updated_at_end` are both inclusive; `limit` ≤ 100; unexpanded
//!   `department`/`merchant`/`user` are absent (the `*_id` fields are always present).
//! - 429 (limit or injected burst) always has the classic body `{"type":"RATE_LIMITED",…}` and no
//!   `Retry-After` unless `Faults::retry_after_secs` is set. Injected 500 is JSON; 502/503 are plain text,
//!   like a gateway. Every API response carries `x-brex-trace-id`.
//! - Expired OAuth access token → 401 "Expired token" (`expired_token_status` = 403 mimics Brex's error
//!   page). Refresh tokens rotate strictly: no grace period for the previous one.
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
pub use server::fields::{MAX_FIELD_ITEMS, SimField, SimFieldValue};
pub use server::{
    BrexCounters, BrexSim, BrexSimConfig, BrexSimHandle, DEFAULT_RECEIPT_URL_TTL, ExportOutcome, ExportResult, Faults,
    OAuthClient, RouteCount, SecretStatus, TOKEN_PATH, WebhookSecret,
};
