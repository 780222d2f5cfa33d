//! Token buckets that pace deliveries: per app and provider (with adaptive
//! slowdown after quota answers) and per campaign (the job's `throttle`) on
//! governor, and per device token in a fixed table of our own
//! ([`device`]). Generic over the clock so that tests
//! run on governor's fake clock or paused tokio time.
//!
//! A delivery passes the device bucket, then the campaign bucket, then the
//! app/provider bucket, before the dispatcher takes an in-flight permit:
//! waiting here never holds a permit or a connection. Every wait listens to
//! shutdown and ends at once when it begins ([`Pass::Stopped`]).

pub mod bucket;
pub mod campaign;
pub mod clock;
pub mod device;

use std::sync::Arc;
use std::time::Duration;

use self::bucket::AppBucket;
use self::campaign::Campaigns;
use self::clock::{NanoClock, Shutdown, TokioClock};
use self::device::{DeviceTurn, Devices};
use crate::config::ThrottleConfig;
use crate::job::{Platform, Throttle as JobThrottle};
use crate::policy::keys::NameMap;
use crate::policy::observer::{Observer, Scope};

/// What one delivery is throttled by.
#[derive(Debug, Clone, Copy)]
pub struct Ticket<'a> {
    pub app: &'a str,
    pub platform: Platform,
    /// The campaign (or the job id when the job has none) and the job's
    /// throttle, when it carries one.
    pub campaign: Option<(&'a str, JobThrottle)>,
    /// 64-bit hash of the device token (or Web Push endpoint).
    pub device: u64,
}

/// What the throttle decided for one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Send now.
    Go,
    /// Not now: hand the recipient to a delay queue of at least this (the
    /// device is held after a 429, or its bucket is too far out).
    Defer(Duration),
    /// Shutdown began while waiting.
    Stopped,
}

fn index(p: Platform) -> usize {
    match p {
        Platform::Apns => 0,
        Platform::Fcm => 1,
        Platform::Webpush => 2,
    }
}

/// All buckets of the daemon.
pub struct Throttle<C: NanoClock = TokioClock> {
    /// App names from the config (FxHash: looked up per notification).
    apps: NameMap<[Option<AppBucket<C>>; 3]>,
    campaigns: Campaigns<C>,
    devices: Option<Devices<C>>,
    cfg: ThrottleConfig,
    observer: Arc<dyn Observer>,
}

impl<C: NanoClock> Throttle<C> {
    /// Buckets for every app in `apps`; an app not listed is not limited.
    pub fn new<'a>(
        cfg: &ThrottleConfig,
        apps: impl IntoIterator<Item = &'a str>,
        clock: C,
        observer: Arc<dyn Observer>,
    ) -> Throttle<C> {
        let apps = apps
            .into_iter()
            .map(|app| {
                let bucket =
                    |p| AppBucket::new(cfg.rate(app, p), cfg.slowdown_factor, clock.clone());
                let buckets = [
                    bucket(Platform::Apns),
                    bucket(Platform::Fcm),
                    bucket(Platform::Webpush),
                ];
                (app.to_owned(), buckets)
            })
            .collect();
        Throttle {
            apps,
            campaigns: Campaigns::new(cfg.campaigns, cfg.campaign_share, clock.clone()),
            devices: Devices::new(&cfg.device, clock),
            cfg: cfg.clone(),
            observer,
        }
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.cfg
    }

    fn app(&self, app: &str, platform: Platform) -> Option<&AppBucket<C>> {
        self.apps.get(app)?.get(index(platform))?.as_ref()
    }

    /// Waits for the device, campaign and app/provider buckets in turn.
    pub async fn pass(&self, t: &Ticket<'_>, shutdown: &Shutdown) -> Pass {
        let started = tokio::time::Instant::now();
        if let Some(devices) = &self.devices {
            loop {
                let wait = match devices.turn(t.device) {
                    DeviceTurn::Now => break,
                    DeviceTurn::Defer(d) => return Pass::Defer(d),
                    DeviceTurn::Wait(d) => d,
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait() => return Pass::Stopped,
                }
            }
            self.observer
                .throttle_wait(Scope::Device, started.elapsed());
        }
        if let Some((campaign, spec)) = t.campaign {
            if let Some(b) = self.campaigns.get(campaign, spec) {
                let at = tokio::time::Instant::now();
                if !b.bucket.try_take() && b.bucket.take(shutdown).await.is_err() {
                    return Pass::Stopped;
                }
                self.observer.throttle_wait(Scope::Campaign, at.elapsed());
            }
        }
        if let Some(b) = self.app(t.app, t.platform) {
            let at = tokio::time::Instant::now();
            if !b.try_take() && b.take(shutdown).await.is_err() {
                return Pass::Stopped;
            }
            if b.slowdown_ended() {
                self.report_end(t.app, t.platform);
            }
            self.observer.throttle_wait(Scope::App, at.elapsed());
        }
        Pass::Go
    }

    /// Slows `app` on `platform` down for `d` (a quota answer).
    pub fn slow_down(&self, app: &str, platform: Platform, d: Duration) {
        let Some(b) = self.app(app, platform) else {
            return;
        };
        if b.slow_down(d) {
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            tracing::warn!(app, %platform, for_ms = ms, factor = self.cfg.slowdown_factor,
                "provider quota answer: slowing this app's sends down");
            self.observer.slowdown(app, platform, true);
        }
    }

    fn report_end(&self, app: &str, platform: Platform) {
        tracing::info!(app, %platform, "slowdown over: back to the configured rate");
        self.observer.slowdown(app, platform, false);
    }

    /// Leaves one device alone for `d` (after APNs 429 TooManyRequests).
    pub fn hold_device(&self, device: u64, d: Duration) {
        if let Some(devices) = &self.devices {
            devices.hold(device, d);
        }
    }

    /// Periodic upkeep: reclaims idle device keys, reports slowdowns that
    /// ended; returns the device keys left.
    pub fn tick(&self) -> usize {
        for (app, buckets) in &self.apps {
            for (b, p) in buckets.iter().zip(Platform::ALL) {
                if b.as_ref().is_some_and(AppBucket::slowdown_ended) {
                    self.report_end(app, p);
                }
            }
        }
        let keys = self.devices.as_ref().map_or(0, Devices::reclaim);
        self.observer.device_keys(keys);
        keys
    }

    /// Device keys tracked now.
    pub fn device_keys(&self) -> usize {
        self.devices.as_ref().map_or(0, Devices::len)
    }

    /// Whether `app` on `platform` is slowed down now.
    pub fn is_slowed(&self, app: &str, platform: Platform) -> bool {
        self.app(app, platform)
            .is_some_and(|b| b.slowed_for().is_some())
    }

    /// Every (app, platform) slowed down now.
    pub fn slowed(&self) -> Vec<(String, Platform)> {
        let mut out = Vec::new();
        for (app, buckets) in &self.apps {
            for (b, p) in buckets.iter().zip(Platform::ALL) {
                if b.as_ref().is_some_and(|b| b.slowed_for().is_some()) {
                    out.push((app.clone(), p));
                }
            }
        }
        out.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
        out
    }
}

#[cfg(test)]
mod tests;
