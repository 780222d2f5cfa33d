//! Delivery to push providers: the shared HTTP/2 pool and TLS setup, and one
//! module per provider with the same files (auth, request, response, reason).
//!
//! Every provider takes a [`Message`] (one recipient of one job, with its
//! rendered texts) and answers an [`Outcome`](crate::outcome::Outcome): the
//! request is built by pure functions, sent over the pool, and the answer is
//! classified through the one table in [`crate::outcome`].

pub mod apns;
pub mod fcm;
pub mod h2pool;
pub mod http2;
pub mod retry_after;
pub mod tls;
pub mod webpush;

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{AppConfig, ConnectionConfig, Endpoint};
use crate::job::{Job, Notification, Platform, Recipient};
use crate::outcome::{Code, Outcome};

use self::apns::ApnsProvider;
use self::fcm::FcmProvider;
use self::h2pool::{ConnId, H2Pool, PoolError};

/// The texts of one notification after `{{var}}` rendering. Borrowed from the
/// job when a text has no placeholder, so a 1,000-recipient fan-out of a
/// plain campaign renders nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered<'a> {
    pub title: Option<Cow<'a, str>>,
    pub subtitle: Option<Cow<'a, str>>,
    pub body: Option<Cow<'a, str>>,
}

impl<'a> Rendered<'a> {
    /// The texts as written, without rendering placeholders.
    pub fn plain(n: &'a Notification) -> Rendered<'a> {
        Rendered {
            title: n.title.as_deref().map(Cow::Borrowed),
            subtitle: n.subtitle.as_deref().map(Cow::Borrowed),
            body: n.body.as_deref().map(Cow::Borrowed),
        }
    }

    /// True when these are the texts of `n` themselves (borrowed, nothing
    /// rendered), so every recipient of the job has the same.
    pub fn is_plain_of(&self, n: &Notification) -> bool {
        fn same(r: &Option<Cow<'_, str>>, own: &Option<String>) -> bool {
            match (r, own) {
                (None, None) => true,
                (Some(Cow::Borrowed(a)), Some(b)) => {
                    std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()
                }
                _ => false,
            }
        }
        same(&self.title, &n.title)
            && same(&self.subtitle, &n.subtitle)
            && same(&self.body, &n.body)
    }

    /// The texts of `job` for `recipient`, placeholders filled from its `vars`.
    pub fn for_recipient(job: &'a Job, recipient: &Recipient) -> Rendered<'a> {
        let n = &job.notification;
        Rendered {
            title: render(n.title.as_deref(), recipient),
            subtitle: render(n.subtitle.as_deref(), recipient),
            body: render(n.body.as_deref(), recipient),
        }
    }
}

fn render<'a>(text: Option<&'a str>, recipient: &Recipient) -> Option<Cow<'a, str>> {
    text.map(|t| crate::job::template::render(t, &recipient.vars))
}

/// One notification to send: one recipient of a job, ready to be built.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub job: &'a Job,
    /// Index of the recipient in `job.recipients`.
    pub recipient: usize,
    /// Title, subtitle and body rendered for this recipient.
    pub rendered: &'a Rendered<'a>,
    /// The notification id: a lower-case UUID, sent as `apns-id`.
    pub id: &'a str,
    /// 1 for the first try; retries count up.
    pub attempt: u32,
}

impl<'a> Message<'a> {
    pub fn recipient(&self) -> Option<&'a Recipient> {
        self.job.recipients.get(self.recipient)
    }

    /// The recipient's device token, if it has one.
    pub fn token(&self) -> Option<&'a str> {
        self.recipient()?.token.as_ref().map(|t| t.as_str())
    }
}

/// A provider's answer as the transport hands it back.
#[derive(Debug, Clone)]
pub struct Answer<C> {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
    /// The connection that carried the request (to retire it).
    pub conn: C,
}

/// What a provider needs from a connection pool: send a request, and retire
/// a connection that the provider found unusable. [`h2pool::H2Pool`] is the
/// real one; tests use fakes.
pub trait Transport: Send + Sync + 'static {
    type Conn: Copy + Send + Sync + std::fmt::Debug;
    type Error: std::error::Error + Send + Sync;

    fn send(
        &self,
        req: http::Request<bytes::Bytes>,
    ) -> impl std::future::Future<Output = Result<Answer<Self::Conn>, Self::Error>> + Send;

    /// Sends the request `make` builds, calling it again for each transparent
    /// retry, so that the transport keeps no copy of a request it may have
    /// to re-send (the pool's hot path). Default: one call, then `send`.
    fn send_with<F>(
        &self,
        mut make: F,
    ) -> impl std::future::Future<Output = Result<Answer<Self::Conn>, Self::Error>> + Send
    where
        F: FnMut() -> http::Request<bytes::Bytes> + Send,
    {
        self.send(make())
    }

    fn retire(&self, conn: Self::Conn);
}

