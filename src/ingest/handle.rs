//! Handles one received job: decode, dispatch, publish results / retries /
//! dead letters, wait for the broker's confirms, and say how to settle it.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;

use super::acks::Disposition;
use super::batch::ResultBatcher;
use super::client::{Channel, Confirm, Delivery, Props, Table};
use super::decode::{decode, headers, BadJob, Decoded, JobHeaders};
use super::IngestError;
use crate::app::Status;
use crate::config::{AmqpConfig, AppConfig};
use crate::dispatch::{Deliver, Dispatcher, JobRun, Permits, Settled};
use crate::job::Job;
use crate::outcome::Status as EntryStatus;
use crate::report::{self, EntryContext, ResultEntry, TokenEntry};
use crate::telemetry::names::UNKNOWN_APP;
use crate::telemetry::JobCounts;

/// What the job tasks of one broker session share.
pub struct SessionCtx<D> {
    pub dispatcher: Dispatcher<D>,
    pub apps: Arc<BTreeMap<String, Arc<AppConfig>>>,
    pub amqp: Arc<AmqpConfig>,
    /// The publishing channel, in confirm mode.
    pub publisher: Channel,
    /// Publishes result and token-feedback messages, shared between jobs.
    pub results: ResultBatcher,
    pub status: Arc<Status>,
}

/// The input queue a delivery came from, and its share of in-flight deliveries.
pub struct QueueCtx {
    pub name: String,
    pub permits: Permits,
}

const DETAIL_MAX: usize = 512;

/// Handles one delivery to the point where it may be settled.
pub async fn handle<D: Deliver>(
    s: &SessionCtx<D>,
    queue: &QueueCtx,
    delivery: &Delivery,
) -> Result<Disposition, IngestError> {
    let h = read_headers(delivery);
    match decode(&delivery.data, &h, &s.apps, SystemTime::now()) {
        Decoded::Bad(bad) => handle_bad(s, queue, delivery, &h, bad).await,
        Decoded::Run(run) => {
            let settled = s.dispatcher.dispatch_job(&run, &queue.permits).await;
            publish_settled(s, queue, &run, settled).await
        }
    }
}

