//! OData `$batch` (multipart/mixed), as IFS documents it: `POST
//! …/<Projection>.svc/$batch` with `Content-Type: multipart/mixed;boundary=…`; change sets are atomic (all or
//! nothing) and may not contain GETs; parts run sequentially; `Content-ID` references work (`$1` in a URL is
//! the resource part 1 created, `$1` in `If-Match` is its ETag); `Prefer: odata.continue-on-error` keeps going
//! after a failed part. The JSON batch format (OData 4.01) is not confirmed for IFS, so only multipart is
//! served (anything else: 400 `ODP_DESERIALIZATION_ERROR`).
//!
//! Simulator choices where IFS documents nothing, following OData 4.0 Part 1 §11.7:
//!
//! - The whole `$batch` is one HTTP request: one unit of the request budget, one entry in `total_requests`
//!   (label `Batch.POST`). Its parts are counted in [`super::IfsCounters::batch_parts`]; their 401/412/428
//!   answers also count in `status_412` etc., and their guarded mutations in `mutations_with(out)_if_match`.
//! - A failed change set is rolled back (virtual vouchers, committed vouchers, number sequences) and answered
//!   with the single failing part's response, as OData 4.0 prescribes.
//! - Without continue-on-error processing stops after the first failed part or change set: later parts get
//!   no response at all.
//! - Content-IDs must be unique within the batch; a `$n` reference resolves only inside the change set that
//!   defines `n`.
//! - Gateway faults (5xx, `MI_MODIFIED_ERROR`, 429) hit the `$batch` request as a whole; the
//!   concurrent-modification fault hits each guarded part. A commit-then-drop fault on a `CreateVoucher`
//!   part commits the whole batch and drops the connection: the client sees no answer at all.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use std::collections::HashMap;

use super::odata::{ApiError, Render};
use super::server::{Call, Deployment, Outcome, Req, Shared, Target, execute, route, served};
use super::state::{State, VirtualVoucher};
use super::tenant::BatchSupport;

/// Largest number of parts (operations) one `$batch` may carry; more is answered 400.
pub const MAX_PARTS: usize = 1000;

/// One MIME part: its headers (names lower-cased) and its content.
#[derive(Debug, Clone, PartialEq)]
pub struct MimePart {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl MimePart {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The `boundary` parameter of a `multipart/mixed` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Splits a multipart body into its parts. Line ends may be CRLF or LF; the line break before a delimiter
/// belongs to the delimiter (RFC 2046), so a part's content ends where its last line ends.
pub fn split_multipart(text: &str, boundary: &str) -> Result<Vec<MimePart>, String> {
    let delimiter = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    let mut closed = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_end() == close {
            if let Some(lines) = current.take() {
                parts.push(part_from_lines(&lines)?);
            }
            closed = true;
            break;
        }
        if line.trim_end() == delimiter {
            if let Some(lines) = current.take() {
                parts.push(part_from_lines(&lines)?);
            }
            current = Some(Vec::new());
            continue;
        }
        // Text before the first delimiter is the preamble and is ignored.
        if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    if !closed {
        return Err(format!("multipart body does not end with --{boundary}--"));
    }
    Ok(parts)
}

fn part_from_lines(lines: &[&str]) -> Result<MimePart, String> {
    let blank = lines.iter().position(|l| l.is_empty()).ok_or("a MIME part has no blank line after its headers")?;
    let headers = parse_headers(&lines[..blank])?;
    Ok(MimePart { headers, body: lines[blank + 1..].join("\r\n") })
}

fn parse_headers(lines: &[&str]) -> Result<Vec<(String, String)>, String> {
    lines
        .iter()
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .ok_or_else(|| format!("malformed header line {l:?}"))
        })
        .collect()
}

/// An `application/http` request inside a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct InnerRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub fn parse_inner_request(text: &str) -> Result<InnerRequest, String> {
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().ok_or("empty request part")?;
    let mut words = start.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err(format!("malformed request line {start:?}"));
    };
    let mut header_lines = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        header_lines.push(line);
    }
    let headers = parse_headers(&header_lines)?;
    let body = lines.collect::<Vec<_>>().join("\r\n");
    Ok(InnerRequest { method: method.to_string(), target: target.to_string(), headers, body })
}

