//! Delivery policy: what the dispatcher asks before and after each send.
//!
//! - before: is the campaign stopped (CampaignStopped), is the token a
//!   duplicate in its campaign (DuplicatePlatformId), is the app's provider
//!   paused by the credentials circuit breaker (defer to a delay queue,
//!   except one probe per interval);
//! - the throttle ([`crate::throttle`]) paces what is sent;
//! - after: feed the answer to the breaker and its guard (credentials
//!   alert), slow the app down on quota answers, hold a device after APNs
//!   429 TooManyRequests.
//!
//! Metrics come out through [`observer::Observer`] and [`Policy::snapshot`].

pub mod breaker;
pub mod duplicates;
pub mod keys;
pub mod observer;
pub mod stops;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use self::breaker::{Admit, Breaker, Change, Settings};
use self::duplicates::Duplicates;
use self::observer::{NoopObserver, Observer};
use self::stops::StopRegistry;
use crate::config::{PolicyConfig, ThrottleConfig};
use crate::job::{Platform, Throttle as JobThrottle};
use crate::outcome::{Class, Code, Outcome};
use crate::throttle::clock::{Shutdown, TokioClock};
use crate::throttle::Throttle;

/// One recipient's delivery, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub app: &'a str,
    pub platform: Platform,
    pub campaign: Option<&'a str>,
    /// The job's campaign throttle, if it carries one.
    pub throttle: Option<JobThrottle>,
    pub job_id: &'a str,
    /// 64-bit hash of the device token (or Web Push endpoint).
    pub device: u64,
}

/// What the policy says before a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead; `probe` when this send probes a paused provider.
    Send { probe: bool },
    /// Do not send: a final result with this code.
    Refuse(Code, &'static str),
    /// The app's provider is paused because of `code`: defer the recipient
    /// (its attempt not counted) for at least `retry_in`.
    Pause { code: Code, retry_in: Duration },
}

/// The gauges, readable at any time (the telemetry module polls this or
/// listens to the [`Observer`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `pushgate_throttle_device_keys`.
    pub device_keys: usize,
    /// `pushgate_throttle_slowdown{app,platform}` = 1 for these.
    pub slowed: Vec<(String, Platform)>,
    /// `pushgate_credentials_alert{app,platform}` = 1 for these, with the
    /// code that paused them.
    pub alerts: Vec<(String, Platform, Code)>,
    /// `pushgate_campaigns_stopped`.
    pub campaigns_stopped: usize,
    /// Campaigns tracked by the duplicate-token check.
    pub duplicate_campaigns: usize,
}

pub use keys::device_key;

fn job_key(job_id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    job_id.hash(&mut h);
    h.finish()
}

/// The policy of one daemon: throttle, stops, duplicates, breakers.
pub struct Policy {
    pub throttle: Throttle<TokioClock>,
    pub stops: Arc<StopRegistry>,
    breakers: keys::NameMap<[Breaker; 3]>,
    dups: Duplicates,
    settings: Settings,
    observer: Arc<dyn Observer>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("settings", &self.settings)
            .field("stops", &self.stops)
            .finish_non_exhaustive()
    }
}

fn index(p: Platform) -> usize {
    match p {
        Platform::Apns => 0,
        Platform::Fcm => 1,
        Platform::Webpush => 2,
    }
}

