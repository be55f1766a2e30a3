//! Money. Brex's v3 accounting API speaks decimal major units (`171.75`); its expenses and webhook payloads
//! speak integer minor units (cents). Both become `Decimal` here, exactly, and never pass through `f64` math.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("invalid currency code {0:?}: expected three letters (ISO 4217)")]
    Currency(String),
    #[error("invalid amount {0:?}")]
    Amount(String),
    #[error("amount {0} cents overflows")]
    Overflow(i64),
}

/// ISO 4217 code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CurrencyCode([u8; 3]);

impl CurrencyCode {
    pub fn parse(input: &str) -> Result<Self, MoneyError> {
        let bytes = input.trim().as_bytes();
        match bytes {
            [a, b, c] if bytes.iter().all(u8::is_ascii_alphabetic) => {
                Ok(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase(), c.to_ascii_uppercase()]))
            }
            _ => Err(MoneyError::Currency(input.chars().take(16).collect())),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Digits after the decimal point of the currency's minor unit (ISO 4217), needed to turn cents into an
    /// amount: JPY has none, BHD has three.
    pub fn minor_unit_digits(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
            | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }
}

impl fmt::Debug for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CurrencyCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CurrencyCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// An exact amount in a currency (major units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    #[serde(deserialize_with = "decimal_exact")]
    pub amount: Decimal,
    #[serde(default = "usd")]
    pub currency: CurrencyCode,
}

fn usd() -> CurrencyCode {
    CurrencyCode(*b"USD")
}

impl Money {
    pub fn new(amount: Decimal, currency: CurrencyCode) -> Self {
        Self { amount, currency }
    }

    /// From Brex's integer minor units (expenses, webhook payloads).
    pub fn from_minor_units(minor: i64, currency: CurrencyCode) -> Result<Self, MoneyError> {
        let amount = Decimal::try_from_i128_with_scale(i128::from(minor), currency.minor_unit_digits())
            .map_err(|_| MoneyError::Overflow(minor))?;
        Ok(Self { amount, currency })
    }

    pub fn is_negative(&self) -> bool {
        self.amount.is_sign_negative() && !self.amount.is_zero()
    }

    pub fn abs(&self) -> Self {
        Self { amount: self.amount.abs(), currency: self.currency }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Brex's integer minor-unit money (`{"amount": 1234, "currency": "USD"}` = 12.34 USD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinorUnits {
    pub amount: i64,
    #[serde(default = "usd")]
    pub currency: CurrencyCode,
}

impl MinorUnits {
    pub fn to_money(self) -> Result<Money, MoneyError> {
        Money::from_minor_units(self.amount, self.currency)
    }
}

/// Reads a decimal from a JSON number or string without f64 rounding error.
///
/// serde_json (without `arbitrary_precision`, which breaks `flatten`/untagged elsewhere) hands numbers over as
/// f64. Its shortest round-trip representation gives back the exact decimal text for any amount of up to 15
/// significant digits, which covers every real money amount; that text is then parsed as a `Decimal`.
pub fn decimal_exact<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Float(f64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Int(i) => return Ok(Decimal::from(i)),
        Raw::Float(f) if f.is_finite() => serde_json::Number::from_f64(f).map(|n| n.to_string()).unwrap_or_default(),
        Raw::Float(_) => return Err(serde::de::Error::custom("amount is not a finite number")),
        Raw::Text(t) => t,
    };
    parse_decimal(&text).map_err(serde::de::Error::custom)
}

/// Optional variant of [`decimal_exact`].
pub fn decimal_exact_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "decimal_exact")] Decimal);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

pub fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    let trimmed = text.trim();
    Decimal::from_str(trimmed)
        .or_else(|_| Decimal::from_scientific(trimmed))
        .map(|d| d.normalize())
        .map_err(|_| MoneyError::Amount(trimmed.chars().take(40).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn json_numbers_become_exact_decimals() {
        let m: Money = serde_json::from_str(r#"{"amount": 171.75, "currency": "usd"}"#).unwrap();
        assert_eq!(m.amount, dec("171.75"));
        assert_eq!(m.currency.as_str(), "USD");
        let m: Money = serde_json::from_str(r#"{"amount": 0.1, "currency": "EUR"}"#).unwrap();
        assert_eq!(m.amount, dec("0.1"));
        let m: Money = serde_json::from_str(r#"{"amount": "12345678.91"}"#).unwrap();
        assert_eq!(m.amount, dec("12345678.91"));
        assert_eq!(m.currency.as_str(), "USD");
        let m: Money = serde_json::from_str(r#"{"amount": 100, "currency": "JPY"}"#).unwrap();
        assert_eq!(m.amount, dec("100"));
    }

    #[test]
    fn sums_of_parsed_amounts_are_exact() {
        let parts =
            ["0.1", "0.2"].map(|p| serde_json::from_str::<Money>(&format!(r#"{{"amount": {p}}}"#)).unwrap().amount);
        assert_eq!(parts[0] + parts[1], dec("0.3"));
    }

    #[test]
    fn bad_amounts_and_currencies_are_errors() {
        assert!(serde_json::from_str::<Money>(r#"{"amount": "12,5"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount": 1, "currency": "US"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount": 1, "currency": "U$D"}"#).is_err());
    }

    #[test]
    fn minor_units_respect_the_currency_exponent() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let jpy = CurrencyCode::parse("JPY").unwrap();
        let kwd = CurrencyCode::parse("KWD").unwrap();
        assert_eq!(Money::from_minor_units(12345, usd).unwrap().amount, dec("123.45"));
        assert_eq!(Money::from_minor_units(-500, usd).unwrap().amount, dec("-5.00"));
        assert_eq!(Money::from_minor_units(12345, jpy).unwrap().amount, dec("12345"));
        assert_eq!(Money::from_minor_units(12345, kwd).unwrap().amount, dec("12.345"));
    }
}
