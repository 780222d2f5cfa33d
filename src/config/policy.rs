//! The `[throttle]` and `[policy]` sections: token-bucket rates, adaptive
//! slowdown, the credentials circuit breaker and its guard, and the
//! duplicate-token check; raw serde structs and their validation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::job::Platform;

/// One token bucket: `per_second` cells per second (0 = no limit), at most
/// `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// Default rates per provider. FCM allows 600,000 messages per minute per
/// project (10,000/s): stay under it. APNs publishes no global rate.
const APNS_RATE: Rate = Rate {
    per_second: 9000,
    burst: 900,
};
const FCM_RATE: Rate = Rate {
    per_second: 9000,
    burst: 900,
};
const WEBPUSH_RATE: Rate = Rate {
    per_second: 2000,
    burst: 200,
};

/// Per-app rate overrides (`[throttle.apps.<app>.<platform>]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppRates {
    pub apns: Option<Rate>,
    pub fcm: Option<Rate>,
    pub webpush: Option<Rate>,
}

/// The per-device-token bucket (`[throttle.device]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceThrottle {
    /// Notifications per device token per minute (0 = no device limit).
    pub per_minute: u32,
    pub burst: u32,
    /// A longer wait for a device's bucket hands the recipient to a delay
    /// queue instead (its attempt is not counted).
    pub max_wait: Duration,
    /// After APNs 429 TooManyRequests, the device is left alone this long.
    pub hold: Duration,
    /// Devices the limiter's table holds (16 bytes each, set aside at
    /// start); beyond, the device closest to a full bucket is forgotten.
    pub max_keys: usize,
    /// How often the slots of devices whose bucket is full again are
    /// counted and freed (the `pushgate_throttle_device_keys` gauge).
    pub reclaim_every: Duration,
}

/// Most devices `[throttle.device] max_keys` may ask for: 1.6 GB of table.
pub const MAX_DEVICE_KEYS: usize = 100_000_000;

/// `[throttle]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    pub apns: Rate,
    pub fcm: Rate,
    pub webpush: Rate,
    pub apps: BTreeMap<String, AppRates>,
    pub device: DeviceThrottle,
    /// During a slowdown the app/provider rate is multiplied by this.
    pub slowdown_factor: f64,
    /// Slowdown length when the provider gives no Retry-After.
    pub slowdown_default: Duration,
    /// Share of an app's recent APNs answers that are 429 TooManyRequests
    /// above which the app's APNs rate slows down too.
    pub apns_429_share: f64,
    /// Share of a job's campaign throttle this replica enforces.
    pub campaign_share: f64,
    /// Campaign buckets kept (least recently used beyond are forgotten).
    pub campaigns: usize,
}

impl ThrottleConfig {
    /// The bucket of `app` on `platform`: its override, else the default.
    pub fn rate(&self, app: &str, platform: Platform) -> Rate {
        let o = self.apps.get(app).copied().unwrap_or_default();
        match platform {
            Platform::Apns => o.apns.unwrap_or(self.apns),
            Platform::Fcm => o.fcm.unwrap_or(self.fcm),
            Platform::Webpush => o.webpush.unwrap_or(self.webpush),
        }
    }

    /// No limit anywhere (tests and tools that measure something else).
    pub fn unlimited() -> ThrottleConfig {
        let off = Rate {
            per_second: 0,
            burst: 1,
        };
        ThrottleConfig {
            apns: off,
            fcm: off,
            webpush: off,
            device: DeviceThrottle {
                per_minute: 0,
                ..ThrottleConfig::default().device
            },
            ..ThrottleConfig::default()
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            apns: APNS_RATE,
            fcm: FCM_RATE,
            webpush: WEBPUSH_RATE,
            apps: BTreeMap::new(),
            device: DeviceThrottle {
                per_minute: 60,
                burst: 5,
                max_wait: Duration::from_secs(2),
                hold: Duration::from_secs(60),
                max_keys: 1_000_000,
                reclaim_every: Duration::from_secs(5),
            },
            slowdown_factor: 0.1,
            slowdown_default: Duration::from_secs(60),
            apns_429_share: 0.1,
            campaign_share: 1.0,
            campaigns: 10_000,
        }
    }
}

