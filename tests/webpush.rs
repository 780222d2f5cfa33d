//! The Web Push provider against the Web Push simulator over real TLS
//! HTTP/2: the decrypted payload, VAPID, every scripted outcome's code, the
//! local size limit, and interop with an independent implementation
//! (the PyPI package `http-ece`, run through python3). HTTP/1.1 push
//! services and the allowed origins are in `webpush_http1.rs`.

// Test helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod webpush_support;

use std::io::Write;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use pushgate::outcome::{Class, Code};
use pushgate::provider::webpush::crypto::MAX_PLAINTEXT;
use pushgate::provider::webpush::transport::Protocol;
use pushgate::sim::webpush as sim;
use webpush_support::{
    assert_scripted_outcomes, authority, expected_payload, job, provider, simulator,
};

#[tokio::test]
async fn decrypted_payload_is_what_the_job_asked_for() {
    let sim = simulator(false).await;
    let p = provider("vapid-dev.p8", &sim.base_url());
    let sub = sim.subscribe("ok");
    let j = job(std::slice::from_ref(&sub));
    let out = p.send(&j, 0, 1).await;
    assert!(out.is_delivered(), "{out:?}");
    assert_eq!(out.provider_status, Some(201));
    assert!(out.provider_id.as_deref().unwrap().starts_with("/m/"));
    let got = sim.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(format!("{}{}", sim.base_url(), r.path), sub.endpoint);
    let payload: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(payload, expected_payload());
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.ttl, 3600);
    assert_eq!(r.urgency.as_deref(), Some("high"));
    assert_eq!(r.topic.as_deref(), Some("order-42"));
    assert_eq!(r.vapid.subject, "mailto:dev@example.com");
    assert_eq!(r.vapid.key, p.public_key());
    // One pool for the origin, reused by a second send; it speaks HTTP/2.
    assert!(p.send(&j, 0, 1).await.is_delivered());
    assert_eq!(p.origins(), 1);
    assert_eq!(p.protocol(&authority(&sim)), Some(Protocol::Http2));
    let stats = p.pool_stats();
    assert!(stats.open >= 1 && stats.in_flight == 0, "{stats:?}");
    p.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn dev_subscriptions_need_no_registration() {
    let sim = simulator(false).await;
    let p = provider("vapid-dev.p8", &sim.base_url());
    let (sub, _) = sim::dev_subscription(&sim.base_url(), "/demo/ada");
    let out = p.send(&job(&[sub]), 0, 1).await;
    assert!(out.is_delivered(), "{out:?}");
    assert_eq!(sim.received()[0].path, "/demo/ada");
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_vapid_key_is_invalid_credentials() {
    let sim = simulator(false).await;
    let p = provider("vapid-other.p8", &sim.base_url());
    let out = p.send(&job(&[sim.subscribe("ok")]), 0, 1).await;
    assert_eq!(out.code, Some(Code::InvalidCredentials), "{out:?}");
    assert_eq!(out.class(), Some(Class::Credentials));
    assert_eq!(out.provider_status, Some(403));
    assert_eq!(out.provider_reason.as_deref(), Some("VapidPkHashMismatch"));
    assert!(sim.received().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn every_scripted_outcome_gives_its_code() {
    let sim = simulator(false).await;
    let p = provider("vapid-dev.p8", &sim.base_url());
    assert_scripted_outcomes(&sim, &p).await;
    assert!(sim.received().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn oversized_payload_fails_locally_without_a_request() {
    let sim = simulator(false).await;
    let p = provider("vapid-dev.p8", &sim.base_url());
    let mut j = job(&[sim.subscribe("ok")]);
    j.notification.body = Some("x".repeat(MAX_PLAINTEXT));
    let out = p.send(&j, 0, 1).await;
    assert_eq!(out.code, Some(Code::PayloadTooLarge));
    assert_eq!(out.provider_status, None);
    assert!(sim.statuses().is_empty());
    assert_eq!(p.origins(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn unreachable_push_service_is_provider_unavailable() {
    let sim = simulator(false).await;
    let base = sim.base_url();
    sim.shutdown().await;
    let (sub, _) = sim::dev_subscription(&base, "/ok/x");
    let p = provider("vapid-dev.p8", &base);
    let out = p.send(&job(&[sub]), 0, 1).await;
    assert_eq!(out.code, Some(Code::ProviderUnavailable), "{out:?}");
}

const INTEROP_PY: &str = r#"
import sys, json, base64
try:
    import http_ece
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError as e:
    print("MISSING: " + str(e), file=sys.stderr)
    sys.exit(3)
d = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
e = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
inp = json.load(sys.stdin)
ua = ec.derive_private_key(int.from_bytes(d(inp["ua_private"]), "big"), ec.SECP256R1())
plain = http_ece.decrypt(d(inp["body"]), private_key=ua, auth_secret=d(inp["auth"]), version="aes128gcm")
sender = ec.generate_private_key(ec.SECP256R1())
enc = http_ece.encrypt(d(inp["message"]), private_key=sender, dh=d(inp["ua_public"]),
                       auth_secret=d(inp["auth"]), version="aes128gcm")
print(json.dumps({"plain": e(plain), "encrypted": e(enc)}))
"#;

/// Runs [`INTEROP_PY`]; fails the test with the install command when
/// python3 or http-ece is missing.
fn http_ece(input: &serde_json::Value) -> serde_json::Value {
    let help = "install the interop dependency: python3 -m pip install http-ece==1.2.1";
    let mut child = Command::new("python3")
        .args(["-c", INTEROP_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {help}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(3),
        "python package missing ({}); {help}",
        stderr.trim()
    );
    assert!(out.status.success(), "http_ece failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn http_ece_decrypts_what_we_send_and_we_decrypt_what_it_sends() {
    let sim = simulator(false).await;
    let p = provider("vapid-dev.p8", &sim.base_url());
    let (sub, keys) = sim::mint_subscription(&sim.base_url(), "ok");
    let path = sub.endpoint[sim.base_url().len()..].to_owned();
    sim.register(&path, keys.clone());
    let j = job(&[sub]);
    assert!(p.send(&j, 0, 1).await.is_delivered());
    let sent = sim.received().pop().unwrap();
    let message = "Grüße from http_ece 🍉";
    let result = http_ece(&serde_json::json!({
        "body": B64.encode(&sent.body),
        "ua_private": B64.encode(keys.private_scalar()),
        "ua_public": B64.encode(keys.public),
        "auth": B64.encode(keys.auth),
        "message": B64.encode(message),
    }));
    let plain = B64.decode(result["plain"].as_str().unwrap()).unwrap();
    assert_eq!(plain, sent.payload);
    let theirs = B64.decode(result["encrypted"].as_str().unwrap()).unwrap();
    assert_eq!(keys.decrypt(&theirs).unwrap(), message.as_bytes());
    sim.shutdown().await;
}
