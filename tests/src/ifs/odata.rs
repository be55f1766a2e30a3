//! OData plumbing: the error envelope, key predicates, query options and server-driven paging.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::filter::{self, Expr, FilterError, Kind};

/// An error answered with the OData envelope `{"error":{"code","message"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), retry_after: None }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ODP_RESOURCE_NOTFOUND",
            format!("The requested resource does not exist: {what}"),
        )
    }

    pub fn bad_url(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ODP_INVALID_URL", message)
    }

    pub fn deserialization(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ODP_DESERIALIZATION_ERROR", message)
    }

    /// A business rule refused the request (IFS's `Error_SYS`), answered 400 `DATABASE_ERROR`.
    pub fn business(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "DATABASE_ERROR", message)
    }
}

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> Self {
        match e {
            FilterError::Unsupported(_) => Self::new(StatusCode::NOT_IMPLEMENTED, "ODP_NOT_IMPLEMENTED", e.to_string()),
            FilterError::Syntax(_) | FilterError::Type(_) => Self::bad_url(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Decodes `%XX` escapes in a path (the key predicate may carry `%27` quotes or `%20` spaces).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A key value in a predicate.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    Str(String),
    Num(i64),
}

/// Splits `Name(K1='v',K2=2)` into the name and its keys; a segment without parentheses has no keys.
pub fn parse_segment(seg: &str) -> Result<(String, Option<BTreeMap<String, KeyValue>>), ApiError> {
    let Some(open) = seg.find('(') else {
        return Ok((seg.to_string(), None));
    };
    let name = seg[..open].to_string();
    let inner = seg[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| ApiError::bad_url(format!("Malformed key predicate in '{seg}'")))?;
    let chars: Vec<char> = inner.chars().collect();
    let mut keys = BTreeMap::new();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        while i < chars.len() && chars[i] != '=' {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect::<String>().trim().to_string();
        if i >= chars.len() || key.is_empty() {
            return Err(ApiError::bad_url(format!("Malformed key predicate in '{seg}'")));
        }
        i += 1;
        let value = if chars.get(i) == Some(&'\'') {
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(ApiError::bad_url(format!("Unterminated key value in '{seg}'"))),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        s.push(*c);
                        i += 1;
                    }
                }
            }
            KeyValue::Str(s)
        } else {
            let start = i;
            while i < chars.len() && chars[i] != ',' {
                i += 1;
            }
            let raw: String = chars[start..i].iter().collect();
            KeyValue::Num(
                raw.trim().parse().map_err(|_| ApiError::bad_url(format!("Invalid key value '{raw}' for {key}")))?,
            )
        };
        keys.insert(key, value);
        match chars.get(i) {
            None => break,
            Some(',') => i += 1,
            Some(_) => return Err(ApiError::bad_url(format!("Malformed key predicate in '{seg}'"))),
        }
    }
    Ok((name, Some(keys)))
}

/// Takes the expected keys out of a predicate, in order; missing or extra keys are a bad URL.
pub fn expect_keys(keys: &BTreeMap<String, KeyValue>, expected: &[(&str, bool)]) -> Result<Vec<KeyValue>, ApiError> {
    if keys.len() != expected.len() {
        return Err(ApiError::bad_url(format!(
            "Expected keys {}",
            expected.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        )));
    }
    expected
        .iter()
        .map(|(name, numeric)| match keys.get(*name) {
            Some(KeyValue::Num(n)) if *numeric => Ok(KeyValue::Num(*n)),
            Some(KeyValue::Str(s)) if !*numeric => Ok(KeyValue::Str(s.clone())),
            Some(_) => Err(ApiError::bad_url(format!("Key {name} has the wrong type"))),
            None => Err(ApiError::bad_url(format!("Missing key {name}"))),
        })
        .collect()
}

impl KeyValue {
    pub fn text(&self) -> String {
        match self {
            Self::Str(s) => s.clone(),
            Self::Num(n) => n.to_string(),
        }
    }

    pub fn num(&self) -> i64 {
        match self {
            Self::Num(n) => *n,
            Self::Str(s) => s.parse().unwrap_or_default(),
        }
    }
}

/// An entity set's shape: properties with kinds, and the key properties (the default sort order).
#[derive(Debug, Clone)]
pub struct Schema {
    pub entity_set: String,
    pub fields: Vec<(String, Kind)>,
    pub keys: Vec<String>,
}

impl Schema {
    pub fn new(entity_set: &str, fields: &[(&str, Kind)], keys: &[&str]) -> Self {
        Self {
            entity_set: entity_set.into(),
            fields: fields.iter().map(|(n, k)| ((*n).to_string(), *k)).collect(),
            keys: keys.iter().map(|k| (*k).to_string()).collect(),
        }
    }

    fn kind(&self, field: &str) -> Option<Kind> {
        self.fields.iter().find(|(n, _)| n == field).map(|(_, k)| *k)
    }
}

