//! Parses an FCM v1 answer: the message name on success, the google.rpc error body otherwise.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::reason::{FcmErrorCode, RpcStatus};
use crate::outcome::{Code, FcmHint};

/// What FCM said about one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FcmAnswer {
    pub status: u16,
    /// `projects/<p>/messages/<id>` on success.
    pub name: Option<String>,
    /// `FcmError.errorCode` from `details[]`, wherever it sits.
    pub error_code: Option<FcmErrorCode>,
    /// `error.status`.
    pub rpc: Option<RpcStatus>,
    pub message: Option<String>,
    /// What an `INVALID_ARGUMENT` was about.
    pub hint: FcmHint,
    /// The raw APNs reason of an `ApnsError` detail (iOS targets).
    pub apns_reason: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

/// Reads status and body; junk bodies (a 502 HTML page) leave only the status.
pub fn parse(status: u16, body: &[u8]) -> FcmAnswer {
    let mut a = FcmAnswer {
        status,
        ..FcmAnswer::default()
    };
    let Ok(env) = serde_json::from_slice::<Envelope>(body) else {
        return a;
    };
    a.name = env.name;
    let Some(err) = env.error else {
        return a;
    };
    a.rpc = err.status.as_deref().map(RpcStatus::parse);
    for d in &err.details {
        read_detail(&mut a, d);
    }
    if a.hint == FcmHint::Other {
        a.hint = hint_from_text(err.message.as_deref().unwrap_or(""));
    }
    a.message = err.message;
    a
}

fn read_detail(a: &mut FcmAnswer, d: &Value) {
    let ty = d.get("@type").and_then(Value::as_str).unwrap_or("");
    let kind = ty.rsplit('/').next().unwrap_or(ty);
    match kind {
        "google.firebase.fcm.v1.FcmError" => {
            if let Some(c) = d.get("errorCode").and_then(Value::as_str) {
                a.error_code = Some(FcmErrorCode::parse(c));
            }
        }
        "google.firebase.fcm.v1.ApnsError" => {
            a.apns_reason = d.get("reason").and_then(Value::as_str).map(str::to_owned);
        }
        "google.rpc.BadRequest" => {
            let violations = d.get("fieldViolations").and_then(Value::as_array);
            for v in violations.into_iter().flatten() {
                let field = v.get("field").and_then(Value::as_str).unwrap_or("");
                let desc = v.get("description").and_then(Value::as_str).unwrap_or("");
                let h = if field == "message.token" {
                    FcmHint::InvalidToken
                } else {
                    hint_from_text(desc)
                };
                if h != FcmHint::Other {
                    a.hint = h;
                }
            }
        }
        _ => {}
    }
}

/// Reads an error text for "the token is invalid" or "the message is too big".
fn hint_from_text(text: &str) -> FcmHint {
    let t = text.to_ascii_lowercase();
    if t.contains("registration token") && (t.contains("invalid") || t.contains("not a valid")) {
        FcmHint::InvalidToken
    } else if t.contains("too big") || t.contains("too large") || t.contains("exceeds") {
        FcmHint::TooLarge
    } else {
        FcmHint::Other
    }
}

impl FcmAnswer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The code of design.md for this (failed) answer.
    pub fn code(&self) -> Code {
        Code::from_fcm(
            self.status,
            self.error_code.as_ref(),
            self.rpc.as_ref(),
            self.hint,
        )
    }

    /// The raw reason for the result: errorCode, else rpc status, else HTTP status.
    pub fn reason(&self) -> String {
        if let Some(c) = &self.error_code {
            return c.as_str().to_owned();
        }
        if let Some(r) = &self.rpc {
            return r.as_str().to_owned();
        }
        format!("HTTP {}", self.status)
    }

    /// A 401 without an FcmError: the access token was refused, refresh it.
    pub fn is_unauthenticated(&self) -> bool {
        self.status == 401 && self.error_code.is_none()
    }
}

