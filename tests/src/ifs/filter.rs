//! The `$filter` subset the simulator understands, parsed by recursive descent.
//!
//! Grammar (OData operator precedence: `and` binds tighter than `or`):
//!
//! ```text
//! or_expr  := and_expr ("or" and_expr)*
//! and_expr := primary ("and" primary)*
//! primary  := "(" or_expr ")" | Property "eq" literal
//! literal  := 'text' (quotes doubled inside) | number | YYYY-MM-DD | null | Qualified.Enum'Value'
//! ```
//!
//! Everything else OData knows (`ne`, `gt`, `in`, `not`, functions such as `contains(…)`, arithmetic) is
//! reported as [`FilterError::Unsupported`], which the server answers with 501 `ODP_NOT_IMPLEMENTED`: the
//! connector's contract is to build filters from `eq`/`and`/`or` only, so anything else is a client bug
//! worth surfacing loudly. Malformed input is [`FilterError::Syntax`] (400).

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::str::FromStr;

/// A literal on the right of `eq`.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(Decimal),
    Date(NaiveDate),
    Null,
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Eq(String, Literal),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    #[error("invalid $filter: {0}")]
    Syntax(String),
    #[error("$filter feature not supported by the simulator: {0}")]
    Unsupported(String),
    #[error("invalid $filter: {0}")]
    Type(String),
}

/// The type of a property, for checking literals and comparing/sorting values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    /// Held as a JSON string inside the simulator so no precision is lost.
    Decimal,
    /// Held as a `YYYY-MM-DD` JSON string.
    Date,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    Comma,
    Word(String),
    Str(String),
    Num(String),
    Date(NaiveDate),
    Other(char),
}

const UNSUPPORTED_OPS: &[&str] =
    &["ne", "gt", "ge", "lt", "le", "in", "has", "not", "add", "sub", "mul", "div", "mod", "any", "all"];

fn tokenize(input: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::LParen);
                i += 1;
            }
            ')' => {
                out.push(Token::RParen);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(FilterError::Syntax("unterminated string literal".into())),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Str(s));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == '-') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                if let Ok(date) = NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
                    out.push(Token::Date(date));
                } else if Decimal::from_str(&text).is_ok() {
                    out.push(Token::Num(text));
                } else {
                    return Err(FilterError::Syntax(format!("bad number '{text}'")));
                }
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => {
                out.push(Token::Other(other));
                i += 1;
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(x)) if x == w)
    }

    fn or_expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and_expr()?;
        while self.peek_word("or") {
            self.pos += 1;
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.primary()?;
        while self.peek_word("and") {
            self.pos += 1;
            let right = self.primary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        match self.next() {
            Some(Token::LParen) => {
                let inner = self.or_expr()?;
                match self.next() {
                    Some(Token::RParen) => Ok(inner),
                    _ => Err(FilterError::Syntax("missing ')'".into())),
                }
            }
            Some(Token::Word(w)) if UNSUPPORTED_OPS.contains(&w.as_str()) => {
                Err(FilterError::Unsupported(format!("operator '{w}'")))
            }
            Some(Token::Word(w)) => {
                if self.peek() == Some(&Token::LParen) {
                    return Err(FilterError::Unsupported(format!("function '{w}'")));
                }
                self.comparison(w)
            }
            Some(t) => Err(FilterError::Syntax(format!("unexpected {t:?}"))),
            None => Err(FilterError::Syntax("unexpected end of filter".into())),
        }
    }

    fn comparison(&mut self, property: String) -> Result<Expr, FilterError> {
        match self.next() {
            Some(Token::Word(op)) if op == "eq" => {}
            Some(Token::Word(op)) if UNSUPPORTED_OPS.contains(&op.as_str()) => {
                return Err(FilterError::Unsupported(format!("operator '{op}'")));
            }
            Some(Token::Other(c)) if matches!(c, '/' | '+' | '*') => {
                return Err(FilterError::Unsupported(format!("'{c}' in property path or arithmetic")));
            }
            other => {
                return Err(FilterError::Syntax(format!("expected 'eq' after '{property}', found {other:?}")));
            }
        }
        let literal = match self.next() {
            Some(Token::Str(s)) => Literal::Str(s),
            Some(Token::Num(n)) => {
                Literal::Num(Decimal::from_str(&n).map_err(|_| FilterError::Syntax(format!("bad number '{n}'")))?)
            }
            Some(Token::Date(d)) => Literal::Date(d),
            Some(Token::Word(w)) if w == "null" => Literal::Null,
            // Qualified enum literal: IfsApp.Projection.EnumType'Value'
            Some(Token::Word(w)) if w.contains('.') => match self.next() {
                Some(Token::Str(s)) => Literal::Str(s),
                _ => return Err(FilterError::Syntax(format!("bad enum literal '{w}'"))),
            },
            other => return Err(FilterError::Syntax(format!("expected a literal, found {other:?}"))),
        };
        Ok(Expr::Eq(property, literal))
    }
}

/// Parses a `$filter` value.
pub fn parse(input: &str) -> Result<Expr, FilterError> {
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err(FilterError::Syntax("empty filter".into()));
    }
    if tokens.contains(&Token::Comma) {
        return Err(FilterError::Unsupported("lists / function arguments".into()));
    }
    let mut p = Parser { tokens, pos: 0 };
    let expr = p.or_expr()?;
    match p.peek() {
        None => Ok(expr),
        Some(Token::Word(w)) if UNSUPPORTED_OPS.contains(&w.as_str()) => {
            Err(FilterError::Unsupported(format!("operator '{w}'")))
        }
        Some(t) => Err(FilterError::Syntax(format!("unexpected trailing {t:?}"))),
    }
}

