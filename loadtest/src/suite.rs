//! `loadtest suite`: the scenarios of the performance targets in a row,
//! each a `loadtest run` with its baselines, then a summary of targets met.

use std::fmt::Write;
use std::time::Duration;

use crate::cli::{Baseline, Common, Mix, Results, RunArgs, SuiteArgs};
use crate::report::RunReport;
use crate::scenario;

/// The scenarios run when `--only` is not given (soak and backlog are long: ask for them).
const DEFAULT: [&str; 5] = ["single", "fanout", "latency", "mix", "rss"];

/// A run of `jobs` jobs of `recipients`; fan-out jobs get a small prefetch
/// (16 jobs = 8,000 recipients queued behind max_in_flight), single-recipient
/// jobs the command line's.
fn base(common: &Common, jobs: f64, recipients: usize) -> RunArgs {
    let mut common = common.clone();
    if recipients > 1 {
        common.prefetch = common.prefetch.min(16);
    }
    RunArgs {
        common,
        jobs: jobs.round().max(1.0) as u64,
        recipients,
        rate: 0.0,
        duration: None,
        latency_warmup: Duration::ZERO,
        preload: true,
        transient: false,
        latency: "0ms".into(),
        mix: Mix::Ok,
        invalid: 0.0,
        results: Results::All,
        disconnect_after: None,
        baselines: Vec::new(),
        h2load_requests: 300_000,
        peer_requests: 100_000,
        timeout: Duration::from_secs(120),
        profile: None,
        title: None,
    }
}

/// The runs of one scenario name (empty for an unknown name).
fn scenario(name: &str, a: &SuiteArgs, fanout_rate: Option<f64>) -> Vec<RunArgs> {
    let (c, k, n) = (&a.common, a.scale, usize::from(a.repeat.max(1)));
    match name {
        "single" => single(c, k, n),
        "fanout" => fanout(c, k, n),
        "latency" => latency(c, k),
        "mix" => mix(c, k),
        "rss" | "soak" | "backlog" => memory(name, c, k, fanout_rate),
        _ => Vec::new(),
    }
}

fn titled(mut r: RunArgs, title: &str) -> RunArgs {
    r.title = Some(title.to_owned());
    r
}

/// Single-recipient jobs run the gateway on one runtime thread unless
/// `--gateway-threads` says otherwise: on 2 cores shared with the broker
/// that was 45% faster (docs/benchmarks.md).
fn one_thread(c: &Common) -> Common {
    let mut c = c.clone();
    c.gateway_threads = c.gateway_threads.or(Some(1));
    c
}

/// The simulator on one runtime thread unless `--sim-threads` says
/// otherwise: at zero latency it answers a burst of requests in one write,
/// the cheaper and more faithful stand-in (docs/benchmarks.md, round 6).
fn one_thread_sim(c: &Common) -> Common {
    let mut c = c.clone();
    c.sim_threads = c.sim_threads.or(Some(1));
    c
}

/// Single-recipient jobs at full speed: gateway and simulator each on one
/// runtime thread, one APNs connection, which carries a whole burst of
/// jobs in one write, and a prefetch of at least 4,000 for both the
/// gateway and the bare consumer. A job holds its slot in the window until
/// its result message is confirmed and its ack batch is full, far longer
/// than the bare consumer needs; at 256 the window, not the CPU, set the
/// gateway's pace (docs/benchmarks.md, round 7).
fn single_recipient(c: &Common) -> Common {
    let mut c = one_thread_sim(&one_thread(c));
    c.connections = 1;
    c.prefetch = c.prefetch.max(SINGLE_PREFETCH);
    c
}

/// The single-recipient scenarios' prefetch, at least.
const SINGLE_PREFETCH: u16 = 4_000;

/// `title`, numbered when the run is one of several.
fn nth(title: &str, i: usize, n: usize) -> String {
    if n > 1 {
        format!("{title} (run {} of {n})", i + 1)
    } else {
        title.to_owned()
    }
}

fn single(c: &Common, k: f64, n: usize) -> Vec<RunArgs> {
    // 150,000 jobs: at 60,000/s, still the 2 s a rate needs.
    let mut all = base(&single_recipient(c), 150_000.0 * k, 1);
    all.baselines = vec![Baseline::Bare];
    let mut und = all.clone();
    und.results = Results::Undelivered;
    let mut runs = Vec::new();
    for i in 0..n {
        let mut shared = all.clone();
        if i == 0 {
            // On shared cores, also the bare consumer beside h2load at the
            // gateway's rate: how much of the gap the HTTP/2 side's CPU explains.
            shared.baselines.push(Baseline::BareH2load);
        }
        let title = nth(
            "Single-recipient jobs end to end vs the bare lapin consumer",
            i,
            n,
        );
        runs.push(titled(shared, &title));
    }
    runs.push(titled(
        und,
        "Single-recipient jobs, results for undelivered recipients only, vs the bare consumer",
    ));
    // Production runs the broker on hosts of its own; here it shares two
    // cores with the gateway and the simulator unless one is its own.
    if c.broker_cpu.is_none() && crate::procstat::machine().1 >= 2 {
        let mut own = all;
        own.common.broker_cpu = Some(0);
        runs.push(titled(
            own,
            "Single-recipient jobs vs the bare consumer, the broker on a core of its own",
        ));
    }
    runs
}

