//! Validates `[apps.<name>.webpush]` into a [`WebPushConfig`]: the VAPID key
//! file, the contact subject, the JWT lifetime, the allowed push-service
//! origins and the per-origin pool template.

use std::ops::RangeInclusive;
use std::time::Duration;

use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;

use super::file::WebPushSection;
use super::load::Ctx;
use super::providers::build_connection;
use super::webpush_origins::AllowedOrigins;
use super::{secrets, Secret, WebPushConfig, WEBPUSH_ANY_ORIGIN};

/// VAPID JWT lifetime: default 12 h, at most 24 h (RFC 8292 section 2).
const TOKEN_TTL_SECS: (u64, RangeInclusive<u64>) = (12 * 3600, 600..=24 * 3600);
/// HTTP/1.1 connections per origin (push services without HTTP/2).
const HTTP1_CONNECTIONS: (u64, RangeInclusive<u64>) = (16, 1..=256);

pub(super) fn build(prefix: &str, raw: WebPushSection, ctx: &mut Ctx) -> Option<WebPushConfig> {
    let key = |k: &str| format!("{prefix}.{k}");
    let vapid_key = vapid_key_file(prefix, &raw, ctx);
    let subject = match raw.subject.as_deref() {
        Some(s) if valid_subject(s) => Some(s.to_owned()),
        Some(s) => {
            ctx.problem(
                &key("subject"),
                format!("{s:?} is not a VAPID contact; use \"mailto:ops@example.com\" or an https:// URL"),
            );
            None
        }
        None => {
            ctx.missing(
                &key("subject"),
                "set a contact for push services, e.g. \"mailto:ops@example.com\"",
            );
            None
        }
    };
    let ttl = match raw.token_ttl_secs {
        None => TOKEN_TTL_SECS.0,
        Some(v) if TOKEN_TTL_SECS.1.contains(&v) => v,
        Some(v) => {
            ctx.problem(
                &key("token_ttl_secs"),
                format!(
                    "{v} is out of range; use {}..={} (VAPID tokens live at most 24 hours; default {})",
                    TOKEN_TTL_SECS.1.start(),
                    TOKEN_TTL_SECS.1.end(),
                    TOKEN_TTL_SECS.0
                ),
            );
            TOKEN_TTL_SECS.0
        }
    };
    let allowed_origins = allowed_origins(prefix, &raw, ctx);
    let http1_connections = match raw.http1_connections {
        None => HTTP1_CONNECTIONS.0,
        Some(v) if HTTP1_CONNECTIONS.1.contains(&v) => v,
        Some(v) => {
            ctx.problem(
                &key("http1_connections"),
                format!(
                    "{v} is out of range; use {}..={} (default {})",
                    HTTP1_CONNECTIONS.1.start(),
                    HTTP1_CONNECTIONS.1.end(),
                    HTTP1_CONNECTIONS.0
                ),
            );
            HTTP1_CONNECTIONS.0
        }
    };
    let connection = build_connection(prefix, raw.connection(), WEBPUSH_ANY_ORIGIN, ctx)?;
    Some(WebPushConfig {
        vapid_key: Secret::new(vapid_key?),
        subject: subject?,
        token_ttl: Duration::from_secs(ttl),
        connection,
        allowed_origins: allowed_origins?,
        http1_connections: usize::try_from(http1_connections).unwrap_or(1),
    })
}

/// `allowed_origins`: the default push services when absent.
fn allowed_origins(prefix: &str, raw: &WebPushSection, ctx: &mut Ctx) -> Option<AllowedOrigins> {
    let Some(list) = raw.allowed_origins.clone() else {
        return Some(AllowedOrigins::default());
    };
    match AllowedOrigins::parse(&list.into_vec()) {
        Ok(a) => Some(a),
        Err(problems) => {
            let k = format!("{prefix}.allowed_origins");
            for p in problems {
                ctx.problem(&k, p);
            }
            None
        }
    }
}

fn vapid_key_file(prefix: &str, raw: &WebPushSection, ctx: &mut Ctx) -> Option<Vec<u8>> {
    let k = format!("{prefix}.vapid_key_file");
    let Some(path) = &raw.vapid_key_file else {
        ctx.missing(
            &k,
            "set it to the PEM (\"BEGIN PRIVATE KEY\") EC P-256 VAPID key, e.g. made with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`",
        );
        return None;
    };
    let full = ctx.resolve(path);
    let bytes = match secrets::read(&full) {
        Ok(b) => b,
        Err(e) => {
            ctx.problem(&k, e);
            return None;
        }
    };
    vapid_key(&bytes)
        .map_err(|e| ctx.problem(&k, format!("{}: {e}", full.display())))
        .ok()
}

/// A VAPID key: PKCS#8 PEM of an EC P-256 key. Returns the PKCS#8 DER.
pub fn vapid_key(pem_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem_bytes).map_err(|_| {
        "no PKCS#8 private key (\"BEGIN PRIVATE KEY\") found; expected an EC P-256 key in PKCS#8 PEM (convert with `openssl pkcs8 -topk8 -nocrypt`)".to_owned()
    })?;
    let rng = ring::rand::SystemRandom::new();
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        der.secret_pkcs8_der(),
        &rng,
    )
    .map_err(|e| format!("not a usable EC P-256 (ES256) private key ({e}); VAPID needs P-256"))?;
    Ok(der.secret_pkcs8_der().to_vec())
}

