//! `pushgate check-config`: load a config with its keys and report each app, or every problem.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{
    self, secrets, ApnsAuth, ApnsConfig, ApnsEnvironment, Config, ConnectionConfig, FcmConfig,
    WebPushConfig,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (TOML); `PUSHGATE_*` environment overrides apply.
    #[arg(long, env = "PUSHGATE_CONFIG", default_value = "config/pushgate.toml")]
    pub config: PathBuf,
}

pub async fn run(args: Args) -> ExitCode {
    match config::load(&args.config) {
        Ok(cfg) => {
            print!("{}", report(&args.config.display().to_string(), &cfg));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "pushgate: config {} has {} problem(s):",
                args.config.display(),
                e.problems.len()
            );
            for p in &e.problems {
                eprintln!("  - {p}");
            }
            ExitCode::from(1)
        }
    }
}

/// What check-config prints for a sound config: each app with its
/// providers, endpoints and credential identities (never key material).
pub fn report(source: &str, cfg: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config {source}: OK ({} app(s))", cfg.apps.len());
    let _ = writeln!(
        out,
        "log: format {}, level {}",
        cfg.log.format, cfg.log.level
    );
    for (name, app) in &cfg.apps {
        let _ = writeln!(out, "app {name}");
        if let Some(apns) = &app.apns {
            apns_lines(&mut out, apns);
        }
        if let Some(fcm) = &app.fcm {
            fcm_lines(&mut out, fcm);
        }
        if let Some(webpush) = &app.webpush {
            webpush_lines(&mut out, webpush);
        }
    }
    out
}

fn apns_lines(out: &mut String, apns: &ApnsConfig) {
    let env = match apns.environment {
        ApnsEnvironment::Production => "production",
        ApnsEnvironment::Sandbox => "sandbox",
    };
    let _ = writeln!(
        out,
        "  apns: {} ({env}), topic {}",
        apns.connection.endpoint, apns.topic
    );
    match &apns.auth {
        ApnsAuth::Token {
            team_id,
            key_id,
            refresh,
            ..
        } => {
            let _ = writeln!(
                out,
                "    auth: token, team {team_id}, key id {key_id}, JWT refreshed every {}",
                humantime::format_duration(*refresh)
            );
        }
        ApnsAuth::Certificate => {
            let (n, leaf) = match &apns.connection.client_cert {
                Some(c) => (c.chain.len(), c.chain.first().map(secrets::fingerprint)),
                None => (0, None),
            };
            let _ = writeln!(
                out,
                "    auth: certificate, {n} cert(s), leaf SHA-256 {}",
                leaf.unwrap_or_else(|| "-".to_owned())
            );
        }
    }
    connection_lines(out, &apns.connection);
}

fn fcm_lines(out: &mut String, fcm: &FcmConfig) {
    let sa = &fcm.service_account;
    let _ = writeln!(
        out,
        "  fcm: {}, project {}",
        fcm.connection.endpoint, fcm.project_id
    );
    let _ = writeln!(
        out,
        "    auth: service account {}, key id {}, token endpoint {}",
        sa.client_email, sa.private_key_id, fcm.token_uri
    );
    connection_lines(out, &fcm.connection);
}

fn webpush_lines(out: &mut String, w: &WebPushConfig) {
    let signer = crate::provider::webpush::auth::VapidSigner::new(
        w.vapid_key.expose(),
        &w.subject,
        w.token_ttl,
    );
    let key = match &signer {
        Ok(s) => s.public_key().to_owned(),
        Err(e) => format!("unusable ({e})"),
    };
    let _ = writeln!(
        out,
        "  webpush: per push-service origin, HTTP/2 (HTTP/1.1 with up to {} connection(s) where a push service has no HTTP/2)",
        w.http1_connections,
    );
    let _ = writeln!(
        out,
        "    allowed origins: {}",
        w.allowed_origins.entries().join(", ")
    );
    let _ = writeln!(
        out,
        "    auth: VAPID, subject {}, JWT valid {}, public key {key}",
        w.subject,
        humantime::format_duration(w.token_ttl),
    );
    connection_lines(out, &w.connection);
}

fn connection_lines(out: &mut String, c: &ConnectionConfig) {
    let _ = writeln!(
        out,
        "    pool: {} connection(s), connect timeout {}, request timeout {}, keepalive {} / {}",
        c.connections,
        humantime::format_duration(c.connect_timeout),
        humantime::format_duration(c.request_timeout),
        humantime::format_duration(c.keepalive_interval),
        humantime::format_duration(c.keepalive_timeout),
    );
    if !c.extra_ca.is_empty() {
        let fps: Vec<String> = c.extra_ca.iter().map(secrets::fingerprint).collect();
        let _ = writeln!(out, "    extra CA: {}", fps.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_identities() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let cfg = config::load_with_env(&dir.join("dev.toml"), Vec::new()).unwrap();
        let text = report("dev.toml", &cfg);
        for want in [
            "config dev.toml: OK (2 app(s))",
            "app shop\n  apns: https://127.0.0.1:2197 (sandbox), topic com.example.shop",
            "auth: token, team DEVTEAM001, key id DEVKEY0001, JWT refreshed every 45m",
            "fcm: https://127.0.0.1:4443, project pushgate-dev",
            "service account pushgate-dev@pushgate-dev.iam.gserviceaccount.com",
            "app shop-cert\n  apns:",
            "auth: certificate, 1 cert(s), leaf SHA-256 ",
            "webpush: per push-service origin, HTTP/2 (HTTP/1.1 with up to 16 connection(s)",
            "allowed origins: 127.0.0.1:4444, localhost:4444\n",
            "auth: VAPID, subject mailto:dev@example.com, JWT valid 12h, public key B",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
    }
}
