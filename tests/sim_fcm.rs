//! The FCM simulator (OAuth token endpoint + messages:send) driven over real TLS + HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "sim/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use http::Method;
use pushgate::provider::fcm::reason::FcmErrorCode;
use pushgate::sim::fcm::{self, forced_token, FcmSimOptions};
use serde_json::{json, Value};

const FORM: &str = "application/x-www-form-urlencoded";
const SEND: &str = "/v1/projects/pushgate-dev/messages:send";

type Send = h2::client::SendRequest<bytes::Bytes>;

async fn token_request(send: &mut Send, assertion: &str) -> Answer {
    let body = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    );
    request(
        send,
        Method::POST,
        "/token",
        &[("content-type", FORM)],
        body.as_bytes(),
    )
    .await
}

async fn access_token(send: &mut Send, addr: std::net::SocketAddr) -> String {
    let a = token_request(send, &fcm_assertion(fcm_claims(addr))).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    a.json()["access_token"].as_str().unwrap().to_owned()
}

async fn send_message(send: &mut Send, bearer: Option<&str>, path: &str, body: &Value) -> Answer {
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    request(
        send,
        Method::POST,
        path,
        &headers,
        body.to_string().as_bytes(),
    )
    .await
}

fn to_token(token: &str) -> Value {
    json!({"message": {"token": token, "notification": {"title": "t", "body": "b"}}})
}

