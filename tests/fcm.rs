//! The FCM v1 provider against the FCM simulator over real TLS HTTP/2: every
//! error code's code and class, the OAuth2 token cache, what the simulator received.

// Test helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pushgate::config::{ConnectionConfig, Endpoint, FcmConfig, Secret, ServiceAccount};
use pushgate::job::Job;
use pushgate::outcome::{Class, Code, Outcome};
use pushgate::provider::fcm::reason::FcmErrorCode;
use pushgate::provider::fcm::FcmProvider;
use pushgate::provider::h2pool::H2Pool;
use pushgate::provider::{tls, Message, Rendered};
use pushgate::sim::fcm::{self as sim, FcmSimOptions};
use pushgate::sim::SimHandle;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

fn dev(file: &str) -> String {
    format!("{}/config/dev/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn config(addr: SocketAddr) -> FcmConfig {
    let sa: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dev("fcm-service-account.json")).unwrap()).unwrap();
    let s = |k: &str| sa[k].as_str().unwrap().to_owned();
    let key = PrivatePkcs8KeyDer::from_pem_slice(s("private_key").as_bytes()).unwrap();
    let token_uri = format!("https://{addr}/token");
    FcmConfig {
        project_id: s("project_id"),
        service_account: ServiceAccount {
            client_email: s("client_email"),
            private_key_id: s("private_key_id"),
            private_key: Secret::new(key.secret_pkcs8_der().to_vec()),
            project_id: s("project_id"),
            token_uri: token_uri.clone(),
        },
        token_uri,
        connection: ConnectionConfig {
            endpoint: Endpoint::parse(&format!("https://{addr}")).unwrap(),
            connections: 2,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(5),
            extra_ca: vec![CertificateDer::from_pem_file(dev("ca.pem")).unwrap()],
            client_cert: None,
        },
    }
}

fn provider(cfg: &FcmConfig) -> FcmProvider<H2Pool> {
    let tls = tls::client_config(&cfg.connection).unwrap();
    let send = H2Pool::new("fcm", &cfg.connection, tls.clone());
    let mut token_conn = cfg.connection.clone();
    token_conn.connections = 1;
    let token = Arc::new(H2Pool::new("fcm-oauth", &token_conn, tls));
    FcmProvider::new(send, token, cfg).unwrap()
}

async fn start_sim(opts: FcmSimOptions) -> SimHandle {
    sim::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap()
}

fn job(token: &str) -> Job {
    serde_json::from_value(serde_json::json!({
        "app": "shop",
        "recipients": [{"platform": "fcm", "token": token}],
        "notification": {"title": "Sale", "body": "50% off", "channel_id": "promo"},
        "data": {"order": "123"},
        "collapse_key": "sale",
        "priority": "normal",
        "ttl": 600
    }))
    .unwrap()
}

async fn send(p: &FcmProvider<H2Pool>, token: &str) -> Outcome {
    let job = job(token);
    let rendered = Rendered::for_recipient(&job, &job.recipients[0]);
    let id = pushgate::provider::new_notification_id();
    let msg = Message {
        job: &job,
        recipient: 0,
        rendered: &rendered,
        id: &id,
        attempt: 1,
    };
    p.send(&msg).await
}

/// design.md / protocols.md §6.2, written out: errorCode -> (code, class).
fn expected(code: &FcmErrorCode) -> (Code, Class) {
    match code.as_str() {
        "UNREGISTERED" | "UNREGISTERED_FID" => (Code::NotRegistered, Class::Token),
        "INVALID_ARGUMENT" => (Code::BadDeviceToken, Class::Token),
        "SENDER_ID_MISMATCH" => (Code::MismatchSenderId, Class::Token),
        "QUOTA_EXCEEDED" => (Code::QuotaExceeded, Class::Retry),
        "UNAVAILABLE" | "INTERNAL" | "UNSPECIFIED_ERROR" => {
            (Code::ProviderUnavailable, Class::Retry)
        }
        "THIRD_PARTY_AUTH_ERROR" | "APNS_AUTH_ERROR" => {
            (Code::InvalidCredentials, Class::Credentials)
        }
        other => panic!("no expectation for {other}"),
    }
}

