//! Error classification. Every error the connector can meet is either worth retrying later (the outside
//! world was busy, slow or briefly broken) or permanent (retrying can only repeat the failure). That one bit
//! decides SQS redelivery vs. a recorded failure reported to Brex, and the webhook's 5xx vs. 4xx.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    Retryable,
    Permanent,
}

pub trait Classify {
    fn disposition(&self) -> Disposition;

    fn is_retryable(&self) -> bool {
        self.disposition() == Disposition::Retryable
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
