//! The FCM simulator: the OAuth2 token endpoint and `messages:send` over TLS + HTTP/2, as protocols.md §4.2.
//!
//! See the [`crate::sim`] module docs for scripted tokens and knobs.

mod oauth;
mod send;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde_json::{json, Value};

use self::oauth::Issuer;
use self::send::RpcError;
use super::jwt::PublicKey;
use super::knobs::{chance, now_ms, Latency, RateWindows};
use super::server::{self, ConnCtx, Handler, ServerSetup, SimHandle, SimReply, SimRequest};
use super::{dev, stats::SimStats};
use crate::provider::fcm::reason::{FcmErrorCode, RpcStatus};

/// Prefix of tokens that force any FCM error code: `error-<CODE>`.
pub const FORCE_PREFIX: &str = "error-";

/// Knobs of the FCM simulator. `Default` = project `pushgate-dev`, the dev
/// service account, 1 h tokens, 100 streams, no faults.
#[derive(Debug, Clone)]
pub struct FcmSimOptions {
    /// The only project the service account may send to.
    pub project: String,
    /// The service account's `private_key_id` (assertion `kid`).
    pub key_id: String,
    /// The service account's `client_email` (assertion `iss`).
    pub client_email: String,
    /// The service account's public key, SPKI PEM.
    pub public_key_pem: String,
    /// Lifetime of issued access tokens (`expires_in`); Google: 3599 s.
    pub token_lifetime: Duration,
    /// Messages per project per minute before 429 QUOTA_EXCEEDED.
    pub quota_per_minute: Option<u64>,
    /// The window `quota_per_minute` counts in (Google: a minute; tests
    /// shorten it). Retry-After is the time left in the window.
    pub quota_window: Duration,
    pub max_streams: u32,
    pub latency: Latency,
    /// Share of otherwise-successful sends answered 500 INTERNAL or 503
    /// UNAVAILABLE (half each).
    pub error_rate: f64,
    /// After this many requests on a connection: GOAWAY(NO_ERROR, `max_age`).
    pub goaway_every: Option<u64>,
    /// Benchmark mode: bearer check then 200, nothing else.
    pub accept_all: bool,
    pub recent_requests: usize,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for FcmSimOptions {
    fn default() -> Self {
        FcmSimOptions {
            project: dev::FCM_PROJECT.to_owned(),
            key_id: dev::FCM_KEY_ID.to_owned(),
            client_email: dev::FCM_CLIENT_EMAIL.to_owned(),
            public_key_pem: dev::FCM_PUBLIC_KEY_PEM.to_owned(),
            token_lifetime: Duration::from_secs(3599),
            quota_per_minute: None,
            quota_window: Duration::from_secs(60),
            max_streams: 100,
            latency: Latency::None,
            error_rate: 0.0,
            goaway_every: None,
            accept_all: false,
            recent_requests: 256,
            tls: None,
        }
    }
}

/// A registration token that makes the simulator answer with `code`.
pub fn forced_token(code: &FcmErrorCode) -> String {
    format!("{FORCE_PREFIX}{}-sim", code.as_str())
}

/// Starts the FCM simulator (token endpoint + send API) on `addr`.
pub async fn start(addr: SocketAddr, opts: FcmSimOptions) -> std::io::Result<SimHandle> {
    let public = PublicKey::from_spki_pem(&opts.public_key_pem).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("FCM public key: {e}"),
        )
    })?;
    let setup = ServerSetup {
        tls: opts.tls.clone().unwrap_or_else(dev::server_tls),
        max_streams: opts.max_streams.max(1),
        start_low: false,
        max_body: 64 * 1024,
        record: !opts.accept_all && opts.recent_requests > 0,
        fast: false,
    };
    let sim = Arc::new(FcmSim {
        stats: Arc::new(SimStats::new(opts.recent_requests)),
        issuer: Issuer::new(
            opts.key_id.clone(),
            opts.client_email.clone(),
            public,
            opts.token_lifetime,
        ),
        quota: RateWindows::new(opts.quota_window),
        seen_flaky: Mutex::new(HashSet::new()),
        opts,
    });
    server::serve(addr, setup, sim).await
}

struct FcmSim {
    opts: FcmSimOptions,
    stats: Arc<SimStats>,
    issuer: Issuer,
    quota: RateWindows,
    seen_flaky: Mutex<HashSet<String>>,
}

impl Handler for FcmSim {
    type Conn = ();

    fn new_conn(&self) {}

    fn stats(&self) -> &Arc<SimStats> {
        &self.stats
    }

    // Also in accept-all (benchmark) mode: a slow provider for the load test.
    fn latency(&self) -> Duration {
        self.opts.latency.sample()
    }

    async fn handle(self: Arc<Self>, req: SimRequest, conn: Arc<ConnCtx<()>>) -> SimReply {
        if let Some(n) = self.opts.goaway_every {
            if conn.count_request() == n {
                conn.go_away(Bytes::from_static(b"max_age"));
            }
        }
        if req.path == "/token" && req.method == Method::POST {
            return self.token(&req);
        }
        match self.send(&req) {
            Ok(name) => json_reply(200, &json!({ "name": name }), None),
            Err(e) if e.status == 502 => html_502(),
            Err(e) => json_reply(e.status, &e.body(), e.retry_after),
        }
    }
}

