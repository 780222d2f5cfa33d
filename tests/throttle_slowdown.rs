//! Adaptive slowdown against the FCM simulator's project quota: after a 429
//! QUOTA_EXCEEDED with Retry-After, pushgate's request rate to it drops for
//! that period, then recovers, and every notification is delivered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod amqp_support;
mod policy_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use amqp_support::{Collected, Harness};
use policy_support::{apps_toml, collect_until, config_for, dev_dir, fcm_job, Daemon, Recorder};
use pushgate::job::Platform;
use pushgate::outcome::{Code, Status};
use pushgate::sim::fcm::{self, FcmSimOptions};

const RATE: u32 = 400;
const FACTOR: f64 = 0.1;
const IN_FLIGHT: usize = 16;
const RECIPIENTS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_answers_slow_the_app_down_and_everything_is_delivered() {
    let sim = fcm::start(
        "127.0.0.1:0".parse().unwrap(),
        FcmSimOptions {
            quota_per_minute: Some(100),
            quota_window: Duration::from_secs(2),
            recent_requests: 20_000,
            ..FcmSimOptions::default()
        },
    )
    .await
    .unwrap();
    let mut h = Harness::new(|amqp, daemon| {
        amqp.retry.delays = [500, 1000, 2000].map(Duration::from_millis).to_vec();
        amqp.retry.base = Duration::from_millis(500);
        amqp.retry.max_attempts = 30;
        daemon.max_in_flight = IN_FLIGHT;
    })
    .await;
    let toml = format!(
        "{}\n[throttle]\nslowdown_factor = {FACTOR}\nslowdown_default = \"1s\"\n\
         [throttle.fcm]\nrate_per_second = {RATE}\nburst = 20\n[throttle.device]\nper_minute = 0\nreclaim_every = \"200ms\"\n",
        apps_toml(None, Some(sim.addr), &dev_dir().join("apns-dev.p8"))
    );
    let recorder = Arc::new(Recorder::default());
    let daemon = Daemon::start(config_for(&h, &toml), recorder.clone());
    daemon.ready().await;
    h.publish_job(&fcm_job("quota-job", "q", "device", 0..RECIPIENTS))
        .await;

    let mut out = Collected::default();
    let all = collect_until(&mut h, &mut out, Duration::from_secs(120), |c| {
        c.finals().len() >= RECIPIENTS
    })
    .await;
    assert!(all, "only {} of {RECIPIENTS} final", out.finals().len());
    let finals = out.finals();
    assert!(
        finals.iter().all(|e| e.status == Status::Delivered),
        "every notification delivered: {:?}",
        finals.iter().find(|e| e.status != Status::Delivered)
    );
    let retried = out
        .results
        .iter()
        .filter(|e| e.code == Some(Code::QuotaExceeded))
        .count();
    assert!(retried > 0, "the quota was hit");

    // The rate after the slowdown began (as pushgate saw the first 429):
    // at most the slow rate for the Retry-After second, plus the slow
    // bucket's burst and the requests already in flight.
    let slowdowns = recorder.slowdowns.lock().unwrap().clone();
    let began = slowdowns
        .iter()
        .find(|(_, p, on)| *p == Platform::Fcm && *on)
        .map(|(t, ..)| *t)
        .expect("a slowdown began");
    let sends = sim.stats.recent();
    let sends: Vec<SystemTime> = sends
        .iter()
        .filter(|r| r.path.ends_with(":send"))
        .map(|r| r.at)
        .collect();
    let window = |from: SystemTime| {
        sends
            .iter()
            .filter(|t| **t >= from && **t < from + Duration::from_secs(1))
            .count()
    };
    let during = window(began);
    let slow_bound = (f64::from(RATE) * FACTOR) as usize + 2 + IN_FLIGHT + 1;
    assert!(
        during <= slow_bound,
        "{during} requests in the second after the slowdown began (bound {slow_bound}, full rate {RATE})"
    );
    // And it ends (the upkeep reports it even when no send notices).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = recorder.slowdowns.lock().unwrap().clone();
        if s.iter().any(|(t, _, on)| !on && *t > began) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slowdown never ended: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(daemon.policy.snapshot().slowed.is_empty());

    daemon.shutdown().await;
    h.cleanup().await;
    sim.shutdown().await;
}
