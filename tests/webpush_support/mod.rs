//! Shared helpers of the Web Push integration tests: a provider for the
//! simulator's origin, the simulator in either protocol mode, a sample job.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pushgate::config::webpush_origins::AllowedOrigins;
use pushgate::config::{ConnectionConfig, Endpoint, Secret, WebPushConfig, WEBPUSH_ANY_ORIGIN};
use pushgate::job::{Job, WebPushSubscription};
use pushgate::outcome::{Class, Code};
use pushgate::provider::webpush::WebPushProvider;
use pushgate::sim::webpush::{self as sim, WebPushSimHandle, WebPushSimOptions};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

pub fn dev(name: &str) -> String {
    format!("{}/config/dev/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The provider's config: `vapid_file` from config/dev, `allowed` origins,
/// the dev CA, short timeouts.
pub fn config(vapid_file: &str, allowed: &[String]) -> WebPushConfig {
    let pem = std::fs::read(dev(vapid_file)).unwrap();
    WebPushConfig {
        vapid_key: Secret::new(pushgate::config::webpush::vapid_key(&pem).unwrap()),
        subject: "mailto:dev@example.com".into(),
        token_ttl: Duration::from_secs(12 * 3600),
        connection: ConnectionConfig {
            endpoint: Endpoint::parse(WEBPUSH_ANY_ORIGIN).unwrap(),
            connections: 1,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            extra_ca: vec![CertificateDer::from_pem_file(dev("ca.pem")).unwrap()],
            client_cert: None,
        },
        allowed_origins: AllowedOrigins::parse(allowed).unwrap(),
        http1_connections: 16,
    }
}

/// A provider allowed to send to `base` (`https://127.0.0.1:<port>`) only.
pub fn provider(vapid_file: &str, base: &str) -> WebPushProvider {
    WebPushProvider::new(&config(vapid_file, &[base.to_owned()])).unwrap()
}

/// The simulator on a free port, HTTP/2 (or HTTP/1.1 only).
pub async fn simulator(http1_only: bool) -> WebPushSimHandle {
    let opts = WebPushSimOptions {
        http1_only,
        ..WebPushSimOptions::default()
    };
    sim::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap()
}

/// `host:port` of the simulator, as the provider keys its origins.
pub fn authority(sim: &WebPushSimHandle) -> String {
    sim.addr().to_string()
}

/// A job to `subs` with every field Web Push carries.
pub fn job(subs: &[WebPushSubscription]) -> Job {
    let recipients: Vec<_> = subs
        .iter()
        .map(|s| serde_json::json!({"platform": "webpush", "subscription": s, "vars": {"name": "Ada"}}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "app": "shop",
        "recipients": recipients,
        "notification": {"title": "Hi {{name}}", "body": "Your order shipped",
                         "image": "https://img.example/p.png", "deeplink": "https://shop.example/o/42"},
        "data": {"order": "42"},
        "collapse_key": "order-42",
        "priority": "high",
        "ttl": 3600
    }))
    .unwrap()
}

/// The notification JSON [`job`] should decrypt to.
pub fn expected_payload() -> serde_json::Value {
    serde_json::json!({
        "title": "Hi Ada", "body": "Your order shipped", "image": "https://img.example/p.png",
        "url": "https://shop.example/o/42", "tag": "order-42", "data": {"order": "42"}
    })
}

/// Sends to each scripted path of the simulator (`/gone`, `/notfound`,
/// `/busy`, `/down`) through `p` and checks the code, class, status and
/// Retry-After each must give; none of them is received as delivered.
pub async fn assert_scripted_outcomes(sim: &WebPushSimHandle, p: &WebPushProvider) {
    let cases = [
        ("gone", 410, Code::BrowserUnsubscribed, Class::Token),
        ("notfound", 404, Code::BrowserUnsubscribed, Class::Token),
        ("busy", 429, Code::QuotaExceeded, Class::Retry),
        ("down", 503, Code::ProviderUnavailable, Class::Retry),
    ];
    for (prefix, status, code, class) in cases {
        let out = p.send(&job(&[sim.subscribe(prefix)]), 0, 1).await;
        assert_eq!(out.code, Some(code), "{prefix}: {out:?}");
        assert_eq!(out.class(), Some(class), "{prefix}");
        assert_eq!(out.provider_status, Some(status), "{prefix}");
        let retry = (prefix == "busy").then(|| Duration::from_secs(sim::BUSY_RETRY_AFTER));
        assert_eq!(out.retry_after, retry, "{prefix}");
    }
    assert!(sim.received().is_empty());
}
