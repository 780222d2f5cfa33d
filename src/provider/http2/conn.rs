//! One client HTTP/2 connection: requests in, whole responses out.
//!
//! [`handshake`] writes the preface and returns a [`Client`] (cheap to
//! clone) and the [`Connection`] future that owns the socket. A request is
//! encoded by the caller, under the connection's lock, straight into the
//! output buffer (HEADERS, then DATA as flow control allows); the
//! connection task writes that buffer, reads frames and completes each
//! stream's [`ResponseFuture`] with the whole response (status, headers,
//! body: provider answers are small). No task, channel or frame queue per
//! request.
//!
//! What it keeps from RFC 9113: stream ids, the peer's SETTINGS (stream
//! limit, windows, frame size, table size) acknowledged and applied,
//! connection and stream flow control both ways, CONTINUATION, PING both
//! ways, RST_STREAM (sent when a waiter gives up), GOAWAY (streams above the
//! last id fail as not processed; the rest finish). What a client of
//! providers does not need is refused as a protocol error (server push) or
//! ignored (priorities).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};

use super::frame::{self, code, setting, Frame};
use super::hpack::{Decoder, Encoder, Indexing};

/// Our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE).
const STREAM_WINDOW: u32 = 1 << 20;
/// Our receive window for the whole connection.
const CONN_WINDOW: u32 = 16 << 20;
/// The peer's windows before its SETTINGS (RFC 9113 §6.9.2).
const DEFAULT_WINDOW: i64 = 65_535;
/// Largest window (RFC 9113 §6.9.1).
const MAX_WINDOW: i64 = (1 << 31) - 1;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Rounds of the connection task before it yields to other tasks.
const ROUNDS: usize = 32;
/// Largest response header block (HEADERS and its CONTINUATIONs).
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Why a request or the connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The peer's GOAWAY left this stream out (its id is above the last
    /// one the peer processes), or came before the request was written.
    #[error("GOAWAY from the server (error code {code}){}", debug_text(.debug))]
    GoAway { code: u32, debug: String },
    /// The peer reset the stream.
    #[error("stream reset by the server (error code {0})")]
    Reset(u32),
    /// The connection closed or failed before or while the request was on it.
    #[error("connection {0}")]
    Closed(String),
    /// The peer broke the protocol; the connection was closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A response body over the limit.
    #[error("response body over {0} bytes")]
    BodyTooLarge(usize),
}

fn debug_text(debug: &str) -> String {
    if debug.is_empty() {
        String::new()
    } else {
        format!(": {debug}")
    }
}

impl Error {
    /// Whether the server provably did not process the request: a GOAWAY
    /// that excluded it, REFUSED_STREAM, or a connection already closing
    /// when it was sent (RFC 9113 §8.7).
    pub fn unprocessed(&self) -> bool {
        match self {
            Error::GoAway { .. } => true,
            Error::Reset(c) => *c == code::REFUSED_STREAM,
            _ => false,
        }
    }