/// One push provider: the same shape for APNs and FCM.
pub trait Provider: Send + Sync {
    fn platform(&self) -> Platform;
    /// Sends one notification. Never fails: local refusals, provider answers
    /// and transport failures all become an [`Outcome`] with its code.
    fn send(&self, msg: &Message<'_>) -> impl Future<Output = Outcome> + Send;
}

impl<T: Transport> Provider for ApnsProvider<T> {
    fn platform(&self) -> Platform {
        Platform::Apns
    }

    fn send(&self, msg: &Message<'_>) -> impl Future<Output = Outcome> + Send {
        ApnsProvider::send(self, msg)
    }
}

impl<T: Transport> Provider for FcmProvider<T> {
    fn platform(&self) -> Platform {
        Platform::Fcm
    }

    fn send(&self, msg: &Message<'_>) -> impl Future<Output = Outcome> + Send {
        FcmProvider::send(self, msg)
    }
}

impl Transport for H2Pool {
    type Conn = ConnId;
    type Error = PoolError;

    async fn send(&self, req: http::Request<Bytes>) -> Result<Answer<ConnId>, PoolError> {
        let r = H2Pool::send(self, req).await?;
        Ok(answer(r))
    }

    async fn send_with<F>(&self, make: F) -> Result<Answer<ConnId>, PoolError>
    where
        F: FnMut() -> http::Request<Bytes> + Send,
    {
        let r = H2Pool::send_with(self, make).await?;
        Ok(answer(r))
    }

    fn retire(&self, conn: ConnId) {
        H2Pool::retire(self, conn);
    }
}

fn answer(r: h2pool::PooledResponse) -> Answer<ConnId> {
    Answer {
        status: r.status.as_u16(),
        headers: r.headers,
        body: r.body,
        conn: r.conn_id,
    }
}

impl<T: Transport> Transport for Arc<T> {
    type Conn = T::Conn;
    type Error = T::Error;

    fn send(
        &self,
        req: http::Request<Bytes>,
    ) -> impl Future<Output = Result<Answer<T::Conn>, T::Error>> + Send {
        T::send(self, req)
    }

    fn send_with<F>(
        &self,
        make: F,
    ) -> impl Future<Output = Result<Answer<T::Conn>, T::Error>> + Send
    where
        F: FnMut() -> http::Request<Bytes> + Send,
    {
        T::send_with(self, make)
    }

    fn retire(&self, conn: T::Conn) {
        T::retire(self, conn)
    }
}

/// Why an app's providers cannot be built (start-up; `check-config` catches most).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("app {app}: {provider} TLS setup: {source}")]
    Tls {
        app: String,
        provider: &'static str,
        #[source]
        source: tls::TlsError,
    },
    #[error("app {app}: APNs key: {source}")]
    ApnsKey {
        app: String,
        #[source]
        source: apns::auth::AuthError,
    },
    #[error("app {app}: FCM service account: {source}")]
    FcmKey {
        app: String,
        #[source]
        source: fcm::auth::AuthError,
    },
    #[error("app {app}: FCM token_uri {uri:?}: {reason}")]
    TokenUri {
        app: String,
        uri: String,
        reason: String,
    },
    #[error("app {app}: {source}")]
    WebPush {
        app: String,
        #[source]
        source: webpush::WebPushError,
    },
}

/// The providers of one app: one pool and one credential per configured
/// provider. Build it inside a Tokio runtime (pools connect right away).
#[derive(Debug)]
pub struct Providers {
    pub app: String,
    pub apns: Option<ApnsProvider<H2Pool>>,
    pub fcm: Option<FcmProvider<H2Pool>>,
    pub webpush: Option<webpush::WebPushProvider>,
    /// The FCM OAuth2 token endpoint's pool, kept for shutdown.
    fcm_token_pool: Option<Arc<H2Pool>>,
}

impl Providers {
    pub fn new(app: &AppConfig) -> Result<Providers, ProviderError> {
        Self::new_with(app, &apns::auth::Tokens::default())
    }

