//! The mapping document in force, from the table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::DynamoStore;
use crate::mapping::{LoadedMapping, MappingLoadError};
use crate::ports::MappingSource;

impl DynamoStore {
    /// The stored mapping document, parsed: what the functions, the dry run and the field sync all work from.
    pub async fn mapping_in_force(&self) -> Result<LoadedMapping, MappingLoadError> {
        let stored = self.load_mapping().await?.ok_or(MappingLoadError::Missing)?;
        LoadedMapping::parse(&stored.document, stored.version)
            .map_err(|error| MappingLoadError::Invalid { version: stored.version, error })
    }
}

/// The mapping document from DynamoDB, re-read at most every `ttl` (a pushed change reaches warm instances
/// within that time).
pub struct CachedMapping {
    store: DynamoStore,
    ttl: Duration,
    cached: Mutex<Option<(Instant, Arc<LoadedMapping>)>>,
}

impl CachedMapping {
    pub fn new(store: DynamoStore, ttl: Duration) -> Self {
        Self { store, ttl, cached: Mutex::new(None) }
    }
}

#[async_trait]
impl MappingSource for CachedMapping {
    async fn mapping(&self) -> Result<Arc<LoadedMapping>, MappingLoadError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, mapping)) = cached.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(mapping.clone());
        }
        let loaded = Arc::new(self.store.mapping_in_force().await?);
        *cached = Some((Instant::now(), loaded.clone()));
        Ok(loaded)
    }
}