fn fanout(c: &Common, k: f64, n: usize) -> Vec<RunArgs> {
    // 1,000,000 notifications: at 400,000/s, still the 2 s a rate needs
    // (at 500,000, a quiet hour's 291,000/s measured 1.7 s: round 21).
    let mut r = base(&one_thread_sim(c), 2000.0 * k, 500);
    r.h2load_requests = (600_000.0 * k).round() as u64;
    r.peer_requests = (100_000.0 * k).round() as u64;
    (0..n)
        .map(|i| {
            let mut run = r.clone();
            run.baselines = if i == 0 {
                vec![Baseline::H2load, Baseline::NodeApn, Baseline::Aioapns]
            } else {
                vec![Baseline::H2load]
            };
            let title = nth(
                "Fan-out jobs of 500 recipients vs h2load and the peers (zero latency)",
                i,
                n,
            );
            titled(run, &title)
        })
        .collect()
}

fn latency(c: &Common, k: f64) -> Vec<RunArgs> {
    // The simulator on one thread here too: a fan-out job is a burst of 500
    // requests, and the multi-threaded simulator took 15.5 µs of CPU a
    // request against 10.1, on the cores the gateway needs (round 19).
    let mut common = one_thread_sim(c);
    common.streams = 1000;
    let mut t = base(&common, 400.0 * k, 500);
    // 50 ms per request: twice the jobs queued keep 4,000 streams busy.
    t.common.prefetch = 32;
    t.latency = "50ms".into();
    t.baselines = vec![Baseline::H2load];
    t.h2load_requests = (400_000.0 * k).round() as u64;
    let mut l = base(&common, 0.0, 500);
    l.common.prefetch = 32;
    l.latency = "50ms".into();
    l.preload = false;
    // Half the throughput the run before measured (set in `run`).
    l.rate = -0.5;
    // The broker's own round trip for the same jobs at the same rate: one
    // 50 ms wait and one result message of 500 entries per job.
    l.baselines = vec![Baseline::Echo];
    l.duration = Some(Duration::from_secs_f64((20.0 * k).max(5.0)));
    let mut one = base(&one_thread(&common), 0.0, 1);
    one.latency = "50ms".into();
    one.preload = false;
    one.rate = 2_000.0;
    one.duration = l.duration;
    one.baselines = vec![Baseline::Echo];
    // Steady state: a fresh connection carries one stream until a request
    // succeeds (APNs' rule), so the first jobs wait one round trip.
    l.latency_warmup = Duration::from_secs(1);
    one.latency_warmup = Duration::from_secs(1);
    // The broker under SCHED_RR too (with --realtime), for the gateway's run
    // and the echo alike: at normal priority beside four real-time
    // processes it waited for a core 0.72-0.85 of the time, and its stalls
    // of tens of milliseconds decided the p99 of either side; production
    // gives it hosts of its own (docs/benchmarks.md, round 20).
    l.common.realtime_broker = true;
    one.common.realtime_broker = true;
    // The same run with transient jobs, at the rate the run before reached:
    // RabbitMQ writes each persistent 50 KB job to its message store and at
    // times holds the queue's deliveries for 10-70 ms, which lands in
    // either side's p99 by chance; without the disk, what is left is the
    // gateway's own overhead (docs/benchmarks.md, round 21).
    let mut lt = l.clone();
    lt.transient = true;
    lt.rate = -1.0;
    vec![
        titled(t, "Fan-out 500 with the simulator at 50 ms: throughput"),
        titled(
            l,
            "Fan-out 500 with the simulator at 50 ms: latency at half the measured throughput (persistent jobs)",
        ),
        titled(
            lt,
            "Fan-out 500 with the simulator at 50 ms: latency at the same rate, transient jobs (the broker's disk out of the path)",
        ),
        titled(
            one,
            "Single-recipient jobs with the simulator at 50 ms: latency at 2,000 jobs/s",
        ),
    ]
}

fn mix(c: &Common, k: f64) -> Vec<RunArgs> {
    let mut m = base(c, 20_000.0 * k, 10);
    m.common.prefetch = 64;
    m.preload = false;
    m.rate = 2_000.0;
    m.mix = Mix::Errors;
    m.invalid = 0.02;
    m.disconnect_after = Some(Duration::from_secs_f64((4.0 * k).max(2.0)));
    vec![titled(
        m,
        "Count everything: error mix, 2% invalid jobs, a forced broker disconnect",
    )]
}