fn error_code(a: &Answer) -> Option<String> {
    a.json()["error"]["details"]
        .as_array()?
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.firebase.fcm.v1.FcmError")
        .map(|d| d["errorCode"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn token_endpoint_grants_for_good_assertions_only() {
    let sim = fcm::start(local(), FcmSimOptions::default()).await.unwrap();
    let mut send = h2_connect(sim.addr).await;
    let a = token_request(&mut send, &fcm_assertion(fcm_claims(sim.addr))).await;
    assert_eq!(a.status, 200);
    let j = a.json();
    assert!(j["access_token"].as_str().unwrap().starts_with("ya29."));
    assert_eq!(
        (j["expires_in"].as_u64(), j["token_type"].as_str()),
        (Some(3599), Some("Bearer"))
    );

    let mut tampered = fcm_assertion(fcm_claims(sim.addr));
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let mut wrong_aud = fcm_claims(sim.addr);
    wrong_aud["aud"] = json!("https://elsewhere.example/token");
    let mut long_lived = fcm_claims(sim.addr);
    long_lived["exp"] = json!(now() + 7200);
    let mut bad_scope = fcm_claims(sim.addr);
    bad_scope["scope"] = json!("https://www.googleapis.com/auth/userinfo.email");
    let cases = [
        (tampered, "invalid_grant", "Invalid JWT Signature."),
        (
            fcm_assertion(wrong_aud),
            "invalid_grant",
            "Invalid JWT: Failed audience check.",
        ),
        (fcm_assertion(long_lived), "invalid_grant", ""),
        (fcm_assertion(bad_scope), "invalid_scope", ""),
    ];
    for (assertion, error, description) in cases {
        let a = token_request(&mut send, &assertion).await;
        assert_eq!(a.status, 400);
        assert_eq!(a.json()["error"], error);
        if !description.is_empty() {
            assert_eq!(a.json()["error_description"], description);
        }
    }
    assert_eq!(sim.stats.token_grants(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn send_needs_an_issued_unexpired_bearer_and_the_right_project() {
    let opts = FcmSimOptions {
        token_lifetime: Duration::from_millis(1500),
        ..Default::default()
    };
    let sim = fcm::start(local(), opts).await.unwrap();
    let mut send = h2_connect(sim.addr).await;
    let msg = to_token("device-1");
    for bearer in [None, Some("ya29.made-up")] {
        let a = send_message(&mut send, bearer, SEND, &msg).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.json()["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(error_code(&a), None, "401 carries no FcmError");
    }
    let token = access_token(&mut send, sim.addr).await;
    let a = send_message(&mut send, Some(&token), SEND, &msg).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        send.current_max_send_streams(),
        100,
        "FCM allows 100 streams"
    );
    assert!(a.json()["name"]
        .as_str()
        .unwrap()
        .starts_with("projects/pushgate-dev/messages/"));
    let other = "/v1/projects/someone-else/messages:send";
    let a = send_message(&mut send, Some(&token), other, &msg).await;
    assert_eq!(
        (a.status, a.json()["error"]["status"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
    let validate = json!({"validate_only": true, "message": {"token": "device-1"}});
    let a = send_message(&mut send, Some(&token), SEND, &validate).await;
    assert_eq!(
        a.json()["name"],
        "projects/pushgate-dev/messages/fake_message_id"
    );

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let a = send_message(&mut send, Some(&token), SEND, &msg).await;
    assert_eq!(a.status, 401, "expired token");
    let fresh = access_token(&mut send, sim.addr).await;
    assert_eq!(
        send_message(&mut send, Some(&fresh), SEND, &msg)
            .await
            .status,
        200
    );
    assert_eq!(sim.stats.token_grants(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_tokens_give_their_codes() {
    let sim = fcm::start(local(), FcmSimOptions::default()).await.unwrap();
    let mut send = h2_connect(sim.addr).await;
    let bearer = access_token(&mut send, sim.addr).await;
    let cases = [
        ("unregistered-1", 404, "NOT_FOUND", Some("UNREGISTERED")),
        (
            "mismatch-1",
            403,
            "PERMISSION_DENIED",
            Some("SENDER_ID_MISMATCH"),
        ),
        (
            "invalid-1",
            400,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
        ),
        ("quota-1", 429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")),
        ("unavailable-1", 503, "UNAVAILABLE", Some("UNAVAILABLE")),
        ("unavailable-1", 503, "UNAVAILABLE", Some("UNAVAILABLE")),
        ("flaky-1", 503, "UNAVAILABLE", Some("UNAVAILABLE")),
        ("flaky-1", 200, "", None),
        (
            "thirdparty-1",
            401,
            "UNAUTHENTICATED",
            Some("THIRD_PARTY_AUTH_ERROR"),
        ),
        ("ordinary", 200, "", None),
    ];
    for (token, status, rpc, code) in cases {
        let a = send_message(&mut send, Some(&bearer), SEND, &to_token(token)).await;
        assert_eq!(a.status, status, "{token}");
        if status != 200 {
            assert_eq!(a.json()["error"]["code"], status);
            assert_eq!(a.json()["error"]["status"], rpc, "{token}");
        }
        assert_eq!(error_code(&a).as_deref(), code, "{token}");
        if token.starts_with("quota") {
            assert_eq!(a.header("retry-after"), Some("60"));
        }
        if token == "invalid-1" {
            let details = a.json()["error"]["details"].to_string();
            assert!(details.contains("message.token"), "{details}");
        }
    }
    for code in FcmErrorCode::KNOWN.iter() {
        let a = send_message(
            &mut send,
            Some(&bearer),
            SEND,
            &to_token(&forced_token(code)),
        )
        .await;
        assert_eq!(a.status, code.http().0, "{code:?}");
        assert_eq!(a.json()["error"]["status"], code.http().1.as_str());
        assert_eq!(error_code(&a).as_deref(), Some(code.as_str()));
    }
    let a = send_message(&mut send, Some(&bearer), SEND, &to_token("http502-x")).await;
    assert_eq!(a.status, 502);
    assert!(a.header("content-type").unwrap().starts_with("text/html"));
    sim.shutdown().await;
}

#[tokio::test]
async fn message_validation_and_recording() {
    let sim = fcm::start(local(), FcmSimOptions::default()).await.unwrap();
    let mut send = h2_connect(sim.addr).await;
    let bearer = access_token(&mut send, sim.addr).await;
    let bad = [
        json!({"message": {"notification": {"title": "x"}}}),
        json!({"message": {"token": "a", "topic": "b"}}),
        json!({"message": {"token": "a", "data": {"n": 1}}}),
        json!({"message": {"token": "a", "data": {"from": "x"}}}),
        json!({"message": {"token": "a", "android": {"ttl": "86400"}}}),
        json!({"message": {"token": "a", "android": {"priority": "max"}}}),
        json!({"message": {"token": "a", "data": {"k": "v".repeat(5000)}}}),
    ];
    for body in bad {
        let a = send_message(&mut send, Some(&bearer), SEND, &body).await;
        assert_eq!(
            (a.status, a.json()["error"]["status"].as_str()),
            (400, Some("INVALID_ARGUMENT")),
            "{body}"
        );
    }
    let good = json!({"message": {"token": "a", "data": {"k": "v"},
        "android": {"collapse_key": "sale", "priority": "high", "ttl": "3.5s"}}});
    assert_eq!(
        send_message(&mut send, Some(&bearer), SEND, &good)
            .await
            .status,
        200
    );
    let last = sim.stats.last().unwrap();
    assert_eq!(last.path, SEND);
    assert_eq!(last.json()["message"]["android"]["collapse_key"], "sale");
    assert_eq!(last.status, 200);
    assert_eq!(sim.stats.responses(400), 7);
    sim.shutdown().await;
}

#[tokio::test]
async fn project_quota_gives_quota_exceeded_with_retry_after() {
    let opts = FcmSimOptions {
        quota_per_minute: Some(2),
        ..Default::default()
    };
    let sim = fcm::start(local(), opts).await.unwrap();
    let mut send = h2_connect(sim.addr).await;
    let bearer = access_token(&mut send, sim.addr).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(send_message(&mut send, Some(&bearer), SEND, &to_token("d")).await);
    }
    assert_eq!(
        statuses.iter().map(|a| a.status).collect::<Vec<_>>(),
        [200, 200, 429]
    );
    assert_eq!(error_code(&statuses[2]).as_deref(), Some("QUOTA_EXCEEDED"));
    let retry: u64 = statuses[2].header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    sim.shutdown().await;
}
