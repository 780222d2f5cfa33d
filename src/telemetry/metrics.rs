//! The Prometheus registry of one daemon and typed handles to feed it.
//!
//! No global registry: the wiring builds one [`Metrics`] (inside
//! [`super::Telemetry`]) and hands it around. Hot paths use pre-fetched
//! children (an atomic add, ~5 ns) or aggregate a whole job first
//! ([`JobCounts`]) so that label lookups happen once per job, never per
//! notification.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::counts::JobCounts;
use super::names as n;
use crate::job::Platform;
use crate::outcome::{Class, Code};
use crate::provider::h2pool::PoolStats;

/// Which throttle a wait was spent in (`scope` label): the policy's scopes.
pub use crate::policy::observer::Scope as ThrottleScope;

/// Counters of one input queue, fetched once per consumer.
#[derive(Debug, Clone)]
pub struct QueueCounters {
    pub received: IntCounter,
    pub acked: IntCounter,
    pub requeued: IntCounter,
    pub redelivered: IntCounter,
}

/// One running consumer in `pushgate_queue_consumers{queue}`; dropping it
/// (the consumer ended, or its task was aborted) removes it.
#[derive(Debug)]
pub struct ConsumerGauge(IntGauge);

impl Drop for ConsumerGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// All of pushgate's metrics, registered in their own [`Registry`].
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    jobs_received: IntCounterVec,
    jobs_acked: IntCounterVec,
    jobs_requeued: IntCounterVec,
    jobs_redelivered: IntCounterVec,
    notifications: IntCounterVec,
    request_seconds: [Histogram; 3],
    inflight: IntGaugeVec,
    connections: IntGaugeVec,
    throttle_wait: [Histogram; 3],
    retries: IntCounterVec,
    dead_lettered: IntCounterVec,
    token_invalidations: IntCounterVec,
    impressions: IntCounterVec,
    clicks: IntCounterVec,
    credentials_alert: IntGaugeVec,
    ready: IntGauge,
    broker_connected: IntGauge,
    queue_consumers: IntGaugeVec,
    throttle_device_keys: IntGauge,
    throttle_slowdown: IntGaugeVec,
    campaigns_tracked: IntGauge,
    campaigns_stopped: IntGauge,
    events_rejected: IntCounterVec,
    /// Per-campaign families, fed and pruned by [`super::stats::CampaignStats`].
    pub(super) campaign_impressions: IntCounterVec,
    pub(super) campaign_clicks: IntCounterVec,
    pub(super) campaign_delivered: IntCounterVec,
}

/// Builds and registers metrics; names and labels are constants checked by
/// the tests, so a failure here is a programming error found at start-up.
struct Builder {
    registry: Registry,
}

