//! FCM OAuth2: signs the service account's RS256 JWT-bearer assertion and caches the access token.
//!
//! The access token (about an hour) is cached and replaced 5 minutes before
//! it expires. Fetching is single-flight: concurrent callers share one
//! request to the token endpoint (a shared future; no lock is held across an
//! await). A 401 from FCM drops the token that was refused, so the next
//! caller fetches a new one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::future::{FutureExt, Shared};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;
use tokio::time::Instant;

/// The OAuth2 scope for sending with FCM.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Replace the token this long before it expires.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// After a failed early refresh, wait this long before trying again.
const RETRY_FETCH: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the service account key is not a PKCS#8 RSA key: {0}")]
    BadKey(String),
    #[error("signing the OAuth2 assertion failed")]
    Sign,
    /// The token endpoint refused the assertion (`invalid_grant`, ...): fix credentials.
    #[error("the token endpoint refused the service account: {0}")]
    Refused(String),
    /// No usable answer (transport error, 5xx, junk): retry later.
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
}

/// Signs JWT-bearer assertions for one service account.
pub struct AssertionSigner {
    key: RsaKeyPair,
    header_b64: String,
    client_email: String,
    audience: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// `pkcs8` is the DER of the account's private key; `audience` the token URI.
    pub fn new(
        client_email: &str,
        private_key_id: &str,
        pkcs8: &[u8],
        audience: &str,
    ) -> Result<AssertionSigner, AuthError> {
        let key = RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| AuthError::BadKey(e.to_string()))?;
        let header =
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": private_key_id}).to_string();
        Ok(AssertionSigner {
            key,
            header_b64: URL_SAFE_NO_PAD.encode(header),
            client_email: client_email.to_owned(),
            audience: audience.to_owned(),
            rng: SystemRandom::new(),
        })
    }

    /// The assertion JWT, valid from `iat` for an hour.
    pub fn sign(&self, iat: u64) -> Result<String, AuthError> {
        let claims = serde_json::json!({
            "iss": self.client_email, "scope": SCOPE, "aud": self.audience,
            "iat": iat, "exp": iat + 3600,
        })
        .to_string();
        let mut jwt = format!("{}.", self.header_b64);
        URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, jwt.as_bytes(), &mut sig)
            .map_err(|_| AuthError::Sign)?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&sig, &mut jwt);
        Ok(jwt)
    }

    /// The form body POSTed to the token endpoint.
    pub fn form(&self, iat: u64) -> Result<String, AuthError> {
        Ok(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            self.sign(iat)?
        ))
    }
}

/// A token as the endpoint gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub expires_in: Duration,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    expires_in: Option<u64>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Reads the token endpoint's answer.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<AccessToken, AuthError> {
    let parsed: Option<TokenBody> = serde_json::from_slice(body).ok();
    match parsed {
        Some(TokenBody {
            access_token: Some(token),
            expires_in,
            ..
        }) if status == 200 => Ok(AccessToken {
            token,
            expires_in: Duration::from_secs(expires_in.unwrap_or(3599)),
        }),
        Some(TokenBody {
            error: Some(e),
            error_description,
            ..
        }) if (400..500).contains(&status) => Err(AuthError::Refused(format!(
            "{e}: {}",
            error_description.unwrap_or_default()
        ))),
        _ if (400..500).contains(&status) => Err(AuthError::Refused(format!(
            "HTTP {status} from the token endpoint"
        ))),
        _ => Err(AuthError::Unavailable(format!(
            "HTTP {status} from the token endpoint"
        ))),
    }
}

type FetchFuture = Pin<Box<dyn Future<Output = Result<AccessToken, AuthError>> + Send>>;
type Fetch = Box<dyn Fn() -> FetchFuture + Send + Sync>;
type Inflight = Shared<Pin<Box<dyn Future<Output = Result<Cached, AuthError>> + Send>>>;

#[derive(Debug, Clone)]
struct Cached {
    /// `Bearer <token>`, ready for the header.
    bearer: Arc<str>,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Default)]
struct State {
    current: Option<Cached>,
    inflight: Option<(u64, Inflight)>,
    generation: u64,
}

/// The cached access token of one service account.
pub struct TokenCache {
    fetch: Fetch,
    state: Mutex<State>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache")
    }
}

impl TokenCache {
    /// `fetch` asks the token endpoint for a new token.
    pub fn new(fetch: impl Fn() -> FetchFuture + Send + Sync + 'static) -> TokenCache {
        TokenCache {
            fetch: Box::new(fetch),
            state: Mutex::new(State::default()),
        }
    }

