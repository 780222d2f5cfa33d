//! The TLS + HTTP/2 server loop shared by both simulators: accept, per-connection
//! stream limits, per-stream dispatch to a handler, GOAWAY, stats, shutdown.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::frames::{FrameCtl, FrameRewriter};
use super::jwt::cert_uid;
use super::stats::{ReceivedRequest, SimStats};

/// The initial stream window; re-announcing it is how a new SETTINGS is provoked.
pub(crate) const INITIAL_WINDOW: u32 = 65_535;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The connection-level flow-control window the simulators announce.
pub(crate) const CONNECTION_WINDOW: u32 = 8 << 20;
/// Streams a client may cancel before the server accepted them.
const PENDING_ACCEPT_RESETS: usize = 4096;

/// A running simulator. Dropping the handle leaves it running until the
/// runtime stops; [`SimHandle::shutdown`] stops it and frees the port.
#[derive(Debug)]
pub struct SimHandle {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Live counters and the recent-request log.
    pub stats: Arc<SimStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SimHandle {
    /// Closes the listener and every connection (abruptly, like a crash), and
    /// waits until the port can be bound again.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// A request as handed to a simulator's handler.
#[derive(Debug)]
pub(crate) struct SimRequest {
    pub method: Method,
    pub path: String,
    /// `:authority` (host[:port]), if sent.
    pub authority: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Total body length as received (`body` holds at most the server's cap).
    pub body_len: usize,
}

/// A handler's answer.
#[derive(Debug)]
pub(crate) struct SimReply {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// A stream's answer, to be worked out and sent by the connection's task.
type Answer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Commands from stream tasks to their connection's task.
pub(crate) enum ConnCmd {
    Raise,
    GoAway(Bytes),
    /// Answer a stream at this time (the handler's latency).
    At(Instant, Answer),
}

impl std::fmt::Debug for ConnCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnCmd::Raise => f.write_str("Raise"),
            ConnCmd::GoAway(debug) => f.debug_tuple("GoAway").field(debug).finish(),
            ConnCmd::At(at, _) => f.debug_tuple("At").field(at).finish(),
        }
    }
}

/// The streams of one connection waiting out the handler's latency, in
/// the order they are due, with one timer for the earliest, instead of a
/// task, a timer and a wake-up per waiting stream (4% of the one-thread
/// simulator's instructions at 50 ms, docs/benchmarks.md round 20). Due
/// answers run on the connection's task and leave in one write.
pub(crate) struct Waiting<T> {
    queue: BinaryHeap<Reverse<Due<T>>>,
    seq: u64,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The deadline `timer` is set to.
    armed: Option<Instant>,
}

struct Due<T> {
    at: Instant,
    /// Arrival order, so that answers due at the same time keep it.
    seq: u64,
    answer: T,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, other: &Due<T>) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Due<T> {}
impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, other: &Due<T>) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Due<T> {
    fn cmp(&self, other: &Due<T>) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl<T> Waiting<T> {
    pub(crate) fn new() -> Waiting<T> {
        Waiting {
            queue: BinaryHeap::new(),
            seq: 0,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }

    pub(crate) fn push(&mut self, at: Instant, answer: T) {
        self.seq += 1;
        self.queue.push(Reverse(Due {
            at,
            seq: self.seq,
            answer,
        }));
        self.arm();
    }

    /// Points the timer at the earliest deadline, if that changed.
    fn arm(&mut self) {
        let next = self.queue.peek().map(|Reverse(d)| d.at);
        if let Some(at) = next.filter(|&at| self.armed != Some(at)) {
            self.timer.as_mut().reset(at);
        }
        self.armed = next;
    }

    /// Ready when the earliest stream is due.
    pub(crate) fn poll_due(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.armed.is_none() {
            return Poll::Pending;
        }
        self.timer.as_mut().poll(cx)
    }

    /// Moves the answers due by now to `out`, in order.
    pub(crate) fn take_due(&mut self, out: &mut Vec<T>) {
        let now = Instant::now();
        while self.queue.peek().is_some_and(|Reverse(d)| d.at <= now) {
            if let Some(Reverse(d)) = self.queue.pop() {
                out.push(d.answer);
            }
        }
        self.arm();
    }
}

/// Per-connection context visible to handlers.
#[derive(Debug)]
pub(crate) struct ConnCtx<S> {
    /// 1-based connection number.
    pub id: u64,
    /// A verified client certificate was presented.
    pub has_client_cert: bool,
    /// The UID (topic) of the client certificate, if any.
    pub client_cert_uid: Option<String>,
    /// Handler-specific state.
    pub state: S,
    pub(super) raised: AtomicBool,
    goaway_sent: AtomicBool,
    /// Streams open (accepted, not yet answered).
    pub(super) active: AtomicU64,
    requests: AtomicU64,
    cmds: mpsc::UnboundedSender<ConnCmd>,
}

impl<S> ConnCtx<S> {
    /// Lifts the 1-stream phase (no-op when already lifted).
    pub fn raise_streams(&self) {
        if !self.raised.swap(true, Ordering::AcqRel) {
            let _ = self.cmds.send(ConnCmd::Raise);
        }
    }

    /// Sends GOAWAY(NO_ERROR) with `debug` and closes after in-flight streams (once).
    pub fn go_away(&self, debug: Bytes) {
        if !self.goaway_sent.swap(true, Ordering::AcqRel) {
            let _ = self.cmds.send(ConnCmd::GoAway(debug));
        }
    }

    /// Counts a request on this connection; returns the new count.
    pub fn count_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// What a simulator plugs into the shared server.
pub(crate) trait Handler: Send + Sync + 'static {
    type Conn: Send + Sync + 'static;
    fn new_conn(&self) -> Self::Conn;
    fn stats(&self) -> &Arc<SimStats>;
    /// How long to wait before handling a request that has fully arrived
    /// (one sample of the simulator's latency knob).
    fn latency(&self) -> Duration {
        Duration::ZERO
    }
    fn handle(
        self: Arc<Self>,
        req: SimRequest,
        conn: Arc<ConnCtx<Self::Conn>>,
    ) -> impl Future<Output = SimReply> + Send;
    /// Benchmark mode's answer from the request's `authorization` value
    /// (`Err` when it is not text) and `apns-id` alone: the fast
    /// connection loop's ([`ServerSetup::fast`]) only question. The
    /// default serves no such mode.
    fn quick(
        &self,
        _authorization: Option<Result<&str, ()>>,
        _conn: &ConnCtx<Self::Conn>,
        _apns_id: Option<HeaderValue>,
    ) -> SimReply {
        SimReply {
            status: 500,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

/// Transport settings of one simulator.
#[derive(Clone)]
pub(crate) struct ServerSetup {
    pub tls: Arc<rustls::ServerConfig>,
    pub max_streams: u32,
    /// Start connections without a client certificate at 1 stream.
    pub start_low: bool,
    /// Bodies are read up to this many bytes (the rest is counted, not kept).
    pub max_body: usize,
    /// Keep received requests in `SimStats::recent`.
    pub record: bool,
    /// Serve connections with the benchmark loop (`super::fast`), whose
    /// requests the handler answers with [`Handler::quick`].
    pub fast: bool,
}

/// Binds `addr` and serves `handler` until [`SimHandle::shutdown`].
pub(crate) async fn serve<H: Handler>(
    addr: SocketAddr,
    setup: ServerSetup,
    handler: Arc<H>,
) -> io::Result<SimHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stats = handler.stats().clone();
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, setup, handler, stop_rx));
    Ok(SimHandle {
        addr,
        stats,
        stop: Some(stop_tx),
        task,
    })
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    setup: ServerSetup,
    handler: Arc<H>,
    stop_rx: oneshot::Receiver<()>,
) {
    let stop = async {
        if stop_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(stop);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                if let Ok((tcp, _)) = accepted {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(serve_conn(tcp, setup.clone(), handler.clone()));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

async fn serve_conn<H: Handler>(tcp: TcpStream, setup: ServerSetup, handler: Arc<H>) {
    let acceptor = TlsAcceptor::from(setup.tls.clone());
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!("simulator TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
    let client_cert_uid = cert.and_then(|c| cert_uid(c));
    let has_client_cert = cert.is_some();
    let ctl = Arc::new(FrameCtl::default());
    let start_low = setup.start_low && !has_client_cert;
    if start_low {
        ctl.initial_streams.store(1, Ordering::Release);
    }
    if setup.fast {
        let (ctx, rx) = conn_ctx(&*handler, has_client_cert, client_cert_uid, start_low);
        return super::fast::serve(tls, ctx, rx, setup, handler).await;
    }
    let io = FrameRewriter::new(tls, ctl.clone());
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(setup.max_streams)
        .initial_window_size(INITIAL_WINDOW)
        // A connection window for 1,000 streams of 4 KiB bodies: with h2's
        // default 64 KiB, a starved server makes the client split bodies
        // into small DATA frames, which h2's anti-abuse budget answers with
        // GOAWAY(ENHANCE_YOUR_CALM, "too_many_data_frames"), not APNs-like.
        .initial_connection_window_size(CONNECTION_WINDOW)
        // Clients cancel streams the server has not accepted yet when their
        // deadline passes under load; h2's default (20) would GOAWAY for it.
        .max_pending_accept_reset_streams(PENDING_ACCEPT_RESETS)
        .max_frame_size(16_384)
        .max_header_list_size(8_000)
        .header_table_size(4_096);
    let conn = match builder.handshake::<_, Bytes>(io).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("simulator h2 handshake failed: {e}");
            return;
        }
    };
    let (ctx, rx) = conn_ctx(&*handler, has_client_cert, client_cert_uid, start_low);
    drive_conn(conn, rx, ctl, ctx, setup, handler).await;
}

/// A new connection's context (counted in the stats) and its command channel.
fn conn_ctx<H: Handler>(
    handler: &H,
    has_client_cert: bool,
    client_cert_uid: Option<String>,
    start_low: bool,
) -> (Arc<ConnCtx<H::Conn>>, mpsc::UnboundedReceiver<ConnCmd>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(ConnCtx {
        id: handler.stats().open_connection(),
        has_client_cert,
        client_cert_uid,
        state: handler.new_conn(),
        raised: AtomicBool::new(!start_low),
        goaway_sent: AtomicBool::new(false),
        active: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        cmds: tx,
    });
    (ctx, rx)
}

type Accepted = Option<Result<(Request<RecvStream>, SendResponse<Bytes>), h2::Error>>;

enum Event {
    Accepted(Box<Accepted>),
    Cmd(ConnCmd),
    Retry,
    /// Streams waiting out the latency are due.
    Due,
    /// The streams accepted in the last read were polled.
    Ran,
}

type H2Conn =
    h2::server::Connection<FrameRewriter<tokio_rustls::server::TlsStream<TcpStream>>, Bytes>;

async fn drive_conn<H: Handler>(
    mut conn: H2Conn,
    mut rx: mpsc::UnboundedReceiver<ConnCmd>,
    ctl: Arc<FrameCtl>,
    ctx: Arc<ConnCtx<H::Conn>>,
    setup: ServerSetup,
    handler: Arc<H>,
) {
    let mut retry: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // Streams accepted since the connection last ran out of frames to read,
    // and answers that came due.
    let mut fresh: Vec<Answer> = Vec::new();
    let mut waiting: Waiting<Answer> = Waiting::new();
    loop {
        let event = poll_fn(|cx| {
            if let Poll::Ready(Some(cmd)) = rx.poll_recv(cx) {
                return Poll::Ready(Event::Cmd(cmd));
            }
            if let Some(sleep) = retry.as_mut() {
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Retry);
                }
            }
            if waiting.poll_due(cx).is_ready() {
                return Poll::Ready(Event::Due);
            }
            match conn.poll_accept(cx) {
                Poll::Ready(a) => Poll::Ready(Event::Accepted(Box::new(a))),
                Poll::Pending if fresh.is_empty() => Poll::Pending,
                Poll::Pending => {
                    run_fresh(&mut fresh, cx);
                    Poll::Ready(Event::Ran)
                }
            }
        })
        .await;
        match event {
            Event::Cmd(ConnCmd::Raise) | Event::Retry => {
                ctl.raise_to.store(setup.max_streams, Ordering::Release);
                // Fails while an earlier SETTINGS awaits its ACK: try again soon.
                retry = match conn.set_initial_window_size(INITIAL_WINDOW) {
                    Ok(()) => None,
                    Err(_) => Some(Box::pin(tokio::time::sleep(Duration::from_millis(5)))),
                };
            }
            Event::Cmd(ConnCmd::GoAway(debug)) => {
                if let Ok(mut slot) = ctl.goaway_debug.lock() {
                    *slot = Some(debug);
                }
                handler.stats().count_goaway();
                conn.graceful_shutdown();
            }
            Event::Cmd(ConnCmd::At(at, answer)) => waiting.push(at, answer),
            // Run on the next turn, when no frame is waiting to be read.
            Event::Due => waiting.take_due(&mut fresh),
            // The next `poll_accept` writes what the streams answered.
            Event::Ran => {}
            Event::Accepted(accepted) => match *accepted {
                Some(Ok((req, respond))) => {
                    if let Some(stream) = start_stream(req, respond, &ctx, &setup, &handler) {
                        fresh.push(stream);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!("simulator connection ended: {e}");
                    break;
                }
                None => break,
            },
        }
    }
    for stream in fresh {
        tokio::spawn(stream);
    }
}

/// Polls each stream accepted in the last read once, from the connection's
/// task: most finish there (the body came with the headers, and the
/// handler does not wait), which saves a task per request, and their
/// answers leave in one write, as when each stream had a task. Only a
/// stream that waits gets a task of its own; its first poll there
/// registers that task's waker.
fn run_fresh(fresh: &mut Vec<Answer>, cx: &mut std::task::Context<'_>) {
    for mut stream in fresh.drain(..) {
        if stream.as_mut().poll(cx).is_pending() {
            tokio::spawn(stream);
        }
    }
}

/// Refuses the stream in the 1-stream phase when one is already open (`None`),
/// else returns the stream's work, boxed so that it can move to a task of
/// its own after a first poll.
fn start_stream<H: Handler>(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    ctx: &Arc<ConnCtx<H::Conn>>,
    setup: &ServerSetup,
    handler: &Arc<H>,
) -> Option<Answer> {
    let raised = ctx.raised.load(Ordering::Acquire);
    if !raised && ctx.active.load(Ordering::Acquire) >= 1 {
        respond.send_reset(Reason::REFUSED_STREAM);
        handler.stats().count_refused();
        return None;
    }
    let active = ctx.active.fetch_add(1, Ordering::AcqRel) + 1;
    handler.stats().note_streams(ctx.id, active);
    let guard = ActiveGuard(ctx.clone());
    let record = setup.record;
    let max_body = setup.max_body;
    let handler = handler.clone();
    Some(Box::pin(run_stream(
        req, respond, handler, guard, max_body, record,
    )))
}

struct ActiveGuard<S>(Arc<ConnCtx<S>>);

impl<S> Drop for ActiveGuard<S> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads the request; answers it at once, or hands the answer to the
/// connection's task to run when the handler's latency has passed.
async fn run_stream<H: Handler>(
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    handler: Arc<H>,
    guard: ActiveGuard<H::Conn>,
    max_body: usize,
    record: bool,
) {
    let ctx = &guard.0;
    let (parts, body) = req.into_parts();
    let (body, body_len) = read_body(body, max_body).await;
    let request = SimRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        authority: parts.uri.authority().map(|a| a.to_string()),
        headers: parts.headers,
        body_len,
        body,
    };
    handler.stats().count_request();
    let received = record.then(|| received(&request, ctx.id));
    let delay = handler.latency();
    if delay.is_zero() {
        answer(request, respond, handler, guard, received).await;
        return;
    }
    let at = Instant::now() + delay;
    let cmds = ctx.cmds.clone();
    let answer = answer(request, respond, handler, guard, received);
    // Fails only when the connection is gone: the stream goes with it.
    let _ = cmds.send(ConnCmd::At(at, Box::pin(answer)));
}

/// Works out the handler's answer and sends it; the stream stays active
/// until then.
async fn answer<H: Handler>(
    request: SimRequest,
    mut respond: SendResponse<Bytes>,
    handler: Arc<H>,
    guard: ActiveGuard<H::Conn>,
    received: Option<ReceivedRequest>,
) {
    let stats = handler.stats().clone();
    let reply = handler.handle(request, guard.0.clone()).await;
    stats.count_status(reply.status);
    if let Some(mut r) = received {
        r.status = reply.status;
        stats.record(r);
    }
    send_reply(&mut respond, reply);
}

fn received(req: &SimRequest, connection: u64) -> ReceivedRequest {
    ReceivedRequest {
        connection,
        method: req.method.to_string(),
        path: req.path.clone(),
        headers: req
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: req.body.clone(),
        status: 0,
        at: std::time::SystemTime::now(),
    }
}

/// Reads the whole body, keeping at most `max` bytes; returns (kept, total length).
async fn read_body(mut body: RecvStream, max: usize) -> (Bytes, usize) {
    let mut kept = BytesMut::new();
    let mut total = 0usize;
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { break };
        let _ = body.flow_control().release_capacity(chunk.len());
        let contiguous = kept.len() == total;
        total += chunk.len();
        if contiguous && kept.len() + chunk.len() <= max {
            kept.extend_from_slice(&chunk);
        }
    }
    (kept.freeze(), total)
}

fn send_reply(respond: &mut SendResponse<Bytes>, reply: SimReply) {
    // Built in place: `Response::builder` moves the whole response through
    // each `header` call.
    let Ok(status) = http::StatusCode::from_u16(reply.status) else {
        respond.send_reset(Reason::INTERNAL_ERROR);
        return;
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.reserve(reply.headers.len());
    for (name, value) in reply.headers {
        headers.append(name, value);
    }
    let end = reply.body.is_empty();
    match respond.send_response(response, end) {
        Ok(mut stream) if !end => {
            let _ = stream.send_data(reply.body, true);
        }
        _ => {}
    }
}
