//! The dispatcher under a policy: stops, duplicates, pauses, the guard,
//! throttle waits outside the in-flight permit, shutdown during a wait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::config::{PolicyConfig, Rate, RetryConfig, ThrottleConfig};
use crate::policy::observer::NoopObserver;

/// Answers by token prefix: `ok` 200, `cred` 403 InvalidCredentials, `bad`
/// 400 BadDeviceToken, `gone` 410 NotRegistered.
#[derive(Default)]
struct Answers {
    calls: AtomicUsize,
    tokens: std::sync::Mutex<Vec<String>>,
}

impl Deliver for Answers {
    async fn deliver(&self, job: &Arc<Job>, recipient: usize, _attempt: u32) -> Outcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let token = job.recipients[recipient].token.as_ref().unwrap().as_str();
        self.tokens.lock().unwrap().push(token.to_owned());
        let (code, status) = match &token[..token.find('-').unwrap_or(token.len())] {
            "ok" => (None, 200),
            "cred" => (Some(Code::InvalidCredentials), 403),
            "bad" => (Some(Code::BadDeviceToken), 400),
            _ => (Some(Code::NotRegistered), 410),
        };
        Outcome {
            code,
            provider_status: Some(status),
            ..Outcome::default()
        }
    }
}

fn policy(per_second: u32, guard_min_sends: u32) -> Arc<Policy> {
    let rate = Rate {
        per_second,
        burst: 1,
    };
    let cfg = PolicyConfig {
        throttle: ThrottleConfig {
            apns: rate,
            fcm: rate,
            webpush: rate,
            ..ThrottleConfig::unlimited()
        },
        guard_min_sends,
        probe_interval: Duration::from_secs(30),
        ..PolicyConfig::default()
    };
    Arc::new(Policy::new(
        &cfg,
        Duration::from_secs(3600),
        ["shop"],
        Arc::new(NoopObserver),
    ))
}

fn dispatcher(policy: Arc<Policy>, shutdown: Shutdown) -> (Dispatcher<Answers>, Arc<Answers>) {
    let answers = Arc::new(Answers::default());
    let retry = RetryPolicy::new(&RetryConfig {
        exchange: "x".into(),
        queue_prefix: "q.".into(),
        delays: vec![Duration::from_secs(1), Duration::from_secs(60)],
        max_attempts: 5,
        base: Duration::from_secs(1),
        jitter: 0.0,
    });
    let d = Dispatcher::new(Arc::clone(&answers), Arc::new(retry)).with_policy(policy, shutdown);
    (d, answers)
}

fn run(id: &str, campaign: Option<&str>, tokens: &[&str], attempt: u32) -> JobRun {
    let recipients: Vec<serde_json::Value> = tokens
        .iter()
        .map(|t| serde_json::json!({"platform": "fcm", "token": t}))
        .collect();
    let mut job = serde_json::json!({"app": "shop", "recipients": recipients});
    if let Some(c) = campaign {
        job["campaign"] = c.into();
    }
    JobRun {
        job: Arc::new(serde_json::from_value(job).unwrap()),
        job_id: id.into(),
        attempt,
        first_received: SystemTime::now(),
        expires: None,
    }
}

fn codes(s: &Settled) -> Vec<(Status, Option<Code>)> {
    s.entries.iter().map(|e| (e.status, e.code)).collect()
}

