//! One pooled connection: its stream accounting, how it is opened, driven
//! (with keepalive PINGs), drained and replaced. The HTTP/2 connection is
//! pushgate's own ([`crate::provider::http2`]).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_rustls::client::TlsStream;

use super::shared::{Shared, SlotState};
use super::{ConnId, MAX_RESPONSE_BODY};
use crate::provider::http2::conn as http2;
use crate::provider::tls::ALPN_H2;

pub(super) type Sender = http2::Client;
type Connection = http2::Connection<TlsStream<TcpStream>>;

/// First reconnect delay after a failed connect; doubles per failure.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest wait between two connect attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lived this long (or served a response) was healthy: its
/// end does not count as a failure (e.g. a provider's idle-timeout GOAWAY).
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// The request-side view of one live HTTP/2 connection.
pub(super) struct Conn {
    pub(super) id: ConnId,
    sender: Sender,
    /// Streams reserved by the pool on this connection (picked, not yet released).
    in_flight: AtomicUsize,
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS as last read from the connection.
    max_streams: AtomicUsize,
    /// Until a first response arrives, only one stream is used (APNs token auth).
    got_response: AtomicBool,
    /// No new requests: GOAWAY seen, connection failed, retired or shutting down.
    draining: AtomicBool,
    /// Wakes this connection's driver: drain request, first response, idle after drain.
    events: Notify,
}

impl Conn {
    fn new(id: ConnId, sender: Sender) -> Conn {
        Conn {
            id,
            sender,
            in_flight: AtomicUsize::new(0),
            max_streams: AtomicUsize::new(1),
            got_response: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            events: Notify::new(),
        }
    }

    /// Whether the caller's reserved stream is the only one: the connection
    /// was idle, and the peer may have closed it without the driver having
    /// run since. (A busy connection's driver runs all the time.)
    pub(super) fn idle(&self) -> bool {
        self.in_flight.load(Relaxed) <= 1
    }

    /// The number of streams this connection may carry right now.
    pub(super) fn limit(&self) -> usize {
        if self.got_response.load(Relaxed) {
            self.max_streams.load(Relaxed).max(1)
        } else {
            1
        }
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }

    /// Whether new requests may be placed here. A connection that ended is
    /// marked draining by its driver; a request that races the end fails
    /// before anything is sent and is retried on another connection.
    pub(super) fn usable(&self) -> bool {
        !self.draining.load(Relaxed)
    }

    /// Reserves one stream if the connection has a free one.
    pub(super) fn try_reserve(&self) -> bool {
        let limit = self.limit();
        self.in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .is_ok()
    }

    /// Releases a stream reserved by [`Conn::try_reserve`].
    pub(super) fn release(&self) {
        // SeqCst pairs with `drain`'s store of `draining` then load of
        // `in_flight`: one of the two sides sees the other, so the drain
        // task never misses its last release.
        let before = self.in_flight.fetch_sub(1, SeqCst);
        if before == 1 && self.draining.load(SeqCst) {
            self.events.notify_one();
        }
    }

    /// The handle that puts requests on this connection.
    pub(super) fn sender(&self) -> &Sender {
        &self.sender
    }

    /// Records a response; the first one lifts the one-stream start limit.
    pub(super) fn on_response(&self) {
        if !self.got_response.swap(true, Relaxed) {
            self.events.notify_one();
        }
    }

    /// Stops new requests here and asks the driver to replace the connection.
    pub(super) fn drain(&self) {
        if !self.draining.swap(true, SeqCst) {
            self.events.notify_one();
        }
    }

    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }
}

/// Keeps one slot of the pool connected until shutdown: connect, serve,
/// hand the old connection to a drain task, reconnect (with exponential
/// backoff and jitter after failures).
pub(super) async fn supervise(shared: Arc<Shared>, slot: usize) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut failures: u32 = 0;
    while !*shutdown.borrow() {
        shared.set_state(slot, SlotState::Connecting);
        let attempt = tokio::select! {
            r = tokio::time::timeout(shared.connect_timeout, connect(&shared)) => r,
            _ = shutdown.changed() => break,
        };
        let failed = match attempt {
            Ok(Ok((sender, connection))) => {
                let opened = tokio::time::Instant::now();
                let conn = Arc::new(Conn::new(shared.next_conn_id(), sender));
                tracing::debug!(pool = shared.label, conn = conn.id.0, "connection open");
                shared.install(slot, Arc::clone(&conn));
                let connection = serve(&shared, &conn, connection, &mut shutdown).await;
                shared.uninstall(slot);
                let healthy = conn.got_response.load(Relaxed) || opened.elapsed() >= HEALTHY_AFTER;
                let drain = drain(Arc::clone(&shared), conn, connection);
                if *shutdown.borrow() {
                    drain.await;
                } else {
                    tokio::spawn(drain);
                }
                !healthy
            }
            Ok(Err(e)) => shared.connect_failed(e),
            Err(_) => shared.connect_failed(format!(
                "connect timed out after {:?}",
                shared.connect_timeout
            )),
        };
        failures = if failed {
            failures.saturating_add(1)
        } else {
            0
        };
        if failed && !*shutdown.borrow() {
            shared.set_state(slot, SlotState::Backoff);
            tokio::select! {
                _ = tokio::time::sleep(backoff(failures)) => {}
                _ = shutdown.changed() => break,
            }
        }
    }
    shared.set_state(slot, SlotState::Closed);
}

