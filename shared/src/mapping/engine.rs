//! Brex accounting record → posting proposal (one balanced voucher). Pure: no I/O, so the same record and
//! document always give the same proposal or the same error.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::document::{Condition, MappingDocument, Rule};
use super::error::{LineRef, MappingError, show_amount};
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
        Condition::Side(side) => line.side == *side,
    }
}

/// Whether a purchase's cost sits on this line: DEBIT lines normally, CREDIT lines on refunds (Brex sends a
/// refund's sides already reversed). The other lines are the funding side (card liability, employee payable).
fn is_expense_line(record: &AccountingRecord, line: &LineItem) -> bool {
    (line.side == LineSide::Debit) != record.is_refund()
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
    bad_remote: Option<(String, String)>,
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
            Err(e) => t.bad_remote = Some((remote.to_owned(), e.reason.to_owned())),
        }
    }
    for rule in doc.rules.iter().filter(|r| rule_applies(r, facts, record, line)) {
        let set = &rule.set;
        if let Some(account) = &set.account {
            t.account = Some(account.clone());
        }
        t.code_parts.extend(set.code_parts.iter().map(|(k, v)| (*k, v.clone())));
        if let Some(company) = &set.company {
            t.company = Some((company.clone(), rule.number));
        }
        if let Some(credit) = &set.credit_account {
            t.credit_account = Some((credit.clone(), rule.number));
        }
    }
    t
}

/// One value all lines that set it agree on; `Err` carries the first two that disagree.
type Agreement<T> = Result<Option<T>, ((T, LineRef, usize), (T, LineRef, usize))>;

fn agree<T: Clone + PartialEq>(picks: impl Iterator<Item = (T, LineRef, usize)>) -> Agreement<T> {
    let mut first: Option<(T, LineRef, usize)> = None;
    for pick in picks {
        match &first {
            None => first = Some(pick),
            Some(seen) if seen.0 != pick.0 => return Err((seen.clone(), pick)),
            Some(_) => {}
        }
    }
    Ok(first.map(|f| f.0))
}

/// Why an expense line ended without an account, in the bookkeeper's terms.
fn missing_account_detail(doc: &MappingDocument, record: &AccountingRecord, line: &LineItem) -> String {
    let gl = line.remote_field(GL_ACCOUNT_REMOTE_ID).or_else(|| line.field(GL_ACCOUNT_FIELD));
    let refund_note = if record.is_refund() { " (on a refund the CREDIT lines carry the expense)" } else { "" };
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
    match line.original_amount {
        Some(original) => Some(original).filter(differs),
        // Lines without their own original take the record's when they carry the record's whole amount.
        None => record.original_amount.filter(|o| differs(o) && line.amount.amount == record.amount.amount.abs()),
    }
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
            let full = user.map(|u| {
                format!("{} {}", u.first_name.as_deref().unwrap_or(""), u.last_name.as_deref().unwrap_or(""))
            });
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

/// Checks debits = credits per currency, and that there is only one currency.
fn check_balance(record: &ReferenceNumber, lines: &[(usize, &LineItem)]) -> Result<CurrencyCode, MappingError> {
    let mut totals: BTreeMap<CurrencyCode, (Decimal, Decimal)> = BTreeMap::new();
    for (_, line) in lines {
        let entry = totals.entry(line.amount.currency).or_default();
        match line.side {
            LineSide::Debit => entry.0 += line.amount.amount,
            LineSide::Credit => entry.1 += line.amount.amount,
        }
    }
    if let Some((currency, (debits, credits))) = totals.iter().find(|(_, (d, c))| d != c) {
        return Err(MappingError::Unbalanced {
            record: record.clone(),
            currency: *currency,
            debits: show_amount(*debits, *currency),
            credits: show_amount(*credits, *currency),
        });
    }
    let mut currencies = totals.into_keys();
    match (currencies.next(), currencies.next()) {
        (Some(only), None) => Ok(only),
        (Some(first), Some(second)) => Err(MappingError::MixedCurrencies {
            record: record.clone(),
            currencies: [first, second].into_iter().chain(currencies).collect(),
        }),
        (None, _) => Err(MappingError::NoLines { record: record.clone() }),
    }
}

/// Maps one Brex accounting record to one balanced posting proposal.
///
/// Each non-zero line becomes a row on the side Brex gave it, with its exact amount in its (billed)
/// currency. Accounts come from `[passthrough]` and the rules (rules win); funding-side lines (CREDIT on a
/// purchase, DEBIT on a refund) without one take the credit account. Company and credit account are
/// record-wide: lines that set them must agree. See the module docs for the full semantics.
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
    check_balance(&reference, &lines)?;

    let facts = Facts::of(record);
    let targets: Vec<LineTargets> =
        lines.iter().map(|(_, line)| line_targets(doc, &facts, record, line)).collect();
    let refs: Vec<LineRef> = lines.iter().map(|(i, line)| LineRef::new(*i, line)).collect();

    let company = agree(
        targets.iter().zip(&refs).filter_map(|(t, r)| t.company.clone().map(|(c, rule)| (c, r.clone(), rule))),
    )
    .map_err(|((first, first_line, first_rule), (second, second_line, second_rule))| {
        MappingError::CompanyConflict {
            record: reference.clone(),
            first,
            first_line,
            first_rule,
            second,
            second_line,
            second_rule,
        }
    })?
    .unwrap_or_else(|| doc.company.clone());

    let default_credit = match (record.source_type, &doc.reimbursement_credit_account) {
        (Some(SourceType::Reimbursement), Some(payable)) => payable,
        _ => &doc.credit_account,
    };
    let credit_account = agree(
        targets.iter().zip(&refs).filter_map(|(t, r)| t.credit_account.clone().map(|(a, rule)| (a, r.clone(), rule))),
    )
    .map_err(|((first, first_line, first_rule), (second, second_line, second_rule))| {
        MappingError::CreditAccountConflict {
            record: reference.clone(),
            first,
            first_line,
            first_rule,
            second,
            second_line,
            second_rule,
        }
    })?
    .unwrap_or_else(|| default_credit.clone());

    let mut rows = Vec::with_capacity(lines.len());
    for (((_, line), target), line_ref) in lines.iter().zip(targets).zip(refs) {
        let account = match (target.account, target.bad_remote) {
            (Some(account), _) => account,
            (None, Some((value, reason))) => {
                return Err(MappingError::InvalidRemoteAccount { record: reference, line: line_ref, value, reason });
            }
            (None, None) if !is_expense_line(record, line) => credit_account.clone(),
            (None, None) => {
                let detail = missing_account_detail(doc, record, line);
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

    let text = truncate_chars(&doc.voucher_text.render(|p| placeholder_value(p, record, &facts, None)), MAX_VOUCHER_TEXT);
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
