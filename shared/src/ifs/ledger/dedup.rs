//! The dedup query. IFS has no idempotency keys, so the Brex id travels as `ReferenceNumber` on every row
//! and is looked up before any create, and again whenever a commit ends without a clear answer.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::voucher::VoucherKey;
use crate::domain::{CompanyCode, ReferenceNumber, VoucherType};
use crate::ifs::error::IfsError;
use crate::ifs::filter::{Filter, encode_component, quote};
use crate::ifs::reference::int;
use crate::ifs::transport::{IfsTransport, ListQuery};

/// Keep dedup URLs below this many bytes: proxies and IFS's gateway start refusing around 8 KB.
pub const MAX_DEDUP_URL_LEN: usize = 6000;

/// The dedup filter for some references.
fn dedup_filter(company: &CompanyCode, reference_serie: &str, refs: &[&ReferenceNumber]) -> Filter {
    let base = Filter::eq_str("Company", company.as_str()).and(Filter::eq_str("ReferenceSerie", reference_serie));
    match Filter::any_of("ReferenceNumber", refs.iter().map(|r| r.as_str())) {
        Some(any) => base.and(any),
        None => base,
    }
}

/// Splits `refs` into runs whose `or ReferenceNumber eq '…'` terms fit in `room` encoded bytes (each run
/// holds at least one reference, so progress is guaranteed).
pub fn chunk_refs<'a>(refs: &[&'a ReferenceNumber], room: usize) -> Vec<Vec<&'a ReferenceNumber>> {
    let mut chunks = Vec::new();
    let mut current: Vec<&ReferenceNumber> = Vec::new();
    let mut used = 0;
    for r in refs {
        let cost = encode_component(&format!(" or ReferenceNumber eq {}", quote(r.as_str()))).len();
        if !current.is_empty() && used + cost > room {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push(r);
        used += cost;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

const DEDUP_SELECT: [&str; 5] = ["Company", "AccountingYear", "VoucherType", "VoucherNo", "ReferenceNumber"];
const DEDUP_ORDER: [&str; 5] = ["Company", "AccountingYear", "VoucherType", "VoucherNo", "RowNo"];

fn key_from_row(row: &Map<String, Value>) -> Result<(ReferenceNumber, VoucherKey), IfsError> {
    let text = |name: &str| row.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let decode = |e: crate::domain::InvalidId| IfsError::Decode(e.to_string());
    let key = VoucherKey {
        company: CompanyCode::parse(&text("Company")).map_err(decode)?,
        accounting_year: i32::try_from(int(row, "AccountingYear")?)
            .map_err(|_| IfsError::Decode("AccountingYear out of range".into()))?,
        voucher_type: VoucherType::parse(&text("VoucherType")).map_err(decode)?,
        voucher_no: int(row, "VoucherNo")?,
    };
    Ok((ReferenceNumber::parse(&text("ReferenceNumber")).map_err(decode)?, key))
}

/// Which of `refs` already have a voucher row in IFS (hold table), with that voucher's key. One query per
/// chunk of references (chunked so the URL stays under [`MAX_DEDUP_URL_LEN`]), paged via nextLink.
pub(super) async fn find_posted(
    transport: &IfsTransport,
    company: &CompanyCode,
    reference_serie: &str,
    refs: &[ReferenceNumber],
) -> Result<HashMap<ReferenceNumber, VoucherKey>, IfsError> {
    let mut seen = HashSet::new();
    let unique: Vec<&ReferenceNumber> = refs.iter().filter(|r| seen.insert(*r)).collect();
    let api = transport.api();
    let entity_set = format!("{}/{}", api.voucher_rows_projection, api.voucher_rows_set);
    let query_for = |chunk: &[&ReferenceNumber]| ListQuery {
        filter: Some(dedup_filter(company, reference_serie, chunk)),
        select: DEDUP_SELECT.map(String::from).to_vec(),
        orderby: DEDUP_ORDER.map(String::from).to_vec(),
        ..ListQuery::default()
    };
    // The URL without any reference, plus room for `$skip` on later pages.
    let fixed =
        transport.url(&format!("{entity_set}?{}", query_for(&[]).to_query_string(1_000_000_000)))?.as_str().len()
            + encode_component(" and ()").len();
    let room = MAX_DEDUP_URL_LEN.saturating_sub(fixed);
    let mut found = HashMap::new();
    for chunk in chunk_refs(&unique, room) {
        let rows: Vec<Map<String, Value>> = transport.list_all(&entity_set, &query_for(&chunk)).await?;
        for row in &rows {
            let (reference, key) = key_from_row(row)?;
            match found.get(&reference) {
                None => {
                    found.insert(reference, key);
                }
                Some(existing) if *existing != key => {
                    tracing::warn!(%reference, first = %existing, other = %key, "IFS holds more than one voucher for one reference");
                }
                Some(_) => {}
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_are_chunked_to_fit_the_url() {
        let refs: Vec<ReferenceNumber> =
            (0..300).map(|i| ReferenceNumber::parse(&format!("accr_{i:045}")).unwrap()).collect();
        let borrowed: Vec<&ReferenceNumber> = refs.iter().collect();
        let term = encode_component(&format!(" or ReferenceNumber eq '{}'", refs[0])).len();
        let chunks = chunk_refs(&borrowed, 5000);
        assert!(chunks.iter().all(|c| c.len() * term <= 5000 && !c.is_empty()));
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 300);
        assert_eq!(chunks[0].len(), 5000 / term);
        assert_eq!(chunk_refs(&borrowed[..1], 1).len(), 1, "a single oversized ref still goes out alone");
        assert!(chunk_refs(&[], 100).is_empty());
        let f = dedup_filter(&CompanyCode::parse("10").unwrap(), "BREX", &borrowed[..2]).to_string();
        assert_eq!(
            f,
            format!(
                "Company eq '10' and ReferenceSerie eq 'BREX' and (ReferenceNumber eq '{}' or ReferenceNumber eq '{}')",
                refs[0], refs[1]
            )
        );
    }

    #[test]
    fn rows_decode_to_voucher_keys() {
        let row = json!({"Company": "10", "AccountingYear": 2026, "VoucherType": "M", "VoucherNo": "17", "ReferenceNumber": "accr_1"});
        let (reference, key) = key_from_row(row.as_object().unwrap()).unwrap();
        assert_eq!(reference.as_str(), "accr_1");
        assert_eq!(key.to_string(), "10-2026-M-17");
    }
}
