//! IFS Cloud simulator: IAM client-credentials tokens and the OData projections the connector uses
//! (reference data, the voucher entry assistant, voucher reads), with a request budget, fault knobs and
//! counters.
//!
//! It follows IFS's public OData documentation and docs/contract.md. Where IFS documents nothing the simulator chooses, and
//! says so here:
//!
//! - **Errors**: the OData envelope `{"error":{"code","message"}}`. Business-rule failures (IFS `Error_SYS`)
//!   are 400 `DATABASE_ERROR` with an IFS-style message; unknown resources 404 `ODP_RESOURCE_NOTFOUND`;
//!   malformed URLs/keys/query options 400 `ODP_INVALID_URL`; unsupported `$filter` operators, functions,
//!   `$expand` and `$apply` 501 `ODP_NOT_IMPLEMENTED`; a missing or invalid bearer token 401 `UNAUTHORIZED`.
//! - **Concurrency**: guarded mutations on a virtual voucher (row POST, `CreateVoucher`, `RemoveTempVoucher`)
//!   need `If-Match`: missing → 428 `ODP_MISSING_PRECONDITION`, stale → 412 `ODP_PRECONDITION_FAILED`,
//!   `*` always matches. Adding a row does not change the voucher's ETag (rows are separate child entities),
//!   so a client may post every row with the header's ETag.
//! - **Paging**: see [`odata::list`]: `$top` is the page size (capped at `max_page_size`), and
//!   `@odata.nextLink` appears whenever more matching rows remain.
//! - **Budget**: a fixed window of one scaled minute (see [`state::Budget`]); 429 `TOO_MANY_REQUESTS` with
//!   `Retry-After` = seconds until the window resets (ceil, at least 1). Admin routes are exempt.
//! - **Code part names**: `CodePartValuesHandling.svc/CompanyFinanceSet(Company='10')/AccountingCodePartBRef`
//!   (… `J`) answers the company's `AccountingCodeParts` row (`CodePart`, `CodeName` = the name in
//!   [`ReferenceData::code_part_names`]); 404 for a company the simulator does not have.
//! - **`/main/`** serves the same projections as `/int/`, but mutations need `X-XSRF-TOKEN` equal to the
//!   `XSRF-TOKEN` cookie that `/main/` GETs set, else 403 `CSRF_ERROR`.
//! - **Amounts** may be JSON numbers or strings and are read exactly (JSON numbers via their shortest text
//!   form). Responses carry them as JSON numbers, or as strings when `Accept` has `IEEE754Compatible=true`.
//!
//! - **`$batch`**: multipart/mixed with atomic change sets and Content-ID references; see [`batch`]. A
//!   `$batch` may also hold plain reads outside any change set (e.g. `GET VoucherSet?$top=1`); each is
//!   answered as its own `application/http` part.
//! - **Tenant profile** ([`IfsTenant`]): how this tenant differs from the documented IFS. `batch`
//!   ([`BatchSupport`]): `full` (the default, as documented); `no_etag_references` — `$batch` and URL
//!   references (`$1/VoucherPostingArray`) work but `If-Match: $1` is compared literally, so the guarded
//!   operation answers 412 `ODP_PRECONDITION_FAILED` and its change set rolls back (a real ETag still
//!   works); `absent` — every `POST …/$batch` answers 404 `ODP_RESOURCE_NOTFOUND` (counted as `Batch.POST`
//!   404) and runs nothing. `missing_projections`: projections the release does not ship; any request
//!   under them (a `$batch` or a batch part included) answers 404 `ODP_RESOURCE_NOTFOUND`. Set it with
//!   [`IfsSimConfig::tenant`], [`IfsSim::set_tenant`] / [`IfsSim::set_batch_support`], `PUT /_sim/tenant`
//!   or the `ifs-sim --batch …` / `--missing-projection …` flags.
//! - **Virtual vouchers**: `GET …/VoucherEntryAssistantHandling.svc/VoucherSet` lists the ones that exist
//!   (IFS lists the caller's own; the simulator has a single caller). [`IfsCounters::virtual_vouchers_open`]
//!   counts them when the counters are read, [`IfsCounters::virtual_vouchers_removed`] the ones
//!   `RemoveTempVoucher` discarded (step by step or inside a change set).
//!
//! Admin routes (not authenticated, not counted): `GET /_sim/counters`, `POST /_sim/counters/reset`,
//! `GET /_sim/vouchers`, `GET /_sim/reference`, `GET /_sim/faults`, `PUT|POST /_sim/faults` (an
//! [`IfsFaults`] JSON document; missing fields take their defaults), `GET /_sim/tenant`, `PUT|POST
//! /_sim/tenant` (an [`IfsTenant`] JSON document such as `{"batch":"absent"}`; missing fields take their
//! defaults), `PUT|POST /_sim/periods/{company}/{year}/{period}` (`{"status":"Open"|"Closed"}`: close or
//! reopen an accounting period at runtime, as [`IfsSim::set_period_status`] does; a voucher dated in a closed
//! period is refused at `CreateVoucher` with 400 `DATABASE_ERROR` "Period 2026/10 is closed").

