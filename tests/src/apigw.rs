//! What API Gateway (HTTP API, payload format 2.0) hands a Lambda for an HTTP request, built the way the real
//! service builds it: lower-case header names, repeated headers joined with commas, UTF-8 bodies as text and
//! anything else base64-encoded with `isBase64Encoded: true`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

pub fn http_v2_event(method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Value {
    let mut header_map: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let joined = match header_map.get(&name).and_then(Value::as_str) {
            Some(previous) => format!("{previous},{value}"),
            None => value.clone(),
        };
        header_map.insert(name, Value::String(joined));
    }
    let (body_value, is_base64) = match std::str::from_utf8(body) {
        Ok(text) => (Value::String(text.to_owned()), false),
        Err(_) => (Value::String(STANDARD.encode(body)), true),
    };
    let now = chrono::Utc::now();
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": header_map,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "localapi",
            "domainName": "localapi.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "localapi",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "Svix-Webhooks/1.0"
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "timeEpoch": now.timestamp_millis()
        },
        "body": body_value,
        "isBase64Encoded": is_base64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_bodies_are_base64_and_headers_joined() {
        let headers = vec![
            ("Webhook-Id".to_string(), "a".to_string()),
            ("X-Dup".into(), "1".into()),
            ("x-dup".into(), "2".into()),
        ];
        let event = http_v2_event("POST", "/webhooks/brex", &headers, &[0xff, 0x00]);
        assert_eq!(event["isBase64Encoded"], true);
        assert_eq!(event["body"], "/wA=");
        assert_eq!(event["headers"]["webhook-id"], "a");
        assert_eq!(event["headers"]["x-dup"], "1,2");
        let text = http_v2_event("POST", "/p", &[], b"{\"a\":1}");
        assert_eq!(text["isBase64Encoded"], false);
        assert_eq!(text["body"], "{\"a\":1}");
    }
}
