//! One transport per push-service origin, chosen by what the origin speaks.
//!
//! The first request to an origin opens one TLS connection offering ALPN
//! `h2` and `http/1.1` and keeps the answer for the origin's lifetime in
//! the map: `h2` gives the origin an [`H2Pool`] (the probe connection is
//! closed; the pool opens its own, exactly as before HTTP/1.1 support);
//! `http/1.1`, or no ALPN at all, gives it an [`H1Pool`] that keeps the
//! probe connection as its first. Concurrent first requests wait for the
//! one probe. A failed probe is remembered for [`PROBE_HOLD`], so a burst
//! to a dead origin fails fast instead of probing once per recipient.
//! Origins live in a bounded map; the least recently used one is dropped
//! when it is full (requests in flight keep their transport).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::h1::{self, H1Error, H1Pool};
use crate::config::{ConnectionConfig, Endpoint};
use crate::provider::h2pool::{H2Pool, PoolError, PoolStats};
use crate::provider::tls::ALPN_H2;

/// How long a failed probe of an origin is answered from memory.
pub const PROBE_HOLD: Duration = Duration::from_secs(2);
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A complete response, whatever the protocol.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What an origin was found to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http2,
    Http1,
}

/// Why a request got no answer; every variant is a transport failure.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    H2(#[from] PoolError),
    #[error(transparent)]
    H1(#[from] H1Error),
    /// The first connection to the origin failed; nothing was sent.
    #[error("connecting to push service {origin}: {reason}")]
    Probe { origin: String, reason: String },
}

#[derive(Clone)]
enum Transport {
    H2(Arc<H2Pool>),
    H1(Arc<H1Pool>),
}

impl Transport {
    fn protocol(&self) -> Protocol {
        match self {
            Transport::H2(_) => Protocol::Http2,
            Transport::H1(_) => Protocol::Http1,
        }
    }
}

struct Slot {
    endpoint: Endpoint,
    transport: OnceCell<Transport>,
    failed: Mutex<Option<(Instant, String)>>,
}

struct Entry {
    slot: Arc<Slot>,
    last_used: Instant,
}

/// The transports of one app's push-service origins.
pub struct Origins {
    template: ConnectionConfig,
    http1_connections: usize,
    h2_tls: Arc<ClientConfig>,
    probe_tls: TlsConnector,
    h1_tls: TlsConnector,
    map: Mutex<HashMap<String, Entry>>,
    max: usize,
}

impl Origins {
    /// `h2_tls` is the pools' config (ALPN `h2`); the probe and HTTP/1.1
    /// connections use copies of it with their own ALPN offer.
    pub fn new(
        template: ConnectionConfig,
        http1_connections: usize,
        h2_tls: Arc<ClientConfig>,
        max: usize,
    ) -> Origins {
        let with_alpn = |alpn: &[&[u8]]| {
            let mut c = (*h2_tls).clone();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(c))
        };
        Origins {
            probe_tls: with_alpn(&[ALPN_H2, ALPN_HTTP1]),
            h1_tls: with_alpn(&[ALPN_HTTP1]),
            template,
            http1_connections,
            h2_tls,
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// Origins in the map right now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pools of every origin, summed (for the connection gauges).
    pub fn stats(&self) -> PoolStats {
        let mut total = PoolStats::default();
        for entry in self.lock().values() {
            match entry.slot.transport.get() {
                Some(Transport::H2(p)) => total.add(&p.stats()),
                Some(Transport::H1(p)) => total.add(&p.stats()),
                None => {}
            }
        }
        total
    }

    /// What `authority` (`host:port`) was found to speak, once probed.
    pub fn protocol(&self, authority: &str) -> Option<Protocol> {
        let map = self.lock();
        let transport = map.get(authority)?.slot.transport.get()?;
        Some(transport.protocol())
    }

    /// Sends `req` (its URI a path) to `endpoint`'s origin.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        req: Request<Bytes>,
    ) -> Result<Answer, TransportError> {
        let slot = self.slot(endpoint);
        let transport = slot
            .transport
            .get_or_try_init(|| self.probe(&slot))
            .await?
            .clone();
        match transport {
            Transport::H2(pool) => {
                let r = pool.send(req).await?;
                Ok(Answer {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                })
            }
            Transport::H1(pool) => Ok(pool.send(req).await?),
        }
    }

