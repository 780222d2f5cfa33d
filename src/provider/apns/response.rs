//! Parses an APNs answer (`:status`, `apns-id`, `{"reason", "timestamp"}` body) into a reason.

use super::reason::ApnsReason;

/// What APNs said about one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsAnswer {
    pub status: u16,
    /// `None` on success, or when the body carried no readable reason.
    pub reason: Option<ApnsReason>,
    /// For 410: when APNs last saw the token invalid (ms since the epoch).
    pub timestamp_ms: Option<u64>,
}

#[derive(serde::Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    reason: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
}

/// Reads the status and body. Junk bodies are tolerated: the reason is then
/// unknown and the code is decided on the status.
pub fn parse(status: u16, body: &[u8]) -> ApnsAnswer {
    let parsed: Option<Body<'_>> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(body).ok()
    };
    let (reason, timestamp_ms) = match parsed {
        Some(b) => (
            b.reason.map(|r| ApnsReason::parse(&r)),
            b.timestamp
                .and_then(|t| t.as_u64().or_else(|| t.as_f64().map(|f| f as u64))),
        ),
        None => (None, None),
    };
    ApnsAnswer {
        status,
        reason,
        timestamp_ms,
    }
}

impl ApnsAnswer {
    pub fn is_success(&self) -> bool {
        self.status == 200
    }

    /// The reason to classify with: the parsed one, or an unknown reason
    /// named after the status when the body said nothing readable.
    pub fn reason_or_status(&self) -> ApnsReason {
        self.reason
            .clone()
            .unwrap_or_else(|| ApnsReason::Unknown(format!("HTTP {}", self.status)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Code;
    use proptest::prelude::*;

    #[test]
    fn parses_reason_and_timestamp() {
        let a = parse(
            410,
            br#"{"reason":"Unregistered","timestamp":1700000000123}"#,
        );
        assert_eq!(a.reason, Some(ApnsReason::Unregistered));
        assert_eq!(a.timestamp_ms, Some(1_700_000_000_123));
        let a = parse(400, br#"{"reason":"BrandNewReason"}"#);
        assert_eq!(a.reason, Some(ApnsReason::Unknown("BrandNewReason".into())));
        assert_eq!(
            Code::from_apns(a.status, &a.reason_or_status()),
            Code::InvalidPayload
        );
    }

    #[test]
    fn every_known_reason_parses() {
        for r in ApnsReason::KNOWN.iter() {
            let body = format!(r#"{{"reason":"{}"}}"#, r.as_str());
            assert_eq!(parse(r.status(), body.as_bytes()).reason.as_ref(), Some(r));
        }
    }

    #[test]
    fn junk_falls_back_on_status() {
        let a = parse(503, b"<html>oops</html>");
        assert_eq!(a.reason, None);
        assert_eq!(
            Code::from_apns(503, &a.reason_or_status()),
            Code::ProviderUnavailable
        );
        assert!(parse(200, b"").is_success());
        assert_eq!(parse(400, br#"{"reason":7}"#).reason, None);
    }

    proptest! {
        #[test]
        fn never_panics(status in 0u16..1000, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let a = parse(status, &body);
            let _ = Code::from_apns(a.status, &a.reason_or_status());
        }

        #[test]
        fn never_panics_on_jsonish(s in r#"\{("reason"|"timestamp"|:|,|"[A-Za-z]*"|[0-9.e-]+|null|\[|\]|\{|\})*\}?"#) {
            let _ = parse(400, s.as_bytes());
        }
    }
}
