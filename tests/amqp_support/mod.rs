//! Shared harness of the AMQP integration tests: a unique topology per test
//! on the real RabbitMQ (AMQP_URL), the daemon run in-process with a
//! scripted provider, taps on the results exchange and the dead queue.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use pushgate::app::{self, Status};
use pushgate::config::{
    AdminConfig, AmqpConfig, AppConfig, Config, DaemonConfig, LogConfig, PolicyConfig, Secret,
    TrackingConfig,
};
use pushgate::dispatch::Deliver;
use pushgate::ingest::retry::RetryPolicy;
use pushgate::ingest::topology;
use pushgate::job::Job;
use pushgate::outcome::{Code, Outcome, Status as EntryStatus};
use pushgate::report::{ResultEntry, ResultMessage, TokenFeedback};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The provider stand-in: outcome by token prefix.
/// `ok` delivered; `gone` NotRegistered; `flaky` unavailable on attempt 1
/// then delivered; `down` always unavailable; `slow` 300 ms then delivered;
/// `hang` 60 s then delivered; `boom` panics (a bug in the provider layer).
#[derive(Default)]
pub struct Scripted {
    pub calls: AtomicUsize,
    /// (token, attempt) -> deliveries.
    pub seen: Mutex<HashMap<(String, u32), usize>>,
}

impl Deliver for Scripted {
    async fn deliver(&self, job: &Arc<Job>, recipient: usize, attempt: u32) -> Outcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let token = job.recipients[recipient]
            .token
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default();
        *self
            .seen
            .lock()
            .unwrap()
            .entry((token.clone(), attempt))
            .or_default() += 1;
        let unavailable = || {
            let mut o = Outcome::local(Code::ProviderUnavailable, "ServiceUnavailable");
            o.provider_status = Some(503);
            o
        };
        if token.starts_with("boom") {
            panic!("scripted panic for {token}");
        }
        if token.starts_with("gone") {
            let mut o = Outcome::local(Code::NotRegistered, "Unregistered");
            o.provider_status = Some(410);
            o
        } else if (token.starts_with("flaky") && attempt == 1) || token.starts_with("down") {
            unavailable()
        } else {
            if token.starts_with("slow") {
                tokio::time::sleep(Duration::from_millis(300)).await;
            } else if token.starts_with("hang") {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Outcome::delivered(200, Some(format!("id-{token}")))
        }
    }
}

/// A unique topology, the daemon's config, and the test's own connection.
pub struct Harness {
    pub prefix: String,
    pub conn: Connection,
    pub ch: Channel,
    pub amqp: AmqpConfig,
    pub daemon: DaemonConfig,
    tap: Consumer,
    dead: Consumer,
    _guard: CleanupGuard,
}

/// Deletes the test's queues and exchanges when the harness is dropped,
/// even when the test panicked (on its own thread and runtime).
struct CleanupGuard {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        let worker = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(delete_all(queues, exchanges));
        });
        let _ = worker.join();
    }
}

async fn delete_all(queues: Vec<String>, exchanges: Vec<String>) {
    let Ok(conn) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    for q in &queues {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for e in &exchanges {
        let _ = ch
            .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "test cleanup".into()).await;
}

#[derive(Default)]
pub struct Collected {
    pub results: Vec<ResultEntry>,
    /// The app of each entry of `results`.
    pub apps: Vec<String>,
    pub feedback: Vec<TokenFeedback>,
}

impl Collected {
    pub fn finals(&self) -> Vec<&ResultEntry> {
        self.results.iter().filter(|e| e.is_final()).collect()
    }
}

/// The daemon running in-process.
pub struct Running {
    pub status: Arc<Status>,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn handle_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("daemon did not stop in time")
            .expect("daemon task")
    }
}

