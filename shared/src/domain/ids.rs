//! Identifier newtypes. Each is parsed once at the edge, so the rest of the code can rely on its shape (for
//! example, that a record id is safe inside an OData string literal and fits IFS's 50-char ReferenceNumber).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason} (got {shown:?})")]
pub struct InvalidId {
    pub kind: &'static str,
    pub reason: &'static str,
    /// The rejected input, cut short so a hostile value cannot flood the logs.
    pub shown: String,
}

impl InvalidId {
    fn new(kind: &'static str, reason: &'static str, input: &str) -> Self {
        Self { kind, reason, shown: input.chars().take(64).collect() }
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn parse_token(kind: &'static str, input: &str, max_len: usize) -> Result<String, InvalidId> {
    if input.is_empty() {
        return Err(InvalidId::new(kind, "empty", input));
    }
    if input.len() > max_len {
        return Err(InvalidId::new(kind, "too long", input));
    }
    if !input.chars().all(is_token_char) {
        return Err(InvalidId::new(kind, "only letters, digits, '_' and '-' are allowed", input));
    }
    Ok(input.to_owned())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(input: &str) -> Result<Self, InvalidId> {
                parse_token($kind, input, $max).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

token_id!(
    /// A Brex accounting record id (`accr_…`). At most 50 chars: it becomes the IFS `ReferenceNumber`.
    AccountingRecordId, "accounting record id", 50
);
token_id!(
    /// A Brex expense id (`expense_…`); an accounting record's `source_id` points at one.
    ExpenseId, "expense id", 50
);
token_id!(
    /// An IFS company code (`Company`, TEXT 20).
    CompanyCode, "IFS company", 20
);
token_id!(
    /// An IFS GL account (`Account`, TEXT 20).
    AccountCode, "IFS account", 20
);
token_id!(
    /// A value of an IFS code part B…J (TEXT 20).
    CodePartValue, "IFS code part value", 20
);
token_id!(
    /// An IFS voucher type (TEXT 3).
    VoucherType, "IFS voucher type", 3
);
token_id!(
    /// IFS `ReferenceNumber` (TEXT 50): the Brex id a voucher row came from, our dedup key inside IFS.
    ReferenceNumber, "IFS reference number", 50
);

impl From<&AccountingRecordId> for ReferenceNumber {
    fn from(id: &AccountingRecordId) -> Self {
        // Same alphabet and bound, so no re-check is needed.
        Self(id.as_str().to_owned())
    }
}

impl From<&ExpenseId> for ReferenceNumber {
    fn from(id: &ExpenseId) -> Self {
        Self(id.as_str().to_owned())
    }
}

/// A Standard-Webhooks message id (`webhook-id`): opaque, printable ASCII, bounded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookId(String);

impl WebhookId {
    pub const MAX_LEN: usize = 256;

    pub fn parse(input: &str) -> Result<Self, InvalidId> {
        if input.is_empty() {
            return Err(InvalidId::new("webhook id", "empty", input));
        }
        if input.len() > Self::MAX_LEN {
            return Err(InvalidId::new("webhook id", "too long", input));
        }
        if !input.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidId::new("webhook id", "must be printable ASCII", input));
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WebhookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An opaque OData ETag as IFS returns it (`W/"…"`). Copied verbatim into `If-Match`; never interpreted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    pub fn parse(input: &str) -> Result<Self, InvalidId> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(InvalidId::new("ETag", "empty", input));
        }
        // It goes back out as a header value, so it must be a legal one.
        if !trimmed.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(InvalidId::new("ETag", "must be visible ASCII", input));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({})", self.0)
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_id_accepts_brex_shapes_and_rejects_odata_breakers() {
        assert!(AccountingRecordId::parse("accr_2Lh9KRb0pzN4LePd").is_ok());
        for bad in ["", "accr_'or'1'eq'1", "accr x", &"a".repeat(51), "accr_é"] {
            assert!(AccountingRecordId::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(AccountingRecordId::parse(&"a".repeat(50)).is_ok());
    }

    #[test]
    fn ids_deserialize_through_parse() {
        let ok: AccountingRecordId = serde_json::from_str("\"accr_1\"").unwrap();
        assert_eq!(ok.as_str(), "accr_1");
        assert!(serde_json::from_str::<AccountingRecordId>("\"accr'1\"").is_err());
        assert!(serde_json::from_str::<CompanyCode>(&format!("\"{}\"", "1".repeat(21))).is_err());
    }

    #[test]
    fn webhook_id_rejects_control_and_space() {
        assert!(WebhookId::parse("msg_2Lh9KRb0pzN4LePd3XiA0cbjZ0g").is_ok());
        assert!(WebhookId::parse("msg 1").is_err());
        assert!(WebhookId::parse("msg\n1").is_err());
        assert!(WebhookId::parse(&"m".repeat(257)).is_err());
    }

    #[test]
    fn etag_is_kept_verbatim() {
        let tag = ETag::parse("W/\"QUFDSU1HOjIwMTkxMDMx\"").unwrap();
        assert_eq!(tag.as_str(), "W/\"QUFDSU1HOjIwMTkxMDMx\"");
        assert!(ETag::parse("  ").is_err());
        assert!(ETag::parse("W/\"a\nb\"").is_err());
    }
}
