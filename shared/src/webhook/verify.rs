//! Standard Webhooks / Svix signature verification (docs/contract.md §4): HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{raw body}`, keyed by the base64 part of a `whsec_` secret.
//!
//! Signed content is `{id}.{timestamp}.{raw body}`, HMAC-SHA256 keyed with the base64-decoded secret (a
//! `whsec_` prefix is stripped). The signature header holds space-separated `v1,<base64>` entries; any entry
//! matching any secret wins. The timestamp must be within ±300 s of now.
//!
//! Header families: a request uses either `webhook-*` or `svix-*`. If any `webhook-*` header is present the
//! unbranded family is used for all three, otherwise the `svix-*` family. A request mixing the two (say
//! `webhook-id` with `svix-signature`) therefore fails with `MissingHeader`: a sender signs with one family,
//! so a mix is not something a genuine sender produces.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::{Secret, WebhookId};

type HmacSha256 = Hmac<Sha256>;

/// Standard Webhooks' default tolerance.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

const SIG_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is not a valid value")]
    InvalidHeader(&'static str),
    #[error("webhook timestamp is not an integer number of seconds")]
    InvalidTimestamp,
    #[error("webhook timestamp is too old")]
    TimestampTooOld,
    #[error("webhook timestamp is in the future")]
    TimestampTooNew,
    #[error("signature header carries no usable v1 signature")]
    MalformedSignatureHeader,
    #[error("no signature matches any signing secret")]
    NoMatchingSignature,
    #[error("a webhook signing secret is not valid base64 or is empty")]
    InvalidSecret,
    #[error("no webhook signing secrets")]
    NoSecrets,
}

/// One signing secret with its HMAC key schedule done once; cloning the keyed MAC is cheaper than re-keying.
#[derive(Clone)]
struct Key {
    mac: HmacSha256,
}

impl Key {
    fn new(secret: &Secret) -> Result<Self, VerifyError> {
        let raw = secret.expose().trim();
        let b64 = raw.strip_prefix("whsec_").unwrap_or(raw);
        let bytes = B64.decode(b64).map_err(|_| VerifyError::InvalidSecret)?;
        if bytes.is_empty() {
            return Err(VerifyError::InvalidSecret);
        }
        let mac = HmacSha256::new_from_slice(&bytes).map_err(|_| VerifyError::InvalidSecret)?;
        Ok(Self { mac })
    }

    fn tag(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; SIG_LEN] {
        // Fed piecewise so the signed content is never copied into a new buffer.
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

/// The headers of a request, checked for presence, shape and freshness but not yet for the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders<'a> {
    pub id: WebhookId,
    pub timestamp: i64,
    raw_timestamp: &'a str,
    signature: &'a str,
}

struct Family {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const WEBHOOK: Family = Family { id: "webhook-id", timestamp: "webhook-timestamp", signature: "webhook-signature" };
const SVIX: Family = Family { id: "svix-id", timestamp: "svix-timestamp", signature: "svix-signature" };

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    let value = headers.get(name).ok_or(VerifyError::MissingHeader(name))?;
    value.to_str().map(str::trim).map_err(|_| VerifyError::InvalidHeader(name))
}

impl<'a> SignedHeaders<'a> {
    /// Reads one header family and checks the timestamp against `now` ± `tolerance_secs`.
    pub fn parse(headers: &'a HeaderMap, now: DateTime<Utc>, tolerance_secs: i64) -> Result<Self, VerifyError> {
        let unbranded = [WEBHOOK.id, WEBHOOK.timestamp, WEBHOOK.signature].iter().any(|h| headers.contains_key(*h));
        let family = if unbranded || ![SVIX.id, SVIX.timestamp, SVIX.signature].iter().any(|h| headers.contains_key(*h))
        {
            &WEBHOOK
        } else {
            &SVIX
        };
        let id = header(headers, family.id)?;
        let raw_timestamp = header(headers, family.timestamp)?;
        let signature = header(headers, family.signature)?;
        let id = WebhookId::parse(id).map_err(|_| VerifyError::InvalidHeader(family.id))?;

        // Digits only: no sign, no fraction, no exponent; 18 digits keep the i64 math below overflow-free.
        if raw_timestamp.is_empty() || raw_timestamp.len() > 18 || !raw_timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VerifyError::InvalidTimestamp);
        }
        let timestamp: i64 = raw_timestamp.parse().map_err(|_| VerifyError::InvalidTimestamp)?;
        let now_secs = now.timestamp();
        if now_secs - timestamp > tolerance_secs {
            return Err(VerifyError::TimestampTooOld);
        }
        if timestamp - now_secs > tolerance_secs {
            return Err(VerifyError::TimestampTooNew);
        }
        Ok(Self { id, timestamp, raw_timestamp, signature })
    }
}

