//! What the connector needs from IFS: the ledger the poster writes to, the chart of accounts it validates
//! against, and the reference lists the refresh reads. The IFS client implements them in `crate::ifs`.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::domain::{CompanyCode, ReferenceNumber};
use crate::error::ExternalError;
use crate::ifs::{AccountingPeriodInfo, CodePartInfo};
use crate::proposal::{CodePart, Proposal};

/// IFS as the poster uses it.
#[async_trait]
pub trait Ledger: Send + Sync {
    fn as_chart(&self) -> &dyn ChartOfAccounts;
    /// Takes the tenant's names and flow switches from the mapping document in force (`[ifs.api]`), so a
    /// fix pushed by the operator applies to warm instances too.
    fn use_api(&self, api: &crate::ifs::IfsApiNames);
    /// Which of `refs` already have a voucher in `company` (ReferenceSerie `serie`): ref → voucher key.
    async fn find_posted(
        &self,
        company: &CompanyCode,
        serie: &str,
        refs: &[ReferenceNumber],
    ) -> Result<HashMap<ReferenceNumber, String>, ExternalError>;
    /// Creates the voucher; returns its key. Resolves an uncertain commit itself (dedup re-check).
    async fn create_voucher(&self, proposal: &Proposal) -> Result<String, ExternalError>;
    /// The approval state of a posted voucher (`voucher` as [`Ledger::create_voucher`] returned it). A
    /// ledger that cannot tell says approved: a reversal is always safe, a removal is not.
    async fn voucher_state(&self, _company: &CompanyCode, _voucher: &str) -> Result<VoucherState, ExternalError> {
        Ok(VoucherState::Approved)
    }
    /// Removes an unapproved voucher from the hold table, If-Match `etag`.
    async fn remove_voucher(
        &self,
        _company: &CompanyCode,
        _voucher: &str,
        _etag: &crate::domain::ETag,
    ) -> Result<Removal, ExternalError> {
        Ok(Removal::Approved)
    }
    /// Creates a voucher per proposal (one result each, in order), in as few requests as the ledger can.
    /// Each voucher stands or falls alone; the default creates them one after the other.
    async fn create_vouchers(&self, proposals: &[Proposal]) -> Vec<Result<String, ExternalError>> {
        let mut out = Vec::with_capacity(proposals.len());
        for proposal in proposals {
            out.push(self.create_voucher(proposal).await);
        }
        out
    }
}

/// A posted voucher as IFS holds it now (for a change after export).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoucherState {
    /// In the hold table and not approved: it may still be removed, guarded by this ETag.
    Unapproved { etag: crate::domain::ETag },
    /// Approved (or updated to the general ledger): only a reversal undoes it.
    Approved,
    /// Not in IFS (removed).
    Missing,
}

/// What removing an unapproved voucher came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Approved meanwhile: IFS refuses to remove it.
    Approved,
    /// Gone already.
    Missing,
}

/// What IFS demands of a code part on an account (`ReqCodeB` …): the simulator and IFS say `M`, `O`, `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Demand {
    Mandatory,
    Optional,
    Blocked,
}

/// An IFS GL account as far as validation needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountInfo {
    pub company: crate::domain::CompanyCode,
    pub account: crate::domain::AccountCode,
    pub description: String,
    pub valid_from: Option<chrono::NaiveDate>,
    pub valid_until: Option<chrono::NaiveDate>,
    pub demands: std::collections::BTreeMap<CodePart, Demand>,
}

impl AccountInfo {
    pub fn is_valid_on(&self, date: chrono::NaiveDate) -> bool {
        self.valid_from.is_none_or(|from| from <= date) && self.valid_until.is_none_or(|until| date <= until)
    }
}

/// Read access to IFS's chart of accounts (cached by the adapter).
#[async_trait]
pub trait ChartOfAccounts: Send + Sync {
    async fn account(
        &self,
        company: &crate::domain::CompanyCode,
        account: &crate::domain::AccountCode,
    ) -> Result<Option<AccountInfo>, ExternalError>;

    /// The company's accounting calendar for one accounting year (every period, open or not). `fresh` reads
    /// past any cache: for a decision that must see a period closed or reopened a minute ago. A chart that
    /// cannot read the calendar answers empty, which leaves the verdict on the voucher date to IFS.
    async fn calendar(
        &self,
        _company: &CompanyCode,
        _year: i32,
        _fresh: bool,
    ) -> Result<Vec<AccountingPeriodInfo>, ExternalError> {
        Ok(Vec::new())
    }
}

/// Read access to IFS's reference data, whole lists at a time (the adapter pages with `$top` ≤ 5000 and
/// follows `@odata.nextLink`).
#[async_trait]
pub trait ReferenceSource: Send + Sync {
    /// The company's whole chart of accounts; empty when IFS does not know the company.
    async fn accounts(&self, company: &CompanyCode) -> Result<Vec<AccountInfo>, ExternalError>;
    async fn code_part_values(&self, company: &CompanyCode, part: CodePart)
    -> Result<Vec<CodePartInfo>, ExternalError>;
    /// The company's name for a code part (`Cost Center`), if it has one.
    async fn code_part_name(&self, company: &CompanyCode, part: CodePart) -> Result<Option<String>, ExternalError>;
    async fn accounting_periods(
        &self,
        company: &CompanyCode,
        year: i32,
    ) -> Result<Vec<AccountingPeriodInfo>, ExternalError>;
}

/// One voucher of the hold table as reconciliation sees it: its key, the references on its rows and its
/// totals.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PostedVoucher {
    /// `10-2026-M-17`, as the ledger returns it.
    pub key: String,
    /// Every `ReferenceNumber` on its rows (the Brex ids); one for a voucher the connector posted.
    pub references: std::collections::BTreeSet<String>,
    /// The currencies of its rows; one for a voucher the connector posted.
    pub currencies: std::collections::BTreeSet<String>,
    pub debit_total: rust_decimal::Decimal,
    pub credit_total: rust_decimal::Decimal,
    pub rows: usize,
}

/// Reads IFS's vouchers by `ReferenceSerie` (read-only; paged, within the request budget).
#[async_trait]
pub trait VoucherListing: Send + Sync {
    /// Every voucher with a row in `reference_serie`, in key order.
    async fn vouchers_in_serie(&self, reference_serie: &str) -> Result<Vec<PostedVoucher>, ExternalError>;
}

/// The IFS request budget (`IFS_REQUESTS_PER_MINUTE`, for the whole deployment). Every HTTP request, token
/// fetches included, takes one unit first.
#[async_trait]
pub trait RequestBudget: Send + Sync {
    /// Waits until one request may be sent.
    async fn acquire(&self);
}

/// IFS document management as the receipt attacher uses it: a file attached to a voucher. Implemented in
/// `crate::ifs::attachment`.
#[async_trait]
pub trait AttachmentStore: Send + Sync {
    /// Takes the projection, entity-set and LU names of the mapping document in force (`[ifs.api]`).
    fn use_api(&self, api: &crate::ifs::IfsApiNames);
    /// Attaches `file` to the voucher with this key (`10-2026-M-17`).
    async fn attach(&self, voucher: &str, file: &crate::receipts::ReceiptFile) -> Result<(), ExternalError>;
}
