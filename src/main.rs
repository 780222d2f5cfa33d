//! The `pushgate` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushgate::cmd;

#[derive(Debug, Parser)]
#[command(
    name = "pushgate",
    version,
    about = "Push delivery gateway: RabbitMQ in, APNs / FCM / Web Push out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The daemon: consume send jobs from RabbitMQ, deliver, publish results.
    Run(cmd::run::Args),
    /// Parse and validate a config, load every key, report each app.
    CheckConfig(cmd::check_config::Args),
    /// Send one notification from the terminal and print the outcome.
    Send(cmd::send::Args),
    /// Run the APNs and FCM simulators on loopback.
    Simulate(cmd::simulate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushgate: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cmd::run::run(args).await,
            Command::CheckConfig(args) => cmd::check_config::run(args).await,
            Command::Send(args) => cmd::send::run(args).await,
            Command::Simulate(args) => cmd::simulate::run(args).await,
        }
    })
}
