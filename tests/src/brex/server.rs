//! The HTTP simulator: configuration, state, the API routes and the `/_sim` admin routes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::generator::{GeneratorOptions, RecordGenerator};
#[path = "fields.rs"]
pub(super) mod fields;
use super::model::{AccountingRecord, Expense, ReviewStatus, SourceType};
use super::webhook::{self, DeliveryReport, HttpTransport, WebhookSender};

/// Path of the simulated OAuth token endpoint (same shape as `accounts-api.brex.com/oauth2/default/v1/token`).
pub const TOKEN_PATH: &str = "/oauth2/default/v1/token";

/// A partner OAuth client known to the simulator.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: String,
    /// The refresh token valid at start; every use rotates it.
    pub refresh_token: String,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .finish()
    }
}

/// Simulator configuration. Defaults follow the Brex docs; where the docs are silent the choice is noted.
#[derive(Clone)]
pub struct BrexSimConfig {
    /// Accepted user tokens (`Authorization: Bearer …`). Default: `["bxt_sim_user_token"]`.
    pub user_tokens: Vec<String>,
    /// Enables the OAuth token endpoint.
    pub oauth: Option<OAuthClient>,
    /// Lifetime of issued access tokens (Brex: 1 h).
    pub access_token_ttl: Duration,
    /// Fixed-window rate limit over all authenticated API requests (Brex: 1000 per 60 s).
    pub rate_limit_per_window: u32,
    pub rate_window: Duration,
    /// Seeds every random choice (tokens, secrets, faults, generated records).
    pub seed: u64,
    /// Default `127.0.0.1:0`.
    pub bind: Option<SocketAddr>,
    /// Initial webhook secret; default `whsec_` + base64(32 bytes derived from `seed`).
    pub webhook_secret: Option<String>,
    /// Brex returns only recently updated records when a query has neither `ids` nor `updated_at[...]`
    /// (brex-api.md §3.2). The width is undocumented; default 24 h.
    pub default_updated_window: Duration,
    /// Max `limit` on `/v3/accounting/records` (undocumented; default 1000; larger → 400).
    pub max_records_limit: u32,
    /// Max `limit` on `/v1/expenses` (docs conflict 100/1000; default 100; larger → 400).
    pub max_expenses_limit: u32,
    /// Max `results` per export-results call (undocumented; default 500; larger → 400).
    pub max_export_batch: usize,
    /// How long an `Idempotency-Key` is remembered (undocumented; default 24 h).
    pub idempotency_window: Duration,
    /// Docs: `review_status` is only valid with source_type CARD/REIMBURSEMENT. When true (default) a
    /// `review_status` without such a `source_type` is a 400.
    pub review_status_requires_source_type: bool,
    /// Status for an expired access token: 401 (default) or 403 (Brex's error page says "403 Expired token").
    pub expired_token_status: u16,
    /// `companyId` in webhooks and `GET /v2/company`.
    pub company_id: String,
    /// Faults active from the start.
    pub faults: Faults,
}

impl Default for BrexSimConfig {
    fn default() -> Self {
        BrexSimConfig {
            user_tokens: vec!["bxt_sim_user_token".to_owned()],
            oauth: None,
            access_token_ttl: Duration::from_secs(3600),
            rate_limit_per_window: 1000,
            rate_window: Duration::from_secs(60),
            seed: 0,
            bind: None,
            webhook_secret: None,
            default_updated_window: Duration::from_secs(24 * 3600),
            max_records_limit: 1000,
            max_expenses_limit: 100,
            max_export_batch: 500,
            idempotency_window: Duration::from_secs(24 * 3600),
            review_status_requires_source_type: true,
            expired_token_status: 401,
            company_id: "cuacc_sim000000000000000000001".to_owned(),
            faults: Faults::default(),
        }
    }
}

impl std::fmt::Debug for BrexSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrexSimConfig")
            .field("user_tokens", &format!("<{} redacted>", self.user_tokens.len()))
            .field("oauth", &self.oauth)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("rate_limit_per_window", &self.rate_limit_per_window)
            .field("rate_window", &self.rate_window)
            .field("seed", &self.seed)
            .field("bind", &self.bind)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "<redacted>"))
            .field("default_updated_window", &self.default_updated_window)
            .field("company_id", &self.company_id)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// Injected faults, deterministic from the seed. Settable at runtime ([`BrexSim::set_faults`],
/// `POST /_sim/faults`). Apply to authenticated API requests (not the token endpoint, not `/_sim`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// The next N authenticated requests get 429.
    pub burst_429: u32,
    /// Probability that a request fails with a status from `error_statuses` before it is handled.
    pub error_rate: f64,
    /// Statuses drawn for injected errors (default 500, 502, 503).
    pub error_statuses: Vec<u16>,
    /// Probability that a request IS handled (state changes) but the client gets a 5xx anyway, like a
    /// gateway timeout after commit. Exercises idempotent retries.
    pub post_commit_error_rate: f64,
    /// Added to every API response.
    pub latency_ms: u64,
    /// Sends `Retry-After` with 429s. Off by default: Brex documents none.
    pub retry_after_secs: Option<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            burst_429: 0,
            error_rate: 0.0,
            error_statuses: vec![500, 502, 503],
            post_commit_error_rate: 0.0,
            latency_ms: 0,
            retry_after_secs: None,
        }
    }
}

/// Webhook secret status as `GET /v1/webhooks/secrets` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecretStatus {
    Active,
    PendingRevoke,
}

/// One webhook signing secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecret {
    pub secret: String,
    pub status: SecretStatus,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecret").field("secret", &"<redacted>").field("status", &self.status).finish()
    }
}

/// A webhook subscription (`/v1/webhooks`, brex-api.md §2.1): `{id, url, event_types, status}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSubscription {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    /// `ACTIVE` or `INACTIVE`.
    pub status: String,
}

/// Brex's `WebhookEventType` enum (brex-api.md §2.2).
pub const WEBHOOK_EVENT_TYPES: [&str; 20] = [
    "REFERRAL_CREATED",
    "REFERRAL_ACTIVATED",
    "REFERRAL_APPLICATION_STATUS_CHANGED",
    "TRANSFER_PROCESSED",
    "TRANSFER_FAILED",
    "EXPENSE_PAYMENT_UPDATED",
    "USER_UPDATED",
    "EMBEDDED_CARD_TRANSACTION_UPDATED",
    "EMBEDDED_CARD_UPDATED",
    "EMBEDDED_ACCOUNT_UPDATED",
    "EMBEDDED_CARD_SHIPPING_UPDATED",
    "EMBEDDED_DISPUTE_UPDATED",
    "PARTNERSHIP_INTEGRATION_CONNECTION_UPDATED",
    "EMBEDDED_CARD_AUTHORIZATION",
    "EMBEDDED_FRAUD_ALERT",
    "EMBEDDED_BILLING_GROUP_UPDATED",
    "EMBEDDED_LEGAL_ENTITY_UPDATED",
    "EMBEDDED_BILLING_STATEMENT_UPDATED",
    "EMBEDDED_USER_STATUS_UPDATED",
    "ACCOUNTING_RECORD_READY_FOR_EXPORT",
];

