//! Query strings shared by the list routes: parameters, timestamps, keyset cursors and `limit`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

pub(super) fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// RFC 3339, `YYYY-MM-DDTHH:MM:SS[.f]` (taken as UTC) or a bare date (midnight UTC).
pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
}

/// Keyset cursor over (updated_at, id): opaque to clients.
pub(super) fn encode_cursor(t: DateTime<Utc>, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", t.timestamp_micros()))
}

pub(super) fn decode_cursor(c: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    let (micros, id) = raw.split_once('|')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, id.to_owned()))
}

pub(super) fn parse_limit(v: &str, max: u32) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("limit must be an integer between 1 and {max}")),
    }
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
    fn limits_are_bounded() {
        assert_eq!(parse_limit("100", 100), Ok(100));
        assert!(parse_limit("101", 100).is_err());
        assert!(parse_limit("0", 100).is_err());
        assert!(parse_limit("-1", 100).is_err());
    }
}
