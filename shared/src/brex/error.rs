//! Brex client errors. Who is at fault for each is decided in [`crate::fault`].

use crate::error::AwsError;

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
    /// The stored Brex secret is neither `{"token"}` nor `{"client_id", "client_secret", "refresh_token",
    /// "token_url"}` (OAuth).
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
