//! `pushgate demo`: simulators, the gateway and a sample campaign in one
//! process, with a progress bar and a summary of results by code.
//!
//! Uses RabbitMQ when one answers at `AMQP_URL` (the real daemon path:
//! topology, publisher confirms, retry queues, result messages), and an
//! in-process queue otherwise (the same dispatcher, retries after the same
//! delays). It says which.

mod broker;
mod campaign;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use crate::app::Status;
use crate::config::{self, Config};
use crate::dispatch::gateway::Gateway;
use crate::dispatch::{Dispatcher, JobRun};
use crate::ingest::retry::RetryPolicy;
use crate::job::{Job, Platform};
use crate::outcome::Code;
use crate::report::ResultEntry;
use crate::sim;
use crate::telemetry::admin::{AdminServer, AdminState};
use crate::telemetry::{JobCounts, PoolSource, Telemetry};

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recipients in the sample campaign (half APNs, half FCM).
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Recipients per job (1..=1000).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Do not use RabbitMQ even if one answers.
    #[arg(long)]
    pub in_process: bool,
    /// Keep the simulators, the gateway (still consuming the demo queue with
    /// RabbitMQ) and the admin server running after the campaign, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
    /// Where the admin server (/metrics, /readyz, /v1/events, /v1/campaigns/..)
    /// listens; "off" for none. Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: String,
}

