//! AWS adapters for the ports: SQS (work queue), DynamoDB (idempotency, leases, the mapping document) and
//! Secrets Manager. All of them are built from one `SdkConfig` loaded the standard way, so `AWS_ENDPOINT_URL`
//! points them at an emulator without any custom variable.

pub mod attachments;
pub mod audit;
mod aws_error;
pub mod budget;
pub mod capability;
pub mod dynamodb;
mod mapping;
pub mod operator;
pub mod poll_state;
mod posted;
pub mod reconcile;
pub mod report;
pub mod secrets;
pub mod spend;
pub mod sqs;
pub mod status;
pub mod table;

pub use dynamodb::DynamoStore;
pub use mapping::CachedMapping;
pub use secrets::SecretsManagerStore;
pub use sqs::SqsQueue;
