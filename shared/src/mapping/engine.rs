//! Brex accounting record → posting proposal (one balanced voucher). Pure: no I/O, so the same record and
//! document always give the same proposal or the same error.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::document::{Condition, MappingDocument, Rule, code_part_remote_id};
use super::error::{Conflict, LineRef, LineSides, MappingError, show_amount};
use super::template::Placeholder;
use crate::brex::model::{AccountingFieldValue, AccountingRecord, LineItem, LineSide, SourceType};
use crate::domain::{AccountCode, CodePartValue, CompanyCode, CurrencyCode, Money, ReferenceNumber};
use crate::proposal::{CodePart, MAX_ROW_TEXT, Proposal, ProposalRow, Side, truncate_chars};

/// `remote_field_id` of the GL account field (what `[passthrough] gl_account_remote_id` reads).
pub const GL_ACCOUNT_REMOTE_ID: &str = "GL_ACCOUNT";
/// Display name of the GL account field, for messages when the remote id is absent.
pub const GL_ACCOUNT_FIELD: &str = "GL Account";
/// Line field giving the record's department when the user has none.
pub const DEPARTMENT_FIELD: &str = "Department";
/// Line field giving the record's category.
pub const CATEGORY_FIELD: &str = "Category";
/// IFS `VoucherText2` is kept to the same bound as row text.
pub const MAX_VOUCHER_TEXT: usize = MAX_ROW_TEXT;

/// Record-level facts the `when` keys and templates read.
struct Facts<'a> {
    department: Option<&'a str>,
    category: Option<&'a str>,
    source_type: Option<&'static str>,
    currency: CurrencyCode,
    user_email: Option<&'a str>,
    merchant: Option<&'a str>,
    user_name: Option<String>,
    user_id: Option<&'a str>,
}

impl<'a> Facts<'a> {
    fn of(record: &'a AccountingRecord) -> Self {
        let user = record.user.as_ref();
        let first_field = |name: &str| record.line_items.iter().find_map(|l| field_value(l, name));
        Self {
            department: user
                .and_then(|u| non_empty(u.department_name.as_deref()))
                .or_else(|| first_field(DEPARTMENT_FIELD)),
            category: first_field(CATEGORY_FIELD),
            source_type: record.source_type.map(|s| s.as_str()),
            currency: record.amount.currency,
            user_email: user.and_then(|u| non_empty(u.email.as_deref())),
            merchant: record.vendor.as_ref().and_then(|v| non_empty(v.name.as_deref())),
            user_name: user
                .map(|u| format!("{} {}", u.first_name.as_deref().unwrap_or(""), u.last_name.as_deref().unwrap_or("")))
                .filter(|name| !name.trim().is_empty()),
            user_id: user.and_then(|u| non_empty(u.id.as_deref())),
        }
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

fn named<'l>(line: &'l LineItem, name: &str) -> impl Iterator<Item = &'l AccountingFieldValue> {
    line.accounting_field_values
        .iter()
        .filter(move |f| f.field_name.as_deref().is_some_and(|n| n.trim().eq_ignore_ascii_case(name.trim())))
}

/// The display value of the line's field `name` (else its remote id).
fn field_value<'l>(line: &'l LineItem, name: &str) -> Option<&'l str> {
    named(line, name).find_map(|f| {
        non_empty(f.field_value_name.as_deref()).or_else(|| non_empty(f.remote_field_value_id.as_deref()))
    })
}

fn condition_holds(condition: &Condition, facts: &Facts<'_>, record: &AccountingRecord, line: &LineItem) -> bool {
    let fact = |value: Option<&str>, p: &super::document::Pattern| value.is_some_and(|v| p.matches(v));
    match condition {
        Condition::Field { name, value } => named(line, name).any(|f| {
            fact(non_empty(f.field_value_name.as_deref()), value)
                || fact(non_empty(f.remote_field_value_id.as_deref()), value)
        }),
        Condition::Department(p) => fact(facts.department, p),
        Condition::Category(p) => fact(facts.category, p),
        Condition::SourceType(p) => fact(facts.source_type, p),
        Condition::RecordType(p) => p.matches(&record.record_type),
        Condition::Currency(p) => p.matches(facts.currency.as_str()),
        Condition::UserEmail(p) => fact(facts.user_email, p),
        Condition::Merchant(p) => fact(facts.merchant, p),
        Condition::User(p) => fact(facts.user_name.as_deref(), p) || fact(facts.user_id, p),
        Condition::Side(side) => line.side == *side,
    }
}

/// Whether a purchase's cost sits on this line, by the side it is booked on: DEBIT on a purchase, CREDIT on
/// a refund (whichever shape Brex sent it in, see [`Orientation`]). The other lines are the funding side
/// (card liability, employee payable).
fn is_expense_line(record: &AccountingRecord, line: &LineItem) -> bool {
    (line.side == LineSide::Debit) != record.is_refund()
}

/// Whether the line carries accounting coding. Brex codes only the expense side (its funding line comes with
/// no field values), so this tells which way a record's lines are laid out. A field present without a value
/// (an uncoded GL account) still marks the expense line.
fn is_coded(line: &LineItem) -> bool {
    line.accounting_field_values
        .iter()
        .any(|f| f.brex_field_id.is_some() || f.remote_field_id.is_some() || f.field_name.is_some())
}

/// The one side all coded lines are on; `None` when no line is coded or coded lines sit on both sides.
fn coded_side(lines: &[(usize, &LineItem)]) -> Option<LineSide> {
    let mut sides = lines.iter().filter(|(_, l)| is_coded(l)).map(|(_, l)| l.side);
    let first = sides.next()?;
    sides.all(|s| s == first).then_some(first)
}

fn opposite(side: LineSide) -> LineSide {
    match side {
        LineSide::Debit => LineSide::Credit,
        LineSide::Credit => LineSide::Debit,
    }
}

/// How Brex laid out a record's lines relative to the rows they become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Orientation {
    /// Rows take Brex's sides: a purchase, or a refund sent with its sides already reversed.
    AsGiven,
    /// A refund sent shaped like its purchase (coded lines DEBIT): every row takes the opposite side, so
    /// both refund shapes give the same voucher.
    Flipped,
}

/// Reads the record's direction from its type, its amount's sign and its coded lines' side, and refuses
/// the combinations that contradict each other. `debits` is what each side of the (balanced) lines adds up
/// to in `currency`.
fn orientation(
    record: &AccountingRecord,
    reference: &ReferenceNumber,
    lines: &[(usize, &LineItem)],
    currency: CurrencyCode,
    debits: Decimal,
) -> Result<Orientation, MappingError> {
    let amount = record.amount;
    // A record amount in another currency cannot be compared without a rate; the lines alone then decide.
    if amount.currency == currency && amount.amount.abs() != debits {
        return Err(MappingError::AmountMismatch { record: reference.clone(), amount, currency, lines_total: debits });
    }
    let coded = coded_side(lines);
    let sides = || LineSides {
        coded: lines.iter().filter(|(_, l)| is_coded(l)).map(|(i, l)| LineRef::new(*i, l)).collect(),
        uncoded: lines.iter().filter(|(_, l)| !is_coded(l)).map(|(i, l)| LineRef::new(*i, l)).collect(),
    };
    if record.is_refund() {
        // Either sign is consistent: Brex may give a refund's amount as a magnitude or negative. Without a
        // coded side to go by (no coding, or coding on both sides) the lines are taken as already reversed.
        return Ok(if coded == Some(LineSide::Debit) { Orientation::Flipped } else { Orientation::AsGiven });
    }
    if amount.is_negative() {
        return Err(MappingError::NegativeAmountNotRefund {
            record: reference.clone(),
            record_type: record.record_type.clone(),
            amount,
            sides: sides(),
        });
    }
    // Only known purchase types: payments, repayments and unknown types have no documented expense side.
    if record.is_purchase() && coded == Some(LineSide::Credit) {
        return Err(MappingError::PurchaseLinesReversed {
            record: reference.clone(),
            record_type: record.record_type.clone(),
            amount,
            sides: sides(),
        });
    }
    Ok(Orientation::AsGiven)
}

