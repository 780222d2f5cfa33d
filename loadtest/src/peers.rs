//! The HTTP/2 baselines against the same APNs simulator: h2load
//! (nghttp2-client), @parse/node-apn and aioapns, each with the same
//! connections and streams as the gateway's pool. A client that cannot be
//! found or installed is skipped with the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::Command;

use crate::jobs::{BODY, TITLE, TOPIC};

/// What one client measured, or why it did not run.
#[derive(Debug, Clone)]
pub struct PeerResult {
    pub name: &'static str,
    pub command: String,
    pub outcome: Result<Measured, String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub requests: u64,
    pub ok: u64,
    pub secs: f64,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }
}

/// Where and how hard the clients send.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub connections: usize,
    pub streams: usize,
    /// Requests of each peer client.
    pub requests: u64,
    pub h2load_requests: u64,
    pub work_dir: PathBuf,
}

fn dev_token() -> String {
    "a".repeat(64)
}

/// A provider JWT signed with the dev key.
pub fn dev_jwt(root: &Path) -> anyhow::Result<String> {
    sign_jwt(&root.join("config/dev/apns-dev.p8"))
}

/// A provider JWT (team DEVTEAM001, key id DEVKEY0001) signed with `key`.
pub fn sign_jwt(key: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read(key).with_context(|| key.display().to_string())?;
    let der = pushgate::config::secrets::apns_p8(&pem).map_err(anyhow::Error::msg)?;
    let signer = pushgate::provider::apns::auth::Signer::new("DEVTEAM001", "DEVKEY0001", &der)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok(signer.sign(now)?)
}

/// How much h2load sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// This many requests, as fast as it can.
    Requests(u64),
    /// `rps` requests per second in all for `secs` seconds.
    Paced { rps: u64, secs: u64 },
}

/// h2load's arguments: the same request as the gateway's, `connections` x
/// `streams`, one thread; `jwt` and `body` are the token and payload file.
pub fn h2load_args(t: &Target, load: Load, jwt: &str, body: &Path) -> Vec<String> {
    let mut a: Vec<String> = match load {
        Load::Requests(n) => vec!["-n".into(), n.to_string()],
        Load::Paced { rps, secs } => {
            // `--rps` is per connection.
            let each = rps.div_ceil(t.connections.max(1) as u64).max(1);
            vec![
                "-D".into(),
                secs.max(1).to_string(),
                "--rps".into(),
                each.to_string(),
            ]
        }
    };
    a.extend(["-c".into(), t.connections.to_string()]);
    a.extend(["-m".into(), t.streams.to_string(), "-t".into(), "1".into()]);
    a.extend(["-d".into(), body.display().to_string()]);
    for h in [
        format!("authorization: bearer {jwt}"),
        format!("apns-topic: {TOPIC}"),
        "apns-push-type: alert".into(),
        "content-type: application/json".into(),
    ] {
        a.extend(["-H".into(), h]);
    }
    a.push(format!("https://{}/3/device/{}", t.addr, dev_token()));
    a
}

/// The command line as the report shows it: `$JWT` for the token.
fn h2load_shown(t: &Target, load: Load, body: &Path) -> String {
    let shown: Vec<String> = h2load_args(t, load, "$JWT", body)
        .into_iter()
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect();
    let shown = shown
        .join(" ")
        .replace(&body.display().to_string(), "apns-body.json");
    format!("h2load {shown}")
}

/// Where the payload file h2load sends lives.
fn h2load_body_path(t: &Target) -> PathBuf {
    t.work_dir.join("apns-body.json")
}

