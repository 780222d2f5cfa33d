//! Builds one RFC 8030 push request: the endpoint's origin and path, the
//! notification JSON, its RFC 8291 encryption and the TTL / Urgency / Topic headers.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use ring::rand::SecureRandom;
use serde_json::{Map, Value};

use super::crypto::{self, CryptoError, MAX_PLAINTEXT};
use crate::config::webpush_origins::AllowedOrigins;
use crate::config::Endpoint;
use crate::job::{template, Job, Priority, Recipient, WebPushSubscription};
use crate::outcome::Code;

/// TTL sent when the job gives neither `ttl` nor `expires_at`: 28 days.
pub const DEFAULT_TTL: Duration = Duration::from_secs(28 * 24 * 3600);
/// RFC 8030 section 5.4: a Topic is at most 32 base64url characters.
pub const MAX_TOPIC: usize = 32;

/// Why no request was sent: the code and a reason for the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: Code,
    pub reason: String,
}

impl Refused {
    fn new(code: Code, reason: impl Into<String>) -> Refused {
        Refused {
            code,
            reason: reason.into(),
        }
    }
}

/// Where a subscription's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The origin as a pool endpoint (one pool per origin).
    pub endpoint: Endpoint,
    /// The VAPID `aud`: `https://host` (`:port` unless 443).
    pub audience: String,
    /// Path and query, as sent in `:path`.
    pub path: String,
}

/// Splits an `https://host[:port]/path?query` subscription endpoint.
pub fn target(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| "subscription endpoint must start with https://".to_owned())?;
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (origin, path) = rest.split_at(split);
    if origin.contains(['@', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("subscription endpoint has userinfo, a fragment or whitespace".to_owned());
    }
    let endpoint = Endpoint::parse(&format!("https://{origin}"))?;
    let host = if endpoint.host.contains(':') {
        format!("[{}]", endpoint.host)
    } else {
        endpoint.host.to_ascii_lowercase()
    };
    let audience = match endpoint.port {
        443 => format!("https://{host}"),
        p => format!("https://{host}:{p}"),
    };
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Ok(Target {
        endpoint,
        audience,
        path,
    })
}

/// The notification JSON a service worker receives: rendered `title` and
/// `body`, `image`, `url` (the deeplink), `tag` (the collapse key) and `data`.
pub fn payload(job: &Job, recipient: &Recipient) -> Vec<u8> {
    let n = &job.notification;
    let mut obj = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            obj.insert(k.to_owned(), Value::String(v));
        }
    };
    put(
        "title",
        n.title
            .as_deref()
            .map(|t| template::render(t, &recipient.vars).into_owned()),
    );
    put(
        "body",
        n.body
            .as_deref()
            .map(|t| template::render(t, &recipient.vars).into_owned()),
    );
    put("image", n.image.clone());
    put("url", n.deeplink.clone());
    put("tag", job.collapse_key.clone());
    if !job.data.is_empty() {
        let data = job
            .data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        obj.insert("data".to_owned(), Value::Object(data));
    }
    Value::Object(obj).to_string().into_bytes()
}

/// The `Topic` header for a collapse key, when it fits RFC 8030's rule.
pub fn topic(collapse_key: Option<&str>) -> Option<&str> {
    collapse_key.filter(|k| {
        !k.is_empty()
            && k.len() <= MAX_TOPIC
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Seconds the push service should keep the message: the job's `ttl`, the
/// time left until `expires_at`, or [`DEFAULT_TTL`].
pub fn ttl(job: &Job, now: SystemTime) -> u64 {
    match job.expiry(now) {
        Some(at) => at.duration_since(now).map_or(0, |d| d.as_secs()),
        None => DEFAULT_TTL.as_secs(),
    }
}

fn urgency(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Normal => "normal",
    }
}

fn key(value: &str, what: &str) -> Result<Vec<u8>, Refused> {
    B64.decode(value.trim_end_matches('=')).map_err(|_| {
        Refused::new(
            Code::BrowserUnsubscribed,
            format!("keys.{what} is not base64url"),
        )
    })
}

/// Encrypts the payload for `sub`. Too large → PayloadTooLarge; unusable
/// keys → BrowserUnsubscribed (the subscription cannot receive anything).
pub fn encrypt(
    plaintext: &[u8],
    sub: &WebPushSubscription,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, Refused> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(Refused::new(
            Code::PayloadTooLarge,
            format!(
                "Web Push payload is {} bytes, over the {MAX_PLAINTEXT}-byte limit",
                plaintext.len()
            ),
        ));
    }
    let p256dh = key(&sub.keys.p256dh, "p256dh")?;
    let auth = key(&sub.keys.auth, "auth")?;
    crypto::encrypt_random(plaintext, &p256dh, &auth, rng).map_err(|e| match e {
        CryptoError::BadPublicKey | CryptoError::BadAuthSecret => {
            Refused::new(Code::BrowserUnsubscribed, e.to_string())
        }
        CryptoError::TooLarge { .. } => Refused::new(Code::PayloadTooLarge, e.to_string()),
        CryptoError::Malformed | CryptoError::Crypto => {
            Refused::new(Code::InvalidPayload, e.to_string())
        }
    })
}

/// The POST for one recipient, without `Authorization` (added per origin).
pub struct Built {
    pub target: Target,
    pub body: Bytes,
    pub ttl: u64,
    pub urgency: &'static str,
    pub topic: Option<String>,
}

impl Built {
    /// The request with the VAPID header, ready for the origin's pool.
    pub fn to_request(&self, authorization: &str) -> Result<http::Request<Bytes>, Refused> {
        let mut b = http::Request::post(self.target.path.as_str())
            .header("ttl", self.ttl)
            .header("urgency", self.urgency)
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header("authorization", authorization);
        if let Some(t) = &self.topic {
            b = b.header("topic", t.as_str());
        }
        b.body(self.body.clone())
            .map_err(|e| Refused::new(Code::BrowserUnsubscribed, format!("endpoint path: {e}")))
    }
}

/// Builds recipient `index` of `job`: target, encrypted body, headers.
///
/// An endpoint whose origin is not in `allowed` is refused before anything
/// is encrypted or sent, as InvalidPayload: the subscription may be fine,
/// this gateway just must not send there, so a token-class code (which
/// makes producers delete the subscription) would be wrong.
pub fn build(
    job: &Job,
    index: usize,
    allowed: &AllowedOrigins,
    now: SystemTime,
    rng: &dyn SecureRandom,
) -> Result<Built, Refused> {
    let recipient = job
        .recipients
        .get(index)
        .ok_or_else(|| Refused::new(Code::InvalidJob, "no such recipient in the job"))?;
    let sub = recipient
        .subscription
        .as_ref()
        .ok_or_else(|| Refused::new(Code::InvalidJob, "the recipient has no subscription"))?;
    let target = target(&sub.endpoint).map_err(|e| Refused::new(Code::BrowserUnsubscribed, e))?;
    allowed
        .check(&target.endpoint.host, target.endpoint.port)
        .map_err(|e| Refused::new(Code::InvalidPayload, e))?;
    let body = encrypt(&payload(job, recipient), sub, rng)?;
    Ok(Built {
        target,
        body: Bytes::from(body),
        ttl: ttl(job, now),
        urgency: urgency(job.priority),
        topic: topic(job.collapse_key.as_deref()).map(str::to_owned),
    })
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
