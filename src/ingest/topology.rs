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

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::decode::headers;
use super::retry::RetryPolicy;
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

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn exchange_durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

/// Declares everything; idempotent, so it runs on every (re)connect.
pub async fn declare(
    ch: &Channel,
    cfg: &AmqpConfig,
    retry: &RetryPolicy,
) -> Result<(), lapin::Error> {
    ch.exchange_declare(
        cfg.results_exchange.as_str().into(),
        ExchangeKind::Topic,
        exchange_durable(),
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        cfg.retry.exchange.as_str().into(),
        ExchangeKind::Headers,
        exchange_durable(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        cfg.dead_queue.as_str().into(),
        durable(),
        FieldTable::default(),
    )
    .await?;
    for name in cfg
        .inputs
        .iter()
        .map(|q| &q.name)
        .chain([&cfg.events_queue])
    {
        let mut args = FieldTable::default();
        if cfg.queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), text("quorum"));
        }
        ch.queue_declare(name.as_str().into(), durable(), args)
            .await?;
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
) -> Result<(), lapin::Error> {
    let ttl = i64::try_from(retry.delay(i).as_millis()).unwrap_or(i64::MAX);
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    args.insert("x-dead-letter-exchange".into(), text(""));
    ch.queue_declare(retry.queue(i).into(), durable(), args)
        .await?;
    let mut bind = FieldTable::default();
    // The header has no `x-` prefix: `x-match: all` skips `x-` keys.
    bind.insert("x-match".into(), text("all"));
    bind.insert(headers::DELAY.into(), text(retry.label(i)));
    ch.queue_bind(
        retry.queue(i).into(),
        cfg.retry.exchange.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        bind,
    )
    .await?;
    // Earlier builds bound with `x-pushgate-delay`, which RabbitMQ does
    // not match on (it skips `x-` headers), so it took every retry. Remove
    // it from brokers an older pushgate declared on (no-op otherwise).
    let mut legacy = FieldTable::default();
    legacy.insert("x-match".into(), text("all"));
    legacy.insert(LEGACY_DELAY.into(), text(retry.label(i)));
    ch.queue_unbind(
        retry.queue(i).into(),
        cfg.retry.exchange.as_str().into(),
        "".into(),
        legacy,
    )
    .await
}

/// The routing header of older releases (see [`declare_delay_queue`]).
const LEGACY_DELAY: &str = "x-pushgate-delay";
