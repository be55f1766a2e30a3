//! The mapping document (docs/contract.md §5): TOML written by the finance-systems engineer, stored in DynamoDB
//! (`pk = "config"`, `sk = "mapping"`). Parsed and checked in full before use, so a mistake is reported once,
//! naming the rule and key, instead of surfacing record by record.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::link::VoucherLink;
use super::template::Template;
use crate::brex::model::LineSide;
use crate::domain::{AccountCode, CodePartValue, CompanyCode, CurrencyCode, VoucherType};
use crate::ifs::IfsApiNames;
use crate::proposal::{CodePart, VoucherStatus};

/// Default row text template.
pub const DEFAULT_TEXT: &str = "{vendor} {memo}";
/// Default VoucherText2 template.
pub const DEFAULT_VOUCHER_TEXT: &str = "Brex {type} {record_id}";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Not TOML, a missing required key, an unknown key or a wrong type outside `[[rule]]`.
    #[error("mapping document: {0}")]
    Syntax(String),
    #[error("mapping document [ifs] `{key}`: {message}")]
    Ifs { key: &'static str, message: String },
    /// `number` is the rule's 1-based position among the `[[rule]]` tables; `key` e.g. `set.code_k`.
    #[error("mapping document [[rule]] #{number} `{key}`: {message}")]
    Rule { number: usize, key: String, message: String },
    /// `key` e.g. `code_parts.code_k`.
    #[error("mapping document [passthrough] `{key}`: {message}")]
    Passthrough { key: String, message: String },
}

/// A checked mapping document.
#[derive(Debug, Clone, PartialEq)]
pub struct MappingDocument {
    /// Default IFS company.
    pub company: CompanyCode,
    pub voucher_type: VoucherType,
    pub voucher_status: VoucherStatus,
    /// ReferenceSerie on every row; safe inside an OData string literal, at most 50 chars.
    pub reference_serie: String,
    /// Card liability: the account of funding lines (see [`crate::mapping`]) without an account of their own.
    pub credit_account: AccountCode,
    /// Employee payable: replaces `credit_account` as the default for `REIMBURSEMENT` records.
    pub reimbursement_credit_account: Option<AccountCode>,
    /// Row text (IFS `Text`).
    pub text: Template,
    /// Voucher text (IFS `VoucherText2`).
    pub voucher_text: Template,
    /// `[ifs.api]`: projection/entity-set/action names of the customer's IFS release.
    pub api: IfsApiNames,
    /// `[ifs] closed_period`: what happens to a record dated in a closed IFS accounting period.
    pub closed_period: ClosedPeriodPolicy,
    /// `[ifs] voucher_link`: the voucher's address in IFS, sent to Brex as `deep_link_url`; none by default.
    pub voucher_link: Option<VoucherLink>,
    /// `[ifs] attach_receipts`: attach each Brex receipt to the voucher in IFS document management (off by
    /// default; see [`crate::receipts`]).
    pub attach_receipts: bool,
    /// `[ifs] changed_after_export`: what happens when Brex changes a record after its voucher was posted.
    pub changed_after_export: ChangedAfterExport,
    pub rules: Vec<Rule>,
    pub passthrough: Passthrough,
}

/// `[ifs] closed_period`: what the poster does with a record whose date falls in a closed IFS accounting
/// period of its company.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedPeriodPolicy {
    /// `"fail"` (the default): posted as dated; IFS refuses it and the refusal is reported to Brex.
    #[default]
    Fail,
    /// `"next_open"`: posted on the first day of the company's first open period after the date, the
    /// original date kept in the row text and the audit trail.
    NextOpen,
    /// `"hold"`: held (not reported to Brex) until the period is reopened and the record replayed.
    Hold,
}

impl ClosedPeriodPolicy {
    pub const ALL: [Self; 3] = [Self::Fail, Self::NextOpen, Self::Hold];

    /// The spelling in the mapping document.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::NextOpen => "next_open",
            Self::Hold => "hold",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s.trim())
    }
}

