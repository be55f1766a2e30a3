//! The IFS ledger: the dedup query and voucher creation, step by step or through `$batch`, with what the
//! tenant was found to support remembered ([`FlowMemory`]). It sends everything through the transport and
//! reads the accounting calendar through the reference reader; it is the poster's [`Ledger`].

mod batch;
pub mod capability;
mod dedup;
mod listing;
mod posted;
mod step;
pub mod voucher;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use self::batch::BatchFlow;
use self::capability::{FlowMemory, VoucherFlow};
use self::step::StepByStep;
use self::voucher::VoucherKey;
use super::api_names::{BatchMode, IfsApiNames};
use super::error::IfsError;
use super::reference::IfsReference;
use super::transport::IfsTransport;
use crate::domain::{CompanyCode, ReferenceNumber};
use crate::error::ExternalError;
use crate::ports::{CapabilityStore, ChartOfAccounts};
use crate::ports::{Ledger, Removal, VoucherState};
use crate::proposal::Proposal;

pub use dedup::MAX_DEDUP_URL_LEN;

/// Creates vouchers in IFS. Clones share the transport, the reference cache and the flow memory.
#[derive(Clone)]
pub struct IfsLedger {
    transport: IfsTransport,
    reference: IfsReference,
    /// Which voucher flow this tenant takes (`$batch` or step by step), as discovered.
    flow: Arc<FlowMemory>,
}

impl std::fmt::Debug for IfsLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IfsLedger").field("transport", &self.transport).finish_non_exhaustive()
    }
}

impl IfsLedger {
    /// A ledger that knows nothing of the tenant's `$batch` yet.
    pub fn new(transport: IfsTransport, reference: IfsReference) -> Self {
        Self { transport, reference, flow: Arc::default() }
    }

    /// Shares what this ledger learns about the tenant's `$batch` through `store` (the table).
    pub fn remember_flow_in(&self, store: Arc<dyn CapabilityStore>) {
        self.flow.attach(store);
    }

    /// Which of `refs` already have a voucher row in IFS (hold table), with that voucher's key. One query per
    /// chunk of references (chunked so the URL stays under [`MAX_DEDUP_URL_LEN`]), paged via nextLink.
    pub async fn find_posted(
        &self,
        company: &CompanyCode,
        reference_serie: &str,
        refs: &[ReferenceNumber],
    ) -> Result<HashMap<ReferenceNumber, VoucherKey>, IfsError> {
        dedup::find_posted(&self.transport, company, reference_serie, refs).await
    }

    /// Creates a voucher from `proposal`, step by step, in the status it asks for and returns its key. The
    /// caller runs [`IfsLedger::find_posted`] first; when `CreateVoucher` ends without a clear answer
    /// (timeout, dropped connection, 5xx) the dedup query is run again here, so an uncertain commit is never
    /// duplicated. IFS's verdict on balance, accounts and periods comes back as [`IfsError::Rejected`].
    pub async fn create_voucher(&self, proposal: &Proposal) -> Result<VoucherKey, IfsError> {
        StepByStep::new(&self.transport, &self.reference).create_voucher(proposal).await
    }

    /// Creates a voucher for each proposal; one result per proposal, in order. Under `[ifs.api] batch`
    /// `auto` (the default) the vouchers travel in `$batch` requests until the tenant refuses `$batch` or its
    /// ETag references, then — and for the next hour, see [`capability`] — one after the other
    /// through [`IfsLedger::create_voucher`]; `true` and `false` force one flow. As there, the caller runs
    /// the dedup query first, and an uncertain outcome is resolved with it before anything is sent again.
    pub async fn create_vouchers(&self, proposals: &[Proposal]) -> Vec<Result<VoucherKey, IfsError>> {
        if self.voucher_flow().await.0 == VoucherFlow::StepByStep {
            self.transport.count_flow(VoucherFlow::StepByStep);
            let step = StepByStep::new(&self.transport, &self.reference);
            return step.create_each(proposals.iter().enumerate()).await.into_iter().map(|(_, r)| r).collect();
        }
        let outcomes = BatchFlow::new(&self.transport, &self.reference, &self.flow).create_vouchers(proposals).await;
        // A batch the tenant refused went on step by step: that is the flow it got.
        self.transport.count_flow(self.voucher_flow().await.0);
        outcomes
    }

    /// The flow [`IfsLedger::create_vouchers`] takes now, and why.
    pub async fn voucher_flow(&self) -> (VoucherFlow, String) {
        match self.transport.api().batch {
            BatchMode::Off => (VoucherFlow::StepByStep, "[ifs.api] batch = false".into()),
            BatchMode::On => (VoucherFlow::Batch, "[ifs.api] batch = true".into()),
            BatchMode::Auto => match self.flow.refusal(chrono::Utc::now()).await {
                Some(refused) => (
                    VoucherFlow::StepByStep,
                    format!("auto: {} (believed until {}, then $batch is tried again)", refused.reason, refused.until),
                ),
                None => (VoucherFlow::Batch, "auto: $batch until the tenant refuses it".into()),
            },
        }
    }
}

/// The poster's [`Ledger`]: voucher keys as text, errors as [`ExternalError`].
#[async_trait]
impl Ledger for IfsLedger {
    fn as_chart(&self) -> &dyn ChartOfAccounts {
        &self.reference
    }

    fn use_api(&self, api: &IfsApiNames) {
        self.transport.set_api(api);
    }

    async fn find_posted(
        &self,
        company: &CompanyCode,
        serie: &str,
        refs: &[ReferenceNumber],
    ) -> Result<HashMap<ReferenceNumber, String>, ExternalError> {
        let found = IfsLedger::find_posted(self, company, serie, refs).await?;
        Ok(found.into_iter().map(|(reference, key)| (reference, key.to_string())).collect())
    }

    async fn create_voucher(&self, proposal: &Proposal) -> Result<String, ExternalError> {
        Ok(IfsLedger::create_voucher(self, proposal).await?.to_string())
    }

    async fn voucher_state(&self, company: &CompanyCode, voucher: &str) -> Result<VoucherState, ExternalError> {
        let key = posted::parse_key(company, voucher)?;
        Ok(posted::voucher_state(&self.transport, &key).await?)
    }

    async fn remove_voucher(
        &self,
        company: &CompanyCode,
        voucher: &str,
        etag: &crate::domain::ETag,
    ) -> Result<Removal, ExternalError> {
        let key = posted::parse_key(company, voucher)?;
        Ok(posted::remove_voucher(&self.transport, &key, etag).await?)
    }

    /// `$batch` or step by step, as `[ifs.api] batch` and the tenant's answers decide.
    async fn create_vouchers(&self, proposals: &[Proposal]) -> Vec<Result<String, ExternalError>> {
        IfsLedger::create_vouchers(self, proposals)
            .await
            .into_iter()
            .map(|r| r.map(|key| key.to_string()).map_err(ExternalError::from))
            .collect()
    }
}
