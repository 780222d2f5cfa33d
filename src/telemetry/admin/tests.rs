//! The admin server over real HTTP on 127.0.0.1:0, with a test double for
//! campaign control (the real publisher is exercised by the integration tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{AdminServer, AdminState};
use crate::app::Status;
use crate::config::Secret;
use crate::telemetry::control::{CampaignControl, ControlFuture};
use crate::telemetry::events::EventSink;

/// Records calls; fails for campaign "broken".
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(bool, String)>>,
}

impl CampaignControl for Recorder {
    fn stop<'a>(&'a self, campaign: &'a str) -> ControlFuture<'a> {
        self.calls.lock().unwrap().push((true, campaign.to_owned()));
        let failed = campaign == "broken";
        Box::pin(async move {
            if failed {
                Err("broker down".into())
            } else {
                Ok(())
            }
        })
    }

    fn resume<'a>(&'a self, campaign: &'a str) -> ControlFuture<'a> {
        self.calls
            .lock()
            .unwrap()
            .push((false, campaign.to_owned()));
        Box::pin(async { Ok(()) })
    }
}

/// One HTTP/1.1 exchange: (status, body).
async fn http(addr: std::net::SocketAddr, req: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{req}\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

struct Server {
    server: AdminServer,
    status: Arc<Status>,
    control: Arc<Recorder>,
}

async fn start(tokens: bool, control: bool) -> Server {
    let status = Arc::new(Status::default());
    let recorder = Arc::new(Recorder::default());
    let state = AdminState {
        events: EventSink::new(["shop".to_owned()], Arc::clone(&status.telemetry)),
        status: Arc::clone(&status),
        pools: None,
        control: control.then(|| Arc::clone(&recorder) as Arc<dyn CampaignControl>),
        admin_token: tokens.then(|| Secret::new("adm".to_owned())),
        events_token: tokens.then(|| Secret::new("ev".to_owned())),
    };
    let server = AdminServer::start(([127, 0, 0, 1], 0).into(), state)
        .await
        .unwrap();
    Server {
        server,
        status,
        control: recorder,
    }
}

const BATCH: &str = r#"{"events": [
  {"type": "impression", "app": "shop", "platform": "fcm", "campaign": "spring sale", "notification_id": "n1"},
  {"type": "impression", "app": "shop", "platform": "fcm", "campaign": "spring sale", "notification_id": "n2"},
  {"type": "click", "app": "shop", "platform": "fcm", "campaign": "spring sale", "notification_id": "n1"}]}"#;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = start(false, false).await;
    let a = s.server.addr;
    assert_eq!(
        http(a, "GET /healthz HTTP/1.1", "").await,
        (200, "ok\n".into())
    );
    let (code, body) = http(a, "GET /readyz HTTP/1.1", "").await;
    assert_eq!(code, 503);
    assert!(body.contains(r#""ready":false"#), "{body}");
    s.status
        .ready
        .store(true, std::sync::atomic::Ordering::SeqCst);
    s.status
        .broker_connected
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(http(a, "GET /readyz HTTP/1.1", "").await.0, 200);
    let (code, text) = http(a, "GET /metrics HTTP/1.1", "").await;
    assert_eq!(code, 200);
    assert!(text.contains("pushgate_ready 1"), "{text}");
    assert!(text.contains("pushgate_broker_connected 1"));
    assert_eq!(http(a, "POST /metrics HTTP/1.1", "").await.0, 405);
    assert_eq!(http(a, "GET /nope HTTP/1.1", "").await.0, 404);
    s.server.stop().await;
}

#[tokio::test]
async fn event_batches_move_counters_and_stats_or_nothing() {
    let s = start(false, false).await;
    let a = s.server.addr;
    let (code, body) = http(a, "POST /v1/events HTTP/1.1", BATCH).await;
    assert_eq!((code, body.as_str()), (200, r#"{"accepted":3}"#));
    let (code, body) = http(a, "GET /v1/campaigns/spring%20sale HTTP/1.1", "").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["impressions"].as_u64(), v["clicks"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(v["rates"]["click"], 0.5);
    assert_eq!(v["scope"], "replica");

    let bad = BATCH.replace(r#""platform": "fcm", "campaign": "spring sale", "notification_id": "n2""#,
                            r#""platform": "fcm", "campaign": "spring sale", "notification_id": "n2", "user_id": "u-1""#);
    let (code, body) = http(a, "POST /v1/events HTTP/1.1", &bad).await;
    assert_eq!(code, 400);
    assert!(
        body.contains("invalid-event") && body.contains("user_id"),
        "{body}"
    );
    let (_, text) = http(a, "GET /metrics HTTP/1.1", "").await;
    assert!(
        text.contains(r#"pushgate_impressions_total{app="shop",platform="fcm"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"pushgate_events_rejected_total{reason="invalid-event"} 1"#));
    assert!(text.contains(r#"pushgate_campaign_clicks_total{campaign="spring sale"} 1"#));
    assert_eq!(
        s.status
            .telemetry
            .campaigns
            .get("spring sale")
            .unwrap()
            .impressions,
        2
    );
    assert_eq!(http(a, "GET /v1/campaigns/other HTTP/1.1", "").await.0, 404);
    assert_eq!(
        http(a, "GET /v1/campaigns/bad%zz HTTP/1.1", "").await.0,
        400
    );
    s.server.stop().await;
}

#[tokio::test]
async fn tokens_guard_events_and_control() {
    let s = start(true, true).await;
    let a = s.server.addr;
    assert_eq!(http(a, "POST /v1/events HTTP/1.1", BATCH).await.0, 401);
    let authed = "POST /v1/events HTTP/1.1\r\nAuthorization: Bearer ev";
    assert_eq!(http(a, authed, BATCH).await.0, 200);
    let (code, _) = http(a, "POST /v1/campaigns/spring/stop HTTP/1.1", "").await;
    assert_eq!(code, 401);
    let admin = |path: &str| format!("POST {path} HTTP/1.1\r\nAuthorization: Bearer adm");
    let (code, body) = http(a, &admin("/v1/campaigns/spring/stop"), "").await;
    assert_eq!(
        (code, body.as_str()),
        (202, r#"{"action":"stop","campaign":"spring"}"#)
    );
    assert_eq!(
        http(a, &admin("/v1/campaigns/spring/resume"), "").await.0,
        202
    );
    assert_eq!(
        http(a, &admin("/v1/campaigns/broken/stop"), "").await.0,
        502
    );
    assert_eq!(
        http(a, "GET /v1/campaigns/spring/stop HTTP/1.1", "")
            .await
            .0,
        405
    );
    let calls = s.control.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            (true, "spring".into()),
            (false, "spring".into()),
            (true, "broken".into())
        ]
    );
    let (_, text) = http(a, "GET /metrics HTTP/1.1", "").await;
    assert!(text.contains(r#"pushgate_events_rejected_total{reason="unauthorized"} 1"#));
    s.server.stop().await;
}

#[tokio::test]
async fn control_without_token_or_publisher_is_refused() {
    let s = start(false, true).await;
    let (code, body) = http(s.server.addr, "POST /v1/campaigns/x/stop HTTP/1.1", "").await;
    assert_eq!(code, 403, "{body}");
    s.server.stop().await;
    let t = start(true, false).await;
    let req = "POST /v1/campaigns/x/stop HTTP/1.1\r\nAuthorization: Bearer adm";
    let (code, body) = http(t.server.addr, req, "").await;
    assert_eq!(code, 503);
    assert!(body.contains("campaign control not configured"));
    t.server.stop().await;
}
