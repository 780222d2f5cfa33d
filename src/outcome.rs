//! The stable error codes of pushgate, their marketer-facing labels and
//! classes, and the one table from provider answers to codes.
//!
//! Every provider answer goes through [`Code::from_apns`], [`Code::from_fcm`],
//! [`Code::from_webpush`] or [`Code::from_transport`]. The matches over
//! provider vocabularies are exhaustive: a new reason variant does not compile until someone decides
//! what it means. Unknown reasons (kept raw by the parsers) fall back on the
//! HTTP status.

use std::time::Duration;

use crate::job::Platform;
use crate::provider::apns::reason::ApnsReason;
use crate::provider::fcm::reason::{FcmErrorCode, RpcStatus};

/// What the caller should do with a code (design.md "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The token is dead: forget it (token feedback), never retry.
    Token,
    /// Transient: retry later with backoff.
    Retry,
    /// The operator must fix credentials or config: alert, pause the app.
    Credentials,
    /// The job itself is wrong: fix it, no retry.
    Payload,
    /// A gateway rule decided (expired, duplicate, stopped).
    Policy,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Token => "token",
            Class::Retry => "retry",
            Class::Credentials => "credentials",
            Class::Payload => "payload",
            Class::Policy => "policy",
        }
    }
}

/// A stable, CleverTap-style error code (design.md table). Used in results,
/// metric labels and logs; the names never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    BadDeviceToken,
    NotRegistered,
    MismatchSenderId,
    DeviceTokenNotForTopic,
    TopicDisallowed,
    InvalidCredentials,
    TemporarilyBlacklisted,
    QuotaExceeded,
    ProviderUnavailable,
    PayloadTooLarge,
    InvalidPayload,
    BrowserUnsubscribed,
    Expired,
    DuplicatePlatformId,
    UnknownApp,
    InvalidJob,
    CampaignStopped,
}

impl Code {
    pub const ALL: [Code; 17] = [
        Code::BadDeviceToken,
        Code::NotRegistered,
        Code::MismatchSenderId,
        Code::DeviceTokenNotForTopic,
        Code::TopicDisallowed,
        Code::InvalidCredentials,
        Code::TemporarilyBlacklisted,
        Code::QuotaExceeded,
        Code::ProviderUnavailable,
        Code::PayloadTooLarge,
        Code::InvalidPayload,
        Code::BrowserUnsubscribed,
        Code::Expired,
        Code::DuplicatePlatformId,
        Code::UnknownApp,
        Code::InvalidJob,
        Code::CampaignStopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadDeviceToken => "BadDeviceToken",
            Code::NotRegistered => "NotRegistered",
            Code::MismatchSenderId => "MismatchSenderId",
            Code::DeviceTokenNotForTopic => "DeviceTokenNotForTopic",
            Code::TopicDisallowed => "TopicDisallowed",
            Code::InvalidCredentials => "InvalidCredentials",
            Code::TemporarilyBlacklisted => "TemporarilyBlacklisted",
            Code::QuotaExceeded => "QuotaExceeded",
            Code::ProviderUnavailable => "ProviderUnavailable",
            Code::PayloadTooLarge => "PayloadTooLarge",
            Code::InvalidPayload => "InvalidPayload",
            Code::BrowserUnsubscribed => "BrowserUnsubscribed",
            Code::Expired => "Expired",
            Code::DuplicatePlatformId => "DuplicatePlatformId",
            Code::UnknownApp => "UnknownApp",
            Code::InvalidJob => "InvalidJob",
            Code::CampaignStopped => "CampaignStopped",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn class(self) -> Class {
        match self {
            Code::BadDeviceToken
            | Code::NotRegistered
            | Code::MismatchSenderId
            | Code::DeviceTokenNotForTopic
            | Code::BrowserUnsubscribed => Class::Token,
            Code::TopicDisallowed | Code::InvalidCredentials => Class::Credentials,
            Code::TemporarilyBlacklisted | Code::QuotaExceeded | Code::ProviderUnavailable => {
                Class::Retry
            }
            Code::PayloadTooLarge | Code::InvalidPayload | Code::UnknownApp | Code::InvalidJob => {
                Class::Payload
            }
            Code::Expired | Code::DuplicatePlatformId | Code::CampaignStopped => Class::Policy,
        }
    }

    /// The label shown to marketers in campaign reports, per platform.
    pub fn label(self, platform: Platform) -> &'static str {
        use Platform::{Apns, Fcm, Webpush};
        match (self, platform) {
            (Code::BadDeviceToken, Apns) => "APNs Bad Device Token",
            (Code::BadDeviceToken, Fcm | Webpush) => "FCM Token Invalid",
            (Code::NotRegistered, Apns) => "APNS Unregistered",
            (Code::NotRegistered, Fcm | Webpush) => "FCM Not Registered",
            (Code::MismatchSenderId, _) => "FCM Mismatch Sender ID",
            (Code::DeviceTokenNotForTopic, _) => {
                "APNS Device Token Does Not Match The Specified Topic"
            }
            (Code::TopicDisallowed, _) => "APNS Topic Disallowed",
            (Code::InvalidCredentials, Apns) => "APNS Invalid Credentials",
            (Code::InvalidCredentials, Fcm | Webpush) => "Invalid FCM API Key",
            (Code::TemporarilyBlacklisted, _) => "APNS Temporarily Blacklisted",
            (Code::QuotaExceeded, _) => "FCM Error (quota)",
            (Code::ProviderUnavailable, Apns) => "APNS Failed Delivery",
            (Code::ProviderUnavailable, Fcm | Webpush) => "FCM Error",
            (Code::PayloadTooLarge, _) => "Payload Too Large",
            (Code::InvalidPayload, _) => "Invalid Payload",
            (Code::BrowserUnsubscribed, _) => "BrowserUnsubscribed",
            (Code::Expired, _) => "Expired Before Send",
            (Code::DuplicatePlatformId, _) => "Duplicate Platform ID",
            (Code::UnknownApp, _) => "Unknown App",
            (Code::InvalidJob, _) => "Invalid Job",
            (Code::CampaignStopped, _) => "Campaign Stopped",
        }
    }

