//! HTTP side: a killable listener (for commit-then-drop), routing of OData URLs, and the handlers.

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::filter::Kind;
use super::model::{BodyError, CODE_PARTS, FieldType, Parsed, Voucher, VoucherRow, VoucherStatus, etag, parse_body};
use super::odata::{self, ApiError, KeyValue, Paging, Render, Schema, expect_keys, parse_segment, percent_decode};
use super::reference::{Account, AccountingPeriod, CodePartValue};
use super::state::{State, VirtualRow, VirtualVoucher};
use super::tenant::BatchSupport;

// ---------------------------------------------------------------------------------------------------------
// Listener whose connections a handler can kill, so a response is never written.

/// Per-connection handle given to handlers through `ConnectInfo`.
#[derive(Clone, Debug, Default)]
pub struct ConnHandle {
    kill: Arc<AtomicBool>,
}

impl ConnHandle {
    /// From now on every write on the connection fails, so hyper closes it without sending the response.
    fn kill(&self) {
        self.kill.store(true, Ordering::SeqCst);
    }
}

pub struct KillableListener(pub TcpListener);

pub struct KillableStream {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = ConnHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    // Nagle would add ~40 ms to every small response.
                    let _ = stream.set_nodelay(true);
                    let handle = ConnHandle::default();
                    return (KillableStream { inner: stream, kill: handle.kill.clone() }, handle);
                }
                // Transient accept errors (e.g. too many open files): back off briefly, as axum does.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr().map(|_| ConnHandle::default())
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

fn killed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "connection dropped by simulator fault")
}

impl AsyncRead for KillableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Shared state

pub struct Settings {
    pub realm: String,
    pub clients: Vec<(String, String)>,
    pub token_ttl: Duration,
    pub paging: Paging,
    pub base_url: String,
}

pub struct Shared {
    pub settings: Settings,
    pub state: Mutex<State>,
}

