//! Wire-level building blocks: exact amounts, ETags, typed body fields, and the committed voucher model.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use std::str::FromStr;

/// Converts a JSON number to a Decimal through its shortest text form, so `0.1 + 0.2` sent as
/// `0.30000000000000004` stays exactly that (and unbalances a voucher) instead of being rounded away.
pub fn number_to_decimal(n: &Number) -> Option<Decimal> {
    let text = n.to_string();
    Decimal::from_str(&text).ok().or_else(|| Decimal::from_scientific(&text).ok())
}

/// Parses an amount given as a JSON number or a decimal string (IEEE754Compatible clients send strings).
pub fn parse_amount(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => number_to_decimal(n),
        Value::String(s) => {
            let t = s.trim();
            Decimal::from_str(t).ok().or_else(|| Decimal::from_scientific(t).ok())
        }
        _ => None,
    }
}

/// IFS-style weak ETag: `W/"<base64(objid:objversion)>"`.
pub fn etag(objid: &str, objversion: &str) -> String {
    format!("W/\"{}\"", STANDARD.encode(format!("{objid}:{objversion}")))
}

/// Inverse of [`etag`], for tests and diagnostics.
pub fn decode_etag(tag: &str) -> Option<(String, String)> {
    let inner = tag.strip_prefix("W/\"")?.strip_suffix('"')?;
    let raw = String::from_utf8(STANDARD.decode(inner).ok()?).ok()?;
    let (objid, objversion) = raw.split_once(':')?;
    Some((objid.to_string(), objversion.to_string()))
}

/// Status a voucher is created in (the assistant's `NewVouStatus` subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoucherStatus {
    NotApproved,
    AwaitingApproval,
    Approved,
}

impl VoucherStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotApproved => "NotApproved",
            Self::AwaitingApproval => "AwaitingApproval",
            Self::Approved => "Approved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "NotApproved" => Some(Self::NotApproved),
            "AwaitingApproval" => Some(Self::AwaitingApproval),
            "Approved" => Some(Self::Approved),
            _ => None,
        }
    }
}

/// A voucher committed to the hold table by `CreateVoucher`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Voucher {
    pub company: String,
    pub accounting_year: i32,
    pub accounting_period: u32,
    pub voucher_type: String,
    pub voucher_no: i64,
    pub voucher_date: NaiveDate,
    pub status: VoucherStatus,
    /// `VoucherText2` from the header.
    pub text: Option<String>,
    pub user_group: Option<String>,
    pub rows: Vec<VoucherRow>,
}

/// One posting row of a committed voucher. Amounts are exact decimals (serialized as strings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoucherRow {
    pub row_no: u32,
    pub account: String,
    pub code_b: Option<String>,
    pub code_c: Option<String>,
    pub code_d: Option<String>,
    pub code_e: Option<String>,
    pub code_f: Option<String>,
    pub code_g: Option<String>,
    pub code_h: Option<String>,
    pub code_i: Option<String>,
    pub code_j: Option<String>,
    pub currency_code: String,
    pub currency_debet_amount: Option<Decimal>,
    pub currency_credit_amount: Option<Decimal>,
    pub currency_rate: Option<Decimal>,
    pub quantity: Option<Decimal>,
    pub optional_code: Option<String>,
    pub text: Option<String>,
    pub reference_serie: Option<String>,
    pub reference_number: Option<String>,
}

/// Code part letters in order; index 0 is `B`.
pub const CODE_PARTS: [char; 9] = ['B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J'];

impl VoucherRow {
    /// The value of code part `B`..=`J`.
    pub fn code(&self, part: char) -> Option<&str> {
        match part {
            'B' => self.code_b.as_deref(),
            'C' => self.code_c.as_deref(),
            'D' => self.code_d.as_deref(),
            'E' => self.code_e.as_deref(),
            'F' => self.code_f.as_deref(),
            'G' => self.code_g.as_deref(),
            'H' => self.code_h.as_deref(),
            'I' => self.code_i.as_deref(),
            'J' => self.code_j.as_deref(),
            _ => None,
        }
    }

    fn code_slot(&mut self, part: char) -> Option<&mut Option<String>> {
        match part {
            'B' => Some(&mut self.code_b),
            'C' => Some(&mut self.code_c),
            'D' => Some(&mut self.code_d),
            'E' => Some(&mut self.code_e),
            'F' => Some(&mut self.code_f),
            'G' => Some(&mut self.code_g),
            'H' => Some(&mut self.code_h),
            'I' => Some(&mut self.code_i),
            'J' => Some(&mut self.code_j),
            _ => None,
        }
    }

    /// Sets code part `part` (ignored for letters outside `B`..=`J`).
    pub fn set_code(&mut self, part: char, value: Option<String>) {
        if let Some(slot) = self.code_slot(part) {
            *slot = value;
        }
    }
}

/// Declared type of a property in a POST body.
#[derive(Debug, Clone, Copy)]
pub enum FieldType {
    Text(usize),
    Int,
    Decimal,
    Date,
}

