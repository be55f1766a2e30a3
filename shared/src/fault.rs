//! Who is at fault, for every IFS and Brex error: the one place that decides whether a failure is retried
//! (a passing fault), fails the record and is reported to Brex (the record's own fault), or holds the record
//! until an operator fixes the deployment or the tenant — and, for a held record, what that fix is.
//!
//! The rule for the record's side is narrow on purpose: only mapping errors and IFS's business refusals
//! (unknown account, closed period, unbalanced voucher, a demanded code part: IFS answers those with its own
//! codes, `DATABASE_ERROR` in the documented releases) blame the record. Anything about *how* we talk to the
//! tenant — credentials, a path its release or gateway does not serve, an answer we cannot read, a request
//! its OData layer refuses, our own missing `If-Match` — holds it: the same record posts once that is fixed.
//! A closed period is the record's fault only under the mapping's `[ifs] closed_period = "fail"`; the other
//! policies are applied before and after posting by `crate::mapping::period`, not here.

use crate::brex::BrexError;
use crate::brex::error::status_is_retryable;
use crate::error::{Classify, Disposition, ExternalError};
use crate::ifs::IfsError;

impl From<IfsError> for ExternalError {
    fn from(err: IfsError) -> Self {
        let (disposition, fix) = (err.disposition(), ifs_fix(&err));
        Self::classified("IFS", err, disposition, fix)
    }
}

impl From<BrexError> for ExternalError {
    fn from(err: BrexError) -> Self {
        let (disposition, fix) = (err.disposition(), brex_fix(&err));
        Self::classified("brex", err, disposition, fix)
    }
}

impl Classify for IfsError {
    fn disposition(&self) -> Disposition {
        match self {
            Self::RateLimited { .. }
            | Self::Unavailable { .. }
            | Self::PreconditionFailed { .. }
            | Self::Transport { .. }
            | Self::UncertainCommit { .. }
            | Self::Vanished { .. } => Disposition::Retryable,
            Self::Rejected { .. } | Self::NoAccountingPeriod { .. } => Disposition::Permanent,
            Self::Auth { .. }
            | Self::Unsupported { .. }
            | Self::MissingPrecondition { .. }
            | Self::Decode(_)
            | Self::InvalidRequest(_) => Disposition::Hold,
        }
    }
}

/// What the operator should change for a held IFS failure; `None` for the other classes.
pub fn ifs_fix(error: &IfsError) -> Option<String> {
    let fix = match error {
        IfsError::Auth { .. } => {
            "check the IFS IAM client in the IFS secret (client_id, client_secret), IFS_URL / IFS_REALM, and the \
             service user's permission sets and company access; then `connector replay`"
                .to_owned()
        }
        IfsError::Unsupported { status: 404, path, .. } => format!(
            "this tenant does not serve {path}: set its release's name in the mapping's [ifs.api] \
             (`connector doctor` probes every configured name), push the mapping, then `connector replay`"
        ),
        IfsError::Unsupported { path, .. } => format!(
            "this tenant refuses the request shape used on {path}: run `connector doctor` to see what it \
             supports, adjust [ifs.api] in the mapping, push it, then `connector replay`"
        ),
        IfsError::MissingPrecondition { .. } => {
            "IFS demanded If-Match on a request the connector sent without one: a connector bug (or a gateway \
             stripping the header); report it with the record id, then `connector replay`"
                .to_owned()
        }
        IfsError::Decode(_) => "IFS answered in a shape the connector cannot read (a gateway page, or a tailored \
             projection): check IFS_URL and [ifs.api] with `connector doctor`, then `connector replay`"
            .to_owned(),
        IfsError::InvalidRequest(_) => "the IFS request could not be built from the configuration: check IFS_URL, \
             IFS_REALM and [ifs.api] with `connector doctor`, then `connector replay`"
            .to_owned(),
        _ => return None,
    };
    Some(fix)
}

impl Classify for BrexError {
    fn disposition(&self) -> Disposition {
        match self {
            Self::Status { status, .. } if status_is_retryable(*status) => Disposition::Retryable,
            // Credentials or scopes are broken, or the URL points where the API is not: the deployment.
            Self::Status { status: 401 | 403 | 404 | 405, .. } => Disposition::Hold,
            Self::Status { .. } => Disposition::Permanent,
            Self::Transport { .. } | Self::RefreshContended => Disposition::Retryable,
            // The token endpoint refusing our refresh token or client is a credential problem; its outage is not.
            Self::Token { status: Some(s), .. } if !status_is_retryable(*s) => Disposition::Hold,
            Self::Token { .. } => Disposition::Retryable,
            Self::Aws(e) => e.disposition(),
            Self::Decode { .. } | Self::InvalidSecret(_) | Self::InvalidRequest(_) => Disposition::Hold,
        }
    }
}