    /// Closes every origin's transport (in-flight requests finish first).
    pub async fn shutdown(&self) {
        let slots: Vec<Arc<Slot>> = self.lock().drain().map(|(_, e)| e.slot).collect();
        for slot in slots {
            match slot.transport.get() {
                Some(Transport::H2(p)) => p.shutdown().await,
                Some(Transport::H1(p)) => p.shutdown().await,
                None => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The origin's slot, created (and the oldest evicted) on first use.
    fn slot(&self, endpoint: &Endpoint) -> Arc<Slot> {
        let mut map = self.lock();
        let now = Instant::now();
        if let Some(e) = map.get_mut(&endpoint.authority) {
            e.last_used = now;
            return Arc::clone(&e.slot);
        }
        if map.len() >= self.max {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                // In-flight requests keep their Arc; the pool closes after them.
                map.remove(&k);
            }
        }
        let slot = Arc::new(Slot {
            endpoint: endpoint.clone(),
            transport: OnceCell::new(),
            failed: Mutex::new(None),
        });
        map.insert(
            endpoint.authority.clone(),
            Entry {
                slot: Arc::clone(&slot),
                last_used: now,
            },
        );
        slot
    }

    /// One connection offering h2 and http/1.1; the transport its ALPN asks for.
    async fn probe(&self, slot: &Slot) -> Result<Transport, TransportError> {
        let origin = &slot.endpoint.authority;
        let fail = |reason: String| {
            *slot.failed.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((Instant::now(), reason.clone()));
            TransportError::Probe {
                origin: origin.clone(),
                reason,
            }
        };
        if let Some((at, reason)) = &*slot.failed.lock().unwrap_or_else(PoisonError::into_inner) {
            if at.elapsed() < PROBE_HOLD {
                return Err(TransportError::Probe {
                    origin: origin.clone(),
                    reason: reason.clone(),
                });
            }
        }
        let timeout = self.template.connect_timeout;
        let stream =
            match tokio::time::timeout(timeout, h1::connect_tls(&slot.endpoint, &self.probe_tls))
                .await
            {
                Err(_) => return Err(fail(format!("connect timed out after {timeout:?}"))),
                Ok(Err(e)) => return Err(fail(e)),
                Ok(Ok(s)) => s,
            };
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        self.transport_for(alpn.as_deref(), stream, &slot.endpoint)
            .await
            .map_err(fail)
    }

    /// The transport for what the probe negotiated; `stream` is kept by an
    /// HTTP/1.1 pool and closed otherwise.
    async fn transport_for(
        &self,
        alpn: Option<&[u8]>,
        stream: TlsStream<TcpStream>,
        endpoint: &Endpoint,
    ) -> Result<Transport, String> {
        match alpn {
            Some(ALPN_H2) => {
                drop(stream);
                let cfg = ConnectionConfig {
                    endpoint: endpoint.clone(),
                    ..self.template.clone()
                };
                let pool = H2Pool::new("webpush", &cfg, Arc::clone(&self.h2_tls));
                Ok(Transport::H2(Arc::new(pool)))
            }
            Some(ALPN_HTTP1) | None => {
                tracing::info!(origin = %endpoint.authority, "push service does not speak HTTP/2; using HTTP/1.1");
                let timeouts = (self.template.connect_timeout, self.template.request_timeout);
                let pool = H1Pool::new(
                    endpoint.clone(),
                    self.h1_tls.clone(),
                    timeouts,
                    self.http1_connections,
                    Some(stream),
                )
                .await?;
                Ok(Transport::H1(Arc::new(pool)))
            }
            Some(other) => Err(format!(
                "negotiated an unknown protocol {:?}",
                String::from_utf8_lossy(other)
            )),
        }
    }
}
