//! Collapse keys, priorities and expiry as each simulator received them,
//! through the real gateway (issue 4 item 4), and Expired before send.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod amqp_support;
mod policy_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use policy_support::{apps_toml, dev_dir, load};
use pushgate::dispatch::gateway::Gateway;
use pushgate::dispatch::{Deliver, Dispatcher, JobRun};
use pushgate::ingest::retry::RetryPolicy;
use pushgate::job::Job;
use pushgate::outcome::Code;
use pushgate::sim::{apns, fcm, webpush};

fn local() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn job(v: serde_json::Value) -> Arc<Job> {
    let j: Job = serde_json::from_value(v).unwrap();
    j.validate().unwrap();
    Arc::new(j)
}

#[tokio::test]
async fn apns_headers_carry_collapse_id_priority_and_absolute_expiration() {
    let sim = apns::start(local(), apns::ApnsSimOptions::default())
        .await
        .unwrap();
    let cfg = load(&apps_toml(
        Some(sim.addr),
        None,
        &dev_dir().join("apns-dev.p8"),
    ));
    let gw = Gateway::new(&cfg).unwrap();
    let token = apns::scripted_token("ab");
    let normal = job(serde_json::json!({
        "app": "shop", "recipients": [{"platform": "apns", "token": token}],
        "notification": {"title": "T"}, "collapse_key": "order-123", "priority": "normal", "ttl": 600
    }));
    assert!(gw.deliver(&normal, 0, 1).await.is_delivered());
    let got = sim.stats.last().unwrap();
    assert_eq!(got.header("apns-collapse-id"), Some("order-123"));
    assert_eq!(got.header("apns-priority"), Some("5"));
    let exp: u64 = got.header("apns-expiration").unwrap().parse().unwrap();
    let now = now_secs();
    assert!(
        (now + 590..=now + 610).contains(&exp),
        "absolute epoch seconds: {exp}"
    );

    // A background push goes out with priority 5 even when the job says high.
    let background = job(serde_json::json!({
        "app": "shop", "recipients": [{"platform": "apns", "token": token}],
        "push_type": "background", "content_available": true, "priority": "high",
        "expires_at": "2999-01-01T00:00:00Z"
    }));
    let o = gw.deliver(&background, 0, 1).await;
    assert!(o.is_delivered(), "{o:?}");
    let got = sim.stats.last().unwrap();
    assert_eq!(got.header("apns-priority"), Some("5"));
    assert_eq!(got.header("apns-push-type"), Some("background"));
    assert_eq!(got.header("apns-expiration"), Some("32472144000"));
    assert_eq!(got.header("apns-collapse-id"), None);

    let high = job(serde_json::json!({
        "app": "shop", "recipients": [{"platform": "apns", "token": token}],
        "notification": {"title": "T"}, "collapse_key": "x".repeat(64)
    }));
    assert!(
        gw.deliver(&high, 0, 1).await.is_delivered(),
        "64 bytes is the limit"
    );
    let got = sim.stats.last().unwrap();
    assert_eq!(got.header("apns-priority"), Some("10"));
    assert_eq!(got.header("apns-expiration"), None, "no ttl: APNs default");
    gw.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn fcm_message_carries_android_and_apns_block_fields() {
    let sim = fcm::start(local(), fcm::FcmSimOptions::default())
        .await
        .unwrap();
    let cfg = load(&apps_toml(
        None,
        Some(sim.addr),
        &dev_dir().join("apns-dev.p8"),
    ));
    let gw = Gateway::new(&cfg).unwrap();
    let j = job(serde_json::json!({
        "app": "shop", "recipients": [{"platform": "fcm", "token": "device-1"}],
        "notification": {"title": "T"}, "collapse_key": "order-9", "priority": "high", "ttl": 300
    }));
    assert!(gw.deliver(&j, 0, 1).await.is_delivered());
    let sent = sim.stats.recent();
    let got = sent
        .iter()
        .rev()
        .find(|r| r.path.ends_with(":send"))
        .unwrap();
    let m = &got.json()["message"];
    assert_eq!(m["android"]["collapse_key"], "order-9");
    assert_eq!(m["android"]["priority"], "HIGH");
    assert_eq!(m["android"]["ttl"], "300s");
    let h = &m["apns"]["headers"];
    assert_eq!(h["apns-collapse-id"], "order-9");
    assert_eq!(h["apns-priority"], "10");
    let exp: u64 = h["apns-expiration"].as_str().unwrap().parse().unwrap();
    let now = now_secs();
    assert!((now + 290..=now + 310).contains(&exp), "{exp}");

    let normal = job(serde_json::json!({
        "app": "shop", "recipients": [{"platform": "fcm", "token": "device-2"}],
        "notification": {"title": "T"}, "priority": "normal", "expires_at": "2999-01-01T00:00:00Z"
    }));
    assert!(gw.deliver(&normal, 0, 1).await.is_delivered());
    let got = sim.stats.last().unwrap();
    let m = &got.json()["message"];
    assert_eq!(m["android"]["priority"], "NORMAL");
    assert_eq!(m["apns"]["headers"]["apns-priority"], "5");
    // The time left until expires_at, within FCM's 28-day limit.
    assert_eq!(m["android"]["ttl"], "2419200s");
    assert_eq!(m["apns"]["headers"]["apns-expiration"], "32472144000");
    assert!(m["android"].get("collapse_key").is_none());
    gw.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn web_push_request_carries_topic_urgency_and_ttl() {
    let sim = webpush::start(local(), webpush::WebPushSimOptions::default())
        .await
        .unwrap();
    let toml = format!(
        "[apps.shop.webpush]\nvapid_key_file = \"vapid-dev.p8\"\nsubject = \"mailto:t@example.com\"\n\
         ca_file = \"ca.pem\"\nallowed_origins = [\"{}\"]\n",
        sim.addr()
    );
    let gw = Gateway::new(&load(&toml)).unwrap();
    let sub = sim.subscribe("/ok");
    let j = job(serde_json::json!({
        "app": "shop", "recipients": [{"platform": "webpush", "subscription": sub}],
        "notification": {"title": "T"}, "collapse_key": "order-9", "priority": "normal", "ttl": 120
    }));
    let o = gw.deliver(&j, 0, 1).await;
    assert!(o.is_delivered(), "{o:?}");
    let got = sim.received();
    let r = got.last().unwrap();
    assert_eq!(r.topic.as_deref(), Some("order-9"));
    assert_eq!(r.urgency.as_deref(), Some("normal"));
    assert_eq!(r.ttl, 120);
    gw.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_job_is_not_sent() {
    let sim = fcm::start(local(), fcm::FcmSimOptions::default())
        .await
        .unwrap();
    let cfg = load(&apps_toml(
        None,
        Some(sim.addr),
        &dev_dir().join("apns-dev.p8"),
    ));
    let gw = Arc::new(Gateway::new(&cfg).unwrap());
    let d = Dispatcher::new(Arc::clone(&gw), Arc::new(RetryPolicy::new(&cfg.amqp.retry)));
    let j = job(serde_json::json!({
        "app": "shop", "recipients": [{"platform": "fcm", "token": "device-1"}],
        "notification": {"title": "T"}, "expires_at": "2020-01-01T00:00:00Z"
    }));
    let run = JobRun {
        job: j,
        job_id: "j".into(),
        attempt: 1,
        first_received: SystemTime::now(),
        expires: Some(UNIX_EPOCH + Duration::from_secs(1_577_836_800)),
    };
    let s = d.dispatch(&run, &tokio::sync::Semaphore::new(4)).await;
    assert_eq!(s.entries[0].code, Some(Code::Expired));
    assert_eq!(sim.stats.requests(), 0, "nothing reached the provider");
    gw.shutdown().await;
    sim.shutdown().await;
}
