//! Vouchers: the dedup query and creating a voucher through the voucher-entry assistant (contract §4).
//!
//! IFS has no idempotency keys, so the Brex id travels as `ReferenceNumber` on every row and is looked up
//! before any create, and again whenever `CreateVoucher` ends without a clear answer.
//!
//! Amounts are sent as decimal *strings* under `IEEE754Compatible=true` (declared in `Content-Type` and
//! `Accept`): the text of the `Decimal` goes on the wire as is, so no amount ever passes through a binary
//! float, whatever its number of digits.

use std::collections::{HashMap, HashSet};
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::client::{Body, IfsClient, ListQuery, Request, Resend, body_etag, key_literal};
use super::error::IfsError;
use super::filter::{Filter, encode_component};
use super::reference::{AccountingPeriodInfo, int};
use crate::domain::{CompanyCode, ETag, ReferenceNumber, VoucherType};
use crate::proposal::{MAX_ROW_TEXT, Proposal, ProposalRow, Side, truncate_chars};

/// Keep dedup URLs below this many bytes: proxies and IFS's gateway start refusing around 8 KB.
pub const MAX_DEDUP_URL_LEN: usize = 6000;

/// `VoucherText2` is a 200-char column like row texts.
const MAX_VOUCHER_TEXT: usize = 200;

/// A voucher in IFS's hold table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VoucherKey {
    pub company: CompanyCode,
    pub accounting_year: i32,
    pub voucher_type: VoucherType,
    pub voucher_no: i64,
}

impl fmt::Display for VoucherKey {
    /// `10-2026-M-17`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}-{}", self.company, self.accounting_year, self.voucher_type, self.voucher_no)
    }
}

/// An amount as it goes on the wire: its exact decimal text.
pub fn amount_json(amount: Decimal) -> Value {
    Value::String(amount.to_string())
}

/// The header of the virtual voucher (only properties the assistant's `VoucherEntry` has).
pub fn header_body(proposal: &Proposal, period: &AccountingPeriodInfo) -> Value {
    let mut body = Map::new();
    body.insert("Company".into(), json!(proposal.company.as_str()));
    body.insert("VoucherType".into(), json!(proposal.voucher_type.as_str()));
    body.insert("VoucherDate".into(), json!(proposal.voucher_date.format("%Y-%m-%d").to_string()));
    body.insert("AccountingYear".into(), json!(period.accounting_year));
    body.insert("AccountingPeriod".into(), json!(period.accounting_period));
    body.insert("VoucherStatus".into(), json!(proposal.voucher_status.as_str()));
    let text = truncate_chars(&proposal.text, MAX_VOUCHER_TEXT);
    if !text.is_empty() {
        body.insert("VoucherText2".into(), json!(text));
    }
    Value::Object(body)
}

/// One posting row: present code parts only, one of debit/credit, the rate when known, the reference.
pub fn row_body(row: &ProposalRow, proposal: &Proposal) -> Value {
    let mut body = Map::new();
    body.insert("Account".into(), json!(row.account.as_str()));
    for (part, value) in &row.code_parts {
        body.insert(part.property().into(), json!(value.as_str()));
    }
    body.insert("CurrencyCode".into(), json!(row.currency.as_str()));
    let side = match row.side {
        Side::Debit => "CurrencyDebetAmount",
        Side::Credit => "CurrencyCreditAmount",
    };
    body.insert(side.into(), amount_json(row.amount));
    if let Some(rate) = row.currency_rate {
        body.insert("CurrencyRate".into(), amount_json(rate));
    }
    let text = truncate_chars(&row.text, MAX_ROW_TEXT);
    if !text.is_empty() {
        body.insert("Text".into(), json!(text));
    }
    body.insert("ReferenceSerie".into(), json!(proposal.reference_serie));
    body.insert("ReferenceNumber".into(), json!(proposal.reference_number.as_str()));
    Value::Object(body)
}

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
        let cost = encode_component(&format!(" or ReferenceNumber eq {}", super::filter::quote(r.as_str()))).len();
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

/// How one attempt at assembling a voucher ended badly. `virtual_voucher`: the virtual voucher it left
/// (its path and last ETag), to be removed so nothing is left behind in IFS.
enum Attempt {
    /// A row POST lost its answer: the virtual voucher may hold a row twice, so it is abandoned and the
    /// voucher assembled afresh (nothing is committed before `CreateVoucher`).
    StartOver {
        error: IfsError,
        virtual_voucher: (String, ETag),
    },
    Fail {
        error: IfsError,
        virtual_voucher: Option<(String, ETag)>,
    },
}

impl Attempt {
    fn fail(error: IfsError) -> Self {
        Self::Fail { error, virtual_voucher: None }
    }
}

