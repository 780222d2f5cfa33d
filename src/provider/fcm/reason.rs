//! FCM v1 error vocabulary: the `FcmError.errorCode` values and the
//! google.rpc canonical status strings.
//!
//! Shared by the FCM provider (parsing answers) and the FCM simulator
//! (producing them).

/// `google.firebase.fcm.v1.FcmError.errorCode` (protocols.md §2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FcmErrorCode {
    UnspecifiedError,
    InvalidArgument,
    Unregistered,
    SenderIdMismatch,
    QuotaExceeded,
    Unavailable,
    Internal,
    ThirdPartyAuthError,
    /// Old alias of `THIRD_PARTY_AUTH_ERROR`.
    ApnsAuthError,
    /// `UNREGISTERED_FID`, for installation-id targets.
    UnregisteredFid,
    /// A code this build does not know; the raw string is kept.
    Unknown(String),
}

impl FcmErrorCode {
    /// Every known code, for table-driven tests and the simulator.
    pub const KNOWN: [FcmErrorCode; 10] = [
        FcmErrorCode::UnspecifiedError,
        FcmErrorCode::InvalidArgument,
        FcmErrorCode::Unregistered,
        FcmErrorCode::SenderIdMismatch,
        FcmErrorCode::QuotaExceeded,
        FcmErrorCode::Unavailable,
        FcmErrorCode::Internal,
        FcmErrorCode::ThirdPartyAuthError,
        FcmErrorCode::ApnsAuthError,
        FcmErrorCode::UnregisteredFid,
    ];

    pub fn parse(s: &str) -> FcmErrorCode {
        match s {
            "UNSPECIFIED_ERROR" => Self::UnspecifiedError,
            "INVALID_ARGUMENT" => Self::InvalidArgument,
            "UNREGISTERED" => Self::Unregistered,
            "SENDER_ID_MISMATCH" => Self::SenderIdMismatch,
            "QUOTA_EXCEEDED" => Self::QuotaExceeded,
            "UNAVAILABLE" => Self::Unavailable,
            "INTERNAL" => Self::Internal,
            "THIRD_PARTY_AUTH_ERROR" => Self::ThirdPartyAuthError,
            "APNS_AUTH_ERROR" => Self::ApnsAuthError,
            "UNREGISTERED_FID" => Self::UnregisteredFid,
            other => Self::Unknown(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::UnspecifiedError => "UNSPECIFIED_ERROR",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::Unregistered => "UNREGISTERED",
            Self::SenderIdMismatch => "SENDER_ID_MISMATCH",
            Self::QuotaExceeded => "QUOTA_EXCEEDED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
            Self::ThirdPartyAuthError => "THIRD_PARTY_AUTH_ERROR",
            Self::ApnsAuthError => "APNS_AUTH_ERROR",
            Self::UnregisteredFid => "UNREGISTERED_FID",
            Self::Unknown(s) => s,
        }
    }

    /// The HTTP status and rpc status FCM sends with this code.
    pub fn http(&self) -> (u16, RpcStatus) {
        match self {
            Self::InvalidArgument => (400, RpcStatus::InvalidArgument),
            Self::Unregistered | Self::UnregisteredFid => (404, RpcStatus::NotFound),
            Self::SenderIdMismatch => (403, RpcStatus::PermissionDenied),
            Self::QuotaExceeded => (429, RpcStatus::ResourceExhausted),
            Self::Unavailable => (503, RpcStatus::Unavailable),
            Self::Internal | Self::UnspecifiedError | Self::Unknown(_) => {
                (500, RpcStatus::Internal)
            }
            Self::ThirdPartyAuthError | Self::ApnsAuthError => (401, RpcStatus::Unauthenticated),
        }
    }
}

/// google.rpc canonical status names, as in the `error.status` field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RpcStatus {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Internal,
    DeadlineExceeded,
    /// Anything else (e.g. `FAILED_PRECONDITION`), raw string kept.
    Other(String),
}

impl RpcStatus {
    pub fn parse(s: &str) -> RpcStatus {
        match s {
            "INVALID_ARGUMENT" => Self::InvalidArgument,
            "UNAUTHENTICATED" => Self::Unauthenticated,
            "PERMISSION_DENIED" => Self::PermissionDenied,
            "NOT_FOUND" => Self::NotFound,
            "RESOURCE_EXHAUSTED" => Self::ResourceExhausted,
            "UNAVAILABLE" => Self::Unavailable,
            "INTERNAL" => Self::Internal,
            "DEADLINE_EXCEEDED" => Self::DeadlineExceeded,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::Other(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_is_kept() {
        for c in FcmErrorCode::KNOWN.iter() {
            assert_eq!(&FcmErrorCode::parse(c.as_str()), c);
        }
        assert_eq!(FcmErrorCode::parse("NEW_THING").as_str(), "NEW_THING");
        assert_eq!(
            RpcStatus::parse("FAILED_PRECONDITION").as_str(),
            "FAILED_PRECONDITION"
        );
    }
}
