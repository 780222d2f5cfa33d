//! APNs request checks in pushy's proven order (protocols.md §4.1 item 3) and the scripted tokens.

use http::{HeaderMap, Method};

use crate::provider::apns::reason::ApnsReason;

/// Headers that must not repeat.
const SINGLE_HEADERS: [&str; 7] = [
    "apns-id",
    "apns-expiration",
    "apns-priority",
    "apns-topic",
    "apns-collapse-id",
    "apns-push-type",
    "authorization",
];

/// `apns-push-type` values and the topic suffix each requires (`None`: any topic).
const PUSH_TYPES: [(&str, Option<&str>); 11] = [
    ("alert", Some("")),
    ("background", Some("")),
    ("voip", Some(".voip")),
    ("complication", Some(".complication")),
    ("fileprovider", Some(".pushkit.fileprovider")),
    ("location", Some(".location-query")),
    ("liveactivity", Some(".push-type.liveactivity")),
    ("pushtotalk", Some(".voip-ptt")),
    ("widgets", Some(".push-type.widgets")),
    ("controls", Some(".push-type.controls")),
    ("mdm", None),
];

/// Prefix of tokens that force any reason: `eeee` + two decimal digits
/// indexing [`ApnsReason::KNOWN`].
pub const FORCE_PREFIX: &str = "eeee";

/// The checked request headers the later steps need.
#[derive(Debug)]
pub(crate) struct Checked<'a> {
    pub topic: String,
    pub push_type: Option<&'a str>,
    pub token: &'a str,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Steps up to and including the device-token format, in pushy's order.
pub(crate) fn check_request<'a>(
    method: &Method,
    path: &'a str,
    headers: &'a HeaderMap,
    cert_topic: Option<&str>,
    allowed: &[String],
) -> Result<Checked<'a>, ApnsReason> {
    if SINGLE_HEADERS
        .iter()
        .any(|h| headers.get_all(*h).iter().count() > 1)
    {
        return Err(ApnsReason::DuplicateHeaders);
    }
    if header(headers, "apns-id").is_some_and(|id| !is_uuid(id)) {
        return Err(ApnsReason::BadMessageId);
    }
    if method != Method::POST {
        return Err(ApnsReason::MethodNotAllowed);
    }
    let topic = match (header(headers, "apns-topic"), cert_topic) {
        (Some(t), _) if !t.is_empty() => t.to_owned(),
        (_, Some(uid)) => uid.to_owned(),
        _ => return Err(ApnsReason::MissingTopic),
    };
    if header(headers, "apns-collapse-id").is_some_and(|c| c.len() > 64) {
        return Err(ApnsReason::BadCollapseId);
    }
    let priority = match header(headers, "apns-priority") {
        None => None,
        Some("1") => Some(1),
        Some("5") => Some(5),
        Some("10") => Some(10),
        Some(_) => return Err(ApnsReason::BadPriority),
    };
    if header(headers, "apns-expiration").is_some_and(|e| e.parse::<u64>().is_err()) {
        return Err(ApnsReason::BadExpirationDate);
    }
    let push_type = header(headers, "apns-push-type");
    let suffix = match push_type {
        None => None,
        Some(p) => match PUSH_TYPES.iter().find(|(name, _)| *name == p) {
            Some((_, suffix)) => *suffix,
            None => return Err(ApnsReason::InvalidPushType),
        },
    };
    if push_type == Some("background") && priority == Some(10) {
        return Err(ApnsReason::BadPriority);
    }
    if push_type != Some("mdm") {
        check_topic(&topic, suffix, cert_topic, allowed)?;
    }
    let token = match path.strip_prefix("/3/device/") {
        None => return Err(ApnsReason::BadPath),
        Some("") => return Err(ApnsReason::MissingDeviceToken),
        Some(t) => t,
    };
    if token.len() < 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApnsReason::BadDeviceToken);
    }
    Ok(Checked {
        topic,
        push_type,
        token,
    })
}

