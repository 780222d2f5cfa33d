//! The APNs simulator: `POST /3/device/<token>` over TLS + HTTP/2, as protocols.md §4.1.
//!
//! See the [`crate::sim`] module docs for scripted tokens and knobs.

mod auth;
mod validate;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

pub use validate::{forced_token, scripted_token, FORCE_PREFIX};

use self::auth::{AuthRules, ConnAuth, KeyEntry};
use super::knobs::{chance, now_ms, uuid_v4, Latency, RateWindows};
use super::server::{self, ConnCtx, Handler, ServerSetup, SimHandle, SimReply, SimRequest};
use super::{dev, stats::SimStats};
use crate::provider::apns::reason::ApnsReason;

/// Which APNs environment the simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApnsEnvironment {
    /// `api.sandbox.push.apple.com`: success answers carry `apns-unique-id`.
    #[default]
    Sandbox,
    Production,
}

/// A provider-token signing key the simulator trusts.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// The JWT `kid` (10 chars at Apple).
    pub key_id: String,
    /// The team the key belongs to (the JWT `iss` must equal it).
    pub team_id: String,
    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
    /// `Some(env)`: the key only works in that environment, else
    /// `403 BadEnvironmentKeyIdInToken`. `None`: both environments.
    pub environment: Option<ApnsEnvironment>,
}

impl TrustedKey {
    /// The dev key `DEVKEY0001` of team `DEVTEAM001` (`config/dev/apns-dev.p8`).
    pub fn dev() -> TrustedKey {
        TrustedKey {
            key_id: dev::APNS_KEY_ID.to_owned(),
            team_id: dev::APNS_TEAM_ID.to_owned(),
            public_key_pem: dev::APNS_PUBLIC_KEY_PEM.to_owned(),
            environment: None,
        }
    }
}

/// Client-certificate (certificate auth) handling of the TLS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCerts {
    /// No client certificates asked for: token auth only.
    #[default]
    Off,
    /// Certificates signed by the dev CA are accepted but not required.
    Optional,
    /// Every client must present a certificate signed by the dev CA.
    Required,
}

/// Knobs of the APNs simulator. `Default` = sandbox, dev key trusted, topic
/// `com.example.shop`, 1000 streams after the first valid request, no faults.
#[derive(Debug, Clone)]
pub struct ApnsSimOptions {
    pub environment: ApnsEnvironment,
    pub trusted_keys: Vec<TrustedKey>,
    /// Bundle ids that may be pushed to with token auth.
    pub topics: Vec<String>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS after the first authenticated request.
    pub max_streams: u32,
    pub latency: Latency,
    /// Share of otherwise-successful requests answered 500 InternalServerError
    /// or 503 ServiceUnavailable (half each).
    pub error_rate: f64,
    /// After this many requests on a connection: GOAWAY(NO_ERROR,
    /// `{"reason":"Shutdown"}`), in-flight streams finish, then close.
    pub goaway_every: Option<u64>,
    /// Requests per device token per second above which 429 TooManyRequests.
    pub device_rate: Option<u64>,
    pub client_certs: ClientCerts,
    /// `iat` older than this: 403 ExpiredProviderToken (APNs: 1 h).
    pub max_token_age: Duration,
    /// A new token on a connection sooner than this after the previous one:
    /// 429 TooManyProviderTokenUpdates (APNs: 20 min).
    pub min_token_update: Duration,
    /// Benchmark mode: only the (cached) JWT check, then 200 (after
    /// `latency`); no header checks, scripts, faults or request log.
    pub accept_all: bool,
    /// How many received requests `SimStats::recent` keeps.
    pub recent_requests: usize,
    /// Serve with this TLS config instead of the dev certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ApnsSimOptions {
    fn default() -> Self {
        ApnsSimOptions {
            environment: ApnsEnvironment::Sandbox,
            trusted_keys: vec![TrustedKey::dev()],
            topics: vec![dev::APNS_TOPIC.to_owned()],
            max_streams: 1000,
            latency: Latency::None,
            error_rate: 0.0,
            goaway_every: None,
            device_rate: None,
            client_certs: ClientCerts::Off,
            max_token_age: Duration::from_secs(3600),
            min_token_update: Duration::from_secs(20 * 60),
            accept_all: false,
            recent_requests: 256,
            tls: None,
        }
    }
}

