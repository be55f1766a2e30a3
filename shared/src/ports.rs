//! Ports: the small capabilities the business logic needs from the outside world. Real adapters live in
//! `crate::aws` (SQS, DynamoDB, Secrets Manager), `crate::brex` and `crate::ifs`; tests run the same logic
//! against moto and the simulators.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Secret, WorkItem};
use crate::error::{AwsError, Classify, Disposition};

/// Puts work on the queue. Returns only once every item is durably accepted.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    async fn enqueue(&self, items: &[WorkItem]) -> Result<(), AwsError>;
}

/// What a conditional "begin" found (Powertools idempotency semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// We own the key now, until the in-progress expiry.
    Started,
    /// Someone else is working on it and their lease has not expired.
    InProgress { until: DateTime<Utc> },
    /// Done before; `result` is what was recorded (e.g. the IFS voucher key).
    Completed { result: Option<String> },
    /// Failed permanently before, with the recorded reason.
    Failed { reason: String },
}

/// Idempotency records keyed by a string (webhook ids, record ids …), stored in the one DynamoDB table.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` unless it is completed, failed, or in progress with an unexpired lease. An expired
    /// in-progress claim is taken over.
    async fn begin(&self, key: &str, lease_until: DateTime<Utc>, now: DateTime<Utc>) -> Result<Begin, AwsError>;
    /// Marks `key` completed with an optional result; kept for `retain_until`.
    async fn complete(&self, key: &str, result: Option<&str>, retain_until: DateTime<Utc>) -> Result<(), AwsError>;
    /// Marks `key` failed permanently with a reason.
    async fn fail(&self, key: &str, reason: &str, retain_until: DateTime<Utc>) -> Result<(), AwsError>;
    /// Marks `key` held (the deployment or tenant is at fault) with the reason and the operator's fix. A
    /// held key can be claimed again at once (`begin` takes it like a released one), so a redelivery or a
    /// replay after the fix posts it; posting replaces the hold.
    async fn hold(
        &self,
        key: &str,
        reason: &str,
        fix: &str,
        now: DateTime<Utc>,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError>;
    /// Drops an in-progress claim so a retry can start over at once (used when the work could not be done).
    async fn release(&self, key: &str) -> Result<(), AwsError>;
}

/// Who posted (or is posting) one piece of spend. With both poll sources on, a card expense reaches us twice:
/// as the expense and as the accounting record whose `source_id` is that expense. It must post once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendClaim {
    /// Ours until the lease ends. `holders`: every Brex id that ever claimed this spend, us included. One of
    /// them may have committed a voucher and crashed before recording it, so the IFS dedup asks for them all.
    Claimed { holders: Vec<crate::domain::ReferenceNumber> },
    /// Posted as `voucher` by the Brex id `by`.
    Posted { by: crate::domain::ReferenceNumber, voucher: String },
    /// Another invocation is posting it under `by`.
    Busy { by: crate::domain::ReferenceNumber, until: DateTime<Utc> },
}

/// Spend claims keyed by the expense id, shared by both sources (DynamoDB conditional writes).
#[async_trait]
pub trait SpendClaims: Send + Sync {
    async fn claim(
        &self,
        spend: &crate::domain::ExpenseId,
        holder: &crate::domain::ReferenceNumber,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<SpendClaim, AwsError>;
    /// Records the voucher; kept until `retain_until`.
    async fn posted(
        &self,
        spend: &crate::domain::ExpenseId,
        holder: &crate::domain::ReferenceNumber,
        voucher: &str,
        retain_until: DateTime<Utc>,
    ) -> Result<(), AwsError>;
    /// Gives the claim back when nothing was posted, keeping the holder history.
    async fn release(
        &self,
        spend: &crate::domain::ExpenseId,
        holder: &crate::domain::ReferenceNumber,
    ) -> Result<(), AwsError>;
}

/// Reads and writes secret strings (Secrets Manager).
#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn get_secret(&self, id: &str) -> Result<Secret, AwsError>;
    async fn put_secret(&self, id: &str, value: &Secret) -> Result<(), AwsError>;
}

/// A failure of an outside HTTP system (Brex, IFS) as the ports report it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{system}: {message}")]
pub struct ExternalError {
    pub system: &'static str,
    pub message: String,
    pub disposition: Disposition,
    /// For a held failure: what the operator should change (see [`crate::fault`]).
    pub fix: Option<String>,
}

impl ExternalError {
    /// A failure with no operator fix attached (passing faults, the record's own).
    pub fn new(system: &'static str, message: impl Into<String>, disposition: Disposition) -> Self {
        Self { system, message: message.into(), disposition, fix: None }
    }
}

impl Classify for ExternalError {
    fn disposition(&self) -> Disposition {
        self.disposition
    }
}

/// Brex's webhook signing secrets (`GET /v1/webhooks/secrets`), every one currently valid.
#[async_trait]
pub trait WebhookSecretSource: Send + Sync {
    async fn webhook_secrets(&self) -> Result<Vec<Secret>, ExternalError>;
}

/// Wall-clock time, injectable so tests can move it.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A named, time-bounded lock shared by all instances (DynamoDB conditional writes). Used so that only one
/// instance refreshes Brex's rotating OAuth refresh token at a time.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes the lease `name` for `holder` until `until` if it is free or expired. `true` when taken.
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, AwsError>;
    /// Gives the lease back if `holder` still has it.
    async fn release(&self, name: &str, holder: &str) -> Result<(), AwsError>;
}

/// What IFS demands of a code part on an account (`ReqCodeB` …): the simulator and IFS say `M`, `O`, `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Demand {
    Mandatory,
    Optional,
    Blocked,
}

/// An IFS GL account as far as validation needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountInfo {
    pub company: crate::domain::CompanyCode,
    pub account: crate::domain::AccountCode,
    pub description: String,
    pub valid_from: Option<chrono::NaiveDate>,
    pub valid_until: Option<chrono::NaiveDate>,
    pub demands: std::collections::BTreeMap<crate::proposal::CodePart, Demand>,
}

impl AccountInfo {
    pub fn is_valid_on(&self, date: chrono::NaiveDate) -> bool {
        self.valid_from.is_none_or(|from| from <= date) && self.valid_until.is_none_or(|until| date <= until)
    }
}

/// Read access to IFS's chart of accounts (cached by the adapter).
#[async_trait]
pub trait ChartOfAccounts: Send + Sync {
    async fn account(
        &self,
        company: &crate::domain::CompanyCode,
        account: &crate::domain::AccountCode,
    ) -> Result<Option<AccountInfo>, ExternalError>;
}

/// Something learned about an outside system that every instance should know for a while (e.g. that the
/// tenant's IFS refuses `$batch`), stored in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub value: String,
    /// Why, for the logs and `connector doctor`.
    pub reason: String,
    /// Believed until then.
    pub until: DateTime<Utc>,
}

#[async_trait]
pub trait CapabilityStore: Send + Sync {
    async fn recall(&self, name: &str) -> Result<Option<Capability>, AwsError>;
    async fn remember(&self, name: &str, capability: &Capability) -> Result<(), AwsError>;
}

/// Delays the redelivery of a message the poster hands back (SQS `ChangeMessageVisibility`), so a record
/// held for a deployment fault comes back with backoff rather than every visibility timeout.
#[async_trait]
pub trait Redelivery: Send + Sync {
    async fn delay(&self, receipt_handle: &str, delay: std::time::Duration) -> Result<(), AwsError>;
}
