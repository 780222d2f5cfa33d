//! FCM v1 `messages:send` body checks (protocols.md §2.1, §4.2 item 2) and google.rpc error bodies.

use serde_json::{json, Map, Value};

use crate::provider::fcm::reason::{FcmErrorCode, RpcStatus};

/// An error answer in google.rpc form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RpcError {
    pub status: u16,
    pub rpc: RpcStatus,
    pub message: String,
    pub details: Vec<Value>,
    pub retry_after: Option<u64>,
}

impl RpcError {
    pub(crate) fn new(status: u16, rpc: RpcStatus, message: impl Into<String>) -> RpcError {
        RpcError {
            status,
            rpc,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    /// The standard error for an `FcmError` code, with its detail.
    pub(crate) fn fcm(code: &FcmErrorCode) -> RpcError {
        let (status, rpc) = code.http();
        let message = match code {
            FcmErrorCode::Unregistered | FcmErrorCode::UnregisteredFid => {
                "Requested entity was not found."
            }
            FcmErrorCode::SenderIdMismatch => "SenderId mismatch",
            FcmErrorCode::InvalidArgument => {
                "The registration token is not a valid FCM registration token"
            }
            FcmErrorCode::QuotaExceeded => "Quota exceeded for quota metric 'messages'.",
            FcmErrorCode::Unavailable => "The service is currently unavailable.",
            FcmErrorCode::ThirdPartyAuthError => "Auth error from APNS or Web Push Service",
            _ => "Internal error encountered.",
        };
        let mut e = RpcError::new(status, rpc, message);
        e.details.push(fcm_detail(code));
        e
    }

    /// 400 INVALID_ARGUMENT with a BadRequest field violation (and FcmError
    /// INVALID_ARGUMENT unless `no_fcm_error`, as for over-size messages).
    pub(crate) fn invalid(field: &str, description: &str, no_fcm_error: bool) -> RpcError {
        let mut e = RpcError::new(400, RpcStatus::InvalidArgument, description);
        e.details.push(bad_request(field, description));
        if !no_fcm_error {
            e.details.push(fcm_detail(&FcmErrorCode::InvalidArgument));
        }
        e
    }

    pub(crate) fn body(&self) -> Value {
        let mut error = json!({
            "code": self.status,
            "message": self.message,
            "status": self.rpc.as_str(),
        });
        if !self.details.is_empty() {
            error["details"] = Value::Array(self.details.clone());
        }
        json!({ "error": error })
    }
}

pub(crate) fn fcm_detail(code: &FcmErrorCode) -> Value {
    json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code.as_str()})
}

pub(crate) fn bad_request(field: &str, description: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field, "description": description}]})
}

/// The checked parts of a send request.
#[derive(Debug)]
pub(crate) struct SendRequest {
    pub validate_only: bool,
    /// `message.token`, when the target is a token.
    pub token: Option<String>,
}

