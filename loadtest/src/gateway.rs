//! The gateway phase of a run: publish (preloaded or live), run `pushgate
//! run` as a subprocess, read every result from the tap, sample its CPU and
//! memory, optionally force its broker connection closed, stop it, and
//! count what is left on the queues.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use lapin::{Connection, Consumer};

use crate::broker::{self, Names};
use crate::cli::{Results, RunArgs};
use crate::jobs::Plan;
use crate::procs::{self, GatewaySetup, Proc};
use crate::procstat::{self, Sampler, Usage};
use crate::progress::Progress;
use crate::tracker::{PublishTimes, Tracker};

/// Everything the gateway phase measured.
#[derive(Debug)]
pub struct GatewayRun {
    pub tracker: Tracker,
    pub published: u64,
    /// Notifications settled per second over the measurement window.
    pub rate: f64,
    pub window_secs: f64,
    /// Jobs still ready in the input queue after the gateway stopped.
    pub jobs_left: u32,
    /// Messages in the dead queue (bad jobs, exhausted retries).
    pub dead: u32,
    pub gateway: Option<Usage>,
    pub sim: Option<Usage>,
    pub broker: Option<Usage>,
    pub loadtest: Option<Usage>,
    /// Average gateway RSS in the first and last fifth of the run.
    pub rss_trend: Option<(u64, u64)>,
    pub exit: String,
    /// Broker connections force-closed by the load test.
    pub disconnects: usize,
    /// Why the forced disconnect did not happen, when it did not.
    pub disconnect_error: Option<String>,
    /// Gateway log: lines, and "broker session lost" lines.
    pub log_lines: usize,
    pub sessions_lost: usize,
    /// Jobs acked and `basic.ack` frames, from the gateway's "stopped" line.
    pub acks: Option<(u64, u64)>,
    pub timed_out: bool,
}

/// The inputs of the phase.
pub struct Phase<'a> {
    pub args: &'a RunArgs,
    pub names: &'a Names,
    pub plan: &'a Plan,
    pub sim: SocketAddr,
    pub sim_pid: Option<u32>,
    pub conn: &'a Connection,
    pub bin: &'a Path,
    pub work_dir: &'a Path,
}

struct Samplers {
    gateway: Sampler,
    sim: Option<Sampler>,
    broker: Option<Sampler>,
    me: Option<Sampler>,
}

pub async fn run(p: &Phase<'_>) -> anyhow::Result<GatewayRun> {
    let ch = p.conn.create_channel().await?;
    broker::declare_input(&ch, &p.names.input).await?;
    let tap = broker::tap(&ch, p.names).await?;
    let times = PublishTimes::new(p.plan.jobs, Instant::now());
    let published = Arc::new(AtomicU64::new(0));
    if p.args.preload {
        preload(p, &times, &published).await?;
    }
    let gw = start(p)?;
    let samplers = Samplers::start(gw.pid, p.sim_pid);
    let perf = match &p.args.profile {
        Some(out) => Some(procs::start_perf(gw.pid, out)?),
        None => None,
    };
    let publisher = if p.args.preload {
        None
    } else {
        Some(spawn_publisher(p, &times, &published).await?)
    };
    let disconnect = p.args.disconnect_after.map(|after| {
        let name = p.names.connection.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            broker::force_close(&name).await
        })
    });
    let mut watch = Watch::new(p, &ch, &times, &published, gw);
    let collected = watch.collect(tap, publisher, &samplers).await;
    if let Some(perf) = perf {
        procs::stop_perf(perf).await;
    }
    let gw = watch.gateway.take().context("gateway process")?;
    let log = gw.log.clone();
    let exit = match gw.stop(Duration::from_secs(30)).await {
        Some(s) => s.to_string(),
        None => "killed after 30 s".into(),
    };
    collected?;
    let (disconnects, disconnect_error) = disconnect_outcome(disconnect).await;
    let (jobs_left, _) = broker::counts(&ch, &p.names.input).await?;
    let (dead, _) = broker::counts(&ch, &p.names.dead).await.unwrap_or((0, 0));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut run = finish(watch, samplers, exit, disconnects, jobs_left, dead, &text);
    run.disconnect_error = disconnect_error;
    Ok(run)
}

/// Writes the gateway's config and starts `pushgate run` on it.
fn start(p: &Phase<'_>) -> anyhow::Result<Proc> {
    let setup = GatewaySetup {
        common: &p.args.common,
        names: p.names,
        sim: p.sim,
        results: p.args.results,
    };
    let config = procs::gateway_config(&setup)?;
    let c = &p.args.common;
    procs::start_gateway(
        p.bin,
        &config,
        p.work_dir,
        &p.names.tag,
        c.gateway_threads,
        c.gateway_cpu,
    )
}

impl Samplers {
    fn start(gateway: u32, sim: Option<u32>) -> Samplers {
        let every = Duration::from_millis(250);
        Samplers {
            gateway: Sampler::start(gateway, every),
            sim: sim.map(|pid| Sampler::start(pid, every)),
            broker: procstat::find_by_name("beam.smp").map(|pid| Sampler::start(pid, every)),
            me: Some(Sampler::start(std::process::id(), every)),
        }
    }
}