/// A parsed body value.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Text(String),
    Int(i64),
    Decimal(Decimal),
    Date(NaiveDate),
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON, not an object, unknown property, or wrong JSON type: `ODP_DESERIALIZATION_ERROR`.
    #[error("{0}")]
    Deserialization(String),
    /// Well-formed but violates a column rule (length): a database-level error.
    #[error("{0}")]
    Value(String),
}

/// Parses a JSON object against the entity's declared properties. `@odata.*` annotations are ignored;
/// JSON `null` means "not given".
pub fn parse_body(
    body: &Map<String, Value>,
    entity_type: &str,
    fields: &[(&str, FieldType)],
) -> Result<Vec<(String, Parsed)>, BodyError> {
    let mut out = Vec::new();
    for (name, value) in body {
        if name.starts_with('@') {
            continue;
        }
        let Some((_, ty)) = fields.iter().find(|(f, _)| f == name) else {
            return Err(BodyError::Deserialization(format!(
                "Error while de-serializing contents. The property '{name}' does not exist in type '{entity_type}'."
            )));
        };
        if value.is_null() {
            continue;
        }
        let wrong = || {
            BodyError::Deserialization(format!(
                "Error while de-serializing contents. Invalid value for property '{name}': {value}"
            ))
        };
        let parsed = match ty {
            FieldType::Text(max) => {
                let s = value.as_str().ok_or_else(wrong)?;
                if s.chars().count() > *max {
                    return Err(BodyError::Value(format!(
                        "The value of {name} is too long (maximum {max} characters, got {}).",
                        s.chars().count()
                    )));
                }
                Parsed::Text(s.to_string())
            }
            FieldType::Int => match value {
                Value::Number(n) => Parsed::Int(n.as_i64().ok_or_else(wrong)?),
                Value::String(s) => Parsed::Int(s.trim().parse().map_err(|_| wrong())?),
                _ => return Err(wrong()),
            },
            FieldType::Decimal => Parsed::Decimal(parse_amount(value).ok_or_else(wrong)?),
            FieldType::Date => {
                let s = value.as_str().ok_or_else(wrong)?;
                Parsed::Date(NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| wrong())?)
            }
        };
        out.push((name.clone(), parsed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn float_noise_is_kept_exactly() {
        let v: Value = serde_json::from_str("0.30000000000000004").unwrap();
        assert_eq!(parse_amount(&v).unwrap(), Decimal::from_str("0.30000000000000004").unwrap());
        let v = json!(0.1 + 0.2);
        assert_ne!(parse_amount(&v).unwrap(), Decimal::from_str("0.3").unwrap());
        assert_eq!(parse_amount(&json!(12.5)).unwrap(), Decimal::from_str("12.5").unwrap());
        assert_eq!(parse_amount(&json!(100)).unwrap(), Decimal::from(100));
        assert_eq!(parse_amount(&json!("1234.56")).unwrap(), Decimal::from_str("1234.56").unwrap());
        assert_eq!(parse_amount(&json!(1e20)).unwrap(), Decimal::from_str("100000000000000000000").unwrap());
        assert!(parse_amount(&json!("12,5")).is_none());
        assert!(parse_amount(&json!(true)).is_none());
    }

    #[test]
    fn etag_round_trips_and_matches_ifs_shape() {
        let tag = etag("AACIMGAAFAABpIHAAA", "20191031132400");
        assert_eq!(tag, "W/\"QUFDSU1HQUFGQUFCcElIQUFBOjIwMTkxMDMxMTMyNDAw\"");
        assert_eq!(decode_etag(&tag), Some(("AACIMGAAFAABpIHAAA".to_string(), "20191031132400".to_string())));
        assert_eq!(decode_etag("\"abc\""), None);
    }

    #[test]
    fn body_rejects_unknown_and_mistyped_properties() {
        let fields = [("Text", FieldType::Text(5)), ("Year", FieldType::Int), ("Amt", FieldType::Decimal)];
        let ok = json!({"Text": "abc", "Year": 2026, "Amt": "1.50", "@odata.type": "x", "Amt2": null});
        let err = parse_body(ok.as_object().unwrap(), "T", &fields).unwrap_err();
        assert!(err.to_string().contains("'Amt2'"), "{err}");
        let ok = json!({"Text": "abc", "Year": 2026, "Amt": "1.50", "@odata.type": "x"});
        let parsed = parse_body(ok.as_object().unwrap(), "T", &fields).unwrap();
        assert_eq!(parsed.len(), 3);
        assert!(matches!(
            parse_body(json!({"Text": "toolong"}).as_object().unwrap(), "T", &fields),
            Err(BodyError::Value(_))
        ));
        assert!(matches!(
            parse_body(json!({"Year": "x"}).as_object().unwrap(), "T", &fields),
            Err(BodyError::Deserialization(_))
        ));
    }
}
