//! `pushgate run`: load the config, build the provider layer and run the daemon until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::app::{self, Status};
use crate::config::Config;
use crate::dispatch::gateway::Gateway;
use crate::dispatch::Deliver;

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
    init_logs(&config);
    let gateway = match Gateway::new(&config) {
        Ok(g) => Arc::new(g),
        Err(e) => {
            eprintln!("pushgate: {e}");
            return ExitCode::from(1);
        }
    };
    let code = run_with(config, Arc::clone(&gateway)).await;
    gateway.shutdown().await;
    code
}

/// Runs the daemon with `deliver` until SIGTERM or SIGINT; exit 0 after a clean drain.
pub async fn run_with<D: Deliver>(config: Config, deliver: Arc<D>) -> ExitCode {
    let status = Arc::new(Status::default());
    match app::run(config, deliver, app::shutdown_signal(), status).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "daemon failed");
            ExitCode::from(1)
        }
    }
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let json = match config.log.format.as_str() {
        "json" => true,
        "pretty" => false,
        _ => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
