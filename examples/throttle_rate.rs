//! Benchmark: does the app/provider token bucket hold the configured rate?
//!
//! Starts the APNs simulator (accept-all), builds the real gateway and the
//! dispatcher under a policy whose `[throttle.apns]` rate is `--rate`, keeps
//! far more recipients waiting than the rate allows, and measures what the
//! simulator receives over `--seconds` after a warm-up. Prints the measured
//! rate and its deviation from the limit.
//!
//! ```sh
//! cargo run --release --example throttle_rate -- --rate 5000 --seconds 30
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use pushgate::dispatch::gateway::Gateway;
use pushgate::dispatch::{Dispatcher, JobRun};
use pushgate::ingest::retry::RetryPolicy;
use pushgate::job::Job;
use pushgate::policy::observer::NoopObserver;
use pushgate::policy::Policy;
use pushgate::sim::apns::{self, scripted_token, ApnsSimOptions};
use pushgate::throttle::clock::Shutdown;

struct Args {
    rate: u32,
    seconds: u64,
    warmup: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        rate: 5000,
        seconds: 30,
        warmup: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rate" => a.rate = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--warmup" => a.warmup = value.parse()?,
            other => anyhow::bail!("unknown flag {other}; use --rate N --seconds S --warmup S"),
        }
    }
    Ok(a)
}

fn config(sim: std::net::SocketAddr, rate: u32) -> anyhow::Result<pushgate::config::Config> {
    let dev = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/dev");
    let toml = format!(
        r#"
[apps.shop.apns]
environment = "sandbox"
endpoint = "https://{sim}"
topic = "com.example.shop"
team_id = "DEVTEAM001"
key_id = "DEVKEY0001"
key_file = "apns-dev.p8"
ca_file = "ca.pem"
connections = 4

[throttle.apns]
rate_per_second = {rate}
burst = {burst}

[throttle.device]
per_minute = 0
"#,
        burst = (rate / 10).max(1)
    );
    Ok(pushgate::config::load_str(
        &toml,
        &dev,
        Vec::<(String, String)>::new(),
    )?)
}

fn job(n: u64) -> anyhow::Result<Arc<Job>> {
    let recipients: Vec<serde_json::Value> = (0..1000u64)
        .map(|i| serde_json::json!({"platform": "apns", "token": scripted_token(&format!("{:x}", n * 1000 + i + 1))}))
        .collect();
    let job = serde_json::json!({"app": "shop", "recipients": recipients,
        "notification": {"title": "Hello", "body": "Benchmark body text"}});
    Ok(Arc::new(serde_json::from_value(job)?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let opts = ApnsSimOptions {
        accept_all: true,
        ..ApnsSimOptions::default()
    };
    let sim = apns::start("127.0.0.1:0".parse()?, opts).await?;
    let cfg = config(sim.addr, a.rate)?;
    let gateway = Arc::new(Gateway::new(&cfg)?);
    let policy = Arc::new(Policy::from_config(&cfg, Arc::new(NoopObserver)));
    let dispatcher = Dispatcher::new(gateway, Arc::new(RetryPolicy::new(&cfg.amqp.retry)))
        .with_policy(policy, Shutdown::never());
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.daemon.max_in_flight));
    // Eight jobs of 1,000 recipients at a time: always more waiting than the rate.
    for lane in 0..8u64 {
        let (d, p) = (dispatcher.clone(), Arc::clone(&permits));
        tokio::spawn(async move {
            for n in 0.. {
                let Ok(job) = job(lane * 1_000_000 + n) else {
                    return;
                };
                let run = JobRun {
                    job,
                    job_id: format!("bench-{lane}-{n}"),
                    attempt: 1,
                    first_received: std::time::SystemTime::now(),
                    expires: None,
                };
                d.dispatch(&run, &p).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    let start = (Instant::now(), sim.stats.requests());
    let mut per_second = Vec::new();
    let mut last = start.1;
    for _ in 0..a.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sim.stats.requests();
        per_second.push(now - last);
        last = now;
    }
    let secs = start.0.elapsed().as_secs_f64();
    let measured = (last - start.1) as f64 / secs;
    let deviation = 100.0 * (measured - f64::from(a.rate)) / f64::from(a.rate);
    let min = per_second.iter().min().copied().unwrap_or(0);
    let max = per_second.iter().max().copied().unwrap_or(0);
    println!(
        "limit {}/s, measured {measured:.0}/s over {secs:.1} s ({deviation:+.2}%); per second min {min}, max {max}",
        a.rate
    );
    if std::env::var_os("VERBOSE").is_some() {
        println!("per second: {per_second:?}");
    }
    std::process::exit(0)
}
