//! Brex authentication (docs/contract.md §3): a user token used as is, or OAuth with a rotating refresh token.
//!
//! OAuth access tokens last an hour and every refresh returns a new refresh token that invalidates the old
//! one. Two instances refreshing at once would leave one of them — and the secret — holding a dead token, so
//! a refresh happens only under the `brex-oauth-refresh` lease, and only after re-reading the secret: the
//! previous holder may already have written a fresh access token (with its expiry) and the rotated refresh
//! token there. Instances that lose the race wait, re-read the secret and use what the winner stored.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::error::{BrexError, status_is_retryable};
use crate::domain::{BrexCredentials, Secret};
use crate::ports::{Clock, LeaseStore, SecretStore};

/// The lease name shared by every instance of the deployment.
pub const REFRESH_LEASE: &str = "brex-oauth-refresh";

/// Where the OAuth state lives and how time passes.
#[derive(Clone)]
pub struct OAuthContext {
    pub secrets: Arc<dyn SecretStore>,
    pub leases: Arc<dyn LeaseStore>,
    pub clock: Arc<dyn Clock>,
    /// `BREX_SECRET_ID`.
    pub secret_id: String,
}

impl fmt::Debug for OAuthContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthContext").field("secret_id", &self.secret_id).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOptions {
    /// Refresh this long before the access token expires.
    pub refresh_margin: chrono::Duration,
    /// How long the refresh lease is taken for (longer than one token call plus the secret write).
    pub lease: chrono::Duration,
    /// Pause between looks at the secret while another instance refreshes.
    pub wait_step: Duration,
    /// Looks before giving up with [`BrexError::RefreshContended`].
    pub max_wait_rounds: u32,
    /// Attempts at the token endpoint when it answers 429/5xx.
    pub token_attempts: u32,
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            refresh_margin: chrono::Duration::minutes(5),
            lease: chrono::Duration::seconds(30),
            wait_step: Duration::from_millis(250),
            max_wait_rounds: 40,
            token_attempts: 3,
        }
    }
}

pub struct BrexAuth {
    kind: Kind,
}

enum Kind {
    UserToken(Secret),
    OAuth(Box<OAuth>),
}

impl fmt::Debug for BrexAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::UserToken(_) => f.write_str("BrexAuth::UserToken([redacted])"),
            Kind::OAuth(o) => {
                f.debug_struct("BrexAuth::OAuth").field("secret_id", &o.ctx.secret_id).finish_non_exhaustive()
            }
        }
    }
}

struct OAuth {
    ctx: OAuthContext,
    options: AuthOptions,
    /// This instance's name on the lease.
    holder: String,
    state: Mutex<OAuthState>,
}

struct OAuthState {
    client_id: String,
    client_secret: Secret,
    refresh_token: Secret,
    token_url: String,
    access: Option<AccessToken>,
    /// The last access token Brex refused; never handed out again, even if a peer stored it.
    rejected: Option<Secret>,
}

#[derive(Clone)]
struct AccessToken {
    token: Secret,
    expires_at: DateTime<Utc>,
}

impl OAuthState {
    fn from_credentials(creds: BrexCredentials) -> Result<Self, BrexError> {
        match creds {
            BrexCredentials::OAuth {
                client_id,
                client_secret,
                refresh_token,
                token_url,
                access_token,
                access_token_expires_at,
            } => Ok(Self {
                client_id,
                client_secret,
                refresh_token,
                token_url,
                access: access_token
                    .zip(access_token_expires_at)
                    .map(|(token, expires_at)| AccessToken { token, expires_at }),
                rejected: None,
            }),
            BrexCredentials::UserToken { .. } => {
                Err(BrexError::InvalidSecret("expected OAuth credentials, found a user token".into()))
            }
        }
    }

    /// Takes over what the secret now holds, keeping our refused token out.
    fn absorb(&mut self, creds: BrexCredentials) -> Result<(), BrexError> {
        let rejected = self.rejected.take();
        *self = Self::from_credentials(creds)?;
        if self.access.as_ref().map(|a| &a.token) == rejected.as_ref() {
            self.access = None;
        }
        self.rejected = rejected;
        Ok(())
    }

    fn usable(&self, now: DateTime<Utc>, margin: chrono::Duration) -> Option<Secret> {
        self.access.as_ref().filter(|a| a.expires_at - margin > now).map(|a| a.token.clone())
    }

