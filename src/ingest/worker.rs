//! One consumer channel on one input queue: receives deliveries, runs each
//! job in its own task, settles acks in batches over the finished prefix, and
//! on shutdown cancels, drains up to the deadline and requeues the rest.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use super::acks::{AckTracker, Disposition};
use super::client::{Delivery, WireConsumer};
use super::handle::{handle_guarded, QueueCtx, SessionCtx};
use super::IngestError;
use crate::app::stopped;
use crate::config::InputQueue;
use crate::dispatch::{Deliver, Permits};
use crate::policy::keys::FxBuild;
use crate::telemetry::metrics::{ConsumerGauge, QueueCounters};

/// How long half the prefetch window may wait, finished, behind one job
/// in flight before it is acked one frame per job (see `acks`). Well above
/// the few milliseconds by which one provider connection's jobs finish
/// after another's, and short against a job that is really slow (a
/// throttled campaign, a provider timing out).
const HEAD_PATIENCE: Duration = Duration::from_millis(500);

/// What a job task ends with: its delivery tag and how to settle it.
type TaskOutput = (u64, Result<Disposition, IngestError>);

/// One consumer channel on one input queue.
pub(super) struct Worker<D> {
    ctx: Arc<SessionCtx<D>>,
    queue: Arc<QueueCtx>,
    /// Its own connection (pushgate's consumer, not lapin: the hot path).
    consumer: WireConsumer,
    tag: String,
    acks: AckTracker,
    /// Finished jobs waiting behind a slow one (for `HEAD_PATIENCE`) before
    /// they are acked singly.
    blocked_limit: usize,
    tasks: JoinSet<TaskOutput>,
    /// By task id, which the runtime assigns (FxHash: two per job).
    task_tags: HashMap<Id, u64, FxBuild>,
    counters: QueueCounters,
    /// Holds one on `pushgate_queue_consumers{queue}` while the worker lives.
    _consumer: ConsumerGauge,
}

impl<D: Deliver> Worker<D> {
    pub(super) async fn start(
        ctx: Arc<SessionCtx<D>>,
        input: &InputQueue,
        n: u16,
        permits: &Permits,
    ) -> Result<Worker<D>, IngestError> {
        let tag = format!("pushgate-{}-{n}-{:08x}", input.name, fastrand::u32(..));
        // Named like the session's connection: operators (and a forced
        // close by name) see one gateway.
        let open = super::amqp::open_options(&ctx.amqp, &ctx.amqp.connection_name);
        let mut consumer = WireConsumer::open(open, &input.name, &tag, input.prefetch).await?;
        consumer.set_read_interval(input.read_interval);
        let metrics = &ctx.status.telemetry.metrics;
        let counters = metrics.queue(&input.name);
        let consumer_gauge = metrics.consumer(&input.name);
        Ok(Worker {
            counters,
            _consumer: consumer_gauge,
            ctx,
            queue: Arc::new(QueueCtx {
                name: input.name.clone(),
                permits: permits.clone(),
            }),
            consumer,
            tag,
            acks: AckTracker::new(HEAD_PATIENCE),
            blocked_limit: usize::from(input.prefetch / 2).max(1),
            tasks: JoinSet::new(),
            task_tags: HashMap::default(),
        })
    }

    pub(super) async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) -> Result<(), IngestError> {
        // Stands in for "no recheck" (select! builds a disabled branch's
        // future too): no clock read per delivery.
        let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        loop {
            // A slow head's patience runs out even if no job finishes meanwhile.
            let recheck = self.acks.recheck_at();
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                _ = tokio::time::sleep_until(recheck.unwrap_or(never)), if recheck.is_some() => {
                    self.flush().await?;
                }
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finished(joined)?;
                    // Every job already done settles in the same flush: one
                    // ack frame for a busy batch, not one await per job.
                    while let Some(more) = self.tasks.try_join_next_with_id() {
                        self.finished(more)?;
                    }
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

    fn spawn(&mut self, delivery: Delivery) {
        let tag = delivery.tag;
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
        // Boxed: the job's state machine (decode, dispatch, publish) is
        // large, and spawning moves a future by value several times; a box
        // is moved as a pointer.
        let job = Box::pin(async move { (tag, handle_guarded(&ctx, &queue, &delivery).await) });
        let handle = self.tasks.spawn(job);
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
        for settle in self.acks.settle(self.blocked_limit, Instant::now()) {
            let st = &self.ctx.status;
            match settle.disposition {
                Disposition::Ack => {
                    self.consumer.ack(settle.tag, settle.multiple).await?;
                    st.ack_frames.fetch_add(1, Ordering::Relaxed);
                }
                Disposition::Requeue => {
                    self.consumer
                        .nack(settle.tag, settle.multiple, true)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Shutdown: cancel the consumer, let running jobs finish until the
    /// deadline, requeue what is left, close the channel.
    async fn drain(mut self, drain: Duration) -> Result<(), IngestError> {
        super::bounded("cancelling a consumer", self.consumer.cancel(&self.tag)).await?;
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
                        self.acks.received(d.tag);
                        self.acks.finished(d.tag, Disposition::Requeue);
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
        super::bounded(
            "closing a consumer connection",
            self.consumer.close("shutdown"),
        )
        .await?;
        Ok(())
    }
}