    /// Whether the connection cannot take new requests after this.
    pub fn connection_level(&self) -> bool {
        !matches!(self, Error::Reset(_) | Error::BodyTooLarge(_))
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Stream ids are unique odd numbers: a multiplicative hash spreads them.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Streams = HashMap<u32, Slot, BuildHasherDefault<IdHasher>>;

/// One open stream.
#[derive(Default)]
struct Slot {
    waker: Option<Waker>,
    status: Option<StatusCode>,
    headers: HeaderMap,
    body: BytesMut,
    /// Received, not yet given back with WINDOW_UPDATE.
    unacked: u32,
    /// What the peer lets us send on this stream.
    send_window: i64,
    /// Body bytes still to send (flow control held them back).
    unsent: Bytes,
    done: Option<Result<(), Error>>,
}

/// State shared by the clients and the connection task.
struct State {
    out: BytesMut,
    enc: Encoder,
    dec: Decoder,
    streams: Streams,
    /// Streams with body bytes waiting for window, in order.
    blocked: VecDeque<u32>,
    next_id: u32,
    conn_send_window: i64,
    /// Received on the connection, not yet given back.
    conn_unacked: u32,
    peer_initial_window: i64,
    peer_max_frame: usize,
    /// The peer's GOAWAY: its last stream id.
    goaway: Option<u32>,
    /// Set once the connection is over: new requests fail with it.
    closed: Option<Error>,
    task: Option<Waker>,
    /// PINGs sent and not answered yet, by payload.
    pings: HashMap<u64, Option<Waker>>,
    pongs: Vec<u64>,
    next_ping: u64,
    /// A header block being continued: stream, block so far, END_STREAM.
    continuation: Option<(u32, Vec<u8>, bool)>,
    /// The peer's first SETTINGS arrived.
    settled: bool,
    /// The header block being encoded, kept for the next request.
    block: Vec<u8>,
}

struct Inner {
    state: Mutex<State>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS of the peer: 1 until its first
    /// SETTINGS, then its value (`usize::MAX`: none given).
    max_streams: AtomicUsize,
    max_body: usize,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sends requests on the connection; clones share it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Drives the connection: resolves when it is over (`Ok` after a GOAWAY
/// once its streams are done, or when the peer closed the connection
/// cleanly). Dropping it closes the connection and fails what is open.
pub struct Connection<T> {
    io: T,
    inner: Arc<Inner>,
    wbuf: BytesMut,
    rbuf: BytesMut,
    /// Written since the last flush.
    unflushed: bool,
    finished: bool,
}

/// Writes the preface and our SETTINGS; the peer's come with its first
/// frames. `max_body`: the largest response body taken.
pub fn handshake<T>(io: T, max_body: usize) -> (Client, Connection<T>) {
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    out.extend_from_slice(frame::PREFACE);
    frame::write_settings(
        &mut out,
        &[
            (setting::ENABLE_PUSH, 0),
            (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
        ],
    );
    frame::write_window_update(&mut out, 0, CONN_WINDOW - DEFAULT_WINDOW as u32);
    let state = State {
        out,
        enc: Encoder::default(),
        dec: Decoder::default(),
        streams: Streams::default(),
        blocked: VecDeque::new(),
        next_id: 1,
        conn_send_window: DEFAULT_WINDOW,
        conn_unacked: 0,
        peer_initial_window: DEFAULT_WINDOW,
        peer_max_frame: frame::DEFAULT_MAX_FRAME,
        goaway: None,
        closed: None,
        task: None,
        pings: HashMap::new(),
        pongs: Vec::new(),
        next_ping: 1,
        continuation: None,
        settled: false,
        block: Vec::new(),
    };
    let inner = Arc::new(Inner {
        state: Mutex::new(state),
        // One stream until the peer's SETTINGS say more: never burst on a
        // fresh connection.
        max_streams: AtomicUsize::new(1),
        max_body,
    });
    let client = Client {
        inner: Arc::clone(&inner),
    };
    let conn = Connection {
        io,
        inner,
        wbuf: BytesMut::with_capacity(READ_CHUNK),
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        unflushed: false,
        finished: false,
    };
    (client, conn)
}

/// How a request header is sent: sensitive values never indexed, values
/// that change per request not added to the table.
fn indexing(name: &HeaderName, value: &HeaderValue) -> Indexing {
    if value.is_sensitive() {
        Indexing::Never
    } else if name == http::header::CONTENT_LENGTH {
        Indexing::No
    } else {
        Indexing::Incremental
    }
}

/// Where a request goes: the `:scheme`, `:authority` and `:path` it carries.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
}

impl Client {
    /// The peer's current stream limit: 1 until its first SETTINGS, then
    /// its SETTINGS_MAX_CONCURRENT_STREAMS (`usize::MAX` when it sets none).
    pub fn max_concurrent_streams(&self) -> usize {
        self.inner.max_streams.load(Relaxed)
    }

    /// Whether the connection is over or going away (no new requests).
    pub fn is_closing(&self) -> bool {
        let st = self.inner.lock();
        st.closed.is_some() || st.goaway.is_some()
    }

    /// Puts a request on the connection, its pseudo-headers as `target`
    /// says; `headers` free of HTTP/1 connection headers (`connection`,
    /// `transfer-encoding`, ...: RFC 9113 §8.2.2), as the providers' are.
    /// An error here means nothing was sent.
    pub fn send(
        &self,
        method: &Method,
        target: Target<'_>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<ResponseFuture, Error> {
        let Target {
            scheme,
            authority,
            path,
        } = target;
        let mut st = self.inner.lock();
        if let Some(e) = &st.closed {
            return Err(e.clone());
        }
        if st.goaway.is_some() {
            return Err(Error::GoAway {
                code: code::NO_ERROR,
                debug: "the connection is going away".into(),
            });
        }
        if st.next_id > (1 << 31) - 1 {
            return Err(Error::GoAway {
                code: code::NO_ERROR,
                debug: "stream ids used up".into(),
            });
        }
        let id = st.next_id;
        st.next_id += 2;
        let mut block = std::mem::take(&mut st.block);
        block.clear();
        st.enc.begin(&mut block);
        let enc = &mut st.enc;
        enc.field(
            b":method",
            method.as_str().as_bytes(),
            Indexing::Incremental,
            &mut block,
        );
        enc.field(
            b":scheme",
            scheme.as_bytes(),
            Indexing::Incremental,
            &mut block,
        );
        enc.field(
            b":authority",
            authority.as_bytes(),
            Indexing::Incremental,
            &mut block,
        );
        enc.field(b":path", path.as_bytes(), Indexing::No, &mut block);
        for (name, value) in headers {
            let how = indexing(name, value);
            enc.field(name.as_str().as_bytes(), value.as_bytes(), how, &mut block);
        }
        let max_frame = st.peer_max_frame;
        let end = body.is_empty();
        frame::write_headers(&mut st.out, id, &block, end, max_frame);
        st.block = block;
        let slot = Slot {
            send_window: st.peer_initial_window,
            unsent: body,
            ..Slot::default()
        };
        st.streams.insert(id, slot);
        if !end {
            st.blocked.push_back(id);
            send_blocked(&mut st);
        }
        let task = st.task.clone();
        drop(st);
        if let Some(t) = task {
            t.wake();
        }
        Ok(ResponseFuture {
            inner: Arc::clone(&self.inner),
            id,
        })
    }

    /// Sends a PING; resolves when the answer comes (`Err` if the connection ends first).
    pub fn ping(&self) -> Ping {
        let mut st = self.inner.lock();
        let payload = st.next_ping;
        st.next_ping += 1;
        if st.closed.is_none() {
            st.pings.insert(payload, None);
            frame::write_ping(&mut st.out, payload.to_be_bytes(), false);
        }
        let task = st.task.clone();
        drop(st);
        if let Some(t) = task {
            t.wake();
        }
        Ping {
            inner: Arc::clone(&self.inner),
            payload,
        }
    }
}

/// Writes what flow control allows of the blocked streams' bodies, in order.
fn send_blocked(st: &mut State) {
    let mut still = VecDeque::new();
    while let Some(id) = st.blocked.pop_front() {
        let conn_window = st.conn_send_window;
        let max_frame = st.peer_max_frame;
        let Some(slot) = st.streams.get_mut(&id) else {
            continue;
        };
        if slot.done.is_some() {
            // Reset or failed: nothing more goes on it.
            continue;
        }
        let allowed = conn_window.min(slot.send_window).max(0) as usize;
        let n = allowed.min(slot.unsent.len());
        if n > 0 || slot.unsent.is_empty() {
            let chunk = slot.unsent.split_to(n);
            let end = slot.unsent.is_empty();
            slot.send_window -= n as i64;
            frame::write_data(&mut st.out, id, &chunk, end, max_frame);
            st.conn_send_window -= n as i64;
            if !end {
                still.push_back(id);
            }
        } else {
            still.push_back(id);
        }
    }
    st.blocked = still;
}

/// A request's response.
pub struct ResponseFuture {
    inner: Arc<Inner>,
    id: u32,
}

impl ResponseFuture {
    /// The stream id (odd, rising).
    pub fn stream_id(&self) -> u32 {
        self.id
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.inner.lock();
        let Some(slot) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(Error::Closed("lost the stream".into())));
        };
        match slot.done.take() {
            None => {
                if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    slot.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Some(result) => {
                let Some(slot) = st.streams.remove(&self.id) else {
                    return Poll::Ready(Err(Error::Closed("lost the stream".into())));
                };
                Poll::Ready(result.and_then(|()| {
                    Ok(Response {
                        status: slot
                            .status
                            .ok_or_else(|| Error::Protocol("a response without :status".into()))?,
                        headers: slot.headers,
                        body: slot.body.freeze(),
                    })
                }))
            }
        }
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        let Some(slot) = st.streams.remove(&self.id) else {
            return;
        };
        if slot.done.is_none() && st.closed.is_none() {
            // Given up (a deadline): tell the peer, free the stream.
            frame::write_rst_stream(&mut st.out, self.id, code::CANCEL);
            let task = st.task.clone();
            drop(st);
            if let Some(t) = task {
                t.wake();
            }
        }
    }
}

/// An unanswered PING ([`Client::ping`]).
pub struct Ping {
    inner: Arc<Inner>,
    payload: u64,
}

impl Future for Ping {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.inner.lock();
        if let Some(at) = st.pongs.iter().position(|&p| p == self.payload) {
            st.pongs.swap_remove(at);
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &st.closed {
            return Poll::Ready(Err(e.clone()));
        }
        match st.pings.get_mut(&self.payload) {
            Some(w) => *w = Some(cx.waker().clone()),
            None => return Poll::Ready(Err(Error::Closed("PING lost".into()))),
        }
        Poll::Pending
    }
}

impl Drop for Ping {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.pings.remove(&self.payload);
        st.pongs.retain(|&p| p != self.payload);
    }
}

impl<T> Drop for Connection<T> {
    fn drop(&mut self) {
        let mut wake = Vec::new();
        close(
            &mut self.inner.lock(),
            Error::Closed("dropped".into()),
            &mut wake,
        );
        wake.into_iter().for_each(Waker::wake);
    }
}

/// Ends the connection: every open stream and PING fails with `why`.
fn close(st: &mut State, why: Error, wake: &mut Vec<Waker>) {
    if st.closed.is_some() {
        return;
    }
    for slot in st.streams.values_mut() {
        if slot.done.is_none() {
            slot.done = Some(Err(why.clone()));
            wake.extend(slot.waker.take());
        }
    }
    wake.extend(st.pings.values_mut().filter_map(Option::take));
    st.blocked.clear();
    st.closed = Some(why);
}

/// Finishes stream `id` with `result` (if it is still open).
fn finish(st: &mut State, id: u32, result: Result<(), Error>, wake: &mut Vec<Waker>) {
    if let Some(slot) = st.streams.get_mut(&id) {
        if slot.done.is_none() {
            slot.done = Some(result);
            slot.unsent = Bytes::new();
            wake.extend(slot.waker.take());
        }
    }
}

/// A connection error of ours: GOAWAY with `code`, then the end.
fn fail(st: &mut State, code: u32, what: String, wake: &mut Vec<Waker>) {
    frame::write_goaway(&mut st.out, 0, code, b"");
    close(st, Error::Protocol(what), wake);
}

/// Applies one frame from the peer.
fn on_frame(inner: &Inner, st: &mut State, f: Frame, wake: &mut Vec<Waker>) {
    if let Some((stream, _, _)) = &st.continuation {
        let ok = matches!(&f, Frame::Continuation { stream: s, .. } if s == stream);
        if !ok {
            let what = "a frame inside a header block".to_string();
            return fail(st, code::PROTOCOL_ERROR, what, wake);
        }
    }
    match f {
        Frame::Settings { ack: true, .. } | Frame::Ignored => {}
        Frame::Settings { ack: false, params } => on_settings(inner, st, &params, wake),
        Frame::Ping {
            ack: false,
            payload,
        } => frame::write_ping(&mut st.out, payload, true),
        Frame::Ping { ack: true, payload } => {
            let p = u64::from_be_bytes(payload);
            if let Some(w) = st.pings.remove(&p) {
                st.pongs.push(p);
                wake.extend(w);
            }
        }
        Frame::WindowUpdate { stream, increment } => {
            if increment == 0 {
                let what = "a WINDOW_UPDATE of 0".to_string();
                return fail(st, code::PROTOCOL_ERROR, what, wake);
            }
            if stream == 0 {
                st.conn_send_window += i64::from(increment);
                if st.conn_send_window > MAX_WINDOW {
                    let what = "connection window over 2^31-1".to_string();
                    return fail(st, code::FLOW_CONTROL_ERROR, what, wake);
                }
            } else if let Some(slot) = st.streams.get_mut(&stream) {
                slot.send_window += i64::from(increment);
                if slot.send_window > MAX_WINDOW {
                    frame::write_rst_stream(&mut st.out, stream, code::FLOW_CONTROL_ERROR);
                    let e = Error::Protocol("stream window over 2^31-1".into());
                    return finish(st, stream, Err(e), wake);
                }
            }
            send_blocked(st);
        }
        Frame::Headers {
            stream,
            end_stream,
            end_headers,
            block,
        } => {
            if stream % 2 == 0 || stream >= st.next_id {
                let what = format!("HEADERS on stream {stream}, which we never opened");
                return fail(st, code::PROTOCOL_ERROR, what, wake);
            }
            if end_headers {
                on_block(st, stream, &block, end_stream, wake);
            } else {
                st.continuation = Some((stream, block.to_vec(), end_stream));
            }
        }
        Frame::Continuation {
            stream,
            end_headers,
            block,
        } => {
            let Some((_, mut whole, end_stream)) = st.continuation.take() else {
                let what = "CONTINUATION without HEADERS".to_string();
                return fail(st, code::PROTOCOL_ERROR, what, wake);
            };
            if whole.len() + block.len() > MAX_HEADER_BLOCK {
                let what = format!("a header block over {MAX_HEADER_BLOCK} bytes");
                return fail(st, code::PROTOCOL_ERROR, what, wake);
            }
            whole.extend_from_slice(&block);
            if end_headers {
                on_block(st, stream, &whole, end_stream, wake);
            } else {
                st.continuation = Some((stream, whole, end_stream));
            }
        }
        Frame::Data {
            stream,
            end_stream,
            data,
            flow,
        } => on_data(inner, st, stream, end_stream, &data, flow, wake),
        Frame::RstStream { stream, code } => finish(st, stream, Err(Error::Reset(code)), wake),
        Frame::GoAway {
            last_stream,
            code,
            debug,
        } => {
            st.goaway = Some(last_stream.min(st.goaway.unwrap_or(u32::MAX)));
            let e = Error::GoAway {
                code,
                debug: String::from_utf8_lossy(&debug).into_owned(),
            };
            let above: Vec<u32> = st
                .streams
                .keys()
                .copied()
                .filter(|&id| id > last_stream)
                .collect();
            for id in above {
                finish(st, id, Err(e.clone()), wake);
            }
        }
        Frame::PushPromise { .. } => {
            let what = "PUSH_PROMISE, though we disabled push".to_string();
            fail(st, code::PROTOCOL_ERROR, what, wake);
        }
    }
}

fn on_settings(inner: &Inner, st: &mut State, params: &[(u16, u32)], wake: &mut Vec<Waker>) {
    if !st.settled {
        st.settled = true;
        inner.max_streams.store(usize::MAX, Relaxed);
    }
    for &(id, value) in params {
        match id {
            setting::HEADER_TABLE_SIZE => st.enc.set_peer_limit(value as usize),
            setting::MAX_CONCURRENT_STREAMS => inner.max_streams.store(value as usize, Relaxed),
            setting::INITIAL_WINDOW_SIZE => {
                if i64::from(value) > MAX_WINDOW {
                    let what = "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1".to_string();
                    return fail(st, code::FLOW_CONTROL_ERROR, what, wake);
                }
                let delta = i64::from(value) - st.peer_initial_window;
                st.peer_initial_window = i64::from(value);
                for slot in st.streams.values_mut() {
                    slot.send_window += delta;
                }
            }
            setting::MAX_FRAME_SIZE => {
                if !(frame::DEFAULT_MAX_FRAME as u32..=(1 << 24) - 1).contains(&value) {
                    let what = format!("SETTINGS_MAX_FRAME_SIZE {value}");
                    return fail(st, code::PROTOCOL_ERROR, what, wake);
                }
                st.peer_max_frame = value as usize;
            }
            _ => {}
        }
    }
    frame::write_settings_ack(&mut st.out);
    send_blocked(st);
}

fn on_block(st: &mut State, stream: u32, block: &[u8], end_stream: bool, wake: &mut Vec<Waker>) {
    // Decoded even for a stream given up, to keep the table in step.
    let mut status: Option<Result<StatusCode, ()>> = None;
    let mut headers = HeaderMap::new();
    let mut bad = false;
    let decoded = st.dec.decode(block, |name, value| {
        if name == b":status" {
            status = Some(StatusCode::from_bytes(value).map_err(|_| ()));
        } else if name.first() == Some(&b':') {
            bad = true;
        } else if let (Ok(n), Ok(v)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(n, v);
        } else {
            bad = true;
        }
    });
    if let Err(e) = decoded {
        return fail(st, code::COMPRESSION_ERROR, e.to_string(), wake);
    }
    let Some(slot) = st.streams.get_mut(&stream) else {
        return;
    };
    if slot.done.is_some() {
        return;
    }
    match (slot.status.is_some(), status) {
        // Trailers: nothing in them matters to a provider client.
        (true, _) => {}
        (false, Some(Ok(s))) if s.is_informational() => return,
        (false, Some(Ok(s))) if !bad => {
            slot.status = Some(s);
            slot.headers = headers;
        }
        _ => {
            frame::write_rst_stream(&mut st.out, stream, code::PROTOCOL_ERROR);
            let e = Error::Protocol("a malformed response header block".into());
            return finish(st, stream, Err(e), wake);
        }
    }
    if end_stream {
        finish(st, stream, Ok(()), wake);
    }
}

fn on_data(
    inner: &Inner,
    st: &mut State,
    stream: u32,
    end_stream: bool,
    data: &[u8],
    flow: usize,
    wake: &mut Vec<Waker>,
) {
    // Flow control counts every DATA frame, for any stream.
    st.conn_unacked += flow as u32;
    if st.conn_unacked >= CONN_WINDOW / 2 {
        frame::write_window_update(&mut st.out, 0, st.conn_unacked);
        st.conn_unacked = 0;
    }
    let Some(slot) = st.streams.get_mut(&stream) else {
        return;
    };
    if slot.done.is_some() {
        return;
    }
    if slot.status.is_none() {
        frame::write_rst_stream(&mut st.out, stream, code::PROTOCOL_ERROR);
        let e = Error::Protocol("DATA before the response headers".into());
        return finish(st, stream, Err(e), wake);
    }
    if slot.body.len() + data.len() > inner.max_body {
        frame::write_rst_stream(&mut st.out, stream, code::CANCEL);
        return finish(st, stream, Err(Error::BodyTooLarge(inner.max_body)), wake);
    }
    slot.body.extend_from_slice(data);
    if end_stream {
        return finish(st, stream, Ok(()), wake);
    }
    slot.unacked += flow as u32;
    if slot.unacked >= STREAM_WINDOW / 2 {
        let n = std::mem::take(&mut slot.unacked);
        frame::write_window_update(&mut st.out, stream, n);
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    /// Writes what is buffered; `Ok(true)` when all of it went out.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        if self.wbuf.is_empty() {
            let mut st = self.inner.lock();
            std::mem::swap(&mut st.out, &mut self.wbuf);
        }
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.wbuf.advance(n);
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Reads and applies frames; `Ok(None)` when nothing was there,
    /// `Ok(Some(false))` at the end of the input.
    fn poll_read_in(&mut self, cx: &mut Context<'_>) -> Result<Option<bool>, Error> {
        // Into the spare capacity as it is: zeroing 16 KB before every
        // poll (`resize`) was 0.8% of the gateway's instructions.
        self.rbuf.reserve(READ_CHUNK);
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
            Poll::Pending => return Ok(None),
            Poll::Ready(Err(e)) => return Err(Error::Closed(format!("read failed: {e}"))),
            Poll::Ready(Ok(0)) => return Ok(Some(false)),
            Poll::Ready(Ok(_)) => {}
        }
        let mut wake = Vec::new();
        let mut st = self.inner.lock();
        loop {
            match frame::read(&mut self.rbuf, frame::DEFAULT_MAX_FRAME) {
                Ok(Some(f)) => on_frame(&self.inner, &mut st, f, &mut wake),
                Ok(None) => break,
                Err(e) => {
                    fail(&mut st, e.code, e.what.to_string(), &mut wake);
                    break;
                }
            }
            if st.closed.is_some() {
                break;
            }
        }
        drop(st);
        wake.into_iter().for_each(Waker::wake);
        Ok(Some(true))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for Connection<T> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        {
            let mut st = this.inner.lock();
            if !st.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                st.task = Some(cx.waker().clone());
            }
        }
        for _ in 0..ROUNDS {
            let written = match this.poll_write_out(cx) {
                Ok(all) => all,
                Err(e) => return this.end(Err(Error::Closed(format!("write failed: {e}")))),
            };
            let read = match this.poll_read_in(cx) {
                Ok(r) => r,
                Err(e) => return this.end(Err(e)),
            };
            let (over, drained) = {
                let st = this.inner.lock();
                let drained = st.goaway.is_some() && st.streams.values().all(|s| s.done.is_some());
                (st.closed.clone(), drained)
            };
            if let Some(e) = over {
                // Our GOAWAY goes out before the end, if it can.
                let _ = this.poll_write_out(cx);
                return this.end(Err(e));
            }
            match read {
                Some(false) => {
                    let clean = this.inner.lock().goaway.is_some();
                    let why = Error::Closed("closed by the server".into());
                    return this.end(if clean { Ok(()) } else { Err(why) });
                }
                Some(true) => continue,
                None if drained && written => return this.end(Ok(())),
                None => {
                    let more = !this.inner.lock().out.is_empty();
                    if !more || !written {
                        return Poll::Pending;
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T> Connection<T> {
    fn end(&mut self, result: Result<(), Error>) -> Poll<Result<(), Error>> {
        self.finished = true;
        let mut wake = Vec::new();
        let why = match &result {
            Ok(()) => Error::Closed("closed".into()),
            Err(e) => e.clone(),
        };
        close(&mut self.inner.lock(), why, &mut wake);
        wake.into_iter().for_each(Waker::wake);
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A client on one end of a pipe; the test plays the server on the other.
    fn pair() -> (Client, Connection<DuplexStream>, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (client, conn) = handshake(ours, 1 << 20);
        (client, conn, theirs)
    }

    fn get(client: &Client) -> ResponseFuture {
        let target = Target {
            scheme: "https",
            authority: "api.example",
            path: "/x",
        };
        client
            .send(&Method::GET, target, &HeaderMap::new(), Bytes::new())
            .unwrap()
    }

    /// Runs the connection until it ends; returns how.
    async fn end_of(conn: Connection<DuplexStream>) -> Result<(), Error> {
        tokio::time::timeout(std::time::Duration::from_secs(5), conn)
            .await
            .expect("the connection ends")
    }

    #[tokio::test]
    async fn server_push_is_a_protocol_error() {
        let (client, conn, mut server) = pair();
        let pending = get(&client);
        let mut out = BytesMut::new();
        frame::write_settings(&mut out, &[]);
        // PUSH_PROMISE (type 5) on stream 1, promising stream 2.
        out.extend_from_slice(&[0, 0, 5, 5, 4, 0, 0, 0, 1, 0, 0, 0, 2, 0x82]);
        server.write_all(&out).await.unwrap();
        let ended = end_of(conn).await;
        assert!(matches!(ended, Err(Error::Protocol(_))), "{ended:?}");
        assert!(matches!(pending.await, Err(Error::Protocol(_))));
        // Our GOAWAY(PROTOCOL_ERROR) went out after the preface.
        let mut seen = Vec::new();
        server.read_to_end(&mut seen).await.unwrap();
        let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(seen.windows(goaway.len()).any(|w| w == goaway), "{seen:?}");
    }

    #[tokio::test]
    async fn an_endless_header_block_is_refused() {
        let (client, conn, mut server) = pair();
        let pending = get(&client);
        let mut out = BytesMut::new();
        frame::write_settings(&mut out, &[]);
        let chunk = vec![0x82u8; 16_000];
        frame::write_headers(&mut out, 1, &chunk, true, 16_000);
        // Drop END_HEADERS from that HEADERS frame, then continue forever.
        out[9 + 4] &= !0x4;
        for _ in 0..5 {
            out.extend_from_slice(&[0, 0x3e, 0x80, 9, 0, 0, 0, 0, 1]);
            out.extend_from_slice(&chunk);
        }
        server.write_all(&out).await.unwrap();
        let ended = end_of(conn).await;
        assert!(
            matches!(&ended, Err(Error::Protocol(w)) if w.contains("header block")),
            "{ended:?}"
        );
        assert!(pending.await.is_err());
    }

    #[tokio::test]
    async fn headers_on_a_stream_never_opened_are_a_protocol_error() {
        let (_client, conn, mut server) = pair();
        let mut out = BytesMut::new();
        frame::write_headers(&mut out, 3, &[0x88], true, 16_384);
        server.write_all(&out).await.unwrap();
        assert!(matches!(end_of(conn).await, Err(Error::Protocol(_))));
    }

    #[tokio::test]
    async fn informational_answers_are_skipped() {
        let (client, conn, mut server) = pair();
        let driver = tokio::spawn(conn);
        let pending = get(&client);
        let mut out = BytesMut::new();
        frame::write_settings(&mut out, &[]);
        // :status 100 (literal, name index 8), then :status 200 with a body.
        frame::write_headers(&mut out, 1, &[0x08, 3, b'1', b'0', b'0'], false, 16_384);
        frame::write_headers(&mut out, 1, &[0x88], false, 16_384);
        frame::write_data(&mut out, 1, b"ok", true, 16_384);
        server.write_all(&out).await.unwrap();
        let r = pending.await.unwrap();
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));
        driver.abort();
    }
}
