//! What every function shares: its service started once, on the first invocation, and the invocation's
//! deadline.
//!
//! The service is built inside the first invocation, not during init: init then does no network I/O (a cold
//! start reaches the Runtime API's `next` as fast as a hello-world function), the reads the build makes
//! (secrets, mapping document) run concurrently, and a secret that cannot be read fails that invocation,
//! which its source retries, instead of crash-looping the init. The next invocation builds again.

use std::future::Future;

use aws_config::SdkConfig;
use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;

use super::build::{StartupError, aws_config};

/// A function's service, as [`Lazy`] builds it.
pub trait Start: Sized + Send + Sync {
    /// What the service is built from. It is read from the environment during init: a missing variable is a
    /// deployment error, which a failed init reports best.
    type Config: Send + Sync;

    /// The function's name in the log.
    const FUNCTION: &'static str;

    fn start(config: &Self::Config, sdk: &SdkConfig) -> impl Future<Output = Result<Self, StartupError>> + Send;
}

/// The service of one function instance: built on the first invocation and kept; a failed build is logged,
/// fails that invocation and is tried again on the next.
pub struct Lazy<T: Start> {
    config: T::Config,
    /// `None`: the standard AWS configuration, loaded with the service (it reads the system's TLS roots, so
    /// it belongs to the first invocation too).
    sdk: Option<SdkConfig>,
    service: OnceCell<T>,
}

/// The service could not be built for this invocation; why is in the log.
#[derive(Debug, thiserror::Error)]
#[error("the {function} could not start (the reason is logged); the next invocation tries again")]
pub struct NotStarted {
    function: &'static str,
}

impl<T: Start> Lazy<T> {
    pub fn new(config: T::Config) -> Self {
        Self { config, sdk: None, service: OnceCell::new() }
    }

    /// With a given AWS configuration (an emulator's, in tests).
    pub fn with_sdk(config: T::Config, sdk: SdkConfig) -> Self {
        Self { config, sdk: Some(sdk), service: OnceCell::new() }
    }

    pub async fn get(&self) -> Result<&T, NotStarted> {
        let built = self.service.get_or_try_init(|| async {
            match &self.sdk {
                Some(sdk) => T::start(&self.config, sdk).await,
                None => T::start(&self.config, &aws_config().await).await,
            }
        });
        built.await.map_err(|error| {
            tracing::error!(function = T::FUNCTION, error = %error, "cannot start; this invocation fails");
            NotStarted { function: T::FUNCTION }
        })
    }
}

/// Lambda's deadline (epoch ms) as a time; an absent or absurd one means "no time left to promise".
pub fn deadline(context: &lambda_runtime::Context) -> DateTime<Utc> {
    deadline_from_epoch_ms(context.deadline)
}

fn deadline_from_epoch_ms(deadline_ms: u64) -> DateTime<Utc> {
    i64::try_from(deadline_ms).ok().and_then(DateTime::from_timestamp_millis).unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::{AwsError, Disposition};

    /// Fails its first build, then builds.
    struct Flaky(usize);

    static BUILDS: AtomicUsize = AtomicUsize::new(0);

    impl Start for Flaky {
        type Config = ();
        const FUNCTION: &'static str = "test function";

        async fn start(_: &(), _: &SdkConfig) -> Result<Self, StartupError> {
            match BUILDS.fetch_add(1, Ordering::SeqCst) {
                0 => Err(AwsError::new("secretsmanager", "GetSecretValue", "down", Disposition::Retryable).into()),
                n => Ok(Self(n)),
            }
        }
    }

    #[tokio::test]
    async fn a_failed_start_fails_one_invocation_and_the_next_builds_once() {
        let lazy = Lazy::<Flaky>::with_sdk((), SdkConfig::builder().build());
        let failed = lazy.get().await.map(|f| f.0);
        assert!(matches!(failed, Err(NotStarted { function: "test function" })), "{failed:?}");
        assert_eq!(lazy.get().await.map(|f| f.0).ok(), Some(1));
        assert_eq!(lazy.get().await.map(|f| f.0).ok(), Some(1), "kept");
        assert_eq!(BUILDS.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn deadlines_out_of_range_mean_now() {
        assert_eq!(deadline_from_epoch_ms(1_750_000_000_123).timestamp_millis(), 1_750_000_000_123);
        let now = Utc::now();
        assert!(deadline_from_epoch_ms(u64::MAX) >= now);
    }
}
