//! `pushgate campaign stop|resume ID`: publishes the control message that
//! stops (or resumes) a campaign on every replica, and waits for the
//! broker's confirm.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::ingest::control::{valid_campaign, Publisher};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Stop a running campaign: its remaining recipients get CampaignStopped.
    Stop(Target),
    /// Undo a stop: the campaign's recipients are sent again.
    Resume(Target),
}

#[derive(Debug, clap::Args)]
pub struct Target {
    /// The campaign id, as in the jobs' "campaign".
    pub campaign: String,
    /// The daemon's TOML config (for `[amqp]`: broker URL and control names).
    #[arg(long, env = "PUSHGATE_CONFIG", default_value = "config/pushgate.toml")]
    pub config: PathBuf,
}

pub async fn run(args: Args) -> ExitCode {
    let (stop, target) = match args.action {
        Action::Stop(t) => (true, t),
        Action::Resume(t) => (false, t),
    };
    if !valid_campaign(&target.campaign) {
        eprintln!("pushgate: a campaign id is 1-128 characters without control characters");
        return ExitCode::from(1);
    }
    let config = match crate::config::load(&target.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pushgate: {e}");
            return ExitCode::from(1);
        }
    };
    let publisher = match Publisher::connect(&config.amqp).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pushgate: cannot reach the broker: {e}");
            return ExitCode::from(1);
        }
    };
    let campaign = target.campaign.as_str();
    let sent = if stop {
        publisher.stop(campaign).await
    } else {
        publisher.resume(campaign).await
    };
    publisher.close().await;
    match sent {
        Ok(()) => {
            let what = if stop { "stop" } else { "resume" };
            println!(
                "campaign {campaign:?}: {what} published on {} (confirmed by the broker)",
                config.amqp.control_exchange
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pushgate: {e}");
            ExitCode::from(1)
        }
    }
}