/// `rss` (a minute live at 80% of full speed), `soak` (ten minutes) and
/// `backlog` (1,000,000 queued jobs drained).
fn memory(name: &str, c: &Common, k: f64, fanout_rate: Option<f64>) -> Vec<RunArgs> {
    if name == "backlog" {
        let mut r = base(c, 1_000_000.0 * k, 1);
        r.results = Results::Undelivered;
        r.timeout = Duration::from_secs(600);
        return vec![titled(
            r,
            "A backlog of 1,000,000 jobs: gateway memory while it drains",
        )];
    }
    let mut r = base(c, 0.0, 500);
    r.preload = false;
    r.rate = (fanout_rate.unwrap_or(40_000.0) * 0.8 / 500.0).max(1.0);
    if name == "soak" {
        r.duration = Some(Duration::from_secs(600));
        return vec![titled(
            r,
            "10-minute soak at 80% of full speed (fan-out 500)",
        )];
    }
    r.duration = Some(Duration::from_secs_f64((60.0 * k).max(10.0)));
    vec![titled(r, "Memory at 80% of full speed (fan-out 500, live)")]
}

/// Runs the chosen scenarios; returns the whole markdown report.
pub async fn run(a: &SuiteArgs) -> anyhow::Result<String> {
    let names: Vec<String> = if a.only.is_empty() {
        DEFAULT.iter().map(|s| s.to_string()).collect()
    } else {
        a.only.clone()
    };
    let mut reports: Vec<(String, RunReport)> = Vec::new();
    let mut fanout_rate = None;
    for name in &names {
        let runs = scenario(name, a, fanout_rate);
        if runs.is_empty() {
            anyhow::bail!(
                "unknown scenario {name:?} (single, fanout, latency, mix, rss, soak, backlog)"
            );
        }
        let mut previous: Option<f64> = None;
        for mut r in runs {
            if r.rate < 0.0 {
                // A share of the previous run's notifications/s, in jobs/s.
                let rate = previous.unwrap_or(40_000.0) * -r.rate / r.recipients as f64;
                r.rate = rate.max(1.0).round();
            }
            eprintln!("loadtest suite: {}", r.title.as_deref().unwrap_or(name));
            let cmd = command_line(&r);
            let report = scenario::run(&r, cmd).await?;
            previous = report.rate();
            if name == "fanout" {
                fanout_rate = report.rate();
            }
            reports.push((name.clone(), report));
        }
    }
    let mut out = String::from("# pushgate load test suite\n\n");
    out.push_str(&summary(&mut reports));
    for (_, r) in &mut reports {
        out.push_str(&r.render());
    }
    Ok(out)
}

/// The `loadtest run` command line equivalent to `r`.
fn command_line(r: &RunArgs) -> String {
    let mut s = match r.duration {
        Some(_) => format!("loadtest run --recipients {}", r.recipients),
        None => format!(
            "loadtest run --jobs {} --recipients {}",
            r.jobs, r.recipients
        ),
    };
    let flags = [
        (r.common.realtime, " --realtime".to_owned()),
        (
            r.common.realtime && r.common.realtime_broker,
            " --realtime-broker".to_owned(),
        ),
        (r.preload, " --preload".to_owned()),
        (r.transient, " --transient".to_owned()),
        (r.rate > 0.0, format!(" --rate {:.0}", r.rate)),
        (
            r.duration.is_some(),
            format!(" --duration {}s", r.duration.unwrap_or_default().as_secs()),
        ),
        (r.latency != "0ms", format!(" --latency {}", r.latency)),
        (r.mix == Mix::Errors, " --mix errors".to_owned()),
        (r.invalid > 0.0, format!(" --invalid {}", r.invalid)),
        (
            r.results == Results::Undelivered,
            " --results undelivered".to_owned(),
        ),
        (
            r.disconnect_after.is_some(),
            format!(
                " --disconnect-after {}ms",
                r.disconnect_after.unwrap_or_default().as_millis()
            ),
        ),
    ];
    for (on, flag) in flags {
        if on {
            s.push_str(&flag);
        }
    }
    s.push_str(&baseline_flags(r));
    let c = &r.common;
    let _ = write!(
        s,
        " --connections {} --streams {} --prefetch {} --max-in-flight {}",
        c.connections, c.streams, c.prefetch, c.max_in_flight
    );
    let threads = [
        (" --gateway-threads", c.gateway_threads),
        (" --sim-threads", c.sim_threads),
        (" --broker-cpu", c.broker_cpu),
    ];
    for (flag, n) in threads {
        if let Some(n) = n {
            let _ = write!(s, "{flag} {n}");
        }
    }
    s
}

