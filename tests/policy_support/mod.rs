//! Shared helpers of the throttle and delivery-policy integration tests:
//! configs pointing the real gateway at in-test simulators, the daemon run
//! in-process with a policy the test can read, and result collection.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pushgate::app::{self, Status};
use pushgate::config::{AmqpConfig, Config};
use pushgate::dispatch::gateway::Gateway;
use pushgate::dispatch::Deliver;
use pushgate::job::Platform;
use pushgate::policy::observer::Observer;
use pushgate::policy::Policy;
use pushgate::report::ResultEntry;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::amqp_support::{Collected, Harness};

pub fn dev_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/dev")
}

/// `[apps.shop.*]` for the simulators given, with absolute dev paths.
/// `apns_key`: the .p8 file the APNs section signs with.
pub fn apps_toml(apns: Option<SocketAddr>, fcm: Option<SocketAddr>, apns_key: &Path) -> String {
    let dev = dev_dir();
    let ca = dev.join("ca.pem");
    let mut t = String::new();
    if let Some(addr) = apns {
        t += &format!(
            r#"
[apps.shop.apns]
environment = "sandbox"
endpoint = "https://{addr}"
topic = "com.example.shop"
team_id = "DEVTEAM001"
key_id = "DEVKEY0001"
key_file = "{key}"
ca_file = "{ca}"
connections = 2
"#,
            key = apns_key.display(),
            ca = ca.display()
        );
    }
    if let Some(addr) = fcm {
        t += &format!(
            r#"
[apps.shop.fcm]
service_account_file = "{sa}"
endpoint = "https://{addr}"
token_uri = "https://{addr}/token"
ca_file = "{ca}"
connections = 2
"#,
            sa = dev.join("fcm-service-account.json").display(),
            ca = ca.display()
        );
    }
    t
}

/// Validates `toml` (relative paths resolve against config/dev).
pub fn load(toml: &str) -> Config {
    pushgate::config::load_str(toml, &dev_dir(), Vec::<(String, String)>::new())
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// The `[amqp]` section of `amqp` (and its input and retry tables) as TOML,
/// for a daemon in another process.
pub fn amqp_toml(amqp: &AmqpConfig, prefetch: u16) -> String {
    let delays: Vec<String> = amqp
        .retry
        .delays
        .iter()
        .map(|d| format!("\"{}ms\"", d.as_millis()))
        .collect();
    format!(
        r#"
[amqp]
url = "{url}"
dead_queue = "{dead}"
results_exchange = "{results}"
control_exchange = "{cx}"
control_queue = "{cq}"
connection_name = "{name}"

[[amqp.inputs]]
name = "{input}"
prefetch = {prefetch}

[amqp.retry]
exchange = "{rx}"
queue_prefix = "{rp}"
delays = [{delays}]
max_attempts = {max}
jitter = 0.0
"#,
        url = amqp.url.expose(),
        dead = amqp.dead_queue,
        results = amqp.results_exchange,
        cx = amqp.control_exchange,
        cq = amqp.control_queue,
        name = amqp.connection_name,
        input = amqp.inputs[0].name,
        rx = amqp.retry.exchange,
        rp = amqp.retry.queue_prefix,
        delays = delays.join(", "),
        max = amqp.retry.max_attempts,
    )
}

/// The real gateway's daemon running in this process.
pub struct Daemon {
    pub status: Arc<Status>,
    pub policy: Arc<Policy>,
    gateway: Option<Arc<Gateway>>,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    /// Starts `pushgate run` in-process on `config` (the harness's queues).
    pub fn start(config: Config, observer: Arc<dyn Observer>) -> Daemon {
        let gateway = Arc::new(Gateway::new(&config).unwrap());
        let mut d = Daemon::start_with(config, Arc::clone(&gateway), observer);
        d.gateway = Some(gateway);
        d
    }

    /// The daemon with another `Deliver` (AMQP mechanics only).
    pub fn start_with<D: Deliver>(
        config: Config,
        deliver: Arc<D>,
        observer: Arc<dyn Observer>,
    ) -> Daemon {
        let policy = Arc::new(Policy::from_config(&config, observer));
        let status = Arc::new(Status::default());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app::run_with(
            config,
            deliver,
            async move {
                let _ = rx.await;
            },
            Arc::clone(&status),
            Arc::clone(&policy),
        ));
        Daemon {
            status,
            policy,
            gateway: None,
            stop: Some(tx),
            handle,
        }
    }

    /// Waits until the daemon consumes (the control stream was replayed).
    pub async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.status.is_ready() {
            assert!(tokio::time::Instant::now() < deadline, "daemon not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("daemon did not stop in time")
            .expect("daemon task")
            .expect("daemon run");
        if let Some(g) = self.gateway {
            g.shutdown().await;
        }
    }
}

/// Harness config with `toml`'s apps and policy, the harness's queues.
pub fn config_for(h: &Harness, toml: &str) -> Config {
    let mut c = load(toml);
    c.amqp = h.amqp.clone();
    c.daemon = h.daemon.clone();
    c
}

/// Reads results until `done(&collected)` or `timeout`; true when done.
pub async fn collect_until(
    h: &mut Harness,
    out: &mut Collected,
    timeout: Duration,
    done: impl Fn(&Collected) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(out) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        h.collect_more(out, usize::MAX, 0, Duration::from_millis(200))
            .await;
    }
    true
}

/// Final entries per recipient id.
pub fn finals_by_recipient(entries: &[ResultEntry]) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for e in entries.iter().filter(|e| e.is_final()) {
        *m.entry(e.recipient_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    m
}

/// An observer that keeps what it was told, with wall-clock times.
#[derive(Default)]
pub struct Recorder {
    pub slowdowns: Mutex<Vec<(SystemTime, Platform, bool)>>,
    pub alerts: Mutex<Vec<(Platform, bool)>>,
}

impl Observer for Recorder {
    fn slowdown(&self, _app: &str, platform: Platform, active: bool) {
        self.slowdowns
            .lock()
            .unwrap()
            .push((SystemTime::now(), platform, active));
    }

    fn credentials_alert(&self, _app: &str, platform: Platform, raised: bool) {
        self.alerts.lock().unwrap().push((platform, raised));
    }
}

/// `n` FCM recipients `<prefix>-<i>` with ids `r<i>` in one job.
pub fn fcm_job(
    id: &str,
    campaign: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> serde_json::Value {
    let recipients: Vec<serde_json::Value> = range
        .map(|i| serde_json::json!({"platform": "fcm", "token": format!("{prefix}-{i}"), "id": format!("r{i}")}))
        .collect();
    serde_json::json!({"id": id, "app": "shop", "campaign": campaign, "recipients": recipients,
        "notification": {"title": "Hi", "body": "there"}})
}