impl Shared {
    /// Locks the state; a poisoned lock (a panicking test thread) still yields the data.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

// ---------------------------------------------------------------------------------------------------------
// Routing

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Deployment {
    Int,
    Main,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum RefSet {
    Account,
    Code(char),
    Period,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct VhKey {
    company: String,
    year: i32,
    voucher_type: String,
    voucher_no: i64,
}

#[derive(Debug)]
pub(super) enum Call {
    RefList(RefSet),
    RefGet(RefSet, BTreeMap<String, KeyValue>),
    /// `CompanyFinanceSet(Company='…')/AccountingCodePart{X}Ref`: the company's definition of code part X.
    CodePartDefinition(BTreeMap<String, KeyValue>, char),
    AssistCreate,
    /// `GET VoucherSet`: the virtual vouchers that exist (IFS lists the caller's own; the simulator has one
    /// caller's worth).
    AssistList,
    AssistGet(String),
    AssistRowsPost(String),
    AssistRowsList(String),
    AssistCreateVoucher(String),
    AssistRemove(String),
    RowAnalysisList,
    /// Document management (`DocReferenceObjectAttachmentHandling`).
    Doc(super::documents::DocCall),
    VhList,
    VhGet(VhKey),
    VhRows(VhKey),
    /// `VoucherSet(…)/RemoveVoucher` on a committed voucher: out of the hold table while not approved.
    VhRemove(VhKey),
    Fail(ApiError),
}

#[derive(Debug)]
pub(super) enum Target {
    Token(String),
    /// `POST …/<Projection>.svc/$batch`; the service root path with its trailing slash.
    Batch(Deployment, String),
    Discovery(String),
    Projection(Deployment, Call),
    Unknown,
}

const PROJECTION_PREFIXES: [(&str, Deployment); 2] = [
    ("/int/ifsapplications/projection/v1/", Deployment::Int),
    ("/main/ifsapplications/projection/v1/", Deployment::Main),
];

const CREATE_VOUCHER: &str = "IfsApp.VoucherEntryAssistantHandling.VoucherEntry_CreateVoucher";
const REMOVE_TEMP: &str = "IfsApp.VoucherEntryAssistantHandling.VoucherEntry_RemoveTempVoucher";
/// The public projections document no action that removes a committed voucher; the simulator models one
/// under this name (the client's `[ifs.api] remove_posted_voucher_action` default).
const REMOVE_POSTED: &str = "IfsApp.VoucherHandling.Voucher_RemoveVoucher";

/// Maps a request to its endpoint label (as counted) and target.
pub(super) fn route(method: &Method, path: &str) -> (String, Target) {
    let m = method.as_str().to_string();
    if let Some(rest) = path.strip_prefix("/auth/realms/") {
        let mut parts = rest.splitn(2, '/');
        let realm = percent_decode(parts.next().unwrap_or(""));
        return match (parts.next(), method) {
            (Some("protocol/openid-connect/token"), &Method::POST) => ("Token.POST".into(), Target::Token(realm)),
            (Some(".well-known/openid-configuration"), &Method::GET) => {
                ("Discovery.GET".into(), Target::Discovery(realm))
            }
            _ => (format!("Unknown.{m}"), Target::Unknown),
        };
    }
    let Some((rest, deployment)) = PROJECTION_PREFIXES.iter().find_map(|(p, d)| path.strip_prefix(p).map(|r| (r, *d)))
    else {
        return (format!("Unknown.{m}"), Target::Unknown);
    };
    let segs: Vec<String> = rest.split('/').map(percent_decode).collect();
    let Some(projection) = segs.first().and_then(|s| s.strip_suffix(".svc")) else {
        return (format!("Unknown.{m}"), Target::Unknown);
    };
    if segs.len() == 2 && segs[1] == "$batch" {
        if *method != Method::POST {
            return (format!("Batch.{m}"), Target::Projection(deployment, not_allowed(method)));
        }
        let prefix = PROJECTION_PREFIXES.iter().find(|(_, d)| *d == deployment).map_or("", |(p, _)| *p);
        return ("Batch.POST".into(), Target::Batch(deployment, format!("{prefix}{projection}.svc/")));
    }
    let parsed: Result<Vec<Seg>, ApiError> = segs[1..].iter().map(|s| parse_segment(s)).collect();
    let (label, call) = match parsed {
        Ok(parsed) => route_projection(method, projection, &parsed),
        Err(e) => (format!("{projection}.{m}"), Some(Call::Fail(e))),
    };
    match call {
        Some(c) => (label, Target::Projection(deployment, c)),
        None => (format!("Unknown.{m}"), Target::Unknown),
    }
}

fn not_allowed(method: &Method) -> Call {
    Call::Fail(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "ODP_METHOD_NOT_ALLOWED",
        format!("Method {method} is not allowed on this resource"),
    ))
}

fn objkey_of(keys: &Option<BTreeMap<String, KeyValue>>) -> Result<String, ApiError> {
    match keys {
        Some(k) => Ok(expect_keys(k, &[("Objkey", false)])?.remove(0).text()),
        None => Err(ApiError::bad_url("Missing key predicate (Objkey='…')")),
    }
}

fn vh_key(keys: &BTreeMap<String, KeyValue>) -> Result<VhKey, ApiError> {
    let k = expect_keys(
        keys,
        &[("Company", false), ("AccountingYear", true), ("VoucherType", false), ("VoucherNo", true)],
    )?;
    Ok(VhKey { company: k[0].text(), year: k[1].num() as i32, voucher_type: k[2].text(), voucher_no: k[3].num() })
}

type Seg = (String, Option<BTreeMap<String, KeyValue>>);

fn route_projection(method: &Method, projection: &str, segs: &[Seg]) -> (String, Option<Call>) {
    let m = method.as_str();
    let get = method == Method::GET;
    let post = method == Method::POST;
    let ref_set = match projection {
        "AccountsHandling" => Some((RefSet::Account, "AccountSet".to_string())),
        "AccountingPeriodsHandling" => Some((RefSet::Period, "AccountingPeriodSet".to_string())),
        p => p
            .strip_prefix("Code")
            .and_then(|r| r.strip_suffix("Handling"))
            .and_then(|l| l.chars().next().filter(|c| l.len() == 1 && CODE_PARTS.contains(c)))
            .map(|c| (RefSet::Code(c), format!("Code{c}Set"))),
    };
    if let Some((set, set_name)) = ref_set {
        return match segs {
            [(name, keys)] if *name == set_name => {
                let suffix = if keys.is_some() { "GET" } else { "LIST" };
                let label = if get { format!("{set_name}.{suffix}") } else { format!("{set_name}.{m}") };
                let call = match (get, keys) {
                    (false, _) => not_allowed(method),
                    (true, None) => Call::RefList(set),
                    (true, Some(k)) => Call::RefGet(set, k.clone()),
                };
                (label, Some(call))
            }
            _ => (String::new(), None),
        };
    }
    if projection == "CodePartValuesHandling" {
        return match segs {
            [(name, Some(keys)), (nav, None)] if name == "CompanyFinanceSet" => {
                let part = nav
                    .strip_prefix("AccountingCodePart")
                    .and_then(|r| r.strip_suffix("Ref"))
                    .and_then(|l| l.chars().next().filter(|c| l.len() == 1 && CODE_PARTS.contains(c)));
                match part {
                    Some(part) => {
                        let call = if get { Call::CodePartDefinition(keys.clone(), part) } else { not_allowed(method) };
                        (format!("AccountingCodePartRef.{m}"), Some(call))
                    }
                    None => (String::new(), None),
                }
            }
            _ => (String::new(), None),
        };
    }
    if projection == super::documents::PROJECTION {
        return match super::documents::route(method, segs) {
            Some((label, call)) => (label, Some(call.map(Call::Doc).unwrap_or_else(Call::Fail))),
            None => (String::new(), None),
        };
    }
    match projection {
        "VoucherEntryAssistantHandling" => match segs {
            [(name, None)] if name == "VoucherSet" => match (post, get) {
                (true, _) => ("VoucherSet.POST".into(), Some(Call::AssistCreate)),
                (_, true) => ("VoucherSet.LIST".into(), Some(Call::AssistList)),
                _ => (format!("VoucherSet.{m}"), Some(not_allowed(method))),
            },
            [(name, keys @ Some(_))] if name == "VoucherSet" => {
                let call = match (get, objkey_of(keys)) {
                    (_, Err(e)) => Call::Fail(e),
                    (true, Ok(k)) => Call::AssistGet(k),
                    (false, Ok(_)) => not_allowed(method),
                };
                (format!("VoucherSet.{m}"), Some(call))
            }
            [(name, keys @ Some(_)), (child, None)] if name == "VoucherSet" => {
                let objkey = objkey_of(keys);
                let (label, call) = match child.as_str() {
                    "VoucherPostingArray" if post => {
                        ("VoucherPostingArray.POST".to_string(), objkey.map(Call::AssistRowsPost))
                    }
                    "VoucherPostingArray" if get => {
                        ("VoucherPostingArray.LIST".to_string(), objkey.map(Call::AssistRowsList))
                    }
                    "VoucherPostingArray" => (format!("VoucherPostingArray.{m}"), Ok(not_allowed(method))),
                    CREATE_VOUCHER if post => ("CreateVoucher.POST".to_string(), objkey.map(Call::AssistCreateVoucher)),
                    CREATE_VOUCHER => (format!("CreateVoucher.{m}"), Ok(not_allowed(method))),
                    REMOVE_TEMP if post => ("RemoveTempVoucher.POST".to_string(), objkey.map(Call::AssistRemove)),
                    REMOVE_TEMP => (format!("RemoveTempVoucher.{m}"), Ok(not_allowed(method))),
                    _ => return (String::new(), None),
                };
                (label, Some(call.unwrap_or_else(Call::Fail)))
            }
            _ => (String::new(), None),
        },
        "VoucherRowsAnalysis" => match segs {
            [(name, None)] if name == "VoucherRowSet" => (
                if get { "VoucherRowSet.LIST".into() } else { format!("VoucherRowSet.{m}") },
                Some(if get { Call::RowAnalysisList } else { not_allowed(method) }),
            ),
            _ => (String::new(), None),
        },
        "VoucherHandling" => match segs {
            [(name, None)] if name == "VoucherSet" => (
                if get { "VoucherHandling.VoucherSet.LIST".into() } else { format!("VoucherHandling.VoucherSet.{m}") },
                Some(if get { Call::VhList } else { not_allowed(method) }),
            ),
            [(name, Some(keys))] if name == "VoucherSet" => (
                format!("VoucherHandling.VoucherSet.{m}"),
                Some(match (get, vh_key(keys)) {
                    (_, Err(e)) => Call::Fail(e),
                    (true, Ok(k)) => Call::VhGet(k),
                    (false, Ok(_)) => not_allowed(method),
                }),
            ),
            [(name, Some(keys)), (child, None)] if name == "VoucherSet" && child == REMOVE_POSTED => (
                format!("RemoveVoucher.{m}"),
                Some(match (post, vh_key(keys)) {
                    (_, Err(e)) => Call::Fail(e),
                    (true, Ok(k)) => Call::VhRemove(k),
                    (false, Ok(_)) => not_allowed(method),
                }),
            ),
            [(name, Some(keys)), (child, None)] if name == "VoucherSet" && child == "VoucherPostingArray" => (
                if get {
                    "VoucherHandling.VoucherPostingArray.LIST".into()
                } else {
                    format!("VoucherHandling.VoucherPostingArray.{m}")
                },
                Some(match (get, vh_key(keys)) {
                    (_, Err(e)) => Call::Fail(e),
                    (true, Ok(k)) => Call::VhRows(k),
                    (false, Ok(_)) => not_allowed(method),
                }),
            ),
            _ => (String::new(), None),
        },
        _ => (String::new(), None),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Entry point

pub(super) struct Outcome {
    pub response: Response,
    /// Drop the connection instead of answering (commit-then-drop).
    pub drop: bool,
}

impl From<Response> for Outcome {
    fn from(response: Response) -> Self {
        Self { response, drop: false }
    }
}

impl From<ApiError> for Outcome {
    fn from(e: ApiError) -> Self {
        e.into_response().into()
    }
}

async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if let Some(rest) = path.strip_prefix("/_sim/") {
        return admin(&shared, &method, rest, &body);
    }
    let (label, target) = route(&method, &path);
    let stallable = matches!(&target, Target::Projection(..) | Target::Batch(..));

    // Budget and burst faults apply to every request, token included, before anything else.
    let (refused, latency) = {
        let mut st = shared.lock();
        let refused = if st.faults.burst_429_next > 0 {
            st.faults.burst_429_next -= 1;
            st.counters.add_fault("burst_429");
            Some(1)
        } else {
            st.budget.admit(Instant::now()).err()
        };
        (refused, st.faults.latency_ms)
    };
    if let Some(secs) = refused {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            format!("Request budget exhausted; retry after {secs} s"),
        );
        e.retry_after = Some(secs);
        shared.lock().counters.record(&label, 429);
        return e.into_response();
    }
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }

    let outcome = match target {
        Target::Token(realm) => token(&shared, &realm, &headers, &body).into(),
        Target::Discovery(realm) => discovery(&shared, &realm).into(),
        Target::Unknown => ApiError::not_found(&path).into(),
        Target::Projection(deployment, call) => projection(&shared, deployment, call, &method, &uri, &headers, &body),
        Target::Batch(deployment, service_path) => {
            let gated = {
                let mut st = shared.lock();
                gate(&mut st, deployment, &method, &headers).and_then(|()| served(&st, &path)).and_then(|()| {
                    // A release or gateway without the route answers as for any unknown resource.
                    if st.tenant.batch == BatchSupport::Absent { Err(ApiError::not_found(&path)) } else { Ok(()) }
                })
            };
            match gated {
                Err(e) => e.into(),
                Ok(()) => super::batch::handle(&shared, deployment, &service_path, &headers, &body).await,
            }
        }
    };
    let status = if outcome.drop { 0 } else { outcome.response.status().as_u16() };
    let stall = {
        let mut st = shared.lock();
        st.counters.record(&label, status);
        let rate = st.faults.stall_rate;
        let stall = stallable && !outcome.drop && st.roll(rate);
        if stall {
            st.counters.add_fault("stall");
        }
        stall.then_some(st.faults.stall_ms)
    };
    if outcome.drop {
        conn.kill();
    }
    // The work is done; only the answer is late (the client gives up first and cannot know what happened).
    if let Some(ms) = stall {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    outcome.response
}

fn admin(shared: &Shared, method: &Method, rest: &str, body: &Bytes) -> Response {
    let mut st = shared.lock();
    match (method, rest) {
        (&Method::GET, "counters") => axum::Json(st.counters_now()).into_response(),
        (&Method::POST, "counters/reset") => {
            st.counters = Default::default();
            StatusCode::NO_CONTENT.into_response()
        }
        (&Method::GET, "vouchers") => axum::Json(st.vouchers.clone()).into_response(),
        (&Method::GET, "faults") => axum::Json(st.faults.clone()).into_response(),
        (&Method::POST | &Method::PUT, "faults") => match serde_json::from_slice(body) {
            Ok(f) => {
                st.faults = f;
                axum::Json(st.faults.clone()).into_response()
            }
            Err(e) => ApiError::deserialization(format!("Invalid faults document: {e}")).into_response(),
        },
        (&Method::GET, "reference") => axum::Json(st.reference.clone()).into_response(),
        (&Method::GET, "tenant") => axum::Json(st.tenant.clone()).into_response(),
        (&Method::POST | &Method::PUT, "tenant") => match serde_json::from_slice(body) {
            Ok(t) => {
                st.tenant = t;
                axum::Json(st.tenant.clone()).into_response()
            }
            Err(e) => ApiError::deserialization(format!("Invalid tenant document: {e}")).into_response(),
        },
        (&Method::PUT | &Method::POST, path) if path.starts_with("periods/") => set_period(&mut st, path, body),
        (&Method::POST, path) if path.starts_with("vouchers/") && path.ends_with("/approve") => approve(&mut st, path),
        _ => ApiError::not_found(rest).into_response(),
    }
}

/// `POST /_sim/vouchers/{company}/{year}/{type}/{no}/approve`: a person approves a voucher in the hold table
/// (it can no longer be removed, only reversed). Answers the voucher as it now is; 404 for an unknown one.
fn approve(st: &mut super::state::State, path: &str) -> Response {
    let parts: Vec<String> = path.split('/').map(percent_decode).collect();
    let (company, year, voucher_type, no) = match parts.as_slice() {
        [_, company, year, voucher_type, no, _] => (company, year, voucher_type, no),
        _ => return ApiError::bad_url("use /_sim/vouchers/{company}/{year}/{type}/{no}/approve").into_response(),
    };
    let (Ok(year), Ok(no)) = (year.parse::<i32>(), no.parse::<i64>()) else {
        return ApiError::bad_url("year and voucher number must be numbers").into_response();
    };
    let found = st.vouchers.iter_mut().find(|v| {
        v.company == *company && v.accounting_year == year && v.voucher_type == *voucher_type && v.voucher_no == no
    });
    match found {
        Some(v) => {
            v.status = VoucherStatus::Approved;
            axum::Json(v.clone()).into_response()
        }
        None => ApiError::not_found(path).into_response(),
    }
}

/// `PUT /_sim/periods/{company}/{year}/{period}` with `{"status": "Open" | "Closed"}`: a bookkeeper closing or
/// reopening a period while the connector runs. Answers the period as it now is; 404 for one that does not
/// exist.
fn set_period(st: &mut super::state::State, path: &str, body: &Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Body {
        status: super::reference::PeriodStatus,
    }
    let parts: Vec<&str> = path.split('/').collect();
    let key = match parts.as_slice() {
        ["periods", company, year, period] => {
            year.parse::<i32>().ok().zip(period.parse::<u32>().ok()).map(|k| (*company, k))
        }
        _ => None,
    };
    let Some((company, (year, period))) = key else {
        return ApiError::deserialization(format!("expected periods/{{company}}/{{year}}/{{period}}, got {path}"))
            .into_response();
    };
    let status = match serde_json::from_slice::<Body>(body) {
        Ok(b) => b.status,
        Err(e) => {
            return ApiError::deserialization(format!(
                "Invalid period document (want {{\"status\":\"Open\"|\"Closed\"}}): {e}"
            ))
            .into_response();
        }
    };
    match st.reference.set_period_status(company, year, period, status) {
        Some(p) => axum::Json(p.clone()).into_response(),
        None => ApiError::not_found(path).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// IAM

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": error, "error_description": description}))).into_response()
}

fn token(shared: &Shared, realm: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let s = &shared.settings;
    if realm != s.realm {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"error": "Realm does not exist"}))).into_response();
    }
    let form_ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form_ct {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "Unsupported grant_type");
    }
    // Keycloak also accepts the client in HTTP Basic.
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_string(), b.to_string())));
    let (id, secret) = match (form.get("client_id"), form.get("client_secret"), basic) {
        (Some(id), Some(secret), _) => (id.clone(), secret.clone()),
        (_, _, Some(pair)) => pair,
        _ => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Client credentials are missing"),
    };
    if !s.clients.iter().any(|(i, sec)| *i == id && *sec == secret) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Invalid client or Invalid client credentials");
    }
    let access_token = shared.lock().issue_token(s.token_ttl);
    axum::Json(json!({
        "access_token": access_token,
        "expires_in": s.token_ttl.as_secs(),
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": "openid microprofile-jwt",
    }))
    .into_response()
}