fn rule_applies(rule: &Rule, facts: &Facts<'_>, record: &AccountingRecord, line: &LineItem) -> bool {
    (rule.is_line_level() || is_expense_line(record, line))
        && rule.when.iter().all(|c| condition_holds(c, facts, record, line))
}

/// What the document made of one line before record-wide settings are resolved.
#[derive(Default)]
struct LineTargets {
    account: Option<AccountCode>,
    /// A passthrough remote id that is no valid IFS account; an error only if no rule supplies one.
    bad_remote: Option<(String, &'static str)>,
    /// Passthrough code part values that are no valid IFS code; each an error only if no rule sets the part.
    bad_remote_parts: BTreeMap<CodePart, (String, &'static str)>,
    code_parts: BTreeMap<CodePart, CodePartValue>,
    /// (value, rule number) of the last rule that set it.
    company: Option<(CompanyCode, usize)>,
    credit_account: Option<(AccountCode, usize)>,
}

fn line_targets(doc: &MappingDocument, facts: &Facts<'_>, record: &AccountingRecord, line: &LineItem) -> LineTargets {
    let mut t = LineTargets::default();
    // Passthrough is the baseline; rules are the engineer's explicit exceptions and override it.
    if doc.passthrough.gl_account_remote_id
        && let Some(remote) =
            line.remote_field(GL_ACCOUNT_REMOTE_ID).and_then(|f| non_empty(f.remote_field_value_id.as_deref()))
    {
        match AccountCode::parse(remote) {
            Ok(account) => t.account = Some(account),
            Err(e) => t.bad_remote = Some((remote.to_owned(), e.reason)),
        }
    }
    for part in doc.passthrough.code_parts.keys() {
        let Some(remote) =
            line.remote_field(&code_part_remote_id(*part)).and_then(|f| non_empty(f.remote_field_value_id.as_deref()))
        else {
            continue;
        };
        match CodePartValue::parse(remote) {
            Ok(value) => {
                t.code_parts.insert(*part, value);
            }
            Err(e) => {
                t.bad_remote_parts.insert(*part, (remote.to_owned(), e.reason));
            }
        }
    }
    for rule in doc.rules.iter().filter(|r| rule_applies(r, facts, record, line)) {
        let set = &rule.set;
        if let Some(account) = &set.account {
            t.account = Some(account.clone());
        }
        t.code_parts.extend(set.code_parts.iter().map(|(k, v)| (*k, v.clone())));
        t.bad_remote_parts.retain(|part, _| !set.code_parts.contains_key(part));
        if let Some(company) = &set.company {
            t.company = Some((company.clone(), rule.number));
        }
        if let Some(credit) = &set.credit_account {
            t.credit_account = Some((credit.clone(), rule.number));
        }
    }
    t
}

/// The one value all lines that set it agree on; `Err` carries the first two that disagree.
fn agree<T: Clone + PartialEq>(
    picks: impl Iterator<Item = (T, LineRef, usize)>,
) -> Result<Option<T>, Box<Conflict<T>>> {
    let mut first: Option<(T, LineRef, usize)> = None;
    for (value, line, rule) in picks {
        match &first {
            None => first = Some((value, line, rule)),
            Some((seen, seen_line, seen_rule)) if *seen != value => {
                return Err(Box::new(Conflict {
                    first: seen.clone(),
                    first_line: seen_line.clone(),
                    first_rule: *seen_rule,
                    second: value,
                    second_line: line,
                    second_rule: rule,
                }));
            }
            Some(_) => {}
        }
    }
    Ok(first.map(|f| f.0))
}

/// Why an expense line ended without an account, in the bookkeeper's terms.
fn missing_account_detail(
    doc: &MappingDocument,
    record: &AccountingRecord,
    orientation: Orientation,
    line: &LineItem,
) -> String {
    let gl = line.remote_field(GL_ACCOUNT_REMOTE_ID).or_else(|| line.field(GL_ACCOUNT_FIELD));
    let refund_note = match (record.is_refund(), orientation) {
        (false, _) => "",
        (true, Orientation::AsGiven) => " (on a refund the CREDIT lines carry the expense)",
        (true, Orientation::Flipped) => {
            " (this refund's lines are shaped like its purchase, so its DEBIT lines carry the expense)"
        }
    };
    let Some(gl) = gl else {
        return format!("the line carries no \"{GL_ACCOUNT_FIELD}\" field and no rule sets an account{refund_note}");
    };
    let name = non_empty(gl.field_name.as_deref()).unwrap_or(GL_ACCOUNT_FIELD);
    let shown = non_empty(gl.field_value_name.as_deref());
    let remote = non_empty(gl.remote_field_value_id.as_deref());
    match (shown, remote) {
        (None, None) => format!("its \"{name}\" field has no value (not coded in Brex)"),
        (shown, remote) => {
            let mut detail = format!("no rule matched field \"{name}\" = \"{}\"", shown.or(remote).unwrap_or_default());
            if let (Some(remote), false) = (remote, doc.passthrough.gl_account_remote_id) {
                detail.push_str(&format!(
                    " (its remote id \"{remote}\" is ignored: [passthrough] gl_account_remote_id is off)"
                ));
            }
            detail
        }
    }
}

/// The purchase's original (foreign) amount for a line, when it differs in currency from the billed amount.
fn foreign_original(record: &AccountingRecord, line: &LineItem) -> Option<Money> {
    let differs = |m: &Money| m.currency != line.amount.currency;
    let original = match line.original_amount {
        Some(original) => Some(original).filter(differs),
        // Lines without their own original take the record's when they carry the record's whole amount.
        None => record.original_amount.filter(|o| differs(o) && line.amount.amount == record.amount.amount.abs()),
    };
    // A refund's original may come negative like its amount; the row's side already says which way.
    original.map(|o| o.abs())
}

fn placeholder_value(
    p: &Placeholder,
    record: &AccountingRecord,
    facts: &Facts<'_>,
    line: Option<&LineItem>,
) -> Option<String> {
    let user = record.user.as_ref();
    let line_field = |name: &str| line.and_then(|l| field_value(l, name));
    let value = match p {
        Placeholder::Vendor => record.vendor.as_ref().and_then(|v| non_empty(v.name.as_deref())),
        Placeholder::Memo => line.and_then(|l| non_empty(l.memo.as_deref())).or(non_empty(record.memo.as_deref())),
        Placeholder::User => {
            let full = user
                .map(|u| format!("{} {}", u.first_name.as_deref().unwrap_or(""), u.last_name.as_deref().unwrap_or("")));
            return non_empty(full.as_deref()).map(str::to_owned).or(facts.user_email.map(str::to_owned));
        }
        Placeholder::UserEmail => facts.user_email,
        Placeholder::RecordId => Some(record.id.as_str()),
        Placeholder::Type => Some(record.record_type.as_str()),
        Placeholder::SourceType => facts.source_type,
        Placeholder::Department => line_field(DEPARTMENT_FIELD).or(facts.department),
        Placeholder::Category => line_field(CATEGORY_FIELD).or(facts.category),
        Placeholder::Date => return Some(record.posting_date().to_string()),
        Placeholder::Field(name) => match line {
            Some(l) => field_value(l, name),
            None => record.line_items.iter().find_map(|l| field_value(l, name)),
        },
    };
    value.map(str::to_owned)
}

/// Row text: the template, then the foreign original amount, which is kept whole when the text is cut.
fn row_text(doc: &MappingDocument, record: &AccountingRecord, facts: &Facts<'_>, line: &LineItem) -> String {
    let body = doc.text.render(|p| placeholder_value(p, record, facts, Some(line)));
    let Some(original) = foreign_original(record, line) else {
        return truncate_chars(&body, MAX_ROW_TEXT);
    };
    let suffix = format!("(orig {} {})", show_amount(original.amount, original.currency), original.currency);
    let room = MAX_ROW_TEXT.saturating_sub(suffix.chars().count() + 1);
    let body = truncate_chars(&body, room);
    let text = if body.is_empty() { suffix } else { format!("{} {suffix}", body.trim_end()) };
    truncate_chars(&text, MAX_ROW_TEXT)
}

/// Checks debits = credits per currency, and that there is only one currency; gives it and each side's total.
fn check_balance(
    record: &ReferenceNumber,
    lines: &[(usize, &LineItem)],
) -> Result<(CurrencyCode, Decimal), MappingError> {
    let mut totals: BTreeMap<CurrencyCode, (Decimal, Decimal)> = BTreeMap::new();
    for (_, line) in lines {
        let currency = line.amount.currency;
        let entry = totals.entry(currency).or_default();
        let total = match line.side {
            LineSide::Debit => &mut entry.0,
            LineSide::Credit => &mut entry.1,
        };
        // Checked: amounts come from Brex, and Decimal's `+` panics past its range.
        *total = total
            .checked_add(line.amount.amount)
            .ok_or_else(|| MappingError::AmountOverflow { record: record.clone(), currency })?;
    }
    if let Some((currency, (debits, credits))) = totals.iter().find(|(_, (d, c))| d != c) {
        return Err(MappingError::Unbalanced {
            record: record.clone(),
            currency: *currency,
            debits: show_amount(*debits, *currency),
            credits: show_amount(*credits, *currency),
        });
    }
    let mut currencies = totals.into_iter();
    match (currencies.next(), currencies.next()) {
        (Some((only, (debits, _))), None) => Ok((only, debits)),
        (Some((first, _)), Some((second, _))) => Err(MappingError::MixedCurrencies {
            record: record.clone(),
            currencies: [first, second].into_iter().chain(currencies.map(|(c, _)| c)).collect(),
        }),
        (None, _) => Err(MappingError::NoLines { record: record.clone() }),
    }
}

/// Maps one Brex accounting record to one balanced posting proposal.
///
/// Each non-zero line becomes a row with its exact amount in its (billed) currency, on the side Brex gave
/// it, or on the opposite side for a refund whose lines are shaped like its purchase. Accounts come from
/// `[passthrough]` and the rules (rules win); funding-side rows (CREDIT on a purchase, DEBIT on a refund)
/// without one take the credit account. Company and credit account are record-wide: lines that set them
/// must agree. See the module docs for the full semantics.
pub fn map_record(doc: &MappingDocument, record: &AccountingRecord) -> Result<Proposal, MappingError> {
    let reference = ReferenceNumber::from(&record.id);
    if let Some((i, line)) = record.line_items.iter().enumerate().find(|(_, l)| l.amount.is_negative()) {
        return Err(MappingError::NegativeAmount { record: reference, line: LineRef::new(i, line) });
    }
    // Zero lines carry nothing and IFS refuses zero rows.
    let lines: Vec<(usize, &LineItem)> =
        record.line_items.iter().enumerate().filter(|(_, l)| !l.amount.amount.is_zero()).collect();
    if lines.is_empty() {
        return Err(MappingError::NoLines { record: reference });
    }
    let (currency, debits) = check_balance(&reference, &lines)?;
    let orientation = orientation(record, &reference, &lines, currency, debits)?;
    // From here on every line is on the side its row is booked on, so rules (`side` included) see a refund
    // the same way in either shape; messages still show Brex's side (`refs`), which the bookkeeper sees.
    let booked: Vec<Cow<'_, LineItem>> = lines
        .iter()
        .map(|(_, line)| match orientation {
            Orientation::AsGiven => Cow::Borrowed(*line),
            Orientation::Flipped => Cow::Owned(LineItem { side: opposite(line.side), ..(*line).clone() }),
        })
        .collect();

    let facts = Facts::of(record);
    let targets: Vec<LineTargets> = booked.iter().map(|line| line_targets(doc, &facts, record, line)).collect();
    let refs: Vec<LineRef> = lines.iter().map(|(i, line)| LineRef::new(*i, line)).collect();

    let company =
        agree(targets.iter().zip(&refs).filter_map(|(t, r)| t.company.clone().map(|(c, rule)| (c, r.clone(), rule))))
            .map_err(|conflict| MappingError::CompanyConflict { record: reference.clone(), conflict })?
            .unwrap_or_else(|| doc.company.clone());

    let default_credit = match (record.source_type, &doc.reimbursement_credit_account) {
        (Some(SourceType::Reimbursement), Some(payable)) => payable,
        _ => &doc.credit_account,
    };
    let credit_account = agree(
        targets.iter().zip(&refs).filter_map(|(t, r)| t.credit_account.clone().map(|(a, rule)| (a, r.clone(), rule))),
    )
    .map_err(|conflict| MappingError::CreditAccountConflict { record: reference.clone(), conflict })?
    .unwrap_or_else(|| default_credit.clone());

    let mut rows = Vec::with_capacity(lines.len());
    for ((line, target), line_ref) in booked.iter().zip(targets).zip(refs) {
        if let Some((part, (value, reason))) = target.bad_remote_parts.into_iter().next() {
            return Err(MappingError::InvalidRemoteCodePart { record: reference, line: line_ref, part, value, reason });
        }
        let account = match (target.account, target.bad_remote) {
            (Some(account), _) => account,
            (None, Some((value, reason))) => {
                return Err(MappingError::InvalidRemoteAccount { record: reference, line: line_ref, value, reason });
            }
            (None, None) if !is_expense_line(record, line) => credit_account.clone(),
            (None, None) => {
                let detail = missing_account_detail(doc, record, orientation, line);
                return Err(MappingError::NoAccount { record: reference, line: line_ref, detail });
            }
        };
        rows.push(ProposalRow {
            account,
            code_parts: target.code_parts,
            side: match line.side {
                LineSide::Debit => Side::Debit,
                LineSide::Credit => Side::Credit,
            },
            amount: line.amount.amount,
            currency: line.amount.currency,
            // The row is in the billed currency; its rate to the company's accounting currency is IFS's
            // business (its rate table). Brex's original/billed ratio is a different rate, so it is not used.
            currency_rate: None,
            text: row_text(doc, record, &facts, line),
        });
    }

    let text =
        truncate_chars(&doc.voucher_text.render(|p| placeholder_value(p, record, &facts, None)), MAX_VOUCHER_TEXT);
    let proposal = Proposal {
        reference_number: reference,
        reference_serie: doc.reference_serie.clone(),
        source_version: record.version,
        company,
        voucher_type: doc.voucher_type.clone(),
        voucher_status: doc.voucher_status,
        voucher_date: record.posting_date(),
        text,
        rows,
    };
    tracing::debug!(
        record = %proposal.reference_number,
        company = %proposal.company,
        rows = proposal.rows.len(),
        "record mapped"
    );
    Ok(proposal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, Disposition};
    use serde_json::{Value, json};
    use std::str::FromStr;

    fn example() -> MappingDocument {
        MappingDocument::parse(include_str!("../../../infra/mapping.example.toml")).unwrap()
    }

    fn doc(extra: &str) -> MappingDocument {
        MappingDocument::parse(&format!(
            "[ifs]\ncompany = \"10\"\nvoucher_type = \"M\"\nreference_serie = \"BREX\"\ncredit_account = \"2410\"\n{extra}"
        ))
        .unwrap()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn gl(name: Option<&str>, remote: Option<&str>) -> Value {
        json!({"brex_field_id": "extended_field_gl_account", "remote_field_id": "GL_ACCOUNT",
               "brex_field_value_id": name.map(|_| "efo_gl"), "remote_field_value_id": remote,
               "field_name": "GL Account", "field_value_name": name, "type": "IDENTIFIER"})
    }

    fn field(name: &str, value: &str) -> Value {
        json!({"brex_field_id": format!("extended_field_{name}"), "remote_field_id": name.to_uppercase(),
               "brex_field_value_id": "efo_x", "remote_field_value_id": null,
               "field_name": name, "field_value_name": value, "type": "IDENTIFIER"})
    }

    fn line(id: &str, side: &str, amount: &str, currency: &str, fields: Vec<Value>) -> Value {
        json!({"id": id, "type": side, "amount": {"amount": amount, "currency": currency},
               "accounting_field_values": fields})
    }

    fn with_original(mut line: Value, amount: &str, currency: &str) -> Value {
        line["original_amount"] = json!({"amount": amount, "currency": currency});
        line
    }

    fn record(record_type: &str, source_type: &str, lines: Vec<Value>) -> AccountingRecord {
        let debits: Decimal =
            lines.iter().filter(|l| l["type"] == "DEBIT").map(|l| dec(l["amount"]["amount"].as_str().unwrap())).sum();
        let currency = lines[0]["amount"]["currency"].clone();
        serde_json::from_value(json!({
            "id": "accr_1", "amount": {"amount": debits.to_string(), "currency": currency},
            "type": record_type, "review_status": "READY_FOR_EXPORT", "source_id": "expense_1",
            "source_type": source_type, "erp_posting_date": "2026-06-11T00:00:00Z",
            "posted_at": "2026-06-10T09:09:10Z", "updated_at": "2026-06-11T09:09:10Z", "version": 3,
            "user": {"id": "cuuser_1", "first_name": "Ada", "last_name": "Lovelace",
                     "email": "ada.lovelace@acme.example", "department_name": "Engineering"},
            "vendor": {"id": "pmch_1", "name": "Delta"}, "memo": "Flight to SFO",
            "line_items": lines,
        }))
        .unwrap()
    }

    /// A plain card purchase: DEBIT expense coded "6500 Travel", CREDIT liability without fields.
    fn card_purchase() -> AccountingRecord {
        record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line(
                    "accrli_1",
                    "DEBIT",
                    "171.75",
                    "USD",
                    vec![gl(Some("6500 Travel"), None), field("Department", "Engineering")],
                ),
                line("accrli_2", "CREDIT", "171.75", "USD", vec![]),
            ],
        )
    }

    fn accounts(p: &Proposal) -> Vec<(&str, Side, Decimal)> {
        p.rows.iter().map(|r| (r.account.as_str(), r.side, r.amount)).collect()
    }

    fn code_b(row: &ProposalRow) -> Option<&str> {
        row.code_parts.get(&CodePart::B).map(CodePartValue::as_str)
    }

    #[test]
    fn a_card_expense_becomes_a_balanced_two_row_voucher() {
        let p = map_record(&example(), &card_purchase()).unwrap();
        assert!(p.is_balanced());
        assert_eq!(accounts(&p), vec![("6500", Side::Debit, dec("171.75")), ("2410", Side::Credit, dec("171.75"))]);
        assert_eq!(code_b(&p.rows[0]), Some("200"));
        assert!(p.rows[1].code_parts.is_empty(), "the card liability takes no cost centre");
        assert!(p.rows.iter().all(|r| r.currency.as_str() == "USD" && r.currency_rate.is_none()));
        assert_eq!(p.rows[0].text, "Delta Flight to SFO / Ada Lovelace");
        assert_eq!(p.text, "Brex CARD_EXPENSE_POST accr_1 Delta");
        assert_eq!(p.company.as_str(), "10");
        assert_eq!(p.reference_number.as_str(), "accr_1");
        assert_eq!(p.reference_serie, "BREX");
        assert_eq!(p.voucher_type.as_str(), "M");
        assert_eq!(p.voucher_status, crate::proposal::VoucherStatus::NotApproved);
        assert_eq!(p.voucher_date.to_string(), "2026-06-11");
        assert_eq!(p.source_version, 3);
    }

    #[test]
    fn a_split_purchase_gives_one_row_per_debit_line() {
        let r = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line(
                    "accrli_1",
                    "DEBIT",
                    "100.10",
                    "USD",
                    vec![gl(Some("6500 Travel"), None), field("Department", "Engineering")],
                ),
                line(
                    "accrli_2",
                    "DEBIT",
                    "71.65",
                    "USD",
                    vec![gl(Some("6510 Meals"), Some("6510")), field("Department", "Sales")],
                ),
                line("accrli_3", "CREDIT", "171.75", "USD", vec![]),
            ],
        );
        let p = map_record(&example(), &r).unwrap();
        assert_eq!(
            accounts(&p),
            vec![
                ("6500", Side::Debit, dec("100.10")),
                ("6510", Side::Debit, dec("71.65")),
                ("2410", Side::Credit, dec("171.75"))
            ]
        );
        assert_eq!(code_b(&p.rows[0]), Some("200"));
        assert_eq!(code_b(&p.rows[1]), Some("100"), "the line's Department beats the user's");
        assert!(p.is_balanced());
    }

    /// Every row exactly: (account, code parts as `B=200`, side, amount).
    fn full(p: &Proposal) -> Vec<(&str, String, Side, Decimal)> {
        p.rows
            .iter()
            .map(|r| {
                let parts = r.code_parts.iter().map(|(k, v)| format!("{k:?}={}", v.as_str())).collect::<Vec<_>>();
                (r.account.as_str(), parts.join(","), r.side, r.amount)
            })
            .collect()
    }

    fn with_amount(mut r: AccountingRecord, amount: &str) -> AccountingRecord {
        r.amount.amount = dec(amount);
        r
    }

    fn flip(side: Side) -> Side {
        match side {
            Side::Debit => Side::Credit,
            Side::Credit => Side::Debit,
        }
    }

    /// Maps `r` with its record amount positive and negative: both must give the same voucher.
    fn map_either_sign(d: &MappingDocument, r: AccountingRecord) -> Proposal {
        let total = r.amount.amount.abs();
        let positive = map_record(d, &with_amount(r.clone(), &total.to_string())).unwrap();
        let negative = map_record(d, &with_amount(r, &(-total).to_string())).unwrap();
        assert_eq!(positive, negative, "the amount's sign changes nothing when type and lines agree");
        assert!(positive.is_balanced());
        positive
    }

    /// The card purchase's lines as a refund of `amount`: reversed (liability DEBIT first, coded line CREDIT),
    /// or shaped like the purchase (coded line DEBIT, liability CREDIT).
    fn card_refund(reversed: bool, amount: &str) -> AccountingRecord {
        let coded = |side| {
            line(
                "accrli_e",
                side,
                amount,
                "USD",
                vec![gl(Some("6500 Travel"), None), field("Department", "Engineering")],
            )
        };
        let lines = if reversed {
            vec![line("accrli_f", "DEBIT", amount, "USD", vec![]), coded("CREDIT")]
        } else {
            vec![coded("DEBIT"), line("accrli_f", "CREDIT", amount, "USD", vec![])]
        };
        record("CARD_EXPENSE_REFUND", "CARD", lines)
    }

    #[test]
    fn a_card_refund_in_either_shape_debits_the_card_liability_and_credits_the_expense() {
        let expense = ("6500", "B=200".to_owned(), Side::Credit, dec("42"));
        let liability = ("2410", String::new(), Side::Debit, dec("42"));

        // Shape 1: Brex reversed the sides itself.
        let p = map_either_sign(&example(), card_refund(true, "42.00"));
        assert_eq!(full(&p), vec![liability.clone(), expense.clone()]);

        // Shape 2: shaped like the purchase; every row is flipped.
        let p = map_either_sign(&example(), card_refund(false, "42.00"));
        assert_eq!(full(&p), vec![expense, liability]);
        assert!(p.rows.iter().all(|r| r.currency.as_str() == "USD" && r.currency_rate.is_none()));
        assert_eq!(p.rows[0].text, "Delta Flight to SFO / Ada Lovelace");
        assert_eq!(p.text, "Brex CARD_EXPENSE_REFUND accr_1 Delta");

        // The same code parts as the purchase: the purchase's rows, sides swapped.
        let mut purchase = card_refund(false, "42.00");
        purchase.record_type = "CARD_EXPENSE_POST".into();
        let bought = map_record(&example(), &purchase).unwrap();
        let swapped: Vec<_> = full(&bought).into_iter().map(|(a, c, s, m)| (a, c, flip(s), m)).collect();
        assert_eq!(full(&p), swapped);
    }

    #[test]
    fn side_rules_see_a_refund_on_its_booked_sides_in_either_shape() {
        // `side = "DEBIT"` on a refund means its funding row, however Brex laid the lines out.
        let d = doc("[[rule]]\nwhen = { field = \"GL Account\", value = \"6500*\" }\nset = { account = \"6500\" }\n\
             [[rule]]\nwhen = { record_type = \"*_REFUND\", side = \"DEBIT\" }\nset = { account = \"2499\", code_e = \"R\" }");
        for reversed in [true, false] {
            let p = map_either_sign(&d, card_refund(reversed, "42.00"));
            let mut rows = full(&p);
            rows.sort_by_key(|r| r.0);
            assert_eq!(
                rows,
                vec![
                    ("2499", "E=R".to_owned(), Side::Debit, dec("42")),
                    ("6500", String::new(), Side::Credit, dec("42"))
                ],
                "reversed = {reversed}"
            );
        }
    }

    #[test]
    fn a_canadian_card_refund_shaped_like_its_purchase_keeps_company_20_and_2415() {
        let r = record(
            "CARD_EXPENSE_REFUND",
            "CARD",
            vec![
                line(
                    "accrli_1",
                    "DEBIT",
                    "250.00",
                    "CAD",
                    vec![
                        gl(Some("6600 Software"), Some("6600")),
                        field("Department", "Marketing"),
                        field("Entity", "Acme Canada"),
                    ],
                ),
                line("accrli_2", "CREDIT", "250.00", "CAD", vec![]),
            ],
        );
        let p = map_either_sign(&example(), r);
        assert_eq!(p.company.as_str(), "20");
        assert_eq!(
            full(&p),
            vec![
                ("6600", "B=300".to_owned(), Side::Credit, dec("250")),
                ("2415", String::new(), Side::Debit, dec("250"))
            ]
        );
        assert!(p.rows.iter().all(|r| r.currency.as_str() == "CAD"));
    }

    #[test]
    fn a_reimbursement_refund_in_either_shape_debits_the_employee_payable() {
        let coded = |side| line("accrli_e", side, "58.20", "USD", vec![gl(Some("6510 Meals"), None)]);
        let reversed = record(
            "REIMBURSEMENT_EXPENSE_REFUND",
            "REIMBURSEMENT",
            vec![line("accrli_f", "DEBIT", "58.20", "USD", vec![]), coded("CREDIT")],
        );
        let like_purchase = record(
            "REIMBURSEMENT_EXPENSE_REFUND",
            "REIMBURSEMENT",
            vec![coded("DEBIT"), line("accrli_f", "CREDIT", "58.20", "USD", vec![])],
        );
        let expense = ("6510", "B=200".to_owned(), Side::Credit, dec("58.20"));
        let payable = ("2420", String::new(), Side::Debit, dec("58.20"));
        assert_eq!(full(&map_either_sign(&example(), reversed)), vec![payable.clone(), expense.clone()]);
        assert_eq!(full(&map_either_sign(&example(), like_purchase)), vec![expense, payable]);
    }

    #[test]
    fn a_split_refund_in_either_shape_credits_each_expense_line() {
        let coded = |side| {
            vec![
                line(
                    "accrli_1",
                    side,
                    "100.10",
                    "USD",
                    vec![gl(Some("6500 Travel"), None), field("Department", "Engineering")],
                ),
                line(
                    "accrli_2",
                    side,
                    "71.65",
                    "USD",
                    vec![gl(Some("6510 Meals"), Some("6510")), field("Department", "Sales")],
                ),
            ]
        };
        let liability = |side| line("accrli_3", side, "171.75", "USD", vec![]);
        let mut reversed = vec![liability("DEBIT")];
        reversed.extend(coded("CREDIT"));
        let mut like_purchase = coded("DEBIT");
        like_purchase.push(liability("CREDIT"));

        let travel = ("6500", "B=200".to_owned(), Side::Credit, dec("100.10"));
        let meals = ("6510", "B=100".to_owned(), Side::Credit, dec("71.65"));
        let card = ("2410", String::new(), Side::Debit, dec("171.75"));
        let p = map_either_sign(&example(), record("CARD_EXPENSE_REFUND", "CARD", reversed));
        assert_eq!(full(&p), vec![card.clone(), travel.clone(), meals.clone()]);
        let p = map_either_sign(&example(), record("CARD_EXPENSE_REFUND", "CARD", like_purchase));
        assert_eq!(full(&p), vec![travel, meals, card]);
    }

    #[test]
    fn a_foreign_refund_in_either_shape_stays_in_the_billed_currency_and_shows_the_original() {
        let coded = |side| {
            with_original(line("accrli_e", side, "99.90", "USD", vec![gl(Some("6500 Travel"), None)]), "92.5", "EUR")
        };
        let funding = |side| with_original(line("accrli_f", side, "99.90", "USD", vec![]), "92.5", "EUR");
        for (reversed, lines) in
            [(true, vec![funding("DEBIT"), coded("CREDIT")]), (false, vec![coded("DEBIT"), funding("CREDIT")])]
        {
            let mut r = record("CARD_EXPENSE_REFUND", "CARD", lines);
            // A refund's record-level original may be negative like its amount.
            r.original_amount = Some(Money::new(dec("-92.5"), CurrencyCode::parse("EUR").unwrap()));
            let p = map_either_sign(&example(), r);
            let mut rows = full(&p);
            rows.sort_by_key(|r| r.0);
            assert_eq!(
                rows,
                vec![
                    ("2410", String::new(), Side::Debit, dec("99.90")),
                    ("6500", "B=200".to_owned(), Side::Credit, dec("99.90"))
                ],
                "reversed = {reversed}"
            );
            assert!(p.rows.iter().all(|r| r.currency.as_str() == "USD" && r.currency_rate.is_none()));
            assert!(
                p.rows.iter().all(|r| r.text == "Delta Flight to SFO / Ada Lovelace (orig 92.50 EUR)"),
                "{:?}",
                p.rows
            );
        }

        // Only the record carries the (negative) original: shown as a magnitude, the side says the direction.
        let mut rec_only = card_refund(false, "1.34");
        rec_only.original_amount = Some(Money::new(dec("-200"), CurrencyCode::parse("JPY").unwrap()));
        let p = map_either_sign(&example(), rec_only);
        assert!(p.rows.iter().all(|r| r.text.ends_with("(orig 200 JPY)")), "{:?}", p.rows);
    }

    #[test]
    fn an_uncoded_refund_is_taken_as_already_reversed() {
        // No line carries coding (an expense without a category looks like this): nothing says the lines are
        // shaped like the purchase, so Brex's sides stand and the CREDIT line is the expense.
        let d = doc("[[rule]]\nwhen = { record_type = \"CARD_EXPENSE_REFUND\" }\nset = { account = \"6500\" }");
        let r = record(
            "CARD_EXPENSE_REFUND",
            "CARD",
            vec![line("accrli_1", "DEBIT", "5", "USD", vec![]), line("accrli_2", "CREDIT", "5", "USD", vec![])],
        );
        let p = map_either_sign(&d, r);
        assert_eq!(
            full(&p),
            vec![("2410", String::new(), Side::Debit, dec("5")), ("6500", String::new(), Side::Credit, dec("5"))]
        );
    }

    #[test]
    fn a_flipped_refund_without_an_account_names_its_debit_line() {
        let r = record(
            "CARD_EXPENSE_REFUND",
            "CARD",
            vec![
                line("accrli_1", "DEBIT", "42", "USD", vec![field("Department", "Sales")]),
                line("accrli_2", "CREDIT", "42", "USD", vec![]),
            ],
        );
        let err = map_record(&example(), &r).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record accr_1 line 1 (accrli_1, DEBIT 42.00 USD): no GL account — the line carries no \"GL Account\" \
             field and no rule sets an account (this refund's lines are shaped like its purchase, so its DEBIT \
             lines carry the expense)"
        );
    }

    #[test]
    fn records_whose_type_sign_and_sides_contradict_are_refused_naming_what_contradicts() {
        let purchase = |reversed: bool, amount: &str| {
            let mut r = card_refund(reversed, "42.00");
            r.record_type = "CARD_EXPENSE_POST".into();
            with_amount(r, amount)
        };

        // A purchase type with a refund's sign, whichever way its lines lie.
        let err = map_record(&example(), &purchase(false, "-42.00")).unwrap_err();
        assert!(
            matches!(&err, MappingError::NegativeAmountNotRefund { record_type, .. } if record_type == "CARD_EXPENSE_POST")
        );
        assert_eq!(
            err.to_string(),
            "record accr_1: record type CARD_EXPENSE_POST is not a refund, but the record amount -42.00 USD is \
             negative (coded lines: line 1 (accrli_e, DEBIT 42.00 USD); uncoded lines: line 2 (accrli_f, CREDIT \
             42.00 USD)) — a negative amount needs a *_REFUND record type"
        );
        assert_eq!(err.disposition(), Disposition::Permanent);
        let err = map_record(&example(), &purchase(true, "-42")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record accr_1: record type CARD_EXPENSE_POST is not a refund, but the record amount -42.00 USD is \
             negative (coded lines: line 2 (accrli_e, CREDIT 42.00 USD); uncoded lines: line 1 (accrli_f, DEBIT \
             42.00 USD)) — a negative amount needs a *_REFUND record type"
        );
        // Any other non-refund type too: with a negative amount its direction cannot be known.
        let mut payment = purchase(false, "-42.00");
        payment.record_type = "CARD_PAYMENT".into();
        assert!(matches!(map_record(&example(), &payment), Err(MappingError::NegativeAmountNotRefund { .. })));

        // A purchase type and a positive amount, but a refund's sides.
        let err = map_record(&example(), &purchase(true, "42.00")).unwrap_err();
        assert!(matches!(err, MappingError::PurchaseLinesReversed { .. }));
        assert_eq!(
            err.to_string(),
            "record accr_1: record type CARD_EXPENSE_POST and the record amount 42.00 USD say purchase, but the \
             lines have a refund's sides (coded lines: line 2 (accrli_e, CREDIT 42.00 USD); uncoded lines: line 1 \
             (accrli_f, DEBIT 42.00 USD)) — a purchase's coded lines are DEBIT"
        );
        assert_eq!(err.disposition(), Disposition::Permanent);
        let mut reimbursement = purchase(true, "42.00");
        reimbursement.record_type = "REIMBURSEMENT_EXPENSE_POST".into();
        assert!(matches!(map_record(&example(), &reimbursement), Err(MappingError::PurchaseLinesReversed { .. })));

        // The record amount is not what the lines add up to, in either sign.
        let err = map_record(&example(), &with_amount(card_refund(false, "42.00"), "-40")).unwrap_err();
        assert!(matches!(err, MappingError::AmountMismatch { .. }));
        assert_eq!(
            err.to_string(),
            "record accr_1: the record amount -40.00 USD does not match its lines, which add up to 42.00 USD on \
             each side (DEBIT and CREDIT)"
        );
        assert_eq!(err.disposition(), Disposition::Permanent);
        let err = map_record(&example(), &purchase(false, "0")).unwrap_err().to_string();
        assert!(err.contains("the record amount 0.00 USD does not match its lines"), "{err}");
    }

    #[test]
    fn lines_beyond_the_decimal_range_are_refused_not_a_panic() {
        let mut r = card_purchase();
        r.line_items.push(r.line_items[0].clone());
        for l in &mut r.line_items {
            l.amount.amount = Decimal::MAX;
        }
        let err = map_record(&example(), &r).unwrap_err();
        assert!(matches!(err, MappingError::AmountOverflow { .. }), "{err}");
    }

    #[test]
    fn reimbursements_credit_the_employee_payable() {
        let r = record(
            "REIMBURSEMENT_EXPENSE_POST",
            "REIMBURSEMENT",
            vec![
                line("accrli_1", "DEBIT", "58.20", "USD", vec![gl(Some("6510 Meals"), None)]),
                line("accrli_2", "CREDIT", "58.20", "USD", vec![]),
            ],
        );
        let p = map_record(&example(), &r).unwrap();
        assert_eq!(accounts(&p), vec![("6510", Side::Debit, dec("58.20")), ("2420", Side::Credit, dec("58.20"))]);
        assert_eq!(code_b(&p.rows[0]), Some("200"), "user department Engineering");

        // Without a reimbursement account the card liability is the fallback.
        let plain = doc("[[rule]]\nwhen = { field = \"GL Account\", value = \"6510*\" }\nset = { account = \"6510\" }");
        assert_eq!(map_record(&plain, &r).unwrap().rows[1].account.as_str(), "2410");

        // A Canadian reimbursement: company 20, still the employee payable (the 2415 rule is for cards).
        let ca = record(
            "REIMBURSEMENT_EXPENSE_POST",
            "REIMBURSEMENT",
            vec![
                line(
                    "accrli_1",
                    "DEBIT",
                    "58.20",
                    "CAD",
                    vec![gl(Some("6510 Meals"), None), field("Entity", "Acme Canada")],
                ),
                line("accrli_2", "CREDIT", "58.20", "CAD", vec![]),
            ],
        );
        let p = map_record(&example(), &ca).unwrap();
        assert_eq!(p.company.as_str(), "20");
        assert_eq!(p.rows[1].account.as_str(), "2420");
    }

    #[test]
    fn the_canadian_entity_books_in_company_20_against_2415() {
        let r = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line(
                    "accrli_1",
                    "DEBIT",
                    "250.00",
                    "CAD",
                    vec![
                        gl(Some("6600 Software"), Some("6600")),
                        field("Department", "Marketing"),
                        field("Entity", "Acme Canada"),
                    ],
                ),
                line("accrli_2", "CREDIT", "250.00", "CAD", vec![]),
            ],
        );
        let p = map_record(&example(), &r).unwrap();
        assert_eq!(p.company.as_str(), "20");
        assert_eq!(accounts(&p), vec![("6600", Side::Debit, dec("250")), ("2415", Side::Credit, dec("250"))]);
        assert_eq!(code_b(&p.rows[0]), Some("300"));
        assert!(p.rows.iter().all(|r| r.currency.as_str() == "CAD"));
    }

    #[test]
    fn foreign_purchases_stay_in_the_billed_currency_and_show_the_original() {
        let r = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                with_original(
                    line("accrli_1", "DEBIT", "99.90", "USD", vec![gl(Some("6500 Travel"), None)]),
                    "92.5",
                    "EUR",
                ),
                with_original(line("accrli_2", "CREDIT", "99.90", "USD", vec![]), "92.5", "EUR"),
            ],
        );
        let p = map_record(&example(), &r).unwrap();
        assert!(p.is_balanced());
        assert!(p.rows.iter().all(|r| r.currency.as_str() == "USD" && r.currency_rate.is_none()));
        assert_eq!(p.rows[0].amount, dec("99.90"));
        assert_eq!(p.rows[0].text, "Delta Flight to SFO / Ada Lovelace (orig 92.50 EUR)");

        // Same-currency originals (Brex fills them in for every line) add nothing.
        let home = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                with_original(line("accrli_1", "DEBIT", "10", "USD", vec![gl(Some("6500 Travel"), None)]), "10", "USD"),
                line("accrli_2", "CREDIT", "10", "USD", vec![]),
            ],
        );
        assert!(!map_record(&example(), &home).unwrap().rows[0].text.contains("orig"));

        // Only the record carries the original: lines with the whole amount show it.
        let mut rec_only = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line("accrli_1", "DEBIT", "1.34", "USD", vec![gl(Some("6500 Travel"), None)]),
                line("accrli_2", "CREDIT", "1.34", "USD", vec![]),
            ],
        );
        rec_only.original_amount = Some(Money::new(dec("200"), CurrencyCode::parse("JPY").unwrap()));
        let p = map_record(&example(), &rec_only).unwrap();
        assert!(p.rows.iter().all(|r| r.text.ends_with("(orig 200 JPY)")), "{:?}", p.rows);
    }

    #[test]
    fn an_uncoded_expense_line_is_an_error_naming_the_line() {
        let unknown = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line("accrli_9", "DEBIT", "42", "USD", vec![gl(Some("9999 Unknown"), None)]),
                line("accrli_10", "CREDIT", "42", "USD", vec![]),
            ],
        );
        let err = map_record(&example(), &unknown).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record accr_1 line 1 (accrli_9, DEBIT 42.00 USD): no GL account — no rule matched field \"GL Account\" = \"9999 Unknown\""
        );
        assert_eq!(err.disposition(), Disposition::Permanent);

        let empty = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line("accrli_9", "DEBIT", "42", "USD", vec![gl(None, None)]),
                line("accrli_10", "CREDIT", "42", "USD", vec![]),
            ],
        );
        let err = map_record(&example(), &empty).unwrap_err().to_string();
        assert!(err.ends_with("its \"GL Account\" field has no value (not coded in Brex)"), "{err}");

        let absent = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line("accrli_9", "DEBIT", "42", "USD", vec![field("Department", "Sales")]),
                line("accrli_10", "CREDIT", "42", "USD", vec![]),
            ],
        );
        let err = map_record(&example(), &absent).unwrap_err();
        assert!(
            matches!(&err, MappingError::NoAccount { line, .. } if line.index == 1 && line.id.as_deref() == Some("accrli_9"))
        );
        assert!(err.to_string().contains("carries no \"GL Account\" field"), "{err}");
    }

    #[test]
    fn lines_in_two_entities_are_a_company_conflict() {
        let r = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line(
                    "accrli_1",
                    "DEBIT",
                    "10",
                    "USD",
                    vec![gl(Some("6500 Travel"), None), field("Entity", "Acme Inc")],
                ),
                line(
                    "accrli_2",
                    "DEBIT",
                    "5",
                    "USD",
                    vec![gl(Some("6500 Travel"), None), field("Entity", "Acme Canada")],
                ),
                line("accrli_3", "CREDIT", "15", "USD", vec![]),
            ],
        );
        let doc = example();
        let err = map_record(&doc, &r).unwrap_err();
        let MappingError::CompanyConflict { conflict, .. } = &err else {
            panic!("expected a company conflict, got {err}");
        };
        // The example's entity rules, wherever they sit in the document.
        let company_rule = |company: &str| {
            doc.rules.iter().find(|r| r.set.company.as_ref().is_some_and(|c| c.as_str() == company)).unwrap().number
        };
        let (us, ca) = (company_rule("10"), company_rule("20"));
        assert_eq!((conflict.first.as_str(), conflict.second.as_str()), ("10", "20"));
        assert_eq!((conflict.first_line.index, conflict.second_line.index), (1, 2));
        assert_eq!((conflict.first_rule, conflict.second_rule), (us, ca));
        let msg = err.to_string();
        assert!(msg.contains(&format!("line 1 (accrli_1, DEBIT 10.00 USD) → 10 (rule #{us})")), "{msg}");
        assert!(msg.contains(&format!("line 2 (accrli_2, DEBIT 5.00 USD) → 20 (rule #{ca})")), "{msg}");
        assert_eq!(err.disposition(), Disposition::Permanent);
    }

    #[test]
    fn conflicting_credit_accounts_are_refused() {
        let d = doc("[passthrough]\ngl_account_remote_id = true\n\
             [[rule]]\nwhen = { field = \"Entity\", value = \"A\" }\nset = { credit_account = \"2410\" }\n\
             [[rule]]\nwhen = { field = \"Entity\", value = \"B\" }\nset = { credit_account = \"2415\" }");
        let r = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line("accrli_1", "DEBIT", "1", "USD", vec![gl(None, Some("6500")), field("Entity", "A")]),
                line("accrli_2", "DEBIT", "1", "USD", vec![gl(None, Some("6500")), field("Entity", "B")]),
                line("accrli_3", "CREDIT", "2", "USD", vec![]),
            ],
        );
        assert!(matches!(map_record(&d, &r), Err(MappingError::CreditAccountConflict { .. })));
    }

    #[test]
    fn row_text_is_cut_to_200_chars_on_char_boundaries() {
        let mut r = card_purchase();
        r.memo = Some("é🚀".repeat(150));
        let p = map_record(&example(), &r).unwrap();
        assert_eq!(p.rows[0].text.chars().count(), MAX_ROW_TEXT);
        assert!(p.rows[0].text.starts_with("Delta é🚀"));

        // With a foreign original the amount survives the cut.
        let mut foreign = card_purchase();
        foreign.memo = Some("ü".repeat(400));
        foreign.line_items[0].original_amount = Some(Money::new(dec("92.5"), CurrencyCode::parse("EUR").unwrap()));
        let p = map_record(&example(), &foreign).unwrap();
        assert!(p.rows[0].text.chars().count() <= MAX_ROW_TEXT);
        assert!(p.rows[0].text.ends_with("üü (orig 92.50 EUR)"), "{}", p.rows[0].text);

        let d = doc(
            "voucher_text = \"{memo}\"\n[[rule]]\nwhen = { field = \"GL Account\", value = \"*\" }\nset = { account = \"6500\" }",
        );
        let mut long = card_purchase();
        long.memo = Some("ß".repeat(250));
        assert_eq!(map_record(&d, &long).unwrap().text.chars().count(), MAX_VOUCHER_TEXT);
    }

    #[test]
    fn passthrough_takes_the_remote_id_and_rules_override_it() {
        let r = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line("accrli_1", "DEBIT", "20", "USD", vec![gl(Some("Software subscriptions"), Some("6600"))]),
                line("accrli_2", "CREDIT", "20", "USD", vec![]),
            ],
        );
        let on = doc("[passthrough]\ngl_account_remote_id = true");
        assert_eq!(map_record(&on, &r).unwrap().rows[0].account.as_str(), "6600");

        let off = doc("");
        let err = map_record(&off, &r).unwrap_err().to_string();
        assert!(err.contains("\"Software subscriptions\"") && err.contains("gl_account_remote_id is off"), "{err}");

        let overridden = doc("[passthrough]\ngl_account_remote_id = true\n\
             [[rule]]\nwhen = { field = \"GL Account\", value = \"6600\" }\nset = { account = \"6700\" }");
        assert_eq!(map_record(&overridden, &r).unwrap().rows[0].account.as_str(), "6700");

        // A remote id IFS could never accept is an error, unless a rule supplies the account.
        let bad = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line("accrli_1", "DEBIT", "20", "USD", vec![gl(Some("Travel"), Some("65 00"))]),
                line("accrli_2", "CREDIT", "20", "USD", vec![]),
            ],
        );
        let err = map_record(&on, &bad).unwrap_err();
        assert!(matches!(&err, MappingError::InvalidRemoteAccount { value, .. } if value == "65 00"), "{err}");
        let rescued = doc("[passthrough]\ngl_account_remote_id = true\n\
             [[rule]]\nwhen = { field = \"GL Account\", value = \"Travel\" }\nset = { account = \"6500\" }");
        assert_eq!(map_record(&rescued, &bad).unwrap().rows[0].account.as_str(), "6500");
    }

    #[test]
    fn passthrough_code_parts_take_the_remote_value_and_rules_override_them() {
        let cc = |remote: &str| {
            json!({"brex_field_id": "extended_field_cc", "remote_field_id": "CODE_B", "brex_field_value_id": "efo_cc",
                   "remote_field_value_id": remote, "field_name": "Cost Center", "field_value_name": "Whatever",
                   "type": "IDENTIFIER"})
        };
        let r = |remote: &str| {
            record(
                "CARD_EXPENSE_POST",
                "CARD",
                vec![
                    line("accrli_1", "DEBIT", "20", "USD", vec![gl(Some("6600 Software"), Some("6600")), cc(remote)]),
                    line("accrli_2", "CREDIT", "20", "USD", vec![]),
                ],
            )
        };
        let on = doc("[passthrough]\ngl_account_remote_id = true\ncode_parts = { code_b = \"Cost Center\" }");
        let p = map_record(&on, &r("CC000007")).unwrap();
        assert_eq!((p.rows[0].account.as_str(), code_b(&p.rows[0])), ("6600", Some("CC000007")));
        assert_eq!(p.rows[1].account.as_str(), "2410");
        assert!(p.rows[1].code_parts.is_empty(), "the funding line carries no field, so no code part");

        // Without code_parts (every document written before them) the field is only a field.
        let old = doc("[passthrough]\ngl_account_remote_id = true");
        assert_eq!(code_b(&map_record(&old, &r("CC000007")).unwrap().rows[0]), None);

        let overridden = doc("[passthrough]\ngl_account_remote_id = true\ncode_parts = { code_b = \"Cost Center\" }\n\
             [[rule]]\nwhen = { department = \"Engineering\" }\nset = { code_b = \"200\" }");
        assert_eq!(code_b(&map_record(&overridden, &r("CC000007")).unwrap().rows[0]), Some("200"));

        // A remote value IFS could never accept is an error naming it, unless a rule sets the part.
        let err = map_record(&on, &r("CC 7")).unwrap_err();
        assert!(
            matches!(&err, MappingError::InvalidRemoteCodePart { part: CodePart::B, value, .. } if value == "CC 7"),
            "{err}"
        );
        assert!(err.to_string().contains("CODE_B remote id \"CC 7\""), "{err}");
        assert_eq!(code_b(&map_record(&overridden, &r("CC 7")).unwrap().rows[0]), Some("200"));
    }

    #[test]
    fn later_rules_override_earlier_ones() {
        let d = doc(
            "[[rule]]\nwhen = { field = \"GL Account\", value = \"6500*\" }\nset = { account = \"6500\", code_b = \"100\", code_c = \"P100\" }\n\
             [[rule]]\nwhen = { department = \"engineering\" }\nset = { code_b = \"200\" }\n\
             [[rule]]\nwhen = { user_email = \"*@acme.example\", record_type = \"CARD_*\" }\nset = { account = \"7500\" }\n\
             [[rule]]\nwhen = { currency = \"EUR\" }\nset = { account = \"7900\" }",
        );
        let p = map_record(&d, &card_purchase()).unwrap();
        assert_eq!(p.rows[0].account.as_str(), "7500", "rule 3 overrides rule 1; rule 4 does not match");
        assert_eq!(code_b(&p.rows[0]), Some("200"));
        assert_eq!(p.rows[0].code_parts.get(&CodePart::C).map(CodePartValue::as_str), Some("P100"), "parts merge");

        // Swap the order: now the GL rule comes last and wins.
        let swapped = doc("[[rule]]\nwhen = { source_type = \"CARD\" }\nset = { account = \"7500\" }\n\
             [[rule]]\nwhen = { field = \"GL Account\", value = \"6500 Travel\" }\nset = { account = \"6500\" }");
        assert_eq!(map_record(&swapped, &card_purchase()).unwrap().rows[0].account.as_str(), "6500");
    }

    #[test]
    fn merchant_and_user_conditions_match_the_vendor_and_the_user() {
        let d = doc("[[rule]]\nwhen = { merchant = \"delta*\" }\nset = { account = \"6510\" }\n\
             [[rule]]\nwhen = { user = \"Ada Lovelace\" }\nset = { code_b = \"300\" }\n\
             [[rule]]\nwhen = { user = \"cuuser_2\" }\nset = { code_c = \"P9\" }");
        let p = map_record(&d, &card_purchase()).unwrap();
        assert_eq!(p.rows[0].account.as_str(), "6510");
        assert_eq!(code_b(&p.rows[0]), Some("300"));
        assert!(!p.rows[0].code_parts.contains_key(&CodePart::C), "another user's rule does not apply");
        let by_id = doc("[[rule]]\nwhen = { user = \"CUUSER_1\", merchant = \"Delta\" }\nset = { account = \"6520\" }");
        assert_eq!(map_record(&by_id, &card_purchase()).unwrap().rows[0].account.as_str(), "6520");
    }

    #[test]
    fn record_level_rules_reach_only_expense_lines_and_side_rules_reach_any() {
        let d = doc("[[rule]]\nwhen = { source_type = \"CARD\" }\nset = { account = \"6500\", code_d = \"X\" }\n\
             [[rule]]\nwhen = { record_type = \"CARD_EXPENSE_POST\", side = \"CREDIT\" }\nset = { account = \"1910\", code_e = \"Y\" }");
        let p = map_record(&d, &card_purchase()).unwrap();
        assert_eq!(accounts(&p), vec![("6500", Side::Debit, dec("171.75")), ("1910", Side::Credit, dec("171.75"))]);
        assert_eq!(p.rows[0].code_parts.keys().collect::<Vec<_>>(), vec![&CodePart::D]);
        assert_eq!(p.rows[1].code_parts.keys().collect::<Vec<_>>(), vec![&CodePart::E]);
    }

    #[test]
    fn category_and_field_placeholders_read_the_line() {
        let d = doc("text = \"{category}|{department}|{field:Entity}|{type}|{source_type}|{date}|{user_email}\"\n\
             voucher_text = \"{field:Entity} {department}\"\n\
             [[rule]]\nwhen = { category = \"Air*\" }\nset = { account = \"6500\" }");
        let mut r = card_purchase();
        r.line_items[0].accounting_field_values.push(serde_json::from_value(field("Category", "Airfare")).unwrap());
        r.line_items[0].accounting_field_values.push(serde_json::from_value(field("Entity", "Acme Inc")).unwrap());
        let p = map_record(&d, &r).unwrap();
        assert_eq!(p.rows[0].account.as_str(), "6500");
        assert_eq!(
            p.rows[0].text,
            "Airfare|Engineering|Acme Inc|CARD_EXPENSE_POST|CARD|2026-06-11|ada.lovelace@acme.example"
        );
        assert_eq!(p.text, "Acme Inc Engineering");
    }

    #[test]
    fn the_department_falls_back_to_the_line_field() {
        let mut r = card_purchase();
        r.user = None;
        r.line_items[0].accounting_field_values[1] = serde_json::from_value(field("Department", "Finance")).unwrap();
        let d = doc("[[rule]]\nwhen = { department = \"Finance\" }\nset = { account = \"6500\", code_b = \"400\" }");
        let p = map_record(&d, &r).unwrap();
        assert_eq!(code_b(&p.rows[0]), Some("400"));
    }

    #[test]
    fn malformed_records_are_refused() {
        let unbalanced = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line("accrli_1", "DEBIT", "10.01", "USD", vec![gl(Some("6500 Travel"), None)]),
                line("accrli_2", "CREDIT", "10", "USD", vec![]),
            ],
        );
        let err = map_record(&example(), &unbalanced).unwrap_err();
        assert_eq!(err.to_string(), "record accr_1: lines do not balance in USD (debits 10.01, credits 10.00)");

        let mixed = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line("accrli_1", "DEBIT", "10", "USD", vec![gl(Some("6500 Travel"), None)]),
                line("accrli_2", "CREDIT", "10", "USD", vec![]),
                line("accrli_3", "DEBIT", "5", "CAD", vec![gl(Some("6500 Travel"), None)]),
                line("accrli_4", "CREDIT", "5", "CAD", vec![]),
            ],
        );
        assert!(
            matches!(map_record(&example(), &mixed), Err(MappingError::MixedCurrencies { currencies, .. }) if currencies.len() == 2)
        );

        let mut none = card_purchase();
        none.line_items.clear();
        assert!(matches!(map_record(&example(), &none), Err(MappingError::NoLines { .. })));

        let zero = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![line("accrli_1", "DEBIT", "0", "USD", vec![]), line("accrli_2", "CREDIT", "0.00", "USD", vec![])],
        );
        assert!(matches!(map_record(&example(), &zero), Err(MappingError::NoLines { .. })));

        let negative = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![line("accrli_1", "DEBIT", "-5", "USD", vec![]), line("accrli_2", "CREDIT", "-5", "USD", vec![])],
        );
        let err = map_record(&example(), &negative).unwrap_err();
        assert!(matches!(&err, MappingError::NegativeAmount { line, .. } if line.index == 1), "{err}");
    }

    #[test]
    fn zero_lines_are_skipped_but_numbering_follows_brex() {
        let r = record(
            "CARD_EXPENSE_POST",
            "CARD",
            vec![
                line("accrli_0", "DEBIT", "0", "USD", vec![]),
                line("accrli_1", "DEBIT", "3", "USD", vec![gl(Some("nope"), None)]),
                line("accrli_2", "CREDIT", "3", "USD", vec![]),
            ],
        );
        let err = map_record(&example(), &r).unwrap_err();
        assert!(err.to_string().contains("line 2 (accrli_1, DEBIT 3.00 USD)"), "{err}");
    }
}
