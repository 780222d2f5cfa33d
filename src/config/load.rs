//! Reads the TOML file, applies `PUSHGATE_*` overrides and validates into [`super::Config`].
//!
//! Loading never stops at the first mistake: every problem (unknown key,
//! wrong type, missing key, unreadable or wrong key file, bad endpoint) is
//! collected with the dotted key it concerns, so that one `check-config`
//! run shows all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file::{self, FileConfig, LogSection, Override};
use super::{AmqpConfig, AppConfig, Config, DaemonConfig, LogConfig, PolicyConfig};

/// Everything wrong with a config, one clear message per problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid config:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Loads and validates the config at `path`, with the process environment's
/// `PUSHGATE_*` overrides.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    load_with_env(path, env)
}

/// [`load`] with the environment given as `(name, value)` pairs (tests pass
/// their own instead of mutating the process environment).
pub fn load_with_env<I>(path: &Path, env: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![format!(
            "cannot read config file {}: {e}; pass --config or set PUSHGATE_CONFIG",
            path.display()
        )],
    })?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    load_str(&text, &base, env).map_err(|mut e| {
        for p in &mut e.problems {
            *p = format!("{}: {p}", path.display());
        }
        e
    })
}

/// Validates config `text`; relative file paths resolve against `base_dir`.
pub fn load_str<I>(text: &str, base_dir: &Path, env: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
        problems: vec![format!("not valid TOML: {}", e.to_string().trim_end())],
    })?;
    let mut ctx = Ctx {
        problems: Vec::new(),
        removed: Vec::new(),
        overrides: Vec::new(),
        base: base_dir.to_path_buf(),
    };
    let mut env_problems = Vec::new();
    ctx.overrides = file::apply_env(&mut table, env, &mut env_problems);
    ctx.problems.extend(env_problems);
    let raw = deserialize(table, &mut ctx);
    let config = build(raw, &mut ctx);
    if ctx.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            problems: ctx.problems,
        })
    }
}

/// The state of one validation run.
pub(super) struct Ctx {
    pub problems: Vec<String>,
    /// Keys dropped because their value had the wrong type: "missing"
    /// complaints about them would only repeat the problem.
    pub removed: Vec<String>,
    pub overrides: Vec<Override>,
    pub base: PathBuf,
}

impl Ctx {
    /// Records a problem with the key at dotted `path`.
    pub fn problem(&mut self, path: &str, msg: impl std::fmt::Display) {
        let by_env = self
            .overrides
            .iter()
            .find(|o| o.path == path)
            .map(|o| format!(" (set by environment variable {})", o.var))
            .unwrap_or_default();
        self.problems.push(format!("{path}: {msg}{by_env}"));
    }

    /// Records that a required key is missing, unless it was dropped.
    pub fn missing(&mut self, path: &str, what_to_do: &str) {
        if !self.removed.iter().any(|r| r == path) {
            self.problem(path, format!("missing; {what_to_do}"));
        }
    }

    /// Resolves a configured file path against the config's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }
}

/// Deserializes the raw file, dropping each unknown or mistyped key (after
/// recording a problem) and trying again, so that all of them are reported.
fn deserialize(mut table: toml::Table, ctx: &mut Ctx) -> FileConfig {
    for _ in 0..256 {
        let err = match toml::Value::Table(table.clone()).try_into::<FileConfig>() {
            Ok(f) => return f,
            Err(e) => e.to_string(),
        };
        let mut lines = err.lines();
        let msg = lines.next().unwrap_or("").to_owned();
        let parent = lines
            .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')))
            .unwrap_or("")
            .to_owned();
        let (key, text) = match unknown_field(&msg) {
            Some((field, expected)) => {
                let key = join(&parent, field);
                (key, format!("unknown key (expected {expected})"))
            }
            None => (parent, msg),
        };
        if key.is_empty() || !remove(&mut table, &key) {
            ctx.problems.push(text);
            return FileConfig::default();
        }
        ctx.problem(&key, text);
        ctx.removed.push(key);
    }
    ctx.problems
        .push("too many problems; fix the ones above first".to_owned());
    FileConfig::default()
}

