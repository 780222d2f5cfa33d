//! Pooled, long-lived HTTP/2 client connections to one endpoint.
//!
//! [`H2Pool`] keeps `connections` TLS HTTP/2 connections (pushgate's own
//! client, [`crate::provider::http2`], over rustls, ALPN h2) open to one endpoint. They are
//! opened eagerly by [`H2Pool::new`], one supervisor task per slot, and
//! replaced when they die (exponential backoff with jitter after failed
//! connects). Each connection carries at most the peer's current
//! SETTINGS_MAX_CONCURRENT_STREAMS requests, and only one until its first
//! response (APNs raises the limit after the first valid request). A request
//! goes to the least-loaded connection with a free stream; when all are full
//! it waits (bounded by the request deadline) instead of queueing on the connection.
//! Deadlines share timers: the requests of one tick (a 64th of the request
//! timeout, at most 100 ms) wait on one ([`deadline`]).
//!
//! GOAWAY and retries: a connection that received GOAWAY, failed or was
//! retired is drained: no new requests, in-flight ones finish, then it is
//! closed and its slot reconnects. Requests the server provably did not
//! process (stream above the GOAWAY's last-stream-id, REFUSED_STREAM, never
//! written because the connection was closing) are retried transparently on
//! another connection, up to [`MAX_ATTEMPTS`] in total. Requests that may
//! have been processed are returned as [`PoolError`]s for the caller to
//! classify.

mod conn;
mod deadline;
mod error;
mod shared;

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderMap, Request, StatusCode};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use self::deadline::Deadlines;
pub use self::error::PoolError;
use self::shared::{Shared, SlotState};
use crate::config::ConnectionConfig;

/// Attempts per request when the server did not process it (GOAWAY, REFUSED_STREAM).
pub const MAX_ATTEMPTS: u32 = 4;
/// Largest response body read (provider answers are small JSON documents).
pub const MAX_RESPONSE_BODY: usize = 1 << 20;

/// Identifies one connection of a pool (unique per pool, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

/// A complete response: head, collected body, and the connection that served it.
#[derive(Debug, Clone)]
pub struct PooledResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Pass to [`H2Pool::retire`] when the answer says this connection must go
    /// (APNs `ExpiredProviderToken`, `UnrelatedKeyIdInToken`).
    pub conn_id: ConnId,
}

/// A snapshot of the pool for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Slots performing TCP/TLS/HTTP2 handshakes.
    pub connecting: usize,
    /// Connections accepting new requests.
    pub open: usize,
    /// Connections finishing their in-flight requests before closing.
    pub draining: usize,
    /// Slots waiting to reconnect after a failed connect.
    pub backoff: usize,
    /// Streams in use across all connections (open and draining).
    pub in_flight: usize,
    /// The highest current per-connection stream limit among open connections.
    pub max_streams: usize,
    /// Sum of the stream limits of open connections.
    pub stream_capacity: usize,
    /// Connections opened since start.
    pub connects_total: u64,
    /// Connect attempts that failed since start.
    pub connect_failures_total: u64,
    /// Requests transparently re-sent because the server had not processed them.
    pub retries_total: u64,
}

impl PoolStats {
    /// Adds `other` in (Web Push sums its per-origin pools); `max_streams`
    /// keeps the larger.
    pub fn add(&mut self, other: &PoolStats) {
        self.connecting += other.connecting;
        self.open += other.open;
        self.draining += other.draining;
        self.backoff += other.backoff;
        self.in_flight += other.in_flight;
        self.max_streams = self.max_streams.max(other.max_streams);
        self.stream_capacity += other.stream_capacity;
        self.connects_total += other.connects_total;
        self.connect_failures_total += other.connect_failures_total;
        self.retries_total += other.retries_total;
    }
}

