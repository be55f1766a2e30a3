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
    BrexFields, BrexPages, ExportOutcome, FetchedExpenses, FetchedRecords, ReceiptSource, RecordSource,
    WebhookSecretSource,
};
pub use clock::{Clock, SystemClock};
pub use ifs::{
    AccountInfo, AttachmentStore, ChartOfAccounts, Demand, Ledger, PostedVoucher, ReferenceSource, Removal,
    RequestBudget, VoucherListing, VoucherState,
};
pub use queue::{Redelivery, WorkQueue};
pub use secrets::SecretStore;
pub use storage::{
    AttachedReceipts, AuditTrail, Begin, Capability, CapabilityStore, CompletedSubject, CompletedSubjects,
    EnqueueLedger, Feed, IdempotencyKey, IdempotencyStore, LeaseStore, MappingSource, Paging, PollState,
    PollStateStore, PostedVersion, ReconcileStore, ReportStore, SpendClaim, SpendClaims,
};