fn discovery(shared: &Shared, realm: &str) -> Response {
    let s = &shared.settings;
    if realm != s.realm {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"error": "Realm does not exist"}))).into_response();
    }
    let issuer = format!("{}/auth/realms/{realm}", s.base_url);
    axum::Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
        "grant_types_supported": ["client_credentials"],
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------------------------
// Projections

pub(super) struct Req<'a> {
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    pub render: Render,
    pub url: url::Url,
}

impl Req<'_> {
    fn if_match(&self) -> Option<String> {
        self.headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string())
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// What every projection request (a `$batch` included) passes before it does anything: gateway faults, the
/// bearer token, and on `/main/` the CSRF check for mutations.
fn gate(st: &mut State, deployment: Deployment, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    // Gateway-level faults strike before the request does anything.
    let rate = st.faults.status_5xx_rate;
    if st.roll(rate) {
        let code = st.pick_5xx();
        st.counters.add_fault(&format!("status_{code}"));
        let (status, ecode) = match code {
            502 => (StatusCode::BAD_GATEWAY, "BAD_GATEWAY"),
            504 => (StatusCode::GATEWAY_TIMEOUT, "ODP_OPERATION_TIMEOUT"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
        };
        return Err(ApiError::new(status, ecode, format!("Injected fault: HTTP {}", status.as_u16())));
    }
    let rate = st.faults.mi_modified_rate;
    if st.roll(rate) {
        st.counters.add_fault("mi_modified");
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "MI_MODIFIED_ERROR",
            "The metadata of the projection has been modified. Please retry.",
        ));
    }
    match bearer(headers) {
        Some(t) if st.token_valid(t) => {}
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "The access token is invalid or expired",
            ));
        }
        None => return Err(ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "Bearer token required")),
    }
    let mutating = matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    if deployment == Deployment::Main && mutating {
        let header_ok = headers.get("x-xsrf-token").and_then(|v| v.to_str().ok()).is_some_and(|v| v == st.xsrf_token);
        let cookie_ok = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|c| c.split(';'))
            .any(|c| c.trim() == format!("XSRF-TOKEN={}", st.xsrf_token));
        if !(header_ok && cookie_ok) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "CSRF_ERROR",
                "CSRF check failed: missing or invalid X-XSRF-TOKEN",
            ));
        }
    }
    Ok(())
}

