//! pushgate's own AMQP consumer (`ingest::client::WireConsumer`) and
//! confirmed publisher (`WirePublisher`) against the real RabbitMQ: bodies
//! over several frames, properties and headers, heartbeats on an idle
//! connection, nack and redelivery, a deleted queue, refusals at open;
//! confirms and nacks, a closed channel, a closed publisher. The daemon's
//! flows (tests/amqp_*.rs) run on both too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use pushgate::ingest::client::{Open, OpenError, Props, Table, WireConsumer, WirePublisher};

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A fresh durable queue on a lapin connection (the publisher side).
async fn queue(name: &str) -> (Connection, lapin::Channel, String) {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ must answer at AMQP_URL (scripts/ensure-rabbitmq.sh)");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = format!("wire-test-{name}-{:08x}", fastrand::u32(..));
    let opts = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(q.as_str().into(), opts, FieldTable::default())
        .await
        .unwrap();
    (conn, ch, q)
}

async fn publish(ch: &lapin::Channel, q: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

fn open(url: &str) -> Open<'_> {
    Open {
        url,
        name: "pushgate-wire-test",
        heartbeat: Some(Duration::from_secs(10)),
        timeout: Duration::from_secs(10),
    }
}

async fn next(c: &mut WireConsumer) -> pushgate::ingest::client::Delivery {
    tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the consumer is open")
        .expect("no error")
}