/// Renders a multipart body with CRLF line ends.
pub fn render_multipart(boundary: &str, parts: &[MimePart]) -> String {
    let mut out = String::new();
    for part in parts {
        out.push_str(&format!("--{boundary}\r\n"));
        for (n, v) in &part.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&part.body);
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

/// One operation's answer, before its body is read.
struct Answer {
    content_id: Option<String>,
    response: Response,
}

/// What one top-level part of the batch produced.
enum Item {
    Single(Answer),
    /// A committed change set: every operation's answer.
    ChangeSet(Vec<Answer>),
}

/// A change set's undo information: everything a voucher operation may touch.
struct Snapshot {
    virtuals: HashMap<String, VirtualVoucher>,
    vouchers: usize,
    sequences: HashMap<(String, String, i32), i64>,
    vouchers_created: u64,
    virtual_vouchers_removed: u64,
}

impl Snapshot {
    fn take(st: &State) -> Self {
        Self {
            virtuals: st.virtuals.clone(),
            vouchers: st.vouchers.len(),
            sequences: st.sequences.clone(),
            vouchers_created: st.counters.vouchers_created,
            virtual_vouchers_removed: st.counters.virtual_vouchers_removed,
        }
    }

    fn restore(self, st: &mut State) {
        st.virtuals = self.virtuals;
        st.vouchers.truncate(self.vouchers);
        st.sequences = self.sequences;
        st.counters.vouchers_created = self.vouchers_created;
        st.counters.virtual_vouchers_removed = self.virtual_vouchers_removed;
    }
}

/// What a Content-ID stands for once its part has succeeded.
#[derive(Clone)]
struct Created {
    /// The created entity's path relative to the service root, e.g. `VoucherSet(Objkey='…')`.
    path: Option<String>,
    etag: Option<String>,
}

/// Handles `POST …/<service_path>/$batch` (authentication, CSRF and faults were checked by the caller).
/// `service_path` is the projection's path with a trailing slash, e.g. `/int/…/v1/X.svc/`.
pub(super) async fn handle(
    shared: &Shared,
    deployment: Deployment,
    service_path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Outcome {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(outer) = boundary(content_type) else {
        return ApiError::deserialization(
            "Error while de-serializing contents. $batch needs Content-Type: multipart/mixed;boundary=…",
        )
        .into();
    };
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(_) => return ApiError::deserialization("Error while de-serializing contents. Not UTF-8.").into(),
    };
    let parts = match split_multipart(text, &outer) {
        Ok(p) => p,
        Err(e) => return ApiError::deserialization(format!("Error while de-serializing contents. {e}")).into(),
    };
    let continue_on_error =
        headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|p| {
            matches!(p.trim(), "odata.continue-on-error" | "continue-on-error" | "odata.continue-on-error=true")
        });
    let outer_auth = headers.get(header::AUTHORIZATION).cloned();

    let (items, drop) = {
        let mut st = shared.lock();
        match run(&mut st, shared, deployment, service_path, &parts, continue_on_error, outer_auth.as_ref()) {
            Ok(done) => done,
            Err(e) => return e.into(),
        }
    };

    let mut rendered = Vec::new();
    for item in items {
        match item {
            Item::Single(answer) => rendered.push(http_part(answer).await),
            Item::ChangeSet(answers) => {
                let mut inner = Vec::new();
                for answer in answers {
                    inner.push(http_part(answer).await);
                }
                let cs = format!("changesetresponse_{:016x}", rand::random::<u64>());
                rendered.push(MimePart {
                    headers: vec![("Content-Type".into(), format!("multipart/mixed;boundary={cs}"))],
                    body: render_multipart(&cs, &inner).trim_end().to_string(),
                });
            }
        }
    }
    let response_boundary = format!("batchresponse_{:016x}", rand::random::<u64>());
    let mut response = Response::new(Body::from(render_multipart(&response_boundary, &rendered)));
    *response.status_mut() = StatusCode::OK;
    if let Ok(ct) = HeaderValue::from_str(&format!("multipart/mixed;boundary={response_boundary}")) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Outcome { response, drop }
}

