//! Unit tests of the job rules (kept beside `validate.rs` to keep it short).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::*;

const APNS: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";
const P256DH: &str =
    "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM";
const AUTH: &str = "tBHItJI5svbpez7KI4CCXg";

fn job(extra: Value) -> Job {
    let mut base = json!({"app": "shop", "recipients": [{"platform": "apns", "token": APNS}]});
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    Job::parse(base.to_string().as_bytes()).unwrap()
}

fn invalid(extra: Value) -> String {
    job(extra).validate().unwrap_err().to_string()
}

#[test]
fn a_plain_job_is_valid() {
    job(json!({})).validate().unwrap();
    job(
        json!({"id": "x".repeat(64), "campaign": "spring", "collapse_key": "k".repeat(64),
               "data": {"order": "1", "collapse_key": "c"}, "ttl": 0,
               "notification": {"title": "Hi {{name | default: 'you'}}"},
               "apns": {"headers": {"apns-priority": "5"}},
               "throttle": {"limit": 1, "per_seconds": 1}}),
    )
    .validate()
    .unwrap();
}

#[test]
fn job_rules() {
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"platform": "apns", "token": APNS}))
        .collect();
    let cases = [
        (json!({"app": ""}), "app: must be"),
        (json!({"app": "sh op"}), "app: must be"),
        (json!({"id": "x".repeat(65)}), "id: must be 1-64"),
        (json!({"id": "a\nb"}), "id: must be"),
        (json!({"id": ""}), "id: must be"),
        (json!({"campaign": "c".repeat(129)}), "campaign: must be"),
        (
            json!({"recipients": []}),
            "recipients: must hold 1 to 1000 recipients, not 0",
        ),
        (
            json!({"recipients": many}),
            "recipients: must hold 1 to 1000 recipients, not 1001",
        ),
        (
            json!({"notification": {"body": "Hi {{name"}}),
            "notification.body: placeholder at byte 3",
        ),
        (
            json!({"notification": {"subtitle": "{{ | default: 'x'}}"}}),
            "notification.subtitle:",
        ),
        (json!({"data": {"from": "x"}}), "data.from: reserved by FCM"),
        (
            json!({"data": {"google.c.a": "x"}}),
            "data.google.c.a: reserved",
        ),
        (json!({"data": {"gcm.n.e": "x"}}), "data.gcm.n.e: reserved"),
        (
            json!({"data": {"message_type": "x"}}),
            "data.message_type: reserved",
        ),
        (
            json!({"collapse_key": "k".repeat(65)}),
            "collapse_key: must be 1-64",
        ),
        (
            json!({"collapse_key": "caf\u{e9}"}),
            "collapse_key: must be",
        ),
        (json!({"collapse_key": ""}), "collapse_key: must be"),
        (
            json!({"ttl": 60, "expires_at": "2026-01-01T00:00:00Z"}),
            "expires_at: give either ttl or expires_at",
        ),
        (
            json!({"expires_at": "tomorrow"}),
            "expires_at: \"tomorrow\" is not an RFC 3339",
        ),
        (json!({"expires_at": "2026-13-01T00:00:00Z"}), "expires_at:"),
        (json!({"expires_at": "2026-01-01T00:00:00"}), "expires_at:"),
        (
            json!({"throttle": {"limit": 0, "per_seconds": 1}}),
            "throttle.limit: must be at least 1",
        ),
        (
            json!({"throttle": {"limit": 1, "per_seconds": 0}}),
            "throttle.per_seconds: must be at least 1",
        ),
        (
            json!({"apns": {"headers": {"authorization": "x"}}}),
            "apns.headers.authorization: only lower-case `apns-*`",
        ),
        (
            json!({"apns": {"headers": {"apns-id": "a\u{e9}"}}}),
            "apns.headers.apns-id: header values",
        ),
    ];
    for (extra, want) in cases {
        let got = invalid(extra.clone());
        assert!(got.starts_with(want), "{extra}\n got: {got}\nwant: {want}");
    }
}

