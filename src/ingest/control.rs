//! Control messages (campaign stop / resume) on the `pushgate.control`
//! fanout exchange: their topology, the [`Publisher`] the CLI and the admin
//! API use, and the [`Listener`] every replica runs.
//!
//! Bodies: `{"stop_campaign": "id"}`, `{"resume_campaign": "id"}` (the
//! contract), and `{"sync": "<nonce>"}`, a marker a replica publishes to
//! itself at start (other consumers ignore it). The AMQP `timestamp`
//! property says when a stop was issued.
//!
//! Every replica must see every message, also after a restart: the
//! exchange feeds a RabbitMQ stream queue (`amqp.control_queue`,
//! `x-max-age` = `amqp.control_remember`). Streams are read without being
//! consumed, so each replica reads the whole log from
//! `now - control_remember` at start, applies it in order, and only then
//! consumes jobs: it knows it has caught up when its own sync marker comes
//! back. Other tools may still bind their own queues to the exchange.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde_json::{Map, Value};

use super::IngestError;
use crate::config::AmqpConfig;
use crate::policy::stops::StopRegistry;

/// How long a starting replica waits for its sync marker before it goes on
/// (with a warning) anyway.
const CATCH_UP: Duration = Duration::from_secs(10);
/// Stream segments: small, so that `x-max-age` retention is fine-grained.
const SEGMENT_BYTES: i64 = 1024 * 1024;

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Stop(String),
    Resume(String),
    Sync(String),
}

impl Control {
    /// Parses a body; `None` for anything else (ignored).
    pub fn parse(body: &[u8]) -> Option<Control> {
        let map: Map<String, Value> = serde_json::from_slice(body).ok()?;
        let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_owned);
        if let Some(c) = text("stop_campaign").filter(|c| valid_campaign(c)) {
            return Some(Control::Stop(c));
        }
        if let Some(c) = text("resume_campaign").filter(|c| valid_campaign(c)) {
            return Some(Control::Resume(c));
        }
        text("sync").map(Control::Sync)
    }

    pub fn body(&self) -> Vec<u8> {
        let (k, v) = match self {
            Control::Stop(c) => ("stop_campaign", c),
            Control::Resume(c) => ("resume_campaign", c),
            Control::Sync(n) => ("sync", n),
        };
        serde_json::json!({ k: v }).to_string().into_bytes()
    }
}

/// A campaign id as jobs allow it: 1-128 characters, no control characters.
pub fn valid_campaign(c: &str) -> bool {
    !c.is_empty() && c.chars().count() <= 128 && !c.chars().any(char::is_control)
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Declares the fanout exchange, the stream queue and the binding. An
/// existing stream is left as it is (a changed `control_remember` would
/// otherwise fail the declaration: change a live stream with a policy).
pub async fn declare(conn: &Connection, amqp: &AmqpConfig) -> Result<(), IngestError> {
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        amqp.control_exchange.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    let name = amqp.control_queue.as_str();
    let ch = declare_stream(conn, ch, amqp).await?;
    ch.queue_bind(
        name.into(),
        amqp.control_exchange.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = super::close_channel(&ch, "declared").await;
    Ok(())
}

/// Declares the stream unless it exists; returns an open channel.
async fn declare_stream(
    conn: &Connection,
    ch: Channel,
    amqp: &AmqpConfig,
) -> Result<Channel, IngestError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let name = amqp.control_queue.as_str();
    if ch
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
        .is_ok()
    {
        return Ok(ch);
    }
    // The failed passive declare closed that channel.
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("stream"));
    let age = format!("{}s", amqp.control_remember.as_secs().max(1));
    args.insert("x-max-age".into(), text(&age));
    args.insert(
        "x-stream-max-segment-size-bytes".into(),
        AMQPValue::LongLongInt(SEGMENT_BYTES),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(name.into(), durable, args).await?;
    Ok(ch)
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

/// Publishes `msg` on `ch` (in confirm mode) and waits for the broker's ack.
pub async fn publish_on(ch: &Channel, exchange: &str, msg: &Control) -> Result<(), IngestError> {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(epoch_secs(SystemTime::now()));
    let confirm = ch
        .basic_publish(
            exchange.into(),
            "".into(),
            BasicPublishOptions::default(),
            &msg.body(),
            props,
        )
        .await?
        .await?;
    if confirm.is_ack() {
        Ok(())
    } else {
        Err(IngestError::Task(format!(
            "the broker refused the control message on {exchange}"
        )))
    }
}

/// Publishes stop / resume messages (with publisher confirms): `pushgate
/// campaign stop|resume` and the admin API use it.
pub struct Publisher {
    conn: Connection,
    ch: Channel,
    exchange: String,
}

impl Publisher {
    /// Connects, declares the control topology (so that a stop published
    /// while no replica runs is still in the stream) and opens a confirm channel.
    pub async fn connect(amqp: &AmqpConfig) -> Result<Publisher, IngestError> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("{}-control", amqp.connection_name).into());
        let conn = tokio::time::timeout(
            Duration::from_secs(15),
            Connection::connect(amqp.url.expose(), props),
        )
        .await
        .map_err(|_| IngestError::ConnectTimeout)??;
        declare(&conn, amqp).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher {
            conn,
            ch,
            exchange: amqp.control_exchange.clone(),
        })
    }

    /// Stops `campaign` on every replica; returns once the broker confirmed.
    pub async fn stop(&self, campaign: &str) -> Result<(), IngestError> {
        self.send(Control::Stop(campaign.to_owned())).await
    }

    /// Undoes a stop on every replica.
    pub async fn resume(&self, campaign: &str) -> Result<(), IngestError> {
        self.send(Control::Resume(campaign.to_owned())).await
    }

    async fn send(&self, msg: Control) -> Result<(), IngestError> {
        match &msg {
            Control::Stop(c) | Control::Resume(c) if !valid_campaign(c) => Err(IngestError::Task(
                "a campaign id is 1-128 characters without control characters".into(),
            )),
            _ => publish_on(&self.ch, &self.exchange, &msg).await,
        }
    }

    pub async fn close(self) {
        let _ = super::close_channel(&self.ch, "done").await;
        let _ = super::close_connection(&self.conn, "done").await;
    }
}

