//! Web Push to push services that speak only HTTP/1.1 (the simulator in its
//! HTTP/1.1 mode): delivery with the decrypted payload, keep-alive reuse,
//! the connection bound, every scripted outcome's code, VAPID, timeouts;
//! and the allowed-origins guard (no request to an origin not allowed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod webpush_support;

use std::sync::Arc;
use std::time::Duration;

use pushgate::outcome::{Class, Code};
use pushgate::provider::webpush::transport::Protocol;
use pushgate::provider::webpush::WebPushProvider;
use pushgate::sim::webpush as sim;
use tokio::io::AsyncReadExt;
use webpush_support::{
    assert_scripted_outcomes, authority, config, expected_payload, job, provider, simulator,
};

#[tokio::test]
async fn http1_push_service_gets_the_payload_over_one_kept_alive_connection() {
    let sim = simulator(true).await;
    let p = provider("vapid-dev.p8", &sim.base_url());
    let sub = sim.subscribe("ok");
    let j = job(std::slice::from_ref(&sub));
    for _ in 0..3 {
        let out = p.send(&j, 0, 1).await;
        assert!(out.is_delivered(), "{out:?}");
        assert_eq!(out.provider_status, Some(201));
        assert!(out.provider_id.as_deref().unwrap().starts_with("/m/"));
    }
    assert_eq!(p.protocol(&authority(&sim)), Some(Protocol::Http1));
    let got = sim.received();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.version, http::Version::HTTP_11);
        assert_eq!(format!("{}{}", sim.base_url(), r.path), sub.endpoint);
        let payload: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(payload, expected_payload());
        assert_eq!((r.ttl, r.urgency.as_deref()), (3600, Some("high")));
        assert_eq!(r.topic.as_deref(), Some("order-42"));
        assert_eq!(r.vapid.key, p.public_key());
    }
    // The connection that found out the protocol carried all three.
    assert_eq!(sim.connections(), 1);
    let stats = p.pool_stats();
    assert_eq!((stats.open, stats.in_flight), (1, 0), "{stats:?}");
    assert_eq!(stats.connects_total, 1);
    p.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn http1_scripted_outcomes_and_wrong_vapid_key_give_their_codes() {
    let sim = simulator(true).await;
    let p = provider("vapid-dev.p8", &sim.base_url());
    assert_scripted_outcomes(&sim, &p).await;
    let other = provider("vapid-other.p8", &sim.base_url());
    let out = other.send(&job(&[sim.subscribe("ok")]), 0, 1).await;
    assert_eq!(out.code, Some(Code::InvalidCredentials), "{out:?}");
    assert_eq!(out.provider_reason.as_deref(), Some("VapidPkHashMismatch"));
    assert!(sim.received().is_empty());
    // Error answers keep the connection alive too: one per provider.
    assert_eq!(sim.connections(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn http1_connections_are_bounded_per_origin() {
    let sim = simulator(true).await;
    let mut cfg = config("vapid-dev.p8", &[sim.base_url()]);
    cfg.http1_connections = 2;
    let p = Arc::new(WebPushProvider::new(&cfg).unwrap());
    let subs: Vec<_> = (0..24).map(|_| sim.subscribe("ok")).collect();
    let j = Arc::new(job(&subs));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..subs.len() {
        let (p, j) = (Arc::clone(&p), Arc::clone(&j));
        tasks.spawn(async move { p.send(&j, i, 1).await });
    }
    while let Some(out) = tasks.join_next().await {
        let out = out.unwrap();
        assert!(out.is_delivered(), "{out:?}");
    }
    assert_eq!(sim.received().len(), 24);
    let peak = sim.peak_connections();
    assert!((1..=2).contains(&peak), "{peak} connections open at once");
    // Kept alive: no connection was opened beyond the bound.
    assert!(sim.connections() <= 2, "{} connections", sim.connections());
    p.shutdown().await;
    sim.shutdown().await;
}

/// A TLS server that negotiates HTTP/1.1, reads requests and never answers.
async fn silent_http1_server() -> std::net::SocketAddr {
    let mut tls = (*pushgate::sim::dev::server_tls()).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 4096];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn http1_request_timeout_is_provider_unavailable() {
    let addr = silent_http1_server().await;
    let base = format!("https://{addr}");
    let mut cfg = config("vapid-dev.p8", std::slice::from_ref(&base));
    cfg.connection.request_timeout = Duration::from_millis(300);
    let p = WebPushProvider::new(&cfg).unwrap();
    let (sub, _) = sim::dev_subscription(&base, "/ok/slow");
    let out = p.send(&job(&[sub]), 0, 1).await;
    assert_eq!(out.code, Some(Code::ProviderUnavailable), "{out:?}");
    assert_eq!(out.provider_status, None);
    assert!(
        out.provider_reason
            .as_deref()
            .unwrap()
            .contains("timed out"),
        "{out:?}"
    );
    assert_eq!(p.protocol(&addr.to_string()), Some(Protocol::Http1));
}

#[tokio::test]
async fn origins_not_allowed_get_invalid_payload_without_a_request() {
    let sim = simulator(false).await;
    let port = sim.addr().port();
    // The default list (the browsers' push services) and a near miss.
    for allowed in [
        vec!["@default".to_owned()],
        vec![
            format!("localhost:{port}"),
            format!("127.0.0.1:{}", port + 1),
        ],
        vec!["*".to_owned()],
    ] {
        let p = WebPushProvider::new(&config("vapid-dev.p8", &allowed)).unwrap();
        let out = p.send(&job(&[sim.subscribe("ok")]), 0, 1).await;
        assert_eq!(out.code, Some(Code::InvalidPayload), "{allowed:?}: {out:?}");
        assert_eq!(out.class(), Some(Class::Payload));
        assert_eq!(out.provider_status, None);
        let reason = out.provider_reason.unwrap();
        assert!(
            reason.contains(&format!("127.0.0.1:{port} is an IP address or localhost")),
            "{reason}"
        );
        assert_eq!(p.origins(), 0);
    }
    assert_eq!(sim.connections(), 0);
    assert!(sim.statuses().is_empty());
    sim.shutdown().await;
}
