//! The pool's shared state: connection slots, stream reservation and one request attempt.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::uri::Authority;
use http::Uri;
use rustls_pki_types::ServerName;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsConnector;

use super::conn::Conn;
use super::deadline::{Deadlines, Epoch};
use super::{error, ConnId, PoolError, PooledResponse};
use crate::config::Endpoint;
use crate::provider::http2::conn as http2;
use crate::provider::http2::conn::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum SlotState {
    Connecting = 0,
    Open = 1,
    Backoff = 2,
    Closed = 3,
}

/// State shared by the pool handle, the slot supervisors and drain tasks.
pub(super) struct Shared {
    pub(super) label: &'static str,
    pub(super) endpoint: Endpoint,
    /// `None` when the endpoint's authority is not a valid URI authority.
    pub(super) authority: Option<Authority>,
    pub(super) server_name: Result<ServerName<'static>, String>,
    pub(super) tls: TlsConnector,
    /// PING interval and answer deadline (zero interval: no PINGs).
    pub(super) keepalive: (Duration, Duration),
    pub(super) connect_timeout: Duration,
    pub(super) request_timeout: Duration,
    /// The timers of request deadlines, shared by the requests of a tick.
    pub(super) deadlines: Deadlines,
    /// The open connection of each slot.
    pub(super) conns: RwLock<Vec<Option<Arc<Conn>>>>,
    pub(super) states: Vec<AtomicU8>,
    pub(super) last_error: Mutex<String>,
    /// Signalled when a stream is released, a connection opens or a limit grows.
    pub(super) stream_freed: Notify,
    pub(super) draining: AtomicUsize,
    pub(super) in_flight: AtomicUsize,
    pub(super) connects: AtomicU64,
    pub(super) connect_failures: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) next_id: AtomicU64,
    pub(super) shutdown: watch::Sender<bool>,
}

impl Shared {
    /// Checks that a request's URI is a path (and query) and returns the
    /// endpoint's authority it goes to with scheme `https`. The connection
    /// takes the three pseudo-headers as they are, so no absolute URI is
    /// built per request (`Uri::from_parts` and an authority clone).
    pub(super) fn authority_for(&self, uri: &Uri) -> Result<&str, PoolError> {
        let invalid = |reason| PoolError::InvalidRequest {
            label: self.label,
            reason,
        };
        let authority = self
            .authority
            .as_ref()
            .ok_or_else(|| invalid("endpoint authority is not a valid URI authority"))?;
        if uri.scheme().is_some() || uri.authority().is_some() {
            return Err(invalid("request URI must be a path, not an absolute URI"));
        }
        if !uri.path().starts_with('/') {
            return Err(invalid("request URI must start with '/'"));
        }
        Ok(authority.as_str())
    }

    /// Reserves a stream on the least-loaded usable connection, waiting
    /// (until `deadline` passes) while all are full or connecting.
    pub(super) async fn acquire(&self, deadline: &Epoch) -> Result<Stream<'_>, PoolError> {
        loop {
            if *self.shutdown.borrow() {
                return Err(PoolError::Shutdown { label: self.label });
            }
            if let Some(stream) = self.try_stream() {
                return Ok(stream);
            }
            // Slow path: register as a waiter, then look again so that a
            // release between the two checks is not missed.
            let notified = self.stream_freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(stream) = self.try_stream() {
                return Ok(stream);
            }
            if self.all_failing() {
                return Err(self.unavailable());
            }
            if deadline.before(notified).await.is_none() {
                return Err(if self.has_open() {
                    PoolError::Timeout {
                        label: self.label,
                        after: self.request_timeout,
                        sent: false,
                    }
                } else {
                    self.unavailable()
                });
            }
        }
    }

    fn try_stream(&self) -> Option<Stream<'_>> {
        let conn = self.try_reserve()?;
        self.in_flight.fetch_add(1, Relaxed);
        Some(Stream { shared: self, conn })
    }

    fn try_reserve(&self) -> Option<Arc<Conn>> {
        let conns = self.conns.read().unwrap_or_else(PoisonError::into_inner);
        loop {
            let best = conns
                .iter()
                .flatten()
                .filter(|c| c.usable() && c.in_flight() < c.limit())
                .min_by_key(|c| c.in_flight())?;
            if best.try_reserve() {
                return Some(Arc::clone(best));
            }
        }
    }

    /// Every slot's last connect attempt failed: fail fast instead of waiting.
    fn all_failing(&self) -> bool {
        self.states
            .iter()
            .all(|s| s.load(Relaxed) == SlotState::Backoff as u8)
    }

    fn has_open(&self) -> bool {
        let conns = self.conns.read().unwrap_or_else(PoisonError::into_inner);
        conns.iter().flatten().any(|c| c.usable())
    }

    fn unavailable(&self) -> PoolError {
        let reason = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        PoolError::Unavailable {
            label: self.label,
            reason,
        }
    }

    pub(super) fn set_state(&self, slot: usize, state: SlotState) {
        if let Some(s) = self.states.get(slot) {
            s.store(state as u8, Relaxed);
        }
    }

    pub(super) fn install(&self, slot: usize, conn: Arc<Conn>) {
        let mut conns = self.conns.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = conns.get_mut(slot) {
            *entry = Some(conn);
        }
        drop(conns);
        self.set_state(slot, SlotState::Open);
        self.connects.fetch_add(1, Relaxed);
        self.stream_freed.notify_waiters();
    }

    pub(super) fn uninstall(&self, slot: usize) {
        let mut conns = self.conns.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = conns.get_mut(slot) {
            *entry = None;
        }
    }

    /// Records a failed connect; always true ("this attempt failed").
    pub(super) fn connect_failed(&self, error: String) -> bool {
        tracing::warn!(pool = self.label, endpoint = %self.endpoint, %error, "connect failed");
        self.connect_failures.fetch_add(1, Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
        true
    }

    pub(super) fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_id.fetch_add(1, Relaxed))
    }
}

