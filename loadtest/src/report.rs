//! The markdown report of a run: the gateway's figures, the baselines
//! beside them with ratios, and the count-everything check.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::bare::BareResult;
use crate::gateway::GatewayRun;
use crate::peers::PeerResult;
use crate::procstat::Usage;
use crate::tracker::percentiles;

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
    pub connections: usize,
    pub max_in_flight: usize,
    pub gateway: Option<GatewayRun>,
    pub gateway_error: Option<String>,
    pub bare: Option<Result<BareResult, String>>,
    pub ack_batch: u64,
    pub peers: Vec<PeerResult>,
    pub expected_codes: BTreeMap<String, u64>,
    pub expected_dead: u64,
    pub expected_results: u64,
    pub missing: u64,
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

fn cores(u: &Option<Usage>) -> String {
    u.map_or("n/a".into(), |u| format!("{:.2} cores", u.cores))
}

impl RunReport {
    /// The gateway's notifications/s, when it ran.
    pub fn rate(&self) -> Option<f64> {
        self.gateway.as_ref().map(|g| g.rate)
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
        self.render_gateway(&mut s);
        self.render_baselines(&mut s);
        self.render_check(&mut s);
        s
    }

    fn render_gateway(&mut self, s: &mut String) {
        if let Some(e) = &self.gateway_error {
            let _ = writeln!(s, "**The gateway run failed:** {e}\n");
        }
        let preload = self.preload;
        let Some(g) = self.gateway.as_mut() else {
            return;
        };
        let _ = writeln!(s, "| gateway | value |\n|---|---|");
        let _ = writeln!(
            s,
            "| notifications/s (end to end, {:.1} s window) | **{}** |",
            g.window_secs,
            thousands(g.rate)
        );
        let lat = if preload {
            "n/a (preloaded: the queue wait dominates)".to_owned()
        } else {
            match percentiles(&mut g.tracker.latencies_us) {
                Some([p50, p95, p99, max]) => format!(
                    "{:.1} / {:.1} / {:.1} / {:.1} ms",
                    p50 as f64 / 1e3,
                    p95 as f64 / 1e3,
                    p99 as f64 / 1e3,
                    max as f64 / 1e3
                ),
                None => "n/a (no results)".into(),
            }
        };
        let _ = writeln!(
            s,
            "| publish-to-result latency p50 / p95 / p99 / max | {lat} |"
        );
        if let Some(u) = g.gateway {
            let _ = writeln!(s, "| gateway CPU | {:.2} cores |", u.cores);
            let _ = writeln!(
                s,
                "| gateway RSS peak / at the end | {} / {} |",
                mb(u.rss_peak),
                mb(u.rss_last)
            );
        }
        if let Some((a, b)) = g.rss_trend {
            let _ = writeln!(
                s,
                "| gateway RSS, first fifth vs last fifth of the run | {} vs {} |",
                mb(a),
                mb(b)
            );
        }
        let _ = writeln!(
            s,
            "| broker / simulator / loadtest CPU | {} / {} / {} |",
            cores(&g.broker),
            cores(&g.sim),
            cores(&g.loadtest)
        );
        let _ = writeln!(
            s,
            "| gateway log lines | {} ({:.4} per notification) |",
            g.log_lines,
            g.log_lines as f64 / (self.jobs * self.recipients as u64).max(1) as f64
        );
        let _ = writeln!(s, "| gateway exit | {} |\n", g.exit);
    }

    fn render_baselines(&self, s: &mut String) {
        if self.bare.is_none() && self.peers.is_empty() {
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
                    "| bare lapin consumer (same prefetch, `multiple` ack every {} -> {} ack frames; broker CPU {}) | {} msg/s | {} | built in (`--baselines bare`) |",
                    self.ack_batch,
                    thousands(b.ack_frames as f64),
                    b.broker_cores.map_or("n/a".into(), |c| format!("{c:.2} cores")),
                    thousands(b.rate()),
                    ratio(b.rate() * self.recipients as f64)
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(s, "| bare lapin consumer | failed: {e} | | |");
            }
            None => {}
        }
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
        let t = &g.tracker;
        let ok = |b: bool| if b { "yes" } else { "**NO**" };
        let _ = writeln!(
            s,
            "| count-everything check | expected | seen | ok |\n|---|---|---|---|"
        );
        let _ = writeln!(
            s,
            "| jobs published (confirmed) | {} | {} | {} |",
            self.jobs,
            g.published,
            ok(g.published == self.jobs)
        );
        let acked = g.published.saturating_sub(u64::from(g.jobs_left));
        let _ = writeln!(
            s,
            "| jobs acked (input queue empty after the gateway stopped) | {} | {} | {} |",
            g.published,
            acked,
            ok(g.jobs_left == 0)
        );
        let _ = writeln!(
            s,
            "| jobs dead-lettered (dead queue) | {} | {} | {} |",
            self.expected_dead,
            g.dead,
            ok(u64::from(g.dead) == self.expected_dead)
        );
        let _ = writeln!(
            s,
            "| final results = recipients | {} | {} | {} |",
            self.expected_results,
            t.finals,
            ok(t.finals == self.expected_results)
        );
        let _ = writeln!(
            s,
            "| recipients without a final result | 0 | {} | {} |",
            self.missing,
            ok(self.missing == 0)
        );
        let _ = writeln!(
            s,
            "| duplicate results (redeliveries) | 0 without a disconnect | {} (about {} jobs run again) | {} |",
            t.duplicates,
            t.duplicates.div_ceil(self.recipients.max(1) as u64),
            ok(t.duplicates == 0 || g.disconnects > 0)
        );
        let _ = writeln!(
            s,
            "| forced disconnects / broker sessions lost (gateway log) | | {} / {} | |",
            g.disconnects, g.sessions_lost
        );
        let _ = writeln!(
            s,
            "| retrying entries / token feedback entries / foreign entries | | {} / {} / {} | |",
            t.retrying, t.token_feedback, t.foreign
        );
        let _ = writeln!(
            s,
            "| retry sub-jobs published to the delay queues (their recipients) | | {} ({}) | |",
            t.retry_jobs, t.retry_recipients
        );
        if let Some(e) = &g.disconnect_error {
            let _ = writeln!(s, "| forced disconnect done | | no: {e} | **NO** |");
        }
        if g.timed_out {
            let _ = writeln!(s, "| finished before the timeout | | no | **NO** |");
        }
        for (code, want) in &self.expected_codes {
            let got = t.codes.get(code).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "| results `{code}` | {want} | {got} | {} |",
                ok(got == *want)
            );
        }
        for (code, got) in t
            .codes
            .iter()
            .filter(|(c, _)| !self.expected_codes.contains_key(*c))
        {
            let _ = writeln!(s, "| results `{code}` (unexpected) | 0 | {got} | **NO** |");
        }
        s.push('\n');
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
}
