//! One broker session: connect, declare, replay the control stream, start a
//! [`super::worker::Worker`] per input-queue consumer (manual acks, batched
//! settles, drain and requeue on shutdown) and supervise them.
//!
//! A session ends with `Ok` after a clean shutdown and with an
//! [`IngestError`] when the connection or a channel is lost; the caller
//! (`app`) reconnects. Unacked deliveries of a lost session come back from
//! the broker (at-least-once).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::batch::ResultBatcher;
use super::client::{self, Connection, WirePublisher};
use super::control::Listener;
use super::handle::SessionCtx;
use super::retry::RetryPolicy;
use super::worker::Worker;
use super::{topology, IngestError};
use crate::app::{stopped, Status};
use crate::config::{AmqpConfig, AppConfig, InputQueue};
use crate::dispatch::{Deliver, Dispatcher, Permits};
use crate::policy::Policy;
use crate::telemetry::events::EventSink;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What outlives a session: config, the dispatcher, per-queue permits.
pub struct Base<D> {
    /// Where batches from the events queue go; `None`: not consumed.
    pub events: Option<EventSink>,
    pub dispatcher: Dispatcher<D>,
    pub apps: Arc<BTreeMap<String, Arc<AppConfig>>>,
    pub amqp: Arc<AmqpConfig>,
    pub retry: Arc<RetryPolicy>,
    pub drain_timeout: Duration,
    pub status: Arc<Status>,
    /// Each input queue with its share of in-flight deliveries.
    pub queues: Vec<(InputQueue, Permits)>,
    /// The delivery policy; its stop registry is fed by the control stream.
    pub policy: Arc<Policy>,
}

/// Splits `max_in_flight` between the input queues by weight (at least 1
/// each), each queue's share split again between `shards` dispatch shards.
pub fn queue_permits(inputs: &[InputQueue], max_in_flight: usize, shards: usize) -> Vec<Permits> {
    let total: u64 = inputs
        .iter()
        .map(|q| u64::from(q.weight))
        .sum::<u64>()
        .max(1);
    inputs
        .iter()
        .map(|q| {
            let share = (max_in_flight as u64).saturating_mul(u64::from(q.weight)) / total;
            Permits::new(usize::try_from(share).unwrap_or(1), shards)
        })
        .collect()
}

/// How a connection named `name` is opened: the configured URL and heartbeat.
pub(super) fn open_options<'a>(amqp: &'a AmqpConfig, name: &'a str) -> client::Open<'a> {
    client::Open {
        url: amqp.url.expose(),
        name,
        heartbeat: Some(amqp.heartbeat),
        timeout: CONNECT_TIMEOUT,
    }
}

/// Opens a connection named `name` with the configured heartbeat.
pub(super) async fn connect(amqp: &AmqpConfig, name: &str) -> Result<Connection, IngestError> {
    Ok(Connection::open(open_options(amqp, name)).await?)
}

/// Runs one session until shutdown (`Ok`) or a broker fault (`Err`).
pub async fn session<D: Deliver>(
    base: &Base<D>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), IngestError> {
    let mut stop = shutdown.clone();
    let conn = tokio::select! {
        c = connect(&base.amqp, &base.amqp.connection_name) => c?,
        _ = stopped(&mut stop) => return Ok(()),
    };
    base.status.broker_connected.store(true, Ordering::SeqCst);
    tracing::info!("connected to the broker");
    let result = run_connected(base, &conn, shutdown).await;
    base.status.ready.store(false, Ordering::SeqCst);
    base.status.broker_connected.store(false, Ordering::SeqCst);
    if conn.is_connected() {
        if let Err(e) = super::close_connection(&conn, "pushgate session end").await {
            tracing::debug!(error = %e, "closing the broker connection");
        }
    }
    result
}