    /// APNs answer to code. Connection-level reasons (`ExpiredProviderToken`,
    /// `UnrelatedKeyIdInToken`, `Shutdown`, ...) are first handled by the APNs
    /// provider (new JWT, new connection, one retry); what reaches this table
    /// is the final answer.
    pub fn from_apns(status: u16, reason: &ApnsReason) -> Code {
        match reason {
            ApnsReason::BadDeviceToken | ApnsReason::MissingDeviceToken => Code::BadDeviceToken,
            ApnsReason::DeviceTokenNotForTopic => Code::DeviceTokenNotForTopic,
            ApnsReason::ExpiredToken | ApnsReason::Unregistered => Code::NotRegistered,
            ApnsReason::BadTopic | ApnsReason::MissingTopic | ApnsReason::TopicDisallowed => {
                Code::TopicDisallowed
            }
            ApnsReason::BadCertificate
            | ApnsReason::BadCertificateEnvironment
            | ApnsReason::ExpiredProviderToken
            | ApnsReason::Forbidden
            | ApnsReason::InvalidProviderToken
            | ApnsReason::MissingProviderToken
            | ApnsReason::UnrelatedKeyIdInToken
            | ApnsReason::BadEnvironmentKeyIdInToken => Code::InvalidCredentials,
            ApnsReason::TooManyRequests => Code::TemporarilyBlacklisted,
            ApnsReason::PayloadTooLarge => Code::PayloadTooLarge,
            ApnsReason::BadCollapseId
            | ApnsReason::BadExpirationDate
            | ApnsReason::BadMessageId
            | ApnsReason::BadPriority
            | ApnsReason::DuplicateHeaders
            | ApnsReason::InvalidPushType
            | ApnsReason::PayloadEmpty
            | ApnsReason::BadPath
            | ApnsReason::MethodNotAllowed => Code::InvalidPayload,
            ApnsReason::IdleTimeout
            | ApnsReason::TooManyProviderTokenUpdates
            | ApnsReason::InternalServerError
            | ApnsReason::ServiceUnavailable
            | ApnsReason::Shutdown => Code::ProviderUnavailable,
            ApnsReason::Unknown(_) => Code::from_status(status),
        }
    }

