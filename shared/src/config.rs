//! Deployment configuration from the Lambda environment (docs/contract.md §1). Parsed once at start-up; a missing or
//! malformed variable stops the function with a message naming it.

use std::collections::HashMap;

use crate::sync::{DEFAULT_MAX_BREX_REQUESTS, FieldSyncOptions};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where variables come from: the process environment, or a map in tests.
pub trait Lookup {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Lookup for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned().filter(|v| !v.trim().is_empty())
    }
}

fn required(env: &dyn Lookup, name: &'static str) -> Result<String, ConfigError> {
    env.get(name).ok_or(ConfigError::Missing(name))
}

fn url(env: &dyn Lookup, name: &'static str, default: Option<&str>) -> Result<String, ConfigError> {
    let raw = match (env.get(name), default) {
        (Some(v), _) => v,
        (None, Some(d)) => d.to_owned(),
        (None, None) => return Err(ConfigError::Missing(name)),
    };
    let trimmed = raw.trim().trim_end_matches('/').to_owned();
    url::Url::parse(&trimmed).map_err(|e| ConfigError::Invalid { name, reason: e.to_string() })?;
    Ok(trimmed)
}

fn number(env: &dyn Lookup, name: &'static str, default: u32) -> Result<u32, ConfigError> {
    match env.get(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u32>() {
            Ok(0) => Err(ConfigError::Invalid { name, reason: "must be at least 1".into() }),
            Ok(n) => Ok(n),
            Err(e) => Err(ConfigError::Invalid { name, reason: e.to_string() }),
        },
    }
}

fn flag(env: &dyn Lookup, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match env.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v == "true" || v == "1" => Ok(true),
        Some(v) if v == "false" || v == "0" => Ok(false),
        Some(v) => Err(ConfigError::Invalid { name, reason: format!("expected true or false, got {v:?}") }),
    }
}

/// What every function needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonConfig {
    pub table_name: String,
    pub brex_secret_id: String,
    pub brex_api_url: String,
    pub brex_requests_per_minute: u32,
    /// `METRICS_NAMESPACE`: the CloudWatch namespace of the embedded metrics (an addition to contract §1).
    pub metrics_namespace: String,
}

impl CommonConfig {
    pub fn from_env(env: &dyn Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(env, "TABLE_NAME")?,
            brex_secret_id: required(env, "BREX_SECRET_ID")?,
            brex_api_url: url(env, "BREX_API_URL", Some("https://api.brex.com"))?,
            brex_requests_per_minute: number(env, "BREX_REQUESTS_PER_MINUTE", 1000)?,
            metrics_namespace: env
                .get("METRICS_NAMESPACE")
                .unwrap_or_else(|| crate::metrics::DEFAULT_NAMESPACE.to_owned()),
        })
    }
}

/// IFS settings (poller, poster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfsConfig {
    pub ifs_secret_id: String,
    pub ifs_url: String,
    pub ifs_realm: String,
    pub ifs_requests_per_minute: u32,
    /// Poster instances at most (`POSTER_MAX_CONCURRENCY`, the template's `PosterMaximumConcurrency`): with the
    /// poller, how many share `ifs_requests_per_minute` if the shared budget's table cannot be reached.
    pub poster_max_concurrency: u32,
}

