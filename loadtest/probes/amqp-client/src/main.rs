//! Probe: the AMQP client's own cost per consumed message, lapin 4 against
//! amqprs 2, as a bare consumer (prefetch 256, a `multiple` ack every 64,
//! one tokio worker thread), on the same preloaded durable queue. Prints
//! messages/s, the client's CPU per message and the broker's.
//!
//! `amqp-probe publish QUEUE N` preloads N 220-byte persistent messages;
//! `amqp-probe lapin|amqprs QUEUE N` consumes N of them;
//! `amqp-probe poison QUEUE 2` checks a header that is not UTF-8 (round 4:
//! amqprs 2.1.5 got 0 of 2 messages and its connection closed, so such a
//! job would be redelivered into the same failure forever). Measurement code:
//! it unwraps on purpose and is not built by CI.

use std::time::Instant;

fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn beam_cpu() -> f64 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = e.path();
        if let Ok(c) = std::fs::read_to_string(p.join("comm")) {
            if c.trim() == "beam.smp" {
                let s = std::fs::read_to_string(p.join("stat")).unwrap();
                let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
                return (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0;
            }
        }
    }
    0.0
}

async fn publish(queue: &str, n: u64) {
    use lapin::options::*;
    let conn = lapin::Connection::connect("amqp://127.0.0.1:5672/%2f", Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let body = vec![b'x'; 220];
    let mut pending = std::collections::VecDeque::new();
    for _ in 0..n {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                Default::default(),
                &body,
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        pending.push_back(c);
        while pending.len() > 2000 {
            pending.pop_front().unwrap().await.unwrap();
        }
    }
    while let Some(c) = pending.pop_front() {
        c.await.unwrap();
    }
}

async fn lapin_consume(queue: &str, n: u64) {
    use futures_util::StreamExt;
    use lapin::options::*;
    let conn = lapin::Connection::connect("amqp://127.0.0.1:5672/%2f", Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(256, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            queue.into(),
            "probe".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let mut got = 0u64;
    while let Some(d) = c.next().await {
        let d = d.unwrap();
        got += 1;
        if got % 64 == 0 || got == n {
            ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .unwrap();
        }
        if got == n {
            break;
        }
    }
}

async fn amqprs_consume(queue: &str, n: u64) {
    use amqprs::channel::*;
    use amqprs::connection::*;
    let conn = Connection::open(&OpenConnectionArguments::new(
        "127.0.0.1",
        5672,
        "guest",
        "guest",
    ))
    .await
    .unwrap();
    let ch = conn.open_channel(None).await.unwrap();
    ch.basic_qos(BasicQosArguments::new(0, 256, false))
        .await
        .unwrap();
    let (_tag, mut rx) = ch
        .basic_consume_rx(BasicConsumeArguments::new(queue, "probe"))
        .await
        .unwrap();
    let mut got = 0u64;
    while let Some(msg) = rx.recv().await {
        got += 1;
        let tag = msg.deliver.unwrap().delivery_tag();
        if got % 64 == 0 || got == n {
            ch.basic_ack(BasicAckArguments::new(tag, true))
                .await
                .unwrap();
        }
        if got == n {
            break;
        }
    }
}

/// `amqp-probe poison QUEUE 2`: one message whose header holds a long
/// string that is not UTF-8 (legal AMQP: long strings are bytes), then a
/// plain one; each client consumes for 5 s and says what it saw.
async fn poison(queue: &str) {
    use lapin::options::*;
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let conn = lapin::Connection::connect("amqp://127.0.0.1:5672/%2f", Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(queue.into(), durable, Default::default()).await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let mut h = FieldTable::default();
    h.insert("x-note".into(), AMQPValue::LongString(LongString::from(vec![0xffu8, 0xfe, b'a'])));
    for props in [
        lapin::BasicProperties::default().with_headers(h),
        lapin::BasicProperties::default(),
    ] {
        ch.basic_publish("".into(), queue.into(), Default::default(), b"{}", props)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    use amqprs::channel::*;
    use amqprs::connection::*;
    let conn = Connection::open(&OpenConnectionArguments::new("127.0.0.1", 5672, "guest", "guest"))
        .await
        .unwrap();
    let ch = conn.open_channel(None).await.unwrap();
    let (_tag, mut rx) = ch
        .basic_consume_rx(BasicConsumeArguments::new(queue, "poison"))
        .await
        .unwrap();
    let mut seen = 0;
    while let Ok(Some(msg)) = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await {
        seen += 1;
        println!("amqprs: got message {seen}, headers {:?}", msg.basic_properties.as_ref().and_then(|p| p.headers()));
    }
    println!("amqprs: {seen} of 2 messages in 5 s; connection open: {}", conn.is_open());
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (mode, queue, n) = (a[1].as_str(), a[2].clone(), a[3].parse::<u64>().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if mode == "poison" {
            poison(&queue).await;
            return;
        }
        if mode == "publish" {
            publish(&queue, n).await;
            return;
        }
        let (c0, b0, t0) = (cpu_secs(), beam_cpu(), Instant::now());
        match mode {
            "lapin" => lapin_consume(&queue, n).await,
            _ => amqprs_consume(&queue, n).await,
        }
        let (secs, cpu, beam) = (t0.elapsed().as_secs_f64(), cpu_secs() - c0, beam_cpu() - b0);
        println!(
            "{mode}: {:.0} msg/s, client {:.1} µs CPU/msg ({:.2} cores), broker {:.1} µs/msg",
            n as f64 / secs,
            cpu * 1e6 / n as f64,
            cpu / secs,
            beam * 1e6 / n as f64
        );
    });
}
