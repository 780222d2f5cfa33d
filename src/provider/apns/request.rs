//! Builds the APNs HTTP/2 request (path, headers, JSON payload) for one notification; pure.
//!
//! Hot path (one call per notification): the payload is written into a
//! buffer sized up front; the headers every request of a push type and
//! priority shares come pre-built from the provider as one map
//! ([`BaseHeaders`]), its index sized for every header the request can
//! carry, and are cloned (shared bytes: reference counts) rather than
//! hashed and inserted again. The cloned map already holds the request's
//! own headers (`apns-expiration`, `apns-id`, `authorization`) with
//! placeholder values, which are replaced in place: a clone's entry vector
//! has no spare room, and growing it cost a reallocation per request. The
//! authorization value comes pre-built too, and [`Built::into_request`]
//! moves everything into the request without a copy.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Method, Request};

use super::payload::{Alert, Aps, Payload};
use crate::job::memo::SharedPayload;
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
fn topic_suffix(p: PushType) -> &'static str {
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
    priority_str(job.push_type, job.priority)
}

fn priority_str(push_type: PushType, priority: Priority) -> &'static str {
    match (push_type, priority) {
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
        p.write(&mut out);
        return out;
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

/// [`payload`] as every recipient of `job` shares it when its texts have
/// no placeholders (`rendered` is then the same for all): whole without a
/// tracking key (`key` `None`), else with a slot for the notification id.
/// `None` when the tracking key is not the payload's last entry (a data
/// key of its name, or `apns.payload` merged over it): such jobs render
/// per recipient.
pub fn shared_payload(
    job: &Job,
    rendered: &Rendered<'_>,
    key: Option<&str>,
) -> Option<SharedPayload> {
    let Some(name) = key else {
        return Some(SharedPayload::Same(Bytes::from(payload(
            job, rendered, None,
        ))));
    };
    let overrides = job.apns.as_ref().is_some_and(|o| !o.payload.is_empty());
    if overrides || job.data.contains_key(name) {
        return None;
    }
    let campaign = job.campaign.as_deref();
    let key = TrackingKey {
        name,
        notification_id: "",
        campaign,
    };
    let mut head = payload(job, rendered, Some(key));
    // The key is serialized last: `..."<name>":{"n":"<id>"` then the campaign.
    let mut tail = b"\"".to_vec();
    if let Some(c) = campaign {
        tail.extend_from_slice(b",\"c\":");
        serde_json::to_writer(&mut tail, c).ok()?;
    }
    tail.extend_from_slice(b"}}");
    let cut = head.len().checked_sub(tail.len())?;
    if !head[..cut].ends_with(b"\"n\":\"") || head[cut..] != tail[..] {
        return None;
    }
    head.truncate(cut);
    Some(SharedPayload::IdSlot { head, tail })
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
        match bearer.and_then(|b| HeaderValue::from_str(b).ok()) {
            Some(v) => {
                req.headers_mut().insert(AUTHORIZATION, v);
            }
            None => {
                req.headers_mut().remove(AUTHORIZATION);
            }
        }
        req
    }

    /// The request, moving path, headers and body in (no copy), with
    /// `authorization` when token auth is used (replacing the placeholder
    /// of a [`BaseHeaders`] map in place).
    pub fn into_request(self, bearer: Option<HeaderValue>) -> Request<Bytes> {
        let mut req = Request::new(self.body);
        *req.method_mut() = Method::POST;
        if let Ok(uri) = http::Uri::from_maybe_shared(Bytes::from(self.path)) {
            *req.uri_mut() = uri;
        }
        *req.headers_mut() = self.headers;
        match bearer {
            Some(v) => {
                req.headers_mut().insert(AUTHORIZATION, v);
            }
            None => {
                req.headers_mut().remove(AUTHORIZATION);
            }
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
    /// The headers of the job's push type, priority and expiration
    /// ([`BaseHeaders`]), pre-built by the provider; `None`: built here
    /// from `bundle`.
    pub base: Option<&'a HeaderMap>,
    /// The payload all recipients of the job share ([`shared_payload`]
    /// with the same `tracking`), when their texts are the same.
    pub shared: Option<&'a SharedPayload>,
}

/// Builds path, headers and payload, and checks the final payload size.
pub fn build(job: &Job, rendered: &Rendered<'_>, t: Target<'_>) -> Result<Built, Refused> {
    let tracking = t.tracking.map(|name| TrackingKey {
        name,
        notification_id: t.apns_id,
        campaign: job.campaign.as_deref(),
    });
    let body = match t.shared.and_then(|p| p.for_id(t.apns_id)) {
        Some(b) => b,
        None => Bytes::from(payload(job, rendered, tracking)),
    };
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
        body,
    })
}

// Built once at compile time: `from_static` at run time checks the name
// against the standard headers on every call (one request per recipient).
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");
const APNS_ID: HeaderName = HeaderName::from_static("apns-id");