impl IfsConfig {
    pub fn from_env(env: &dyn Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            ifs_secret_id: required(env, "IFS_SECRET_ID")?,
            ifs_url: url(env, "IFS_URL", None)?,
            ifs_realm: required(env, "IFS_REALM")?,
            ifs_requests_per_minute: number(env, "IFS_REQUESTS_PER_MINUTE", 1000)?,
            poster_max_concurrency: number(env, "POSTER_MAX_CONCURRENCY", 1)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub common: CommonConfig,
    pub queue_url: String,
}

impl WebhookConfig {
    pub fn from_env(env: &dyn Lookup) -> Result<Self, ConfigError> {
        Ok(Self { common: CommonConfig::from_env(env)?, queue_url: required(env, "QUEUE_URL")? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosterConfig {
    pub common: CommonConfig,
    pub ifs: IfsConfig,
    pub queue_url: String,
    pub report_export_results: bool,
    pub dry_run: bool,
}

impl PosterConfig {
    pub fn from_env(env: &dyn Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            ifs: IfsConfig::from_env(env)?,
            queue_url: required(env, "QUEUE_URL")?,
            report_export_results: flag(env, "REPORT_EXPORT_RESULTS", true)?,
            dry_run: flag(env, "DRY_RUN", false)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollSource {
    AccountingRecords,
    Expenses,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerConfig {
    pub common: CommonConfig,
    pub ifs: IfsConfig,
    pub queue_url: String,
    pub poll_sources: Vec<PollSource>,
    /// `SYNC_BREX_FIELDS=true`: publish IFS accounts and code parts into Brex fields on every run.
    pub field_sync: Option<FieldSyncOptions>,
}

impl PollerConfig {
    pub fn from_env(env: &dyn Lookup) -> Result<Self, ConfigError> {
        let raw = env.get("POLL_SOURCES").unwrap_or_else(|| "accounting_records".into());
        let mut poll_sources = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let source = match part {
                "accounting_records" => PollSource::AccountingRecords,
                "expenses" => PollSource::Expenses,
                other => {
                    return Err(ConfigError::Invalid {
                        name: "POLL_SOURCES",
                        reason: format!("unknown source {other:?} (known: accounting_records, expenses)"),
                    });
                }
            };
            if !poll_sources.contains(&source) {
                poll_sources.push(source);
            }
        }
        if poll_sources.is_empty() {
            return Err(ConfigError::Invalid { name: "POLL_SOURCES", reason: "names no source".into() });
        }
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            ifs: IfsConfig::from_env(env)?,
            queue_url: required(env, "QUEUE_URL")?,
            poll_sources,
            field_sync: field_sync(env)?,
        })
    }
}

/// The poller's switch for the Brex field sync: `SYNC_BREX_FIELDS=true` turns it on (default off), and
/// `BREX_FIELDS_MAX_REQUESTS` sets the per-run budget. `Ok(None)` when off.
fn field_sync(env: &dyn Lookup) -> Result<Option<FieldSyncOptions>, ConfigError> {
    const SWITCH: &str = "SYNC_BREX_FIELDS";
    const BUDGET: &str = "BREX_FIELDS_MAX_REQUESTS";
    let on = match env.get(SWITCH).map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) if v.is_empty() || v == "false" || v == "0" => false,
        Some(v) if v == "true" || v == "1" => true,
        Some(v) => {
            return Err(ConfigError::Invalid { name: SWITCH, reason: format!("expected true or false, got {v:?}") });
        }
    };
    if !on {
        return Ok(None);
    }
    let max_brex_requests = match env.get(BUDGET) {
        None => DEFAULT_MAX_BREX_REQUESTS,
        Some(v) => v.trim().parse::<usize>().ok().filter(|n| *n >= 2).ok_or_else(|| ConfigError::Invalid {
            name: BUDGET,
            reason: format!("expected a whole number of at least 2, got {v:?}"),
        })?,
    };
    Ok(Some(FieldSyncOptions { max_brex_requests }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_field_sync_switch_is_off_unless_turned_on() {
        let sync = |pairs: &[(&str, &str)]| field_sync(&env(pairs));
        assert_eq!(sync(&[]).unwrap(), None);
        assert_eq!(sync(&[("SYNC_BREX_FIELDS", "false")]).unwrap(), None);
        assert_eq!(sync(&[("SYNC_BREX_FIELDS", "TRUE")]).unwrap(), Some(FieldSyncOptions::default()));
        assert_eq!(
            sync(&[("SYNC_BREX_FIELDS", "1"), ("BREX_FIELDS_MAX_REQUESTS", "40")]).unwrap(),
            Some(FieldSyncOptions { max_brex_requests: 40 })
        );
        assert!(sync(&[("SYNC_BREX_FIELDS", "yes")]).is_err());
        assert!(sync(&[("SYNC_BREX_FIELDS", "true"), ("BREX_FIELDS_MAX_REQUESTS", "1")]).is_err());
    }

    const BASE: &[(&str, &str)] = &[
        ("TABLE_NAME", "t"),
        ("BREX_SECRET_ID", "brex"),
        ("QUEUE_URL", "http://q"),
        ("IFS_SECRET_ID", "ifs"),
        ("IFS_URL", "https://acme.ifs.cloud/"),
        ("IFS_REALM", "acme"),
    ];

    #[test]
    fn defaults_follow_the_contract() {
        let cfg = PosterConfig::from_env(&env(BASE)).unwrap();
        assert_eq!(cfg.common.brex_api_url, "https://api.brex.com");
        assert_eq!(cfg.common.brex_requests_per_minute, 1000);
        assert_eq!(cfg.ifs.ifs_requests_per_minute, 1000);
        assert_eq!(cfg.ifs.poster_max_concurrency, 1);
        assert_eq!(cfg.ifs.ifs_url, "https://acme.ifs.cloud", "trailing slash dropped");
        assert!(cfg.report_export_results);
        assert!(!cfg.dry_run);
        let poller = PollerConfig::from_env(&env(BASE)).unwrap();
        assert_eq!(poller.poll_sources, vec![PollSource::AccountingRecords]);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let mut e = env(BASE);
        e.insert("DRY_RUN".into(), "yes".into());
        assert!(matches!(PosterConfig::from_env(&e), Err(ConfigError::Invalid { name: "DRY_RUN", .. })));
        let mut e = env(BASE);
        e.insert("POLL_SOURCES".into(), "accounting_records,bills".into());
        assert!(matches!(PollerConfig::from_env(&e), Err(ConfigError::Invalid { name: "POLL_SOURCES", .. })));
        let mut e = env(BASE);
        e.remove("TABLE_NAME");
        assert_eq!(WebhookConfig::from_env(&e), Err(ConfigError::Missing("TABLE_NAME")));
        let mut e = env(BASE);
        e.insert("IFS_REQUESTS_PER_MINUTE".into(), "0".into());
        assert!(PosterConfig::from_env(&e).is_err());
        let mut e = env(BASE);
        e.insert("POSTER_MAX_CONCURRENCY".into(), "many".into());
        assert!(matches!(PosterConfig::from_env(&e), Err(ConfigError::Invalid { name: "POSTER_MAX_CONCURRENCY", .. })));
    }
}
