//! The markdown report of a run: the gateway's figures, the baselines
//! beside them with ratios, and the count-everything check.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::bare::BareResult;
use crate::echo::EchoResult;
use crate::gateway::GatewayRun;
use crate::peers::PeerResult;
use crate::procstat::Usage;
use crate::tracker::{percentiles, Tracker};

/// Everything one run produced.
#[derive(Debug)]
pub struct RunReport {
    pub title: String,
    pub command: String,
    pub cores: usize,
    pub load_start: f64,
    pub load_end: f64,
    pub jobs: u64,
    pub recipients: usize,
    pub preload: bool,
    pub latency: String,
    pub settings: String,
    /// The broker's own CPU for the run (`--broker-cpu`), if it had one.
    pub broker_cpu: Option<u16>,
    pub connections: usize,
    pub max_in_flight: usize,
    pub gateway: Option<GatewayRun>,
    pub gateway_error: Option<String>,
    pub bare: Option<Result<BareResult, String>>,
    /// The bare consumer beside h2load at the gateway's rate.
    pub bare_h2load: Option<Result<crate::bare::Beside, String>>,
    /// The broker round trip without a gateway (live runs).
    pub echo: Option<Result<EchoResult, String>>,
    pub ack_batch: u64,
    pub peers: Vec<PeerResult>,
    pub expected_codes: BTreeMap<String, u64>,
    pub expected_dead: u64,
    pub expected_results: u64,
    pub missing: u64,
    /// The share of the machine's CPU the hypervisor gave to other guests
    /// during each phase (`/proc/stat` steal): a run with much of it
    /// measured a slower machine than its neighbours did.
    pub steal: Vec<(&'static str, f64)>,
}

/// `12345.6` as `12,346`.
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
}

/// `p50 / p95 / p99 / max ms` of publish-to-result latencies (µs).
fn latency_cell(samples: &mut [u32]) -> String {
    match percentiles(samples) {
        Some([p50, p95, p99, max]) => format!(
            "{:.1} / {:.1} / {:.1} / {:.1} ms",
            f64::from(p50) / 1e3,
            f64::from(p95) / 1e3,
            f64::from(p99) / 1e3,
            f64::from(max) / 1e3
        ),
        None => "n/a (no results)".into(),
    }
}

/// The five jobs with the slowest result and when each was published:
/// tails that come in episodes show as jobs published close together.
fn slowest_cell(t: &Tracker) -> String {
    let jobs = t.slowest_jobs(5);
    if jobs.is_empty() {
        return "n/a (no results)".into();
    }
    let cells: Vec<String> = jobs
        .iter()
        .map(|&(us, at_ms)| {
            format!(
                "{:.1} ms ({:.2} s)",
                f64::from(us) / 1e3,
                f64::from(at_ms) / 1e3
            )
        })
        .collect();
    cells.join(", ")
}

fn cores(u: &Option<Usage>) -> String {
    u.map_or("n/a".into(), |u| format!("{:.2} cores", u.cores))
}

/// ` (20.7 µs a notification)`: CPU per notification at `rate`, the figure
/// to compare between runs at different speeds (empty without a rate).
fn per_notification(cores: f64, rate: f64) -> String {
    if rate > 0.0 {
        format!(" ({:.1} µs a notification)", cores * 1e6 / rate)
    } else {
        String::new()
    }
}

/// The rate `cores` would carry if the gateway cost nothing and the other
/// processes' CPU per notification stayed what it was at `rate`: what a
/// run on shared cores can show at best (`None` without all of them).
fn machine_bound(cores: usize, rate: f64, others: &[Option<Usage>]) -> Option<f64> {
    let used: f64 = others
        .iter()
        .map(|u| u.map(|u| u.cores))
        .sum::<Option<f64>>()?;
    (used > 0.0 && rate > 0.0).then(|| cores as f64 * rate / used)
}

fn waiting(u: &Option<Usage>) -> String {
    u.map_or("n/a".into(), |u| format!("{:.2}", u.waiting))
}

impl RunReport {
    /// The gateway's notifications/s, when it ran.
    pub fn rate(&self) -> Option<f64> {
        self.gateway.as_ref().map(|g| g.rate)
    }

    /// Notes the CPU stolen during `phase`, which started at `from`.
    pub fn note_steal(&mut self, phase: &'static str, from: Option<crate::procstat::CpuTimes>) {
        if let Some(share) = from.and_then(|t| t.stolen_since()) {
            self.steal.push((phase, share));
        }
    }

