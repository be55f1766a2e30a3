//! The OData `$batch` wire format (multipart/mixed): writing a change set's operations and reading the
//! answer into one result per change set. The ledger's `$batch` flow and the doctor's probes use it.

use std::fmt::Write as _;

use super::transport::JSON_MEDIA_TYPE;

/// One MIME part: headers (names lower-cased) and content.
#[derive(Debug, Clone, PartialEq)]
struct MimePart {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl MimePart {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An `application/http` answer inside a batch response.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PartResponse {
    /// The `Content-ID` of the request it answers, when the server says.
    pub content_id: Option<String>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What the server answered for one change set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ChangeSetAnswer {
    /// Applied: every operation's answer, in order.
    Applied(Vec<PartResponse>),
    /// Refused and rolled back: the failing operation's answer.
    Failed(PartResponse),
}

/// The `boundary` parameter of a `multipart/mixed` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    if !params.next()?.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Splits a multipart body (CRLF or LF line ends) into parts; the line break before a delimiter belongs to
/// the delimiter (RFC 2046).
fn split_multipart(text: &str, boundary: &str) -> Result<Vec<MimePart>, String> {
    let delimiter = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim_end();
        if trimmed == close || trimmed == delimiter {
            if let Some(lines) = current.take() {
                parts.push(part_from_lines(&lines)?);
            }
            if trimmed == close {
                return Ok(parts);
            }
            current = Some(Vec::new());
        } else if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    Err(format!("the multipart body does not end with --{boundary}--"))
}

fn part_from_lines(lines: &[&str]) -> Result<MimePart, String> {
    let blank = lines.iter().position(|l| l.is_empty()).ok_or("a MIME part has no blank line after its headers")?;
    Ok(MimePart { headers: parse_headers(&lines[..blank])?, body: lines[blank + 1..].join("\r\n") })
}

fn parse_headers(lines: &[&str]) -> Result<Vec<(String, String)>, String> {
    lines
        .iter()
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .ok_or_else(|| format!("malformed header line {l:?}"))
        })
        .collect()
}

fn parse_part_response(part: &MimePart) -> Result<PartResponse, String> {
    let mut lines = part.body.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("malformed status line {status_line:?}"))?;
    let mut header_lines = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        header_lines.push(line);
    }
    let headers = parse_headers(&header_lines)?;
    let content_id = part.header("content-id").map(str::to_owned);
    Ok(PartResponse { content_id, status, headers, body: lines.collect::<Vec<_>>().join("\r\n") })
}

/// Reads a batch response: one answer per top-level part, in order.
pub(crate) fn parse_batch_response(content_type: &str, body: &[u8]) -> Result<Vec<ChangeSetAnswer>, String> {
    let boundary = multipart_boundary(content_type)
        .ok_or_else(|| format!("a $batch answer must be multipart/mixed, got {content_type:?}"))?;
    let text = std::str::from_utf8(body).map_err(|e| format!("the $batch answer is not UTF-8: {e}"))?;
    let mut answers = Vec::new();
    for part in split_multipart(text, &boundary)? {
        match part.header("content-type").and_then(multipart_boundary) {
            Some(inner) => {
                let ops = split_multipart(&part.body, &inner)?;
                answers.push(ChangeSetAnswer::Applied(ops.iter().map(parse_part_response).collect::<Result<_, _>>()?));
            }
            None => answers.push(ChangeSetAnswer::Failed(parse_part_response(&part)?)),
        }
    }
    Ok(answers)
}

/// One operation of a change set; `if_match` names the Content-ID whose ETag it must match (`If-Match: $n`).
pub(crate) fn write_operation(out: &mut String, content_id: usize, target: &str, if_match: Option<usize>, body: &str) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {content_id}\r\n\r\n\
         POST {target} HTTP/1.1\r\n"
    );
    if let Some(id) = if_match {
        let _ = write!(out, "If-Match: ${id}\r\n");
    }
    let _ = write!(out, "Content-Type: {JSON_MEDIA_TYPE}\r\nAccept: {JSON_MEDIA_TYPE}\r\n\r\n{body}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_parse_into_change_sets() {
        let body = "--r1\r\nContent-Type: multipart/mixed;boundary=c1\r\n\r\n--c1\r\nContent-Type: application/http\r\n\
                    Content-ID: 1\r\n\r\nHTTP/1.1 201 Created\r\nETag: W/\"x\"\r\n\r\n{\"Objkey\":\"k\"}\r\n--c1\r\n\
                    Content-Type: application/http\r\nContent-ID: 2\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{\"value\":17}\r\n--c1--\r\n\
                    --r1\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 412 Precondition Failed\r\n\
                    Content-Type: application/json\r\n\r\n{\"error\":{\"code\":\"ODP_PRECONDITION_FAILED\",\"message\":\"m\"}}\r\n--r1--\r\n";
        let answers = parse_batch_response("multipart/mixed; boundary=r1", body.as_bytes()).unwrap();
        assert_eq!(answers.len(), 2);
        let ChangeSetAnswer::Applied(ops) = &answers[0] else { panic!("first change set applied") };
        assert_eq!((ops[0].status, ops[1].status, ops[1].body.as_str()), (201, 200, "{\"value\":17}"));
        let ChangeSetAnswer::Failed(part) = &answers[1] else { panic!("second change set failed") };
        assert_eq!((part.status, part.content_id.as_deref()), (412, None));
        // LF-only line ends read the same.
        assert_eq!(
            parse_batch_response("multipart/mixed;boundary=r1", body.replace("\r\n", "\n").as_bytes()).unwrap(),
            answers
        );
        assert!(parse_batch_response("application/json", b"{}").is_err());
        assert!(
            parse_batch_response("multipart/mixed;boundary=r1", b"--r1\r\n").is_err(),
            "a cut-off answer is refused"
        );
    }
}
