//! Builds the FCM HTTP v1 `messages:send` body for one notification; pure.

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::job::{Job, Priority};
use crate::outcome::Code;
use crate::provider::apns::request::{expiration, priority_value, Refused};
use crate::provider::{merge_json, Rendered};
use crate::telemetry::tracking::{DataWithKey, TrackingKey};

/// FCM's limit on a message's payload.
pub const MAX_PAYLOAD: usize = 4096;

#[derive(Serialize)]
struct Notification<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
}

#[derive(Serialize)]
struct Message<'a> {
    token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification: Option<Notification<'a>>,
    #[serde(skip_serializing_if = "DataWithKey::is_empty")]
    data: DataWithKey<'a>,
    android: Value,
    apns: Value,
    webpush: Value,
}

#[derive(Serialize)]
struct Envelope<'a> {
    message: Message<'a>,
}

/// FCM keeps a message at most 28 days (`android.ttl` <= 2,419,200 s).
pub const MAX_TTL: u64 = 28 * 24 * 3600;

/// Seconds to keep the message: the job's `ttl`, else the time left until
/// its `expires_at` (0 once past); at most [`MAX_TTL`].
pub fn ttl_secs(job: &Job, now_unix: u64) -> Option<u64> {
    let ttl = match job.ttl {
        Some(ttl) => ttl,
        None => expiration(job, now_unix)?.saturating_sub(now_unix),
    };
    Some(ttl.min(MAX_TTL))
}

/// The `android` block: collapse key, priority, ttl and the Android notification.
fn android(job: &Job, now_unix: u64) -> Value {
    let n = &job.notification;
    let mut a = Map::new();
    if let Some(c) = &job.collapse_key {
        a.insert("collapse_key".into(), c.as_str().into());
    }
    let priority = match job.priority {
        Priority::High => "HIGH",
        Priority::Normal => "NORMAL",
    };
    a.insert("priority".into(), priority.into());
    if let Some(ttl) = ttl_secs(job, now_unix) {
        a.insert("ttl".into(), format!("{ttl}s").into());
    }
    let mut an = Map::new();
    for (k, v) in [
        ("channel_id", &n.channel_id),
        ("sound", &n.sound),
        ("click_action", &n.deeplink),
    ] {
        if let Some(v) = v {
            an.insert(k.into(), v.as_str().into());
        }
    }
    if let Some(b) = n.badge {
        an.insert("notification_count".into(), b.into());
    }
    if !an.is_empty() {
        a.insert("notification".into(), Value::Object(an));
    }
    overridden(a, job.fcm.as_ref().map(|o| &o.android))
}

/// The `apns` block: priority, collapse id and expiration headers, and the
/// `aps` keys FCM's `notification` does not cover (`mutable-content` also
/// for tracked alerts, so the iOS service extension can report impressions).
fn apns(job: &Job, rendered: &Rendered<'_>, now_unix: u64, tracked: bool) -> Value {
    let n = &job.notification;
    let mut headers = Map::new();
    headers.insert("apns-priority".into(), priority_value(job).into());
    if let Some(c) = &job.collapse_key {
        headers.insert("apns-collapse-id".into(), c.as_str().into());
    }
    if let Some(exp) = expiration(job, now_unix) {
        headers.insert("apns-expiration".into(), exp.to_string().into());
    }
    let mut aps = Map::new();
    if let Some(s) = &rendered.subtitle {
        aps.insert("alert".into(), serde_json::json!({"subtitle": s}));
    }
    if let Some(s) = &n.sound {
        aps.insert("sound".into(), s.as_str().into());
    }
    if let Some(b) = n.badge {
        aps.insert("badge".into(), b.into());
    }
    if let Some(t) = &n.thread_id {
        aps.insert("thread-id".into(), t.as_str().into());
    }
    if let Some(c) = &n.category {
        aps.insert("category".into(), c.as_str().into());
    }
    let alert = rendered.title.is_some() || rendered.body.is_some();
    let tracked_alert = tracked && job.push_type == crate::job::PushType::Alert && alert;
    if job.mutable_content || tracked_alert {
        aps.insert("mutable-content".into(), 1.into());
    }
    if job.content_available {
        aps.insert("content-available".into(), 1.into());
    }
    let mut block = Map::new();
    block.insert("headers".into(), Value::Object(headers));
    if !aps.is_empty() {
        block.insert("payload".into(), serde_json::json!({ "aps": aps }));
    }
    overridden(block, job.fcm.as_ref().map(|o| &o.apns))
}

