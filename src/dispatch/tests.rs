//! Unit tests of the dispatcher with a scripted provider.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::config::RetryConfig;
use crate::job::DeviceToken;

/// Outcome by token prefix; counts concurrent deliveries.
struct Scripted {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Deliver for Scripted {
    async fn deliver(&self, job: &Arc<Job>, recipient: usize, _attempt: u32) -> Outcome {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        let token = job.recipients[recipient].token.as_ref().unwrap().as_str();
        if token.starts_with("ok") {
            Outcome::delivered(200, Some("id".into()))
        } else if token.starts_with("gone") {
            Outcome::local(Code::NotRegistered, "Unregistered")
        } else {
            let mut o = Outcome::local(Code::ProviderUnavailable, "ServiceUnavailable");
            if token.starts_with("slow") {
                o.retry_after = Some(Duration::from_secs(3600));
            }
            o
        }
    }
}

fn job(tokens: &[&str]) -> Arc<Job> {
    let recipients: Vec<serde_json::Value> = tokens
        .iter()
        .map(|t| serde_json::json!({"platform": "fcm", "token": t}))
        .collect();
    Arc::new(
        serde_json::from_value(serde_json::json!({"app": "shop", "recipients": recipients}))
            .unwrap(),
    )
}

fn dispatcher(max_attempts: u32) -> (Dispatcher<Scripted>, Arc<Scripted>) {
    let d = Arc::new(Scripted {
        now: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
    });
    let policy = RetryPolicy::new(&RetryConfig {
        exchange: "x".into(),
        queue_prefix: "q.".into(),
        delays: vec![Duration::from_millis(200), Duration::from_secs(10)],
        max_attempts,
        base: Duration::from_millis(200),
        jitter: 0.0,
    });
    (Dispatcher::new(Arc::clone(&d), Arc::new(policy)), d)
}

fn run(job: Arc<Job>, attempt: u32, expires: Option<SystemTime>) -> JobRun {
    JobRun {
        job,
        job_id: "j1".into(),
        attempt,
        first_received: SystemTime::now(),
        expires,
    }
}

#[tokio::test]
async fn classifies_each_recipient_within_the_bound() {
    let (d, scripted) = dispatcher(3);
    let tokens: Vec<String> = (0..50)
        .map(|i| match i % 3 {
            0 => format!("ok{i}"),
            1 => format!("gone{i}"),
            _ => format!("flaky{i}"),
        })
        .collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let permits = Semaphore::new(4);
    let s = d.dispatch(&run(job(&refs), 1, None), &permits).await;
    assert_eq!(s.entries.len(), 50);
    assert!(scripted.peak.load(Ordering::SeqCst) <= 4);
    assert!(
        scripted.peak.load(Ordering::SeqCst) >= 2,
        "fan-out is concurrent"
    );
    for (i, e) in s.entries.iter().enumerate() {
        let want = match i % 3 {
            0 => (Status::Delivered, None),
            1 => (Status::Failed, Some(Code::NotRegistered)),
            _ => (Status::Retrying, Some(Code::ProviderUnavailable)),
        };
        assert_eq!((e.status, e.code), want, "entry {i}");
        assert_eq!(e.token.as_deref(), Some(tokens[i].as_str()));
    }
    let retried: Vec<usize> = (0..50).filter(|i| i % 3 == 2).collect();
    assert_eq!(s.retries.get(&0), Some(&retried));
    assert!(s.exhausted.is_empty());
}

#[tokio::test]
async fn last_attempt_is_exhausted_and_retry_after_picks_a_longer_queue() {
    let (d, _) = dispatcher(2);
    let permits = Semaphore::new(8);
    let s = d
        .dispatch(&run(job(&["flaky", "slow"]), 1, None), &permits)
        .await;
    assert_eq!(s.retries.get(&0), Some(&vec![0]));
    assert_eq!(s.retries.get(&1), Some(&vec![1]));
    let s = d.dispatch(&run(job(&["flaky"]), 2, None), &permits).await;
    assert_eq!(s.exhausted, vec![0]);
    assert_eq!(s.entries[0].status, Status::Failed);
    assert_eq!(s.entries[0].code, Some(Code::ProviderUnavailable));
    assert_eq!(s.entries[0].attempt, 2);
}

#[tokio::test]
async fn expiry_turns_retries_and_late_sends_into_expired() {
    let (d, scripted) = dispatcher(5);
    let permits = Semaphore::new(8);
    let soon = SystemTime::now() + Duration::from_millis(50);
    let s = d
        .dispatch(&run(job(&["flaky"]), 1, Some(soon)), &permits)
        .await;
    assert_eq!(s.entries[0].code, Some(Code::Expired));
    assert_eq!(s.entries[0].status, Status::Failed);
    assert!(s.retries.is_empty());

    let past = SystemTime::now() - Duration::from_secs(1);
    scripted.peak.store(0, Ordering::SeqCst);
    let s = d
        .dispatch(&run(job(&["ok"]), 2, Some(past)), &permits)
        .await;
    assert_eq!(s.entries[0].code, Some(Code::Expired));
    assert_eq!(
        scripted.peak.load(Ordering::SeqCst),
        0,
        "no delivery once expired"
    );
}

#[test]
fn job_checks() {
    let mut apps = BTreeMap::new();
    apps.insert(
        "shop".to_owned(),
        Arc::new(AppConfig {
            name: "shop".into(),
            apns: None,
            fcm: None,
            webpush: None,
        }),
    );
    assert!(check_job(&job(&["a"]), &apps).is_ok());
    let mut j = (*job(&["a"])).clone();
    j.app = "other".into();
    assert_eq!(check_job(&j, &apps).unwrap_err().0, Code::UnknownApp);
    j.app = "shop".into();
    j.recipients = Vec::new();
    assert_eq!(check_job(&j, &apps).unwrap_err().0, Code::InvalidJob);
    let big: Vec<String> = (0..1001).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = big.iter().map(String::as_str).collect();
    assert_eq!(
        check_job(&job(&refs), &apps).unwrap_err().0,
        Code::InvalidJob
    );
    let mut j = (*job(&["t"])).clone();
    j.recipients[0].token = Some(DeviceToken(String::new()));
    assert_eq!(j.check_recipient(0).unwrap_err().0, Code::BadDeviceToken);
}

/// Counts deliveries started; each waits on a timer (it does not wake
/// itself, as a request waiting for its answer does not).
struct Counting {
    started: AtomicUsize,
}

impl Deliver for Counting {
    async fn deliver(&self, _job: &Arc<Job>, _recipient: usize, _attempt: u32) -> Outcome {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1)).await;
        Outcome::delivered(200, Some("id".into()))
    }
}

/// A fan-out job's recipients start in steps with a scheduler turn between
/// them: another task (a connection with the first requests to write) runs
/// before the last recipients are started, and every recipient settles.
#[tokio::test]
async fn large_jobs_start_in_steps() {
    let counting = Arc::new(Counting {
        started: AtomicUsize::new(0),
    });
    let (plain, _) = dispatcher(3);
    let d = Dispatcher::new(
        Arc::clone(&counting),
        Arc::new(plain.retry_policy().clone()),
    );
    let tokens: Vec<String> = (0..200).map(|i| format!("ok{i}")).collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let probe = {
        let c = Arc::clone(&counting);
        tokio::spawn(async move { c.started.load(Ordering::SeqCst) })
    };
    let permits = Semaphore::new(1000);
    let s = d.dispatch(&run(job(&refs), 1, None), &permits).await;
    assert_eq!(s.entries.len(), 200);
    assert!(s.entries.iter().all(|e| e.status == Status::Delivered));
    assert_eq!(counting.started.load(Ordering::SeqCst), 200);
    let seen = probe.await.unwrap();
    assert!(
        (1..=STEP).contains(&seen),
        "the other task ran after {seen} of 200 had started (step {STEP})"
    );
}
