//! Raw serde structs of the TOML config file (unknown keys are errors), and
//! the `PUSHGATE_*` environment overrides applied to the TOML tree before
//! it is deserialized.
//!
//! Every struct here mirrors one table of `config/pushgate.example.toml`,
//! with `Option` fields so that [`super::load`] can say precisely what is
//! missing. To add a section (say `[amqp]`): add its struct here with
//! `#[serde(deny_unknown_fields)]`, a field in [`FileConfig`], and its
//! validation in `load.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub apps: BTreeMap<String, AppSection>,
    #[serde(default)]
    pub amqp: super::amqp::RawAmqp,
    #[serde(default)]
    pub daemon: super::amqp::RawDaemon,
    #[serde(default)]
    pub admin: super::admin::RawAdmin,
    #[serde(default)]
    pub tracking: super::admin::RawTracking,
    #[serde(default)]
    pub throttle: super::policy::RawThrottle,
    #[serde(default)]
    pub policy: super::policy::RawPolicy,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// `[apps.<name>]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    pub apns: Option<ApnsSection>,
    pub fcm: Option<FcmSection>,
    pub webpush: Option<WebPushSection>,
}

/// `[apps.<name>.apns]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsSection {
    pub environment: Option<String>,
    pub topic: Option<String>,
    pub team_id: Option<String>,
    pub key_id: Option<String>,
    pub key_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub cert_key_file: Option<PathBuf>,
    pub token_refresh_secs: Option<u64>,
    pub endpoint: Option<String>,
    pub connections: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub keepalive_interval_secs: Option<u64>,
    pub keepalive_timeout_secs: Option<u64>,
    pub ca_file: Option<PathBuf>,
}

/// `[apps.<name>.fcm]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmSection {
    pub service_account_file: Option<PathBuf>,
    pub project_id: Option<String>,
    pub token_uri: Option<String>,
    pub endpoint: Option<String>,
    pub connections: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub keepalive_interval_secs: Option<u64>,
    pub keepalive_timeout_secs: Option<u64>,
    pub ca_file: Option<PathBuf>,
}

/// `[apps.<name>.webpush]`: no `endpoint` key, each subscription names its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushSection {
    pub vapid_key_file: Option<PathBuf>,
    pub subject: Option<String>,
    pub token_ttl_secs: Option<u64>,
    /// A TOML array, or one comma-separated string (as an env override gives).
    pub allowed_origins: Option<OneOrMany>,
    pub http1_connections: Option<u64>,
    pub connections: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub keepalive_interval_secs: Option<u64>,
    pub keepalive_timeout_secs: Option<u64>,
    pub ca_file: Option<PathBuf>,
}

/// A list key that also takes one comma-separated string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    Many(Vec<String>),
    One(String),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

impl WebPushSection {
    pub fn connection(&self) -> ConnectionSection {
        ConnectionSection {
            endpoint: None,
            connections: self.connections,
            connect_timeout_ms: self.connect_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
            keepalive_interval_secs: self.keepalive_interval_secs,
            keepalive_timeout_secs: self.keepalive_timeout_secs,
            ca_file: self.ca_file.clone(),
        }
    }
}

/// The connection keys APNs and FCM share (serde's `flatten` does not mix
/// with `deny_unknown_fields`, so both sections list them and hand them
/// over through this struct).
#[derive(Debug, Clone, Default)]
pub struct ConnectionSection {
    pub endpoint: Option<String>,
    pub connections: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub keepalive_interval_secs: Option<u64>,
    pub keepalive_timeout_secs: Option<u64>,
    pub ca_file: Option<PathBuf>,
}

impl ApnsSection {
    pub fn connection(&self) -> ConnectionSection {
        ConnectionSection {
            endpoint: self.endpoint.clone(),
            connections: self.connections,
            connect_timeout_ms: self.connect_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
            keepalive_interval_secs: self.keepalive_interval_secs,
            keepalive_timeout_secs: self.keepalive_timeout_secs,
            ca_file: self.ca_file.clone(),
        }
    }
}

impl FcmSection {
    pub fn connection(&self) -> ConnectionSection {
        ConnectionSection {
            endpoint: self.endpoint.clone(),
            connections: self.connections,
            connect_timeout_ms: self.connect_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
            keepalive_interval_secs: self.keepalive_interval_secs,
            keepalive_timeout_secs: self.keepalive_timeout_secs,
            ca_file: self.ca_file.clone(),
        }
    }
}

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "PUSHGATE_";

/// One applied environment override, remembered so that a problem with the
/// key it set can name the variable.
#[derive(Debug, Clone)]
pub struct Override {
    pub var: String,
    /// Dotted path of the key it set, with the key names as found in the file.
    pub path: String,
}