#[allow(clippy::expect_used)] // start-up only: constant names, checked by tests
impl Builder {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.registry
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.register(v)
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.register(v)
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    fn histograms(&self, name: &str, help: &str, label: &str, buckets: &[f64]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(HistogramVec::new(opts, &[label]).expect("valid metric"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every pushgate metric in it. Long, but only a
    /// table: one line per metric, then the series pre-created at 0.
    pub fn new() -> Metrics {
        let b = Builder {
            registry: Registry::new(),
        };
        let request = b.histograms(
            n::REQUEST_DURATION,
            "Provider request time: from send (waiting for a free stream included) to the full answer; transport failures included.",
            "platform",
            &n::LATENCY_BUCKETS,
        );
        let wait = b.histograms(
            n::THROTTLE_WAIT,
            "Time a notification waited for a throttle token.",
            "scope",
            &n::WAIT_BUCKETS,
        );
        let m = Metrics {
            jobs_received: b.counters(n::JOBS_RECEIVED, "Job messages received.", &["queue"]),
            jobs_acked: b.counters(n::JOBS_ACKED, "Job messages finished and acked (dead-lettered included).", &["queue"]),
            jobs_requeued: b.counters(n::JOBS_REQUEUED, "Job messages given back to their queue.", &["queue"]),
            jobs_redelivered: b.counters(n::JOBS_REDELIVERED, "Job messages the broker flagged as redelivered.", &["queue"]),
            notifications: b.counters(n::NOTIFICATIONS, "Result entries published, by status and code (code \"none\" when delivered).", &["app", "platform", "status", "code"]),
            request_seconds: Platform::ALL.map(|p| request.with_label_values(&[p.as_str()])),
            inflight: b.gauges(n::INFLIGHT, "HTTP/2 streams in use towards the provider.", &["platform"]),
            connections: b.gauges(n::CONNECTIONS, "Provider connections by state (connecting, open, draining, backoff).", &["platform", "state"]),
            throttle_wait: ThrottleScope::ALL.map(|s| wait.with_label_values(&[s.as_str()])),
            retries: b.counters(n::RETRIES, "Recipients handed to a retry delay queue.", &["platform", "code"]),
            dead_lettered: b.counters(n::DEAD_LETTERED, "Messages sent to the dead queue.", &["reason"]),
            token_invalidations: b.counters(n::TOKEN_INVALIDATIONS, "Tokens reported invalid on <app>.token.invalid.", &["app", "platform"]),
            impressions: b.counters(n::IMPRESSIONS, "Impression events reported by apps.", &["app", "platform"]),
            clicks: b.counters(n::CLICKS, "Click events reported by apps.", &["app", "platform"]),
            credentials_alert: b.gauges(n::CREDENTIALS_ALERT, "1 while an app's credentials or config look broken (circuit open).", &["app", "platform"]),
            ready: b.gauge(n::READY, "1 while consuming from a connected broker and not draining."),
            broker_connected: b.gauge(n::BROKER_CONNECTED, "1 while the AMQP connection is up."),
            queue_consumers: b.gauges(n::QUEUE_CONSUMERS, "Consumers running on each queue.", &["queue"]),
            throttle_device_keys: b.gauge(n::THROTTLE_DEVICE_KEYS, "Device tokens held by the per-device limiter."),
            throttle_slowdown: b.gauges(n::THROTTLE_SLOWDOWN, "1 while a provider's 429/Retry-After slows an app down.", &["app", "platform"]),
            campaigns_tracked: b.gauge(n::CAMPAIGNS_TRACKED, "Campaigns held in this replica's stats cache."),
            campaigns_stopped: b.gauge(n::CAMPAIGNS_STOPPED, "Campaigns currently stopped by an operator."),
            events_rejected: b.counters(n::EVENTS_REJECTED, "Event batches (HTTP requests or queue messages) refused whole, by reason.", &["reason"]),
            campaign_impressions: b.counters(n::CAMPAIGN_IMPRESSIONS, "Impressions per tracked campaign (this replica; series go when the campaign leaves the cache).", &["campaign"]),
            campaign_clicks: b.counters(n::CAMPAIGN_CLICKS, "Clicks per tracked campaign (this replica).", &["campaign"]),
            campaign_delivered: b.counters(n::CAMPAIGN_DELIVERED, "Delivered notifications per tracked campaign (this replica).", &["campaign"]),
            registry: b.registry.clone(),
        };
        let info = b.gauges(
            n::BUILD_INFO,
            "Always 1; the version label says which build runs.",
            &["version"],
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for reason in n::DEAD_REASONS {
            m.dead_lettered.with_label_values(&[reason]);
        }
        for reason in super::events::Rejection::ALL_REASONS {
            m.events_rejected.with_label_values(&[reason]);
        }
        for p in Platform::ALL {
            for state in ["connecting", "open", "draining", "backoff"] {
                m.connections.with_label_values(&[p.as_str(), state]);
            }
            m.inflight.with_label_values(&[p.as_str()]);
            for code in Code::ALL.into_iter().filter(|c| c.class() == Class::Retry) {
                m.retries.with_label_values(&[p.as_str(), code.as_str()]);
            }
        }
        m
    }

    /// Creates the per-app series at 0 so that dashboards and alerts see
    /// them before the first event (`platforms`: the app's configured ones).
    pub fn init_app(&self, app: &str, platforms: &[Platform]) {
        for p in platforms {
            let labels = [app, p.as_str()];
            self.credentials_alert.with_label_values(&labels);
            self.throttle_slowdown.with_label_values(&labels);
            self.token_invalidations.with_label_values(&labels);
            self.impressions.with_label_values(&labels);
            self.clicks.with_label_values(&labels);
            self.notifications
                .with_label_values(&[app, p.as_str(), "delivered", "none"]);
        }
    }

    /// The counters of input queue `queue` (fetch once, then ~5 ns per use).
    pub fn queue(&self, queue: &str) -> QueueCounters {
        QueueCounters {
            received: self.jobs_received.with_label_values(&[queue]),
            acked: self.jobs_acked.with_label_values(&[queue]),
            requeued: self.jobs_requeued.with_label_values(&[queue]),
            redelivered: self.jobs_redelivered.with_label_values(&[queue]),
        }
    }

    /// Counts one running consumer on `queue` until the guard is dropped.
    pub fn consumer(&self, queue: &str) -> ConsumerGauge {
        let gauge = self.queue_consumers.with_label_values(&[queue]);
        gauge.inc();
        ConsumerGauge(gauge)
    }

    /// Counts one job's published (broker-confirmed) result entries;
    /// `app` must be a configured app or [`n::UNKNOWN_APP`].
    pub fn record_results(&self, app: &str, counts: &JobCounts) {
        for (platform, status, code, count) in counts.cells() {
            let code_label = code.map_or("none", Code::as_str);
            self.notifications
                .with_label_values(&[app, platform.as_str(), status.as_str(), code_label])
                .inc_by(u64::from(count));
            if status == crate::outcome::Status::Retrying {
                self.retries
                    .with_label_values(&[platform.as_str(), code_label])
                    .inc_by(u64::from(count));
            }
        }
        for (platform, count) in counts.invalid_tokens() {
            self.token_invalidations
                .with_label_values(&[app, platform.as_str()])
                .inc_by(u64::from(count));
        }
    }

    /// One provider request of `platform` took `took`.
    pub fn observe_request(&self, platform: Platform, took: Duration) {
        self.request_seconds[platform as usize].observe(took.as_secs_f64());
    }

    /// A notification waited `waited` for a token of `scope` (throttle issue).
    pub fn observe_throttle_wait(&self, scope: ThrottleScope, waited: Duration) {
        self.throttle_wait[scope as usize].observe(waited.as_secs_f64());
    }

    /// Keys held by the per-device keyed limiter (throttle issue).
    pub fn set_throttle_device_keys(&self, keys: u64) {
        self.throttle_device_keys
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// A provider's 429/Retry-After slows `app` on `platform` down, or no longer.
    pub fn set_throttle_slowdown(&self, app: &str, platform: Platform, on: bool) {
        self.throttle_slowdown
            .with_label_values(&[app, platform.as_str()])
            .set(i64::from(on));
    }

    /// The credentials alert of `app` on `platform` is raised or cleared.
    pub fn set_credentials_alert(&self, app: &str, platform: Platform, on: bool) {
        self.credentials_alert
            .with_label_values(&[app, platform.as_str()])
            .set(i64::from(on));
    }

    /// Campaigns currently stopped (control messages).
    pub fn set_campaigns_stopped(&self, stopped: usize) {
        self.campaigns_stopped
            .set(i64::try_from(stopped).unwrap_or(i64::MAX));
    }

    /// A message went to the dead queue for `reason` (one of [`n::DEAD_REASONS`]).
    pub fn dead_lettered(&self, reason: &str) {
        self.dead_lettered.with_label_values(&[reason]).inc();
    }

    /// An event batch was refused for `reason`.
    pub fn event_batch_rejected(&self, reason: &str) {
        self.events_rejected.with_label_values(&[reason]).inc();
    }

    /// Impressions and clicks of one app and platform.
    pub fn add_events(&self, app: &str, platform: Platform, impressions: u64, clicks: u64) {
        let labels = [app, platform.as_str()];
        if impressions > 0 {
            self.impressions
                .with_label_values(&labels)
                .inc_by(impressions);
        }
        if clicks > 0 {
            self.clicks.with_label_values(&labels).inc_by(clicks);
        }
    }

    pub(super) fn set_campaigns_tracked(&self, n: usize) {
        self.campaigns_tracked
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the readiness gauges (called before each scrape).
    pub fn set_liveness(&self, ready: bool, broker_connected: bool) {
        self.ready.set(i64::from(ready));
        self.broker_connected.set(i64::from(broker_connected));
    }

    /// Sets the pool gauges from snapshots (called before each scrape).
    /// Platforms without a snapshot read 0.
    pub fn set_pools(&self, pools: &[(Platform, PoolStats)]) {
        for p in Platform::ALL {
            let mut sum = PoolStats::default();
            for (_, s) in pools.iter().filter(|(q, _)| *q == p) {
                sum.connecting += s.connecting;
                sum.open += s.open;
                sum.draining += s.draining;
                sum.backoff += s.backoff;
                sum.in_flight += s.in_flight;
            }
            let gauge = |state: &str, v: usize| {
                self.connections
                    .with_label_values(&[p.as_str(), state])
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            gauge("connecting", sum.connecting);
            gauge("open", sum.open);
            gauge("draining", sum.draining);
            gauge("backoff", sum.backoff);
            self.inflight
                .with_label_values(&[p.as_str()])
                .set(i64::try_from(sum.in_flight).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition format (version 0.0.4) of every metric.
    pub fn encode(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// `Content-Type` of [`Metrics::encode`]'s output.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;

/// The delivery policy reports its throttle and breaker state here.
impl crate::policy::observer::Observer for Metrics {
    fn throttle_wait(&self, scope: ThrottleScope, waited: std::time::Duration) {
        self.observe_throttle_wait(scope, waited);
    }

    fn slowdown(&self, app: &str, platform: Platform, active: bool) {
        self.set_throttle_slowdown(app, platform, active);
    }

    fn credentials_alert(&self, app: &str, platform: Platform, raised: bool) {
        self.set_credentials_alert(app, platform, raised);
    }

    fn campaigns_stopped(&self, count: usize) {
        self.set_campaigns_stopped(count);
    }

    fn device_keys(&self, count: usize) {
        self.set_throttle_device_keys(u64::try_from(count).unwrap_or(u64::MAX));
    }
}
