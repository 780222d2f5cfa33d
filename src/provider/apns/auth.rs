//! APNs token auth: one ES256 JWT per key, shared by every connection and replaced on a schedule.
//!
//! APNs rejects a token whose `iat` is more than an hour old and answers
//! `TooManyProviderTokenUpdates` when a token is replaced more often than every
//! 20 minutes, so the token is minted once, handed out on the hot path through
//! a brief read lock, and replaced at `refresh` (40-50 min in config). Replacing
//! is single-flight: callers that find a replacement under way keep using the
//! current token, which is still valid.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use tokio::time::Instant;

/// Never replace a token sooner than this (Apple's rule).
pub const MIN_REFRESH: Duration = Duration::from_secs(20 * 60);
/// APNs rejects tokens older than this.
pub const MAX_AGE: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the APNs key is not a PKCS#8 EC P-256 key: {0}")]
    BadKey(String),
    #[error("signing the APNs token failed")]
    Sign,
}

/// Where "now" comes from: wall-clock seconds for `iat`, and a tokio instant
/// for ages (so tests can pause time).
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// Production: `iat` from the system clock.
    System,
    /// Tests: `iat` = `base_unix` + tokio time elapsed since `base`.
    Anchored { base_unix: u64, base: Instant },
}

impl Clock {
    /// A clock whose `iat` follows tokio time (paused or not) from now on.
    pub fn anchored_now() -> Clock {
        Clock::Anchored {
            base_unix: system_unix(),
            base: Instant::now(),
        }
    }

    pub fn unix(&self) -> u64 {
        match self {
            Clock::System => system_unix(),
            Clock::Anchored { base_unix, base } => base_unix + base.elapsed().as_secs(),
        }
    }
}

fn system_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs APNs provider tokens with one .p8 key.
pub struct Signer {
    key: EcdsaKeyPair,
    /// `base64url({"alg":"ES256","kid":..})`, fixed for the key.
    header_b64: String,
    team_id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// `pkcs8` is the DER of the .p8 key.
    pub fn new(team_id: &str, key_id: &str, pkcs8: &[u8]) -> Result<Signer, AuthError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| AuthError::BadKey(e.to_string()))?;
        let header = serde_json::json!({"alg": "ES256", "kid": key_id}).to_string();
        Ok(Signer {
            key,
            header_b64: URL_SAFE_NO_PAD.encode(header),
            team_id: team_id.to_owned(),
            rng,
        })
    }

    /// A compact JWT `header.claims.signature` with the given `iat`.
    pub fn sign(&self, iat: u64) -> Result<String, AuthError> {
        let claims = serde_json::json!({"iss": self.team_id, "iat": iat}).to_string();
        let mut jwt = String::with_capacity(200);
        jwt.push_str(&self.header_b64);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
        let sig = self
            .key
            .sign(&self.rng, jwt.as_bytes())
            .map_err(|_| AuthError::Sign)?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut jwt);
        Ok(jwt)
    }
}

#[derive(Debug, Clone)]
struct Current {
    /// `bearer <jwt>`, ready for the authorization header.
    bearer: Arc<str>,
    /// The same as a header value, built once per token: cloning it per
    /// request is a reference-count increment, not a copy and a re-check
    /// of ~200 bytes.
    header: http::HeaderValue,
    minted: Instant,
    iat: u64,
}

/// The tokens of one process, one per (team, key id), shared by every
/// provider built with it: the apps signing with one key and, with
/// dispatch shards, every shard's pool. Apple: one token per key for as
/// close to an hour as possible; several tokens minted for one team at
/// once draw `429 TooManyProviderTokenUpdates` (protocols.md §1).
#[derive(Debug, Default)]
pub struct Tokens {
    by_key: Mutex<HashMap<(String, String), Arc<TokenAuth>>>,
}

impl Tokens {
    /// The token of `team_id`/`key_id`, minted now if this is its first user.
    pub fn get_or_mint(
        &self,
        team_id: &str,
        key_id: &str,
        pkcs8: &[u8],
        refresh: Duration,
        clock: Clock,
    ) -> Result<Arc<TokenAuth>, AuthError> {
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        let id = (team_id.to_owned(), key_id.to_owned());
        if let Some(auth) = by_key.get(&id) {
            return Ok(Arc::clone(auth));
        }
        let signer = Signer::new(team_id, key_id, pkcs8)?;
        let auth = Arc::new(TokenAuth::new(signer, refresh, clock)?);
        by_key.insert(id, Arc::clone(&auth));
        Ok(auth)
    }
}