/// `topic` = allowed bundle + the suffix of the push type.
fn check_topic(
    topic: &str,
    expected_suffix: Option<&str>,
    cert_topic: Option<&str>,
    allowed: &[String],
) -> Result<(), ApnsReason> {
    let found = PUSH_TYPES
        .iter()
        .filter_map(|(_, s)| *s)
        .filter(|s| !s.is_empty() && topic.ends_with(s))
        .max_by_key(|s| s.len())
        .unwrap_or("");
    if expected_suffix.is_some_and(|s| s != found) {
        return Err(ApnsReason::BadTopic);
    }
    let base = &topic[..topic.len() - found.len()];
    let ok = match cert_topic {
        Some(uid) => base == uid,
        None => allowed.iter().any(|t| t == base),
    };
    if ok {
        Ok(())
    } else {
        Err(ApnsReason::TopicDisallowed)
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A scripted outcome decided by the token alone, before authentication.
pub(crate) fn scripted_before_auth(token: &str) -> Option<ApnsReason> {
    let t = token.as_bytes();
    let starts = |p: &str| t.len() >= p.len() && t[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    if starts("dead") {
        return Some(ApnsReason::Unregistered);
    }
    if starts("bad0") {
        return Some(ApnsReason::BadDeviceToken);
    }
    if starts("70b1") {
        return Some(ApnsReason::DeviceTokenNotForTopic);
    }
    if starts(FORCE_PREFIX) {
        let digits = token.get(4..6)?;
        let index: usize = digits.parse().ok()?;
        return ApnsReason::KNOWN.get(index).cloned();
    }
    None
}

/// A token (64 hex chars) that makes the simulator answer with `reason`.
pub fn forced_token(reason: &ApnsReason) -> Option<String> {
    let index = ApnsReason::KNOWN.iter().position(|r| r == reason)?;
    Some(format!("{FORCE_PREFIX}{index:02}{}", "0".repeat(58)))
}

/// The 64-hex-char token made of `prefix` followed by `fill`-padding.
pub fn scripted_token(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        "0".repeat(64usize.saturating_sub(prefix.len()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, http::HeaderValue::from_static(v));
        }
        h
    }

    fn check(pairs: &[(&'static str, &'static str)]) -> Result<(), ApnsReason> {
        let allowed = vec!["com.example.shop".to_owned()];
        let path = format!("/3/device/{}", "ab".repeat(32));
        check_request(&Method::POST, &path, &headers(pairs), None, &allowed).map(|_| ())
    }

    #[test]
    fn header_rules() {
        let t = ("apns-topic", "com.example.shop");
        assert_eq!(check(&[t]), Ok(()));
        assert_eq!(check(&[]), Err(ApnsReason::MissingTopic));
        assert_eq!(check(&[t, t]), Err(ApnsReason::DuplicateHeaders));
        assert_eq!(check(&[t, ("apns-id", "x")]), Err(ApnsReason::BadMessageId));
        assert_eq!(
            check(&[t, ("apns-priority", "7")]),
            Err(ApnsReason::BadPriority)
        );
        assert_eq!(
            check(&[t, ("apns-push-type", "background"), ("apns-priority", "10")]),
            Err(ApnsReason::BadPriority)
        );
        assert_eq!(
            check(&[t, ("apns-push-type", "nope")]),
            Err(ApnsReason::InvalidPushType)
        );
        assert_eq!(
            check(&[t, ("apns-push-type", "voip")]),
            Err(ApnsReason::BadTopic)
        );
        assert_eq!(
            check(&[
                ("apns-topic", "com.example.shop.voip"),
                ("apns-push-type", "voip")
            ]),
            Ok(())
        );
        assert_eq!(
            check(&[("apns-topic", "com.other")]),
            Err(ApnsReason::TopicDisallowed)
        );
        assert_eq!(
            check(&[t, ("apns-expiration", "soon")]),
            Err(ApnsReason::BadExpirationDate)
        );
    }

    #[test]
    fn every_known_reason_has_a_forcing_token() {
        for r in ApnsReason::KNOWN.iter() {
            let token = forced_token(r).unwrap();
            assert_eq!(token.len(), 64);
            assert_eq!(scripted_before_auth(&token).as_ref(), Some(r));
        }
    }
}
