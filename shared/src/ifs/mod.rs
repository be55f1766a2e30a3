//! IFS Cloud, in three pieces over one connection: the OData transport (token cache, request budget,
//! retries, ETag-guarded mutations, paging, counters), the reference reader (accounts, code parts, the
//! accounting calendar, with its cache) and the ledger (the dedup query and voucher creation, step by step
//! or through `$batch`). [`IfsClient`] builds and owns the three.

pub mod api_names;
pub mod attachment;
pub mod budget;
pub mod client;
pub mod error;
pub mod filter;
pub mod ledger;
mod multipart;
pub mod probe;
pub mod reference;
pub mod token;
pub mod transport;

pub use api_names::{BatchMode, IfsApiNames};
pub use attachment::IfsAttachments;
pub use client::IfsClient;
pub use error::IfsError;
pub use filter::Filter;
pub use ledger::IfsLedger;
pub use ledger::capability::{FlowMemory, VoucherFlow};
pub use ledger::voucher::VoucherKey;
pub use reference::{AccountingPeriodInfo, CodePartInfo, IfsReference};
pub use transport::{IfsClientConfig, IfsStats, IfsTransport, ListQuery, Resend};
