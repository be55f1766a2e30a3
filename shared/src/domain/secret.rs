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

/// The Brex secret in Secrets Manager (contract §3): a user token, or an OAuth client with a rotating
/// refresh token.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum BrexCredentials {
    UserToken { token: Secret },
    OAuth { client_id: String, client_secret: Secret, refresh_token: Secret, token_url: String },
}

impl fmt::Debug for BrexCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserToken { .. } => f.debug_struct("BrexCredentials::UserToken").finish_non_exhaustive(),
            Self::OAuth { client_id, token_url, .. } => f
                .debug_struct("BrexCredentials::OAuth")
                .field("client_id", client_id)
                .field("token_url", token_url)
                .finish_non_exhaustive(),
        }
    }
}

/// The IFS secret in Secrets Manager (contract §3).
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
            r#"{"client_id":"cid","client_secret":"cs-VALUE","refresh_token":"rt-VALUE","token_url":"https://x/t"}"#,
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
}