pub mod batch;
pub mod documents;
pub mod filter;
pub mod model;
pub mod odata;
pub mod reference;
mod server;
pub mod state;
pub mod tenant;

pub use model::{Voucher, VoucherRow, VoucherStatus};
pub use reference::{
    Account, AccountingPeriod, CodePartValue, Company, Demand, PeriodStatus, ReferenceData, VoucherTypeDef,
};
pub use state::{IfsCounters, IfsFaults};
pub use tenant::{BatchSupport, IfsTenant};

use chrono::NaiveDate;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use server::{ConnHandle, KillableListener, Settings, Shared};
use state::{Budget, State};

/// Simulator settings. `Default` gives the demo setup the local run uses.
#[derive(Clone)]
pub struct IfsSimConfig {
    /// IAM realm (the token URL is `{base}/auth/realms/{realm}/protocol/openid-connect/token`).
    pub realm: String,
    /// Accepted `(client_id, client_secret)` pairs.
    pub clients: Vec<(String, String)>,
    /// Access token lifetime, reported as `expires_in` (whole seconds).
    pub token_ttl: Duration,
    /// Requests admitted per (scaled) minute, token requests included.
    pub requests_per_minute: u32,
    /// Length of the budget "minute" relative to a real one: `0.01` makes it 0.6 s. Non-positive or
    /// non-finite values mean 1.0.
    pub time_scale: f64,
    /// Largest page the server returns (`$top` above it is capped and paged).
    pub max_page_size: usize,
    /// Page size when the client sends no `$top`.
    pub default_page_size: usize,
    /// Seeds every random decision (fault injection, ids).
    pub seed: u64,
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    pub reference: ReferenceData,
    /// Initial fault knobs (change them at runtime with [`IfsSim::set_faults`]).
    pub faults: IfsFaults,
    /// How this tenant differs from the documented IFS (change it at runtime with [`IfsSim::set_tenant`]).
    pub tenant: IfsTenant,
}

impl Default for IfsSimConfig {
    fn default() -> Self {
        Self {
            realm: "ifs".into(),
            clients: vec![("brex-connector".into(), "sim-secret".into())],
            token_ttl: Duration::from_secs(3600),
            requests_per_minute: 1000,
            time_scale: 1.0,
            max_page_size: 5000,
            default_page_size: 1000,
            seed: 42,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            reference: ReferenceData::demo(),
            faults: IfsFaults::default(),
            tenant: IfsTenant::default(),
        }
    }
}

impl fmt::Debug for IfsSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clients: Vec<String> = self.clients.iter().map(|(id, _)| format!("{id}:<redacted>")).collect();
        f.debug_struct("IfsSimConfig")
            .field("realm", &self.realm)
            .field("clients", &clients)
            .field("token_ttl", &self.token_ttl)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("time_scale", &self.time_scale)
            .field("max_page_size", &self.max_page_size)
            .field("default_page_size", &self.default_page_size)
            .field("seed", &self.seed)
            .field("bind", &self.bind)
            .field("faults", &self.faults)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// A running simulator. Dropping it stops the server.
pub struct IfsSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl fmt::Debug for IfsSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IfsSim").field("base_url", &self.base_url()).field("realm", &self.realm()).finish()
    }
}

