//! Reads a `Retry-After` header (RFC 9110 section 10.2.3) into a delay: both
//! forms, delta-seconds (`120`) and an HTTP-date (`Fri, 31 Dec 1999 23:59:59 GMT`,
//! plus the obsolete RFC 850 and asctime forms recipients must accept).
//!
//! Shared by every provider's response parsing (APNs, FCM, Web Push), so
//! one push service sending dates and another sending seconds both slow
//! the gateway down the same way.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The delay a response's `Retry-After` asks for, counted from now; `None`
/// when there is no such header or it is neither form.
pub fn from_headers(headers: &HeaderMap) -> Option<Duration> {
    from_headers_at(headers, SystemTime::now())
}

/// [`from_headers`] with an explicit clock (for HTTP-dates).
pub fn from_headers_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    parse(value, now)
}

/// One header value: delta-seconds, or an HTTP-date made relative to `now`.
/// A date already past means "now" (`Some(ZERO)`), as RFC 9110 implies.
pub fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate instead of being dropped.
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example date).
    fn example_date() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn delta_seconds() {
        let now = example_date();
        assert_eq!(parse("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse("-5", now), None);
        assert_eq!(parse("1.5", now), None);
        assert_eq!(parse("soon", now), None);
        assert_eq!(parse("", now), None);
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        let now = example_date() - Duration::from_secs(90);
        let want = Some(Duration::from_secs(90));
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", now), want);
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT", now), want);
        assert_eq!(parse("Sun Nov  6 08:49:37 1994", now), want);
    }

    #[test]
    fn past_date_means_now_and_junk_dates_are_ignored() {
        let later = example_date() + Duration::from_secs(3600);
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(Duration::ZERO)
        );
        assert_eq!(parse("Sun, 06 Nov 1994 25:49:37 GMT", later), None);
        assert_eq!(parse("06 Nov 1994", later), None);
    }

    #[test]
    fn from_a_header_map() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h), None);
        h.insert(
            "retry-after",
            http::HeaderValue::from_static("Sun, 06 Nov 1994 08:49:52 GMT"),
        );
        assert_eq!(
            from_headers_at(&h, example_date()),
            Some(Duration::from_secs(15))
        );
        h.insert("retry-after", http::HeaderValue::from_static("7"));
        assert_eq!(from_headers(&h), Some(Duration::from_secs(7)));
    }
}
