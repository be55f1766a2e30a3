//! Document management, as much of it as attaching files to vouchers needs: the
//! `DocReferenceObjectAttachmentHandling` projection's `EdmFileSet`.
//!
//! - `POST EdmFileSet` with `LuName`, `KeyRef`, `DocClass`, `Title`, `FileName`: creates a document revision
//!   connected to the object and its (empty) ORIGINAL file; answers 201 with the entity and its ETag. The
//!   object must exist: `LuName` `Voucher` (or `VoucherRow`) with the key ref IFS writes, its keys in
//!   alphabetical order (`ACCOUNTING_YEAR=2026^COMPANY=10^VOUCHER_NO=1^VOUCHER_TYPE=M^`), naming a committed
//!   voucher.
//! - `GET EdmFileSet(DocClass=…,DocNo=…,DocSheet=…,DocRev=…,DocType=…)`: the entity and its current ETag.
//! - `PUT` (or `PATCH`) `EdmFileSet(…)/FileData`: the file's bytes as the stream, `If-Match` required (428
//!   without it, 412 on a stale one). The stored file is kept as name, SHA-256 and size.
//!
//! `IfsFaults::attachment_fail_next` makes the next N requests to these routes fail with
//! `attachment_fault_status` before doing anything.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::model::etag;
use super::odata::{ApiError, KeyValue, expect_keys};
use super::server::{Outcome, Req};
use super::state::State;

/// The entity set's name (and the request label prefix).
pub const SET: &str = "EdmFileSet";
pub const PROJECTION: &str = "DocReferenceObjectAttachmentHandling";

/// A file stored in a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
}

/// A document revision connected to an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub doc_class: String,
    pub doc_no: String,
    pub doc_sheet: String,
    pub doc_rev: String,
    pub doc_type: String,
    pub lu_name: String,
    pub key_ref: String,
    pub title: String,
    pub file_name: String,
    pub objid: String,
    pub objversion: String,
    /// `None` until its data is uploaded.
    pub file: Option<StoredFile>,
}

impl Document {
    pub fn etag(&self) -> String {
        etag(&self.objid, &self.objversion)
    }

    fn row(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("@odata.etag".into(), json!(self.etag()));
        m.insert("DocClass".into(), json!(self.doc_class));
        m.insert("DocNo".into(), json!(self.doc_no));
        m.insert("DocSheet".into(), json!(self.doc_sheet));
        m.insert("DocRev".into(), json!(self.doc_rev));
        m.insert("DocType".into(), json!(self.doc_type));
        m.insert("LuName".into(), json!(self.lu_name));
        m.insert("KeyRef".into(), json!(self.key_ref));
        m.insert("Title".into(), json!(self.title));
        m.insert("FileName".into(), json!(self.file_name));
        m
    }
}

/// What a request to the attachment projection is.
#[derive(Debug)]
pub enum DocCall {
    Create,
    Get(BTreeMap<String, KeyValue>),
    FileData(BTreeMap<String, KeyValue>),
}

/// Routes `DocReferenceObjectAttachmentHandling.svc/…`: the label and the call, `None` when unknown.
pub fn route(
    method: &Method,
    segs: &[(String, Option<BTreeMap<String, KeyValue>>)],
) -> Option<(String, Result<DocCall, ApiError>)> {
    let m = method.as_str();
    let not_allowed = || {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "ODP_METHOD_NOT_ALLOWED",
            format!("Method {method} is not allowed on this resource"),
        ))
    };
    match segs {
        [(name, None)] if name == SET => {
            Some((format!("{SET}.{m}"), if *method == Method::POST { Ok(DocCall::Create) } else { not_allowed() }))
        }
        [(name, Some(keys))] if name == SET => Some((
            format!("{SET}.{}", if *method == Method::GET { "GET" } else { m }),
            if *method == Method::GET { Ok(DocCall::Get(keys.clone())) } else { not_allowed() },
        )),
        [(name, Some(keys)), (data, None)] if name == SET && data == "FileData" => Some((
            format!("{SET}.FileData.{m}"),
            if matches!(*method, Method::PUT | Method::PATCH) {
                Ok(DocCall::FileData(keys.clone()))
            } else {
                not_allowed()
            },
        )),
        _ => None,
    }
}

/// Parses a key ref into its keys, requiring the alphabetical order IFS writes it in and the closing `^`.
pub fn parse_key_ref(key_ref: &str) -> Option<BTreeMap<String, String>> {
    let body = key_ref.strip_suffix('^')?;
    let mut keys = BTreeMap::new();
    let mut last = String::new();
    for part in body.split('^') {
        let (k, v) = part.split_once('=')?;
        if k.is_empty() || v.is_empty() || k <= last.as_str() {
            return None;
        }
        last = k.to_owned();
        keys.insert(k.to_owned(), v.to_owned());
    }
    Some(keys)
}

fn find(st: &State, keys: &BTreeMap<String, KeyValue>) -> Result<usize, ApiError> {
    let k = expect_keys(
        keys,
        &[("DocClass", false), ("DocNo", false), ("DocSheet", false), ("DocRev", false), ("DocType", false)],
    )?;
    let texts: Vec<String> = k.iter().map(KeyValue::text).collect();
    st.documents
        .iter()
        .position(|d| {
            [&d.doc_class, &d.doc_no, &d.doc_sheet, &d.doc_rev, &d.doc_type].iter().zip(&texts).all(|(a, b)| *a == b)
        })
        .ok_or_else(|| ApiError::not_found(&format!("{SET}({})", texts.join(","))))
}

