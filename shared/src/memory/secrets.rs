//! Secrets in memory. As in Secrets Manager, a secret must exist before a value can be put to it.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::domain::Secret;
use crate::error::{AwsError, Disposition};
use crate::ports::SecretStore;

#[derive(Debug, Default)]
pub struct MemorySecrets {
    secrets: Mutex<HashMap<String, Secret>>,
}

impl MemorySecrets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates (or overwrites) the secret `id` (Secrets Manager's `CreateSecret`).
    pub fn with(self, id: &str, value: impl Into<String>) -> Self {
        self.insert(id, value);
        self
    }

    pub fn insert(&self, id: &str, value: impl Into<String>) {
        lock(&self.secrets).insert(id.to_owned(), Secret::new(value));
    }
}

fn not_found(operation: &'static str, id: &str) -> AwsError {
    // Secrets Manager answers ResourceNotFoundException (400): retrying cannot help.
    AwsError::new("secretsmanager", operation, format!("secret {id} not found"), Disposition::Permanent)
}

#[async_trait]
impl SecretStore for MemorySecrets {
    async fn get_secret(&self, id: &str) -> Result<Secret, AwsError> {
        lock(&self.secrets).get(id).cloned().ok_or_else(|| not_found("GetSecretValue", id))
    }

    async fn put_secret(&self, id: &str, value: &Secret) -> Result<(), AwsError> {
        match lock(&self.secrets).get_mut(id) {
            Some(stored) => {
                *stored = value.clone();
                Ok(())
            }
            None => Err(not_found("PutSecretValue", id)),
        }
    }
}