impl FcmSim {
    fn token(&self, req: &SimRequest) -> SimReply {
        let form = String::from_utf8_lossy(&req.body);
        match self.issuer.grant(&form, req.authority.as_deref()) {
            Ok(token) => {
                self.stats.count_grant();
                let body = json!({
                    "access_token": token,
                    "expires_in": self.opts.token_lifetime.as_secs(),
                    "token_type": "Bearer",
                });
                json_reply(200, &body, None)
            }
            Err(e) => json_reply(
                400,
                &json!({"error": e.error, "error_description": e.description}),
                None,
            ),
        }
    }

    /// Returns the message name, or the error to answer with.
    fn send(&self, req: &SimRequest) -> Result<String, RpcError> {
        let project = req
            .path
            .strip_prefix("/v1/projects/")
            .and_then(|rest| rest.strip_suffix("/messages:send"))
            .filter(|p| !p.is_empty() && !p.contains('/'));
        let (Some(project), true) = (project, req.method == Method::POST) else {
            let msg = format!(
                "The requested URL {} was not found on this server.",
                req.path
            );
            return Err(RpcError::new(404, RpcStatus::NotFound, msg));
        };
        self.check_bearer(req)?;
        if project != self.opts.project {
            return Err(RpcError::new(403, RpcStatus::PermissionDenied, format!(
                "Permission 'cloudmessaging.messages.create' denied on resource '//cloudmessaging.googleapis.com/projects/{project}' (or it may not exist)."
            )));
        }
        if self.opts.accept_all {
            return Ok(message_name(project, false));
        }
        let checked = send::check(&req.body)?;
        if let Some(token) = &checked.token {
            self.scripted(token)?;
        }
        if let Some(limit) = self.opts.quota_per_minute {
            if self.quota.over(project, limit) {
                let mut e = RpcError::fcm(&FcmErrorCode::QuotaExceeded);
                e.retry_after = Some(self.quota.retry_after(project));
                return Err(e);
            }
        }
        if chance(self.opts.error_rate) {
            let code = if fastrand::bool() {
                FcmErrorCode::Internal
            } else {
                FcmErrorCode::Unavailable
            };
            return Err(RpcError::fcm(&code));
        }
        Ok(message_name(project, checked.validate_only))
    }

    fn check_bearer(&self, req: &SimRequest) -> Result<(), RpcError> {
        let token = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        if token.is_some_and(|t| self.issuer.valid(t)) {
            return Ok(());
        }
        Err(RpcError::new(
            401,
            RpcStatus::Unauthenticated,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        ))
    }

    /// The scripted outcomes of a registration token.
    fn scripted(&self, token: &str) -> Result<(), RpcError> {
        let simple = [
            ("unregistered", FcmErrorCode::Unregistered),
            ("mismatch", FcmErrorCode::SenderIdMismatch),
            ("thirdparty", FcmErrorCode::ThirdPartyAuthError),
        ];
        if let Some((_, code)) = simple.iter().find(|(p, _)| token.starts_with(p)) {
            return Err(RpcError::fcm(code));
        }
        if token.starts_with("invalid") {
            let mut e = RpcError::fcm(&FcmErrorCode::InvalidArgument);
            e.details.push(send::bad_request(
                "message.token",
                "Invalid registration token",
            ));
            return Err(e);
        }
        if token.starts_with("quota") {
            let mut e = RpcError::fcm(&FcmErrorCode::QuotaExceeded);
            e.retry_after = Some(60);
            return Err(e);
        }
        let flaky_first = token.starts_with("flaky")
            && self
                .seen_flaky
                .lock()
                .map(|mut s| s.insert(token.to_owned()))
                .unwrap_or(false);
        if token.starts_with("unavailable") || flaky_first {
            let mut e = RpcError::fcm(&FcmErrorCode::Unavailable);
            e.retry_after = Some(1);
            return Err(e);
        }
        if token.starts_with("http502") {
            return Err(RpcError::new(502, RpcStatus::Unavailable, "Bad Gateway"));
        }
        if let Some(rest) = token.strip_prefix(FORCE_PREFIX) {
            let code = FcmErrorCode::KNOWN
                .iter()
                .filter(|c| rest.starts_with(c.as_str()))
                .max_by_key(|c| c.as_str().len());
            if let Some(code) = code {
                return Err(RpcError::fcm(code));
            }
        }
        Ok(())
    }
}

fn message_name(project: &str, validate_only: bool) -> String {
    if validate_only {
        return format!("projects/{project}/messages/fake_message_id");
    }
    format!(
        "projects/{project}/messages/0:{}%{:016x}",
        now_ms(),
        fastrand::u64(..)
    )
}

fn json_reply(status: u16, body: &Value, retry_after: Option<u64>) -> SimReply {
    let mut headers = vec![(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    )];
    if let Some(secs) = retry_after {
        headers.push((
            HeaderName::from_static("retry-after"),
            HeaderValue::from(secs),
        ));
    }
    SimReply {
        status,
        headers,
        body: Bytes::from(body.to_string()),
    }
}

fn html_502() -> SimReply {
    SimReply {
        status: 502,
        headers: vec![(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=UTF-8"),
        )],
        body: Bytes::from_static(
            b"<!DOCTYPE html><html lang=en><title>Error 502 (Server Error)!!1</title><p><b>502.</b> <ins>That\xe2\x80\x99s an error.</ins><p>The server encountered a temporary error and could not complete your request.<p>Please try again in 30 seconds. <ins>That\xe2\x80\x99s all we know.</ins></html>",
        ),
    }
}