/// Deletes the test's queues and closes the publisher's connection.
async fn cleanup(conn: Connection, ch: &lapin::Channel, queues: &[&str]) {
    for q in queues {
        ch.queue_delete((*q).into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
}

async fn message_count(ch: &lapin::Channel, q: &str) -> u32 {
    let opts = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(q.into(), opts, FieldTable::default())
        .await
        .unwrap()
        .message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_many_frames_and_their_properties_arrive_whole() {
    let (conn, ch, q) = queue("frames").await;
    // 300 KB: three body frames or more at RabbitMQ's 128 KB frame_max.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut headers = FieldTable::default();
    headers.insert("x-pushgate-attempt".into(), AMQPValue::LongLongInt(3));
    headers.insert(
        "x-pushgate-job-id".into(),
        AMQPValue::LongString(LongString::from("job-7")),
    );
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_message_id("m-7".into())
        .with_timestamp(1_700_000_000);
    publish(&ch, &q, &big, props).await;
    publish(&ch, &q, b"", BasicProperties::default()).await;
    publish(&ch, &q, b"{\"small\":1}", BasicProperties::default()).await;

    let url = amqp_url();
    let mut c = WireConsumer::open(open(&url), &q, "t-frames", 10)
        .await
        .unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.data.len(), big.len());
    assert!(d.data == big, "the body arrives byte for byte");
    assert!(!d.redelivered);
    assert_eq!(d.header_int("x-pushgate-attempt"), Some(3));
    assert_eq!(d.header_text("x-pushgate-job-id").as_deref(), Some("job-7"));
    assert_eq!(d.message_id().as_deref(), Some("m-7"));
    assert_eq!(d.timestamp(), Some(1_700_000_000));
    let empty = next(&mut c).await;
    assert!(empty.data.is_empty());
    assert_eq!((empty.message_id(), empty.header_int("x")), (None, None));
    let small = next(&mut c).await;
    assert_eq!(small.data, b"{\"small\":1}");
    assert!(d.tag < empty.tag && empty.tag < small.tag);
    c.ack(small.tag, true).await.unwrap();
    c.close("test done").await.unwrap();
    assert_eq!(
        message_count(&ch, &q).await,
        0,
        "one multiple ack took all three"
    );
    cleanup(conn, &ch, &[&q]).await;
}

/// `amqp.inputs.read_interval`: after a read, what the broker sends within
/// the interval waits for the next read, and comes in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_interval_gathers_what_comes_within_it() {
    let (conn, ch, q) = queue("interval").await;
    let url = amqp_url();
    let mut c = WireConsumer::open(open(&url), &q, "t-interval", 10)
        .await
        .unwrap();
    let interval = Duration::from_millis(300);
    c.set_read_interval(interval);
    publish(&ch, &q, b"first", BasicProperties::default()).await;
    let first = next(&mut c).await;
    let read_at = std::time::Instant::now();
    // Confirmed, so the broker holds them and sends them at once (prefetch 10).
    publish(&ch, &q, b"second", BasicProperties::default()).await;
    publish(&ch, &q, b"third", BasicProperties::default()).await;
    let second = next(&mut c).await;
    let waited = read_at.elapsed();
    // Never sooner than the interval after the read that brought `first`.
    assert!(waited >= interval - Duration::from_millis(20), "{waited:?}");
    // `third` came in the same read: no wait, nothing to read.
    let third = futures_util::FutureExt::now_or_never(c.next())
        .expect("the third delivery is already read")
        .expect("the consumer is open")
        .unwrap();
    assert_eq!(
        [&first.data[..], &second.data[..], &third.data[..]],
        [&b"first"[..], b"second", b"third"]
    );
    c.ack(third.tag, true).await.unwrap();
    c.close("test done").await.unwrap();
    cleanup(conn, &ch, &[&q]).await;
}

/// A read that fills the buffer's room is followed by another at once: the
/// interval paces reads, it does not cap the bytes a second. 1 MB waiting
/// takes at least 16 full reads; one interval after each would take 4.8 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_interval_does_not_hold_back_a_full_socket() {
    let (conn, ch, q) = queue("interval-full").await;
    let body = vec![b'x'; 2048];
    for _ in 0..500 {
        publish(&ch, &q, &body, BasicProperties::default()).await;
    }
    let url = amqp_url();
    let mut c = WireConsumer::open(open(&url), &q, "t-interval-full", 1000)
        .await
        .unwrap();
    let interval = Duration::from_millis(300);
    c.set_read_interval(interval);
    let started = std::time::Instant::now();
    let mut last = 0;
    for _ in 0..500 {
        let d = next(&mut c).await;
        assert_eq!(d.data.len(), body.len());
        last = d.tag;
    }
    let took = started.elapsed();
    // A few partial reads may each wait an interval; 16 waits would not fit.
    assert!(took < interval * 5, "{took:?}");
    c.ack(last, true).await.unwrap();
    c.close("test done").await.unwrap();
    cleanup(conn, &ch, &[&q]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_consumer_and_nacked_jobs_come_back() {
    let (conn, ch, q) = queue("idle").await;
    // 1 s heartbeats: the broker closes a client silent for about two of them.
    let url = format!("{}?heartbeat=1", amqp_url());
    let mut c = WireConsumer::open(open(&url), &q, "t-idle", 10)
        .await
        .unwrap();
    // Idle for four intervals: next() is cancelled here, like the worker's select.
    let idle = tokio::time::timeout(Duration::from_secs(4), c.next()).await;
    assert!(
        idle.is_err(),
        "nothing was published: {:?}",
        idle.map(|d| d.map(|d| d.map(|d| d.tag)))
    );
    publish(&ch, &q, b"{}", BasicProperties::default()).await;
    let d = next(&mut c).await;
    assert!(!d.redelivered);
    c.nack(d.tag, false, true).await.unwrap();
    let again = next(&mut c).await;
    assert!(again.redelivered, "a requeued job comes back marked");
    c.ack(again.tag, false).await.unwrap();
    c.close("test done").await.unwrap();
    assert_eq!(message_count(&ch, &q).await, 0);
    cleanup(conn, &ch, &[&q]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_queue_ends_the_consumer_and_a_cancel_too() {
    let (conn, ch, q) = queue("gone").await;
    let url = amqp_url();
    let mut c = WireConsumer::open(open(&url), &q, "t-gone", 10)
        .await
        .unwrap();
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("the broker's cancel within 10 s");
    assert!(end.is_none(), "the consumer ends with its queue");
    c.close("test done").await.unwrap();
    cleanup(conn, &ch, &[]).await;
    let (conn, ch, q2) = queue("cancel").await;
    let mut c2 = WireConsumer::open(open(&url), &q2, "t-cancel", 10)
        .await
        .unwrap();
    c2.cancel("t-cancel").await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), c2.next())
        .await
        .expect("cancel-ok within 10 s");
    assert!(end.is_none());
    c2.close("test done").await.unwrap();
    cleanup(conn, &ch, &[&q2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_at_open_are_clear_errors() {
    let url = amqp_url();
    let missing = WireConsumer::open(open(&url), "wire-test-no-such-queue", "t", 10).await;
    match missing {
        Err(OpenError::Broker(e)) => assert!(e.to_string().contains("404"), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a consumer on a missing queue"),
    }
    let wrong = url.replacen("guest:guest", "guest:wrong-password", 1);
    assert_ne!(wrong, url, "AMQP_URL carries guest:guest");
    match WireConsumer::open(open(&wrong), "any", "t", 10).await {
        Err(OpenError::Broker(e)) => {
            let text = e.to_string();
            assert!(
                text.contains("403") || text.contains("ACCESS_REFUSED"),
                "{text}"
            );
            assert!(!text.contains("wrong-password"), "no secret in the error");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a consumer with a wrong password"),
    }
    let refused =
        WireConsumer::open(open("amqp://guest:guest@127.0.0.1:1/%2f"), "q", "t", 10).await;
    assert!(matches!(refused, Err(OpenError::Broker(_))));
}

async fn confirm(p: &WirePublisher, exchange: &str, key: &str, body: &[u8], props: Props) -> bool {
    let answer = p.publish(exchange, key, body, props).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), answer.wait())
        .await
        .expect("an answer within 10 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_are_confirmed_and_arrive_whole() {
    let (conn, ch, q) = queue("publish").await;
    let url = amqp_url();
    let p = WirePublisher::open(open(&url)).await.unwrap();
    // 300 KB: three body frames or more at RabbitMQ's 128 KB frame_max.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let props = Props {
        headers: Table::new()
            .int("x-pushgate-attempt", 2)
            .text("x-reason", "r"),
        timestamp: Some(1_700_000_000),
    };
    assert!(confirm(&p, "", &q, &big, props).await);
    // Many in flight at once: each gets its own answer.
    let mut answers = Vec::new();
    for i in 0..200u32 {
        let body = format!("{{\"n\":{i}}}");
        answers.push(
            p.publish("", &q, body.as_bytes(), Props::default())
                .await
                .unwrap(),
        );
    }
    for a in answers {
        assert!(a.wait().await.unwrap(), "acked");
    }
    assert!(
        confirm(&p, "", &q, b"", Props::default()).await,
        "an empty body"
    );
    p.close("test done").await.unwrap();
    // The smallest frame_max AMQP allows: the body goes out in 4 KB frames.
    let small_frames = format!("{url}?frame_max=4096");
    let p = WirePublisher::open(open(&small_frames)).await.unwrap();
    let mid: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
    assert!(confirm(&p, "", &q, &mid, Props::default()).await);
    p.close("test done").await.unwrap();

    let mut c = WireConsumer::open(open(&url), &q, "t-publish", 300)
        .await
        .unwrap();
    let d = next(&mut c).await;
    assert!(d.data == big, "the body arrives byte for byte");
    assert_eq!(d.header_int("x-pushgate-attempt"), Some(2));
    assert_eq!(d.header_text("x-reason").as_deref(), Some("r"));
    assert_eq!(d.timestamp(), Some(1_700_000_000));
    for i in 0..200u32 {
        assert_eq!(
            next(&mut c).await.data,
            format!("{{\"n\":{i}}}").as_bytes(),
            "in order"
        );
    }
    assert!(next(&mut c).await.data.is_empty());
    let last = next(&mut c).await;
    assert!(last.data == mid, "whole over 4 KB frames");
    c.ack(last.tag, true).await.unwrap();
    c.close("test done").await.unwrap();
    cleanup(conn, &ch, &[&q]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_nacks_and_its_messages_are_not_taken() {
    // The helper's queue is only for its connection and channel.
    let (conn, ch, spare) = queue("spare").await;
    // A queue that refuses publishes beyond one message.
    let q = format!("wire-test-full-{:08x}", fastrand::u32(..));
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    let url = amqp_url();
    let p = WirePublisher::open(open(&url)).await.unwrap();
    assert!(
        confirm(&p, "", &q, b"1", Props::default()).await,
        "room for one"
    );
    assert!(!confirm(&p, "", &q, b"2", Props::default()).await, "nacked");
    assert!(!confirm(&p, "", &q, b"3", Props::default()).await, "nacked");
    assert_eq!(message_count(&ch, &q).await, 1);
    p.close("test done").await.unwrap();
    cleanup(conn, &ch, &[&q, &spare]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_channel_or_connection_fails_the_publishes() {
    let url = amqp_url();
    let p = WirePublisher::open(open(&url)).await.unwrap();
    // An exchange that does not exist: the broker closes the channel (404).
    let answer = p
        .publish(
            "no-such-exchange-pushgate-test",
            "k",
            b"{}",
            Props::default(),
        )
        .await
        .unwrap();
    let err = answer.wait().await.unwrap_err().to_string();
    assert!(err.contains("404") || err.contains("NOT_FOUND"), "{err}");
    let later = p.publish("", "any", b"{}", Props::default()).await;
    assert!(later.is_err(), "nothing is taken after the channel closed");

    let p = WirePublisher::open(open(&url)).await.unwrap();
    p.close("test done").await.unwrap();
    let after = p.publish("", "any", b"{}", Props::default()).await;
    let err = after.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("closed"), "{err}");
}
