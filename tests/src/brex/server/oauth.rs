//! The OAuth token endpoint (`grant_type=refresh_token` only, client authentication by POST body or Basic
//! header). Refresh tokens rotate strictly: each use invalidates the one presented, with no grace period.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;

use super::BrexSimHandle;
use super::router::Sim;

/// Path of the simulated OAuth token endpoint (same shape as `accounts-api.brex.com/oauth2/default/v1/token`).
pub const TOKEN_PATH: &str = "/oauth2/default/v1/token";

fn random_token(rng: &mut StdRng, prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let s: String = (0..40).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
    format!("{prefix}{s}")
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description}))).into_response()
}

pub(super) async fn token(State(inner): Sim, headers: HeaderMap, body: Bytes) -> Response {
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
// Test-side access

impl BrexSimHandle {
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
}