/// The one shared token of a key.
#[derive(Debug)]
pub struct TokenAuth {
    signer: Signer,
    refresh: Duration,
    clock: Clock,
    current: RwLock<Current>,
    /// Held (never across an await) by the one caller minting a replacement.
    minting: Mutex<()>,
}

impl TokenAuth {
    /// Mints the first token now. `refresh` is clamped to 20..=55 minutes.
    pub fn new(signer: Signer, refresh: Duration, clock: Clock) -> Result<TokenAuth, AuthError> {
        let refresh = refresh.clamp(MIN_REFRESH, MAX_AGE - Duration::from_secs(5 * 60));
        let current = mint(&signer, &clock)?;
        Ok(TokenAuth {
            signer,
            refresh,
            clock,
            current: RwLock::new(current),
            minting: Mutex::new(()),
        })
    }

    /// The `authorization` header value to use now. Cheap: a read lock and an
    /// `Arc` clone; replaces the token when it is due (single flight).
    pub fn bearer(&self) -> Arc<str> {
        let (bearer, minted) = self.snapshot();
        if minted.elapsed() < self.refresh {
            return bearer;
        }
        // Due: one caller mints, the others keep the still-valid token.
        let Ok(_guard) = self.minting.try_lock() else {
            return bearer;
        };
        self.replace_if(|cur| cur.minted.elapsed() >= self.refresh)
            .unwrap_or(bearer)
    }

    /// After `ExpiredProviderToken` on `seen`: replace the token unless someone
    /// already did, or unless it is younger than 20 minutes and its `iat` is
    /// not really over an hour old (Apple would answer
    /// `TooManyProviderTokenUpdates`). Returns the token to retry with.
    pub fn force_refresh(&self, seen: &str) -> Arc<str> {
        let _guard = self.minting.lock().unwrap_or_else(|p| p.into_inner());
        let now_unix = self.clock.unix();
        let replaced = self.replace_if(|cur| {
            &*cur.bearer == seen
                && (cur.minted.elapsed() >= MIN_REFRESH
                    || now_unix.saturating_sub(cur.iat) >= MAX_AGE.as_secs())
        });
        replaced.unwrap_or_else(|| self.snapshot().0)
    }

    /// [`TokenAuth::bearer`] and its header value (shared, cheap to clone).
    pub fn bearer_header(&self) -> (Arc<str>, http::HeaderValue) {
        let bearer = self.bearer();
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&cur.bearer, &bearer) {
            return (bearer, cur.header.clone());
        }
        drop(cur);
        // Replaced between the two reads: build this token's value once.
        let header = header_value(&bearer);
        (bearer, header)
    }

    /// The header value of a token returned by [`TokenAuth::force_refresh`].
    pub fn header_of(&self, bearer: &Arc<str>) -> http::HeaderValue {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&cur.bearer, bearer) {
            return cur.header.clone();
        }
        header_value(bearer)
    }

    fn snapshot(&self) -> (Arc<str>, Instant) {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        (cur.bearer.clone(), cur.minted)
    }

    /// Mints and installs a new token when `due` says so (caller holds `minting`).
    fn replace_if(&self, due: impl Fn(&Current) -> bool) -> Option<Arc<str>> {
        let cur = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !due(&cur) {
            return None;
        }
        match mint(&self.signer, &self.clock) {
            Ok(next) => {
                let bearer = next.bearer.clone();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
                tracing::debug!("APNs provider token replaced");
                Some(bearer)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot mint an APNs provider token; keeping the old one");
                None
            }
        }
    }
}

fn mint(signer: &Signer, clock: &Clock) -> Result<Current, AuthError> {
    let iat = clock.unix();
    let jwt = signer.sign(iat)?;
    let bearer: Arc<str> = Arc::from(format!("bearer {jwt}"));
    Ok(Current {
        header: header_value(&bearer),
        bearer,
        minted: Instant::now(),
        iat,
    })
}

