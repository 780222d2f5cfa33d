//! Builds the APNs HTTP/2 request (path, headers, JSON payload) for one notification; pure.
//!
//! Hot path (one call per notification): the payload is written into a
//! buffer sized up front, the header map is sized for every header the
//! request can carry (authorization included, so it never regrows), the
//! topic and authorization values come pre-built from the provider (shared
//! bytes: cloning is a reference count), and [`Built::into_request`] moves
//! everything into the request without a copy.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request};
use serde::Serialize;

use crate::job::{Job, Priority, PushType};
use crate::outcome::Code;
use crate::provider::{merge_json, Rendered};
use crate::telemetry::tracking::{AsObjectField, TrackingKey};

/// APNs payload limit for every push type but VoIP.
pub const MAX_PAYLOAD: usize = 4096;
/// APNs payload limit for VoIP pushes.
pub const MAX_PAYLOAD_VOIP: usize = 5120;

/// A request refused before sending: the code and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Refused {
    pub code: Code,
    pub reason: String,
}

/// `apns-push-type` header value.
pub fn push_type_str(p: PushType) -> &'static str {
    match p {
        PushType::Alert => "alert",
        PushType::Background => "background",
        PushType::Voip => "voip",
        PushType::Complication => "complication",
        PushType::Fileprovider => "fileprovider",
        PushType::Location => "location",
        PushType::Liveactivity => "liveactivity",
        PushType::Pushtotalk => "pushtotalk",
        PushType::Widgets => "widgets",
        PushType::Controls => "controls",
        PushType::Mdm => "mdm",
    }
}

/// The suffix APNs expects after the bundle id in `apns-topic` (protocols.md §1.2).
pub fn topic_suffix(p: PushType) -> &'static str {
    match p {
        PushType::Alert | PushType::Background | PushType::Mdm => "",
        PushType::Voip => ".voip",
        PushType::Complication => ".complication",
        PushType::Fileprovider => ".pushkit.fileprovider",
        PushType::Location => ".location-query",
        PushType::Liveactivity => ".push-type.liveactivity",
        PushType::Pushtotalk => ".voip-ptt",
        PushType::Widgets => ".push-type.widgets",
        PushType::Controls => ".push-type.controls",
    }
}

/// `apns-priority`: high 10, normal 5; background pushes must use 5.
pub fn priority_value(job: &Job) -> &'static str {
    match (job.push_type, job.priority) {
        (PushType::Background, _) | (_, Priority::Normal) => "5",
        (_, Priority::High) => "10",
    }
}

/// `apns-expiration` in epoch seconds: `ttl` from `now_unix` (ttl 0 stays 0:
/// try once, do not store), or `expires_at`. `None` when the job sets neither.
pub fn expiration(job: &Job, now_unix: u64) -> Option<u64> {
    if let Some(ttl) = job.ttl {
        return Some(if ttl == 0 { 0 } else { now_unix + ttl });
    }
    let at = job.expires_at.as_deref()?;
    let t = crate::job::validate::parse_rfc3339(at).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(secs.max(1))
}

#[derive(Serialize)]
struct Alert<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subtitle: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

#[derive(Serialize)]
struct Aps<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<Alert<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    badge: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sound: Option<&'a str>,
    #[serde(rename = "thread-id", skip_serializing_if = "Option::is_none")]
    thread_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
    #[serde(rename = "mutable-content", skip_serializing_if = "Option::is_none")]
    mutable_content: Option<u8>,
    #[serde(rename = "content-available", skip_serializing_if = "Option::is_none")]
    content_available: Option<u8>,
}

#[derive(Serialize)]
struct Payload<'a> {
    aps: Aps<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deeplink: Option<&'a str>,
    #[serde(flatten)]
    data: &'a std::collections::BTreeMap<String, String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    tracking: Option<AsObjectField<'a>>,
}

