//! OData literals in URLs: `$filter` building and entity keys. IFS supports only part of OData's filter
//! language (no `in`, no lambdas), so filters are built from `eq`, `and` and `or` alone, with every string
//! literal escaped.

use std::fmt;

/// An OData string literal: single quotes, inner quotes doubled (`O'Neil` → `'O''Neil'`).
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// An OData key value for a URL: a quoted string literal with the characters that would end a path
/// segment percent-encoded.
pub fn key_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in quote(value).chars() {
        match c {
            '%' | '/' | '?' | '#' | ' ' | '\\' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A filter expression built from `eq`, `and` and `or`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `Property eq <literal>`; the literal is already rendered.
    Eq {
        property: String,
        literal: String,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

impl Filter {
    /// `Property eq 'value'`.
    pub fn eq_str(property: &str, value: &str) -> Self {
        Self::Eq { property: property.to_owned(), literal: quote(value) }
    }

    /// `Property eq 2026`.
    pub fn eq_num(property: &str, value: i64) -> Self {
        Self::Eq { property: property.to_owned(), literal: value.to_string() }
    }

    /// Conjunction; nested `and`s are flattened.
    pub fn and(self, other: Filter) -> Self {
        match (self, other) {
            (Self::And(mut a), Self::And(b)) => {
                a.extend(b);
                Self::And(a)
            }
            (Self::And(mut a), b) => {
                a.push(b);
                Self::And(a)
            }
            (a, b) => Self::And(vec![a, b]),
        }
    }

    /// `(Property eq 'a' or Property eq 'b' …)`: the portable spelling of `in`. `None` for no values.
    pub fn any_of<'a>(property: &str, values: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let terms: Vec<Filter> = values.into_iter().map(|v| Self::eq_str(property, v)).collect();
        match terms.len() {
            0 => None,
            1 => terms.into_iter().next(),
            _ => Some(Self::Or(terms)),
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, inside_and: bool) -> fmt::Result {
        match self {
            Self::Eq { property, literal } => write!(f, "{property} eq {literal}"),
            Self::And(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    part.write(f, true)?;
                }
                Ok(())
            }
            Self::Or(parts) => {
                // `and` binds tighter than `or`, so an `or` under an `and` needs its parentheses.
                if inside_and {
                    f.write_str("(")?;
                }
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    part.write(f, false)?;
                }
                if inside_and {
                    f.write_str(")")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}

/// Percent-encodes a query component with `%20` for spaces (not `+`, which some servers keep literally).
pub fn encode_component(value: &str) -> String {
    // byte_serialize encodes a literal '+' as %2B, so every '+' it emits stands for a space.
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>().replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped() {
        assert_eq!(quote("O'Neil"), "'O''Neil'");
        assert_eq!(quote("''"), "''''''");
        assert_eq!(
            Filter::eq_str("Description", "a' or 1 eq 1 or 'x").to_string(),
            "Description eq 'a'' or 1 eq 1 or ''x'"
        );
    }

    #[test]
    fn or_is_parenthesised_under_and() {
        let f = Filter::eq_str("Company", "10")
            .and(Filter::eq_str("ReferenceSerie", "BREX"))
            .and(Filter::any_of("ReferenceNumber", ["a", "b"]).unwrap());
        assert_eq!(
            f.to_string(),
            "Company eq '10' and ReferenceSerie eq 'BREX' and (ReferenceNumber eq 'a' or ReferenceNumber eq 'b')"
        );
        assert_eq!(Filter::any_of("X", ["a"]).unwrap().to_string(), "X eq 'a'");
        assert!(Filter::any_of("X", []).is_none());
        let g = Filter::eq_str("Company", "10").and(Filter::eq_num("AccountingYear", 2026));
        assert_eq!(g.to_string(), "Company eq '10' and AccountingYear eq 2026");
        assert!(!f.to_string().contains(" in "));
    }

    #[test]
    fn key_literals_are_quoted_and_path_safe() {
        assert_eq!(key_literal("VOU1"), "'VOU1'");
        assert_eq!(key_literal("a'b/c?d#e"), "'a''b%2Fc%3Fd%23e'");
    }

    #[test]
    fn components_encode_spaces_and_quotes() {
        assert_eq!(encode_component("A eq 'x+y'"), "A%20eq%20%27x%2By%27");
    }
}