/// `authorization: bearer <jwt>` as a header value backed by shared bytes.
/// (A JWT is base64url and dots: always a valid header value.)
fn header_value(bearer: &str) -> http::HeaderValue {
    let bytes = bytes::Bytes::copy_from_slice(bearer.as_bytes());
    http::HeaderValue::from_maybe_shared(bytes).unwrap_or(http::HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};

    fn dev_signer(file: &str) -> Signer {
        let path = format!("{}/config/dev/{file}", env!("CARGO_MANIFEST_DIR"));
        let key = PrivatePkcs8KeyDer::from_pem_file(path).unwrap();
        Signer::new("DEVTEAM001", "DEVKEY0001", key.secret_pkcs8_der()).unwrap()
    }

    /// Verifies `jwt` with the dev public key and returns its claims.
    fn verify(jwt: &str) -> serde_json::Value {
        let path = format!("{}/config/dev/apns-dev.pub.pem", env!("CARGO_MANIFEST_DIR"));
        let spki = SubjectPublicKeyInfoDer::from_pem_file(path).unwrap();
        // The SPKI of a P-256 key ends with the 65-byte uncompressed point.
        let point = &spki.as_ref()[spki.as_ref().len() - 65..];
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(signed.as_bytes(), &sig)
            .expect("signature verifies");
        let (header, claims) = signed.split_once('.').unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "ES256", "kid": "DEVKEY0001"})
        );
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
    }

    #[test]
    fn one_token_per_team_and_key_whoever_asks() {
        let path = format!("{}/config/dev/apns-dev.p8", env!("CARGO_MANIFEST_DIR"));
        let key = PrivatePkcs8KeyDer::from_pem_file(path).unwrap();
        let der = key.secret_pkcs8_der();
        let tokens = Tokens::default();
        let hour = Duration::from_secs(2700);
        let a = tokens
            .get_or_mint("DEVTEAM001", "DEVKEY0001", der, hour, Clock::System)
            .unwrap();
        let b = tokens
            .get_or_mint("DEVTEAM001", "DEVKEY0001", der, hour, Clock::System)
            .unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second user shares the first token"
        );
        assert!(Arc::ptr_eq(&a.bearer(), &b.bearer()));
        let other = tokens
            .get_or_mint("DEVTEAM001", "DEVKEY0002", der, hour, Clock::System)
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &other), "another key id, another token");
        let elsewhere = Tokens::default();
        let c = elsewhere
            .get_or_mint("DEVTEAM001", "DEVKEY0001", der, hour, Clock::System)
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "another store mints its own");
    }

    #[test]
    fn jwt_verifies_with_the_public_key() {
        let jwt = dev_signer("apns-dev.p8").sign(1_700_000_000).unwrap();
        let claims = verify(&jwt);
        assert_eq!(
            claims,
            serde_json::json!({"iss": "DEVTEAM001", "iat": 1_700_000_000})
        );
    }

    #[test]
    #[should_panic(expected = "signature verifies")]
    fn other_key_does_not_verify() {
        let jwt = dev_signer("apns-other.p8").sign(1).unwrap();
        verify(&jwt);
    }

    #[test]
    fn bad_key_is_an_error() {
        assert!(matches!(
            Signer::new("T", "K", b"not a key"),
            Err(AuthError::BadKey(_))
        ));
    }

    fn jwt_of(bearer: &str) -> &str {
        bearer.strip_prefix("bearer ").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn token_is_reused_then_refreshed_inside_the_window() {
        let auth = TokenAuth::new(
            dev_signer("apns-dev.p8"),
            Duration::from_secs(45 * 60),
            Clock::anchored_now(),
        )
        .unwrap();
        let first = auth.bearer();
        let iat0 = verify(jwt_of(&first))["iat"].as_u64().unwrap();
        let mut minutes = 0;
        let mut changed_at = None;
        while minutes < 120 {
            tokio::time::advance(Duration::from_secs(60)).await;
            minutes += 1;
            let now = auth.bearer();
            if now != first {
                changed_at = Some(minutes);
                let iat1 = verify(jwt_of(&now))["iat"].as_u64().unwrap();
                assert_eq!(iat1 - iat0, minutes * 60);
                break;
            }
        }
        let at = changed_at.expect("token was refreshed");
        assert!((20..60).contains(&at), "refreshed after {at} min");
        assert_eq!(at, 45);
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_is_clamped_to_twenty_minutes() {
        let auth = TokenAuth::new(
            dev_signer("apns-dev.p8"),
            Duration::from_secs(60),
            Clock::anchored_now(),
        )
        .unwrap();
        let first = auth.bearer();
        tokio::time::advance(Duration::from_secs(19 * 60)).await;
        assert_eq!(auth.bearer(), first);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_ne!(auth.bearer(), first);
    }

    #[tokio::test(start_paused = true)]
    async fn forced_refresh_respects_the_twenty_minute_rule() {
        let auth = TokenAuth::new(
            dev_signer("apns-dev.p8"),
            Duration::from_secs(50 * 60),
            Clock::anchored_now(),
        )
        .unwrap();
        let first = auth.bearer();
        tokio::time::advance(Duration::from_secs(5 * 60)).await;
        assert_eq!(auth.force_refresh(&first), first, "too young to replace");
        tokio::time::advance(Duration::from_secs(20 * 60)).await;
        let second = auth.force_refresh(&first);
        assert_ne!(second, first);
        // A second caller that saw the old token gets the new one, no new mint.
        assert_eq!(auth.force_refresh(&first), second);
        assert_eq!(auth.bearer(), second);
    }
}
