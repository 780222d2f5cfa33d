//! `pushgate run`: load the config, set up logs and telemetry, build the
//! provider layer, and run the daemon (with its admin server) until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::app::{self, Deliverers, Status};
use crate::config::Config;
use crate::dispatch::gateway::Gateway;
use crate::dispatch::{Deliver, Shards};
use crate::provider::apns::auth::Tokens;
use crate::telemetry::admin::{AdminServer, AdminState};
use crate::telemetry::{logs, PoolSource, Telemetry};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The TOML config file.
    #[arg(long, env = "PUSHGATE_CONFIG", default_value = "config/pushgate.toml")]
    pub config: PathBuf,
}

/// Runs the daemon. `shards` > 1: deliveries run on that many dispatch
/// threads of their own ([`Shards`]), this runtime keeps the broker side.
pub async fn run(args: Args, shards: usize) -> ExitCode {
    let config = match crate::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pushgate: {e}");
            return ExitCode::from(1);
        }
    };
    logs::init(&config.log);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %args.config.display(),
        apps = config.apps.len(),
        "pushgate starting"
    );
    let telemetry = Arc::new(Telemetry::new(config.admin.max_campaigns));
    if shards > 1 {
        return run_sharded(config, telemetry, shards).await;
    }
    let gateway = match Gateway::new(&config) {
        Ok(g) => Arc::new(g.with_telemetry(Arc::clone(&telemetry))),
        Err(e) => {
            eprintln!("pushgate: {e}");
            return ExitCode::from(1);
        }
    };
    let status = Arc::new(Status::new(telemetry));
    let pools: Arc<dyn PoolSource> = gateway.clone();
    let code = run_with(config, Arc::clone(&gateway), status, Some(pools)).await;
    gateway.shutdown().await;
    code
}

/// [`run`] with `n` dispatch shards, each with its own gateway (its share
/// of every pool's connections, [`Config::apps_for_shards`]).
async fn run_sharded(config: Config, telemetry: Arc<Telemetry>, n: usize) -> ExitCode {
    let mut shard_config = config.clone();
    shard_config.apps = config.apps_for_shards(n);
    // One APNs token per team and key for all shards (protocols.md §1).
    let tokens = Tokens::default();
    let started = Shards::start(n, |_| {
        Gateway::new_with(&shard_config, &tokens).map(|g| g.with_telemetry(Arc::clone(&telemetry)))
    });
    let shards = match started {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("pushgate: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(shards = n, "dispatching on threads of their own");
    let status = Arc::new(Status::new(telemetry));
    let pools: Arc<dyn PoolSource> = shards.clone();
    let code = run_with(
        config,
        Deliverers::Sharded(Arc::clone(&shards)),
        status,
        Some(pools),
    )
    .await;
    shards.on_each(|g| async move { g.shutdown().await }).await;
    shards.stop().await;
    code
}

/// Runs the daemon with `deliver` and the admin server until SIGTERM or
/// SIGINT; exit 0 after a clean drain. The admin server stops last, so
/// `/readyz` answers "not ready" during the drain.
pub async fn run_with<D: Deliver>(
    config: Config,
    deliver: impl Into<Deliverers<D>>,
    status: Arc<Status>,
    pools: Option<Arc<dyn PoolSource>>,
) -> ExitCode {
    let admin = match config.admin.listen {
        Some(addr) => {
            let state = AdminState::from_config(&config, Arc::clone(&status), pools);
            match AdminServer::start(addr, state).await {
                Ok(server) => Some(server),
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot bind the admin server ([admin] listen)");
                    eprintln!("pushgate: cannot listen on {addr} ([admin] listen): {e}");
                    return ExitCode::from(1);
                }
            }
        }
        None => None,
    };
    let result = app::run(config, deliver, app::shutdown_signal(), status).await;
    if let Some(server) = admin {
        server.stop().await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "daemon failed");
            ExitCode::from(1)
        }
    }
}
