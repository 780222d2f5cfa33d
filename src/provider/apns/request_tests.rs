//! Unit tests of the APNs request builder (no network).

use super::*;
use crate::job::{ApnsOverrides, Notification};
use serde_json::json;

fn job() -> Job {
    serde_json::from_value(json!({
        "app": "shop",
        "recipients": [{"platform": "apns", "token": "ab"}],
        "notification": {"title": "T", "body": "B", "sound": "default", "badge": 3,
                          "thread_id": "th", "category": "cat"},
        "data": {"order": "123"},
        "collapse_key": "order-123",
        "ttl": 3600,
        "mutable_content": true
    }))
    .unwrap()
}

fn target() -> Target<'static> {
    Target {
        bundle: "com.example.shop",
        token: "abcd",
        apns_id: "123e4567-e89b-12d3-a456-426614174000",
        now_unix: 1_000_000,
        tracking: None,
        base: None,
        shared: None,
    }
}

fn texts(job: &Job) -> Rendered<'_> {
    Rendered::plain(&job.notification)
}

fn header<'a>(b: &'a Built, name: &str) -> Option<&'a str> {
    b.headers.get(name).map(|v| v.to_str().unwrap())
}

#[test]
fn builds_path_headers_and_payload() {
    let j = job();
    let b = build(&j, &texts(&j), target()).unwrap();
    assert_eq!(b.path, "/3/device/abcd");
    assert_eq!(header(&b, "apns-topic"), Some("com.example.shop"));
    assert_eq!(header(&b, "apns-push-type"), Some("alert"));
    assert_eq!(header(&b, "apns-priority"), Some("10"));
    assert_eq!(header(&b, "apns-expiration"), Some("1003600"));
    assert_eq!(header(&b, "apns-collapse-id"), Some("order-123"));
    assert_eq!(header(&b, "apns-id"), Some(target().apns_id));
    assert_eq!(header(&b, "content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
    assert_eq!(
        v,
        json!({"aps": {"alert": {"title": "T", "body": "B"}, "badge": 3, "sound": "default",
                       "thread-id": "th", "category": "cat", "mutable-content": 1},
               "order": "123"})
    );
    let req = b.to_request(Some("bearer x"));
    assert_eq!(req.uri(), "/3/device/abcd");
    assert_eq!(req.headers()["authorization"], "bearer x");
    assert!(b.to_request(None).headers().get("authorization").is_none());
    let moved = b
        .clone()
        .into_request(Some(HeaderValue::from_static("bearer x")));
    assert_eq!(moved.uri(), req.uri());
    assert_eq!(moved.method(), req.method());
    assert_eq!(moved.headers(), req.headers());
    assert_eq!(moved.body(), req.body());
    assert!(moved.headers()["apns-id"].is_sensitive(), "never indexed");
}

#[test]
fn prebuilt_base_headers_give_the_same_request() {
    let base = BaseHeaders::new("com.example.shop", false).unwrap();
    let mut j = job();
    j.collapse_key = Some("sale".into());
    for (ttl, expires_at) in [
        (Some(60), None),
        (None, None),
        (None, Some("2030-01-01T00:00:00Z")),
    ] {
        j.ttl = ttl;
        j.expires_at = expires_at.map(str::to_owned);
        for p in PushType::ALL {
            for priority in [Priority::High, Priority::Normal] {
                j.push_type = p;
                j.priority = priority;
                let own = build(&j, &texts(&j), target()).unwrap();
                let t = Target {
                    base: base.get(&j),
                    ..target()
                };
                let shared = build(&j, &texts(&j), t).unwrap();
                let case = format!("{p:?} {priority:?} {ttl:?} {expires_at:?}");
                assert_eq!(shared.headers, own.headers, "{case}");
                let names: Vec<_> = shared.headers.keys().map(|k| k.as_str()).collect();
                let mut sent = vec![
                    "apns-topic",
                    "apns-push-type",
                    "apns-priority",
                    "content-type",
                ];
                if ttl.is_some() || expires_at.is_some() {
                    sent.push("apns-expiration");
                }
                sent.extend(["apns-id", "apns-collapse-id"]);
                assert_eq!(names, sent, "the order they are sent in: {case}");
                let req = shared.into_request(None);
                assert_eq!(req.headers(), &own.headers, "{case}");
            }
        }
    }
    j.push_type = PushType::Voip;
    let b = build(
        &j,
        &texts(&j),
        Target {
            base: base.get(&j),
            ..target()
        },
    )
    .unwrap();
    assert_eq!(header(&b, "apns-topic"), Some("com.example.shop.voip"));
    assert!(BaseHeaders::new("bad\nbundle", false).is_none());
}

/// The placeholders of a base map never reach the wire: each is replaced,
/// or removed when the request has no such header.
#[test]
fn base_map_placeholders_are_replaced_or_removed() {
    let base = BaseHeaders::new("com.example.shop", true).unwrap();
    let mut j = job();
    j.ttl = Some(60);
    let t = Target {
        base: base.get(&j),
        ..target()
    };
    let b = build(&j, &texts(&j), t).unwrap();
    let bearer = HeaderValue::from_static("bearer x");
    let req = b.clone().into_request(Some(bearer));
    assert_eq!(req.headers()["authorization"], "bearer x");
    assert_eq!(req.headers()["apns-expiration"], "1000060");
    assert_eq!(req.headers()["apns-id"], target().apns_id);
    assert!(req.headers()["apns-id"].is_sensitive());
    let names: Vec<_> = req.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "apns-topic",
            "apns-push-type",
            "apns-priority",
            "content-type",
            "apns-expiration",
            "apns-id",
            "authorization",
            "apns-collapse-id"
        ],
        "the placeholders' places; what the job adds after them"
    );
    let plain = b.into_request(None);
    assert!(plain.headers().get("authorization").is_none());
    // An expiry that does not parse: no expiration header at all.
    j.ttl = None;
    j.expires_at = Some("not a date".into());
    let t = Target {
        base: base.get(&j),
        ..target()
    };
    let b = build(&j, &texts(&j), t).unwrap();
    assert!(b.headers.get("apns-expiration").is_none());
    let own = build(&j, &texts(&j), target()).unwrap().headers;
    assert_eq!(b.into_request(None).headers(), &own);
}

