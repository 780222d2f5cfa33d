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

/// h2load: fixed request, `connections` x `streams`, one thread.
pub async fn h2load(t: &Target) -> PeerResult {
    let body = t.work_dir.join("apns-body.json");
    let payload = format!(r#"{{"aps":{{"alert":{{"title":"{TITLE}","body":"{BODY}"}}}}}}"#);
    let args = |jwt: &str| -> Vec<String> {
        let mut a: Vec<String> = [
            "-n",
            &t.h2load_requests.to_string(),
            "-c",
            &t.connections.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
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
    };
    let shown: Vec<String> = args("$JWT")
        .into_iter()
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect();
    let shown = shown
        .join(" ")
        .replace(&body.display().to_string(), "apns-body.json");
    let command = format!("h2load {shown}");
    let run = async {
        std::fs::write(&body, payload)?;
        let jwt = dev_jwt(&t.root)?;
        let out = Command::new("h2load")
            .args(args(&jwt))
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
}
