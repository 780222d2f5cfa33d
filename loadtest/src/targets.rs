//! The performance targets of the issue, checked against a suite's reports.

use std::fmt::Write;

use crate::report::{thousands, RunReport};
use crate::tracker::percentiles;

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**no**"
    }
}

fn peer_rate(r: &RunReport, name: &str) -> Option<f64> {
    r.peers
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.outcome.as_ref().ok())
        .map(|m| m.rate())
}

/// Appends the summary rows of scenario `name` (report `r`, gateway `rate`).
pub fn lines(name: &str, r: &RunReport, rate: f64, s: &mut String) {
    let window = r.gateway.as_ref().map_or(0.0, |g| g.window_secs);
    if window < 2.0 && name != "mix" {
        let _ = writeln!(
            s,
            "| {} | measured over {window:.2} s only: too short to judge (raise --scale) | n/a |",
            r.title
        );
        return;
    }
    match name {
        "single" => single(r, rate, s),
        "fanout" => fanout(r, rate, s),
        "latency" => latency(r, rate, s),
        "mix" => mix(r, s),
        "rss" | "soak" | "backlog" => memory(r, s),
        _ => {}
    }
}

/// Whether `r` is a run of a ratio target the suite repeats: the
/// single-recipient runs with all results on shared cores, and the fan-out
/// runs at zero latency.
pub fn repeated(name: &str, r: &RunReport) -> bool {
    match name {
        "single" => {
            r.broker_cpu.is_none()
                && r.expected_codes.contains_key("delivered")
                && matches!(r.bare, Some(Ok(_)))
        }
        "fanout" => true,
        _ => false,
    }
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn percents(v: &[f64]) -> String {
    let each: Vec<String> = v.iter().map(|x| format!("{:.0}%", x * 100.0)).collect();
    each.join(", ")
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() > 1 {
        format!("{}-{}", thousands(lo), thousands(hi))
    } else {
        thousands(lo)
    }
}

/// The summary rows of the repeated runs of a ratio target ([`repeated`]),
/// judged on the median of the runs' ratios (each run's ratio is taken
/// within that run).
pub fn median_lines(name: &str, runs: &[&RunReport], s: &mut String) {
    let short: Vec<&&RunReport> = runs
        .iter()
        .filter(|r| r.gateway.as_ref().map_or(0.0, |g| g.window_secs) < 2.0)
        .collect();
    if let Some(r) = short.first() {
        let window = r.gateway.as_ref().map_or(0.0, |g| g.window_secs);
        let _ = writeln!(
            s,
            "| {} | measured over {window:.2} s only: too short to judge (raise --scale) | n/a |",
            r.title
        );
        return;
    }
    let n = runs.len();
    let rates: Vec<f64> = runs.iter().filter_map(|r| r.rate()).collect();
    match name {
        "single" => {
            let mut bare = Vec::new();
            let mut ratios = Vec::new();
            for r in runs {
                if let (Some(rate), Some(Ok(b))) = (r.rate(), &r.bare) {
                    bare.push(b.rate());
                    ratios.push(rate / b.rate().max(1e-9));
                }
            }
            let each = percents(&ratios);
            if let Some(m) = median(&mut ratios) {
                let _ = writeln!(
                    s,
                    "| single-recipient end to end >= 90% of the bare consumer (all results; median of {n} runs) | {} vs {} msg/s; {each}: median **{:.0}%** | {} |",
                    range(&rates),
                    range(&bare),
                    m * 100.0,
                    yes(m >= 0.9)
                );
            }
            for r in runs {
                if let (Some(rate), Some(Ok(b))) = (r.rate(), &r.bare_h2load) {
                    let _ = writeln!(
                        s,
                        "| (diagnostic, not a target) single-recipient vs the bare consumer beside h2load at the gateway's rate (run 1) | {} vs {} msg/s = {:.0}% | - |",
                        thousands(rate),
                        thousands(b.bare.rate()),
                        rate / b.bare.rate().max(1e-9) * 100.0
                    );
                }
            }
        }
        "fanout" => {
            let mut sorted = rates.clone();
            let Some(rate) = median(&mut sorted) else {
                return;
            };
            let _ = writeln!(
                s,
                "| fan-out 500 >= 100,000 notifications/s (median of {n} runs) | {}: median **{}** | {} |",
                range(&rates),
                thousands(rate),
                yes(rate >= 100_000.0)
            );
            let mut h2 = Vec::new();
            let mut ratios = Vec::new();
            for r in runs {
                if let (Some(g), Some(h)) = (r.rate(), peer_rate(r, "h2load")) {
                    h2.push(h);
                    ratios.push(g / h.max(1e-9));
                }
            }
            let each = percents(&ratios);
            if let Some(m) = median(&mut ratios) {
                let _ = writeln!(
                    s,
                    "| fan-out 500 >= 50% of h2load (median of {n} runs) | {} vs {} req/s; {each}: median **{:.0}%** | {} |",
                    range(&rates),
                    range(&h2),
                    m * 100.0,
                    yes(m >= 0.5)
                );
            }
            // The peers run beside the first run only: the first run's rate.
            if let Some(first) = runs.first() {
                if let Some(rate) = first.rate() {
                    peers_line(first, rate, s);
                }
            }
        }
        _ => {
            for r in runs {
                if let Some(rate) = r.rate() {
                    lines(name, r, rate, s);
                }
            }
        }
    }
}

fn single(r: &RunReport, rate: f64, s: &mut String) {
    if let Some(Ok(b)) = &r.bare {
        let ratio = rate / b.rate().max(1e-9);
        let what = if r.expected_codes.contains_key("delivered") {
            "all results"
        } else {
            "undelivered-only results"
        };
        let what = if r.broker_cpu.is_some() {
            format!("{what}, the broker on a core of its own")
        } else {
            what.to_owned()
        };
        let _ = writeln!(
            s,
            "| single-recipient end to end >= 90% of the bare consumer ({what}) | {} vs {} msg/s = {:.0}% | {} |",
            thousands(rate),
            thousands(b.rate()),
            ratio * 100.0,
            yes(ratio >= 0.9)
        );
    }
    // Not a target of the issue: where the shared-core gap comes from.
    if let Some(Ok(b)) = &r.bare_h2load {
        let _ = writeln!(
            s,
            "| (diagnostic, not a target) single-recipient vs the bare consumer beside h2load at the gateway's rate | {} vs {} msg/s = {:.0}% | - |",
            thousands(rate),
            thousands(b.bare.rate()),
            rate / b.bare.rate().max(1e-9) * 100.0
        );
    }
}

fn fanout(r: &RunReport, rate: f64, s: &mut String) {
    let _ = writeln!(
        s,
        "| fan-out 500 >= 100,000 notifications/s | {} | {} |",
        thousands(rate),
        yes(rate >= 100_000.0)
    );
    if let Some(h) = peer_rate(r, "h2load") {
        let ratio = rate / h.max(1e-9);
        let _ = writeln!(
            s,
            "| fan-out 500 >= 50% of h2load | {} vs {} = {:.0}% | {} |",
            thousands(rate),
            thousands(h),
            ratio * 100.0,
            yes(ratio >= 0.5)
        );
    }
    peers_line(r, rate, s);
}

/// The ">= 5x the best peer" row: `rate` against the best peer of `r`.
fn peers_line(r: &RunReport, rate: f64, s: &mut String) {
    let best = ["@parse/node-apn", "aioapns"]
        .iter()
        .filter_map(|n| peer_rate(r, n).map(|x| (*n, x)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((name, peer)) = best {
        let ratio = rate / peer.max(1e-9);
        let _ = writeln!(
            s,
            "| >= 5x the best peer ({name}) | {} vs {} = {:.1}x | {} |",
            thousands(rate),
            thousands(peer),
            ratio,
            yes(ratio >= 5.0)
        );
    }
}

/// Whether a 50 ms run's `rate` is limited only by the ceiling `cap`:
/// within 90% of it, or within 95% of h2load's rate against the same
/// simulator with the same connections, streams and latency (on 2 shared
/// cores the simulator's 4,000 timers keep h2load itself under the
/// ceiling; the gateway then adds no limit of its own).
fn ceiling_met(rate: f64, cap: f64, h2load: Option<f64>) -> bool {
    rate >= 0.9 * cap || h2load.is_some_and(|h| rate >= 0.95 * h)
}

fn latency(r: &RunReport, rate: f64, s: &mut String) {
    if r.preload {
        // The simulator allows 1,000 streams per connection.
        let slots = (r.connections * 1000).min(r.max_in_flight) as f64;
        let cap = slots / 0.05;
        let h2load = peer_rate(r, "h2load");
        let beside = h2load.map_or(String::new(), |h| {
            format!(
                "; h2load, same connections, streams and latency: {} ({:.2}x)",
                thousands(h),
                rate / h.max(1e-9)
            )
        });
        let _ = writeln!(
            s,
            "| 50 ms latency: throughput limited only by min(connections x streams, max_in_flight) / latency = {} /s, or by what HTTP/2 itself reaches against the simulator on these cores (h2load) | {} ({:.0}% of the ceiling{beside}) | {} |",
            thousands(cap),
            thousands(rate),
            rate / cap * 100.0,
            yes(ceiling_met(rate, cap, h2load))
        );
        return;
    }
    let Some(g) = &r.gateway else { return };
    let mut lat = g.tracker.latencies_us.clone();
    if let Some([p50, _, p99, _]) = percentiles(&mut lat) {
        let overhead = (p99 as f64 / 1e3 - 50.0).max(0.0);
        let _ = writeln!(
            s,
            "| 50 ms latency, {} recipient(s) per job: p99 overhead < 5 ms (publish-to-result p99 minus 50 ms, at {} /s; includes two broker round trips) | p50 {:.1} ms, p99 {:.1} ms: {:.1} ms | {} |",
            r.recipients,
            thousands(rate),
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            overhead,
            yes(overhead < 5.0)
        );
    }
    let Some(Ok(e)) = &r.echo else { return };
    let mut base = e.tracker.latencies_us.clone();
    if let (Some(g), Some(b)) = (percentiles(&mut lat), percentiles(&mut base)) {
        let overhead = (f64::from(g[2]) - f64::from(b[2])) / 1e3;
        let _ = writeln!(
            s,
            "| 50 ms latency, {} recipient(s) per job: gateway p99 overhead < 5 ms (gateway p99 minus the broker round trip's p99, same rate, same 50 ms) | {:.1} ms - {:.1} ms = {:.1} ms | {} |",
            r.recipients,
            f64::from(g[2]) / 1e3,
            f64::from(b[2]) / 1e3,
            overhead,
            yes(overhead < 5.0)
        );
    }
}

fn mix(r: &RunReport, s: &mut String) {
    let Some(g) = &r.gateway else { return };
    let t = &g.tracker;
    let exact = r
        .expected_codes
        .iter()
        .all(|(c, n)| t.codes.get(c) == Some(n));
    let ok = g.published == r.jobs && g.jobs_left == 0 && r.dead_ok(g) && r.missing == 0 && exact;
    let _ = writeln!(
        s,
        "| count everything: published = acked + dead-lettered, results = recipients, codes exact | {} jobs, {} dead-lettered, {} results, {} duplicates after {} forced disconnect(s) | {} |",
        thousands(g.published as f64),
        g.dead,
        thousands(t.finals as f64),
        t.duplicates,
        g.disconnects,
        yes(ok)
    );
}

fn memory(r: &RunReport, s: &mut String) {
    let Some(g) = &r.gateway else { return };
    let Some(u) = g.gateway else { return };
    let peak = u.rss_peak as f64 / (1 << 20) as f64;
    let _ = writeln!(
        s,
        "| {}: RSS < 150 MB | peak {:.1} MB | {} |",
        r.title,
        peak,
        yes(peak < 150.0)
    );
    if let Some((a, b)) = g.rss_trend {
        let (a, b) = (a as f64 / (1 << 20) as f64, b as f64 / (1 << 20) as f64);
        let _ = writeln!(
            s,
            "| {}: RSS flat (last fifth within 10% of the first) | {:.1} -> {:.1} MB | {} |",
            r.title,
            a,
            b,
            yes(b <= a * 1.1)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_50_ms_ceiling_is_the_lower_of_the_formula_and_h2load() {
        assert!(ceiling_met(72_000.0, 80_000.0, None));
        assert!(!ceiling_met(70_000.0, 80_000.0, None));
        assert!(ceiling_met(70_000.0, 80_000.0, Some(71_300.0)), "as h2load");
        assert!(
            !ceiling_met(60_000.0, 80_000.0, Some(71_300.0)),
            "below h2load"
        );
    }

    #[test]
    fn median_of_odd_even_and_no_runs() {
        assert_eq!(median(&mut [0.95, 0.81, 0.90]), Some(0.90));
        assert_eq!(median(&mut [0.8, 1.0]), Some(0.9));
        assert_eq!(median(&mut [0.7]), Some(0.7));
        assert_eq!(median(&mut []), None);
        assert_eq!(percents(&[0.894, 0.9]), "89%, 90%");
        assert_eq!(range(&[30_000.0, 28_000.0]), "28,000-30,000");
    }
}