/// The projection (`Name.svc`) a projection URL path is under.
fn projection_of(path: &str) -> Option<String> {
    let rest = PROJECTION_PREFIXES.iter().find_map(|(p, _)| path.strip_prefix(p))?;
    Some(percent_decode(rest.split('/').next().unwrap_or("")))
}

/// 404 for a projection the tenant's release does not ship (see [`super::IfsTenant::missing_projections`]).
pub(super) fn served(st: &State, path: &str) -> Result<(), ApiError> {
    match projection_of(path) {
        Some(p) if st.tenant.lacks(&p) => Err(ApiError::not_found(path)),
        _ => Ok(()),
    }
}

fn projection(
    shared: &Shared,
    deployment: Deployment,
    call: Call,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Outcome {
    let mut st = shared.lock();
    if let Err(e) = gate(&mut st, deployment, method, headers).and_then(|()| served(&st, uri.path())) {
        return e.into();
    }
    let render = Render {
        ieee754: headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("ieee754compatible=true")),
    };
    let url = match url::Url::parse(&format!("{}{}", shared.settings.base_url, uri)) {
        Ok(u) => u,
        Err(_) => return ApiError::bad_url("Malformed request URL").into(),
    };
    let req = Req { uri, headers, body, render, url };
    let paging = shared.settings.paging;
    let mut outcome = match execute(&mut st, call, &req, paging) {
        Ok(o) => o,
        Err(e) => e.into(),
    };
    if deployment == Deployment::Main
        && *method == Method::GET
        && let Ok(v) = HeaderValue::from_str(&format!("XSRF-TOKEN={}; Path=/main", st.xsrf_token))
    {
        outcome.response.headers_mut().append(header::SET_COOKIE, v);
    }
    outcome
}

pub(super) fn execute(st: &mut State, call: Call, req: &Req<'_>, paging: Paging) -> Result<Outcome, ApiError> {
    match call {
        Call::Fail(e) => Err(e),
        Call::RefList(set) => {
            let schema = ref_schema(set);
            let opts = odata::parse_query(req.uri.query(), &schema)?;
            let rows = ref_rows(st, set);
            Ok(json_response(StatusCode::OK, odata::list(rows, &schema, &opts, &req.url, paging, req.render), None))
        }
        Call::RefGet(set, keys) => {
            let schema = ref_schema(set);
            let row = ref_get(st, set, &keys)?;
            Ok(entity_response(StatusCode::OK, row, &schema, req))
        }
        Call::CodePartDefinition(keys, part) => {
            let company = expect_keys(&keys, &[("Company", false)])?.remove(0).text();
            let row = code_part_definition(st, &company, part).ok_or_else(|| {
                ApiError::not_found(&format!("CompanyFinanceSet(Company='{company}')/AccountingCodePart{part}Ref"))
            })?;
            Ok(entity_response(StatusCode::OK, row, &code_part_definition_schema(), req))
        }
        Call::AssistCreate => assist_create(st, req),
        Call::AssistList => {
            let schema = virtual_schema();
            let opts = odata::parse_query(req.uri.query(), &schema)?;
            let rows = st.virtuals.values().map(virtual_row).collect();
            Ok(json_response(StatusCode::OK, odata::list(rows, &schema, &opts, &req.url, paging, req.render), None))
        }
        Call::AssistGet(objkey) => {
            let v = st.virtuals.get(&objkey).ok_or_else(|| virtual_missing(&objkey))?;
            Ok(virtual_response(StatusCode::OK, v, req))
        }
        Call::AssistRowsList(objkey) => {
            let v = st.virtuals.get(&objkey).ok_or_else(|| virtual_missing(&objkey))?;
            let rows: Vec<Value> = v.rows.iter().map(|r| Value::Object(row_entity(r, v))).collect();
            let ctx = format!("{}$metadata#VoucherSet('{objkey}')/VoucherPostingArray", odata::service_root(&req.url));
            Ok(json_response(StatusCode::OK, json!({"@odata.context": ctx, "value": rows}), None))
        }
        Call::AssistRowsPost(objkey) => {
            guard(st, &objkey, req)?;
            assist_add_row(st, &objkey, req)
        }
        Call::AssistCreateVoucher(objkey) => {
            guard(st, &objkey, req)?;
            action_params(req)?;
            let v = st.virtuals.get(&objkey).ok_or_else(|| virtual_missing(&objkey))?;
            st.validate(v).map_err(ApiError::business)?;
            let no = st.commit(&objkey).ok_or_else(|| virtual_missing(&objkey))?;
            let drop = if st.faults.commit_then_drop_next > 0 {
                st.faults.commit_then_drop_next -= 1;
                true
            } else {
                let rate = st.faults.commit_then_drop_rate;
                st.roll(rate)
            };
            if drop {
                st.counters.add_fault("commit_then_drop");
            }
            let ctx = format!("{}$metadata#Edm.Int32", odata::service_root(&req.url));
            let response = json_response(StatusCode::OK, json!({"@odata.context": ctx, "value": no}), None).response;
            Ok(Outcome { response, drop })
        }
        Call::AssistRemove(objkey) => {
            guard(st, &objkey, req)?;
            action_params(req)?;
            if st.virtuals.remove(&objkey).is_some() {
                st.counters.virtual_vouchers_removed += 1;
            }
            Ok(StatusCode::NO_CONTENT.into_response().into())
        }
        Call::RowAnalysisList => {
            let schema = voucher_row_schema("VoucherRowSet");
            let opts = odata::parse_query(req.uri.query(), &schema)?;
            let rows = st.vouchers.iter().flat_map(|v| v.rows.iter().map(move |r| voucher_row_map(v, r))).collect();
            Ok(json_response(StatusCode::OK, odata::list(rows, &schema, &opts, &req.url, paging, req.render), None))
        }
        Call::Doc(call) => super::documents::execute(st, call, req),
        Call::VhList => {
            let schema = voucher_head_schema();
            let opts = odata::parse_query(req.uri.query(), &schema)?;
            let rows = st.vouchers.iter().map(voucher_head_map).collect();
            Ok(json_response(StatusCode::OK, odata::list(rows, &schema, &opts, &req.url, paging, req.render), None))
        }
        Call::VhGet(key) => {
            let v = find_voucher(st, &key)?;
            Ok(entity_response(StatusCode::OK, voucher_head_map(v), &voucher_head_schema(), req))
        }
        Call::VhRemove(key) => {
            action_params(req)?;
            let if_match = req.if_match();
            if if_match.is_some() {
                st.counters.mutations_with_if_match += 1;
            } else {
                st.counters.mutations_without_if_match += 1;
            }
            let current = find_voucher(st, &key)?;
            let etag = voucher_head_map(current).get("@odata.etag").and_then(Value::as_str).unwrap_or("").to_owned();
            check_if_match(if_match.as_deref(), &etag)?;
            if current.status == VoucherStatus::Approved {
                return Err(ApiError::business(format!(
                    "Voucher {} {} {} in company {} is approved and cannot be removed",
                    key.voucher_type, key.year, key.voucher_no, key.company
                )));
            }
            st.vouchers.retain(|v| {
                !(v.company == key.company
                    && v.accounting_year == key.year
                    && v.voucher_type == key.voucher_type
                    && v.voucher_no == key.voucher_no)
            });
            st.counters.vouchers_removed += 1;
            Ok(StatusCode::NO_CONTENT.into_response().into())
        }
        Call::VhRows(key) => {
            let schema = voucher_row_schema("VoucherPostingArray");
            let opts = odata::parse_query(req.uri.query(), &schema)?;
            let v = find_voucher(st, &key)?;
            let rows = v.rows.iter().map(|r| voucher_row_map(v, r)).collect();
            Ok(json_response(StatusCode::OK, odata::list(rows, &schema, &opts, &req.url, paging, req.render), None))
        }
    }
}

