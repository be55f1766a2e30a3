//! An AWS SDK error as an [`AwsError`]: classified once, here, by its service code and HTTP status.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::{AwsError, Disposition};

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