/// What the connector reported for a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportOutcome {
    Success { reference_id: Option<String>, deep_link_url: Option<String> },
    Failure { error_message: String },
}

/// One accepted export-results entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportResult {
    pub accounting_record_id: String,
    pub outcome: ExportOutcome,
    /// The record's version when the result was reported.
    pub record_version: u64,
    pub idempotency_key: Option<String>,
    pub reported_at: DateTime<Utc>,
}

/// Requests counted per (method, route template, status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCount {
    pub method: String,
    pub route: String,
    pub status: u16,
    pub count: u64,
}

/// Counter snapshot ([`BrexSim::counters`], `GET /_sim/counters`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrexCounters {
    /// Every request to an API route or the token endpoint (not `/_sim`).
    pub total_requests: u64,
    pub by_route: Vec<RouteCount>,
    /// Every 429 sent (rate limit + injected bursts).
    pub rate_limited: u64,
    /// 429s from `Faults::burst_429`.
    pub injected_429: u64,
    /// 5xx from `Faults::error_rate` / `post_commit_error_rate`.
    pub injected_5xx: u64,
    /// 401/403 auth rejections.
    pub unauthorized: u64,
    /// Access tokens issued by the token endpoint.
    pub token_fetches: u64,
    /// Token requests rejected with `invalid_grant` (e.g. a reused refresh token).
    pub invalid_grants: u64,
    /// Export-results responses replayed from the idempotency store.
    pub idempotent_replays: u64,
    /// Webhook delivery attempts made through [`BrexSim::webhook_sender`] senders.
    pub webhook_deliveries: u64,
}

impl BrexCounters {
    /// Requests with exactly this method, route template (e.g. `/v3/accounting/records/{record_id}`) and status.
    pub fn count(&self, method: &str, route: &str, status: u16) -> u64 {
        self.by_route
            .iter()
            .filter(|c| c.method == method && c.route == route && c.status == status)
            .map(|c| c.count)
            .sum()
    }

    /// Requests with this method and route, any status.
    pub fn route_total(&self, method: &str, route: &str) -> u64 {
        self.by_route.iter().filter(|c| c.method == method && c.route == route).map(|c| c.count).sum()
    }
}

struct IdemEntry {
    request: Value,
    status: StatusCode,
    body: Value,
    at: Instant,
}

struct RateWindow {
    start: Instant,
    count: u32,
}

struct SimState {
    records: HashMap<String, AccountingRecord>,
    expenses: HashMap<String, Expense>,
    user_tokens: Vec<String>,
    access_tokens: HashMap<String, Instant>,
    refresh_token: Option<String>,
    secrets: Vec<WebhookSecret>,
    rate: Option<RateWindow>,
    faults: Faults,
    rng: StdRng,
    generator: RecordGenerator,
    idempotency: HashMap<String, IdemEntry>,
    exports: Vec<ExportResult>,
    /// Webhook subscriptions by id (`/v1/webhooks`); ids are sequential so the map order is creation order.
    subscriptions: BTreeMap<String, WebhookSubscription>,
    subscription_seq: u64,
    /// `POST /v1/webhooks` idempotency keys, kept apart from export-results' keys.
    webhook_idempotency: HashMap<String, IdemEntry>,
    routes: BTreeMap<(String, String, u16), u64>,
    counters: BrexCounters,
}

struct Inner {
    addr: SocketAddr,
    config: BrexSimConfig,
    state: Mutex<SimState>,
    deliveries: Arc<AtomicU64>,
    /// The Fields API (`fields.rs`), locked on its own.
    fields: Mutex<fields::FieldsState>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters to a sim.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

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

fn random_token(rng: &mut StdRng, prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let s: String = (0..40).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
    format!("{prefix}{s}")
}

fn random_secret(rng: &mut StdRng) -> String {
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    format!("whsec_{}", STANDARD.encode(key))
}

/// Truncates to the microsecond precision the wire carries, so keyset cursors (µs) and stored values agree.
fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t - TimeDelta::nanoseconds(i64::from(t.timestamp_subsec_nanos() % 1000))
}

fn now_micros() -> DateTime<Utc> {
    to_micros(Utc::now())
}

