//! Unit tests of config loading (kept beside `load.rs` to keep it short).

use std::path::PathBuf;

use super::*;
use crate::config::{ApnsAuth, ApnsEnvironment};

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn problems(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    match load_str(text, &config_dir(), env) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems,
    }
}

const TOKEN_APP: &str = r#"
[apps.shop.apns]
environment = "sandbox"
topic = "com.example.shop"
team_id = "DEVTEAM001"
key_id = "DEVKEY0001"
key_file = "dev/apns-dev.p8"
"#;

#[test]
fn dev_config_loads_every_app() {
    let cfg = load_with_env(&config_dir().join("dev.toml"), no_env()).unwrap();
    let shop = &cfg.apps["shop"];
    let apns = shop.apns.as_ref().unwrap();
    assert_eq!(apns.environment, ApnsEnvironment::Sandbox);
    assert_eq!(apns.connection.endpoint.authority, "127.0.0.1:2197");
    assert_eq!(apns.connection.extra_ca.len(), 1);
    assert_eq!(apns.connection.connections, 4);
    match &apns.auth {
        ApnsAuth::Token {
            key_id,
            team_id,
            refresh,
            ..
        } => {
            assert_eq!(
                (key_id.as_str(), team_id.as_str()),
                ("DEVKEY0001", "DEVTEAM001")
            );
            assert_eq!(refresh.as_secs(), 2700);
        }
        ApnsAuth::Certificate => panic!("shop uses token auth"),
    }
    let fcm = shop.fcm.as_ref().unwrap();
    assert_eq!(fcm.project_id, "pushgate-dev");
    assert_eq!(fcm.token_uri, "https://127.0.0.1:4443/token");
    assert_eq!(fcm.connection.endpoint.authority, "127.0.0.1:4443");
    let cert = cfg.apps["shop-cert"].apns.as_ref().unwrap();
    assert!(matches!(cert.auth, ApnsAuth::Certificate));
    assert_eq!(cert.connection.client_cert.as_ref().unwrap().chain.len(), 1);
    assert!(cfg.apps["shop-cert"].fcm.is_none());
}

#[test]
fn dispatch_shards_share_each_pools_connections() {
    let cfg = load_with_env(&config_dir().join("dev.toml"), no_env()).unwrap();
    let apns = |apps: &BTreeMap<String, Arc<AppConfig>>| {
        apps["shop"].apns.as_ref().unwrap().connection.connections
    };
    assert_eq!(apns(&cfg.apps), 4);
    assert_eq!(apns(&cfg.apps_for_shards(1)), 4);
    assert_eq!(apns(&cfg.apps_for_shards(2)), 2);
    assert_eq!(apns(&cfg.apps_for_shards(3)), 2, "rounded up");
    assert_eq!(apns(&cfg.apps_for_shards(8)), 1, "at least one");
    let two = cfg.apps_for_shards(2);
    let fcm = |apps: &BTreeMap<String, Arc<AppConfig>>| {
        apps["shop"].fcm.as_ref().unwrap().connection.connections
    };
    assert_eq!(fcm(&two), fcm(&cfg.apps).div_ceil(2));
    let webpush = |apps: &BTreeMap<String, Arc<AppConfig>>| {
        let w = apps["shop"].webpush.as_ref().unwrap();
        (w.connection.connections, w.http1_connections)
    };
    let (h2, h1) = webpush(&cfg.apps);
    assert_eq!(webpush(&two), (h2.div_ceil(2), h1.div_ceil(2)));
    assert_eq!(
        two.keys().collect::<Vec<_>>(),
        cfg.apps.keys().collect::<Vec<_>>()
    );
}

#[test]
fn defaults_apply() {
    let cfg = load_str(TOKEN_APP, &config_dir(), no_env()).unwrap();
    assert_eq!(
        (cfg.log.format.as_str(), cfg.log.level.as_str()),
        ("auto", "info")
    );
    let apns = cfg.apps["shop"].apns.as_ref().unwrap();
    assert_eq!(apns.connection.endpoint.host, "api.sandbox.push.apple.com");
    assert_eq!(apns.connection.request_timeout.as_millis(), 10_000);
    assert!(apns.connection.extra_ca.is_empty());
}