#[tokio::test]
async fn every_error_code_gives_the_design_code_and_class() {
    let s = start_sim(FcmSimOptions::default()).await;
    let p = provider(&config(s.addr));
    for code in FcmErrorCode::KNOWN.iter() {
        let o = send(&p, &sim::forced_token(code)).await;
        let (want, class) = expected(code);
        assert_eq!(o.code, Some(want), "{}: {o:?}", code.as_str());
        assert_eq!(o.class(), Some(class), "{}", code.as_str());
        assert_eq!(o.provider_status, Some(code.http().0));
        assert_eq!(o.provider_reason.as_deref(), Some(code.as_str()));
    }
    s.shutdown().await;
}

#[tokio::test]
async fn scripted_tokens() {
    let s = start_sim(FcmSimOptions::default()).await;
    let p = provider(&config(s.addr));
    let cases = [
        ("unregistered-1", Code::NotRegistered),
        ("mismatch-1", Code::MismatchSenderId),
        ("invalid-1", Code::BadDeviceToken),
        ("unavailable-1", Code::ProviderUnavailable),
        ("thirdparty-1", Code::InvalidCredentials),
        ("http502-1", Code::ProviderUnavailable),
    ];
    for (token, code) in cases {
        assert_eq!(send(&p, token).await.code, Some(code), "{token}");
    }
    let o = send(&p, "quota-1").await;
    assert_eq!(o.code, Some(Code::QuotaExceeded));
    assert_eq!(o.retry_after, Some(Duration::from_secs(60)));
    assert_eq!(
        send(&p, "flaky-1").await.code,
        Some(Code::ProviderUnavailable)
    );
    assert!(send(&p, "flaky-1").await.is_delivered());
    s.shutdown().await;
}

#[tokio::test]
async fn the_access_token_is_cached_and_the_message_is_what_the_job_says() {
    let s = start_sim(FcmSimOptions::default()).await;
    let p = provider(&config(s.addr));
    for i in 0..20 {
        let o = send(&p, &format!("device-{i}")).await;
        assert!(o.is_delivered(), "{o:?}");
        assert!(o
            .provider_id
            .unwrap()
            .starts_with("projects/pushgate-dev/messages/"));
    }
    assert_eq!(s.stats.token_grants(), 1, "one token for 20 sends");
    let got = s.stats.last().unwrap();
    assert_eq!(got.path, "/v1/projects/pushgate-dev/messages:send");
    assert!(got.header("authorization").unwrap().starts_with("Bearer "));
    let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    let m = &body["message"];
    assert_eq!(m["token"], "device-19");
    assert_eq!(
        m["notification"],
        serde_json::json!({"title": "Sale", "body": "50% off"})
    );
    assert_eq!(m["data"], serde_json::json!({"order": "123"}));
    assert_eq!(m["android"]["collapse_key"], "sale");
    assert_eq!(m["android"]["priority"], "NORMAL");
    assert_eq!(m["android"]["ttl"], "600s");
    assert_eq!(m["android"]["notification"]["channel_id"], "promo");
    assert_eq!(m["apns"]["headers"]["apns-priority"], "5");
    assert_eq!(m["webpush"]["headers"]["TTL"], "600");
    s.shutdown().await;
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed() {
    // 302 s tokens are refreshed 5 min early: 2 s after they were issued.
    let s = start_sim(FcmSimOptions {
        token_lifetime: Duration::from_secs(302),
        ..FcmSimOptions::default()
    })
    .await;
    let p = provider(&config(s.addr));
    assert!(send(&p, "a").await.is_delivered());
    assert!(send(&p, "b").await.is_delivered());
    assert_eq!(s.stats.token_grants(), 1);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(send(&p, "c").await.is_delivered());
    assert_eq!(s.stats.token_grants(), 2);
    s.shutdown().await;
}

#[tokio::test]
async fn a_refused_access_token_is_replaced_once() {
    let s = start_sim(FcmSimOptions::default()).await;
    let addr = s.addr;
    let p = provider(&config(addr));
    assert!(send(&p, "a").await.is_delivered());
    // A new simulator on the same port has never issued our cached token.
    s.shutdown().await;
    let s = sim::start(addr, FcmSimOptions::default()).await.unwrap();
    let o = send(&p, "b").await;
    assert!(o.is_delivered(), "{o:?}");
    assert_eq!(s.stats.token_grants(), 1);
    assert_eq!(s.stats.responses(401), 1);
    s.shutdown().await;
}