/// `[policy]` plus `[throttle]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub throttle: ThrottleConfig,
    /// While an app/provider is paused, one real send probes it this often.
    pub probe_interval: Duration,
    /// Share of an app's recent sends answered BadDeviceToken /
    /// DeviceTokenNotForTopic / MismatchSenderId that trips the guard.
    pub guard_share: f64,
    /// The guard judges only with at least this many recent sends.
    pub guard_min_sends: u32,
    /// How far back "recent" reaches.
    pub guard_window: Duration,
    /// Campaigns whose tokens are remembered for DuplicatePlatformId.
    pub duplicate_campaigns: usize,
    /// Tokens remembered per campaign; beyond, new tokens are not checked.
    pub duplicate_tokens_per_campaign: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            throttle: ThrottleConfig::default(),
            probe_interval: Duration::from_secs(30),
            guard_share: 0.5,
            guard_min_sends: 50,
            guard_window: Duration::from_secs(60),
            duplicate_campaigns: 8,
            duplicate_tokens_per_campaign: 1_000_000,
        }
    }
}

/// `[throttle.<platform>]` and `[throttle.apps.<app>.<platform>]`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    pub rate_per_second: Option<u32>,
    pub burst: Option<u32>,
}

/// `[throttle.apps.<app>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppRates {
    pub apns: Option<RawRate>,
    pub fcm: Option<RawRate>,
    pub webpush: Option<RawRate>,
}

/// `[throttle.device]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDevice {
    pub per_minute: u32,
    pub burst: u32,
    pub max_wait: String,
    pub hold: String,
    pub max_keys: usize,
    pub reclaim_every: String,
}

impl Default for RawDevice {
    fn default() -> Self {
        RawDevice {
            per_minute: 60,
            burst: 5,
            max_wait: "2s".into(),
            hold: "60s".into(),
            max_keys: 1_000_000,
            reclaim_every: "5s".into(),
        }
    }
}

/// `[throttle]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawThrottle {
    pub apns: RawRate,
    pub fcm: RawRate,
    pub webpush: RawRate,
    pub apps: BTreeMap<String, RawAppRates>,
    pub device: RawDevice,
    pub slowdown_factor: f64,
    pub slowdown_default: String,
    pub apns_429_share: f64,
    pub campaign_share: f64,
    pub campaigns: usize,
}

impl Default for RawThrottle {
    fn default() -> Self {
        RawThrottle {
            apns: RawRate::default(),
            fcm: RawRate::default(),
            webpush: RawRate::default(),
            apps: BTreeMap::new(),
            device: RawDevice::default(),
            slowdown_factor: 0.1,
            slowdown_default: "60s".into(),
            apns_429_share: 0.1,
            campaign_share: 1.0,
            campaigns: 10_000,
        }
    }
}

/// `[policy]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    pub probe_interval: String,
    pub guard_share: f64,
    pub guard_min_sends: u32,
    pub guard_window: String,
    pub duplicate_campaigns: usize,
    pub duplicate_tokens_per_campaign: usize,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            probe_interval: "30s".into(),
            guard_share: 0.5,
            guard_min_sends: 50,
            guard_window: "60s".into(),
            duplicate_campaigns: 8,
            duplicate_tokens_per_campaign: 1_000_000,
        }
    }
}

/// Collects problems with their dotted keys.
struct Problems<'a> {
    list: &'a mut Vec<(String, String)>,
}

impl Problems<'_> {
    fn push(&mut self, key: &str, msg: impl Into<String>) {
        self.list.push((key.to_owned(), msg.into()));
    }

    fn duration(&mut self, key: &str, value: &str, min: Duration) -> Duration {
        match humantime::parse_duration(value) {
            Ok(d) if d >= min => d,
            Ok(_) => {
                self.push(key, format!("{value:?} is too short; at least {min:?}"));
                min
            }
            Err(e) => {
                self.push(key, format!("{value:?} is not a duration ({e})"));
                min
            }
        }
    }

    fn share(&mut self, key: &str, v: f64, open_low: bool) {
        let ok = if open_low {
            v > 0.0 && v <= 1.0
        } else {
            (0.0..=1.0).contains(&v)
        };
        if !ok {
            let range = if open_low {
                "0.0 < x <= 1.0"
            } else {
                "0.0..=1.0"
            };
            self.push(key, format!("{v} is out of range; use {range}"));
        }
    }

    fn rate(&mut self, key: &str, raw: RawRate, default: Rate) -> Rate {
        let r = Rate {
            per_second: raw.rate_per_second.unwrap_or(default.per_second),
            burst: raw.burst.unwrap_or(default.burst),
        };
        if r.burst == 0 {
            self.push(&format!("{key}.burst"), "must be >= 1");
        }
        r
    }
}

