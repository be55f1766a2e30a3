//! Text templates of the mapping document (`text`, `voucher_text`): literal text with `{placeholder}`s,
//! checked when the document is parsed so a typo never reaches IFS as literal braces.

use std::fmt;

/// A value a template can insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `vendor.name` (the merchant for card records).
    Vendor,
    /// The line's memo, else the record's.
    Memo,
    /// "First Last" of the Brex user, else their e-mail.
    User,
    UserEmail,
    RecordId,
    /// The record type, e.g. `CARD_EXPENSE_POST`.
    Type,
    /// `CARD`, `REIMBURSEMENT`, `BILL`.
    SourceType,
    /// The line's `Department` field, else the record's department.
    Department,
    /// The line's `Category` field, else the record's category.
    Category,
    /// The voucher date, `YYYY-MM-DD`.
    Date,
    /// `{field:Entity}`: the display value of the named accounting field on the line.
    Field(String),
}

impl Placeholder {
    /// Names accepted inside braces, for error messages.
    pub const NAMES: &'static str =
        "vendor, memo, user, user_email, record_id, type, source_type, department, category, date, field:<Field Name>";

    fn parse(name: &str) -> Option<Self> {
        if let Some(field) = name.strip_prefix("field:") {
            let field = field.trim();
            return (!field.is_empty()).then(|| Self::Field(field.to_owned()));
        }
        Some(match name.trim() {
            "vendor" => Self::Vendor,
            "memo" => Self::Memo,
            "user" => Self::User,
            "user_email" => Self::UserEmail,
            "record_id" => Self::RecordId,
            "type" => Self::Type,
            "source_type" => Self::SourceType,
            "department" => Self::Department,
            "category" => Self::Category,
            "date" => Self::Date,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Value(Placeholder),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{0}}} (known: {names})", names = Placeholder::NAMES)]
    UnknownPlaceholder(String),
    #[error("unclosed '{{' at character {0} (write '{{{{' for a literal brace)")]
    Unclosed(usize),
    #[error("stray '}}' at character {0} (write '}}}}' for a literal brace)")]
    StrayClose(usize),
}

/// A parsed template. `{{` and `}}` stand for literal braces.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((pos, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::StrayClose(source[..pos].chars().count())),
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, n) in chars.by_ref() {
                        if n == '}' {
                            closed = true;
                            break;
                        }
                        name.push(n);
                    }
                    if !closed {
                        return Err(TemplateError::Unclosed(source[..pos].chars().count()));
                    }
                    let placeholder =
                        Placeholder::parse(&name).ok_or_else(|| TemplateError::UnknownPlaceholder(name.clone()))?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Value(placeholder));
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Self { source: source.to_owned(), pieces })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Expands the template; `value` supplies each placeholder (absent values become empty). The result is
    /// tidied for IFS: control characters become spaces, runs of whitespace collapse, ends are trimmed.
    pub fn render(&self, value: impl Fn(&Placeholder) -> Option<String>) -> String {
        let mut raw = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => raw.push_str(text),
                Piece::Value(p) => raw.push_str(&value(p).unwrap_or_default()),
            }
        }
        tidy(&raw)
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

/// Collapses whitespace and control characters (memos may carry newlines) to single spaces.
pub(crate) fn tidy(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str) -> String {
        Template::parse(t).unwrap().render(|p| match p {
            Placeholder::Vendor => Some("Delta".into()),
            Placeholder::Memo => Some("Flight\nto  SFO".into()),
            Placeholder::Field(name) if name == "Entity" => Some("Acme Canada".into()),
            _ => None,
        })
    }

    #[test]
    fn placeholders_expand_and_text_is_tidied() {
        assert_eq!(render("{vendor} {memo}"), "Delta Flight to SFO");
        assert_eq!(render("{vendor} {user} {memo}"), "Delta Flight to SFO", "absent values leave no gaps");
        assert_eq!(render("{{{vendor}}} {field:Entity}"), "{Delta} Acme Canada");
        assert_eq!(render("  plain  "), "plain");
    }

    #[test]
    fn bad_templates_are_rejected_with_the_reason() {
        assert_eq!(Template::parse("{vendr}").unwrap_err(), TemplateError::UnknownPlaceholder("vendr".into()));
        assert_eq!(Template::parse("ab {memo").unwrap_err(), TemplateError::Unclosed(3));
        assert_eq!(Template::parse("é}").unwrap_err(), TemplateError::StrayClose(1));
        assert!(Template::parse("{field:}").is_err());
        let msg = Template::parse("{vendr}").unwrap_err().to_string();
        assert!(msg.contains("{vendr}") && msg.contains("record_id"), "{msg}");
    }
}
