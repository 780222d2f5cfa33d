//! One `loadtest run`: the simulator (started or attached), the bare
//! consumer baseline, the gateway phase, the HTTP/2 baselines, cleanup and
//! the report, all in one process so that the figures share one moment.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::bare;
use crate::broker::{self, Names};
use crate::cli::{Baseline, Mix, Results, RunArgs};
use crate::echo;
use crate::gateway::{self, Phase};
use crate::jobs::{Kind, Plan};
use crate::peers::{self, PeerResult, Target};
use crate::procs::{self, Proc};
use crate::procstat::{self, CpuTimes};
use crate::report::RunReport;

/// Runs one scenario and returns its report.
pub async fn run(args: &RunArgs, command: String) -> anyhow::Result<RunReport> {
    let mut args = args.clone();
    if let (Some(d), true) = (args.duration, args.rate > 0.0) {
        args.jobs = (d.as_secs_f64() * args.rate).round() as u64;
    }
    let names = Names::new();
    let plan = Plan {
        tag: names.tag.clone(),
        jobs: args.jobs,
        recipients: args.recipients.max(1),
        mix: args.mix,
        invalid: args.invalid,
        latency_warmup: args.latency_warmup,
        persistent: !args.transient,
    };
    let (load_start, cores) = procstat::machine();
    let work_dir = std::env::temp_dir().join("pushgate-loadtest");
    std::fs::create_dir_all(&work_dir)?;
    let bin = procs::pushgate_bin(&args.common);
    // Before the simulator starts: it inherits the load test's CPUs.
    let _broker_pin = match args.common.broker_cpu {
        Some(cpu) => BrokerPinned::on(cpu, cores, args.common.gateway_cpu)?,
        None => BrokerPinned(None),
    };
    let (sim, sim_addr, sim_pid) = simulator(&args, &bin, &work_dir, &names).await?;
    let conn = broker::connect(&args.common.amqp_url, &format!("loadtest-{}", names.tag)).await?;
    let _broker_rt = if args.common.realtime && args.common.realtime_broker {
        BrokerRealtime::on()?
    } else {
        BrokerRealtime(None)
    };
    let mut report = new_report(&args, &plan, command, cores, load_start);
    let phase = Phase {
        args: &args,
        names: &names,
        plan: &plan,
        sim: sim_addr,
        sim_pid,
        conn: &conn,
        bin: &bin,
        work_dir: &work_dir,
    };
    measure(&phase, &mut report).await;

    if !args.common.keep {
        if let Ok(ch) = conn.create_channel().await {
            broker::cleanup(&ch, &names).await;
        }
        let _ = std::fs::remove_file(work_dir.join(format!("{}.toml", names.tag)));
    }
    let _ = conn.close(200, "loadtest done".into()).await;
    if let Some(sim) = sim {
        let _ = sim.stop(std::time::Duration::from_secs(5)).await;
    }
    report.load_end = procstat::machine().0;
    Ok(report)
}

/// The bare consumer, the gateway, the bare consumer beside h2load at the
/// gateway's rate, then the HTTP/2 baselines, one after the other (each
/// has the machine to itself).
async fn measure(p: &Phase<'_>, report: &mut RunReport) {
    let args = p.args;
    if args.baselines.contains(&Baseline::Bare) {
        eprintln!(
            "loadtest: bare consumer baseline ({} messages)",
            p.plan.jobs
        );
        let t = CpuTimes::now();
        let r = bare::run(&args.common.amqp_url, p.names, p.plan, args.common.prefetch).await;
        report.bare = Some(r.map_err(|e| format!("{e:#}")));
        report.note_steal("bare consumer", t);
    }
    let t = CpuTimes::now();
    let run = gateway::run(p).await;
    report.note_steal("gateway", t);
    match run {
        Ok(g) => {
            report.missing = missing(args, p.plan, &g);
            report.gateway = Some(g);
        }
        Err(e) => report.gateway_error = Some(format!("{e:#}")),
    }
    if args.baselines.contains(&Baseline::BareH2load) {
        let window = report.gateway.as_ref().map(|g| (g.rate, g.window_secs));
        eprintln!("loadtest: bare consumer beside h2load at the gateway's rate");
        let t = CpuTimes::now();
        let r = bare_beside_h2load(p, window).await;
        report.bare_h2load = Some(r.map_err(|e| format!("{e:#}")));
        report.note_steal("bare consumer beside h2load", t);
    }
    if args.baselines.contains(&Baseline::Echo) && !args.preload {
        eprintln!(
            "loadtest: broker round-trip baseline (echo, {} jobs)",
            p.plan.jobs
        );
        let latency = humantime::parse_duration(&args.latency).unwrap_or_default();
        let c = &args.common;
        let t = CpuTimes::now();
        let r = echo::run(
            &c.amqp_url,
            p.names,
            p.plan,
            args.rate,
            latency,
            (c.prefetch, args.timeout),
        )
        .await;
        report.echo = Some(r.map_err(|e| format!("{e:#}")));
        report.note_steal("echo", t);
    }
    let t = CpuTimes::now();
    report.peers = http2_baselines(args, p.sim).await;
    if !report.peers.is_empty() {
        report.note_steal("HTTP/2 baselines", t);
    }
}

