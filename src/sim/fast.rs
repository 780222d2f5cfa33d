//! The connection loop of the APNs simulator's benchmark mode (accept-all):
//! HTTP/2 on pushgate's own frame and HPACK layer (`provider::http2`)
//! instead of the `h2` crate's server.
//!
//! Why: in the load test the simulator shares the gateway's two cores, and
//! h2's server cost it about 30,000 instructions a request (its stream
//! bookkeeping, frame queues and `HeaderMap`s): at 50 ms, a fan-out job's
//! 500 requests took the simulator 3 ms to read and as long again to
//! answer, time the real APNs spends on machines of its own
//! (docs/benchmarks.md, rounds 19 and 20). Benchmark mode needs little of
//! HTTP/2: it reads a request's headers, counts its body, and answers
//! from the `authorization` header alone.
//!
//! What it keeps from the full server: the TLS and certificate set-up,
//! SETTINGS (one stream until the first success, then `max_streams`;
//! REFUSED_STREAM beyond the limit), flow-control credit for bodies, PING,
//! RST_STREAM, GOAWAY both ways (the `goaway_every` knob), the latency
//! (one timer per connection, the handler deciding when the wait is
//! over, as in the full server) and the stats. Every other mode, and every
//! functional test of the simulators, still runs on h2's server, whose
//! strictness checks the gateway's client.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::server::{
    ConnCmd, ConnCtx, Handler, ServerSetup, SimReply, Waiting, CONNECTION_WINDOW, INITIAL_WINDOW,
};
use crate::provider::http2::frame::{self, code, setting, Frame};
use crate::provider::http2::hpack::{Decoder, Encoder, Indexing};

/// The largest frame we accept (our SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 16_384;
/// A request's header list beyond this is refused (SETTINGS_MAX_HEADER_LIST_SIZE).
const MAX_HEADER_LIST: u32 = 8_000;
/// Stream-level credit is returned once this much of a body has arrived.
const STREAM_CREDIT_STEP: u32 = 32 * 1024;
/// Connection-level credit is returned in steps of this much.
const CONN_CREDIT_STEP: u32 = 1 << 20;
/// Read at least this much room at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Past this much unwritten output, stop reading until the client reads.
const OUT_HIGH_WATER: usize = 1 << 20;

/// A request whose headers came, waiting for its body or its answer.
struct Open {
    authorization: Option<Result<String, ()>>,
    apns_id: Option<HeaderValue>,
    body_len: u32,
    /// END_STREAM came: the request waits for its answer only.
    ended: bool,
}

/// A header block split over HEADERS and CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: BytesMut,
}

struct Conn<H: Handler> {
    ctx: Arc<ConnCtx<H::Conn>>,
    handler: Arc<H>,
    setup: ServerSetup,
    decoder: Decoder,
    encoder: Encoder,
    /// Bytes to write.
    out: BytesMut,
    block: Vec<u8>,
    open: HashMap<u32, Open>,
    partial: Option<Partial>,
    waiting: Waiting<u32>,
    due: Vec<u32>,
    /// The highest stream id the client opened.
    last_stream: u32,
    /// SETTINGS_MAX_CONCURRENT_STREAMS as last announced.
    limit: u32,
    /// The client's SETTINGS_MAX_FRAME_SIZE.
    peer_max_frame: usize,
    /// Body bytes not yet credited back on the connection.
    conn_unacked: u32,
    /// No new streams: GOAWAY sent or received.
    closing: bool,
}

/// What woke the connection.
enum Event {
    Cmd(ConnCmd),
    Due,
    /// Bytes were read.
    Read,
    /// The client closed, the socket failed, or every sender is gone.
    Gone,
}