/// Starts the APNs simulator on `addr` (port 0 picks a free port).
pub async fn start(addr: SocketAddr, opts: ApnsSimOptions) -> std::io::Result<SimHandle> {
    let keys = KeyEntry::load(&opts.trusted_keys)?;
    let tls = match (&opts.tls, opts.client_certs) {
        (Some(tls), _) => tls.clone(),
        (None, ClientCerts::Off) => dev::server_tls(),
        (None, mode) => dev::server_tls_client_auth(mode == ClientCerts::Required)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?,
    };
    let setup = ServerSetup {
        tls,
        max_streams: opts.max_streams.max(1),
        start_low: true,
        max_body: 8 * 1024,
        record: !opts.accept_all && opts.recent_requests > 0,
        fast: opts.accept_all,
    };
    let sim = Arc::new(ApnsSim {
        stats: Arc::new(SimStats::new(opts.recent_requests)),
        keys,
        device_windows: RateWindows::new(Duration::from_secs(1)),
        seen_5031: Mutex::new(HashSet::new()),
        opts,
    });
    server::serve(addr, setup, sim).await
}

struct ApnsSim {
    opts: ApnsSimOptions,
    stats: Arc<SimStats>,
    keys: Vec<KeyEntry>,
    device_windows: RateWindows,
    seen_5031: Mutex<HashSet<String>>,
}

impl Handler for ApnsSim {
    type Conn = ConnAuth;

    fn new_conn(&self) -> ConnAuth {
        ConnAuth::default()
    }

    fn stats(&self) -> &Arc<SimStats> {
        &self.stats
    }

    // Applies in accept-all (benchmark) mode too: the load test measures
    // the gateway against a slow provider with it.
    fn latency(&self) -> Duration {
        self.opts.latency.sample()
    }

    async fn handle(self: Arc<Self>, req: SimRequest, conn: Arc<ConnCtx<ConnAuth>>) -> SimReply {
        // The request's own value, shared rather than copied (a header
        // value is a slice of the decoded block); a fresh id when none came.
        let apns_id = match req.headers.get(&APNS_ID) {
            Some(v) if v.to_str().is_ok() => Some(v.clone()),
            _ => unique_value(&uuid_v4()),
        };
        let outcome = if self.opts.accept_all {
            self.authenticate(&req, &conn)
        } else {
            self.decide(&req, &conn)
        };
        self.finish(apns_id, outcome, &conn)
    }

    fn quick(
        &self,
        authorization: Option<Result<&str, ()>>,
        conn: &ConnCtx<ConnAuth>,
        apns_id: Option<HeaderValue>,
    ) -> SimReply {
        let apns_id = apns_id.or_else(|| unique_value(&uuid_v4()));
        let outcome = self.authenticate_with(authorization, conn);
        self.finish(apns_id, outcome, conn)
    }
}

// Built at compile time: a name given as `&str` is parsed on every lookup.
const APNS_ID: HeaderName = HeaderName::from_static("apns-id");

impl ApnsSim {
    /// The full validation chain; `Ok` means 200.
    fn decide(&self, req: &SimRequest, conn: &ConnCtx<ConnAuth>) -> Result<(), ApnsReason> {
        let cert_topic = conn.client_cert_uid.as_deref();
        let checked = validate::check_request(
            &req.method,
            &req.path,
            &req.headers,
            cert_topic,
            &self.opts.topics,
        )?;
        if let Some(reason) = validate::scripted_before_auth(checked.token) {
            return Err(reason);
        }
        self.authenticate(req, conn)?;
        if req.body_len == 0 {
            return Err(ApnsReason::PayloadEmpty);
        }
        let limit = if checked.push_type == Some("voip") {
            5120
        } else {
            4096
        };
        if req.body_len > limit {
            return Err(ApnsReason::PayloadTooLarge);
        }
        self.after_auth(checked.token, &checked.topic)
    }

