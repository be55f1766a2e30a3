//! What the poster would make of records: the mapping engine, then the same IFS validation, nothing posted.

use shared::brex::model::AccountingRecord;
use shared::mapping::{MappingDocument, check_proposal, map_record};
use shared::ports::ChartOfAccounts;
use shared::proposal::Proposal;

pub struct Evaluation {
    pub record: AccountingRecord,
    /// The proposal, or why the record would fail.
    pub outcome: Result<Proposal, String>,
}

/// `chart`: IFS's chart of accounts when reachable; without it only the mapping itself is checked.
pub async fn evaluate(
    doc: &MappingDocument,
    records: Vec<AccountingRecord>,
    chart: Option<&dyn ChartOfAccounts>,
) -> Vec<Evaluation> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let outcome = match map_record(doc, &record) {
            Err(e) => Err(e.to_string()),
            Ok(mut proposal) => match chart {
                // The closed-period policy too, so a moved date shows as the poster would post it.
                Some(chart) => check_proposal(&mut proposal, doc.closed_period, chart)
                    .await
                    .map(|_| proposal)
                    .map_err(|e| e.to_string()),
                None => Ok(proposal),
            },
        };
        out.push(Evaluation { record, outcome });
    }
    out
}
