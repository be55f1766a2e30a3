//! What a simulator is started with: [`BrexSimConfig`], the partner [`OAuthClient`] and the [`Faults`] it
//! injects (also settable while it runs).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A partner OAuth client known to the simulator.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: String,
    /// The refresh token valid at start; every use rotates it.
    pub refresh_token: String,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .finish()
    }
}

/// Simulator configuration. Defaults follow the Brex docs; where the docs are silent the choice is noted.
#[derive(Clone)]
pub struct BrexSimConfig {
    /// Accepted user tokens (`Authorization: Bearer …`). Default: `["bxt_sim_user_token"]`.
    pub user_tokens: Vec<String>,
    /// Enables the OAuth token endpoint.
    pub oauth: Option<OAuthClient>,
    /// Lifetime of issued access tokens (Brex: 1 h).
    pub access_token_ttl: Duration,
    /// Fixed-window rate limit over all authenticated API requests (Brex: 1000 per 60 s).
    pub rate_limit_per_window: u32,
    pub rate_window: Duration,
    /// Seeds every random choice (tokens, secrets, faults, generated records).
    pub seed: u64,
    /// Default `127.0.0.1:0`.
    pub bind: Option<SocketAddr>,
    /// Initial webhook secret; default `whsec_` + base64(32 bytes derived from `seed`).
    pub webhook_secret: Option<String>,
    /// Brex returns only recently updated records when a query has neither `ids` nor `updated_at[...]`.
    /// The width is undocumented; default 24 h.
    pub default_updated_window: Duration,
    /// Max `limit` on `/v3/accounting/records` (undocumented; default 1000; larger → 400).
    pub max_records_limit: u32,
    /// Max `limit` on `/v1/expenses` (docs conflict 100/1000; default 100; larger → 400).
    pub max_expenses_limit: u32,
    /// Max `results` per export-results call (undocumented; default 500; larger → 400).
    pub max_export_batch: usize,
    /// How long an `Idempotency-Key` is remembered (undocumented; default 24 h).
    pub idempotency_window: Duration,
    /// Docs: `review_status` is only valid with source_type CARD/REIMBURSEMENT. When true (default) a
    /// `review_status` without such a `source_type` is a 400.
    pub review_status_requires_source_type: bool,
    /// Status for an expired access token: 401 (default) or 403 (Brex's error page says "403 Expired token").
    pub expired_token_status: u16,
    /// `companyId` in webhooks and `GET /v2/company`.
    pub company_id: String,
    /// Faults active from the start.
    pub faults: Faults,
}

impl Default for BrexSimConfig {
    fn default() -> Self {
        BrexSimConfig {
            user_tokens: vec!["bxt_sim_user_token".to_owned()],
            oauth: None,
            access_token_ttl: Duration::from_secs(3600),
            rate_limit_per_window: 1000,
            rate_window: Duration::from_secs(60),
            seed: 0,
            bind: None,
            webhook_secret: None,
            default_updated_window: Duration::from_secs(24 * 3600),
            max_records_limit: 1000,
            max_expenses_limit: 100,
            max_export_batch: 500,
            idempotency_window: Duration::from_secs(24 * 3600),
            review_status_requires_source_type: true,
            expired_token_status: 401,
            company_id: "cuacc_sim000000000000000000001".to_owned(),
            faults: Faults::default(),
        }
    }
}

impl std::fmt::Debug for BrexSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrexSimConfig")
            .field("user_tokens", &format!("<{} redacted>", self.user_tokens.len()))
            .field("oauth", &self.oauth)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("rate_limit_per_window", &self.rate_limit_per_window)
            .field("rate_window", &self.rate_window)
            .field("seed", &self.seed)
            .field("bind", &self.bind)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "<redacted>"))
            .field("default_updated_window", &self.default_updated_window)
            .field("company_id", &self.company_id)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// Injected faults, deterministic from the seed. Settable at runtime
/// ([`BrexSim::set_faults`](super::BrexSimHandle::set_faults), `POST /_sim/faults`). Apply to authenticated
/// API requests (not the token endpoint, not `/_sim`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// The next N authenticated requests get 429.
    pub burst_429: u32,
    /// Probability that a request fails with a status from `error_statuses` before it is handled.
    pub error_rate: f64,
    /// Statuses drawn for injected errors (default 500, 502, 503).
    pub error_statuses: Vec<u16>,
    /// Probability that a request IS handled (state changes) but the client gets a 5xx anyway, like a
    /// gateway timeout after commit. Exercises idempotent retries.
    pub post_commit_error_rate: f64,
    /// Added to every API response.
    pub latency_ms: u64,
    /// Sends `Retry-After` with 429s. Off by default: Brex documents none.
    pub retry_after_secs: Option<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            burst_429: 0,
            error_rate: 0.0,
            error_statuses: vec![500, 502, 503],
            post_commit_error_rate: 0.0,
            latency_ms: 0,
            retry_after_secs: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_secrets() {
        let cfg = BrexSimConfig {
            oauth: Some(OAuthClient {
                client_id: "cid".into(),
                client_secret: "topsecret".into(),
                refresh_token: "rt_secret".into(),
            }),
            webhook_secret: Some("whsec_hidden".into()),
            ..BrexSimConfig::default()
        };
        let s = format!("{cfg:?}");
        for secret in ["topsecret", "rt_secret", "whsec_hidden", "bxt_sim_user_token"] {
            assert!(!s.contains(secret), "{secret} leaked: {s}");
        }
    }
}
