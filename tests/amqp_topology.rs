//! The broker topology on the real RabbitMQ: a retry lands in exactly one delay queue.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod amqp_support;

use std::time::Duration;

use amqp_support::Harness;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use pushgate::ingest::decode::headers;
use pushgate::ingest::retry::RetryPolicy;

/// Ready messages of `queue` (passive declare).
async fn depth(h: &Harness, queue: &str) -> u32 {
    let ch = h.conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let q = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .unwrap();
    q.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_routed_to_its_delay_queue_only() {
    // Long delays: the messages stay in the delay queues while we count.
    let h = Harness::new(|amqp, _| {
        amqp.retry.delays = vec![Duration::from_secs(60), Duration::from_secs(120)];
        amqp.retry.base = Duration::from_secs(60);
    })
    .await;
    let policy = RetryPolicy::new(&h.amqp.retry);
    let ch = h.conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for index in [0, 1, 1] {
        let mut table = FieldTable::default();
        let label = LongString::from(policy.label(index).as_bytes());
        table.insert(headers::DELAY.into(), AMQPValue::LongString(label));
        // The attempt header of a real retry rides along (an `x-` header).
        table.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(2));
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(table);
        let confirm = ch
            .basic_publish(
                h.amqp.retry.exchange.as_str().into(),
                h.input().as_str().into(),
                BasicPublishOptions::default(),
                b"{}",
                props,
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack());
    }
    assert_eq!(depth(&h, policy.queue(0)).await, 1);
    assert_eq!(depth(&h, policy.queue(1)).await, 2);
    h.cleanup().await;
}
