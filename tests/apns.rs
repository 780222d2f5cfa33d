//! The APNs provider against the APNs simulator over real TLS HTTP/2: every
//! reason's code and class, token reuse, what the simulator received.

// Test helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use pushgate::config::{
    ApnsAuth, ApnsConfig, ApnsEnvironment, ClientCert, ConnectionConfig, Endpoint, Secret,
};
use pushgate::job::Job;
use pushgate::outcome::{Class, Code, Outcome};
use pushgate::provider::apns::reason::ApnsReason;
use pushgate::provider::apns::ApnsProvider;
use pushgate::provider::h2pool::H2Pool;
use pushgate::provider::{tls, Message, Rendered};
use pushgate::sim::apns::{self as sim, ApnsSimOptions, ClientCerts};
use pushgate::sim::SimHandle;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn dev(file: &str) -> String {
    format!("{}/config/dev/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn connection(addr: SocketAddr) -> ConnectionConfig {
    ConnectionConfig {
        endpoint: Endpoint::parse(&format!("https://{addr}")).unwrap(),
        connections: 2,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(5),
        extra_ca: vec![CertificateDer::from_pem_file(dev("ca.pem")).unwrap()],
        client_cert: None,
    }
}

fn token_config(addr: SocketAddr, key_file: &str) -> ApnsConfig {
    let key = PrivatePkcs8KeyDer::from_pem_file(dev(key_file)).unwrap();
    ApnsConfig {
        auth: ApnsAuth::Token {
            team_id: "DEVTEAM001".into(),
            key_id: "DEVKEY0001".into(),
            key: Secret::new(key.secret_pkcs8_der().to_vec()),
            refresh: Duration::from_secs(45 * 60),
        },
        topic: "com.example.shop".into(),
        environment: ApnsEnvironment::Sandbox,
        connection: connection(addr),
    }
}

fn provider(cfg: &ApnsConfig) -> ApnsProvider<H2Pool> {
    let pool = H2Pool::new(
        "apns",
        &cfg.connection,
        tls::client_config(&cfg.connection).unwrap(),
    );
    ApnsProvider::new(pool, cfg).unwrap()
}

async fn start_sim(opts: ApnsSimOptions) -> SimHandle {
    sim::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap()
}

fn job(token: &str) -> Job {
    serde_json::from_value(serde_json::json!({
        "app": "shop",
        "recipients": [{"platform": "apns", "token": token, "vars": {"name": "Ann"}}],
        "notification": {"title": "Hi {{name}}", "body": "Your order shipped", "sound": "default",
                         "badge": 1, "thread_id": "orders"},
        "data": {"order": "123"},
        "collapse_key": "order-123",
        "ttl": 3600
    }))
    .unwrap()
}

async fn send_with_id(p: &ApnsProvider<H2Pool>, job: &Job, id: &str) -> Outcome {
    let rendered = Rendered::for_recipient(job, &job.recipients[0]);
    let msg = Message {
        job,
        recipient: 0,
        rendered: &rendered,
        id,
        attempt: 1,
    };
    p.send(&msg).await
}

async fn send(p: &ApnsProvider<H2Pool>, token: &str) -> Outcome {
    send_with_id(p, &job(token), &pushgate::provider::new_notification_id()).await
}

/// design.md's table, written out: reason -> (code, class).
fn design_table() -> HashMap<&'static str, (Code, Class)> {
    use Class::*;
    use Code::*;
    let mut t = HashMap::new();
    for r in [
        "BadCollapseId",
        "BadExpirationDate",
        "BadMessageId",
        "BadPriority",
        "DuplicateHeaders",
        "InvalidPushType",
        "PayloadEmpty",
        "BadPath",
        "MethodNotAllowed",
    ] {
        t.insert(r, (InvalidPayload, Payload));
    }
    for r in ["BadDeviceToken", "MissingDeviceToken"] {
        t.insert(r, (BadDeviceToken, Token));
    }
    t.insert("DeviceTokenNotForTopic", (DeviceTokenNotForTopic, Token));
    for r in ["BadTopic", "MissingTopic", "TopicDisallowed"] {
        t.insert(r, (TopicDisallowed, Credentials));
    }
    for r in [
        "BadCertificate",
        "BadCertificateEnvironment",
        "ExpiredProviderToken",
        "Forbidden",
        "InvalidProviderToken",
        "MissingProviderToken",
        "UnrelatedKeyIdInToken",
        "BadEnvironmentKeyIdInToken",
    ] {
        t.insert(r, (InvalidCredentials, Credentials));
    }
    for r in ["ExpiredToken", "Unregistered"] {
        t.insert(r, (NotRegistered, Token));
    }
    t.insert("PayloadTooLarge", (PayloadTooLarge, Payload));
    t.insert("TooManyRequests", (TemporarilyBlacklisted, Retry));
    for r in [
        "IdleTimeout",
        "TooManyProviderTokenUpdates",
        "InternalServerError",
        "ServiceUnavailable",
        "Shutdown",
    ] {
        t.insert(r, (ProviderUnavailable, Retry));
    }
    t
}

