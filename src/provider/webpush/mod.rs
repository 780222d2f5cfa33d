//! Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm message
//! encryption (RFC 8291), over pooled connections per push-service origin.
//!
//! [`WebPushProvider::send`] checks the subscription's origin against the
//! app's `allowed_origins` and builds the request ([`request`], encrypting
//! with [`crypto`]), adds the origin's cached VAPID header ([`auth`]), sends
//! it through the origin's transport ([`transport`]: HTTP/2 through an
//! `H2Pool`, or HTTP/1.1 keep-alive connections ([`h1`]) when the push
//! service does not negotiate h2) and classifies the answer ([`response`],
//! then [`Code::from_webpush`]). Every subscription names its own endpoint,
//! so transports are created on first use and kept in a bounded map.

pub mod auth;
pub mod crypto;
pub mod h1;
pub mod request;
pub mod response;
pub mod transport;

use std::time::{Duration, SystemTime};

use ring::rand::SystemRandom;
use tokio::time::Instant;

use self::auth::{VapidAuth, VapidError, VapidSigner};
use self::transport::{Origins, Protocol, TransportError};
use super::tls::{self, TlsError};
use crate::config::webpush_origins::AllowedOrigins;
use crate::config::WebPushConfig;
use crate::job::Job;
use crate::outcome::{Code, Outcome};

/// Origins with a live transport per app; past this the least recently used goes.
pub const MAX_ORIGINS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WebPushError {
    #[error("Web Push VAPID key: {0}")]
    Vapid(#[from] VapidError),
    #[error("Web Push TLS setup: {0}")]
    Tls(#[from] TlsError),
}

/// Delivers to Web Push subscriptions for one app (one VAPID key).
pub struct WebPushProvider {
    vapid: VapidAuth,
    allowed: AllowedOrigins,
    rng: SystemRandom,
    origins: Origins,
}

impl std::fmt::Debug for WebPushProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushProvider")
            .field("vapid", &self.vapid)
            .field("allowed", &self.allowed.entries())
            .field("origins", &self.origins())
            .finish_non_exhaustive()
    }
}

impl WebPushProvider {
    /// Loads the VAPID key and the TLS trust; no connection is opened yet.
    pub fn new(cfg: &WebPushConfig) -> Result<WebPushProvider, WebPushError> {
        let signer = VapidSigner::new(cfg.vapid_key.expose(), &cfg.subject, cfg.token_ttl)?;
        let tls = tls::client_config(&cfg.connection)?;
        Ok(WebPushProvider {
            vapid: VapidAuth::new(signer),
            allowed: cfg.allowed_origins.clone(),
            rng: SystemRandom::new(),
            origins: Origins::new(
                cfg.connection.clone(),
                cfg.http1_connections,
                tls,
                MAX_ORIGINS,
            ),
        })
    }

    /// The VAPID public key (base64url): the `applicationServerKey` browsers
    /// must subscribe with.
    pub fn public_key(&self) -> &str {
        self.vapid.signer().public_key()
    }

    /// Origins with a transport right now.
    pub fn origins(&self) -> usize {
        self.origins.len()
    }

    /// Every origin's pool, summed, for the connection gauges.
    pub fn pool_stats(&self) -> crate::provider::h2pool::PoolStats {
        self.origins.stats()
    }

    /// What the origin `authority` (`host:port`) speaks, once contacted.
    pub fn protocol(&self, authority: &str) -> Option<Protocol> {
        self.origins.protocol(authority)
    }

    /// Sends recipient `recipient` of `job` (attempt 1 first, then retries:
    /// each attempt is encrypted afresh). Never fails: local refusals,
    /// answers and transport failures are all an [`Outcome`].
    pub async fn send(&self, job: &Job, recipient: usize, attempt: u32) -> Outcome {
        let now = SystemTime::now();
        let built = match request::build(job, recipient, &self.allowed, now, &self.rng) {
            Ok(b) => b,
            Err(r) => return Outcome::local(r.code, r.reason),
        };
        let authorization = match self.vapid.authorization(&built.target.audience) {
            Ok(a) => a,
            Err(e) => return Outcome::local(Code::InvalidCredentials, e.to_string()),
        };
        let req = match built.to_request(&authorization) {
            Ok(r) => r,
            Err(r) => return Outcome::local(r.code, r.reason),
        };
        let started = Instant::now();
        let answer = self.origins.send(&built.target.endpoint, req).await;
        let latency = started.elapsed();
        match answer {
            Ok(r) => response::classify(r.status.as_u16(), &r.headers, &r.body, latency),
            Err(e) => transport_failure(&e, latency, attempt),
        }
    }

    /// Closes every origin's connections (in-flight requests finish first).
    pub async fn shutdown(&self) {
        self.origins.shutdown().await;
    }
}

fn transport_failure(e: &TransportError, latency: Duration, attempt: u32) -> Outcome {
    tracing::debug!(error = %e, attempt, "web push request failed");
    Outcome {
        code: Some(Code::from_transport()),
        provider_reason: Some(e.to_string()),
        latency,
        ..Outcome::default()
    }
}