/// [`handle`], with a panic in the job's code (a bug) turned into a dead
/// letter with reason `internal-error` and an ack. Requeueing instead would
/// redeliver the same job into the same panic, forever.
pub async fn handle_guarded<D: Deliver>(
    s: &SessionCtx<D>,
    queue: &QueueCtx,
    delivery: &Delivery,
) -> Result<Disposition, IngestError> {
    let panic = match AssertUnwindSafe(handle(s, queue, delivery))
        .catch_unwind()
        .await
    {
        Ok(settled) => return settled,
        Err(panic) => panic,
    };
    let what = panic_message(panic.as_ref());
    let h = read_headers(delivery);
    let job_id = h.job_id.as_deref().unwrap_or("unknown");
    tracing::error!(queue = %queue.name, job_id, panic = %what,
        "a job panicked (a pushgate bug); dead-lettered as internal-error");
    let dead = Table::new()
        .text(headers::REASON, "internal-error")
        .text(headers::DETAIL, truncate(&what))
        .text(headers::JOB_ID, job_id)
        .text(headers::ORIGIN, &queue.name);
    let confirm = publish(s, "", &s.amqp.dead_queue, &delivery.data, dead).await?;
    let disposition = await_confirms(vec![confirm]).await?;
    if disposition == Disposition::Ack {
        s.status.dead_lettered.fetch_add(1, Ordering::Relaxed);
        s.status.telemetry.metrics.dead_lettered("internal-error");
    }
    Ok(disposition)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

async fn publish_settled<D: Deliver>(
    s: &SessionCtx<D>,
    queue: &QueueCtx,
    run: &JobRun,
    settled: Settled,
) -> Result<Disposition, IngestError> {
    let mut confirms = Vec::new();
    let policy = s.dispatcher.retry_policy();
    let mut retried = 0;
    for (idx, recipients) in &settled.retries {
        let h = carry(run, &queue.name, run.attempt + 1).text(headers::DELAY, policy.label(*idx));
        let body = serde_json::to_vec(&sub_job(&run.job, recipients))?;
        confirms.push(publish(s, &s.amqp.retry.exchange, &queue.name, &body, h).await?);
        retried += recipients.len();
    }
    // Held back by the policy: the same attempt comes back.
    for (idx, recipients) in &settled.deferred {
        let h = carry(run, &queue.name, run.attempt).text(headers::DELAY, policy.label(*idx));
        let body = serde_json::to_vec(&sub_job(&run.job, recipients))?;
        confirms.push(publish(s, &s.amqp.retry.exchange, &queue.name, &body, h).await?);
        retried += recipients.len();
    }
    if !settled.exhausted.is_empty() {
        let detail = format!("retries ran out after attempt {}", run.attempt);
        let h = carry(run, &queue.name, run.attempt)
            .text(headers::REASON, "max-attempts")
            .text(headers::DETAIL, &detail);
        let body = serde_json::to_vec(&sub_job(&run.job, &settled.exhausted))?;
        confirms.push(publish(s, "", &s.amqp.dead_queue, &body, h).await?);
    }
    let finals = settled.entries.iter().filter(|e| e.is_final()).count();
    let counts = JobCounts::from_entries(&settled.entries);
    let results = publish_entries(s, &run.job.app, settled.entries).await?;
    let disposition = await_confirms(confirms).await?.and(results);
    if disposition == Disposition::Ack {
        let st = &s.status;
        st.results_final.fetch_add(finals as u64, Ordering::Relaxed);
        st.retries_published
            .fetch_add(retried as u64, Ordering::Relaxed);
        let campaign = run.job.campaign.as_deref();
        st.telemetry
            .record_results(app_label(s, &run.job.app), campaign, &counts);
        if !settled.exhausted.is_empty() {
            st.dead_lettered.fetch_add(1, Ordering::Relaxed);
            st.telemetry.metrics.dead_lettered("max-attempts");
        }
    }
    Ok(disposition)
}

/// Hands `entries` (and the token feedback they imply) to the session's
/// result batcher; resolves once the broker confirmed them.
async fn publish_entries<D: Deliver>(
    s: &SessionCtx<D>,
    app: &str,
    entries: Vec<ResultEntry>,
) -> Result<Disposition, IngestError> {
    let tokens: Vec<TokenEntry> = entries.iter().filter_map(TokenEntry::from_entry).collect();
    let entries: Vec<ResultEntry> = if s.amqp.results_undelivered_only {
        entries
            .into_iter()
            .filter(|e| e.status != EntryStatus::Delivered)
            .collect()
    } else {
        entries
    };
    let acked = s.results.submit(app, entries, tokens).await?;
    Ok(if acked {
        Disposition::Ack
    } else {
        Disposition::Requeue
    })
}

/// Bad input: failed results for the readable recipients, the message to
/// the dead queue with the reason, then ack (never a crash, never a loop).
async fn handle_bad<D: Deliver>(
    s: &SessionCtx<D>,
    queue: &QueueCtx,
    delivery: &Delivery,
    h: &JobHeaders,
    bad: BadJob,
) -> Result<Disposition, IngestError> {
    if let Some(left_out) = s.status.telemetry.bad_input_log.admit() {
        tracing::warn!(queue = %queue.name, reason = bad.reason, job_id = %bad.job_id,
            detail = %bad.detail, left_out, "bad job dead-lettered");
    }
    let ts = report::timestamp(SystemTime::now());
    let ctx = EntryContext {
        job_id: &bad.job_id,
        campaign: bad.campaign.as_deref(),
        attempt: h.attempt.unwrap_or(1),
        ts: &ts,
    };
    let entries: Vec<ResultEntry> = bad
        .recipients
        .iter()
        .map(|r| ResultEntry::local_failure(&ctx, r, bad.code, &bad.detail))
        .collect();
    let finals = entries.len();
    let counts = JobCounts::from_entries(&entries);
    let results = match &bad.app {
        Some(app) => publish_entries(s, app, entries).await?,
        None => Disposition::Ack,
    };
    let mut confirms = Vec::new();
    let dead = Table::new()
        .text(headers::REASON, bad.reason)
        .text(headers::DETAIL, truncate(&bad.detail))
        .text(headers::JOB_ID, &bad.job_id)
        .text(headers::ORIGIN, &queue.name);
    confirms.push(publish(s, "", &s.amqp.dead_queue, &delivery.data, dead).await?);
    let disposition = await_confirms(confirms).await?.and(results);
    if disposition == Disposition::Ack {
        let st = &s.status;
        st.results_final.fetch_add(finals as u64, Ordering::Relaxed);
        if let Some(app) = &bad.app {
            let campaign = bad.campaign.as_deref();
            st.telemetry
                .record_results(app_label(s, app), campaign, &counts);
        }
        st.dead_lettered.fetch_add(1, Ordering::Relaxed);
        st.telemetry.metrics.dead_lettered(bad.reason);
    }
    Ok(disposition)
}

/// The `app` metric label: a configured app, or one bounded placeholder.
fn app_label<'a, D>(s: &SessionCtx<D>, app: &'a str) -> &'a str {
    if s.apps.contains_key(app) {
        app
    } else {
        UNKNOWN_APP
    }
}