#[tokio::test]
async fn every_reason_gives_the_design_code_and_class() {
    let sim = start_sim(ApnsSimOptions::default()).await;
    let p = provider(&token_config(sim.addr, "apns-dev.p8"));
    let table = design_table();
    assert_eq!(table.len(), ApnsReason::KNOWN.len());
    for reason in ApnsReason::KNOWN.iter() {
        let token = sim::forced_token(reason).unwrap();
        let o = send(&p, &token).await;
        let (code, class) = table[reason.as_str()];
        assert_eq!(o.code, Some(code), "{reason}: {o:?}");
        assert_eq!(o.class(), Some(class), "{reason}");
        assert_eq!(o.provider_status, Some(reason.status()), "{reason}");
        assert_eq!(o.provider_reason.as_deref(), Some(reason.as_str()));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn connection_level_reasons_are_retried_once_on_a_new_connection() {
    let sim = start_sim(ApnsSimOptions::default()).await;
    let p = provider(&token_config(sim.addr, "apns-dev.p8"));
    assert!(send(&p, &sim::scripted_token("aa")).await.is_delivered());
    for reason in [
        ApnsReason::ExpiredProviderToken,
        ApnsReason::UnrelatedKeyIdInToken,
        ApnsReason::TooManyProviderTokenUpdates,
    ] {
        sim.stats.clear_recent();
        let token = sim::forced_token(&reason).unwrap();
        let o = send(&p, &token).await;
        assert_eq!(o.provider_reason.as_deref(), Some(reason.as_str()));
        let tries: Vec<_> = sim
            .stats
            .recent()
            .into_iter()
            .filter(|r| r.path.ends_with(&token))
            .collect();
        assert_eq!(tries.len(), 2, "{reason}: one retry");
        assert_ne!(
            tries[0].connection, tries[1].connection,
            "{reason}: retried on another connection"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_tokens() {
    let sim = start_sim(ApnsSimOptions::default()).await;
    let p = provider(&token_config(sim.addr, "apns-dev.p8"));
    let o = send(&p, &sim::scripted_token("dead")).await;
    assert_eq!(
        (o.code, o.provider_status),
        (Some(Code::NotRegistered), Some(410))
    );
    let o = send(&p, "not-hex").await;
    assert_eq!(o.code, Some(Code::BadDeviceToken));
    let flaky = format!("5031{}", "ab".repeat(30));
    assert_eq!(send(&p, &flaky).await.code, Some(Code::ProviderUnavailable));
    assert!(send(&p, &flaky).await.is_delivered());
    let o = send(&p, &sim::scripted_token("4290")).await;
    assert_eq!(o.code, Some(Code::TemporarilyBlacklisted));
    sim.shutdown().await;
}

#[tokio::test]
async fn the_simulator_receives_the_job_and_one_shared_jwt() {
    let sim = start_sim(ApnsSimOptions::default()).await;
    let p = provider(&token_config(sim.addr, "apns-dev.p8"));
    let token = sim::scripted_token("cafe");
    let id = "2f1d7c4e-8a3b-4c5d-9e6f-0a1b2c3d4e5f";
    let o = send_with_id(&p, &job(&token), id).await;
    assert!(o.is_delivered(), "{o:?}");
    assert_eq!(o.provider_id.as_deref(), Some(id));
    let got = sim.stats.last().unwrap();
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, format!("/3/device/{token}"));
    assert_eq!(got.header("apns-id"), Some(id));
    assert_eq!(got.header("apns-topic"), Some("com.example.shop"));
    assert_eq!(got.header("apns-push-type"), Some("alert"));
    assert_eq!(got.header("apns-priority"), Some("10"));
    assert_eq!(got.header("apns-collapse-id"), Some("order-123"));
    let exp: u64 = got.header("apns-expiration").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 3590..=now + 3610).contains(&exp), "absolute expiry");
    let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"aps": {"alert": {"title": "Hi Ann", "body": "Your order shipped"},
                                   "sound": "default", "badge": 1, "thread-id": "orders"},
                           "order": "123"})
    );
    for _ in 0..10 {
        assert!(send(&p, &token).await.is_delivered());
    }
    let bearers: std::collections::HashSet<String> = sim
        .stats
        .recent()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(bearers.len(), 1, "one JWT for every request and connection");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_key_is_invalid_credentials() {
    let sim = start_sim(ApnsSimOptions::default()).await;
    let p = provider(&token_config(sim.addr, "apns-other.p8"));
    let o = send(&p, &sim::scripted_token("aa")).await;
    assert_eq!(o.code, Some(Code::InvalidCredentials));
    assert_eq!(o.provider_reason.as_deref(), Some("InvalidProviderToken"));
    sim.shutdown().await;
}

