//! Apple Push Notification service (HTTP/2 provider API).
//!
//! [`ApnsProvider::send`] builds the request ([`request`]), adds the shared
//! provider token ([`auth`]), sends it over the pool and classifies the
//! answer ([`response`], then [`Code::from_apns`]). Connection-level answers
//! get one retry: `ExpiredProviderToken` with a fresh token on a new
//! connection, `UnrelatedKeyIdInToken` and `TooManyProviderTokenUpdates` on a
//! new connection.

pub mod auth;
mod payload;
pub mod reason;
pub mod request;
pub mod response;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use self::auth::{Clock, TokenAuth, Tokens};
use self::reason::ApnsReason;
use crate::config::{ApnsAuth, ApnsConfig};
use crate::job::memo::SharedPayload;
use crate::outcome::{Code, Outcome};
use crate::provider::{Answer, Message, Transport};

/// What to do with an answer.
#[derive(Debug, PartialEq)]
enum Next {
    Done(Outcome),
    /// Retire the connection and retry once; `refresh`: with a new token.
    Retry {
        refresh: bool,
    },
}

/// Delivers to APNs for one app (one topic, one key or certificate).
pub struct ApnsProvider<T> {
    transport: T,
    authority: String,
    bundle: String,
    /// The headers of each push type and priority, built once.
    base: Option<request::BaseHeaders>,
    /// `None` with certificate auth (the pool's TLS carries the client cert).
    auth: Option<Arc<TokenAuth>>,
    /// The tracking key name, when tracking is on (`[tracking]`).
    tracking: Option<String>,
}

impl<T> std::fmt::Debug for ApnsProvider<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsProvider")
            .field("authority", &self.authority)
            .field("bundle", &self.bundle)
            .field("token_auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> ApnsProvider<T> {
    /// Loads the key (token auth) and mints the first token.
    pub fn new(transport: T, cfg: &ApnsConfig) -> Result<ApnsProvider<T>, auth::AuthError> {
        Self::with_clock(transport, cfg, Clock::System)
    }

    /// As [`ApnsProvider::new`], with the clock the token's `iat` comes from.
    pub fn with_clock(
        transport: T,
        cfg: &ApnsConfig,
        clock: Clock,
    ) -> Result<ApnsProvider<T>, auth::AuthError> {
        Self::with_tokens(transport, cfg, clock, &Tokens::default())
    }

    /// As [`ApnsProvider::with_clock`], taking its token from `tokens`
    /// (shared with the other providers of the same team and key).
    pub fn with_tokens(
        transport: T,
        cfg: &ApnsConfig,
        clock: Clock,
        tokens: &Tokens,
    ) -> Result<ApnsProvider<T>, auth::AuthError> {
        let auth = match &cfg.auth {
            ApnsAuth::Token {
                team_id,
                key_id,
                key,
                refresh,
            } => Some(tokens.get_or_mint(team_id, key_id, key.expose(), *refresh, clock)?),
            ApnsAuth::Certificate => None,
        };
        Ok(ApnsProvider {
            transport,
            authority: cfg.connection.endpoint.authority.clone(),
            bundle: cfg.topic.clone(),
            base: request::BaseHeaders::new(&cfg.topic, auth.is_some()),
            auth,
            tracking: None,
        })
    }

    /// The token it signs with (`None`: certificate auth).
    pub fn token(&self) -> Option<&Arc<TokenAuth>> {
        self.auth.as_ref()
    }

    /// Adds the tracking key `name` to every notification (`None`: off).
    pub fn with_tracking(mut self, name: Option<&str>) -> Self {
        self.tracking = name.map(str::to_owned);
        self
    }

    /// The payload every recipient of the message's job shares, built by
    /// the first of them; `None` when this recipient's texts were rendered
    /// for it (placeholders) or the job's payload cannot be shared.
    fn shared_payload<'m>(&self, msg: &Message<'m>) -> Option<&'m SharedPayload> {
        // One recipient: nothing to share, the splice would only cost.
        if msg.job.recipients.len() < 2 || !msg.rendered.is_plain_of(&msg.job.notification) {
            return None;
        }
        let key = self.tracking.as_deref();
        msg.job
            .memo
            .apns(|| request::shared_payload(msg.job, msg.rendered, key))
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Sends one notification; never fails, every problem is an [`Outcome`].
    pub async fn send(&self, msg: &Message<'_>) -> Outcome {
        let Some(token) = msg.token() else {
            return Outcome::local(Code::BadDeviceToken, "the recipient has no device token");
        };
        let target = request::Target {
            bundle: &self.bundle,
            token,
            apns_id: msg.id,
            now_unix: Clock::System.unix(),
            tracking: self.tracking.as_deref(),
            base: self.base.as_ref().and_then(|b| b.get(msg.job)),
            shared: self.shared_payload(msg),
        };
        let build = || request::build(msg.job, msg.rendered, target);
        let mut built = match build() {
            Ok(b) => Some(b),
            Err(refused) => return Outcome::local(refused.code, refused.reason),
        };
        let started = Instant::now();
        let mut bearer = self.auth.as_deref().map(TokenAuth::bearer_header);
        let mut retried = false;
        loop {
            let value = bearer.as_ref().map(|(_, v)| v.clone());
            // The first attempt moves the built request in; a (rare) retry
            // of the pool or of ours builds it again: same inputs, same request.
            let make = || {
                let b = built.take().or_else(|| build().ok());
                b.map(|b| b.into_request(value.clone())).unwrap_or_default()
            };
            let answer = match self.transport.send_with(make).await {
                Ok(a) => a,
                Err(e) => return transport_failure(&e, started.elapsed()),
            };
            match classify(&answer, msg.id, started.elapsed(), !retried) {
                Next::Done(outcome) => return outcome,
                Next::Retry { refresh } => {
                    self.transport.retire(answer.conn);
                    if let (true, Some(auth), Some((seen, _))) = (refresh, &self.auth, &bearer) {
                        let fresh = auth.force_refresh(seen);
                        bearer = Some((fresh.clone(), auth.header_of(&fresh)));
                    }
                    retried = true;
                }
            }
        }
    }
}

