//! `pushgate run`: load the config, set up logs and telemetry, build the
//! provider layer, and run the daemon (with its admin server) until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::app::{self, Status};
use crate::config::Config;
use crate::dispatch::gateway::Gateway;
use crate::dispatch::Deliver;
use crate::telemetry::admin::{AdminServer, AdminState};
use crate::telemetry::{logs, PoolSource, Telemetry};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The TOML config file.
    #[arg(long, env = "PUSHGATE_CONFIG", default_value = "config/pushgate.toml")]
    pub config: PathBuf,
}

pub async fn run(args: Args) -> ExitCode {
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

/// Runs the daemon with `deliver` and the admin server until SIGTERM or
/// SIGINT; exit 0 after a clean drain. The admin server stops last, so
/// `/readyz` answers "not ready" during the drain.
pub async fn run_with<D: Deliver>(
    config: Config,
    deliver: Arc<D>,
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