/// Connections closed by the forced disconnect, or why it failed.
async fn disconnect_outcome(
    task: Option<tokio::task::JoinHandle<anyhow::Result<usize>>>,
) -> (usize, Option<String>) {
    match task {
        Some(t) => match t.await {
            Ok(Ok(n)) => (n, None),
            Ok(Err(e)) => (0, Some(format!("{e:#}"))),
            Err(e) => (0, Some(e.to_string())),
        },
        None => (0, None),
    }
}

fn finish(
    w: Watch<'_>,
    s: Samplers,
    exit: String,
    disconnects: usize,
    jobs_left: u32,
    dead: u32,
    log: &str,
) -> GatewayRun {
    let (from, to) = w.window.unwrap_or((w.started, Instant::now()));
    let secs = to.duration_since(from).as_secs_f64();
    let use_of = |x: &Option<Sampler>| {
        x.as_ref()
            .and_then(|x| procstat::usage(&x.samples(), from, to))
    };
    let gw_samples = s.gateway.samples();
    GatewayRun {
        rate: w.settled_in_window as f64 / secs.max(1e-9),
        window_secs: secs,
        published: w.published.load(Ordering::Relaxed),
        jobs_left,
        dead,
        gateway: procstat::usage(&gw_samples, from, to),
        sim: use_of(&s.sim),
        broker: use_of(&s.broker),
        loadtest: use_of(&s.me),
        rss_trend: procstat::rss_trend(&gw_samples),
        exit,
        disconnects,
        disconnect_error: None,
        log_lines: log.lines().count(),
        sessions_lost: log.matches("broker session lost").count(),
        acks: acks_of(log),
        timed_out: w.timed_out,
        tracker: w.tracker,
    }
}

/// Jobs acked and ack frames from the gateway's JSON "stopped" line.
fn acks_of(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().rev().find(|l| l.contains("\"stopped\""))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let field = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    Some((field("jobs_acked")?, field("ack_frames")?))
}

async fn preload(p: &Phase<'_>, times: &PublishTimes, done: &AtomicU64) -> anyhow::Result<()> {
    let ch = p.conn.create_channel().await?;
    let total = p.plan.jobs;
    let mut bar = Progress::new("preload", total);
    let publish = broker::publish(&ch, &p.names.input, p.plan, 0.0, times, done);
    tokio::pin!(publish);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            r = &mut publish => { r?; break; }
            _ = tick.tick() => bar.tick(done.load(Ordering::Relaxed), "jobs published"),
        }
    }
    bar.finish();
    let _ = ch.close(200, "preloaded".into()).await;
    Ok(())
}

async fn spawn_publisher(
    p: &Phase<'_>,
    times: &Arc<PublishTimes>,
    done: &Arc<AtomicU64>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let ch = p.conn.create_channel().await?;
    let (queue, plan, rate) = (p.names.input.clone(), p.plan.clone(), p.args.rate);
    let (times, done) = (Arc::clone(times), Arc::clone(done));
    Ok(tokio::spawn(async move {
        broker::publish(&ch, &queue, &plan, rate, &times, &done).await
    }))
}

/// The collect loop's state.
struct Watch<'a> {
    p: &'a Phase<'a>,
    ch: &'a lapin::Channel,
    times: &'a Arc<PublishTimes>,
    published: &'a Arc<AtomicU64>,
    gateway: Option<Proc>,
    tracker: Tracker,
    started: Instant,
    /// First and last settled notification (results), or first consumption
    /// and drain (undelivered-only results).
    window: Option<(Instant, Instant)>,
    settled_in_window: u64,
    timed_out: bool,
}

