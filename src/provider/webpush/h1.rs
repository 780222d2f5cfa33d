//! HTTP/1.1 keep-alive connections to one push-service origin that does not
//! speak HTTP/2: a bounded set (one request per connection at a time), over
//! the same rustls setup, with the same deadlines as the HTTP/2 pool.
//!
//! A request takes a slot (a semaphore permit: at most `max` requests and so
//! at most `max` connections), then the most recently used idle connection,
//! or opens one. After a complete response the connection goes back to the
//! idle list unless the server closed it. Idle connections older than
//! [`IDLE_TIMEOUT`] are dropped rather than reused (servers close idle
//! keep-alive connections after a few seconds, and a request racing that
//! close may or may not have been processed). A request that provably never
//! left (hyper: canceled, or the reused connection was not ready) is sent
//! again on a fresh connection; anything else is an error for the caller.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::transport::Answer;
use crate::config::Endpoint;
use crate::provider::h2pool::PoolStats;

/// Idle connections older than this are closed instead of reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Largest response body read (push services answer with small bodies).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Why an HTTP/1.1 request got no response. All are transport failures
/// (ProviderUnavailable) for the caller.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// TCP or TLS failed; nothing was sent.
    #[error("no connection to {origin}: {reason}")]
    Connect { origin: String, reason: String },
    /// The request deadline passed; `sent` says whether it had been written.
    #[error("HTTP/1.1 request timed out after {after:?}")]
    Timeout { after: Duration, sent: bool },
    /// The connection failed mid-request: the service may have processed it.
    #[error("HTTP/1.1 transport failure mid-request: {0}")]
    Transport(#[source] hyper::Error),
    /// The response head arrived but its body could not be read.
    #[error("reading the HTTP/1.1 response body: {0}")]
    Body(String),
    /// The pool is shut down; nothing was sent.
    #[error("HTTP/1.1 pool for {0} is shut down")]
    Shutdown(String),
}