impl std::fmt::Display for ClosedPeriodPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[ifs] changed_after_export`: what the poster does when a record comes back with a higher Brex `version`
/// than the one its voucher was posted from, and the new version books something else (another amount,
/// account or code part). A change the voucher does not carry (a receipt, a memo) is no change: the posted
/// voucher is reported again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangedAfterExport {
    /// `"hold"` (the default): held for a person with both versions named; nothing changes in IFS until
    /// the policy is changed (or the change undone in Brex) and the record replayed. The default because
    /// nothing should move in the books on its own after a bookkeeper exported it.
    #[default]
    Hold,
    /// `"replace"`: while the old voucher still waits for approval it is removed and the new version
    /// posted; once approved, a reversal of it is posted with the new voucher.
    Replace,
    /// `"reverse"`: always a reversal of the old voucher plus the new voucher (the old one is never
    /// removed, so the hold table keeps the whole history).
    Reverse,
}

impl ChangedAfterExport {
    pub const ALL: [Self; 3] = [Self::Hold, Self::Replace, Self::Reverse];

    /// The spelling in the mapping document.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Hold => "hold",
            Self::Replace => "replace",
            Self::Reverse => "reverse",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s.trim())
    }
}

impl std::fmt::Display for ChangedAfterExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The document as read from DynamoDB, with the item's `version` for audit and cache checks.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedMapping {
    pub document: MappingDocument,
    pub version: i64,
}

impl LoadedMapping {
    pub fn parse(text: &str, version: i64) -> Result<Self, DocumentError> {
        Ok(Self { document: MappingDocument::parse(text)?, version })
    }
}

/// `[passthrough]`: take IFS codes straight from Brex where Brex field values carry IFS codes as remote ids
/// (Brex custom fields) — created by hand, or published by the reference sync (`crate::sync`), which fills
/// exactly the fields named here.
///
/// ```toml
/// [passthrough]
/// gl_account_remote_id = true         # remote_field_id "GL_ACCOUNT" → the IFS account
/// gl_account_field = "GL Account"     # optional: the Brex field name the sync gives the accounts field
/// code_parts = { code_b = "Cost Center", code_d = "Project" }
///                                     # remote_field_id "CODE_B" → the IFS CodeB value; the sync publishes
///                                     # CodeB into a Brex field "Cost Center" with remote id CODE_B
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passthrough {
    /// A line's field with `remote_field_id == "GL_ACCOUNT"` and a `remote_field_value_id` gives its account.
    pub gl_account_remote_id: bool,
    /// The name of the Brex field that carries accounts (what the sync names it when creating it). Default
    /// [`DEFAULT_GL_ACCOUNT_FIELD`].
    pub gl_account_field: String,
    /// Code parts taken from a line field with `remote_field_id` = [`code_part_remote_id`] (`CODE_B`), with the
    /// Brex field's display name.
    pub code_parts: BTreeMap<CodePart, String>,
}

impl Default for Passthrough {
    fn default() -> Self {
        Self {
            gl_account_remote_id: false,
            gl_account_field: DEFAULT_GL_ACCOUNT_FIELD.to_owned(),
            code_parts: BTreeMap::new(),
        }
    }
}

/// The display name of the accounts field when `gl_account_field` is not given.
pub const DEFAULT_GL_ACCOUNT_FIELD: &str = "GL Account";
/// Brex limits field names only loosely; this keeps them readable in Brex's coding screens.
const MAX_FIELD_NAME: usize = 100;

/// The `remote_field_id` of the Brex field that carries code part `part` (`CODE_B`), mirroring `GL_ACCOUNT`.
pub fn code_part_remote_id(part: CodePart) -> String {
    format!("CODE_{}", &part.property()[4..])
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPassthrough {
    #[serde(default)]
    gl_account_remote_id: bool,
    #[serde(default)]
    gl_account_field: Option<String>,
    #[serde(default)]
    code_parts: BTreeMap<String, toml::Value>,
}

fn parse_passthrough(raw: RawPassthrough) -> Result<Passthrough, DocumentError> {
    let err = |key: &str, message: String| DocumentError::Passthrough { key: key.to_owned(), message };
    let field_name = |key: &str, name: &str| {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_FIELD_NAME {
            return Err(err(key, format!("a Brex field name of 1 to {MAX_FIELD_NAME} characters")));
        }
        Ok(name.to_owned())
    };
    let gl_account_field = match raw.gl_account_field.as_deref() {
        None => DEFAULT_GL_ACCOUNT_FIELD.to_owned(),
        Some(name) => field_name("gl_account_field", name)?,
    };
    let mut code_parts = BTreeMap::new();
    let mut names = std::collections::BTreeSet::from([gl_account_field.to_lowercase()]);
    for (key, value) in &raw.code_parts {
        let full = format!("code_parts.{key}");
        let part = CodePart::parse(key)
            .filter(|p| code_part_key(*p) == *key)
            .ok_or_else(|| err(&full, "unknown code part; IFS code parts are code_b … code_j".into()))?;
        let name = field_name(&full, string_value(value).map_err(|m| err(&full, m))?)?;
        // Two fields of one name would be indistinguishable to a bookkeeper coding in Brex.
        if !names.insert(name.to_lowercase()) {
            return Err(err(&full, format!("the Brex field name {name:?} is used twice")));
        }
        code_parts.insert(part, name);
    }
    Ok(Passthrough { gl_account_remote_id: raw.gl_account_remote_id, gl_account_field, code_parts })
}

/// One `[[rule]]`: when every condition holds for a line, `set` applies to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// 1-based position among the `[[rule]]` tables, for messages.
    pub number: usize,
    pub when: Vec<Condition>,
    pub set: RuleSet,
}

