//! A Web Push service simulator (RFC 8030) over TLS and HTTP/2 (or, with
//! [`WebPushSimOptions::http1_only`], only HTTP/1.1 with keep-alive, like a
//! push service without h2) that checks each VAPID header, really decrypts
//! each message with the subscription's private key, records it, and
//! answers by endpoint path: `/gone/...` 410, `/notfound/...` 404,
//! `/busy/...` 429 with Retry-After, `/down/...` 503, anything else 201
//! Created with a `Location`.
//!
//! Keys: subscriptions minted through [`WebPushSimHandle::subscribe`] (or
//! given with [`WebPushSimHandle::register`]) are remembered by path; any
//! other path uses its [`keys::dev_keys`]. TEST MATERIAL ONLY.

pub mod keys;
mod serve;
pub mod vapid;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use self::keys::{dev_subscription, mint_subscription, SubscriptionKeys};
use crate::job::WebPushSubscription;

/// Where `pushgate simulate` serves Web Push.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4444";
/// Retry-After sent with `/busy/...` answers, seconds.
pub const BUSY_RETRY_AFTER: u64 = 7;
/// Largest body a push service must accept (RFC 8030 section 7.2).
pub const MAX_BODY: usize = 4096;
/// Recorded messages kept (oldest dropped first).
const RECORD_CAP: usize = 10_000;

/// The dev VAPID key (`config/dev/vapid-dev.p8`), trusted by default.
pub const VAPID_DEV_P8: &str = include_str!("../../../config/dev/vapid-dev.p8");

/// One message the simulator accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// The decrypted plaintext.
    pub payload: Vec<u8>,
    /// The encrypted body as sent.
    pub body: Vec<u8>,
    pub ttl: u64,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    pub vapid: vapid::Vapid,
    /// The HTTP version it came over (HTTP/2, or HTTP/1.1 in that mode).
    pub version: http::Version,
}

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct WebPushSimOptions {
    /// Uncompressed VAPID public keys accepted; empty accepts any correctly
    /// signed key. Default: the dev key only.
    pub trusted_keys: Vec<Vec<u8>>,
    /// Speak only HTTP/1.1 (ALPN `http/1.1`, keep-alive), like a push
    /// service without HTTP/2. Default: HTTP/2 only.
    pub http1_only: bool,
}

impl Default for WebPushSimOptions {
    fn default() -> Self {
        WebPushSimOptions {
            trusted_keys: dev_vapid_public_key().into_iter().collect(),
            http1_only: false,
        }
    }
}

/// The uncompressed public key of the embedded dev VAPID key.
pub fn dev_vapid_public_key() -> Option<Vec<u8>> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(VAPID_DEV_P8.as_bytes()).ok()?;
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        der.secret_pkcs8_der(),
        &rng,
    )
    .ok()?;
    Some(key.public_key().as_ref().to_vec())
}

