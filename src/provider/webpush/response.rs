//! Reads a push service's answer: 2xx is delivered (the `Location` is the
//! message id), anything else goes through [`Code::from_webpush`] with its
//! Retry-After and a short reason.

use std::time::Duration;

use http::HeaderMap;

use crate::outcome::{Code, Outcome};

/// Longest reason text kept from a response body.
const MAX_REASON: usize = 200;

/// The outcome of one answer.
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8], latency: Duration) -> Outcome {
    if (200..300).contains(&status) {
        let location = header(headers, "location").map(str::to_owned);
        return Outcome {
            latency,
            ..Outcome::delivered(status, location)
        };
    }
    Outcome {
        code: Some(Code::from_webpush(status)),
        provider_status: Some(status),
        provider_reason: Some(reason(status, body)),
        provider_id: None,
        retry_after: retry_after(headers),
        latency,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110), through the
/// providers' shared parser.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    crate::provider::retry_after::from_headers(headers)
}

/// The body's `reason` / `message` / `error` (Apple, Mozilla, Google send
/// JSON), else the body as text, else the status text; capped, one line.
fn reason(status: u16, body: &[u8]) -> String {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let from_json = json.as_ref().and_then(|v| {
        ["reason", "message", "error"]
            .iter()
            .find_map(|k| v.get(k).and_then(|x| x.as_str()))
            .map(str::to_owned)
    });
    let text = from_json
        .or_else(|| {
            let t = String::from_utf8_lossy(body).trim().to_owned();
            (!t.is_empty()).then_some(t)
        })
        .unwrap_or_else(|| {
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("unknown status")
                .to_owned()
        });
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    one_line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Class;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn created_is_delivered_with_location() {
        let o = classify(
            201,
            &headers(&[("location", "/m/1")]),
            b"",
            Duration::from_millis(3),
        );
        assert!(o.is_delivered());
        assert_eq!(o.provider_id.as_deref(), Some("/m/1"));
        assert_eq!(o.provider_status, Some(201));
        assert_eq!(o.latency, Duration::from_millis(3));
    }

    #[test]
    fn errors_map_with_reason_and_retry_after() {
        let o = classify(
            429,
            &headers(&[("retry-after", "17")]),
            b"slow down",
            Duration::ZERO,
        );
        assert_eq!(o.code, Some(Code::QuotaExceeded));
        assert_eq!(o.retry_after, Some(Duration::from_secs(17)));
        assert_eq!(o.provider_reason.as_deref(), Some("slow down"));
        let o = classify(
            403,
            &HeaderMap::new(),
            br#"{"reason":"BadJwtToken"}"#,
            Duration::ZERO,
        );
        assert_eq!(o.code, Some(Code::InvalidCredentials));
        assert_eq!(o.provider_reason.as_deref(), Some("BadJwtToken"));
        let o = classify(410, &HeaderMap::new(), b"", Duration::ZERO);
        assert_eq!(o.class(), Some(Class::Token));
        assert_eq!(o.provider_reason.as_deref(), Some("Gone"));
        assert_eq!(o.retry_after, None);
    }

    #[test]
    fn retry_after_as_an_http_date() {
        // A date in the past: retry now (still "the service gave one").
        let o = classify(
            503,
            &headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]),
            b"",
            Duration::ZERO,
        );
        assert_eq!(o.code, Some(Code::ProviderUnavailable));
        assert_eq!(o.retry_after, Some(Duration::ZERO));
        let o = classify(
            429,
            &headers(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]),
            b"",
            Duration::ZERO,
        );
        assert!(o
            .retry_after
            .is_some_and(|d| d > Duration::from_secs(86_400)));
        let o = classify(
            429,
            &headers(&[("retry-after", "tomorrow")]),
            b"",
            Duration::ZERO,
        );
        assert_eq!(o.retry_after, None);
    }
}
