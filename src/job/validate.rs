//! The rules of a send job beyond its JSON shape: job-level rules refuse
//! the whole job, recipient rules give that one recipient a result code.
//!
//! Each rule here has its counterpart in `schema/job.schema.json`; change
//! both together (tests/job_schema.rs checks that they agree).

use std::time::{Duration, SystemTime};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

use super::{template, Job, JobError, Platform, Recipient, WebPushSubscription};
use crate::outcome::Code;

pub const MAX_RECIPIENTS: usize = 1000;
pub const MAX_ID_CHARS: usize = 64;
pub const MAX_CAMPAIGN_CHARS: usize = 128;
/// APNs `apns-collapse-id` limit (bytes; the key is printable ASCII).
pub const MAX_COLLAPSE_KEY: usize = 64;
/// APNs tokens: hex, an even number of digits, at least 64 (32 bytes today;
/// the length is not fixed by Apple), at most 200.
pub const APNS_TOKEN_HEX: std::ops::RangeInclusive<usize> = 64..=200;
pub const MAX_FCM_TOKEN: usize = 4096;
pub const MAX_WEBPUSH_ENDPOINT: usize = 2048;

/// base64url, with or without padding (browsers hand out unpadded keys).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// FCM refuses these `data` keys (protocols.md §2.1; Firebase docs also list
/// `message_type` and the `gcm` prefix).
pub fn reserved_data_key(key: &str) -> bool {
    key == "from" || key == "message_type" || key.starts_with("google") || key.starts_with("gcm")
}

impl Job {
    /// Checks the job-level rules; the first broken one is returned.
    pub fn validate(&self) -> Result<(), JobError> {
        if !crate::config::load::valid_app_name(&self.app) {
            return Err(JobError::new(
                "app",
                "must be 1-64 characters of A-Z a-z 0-9 - _",
            ));
        }
        if let Some(id) = &self.id {
            if id.is_empty() || id.chars().count() > MAX_ID_CHARS || has_control(id) {
                return Err(JobError::new(
                    "id",
                    "must be 1-64 characters, no control characters",
                ));
            }
        }
        if let Some(c) = &self.campaign {
            if c.is_empty() || c.chars().count() > MAX_CAMPAIGN_CHARS || has_control(c) {
                return Err(JobError::new(
                    "campaign",
                    "must be 1-128 characters, no control characters",
                ));
            }
        }
        if !(1..=MAX_RECIPIENTS).contains(&self.recipients.len()) {
            return Err(JobError::new(
                "recipients",
                format!(
                    "must hold 1 to {MAX_RECIPIENTS} recipients, not {}",
                    self.recipients.len()
                ),
            ));
        }
        self.validate_content()?;
        self.validate_delivery()
    }