/// `Retry-After` in either RFC 9110 form (delta-seconds or HTTP-date); the
/// APNs provider reads its answers' header through this too.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    crate::provider::retry_after::from_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Class;
    use proptest::prelude::*;

    #[test]
    fn unregistered_with_details_in_any_order() {
        let body = br#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND",
          "details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure"},
                     {"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
        let a = parse(404, body);
        assert_eq!(a.error_code, Some(FcmErrorCode::Unregistered));
        assert_eq!(a.rpc, Some(RpcStatus::NotFound));
        assert_eq!(a.code(), Code::NotRegistered);
        assert_eq!(a.reason(), "UNREGISTERED");
    }

    #[test]
    fn invalid_token_from_field_violation_or_message() {
        let body = br#"{"error":{"code":400,"message":"Invalid registration token","status":"INVALID_ARGUMENT",
          "details":[{"@type":"type.googleapis.com/google.rpc.BadRequest",
                      "fieldViolations":[{"field":"message.token","description":"Invalid registration token"}]},
                     {"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"}]}}"#;
        let a = parse(400, body);
        assert_eq!(a.hint, FcmHint::InvalidToken);
        assert_eq!(a.code(), Code::BadDeviceToken);
        assert_eq!(a.code().class(), Class::Token);
        let body = br#"{"error":{"code":400,"status":"INVALID_ARGUMENT",
          "message":"The registration token is not a valid FCM registration token"}}"#;
        assert_eq!(parse(400, body).code(), Code::BadDeviceToken);
        let body =
            br#"{"error":{"code":400,"status":"INVALID_ARGUMENT","message":"Message is too big"}}"#;
        assert_eq!(parse(400, body).code(), Code::PayloadTooLarge);
        let body = br#"{"error":{"code":400,"status":"INVALID_ARGUMENT","message":"Invalid value at 'message.data[0].value'"}}"#;
        assert_eq!(parse(400, body).code(), Code::InvalidPayload);
    }

    #[test]
    fn apns_error_and_unauthenticated() {
        let body = br#"{"error":{"code":401,"status":"UNAUTHENTICATED","details":[
          {"@type":"type.googleapis.com/google.firebase.fcm.v1.ApnsError","statusCode":403,"reason":"InvalidProviderToken"},
          {"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"THIRD_PARTY_AUTH_ERROR"}]}}"#;
        let a = parse(401, body);
        assert_eq!(a.apns_reason.as_deref(), Some("InvalidProviderToken"));
        assert_eq!(a.code(), Code::InvalidCredentials);
        assert!(!a.is_unauthenticated());
        let a = parse(401, br#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#);
        assert!(a.is_unauthenticated());
        assert_eq!(a.reason(), "UNAUTHENTICATED");
    }

    #[test]
    fn success_and_junk() {
        let a = parse(200, br#"{"name":"projects/p/messages/123"}"#);
        assert!(a.is_success());
        assert_eq!(a.name.as_deref(), Some("projects/p/messages/123"));
        let a = parse(
            502,
            b"<!DOCTYPE html><html>Error 502 (Server Error)!!1</html>",
        );
        assert_eq!(a.code(), Code::ProviderUnavailable);
        assert_eq!(a.reason(), "HTTP 502");
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", http::HeaderValue::from_static("30"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.insert("retry-after", http::HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        // An HTTP-date: a past one means "now", a far one a long wait.
        h.insert(
            "retry-after",
            http::HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(
            "retry-after",
            http::HeaderValue::from_static("Fri, 01 Jan 20xx 00:00:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
        h.insert(
            "retry-after",
            http::HeaderValue::from_static("Fri, 31 Dec 9999 23:59:59 GMT"),
        );
        assert!(retry_after(&h).is_some_and(|d| d > Duration::from_secs(3600 * 24 * 365)));
    }

    proptest! {
        #[test]
        fn never_panics(status in 0u16..1000, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let a = parse(status, &body);
            let _ = (a.code(), a.reason());
        }

        #[test]
        fn never_panics_on_error_shapes(
            msg in ".{0,40}", st in "[A-Z_]{0,20}", code in "[A-Z_]{0,20}", field in ".{0,20}",
            ty in prop_oneof![Just("google.rpc.BadRequest"), Just("google.firebase.fcm.v1.FcmError"), Just("x")],
        ) {
            let body = serde_json::json!({"error": {"message": msg, "status": st, "details": [
                {"@type": format!("type.googleapis.com/{ty}"), "errorCode": code,
                 "fieldViolations": [{"field": field, "description": msg}, 7]}, "junk", null]}});
            let a = parse(400, body.to_string().as_bytes());
            let _ = (a.code(), a.reason());
        }
    }
}
