//! VAPID (RFC 8292): ES256 JWTs for each push-service origin, cached and
//! re-minted well before they expire, and the `Authorization` header value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// The longest JWT lifetime push services accept (RFC 8292 section 2).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Origins whose token is cached; past this the cache starts over.
const MAX_CACHED_ORIGINS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum VapidError {
    #[error("VAPID key is not an EC P-256 PKCS#8 key: {0}")]
    Key(String),
    #[error("signing the VAPID JWT failed")]
    Sign,
}

/// Signs VAPID JWTs with the app's key.
pub struct VapidSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// base64url of the uncompressed public key: the `k=` parameter.
    public_key: String,
    subject: String,
    ttl: Duration,
}

impl std::fmt::Debug for VapidSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidSigner")
            .field("public_key", &self.public_key)
            .field("subject", &self.subject)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl VapidSigner {
    /// `pkcs8`: DER of the P-256 key; `ttl` is capped at 24 hours.
    pub fn new(pkcs8: &[u8], subject: &str, ttl: Duration) -> Result<VapidSigner, VapidError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| VapidError::Key(e.to_string()))?;
        let public_key = B64.encode(key.public_key().as_ref());
        Ok(VapidSigner {
            key,
            rng,
            public_key,
            subject: subject.to_owned(),
            ttl: ttl.min(MAX_TTL),
        })
    }

    /// The application server key (base64url, uncompressed point), as
    /// browsers get it in `applicationServerKey`.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A JWT for `aud` (an origin, `https://host[:port]`), expiring at
    /// `now_unix + ttl`.
    pub fn jwt(&self, aud: &str, now_unix: u64) -> Result<String, VapidError> {
        let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({
            "aud": aud,
            "exp": now_unix + self.ttl.as_secs(),
            "sub": self.subject,
        });
        let claims = B64.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| VapidError::Sign)?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }

    /// The `Authorization` header value: `vapid t=<jwt>, k=<public key>`.
    pub fn authorization(&self, aud: &str, now_unix: u64) -> Result<String, VapidError> {
        Ok(format!(
            "vapid t={}, k={}",
            self.jwt(aud, now_unix)?,
            self.public_key
        ))
    }
}

struct Cached {
    header: Arc<str>,
    /// Unix time after which a new token is minted.
    renew_at: u64,
}

/// Per-origin cache of `Authorization` values over a [`VapidSigner`].
/// A token is replaced once half of its lifetime has passed, so a cached
/// token always has at least `ttl / 2` left when it is sent.
pub struct VapidAuth {
    signer: VapidSigner,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for VapidAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidAuth")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl VapidAuth {
    pub fn new(signer: VapidSigner) -> VapidAuth {
        VapidAuth {
            signer,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn signer(&self) -> &VapidSigner {
        &self.signer
    }

    /// The header for `aud` now.
    pub fn authorization(&self, aud: &str) -> Result<Arc<str>, VapidError> {
        self.authorization_at(aud, unix_now())
    }

    /// The header for `aud` at `now_unix` (cached; re-minted when due).
    pub fn authorization_at(&self, aud: &str, now_unix: u64) -> Result<Arc<str>, VapidError> {
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = cache.get(aud).filter(|c| now_unix < c.renew_at) {
                return Ok(Arc::clone(&c.header));
            }
        }
        let header: Arc<str> = self.signer.authorization(aud, now_unix)?.into();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_ORIGINS && !cache.contains_key(aud) {
            cache.clear();
        }
        cache.insert(
            aud.to_owned(),
            Cached {
                header: Arc::clone(&header),
                renew_at: now_unix + self.signer.ttl.as_secs() / 2,
            },
        );
        Ok(header)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    use super::*;

    fn signer(ttl: Duration) -> VapidSigner {
        let pem = std::fs::read(format!(
            "{}/config/dev/vapid-dev.p8",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let der = crate::config::webpush::vapid_key(&pem).unwrap();
        VapidSigner::new(&der, "mailto:dev@example.com", ttl).unwrap()
    }

    #[test]
    fn jwt_is_es256_with_rfc8292_claims() {
        let s = signer(Duration::from_secs(12 * 3600));
        let jwt = s.jwt("https://push.example.net", 1_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"typ": "JWT", "alg": "ES256"}));
        let claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["exp"], 1_000 + 12 * 3600);
        assert_eq!(claims["sub"], "mailto:dev@example.com");
        let public = B64.decode(s.public_key()).unwrap();
        assert_eq!(public.len(), 65);
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
            .verify(signed.as_bytes(), &B64.decode(parts[2]).unwrap())
            .unwrap();
    }

    #[test]
    fn ttl_is_capped_at_24h() {
        assert_eq!(signer(Duration::from_secs(48 * 3600)).ttl(), MAX_TTL);
    }

    #[test]
    fn cache_per_origin_and_renewal_before_expiry() {
        let auth = VapidAuth::new(signer(Duration::from_secs(3600)));
        let a = auth.authorization_at("https://a.example", 0).unwrap();
        assert!(a.starts_with("vapid t="));
        assert!(a.ends_with(&format!(", k={}", auth.signer().public_key())));
        let again = auth.authorization_at("https://a.example", 1799).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let b = auth.authorization_at("https://b.example", 1).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        let renewed = auth.authorization_at("https://a.example", 1800).unwrap();
        assert!(!Arc::ptr_eq(&a, &renewed));
    }
}
