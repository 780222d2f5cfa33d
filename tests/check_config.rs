//! `pushgate check-config` as an operator runs it: the built binary, real files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn check(config: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.arg("check-config").arg("--config").arg(config);
    for (k, _) in std::env::vars() {
        if k.starts_with("PUSHGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run pushgate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Lines of key material in config/dev that must never be printed.
fn secret_lines() -> Vec<String> {
    let dev = config_dir().join("dev");
    let mut lines = Vec::new();
    for f in ["apns-dev.p8", "apns-client.key", "vapid-dev.p8"] {
        let pem = std::fs::read_to_string(dev.join(f)).unwrap();
        lines.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::to_owned),
        );
    }
    let sa: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dev.join("fcm-service-account.json")).unwrap())
            .unwrap();
    let pk = sa["private_key"].as_str().unwrap();
    lines.extend(
        pk.lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_owned),
    );
    lines
}

fn assert_no_secret(out: &str) {
    for l in secret_lines() {
        assert!(
            !out.contains(&l[..l.len().min(24)]),
            "key material printed:\n{out}"
        );
    }
}

/// A scratch copy of dev.toml with the key files at absolute paths, so that
/// single files can be swapped for broken ones.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, edit: impl Fn(String) -> String) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("pushgate-check-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dev = config_dir().join("dev");
        let toml = std::fs::read_to_string(config_dir().join("dev.toml"))
            .unwrap()
            .replace("\"dev/", &format!("\"{}/", dev.display()));
        std::fs::write(dir.join("pushgate.toml"), edit(toml)).unwrap();
        Scratch(dir)
    }

    fn config(&self) -> PathBuf {
        self.0.join("pushgate.toml")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn dev_config_is_sound() {
    let out = check(&config_dir().join("dev.toml"), &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("app shop\n"), "{t}");
    assert!(t.contains("key id DEVKEY0001"), "{t}");
    assert!(
        t.contains("service account pushgate-dev@pushgate-dev.iam.gserviceaccount.com"),
        "{t}"
    );
    assert!(t.contains("app shop-cert\n"), "{t}");
    assert!(t.contains("auth: certificate"), "{t}");
    assert_no_secret(&t);
}

/// `--threads` (env `PUSHGATE_THREADS`) is global and is not a config
/// override; 0 threads is refused with the reason.
#[test]
fn runtime_threads_flag_and_env() {
    let dev = config_dir().join("dev.toml");
    let out = check(&dev, &[("PUSHGATE_THREADS", "1")]);
    assert!(out.status.success(), "{}", text(&out));
    // Before or after the subcommand.
    let run = |args: [&str; 4]| {
        Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(args)
            .arg(&dev)
            .output()
            .unwrap()
    };
    let out = run(["--threads", "2", "check-config", "--config"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(["check-config", "--threads", "0", "--config"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--threads"), "{}", text(&out));
}

#[test]
fn config_path_comes_from_pushgate_config() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.arg("check-config")
        .env("PUSHGATE_CONFIG", config_dir().join("dev.toml"));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn corrupt_p8_is_refused() {
    let s = Scratch::new("p8", |t| t);
    let p8 = std::fs::read_to_string(config_dir().join("dev/apns-dev.p8")).unwrap();
    let corrupt: String = p8.replacen("MIG", "MIH", 1);
    std::fs::write(s.0.join("broken.p8"), corrupt).unwrap();
    let out = check(
        &s.config(),
        &[("PUSHGATE_APPS__SHOP__APNS__KEY_FILE", "broken.p8")],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("apps.shop.apns.key_file: "), "{t}");
    assert!(t.contains("broken.p8: not a usable EC P-256"), "{t}");
    assert!(
        t.contains("(set by environment variable PUSHGATE_APPS__SHOP__APNS__KEY_FILE)"),
        "{t}"
    );
    assert_no_secret(&t);
}

#[test]
fn missing_file_is_refused() {
    let s = Scratch::new("missing", |t| {
        t.replace("fcm-service-account.json", "gone.json")
    });
    let out = check(&s.config(), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("apps.shop.fcm.service_account_file: cannot read"),
        "{t}"
    );
    assert!(t.contains("gone.json"), "{t}");
}

#[test]
fn unknown_key_is_refused() {
    let s = Scratch::new("unknown", |t| {
        t.replace("[apps.shop.fcm]", "[apps.shop.fcm]\nprojectid = \"x\"")
    });
    let out = check(&s.config(), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("apps.shop.fcm.projectid: unknown key"), "{t}");
    assert!(t.contains("`project_id`"), "{t}");
}

#[test]
fn bad_endpoint_is_refused() {
    let s = Scratch::new("endpoint", |t| {
        t.replace("https://127.0.0.1:4443\"", "https://127.0.0.1:4443/v1\"")
    });
    let out = check(&s.config(), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("apps.shop.fcm.endpoint: endpoint \"https://127.0.0.1:4443/v1\" must be https://host[:port]"), "{t}");
    assert_no_secret(&t);
}

#[test]
fn every_problem_is_listed_and_no_secret_leaks() {
    let s = Scratch::new("many", |t| {
        t.replace("DEVKEY0001", "dev-key")
            .replace("https://127.0.0.1:2197\"", "127.0.0.1:2197\"")
            .replace("[log]", "[log]\nlvl = 1")
    });
    // A service-account file whose private key is an EC key: refused without quoting it.
    let sa = std::fs::read_to_string(config_dir().join("dev/fcm-service-account.json")).unwrap();
    let mut sa: serde_json::Value = serde_json::from_str(&sa).unwrap();
    sa["private_key"] = std::fs::read_to_string(config_dir().join("dev/apns-dev.p8"))
        .unwrap()
        .into();
    std::fs::write(s.0.join("sa.json"), sa.to_string()).unwrap();
    let out = check(
        &s.config(),
        &[("PUSHGATE_APPS__SHOP__FCM__SERVICE_ACCOUNT_FILE", "sa.json")],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("log.lvl: unknown key"), "{t}");
    assert!(
        t.contains("apps.shop.apns.key_id: \"dev-key\" is not an Apple Key ID"),
        "{t}"
    );
    assert!(t.contains("apps.shop.apns.endpoint: "), "{t}");
    assert!(t.contains("apps.shop-cert.apns.endpoint: "), "{t}");
    assert!(
        t.contains("sa.json: `private_key`: not a usable RSA private key"),
        "{t}"
    );
    assert!(t.contains("has 5 problem(s)"), "{t}");
    assert_no_secret(&t);
}
