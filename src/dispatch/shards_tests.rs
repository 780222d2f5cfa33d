//! Dispatch shards with a recording deliverer: where deliveries run, how
//! jobs spread, panics, cancellation, stopping.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;

use super::*;
use crate::config::RetryConfig;
use crate::ingest::retry::RetryPolicy;
use crate::job::Job;
use crate::outcome::{Outcome, Status};

/// Records the thread of every delivery; `boom` panics, `slow` takes 10 s.
struct Recorder {
    shard: usize,
    seen: Mutex<Vec<(String, String)>>,
    started: AtomicUsize,
    dropped: Arc<AtomicUsize>,
}

struct CountDrop(Arc<AtomicUsize>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Relaxed);
    }
}

impl Deliver for Recorder {
    async fn deliver(&self, job: &Arc<Job>, recipient: usize, _attempt: u32) -> Outcome {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        let id = job.id.clone().unwrap_or_default();
        self.seen.lock().unwrap().push((id, thread));
        self.started.fetch_add(1, Relaxed);
        let _count = CountDrop(Arc::clone(&self.dropped));
        let token = job.recipients[recipient].token.as_ref().unwrap().as_str();
        if token == "boom" {
            panic!("boom on shard {}", self.shard);
        }
        let wait = if token == "slow" { 10_000 } else { 2 };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        Outcome::delivered(200, None)
    }
}

fn job(id: &str, tokens: &[&str]) -> JobRun {
    let recipients: Vec<serde_json::Value> = tokens
        .iter()
        .map(|t| serde_json::json!({"platform": "fcm", "token": t}))
        .collect();
    let job: Job = serde_json::from_value(
        serde_json::json!({"id": id, "app": "shop", "recipients": recipients}),
    )
    .unwrap();
    JobRun {
        job: Arc::new(job),
        job_id: id.into(),
        attempt: 1,
        first_received: SystemTime::now(),
        expires: None,
    }
}

fn sharded(n: usize) -> (Dispatcher<Recorder>, Arc<Shards<Recorder>>) {
    let shards = Shards::start(n, |shard| {
        Ok::<_, std::convert::Infallible>(Recorder {
            shard,
            seen: Mutex::new(Vec::new()),
            started: AtomicUsize::new(0),
            dropped: Arc::new(AtomicUsize::new(0)),
        })
    })
    .unwrap();
    let shards = Arc::new(shards);
    let retry = RetryPolicy::new(&RetryConfig {
        exchange: "x".into(),
        queue_prefix: "q.".into(),
        delays: vec![Duration::from_millis(200)],
        max_attempts: 3,
        base: Duration::from_millis(200),
        jitter: 0.0,
    });
    let first = Arc::clone(shards.first());
    let d = Dispatcher::new(first, Arc::new(retry)).with_shards(Arc::clone(&shards));
    (d, shards)
}

/// Starts a job "busy" of `slow` 10-second recipients; returns once
/// `started` of them are being delivered.
async fn start_busy(
    d: &Dispatcher<Recorder>,
    shards: &Shards<Recorder>,
    permits: &Permits,
    slow: usize,
    started: usize,
) -> tokio::task::JoinHandle<Settled> {
    let (d, permits) = (d.clone(), permits.clone());
    let run = job("busy", &vec!["slow"; slow]);
    let busy = tokio::spawn(async move { d.dispatch_job(&run, &permits).await });
    while shards
        .delivers()
        .map(|r| r.started.load(Relaxed))
        .sum::<usize>()
        < started
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    busy
}