pub async fn run(args: Args) -> ExitCode {
    match demo(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pushgate demo: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Final results seen so far, by code (`None` = delivered).
#[derive(Debug, Default)]
pub struct Tally {
    /// Final entries by code (`None` = delivered) and platform.
    pub by_code: BTreeMap<(Option<Code>, &'static str), (usize, Platform)>,
    pub finals: usize,
    pub retried: usize,
}

impl Tally {
    pub fn add(&mut self, entry: &ResultEntry) {
        if !entry.is_final() {
            return;
        }
        self.finals += 1;
        if entry.attempt > 1 {
            self.retried += 1;
        }
        let key = (entry.code, entry.platform.as_str());
        self.by_code.entry(key).or_insert((0, entry.platform)).0 += 1;
    }
}

async fn demo(args: Args) -> anyhow::Result<bool> {
    let apns = sim::apns::start(loopback(), sim::apns::ApnsSimOptions::default())
        .await
        .context("starting the APNs simulator")?;
    let fcm = sim::fcm::start(loopback(), sim::fcm::FcmSimOptions::default())
        .await
        .context("starting the FCM simulator")?;
    let webpush = sim::webpush::start(loopback(), sim::webpush::WebPushSimOptions::default())
        .await
        .context("starting the Web Push simulator")?;
    println!(
        "simulators: APNs on {}, FCM (+ OAuth) on {}, Web Push on {}",
        apns.addr,
        fcm.addr,
        webpush.addr()
    );

    let amqp_url = std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
    let tag = format!("{:08x}", fastrand::u32(..));
    let dir = std::env::temp_dir().join(format!("pushgate-demo-{tag}"));
    let path = campaign::write_config(&dir, apns.addr, fcm.addr, webpush.addr(), &amqp_url, &tag)?;
    let loaded = config::load(&path);
    let _ = std::fs::remove_dir_all(&dir);
    let config = loaded?;
    let telemetry = Arc::new(Telemetry::new(config.admin.max_campaigns));
    crate::app::init_app_metrics(&config.apps, &telemetry);
    let gateway = Arc::new(Gateway::new(&config)?.with_telemetry(Arc::clone(&telemetry)));
    let status = Arc::new(Status::new(Arc::clone(&telemetry)));
    let admin = start_admin(&args.admin, &config, &status, &gateway).await?;

    let jobs = campaign::jobs(args.count, args.batch, "spring-sale", &webpush.base_url());
    let total: usize = jobs.iter().map(|j| j.recipients.len()).sum();
    let use_broker = !args.in_process && broker::answers(&amqp_url).await;
    say_queue(use_broker, args.in_process, &amqp_url, &tag);
    println!("campaign: {total} recipients in {} jobs", jobs.len());

    let done = Arc::new(AtomicUsize::new(0));
    let bar = tokio::spawn(progress(Arc::clone(&done), total));
    let started = Instant::now();
    let mut on_broker = None;
    let tally = if use_broker {
        let b = on_broker
            .insert(broker::start(config, Arc::clone(&gateway), Arc::clone(&status), &jobs).await?);
        b.collect(total, &done).await
    } else {
        let feed = (Arc::clone(&done), Arc::clone(&telemetry));
        in_process(&config, Arc::clone(&gateway), jobs, feed).await
    };
    let elapsed = started.elapsed();
    bar.abort();
    eprintln!();
    print_summary(&tally, total, elapsed);

    if args.serve {
        println!(
            "serving: simulators stay up (APNs {}, FCM {}){}; Ctrl-C to stop",
            apns.addr,
            fcm.addr,
            if on_broker.is_some() {
                ", the gateway keeps consuming the demo queue"
            } else {
                ""
            }
        );
        crate::app::shutdown_signal().await;
    }
    if let Some(b) = on_broker {
        b.finish().await;
    }
    if let Some(server) = admin {
        server.stop().await;
    }
    gateway.shutdown().await;
    apns.shutdown().await;
    fcm.shutdown().await;
    webpush.shutdown().await;
    Ok(tally.finals == total)
}

/// Starts the admin server on `listen` unless it is "off"; a busy port is
/// a warning, not a failure (the demo runs without it).
async fn start_admin(
    listen: &str,
    config: &Config,
    status: &Arc<Status>,
    gateway: &Arc<Gateway>,
) -> anyhow::Result<Option<AdminServer>> {
    if listen == "off" {
        return Ok(None);
    }
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--admin {listen:?}: not host:port"))?;
    let pools: Arc<dyn PoolSource> = gateway.clone();
    let state = AdminState::from_config(config, Arc::clone(status), Some(pools));
    match AdminServer::start(addr, state).await {
        Ok(server) => {
            println!(
                "admin: http://{} (/metrics, /readyz, POST /v1/events, /v1/campaigns/spring-sale)",
                server.addr
            );
            Ok(Some(server))
        }
        Err(e) => {
            println!("admin: not started, cannot listen on {addr}: {e} (try --admin 127.0.0.1:0)");
            Ok(None)
        }
    }
}

fn say_queue(use_broker: bool, in_process: bool, amqp_url: &str, tag: &str) {
    if use_broker {
        println!(
            "queue: RabbitMQ at {} (demo queues pushgate.demo-{tag}.*, deleted afterwards)",
            redact(amqp_url)
        );
    } else if in_process {
        println!("queue: in-process (--in-process)");
    } else {
        println!(
            "queue: in-process (no RabbitMQ answers at {}; start one to see the real path)",
            redact(amqp_url)
        );
    }
}

fn loopback() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Delivers every job through the dispatcher in this process, re-running
/// retryable recipients after their delay, as the delay queues would.
async fn in_process(
    config: &Config,
    gateway: Arc<Gateway>,
    jobs: Vec<Job>,
    feed: (Arc<AtomicUsize>, Arc<Telemetry>),
) -> Tally {
    let (done, telemetry) = feed;
    let retry = Arc::new(RetryPolicy::new(&config.amqp.retry));
    let dispatcher = Dispatcher::new(gateway, retry);
    let permits = Arc::new(tokio::sync::Semaphore::new(config.daemon.max_in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for job in jobs {
        let (d, p) = (dispatcher.clone(), Arc::clone(&permits));
        let feed = (Arc::clone(&done), Arc::clone(&telemetry));
        tasks.spawn(async move { one_job(d, p, job, feed).await });
    }
    let mut tally = Tally::default();
    while let Some(res) = tasks.join_next().await {
        if let Ok(entries) = res {
            entries.iter().for_each(|e| tally.add(e));
        }
    }
    tally
}

async fn one_job(
    dispatcher: Dispatcher<Gateway>,
    permits: Arc<tokio::sync::Semaphore>,
    job: Job,
    feed: (Arc<AtomicUsize>, Arc<Telemetry>),
) -> Vec<ResultEntry> {
    let (done, telemetry) = feed;
    let now = SystemTime::now();
    let mut run = JobRun {
        job_id: job.effective_id().to_owned(),
        expires: job.expiry(now),
        job: Arc::new(job),
        attempt: 1,
        first_received: now,
    };
    let mut finals = Vec::new();
    loop {
        let settled = dispatcher.dispatch(&run, &permits).await;
        let counts = JobCounts::from_entries(&settled.entries);
        telemetry.record_results(&run.job.app, run.job.campaign.as_deref(), &counts);
        let newly: Vec<ResultEntry> = settled
            .entries
            .into_iter()
            .filter(|e| e.is_final())
            .collect();
        done.fetch_add(newly.len(), Ordering::Relaxed);
        finals.extend(newly);
        // One delay for all of this run's retries (and recipients the
        // policy deferred): the longest chosen.
        let mut again = settled.retries;
        for (idx, list) in settled.deferred {
            again.entry(idx).or_default().extend(list);
        }
        let Some(delay) = again
            .keys()
            .map(|&i| dispatcher.retry_policy().delay(i))
            .max()
        else {
            return finals;
        };
        let mut again: Vec<usize> = again.into_values().flatten().collect();
        again.sort_unstable();
        let mut sub = (*run.job).clone();
        sub.recipients = again
            .iter()
            .filter_map(|&i| run.job.recipients.get(i).cloned())
            .collect();
        tokio::time::sleep(delay).await;
        run = JobRun {
            job: Arc::new(sub),
            attempt: run.attempt + 1,
            ..run
        };
    }
}

async fn progress(done: Arc<AtomicUsize>, total: usize) {
    let started = Instant::now();
    loop {
        let n = done.load(Ordering::Relaxed).min(total);
        let width = 40;
        let filled = (n * width).checked_div(total).unwrap_or(width);
        let rate = n as f64 / started.elapsed().as_secs_f64().max(0.001);
        eprint!(
            "\r[{}{}] {n}/{total} results  {rate:.0}/s ",
            "#".repeat(filled),
            ".".repeat(width - filled)
        );
        let _ = std::io::stderr().flush();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_summary(tally: &Tally, total: usize, elapsed: Duration) {
    println!(
        "\n{:<24} {:<8} {:>8} {:>7}  label",
        "code", "platform", "count", "share"
    );
    for ((code, _), (count, platform)) in &tally.by_code {
        let (name, label) = match code {
            None => ("delivered", ""),
            Some(c) => (c.as_str(), c.label(*platform)),
        };
        let share = 100.0 * *count as f64 / total.max(1) as f64;
        let platform = platform.as_str();
        println!("{name:<24} {platform:<8} {count:>8} {share:>6.1}%  {label}");
    }
    let secs = elapsed.as_secs_f64().max(0.001);
    println!(
        "\n{} of {total} recipients have a final result ({} after a retry) in {:.2} s: {:.0} notifications/s",
        tally.finals,
        tally.retried,
        secs,
        tally.finals as f64 / secs
    );
}