/// Full-jitter exponential backoff: uniform in [d/2, d], d = base * 2^(n-1), capped.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
    let half = full / 2;
    half + half.mul_f64(fastrand::f64())
}

/// TCP, TLS (ALPN h2 required), HTTP/2 handshake.
async fn connect(shared: &Shared) -> Result<(Sender, Connection), String> {
    let server_name = shared.server_name.clone()?;
    let endpoint = &shared.endpoint;
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("TCP connect to {}: {e}", endpoint.authority))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let tls = shared
        .tls
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {}: {e}", endpoint.authority))?;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
        return Err(format!(
            "{} did not negotiate HTTP/2 (ALPN h2)",
            endpoint.authority
        ));
    }
    Ok(http2::handshake(tls, MAX_RESPONSE_BODY))
}

/// Drives an open connection until it ends or must be drained; returns the
/// connection future if it is still running (so in-flight requests finish).
/// A PING unanswered within `keepalive_timeout` ends it like a failure.
async fn serve(
    shared: &Shared,
    conn: &Conn,
    mut connection: Connection,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Connection> {
    let keepalive = keepalive(conn.sender(), shared.keepalive);
    tokio::pin!(keepalive);
    loop {
        tokio::select! {
            ended = poll_fn(|cx| poll_watch(shared, conn, &mut connection, cx)) => {
                if let Err(e) = ended {
                    tracing::warn!(pool = shared.label, conn = conn.id.0, error = %e, "connection failed");
                } else {
                    tracing::debug!(pool = shared.label, conn = conn.id.0, "connection closed by peer");
                }
                conn.draining.store(true, SeqCst);
                return None;
            }
            _ = conn.events.notified() => {
                refresh_limit(shared, conn);
                // A first response lifts the one-stream start limit.
                shared.stream_freed.notify_waiters();
                if conn.is_draining() {
                    return Some(connection);
                }
            }
            _ = shutdown.changed() => {
                conn.draining.store(true, SeqCst);
                return Some(connection);
            }
            why = &mut keepalive => {
                tracing::warn!(pool = shared.label, conn = conn.id.0, reason = why, "keepalive failed; replacing the connection");
                conn.draining.store(true, SeqCst);
                return None;
            }
        }
    }
}

/// PINGs every `interval` (when set) and resolves when one is not answered
/// within `timeout`, or the connection ended under it.
async fn keepalive(client: &Sender, (interval, timeout): (Duration, Duration)) -> &'static str {
    if interval.is_zero() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, client.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return "PING failed",
            Err(_) => return "PING not answered in time",
        }
    }
}

/// Polls the connection and republishes the peer's current stream limit.
fn poll_watch(
    shared: &Shared,
    conn: &Conn,
    connection: &mut Connection,
    cx: &mut Context<'_>,
) -> Poll<Result<(), http2::Error>> {
    let polled = Pin::new(&mut *connection).poll(cx);
    if polled.is_pending() {
        refresh_limit(shared, conn);
    }
    polled
}

/// Reads the live SETTINGS_MAX_CONCURRENT_STREAMS; wakes waiters when it grew.
fn refresh_limit(shared: &Shared, conn: &Conn) {
    let live = conn.sender.max_concurrent_streams();
    let before = conn.max_streams.load(Relaxed);
    if live != before {
        conn.max_streams.store(live, Relaxed);
    }
    if live > before {
        shared.stream_freed.notify_waiters();
    }
}

/// Waits for a drained connection's reserved streams to finish, then drops
/// it (closing the HTTP/2 connection).
async fn drain(shared: Arc<Shared>, conn: Arc<Conn>, connection: Option<Connection>) {
    shared.draining.fetch_add(1, Relaxed);
    let mut connection = connection;
    while conn.in_flight() > 0 {
        let idle = conn.events.notified();
        match connection.as_mut() {
            Some(c) => tokio::select! {
                _ = Pin::new(c) => connection = None,
                _ = idle => {}
            },
            None => idle.await,
        }
    }
    drop(connection);
    shared.draining.fetch_sub(1, Relaxed);
    shared.stream_freed.notify_waiters();
    tracing::debug!(pool = shared.label, conn = conn.id.0, "connection drained");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(
                first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE,
                "{first:?}"
            );
            let third = backoff(3);
            assert!(
                third >= BACKOFF_BASE * 2 && third <= BACKOFF_BASE * 4,
                "{third:?}"
            );
            let late = backoff(u32::MAX);
            assert!(late >= BACKOFF_MAX / 2 && late <= BACKOFF_MAX, "{late:?}");
        }
    }
}