fn headers(job: &Job, t: Target<'_>) -> Result<HeaderMap, Refused> {
    let bad = |what: &str| Refused {
        code: Code::InvalidPayload,
        reason: format!("{what} is not a valid header value"),
    };
    let mut h = match t.base {
        Some(base) => base.clone(),
        None => {
            base_headers(t.bundle, job.push_type, job.priority).map_err(|_| bad("apns-topic"))?
        }
    };
    // A base map has these two already (placeholders): replaced in place.
    match expiration(job, t.now_unix) {
        Some(exp) => {
            h.insert(APNS_EXPIRATION, HeaderValue::from(exp));
        }
        // An expiry that does not parse: no placeholder left behind.
        None if job.expires_at.is_some() => {
            h.remove(APNS_EXPIRATION);
        }
        None => {}
    }
    // Unique per request: sent never-indexed (HPACK), so that it does not
    // push the headers every request repeats out of the dynamic table.
    let mut id = HeaderValue::from_str(t.apns_id).map_err(|_| bad("apns-id"))?;
    id.set_sensitive(true);
    h.insert(APNS_ID, id);
    if let Some(c) = &job.collapse_key {
        h.insert(
            APNS_COLLAPSE_ID,
            HeaderValue::from_str(c).map_err(|_| bad("collapse_key"))?,
        );
    }
    for (k, v) in job.apns.iter().flat_map(|o| o.headers.iter()) {
        let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| bad("an apns header name"))?;
        h.insert(name, HeaderValue::from_str(v).map_err(|_| bad(k))?);
    }
    Ok(h)
}

/// The headers every request of one push type and priority carries, in
/// the order they are sent: `apns-topic`, `apns-push-type`,
/// `apns-priority`, `content-type`. Its index is sized for every header a
/// request can carry, and a clone keeps that size, so the request's own
/// headers never rehash it.
pub fn base_headers(
    bundle: &str,
    push_type: PushType,
    priority: Priority,
) -> Result<HeaderMap, http::header::InvalidHeaderValue> {
    let mut h = HeaderMap::with_capacity(HEADER_CAPACITY);
    h.insert(APNS_TOPIC, topic_value(bundle, push_type)?);
    h.insert(
        APNS_PUSH_TYPE,
        HeaderValue::from_static(push_type_str(push_type)),
    );
    h.insert(
        APNS_PRIORITY,
        HeaderValue::from_static(priority_str(push_type, priority)),
    );
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(h)
}

/// [`base_headers`] of every push type, priority and expiration (there or
/// not) for one bundle, built once per provider: a request clones its own
/// map, which costs less than hashing and inserting four headers (one
/// request per recipient).
///
/// Each map also holds the headers the request then sets, with placeholder
/// values, in the order they are sent: `apns-expiration` (in the maps for
/// jobs with one), `apns-id`, and `authorization` with token auth. Setting
/// them replaces the values in place; inserting them would grow the
/// clone's entry vector, a reallocation and a copy of every entry per
/// request (2% of a fan-out notification's instructions).
#[derive(Debug, Clone)]
pub struct BaseHeaders {
    /// Indexed by [`BaseHeaders::slot`].
    maps: Vec<HeaderMap>,
}

impl BaseHeaders {
    /// `None` when the bundle is not a valid header value (each request
    /// then builds its own headers and is refused with the reason).
    /// `token_auth`: requests carry `authorization`.
    pub fn new(bundle: &str, token_auth: bool) -> Option<BaseHeaders> {
        let mut maps = Vec::with_capacity(PushType::ALL.len() * 4);
        for p in PushType::ALL {
            for priority in [Priority::High, Priority::Normal] {
                for expires in [false, true] {
                    let mut h = base_headers(bundle, p, priority).ok()?;
                    if expires {
                        h.insert(APNS_EXPIRATION, HeaderValue::from_static("0"));
                    }
                    let mut id = HeaderValue::from_static("");
                    id.set_sensitive(true);
                    h.insert(APNS_ID, id);
                    if token_auth {
                        h.insert(AUTHORIZATION, HeaderValue::from_static(""));
                    }
                    maps.push(h);
                }
            }
        }
        Some(BaseHeaders { maps })
    }

    /// The headers of `job`'s push type, priority and expiration (whether
    /// it has one).
    pub fn get(&self, job: &Job) -> Option<&HeaderMap> {
        let expires = job.ttl.is_some() || job.expires_at.is_some();
        self.maps
            .get(Self::slot(job.push_type, job.priority, expires))
    }

    fn slot(p: PushType, priority: Priority, expires: bool) -> usize {
        let i = PushType::ALL.iter().position(|&q| q == p).unwrap_or(0);
        i * 4 + usize::from(priority == Priority::Normal) * 2 + usize::from(expires)
    }
}

/// The `apns-topic` value for `push_type`: the bundle plus the type's suffix.
fn topic_value(
    bundle: &str,
    push_type: PushType,
) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let topic = format!("{bundle}{}", topic_suffix(push_type));
    HeaderValue::from_maybe_shared(Bytes::from(topic))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
