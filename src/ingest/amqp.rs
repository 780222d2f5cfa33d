//! One broker session: connect, declare, consume every input queue with
//! manual acks, run each job in its own task, settle acks in batches, and
//! on shutdown cancel, drain up to the deadline and requeue the rest.
//!
//! A session ends with `Ok` after a clean shutdown and with an
//! [`IngestError`] when the connection or a channel is lost; the caller
//! (`app`) reconnects. Unacked deliveries of a lost session come back from
//! the broker (at-least-once).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::{watch, Semaphore};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use super::acks::{AckTracker, Disposition};
use super::batch::ResultBatcher;
use super::control::Listener;
use super::handle::{handle_guarded, QueueCtx, SessionCtx};
use super::retry::RetryPolicy;
use super::{topology, IngestError};
use crate::app::{stopped, Status};
use crate::config::{AmqpConfig, AppConfig, InputQueue};
use crate::dispatch::{Deliver, Dispatcher};
use crate::policy::Policy;
use crate::telemetry::events::EventSink;
use crate::telemetry::metrics::{ConsumerGauge, QueueCounters};

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
    pub queues: Vec<(InputQueue, Arc<Semaphore>)>,
    /// The delivery policy; its stop registry is fed by the control stream.
    pub policy: Arc<Policy>,
}

/// Splits `max_in_flight` between the input queues by weight (at least 1 each).
pub fn queue_permits(inputs: &[InputQueue], max_in_flight: usize) -> Vec<Arc<Semaphore>> {
    let total: u64 = inputs
        .iter()
        .map(|q| u64::from(q.weight))
        .sum::<u64>()
        .max(1);
    inputs
        .iter()
        .map(|q| {
            let share = (max_in_flight as u64).saturating_mul(u64::from(q.weight)) / total;
            Arc::new(Semaphore::new(usize::try_from(share).unwrap_or(1).max(1)))
        })
        .collect()
}

async fn connect(amqp: &AmqpConfig) -> Result<Connection, IngestError> {
    let mut uri: AMQPUri = amqp
        .url
        .expose()
        .parse()
        .map_err(|e: String| IngestError::Task(format!("amqp.url: {e}")))?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(u16::try_from(amqp.heartbeat.as_secs()).unwrap_or(u16::MAX));
    }
    let props =
        ConnectionProperties::default().with_connection_name(amqp.connection_name.as_str().into());
    tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, props))
        .await
        .map_err(|_| IngestError::ConnectTimeout)?
        .map_err(IngestError::from)
}

