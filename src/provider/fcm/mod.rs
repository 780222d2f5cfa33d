//! Firebase Cloud Messaging HTTP v1.
//!
//! [`FcmProvider::send`] builds the `messages:send` body ([`request`]), adds
//! the cached OAuth2 access token ([`auth`]), sends it over the pool and
//! classifies the answer ([`response`], then `Code::from_fcm`). A 401 without
//! an FcmError means the access token was refused: it is dropped, a new one
//! fetched, and the message retried once.

pub mod auth;
pub mod reason;
pub mod request;
pub mod response;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use tokio::time::Instant;

use self::auth::{AccessToken, AssertionSigner, AuthError, TokenCache};
use crate::config::FcmConfig;
use crate::outcome::{Code, Outcome};
use crate::provider::apns::auth::Clock;
use crate::provider::{Message, Transport};
use crate::telemetry::tracking::TrackingKey;

/// Delivers to FCM for one app (one Firebase project, one service account).
pub struct FcmProvider<T> {
    transport: T,
    authority: String,
    project: String,
    tokens: TokenCache,
    /// The tracking key name, when tracking is on (`[tracking]`).
    tracking: Option<String>,
}

impl<T> std::fmt::Debug for FcmProvider<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmProvider")
            .field("authority", &self.authority)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> FcmProvider<T> {
    /// `transport` reaches the send endpoint, `token_transport` the OAuth2
    /// token endpoint (`cfg.token_uri`). No token is fetched until the first send.
    pub fn new<U: Transport>(
        transport: T,
        token_transport: U,
        cfg: &FcmConfig,
    ) -> Result<FcmProvider<T>, AuthError> {
        let sa = &cfg.service_account;
        let signer = AssertionSigner::new(
            &sa.client_email,
            &sa.private_key_id,
            sa.private_key.expose(),
            &cfg.token_uri,
        )?;
        let fetcher = Arc::new(Fetcher {
            transport: token_transport,
            signer,
            token_path: token_path(&cfg.token_uri),
        });
        let tokens = TokenCache::new(move || {
            let f = fetcher.clone();
            Box::pin(async move { f.fetch().await })
        });
        Ok(FcmProvider {
            transport,
            authority: cfg.connection.endpoint.authority.clone(),
            project: cfg.project_id.clone(),
            tokens,
            tracking: None,
        })
    }

    /// Adds the tracking key `name` to every message's `data` (`None`: off).
    pub fn with_tracking(mut self, name: Option<&str>) -> Self {
        self.tracking = name.map(str::to_owned);
        self
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Sends one message; never fails, every problem is an [`Outcome`].
    pub async fn send(&self, msg: &Message<'_>) -> Outcome {
        let Some(token) = msg.token() else {
            return Outcome::local(Code::BadDeviceToken, "the recipient has no device token");
        };
        let tracking = self.tracking.as_deref().map(|name| TrackingKey {
            name,
            notification_id: msg.id,
            campaign: msg.job.campaign.as_deref(),
        });
        let now = Clock::System.unix();
        let body = match request::body(msg.job, msg.rendered, token, now, tracking) {
            Ok(b) => Bytes::from(b),
            Err(refused) => return Outcome::local(refused.code, refused.reason),
        };
        let started = Instant::now();
        let mut retried = false;
        loop {
            let bearer = match self.tokens.bearer().await {
                Ok(b) => b,
                Err(e) => return auth_failure(&e, started.elapsed()),
            };
            let req = request::to_request(&self.project, &bearer, body.clone());
            let answer = match self.transport.send(req).await {
                Ok(a) => a,
                Err(e) => return failure(Code::from_transport(), &e, started.elapsed()),
            };
            let parsed = response::parse(answer.status, &answer.body);
            if parsed.is_success() {
                let mut o = Outcome::delivered(answer.status, parsed.name);
                o.latency = started.elapsed();
                return o;
            }
            if parsed.is_unauthenticated() && !retried {
                self.tokens.invalidate(&bearer);
                retried = true;
                continue;
            }
            return Outcome {
                code: Some(parsed.code()),
                provider_status: Some(answer.status),
                provider_reason: Some(parsed.reason()),
                provider_id: None,
                retry_after: response::retry_after(&answer.headers),
                latency: started.elapsed(),
            };
        }
    }
}

fn failure(code: Code, e: &dyn std::error::Error, latency: Duration) -> Outcome {
    Outcome {
        code: Some(code),
        provider_reason: Some(e.to_string()),
        latency,
        ..Outcome::default()
    }
}

/// No access token: a refused account is a credentials problem, an
/// unreachable endpoint a transient one.
fn auth_failure(e: &AuthError, latency: Duration) -> Outcome {
    let code = match e {
        AuthError::Unavailable(_) => Code::ProviderUnavailable,
        AuthError::Refused(_) | AuthError::BadKey(_) | AuthError::Sign => Code::InvalidCredentials,
    };
    failure(code, e, latency)
}

/// Fetches access tokens from the token endpoint.
struct Fetcher<T> {
    transport: T,
    signer: AssertionSigner,
    /// Path of `token_uri` (the token pool is connected to its origin).
    token_path: String,
}

/// `/token` of `https://host:port/token` (`/` when there is no path).
fn token_path(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    rest.find('/')
        .map_or_else(|| "/".to_owned(), |i| rest[i..].to_owned())
}

impl<T: Transport> Fetcher<T> {
    async fn fetch(&self) -> Result<AccessToken, AuthError> {
        let form = self.signer.form(Clock::System.unix())?;
        let mut req = http::Request::new(Bytes::from(form));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self
            .token_path
            .parse()
            .map_err(|_| AuthError::Refused(format!("bad token_uri path {:?}", self.token_path)))?;
        req.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let answer = self
            .transport
            .send(req)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let token = auth::parse_token_response(answer.status, &answer.body);
        if let Err(e) = &token {
            tracing::warn!(error = %e, "FCM access token refused");
        }
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConnectionConfig, Endpoint, Secret, ServiceAccount};
    use crate::job::Job;
    use crate::provider::fake::FakeTransport;
    use crate::provider::Rendered;
    use rustls_pki_types::pem::PemObject;

    const TOKEN: &str = r#"{"access_token":"ya29.one","expires_in":3599,"token_type":"Bearer"}"#;
    const TOKEN2: &str = r#"{"access_token":"ya29.two","expires_in":3599,"token_type":"Bearer"}"#;
    const UNAUTH: &str = r#"{"error":{"code":401,"status":"UNAUTHENTICATED","message":"bad"}}"#;

    fn config() -> FcmConfig {
        let path = format!(
            "{}/config/dev/fcm-service-account.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let sa: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(
            sa["private_key"].as_str().unwrap().as_bytes(),
        )
        .unwrap();
        let s = |k: &str| sa[k].as_str().unwrap().to_owned();
        FcmConfig {
            project_id: s("project_id"),
            service_account: ServiceAccount {
                client_email: s("client_email"),
                private_key_id: s("private_key_id"),
                private_key: Secret::new(key.secret_pkcs8_der().to_vec()),
                project_id: s("project_id"),
                token_uri: s("token_uri"),
            },
            token_uri: s("token_uri"),
            connection: ConnectionConfig {
                endpoint: Endpoint::parse("https://127.0.0.1:4443").unwrap(),
                connections: 1,
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(1),
                keepalive_interval: Duration::from_secs(30),
                keepalive_timeout: Duration::from_secs(5),
                extra_ca: vec![],
                client_cert: None,
            },
        }
    }

    fn job() -> Job {
        serde_json::from_value(serde_json::json!({
            "app": "shop",
            "recipients": [{"platform": "fcm", "token": "tok-1"}],
            "notification": {"title": "Hi", "body": "B"}
        }))
        .unwrap()
    }

    async fn send(p: &FcmProvider<FakeTransport>) -> Outcome {
        let j = job();
        let r = Rendered::plain(&j.notification);
        let msg = Message {
            job: &j,
            recipient: 0,
            rendered: &r,
            id: "id",
            attempt: 1,
        };
        p.send(&msg).await
    }

    fn provider(
        send: Vec<(u16, &'static str)>,
        token: Vec<(u16, &'static str)>,
    ) -> FcmProvider<FakeTransport> {
        FcmProvider::new(
            FakeTransport::new(send),
            FakeTransport::new(token),
            &config(),
        )
        .unwrap()
    }

    #[test]
    fn token_requests_go_to_the_path_of_token_uri() {
        assert_eq!(token_path("https://127.0.0.1:4443/token"), "/token");
        assert_eq!(token_path("https://oauth2.googleapis.com/token"), "/token");
        assert_eq!(token_path("https://h"), "/");
    }

    #[tokio::test]
    async fn token_is_fetched_once_and_used_as_bearer() {
        let ok = r#"{"name":"projects/pushgate-dev/messages/1"}"#;
        let p = provider(vec![(200, ok), (200, ok)], vec![(200, TOKEN)]);
        let o = send(&p).await;
        assert!(o.is_delivered());
        assert_eq!(
            o.provider_id.as_deref(),
            Some("projects/pushgate-dev/messages/1")
        );
        assert!(send(&p).await.is_delivered());
        let seen = p.transport().requests();
        assert_eq!(seen[1].headers()["authorization"], "Bearer ya29.one");
        assert_eq!(
            seen[0].uri().path(),
            "/v1/projects/pushgate-dev/messages:send"
        );
    }

    #[tokio::test]
    async fn unauthenticated_refreshes_the_token_and_retries_once() {
        let ok = r#"{"name":"projects/p/messages/2"}"#;
        let p = provider(
            vec![(401, UNAUTH), (200, ok)],
            vec![(200, TOKEN), (200, TOKEN2)],
        );
        assert!(send(&p).await.is_delivered());
        let seen = p.transport().requests();
        assert_eq!(seen[1].headers()["authorization"], "Bearer ya29.two");

        let p = provider(
            vec![(401, UNAUTH), (401, UNAUTH)],
            vec![(200, TOKEN), (200, TOKEN2)],
        );
        let o = send(&p).await;
        assert_eq!(o.code, Some(Code::InvalidCredentials));
        assert_eq!(o.provider_reason.as_deref(), Some("UNAUTHENTICATED"));
    }

    #[tokio::test]
    async fn refusals_and_token_endpoint_failures() {
        let quota = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"}]}}"#;
        let p = provider(vec![(429, quota)], vec![(200, TOKEN)]);
        let o = send(&p).await;
        assert_eq!(o.code, Some(Code::QuotaExceeded));
        assert_eq!(o.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(o.provider_reason.as_deref(), Some("QUOTA_EXCEEDED"));

        let grant = r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        let p = provider(vec![], vec![(400, grant)]);
        let o = send(&p).await;
        assert_eq!(o.code, Some(Code::InvalidCredentials));
        assert!(p.transport().requests().is_empty());

        let p = provider(vec![], vec![]);
        assert_eq!(send(&p).await.code, Some(Code::ProviderUnavailable));
    }
}