/// Starts `pushgate simulate` (accept-all for the `ok` mix), or attaches.
async fn simulator(
    args: &RunArgs,
    bin: &std::path::Path,
    dir: &std::path::Path,
    names: &Names,
) -> anyhow::Result<(Option<Proc>, SocketAddr, Option<u32>)> {
    if let Some(addr) = args.common.sim_addr {
        return Ok((None, addr, args.common.sim_pid));
    }
    let log = dir.join(format!("{}.sim.log", names.tag));
    let accept_all = args.mix == Mix::Ok;
    let (proc, addr) =
        procs::start_sim(bin, accept_all, &args.latency, args.common.sim_threads, log)
            .await
            .context("starting the APNs simulator")?;
    let pid = proc.pid;
    Ok((Some(proc), addr, Some(pid)))
}

fn new_report(args: &RunArgs, plan: &Plan, command: String, cores: usize, load: f64) -> RunReport {
    let (mut codes, dead) = plan.expected();
    let mut expected_results = plan.expected_results();
    if args.results == Results::Undelivered {
        expected_results -= codes.remove("delivered").unwrap_or(0);
    }
    let c = &args.common;
    RunReport {
        title: args.title.clone().unwrap_or_else(|| "loadtest run".into()),
        command,
        cores,
        load_start: load,
        load_end: load,
        jobs: plan.jobs,
        recipients: plan.recipients,
        preload: args.preload,
        latency: args.latency.clone(),
        settings: format!(
            "gateway: {} APNs connections, prefetch {}, read interval {}, max_in_flight {}, app rate {}, device bucket {}, runtime threads {}, simulator threads {}, results {}; jobs {}, mix {:?}, invalid share {}{}; scheduling: {}",
            c.connections,
            c.prefetch,
            c.read_interval.clone().unwrap_or_else(|| format!(
                "{} (default)",
                humantime::format_duration(pushgate::config::amqp::DEFAULT_READ_INTERVAL)
            )),
            c.max_in_flight,
            if c.app_rate == 0 { "unlimited".to_string() } else { format!("{}/s", c.app_rate) },
            if c.device_per_minute == 0 { "off".to_string() } else { format!("{}/min", c.device_per_minute) },
            c.gateway_threads.map_or_else(|| "one per core".to_string(), |n| n.to_string())
                + &c.gateway_cpu.map(|n| format!(" (pinned to CPU {n})")).unwrap_or_default(),
            match (c.sim_addr, c.sim_threads) {
                (Some(_), _) => "attached".to_string(),
                (None, None) => "one per core".to_string(),
                (None, Some(n)) => n.to_string(),
            },
            if args.results == Results::All { "all" } else { "undelivered only" },
            if args.transient { "transient" } else { "persistent" },
            args.mix,
            args.invalid,
            if args.rate > 0.0 { format!(", {} jobs/s", args.rate) } else { String::new() }
                + &if args.latency_warmup.is_zero() { String::new() } else {
                    format!(", latencies of the jobs published after the first {:?}", args.latency_warmup)
                },
            match (c.realtime, c.realtime_broker) {
                (false, _) => "normal (CFS)",
                (true, false) => "SCHED_RR for the load test, gateway, simulator and baselines; broker normal",
                (true, true) => "SCHED_RR for everything measured, broker included",
            }.to_string() + &c.broker_cpu.map(|n| format!("; broker pinned to CPU {n}, everything else on the other CPUs")).unwrap_or_default()
        ),
        broker_cpu: c.broker_cpu,
        connections: c.connections,
        max_in_flight: c.max_in_flight,
        gateway: None,
        gateway_error: None,
        bare: None,
        bare_h2load: None,
        echo: None,
        ack_batch: bare::ack_batch(c.prefetch),
        peers: Vec::new(),
        expected_codes: codes,
        expected_dead: dead,
        expected_results,
        missing: 0,
        steal: Vec::new(),
    }
}