    /// FCM answer to code: `errorCode` first, then the rpc status, then the
    /// HTTP status (protocols.md §2.3). `hint` is what the `BadRequest`
    /// details or message said about an `INVALID_ARGUMENT`.
    pub fn from_fcm(
        status: u16,
        error_code: Option<&FcmErrorCode>,
        rpc: Option<&RpcStatus>,
        hint: FcmHint,
    ) -> Code {
        if let Some(code) = error_code {
            match code {
                FcmErrorCode::InvalidArgument => return hint.invalid_argument(),
                FcmErrorCode::Unregistered | FcmErrorCode::UnregisteredFid => {
                    return Code::NotRegistered
                }
                FcmErrorCode::SenderIdMismatch => return Code::MismatchSenderId,
                FcmErrorCode::QuotaExceeded => return Code::QuotaExceeded,
                FcmErrorCode::Unavailable | FcmErrorCode::Internal => {
                    return Code::ProviderUnavailable
                }
                FcmErrorCode::ThirdPartyAuthError | FcmErrorCode::ApnsAuthError => {
                    return Code::InvalidCredentials
                }
                FcmErrorCode::UnspecifiedError | FcmErrorCode::Unknown(_) => {}
            }
        }
        match rpc {
            Some(RpcStatus::InvalidArgument) => hint.invalid_argument(),
            Some(
                RpcStatus::Unauthenticated | RpcStatus::PermissionDenied | RpcStatus::NotFound,
            ) => Code::InvalidCredentials,
            Some(RpcStatus::ResourceExhausted) => Code::QuotaExceeded,
            Some(RpcStatus::Unavailable | RpcStatus::Internal | RpcStatus::DeadlineExceeded) => {
                Code::ProviderUnavailable
            }
            Some(RpcStatus::Other(_)) | None => match status {
                400 => hint.invalid_argument(),
                401 | 403 | 404 => Code::InvalidCredentials,
                _ => Code::from_status(status),
            },
        }
    }

    /// Web Push answer to code (protocols.md §6.3). Push services differ in
    /// their bodies, so only the status decides; 2xx is never an error and
    /// is not passed here.
    pub fn from_webpush(status: u16) -> Code {
        match status {
            404 | 410 => Code::BrowserUnsubscribed,
            413 => Code::PayloadTooLarge,
            429 => Code::QuotaExceeded,
            401 | 403 => Code::InvalidCredentials,
            500..=599 => Code::ProviderUnavailable,
            // 400 (bad TTL/Topic/encoding) and anything unexpected: the
            // request as built was refused, retrying it would not help.
            _ => Code::InvalidPayload,
        }
    }

    /// A request that got no HTTP answer (connect failure, reset, timeout).
    pub fn from_transport() -> Code {
        Code::ProviderUnavailable
    }

    /// Fallback for reasons this build does not know: decide on the status.
    pub fn from_status(status: u16) -> Code {
        match status {
            401 | 403 => Code::InvalidCredentials,
            404 | 410 => Code::NotRegistered,
            413 => Code::PayloadTooLarge,
            429 => Code::QuotaExceeded,
            500..=599 => Code::ProviderUnavailable,
            _ => Code::InvalidPayload,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an FCM `INVALID_ARGUMENT` was about, read from its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FcmHint {
    /// The registration token is malformed or not an FCM token.
    InvalidToken,
    /// The message is over the size limit.
    TooLarge,
    /// Anything else: a field of the message is wrong.
    #[default]
    Other,
}

impl FcmHint {
    fn invalid_argument(self) -> Code {
        match self {
            FcmHint::InvalidToken => Code::BadDeviceToken,
            FcmHint::TooLarge => Code::PayloadTooLarge,
            FcmHint::Other => Code::InvalidPayload,
        }
    }
}

/// Final delivery status of one recipient in a result entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Delivered,
    Failed,
    Retrying,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Retrying => "retrying",
        }
    }
}

/// What one delivery attempt came to: the code (none when delivered) and
/// what the provider said, kept raw for the result event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// `None` when the provider accepted the notification.
    pub code: Option<Code>,
    /// HTTP status of the provider's answer, if there was one.
    pub provider_status: Option<u16>,
    /// Raw reason / errorCode / status text as the provider sent it.
    pub provider_reason: Option<String>,
    /// apns-id or FCM message name.
    pub provider_id: Option<String>,
    /// Provider's Retry-After, when it gave one.
    pub retry_after: Option<Duration>,
    /// Time spent on the provider request.
    pub latency: Duration,
}

impl Outcome {
    pub fn delivered(provider_status: u16, provider_id: Option<String>) -> Outcome {
        Outcome {
            code: None,
            provider_status: Some(provider_status),
            provider_id,
            ..Outcome::default()
        }
    }

    /// A failure decided locally, without a provider request.
    pub fn local(code: Code, reason: impl Into<String>) -> Outcome {
        Outcome {
            code: Some(code),
            provider_reason: Some(reason.into()),
            ..Outcome::default()
        }
    }

    pub fn is_delivered(&self) -> bool {
        self.code.is_none()
    }

