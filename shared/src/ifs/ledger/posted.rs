//! Posted vouchers after the fact: their approval state, and removing one from the hold table while it is
//! not approved (for a record changed after export, see `crate::revision`).

use serde_json::{Value, json};

use super::voucher::VoucherKey;
use crate::domain::{CompanyCode, ETag, VoucherType};
use crate::ifs::error::IfsError;
use crate::ifs::filter::key_literal;
use crate::ifs::transport::{IfsTransport, Resend};
use crate::ports::{Removal, VoucherState};

/// `10-2026-M-17` back to its key, the company known (a company code may hold `-`).
pub(super) fn parse_key(company: &CompanyCode, voucher: &str) -> Result<VoucherKey, IfsError> {
    let bad = || IfsError::InvalidRequest(format!("{voucher:?} is not a voucher key of company {company}"));
    let rest = voucher.strip_prefix(company.as_str()).and_then(|r| r.strip_prefix('-')).ok_or_else(bad)?;
    let (year, rest) = rest.split_once('-').ok_or_else(bad)?;
    let (voucher_type, no) = rest.rsplit_once('-').ok_or_else(bad)?;
    Ok(VoucherKey {
        company: company.clone(),
        accounting_year: year.parse().map_err(|_| bad())?,
        voucher_type: VoucherType::parse(voucher_type).map_err(|_| bad())?,
        voucher_no: no.parse().map_err(|_| bad())?,
    })
}

fn entity_path(transport: &IfsTransport, key: &VoucherKey) -> String {
    let api = transport.api();
    format!(
        "{}/{}(Company={},AccountingYear={},VoucherType={},VoucherNo={})",
        api.posted_voucher_projection,
        api.posted_voucher_set,
        key_literal(key.company.as_str()),
        key.accounting_year,
        key_literal(key.voucher_type.as_str()),
        key.voucher_no
    )
}

/// Approved, or updated to the general ledger, reads as approved: either way it can only be reversed.
fn approved(entity: &Value) -> bool {
    entity.get("VoucherStatus").and_then(Value::as_str) == Some("Approved")
        || entity.get("VoucherUpdated").and_then(Value::as_bool) == Some(true)
}

pub(super) async fn voucher_state(transport: &IfsTransport, key: &VoucherKey) -> Result<VoucherState, IfsError> {
    let path = entity_path(transport, key);
    match transport.get_entity::<Value>(&path).await? {
        None => Ok(VoucherState::Missing),
        Some((entity, _)) if approved(&entity) => Ok(VoucherState::Approved),
        Some((_, Some(etag))) => Ok(VoucherState::Unapproved { etag }),
        Some((_, None)) => Err(IfsError::Decode(format!("{path}: no ETag on the voucher"))),
    }
}

pub(super) async fn remove_voucher(
    transport: &IfsTransport,
    key: &VoucherKey,
    etag: &ETag,
) -> Result<Removal, IfsError> {
    let path = entity_path(transport, key);
    let action = transport.api().remove_posted_voucher_action.clone();
    let mut etag = etag.clone();
    // A lost answer is safe to resend: a second removal finds the voucher gone.
    match transport.guarded_post(&path, &action, &json!({}), &mut etag, Resend::Always).await {
        Ok(_) => Ok(Removal::Removed),
        Err(IfsError::Vanished { .. }) => Ok(Removal::Missing),
        // Refused: approved since we looked (IFS's own words otherwise go back to the caller).
        Err(refused @ (IfsError::Rejected { .. } | IfsError::PreconditionFailed { .. })) => {
            match voucher_state(transport, key).await? {
                VoucherState::Approved => Ok(Removal::Approved),
                VoucherState::Missing => Ok(Removal::Missing),
                VoucherState::Unapproved { .. } => Err(refused),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voucher_keys_read_back_with_dashes_in_the_company() {
        let company = CompanyCode::parse("US-10").unwrap();
        let key = parse_key(&company, "US-10-2026-M-17").unwrap();
        assert_eq!(key.to_string(), "US-10-2026-M-17");
        assert_eq!((key.accounting_year, key.voucher_no), (2026, 17));
        assert!(parse_key(&company, "10-2026-M-17").is_err());
        assert!(parse_key(&company, "US-10-2026-M").is_err());
    }
}
