//! Per-campaign stats of this replica: attempted, delivered, failed by code,
//! impressions and clicks, in a bounded cache that evicts the least
//! recently updated campaign. Each campaign also feeds the
//! `pushgate_campaign_*_total{campaign}` series, removed on eviction so
//! that the label stays bounded by the cache size.
//!
//! Definitions (README "Impressions and campaign stats"):
//! - attempted: recipients with a final result (delivered or failed,
//!   local refusals included); a retrying recipient counts once, when final;
//! - delivered / failed by code: those final results;
//! - impressions / clicks: events reported by apps.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use prometheus::IntCounter;
use serde::Serialize;

use super::counts::JobCounts;
use super::metrics::Metrics;
use crate::outcome::{Code, Status};

/// Default number of campaigns kept (`[admin] max_campaigns`).
pub const DEFAULT_MAX_CAMPAIGNS: usize = 10_000;

struct Campaign {
    attempted: u64,
    delivered: u64,
    failed: [u64; Code::ALL.len()],
    impressions: u64,
    clicks: u64,
    first_seen: SystemTime,
    last_update: SystemTime,
    /// Position in [`Inner::order`].
    tick: u64,
    delivered_series: IntCounter,
    impressions_series: IntCounter,
    clicks_series: IntCounter,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Arc<str>, Campaign>,
    /// Update tick -> campaign: the first entry is the least recently updated.
    order: BTreeMap<u64, Arc<str>>,
    tick: u64,
}

/// The bounded stats cache; cheap to share behind an `Arc`.
pub struct CampaignStats {
    inner: Mutex<Inner>,
    cap: usize,
    metrics: Metrics,
}

impl std::fmt::Debug for CampaignStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CampaignStats")
            .field("cap", &self.cap)
            .field("tracked", &self.len())
            .finish_non_exhaustive()
    }
}

/// One campaign as served by `GET /v1/campaigns/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignSnapshot {
    pub campaign: String,
    pub attempted: u64,
    pub delivered: u64,
    /// Final failures by code (codes with none are left out).
    pub failed: BTreeMap<&'static str, u64>,
    pub failed_total: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub rates: Rates,
    pub first_seen: String,
    pub last_update: String,
    /// Always "replica": these counts are this process's only.
    pub scope: &'static str,
}

