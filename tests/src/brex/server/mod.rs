//! The HTTP simulator. This module is its public face: [`BrexSim`] (start, stop) and [`BrexSimHandle`] (what
//! a test reads and changes while it runs); the rest is one file per idea:
//!
//! - `config`: [`BrexSimConfig`], [`OAuthClient`] and [`Faults`];
//! - `state`: what the simulator holds (records, tokens, secrets, idempotency stores) and its counters;
//! - `router`: the route table and the request pipeline every API route runs through (auth, rate limit,
//!   faults, latency, counting);
//! - `query`: query-string parsing, timestamps, keyset cursors and limits shared by the list routes;
//! - `oauth`: the token endpoint with rotating refresh tokens;
//! - `webhooks`: `/v1/webhooks` subscriptions and signing secrets (delivery itself is [`super::webhook`]);
//! - `records`: `GET /v3/accounting/records[/{id}]`;
//! - `export`: `POST /v3/accounting/records/export-results`;
//! - `expenses`: `GET /v1/expenses[/{id}]`;
//! - `receipts`: receipt files behind presigned, expiring `download_uris` (an S3 stand-in);
//! - `fields`: the Fields API (`/v1/fields…`);
//! - `admin`: the `/_sim` routes.
//!
//! `oauth`, `webhooks`, `records`, `export`, `expenses` and `fields` each end with the [`BrexSimHandle`]
//! methods for their own data; the ones for the whole simulator (address, faults, counters) are here.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::brex::generator::RecordGenerator;

mod admin;
mod config;
mod expenses;
mod export;
pub(super) mod fields;
mod oauth;
mod query;
mod receipts;
mod records;
mod router;
mod state;
mod webhooks;

pub use config::{BrexSimConfig, Faults, OAuthClient};
pub use export::{ExportOutcome, ExportResult};
pub use oauth::TOKEN_PATH;
pub use receipts::DEFAULT_RECEIPT_URL_TTL;
pub use state::{BrexCounters, RouteCount};
pub use webhooks::{SecretStatus, WebhookSecret};

use router::router;
use state::{Inner, SimState, snapshot};
use webhooks::random_secret;

/// A running Brex simulator. Dropping it stops the server. Derefs to [`BrexSimHandle`] for the data,
/// fault, counter and webhook APIs.
pub struct BrexSim {
    handle: BrexSimHandle,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A cheap, cloneable reference to a running simulator's state (share it across tasks). It does not keep
/// the server alive.
#[derive(Clone)]
pub struct BrexSimHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BrexSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrexSim").field("addr", &self.addr()).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BrexSimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrexSimHandle").field("addr", &self.addr()).finish_non_exhaustive()
    }
}

impl std::ops::Deref for BrexSim {
    type Target = BrexSimHandle;

    fn deref(&self) -> &BrexSimHandle {
        &self.handle
    }
}

impl BrexSim {
    /// Binds (default `127.0.0.1:0`) and serves in a background task.
    pub async fn start(config: BrexSimConfig) -> std::io::Result<BrexSim> {
        let bind = config.bind.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let mut rng = StdRng::seed_from_u64(config.seed);
        let secret = match &config.webhook_secret {
            Some(s) => s.clone(),
            None => random_secret(&mut rng),
        };
        let state = SimState {
            records: HashMap::new(),
            expenses: HashMap::new(),
            user_tokens: config.user_tokens.clone(),
            access_tokens: HashMap::new(),
            refresh_token: config.oauth.as_ref().map(|o| o.refresh_token.clone()),
            secrets: vec![WebhookSecret { secret, status: SecretStatus::Active }],
            rate: None,
            faults: config.faults.clone(),
            generator: RecordGenerator::new(config.seed ^ 0x5eed_0fb2_e800),
            rng,
            idempotency: HashMap::new(),
            exports: Vec::new(),
            subscriptions: BTreeMap::new(),
            subscription_seq: 0,
            webhook_idempotency: HashMap::new(),
            routes: BTreeMap::new(),
            counters: BrexCounters::default(),
            receipts: receipts::ReceiptState::new(config.seed ^ 0x7ec3_1b75),
        };
        let inner = Arc::new(Inner {
            addr,
            config,
            state: Mutex::new(state),
            deliveries: Arc::default(),
            fields: Mutex::default(),
        });
        let app = router(inner.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "brex sim server stopped");
            }
        });
        Ok(BrexSim { handle: BrexSimHandle { inner }, shutdown_tx: Some(tx), task: Some(task) })
    }

    /// A cloneable handle to this simulator's state.
    pub fn handle(&self) -> BrexSimHandle {
        self.handle.clone()
    }

    /// Stops the server and waits (briefly) for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for BrexSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl BrexSimHandle {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The OAuth token endpoint, `{base}/oauth2/default/v1/token`.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The first configured user token.
    pub fn user_token(&self) -> Option<String> {
        self.inner.lock().user_tokens.first().cloned()
    }

    pub fn company_id(&self) -> String {
        self.inner.config.company_id.clone()
    }

    // ---- faults & counters ----

    pub fn set_faults(&self, faults: Faults) {
        self.inner.lock().faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.inner.lock().faults.clone()
    }

    pub fn counters(&self) -> BrexCounters {
        snapshot(&self.inner)
    }

    /// Zeroes every counter and the rate-limit window.
    pub fn reset_counters(&self) {
        let mut st = self.inner.lock();
        st.routes.clear();
        st.counters = BrexCounters::default();
        st.rate = None;
        self.inner.deliveries.store(0, Ordering::Relaxed);
    }
}
