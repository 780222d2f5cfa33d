//! Fans a job's recipients out to a [`Deliver`] within a bound of in-flight
//! deliveries and classifies each outcome: delivered, final failure, or retry.
//!
//! The dispatcher knows nothing about AMQP: it turns a [`JobRun`] into a
//! [`Settled`] (result entries, recipients to retry per delay queue,
//! recipients whose retries ran out); `ingest` publishes those and acks.
//!
//! Per recipient: expired? -> recipient checks -> policy (stopped campaign,
//! duplicate token, paused provider) -> throttle wait (no permit held) ->
//! in-flight permit -> last policy check -> deliver -> policy learns the
//! answer -> classify. Recipients the policy holds back (paused provider,
//! held device, shutdown during a throttle wait) are *deferred*: handed to
//! a delay queue without counting an attempt.

pub mod gateway;
pub mod shards;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use futures_util::future::poll_fn;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;

use crate::config::AppConfig;
use crate::ingest::retry::RetryPolicy;
use crate::job::{Job, Platform};
use crate::outcome::{Class, Code, Outcome, Status};
use crate::policy::duplicates::first_in_job;
use crate::policy::{device_key, Delivery, Policy, Verdict};
use crate::report::{self, EntryContext, ResultEntry};
use crate::throttle::clock::Shutdown;
use crate::throttle::{Pass, Ticket};

pub use self::shards::{ShardError, Shards};

/// Most recipients in one job (design.md: a fan-out batch of 1..=1000).
pub const MAX_RECIPIENTS: usize = 1000;

/// A fan-out job's recipients are started this many at a time, with a
/// turn of the scheduler between steps: the connections write the first
/// requests while the rest are built. Before, only tokio's cooperative
/// budget made the job yield, after 128. At 50 ms a job of 500's first
/// answer came about 1.5 ms sooner (docs/benchmarks.md, round 19); its
/// last, set by the provider's pace through the burst, 0.6 ms sooner with
/// steps of 64. Zero-latency fan-out throughput did not change measurably.
const STEP: usize = 32;

/// The provider layer as the dispatcher sees it: one delivery attempt of
/// one recipient of a job, answered by an [`Outcome`] (never an error: a
/// failure is an outcome with a code).
pub trait Deliver: Send + Sync + 'static {
    fn deliver(
        &self,
        job: &Arc<Job>,
        recipient: usize,
        attempt: u32,
    ) -> impl Future<Output = Outcome> + Send;
}

/// A job (or a retry sub-job) as received, ready to dispatch.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub job: Arc<Job>,
    /// The job's id (given, or derived at first receipt and carried on).
    pub job_id: String,
    /// The attempt this delivery is (1 for a fresh job).
    pub attempt: u32,
    /// When pushgate first received the job (kept across retries).
    pub first_received: SystemTime,
    /// After this, recipients are not sent but get `Expired`.
    pub expires: Option<SystemTime>,
}

impl JobRun {
    /// Whether the job must not be sent any more. On the first attempt only
    /// an explicit `expires_at` counts, so that `ttl: 0` means "deliver now".
    pub fn expired(&self, now: SystemTime) -> bool {
        let counts = self.attempt > 1 || self.job.expires_at.is_some();
        counts && self.expires.is_some_and(|e| now > e)
    }
}

/// What became of every recipient of a [`JobRun`].
#[derive(Debug, Default)]
pub struct Settled {
    /// One entry per recipient, in recipient order (status retrying for
    /// those in `retries`).
    pub entries: Vec<ResultEntry>,
    /// Recipients to retry, grouped by delay-queue index.
    pub retries: BTreeMap<usize, Vec<usize>>,
    /// Recipients held back by the policy, by delay-queue index: they come
    /// back with the same attempt (the attempt did not count).
    pub deferred: BTreeMap<usize, Vec<usize>>,
    /// Recipients whose retries ran out (final failed; to the dead queue).
    pub exhausted: Vec<usize>,
}

/// For each recipient of `run`, whether it is its device's first in the
/// job (in a campaign; outside one every recipient is).
fn first_of(run: &JobRun) -> Vec<bool> {
    let campaign = run.job.campaign.is_some();
    first_in_job(
        run.job
            .recipients
            .iter()
            .map(|r| campaign.then(|| device_key(r))),
    )
}

/// What one recipient came to.
enum Step {
    Final(Status, Outcome),
    Retry(usize, Outcome),
    Defer(usize, Outcome),
    Exhausted(Outcome),
}