    pub fn render(&mut self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## {}\n", self.title);
        let _ = writeln!(
            s,
            "Machine: {} cores; load average {:.2} at the start, {:.2} at the end.  \nCommand: `{}`  \nSetup: {} jobs x {} recipient(s){}; simulator latency {}; {}.\n",
            self.cores,
            self.load_start,
            self.load_end,
            self.command,
            thousands(self.jobs as f64),
            self.recipients,
            if self.preload { ", preloaded (a backlog)" } else { ", published live" },
            self.latency,
            self.settings
        );
        if !self.steal.is_empty() {
            let phases: Vec<String> = self
                .steal
                .iter()
                .map(|(phase, share)| format!("{phase} {:.0}%", share * 100.0))
                .collect();
            let _ = writeln!(
                s,
                "CPU stolen by the hypervisor (`/proc/stat` steal), by phase: {}.\n",
                phases.join(", ")
            );
        }
        self.render_gateway(&mut s);
        self.render_baselines(&mut s);
        self.render_check(&mut s);
        s
    }

    fn render_gateway(&mut self, s: &mut String) {
        if let Some(e) = &self.gateway_error {
            let _ = writeln!(s, "**The gateway run failed:** {e}\n");
        }
        let (preload, notifications) = (self.preload, self.jobs * self.recipients as u64);
        let machine_cores = self.cores;
        let Some(g) = self.gateway.as_mut() else {
            return;
        };
        let (lat, provider) = if preload {
            let na = "n/a (preloaded: the queue wait dominates)".to_owned();
            (na.clone(), na)
        } else {
            (
                latency_cell(&mut g.tracker.latencies_us),
                latency_cell(&mut g.tracker.provider_us),
            )
        };
        let mut rows = vec![
            (
                format!(
                    "notifications/s (end to end, {:.1} s window)",
                    g.window_secs
                ),
                format!("**{}**", thousands(g.rate)),
            ),
            (
                "publish-to-result latency p50 / p95 / p99 / max".into(),
                lat,
            ),
            (
                "of which the provider exchange, as the gateway timed it (ms resolution)".into(),
                provider,
            ),
        ];
        if !preload {
            rows.push((
                "slowest jobs: slowest result (published at, after the start)".into(),
                slowest_cell(&g.tracker),
            ));
        }
        if let Some(u) = g.gateway {
            rows.push((
                "gateway CPU".into(),
                format!("{:.2} cores{}", u.cores, per_notification(u.cores, g.rate)),
            ));
            rows.push((
                "gateway RSS peak / at the end".into(),
                format!("{} / {}", mb(u.rss_peak), mb(u.rss_last)),
            ));
        }
        if let Some((a, b)) = g.rss_trend {
            rows.push((
                "gateway RSS, first fifth vs last fifth of the run".into(),
                format!("{} vs {}", mb(a), mb(b)),
            ));
        }
        let per = g.log_lines as f64 / notifications.max(1) as f64;
        rows.push((
            "broker / simulator / loadtest CPU".into(),
            format!(
                "{} / {}{} / {}",
                cores(&g.broker),
                cores(&g.sim),
                g.sim
                    .map(|u| per_notification(u.cores, g.rate))
                    .unwrap_or_default(),
                cores(&g.loadtest)
            ),
        ));
        rows.push((
            "waiting for a core (run queue, in cores): gateway / broker / simulator / loadtest"
                .into(),
            format!(
                "{} / {} / {} / {}",
                waiting(&g.gateway),
                waiting(&g.broker),
                waiting(&g.sim),
                waiting(&g.loadtest)
            ),
        ));
        if let Some(bound) = machine_bound(machine_cores, g.rate, &[g.broker, g.sim, g.loadtest]) {
            rows.push((
                "at most, on these cores, for a gateway that cost nothing (cores / the broker's, simulator's and load test's CPU per notification)".into(),
                format!("{}/s", thousands(bound)),
            ));
        }
        let t = &g.tracker;
        rows.push((
            "result messages (entries per message)".into(),
            format!(
                "{} ({:.1})",
                thousands(t.messages as f64),
                (t.finals + t.retrying) as f64 / t.messages.max(1) as f64
            ),
        ));
        if let Some((acked, frames)) = g.acks {
            rows.push((
                "gateway ack frames (jobs per frame)".into(),
                format!(
                    "{} ({:.1})",
                    thousands(frames as f64),
                    acked as f64 / frames.max(1) as f64
                ),
            ));
        }
        rows.push((
            "gateway log lines".into(),
            format!("{} ({per:.4} per notification)", g.log_lines),
        ));
        rows.push(("gateway exit".into(), g.exit.clone()));
        let _ = writeln!(s, "| gateway | value |\n|---|---|");
        for (what, value) in rows {
            let _ = writeln!(s, "| {what} | {value} |");
        }
        s.push('\n');
    }