/// Parsed system query options.
#[derive(Debug, Default)]
pub struct QueryOptions {
    pub filter: Option<Expr>,
    pub top: Option<usize>,
    pub skip: usize,
    pub orderby: Vec<(String, bool)>,
    pub select: Option<Vec<String>>,
    pub count: bool,
    /// All query pairs as received, to rebuild `@odata.nextLink`.
    pub raw: Vec<(String, String)>,
}

/// Parses the query string. `$expand` and `$apply` answer 501 (collection `$expand` is unsupported in IFS
/// and the connector must not rely on it); other unknown `$` options are a 400.
pub fn parse_query(query: Option<&str>, schema: &Schema) -> Result<QueryOptions, ApiError> {
    let mut opts = QueryOptions::default();
    let Some(q) = query else { return Ok(opts) };
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        match k.as_str() {
            "$filter" => {
                let expr = filter::parse(&v)?;
                filter::check(&expr, &schema.fields)?;
                opts.filter = Some(expr);
            }
            "$top" => opts.top = Some(v.trim().parse().map_err(|_| ApiError::bad_url(format!("Invalid $top '{v}'")))?),
            "$skip" => opts.skip = v.trim().parse().map_err(|_| ApiError::bad_url(format!("Invalid $skip '{v}'")))?,
            "$orderby" => {
                for part in v.split(',') {
                    let mut words = part.split_whitespace();
                    let field = words.next().ok_or_else(|| ApiError::bad_url("Empty $orderby item"))?;
                    let desc = match words.next() {
                        None | Some("asc") => false,
                        Some("desc") => true,
                        Some(o) => return Err(ApiError::bad_url(format!("Invalid $orderby direction '{o}'"))),
                    };
                    if schema.kind(field).is_none() {
                        return Err(ApiError::bad_url(format!("Property '{field}' does not exist in $orderby")));
                    }
                    opts.orderby.push((field.to_string(), desc));
                }
            }
            "$select" => {
                let fields: Vec<String> =
                    v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                if let Some(bad) = fields.iter().find(|f| schema.kind(f).is_none()) {
                    return Err(ApiError::bad_url(format!("Property '{bad}' does not exist in $select")));
                }
                opts.select = Some(fields);
            }
            "$count" => opts.count = v == "true",
            "$expand" | "$apply" | "$search" => {
                return Err(ApiError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "ODP_NOT_IMPLEMENTED",
                    format!("{k} is not supported by the simulator"),
                ));
            }
            "$format" | "$skiptoken" => {}
            other if other.starts_with('$') => {
                return Err(ApiError::bad_url(format!("Unknown system query option {other}")));
            }
            _ => {}
        }
        opts.raw.push((k, v));
    }
    Ok(opts)
}

fn compare(a: Option<&Value>, b: Option<&Value>, kind: Kind) -> Ordering {
    let a = a.filter(|v| !v.is_null());
    let b = b.filter(|v| !v.is_null());
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => match kind {
            Kind::Int | Kind::Decimal => filter::value_decimal(x).cmp(&filter::value_decimal(y)),
            Kind::Text | Kind::Date => x.as_str().cmp(&y.as_str()),
        },
    }
}

/// Paging limits.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub default_page_size: usize,
    pub max_page_size: usize,
}

/// Output settings for a response.
#[derive(Debug, Clone, Copy)]
pub struct Render {
    /// `IEEE754Compatible=true` in Accept: decimals stay JSON strings.
    pub ieee754: bool,
}

/// Turns internal rows (decimals held as strings) into wire rows.
pub fn render_row(mut row: Map<String, Value>, schema: &Schema, render: Render) -> Map<String, Value> {
    if !render.ieee754 {
        for (name, kind) in &schema.fields {
            if *kind == Kind::Decimal
                && let Some(Value::String(s)) = row.get(name)
                && let Ok(n) = s.parse::<serde_json::Number>()
            {
                row.insert(name.clone(), Value::Number(n));
            }
        }
    }
    row
}