#[derive(Default)]
struct State {
    trusted: Vec<Vec<u8>>,
    http1_only: bool,
    /// TLS connections accepted.
    connections: std::sync::atomic::AtomicU64,
    /// TLS connections open now, and the most ever open at once.
    open: std::sync::atomic::AtomicU64,
    peak_open: std::sync::atomic::AtomicU64,
    keys: Mutex<HashMap<String, SubscriptionKeys>>,
    received: Mutex<VecDeque<Received>>,
    statuses: Mutex<BTreeMap<u16, u64>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A running simulator; dropping it (or [`WebPushSimHandle::shutdown`]) stops it.
pub struct WebPushSimHandle {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl WebPushSimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`: the base of every endpoint it serves.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Mints a subscription at `<path_prefix>/<random>` and remembers its keys.
    pub fn subscribe(&self, path_prefix: &str) -> WebPushSubscription {
        let (sub, keys) = mint_subscription(&self.base_url(), path_prefix);
        let path = sub.endpoint[self.base_url().len()..].to_owned();
        self.register(&path, keys);
        sub
    }

    /// Remembers the keys of the subscription at `path` (e.g. `/ok/abc`).
    pub fn register(&self, path: &str, keys: SubscriptionKeys) {
        lock(&self.state.keys).insert(path.to_owned(), keys);
    }

    /// Every accepted message so far (oldest first).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state.received).iter().cloned().collect()
    }

    /// Answers sent so far, by status.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        lock(&self.state.statuses).clone()
    }

    /// TLS connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The most TLS connections that were open at the same time.
    pub fn peak_connections(&self) -> u64 {
        self.state
            .peak_open
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for WebPushSimHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Binds `addr` (use port 0 in tests) and serves until shut down.
pub async fn start(addr: SocketAddr, opts: WebPushSimOptions) -> io::Result<WebPushSimHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let mut tls = super::dev::server_tls();
    if opts.http1_only {
        let mut only_h1 = (*tls).clone();
        only_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        tls = Arc::new(only_h1);
    }
    let acceptor = TlsAcceptor::from(tls);
    let state = Arc::new(State {
        trusted: opts.trusted_keys,
        http1_only: opts.http1_only,
        ..State::default()
    });
    let (stop, mut stopped) = watch::channel(false);
    let st = Arc::clone(&state);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    tokio::spawn(serve::serve_conn(acceptor.clone(), tcp, Arc::clone(&st), stopped.clone()));
                }
            }
        }
    });
    Ok(WebPushSimHandle {
        addr,
        state,
        stop,
        task: Some(task),
    })
}

type Answer = (u16, Vec<(&'static str, String)>, Option<&'static str>);

fn answer(state: &State, parts: &http::request::Parts, body: &[u8], too_large: bool) -> Answer {
    if parts.method != http::Method::POST {
        return (405, vec![], Some("MethodNotAllowed"));
    }
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    // `:authority` over HTTP/2, the Host header over HTTP/1.1.
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| header("host"))
        .unwrap_or("");
    let origin = match authority.strip_suffix(":443") {
        Some(host) => format!("https://{host}"),
        None => format!("https://{authority}"),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let vapid = match vapid::check(header("authorization"), &origin, &state.trusted, now) {
        Ok(v) => v,
        Err(r) => return (r.status, vec![], Some(r.reason)),
    };
    let path = parts.uri.path().to_owned();
    if let Some(scripted) = scripted(&path) {
        return scripted;
    }
    let Some(ttl) = header("ttl").and_then(|t| t.parse::<u64>().ok()) else {
        return (400, vec![], Some("MissingTtl"));
    };
    if header("content-encoding") != Some("aes128gcm") {
        return (400, vec![], Some("UnsupportedContentEncoding"));
    }
    if too_large {
        return (413, vec![], Some("PayloadTooLarge"));
    }
    let topic = header("topic").map(str::to_owned);
    if topic.as_deref().is_some_and(|t| {
        t.len() > 32
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        return (400, vec![], Some("BadTopic"));
    }
    let keys = lock(&state.keys)
        .get(&path)
        .cloned()
        .unwrap_or_else(|| keys::dev_keys(&path));
    let Ok(payload) = keys.decrypt(body) else {
        return (400, vec![], Some("DecryptionFailed"));
    };
    record(
        state,
        Received {
            path,
            payload,
            body: body.to_vec(),
            ttl,
            urgency: header("urgency").map(str::to_owned),
            topic,
            vapid,
            version: parts.version,
        },
    )
}

/// The answer the endpoint path asks for, if any.
fn scripted(path: &str) -> Option<Answer> {
    Some(match path.split('/').nth(1).unwrap_or("") {
        "gone" => (410, vec![], Some("Gone")),
        "notfound" => (404, vec![], Some("NotFound")),
        "busy" => {
            let h = vec![("retry-after", BUSY_RETRY_AFTER.to_string())];
            (429, h, Some("TooManyRequests"))
        }
        "down" => (503, vec![], Some("ServiceUnavailable")),
        _ => return None,
    })
}

/// Keeps an accepted message; answers 201 with its `Location` and TTL.
fn record(state: &State, message: Received) -> Answer {
    let id = state
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ttl = message.ttl;
    let mut received = lock(&state.received);
    if received.len() >= RECORD_CAP {
        received.pop_front();
    }
    received.push_back(message);
    let location = format!("/m/{}", B64.encode(id.to_be_bytes()));
    (
        201,
        vec![("location", location), ("ttl", ttl.to_string())],
        None,
    )
}