impl Rule {
    /// Rules without a line-level condition describe the purchase, so they reach only expense lines.
    pub fn is_line_level(&self) -> bool {
        self.when.iter().any(|c| matches!(c, Condition::Field { .. } | Condition::Side(_)))
    }
}

/// A `when` key. Text comparisons ignore case and surrounding blanks; `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `field` + `value`: the line carries a field named `name` (`field_name`) whose `field_value_name` or
    /// `remote_field_value_id` matches `value`.
    Field {
        name: String,
        value: Pattern,
    },
    /// The user's department, else the first `Department` line field.
    Department(Pattern),
    /// The first `Category` line field.
    Category(Pattern),
    SourceType(Pattern),
    RecordType(Pattern),
    /// The record's (billed) currency.
    Currency(Pattern),
    UserEmail(Pattern),
    /// The vendor (accounting records) or the merchant's descriptor (expenses).
    Merchant(Pattern),
    /// The user's full name ("First Last") or Brex user id.
    User(Pattern),
    /// The line's type as Brex sent it.
    Side(LineSide),
}

/// A case-insensitive pattern where `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    folded: Vec<char>,
}

impl Pattern {
    pub fn new(source: &str) -> Self {
        let source = source.trim().to_owned();
        let folded = source.to_lowercase().chars().collect();
        Self { source, folded }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.trim().to_lowercase().chars().collect();
        glob(&self.folded, &text)
    }

    fn has_wildcard(&self) -> bool {
        self.folded.contains(&'*')
    }
}