/// Marks a record as changed: newer `updated_at` (strictly increasing) and `version + 1`.
fn bump(record: &mut AccountingRecord) {
    let now = now_micros();
    record.updated_at = if now > record.updated_at { now } else { record.updated_at + TimeDelta::microseconds(1) };
    record.version += 1;
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

    // ---- data API ----

    /// Inserts or replaces records (by id), stored exactly as given.
    pub fn insert_records(&self, records: Vec<AccountingRecord>) {
        let mut st = self.inner.lock();
        for mut r in records {
            r.updated_at = to_micros(r.updated_at);
            st.records.insert(r.id.clone(), r);
        }
    }

    /// Parses and inserts records given as wire JSON. Nothing is inserted if any fails to parse.
    pub fn insert_records_json(&self, records: Vec<Value>) -> Result<usize, serde_json::Error> {
        let parsed = records.into_iter().map(serde_json::from_value).collect::<Result<Vec<AccountingRecord>, _>>()?;
        let n = parsed.len();
        self.insert_records(parsed);
        Ok(n)
    }

    /// Inserts or replaces expenses (by id).
    pub fn insert_expenses(&self, expenses: Vec<Expense>) {
        let mut st = self.inner.lock();
        for mut e in expenses {
            e.updated_at = to_micros(e.updated_at);
            st.expenses.insert(e.id.clone(), e);
        }
    }

    pub fn record(&self, id: &str) -> Option<AccountingRecord> {
        self.inner.lock().records.get(id).cloned()
    }

    /// All records ordered by (updated_at, id).
    pub fn records(&self) -> Vec<AccountingRecord> {
        sorted_records(self.inner.lock().records.values().cloned().collect())
    }

    /// Records with this review status, ordered by (updated_at, id).
    pub fn records_by_status(&self, status: ReviewStatus) -> Vec<AccountingRecord> {
        sorted_records(self.inner.lock().records.values().filter(|r| r.review_status == status).cloned().collect())
    }

    pub fn expense(&self, id: &str) -> Option<Expense> {
        self.inner.lock().expenses.get(id).cloned()
    }

    /// Sets the review status of the given records (bumping updated_at and version). Returns how many existed.
    pub fn set_review_status<S: AsRef<str>>(&self, ids: &[S], status: ReviewStatus) -> usize {
        let mut st = self.inner.lock();
        let mut n = 0;
        for id in ids {
            if let Some(r) = st.records.get_mut(id.as_ref()) {
                r.review_status = status;
                bump(r);
                n += 1;
            }
        }
        n
    }

    /// `set_review_status(ids, READY_FOR_EXPORT)`: what a bookkeeper clicking "export" does.
    pub fn mark_ready_for_export<S: AsRef<str>>(&self, ids: &[S]) -> usize {
        self.set_review_status(ids, ReviewStatus::ReadyForExport)
    }

    /// An edit in Brex: bumps updated_at and version. False if unknown.
    pub fn touch_record(&self, id: &str) -> bool {
        match self.inner.lock().records.get_mut(id) {
            Some(r) => {
                bump(r);
                true
            }
            None => false,
        }
    }

    /// Applies `f` to a record and bumps it (for ad-hoc edits in tests). False if unknown.
    pub fn update_record(&self, id: &str, f: impl FnOnce(&mut AccountingRecord)) -> bool {
        match self.inner.lock().records.get_mut(id) {
            Some(r) => {
                f(r);
                bump(r);
                true
            }
            None => false,
        }
    }

    /// Generates `n` records (updated within the last 30 days, READY_FOR_EXPORT) plus their expenses, inserts
    /// them, and returns the record ids. Deterministic in content for a given seed and call order.
    pub fn generate_records(&self, n: usize) -> Vec<String> {
        let mut st = self.inner.lock();
        let defaults = GeneratorOptions::default();
        st.generator.options.start = defaults.start;
        st.generator.options.end = defaults.end;
        let pairs = st.generator.pairs(n);
        let mut ids = Vec::with_capacity(n);
        for (r, e) in pairs {
            ids.push(r.id.clone());
            st.records.insert(r.id.clone(), r);
            st.expenses.insert(e.id.clone(), e);
        }
        ids
    }

    /// The latest export result reported for a record.
    pub fn export_result(&self, id: &str) -> Option<ExportResult> {
        self.inner.lock().exports.iter().rev().find(|e| e.accounting_record_id == id).cloned()
    }

    /// Every accepted export result, in the order reported (replays are not repeated).
    pub fn export_results(&self) -> Vec<ExportResult> {
        self.inner.lock().exports.clone()
    }

    // ---- auth ----

    /// The refresh token currently valid (rotates on each use).
    pub fn current_refresh_token(&self) -> Option<String> {
        self.inner.lock().refresh_token.clone()
    }

    /// Makes every issued access token expired (they are then rejected as expired, not unknown).
    pub fn expire_access_tokens(&self) {
        let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap_or_else(Instant::now);
        for exp in self.inner.lock().access_tokens.values_mut() {
            *exp = past;
        }
    }

    /// Revokes a user token or access token.
    pub fn revoke_token(&self, token: &str) {
        let mut st = self.inner.lock();
        st.user_tokens.retain(|t| t != token);
        st.access_tokens.remove(token);
    }

    /// Adds an accepted user token.
    pub fn add_user_token(&self, token: &str) {
        self.inner.lock().user_tokens.push(token.to_owned());
    }

    // ---- webhooks ----

    /// Current secrets (ACTIVE first, then PENDING_REVOKE during a rotation).
    pub fn webhook_secrets(&self) -> Vec<WebhookSecret> {
        self.inner.lock().secrets.clone()
    }

    /// Just the secret strings, in the order signatures are emitted.
    pub fn webhook_secret_strings(&self) -> Vec<String> {
        self.webhook_secrets().into_iter().map(|s| s.secret).collect()
    }

    /// Starts a rotation: a new ACTIVE secret; the previous ACTIVE becomes PENDING_REVOKE. Returns the new one.
    pub fn rotate_webhook_secret(&self) -> String {
        let mut st = self.inner.lock();
        let new = random_secret(&mut st.rng);
        // Only one old key is kept: a second rotation before finishing drops the oldest.
        st.secrets.retain(|s| s.status == SecretStatus::Active);
        for s in &mut st.secrets {
            s.status = SecretStatus::PendingRevoke;
        }
        st.secrets.insert(0, WebhookSecret { secret: new.clone(), status: SecretStatus::Active });
        new
    }

    /// Ends a rotation: drops PENDING_REVOKE secrets.
    pub fn finish_rotation(&self) {
        self.inner.lock().secrets.retain(|s| s.status == SecretStatus::Active);
    }

    /// Every webhook subscription, in creation order.
    pub fn webhook_subscriptions(&self) -> Vec<WebhookSubscription> {
        self.inner.lock().subscriptions.values().cloned().collect()
    }

    /// Sets a subscription's status (Brex may turn a failing endpoint `INACTIVE`). False if unknown.
    pub fn set_webhook_subscription_status(&self, id: &str, status: &str) -> bool {
        match self.inner.lock().subscriptions.get_mut(id) {
            Some(sub) => {
                sub.status = status.to_owned();
                true
            }
            None => false,
        }
    }

    /// A sender that signs with the sim's current secrets at each attempt and counts deliveries.
    pub fn webhook_sender(&self) -> WebhookSender {
        let inner = self.inner.clone();
        WebhookSender::with_source(
            Arc::new(move || inner.lock().secrets.iter().map(|s| s.secret.clone()).collect()),
            self.inner.deliveries.clone(),
        )
    }

    /// `ACCOUNTING_RECORD_READY_FOR_EXPORT` body for these ids with this sim's company id.
    pub fn ready_for_export_body<S: AsRef<str>>(&self, ids: &[S]) -> Vec<u8> {
        webhook::ready_for_export_body(ids, &self.inner.config.company_id)
    }

    /// Delivers a ready-for-export webhook to `url` with Svix retries scaled by `time_scale`.
    pub async fn send_ready_for_export<S: AsRef<str>>(&self, url: &str, ids: &[S], time_scale: f64) -> DeliveryReport {
        let body = self.ready_for_export_body(ids);
        self.webhook_sender().time_scale(time_scale).send(&HttpTransport::new(url), body).await
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

fn snapshot(inner: &Inner) -> BrexCounters {
    let st = inner.lock();
    let mut c = st.counters.clone();
    c.by_route = st
        .routes
        .iter()
        .map(|((method, route, status), count)| RouteCount {
            method: method.clone(),
            route: route.clone(),
            status: *status,
            count: *count,
        })
        .collect();
    c.webhook_deliveries = inner.deliveries.load(Ordering::Relaxed);
    c
}

fn sorted_records(mut v: Vec<AccountingRecord>) -> Vec<AccountingRecord> {
    v.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
    v
}

// ---------------------------------------------------------------------------------------------------------
// Routing and the request pipeline

type Sim = State<Arc<Inner>>;

fn router(inner: Arc<Inner>) -> Router {
    // Each route carries its own template so counters are per template (axum's MatchedPath needs a feature
    // the workspace does not enable).
    let api_routes: [(&'static str, MethodRouter<Arc<Inner>>); 10] = [
        (TOKEN_PATH, post(token)),
        ("/v1/webhooks/secrets", get(list_secrets)),
        ("/v1/webhooks", get(list_webhooks).post(create_webhook)),
        ("/v1/webhooks/{webhook_id}", get(get_webhook).put(update_webhook).delete(delete_webhook)),
        ("/v2/company", get(company)),
        ("/v3/accounting/records", get(list_records)),
        ("/v3/accounting/records/{record_id}", get(get_record)),
        ("/v3/accounting/records/export-results", post(export_results)),
        ("/v1/expenses", get(list_expenses)),
        ("/v1/expenses/{expense_id}", get(get_expense)),
    ];
    let mut api = Router::new();
    for (path, method_router) in api_routes.into_iter().chain(fields::routes()) {
        api =
            api.route(path, method_router.route_layer(middleware::from_fn_with_state((inner.clone(), path), pipeline)));
    }
    let admin = Router::new()
        .route("/_sim/counters", get(admin_counters))
        .route("/_sim/faults", get(admin_get_faults).post(admin_set_faults))
        .route("/_sim/records", get(admin_list_records).post(admin_insert_records))
        .route("/_sim/records/ready", post(admin_mark_ready))
        .route("/_sim/records/{record_id}", get(admin_get_record))
        .route("/_sim/expenses", post(admin_insert_expenses))
        .route("/_sim/generate", post(admin_generate))
        .route("/_sim/export-results", get(admin_export_results))
        .route("/_sim/secrets", get(admin_secrets))
        .route("/_sim/rotate-secret", post(admin_rotate))
        .route("/_sim/finish-rotation", post(admin_finish_rotation))
        .route("/_sim/webhooks/send", post(admin_send_webhook))
        .route_layer(middleware::from_fn(loopback_only));
    api.merge(admin).with_state(inner)
}

/// Error body in the classic (v1/v2) shape or the v3 shape.
fn error(v3: bool, status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        if v3 { json!({"error_code": code, "message": message}) } else { json!({"type": code, "message": message}) };
    (status, Json(body)).into_response()
}

enum Verdict {
    Pass { post_commit: Option<u16> },
    Reject(Response),
}

/// Auth → rate limit → faults → latency → handler; counts everything and stamps `X-Brex-Trace-Id`.
async fn pipeline(State((inner, route)): State<(Arc<Inner>, &'static str)>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let mut resp = if route == TOKEN_PATH {
        next.run(req).await
    } else {
        let v3 = route.starts_with("/v3/");
        let (verdict, latency) = admit(&inner, &req, v3);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match verdict {
            Verdict::Reject(r) => r,
            Verdict::Pass { post_commit: None } => next.run(req).await,
            Verdict::Pass { post_commit: Some(status) } => {
                let _ = next.run(req).await;
                injected_error(v3, status)
            }
        }
    };
    let trace = {
        let mut st = inner.lock();
        st.counters.total_requests += 1;
        let status = resp.status().as_u16();
        *st.routes.entry((method, route.to_owned(), status)).or_insert(0) += 1;
        match status {
            429 => st.counters.rate_limited += 1,
            401 | 403 => st.counters.unauthorized += 1,
            _ => {}
        }
        format!("{:016x}", st.rng.random::<u64>())
    };
    if let Ok(v) = HeaderValue::from_str(&trace) {
        resp.headers_mut().insert("x-brex-trace-id", v);
    }
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn admit(inner: &Inner, req: &Request, v3: bool) -> (Verdict, Duration) {
    let cfg = &inner.config;
    let mut st = inner.lock();
    let latency = Duration::from_millis(st.faults.latency_ms);
    let token = bearer(req.headers());
    let auth = match token {
        None => Err("Missing bearer token"),
        Some(t) if st.user_tokens.iter().any(|u| u == t) => Ok(()),
        Some(t) => match st.access_tokens.get(t) {
            Some(exp) if *exp > Instant::now() => Ok(()),
            Some(_) => Err("Expired token"),
            None => Err("Invalid token"),
        },
    };
    if let Err(msg) = auth {
        let status = if msg == "Expired token" {
            StatusCode::from_u16(cfg.expired_token_status).unwrap_or(StatusCode::UNAUTHORIZED)
        } else {
            StatusCode::UNAUTHORIZED
        };
        let code = if status == StatusCode::FORBIDDEN { "FORBIDDEN" } else { "UNAUTHORIZED" };
        return (Verdict::Reject(error(v3, status, code, msg)), latency);
    }

    let now = Instant::now();
    let window = match &mut st.rate {
        Some(w) if now.duration_since(w.start) < cfg.rate_window => w,
        slot => slot.insert(RateWindow { start: now, count: 0 }),
    };
    window.count = window.count.saturating_add(1);
    if window.count > cfg.rate_limit_per_window {
        let retry = st.faults.retry_after_secs;
        return (Verdict::Reject(rate_limited(retry)), latency);
    }
    if st.faults.burst_429 > 0 {
        st.faults.burst_429 -= 1;
        st.counters.injected_429 += 1;
        let retry = st.faults.retry_after_secs;
        return (Verdict::Reject(rate_limited(retry)), latency);
    }
    let draw: f64 = st.rng.random();
    if draw < st.faults.error_rate {
        let status = pick_status(&mut st);
        st.counters.injected_5xx += 1;
        return (Verdict::Reject(injected_error(v3, status)), latency);
    }
    let draw: f64 = st.rng.random();
    if draw < st.faults.post_commit_error_rate {
        let status = pick_status(&mut st);
        st.counters.injected_5xx += 1;
        return (Verdict::Pass { post_commit: Some(status) }, latency);
    }
    (Verdict::Pass { post_commit: None }, latency)
}

fn pick_status(st: &mut SimState) -> u16 {
    let n = st.faults.error_statuses.len();
    if n == 0 {
        return 500;
    }
    let i = st.rng.random_range(0..n);
    st.faults.error_statuses[i]
}

fn rate_limited(retry_after: Option<u64>) -> Response {
    // The 429 comes from Brex's gateway, so it has the classic shape on every API version.
    let mut resp =
        error(false, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", "Too many requests. Please retry later.");
    if let Some(v) = retry_after.and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok()) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

/// 500 is an application error (JSON); 502/503/504 look like a gateway's plain-text page.
fn injected_error(v3: bool, status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        500 => error(v3, code, "INTERNAL_ERROR", "Internal server error"),
        _ => (code, [("content-type", "text/plain")], code.canonical_reason().unwrap_or("Error").to_owned())
            .into_response(),
    }
}

async fn loopback_only(ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request, next: Next) -> Response {
    if peer.ip().is_loopback() {
        next.run(req).await
    } else {
        (StatusCode::FORBIDDEN, "admin routes are loopback-only").into_response()
    }
}

// ---------------------------------------------------------------------------------------------------------
// OAuth

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description}))).into_response()
}

