//! The daemon against the real RabbitMQ: results for every recipient, bad input dead-lettered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod amqp_support;

use std::sync::Arc;
use std::time::Duration;

use amqp_support::{by_recipient, job, Harness, Scripted};
use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString};
use pushgate::outcome::{Code, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_jobs_give_n_times_recipients_results() {
    let mut h = Harness::new(|_, _| {}).await;
    let deliver = Arc::new(Scripted::default());
    let daemon = h.start(Arc::clone(&deliver));
    let jobs = 40;
    for j in 0..jobs {
        let tokens = [
            format!("ok-{j}-a"),
            format!("ok-{j}-b"),
            format!("gone-{j}"),
            format!("ok-{j}-c"),
            format!("ok-{j}-d"),
        ];
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        h.publish_job(&job(&format!("job-{j}"), &refs)).await;
    }
    let mut got = h.collect(jobs * 5, Duration::from_secs(20)).await;
    h.collect_more(&mut got, jobs * 5, jobs, Duration::from_secs(5))
        .await;
    let finals = got.finals();
    assert_eq!(finals.len(), jobs * 5);
    let per = by_recipient(&finals);
    assert_eq!(per.len(), jobs * 5, "one final result per recipient");
    for e in &finals {
        let token = e.token.as_deref().unwrap();
        if token.starts_with("gone") {
            assert_eq!(
                (e.status, e.code),
                (Status::Failed, Some(Code::NotRegistered))
            );
            assert_eq!(e.provider_status, Some(410));
        } else {
            assert_eq!((e.status, e.code), (Status::Delivered, None));
            assert_eq!(
                e.provider_id.as_deref(),
                Some(format!("id-{token}").as_str())
            );
        }
        assert_eq!((e.attempt, e.campaign.as_deref()), (1, Some("c1")));
    }
    let fed: Vec<String> = got
        .feedback
        .iter()
        .flat_map(|f| f.tokens.iter().map(|t| t.token.clone()))
        .collect();
    assert_eq!(fed.len(), jobs, "one invalid token per job in feedback");
    assert!(fed.iter().all(|t| t.starts_with("gone")));

    daemon_settles(&daemon.status, jobs as u64).await;
    assert!(daemon.status.is_ready());
    let status = Arc::clone(&daemon.status);
    daemon.shutdown().await.unwrap();
    assert!(!status.is_ready());
    assert!(h.take_input().await.is_empty(), "every job acked");
    assert!(
        status.ack_frames.load(std::sync::atomic::Ordering::Relaxed) <= jobs as u64,
        "acks are never more frames than jobs"
    );
    h.cleanup().await;
}

async fn daemon_settles(status: &pushgate::app::Status, jobs: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    for _ in 0..100 {
        if status.jobs_acked.load(Relaxed) >= jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status.jobs_acked.load(Relaxed), jobs);
    assert_eq!(status.jobs_received.load(Relaxed), jobs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dead_lettered_and_consumption_continues() {
    let mut h = Harness::new(|_, _| {}).await;
    let deliver = Arc::new(Scripted::default());
    let daemon = h.start(Arc::clone(&deliver));
    h.publish(b"this is not json").await;
    h.publish(br#"{"app":"shop","bogus":true,"recipients":[{"platform":"apns","token":"ok-x1","id":"a"},{"platform":"fcm","token":"ok-x2","id":"b"},{"platform":"carrier-pigeon"}]}"#).await;
    h.publish_job(&serde_json::json!({"id": "j-unknown", "app": "nope",
        "recipients": [{"platform": "fcm", "token": "ok-u1"}, {"platform": "fcm", "token": "ok-u2"}]}))
        .await;
    h.publish_job(&serde_json::json!({"id": "j-empty", "app": "shop", "recipients": []}))
        .await;
    h.publish_job(&job("j-good", &["ok-good"])).await;

    let dead = h.dead_letters(4, Duration::from_secs(10)).await;
    let mut reasons: Vec<&str> = dead.iter().map(|(r, _)| r.as_str()).collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        ["invalid-job", "invalid-job", "not-json", "unknown-app"]
    );
    assert!(
        dead.iter().any(|(_, body)| body == b"this is not json"),
        "original body kept"
    );

    // 2 readable recipients of the schema failure, 2 of the unknown app
    // (on nope.results), 1 delivered good job.
    let got = h.collect(5, Duration::from_secs(10)).await;
    let finals = got.finals();
    assert_eq!(finals.len(), 5);
    let invalid = finals
        .iter()
        .filter(|e| e.code == Some(Code::InvalidJob))
        .count();
    assert_eq!(invalid, 2);
    for (e, app) in got.results.iter().zip(&got.apps) {
        if e.code == Some(Code::UnknownApp) {
            assert_eq!((app.as_str(), e.job_id.as_str()), ("nope", "j-unknown"));
        }
    }
    let unknown = finals
        .iter()
        .filter(|e| e.code == Some(Code::UnknownApp))
        .count();
    assert_eq!(unknown, 2);
    let good: Vec<_> = finals.iter().filter(|e| e.job_id == "j-good").collect();
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].status, Status::Delivered);
    assert_eq!(
        deliver.calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "bad jobs are never delivered"
    );

    let status = Arc::clone(&daemon.status);
    daemon.shutdown().await.unwrap();
    assert_eq!(
        status
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    assert!(
        h.take_input().await.is_empty(),
        "bad jobs are acked, not requeued"
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_job_does_not_stall_the_prefetch_window() {
    let mut h = Harness::new(|amqp, daemon| {
        amqp.inputs[0].prefetch = 4;
        daemon.drain_timeout = Duration::from_millis(300);
    })
    .await;
    let daemon = h.start(Arc::new(Scripted::default()));
    h.publish_job(&job("j-hang", &["hang-1"])).await;
    for j in 0..20 {
        h.publish_job(&job(&format!("j-{j}"), &[&format!("ok-{j}")]))
            .await;
    }
    let got = h.collect(20, Duration::from_secs(10)).await;
    assert_eq!(
        got.finals().len(),
        20,
        "jobs behind the hanging one are served"
    );
    let status = Arc::clone(&daemon.status);
    daemon.shutdown().await.unwrap();
    assert_eq!(
        status.jobs_acked.load(std::sync::atomic::Ordering::Relaxed),
        20
    );
    let left = h.take_input().await;
    assert_eq!(left.len(), 1, "the hanging job went back to the queue");
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_is_dead_lettered_once_not_redelivered_forever() {
    let mut h = Harness::new(|_, _| {}).await;
    let deliver = Arc::new(Scripted::default());
    let daemon = h.start(Arc::clone(&deliver));
    h.publish_job(&job("j-boom", &["boom-1"])).await;
    h.publish_job(&job("j-after", &["ok-after"])).await;

    let dead = h.dead_letters(1, Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "internal-error");
    let body: serde_json::Value = serde_json::from_slice(&dead[0].1).unwrap();
    assert_eq!(body["id"], "j-boom", "the original job is kept");
    let got = h.collect(1, Duration::from_secs(10)).await;
    assert_eq!(got.finals().len(), 1);
    assert_eq!(got.finals()[0].job_id, "j-after", "consumption continues");

    let status = Arc::clone(&daemon.status);
    daemon.shutdown().await.unwrap();
    let seen = deliver.seen.lock().unwrap().clone();
    assert_eq!(
        seen.get(&("boom-1".to_owned(), 1)),
        Some(&1),
        "delivered once: no requeue loop"
    );
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(status.dead_lettered.load(Relaxed), 1);
    assert_eq!(status.jobs_acked.load(Relaxed), 2);
    assert!(h.take_input().await.is_empty());
    h.cleanup().await;
}

/// Headers are the producer's: text that is not UTF-8 (AMQP long strings
/// are bytes), byte arrays, and pushgate's own headers with the wrong type
/// must neither close the connection (the job would come back into the
/// same failure forever; docs/benchmarks.md round 4 found an AMQP client
/// that does this) nor lose the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_headers_neither_break_the_session_nor_lose_the_job() {
    let mut h = Harness::new(|_, _| {}).await;
    let daemon = h.start(Arc::new(Scripted::default()));
    let mut odd = FieldTable::default();
    let not_utf8 = || AMQPValue::LongString(LongString::from(vec![0xff_u8, 0xfe, b'x']));
    odd.insert("x-note".into(), not_utf8());
    odd.insert(
        "x-bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0_u8, 1, 2])),
    );
    odd.insert("x-pushgate-attempt".into(), not_utf8());
    odd.insert("x-pushgate-job-id".into(), AMQPValue::Boolean(true));
    let odd_job = serde_json::to_vec(&job("j-odd", &["ok-odd"])).unwrap();
    h.publish_with(&odd_job, odd).await;
    h.publish_job(&job("j-plain", &["ok-plain"])).await;

    let got = h.collect(2, Duration::from_secs(10)).await;
    let finals = got.finals();
    let mut jobs: Vec<&str> = finals.iter().map(|e| e.job_id.as_str()).collect();
    jobs.sort_unstable();
    assert_eq!(jobs, ["j-odd", "j-plain"]);
    assert!(finals.iter().all(|e| e.status == Status::Delivered));
    assert!(
        finals.iter().all(|e| e.attempt == 1),
        "a bad attempt header counts as none"
    );

    let status = Arc::clone(&daemon.status);
    daemon.shutdown().await.unwrap();
    assert_eq!(
        status.sessions.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one broker session: the odd headers did not end it"
    );
    assert!(h.take_input().await.is_empty(), "both jobs acked");
    h.cleanup().await;
}