fn find_voucher<'a>(st: &'a State, k: &VhKey) -> Result<&'a Voucher, ApiError> {
    st.vouchers
        .iter()
        .find(|v| {
            v.company == k.company
                && v.accounting_year == k.year
                && v.voucher_type == k.voucher_type
                && v.voucher_no == k.voucher_no
        })
        .ok_or_else(|| {
            ApiError::not_found(&format!(
                "VoucherSet(Company='{}',AccountingYear={},VoucherType='{}',VoucherNo={})",
                k.company, k.year, k.voucher_type, k.voucher_no
            ))
        })
}

fn virtual_missing(objkey: &str) -> ApiError {
    ApiError::not_found(&format!("VoucherSet(Objkey='{objkey}')"))
}

/// Optimistic-concurrency gate for mutations on an existing virtual voucher: counts If-Match usage, applies
/// the concurrent-modification fault, then requires If-Match to equal the current ETag (or `*`).
fn guard(st: &mut State, objkey: &str, req: &Req<'_>) -> Result<(), ApiError> {
    let if_match = req.if_match();
    if if_match.is_some() {
        st.counters.mutations_with_if_match += 1;
    } else {
        st.counters.mutations_without_if_match += 1;
    }
    if !st.virtuals.contains_key(objkey) {
        return Err(virtual_missing(objkey));
    }
    let rate = st.faults.concurrent_modification_rate;
    if st.roll(rate) {
        let version = st.new_objversion();
        if let Some(v) = st.virtuals.get_mut(objkey) {
            v.objversion = version;
        }
        st.counters.add_fault("concurrent_modification");
    }
    let current = st.virtuals.get(objkey).map(|v| v.etag()).unwrap_or_default();
    check_if_match(if_match.as_deref(), &current)
}

/// IFS's answer to a guarded mutation: 428 without `If-Match`, 412 unless it names the current ETag (or `*`).
pub(super) fn check_if_match(if_match: Option<&str>, current: &str) -> Result<(), ApiError> {
    match if_match {
        None => Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "ODP_MISSING_PRECONDITION",
            "The If-Match header is required for this operation",
        )),
        Some(tag) if tag == "*" || tag.split(',').any(|t| t.trim() == current) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "ODP_PRECONDITION_FAILED",
            "The record has been modified by another user. Please refresh and try again.",
        )),
    }
}

/// A JSON object body; requires `Content-Type: application/json`.
pub(super) fn json_body(req: &Req<'_>) -> Result<Map<String, Value>, ApiError> {
    let is_json = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return Err(ApiError::deserialization(
            "Error while de-serializing contents. Content-Type must be application/json.",
        ));
    }
    match serde_json::from_slice::<Value>(req.body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::deserialization("Error while de-serializing contents.")),
    }
}

/// Bound actions here take no parameters: an empty body is fine without a Content-Type; a JSON body must
/// be an empty object.
fn action_params(req: &Req<'_>) -> Result<(), ApiError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let body = json_body(req)?;
    match body.keys().find(|k| !k.starts_with('@')) {
        Some(k) => Err(ApiError::deserialization(format!(
            "Error while de-serializing contents. The parameter '{k}' does not exist for this action."
        ))),
        None => Ok(()),
    }
}

fn map_body_error(e: BodyError) -> ApiError {
    match e {
        BodyError::Deserialization(m) => ApiError::deserialization(m),
        BodyError::Value(m) => ApiError::business(m),
    }
}

const HEADER_FIELDS: &[(&str, FieldType)] = &[
    ("Company", FieldType::Text(20)),
    ("VoucherType", FieldType::Text(3)),
    ("VoucherDate", FieldType::Date),
    ("AccountingYear", FieldType::Int),
    ("AccountingPeriod", FieldType::Int),
    ("VoucherStatus", FieldType::Text(20)),
    ("VoucherText2", FieldType::Text(200)),
    ("OpennedFrom", FieldType::Text(50)),
    ("UserGroup", FieldType::Text(30)),
    ("CurrencyCode", FieldType::Text(3)),
    ("CurrencyType", FieldType::Text(10)),
    ("CurrencyRate", FieldType::Decimal),
    ("AmountMethod", FieldType::Text(20)),
    ("FunctionGroup", FieldType::Text(10)),
];

const ROW_FIELDS: &[(&str, FieldType)] = &[
    ("Account", FieldType::Text(20)),
    ("CodeB", FieldType::Text(20)),
    ("CodeC", FieldType::Text(20)),
    ("CodeD", FieldType::Text(20)),
    ("CodeE", FieldType::Text(20)),
    ("CodeF", FieldType::Text(20)),
    ("CodeG", FieldType::Text(20)),
    ("CodeH", FieldType::Text(20)),
    ("CodeI", FieldType::Text(20)),
    ("CodeJ", FieldType::Text(20)),
    ("CurrencyCode", FieldType::Text(3)),
    ("CurrencyDebetAmount", FieldType::Decimal),
    ("CurrencyCreditAmount", FieldType::Decimal),
    ("CurrencyRate", FieldType::Decimal),
    ("Text", FieldType::Text(200)),
    ("ReferenceSerie", FieldType::Text(50)),
    ("ReferenceNumber", FieldType::Text(50)),
    ("Quantity", FieldType::Decimal),
    ("OptionalCode", FieldType::Text(20)),
];

fn text_of(parsed: &[(String, Parsed)], name: &str) -> Option<String> {
    parsed.iter().find(|(n, _)| n == name).and_then(|(_, p)| match p {
        Parsed::Text(s) => Some(s.clone()),
        _ => None,
    })
}

fn dec_of(parsed: &[(String, Parsed)], name: &str) -> Option<rust_decimal::Decimal> {
    parsed.iter().find(|(n, _)| n == name).and_then(|(_, p)| match p {
        Parsed::Decimal(d) => Some(*d),
        _ => None,
    })
}

