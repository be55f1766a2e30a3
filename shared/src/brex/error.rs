//! Brex client errors and their retry classification.

use crate::error::ExternalError;
use crate::error::{AwsError, Classify};

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrexError {
    /// Brex answered with a non-success status (after the retries the policy allows).
    #[error("Brex {operation} answered {status}{}: {message}{}", code_suffix(.code), trace_suffix(.trace_id))]
    Status {
        operation: &'static str,
        status: u16,
        /// `error_code` (v3) or `code`/`type` (v1/v2) from the error body.
        code: Option<String>,
        message: String,
        /// `X-Brex-Trace-Id`, to quote to Brex support.
        trace_id: Option<String>,
    },
    /// No answer: connect failure, reset, timeout.
    #[error("Brex {operation} request failed: {message}")]
    Transport { operation: &'static str, message: String, timeout: bool },
    /// A success answer whose body is not what the API documents.
    #[error("Brex {operation} response could not be read: {message}")]
    Decode { operation: &'static str, message: String },
    /// The OAuth token endpoint refused or failed.
    #[error("Brex OAuth token refresh failed: {message}")]
    Token { status: Option<u16>, message: String },
    /// Another instance held the refresh lease for longer than we were willing to wait.
    #[error("Brex OAuth refresh is held by another instance")]
    RefreshContended,
    /// Reading or writing the Brex secret, or the refresh lease, failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The stored Brex secret is not one of the contract §3 shapes.
    #[error("the Brex secret is not valid: {0}")]
    InvalidSecret(String),
    /// A request we refuse to send (a bug or misconfiguration on our side).
    #[error("invalid Brex request: {0}")]
    InvalidRequest(String),
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_deref().map(|c| format!(" {c}")).unwrap_or_default()
}

fn trace_suffix(trace: &Option<String>) -> String {
    trace.as_deref().map(|t| format!(" (trace {t})")).unwrap_or_default()
}

impl BrexError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Token { status, .. } => *status,
            _ => None,
        }
    }
}

/// Whether a Brex HTTP status is worth another try.
pub(crate) fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..=599).contains(&status)
}

impl From<BrexError> for ExternalError {
    fn from(err: BrexError) -> Self {
        Self {
            system: "brex",
            disposition: err.disposition(),
            fix: crate::fault::brex_fix(&err),
            message: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Disposition;

    fn status(status: u16) -> BrexError {
        BrexError::Status {
            operation: "query",
            status,
            code: Some("X".into()),
            message: "m".into(),
            trace_id: Some("t1".into()),
        }
    }

    #[test]
    fn external_error_keeps_disposition_and_trace() {
        let ext = ExternalError::from(status(422));
        assert_eq!((ext.system, ext.disposition), ("brex", Disposition::Permanent));
        assert_eq!(ext.message, "Brex query answered 422 X: m (trace t1)");
    }
}