fn transport_failure(e: &dyn std::error::Error, latency: Duration) -> Outcome {
    Outcome {
        code: Some(Code::from_transport()),
        provider_reason: Some(e.to_string()),
        latency,
        ..Outcome::default()
    }
}

/// Turns an answer into an outcome, or into one retry on a new connection.
fn classify<C>(answer: &Answer<C>, our_id: &str, latency: Duration, may_retry: bool) -> Next {
    let parsed = response::parse(answer.status, &answer.body);
    let provider_id = answer
        .headers
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(our_id)
        .to_owned();
    if parsed.is_success() {
        let mut o = Outcome::delivered(answer.status, Some(provider_id));
        o.latency = latency;
        return Next::Done(o);
    }
    let reason = parsed.reason_or_status();
    if may_retry {
        match reason {
            ApnsReason::ExpiredProviderToken => return Next::Retry { refresh: true },
            ApnsReason::UnrelatedKeyIdInToken | ApnsReason::TooManyProviderTokenUpdates => {
                return Next::Retry { refresh: false }
            }
            _ => {}
        }
    }
    Next::Done(Outcome {
        code: Some(Code::from_apns(answer.status, &reason)),
        provider_status: Some(answer.status),
        provider_reason: Some(reason.as_str().to_owned()),
        provider_id: Some(provider_id),
        retry_after: crate::provider::fcm::response::retry_after(&answer.headers),
        latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConnectionConfig, Endpoint, Secret};
    use crate::job::Job;
    use crate::provider::fake::FakeTransport;
    use crate::provider::Rendered;
    use rustls_pki_types::pem::PemObject;

    fn config() -> ApnsConfig {
        let path = format!("{}/config/dev/apns-dev.p8", env!("CARGO_MANIFEST_DIR"));
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(path).unwrap();
        ApnsConfig {
            auth: ApnsAuth::Token {
                team_id: "DEVTEAM001".into(),
                key_id: "DEVKEY0001".into(),
                key: Secret::new(key.secret_pkcs8_der().to_vec()),
                refresh: Duration::from_secs(45 * 60),
            },
            topic: "com.example.shop".into(),
            environment: crate::config::ApnsEnvironment::Sandbox,
            connection: ConnectionConfig {
                endpoint: Endpoint::parse("https://127.0.0.1:2197").unwrap(),
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
            "recipients": [{"platform": "apns", "token": "ab".repeat(32)}],
            "notification": {"title": "Hi", "body": "B"}
        }))
        .unwrap()
    }

    async fn send(p: &ApnsProvider<FakeTransport>, job: &Job) -> Outcome {
        let r = Rendered::plain(&job.notification);
        let msg = Message {
            job,
            recipient: 0,
            rendered: &r,
            id: "00000000-0000-4000-8000-000000000001",
            attempt: 1,
        };
        p.send(&msg).await
    }

    #[tokio::test(start_paused = true)]
    async fn delivered_with_token_auth_and_reused_jwt() {
        let fake = FakeTransport::new(vec![(200, ""), (200, "")]);
        let p = ApnsProvider::new(fake, &config()).unwrap();
        let j = job();
        let o = send(&p, &j).await;
        assert!(o.is_delivered());
        assert_eq!(
            o.provider_id.as_deref(),
            Some("00000000-0000-4000-8000-000000000001")
        );
        assert!(send(&p, &j).await.is_delivered());
        let seen = p.transport().requests();
        assert_eq!(seen.len(), 2);
        let auth0 = seen[0].headers()["authorization"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(auth0.starts_with("bearer ey"));
        assert_eq!(seen[1].headers()["authorization"], auth0.as_str());
        assert_eq!(
            seen[0].uri().path(),
            format!("/3/device/{}", "ab".repeat(32))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn recipients_share_the_rendered_payload_but_not_their_ids() {
        let fake = FakeTransport::new(vec![(200, ""); 4]);
        let p = ApnsProvider::new(fake, &config())
            .unwrap()
            .with_tracking(Some("pg"));
        let mut j: Job = serde_json::from_value(serde_json::json!({
            "app": "shop", "campaign": "c1",
            "recipients": [{"platform": "apns", "token": "ab".repeat(32), "vars": {"name": "Ann"}},
                           {"platform": "apns", "token": "cd".repeat(32)}],
            "notification": {"title": "Hi", "body": "B"}
        }))
        .unwrap();
        let ids = [
            "00000000-0000-4000-8000-00000000000a",
            "00000000-0000-4000-8000-00000000000b",
        ];
        let send_all = async |j: &Job| {
            for (i, id) in ids.iter().enumerate() {
                let r = Rendered::for_recipient(j, &j.recipients[i]);
                let msg = Message {
                    job: j,
                    recipient: i,
                    rendered: &r,
                    id,
                    attempt: 1,
                };
                assert!(p.send(&msg).await.is_delivered());
            }
        };
        send_all(&j).await;
        assert!(
            j.memo.apns(|| None).is_some(),
            "built once, by the first recipient"
        );
        j.notification.title = Some("Hi {{name | default: \"you\"}}".into());
        j.memo = Default::default();
        send_all(&j).await;
        assert!(
            j.memo.apns(|| None).is_none(),
            "placeholders: nothing shared"
        );
        let bodies: Vec<serde_json::Value> = p
            .transport()
            .requests()
            .iter()
            .map(|r| serde_json::from_slice(r.body()).unwrap())
            .collect();
        let titles: Vec<&str> = bodies
            .iter()
            .map(|b| b["aps"]["alert"]["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, ["Hi", "Hi", "Hi Ann", "Hi you"]);
        for (b, id) in bodies.iter().zip(ids.iter().cycle()) {
            assert_eq!(b["pg"], serde_json::json!({"n": id, "c": "c1"}));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expired_provider_token_retries_once_with_a_new_token() {
        let expired = r#"{"reason":"ExpiredProviderToken"}"#;
        let fake = FakeTransport::new(vec![(403, expired), (200, "")]);
        let p = ApnsProvider::new(fake, &config()).unwrap();
        tokio::time::advance(Duration::from_secs(21 * 60)).await;
        let o = send(&p, &job()).await;
        assert!(o.is_delivered(), "{o:?}");
        let seen = p.transport().requests();
        assert_ne!(
            seen[0].headers()["authorization"],
            seen[1].headers()["authorization"]
        );
        assert_eq!(p.transport().retired(), vec![0]);
    }

    #[tokio::test(start_paused = true)]
    async fn second_connection_level_answer_is_final() {
        let unrelated = r#"{"reason":"UnrelatedKeyIdInToken"}"#;
        let fake = FakeTransport::new(vec![(403, unrelated), (403, unrelated)]);
        let p = ApnsProvider::new(fake, &config()).unwrap();
        let o = send(&p, &job()).await;
        assert_eq!(o.code, Some(Code::InvalidCredentials));
        assert_eq!(o.provider_reason.as_deref(), Some("UnrelatedKeyIdInToken"));
        assert_eq!(p.transport().requests().len(), 2);
        let seen = p.transport().requests();
        assert_eq!(
            seen[0].headers()["authorization"],
            seen[1].headers()["authorization"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_keep_status_and_reason() {
        let fake = FakeTransport::new(vec![(410, r#"{"reason":"Unregistered","timestamp":1}"#)]);
        let p = ApnsProvider::new(fake, &config()).unwrap();
        let o = send(&p, &job()).await;
        assert_eq!(o.code, Some(Code::NotRegistered));
        assert_eq!(o.provider_status, Some(410));
        assert_eq!(o.provider_reason.as_deref(), Some("Unregistered"));
    }

    #[tokio::test(start_paused = true)]
    async fn local_refusals_send_nothing() {
        let p = ApnsProvider::new(FakeTransport::new(vec![]), &config()).unwrap();
        let mut j = job();
        j.data.insert("big".into(), "x".repeat(5000));
        let o = send(&p, &j).await;
        assert_eq!(o.code, Some(Code::PayloadTooLarge));
        assert_eq!(o.provider_status, None);
        let mut cfg = config();
        cfg.auth = ApnsAuth::Certificate;
        let p = ApnsProvider::new(FakeTransport::new(vec![(200, "")]), &cfg).unwrap();
        assert!(send(&p, &job()).await.is_delivered());
        assert!(p.transport().requests()[0]
            .headers()
            .get("authorization")
            .is_none());
        let fake = FakeTransport::new(vec![]);
        let p = ApnsProvider::new(fake, &config()).unwrap();
        let o = send(&p, &job()).await;
        assert_eq!(o.code, Some(Code::ProviderUnavailable), "transport failure");
    }
}
