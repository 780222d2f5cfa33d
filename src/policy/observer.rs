//! What the throttle and the delivery policy report for metrics: an
//! observer trait (events) the telemetry module implements, so that neither
//! module imports a metrics library (pushy's listener pattern).
//!
//! Gauges can also be read at any time from [`super::Policy::snapshot`].

use std::time::Duration;

use crate::job::Platform;

/// Which token bucket a delivery waited for: the `scope` label of
/// `pushgate_throttle_wait_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    App,
    Campaign,
    Device,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::App, Scope::Campaign, Scope::Device];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::App => "app",
            Scope::Campaign => "campaign",
            Scope::Device => "device",
        }
    }
}

/// Receives policy events. Every method has a no-op default; calls come
/// from the hot path (`throttle_wait`: up to three per notification), so
/// implementations must be cheap and must not block.
pub trait Observer: Send + Sync + 'static {
    /// Feeds `pushgate_throttle_wait_seconds{scope}` (histogram): one
    /// observation per bucket a delivery passed, zero when it did not wait.
    fn throttle_wait(&self, scope: Scope, waited: Duration) {
        let _ = (scope, waited);
    }

    /// Feeds `pushgate_throttle_slowdown{app,platform}` (gauge 0/1): an
    /// adaptive slowdown began (`true`) or ended (`false`).
    fn slowdown(&self, app: &str, platform: Platform, active: bool) {
        let _ = (app, platform, active);
    }

    /// Feeds `pushgate_credentials_alert{app,platform}` (gauge 0/1): the
    /// circuit breaker paused (`true`) or resumed (`false`) an app's provider.
    fn credentials_alert(&self, app: &str, platform: Platform, raised: bool) {
        let _ = (app, platform, raised);
    }

    /// Feeds `pushgate_campaigns_stopped` (gauge): campaigns stopped now.
    fn campaigns_stopped(&self, count: usize) {
        let _ = count;
    }

    /// Feeds `pushgate_throttle_device_keys` (gauge): device keys held by
    /// the per-device buckets, after each reclaim.
    fn device_keys(&self, count: usize) {
        let _ = count;
    }
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {}
