//! The send job of design.md: its serde types, validation and templates.
//!
//! A job arrives as JSON; [`Job::parse`] turns bytes into a [`Job`] or a
//! clear [`JobError`]. Per-recipient problems (malformed token, ...) are
//! found by validation and become results with a code, never a crash.

pub mod memo;
mod parse;
pub mod template;
pub mod validate;

pub use parse::JobError;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a recipient is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Apns,
    Fcm,
    Webpush,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::Apns, Platform::Fcm, Platform::Webpush];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
            Platform::Webpush => "webpush",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device token (APNs hex token or FCM registration token). Its `Debug`
/// and `Display` show only a short prefix, so logs never carry whole tokens.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceToken(pub String);

impl DeviceToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 characters and the length, for logs.
    pub fn short(&self) -> String {
        let head: String = self.0.chars().take(8).collect();
        format!("{head}…({})", self.0.len())
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken({})", self.short())
    }
}

impl fmt::Display for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// A Web Push subscription as browsers hand it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushSubscription {
    pub endpoint: String,
    pub keys: WebPushKeys,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushKeys {
    pub p256dh: String,
    pub auth: String,
}

impl fmt::Debug for WebPushKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebPushKeys(***)")
    }
}

/// One recipient of a fan-out job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub platform: Platform,
    /// APNs and FCM: the device token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<DeviceToken>,
    /// Web Push: the subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<WebPushSubscription>,
    /// The producer's id for this recipient, echoed in its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Values for `{{var}}` placeholders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

/// The visible part of the notification. Title, body and subtitle may hold
/// `{{var}}` placeholders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badge: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deeplink: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    High,
    Normal,
}

/// APNs `apns-push-type` values (protocols.md §1.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushType {
    #[default]
    Alert,
    Background,
    Voip,
    Complication,
    Fileprovider,
    Location,
    Liveactivity,
    Pushtotalk,
    Widgets,
    Controls,
    Mdm,
}

impl PushType {
    /// Every push type.
    pub const ALL: [PushType; 11] = [
        PushType::Alert,
        PushType::Background,
        PushType::Voip,
        PushType::Complication,
        PushType::Fileprovider,
        PushType::Location,
        PushType::Liveactivity,
        PushType::Pushtotalk,
        PushType::Widgets,
        PushType::Controls,
        PushType::Mdm,
    ];
}

/// A campaign rate: at most `limit` notifications per `per_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    pub limit: u64,
    pub per_seconds: u64,
}

/// Raw APNs overrides, merged last into headers and payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsOverrides {
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub payload: serde_json::Map<String, serde_json::Value>,
}

/// Raw FCM overrides, merged last into the message's platform blocks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmOverrides {
    #[serde(default)]
    pub android: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub apns: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub webpush: serde_json::Map<String, serde_json::Value>,
}

/// A send job (design.md "Send job").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Idempotency key, <= 64 chars; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    pub recipients: Vec<Recipient>,
    #[serde(default)]
    pub notification: Notification,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    /// Seconds; 0 = deliver now or drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// RFC 3339; exclusive with `ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub push_type: PushType,
    #[serde(default)]
    pub mutable_content: bool,
    #[serde(default)]
    pub content_available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fcm: Option<FcmOverrides>,
    /// Payload parts all recipients share, rendered on first use (not
    /// part of the schema: never read from a job nor written).
    #[serde(skip)]
    pub memo: memo::Memo,
}