async fn token(State(inner): Sim, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let Some(client) = inner.config.oauth.clone() else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "No OAuth client configured");
    };
    // client_secret_post or client_secret_basic.
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let (id, secret) = match basic {
        Some(pair) => pair,
        None => {
            (form.get("client_id").cloned().unwrap_or_default(), form.get("client_secret").cloned().unwrap_or_default())
        }
    };
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only grant_type=refresh_token is supported",
        );
    }
    if id != client.client_id || secret != client.client_secret {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed");
    }
    let mut st = inner.lock();
    let presented = form.get("refresh_token").map(String::as_str);
    if presented.is_none() || presented != st.refresh_token.as_deref() {
        st.counters.invalid_grants += 1;
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "The refresh token is invalid or expired.");
    }
    let access = random_token(&mut st.rng, "bxat_");
    let refresh = random_token(&mut st.rng, "bxrt_");
    let ttl = inner.config.access_token_ttl;
    let now = Instant::now();
    st.access_tokens.insert(access.clone(), now.checked_add(ttl).unwrap_or(now));
    st.refresh_token = Some(refresh.clone());
    st.counters.token_fetches += 1;
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "refresh_token": refresh,
        "scope": "openid offline_access accounting.record.read accounting.record.write expenses.card.readonly companies.readonly",
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------------------------
// Simple API routes