    /// The echo row: its latencies, and the gateway's minus them.
    fn render_echo(&self, s: &mut String) {
        let e = match &self.echo {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                let _ = writeln!(s, "| broker round trip (echo) | failed: {e} | | |");
                return;
            }
            None => return,
        };
        let mut echo = e.tracker.latencies_us.clone();
        let mut gw = self
            .gateway
            .as_ref()
            .map(|g| g.tracker.latencies_us.clone())
            .unwrap_or_default();
        let overhead = match (percentiles(&mut gw), percentiles(&mut echo)) {
            (Some(g), Some(b)) => format!(
                "gateway overhead p50 / p95 / p99: {:.1} / {:.1} / {:.1} ms",
                (f64::from(g[0]) - f64::from(b[0])) / 1e3,
                (f64::from(g[1]) - f64::from(b[1])) / 1e3,
                (f64::from(g[2]) - f64::from(b[2])) / 1e3
            ),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            s,
            "| broker round trip (echo: a bare consumer answers each job after the simulator's latency; publish-to-result p50 / p95 / p99 / max) | {} | {overhead} | built in (`--baselines echo`) |",
            latency_cell(&mut echo)
        );
    }

    fn render_baselines(&self, s: &mut String) {
        if self.bare.is_none()
            && self.bare_h2load.is_none()
            && self.echo.is_none()
            && self.peers.is_empty()
        {
            return;
        }
        let rate = self.rate();
        let ratio = |base: f64| rate.map_or("n/a".into(), |r| format!("{:.2}", r / base.max(1e-9)));
        let _ = writeln!(
            s,
            "| baseline (same run) | rate | gateway / baseline | command |\n|---|---|---|---|"
        );
        match &self.bare {
            Some(Ok(b)) => {
                let _ = writeln!(
                    s,
                    "| bare lapin consumer (same prefetch, `multiple` ack every {} -> {} ack frames; broker CPU {}, consumer CPU {}) | {} msg/s | {} | built in (`--baselines bare`) |",
                    self.ack_batch,
                    thousands(b.ack_frames as f64),
                    b.broker_cores.map_or("n/a".into(), |c| format!("{c:.2} cores")),
                    b.consumer_cores.map_or("n/a".into(), |c| format!("{c:.2} cores")),
                    thousands(b.rate()),
                    ratio(b.rate() * self.recipients as f64)
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(s, "| bare lapin consumer | failed: {e} | | |");
            }
            None => {}
        }
        match &self.bare_h2load {
            Some(Ok(b)) => {
                let sent = match &b.sent {
                    Ok(m) => format!("{} req/s sent over {:.1} s", thousands(m.rate()), m.secs),
                    Err(e) => format!("h2load: {e}"),
                };
                let _ = writeln!(
                    s,
                    "| bare lapin consumer beside h2load (the same consumer while h2load sends the gateway's rate, {} req/s asked, {sent}, to the same simulator: the broker's pace with the HTTP/2 side of that throughput on the same cores; consumer CPU {}) | {} msg/s | {} | `--baselines bare-h2load`: `{}` |",
                    thousands(b.asked as f64),
                    b.bare.consumer_cores.map_or("n/a".into(), |c| format!("{c:.2} cores")),
                    thousands(b.bare.rate()),
                    ratio(b.bare.rate() * self.recipients as f64),
                    b.command
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(s, "| bare lapin consumer beside h2load | failed: {e} | | |");
            }
            None => {}
        }
        self.render_echo(s);
        for p in &self.peers {
            match &p.outcome {
                Ok(m) => {
                    let _ = writeln!(
                        s,
                        "| {} ({} of {} ok in {:.2} s) | {} req/s | {} | `{}` |",
                        p.name,
                        thousands(m.ok as f64),
                        thousands(m.requests as f64),
                        m.secs,
                        thousands(m.rate()),
                        ratio(m.rate()),
                        p.command
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        s,
                        "| {} | skipped: {} | | `{}` |",
                        p.name,
                        e.replace('\n', " "),
                        p.command
                    );
                }
            }
        }
        s.push('\n');
    }

    fn render_check(&self, s: &mut String) {
        let Some(g) = &self.gateway else { return };
        let _ = writeln!(
            s,
            "| count-everything check | expected | seen | ok |\n|---|---|---|---|"
        );
        for (what, want, seen, ok) in self.check_rows(g) {
            let ok = match ok {
                Some(true) => "yes",
                Some(false) => "**NO**",
                None => "",
            };
            let _ = writeln!(s, "| {what} | {want} | {seen} | {ok} |");
        }
        s.push('\n');
    }

    /// Every invalid job dead-lettered: exactly once, or more often after a
    /// forced disconnect (at-least-once: a job whose ack the disconnect
    /// lost is delivered, and dead-lettered, again).
    pub fn dead_ok(&self, g: &GatewayRun) -> bool {
        let dead = u64::from(g.dead);
        dead == self.expected_dead || (g.disconnects > 0 && dead > self.expected_dead)
    }

    /// (check, expected, seen, passed) rows; `None`: informational.
    fn check_rows(&self, g: &GatewayRun) -> Vec<(String, String, String, Option<bool>)> {
        let t = &g.tracker;
        let row = |what: &str, want: String, seen: String, ok: Option<bool>| {
            (what.to_owned(), want, seen, ok)
        };
        let acked = g.published.saturating_sub(u64::from(g.jobs_left));
        let again = t.duplicates.div_ceil(self.recipients.max(1) as u64);
        let mut rows = vec![
            row(
                "jobs published (confirmed)",
                self.jobs.to_string(),
                g.published.to_string(),
                Some(g.published == self.jobs),
            ),
            row(
                "jobs acked (input queue empty after the gateway stopped)",
                g.published.to_string(),
                acked.to_string(),
                Some(g.jobs_left == 0),
            ),
            // At-least-once: a job whose ack a forced disconnect lost is
            // delivered again, and an invalid one is dead-lettered again.
            row(
                "jobs dead-lettered (dead queue)",
                if g.disconnects > 0 {
                    format!("{} (more after a disconnect)", self.expected_dead)
                } else {
                    self.expected_dead.to_string()
                },
                g.dead.to_string(),
                Some(self.dead_ok(g)),
            ),
            row(
                "final results = recipients",
                self.expected_results.to_string(),
                t.finals.to_string(),
                Some(t.finals == self.expected_results),
            ),
            row(
                "recipients without a final result",
                "0".into(),
                self.missing.to_string(),
                Some(self.missing == 0),
            ),
            row(
                "duplicate results (redeliveries)",
                "0 without a disconnect".into(),
                format!("{} (about {again} jobs run again)", t.duplicates),
                Some(t.duplicates == 0 || g.disconnects > 0),
            ),
            row(
                "forced disconnects / broker sessions lost (gateway log)",
                String::new(),
                format!("{} / {}", g.disconnects, g.sessions_lost),
                None,
            ),
            row(
                "retrying entries / token feedback entries / foreign entries",
                String::new(),
                format!("{} / {} / {}", t.retrying, t.token_feedback, t.foreign),
                None,
            ),
            row(
                "retry sub-jobs published to the delay queues (their recipients)",
                String::new(),
                format!("{} ({})", t.retry_jobs, t.retry_recipients),
                None,
            ),
        ];
        rows.extend(self.detail_rows(g));
        rows
    }

    /// Informational rows, fault rows and the counts by code.
    fn detail_rows(&self, g: &GatewayRun) -> Vec<(String, String, String, Option<bool>)> {
        let t = &g.tracker;
        let row = |what: &str, want: String, seen: String, ok: Option<bool>| {
            (what.to_owned(), want, seen, ok)
        };
        let mut rows = Vec::new();
        if let Some(e) = &g.disconnect_error {
            rows.push(row(
                "forced disconnect done",
                String::new(),
                format!("no: {e}"),
                Some(false),
            ));
        }
        if g.timed_out {
            rows.push(row(
                "finished before the timeout",
                String::new(),
                "no".into(),
                Some(false),
            ));
        }
        for (code, want) in &self.expected_codes {
            let got = t.codes.get(code).copied().unwrap_or(0);
            rows.push(row(
                &format!("results `{code}`"),
                want.to_string(),
                got.to_string(),
                Some(got == *want),
            ));
        }
        for (code, got) in t
            .codes
            .iter()
            .filter(|(c, _)| !self.expected_codes.contains_key(*c))
        {
            rows.push(row(
                &format!("results `{code}` (unexpected)"),
                "0".into(),
                got.to_string(),
                Some(false),
            ));
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
    }

    #[test]
    fn the_machine_bound_is_cores_over_the_others_cpu_per_notification() {
        let u = |cores: f64| {
            Some(Usage {
                cores,
                ..Usage::default()
            })
        };
        // 15,000/s with 0.6 + 0.4 + 0.1 cores besides the gateway: 72 µs
        // each, so 2 cores carry at most 27,273/s.
        let b = machine_bound(2, 15_000.0, &[u(0.6), u(0.4), u(0.1)]).unwrap_or_default();
        assert!((b - 27_272.7).abs() < 1.0, "{b}");
        assert_eq!(machine_bound(2, 15_000.0, &[u(0.6), None, u(0.1)]), None);
        assert_eq!(machine_bound(2, 0.0, &[u(0.6), u(0.4), u(0.1)]), None);
    }

    #[test]
    fn cpu_per_notification_is_cores_over_the_rate() {
        assert_eq!(per_notification(0.24, 6_030.0), " (39.8 µs a notification)");
        assert_eq!(per_notification(0.5, 0.0), "");
    }
}