#[tokio::test]
async fn each_job_is_delivered_on_one_shard_thread_and_jobs_spread_over_the_shards() {
    let (d, shards) = sharded(2);
    let permits = Permits::new(1000, 2);
    let tokens: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let runs: Vec<JobRun> = (0..4).map(|j| job(&format!("j{j}"), &tokens)).collect();
    let settled =
        futures_util::future::join_all(runs.iter().map(|r| d.dispatch_job(r, &permits))).await;
    for s in &settled {
        assert_eq!(s.entries.len(), 20);
        assert!(s.entries.iter().all(|e| e.status == Status::Delivered));
    }
    let mut threads_of_job: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (i, r) in shards.delivers().enumerate() {
        let seen = r.seen.lock().unwrap();
        assert!(!seen.is_empty(), "shard {i} got no job: {seen:?}");
        for (job, thread) in seen.iter() {
            assert_eq!(
                thread,
                &format!("pushgate-shard-{i}"),
                "shard {i}'s deliverer runs on its thread"
            );
            threads_of_job
                .entry(job.clone())
                .or_default()
                .insert(thread.clone());
        }
    }
    assert_eq!(threads_of_job.len(), 4);
    for (job, threads) in &threads_of_job {
        assert_eq!(threads.len(), 1, "{job} ran on one shard: {threads:?}");
    }
    shards.stop().await;
}

#[tokio::test]
async fn a_job_goes_to_the_shard_with_the_fewest_recipients_in_flight() {
    let (d, shards) = sharded(2);
    let permits = Permits::new(1000, 2);
    let busy = start_busy(&d, &shards, &permits, 10, 10).await;
    // Rotation alone would put the second of these on the busy shard.
    for id in ["a", "b"] {
        let s = d.dispatch_job(&job(id, &["t"]), &permits).await;
        assert_eq!(s.entries[0].status, Status::Delivered);
    }
    let jobs_of = |r: &Recorder| -> BTreeSet<String> {
        r.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(j, _)| j.clone())
            .collect()
    };
    let all: Vec<BTreeSet<String>> = shards.delivers().map(|r| jobs_of(r)).collect();
    let idle = all
        .iter()
        .find(|j| !j.contains("busy"))
        .expect("one shard is idle");
    assert_eq!(
        idle,
        &BTreeSet::from(["a".to_owned(), "b".to_owned()]),
        "{all:?}"
    );
    busy.abort();
    shards.stop().await;
}

#[tokio::test]
async fn each_shard_has_its_own_share_of_the_queues_permits() {
    let (d, shards) = sharded(2);
    // Two each: the busy job holds its shard's two and waits for more.
    let permits = Permits::new(4, 2);
    let busy = start_busy(&d, &shards, &permits, 6, 2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        permits.available(),
        2,
        "the busy shard took its two, no more"
    );
    let quick = tokio::time::timeout(
        Duration::from_secs(2),
        d.dispatch_job(&job("quick", &["t"]), &permits),
    )
    .await
    .expect("the other shard's permits are its own");
    assert_eq!(quick.entries[0].status, Status::Delivered);
    busy.abort();
    shards.stop().await;
}

#[tokio::test]
async fn a_panic_on_a_shard_reaches_the_caller() {
    let (d, shards) = sharded(2);
    let permits = Permits::new(10, 2);
    let run = job("j", &["ok", "boom"]);
    let caught = AssertUnwindSafe(d.dispatch_job(&run, &permits))
        .catch_unwind()
        .await;
    let panic = caught.expect_err("the job's panic is raised to the caller");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.starts_with("boom on shard"), "{text}");
    shards.stop().await;
}

#[tokio::test]
async fn dropping_the_dispatch_cancels_the_job_on_its_shard() {
    let (d, shards) = sharded(1);
    let permits = Permits::new(10, 2);
    let run = job("j", &["slow", "slow"]);
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), d.dispatch_job(&run, &permits)).await;
    assert!(gave_up.is_err(), "the slow job cannot finish in 100 ms");
    let r = Arc::clone(shards.first());
    assert_eq!(r.started.load(Relaxed), 2);
    for _ in 0..100 {
        if r.dropped.load(Relaxed) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        r.dropped.load(Relaxed),
        2,
        "both deliveries dropped on the shard"
    );
    shards.stop().await;
}

