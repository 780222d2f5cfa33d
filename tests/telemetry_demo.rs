//! End to end: `pushgate demo --serve` runs a campaign through RabbitMQ
//! against the simulators and keeps its admin server up. The test posts
//! impression and click events, scrapes `/metrics`, has `promtool check
//! metrics` lint the exposition, checks the counters against the summary
//! the demo built from the result messages, checks the campaign stats, and
//! checks that every `pushgate_*` metric the Grafana dashboard
//! (deploy/grafana/*.json) and the alert rules (deploy/prometheus/*.yml)
//! use is exported (and `promtool check rules` passes on those rules).
//!
//! Needs RabbitMQ and promtool (scripts/test.sh installs both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use admin_support::{http, sample};

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("promtool");
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect(
        "promtool must be on PATH: run scripts/ensure-promtool.sh (Debian package prometheus)",
    );
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The demo process; killed if the test fails before stopping it.
struct Demo(Option<Child>);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the demo; returns the child, its admin address and its output up
/// to the "serving:" line (the summary included).
fn start_demo() -> (Demo, SocketAddr, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["demo", "--count", "2000", "--batch", "250", "--serve"])
        .args(["--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run pushgate demo");
    let stdout = child.stdout.take().unwrap();
    let child = Demo(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("demo did not reach serving:\n{out}"));
        out.push_str(&line);
        out.push('\n');
        if line.starts_with("serving:") {
            break;
        }
    }
    let addr = out
        .lines()
        .find_map(|l| l.strip_prefix("admin: http://"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no admin line in:\n{out}"))
        .parse()
        .unwrap();
    (child, addr, out)
}

/// The summary table: (code, platform) -> count ("delivered" for delivered).
fn summary(out: &str) -> BTreeMap<(String, String), f64> {
    let mut rows = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(code), Some(platform), Some(n)) = (f.first(), f.get(1), f.get(2)) else {
            continue;
        };
        if ["apns", "fcm", "webpush"].contains(platform) {
            if let Ok(n) = n.parse::<f64>() {
                rows.insert(((*code).to_owned(), (*platform).to_owned()), n);
            }
        }
    }
    rows
}

/// Sum of the samples of `name` whose labels contain every `labels` pair.
fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

const EVENTS: &str = r#"{"events": [
 {"type": "impression", "app": "shop", "platform": "apns", "campaign": "spring-sale", "notification_id": "n1"},
 {"type": "impression", "app": "shop", "platform": "fcm", "campaign": "spring-sale", "notification_id": "n2"},
 {"type": "impression", "app": "shop", "platform": "fcm", "campaign": "spring-sale", "notification_id": "n3"},
 {"type": "click", "app": "shop", "platform": "fcm", "campaign": "spring-sale", "notification_id": "n3"}]}"#;

fn check_counters(text: &str, rows: &BTreeMap<(String, String), f64>) {
    assert_eq!(rows.values().sum::<f64>(), 2000.0, "{rows:?}");
    for ((code, platform), n) in rows {
        let code = if code == "delivered" { "none" } else { code };
        let finals = sum(
            text,
            "pushgate_notifications_total",
            &[
                ("code", code),
                ("platform", platform),
                ("status", "delivered"),
            ],
        ) + sum(
            text,
            "pushgate_notifications_total",
            &[("code", code), ("platform", platform), ("status", "failed")],
        );
        assert_eq!(
            finals, *n,
            "{code}/{platform} in /metrics vs the published results"
        );
    }
    let token_codes = [
        "BadDeviceToken",
        "NotRegistered",
        "MismatchSenderId",
        "DeviceTokenNotForTopic",
        "BrowserUnsubscribed",
    ];
    let invalid: f64 = rows
        .iter()
        .filter(|((c, _), _)| token_codes.contains(&c.as_str()))
        .map(|(_, n)| n)
        .sum();
    let invalidated = sum(
        text,
        "pushgate_token_invalidations_total",
        &[("app", "shop")],
    );
    // Malformed tokens refused locally carry their (bad) token too.
    assert_eq!(
        invalidated, invalid,
        "token feedback vs failed token-class results"
    );
    assert!(
        sum(text, "pushgate_retries_total", &[]) >= 80.0,
        "the flaky tokens were retried"
    );
    assert!(
        sample(
            text,
            r#"pushgate_provider_request_duration_seconds_count{platform="apns"}"#
        )
        .unwrap()
            >= 880.0
    );
    let delivered: f64 = rows
        .iter()
        .filter(|((c, _), _)| c == "delivered")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        sample(
            text,
            r#"pushgate_campaign_delivered_total{campaign="spring-sale"}"#
        ),
        Some(delivered)
    );
    assert_eq!(
        sample(
            text,
            r#"pushgate_campaign_impressions_total{campaign="spring-sale"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            text,
            r#"pushgate_impressions_total{app="shop",platform="fcm"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(text, r#"pushgate_clicks_total{app="shop",platform="fcm"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(text, "pushgate_ready"),
        Some(1.0),
        "the demo daemon keeps consuming"
    );
}