async fn list_secrets(State(inner): Sim) -> Response {
    Json(inner.lock().secrets.clone()).into_response()
}

// ---------------------------------------------------------------------------------------------------------
// /v1/webhooks subscriptions (brex-api.md §2.1). Classic error shape (`type`/`message`).

#[derive(Deserialize)]
struct SubscriptionBody {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    status: Option<String>,
    /// Partners only; accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    group_id: Option<String>,
}

fn bad_request(message: &str) -> Response {
    error(false, StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

fn subscription_not_found(id: &str) -> Response {
    error(false, StatusCode::NOT_FOUND, "NOT_FOUND", &format!("Webhook subscription {id} not found"))
}

/// Checks url (HTTPS), event types (non-empty, known) and status; returns them normalised, or the 400.
fn validate_subscription(
    body: SubscriptionBody,
    require_status: bool,
) -> Result<(String, Vec<String>, String), Box<Response>> {
    let bad_request = |m: &str| Box::new(bad_request(m));
    let url = body.url.ok_or_else(|| bad_request("url is required"))?;
    match url::Url::parse(&url) {
        Ok(parsed) if parsed.scheme() == "https" && parsed.host().is_some() => {}
        _ => return Err(bad_request("url must be a valid HTTPS URL")),
    }
    let event_types = body.event_types.ok_or_else(|| bad_request("event_types is required"))?;
    if event_types.is_empty() {
        return Err(bad_request("event_types must contain at least 1 item"));
    }
    if let Some(unknown) = event_types.iter().find(|t| !WEBHOOK_EVENT_TYPES.contains(&t.as_str())) {
        return Err(bad_request(&format!("Invalid event type: {unknown}")));
    }
    let status = match body.status {
        None if require_status => return Err(bad_request("status is required")),
        None => "ACTIVE".to_owned(),
        Some(s) if s == "ACTIVE" || s == "INACTIVE" => s,
        Some(s) => return Err(bad_request(&format!("Invalid status: {s}"))),
    };
    Ok((url, event_types, status))
}

/// `cursor` (opaque: the last id of the previous page) and `limit` (default 100, at most 1000).
async fn list_webhooks(State(inner): Sim, RawQuery(q): RawQuery) -> Response {
    let mut limit = 100_u32;
    let mut after: Option<String> = None;
    for (k, v) in parse_query(q.as_deref()) {
        match k.as_str() {
            "limit" => match parse_limit(&v, 1000) {
                Ok(n) => limit = n,
                Err(m) => return bad_request(&m),
            },
            "cursor" => match URL_SAFE_NO_PAD.decode(&v).ok().and_then(|b| String::from_utf8(b).ok()) {
                Some(id) => after = Some(id),
                None => return bad_request("Invalid cursor"),
            },
            _ => {}
        }
    }
    let st = inner.lock();
    let rest: Vec<&WebhookSubscription> =
        st.subscriptions.values().filter(|s| after.as_ref().is_none_or(|a| s.id > *a)).collect();
    let page_len = rest.len().min(limit as usize);
    let next_cursor =
        (rest.len() > page_len).then(|| rest[..page_len].last().map(|s| URL_SAFE_NO_PAD.encode(&s.id))).flatten();
    Json(json!({"next_cursor": next_cursor, "items": &rest[..page_len]})).into_response()
}

/// `Idempotency-Key` is required; the same key with the same body answers the first answer again, with a
/// different body 422.
async fn create_webhook(State(inner): Sim, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return bad_request("Idempotency-Key header is required");
    };
    let fingerprint = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let mut st = inner.lock();
    let window = inner.config.idempotency_window;
    st.webhook_idempotency.retain(|_, e| e.at.elapsed() < window);
    if let Some(entry) = st.webhook_idempotency.get(&key) {
        if entry.request != fingerprint {
            return error(
                false,
                StatusCode::UNPROCESSABLE_ENTITY,
                "BAD_REQUEST",
                "Idempotency-Key was already used with a different request body",
            );
        }
        let mut resp = (entry.status, Json(entry.body.clone())).into_response();
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        st.counters.idempotent_replays += 1;
        return resp;
    }
    let parsed = match serde_json::from_slice::<SubscriptionBody>(&body) {
        Ok(b) => validate_subscription(b, false),
        Err(e) => Err(Box::new(bad_request(&format!("Invalid request body: {e}")))),
    };
    let (url, event_types, status) = match parsed {
        Ok(v) => v,
        // Refusals are not remembered: the client may fix the body and retry with the same key.
        Err(resp) => return *resp,
    };
    st.subscription_seq += 1;
    let sub = WebhookSubscription { id: format!("wsub_{:012}", st.subscription_seq), url, event_types, status };
    let out = serde_json::to_value(&sub).unwrap_or(Value::Null);
    st.subscriptions.insert(sub.id.clone(), sub);
    st.webhook_idempotency
        .insert(key, IdemEntry { request: fingerprint, status: StatusCode::OK, body: out.clone(), at: Instant::now() });
    Json(out).into_response()
}

async fn get_webhook(State(inner): Sim, Path(id): Path<String>) -> Response {
    match inner.lock().subscriptions.get(&id) {
        Some(sub) => Json(sub).into_response(),
        None => subscription_not_found(&id),
    }
}

/// `url`, `event_types` and `status` are all required (the older spec; the newer accepts the same body).
async fn update_webhook(State(inner): Sim, Path(id): Path<String>, body: Bytes) -> Response {
    let (url, event_types, status) = match serde_json::from_slice::<SubscriptionBody>(&body) {
        Ok(b) => match validate_subscription(b, true) {
            Ok(v) => v,
            Err(resp) => return *resp,
        },
        Err(e) => return bad_request(&format!("Invalid request body: {e}")),
    };
    match inner.lock().subscriptions.get_mut(&id) {
        Some(sub) => {
            sub.url = url;
            sub.event_types = event_types;
            sub.status = status;
            Json(sub.clone()).into_response()
        }
        None => subscription_not_found(&id),
    }
}

async fn delete_webhook(State(inner): Sim, Path(id): Path<String>) -> Response {
    match inner.lock().subscriptions.remove(&id) {
        Some(_) => Json(json!({})).into_response(),
        None => subscription_not_found(&id),
    }
}

async fn company(State(inner): Sim) -> Response {
    Json(json!({
        "id": inner.config.company_id,
        "legal_name": "Acme Inc",
        "mailing_address": {"line1": "1 Market St", "city": "San Francisco", "state": "CA",
                             "country": "US", "postal_code": "94105"},
    }))
    .into_response()
}

async fn get_record(State(inner): Sim, Path(id): Path<String>) -> Response {
    match inner.lock().records.get(&id) {
        Some(r) => Json(r).into_response(),
        None => error(true, StatusCode::NOT_FOUND, "NOT_FOUND", &format!("Accounting record {id} not found")),
    }
}

async fn get_expense(State(inner): Sim, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let expand: HashSet<String> =
        parse_query(q.as_deref()).into_iter().filter(|(k, _)| k == "expand[]").map(|(_, v)| v).collect();
    match inner.lock().expenses.get(&id) {
        Some(e) => Json(expense_json(e, &expand)).into_response(),
        None => error(false, StatusCode::NOT_FOUND, "NOT_FOUND", "Expense not found"),
    }
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// RFC 3339, `YYYY-MM-DDTHH:MM:SS[.f]` (taken as UTC) or a bare date (midnight UTC).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
}

/// Keyset cursor over (updated_at, id): opaque to clients.
fn encode_cursor(t: DateTime<Utc>, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", t.timestamp_micros()))
}

fn decode_cursor(c: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    let (micros, id) = raw.split_once('|')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, id.to_owned()))
}