/// Job-level checks before any delivery: a job failing one gets the code
/// for all its recipients and goes to the dead queue.
pub fn check_job(job: &Job, apps: &BTreeMap<String, Arc<AppConfig>>) -> Result<(), (Code, String)> {
    job.validate().map_err(|e| (e.code(), e.to_string()))?;
    if !apps.contains_key(&job.app) {
        return Err((
            Code::UnknownApp,
            format!("app {:?} is not configured", job.app),
        ));
    }
    Ok(())
}

/// One input queue's bound on deliveries in flight: one semaphore, or with
/// dispatch shards one per shard, each with its share. A shard's requests
/// wait for its own connections' streams; with one semaphore for all, the
/// permits held by one shard's waiting requests were missing on the other
/// (fan-out at 50 ms reached 81% of the connections' capacity).
#[derive(Debug, Clone)]
pub struct Permits {
    each: Vec<Arc<Semaphore>>,
}

impl Permits {
    /// `n` permits (at least one) split between `shards` (at least one),
    /// as evenly as whole permits allow, at least one each.
    pub fn new(n: usize, shards: usize) -> Permits {
        let shards = shards.max(1);
        let n = n.max(1);
        let each = (0..shards)
            .map(|k| {
                Arc::new(Semaphore::new(
                    (n / shards + usize::from(k < n % shards)).max(1),
                ))
            })
            .collect();
        Permits { each }
    }

    /// Shard `k`'s semaphore (the only one without shards).
    pub fn shard(&self, k: usize) -> &Arc<Semaphore> {
        &self.each[k % self.each.len()]
    }

    /// Permits free right now, over all shards.
    pub fn available(&self) -> usize {
        self.each.iter().map(|s| s.available_permits()).sum()
    }
}

/// Fans recipients out to `D` and classifies outcomes.
pub struct Dispatcher<D> {
    deliver: Arc<D>,
    retry: Arc<RetryPolicy>,
    policy: Arc<Policy>,
    /// Throttle waits end when this is set.
    shutdown: Shutdown,
    /// Where [`Dispatcher::dispatch_job`] runs jobs; `None`: on the caller's runtime.
    shards: Option<Arc<Shards<D>>>,
}

impl<D> Clone for Dispatcher<D> {
    fn clone(&self) -> Self {
        Dispatcher {
            deliver: Arc::clone(&self.deliver),
            retry: Arc::clone(&self.retry),
            policy: Arc::clone(&self.policy),
            shutdown: self.shutdown.clone(),
            shards: self.shards.clone(),
        }
    }
}

impl<D: Deliver> Dispatcher<D> {
    /// A dispatcher without limits or breakers ([`Policy::unlimited`]).
    pub fn new(deliver: Arc<D>, retry: Arc<RetryPolicy>) -> Dispatcher<D> {
        Dispatcher {
            deliver,
            retry,
            policy: Arc::new(Policy::unlimited()),
            shutdown: Shutdown::never(),
            shards: None,
        }
    }

    /// The same dispatcher running each job of [`Dispatcher::dispatch_job`]
    /// on one of `shards`, with that shard's deliverer.
    pub fn with_shards(self, shards: Arc<Shards<D>>) -> Dispatcher<D> {
        Dispatcher {
            shards: Some(shards),
            ..self
        }
    }