#[test]
fn push_types_set_topic_and_priority() {
    let mut j = job();
    j.push_type = PushType::Background;
    j.content_available = true;
    j.notification = Notification::default();
    let b = build(&j, &texts(&j), target()).unwrap();
    assert_eq!(header(&b, "apns-priority"), Some("5"));
    assert_eq!(header(&b, "apns-push-type"), Some("background"));
    let v: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
    assert_eq!(
        v["aps"],
        json!({"content-available": 1, "mutable-content": 1})
    );
    for (p, topic) in [
        (PushType::Voip, "com.example.shop.voip"),
        (
            PushType::Liveactivity,
            "com.example.shop.push-type.liveactivity",
        ),
        (PushType::Pushtotalk, "com.example.shop.voip-ptt"),
    ] {
        j.push_type = p;
        let b = build(&j, &texts(&j), target()).unwrap();
        assert_eq!(header(&b, "apns-topic"), Some(topic));
    }
    j.push_type = PushType::Alert;
    j.priority = Priority::Normal;
    assert_eq!(priority_value(&j), "5");
}

#[test]
fn expiration_from_ttl_or_expires_at() {
    let mut j = job();
    j.ttl = Some(0);
    assert_eq!(expiration(&j, 50), Some(0));
    j.ttl = None;
    assert_eq!(expiration(&j, 50), None);
    j.expires_at = Some("2030-01-01T00:00:00Z".into());
    assert_eq!(expiration(&j, 50), Some(1_893_456_000));
    j.expires_at = Some("2030-01-01T02:00:00+02:00".into());
    assert_eq!(expiration(&j, 50), Some(1_893_456_000));
}

#[test]
fn overrides_are_merged_last() {
    let mut j = job();
    j.apns = Some(ApnsOverrides {
        headers: [("apns-priority".to_string(), "1".to_string())].into(),
        payload: json!({"aps": {"interruption-level": "passive", "badge": 9}, "order": "x"})
            .as_object()
            .unwrap()
            .clone(),
    });
    let b = build(&j, &texts(&j), target()).unwrap();
    assert_eq!(header(&b, "apns-priority"), Some("1"));
    let v: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
    assert_eq!(v["aps"]["interruption-level"], "passive");
    assert_eq!(v["aps"]["badge"], 9);
    assert_eq!(v["aps"]["sound"], "default");
    assert_eq!(v["order"], "x");
}