/// Runs every top-level part under the state lock. Returns the answers and whether to drop the connection.
fn run(
    st: &mut State,
    shared: &Shared,
    deployment: Deployment,
    service_path: &str,
    parts: &[MimePart],
    continue_on_error: bool,
    auth: Option<&HeaderValue>,
) -> Result<(Vec<Item>, bool), ApiError> {
    let mut ops = 0usize;
    let mut seen_ids: Vec<String> = Vec::new();
    let mut items = Vec::new();
    let mut drop = false;
    for part in parts {
        let ct = part.header("content-type").unwrap_or("");
        if let Some(cs_boundary) = boundary(ct) {
            let ops_in = split_multipart(&part.body, &cs_boundary)
                .map_err(|e| ApiError::deserialization(format!("Error while de-serializing contents. {e}")))?;
            ops += ops_in.len();
            check_size(ops)?;
            let snapshot = Snapshot::take(st);
            let mut created: HashMap<String, Created> = HashMap::new();
            let mut answers = Vec::new();
            let mut failed = None;
            let mut cs_drop = false;
            for op in &ops_in {
                let content_id = op.header("content-id").map(str::to_string);
                if let Some(id) = &content_id {
                    if seen_ids.contains(id) {
                        return Err(ApiError::bad_url(format!("Content-ID {id} is used twice in the batch")));
                    }
                    seen_ids.push(id.clone());
                }
                let (status, outcome) = match parse_op(op) {
                    Ok(req) if req.method.eq_ignore_ascii_case("GET") => {
                        let e = ApiError::bad_url("GET is not allowed inside a change set");
                        (e.status, Outcome::from(e))
                    }
                    Ok(req) => operation(st, shared, deployment, service_path, &req, &created, auth),
                    Err(e) => (e.status, Outcome::from(e)),
                };
                cs_drop |= outcome.drop;
                if status.is_success() {
                    if let Some(id) = &content_id {
                        created.insert(id.clone(), created_from(&outcome.response, service_path));
                    }
                    answers.push(Answer { content_id, response: outcome.response });
                } else {
                    failed = Some(Answer { content_id, response: outcome.response });
                    break;
                }
            }
            match failed {
                Some(answer) => {
                    snapshot.restore(st);
                    st.counters.changesets_rolled_back += 1;
                    items.push(Item::Single(answer));
                    if !continue_on_error {
                        break;
                    }
                }
                None => {
                    st.counters.changesets_committed += 1;
                    drop |= cs_drop;
                    items.push(Item::ChangeSet(answers));
                }
            }
        } else {
            ops += 1;
            check_size(ops)?;
            let content_id = part.header("content-id").map(str::to_string);
            let (status, outcome) = match parse_op(part) {
                Ok(req) => operation(st, shared, deployment, service_path, &req, &HashMap::new(), auth),
                Err(e) => (e.status, Outcome::from(e)),
            };
            drop |= outcome.drop;
            items.push(Item::Single(Answer { content_id, response: outcome.response }));
            if !status.is_success() && !continue_on_error {
                break;
            }
        }
    }
    Ok((items, drop))
}

fn check_size(ops: usize) -> Result<(), ApiError> {
    if ops > MAX_PARTS {
        return Err(ApiError::bad_url(format!("A $batch may hold at most {MAX_PARTS} operations")));
    }
    Ok(())
}

fn parse_op(part: &MimePart) -> Result<InnerRequest, ApiError> {
    let is_http = part.header("content-type").is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/http"));
    if !is_http {
        return Err(ApiError::deserialization("A batch part must be application/http or multipart/mixed"));
    }
    parse_inner_request(&part.body).map_err(|e| ApiError::deserialization(format!("Malformed batch part: {e}")))
}

/// The created entity a successful answer names (its `Location`, made relative to the service root) and its
/// ETag.
fn created_from(response: &Response, service_path: &str) -> Created {
    let h = response.headers();
    let path = h.get(header::LOCATION).and_then(|v| v.to_str().ok()).and_then(|loc| {
        let i = loc.find(service_path)?;
        Some(loc[i + service_path.len()..].to_string())
    });
    Created { path, etag: h.get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string) }
}