/// Splits serde's "unknown field `x`, expected ..." into `x` and the rest.
fn unknown_field(msg: &str) -> Option<(&str, &str)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .strip_prefix(", expected ")
        .or_else(|| rest.strip_prefix(", there are no fields"))
        .unwrap_or("no keys here");
    Some((field, expected))
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Removes the key at dotted `path`; false when it is not there.
fn remove(table: &mut toml::Table, path: &str) -> bool {
    let mut node = table;
    let mut segments: Vec<&str> = path.split('.').collect();
    let Some(last) = segments.pop() else {
        return false;
    };
    for seg in segments {
        match node.get_mut(seg) {
            Some(toml::Value::Table(t)) => node = t,
            _ => return false,
        }
    }
    node.remove(last).is_some()
}

fn build(raw: FileConfig, ctx: &mut Ctx) -> Config {
    let log = build_log(raw.log, ctx);
    if raw.apps.is_empty() {
        ctx.missing(
            "apps",
            "configure at least one app, e.g. [apps.shop.apns] or [apps.shop.fcm]",
        );
    }
    let mut apps = BTreeMap::new();
    for (name, section) in raw.apps {
        let app = build_app(&name, section, ctx);
        apps.insert(name, Arc::new(app));
    }
    let amqp = raw.amqp.into_typed().unwrap_or_else(|problems| {
        for p in problems {
            ctx.problem("amqp", p);
        }
        AmqpConfig::default()
    });
    let daemon = raw.daemon.into_typed().unwrap_or_else(|problems| {
        for p in problems {
            ctx.problem("daemon", p);
        }
        DaemonConfig::default()
    });
    let admin = super::admin::build_admin(raw.admin, ctx);
    let tracking = super::admin::build_tracking(raw.tracking, ctx);
    let names: Vec<&str> = apps.keys().map(String::as_str).collect();
    let policy =
        super::policy::build(raw.throttle, raw.policy, &names).unwrap_or_else(|problems| {
            for (key, p) in problems {
                ctx.problem(&key, p);
            }
            PolicyConfig::default()
        });
    Config {
        apps,
        log,
        amqp,
        daemon,
        admin,
        tracking,
        policy,
    }
}

fn build_log(raw: LogSection, ctx: &mut Ctx) -> LogConfig {
    let format = raw.format.unwrap_or_else(|| "auto".to_owned());
    if !matches!(format.as_str(), "auto" | "json" | "pretty") {
        ctx.problem(
            "log.format",
            format!("{format:?} is not a log format; use \"auto\", \"json\" or \"pretty\""),
        );
    }
    let level = raw.level.unwrap_or_else(|| "info".to_owned());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        ctx.problem(
            "log.level",
            format!(
                "{level:?} is not a log filter ({e}); use e.g. \"info\" or \"pushgate=debug,info\""
            ),
        );
    }
    LogConfig { format, level }
}

fn build_app(name: &str, raw: file::AppSection, ctx: &mut Ctx) -> AppConfig {
    let path = format!("apps.{name}");
    if !valid_app_name(name) {
        ctx.problem(
            &path,
            "app names are 1-64 characters of A-Z, a-z, 0-9, '-' and '_' (they appear in routing keys)",
        );
    }
    if raw.apns.is_none() && raw.fcm.is_none() && raw.webpush.is_none() {
        let dropped = ["apns", "fcm", "webpush"]
            .iter()
            .any(|p| ctx.removed.contains(&format!("{path}.{p}")));
        if !dropped {
            ctx.problem(
                &path,
                format!("no provider; add [{path}.apns], [{path}.fcm] and/or [{path}.webpush]"),
            );
        }
    }
    let apns = raw
        .apns
        .and_then(|s| super::providers::build_apns(&format!("{path}.apns"), s, ctx));
    let fcm = raw
        .fcm
        .and_then(|s| super::providers::build_fcm(&format!("{path}.fcm"), s, ctx));
    let webpush = raw
        .webpush
        .and_then(|s| super::webpush::build(&format!("{path}.webpush"), s, ctx));
    AppConfig {
        name: name.to_owned(),
        apns,
        fcm,
        webpush,
    }
}

/// App names: the same rule as the job schema's `app`.
pub fn valid_app_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
