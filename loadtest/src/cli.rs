//! Command-line arguments of `loadtest`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "loadtest", about = "pushgate load test and baselines", version)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// One scenario end to end: publish jobs to RabbitMQ, run the gateway
    /// (`pushgate run`) against the APNs simulator, read every result, and
    /// measure the baselines in the same run.
    Run(RunArgs),
    /// The scenarios of docs/benchmarks.md in one go, one markdown report.
    Suite(SuiteArgs),
    /// The APNs provider alone (no broker) against a running simulator.
    Apns(ApnsArgs),
    /// Print a dev provider JWT (for h2load by hand).
    Jwt {
        #[arg(long, default_value = "config/dev/apns-dev.p8")]
        key: PathBuf,
    },
}

/// Which result entries the gateway publishes (`amqp.results_undelivered_only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Results {
    /// One entry per recipient (the full contract; every result is checked).
    All,
    /// Only recipients that were not delivered (fewer publishes; completeness
    /// is then checked on the queues only).
    Undelivered,
}

/// Which tokens the jobs carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mix {
    /// Every token is valid; the simulator runs in accept-all (benchmark) mode.
    Ok,
    /// Scripted tokens: 4% uninstalled (410), 2% malformed (400), 2% 503 on
    /// the first try (one retry); the simulator runs its full checks.
    Errors,
}

/// A baseline measured in the same run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// A bare lapin consumer on the same queue shape, prefetch and ack batching.
    Bare,
    /// The bare consumer again, while h2load sends the gateway's measured
    /// rate to the same simulator: the broker's pace when the HTTP/2 side
    /// of the same throughput shares the cores (a diagnostic beside `bare`).
    BareH2load,
    /// h2load (nghttp2-client) against the same simulator.
    H2load,
    /// @parse/node-apn against the same simulator.
    NodeApn,
    /// aioapns (PyPI) against the same simulator.
    Aioapns,
    /// Live runs: the broker round trip without a gateway (a bare consumer
    /// answers each job after the simulator's latency), for the gateway's
    /// latency overhead.
    Echo,
    /// No baseline.
    None,
}