    fn validate_content(&self) -> Result<(), JobError> {
        let n = &self.notification;
        for (name, tpl) in [
            ("title", &n.title),
            ("body", &n.body),
            ("subtitle", &n.subtitle),
        ] {
            if let Some(tpl) = tpl {
                template::check(tpl)
                    .map_err(|e| JobError::new(format!("notification.{name}"), e))?;
            }
        }
        if let Some(key) = self.data.keys().find(|k| reserved_data_key(k)) {
            return Err(JobError::new(
                format!("data.{key}"),
                "reserved by FCM (`from`, `message_type`, `google*`, `gcm*`); rename the key",
            ));
        }
        if let Some(apns) = &self.apns {
            for (name, value) in &apns.headers {
                let name_ok = name.strip_prefix("apns-").is_some_and(|rest| {
                    !rest.is_empty()
                        && rest
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
                if !name_ok {
                    return Err(JobError::new(
                        format!("apns.headers.{name}"),
                        "only lower-case `apns-*` headers may be overridden",
                    ));
                }
                if !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                    return Err(JobError::new(
                        format!("apns.headers.{name}"),
                        "header values must be printable ASCII",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_delivery(&self) -> Result<(), JobError> {
        if let Some(key) = &self.collapse_key {
            if key.is_empty()
                || key.len() > MAX_COLLAPSE_KEY
                || !key.bytes().all(|b| (0x20..=0x7e).contains(&b))
            {
                return Err(JobError::new(
                    "collapse_key",
                    "must be 1-64 printable ASCII characters (APNs apns-collapse-id)",
                ));
            }
        }
        if let Some(at) = &self.expires_at {
            if self.ttl.is_some() {
                return Err(JobError::new(
                    "expires_at",
                    "give either ttl or expires_at, not both",
                ));
            }
            parse_rfc3339(at).map_err(|e| JobError::new("expires_at", e))?;
        }
        if let Some(t) = &self.throttle {
            if t.limit == 0 {
                return Err(JobError::new("throttle.limit", "must be at least 1"));
            }
            if t.per_seconds == 0 {
                return Err(JobError::new("throttle.per_seconds", "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Checks recipient `i` (token format, the field its platform needs).
    /// An error is that recipient's result: code and a message naming the field.
    pub fn check_recipient(&self, i: usize) -> Result<(), (Code, String)> {
        let Some(r) = self.recipients.get(i) else {
            return Err((
                Code::InvalidJob,
                format!("recipients[{i}]: no such recipient"),
            ));
        };
        check_recipient(r)
            .map_err(|(code, field, msg)| (code, format!("recipients[{i}].{field}: {msg}")))
    }

    /// When this job expires, counted from when it was first `received`:
    /// `ttl` seconds after it, or `expires_at`; `None` when it never expires.
    pub fn expiry(&self, received: SystemTime) -> Option<SystemTime> {
        if let Some(ttl) = self.ttl {
            return received.checked_add(Duration::from_secs(ttl));
        }
        self.expires_at
            .as_deref()
            .and_then(|s| parse_rfc3339(s).ok())
    }

    /// A fresh job id: 16 random hex digits.
    pub fn new_id() -> String {
        format!("{:016x}", fastrand::u64(..))
    }

    /// Gives the job an id if the producer sent none (once: the id is kept
    /// in the job, so re-publish the serialized job, not the original body).
    pub fn ensure_id(&mut self) -> &str {
        self.id.get_or_insert_with(Job::new_id)
    }

    /// The job's id; empty until [`Job::ensure_id`] has run on a job without one.
    pub fn effective_id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }
}

type RecipientError = (Code, &'static str, String);

fn check_recipient(r: &Recipient) -> Result<(), RecipientError> {
    let (needs, stray) = match r.platform {
        Platform::Apns | Platform::Fcm => {
            ("token", r.subscription.is_some().then_some("subscription"))
        }
        Platform::Webpush => ("subscription", r.token.is_some().then_some("token")),
    };
    if let Some(field) = stray {
        return Err((
            Code::InvalidJob,
            field,
            format!("not allowed for {} recipients", r.platform),
        ));
    }
    let missing = || {
        (
            Code::BadDeviceToken,
            needs,
            format!("missing; {} recipients need one", r.platform),
        )
    };
    match r.platform {
        Platform::Apns => apns_token(r.token.as_ref().ok_or_else(missing)?.as_str()),
        Platform::Fcm => fcm_token(r.token.as_ref().ok_or_else(missing)?.as_str()),
        Platform::Webpush => subscription(r.subscription.as_ref().ok_or_else(missing)?),
    }
}

fn bad(field: &'static str, msg: impl Into<String>) -> RecipientError {
    (Code::BadDeviceToken, field, msg.into())
}

fn apns_token(t: &str) -> Result<(), RecipientError> {
    if !APNS_TOKEN_HEX.contains(&t.len())
        || t.len() % 2 != 0
        || !t.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(bad(
            "token",
            format!(
                "not an APNs device token (expected an even number of hex digits, {} to {}; got {} characters)",
                APNS_TOKEN_HEX.start(),
                APNS_TOKEN_HEX.end(),
                t.chars().count()
            ),
        ));
    }
    Ok(())
}

fn fcm_token(t: &str) -> Result<(), RecipientError> {
    if t.is_empty() || t.len() > MAX_FCM_TOKEN {
        return Err(bad(
            "token",
            format!("an FCM token is 1 to {MAX_FCM_TOKEN} characters"),
        ));
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
    {
        return Err(bad(
            "token",
            "not an FCM registration token (allowed: A-Z a-z 0-9 _ : -)",
        ));
    }
    Ok(())
}

fn subscription(s: &WebPushSubscription) -> Result<(), RecipientError> {
    const FIELD: &str = "subscription";
    let e = &s.endpoint;
    let host_len = e
        .strip_prefix("https://")
        .map(|rest| rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if e.chars().count() > MAX_WEBPUSH_ENDPOINT
        || host_len.unwrap_or(0) == 0
        || e.bytes().any(|b| b <= 0x20 || b == 0x7f)
    {
        return Err(bad(
            FIELD,
            format!(
                "endpoint must be an https:// URL of at most {MAX_WEBPUSH_ENDPOINT} characters"
            ),
        ));
    }
    let key = |value: &str, len: usize, name: &str| match B64URL.decode(value) {
        Ok(bytes) if bytes.len() == len => Ok(bytes),
        _ => Err(bad(
            FIELD,
            format!("keys.{name} must be {len} bytes in base64url"),
        )),
    };
    let p256dh = key(&s.keys.p256dh, 65, "p256dh")?;
    if p256dh.first() != Some(&4) {
        return Err(bad(
            FIELD,
            "keys.p256dh must be an uncompressed P-256 point (0x04 first)",
        ));
    }
    key(&s.keys.auth, 16, "auth")?;
    Ok(())
}

/// Parses an RFC 3339 date-time (`2026-11-22T10:00:00Z`, fractions and
/// `±HH:MM` offsets allowed; years from 1970).
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("{s:?} is not an RFC 3339 date-time such as 2026-11-22T10:00:00Z");
    let b = s.as_bytes();
    if !s.is_ascii() || b.len() < 20 {
        return Err(bad());
    }
    let (base, offset_secs): (&str, i64) = match b[b.len() - 1] {
        b'Z' | b'z' => (&s[..s.len() - 1], 0),
        _ => {
            let (base, off) = s.split_at(s.len() - 6);
            let o = off.as_bytes();
            let sign = match o[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            let digits = |x: &[u8]| -> Option<i64> {
                x.iter().try_fold(0i64, |acc, d| {
                    d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
                })
            };
            let (h, m) = (digits(&o[1..3]), digits(&o[4..6]));
            match (h, m, o[3]) {
                (Some(h), Some(m), b':') if h <= 23 && m <= 59 => {
                    (base, sign * (h * 3600 + m * 60))
                }
                _ => return Err(bad()),
            }
        }
    };
    let fraction_ok = match base.as_bytes().get(19..) {
        Some([]) => true,
        Some([b'.', digits @ ..]) => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !fraction_ok || !matches!(base.as_bytes()[10], b'T' | b't') {
        return Err(bad());
    }
    let utc = format!("{}T{}Z", &base[..10], &base[11..]);
    let t = humantime::parse_rfc3339(&utc).map_err(|e| format!("{} ({e})", bad()))?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    let t = if offset_secs >= 0 {
        t.checked_sub(shift)
    } else {
        t.checked_add(shift)
    };
    t.ok_or_else(bad)
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
