//! pushgate load test: publishes send jobs to RabbitMQ (single-recipient or
//! fan-out, at a rate or as fast as possible, optionally with an error mix
//! and invalid jobs), runs the gateway (`pushgate run`) and the APNs
//! simulator (`pushgate simulate`) as subprocesses or attaches to a running
//! simulator, reads every result message, and reports notifications/s,
//! publish-to-result latency, the gateway's CPU and RSS, counts by code and
//! a count-everything check, beside baselines measured in the same run: a
//! bare lapin consumer, h2load, @parse/node-apn and aioapns.
//!
//! `loadtest run` is one scenario, `loadtest suite` the scenarios of
//! docs/benchmarks.md. Reports are markdown, on stdout and in `--report FILE`.

mod apns;
mod bare;
mod broker;
mod cli;
mod echo;
mod gateway;
mod jobs;
mod peers;
mod procs;
mod procstat;
mod progress;
mod report;
mod scenario;
mod suite;
mod targets;
mod tracker;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Cmd, Common};

/// The gateway's allocator (mimalloc) for the load test too: the bare lapin
/// consumer baseline runs in this process, so it gets the same allocator
/// as the gateway it is compared with, and the result reader, which shares
/// the cores with the gateway, costs less.
#[global_allocator]
static ALLOC: pushgate::alloc::MiMalloc = pushgate::alloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = match &cli.cmd {
        Cmd::Run(a) => Some(&a.common),
        Cmd::Suite(a) => Some(&a.common),
        Cmd::Apns(_) | Cmd::Jwt { .. } => None,
    };
    if common.is_some_and(|c| c.realtime) {
        // Before the runtime exists: its threads and every child inherit it.
        if let Err(e) = procstat::realtime_self() {
            eprintln!("loadtest: --realtime: {e}");
            return ExitCode::FAILURE;
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Run(args) => {
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let mut report = scenario::run(&args, command).await?;
            let text = format!("# pushgate load test\n\n{}", report.render());
            emit(&args.common, &text)
        }
        Cmd::Suite(args) => {
            let text = suite::run(&args).await?;
            emit(&args.common, &text)
        }
        Cmd::Apns(args) => apns::run(&args).await,
        Cmd::Jwt { key } => apns::jwt(&key),
    }
}

fn emit(common: &Common, text: &str) -> anyhow::Result<()> {
    println!("{text}");
    if let Some(path) = &common.report {
        std::fs::write(path, text)?;
        eprintln!("loadtest: report written to {}", path.display());
    }
    Ok(())
}
