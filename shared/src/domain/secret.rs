//! Credentials. Every secret value is wrapped so that `Debug`, `Display` and logs can never show it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string. Its `Debug` prints `[redacted]`; the value is reachable only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The Brex secret in Secrets Manager (docs/contract.md §3): a user token, or an OAuth client with a rotating
/// refresh token.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum BrexCredentials {
    UserToken {
        token: Secret,
    },
    OAuth {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_url: String,
        /// The last access token one instance obtained, stored so that other instances reuse it instead of
        /// refreshing (and rotating the refresh token) themselves.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_token: Option<Secret>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
}

impl fmt::Debug for BrexCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserToken { .. } => f.debug_struct("BrexCredentials::UserToken").finish_non_exhaustive(),
            Self::OAuth { client_id, token_url, access_token_expires_at, .. } => f
                .debug_struct("BrexCredentials::OAuth")
                .field("client_id", client_id)
                .field("token_url", token_url)
                .field("access_token_expires_at", access_token_expires_at)
                .finish_non_exhaustive(),
        }
    }
}

/// The IFS secret in Secrets Manager (docs/contract.md §3).
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct IfsCredentials {
    pub client_id: String,
    pub client_secret: Secret,
}

impl fmt::Debug for IfsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IfsCredentials").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_values() {
        let brex: BrexCredentials = serde_json::from_str(
            r#"{"client_id":"cid","client_secret":"cs-VALUE","refresh_token":"rt-VALUE","token_url":"https://x/t",
                "access_token":"at-VALUE","access_token_expires_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let user: BrexCredentials = serde_json::from_str(r#"{"token":"bxt_VALUE"}"#).unwrap();
        let ifs: IfsCredentials = serde_json::from_str(r#"{"client_id":"c","client_secret":"ifs-VALUE"}"#).unwrap();
        let shown = format!("{brex:?} {user:?} {ifs:?} {:?} {brex:#?}", Secret::new("plain-VALUE"));
        assert!(!shown.contains("VALUE"), "leaked: {shown}");
        assert!(shown.contains("cid") && shown.contains("[redacted]"));
    }

    #[test]
    fn brex_credentials_pick_the_right_shape() {
        let user: BrexCredentials = serde_json::from_str(r#"{"token":"bxt_1"}"#).unwrap();
        assert!(matches!(user, BrexCredentials::UserToken { ref token } if token.expose() == "bxt_1"));
        assert!(serde_json::from_str::<BrexCredentials>(r#"{"client_id":"only"}"#).is_err());
    }

    #[test]
    fn oauth_access_token_fields_are_optional_and_round_trip() {
        let plain = r#"{"client_id":"c","client_secret":"s","refresh_token":"r","token_url":"https://x/t"}"#;
        let creds: BrexCredentials = serde_json::from_str(plain).unwrap();
        assert!(matches!(creds, BrexCredentials::OAuth { access_token: None, access_token_expires_at: None, .. }));
        // Written back without the absent fields, so the stored shape stays the contract's.
        assert_eq!(serde_json::to_value(&creds).unwrap(), serde_json::from_str::<serde_json::Value>(plain).unwrap());
        let with = r#"{"client_id":"c","client_secret":"s","refresh_token":"r","token_url":"https://x/t",
                       "access_token":"a","access_token_expires_at":"2026-01-01T00:00:00Z"}"#;
        let creds: BrexCredentials = serde_json::from_str(with).unwrap();
        let back: BrexCredentials = serde_json::from_str(&serde_json::to_string(&creds).unwrap()).unwrap();
        assert_eq!(back, creds);
        assert!(matches!(back, BrexCredentials::OAuth { access_token: Some(ref a), .. } if a.expose() == "a"));
    }
}
