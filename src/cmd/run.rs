//! `pushgate run`: load the config, build the provider layer and run the daemon until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::app::{self, Status};
use crate::config::Config;
use crate::dispatch::Deliver;
use crate::job::Job;
use crate::outcome::{Code, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The TOML config file.
    #[arg(long, env = "PUSHGATE_CONFIG", default_value = "pushgate.toml")]
    pub config: PathBuf,
}

pub async fn run(args: Args) -> ExitCode {
    let config = match crate::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pushgate: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(&config);
    // TODO(lead): replace with the real provider layer (APNs / FCM pools).
    let deliver = Arc::new(Unwired);
    run_with(config, deliver).await
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
    let _ = if config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Stand-in until the provider layer is wired: every recipient fails with
/// a credentials-class code (final, never retried, never looping).
struct Unwired;

impl Deliver for Unwired {
    async fn deliver(&self, _job: &Arc<Job>, _recipient: usize, _attempt: u32) -> Outcome {
        Outcome::local(
            Code::InvalidCredentials,
            "provider layer not wired in this build",
        )
    }
}