/// Iterative wildcard match (`*` only), linear in practice, no recursion.
fn glob(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            resume = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star, from)) = resume {
            p = star + 1;
            t = from + 1;
            resume = Some((star, from + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// What a rule sets; every key optional, at least one present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub account: Option<AccountCode>,
    pub code_parts: BTreeMap<CodePart, CodePartValue>,
    /// Record-wide: every row of the voucher lands in this company.
    pub company: Option<CompanyCode>,
    /// Record-wide: the account of funding lines that have none of their own.
    pub credit_account: Option<AccountCode>,
}

/// The rule key of a code part (`code_b`).
pub fn code_part_key(part: CodePart) -> String {
    format!("code_{}", part.property()[4..].to_ascii_lowercase())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    ifs: RawIfs,
    #[serde(default)]
    rule: Vec<toml::Table>,
    #[serde(default)]
    passthrough: RawPassthrough,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIfs {
    company: String,
    voucher_type: String,
    #[serde(default)]
    voucher_status: Option<String>,
    reference_serie: String,
    credit_account: String,
    #[serde(default)]
    reimbursement_credit_account: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    voucher_text: Option<String>,
    #[serde(default)]
    closed_period: Option<String>,
    #[serde(default)]
    attach_receipts: bool,
    changed_after_export: Option<String>,
    #[serde(default)]
    api: IfsApiNames,
    #[serde(default)]
    voucher_link: Option<String>,
}

const WHEN_KEYS: &str =
    "field, value, department, category, source_type, record_type, currency, user_email, merchant, user, side";

impl MappingDocument {
    pub fn parse(text: &str) -> Result<Self, DocumentError> {
        let raw: RawDocument = toml::from_str(text).map_err(|e| DocumentError::Syntax(e.to_string()))?;
        let ifs = raw.ifs;
        let ifs_err = |key: &'static str| move |message: String| DocumentError::Ifs { key, message };

        let company = CompanyCode::parse(&ifs.company).map_err(|e| ifs_err("company")(e.to_string()))?;
        let voucher_type = VoucherType::parse(&ifs.voucher_type).map_err(|e| ifs_err("voucher_type")(e.to_string()))?;
        let voucher_status = match ifs.voucher_status.as_deref() {
            None => VoucherStatus::default(),
            Some(s) => parse_status(s).ok_or_else(|| {
                ifs_err("voucher_status")(format!(
                    "{s:?} is not a voucher status; use NotApproved, AwaitingApproval or Approved"
                ))
            })?,
        };
        let reference_serie = parse_reference_serie(&ifs.reference_serie).map_err(ifs_err("reference_serie"))?;
        let credit_account =
            AccountCode::parse(&ifs.credit_account).map_err(|e| ifs_err("credit_account")(e.to_string()))?;
        let reimbursement_credit_account = ifs
            .reimbursement_credit_account
            .as_deref()
            .map(AccountCode::parse)
            .transpose()
            .map_err(|e| ifs_err("reimbursement_credit_account")(e.to_string()))?;
        let text =
            Template::parse(ifs.text.as_deref().unwrap_or(DEFAULT_TEXT)).map_err(|e| ifs_err("text")(e.to_string()))?;
        let voucher_text = Template::parse(ifs.voucher_text.as_deref().unwrap_or(DEFAULT_VOUCHER_TEXT))
            .map_err(|e| ifs_err("voucher_text")(e.to_string()))?;

        let closed_period = match ifs.closed_period.as_deref() {
            None => ClosedPeriodPolicy::default(),
            Some(s) => ClosedPeriodPolicy::parse(s).ok_or_else(|| {
                ifs_err("closed_period")(format!(
                    "{s:?} is not a closed-period policy; use \"fail\" (the default), \"next_open\" or \"hold\""
                ))
            })?,
        };
        let voucher_link =
            ifs.voucher_link.as_deref().map(VoucherLink::parse).transpose().map_err(ifs_err("voucher_link"))?;

        let changed_after_export = match ifs.changed_after_export.as_deref() {
            None => ChangedAfterExport::default(),
            Some(s) => ChangedAfterExport::parse(s).ok_or_else(|| {
                ifs_err("changed_after_export")(format!(
                    "{s:?} is not a changed-after-export policy; use \"hold\" (the default), \"replace\" or \"reverse\""
                ))
            })?,
        };

        let rules = raw.rule.iter().enumerate().map(|(i, table)| parse_rule(i + 1, table)).collect::<Result<_, _>>()?;
        let passthrough = parse_passthrough(raw.passthrough)?;

        Ok(Self {
            company,
            voucher_type,
            voucher_status,
            reference_serie,
            credit_account,
            reimbursement_credit_account,
            text,
            voucher_text,
            api: ifs.api,
            closed_period,
            voucher_link,
            attach_receipts: ifs.attach_receipts,
            changed_after_export,
            rules,
            passthrough,
        })
    }
}

fn parse_status(s: &str) -> Option<VoucherStatus> {
    [VoucherStatus::NotApproved, VoucherStatus::AwaitingApproval, VoucherStatus::Approved]
        .into_iter()
        .find(|v| v.as_str() == s.trim())
}

/// ReferenceSerie goes into every row and into the dedup `$filter` as a string literal.
fn parse_reference_serie(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 50 {
        return Err("must be 1 to 50 characters".into());
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("{s:?}: only letters, digits, '_' and '-' are allowed"));
    }
    Ok(s.to_owned())
}

fn parse_rule(number: usize, table: &toml::Table) -> Result<Rule, DocumentError> {
    let err = |key: &str, message: String| DocumentError::Rule { number, key: key.to_owned(), message };
    if let Some(key) = table.keys().find(|k| *k != "when" && *k != "set") {
        return Err(err(key, "unknown key; a rule has only `when` and `set`".into()));
    }
    let when = sub_table(table, "when").map_err(|m| err("when", m))?;
    let set = sub_table(table, "set").map_err(|m| err("set", m))?;
    Ok(Rule { number, when: parse_when(when, &err)?, set: parse_set(set, &err)? })
}

fn sub_table<'a>(table: &'a toml::Table, key: &str) -> Result<&'a toml::Table, String> {
    match table.get(key) {
        None => Err("missing".into()),
        Some(toml::Value::Table(t)) => Ok(t),
        Some(other) => Err(format!("must be a table, e.g. {key} = {{ … }}, not a {}", other.type_str())),
    }
}

fn string_value(value: &toml::Value) -> Result<&str, String> {
    match value {
        toml::Value::String(s) if !s.trim().is_empty() => Ok(s),
        toml::Value::String(_) => Err("must not be empty".into()),
        toml::Value::Integer(i) => Err(format!("must be a string; quote it: \"{i}\"")),
        other => Err(format!("must be a string, not a {}", other.type_str())),
    }
}