fn baseline_flags(r: &RunArgs) -> String {
    let names: Vec<&str> = r
        .baselines
        .iter()
        .map(|b| match b {
            Baseline::Bare => "bare",
            Baseline::BareH2load => "bare-h2load",
            Baseline::H2load => "h2load",
            Baseline::NodeApn => "node-apn",
            Baseline::Aioapns => "aioapns",
            Baseline::Echo => "echo",
            Baseline::None => "none",
        })
        .collect();
    let list = if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(",")
    };
    let mut s = format!(" --baselines {list}");
    if r.baselines.contains(&Baseline::H2load) {
        let _ = write!(s, " --h2load-requests {}", r.h2load_requests);
    }
    if r.baselines.contains(&Baseline::NodeApn) || r.baselines.contains(&Baseline::Aioapns) {
        let _ = write!(s, " --peer-requests {}", r.peer_requests);
    }
    s
}

fn summary(reports: &mut [(String, RunReport)]) -> String {
    let mut s = String::from("| target | measured | met |\n|---|---|---|\n");
    // The repeated runs of a ratio target are judged together, at the
    // place of the first.
    let mut judged: Vec<&str> = Vec::new();
    for (name, r) in reports.iter() {
        let Some(rate) = r.rate() else { continue };
        if !crate::targets::repeated(name, r) {
            crate::targets::lines(name, r, rate, &mut s);
            continue;
        }
        if judged.contains(&name.as_str()) {
            continue;
        }
        judged.push(name);
        let group: Vec<&RunReport> = reports
            .iter()
            .filter(|(n, x)| n == name && crate::targets::repeated(n, x))
            .map(|(_, x)| x)
            .collect();
        crate::targets::median_lines(name, &group, &mut s);
    }
    let _ = writeln!(
        s,
        "\nRates are notifications per second; ratios are taken in the same run, \
         and a target run several times is judged on the median of its runs' ratios.\n"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Cmd};
    use clap::Parser;

    fn suite_args(extra: &[&str]) -> SuiteArgs {
        let mut argv = vec!["loadtest", "suite"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("valid arguments").cmd {
            Cmd::Suite(a) => a,
            other => panic!("not a suite: {other:?}"),
        }
    }

    #[test]
    fn ratio_targets_run_repeat_times_with_the_extra_baselines_once() {
        let a = suite_args(&["--repeat", "3"]);
        let single = scenario("single", &a, None);
        let shared: Vec<&RunArgs> = single
            .iter()
            .filter(|r| r.results == Results::All && r.common.broker_cpu.is_none())
            .collect();
        assert_eq!(shared.len(), 3);
        assert_eq!(
            shared[0].baselines,
            [Baseline::Bare, Baseline::BareH2load],
            "the diagnostic beside the first run only"
        );
        assert_eq!(shared[2].baselines, [Baseline::Bare]);
        assert!(shared[1]
            .title
            .as_deref()
            .unwrap()
            .ends_with("(run 2 of 3)"));
        assert_eq!(
            single
                .iter()
                .filter(|r| r.results == Results::Undelivered)
                .count(),
            1,
            "the other single-recipient runs once"
        );
        let fan = scenario("fanout", &a, None);
        assert_eq!(fan.len(), 3);
        assert_eq!(
            fan[0].baselines,
            [Baseline::H2load, Baseline::NodeApn, Baseline::Aioapns]
        );
        assert!(fan[1..].iter().all(|r| r.baselines == [Baseline::H2load]));
    }

    #[test]
    fn one_run_keeps_the_plain_titles() {
        let a = suite_args(&["--repeat", "1"]);
        let fan = scenario("fanout", &a, None);
        assert_eq!(fan.len(), 1);
        assert_eq!(
            fan[0].title.as_deref(),
            Some("Fan-out jobs of 500 recipients vs h2load and the peers (zero latency)")
        );
        assert!(Cli::try_parse_from(["loadtest", "suite", "--repeat", "0"]).is_err());
    }

    #[test]
    fn the_fan_out_latency_run_is_repeated_with_transient_jobs_at_the_same_rate() {
        let a = suite_args(&[]);
        let runs = scenario("latency", &a, None);
        let fan: Vec<&RunArgs> = runs
            .iter()
            .filter(|r| r.recipients == 500 && !r.preload)
            .collect();
        assert_eq!(fan.len(), 2, "persistent, then transient");
        assert!(!fan[0].transient && fan[1].transient);
        assert_eq!(fan[1].rate, -1.0, "the rate the persistent run reached");
        assert_eq!(fan[0].baselines, fan[1].baselines);
        assert!(command_line(fan[1]).contains(" --transient"));
        assert!(!command_line(fan[0]).contains(" --transient"));
        assert!(runs
            .iter()
            .filter(|r| r.recipients == 1)
            .all(|r| !r.transient));
    }
}
