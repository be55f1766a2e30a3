//! Domain types shared by every function: identifiers, money, secrets and the work-queue message.

pub mod ids;
pub mod money;
pub mod secret;
pub mod subject;
pub mod work;

pub use ids::{
    AccountCode, AccountingRecordId, CodePartValue, CompanyCode, ETag, ExpenseId, InvalidId, ReferenceNumber,
    VoucherType, WebhookId,
};
pub use money::{CurrencyCode, MinorUnits, Money, MoneyError};
pub use secret::{BrexCredentials, IfsCredentials, Secret};
pub use subject::Subject;
pub use work::{Origin, WorkItem};
