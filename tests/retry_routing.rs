//! A retry published to the retry exchange reaches exactly one delay queue:
//! the one its `x-pushgate-delay` header names (RabbitMQ's `x-match: all`
//! ignores "x-" keys, which once sent every retry to every delay queue).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod amqp_support;

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use pushgate::ingest::decode::headers;
use pushgate::ingest::retry::RetryPolicy;

#[tokio::test]
async fn a_retry_lands_in_the_delay_queue_it_names_only() {
    let h = amqp_support::Harness::new(|amqp, _| {
        amqp.retry.delays = [30, 60, 90].map(Duration::from_secs).to_vec();
    })
    .await;
    let retry = RetryPolicy::new(&h.amqp.retry);
    let ch = h.conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut hdrs = FieldTable::default();
    let label = LongString::from(retry.label(1).as_bytes());
    hdrs.insert(headers::DELAY.into(), AMQPValue::LongString(label));
    ch.basic_publish(
        h.amqp.retry.exchange.as_str().into(),
        h.input().as_str().into(),
        BasicPublishOptions::default(),
        b"{}",
        BasicProperties::default().with_headers(hdrs),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let mut counts = Vec::new();
    for i in 0..retry.len() {
        let q = ch
            .queue_declare(retry.queue(i).into(), passive, FieldTable::default())
            .await
            .unwrap();
        counts.push(q.message_count());
    }
    assert_eq!(counts, vec![0, 1, 0]);
    h.cleanup().await;
}
