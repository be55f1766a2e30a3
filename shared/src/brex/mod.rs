//! Brex: the record model, authentication and the HTTP client.

mod adapter;
pub mod auth;
pub mod client;
pub mod error;
pub mod expense;
pub mod fields;
pub mod model;
pub mod receipts;

pub use auth::{AuthOptions, BrexAuth, OAuthContext};
pub use client::{
    BrexClient, BrexConfig, ExportReport, ExportResult, ExportStatus, MalformedRecord, RecordFetch, RecordQuery,
    RecordQueryPage, WebhookSecretEntry, WebhookSubscription,
};
pub use error::BrexError;
pub use expense::{Expense, ExpenseFetch, ExpenseQuery, ExpenseQueryPage, MalformedExpense};
pub use fields::{
    Field, FieldGroup, FieldValue, FieldValueData, FieldValueUpdate, MAX_VALUES_PER_CALL, NewField, NewFieldValue,
    ValueKey,
};
pub use receipts::BrexReceipts;
