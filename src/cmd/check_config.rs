//! `pushgate check-config` (not implemented yet).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> ExitCode {
    eprintln!("pushgate: check-config is not implemented yet");
    ExitCode::from(1)
}
