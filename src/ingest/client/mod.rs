//! The AMQP client behind a small API of pushgate's own: connections,
//! channels, consumers, acks, publishing with publisher confirms and
//! declarations. Everything else in `ingest` (and the demo) speaks this API.
//!
//! Two clients sit behind it:
//! - pushgate's own, on the tokio runtime (`wire.rs`), for the hot path:
//!   [`WireConsumer`] consumes the input queues (one delivery per job; it
//!   took 14% of the instructions off a single-recipient job,
//!   docs/benchmarks.md round 5), and [`WirePublisher`] publishes the
//!   result batches with confirms (lapin's I/O thread off their path:
//!   +7% single-recipient jobs/s, round 8).
//! - lapin, in this file only, does the rest: declarations, publishing
//!   with confirms for retries and dead letters, and the control and
//!   events consumers. (amqprs, measured faster than lapin, closes its
//!   connection on a header that is not UTF-8: ruled out in round 4.)
//!
//! Every message pushgate publishes is persistent JSON; header tables hold
//! integers and text only.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, ConnectionProperties};

mod wire;

pub use wire::{WireConsumer, WirePublisher};

/// A broker or connection failure; the session that met it ends.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(Repr);

#[derive(Debug, thiserror::Error)]
enum Repr {
    #[error(transparent)]
    Lapin(lapin::Error),
    #[error(transparent)]
    Wire(wire::WireError),
}

impl From<lapin::Error> for Error {
    fn from(e: lapin::Error) -> Error {
        Error(Repr::Lapin(e))
    }
}

impl From<wire::WireError> for Error {
    fn from(e: wire::WireError) -> Error {
        Error(Repr::Wire(e))
    }
}

/// Checks an `amqp://` / `amqps://` URL without connecting.
pub fn check_url(url: &str) -> Result<(), String> {
    url.parse::<AMQPUri>().map(|_| ())
}

/// The host and port an AMQP URL points at.
pub fn host_port(url: &str) -> Option<String> {
    let uri = url.parse::<AMQPUri>().ok()?;
    Some(format!("{}:{}", uri.authority.host, uri.authority.port))
}

/// How a connection is opened.
#[derive(Debug, Clone, Copy)]
pub struct Open<'a> {
    pub url: &'a str,
    /// Shown in the management UI.
    pub name: &'a str,
    /// Used unless the URL sets `heartbeat`.
    pub heartbeat: Option<Duration>,
    pub timeout: Duration,
}

/// One connection to the broker.
pub struct Connection {
    inner: lapin::Connection,
}

/// A connection that did not open in time, or failed to.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("amqp.url: {0}")]
    Url(String),
    #[error("connecting to the broker timed out")]
    Timeout,
    #[error("broker: {0}")]
    Broker(#[from] Error),
}

impl Connection {
    pub async fn open(o: Open<'_>) -> Result<Connection, OpenError> {
        let mut uri: AMQPUri = o.url.parse().map_err(OpenError::Url)?;
        if uri.query.heartbeat.is_none() {
            if let Some(h) = o.heartbeat {
                uri.query.heartbeat = Some(u16::try_from(h.as_secs()).unwrap_or(u16::MAX));
            }
        }
        let props = ConnectionProperties::default().with_connection_name(o.name.into());
        let inner = tokio::time::timeout(o.timeout, lapin::Connection::connect_uri(uri, props))
            .await
            .map_err(|_| OpenError::Timeout)?
            .map_err(Error::from)?;
        Ok(Connection { inner })
    }

    pub async fn channel(&self) -> Result<Channel, Error> {
        Ok(Channel {
            inner: self.inner.create_channel().await?,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.inner.status().connected()
    }

    /// Closes with 200 and `why`, waiting for the broker's answer.
    pub async fn close(&self, why: &str) -> Result<(), Error> {
        Ok(self.inner.close(200, why.into()).await?)
    }
}

/// The kinds of exchange pushgate declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Topic,
    Headers,
    Fanout,
}

/// A queue's binding to an exchange.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub queue: &'a str,
    pub exchange: &'a str,
    pub key: &'a str,
}

/// How a queue is declared.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueOpts {
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    /// Only check that it exists (a failure closes the channel).
    pub passive: bool,
}

impl QueueOpts {
    pub fn durable() -> QueueOpts {
        QueueOpts {
            durable: true,
            ..QueueOpts::default()
        }
    }
}

/// A header or argument value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(i64),
    Text(String),
    Timestamp(u64),
}

/// Message headers or declaration arguments, in insertion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table(Vec<(String, Value)>);

impl Table {
    pub fn new() -> Table {
        Table::default()
    }

