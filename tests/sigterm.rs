//! The `pushgate run` binary under SIGTERM mid-run, against the real
//! RabbitMQ and the APNs simulator: it exits 0, and every job is either
//! acked with all its results published or back in the input queue.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use pushgate::ingest::retry::RetryPolicy;
use pushgate::ingest::topology;
use pushgate::report::ResultMessage;
use pushgate::sim::apns::{self as sim, ApnsSimOptions};
use pushgate::sim::knobs::Latency;

const JOBS: usize = 100;

/// Kills the daemon if the test fails before it exited by itself.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}
const PER_JOB: usize = 5;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn config_text(prefix: &str, apns: SocketAddr) -> String {
    let dev = format!("{}/config/dev", env!("CARGO_MANIFEST_DIR"));
    format!(
        r#"
[log]
format = "json"
level = "info"

[apps.shop.apns]
environment = "sandbox"
endpoint = "https://{apns}"
topic = "com.example.shop"
team_id = "DEVTEAM001"
key_id = "DEVKEY0001"
key_file = "{dev}/apns-dev.p8"
ca_file = "{dev}/ca.pem"

[amqp]
url = "{url}"
connection_name = "{prefix}"
dead_queue = "{prefix}.dead"
results_exchange = "{prefix}.results"

[[amqp.inputs]]
name = "{prefix}.jobs"
prefetch = 8

[amqp.retry]
exchange = "{prefix}.retry"
queue_prefix = "{prefix}.retry."
delays = ["1s"]

[admin]
listen = "off"

[daemon]
max_in_flight = 64
drain_timeout = "20s"
"#,
        url = amqp_url()
    )
}

fn job(j: usize) -> Vec<u8> {
    let recipients: Vec<serde_json::Value> = (0..PER_JOB)
        .map(|r| {
            let token = format!("{j:032x}{r:032x}");
            serde_json::json!({"platform": "apns", "token": token, "id": format!("r{r}")})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"id": format!("job-{j}"), "app": "shop",
        "recipients": recipients, "notification": {"title": "Hi", "body": "there"}}))
    .unwrap()
}

/// `--threads 2`: deliveries on two dispatch shards (src/dispatch/shards.rs),
/// the broker side on the main thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_leaves_every_job_acked_with_results_or_requeued() {
    sigterm_mid_run(&["--threads", "2"]).await;
}

/// The same on one thread: `--threads 1` runs the daemon on tokio's
/// current-thread scheduler (src/main.rs), not on a one-worker pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_on_the_current_thread_runtime() {
    sigterm_mid_run(&["--threads", "1"]).await;
}

/// `global`: the binary's arguments before the subcommand.
async fn sigterm_mid_run(global: &[&str]) {
    let opts = ApnsSimOptions {
        latency: Latency::Fixed(Duration::from_millis(300)),
        ..ApnsSimOptions::default()
    };
    let apns = sim::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap();
    let prefix = format!("sigterm{:08x}", fastrand::u32(..));
    let text = config_text(&prefix, apns.addr);
    let config = pushgate::config::load_str(&text, std::path::Path::new("."), []).unwrap();
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pushgate.toml");
    std::fs::write(&path, &text).unwrap();

    // The topology and a tap on the results exchange, before the daemon starts.
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ must answer at AMQP_URL (scripts/ensure-rabbitmq.sh)");
    let ch = conn.create_channel().await.unwrap();
    let retry = RetryPolicy::new(&config.amqp.retry);
    topology::declare_once(&config.amqp, &retry).await.unwrap();
    let tap = format!("{prefix}.tap");
    ch.queue_declare(
        tap.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        tap.as_str().into(),
        config.amqp.results_exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let input = config.amqp.inputs[0].name.clone();
    for j in 0..JOBS {
        ch.basic_publish(
            "".into(),
            input.as_str().into(),
            BasicPublishOptions::default(),
            &job(j),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    let child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(global)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pushgate run");
    let guard = KillOnDrop(child.id());
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut results = ch
        .basic_consume(
            tap.as_str().into(),
            "tap".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut finals: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Entries that were not final (retrying), kept to explain a failure.
    let mut others: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |data: &[u8]| {
        let msg: ResultMessage = serde_json::from_slice(data).unwrap();
        for e in msg.results.iter().filter(|e| !e.is_final()) {
            others.entry(e.job_id.clone()).or_default().push(format!(
                "{:?} {:?} {:?} {:?}",
                e.recipient_id, e.code, e.provider_status, e.provider_reason
            ));
        }
        for e in msg.results.iter().filter(|e| e.is_final()) {
            let fresh = finals
                .entry(e.job_id.clone())
                .or_default()
                .insert(e.recipient_id.clone().unwrap_or_default());
            assert!(fresh, "one result per recipient: {e:?}");
        }
    };

    // Mid-run: as soon as the first job's results are out.
    let first = tokio::time::timeout(Duration::from_secs(60), results.next())
        .await
        .expect("no result within 60 s")
        .unwrap()
        .unwrap();
    add(&first.data);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let waited = tokio::task::spawn_blocking(move || {
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
    let (status, logs) = tokio::time::timeout(Duration::from_secs(60), waited)
        .await
        .expect("pushgate did not exit within 60 s of SIGTERM")
        .unwrap();
    std::mem::forget(guard);
    assert!(status.success(), "exit {status}: {logs}");
    assert!(logs.contains("SIGTERM"), "logs (stderr): {logs}");

    // Every result published before exit, then what is left in the queue.
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), results.next()).await {
        add(&d.data);
    }
    let mut requeued = BTreeSet::new();
    while let Some(m) = ch
        .basic_get(input.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let v: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
        assert!(
            requeued.insert(v["id"].as_str().unwrap().to_owned()),
            "each job once in the queue"
        );
    }
    for j in 0..JOBS {
        let id = format!("job-{j}");
        let got = finals.get(&id).map_or(0, BTreeSet::len);
        match (got, requeued.contains(&id)) {
            (PER_JOB, false) | (0, true) => {}
            (n, queued) => panic!(
                "{id}: {n} results, back in queue: {queued}; not final: {:?}; daemon logs: {logs}",
                others.get(&id)
            ),
        }
    }
    eprintln!(
        "{} jobs acked with results, {} back in the queue",
        finals.len(),
        requeued.len()
    );
    assert!(
        !requeued.is_empty(),
        "SIGTERM came mid-run: some jobs were left"
    );
    assert!(!finals.is_empty());

    for q in topology::names(&config.amqp, &retry)
        .queues
        .iter()
        .chain([&tap])
    {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for e in topology::names(&config.amqp, &retry).exchanges {
        let _ = ch
            .exchange_delete(e.as_str().into(), Default::default())
            .await;
    }
    let _ = conn.close(200, "test done".into()).await;
    let _ = std::fs::remove_dir_all(&dir);
    apns.shutdown().await;
}
