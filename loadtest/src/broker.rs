//! The run's RabbitMQ side: unique names, queue declarations, publishing
//! jobs (preloaded or paced, with confirms), the result tap, queue counts,
//! forcing the gateway's connection closed, and cleanup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio::time::Instant;

use crate::jobs::Plan;
use crate::tracker::PublishTimes;

/// Every broker name of one run, unique by its tag.
#[derive(Debug, Clone)]
pub struct Names {
    pub tag: String,
    pub input: String,
    pub bare: String,
    pub dead: String,
    pub results: String,
    pub retry_exchange: String,
    pub retry_prefix: String,
    /// The gateway's AMQP connection name (to find and close it).
    pub connection: String,
}

/// The run's delay queues (short, so a retried recipient settles quickly).
pub const RETRY_DELAYS: [&str; 2] = ["200ms", "1s"];

impl Names {
    pub fn new() -> Names {
        let tag = format!("lt{:08x}", fastrand::u32(..));
        Names {
            input: format!("{tag}.jobs"),
            bare: format!("{tag}.bare"),
            dead: format!("{tag}.dead"),
            results: format!("{tag}.results"),
            retry_exchange: format!("{tag}.retry"),
            retry_prefix: format!("{tag}.retry."),
            connection: format!("pushgate-{tag}"),
            tag,
        }
    }

    fn queues(&self) -> Vec<String> {
        let mut q = vec![self.input.clone(), self.bare.clone(), self.dead.clone()];
        q.extend(
            RETRY_DELAYS
                .iter()
                .map(|d| format!("{}{d}", self.retry_prefix)),
        );
        q
    }
}

pub async fn connect(url: &str, name: &str) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, props)
        .await
        .with_context(|| "connecting to RabbitMQ (is it running? `rabbitmq-server -detached`)")
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares a durable classic queue, as the gateway declares its inputs.
pub async fn declare_input(ch: &Channel, name: &str) -> anyhow::Result<()> {
    ch.queue_declare(name.into(), durable(), FieldTable::default())
        .await?;
    Ok(())
}

/// Ready messages and consumers of a queue (passive declare).
pub async fn counts(ch: &Channel, name: &str) -> anyhow::Result<(u32, u32)> {
    let opts = QueueDeclareOptions {
        passive: true,
        ..durable()
    };
    let q = ch
        .queue_declare(name.into(), opts, FieldTable::default())
        .await?;
    Ok((q.message_count(), q.consumer_count()))
}

/// Publishes jobs `plan` describes to `queue` on `ch` (confirm mode), at
/// `rate` jobs/s (0: as fast as confirms allow, a window of 2,000
/// unconfirmed), marking each publish time; `done` counts confirmed jobs.
pub async fn publish(
    ch: &Channel,
    queue: &str,
    plan: &Plan,
    rate: f64,
    times: &PublishTimes,
    done: &AtomicU64,
) -> anyhow::Result<()> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(if plan.persistent { 2 } else { 1 });
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::with_capacity(2048);
    for seq in 0..plan.jobs {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(seq as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
        let body = plan.body(seq);
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await?;
        times.mark(seq);
        pending.push_back(confirm);
        while pending.len() >= 2000 || (rate > 0.0 && pending.len() > 64) {
            settle(pending.pop_front(), done).await?;
        }
    }
    while let Some(c) = pending.pop_front() {
        settle(Some(c), done).await?;
    }
    Ok(())
}

async fn settle(confirm: Option<lapin::PublisherConfirm>, done: &AtomicU64) -> anyhow::Result<()> {
    let Some(c) = confirm else { return Ok(()) };
    if !c.await?.is_ack() {
        bail!("RabbitMQ refused a published job");
    }
    done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Declares the results exchange and an exclusive queue bound to all of
/// it (results and token feedback), consumed without acks.
pub async fn tap(ch: &Channel, names: &Names) -> anyhow::Result<Consumer> {
    let opts = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let q = ch
        .queue_declare("".into(), opts, FieldTable::default())
        .await?;
    let name = q.name().as_str().to_owned();
    bind(
        ch,
        &name,
        &names.results,
        ExchangeKind::Topic,
        "#",
        FieldTable::default(),
    )
    .await?;
    // Also see every retry the gateway publishes: a headers binding with
    // no header to match takes every message of the retry exchange.
    let mut all = FieldTable::default();
    all.insert(
        "x-match".into(),
        lapin::types::AMQPValue::LongString("all".into()),
    );
    bind(
        ch,
        &name,
        &names.retry_exchange,
        ExchangeKind::Headers,
        "",
        all,
    )
    .await?;
    let consume = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    Ok(ch
        .basic_consume(
            name.as_str().into(),
            "loadtest-tap".into(),
            consume,
            FieldTable::default(),
        )
        .await?)
}

/// Declares `exchange` (durable, as the gateway declares it) and binds `queue` to it.
async fn bind(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    kind: ExchangeKind,
    key: &str,
    args: FieldTable,
) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(exchange.into(), kind, durable, FieldTable::default())
        .await?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    )
    .await?;
    Ok(())
}