    /// As [`Providers::new`], the APNs token taken from `tokens` (shared
    /// with every provider signing with the same team and key).
    pub fn new_with(
        app: &AppConfig,
        tokens: &apns::auth::Tokens,
    ) -> Result<Providers, ProviderError> {
        let name = app.name.clone();
        let pool = |label: &'static str, provider, cfg: &ConnectionConfig| {
            let tls = tls::client_config(cfg).map_err(|source| ProviderError::Tls {
                app: name.clone(),
                provider,
                source,
            })?;
            Ok::<_, ProviderError>(H2Pool::new(label, cfg, tls))
        };
        let apns = match &app.apns {
            Some(cfg) => {
                let p = pool("apns", "APNs", &cfg.connection)?;
                Some(
                    ApnsProvider::with_tokens(p, cfg, apns::auth::Clock::System, tokens).map_err(
                        |source| ProviderError::ApnsKey {
                            app: name.clone(),
                            source,
                        },
                    )?,
                )
            }
            None => None,
        };
        let (fcm, fcm_token_pool) = match &app.fcm {
            Some(cfg) => {
                let token_cfg = token_endpoint(&name, &cfg.token_uri, &cfg.connection)?;
                let token_pool = Arc::new(pool("fcm-oauth", "FCM token endpoint", &token_cfg)?);
                let send_pool = pool("fcm", "FCM", &cfg.connection)?;
                let fcm =
                    FcmProvider::new(send_pool, token_pool.clone(), cfg).map_err(|source| {
                        ProviderError::FcmKey {
                            app: name.clone(),
                            source,
                        }
                    })?;
                (Some(fcm), Some(token_pool))
            }
            None => (None, None),
        };
        let webpush = match &app.webpush {
            Some(cfg) => Some(webpush::WebPushProvider::new(cfg).map_err(|source| {
                ProviderError::WebPush {
                    app: name.clone(),
                    source,
                }
            })?),
            None => None,
        };
        Ok(Providers {
            app: name,
            apns,
            fcm,
            webpush,
            fcm_token_pool,
        })
    }

    /// Adds the tracking key `name` to APNs and FCM notifications (`None`:
    /// off). Web Push does not carry one yet.
    pub fn with_tracking(mut self, name: Option<&str>) -> Self {
        self.apns = self.apns.map(|p| p.with_tracking(name));
        self.fcm = self.fcm.map(|p| p.with_tracking(name));
        self
    }

    /// Snapshots of the push pools (APNs, FCM, Web Push's per-origin pools
    /// summed; not the OAuth token pool), for the pool gauges.
    pub fn pool_stats(&self) -> Vec<(Platform, h2pool::PoolStats)> {
        let mut out = Vec::with_capacity(3);
        if let Some(p) = &self.apns {
            out.push((Platform::Apns, p.transport().stats()));
        }
        if let Some(p) = &self.fcm {
            out.push((Platform::Fcm, p.transport().stats()));
        }
        if let Some(p) = &self.webpush {
            out.push((Platform::Webpush, p.pool_stats()));
        }
        out
    }

    /// Sends recipient `recipient` of `job`: its texts rendered for it and a
    /// fresh notification id (what the daemon, `pushgate send` and the load
    /// test all do).
    pub async fn send_recipient(&self, job: &Job, recipient: usize, attempt: u32) -> Outcome {
        let Some(r) = job.recipients.get(recipient) else {
            return Outcome::local(Code::InvalidJob, "no such recipient in the job");
        };
        let rendered = Rendered::for_recipient(job, r);
        let id = new_notification_id();
        let msg = Message {
            job,
            recipient,
            rendered: &rendered,
            id: &id,
            attempt,
        };
        self.send(&msg).await
    }

    /// Sends to the provider of the recipient's platform.
    pub async fn send(&self, msg: &Message<'_>) -> Outcome {
        let Some(platform) = msg.recipient().map(|r| r.platform) else {
            return Outcome::local(Code::InvalidJob, "no such recipient in the job");
        };
        match platform {
            Platform::Apns => {
                if let Some(p) = &self.apns {
                    return p.send(msg).await;
                }
            }
            Platform::Fcm => {
                if let Some(p) = &self.fcm {
                    return p.send(msg).await;
                }
            }
            Platform::Webpush => {
                if let Some(p) = &self.webpush {
                    // Boxed: the Web Push future (encryption, HTTP/1.1 or
                    // HTTP/2) is 8 KB, five times APNs' or FCM's, and inline
                    // it would size (and be copied with) every send.
                    return Box::pin(p.send(msg.job, msg.recipient, msg.attempt)).await;
                }
            }
        }
        Outcome::local(
            Code::UnknownApp,
            format!("app {} has no {platform} credentials", self.app),
        )
    }

    /// Closes every pool (in-flight requests finish first).
    pub async fn shutdown(&self) {
        if let Some(p) = &self.apns {
            p.transport().shutdown().await;
        }
        if let Some(p) = &self.fcm {
            p.transport().shutdown().await;
        }
        if let Some(p) = &self.fcm_token_pool {
            p.shutdown().await;
        }
        if let Some(p) = &self.webpush {
            p.shutdown().await;
        }
    }
}

