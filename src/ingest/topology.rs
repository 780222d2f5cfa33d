//! Declares the broker topology of design.md at start-up (and after each reconnect).
//!
//! - input queues (durable, classic or quorum);
//! - delay queues `<prefix><label>` with `x-message-ttl` and `x-dead-letter-exchange = ""`:
//!   a retry is published to the headers exchange `retry.exchange` with the
//!   origin input queue as routing key and `pushgate-delay: <label>` (not an
//!   `x-` header: headers exchanges ignore those when matching); when its
//!   TTL runs out it is dead-lettered through the default exchange with that
//!   routing key, i.e. back to the queue it came from;
//! - the dead queue and the results topic exchange;
//! - the events queue (impression and click batches from apps).

use super::client::{Binding, Channel, Error, ExchangeKind, QueueOpts, Table};
use super::decode::headers;
use super::retry::RetryPolicy;
use super::IngestError;
use crate::config::{AmqpConfig, QueueType};

/// Every queue and exchange name pushgate declares (tests delete them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub queues: Vec<String>,
    pub exchanges: Vec<String>,
}

/// The names [`declare`] creates for `cfg`.
pub fn names(cfg: &AmqpConfig, retry: &RetryPolicy) -> Names {
    let mut queues: Vec<String> = cfg.inputs.iter().map(|q| q.name.clone()).collect();
    queues.extend((0..retry.len()).map(|i| retry.queue(i).to_owned()));
    queues.push(cfg.dead_queue.clone());
    queues.push(cfg.events_queue.clone());
    Names {
        queues,
        exchanges: vec![cfg.results_exchange.clone(), cfg.retry.exchange.clone()],
    }
}

/// Connects, declares everything and disconnects: for tools and tests
/// that need the topology without a running daemon.
pub async fn declare_once(cfg: &AmqpConfig, retry: &RetryPolicy) -> Result<(), IngestError> {
    let conn = super::amqp::connect(cfg, &format!("{}-declare", cfg.connection_name)).await?;
    let ch = conn.channel().await?;
    let declared = declare(&ch, cfg, retry).await;
    let _ = super::close_connection(&conn, "declared").await;
    Ok(declared?)
}

/// Declares everything; idempotent, so it runs on every (re)connect.
pub async fn declare(ch: &Channel, cfg: &AmqpConfig, retry: &RetryPolicy) -> Result<(), Error> {
    ch.declare_exchange(&cfg.results_exchange, ExchangeKind::Topic)
        .await?;
    ch.declare_exchange(&cfg.retry.exchange, ExchangeKind::Headers)
        .await?;
    ch.declare_queue(&cfg.dead_queue, QueueOpts::durable(), Table::new())
        .await?;
    for name in cfg
        .inputs
        .iter()
        .map(|q| &q.name)
        .chain([&cfg.events_queue])
    {
        let mut args = Table::new();
        if cfg.queue_type == QueueType::Quorum {
            args = args.text("x-queue-type", "quorum");
        }
        ch.declare_queue(name, QueueOpts::durable(), args).await?;
    }
    for i in 0..retry.len() {
        declare_delay_queue(ch, cfg, retry, i).await?;
    }
    Ok(())
}

async fn declare_delay_queue(
    ch: &Channel,
    cfg: &AmqpConfig,
    retry: &RetryPolicy,
    i: usize,
) -> Result<(), Error> {
    let ttl = i64::try_from(retry.delay(i).as_millis()).unwrap_or(i64::MAX);
    let args = Table::new()
        .int("x-message-ttl", ttl)
        .text("x-dead-letter-exchange", "");
    ch.declare_queue(retry.queue(i), QueueOpts::durable(), args)
        .await?;
    // The header has no `x-` prefix: `x-match: all` skips `x-` keys.
    let bind = Table::new()
        .text("x-match", "all")
        .text(headers::DELAY, retry.label(i));
    let binding = Binding {
        queue: retry.queue(i),
        exchange: &cfg.retry.exchange,
        key: "",
    };
    ch.bind_queue(binding, bind).await?;
    // Earlier builds bound with `x-pushgate-delay`, which RabbitMQ does
    // not match on (it skips `x-` headers), so it took every retry. Remove
    // it from brokers an older pushgate declared on (no-op otherwise).
    let legacy = Table::new()
        .text("x-match", "all")
        .text(LEGACY_DELAY, retry.label(i));
    ch.unbind_queue(binding, legacy).await
}

/// The routing header of older releases (see [`declare_delay_queue`]).
const LEGACY_DELAY: &str = "x-pushgate-delay";