    fn to_credentials(&self) -> BrexCredentials {
        BrexCredentials::OAuth {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            refresh_token: self.refresh_token.clone(),
            token_url: self.token_url.clone(),
            access_token: self.access.as_ref().map(|a| a.token.clone()),
            access_token_expires_at: self.access.as_ref().map(|a| a.expires_at),
        }
    }
}

fn parse_credentials(secret: &Secret) -> Result<BrexCredentials, BrexError> {
    // serde's message could quote part of the secret, so it is not passed on.
    serde_json::from_str(secret.expose()).map_err(|_| {
        BrexError::InvalidSecret(
            "expected {\"token\"} or {\"client_id\",\"client_secret\",\"refresh_token\",\"token_url\"}".into(),
        )
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Secret,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    refresh_token: Option<Secret>,
}

#[derive(Deserialize, Default)]
struct TokenErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

impl BrexAuth {
    pub fn user_token(token: Secret) -> Self {
        Self { kind: Kind::UserToken(token) }
    }

    /// Reads `ctx.secret_id` and builds the matching kind of auth.
    pub async fn load(ctx: OAuthContext, options: AuthOptions) -> Result<Self, BrexError> {
        let secret = ctx.secrets.get_secret(&ctx.secret_id).await?;
        Self::from_credentials(parse_credentials(&secret)?, ctx, options)
    }

    pub fn from_credentials(
        creds: BrexCredentials,
        ctx: OAuthContext,
        options: AuthOptions,
    ) -> Result<Self, BrexError> {
        match creds {
            BrexCredentials::UserToken { token } => Ok(Self::user_token(token)),
            oauth @ BrexCredentials::OAuth { .. } => {
                let state = OAuthState::from_credentials(oauth)?;
                Ok(Self {
                    kind: Kind::OAuth(Box::new(OAuth {
                        ctx,
                        options,
                        holder: uuid::Uuid::new_v4().to_string(),
                        state: Mutex::new(state),
                    })),
                })
            }
        }
    }

    /// The token for `Authorization: Bearer`, refreshed first when needed.
    pub async fn bearer(&self, http: &reqwest::Client) -> Result<Secret, BrexError> {
        match &self.kind {
            Kind::UserToken(token) => Ok(token.clone()),
            Kind::OAuth(oauth) => oauth.bearer(http).await,
        }
    }

    /// Brex refused `token` (401). Returns whether asking again can help: only an OAuth token can be
    /// replaced by a refresh.
    pub async fn invalidate(&self, token: &Secret) -> bool {
        match &self.kind {
            Kind::UserToken(_) => false,
            Kind::OAuth(oauth) => {
                let mut state = oauth.state.lock().await;
                if state.access.as_ref().is_some_and(|a| &a.token == token) {
                    state.access = None;
                }
                state.rejected = Some(token.clone());
                true
            }
        }
    }
}

impl OAuth {
    async fn bearer(&self, http: &reqwest::Client) -> Result<Secret, BrexError> {
        let margin = self.options.refresh_margin;
        let mut state = self.state.lock().await;
        if let Some(token) = state.usable(self.ctx.clock.now(), margin) {
            return Ok(token);
        }
        for _ in 0..self.options.max_wait_rounds {
            let now = self.ctx.clock.now();
            if self.ctx.leases.try_acquire(REFRESH_LEASE, &self.holder, now + self.options.lease, now).await? {
                let result = self.refresh_under_lease(&mut state, http).await;
                if let Err(err) = self.ctx.leases.release(REFRESH_LEASE, &self.holder).await {
                    // It expires on its own; peers just wait a little longer.
                    tracing::warn!(error = %err, "could not release the Brex refresh lease");
                }
                return result;
            }
            tokio::time::sleep(self.options.wait_step).await;
            self.reload(&mut state).await?;
            if let Some(token) = state.usable(self.ctx.clock.now(), margin) {
                tracing::debug!("using the Brex access token another instance stored");
                return Ok(token);
            }
        }
        Err(BrexError::RefreshContended)
    }

    async fn reload(&self, state: &mut OAuthState) -> Result<(), BrexError> {
        let secret = self.ctx.secrets.get_secret(&self.ctx.secret_id).await?;
        state.absorb(parse_credentials(&secret)?)
    }

    async fn refresh_under_lease(&self, state: &mut OAuthState, http: &reqwest::Client) -> Result<Secret, BrexError> {
        // The previous lease holder may have refreshed between our last look and our lease.
        self.reload(state).await?;
        if let Some(token) = state.usable(self.ctx.clock.now(), self.options.refresh_margin) {
            return Ok(token);
        }
        let response = self.call_token_endpoint(state, http).await?;
        let now = self.ctx.clock.now();
        let lifetime = response.expires_in.unwrap_or(3600).clamp(60, 24 * 3600);
        let rotated = response.refresh_token.is_some();
        if let Some(refresh) = response.refresh_token {
            state.refresh_token = refresh;
        }
        state.access = Some(AccessToken {
            token: response.access_token.clone(),
            expires_at: now + chrono::Duration::seconds(lifetime),
        });
        state.rejected = None;
        self.store(state).await;
        tracing::info!(expires_in = lifetime, rotated, "refreshed the Brex access token");
        Ok(response.access_token)
    }

    async fn call_token_endpoint(
        &self,
        state: &OAuthState,
        http: &reqwest::Client,
    ) -> Result<TokenResponse, BrexError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", state.refresh_token.expose()),
            ("client_id", state.client_id.as_str()),
            ("client_secret", state.client_secret.expose()),
        ];
        let mut attempt = 0;
        loop {
            attempt += 1;
            // No retry after a transport error: Brex may have rotated the refresh token already, and a
            // second use of the old one would only be refused.
            let response = http.post(&state.token_url).form(&form).send().await.map_err(|e| BrexError::Token {
                status: None,
                message: format!("token endpoint unreachable: {}", e.without_url()),
            })?;
            let status = response.status().as_u16();
            let body = response.bytes().await.map_err(|e| BrexError::Token {
                status: Some(status),
                message: format!("token response unreadable: {}", e.without_url()),
            })?;
            if (200..300).contains(&status) {
                return serde_json::from_slice::<TokenResponse>(&body).map_err(|_| BrexError::Token {
                    status: Some(status),
                    message: "token response lacks access_token".into(),
                });
            }
            let detail: TokenErrorBody = serde_json::from_slice(&body).unwrap_or_default();
            let err = BrexError::Token {
                status: Some(status),
                message: format!(
                    "{} {}",
                    detail.error.as_deref().unwrap_or("error"),
                    detail.error_description.as_deref().unwrap_or("").chars().take(300).collect::<String>()
                )
                .trim()
                .to_owned(),
            };
            if !status_is_retryable(status) || attempt >= self.options.token_attempts {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
    }

    /// Writes the rotated refresh token (and the access token for peers) back to the secret. Failing here
    /// is logged, not returned: the access token is good, and this instance keeps the rotated refresh token
    /// in memory for its next refresh.
    async fn store(&self, state: &OAuthState) {
        let json = match serde_json::to_string(&state.to_credentials()) {
            Ok(json) => Secret::new(json),
            Err(err) => {
                tracing::error!(error = %err, "could not serialise the Brex credentials");
                return;
            }
        };
        for attempt in 1..=3u64 {
            match self.ctx.secrets.put_secret(&self.ctx.secret_id, &json).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::error!(error = %err, attempt, "could not store the rotated Brex refresh token");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorb_keeps_a_refused_token_out() {
        let creds = |token: &str| BrexCredentials::OAuth {
            client_id: "c".into(),
            client_secret: Secret::new("s"),
            refresh_token: Secret::new("r2"),
            token_url: "http://t".into(),
            access_token: Some(Secret::new(token)),
            access_token_expires_at: Some(DateTime::from_timestamp(2_000_000_000, 0).unwrap()),
        };
        let mut state = OAuthState::from_credentials(creds("a1")).unwrap();
        let now = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        assert_eq!(state.usable(now, chrono::Duration::minutes(5)), Some(Secret::new("a1")));
        state.rejected = Some(Secret::new("a1"));
        state.absorb(creds("a1")).unwrap();
        assert_eq!(state.usable(now, chrono::Duration::minutes(5)), None);
        assert_eq!(state.refresh_token, Secret::new("r2"));
        state.absorb(creds("a2")).unwrap();
        assert_eq!(state.usable(now, chrono::Duration::minutes(5)), Some(Secret::new("a2")));
        // Near expiry counts as expired.
        let late = DateTime::from_timestamp(2_000_000_000 - 200, 0).unwrap();
        assert_eq!(state.usable(late, chrono::Duration::minutes(5)), None);
    }

    #[test]
    fn bad_secret_text_is_not_echoed() {
        let err = parse_credentials(&Secret::new(r#"{"token": 12345678}"#)).unwrap_err();
        assert!(!err.to_string().contains("12345678"), "{err}");
    }

    #[test]
    fn debug_is_redacted() {
        let auth = BrexAuth::user_token(Secret::new("bxt_VALUE"));
        assert!(!format!("{auth:?}").contains("VALUE"));
    }
}
