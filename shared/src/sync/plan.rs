//! The diff between IFS's reference lists and Brex's fields. Pure: the same two snapshots always give the
//! same plan, and a plan made from a Brex that already matches IFS is empty.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::brex::{Field, FieldValue};
use crate::mapping::{MappingDocument, code_part_remote_id};
use crate::proposal::CodePart;

use crate::mapping::GL_ACCOUNT_REMOTE_ID;

/// Where a synced field's values come from in IFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Accounts,
    CodePart(CodePart),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Accounts => f.write_str("IFS accounts"),
            Self::CodePart(part) => write!(f, "IFS {part}"),
        }
    }
}

/// One Brex field the sync owns: found in Brex by `remote_id`, created with `name` when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    pub source: Source,
    pub name: String,
    pub remote_id: String,
}

/// The fields the mapping document reads through `[passthrough]`: accounts when `gl_account_remote_id` is on,
/// and each of `code_parts`. Nothing else is published.
pub fn field_specs(doc: &MappingDocument) -> Vec<FieldSpec> {
    let pass = &doc.passthrough;
    let mut specs = Vec::new();
    if pass.gl_account_remote_id {
        specs.push(FieldSpec {
            source: Source::Accounts,
            name: pass.gl_account_field.clone(),
            remote_id: GL_ACCOUNT_REMOTE_ID.to_owned(),
        });
    }
    for (part, name) in &pass.code_parts {
        specs.push(FieldSpec {
            source: Source::CodePart(*part),
            name: name.clone(),
            remote_id: code_part_remote_id(*part),
        });
    }
    specs
}

/// One IFS code as Brex should show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfsValue {
    pub code: String,
    pub description: String,
    /// Valid today in at least one company: expired, not yet valid and removed codes are disabled in Brex.
    pub active: bool,
}

impl IfsValue {
    /// What bookkeepers pick from in Brex: `6500 Travel` (the code alone when IFS has no description).
    pub fn display(&self) -> String {
        let description = self.description.trim();
        if description.is_empty() { self.code.clone() } else { format!("{} {description}", self.code) }
    }
}

/// One IFS reference list, keyed by code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfsList {
    pub spec: FieldSpec,
    pub values: BTreeMap<String, IfsValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfsSnapshot {
    pub lists: Vec<IfsList>,
}

/// What Brex holds: every field, and the values of the fields the sync owns (by the field's `brex_id`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrexSnapshot {
    pub fields: Vec<Field>,
    pub values: BTreeMap<String, Vec<FieldValue>>,
}

/// Where a list goes in Brex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldTarget {
    Existing {
        brex_id: String,
    },
    /// No field has the list's remote id: create it, then its values.
    Create,
    /// A field of the same name exists without the remote id (made by hand). The sync neither adopts it
    /// (the Fields API cannot set a field's remote id) nor creates a look-alike; the operator decides.
    Conflict {
        brex_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueCreate {
    pub code: String,
    pub value: String,
}

/// A change to an existing value. `before == after` when only the disabled flag changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueChange {
    pub brex_id: String,
    pub code: String,
    pub before: String,
    pub after: String,
    /// Re-enable a value Brex has disabled (IFS made the code valid again).
    pub enable: bool,
}