fn recipient(r: Value) -> Result<(), (Code, String)> {
    job(json!({"recipients": [{"platform": "apns", "token": APNS}, r]})).check_recipient(1)
}

#[test]
fn recipient_rules() {
    let sub = json!({"endpoint": "https://push.example.net/send/abc", "keys": {"p256dh": P256DH, "auth": AUTH}});
    let ok = [
        json!({"platform": "apns", "token": APNS}),
        json!({"platform": "apns", "token": APNS.to_uppercase()}),
        json!({"platform": "apns", "token": format!("{APNS}{APNS}")}),
        json!({"platform": "fcm", "token": "cXyZ:APA91b-_Q"}),
        json!({"platform": "webpush", "subscription": sub}),
        json!({"platform": "webpush", "subscription": {"endpoint": "https://h", "keys": {"p256dh": format!("{P256DH}="), "auth": format!("{AUTH}==")}}}),
    ];
    for r in ok {
        assert_eq!(recipient(r.clone()), Ok(()), "{r}");
    }
    use Code::{BadDeviceToken as Bad, InvalidJob};
    let cases = [
        (
            json!({"platform": "apns"}),
            Bad,
            "recipients[1].token: missing; apns recipients need one",
        ),
        (
            json!({"platform": "apns", "token": &APNS[..62]}),
            Bad,
            "recipients[1].token: not an APNs device token",
        ),
        (
            json!({"platform": "apns", "token": &APNS[..63]}),
            Bad,
            "recipients[1].token: not an APNs",
        ),
        (
            json!({"platform": "apns", "token": format!("{}g", &APNS[..63])}),
            Bad,
            "recipients[1].token: not an APNs",
        ),
        (
            json!({"platform": "apns", "token": "a".repeat(202)}),
            Bad,
            "recipients[1].token: not an APNs",
        ),
        (
            json!({"platform": "apns", "token": APNS, "subscription": sub}),
            InvalidJob,
            "recipients[1].subscription: not allowed for apns",
        ),
        (
            json!({"platform": "fcm", "token": ""}),
            Bad,
            "recipients[1].token: an FCM token is 1 to 4096",
        ),
        (
            json!({"platform": "fcm", "token": "x".repeat(4097)}),
            Bad,
            "recipients[1].token: an FCM token",
        ),
        (
            json!({"platform": "fcm", "token": "a b"}),
            Bad,
            "recipients[1].token: not an FCM registration token",
        ),
        (
            json!({"platform": "fcm"}),
            Bad,
            "recipients[1].token: missing",
        ),
        (
            json!({"platform": "webpush"}),
            Bad,
            "recipients[1].subscription: missing",
        ),
        (
            json!({"platform": "webpush", "token": "t", "subscription": sub}),
            InvalidJob,
            "recipients[1].token: not allowed for webpush",
        ),
        (
            json!({"platform": "webpush", "subscription": {"endpoint": "http://h/x", "keys": {"p256dh": P256DH, "auth": AUTH}}}),
            Bad,
            "recipients[1].subscription: endpoint must be an https://",
        ),
        (
            json!({"platform": "webpush", "subscription": {"endpoint": "https:///x", "keys": {"p256dh": P256DH, "auth": AUTH}}}),
            Bad,
            "recipients[1].subscription: endpoint",
        ),
        (
            json!({"platform": "webpush", "subscription": {"endpoint": "https://h/a b", "keys": {"p256dh": P256DH, "auth": AUTH}}}),
            Bad,
            "recipients[1].subscription: endpoint",
        ),
        (
            json!({"platform": "webpush", "subscription": {"endpoint": "https://h", "keys": {"p256dh": &P256DH[..80], "auth": AUTH}}}),
            Bad,
            "recipients[1].subscription: keys.p256dh must be 65 bytes",
        ),
        (
            json!({"platform": "webpush", "subscription": {"endpoint": "https://h", "keys": {"p256dh": format!("A{}", &P256DH[1..]), "auth": AUTH}}}),
            Bad,
            "recipients[1].subscription: keys.p256dh must be an uncompressed",
        ),
        (
            json!({"platform": "webpush", "subscription": {"endpoint": "https://h", "keys": {"p256dh": P256DH, "auth": "tBHItJI5svbpez7KI4CCXh"}}}),
            Bad,
            "recipients[1].subscription: keys.auth must be 16 bytes",
        ),
    ];
    for (r, code, want) in cases {
        let (got_code, msg) = recipient(r.clone()).unwrap_err();
        assert_eq!(got_code, code, "{r}: {msg}");
        assert!(msg.starts_with(want), "{r}\n got: {msg}\nwant: {want}");
    }
    assert_eq!(
        job(json!({})).check_recipient(5).unwrap_err().0,
        Code::InvalidJob
    );
}