fn accepted(body: &Map<String, Value>) -> Map<String, Value> {
    body.iter().filter(|(k, v)| !k.starts_with('@') && !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn assist_create(st: &mut State, req: &Req<'_>) -> Result<Outcome, ApiError> {
    let body = json_body(req)?;
    let parsed = parse_body(&body, "IfsApp.VoucherEntryAssistantHandling.VoucherEntry", HEADER_FIELDS)
        .map_err(map_body_error)?;
    let get = |name: &str| parsed.iter().find(|(n, _)| n == name).map(|(_, p)| p.clone());
    let missing = |name: &str| ApiError::business(format!("The field {name} is mandatory."));
    let company = text_of(&parsed, "Company").ok_or_else(|| missing("Company"))?;
    let voucher_type = text_of(&parsed, "VoucherType").ok_or_else(|| missing("VoucherType"))?;
    let Some(Parsed::Date(voucher_date)) = get("VoucherDate") else { return Err(missing("VoucherDate")) };
    let Some(Parsed::Int(year)) = get("AccountingYear") else { return Err(missing("AccountingYear")) };
    let Some(Parsed::Int(period)) = get("AccountingPeriod") else { return Err(missing("AccountingPeriod")) };
    // IFS defaults a new voucher to "Not Approved"; the simulator does the same when the field is absent.
    let status = match text_of(&parsed, "VoucherStatus") {
        None => VoucherStatus::NotApproved,
        Some(s) => VoucherStatus::parse(&s).ok_or_else(|| {
            ApiError::deserialization(format!(
                "Error while de-serializing contents. '{s}' is not a valid value for VoucherStatus \
                 (NotApproved, AwaitingApproval, Approved)."
            ))
        })?,
    };
    let (Ok(accounting_year), Ok(accounting_period)) = (i32::try_from(year), u32::try_from(period)) else {
        return Err(ApiError::business(format!("Invalid accounting year/period {year}/{period}")));
    };
    let mut echo = accepted(&body);
    echo.insert("VoucherStatus".into(), Value::String(status.as_str().into()));
    let objkey = st.new_id("VOU");
    let objid = st.new_id("AAAV");
    let objversion = st.new_objversion();
    let v = VirtualVoucher {
        objkey: objkey.clone(),
        objid,
        objversion,
        company,
        voucher_type,
        voucher_date,
        accounting_year,
        accounting_period,
        status,
        text: text_of(&parsed, "VoucherText2"),
        user_group: text_of(&parsed, "UserGroup"),
        currency_code: text_of(&parsed, "CurrencyCode"),
        body: echo,
        rows: Vec::new(),
    };
    let mut out = virtual_response(StatusCode::CREATED, &v, req);
    if let Ok(loc) = HeaderValue::from_str(&format!("{}VoucherSet(Objkey='{objkey}')", odata::service_root(&req.url))) {
        out.response.headers_mut().insert(header::LOCATION, loc);
    }
    st.virtuals.insert(objkey, v);
    Ok(out)
}

fn assist_add_row(st: &mut State, objkey: &str, req: &Req<'_>) -> Result<Outcome, ApiError> {
    let body = json_body(req)?;
    let parsed =
        parse_body(&body, "IfsApp.VoucherEntryAssistantHandling.VoucherPosting", ROW_FIELDS).map_err(map_body_error)?;
    let row_objkey = st.new_id("ROW");
    let objid = st.new_id("AAAR");
    let objversion = st.new_objversion();
    let reference_currency = {
        let v = st.virtuals.get(objkey).ok_or_else(|| virtual_missing(objkey))?;
        v.currency_code.clone().or_else(|| st.reference.company(&v.company).map(|c| c.currency.clone()))
    };
    // A row without CurrencyCode takes the header's, else the company's accounting currency.
    let currency_code = text_of(&parsed, "CurrencyCode").or(reference_currency).unwrap_or_default();
    let mut row = VoucherRow {
        row_no: 0,
        account: text_of(&parsed, "Account").unwrap_or_default(),
        code_b: None,
        code_c: None,
        code_d: None,
        code_e: None,
        code_f: None,
        code_g: None,
        code_h: None,
        code_i: None,
        code_j: None,
        currency_code: currency_code.clone(),
        currency_debet_amount: dec_of(&parsed, "CurrencyDebetAmount"),
        currency_credit_amount: dec_of(&parsed, "CurrencyCreditAmount"),
        currency_rate: dec_of(&parsed, "CurrencyRate"),
        quantity: dec_of(&parsed, "Quantity"),
        optional_code: text_of(&parsed, "OptionalCode"),
        text: text_of(&parsed, "Text"),
        reference_serie: text_of(&parsed, "ReferenceSerie"),
        reference_number: text_of(&parsed, "ReferenceNumber"),
    };
    for part in CODE_PARTS {
        // Empty strings count as "not given", as IFS stores them as NULL.
        row.set_code(part, text_of(&parsed, &format!("Code{part}")).filter(|s| !s.is_empty()));
    }
    let mut echo = accepted(&body);
    echo.insert("CurrencyCode".into(), Value::String(currency_code));
    let vr = VirtualRow { objkey: row_objkey, objid, objversion, row, body: echo };
    let v = st.virtuals.get_mut(objkey).ok_or_else(|| virtual_missing(objkey))?;
    // Rows are separate (child) entities: adding one leaves the parent's objversion, hence its ETag, as is.
    v.rows.push(vr);
    let (v, vr) = match st.virtuals.get(objkey).and_then(|v| v.rows.last().map(|r| (v, r))) {
        Some(pair) => pair,
        None => return Err(virtual_missing(objkey)),
    };
    let mut entity = row_entity(vr, v);
    entity.insert(
        "@odata.context".into(),
        Value::String(format!(
            "{}$metadata#VoucherSet('{objkey}')/VoucherPostingArray/$entity",
            odata::service_root(&req.url)
        )),
    );
    Ok(json_response(StatusCode::CREATED, Value::Object(entity), Some(etag(&vr.objid, &vr.objversion))))
}

fn row_entity(r: &VirtualRow, parent: &VirtualVoucher) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("@odata.etag".into(), Value::String(etag(&r.objid, &r.objversion)));
    m.insert("Objkey".into(), Value::String(r.objkey.clone()));
    m.insert("ParentObjkey".into(), Value::String(parent.objkey.clone()));
    m.extend(r.body.clone());
    m
}

/// The assistant's `VoucherSet` (virtual `VoucherEntry`, keyed by `Objkey`) for listing.
fn virtual_schema() -> Schema {
    Schema::new(
        "VoucherSet",
        &[
            ("Objkey", Kind::Text),
            ("Company", Kind::Text),
            ("VoucherType", Kind::Text),
            ("VoucherDate", Kind::Date),
            ("AccountingYear", Kind::Int),
            ("AccountingPeriod", Kind::Int),
            ("VoucherStatus", Kind::Text),
            ("VoucherText2", Kind::Text),
        ],
        &["Objkey"],
    )
}

fn virtual_row(v: &VirtualVoucher) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("@odata.etag".into(), Value::String(v.etag()));
    m.insert("Objkey".into(), Value::String(v.objkey.clone()));
    m.extend(v.body.clone());
    m
}

fn virtual_response(status: StatusCode, v: &VirtualVoucher, req: &Req<'_>) -> Outcome {
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        Value::String(format!("{}$metadata#VoucherSet/$entity", odata::service_root(&req.url))),
    );
    m.insert("@odata.etag".into(), Value::String(v.etag()));
    m.insert("Objkey".into(), Value::String(v.objkey.clone()));
    m.extend(v.body.clone());
    json_response(status, Value::Object(m), Some(v.etag()))
}

