//! APNs provider-token (JWT) checks with per-connection binding, as protocols.md §1.5 / §4.1 item 4.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{ApnsEnvironment, ApnsSimOptions, TrustedKey};
use crate::provider::apns::reason::ApnsReason;
use crate::sim::jwt::{Jwt, PublicKey};
use crate::sim::knobs::now_secs;

/// A trusted key with its parsed public key.
#[derive(Debug)]
pub(crate) struct KeyEntry {
    pub key_id: String,
    pub team_id: String,
    pub environment: Option<ApnsEnvironment>,
    pub public: PublicKey,
}

impl KeyEntry {
    pub(crate) fn load(keys: &[TrustedKey]) -> std::io::Result<Vec<KeyEntry>> {
        keys.iter()
            .map(|k| {
                let public = PublicKey::from_spki_pem(&k.public_key_pem).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("trusted APNs key {}: {e}", k.key_id),
                    )
                })?;
                Ok(KeyEntry {
                    key_id: k.key_id.clone(),
                    team_id: k.team_id.clone(),
                    environment: k.environment,
                    public,
                })
            })
            .collect()
    }
}

/// What a connection has bound to on its first valid token.
#[derive(Debug, Default)]
pub(crate) struct ConnAuth {
    inner: Mutex<Bound>,
}

#[derive(Debug, Default)]
struct Bound {
    team: Option<String>,
    key_id: Option<String>,
    token: Option<String>,
    iat: i64,
    updated_at: Option<Instant>,
}

/// The rules that depend on options, grouped for [`ConnAuth::check`].
pub(crate) struct AuthRules<'a> {
    pub keys: &'a [KeyEntry],
    pub environment: ApnsEnvironment,
    pub max_token_age: Duration,
    pub min_token_update: Duration,
}

impl<'a> AuthRules<'a> {
    pub(crate) fn new(keys: &'a [KeyEntry], opts: &ApnsSimOptions) -> AuthRules<'a> {
        AuthRules {
            keys,
            environment: opts.environment,
            max_token_age: opts.max_token_age,
            min_token_update: opts.min_token_update,
        }
    }
}

impl ConnAuth {
    /// Checks an `authorization` header value. The connection's current
    /// token is re-checked only for age (the cheap hot path).
    pub(crate) fn check(&self, header: &str, rules: &AuthRules<'_>) -> Result<(), ApnsReason> {
        let token = bearer(header)?;
        let too_old = |iat: i64| now_secs() - iat > rules.max_token_age.as_secs() as i64;
        if let Ok(bound) = self.inner.lock() {
            if bound.token.as_deref() == Some(token) {
                return if too_old(bound.iat) {
                    Err(ApnsReason::ExpiredProviderToken)
                } else {
                    Ok(())
                };
            }
        }
        let (jwt, key) = verify(token, rules)?;
        let iss = jwt.claim_str("iss").unwrap_or_default().to_owned();
        let iat = jwt
            .claim_i64("iat")
            .ok_or(ApnsReason::InvalidProviderToken)?;
        let Ok(mut bound) = self.inner.lock() else {
            return Err(ApnsReason::InternalServerError);
        };
        if bound.team.as_ref().is_some_and(|t| *t != iss) {
            return Err(ApnsReason::InvalidProviderToken);
        }
        if bound.key_id.as_ref().is_some_and(|k| *k != key.key_id) {
            return Err(ApnsReason::UnrelatedKeyIdInToken);
        }
        if too_old(iat) {
            return Err(ApnsReason::ExpiredProviderToken);
        }
        let now = Instant::now();
        if let Some(at) = bound.updated_at {
            if now.duration_since(at) < rules.min_token_update {
                return Err(ApnsReason::TooManyProviderTokenUpdates);
            }
        }
        bound.team = Some(iss);
        bound.key_id = Some(key.key_id.clone());
        bound.token = Some(token.to_owned());
        bound.iat = iat;
        bound.updated_at = Some(now);
        Ok(())
    }
}

fn bearer(header: &str) -> Result<&str, ApnsReason> {
    let header = header.trim();
    let (scheme, token) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApnsReason::InvalidProviderToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApnsReason::MissingProviderToken);
    }
    Ok(token)
}

/// Parses the JWT, finds its key by `kid`, checks alg, signature, team and environment.
fn verify<'k>(token: &str, rules: &AuthRules<'k>) -> Result<(Jwt, &'k KeyEntry), ApnsReason> {
    let jwt = Jwt::parse(token).map_err(|_| ApnsReason::InvalidProviderToken)?;
    if jwt.header_str("alg") != Some("ES256") {
        return Err(ApnsReason::InvalidProviderToken);
    }
    let kid = jwt.header_str("kid").unwrap_or_default();
    let key = rules
        .keys
        .iter()
        .find(|k| k.key_id == kid)
        .ok_or(ApnsReason::InvalidProviderToken)?;
    jwt.verify_es256(&key.public)
        .map_err(|_| ApnsReason::InvalidProviderToken)?;
    if jwt.claim_str("iss") != Some(key.team_id.as_str()) {
        return Err(ApnsReason::InvalidProviderToken);
    }
    if key.environment.is_some_and(|e| e != rules.environment) {
        return Err(ApnsReason::BadEnvironmentKeyIdInToken);
    }
    Ok((jwt, key))
}
