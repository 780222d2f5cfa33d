//! The typed, validated configuration every other module reads.
//!
//! The TOML file (plus `PUSHGATE_*` environment overrides) is parsed into the
//! raw serde structs of [`file`] (unknown keys are errors), then validated
//! into these types by [`load`]: paths are read, keys parsed, URLs checked, so
//! that nothing starts on a config that cannot work. Secrets live in
//! [`Secret`], whose `Debug` prints `***`.

pub mod admin;
pub mod amqp;
pub mod file;
pub mod load;
pub mod policy;
pub mod providers;
pub mod secrets;
pub mod webpush;
pub mod webpush_origins;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use admin::{AdminConfig, TrackingConfig};
pub use load::{load, load_str, load_with_env, ConfigError};
pub use policy::{PolicyConfig, Rate, ThrottleConfig};

/// A value that must never reach a log: `Debug` prints `***`.
#[derive(Clone)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret value; call only where it is used (signing, TLS).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An HTTPS endpoint: where a provider (or its simulator) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP literal, used for TLS SNI / verification.
    pub host: String,
    pub port: u16,
    /// `host:port` as sent in `:authority`.
    pub authority: String,
}

impl Endpoint {
    /// Parses `https://host[:port]` (port defaults to 443; no path allowed).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("endpoint {url:?} must start with https://"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "endpoint {url:?} must be https://host[:port] with no path"
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("endpoint {url:?}: unclosed IPv6 literal"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("endpoint {url:?}: bad port"))?,
                None if tail.is_empty() => 443,
                None => return Err(format!("endpoint {url:?}: junk after IPv6 literal")),
            };
            (h.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse()
                        .map_err(|_| format!("endpoint {url:?}: bad port {p:?}"))?,
                ),
                None => (rest.to_owned(), 443),
            }
        };
        if host.is_empty() {
            return Err(format!("endpoint {url:?}: empty host"));
        }
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Endpoint {
            host,
            port,
            authority,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority)
    }
}

/// How one provider's HTTP/2 pool connects (per app and provider).
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub endpoint: Endpoint,
    /// Long-lived HTTP/2 connections in the pool.
    pub connections: usize,
    pub connect_timeout: Duration,
    /// Deadline for one request, from send to the full response.
    pub request_timeout: Duration,
    /// PING interval on idle connections.
    pub keepalive_interval: Duration,
    /// A connection whose PING is not answered within this is replaced.
    pub keepalive_timeout: Duration,
    /// Extra CA certificates to trust besides the webpki roots (simulators).
    pub extra_ca: Vec<CertificateDer<'static>>,
    /// TLS client certificate and key (APNs certificate auth).
    pub client_cert: Option<ClientCert>,
}

/// A TLS client identity.
#[derive(Debug)]
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Secret<PrivateKeyDer<'static>>,
}

impl Clone for ClientCert {
    fn clone(&self) -> Self {
        ClientCert {
            chain: self.chain.clone(),
            key: Secret::new(self.key.expose().clone_key()),
        }
    }
}

/// APNs environment of the key / certificate and tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApnsEnvironment {
    Production,
    Sandbox,
}

/// How pushgate authenticates to APNs.
#[derive(Debug, Clone)]
pub enum ApnsAuth {
    /// Token auth: an ES256 JWT signed with the .p8 key.
    Token {
        team_id: String,
        key_id: String,
        /// PKCS#8 DER of the EC P-256 key.
        key: Secret<Vec<u8>>,
        /// How often the shared JWT is replaced (40-50 min; never under 20).
        refresh: Duration,
    },
    /// Certificate auth: the client certificate is in `connection.client_cert`.
    Certificate,
}

#[derive(Debug, Clone)]
pub struct ApnsConfig {
    pub auth: ApnsAuth,
    /// The bundle id; the push-type suffix is added per request.
    pub topic: String,
    pub environment: ApnsEnvironment,
    pub connection: ConnectionConfig,
}

/// A Google service account, read from its JSON key file.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: String,
    /// PKCS#8 DER of the RSA key.
    pub private_key: Secret<Vec<u8>>,
    pub project_id: String,
    pub token_uri: String,
}

#[derive(Debug, Clone)]
pub struct FcmConfig {
    /// The Firebase project messages are sent for.
    pub project_id: String,
    pub service_account: ServiceAccount,
    /// Where OAuth2 tokens are fetched (the key file's `token_uri` unless overridden).
    pub token_uri: String,
    /// TLS for the token endpoint: the same extra CA as the send endpoint.
    pub connection: ConnectionConfig,
}

/// Web Push (RFC 8030) with VAPID (RFC 8292) for one app.
#[derive(Debug, Clone)]
pub struct WebPushConfig {
    /// PKCS#8 DER of the EC P-256 VAPID key (the app's `applicationServerKey`).
    pub vapid_key: Secret<Vec<u8>>,
    /// The VAPID `sub` claim: a `mailto:` or `https:` contact.
    pub subject: String,
    /// Lifetime of a VAPID JWT (`exp` - now), at most 24 hours.
    pub token_ttl: Duration,
    /// Pool settings for each push-service origin. `endpoint` is only a
    /// placeholder ([`WEBPUSH_ANY_ORIGIN`]): every subscription's origin
    /// gets its own pool built from this template.
    pub connection: ConnectionConfig,
    /// The push-service origins subscriptions may name (SSRF guard).
    pub allowed_origins: webpush_origins::AllowedOrigins,
    /// HTTP/1.1 connections per origin (one request each at a time) for
    /// push services that do not negotiate HTTP/2.
    pub http1_connections: usize,
}

