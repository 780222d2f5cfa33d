//! Fans a job's recipients out to a [`Deliver`] within a bound of in-flight
//! deliveries and classifies each outcome: delivered, final failure, or retry.
//!
//! The dispatcher knows nothing about AMQP: it turns a [`JobRun`] into a
//! [`Settled`] (result entries, recipients to retry per delay queue,
//! recipients whose retries ran out); `ingest` publishes those and acks.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;

use crate::config::AppConfig;
use crate::ingest::retry::RetryPolicy;
use crate::job::Job;
use crate::outcome::{Class, Code, Outcome, Status};
use crate::report::{self, EntryContext, ResultEntry};

/// Most recipients in one job (design.md: a fan-out batch of 1..=1000).
pub const MAX_RECIPIENTS: usize = 1000;

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
    /// Recipients whose retries ran out (final failed; to the dead queue).
    pub exhausted: Vec<usize>,
}

/// What one recipient came to.
enum Step {
    Final(Status, Outcome),
    Retry(usize, Outcome),
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

/// Fans recipients out to `D` and classifies outcomes.
pub struct Dispatcher<D> {
    deliver: Arc<D>,
    retry: Arc<RetryPolicy>,
}

impl<D> Clone for Dispatcher<D> {
    fn clone(&self) -> Self {
        Dispatcher {
            deliver: Arc::clone(&self.deliver),
            retry: Arc::clone(&self.retry),
        }
    }
}

impl<D: Deliver> Dispatcher<D> {
    pub fn new(deliver: Arc<D>, retry: Arc<RetryPolicy>) -> Dispatcher<D> {
        Dispatcher { deliver, retry }
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Delivers every recipient of `run` (at most `permits` deliveries in
    /// flight, shared with other jobs) and settles each one.
    pub async fn dispatch(&self, run: &JobRun, permits: &Semaphore) -> Settled {
        let n = run.job.recipients.len();
        let mut steps: Vec<Option<Step>> = (0..n).map(|_| None).collect();
        let mut pending: FuturesUnordered<_> = (0..n).map(|i| self.one(run, i, permits)).collect();
        while let Some((i, step)) = pending.next().await {
            if let Some(slot) = steps.get_mut(i) {
                *slot = Some(step);
            }
        }
        drop(pending);
        self.settle(run, steps)
    }

    async fn one(&self, run: &JobRun, i: usize, permits: &Semaphore) -> (usize, Step) {
        if run.expired(SystemTime::now()) {
            return (i, local(Code::Expired, "expired before send"));
        }
        if let Err((code, why)) = run.job.check_recipient(i) {
            return (i, local(code, why));
        }
        let outcome = match permits.acquire().await {
            Ok(_permit) => self.deliver.deliver(&run.job, i, run.attempt).await,
            Err(_) => Outcome::local(Code::ProviderUnavailable, "dispatcher closed"),
        };
        (i, self.classify(run, outcome))
    }

    fn classify(&self, run: &JobRun, outcome: Outcome) -> Step {
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
            Some(Class::Token | Class::Credentials | Class::Payload | Class::Policy) => {
                Step::Final(Status::Failed, outcome)
            }
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
            let (status, outcome) = match step {
                Step::Final(status, outcome) => (status, outcome),
                Step::Retry(idx, outcome) => {
                    out.retries.entry(idx).or_default().push(i);
                    (Status::Retrying, outcome)
                }
                Step::Exhausted(outcome) => {
                    out.exhausted.push(i);
                    (Status::Failed, outcome)
                }
            };
            out.entries
                .push(ResultEntry::new(&ctx, recipient, status, &outcome));
        }
        out
    }
}

fn local(code: Code, why: impl Into<String>) -> Step {
    Step::Final(Status::Failed, Outcome::local(code, why))
}

#[cfg(test)]
mod tests;
