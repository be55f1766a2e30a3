//! In-memory adapters for the storage, queue, secret and clock ports: the same behaviour as the AWS adapters
//! (`crate::aws`), without an emulator, for unit tests here and in the `tests` crate. The contract suite
//! (`tests/tests/store_contract.rs`) runs one set of tests against both, so they cannot drift apart.
//!
//! Where DynamoDB keeps less than a `DateTime` (epoch ms for leases and marks, epoch s for capabilities,
//! µs for poll positions), these keep exactly as much, so a test sees the same values on either backend.
//! Retention (`expires_at`, DynamoDB's TTL) is not enforced: DynamoDB deletes lazily and no condition reads
//! it, so no behaviour depends on it.
//!
//! - [`MemoryStore`]: the table — idempotency records, spend claims, leases, capabilities, the audit trail
//!   and the mapping document; [`MemoryPollState`] reads and writes the poller's items in the same table
//!   (its `settled` reads the poster's idempotency records, as `DynamoPollState` does), and the receipts
//!   attached to each voucher
//! - [`MemoryReports`], [`MemoryQueue`], [`MemorySecrets`], [`ManualClock`]

mod attachments;
mod audit;
mod clock;
mod idempotency;
mod poll_state;
mod queue;
mod report;
mod secrets;
mod spend;
mod store;

use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, TimeZone, Utc};

pub use clock::ManualClock;
pub use poll_state::MemoryPollState;
pub use queue::MemoryQueue;
pub use report::MemoryReports;
pub use secrets::MemorySecrets;
pub use store::MemoryStore;

/// A poisoned lock only means another test thread panicked while holding it; the data is still whole (every
/// update below is a single assignment), so keep going rather than cascade the panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Epoch milliseconds back to a time, as the DynamoDB adapters read `lease_until`.
fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}
