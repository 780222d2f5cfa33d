//! A scriptable TLS HTTP/2 test server (h2 crate) that counts what the pool does to it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::Reason;
use http::{Request, Response};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// How the server ends a connection after `goaway_after` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoAway {
    /// GOAWAY(2^31-1), PING, GOAWAY(last processed); answers all accepted streams.
    Graceful,
    /// GOAWAY(last processed) and close: accepted but unanswered streams are lost.
    Abrupt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer every request 200 with the request's `x-id` as body.
    Serve,
    /// Accept TCP and never speak (no TLS handshake).
    SilentTcp,
    /// TLS and HTTP/2 handshakes, accept streams, never answer them.
    SilentHttp,
    /// TLS and HTTP/2 handshakes, then never read again (no PING answered).
    Frozen,
}

#[derive(Debug, Clone)]
pub struct Behaviour {
    pub mode: Mode,
    pub max_streams: u32,
    /// Time taken per request (overridden per request by `x-delay-ms`).
    pub delay: Duration,
    pub goaway_after: Option<(usize, GoAway)>,
    /// Refuse (RST_STREAM REFUSED_STREAM) the first attempt of every id divisible by this.
    pub refuse_every: Option<u64>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            mode: Mode::Serve,
            max_streams: 100,
            delay: Duration::ZERO,
            goaway_after: None,
            refuse_every: None,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ConnCount {
    pub requests: usize,
    pub in_flight: usize,
    pub peak: usize,
}

/// What the server observed.
#[derive(Default)]
pub struct Counters {
    pub connections: AtomicUsize,
    pub goaways: AtomicUsize,
    pub refused: AtomicUsize,
    per_conn: Mutex<HashMap<usize, ConnCount>>,
    answered: Mutex<HashMap<u64, u32>>,
    refused_ids: Mutex<HashSet<u64>>,
}

impl Counters {
    /// Per-connection counts of the connections that carried at least one request.
    pub fn used_connections(&self) -> Vec<ConnCount> {
        let map = self.per_conn.lock().unwrap();
        map.values().filter(|c| c.requests > 0).copied().collect()
    }

    /// How often each request id was answered 200.
    pub fn answered(&self) -> HashMap<u64, u32> {
        self.answered.lock().unwrap().clone()
    }

    fn enter(&self, conn: usize) {
        let mut map = self.per_conn.lock().unwrap();
        let c = map.entry(conn).or_default();
        c.requests += 1;
        c.in_flight += 1;
        c.peak = c.peak.max(c.in_flight);
    }

    fn leave(&self, conn: usize) {
        let mut map = self.per_conn.lock().unwrap();
        if let Some(c) = map.get_mut(&conn) {
            c.in_flight -= 1;
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(behaviour: Behaviour) -> TestServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), behaviour).await
    }

    pub async fn start_on(addr: SocketAddr, behaviour: Behaviour) -> TestServer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let acceptor = TlsAcceptor::from(server_config());
        let task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            Arc::new(behaviour),
            Arc::clone(&counters),
        ));
        TestServer {
            addr,
            counters,
            task,
        }
    }

    /// Kills the listener and every connection (like a process exit).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn dev(name: &str) -> String {
    format!("{}/config/dev/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn server_config() -> Arc<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dev("sim.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dev("sim.key")).unwrap();
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    behaviour: Arc<Behaviour>,
    counters: Arc<Counters>,
) {
    // Dropping the set (task aborted) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let conn_no = counters.connections.fetch_add(1, Relaxed);
                conns.spawn(serve_conn(
                    tcp,
                    acceptor.clone(),
                    Arc::clone(&behaviour),
                    Arc::clone(&counters),
                    conn_no,
                ));
            }
            Some(_) = conns.join_next() => {}
        }
    }
}

async fn serve_conn(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    behaviour: Arc<Behaviour>,
    counters: Arc<Counters>,
    conn_no: usize,
) {
    if behaviour.mode == Mode::SilentTcp {
        let _hold = tcp;
        return std::future::pending::<()>().await;
    }
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let Ok(mut h2) = h2::server::Builder::new()
        .max_concurrent_streams(behaviour.max_streams)
        .handshake::<_, Bytes>(tls)
        .await
    else {
        return;
    };
    if behaviour.mode == Mode::Frozen {
        let _hold = h2;
        return std::future::pending::<()>().await;
    }
    let mut handlers = JoinSet::new();
    let mut silent = Vec::new();
    let mut accepted = 0;
    loop {
        tokio::select! {
            next = h2.accept() => {
                let Some(Ok((req, respond))) = next else { break };
                accepted += 1;
                if behaviour.mode == Mode::SilentHttp {
                    silent.push(respond);
                    continue;
                }
                counters.enter(conn_no);
                handlers.spawn(handle(req, respond, Arc::clone(&behaviour), Arc::clone(&counters), conn_no));
                if let Some((after, how)) = behaviour.goaway_after {
                    if accepted == after {
                        counters.goaways.fetch_add(1, Relaxed);
                        match how {
                            GoAway::Graceful => h2.graceful_shutdown(),
                            GoAway::Abrupt => h2.abrupt_shutdown(Reason::NO_ERROR),
                        }
                    }
                }
            }
            Some(_) = handlers.join_next() => {}
        }
    }
}

async fn handle(
    req: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    behaviour: Arc<Behaviour>,
    counters: Arc<Counters>,
    conn_no: usize,
) {
    let header =
        |name: &str| -> Option<u64> { req.headers().get(name)?.to_str().ok()?.parse().ok() };
    let id = header("x-id").unwrap_or(0);
    let delay = header("x-delay-ms").map_or(behaviour.delay, Duration::from_millis);
    let refuse = behaviour
        .refuse_every
        .is_some_and(|n| id % n == 0 && counters.refused_ids.lock().unwrap().insert(id));
    if refuse {
        counters.refused.fetch_add(1, Relaxed);
        respond.send_reset(Reason::REFUSED_STREAM);
        counters.leave(conn_no);
        return;
    }
    tokio::time::sleep(delay).await;
    // Leaves before the stream's last frame is queued: once it is sent the
    // client may open the next stream, and on a multi-thread runtime the
    // server can accept that one before this task runs again (a peak of 51
    // was counted for a limit of 50 that h2 itself enforced).
    counters.leave(conn_no);
    let response = Response::builder().status(200).body(()).unwrap();
    let sent = respond
        .send_response(response, false)
        .and_then(|mut body| body.send_data(Bytes::from(id.to_string()), true));
    if sent.is_ok() {
        *counters.answered.lock().unwrap().entry(id).or_default() += 1;
    }
}
