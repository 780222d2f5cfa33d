//! The events-queue consumer: impression and click batches published by
//! apps' backends, validated like `POST /v1/events` (all or nothing). A bad
//! batch goes to the dead queue with the reason in its headers and is acked:
//! never a crash, never a loop.

use tokio::sync::watch;

use super::client::{Channel, Connection, Consumer, Delivery, Props, Table};
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

impl EventConsumer {
    pub async fn start(
        conn: &Connection,
        amqp: &AmqpConfig,
        sink: EventSink,
    ) -> Result<EventConsumer, IngestError> {
        let channel = conn.channel().await?;
        channel.confirm_select().await?;
        channel.qos(PREFETCH).await?;
        let tag = format!("pushgate-events-{:08x}", fastrand::u32(..));
        let consumer = channel
            .consume(&amqp.events_queue, &tag, Table::new())
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
            if let Some(left_out) = self.sink.telemetry().bad_input_log.admit() {
                tracing::warn!(queue = %self.queue, reason = r.reason, detail = %r.detail,
                    left_out, "bad event batch dead-lettered");
            }
            let h = Table::new()
                .text(headers::REASON, DEAD_REASON)
                .text(headers::DETAIL, &truncate(&r.to_string()))
                .text(headers::ORIGIN, &self.queue);
            let acked = self
                .channel
                .publish("", &self.dead_queue, &d.data, Props::headers(h))
                .await?
                .wait()
                .await?;
            if !acked {
                // Not dead-lettered: leave it unacked; the channel's close requeues it.
                return Err(IngestError::Task(
                    "the broker refused a dead letter of the events queue".into(),
                ));
            }
            self.sink.telemetry().metrics.dead_lettered(DEAD_REASON);
        }
        self.channel.ack(d.tag, false).await?;
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(512).collect()
}