async fn run_connected<D: Deliver>(
    base: &Base<D>,
    conn: &Connection,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), IngestError> {
    let setup = conn.channel().await?;
    topology::declare(&setup, &base.amqp, &base.retry).await?;
    let publisher = conn.channel().await?;
    publisher.confirm_select().await?;
    // Result batches go out on a connection of pushgate's own, read on this
    // runtime (client/wire/publish.rs); named like the session's.
    let results =
        Arc::new(WirePublisher::open(open_options(&base.amqp, &base.amqp.connection_name)).await?);
    // Stops first: the control stream is replayed before any job is consumed.
    let listener =
        Listener::start(conn, &base.amqp, Arc::clone(&base.policy.stops), &publisher).await?;
    let mut control = tokio::spawn(listener.run());
    let ctx = Arc::new(SessionCtx {
        dispatcher: base.dispatcher.clone(),
        apps: Arc::clone(&base.apps),
        amqp: Arc::clone(&base.amqp),
        publisher: publisher.clone(),
        results: ResultBatcher::start(Arc::clone(&results), base.amqp.results_exchange.clone()),
        status: Arc::clone(&base.status),
    });
    let mut workers = JoinSet::new();
    for (input, permits) in &base.queues {
        for n in 0..input.consumers {
            let worker = Worker::start(Arc::clone(&ctx), input, n, permits).await?;
            workers.spawn(worker.run(shutdown.clone(), base.drain_timeout));
        }
    }
    if let Some(events) = &base.events {
        let consumer =
            super::events::EventConsumer::start(conn, &base.amqp, events.clone()).await?;
        workers.spawn(consumer.run(shutdown.clone()));
    }
    base.status.sessions.fetch_add(1, Ordering::Relaxed);
    if !*shutdown.borrow() {
        base.status.ready.store(true, Ordering::SeqCst);
    }
    tracing::info!(queues = base.queues.len(), "consuming");
    let result = supervise(&mut workers, &mut control).await;
    control.abort();
    // Either way: the broker then logs a close, not a dropped socket.
    let closing = results.close("pushgate session end");
    if let Err(e) = super::bounded("closing the result publisher", closing).await {
        tracing::debug!(error = %e, "closing the result publisher");
    }
    result?;
    let _ = super::close_channel(&publisher, "shutdown").await;
    let _ = super::close_channel(&setup, "shutdown").await;
    Ok(())
}

/// Waits for the consumers to finish (shutdown); the first failure of a
/// consumer or of the control listener ends the session.
async fn supervise(
    workers: &mut JoinSet<Result<(), IngestError>>,
    control: &mut tokio::task::JoinHandle<Result<(), IngestError>>,
) -> Result<(), IngestError> {
    loop {
        let failure = tokio::select! {
            joined = workers.join_next() => match joined {
                None => return Ok(()),
                Some(Ok(Ok(()))) => continue,
                Some(Ok(Err(e))) => e,
                Some(Err(e)) => IngestError::Task(e.to_string()),
            },
            ended = &mut *control => match ended {
                Ok(Err(e)) => e,
                Ok(Ok(())) => IngestError::ConsumerClosed("control stream".into()),
                Err(e) => IngestError::Task(e.to_string()),
            },
        };
        workers.abort_all();
        return Err(failure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_split_by_weight() {
        let q = |name: &str, weight| InputQueue {
            name: name.into(),
            prefetch: 4,
            weight,
            consumers: 1,
            read_interval: Duration::ZERO,
        };
        let permits = queue_permits(&[q("tx", 1), q("bulk", 3)], 100, 1);
        let n: Vec<usize> = permits.iter().map(Permits::available).collect();
        assert_eq!(n, vec![25, 75]);
        let permits = queue_permits(&[q("tx", 1), q("bulk", 1000)], 10, 1);
        assert_eq!(permits[0].available(), 1, "never starved to zero");
        let permits = queue_permits(&[q("tx", 1), q("bulk", 3)], 101, 2);
        let bulk = &permits[1];
        assert_eq!(bulk.available(), 75);
        let split = [bulk.shard(0), bulk.shard(1)].map(|s| s.available_permits());
        assert_eq!(split, [38, 37], "each shard its share of the queue's");
    }
}
