//! Error classification by who is at fault. A passing fault (the outside world was busy, slow or briefly
//! broken) is retried; the record itself (a mapping error, IFS refusing it on its merits) makes a permanent
//! failure reported to Brex; the deployment or the tenant (credentials, a projection the tenant lacks, an
//! answer we cannot read, our own bug) holds the record until an operator fixes the cause. That decides SQS
//! redelivery, what Brex is told, and the webhook's 5xx vs. 4xx. Which error falls where is decided in
//! [`crate::fault`].

use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// A passing fault: try again later.
    Retryable,
    /// The record itself is at fault: recorded as failed and reported to Brex; retrying repeats it.
    Permanent,
    /// The deployment or the tenant is at fault: the record is held (never failed, never reported to Brex),
    /// its message comes back with backoff, and it posts once the operator has fixed the cause.
    Hold,
}

pub trait Classify {
    fn disposition(&self) -> Disposition;

    fn is_retryable(&self) -> bool {
        self.disposition() == Disposition::Retryable
    }

    fn is_held(&self) -> bool {
        self.disposition() == Disposition::Hold
    }
}

/// A failed AWS call (SQS, DynamoDB, Secrets Manager), with the SDK error flattened to text *after* it has
/// been classified (`crate::aws` builds it), so retry logic keeps the one thing it needs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {operation} failed: {message}")]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub disposition: Disposition,
}

impl AwsError {
    /// A failure that is not the SDK's own (an item we cannot read, work left unprocessed, …).
    pub fn new(
        service: &'static str,
        operation: &'static str,
        message: impl Into<String>,
        disposition: Disposition,
    ) -> Self {
        Self { service, operation, code: None, message: message.into(), disposition }
    }
}

impl Classify for AwsError {
    fn disposition(&self) -> Disposition {
        self.disposition
    }
}

/// A failure of an outside HTTP system (Brex, IFS) as the ports report it: who is at fault, the operator's fix
/// for a held one, and the system's own error as its [`source`](std::error::Error::source).
///
/// The source is an `Arc<dyn Error>` rather than an enum of the systems' errors: this module is the ground
/// floor every system's errors are built on, so it names none of them; the `Arc` keeps it `Clone`, as the
/// errors that carry it are (`MappingError`, `SyncError`, `RefreshError`); a caller that needs the exact
/// error downcasts the source.
#[derive(Debug, Clone)]
pub struct ExternalError {
    pub system: &'static str,
    /// What is logged and, for the record's own faults, what Brex is told: the source's text when there is one.
    pub message: String,
    pub disposition: Disposition,
    /// For a held failure: what the operator should change (see [`crate::fault`]).
    pub fix: Option<String>,
    /// Boxed inside the `Arc` so the pointer is thin: the errors that carry an `ExternalError` beside their
    /// own fields (`SyncError::Ifs`) stay small enough to return by value.
    source: Option<Arc<Box<dyn std::error::Error + Send + Sync>>>,
}

impl ExternalError {
    /// A failure with no operator fix and no underlying error (passing faults, the record's own).
    pub fn new(system: &'static str, message: impl Into<String>, disposition: Disposition) -> Self {
        Self { system, message: message.into(), disposition, fix: None, source: None }
    }

    /// A system's own error, once classified: its text is the message, the error itself the source.
    pub fn classified<E>(system: &'static str, error: E, disposition: Disposition, fix: Option<String>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self { system, message: error.to_string(), disposition, fix, source: Some(Arc::new(Box::new(error))) }
    }
}

impl fmt::Display for ExternalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.system, self.message)
    }
}

impl std::error::Error for ExternalError {
    // The error inside the `Arc`, not the `Arc`, so that `downcast_ref::<BrexError>()` finds it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| &**e as &(dyn std::error::Error + 'static))
    }
}

impl Classify for ExternalError {
    fn disposition(&self) -> Disposition {
        self.disposition
    }
}