fn parse_limit(v: &str, max: u32) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("limit must be an integer between 1 and {max}")),
    }
}

// ---------------------------------------------------------------------------------------------------------
// GET /v3/accounting/records

#[derive(Clone, Copy)]
enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

async fn list_records(State(inner): Sim, RawQuery(q): RawQuery) -> Response {
    let bad = |m: &str| error(true, StatusCode::BAD_REQUEST, "INVALID_REQUEST", m);
    let cfg = &inner.config;
    let mut ids: Vec<String> = Vec::new();
    let mut review: Option<ReviewStatus> = None;
    let mut source: Option<SourceType> = None;
    let mut bounds: Vec<(Cmp, DateTime<Utc>)> = Vec::new();
    let mut limit = 100_u32;
    let mut cursor = None;
    for (k, v) in parse_query(q.as_deref()) {
        match k.as_str() {
            "ids" => ids.push(v),
            "review_status" => match ReviewStatus::parse(&v) {
                Some(s) => review = Some(s),
                None => return bad(&format!("Invalid review_status: {v}")),
            },
            "source_type" => match SourceType::parse(&v) {
                Some(s) => source = Some(s),
                None => return bad(&format!("Invalid source_type: {v}")),
            },
            "updated_at[gt]" | "updated_at[gte]" | "updated_at[lt]" | "updated_at[lte]" => {
                let op = match k.as_str() {
                    "updated_at[gt]" => Cmp::Gt,
                    "updated_at[gte]" => Cmp::Gte,
                    "updated_at[lt]" => Cmp::Lt,
                    _ => Cmp::Lte,
                };
                match parse_time(&v) {
                    Some(t) => bounds.push((op, t)),
                    None => return bad(&format!("Invalid {k}: {v}")),
                }
            }
            "limit" => match parse_limit(&v, cfg.max_records_limit) {
                Ok(n) => limit = n,
                Err(m) => return bad(&m),
            },
            "cursor" => match decode_cursor(&v) {
                Some(c) => cursor = Some(c),
                None => return bad("Invalid cursor"),
            },
            // Like most APIs, unknown parameters (incl. `single_entry`) are ignored.
            _ => {}
        }
    }
    if ids.len() > 500 {
        return bad("ids must contain at most 500 items");
    }
    if review.is_some()
        && cfg.review_status_requires_source_type
        && !matches!(source, Some(SourceType::Card | SourceType::Reimbursement))
    {
        return bad("review_status is only supported with source_type CARD or REIMBURSEMENT");
    }
    // Brex's narrow default window when neither ids nor an updated_at range is given.
    let floor = (ids.is_empty() && bounds.is_empty())
        .then(|| TimeDelta::from_std(cfg.default_updated_window).ok().and_then(|w| Utc::now().checked_sub_signed(w)))
        .flatten();
    let id_set: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let st = inner.lock();
    let mut matching: Vec<&AccountingRecord> = st
        .records
        .values()
        .filter(|r| id_set.is_empty() || id_set.contains(r.id.as_str()))
        .filter(|r| review.is_none_or(|s| r.review_status == s))
        .filter(|r| source.is_none_or(|s| r.source_type == s))
        .filter(|r| floor.is_none_or(|f| r.updated_at >= f))
        .filter(|r| {
            bounds.iter().all(|(op, t)| match op {
                Cmp::Gt => r.updated_at > *t,
                Cmp::Gte => r.updated_at >= *t,
                Cmp::Lt => r.updated_at < *t,
                Cmp::Lte => r.updated_at <= *t,
            })
        })
        .collect();
    matching.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
    let total = matching.len();
    let rest: Vec<&AccountingRecord> = match &cursor {
        Some((t, id)) => matching.into_iter().filter(|r| (r.updated_at, &r.id) > (*t, id)).collect(),
        None => matching,
    };
    let page_len = rest.len().min(limit as usize);
    let has_next = rest.len() > page_len;
    let page = &rest[..page_len];
    let next_cursor = if has_next { page.last().map(|r| encode_cursor(r.updated_at, &r.id)) } else { None };
    Json(json!({
        "items": page,
        "next_cursor": next_cursor,
        "has_next_page": has_next,
        "total_count": total,
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------------------------
// POST /v3/accounting/records/export-results

#[derive(Deserialize)]
struct ExportRequest {
    results: Vec<ExportEntry>,
}

#[derive(Deserialize)]
struct ExportEntry {
    accounting_record_id: String,
    #[serde(default)]
    success: Option<SuccessBody>,
    #[serde(default)]
    failure: Option<FailureBody>,
}

#[derive(Deserialize)]
struct SuccessBody {
    #[serde(default)]
    reference_id: Option<String>,
    #[serde(default)]
    deep_link_url: Option<String>,
}

#[derive(Deserialize)]
struct FailureBody {
    error_message: String,
}

async fn export_results(State(inner): Sim, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Compare requests semantically (key order / whitespace do not matter) when the body is JSON.
    let fingerprint = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let mut st = inner.lock();
    if let Some(k) = &key {
        let window = inner.config.idempotency_window;
        st.idempotency.retain(|_, e| e.at.elapsed() < window);
        if let Some(entry) = st.idempotency.get(k) {
            if entry.request != fingerprint {
                return error(
                    true,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "INVALID_REQUEST",
                    "Idempotency-Key was already used with a different request body",
                );
            }
            let mut resp = (entry.status, Json(entry.body.clone())).into_response();
            resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            st.counters.idempotent_replays += 1;
            return resp;
        }
    }
    let (status, out) = apply_export(&mut st, &body, key.as_deref(), inner.config.max_export_batch);
    if let Some(k) = key {
        st.idempotency.insert(k, IdemEntry { request: fingerprint, status, body: out.clone(), at: Instant::now() });
    }
    (status, Json(out)).into_response()
}

/// Validates the whole batch first (all-or-nothing), then applies it.
///
/// Success → EXPORTED with updated_at/version bumped. Failure → the record stays READY_FOR_EXPORT with
/// updated_at/version untouched (Brex docs are silent; not bumping keeps a watermark poller from re-reading
/// it forever) and the error message is stored for tests to inspect.
fn apply_export(st: &mut SimState, body: &[u8], key: Option<&str>, max_batch: usize) -> (StatusCode, Value) {
    let invalid = |m: String| (StatusCode::BAD_REQUEST, json!({"error_code": "INVALID_REQUEST", "message": m}));
    let req: ExportRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return invalid(format!("Invalid request body: {e}")),
    };
    if req.results.is_empty() {
        return invalid("results must contain at least 1 item".into());
    }
    if req.results.len() > max_batch {
        return invalid(format!("results must contain at most {max_batch} items"));
    }
    if let Some(e) = req.results.iter().find(|e| e.success.is_some() == e.failure.is_some()) {
        return invalid(format!("Result for {} must have exactly one of success or failure", e.accounting_record_id));
    }
    let mut not_found: Vec<&str> = Vec::new();
    for e in &req.results {
        let id = e.accounting_record_id.as_str();
        if !st.records.contains_key(id) && !not_found.contains(&id) {
            not_found.push(id);
        }
    }
    if !not_found.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            json!({"error_code": "NOT_FOUND", "message": "Accounting records not found",
                   "details": {"not_found_export_entry_source_ids": not_found}}),
        );
    }
    let mut seen = HashSet::new();
    let mut dups: Vec<&str> = Vec::new();
    for e in &req.results {
        let id = e.accounting_record_id.as_str();
        if !seen.insert(id) && !dups.contains(&id) {
            dups.push(id);
        }
    }
    if !dups.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error_code": "DUPLICATE_ACCOUNTING_RECORD_IDS",
                   "message": "The same accounting record id appears more than once",
                   "details": {"duplicate_accounting_record_ids": dups}}),
        );
    }
    let not_ready: Vec<&str> = req
        .results
        .iter()
        .map(|e| e.accounting_record_id.as_str())
        .filter(|id| st.records.get(*id).is_some_and(|r| r.review_status != ReviewStatus::ReadyForExport))
        .collect();
    if !not_ready.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error_code": "ACCOUNTING_RECORD_NOT_READY_FOR_EXPORT",
                   "message": "Only accounting records with review status READY_FOR_EXPORT can be updated via this endpoint",
                   "details": {"not_ready_for_export_accounting_record_ids": not_ready}}),
        );
    }
    let now = Utc::now();
    let mut updated = Vec::new();
    for e in req.results {
        let Some(record) = st.records.get_mut(&e.accounting_record_id) else {
            continue;
        };
        let outcome = match (e.success, e.failure) {
            (Some(s), _) => {
                record.review_status = ReviewStatus::Exported;
                bump(record);
                ExportOutcome::Success { reference_id: s.reference_id, deep_link_url: s.deep_link_url }
            }
            (None, Some(f)) => ExportOutcome::Failure { error_message: f.error_message },
            (None, None) => continue,
        };
        let version = record.version;
        updated.push(e.accounting_record_id.clone());
        st.exports.push(ExportResult {
            accounting_record_id: e.accounting_record_id,
            outcome,
            record_version: version,
            idempotency_key: key.map(str::to_owned),
            reported_at: now,
        });
    }
    (StatusCode::OK, json!({"updated_accounting_record_ids": updated}))
}

