//! Stopping a campaign midway: the control message reaches every replica,
//! the campaign's remaining recipients get CampaignStopped and are not
//! sent, a stop survives a restart, resume undoes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod amqp_support;
mod policy_support;

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use amqp_support::{Collected, Harness, Scripted};
use policy_support::{amqp_toml, apps_toml, collect_until, config_for, dev_dir, fcm_job, Daemon};
use pushgate::ingest::control::Publisher;
use pushgate::outcome::{Code, Status};
use pushgate::policy::observer::NoopObserver;
use pushgate::sim::fcm::{self, FcmSimOptions};

fn scripted_config(h: &Harness) -> pushgate::config::Config {
    // No provider is reached: Scripted stands in (AMQP mechanics only).
    let toml = "[apps.shop.webpush]\nvapid_key_file = \"vapid-dev.p8\"\nsubject = \"mailto:t@example.com\"\n";
    config_for(h, toml)
}

fn ok_job(id: &str, campaign: &str, n: usize) -> serde_json::Value {
    fcm_job(id, campaign, &format!("ok-{id}"), 0..n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_survives_restarts_and_resume_undoes_it() {
    let mut h = Harness::new(|_, _| {}).await;
    let campaign = format!("spring-{}", h.prefix);
    // Stopped while no replica runs: the stream keeps it.
    let publisher = Publisher::connect(&h.amqp).await.unwrap();
    publisher.stop(&campaign).await.unwrap();

    let scripted = Arc::new(Scripted::default());
    for round in 0..2 {
        let d = Daemon::start_with(
            scripted_config(&h),
            Arc::clone(&scripted),
            Arc::new(NoopObserver),
        );
        d.ready().await;
        assert!(d.policy.stops.is_stopped(&campaign), "replayed at start");
        h.publish_job(&ok_job(&format!("j{round}"), &campaign, 5))
            .await;
        let got = h.collect(5, Duration::from_secs(20)).await;
        let finals = got.finals();
        assert_eq!(finals.len(), 5);
        assert!(finals
            .iter()
            .all(|e| e.status == Status::Failed && e.code == Some(Code::CampaignStopped)));
        assert_eq!(d.policy.snapshot().campaigns_stopped, 1);
        d.shutdown().await;
    }
    assert_eq!(
        scripted.calls.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing sent"
    );

    let d = Daemon::start_with(
        scripted_config(&h),
        Arc::clone(&scripted),
        Arc::new(NoopObserver),
    );
    d.ready().await;
    publisher.resume(&campaign).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while d.policy.stops.is_stopped(&campaign) {
        assert!(tokio::time::Instant::now() < deadline, "resume not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.publish_job(&ok_job("j-after", &campaign, 5)).await;
    let got = h.collect(5, Duration::from_secs(20)).await;
    assert!(got.finals().iter().all(|e| e.status == Status::Delivered));
    d.shutdown().await;
    publisher.close().await;
    h.cleanup().await;
}

/// A `pushgate run` child process and the lines of its JSON log (stderr).
struct Replica {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    fn spawn(config: &std::path::Path) -> Replica {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("PUSHGATE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pushgate run");
        // The daemon logs to stderr, one flat JSON object per line.
        let stdout = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Replica { child, log }
    }

    /// The time of the first log line whose message starts with `prefix`
    /// (and whose `campaign` field is `campaign`, when given).
    fn logged(&self, prefix: &str, campaign: Option<&str>) -> Option<SystemTime> {
        let log = self.log.lock().unwrap();
        log.iter().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let fields = &v;
            let msg = fields["message"].as_str()?;
            let same = campaign.is_none_or(|c| fields["campaign"].as_str() == Some(c));
            (msg.starts_with(prefix) && same)
                .then(|| humantime::parse_rfc3339(v["timestamp"].as_str()?).ok())
                .flatten()
        })
    }

    async fn wait_for(&self, prefix: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.logged(prefix, None).is_none() {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "no {prefix:?} in the log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A failing test must not leave replicas running.
impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const JOBS: usize = 20;
const PER_JOB: usize = 1000;
const IN_FLIGHT: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_stop_a_20000_recipient_campaign_within_a_second() {
    let sim = fcm::start(
        "127.0.0.1:0".parse().unwrap(),
        FcmSimOptions {
            recent_requests: 2 * JOBS * PER_JOB,
            ..FcmSimOptions::default()
        },
    )
    .await
    .unwrap();
    let mut h = Harness::new(|amqp, _| {
        amqp.inputs[0].prefetch = 2;
    })
    .await;
    let dir = std::env::temp_dir().join(format!("pushgate-{}", h.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("replica.toml");
    let toml = format!(
        "[log]\nformat = \"json\"\nlevel = \"info\"\n[admin]\nlisten = \"off\"\n[daemon]\nmax_in_flight = {IN_FLIGHT}\n\
         [throttle.fcm]\nrate_per_second = 1000\nburst = 50\n[throttle.device]\nper_minute = 0\n{}{}",
        apps_toml(None, Some(sim.addr), &dev_dir().join("apns-dev.p8")),
        amqp_toml(&h.amqp, 2)
    );
    std::fs::write(&config, toml).unwrap();
    let replicas = [Replica::spawn(&config), Replica::spawn(&config)];
    for r in &replicas {
        r.wait_for("consuming").await;
    }

    let campaign = format!("stop-{}", h.prefix);
    for j in 0..JOBS {
        let range = j * PER_JOB..(j + 1) * PER_JOB;
        h.publish_job(&fcm_job(&format!("job-{j:02}"), &campaign, "device", range))
            .await;
    }
    let mut out = Collected::default();
    assert!(
        collect_until(&mut h, &mut out, Duration::from_secs(60), |c| !c
            .finals()
            .is_empty())
        .await
    );

    // The operator's command.
    let issued = SystemTime::now();
    let (c, path) = (campaign.clone(), config.clone());
    let cli = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["campaign", "stop", &c, "--config"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let confirmed = SystemTime::now();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );

    let total = JOBS * PER_JOB;
    let all = collect_until(&mut h, &mut out, Duration::from_secs(180), |c| {
        c.finals().len() >= total
    })
    .await;
    assert!(all, "{} of {total} final results", out.finals().len());

    // Every recipient exactly one result: delivered before the stop, or CampaignStopped.
    let mut per: HashMap<(String, String), usize> = HashMap::new();
    let mut delivered: HashSet<String> = HashSet::new();
    let mut stopped = 0;
    for e in out.finals() {
        *per.entry((e.job_id.clone(), e.recipient_id.clone().unwrap()))
            .or_default() += 1;
        match (e.status, e.code) {
            (Status::Delivered, None) => {
                delivered.insert(e.token.clone().unwrap());
            }
            (Status::Failed, Some(Code::CampaignStopped)) => stopped += 1,
            other => panic!("unexpected result {other:?}"),
        }
    }
    assert_eq!(per.len(), total);
    assert!(per.values().all(|n| *n == 1), "one result each");
    assert!(
        !delivered.is_empty() && stopped > 0,
        "stopped midway: {} delivered, {stopped} stopped",
        delivered.len()
    );

    // What the simulator received matches the delivered results, once each.
    let sends: Vec<(String, SystemTime)> = sim
        .stats
        .recent()
        .into_iter()
        .filter(|r| r.path.ends_with(":send") && r.status == 200)
        .map(|r| {
            (
                r.json()["message"]["token"].as_str().unwrap().to_owned(),
                r.at,
            )
        })
        .collect();
    let sent: HashSet<&String> = sends.iter().map(|(t, _)| t).collect();
    assert_eq!(sends.len(), sent.len(), "no token sent twice");
    assert_eq!(sent.len(), delivered.len());
    assert!(sends.iter().all(|(t, _)| delivered.contains(t)));

    // Both replicas saw the stop within a second of the command.
    let seen: Vec<SystemTime> = replicas
        .iter()
        .map(|r| {
            r.logged("campaign stopped", Some(&campaign))
                .expect("the replica logged the stop")
        })
        .collect();
    for t in &seen {
        assert!(*t >= issued, "seen before it was issued?");
        let late = t.duration_since(confirmed).unwrap_or_default();
        assert!(
            late <= Duration::from_secs(1),
            "a replica saw the stop {late:?} after the broker confirmed it"
        );
    }
    // Nothing was sent after the stop was seen: only requests already past
    // their last check (each holds one of a replica's in-flight permits)
    // can reach the simulator afterwards.
    let last_seen = seen.iter().max().copied().unwrap();
    let after = sends.iter().filter(|(_, at)| *at > last_seen).count();
    let lag: Vec<i128> = seen
        .iter()
        .map(|t| match t.duration_since(confirmed) {
            Ok(d) => d.as_millis() as i128,
            Err(e) => -(e.duration().as_millis() as i128),
        })
        .collect();
    eprintln!(
        "{} delivered, {stopped} stopped; replicas saw the stop at {lag:?} ms from the confirm; {after} sends after",
        delivered.len()
    );
    assert!(
        after <= 2 * IN_FLIGHT,
        "{after} sends reached the simulator after both replicas saw the stop"
    );

    for r in replicas {
        r.terminate();
    }
    h.cleanup().await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