impl<'a> Watch<'a> {
    fn new(
        p: &'a Phase<'a>,
        ch: &'a lapin::Channel,
        times: &'a Arc<PublishTimes>,
        published: &'a Arc<AtomicU64>,
        gateway: Proc,
    ) -> Watch<'a> {
        Watch {
            tracker: Tracker::new(&p.names.tag, p.plan.jobs, p.plan.recipients)
                .with_latency_warmup(p.plan.latency_warmup),
            p,
            ch,
            times,
            published,
            gateway: Some(gateway),
            started: Instant::now(),
            window: None,
            settled_in_window: 0,
            timed_out: false,
        }
    }

    /// Reads results until every recipient is settled (or the queue is
    /// drained, for undelivered-only results), the run times out, or the
    /// gateway dies.
    async fn collect(
        &mut self,
        mut tap: Consumer,
        publisher: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
        s: &Samplers,
    ) -> anyhow::Result<()> {
        let expected = self.p.plan.expected_results();
        let undelivered = self.p.args.results == Results::Undelivered;
        let mut publisher = publisher;
        let mut bar = Progress::new("gateway", expected);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut progress_at = (Instant::now(), 0u64, u32::MAX);
        let mut drain = Drain::default();
        let failures = expected
            - self
                .p
                .plan
                .expected()
                .0
                .get("delivered")
                .copied()
                .unwrap_or(0);
        loop {
            tokio::select! {
                d = tap.next() => self.on_delivery(d)?,
                _ = tick.tick() => {
                    self.check_publisher(&mut publisher).await?;
                    self.check_alive()?;
                    let ready = if undelivered { self.ready().await? } else { 0 };
                    drain.observe(ready, self.p.plan.jobs, self.p.args.preload);
                    let done = self.tracker.finals;
                    let rss = s.gateway.rss_now() / (1 << 20);
                    bar.tick(done, &format!("results, gateway RSS {rss} MB"));
                    if self.finished(undelivered, &drain, publisher.is_none(), (expected, failures)) {
                        if !self.p.args.preload {
                            drain.drained = Some(Instant::now());
                        }
                        break;
                    }
                    if (done, ready) != (progress_at.1, progress_at.2) {
                        progress_at = (Instant::now(), done, ready);
                    } else if progress_at.0.elapsed() > self.p.args.timeout {
                        self.timed_out = true;
                        break;
                    }
                }
            }
        }
        bar.finish();
        self.close_window(undelivered, &drain);
        if self.p.args.disconnect_after.is_some() {
            self.linger(&mut tap, Duration::from_secs(2)).await?;
        }
        Ok(())
    }

    /// `expected`: all final results, and the undelivered ones among them.
    fn finished(
        &self,
        undelivered: bool,
        drain: &Drain,
        published: bool,
        (expected, failures): (u64, u64),
    ) -> bool {
        if !published {
            return false;
        }
        if undelivered {
            drain.drained.is_some() && self.tracker.finals >= failures
        } else {
            self.tracker.finals >= expected
        }
    }

    fn close_window(&mut self, undelivered: bool, drain: &Drain) {
        let t = &self.tracker;
        self.window = match (undelivered, drain.began, drain.drained, t.first, t.last) {
            (true, Some(a), Some(b), _, _) => Some((a, b)),
            (false, _, _, Some(a), Some(b)) => Some((a, b)),
            _ => None,
        };
        self.settled_in_window = if undelivered {
            self.p.plan.expected_results()
        } else {
            t.finals
        };
    }

    fn on_delivery(
        &mut self,
        d: Option<Result<lapin::message::Delivery, lapin::Error>>,
    ) -> anyhow::Result<()> {
        let d = d.context("the result tap closed")??;
        let now = Instant::now();
        if d.exchange.as_str() == self.p.names.retry_exchange {
            self.tracker.retry_message(&d.data);
        } else if d.routing_key.as_str().ends_with(".token.invalid") {
            self.tracker.feedback_message(&d.data);
        } else {
            self.tracker.result_message(&d.data, now, self.times);
        }
        Ok(())
    }

    /// Reads late results (duplicates after a forced disconnect) for `d`.
    async fn linger(&mut self, tap: &mut Consumer, d: Duration) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + d;
        while let Ok(next) = tokio::time::timeout_at(until, tap.next()).await {
            self.on_delivery(next)?;
        }
        Ok(())
    }

    async fn check_publisher(
        &self,
        publisher: &mut Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    ) -> anyhow::Result<()> {
        if publisher.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = publisher.take() {
                h.await.context("publisher task")??;
            }
        }
        Ok(())
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        let Some(gw) = self.gateway.as_mut() else {
            return Ok(());
        };
        if let Ok(Some(status)) = gw.child.try_wait() {
            bail!("the gateway exited ({status}):\n{}", gw.log_tail(20));
        }
        Ok(())
    }

    async fn ready(&self) -> anyhow::Result<u32> {
        Ok(broker::counts(self.ch, &self.p.names.input).await?.0)
    }
}

/// When consumption began and when the input queue drained (queue watch).
#[derive(Debug, Default)]
struct Drain {
    began: Option<Instant>,
    drained: Option<Instant>,
}

impl Drain {
    fn observe(&mut self, ready: u32, jobs: u64, preload: bool) {
        let now = Instant::now();
        if self.began.is_none() && (!preload || u64::from(ready) < jobs) {
            self.began = Some(now);
        }
        if ready == 0 && self.drained.is_none() {
            self.drained = Some(now);
        } else if ready > 0 {
            self.drained = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_come_from_the_stopped_line() {
        let log = concat!(
            r#"{"level":"INFO","message":"draining: consumers cancelled","target":"pushgate::app"}"#,
            "\n",
            r#"{"level":"INFO","jobs_received":200000,"jobs_acked":199990,"jobs_requeued":10,"ack_frames":224,"message":"stopped","target":"pushgate::app"}"#,
            "\n"
        );
        assert_eq!(acks_of(log), Some((199_990, 224)));
        assert_eq!(
            acks_of("{\"message\":\"stopped\"}"),
            None,
            "an older gateway"
        );
        assert_eq!(acks_of(""), None);
    }
}