pub(super) fn execute(st: &mut State, call: DocCall, req: &Req<'_>) -> Result<Outcome, ApiError> {
    if st.faults.attachment_fail_next > 0 {
        st.faults.attachment_fail_next -= 1;
        let status = StatusCode::from_u16(st.faults.attachment_fault_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        st.counters.add_fault("attachment");
        return Err(ApiError::new(status, "SERVICE_UNAVAILABLE", "Injected fault on document management"));
    }
    match call {
        DocCall::Create => create(st, req),
        DocCall::Get(keys) => {
            let d = &st.documents[find(st, &keys)?];
            Ok(entity(StatusCode::OK, d))
        }
        DocCall::FileData(keys) => file_data(st, &keys, req),
    }
}

fn entity(status: StatusCode, d: &Document) -> Outcome {
    let mut resp = (status, axum::Json(Value::Object(d.row()))).into_response();
    if let Ok(tag) = header::HeaderValue::from_str(&d.etag()) {
        resp.headers_mut().insert(header::ETAG, tag);
    }
    resp.into()
}

fn create(st: &mut State, req: &Req<'_>) -> Result<Outcome, ApiError> {
    let body = super::server::json_body(req)?;
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned).filter(|s| !s.is_empty());
    let required = |name: &str| text(name).ok_or_else(|| ApiError::business(format!("{name} is mandatory")));
    let lu_name = required("LuName")?;
    let key_ref = required("KeyRef")?;
    let doc_class = required("DocClass")?;
    let file_name = required("FileName")?;
    if !matches!(lu_name.as_str(), "Voucher" | "VoucherRow") {
        return Err(ApiError::business(format!("Documents cannot be connected to {lu_name} objects")));
    }
    let keys = parse_key_ref(&key_ref).ok_or_else(|| ApiError::business(format!("Invalid key reference {key_ref}")))?;
    let exists = st.vouchers.iter().any(|v| {
        keys.get("COMPANY") == Some(&v.company)
            && keys.get("ACCOUNTING_YEAR") == Some(&v.accounting_year.to_string())
            && keys.get("VOUCHER_TYPE") == Some(&v.voucher_type)
            && keys.get("VOUCHER_NO") == Some(&v.voucher_no.to_string())
    });
    if !exists || keys.len() != 4 + usize::from(lu_name == "VoucherRow") {
        return Err(ApiError::business(format!("The {lu_name} object {key_ref} does not exist")));
    }
    let seq = st.next_seq();
    let objid = st.new_id("DOC");
    let objversion = st.new_objversion();
    let doc = Document {
        doc_class,
        doc_no: format!("{}", 1_000_000 + seq),
        doc_sheet: "1".into(),
        doc_rev: "A1".into(),
        doc_type: "ORIGINAL".into(),
        lu_name,
        key_ref,
        title: text("Title").unwrap_or_default(),
        file_name,
        objid,
        objversion,
        file: None,
    };
    let out = entity(StatusCode::CREATED, &doc);
    st.documents.push(doc);
    Ok(out)
}

fn file_data(st: &mut State, keys: &BTreeMap<String, KeyValue>, req: &Req<'_>) -> Result<Outcome, ApiError> {
    let at = find(st, keys)?;
    let if_match = req.headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_owned());
    if if_match.is_some() {
        st.counters.mutations_with_if_match += 1;
    } else {
        st.counters.mutations_without_if_match += 1;
    }
    let current = st.documents[at].etag();
    super::server::check_if_match(if_match.as_deref(), &current)?;
    if req.body.is_empty() {
        return Err(ApiError::deserialization("The file data stream is empty"));
    }
    let content_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let file =
        StoredFile { sha256: format!("{:x}", Sha256::digest(req.body)), size: req.body.len() as u64, content_type };
    let objversion = st.new_objversion();
    let doc = &mut st.documents[at];
    doc.file = Some(file);
    doc.objversion = objversion;
    st.counters.attachments_stored += 1;
    Ok(StatusCode::NO_CONTENT.into_response().into())
}

/// One file attached to a voucher, as a test reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimAttachment {
    pub file_name: String,
    pub sha256: String,
    pub size: u64,
    pub lu_name: String,
}

/// The key ref of a voucher, as IFS writes it.
pub fn voucher_key_ref(company: &str, year: i32, voucher_type: &str, voucher_no: i64) -> String {
    format!("ACCOUNTING_YEAR={year}^COMPANY={company}^VOUCHER_NO={voucher_no}^VOUCHER_TYPE={voucher_type}^")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_refs_are_read_in_ifs_order_only() {
        let keys = parse_key_ref("ACCOUNTING_YEAR=2026^COMPANY=10^VOUCHER_NO=1^VOUCHER_TYPE=M^").unwrap();
        assert_eq!(keys["COMPANY"], "10");
        assert!(parse_key_ref("COMPANY=10^VOUCHER_TYPE=M^ACCOUNTING_YEAR=2026^VOUCHER_NO=1^").is_none());
        assert!(parse_key_ref("ACCOUNTING_YEAR=2026^COMPANY=10").is_none());
        assert_eq!(voucher_key_ref("10", 2026, "M", 1), "ACCOUNTING_YEAR=2026^COMPANY=10^VOUCHER_NO=1^VOUCHER_TYPE=M^");
    }
}
