//! Ports: every capability the business logic needs from the outside world, grouped by what it is for, and
//! nothing else. Adapters live beside their clients: `crate::aws` (SQS, DynamoDB, Secrets Manager),
//! `crate::brex`, `crate::ifs`, and `crate::memory` for tests.

mod brex;
mod clock;
mod ifs;
mod queue;
mod secrets;
mod storage;

pub use brex::{
    BrexFields, BrexPages, ExportOutcome, FetchedExpenses, FetchedRecords, RecordSource, WebhookSecretSource,
};
pub use clock::{Clock, SystemClock};
pub use ifs::{AccountInfo, ChartOfAccounts, Demand, Ledger, ReferenceSource, Removal, RequestBudget, VoucherState};
pub use queue::{Redelivery, WorkQueue};
pub use secrets::SecretStore;
pub use storage::{
    AuditTrail, Begin, Capability, CapabilityStore, EnqueueLedger, Feed, IdempotencyKey, IdempotencyStore, LeaseStore,
    MappingSource, Paging, PollState, PollStateStore, PostedVoucher, ReportStore, SpendClaim, SpendClaims,
};