/// The `webpush` block: TTL, Urgency and (when it is a valid one) Topic.
fn webpush(job: &Job, now_unix: u64) -> Value {
    let mut headers = Map::new();
    if let Some(ttl) = ttl_secs(job, now_unix) {
        headers.insert("TTL".into(), ttl.to_string().into());
    }
    let urgency = match job.priority {
        Priority::High => "high",
        Priority::Normal => "normal",
    };
    headers.insert("Urgency".into(), urgency.into());
    if let Some(c) = job.collapse_key.as_deref().filter(|c| valid_topic(c)) {
        headers.insert("Topic".into(), c.into());
    }
    let mut block = Map::new();
    block.insert("headers".into(), Value::Object(headers));
    if let Some(link) = job.notification.deeplink.as_deref() {
        if link.starts_with("https://") {
            block.insert("fcm_options".into(), serde_json::json!({ "link": link }));
        }
    }
    overridden(block, job.fcm.as_ref().map(|o| &o.webpush))
}

/// RFC 8030 Topic: at most 32 characters of the URL-safe base64 alphabet.
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 32
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn overridden(block: Map<String, Value>, extra: Option<&Map<String, Value>>) -> Value {
    let mut v = Value::Object(block);
    if let Some(extra) = extra.filter(|e| !e.is_empty()) {
        merge_json(&mut v, extra);
    }
    v
}

/// The JSON body of `messages:send` for `token`, with the tracking key in
/// `data` when given, and the size check on the final message (its size
/// without the token must stay within 4096 bytes).
pub fn body(
    job: &Job,
    rendered: &Rendered<'_>,
    token: &str,
    now_unix: u64,
    tracking: Option<TrackingKey<'_>>,
) -> Result<Vec<u8>, Refused> {
    let n = &job.notification;
    let has_note = rendered.title.is_some() || rendered.body.is_some() || n.image.is_some();
    let envelope = Envelope {
        message: Message {
            token,
            notification: has_note.then_some(Notification {
                title: rendered.title.as_deref(),
                body: rendered.body.as_deref(),
                image: n.image.as_deref(),
            }),
            data: DataWithKey {
                data: &job.data,
                key: tracking,
            },
            android: android(job, now_unix),
            apns: apns(job, rendered, now_unix, tracking.is_some()),
            webpush: webpush(job, now_unix),
        },
    };
    let body = serde_json::to_vec(&envelope).map_err(|e| Refused {
        code: Code::InvalidPayload,
        reason: format!("cannot encode the FCM message: {e}"),
    })?;
    let size = body.len().saturating_sub(token.len());
    if size > MAX_PAYLOAD {
        return Err(Refused {
            code: Code::PayloadTooLarge,
            reason: format!("FCM message is {size} bytes, over {MAX_PAYLOAD}"),
        });
    }
    Ok(body)
}

