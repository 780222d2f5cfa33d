//! The simulated Google OAuth2 token endpoint: JWT-bearer grant with an RS256 assertion (protocols.md §2.2).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sim::jwt::{Jwt, PublicKey};
use crate::sim::knobs::now_secs;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
];
const CLOCK_SKEW: i64 = 300;
/// Issued tokens kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// A token-endpoint refusal: HTTP 400 `{error, error_description}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrantError {
    pub error: &'static str,
    pub description: &'static str,
}

const fn refuse(error: &'static str, description: &'static str) -> GrantError {
    GrantError { error, description }
}

const BAD_SIGNATURE: GrantError = refuse("invalid_grant", "Invalid JWT Signature.");
const SHORT_LIVED: GrantError = refuse(
    "invalid_grant",
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
);

/// The service-account key the endpoint accepts assertions from.
#[derive(Debug)]
pub(crate) struct Issuer {
    pub key_id: String,
    pub client_email: String,
    pub public: PublicKey,
    pub lifetime: Duration,
    issued: Mutex<HashMap<String, Instant>>,
}

impl Issuer {
    pub(crate) fn new(
        key_id: String,
        client_email: String,
        public: PublicKey,
        lifetime: Duration,
    ) -> Issuer {
        Issuer {
            key_id,
            client_email,
            public,
            lifetime,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// Handles a form body; returns the new access token or the refusal.
    pub(crate) fn grant(&self, form: &str, authority: Option<&str>) -> Result<String, GrantError> {
        let fields = parse_form(form);
        match fields.get("grant_type").map(String::as_str) {
            Some(GRANT_TYPE) => {}
            Some(_) => return Err(refuse("unsupported_grant_type", "Invalid grant_type.")),
            None => {
                return Err(refuse(
                    "invalid_request",
                    "Missing required parameter: grant_type",
                ))
            }
        }
        let assertion = fields.get("assertion").ok_or(refuse(
            "invalid_request",
            "Missing required parameter: assertion",
        ))?;
        self.check_assertion(assertion, authority)?;
        let token = format!(
            "ya29.sim-{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        let now = Instant::now();
        if let Ok(mut issued) = self.issued.lock() {
            if issued.len() >= SWEEP_AT {
                issued.retain(|_, exp| *exp > now);
            }
            issued.insert(token.clone(), now + self.lifetime);
        }
        Ok(token)
    }

    fn check_assertion(&self, assertion: &str, authority: Option<&str>) -> Result<(), GrantError> {
        let jwt = Jwt::parse(assertion).map_err(|_| BAD_SIGNATURE)?;
        if jwt.header_str("alg") != Some("RS256") || jwt.header_str("kid") != Some(&self.key_id) {
            return Err(BAD_SIGNATURE);
        }
        jwt.verify_rs256(&self.public).map_err(|_| BAD_SIGNATURE)?;
        if jwt.claim_str("iss") != Some(self.client_email.as_str()) {
            return Err(refuse("invalid_grant", "Invalid grant: account not found"));
        }
        let aud = jwt.claim_str("aud").unwrap_or_default();
        if aud != GOOGLE_TOKEN_URL && !is_own_token_url(aud, authority) {
            return Err(refuse(
                "invalid_grant",
                "Invalid JWT: Failed audience check.",
            ));
        }
        let (Some(iat), Some(exp)) = (jwt.claim_i64("iat"), jwt.claim_i64("exp")) else {
            return Err(SHORT_LIVED);
        };
        let now = now_secs();
        if exp <= iat || exp - iat > 3600 || iat > now + CLOCK_SKEW || exp < now - CLOCK_SKEW {
            return Err(SHORT_LIVED);
        }
        let scope = jwt.claim_str("scope").unwrap_or_default();
        if !scope.split(' ').any(|s| SCOPES.contains(&s)) {
            return Err(refuse(
                "invalid_scope",
                "Invalid OAuth scope or ID token audience provided.",
            ));
        }
        Ok(())
    }

    /// True when `token` was issued here and has not expired.
    pub(crate) fn valid(&self, token: &str) -> bool {
        let now = Instant::now();
        self.issued
            .lock()
            .map(|i| i.get(token).is_some_and(|exp| *exp > now))
            .unwrap_or(false)
    }
}

/// `https://<host>[:port]/token` with the host this request was sent to.
fn is_own_token_url(aud: &str, authority: Option<&str>) -> bool {
    let Some(authority) = authority else {
        return false;
    };
    aud.strip_prefix("https://")
        .and_then(|rest| rest.strip_suffix("/token"))
        .is_some_and(|host_port| host_of(host_port).eq_ignore_ascii_case(host_of(authority)))
}

/// The host of `host[:port]` or `[v6]:port`.
fn host_of(authority: &str) -> &str {
    match authority.find(']') {
        Some(end) if authority.starts_with('[') => &authority[..=end],
        _ => authority.split(':').next().unwrap_or(authority),
    }
}

/// Parses `application/x-www-form-urlencoded`.
fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_is_this_host() {
        assert!(is_own_token_url(
            "https://127.0.0.1:4443/token",
            Some("127.0.0.1:4443")
        ));
        assert!(is_own_token_url(
            "https://localhost:99/token",
            Some("localhost")
        ));
        assert!(is_own_token_url(
            "https://[::1]:4443/token",
            Some("[::1]:4443")
        ));
        assert!(!is_own_token_url(
            "https://evil.example/token",
            Some("localhost")
        ));
        assert!(!is_own_token_url(
            "https://localhost/other",
            Some("localhost")
        ));
    }

    #[test]
    fn form_decoding() {
        let f = parse_form("grant_type=urn%3Aietf%3Aparams&x=a+b%2&assertion=e30.e30.");
        assert_eq!(f["grant_type"], "urn:ietf:params");
        assert_eq!(f["x"], "a b%2");
        assert_eq!(f["assertion"], "e30.e30.");
    }
}