#[tokio::test]
async fn certificate_auth_sends_no_authorization() {
    let sim = start_sim(ApnsSimOptions {
        client_certs: ClientCerts::Required,
        ..ApnsSimOptions::default()
    })
    .await;
    let mut cfg = token_config(sim.addr, "apns-dev.p8");
    cfg.auth = ApnsAuth::Certificate;
    cfg.connection.client_cert = Some(ClientCert {
        chain: CertificateDer::pem_file_iter(dev("apns-client.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect(),
        key: Secret::new(PrivateKeyDer::from_pem_file(dev("apns-client.key")).unwrap()),
    });
    let p = provider(&cfg);
    let o = send(&p, &sim::scripted_token("aa")).await;
    assert!(o.is_delivered(), "{o:?}");
    assert_eq!(sim.stats.last().unwrap().header("authorization"), None);
    sim.shutdown().await;
}

/// The provider against the simulator's benchmark mode (its own HTTP/2
/// loop, which the load test measures the gateway with): many concurrent
/// sends with a latency all come back delivered with the `apns-id` they
/// sent, and a key the simulator does not trust is still refused.
#[tokio::test]
async fn benchmark_mode_answers_many_concurrent_sends_with_their_ids() {
    let sim = start_sim(ApnsSimOptions {
        accept_all: true,
        latency: pushgate::sim::Latency::Fixed(Duration::from_millis(20)),
        ..Default::default()
    })
    .await;
    let p = std::sync::Arc::new(provider(&token_config(sim.addr, "apns-dev.p8")));
    let sends = (0..600).map(|i| {
        let p = p.clone();
        tokio::spawn(async move {
            let job = job(&sim::scripted_token(&format!("{i:04}")));
            let id = pushgate::provider::new_notification_id();
            let o = send_with_id(&p, &job, &id).await;
            (o, id)
        })
    });
    for s in futures_util::future::join_all(sends).await {
        let (o, id) = s.unwrap();
        assert!(o.is_delivered(), "{o:?}");
        assert_eq!(o.provider_id.as_deref(), Some(id.as_str()));
    }
    assert_eq!(sim.stats.responses(200), 600);
    assert!(sim.stats.max_peak_streams() > 1);
    sim.shutdown().await;

    let sim = start_sim(ApnsSimOptions {
        accept_all: true,
        trusted_keys: vec![],
        ..Default::default()
    })
    .await;
    let p = provider(&token_config(sim.addr, "apns-dev.p8"));
    let o = send(&p, &sim::scripted_token("ab")).await;
    assert_eq!(o.code, Some(Code::InvalidCredentials), "{o:?}");
    sim.shutdown().await;
}