async fn check_campaign(addr: SocketAddr, rows: &BTreeMap<(String, String), f64>) {
    let (code, body) = http(addr, "GET /v1/campaigns/spring-sale HTTP/1.1", "").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let delivered: f64 = rows
        .iter()
        .filter(|((c, _), _)| c == "delivered")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(v["attempted"].as_f64(), Some(2000.0));
    assert_eq!(v["delivered"].as_f64(), Some(delivered));
    let mut failed: BTreeMap<String, f64> = BTreeMap::new();
    for ((c, _), n) in rows.iter().filter(|((c, _), _)| c != "delivered") {
        *failed.entry(c.clone()).or_default() += n;
    }
    let got: BTreeMap<String, f64> = serde_json::from_value(v["failed"].clone()).unwrap();
    assert_eq!(got, failed);
    assert_eq!(
        (v["impressions"].as_u64(), v["clicks"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(v["rates"]["delivery"].as_f64(), Some(delivered / 2000.0));
}

/// `pushgate_*` names used in the dashboards and alert rules.
fn referenced(dir: &Path, ext: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return names;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(ext) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices("pushgate_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name, path.display().to_string());
        }
    }
    names
}

fn check_deploy_files(text: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let dashboards = referenced(&root.join("grafana"), "json");
    assert!(dashboards.len() > 10, "the dashboard uses pushgate metrics");
    let mut rules = referenced(&root.join("prometheus"), "yml");
    rules.extend(referenced(&root.join("prometheus"), "yaml"));
    for (name, file) in dashboards.iter().chain(&rules) {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| exported.contains(b)))
            .unwrap_or(name);
        assert!(
            exported.contains(base),
            "{file} uses {name}, which /metrics does not export"
        );
    }
    let alerts = root.join("prometheus/alerts.yml");
    let alert_text = std::fs::read_to_string(&alerts).unwrap();
    let used: BTreeSet<&str> = rules
        .keys()
        .map(String::as_str)
        .filter(|n| alert_text.contains(n))
        .collect();
    assert!(
        used.len() > 5,
        "the alert rules use pushgate metrics: {used:?}"
    );
    let path = alerts.display().to_string();
    let (ok, out) = promtool(&["check", "rules", &path], None);
    assert!(ok, "promtool check rules {path}:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_campaign_match_the_published_results() {
    let (mut demo, addr, out) = start_demo();
    assert!(
        out.contains("queue: RabbitMQ"),
        "needs RabbitMQ (scripts/ensure-rabbitmq.sh):\n{out}"
    );
    let rows = summary(&out);
    let (code, body) = http(addr, "POST /v1/events HTTP/1.1", EVENTS).await;
    assert_eq!(code, 200, "{body}");
    // Results are counted once the broker confirmed them, which may be just
    // after the demo's tap read them: wait until every final is counted.
    let mut text = String::new();
    for _ in 0..100 {
        let (code, t) = http(addr, "GET /metrics HTTP/1.1", "").await;
        assert_eq!(code, 200);
        text = t;
        let finals = sum(
            &text,
            "pushgate_notifications_total",
            &[("status", "delivered")],
        ) + sum(
            &text,
            "pushgate_notifications_total",
            &[("status", "failed")],
        );
        if finals >= 2000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, lint) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics:\n{lint}");
    check_counters(&text, &rows);
    check_campaign(addr, &rows).await;
    check_deploy_files(&text);

    let mut child = demo.0.take().unwrap();
    let pid = child.id().to_string();
    let stopped = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(stopped.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "demo exit after Ctrl-C: {status}");
}