impl IfsClient {
    /// Which of `refs` already have a voucher row in IFS (hold table), with that voucher's key. One query per
    /// chunk of references (chunked so the URL stays under [`MAX_DEDUP_URL_LEN`]), paged via nextLink.
    pub async fn find_posted(
        &self,
        company: &CompanyCode,
        reference_serie: &str,
        refs: &[ReferenceNumber],
    ) -> Result<HashMap<ReferenceNumber, VoucherKey>, IfsError> {
        let mut seen = HashSet::new();
        let unique: Vec<&ReferenceNumber> = refs.iter().filter(|r| seen.insert(*r)).collect();
        let api = self.api();
        let entity_set = format!("{}/{}", api.voucher_rows_projection, api.voucher_rows_set);
        let query_for = |chunk: &[&ReferenceNumber]| ListQuery {
            filter: Some(dedup_filter(company, reference_serie, chunk)),
            select: DEDUP_SELECT.map(String::from).to_vec(),
            orderby: DEDUP_ORDER.map(String::from).to_vec(),
            ..ListQuery::default()
        };
        // The URL without any reference, plus room for `$skip` on later pages.
        let fixed =
            self.url(&format!("{entity_set}?{}", query_for(&[]).to_query_string(1_000_000_000)))?.as_str().len()
                + encode_component(" and ()").len();
        let room = MAX_DEDUP_URL_LEN.saturating_sub(fixed);
        let mut found = HashMap::new();
        for chunk in chunk_refs(&unique, room) {
            let rows: Vec<Map<String, Value>> = self.list_all(&entity_set, &query_for(&chunk)).await?;
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

    /// Creates a voucher from `proposal` in the status it asks for and returns its key. The caller runs
    /// [`IfsClient::find_posted`] first; this method re-runs it itself when `CreateVoucher` ends without a
    /// clear answer (timeout, dropped connection, 5xx), so an uncertain commit is never duplicated.
    ///
    /// The proposal is sent as it is: IFS's verdict on balance, accounts and periods comes back as
    /// [`IfsError::Rejected`] with IFS's own message.
    pub async fn create_voucher(&self, proposal: &Proposal) -> Result<VoucherKey, IfsError> {
        if proposal.rows.is_empty() {
            return Err(IfsError::InvalidRequest(format!("proposal {} has no rows", proposal.reference_number)));
        }
        let period = self.accounting_period(&proposal.company, proposal.voucher_date).await?.ok_or_else(|| {
            IfsError::NoAccountingPeriod { company: proposal.company.to_string(), date: proposal.voucher_date }
        })?;
        let header = header_body(proposal, &period);
        let rows: Vec<Value> = proposal.rows.iter().map(|row| row_body(row, proposal)).collect();
        let mut starts = 0;
        loop {
            starts += 1;
            let (error, left) = match self.assemble_and_commit(proposal, &header, &rows).await {
                Ok(key) => return Ok(key),
                Err(Attempt::StartOver { error, virtual_voucher }) if starts < self.inner.retry.max_attempts => {
                    tracing::warn!(reference = %proposal.reference_number, %error, "voucher row outcome unknown; assembling the voucher afresh");
                    self.remove_virtual(virtual_voucher).await;
                    continue;
                }
                Err(Attempt::StartOver { error, virtual_voucher }) => (error, Some(virtual_voucher)),
                Err(Attempt::Fail { error, virtual_voucher }) => (error, virtual_voucher),
            };
            if let Some(left) = left {
                self.remove_virtual(left).await;
            }
            return Err(error);
        }
    }

    /// Removes a virtual voucher we abandoned (`[ifs.api] remove_voucher_action`), best effort: IFS drops
    /// virtuals by itself eventually, and removing one cannot touch a committed voucher, so a failure here
    /// is only logged. Skipped when the release has no such action configured.
    async fn remove_virtual(&self, (entity_path, mut etag): (String, ETag)) {
        let api = self.api();
        let action = &api.remove_voucher_action;
        if action.is_empty() {
            return;
        }
        match self.guarded_post(&entity_path, action, &json!({}), &mut etag, Resend::Answered).await {
            Ok(_) => self.count_removed_virtual(),
            // Committed after all (an uncertain CreateVoucher that landed), or removed already.
            Err(IfsError::Vanished { .. } | IfsError::Unsupported { status: 404, .. }) => {}
            Err(error) => {
                tracing::warn!(virtual_voucher = entity_path, %error, "could not remove an abandoned virtual voucher")
            }
        }
    }

    async fn assemble_and_commit(
        &self,
        proposal: &Proposal,
        header: &Value,
        rows: &[Value],
    ) -> Result<VoucherKey, Attempt> {
        let api = self.api();
        // 1. The virtual voucher. A lost answer leaves at most an orphan virtual, which IFS discards.
        let req = Request {
            method: reqwest::Method::POST,
            url: self
                .url(&format!("{}/{}", api.voucher_entry_projection, api.voucher_entry_set))
                .map_err(Attempt::fail)?,
            body: Body::Json(header),
            if_match: None,
            resend: Resend::Always,
        };
        let resp = self.execute(&req).await.map_err(Attempt::fail)?;
        let entity: Value = resp.json("VoucherSet POST").map_err(Attempt::fail)?;
        let objkey = entity
            .get("Objkey")
            .and_then(Value::as_str)
            .ok_or_else(|| Attempt::fail(IfsError::Decode("VoucherSet POST: no Objkey".into())))?;
        let mut etag: ETag = body_etag(&entity)
            .or(resp.etag)
            .ok_or_else(|| Attempt::fail(IfsError::Decode("VoucherSet POST: no ETag".into())))?;
        let entity_path =
            format!("{}/{}(Objkey={})", api.voucher_entry_projection, api.voucher_entry_set, key_literal(objkey));

        // 2. The rows, each guarded by the voucher's ETag.
        for row in rows {
            match self.guarded_post(&entity_path, &api.voucher_posting_array, row, &mut etag, Resend::Answered).await {
                Ok(_) => {}
                Err(error @ IfsError::Transport { .. }) => {
                    return Err(Attempt::StartOver { error, virtual_voucher: (entity_path, etag) });
                }
                // Gone already: nothing to remove, and nothing committed; start over.
                Err(error @ IfsError::Vanished { .. }) => return Err(Attempt::fail(error)),
                Err(error) => return Err(Attempt::Fail { error, virtual_voucher: Some((entity_path, etag)) }),
            }
        }

        // 3. Commit.
        match self.commit(proposal, &entity_path, &mut etag).await {
            Ok(key) => Ok(key),
            Err(error) => Err(Attempt::Fail { error, virtual_voucher: Some((entity_path, etag)) }),
        }
    }

    async fn commit(&self, proposal: &Proposal, entity_path: &str, etag: &mut ETag) -> Result<VoucherKey, IfsError> {
        let action = self.api().create_voucher_action.clone();
        let mut uncertain = 0u32;
        loop {
            let outcome = self.guarded_post(entity_path, &action, &json!({}), etag, Resend::Unprocessed).await;
            let why = match outcome {
                Ok(answer) => match voucher_no(&answer) {
                    Some(no) => {
                        return Ok(VoucherKey {
                            company: proposal.company.clone(),
                            accounting_year: self.committed_year(proposal).await?,
                            voucher_type: proposal.voucher_type.clone(),
                            voucher_no: no,
                        });
                    }
                    // Committed, but the number is unreadable: the dedup query knows it.
                    None => IfsError::Decode(format!("CreateVoucher answer without a voucher number: {answer}")),
                },
                Err(e @ (IfsError::Transport { .. } | IfsError::Unavailable { .. } | IfsError::Decode(_))) => e,
                // After an uncertain round the virtual may be gone because that round did commit.
                Err(e @ (IfsError::Unsupported { status: 404, .. } | IfsError::Vanished { .. })) if uncertain > 0 => e,
                Err(e) => return Err(e),
            };
            self.count_uncertain_check();
            uncertain += 1;
            tracing::warn!(reference = %proposal.reference_number, error = %why, "CreateVoucher outcome unknown; re-checking IFS");
            // Give a commit that is still in flight time to land before looking.
            // The RNG must be dropped before the await: it is not Send.
            let delay = self.inner.retry.next_delay(uncertain, None, &mut rand::rng());
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let refs = std::slice::from_ref(&proposal.reference_number);
            match self.find_posted(&proposal.company, &proposal.reference_serie, refs).await {
                Ok(mut found) => {
                    if let Some(key) = found.remove(&proposal.reference_number) {
                        tracing::info!(reference = %proposal.reference_number, voucher = %key, "uncertain CreateVoucher had committed");
                        return Ok(key);
                    }
                }
                Err(check) => {
                    return Err(IfsError::UncertainCommit {
                        reference: proposal.reference_number.to_string(),
                        message: format!("{why}; the re-check failed too: {check}"),
                    });
                }
            }
            let gone = matches!(why, IfsError::Unsupported { status: 404, .. } | IfsError::Vanished { .. });
            if gone || uncertain >= self.inner.retry.max_attempts {
                return Err(IfsError::UncertainCommit {
                    reference: proposal.reference_number.to_string(),
                    message: why.to_string(),
                });
            }
        }
    }

    /// The accounting year the header was created with (from the cached calendar).
    async fn committed_year(&self, proposal: &Proposal) -> Result<i32, IfsError> {
        self.accounting_period(&proposal.company, proposal.voucher_date).await?.map(|p| p.accounting_year).ok_or_else(
            || IfsError::NoAccountingPeriod { company: proposal.company.to_string(), date: proposal.voucher_date },
        )
    }
}

/// `{"value": 17}` (or `"17"` under IEEE754Compatible).
pub(crate) fn voucher_no(answer: &Value) -> Option<i64> {
    match answer.get("value")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountCode, CodePartValue, CurrencyCode};
    use crate::proposal::{CodePart, VoucherStatus};
    use chrono::NaiveDate;
    use std::collections::BTreeMap;
    use std::str::FromStr;

    fn proposal() -> Proposal {
        let row = |side, amount: &str, account: &str| ProposalRow {
            account: AccountCode::parse(account).unwrap(),
            code_parts: BTreeMap::new(),
            side,
            amount: Decimal::from_str(amount).unwrap(),
            currency: CurrencyCode::parse("USD").unwrap(),
            currency_rate: None,
            text: String::new(),
        };
        let mut debit = row(Side::Debit, "0.30000000000000004", "6500");
        debit.code_parts.insert(CodePart::B, CodePartValue::parse("200").unwrap());
        debit.currency_rate = Some(Decimal::from_str("1.2345678901234567890123").unwrap());
        debit.text = "é".repeat(250);
        crate::proposal::test_proposal(
            VoucherStatus::AwaitingApproval,
            NaiveDate::from_ymd_opt(2026, 2, 3).unwrap(),
            vec![debit, row(Side::Credit, "12345678901234567890.12", "2410")],
        )
    }

    #[test]
    fn amounts_go_out_as_their_exact_decimal_text() {
        let p = proposal();
        let debit = row_body(&p.rows[0], &p);
        assert_eq!(debit["CurrencyDebetAmount"], json!("0.30000000000000004"));
        assert_eq!(debit["CurrencyRate"], json!("1.2345678901234567890123"));
        let credit = row_body(&p.rows[1], &p);
        assert_eq!(credit["CurrencyCreditAmount"], json!("12345678901234567890.12"));
        // Round trip: what IFS parses back is the very Decimal we hold.
        let back = Decimal::from_str(credit["CurrencyCreditAmount"].as_str().unwrap()).unwrap();
        assert_eq!(back, p.rows[1].amount);
        assert_eq!(amount_json(Decimal::from_str("0.1").unwrap() + Decimal::from_str("0.2").unwrap()), json!("0.3"));
    }

    #[test]
    fn row_and_header_carry_only_what_is_set() {
        let p = proposal();
        let debit = row_body(&p.rows[0], &p);
        let keys: Vec<&str> = debit.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys.iter().copied().collect::<HashSet<_>>(),
            HashSet::from([
                "Account",
                "CodeB",
                "CurrencyCode",
                "CurrencyDebetAmount",
                "CurrencyRate",
                "Text",
                "ReferenceSerie",
                "ReferenceNumber"
            ])
        );
        assert_eq!(debit["Text"].as_str().unwrap().chars().count(), 200);
        let credit = row_body(&p.rows[1], &p);
        assert!(
            credit.get("CodeB").is_none()
                && credit.get("Text").is_none()
                && credit.get("CurrencyDebetAmount").is_none()
        );
        assert_eq!(credit["ReferenceNumber"], json!("accr_1"));

        let period = AccountingPeriodInfo {
            company: p.company.clone(),
            accounting_year: 2026,
            accounting_period: 2,
            date_from: NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(),
            date_until: NaiveDate::from_ymd_opt(2026, 2, 28).unwrap(),
            open: true,
            year_end_period: None,
        };
        assert_eq!(
            header_body(&p, &period),
            json!({"Company": "10", "VoucherType": "M", "VoucherDate": "2026-02-03", "AccountingYear": 2026,
                   "AccountingPeriod": 2, "VoucherStatus": "AwaitingApproval"})
        );
    }

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
    fn voucher_key_displays_and_rows_decode() {
        let row = json!({"Company": "10", "AccountingYear": 2026, "VoucherType": "M", "VoucherNo": "17", "ReferenceNumber": "accr_1"});
        let (reference, key) = key_from_row(row.as_object().unwrap()).unwrap();
        assert_eq!(reference.as_str(), "accr_1");
        assert_eq!(key.to_string(), "10-2026-M-17");
        assert_eq!(voucher_no(&json!({"value": 17})), Some(17));
        assert_eq!(voucher_no(&json!({"value": "18"})), Some(18));
        assert_eq!(voucher_no(&json!({"value": 1.5})), None);
        assert_eq!(voucher_no(&Value::Null), None);
    }
}
