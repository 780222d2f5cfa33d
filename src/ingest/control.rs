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

use serde_json::{Map, Value};

use super::client::{
    Binding, Channel, Connection, Consumer, ExchangeKind, Props, QueueOpts, Table,
};
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
    let ch = conn.channel().await?;
    ch.declare_exchange(&amqp.control_exchange, ExchangeKind::Fanout)
        .await?;
    let ch = declare_stream(conn, ch, amqp).await?;
    let binding = Binding {
        queue: &amqp.control_queue,
        exchange: &amqp.control_exchange,
        key: "",
    };
    ch.bind_queue(binding, Table::new()).await?;
    let _ = super::close_channel(&ch, "declared").await;
    Ok(())
}

/// Declares the stream unless it exists; returns an open channel.
async fn declare_stream(
    conn: &Connection,
    ch: Channel,
    amqp: &AmqpConfig,
) -> Result<Channel, IngestError> {
    let passive = QueueOpts {
        passive: true,
        ..QueueOpts::default()
    };
    let name = amqp.control_queue.as_str();
    if ch.declare_queue(name, passive, Table::new()).await.is_ok() {
        return Ok(ch);
    }
    // The failed passive declare closed that channel.
    let ch = conn.channel().await?;
    let age = format!("{}s", amqp.control_remember.as_secs().max(1));
    let args = Table::new()
        .text("x-queue-type", "stream")
        .text("x-max-age", &age)
        .int("x-stream-max-segment-size-bytes", SEGMENT_BYTES);
    ch.declare_queue(name, QueueOpts::durable(), args).await?;
    Ok(ch)
}

/// Publishes `msg` on `ch` (in confirm mode) and waits for the broker's ack.
pub async fn publish_on(ch: &Channel, exchange: &str, msg: &Control) -> Result<(), IngestError> {
    let props = Props {
        timestamp: Some(epoch_secs(SystemTime::now())),
        ..Props::default()
    };
    let acked = ch
        .publish(exchange, "", &msg.body(), props)
        .await?
        .wait()
        .await?;
    if acked {
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
        let name = format!("{}-control", amqp.connection_name);
        let conn = super::amqp::connect(amqp, &name).await?;
        declare(&conn, amqp).await?;
        let ch = conn.channel().await?;
        ch.confirm_select().await?;
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
        let channel = conn.channel().await?;
        channel.qos(256).await?;
        let from = SystemTime::now()
            .checked_sub(amqp.control_remember)
            .unwrap_or(UNIX_EPOCH);
        let args = Table::new().timestamp("x-stream-offset", epoch_secs(from));
        let tag = format!("pushgate-control-{:08x}", fastrand::u32(..));
        let consumer = channel.consume(&amqp.control_queue, &tag, args).await?;
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
        self.channel.ack(delivery.tag, false).await?;
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