impl Harness {
    pub async fn new(tweak: impl FnOnce(&mut AmqpConfig, &mut DaemonConfig)) -> Harness {
        let prefix = format!("t{:08x}", fastrand::u32(..));
        let mut amqp = AmqpConfig {
            url: Secret::new(amqp_url()),
            connection_name: prefix.clone(),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(2),
            ..AmqpConfig::default()
        };
        amqp.inputs[0].name = format!("{prefix}.jobs");
        amqp.inputs[0].prefetch = 8;
        amqp.retry.exchange = format!("{prefix}.retry");
        amqp.retry.queue_prefix = format!("{prefix}.retry.");
        amqp.retry.delays = vec![Duration::from_millis(200), Duration::from_millis(400)];
        amqp.retry.base = Duration::from_millis(200);
        amqp.retry.jitter = 0.0;
        amqp.dead_queue = format!("{prefix}.dead");
        amqp.results_exchange = format!("{prefix}.results");
        amqp.events_queue = format!("{prefix}.events");
        amqp.control_exchange = format!("{prefix}.control");
        amqp.control_queue = format!("{prefix}.control.log");
        let mut daemon = DaemonConfig {
            max_in_flight: 64,
            drain_timeout: Duration::from_secs(5),
        };
        tweak(&mut amqp, &mut daemon);

        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ must answer at AMQP_URL (scripts/ensure-rabbitmq.sh)");
        let ch = conn.create_channel().await.unwrap();
        let retry = RetryPolicy::new(&amqp.retry);
        let tap_name = format!("{prefix}.tap");
        let names = topology::names(&amqp, &retry);
        let guard = CleanupGuard {
            queues: names
                .queues
                .into_iter()
                .chain([tap_name.clone(), amqp.control_queue.clone()])
                .collect(),
            exchanges: names
                .exchanges
                .into_iter()
                .chain([amqp.control_exchange.clone()])
                .collect(),
        };
        // Declared on the harness's broker even when `tweak` points the daemon elsewhere.
        let mut here = amqp.clone();
        here.url = Secret::new(amqp_url());
        topology::declare_once(&here, &retry).await.unwrap();
        ch.queue_declare(
            tap_name.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            tap_name.as_str().into(),
            amqp.results_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let tap = ch
            .basic_consume(
                tap_name.as_str().into(),
                "tap".into(),
                no_ack,
                FieldTable::default(),
            )
            .await
            .unwrap();
        let dead = ch
            .basic_consume(
                amqp.dead_queue.as_str().into(),
                "dead".into(),
                no_ack,
                FieldTable::default(),
            )
            .await
            .unwrap();
        Harness {
            prefix,
            conn,
            ch,
            amqp,
            daemon,
            tap,
            dead,
            _guard: guard,
        }
    }

    pub fn input(&self) -> String {
        self.amqp.inputs[0].name.clone()
    }

    pub fn config(&self) -> Config {
        let app = AppConfig {
            name: "shop".into(),
            apns: None,
            fcm: None,
            webpush: None,
        };
        Config {
            apps: BTreeMap::from([("shop".to_owned(), Arc::new(app))]),
            log: LogConfig {
                format: "pretty".into(),
                level: "info".into(),
            },
            amqp: self.amqp.clone(),
            daemon: self.daemon.clone(),
            admin: AdminConfig::default(),
            tracking: TrackingConfig::default(),
            policy: PolicyConfig::default(),
        }
    }

    pub fn start(&self, deliver: Arc<Scripted>) -> Running {
        let status = Arc::new(Status::default());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app::run(
            self.config(),
            deliver,
            async move {
                let _ = rx.await;
            },
            Arc::clone(&status),
        ));
        Running {
            status,
            stop: Some(tx),
            handle,
        }
    }

    pub async fn publish(&self, body: &[u8]) {
        self.publish_with(body, FieldTable::default()).await;
    }

    /// Publishes `body` with the message headers `headers`.
    pub async fn publish_with(&self, body: &[u8], headers: FieldTable) {
        let confirm = self
            .ch
            .basic_publish(
                "".into(),
                self.input().as_str().into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(headers),
            )
            .await
            .unwrap();
        drop(confirm);
    }

    pub async fn publish_job(&self, job: &serde_json::Value) {
        self.publish(&serde_json::to_vec(job).unwrap()).await;
    }