#[test]
fn env_overrides_win_and_are_named_in_problems() {
    let env = [
        ("PUSHGATE_APPS__SHOP__APNS__CONNECTIONS", "8"),
        ("PUSHGATE_LOG__LEVEL", "debug"),
    ];
    let env_iter = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let cfg = load_str(TOKEN_APP, &config_dir(), env_iter).unwrap();
    assert_eq!(
        cfg.apps["shop"]
            .apns
            .as_ref()
            .unwrap()
            .connection
            .connections,
        8
    );
    assert_eq!(cfg.log.level, "debug");

    let p = problems(TOKEN_APP, &[("PUSHGATE_APPS__SHOP__APNS__CONECTIONS", "8")]);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("apps.shop.apns.conections: unknown key"),
        "{p:?}"
    );
    assert!(
        p[0].contains("PUSHGATE_APPS__SHOP__APNS__CONECTIONS"),
        "{p:?}"
    );
    let p = problems(
        TOKEN_APP,
        &[("PUSHGATE_APPS__SHOP__APNS__CONNECTIONS", "many")],
    );
    assert!(
        p[0].contains("apps.shop.apns.connections: invalid type"),
        "{p:?}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[log]
format = "xml"
colour = true
[apps.shop.apns]
environment = "sandbox"
topic = "com.example.shop"
team_id = "devteam1"
key_id = "DEVKEY0001"
key_file = "dev/nope.p8"
endpoint = "http://127.0.0.1:2197"
conections = 3
token_refresh_secs = 600
[apps.shop.fcm]
service_account_file = "dev/fcm-service-account.json"
bogus = 1
[apps."bad name"]
[amqp]
url = "http://x"
"#;
    let p = problems(text, &[]);
    let expect = [
        "log.format: \"xml\" is not a log format",
        "log.colour: unknown key",
        "apps.shop.apns.conections: unknown key",
        "apps.shop.fcm.bogus: unknown key",
        "amqp: amqp.url must start with amqp:// or amqps://",
        "apps.shop.apns.team_id: \"devteam1\" is not an Apple Team ID",
        "apps.shop.apns.key_file: cannot read",
        "apps.shop.apns.endpoint: endpoint \"http://127.0.0.1:2197\" must start with https://",
        "apps.shop.apns.token_refresh_secs: 600 is out of range",
        "apps.bad name: app names are",
        "apps.bad name: no provider",
    ];
    for e in expect {
        assert!(p.iter().any(|p| p.starts_with(e)), "no {e:?} in {p:#?}");
    }
    assert_eq!(p.len(), expect.len(), "{p:#?}");
}

#[test]
fn a_mistyped_key_is_not_also_reported_missing() {
    let text = TOKEN_APP.replace("topic = \"com.example.shop\"", "topic = 3");
    let p = problems(&text, &[]);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("apps.shop.apns.topic: invalid type: integer `3`"),
        "{p:?}"
    );
}

#[test]
fn structure_rules() {
    let p = problems("[log]\nlevel = \"info\"", &[]);
    assert!(
        p[0].starts_with("apps: missing; configure at least one app"),
        "{p:?}"
    );
    let p = problems(
        &format!("{TOKEN_APP}cert_file = \"dev/apns-client.pem\"\n"),
        &[],
    );
    assert!(p[0].contains("keep one"), "{p:?}");
    let p = problems("[apps.shop.apns]\ntopic = \"t\"", &[]);
    assert!(p[0].contains("no credentials"), "{p:?}");
    let p = problems(
        "[apps.shop.apns]\ntopic = \"t\"\nkey_id = \"DEVKEY0001\"",
        &[],
    );
    assert!(
        p.iter()
            .any(|p| p.starts_with("apps.shop.apns.team_id: missing")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.starts_with("apps.shop.apns.key_file: missing")),
        "{p:?}"
    );
    let p = problems("[apps.shop.fcm]\nconnections = 0", &[]);
    assert!(
        p.iter()
            .any(|p| p.starts_with("apps.shop.fcm.service_account_file: missing")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.starts_with("apps.shop.fcm.connections: 0 is out of range")),
        "{p:?}"
    );
    let p = problems(
        "[apps.shop.apns]\ntopic = \"t\"\ncert_file = \"dev/apns-client.pem\"\ncert_key_file = \"dev/sim.key\"",
        &[],
    );
    assert!(p[0].contains("does not belong to the certificate"), "{p:?}");
}

