//! The demo's RabbitMQ path: the real daemon consumes the campaign from a
//! demo input queue while the demo reads the result messages back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::Tally;
use crate::app::{self, Status};
use crate::config::Config;
use crate::dispatch::gateway::Gateway;
use crate::ingest::client::{self, Channel, Connection, Consumer, Props, QueueOpts, Table};
use crate::ingest::retry::RetryPolicy;
use crate::ingest::{close_connection, topology, CLOSE_TIMEOUT};
use crate::job::Job;
use crate::report::ResultMessage;

/// Deleting the demo's queues and exchanges takes at most this long.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether something accepts TCP at the URL's host and port (1 s).
pub async fn answers(url: &str) -> bool {
    let Some(addr) = client::host_port(url) else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The daemon consuming the demo queues, and the demo's own connection
/// with a tap on the results exchange.
pub struct BrokerDemo {
    conn: Connection,
    ch: Channel,
    amqp: crate::config::AmqpConfig,
    retry: RetryPolicy,
    tap: Consumer,
    stop: tokio::sync::oneshot::Sender<()>,
    daemon: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The daemon's drain deadline (bounds the wait for it to stop).
    drain: Duration,
}

/// Declares the demo topology, starts the daemon (feeding `status`) and
/// publishes `jobs`.
pub async fn start(
    config: Config,
    gateway: Arc<Gateway>,
    status: Arc<Status>,
    jobs: &[Job],
) -> anyhow::Result<BrokerDemo> {
    let amqp = config.amqp.clone();
    let drain = config.daemon.drain_timeout;
    let conn = Connection::open(client::Open {
        url: amqp.url.expose(),
        name: "pushgate-demo",
        heartbeat: None,
        timeout: Duration::from_secs(15),
    })
    .await
    .context("connecting to RabbitMQ")?;
    let ch = conn.channel().await?;
    let retry = RetryPolicy::new(&amqp.retry);
    topology::declare(&ch, &amqp, &retry).await?;
    let tap = tap(&ch, &amqp.results_exchange).await?;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(app::run(
        config,
        gateway,
        async move {
            let _ = stopped.await;
        },
        status,
    ));

    let input = amqp
        .inputs
        .first()
        .map(|q| q.name.clone())
        .unwrap_or_default();
    publish(&ch, &input, jobs).await?;
    Ok(BrokerDemo {
        conn,
        ch,
        amqp,
        retry,
        tap,
        stop,
        daemon,
        drain,
    })
}

impl BrokerDemo {
    /// Tallies the final result entries until every recipient has one (or 5 minutes pass).
    pub async fn collect(&mut self, total: usize, done: &AtomicUsize) -> Tally {
        collect(&self.ch, &mut self.tap, total, done).await
    }

    /// Stops the daemon (drain) and deletes the demo's queues and exchanges.
    /// Each step is bounded: the demo exits even if the broker stops answering.
    pub async fn finish(mut self) {
        let _ = self.stop.send(());
        // Drain, then the daemon's channel and connection closes.
        let bound = self.drain + 3 * CLOSE_TIMEOUT;
        if tokio::time::timeout(bound, &mut self.daemon).await.is_err() {
            self.daemon.abort();
            eprintln!("demo: the gateway did not stop within {bound:?}; stopped it");
        }
        let tidy = cleanup(&self.ch, &self.amqp, &self.retry);
        if tokio::time::timeout(CLEANUP_TIMEOUT, tidy).await.is_err() {
            eprintln!(
                "demo: deleting the demo queues timed out; delete pushgate.demo-* queues by hand"
            );
        }
        let _ = close_connection(&self.conn, "demo done").await;
    }
}

async fn tap(ch: &Channel, exchange: &str) -> anyhow::Result<Consumer> {
    let opts = QueueOpts {
        exclusive: true,
        auto_delete: true,
        ..QueueOpts::default()
    };
    let name = ch.declare_queue("", opts, Table::new()).await?;
    let binding = client::Binding {
        queue: &name,
        exchange,
        key: "*.results",
    };
    ch.bind_queue(binding, Table::new()).await?;
    Ok(ch.consume(&name, "demo-tap", Table::new()).await?)
}

async fn publish(ch: &Channel, queue: &str, jobs: &[Job]) -> anyhow::Result<()> {
    ch.confirm_select().await?;
    let mut confirms = Vec::with_capacity(jobs.len());
    for job in jobs {
        let body = serde_json::to_vec(job)?;
        confirms.push(ch.publish("", queue, &body, Props::default()).await?);
    }
    for c in confirms {
        if !c
            .wait()
            .await
            .context("RabbitMQ did not confirm a demo job")?
        {
            anyhow::bail!("RabbitMQ refused a demo job");
        }
    }
    Ok(())
}

async fn collect(ch: &Channel, tap: &mut Consumer, total: usize, done: &AtomicUsize) -> Tally {
    let mut tally = Tally::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while tally.finals < total {
        let next = tokio::time::timeout_at(deadline, tap.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            eprintln!("\npushgate demo: stopped waiting for results");
            break;
        };
        if let Ok(msg) = serde_json::from_slice::<ResultMessage>(&delivery.data) {
            msg.results.iter().for_each(|e| tally.add(e));
            done.store(tally.finals, Ordering::Relaxed);
        }
        let _ = ch.ack(delivery.tag, false).await;
    }
    tally
}

/// Deletes the demo's queues and exchanges; a demo leaves nothing behind.
async fn cleanup(ch: &Channel, amqp: &crate::config::AmqpConfig, retry: &RetryPolicy) {
    let mut names = topology::names(amqp, retry);
    names.queues.push(amqp.control_queue.clone());
    names.exchanges.push(amqp.control_exchange.clone());
    for q in names.queues {
        let _ = ch.delete_queue(&q).await;
    }
    for x in names.exchanges {
        let _ = ch.delete_exchange(&x).await;
    }
}