/// The JSON body: `aps` from the job and rendered texts, custom `data` keys
/// (and `image`, `deeplink`) beside `aps`, the tracking key beside them
/// (alerts then get `mutable-content: 1` for the app's service extension),
/// then `job.apns.payload` merged last.
pub fn payload(job: &Job, rendered: &Rendered<'_>, tracking: Option<TrackingKey<'_>>) -> Vec<u8> {
    let n = &job.notification;
    let alert =
        (rendered.title.is_some() || rendered.subtitle.is_some() || rendered.body.is_some())
            .then_some(Alert {
                title: rendered.title.as_deref(),
                subtitle: rendered.subtitle.as_deref(),
                body: rendered.body.as_deref(),
            });
    let tracked_alert = tracking.is_some() && job.push_type == PushType::Alert && alert.is_some();
    // A data key of the tracking key's name gives way to it (set after serializing).
    let clash = tracking.filter(|t| job.data.contains_key(t.name));
    let p = Payload {
        aps: Aps {
            alert,
            badge: n.badge,
            sound: n.sound.as_deref(),
            thread_id: n.thread_id.as_deref(),
            category: n.category.as_deref(),
            mutable_content: (job.mutable_content || tracked_alert).then_some(1),
            content_available: job.content_available.then_some(1),
        },
        image: n.image.as_deref(),
        deeplink: n.deeplink.as_deref(),
        data: &job.data,
        tracking: tracking.filter(|_| clash.is_none()).map(AsObjectField),
    };
    let overrides = job
        .apns
        .as_ref()
        .map(|o| &o.payload)
        .filter(|m| !m.is_empty());
    if overrides.is_none() && clash.is_none() {
        // Sized for a typical alert, so the writer does not regrow it.
        let mut out = Vec::with_capacity(PAYLOAD_CAPACITY);
        return match serde_json::to_writer(&mut out, &p) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        };
    }
    let mut v = serde_json::to_value(&p).unwrap_or_default();
    if let (Some(t), Some(map)) = (clash, v.as_object_mut()) {
        map.insert(t.name.to_owned(), t.to_json());
    }
    if let Some(extra) = overrides {
        merge_json(&mut v, extra);
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Initial payload buffer: most alert payloads fit.
const PAYLOAD_CAPACITY: usize = 256;

/// Header slots reserved per request: the seven `apns-*`/content-type
/// headers, authorization, and room for a few `apns.headers` overrides.
const HEADER_CAPACITY: usize = 12;

/// Everything about one APNs notification except the authorization header.
#[derive(Debug, Clone)]
pub struct Built {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Built {
    /// The request (URI = path; the pool adds scheme and authority), with
    /// `authorization` when token auth is used.
    pub fn to_request(&self, bearer: Option<&str>) -> Request<Bytes> {
        let mut req = Request::new(self.body.clone());
        *req.method_mut() = Method::POST;
        if let Ok(uri) = self.path.parse() {
            *req.uri_mut() = uri;
        }
        *req.headers_mut() = self.headers.clone();
        if let Some(v) = bearer.and_then(|b| HeaderValue::from_str(b).ok()) {
            req.headers_mut().insert(http::header::AUTHORIZATION, v);
        }
        req
    }

    /// The request, moving path, headers and body in (no copy), with
    /// `authorization` when token auth is used.
    pub fn into_request(self, bearer: Option<HeaderValue>) -> Request<Bytes> {
        let mut req = Request::new(self.body);
        *req.method_mut() = Method::POST;
        if let Ok(uri) = http::Uri::from_maybe_shared(Bytes::from(self.path)) {
            *req.uri_mut() = uri;
        }
        *req.headers_mut() = self.headers;
        if let Some(v) = bearer {
            req.headers_mut().insert(http::header::AUTHORIZATION, v);
        }
        req
    }
}

/// What [`build`] needs besides the job.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The configured bundle id.
    pub bundle: &'a str,
    pub token: &'a str,
    /// UUID sent as `apns-id`.
    pub apns_id: &'a str,
    pub now_unix: u64,
    /// The tracking key name when tracking is on (the value is `apns_id` and the campaign).
    pub tracking: Option<&'a str>,
    /// The `apns-topic` value for the job's push type, pre-built by the
    /// provider; `None`: built here from `bundle`.
    pub topic: Option<&'a HeaderValue>,
}

/// Builds path, headers and payload, and checks the final payload size.
pub fn build(job: &Job, rendered: &Rendered<'_>, t: Target<'_>) -> Result<Built, Refused> {
    let tracking = t.tracking.map(|name| TrackingKey {
        name,
        notification_id: t.apns_id,
        campaign: job.campaign.as_deref(),
    });
    let body = payload(job, rendered, tracking);
    let limit = if job.push_type == PushType::Voip {
        MAX_PAYLOAD_VOIP
    } else {
        MAX_PAYLOAD
    };
    if body.len() > limit {
        return Err(Refused {
            code: Code::PayloadTooLarge,
            reason: format!("APNs payload is {} bytes, over {limit}", body.len()),
        });
    }
    let headers = headers(job, t)?;
    let mut path = String::with_capacity(10 + t.token.len());
    path.push_str("/3/device/");
    path.push_str(t.token);
    Ok(Built {
        path,
        headers,
        body: Bytes::from(body),
    })
}

fn headers(job: &Job, t: Target<'_>) -> Result<HeaderMap, Refused> {
    let mut h = HeaderMap::with_capacity(HEADER_CAPACITY);
    let bad = |what: &str| Refused {
        code: Code::InvalidPayload,
        reason: format!("{what} is not a valid header value"),
    };
    let topic = match t.topic {
        Some(v) => v.clone(),
        None => topic_value(t.bundle, job.push_type).map_err(|_| bad("apns-topic"))?,
    };
    h.insert(HeaderName::from_static("apns-topic"), topic);
    h.insert(
        HeaderName::from_static("apns-push-type"),
        HeaderValue::from_static(push_type_str(job.push_type)),
    );
    h.insert(
        HeaderName::from_static("apns-priority"),
        HeaderValue::from_static(priority_value(job)),
    );
    if let Some(exp) = expiration(job, t.now_unix) {
        h.insert(
            HeaderName::from_static("apns-expiration"),
            HeaderValue::from(exp),
        );
    }
    if let Some(c) = &job.collapse_key {
        h.insert(
            HeaderName::from_static("apns-collapse-id"),
            HeaderValue::from_str(c).map_err(|_| bad("collapse_key"))?,
        );
    }
    // Unique per request: sent never-indexed (HPACK), so that it does not
    // push the headers every request repeats out of the dynamic table.
    let mut id = HeaderValue::from_str(t.apns_id).map_err(|_| bad("apns-id"))?;
    id.set_sensitive(true);
    h.insert(HeaderName::from_static("apns-id"), id);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in job.apns.iter().flat_map(|o| o.headers.iter()) {
        let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| bad("an apns header name"))?;
        h.insert(name, HeaderValue::from_str(v).map_err(|_| bad(k))?);
    }
    Ok(h)
}

/// The `apns-topic` value for `push_type`: the bundle plus the type's suffix.
pub fn topic_value(
    bundle: &str,
    push_type: PushType,
) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let topic = format!("{bundle}{}", topic_suffix(push_type));
    HeaderValue::from_maybe_shared(Bytes::from(topic))
}

#[cfg(test)]
mod tests {
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
            topic: None,
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
    fn a_prebuilt_topic_is_sent_as_is() {
        let j = job();
        let v = topic_value("com.example.shop", PushType::Voip).unwrap();
        let t = Target {
            topic: Some(&v),
            ..target()
        };
        let b = build(&j, &texts(&j), t).unwrap();
        assert_eq!(header(&b, "apns-topic"), Some("com.example.shop.voip"));
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
}
