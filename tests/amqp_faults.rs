//! Broker faults and shutdown against the real RabbitMQ: a forced connection
//! close mid-run loses nothing; shutdown mid-run leaves every job acked with
//! all its results or back in the queue.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod amqp_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use amqp_support::{force_close, job, Harness, Scripted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_connection_close_mid_run_still_gives_every_job_its_results() {
    let mut h = Harness::new(|amqp, _| amqp.inputs[0].prefetch = 8).await;
    let deliver = Arc::new(Scripted::default());
    let daemon = h.start(Arc::clone(&deliver));
    // 300 jobs with a 300 ms recipient, 8 at a time: about 11 s, longer
    // than rabbitmqctl takes to find and close the connection.
    let jobs = 300;
    let bad = 20;
    for j in 0..jobs {
        let (a, b) = (format!("slow-{j}-a"), format!("ok-{j}-b"));
        h.publish_job(&job(&format!("job-{j}"), &[&a, &b])).await;
        if j % (jobs / bad) == 0 {
            h.publish(format!("not json {j}").as_bytes()).await;
        }
    }
    // Let it get going, then cut the daemon's connection.
    let mut got = h.collect(10, Duration::from_secs(10)).await;
    assert!(got.finals().len() >= 10);
    let closed = force_close(&h.prefix).await;
    assert!(closed >= 1, "the daemon's connection was found and closed");

    let want: HashSet<(String, String)> = (0..jobs)
        .flat_map(|j| {
            [
                (format!("job-{j}"), "r0".into()),
                (format!("job-{j}"), "r1".into()),
            ]
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let have: HashSet<(String, String)> = got
            .finals()
            .iter()
            .map(|e| (e.job_id.clone(), e.recipient_id.clone().unwrap()))
            .collect();
        if have.is_superset(&want) || tokio::time::Instant::now() > deadline {
            assert_eq!(
                have, want,
                "every recipient of every job got a final result"
            );
            break;
        }
        let n = got.finals().len() + 1;
        h.collect_more(&mut got, n, 0, Duration::from_secs(2)).await;
    }
    let st = Arc::clone(&daemon.status);
    // The close may land after the last result: wait for the new session.
    for _ in 0..100 {
        if st.sessions.load(Relaxed) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(st.sessions.load(Relaxed) >= 2, "reconnected");
    daemon.shutdown().await.unwrap();
    let mut per: HashMap<(String, String), usize> = HashMap::new();
    for e in got.finals() {
        *per.entry((e.job_id.clone(), e.recipient_id.clone().unwrap()))
            .or_default() += 1;
    }
    let duplicates: usize = per.values().map(|n| n - 1).sum();
    let redelivered = st.jobs_redelivered.load(Relaxed);
    eprintln!(
        "forced close: {} final results for {} recipients, {duplicates} duplicates, {redelivered} redelivered jobs",
        got.finals().len(),
        want.len()
    );
    assert!(
        duplicates as u64 <= redelivered * 2,
        "duplicates only from redeliveries ({duplicates} > 2 x {redelivered})"
    );
    assert!(h.take_input().await.is_empty(), "nothing left behind");
    // Count everything: every message published was acked (dead letters
    // included) once, or more than once only if it was redelivered.
    let published = (jobs + bad) as u64;
    let acked = st.jobs_acked.load(Relaxed);
    let dead = st.dead_lettered.load(Relaxed);
    eprintln!("forced close: {published} published, {acked} acked ({dead} dead-lettered)");
    assert!(
        (published..=published + redelivered).contains(&acked),
        "published {published} = acked {acked} - re-acked redeliveries (<= {redelivered})"
    );
    assert!(
        (bad as u64..=bad as u64 + redelivered).contains(&dead),
        "{dead} dead letters for {bad} bad messages"
    );
    // A bad message redelivered after the close may be dead-lettered twice.
    let dead_letters = h.dead_letters(dead as usize, Duration::from_secs(5)).await;
    let bodies: HashSet<Vec<u8>> = dead_letters.into_iter().map(|(_, b)| b).collect();
    assert_eq!(bodies.len(), bad, "every bad message is in the dead queue");
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_run_leaves_each_job_acked_with_results_or_requeued() {
    let mut h = Harness::new(|amqp, daemon| {
        amqp.inputs[0].prefetch = 10;
        daemon.drain_timeout = Duration::from_millis(800);
    })
    .await;
    let deliver = Arc::new(Scripted::default());
    let daemon = h.start(Arc::clone(&deliver));
    let mut ids = Vec::new();
    for j in 0..30 {
        let id = format!("job-{j}");
        // Every fifth job never finishes within the drain deadline.
        let first = if j % 5 == 0 { "hang" } else { "slow" };
        let (a, b) = (format!("{first}-{j}"), format!("ok-{j}"));
        h.publish_job(&job(&id, &[&a, &b])).await;
        ids.push(id);
    }
    let mut got = h.collect(4, Duration::from_secs(10)).await;
    let st = Arc::clone(&daemon.status);
    let started = tokio::time::Instant::now();
    daemon.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drain is bounded"
    );
    assert!(!st.is_ready());
    h.collect_more(&mut got, usize::MAX, 0, Duration::from_millis(500))
        .await;

    let mut finals: HashMap<String, HashSet<String>> = HashMap::new();
    for e in got.finals() {
        finals
            .entry(e.job_id.clone())
            .or_default()
            .insert(e.recipient_id.clone().unwrap());
    }
    let queued: HashSet<String> = h
        .take_input()
        .await
        .iter()
        .map(|b| {
            serde_json::from_slice::<serde_json::Value>(b).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let acked = st.jobs_acked.load(Relaxed) as usize;
    eprintln!("shutdown: {acked} jobs acked, {} requeued", queued.len());
    assert!(!queued.is_empty(), "hanging jobs went back to the queue");
    assert!(acked > 0, "some jobs finished before the shutdown");
    for id in &ids {
        let complete = finals.get(id).is_some_and(|r| r.len() == 2);
        assert!(
            complete ^ queued.contains(id),
            "{id}: complete results = {complete}, back in queue = {}",
            queued.contains(id)
        );
    }
    assert_eq!(acked + queued.len(), ids.len());
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_retried_and_shutdown_still_exits() {
    let h = Harness::new(|amqp, _| {
        amqp.url = pushgate::config::Secret::new("amqp://guest:guest@127.0.0.1:1/%2f".into());
    })
    .await;
    let daemon = h.start(Arc::new(Scripted::default()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!daemon.status.is_ready());
    assert!(
        !daemon.handle_finished(),
        "keeps retrying instead of failing"
    );
    let st = Arc::clone(&daemon.status);
    daemon.shutdown().await.unwrap();
    assert_eq!(st.sessions.load(Relaxed), 0);
    h.cleanup().await;
}