/// What a successful verification vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHeaders {
    pub id: WebhookId,
    pub timestamp: i64,
}

/// Verifies webhook signatures against every currently valid signing secret.
#[derive(Clone)]
pub struct WebhookVerifier {
    keys: Vec<Key>,
    tolerance_secs: i64,
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl WebhookVerifier {
    /// Every secret must be valid; an empty list is an error.
    pub fn new(secrets: &[Secret]) -> Result<Self, VerifyError> {
        if secrets.is_empty() {
            return Err(VerifyError::NoSecrets);
        }
        let keys = secrets.iter().map(Key::new).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys, tolerance_secs: DEFAULT_TOLERANCE_SECS })
    }

    /// Keeps the valid secrets and reports how many were skipped, so one odd secret from Brex cannot stop
    /// verification with the others. Errors only when none is usable.
    pub fn new_skipping_invalid(secrets: &[Secret]) -> Result<(Self, usize), VerifyError> {
        let keys: Vec<Key> = secrets.iter().filter_map(|s| Key::new(s).ok()).collect();
        let skipped = secrets.len() - keys.len();
        if keys.is_empty() {
            return Err(if secrets.is_empty() { VerifyError::NoSecrets } else { VerifyError::InvalidSecret });
        }
        Ok((Self { keys, tolerance_secs: DEFAULT_TOLERANCE_SECS }, skipped))
    }

    pub fn with_tolerance_secs(mut self, tolerance_secs: i64) -> Self {
        self.tolerance_secs = tolerance_secs;
        self
    }

    pub fn tolerance_secs(&self) -> i64 {
        self.tolerance_secs
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<VerifiedHeaders, VerifyError> {
        let parsed = SignedHeaders::parse(headers, now, self.tolerance_secs)?;
        self.verify_parsed(&parsed, body)?;
        Ok(VerifiedHeaders { id: parsed.id, timestamp: parsed.timestamp })
    }

    /// The signature check alone, for headers already parsed (and found fresh) by [`SignedHeaders::parse`].
    pub fn verify_parsed(&self, headers: &SignedHeaders<'_>, body: &[u8]) -> Result<(), VerifyError> {
        let mut candidates: Vec<[u8; SIG_LEN]> = Vec::new();
        for entry in headers.signature.split(' ') {
            let Some(("v1", sig)) = entry.split_once(',') else { continue };
            // 32 bytes are 44 base64 chars; anything else cannot match and is not worth decoding.
            if sig.len() != 44 {
                continue;
            }
            let mut buf = [0u8; 33];
            if let Ok(SIG_LEN) = B64.decode_slice(sig, &mut buf) {
                let mut sig = [0u8; SIG_LEN];
                sig.copy_from_slice(&buf[..SIG_LEN]);
                candidates.push(sig);
            }
        }
        if candidates.is_empty() {
            return Err(VerifyError::MalformedSignatureHeader);
        }
        let id = headers.id.as_str();
        let mut matched = subtle::Choice::from(0);
        for key in &self.keys {
            let expected = key.tag(id, headers.raw_timestamp, body);
            for candidate in &candidates {
                // Both sides are 32 bytes, so the length check is implicit; `ct_eq` keeps timing flat.
                matched |= expected.ct_eq(candidate);
            }
        }
        if bool::from(matched) { Ok(()) } else { Err(VerifyError::NoMatchingSignature) }
    }
}

