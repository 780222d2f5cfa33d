//! The broker round-trip baseline for live runs (`--baselines echo`): the
//! run's jobs published at the run's rate to a queue of the same shape,
//! answered by a bare consumer that waits the simulator's latency, then
//! publishes one delivered entry per recipient to the results exchange
//! (publisher confirm) and acks. The same tap and tracker read them.
//!
//! Its latencies are what the broker's two trips and the provider's latency
//! cost without a gateway; the gateway's own overhead is the difference.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use serde::Deserialize;

use crate::broker::{self, Names};
use crate::jobs::Plan;
use crate::tracker::{PublishTimes, Tracker};

/// What the echo baseline measured.
#[derive(Debug)]
pub struct EchoResult {
    pub tracker: Tracker,
}

/// The fields of a job the echo answers.
#[derive(Deserialize)]
struct Job {
    id: String,
    app: String,
    recipients: Vec<Recipient>,
}

#[derive(Deserialize)]
struct Recipient {
    id: String,
    token: String,
}

/// Publishes the run's jobs live to the bare queue and answers each after
/// `latency`; returns once every recipient has its result (or `timeout`
/// passed without progress).
pub async fn run(
    url: &str,
    names: &Names,
    plan: &Plan,
    rate: f64,
    latency: Duration,
    (prefetch, timeout): (u16, Duration),
) -> anyhow::Result<EchoResult> {
    let conn = broker::connect(url, &format!("{}-echo", names.connection)).await?;
    let ch = conn.create_channel().await?;
    broker::declare_input(&ch, &names.bare).await?;
    let mut tap = broker::tap(&ch, names).await?;
    let answers = conn.create_channel().await?;
    answers
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    answers
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = answers
        .basic_consume(
            names.bare.as_str().into(),
            "loadtest-echo".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let times = PublishTimes::new(plan.jobs, Instant::now());
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let ch = conn.create_channel().await?;
        let (queue, plan, times, done) = (
            names.bare.clone(),
            plan.clone(),
            Arc::clone(&times),
            Arc::clone(&published),
        );
        tokio::spawn(async move { broker::publish(&ch, &queue, &plan, rate, &times, &done).await })
    };
    let echo = tokio::spawn(answer(consumer, answers, names.results.clone(), latency));
    let mut tracker = Tracker::new(&names.tag, plan.jobs, plan.recipients)
        .with_latency_warmup(plan.latency_warmup);
    let expected = plan.jobs * plan.recipients as u64;
    while tracker.finals < expected {
        let next = tokio::time::timeout(timeout, tap.next()).await;
        let d = next
            .context("no echo result in time")?
            .context("the result tap closed")??;
        tracker.result_message(&d.data, Instant::now(), &times);
    }
    echo.abort();
    publisher.await.context("echo publisher")??;
    let _ = conn.close(200, "echo done".into()).await;
    Ok(EchoResult { tracker })
}

/// Answers every delivery in a task of its own: wait, publish, confirm, ack.
async fn answer(
    mut consumer: lapin::Consumer,
    ch: Channel,
    exchange: String,
    latency: Duration,
) -> anyhow::Result<()> {
    while let Some(d) = consumer.next().await {
        let d = d?;
        let (ch, exchange) = (ch.clone(), exchange.clone());
        tokio::spawn(async move {
            tokio::time::sleep(latency).await;
            let Ok(job) = serde_json::from_slice::<Job>(&d.data) else {
                return;
            };
            let body = result_body(&job, latency);
            let key = format!("{}.results", job.app);
            let props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2);
            let opts = BasicPublishOptions::default();
            let sent = ch
                .basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    opts,
                    &body,
                    props,
                )
                .await;
            if let Ok(confirm) = sent {
                if confirm.await.is_ok() {
                    let _ = ch
                        .basic_ack(d.delivery_tag, BasicAckOptions::default())
                        .await;
                }
            }
        });
    }
    Ok(())
}

/// A result message like the gateway's: one delivered entry per recipient,
/// with the fields a delivered entry of the gateway's has (token, provider
/// status and id), so that the broker and the tap carry as many bytes.
fn result_body(job: &Job, latency: Duration) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = job
        .recipients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            serde_json::json!({
                "job_id": job.id, "recipient_id": r.id, "platform": "apns",
                "token": r.token, "status": "delivered", "provider_status": 200,
                "provider_id": format!("00000000-0000-4000-8000-{i:012x}"), "attempt": 1,
                "latency_ms": latency.as_millis() as u64, "ts": "1970-01-01T00:00:00.000Z"
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"app": job.app, "results": entries})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_every_recipient_of_a_job() {
        let job: Job = serde_json::from_str(
            r#"{"id":"lt1-7","app":"shop","recipients":[{"platform":"apns","token":"a","id":"r0"},{"platform":"apns","token":"b","id":"r1"}]}"#,
        )
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&result_body(&job, Duration::from_millis(50))).unwrap();
        assert_eq!(v["app"], "shop");
        let ids: Vec<&str> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["recipient_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["r0", "r1"]);
        assert_eq!(v["results"][1]["job_id"], "lt1-7");
        assert_eq!(v["results"][0]["latency_ms"], 50);
        assert_eq!(v["results"][1]["token"], "b");
        assert_eq!(v["results"][1]["provider_status"], 200);
        assert_eq!(v["results"][1]["provider_id"].as_str().unwrap().len(), 36);
    }
}