impl Policy {
    /// The policy for `apps` (an app not listed is neither throttled nor
    /// paused). `remember`: how long a stop lasts. Call inside a runtime.
    pub fn new<'a>(
        cfg: &PolicyConfig,
        remember: Duration,
        apps: impl IntoIterator<Item = &'a str> + Clone,
        observer: Arc<dyn Observer>,
    ) -> Policy {
        let settings = Settings {
            probe_interval: cfg.probe_interval,
            guard_share: cfg.guard_share,
            guard_min_sends: cfg.guard_min_sends,
            guard_window: cfg.guard_window,
            apns_429_share: cfg.throttle.apns_429_share,
        };
        let breakers = apps
            .clone()
            .into_iter()
            .map(|a| {
                (
                    a.to_owned(),
                    std::array::from_fn(|_| Breaker::new(&settings)),
                )
            })
            .collect();
        Policy {
            throttle: Throttle::new(
                &cfg.throttle,
                apps,
                TokioClock::new(),
                Arc::clone(&observer),
            ),
            stops: Arc::new(StopRegistry::new(remember, Arc::clone(&observer))),
            breakers,
            dups: Duplicates::new(cfg.duplicate_campaigns, cfg.duplicate_tokens_per_campaign),
            settings,
            observer,
        }
    }

    /// The policy of a daemon running `config`, reporting to `observer`.
    pub fn from_config(config: &crate::config::Config, observer: Arc<dyn Observer>) -> Policy {
        Policy::new(
            &config.policy,
            config.amqp.control_remember,
            config.apps.keys().map(String::as_str),
            observer,
        )
    }

    /// No limits and no breakers (the stop and duplicate checks still work).
    pub fn unlimited() -> Policy {
        let cfg = PolicyConfig {
            throttle: ThrottleConfig::unlimited(),
            ..PolicyConfig::default()
        };
        Policy::new(&cfg, Duration::from_secs(3600), [], Arc::new(NoopObserver))
    }

    fn breaker(&self, app: &str, platform: Platform) -> Option<&Breaker> {
        self.breakers.get(app)?.get(index(platform))
    }

    /// Whether `app`'s `platform` has a breaker (credentials answers pause
    /// it instead of failing its recipients).
    pub fn pauses(&self, app: &str, platform: Platform) -> bool {
        self.breaker(app, platform).is_some()
    }

    /// How long a paused recipient waits at least before it comes back.
    pub fn probe_interval(&self) -> Duration {
        self.settings.probe_interval
    }

    /// Before the throttle: stopped campaign, duplicate token, paused app.
    /// `first_in_job`: no earlier recipient of the job has the same token.
    pub fn before(&self, d: &Delivery<'_>, first_in_job: bool) -> Verdict {
        if let Some(c) = d.campaign {
            if self.stops.is_stopped(c) {
                return Verdict::Refuse(Code::CampaignStopped, "the campaign was stopped");
            }
            if !first_in_job || !self.dups.claim(c, d.device, job_key(d.job_id)) {
                return Verdict::Refuse(
                    Code::DuplicatePlatformId,
                    "this token already had a notification in this campaign",
                );
            }
        }
        self.breaker_verdict(d)
    }

    fn breaker_verdict(&self, d: &Delivery<'_>) -> Verdict {
        match self
            .breaker(d.app, d.platform)
            .map(|b| b.admit(&self.settings))
        {
            None | Some(Admit::Go) => Verdict::Send { probe: false },
            Some(Admit::Probe) => Verdict::Send { probe: true },
            Some(Admit::Paused { code, next_probe }) => Verdict::Pause {
                code,
                retry_in: next_probe.max(self.settings.probe_interval),
            },
        }
    }

    /// Right before the send (after the throttle wait and the permit): a
    /// stop or a pause that came meanwhile wins. `None`: send.
    pub fn last_check(&self, d: &Delivery<'_>, probe: bool) -> Option<Verdict> {
        if d.campaign.is_some_and(|c| self.stops.is_stopped(c)) {
            return Some(Verdict::Refuse(
                Code::CampaignStopped,
                "the campaign was stopped",
            ));
        }
        if probe {
            return None;
        }
        let paused = self.breaker(d.app, d.platform).and_then(Breaker::cause);
        paused.map(|(code, _)| Verdict::Pause {
            code,
            retry_in: self.settings.probe_interval,
        })
    }

    /// After the send: feeds the answer to the breaker and the throttle.
    /// May lengthen `outcome.retry_after` (a held device).
    pub fn after(&self, d: &Delivery<'_>, outcome: &mut Outcome, probe: bool) {
        let cfg = self.throttle.config();
        match outcome.code {
            Some(Code::QuotaExceeded) => {
                let for_ = outcome.retry_after.unwrap_or(cfg.slowdown_default);
                self.throttle.slow_down(d.app, d.platform, for_);
            }
            Some(Code::TemporarilyBlacklisted) => {
                let hold = outcome.retry_after.unwrap_or_default().max(cfg.device.hold);
                self.throttle.hold_device(d.device, hold);
                outcome.retry_after = Some(hold);
            }
            _ => {}
        }
        // No answer from the provider (a transport failure, a local
        // refusal): nothing to judge by, unless the credentials themselves
        // failed before the request (e.g. the OAuth token endpoint refused
        // the service account).
        let credentials = outcome.class() == Some(Class::Credentials);
        if outcome.provider_status.is_none() && !credentials {
            return;
        }
        let Some(b) = self.breaker(d.app, d.platform) else {
            return;
        };
        match b.record(&self.settings, outcome.code, probe) {
            Change::None => {}
            Change::Opened { code, guard } => self.opened(d, code, guard),
            Change::Closed => {
                tracing::info!(app = d.app, platform = %d.platform,
                    "credentials alert cleared: a probe got through; sending again");
                self.observer.credentials_alert(d.app, d.platform, false);
            }
        }
        if outcome.code == Some(Code::TemporarilyBlacklisted) && b.too_many_429(&self.settings) {
            self.throttle
                .slow_down(d.app, d.platform, cfg.slowdown_default);
        }
    }

    fn opened(&self, d: &Delivery<'_>, code: Code, guard: Option<f64>) {
        let every_ms = u64::try_from(self.settings.probe_interval.as_millis()).unwrap_or(u64::MAX);
        match guard {
            None => tracing::error!(app = d.app, platform = %d.platform, code = code.as_str(),
                probe_every_ms = every_ms,
                "credentials alert: the provider refused this app's credentials; its sends are paused \
                 (recipients wait in the retry queues, nothing is lost) until a probe gets through; \
                 fix the key, certificate or project in the config"),
            Some(share) => {
                tracing::error!(app = d.app, platform = %d.platform, code = code.as_str(),
                share = share, probe_every_ms = every_ms,
                "credentials alert: a large share of this app's recent sends were refused as bad tokens, \
                 which means a wrong environment, bundle id or sender, not dead tokens; its sends are \
                 paused and token feedback is held back until a probe gets through")
            }
        }
        self.observer.credentials_alert(d.app, d.platform, true);
    }

    /// While the guard holds `app`'s `platform` paused, answers with its
    /// codes are not final (the tokens are likely fine): defer them and
    /// hold their token feedback back.
    pub fn guard_holds(&self, app: &str, platform: Platform, code: Code) -> bool {
        breaker::guarded(code)
            && self
                .breaker(app, platform)
                .and_then(Breaker::cause)
                .is_some_and(|(_, guard)| guard)
    }

    /// Whether `app`'s `platform` is paused with a credentials alert.
    pub fn credentials_alert(&self, app: &str, platform: Platform) -> bool {
        self.breaker(app, platform)
            .and_then(Breaker::cause)
            .is_some()
    }

    /// The gauges now.
    pub fn snapshot(&self) -> Snapshot {
        let mut alerts = Vec::new();
        for (app, bs) in &self.breakers {
            for (b, p) in bs.iter().zip(Platform::ALL) {
                if let Some((code, _)) = b.cause() {
                    alerts.push((app.clone(), p, code));
                }
            }
        }
        alerts.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
        Snapshot {
            device_keys: self.throttle.device_keys(),
            slowed: self.throttle.slowed(),
            alerts,
            campaigns_stopped: self.stops.stopped().len(),
            duplicate_campaigns: self.dups.campaigns(),
        }
    }

    /// Periodic upkeep until shutdown: reclaims idle device keys and
    /// reports slowdowns that ended.
    pub async fn upkeep(self: Arc<Self>, shutdown: Shutdown) {
        let every = self.throttle.config().device.reclaim_every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait() => return,
            }
            self.throttle.tick();
        }
    }
}

#[cfg(test)]
mod tests;
