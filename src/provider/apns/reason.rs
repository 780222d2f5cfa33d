//! Every APNs rejection reason, paired with the HTTP status it comes with.
//!
//! Shared by the APNs provider (parsing answers) and the APNs simulator
//! (producing them), so that both speak exactly the same vocabulary.

/// An APNs `reason` string (protocols.md §1.4). `Unknown` keeps reasons Apple
/// adds later, so a result can still show the raw text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ApnsReason {
    BadCollapseId,
    BadDeviceToken,
    BadExpirationDate,
    BadMessageId,
    BadPriority,
    BadTopic,
    DeviceTokenNotForTopic,
    DuplicateHeaders,
    IdleTimeout,
    InvalidPushType,
    MissingDeviceToken,
    MissingTopic,
    PayloadEmpty,
    TopicDisallowed,
    BadCertificate,
    BadCertificateEnvironment,
    ExpiredProviderToken,
    Forbidden,
    InvalidProviderToken,
    MissingProviderToken,
    UnrelatedKeyIdInToken,
    /// Documented as `BadEnvironmentKeyIdInToken`; `BadEnvironmentKeyInToken`
    /// has been seen on the wire too. Both parse to this variant.
    BadEnvironmentKeyIdInToken,
    BadPath,
    MethodNotAllowed,
    ExpiredToken,
    Unregistered,
    PayloadTooLarge,
    TooManyProviderTokenUpdates,
    TooManyRequests,
    InternalServerError,
    ServiceUnavailable,
    Shutdown,
    /// A reason this build does not know; the raw string is kept.
    Unknown(String),
}

impl ApnsReason {
    /// Every known reason, for table-driven tests and the simulator.
    pub const KNOWN: [ApnsReason; 32] = [
        ApnsReason::BadCollapseId,
        ApnsReason::BadDeviceToken,
        ApnsReason::BadExpirationDate,
        ApnsReason::BadMessageId,
        ApnsReason::BadPriority,
        ApnsReason::BadTopic,
        ApnsReason::DeviceTokenNotForTopic,
        ApnsReason::DuplicateHeaders,
        ApnsReason::IdleTimeout,
        ApnsReason::InvalidPushType,
        ApnsReason::MissingDeviceToken,
        ApnsReason::MissingTopic,
        ApnsReason::PayloadEmpty,
        ApnsReason::TopicDisallowed,
        ApnsReason::BadCertificate,
        ApnsReason::BadCertificateEnvironment,
        ApnsReason::ExpiredProviderToken,
        ApnsReason::Forbidden,
        ApnsReason::InvalidProviderToken,
        ApnsReason::MissingProviderToken,
        ApnsReason::UnrelatedKeyIdInToken,
        ApnsReason::BadEnvironmentKeyIdInToken,
        ApnsReason::BadPath,
        ApnsReason::MethodNotAllowed,
        ApnsReason::ExpiredToken,
        ApnsReason::Unregistered,
        ApnsReason::PayloadTooLarge,
        ApnsReason::TooManyProviderTokenUpdates,
        ApnsReason::TooManyRequests,
        ApnsReason::InternalServerError,
        ApnsReason::ServiceUnavailable,
        ApnsReason::Shutdown,
    ];