fn json_response(status: StatusCode, body: Value, etag: Option<String>) -> Outcome {
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert(header::ETAG, tag);
    }
    resp.into()
}

/// A single entity: the row with `@odata.context`, `@odata.etag` and an `ETag` header.
fn entity_response(status: StatusCode, row: Map<String, Value>, schema: &Schema, req: &Req<'_>) -> Outcome {
    let tag = row.get("@odata.etag").and_then(Value::as_str).map(String::from);
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        Value::String(format!("{}$metadata#{}/$entity", odata::service_root(&req.url), schema.entity_set)),
    );
    m.extend(odata::render_row(row, schema, req.render));
    json_response(status, Value::Object(m), tag)
}

// ---------------------------------------------------------------------------------------------------------
// Entity rows

fn date(d: chrono::NaiveDate) -> Value {
    Value::String(d.format("%Y-%m-%d").to_string())
}

fn opt_text(s: &Option<String>) -> Value {
    s.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

fn opt_dec(d: &Option<rust_decimal::Decimal>) -> Value {
    d.map_or(Value::Null, |d| Value::String(d.to_string()))
}

/// Adds `@odata.etag` derived from the row's keys (objid) and content (objversion), so it changes whenever
/// the entity does.
fn with_etag(mut row: Map<String, Value>, keys: &str) -> Map<String, Value> {
    let hash = |s: &str| {
        let mut h = DefaultHasher::new();
        s.hash(&mut h);
        h.finish()
    };
    let objid = format!("AAA{:015X}", hash(keys) & 0xFFF_FFFF_FFFF_FFFF);
    let objversion = format!("{:014}", hash(&Value::Object(row.clone()).to_string()) % 100_000_000_000_000);
    row.insert("@odata.etag".into(), Value::String(etag(&objid, &objversion)));
    row
}

fn ref_schema(set: RefSet) -> Schema {
    match set {
        RefSet::Account => {
            let mut fields = vec![
                ("Company", Kind::Text),
                ("Account", Kind::Text),
                ("Description", Kind::Text),
                ("ValidFrom", Kind::Date),
                ("ValidUntil", Kind::Date),
                ("AccntType", Kind::Text),
            ];
            fields.extend([
                ("ReqCodeB", Kind::Text),
                ("ReqCodeC", Kind::Text),
                ("ReqCodeD", Kind::Text),
                ("ReqCodeE", Kind::Text),
                ("ReqCodeF", Kind::Text),
                ("ReqCodeG", Kind::Text),
                ("ReqCodeH", Kind::Text),
                ("ReqCodeI", Kind::Text),
                ("ReqCodeJ", Kind::Text),
            ]);
            Schema::new("AccountSet", &fields, &["Company", "Account"])
        }
        RefSet::Code(c) => {
            let code = format!("Code{c}");
            let mut s = Schema::new(
                &format!("Code{c}Set"),
                &[
                    ("Company", Kind::Text),
                    ("Description", Kind::Text),
                    ("ValidFrom", Kind::Date),
                    ("ValidUntil", Kind::Date),
                ],
                &["Company"],
            );
            s.fields.insert(1, (code.clone(), Kind::Text));
            s.keys.push(code);
            s
        }
        RefSet::Period => Schema::new(
            "AccountingPeriodSet",
            &[
                ("Company", Kind::Text),
                ("AccountingYear", Kind::Int),
                ("AccountingPeriod", Kind::Int),
                ("DateFrom", Kind::Date),
                ("DateUntil", Kind::Date),
                ("PeriodStatus", Kind::Text),
                ("YearEndPeriod", Kind::Text),
            ],
            &["Company", "AccountingYear", "AccountingPeriod"],
        ),
    }
}

/// `AccountingCodeParts` (keys Company, CodePart): the company's name for a code part.
fn code_part_definition_schema() -> Schema {
    Schema::new(
        "AccountingCodeParts",
        &[("Company", Kind::Text), ("CodePart", Kind::Text), ("CodeName", Kind::Text), ("Description", Kind::Text)],
        &["Company", "CodePart"],
    )
}

/// Every company shares the simulator's code part names; an unknown company has none.
fn code_part_definition(st: &State, company: &str, part: char) -> Option<Map<String, Value>> {
    let r = &st.reference;
    r.company(company)?;
    let name = r.code_part_name(part);
    let mut m = Map::new();
    m.insert("Company".into(), Value::String(company.into()));
    m.insert("CodePart".into(), Value::String(part.to_string()));
    m.insert("CodeName".into(), Value::String(name.into()));
    m.insert("Description".into(), Value::String(name.into()));
    Some(with_etag(m, &format!("CodePart:{company}:{part}")))
}

fn account_map(a: &Account) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Company".into(), Value::String(a.company.clone()));
    m.insert("Account".into(), Value::String(a.account.clone()));
    m.insert("Description".into(), Value::String(a.description.clone()));
    m.insert("ValidFrom".into(), date(a.valid_from));
    m.insert("ValidUntil".into(), date(a.valid_until));
    m.insert("AccntType".into(), Value::String(a.accnt_type.clone()));
    for (i, part) in CODE_PARTS.iter().enumerate() {
        m.insert(format!("ReqCode{part}"), Value::String(a.req_code[i].as_str().into()));
    }
    with_etag(m, &format!("Account:{}:{}", a.company, a.account))
}

fn code_map(c: &CodePartValue) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Company".into(), Value::String(c.company.clone()));
    m.insert(format!("Code{}", c.code_part), Value::String(c.value.clone()));
    m.insert("Description".into(), Value::String(c.description.clone()));
    m.insert("ValidFrom".into(), date(c.valid_from));
    m.insert("ValidUntil".into(), date(c.valid_until));
    with_etag(m, &format!("Code{}:{}:{}", c.code_part, c.company, c.value))
}

fn period_map(p: &AccountingPeriod) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Company".into(), Value::String(p.company.clone()));
    m.insert("AccountingYear".into(), json!(p.accounting_year));
    m.insert("AccountingPeriod".into(), json!(p.accounting_period));
    m.insert("DateFrom".into(), date(p.date_from));
    m.insert("DateUntil".into(), date(p.date_until));
    m.insert(
        "PeriodStatus".into(),
        Value::String(match p.status {
            super::reference::PeriodStatus::Open => "Open".into(),
            super::reference::PeriodStatus::Closed => "Closed".into(),
        }),
    );
    m.insert("YearEndPeriod".into(), Value::String(p.year_end_period.clone()));
    with_etag(m, &format!("Period:{}:{}:{}", p.company, p.accounting_year, p.accounting_period))
}

/// Every row of a reference set; `$filter` and paging run afterwards.
fn ref_rows(st: &State, set: RefSet) -> Vec<Map<String, Value>> {
    let r = &st.reference;
    match set {
        RefSet::Account => r.accounts.iter().map(account_map).collect(),
        RefSet::Code(c) => r.code_parts.iter().filter(|v| v.code_part == c).map(code_map).collect(),
        RefSet::Period => r.periods.iter().map(period_map).collect(),
    }
}

