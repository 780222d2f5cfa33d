//! Campaign buckets: one per campaign whose jobs carry a `throttle` (e.g.
//! "100,000 per 15 minutes", shared by all jobs of the campaign), kept in a
//! bounded map that forgets the least recently used campaign.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::bucket::{quota, Plain};
use super::clock::NanoClock;
use crate::job::Throttle as JobThrottle;

/// One campaign's bucket and the job throttle it was made for.
pub struct CampaignBucket<C: NanoClock> {
    pub bucket: Plain<C>,
    spec: JobThrottle,
    last_used: AtomicU64,
}

/// At most `cap` campaign buckets.
pub struct Campaigns<C: NanoClock> {
    map: Mutex<HashMap<String, Arc<CampaignBucket<C>>>>,
    cap: usize,
    /// This replica's share of each campaign's limit.
    share: f64,
    tick: AtomicU64,
    clock: C,
}

impl<C: NanoClock> Campaigns<C> {
    pub fn new(cap: usize, share: f64, clock: C) -> Campaigns<C> {
        Campaigns {
            map: Mutex::new(HashMap::new()),
            cap: cap.max(1),
            share,
            tick: AtomicU64::new(0),
            clock,
        }
    }

    /// The bucket of `campaign` for `spec`: the existing one, or a new one
    /// when the campaign is new or its jobs now carry another throttle.
    /// Burst: one second's worth of the rate (at least 1), so that a
    /// campaign limit is not spent in one wave.
    pub fn get(&self, campaign: &str, spec: JobThrottle) -> Option<Arc<CampaignBucket<C>>> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(campaign).filter(|b| b.spec == spec) {
            b.last_used.store(tick, Ordering::Relaxed);
            return Some(Arc::clone(b));
        }
        let per_second = spec.limit as f64 * self.share / spec.per_seconds.max(1) as f64;
        let burst = per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        let q = quota(per_second, burst)?;
        if map.len() >= self.cap && !map.contains_key(campaign) {
            evict_oldest(&mut map);
        }
        let b = Arc::new(CampaignBucket {
            bucket: Plain::new(q, self.clock.clone()),
            spec,
            last_used: AtomicU64::new(tick),
        });
        map.insert(campaign.to_owned(), Arc::clone(&b));
        Some(b)
    }

    /// Campaign buckets held now.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn evict_oldest<C: NanoClock>(map: &mut HashMap<String, Arc<CampaignBucket<C>>>) {
    let oldest = map
        .iter()
        .min_by_key(|(_, b)| b.last_used.load(Ordering::Relaxed))
        .map(|(k, _)| k.clone());
    if let Some(k) = oldest {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn spec(limit: u64, per_seconds: u64) -> JobThrottle {
        JobThrottle { limit, per_seconds }
    }

    #[test]
    fn a_campaign_limit_holds_across_its_jobs() {
        let clock = FakeRelativeClock::default();
        let c = Campaigns::new(8, 1.0, clock.clone());
        // 100,000 per 15 minutes: 111.1/s, burst 112.
        let s = spec(100_000, 900);
        let mut n = 0;
        for _ in 0..900 {
            // Two jobs of the campaign share one bucket.
            for _ in 0..2 {
                let b = c.get("spring", s).unwrap();
                while b.bucket.try_take() {
                    n += 1;
                }
            }
            clock.advance(Duration::from_secs(1));
        }
        assert!(n <= 100_000 + 112, "{n}");
        assert!(n >= 99_900, "{n}");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn share_divides_the_limit_and_a_new_spec_replaces_the_bucket() {
        let clock = FakeRelativeClock::default();
        let c = Campaigns::new(8, 0.5, clock.clone());
        let b = c.get("x", spec(10, 1)).unwrap();
        let mut n = 0;
        while b.bucket.try_take() {
            n += 1;
        }
        assert_eq!(n, 5, "half of 10 per second");
        let b2 = c.get("x", spec(100, 1)).unwrap();
        assert!(!Arc::ptr_eq(&b, &b2));
        assert!(Arc::ptr_eq(&b2, &c.get("x", spec(100, 1)).unwrap()));
    }

    #[test]
    fn the_least_recently_used_campaign_is_forgotten() {
        let c = Campaigns::new(2, 1.0, FakeRelativeClock::default());
        let a = c.get("a", spec(1, 1)).unwrap();
        c.get("b", spec(1, 1)).unwrap();
        c.get("a", spec(1, 1)).unwrap();
        c.get("c", spec(1, 1)).unwrap();
        assert_eq!(c.len(), 2);
        assert!(Arc::ptr_eq(&a, &c.get("a", spec(1, 1)).unwrap()), "a kept");
        assert_eq!(c.len(), 2);
    }
}