/// A job of SPLIT_MIN or more runs in contiguous parts, one per shard,
/// each part on its shard's thread; every recipient is delivered once
/// and the entries come back in the job's order.
#[tokio::test]
async fn a_large_job_is_split_over_the_shards_in_contiguous_parts() {
    let (d, shards) = sharded(2);
    let permits = Permits::new(1000, 2);
    let n = SPLIT_MIN + 36;
    let tokens: Vec<String> = (0..n).map(|i| format!("t{i:03}")).collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let s = d.dispatch_job(&job("big", &refs), &permits).await;
    assert_eq!(s.entries.len(), n);
    for (e, t) in s.entries.iter().zip(&tokens) {
        assert_eq!(e.status, Status::Delivered);
        assert_eq!(e.token.as_deref(), Some(t.as_str()), "entries in job order");
    }
    let counts: Vec<usize> = shards
        .delivers()
        .map(|r| r.seen.lock().unwrap().len())
        .collect();
    assert_eq!(counts, [n / 2, n - n / 2], "half the job on each shard");
    for (i, r) in shards.delivers().enumerate() {
        for (_, thread) in r.seen.lock().unwrap().iter() {
            assert_eq!(thread, &format!("pushgate-shard-{i}"));
        }
    }
    // Below SPLIT_MIN a job stays whole.
    let small: Vec<&str> = refs[..SPLIT_MIN - 1].to_vec();
    let before = counts;
    d.dispatch_job(&job("small", &small), &permits).await;
    let grew: Vec<usize> = shards
        .delivers()
        .zip(&before)
        .map(|(r, b)| r.seen.lock().unwrap().len() - b)
        .collect();
    assert!(
        grew.contains(&(SPLIT_MIN - 1)) && grew.contains(&0),
        "{grew:?}"
    );
    shards.stop().await;
}

/// Stopped shards defer every part of a large job, nothing lost.
#[tokio::test]
async fn a_large_job_on_stopped_shards_is_deferred_whole() {
    let (d, shards) = sharded(2);
    shards.stop().await;
    let permits = Permits::new(1000, 2);
    let tokens: Vec<String> = (0..SPLIT_MIN * 2).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let s = d.dispatch_job(&job("big", &refs), &permits).await;
    assert_eq!(s.entries.len(), SPLIT_MIN * 2);
    assert!(s.entries.iter().all(|e| e.status == Status::Retrying));
    assert_eq!(s.deferred.get(&0).map(Vec::len), Some(SPLIT_MIN * 2));
}

#[tokio::test]
async fn after_stop_every_recipient_is_deferred_not_lost() {
    let (d, shards) = sharded(2);
    shards.stop().await;
    let permits = Permits::new(10, 2);
    let run = job("j", &["a", "b", "c"]);
    let s = d.dispatch_job(&run, &permits).await;
    assert_eq!(s.entries.len(), 3);
    assert!(
        s.entries.iter().all(|e| e.status == Status::Retrying),
        "{:?}",
        s.entries
    );
    assert_eq!(
        s.deferred.get(&0).map(Vec::len),
        Some(3),
        "{:?}",
        s.deferred
    );
    for r in shards.delivers() {
        assert_eq!(r.started.load(Relaxed), 0);
    }
}

#[tokio::test]
async fn the_shards_pool_stats_are_every_shards_own() {
    struct Pools;
    impl PoolSource for Pools {
        fn pool_stats(&self) -> Vec<(Platform, PoolStats)> {
            let s = PoolStats {
                open: 2,
                ..PoolStats::default()
            };
            vec![(Platform::Apns, s)]
        }
    }
    let shards = Shards::start(3, |_| Ok::<_, std::convert::Infallible>(Pools)).unwrap();
    let stats = shards.pool_stats();
    assert_eq!(stats.len(), 3);
    assert_eq!(stats.iter().map(|(_, s)| s.open).sum::<usize>(), 6);
    shards.stop().await;
}
