//! Projection, entity-set and action names. IFS releases differ and customers tailor projections, so these
//! are the defaults of the mapping document's optional `[ifs.api]` table, where the operator names what
//! their release serves.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IfsApiNames {
    /// Path under `{IFS_URL}`; the `int` deployment is not CSRF-protected.
    pub base_path: String,
    pub voucher_entry_projection: String,
    pub voucher_entry_set: String,
    pub voucher_posting_array: String,
    /// Full bound-action name, appended to `VoucherSet(Objkey='…')/`.
    pub create_voucher_action: String,
    pub voucher_rows_projection: String,
    pub voucher_rows_set: String,
    pub accounts_projection: String,
    pub accounts_set: String,
    pub periods_projection: String,
    pub periods_set: String,
    /// Create vouchers through OData `$batch` on the voucher-entry projection (one atomic change set per
    /// voucher, several vouchers per request), or step by step (header, rows, `CreateVoucher` as separate
    /// requests). `auto` (the default) tries `$batch` and falls back, remembering for about an hour, when
    /// the tenant refuses it; `true` / `false` force one flow. It sits here, with the projection names,
    /// because it is a property of the customer's IFS, changed by pushing the mapping document rather than
    /// by redeploying.
    pub batch: BatchMode,
    /// Most vouchers (change sets) sent in one `$batch` request.
    pub batch_max_vouchers: usize,
    /// Bound action (appended to `VoucherSet(Objkey='…')/`) that discards a virtual voucher whose rows or
    /// `CreateVoucher` failed, so nothing is left behind in IFS. Empty: never remove (a release without it).
    pub remove_voucher_action: String,
    /// Document management, for receipts attached to vouchers (`[ifs] attach_receipts`): the projection
    /// that connects documents to business objects.
    pub attachment_projection: String,
    /// Its entity set of document files connected to an object: a POST (the object's `LuName` and `KeyRef`,
    /// the document class, title and file name) creates the document revision and its file entity; the
    /// file's bytes then go to `{set}(key)/FileData` with a PUT carrying `If-Match`.
    pub attachment_set: String,
    /// The logical unit a voucher is in document management (`Voucher`; some releases attach to
    /// `VoucherRow`, whose key ref is the same plus the row number).
    pub attachment_lu_name: String,
    /// The document class receipts are filed under (it must exist in the tenant's document basic data).
    pub attachment_doc_class: String,
    /// Posted vouchers in the hold table, read by key (`VoucherSet(Company=…,AccountingYear=…,VoucherType=…,
    /// VoucherNo=…)`) for their approval state when a record changes after export.
    pub posted_voucher_projection: String,
    pub posted_voucher_set: String,
    /// Bound action on a posted voucher (appended to its key) that removes it from the hold table while it
    /// is not approved, If-Match guarded. The public projections document no such action, so the name is
    /// the operator's to set for their release; `[ifs] changed_after_export = "replace"` uses it.
    pub remove_posted_voucher_action: String,
}

/// `[ifs.api] batch`: `"auto"`, `true` or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchMode {
    /// `$batch` while the tenant takes it; step by step (remembered for a while) once it is refused.
    #[default]
    Auto,
    /// Always `$batch`: a refusal holds the records instead of switching flows.
    On,
    /// Always step by step.
    Off,
}

impl Serialize for BatchMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::On => s.serialize_bool(true),
            Self::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for BatchMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Self::On),
            Raw::Bool(false) => Ok(Self::Off),
            Raw::Text(t) if t == "auto" => Ok(Self::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!("batch must be \"auto\", true or false, not {t:?}"))),
        }
    }
}

impl Default for IfsApiNames {
    fn default() -> Self {
        Self {
            base_path: "/int/ifsapplications/projection/v1".into(),
            voucher_entry_projection: "VoucherEntryAssistantHandling.svc".into(),
            voucher_entry_set: "VoucherSet".into(),
            voucher_posting_array: "VoucherPostingArray".into(),
            create_voucher_action: "IfsApp.VoucherEntryAssistantHandling.VoucherEntry_CreateVoucher".into(),
            voucher_rows_projection: "VoucherRowsAnalysis.svc".into(),
            voucher_rows_set: "VoucherRowSet".into(),
            accounts_projection: "AccountsHandling.svc".into(),
            accounts_set: "AccountSet".into(),
            periods_projection: "AccountingPeriodsHandling.svc".into(),
            periods_set: "AccountingPeriodSet".into(),
            batch: BatchMode::Auto,
            batch_max_vouchers: 10,
            remove_voucher_action: "IfsApp.VoucherEntryAssistantHandling.VoucherEntry_RemoveTempVoucher".into(),
            attachment_projection: "DocReferenceObjectAttachmentHandling.svc".into(),
            attachment_set: "EdmFileSet".into(),
            attachment_lu_name: "Voucher".into(),
            attachment_doc_class: "BREXRCPT".into(),
            posted_voucher_projection: "VoucherHandling.svc".into(),
            posted_voucher_set: "VoucherSet".into(),
            remove_posted_voucher_action: "IfsApp.VoucherHandling.Voucher_RemoveVoucher".into(),
        }
    }
}

impl IfsApiNames {
    /// `CodeBHandling.svc` / `CodeBSet` for a code part; these follow one naming pattern in every release.
    pub fn code_part_projection(part: crate::proposal::CodePart) -> (String, String) {
        let prop = part.property();
        (format!("{prop}Handling.svc"), format!("{prop}Set"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_tables_keep_defaults_and_typos_are_rejected() {
        let names: IfsApiNames = toml::from_str("voucher_entry_projection = \"MyVoucherHandling.svc\"").unwrap();
        assert_eq!(names.voucher_entry_projection, "MyVoucherHandling.svc");
        assert_eq!(names.voucher_rows_set, "VoucherRowSet");
        assert_eq!(names.attachment_projection, "DocReferenceObjectAttachmentHandling.svc");
        let named: IfsApiNames = toml::from_str("attachment_lu_name = \"VoucherRow\"").unwrap();
        assert_eq!((named.attachment_lu_name.as_str(), named.attachment_set.as_str()), ("VoucherRow", "EdmFileSet"));
        assert!(toml::from_str::<IfsApiNames>("voucher_entry_projektion = \"x\"").is_err());
        assert_eq!(names.batch, BatchMode::Auto, "$batch is discovered unless a tenant forces a flow");
        let mode = |text: &str| toml::from_str::<IfsApiNames>(text).map(|n| n.batch);
        assert_eq!(mode("batch = false").unwrap(), BatchMode::Off);
        assert_eq!(mode("batch = true").unwrap(), BatchMode::On);
        assert_eq!(mode("batch = \"auto\"").unwrap(), BatchMode::Auto);
        let err = mode("batch = \"sometimes\"").unwrap_err().to_string();
        assert!(err.contains("\"auto\", true or false"), "{err}");
    }
}
