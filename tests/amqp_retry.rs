//! Retries through the delay queues of the real RabbitMQ: attempt 2, expiry, max attempts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod amqp_support;

use std::sync::Arc;
use std::time::Duration;

use amqp_support::{job, Harness, Scripted};
use pushgate::outcome::{Code, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_recipient_is_retried_and_delivered_with_attempt_2() {
    let mut h = Harness::new(|_, _| {}).await;
    let deliver = Arc::new(Scripted::default());
    let daemon = h.start(Arc::clone(&deliver));
    h.publish_job(&job("j-flaky", &["ok-1", "flaky-1", "gone-1"]))
        .await;
    let got = h.collect(3, Duration::from_secs(10)).await;
    let finals = got.finals();
    assert_eq!(finals.len(), 3);
    let flaky: Vec<_> = got
        .results
        .iter()
        .filter(|e| e.token.as_deref() == Some("flaky-1"))
        .collect();
    assert_eq!(flaky.len(), 2, "a retrying entry, then the final one");
    assert_eq!(
        (flaky[0].status, flaky[0].code, flaky[0].attempt),
        (Status::Retrying, Some(Code::ProviderUnavailable), 1)
    );
    assert_eq!((flaky[1].status, flaky[1].attempt), (Status::Delivered, 2));
    assert_eq!(flaky[1].job_id, "j-flaky");
    // Past the longest delay queue's TTL: a retry reaches one delay queue
    // only, so no second copy comes back.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Only the flaky recipient was retried, once.
    let seen = deliver.seen.lock().unwrap().clone();
    assert_eq!(seen.get(&("flaky-1".into(), 2)), Some(&1));
    assert_eq!(seen.get(&("ok-1".into(), 2)), None);
    assert_eq!(seen.get(&("ok-1".into(), 1)), Some(&1));

    let status = Arc::clone(&daemon.status);
    daemon.shutdown().await.unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(status.retries_published.load(Relaxed), 1);
    assert_eq!(
        status.jobs_acked.load(Relaxed),
        2,
        "the job and its retry sub-job"
    );
    assert!(h.take_input().await.is_empty());
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_outliving_the_expiry_ends_as_expired() {
    let mut h = Harness::new(|amqp, _| amqp.retry.max_attempts = 100).await;
    let deliver = Arc::new(Scripted::default());
    let daemon = h.start(Arc::clone(&deliver));
    let mut j = job("j-ttl", &["down-1"]);
    j["ttl"] = serde_json::json!(1);
    h.publish_job(&j).await;
    let got = h.collect(1, Duration::from_secs(10)).await;
    let finals = got.finals();
    assert_eq!(finals.len(), 1);
    let last = finals[0];
    assert_eq!(
        (last.status, last.code),
        (Status::Failed, Some(Code::Expired))
    );
    assert!(
        last.attempt >= 2,
        "retried before expiring: attempt {}",
        last.attempt
    );
    // Expiry is measured from the first receipt, not reset per retry.
    assert!(last.attempt <= 6, "attempt {}", last.attempt);
    daemon.shutdown().await.unwrap();
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_gives_a_final_failure_and_a_dead_letter() {
    let mut h = Harness::new(|amqp, _| amqp.retry.max_attempts = 3).await;
    let deliver = Arc::new(Scripted::default());
    let daemon = h.start(Arc::clone(&deliver));
    h.publish_job(&job("j-max", &["down-1", "ok-1"])).await;
    let got = h.collect(2, Duration::from_secs(10)).await;
    let finals = got.finals();
    assert_eq!(finals.len(), 2);
    let down = finals
        .iter()
        .find(|e| e.token.as_deref() == Some("down-1"))
        .unwrap();
    assert_eq!(
        (down.status, down.code, down.attempt),
        (Status::Failed, Some(Code::ProviderUnavailable), 3)
    );
    let dead = h.dead_letters(1, Duration::from_secs(5)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "max-attempts");
    let sub: pushgate::job::Job = serde_json::from_slice(&dead[0].1).unwrap();
    assert_eq!(sub.id.as_deref(), Some("j-max"));
    assert_eq!(sub.recipients.len(), 1, "only the exhausted recipient");
    let seen = deliver.seen.lock().unwrap().clone();
    assert_eq!(seen.get(&("down-1".into(), 4)), None, "never a 4th attempt");
    daemon.shutdown().await.unwrap();
    h.cleanup().await;
}

/// A retry reaches exactly one delay queue, also on a broker where an
/// earlier build left its `x-pushgate-delay` bindings (RabbitMQ skips `x-`
/// headers when matching, so those bindings took every retry).
///
/// The delay queues here hold their messages for a minute, so a slow
/// machine cannot expire the retry before it is counted; the publish is
/// confirmed, so the broker has routed it before the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_routed_to_one_delay_queue_only() {
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use pushgate::ingest::retry::RetryPolicy;
    use pushgate::ingest::topology;

    let h = Harness::new(|amqp, _| {
        amqp.retry.delays = vec![Duration::from_secs(30), Duration::from_secs(60)];
    })
    .await;
    h.ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let retry = RetryPolicy::new(&h.amqp.retry);
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes()));
    for i in 0..retry.len() {
        let mut legacy = FieldTable::default();
        legacy.insert("x-match".into(), text("all"));
        legacy.insert("x-pushgate-delay".into(), text(retry.label(i)));
        h.ch.queue_bind(
            retry.queue(i).into(),
            h.amqp.retry.exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            legacy,
        )
        .await
        .unwrap();
    }
    topology::declare_once(&h.amqp, &retry).await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert("pushgate-delay".into(), text(retry.label(1)));
    let confirm =
        h.ch.basic_publish(
            h.amqp.retry.exchange.as_str().into(),
            h.input().as_str().into(),
            BasicPublishOptions::default(),
            b"{}",
            lapin::BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "the broker took the retry: {confirm:?}");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let mut counts = Vec::new();
    for i in 0..retry.len() {
        let q =
            h.ch.queue_declare(retry.queue(i).into(), passive, FieldTable::default())
                .await
                .unwrap();
        counts.push(q.message_count());
    }
    assert_eq!(counts, [0, 1], "only the 60 s queue holds the retry");
    h.cleanup().await;
}

/// Regression: the retry exchange used to route every retry to every delay
/// queue (RabbitMQ ignores `x-` binding arguments under `x-match: all`), so
/// each retry came back once per delay queue and was delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_one_delay_queue_only() {
    let mut h = Harness::new(|_, _| {}).await;
    let deliver = Arc::new(Scripted::default());
    let daemon = h.start(Arc::clone(&deliver));
    h.publish_job(&job("j-once", &["flaky-9"])).await;
    let got = h.collect(1, Duration::from_secs(10)).await;
    assert_eq!(got.finals().len(), 1);
    // Longer than every delay queue's TTL (200 ms and 400 ms here): a copy
    // routed to the other delay queue would be back by now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let seen = deliver.seen.lock().unwrap().clone();
    assert_eq!(seen.get(&("flaky-9".into(), 2)), Some(&1), "{seen:?}");
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        daemon.status.jobs_received.load(Relaxed),
        2,
        "the job and one retry"
    );
    daemon.shutdown().await.unwrap();
    h.cleanup().await;
}