async fn publish<D>(
    s: &SessionCtx<D>,
    exchange: &str,
    key: &str,
    body: &[u8],
    headers: Table,
) -> Result<Confirm, super::client::Error> {
    s.publisher
        .publish(exchange, key, body, Props::headers(headers))
        .await
}

/// Ack when every publish is confirmed; requeue when the broker refused one.
async fn await_confirms(confirms: Vec<Confirm>) -> Result<Disposition, IngestError> {
    let mut disposition = Disposition::Ack;
    for confirm in confirms {
        if !confirm.wait().await? {
            disposition = Disposition::Requeue;
        }
    }
    Ok(disposition)
}

/// The job with only `recipients` (by index), for a retry or dead letter.
fn sub_job(job: &Job, recipients: &[usize]) -> Job {
    let mut sub = job.clone();
    sub.recipients = recipients
        .iter()
        .filter_map(|&i| job.recipients.get(i).cloned())
        .collect();
    sub
}

/// Headers a retry or dead letter carries on.
fn carry(run: &JobRun, origin: &str, attempt: u32) -> Table {
    let mut h = Table::new()
        .int(headers::ATTEMPT, i64::from(attempt))
        .text(headers::JOB_ID, &run.job_id)
        .int(headers::FIRST_RECEIVED, epoch_ms(run.first_received));
    if let Some(e) = run.expires {
        h = h.int(headers::EXPIRES, epoch_ms(e));
    }
    h.text(headers::ORIGIN, origin)
}

fn epoch_ms(t: SystemTime) -> i64 {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn truncate(s: &str) -> &str {
    if s.len() <= DETAIL_MAX {
        return s;
    }
    let mut end = DETAIL_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The pushgate headers of a message.
pub fn read_headers(d: &Delivery) -> JobHeaders {
    JobHeaders {
        message_id: d.message_id(),
        attempt: d
            .header_int(headers::ATTEMPT)
            .and_then(|v| u32::try_from(v).ok()),
        job_id: d.header_text(headers::JOB_ID),
        first_received_ms: d.header_int(headers::FIRST_RECEIVED),
        expires_ms: d.header_int(headers::EXPIRES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_carry() {
        let job: Job = serde_json::from_str(
            r#"{"app":"shop","recipients":[{"platform":"fcm","token":"a"},{"platform":"fcm","token":"b"}]}"#,
        )
        .unwrap();
        let run = JobRun {
            job: Arc::new(job),
            job_id: "j-9".into(),
            attempt: 1,
            first_received: UNIX_EPOCH + std::time::Duration::from_millis(5_000),
            expires: Some(UNIX_EPOCH + std::time::Duration::from_millis(65_000)),
        };
        let h = read_headers(&Delivery::with_headers(carry(&run, "q", 2)));
        assert_eq!(h.attempt, Some(2));
        assert_eq!(h.job_id.as_deref(), Some("j-9"));
        assert_eq!(h.first_received_ms, Some(5_000));
        assert_eq!(h.expires_ms, Some(65_000));
        let sub = sub_job(&run.job, &[1]);
        assert_eq!(sub.recipients.len(), 1);
        assert_eq!(sub.recipients[0].token.as_ref().unwrap().as_str(), "b");
        assert_eq!(truncate(&"é".repeat(400)).len(), 512);
    }
}