// ---------------------------------------------------------------------------------------------------------
// GET /v1/expenses

const EXPENSE_STATUSES: [&str; 8] =
    ["DRAFT", "SUBMITTED", "APPROVED", "OUT_OF_POLICY", "VOID", "CANCELED", "SPLIT", "SETTLED"];
const EXPANDABLE: [&str; 3] = ["department", "merchant", "user"];

/// Serializes an expense, dropping expandable objects that were not asked for.
fn expense_json(e: &Expense, expand: &HashSet<String>) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        for key in EXPANDABLE {
            if !expand.contains(key) {
                obj.remove(key);
            }
        }
    }
    v
}

/// Filters: `status[]`, `expense_type[]`, `updated_at_start` (inclusive), `updated_at_end` (inclusive),
/// `limit` (≤ max, default 100), `cursor`, `expand[]`.
async fn list_expenses(State(inner): Sim, RawQuery(q): RawQuery) -> Response {
    let bad = |m: &str| error(false, StatusCode::BAD_REQUEST, "BAD_REQUEST", m);
    let mut statuses: HashSet<String> = HashSet::new();
    let mut types: HashSet<String> = HashSet::new();
    let mut expand: HashSet<String> = HashSet::new();
    let mut start = None;
    let mut end = None;
    let mut limit = 100_u32.min(inner.config.max_expenses_limit);
    let mut cursor = None;
    for (k, v) in parse_query(q.as_deref()) {
        match k.as_str() {
            "status[]" if EXPENSE_STATUSES.contains(&v.as_str()) => {
                statuses.insert(v);
            }
            "status[]" => return bad(&format!("Invalid status: {v}")),
            "expense_type[]" => {
                types.insert(v);
            }
            "expand[]" => {
                expand.insert(v);
            }
            "updated_at_start" | "updated_at_end" => match parse_time(&v) {
                Some(t) if k == "updated_at_start" => start = Some(t),
                Some(t) => end = Some(t),
                None => return bad(&format!("Invalid {k}: {v}")),
            },
            "limit" => match parse_limit(&v, inner.config.max_expenses_limit) {
                Ok(n) => limit = n,
                Err(m) => return bad(&m),
            },
            "cursor" => match decode_cursor(&v) {
                Some(c) => cursor = Some(c),
                None => return bad("Invalid cursor"),
            },
            _ => {}
        }
    }
    let st = inner.lock();
    let mut matching: Vec<&Expense> = st
        .expenses
        .values()
        .filter(|e| statuses.is_empty() || statuses.contains(&e.status))
        .filter(|e| types.is_empty() || types.contains(&e.expense_type))
        .filter(|e| start.is_none_or(|s| e.updated_at >= s))
        .filter(|e| end.is_none_or(|s| e.updated_at <= s))
        .filter(|e| cursor.as_ref().is_none_or(|(t, id)| (e.updated_at, &e.id) > (*t, id)))
        .collect();
    matching.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
    let page_len = matching.len().min(limit as usize);
    let next_cursor = (matching.len() > page_len)
        .then(|| matching[..page_len].last().map(|e| encode_cursor(e.updated_at, &e.id)))
        .flatten();
    let items: Vec<Value> = matching[..page_len].iter().map(|e| expense_json(e, &expand)).collect();
    Json(json!({"items": items, "next_cursor": next_cursor})).into_response()
}

