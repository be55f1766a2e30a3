//! The IFS Cloud OData transport: one per Lambda instance, cheap to clone. Every request goes through one
//! path that takes a unit of the request budget, attaches a cached bearer token (re-fetched once on 401),
//! and applies the one retry policy. On top of it: keyed reads, ETag-guarded mutations, paged listing and
//! the request counters. The ledger and the reference reader send everything through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_MATCH, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use super::api_names::IfsApiNames;
use super::error::{IfsError, MI_MODIFIED_ERROR, classify_status, parse_error_body};
use super::filter::{Filter, encode_component};
use super::token::{FetchedToken, TokenCache};
use crate::domain::{ETag, IfsCredentials, Secret};
use crate::metrics::{Metric, Metrics, dim};
use crate::ports::RequestBudget;
use crate::retry::{RetryPolicy, parse_retry_after};

/// Media type of every JSON request and of `Accept`. `IEEE754Compatible=true` is what lets amounts travel as
/// decimal strings, exactly (see `voucher::amount_json`).
pub(crate) const JSON_MEDIA_TYPE: &str = "application/json;IEEE754Compatible=true";

/// Largest page (`$top`) IFS hands out.
pub const MAX_PAGE_SIZE: u32 = 5000;

/// How often a stale ETag (412) is re-read and the mutation retried before giving up.
pub const MAX_STALE_ETAG_RETRIES: u32 = 5;

/// A runaway `@odata.nextLink` chain is cut off here (25 M rows at full pages).
const MAX_PAGES: usize = 5000;

/// How long an entity set proved to exist is trusted when a keyed read under it answers 404.
const ENTITY_SET_CONFIRMATION: Duration = Duration::from_secs(3600);

/// The entity set of a keyed path: `AccountsHandling.svc/AccountSet(Company='10',Account='1')` (or a
/// navigation below it) → `AccountsHandling.svc/AccountSet`.
fn entity_set_of(path: &str) -> &str {
    let after_service = path.find(".svc/").map_or(0, |i| i + ".svc/".len());
    match path[after_service..].find('(') {
        Some(open) => &path[..after_service + open],
        None => path,
    }
}

pub struct IfsClientConfig {
    /// `IFS_URL`, e.g. `https://acme.ifs.cloud` (a trailing slash is tolerated).
    pub base_url: String,
    /// `IFS_REALM`.
    pub realm: String,
    pub credentials: IfsCredentials,
    /// `IFS_REQUESTS_PER_MINUTE` (default [`IfsClientConfig::DEFAULT_REQUESTS_PER_MINUTE`]).
    pub requests_per_minute: u32,
    pub api: IfsApiNames,
    /// Whole-request timeout (connect, send, and reading the answer).
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Where requests, 412s, 429s and token fetches are counted (off by default).
    pub metrics: Metrics,
}

impl IfsClientConfig {
    pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 1000;
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// The defaults for everything but where IFS is and who we are.
    pub fn new(base_url: impl Into<String>, realm: impl Into<String>, credentials: IfsCredentials) -> Self {
        Self {
            base_url: base_url.into(),
            realm: realm.into(),
            credentials,
            requests_per_minute: Self::DEFAULT_REQUESTS_PER_MINUTE,
            api: IfsApiNames::default(),
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            retry: RetryPolicy::ifs(),
            metrics: Metrics::default(),
        }
    }
}