/// The placeholder endpoint of [`WebPushConfig::connection`].
pub const WEBPUSH_ANY_ORIGIN: &str = "https://webpush.invalid";

/// One app: a name producers use in jobs, and its provider credentials.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    pub apns: Option<ApnsConfig>,
    pub fcm: Option<FcmConfig>,
    pub webpush: Option<WebPushConfig>,
}

/// The whole validated config.
#[derive(Debug, Clone)]
pub struct Config {
    pub apps: BTreeMap<String, Arc<AppConfig>>,
    /// Sections owned by later features (amqp, admin, throttle, ...) are added
    /// here as they land; `file` rejects keys nobody reads.
    pub log: LogConfig,
    /// The `[amqp]` section: broker, topology names, retry ladder.
    pub amqp: AmqpConfig,
    /// The `[daemon]` section: in-flight bound and drain deadline.
    pub daemon: DaemonConfig,
    /// The `[admin]` section: admin HTTP server, its tokens, campaign stats size.
    pub admin: AdminConfig,
    /// The `[tracking]` section: the impression tracking key in payloads.
    pub tracking: TrackingConfig,
    /// The `[throttle]` and `[policy]` sections: token buckets, slowdown,
    /// circuit breaker, guard, duplicate-token check.
    pub policy: PolicyConfig,
}

impl Config {
    /// The apps as one of `n` dispatch shards opens them: each pool's
    /// `connections` (and Web Push's `http1_connections`) divided among the
    /// shards, rounded up, at least one each; so the process opens about
    /// as many connections as configured, whatever its thread count.
    pub fn apps_for_shards(&self, n: usize) -> BTreeMap<String, Arc<AppConfig>> {
        let n = n.max(1);
        let share = |c: &mut usize| *c = c.div_ceil(n).max(1);
        self.apps
            .iter()
            .map(|(name, app)| {
                let mut app = AppConfig::clone(app);
                if let Some(a) = &mut app.apns {
                    share(&mut a.connection.connections);
                }
                if let Some(f) = &mut app.fcm {
                    share(&mut f.connection.connections);
                }
                if let Some(w) = &mut app.webpush {
                    share(&mut w.connection.connections);
                    share(&mut w.http1_connections);
                }
                (name.clone(), Arc::new(app))
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `json`, `pretty` or `auto` (pretty on a terminal, JSON otherwise).
    pub format: String,
    /// Default filter when `RUST_LOG` is not set.
    pub level: String,
}

/// How input queues are declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

/// One input queue the daemon consumes send jobs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputQueue {
    pub name: String,
    /// Unacked jobs per consumer channel (`basic.qos`): bounds memory.
    pub prefetch: u16,
    /// Share of `daemon.max_in_flight` reserved for this queue, so that a
    /// transactional queue is served while a campaign fills the bulk queue.
    pub weight: u32,
    /// Consumer channels on this queue, each with `prefetch`.
    pub consumers: u16,
    /// Least time between two reads of a consumer's socket: under load the
    /// deliveries of that time are read and handled as one batch (fewer
    /// wake-ups, writes and acks per job). Zero reads as soon as bytes come.
    pub read_interval: Duration,
}

/// The retry ladder: delay queues `<queue_prefix><label>` with a per-queue
/// TTL, dead-lettered back to the input queue the job came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Headers exchange routing retries to the delay queue of their delay.
    pub exchange: String,
    pub queue_prefix: String,
    /// Delay queues, ascending.
    pub delays: Vec<Duration>,
    /// Delivery attempts per recipient, the first included.
    pub max_attempts: u32,
    /// First backoff step (doubles each attempt, capped by the longest delay).
    pub base: Duration,
    /// Relative jitter applied to the backoff, 0.0..=1.0.
    pub jitter: f64,
}

/// The `[amqp]` section, validated.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Broker URL; holds the password, hence a secret.
    pub url: Secret<String>,
    pub heartbeat: Duration,
    pub connection_name: String,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub queue_type: QueueType,
    pub inputs: Vec<InputQueue>,
    pub retry: RetryConfig,
    pub dead_queue: String,
    pub results_exchange: String,
    /// Publish only the results of recipients that were not delivered.
    pub results_undelivered_only: bool,
    /// Impression/click event batches from apps (`pushgate.events`).
    pub events_queue: String,
    /// Fanout exchange of control messages (campaign stop / resume).
    pub control_exchange: String,
    /// Stream queue bound to the control exchange: every replica reads it
    /// from `now - control_remember` at start, so stops survive restarts.
    pub control_queue: String,
    /// How long a stop is remembered (stream retention, registry expiry).
    pub control_remember: Duration,
}

/// The `[daemon]` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Provider deliveries in flight at once, over all input queues.
    pub max_in_flight: usize,
    /// On shutdown, how long in-flight jobs may finish before the rest is requeued.
    pub drain_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parsing() {
        let e = Endpoint::parse("https://127.0.0.1:2197").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 2197));
        let e = Endpoint::parse("https://api.push.apple.com").unwrap();
        assert_eq!(e.authority, "api.push.apple.com:443");
        let e = Endpoint::parse("https://[::1]:4443/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.authority.as_str()),
            ("::1", "[::1]:4443")
        );
        assert!(Endpoint::parse("http://x").is_err());
        assert!(Endpoint::parse("https://x/path").is_err());
        assert!(Endpoint::parse("https://x:notaport").is_err());
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
    }
}
