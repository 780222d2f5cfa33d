//! The `pushgate` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushgate::cmd;

/// mimalloc instead of glibc's malloc: per-thread free lists without
/// glibc's consolidation passes (see docs/benchmarks.md for the figures).
#[global_allocator]
static ALLOC: pushgate::alloc::MiMalloc = pushgate::alloc::MiMalloc;

/// Turns transparent huge pages off for this process, unless the operator
/// set `MIMALLOC_ALLOW_THP` (mimalloc's own switch; `0` does the same).
///
/// mimalloc asks for huge pages on its arenas, so with the kernel's THP
/// setting at `madvise` (Debian's default) or `always` every fresh part of
/// the heap is faulted in and zeroed 2 MB at a time. The load test measured
/// half the RSS without them (fan-out 500: 100-106 MB -> 57-58 MB; single
/// jobs: 52 MB -> 28 MB) at the same CPU per notification (docs/benchmarks.md,
/// round 4). The flag is set before the runtime starts, so it covers every
/// page the process faults in from here on.
#[cfg(target_os = "linux")]
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag
    // on this process's memory map; no memory is passed to the kernel.
    // Kernels before 3.15 lack the flag: nothing is lost but some memory,
    // so the result is not checked (and nothing is logged before the
    // JSON log is set up).
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(not(target_os = "linux"))]
fn no_transparent_huge_pages() {}

#[derive(Debug, Parser)]
#[command(
    name = "pushgate",
    version,
    about = "Push delivery gateway: RabbitMQ in, APNs / FCM / Web Push out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads (default: one per CPU the process may use). 1 (also the
    /// default where the process may use one CPU) runs everything on one
    /// thread with tokio's current-thread scheduler, which batches a burst of
    /// single-recipient jobs into fewer writes: on a machine whose cores are
    /// shared with the broker, the faster choice for such jobs. For `run`,
    /// N above 1 delivers on N dispatch shards (threads with connections of
    /// their own; each job on one), the broker side on the main thread;
    /// other commands run N runtime workers (see docs/operations.md).
    #[arg(long, global = true, env = "PUSHGATE_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
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
    /// Simulators, gateway and a sample campaign in one process, with a summary by code.
    Demo(cmd::demo::Args),
    /// Stop or resume a campaign on every replica (control message).
    Campaign(cmd::campaign::Args),
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    // Usage errors exit 1 (clap's default is 2, which `send` uses for "refused").
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    // One thread: tokio's current-thread scheduler, not a multi-thread one
    // with a single worker. The multi-thread scheduler runs a task woken by
    // the running one next (its LIFO slot), so every job task that queued a
    // request was followed by the HTTP/2 connection task flushing that one
    // request: a TLS write per notification on the gateway's side, a read
    // and an answer per request on the provider's. The current-thread
    // scheduler runs tasks in the order they were woken: the jobs of a
    // burst of deliveries queue their requests first, and the connection
    // writes them together (single-recipient jobs: 0.55 writes per job
    // instead of 1.0 with four connections; 16% less CPU per job,
    // docs/benchmarks.md round 6).
    // A process allowed one CPU (a pod with a CPU limit of 1, say) gets the
    // current-thread scheduler by default too: it is what one worker
    // thread would be, without the LIFO slot.
    let threads = cli.threads.map(usize::from).or_else(|| {
        std::thread::available_parallelism()
            .ok()
            .map(std::num::NonZeroUsize::get)
    });
    // `run` on more than one thread: deliveries run on that many dispatch
    // shards, each a thread with a current-thread runtime and connections
    // of its own, and the broker side on this thread (src/dispatch/shards.rs:
    // a fan-out notification cost 10.5 µs of CPU on a two-thread runtime,
    // where each shard spends about 8.5 µs; docs/benchmarks.md round 16).
    let shards = match (&cli.command, threads) {
        (Command::Run(_), Some(n)) if n > 1 => n,
        _ => 1,
    };
    let mut builder = match threads {
        _ if shards > 1 => tokio::runtime::Builder::new_current_thread(),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushgate: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cmd::run::run(args, shards).await,
            Command::CheckConfig(args) => cmd::check_config::run(args).await,
            Command::Send(args) => cmd::send::run(args).await,
            Command::Simulate(args) => cmd::simulate::run(args).await,
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Campaign(args) => cmd::campaign::run(args).await,
        }
    })
}