/// A pool of HTTP/2 connections to one endpoint. Share it behind an `Arc`;
/// dropping it (or [`H2Pool::shutdown`]) closes every connection.
pub struct H2Pool {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl H2Pool {
    /// Starts `cfg.connections` (at least one) connection supervisors, which
    /// connect right away. Must be called inside a Tokio runtime.
    pub fn new(label: &'static str, cfg: &ConnectionConfig, tls: Arc<ClientConfig>) -> H2Pool {
        let slots = cfg.connections.max(1);
        let shared = Arc::new(Shared {
            label,
            endpoint: cfg.endpoint.clone(),
            authority: Authority::try_from(cfg.endpoint.authority.as_str()).ok(),
            server_name: ServerName::try_from(cfg.endpoint.host.clone())
                .map_err(|e| format!("endpoint host {:?}: {e}", cfg.endpoint.host)),
            tls: TlsConnector::from(tls),
            keepalive: (cfg.keepalive_interval, cfg.keepalive_timeout),
            connect_timeout: cfg.connect_timeout,
            request_timeout: cfg.request_timeout,
            deadlines: Deadlines::new(cfg.request_timeout),
            conns: RwLock::new(vec![None; slots]),
            states: (0..slots)
                .map(|_| AtomicU8::new(SlotState::Connecting as u8))
                .collect(),
            last_error: Mutex::new(String::from("still connecting")),
            stream_freed: Notify::new(),
            draining: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            shutdown: watch::Sender::new(false),
        });
        let tasks = (0..slots)
            .map(|slot| tokio::spawn(conn::supervise(Arc::clone(&shared), slot)))
            .collect();
        H2Pool {
            shared,
            tasks: Mutex::new(tasks),
        }
    }

    /// Sends one request and collects its response within `request_timeout`.
    ///
    /// The request URI is a path (and query); the pool sets scheme `https`
    /// and the endpoint's authority. Requests the server did not process are
    /// re-sent on another connection (at most [`MAX_ATTEMPTS`] in all); a
    /// copy is kept for that ([`H2Pool::send_with`] avoids the copy).
    pub async fn send(&self, req: Request<Bytes>) -> Result<PooledResponse, PoolError> {
        let (parts, body) = req.into_parts();
        self.send_with(move || Request::from_parts(parts.clone(), body.clone()))
            .await
    }

    /// As [`H2Pool::send`], with the request built by `make`, called once
    /// per attempt: nothing is copied for retries that rarely happen.
    pub async fn send_with<F>(&self, mut make: F) -> Result<PooledResponse, PoolError>
    where
        F: FnMut() -> Request<Bytes>,
    {
        let shared = &*self.shared;
        let epoch = shared
            .deadlines
            .epoch(Instant::now() + shared.request_timeout);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (parts, body) = make().into_parts();
            let authority = shared.authority_for(&parts.uri)?;
            let stream = shared.acquire(&epoch).await?;
            match stream.exchange(&parts, authority, body, &epoch).await {
                Ok(result) => return result,
                Err(last) if attempts >= MAX_ATTEMPTS => {
                    return Err(PoolError::Refused {
                        label: shared.label,
                        attempts,
                        last,
                    })
                }
                Err(_) => {
                    shared.retries.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Drains connection `conn_id`: no new requests, in-flight ones finish,
    /// then it closes and its slot reconnects. Returns false when that
    /// connection is already gone or draining.
    pub fn retire(&self, conn_id: ConnId) -> bool {
        let conns = self
            .shared
            .conns
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match conns.iter().flatten().find(|c| c.id == conn_id) {
            Some(c) if !c.is_draining() => {
                tracing::debug!(
                    pool = self.shared.label,
                    conn = conn_id.0,
                    "retiring connection"
                );
                c.drain();
                true
            }
            _ => false,
        }
    }

    pub fn stats(&self) -> PoolStats {
        let shared = &*self.shared;
        let mut stats = PoolStats {
            draining: shared.draining.load(Relaxed),
            in_flight: shared.in_flight.load(Relaxed),
            connects_total: shared.connects.load(Relaxed),
            connect_failures_total: shared.connect_failures.load(Relaxed),
            retries_total: shared.retries.load(Relaxed),
            ..PoolStats::default()
        };
        for state in &shared.states {
            match state.load(Relaxed) {
                s if s == SlotState::Connecting as u8 => stats.connecting += 1,
                s if s == SlotState::Backoff as u8 => stats.backoff += 1,
                _ => {}
            }
        }
        let conns = shared.conns.read().unwrap_or_else(PoisonError::into_inner);
        for c in conns.iter().flatten().filter(|c| !c.is_draining()) {
            stats.open += 1;
            stats.max_streams = stats.max_streams.max(c.limit());
            stats.stream_capacity = stats.stream_capacity.saturating_add(c.limit());
        }
        stats
    }

    /// Stops new requests, lets in-flight ones finish (each is bounded by
    /// the request timeout), closes every connection and ends the supervisors.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        self.shared.stream_freed.notify_waiters();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::warn!(pool = self.shared.label, error = %e, "connection supervisor failed");
            }
        }
    }
}

impl Drop for H2Pool {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.shared.stream_freed.notify_waiters();
    }
}

impl fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Pool")
            .field("label", &self.shared.label)
            .field("endpoint", &self.shared.endpoint.authority)
            .finish_non_exhaustive()
    }
}
