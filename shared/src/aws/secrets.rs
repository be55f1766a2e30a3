//! Secrets Manager.

use async_trait::async_trait;

use crate::domain::Secret;
use crate::error::{AwsError, Disposition};
use crate::ports::SecretStore;

#[derive(Debug, Clone)]
pub struct SecretsManagerStore {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManagerStore {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn get_secret(&self, id: &str) -> Result<Secret, AwsError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("secretsmanager", "GetSecretValue", &e))?;
        out.secret_string.map(Secret::new).ok_or_else(|| {
            AwsError::new(
                "secretsmanager",
                "GetSecretValue",
                format!("secret {id} has no string value"),
                Disposition::Permanent,
            )
        })
    }

    async fn put_secret(&self, id: &str, value: &Secret) -> Result<(), AwsError> {
        self.client
            .put_secret_value()
            .secret_id(id)
            .secret_string(value.expose())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("secretsmanager", "PutSecretValue", &e))?;
        Ok(())
    }
}