/// Validates `[throttle]` and `[policy]`; `apps` are the configured app
/// names (overrides must name one). Problems come back as (key, message).
pub fn build(
    throttle: RawThrottle,
    policy: RawPolicy,
    apps: &[&str],
) -> Result<PolicyConfig, Vec<(String, String)>> {
    let mut list = Vec::new();
    let mut p = Problems { list: &mut list };
    let throttle = build_throttle(throttle, apps, &mut p);
    let probe_interval = p.duration(
        "policy.probe_interval",
        &policy.probe_interval,
        Duration::from_millis(100),
    );
    p.share("policy.guard_share", policy.guard_share, true);
    let guard_window = p.duration(
        "policy.guard_window",
        &policy.guard_window,
        Duration::from_secs(1),
    );
    if policy.guard_min_sends == 0 {
        p.push("policy.guard_min_sends", "must be >= 1");
    }
    if policy.duplicate_campaigns == 0 || policy.duplicate_tokens_per_campaign == 0 {
        p.push(
            "policy",
            "duplicate_campaigns and duplicate_tokens_per_campaign must be >= 1",
        );
    }
    if !list.is_empty() {
        return Err(list);
    }
    Ok(PolicyConfig {
        throttle,
        probe_interval,
        guard_share: policy.guard_share,
        guard_min_sends: policy.guard_min_sends,
        guard_window,
        duplicate_campaigns: policy.duplicate_campaigns,
        duplicate_tokens_per_campaign: policy.duplicate_tokens_per_campaign,
    })
}

fn build_device(d: RawDevice, p: &mut Problems<'_>) -> DeviceThrottle {
    let device = DeviceThrottle {
        per_minute: d.per_minute,
        burst: d.burst,
        max_wait: p.duration("throttle.device.max_wait", &d.max_wait, Duration::ZERO),
        hold: p.duration("throttle.device.hold", &d.hold, Duration::ZERO),
        max_keys: d.max_keys,
        reclaim_every: p.duration(
            "throttle.device.reclaim_every",
            &d.reclaim_every,
            Duration::from_millis(100),
        ),
    };
    if device.burst == 0 || device.max_keys == 0 {
        p.push("throttle.device", "burst and max_keys must be >= 1");
    }
    if device.per_minute > 0 && device.max_keys > MAX_DEVICE_KEYS {
        p.push(
            "throttle.device.max_keys",
            format!("at most {MAX_DEVICE_KEYS} (16 bytes each, set aside at start)"),
        );
    }
    device
}

fn build_throttle(raw: RawThrottle, apps: &[&str], p: &mut Problems<'_>) -> ThrottleConfig {
    let apns = p.rate("throttle.apns", raw.apns, APNS_RATE);
    let fcm = p.rate("throttle.fcm", raw.fcm, FCM_RATE);
    let webpush = p.rate("throttle.webpush", raw.webpush, WEBPUSH_RATE);
    let mut overrides = BTreeMap::new();
    for (app, r) in raw.apps {
        let key = format!("throttle.apps.{app}");
        if !apps.contains(&app.as_str()) {
            p.push(&key, "names no app configured under [apps]");
        }
        let mut one = |name: &str, r: Option<RawRate>, d: Rate| {
            r.map(|r| p.rate(&format!("{key}.{name}"), r, d))
        };
        let rates = AppRates {
            apns: one("apns", r.apns, apns),
            fcm: one("fcm", r.fcm, fcm),
            webpush: one("webpush", r.webpush, webpush),
        };
        overrides.insert(app, rates);
    }
    let device = build_device(raw.device, p);
    p.share("throttle.slowdown_factor", raw.slowdown_factor, true);
    p.share("throttle.apns_429_share", raw.apns_429_share, true);
    p.share("throttle.campaign_share", raw.campaign_share, true);
    if raw.campaigns == 0 {
        p.push("throttle.campaigns", "must be >= 1");
    }
    ThrottleConfig {
        apns,
        fcm,
        webpush,
        apps: overrides,
        device,
        slowdown_factor: raw.slowdown_factor,
        slowdown_default: p.duration(
            "throttle.slowdown_default",
            &raw.slowdown_default,
            Duration::from_millis(100),
        ),
        apns_429_share: raw.apns_429_share,
        campaign_share: raw.campaign_share,
        campaigns: raw.campaigns,
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