fn missing(args: &RunArgs, plan: &Plan, g: &gateway::GatewayRun) -> u64 {
    if args.results == Results::Undelivered {
        let (codes, _) = plan.expected();
        let failures = plan.expected_results() - codes.get("delivered").copied().unwrap_or(0);
        return failures.saturating_sub(g.tracker.finals);
    }
    g.tracker
        .missing(plan.jobs, |s| plan.kind(s) == Kind::NotJson)
}

/// The bare consumer on a freshly preloaded queue while h2load sends the
/// gateway's rate (`window`: its notifications/s and seconds) to the same
/// simulator with the gateway's connections and streams. h2load runs for
/// the gateway's window; a bare consumer that outlasts it runs its tail
/// alone, which only raises this baseline.
async fn bare_beside_h2load(
    p: &Phase<'_>,
    window: Option<(f64, f64)>,
) -> anyhow::Result<bare::Beside> {
    let (rate, secs) = window
        .filter(|(rate, _)| *rate > 0.0)
        .context("no gateway rate to pace h2load at (the gateway run failed)")?;
    let args = p.args;
    let prepared = bare::prepare(&args.common.amqp_url, p.names, p.plan).await?;
    let asked = rate.round() as u64;
    let paced = peers::h2load_paced(&target(args, p.sim), asked, secs.ceil() as u64)?;
    let command = paced.command.clone();
    let bare = prepared.consume(args.common.prefetch).await?;
    let sent = paced.finish().await.map_err(|e| format!("{e:#}"));
    Ok(bare::Beside {
        bare,
        asked,
        sent,
        command,
    })
}

/// Where the HTTP/2 clients send, with the gateway's connections and streams.
fn target(args: &RunArgs, addr: SocketAddr) -> Target {
    let c = &args.common;
    Target {
        addr,
        root: std::fs::canonicalize(&c.root).unwrap_or_else(|_| PathBuf::from(".")),
        connections: c.connections,
        streams: c.streams,
        requests: args.peer_requests,
        h2load_requests: args.h2load_requests,
        work_dir: std::env::temp_dir().join("pushgate-loadtest"),
    }
}

async fn http2_baselines(args: &RunArgs, addr: SocketAddr) -> Vec<PeerResult> {
    let target = target(args, addr);
    let mut out = Vec::new();
    for b in &args.baselines {
        let r = match b {
            Baseline::Bare | Baseline::BareH2load | Baseline::Echo | Baseline::None => continue,
            Baseline::H2load => peers::h2load(&target).await,
            Baseline::NodeApn => peers::node_apn(&target).await,
            Baseline::Aioapns => peers::aioapns(&target).await,
        };
        match &r.outcome {
            Ok(m) => eprintln!("loadtest: {}: {:.0}/s", r.name, m.rate()),
            Err(e) => eprintln!("loadtest: {} skipped: {e}", r.name),
        }
        out.push(r);
    }
    out
}

/// The broker kept on one CPU and the load test on the others, for the
/// run (CPUs numbered from 0, as on this machine): gives each broker thread
/// its own CPUs back when dropped (its schedulers are bound one to a CPU;
/// restoring the process's list to every thread would unbind them until
/// the broker restarts), and the load test its own CPUs: without that, a
/// suite ran every scenario after its `--broker-cpu` one on a single CPU,
/// with the gateway, the simulator and h2load it starts (docs/benchmarks.md,
/// round 15).
struct BrokerPinned(Option<Pinned>);

