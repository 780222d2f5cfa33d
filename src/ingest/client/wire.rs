//! pushgate's own consumer side of AMQP 0-9-1, on the tokio runtime: one
//! connection, one channel, one consumer with manual acks, for an input
//! queue's hot path.
//!
//! Why not lapin here: lapin runs each connection's socket on an OS thread
//! of its own, so every delivery crosses threads twice (a futex wake each
//! way), and it parses every frame with nom combinators, a body byte by
//! byte. On single-recipient jobs that was about a third of the gateway's
//! CPU (docs/benchmarks.md, round 5). Here the worker's own task reads the
//! socket: a delivery is three frames cut out of one read buffer, its
//! method, properties and body parsed by hand; acks are written from the
//! same task. The result batches are published from the runtime too
//! ([`WirePublisher`], `wire/publish.rs`, on a connection of its own).
//! lapin keeps everything that is not hot: declarations, retries and dead
//! letters, the control and events consumers.
//!
//! Scope: the methods a consumer meets. The handshake (PLAIN or AMQPLAIN,
//! the URL's vhost, `frame_max`, `channel_max` and `heartbeat`), `basic.qos`,
//! `basic.consume`, deliveries, `ack` / `nack`, `basic.cancel` either way,
//! heartbeats both ways (a silent broker for two intervals ends the
//! connection), and the broker closing the channel or the connection (the
//! close-ok is sent, the error reaches the worker, the session ends and the
//! daemon reconnects: nothing unacked is lost, the broker redelivers it).
//! Frames that are not hot are parsed and generated with lapin's own
//! protocol crate, so only the delivery path is hand-written.
//!
//! Batching: a consumer with a read interval (`amqp.inputs.read_interval`)
//! reads its socket at most once per interval while the broker keeps it
//! busy, so a busy queue's deliveries are handled in batches: fewer
//! wake-ups, provider writes and acks per job, here and at the provider.
//! An idle consumer reads the first bytes that come at once.
//!
//! Cancel safety: [`WireConsumer::next`] may be dropped at any await (the
//! worker selects over it). It only reads: bytes land in `rbuf` or not, a
//! half-assembled delivery stays in `pending`. Every write (acks, heartbeats,
//! close-ok) goes through `writer` from code that is not cancelled midway.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use cookie_factory::gen;
use lapin::protocol::{basic, channel, confirm, connection, gen_class, parse_class, AMQPClass};
use lapin::types::parsing::parse_field_table;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::uri::{AMQPScheme, AMQPUri, SASLMechanism};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use super::Props;
#[cfg(test)]
use super::Table;
use super::{Delivery, Error, Open, OpenError};
use lapin::types::ShortString;

mod publish;

pub(super) use publish::Answer;
pub use publish::WirePublisher;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Frame type, channel and size.
const FRAME_HEAD: usize = 7;
const HEARTBEAT: [u8; 8] = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END];
/// The one channel a consumer connection opens.
const CHANNEL: u16 = 1;
/// The largest frame pushgate offers to take (the broker may ask for less).
const FRAME_MAX: u32 = 131_072;
/// The smallest frame_max AMQP allows.
const FRAME_MIN: u32 = 4_096;
/// A body is reserved up to this much up front; a larger one grows as its
/// frames arrive (a header's size alone never allocates much).
const BODY_RESERVE_MAX: usize = 1 << 20;
const READ_CHUNK: usize = 64 * 1024;
/// basic.deliver: class 60, method 60.
const DELIVER: [u8; 4] = [0, 60, 0, 60];

/// What ends a consumer connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the broker closed the connection: {code} {text}")]
    ConnectionClosed { code: u16, text: String },
    #[error("the broker closed the channel: {code} {text}")]
    ChannelClosed { code: u16, text: String },
    #[error("the broker sent no frame in {0:?} (two heartbeat intervals)")]
    Silent(Duration),
    #[error("AMQP protocol: {0}")]
    Protocol(String),
    #[error("amqp.url: {0}")]
    Unsupported(String),
    /// The result publisher's connection ended before the broker answered.
    #[error("the result publisher's connection ended: {0}")]
    Lost(String),
}

/// `Sync` too: `&WireConsumer` is held across awaits in `Send` tasks.
type Reader = Box<dyn AsyncRead + Send + Sync + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A delivery being assembled from its method, header and body frames.
struct Pending {
    tag: u64,
    redelivered: bool,
    /// Body size, message id, timestamp and headers, once the header came.
    header: Option<Header>,
    body: Vec<u8>,
}

struct Header {
    size: u64,
    message_id: Option<String>,
    timestamp: Option<u64>,
    headers: Option<FieldTable>,
}

/// What a new connection's channel is for.
enum After<'a> {
    Consume {
        queue: &'a str,
        tag: &'a str,
        prefetch: u16,
    },
    Confirm,
}