/// Produces a `v1,<base64>` signature entry, as a sender would (tests, the simulator, tooling).
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, VerifyError> {
    let key = Key::new(secret)?;
    Ok(format!("v1,{}", B64.encode(key.tag(msg_id, &timestamp.to_string(), body))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(ts: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(ts, 0).unwrap()
    }

    fn headers(prefix: &str, id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::HeaderName::try_from(format!("{prefix}-id")).unwrap(), HeaderValue::from_str(id).unwrap());
        h.insert(
            http::HeaderName::try_from(format!("{prefix}-timestamp")).unwrap(),
            HeaderValue::from_str(ts).unwrap(),
        );
        h.insert(
            http::HeaderName::try_from(format!("{prefix}-signature")).unwrap(),
            HeaderValue::from_str(sig).unwrap(),
        );
        h
    }

    fn vector_verifier() -> WebhookVerifier {
        WebhookVerifier::new(&[Secret::new(VECTOR_SECRET)]).unwrap()
    }

    fn vector_headers(sig: &str) -> HeaderMap {
        headers("webhook", VECTOR_ID, &VECTOR_TS.to_string(), sig)
    }

    fn secret(n: u8) -> Secret {
        Secret::new(format!("whsec_{}", B64.encode([n; 24])))
    }

    #[test]
    fn standard_webhooks_vector_signs_and_verifies() {
        assert_eq!(sign(&Secret::new(VECTOR_SECRET), VECTOR_ID, VECTOR_TS, VECTOR_BODY).unwrap(), VECTOR_SIG);
        let ok = vector_verifier().verify(&vector_headers(VECTOR_SIG), VECTOR_BODY, at(VECTOR_TS)).unwrap();
        assert_eq!(ok, VerifiedHeaders { id: WebhookId::parse(VECTOR_ID).unwrap(), timestamp: VECTOR_TS });
    }

    #[test]
    fn secret_without_prefix_is_the_same_key() {
        let bare = Secret::new(VECTOR_SECRET.trim_start_matches("whsec_"));
        assert_eq!(sign(&bare, VECTOR_ID, VECTOR_TS, VECTOR_BODY).unwrap(), VECTOR_SIG);
    }

    #[test]
    fn svix_header_family_verifies() {
        let h = headers("svix", VECTOR_ID, &VECTOR_TS.to_string(), VECTOR_SIG);
        assert!(vector_verifier().verify(&h, VECTOR_BODY, at(VECTOR_TS)).is_ok());
    }

    #[test]
    fn mixed_header_families_are_rejected() {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_static(VECTOR_ID));
        h.insert("svix-timestamp", HeaderValue::from_str(&VECTOR_TS.to_string()).unwrap());
        h.insert("svix-signature", HeaderValue::from_static(VECTOR_SIG));
        assert_eq!(
            vector_verifier().verify(&h, VECTOR_BODY, at(VECTOR_TS)),
            Err(VerifyError::MissingHeader("webhook-timestamp"))
        );
    }

    #[test]
    fn each_missing_header_is_named() {
        for prefix in ["webhook", "svix"] {
            for missing in ["id", "timestamp", "signature"] {
                let mut h = headers(prefix, VECTOR_ID, &VECTOR_TS.to_string(), VECTOR_SIG);
                h.remove(format!("{prefix}-{missing}").as_str());
                let err = vector_verifier().verify(&h, VECTOR_BODY, at(VECTOR_TS)).unwrap_err();
                match err {
                    VerifyError::MissingHeader(name) => assert_eq!(name, format!("{prefix}-{missing}")),
                    other => panic!("{prefix}-{missing}: {other:?}"),
                }
            }
        }
        assert_eq!(
            vector_verifier().verify(&HeaderMap::new(), VECTOR_BODY, at(VECTOR_TS)),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
    }

    #[test]
    fn rotation_any_signature_with_any_secret_wins() {
        let (old, new) = (secret(1), secret(2));
        let body = b"{\"event_type\":\"X\"}";
        let sig_old = sign(&old, "msg_1", VECTOR_TS, body).unwrap();
        let sig_new = sign(&new, "msg_1", VECTOR_TS, body).unwrap();
        let both = WebhookVerifier::new(&[old.clone(), new.clone()]).unwrap();
        for sig in [&sig_old, &sig_new, &format!("{sig_old} {sig_new}"), &format!("{sig_new} {sig_old}")] {
            assert!(
                both.verify(&headers("webhook", "msg_1", &VECTOR_TS.to_string(), sig), body, at(VECTOR_TS)).is_ok()
            );
        }
        // Only the new secret known: a header with an invalid and a valid entry still passes.
        let only_new = WebhookVerifier::new(&[new]).unwrap();
        let bogus = sign(&secret(9), "msg_1", VECTOR_TS, body).unwrap();
        let h = headers("webhook", "msg_1", &VECTOR_TS.to_string(), &format!("{bogus} {sig_new}"));
        assert!(only_new.verify(&h, body, at(VECTOR_TS)).is_ok());
        let h = headers("webhook", "msg_1", &VECTOR_TS.to_string(), &format!("{bogus} {sig_old}"));
        assert_eq!(only_new.verify(&h, body, at(VECTOR_TS)), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn truncated_empty_and_foreign_versions_fail() {
        let v = vector_verifier();
        let truncated = &VECTOR_SIG[..VECTOR_SIG.len() - 2];
        for sig in ["v1,", "", "v1,abc", "v1", truncated, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=="] {
            assert_eq!(
                v.verify(&vector_headers(sig), VECTOR_BODY, at(VECTOR_TS)),
                Err(VerifyError::MalformedSignatureHeader),
                "{sig:?}"
            );
        }
        let b64 = &VECTOR_SIG[3..];
        for sig in [format!("v2,{b64}"), format!("v1a,{b64}"), format!("V1,{b64}"), b64.to_owned()] {
            assert_eq!(
                v.verify(&vector_headers(&sig), VECTOR_BODY, at(VECTOR_TS)),
                Err(VerifyError::MalformedSignatureHeader),
                "{sig:?}"
            );
        }
        // A foreign version next to a valid v1 entry is ignored, not fatal.
        assert!(v.verify(&vector_headers(&format!("v2,{b64} {VECTOR_SIG}")), VECTOR_BODY, at(VECTOR_TS)).is_ok());
    }

    #[test]
    fn timestamp_window_is_300_seconds_both_ways() {
        let v = vector_verifier();
        let h = vector_headers(VECTOR_SIG);
        assert!(v.verify(&h, VECTOR_BODY, at(VECTOR_TS + 299)).is_ok());
        assert!(v.verify(&h, VECTOR_BODY, at(VECTOR_TS - 299)).is_ok());
        assert!(v.verify(&h, VECTOR_BODY, at(VECTOR_TS + 300)).is_ok());
        assert_eq!(v.verify(&h, VECTOR_BODY, at(VECTOR_TS + 301)), Err(VerifyError::TimestampTooOld));
        assert_eq!(v.verify(&h, VECTOR_BODY, at(VECTOR_TS - 301)), Err(VerifyError::TimestampTooNew));
    }

    #[test]
    fn non_numeric_timestamps_are_invalid() {
        let v = vector_verifier();
        for ts in ["", "abc", "-1614265330", "+1614265330", "1614265330.5", "1e9", "99999999999999999999"] {
            let h = headers("webhook", VECTOR_ID, ts, VECTOR_SIG);
            assert_eq!(v.verify(&h, VECTOR_BODY, at(VECTOR_TS)), Err(VerifyError::InvalidTimestamp), "{ts:?}");
        }
    }

    #[test]
    fn signature_binds_timestamp_and_id() {
        let v = vector_verifier();
        let h = headers("webhook", VECTOR_ID, &(VECTOR_TS + 1).to_string(), VECTOR_SIG);
        assert_eq!(v.verify(&h, VECTOR_BODY, at(VECTOR_TS)), Err(VerifyError::NoMatchingSignature));
        let h = headers("webhook", "msg_other", &VECTOR_TS.to_string(), VECTOR_SIG);
        assert_eq!(v.verify(&h, VECTOR_BODY, at(VECTOR_TS)), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn tampered_or_reserialised_body_fails() {
        let v = vector_verifier();
        let h = vector_headers(VECTOR_SIG);
        assert_eq!(v.verify(&h, br#"{"test": 2432232315}"#, at(VECTOR_TS)), Err(VerifyError::NoMatchingSignature));
        // Same JSON value, different bytes: the raw body is what is signed.
        let value: serde_json::Value = serde_json::from_slice(VECTOR_BODY).unwrap();
        let reserialised = serde_json::to_vec(&value).unwrap();
        assert_ne!(reserialised, VECTOR_BODY);
        assert_eq!(v.verify(&h, &reserialised, at(VECTOR_TS)), Err(VerifyError::NoMatchingSignature));

        let body = br#"{"b":1,"a":2}"#;
        let sig = sign(&secret(3), "msg_2", VECTOR_TS, body).unwrap();
        let v = WebhookVerifier::new(&[secret(3)]).unwrap();
        let h = headers("webhook", "msg_2", &VECTOR_TS.to_string(), &sig);
        assert!(v.verify(&h, body, at(VECTOR_TS)).is_ok());
        assert_eq!(v.verify(&h, br#"{"a":2,"b":1}"#, at(VECTOR_TS)), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn non_utf8_body_verifies_when_signed() {
        let body = [0xff, 0xfe, 0x00, b'{', 0x80];
        let sig = sign(&secret(4), "msg_3", VECTOR_TS, &body).unwrap();
        let v = WebhookVerifier::new(&[secret(4)]).unwrap();
        assert!(v.verify(&headers("webhook", "msg_3", &VECTOR_TS.to_string(), &sig), &body, at(VECTOR_TS)).is_ok());
    }

    #[test]
    fn invalid_ids_and_secrets_are_rejected() {
        let v = vector_verifier();
        let h = headers("webhook", "msg 1", &VECTOR_TS.to_string(), VECTOR_SIG);
        assert_eq!(v.verify(&h, VECTOR_BODY, at(VECTOR_TS)), Err(VerifyError::InvalidHeader("webhook-id")));
        let mut h = vector_headers(VECTOR_SIG);
        h.insert("webhook-signature", HeaderValue::from_bytes(b"v1,\xff").unwrap());
        assert_eq!(v.verify(&h, VECTOR_BODY, at(VECTOR_TS)), Err(VerifyError::InvalidHeader("webhook-signature")));
        assert_eq!(WebhookVerifier::new(&[]).unwrap_err(), VerifyError::NoSecrets);
        for bad in ["whsec_", "", "whsec_not base64!"] {
            assert_eq!(WebhookVerifier::new(&[Secret::new(bad)]).unwrap_err(), VerifyError::InvalidSecret, "{bad:?}");
        }
        let (lenient, skipped) =
            WebhookVerifier::new_skipping_invalid(&[Secret::new("whsec_"), Secret::new(VECTOR_SECRET)]).unwrap();
        assert_eq!((lenient.key_count(), skipped), (1, 1));
        assert!(lenient.verify(&vector_headers(VECTOR_SIG), VECTOR_BODY, at(VECTOR_TS)).is_ok());
        assert_eq!(WebhookVerifier::new_skipping_invalid(&[Secret::new("")]).unwrap_err(), VerifyError::InvalidSecret);
    }

    #[test]
    fn debug_does_not_show_keys() {
        let shown = format!("{:?}", vector_verifier());
        assert!(shown.contains("redacted") && !shown.contains("MfKQ"), "{shown}");
    }
}