// ---------------------------------------------------------------------------------------------------------
// /_sim admin routes (unauthenticated, loopback only)

async fn admin_counters(State(inner): Sim) -> Response {
    Json(snapshot(&inner)).into_response()
}

async fn admin_get_faults(State(inner): Sim) -> Response {
    Json(inner.lock().faults.clone()).into_response()
}

async fn admin_set_faults(State(inner): Sim, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            inner.lock().faults = f.clone();
            Json(f).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn admin_list_records(State(inner): Sim) -> Response {
    let all = sorted_records(inner.lock().records.values().cloned().collect());
    Json(all).into_response()
}

async fn admin_insert_records(State(inner): Sim, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<AccountingRecord>>(&body) {
        Ok(records) => {
            let n = records.len();
            BrexSimHandle { inner }.insert_records(records);
            Json(json!({"inserted": n})).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn admin_insert_expenses(State(inner): Sim, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<Expense>>(&body) {
        Ok(expenses) => {
            let n = expenses.len();
            BrexSimHandle { inner }.insert_expenses(expenses);
            Json(json!({"inserted": n})).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn admin_get_record(State(inner): Sim, Path(id): Path<String>) -> Response {
    match inner.lock().records.get(&id) {
        Some(r) => Json(r).into_response(),
        None => (StatusCode::NOT_FOUND, "no such record").into_response(),
    }
}

#[derive(Deserialize)]
struct IdsBody {
    ids: Vec<String>,
}

async fn admin_mark_ready(State(inner): Sim, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<IdsBody>(&body) else {
        return (StatusCode::BAD_REQUEST, "expected {\"ids\": [...]}").into_response();
    };
    let n = BrexSimHandle { inner }.mark_ready_for_export(&req.ids);
    Json(json!({"updated": n})).into_response()
}

/// Keeps one admin call from exhausting memory.
const MAX_GENERATE: usize = 100_000;

#[derive(Deserialize)]
struct GenerateBody {
    count: usize,
}

async fn admin_generate(State(inner): Sim, body: Bytes) -> Response {
    let req = match serde_json::from_slice::<GenerateBody>(&body) {
        Ok(r) if r.count <= MAX_GENERATE => r,
        _ => {
            return (StatusCode::BAD_REQUEST, format!("expected {{\"count\": n}} with n <= {MAX_GENERATE}"))
                .into_response();
        }
    };
    let sim = BrexSimHandle { inner };
    Json(json!({"ids": sim.generate_records(req.count)})).into_response()
}

async fn admin_export_results(State(inner): Sim) -> Response {
    Json(inner.lock().exports.clone()).into_response()
}

async fn admin_secrets(State(inner): Sim) -> Response {
    Json(inner.lock().secrets.clone()).into_response()
}

async fn admin_rotate(State(inner): Sim) -> Response {
    let sim = BrexSimHandle { inner };
    sim.rotate_webhook_secret();
    Json(sim.webhook_secrets()).into_response()
}

async fn admin_finish_rotation(State(inner): Sim) -> Response {
    let sim = BrexSimHandle { inner };
    sim.finish_rotation();
    Json(sim.webhook_secrets()).into_response()
}

#[derive(Deserialize)]
struct SendBody {
    url: String,
    record_ids: Vec<String>,
    #[serde(default = "default_scale")]
    time_scale: f64,
}

fn default_scale() -> f64 {
    1.0
}

/// Starts a delivery in the background (retries can take hours at scale 1) and returns its message id.
async fn admin_send_webhook(State(inner): Sim, body: Bytes) -> Response {
    let req = match serde_json::from_slice::<SendBody>(&body) {
        Ok(r) if r.time_scale.is_finite() && r.time_scale >= 0.0 => r,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "expected {\"url\": \"…\", \"record_ids\": [...], \"time_scale\"?: finite f64 >= 0}",
            )
                .into_response();
        }
    };
    let sender = BrexSimHandle { inner: inner.clone() }.webhook_sender().time_scale(req.time_scale);
    let payload = webhook::ready_for_export_body(&req.record_ids, &inner.config.company_id);
    let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let id = msg_id.clone();
    tokio::spawn(async move {
        let report = sender.send_with_id(&HttpTransport::new(req.url), &id, payload).await;
        tracing::info!(msg_id = %report.msg_id, delivered = report.delivered,
                       attempts = report.attempts.len(), "webhook delivery finished");
    });
    (StatusCode::ACCEPTED, Json(json!({"msg_id": msg_id}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_naive_and_date_forms() {
        let a = parse_time("2026-01-02T03:04:05.123456Z").unwrap();
        assert_eq!(a.timestamp_subsec_micros(), 123_456);
        assert_eq!(parse_time("2026-01-02T05:04:05+02:00"), parse_time("2026-01-02T03:04:05Z"));
        assert_eq!(parse_time("2026-01-02T03:04:05"), parse_time("2026-01-02T03:04:05Z"));
        assert_eq!(parse_time("2026-01-02"), parse_time("2026-01-02T00:00:00Z"));
        assert!(parse_time("2026-01-02 03:04:05 00:00").is_none());
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let t = parse_time("2026-01-02T03:04:05.000001Z").unwrap();
        let c = encode_cursor(t, "accr_1");
        assert_eq!(decode_cursor(&c), Some((t, "accr_1".to_owned())));
        assert!(decode_cursor("not a cursor!").is_none());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("x|y")).is_none());
    }

    #[test]
    fn bump_is_strictly_increasing_even_for_future_timestamps() {
        let mut r: AccountingRecord = serde_json::from_value(json!({
            "id": "accr_1", "amount": {"amount": 1, "currency": "USD"}, "type": "CARD_EXPENSE_POST",
            "review_status": "PREPARE", "source_type": "CARD",
            "erp_posting_date": "2026-06-11T09:09:05.840865Z", "posted_at": "2026-06-11T09:09:05.840Z",
            "updated_at": "2999-01-01T00:00:00Z", "version": 2, "line_items": []
        }))
        .unwrap();
        let before = r.updated_at;
        bump(&mut r);
        assert!(r.updated_at > before);
        assert_eq!(r.version, 3);
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(parse_limit("100", 100), Ok(100));
        assert!(parse_limit("101", 100).is_err());
        assert!(parse_limit("0", 100).is_err());
        assert!(parse_limit("-1", 100).is_err());
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let cfg = BrexSimConfig {
            oauth: Some(OAuthClient {
                client_id: "cid".into(),
                client_secret: "topsecret".into(),
                refresh_token: "rt_secret".into(),
            }),
            webhook_secret: Some("whsec_hidden".into()),
            ..BrexSimConfig::default()
        };
        let s = format!("{cfg:?}");
        for secret in ["topsecret", "rt_secret", "whsec_hidden", "bxt_sim_user_token"] {
            assert!(!s.contains(secret), "{secret} leaked: {s}");
        }
        let w = WebhookSecret { secret: "whsec_x".into(), status: SecretStatus::Active };
        assert!(!format!("{w:?}").contains("whsec_x"));
    }
}