    /// The `authorization` header value: cached, or fetched (one fetch shared
    /// by all concurrent callers). A still-valid token is used if a refresh fails.
    pub async fn bearer(&self) -> Result<Arc<str>, AuthError> {
        let (generation, fut, fallback) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let fallback = st.current.clone().filter(|c| now < c.expires_at);
            if let Some(c) = st.current.as_ref().filter(|c| now < c.refresh_at) {
                return Ok(c.bearer.clone());
            }
            match &st.inflight {
                Some((g, f)) => (*g, f.clone(), fallback),
                None => {
                    st.generation += 1;
                    let g = st.generation;
                    let f = self.start_fetch();
                    st.inflight = Some((g, f.clone()));
                    (g, f, fallback)
                }
            }
        };
        let result = fut.await;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.inflight.as_ref().is_some_and(|(g, _)| *g == generation) {
            st.inflight = None;
            match (&result, st.current.as_mut()) {
                (Ok(c), _) => st.current = Some(c.clone()),
                // Keep the still-valid token; try again a little later rather
                // than on every send while the endpoint is down.
                (Err(_), Some(old)) => {
                    old.refresh_at = (Instant::now() + RETRY_FETCH).min(old.expires_at)
                }
                (Err(_), None) => {}
            }
        }
        match (result, fallback) {
            (Ok(c), _) => Ok(c.bearer),
            (Err(_), Some(old)) => Ok(old.bearer),
            (Err(e), None) => Err(e),
        }
    }

    /// FCM refused `seen` (401): forget it unless it was already replaced.
    pub fn invalidate(&self, seen: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.current.as_ref().is_some_and(|c| &*c.bearer == seen) {
            st.current = None;
        }
    }

    fn start_fetch(&self) -> Inflight {
        let fut = (self.fetch)();
        let boxed: Pin<Box<dyn Future<Output = Result<Cached, AuthError>> + Send>> =
            Box::pin(async move {
                let t = fut.await?;
                let now = Instant::now();
                Ok(Cached {
                    bearer: Arc::from(format!("Bearer {}", t.token)),
                    refresh_at: now + t.expires_in.saturating_sub(REFRESH_MARGIN),
                    expires_at: now + t.expires_in,
                })
            });
        boxed.shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn dev_signer() -> AssertionSigner {
        let path = format!(
            "{}/config/dev/fcm-service-account.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let sa: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let pem = sa["private_key"].as_str().unwrap();
        let key = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        AssertionSigner::new(
            sa["client_email"].as_str().unwrap(),
            sa["private_key_id"].as_str().unwrap(),
            key.secret_pkcs8_der(),
            sa["token_uri"].as_str().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn assertion_verifies_with_the_public_key() {
        let jwt = dev_signer().sign(1_000).unwrap();
        let path = format!("{}/config/dev/fcm-dev.pub.pem", env!("CARGO_MANIFEST_DIR"));
        let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_file(path).unwrap();
        // ring wants the RSAPublicKey inside the SPKI's BIT STRING: for a
        // 2048-bit key that is the last 270 bytes.
        let der = spki.as_ref();
        let rsa = &der[der.len() - 270..];
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, rsa)
            .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .expect("assertion verifies");
        let claims = signed.split_once('.').unwrap().1;
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(claims["aud"], "https://127.0.0.1:4443/token");
        assert_eq!(claims["exp"], 4_600);
        assert!(dev_signer().form(1).unwrap().starts_with(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=ey"
        ));
    }

    #[test]
    fn token_endpoint_answers() {
        let ok = parse_token_response(
            200,
            br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
        );
        assert_eq!(ok.unwrap().token, "ya29.x");
        let refused = parse_token_response(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        );
        assert_eq!(
            refused,
            Err(AuthError::Refused(
                "invalid_grant: Invalid JWT Signature.".into()
            ))
        );
        assert!(matches!(
            parse_token_response(503, b"<html>"),
            Err(AuthError::Unavailable(_))
        ));
    }

    fn counting_cache(lifetime: u64) -> (Arc<TokenCache>, Arc<AtomicU32>) {
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let cache = TokenCache::new(move || {
            let n = h.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(AccessToken {
                    token: format!("t{n}"),
                    expires_in: Duration::from_secs(lifetime),
                })
            })
        });
        (Arc::new(cache), hits)
    }

    #[tokio::test(start_paused = true)]
    async fn cached_single_flight_and_refreshed_before_expiry() {
        let (cache, hits) = counting_cache(3599);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.bearer().await })
            })
            .collect();
        for t in tasks {
            assert_eq!(&*t.await.unwrap().unwrap(), "Bearer t1");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(50 * 60)).await;
        assert_eq!(&*cache.bearer().await.unwrap(), "Bearer t1");
        tokio::time::advance(Duration::from_secs(5 * 60)).await;
        assert_eq!(&*cache.bearer().await.unwrap(), "Bearer t2");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_forces_one_fetch() {
        let (cache, hits) = counting_cache(3599);
        let first = cache.bearer().await.unwrap();
        cache.invalidate(&first);
        let second = cache.bearer().await.unwrap();
        assert_eq!(&*second, "Bearer t2");
        cache.invalidate(&first); // stale: already replaced
        assert_eq!(cache.bearer().await.unwrap(), second);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}
