//! `pushgate send` as a user runs it: the binary, a temp config pointing at
//! simulators started here, the printed outcome and the exit status.

// Test helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

use pushgate::sim::{apns, fcm, SimHandle};

struct Env {
    apns: SimHandle,
    fcm: SimHandle,
    config: PathBuf,
    _dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn env() -> Env {
    let any = "127.0.0.1:0".parse().unwrap();
    let apns = apns::start(any, apns::ApnsSimOptions::default())
        .await
        .unwrap();
    let fcm = fcm::start(any, fcm::FcmSimOptions::default())
        .await
        .unwrap();
    let dev = format!("{}/config/dev", env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!(
        "pushgate-send-{}-{}",
        std::process::id(),
        pushgate::provider::new_notification_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        r#"
[apps.shop.apns]
environment = "sandbox"
endpoint = "https://{apns}"
topic = "com.example.shop"
team_id = "DEVTEAM001"
key_id = "DEVKEY0001"
key_file = "{dev}/apns-dev.p8"
ca_file = "{dev}/ca.pem"

[apps.shop.fcm]
service_account_file = "{dev}/fcm-service-account.json"
endpoint = "https://{fcm}"
token_uri = "https://{fcm}/token"
ca_file = "{dev}/ca.pem"
"#,
        apns = apns.addr,
        fcm = fcm.addr,
    );
    let config = dir.join("pushgate.toml");
    std::fs::write(&config, toml).unwrap();
    Env {
        apns,
        fcm,
        config,
        _dir: TempDir(dir),
    }
}

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .arg("send")
            .args(args)
            .env_remove("PUSHGATE_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(e: &Env, rest: &[&str]) -> Vec<String> {
    let mut v = vec!["--config".to_owned(), e.config.display().to_string()];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn hex(prefix: &str) -> String {
    apns::scripted_token(prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_delivered_and_refused() {
    let e = env().await;
    let ok = hex("abcd");
    let o = run(args(
        &e,
        &[
            "--app",
            "shop",
            "--platform",
            "apns",
            "--token",
            &ok,
            "--title",
            "Hi",
            "--body",
            "there",
            "--data",
            "order=1",
        ],
    ))
    .await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout(&o).starts_with("delivered"), "{}", stdout(&o));
    let got = e.apns.stats.last().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["aps"]["alert"]["title"], "Hi");
    assert_eq!(body["order"], "1");

    let dead = hex("dead");
    let o = run(args(
        &e,
        &[
            "--app",
            "shop",
            "--platform",
            "apns",
            "--token",
            &dead,
            "--title",
            "Hi",
            "--json",
        ],
    ))
    .await;
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["code"], "NotRegistered");
    assert_eq!(v["label"], "APNS Unregistered");
    assert_eq!(v["class"], "token");
    assert_eq!(v["provider_status"], 410);
    assert_eq!(v["provider_reason"], "Unregistered");
    assert_eq!(v["platform"], "apns");
    e.apns.shutdown().await;
    e.fcm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_delivered_and_refused() {
    let e = env().await;
    let o = run(args(
        &e,
        &[
            "--app",
            "shop",
            "--platform",
            "fcm",
            "--token",
            "device-1",
            "--title",
            "Hi",
            "--body",
            "there",
            "--collapse-key",
            "c1",
            "--priority",
            "normal",
            "--ttl",
            "60",
            "--json",
        ],
    ))
    .await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["status"], "delivered");
    assert!(v["provider_id"]
        .as_str()
        .unwrap()
        .starts_with("projects/pushgate-dev/messages/"));
    assert!(v.get("code").is_none());
    let got = e.fcm.stats.last().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["message"]["android"]["collapse_key"], "c1");
    assert_eq!(body["message"]["android"]["ttl"], "60s");

    let o = run(args(
        &e,
        &[
            "--app",
            "shop",
            "--platform",
            "fcm",
            "--token",
            "mismatch-1",
            "--title",
            "Hi",
        ],
    ))
    .await;
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(
        out.contains("MismatchSenderId") && out.contains("class token"),
        "{out}"
    );
    e.apns.shutdown().await;
    e.fcm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_config_errors_exit_1() {
    let e = env().await;
    let o = run(args(
        &e,
        &["--app", "nope", "--platform", "fcm", "--token", "t"],
    ))
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown app"));
    let o = run(vec![
        "--config".into(),
        "/nonexistent/pushgate.toml".into(),
        "--app".into(),
        "shop".into(),
        "--platform".into(),
        "apns".into(),
        "--token".into(),
        "t".into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(1));
    let o = run(args(
        &e,
        &[
            "--app",
            "shop",
            "--platform",
            "carrier-pigeon",
            "--token",
            "t",
        ],
    ))
    .await;
    assert_eq!(o.status.code(), Some(1), "usage error");
    e.apns.shutdown().await;
    e.fcm.shutdown().await;
}
