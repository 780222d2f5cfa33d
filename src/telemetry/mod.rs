//! What pushgate tells operators and marketers: Prometheus metrics (all
//! names in [`names`]), per-campaign stats, impression and click events,
//! the admin HTTP server, and log set-up.
//!
//! The wiring builds one [`Telemetry`] and shares it (`Arc`) through
//! [`crate::app::Status`]; ingest and dispatch feed it, the admin server
//! reads it. Nothing here is global.

pub mod admin;
pub mod control;
pub mod counts;
pub mod events;
pub mod logs;
pub mod metrics;
pub mod names;
pub mod stats;
pub mod tracking;

use crate::job::Platform;
use crate::provider::h2pool::PoolStats;

pub use self::counts::JobCounts;
pub use self::metrics::{Metrics, ThrottleScope};
pub use self::stats::CampaignStats;

/// The metrics registry and the campaign stats of one daemon.
#[derive(Debug)]
pub struct Telemetry {
    pub metrics: Metrics,
    pub campaigns: CampaignStats,
    /// Samples the warning lines of dead-lettered jobs and event batches.
    pub bad_input_log: logs::LogSampler,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new(stats::DEFAULT_MAX_CAMPAIGNS)
    }
}

impl Telemetry {
    /// Fresh metrics and a stats cache of at most `max_campaigns`.
    pub fn new(max_campaigns: usize) -> Telemetry {
        let metrics = Metrics::new();
        let campaigns = CampaignStats::new(max_campaigns, metrics.clone());
        Telemetry {
            metrics,
            campaigns,
            bad_input_log: logs::LogSampler::default(),
        }
    }

    /// Counts one job's published results: metrics (under `app`, which must
    /// be configured or [`names::UNKNOWN_APP`]) and, with a campaign, its stats.
    pub fn record_results(&self, app: &str, campaign: Option<&str>, counts: &JobCounts) {
        if counts.is_empty() {
            return;
        }
        self.metrics.record_results(app, counts);
        if let Some(c) = campaign {
            self.campaigns.record_results(c, counts);
        }
    }
}

/// Something holding provider connection pools, read at scrape time.
pub trait PoolSource: Send + Sync {
    /// One snapshot per pool, with the platform it delivers to.
    fn pool_stats(&self) -> Vec<(Platform, PoolStats)>;
}