/// Validates the JSON body of `messages:send`.
pub(crate) fn check(body: &[u8]) -> Result<SendRequest, RpcError> {
    let root: Value = serde_json::from_slice(body)
        .map_err(|e| RpcError::invalid("", &format!("Invalid JSON payload received. {e}"), true))?;
    let message = root
        .get("message")
        .and_then(Value::as_object)
        .ok_or_else(|| RpcError::invalid("message", "Message must be set.", false))?;
    let targets = ["token", "topic", "condition", "fid"]
        .iter()
        .filter(|t| message.contains_key(**t))
        .count();
    match targets {
        0 => {
            return Err(RpcError::invalid(
                "message",
                "Recipient of the message is not set.",
                false,
            ))
        }
        1 => {}
        _ => {
            return Err(RpcError::invalid(
                "message",
                "Exactly one of token, topic, condition or fid must be set.",
                false,
            ))
        }
    }
    check_data(message.get("data"), "message.data")?;
    if let Some(android) = message.get("android").and_then(Value::as_object) {
        check_data(android.get("data"), "message.android.data")?;
        check_android(android)?;
    }
    let limit = if message.contains_key("token") {
        4096
    } else {
        2048
    };
    if payload_size(message) > limit {
        return Err(RpcError::invalid(
            "message",
            &format!("Message is too big: the payload exceeds {limit} bytes."),
            true,
        ));
    }
    Ok(SendRequest {
        validate_only: root
            .get("validate_only")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        token: message
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

fn check_data(data: Option<&Value>, field: &str) -> Result<(), RpcError> {
    let Some(data) = data else { return Ok(()) };
    let Some(map) = data.as_object() else {
        return Err(RpcError::invalid(
            field,
            &format!("Invalid value at '{field}'"),
            false,
        ));
    };
    for (i, (key, value)) in map.iter().enumerate() {
        if !value.is_string() {
            let at = format!("{field}[{i}].value");
            return Err(RpcError::invalid(
                &at,
                &format!("Invalid value at '{at}' (TYPE_STRING)"),
                false,
            ));
        }
        if key == "from" || key == "gcm" || key.starts_with("google") || key == "message_type" {
            return Err(RpcError::invalid(
                field,
                &format!("Invalid data key: {key} is reserved."),
                false,
            ));
        }
    }
    Ok(())
}

fn check_android(android: &Map<String, Value>) -> Result<(), RpcError> {
    if let Some(ttl) = android.get("ttl") {
        let field = "message.android.ttl";
        let ok = ttl
            .as_str()
            .and_then(parse_duration_secs)
            .is_some_and(|s| s <= 2_419_200.0);
        if !ok {
            return Err(RpcError::invalid(
                field,
                &format!("Invalid value at '{field}' (type.googleapis.com/google.protobuf.Duration), {ttl}"),
                false,
            ));
        }
    }
    if let Some(priority) = android.get("priority") {
        let ok = priority
            .as_str()
            .is_some_and(|p| p.eq_ignore_ascii_case("normal") || p.eq_ignore_ascii_case("high"));
        if !ok {
            let field = "message.android.priority";
            return Err(RpcError::invalid(
                field,
                &format!("Invalid value at '{field}' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {priority}"),
                false,
            ));
        }
    }
    Ok(())
}

/// A protobuf Duration string `"<secs>[.<frac>]s"` (non-negative) in seconds.
fn parse_duration_secs(s: &str) -> Option<f64> {
    let n = s.strip_suffix('s')?;
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > 9 {
        return None;
    }
    n.parse().ok()
}

/// Payload bytes as FCM counts them: data keys + values (message and
/// android), plus notification title/body/image.
fn payload_size(message: &Map<String, Value>) -> usize {
    let data_size = |v: Option<&Value>| {
        v.and_then(Value::as_object).map_or(0, |m| {
            m.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum::<usize>()
        })
    };
    let notification = message
        .get("notification")
        .and_then(Value::as_object)
        .map_or(0, |n| {
            ["title", "body", "image"]
                .iter()
                .filter_map(|k| n.get(*k).and_then(Value::as_str))
                .map(str::len)
                .sum::<usize>()
        });
    let android = message.get("android").and_then(|a| a.get("data"));
    data_size(message.get("data")) + data_size(android) + notification
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(body: Value) -> Option<String> {
        check(body.to_string().as_bytes()).err().map(|e| {
            e.body()["error"]["status"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
    }

    #[test]
    fn message_rules() {
        assert_eq!(code_of(json!({"message": {"token": "t"}})), None);
        let invalid = Some("INVALID_ARGUMENT".to_owned());
        assert_eq!(code_of(json!({"message": {}})), invalid);
        assert_eq!(
            code_of(json!({"message": {"token": "t", "topic": "x"}})),
            invalid
        );
        assert_eq!(
            code_of(json!({"message": {"token": "t", "data": {"a": 1}}})),
            invalid
        );
        assert_eq!(
            code_of(json!({"message": {"token": "t", "data": {"google.x": "1"}}})),
            invalid
        );
        let ttl = |t: &str| code_of(json!({"message": {"token": "t", "android": {"ttl": t}}}));
        assert_eq!(ttl("3.5s"), None);
        assert_eq!(ttl("2419200s"), None);
        assert_eq!(ttl("2419201s"), invalid);
        assert_eq!(ttl("300"), invalid);
        let prio =
            |p: &str| code_of(json!({"message": {"token": "t", "android": {"priority": p}}}));
        assert_eq!(prio("high"), None);
        assert_eq!(prio("NORMAL"), None);
        assert_eq!(prio("urgent"), invalid);
        let big = "x".repeat(4097);
        assert_eq!(
            code_of(json!({"message": {"token": "t", "data": {"k": big}}})),
            invalid
        );
        let topic = "x".repeat(2048);
        assert_eq!(
            code_of(json!({"message": {"topic": "news", "data": {"k": topic}}})),
            invalid
        );
    }
}
