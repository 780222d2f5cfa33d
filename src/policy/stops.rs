//! The campaigns an operator stopped: filled from the control messages
//! (`ingest::control`), asked before every delivery. A stop is remembered
//! for `remember` from the time it was published, so a replay after a
//! restart restores it; `resume` forgets it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::observer::Observer;

/// Stopped campaigns and when each was stopped.
pub struct StopRegistry {
    map: RwLock<HashMap<String, SystemTime>>,
    /// Entries in `map` (the hot path skips the lock while it is 0).
    count: AtomicUsize,
    remember: Duration,
    observer: Arc<dyn Observer>,
}

impl std::fmt::Debug for StopRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopRegistry")
            .field("stopped", &self.count.load(Ordering::Relaxed))
            .field("remember", &self.remember)
            .finish()
    }
}

impl StopRegistry {
    pub fn new(remember: Duration, observer: Arc<dyn Observer>) -> StopRegistry {
        StopRegistry {
            map: RwLock::new(HashMap::new()),
            count: AtomicUsize::new(0),
            remember,
            observer,
        }
    }

    /// Records that `campaign` was stopped at `at` (the control message's
    /// time). True when it was not stopped before. Logs the moment this
    /// replica sees the stop.
    pub fn stop(&self, campaign: &str, at: SystemTime, replayed: bool) -> bool {
        let now = SystemTime::now();
        if at + self.remember <= now {
            return false;
        }
        let (new, count) = {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, t| *t + self.remember > now);
            let new = map.insert(campaign.to_owned(), at).is_none();
            (new, map.len())
        };
        self.count.store(count, Ordering::Release);
        if new {
            tracing::info!(
                campaign,
                replayed,
                "campaign stopped: its remaining recipients get CampaignStopped"
            );
            self.observer.campaigns_stopped(count);
        }
        new
    }

    /// Forgets the stop of `campaign`. True when it was stopped.
    pub fn resume(&self, campaign: &str) -> bool {
        let (was, count) = {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            let was = map.remove(campaign).is_some();
            (was, map.len())
        };
        self.count.store(count, Ordering::Release);
        if was {
            tracing::info!(campaign, "campaign resumed");
            self.observer.campaigns_stopped(count);
        }
        was
    }

    /// Whether `campaign` is stopped now.
    pub fn is_stopped(&self, campaign: &str) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(campaign)
            .is_some_and(|t| *t + self.remember > SystemTime::now())
    }

    /// The campaigns stopped now, sorted.
    pub fn stopped(&self) -> Vec<String> {
        let now = SystemTime::now();
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = map
            .iter()
            .filter(|(_, t)| **t + self.remember > now)
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::observer::NoopObserver;

    #[test]
    fn stop_resume_and_remembering() {
        let r = StopRegistry::new(Duration::from_secs(3600), Arc::new(NoopObserver));
        let now = SystemTime::now();
        assert!(!r.is_stopped("spring"));
        assert!(r.stop("spring", now, false));
        assert!(!r.stop("spring", now, true), "a replay changes nothing");
        assert!(r.is_stopped("spring"));
        assert!(!r.is_stopped("summer"));
        assert!(
            !r.stop("old", now - Duration::from_secs(7200), true),
            "older than remember: ignored"
        );
        assert_eq!(r.stopped(), vec!["spring".to_owned()]);
        assert!(r.resume("spring"));
        assert!(!r.resume("spring"));
        assert!(!r.is_stopped("spring"));
        assert!(r.stopped().is_empty());
    }
}