impl ValueChange {
    pub fn renames(&self) -> bool {
        self.before != self.after
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPlan {
    pub spec: FieldSpec,
    pub target: FieldTarget,
    pub creates: Vec<ValueCreate>,
    /// Renames and re-enables.
    pub updates: Vec<ValueChange>,
    /// Codes IFS expired or no longer has. Never deleted: records already coded with them must keep
    /// resolving in Brex.
    pub disables: Vec<ValueChange>,
    pub unchanged: usize,
    /// Values of the field without a remote id (added in Brex by hand): left alone.
    pub unmanaged: usize,
}

impl FieldPlan {
    pub fn writes_values(&self) -> usize {
        self.creates.len() + self.updates.len() + self.disables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.target != FieldTarget::Create && self.writes_values() == 0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    pub fields: Vec<FieldPlan>,
}

impl SyncPlan {
    /// Nothing to write: Brex matches IFS (conflicting fields aside).
    pub fn is_empty(&self) -> bool {
        self.fields.iter().all(FieldPlan::is_empty)
    }

    pub fn creates(&self) -> usize {
        self.fields.iter().filter(|f| !matches!(f.target, FieldTarget::Conflict { .. })).map(|f| f.creates.len()).sum()
    }

    pub fn updates(&self) -> usize {
        self.fields.iter().map(|f| f.updates.len()).sum()
    }

    pub fn disables(&self) -> usize {
        self.fields.iter().map(|f| f.disables.len()).sum()
    }
}

/// The diff: for each IFS list, the Brex field with its remote id, and per IFS code (matched on the value's
/// `remote_id`) create, rename, disable or re-enable.
pub fn plan(ifs: &IfsSnapshot, brex: &BrexSnapshot) -> SyncPlan {
    SyncPlan { fields: ifs.lists.iter().map(|list| plan_field(list, brex)).collect() }
}

fn plan_field(list: &IfsList, brex: &BrexSnapshot) -> FieldPlan {
    let spec = list.spec.clone();
    let ours = brex.fields.iter().find(|f| f.remote_id.as_deref() == Some(spec.remote_id.as_str()));
    let target = match ours {
        Some(field) => FieldTarget::Existing { brex_id: field.brex_id.clone() },
        None => match brex.fields.iter().find(|f| {
            f.remote_id.as_deref().is_none_or(str::is_empty)
                && f.name.as_deref().is_some_and(|n| n.trim().eq_ignore_ascii_case(spec.name.trim()))
        }) {
            Some(hand_made) => FieldTarget::Conflict { brex_id: hand_made.brex_id.clone() },
            None => FieldTarget::Create,
        },
    };
    let existing: &[FieldValue] = match &target {
        FieldTarget::Existing { brex_id } => brex.values.get(brex_id).map_or(&[], Vec::as_slice),
        _ => &[],
    };
    let mut plan = FieldPlan {
        spec,
        target,
        creates: Vec::new(),
        updates: Vec::new(),
        disables: Vec::new(),
        unchanged: 0,
        unmanaged: 0,
    };
    let mut by_code: BTreeMap<&str, &FieldValue> = BTreeMap::new();
    for value in existing {
        match value.remote_id.as_deref().filter(|r| !r.is_empty()) {
            // The first one wins; a duplicate remote id is Brex's to sort out, and touching both would flap.
            Some(code) => {
                by_code.entry(code).or_insert(value);
            }
            None => plan.unmanaged += 1,
        }
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (code, want) in &list.values {
        seen.insert(code.as_str());
        let after = want.display();
        let Some(have) = by_code.get(code.as_str()) else {
            if want.active {
                plan.creates.push(ValueCreate { code: code.clone(), value: after });
            }
            continue;
        };
        let change = |enable| ValueChange {
            brex_id: have.brex_id.clone(),
            code: code.clone(),
            before: have.value.clone(),
            after: after.clone(),
            enable,
        };
        match (want.active, have.is_disabled) {
            (true, true) => plan.updates.push(change(true)),
            (true, false) if have.value != after => plan.updates.push(change(false)),
            (false, false) => plan.disables.push(change(false)),
            // In step, or disabled already (a disabled value's name is not worth a write).
            _ => plan.unchanged += 1,
        }
    }
    for (code, have) in by_code.iter().filter(|(code, _)| !seen.contains(**code)) {
        if have.is_disabled {
            plan.unchanged += 1;
        } else {
            plan.disables.push(ValueChange {
                brex_id: have.brex_id.clone(),
                code: (*code).to_owned(),
                before: have.value.clone(),
                after: have.value.clone(),
                enable: false,
            });
        }
    }
    plan
}

/// The plan as a human diff: per field a summary line, then `+` create, `~` update, `-` disable, at most
/// `max_lines` of each kind (the rest counted).
pub fn render_diff(plan: &SyncPlan, max_lines: usize) -> String {
    let mut out = String::new();
    if plan.fields.is_empty() {
        out.push_str(
            "nothing to sync: the mapping's [passthrough] names no field (gl_account_remote_id, code_parts)\n",
        );
        return out;
    }
    for field in &plan.fields {
        let spec = &field.spec;
        let place = match &field.target {
            FieldTarget::Existing { brex_id } => brex_id.clone(),
            FieldTarget::Create => "new field, created first".to_owned(),
            FieldTarget::Conflict { brex_id } => {
                let _ = writeln!(
                    out,
                    "field {:?} ← {}: SKIPPED — Brex field {brex_id} has this name but no remote id {:?}; \
                     give the synced field another name in [passthrough], or remove the hand-made one",
                    spec.name, spec.source, spec.remote_id
                );
                continue;
            }
        };
        let _ = writeln!(
            out,
            "field {:?} (remote id {}, {place}) ← {}: {} to create, {} to update, {} to disable, {} unchanged",
            spec.name,
            spec.remote_id,
            spec.source,
            field.creates.len(),
            field.updates.len(),
            field.disables.len(),
            field.unchanged
        );
        section(&mut out, &field.creates, max_lines, |c| format!("  + {:<12} {:?}", c.code, c.value));
        section(&mut out, &field.updates, max_lines, |c| {
            let mut line = format!("  ~ {:<12} ", c.code);
            if c.renames() {
                let _ = write!(line, "{:?} → {:?}", c.before, c.after);
            } else {
                let _ = write!(line, "{:?}", c.after);
            }
            if c.enable {
                line.push_str(" (re-enabled: valid in IFS again)");
            }
            line
        });
        section(&mut out, &field.disables, max_lines, |c| {
            let mut line = format!("  - {:<12} {:?} (disabled: expired or removed in IFS", c.code, c.before);
            if c.renames() {
                let _ = write!(line, "; renamed {:?}", c.after);
            }
            line.push(')');
            line
        });
        if field.unmanaged > 0 {
            let _ = writeln!(out, "  ({} values without a remote id left alone)", field.unmanaged);
        }
    }
    let _ = writeln!(
        out,
        "total: {} to create, {} to update, {} to disable{}",
        plan.creates(),
        plan.updates(),
        plan.disables(),
        if plan.is_empty() { " — Brex matches IFS" } else { "" }
    );
    out
}

fn section<T>(out: &mut String, items: &[T], max_lines: usize, line: impl Fn(&T) -> String) {
    for item in items.iter().take(max_lines) {
        out.push_str(&line(item));
        out.push('\n');
    }
    if items.len() > max_lines {
        let _ = writeln!(out, "    … {} more", items.len() - max_lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FieldSpec {
        FieldSpec { source: Source::Accounts, name: "GL Account".into(), remote_id: "GL_ACCOUNT".into() }
    }

    fn ifs(values: &[(&str, &str, bool)]) -> IfsSnapshot {
        let values = values
            .iter()
            .map(|(code, description, active)| {
                (
                    (*code).to_owned(),
                    IfsValue { code: (*code).into(), description: (*description).into(), active: *active },
                )
            })
            .collect();
        IfsSnapshot { lists: vec![IfsList { spec: spec(), values }] }
    }

    fn field(brex_id: &str, name: &str, remote_id: Option<&str>) -> Field {
        Field {
            brex_id: brex_id.into(),
            name: Some(name.into()),
            remote_id: remote_id.map(str::to_owned),
            group: None,
            is_disabled: false,
            updated_at: None,
        }
    }

    fn value(brex_id: &str, value: &str, remote_id: Option<&str>, is_disabled: bool) -> FieldValue {
        FieldValue {
            brex_id: brex_id.into(),
            field_id: Some("ef_gl".into()),
            value: value.into(),
            value_id: remote_id.map(str::to_owned),
            remote_id: remote_id.map(str::to_owned),
            is_disabled,
            updated_at: None,
        }
    }

    fn brex(values: Vec<FieldValue>) -> BrexSnapshot {
        BrexSnapshot {
            fields: vec![field("ef_other", "Department", None), field("ef_gl", "GL Account", Some("GL_ACCOUNT"))],
            values: BTreeMap::from([("ef_gl".to_owned(), values)]),
        }
    }

    #[test]
    fn a_missing_field_is_created_with_every_active_value() {
        let p = plan(
            &ifs(&[("6500", "Travel", true), ("6510", "", true), ("6999", "Old", false)]),
            &BrexSnapshot::default(),
        );
        let f = &p.fields[0];
        assert_eq!(f.target, FieldTarget::Create);
        assert_eq!(
            f.creates,
            vec![
                ValueCreate { code: "6500".into(), value: "6500 Travel".into() },
                ValueCreate { code: "6510".into(), value: "6510".into() },
            ],
            "an expired code is not published"
        );
        assert!(f.updates.is_empty() && f.disables.is_empty());
        assert!(!p.is_empty());
    }

    #[test]
    fn a_brex_that_matches_ifs_gives_an_empty_plan() {
        let p = plan(
            &ifs(&[("6500", "Travel", true), ("6999", "Old", false)]),
            &brex(vec![
                value("efo_1", "6500 Travel", Some("6500"), false),
                value("efo_2", "6999 Old", Some("6999"), true),
                value("efo_3", "Misc (typed in Brex)", None, false),
            ]),
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!((p.fields[0].unchanged, p.fields[0].unmanaged), (2, 1));
        assert_eq!(p.fields[0].target, FieldTarget::Existing { brex_id: "ef_gl".into() });
    }

    #[test]
    fn renames_expiries_removals_and_returns_are_each_one_change() {
        let p = plan(
            &ifs(&[
                ("6500", "Travel & lodging", true), // renamed
                ("6510", "Meals", false),           // expired
                ("6600", "Software", true),         // back in IFS after being disabled
                ("6700", "Office", true),           // new
                ("7500", "Other", true),            // unchanged
            ]),
            &brex(vec![
                value("efo_1", "6500 Travel", Some("6500"), false),
                value("efo_2", "6510 Meals", Some("6510"), false),
                value("efo_3", "6600 Software", Some("6600"), true),
                value("efo_5", "7500 Other", Some("7500"), false),
                value("efo_9", "9999 Gone", Some("9999"), false), // removed from IFS
                value("efo_8", "8888 Gone long ago", Some("8888"), true),
            ]),
        );
        let f = &p.fields[0];
        assert_eq!(f.creates, vec![ValueCreate { code: "6700".into(), value: "6700 Office".into() }]);
        assert_eq!(
            f.updates,
            vec![
                ValueChange {
                    brex_id: "efo_1".into(),
                    code: "6500".into(),
                    before: "6500 Travel".into(),
                    after: "6500 Travel & lodging".into(),
                    enable: false,
                },
                ValueChange {
                    brex_id: "efo_3".into(),
                    code: "6600".into(),
                    before: "6600 Software".into(),
                    after: "6600 Software".into(),
                    enable: true,
                },
            ]
        );
        let disabled: Vec<(&str, bool)> = f.disables.iter().map(|c| (c.code.as_str(), c.renames())).collect();
        assert_eq!(disabled, vec![("6510", false), ("9999", false)]);
        assert_eq!(f.unchanged, 2, "7500 in step; 8888 disabled already");
        assert_eq!((p.creates(), p.updates(), p.disables()), (1, 2, 2));
    }

    #[test]
    fn a_hand_made_field_of_the_same_name_is_not_duplicated() {
        let snapshot = BrexSnapshot { fields: vec![field("ef_hand", " gl account ", None)], values: BTreeMap::new() };
        let p = plan(&ifs(&[("6500", "Travel", true)]), &snapshot);
        assert_eq!(p.fields[0].target, FieldTarget::Conflict { brex_id: "ef_hand".into() });
        assert_eq!(p.creates(), 0, "nothing is written into a field the sync does not own");
        assert!(render_diff(&p, 5).contains("SKIPPED"));
    }

    #[test]
    fn the_diff_names_every_change_and_counts_the_rest() {
        let p = plan(
            &ifs(&[
                ("6500", "Travel & lodging", true),
                ("6510", "Meals", false),
                ("6600", "A", true),
                ("6601", "B", true),
            ]),
            &brex(vec![
                value("efo_1", "6500 Travel", Some("6500"), false),
                value("efo_2", "6510 Meals", Some("6510"), false),
            ]),
        );
        let diff = render_diff(&p, 1);
        assert_eq!(
            diff,
            "field \"GL Account\" (remote id GL_ACCOUNT, ef_gl) ← IFS accounts: 2 to create, 1 to update, 1 to disable, 0 unchanged\n\
             \x20 + 6600         \"6600 A\"\n\
             \x20   … 1 more\n\
             \x20 ~ 6500         \"6500 Travel\" → \"6500 Travel & lodging\"\n\
             \x20 - 6510         \"6510 Meals\" (disabled: expired or removed in IFS)\n\
             total: 2 to create, 1 to update, 1 to disable\n"
        );
    }

    #[test]
    fn specs_follow_the_passthrough_table() {
        let doc = MappingDocument::parse(
            "[ifs]\ncompany = \"10\"\nvoucher_type = \"M\"\nreference_serie = \"BREX\"\ncredit_account = \"2410\"\n\
             [passthrough]\ngl_account_remote_id = true\ncode_parts = { code_d = \"Project\", code_b = \"Cost Center\" }",
        )
        .unwrap();
        let specs: Vec<(Source, String, String)> =
            field_specs(&doc).into_iter().map(|s| (s.source, s.name, s.remote_id)).collect();
        assert_eq!(
            specs,
            vec![
                (Source::Accounts, "GL Account".into(), "GL_ACCOUNT".into()),
                (Source::CodePart(CodePart::B), "Cost Center".into(), "CODE_B".into()),
                (Source::CodePart(CodePart::D), "Project".into(), "CODE_D".into()),
            ]
        );
        let off = MappingDocument::parse(
            "[ifs]\ncompany = \"10\"\nvoucher_type = \"M\"\nreference_serie = \"BREX\"\ncredit_account = \"2410\"\n",
        )
        .unwrap();
        assert!(field_specs(&off).is_empty());
        assert!(
            render_diff(&plan(&IfsSnapshot::default(), &BrexSnapshot::default()), 5).starts_with("nothing to sync")
        );
    }
}