    pub fn class(&self) -> Option<Class> {
        self.code.map(Code::class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(c));
        }
        assert_eq!(Code::parse("Nope"), None);
    }

    #[test]
    fn apns_table_matches_design() {
        use ApnsReason as R;
        let cases = [
            (R::BadDeviceToken, Code::BadDeviceToken, Class::Token),
            (R::Unregistered, Code::NotRegistered, Class::Token),
            (R::ExpiredToken, Code::NotRegistered, Class::Token),
            (
                R::DeviceTokenNotForTopic,
                Code::DeviceTokenNotForTopic,
                Class::Token,
            ),
            (
                R::TopicDisallowed,
                Code::TopicDisallowed,
                Class::Credentials,
            ),
            (R::BadTopic, Code::TopicDisallowed, Class::Credentials),
            (R::MissingTopic, Code::TopicDisallowed, Class::Credentials),
            (
                R::InvalidProviderToken,
                Code::InvalidCredentials,
                Class::Credentials,
            ),
            (
                R::TooManyRequests,
                Code::TemporarilyBlacklisted,
                Class::Retry,
            ),
            (
                R::ServiceUnavailable,
                Code::ProviderUnavailable,
                Class::Retry,
            ),
            (R::PayloadTooLarge, Code::PayloadTooLarge, Class::Payload),
            (R::BadCollapseId, Code::InvalidPayload, Class::Payload),
        ];
        for (reason, code, class) in cases {
            let got = Code::from_apns(reason.status(), &reason);
            assert_eq!(got, code, "{reason}");
            assert_eq!(got.class(), class, "{reason}");
        }
        assert_eq!(
            Code::from_apns(503, &R::Unknown("X".into())),
            Code::ProviderUnavailable
        );
        assert_eq!(
            Code::from_apns(400, &R::Unknown("X".into())),
            Code::InvalidPayload
        );
    }

    #[test]
    fn fcm_table_matches_design() {
        use FcmErrorCode as E;
        let f = |s, e: E, h| Code::from_fcm(s, Some(&e), None, h);
        assert_eq!(f(404, E::Unregistered, FcmHint::Other), Code::NotRegistered);
        assert_eq!(
            f(403, E::SenderIdMismatch, FcmHint::Other),
            Code::MismatchSenderId
        );
        assert_eq!(
            f(400, E::InvalidArgument, FcmHint::InvalidToken),
            Code::BadDeviceToken
        );
        assert_eq!(
            f(400, E::InvalidArgument, FcmHint::TooLarge),
            Code::PayloadTooLarge
        );
        assert_eq!(
            f(400, E::InvalidArgument, FcmHint::Other),
            Code::InvalidPayload
        );
        assert_eq!(
            f(429, E::QuotaExceeded, FcmHint::Other),
            Code::QuotaExceeded
        );
        assert_eq!(
            f(503, E::Unavailable, FcmHint::Other),
            Code::ProviderUnavailable
        );
        assert_eq!(
            f(401, E::ThirdPartyAuthError, FcmHint::Other),
            Code::InvalidCredentials
        );
        let no_code = |s, r: RpcStatus| Code::from_fcm(s, None, Some(&r), FcmHint::Other);
        assert_eq!(
            no_code(401, RpcStatus::Unauthenticated),
            Code::InvalidCredentials
        );
        assert_eq!(
            no_code(403, RpcStatus::PermissionDenied),
            Code::InvalidCredentials
        );
        assert_eq!(
            Code::from_fcm(502, None, None, FcmHint::Other),
            Code::ProviderUnavailable
        );
    }

    #[test]
    fn webpush_table_matches_protocols() {
        let cases = [
            (404, Code::BrowserUnsubscribed, Class::Token),
            (410, Code::BrowserUnsubscribed, Class::Token),
            (413, Code::PayloadTooLarge, Class::Payload),
            (429, Code::QuotaExceeded, Class::Retry),
            (401, Code::InvalidCredentials, Class::Credentials),
            (403, Code::InvalidCredentials, Class::Credentials),
            (400, Code::InvalidPayload, Class::Payload),
            (500, Code::ProviderUnavailable, Class::Retry),
            (502, Code::ProviderUnavailable, Class::Retry),
            (503, Code::ProviderUnavailable, Class::Retry),
            (599, Code::ProviderUnavailable, Class::Retry),
            (405, Code::InvalidPayload, Class::Payload),
        ];
        for (status, code, class) in cases {
            let got = Code::from_webpush(status);
            assert_eq!(got, code, "{status}");
            assert_eq!(got.class(), class, "{status}");
        }
        for status in 400..=599 {
            let got = Code::from_webpush(status);
            assert_ne!(got, Code::NotRegistered, "{status}");
            if status >= 500 {
                assert_eq!(got.class(), Class::Retry, "{status}");
            }
        }
    }

    #[test]
    fn labels_follow_platform() {
        assert_eq!(
            Code::BadDeviceToken.label(Platform::Apns),
            "APNs Bad Device Token"
        );
        assert_eq!(
            Code::BadDeviceToken.label(Platform::Fcm),
            "FCM Token Invalid"
        );
        assert_eq!(
            Code::NotRegistered.label(Platform::Fcm),
            "FCM Not Registered"
        );
    }
}
