//! The credentials circuit breaker against the APNs simulator: a wrong key
//! pauses the app's APNs sends with the alert raised and nothing lost, and
//! after the key is fixed (a restart) the queued notifications are
//! delivered; the guard treats a burst of DeviceTokenNotForTopic as a
//! configuration error and holds the token feedback back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod amqp_support;
mod policy_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amqp_support::{Collected, Harness};
use policy_support::{
    apps_toml, collect_until, config_for, dev_dir, finals_by_recipient, Daemon, Recorder,
};
use pushgate::job::Platform;
use pushgate::outcome::{Code, Status};
use pushgate::sim::apns::{self, scripted_token, ApnsSimOptions};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// A fresh P-256 key the simulator does not trust, as a .p8 file.
fn wrong_key(dir: &std::path::Path) -> PathBuf {
    use base64::Engine;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("wrong.p8");
    std::fs::write(&path, pem).unwrap();
    path
}

fn apns_job(id: &str, n: usize, prefix: &str) -> serde_json::Value {
    let recipients: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"platform": "apns", "token": scripted_token(&format!("{prefix}{i:04}")), "id": format!("r{i}")}))
        .collect();
    serde_json::json!({"id": id, "app": "shop", "recipients": recipients,
        "notification": {"title": "Hi", "body": "there"}})
}

const POLICY: &str = "[policy]\nprobe_interval = \"1s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_pauses_the_app_and_a_fixed_key_delivers_everything() {
    let sim = apns::start("127.0.0.1:0".parse().unwrap(), ApnsSimOptions::default())
        .await
        .unwrap();
    let mut h = Harness::new(|amqp, _| {
        amqp.retry.delays = [200, 1000].map(Duration::from_millis).to_vec();
        amqp.retry.base = Duration::from_millis(200);
        amqp.retry.max_attempts = 2;
    })
    .await;
    let tmp = std::env::temp_dir().join(format!("pushgate-{}", h.prefix));
    let bad = format!(
        "{}{POLICY}",
        apps_toml(Some(sim.addr), None, &wrong_key(&tmp))
    );
    // The daemon's own metrics as the policy's observer: the alert is
    // checked in the Prometheus exposition /metrics serves.
    let metrics = Arc::new(pushgate::telemetry::Metrics::new());
    let daemon = Daemon::start(config_for(&h, &bad), metrics.clone());
    daemon.ready().await;
    const N: usize = 20;
    h.publish_job(&apns_job("cred-job", N, "c0de")).await;

    // Every recipient comes back "retrying" with the credentials code;
    // none fails, none is delivered.
    let mut out = Collected::default();
    let seen = collect_until(&mut h, &mut out, Duration::from_secs(30), |c| {
        c.results.len() >= N
    })
    .await;
    assert!(seen, "{} entries", out.results.len());
    assert!(daemon.policy.credentials_alert("shop", Platform::Apns));
    assert_eq!(
        daemon.policy.snapshot().alerts,
        vec![("shop".to_owned(), Platform::Apns, Code::InvalidCredentials)],
        "pushgate_credentials_alert{{app=shop,platform=apns}} = 1"
    );
    // Probes keep failing for a few intervals; still nothing final.
    let sent_early = sim.stats.requests();
    collect_until(&mut h, &mut out, Duration::from_millis(2500), |_| false).await;
    assert!(out.finals().is_empty(), "{:?}", out.finals().first());
    assert!(out
        .results
        .iter()
        .all(|e| e.status == Status::Retrying && e.code == Some(Code::InvalidCredentials)));
    assert!(sim.stats.requests() > sent_early, "probes went out");
    assert!(
        sim.stats.requests() < (2 * N) as u64,
        "paused: {} requests for {N} recipients",
        sim.stats.requests()
    );
    let text = String::from_utf8(metrics.encode().unwrap()).unwrap();
    assert!(
        text.contains("pushgate_credentials_alert{app=\"shop\",platform=\"apns\"} 1"),
        "{text}"
    );
    daemon.shutdown().await;

    // The key is fixed and the daemon restarted: the queued jobs are delivered.
    let good = format!(
        "{}{POLICY}",
        apps_toml(Some(sim.addr), None, &dev_dir().join("apns-dev.p8"))
    );
    let daemon = Daemon::start(config_for(&h, &good), Arc::new(Recorder::default()));
    daemon.ready().await;
    let mut after = Collected::default();
    let all = collect_until(&mut h, &mut after, Duration::from_secs(30), |c| {
        c.finals().len() >= N
    })
    .await;
    assert!(all, "only {} of {N} delivered", after.finals().len());
    let per = finals_by_recipient(&after.results);
    assert_eq!(per.len(), N);
    assert!(
        per.values().all(|n| *n == 1),
        "one final result each: {:?}",
        after
            .finals()
            .iter()
            .filter(|e| per[e.recipient_id.as_deref().unwrap()] > 1)
            .map(|e| (&e.recipient_id, &e.job_id, e.attempt, &e.ts, e.status))
            .collect::<Vec<_>>()
    );
    assert!(after.finals().iter().all(|e| e.status == Status::Delivered));
    assert!(!daemon.policy.credentials_alert("shop", Platform::Apns));
    assert!(h
        .dead_letters(1, Duration::from_millis(300))
        .await
        .is_empty());
    daemon.shutdown().await;
    h.cleanup().await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_pauses_on_a_burst_of_wrong_topic_tokens_and_holds_feedback() {
    let sim = apns::start("127.0.0.1:0".parse().unwrap(), ApnsSimOptions::default())
        .await
        .unwrap();
    let mut h = Harness::new(|amqp, _| {
        amqp.retry.delays = vec![Duration::from_secs(30)];
    })
    .await;
    let toml = format!(
        "{}[policy]\nprobe_interval = \"30s\"\nguard_min_sends = 20\nguard_share = 0.5\n",
        apps_toml(Some(sim.addr), None, &dev_dir().join("apns-dev.p8"))
    );
    let daemon = Daemon::start(config_for(&h, &toml), Arc::new(Recorder::default()));
    daemon.ready().await;
    // 100 tokens APNs says belong to another topic: a wrong bundle id.
    h.publish_job(&apns_job("topic-job", 100, "70b1")).await;
    let mut out = Collected::default();
    let seen = collect_until(&mut h, &mut out, Duration::from_secs(30), |c| {
        c.results.len() >= 100
    })
    .await;
    assert!(seen, "{} entries", out.results.len());
    let alerts = daemon.policy.snapshot().alerts;
    assert_eq!(
        alerts,
        vec![(
            "shop".to_owned(),
            Platform::Apns,
            Code::DeviceTokenNotForTopic
        )]
    );
    assert!(
        out.results.iter().all(|e| e.status == Status::Retrying),
        "not one token is declared dead: {:?}",
        out.results.iter().find(|e| e.status != Status::Retrying)
    );
    assert!(out.feedback.is_empty(), "token feedback held back");
    assert!(sim.stats.requests() < 100, "paused once tripped");
    daemon.shutdown().await;
    h.cleanup().await;
    sim.shutdown().await;
}