/// A replica's reader of the control stream.
pub struct Listener {
    channel: Channel,
    consumer: Consumer,
    stops: Arc<StopRegistry>,
}

impl Listener {
    /// Declares, reads the stream from `now - control_remember` and applies
    /// it until this replica's sync marker (published on `publisher`, a
    /// confirm channel) comes back, so that the stops are known before the
    /// first job is consumed.
    pub async fn start(
        conn: &Connection,
        amqp: &AmqpConfig,
        stops: Arc<StopRegistry>,
        publisher: &Channel,
    ) -> Result<Listener, IngestError> {
        declare(conn, amqp).await?;
        let channel = conn.create_channel().await?;
        channel.basic_qos(256, BasicQosOptions::default()).await?;
        let from = SystemTime::now()
            .checked_sub(amqp.control_remember)
            .unwrap_or(UNIX_EPOCH);
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::Timestamp(epoch_secs(from)),
        );
        let tag = format!("pushgate-control-{:08x}", fastrand::u32(..));
        let consumer = channel
            .basic_consume(
                amqp.control_queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await?;
        let mut listener = Listener {
            channel,
            consumer,
            stops,
        };
        let nonce = format!("{:016x}", fastrand::u64(..));
        publish_on(
            publisher,
            &amqp.control_exchange,
            &Control::Sync(nonce.clone()),
        )
        .await?;
        match tokio::time::timeout(CATCH_UP, listener.until_sync(&nonce)).await {
            Ok(r) => r?,
            Err(_) => tracing::warn!(
                queue = %amqp.control_queue,
                "control stream: no sync marker back in time; consuming jobs anyway"
            ),
        }
        Ok(listener)
    }

    async fn until_sync(&mut self, nonce: &str) -> Result<(), IngestError> {
        loop {
            if let Some(Control::Sync(n)) = self.next(true).await? {
                if n == nonce {
                    return Ok(());
                }
            }
        }
    }

    /// Reads and applies the next message.
    async fn next(&mut self, replay: bool) -> Result<Option<Control>, IngestError> {
        let delivery = match self.consumer.next().await {
            Some(d) => d?,
            None => return Err(IngestError::ConsumerClosed("control stream".into())),
        };
        let msg = Control::parse(&delivery.data);
        let at = delivery
            .properties
            .timestamp()
            .map_or_else(SystemTime::now, |s| UNIX_EPOCH + Duration::from_secs(s));
        match &msg {
            Some(Control::Stop(c)) => {
                self.stops.stop(c, at, replay);
            }
            Some(Control::Resume(c)) => {
                self.stops.resume(c);
            }
            Some(Control::Sync(_)) => {}
            None => {
                tracing::debug!("control stream: ignored a message that is not a control message")
            }
        }
        // Stream consumers ack to get more credit; nothing is removed.
        delivery.ack(BasicAckOptions::default()).await?;
        Ok(msg)
    }

    /// Applies control messages until the stream or the connection ends.
    pub async fn run(mut self) -> Result<(), IngestError> {
        loop {
            self.next(false).await?;
        }
    }

    pub async fn close(self) {
        let _ = super::close_channel(&self.channel, "shutdown").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_junk_is_ignored() {
        for m in [
            Control::Stop("spring".into()),
            Control::Resume("spring".into()),
            Control::Sync("abc".into()),
        ] {
            assert_eq!(Control::parse(&m.body()), Some(m));
        }
        assert_eq!(
            Control::parse(br#"{"stop_campaign":"x","note":"recall"}"#),
            Some(Control::Stop("x".into()))
        );
        assert_eq!(Control::parse(br#"{"stop_campaign":""}"#), None);
        assert_eq!(Control::parse(br#"{"stop_campaign":3}"#), None);
        assert_eq!(Control::parse(b"not json"), None);
        assert!(!valid_campaign(&"x".repeat(129)));
        assert!(!valid_campaign("a\nb"));
    }
}
