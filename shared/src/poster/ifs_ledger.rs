//! The IFS client as the poster's [`Ledger`].

use std::collections::HashMap;

use async_trait::async_trait;

use crate::domain::{CompanyCode, ReferenceNumber};
use crate::error::ExternalError;
use crate::ifs::IfsClient;
use crate::ports::ChartOfAccounts;
use crate::ports::Ledger;
use crate::proposal::Proposal;

#[async_trait]
impl Ledger for IfsClient {
    fn as_chart(&self) -> &dyn ChartOfAccounts {
        self
    }

    fn use_api(&self, api: &crate::ifs::IfsApiNames) {
        self.set_api(api);
    }

    async fn find_posted(
        &self,
        company: &CompanyCode,
        serie: &str,
        refs: &[ReferenceNumber],
    ) -> Result<HashMap<ReferenceNumber, String>, ExternalError> {
        let found = IfsClient::find_posted(self, company, serie, refs).await?;
        Ok(found.into_iter().map(|(reference, key)| (reference, key.to_string())).collect())
    }

    async fn create_voucher(&self, proposal: &Proposal) -> Result<String, ExternalError> {
        Ok(IfsClient::create_voucher(self, proposal).await?.to_string())
    }

    /// `$batch` or step by step, as `[ifs.api] batch` and the tenant's answers decide.
    async fn create_vouchers(&self, proposals: &[Proposal]) -> Vec<Result<String, ExternalError>> {
        IfsClient::create_vouchers(self, proposals)
            .await
            .into_iter()
            .map(|r| r.map(|key| key.to_string()).map_err(ExternalError::from))
            .collect()
    }
}
