//! Which voucher flow a tenant takes. `$batch` is documented by IFS but a release, a gateway or a tailored
//! projection may refuse it, or refuse the ETag references (`If-Match: $1`) inside its change sets; under
//! `[ifs.api] batch = "auto"` the poster finds out by trying, falls back to the step-by-step flow, and
//! remembers that for [`FLOW_MEMORY`] — in the instance and, when a [`CapabilityStore`] is attached, in the
//! table so every instance skips the failed attempt — after which `$batch` is tried again, so a tenant
//! upgrade is picked up by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};

use crate::ports::{Capability, CapabilityStore};

/// How long a refusal of `$batch` is believed.
pub const FLOW_MEMORY: Duration = Duration::hours(1);

/// How often an instance that knows nothing itself looks at what other instances stored.
const STORE_RECHECK: std::time::Duration = std::time::Duration::from_secs(300);

/// The name under which the flow is stored.
pub const FLOW_CAPABILITY: &str = "ifs_voucher_flow";
/// The stored value of a refusal of `$batch`.
pub const STEP_BY_STEP: &str = "step_by_step";

/// The flow the poster uses for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VoucherFlow {
    /// One `$batch` request for several vouchers, one change set each.
    Batch,
    /// Header, rows and `CreateVoucher` as separate requests per voucher.
    StepByStep,
}

impl std::fmt::Display for VoucherFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Batch => "$batch",
            Self::StepByStep => "step by step",
        })
    }
}

/// A refusal of `$batch`, believed until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: String,
    pub until: DateTime<Utc>,
}

#[derive(Default)]
struct Local {
    refused: Option<Refused>,
    store_checked: Option<Instant>,
}

/// What one instance knows about its tenant's `$batch`, and where it shares it.
#[derive(Default)]
pub struct FlowMemory {
    local: Mutex<Local>,
    store: OnceLock<Arc<dyn CapabilityStore>>,
    /// A change set of ours was applied: ETag references work here, so a 412 is a stale ETag, not a
    /// refusal of references.
    references_proven: AtomicBool,
}

impl FlowMemory {
    /// Shares what is learned through `store` (the table); the first store attached stays.
    pub fn attach(&self, store: Arc<dyn CapabilityStore>) {
        let _ = self.store.set(store);
    }

    /// The refusal in force at `now`, if any: this instance's own, else (looked up at most every few
    /// minutes) one another instance stored. A store that cannot be read means "try `$batch`".
    pub async fn refusal(&self, now: DateTime<Utc>) -> Option<Refused> {
        let look_up = {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(refused) = local.refused.as_ref().filter(|r| r.until > now) {
                return Some(refused.clone());
            }
            local.refused = None;
            let due = local.store_checked.is_none_or(|at| at.elapsed() >= STORE_RECHECK);
            if due {
                local.store_checked = Some(Instant::now());
            }
            due
        };
        let store = self.store.get().filter(|_| look_up)?;
        match store.recall(FLOW_CAPABILITY).await {
            Ok(Some(c)) if c.value == STEP_BY_STEP && c.until > now => {
                let refused = Refused { reason: c.reason, until: c.until };
                self.local.lock().unwrap_or_else(PoisonError::into_inner).refused = Some(refused.clone());
                Some(refused)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the stored IFS voucher flow; trying $batch");
                None
            }
        }
    }

    /// Records that the tenant refused `$batch` (why), logs it at WARN once, and stores it for the other
    /// instances.
    pub async fn refuse(&self, reason: &str, now: DateTime<Utc>) {
        let refused = Refused { reason: reason.to_owned(), until: now + FLOW_MEMORY };
        let first = {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            let first = local.refused.as_ref().is_none_or(|r| r.until <= now);
            local.refused = Some(refused.clone());
            first
        };
        if first {
            tracing::warn!(reason, until = %refused.until, "IFS refused $batch; vouchers go step by step");
        }
        if let Some(store) = self.store.get() {
            let capability = Capability { value: STEP_BY_STEP.into(), reason: refused.reason, until: refused.until };
            if let Err(e) = store.remember(FLOW_CAPABILITY, &capability).await {
                tracing::warn!(error = %e, "could not store the IFS voucher flow; other instances find out themselves");
            }
        }
    }

    pub fn references_proven(&self) -> bool {
        self.references_proven.load(Ordering::Relaxed)
    }

    pub fn prove_references(&self) {
        self.references_proven.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AwsError;
    use async_trait::async_trait;

    #[derive(Default)]
    struct Table(Mutex<Option<Capability>>);

    #[async_trait]
    impl CapabilityStore for Table {
        async fn recall(&self, _name: &str) -> Result<Option<Capability>, AwsError> {
            Ok(self.0.lock().unwrap_or_else(PoisonError::into_inner).clone())
        }
        async fn remember(&self, _name: &str, c: &Capability) -> Result<(), AwsError> {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_refusal_is_shared_and_expires() {
        let table = Arc::new(Table::default());
        let now = Utc::now();
        let first = FlowMemory::default();
        first.attach(table.clone());
        assert_eq!(first.refusal(now).await, None);
        first.refuse("$batch answered 404", now).await;
        assert_eq!(first.refusal(now).await.map(|r| r.reason), Some("$batch answered 404".into()));

        // Another instance learns it from the table, without trying $batch itself.
        let second = FlowMemory::default();
        second.attach(table.clone());
        let seen = second.refusal(now).await.map(|r| r.until);
        assert_eq!(seen, Some(now + FLOW_MEMORY));

        // After the memory runs out $batch is tried again (a tenant upgrade is picked up).
        assert_eq!(first.refusal(now + FLOW_MEMORY + Duration::seconds(1)).await, None);
    }
}
