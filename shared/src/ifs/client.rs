//! The IFS Cloud client: a small façade that builds and owns the three pieces over one connection — the
//! OData transport, the reference reader (with its cache) and the ledger — and forwards the calls the
//! wiring, the operator CLI and the tests make. Each piece is also reachable on its own.

use std::sync::Arc;

use chrono::NaiveDate;

use super::api_names::IfsApiNames;
use super::error::IfsError;
use super::ledger::IfsLedger;
use super::ledger::voucher::VoucherKey;
use super::probe::{self, BatchProbe, EtagReferenceProbe, NameProbe};
use super::reference::{AccountingPeriodInfo, CodePartInfo, IfsReference};
use super::transport::{IfsClientConfig, IfsStats, IfsTransport};
use crate::domain::{AccountCode, CompanyCode, ReferenceNumber, VoucherType};
use crate::ports::RequestBudget;
use crate::ports::{AccountInfo, CapabilityStore};
use crate::proposal::{CodePart, Proposal};
use crate::retry::TokenBucket;

/// An IFS Cloud client, cheap to clone: clones share the token cache, the budget, the reference cache, the
/// flow memory and the counters.
#[derive(Debug, Clone)]
pub struct IfsClient {
    transport: IfsTransport,
    reference: IfsReference,
    ledger: IfsLedger,
}

impl IfsClient {
    /// A client with the per-instance token bucket fed by `requests_per_minute`.
    pub fn new(config: IfsClientConfig, http: reqwest::Client) -> Result<Self, IfsError> {
        let budget = Arc::new(TokenBucket::ifs(config.requests_per_minute));
        Self::with_budget(config, http, budget)
    }

    /// A client drawing on another request budget (e.g. one shared by every instance).
    pub fn with_budget(
        config: IfsClientConfig,
        http: reqwest::Client,
        budget: Arc<dyn RequestBudget>,
    ) -> Result<Self, IfsError> {
        let transport = IfsTransport::new(config, http, budget)?;
        let reference = IfsReference::new(transport.clone());
        let ledger = IfsLedger::new(transport.clone(), reference.clone());
        Ok(Self { transport, reference, ledger })
    }

    pub fn transport(&self) -> &IfsTransport {
        &self.transport
    }

    /// The reference reader: IFS as a [`crate::ports::ChartOfAccounts`] and a
    /// [`crate::reference::ReferenceSource`].
    pub fn reference(&self) -> &IfsReference {
        &self.reference
    }

    /// The ledger: IFS as the poster's [`crate::poster::Ledger`].
    pub fn ledger(&self) -> &IfsLedger {
        &self.ledger
    }

    /// The projection names and flow switches in use.
    pub fn api(&self) -> Arc<IfsApiNames> {
        self.transport.api()
    }

    pub fn stats(&self) -> IfsStats {
        self.transport.stats()
    }

    /// Shares what this client learns about the tenant's `$batch` through `store` (the table).
    pub fn remember_flow_in(&self, store: Arc<dyn CapabilityStore>) {
        self.ledger.remember_flow_in(store);
    }

    pub async fn find_posted(
        &self,
        company: &CompanyCode,
        reference_serie: &str,
        refs: &[ReferenceNumber],
    ) -> Result<std::collections::HashMap<ReferenceNumber, VoucherKey>, IfsError> {
        self.ledger.find_posted(company, reference_serie, refs).await
    }

    pub async fn create_voucher(&self, proposal: &Proposal) -> Result<VoucherKey, IfsError> {
        self.ledger.create_voucher(proposal).await
    }

    pub async fn create_vouchers(&self, proposals: &[Proposal]) -> Vec<Result<VoucherKey, IfsError>> {
        self.ledger.create_vouchers(proposals).await
    }

    pub async fn account(&self, company: &CompanyCode, account: &AccountCode) -> Result<Option<AccountInfo>, IfsError> {
        self.reference.account(company, account).await
    }

    pub async fn list_accounts(&self, company: &CompanyCode) -> Result<Vec<AccountInfo>, IfsError> {
        self.reference.list_accounts(company).await
    }

    pub async fn list_code_part_values(
        &self,
        company: &CompanyCode,
        part: CodePart,
    ) -> Result<Vec<CodePartInfo>, IfsError> {
        self.reference.list_code_part_values(company, part).await
    }

    pub async fn accounting_period(
        &self,
        company: &CompanyCode,
        date: NaiveDate,
    ) -> Result<Option<AccountingPeriodInfo>, IfsError> {
        self.reference.accounting_period(company, date).await
    }

    pub async fn probe_batch(&self) -> BatchProbe {
        probe::probe_batch(&self.transport).await
    }

    pub async fn probe_etag_references(
        &self,
        company: &CompanyCode,
        voucher_type: &VoucherType,
        date: NaiveDate,
    ) -> EtagReferenceProbe {
        probe::probe_etag_references(&self.transport, &self.reference, company, voucher_type, date).await
    }

    pub async fn probe_names(&self, code_parts: &[CodePart]) -> Vec<NameProbe> {
        probe::probe_names(&self.transport, code_parts).await
    }
}