fn parse_when(
    when: &toml::Table,
    err: &impl Fn(&str, String) -> DocumentError,
) -> Result<Vec<Condition>, DocumentError> {
    if when.is_empty() {
        return Err(err("when", "is empty; a rule must say which lines it matches".into()));
    }
    let mut conditions = Vec::new();
    let mut field = None;
    let mut value = None;
    for (key, raw) in when {
        let full = format!("when.{key}");
        let s = string_value(raw).map_err(|m| err(&full, m))?;
        let pattern = Pattern::new(s);
        match key.as_str() {
            "field" => field = Some(s.trim().to_owned()),
            "value" => value = Some(pattern),
            "department" => conditions.push(Condition::Department(pattern)),
            "category" => conditions.push(Condition::Category(pattern)),
            "source_type" => {
                if !pattern.has_wildcard() && !["CARD", "REIMBURSEMENT", "BILL"].iter().any(|t| pattern.matches(t)) {
                    return Err(err(&full, format!("{s:?} is not a Brex source type (CARD, REIMBURSEMENT, BILL)")));
                }
                conditions.push(Condition::SourceType(pattern));
            }
            "record_type" => conditions.push(Condition::RecordType(pattern)),
            "currency" => {
                if !pattern.has_wildcard() && CurrencyCode::parse(s).is_err() {
                    return Err(err(&full, format!("{s:?} is not a three-letter currency code")));
                }
                conditions.push(Condition::Currency(pattern));
            }
            "user_email" => conditions.push(Condition::UserEmail(pattern)),
            "merchant" => conditions.push(Condition::Merchant(pattern)),
            "user" => conditions.push(Condition::User(pattern)),
            "side" => {
                let side = match s.trim().to_ascii_uppercase().as_str() {
                    "DEBIT" => LineSide::Debit,
                    "CREDIT" => LineSide::Credit,
                    _ => return Err(err(&full, format!("{s:?}: use DEBIT or CREDIT"))),
                };
                conditions.push(Condition::Side(side));
            }
            _ => return Err(err(&full, format!("unknown condition; known: {WHEN_KEYS}"))),
        }
    }
    match (field, value) {
        (Some(name), Some(value)) => conditions.insert(0, Condition::Field { name, value }),
        (None, None) => {}
        (Some(_), None) => return Err(err("when.field", "needs a `value` to compare the field with".into())),
        (None, Some(_)) => return Err(err("when.value", "needs a `field` naming the accounting field".into())),
    }
    Ok(conditions)
}