    /// Parses a reason string as APNs sends it.
    pub fn parse(s: &str) -> ApnsReason {
        match s {
            "BadCollapseId" => Self::BadCollapseId,
            "BadDeviceToken" => Self::BadDeviceToken,
            "BadExpirationDate" => Self::BadExpirationDate,
            "BadMessageId" => Self::BadMessageId,
            "BadPriority" => Self::BadPriority,
            "BadTopic" => Self::BadTopic,
            "DeviceTokenNotForTopic" => Self::DeviceTokenNotForTopic,
            "DuplicateHeaders" => Self::DuplicateHeaders,
            "IdleTimeout" => Self::IdleTimeout,
            "InvalidPushType" => Self::InvalidPushType,
            "MissingDeviceToken" => Self::MissingDeviceToken,
            "MissingTopic" => Self::MissingTopic,
            "PayloadEmpty" => Self::PayloadEmpty,
            "TopicDisallowed" => Self::TopicDisallowed,
            "BadCertificate" => Self::BadCertificate,
            "BadCertificateEnvironment" => Self::BadCertificateEnvironment,
            "ExpiredProviderToken" => Self::ExpiredProviderToken,
            "Forbidden" => Self::Forbidden,
            "InvalidProviderToken" => Self::InvalidProviderToken,
            "MissingProviderToken" => Self::MissingProviderToken,
            "UnrelatedKeyIdInToken" => Self::UnrelatedKeyIdInToken,
            "BadEnvironmentKeyIdInToken" | "BadEnvironmentKeyInToken" => {
                Self::BadEnvironmentKeyIdInToken
            }
            "BadPath" => Self::BadPath,
            "MethodNotAllowed" => Self::MethodNotAllowed,
            "ExpiredToken" => Self::ExpiredToken,
            "Unregistered" => Self::Unregistered,
            "PayloadTooLarge" => Self::PayloadTooLarge,
            "TooManyProviderTokenUpdates" => Self::TooManyProviderTokenUpdates,
            "TooManyRequests" => Self::TooManyRequests,
            "InternalServerError" => Self::InternalServerError,
            "ServiceUnavailable" => Self::ServiceUnavailable,
            "Shutdown" => Self::Shutdown,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// The reason string as APNs writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BadCollapseId => "BadCollapseId",
            Self::BadDeviceToken => "BadDeviceToken",
            Self::BadExpirationDate => "BadExpirationDate",
            Self::BadMessageId => "BadMessageId",
            Self::BadPriority => "BadPriority",
            Self::BadTopic => "BadTopic",
            Self::DeviceTokenNotForTopic => "DeviceTokenNotForTopic",
            Self::DuplicateHeaders => "DuplicateHeaders",
            Self::IdleTimeout => "IdleTimeout",
            Self::InvalidPushType => "InvalidPushType",
            Self::MissingDeviceToken => "MissingDeviceToken",
            Self::MissingTopic => "MissingTopic",
            Self::PayloadEmpty => "PayloadEmpty",
            Self::TopicDisallowed => "TopicDisallowed",
            Self::BadCertificate => "BadCertificate",
            Self::BadCertificateEnvironment => "BadCertificateEnvironment",
            Self::ExpiredProviderToken => "ExpiredProviderToken",
            Self::Forbidden => "Forbidden",
            Self::InvalidProviderToken => "InvalidProviderToken",
            Self::MissingProviderToken => "MissingProviderToken",
            Self::UnrelatedKeyIdInToken => "UnrelatedKeyIdInToken",
            Self::BadEnvironmentKeyIdInToken => "BadEnvironmentKeyIdInToken",
            Self::BadPath => "BadPath",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::ExpiredToken => "ExpiredToken",
            Self::Unregistered => "Unregistered",
            Self::PayloadTooLarge => "PayloadTooLarge",
            Self::TooManyProviderTokenUpdates => "TooManyProviderTokenUpdates",
            Self::TooManyRequests => "TooManyRequests",
            Self::InternalServerError => "InternalServerError",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::Shutdown => "Shutdown",
            Self::Unknown(s) => s,
        }
    }

    /// The HTTP status APNs sends with this reason (`Unknown`: 400).
    pub fn status(&self) -> u16 {
        match self {
            Self::BadCollapseId
            | Self::BadDeviceToken
            | Self::BadExpirationDate
            | Self::BadMessageId
            | Self::BadPriority
            | Self::BadTopic
            | Self::DeviceTokenNotForTopic
            | Self::DuplicateHeaders
            | Self::IdleTimeout
            | Self::InvalidPushType
            | Self::MissingDeviceToken
            | Self::MissingTopic
            | Self::PayloadEmpty
            | Self::TopicDisallowed
            | Self::Unknown(_) => 400,
            Self::BadCertificate
            | Self::BadCertificateEnvironment
            | Self::ExpiredProviderToken
            | Self::Forbidden
            | Self::InvalidProviderToken
            | Self::MissingProviderToken
            | Self::UnrelatedKeyIdInToken
            | Self::BadEnvironmentKeyIdInToken => 403,
            Self::BadPath => 404,
            Self::MethodNotAllowed => 405,
            Self::ExpiredToken | Self::Unregistered => 410,
            Self::PayloadTooLarge => 413,
            Self::TooManyProviderTokenUpdates | Self::TooManyRequests => 429,
            Self::InternalServerError => 500,
            Self::ServiceUnavailable | Self::Shutdown => 503,
        }
    }
}

impl std::fmt::Display for ApnsReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_reason_round_trips() {
        for r in ApnsReason::KNOWN.iter() {
            assert_eq!(&ApnsReason::parse(r.as_str()), r);
        }
    }

    #[test]
    fn wire_alias_and_unknown() {
        assert_eq!(
            ApnsReason::parse("BadEnvironmentKeyInToken"),
            ApnsReason::BadEnvironmentKeyIdInToken
        );
        let r = ApnsReason::parse("SomethingNew");
        assert_eq!(r.as_str(), "SomethingNew");
        assert_eq!(r.status(), 400);
    }
}