/// `POST /v1/projects/<project>/messages:send` (URI = path; the pool adds
/// scheme and authority).
pub fn to_request(project: &str, bearer: &str, body: Bytes) -> Request<Bytes> {
    let mut req = Request::new(body);
    *req.method_mut() = Method::POST;
    let uri = format!("/v1/projects/{project}/messages:send");
    if let Ok(uri) = uri.parse() {
        *req.uri_mut() = uri;
    }
    let h = req.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(bearer) {
        h.insert(AUTHORIZATION, v);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::FcmOverrides;
    use serde_json::json;

    fn job() -> Job {
        serde_json::from_value(json!({
            "app": "shop",
            "recipients": [{"platform": "fcm", "token": "tok"}],
            "notification": {"title": "T", "body": "B", "image": "https://i/x.png", "sound": "default",
                             "channel_id": "promo", "badge": 2},
            "data": {"order": "123"},
            "collapse_key": "order-123",
            "priority": "normal",
            "ttl": 600
        }))
        .unwrap()
    }

    fn built(j: &Job) -> Value {
        let b = body(j, &Rendered::plain(&j.notification), "tok", 1_000, None).unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn builds_the_v1_message() {
        let v = built(&job());
        assert_eq!(
            v,
            json!({"message": {
                "token": "tok",
                "notification": {"title": "T", "body": "B", "image": "https://i/x.png"},
                "data": {"order": "123"},
                "android": {"collapse_key": "order-123", "priority": "NORMAL", "ttl": "600s",
                            "notification": {"channel_id": "promo", "sound": "default",
                                             "notification_count": 2}},
                "apns": {"headers": {"apns-priority": "5", "apns-collapse-id": "order-123",
                                     "apns-expiration": "1600"},
                         "payload": {"aps": {"sound": "default", "badge": 2}}},
                "webpush": {"headers": {"TTL": "600", "Urgency": "normal", "Topic": "order-123"}}
            }})
        );
    }

    #[test]
    fn overrides_merge_last_and_topic_must_be_valid() {
        let mut j = job();
        j.collapse_key = Some("not a topic!".into());
        j.fcm = Some(FcmOverrides {
            android: json!({"priority": "HIGH", "notification": {"tag": "t"}})
                .as_object()
                .unwrap()
                .clone(),
            ..FcmOverrides::default()
        });
        let v = built(&j);
        assert_eq!(v["message"]["android"]["priority"], "HIGH");
        assert_eq!(v["message"]["android"]["notification"]["tag"], "t");
        assert_eq!(v["message"]["android"]["notification"]["sound"], "default");
        assert!(v["message"]["webpush"]["headers"].get("Topic").is_none());
    }

    #[test]
    fn expires_at_gives_the_time_left_as_ttl() {
        let mut j = job();
        j.ttl = None;
        j.priority = Priority::High;
        j.expires_at = Some("1970-01-01T00:16:40Z".into()); // 1000 s after the epoch
        let b = body(&j, &Rendered::plain(&j.notification), "tok", 400, None).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        let m = &v["message"];
        assert_eq!(m["android"]["ttl"], "600s");
        assert_eq!(m["android"]["priority"], "HIGH");
        assert_eq!(m["apns"]["headers"]["apns-expiration"], "1000");
        assert_eq!(m["apns"]["headers"]["apns-priority"], "10");
        assert_eq!(m["webpush"]["headers"]["TTL"], "600");
        assert_eq!(ttl_secs(&j, 2000), Some(0), "past: keep nothing");
        j.ttl = Some(90 * 24 * 3600);
        assert_eq!(ttl_secs(&j, 0), Some(MAX_TTL), "FCM's limit");
    }

    #[test]
    fn too_large_is_refused_locally() {
        let mut j = job();
        j.data.insert("big".into(), "x".repeat(4096));
        let e = body(&j, &Rendered::plain(&j.notification), "tok", 0, None).unwrap_err();
        assert_eq!(e.code, Code::PayloadTooLarge);
    }

    #[test]
    fn request_targets_the_project() {
        let r = to_request("p1", "Bearer abc", Bytes::from_static(b"{}"));
        assert_eq!(r.uri(), "/v1/projects/p1/messages:send");
        assert_eq!(r.headers()["authorization"], "Bearer abc");
        assert_eq!(r.method(), Method::POST);
    }

    #[test]
    fn tracking_key_goes_in_data_as_a_json_string() {
        let mut j = job();
        j.campaign = Some("spring".into());
        let key = TrackingKey {
            name: "pg",
            notification_id: "n-1",
            campaign: j.campaign.as_deref(),
        };
        let b = body(&j, &Rendered::plain(&j.notification), "tok", 0, Some(key)).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v["message"]["data"],
            json!({"order": "123", "pg": r#"{"n":"n-1","c":"spring"}"#})
        );
        assert_eq!(v["message"]["apns"]["payload"]["aps"]["mutable-content"], 1);
    }
}
