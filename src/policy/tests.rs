//! Policy tests: the verdicts before a send and what answers change.

use super::*;
use crate::job::Recipient;

fn policy() -> Policy {
    let cfg = PolicyConfig {
        probe_interval: Duration::from_secs(30),
        guard_min_sends: 4,
        ..PolicyConfig::default()
    };
    Policy::new(
        &cfg,
        Duration::from_secs(3600),
        ["shop"],
        Arc::new(NoopObserver),
    )
}

fn delivery(campaign: Option<&'static str>, job: &'static str, device: u64) -> Delivery<'static> {
    Delivery {
        app: "shop",
        platform: Platform::Apns,
        campaign,
        throttle: None,
        job_id: job,
        device,
    }
}

fn answer(code: Option<Code>, status: u16) -> Outcome {
    Outcome {
        code,
        provider_status: Some(status),
        ..Outcome::default()
    }
}

const SEND: Verdict = Verdict::Send { probe: false };

#[tokio::test]
async fn stopped_campaigns_and_duplicate_tokens_are_refused() {
    let p = policy();
    let d = delivery(Some("spring"), "j1", 7);
    assert_eq!(p.before(&d, true), SEND);
    assert_eq!(p.before(&d, true), SEND, "the same job again (a retry)");
    let other_job = delivery(Some("spring"), "j2", 7);
    assert!(matches!(
        p.before(&other_job, true),
        Verdict::Refuse(Code::DuplicatePlatformId, _)
    ));
    assert!(matches!(
        p.before(&delivery(Some("spring"), "j1", 8), false),
        Verdict::Refuse(Code::DuplicatePlatformId, _)
    ));
    assert_eq!(
        p.before(&delivery(None, "j3", 7), true),
        SEND,
        "no campaign: no check"
    );
    p.stops.stop("spring", std::time::SystemTime::now(), false);
    assert!(matches!(
        p.before(&d, true),
        Verdict::Refuse(Code::CampaignStopped, _)
    ));
    assert!(matches!(
        p.last_check(&d, false),
        Some(Verdict::Refuse(Code::CampaignStopped, _))
    ));
    assert_eq!(p.snapshot().campaigns_stopped, 1);
}

#[tokio::test(start_paused = true)]
async fn credentials_answers_pause_the_app_provider_until_a_probe_passes() {
    let p = policy();
    let d = delivery(None, "j", 1);
    let mut o = answer(Some(Code::InvalidCredentials), 403);
    p.after(&d, &mut o, false);
    assert!(p.credentials_alert("shop", Platform::Apns));
    assert!(!p.credentials_alert("shop", Platform::Fcm), "per provider");
    assert_eq!(
        p.snapshot().alerts,
        vec![("shop".to_owned(), Platform::Apns, Code::InvalidCredentials)]
    );
    assert_eq!(
        p.before(&d, true),
        Verdict::Pause {
            code: Code::InvalidCredentials,
            retry_in: Duration::from_secs(30)
        }
    );
    assert!(matches!(
        p.last_check(&d, false),
        Some(Verdict::Pause { .. })
    ));
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(p.before(&d, true), Verdict::Send { probe: true });
    assert_eq!(p.last_check(&d, true), None, "the probe goes out");
    p.after(&d, &mut answer(None, 200), true);
    assert!(!p.credentials_alert("shop", Platform::Apns));
    assert_eq!(p.before(&d, true), SEND);
    assert!(p.pauses("shop", Platform::Fcm));
    assert!(!p.pauses("other", Platform::Fcm));
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_before_any_request_pause_too() {
    let p = policy();
    let d = delivery(None, "j", 1);
    // No provider answer at all: a transport failure does not count...
    let mut down = Outcome::local(Code::ProviderUnavailable, "connect refused");
    p.after(&d, &mut down, false);
    assert!(!p.credentials_alert("shop", Platform::Apns));
    // ... a refused OAuth token (FCM) or VAPID key does.
    let mut refused = Outcome::local(Code::InvalidCredentials, "invalid_grant");
    p.after(&d, &mut refused, false);
    assert!(p.credentials_alert("shop", Platform::Apns));
}

#[tokio::test(start_paused = true)]
async fn the_guard_pauses_and_holds_token_feedback() {
    let p = policy();
    let d = delivery(None, "j", 1);
    for _ in 0..4 {
        p.after(&d, &mut answer(Some(Code::BadDeviceToken), 400), false);
    }
    assert!(p.credentials_alert("shop", Platform::Apns));
    assert!(p.guard_holds("shop", Platform::Apns, Code::BadDeviceToken));
    assert!(!p.guard_holds("shop", Platform::Apns, Code::NotRegistered));
    assert!(!p.guard_holds("shop", Platform::Fcm, Code::BadDeviceToken));
}

#[tokio::test(start_paused = true)]
async fn quota_answers_slow_down_and_429_holds_the_device() {
    let p = policy();
    let d = Delivery {
        platform: Platform::Fcm,
        ..delivery(None, "j", 1)
    };
    let mut quota = answer(Some(Code::QuotaExceeded), 429);
    quota.retry_after = Some(Duration::from_secs(5));
    p.after(&d, &mut quota, false);
    assert_eq!(
        p.snapshot().slowed,
        vec![("shop".to_owned(), Platform::Fcm)]
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(p.snapshot().slowed.is_empty(), "over after Retry-After");

    let apns = delivery(None, "j", 9);
    let mut o = answer(Some(Code::TemporarilyBlacklisted), 429);
    p.after(&apns, &mut o, false);
    assert_eq!(o.retry_after, Some(Duration::from_secs(60)), "device hold");
    let t = crate::throttle::Ticket {
        app: "shop",
        platform: Platform::Apns,
        campaign: None,
        device: 9,
    };
    assert_eq!(
        p.throttle.pass(&t, &Shutdown::never()).await,
        crate::throttle::Pass::Defer(Duration::from_secs(60))
    );
    assert!(
        !p.throttle.is_slowed("shop", Platform::Apns),
        "one device: no app slowdown"
    );
}

#[test]
fn device_keys_are_stable_and_distinct() {
    let r = |platform: &str, token: &str| -> Recipient {
        serde_json::from_value(serde_json::json!({"platform": platform, "token": token})).unwrap()
    };
    assert_eq!(device_key(&r("fcm", "a")), device_key(&r("fcm", "a")));
    assert_ne!(device_key(&r("fcm", "a")), device_key(&r("fcm", "b")));
    assert_ne!(device_key(&r("fcm", "a")), device_key(&r("apns", "a")));
}