/// One consumer on its own connection.
pub struct WireConsumer {
    reader: Reader,
    writer: Arc<Mutex<Writer>>,
    rbuf: BytesMut,
    frame_max: u32,
    /// Two negotiated heartbeat intervals: a broker silent this long is gone.
    silence: Option<Duration>,
    /// When the broker last sent a byte (the silence is counted from here,
    /// however often `next` is dropped and called again).
    last_read: Instant,
    /// The least time between two reads ([`WireConsumer::set_read_interval`]).
    read_interval: Duration,
    /// The last read filled the room it had: more is waiting, read it now.
    read_full: bool,
    /// The wait for the next read, kept across `next` calls (the worker
    /// drops and polls `next` again after every finished job): one timer
    /// reset per read, not one registered per call.
    pace: Option<Pin<Box<Sleep>>>,
    heartbeats: Option<JoinHandle<()>>,
    pending: Option<Pending>,
    /// The consumer was cancelled (by us or by the broker): no more deliveries.
    ended: bool,
}

impl Drop for WireConsumer {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeats.take() {
            h.abort();
        }
    }
}

impl WireConsumer {
    /// Connects, opens a channel with `prefetch` and consumes `queue` as
    /// `tag` with manual acks.
    pub async fn open(
        o: Open<'_>,
        queue: &str,
        tag: &str,
        prefetch: u16,
    ) -> Result<WireConsumer, OpenError> {
        let then = After::Consume {
            queue,
            tag,
            prefetch,
        };
        WireConsumer::connect_then(o, then).await
    }

    /// Connects and opens channel 1 in confirm mode: the connection of a
    /// [`super::WirePublisher`], which reads it from then on.
    pub(super) async fn open_confirming(o: Open<'_>) -> Result<WireConsumer, OpenError> {
        WireConsumer::connect_then(o, After::Confirm).await
    }

    /// Connects, shakes hands and sets the channel up as `then` says, all
    /// within the open timeout.
    async fn connect_then(o: Open<'_>, then: After<'_>) -> Result<WireConsumer, OpenError> {
        let uri: AMQPUri = o.url.parse().map_err(OpenError::Url)?;
        let heartbeat = uri.query.heartbeat.or_else(|| {
            o.heartbeat
                .map(|h| u16::try_from(h.as_secs()).unwrap_or(u16::MAX))
        });
        let setup = async {
            let (reader, writer) = connect(&uri).await?;
            let mut c = WireConsumer {
                reader,
                writer: Arc::new(Mutex::new(writer)),
                rbuf: BytesMut::with_capacity(READ_CHUNK),
                frame_max: FRAME_MAX,
                silence: None,
                last_read: Instant::now(),
                read_interval: Duration::ZERO,
                read_full: false,
                pace: None,
                heartbeats: None,
                pending: None,
                ended: false,
            };
            c.handshake(&uri, o.name, heartbeat).await?;
            match then {
                After::Consume {
                    queue,
                    tag,
                    prefetch,
                } => c.start(queue, tag, prefetch).await?,
                After::Confirm => c.confirm_mode().await?,
            }
            Ok::<_, WireError>(c)
        };
        match tokio::time::timeout(o.timeout, setup).await {
            Err(_) => Err(OpenError::Timeout),
            Ok(Err(WireError::Unsupported(why))) => Err(OpenError::Url(why)),
            Ok(Err(e)) => Err(OpenError::Broker(e.into())),
            Ok(Ok(c)) => Ok(c),
        }
    }