/// Applies `PUSHGATE_<SECTION>__<KEY>...=value` overrides to `table`.
///
/// Path segments are joined by `__` and matched case-insensitively against
/// the keys already present (`-` in a key may be written `_`); a missing
/// key is created in lower case. The value is parsed as a TOML scalar when
/// it is one (`8`, `true`, `"quoted"`), else taken as a string. Variables
/// without `__` (such as `PUSHGATE_CONFIG`) are not config keys and are
/// ignored. Returns the overrides applied; bad ones are added to `problems`.
pub fn apply_env<I>(table: &mut toml::Table, env: I, problems: &mut Vec<String>) -> Vec<Override>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k[ENV_PREFIX.len()..].contains("__"))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let segments: Vec<&str> = var[ENV_PREFIX.len()..].split("__").collect();
        if segments.iter().any(|s| s.is_empty()) {
            problems.push(format!(
                "environment variable {var}: empty key segment; write PUSHGATE_<SECTION>__<KEY>, e.g. PUSHGATE_LOG__LEVEL"
            ));
            continue;
        }
        match set_path(table, &segments, scalar(&raw)) {
            Ok(path) => applied.push(Override { var, path }),
            Err(msg) => problems.push(format!("environment variable {var}: {msg}")),
        }
    }
    applied
}

/// Parses an override value: a TOML integer, float, boolean or quoted
/// string when it is one, else the raw text as a string.
pub fn scalar(raw: &str) -> toml::Value {
    if let Ok(mut t) = format!("v = {raw}").parse::<toml::Table>() {
        if let (1, Some(v)) = (t.len(), t.remove("v")) {
            if matches!(
                v,
                toml::Value::Integer(_)
                    | toml::Value::Float(_)
                    | toml::Value::Boolean(_)
                    | toml::Value::String(_)
            ) {
                return v;
            }
        }
    }
    toml::Value::String(raw.to_owned())
}

fn matches_key(key: &str, segment: &str) -> bool {
    key.len() == segment.len()
        && key
            .bytes()
            .zip(segment.bytes())
            .all(|(k, s)| k.eq_ignore_ascii_case(&s) || (k == b'-' && s == b'_'))
}

fn set_path(
    table: &mut toml::Table,
    segments: &[&str],
    value: toml::Value,
) -> Result<String, String> {
    let mut node = table;
    let mut path: Vec<String> = Vec::new();
    let (last, parents) = segments
        .split_last()
        .ok_or_else(|| "no key named".to_owned())?;
    for seg in parents {
        let key = find_key(node, seg);
        path.push(key.clone());
        let entry = node
            .entry(key)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{}` is not a table", path.join("."))),
        };
    }
    let key = find_key(node, last);
    path.push(key.clone());
    if matches!(node.get(&key), Some(toml::Value::Table(_))) {
        return Err(format!(
            "`{}` is a table; set one of its keys instead",
            path.join(".")
        ));
    }
    node.insert(key, value);
    Ok(path.join("."))
}

fn find_key(table: &toml::Table, segment: &str) -> String {
    table
        .keys()
        .find(|k| matches_key(k, segment))
        .cloned()
        .unwrap_or_else(|| segment.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn scalars_parse_as_toml_else_string() {
        assert_eq!(scalar("8"), toml::Value::Integer(8));
        assert_eq!(scalar("true"), toml::Value::Boolean(true));
        assert_eq!(scalar("\"x y\""), toml::Value::String("x y".into()));
        assert_eq!(scalar("debug"), toml::Value::String("debug".into()));
        assert_eq!(scalar("[1]"), toml::Value::String("[1]".into()));
        assert_eq!(scalar("1\nx = 2"), toml::Value::String("1\nx = 2".into()));
        assert_eq!(
            scalar("2026-01-01T00:00:00Z"),
            toml::Value::String("2026-01-01T00:00:00Z".into())
        );
    }

    #[test]
    fn overrides_follow_existing_keys_case_insensitively() {
        let mut t: toml::Table = "[apps.shop-cert.apns]\nconnections = 2\n[log]\nlevel = \"info\""
            .parse()
            .unwrap();
        let mut problems = Vec::new();
        let applied = apply_env(
            &mut t,
            env(&[
                ("PUSHGATE_APPS__SHOP_CERT__APNS__CONNECTIONS", "8"),
                ("PUSHGATE_log__LEVEL", "debug"),
                ("PUSHGATE_CONFIG", "ignored.toml"),
                ("OTHER__X", "1"),
            ]),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(applied.len(), 2);
        assert_eq!(
            t["apps"]["shop-cert"]["apns"]["connections"].as_integer(),
            Some(8)
        );
        assert_eq!(t["log"]["level"].as_str(), Some("debug"));
        assert!(!t.contains_key("config"));
    }

    #[test]
    fn overrides_create_missing_tables_and_refuse_bad_paths() {
        let mut t: toml::Table = "[log]\nlevel = \"info\"\n[apps.shop.apns]\ntopic = \"t\""
            .parse()
            .unwrap();
        let mut problems = Vec::new();
        apply_env(
            &mut t,
            env(&[
                ("PUSHGATE_APPS__NEW__FCM__PROJECT_ID", "p"),
                ("PUSHGATE_LOG__LEVEL__X", "1"),
                ("PUSHGATE_LOG", "ignored"),
                ("PUSHGATE_LOG____LEVEL", "1"),
                ("PUSHGATE_APPS__SHOP", "1"),
            ]),
            &mut problems,
        );
        assert_eq!(t["apps"]["new"]["fcm"]["project_id"].as_str(), Some("p"));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("`log.level` is not a table")));
        assert!(problems.iter().any(|p| p.contains("empty key segment")));
        assert!(problems
            .iter()
            .any(|p| p.contains("`apps.shop` is a table")));
    }
}
