//! The admin server beside the daemon on the real RabbitMQ: readiness
//! follows the broker and the drain, and the events queue feeds the
//! counters (bad batches dead-lettered). The `Scripted` deliver only
//! stands in for providers in these AMQP-mechanics tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_support;
mod amqp_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use admin_support::{http, sample, wait_status};
use amqp_support::{job, Harness, Scripted};
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use pushgate::app::{self, Status};
use pushgate::config::Secret;
use pushgate::telemetry::admin::{AdminServer, AdminState};
use pushgate::telemetry::events::EventSink;

async fn admin(status: &Arc<Status>) -> AdminServer {
    let state = AdminState {
        events: EventSink::new(["shop".to_owned()], Arc::clone(&status.telemetry)),
        status: Arc::clone(status),
        pools: None,
        control: None,
        admin_token: None,
        events_token: None,
    };
    AdminServer::start(([127, 0, 0, 1], 0).into(), state)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_during_drain() {
    let h = Harness::new(|_, d| d.drain_timeout = Duration::from_secs(3)).await;
    let deliver = Arc::new(Scripted::default());
    let daemon = h.start(Arc::clone(&deliver));
    let server = admin(&daemon.status).await;
    let a = server.addr;
    let body = wait_status(a, "/readyz", 200).await;
    assert!(body.contains(r#""broker_connected":true"#), "{body}");
    let (_, text) = http(a, "GET /metrics HTTP/1.1", "").await;
    let consumers = format!("pushgate_queue_consumers{{queue=\"{}\"}}", h.input());
    assert_eq!(sample(&text, &consumers), Some(1.0), "{text}");
    assert_eq!(sample(&text, "pushgate_ready"), Some(1.0));

    // A job that outlives the drain deadline keeps the daemon draining.
    h.publish_job(&job("j-hang", &["hang-1"])).await;
    while daemon.status.jobs_received.load(Ordering::SeqCst) < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Arc::clone(&daemon.status);
    let stopping = tokio::spawn(daemon.shutdown());
    let body = wait_status(a, "/readyz", 503).await;
    assert!(!stopping.is_finished(), "still draining when not ready");
    assert!(body.contains(r#""draining":true"#), "{body}");
    let (_, text) = http(a, "GET /metrics HTTP/1.1", "").await;
    assert_eq!(sample(&text, "pushgate_ready"), Some(0.0));
    stopping.await.unwrap().unwrap();
    let (_, text) = http(a, "GET /metrics HTTP/1.1", "").await;
    assert_eq!(sample(&text, &consumers), Some(0.0), "{text}");
    assert_eq!(sample(&text, "pushgate_broker_connected"), Some(0.0));
    let requeued = format!("pushgate_jobs_requeued_total{{queue=\"{}\"}}", h.input());
    assert_eq!(sample(&text, &requeued), Some(1.0), "{text}");
    assert_eq!(status.jobs_requeued.load(Ordering::SeqCst), 1);
    server.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_broker_is_unreachable() {
    let h = Harness::new(|_, _| {}).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = h.config();
    config.amqp.url = Secret::new(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
    let status = Arc::new(Status::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(app::run(
        config,
        Arc::new(Scripted::default()),
        async move {
            let _ = stopped.await;
        },
        Arc::clone(&status),
    ));
    let server = admin(&status).await;
    // Several reconnect attempts (200 ms .. 2 s backoff) happen meanwhile.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(http(server.addr, "GET /healthz HTTP/1.1", "").await.0, 200);
    let (code, body) = http(server.addr, "GET /readyz HTTP/1.1", "").await;
    assert_eq!(code, 503);
    assert!(body.contains(r#""broker_connected":false"#), "{body}");
    assert!(!daemon.is_finished(), "the daemon keeps trying");
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
    server.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_queue_feeds_counters_and_dead_letters_bad_batches() {
    let mut h = Harness::new(|_, _| {}).await;
    let daemon = h.start(Arc::new(Scripted::default()));
    let server = admin(&daemon.status).await;
    wait_status(server.addr, "/readyz", 200).await;
    let publish = |body: &'static str| {
        let ch = h.ch.clone();
        let queue = h.amqp.events_queue.clone();
        async move {
            ch.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    publish(r#"{"events": [{"type": "click", "app": "shop", "platform": "apns", "campaign": "q1", "notification_id": "a"}, {"type": "click", "app": "nope", "platform": "apns", "notification_id": "b"}]}"#).await;
    publish(r#"{"events": [{"type": "impression", "app": "shop", "platform": "apns", "campaign": "q1", "notification_id": "a"}, {"type": "click", "app": "shop", "platform": "apns", "campaign": "q1", "notification_id": "a"}]}"#).await;
    let dead = h.dead_letters(1, Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "bad-events");
    let stats = &daemon.status.telemetry.campaigns;
    for _ in 0..200 {
        if stats.get("q1").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let q1 = stats.get("q1").expect("the good batch was applied");
    assert_eq!(
        (q1.impressions, q1.clicks),
        (1, 1),
        "the bad batch changed nothing"
    );
    let (_, text) = http(server.addr, "GET /metrics HTTP/1.1", "").await;
    let clicks = r#"pushgate_clicks_total{app="shop",platform="apns"}"#;
    assert_eq!(sample(&text, clicks), Some(1.0), "{text}");
    let rejected = r#"pushgate_events_rejected_total{reason="unknown-app"}"#;
    assert_eq!(sample(&text, rejected), Some(1.0));
    let dead_metric = r#"pushgate_dead_lettered_total{reason="bad-events"}"#;
    assert_eq!(sample(&text, dead_metric), Some(1.0));
    let consumers = format!(
        "pushgate_queue_consumers{{queue=\"{}\"}}",
        h.amqp.events_queue
    );
    assert_eq!(sample(&text, &consumers), Some(1.0));
    daemon.shutdown().await.unwrap();
    server.stop().await;
    h.cleanup().await;
}
