//! Reconciliation's read of the hold table: every voucher row of one `ReferenceSerie`, paged (`$top` ≤ 5000,
//! `@odata.nextLink` or `$skip`, see [`IfsTransport::list_all`]), each request within the budget, grouped
//! into vouchers. Writes nothing.

use std::collections::BTreeMap;
use std::str::FromStr;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::IfsLedger;
use super::voucher::VoucherKey;
use crate::domain::{CompanyCode, VoucherType};
use crate::error::ExternalError;
use crate::ifs::error::IfsError;
use crate::ifs::filter::Filter;
use crate::ifs::reference::int;
use crate::ifs::transport::{IfsTransport, ListQuery};
use crate::ports::{PostedVoucher, VoucherListing};

const SELECT: [&str; 8] = [
    "Company",
    "AccountingYear",
    "VoucherType",
    "VoucherNo",
    "ReferenceNumber",
    "CurrencyCode",
    "CurrencyDebetAmount",
    "CurrencyCreditAmount",
];
/// A stable order, so `$skip` paging neither skips nor repeats a row.
const ORDER: [&str; 5] = ["Company", "AccountingYear", "VoucherType", "VoucherNo", "RowNo"];

/// Amounts come as JSON numbers, or as strings under `IEEE754Compatible=true`; absent or null is zero.
fn amount(row: &Map<String, Value>, name: &str) -> Result<Decimal, IfsError> {
    match row.get(name) {
        None | Some(Value::Null) => Some(Decimal::ZERO),
        Some(Value::String(s)) => Decimal::from_str(s.trim()).ok(),
        Some(Value::Number(n)) => {
            let text = n.to_string();
            Decimal::from_str(&text).ok().or_else(|| Decimal::from_scientific(&text).ok())
        }
        Some(_) => None,
    }
    .ok_or_else(|| IfsError::Decode(format!("{name}: not an amount")))
}

fn key_of(row: &Map<String, Value>) -> Result<VoucherKey, IfsError> {
    let text = |name: &str| row.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let decode = |e: crate::domain::InvalidId| IfsError::Decode(e.to_string());
    Ok(VoucherKey {
        company: CompanyCode::parse(&text("Company")).map_err(decode)?,
        accounting_year: i32::try_from(int(row, "AccountingYear")?)
            .map_err(|_| IfsError::Decode("AccountingYear out of range".into()))?,
        voucher_type: VoucherType::parse(&text("VoucherType")).map_err(decode)?,
        voucher_no: int(row, "VoucherNo")?,
    })
}

/// Rows → vouchers, in key order.
pub(crate) fn group_rows(rows: &[Map<String, Value>]) -> Result<Vec<PostedVoucher>, IfsError> {
    let mut vouchers: BTreeMap<(String, i32, String, i64), PostedVoucher> = BTreeMap::new();
    for row in rows {
        let key = key_of(row)?;
        let sort = (key.company.to_string(), key.accounting_year, key.voucher_type.to_string(), key.voucher_no);
        let voucher = vouchers.entry(sort).or_insert_with(|| PostedVoucher {
            key: key.to_string(),
            references: Default::default(),
            currencies: Default::default(),
            debit_total: Decimal::ZERO,
            credit_total: Decimal::ZERO,
            rows: 0,
        });
        if let Some(reference) = row.get("ReferenceNumber").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            voucher.references.insert(reference.to_owned());
        }
        if let Some(currency) = row.get("CurrencyCode").and_then(Value::as_str).filter(|c| !c.is_empty()) {
            voucher.currencies.insert(currency.to_owned());
        }
        voucher.debit_total += amount(row, "CurrencyDebetAmount")?;
        voucher.credit_total += amount(row, "CurrencyCreditAmount")?;
        voucher.rows += 1;
    }
    Ok(vouchers.into_values().collect())
}

pub(crate) async fn vouchers_in_serie(
    transport: &IfsTransport,
    reference_serie: &str,
) -> Result<Vec<PostedVoucher>, IfsError> {
    let api = transport.api();
    let entity_set = format!("{}/{}", api.voucher_rows_projection, api.voucher_rows_set);
    let query = ListQuery {
        filter: Some(Filter::eq_str("ReferenceSerie", reference_serie)),
        select: SELECT.map(String::from).to_vec(),
        orderby: ORDER.map(String::from).to_vec(),
        ..ListQuery::default()
    };
    let rows: Vec<Map<String, Value>> = transport.list_all(&entity_set, &query).await?;
    group_rows(&rows)
}

#[async_trait]
impl VoucherListing for IfsLedger {
    async fn vouchers_in_serie(&self, reference_serie: &str) -> Result<Vec<PostedVoucher>, ExternalError> {
        Ok(vouchers_in_serie(&self.transport, reference_serie).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_group_into_vouchers_with_exact_totals() {
        let rows: Vec<Map<String, Value>> = [
            json!({"Company": "10", "AccountingYear": 2026, "VoucherType": "M", "VoucherNo": 2, "ReferenceNumber": "accr_b", "CurrencyCode": "USD", "CurrencyDebetAmount": "0.10", "CurrencyCreditAmount": null}),
            json!({"Company": "10", "AccountingYear": 2026, "VoucherType": "M", "VoucherNo": 2, "ReferenceNumber": "accr_b", "CurrencyCode": "USD", "CurrencyDebetAmount": 0.2, "CurrencyCreditAmount": null}),
            json!({"Company": "10", "AccountingYear": 2026, "VoucherType": "M", "VoucherNo": 2, "ReferenceNumber": "accr_b", "CurrencyCode": "USD", "CurrencyCreditAmount": "0.30"}),
            json!({"Company": "10", "AccountingYear": 2026, "VoucherType": "M", "VoucherNo": 1, "ReferenceNumber": "accr_a", "CurrencyCode": "USD", "CurrencyDebetAmount": 5}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let vouchers = group_rows(&rows).unwrap();
        assert_eq!(vouchers.iter().map(|v| v.key.as_str()).collect::<Vec<_>>(), ["10-2026-M-1", "10-2026-M-2"]);
        let b = &vouchers[1];
        assert_eq!((b.debit_total, b.credit_total, b.rows), (Decimal::new(30, 2), Decimal::new(30, 2), 3));
        assert_eq!(b.references.iter().collect::<Vec<_>>(), ["accr_b"]);
        let bad = json!({"Company": "10", "AccountingYear": 2026, "VoucherType": "M", "VoucherNo": 1, "CurrencyDebetAmount": true});
        assert!(group_rows(&[bad.as_object().unwrap().clone()]).is_err());
    }
}