impl std::fmt::Debug for IfsClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // IfsCredentials' own Debug already redacts the secret.
        f.debug_struct("IfsClientConfig")
            .field("base_url", &self.base_url)
            .field("realm", &self.realm)
            .field("credentials", &self.credentials)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("api", &self.api)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Counters for benchmarks and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfsStats {
    /// HTTP requests sent (token fetches included).
    pub requests: u64,
    /// Access tokens fetched.
    pub token_fetches: u64,
    /// Requests sent again after a retryable failure.
    pub retries: u64,
    /// Tokens dropped after a 401.
    pub unauthorized_refreshes: u64,
    /// Entity re-reads after a 412 (step by step), or `$batch` change sets sent again after one.
    pub stale_etag_rereads: u64,
    /// `CreateVoucher` calls that ended without a clear answer and were checked with the dedup query.
    pub uncertain_commit_checks: u64,
    /// Abandoned virtual vouchers removed (`[ifs.api] remove_voucher_action`).
    pub virtual_vouchers_removed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    unauthorized_refreshes: AtomicU64,
    stale_etag_rereads: AtomicU64,
    uncertain_commit_checks: AtomicU64,
    virtual_vouchers_removed: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// When a failed request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Whatever happened: reads, and creating a throw-away virtual entity.
    Always,
    /// Only when IFS answered with a retryable status. A lost answer may hide a completed change (a voucher
    /// row added), so a transport failure is handed back to the caller.
    Answered,
    /// Only when the request surely did nothing (429, connection refused). For `CreateVoucher`, whose
    /// outcome must otherwise be checked with the dedup query.
    Unprocessed,
}

pub(crate) enum Body<'a> {
    None,
    Json(&'a Value),
    Form(&'a [(&'a str, &'a str)]),
    /// An OData `$batch`: a multipart/mixed body with this boundary, sent with `Prefer:
    /// odata.continue-on-error` so one refused voucher does not stop the others.
    Batch {
        boundary: &'a str,
        text: &'a str,
    },
    /// A binary stream (a file's data), with its media type.
    Binary {
        content_type: &'a str,
        bytes: &'a [u8],
    },
}

pub(crate) struct Request<'a> {
    pub method: Method,
    pub url: Url,
    pub body: Body<'a>,
    pub if_match: Option<&'a ETag>,
    pub resend: Resend,
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub etag: Option<ETag>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, IfsError> {
        serde_json::from_slice(&self.body).map_err(|e| IfsError::Decode(format!("{what}: {e}")))
    }
}

/// One attempt's failure, with what the retry decision needs.
struct Failure {
    error: IfsError,
    retry_after: Option<Duration>,
    /// The request never reached IFS (connection refused), so re-sending cannot duplicate anything.
    unsent: bool,
}

/// Options of a listing; `page_size` is sent as `$top` (at most [`MAX_PAGE_SIZE`]).
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub filter: Option<Filter>,
    pub orderby: Vec<String>,
    pub select: Vec<String>,
    pub page_size: u32,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self { filter: None, orderby: Vec::new(), select: Vec::new(), page_size: MAX_PAGE_SIZE }
    }
}

impl ListQuery {
    /// The query string (without `?`), `$skip` included when non-zero.
    pub fn to_query_string(&self, skip: usize) -> String {
        let mut parts = Vec::new();
        if let Some(filter) = &self.filter {
            parts.push(format!("$filter={}", encode_component(&filter.to_string())));
        }
        if !self.select.is_empty() {
            parts.push(format!("$select={}", encode_component(&self.select.join(","))));
        }
        if !self.orderby.is_empty() {
            parts.push(format!("$orderby={}", encode_component(&self.orderby.join(","))));
        }
        parts.push(format!("$top={}", self.page_size.clamp(1, MAX_PAGE_SIZE)));
        if skip > 0 {
            parts.push(format!("$skip={skip}"));
        }
        parts.join("&")
    }
}

/// The OData transport. Clones share the token cache, the budget, the projection names and the counters.
#[derive(Clone)]
pub struct IfsTransport {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `{IFS_URL}{base_path}/`: every projection path is joined to it.
    root: Url,
    token_url: Url,
    credentials: IfsCredentials,
    /// The mapping document's `[ifs.api]`, replaced when a new document is pushed (see
    /// [`IfsTransport::set_api`]).
    api: std::sync::RwLock<Arc<IfsApiNames>>,
    retry: RetryPolicy,
    timeout: Duration,
    budget: Arc<dyn RequestBudget>,
    tokens: TokenCache,
    counters: Counters,
    metrics: Metrics,
    /// Entity sets proved to exist, and when (see [`IfsTransport::get_entity`]).
    confirmed_sets: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl std::fmt::Debug for IfsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IfsTransport").field("root", &self.inner.root.as_str()).finish_non_exhaustive()
    }
}

