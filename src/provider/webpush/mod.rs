//! Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm message
//! encryption (RFC 8291), over one pooled HTTP/2 connection set per
//! push-service origin.
//!
//! [`WebPushProvider::send`] builds the request ([`request`], encrypting with
//! [`crypto`]), adds the origin's cached VAPID header ([`auth`]), sends it
//! through the origin's [`H2Pool`] and classifies the answer ([`response`],
//! then [`Code::from_webpush`]). Every subscription names its own endpoint,
//! so pools are created on first use and kept in a bounded map (the least
//! recently used origin is dropped when it is full).
//!
//! Only HTTP/2 push services are supported (FCM, Mozilla autopush, Apple
//! and Windows all speak it); an HTTP/1.1-only service fails its TLS/ALPN
//! handshake and its recipients get `ProviderUnavailable`.

pub mod auth;
pub mod crypto;
pub mod request;
pub mod response;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use ring::rand::SystemRandom;
use rustls::ClientConfig;
use tokio::time::Instant;

use self::auth::{VapidAuth, VapidError, VapidSigner};
use super::h2pool::{H2Pool, PoolError};
use super::tls::{self, TlsError};
use crate::config::{ConnectionConfig, WebPushConfig};
use crate::job::Job;
use crate::outcome::{Code, Outcome};

/// Origins with a live pool per app; past this the least recently used goes.
pub const MAX_ORIGINS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WebPushError {
    #[error("Web Push VAPID key: {0}")]
    Vapid(#[from] VapidError),
    #[error("Web Push TLS setup: {0}")]
    Tls(#[from] TlsError),
}

struct Origin {
    pool: Arc<H2Pool>,
    last_used: Instant,
}

/// Delivers to Web Push subscriptions for one app (one VAPID key).
pub struct WebPushProvider {
    vapid: VapidAuth,
    template: ConnectionConfig,
    tls: Arc<ClientConfig>,
    rng: SystemRandom,
    pools: Mutex<HashMap<String, Origin>>,
    max_origins: usize,
}

impl std::fmt::Debug for WebPushProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushProvider")
            .field("vapid", &self.vapid)
            .field("origins", &self.origins())
            .finish_non_exhaustive()
    }
}

impl WebPushProvider {
    /// Loads the VAPID key and the TLS trust; no connection is opened yet.
    pub fn new(cfg: &WebPushConfig) -> Result<WebPushProvider, WebPushError> {
        let signer = VapidSigner::new(cfg.vapid_key.expose(), &cfg.subject, cfg.token_ttl)?;
        Ok(WebPushProvider {
            vapid: VapidAuth::new(signer),
            template: cfg.connection.clone(),
            tls: tls::client_config(&cfg.connection)?,
            rng: SystemRandom::new(),
            pools: Mutex::new(HashMap::new()),
            max_origins: MAX_ORIGINS,
        })
    }

    /// The VAPID public key (base64url): the `applicationServerKey` browsers
    /// must subscribe with.
    pub fn public_key(&self) -> &str {
        self.vapid.signer().public_key()
    }

    /// Origins with a pool right now.
    pub fn origins(&self) -> usize {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Sends recipient `recipient` of `job` (attempt 1 first, then retries:
    /// each attempt is encrypted afresh). Never fails: local refusals,
    /// answers and transport failures are all an [`Outcome`].
    pub async fn send(&self, job: &Job, recipient: usize, attempt: u32) -> Outcome {
        let built = match request::build(job, recipient, SystemTime::now(), &self.rng) {
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
        let pool = self.pool(&built.target);
        let started = Instant::now();
        let answer = pool.send(req).await;
        let latency = started.elapsed();
        match answer {
            Ok(r) => response::classify(r.status.as_u16(), &r.headers, &r.body, latency),
            Err(e) => transport_failure(&e, latency, attempt),
        }
    }

    /// The pool of `target`'s origin, created on first use.
    fn pool(&self, target: &request::Target) -> Arc<H2Pool> {
        let key = &target.endpoint.authority;
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if let Some(o) = pools.get_mut(key) {
            o.last_used = now;
            return Arc::clone(&o.pool);
        }
        if pools.len() >= self.max_origins {
            let oldest = pools
                .iter()
                .min_by_key(|(_, o)| o.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                // Requests in flight keep their Arc; the pool closes after them.
                pools.remove(&k);
            }
        }
        let cfg = ConnectionConfig {
            endpoint: target.endpoint.clone(),
            ..self.template.clone()
        };
        let pool = Arc::new(H2Pool::new("webpush", &cfg, Arc::clone(&self.tls)));
        pools.insert(
            key.clone(),
            Origin {
                pool: Arc::clone(&pool),
                last_used: now,
            },
        );
        pool
    }

    /// Closes every origin's pool (in-flight requests finish first).
    pub async fn shutdown(&self) {
        let pools: Vec<Arc<H2Pool>> = self
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, o)| o.pool)
            .collect();
        for p in pools {
            p.shutdown().await;
        }
    }
}

fn transport_failure(e: &PoolError, latency: Duration, attempt: u32) -> Outcome {
    tracing::debug!(error = %e, attempt, "web push request failed");
    Outcome {
        code: Some(Code::from_transport()),
        provider_reason: Some(e.to_string()),
        latency,
        ..Outcome::default()
    }
}
