//! The simulator's VAPID check (RFC 8292): the `vapid t=, k=` header, the
//! ES256 signature against `k`, `aud` = the origin, `exp` within 24 hours,
//! a `mailto:`/`https:` subject, and optionally a list of trusted keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde_json::Value;

/// A refusal: the status and the `reason` sent back (Apple's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// What a valid header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vapid {
    pub subject: String,
    /// base64url of the public key (`k=`).
    pub key: String,
}

/// Checks `header` for a request to `origin` at `now` (unix seconds).
/// `trusted`: uncompressed public keys accepted; empty = any key.
pub fn check(
    header: Option<&str>,
    origin: &str,
    trusted: &[Vec<u8>],
    now: u64,
) -> Result<Vapid, Refusal> {
    let header = header.ok_or(refuse(401, "MissingAuthorization"))?;
    let (scheme, params) = header
        .split_once(' ')
        .ok_or(refuse(401, "MissingAuthorization"))?;
    if !scheme.eq_ignore_ascii_case("vapid") {
        return Err(refuse(401, "MissingAuthorization"));
    }
    let mut t = None;
    let mut k = None;
    for p in params.split(',') {
        match p.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.trim()),
            Some(("k", v)) => k = Some(v.trim()),
            _ => {}
        }
    }
    let (t, k) = t.zip(k).ok_or(refuse(403, "BadJwtToken"))?;
    let key = B64
        .decode(k.trim_end_matches('='))
        .map_err(|_| refuse(403, "BadPublicKey"))?;
    if key.len() != 65 || key[0] != 4 {
        return Err(refuse(403, "BadPublicKey"));
    }
    if !trusted.is_empty() && !trusted.contains(&key) {
        return Err(refuse(403, "VapidPkHashMismatch"));
    }
    let claims = verify_jwt(t, &key)?;
    let aud = claims.get("aud").and_then(Value::as_str);
    if aud != Some(origin) {
        return Err(refuse(403, "BadJwtToken"));
    }
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    if exp <= now {
        return Err(refuse(403, "ExpiredJwtToken"));
    }
    if exp > now + 24 * 3600 + 60 {
        return Err(refuse(403, "BadJwtToken"));
    }
    let subject = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
        return Err(refuse(403, "BadJwtToken"));
    }
    Ok(Vapid {
        subject: subject.to_owned(),
        key: k.to_owned(),
    })
}

/// Verifies an ES256 JWT with `key`; returns its claims.
fn verify_jwt(jwt: &str, key: &[u8]) -> Result<Value, Refusal> {
    let bad = refuse(403, "BadJwtToken");
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad);
    };
    let json = |part: &str| -> Result<Value, Refusal> {
        let bytes = B64.decode(part).map_err(|_| bad)?;
        serde_json::from_slice(&bytes).map_err(|_| bad)
    };
    let header = json(h)?;
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(bad);
    }
    if header
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(|t| t != "JWT")
    {
        return Err(bad);
    }
    let sig = B64.decode(s).map_err(|_| bad)?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| bad)?;
    json(c)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::provider::webpush::auth::VapidSigner;

    fn signer(file: &str) -> VapidSigner {
        let pem =
            std::fs::read(format!("{}/config/dev/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let der = crate::config::webpush::vapid_key(&pem).unwrap();
        VapidSigner::new(&der, "mailto:dev@example.com", Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn accepts_ours_and_refuses_the_rest() {
        let s = signer("vapid-dev.p8");
        let other = signer("vapid-other.p8");
        let trusted = vec![B64.decode(s.public_key()).unwrap()];
        let origin = "https://127.0.0.1:4444";
        let h = s.authorization(origin, 1000).unwrap();
        let ok = check(Some(&h), origin, &trusted, 1000).unwrap();
        assert_eq!(ok.subject, "mailto:dev@example.com");
        assert_eq!(check(Some(&h), origin, &[], 1000), Ok(ok));
        let status = |r: Result<Vapid, Refusal>| r.err().map(|r| (r.status, r.reason));
        assert_eq!(
            status(check(None, origin, &trusted, 1000)),
            Some((401, "MissingAuthorization"))
        );
        assert_eq!(
            status(check(Some(&h), "https://other", &trusted, 1000)),
            Some((403, "BadJwtToken"))
        );
        assert_eq!(
            status(check(Some(&h), origin, &trusted, 1000 + 3600)),
            Some((403, "ExpiredJwtToken"))
        );
        let wrong = other.authorization(origin, 1000).unwrap();
        assert_eq!(
            status(check(Some(&wrong), origin, &trusted, 1000)),
            Some((403, "VapidPkHashMismatch"))
        );
        // A JWT signed by one key presented with another key.
        let forged = format!(
            "vapid t={}, k={}",
            other.jwt(origin, 1000).unwrap(),
            s.public_key()
        );
        assert_eq!(
            status(check(Some(&forged), origin, &trusted, 1000)),
            Some((403, "BadJwtToken"))
        );
    }
}