#[test]
fn wrong_key_files_are_refused_clearly() {
    let p = problems(&TOKEN_APP.replace("dev/apns-dev.p8", "dev/ca.pem"), &[]);
    assert!(p[0].starts_with("apps.shop.apns.key_file: "), "{p:?}");
    assert!(p[0].contains("ca.pem: no PKCS#8 private key"), "{p:?}");
    let text = "[apps.shop.fcm]\nservice_account_file = \"dev/apns-dev.p8\"\nca_file = \"dev/apns-dev.p8\"";
    let p = problems(text, &[]);
    assert!(
        p.iter()
            .any(|p| p.contains("not a service-account JSON key file")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.starts_with("apps.shop.fcm.ca_file: ") && p.contains("no certificate")),
        "{p:?}"
    );
    let secret = std::fs::read_to_string(config_dir().join("dev/apns-dev.p8")).unwrap();
    let body = secret.lines().nth(1).unwrap();
    assert!(p.iter().all(|p| !p.contains(body)));
}

#[test]
fn relative_paths_resolve_against_the_config_file() {
    let dir = std::env::temp_dir().join(format!("pushgate-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = config_dir().join("dev/apns-dev.p8");
    std::fs::copy(&key, dir.join("k.p8")).unwrap();
    std::fs::write(
        dir.join("c.toml"),
        TOKEN_APP.replace("dev/apns-dev.p8", "k.p8"),
    )
    .unwrap();
    let ok = load_with_env(&dir.join("c.toml"), no_env());
    std::fs::write(
        dir.join("c.toml"),
        TOKEN_APP.replace("dev/apns-dev.p8", "gone.p8"),
    )
    .unwrap();
    let err = load_with_env(&dir.join("c.toml"), no_env()).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok.is_ok(), "{ok:?}");
    assert!(
        err.problems[0].contains(&dir.join("gone.p8").display().to_string()),
        "{err}"
    );
    assert!(
        err.problems[0].starts_with(&dir.join("c.toml").display().to_string()),
        "{err}"
    );
}

#[test]
fn not_toml_and_missing_file() {
    let p = problems("[apps\n", &[]);
    assert!(p[0].starts_with("not valid TOML"), "{p:?}");
    let e = load_with_env(&config_dir().join("nope.toml"), no_env()).unwrap_err();
    assert!(e.problems[0].contains("cannot read config file"), "{e}");
}

/// Every config shipped in config/ validates. The example references
/// production paths under /secrets/: they are swapped for the dev files with
/// environment overrides, as an operator would do.
#[test]
fn every_shipped_config_validates() {
    let dev = config_dir().join("dev");
    let swap = |k: &str, f: &str| (k.to_owned(), dev.join(f).display().to_string());
    let mut seen = 0;
    for entry in std::fs::read_dir(config_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let env = if path.ends_with("pushgate.example.toml") {
            vec![
                swap("PUSHGATE_APPS__SHOP__APNS__KEY_FILE", "apns-dev.p8"),
                swap(
                    "PUSHGATE_APPS__SHOP__FCM__SERVICE_ACCOUNT_FILE",
                    "fcm-service-account.json",
                ),
                swap(
                    "PUSHGATE_APPS__SHOP__WEBPUSH__VAPID_KEY_FILE",
                    "vapid-dev.p8",
                ),
            ]
        } else {
            no_env()
        };
        if let Err(e) = load_with_env(&path, env) {
            panic!("{}: {e}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 2, "only {seen} configs found");
}