/// Ratios between the counts; `null` while the denominator is 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rates {
    /// delivered / attempted
    pub delivery: Option<f64>,
    /// impressions / delivered
    pub impression: Option<f64>,
    /// clicks / impressions
    pub click: Option<f64>,
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl CampaignStats {
    /// A cache of at most `cap` campaigns (at least 1).
    pub fn new(cap: usize, metrics: Metrics) -> CampaignStats {
        CampaignStats {
            inner: Mutex::new(Inner::default()),
            cap: cap.max(1),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Campaigns held now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds one job's final results (retrying entries are not counted yet).
    pub fn record_results(&self, campaign: &str, counts: &JobCounts) {
        let delivered = counts.with_status(Status::Delivered);
        let failed = counts.with_status(Status::Failed);
        if delivered + failed == 0 {
            return;
        }
        self.update(campaign, |c| {
            c.attempted += delivered + failed;
            c.delivered += delivered;
            for (code, n) in counts.failed_by_code() {
                c.failed[code as usize] += n;
            }
            c.delivered_series.inc_by(delivered);
        });
    }

    /// Adds impressions and clicks reported for `campaign`.
    pub fn record_events(&self, campaign: &str, impressions: u64, clicks: u64) {
        self.update(campaign, |c| {
            c.impressions += impressions;
            c.clicks += clicks;
            c.impressions_series.inc_by(impressions);
            c.clicks_series.inc_by(clicks);
        });
    }

    /// The campaign's stats, if this replica holds it.
    pub fn get(&self, campaign: &str) -> Option<CampaignSnapshot> {
        let inner = self.lock();
        let c = inner.map.get(campaign)?;
        let failed: BTreeMap<&'static str, u64> = Code::ALL
            .into_iter()
            .filter(|code| c.failed[*code as usize] > 0)
            .map(|code| (code.as_str(), c.failed[code as usize]))
            .collect();
        Some(CampaignSnapshot {
            campaign: campaign.to_owned(),
            attempted: c.attempted,
            delivered: c.delivered,
            failed_total: failed.values().sum(),
            failed,
            impressions: c.impressions,
            clicks: c.clicks,
            rates: Rates {
                delivery: ratio(c.delivered, c.attempted),
                impression: ratio(c.impressions, c.delivered),
                click: ratio(c.clicks, c.impressions),
            },
            first_seen: crate::report::timestamp(c.first_seen),
            last_update: crate::report::timestamp(c.last_update),
            scope: "replica",
        })
    }

    fn update(&self, campaign: &str, f: impl FnOnce(&mut Campaign)) {
        let now = SystemTime::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((key, c)) = inner.map.get_key_value(campaign) {
            let key = Arc::clone(key);
            let old = c.tick;
            inner.order.remove(&old);
            inner.order.insert(tick, key);
        } else {
            while inner.map.len() >= self.cap {
                self.evict_oldest(inner);
            }
            let key: Arc<str> = Arc::from(campaign);
            inner
                .map
                .insert(Arc::clone(&key), self.fresh(campaign, now));
            inner.order.insert(tick, key);
            self.metrics.set_campaigns_tracked(inner.map.len());
        }
        if let Some(c) = inner.map.get_mut(campaign) {
            c.tick = tick;
            c.last_update = now;
            f(c);
        }
    }

    fn fresh(&self, campaign: &str, now: SystemTime) -> Campaign {
        let m = &self.metrics;
        Campaign {
            attempted: 0,
            delivered: 0,
            failed: [0; Code::ALL.len()],
            impressions: 0,
            clicks: 0,
            first_seen: now,
            last_update: now,
            tick: 0,
            delivered_series: m.campaign_delivered.with_label_values(&[campaign]),
            impressions_series: m.campaign_impressions.with_label_values(&[campaign]),
            clicks_series: m.campaign_clicks.with_label_values(&[campaign]),
        }
    }

    fn evict_oldest(&self, inner: &mut Inner) {
        let Some((_, key)) = inner.order.pop_first() else {
            return;
        };
        inner.map.remove(&key);
        let m = &self.metrics;
        let labels = [&*key];
        let _ = m.campaign_delivered.remove_label_values(&labels);
        let _ = m.campaign_impressions.remove_label_values(&labels);
        let _ = m.campaign_clicks.remove_label_values(&labels);
        tracing::debug!(campaign = %key, "campaign stats evicted (least recently updated)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Platform;

    fn counts(delivered: u32, not_registered: u32, retrying: u32) -> JobCounts {
        let mut c = JobCounts::default();
        for _ in 0..delivered {
            c.add(Platform::Apns, Status::Delivered, None, false);
        }
        for _ in 0..not_registered {
            c.add(
                Platform::Fcm,
                Status::Failed,
                Some(Code::NotRegistered),
                true,
            );
        }
        for _ in 0..retrying {
            c.add(
                Platform::Fcm,
                Status::Retrying,
                Some(Code::QuotaExceeded),
                false,
            );
        }
        c
    }

    #[test]
    fn counts_finals_events_and_rates() {
        let s = CampaignStats::new(10, Metrics::new());
        s.record_results("spring", &counts(8, 2, 5));
        s.record_events("spring", 4, 1);
        let snap = s.get("spring").unwrap();
        assert_eq!(
            (snap.attempted, snap.delivered, snap.failed_total),
            (10, 8, 2)
        );
        assert_eq!(snap.failed.get("NotRegistered"), Some(&2));
        assert_eq!((snap.impressions, snap.clicks), (4, 1));
        assert_eq!(snap.rates.delivery, Some(0.8));
        assert_eq!(snap.rates.impression, Some(0.5));
        assert_eq!(snap.rates.click, Some(0.25));
        s.record_results("only-retries", &counts(0, 0, 3));
        assert!(s.get("only-retries").is_none(), "nothing final yet");
        s.record_events("events-only", 1, 0);
        let e = s.get("events-only").unwrap();
        assert_eq!((e.rates.delivery, e.rates.impression), (None, None));
        assert_eq!(e.rates.click, Some(0.0));
    }

    #[test]
    fn least_recently_updated_is_evicted_with_its_series() {
        let m = Metrics::new();
        let s = CampaignStats::new(2, m.clone());
        s.record_results("a", &counts(1, 0, 0));
        s.record_results("b", &counts(1, 0, 0));
        s.record_events("a", 1, 0); // a is now the most recent
        s.record_results("c", &counts(1, 0, 0));
        assert!(s.get("b").is_none());
        assert!(s.get("a").is_some() && s.get("c").is_some());
        assert_eq!(s.len(), 2);
        let text = String::from_utf8(m.encode().unwrap()).unwrap();
        assert!(text.contains("pushgate_campaigns_tracked 2"));
        assert!(text.contains(r#"pushgate_campaign_delivered_total{campaign="a"} 1"#));
        assert!(!text.contains(r#"campaign="b""#), "evicted series removed");
    }
}