    pub fn int(mut self, key: &str, v: i64) -> Table {
        self.0.push((key.to_owned(), Value::Int(v)));
        self
    }

    pub fn text(mut self, key: &str, v: &str) -> Table {
        self.0.push((key.to_owned(), Value::Text(v.to_owned())));
        self
    }

    pub fn timestamp(mut self, key: &str, secs: u64) -> Table {
        self.0.push((key.to_owned(), Value::Timestamp(secs)));
        self
    }

    fn lapin(self) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in self.0 {
            let v = match v {
                Value::Int(n) => AMQPValue::LongLongInt(n),
                Value::Text(s) => AMQPValue::LongString(LongString::from(s.into_bytes())),
                Value::Timestamp(s) => AMQPValue::Timestamp(s),
            };
            t.insert(k.into(), v);
        }
        t
    }
}

/// The properties of a published message besides its headers (all are
/// persistent `application/json`).
#[derive(Debug, Clone, Default)]
pub struct Props {
    pub headers: Table,
    /// The AMQP `timestamp` property, in seconds.
    pub timestamp: Option<u64>,
}

impl Props {
    pub fn headers(headers: Table) -> Props {
        Props {
            headers,
            timestamp: None,
        }
    }

    fn lapin(self) -> BasicProperties {
        let mut p = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        if !self.headers.0.is_empty() {
            p = p.with_headers(self.headers.lapin());
        }
        if let Some(t) = self.timestamp {
            p = p.with_timestamp(t);
        }
        p
    }
}

/// A broker's answer to one publish, to be awaited.
pub struct Confirm(ConfirmRepr);

enum ConfirmRepr {
    Lapin(lapin::PublisherConfirm),
    Wire(tokio::sync::oneshot::Receiver<wire::Answer>),
}

impl Confirm {
    /// `true` when the broker took the message (ack), `false` on a nack.
    pub async fn wait(self) -> Result<bool, Error> {
        match self.0 {
            ConfirmRepr::Lapin(c) => Ok(c.await?.is_ack()),
            ConfirmRepr::Wire(rx) => match rx.await {
                Ok(Ok(ack)) => Ok(ack),
                Ok(Err(why)) => Err(wire::WireError::Lost(why).into()),
                Err(_) => Err(wire::WireError::Lost("the publisher stopped".into()).into()),
            },
        }
    }
}

/// One received message.
pub struct Delivery {
    pub tag: u64,
    pub redelivered: bool,
    pub data: Vec<u8>,
    message_id: Option<String>,
    /// The `timestamp` property, in seconds.
    timestamp: Option<u64>,
    headers: Option<FieldTable>,
}

impl Delivery {
    /// A delivery carrying `headers`, for unit tests of header handling.
    #[cfg(test)]
    pub fn with_headers(headers: Table) -> Delivery {
        Delivery {
            tag: 1,
            redelivered: false,
            data: Vec::new(),
            message_id: None,
            timestamp: None,
            headers: Some(headers.lapin()),
        }
    }

    fn from_lapin(d: lapin::message::Delivery) -> Delivery {
        let p = d.properties;
        Delivery {
            tag: d.delivery_tag,
            redelivered: d.redelivered,
            data: d.data,
            message_id: p.message_id().as_ref().map(|m| m.as_str().to_owned()),
            timestamp: *p.timestamp(),
            headers: p.headers().clone(),
        }
    }

    pub fn message_id(&self) -> Option<String> {
        self.message_id.clone()
    }

    /// The `timestamp` property, in seconds.
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }

    fn header(&self, key: &str) -> Option<&AMQPValue> {
        self.headers.as_ref()?.inner().get(key)
    }

    /// A header holding a non-negative integer of any width.
    pub fn header_int(&self, key: &str) -> Option<u64> {
        let n: i128 = match self.header(key)? {
            AMQPValue::ShortShortInt(n) => (*n).into(),
            AMQPValue::ShortShortUInt(n) => (*n).into(),
            AMQPValue::ShortInt(n) => (*n).into(),
            AMQPValue::ShortUInt(n) => (*n).into(),
            AMQPValue::LongInt(n) => (*n).into(),
            AMQPValue::LongUInt(n) => (*n).into(),
            AMQPValue::LongLongInt(n) => (*n).into(),
            AMQPValue::Timestamp(n) => (*n).into(),
            _ => return None,
        };
        u64::try_from(n).ok()
    }

    /// A header holding text (long or short string).
    pub fn header_text(&self, key: &str) -> Option<String> {
        match self.header(key)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }
    }
}

/// The deliveries of one consumer.
pub struct Consumer(lapin::Consumer);

