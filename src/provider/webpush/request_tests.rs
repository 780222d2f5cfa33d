use std::collections::BTreeMap;

use super::*;
use crate::job::{Notification, Platform, WebPushKeys};

const UA_PUBLIC: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

/// Allows push.example (the test endpoints) and nothing else.
fn any() -> AllowedOrigins {
    AllowedOrigins::parse(&["push.example"]).unwrap()
}

fn job(endpoint: &str) -> Job {
    let json = serde_json::json!({
        "app": "shop",
        "recipients": [{
            "platform": "webpush",
            "subscription": {"endpoint": endpoint, "keys": {"p256dh": UA_PUBLIC, "auth": AUTH}},
            "vars": {"name": "Ada"}
        }],
        "notification": {"title": "Hi {{name}}", "body": "Order {{order | default: \"?\"}}",
                         "image": "https://img.example/x.png", "deeplink": "https://shop.example/o/1",
                         "sound": "ignored"},
        "data": {"order": "1"},
        "collapse_key": "order-1",
        "priority": "normal",
        "ttl": 600
    });
    serde_json::from_value(json).unwrap()
}

#[test]
fn targets_split_origin_audience_and_path() {
    let t = target("https://fcm.googleapis.com/fcm/send/abc:def").unwrap();
    assert_eq!(t.endpoint.authority, "fcm.googleapis.com:443");
    assert_eq!(t.audience, "https://fcm.googleapis.com");
    assert_eq!(t.path, "/fcm/send/abc:def");
    let t = target("https://127.0.0.1:4444/gone/x?y=1").unwrap();
    assert_eq!(t.audience, "https://127.0.0.1:4444");
    assert_eq!(t.path, "/gone/x?y=1");
    let t = target("https://[::1]:4444").unwrap();
    assert_eq!(
        (t.audience.as_str(), t.path.as_str()),
        ("https://[::1]:4444", "/")
    );
    assert!(target("http://x/y").is_err());
    assert!(target("https://user@x/y").is_err());
}

#[test]
fn payload_renders_texts_and_carries_fields() {
    let j = job("https://push.example/p");
    let v: serde_json::Value = serde_json::from_slice(&payload(&j, &j.recipients[0])).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "title": "Hi Ada", "body": "Order ?", "image": "https://img.example/x.png",
            "url": "https://shop.example/o/1", "tag": "order-1", "data": {"order": "1"}
        })
    );
}

#[test]
fn topic_follows_rfc8030() {
    assert_eq!(topic(Some("order-123_A")), Some("order-123_A"));
    assert_eq!(topic(Some(&"a".repeat(32))), Some("a".repeat(32).as_str()));
    assert_eq!(topic(Some(&"a".repeat(33))), None);
    assert_eq!(topic(Some("order.123")), None);
    assert_eq!(topic(Some("")), None);
    assert_eq!(topic(None), None);
}

#[test]
fn ttl_from_job() {
    let now = SystemTime::now();
    let mut j = job("https://push.example/p");
    assert_eq!(ttl(&j, now), 600);
    j.ttl = None;
    assert_eq!(ttl(&j, now), DEFAULT_TTL.as_secs());
    j.expires_at = Some("2000-01-01T00:00:00Z".into());
    assert_eq!(ttl(&j, now), 0);
}

#[test]
fn build_sets_headers_and_encrypts_for_the_subscription() {
    let rng = ring::rand::SystemRandom::new();
    let j = job("https://push.example/p/1");
    let built = build(&j, 0, &any(), SystemTime::now(), &rng).unwrap();
    let req = built.to_request("vapid t=x, k=y").unwrap();
    assert_eq!(req.uri().path(), "/p/1");
    let h = req.headers();
    assert_eq!(h["ttl"], "600");
    assert_eq!(h["urgency"], "normal");
    assert_eq!(h["topic"], "order-1");
    assert_eq!(h["content-encoding"], "aes128gcm");
    assert_eq!(h["authorization"], "vapid t=x, k=y");
    let scalar: [u8; 32] = B64.decode(UA_PRIVATE).unwrap().try_into().unwrap();
    let ua = crypto::agreement_key_from_scalar(&scalar).unwrap();
    let plain = crypto::decrypt(
        req.body(),
        ua,
        &B64.decode(UA_PUBLIC).unwrap(),
        &B64.decode(AUTH).unwrap(),
    )
    .unwrap();
    assert_eq!(plain, payload(&j, &j.recipients[0]));
}

#[test]
fn oversized_payload_is_refused_locally() {
    let rng = ring::rand::SystemRandom::new();
    let mut j = job("https://push.example/p");
    j.notification = Notification {
        body: Some("x".repeat(MAX_PLAINTEXT)),
        ..Notification::default()
    };
    let refused = build(&j, 0, &any(), SystemTime::now(), &rng).err().unwrap();
    assert_eq!(refused.code, Code::PayloadTooLarge);
    // Exactly at the limit is fine.
    let overhead = payload(&j, &j.recipients[0]).len() - MAX_PLAINTEXT;
    j.notification.body = Some("x".repeat(MAX_PLAINTEXT - overhead));
    assert_eq!(payload(&j, &j.recipients[0]).len(), MAX_PLAINTEXT);
    assert!(build(&j, 0, &any(), SystemTime::now(), &rng).is_ok());
}

#[test]
fn missing_subscription_or_recipient_is_refused() {
    let rng = ring::rand::SystemRandom::new();
    let mut j = job("https://push.example/p");
    assert_eq!(
        build(&j, 3, &any(), SystemTime::now(), &rng)
            .err()
            .unwrap()
            .code,
        Code::InvalidJob
    );
    j.recipients[0] = Recipient {
        platform: Platform::Webpush,
        token: None,
        subscription: Some(WebPushSubscription {
            endpoint: "https://push.example/p".into(),
            keys: WebPushKeys {
                p256dh: "AAAA".into(),
                auth: AUTH.into(),
            },
        }),
        id: None,
        vars: BTreeMap::new(),
    };
    assert_eq!(
        build(&j, 0, &any(), SystemTime::now(), &rng)
            .err()
            .unwrap()
            .code,
        Code::BrowserUnsubscribed
    );
}

#[test]
fn origins_outside_the_allow_list_are_refused_before_encrypting() {
    let rng = ring::rand::SystemRandom::new();
    let defaults = AllowedOrigins::default();
    for (endpoint, why) in [
        ("https://push.example/p", "push.example:443 is not in"),
        (
            "https://fcm.googleapis.com:8443/fcm/send/x",
            "fcm.googleapis.com:8443 is not in",
        ),
        ("https://169.254.169.254/latest", "IP address or localhost"),
        ("https://localhost:4444/ok/x", "IP address or localhost"),
        ("https://[::1]/x", "IP address or localhost"),
    ] {
        let mut j = job(endpoint);
        // Oversized too: the origin check comes first, before any crypto.
        j.notification.body = Some("x".repeat(MAX_PLAINTEXT));
        let refused = build(&j, 0, &defaults, SystemTime::now(), &rng)
            .err()
            .unwrap();
        assert_eq!(refused.code, Code::InvalidPayload, "{endpoint}");
        assert_eq!(refused.code.class(), crate::outcome::Class::Payload);
        assert!(
            refused.reason.contains(why),
            "{endpoint}: {}",
            refused.reason
        );
        assert!(
            refused.reason.contains("allowed_origins"),
            "{}",
            refused.reason
        );
    }
    let j = job("https://fcm.googleapis.com/fcm/send/abc");
    assert!(build(&j, 0, &defaults, SystemTime::now(), &rng).is_ok());
}
