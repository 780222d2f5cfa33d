//! The demo's sample campaign (a realistic mix of good and bad tokens) and
//! its throw-away config pointing at in-process simulators.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::job::Job;
use crate::sim::apns::scripted_token;

/// The embedded dev material the demo config needs (TEST ONLY, see config/dev/README.md).
const DEV_FILES: [(&str, &str); 4] = [
    (
        "vapid-dev.p8",
        include_str!("../../../config/dev/vapid-dev.p8"),
    ),
    ("ca.pem", include_str!("../../../config/dev/ca.pem")),
    (
        "apns-dev.p8",
        include_str!("../../../config/dev/apns-dev.p8"),
    ),
    (
        "fcm-service-account.json",
        include_str!("../../../config/dev/fcm-service-account.json"),
    ),
];

/// One kind of recipient in the sample campaign: its share (per 100) and how
/// to make its token.
struct Mix {
    per_100: usize,
    apns_prefix: Option<&'static str>,
    fcm_prefix: Option<&'static str>,
}

/// 100 slots: what a real campaign's token base tends to look like.
const MIX: [Mix; 6] = [
    // Delivered.
    Mix {
        per_100: 82,
        apns_prefix: Some("a"),
        fcm_prefix: Some("device"),
    },
    // Uninstalled: APNs 410 Unregistered / FCM UNREGISTERED.
    Mix {
        per_100: 7,
        apns_prefix: Some("dead"),
        fcm_prefix: Some("unregistered"),
    },
    // Malformed or wrong environment / invalid FCM token.
    Mix {
        per_100: 3,
        apns_prefix: Some("bad0"),
        fcm_prefix: Some("invalid"),
    },
    // Token of another app / another sender.
    Mix {
        per_100: 2,
        apns_prefix: Some("70b1"),
        fcm_prefix: Some("mismatch"),
    },
    // Flaky: 503 on the first try, delivered on retry (attempt 2).
    Mix {
        per_100: 5,
        apns_prefix: Some("5031"),
        fcm_prefix: Some("flaky"),
    },
    // Not even a token.
    Mix {
        per_100: 1,
        apns_prefix: None,
        fcm_prefix: Some("not a token!"),
    },
];

/// Builds `count` recipients over jobs of at most `batch`: every tenth a
/// browser (Web Push subscription at `webpush_base`), the rest half APNs,
/// half FCM.
pub fn jobs(count: usize, batch: usize, campaign: &str, webpush_base: &str) -> Vec<Job> {
    let batch = batch.clamp(1, crate::dispatch::MAX_RECIPIENTS);
    let mut recipients = Vec::with_capacity(count);
    for i in 0..count {
        let slot = i % 100;
        let mut acc = 0;
        let kind = MIX
            .iter()
            .find(|m| {
                acc += m.per_100;
                slot < acc
            })
            .unwrap_or(&MIX[0]);
        if i % 10 == 5 {
            recipients.push(browser(webpush_base, kind, i));
            continue;
        }
        let apns = i % 2 == 0;
        let (platform, token) = if apns {
            let token = match kind.apns_prefix {
                Some(p) => scripted_token(&format!("{p}{i:08x}")),
                None => format!("zz{i}"),
            };
            ("apns", token)
        } else {
            let p = kind.fcm_prefix.unwrap_or("device");
            ("fcm", format!("{p}-{i:08}"))
        };
        recipients.push(serde_json::json!({
            "platform": platform, "token": token, "id": format!("user-{i}"),
            "vars": {"name": format!("user {i}")}
        }));
    }
    recipients
        .chunks(batch)
        .enumerate()
        .filter_map(|(n, chunk)| {
            let job = serde_json::json!({
                "id": format!("{campaign}-{n:05}"),
                "app": "shop",
                "campaign": campaign,
                "recipients": chunk,
                "notification": {"title": "Hi {{name | default: \"there\"}}",
                                  "body": "Spring sale: 20% off today"},
                "data": {"promo": "spring"},
                "collapse_key": "spring-sale",
                "ttl": 3600
            });
            serde_json::from_value(job).ok()
        })
        .collect()
}

/// A Web Push recipient: the simulator answers by path (`/gone/` 410,
/// `/notfound/` 404, anything else 201 after decrypting the message).
fn browser(base: &str, kind: &Mix, i: usize) -> serde_json::Value {
    let path = match kind.apns_prefix {
        Some("dead") | Some("70b1") => format!("/gone/{i}"),
        Some("bad0") | None => format!("/notfound/{i}"),
        _ => format!("/sub/{i}"),
    };
    let (subscription, _keys) = crate::sim::webpush::dev_subscription(base, &path);
    serde_json::json!({"platform": "webpush", "subscription": subscription, "id": format!("user-{i}"),
                       "vars": {"name": format!("user {i}")}})
}

/// Writes the dev material and a config for simulators at `apns`/`fcm`/
/// `webpush` (the one origin Web Push may send to) into `dir`; returns the
/// config path. Queue names carry `tag` so a demo never touches a real
/// deployment's queues.
pub fn write_config(
    dir: &Path,
    apns: SocketAddr,
    fcm: SocketAddr,
    webpush: SocketAddr,
    amqp_url: &str,
    tag: &str,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in DEV_FILES {
        std::fs::write(dir.join(name), text)?;
    }
    let prefix = format!("pushgate.demo-{tag}");
    let text = format!(
        r#"[log]
level = "warn"

[apps.shop.apns]
environment = "sandbox"
endpoint = "https://{apns}"
topic = "com.example.shop"
team_id = "DEVTEAM001"
key_id = "DEVKEY0001"
key_file = "apns-dev.p8"
ca_file = "ca.pem"

[apps.shop.fcm]
service_account_file = "fcm-service-account.json"
endpoint = "https://{fcm}"
token_uri = "https://{fcm}/token"
ca_file = "ca.pem"

[apps.shop.webpush]
vapid_key_file = "vapid-dev.p8"
subject = "mailto:demo@example.com"
allowed_origins = ["{webpush}"]
connections = 2
ca_file = "ca.pem"

[amqp]
url = "{amqp_url}"
dead_queue = "{prefix}.dead"
results_exchange = "{prefix}.results"
events_queue = "{prefix}.events"
control_exchange = "{prefix}.control"
control_queue = "{prefix}.control.log"
connection_name = "pushgate-demo"

[[amqp.inputs]]
name = "{prefix}.jobs"
prefetch = 32

[amqp.retry]
exchange = "{prefix}.retry"
queue_prefix = "{prefix}.retry."
delays = ["200ms", "1s"]
max_attempts = 3
jitter = 0.0
"#
    );
    let path = dir.join("demo.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_has_the_count_and_valid_jobs() {
        let jobs = jobs(1234, 500, "t", "https://127.0.0.1:4444");
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs.iter().map(|j| j.recipients.len()).sum::<usize>(), 1234);
        for j in &jobs {
            j.validate().unwrap();
        }
        // The mix really contains bad tokens that validation catches locally.
        let local_bad = jobs
            .iter()
            .flat_map(|j| (0..j.recipients.len()).map(move |i| j.check_recipient(i)))
            .filter(Result::is_err)
            .count();
        assert!(local_bad > 0);
        let browsers = jobs
            .iter()
            .flat_map(|j| j.recipients.iter())
            .filter(|r| r.platform == crate::job::Platform::Webpush)
            .count();
        assert_eq!(browsers, 123);
    }
}