/// Checks every property exists in `schema` and every literal fits its type.
pub fn check(expr: &Expr, schema: &[(String, Kind)]) -> Result<(), FilterError> {
    match expr {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check(a, schema)?;
            check(b, schema)
        }
        Expr::Eq(prop, lit) => {
            let kind = schema
                .iter()
                .find(|(name, _)| name == prop)
                .map(|(_, k)| *k)
                .ok_or_else(|| FilterError::Type(format!("property '{prop}' does not exist")))?;
            let ok = matches!(
                (kind, lit),
                (_, Literal::Null)
                    | (Kind::Text, Literal::Str(_))
                    | (Kind::Int | Kind::Decimal, Literal::Num(_))
                    | (Kind::Date, Literal::Date(_))
            );
            if ok {
                Ok(())
            } else {
                Err(FilterError::Type(format!("incompatible types: {prop} ({kind:?}) eq {lit:?}")))
            }
        }
    }
}

/// Evaluates a checked expression against one row.
pub fn matches(expr: &Expr, row: &Map<String, Value>) -> bool {
    match expr {
        Expr::And(a, b) => matches(a, row) && matches(b, row),
        Expr::Or(a, b) => matches(a, row) || matches(b, row),
        Expr::Eq(prop, lit) => {
            let value = row.get(prop).unwrap_or(&Value::Null);
            match (lit, value) {
                (Literal::Null, v) => v.is_null(),
                (Literal::Str(s), Value::String(v)) => s == v,
                (Literal::Date(d), Value::String(v)) => d.format("%Y-%m-%d").to_string() == *v,
                (Literal::Num(n), v) => value_decimal(v).is_some_and(|x| x == *n),
                _ => false,
            }
        }
    }
}

/// Reads a number held either as a JSON number or a decimal string.
pub fn value_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => crate::ifs::model::number_to_decimal(n),
        Value::String(s) => Decimal::from_str(s).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(p: &str, v: &str) -> Expr {
        Expr::Eq(p.into(), Literal::Str(v.into()))
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let e = parse("A eq 'x' or B eq 'y' and C eq 'z'").unwrap();
        assert_eq!(
            e,
            Expr::Or(Box::new(s("A", "x")), Box::new(Expr::And(Box::new(s("B", "y")), Box::new(s("C", "z")))))
        );
    }

    #[test]
    fn parentheses_group_and_nest() {
        let e = parse("((ReferenceNumber eq 'a' or ReferenceNumber eq 'b')) and Company eq '10'").unwrap();
        assert_eq!(
            e,
            Expr::And(
                Box::new(Expr::Or(Box::new(s("ReferenceNumber", "a")), Box::new(s("ReferenceNumber", "b")))),
                Box::new(s("Company", "10"))
            )
        );
    }

    #[test]
    fn doubled_quotes_unescape() {
        assert_eq!(parse("Text eq 'O''Brien'").unwrap(), s("Text", "O'Brien"));
        assert_eq!(parse("Text eq ''''").unwrap(), s("Text", "'"));
    }

    #[test]
    fn numbers_dates_null_and_enums() {
        assert_eq!(
            parse("AccountingYear eq 2026").unwrap(),
            Expr::Eq("AccountingYear".into(), Literal::Num(Decimal::from(2026)))
        );
        assert_eq!(
            parse("DateFrom eq 2026-01-01").unwrap(),
            Expr::Eq("DateFrom".into(), Literal::Date(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()))
        );
        assert_eq!(parse("CodeB eq null").unwrap(), Expr::Eq("CodeB".into(), Literal::Null));
        assert_eq!(
            parse("VoucherStatus eq IfsApp.X.VoucherStatus'NotApproved'").unwrap(),
            s("VoucherStatus", "NotApproved")
        );
    }

    #[test]
    fn unsupported_operators_and_functions() {
        for f in ["A ne 'x'", "A gt 1", "A in ('a','b')", "not A eq 'x'", "contains(A,'x')", "A eq 'x' and B lt 3"] {
            assert!(matches!(parse(f), Err(FilterError::Unsupported(_))), "{f}: {:?}", parse(f));
        }
    }

    #[test]
    fn syntax_errors() {
        for f in ["", "A eq", "A eq 'x", "(A eq 'x'", "A eq 'x' B eq 'y'", "A 'x'", "A eq 'x' or"] {
            assert!(matches!(parse(f), Err(FilterError::Syntax(_))), "{f}: {:?}", parse(f));
        }
    }

    #[test]
    fn type_check_and_evaluate() {
        let schema = vec![("Company".to_string(), Kind::Text), ("AccountingYear".to_string(), Kind::Int)];
        assert!(check(&parse("Company eq 10").unwrap(), &schema).is_err());
        assert!(check(&parse("Nope eq '1'").unwrap(), &schema).is_err());
        let e = parse("Company eq '10' and (AccountingYear eq 2025 or AccountingYear eq 2026)").unwrap();
        check(&e, &schema).unwrap();
        let row = json!({"Company": "10", "AccountingYear": 2026});
        let other = json!({"Company": "20", "AccountingYear": 2026});
        assert!(matches(&e, row.as_object().unwrap()));
        assert!(!matches(&e, other.as_object().unwrap()));
    }
}