impl IfsSim {
    /// Binds `config.bind` and serves in a background task.
    pub async fn start(config: IfsSimConfig) -> std::io::Result<IfsSim> {
        let listener = TcpListener::bind(config.bind).await?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let scale = if config.time_scale.is_finite() && config.time_scale > 0.0 { config.time_scale } else { 1.0 };
        let window = Duration::try_from_secs_f64(60.0 * scale).unwrap_or(Duration::from_secs(60));
        let budget = Budget::new(config.requests_per_minute, window);
        let state = State::with_tenant(config.reference, config.faults, config.tenant, config.seed, budget);
        let shared = Arc::new(Shared {
            settings: Settings {
                realm: config.realm,
                clients: config.clients,
                token_ttl: config.token_ttl,
                paging: odata::Paging {
                    default_page_size: config.default_page_size.max(1),
                    max_page_size: config.max_page_size.max(1),
                },
                base_url: format!("http://{addr}"),
            },
            state: Mutex::new(state),
        });
        let app = server::router(shared.clone()).into_make_service_with_connect_info::<ConnHandle>();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(KillableListener(listener), app).await {
                tracing::error!(error = %e, "IFS simulator stopped");
            }
        });
        Ok(IfsSim { shared, addr, task })
    }

    /// The files attached to one voucher (documents whose data was uploaded), oldest first.
    pub fn attachments(
        &self,
        company: &str,
        year: i32,
        voucher_type: &str,
        voucher_no: i64,
    ) -> Vec<documents::SimAttachment> {
        let key_ref = documents::voucher_key_ref(company, year, voucher_type, voucher_no);
        self.shared
            .lock()
            .documents
            .iter()
            .filter(|d| d.key_ref == key_ref)
            .filter_map(|d| {
                d.file.as_ref().map(|f| documents::SimAttachment {
                    file_name: d.file_name.clone(),
                    sha256: f.sha256.clone(),
                    size: f.size,
                    lu_name: d.lu_name.clone(),
                })
            })
            .collect()
    }

    /// Every document revision, with or without its file.
    pub fn documents(&self) -> Vec<documents::Document> {
        self.shared.lock().documents.clone()
    }

    /// The `IFS_URL`, e.g. `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.shared.settings.base_url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `IFS_REALM`.
    pub fn realm(&self) -> &str {
        &self.shared.settings.realm
    }

    /// `{base}/auth/realms/{realm}/protocol/openid-connect/token`.
    pub fn token_url(&self) -> String {
        format!("{}/auth/realms/{}/protocol/openid-connect/token", self.base_url(), self.realm())
    }

    /// `{base}/int/ifsapplications/projection/v1` (no trailing slash).
    pub fn projection_url(&self) -> String {
        format!("{}/int/ifsapplications/projection/v1", self.base_url())
    }

    /// The first configured `(client_id, client_secret)`, if any.
    pub fn client(&self) -> Option<(String, String)> {
        self.shared.settings.clients.first().cloned()
    }

    pub fn counters(&self) -> IfsCounters {
        self.shared.lock().counters_now()
    }

    pub fn reset_counters(&self) {
        self.shared.lock().counters = IfsCounters::default();
    }

    pub fn faults(&self) -> IfsFaults {
        self.shared.lock().faults.clone()
    }

    pub fn set_faults(&self, faults: IfsFaults) {
        self.shared.lock().faults = faults;
    }

    pub fn tenant(&self) -> IfsTenant {
        self.shared.lock().tenant.clone()
    }

    pub fn set_tenant(&self, tenant: IfsTenant) {
        self.shared.lock().tenant = tenant;
    }

    /// Changes only the tenant's `$batch` support.
    pub fn set_batch_support(&self, batch: BatchSupport) {
        self.shared.lock().tenant.batch = batch;
    }

    /// Ends the life of every access token issued so far (IAM restarted, keys rotated): the next request
    /// with one gets 401.
    pub fn expire_tokens(&self) {
        self.shared.lock().tokens.clear();
    }

    /// Committed vouchers, in creation order.
    pub fn vouchers(&self) -> Vec<Voucher> {
        self.shared.lock().vouchers.clone()
    }

    /// Test hook for reconciliation: removes a committed voucher as someone deleting it in IFS would.
    pub fn remove_voucher(&self, company: &str, year: i32, voucher_type: &str, voucher_no: i64) -> Option<Voucher> {
        let mut st = self.shared.lock();
        let at = st.vouchers.iter().position(|v| {
            v.company == company
                && v.accounting_year == year
                && v.voucher_type == voucher_type
                && v.voucher_no == voucher_no
        })?;
        Some(st.vouchers.remove(at))
    }

    /// Test hook for reconciliation: changes a committed voucher in place (an amount edited in IFS); false if
    /// there is no such voucher.
    pub fn edit_voucher(
        &self,
        company: &str,
        year: i32,
        voucher_type: &str,
        voucher_no: i64,
        edit: impl FnOnce(&mut Voucher),
    ) -> bool {
        let mut st = self.shared.lock();
        match st.vouchers.iter_mut().find(|v| {
            v.company == company
                && v.accounting_year == year
                && v.voucher_type == voucher_type
                && v.voucher_no == voucher_no
        }) {
            Some(v) => {
                edit(v);
                true
            }
            None => false,
        }
    }

    /// Test hook for reconciliation: commits a voucher as someone entering it by hand in IFS would, numbered
    /// after every voucher of its company, year and type; returns its number.
    pub fn add_voucher(&self, mut voucher: Voucher) -> i64 {
        let mut st = self.shared.lock();
        let last = st
            .vouchers
            .iter()
            .filter(|v| {
                v.company == voucher.company
                    && v.accounting_year == voucher.accounting_year
                    && v.voucher_type == voucher.voucher_type
            })
            .map(|v| v.voucher_no)
            .max()
            .unwrap_or(0);
        // Far above the series, so the connector's next voucher never takes the same number.
        voucher.voucher_no = last + 1_000_000;
        let no = voucher.voucher_no;
        st.vouchers.push(voucher);
        no
    }

    pub fn voucher_count(&self) -> usize {
        self.shared.lock().vouchers.len()
    }

    /// Virtual vouchers created through the assistant and not yet committed or removed.
    pub fn pending_virtual_count(&self) -> usize {
        self.shared.lock().virtuals.len()
    }

    /// A copy of the current reference data.
    pub fn reference(&self) -> ReferenceData {
        self.shared.lock().reference.clone()
    }

    /// Sets an account's `ValidUntil`; false if the account does not exist.
    pub fn expire_account(&self, company: &str, account: &str, until: NaiveDate) -> bool {
        let mut st = self.shared.lock();
        match st.reference.accounts.iter_mut().find(|a| a.company == company && a.account == account) {
            Some(a) => {
                a.valid_until = until;
                true
            }
            None => false,
        }
    }

    /// Opens or closes a period; false if it does not exist.
    pub fn set_period_status(&self, company: &str, year: i32, period: u32, status: PeriodStatus) -> bool {
        self.shared.lock().reference.set_period_status(company, year, period, status).is_some()
    }

    /// Adds an account, replacing one with the same company and number.
    pub fn add_account(&self, account: Account) {
        let mut st = self.shared.lock();
        st.reference.accounts.retain(|a| !(a.company == account.company && a.account == account.account));
        st.reference.accounts.push(account);
    }

    /// Adds a code part value, replacing one with the same company, part and value.
    pub fn add_code_part(&self, value: CodePartValue) {
        let mut st = self.shared.lock();
        st.reference
            .code_parts
            .retain(|c| !(c.company == value.company && c.code_part == value.code_part && c.value == value.value));
        st.reference.code_parts.push(value);
    }

    /// Turns a voucher type's "Reference Mandatory" setting on or off; false if the type does not exist.
    pub fn set_reference_mandatory(&self, company: &str, voucher_type: &str, mandatory: bool) -> bool {
        let mut st = self.shared.lock();
        match st.reference.voucher_types.iter_mut().find(|v| v.company == company && v.voucher_type == voucher_type) {
            Some(v) => {
                v.reference_mandatory = mandatory;
                true
            }
            None => false,
        }
    }

    /// Stops serving (also done on drop).
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for IfsSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}
