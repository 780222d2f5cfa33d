//! Throttle tests on paused tokio time (waits, shutdown) through [`Throttle::pass`].

use std::sync::Mutex;

use super::*;
use crate::config::policy::DeviceThrottle;
use crate::config::Rate;
use crate::policy::observer::NoopObserver;

#[derive(Default)]
struct Recorder {
    waits: Mutex<Vec<(Scope, Duration)>>,
    slowdowns: Mutex<Vec<(String, Platform, bool)>>,
}

impl Observer for Recorder {
    fn throttle_wait(&self, scope: Scope, waited: Duration) {
        self.waits.lock().unwrap().push((scope, waited));
    }

    fn slowdown(&self, app: &str, platform: Platform, active: bool) {
        self.slowdowns
            .lock()
            .unwrap()
            .push((app.to_owned(), platform, active));
    }
}

fn config(per_second: u32, burst: u32, device_per_minute: u32) -> ThrottleConfig {
    let rate = Rate { per_second, burst };
    ThrottleConfig {
        apns: rate,
        fcm: rate,
        webpush: rate,
        device: DeviceThrottle {
            per_minute: device_per_minute,
            burst: 1,
            max_wait: Duration::from_secs(2),
            ..ThrottleConfig::default().device
        },
        ..ThrottleConfig::default()
    }
}

fn throttle(cfg: &ThrottleConfig, observer: Arc<dyn Observer>) -> Arc<Throttle> {
    Arc::new(Throttle::new(cfg, ["shop"], TokioClock::new(), observer))
}

fn ticket(device: u64) -> Ticket<'static> {
    Ticket {
        app: "shop",
        platform: Platform::Fcm,
        campaign: None,
        device,
    }
}

#[tokio::test(start_paused = true)]
async fn app_rate_and_burst_hold_with_concurrent_waiters() {
    let rec = Arc::new(Recorder::default());
    let t = throttle(&config(100, 10, 0), rec.clone());
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..110u64 {
        let t = Arc::clone(&t);
        tasks.spawn(async move {
            let pass = t.pass(&ticket(i), &Shutdown::never()).await;
            (pass, tokio::time::Instant::now())
        });
    }
    let mut at = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (pass, when) = r.unwrap();
        assert_eq!(pass, Pass::Go);
        at.push(when - start);
    }
    at.sort();
    assert_eq!(at.iter().filter(|d| d.is_zero()).count(), 10, "the burst");
    // Then one every 10 ms: the 110th at 1 s.
    assert_eq!(at[109], Duration::from_secs(1));
    assert_eq!(at[10], Duration::from_millis(10));
    let waits = rec.waits.lock().unwrap();
    assert_eq!(waits.iter().filter(|(s, _)| *s == Scope::App).count(), 110);
    assert!(
        waits.iter().all(|(s, _)| *s == Scope::App),
        "no device or campaign limit here"
    );
}

#[tokio::test(start_paused = true)]
async fn the_campaign_bucket_is_shared_by_its_jobs_and_slower_wins() {
    let t = throttle(&config(1000, 10, 0), Arc::new(NoopObserver));
    let spec = JobThrottle {
        limit: 20,
        per_seconds: 2,
    };
    let start = tokio::time::Instant::now();
    for i in 0..30u64 {
        let tk = Ticket {
            campaign: Some(("c1", spec)),
            ..ticket(i)
        };
        assert_eq!(t.pass(&tk, &Shutdown::never()).await, Pass::Go);
    }
    // 10/s with a burst of 10: 10 at once, then 20 more over 2 s.
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let other = Ticket {
        campaign: Some(("c2", spec)),
        ..ticket(99)
    };
    let at = tokio::time::Instant::now();
    assert_eq!(t.pass(&other, &Shutdown::never()).await, Pass::Go);
    assert_eq!(
        at.elapsed(),
        Duration::ZERO,
        "another campaign has its own bucket"
    );
}

#[tokio::test(start_paused = true)]
async fn waits_end_at_once_on_shutdown() {
    let t = throttle(&config(1, 1, 0), Arc::new(NoopObserver));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let shutdown = Shutdown::new(rx);
    assert_eq!(t.pass(&ticket(1), &shutdown).await, Pass::Go);
    let waiting: Vec<_> = (0..3u64)
        .map(|i| {
            let (t, s) = (Arc::clone(&t), shutdown.clone());
            tokio::spawn(async move { t.pass(&ticket(i), &s).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = tokio::time::Instant::now();
    tx.send(true).unwrap();
    for w in waiting {
        assert_eq!(w.await.unwrap(), Pass::Stopped);
    }
    assert_eq!(at.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn devices_wait_briefly_and_defer_long_waits_and_holds() {
    let rec = Arc::new(Recorder::default());
    // 30 per minute, burst 1: a second send to a device waits 2 s (= max_wait).
    let t = throttle(&config(0, 1, 30), rec.clone());
    let never = Shutdown::never();
    assert_eq!(t.pass(&ticket(5), &never).await, Pass::Go);
    let at = tokio::time::Instant::now();
    assert_eq!(t.pass(&ticket(5), &never).await, Pass::Go);
    assert_eq!(at.elapsed(), Duration::from_secs(2));
    assert_eq!(t.pass(&ticket(5), &never).await, Pass::Go);
    assert_eq!(at.elapsed(), Duration::from_secs(4), "one every 2 s");
    t.hold_device(7, Duration::from_secs(60));
    assert_eq!(
        t.pass(&ticket(7), &never).await,
        Pass::Defer(Duration::from_secs(60))
    );
    assert_eq!(t.device_keys(), 1, "held devices take no bucket");
    tokio::time::advance(Duration::from_secs(120)).await;
    assert_eq!(t.tick(), 0, "idle keys reclaimed");
    assert_eq!(t.pass(&ticket(7), &never).await, Pass::Go);
    let waits = rec.waits.lock().unwrap();
    assert!(waits.contains(&(Scope::Device, Duration::from_secs(2))));
}

#[tokio::test(start_paused = true)]
async fn slowdown_is_reported_then_recovers() {
    let rec = Arc::new(Recorder::default());
    let t = throttle(&config(100, 1, 0), rec.clone());
    let never = Shutdown::never();
    t.slow_down("shop", Platform::Fcm, Duration::from_secs(1));
    t.slow_down("unknown", Platform::Fcm, Duration::from_secs(1));
    assert!(t.is_slowed("shop", Platform::Fcm));
    assert!(!t.is_slowed("shop", Platform::Apns), "per platform");
    assert_eq!(t.slowed(), vec![("shop".to_owned(), Platform::Fcm)]);
    let start = tokio::time::Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(1) {
        assert_eq!(t.pass(&ticket(n), &never).await, Pass::Go);
        n += 1;
    }
    // 10/s while slowed (factor 0.1): about 10 in the second, not 100.
    assert!((10..=12).contains(&n), "{n} sends while slowed");
    let at = tokio::time::Instant::now();
    for i in 0..100 {
        assert_eq!(t.pass(&ticket(1000 + i), &never).await, Pass::Go);
    }
    assert!(
        at.elapsed() <= Duration::from_secs(1),
        "recovered: {:?}",
        at.elapsed()
    );
    assert!(!t.is_slowed("shop", Platform::Fcm));
    let s = rec.slowdowns.lock().unwrap().clone();
    assert_eq!(
        s,
        vec![
            ("shop".to_owned(), Platform::Fcm, true),
            ("shop".to_owned(), Platform::Fcm, false)
        ]
    );
}
