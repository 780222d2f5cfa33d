//! The admin HTTP server (`[admin] listen`, HTTP/1.1): `/metrics`,
//! `/healthz`, `/readyz`, `POST /v1/events`, `GET /v1/campaigns/{id}` and
//! `POST /v1/campaigns/{id}/stop|resume`. Routes are in [`routes`].
//!
//! It runs beside the daemon and stops after it, so that readiness reads
//! "not ready" and `/metrics` stays scrapable during the drain.

mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::control::{AmqpControl, CampaignControl};
use super::events::EventSink;
use super::PoolSource;
use crate::app::Status;
use crate::config::{Config, Secret};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 128;
/// A client must send its request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin endpoints read and call.
pub struct AdminState {
    /// Readiness flags and the telemetry (metrics, campaign stats).
    pub status: Arc<Status>,
    /// Where `POST /v1/events` batches go.
    pub events: EventSink,
    /// Provider pools, read for the pool gauges at each scrape.
    pub pools: Option<Arc<dyn PoolSource>>,
    /// Campaign stop/resume; `None` answers 503.
    pub control: Option<Arc<dyn CampaignControl>>,
    /// Bearer token for stop/resume; without it they answer 403.
    pub admin_token: Option<Secret<String>>,
    /// Bearer token for `POST /v1/events`; without it events are open.
    pub events_token: Option<Secret<String>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("control", &self.control.is_some())
            .field("admin_token", &self.admin_token)
            .field("events_token", &self.events_token)
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// The state the daemon serves: events for the configured apps, the
    /// tokens of `[admin]`, and campaign control publishing on
    /// `[amqp] control_exchange`.
    pub fn from_config(
        config: &Config,
        status: Arc<Status>,
        pools: Option<Arc<dyn PoolSource>>,
    ) -> AdminState {
        let control = AmqpControl::new(config.amqp.clone());
        AdminState {
            events: EventSink::new(config.apps.keys().cloned(), Arc::clone(&status.telemetry)),
            status,
            pools,
            control: Some(Arc::new(control)),
            admin_token: config.admin.token.clone(),
            events_token: config.admin.events_token.clone(),
        }
    }
}

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    /// The bound address (the configured one, or the port picked for `:0`).
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `addr` and serves `state` until [`AdminServer::stop`].
    pub async fn start(addr: SocketAddr, state: AdminState) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::new(state), async move {
            let _ = stopped.await;
        }));
        tracing::info!(%addr, "admin server listening (/metrics, /healthz, /readyz, /v1/...)");
        Ok(AdminServer { addr, stop, task })
    }

    /// Stops accepting, closes open connections, waits for the server task.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "admin server task failed");
        }
    }
}

/// Serves until `shutdown` resolves; open connections are then closed.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        conns.spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, state).await;
        });
        while conns.try_join_next().is_some() {}
    }
    conns.shutdown().await;
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, state: Arc<AdminState>) {
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, std::convert::Infallible>(routes::route(&state, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
    }
}

#[cfg(test)]
mod tests;
