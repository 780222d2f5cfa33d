//! Wiring and lifecycle of the daemon: builds the dispatcher and queue
//! permits, runs broker sessions with reconnect and backoff, owns shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{AppConfig, Config};
use crate::dispatch::{Deliver, Dispatcher, Shards};
use crate::ingest::amqp::{queue_permits, session, Base};
use crate::ingest::retry::RetryPolicy;
use crate::job::Platform;
use crate::policy::Policy;
use crate::telemetry::events::EventSink;
use crate::telemetry::Telemetry;
use crate::throttle::clock::Shutdown;

/// What the daemon shows the outside (admin server, tests): readiness and
/// counters. Counters only grow.
#[derive(Debug, Default)]
pub struct Status {
    /// True while consuming from a connected broker and not shutting down.
    pub ready: AtomicBool,
    /// Broker sessions that reached the consuming state.
    pub sessions: AtomicU64,
    pub jobs_received: AtomicU64,
    /// Deliveries the broker flagged as redelivered.
    pub jobs_redelivered: AtomicU64,
    /// Jobs finished and acked (dead-lettered ones included).
    pub jobs_acked: AtomicU64,
    /// Jobs given back to the queue (drain deadline, refused confirms).
    pub jobs_requeued: AtomicU64,
    /// Messages sent to the dead queue (bad jobs, exhausted retries).
    pub dead_lettered: AtomicU64,
    /// Final (delivered or failed) result entries confirmed by the broker.
    pub results_final: AtomicU64,
    /// Recipients handed to a delay queue.
    pub retries_published: AtomicU64,
    /// `basic.ack` frames sent (each may ack many jobs).
    pub ack_frames: AtomicU64,
    /// True while the AMQP connection of a session is up.
    pub broker_connected: AtomicBool,
    /// True from the shutdown signal on (consumers cancelled, jobs finishing).
    pub draining: AtomicBool,
    /// Prometheus metrics and campaign stats, fed by ingest and dispatch.
    pub telemetry: Arc<Telemetry>,
}

impl Status {
    /// A status feeding `telemetry` (built by the wiring from the config).
    pub fn new(telemetry: Arc<Telemetry>) -> Status {
        Status {
            telemetry,
            ..Status::default()
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn is_broker_connected(&self) -> bool {
        self.broker_connected.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Who delivers the notifications: one deliverer on the daemon's runtime,
/// or dispatch shards (threads of their own, each with its deliverer).
pub enum Deliverers<D> {
    Here(Arc<D>),
    Sharded(Arc<Shards<D>>),
}

impl<D> From<Arc<D>> for Deliverers<D> {
    fn from(d: Arc<D>) -> Deliverers<D> {
        Deliverers::Here(d)
    }
}

/// A future that resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Runs the daemon until `shutdown` resolves, then drains and returns `Ok`.
/// Broker faults never end it: it reconnects with backoff. The delivery
/// policy is built from `config` and reports to `status`'s metrics.
pub async fn run<D: Deliver>(
    config: Config,
    deliver: impl Into<Deliverers<D>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    status: Arc<Status>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(status.telemetry.metrics.clone());
    let policy = Arc::new(Policy::from_config(&config, metrics));
    run_with(config, deliver, shutdown, status, policy).await
}

/// [`run`] with a policy built by the caller ([`Policy::from_config`] with
/// a metrics observer), who can read its state meanwhile.
pub async fn run_with<D: Deliver>(
    config: Config,
    deliver: impl Into<Deliverers<D>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    status: Arc<Status>,
    policy: Arc<Policy>,
) -> anyhow::Result<()> {
    crate::ingest::client::check_url(config.amqp.url.expose())
        .map_err(|e| anyhow::anyhow!("amqp.url: {e}"))?;
    let (tx, rx) = watch::channel(false);
    let amqp = Arc::new(config.amqp);
    let retry = Arc::new(RetryPolicy::new(&amqp.retry));
    init_app_metrics(&config.apps, &status.telemetry);
    let events = EventSink::new(config.apps.keys().cloned(), Arc::clone(&status.telemetry));
    let (dispatcher, shards) = match deliver.into() {
        Deliverers::Here(d) => (Dispatcher::new(d, Arc::clone(&retry)), 1),
        Deliverers::Sharded(s) => {
            let n = s.len();
            let d = Dispatcher::new(Arc::clone(s.first()), Arc::clone(&retry));
            (d.with_shards(s), n)
        }
    };
    let dispatcher = dispatcher.with_policy(Arc::clone(&policy), Shutdown::new(rx.clone()));
    let permits = queue_permits(&amqp.inputs, config.daemon.max_in_flight, shards);
    let base = Base {
        events: Some(events),
        dispatcher,
        apps: Arc::new(config.apps),
        queues: amqp.inputs.iter().cloned().zip(permits).collect(),
        amqp: Arc::clone(&amqp),
        retry,
        drain_timeout: config.daemon.drain_timeout,
        status: Arc::clone(&status),
        policy: Arc::clone(&policy),
    };
    let upkeep = tokio::spawn(Arc::clone(&policy).upkeep(Shutdown::new(rx.clone())));
    let flag = Arc::clone(&status);
    let watcher = tokio::spawn(async move {
        shutdown.await;
        flag.ready.store(false, Ordering::SeqCst);
        flag.draining.store(true, Ordering::SeqCst);
        tracing::info!("draining: consumers cancelled, in-flight jobs finishing");
        let _ = tx.send(true);
    });
    reconnect_loop(&base, &rx).await;
    watcher.abort();
    upkeep.abort();
    status.ready.store(false, Ordering::SeqCst);
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    tracing::info!(
        jobs_received = count(&status.jobs_received),
        jobs_acked = count(&status.jobs_acked),
        jobs_requeued = count(&status.jobs_requeued),
        ack_frames = count(&status.ack_frames),
        "stopped"
    );
    Ok(())
}

/// Creates each configured app's series at 0 (dashboards and alerts see them at once).
pub fn init_app_metrics(apps: &BTreeMap<String, Arc<AppConfig>>, telemetry: &Telemetry) {
    for (name, app) in apps {
        let platforms: Vec<Platform> = [
            app.apns.as_ref().map(|_| Platform::Apns),
            app.fcm.as_ref().map(|_| Platform::Fcm),
            app.webpush.as_ref().map(|_| Platform::Webpush),
        ]
        .into_iter()
        .flatten()
        .collect();
        telemetry.metrics.init_app(name, &platforms);
    }
}

/// Runs sessions until shutdown; a lost session is retried with
/// exponential backoff (reset once a session reached consuming).
async fn reconnect_loop<D: Deliver>(base: &Base<D>, rx: &watch::Receiver<bool>) {
    let (min, max) = (base.amqp.reconnect_min, base.amqp.reconnect_max);
    let mut backoff = min;
    loop {
        let sessions_before = base.status.sessions.load(Ordering::Relaxed);
        let Err(e) = session(base, rx).await else {
            return;
        };
        if *rx.borrow() {
            tracing::warn!(error = %e, "broker session ended during shutdown");
            return;
        }
        if base.status.sessions.load(Ordering::Relaxed) != sessions_before {
            backoff = min;
        }
        let wait = jittered(backoff);
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        tracing::warn!(error = %e, retry_in_ms = wait_ms, "broker session lost; reconnecting");
        let mut stop = rx.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(max);
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// `d` plus or minus 20 %.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * fastrand::f64())
}