#[test]
fn size_limit_on_the_final_payload() {
    let mut j = job();
    j.data.insert("big".into(), "x".repeat(4000));
    let err = build(&j, &texts(&j), target()).unwrap_err();
    assert_eq!(err.code, Code::PayloadTooLarge);
    j.push_type = PushType::Voip;
    assert!(build(&j, &texts(&j), target()).is_ok(), "voip allows 5120");
    j.data.insert("big".into(), "x".repeat(5100));
    assert!(build(&j, &texts(&j), target()).is_err());
}

#[test]
fn tracking_key_beside_aps_and_mutable_alerts() {
    let mut j = job();
    j.mutable_content = false;
    j.campaign = Some("spring".into());
    j.data.insert("pg".into(), "producer's own".into());
    let t = Target {
        tracking: Some("pg"),
        ..target()
    };
    let v: serde_json::Value =
        serde_json::from_slice(&build(&j, &texts(&j), t).unwrap().body).unwrap();
    assert_eq!(v["pg"], json!({"n": t.apns_id, "c": "spring"}));
    assert_eq!(v["aps"]["mutable-content"], 1);
    j.push_type = PushType::Background;
    j.notification = Notification::default();
    j.data.clear();
    j.campaign = None;
    let v: serde_json::Value =
        serde_json::from_slice(&build(&j, &texts(&j), t).unwrap().body).unwrap();
    assert_eq!(
        v,
        json!({"aps": {}, "pg": {"n": t.apns_id}}),
        "no alert: no mutable-content"
    );
}

/// Jobs of every shape the shared payload must reproduce byte for byte.
fn shapes() -> Vec<Job> {
    let mut out = vec![job()];
    let mut j = job();
    j.campaign = Some("spring \"sale\" \u{1}é".into());
    out.push(j);
    let mut j = job();
    j.data.clear();
    j.notification = Notification::default();
    j.push_type = PushType::Background;
    j.content_available = true;
    out.push(j);
    let mut j = job();
    j.mutable_content = false;
    j.notification.image = Some("https://example.com/a.png".into());
    j.notification.deeplink = Some("shop://a?b=\"c\"".into());
    j.data.insert("zz".into(), "after pg".into());
    j.data.insert("a\"b".into(), "n\":\"".into());
    j.campaign = Some("c".into());
    out.push(j);
    out
}

#[test]
fn the_shared_payload_is_the_payload_with_the_id_spliced_in() {
    let id = "123e4567-e89b-12d3-a456-426614174000";
    for j in shapes() {
        for key in [Some("pg"), None] {
            let tracking = key.map(|name| TrackingKey {
                name,
                notification_id: id,
                campaign: j.campaign.as_deref(),
            });
            let whole = payload(&j, &texts(&j), tracking);
            let shared = shared_payload(&j, &texts(&j), key).expect("shareable");
            assert_eq!(
                shared.for_id(id).unwrap(),
                whole,
                "{}",
                String::from_utf8_lossy(&whole)
            );
        }
    }
}

#[test]
fn jobs_whose_key_is_not_last_are_not_shared() {
    let mut j = job();
    j.data.insert("pg".into(), "producer's own".into());
    assert_eq!(shared_payload(&j, &texts(&j), Some("pg")), None);
    let mut j = job();
    j.apns = Some(ApnsOverrides {
        payload: serde_json::from_value(json!({"aps": {"badge": 9}})).unwrap(),
        ..ApnsOverrides::default()
    });
    assert_eq!(shared_payload(&j, &texts(&j), Some("pg")), None);
    assert!(
        shared_payload(&j, &texts(&j), None).is_some(),
        "without a key the merged payload is still the same for all"
    );
}

#[test]
fn build_uses_the_shared_payload_and_still_checks_the_size() {
    let j = job();
    let shared = shared_payload(&j, &texts(&j), Some("pg")).unwrap();
    let t = Target {
        tracking: Some("pg"),
        shared: Some(&shared),
        ..target()
    };
    let via_shared = build(&j, &texts(&j), t).unwrap();
    let whole = build(&j, &texts(&j), Target { shared: None, ..t }).unwrap();
    assert_eq!(via_shared.body, whole.body);
    let big = SharedPayload::Same(Bytes::from(vec![b' '; MAX_PAYLOAD + 1]));
    let refused = build(
        &j,
        &texts(&j),
        Target {
            shared: Some(&big),
            ..t
        },
    )
    .unwrap_err();
    assert_eq!(refused.code, Code::PayloadTooLarge);
}