/// `mailto:x@y` or `https://host...`, no whitespace.
pub fn valid_subject(s: &str) -> bool {
    let ok_chars = !s.chars().any(|c| c.is_whitespace() || c.is_control());
    let mailto = s
        .strip_prefix("mailto:")
        .is_some_and(|a| a.contains('@') && !a.starts_with('@') && !a.ends_with('@'));
    let https = s.strip_prefix("https://").is_some_and(|h| !h.is_empty());
    ok_chars && (mailto || https)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert!(valid_subject("mailto:ops@example.com"));
        assert!(valid_subject("https://example.com/contact"));
        assert!(!valid_subject("ops@example.com"));
        assert!(!valid_subject("mailto:"));
        assert!(!valid_subject("http://example.com"));
        assert!(!valid_subject("mailto:a b@c"));
    }

    fn load(toml: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        crate::config::load_str(toml, &base, Vec::new())
    }

    #[test]
    fn section_loads_with_defaults() {
        let cfg = load(
            "[apps.web.webpush]\nvapid_key_file = \"dev/vapid-dev.p8\"\nsubject = \"mailto:a@b.c\"\nca_file = \"dev/ca.pem\"",
        )
        .unwrap();
        let w = cfg.apps["web"].webpush.as_ref().unwrap();
        assert_eq!(w.subject, "mailto:a@b.c");
        assert_eq!(w.token_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(w.allowed_origins, AllowedOrigins::default());
        assert_eq!(w.http1_connections, 16);
        assert_eq!(w.connection.extra_ca.len(), 1);
        assert!(cfg.apps["web"].apns.is_none());
    }

    #[test]
    fn every_problem_is_named() {
        let err = load(
            "[apps.web.webpush]\nsubject = \"ops@example.com\"\ntoken_ttl_secs = 90000\nendpoint = \"https://x\"",
        )
        .unwrap_err()
        .problems
        .join("\n");
        for want in [
            "apps.web.webpush.endpoint: unknown key",
            "apps.web.webpush.vapid_key_file: missing",
            "apps.web.webpush.subject: \"ops@example.com\" is not a VAPID contact",
            "apps.web.webpush.token_ttl_secs: 90000 is out of range",
        ] {
            assert!(err.contains(want), "no {want:?} in\n{err}");
        }
        let err = load(
            "[apps.web.webpush]\nvapid_key_file = \"dev/sim.pem\"\nsubject = \"https://x.example\"",
        )
        .unwrap_err()
        .problems
        .join("\n");
        assert!(err.contains("apps.web.webpush.vapid_key_file: "), "{err}");
        assert!(err.contains("PKCS#8"), "{err}");
    }

    const BASE: &str =
        "[apps.web.webpush]\nvapid_key_file = \"dev/vapid-dev.p8\"\nsubject = \"mailto:a@b.c\"\n";

    #[test]
    fn allowed_origins_as_a_list_or_one_comma_separated_string() {
        let cfg = load(&format!(
            "{BASE}allowed_origins = [\"@default\", \"127.0.0.1:4444\"]\nhttp1_connections = 3"
        ))
        .unwrap();
        let w = cfg.apps["web"].webpush.as_ref().unwrap();
        assert!(w.allowed_origins.check("127.0.0.1", 4444).is_ok());
        assert!(w.allowed_origins.check("fcm.googleapis.com", 443).is_ok());
        assert_eq!(w.http1_connections, 3);
        // What an environment override gives: one string.
        let env = vec![(
            "PUSHGATE_APPS__WEB__WEBPUSH__ALLOWED_ORIGINS".to_owned(),
            "push.example.net, localhost:4444".to_owned(),
        )];
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let cfg = crate::config::load_str(BASE, &base, env).unwrap();
        let w = cfg.apps["web"].webpush.as_ref().unwrap();
        assert_eq!(
            w.allowed_origins.entries(),
            ["push.example.net", "localhost:4444"]
        );
        assert!(w.allowed_origins.check("fcm.googleapis.com", 443).is_err());
    }

    #[test]
    fn bad_allowed_origins_and_http1_connections_are_named() {
        let err = load(&format!(
            "{BASE}allowed_origins = [\"http://x.example\", \"*.com\"]\nhttp1_connections = 0"
        ))
        .unwrap_err()
        .problems
        .join("\n");
        for want in [
            "apps.web.webpush.allowed_origins: \"http://x.example\": push services are https only",
            "apps.web.webpush.allowed_origins: \"*.com\": a wildcard needs",
            "apps.web.webpush.http1_connections: 0 is out of range; use 1..=256 (default 16)",
        ] {
            assert!(err.contains(want), "no {want:?} in\n{err}");
        }
        let err = load(&format!("{BASE}allowed_origins = []")).unwrap_err();
        assert!(
            err.problems.join("\n").contains("allowed_origins: empty"),
            "{err:?}"
        );
    }

    #[test]
    fn vapid_key_must_be_p256_pkcs8() {
        let dev = |n: &str| format!("{}/config/dev/{n}", env!("CARGO_MANIFEST_DIR"));
        let good = std::fs::read(dev("vapid-dev.p8")).unwrap();
        assert!(vapid_key(&good).is_ok());
        let cert = std::fs::read(dev("sim.pem")).unwrap();
        assert!(vapid_key(&cert).unwrap_err().contains("PKCS#8"));
    }
}