    /// The connection's GOAWAY when it is due, then the reply.
    fn finish(
        &self,
        apns_id: Option<HeaderValue>,
        outcome: Result<(), ApnsReason>,
        conn: &ConnCtx<ConnAuth>,
    ) -> SimReply {
        if let Some(n) = self.opts.goaway_every {
            if conn.count_request() == n {
                conn.go_away(Bytes::from_static(br#"{"reason":"Shutdown"}"#));
            }
        }
        if outcome == Err(ApnsReason::Shutdown) {
            conn.go_away(Bytes::from_static(br#"{"reason":"Shutdown"}"#));
        }
        self.reply(apns_id, outcome)
    }

    /// Token auth (or certificate auth when the connection has a client certificate).
    fn authenticate(&self, req: &SimRequest, conn: &ConnCtx<ConnAuth>) -> Result<(), ApnsReason> {
        let value = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().map_err(drop));
        self.authenticate_with(value, conn)
    }

    /// [`ApnsSim::authenticate`] given the `authorization` value (`Err`: not text).
    fn authenticate_with(
        &self,
        authorization: Option<Result<&str, ()>>,
        conn: &ConnCtx<ConnAuth>,
    ) -> Result<(), ApnsReason> {
        match authorization {
            Some(Ok(value)) => {
                let rules = AuthRules::new(&self.keys, &self.opts);
                conn.state.check(value, &rules)?;
            }
            Some(Err(_)) => return Err(ApnsReason::InvalidProviderToken),
            None if conn.has_client_cert => {
                if conn.client_cert_uid.is_none() {
                    return Err(ApnsReason::BadCertificate);
                }
            }
            None => return Err(ApnsReason::MissingProviderToken),
        }
        conn.raise_streams();
        Ok(())
    }

    /// Rate limits, the post-auth scripted tokens and random faults.
    fn after_auth(&self, token: &str, _topic: &str) -> Result<(), ApnsReason> {
        let token = token.to_ascii_lowercase();
        if let Some(limit) = self.opts.device_rate {
            if self.device_windows.over(&token, limit) {
                return Err(ApnsReason::TooManyRequests);
            }
        }
        if token.starts_with("4290") {
            return Err(ApnsReason::TooManyRequests);
        }
        if token.starts_with("5030") {
            return Err(ApnsReason::ServiceUnavailable);
        }
        if token.starts_with("5031") {
            let first = self.seen_5031.lock().map(|mut s| s.insert(token.clone()));
            if first.unwrap_or(false) {
                return Err(ApnsReason::ServiceUnavailable);
            }
        }
        if chance(self.opts.error_rate) {
            return Err(if fastrand::bool() {
                ApnsReason::InternalServerError
            } else {
                ApnsReason::ServiceUnavailable
            });
        }
        Ok(())
    }

    fn reply(&self, apns_id: Option<HeaderValue>, outcome: Result<(), ApnsReason>) -> SimReply {
        let mut headers = Vec::with_capacity(3);
        if let Some(mut v) = apns_id {
            v.set_sensitive(true);
            headers.push((APNS_ID, v));
        }
        match outcome {
            Ok(()) => {
                if self.opts.environment == ApnsEnvironment::Sandbox {
                    if let Some(v) = unique_value(&uuid_v4()) {
                        headers.push((HeaderName::from_static("apns-unique-id"), v));
                    }
                }
                SimReply {
                    status: 200,
                    headers,
                    body: Bytes::new(),
                }
            }
            Err(reason) => {
                headers.push((
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ));
                let body = if matches!(reason, ApnsReason::Unregistered | ApnsReason::ExpiredToken)
                {
                    serde_json::json!({"reason": reason.as_str(), "timestamp": now_ms()})
                } else {
                    serde_json::json!({"reason": reason.as_str()})
                };
                SimReply {
                    status: reason.status(),
                    headers,
                    body: Bytes::from(body.to_string()),
                }
            }
        }
    }
}

/// A header value that is new in every response (a UUID), sent as an HPACK
/// literal that is never indexed. Indexing it cost the simulator a search
/// of its dynamic table and an insert per answer, for a value never seen
/// again: 7% of its instructions per request (docs/benchmarks.md, round 7).
/// HPACK leaves the choice to the encoder; what the client reads is the same.
fn unique_value(v: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(v).ok()?;
    v.set_sensitive(true);
    Some(v)
}
