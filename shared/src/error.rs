//! Error classification by who is at fault. A passing fault (the outside world was busy, slow or briefly
//! broken) is retried; the record itself (a mapping error, IFS refusing it on its merits) makes a permanent
//! failure reported to Brex; the deployment or the tenant (credentials, a projection the tenant lacks, an
//! answer we cannot read, our own bug) holds the record until an operator fixes the cause. That decides SQS
//! redelivery, what Brex is told, and the webhook's 5xx vs. 4xx. Which error falls where is decided in
//! [`crate::fault`].

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

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
/// been classified, so retry logic keeps the one thing it needs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {operation} failed: {message}")]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub disposition: Disposition,
}

impl Classify for AwsError {
    fn disposition(&self) -> Disposition {
        self.disposition
    }
}

/// Service error codes that mean "busy or briefly broken, try again".
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "KMSThrottlingException",
    "RequestThrottled",
    "AWS.SimpleQueueService.ServiceUnavailable",
];

impl AwsError {
    pub fn from_sdk<E>(service: &'static str, operation: &'static str, err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (code, disposition) = match err {
            SdkError::ServiceError(service_err) => {
                let code = service_err.err().code().map(str::to_owned);
                let retryable = code.as_deref().is_some_and(|c| RETRYABLE_CODES.contains(&c))
                    || service_err.raw().status().is_server_error();
                (code, if retryable { Disposition::Retryable } else { Disposition::Permanent })
            }
            // Construction failures are our own bugs; everything on the wire (timeouts, dispatch, bad
            // responses) is worth another try.
            SdkError::ConstructionFailure(_) => (None, Disposition::Permanent),
            _ => (None, Disposition::Retryable),
        };
        let message = match err {
            SdkError::ServiceError(e) => e.err().message().unwrap_or("service error").to_owned(),
            other => format!("{}", DisplayErrorContext(other)),
        };
        Self { service, operation, code, message, disposition }
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