#[test]
fn expiry_follows_ttl_or_expires_at() {
    let received = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    assert_eq!(job(json!({})).expiry(received), None);
    assert_eq!(job(json!({"ttl": 0})).expiry(received), Some(received));
    assert_eq!(
        job(json!({"ttl": 60})).expiry(received),
        Some(received + Duration::from_secs(60))
    );
    let at = job(json!({"expires_at": "2027-01-15T08:00:00Z"})).expiry(received);
    assert_eq!(at, Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)));
}

#[test]
fn rfc3339_with_offsets_and_fractions() {
    let base = parse_rfc3339("2027-01-15T08:00:00Z").unwrap();
    let same = [
        "2027-01-15T09:30:00+01:30",
        "2027-01-15T03:00:00-05:00",
        "2027-01-15t08:00:00z",
        "2027-01-15T08:00:00+00:00",
    ];
    for s in same {
        assert_eq!(parse_rfc3339(s), Ok(base), "{s}");
    }
    assert_eq!(
        parse_rfc3339("2027-01-15T08:00:00.250Z").unwrap(),
        base + Duration::from_millis(250)
    );
    for bad in [
        "2027-01-15T08:00:00.Z",
        "2027-01-15T08:00:00.5+01",
        "2027-01-15 08:00:00Z",
        "2027-01-15T08:00:00+0100",
        "2027-02-30T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "2027-01-15T08:00:00+24:00",
        "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
    ] {
        assert!(parse_rfc3339(bad).is_err(), "{bad}");
    }
}

#[test]
fn ids_are_generated_once() {
    let mut j = job(json!({}));
    assert_eq!(j.effective_id(), "");
    let id = j.ensure_id().to_owned();
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(j.ensure_id(), id);
    assert_eq!(j.effective_id(), id);
    let mut given = job(json!({"id": "job-1"}));
    assert_eq!(given.ensure_id(), "job-1");
    assert_ne!(Job::new_id(), Job::new_id());
}

#[test]
fn errors_map_to_invalid_job() {
    assert_eq!(
        job(json!({"app": ""})).validate().unwrap_err().code(),
        Code::InvalidJob
    );
    assert!(SystemTime::now() > UNIX_EPOCH);
}

proptest::proptest! {
    #[test]
    fn parse_never_panics_on_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = Job::parse(&bytes);
    }

    #[test]
    fn parse_and_rules_never_panic_on_job_like_json(
        app in "\\PC{0,8}",
        token in "\\PC{0,80}",
        platform in "(apns|fcm|webpush|sms)",
        title in "\\PC{0,40}",
        expires in "\\PC{0,30}",
        ttl in proptest::option::of(0u64..u64::MAX),
    ) {
        let body = json!({
            "app": app, "notification": {"title": title}, "expires_at": expires, "ttl": ttl,
            "recipients": [{"platform": platform, "token": token,
                            "subscription": {"endpoint": token, "keys": {"p256dh": token, "auth": token}}}],
        });
        if let Ok(job) = Job::parse(body.to_string().as_bytes()) {
            let _ = job.validate();
            let _ = job.check_recipient(0);
            let _ = job.expiry(SystemTime::now());
        }
    }
}