impl Consumer {
    /// The next delivery; `None` once the consumer or its channel is gone.
    pub async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        let d = match self.0.next().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e.into())),
        };
        Some(Ok(Delivery::from_lapin(d)))
    }
}

/// One channel; cheap to clone (clones share it).
#[derive(Clone)]
pub struct Channel {
    inner: lapin::Channel,
}

impl Channel {
    pub async fn qos(&self, prefetch: u16) -> Result<(), Error> {
        Ok(self
            .inner
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?)
    }

    /// Puts the channel in confirm mode (every publish gets an answer).
    pub async fn confirm_select(&self) -> Result<(), Error> {
        Ok(self
            .inner
            .confirm_select(ConfirmSelectOptions::default())
            .await?)
    }

    /// Consumes `queue` with manual acks.
    pub async fn consume(&self, queue: &str, tag: &str, args: Table) -> Result<Consumer, Error> {
        let c = self
            .inner
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                args.lapin(),
            )
            .await?;
        Ok(Consumer(c))
    }

    pub async fn ack(&self, tag: u64, multiple: bool) -> Result<(), Error> {
        Ok(self
            .inner
            .basic_ack(tag, BasicAckOptions { multiple })
            .await?)
    }

    pub async fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), Error> {
        let opts = BasicNackOptions { multiple, requeue };
        Ok(self.inner.basic_nack(tag, opts).await?)
    }

    pub async fn cancel(&self, consumer_tag: &str) -> Result<(), Error> {
        Ok(self
            .inner
            .basic_cancel(consumer_tag.into(), BasicCancelOptions::default())
            .await?)
    }

    /// Closes with 200 and `why`, waiting for the broker's answer.
    pub async fn close(&self, why: &str) -> Result<(), Error> {
        Ok(self.inner.close(200, why.into()).await?)
    }

    /// Publishes one persistent JSON message; the [`Confirm`] resolves when
    /// the broker answers (on a channel in confirm mode).
    pub async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: Props,
    ) -> Result<Confirm, Error> {
        let c = self
            .inner
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                props.lapin(),
            )
            .await?;
        Ok(Confirm(ConfirmRepr::Lapin(c)))
    }

    /// Declares a durable exchange.
    pub async fn declare_exchange(&self, name: &str, kind: ExchangeKind) -> Result<(), Error> {
        let kind = match kind {
            ExchangeKind::Topic => lapin::ExchangeKind::Topic,
            ExchangeKind::Headers => lapin::ExchangeKind::Headers,
            ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
        };
        let opts = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        Ok(self
            .inner
            .exchange_declare(name.into(), kind, opts, FieldTable::default())
            .await?)
    }

    /// Declares a queue; returns its name (the broker's, for `""`).
    pub async fn declare_queue(
        &self,
        name: &str,
        o: QueueOpts,
        args: Table,
    ) -> Result<String, Error> {
        let opts = QueueDeclareOptions {
            durable: o.durable,
            exclusive: o.exclusive,
            auto_delete: o.auto_delete,
            passive: o.passive,
            nowait: false,
        };
        let q = self
            .inner
            .queue_declare(name.into(), opts, args.lapin())
            .await?;
        Ok(q.name().as_str().to_owned())
    }

    /// Binds `b.queue` to `b.exchange` with `b.key` and `args`.
    pub async fn bind_queue(&self, b: Binding<'_>, args: Table) -> Result<(), Error> {
        let opts = QueueBindOptions::default();
        Ok(self
            .inner
            .queue_bind(
                b.queue.into(),
                b.exchange.into(),
                b.key.into(),
                opts,
                args.lapin(),
            )
            .await?)
    }

    /// Removes the binding `b` with `args` (a no-op when there is none).
    pub async fn unbind_queue(&self, b: Binding<'_>, args: Table) -> Result<(), Error> {
        Ok(self
            .inner
            .queue_unbind(
                b.queue.into(),
                b.exchange.into(),
                b.key.into(),
                args.lapin(),
            )
            .await?)
    }

    pub async fn delete_queue(&self, name: &str) -> Result<(), Error> {
        self.inner
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await?;
        Ok(())
    }

    pub async fn delete_exchange(&self, name: &str) -> Result<(), Error> {
        Ok(self
            .inner
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_give_their_address() {
        assert!(check_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(check_url("http://x").is_err());
        assert_eq!(
            host_port("amqp://u:p@rabbit.internal:5673/vh").as_deref(),
            Some("rabbit.internal:5673")
        );
        assert_eq!(host_port("amqps://rabbit").as_deref(), Some("rabbit:5671"));
    }
}