/// A reserved stream on one connection; releasing it on drop wakes a waiter.
pub(super) struct Stream<'a> {
    shared: &'a Shared,
    conn: Arc<Conn>,
}

impl Stream<'_> {
    /// One attempt. `Err`: the server did not process it, try again.
    ///
    /// The request is encoded from the caller's task straight into the
    /// connection's output (HEADERS, then DATA as flow control allows),
    /// without a task or channel per request. It ends with a timeout when
    /// `deadline` passes first (the stream is then reset); the request's
    /// own timer is that shared epoch.
    pub(super) async fn exchange(
        self,
        req: &Parts,
        authority: &str,
        body: Bytes,
        deadline: &Epoch,
    ) -> Result<Result<PooledResponse, PoolError>, http2::Error> {
        let sent = AtomicBool::new(false);
        let answer = deadline.before(self.run(req, authority, body, &sent)).await;
        answer.unwrap_or_else(|| {
            Ok(Err(PoolError::Timeout {
                label: self.shared.label,
                after: self.shared.request_timeout,
                sent: sent.load(Relaxed),
            }))
        })
    }

    /// [`Stream::exchange`] without its deadline; `sent` is set once the
    /// request is on the connection.
    async fn run(
        &self,
        req: &Parts,
        authority: &str,
        body: Bytes,
        sent: &AtomicBool,
    ) -> Result<Result<PooledResponse, PoolError>, http2::Error> {
        let label = self.shared.label;
        let response = self.start(req, authority, body).await?;
        sent.store(true, Relaxed);
        let response = match response.await {
            Ok(response) => response,
            Err(http2::Error::BodyTooLarge(max)) => {
                let reason = format!("response body over {max} bytes");
                return Ok(Err(PoolError::Body { label, reason }));
            }
            Err(source) => {
                let failure = error::classify(&source);
                if failure.connection_level {
                    self.conn.drain();
                }
                if failure.unprocessed {
                    return Err(source);
                }
                return Ok(Err(PoolError::Transport { label, source }));
            }
        };
        self.conn.on_response();
        Ok(Ok(PooledResponse {
            status: response.status,
            headers: response.headers,
            body: response.body,
            conn_id: self.conn.id,
        }))
    }

    /// Puts the request on the connection. An error here means nothing
    /// was sent (the connection is closing or gone): drain it and retry.
    async fn start(
        &self,
        req: &Parts,
        authority: &str,
        body: Bytes,
    ) -> Result<http2::ResponseFuture, http2::Error> {
        if self.conn.idle() {
            // One scheduler turn first, so that the driver of an idle
            // connection reads a close by the peer before this request goes
            // on it (the request then fails unsent and is retried elsewhere).
            // A busy connection's driver is running anyway: no cost under load.
            tokio::task::yield_now().await;
        }
        let target = Target {
            scheme: "https",
            authority,
            path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        };
        let result = self
            .conn
            .sender()
            .send(&req.method, target, &req.headers, body);
        if result.is_err() {
            self.conn.drain();
        }
        result
    }
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        self.conn.release();
        self.shared.in_flight.fetch_sub(1, Relaxed);
        self.shared.stream_freed.notify_one();
    }
}
