//! Projection, entity-set and action names. IFS releases differ and customers tailor projections, so these
//! are the defaults of the mapping document's optional `[ifs.api]` table (contract §4).

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
    /// Create vouchers through OData `$batch` on the voucher-entry projection: one atomic change set per
    /// voucher, several vouchers per request. `false` falls back to the step-by-step flow (header, rows,
    /// `CreateVoucher` as separate requests) for a tenant whose `$batch` misbehaves. It sits here, with the
    /// projection names, because it is a property of the customer's IFS, changed by pushing the mapping
    /// document rather than by redeploying.
    pub batch: bool,
    /// Most vouchers (change sets) sent in one `$batch` request.
    pub batch_max_vouchers: usize,
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
            batch: true,
            batch_max_vouchers: 10,
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
        assert!(toml::from_str::<IfsApiNames>("voucher_entry_projektion = \"x\"").is_err());
        assert!(names.batch, "$batch is on unless a tenant turns it off");
        let off: IfsApiNames = toml::from_str("batch = false").unwrap();
        assert!(!off.batch);
    }
}