/// Writes the payload file h2load sends and returns its path.
fn h2load_body(t: &Target) -> anyhow::Result<PathBuf> {
    let body = h2load_body_path(t);
    let payload = format!(r#"{{"aps":{{"alert":{{"title":"{TITLE}","body":"{BODY}"}}}}}}"#);
    std::fs::create_dir_all(&t.work_dir)?;
    std::fs::write(&body, payload)?;
    Ok(body)
}

/// h2load: fixed request, `connections` x `streams`, one thread.
pub async fn h2load(t: &Target) -> PeerResult {
    let load = Load::Requests(t.h2load_requests);
    let command = h2load_shown(t, load, &h2load_body_path(t));
    let run = async {
        let body = h2load_body(t)?;
        let jwt = dev_jwt(&t.root)?;
        let out = Command::new("h2load")
            .args(h2load_args(t, load, &jwt, &body))
            .output()
            .await
            .context("h2load not found: apt-get install nghttp2-client")?;
        parse_h2load(&String::from_utf8_lossy(&out.stdout))
    };
    PeerResult {
        name: "h2load",
        command,
        outcome: run.await.map_err(|e| format!("{e:#}")),
    }
}

/// h2load running in the background at a set pace (`Load::Paced`).
pub struct Paced {
    child: tokio::process::Child,
    secs: u64,
    pub command: String,
}

/// Starts h2load at `rps` requests per second for `secs` seconds.
pub fn h2load_paced(t: &Target, rps: u64, secs: u64) -> anyhow::Result<Paced> {
    let load = Load::Paced { rps, secs };
    let body = h2load_body(t)?;
    let jwt = dev_jwt(&t.root)?;
    let child = Command::new("h2load")
        .args(h2load_args(t, load, &jwt, &body))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("h2load not found: apt-get install nghttp2-client")?;
    Ok(Paced {
        child,
        secs,
        command: h2load_shown(t, load, &body),
    })
}

impl Paced {
    /// Waits for h2load's end (at most its duration and 30 s more) and
    /// reads what it sent.
    pub async fn finish(self) -> anyhow::Result<Measured> {
        let limit = Duration::from_secs(self.secs + 30);
        let out = tokio::time::timeout(limit, self.child.wait_with_output())
            .await
            .context("h2load did not end")??;
        parse_h2load(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Reads `finished in 1.23s, ...` and `requests: N total, .. S succeeded`.
pub fn parse_h2load(out: &str) -> anyhow::Result<Measured> {
    let secs = out
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(',').next())
        .and_then(|s| duration_secs(s.trim()));
    let counts = out.lines().find_map(|l| l.strip_prefix("requests: "));
    let field = |name: &str| {
        counts?
            .split(',')
            .find(|p| p.trim().ends_with(name))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    match (secs, field("total"), field("succeeded")) {
        (Some(_), Some(_), Some(0)) => bail!("no request succeeded: {}", out.trim()),
        (Some(secs), Some(requests), Some(ok)) => Ok(Measured { requests, ok, secs }),
        _ => {
            let lines: Vec<&str> = out
                .lines()
                .filter(|l| l.starts_with("finished") || l.starts_with("requests"))
                .collect();
            bail!("cannot read h2load's output: {:?}", lines)
        }
    }
}

/// `1.48s`, `162.94ms` or `950us` in seconds.
fn duration_secs(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else {
        (s.strip_suffix('s')?, 1.0)
    };
    Some(num.parse::<f64>().ok()? * scale)
}

/// @parse/node-apn through `loadtest/peers/node-apn.js` (npm ci on first use).
pub async fn node_apn(t: &Target) -> PeerResult {
    let peers = t.root.join("loadtest/peers");
    let run = async {
        if !peers.join("node_modules/@parse/node-apn").exists() {
            install(&peers, "npm", &["ci", "--no-audit", "--no-fund"]).await?;
        }
        driver(t, "node", &peers.join("node-apn.js")).await
    };
    PeerResult {
        name: "@parse/node-apn",
        command: driver_command(t, "node loadtest/peers/node-apn.js"),
        outcome: run.await.map_err(|e| format!("{e:#}")),
    }
}

/// aioapns through `loadtest/peers/aioapns_driver.py` in a venv (created on first use).
pub async fn aioapns(t: &Target) -> PeerResult {
    let peers = t.root.join("loadtest/peers");
    let python = peers.join(".venv/bin/python");
    let run = async {
        if !python.exists() {
            install(&peers, "python3", &["-m", "venv", ".venv"]).await?;
            let pip = peers.join(".venv/bin/pip");
            let pip = pip.to_string_lossy();
            install(&peers, &pip, &["install", "-q", "-r", "requirements.txt"]).await?;
        }
        let py = python.to_string_lossy().into_owned();
        driver(t, &py, &peers.join("aioapns_driver.py")).await
    };
    PeerResult {
        name: "aioapns",
        command: driver_command(
            t,
            "loadtest/peers/.venv/bin/python loadtest/peers/aioapns_driver.py",
        ),
        outcome: run.await.map_err(|e| format!("{e:#}")),
    }
}

fn driver_command(t: &Target, prog: &str) -> String {
    format!(
        "{prog} --addr {} --ca config/dev/ca.pem --key config/dev/apns-dev.p8 --requests {} --connections {} --concurrency {}",
        t.addr,
        t.requests,
        t.connections,
        t.connections * t.streams
    )
}

async fn install(dir: &Path, prog: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!(
        "loadtest: installing a peer client: {prog} {}",
        args.join(" ")
    );
    let out = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .with_context(|| format!("{prog} not found"))?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(())
}

async fn driver(t: &Target, prog: &str, script: &Path) -> anyhow::Result<Measured> {
    let ca = t.root.join("config/dev/ca.pem");
    let key = t.root.join("config/dev/apns-dev.p8");
    let run = Command::new(prog)
        .arg(script)
        .args(["--addr", &t.addr.to_string()])
        .arg("--ca")
        .arg(&ca)
        .arg("--key")
        .arg(&key)
        .args(["--requests", &t.requests.to_string()])
        .args(["--connections", &t.connections.to_string()])
        .args(["--concurrency", &(t.connections * t.streams).to_string()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .context("gave up after 10 minutes")?
        .with_context(|| format!("{prog} not found"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let Some(line) = line else {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("no result: {}", err.lines().last().unwrap_or("(no output)"));
    };
    let v: serde_json::Value = serde_json::from_str(line)?;
    if v["ok"].as_u64().unwrap_or(0) == 0 {
        bail!("no request succeeded; first error: {}", v["first_error"]);
    }
    Ok(Measured {
        requests: v["requests"].as_u64().unwrap_or(0),
        ok: v["ok"].as_u64().unwrap_or(0),
        secs: v["secs"].as_f64().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2load_output() {
        let out = "starting benchmark...\n\nfinished in 1.48s, 67520.11 req/s, 4.12MB/s\n\
                   requests: 100000 total, 100000 started, 100000 done, 99901 succeeded, 99 failed, 99 errored, 0 timeout\n";
        let m = parse_h2load(out).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((m.requests, m.ok), (100_000, 99_901));
        assert!((m.secs - 1.48).abs() < 1e-9);
        assert!(parse_h2load("nothing").is_err());
        let fast = out.replace("1.48s", "162.94ms");
        let m = parse_h2load(&fast).unwrap_or_else(|e| unreachable!("{e}"));
        assert!((m.secs - 0.16294).abs() < 1e-9);
    }

    fn target(connections: usize) -> Target {
        Target {
            addr: "127.0.0.1:2197"
                .parse()
                .unwrap_or_else(|e| unreachable!("{e}")),
            root: PathBuf::from("."),
            connections,
            streams: 100,
            requests: 0,
            h2load_requests: 0,
            work_dir: PathBuf::from("/tmp"),
        }
    }

    /// The value after `flag`, if present.
    fn after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1).map(String::as_str)
    }

    #[test]
    fn paced_h2load_splits_the_rate_over_its_connections_and_runs_for_a_time() {
        let body = Path::new("/tmp/body.json");
        let paced = h2load_args(
            &target(4),
            Load::Paced {
                rps: 30_001,
                secs: 4,
            },
            "J",
            body,
        );
        // `--rps` is per connection: 4 x 7,501 covers the 30,001 asked.
        assert_eq!(after(&paced, "--rps"), Some("7501"));
        assert_eq!(after(&paced, "-D"), Some("4"));
        assert_eq!(after(&paced, "-c"), Some("4"));
        assert_eq!(after(&paced, "-n"), None);
        assert!(paced.contains(&"authorization: bearer J".to_string()));
        let fixed = h2load_args(&target(1), Load::Requests(500), "J", body);
        assert_eq!(after(&fixed, "-n"), Some("500"));
        assert_eq!(after(&fixed, "--rps"), None);
        // A run shorter than a second still paces for one.
        let short = h2load_args(&target(1), Load::Paced { rps: 10, secs: 0 }, "J", body);
        assert_eq!(after(&short, "-D"), Some("1"));
    }
}
