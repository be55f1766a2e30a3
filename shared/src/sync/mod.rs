//! The reference sync: IFS accounts and code parts published into Brex custom fields (`/v1/fields`), with the
//! IFS code as each value's `remote_id`, so records coded in Brex come back carrying IFS codes and
//! `[passthrough]` maps them without rules. Reference data only — never anything financial.
//!
//! * **What.** The fields `[passthrough]` reads ([`field_specs`]): accounts into the field with remote id
//!   `GL_ACCOUNT` when `gl_account_remote_id` is on, each `code_parts` entry into `CODE_B` … Values are
//!   `"{code} {description}"`; a code counts as active when it is valid today in any company the mapping posts
//!   to (the default company's description wins).
//! * **How.** Read IFS (paged by the IFS client), read Brex's fields and the values of ours, [`plan`] the diff,
//!   apply it in bulk calls of ≤ 1000 values: create missing values, rename changed ones, disable (never
//!   delete) expired or removed ones, re-enable returning ones. A second run with no IFS change writes nothing.
//! * **Bounded.** Every Brex call of a run counts against `max_brex_requests`; reads that do not fit fail
//!   the run, writes that do not fit are deferred to the next run (the diff picks them up again).

mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;

pub use plan::{
    BrexSnapshot, FieldPlan, FieldSpec, FieldTarget, IfsList, IfsSnapshot, IfsValue, Source, SyncPlan, ValueChange,
    ValueCreate, field_specs, plan, render_diff,
};

use crate::brex::{
    BrexError, FieldGroup, FieldValueData, FieldValueUpdate, MAX_VALUES_PER_CALL, NewField, NewFieldValue, ValueKey,
};
use crate::domain::CompanyCode;
use crate::error::ExternalError;
use crate::error::{Classify, Disposition};
use crate::ifs::IfsClient;
use crate::mapping::{LoadedMapping, MappingDocument};
use crate::ports::{BrexFields, Clock, ReferenceSource, SystemClock};
use crate::reference::mapping_companies;

/// Default Brex request budget of one run: a tenth of Brex's per-minute limit, leaving the rest to polling
/// and posting. Enough for 40 000 values unchanged (reads) or 90 000 new ones.
pub const DEFAULT_MAX_BREX_REQUESTS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSyncOptions {
    pub max_brex_requests: usize,
}

impl Default for FieldSyncOptions {
    fn default() -> Self {
        Self { max_brex_requests: DEFAULT_MAX_BREX_REQUESTS }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    #[error("reading the {what} of IFS company {company} failed: {source}")]
    Ifs {
        company: CompanyCode,
        what: &'static str,
        #[source]
        source: ExternalError,
    },
    #[error("Brex fields: {0}")]
    Brex(#[from] BrexError),
    /// Reading Brex alone needs more calls than a run may make: raise `BREX_FIELDS_MAX_REQUESTS`.
    #[error("reading Brex's fields needs more than the {budget} requests one sync run may make")]
    Budget { budget: usize },
}

impl Classify for SyncError {
    fn disposition(&self) -> Disposition {
        match self {
            Self::Ifs { source, .. } => source.disposition(),
            Self::Brex(e) => e.disposition(),
            Self::Budget { .. } => Disposition::Permanent,
        }
    }
}

/// A plan with what reading cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSync {
    pub plan: SyncPlan,
    /// Brex calls spent reading (they count against the run's budget).
    pub brex_reads: usize,
    /// IFS codes read, over all lists.
    pub ifs_values: usize,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub fields_created: usize,
    pub created: usize,
    pub updated: usize,
    pub disabled: usize,
    pub unchanged: usize,
    /// Values left for the next run because the request budget ran out.
    pub deferred: usize,
    /// Fields skipped because a hand-made field has their name (see [`FieldTarget::Conflict`]).
    pub conflicts: Vec<String>,
    /// Brex calls made: reads and writes.
    pub brex_requests: usize,
    pub ifs_values: usize,
}

/// The sync, cheap to keep for the life of a Lambda instance.
pub struct FieldSync {
    ifs: Arc<dyn ReferenceSource>,
    brex: Arc<dyn BrexFields>,
    options: FieldSyncOptions,
    clock: Arc<dyn Clock>,
}

impl FieldSync {
    /// Reads IFS through `ifs` (its request budget and paging), writes Brex through `brex` (its rate limiter
    /// and retries).
    pub fn new(ifs: IfsClient, brex: Arc<dyn BrexFields>) -> Self {
        Self::with_source(Arc::new(ifs.reference().clone()), brex)
    }