/// One live connection; dropping it closes the socket.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// How one try on one connection ended.
enum Attempt {
    Done(Result<Answer, H1Error>),
    /// The request provably never left (a reused connection had closed).
    NotSent,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// HTTP/1.1 connections to one origin. Share it behind an `Arc`.
pub struct H1Pool {
    endpoint: Endpoint,
    /// `Host` header: `host` on port 443, else `host:port`.
    host: HeaderValue,
    tls: TlsConnector,
    connect_timeout: Duration,
    request_timeout: Duration,
    max: u32,
    slots: Semaphore,
    idle: Mutex<Vec<Idle>>,
    closed: AtomicBool,
    connects: AtomicU64,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool")
            .field("origin", &self.endpoint.authority)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl H1Pool {
    /// A pool of at most `max` connections; `first` (an already negotiated
    /// TLS stream, e.g. the one that found out the origin speaks HTTP/1.1)
    /// becomes its first idle connection.
    pub async fn new(
        endpoint: Endpoint,
        tls: TlsConnector,
        timeouts: (Duration, Duration),
        max: usize,
        first: Option<TlsStream<TcpStream>>,
    ) -> Result<H1Pool, String> {
        let host = match endpoint.port {
            443 => endpoint.authority.trim_end_matches(":443"),
            _ => endpoint.authority.as_str(),
        };
        let host = HeaderValue::from_str(host).map_err(|e| format!("Host {host:?}: {e}"))?;
        let max = u32::try_from(max.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(1);
        let pool = H1Pool {
            endpoint,
            host,
            tls,
            connect_timeout: timeouts.0,
            request_timeout: timeouts.1,
            max,
            slots: Semaphore::new(max as usize),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            connects: AtomicU64::new(0),
        };
        if let Some(stream) = first {
            let conn = pool.handshake(stream).await.map_err(|e| e.to_string())?;
            pool.put_back(conn);
        }
        Ok(pool)
    }

    /// Connections opened so far (the first one handed in included).
    pub fn connects(&self) -> u64 {
        self.connects.load(Relaxed)
    }

    /// A snapshot in the HTTP/2 pool's terms (one stream per connection):
    /// busy connections are in flight, idle ones are open too.
    pub fn stats(&self) -> PoolStats {
        let max = self.max as usize;
        let busy = max.saturating_sub(self.slots.available_permits());
        let idle = self.idle.lock().map_or(0, |v| v.len());
        PoolStats {
            open: busy + idle,
            in_flight: busy,
            max_streams: 1,
            stream_capacity: max,
            connects_total: self.connects(),
            ..PoolStats::default()
        }
    }

    /// Sends one request (its URI a path) and collects the response within
    /// the request timeout.
    pub async fn send(&self, req: Request<Bytes>) -> Result<Answer, H1Error> {
        let deadline = Instant::now() + self.request_timeout;
        let _slot = match timeout_at(deadline, self.slots.acquire()).await {
            Err(_) => return Err(self.timeout(false)),
            Ok(Err(_)) => return Err(self.shut()),
            Ok(Ok(permit)) => permit,
        };
        let (mut parts, body) = req.into_parts();
        parts.headers.insert(http::header::HOST, self.host.clone());
        let mut fresh_only = false;
        loop {
            if self.closed.load(Relaxed) {
                return Err(self.shut());
            }
            let reused = if fresh_only { None } else { self.take_idle() };
            let is_reused = reused.is_some();
            let conn = match reused {
                Some(c) => c,
                None => self.open(deadline).await?,
            };
            let req = Request::from_parts(parts.clone(), Full::new(body.clone()));
            match self.exchange(conn, req, deadline, is_reused).await {
                Attempt::Done(result) => return result,
                // Never left this process: try once more on a new connection.
                Attempt::NotSent => fresh_only = true,
            }
        }
    }

    /// One request on `conn`; a kept-alive connection goes back to the idle list.
    async fn exchange(
        &self,
        mut conn: Conn,
        req: Request<Full<Bytes>>,
        deadline: Instant,
        reused: bool,
    ) -> Attempt {
        match timeout_at(deadline, conn.sender.ready()).await {
            Err(_) => return Attempt::Done(Err(self.timeout(false))),
            Ok(Err(_)) if reused => return Attempt::NotSent,
            Ok(Err(e)) => return Attempt::Done(Err(self.connect_error(e.to_string()))),
            Ok(Ok(())) => {}
        }
        let resp = match timeout_at(deadline, conn.sender.send_request(req)).await {
            Err(_) => return Attempt::Done(Err(self.timeout(true))),
            Ok(Err(e)) if reused && e.is_canceled() => return Attempt::NotSent,
            Ok(Err(e)) => return Attempt::Done(Err(H1Error::Transport(e))),
            Ok(Ok(resp)) => resp,
        };
        let (head, body) = resp.into_parts();
        let collected = timeout_at(deadline, Limited::new(body, MAX_RESPONSE_BODY).collect());
        let body = match collected.await {
            Err(_) => return Attempt::Done(Err(self.timeout(true))),
            Ok(Err(e)) => return Attempt::Done(Err(H1Error::Body(e.to_string()))),
            Ok(Ok(b)) => b.to_bytes(),
        };
        let closing = head
            .headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if !closing {
            self.put_back(conn);
        }
        Attempt::Done(Ok(Answer {
            status: head.status,
            headers: head.headers,
            body,
        }))
    }

    /// Refuses new requests, closes idle connections and waits for the
    /// requests in flight (each bounded by the request timeout).
    pub async fn shutdown(&self) {
        self.closed.store(true, Relaxed);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        if let Ok(all) = self.slots.acquire_many(self.max).await {
            all.forget();
        }
        self.slots.close();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn timeout(&self, sent: bool) -> H1Error {
        H1Error::Timeout {
            after: self.request_timeout,
            sent,
        }
    }

    fn shut(&self) -> H1Error {
        H1Error::Shutdown(self.endpoint.authority.clone())
    }

    fn connect_error(&self, reason: String) -> H1Error {
        H1Error::Connect {
            origin: self.endpoint.authority.clone(),
            reason,
        }
    }

    /// The most recently used idle connection that is still open and fresh.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(i) = idle.pop() {
            if i.since.elapsed() < IDLE_TIMEOUT && !i.conn.sender.is_closed() {
                return Some(i.conn);
            }
        }
        None
    }

    fn put_back(&self, conn: Conn) {
        if self.closed.load(Relaxed) || conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|i| i.since.elapsed() < IDLE_TIMEOUT && !i.conn.sender.is_closed());
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// A new connection, within the connect timeout and the request deadline.
    async fn open(&self, deadline: Instant) -> Result<Conn, H1Error> {
        let until = deadline.min(Instant::now() + self.connect_timeout);
        let stream = match timeout_at(until, connect_tls(&self.endpoint, &self.tls)).await {
            Err(_) => {
                return Err(self.connect_error(format!(
                    "connect timed out after {:?}",
                    self.connect_timeout
                )))
            }
            Ok(r) => r.map_err(|e| self.connect_error(e))?,
        };
        self.handshake(stream).await
    }

    /// Starts HTTP/1.1 on a TLS stream; its driver task lives as long as the [`Conn`].
    async fn handshake(&self, stream: TlsStream<TcpStream>) -> Result<Conn, H1Error> {
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.connect_error(format!("HTTP/1.1 handshake: {e}")))?;
        let origin = self.endpoint.authority.clone();
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(origin = %origin, error = %e, "HTTP/1.1 connection ended");
            }
        })
        .abort_handle();
        self.connects.fetch_add(1, Relaxed);
        Ok(Conn { sender, driver })
    }
}

/// TCP (no delay) and TLS to `endpoint`, with the connector's ALPN offer.
pub async fn connect_tls(
    endpoint: &Endpoint,
    tls: &TlsConnector,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(endpoint.host.clone())
        .map_err(|e| format!("host {:?}: {e}", endpoint.host))?;
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("TCP connect to {}: {e}", endpoint.authority))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    tls.connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {}: {e}", endpoint.authority))
}