/// What every scenario shares: where things are and how the gateway is set up.
#[derive(Debug, Clone, Args)]
pub struct Common {
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// The pushgate binary (default: next to this one, else `pushgate` on PATH).
    #[arg(long)]
    pub pushgate: Option<PathBuf>,
    /// Attach to a running APNs simulator (accept-all for `--mix ok`) instead
    /// of starting `pushgate simulate`.
    #[arg(long)]
    pub sim_addr: Option<SocketAddr>,
    /// With --sim-addr: its process id, to report its CPU.
    #[arg(long)]
    pub sim_pid: Option<u32>,
    /// The repository root (config/dev/ keys, loadtest/peers/ drivers).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// HTTP/2 connections of the gateway's APNs pool (and of every baseline client).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Streams per connection for h2load and the peers' concurrency (per connection).
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// Prefetch of the gateway's input queue (and of the bare consumer).
    #[arg(long, default_value_t = 256)]
    pub prefetch: u16,
    /// The gateway's `daemon.max_in_flight`.
    #[arg(long, default_value_t = 4000)]
    pub max_in_flight: usize,
    /// The input queue's `read_interval` (`0ms` reads as soon as bytes
    /// come); default: the gateway's own.
    #[arg(long)]
    pub read_interval: Option<String>,
    /// The gateway's APNs rate for the app (`[throttle.apns] rate_per_second`);
    /// 0 = no limit. pushgate's default (9,000/s, under FCM's project quota)
    /// would measure the throttle, not the gateway.
    #[arg(long, default_value_t = 0)]
    pub app_rate: u32,
    /// The gateway's per-device bucket (`[throttle.device] per_minute`;
    /// 0 = off). The load test's tokens are all distinct, so the bucket never
    /// makes a delivery wait; it costs its bookkeeping, as in production.
    #[arg(long, default_value_t = 60)]
    pub device_per_minute: u32,
    /// The gateway's runtime worker threads (`pushgate --threads`); default:
    /// one per core. 1 leaves the other core to the broker and the simulator.
    #[arg(long)]
    pub gateway_threads: Option<u16>,
    /// The simulator's runtime worker threads (`pushgate --threads` for
    /// `pushgate simulate`); default: one per core. 1 runs it on tokio's
    /// current-thread scheduler, which answers a burst of requests in one
    /// write: the cheaper and more faithful stand-in at zero latency (the
    /// provider's CPU is not the gateway's in production; h2load against it
    /// did 90,000-138,000 req/s, against the default 56,000-85,000).
    #[arg(long)]
    pub sim_threads: Option<u16>,
    /// Keep the gateway on this one CPU (`taskset -c N`). With lapin
    /// consuming (round 4) that saved a third of the gateway's CPU per
    /// single-recipient job; on the current-thread runtime it cost 10% of
    /// jobs/s (round 6), and with the results published from the runtime
    /// thread too, 8-17% (round 8, docs/benchmarks.md).
    #[arg(long)]
    pub gateway_cpu: Option<u16>,
    /// Keep the broker (every thread of beam.smp) on this one CPU for the
    /// run, and the load test with everything it starts (gateway,
    /// simulator, baselines) on the others; the broker's own mask is
    /// restored at the end. Production runs the broker on hosts of its
    /// own: on shared cores the gateway's and the simulator's CPU came out
    /// of the broker's, while the bare consumer, which needs no simulator,
    /// left it alone (docs/benchmarks.md, round 7). Needs 2 or more CPUs.
    #[arg(long)]
    pub broker_cpu: Option<u16>,
    /// Run the load test and every process it starts (gateway, simulator,
    /// baselines) under SCHED_RR: on a machine shared with builds, the
    /// scheduler's wake-up latency otherwise dominates every round trip
    /// (h2load alone measured 8,000 req/s under CFS and 79,000 under
    /// SCHED_RR, same load). Needs root (CAP_SYS_NICE).
    #[arg(long)]
    pub realtime: bool,
    /// With --realtime: the broker (beam.smp) too, for the run only (its
    /// policy is restored at the end).
    #[arg(long)]
    pub realtime_broker: bool,
    /// Keep the run's queues and the gateway's config and log (for debugging).
    #[arg(long)]
    pub keep: bool,
    /// Write the markdown report here as well as to stdout.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// Jobs to publish.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: u64,
    /// Recipients per job (1 = single-recipient jobs; 500 = a fan-out batch).
    #[arg(long, default_value_t = 1)]
    pub recipients: usize,
    /// Jobs per second; 0 = as fast as the broker takes them.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// With --rate: publish for this long (sets --jobs to rate x duration).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Leave the jobs published in the run's first stretch out of the
    /// latency figures (they still count everywhere else), for steady-state
    /// percentiles: APNs, and the simulator, allow one stream per connection
    /// until a request succeeds, so a fresh gateway's first jobs wait one
    /// provider round trip. Applied to the echo baseline too.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub latency_warmup: Duration,
    /// Publish every job before the gateway starts (a backlog): measures
    /// consumption alone; latency is then queue time and is not reported.
    #[arg(long)]
    pub preload: bool,
    /// Publish the jobs transient (delivery mode 1) instead of persistent,
    /// for the gateway and the baselines alike: keeps the broker's disk out
    /// of the latency. RabbitMQ 3.10 writes each persistent job to its
    /// message store, and at times holds a queue's deliveries for 10-70 ms
    /// (docs/benchmarks.md, round 21).
    #[arg(long)]
    pub transient: bool,
    /// Simulator answer delay, e.g. `50ms` or `5ms..20ms`.
    #[arg(long, default_value = "0ms")]
    pub latency: String,
    #[arg(long, value_enum, default_value_t = Mix::Ok)]
    pub mix: Mix,
    /// Share of invalid jobs (half not JSON, half an unknown app), dead-lettered.
    #[arg(long, default_value_t = 0.0)]
    pub invalid: f64,
    #[arg(long, value_enum, default_value_t = Results::All)]
    pub results: Results,
    /// Force-close the gateway's broker connection this long after the start
    /// (rabbitmqctl close_connection); redeliveries and duplicates are reported.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub disconnect_after: Option<Duration>,
    /// Baselines to measure in the same run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bare,h2load")]
    pub baselines: Vec<Baseline>,
    /// Requests h2load sends.
    #[arg(long, default_value_t = 300_000)]
    pub h2load_requests: u64,
    /// Requests each peer client sends (node-apn, aioapns).
    #[arg(long, default_value_t = 100_000)]
    pub peer_requests: u64,
    /// Give up waiting for results this long after the last publish.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    pub timeout: Duration,
    /// Record a CPU profile of the gateway over the run into this file
    /// (`perf record -e cpu-clock --call-graph dwarf`; read it with `perf report -i FILE`).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// A title for the report section.
    #[arg(long)]
    pub title: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SuiteArgs {
    #[command(flatten)]
    pub common: Common,
    /// Scale every scenario's job count (0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Only these scenarios (comma-separated): single, fanout, latency,
    /// mix, rss, soak, backlog.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Runs of the two ratio targets (single-recipient jobs on shared cores
    /// against the bare consumer, fan-out against h2load): the summary
    /// gives every run's ratio and judges their median, since the
    /// machine's speed drifts from one run to the next. The peers and the
    /// diagnostic baselines run with the first only.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub repeat: u16,
}

#[derive(Debug, Clone, Args)]
pub struct ApnsArgs {
    #[arg(long, default_value = "config/dev.toml")]
    pub config: PathBuf,
    #[arg(long, default_value = "shop")]
    pub app: String,
    #[arg(long, default_value_t = 200_000)]
    pub requests: usize,
    #[arg(long, default_value_t = 400)]
    pub concurrency: usize,
    /// Recipients per job: the provider is called for each recipient of one
    /// job (the fan-out shape: shared job, per-recipient request).
    #[arg(long, default_value_t = 1)]
    pub recipients: usize,
}