    pub fn with_source(ifs: Arc<dyn ReferenceSource>, brex: Arc<dyn BrexFields>) -> Self {
        Self { ifs, brex, options: FieldSyncOptions::default(), clock: Arc::new(SystemClock) }
    }

    pub fn with_options(mut self, options: FieldSyncOptions) -> Self {
        self.options = options;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reads both sides and applies the diff.
    pub async fn sync(&self, mapping: &LoadedMapping) -> Result<SyncReport, SyncError> {
        let planned = self.plan(mapping).await?;
        self.apply(&planned).await
    }

    /// Reads both sides and diffs them; writes nothing (the dry run).
    pub async fn plan(&self, mapping: &LoadedMapping) -> Result<PlannedSync, SyncError> {
        let today = self.clock.now().date_naive();
        let ifs = self.read_ifs(&mapping.document, today).await?;
        let ifs_values = ifs.lists.iter().map(|l| l.values.len()).sum();
        if ifs.lists.is_empty() {
            return Ok(PlannedSync { plan: SyncPlan::default(), brex_reads: 0, ifs_values });
        }
        let (brex, brex_reads) = self.read_brex(&ifs).await?;
        Ok(PlannedSync { plan: plan(&ifs, &brex), brex_reads, ifs_values })
    }

    /// Every list [`field_specs`] names, merged over the companies the mapping posts to.
    pub async fn read_ifs(&self, doc: &MappingDocument, today: NaiveDate) -> Result<IfsSnapshot, SyncError> {
        let specs = field_specs(doc);
        if specs.is_empty() {
            return Ok(IfsSnapshot::default());
        }
        // The default company first, so its descriptions win.
        let mut companies = vec![doc.company.clone()];
        companies.extend(mapping_companies(doc).into_iter().filter(|c| *c != doc.company));
        let mut lists: Vec<IfsList> = specs.into_iter().map(|spec| IfsList { spec, values: BTreeMap::new() }).collect();
        for company in &companies {
            let fail = |what: &'static str| {
                let company = company.clone();
                move |source| SyncError::Ifs { company, what, source }
            };
            for list in &mut lists {
                let read: Vec<IfsValue> = match list.spec.source {
                    Source::Accounts => self
                        .ifs
                        .accounts(company)
                        .await
                        .map_err(fail("accounts"))?
                        .into_iter()
                        .map(|a| IfsValue {
                            code: a.account.as_str().to_owned(),
                            active: a.is_valid_on(today),
                            description: a.description,
                        })
                        .collect(),
                    Source::CodePart(part) => self
                        .ifs
                        .code_part_values(company, part)
                        .await
                        .map_err(fail("code part values"))?
                        .into_iter()
                        .map(|v| IfsValue {
                            code: v.value.as_str().to_owned(),
                            active: v.is_valid_on(today),
                            description: v.description,
                        })
                        .collect(),
                };
                for value in read {
                    match list.values.get(&value.code) {
                        Some(seen) if seen.active || !value.active => {}
                        _ => {
                            list.values.insert(value.code.clone(), value);
                        }
                    }
                }
            }
        }
        Ok(IfsSnapshot { lists })
    }