impl IfsTransport {
    /// A transport drawing on `budget` (the per-instance token bucket, or one shared by every instance).
    /// `config.requests_per_minute` is the caller's to turn into a budget.
    pub fn new(
        config: IfsClientConfig,
        http: reqwest::Client,
        budget: Arc<dyn RequestBudget>,
    ) -> Result<Self, IfsError> {
        let base = config.base_url.trim_end_matches('/');
        let invalid = |what: &str, e: url::ParseError| IfsError::InvalidRequest(format!("{what}: {e}"));
        let root = Url::parse(&format!("{base}{}/", config.api.base_path.trim_end_matches('/')))
            .map_err(|e| invalid("IFS_URL / base_path", e))?;
        let token_url = Url::parse(&format!(
            "{base}/auth/realms/{}/protocol/openid-connect/token",
            encode_component(&config.realm)
        ))
        .map_err(|e| invalid("IFS_URL / IFS_REALM", e))?;
        if !matches!(root.scheme(), "http" | "https") {
            return Err(IfsError::InvalidRequest(format!("IFS_URL must be http(s), got {}", root.scheme())));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                root,
                token_url,
                credentials: config.credentials,
                api: std::sync::RwLock::new(Arc::new(config.api)),
                retry: config.retry,
                timeout: config.request_timeout,
                budget,
                tokens: TokenCache::new(),
                counters: Counters::default(),
                metrics: config.metrics,
                confirmed_sets: std::sync::Mutex::default(),
            }),
        })
    }

    /// The projection names and flow switches in use.
    pub fn api(&self) -> Arc<IfsApiNames> {
        self.inner.api.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Takes the `[ifs.api]` of a newly loaded mapping document, so a fixed projection name reaches warm
    /// instances without a redeploy. The base path is fixed at construction (it is part of every URL).
    pub fn set_api(&self, api: &IfsApiNames) {
        let mut current = self.inner.api.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = api.clone();
        next.base_path = current.base_path.clone();
        if **current != next {
            tracing::info!(api = ?next, "IFS projection names taken from the mapping document");
            *current = Arc::new(next);
        }
    }

    /// The retry policy every request follows; the ledger bounds its own repeats (a voucher assembled
    /// afresh, an uncertain commit re-checked) by it too.
    pub(crate) fn retry(&self) -> RetryPolicy {
        self.inner.retry
    }

    pub fn stats(&self) -> IfsStats {
        let c = &self.inner.counters;
        IfsStats {
            requests: c.requests.load(Ordering::Relaxed),
            token_fetches: self.inner.tokens.fetches(),
            retries: c.retries.load(Ordering::Relaxed),
            unauthorized_refreshes: c.unauthorized_refreshes.load(Ordering::Relaxed),
            stale_etag_rereads: c.stale_etag_rereads.load(Ordering::Relaxed),
            uncertain_commit_checks: c.uncertain_commit_checks.load(Ordering::Relaxed),
            virtual_vouchers_removed: c.virtual_vouchers_removed.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count_removed_virtual(&self) {
        bump(&self.inner.counters.virtual_vouchers_removed);
    }

    pub(crate) fn count_uncertain_check(&self) {
        bump(&self.inner.counters.uncertain_commit_checks);
    }

    /// A `$batch` change set sent again after a 412 (its stand-in for an entity re-read).
    pub(crate) fn count_stale_reread(&self) {
        bump(&self.inner.counters.stale_etag_rereads);
    }

    /// A 412 inside a `$batch` change set (a plain request's 412 is counted where it is answered).
    pub(crate) fn count_412_in_batch(&self) {
        self.inner.metrics.count(Metric::Ifs412, 1, Vec::new());
    }

    /// The voucher flow a batch of vouchers took (1 = `$batch`), so the dashboard shows the flow in use.
    pub(crate) fn count_flow(&self, flow: super::ledger::capability::VoucherFlow) {
        let on_batch = flow == super::ledger::capability::VoucherFlow::Batch;
        self.inner.metrics.record(Metric::IfsBatchFlow, if on_batch { 1.0 } else { 0.0 }, Vec::new());
    }

    pub(crate) fn count_retry(&self) {
        bump(&self.inner.counters.retries);
    }

    /// `path` (e.g. `AccountsHandling.svc/AccountSet`) under the projection root.
    pub fn url(&self, path: &str) -> Result<Url, IfsError> {
        self.inner.root.join(path).map_err(|e| IfsError::InvalidRequest(format!("bad IFS path {path:?}: {e}")))
    }

    /// Reads one entity by its key; `Ok(None)` when IFS answers 404 for the key. A 404 alone cannot tell an
    /// unknown key from an entity set this tenant does not serve (a wrong `[ifs.api]` name would otherwise
    /// read as "no such account" and fail the record), so the first 404 under a set is checked against the
    /// set itself; a set that is missing too makes an [`IfsError::Unsupported`].
    pub async fn get_entity<T: DeserializeOwned>(&self, path: &str) -> Result<Option<(T, Option<ETag>)>, IfsError> {
        match self.get_entity_unchecked(path).await {
            Err(IfsError::Unsupported { status: 404, code, message, .. }) => {
                match self.confirm_entity_set(path).await {
                    Ok(()) => Ok(None),
                    Err(IfsError::Unsupported { status: 404, path: set, .. }) => Err(IfsError::Unsupported {
                        status: 404,
                        code,
                        message: format!("{message} (and the entity set {set} itself is not found)"),
                        path: set,
                    }),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    /// Proves `{set}` exists (a `$top=1` read), at most once an hour per set and instance.
    async fn confirm_entity_set(&self, entity_path: &str) -> Result<(), IfsError> {
        let set = entity_set_of(entity_path);
        let fresh = |seen: &std::collections::HashMap<String, std::time::Instant>| {
            seen.get(set).is_some_and(|at| at.elapsed() < ENTITY_SET_CONFIRMATION)
        };
        if fresh(&self.inner.confirmed_sets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)) {
            return Ok(());
        }
        self.read_first(set).await?;
        self.inner
            .confirmed_sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(set.to_owned(), std::time::Instant::now());
        Ok(())
    }

    /// Reads the first entity of `set` (`$top=1`), for proving the set is served.
    pub(crate) async fn read_first(&self, set: &str) -> Result<(), IfsError> {
        let req = Request {
            method: Method::GET,
            url: self.url(&format!("{set}?$top=1"))?,
            body: Body::None,
            if_match: None,
            resend: Resend::Always,
        };
        self.execute(&req).await.map(|_| ())
    }

    /// Reads one entity; `Ok(None)` on any 404 (for a virtual voucher, which is not a readable set).
    async fn get_entity_unchecked<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<(T, Option<ETag>)>, IfsError> {
        let req = Request {
            method: Method::GET,
            url: self.url(path)?,
            body: Body::None,
            if_match: None,
            resend: Resend::Always,
        };
        match self.execute(&req).await {
            Ok(resp) => {
                let entity: Value = resp.json(path)?;
                let etag = resp.etag.clone().or_else(|| body_etag(&entity));
                let value = serde_json::from_value(entity).map_err(|e| IfsError::Decode(format!("{path}: {e}")))?;
                Ok(Some((value, etag)))
            }
            Err(IfsError::Unsupported { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The current ETag of a virtual voucher (after a 412).
    pub async fn read_etag(&self, entity_path: &str) -> Result<ETag, IfsError> {
        bump(&self.inner.counters.stale_etag_rereads);
        match self.get_entity_unchecked::<Value>(entity_path).await? {
            Some((_, Some(tag))) => Ok(tag),
            Some((_, None)) => Err(IfsError::Decode(format!("{entity_path}: no ETag on the entity"))),
            None => Err(IfsError::Vanished { path: entity_path.to_owned() }),
        }
    }

    /// `url`'s path under the projection root (`AccountsHandling.svc/AccountSet(…)`), for error messages.
    fn relative_path(&self, url: &Url) -> String {
        let root = self.inner.root.path();
        match url.path().strip_prefix(root) {
            Some(rest) => rest.to_owned(),
            None => url.path().to_owned(),
        }
    }

    /// POSTs `body` to `{entity_path}/{sub_path}` (a navigation or a bound action) with `If-Match: etag`.
    /// A 412 re-reads the entity, takes its new ETag (written back to `etag`) and tries again, at most
    /// [`MAX_STALE_ETAG_RETRIES`] times. 428 is a bug and comes back as `MissingPrecondition` at once.
    /// Returns the answer's JSON body (`Null` when empty).
    pub async fn guarded_post(
        &self,
        entity_path: &str,
        sub_path: &str,
        body: &Value,
        etag: &mut ETag,
        resend: Resend,
    ) -> Result<Value, IfsError> {
        let url = self.url(&format!("{entity_path}/{sub_path}"))?;
        let mut rereads = 0;
        loop {
            let req = Request {
                method: Method::POST,
                url: url.clone(),
                body: Body::Json(body),
                if_match: Some(etag),
                resend,
            };
            match self.execute(&req).await {
                Ok(resp) if resp.body.iter().all(u8::is_ascii_whitespace) => return Ok(Value::Null),
                Ok(resp) => return resp.json(sub_path),
                Err(IfsError::PreconditionFailed { .. }) if rereads < MAX_STALE_ETAG_RETRIES => {
                    rereads += 1;
                    *etag = self.read_etag(entity_path).await?;
                    tracing::debug!(entity = entity_path, rereads, "stale ETag: re-read and retrying");
                }
                Err(IfsError::PreconditionFailed { .. }) => {
                    return Err(IfsError::PreconditionFailed { attempts: rereads + 1 });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every row of an entity set (`Projection.svc/EntitySet`) matching `query`, following
    /// `@odata.nextLink` until it is absent. A server that treats `$top` as a total cap (standard OData)
    /// and so sends no nextLink after a full page is paged on with `$skip`.
    pub async fn list_all<T: DeserializeOwned>(&self, entity_set: &str, query: &ListQuery) -> Result<Vec<T>, IfsError> {
        #[derive(Deserialize)]
        struct Page {
            value: Vec<Value>,
            #[serde(rename = "@odata.nextLink")]
            next_link: Option<String>,
        }
        let first = self.url(&format!("{entity_set}?{}", query.to_query_string(0)))?;
        let page_size = query.page_size.clamp(1, MAX_PAGE_SIZE) as usize;
        let mut rows = Vec::new();
        let mut url = first;
        for _ in 0..MAX_PAGES {
            let req = Request {
                method: Method::GET,
                url: url.clone(),
                body: Body::None,
                if_match: None,
                resend: Resend::Always,
            };
            let page: Page = self.execute(&req).await?.json(entity_set)?;
            let count = page.value.len();
            for row in page.value {
                rows.push(serde_json::from_value(row).map_err(|e| IfsError::Decode(format!("{entity_set} row: {e}")))?);
            }
            url = match page.next_link {
                Some(link) => {
                    let next = url.join(&link).map_err(|e| IfsError::Decode(format!("bad @odata.nextLink: {e}")))?;
                    // The bearer token goes wherever nextLink points; never off the IFS host.
                    if next.origin() != self.inner.root.origin() {
                        return Err(IfsError::Decode(format!("@odata.nextLink leaves the IFS host: {next}")));
                    }
                    if next == url {
                        return Err(IfsError::Decode(format!("@odata.nextLink repeats the request: {next}")));
                    }
                    next
                }
                None if count == page_size => {
                    self.url(&format!("{entity_set}?{}", query.to_query_string(rows.len())))?
                }
                None => return Ok(rows),
            };
        }
        Err(IfsError::Decode(format!("{entity_set}: more than {MAX_PAGES} pages")))
    }

    /// Sends `req` with budget, token and retry policy.
    pub(crate) async fn execute(&self, req: &Request<'_>) -> Result<Response, IfsError> {
        self.run(req, true).await
    }

    fn fetch_token(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<FetchedToken, IfsError>> + Send + '_>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct TokenAnswer {
                access_token: String,
                expires_in: Option<u64>,
            }
            let creds = &self.inner.credentials;
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", creds.client_id.as_str()),
                ("client_secret", creds.client_secret.expose()),
                ("scope", "openid microprofile-jwt"),
            ];
            let req = Request {
                method: Method::POST,
                url: self.inner.token_url.clone(),
                body: Body::Form(&form),
                if_match: None,
                resend: Resend::Always,
            };
            let answer: TokenAnswer = self.run(&req, false).await?.json("token response")?;
            self.inner.metrics.count(Metric::IfsTokenFetches, 1, Vec::new());
            Ok(FetchedToken {
                access_token: Secret::new(answer.access_token),
                expires_in: answer.expires_in.filter(|s| *s > 0).map(Duration::from_secs),
            })
        })
    }

    async fn run(&self, req: &Request<'_>, authenticated: bool) -> Result<Response, IfsError> {
        let mut failed = 0u32;
        let mut refreshed = false;
        let mut mi_modified_seen = false;
        loop {
            let token = if authenticated { Some(self.inner.tokens.get(|| self.fetch_token()).await?) } else { None };
            let failure = match self.send_once(req, token.as_ref()).await {
                Ok(resp) => return Ok(resp),
                Err(f) => f,
            };
            // 401 with a token: it expired or was revoked early. Drop it, fetch once, send again once.
            if let (IfsError::Auth { status: 401, .. }, Some(token)) = (&failure.error, &token)
                && !refreshed
            {
                refreshed = true;
                bump(&self.inner.counters.unauthorized_refreshes);
                self.inner.tokens.invalidate(token).await;
                continue;
            }
            let resend = match &failure.error {
                IfsError::RateLimited { .. } => true,
                IfsError::Unavailable { code, .. } if code == MI_MODIFIED_ERROR => {
                    // A stale metadata cache is cured by one retry; a second means something else.
                    let first = !mi_modified_seen;
                    mi_modified_seen = true;
                    first && req.resend != Resend::Unprocessed
                }
                IfsError::Unavailable { .. } => req.resend != Resend::Unprocessed,
                IfsError::Transport { .. } => failure.unsent || req.resend == Resend::Always,
                _ => false,
            };
            failed += 1;
            if !resend {
                return Err(failure.error);
            }
            // The thread-local RNG must not live across the await below (it is not Send).
            let delay = self.inner.retry.next_delay(failed, failure.retry_after, &mut rand::rng());
            let Some(delay) = delay else { return Err(failure.error) };
            tracing::debug!(error = %failure.error, attempt = failed, ?delay, "IFS request failed, retrying");
            bump(&self.inner.counters.retries);
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_once(&self, req: &Request<'_>, token: Option<&Secret>) -> Result<Response, Failure> {
        let mut builder = self
            .inner
            .http
            .request(req.method.clone(), req.url.clone())
            .timeout(self.inner.timeout)
            .header(ACCEPT, JSON_MEDIA_TYPE);
        if let Some(token) = token {
            builder = builder.bearer_auth(token.expose());
        }
        if let Some(tag) = req.if_match {
            builder = builder.header(IF_MATCH, tag.as_str());
        }
        builder = match req.body {
            Body::None => builder,
            Body::Json(value) => builder.header(CONTENT_TYPE, JSON_MEDIA_TYPE).body(value.to_string()),
            Body::Form(pairs) => builder.form(pairs),
            Body::Batch { boundary, text } => builder
                .header(CONTENT_TYPE, format!("multipart/mixed;boundary={boundary}"))
                .header("Prefer", "odata.continue-on-error")
                .body(text.to_owned()),
            Body::Binary { content_type, bytes } => builder.header(CONTENT_TYPE, content_type).body(bytes.to_vec()),
        };
        self.inner.budget.acquire().await;
        bump(&self.inner.counters.requests);
        let kind = match (&req.body, &req.method) {
            (Body::Form(_), _) => "token",
            (Body::Batch { .. }, _) => "batch",
            (_, &Method::GET) => "read",
            _ => "write",
        };
        self.inner.metrics.count(Metric::IfsRequests, 1, dim("Kind", kind));
        let resp = builder.send().await.map_err(transport_failure)?;
        let status = resp.status();
        let etag = resp.headers().get(ETAG).and_then(|v| v.to_str().ok()).and_then(|v| ETag::parse(v).ok());
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let body = resp.bytes().await.map_err(transport_failure)?.to_vec();
        if status.is_success() {
            return Ok(Response { etag, content_type, body });
        }
        match status {
            StatusCode::PRECONDITION_FAILED => self.inner.metrics.count(Metric::Ifs412, 1, Vec::new()),
            StatusCode::TOO_MANY_REQUESTS => self.inner.metrics.count(Metric::Ifs429, 1, Vec::new()),
            _ => {}
        }
        let parsed = parse_error_body(&body);
        let error = if status == StatusCode::PRECONDITION_FAILED {
            IfsError::PreconditionFailed { attempts: 1 }
        } else {
            classify_status(status.as_u16(), &parsed, retry_after, &self.relative_path(&req.url))
        };
        Err(Failure { error, retry_after, unsent: false })
    }
}

fn transport_failure(e: reqwest::Error) -> Failure {
    if e.is_builder() {
        return Failure { error: IfsError::InvalidRequest(e.to_string()), retry_after: None, unsent: true };
    }
    // Walk the source chain: reqwest's own text ("error sending request") hides the cause.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    Failure {
        error: IfsError::Transport { message, timeout: e.is_timeout() },
        retry_after: None,
        unsent: e.is_connect(),
    }
}

/// `@odata.etag` of an entity body.
pub(crate) fn body_etag(entity: &Value) -> Option<ETag> {
    entity.get("@odata.etag").and_then(Value::as_str).and_then(|t| ETag::parse(t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::TokenBucket;

    #[test]
    fn list_query_renders_percent_encoded_options() {
        let q = ListQuery {
            filter: Some(Filter::eq_str("Company", "10").and(Filter::eq_num("AccountingYear", 2026))),
            orderby: vec!["Company".into(), "Account".into()],
            select: vec![],
            page_size: 9000,
        };
        assert_eq!(
            q.to_query_string(0),
            "$filter=Company%20eq%20%2710%27%20and%20AccountingYear%20eq%202026&$orderby=Company%2CAccount&$top=5000"
        );
        assert!(q.to_query_string(5000).ends_with("&$top=5000&$skip=5000"));
    }

    #[test]
    fn entity_sets_of_keyed_paths() {
        assert_eq!(
            entity_set_of("AccountsHandling.svc/AccountSet(Company='10',Account='6500')"),
            "AccountsHandling.svc/AccountSet"
        );
        assert_eq!(entity_set_of("AccountsHandling.svc/AccountSet"), "AccountsHandling.svc/AccountSet");
        assert_eq!(
            entity_set_of("CodePartValuesHandling.svc/CompanyFinanceSet(Company='1(0)')/AccountingCodePartBRef"),
            "CodePartValuesHandling.svc/CompanyFinanceSet"
        );
    }

    #[test]
    fn config_debug_redacts_the_secret_and_bad_urls_are_errors() {
        let creds = IfsCredentials { client_id: "cid".into(), client_secret: Secret::new("s3cr3t-VALUE") };
        let cfg = IfsClientConfig::new("https://acme.ifs.cloud/", "acme", creds.clone());
        assert!(!format!("{cfg:?}").contains("VALUE"));
        let budget = || Arc::new(TokenBucket::ifs(1000));
        let client = IfsTransport::new(cfg, reqwest::Client::new(), budget()).unwrap();
        assert_eq!(
            client.url("AccountsHandling.svc/AccountSet").unwrap().as_str(),
            "https://acme.ifs.cloud/int/ifsapplications/projection/v1/AccountsHandling.svc/AccountSet"
        );
        assert_eq!(
            client.inner.token_url.as_str(),
            "https://acme.ifs.cloud/auth/realms/acme/protocol/openid-connect/token"
        );
        let config = |url: &str| IfsClientConfig::new(url, "r", creds.clone());
        assert!(IfsTransport::new(config("not a url"), reqwest::Client::new(), budget()).is_err());
        assert!(IfsTransport::new(config("ftp://x"), reqwest::Client::new(), budget()).is_err());
    }
}