/// Runs one operation; `$n` references resolve against `created`.
fn operation(
    st: &mut State,
    shared: &Shared,
    deployment: Deployment,
    service_path: &str,
    req: &InnerRequest,
    created: &HashMap<String, Created>,
    auth: Option<&HeaderValue>,
) -> (StatusCode, Outcome) {
    let result = (|| {
        let method = Method::from_bytes(req.method.as_bytes()).map_err(|_| ApiError::bad_url("Unknown method"))?;
        // The target: `$n/rest`, a path relative to the service root, or an absolute path.
        let target = match req.target.strip_prefix('$') {
            Some(rest) => {
                let (id, tail) = rest.split_once('/').map_or((rest, ""), |(i, t)| (i, t));
                let path = created
                    .get(id)
                    .and_then(|c| c.path.clone())
                    .ok_or_else(|| ApiError::bad_url(format!("Content-ID reference ${id} names no created entity")))?;
                if tail.is_empty() { path } else { format!("{path}/{tail}") }
            }
            None => req.target.clone(),
        };
        let full = if target.starts_with('/') {
            target
        } else if let Some(i) = target.find(service_path) {
            target[i..].to_string()
        } else {
            format!("{service_path}{target}")
        };
        let uri: Uri = full.parse().map_err(|_| ApiError::bad_url(format!("Malformed URL {full}")))?;
        let mut headers = HeaderMap::new();
        for (n, v) in &req.headers {
            // A tenant that does not resolve ETag references compares `$n` literally (→ 412).
            let value = if n == "if-match" && v.starts_with('$') && st.tenant.batch != BatchSupport::NoEtagReferences {
                let id = &v[1..];
                created
                    .get(id)
                    .and_then(|c| c.etag.clone())
                    .ok_or_else(|| ApiError::bad_url(format!("If-Match ${id} names no entity with an ETag")))?
            } else {
                v.clone()
            };
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(&value)) {
                headers.append(n, v);
            }
        }
        if let Some(auth) = auth {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        let (label, routed) = route(&method, uri.path());
        if let Err(e) = served(st, uri.path()) {
            return Ok((label, Outcome::from(e)));
        }
        let call = match routed {
            Target::Projection(d, call) if d == deployment => call,
            Target::Projection(..) => Call::Fail(ApiError::bad_url("A batch part may not change deployment")),
            _ => return Err(ApiError::not_found(uri.path())),
        };
        let render = Render {
            ieee754: headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("ieee754compatible=true")),
        };
        let url = url::Url::parse(&format!("{}{}", shared.settings.base_url, uri))
            .map_err(|_| ApiError::bad_url("Malformed request URL"))?;
        let body = Bytes::from(req.body.clone());
        let inner = Req { uri: &uri, headers: &headers, body: &body, render, url };
        let outcome = match execute(st, call, &inner, shared.settings.paging) {
            Ok(o) => o,
            Err(e) => e.into(),
        };
        Ok((label, outcome))
    })();
    let (label, outcome) = match result {
        Ok(done) => done,
        Err(e) => ("BatchPart.Invalid".to_string(), Outcome::from(e)),
    };
    let status = outcome.response.status();
    st.counters.record_part(&label, status.as_u16());
    (status, outcome)
}

/// Renders one answer as an `application/http` part.
async fn http_part(answer: Answer) -> MimePart {
    let (parts, body) = answer.response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let status = parts.status;
    let mut text = format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    for (n, v) in &parts.headers {
        if let Ok(v) = v.to_str() {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    text.push_str("\r\n");
    text.push_str(&String::from_utf8_lossy(&bytes));
    let mut headers = vec![
        ("Content-Type".to_string(), "application/http".to_string()),
        ("Content-Transfer-Encoding".to_string(), "binary".to_string()),
    ];
    if let Some(id) = answer.content_id {
        headers.push(("Content-ID".to_string(), id));
    }
    MimePart { headers, body: text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_round_trips_and_tolerates_lf() {
        let parts = vec![
            MimePart {
                headers: vec![("content-type".into(), "application/http".into())],
                body: "GET X HTTP/1.1\r\n\r\n".into(),
            },
            MimePart { headers: vec![("content-id".into(), "7".into())], body: "line1\r\nline2".into() },
        ];
        let text = render_multipart("b1", &parts);
        assert_eq!(split_multipart(&text, "b1").unwrap(), parts);
        assert_eq!(split_multipart(&text.replace("\r\n", "\n"), "b1").unwrap(), parts);
        assert!(split_multipart("--b1\r\n\r\nx\r\n", "b1").is_err(), "an unclosed body is refused");
        assert_eq!(boundary("multipart/mixed; boundary=\"abc\"").as_deref(), Some("abc"));
        assert_eq!(boundary("application/json"), None);
    }

    #[test]
    fn inner_requests_parse() {
        let r = parse_inner_request("POST $1/VoucherPostingArray HTTP/1.1\r\nIf-Match: $1\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!(
            (r.method.as_str(), r.target.as_str(), r.body.as_str()),
            ("POST", "$1/VoucherPostingArray", "{\"a\":1}")
        );
        assert_eq!(header_in(&r.headers, "If-Match"), Some("$1"));
    }
}
