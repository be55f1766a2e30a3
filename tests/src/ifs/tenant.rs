//! The tenant profile: how this IFS differs from the documented one. Real tenants do: a release or gateway
//! without `$batch`, a tailored projection that takes `$batch` but does not resolve `If-Match: $n`, a
//! projection an older release does not ship.

use serde::{Deserialize, Serialize};

/// What `POST …/<Projection>.svc/$batch` does on this tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchSupport {
    /// As IFS documents it: change sets, Content-ID references in URLs and in `If-Match`.
    #[default]
    Full,
    /// `$batch` works and `$1/VoucherPostingArray` resolves, but `If-Match: $1` is compared literally with
    /// the entity's ETag: the guarded operation answers 412 and its change set rolls back. A real ETag in
    /// `If-Match` still works.
    NoEtagReferences,
    /// No `$batch` route: every `POST …/$batch` answers 404 `ODP_RESOURCE_NOTFOUND`; nothing runs.
    Absent,
}

impl BatchSupport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::NoEtagReferences => "no_etag_references",
            Self::Absent => "absent",
        }
    }
}

impl std::str::FromStr for BatchSupport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Self::Full),
            "no_etag_references" => Ok(Self::NoEtagReferences),
            "absent" => Ok(Self::Absent),
            other => Err(format!("batch support must be full, no_etag_references or absent, not {other:?}")),
        }
    }
}

/// The tenant profile (`GET|PUT /_sim/tenant`; missing fields take their defaults).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IfsTenant {
    pub batch: BatchSupport,
    /// Projections this tenant does not serve, e.g. `"VoucherRowsAnalysis.svc"` (the `.svc` may be left
    /// off): every request under them, `$batch` and batch parts included, answers 404
    /// `ODP_RESOURCE_NOTFOUND`.
    pub missing_projections: Vec<String>,
}

impl IfsTenant {
    /// Whether `projection` (`Name.svc` or `Name`) is one this tenant does not serve.
    pub fn lacks(&self, projection: &str) -> bool {
        let name = projection.strip_suffix(".svc").unwrap_or(projection);
        self.missing_projections.iter().any(|m| m.strip_suffix(".svc").unwrap_or(m) == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_reads_snake_case_and_defaults() {
        let t: IfsTenant = serde_json::from_str(r#"{"batch":"no_etag_references"}"#).unwrap();
        assert_eq!(t.batch, BatchSupport::NoEtagReferences);
        assert!(t.missing_projections.is_empty());
        assert_eq!(serde_json::from_str::<IfsTenant>("{}").unwrap(), IfsTenant::default());
        assert!(serde_json::from_str::<IfsTenant>(r#"{"batch":"sometimes"}"#).is_err());
        assert!(serde_json::from_str::<IfsTenant>(r#"{"bacth":"absent"}"#).is_err(), "typos are refused");
        for mode in [BatchSupport::Full, BatchSupport::NoEtagReferences, BatchSupport::Absent] {
            assert_eq!(mode.as_str().parse::<BatchSupport>().unwrap(), mode);
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
        }
        let t = IfsTenant { missing_projections: vec!["VoucherRowsAnalysis.svc".into()], ..IfsTenant::default() };
        assert!(t.lacks("VoucherRowsAnalysis.svc") && t.lacks("VoucherRowsAnalysis"));
        assert!(!t.lacks("AccountsHandling.svc"));
    }
}
