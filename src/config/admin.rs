//! The `[admin]` (admin HTTP server, its tokens, the campaign stats cache)
//! and `[tracking]` (impression tracking key) sections: raw serde structs
//! and their validation into [`AdminConfig`] and [`TrackingConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::load::Ctx;
use super::{secrets, Secret};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:9090";
pub const DEFAULT_MAX_CAMPAIGNS: usize = crate::telemetry::stats::DEFAULT_MAX_CAMPAIGNS;
pub const DEFAULT_TRACKING_KEY: &str = "pg";

/// `[admin]` as written in the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// `host:port`, or "off".
    pub listen: String,
    pub token_file: Option<PathBuf>,
    pub events_token_file: Option<PathBuf>,
    pub max_campaigns: usize,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: DEFAULT_LISTEN.into(),
            token_file: None,
            events_token_file: None,
            max_campaigns: DEFAULT_MAX_CAMPAIGNS,
        }
    }
}

/// `[tracking]` as written in the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTracking {
    pub enabled: bool,
    pub key: String,
}

impl Default for RawTracking {
    fn default() -> Self {
        RawTracking {
            enabled: true,
            key: DEFAULT_TRACKING_KEY.into(),
        }
    }
}

/// The admin server, validated.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `None`: no admin server ("off").
    pub listen: Option<SocketAddr>,
    /// Bearer token for `POST /v1/campaigns/{id}/stop|resume`.
    pub token: Option<Secret<String>>,
    /// Bearer token for `POST /v1/events`.
    pub events_token: Option<Secret<String>>,
    /// Campaigns kept in the stats cache (least recently updated evicted).
    pub max_campaigns: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: DEFAULT_LISTEN.parse().ok(),
            token: None,
            events_token: None,
            max_campaigns: DEFAULT_MAX_CAMPAIGNS,
        }
    }
}

/// The tracking key added to every notification, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingConfig {
    pub enabled: bool,
    /// Name of the key (beside `aps` for APNs, in `data` for FCM).
    pub key: String,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            enabled: true,
            key: DEFAULT_TRACKING_KEY.into(),
        }
    }
}

impl TrackingConfig {
    /// The key name when tracking is on.
    pub fn key(&self) -> Option<&str> {
        self.enabled.then_some(self.key.as_str())
    }
}

fn token(path_key: &str, file: Option<PathBuf>, ctx: &mut Ctx) -> Option<Secret<String>> {
    let path = ctx.resolve(&file?);
    match secrets::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) if !s.trim().is_empty() && !s.trim().contains(char::is_whitespace) => {
                Some(Secret::new(s.trim().to_owned()))
            }
            _ => {
                ctx.problem(
                    path_key,
                    "the token file must hold one token (no spaces), e.g. from `openssl rand -hex 32`",
                );
                None
            }
        },
        Err(e) => {
            ctx.problem(path_key, e);
            None
        }
    }
}

pub(super) fn build_admin(raw: RawAdmin, ctx: &mut Ctx) -> AdminConfig {
    let listen = if raw.listen == "off" {
        None
    } else {
        match raw.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                ctx.problem(
                    "admin.listen",
                    format!(
                        "{:?} is not host:port (an IP address and port) or \"off\"",
                        raw.listen
                    ),
                );
                None
            }
        }
    };
    if raw.max_campaigns == 0 {
        ctx.problem("admin.max_campaigns", "must be >= 1");
    }
    AdminConfig {
        listen,
        token: token("admin.token_file", raw.token_file, ctx),
        events_token: token("admin.events_token_file", raw.events_token_file, ctx),
        max_campaigns: raw.max_campaigns.max(1),
    }
}

pub(super) fn build_tracking(raw: RawTracking, ctx: &mut Ctx) -> TrackingConfig {
    let k = raw.key.as_str();
    let charset = k
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !(1..=32).contains(&k.len()) || !charset {
        ctx.problem("tracking.key", "must be 1-32 characters of A-Z a-z 0-9 _ -");
    } else if k == "aps" || crate::job::validate::reserved_data_key(k) {
        ctx.problem(
            "tracking.key",
            format!("{k:?} is reserved by APNs or FCM; pick another name"),
        );
    }
    TrackingConfig {
        enabled: raw.enabled,
        key: raw.key,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::load_str;

    const APP: &str = r#"
[apps.shop.apns]
environment = "sandbox"
topic = "com.example.shop"
team_id = "DEVTEAM001"
key_id = "DEVKEY0001"
key_file = "dev/apns-dev.p8"
"#;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
    }

    fn problems(extra: &str) -> Vec<String> {
        match load_str(&format!("{APP}\n{extra}"), &dir(), Vec::new()) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let c = load_str(APP, &dir(), Vec::new()).unwrap();
        assert_eq!(c.admin.listen, "0.0.0.0:9090".parse().ok());
        assert!(c.admin.token.is_none() && c.admin.events_token.is_none());
        assert_eq!(c.admin.max_campaigns, 10_000);
        assert_eq!(c.tracking.key(), Some("pg"));
        assert_eq!(c.amqp.events_queue, "pushgate.events");
        assert_eq!(c.amqp.control_exchange, "pushgate.control");
        let env = vec![
            ("PUSHGATE_ADMIN__LISTEN".to_owned(), "off".to_owned()),
            ("PUSHGATE_TRACKING__ENABLED".to_owned(), "false".to_owned()),
        ];
        let c = load_str(APP, &dir(), env).unwrap();
        assert!(c.admin.listen.is_none());
        assert_eq!(c.tracking.key(), None);
    }

    #[test]
    fn token_files_are_read_and_never_printed() {
        let tmp = std::env::temp_dir().join(format!("pg-admin-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("t"), "s3cret-token\n").unwrap();
        std::fs::write(tmp.join("two"), "a b\n").unwrap();
        let text = format!(
            "{APP}\n[admin]\ntoken_file = \"{}\"",
            tmp.join("t").display()
        );
        let c = load_str(&text, &dir(), Vec::new()).unwrap();
        assert_eq!(c.admin.token.as_ref().unwrap().expose(), "s3cret-token");
        assert!(!format!("{:?}", c.admin).contains("s3cret"));
        let p = problems(&format!(
            "[admin]\nevents_token_file = \"{}\"",
            tmp.join("two").display()
        ));
        assert!(p[0].starts_with("admin.events_token_file"), "{p:?}");
        let p = problems("[admin]\ntoken_file = \"/nonexistent/token\"");
        assert!(p[0].starts_with("admin.token_file"), "{p:?}");
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn bad_values_are_named() {
        let p = problems("[admin]\nlisten = \"localhost\"\nmax_campaigns = 0\nbogus = 1\n[tracking]\nkey = \"aps\"");
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("admin.listen")));
        assert!(p.iter().any(|m| m.starts_with("admin.max_campaigns")));
        assert!(p.iter().any(|m| m.starts_with("admin.bogus")));
        assert!(p.iter().any(|m| m.starts_with("tracking.key")));
        assert_eq!(problems("[tracking]\nkey = \"google_x\"").len(), 1);
        assert_eq!(problems("[amqp]\nevents_queue = \"\"").len(), 1);
    }
}