fn ref_get(st: &State, set: RefSet, keys: &BTreeMap<String, KeyValue>) -> Result<Map<String, Value>, ApiError> {
    let r = &st.reference;
    match set {
        RefSet::Account => {
            let k = expect_keys(keys, &[("Company", false), ("Account", false)])?;
            r.account(&k[0].text(), &k[1].text()).map(account_map).ok_or_else(|| {
                ApiError::not_found(&format!("AccountSet(Company='{}',Account='{}')", k[0].text(), k[1].text()))
            })
        }
        RefSet::Code(c) => {
            let key = format!("Code{c}");
            let k = expect_keys(keys, &[("Company", false), (key.as_str(), false)])?;
            r.code_part(&k[0].text(), c, &k[1].text()).map(code_map).ok_or_else(|| {
                ApiError::not_found(&format!("Code{c}Set(Company='{}',{key}='{}')", k[0].text(), k[1].text()))
            })
        }
        RefSet::Period => {
            let k = expect_keys(keys, &[("Company", false), ("AccountingYear", true), ("AccountingPeriod", true)])?;
            r.period(&k[0].text(), k[1].num() as i32, k[2].num() as u32)
                .map(period_map)
                .ok_or_else(|| ApiError::not_found("AccountingPeriodSet"))
        }
    }
}

fn voucher_row_schema(set: &str) -> Schema {
    let mut fields = vec![
        ("Company", Kind::Text),
        ("AccountingYear", Kind::Int),
        ("AccountingPeriod", Kind::Int),
        ("VoucherType", Kind::Text),
        ("VoucherNo", Kind::Int),
        ("RowNo", Kind::Int),
        ("VoucherDate", Kind::Date),
        ("Account", Kind::Text),
    ];
    fields.extend([
        ("CodeB", Kind::Text),
        ("CodeC", Kind::Text),
        ("CodeD", Kind::Text),
        ("CodeE", Kind::Text),
        ("CodeF", Kind::Text),
        ("CodeG", Kind::Text),
        ("CodeH", Kind::Text),
        ("CodeI", Kind::Text),
        ("CodeJ", Kind::Text),
        ("CurrencyCode", Kind::Text),
        ("CurrencyDebetAmount", Kind::Decimal),
        ("CurrencyCreditAmount", Kind::Decimal),
        ("CurrencyRate", Kind::Decimal),
        ("Quantity", Kind::Decimal),
        ("OptionalCode", Kind::Text),
        ("Text", Kind::Text),
        ("ReferenceSerie", Kind::Text),
        ("ReferenceNumber", Kind::Text),
        ("VoucherStatus", Kind::Text),
    ]);
    Schema::new(set, &fields, &["Company", "AccountingYear", "VoucherType", "VoucherNo", "RowNo"])
}

fn voucher_row_map(v: &Voucher, r: &VoucherRow) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Company".into(), Value::String(v.company.clone()));
    m.insert("AccountingYear".into(), json!(v.accounting_year));
    m.insert("AccountingPeriod".into(), json!(v.accounting_period));
    m.insert("VoucherType".into(), Value::String(v.voucher_type.clone()));
    m.insert("VoucherNo".into(), json!(v.voucher_no));
    m.insert("RowNo".into(), json!(r.row_no));
    m.insert("VoucherDate".into(), date(v.voucher_date));
    m.insert("Account".into(), Value::String(r.account.clone()));
    for part in CODE_PARTS {
        m.insert(format!("Code{part}"), r.code(part).map_or(Value::Null, |s| Value::String(s.into())));
    }
    m.insert("CurrencyCode".into(), Value::String(r.currency_code.clone()));
    m.insert("CurrencyDebetAmount".into(), opt_dec(&r.currency_debet_amount));
    m.insert("CurrencyCreditAmount".into(), opt_dec(&r.currency_credit_amount));
    m.insert("CurrencyRate".into(), opt_dec(&r.currency_rate));
    m.insert("Quantity".into(), opt_dec(&r.quantity));
    m.insert("OptionalCode".into(), opt_text(&r.optional_code));
    m.insert("Text".into(), opt_text(&r.text));
    m.insert("ReferenceSerie".into(), opt_text(&r.reference_serie));
    m.insert("ReferenceNumber".into(), opt_text(&r.reference_number));
    m.insert("VoucherStatus".into(), Value::String(v.status.as_str().into()));
    with_etag(m, &format!("Row:{}:{}:{}:{}:{}", v.company, v.accounting_year, v.voucher_type, v.voucher_no, r.row_no))
}

fn voucher_head_schema() -> Schema {
    Schema::new(
        "VoucherSet",
        &[
            ("Company", Kind::Text),
            ("AccountingYear", Kind::Int),
            ("VoucherType", Kind::Text),
            ("VoucherNo", Kind::Int),
            ("AccountingPeriod", Kind::Int),
            ("VoucherDate", Kind::Date),
            ("VoucherStatus", Kind::Text),
            ("VoucherText2", Kind::Text),
            ("UserGroup", Kind::Text),
        ],
        &["Company", "AccountingYear", "VoucherType", "VoucherNo"],
    )
}

fn voucher_head_map(v: &Voucher) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Company".into(), Value::String(v.company.clone()));
    m.insert("AccountingYear".into(), json!(v.accounting_year));
    m.insert("VoucherType".into(), Value::String(v.voucher_type.clone()));
    m.insert("VoucherNo".into(), json!(v.voucher_no));
    m.insert("AccountingPeriod".into(), json!(v.accounting_period));
    m.insert("VoucherDate".into(), date(v.voucher_date));
    m.insert("VoucherStatus".into(), Value::String(v.status.as_str().into()));
    m.insert("VoucherText2".into(), opt_text(&v.text));
    m.insert("UserGroup".into(), opt_text(&v.user_group));
    with_etag(m, &format!("Voucher:{}:{}:{}:{}", v.company, v.accounting_year, v.voucher_type, v.voucher_no))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(method: Method, path: &str) -> String {
        route(&method, path).0
    }

    #[test]
    fn endpoint_labels() {
        let p = "/int/ifsapplications/projection/v1/";
        assert_eq!(label(Method::POST, "/auth/realms/ifs/protocol/openid-connect/token"), "Token.POST");
        assert_eq!(label(Method::GET, &format!("{p}AccountsHandling.svc/AccountSet")), "AccountSet.LIST");
        assert_eq!(
            label(Method::GET, &format!("{p}AccountsHandling.svc/AccountSet(Company='10',Account='6500')")),
            "AccountSet.GET"
        );
        assert_eq!(label(Method::GET, &format!("{p}CodeJHandling.svc/CodeJSet")), "CodeJSet.LIST");
        assert_eq!(label(Method::POST, &format!("{p}VoucherEntryAssistantHandling.svc/VoucherSet")), "VoucherSet.POST");
        assert_eq!(
            label(
                Method::POST,
                &format!("{p}VoucherEntryAssistantHandling.svc/VoucherSet(Objkey='k')/VoucherPostingArray")
            ),
            "VoucherPostingArray.POST"
        );
        assert_eq!(
            label(
                Method::POST,
                &format!("{p}VoucherEntryAssistantHandling.svc/VoucherSet(Objkey='k')/{CREATE_VOUCHER}")
            ),
            "CreateVoucher.POST"
        );
        assert_eq!(label(Method::GET, &format!("{p}VoucherRowsAnalysis.svc/VoucherRowSet")), "VoucherRowSet.LIST");
        assert_eq!(
            label(
                Method::GET,
                "/main/ifsapplications/projection/v1/VoucherHandling.svc/VoucherSet(Company='10',AccountingYear=2026,VoucherType='M',VoucherNo=1)"
            ),
            "VoucherHandling.VoucherSet.GET"
        );
        assert_eq!(label(Method::GET, &format!("{p}Nope.svc/X")), "Unknown.GET");
        assert!(matches!(route(&Method::GET, &format!("{p}CodeKHandling.svc/CodeKSet")).1, Target::Unknown));
    }
}