/// The pool settings for the token endpoint: the origin of `token_uri`, the
/// send pool's TLS trust, one connection.
fn token_endpoint(
    app: &str,
    uri: &str,
    send: &ConnectionConfig,
) -> Result<ConnectionConfig, ProviderError> {
    let err = |reason: String| ProviderError::TokenUri {
        app: app.to_owned(),
        uri: uri.to_owned(),
        reason,
    };
    let rest = uri
        .strip_prefix("https://")
        .ok_or_else(|| err("must start with https://".into()))?;
    let origin_len = "https://".len() + rest.find('/').unwrap_or(rest.len());
    let endpoint = Endpoint::parse(&uri[..origin_len]).map_err(err)?;
    Ok(ConnectionConfig {
        endpoint,
        connections: 1,
        client_cert: None,
        ..send.clone()
    })
}

/// A notification id: a random (v4) UUID in canonical lower-case form,
/// held inline (36 bytes, no allocation: the gateway makes one per request).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NotificationId([u8; 36]);

impl NotificationId {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever written
        // ([`new_notification_id`]), so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::ops::Deref for NotificationId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for NotificationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for NotificationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A fresh random notification id.
///
/// Written digit by digit into one buffer: `format!` of the halves was 9% of
/// the simulator's CPU under h2load, and the gateway makes one per request.
pub fn new_notification_id() -> NotificationId {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = fastrand::u128(..);
    let v = (v & !(0xF000u128 << 64)) | (0x4000u128 << 64); // version 4
    let v = (v & !(0xC000u128 << 48)) | (0x8000u128 << 48); // variant 10
    let mut buf = [0u8; 36];
    let mut at = 0;
    for (i, byte) in v.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            buf[at] = b'-';
            at += 1;
        }
        buf[at] = HEX[usize::from(byte >> 4)];
        buf[at + 1] = HEX[usize::from(byte & 0xF)];
        at += 2;
    }
    NotificationId(buf)
}

/// Deep-merges `extra` into `base`: objects merge key by key, anything else
/// is replaced. Used for the per-provider overrides of a job.
pub fn merge_json(
    base: &mut serde_json::Value,
    extra: &serde_json::Map<String, serde_json::Value>,
) {
    if !base.is_object() {
        *base = serde_json::Value::Object(serde_json::Map::new());
    }
    let serde_json::Value::Object(map) = base else {
        return;
    };
    for (k, v) in extra {
        match (map.get_mut(k), v) {
            (Some(slot @ serde_json::Value::Object(_)), serde_json::Value::Object(inner)) => {
                merge_json(slot, inner)
            }
            _ => {
                map.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notification_ids_are_v4_uuids() {
        let a = new_notification_id();
        assert_eq!(a.len(), 36);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
        assert!(a
            .chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, new_notification_id());
    }

    #[test]
    fn merge_is_deep() {
        let mut v = json!({"aps": {"a": 1, "b": 2}, "x": 1});
        let extra = json!({"aps": {"b": 3, "c": 4}, "x": {"y": 1}});
        merge_json(&mut v, extra.as_object().unwrap());
        assert_eq!(v, json!({"aps": {"a": 1, "b": 3, "c": 4}, "x": {"y": 1}}));
    }

    #[test]
    fn rendering_borrows_plain_texts_and_fills_vars() {
        let job: Job = serde_json::from_value(json!({
            "app": "shop",
            "recipients": [{"platform": "fcm", "token": "t", "vars": {"name": "Ann"}},
                           {"platform": "fcm", "token": "u"}],
            "notification": {"title": "Hi {{name | default: \"there\"}}", "body": "Sale"}
        }))
        .unwrap();
        let r = Rendered::for_recipient(&job, &job.recipients[0]);
        assert_eq!(r.title.as_deref(), Some("Hi Ann"));
        assert!(matches!(r.body, Some(Cow::Borrowed("Sale"))));
        let r = Rendered::for_recipient(&job, &job.recipients[1]);
        assert_eq!(r.title.as_deref(), Some("Hi there"));
    }
}