    /// channel.open and confirm.select on channel 1.
    async fn confirm_mode(&mut self) -> Result<(), WireError> {
        self.open_channel().await?;
        let select = confirm::Select { nowait: false };
        self.call(
            AMQPClass::Confirm(confirm::AMQPMethod::Select(select)),
            "confirm.select-ok",
            |m| matches!(m, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))),
        )
        .await
    }

    async fn open_channel(&mut self) -> Result<(), WireError> {
        self.call(
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            "channel.open-ok",
            |m| matches!(m, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))),
        )
        .await
    }

    /// Sends `class` on channel 1 and expects the broker's answer `want`
    /// (`is_want` tells it).
    async fn call(
        &mut self,
        class: AMQPClass,
        want: &str,
        is_want: fn(&AMQPClass) -> bool,
    ) -> Result<(), WireError> {
        self.send(class, CHANNEL).await?;
        match self.recv_method().await? {
            answer if is_want(&answer) => Ok(()),
            other => Err(unexpected(want, &other)),
        }
    }

    async fn handshake(
        &mut self,
        uri: &AMQPUri,
        name: &str,
        heartbeat: Option<u16>,
    ) -> Result<(), WireError> {
        self.write(b"AMQP\x00\x00\x09\x01").await?;
        let start = match self.recv_method().await? {
            AMQPClass::Connection(connection::AMQPMethod::Start(s)) => s,
            other => return Err(unexpected("connection.start", &other)),
        };
        let (mechanism, response) = credentials(uri)?;
        let offered = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
        if !offered.split(' ').any(|m| m == mechanism) {
            return Err(WireError::Protocol(format!(
                "the broker offers {offered:?}, not {mechanism}"
            )));
        }
        let start_ok = connection::StartOk {
            client_properties: client_properties(name),
            mechanism: mechanism.into(),
            response,
            locale: "en_US".into(),
        };
        self.send(
            AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok)),
            0,
        )
        .await?;
        let tune = match self.recv_method().await? {
            AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
            other => return Err(unexpected("connection.tune", &other)),
        };
        let frame_max = negotiate(
            tune.frame_max,
            uri.query.frame_max.unwrap_or(FRAME_MAX).max(FRAME_MIN),
        );
        let channel_max = negotiate(
            tune.channel_max.into(),
            uri.query.channel_max.map_or(u32::from(u16::MAX), u32::from),
        );
        let heartbeat = match heartbeat {
            None => tune.heartbeat,
            Some(0) => 0,
            Some(ours) => {
                u16::try_from(negotiate(tune.heartbeat.into(), ours.into())).unwrap_or(ours)
            }
        };
        let tune_ok = connection::TuneOk {
            channel_max: u16::try_from(channel_max).unwrap_or(u16::MAX),
            frame_max,
            heartbeat,
        };
        self.send(
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok)),
            0,
        )
        .await?;
        self.frame_max = frame_max;
        if heartbeat > 0 {
            let every = Duration::from_secs(heartbeat.into());
            self.silence = Some(every * 2);
            self.heartbeats = Some(tokio::spawn(send_heartbeats(
                Arc::clone(&self.writer),
                every / 2,
            )));
        }
        let open = connection::Open {
            virtual_host: uri.vhost.as_str().into(),
        };
        self.send(AMQPClass::Connection(connection::AMQPMethod::Open(open)), 0)
            .await?;
        match self.recv_method().await? {
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => Ok(()),
            other => Err(unexpected("connection.open-ok", &other)),
        }
    }

    async fn start(&mut self, queue: &str, tag: &str, prefetch: u16) -> Result<(), WireError> {
        self.open_channel().await?;
        let qos = basic::Qos {
            prefetch_count: prefetch,
            global: false,
        };
        self.call(
            AMQPClass::Basic(basic::AMQPMethod::Qos(qos)),
            "basic.qos-ok",
            |m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))),
        )
        .await?;
        let consume = basic::Consume {
            queue: queue.into(),
            consumer_tag: tag.into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        };
        self.call(
            AMQPClass::Basic(basic::AMQPMethod::Consume(consume)),
            "basic.consume-ok",
            |m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))),
        )
        .await
    }

    /// The next delivery; `None` once the consumer is cancelled (by
    /// [`WireConsumer::cancel`] or by the broker, e.g. its queue deleted).
    pub async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        loop {
            if self.ended {
                return None;
            }
            match self.take() {
                Ok(Some(d)) => return Some(Ok(d)),
                Ok(None) if self.ended => return None,
                Ok(None) => {}
                Err(e) => return Some(Err(e.into())),
            }
            if let Err(e) = self.fill().await {
                return Some(Err(e.into()));
            }
        }
    }

    /// Reads the socket at most once per `interval` while deliveries keep
    /// coming (zero, the default, reads as soon as bytes arrive). A read
    /// that fills the buffer's room is followed by another at once, so the
    /// interval never caps the bytes a second.
    pub fn set_read_interval(&mut self, interval: Duration) {
        self.read_interval = interval;
    }

    /// Waits until `read_interval` after the last read, unless that read
    /// filled its room (cancel-safe: the deadline is kept, not the wait).
    async fn pace(&mut self) {
        if self.read_interval.is_zero() || self.read_full {
            return;
        }
        let due = self.last_read + self.read_interval;
        if due <= Instant::now() {
            return;
        }
        let sleep = self
            .pace
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if sleep.deadline() != due {
            sleep.as_mut().reset(due);
        }
        sleep.as_mut().await;
    }

    /// Reads more bytes into `rbuf` (cancel-safe).
    async fn fill(&mut self) -> Result<(), WireError> {
        self.pace().await;
        self.rbuf.reserve(READ_CHUNK);
        let room = self.rbuf.capacity() - self.rbuf.len();
        let read = self.reader.read_buf(&mut self.rbuf);
        let n = match self.silence {
            Some(limit) => tokio::time::timeout_at(self.last_read + limit, read)
                .await
                .map_err(|_| WireError::Silent(limit))??,
            None => read.await?,
        };
        self.last_read = Instant::now();
        self.read_full = n == room;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the broker closed the socket",
            )
            .into());
        }
        Ok(())
    }

    /// Handles the complete frames in `rbuf` until a delivery is complete.
    fn take(&mut self) -> Result<Option<Delivery>, WireError> {
        while let Some((kind, frame)) = cut_frame(&mut self.rbuf, self.frame_max)? {
            match kind {
                FRAME_METHOD if frame.starts_with(&DELIVER) => {
                    if self.pending.is_some() {
                        return Err(WireError::Protocol(
                            "a delivery began before the last one's body ended".into(),
                        ));
                    }
                    self.pending = Some(parse_deliver(&frame[DELIVER.len()..])?);
                }
                FRAME_METHOD => self.on_method(parse_method(&frame)?)?,
                FRAME_HEADER => {
                    let Some(p) = self.pending.as_mut().filter(|p| p.header.is_none()) else {
                        return Err(WireError::Protocol("a content header out of place".into()));
                    };
                    let h = parse_header(&frame)?;
                    let reserve = usize::try_from(h.size).unwrap_or(usize::MAX);
                    p.body.reserve(reserve.min(BODY_RESERVE_MAX));
                    p.header = Some(h);
                }
                FRAME_BODY => {
                    let Some(p) = self.pending.as_mut().filter(|p| p.header.is_some()) else {
                        return Err(WireError::Protocol("a content body out of place".into()));
                    };
                    p.body.extend_from_slice(&frame);
                }
                FRAME_HEARTBEAT => {}
                other => {
                    return Err(WireError::Protocol(format!("frame type {other}")));
                }
            }
            if let Some(d) = self.complete()? {
                return Ok(Some(d));
            }
            if self.ended {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// The pending delivery, once its body is all there.
    fn complete(&mut self) -> Result<Option<Delivery>, WireError> {
        let Some(p) = self.pending.as_ref() else {
            return Ok(None);
        };
        let Some(want) = p.header.as_ref().map(|h| h.size) else {
            return Ok(None);
        };
        let have = p.body.len() as u64;
        if have < want {
            return Ok(None);
        }
        if have > want {
            return Err(WireError::Protocol(format!(
                "a body of {have} bytes where the header said {want}"
            )));
        }
        let Some(p) = self.pending.take() else {
            return Ok(None);
        };
        let Some(h) = p.header else { return Ok(None) };
        Ok(Some(Delivery {
            tag: p.tag,
            redelivered: p.redelivered,
            data: p.body,
            message_id: h.message_id,
            timestamp: h.timestamp,
            headers: h.headers,
        }))
    }

    fn on_method(&mut self, class: AMQPClass) -> Result<(), WireError> {
        if let Some(closed) = closed_by_broker(&class) {
            let (close_ok, on) = close_ok_for(&class);
            self.reply_in_background(close_ok, on);
            return Err(closed);
        }
        match class {
            AMQPClass::Basic(basic::AMQPMethod::Cancel(_) | basic::AMQPMethod::CancelOk(_)) => {
                self.ended = true;
            }
            // Blocked / unblocked concern publishers; nothing else is
            // expected on a consuming channel and none of it loses a job.
            other => tracing::debug!(method = ?other, "AMQP consumer: ignored a method"),
        }
        Ok(())
    }

    /// Sends `class` from a task of its own (from `next`, which may be
    /// cancelled at any await, a write must not be cut short).
    fn reply_in_background(&self, class: AMQPClass, channel: u16) {
        let writer = Arc::clone(&self.writer);
        tokio::spawn(async move {
            if let Ok(frame) = method_frame(&class, channel) {
                let mut w = writer.lock().await;
                let _ = w.write_all(&frame).await;
                let _ = w.flush().await;
            }
        });
    }

    pub async fn ack(&self, tag: u64, multiple: bool) -> Result<(), Error> {
        let ack = basic::Ack {
            delivery_tag: tag,
            multiple,
        };
        Ok(self
            .send(AMQPClass::Basic(basic::AMQPMethod::Ack(ack)), CHANNEL)
            .await?)
    }

    pub async fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), Error> {
        let nack = basic::Nack {
            delivery_tag: tag,
            multiple,
            requeue,
        };
        Ok(self
            .send(AMQPClass::Basic(basic::AMQPMethod::Nack(nack)), CHANNEL)
            .await?)
    }

    /// Asks the broker to stop delivering; [`WireConsumer::next`] returns
    /// `None` once it agreed (deliveries sent before that still come).
    pub async fn cancel(&self, tag: &str) -> Result<(), Error> {
        let cancel = basic::Cancel {
            consumer_tag: tag.into(),
            nowait: false,
        };
        Ok(self
            .send(AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)), CHANNEL)
            .await?)
    }

    /// Closes the connection (200, `why`) and waits for the broker's
    /// close-ok; acks written before it are taken first (frames are
    /// handled in order).
    pub async fn close(&mut self, why: &str) -> Result<(), Error> {
        let close = connection::Close {
            reply_code: 200,
            reply_text: why.into(),
            class_id: 0,
            method_id: 0,
        };
        self.send(
            AMQPClass::Connection(connection::AMQPMethod::Close(close)),
            0,
        )
        .await?;
        loop {
            while let Some((kind, frame)) = cut_frame(&mut self.rbuf, self.frame_max)? {
                if kind != FRAME_METHOD || frame.starts_with(&DELIVER) {
                    continue;
                }
                if let Ok(AMQPClass::Connection(m)) = parse_method(&frame) {
                    if matches!(
                        m,
                        connection::AMQPMethod::CloseOk(_) | connection::AMQPMethod::Close(_)
                    ) {
                        return Ok(());
                    }
                }
            }
            match self.fill().await {
                Ok(()) => {}
                // The broker may drop the socket right after its close-ok.
                Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn send(&self, class: AMQPClass, channel: u16) -> Result<(), WireError> {
        let frame = method_frame(&class, channel)?;
        self.write(&frame).await
    }

    async fn write(&self, bytes: &[u8]) -> Result<(), WireError> {
        let mut w = self.writer.lock().await;
        w.write_all(bytes).await?;
        w.flush().await?;
        Ok(())
    }

    /// The next method frame during the handshake (heartbeats skipped); a
    /// close from the broker is its refusal.
    async fn recv_method(&mut self) -> Result<AMQPClass, WireError> {
        loop {
            while let Some((kind, frame)) = cut_frame(&mut self.rbuf, self.frame_max)? {
                match kind {
                    FRAME_HEARTBEAT => {}
                    FRAME_METHOD => {
                        let class = parse_method(&frame)?;
                        return match closed_by_broker(&class) {
                            Some(refused) => Err(refused),
                            None => Ok(class),
                        };
                    }
                    other => {
                        return Err(WireError::Protocol(format!(
                            "frame type {other} before the consumer started"
                        )))
                    }
                }
            }
            self.fill().await?;
        }
    }
}

/// Opens the TCP (and, for `amqps`, TLS) connection, split in halves.
async fn connect(uri: &AMQPUri) -> Result<(Reader, Writer), WireError> {
    let host = uri.authority.host.as_str();
    let tcp = TcpStream::connect((host, uri.authority.port)).await?;
    tcp.set_nodelay(true)?;
    match uri.scheme {
        AMQPScheme::AMQP => {
            let (r, w) = tcp.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        AMQPScheme::AMQPS => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| WireError::Protocol(format!("TLS: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| WireError::Unsupported(format!("TLS server name {host:?}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            let (r, w) = tokio::io::split(tls);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

/// Sends a heartbeat frame every `every` until the connection fails.
async fn send_heartbeats(writer: Arc<Mutex<Writer>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut w = writer.lock().await;
        if w.write_all(&HEARTBEAT).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
}

/// The SASL mechanism and response for the URL's user.
fn credentials(uri: &AMQPUri) -> Result<(&'static str, LongString), WireError> {
    let user = &uri.authority.userinfo;
    match uri.query.auth_mechanism.unwrap_or_default() {
        SASLMechanism::Plain => {
            let response = format!("\u{0}{}\u{0}{}", user.username, user.password);
            Ok(("PLAIN", response.into_bytes().into()))
        }
        SASLMechanism::AMQPlain => {
            // A field table without its length prefix.
            let mut t = FieldTable::default();
            t.insert("LOGIN".into(), long_string(&user.username));
            t.insert("PASSWORD".into(), long_string(&user.password));
            let (bytes, _) = gen(lapin::types::generation::gen_field_table(&t), Vec::new())
                .map_err(|e| WireError::Protocol(format!("AMQPLAIN response: {e:?}")))?;
            Ok((
                "AMQPLAIN",
                bytes.get(4..).unwrap_or_default().to_vec().into(),
            ))
        }
        other => Err(WireError::Unsupported(format!(
            "auth_mechanism {other:?} is not supported (PLAIN and AMQPLAIN are)"
        ))),
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn client_properties(name: &str) -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "consumer_cancel_notify",
        "authentication_failure_close",
        "basic.nack",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut t = FieldTable::default();
    t.insert("product".into(), long_string("pushgate"));
    t.insert("version".into(), long_string(env!("CARGO_PKG_VERSION")));
    t.insert("platform".into(), long_string("Rust"));
    t.insert("connection_name".into(), long_string(name));
    t.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    t
}

/// The smaller of two limits where 0 means none.
fn negotiate(theirs: u32, ours: u32) -> u32 {
    match (theirs, ours) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// A method frame's class and arguments (lapin's parser: not hot).
fn parse_method(frame: &[u8]) -> Result<AMQPClass, WireError> {
    parse_class(frame)
        .map(|(_, class)| class)
        .map_err(|e| WireError::Protocol(format!("a method frame: {e}")))
}

/// The error a channel.close or connection.close from the broker means.
fn closed_by_broker(class: &AMQPClass) -> Option<WireError> {
    match class {
        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => Some(WireError::ChannelClosed {
            code: c.reply_code,
            text: c.reply_text.as_str().to_owned(),
        }),
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
            Some(WireError::ConnectionClosed {
                code: c.reply_code,
                text: c.reply_text.as_str().to_owned(),
            })
        }
        _ => None,
    }
}

/// The close-ok answering a channel.close (on [`CHANNEL`]) or a
/// connection.close (on channel 0), and its channel.
fn close_ok_for(close: &AMQPClass) -> (AMQPClass, u16) {
    match close {
        AMQPClass::Channel(_) => (
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
            CHANNEL,
        ),
        _ => (
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
            0,
        ),
    }
}

fn unexpected(wanted: &str, got: &AMQPClass) -> WireError {
    WireError::Protocol(format!("expected {wanted}, got {got:?}"))
}

/// A method frame on `channel`.
fn method_frame(class: &AMQPClass, channel: u16) -> Result<Vec<u8>, WireError> {
    let mut frame = Vec::with_capacity(64);
    frame.push(FRAME_METHOD);
    frame.extend_from_slice(&channel.to_be_bytes());
    frame.extend_from_slice(&[0; 4]);
    let (mut frame, _) = gen(gen_class(class), frame)
        .map_err(|e| WireError::Protocol(format!("encoding {class:?}: {e:?}")))?;
    let size = u32::try_from(frame.len() - FRAME_HEAD)
        .map_err(|_| WireError::Protocol("a method frame over 4 GiB".into()))?;
    frame[3..FRAME_HEAD].copy_from_slice(&size.to_be_bytes());
    frame.push(FRAME_END);
    Ok(frame)
}

/// Cuts the next complete frame (type and payload) out of `buf`.
fn cut_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<(u8, BytesMut)>, WireError> {
    let Some(head) = buf.get(..FRAME_HEAD) else {
        return Ok(None);
    };
    let kind = head[0];
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let total = FRAME_HEAD + size + 1;
    // frame_max counts the whole frame, head and end octet included.
    if total > frame_max as usize {
        return Err(WireError::Protocol(format!(
            "a frame of {total} bytes, over frame_max {frame_max}"
        )));
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(WireError::Protocol("a frame without its end octet".into()));
    }
    let mut frame = buf.split_to(total);
    frame.advance(FRAME_HEAD);
    frame.truncate(size);
    Ok(Some((kind, frame)))
}

/// A cursor over a frame's payload.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Protocol("a frame cut short".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn short_str(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u8()?;
        self.take(n.into())
    }
}

/// basic.deliver's arguments (after class and method ids).
fn parse_deliver(args: &[u8]) -> Result<Pending, WireError> {
    let mut c = Cur(args);
    c.short_str()?; // consumer tag: one consumer per connection
    let tag = c.u64()?;
    let redelivered = c.u8()? & 1 == 1;
    c.short_str()?; // exchange
    c.short_str()?; // routing key
    Ok(Pending {
        tag,
        redelivered,
        header: None,
        body: Vec::new(),
    })
}

/// Property flags of basic's content header, highest bit first.
mod flag {
    pub const CONTENT_TYPE: u16 = 1 << 15;
    pub const CONTENT_ENCODING: u16 = 1 << 14;
    pub const HEADERS: u16 = 1 << 13;
    pub const DELIVERY_MODE: u16 = 1 << 12;
    pub const PRIORITY: u16 = 1 << 11;
    pub const CORRELATION_ID: u16 = 1 << 10;
    pub const REPLY_TO: u16 = 1 << 9;
    pub const EXPIRATION: u16 = 1 << 8;
    pub const MESSAGE_ID: u16 = 1 << 7;
    pub const TIMESTAMP: u16 = 1 << 6;
    /// type, user id, app id, cluster id: short strings.
    pub const LAST_FOUR: [u16; 4] = [1 << 5, 1 << 4, 1 << 3, 1 << 2];
    /// More flag words follow (never in basic's 14 properties).
    pub const CONTINUED: u16 = 1;
}

/// A content header frame: body size, message id, timestamp, headers.
fn parse_header(payload: &[u8]) -> Result<Header, WireError> {
    let mut c = Cur(payload);
    let class = c.u16()?;
    if class != 60 {
        return Err(WireError::Protocol(format!(
            "a content header of class {class}"
        )));
    }
    c.u16()?; // weight
    let size = c.u64()?;
    let flags = c.u16()?;
    if flags & flag::CONTINUED != 0 {
        return Err(WireError::Protocol("continued property flags".into()));
    }
    let mut h = Header {
        size,
        message_id: None,
        timestamp: None,
        headers: None,
    };
    for f in [flag::CONTENT_TYPE, flag::CONTENT_ENCODING] {
        if flags & f != 0 {
            c.short_str()?;
        }
    }
    if flags & flag::HEADERS != 0 {
        let len = c.u32()? as usize;
        let body = c.take(len)?;
        let mut whole = Vec::with_capacity(4 + len);
        whole.extend_from_slice(&(len as u32).to_be_bytes());
        whole.extend_from_slice(body);
        let (_, table) = parse_field_table(&whole[..])
            .map_err(|e| WireError::Protocol(format!("message headers: {e}")))?;
        h.headers = Some(table);
    }
    for f in [flag::DELIVERY_MODE, flag::PRIORITY] {
        if flags & f != 0 {
            c.u8()?;
        }
    }
    for f in [flag::CORRELATION_ID, flag::REPLY_TO, flag::EXPIRATION] {
        if flags & f != 0 {
            c.short_str()?;
        }
    }
    if flags & flag::MESSAGE_ID != 0 {
        h.message_id = Some(String::from_utf8_lossy(c.short_str()?).into_owned());
    }
    if flags & flag::TIMESTAMP != 0 {
        h.timestamp = Some(c.u64()?);
    }
    for f in flag::LAST_FOUR {
        if flags & f != 0 {
            c.short_str()?;
        }
    }
    Ok(h)
}

/// A content header frame's payload: class basic, `size` bytes of body,
/// and `props` as lapin publishes them (persistent JSON).
fn header_payload(props: Props, message_id: Option<&str>, size: u64) -> Result<Vec<u8>, WireError> {
    let mut p = props.lapin();
    if let Some(id) = message_id {
        p = p.with_message_id(ShortString::from(id));
    }
    let mut start = Vec::with_capacity(64);
    start.extend_from_slice(&[0, 60, 0, 0]);
    start.extend_from_slice(&size.to_be_bytes());
    let (bytes, _) = gen(lapin::protocol::basic::gen_properties(&p), start)
        .map_err(|e| WireError::Protocol(format!("encoding message properties: {e:?}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f.push(FRAME_END);
        f
    }

    fn deliver_frame(tag: u64, redelivered: bool) -> Vec<u8> {
        let d = basic::Deliver {
            consumer_tag: "c".into(),
            delivery_tag: tag,
            redelivered,
            exchange: "".into(),
            routing_key: "jobs".into(),
        };
        method_frame(&AMQPClass::Basic(basic::AMQPMethod::Deliver(d)), CHANNEL)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn frames_are_cut_only_when_whole_and_checked() {
        let mut buf = BytesMut::new();
        let f = frame(FRAME_BODY, 1, b"abc");
        buf.extend_from_slice(&f[..5]);
        assert!(matches!(cut_frame(&mut buf, FRAME_MAX), Ok(None)));
        buf.extend_from_slice(&f[5..]);
        buf.extend_from_slice(&HEARTBEAT);
        let (kind, payload) = cut_frame(&mut buf, FRAME_MAX)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a whole frame"));
        assert_eq!((kind, &payload[..]), (FRAME_BODY, &b"abc"[..]));
        let (kind, payload) = cut_frame(&mut buf, FRAME_MAX)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a heartbeat"));
        assert_eq!((kind, payload.len()), (FRAME_HEARTBEAT, 0));
        assert!(buf.is_empty());

        let mut bad = BytesMut::from(&frame(FRAME_BODY, 1, b"abc")[..]);
        let end = bad.len() - 1;
        bad[end] = 0;
        assert!(cut_frame(&mut bad, FRAME_MAX).is_err());
        let mut big = BytesMut::from(&frame(FRAME_BODY, 1, &[0; 5000])[..]);
        assert!(cut_frame(&mut big, FRAME_MIN).is_err());
    }

    #[test]
    fn method_frames_round_trip_through_lapins_parser() {
        let ack = basic::Ack {
            delivery_tag: 77,
            multiple: true,
        };
        let f = method_frame(&AMQPClass::Basic(basic::AMQPMethod::Ack(ack)), CHANNEL)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = BytesMut::from(&f[..]);
        let (kind, payload) = cut_frame(&mut buf, FRAME_MAX)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a frame"));
        assert_eq!(kind, FRAME_METHOD);
        match parse_class(&payload[..]) {
            Ok((_, AMQPClass::Basic(basic::AMQPMethod::Ack(a)))) => {
                assert_eq!((a.delivery_tag, a.multiple), (77, true));
            }
            other => panic!("{other:?}"),
        }
        let d = deliver_frame(9, true);
        let p = parse_deliver(&d[FRAME_HEAD + DELIVER.len()..d.len() - 1])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.tag, p.redelivered), (9, true));
    }

    #[test]
    fn content_headers_give_size_id_timestamp_and_headers() {
        let headers = Table::new()
            .int("x-pushgate-attempt", 3)
            .text("x-pushgate-job-id", "j1");
        let props = Props {
            headers,
            timestamp: Some(1_700_000_000),
        };
        let h = parse_header(
            &header_payload(props, Some("m-1"), 1234).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.size, 1234);
        assert_eq!(h.message_id.as_deref(), Some("m-1"));
        assert_eq!(h.timestamp, Some(1_700_000_000));
        let d = Delivery {
            tag: 1,
            redelivered: false,
            data: Vec::new(),
            message_id: h.message_id,
            timestamp: h.timestamp,
            headers: h.headers,
        };
        assert_eq!(d.header_int("x-pushgate-attempt"), Some(3));
        assert_eq!(d.header_text("x-pushgate-job-id").as_deref(), Some("j1"));

        let bare = parse_header(
            &header_payload(Props::default(), None, 0).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (bare.size, bare.message_id, bare.timestamp),
            (0, None, None)
        );
        assert!(parse_header(&[0, 60, 0]).is_err());
    }

    #[test]
    fn limits_where_zero_is_none() {
        assert_eq!(negotiate(0, 10), 10);
        assert_eq!(negotiate(60, 0), 60);
        assert_eq!(negotiate(60, 10), 10);
    }

    /// Reads one whole frame from a scripted peer's socket: (type, payload).
    async fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; FRAME_HEAD];
        s.read_exact(&mut head).await.ok()?;
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut rest = vec![0u8; size + 1];
        s.read_exact(&mut rest).await.ok()?;
        rest.truncate(size);
        Some((head[0], rest))
    }

    /// A peer that answers the handshake, announces 1 s heartbeats, then
    /// stays silent (as a hung broker or a dead network path would), and
    /// counts the heartbeats it receives.
    async fn silent_peer(listener: tokio::net::TcpListener) -> usize {
        let (mut s, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let mut header = [0u8; 8];
        s.read_exact(&mut header)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&header, b"AMQP\x00\x00\x09\x01");
        let start = connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::default(),
            mechanisms: LongString::from("PLAIN"),
            locales: LongString::from("en_US"),
        };
        let tune = connection::Tune {
            channel_max: 0,
            frame_max: FRAME_MAX,
            heartbeat: 1,
        };
        let script: [(u16, AMQPClass); 5] = [
            (
                0,
                AMQPClass::Connection(connection::AMQPMethod::Start(start)),
            ),
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune))),
            (
                0,
                AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
            ),
            (
                CHANNEL,
                AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
            ),
            (
                CHANNEL,
                AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
            ),
        ];
        // start -> start-ok, tune -> tune-ok + open, open-ok -> channel.open,
        // channel.open-ok -> qos, qos-ok -> consume.
        let answers = [1, 2, 1, 1, 1];
        for ((channel, class), reads) in script.into_iter().zip(answers) {
            let frame = method_frame(&class, channel).unwrap_or_else(|e| panic!("{e}"));
            s.write_all(&frame).await.unwrap_or_else(|e| panic!("{e}"));
            for _ in 0..reads {
                let frame = read_frame(&mut s).await;
                assert_eq!(frame.map(|f| f.0), Some(FRAME_METHOD));
            }
        }
        let ok = basic::ConsumeOk {
            consumer_tag: "t".into(),
        };
        let frame = method_frame(&AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)), CHANNEL)
            .unwrap_or_else(|e| panic!("{e}"));
        s.write_all(&frame).await.unwrap_or_else(|e| panic!("{e}"));
        let mut heartbeats = 0;
        while let Ok(Some((kind, _))) =
            tokio::time::timeout(Duration::from_secs(5), read_frame(&mut s)).await
        {
            if kind == FRAME_HEARTBEAT {
                heartbeats += 1;
            }
        }
        heartbeats
    }

    #[tokio::test]
    async fn a_silent_broker_ends_the_consumer_after_two_heartbeat_intervals() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let peer = tokio::spawn(silent_peer(listener));
        let url = format!("amqp://u:p@127.0.0.1:{port}/%2f");
        let open = Open {
            url: &url,
            name: "silence-test",
            heartbeat: Some(Duration::from_secs(30)),
            timeout: Duration::from_secs(5),
        };
        let mut c = WireConsumer::open(open, "q", "t", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        // Dropped and polled again, as the worker's select does: the silence
        // still counts from the broker's last byte.
        for _ in 0..6 {
            assert!(tokio::time::timeout(Duration::from_millis(300), c.next())
                .await
                .is_err());
        }
        let end = tokio::time::timeout(Duration::from_secs(5), c.next())
            .await
            .unwrap_or_else(|_| panic!("no end within 5 s"));
        let waited = started.elapsed();
        match end {
            Some(Err(e)) => assert!(e.to_string().contains("no frame"), "{e}"),
            other => panic!("{:?}", other.map(|r| r.map(|d| d.tag))),
        }
        // The broker's 1 s wins over the asked 30 s: silent for 2 s.
        assert!(waited >= Duration::from_millis(1800), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        drop(c);
        let heartbeats = peer.await.unwrap_or_default();
        assert!(heartbeats >= 3, "one every half second: {heartbeats}");
    }
}