/// Serves one TLS connection until the client closes it, an error, or a
/// GOAWAY with nothing left in flight.
pub(crate) async fn serve<H, IO>(
    mut io: IO,
    ctx: Arc<ConnCtx<H::Conn>>,
    mut cmds: mpsc::UnboundedReceiver<ConnCmd>,
    setup: ServerSetup,
    handler: Arc<H>,
) where
    H: Handler,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    // The client's preface; its SETTINGS come as frames.
    while rbuf.len() < frame::PREFACE.len() {
        match io.read_buf(&mut rbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    if !rbuf.starts_with(frame::PREFACE) {
        return;
    }
    rbuf.advance(frame::PREFACE.len());
    let start_low = !ctx.raised.load(Ordering::Acquire);
    let mut conn = Conn {
        limit: if start_low { 1 } else { setup.max_streams },
        ctx,
        handler,
        setup,
        decoder: Decoder::new(4096),
        encoder: Encoder::default(),
        out: BytesMut::with_capacity(READ_CHUNK),
        block: Vec::with_capacity(256),
        open: HashMap::new(),
        partial: None,
        waiting: Waiting::new(),
        due: Vec::new(),
        last_stream: 0,
        peer_max_frame: frame::DEFAULT_MAX_FRAME,
        conn_unacked: 0,
        closing: false,
    };
    frame::write_settings(
        &mut conn.out,
        &[
            (setting::MAX_CONCURRENT_STREAMS, conn.limit),
            (setting::INITIAL_WINDOW_SIZE, INITIAL_WINDOW),
            (setting::MAX_FRAME_SIZE, MAX_FRAME as u32),
            (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
        ],
    );
    frame::write_window_update(&mut conn.out, 0, CONNECTION_WINDOW - INITIAL_WINDOW);
    let mut unflushed = false;
    loop {
        loop {
            match frame::read(&mut rbuf, MAX_FRAME) {
                Ok(Some(f)) => {
                    if let Err(e) = conn.on_frame(f) {
                        return conn.fail(&mut io, e.code).await;
                    }
                }
                Ok(None) => break,
                Err(e) => return conn.fail(&mut io, e.code).await,
            }
        }
        if conn.closing && conn.open.is_empty() {
            let _ = io.write_all(&conn.out).await;
            let _ = io.shutdown().await;
            return;
        }
        rbuf.reserve(READ_CHUNK);
        let event = poll_fn(|cx| {
            // Write what is pending (a client that is writing is also reading).
            while !conn.out.is_empty() {
                match Pin::new(&mut io).poll_write(cx, &conn.out) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Event::Gone),
                    Poll::Ready(Ok(n)) => {
                        conn.out.advance(n);
                        unflushed = true;
                    }
                    Poll::Pending => break,
                }
            }
            if conn.out.is_empty() && unflushed {
                match Pin::new(&mut io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(Event::Gone),
                    Poll::Pending => {}
                }
            }
            if let Poll::Ready(cmd) = cmds.poll_recv(cx) {
                return Poll::Ready(cmd.map_or(Event::Gone, Event::Cmd));
            }
            if conn.waiting.poll_due(cx).is_ready() {
                return Poll::Ready(Event::Due);
            }
            if conn.out.len() >= OUT_HIGH_WATER {
                return Poll::Pending;
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut rbuf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(Event::Gone),
                Poll::Ready(Ok(_)) => Poll::Ready(Event::Read),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match event {
            Event::Cmd(cmd) => conn.on_cmd(cmd),
            Event::Due => conn.answer_due(),
            Event::Read => {}
            Event::Gone => return,
        }
    }
}

/// A connection error (RFC 9113 §5.4.1).
struct ConnError {
    code: u32,
}

fn protocol() -> ConnError {
    ConnError {
        code: code::PROTOCOL_ERROR,
    }
}

impl<H: Handler> Conn<H> {
    fn on_frame(&mut self, f: Frame) -> Result<(), ConnError> {
        if let Some(p) = &self.partial {
            if !matches!(&f, Frame::Continuation { stream, .. } if *stream == p.stream) {
                return Err(protocol());
            }
        }
        match f {
            Frame::Settings { ack: false, params } => {
                for (id, value) in params {
                    match id {
                        setting::HEADER_TABLE_SIZE => {
                            self.encoder.set_peer_limit(value as usize);
                        }
                        setting::MAX_FRAME_SIZE => self.peer_max_frame = value as usize,
                        _ => {}
                    }
                }
                frame::write_settings_ack(&mut self.out);
            }
            Frame::Settings { ack: true, .. } | Frame::WindowUpdate { .. } | Frame::Ignored => {}
            Frame::Ping {
                ack: false,
                payload,
            } => frame::write_ping(&mut self.out, payload, true),
            Frame::Ping { ack: true, .. } => {}
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                block,
            } => {
                // Trailers of an open request: decoded to keep the table in
                // step; the request ends with them.
                if self.open.get(&stream).is_some_and(|o| !o.ended) && end_headers {
                    self.decoder
                        .decode(&block, |_, _| {})
                        .map_err(|_| ConnError {
                            code: code::COMPRESSION_ERROR,
                        })?;
                    if end_stream {
                        self.complete(stream);
                    }
                    return Ok(());
                }
                if stream % 2 == 0 || stream <= self.last_stream {
                    return Err(protocol());
                }
                self.last_stream = stream;
                if end_headers {
                    self.on_request(stream, &block, end_stream)?;
                } else {
                    self.partial = Some(Partial {
                        stream,
                        end_stream,
                        block: BytesMut::from(&block[..]),
                    });
                }
            }
            Frame::Continuation {
                end_headers, block, ..
            } => {
                let Some(p) = self.partial.as_mut() else {
                    return Err(protocol());
                };
                p.block.extend_from_slice(&block);
                if p.block.len() > MAX_HEADER_LIST as usize * 2 {
                    return Err(protocol());
                }
                if end_headers {
                    if let Some(p) = self.partial.take() {
                        self.on_request(p.stream, &p.block, p.end_stream)?;
                    }
                }
            }
            Frame::Data {
                stream,
                end_stream,
                data,
                flow,
            } => {
                let flow = flow as u32;
                self.conn_unacked += flow;
                if self.conn_unacked >= CONN_CREDIT_STEP {
                    frame::write_window_update(&mut self.out, 0, self.conn_unacked);
                    self.conn_unacked = 0;
                }
                if let Some(open) = self.open.get_mut(&stream).filter(|o| !o.ended) {
                    open.body_len = open.body_len.saturating_add(data.len() as u32);
                    if end_stream {
                        self.complete(stream);
                    } else if open.body_len % STREAM_CREDIT_STEP < data.len() as u32 {
                        frame::write_window_update(&mut self.out, stream, STREAM_CREDIT_STEP);
                    }
                }
            }
            Frame::RstStream { stream, .. } => {
                if self.open.remove(&stream).is_some() {
                    self.ctx.active.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Frame::GoAway { .. } => self.closing = true,
            Frame::PushPromise { .. } => return Err(protocol()),
        }
        Ok(())
    }

    /// A request's header block: decoded (always, to keep the table in
    /// step), then refused beyond the stream limit or opened.
    fn on_request(&mut self, stream: u32, block: &[u8], end_stream: bool) -> Result<(), ConnError> {
        let mut authorization = None;
        let mut apns_id = None;
        self.decoder
            .decode(block, |name, value| match name {
                b"authorization" => {
                    authorization =
                        Some(std::str::from_utf8(value).map(str::to_owned).map_err(drop));
                }
                b"apns-id" => apns_id = HeaderValue::from_bytes(value).ok(),
                _ => {}
            })
            .map_err(|_| ConnError {
                code: code::COMPRESSION_ERROR,
            })?;
        if self.closing {
            frame::write_rst_stream(&mut self.out, stream, code::REFUSED_STREAM);
            return Ok(());
        }
        let active = self.ctx.active.load(Ordering::Acquire);
        if active >= u64::from(self.limit) {
            frame::write_rst_stream(&mut self.out, stream, code::REFUSED_STREAM);
            self.handler.stats().count_refused();
            return Ok(());
        }
        let active = self.ctx.active.fetch_add(1, Ordering::AcqRel) + 1;
        self.handler.stats().note_streams(self.ctx.id, active);
        self.open.insert(
            stream,
            Open {
                authorization,
                apns_id,
                body_len: 0,
                ended: false,
            },
        );
        if end_stream {
            self.complete(stream);
        }
        Ok(())
    }

    /// The whole request is in: answer now or when the latency has passed.
    fn complete(&mut self, stream: u32) {
        if let Some(open) = self.open.get_mut(&stream) {
            open.ended = true;
        }
        self.handler.stats().count_request();
        let delay = self.handler.latency();
        if delay.is_zero() {
            self.answer(stream);
        } else {
            self.waiting.push(Instant::now() + delay, stream);
        }
    }

    fn answer_due(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.waiting.take_due(&mut due);
        for stream in due.drain(..) {
            self.answer(stream);
        }
        self.due = due;
    }

    fn answer(&mut self, stream: u32) {
        // Reset by the client meanwhile: nothing to answer.
        let Some(open) = self.open.remove(&stream) else {
            return;
        };
        let authorization = open
            .authorization
            .as_ref()
            .map(|a| a.as_deref().map_err(drop));
        let reply = self.handler.quick(authorization, &self.ctx, open.apns_id);
        self.handler.stats().count_status(reply.status);
        self.write_reply(stream, reply);
        self.ctx.active.fetch_sub(1, Ordering::AcqRel);
    }

    fn write_reply(&mut self, stream: u32, reply: SimReply) {
        // A status from the static list, not a string built per answer.
        let Ok(status) = http::StatusCode::from_u16(reply.status) else {
            frame::write_rst_stream(&mut self.out, stream, code::INTERNAL_ERROR);
            return;
        };
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        self.encoder.begin(&mut block);
        self.encoder.field(
            b":status",
            status.as_str().as_bytes(),
            Indexing::Incremental,
            &mut block,
        );
        for (name, value) in &reply.headers {
            let how = if value.is_sensitive() {
                Indexing::Never
            } else {
                Indexing::Incremental
            };
            self.encoder
                .field(name.as_str().as_bytes(), value.as_bytes(), how, &mut block);
        }
        let end = reply.body.is_empty();
        frame::write_headers(&mut self.out, stream, &block, end, self.peer_max_frame);
        if !end {
            frame::write_data(
                &mut self.out,
                stream,
                &reply.body,
                true,
                self.peer_max_frame,
            );
        }
        self.block = block;
    }

    fn on_cmd(&mut self, cmd: ConnCmd) {
        match cmd {
            ConnCmd::Raise => {
                self.limit = self.setup.max_streams;
                frame::write_settings(
                    &mut self.out,
                    &[(setting::MAX_CONCURRENT_STREAMS, self.limit)],
                );
            }
            ConnCmd::GoAway(debug) => {
                self.handler.stats().count_goaway();
                frame::write_goaway(&mut self.out, self.last_stream, code::NO_ERROR, &debug);
                self.closing = true;
            }
            // The full server's delayed answers: not used here.
            ConnCmd::At(..) => {}
        }
    }

    /// Ends the connection with a GOAWAY carrying `code`.
    async fn fail<IO: AsyncWrite + Unpin>(&mut self, io: &mut IO, code: u32) {
        frame::write_goaway(&mut self.out, self.last_stream, code, b"");
        let _ = io.write_all(&self.out).await;
        let _ = io.shutdown().await;
    }
}