/// What [`BrokerPinned`] gives back.
struct Pinned {
    /// Each broker thread's CPUs.
    broker: Vec<(u32, String)>,
    /// The load test's CPUs (its main thread's: every thread started with it).
    own: String,
}

impl BrokerPinned {
    fn on(cpu: u16, cores: usize, gateway_cpu: Option<u16>) -> anyhow::Result<BrokerPinned> {
        let cpu = usize::from(cpu);
        anyhow::ensure!(
            cores >= 2 && cpu < cores,
            "--broker-cpu {cpu}: needs 2 or more CPUs and one of 0..{cores}"
        );
        anyhow::ensure!(
            gateway_cpu.map(usize::from) != Some(cpu),
            "--broker-cpu and --gateway-cpu name the same CPU"
        );
        let pid =
            procstat::find_by_name("beam.smp").context("--broker-cpu: no beam.smp process")?;
        let before = procstat::thread_cpu_lists(pid).context("--broker-cpu: the broker's CPUs")?;
        let me = std::process::id();
        let own = procstat::process_cpu_list(me).context("--broker-cpu: the load test's CPUs")?;
        let others: Vec<String> = (0..cores)
            .filter(|&c| c != cpu)
            .map(|c| c.to_string())
            .collect();
        // Held from here, so that a failure below still gives the CPUs back.
        let pinned = BrokerPinned(Some(Pinned {
            broker: before,
            own,
        }));
        procstat::pin_pid(me, &others.join(",")).context("--broker-cpu: the load test")?;
        procstat::pin_pid(pid, &cpu.to_string()).context("--broker-cpu: the broker")?;
        Ok(pinned)
    }
}

impl Drop for BrokerPinned {
    fn drop(&mut self) {
        let Some(p) = &self.0 else { return };
        for (tid, cpus) in &p.broker {
            let _ = procstat::pin_thread(*tid, cpus);
        }
        let _ = procstat::pin_pid(std::process::id(), &p.own);
    }
}

/// The broker under SCHED_RR for the run; its normal policy comes back on drop.
struct BrokerRealtime(Option<u32>);

impl BrokerRealtime {
    fn on() -> anyhow::Result<BrokerRealtime> {
        let pid =
            procstat::find_by_name("beam.smp").context("--realtime-broker: no beam.smp process")?;
        procstat::realtime_pid(pid, true).context("--realtime-broker")?;
        Ok(BrokerRealtime(Some(pid)))
    }
}

impl Drop for BrokerRealtime {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = procstat::realtime_pid(pid, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main_thread_cpus() -> String {
        procstat::process_cpu_list(std::process::id()).expect("the test's own CPUs")
    }

    /// Needs RabbitMQ running (the test script starts it) and root (taskset
    /// on the broker), as `--broker-cpu` itself does.
    #[test]
    fn broker_pin_gives_the_broker_and_the_load_test_their_cpus_back() {
        let (_, cores) = procstat::machine();
        if cores < 2 {
            assert!(
                BrokerPinned::on(0, cores, None).is_err(),
                "one CPU: refused"
            );
            return;
        }
        let broker = procstat::find_by_name("beam.smp").expect("RabbitMQ is running");
        let own_before = main_thread_cpus();
        let broker_before = procstat::thread_cpu_lists(broker).expect("the broker's CPUs");
        {
            let _pinned = BrokerPinned::on(0, cores, None).expect("pinned");
            assert!(
                !main_thread_cpus().split([',', '-']).any(|c| c == "0"),
                "the load test leaves CPU 0 to the broker"
            );
            let now = procstat::thread_cpu_lists(broker).expect("the broker's CPUs");
            assert!(now.iter().all(|(_, cpus)| cpus == "0"), "{now:?}");
        }
        assert_eq!(
            main_thread_cpus(),
            own_before,
            "the load test's CPUs come back"
        );
        let after = procstat::thread_cpu_lists(broker).expect("the broker's CPUs");
        for (tid, cpus) in &after {
            if let Some((_, was)) = broker_before.iter().find(|(t, _)| t == tid) {
                assert_eq!(cpus, was, "broker thread {tid}");
            }
        }
    }
}