#[tokio::test]
async fn stopped_campaigns_and_duplicate_tokens_are_not_sent() {
    let (d, answers) = dispatcher(policy(0, 50), Shutdown::never());
    let permits = Semaphore::new(8);
    let s = d
        .dispatch(
            &run("j1", Some("c"), &["ok-1", "ok-2", "ok-1"], 1),
            &permits,
        )
        .await;
    let dup = (Status::Failed, Some(Code::DuplicatePlatformId));
    assert_eq!(
        codes(&s),
        vec![(Status::Delivered, None), (Status::Delivered, None), dup]
    );
    // A retry of j1 may send ok-2 again; another job of the campaign may not.
    let s = d
        .dispatch(&run("j1", Some("c"), &["ok-2"], 2), &permits)
        .await;
    assert_eq!(codes(&s), vec![(Status::Delivered, None)]);
    let s = d
        .dispatch(&run("j2", Some("c"), &["ok-2", "ok-3"], 1), &permits)
        .await;
    assert_eq!(codes(&s), vec![dup, (Status::Delivered, None)]);
    d.policy().stops.stop("c", SystemTime::now(), false);
    let s = d
        .dispatch(&run("j3", Some("c"), &["ok-4"], 1), &permits)
        .await;
    assert_eq!(
        codes(&s),
        vec![(Status::Failed, Some(Code::CampaignStopped))]
    );
    assert_eq!(answers.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_credentials_answer_pauses_and_defers_without_counting_the_attempt() {
    let (d, answers) = dispatcher(policy(0, 50), Shutdown::never());
    let permits = Semaphore::new(1);
    let s = d
        .dispatch(&run("j", None, &["cred-1", "ok-1", "ok-2"], 3), &permits)
        .await;
    // The 403 paused the app's FCM: nothing else was sent, all deferred to
    // the 60 s queue (at least the probe interval) with the same attempt.
    assert_eq!(answers.calls.load(Ordering::SeqCst), 1);
    assert!(s
        .entries
        .iter()
        .all(|e| e.status == Status::Retrying && e.attempt == 3));
    assert!(s
        .entries
        .iter()
        .all(|e| e.code == Some(Code::InvalidCredentials)));
    assert_eq!(s.deferred.get(&1), Some(&vec![0, 1, 2]));
    assert!(s.retries.is_empty() && s.exhausted.is_empty());
    assert!(d.policy().credentials_alert("shop", Platform::Fcm));
    // After the probe interval, one probe goes out and resumes sending.
    tokio::time::advance(Duration::from_secs(30)).await;
    let s = d
        .dispatch(&run("j", None, &["ok-1", "ok-2"], 3), &permits)
        .await;
    assert_eq!(codes(&s), vec![(Status::Delivered, None); 2]);
    assert!(!d.policy().credentials_alert("shop", Platform::Fcm));
}

#[tokio::test(start_paused = true)]
async fn the_guard_defers_bad_token_answers_and_holds_their_feedback() {
    let (d, _) = dispatcher(policy(0, 4), Shutdown::never());
    let permits = Semaphore::new(1);
    let tokens = ["ok-1", "bad-1", "bad-2", "bad-3", "bad-4", "gone-1"];
    let s = d.dispatch(&run("j", None, &tokens, 1), &permits).await;
    assert!(d.policy().credentials_alert("shop", Platform::Fcm));
    let got = codes(&s);
    assert_eq!(got[0], (Status::Delivered, None));
    // Every BadDeviceToken of the job became "retrying", none is final.
    for c in &got[1..5] {
        assert_eq!(c.0, Status::Retrying, "{got:?}");
    }
    let feedback: Vec<_> = s
        .entries
        .iter()
        .filter_map(crate::report::TokenEntry::from_entry)
        .collect();
    assert!(
        feedback.is_empty(),
        "token feedback held back: {feedback:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn throttle_waits_hold_no_permit_and_end_on_shutdown() {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (d, answers) = dispatcher(policy(1, 0), Shutdown::new(rx));
    // One permit for everything: a recipient waiting for its token must
    // not keep it from a job that has one.
    let permits = Arc::new(Semaphore::new(1));
    let slow = {
        let (d, p) = (d.clone(), Arc::clone(&permits));
        tokio::spawn(async move {
            d.dispatch(&run("slow", None, &["ok-1", "ok-2", "ok-3"], 1), &p)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Two sent (t = 0 s and 1 s), the third waits for its token at 2 s.
    assert_eq!(answers.calls.load(Ordering::SeqCst), 2);
    assert_eq!(permits.available_permits(), 1, "the waiter holds no permit");
    tx.send(true).unwrap();
    let s = slow.await.unwrap();
    assert_eq!(s.entries[2].status, Status::Retrying);
    assert_eq!(s.entries[2].attempt, 1);
    assert_eq!(
        s.deferred.get(&0),
        Some(&vec![2]),
        "the shortest delay queue"
    );
    assert_eq!(answers.calls.load(Ordering::SeqCst), 2, "not sent");
}