/// What the operator should change for a held Brex failure; `None` for the other classes.
pub fn brex_fix(error: &BrexError) -> Option<String> {
    if error.disposition() != Disposition::Hold {
        return None;
    }
    let fix = match error {
        BrexError::Status { status: 401 | 403, .. } | BrexError::Token { .. } | BrexError::InvalidSecret(_) => {
            "put a valid Brex token (or OAuth client and refresh token) with the accounting scopes into the Brex \
             secret; then `connector replay`"
        }
        BrexError::Status { .. } => "check BREX_API_URL (`connector doctor` calls every Brex endpoint used)",
        _ => "Brex answered in a shape the connector cannot read: check BREX_API_URL with `connector doctor`",
    };
    Some(fix.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ifs::error::{ErrorBody, MI_MODIFIED_ERROR, ODP_MISSING_PRECONDITION, classify_status};
    use Disposition::{Hold, Permanent, Retryable};

    /// Every IFS error answer the simulator can give (and a real tenant was seen to give), with its class.
    #[test]
    fn every_ifs_answer_has_its_class() {
        let cases: &[(u16, &str, &str, Disposition)] = &[
            (429, "TOO_MANY_REQUESTS", "VoucherEntryAssistantHandling.svc/VoucherSet", Retryable),
            (502, "BAD_GATEWAY", "VoucherEntryAssistantHandling.svc/VoucherSet", Retryable),
            (503, "SERVICE_UNAVAILABLE", "AccountsHandling.svc/AccountSet", Retryable),
            (504, "ODP_OPERATION_TIMEOUT", "VoucherEntryAssistantHandling.svc/$batch", Retryable),
            (500, MI_MODIFIED_ERROR, "AccountsHandling.svc/AccountSet", Retryable),
            // Business refusals: the record's fault, IFS's message goes to Brex.
            (
                400,
                "DATABASE_ERROR",
                "VoucherEntryAssistantHandling.svc/VoucherSet(Objkey='k')/VoucherPostingArray",
                Permanent,
            ),
            (
                400,
                "DATABASE_ERROR",
                "VoucherSet(Objkey='k')/IfsApp.VoucherEntryAssistantHandling.VoucherEntry_CreateVoucher",
                Permanent,
            ),
            (409, "DATABASE_ERROR", "VoucherEntryAssistantHandling.svc/VoucherSet", Permanent),
            (500, "DATABASE_ERROR", "VoucherEntryAssistantHandling.svc/VoucherSet", Permanent),
            // The tenant or the deployment: held.
            (401, "UNAUTHORIZED", "AccountsHandling.svc/AccountSet", Hold),
            (403, "FORBIDDEN", "VoucherEntryAssistantHandling.svc/VoucherSet", Hold),
            (401, "invalid_client", "token", Hold),
            (404, "ODP_RESOURCE_NOTFOUND", "VoucherEntryAssistantHandling.svc/$batch", Hold),
            (404, "ODP_RESOURCE_NOTFOUND", "VoucherEntryAssistantHandling.svc/VoucherSet", Hold),
            (404, "", "VoucherRowsAnalysis.svc/VoucherRowSet", Hold),
            (405, "", "VoucherEntryAssistantHandling.svc/$batch", Hold),
            (501, "ODP_NOT_IMPLEMENTED", "VoucherRowsAnalysis.svc/VoucherRowSet", Hold),
            (400, "ODP_INVALID_URL", "VoucherEntryAssistantHandling.svc/$batch", Hold),
            (400, "ODP_DESERIALIZATION_ERROR", "VoucherEntryAssistantHandling.svc/VoucherSet", Hold),
            (428, "ODP_MISSING_PRECONDITION", "VoucherSet(Objkey='k')/VoucherPostingArray", Hold),
            (400, ODP_MISSING_PRECONDITION, "VoucherSet(Objkey='k')/VoucherPostingArray", Hold),
        ];
        for &(status, code, path, expected) in cases {
            let body = ErrorBody { code: code.into(), message: "m".into() };
            let err = classify_status(status, &body, None, path);
            assert_eq!(err.disposition(), expected, "{status} {code} on {path}: {err:?}");
            let external = ExternalError::from(err);
            assert_eq!(external.disposition, expected);
            assert_eq!(external.fix.is_some(), expected == Hold, "{status} {code}: a held error names its fix");
        }
        let no_path = classify_status(
            404,
            &ErrorBody { code: "ODP_RESOURCE_NOTFOUND".into(), message: "m".into() },
            None,
            "X.svc/Y",
        );
        let fix = ifs_fix(&no_path).unwrap_or_default();
        assert!(fix.contains("X.svc/Y") && fix.contains("[ifs.api]"), "{fix}");
    }

    #[test]
    fn client_side_ifs_errors_have_their_class() {
        let cases = [
            (IfsError::PreconditionFailed { attempts: 6 }, Retryable),
            (IfsError::Transport { message: "reset".into(), timeout: true }, Retryable),
            (IfsError::UncertainCommit { reference: "r".into(), message: "m".into() }, Retryable),
            (IfsError::Vanished { path: "VoucherSet(Objkey='k')".into() }, Retryable),
            (IfsError::RateLimited { retry_after: None }, Retryable),
            (
                IfsError::NoAccountingPeriod {
                    company: "10".into(),
                    date: chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap_or_default(),
                },
                Permanent,
            ),
            (IfsError::Decode("VoucherSet POST: no Objkey".into()), Hold),
            (IfsError::InvalidRequest("IFS_URL must be http(s)".into()), Hold),
        ];
        for (err, expected) in cases {
            assert_eq!(err.disposition(), expected, "{err:?}");
        }
    }

    /// Every Brex error the simulator can give, with its class.
    #[test]
    fn every_brex_error_has_its_class() {
        let status = |status| BrexError::Status {
            operation: "records",
            status,
            code: Some("X".into()),
            message: "m".into(),
            trace_id: None,
        };
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(status(s).disposition(), Retryable, "{s}");
        }
        for s in [401, 403, 404, 405] {
            let err = status(s);
            assert_eq!(err.disposition(), Hold, "{s}");
            assert!(ExternalError::from(err).fix.is_some());
        }
        for s in [400, 409, 422] {
            assert_eq!(status(s).disposition(), Permanent, "{s}");
        }
        let token = |status| BrexError::Token { status, message: "m".into() };
        assert_eq!(token(Some(400)).disposition(), Hold, "a revoked refresh token is a credential problem");
        assert_eq!(token(Some(401)).disposition(), Hold);
        assert_eq!(token(Some(503)).disposition(), Retryable);
        assert_eq!(token(None).disposition(), Retryable);
        assert_eq!(BrexError::RefreshContended.disposition(), Retryable);
        assert_eq!(
            BrexError::Transport { operation: "q", message: "reset".into(), timeout: true }.disposition(),
            Retryable
        );
        assert_eq!(BrexError::Decode { operation: "q", message: "m".into() }.disposition(), Hold);
        assert_eq!(BrexError::InvalidSecret("x".into()).disposition(), Hold);
        assert_eq!(BrexError::InvalidRequest("x".into()).disposition(), Hold);
        assert!(ExternalError::from(status(503)).fix.is_none());
    }

    #[test]
    fn external_error_keeps_the_message_and_the_error_itself() {
        let err = BrexError::Status {
            operation: "query",
            status: 422,
            code: Some("X".into()),
            message: "m".into(),
            trace_id: Some("t1".into()),
        };
        let ext = ExternalError::from(err.clone());
        assert_eq!((ext.system, ext.disposition), ("brex", Permanent));
        assert_eq!(ext.message, "Brex query answered 422 X: m (trace t1)");
        assert_eq!(ext.to_string(), "brex: Brex query answered 422 X: m (trace t1)");
        let source = std::error::Error::source(&ext).and_then(|s| s.downcast_ref::<BrexError>());
        assert_eq!(source.map(BrexError::status), Some(err.status()));

        let ifs = IfsError::Vanished { path: "VoucherSet(Objkey='k')".into() };
        let ext = ExternalError::from(ifs.clone());
        assert_eq!(ext.to_string(), format!("IFS: {ifs}"));
        assert_eq!(std::error::Error::source(&ext).and_then(|s| s.downcast_ref::<IfsError>()), Some(&ifs));
        assert!(std::error::Error::source(&ExternalError::new("IFS", "m", Retryable)).is_none());
    }
}