    /// The same dispatcher under `policy`; throttle waits end on `shutdown`.
    pub fn with_policy(self, policy: Arc<Policy>, shutdown: Shutdown) -> Dispatcher<D> {
        Dispatcher {
            policy,
            shutdown,
            ..self
        }
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// [`Dispatcher::dispatch`] on a dispatch shard when the dispatcher has
    /// them, else here; `permits` are the job's queue's (split as many ways
    /// as there are shards).
    pub async fn dispatch_job(&self, run: &JobRun, permits: &Permits) -> Settled {
        match &self.shards {
            Some(shards) => shards.dispatch(self, run, permits).await,
            None => self.dispatch(run, permits.shard(0)).await,
        }
    }

    /// The recipients `part` deferred to the first delay queue, the
    /// attempt not counted: what they get when their dispatch shard
    /// stopped under them.
    fn stopped(&self, run: &JobRun, part: std::ops::Range<usize>, steps: &mut [Option<Step>]) {
        for slot in steps.iter_mut().skip(part.start).take(part.len()) {
            let o = Outcome {
                provider_reason: Some("deferred: dispatch stopped".into()),
                ..Outcome::default()
            };
            *slot = Some(self.defer(run, Duration::ZERO, o));
        }
    }

    /// Delivers every recipient of `run` (at most `permits` deliveries in
    /// flight, shared with other jobs) and settles each one.
    pub async fn dispatch(&self, run: &JobRun, permits: &Semaphore) -> Settled {
        let n = run.job.recipients.len();
        let first = first_of(run);
        let steps = self.run_part(run, permits, 0..n, &first).await;
        self.settle(run, steps)
    }

    /// Delivers the recipients `part` of `run`; `first` (for the whole
    /// job: [`first_of`]) says which are a device's first in the job.
    /// Returns a step for each recipient of the job, `None` outside `part`.
    async fn run_part(
        &self,
        run: &JobRun,
        permits: &Semaphore,
        part: std::ops::Range<usize>,
        first: &[bool],
    ) -> Vec<Option<Step>> {
        let n = part.len();
        let mut steps: Vec<Option<Step>> = (0..run.job.recipients.len()).map(|_| None).collect();
        let mut each = run
            .job
            .recipients
            .iter()
            .zip(first)
            .enumerate()
            .skip(part.start)
            .take(n)
            .map(|(i, (r, &first))| self.one(run, i, device_key(r), first, permits));
        let mut record = |(i, step): (usize, Step)| {
            if let Some(slot) = steps.get_mut(i) {
                *slot = Some(step);
            }
        };
        if n == 1 {
            // Nothing to run beside it: no FuturesUnordered, whose task
            // allocation and wakers cost about 800 instructions a job.
            if let Some(only) = each.next() {
                record(only.await);
            }
        } else {
            let mut pending = FuturesUnordered::new();
            let mut started = 0;
            while started < n {
                for one in each.by_ref().take(STEP) {
                    pending.push(one);
                    started += 1;
                }
                if started < n {
                    // Put this step's requests on the connections, then
                    // let the connections write them before the next step.
                    while let Poll::Ready(Some(done)) =
                        poll_fn(|cx| Poll::Ready(pending.poll_next_unpin(cx))).await
                    {
                        record(done);
                    }
                    tokio::task::yield_now().await;
                }
            }
            while let Some(done) = pending.next().await {
                record(done);
            }
        }
        steps
    }

    async fn one(
        &self,
        run: &JobRun,
        i: usize,
        device: u64,
        first: bool,
        permits: &Semaphore,
    ) -> (usize, Step) {
        if run.expired(SystemTime::now()) {
            return (i, local(Code::Expired, "expired before send"));
        }
        if let Err((code, why)) = run.job.check_recipient(i) {
            return (i, local(code, why));
        }
        let Some(platform) = run.job.recipients.get(i).map(|r| r.platform) else {
            return (i, local(Code::InvalidJob, "no such recipient in the job"));
        };
        let d = Delivery {
            app: &run.job.app,
            platform,
            campaign: run.job.campaign.as_deref(),
            throttle: run.job.throttle,
            job_id: &run.job_id,
            device,
        };
        (i, self.gated(run, i, &d, first, permits).await)
    }

    /// The policy, the throttle, the permit, then the delivery.
    async fn gated(
        &self,
        run: &JobRun,
        i: usize,
        d: &Delivery<'_>,
        first: bool,
        permits: &Semaphore,
    ) -> Step {
        let probe = match self.policy.before(d, first) {
            Verdict::Send { probe } => probe,
            other => return self.held(run, other),
        };
        let ticket = Ticket {
            app: d.app,
            platform: d.platform,
            campaign: d.throttle.map(|t| (d.campaign.unwrap_or(d.job_id), t)),
            device: d.device,
        };
        match self.policy.throttle.pass(&ticket, &self.shutdown).await {
            Pass::Go => {}
            Pass::Defer(wait) => {
                let why = "the device is held or its bucket is far out";
                return self.defer(run, wait, Outcome::local(Code::TemporarilyBlacklisted, why));
            }
            Pass::Stopped => {
                let o = Outcome {
                    provider_reason: Some("deferred: shutting down".into()),
                    ..Outcome::default()
                };
                return self.defer(run, Duration::ZERO, o);
            }
        }
        let Ok(_permit) = permits.acquire().await else {
            return local(Code::ProviderUnavailable, "dispatcher closed");
        };
        if let Some(v) = self.policy.last_check(d, probe) {
            return self.held(run, v);
        }
        // Boxed: the delivery's state machine (request building, the pool,
        // TLS) is kilobytes, and inline it would size every queued
        // recipient's future, not only the ones holding a permit.
        let mut outcome = Box::pin(self.deliver.deliver(&run.job, i, run.attempt)).await;
        self.policy.after(d, &mut outcome, probe);
        self.classify(run, d.platform, outcome)
    }

    /// A recipient the policy did not let through.
    fn held(&self, run: &JobRun, verdict: Verdict) -> Step {
        match verdict {
            Verdict::Send { .. } => local(Code::ProviderUnavailable, "not sent"),
            Verdict::Refuse(code, why) => local(code, why),
            Verdict::Pause { code, retry_in } => {
                let why = "paused: the provider refused this app's credentials";
                self.defer(run, retry_in, Outcome::local(code, why))
            }
        }
    }

    /// To a delay queue of at least `wait`, the attempt not counted (or
    /// Expired when the job would outlive its expiry there).
    fn defer(&self, run: &JobRun, wait: Duration, outcome: Outcome) -> Step {
        if self.retry.is_empty() {
            return Step::Final(Status::Failed, outcome);
        }
        let idx = self.retry.at_least(wait);
        let due = SystemTime::now() + self.retry.delay(idx);
        if run.expires.is_some_and(|e| due > e) {
            let mut expired = outcome;
            expired.code = Some(Code::Expired);
            return Step::Final(Status::Failed, expired);
        }
        Step::Defer(idx, outcome)
    }

    fn classify(&self, run: &JobRun, platform: Platform, outcome: Outcome) -> Step {
        match outcome.class() {
            None => Step::Final(Status::Delivered, outcome),
            Some(Class::Retry) => {
                if run.attempt >= self.retry.max_attempts() || self.retry.is_empty() {
                    return Step::Exhausted(outcome);
                }
                let idx = self
                    .retry
                    .choose(run.attempt, outcome.retry_after, fastrand::f64());
                let due = SystemTime::now() + self.retry.delay(idx);
                if run.expires.is_some_and(|e| due > e) {
                    let mut expired = outcome;
                    expired.code = Some(Code::Expired);
                    return Step::Final(Status::Failed, expired);
                }
                Step::Retry(idx, outcome)
            }
            Some(Class::Credentials) if self.policy.pauses(&run.job.app, platform) => {
                self.defer(run, self.policy.probe_interval(), outcome)
            }
            Some(Class::Token | Class::Credentials | Class::Payload | Class::Policy) => {
                Step::Final(Status::Failed, outcome)
            }
        }
    }

    /// While the guard pauses an app's provider, its guarded token codes
    /// are not final: defer them (their feedback is held back too).
    fn guard(&self, run: &JobRun, platform: Platform, step: Step) -> Step {
        match step {
            Step::Final(Status::Failed, o)
                if o.provider_status.is_some()
                    && o.code
                        .is_some_and(|c| self.policy.guard_holds(&run.job.app, platform, c)) =>
            {
                self.defer(run, self.policy.probe_interval(), o)
            }
            other => other,
        }
    }

    fn settle(&self, run: &JobRun, steps: Vec<Option<Step>>) -> Settled {
        let ts = report::timestamp(SystemTime::now());
        let ctx = EntryContext {
            job_id: &run.job_id,
            campaign: report::campaign_of(&run.job),
            attempt: run.attempt,
            ts: &ts,
        };
        let mut out = Settled {
            entries: Vec::with_capacity(steps.len()),
            ..Settled::default()
        };
        for (i, (recipient, step)) in run.job.recipients.iter().zip(steps).enumerate() {
            let step = step.unwrap_or_else(|| local(Code::ProviderUnavailable, "not settled"));
            let (status, outcome) = match self.guard(run, recipient.platform, step) {
                Step::Final(status, outcome) => (status, outcome),
                Step::Retry(idx, outcome) => {
                    out.retries.entry(idx).or_default().push(i);
                    (Status::Retrying, outcome)
                }
                Step::Defer(idx, outcome) => {
                    out.deferred.entry(idx).or_default().push(i);
                    (Status::Retrying, outcome)
                }
                Step::Exhausted(outcome) => {
                    out.exhausted.push(i);
                    (Status::Failed, outcome)
                }
            };
            out.entries
                .push(ResultEntry::new(&ctx, recipient, status, outcome));
        }
        out
    }
}

fn local(code: Code, why: impl Into<String>) -> Step {
    Step::Final(Status::Failed, Outcome::local(code, why))
}

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;
