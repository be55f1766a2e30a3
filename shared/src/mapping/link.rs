//! `[ifs] voucher_link`: the address of a posted voucher in IFS, sent to Brex as the export result's
//! `deep_link_url` so a bookkeeper can open the voucher from the record.
//!
//! ```toml
//! [ifs]
//! voucher_link = "https://acme.ifs.cloud/main/ifsapplications/web/page/Voucher/Form;$filter=Company eq '{company}' and AccountingYear eq {year} and VoucherType eq '{voucher_type}' and VoucherNo eq {voucher_no}"
//! ```
//!
//! Placeholders are the parts of the voucher key the ledger returns (`10-2026-M-17`): `{company}`, `{year}`,
//! `{voucher_type}`, `{voucher_no}`, and `{voucher_key}` for the whole key. Each value is percent-encoded, the
//! rest of the template is kept as written (IFS page addresses carry OData filters that must stay readable to
//! IFS). No template, no link.

use std::fmt;

use crate::ifs::VoucherKey;
use crate::ifs::filter::encode_component;

/// The placeholders a link template may use.
pub const LINK_PLACEHOLDERS: [&str; 5] = ["company", "year", "voucher_type", "voucher_no", "voucher_key"];

/// Brex stores the link in a URL column; keep well below what browsers and proxies accept.
const MAX_LINK_LEN: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Part(usize),
}

/// A checked `voucher_link` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherLink {
    source: String,
    pieces: Vec<Piece>,
}

impl VoucherLink {
    /// Checks the template: an `http(s)://` address naming only known placeholders.
    pub fn parse(source: &str) -> Result<Self, String> {
        let lower = source.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return Err(format!("{source:?} must start with https:// (the address of the voucher page in IFS)"));
        }
        if source.len() > MAX_LINK_LEN {
            return Err(format!("longer than {MAX_LINK_LEN} characters"));
        }
        if source.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        let mut pieces = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| format!("unclosed '{{' in {source:?}"))?;
            let name = &after[..close];
            let index = LINK_PLACEHOLDERS.iter().position(|p| *p == name).ok_or_else(|| {
                format!(
                    "unknown placeholder {{{name}}}; use {}",
                    LINK_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                )
            })?;
            pieces.push(Piece::Part(index));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self { source: source.to_owned(), pieces })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The link for the voucher `key` (as the ledger returns it); `None` for a key that is not one.
    pub fn render(&self, key: &str) -> Option<String> {
        let parsed = VoucherKey::parse(key)?;
        let values = [
            parsed.company.to_string(),
            parsed.accounting_year.to_string(),
            parsed.voucher_type.to_string(),
            parsed.voucher_no.to_string(),
            parsed.to_string(),
        ];
        let mut out = String::with_capacity(self.source.len() + 16);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Part(i) => out.push_str(&encode_component(&values[*i])),
            }
        }
        Some(out)
    }
}

impl fmt::Display for VoucherLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IFS_FORM: &str = "https://acme.ifs.cloud/main/ifsapplications/web/page/Voucher/Form;$filter=Company eq '{company}' and AccountingYear eq {year} and VoucherType eq '{voucher_type}' and VoucherNo eq {voucher_no}";

    #[test]
    fn renders_the_parts_of_the_key() {
        let link = VoucherLink::parse(IFS_FORM).unwrap();
        assert_eq!(
            link.render("10-2026-M-17").unwrap(),
            "https://acme.ifs.cloud/main/ifsapplications/web/page/Voucher/Form;$filter=Company eq '10' and AccountingYear eq 2026 and VoucherType eq 'M' and VoucherNo eq 17"
        );
        let whole = VoucherLink::parse("http://ifs.local/v/{voucher_key}").unwrap();
        assert_eq!(whole.render("A-B-2026-M-3").unwrap(), "http://ifs.local/v/A-B-2026-M-3");
        assert_eq!(whole.render("not a key"), None);
    }

    #[test]
    fn refuses_what_is_no_link() {
        for bad in
            ["ftp://x/{company}", "/relative/{company}", "https://x/{vouchr_no}", "https://x/{company", "https://x/\n"]
        {
            assert!(VoucherLink::parse(bad).is_err(), "{bad}");
        }
    }
}
