//! IFS failures, typed so the caller can tell a passing fault (429, 502–504, `MI_MODIFIED_ERROR`, timeouts)
//! from IFS refusing the record (a business rule, whose message goes back to Brex) and from a tenant or
//! deployment that cannot do what we asked (auth, a path the release lacks, an unreadable answer). The
//! classes themselves are assigned in [`crate::fault`].

use std::time::Duration;

use serde::Deserialize;

/// Longest piece of a non-JSON error body kept in a message (a proxy's HTML page should not flood logs).
const MAX_RAW_MESSAGE: usize = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfsError {
    /// The token endpoint refused us, or IFS kept answering 401/403 with a fresh token. A configuration
    /// problem, never the record's fault, so it is retried later rather than reported as a record failure.
    #[error("IFS authentication failed ({status} {code}): {message}")]
    Auth { status: u16, code: String, message: String },
    /// 429 after the retry budget, or a `Retry-After` longer than we are willing to wait in-process.
    #[error("IFS rate limited the request (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// 502/503/504 (`ODP_OPERATION_TIMEOUT`) or a repeated 500 `MI_MODIFIED_ERROR`.
    #[error("IFS unavailable ({status} {code}): {message}")]
    Unavailable { status: u16, code: String, message: String },
    /// The ETag stayed stale (412) through every bounded re-read: heavy contention on the entity.
    #[error("IFS precondition failed: the ETag was still stale after {attempts} attempts")]
    PreconditionFailed { attempts: u32 },
    /// 428 / `ODP_MISSING_PRECONDITION`: we sent a mutation without `If-Match`. A bug; never retried.
    #[error("IFS demanded If-Match ({status} {code}): {message}")]
    MissingPrecondition { status: u16, code: String, message: String },
    /// IFS refused the request on its merits (bad account, closed period, unbalanced voucher, demanded code
    /// part …). `message` is IFS's own text, reported to Brex as is.
    #[error("IFS rejected the request ({status} {code}): {message}")]
    Rejected { status: u16, code: String, message: String },
    /// The tenant cannot do what we asked: 404 on a projection, entity set, action or `$batch` path, 405,
    /// 501, or another OData-layer (`ODP_…`) refusal of the request's shape. A keyed read's 404 only lands
    /// here once the entity set itself is shown to be missing. `path` is relative to the projection root.
    #[error("IFS cannot serve {path} ({status} {code}): {message}")]
    Unsupported { status: u16, code: String, message: String, path: String },
    /// The virtual voucher we were assembling is gone (removed by IFS, or another request finished it).
    /// Nothing is committed by it any more; assembling afresh is safe.
    #[error("IFS virtual voucher {path} no longer exists")]
    Vanished { path: String },
    /// No answer: connection refused or dropped, or the request timed out.
    #[error("IFS transport error{}: {message}", if *timeout { " (timeout)" } else { "" })]
    Transport { message: String, timeout: bool },
    /// IFS answered, but not in the shape we expect.
    #[error("IFS response could not be decoded: {0}")]
    Decode(String),
    /// `CreateVoucher` ended without a clear answer and the dedup re-query did not find the voucher. Nothing
    /// is known to be committed, so another attempt (which starts with the dedup query) is safe.
    #[error("IFS voucher creation for {reference} is uncertain and was not found on re-check: {message}")]
    UncertainCommit { reference: String, message: String },
    /// IFS's calendar has no accounting period containing the voucher date.
    #[error("IFS company {company} has no accounting period for {date}")]
    NoAccountingPeriod { company: String, date: chrono::NaiveDate },
    /// The request could not even be built (bad configuration or a proposal IFS can never accept).
    #[error("invalid IFS request: {0}")]
    InvalidRequest(String),
}

/// `code` and `message` of an error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Reads the OData envelope `{"error":{"code","message","details":[…]}}`, the OAuth form
/// `{"error":"invalid_client","error_description":"…"}` (token endpoint), or falls back to the raw text.
pub fn parse_error_body(body: &[u8]) -> ErrorBody {
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        message: String,
    }
    #[derive(Deserialize)]
    struct OData {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        details: Vec<Detail>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Inner {
        OData(OData),
        OAuth(String),
    }
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
        #[serde(default)]
        error_description: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error: Inner::OData(e), .. }) => {
            // IFS puts the business-rule specifics into details[] at times; keep them with the message.
            let extra: Vec<String> =
                e.details.into_iter().map(|d| d.message).filter(|m| !m.is_empty() && *m != e.message).collect();
            let mut message = e.message;
            for detail in extra {
                message.push_str("; ");
                message.push_str(&detail);
            }
            ErrorBody { code: e.code, message }
        }
        Ok(Envelope { error: Inner::OAuth(code), error_description }) => ErrorBody { code, message: error_description },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            ErrorBody { code: String::new(), message: text.trim().chars().take(MAX_RAW_MESSAGE).collect() }
        }
    }
}

/// Codes that name a retryable condition whatever the status.
pub const MI_MODIFIED_ERROR: &str = "MI_MODIFIED_ERROR";
pub const ODP_MISSING_PRECONDITION: &str = "ODP_MISSING_PRECONDITION";

/// Maps an error answer to an [`IfsError`]. 401 and 412 are handled by the caller before this (they lead
/// to a token refresh or an ETag re-read); when they reach here they have already been retried. `path` is
/// the request's path under the projection root (kept in [`IfsError::Unsupported`]).
pub fn classify_status(status: u16, body: &ErrorBody, retry_after: Option<Duration>, path: &str) -> IfsError {
    let ErrorBody { code, message } = body.clone();
    match status {
        401 | 403 => IfsError::Auth { status, code, message },
        428 => IfsError::MissingPrecondition { status, code, message },
        _ if code == ODP_MISSING_PRECONDITION => IfsError::MissingPrecondition { status, code, message },
        429 => IfsError::RateLimited { retry_after },
        502..=504 => IfsError::Unavailable { status, code, message },
        500 if code == MI_MODIFIED_ERROR => IfsError::Unavailable { status, code, message },
        404 | 405 | 501 => IfsError::Unsupported { status, code, message, path: path.to_owned() },
        // The OData layer refusing the request's shape (`ODP_INVALID_URL`, `ODP_DESERIALIZATION_ERROR`,
        // `ODP_NOT_IMPLEMENTED` …) is about what this tenant's projection accepts, never about the record:
        // business rules answer with their own codes (`DATABASE_ERROR`).
        400..=499 if code.starts_with("ODP_") => IfsError::Unsupported { status, code, message, path: path.to_owned() },
        _ => IfsError::Rejected { status, code, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_envelope_and_details_are_read() {
        let b = parse_error_body(
            br#"{"error":{"code":"DATABASE_ERROR","message":"The voucher is not balanced","details":[{"code":"X","message":"debit 10, credit 9"}]}}"#,
        );
        assert_eq!(b.code, "DATABASE_ERROR");
        assert_eq!(b.message, "The voucher is not balanced; debit 10, credit 9");
        let oauth = parse_error_body(br#"{"error":"invalid_client","error_description":"Invalid client credentials"}"#);
        assert_eq!(oauth, ErrorBody { code: "invalid_client".into(), message: "Invalid client credentials".into() });
        let raw = parse_error_body(format!("<html>{}</html>", "x".repeat(1000)).as_bytes());
        assert_eq!(raw.code, "");
        assert_eq!(raw.message.chars().count(), MAX_RAW_MESSAGE);
    }
}