    /// Reads the results tap until `finals` final entries arrived (or timeout).
    pub async fn collect(&mut self, finals: usize, timeout: Duration) -> Collected {
        let mut out = Collected::default();
        self.collect_more(&mut out, finals, 0, timeout).await;
        out
    }

    /// Reads on until `finals` final entries and `tokens` feedback tokens arrived (or timeout).
    pub async fn collect_more(
        &mut self,
        out: &mut Collected,
        finals: usize,
        tokens: usize,
        timeout: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        let fed = |c: &Collected| c.feedback.iter().map(|f| f.tokens.len()).sum::<usize>();
        while out.finals().len() < finals || fed(out) < tokens {
            let next = tokio::time::timeout_at(deadline, self.tap.next()).await;
            let Ok(Some(Ok(d))) = next else { break };
            if d.routing_key.as_str().ends_with(".token.invalid") {
                out.feedback.push(serde_json::from_slice(&d.data).unwrap());
            } else {
                let msg: ResultMessage = serde_json::from_slice(&d.data).unwrap();
                assert_eq!(d.routing_key.as_str(), format!("{}.results", msg.app));
                out.apps.extend(msg.results.iter().map(|_| msg.app.clone()));
                out.results.extend(msg.results);
            }
        }
    }

    /// Reads `n` dead letters: (reason header, body).
    pub async fn dead_letters(&mut self, n: usize, timeout: Duration) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while out.len() < n {
            let next = tokio::time::timeout_at(deadline, self.dead.next()).await;
            let Ok(Some(Ok(d))) = next else { break };
            let reason = d
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-pushgate-reason").cloned())
                .and_then(|v| match v {
                    AMQPValue::LongString(s) => {
                        Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                    }
                    _ => None,
                })
                .unwrap_or_default();
            out.push((reason, d.data));
        }
        out
    }

    /// Messages waiting in the input queue (drained with basic.get).
    pub async fn take_input(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(m) = self
            .ch
            .basic_get(
                self.input().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            out.push(m.delivery.data);
        }
        out
    }

    /// Closes the test's connection; the guard deletes the topology.
    pub async fn cleanup(self) {
        let _ = self.conn.close(200, "test done".into()).await;
    }
}

/// Force-closes the broker connections whose `connection_name` is `name`
/// (`rabbitmqctl close_connection`); returns how many were closed.
pub async fn force_close(name: &str) -> usize {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        // Plain output: pids print as `<rabbit@host.N.N.N>`, which close_connection takes.
        let out = std::process::Command::new("rabbitmqctl")
            .args(["list_connections", "pid", "client_properties", "-q"])
            .output()
            .expect("rabbitmqctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut closed = 0;
        for line in text.lines() {
            if !line.contains(&format!("\"{name}\"")) {
                continue;
            }
            let pid = line.split('\t').next().unwrap_or_default().trim();
            let ok = std::process::Command::new("rabbitmqctl")
                .args(["close_connection", pid, "test: forced close"])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("rabbitmqctl")
                .success();
            closed += usize::from(ok);
        }
        if closed == 0 {
            eprintln!("no connection named {name} in:\n{text}");
        }
        closed
    })
    .await
    .unwrap()
}

/// A job of `tokens` (apns recipients with ids `r<i>`).
pub fn job(id: &str, tokens: &[&str]) -> serde_json::Value {
    let recipients: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"platform": "fcm", "token": t, "id": format!("r{i}")}))
        .collect();
    serde_json::json!({"id": id, "app": "shop", "campaign": "c1", "recipients": recipients,
        "notification": {"title": "Hi", "body": "there"}})
}

/// Final entries by (job id, recipient id).
pub fn by_recipient(entries: &[&ResultEntry]) -> HashMap<(String, String), Vec<EntryStatus>> {
    let mut m: HashMap<(String, String), Vec<EntryStatus>> = HashMap::new();
    for e in entries {
        m.entry((e.job_id.clone(), e.recipient_id.clone().unwrap_or_default()))
            .or_default()
            .push(e.status);
    }
    m
}
