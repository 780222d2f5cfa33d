//! Accounts for every result entry of a run: which recipient it settles,
//! duplicates, codes, end-to-end latency, and the first and last arrival.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use crate::jobs::parse_job_id;

/// The fields of a result message the load test reads (borrowed: cheap).
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    results: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    job_id: Cow<'a, str>,
    #[serde(borrow, default)]
    recipient_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    /// The gateway's own measure of the provider exchange, ms.
    #[serde(default)]
    latency_ms: Option<u64>,
}

/// When each job was published, in nanoseconds since the run's epoch
/// (0 = not yet). Shared by the publisher and the result reader.
#[derive(Debug)]
pub struct PublishTimes {
    pub epoch: Instant,
    times: Vec<AtomicU64>,
}

impl PublishTimes {
    pub fn new(jobs: u64, epoch: Instant) -> Arc<PublishTimes> {
        Arc::new(PublishTimes {
            epoch,
            times: (0..jobs).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    pub fn mark(&self, seq: u64) {
        if let Some(t) = self.times.get(seq as usize) {
            let ns = self.epoch.elapsed().as_nanos().max(1);
            t.store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    fn get(&self, seq: u64) -> Option<u64> {
        let t = self.times.get(seq as usize)?.load(Ordering::Relaxed);
        (t != 0).then_some(t)
    }
}

/// Everything counted from the result messages of one run.
#[derive(Debug)]
pub struct Tracker {
    tag: String,
    recipients: usize,
    /// One bit per (job, recipient): a final entry was seen.
    seen: Vec<u64>,
    pub finals: u64,
    /// Final entries for a recipient that already had one (redeliveries).
    pub duplicates: u64,
    /// `retrying` entries (a recipient handed to a delay queue).
    pub retrying: u64,
    /// Entries that name no job of this run.
    pub foreign: u64,
    /// Final entries by code ("delivered" for delivered ones).
    pub codes: BTreeMap<String, u64>,
    /// Token-feedback entries (`<app>.token.invalid`).
    pub token_feedback: u64,
    /// Retry sub-jobs published to the delay queues, and their recipients.
    pub retry_jobs: u64,
    pub retry_recipients: u64,
    /// Publish-to-result latency of each final entry, microseconds.
    pub latencies_us: Vec<u32>,
    /// The provider exchange of each final entry as the gateway timed it
    /// (`latency_ms`), microseconds: the end-to-end latency minus this is
    /// the gateway's and the broker's share.
    pub provider_us: Vec<u32>,
    /// Each job's slowest final entry (publish-to-result, µs; 0 = none
    /// measured) and when the job was published (ms after the run's epoch):
    /// where a tail comes from, and when in the run.
    job_worst: Vec<[u32; 2]>,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    pub messages: u64,
    /// Entries of jobs published less than this after the first publish
    /// count everywhere but in the latencies.
    warmup_ns: u64,
}

impl Tracker {
    pub fn new(tag: &str, jobs: u64, recipients: usize) -> Tracker {
        let bits = jobs as usize * recipients;
        Tracker {
            tag: tag.to_owned(),
            recipients,
            seen: vec![0; bits.div_ceil(64)],
            finals: 0,
            duplicates: 0,
            retrying: 0,
            foreign: 0,
            codes: BTreeMap::new(),
            token_feedback: 0,
            retry_jobs: 0,
            retry_recipients: 0,
            latencies_us: Vec::with_capacity(bits.min(4_000_000)),
            provider_us: Vec::with_capacity(bits.min(4_000_000)),
            job_worst: vec![[0; 2]; usize::try_from(jobs).unwrap_or(0)],
            first: None,
            last: None,
            messages: 0,
            warmup_ns: 0,
        }
    }

    /// Leaves the jobs published in the first `warmup` out of the latencies.
    pub fn with_latency_warmup(mut self, warmup: std::time::Duration) -> Tracker {
        self.warmup_ns = u64::try_from(warmup.as_nanos()).unwrap_or(u64::MAX);
        self
    }

    /// Counts the entries of one result message that arrived `now`.
    pub fn result_message(&mut self, body: &[u8], now: Instant, times: &PublishTimes) {
        self.messages += 1;
        // One UTF-8 check of the whole body, then `from_str`: `from_slice`
        // checks each string on its own (as in the gateway's `Job::parse`).
        let Ok(text) = std::str::from_utf8(body) else {
            self.foreign += 1;
            return;
        };
        let Ok(msg) = serde_json::from_str::<Message<'_>>(text) else {
            self.foreign += 1;
            return;
        };
        for e in msg.results {
            self.entry(&e, now, times);
        }
    }

    /// Counts a retry sub-job the gateway handed to a delay queue.
    pub fn retry_message(&mut self, body: &[u8]) {
        self.retry_jobs += 1;
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            self.retry_recipients += v["recipients"].as_array().map_or(0, |a| a.len() as u64);
        }
    }

    /// Counts a token-feedback message.
    pub fn feedback_message(&mut self, body: &[u8]) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            self.token_feedback += v["tokens"].as_array().map_or(0, |a| a.len() as u64);
        }
    }

    fn entry(&mut self, e: &Entry<'_>, now: Instant, times: &PublishTimes) {
        let Some((tag, seq)) = parse_job_id(&e.job_id) else {
            self.foreign += 1;
            return;
        };
        let r = e
            .recipient_id
            .as_deref()
            .and_then(|id| id.strip_prefix('r')?.parse::<usize>().ok());
        let Some(r) = r.filter(|&r| tag == self.tag && r < self.recipients) else {
            self.foreign += 1;
            return;
        };
        if e.status == "retrying" {
            self.retrying += 1;
            return;
        }
        let bit = seq as usize * self.recipients + r;
        let Some(word) = self.seen.get_mut(bit / 64) else {
            self.foreign += 1;
            return;
        };
        if *word & (1 << (bit % 64)) != 0 {
            self.duplicates += 1;
            return;
        }
        *word |= 1 << (bit % 64);
        self.finals += 1;
        let code = e.code.as_deref().unwrap_or(&e.status);
        match self.codes.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                self.codes.insert(code.to_owned(), 1);
            }
        }
        if let Some(sent) = times.get(seq).filter(|&sent| sent >= self.warmup_ns) {
            let at = u64::try_from(now.duration_since(times.epoch).as_nanos()).unwrap_or(0);
            let us = u32::try_from(at.saturating_sub(sent) / 1000).unwrap_or(u32::MAX);
            self.latencies_us.push(us);
            if let Some(w) = self.job_worst.get_mut(seq as usize) {
                let sent_ms = u32::try_from(sent / 1_000_000).unwrap_or(u32::MAX);
                *w = [w[0].max(us), sent_ms];
            }
            if let Some(ms) = e.latency_ms {
                let us = ms.saturating_mul(1000);
                self.provider_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Recipients of jobs `0..jobs` that have no final entry.
    pub fn missing(&self, jobs: u64, skip: impl Fn(u64) -> bool) -> u64 {
        let mut n = 0;
        for seq in (0..jobs).filter(|&s| !skip(s)) {
            for r in 0..self.recipients {
                let bit = seq as usize * self.recipients + r;
                let set = self
                    .seen
                    .get(bit / 64)
                    .is_some_and(|w| w & (1 << (bit % 64)) != 0);
                n += u64::from(!set);
            }
        }
        n
    }

    /// The `n` jobs whose slowest final entry was slowest, slowest first:
    /// (its latency in µs, the job's publish time in ms after the run's
    /// epoch).
    pub fn slowest_jobs(&self, n: usize) -> Vec<(u32, u32)> {
        let mut jobs: Vec<(u32, u32)> = self
            .job_worst
            .iter()
            .filter(|w| w[0] > 0)
            .map(|w| (w[0], w[1]))
            .collect();
        let n = n.min(jobs.len());
        if n == 0 {
            return Vec::new();
        }
        jobs.select_nth_unstable_by(n - 1, |a, b| b.cmp(a));
        jobs.truncate(n);
        jobs.sort_unstable_by(|a, b| b.cmp(a));
        jobs
    }
}

/// p50, p95, p99 and max of `samples` (microseconds), sorted in place.
pub fn percentiles(samples: &mut [u32]) -> Option<[u32; 4]> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Some([at(0.50), at(0.95), at(0.99), samples[samples.len() - 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(entries: &[(&str, &str, &str, Option<&str>)]) -> Vec<u8> {
        let results: Vec<serde_json::Value> = entries
            .iter()
            .map(|(job, r, status, code)| {
                serde_json::json!({"job_id": job, "recipient_id": r, "status": status,
                                   "code": code, "platform": "apns", "attempt": 1,
                                   "latency_ms": 1, "ts": "x"})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"app": "shop", "results": results}))
            .unwrap_or_default()
    }

    #[test]
    fn counts_finals_duplicates_and_missing() {
        let times = PublishTimes::new(3, Instant::now());
        times.mark(0);
        let mut t = Tracker::new("lt-x", 3, 2);
        let now = Instant::now();
        t.result_message(
            &msg(&[
                ("lt-x-0", "r0", "delivered", None),
                ("lt-x-0", "r1", "failed", Some("NotRegistered")),
                ("lt-x-1", "r0", "retrying", Some("ProviderUnavailable")),
                ("other-1", "r0", "delivered", None),
            ]),
            now,
            &times,
        );
        t.result_message(&msg(&[("lt-x-0", "r0", "delivered", None)]), now, &times);
        assert_eq!(
            (t.finals, t.duplicates, t.retrying, t.foreign),
            (2, 1, 1, 1)
        );
        assert_eq!(t.codes.get("NotRegistered"), Some(&1));
        assert_eq!(t.latencies_us.len(), 2);
        assert_eq!(t.missing(3, |_| false), 4);
        assert_eq!(t.missing(3, |s| s != 0), 0);
    }

    #[test]
    fn slowest_jobs_name_each_jobs_slowest_entry_and_when_it_was_published() {
        let epoch = Instant::now() - std::time::Duration::from_secs(10);
        let times = PublishTimes::new(4, epoch);
        for seq in 0..3 {
            times.mark(seq);
        }
        let mut t = Tracker::new("lt-x", 4, 2);
        let sent = |seq: u64| epoch + std::time::Duration::from_nanos(times.get(seq).unwrap_or(0));
        let ms = std::time::Duration::from_millis;
        // Job 0: entries after 5 and 40 ms; job 1: 20 ms; job 2: 30 ms.
        let one = |t: &mut Tracker, job: &str, r: &str, at: Instant| {
            t.result_message(&msg(&[(job, r, "delivered", None)]), at, &times);
        };
        one(&mut t, "lt-x-0", "r0", sent(0) + ms(5));
        one(&mut t, "lt-x-0", "r1", sent(0) + ms(40));
        one(&mut t, "lt-x-1", "r0", sent(1) + ms(20));
        one(&mut t, "lt-x-2", "r0", sent(2) + ms(30));
        let slowest = t.slowest_jobs(2);
        let worst: Vec<u32> = slowest.iter().map(|&(us, _)| us / 1000).collect();
        assert_eq!(worst, [40, 30], "job 0's slowest entry, then job 2's");
        let at = u32::try_from(times.get(0).unwrap_or(0) / 1_000_000).unwrap_or(0);
        assert_eq!(slowest[0].1, at, "job 0's publish time, in ms");
        assert_eq!(t.slowest_jobs(10).len(), 3, "job 3 has no result");
    }

    #[test]
    fn warm_up_jobs_count_but_have_no_latency() {
        let times = PublishTimes::new(2, Instant::now());
        times.mark(0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        times.mark(1);
        let mut t =
            Tracker::new("lt-x", 2, 1).with_latency_warmup(std::time::Duration::from_millis(10));
        let both = msg(&[
            ("lt-x-0", "r0", "delivered", None),
            ("lt-x-1", "r0", "delivered", None),
        ]);
        t.result_message(&both, Instant::now(), &times);
        assert_eq!(t.finals, 2, "both counted");
        assert_eq!(
            t.latencies_us.len(),
            1,
            "only the job after the warm-up timed"
        );
    }

    #[test]
    fn percentiles_of_samples() {
        let mut s: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(percentiles(&mut s), Some([51, 95, 99, 100]));
        assert_eq!(percentiles(&mut []), None);
    }
}
