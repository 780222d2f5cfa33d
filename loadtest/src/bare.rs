//! The broker baseline: a bare lapin consumer that acks as fast as it can,
//! with the gateway's prefetch and ack batching, on a queue of the same
//! shape holding the same messages.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

use crate::broker::{self, Names};
use crate::jobs::Plan;
use crate::tracker::PublishTimes;

/// Ack batch of the gateway for a prefetch (see `pushgate::ingest::acks`):
/// one `multiple=true` ack per quarter of the prefetch window.
pub fn ack_batch(prefetch: u16) -> u64 {
    u64::from(prefetch / 4).max(1)
}

/// What the baseline measured.
#[derive(Debug, Clone, Copy)]
pub struct BareResult {
    pub messages: u64,
    pub secs: f64,
    pub ack_frames: u64,
    /// The broker's CPU while the consumer ran, in cores.
    pub broker_cores: Option<f64>,
    /// The consumer's own CPU (the load test's process, which does nothing
    /// else meanwhile), in cores.
    pub consumer_cores: Option<f64>,
}

impl BareResult {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.secs.max(1e-9)
    }
}

/// The bare consumer measured while h2load sent a set pace to the
/// simulator (`--baselines bare-h2load`).
#[derive(Debug, Clone)]
pub struct Beside {
    pub bare: BareResult,
    /// Requests per second asked of h2load (the gateway's rate).
    pub asked: u64,
    /// What h2load sent, by its own count.
    pub sent: Result<crate::peers::Measured, String>,
    pub command: String,
}

/// Preloads the run's jobs into the bare queue, then consumes them all.
pub async fn run(
    url: &str,
    names: &Names,
    plan: &Plan,
    prefetch: u16,
) -> anyhow::Result<BareResult> {
    prepare(url, names, plan).await?.consume(prefetch).await
}

/// The bare queue, holding the run's jobs, ready to be consumed.
pub struct Prepared {
    conn: lapin::Connection,
    ch: lapin::Channel,
    queue: String,
    jobs: u64,
}

/// Preloads the run's jobs into the bare queue (publisher confirms).
pub async fn prepare(url: &str, names: &Names, plan: &Plan) -> anyhow::Result<Prepared> {
    let conn = broker::connect(url, &format!("{}-bare", names.connection)).await?;
    let ch = conn.create_channel().await?;
    broker::declare_input(&ch, &names.bare).await?;
    let times = PublishTimes::new(0, Instant::now());
    let done = AtomicU64::new(0);
    let publisher = conn.create_channel().await?;
    broker::publish(&publisher, &names.bare, plan, 0.0, &times, &done).await?;
    Ok(Prepared {
        conn,
        ch,
        queue: names.bare.clone(),
        jobs: plan.jobs,
    })
}

impl Prepared {
    /// Consumes every job as fast as the broker delivers them, with the
    /// gateway's prefetch and ack batching, and closes the connection.
    pub async fn consume(self, prefetch: u16) -> anyhow::Result<BareResult> {
        let broker = crate::procstat::find_by_name("beam.smp");
        let me = std::process::id();
        let before = (
            broker.and_then(crate::procstat::sample),
            crate::procstat::sample(me),
        );
        let mut result = consume(&self.ch, &self.queue, self.jobs, prefetch).await;
        let after = (
            broker.and_then(crate::procstat::sample),
            crate::procstat::sample(me),
        );
        if let Ok(r) = result.as_mut() {
            r.broker_cores = cores_between(before.0, after.0);
            r.consumer_cores = cores_between(before.1, after.1);
        }
        let _ = self.conn.close(200, "bare baseline done".into()).await;
        result
    }
}

/// CPU used between two readings of one process, in cores.
fn cores_between(
    a: Option<crate::procstat::Sample>,
    b: Option<crate::procstat::Sample>,
) -> Option<f64> {
    let (a, b) = (a?, b?);
    crate::procstat::usage(&[a, b], a.at, b.at).map(|u| u.cores)
}

async fn consume(
    ch: &lapin::Channel,
    queue: &str,
    total: u64,
    prefetch: u16,
) -> anyhow::Result<BareResult> {
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "loadtest-bare".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let batch = ack_batch(prefetch);
    let (mut got, mut frames, mut unacked) = (0u64, 0u64, 0u64);
    let mut first = None;
    while got < total {
        let next = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await;
        let delivery = next
            .context("bare consumer: no message for 30 s")?
            .context("bare consumer: stream ended")??;
        first.get_or_insert_with(Instant::now);
        got += 1;
        unacked += 1;
        if unacked >= batch || got == total {
            let opts = BasicAckOptions { multiple: true };
            ch.basic_ack(delivery.delivery_tag, opts).await?;
            frames += 1;
            unacked = 0;
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    Ok(BareResult {
        messages: got,
        secs,
        ack_frames: frames,
        broker_cores: None,
        consumer_cores: None,
    })
}