/// Deletes every queue and exchange of the run.
pub async fn cleanup(ch: &Channel, names: &Names) {
    for q in names.queues() {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for x in [&names.results, &names.retry_exchange] {
        let _ = ch
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

/// Force-closes the broker connection named `name` (rabbitmqctl), as a
/// network fault or broker restart would. Returns how many were closed.
pub async fn force_close(name: &str) -> anyhow::Result<usize> {
    // rabbitmqctl is an Erlang VM: never under the load test's SCHED_RR.
    let out = rabbitmqctl()
        .args(["list_connections", "pid", "client_properties"])
        .args(["-q", "--no-table-headers"])
        .output()
        .await
        .context("running rabbitmqctl list_connections")?;
    let list = String::from_utf8_lossy(&out.stdout);
    let pids = connection_pids(&list, name);
    if pids.is_empty() {
        bail!("no broker connection named {name}");
    }
    for pid in &pids {
        let status = rabbitmqctl()
            .args(["close_connection", pid, "loadtest: forced disconnect", "-q"])
            .status()
            .await?;
        if !status.success() {
            bail!("rabbitmqctl close_connection {pid} failed");
        }
    }
    Ok(pids.len())
}

/// The pids (`<rabbit@host.1.2.3>`) of the connections named `name` in
/// `rabbitmqctl list_connections pid client_properties` output.
fn connection_pids(list: &str, name: &str) -> Vec<String> {
    let wanted = format!("{{\"connection_name\",\"{name}\"}}");
    list.lines()
        .filter(|l| l.contains(&wanted))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// `rabbitmqctl` under the normal scheduling policy (`chrt -o 0`).
fn rabbitmqctl() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("chrt");
    cmd.args(["-o", "0", "rabbitmqctl"]);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs RabbitMQ running (the test script starts it).
    #[tokio::test]
    async fn jobs_go_out_persistent_unless_the_run_asks_for_transient() {
        let conn = connect("amqp://guest:guest@127.0.0.1:5672/%2f", "lt-test-mode")
            .await
            .expect("RabbitMQ is running");
        let ch = conn.create_channel().await.expect("channel");
        let names = Names::new();
        declare_input(&ch, &names.input).await.expect("declared");
        let mut modes = Vec::new();
        for persistent in [true, false] {
            let plan = Plan {
                tag: names.tag.clone(),
                jobs: 1,
                recipients: 1,
                mix: crate::cli::Mix::Ok,
                invalid: 0.0,
                latency_warmup: Duration::ZERO,
                persistent,
            };
            let (times, done) = (
                PublishTimes::new(1, Instant::now().into()),
                AtomicU64::new(0),
            );
            publish(&ch, &names.input, &plan, 0.0, &times, &done)
                .await
                .expect("published");
            let got = ch
                .basic_get(
                    names.input.as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .expect("basic.get")
                .expect("the job is in the queue");
            modes.push(*got.properties.delivery_mode());
        }
        cleanup(&ch, &names).await;
        assert_eq!(modes, [Some(2), Some(1)]);
    }

    #[test]
    fn finds_connections_by_name() {
        let list =
            "<rabbit@h.1.2.1>\t[{\"connection_name\",\"pushgate-lt1\"},{\"platform\",\"rust\"}]\n\
                    <rabbit@h.1.3.1>\t[{\"connection_name\",\"pushgate-lt1-bare\"}]\n\
                    <rabbit@h.1.4.1>\t[{\"platform\",\"rust\"}]\n";
        assert_eq!(
            connection_pids(list, "pushgate-lt1"),
            vec!["<rabbit@h.1.2.1>"]
        );
        assert!(connection_pids(list, "other").is_empty());
    }
}