/// Runs one session until shutdown (`Ok`) or a broker fault (`Err`).
pub async fn session<D: Deliver>(
    base: &Base<D>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), IngestError> {
    let mut stop = shutdown.clone();
    let conn = tokio::select! {
        c = connect(&base.amqp) => c?,
        _ = stopped(&mut stop) => return Ok(()),
    };
    base.status.broker_connected.store(true, Ordering::SeqCst);
    tracing::info!("connected to the broker");
    let result = run_connected(base, &conn, shutdown).await;
    base.status.ready.store(false, Ordering::SeqCst);
    base.status.broker_connected.store(false, Ordering::SeqCst);
    if conn.status().connected() {
        if let Err(e) = conn.close(200, "pushgate session end".into()).await {
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
    let setup = conn.create_channel().await?;
    topology::declare(&setup, &base.amqp, &base.retry).await?;
    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    // Stops first: the control stream is replayed before any job is consumed.
    let listener =
        Listener::start(conn, &base.amqp, Arc::clone(&base.policy.stops), &publisher).await?;
    let mut control = tokio::spawn(listener.run());
    let ctx = Arc::new(SessionCtx {
        dispatcher: base.dispatcher.clone(),
        apps: Arc::clone(&base.apps),
        amqp: Arc::clone(&base.amqp),
        publisher: publisher.clone(),
        results: ResultBatcher::start(publisher.clone(), base.amqp.results_exchange.clone()),
        status: Arc::clone(&base.status),
    });
    let mut workers = JoinSet::new();
    for (input, permits) in &base.queues {
        for n in 0..input.consumers {
            let worker = Worker::start(conn, Arc::clone(&ctx), input, n, permits).await?;
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
    result?;
    let _ = publisher.close(200, "shutdown".into()).await;
    let _ = setup.close(200, "shutdown".into()).await;
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

/// What a job task ends with: its delivery tag and how to settle it.
type TaskOutput = (u64, Result<Disposition, IngestError>);

/// One consumer channel on one input queue.
struct Worker<D> {
    ctx: Arc<SessionCtx<D>>,
    queue: Arc<QueueCtx>,
    channel: Channel,
    consumer: Consumer,
    tag: String,
    acks: AckTracker,
    /// Finished jobs waiting behind a slow one before they are acked singly.
    blocked_limit: usize,
    tasks: JoinSet<TaskOutput>,
    task_tags: HashMap<Id, u64>,
    counters: QueueCounters,
    /// Holds one on `pushgate_queue_consumers{queue}` while the worker lives.
    _consumer: ConsumerGauge,
}

impl<D: Deliver> Worker<D> {
    async fn start(
        conn: &Connection,
        ctx: Arc<SessionCtx<D>>,
        input: &InputQueue,
        n: u16,
        permits: &Arc<Semaphore>,
    ) -> Result<Worker<D>, IngestError> {
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(input.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("pushgate-{}-{n}-{:08x}", input.name, fastrand::u32(..));
        let consumer = channel
            .basic_consume(
                input.name.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let metrics = &ctx.status.telemetry.metrics;
        let counters = metrics.queue(&input.name);
        let consumer_gauge = metrics.consumer(&input.name);
        Ok(Worker {
            counters,
            _consumer: consumer_gauge,
            ctx,
            queue: Arc::new(QueueCtx {
                name: input.name.clone(),
                permits: Arc::clone(permits),
            }),
            channel,
            consumer,
            tag,
            acks: AckTracker::new(),
            blocked_limit: usize::from(input.prefetch / 2).max(1),
            tasks: JoinSet::new(),
            task_tags: HashMap::new(),
        })
    }

    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) -> Result<(), IngestError> {
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finished(joined)?;
                    self.flush().await?;
                }
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => self.spawn(delivery),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(IngestError::ConsumerClosed(self.queue.name.clone())),
                },
            }
        }
        self.drain(drain).await
    }

    fn spawn(&mut self, delivery: lapin::message::Delivery) {
        let tag = delivery.delivery_tag;
        self.acks.received(tag);
        let st = &self.ctx.status;
        st.jobs_received.fetch_add(1, Ordering::Relaxed);
        self.counters.received.inc();
        if delivery.redelivered {
            st.jobs_redelivered.fetch_add(1, Ordering::Relaxed);
            self.counters.redelivered.inc();
        }
        let ctx = Arc::clone(&self.ctx);
        let queue = Arc::clone(&self.queue);
        let handle = self
            .tasks
            .spawn(async move { (tag, handle_guarded(&ctx, &queue, &delivery).await) });
        self.task_tags.insert(handle.id(), tag);
    }

    /// Records a finished job task; a broker error ends the session.
    fn finished(
        &mut self,
        joined: Result<(Id, TaskOutput), tokio::task::JoinError>,
    ) -> Result<(), IngestError> {
        match joined {
            Ok((id, (tag, result))) => {
                self.task_tags.remove(&id);
                let disposition = result?;
                let st = &self.ctx.status;
                match disposition {
                    Disposition::Ack => {
                        st.jobs_acked.fetch_add(1, Ordering::Relaxed);
                        self.counters.acked.inc();
                    }
                    Disposition::Requeue => {
                        st.jobs_requeued.fetch_add(1, Ordering::Relaxed);
                        self.counters.requeued.inc();
                    }
                }
                self.acks.finished(tag, disposition);
            }
            Err(e) => {
                if let Some(tag) = self.task_tags.remove(&e.id()) {
                    // Panics in job code are caught in `handle_guarded`; this is
                    // a panic while dead-lettering, so the broker keeps the job.
                    if e.is_panic() {
                        tracing::error!(queue = %self.queue.name, "a job task panicked; job requeued");
                        self.acks.finished(tag, Disposition::Requeue);
                        self.ctx
                            .status
                            .jobs_requeued
                            .fetch_add(1, Ordering::Relaxed);
                        self.counters.requeued.inc();
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the acks / nacks of the finished prefix.
    async fn flush(&mut self) -> Result<(), IngestError> {
        for settle in self.acks.settle(self.blocked_limit) {
            let st = &self.ctx.status;
            match settle.disposition {
                Disposition::Ack => {
                    self.channel
                        .basic_ack(
                            settle.tag,
                            BasicAckOptions {
                                multiple: settle.multiple,
                            },
                        )
                        .await?;
                    st.ack_frames.fetch_add(1, Ordering::Relaxed);
                }
                Disposition::Requeue => {
                    let opts = BasicNackOptions {
                        multiple: settle.multiple,
                        requeue: true,
                    };
                    self.channel.basic_nack(settle.tag, opts).await?;
                }
            }
        }
        Ok(())
    }

    /// Shutdown: cancel the consumer, let running jobs finish until the
    /// deadline, requeue what is left, close the channel.
    async fn drain(mut self, drain: Duration) -> Result<(), IngestError> {
        self.channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await?;
        let deadline = Instant::now() + drain;
        let mut consumer_open = true;
        while consumer_open || !self.tasks.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finished(joined)?;
                    self.flush().await?;
                }
                next = self.consumer.next(), if consumer_open => match next {
                    // Arrived after the cancel: give it straight back.
                    Some(Ok(d)) => {
                        self.acks.received(d.delivery_tag);
                        self.acks.finished(d.delivery_tag, Disposition::Requeue);
                        self.ctx.status.jobs_requeued.fetch_add(1, Ordering::Relaxed);
                        self.counters.requeued.inc();
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => consumer_open = false,
                },
            }
        }
        self.tasks.abort_all();
        while let Some(joined) = self.tasks.join_next_with_id().await {
            self.finished(joined)?;
        }
        let left = self.acks.requeue_unfinished();
        self.flush().await?;
        self.ctx
            .status
            .jobs_requeued
            .fetch_add(left as u64, Ordering::Relaxed);
        self.counters.requeued.inc_by(left as u64);
        if left > 0 {
            tracing::warn!(queue = %self.queue.name, jobs = left, "drain deadline: jobs requeued");
        }
        self.channel.close(200, "shutdown".into()).await?;
        Ok(())
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
        };
        let permits = queue_permits(&[q("tx", 1), q("bulk", 3)], 100);
        let n: Vec<usize> = permits.iter().map(|s| s.available_permits()).collect();
        assert_eq!(n, vec![25, 75]);
        let permits = queue_permits(&[q("tx", 1), q("bulk", 1000)], 10);
        assert_eq!(permits[0].available_permits(), 1, "never starved to zero");
    }
}
