//! IFS Cloud: the OData client (token cache, request budget, retries, ETag-guarded mutations, paging),
//! reference reads, the dedup query and voucher creation (step by step or through `$batch`), and the
//! projection names it uses.

pub mod api_names;
mod batch;
pub mod budget;
pub mod capability;
pub mod client;
pub mod error;
pub mod filter;
pub mod probe;
pub mod reference;
pub mod token;
pub mod voucher;

pub use api_names::{BatchMode, IfsApiNames};
pub use budget::RequestBudget;
pub use capability::{FlowMemory, VoucherFlow};
pub use client::{IfsClient, IfsClientConfig, IfsStats, ListQuery, Resend};
pub use error::IfsError;
pub use filter::Filter;
pub use reference::{AccountingPeriodInfo, CodePartInfo};
pub use voucher::VoucherKey;
