//! The deployment's credentials (Secrets Manager).

use async_trait::async_trait;

use crate::domain::Secret;
use crate::error::AwsError;

/// Reads and writes secret strings (Secrets Manager).
#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn get_secret(&self, id: &str) -> Result<Secret, AwsError>;
    async fn put_secret(&self, id: &str, value: &Secret) -> Result<(), AwsError>;
}