/// Filters, sorts, pages and projects `rows` into an OData collection response.
///
/// Paging: a page holds `min($top, max_page_size)` rows (or `default_page_size` without `$top`), starting at
/// `$skip`. Whenever more matching rows remain after the page, `@odata.nextLink` is the absolute request URL
/// with `$skip` advanced; `$top` is kept, i.e. the simulator treats `$top` as the client's page size (as the
/// connector uses it) rather than as a total cap. Without `$orderby` rows come in key order, so paging is
/// stable.
pub fn list(
    mut rows: Vec<Map<String, Value>>,
    schema: &Schema,
    opts: &QueryOptions,
    request_url: &url::Url,
    paging: Paging,
    render: Render,
) -> Value {
    if let Some(f) = &opts.filter {
        rows.retain(|r| filter::matches(f, r));
    }
    let order: Vec<(String, bool)> = if opts.orderby.is_empty() {
        schema.keys.iter().map(|k| (k.clone(), false)).collect()
    } else {
        opts.orderby.clone()
    };
    rows.sort_by(|a, b| {
        for (field, desc) in &order {
            let kind = schema.kind(field).unwrap_or(Kind::Text);
            let o = compare(a.get(field), b.get(field), kind);
            if o != Ordering::Equal {
                return if *desc { o.reverse() } else { o };
            }
        }
        Ordering::Equal
    });
    let total = rows.len();
    let page_size = opts.top.unwrap_or(paging.default_page_size).min(paging.max_page_size);
    let page: Vec<Value> = rows
        .into_iter()
        .skip(opts.skip)
        .take(page_size)
        .map(|row| {
            let row = match &opts.select {
                Some(sel) => row
                    .into_iter()
                    .filter(|(k, _)| k.starts_with('@') || sel.contains(k) || schema.keys.contains(k))
                    .collect(),
                None => row,
            };
            Value::Object(render_row(row, schema, render))
        })
        .collect();
    let next_skip = opts.skip + page.len();
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        Value::String(format!("{}$metadata#{}", service_root(request_url), schema.entity_set)),
    );
    if opts.count {
        out.insert("@odata.count".into(), json!(total));
    }
    out.insert("value".into(), Value::Array(page));
    if next_skip < total && page_size > 0 {
        let mut next = request_url.clone();
        {
            let mut pairs = next.query_pairs_mut();
            pairs.clear();
            for (k, v) in opts.raw.iter().filter(|(k, _)| k != "$skip") {
                pairs.append_pair(k, v);
            }
            pairs.append_pair("$skip", &next_skip.to_string());
        }
        out.insert("@odata.nextLink".into(), Value::String(next.to_string()));
    }
    Value::Object(out)
}

/// `…/Projection.svc/` of a request URL (for `@odata.context`).
pub fn service_root(url: &url::Url) -> String {
    let s = url.as_str();
    match s.find(".svc/") {
        Some(i) => s[..i + 5].to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_predicates_parse() {
        let (name, keys) =
            parse_segment("VoucherSet(Company='10',AccountingYear=2026,VoucherType='M',VoucherNo=1)").unwrap();
        assert_eq!(name, "VoucherSet");
        let keys = keys.unwrap();
        assert_eq!(keys["Company"], KeyValue::Str("10".into()));
        assert_eq!(keys["VoucherNo"], KeyValue::Num(1));
        let (_, keys) = parse_segment("X(Objkey='a''b,c')").unwrap();
        assert_eq!(keys.unwrap()["Objkey"], KeyValue::Str("a'b,c".into()));
        assert_eq!(parse_segment("AccountSet").unwrap(), ("AccountSet".into(), None));
        assert!(parse_segment("X(Company='10'").is_err());
        assert!(parse_segment("X(Year=abc)").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("X(Company=%2710%27)"), "X(Company='10')");
        assert_eq!(percent_decode("a%20b%"), "a b%");
        assert_eq!(percent_decode("100%25"), "100%");
    }

    #[test]
    fn paging_and_next_link() {
        let schema = Schema::new("S", &[("Id", Kind::Int), ("Name", Kind::Text)], &["Id"]);
        let rows: Vec<Map<String, Value>> =
            (0..7).rev().map(|i| json!({"Id": i, "Name": format!("n{i}")}).as_object().unwrap().clone()).collect();
        let url = url::Url::parse("http://h/int/x/P.svc/S?$top=3").unwrap();
        let opts = parse_query(url.query(), &schema).unwrap();
        let paging = Paging { default_page_size: 2, max_page_size: 5 };
        let out = list(rows.clone(), &schema, &opts, &url, paging, Render { ieee754: false });
        let ids: Vec<i64> = out["value"].as_array().unwrap().iter().map(|r| r["Id"].as_i64().unwrap()).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        let next = url::Url::parse(out["@odata.nextLink"].as_str().unwrap()).unwrap();
        let opts2 = parse_query(next.query(), &schema).unwrap();
        assert_eq!((opts2.top, opts2.skip), (Some(3), 3));
        let url3 = url::Url::parse("http://h/int/x/P.svc/S?$skip=6&$orderby=Id desc").unwrap();
        let out =
            list(rows, &schema, &parse_query(url3.query(), &schema).unwrap(), &url3, paging, Render { ieee754: false });
        assert_eq!(out["value"][0]["Id"], 0);
        assert!(out.get("@odata.nextLink").is_none());
        assert_eq!(out["@odata.context"], "http://h/int/x/P.svc/$metadata#S");
    }

    #[test]
    fn query_option_errors() {
        let schema = Schema::new("S", &[("Id", Kind::Int)], &["Id"]);
        assert_eq!(parse_query(Some("$expand=X"), &schema).unwrap_err().status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(parse_query(Some("$filter=Id%20ne%201"), &schema).unwrap_err().status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(parse_query(Some("$orderby=Nope"), &schema).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(parse_query(Some("$top=x"), &schema).unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