    /// Every field, and every value of the fields the lists map to, within the budget.
    async fn read_brex(&self, ifs: &IfsSnapshot) -> Result<(BrexSnapshot, usize), SyncError> {
        let budget = self.options.max_brex_requests;
        let mut calls = 0usize;
        let mut take = || {
            calls += 1;
            if calls > budget { Err(SyncError::Budget { budget }) } else { Ok(()) }
        };
        let mut snapshot = BrexSnapshot::default();
        let mut cursor: Option<String> = None;
        loop {
            take()?;
            let page = self.brex.fields_page(cursor.as_deref()).await?;
            snapshot.fields.extend(page.items);
            match page.next_cursor.filter(|c| !c.is_empty() && Some(c) != cursor.as_ref()) {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let ours: Vec<String> = ifs
            .lists
            .iter()
            .filter_map(|l| snapshot.fields.iter().find(|f| f.remote_id.as_deref() == Some(l.spec.remote_id.as_str())))
            .map(|f| f.brex_id.clone())
            .collect();
        for field_id in ours {
            let mut values = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                take()?;
                let page = self.brex.field_values_page(&field_id, cursor.as_deref()).await?;
                values.extend(page.items);
                match page.next_cursor.filter(|c| !c.is_empty() && Some(c) != cursor.as_ref()) {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            snapshot.values.insert(field_id, values);
        }
        Ok((snapshot, calls))
    }

    /// Applies a plan: per field, create it if needed, then creates in bulk, then updates and disables
    /// together in bulk. Stops writing when the budget is spent and counts the rest as deferred.
    pub async fn apply(&self, planned: &PlannedSync) -> Result<SyncReport, SyncError> {
        let mut report =
            SyncReport { brex_requests: planned.brex_reads, ifs_values: planned.ifs_values, ..SyncReport::default() };
        let budget = self.options.max_brex_requests;
        // One scope per run: retries inside the run reuse their keys, later runs never collide with them.
        let scope = format!("{:032x}", rand::random::<u128>());
        for field in &planned.plan.fields {
            report.unchanged += field.unchanged;
            let field_id = match &field.target {
                FieldTarget::Existing { brex_id } => brex_id.clone(),
                FieldTarget::Conflict { brex_id } => {
                    tracing::warn!(
                        field = %field.spec.name, conflicting = %brex_id, remote_id = %field.spec.remote_id,
                        "Brex field of the same name without the remote id: not synced"
                    );
                    report.conflicts.push(field.spec.name.clone());
                    continue;
                }
                FieldTarget::Create => {
                    if report.brex_requests >= budget {
                        report.deferred += field.writes_values();
                        continue;
                    }
                    report.brex_requests += 1;
                    let new = NewField {
                        name: field.spec.name.clone(),
                        group: FieldGroup::Accounting,
                        remote_id: Some(field.spec.remote_id.clone()),
                        integration_id: None,
                    };
                    let created = self.brex.create_field(&new, &scope).await?;
                    report.fields_created += 1;
                    tracing::info!(field = %field.spec.name, brex_id = %created.brex_id, "Brex field created");
                    created.brex_id
                }
            };
            for chunk in field.creates.chunks(MAX_VALUES_PER_CALL) {
                if report.brex_requests >= budget {
                    report.deferred += chunk.len();
                    continue;
                }
                report.brex_requests += 1;
                let values: Vec<NewFieldValue> = chunk
                    .iter()
                    .map(|c| NewFieldValue {
                        value: c.value.clone(),
                        value_id: Some(c.code.clone()),
                        remote_id: Some(c.code.clone()),
                        is_disabled: None,
                    })
                    .collect();
                self.brex.create_field_values(&field_id, &values, &scope).await?;
                report.created += chunk.len();
            }
            let changes: Vec<(&ValueChange, bool)> =
                field.updates.iter().map(|c| (c, false)).chain(field.disables.iter().map(|c| (c, true))).collect();
            for chunk in changes.chunks(MAX_VALUES_PER_CALL) {
                if report.brex_requests >= budget {
                    report.deferred += chunk.len();
                    continue;
                }
                report.brex_requests += 1;
                let updates: Vec<FieldValueUpdate> = chunk
                    .iter()
                    .map(|(c, disable)| FieldValueUpdate {
                        key: ValueKey::BrexId(c.brex_id.clone()),
                        data: FieldValueData {
                            value: c.renames().then(|| c.after.clone()),
                            is_disabled: if *disable { Some(true) } else { c.enable.then_some(false) },
                        },
                    })
                    .collect();
                self.brex.update_field_values(&field_id, &updates, &scope).await?;
                report.disabled += chunk.iter().filter(|(_, disable)| *disable).count();
                report.updated += chunk.iter().filter(|(_, disable)| !*disable).count();
            }
        }
        tracing::info!(
            fields_created = report.fields_created,
            created = report.created,
            updated = report.updated,
            disabled = report.disabled,
            unchanged = report.unchanged,
            deferred = report.deferred,
            brex_requests = report.brex_requests,
            "Brex fields synced from IFS"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_disposition() {
        let busy = ExternalError::new("IFS", "429", Disposition::Retryable);
        let err = SyncError::Ifs { company: CompanyCode::parse("10").unwrap(), what: "accounts", source: busy };
        assert!(err.is_retryable());
        assert_eq!(err.to_string(), "reading the accounts of IFS company 10 failed: IFS: 429");
        assert!(!SyncError::Budget { budget: 5 }.is_retryable());
    }
}
