//! Error classification by who is at fault. A passing fault (the outside world was busy, slow or briefly
//! broken) is retried; the record itself (a mapping error, IFS refusing it on its merits) makes a permanent
//! failure reported to Brex; the deployment or the tenant (credentials, a projection the tenant lacks, an
//! answer we cannot read, our own bug) holds the record until an operator fixes the cause. That decides SQS
//! redelivery, what Brex is told, and the webhook's 5xx vs. 4xx. Which error falls where is decided in
//! [`crate::fault`].

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
