//! The events-queue consumer: impression and click batches published by
//! apps' backends, validated like `POST /v1/events` (all or nothing). A bad
//! batch goes to the dead queue with the reason in its headers and is acked:
//! never a crash, never a loop.

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use tokio::sync::watch;

use super::decode::headers;
use super::IngestError;
use crate::app::stopped;
use crate::config::AmqpConfig;
use crate::telemetry::events::EventSink;
use crate::telemetry::metrics::ConsumerGauge;

/// Unacked event batches on the channel.
const PREFETCH: u16 = 32;
/// `x-pushgate-reason` of refused batches (also the dead-letter metric label).
pub const DEAD_REASON: &str = "bad-events";

/// One consumer on the events queue.
pub struct EventConsumer {
    channel: Channel,
    consumer: Consumer,
    tag: String,
    queue: String,
    dead_queue: String,
    sink: EventSink,
    _gauge: ConsumerGauge,
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

impl EventConsumer {
    pub async fn start(
        conn: &Connection,
        amqp: &AmqpConfig,
        sink: EventSink,
    ) -> Result<EventConsumer, IngestError> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let tag = format!("pushgate-events-{:08x}", fastrand::u32(..));
        let consumer = channel
            .basic_consume(
                amqp.events_queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let gauge = sink.telemetry().metrics.consumer(&amqp.events_queue);
        Ok(EventConsumer {
            channel,
            consumer,
            tag,
            queue: amqp.events_queue.clone(),
            dead_queue: amqp.dead_queue.clone(),
            sink,
            _gauge: gauge,
        })
    }

    /// Consumes until shutdown (`Ok`) or a broker fault (`Err`).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), IngestError> {
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => self.handle(&delivery).await?,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(IngestError::ConsumerClosed(self.queue.clone())),
                },
            }
        }
        // Unacked deliveries go back to the queue when the channel closes.
        super::cancel_consumer(&self.channel, &self.tag).await?;
        super::close_channel(&self.channel, "shutdown").await?;
        Ok(())
    }

    async fn handle(&self, d: &Delivery) -> Result<(), IngestError> {
        if let Err(r) = self.sink.ingest(&d.data) {
            tracing::warn!(queue = %self.queue, reason = r.reason, detail = %r.detail,
                "bad event batch dead-lettered");
            let mut h = FieldTable::default();
            h.insert(headers::REASON.into(), text(DEAD_REASON));
            h.insert(headers::DETAIL.into(), text(&truncate(&r.to_string())));
            h.insert(headers::ORIGIN.into(), text(&self.queue));
            let props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(h);
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    self.dead_queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &d.data,
                    props,
                )
                .await?
                .await?;
            if !confirm.is_ack() {
                // Not dead-lettered: leave it unacked; the channel's close requeues it.
                return Err(IngestError::Task(
                    "the broker refused a dead letter of the events queue".into(),
                ));
            }
            self.sink.telemetry().metrics.dead_lettered(DEAD_REASON);
        }
        d.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(512).collect()
}