fn parse_set(set: &toml::Table, err: &impl Fn(&str, String) -> DocumentError) -> Result<RuleSet, DocumentError> {
    if set.is_empty() {
        return Err(err("set", "is empty; a rule must set at least one target".into()));
    }
    let mut out = RuleSet::default();
    for (key, raw) in set {
        let full = format!("set.{key}");
        let s = string_value(raw).map_err(|m| err(&full, m))?;
        let invalid = |e: crate::domain::InvalidId| err(&full, e.to_string());
        match key.as_str() {
            "account" => out.account = Some(AccountCode::parse(s).map_err(invalid)?),
            "company" => out.company = Some(CompanyCode::parse(s).map_err(invalid)?),
            "credit_account" => out.credit_account = Some(AccountCode::parse(s).map_err(invalid)?),
            other if other.starts_with("code") => {
                // Only the `code_b` spelling is accepted, so one document reads one way.
                let part = CodePart::parse(other)
                    .filter(|p| code_part_key(*p) == other)
                    .ok_or_else(|| err(&full, "unknown code part; IFS code parts are code_b … code_j".into()))?;
                out.code_parts.insert(part, CodePartValue::parse(s).map_err(invalid)?);
            }
            _ => {
                return Err(err(
                    &full,
                    "unknown target; known: account, company, credit_account, code_b … code_j".into(),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[ifs]
company = "10"
voucher_type = "M"
reference_serie = "BREX"
credit_account = "2410"
"#;

    fn with_rules(rules: &str) -> Result<MappingDocument, DocumentError> {
        MappingDocument::parse(&format!("{MINIMAL}\n{rules}"))
    }

    fn rule_error(rules: &str) -> (usize, String, String) {
        match with_rules(rules) {
            Err(DocumentError::Rule { number, key, message }) => (number, key, message),
            other => panic!("expected a rule error, got {other:?}"),
        }
    }

    #[test]
    fn the_example_document_parses() {
        let doc = MappingDocument::parse(include_str!("../../../infra/mapping.example.toml")).unwrap();
        assert_eq!(doc.company.as_str(), "10");
        assert_eq!(doc.voucher_status, VoucherStatus::NotApproved);
        assert_eq!(doc.reference_serie, "BREX");
        assert_eq!(doc.credit_account.as_str(), "2410");
        assert_eq!(doc.reimbursement_credit_account.as_ref().map(AccountCode::as_str), Some("2420"));
        assert!(doc.passthrough.gl_account_remote_id);
        assert_eq!(doc.api, IfsApiNames::default());
        assert!(doc.rules.len() >= 10);
        let canada = doc
            .rules
            .iter()
            .find(|r| r.set.company.as_ref().is_some_and(|c| c.as_str() == "20"))
            .expect("a rule books Acme Canada in company 20");
        assert!(canada.is_line_level());
    }

    #[test]
    fn the_contract_example_parses_with_defaults() {
        let doc = with_rules(
            r#"
[[rule]]
when = { field = "GL Account", value = "7500 Other G&A" }
set  = { account = "6500" }

[[rule]]
when = { department = "Engineering" }
set  = { code_b = "200" }

[[rule]]
when = { field = "Entity", value = "Acme Canada" }
set  = { company = "20", credit_account = "2415" }

[passthrough]
gl_account_remote_id = true
"#,
        )
        .unwrap();
        assert_eq!(doc.rules.len(), 3);
        assert_eq!(doc.rules[1].number, 2);
        assert!(!doc.rules[1].is_line_level());
        assert_eq!(doc.rules[1].set.code_parts.get(&CodePart::B).map(CodePartValue::as_str), Some("200"));
        assert_eq!(doc.text.as_str(), DEFAULT_TEXT);
        assert_eq!(doc.voucher_status, VoucherStatus::NotApproved);
        assert_eq!(doc.reimbursement_credit_account, None);
        assert_eq!(doc.closed_period, ClosedPeriodPolicy::Fail, "today's behaviour unless asked otherwise");
        assert!(!doc.attach_receipts, "receipts are attached only when asked for");
        assert!(MappingDocument::parse(&format!("{MINIMAL}attach_receipts = true\n")).unwrap().attach_receipts);
        assert!(MappingDocument::parse(&format!("{MINIMAL}attach_receipts = \"yes\"\n")).is_err());
    }

    #[test]
    fn the_changed_after_export_policy_is_read_and_a_bad_one_named() {
        let doc = MappingDocument::parse(MINIMAL).unwrap();
        assert_eq!(doc.changed_after_export, ChangedAfterExport::Hold, "nothing moves in the books unasked");
        for policy in ChangedAfterExport::ALL {
            let doc = MappingDocument::parse(&format!("{MINIMAL}changed_after_export = \"{policy}\"\n")).unwrap();
            assert_eq!(doc.changed_after_export, policy);
        }
        let err = MappingDocument::parse(&format!("{MINIMAL}changed_after_export = \"overwrite\"\n")).unwrap_err();
        assert!(
            matches!(&err, DocumentError::Ifs { key: "changed_after_export", message } if message.contains("replace")),
            "{err}"
        );
        assert!(err.to_string().contains("changed_after_export"), "names the key: {err}");
    }

    #[test]
    fn the_closed_period_policy_is_read_and_a_bad_one_named() {
        for (text, policy) in [
            ("fail", ClosedPeriodPolicy::Fail),
            ("next_open", ClosedPeriodPolicy::NextOpen),
            ("hold", ClosedPeriodPolicy::Hold),
        ] {
            let doc = MappingDocument::parse(&format!("{MINIMAL}closed_period = \"{text}\"\n")).unwrap();
            assert_eq!(doc.closed_period, policy);
            assert_eq!(policy.to_string(), text);
        }
        for bad in ["\"next-open\"", "\"Hold\"", "\"\"", "true"] {
            let err = MappingDocument::parse(&format!("{MINIMAL}closed_period = {bad}\n")).unwrap_err();
            let text = err.to_string();
            if bad == "true" {
                assert!(matches!(err, DocumentError::Syntax(_)), "{err:?}");
            } else {
                assert!(
                    matches!(&err, DocumentError::Ifs { key: "closed_period", .. }) && text.contains("next_open"),
                    "{text}"
                );
            }
            assert!(text.contains("closed_period"), "names the key: {text}");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let (n, key, msg) = rule_error(
            "[[rule]]\nwhen = { department = \"Sales\" }\nset = { code_b = \"100\" }\n\
             [[rule]]\nwhen = { department = \"Sales\" }\nset = { code_k = \"1\" }",
        );
        assert_eq!((n, key.as_str()), (2, "set.code_k"));
        assert!(msg.contains("code part"), "{msg}");

        let (n, key, _) = rule_error("[[rule]]\nwhen = { departement = \"Sales\" }\nset = { code_b = \"100\" }");
        assert_eq!((n, key.as_str()), (1, "when.departement"));
        let (_, key, _) = rule_error("[[rule]]\nwhen = { department = \"Sales\" }\nset = { acount = \"6500\" }");
        assert_eq!(key, "set.acount");
        let (_, key, _) = rule_error("[[rule]]\nwhen = { department = \"Sales\" }\nset = { CodeB = \"1\" }");
        assert_eq!(key, "set.CodeB");
        let (_, key, _) =
            rule_error("[[rule]]\nwhen = { department = \"Sales\" }\nset = { code_b = \"1\" }\nname = \"x\"");
        assert_eq!(key, "name");

        let err = MappingDocument::parse(&format!("{MINIMAL}voucher_typ = \"M\"")).unwrap_err();
        assert!(matches!(&err, DocumentError::Syntax(m) if m.contains("voucher_typ")), "{err}");
        let err = MappingDocument::parse(&format!("{MINIMAL}[ifs.api]\nvoucher_set = \"X\"")).unwrap_err();
        assert!(matches!(&err, DocumentError::Syntax(m) if m.contains("voucher_set")), "{err}");
        let err = MappingDocument::parse(&format!("{MINIMAL}[passthrough]\ngl_account = true")).unwrap_err();
        assert!(matches!(err, DocumentError::Syntax(_)));
    }

    #[test]
    fn bad_codes_are_named() {
        let (n, key, msg) = rule_error("[[rule]]\nwhen = { department = \"Sales\" }\nset = { account = \"65 00\" }");
        assert_eq!((n, key.as_str()), (1, "set.account"));
        assert!(msg.contains("IFS account"), "{msg}");
        let (_, key, msg) = rule_error("[[rule]]\nwhen = { department = \"Sales\" }\nset = { account = 6500 }");
        assert_eq!(key, "set.account");
        assert!(msg.contains("quote it"), "{msg}");
        let (_, key, _) = rule_error(&format!(
            "[[rule]]\nwhen = {{ department = \"Sales\" }}\nset = {{ company = \"{}\" }}",
            "1".repeat(21)
        ));
        assert_eq!(key, "set.company");
        let (_, key, _) = rule_error("[[rule]]\nwhen = { department = \"Sales\" }\nset = { code_c = \"\" }");
        assert_eq!(key, "set.code_c");

        let err = MappingDocument::parse(&MINIMAL.replace("\"2410\"", "\"24'10\"")).unwrap_err();
        assert!(matches!(err, DocumentError::Ifs { key: "credit_account", .. }), "{err}");
        let err = MappingDocument::parse(&MINIMAL.replace("\"BREX\"", "\"BR EX\"")).unwrap_err();
        assert!(matches!(err, DocumentError::Ifs { key: "reference_serie", .. }), "{err}");
        let err = MappingDocument::parse(&MINIMAL.replace("company = \"10\"", "company = \"\"")).unwrap_err();
        assert!(matches!(err, DocumentError::Ifs { key: "company", .. }), "{err}");
    }

    #[test]
    fn bad_conditions_are_named() {
        let (_, key, msg) = rule_error("[[rule]]\nwhen = {}\nset = { account = \"6500\" }");
        assert_eq!(key, "when");
        assert!(msg.contains("empty"));
        let (_, key, _) = rule_error("[[rule]]\nset = { account = \"6500\" }");
        assert_eq!(key, "when");
        let (_, key, _) = rule_error("[[rule]]\nwhen = { department = \"Sales\" }\nset = {}");
        assert_eq!(key, "set");
        let (_, key, _) = rule_error("[[rule]]\nwhen = { field = \"GL Account\" }\nset = { account = \"6500\" }");
        assert_eq!(key, "when.field");
        let (_, key, _) = rule_error("[[rule]]\nwhen = { value = \"6500\" }\nset = { account = \"6500\" }");
        assert_eq!(key, "when.value");
        let (_, key, _) = rule_error("[[rule]]\nwhen = { side = \"LEFT\" }\nset = { account = \"6500\" }");
        assert_eq!(key, "when.side");
        let (_, key, _) = rule_error("[[rule]]\nwhen = { source_type = \"REIMBURSMENT\" }\nset = { account = \"1\" }");
        assert_eq!(key, "when.source_type");
        let (_, key, _) = rule_error("[[rule]]\nwhen = { currency = \"US\" }\nset = { account = \"1\" }");
        assert_eq!(key, "when.currency");
        let (_, key, _) = rule_error("[[rule]]\nwhen = \"always\"\nset = { account = \"1\" }");
        assert_eq!(key, "when");
    }

    #[test]
    fn ifs_values_are_checked() {
        let err = MappingDocument::parse(&format!("{MINIMAL}voucher_status = \"Posted\"")).unwrap_err();
        assert!(
            matches!(&err, DocumentError::Ifs { key: "voucher_status", message } if message.contains("AwaitingApproval"))
        );
        let doc = MappingDocument::parse(&format!("{MINIMAL}voucher_status = \"AwaitingApproval\"")).unwrap();
        assert_eq!(doc.voucher_status, VoucherStatus::AwaitingApproval);
        let err = MappingDocument::parse(&format!("{MINIMAL}text = \"{{vendor}} {{memmo}}\"")).unwrap_err();
        assert!(matches!(&err, DocumentError::Ifs { key: "text", message } if message.contains("memmo")), "{err}");
        let err = MappingDocument::parse(&format!("{MINIMAL}voucher_text = \"{{oops\"")).unwrap_err();
        assert!(matches!(err, DocumentError::Ifs { key: "voucher_text", .. }));
        let err =
            MappingDocument::parse(&MINIMAL.replace("voucher_type = \"M\"", "voucher_type = \"MANUAL\"")).unwrap_err();
        assert!(matches!(err, DocumentError::Ifs { key: "voucher_type", .. }));
        let err = MappingDocument::parse(&MINIMAL.replace("credit_account = \"2410\"\n", "")).unwrap_err();
        assert!(matches!(&err, DocumentError::Syntax(m) if m.contains("credit_account")), "{err}");
        assert!(matches!(MappingDocument::parse("not toml ["), Err(DocumentError::Syntax(_))));
    }

    #[test]
    fn the_error_message_names_rule_and_key() {
        let err = with_rules("[[rule]]\nwhen = { department = \"Sales\" }\nset = { code_x = \"1\" }").unwrap_err();
        assert_eq!(
            err.to_string(),
            "mapping document [[rule]] #1 `set.code_x`: unknown code part; IFS code parts are code_b … code_j"
        );
    }

    #[test]
    fn patterns_fold_case_and_take_wildcards() {
        assert!(Pattern::new("*_REFUND").matches("card_expense_refund"));
        assert!(!Pattern::new("*_REFUND").matches("CARD_EXPENSE_POST"));
        assert!(Pattern::new("6500*").matches("6500 Travel"));
        assert!(Pattern::new("a*b*c").matches("aXXbYYc"));
        assert!(!Pattern::new("a*b*c").matches("aXXbYY"));
        assert!(Pattern::new(" Engineering ").matches("engineering"));
        assert!(!Pattern::new("Eng").matches("Engineering"));
        assert!(Pattern::new("*").matches(""));
    }

    #[test]
    fn passthrough_code_parts_name_their_brex_fields() {
        let doc = with_rules(
            "[passthrough]\ngl_account_remote_id = true\ncode_parts = { code_b = \"Cost Center\", code_d = \" Project \" }",
        )
        .unwrap();
        assert_eq!(doc.passthrough.gl_account_field, DEFAULT_GL_ACCOUNT_FIELD);
        assert_eq!(doc.passthrough.code_parts.get(&CodePart::B).map(String::as_str), Some("Cost Center"));
        assert_eq!(doc.passthrough.code_parts.get(&CodePart::D).map(String::as_str), Some("Project"));
        assert_eq!(code_part_remote_id(CodePart::B), "CODE_B");
        // Documents written before code parts existed keep their meaning.
        let old = with_rules("[passthrough]\ngl_account_remote_id = true").unwrap();
        assert_eq!(old.passthrough.code_parts, BTreeMap::new());
        assert_eq!(MappingDocument::parse(MINIMAL).unwrap().passthrough, Passthrough::default());

        let refused = |extra: &str| match with_rules(&format!("[passthrough]\n{extra}")) {
            Err(DocumentError::Passthrough { key, message }) => format!("{key}: {message}"),
            other => panic!("expected a passthrough error for {extra}, got {other:?}"),
        };
        assert!(refused("code_parts = { code_k = \"X\" }").starts_with("code_parts.code_k: unknown code part"));
        assert!(refused("code_parts = { CodeB = \"X\" }").starts_with("code_parts.CodeB: unknown code part"));
        assert!(refused("code_parts = { code_b = 5 }").contains("must be a string"));
        assert!(refused("code_parts = { code_b = \"  \" }").contains("must not be empty"));
        assert!(refused("code_parts = { code_b = \"gl account\" }").contains("used twice"));
        assert!(refused("gl_account_field = \"\"").starts_with("gl_account_field:"));
    }

    #[test]
    fn loaded_mapping_keeps_the_version() {
        let loaded = LoadedMapping::parse(MINIMAL, 7).unwrap();
        assert_eq!(loaded.version, 7);
        assert!(loaded.document.rules.is_empty());
    }
}
